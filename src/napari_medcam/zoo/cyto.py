"""``cyto-atypia`` (held out, blind): Pap-smear cytology, 1–3 atypical cells; an EfficientNet-B0.

- **Data** (128×128 RGB, a Papanicolaou-stained cervical smear in brightfield, rendered
  in optical density so that overlapping cells darken as in a real smear): a pale,
  slightly uneven bluish-white background; 9–16 scattered squamous cells (irregular
  polygon-like outlines, radius 12–20 px, translucent blue-green or pink-orange
  cytoplasm, many overlapping), each with a small nucleus (vesicular, radius 2–3 px,
  or pyknotic, radius 1.4–2 px). In *both* classes, with the same frequencies, come
  the look-alikes: 0–3 clumps of 4–12 inflammatory cells (neutrophils: 2–4 small dark
  lobes each) and 0–2 *overlapping nuclei* (two or three normal nuclei of overlapping
  cells on top of each other, a dark spot up to ~9 px long). A positive ("atypical")
  tile holds 1–3 atypical cells (HSIL-like): a smaller, denser cell (radius 9–13 px)
  with an enlarged (radius 4.5–6.5 px, aspect up to 1.4), dark, irregularly outlined
  nucleus with coarse chromatin. Their nuclei cover 0.45–2.8 % of the tile (median
  1.4 %; 300 eval tiles), never more than 4 % (asserted). Atypical cells and look-alikes
  are centred at least 26 px apart.
- **Reference**: the atypical cells' nuclei (anti-aliased footprint > 0.5).
- **Architecture**: EfficientNet-B0-like in timm's layout and module names, plain
  torch, narrow - ``conv_stem`` (3×3 stride 2), ``bn1`` (`BatchNormAct2d`: BatchNorm
  with its SiLU as ``bn1.act``), ``blocks`` (an ``nn.Sequential`` of seven stages, each
  an ``nn.Sequential`` of blocks ``blocks.N.M``: a `DepthwiseSeparableConv` first,
  then MBConv `InvertedResidual` blocks - ``conv_pw`` expand, ``conv_dw`` 3×3 or 5×5
  depthwise, squeeze-and-excitation ``se`` (``conv_reduce``/``conv_expand``),
  ``conv_pwl`` project, a residual where the shapes match; expansion 4; 64 → 4 px),
  ``conv_head`` (1×1), ``bn2``, ``global_pool``, ``classifier`` (Linear); stem 8
  channels, stages 8-12-20-32-32-40-48, head 96; 85.8 k parameters.
- **Training**: 3000 tiles (seeds 100 000+), 10 epochs, flips / quarter turns, a small
  colour jitter; mean/std of the training set.
- **Held-out accuracy**: 1.000 on 400 eval tiles (seeds 50 000+; negative 1.000,
  atypical 1.000).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_medcam.data.synthetic import _smooth_noise
from napari_medcam.zoo._common import ZooEntry, place_apart

SIZE = 128
CLASS_NAMES = ("negative", "atypical")
MAX_FRACTION = 0.04

_BACKGROUND = np.array([238.0, 240.0, 244.0])
# optical densities (-ln of transmitted / background), per RGB channel
_OD_CYAN = np.array([0.34, 0.12, 0.10])  # intermediate cells: blue-green cytoplasm
_OD_PINK = np.array([0.06, 0.30, 0.22])  # superficial cells: pink-orange cytoplasm
_OD_NUCLEUS = np.array([0.80, 0.95, 0.45])  # haematoxylin, blue-purple
_OD_ATYPICAL = np.array([1.25, 1.45, 0.75])  # hyperchromatic
_OD_NEUTROPHIL = np.array([0.95, 1.10, 0.55])

ENTRY = ZooEntry(
    name="cyto-atypia",
    modality="brightfield Pap-smear cytology (synthetic), 1–3 atypical cells",
    architecture="EfficientNet-B0-like (conv_stem/bn1/blocks.N.M MBConv+SE/conv_head/bn2)",
    evidence="the enlarged dark irregular nuclei of the 1–3 atypical cells",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=MAX_FRACTION,
)

TRAIN = {"n": 3000, "epochs": 10, "lr": 3e-3, "width": 8, "jitter": 0.04}


def _shape(
    cy: float,
    cx: float,
    r: float,
    aspect: float,
    angle: float,
    wobble: list[tuple[int, float, float]],
    soft: float = 0.7,
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Anti-aliased irregular ellipse on a local window: (slices, alpha in [0, 1])."""
    reach = r * aspect * (1 + sum(a for _, a, _ in wobble)) + 2.0
    y0, y1 = max(0, int(np.floor(cy - reach))), min(SIZE, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(np.floor(cx - reach))), min(SIZE, int(np.ceil(cx + reach)) + 1)
    y1, x1 = max(y0, y1), max(x0, x1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dy + s * dx) / aspect, -s * dy + c * dx
    theta = np.arctan2(u, v)
    edge = r * (1 + sum(a * np.cos(k * theta + ph) for k, a, ph in wobble))
    alpha = np.clip((edge - np.hypot(u, v)) / soft + 0.5, 0.0, 1.0)
    return (slice(y0, y1), slice(x0, x1)), alpha


def _wobble(rng: np.random.Generator, ks: tuple[int, ...], lo: float, hi: float):
    return [(k, rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)) for k in ks]


def _nucleus(rng, od, cy, cx, r, colour, aspect=1.15, wobble=None, texture=0.15):
    """Add one nucleus to ``od``; return (slices, alpha)."""
    sl, a = _shape(
        cy, cx, r, rng.uniform(1.0, aspect), rng.uniform(0, np.pi), wobble or [], soft=0.6
    )
    chromatin = 1.0 + texture * rng.normal(0, 1, a.shape)
    od[sl] += (a * chromatin)[..., None] * colour
    return sl, a


def _squamous(rng: np.random.Generator, od: np.ndarray, cy: float, cx: float) -> None:
    """One normal squamous cell: irregular translucent cytoplasm, a small nucleus."""
    r = rng.uniform(12.0, 20.0)
    colour = _OD_CYAN if rng.random() < 0.6 else _OD_PINK
    sl, a = _shape(cy, cx, r, rng.uniform(1.0, 1.35), rng.uniform(0, np.pi),
                   _wobble(rng, (3, 4, 5), 0.03, 0.09), soft=1.0)  # fmt: skip
    od[sl] += a[..., None] * colour * rng.uniform(0.7, 1.3)
    ny, nx = cy + rng.uniform(-0.2, 0.2) * r, cx + rng.uniform(-0.2, 0.2) * r
    if rng.random() < 0.5:  # vesicular (intermediate) nucleus
        _nucleus(rng, od, ny, nx, rng.uniform(2.0, 3.0), _OD_NUCLEUS * rng.uniform(0.55, 0.8))
    else:  # pyknotic (superficial) nucleus: small and dark
        _nucleus(rng, od, ny, nx, rng.uniform(1.4, 2.0), _OD_NUCLEUS * rng.uniform(0.9, 1.1))


def _atypical(rng: np.random.Generator, od: np.ndarray, cy: float, cx: float) -> np.ndarray:
    """One atypical cell (dense cytoplasm, enlarged dark irregular nucleus); its nucleus."""
    r = rng.uniform(9.0, 13.0)
    sl, a = _shape(cy, cx, r, rng.uniform(1.0, 1.3), rng.uniform(0, np.pi),
                   _wobble(rng, (3, 4), 0.03, 0.08), soft=1.0)  # fmt: skip
    od[sl] += a[..., None] * _OD_CYAN * rng.uniform(1.1, 1.5)
    nr = rng.uniform(4.5, 6.5)
    wob = _wobble(rng, (3, 5, 7), 0.04, 0.1)
    ny, nx = cy + rng.uniform(-0.15, 0.15) * r, cx + rng.uniform(-0.15, 0.15) * r
    colour = _OD_ATYPICAL * rng.uniform(0.85, 1.05)
    sl, a = _nucleus(rng, od, ny, nx, nr, colour, aspect=1.4, wobble=wob, texture=0.3)
    fp = np.zeros((SIZE, SIZE), bool)
    fp[sl] = a > 0.5
    return fp


def _inflammatory(rng: np.random.Generator, od: np.ndarray, cy: float, cx: float) -> None:
    """A clump of 4–12 neutrophils, each 2–4 small dark lobes."""
    for _ in range(int(rng.integers(4, 13))):
        py, px = cy + rng.normal(0, 4.0), cx + rng.normal(0, 4.0)
        n_lobes = int(rng.integers(2, 5))
        for _ in range(n_lobes):
            ly, lx = py + rng.normal(0, 1.3), px + rng.normal(0, 1.3)
            colour = _OD_NEUTROPHIL * rng.uniform(0.7, 1.0)
            _nucleus(rng, od, ly, lx, rng.uniform(0.9, 1.4), colour, texture=0.05)


def _overlapping_nuclei(rng: np.random.Generator, od: np.ndarray, cy: float, cx: float) -> None:
    """Two or three normal nuclei of overlapping cells on top of each other."""
    a0 = rng.uniform(0, 2 * np.pi)
    for k in range(int(rng.integers(2, 4))):
        d = k * rng.uniform(2.0, 3.5)
        y, x = cy + d * np.sin(a0 + rng.normal(0, 0.4)), cx + d * np.cos(a0 + rng.normal(0, 0.4))
        _nucleus(rng, od, y, x, rng.uniform(2.2, 3.0), _OD_NUCLEUS * rng.uniform(0.7, 1.0))


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One tile (uint8 128×128×3) and its reference (the atypical nuclei; empty if negative)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (negative) or 1 (atypical), got {label!r}")
    rng = np.random.default_rng([int(seed), int(label), 13])
    od = np.zeros((SIZE, SIZE, 3))
    n_atyp = int(rng.integers(1, 4)) if label == 1 else 0
    n_inflam = int(rng.choice([0, 1, 1, 2, 3]))
    n_overlap = int(rng.choice([0, 1, 1, 2]))
    special = place_apart(rng, n_atyp + n_inflam + n_overlap, SIZE, 26.0, margin=10, tries=200)
    if len(special) < n_atyp:  # cannot happen at these sizes; keep the promise regardless
        raise RuntimeError(f"only {len(special)} of {n_atyp} atypical cells placed (seed {seed})")
    cells = place_apart(rng, int(rng.integers(9, 17)), SIZE, 16.0, margin=-4, taken=special)
    for cy, cx in cells:
        _squamous(rng, od, cy, cx)
    ref = np.zeros((SIZE, SIZE), bool)
    for k, (cy, cx) in enumerate(special):
        if k < n_atyp:
            ref |= _atypical(rng, od, cy, cx)
        elif k < n_atyp + n_inflam:
            _inflammatory(rng, od, cy, cx)
        else:  # overlapping nuclei sit where two cells overlap
            _squamous(rng, od, cy + rng.uniform(-6, 6), cx + rng.uniform(-6, 6))
            _overlapping_nuclei(rng, od, cy, cx)
    assert ref.mean() <= MAX_FRACTION, f"reference covers {100 * ref.mean():.1f} % of the tile"
    illumination = 1.0 + 0.05 * (_smooth_noise(rng, SIZE, 48)[..., None] - 0.5)
    img = _BACKGROUND * rng.uniform(0.97, 1.02, 3) * illumination * np.exp(-od)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), ref


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by its activation (``act``), as timm's ``BatchNormAct2d``."""

    def __init__(self, ch: int, act: bool = True) -> None:
        super().__init__(ch)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    """timm's SE: mean → ``conv_reduce`` → SiLU → ``conv_expand`` → sigmoid gate."""

    def __init__(self, ch: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(ch, reduced, 1)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, ch, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class DepthwiseSeparableConv(nn.Module):
    """``conv_dw`` → ``bn1`` (+SiLU) → ``se`` → ``conv_pw`` → ``bn2``; residual if shapes match."""

    def __init__(self, cin: int, cout: int, k: int = 3, se_ch: int = 4) -> None:
        super().__init__()
        self.has_skip = cin == cout
        self.conv_dw = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False)
        self.bn1 = BatchNormAct2d(cin)
        self.se = SqueezeExcite(cin, se_ch)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return x + out if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv: ``conv_pw`` → ``bn1`` → ``conv_dw`` → ``bn2`` → ``se`` → ``conv_pwl`` → ``bn3``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride=stride, padding=k // 2, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid)
        self.se = SqueezeExcite(mid, max(2, cin // 4))
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(self.se(out)))
        return x + out if self.has_skip else out


class EfficientNetLike(nn.Module):
    """EfficientNet-B0's seven stages (kernel, stride, repeats), narrow (85.8 k at w = 8)."""

    def __init__(self, width: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        stem = w
        # (out channels, kernel, stride, repeats) per stage, after B0 (64 → 4 px)
        cfg = [
            (w, 3, 1, 1),
            (3 * w // 2, 3, 2, 2),
            (5 * w // 2, 5, 2, 2),
            (4 * w, 3, 2, 2),
            (4 * w, 5, 1, 1),
            (5 * w, 5, 2, 1),
            (6 * w, 3, 1, 1),
        ]
        self.conv_stem = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(stem)
        stages, cin = [], stem
        for i, (cout, k, stride, repeats) in enumerate(cfg):
            blocks = []
            for j in range(repeats):
                if i == 0:
                    blocks.append(DepthwiseSeparableConv(cin, cout, k, se_ch=max(2, cin // 4)))
                else:
                    blocks.append(InvertedResidual(cin, cout, k, stride if j == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(cin, 12 * w, 1, bias=False)
        self.bn2 = BatchNormAct2d(12 * w)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(12 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(self.global_pool(x).flatten(1))


build = EfficientNetLike
