"""``dermo-pigment`` (held out, blind): an atypical pigmented lesion among skin, hairs and moles.

- **Data** (128×128 RGB, dermoscopy-like): smooth beige-pink skin (mottled texture,
  faint redness, a soft dark vignette at the corners) crossed by 0–5 dark hairs in
  *both* classes. A positive ("atypical") image holds one irregular pigmented lesion
  (2–5.5 % of the tile): an asymmetric, lobed outline; a light-tan to mid-brown base
  with an eccentric darker blotch; an *atypical network* (thick, dark-brown, irregular
  meshes of uneven size and line width) and 10–25 irregular dark-brown globules and
  dots, crowded towards one side. A negative ("benign") image holds, in 70 % of the
  images, a *benign mole* of the same size range: a round-oval, smooth-edged, evenly
  light-to-mid-brown patch with a thin, faint, regular (hexagonal) network, and
  otherwise no lesion; 25 % of the positives hold such a benign mole as well (where
  one fits beside the lesion). The benign base colour spans light to mid brown and the
  atypical base is lighter, so the lesions' mean colours overlap: the best single
  threshold on a lesion's mean grey level separates the two kinds with a balanced
  accuracy of only ~0.78 (150 lesions each). What decides is the dark, irregular
  network and globules: at least 11 % (median 26 %) of an atypical lesion's pixels are
  darker than the darkest pixel of any benign mole (hairs aside).
- **Reference**: the atypical lesion's pixels (its outline filled, anti-aliased
  footprint > 0.5; hairs crossing it included), never the benign mole.
- **Architecture**: torchvision's DenseNet layout, narrow - ``features`` (an
  ``nn.Sequential`` of ``conv0``/``norm0``/``relu0``/``pool0``, ``denseblock1``…3
  (``_DenseBlock``, an ``nn.ModuleDict`` of BN-ReLU-1×1-BN-ReLU-3×3 ``_DenseLayer``
  modules whose outputs are concatenated) with ``transition1``/``transition2``
  (BN-ReLU-1×1 conv-average pool) between them, ``norm5``), a functional ReLU,
  global average pooling, ``classifier`` (Linear); growth rate 8, blocks (2, 3, 4).
- **Training**: 3000 images (seeds 100 000+), 8 epochs, flips / quarter turns, a small
  colour jitter; mean/std of the training set.
- **Held-out accuracy**: 1.000 on 400 eval images (seeds 50 000+, both classes).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree
from torch import nn

from napari_medcam.data.synthetic import _smooth_noise
from napari_medcam.zoo._common import ZooEntry

SIZE = 128
CLASS_NAMES = ("benign", "atypical")
AREA = (0.02, 0.055)  # share of the tile each lesion covers
MAX_FRACTION = 0.06

_SKIN = np.array([232.0, 192.0, 170.0])
_SKIN_PINK = np.array([226.0, 170.0, 160.0])
_HAIR = np.array([58.0, 40.0, 32.0])
_TAN = np.array([196.0, 146.0, 112.0])  # lightest lesion base
_BROWN = np.array([132.0, 84.0, 58.0])  # darkest lesion base
_DARK = np.array([72.0, 42.0, 30.0])  # atypical network, blotch
_GLOBULE = np.array([52.0, 32.0, 28.0])
_BLUE_GREY = np.array([110.0, 105.0, 120.0])

ENTRY = ZooEntry(
    name="dermo-pigment",
    modality="dermoscopy-like skin (synthetic), moles and hairs as distractors",
    architecture="DenseNet layout (features: conv0 / denseblocks / transitions / norm5), narrow",
    evidence="the atypical pigmented lesion (dark irregular network and globules)",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=MAX_FRACTION,
)

TRAIN = {"n": 3000, "epochs": 8, "lr": 3e-3, "width": 8, "jitter": 0.04}


def _outline(
    rng: np.random.Generator, area: float, irregular: bool, away_from: np.ndarray | None
) -> np.ndarray:
    """Anti-aliased footprint (0–1) of a lesion of ``area`` px, clear of ``away_from``."""
    ks = (2, 3, 4, 5, 7)
    if irregular:
        amp = [rng.uniform(0.06, 0.18), *rng.uniform(0.04, 0.11, len(ks) - 1)]
    else:
        amp = [rng.uniform(0.03, 0.12), *rng.uniform(0.0, 0.025, len(ks) - 1)]
    phase = rng.uniform(0, 2 * np.pi, len(ks))
    th = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    wob = 1 + sum(a * np.cos(k * th + p) for a, k, p in zip(amp, ks, phase))
    wob = np.clip(wob, 0.45, None)
    radius = np.sqrt(area / (0.5 * np.mean(wob**2) * 2 * np.pi))  # polar area = area
    reach = radius * wob.max() + 2
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    for _ in range(50):
        cy, cx = rng.uniform(reach, SIZE - reach, 2)
        theta = np.arctan2(yy - cy, xx - cx) % (2 * np.pi)
        edge = radius * np.interp(theta, th, wob, period=2 * np.pi)
        alpha = np.clip(edge - np.hypot(yy - cy, xx - cx) + 0.5, 0, 1)
        if away_from is None or not ((alpha > 0) & (away_from > 0)).any():
            return alpha
    return alpha


def _network(
    rng: np.random.Generator, alpha: np.ndarray, spacing: tuple[float, float], jitter: float
) -> np.ndarray:
    """Distance gap to the two nearest cells of a jittered hexagonal Voronoi mesh (0 on a line)."""
    ys, xs = np.nonzero(alpha > 0)
    y0, y1, x0, x1 = ys.min() - 6, ys.max() + 7, xs.min() - 6, xs.max() + 7
    step = rng.uniform(*spacing)
    gy, gx = np.mgrid[y0:y1:step, x0 : x1 : step * 0.866]
    gy = gy + (np.arange(gy.shape[1]) % 2) * step / 2  # hexagonal lattice
    pts = np.stack([gy.ravel(), gx.ravel()], 1)
    pts = pts + rng.normal(0, jitter * step, pts.shape)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    d, _ = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], 1), k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(SIZE, SIZE)
    return gap


def _benign(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Paint a regular, evenly light-to-mid-brown mole with a faint regular network."""
    base = _TAN + (_BROWN - _TAN) * rng.uniform(0.0, 1.0)
    inner = np.clip(0.4 + ndimage.gaussian_filter(alpha, 2.0), 0, 1)  # a soft, even border
    gap = _network(rng, alpha, (4.0, 5.0), 0.06)
    line = np.clip(1.0 - gap / rng.uniform(0.7, 1.0), 0, 1) * rng.uniform(0.12, 0.22)
    colour = base * (1 - line[..., None] * 0.6)
    colour = colour * (1 + (_smooth_noise(rng, SIZE, 6)[..., None] - 0.5) * 0.06)
    a = (alpha * inner)[..., None] * rng.uniform(0.85, 1.0)
    return img * (1 - a) + colour * a


def _atypical(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Paint an irregular lesion: uneven base, eccentric blotch, atypical network, globules."""
    ys, xs = np.nonzero(alpha > 0.5)
    cy, cx = ys.mean(), xs.mean()
    extent = np.sqrt(len(ys) / np.pi)
    ang = rng.uniform(0, 2 * np.pi)  # the side where the darker pigment crowds
    side = np.array([np.sin(ang), np.cos(ang)])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    towards = ((yy - cy) * side[0] + (xx - cx) * side[1]) / extent  # -1 … 1 across
    base = _TAN + (_BROWN - _TAN) * rng.uniform(-0.2, 0.5)
    uneven = _smooth_noise(rng, SIZE, 5)[..., None] - 0.5
    colour = base * (1 + uneven * 0.25)
    # an eccentric darker blotch and, sometimes, a blue-grey veil
    by, bx = np.array([cy, cx]) + side * extent * rng.uniform(0.2, 0.5)
    br = extent * rng.uniform(0.35, 0.55)
    blotch = np.clip(1.2 - np.hypot(yy - by, xx - bx) / br, 0, 1)[..., None]
    blotch *= rng.uniform(0.25, 0.55)
    colour = colour * (1 - blotch) + _DARK * blotch
    if rng.random() < 0.35:
        veil = np.clip(towards + rng.uniform(-0.2, 0.3), 0, 1)[..., None] * rng.uniform(0.2, 0.4)
        colour = colour * (1 - veil) + _BLUE_GREY * veil
    # atypical network: irregular meshes, thick dark lines of uneven width
    gap = _network(rng, alpha, (4.5, 7.0), 0.3)
    width = 1.0 + 1.2 * _smooth_noise(rng, SIZE, 4)
    line = np.clip(1.0 - gap / width, 0, 1)
    line *= np.clip(0.55 + 0.6 * (towards + 0.3) + 0.2 * _smooth_noise(rng, SIZE, 3), 0, 1)
    colour = colour * (1 - line[..., None] * 0.8) + _DARK * (line[..., None] * 0.8)
    # irregular globules and dots, crowded towards one side and the periphery
    inside = np.argwhere(alpha > 0.9)
    weight = np.exp(1.5 * towards[inside[:, 0], inside[:, 1]])
    n = int(rng.integers(10, 26))
    for i in rng.choice(len(inside), n, p=weight / weight.sum()):
        gy, gx = inside[i] + rng.uniform(-0.5, 0.5, 2)
        r = rng.uniform(0.7, 2.2)
        dot = np.clip(
            r * rng.uniform(0.8, 1.2) - np.hypot((yy - gy) * rng.uniform(0.7, 1.3), xx - gx) + 0.5,
            0,
            1,
        )[..., None] * rng.uniform(0.75, 1.0)
        colour = colour * (1 - dot) + _GLOBULE * dot
    a = (
        alpha[..., None]
        * np.clip(0.85 + 0.3 * ndimage.gaussian_filter(alpha, 1.0), 0, 1)[..., None]
    )
    return img * (1 - a) + colour * a


def _hairs(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """0–5 thin, dark, gently curved hairs across the image."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3, 4, 5]))):
        p0, p2 = rng.uniform(-20, SIZE + 20, (2, 2))
        p1 = (p0 + p2) / 2 + rng.normal(0, 18, 2)
        t = np.linspace(0, 1, 120)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        d, _ = cKDTree(curve).query(np.stack([yy.ravel(), xx.ravel()], 1))
        w = rng.uniform(0.5, 0.95)
        a = np.clip(w - d.reshape(SIZE, SIZE) + 0.5, 0, 1)[..., None] * rng.uniform(0.7, 0.95)
        img = img * (1 - a) + _HAIR * rng.uniform(0.8, 1.3) * a
    return img


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 128×128×3) and its reference (the atypical lesion, if any)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    rng = np.random.default_rng([int(seed), int(label), 9])
    tone = rng.uniform(-0.06, 0.06)
    pink = _smooth_noise(rng, SIZE, 32)[..., None] * rng.uniform(0.2, 0.6)
    img = (_SKIN * (1 - pink) + _SKIN_PINK * pink) * (1 + tone)
    img = img * (1 + (_smooth_noise(rng, SIZE, 3)[..., None] - 0.5) * 0.05)
    img = img * (1 + (_smooth_noise(rng, SIZE, 12)[..., None] - 0.5) * 0.06)
    ref = np.zeros((SIZE, SIZE), bool)
    lesion = None
    if label == 1:
        lesion = _outline(rng, rng.uniform(*AREA) * SIZE * SIZE, True, None)
        img = _atypical(rng, img, lesion)
        ref = lesion > 0.5
    if (label == 0 and rng.random() < 0.7) or (label == 1 and rng.random() < 0.25):
        mole = _outline(rng, rng.uniform(*AREA) * SIZE * SIZE, False, lesion)
        if lesion is None or not ((mole > 0) & (lesion > 0)).any():
            img = _benign(rng, img, mole)
    img = _hairs(rng, img)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    r = np.hypot(yy - SIZE / 2 + 0.5, xx - SIZE / 2 + 0.5) / (SIZE / 2)
    img = img * (1 - 0.25 * np.clip(r - 1.0, 0, 1)[..., None] ** 0.7)  # corner vignette
    img += rng.normal(0, 2.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), ref


class _DenseLayer(nn.Module):
    """torchvision's dense layer: BN-ReLU-1×1 conv (bottleneck), BN-ReLU-3×3 conv."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    """torchvision's dense block: an ``nn.ModuleDict`` of layers, outputs concatenated."""

    def __init__(self, n_layers: int, cin: int, growth: int) -> None:
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(nn.Module):
    """DenseNet in torchvision's layout; growth ``width``, blocks (2, 3, 4) (~34 k at 8)."""

    def __init__(
        self, width: int = 8, num_classes: int = 2, blocks: tuple[int, ...] = (2, 3, 4)
    ) -> None:
        super().__init__()
        ch = 2 * width
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(3, ch, 7, stride=2, padding=3, bias=False),  # 64
            norm0=nn.BatchNorm2d(ch),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(3, stride=2, padding=1),  # 32
        )
        for i, n in enumerate(blocks):
            parts[f"denseblock{i + 1}"] = _DenseBlock(n, ch, width)
            ch += n * width
            if i < len(blocks) - 1:  # 16, 8
                parts[f"transition{i + 1}"] = _Transition(ch, ch // 2)
                ch //= 2
        parts["norm5"] = nn.BatchNorm2d(ch)
        self.features = nn.Sequential(parts)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


build = DenseNet
