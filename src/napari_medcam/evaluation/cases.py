"""The held-out evaluation set: synthetic tiles with planted evidence, and the IHC case.

Synthetic tiles use seeds 30 000 + i (never used for training, tuning or tests) and
come in two groups:

- **standard**: `synthetic_tile(seed, 1)` as generated (contrast 1, evidence 5–15 %
  of the tile);
- **hard**, in three kinds taking turns: *faint* (contrast 0.5, evidence 3–6 %),
  *small* (contrast 0.8, evidence 2–4 %) and *cut-off* (contrast 0.8, evidence
  4–8 %, the tile shifted so that about 40 % of the cluster lies beyond the nearest
  edge; the strip uncovered on the far side is filled by mirroring). These are the
  cases where the demo classifier is unsure.

The real case: 64×64 patches of the held-out right half of scikit-image's
immunohistochemistry image (a grid at stride 32), explained with the IHC classifier;
the reference is the DAB mask of `napari_medcam.classifiers.ihc.dab_reference`.
Patches are chosen by the reference alone - 15–75 % DAB-positive (positive, with room
for localisation; 34 such patches), then 12 evenly spaced among them - never by what a
classifier or explainer makes of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_medcam.data import synthetic_tile

SEED0 = 30_000
HARD_KINDS = ("faint", "small", "cut-off")
IHC_MAX_FRACTION = 0.75
IHC_STRIDE = 32
IHC_PATCHES = 12


@dataclass
class Case:
    """One held-out image, its reference evidence and which classifier explains it."""

    name: str
    group: str  # "standard", "hard" or "ihc"
    image: np.ndarray
    reference: np.ndarray
    classifier: str  # "demo" or "ihc"
    target: int = 1
    kind: str = ""


def cut_off_tile(
    seed: int,
    *,
    contrast: float = 0.8,
    evidence_fraction: tuple[float, float] = (0.04, 0.08),
    kept: float = 0.6,
    size: int = 224,
) -> tuple[np.ndarray, np.ndarray]:
    """A positive tile whose evidence cluster is partly cut off by the nearest tile edge.

    The tile is shifted towards that edge until the cluster's centroid lies at the
    distance from the edge that keeps about ``kept`` of an equal-area disc inside; the
    strip uncovered on the opposite side is filled by mirroring the tile (no seam).
    The evidence mask goes through the same shift.
    """
    if not 0.05 <= kept <= 0.95:
        raise ValueError("kept must be in [0.05, 0.95]")
    img, ev = synthetic_tile(seed, 1, size, evidence_fraction=evidence_fraction, contrast=contrast)
    ys, xs = np.nonzero(ev)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt(ev.sum() / np.pi)
    # distance from the centre of a disc to a chord keeping `kept` of it, by bisection
    lo, hi = -1.0, 1.0
    for _ in range(40):
        d = (lo + hi) / 2
        keep = 1 - (np.arccos(d) - d * np.sqrt(1 - d * d)) / np.pi
        lo, hi = (d, hi) if keep < kept else (lo, d)
    target = d * radius
    # rotate so that the nearest edge is the left one, shift left, rotate back
    dists = [cx, cy, size - 1 - cx, size - 1 - cy]  # left, top, right, bottom
    k = int(np.argmin(dists))  # k counter-clockwise quarter turns bring that edge to the left
    shift = int(round(dists[k] - target))
    shift = min(max(shift, 0), size - 1)
    out = []
    for arr in (img, ev):
        r = np.rot90(arr, k) if k else arr
        pad = [(0, 0), (0, shift)] + [(0, 0)] * (r.ndim - 2)
        r = np.pad(r, pad, mode="reflect")[:, shift : shift + size]
        out.append(np.ascontiguousarray(np.rot90(r, -k) if k else r))
    return out[0], out[1]


def synthetic_cases(n_standard: int = 24, n_hard: int = 12, seed0: int = SEED0) -> list[Case]:
    """``n_standard`` standard and ``n_hard`` hard positive tiles (module docstring)."""
    cases = []
    for i in range(n_standard):
        img, ev = synthetic_tile(seed0 + i, 1)
        cases.append(Case(f"tile {seed0 + i}", "standard", img, ev, "demo", 1, "standard"))
    for i in range(n_hard):
        seed = seed0 + 1000 + i
        kind = HARD_KINDS[i % len(HARD_KINDS)]
        if kind == "faint":
            img, ev = synthetic_tile(seed, 1, evidence_fraction=(0.03, 0.06), contrast=0.5)
        elif kind == "small":
            img, ev = synthetic_tile(seed, 1, evidence_fraction=(0.02, 0.04), contrast=0.8)
        else:
            img, ev = cut_off_tile(seed)
        cases.append(Case(f"tile {seed} ({kind})", "hard", img, ev, "demo", 1, kind))
    return cases


def ihc_cases(limit: int | None = IHC_PATCHES) -> list[Case]:
    """``limit`` held-out IHC patches, 15–75 % DAB-positive, evenly spaced in raster order.

    ``limit`` None gives every qualifying patch.
    """
    from napari_medcam.classifiers.ihc import POS_FRACTION, ihc_patches

    cases = []
    for patch, ref, (r, c) in ihc_patches("eval", stride=IHC_STRIDE):
        if POS_FRACTION <= ref.mean() <= IHC_MAX_FRACTION:
            cases.append(Case(f"IHC patch ({r}, {c})", "ihc", patch, ref, "ihc", 1, "ihc"))
    if limit is not None and limit < len(cases):
        picks = np.unique(np.linspace(0, len(cases) - 1, max(limit, 1)).round().astype(int))
        cases = [cases[i] for i in picks]
    return cases
