"""``fluo-stages`` (TUNING): fluorescent nuclei on a dark field, a timm-like staged net.

- **Data** (128×128, one fluorescence channel rendered green, as an H2B-GFP image):
  8–15 nuclei on a dark, unevenly lit field with camera noise and a slight optical
  blur. Normal nuclei are round to slightly oval (aspect ≤ 1.3), radius 5.5–8.5 px,
  textured, of moderate brightness. A positive ("abnormal") image also holds one or
  two abnormal objects of a distinct shape, each one of: a *bar* (metaphase plate,
  ~20×5 px, bright and flat), a *ring* (bright annulus, outer radius 7–9.5 px) or a
  *condensed* nucleus (small, radius 3–4 px, saturated). Negatives hold normal
  nuclei only; the nucleus count has the same distribution in both classes.
- **Reference**: the abnormal objects' pixels (anti-aliased footprint > 0.5).
- **Architecture**: timm-like ``stem`` → ``stages`` (an ``nn.Sequential`` of
  `Stage` modules, each a strided ``downsample`` then a ``blocks`` ``nn.Sequential``
  of residual blocks) → ``head`` (``global_pool`` + ``fc``).
- **Training**: 3000 images (seeds 100 000+), flips / quarter turns, brightness
  jitter; per-channel mean/std of the training set.
- **Held-out accuracy**: 1.000 on 400 eval images (seeds 50 000+, both classes).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from napari_medcam.data.synthetic import _smooth_noise
from napari_medcam.zoo._common import ZooEntry, place_apart, soft_ellipse

SIZE = 128
CLASS_NAMES = ("normal", "abnormal")
COLOUR = np.array([0.25, 1.0, 0.5])  # one channel rendered as GFP green
KINDS = ("bar", "ring", "condensed")

ENTRY = ZooEntry(
    name="fluo-stages",
    modality="fluorescence, dark field (synthetic nuclei, one channel as green RGB)",
    architecture="timm-like stem / stages (Stage.blocks) / head",
    evidence="the abnormal objects (bar, ring or condensed nucleus)",
    tuning=True,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=0.05,
)

TRAIN = {"n": 3000, "epochs": 8, "lr": 3e-3, "width": 16, "rot90": True, "jitter": 0.08}


def _abnormal(rng: np.random.Generator, cy: float, cx: float, kind: str) -> np.ndarray:
    """Intensity (0–255 scale) of one abnormal object."""
    shape = (SIZE, SIZE)
    angle = rng.uniform(0, np.pi)
    if kind == "bar":
        a = soft_ellipse(shape, cy, cx, rng.uniform(9, 12), rng.uniform(2.5, 3.2), angle)
        return a * rng.uniform(200, 245)
    if kind == "ring":
        r = rng.uniform(7, 9.5)
        inner = r * rng.uniform(0.5, 0.6)
        a = soft_ellipse(shape, cy, cx, r, r * rng.uniform(0.9, 1.0), angle)
        a = np.clip(a - soft_ellipse(shape, cy, cx, inner, inner), 0, 1)
        return a * rng.uniform(170, 220)
    r = rng.uniform(3.0, 4.0)
    return soft_ellipse(shape, cy, cx, r, r * rng.uniform(0.85, 1.0), angle) * 255.0


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 128×128×3, dark field) and its reference (abnormal objects)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    rng = np.random.default_rng([int(seed), int(label), 3])
    img = 6 + 12 * _smooth_noise(rng, SIZE, 48)  # uneven illumination
    tex = 0.75 + 0.5 * _smooth_noise(rng, SIZE, 3)  # chromatin texture
    ref = np.zeros((SIZE, SIZE), bool)
    centres = place_apart(rng, int(rng.integers(8, 16)), SIZE, 19.0, margin=7)
    n_abnormal = int(rng.integers(1, 3)) if label == 1 else 0
    for k, (cy, cx) in enumerate(centres):
        if k < n_abnormal:
            obj = _abnormal(rng, cy, cx, KINDS[int(rng.integers(0, 3))])
            ref |= obj > 0.5 * obj.max()
            img = img + obj
        else:
            r = rng.uniform(5.5, 8.5)
            a = soft_ellipse(
                (SIZE, SIZE), cy, cx, r, r / rng.uniform(1.0, 1.3), rng.uniform(0, np.pi)
            )
            img = img + a * tex * rng.uniform(80, 165)
    img = ndimage.gaussian_filter(img, 0.7)
    img = img + rng.normal(0, 2.5, img.shape) + rng.poisson(2.0, img.shape)
    rgb = np.clip(img[..., None] * COLOUR, 0, 255)
    return rgb.astype(np.uint8), ref


class ConvBnAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    """Two 3×3 convolutions with an identity shortcut."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(ch, ch)
        self.conv2 = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.conv1(x)))


class Stage(nn.Module):
    """A strided ``downsample`` then ``blocks`` (an ``nn.Sequential``), as in timm."""

    def __init__(self, cin: int, cout: int, depth: int = 1) -> None:
        super().__init__()
        self.downsample = ConvBnAct(cin, cout, stride=2)
        self.blocks = nn.Sequential(*(ResBlock(cout) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    def __init__(self, ch: int, num_classes: int) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(x).flatten(1))


class StagesNet(nn.Module):
    """``stem`` (128 → 64 px) → three stages (→ 32, 16, 8 px) → ``head`` (~90 k parameters)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        self.stem = ConvBnAct(3, w, stride=2)
        self.stages = nn.Sequential(Stage(w, w), Stage(w, 2 * w), Stage(2 * w, 4 * w))
        self.head = Head(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


build = StagesNet
