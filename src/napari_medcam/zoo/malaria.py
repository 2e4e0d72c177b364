"""``malaria-tiny`` (held out, blind): one ring-stage parasite in a blood smear, evidence ≤ 0.5 %.

- **Data** (128×128 RGB, a Giemsa-stained thin blood smear in brightfield, rendered
  in optical density so that overlapping cells darken as in a real smear): a light,
  slightly uneven background; up to 40–58 pale pink-red red blood cells (radius 7–9 px,
  slightly oval, a paler central pallor, a faint granular texture), some of them
  overlapping; in 3 of 5 tiles of *both* classes one or two white blood
  cells (radius 11–14 px, pale lilac cytoplasm, a dark purple nucleus of 2–5 lobes
  or one large round one) as distractors. A positive ("parasite") tile has exactly
  one infected red blood cell: a ring form (a purple ring 4–7 px across with one
  or two dark chromatin dots on its rim) or a compact trophozoite (a dark irregular
  dot 4–7 px across), drawn inside the host cell. It covers 11–30 px (median 19; 600
  tiles), i.e. 0.07–0.18 % of the tile - never more than 0.5 % by construction.
- **Reference**: the parasite's pixels (anti-aliased footprint > 0.5).
- **Architecture**: conv blocks in an ``nn.ModuleDict`` (``"stem"``, ``"down1"``
  …, each conv / BatchNorm / ReLU, most with a max pool) iterated in ``forward``
  (128 → 16 px), then ``head``: global max pooling, flatten, Linear-ReLU-Linear.
- **Training**: 3000 tiles (seeds 100 000+), 6 epochs, flips / quarter turns, a small
  colour jitter; ImageNet normalisation.
- **Held-out accuracy**: 1.000 on 400 eval tiles (seeds 50 000+, both classes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_medcam.data.synthetic import _smooth_noise
from napari_medcam.zoo._common import ZooEntry, place_apart, soft_ellipse

SIZE = 128
CLASS_NAMES = ("uninfected", "parasite")
MAX_FRACTION = 0.005

_BACKGROUND = np.array([241.0, 236.0, 238.0])
# optical densities (-ln of transmitted / background), per RGB channel
_OD_RBC = np.array([0.07, 0.34, 0.28])  # pale pink-red
_OD_CYTOPLASM = np.array([0.10, 0.16, 0.04])  # pale lilac
_OD_NUCLEUS = np.array([0.95, 1.35, 0.42])  # dark purple
_OD_RING = np.array([0.75, 1.05, 0.30])  # parasite cytoplasm, purple-blue
_OD_CHROMATIN = np.array([1.25, 1.75, 0.55])  # parasite chromatin, near black-purple

ENTRY = ZooEntry(
    name="malaria-tiny",
    modality="brightfield Giemsa blood smear (synthetic), tiny evidence",
    architecture="conv blocks in an nn.ModuleDict (BatchNorm) / global max pool head",
    evidence="the single parasite inside one red blood cell (≤ 0.5 % of the tile)",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=MAX_FRACTION,
)

TRAIN = {"n": 3000, "epochs": 6, "lr": 3e-3, "width": 16, "jitter": 0.04, "norm": "imagenet"}


def _disc(cy: float, cx: float, r: float, soft: float = 0.7) -> np.ndarray:
    return soft_ellipse((SIZE, SIZE), cy, cx, r, r, soft=soft)


def _red_cell(rng: np.random.Generator, cy: float, cx: float) -> np.ndarray:
    """Optical-density weight (0–1) of one red blood cell with its central pallor."""
    r = rng.uniform(7.0, 9.0)
    body = soft_ellipse((SIZE, SIZE), cy, cx, r, r * rng.uniform(0.88, 1.0), rng.uniform(0, np.pi))
    pallor = _disc(cy, cx, r * rng.uniform(0.35, 0.5), soft=2.5)
    return body * (1.0 - rng.uniform(0.4, 0.6) * pallor) * rng.uniform(0.85, 1.15)


def _white_cell(rng: np.random.Generator, od: np.ndarray, cy: float, cx: float) -> None:
    """Add one white blood cell (cytoplasm and a lobed or round nucleus) to ``od``."""
    r = rng.uniform(11.0, 14.0)
    od += _disc(cy, cx, r)[..., None] * _OD_CYTOPLASM
    nucleus = np.zeros((SIZE, SIZE))
    if rng.random() < 0.3:  # lymphocyte: one large round nucleus
        nucleus = _disc(cy, cx, r * rng.uniform(0.6, 0.75))
    else:  # neutrophil: 2-5 lobes along a bent chain, joined by thin strands
        n = int(rng.integers(2, 6))
        start = rng.uniform(0, 2 * np.pi)
        pts = []
        for k in range(n):
            a = start + k * rng.uniform(1.0, 1.5)
            pts.append((cy + 0.45 * r * np.sin(a), cx + 0.45 * r * np.cos(a)))
        for (y, x), (y2, x2) in zip(pts, pts[1:] + pts[-1:]):
            lobe = soft_ellipse((SIZE, SIZE), y, x, rng.uniform(2.5, 3.5), rng.uniform(2.2, 3.0))
            nucleus = np.maximum(nucleus, lobe)
            for t in np.linspace(0, 1, 6):  # a thin strand to the next lobe
                strand = _disc(y + t * (y2 - y), x + t * (x2 - x), 0.9, soft=0.5)
                nucleus = np.maximum(nucleus, strand)
    od += nucleus[..., None] * _OD_NUCLEUS * rng.uniform(0.85, 1.1)


def _parasite(rng: np.random.Generator, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    """Optical density (H×W×3) and footprint alpha (0–1) of one parasite."""
    if rng.random() < 0.65:  # ring form: a thin ring with one or two chromatin dots
        r = rng.uniform(2.0, 3.3)
        ring = np.clip(_disc(cy, cx, r, soft=0.5) - _disc(cy, cx, r - rng.uniform(1.1, 1.5)), 0, 1)
        dots = np.zeros((SIZE, SIZE))
        for _ in range(int(rng.integers(1, 3))):
            a = rng.uniform(0, 2 * np.pi)
            dr = rng.uniform(0.9, 1.3)
            dots = np.maximum(dots, _disc(cy + r * np.sin(a), cx + r * np.cos(a), dr, soft=0.5))
        alpha = np.maximum(ring, dots)
        od = ring[..., None] * _OD_RING + dots[..., None] * (_OD_CHROMATIN - _OD_RING).clip(0)
    else:  # compact trophozoite: an irregular dark dot
        alpha = soft_ellipse(
            (SIZE, SIZE), cy, cx, rng.uniform(2.0, 3.0), rng.uniform(1.6, 2.4), rng.uniform(0, 3.2)
        )
        for _ in range(2):
            a = rng.uniform(0, 2 * np.pi)
            bump = _disc(cy + 2.0 * np.sin(a), cx + 2.0 * np.cos(a), rng.uniform(0.8, 1.2), 0.5)
            alpha = np.maximum(alpha, bump)
        od = alpha[..., None] * _OD_CHROMATIN * rng.uniform(0.8, 0.95)
    return od * rng.uniform(0.9, 1.1), alpha


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One tile (uint8 128×128×3) and its reference (the parasite, if any)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    rng = np.random.default_rng([int(seed), int(label), 8])
    od = np.zeros((SIZE, SIZE, 3))
    taken: list[tuple[float, float]] = []
    n_white = int(rng.choice([0, 0, 1, 1, 2]))
    for cy, cx in place_apart(rng, n_white, SIZE, 30.0, margin=6):
        _white_cell(rng, od, cy, cx)
        taken.append((cy, cx))
    # red cells: centres 12.5 px apart (radius 7-9 px: many touch or overlap), and
    # clear of the white cells
    cells = place_apart(rng, int(rng.integers(40, 59)), SIZE, 12.5, margin=-3, taken=[])
    cells = [c for c in cells if all(np.hypot(c[0] - y, c[1] - x) > 15 for y, x in taken)]
    texture = 0.85 + 0.3 * _smooth_noise(rng, SIZE, 2)
    for cy, cx in cells:
        od += (_red_cell(rng, cy, cx) * texture)[..., None] * _OD_RBC
    ref = np.zeros((SIZE, SIZE), bool)
    if label == 1:
        inside = [c for c in cells if min(c) >= 10 and max(c) <= SIZE - 11]
        cy, cx = inside[int(rng.integers(len(inside)))]
        a = rng.uniform(0, 2 * np.pi)
        off = rng.uniform(0, 3.0)  # anywhere in the cell, not only its centre
        p_od, alpha = _parasite(rng, cy + off * np.sin(a), cx + off * np.cos(a))
        od += p_od
        ref = alpha > 0.5
    illumination = 1.0 + 0.06 * (_smooth_noise(rng, SIZE, 48)[..., None] - 0.5)
    img = _BACKGROUND * illumination * np.exp(-od)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), ref


class ModuleDictNet(nn.Module):
    """Conv/BN/ReLU blocks in an ``nn.ModuleDict`` and a global-max-pool ``head`` (~65 k)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
            layers.append(nn.ReLU(inplace=True))
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.blocks = nn.ModuleDict(
            {
                "stem": block(3, w, True),  # 64
                "down1": block(w, w, True),  # 32
                "down2": block(w, 2 * w, True),  # 16
                "mid1": block(2 * w, 4 * w, False),
                "mid2": block(4 * w, 4 * w, False),
            }
        )
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, 32),
            nn.ReLU(inplace=True),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return self.head(x)


build = ModuleDictNet
