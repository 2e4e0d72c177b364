"""``mitosis-tiny`` (held out): one mitotic figure among many nuclei, evidence ≤ 0.5 %.

- **Data** (128×128 H&E-like, colours of `napari_medcam.data.synthetic`): pink
  stroma texture with 45–70 normal nuclei (round to oval, radius 3–4.5 px, purple,
  some of them darker). A positive ("mitosis") tile holds exactly one mitotic figure:
  a very dark, dense, bar-shaped chromosome plate (~9–10 × 3–4 px) with a few
  chromosome clumps sticking out of its edges, at a random angle, in place of one
  nucleus. It covers 25–60 px, i.e. 0.15–0.37 % of the tile (always ≤ 0.5 %).
- **Reference**: the figure's pixels (anti-aliased footprint > 0.5).
- **Architecture**: torchvision's VGG layout - ``features`` (an ``nn.Sequential`` of
  conv/ReLU/max-pool, 128 → 16 px), ``pool`` (global max pooling, suited to a tiny
  object), flatten, ``classifier`` (Linear-ReLU-Linear).
- **Training**: 3000 tiles (seeds 100 000+), flips / quarter turns, a small colour
  jitter; mean/std of the training set.
- **Held-out accuracy**: 1.000 on 400 eval tiles (seeds 50 000+, both classes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_medcam.data.synthetic import (
    _NUCLEUS,
    _NUCLEUS_DARK,
    _STROMA,
    _STROMA_DARK,
    _smooth_noise,
    _stamp_nucleus,
)
from napari_medcam.zoo._common import ZooEntry, place_apart, soft_ellipse

SIZE = 128
CLASS_NAMES = ("no mitosis", "mitosis")
MAX_FRACTION = 0.005
_FIGURE = np.array([42.0, 14.0, 66.0])  # condensed chromatin: near black-purple

ENTRY = ZooEntry(
    name="mitosis-tiny",
    modality="brightfield H&E-like nuclei (synthetic), tiny evidence",
    architecture="VGG-like features / global max pool / classifier",
    evidence="the single mitotic figure (≤ 0.5 % of the tile)",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=MAX_FRACTION,
)

TRAIN = {"n": 3000, "epochs": 8, "lr": 3e-3, "width": 16, "jitter": 0.04}


def _stroma(rng: np.random.Generator) -> np.ndarray:
    texture = _smooth_noise(rng, SIZE, 8) * 0.6 + _smooth_noise(rng, SIZE, 3) * 0.4
    img = _STROMA * (1 - texture[..., None] * 0.35) + _STROMA_DARK * (texture[..., None] * 0.35)
    return img + (_smooth_noise(rng, SIZE, 16)[..., None] - 0.5) * 18


def _figure(rng: np.random.Generator, cy: float, cx: float) -> np.ndarray:
    """Alpha (0–1) of a metaphase-like plate: a dark bar with clumps on its edges."""
    angle = rng.uniform(0, np.pi)
    half_len, half_w = rng.uniform(4.5, 5.0), rng.uniform(1.5, 2.0)
    alpha = soft_ellipse((SIZE, SIZE), cy, cx, half_len, half_w, angle, soft=0.5)
    along = np.array([np.cos(angle), np.sin(angle)])  # (dy, dx) of the long axis
    across = np.array([-along[1], along[0]])
    for _ in range(int(rng.integers(2, 5))):
        t = rng.uniform(-0.8, 0.8) * half_len
        side = rng.choice([-1.0, 1.0]) * (half_w + rng.uniform(0.3, 1.0))
        py, px = np.array([cy, cx]) + t * along + side * across
        r = rng.uniform(0.9, 1.3)
        alpha = np.maximum(alpha, soft_ellipse((SIZE, SIZE), py, px, r, r, soft=0.5))
    return alpha


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One tile (uint8 128×128×3) and its reference (the mitotic figure, if any)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    rng = np.random.default_rng([int(seed), int(label), 5])
    img = _stroma(rng)
    centres = place_apart(rng, int(rng.integers(45, 71)), SIZE, 8.5, margin=2)
    ref = np.zeros((SIZE, SIZE), bool)
    for k, (cy, cx) in enumerate(centres):
        if label == 1 and k == 0:
            margin = 8  # the whole figure lies inside the tile
            cy, cx = np.clip([cy, cx], margin, SIZE - 1 - margin)
            alpha = _figure(rng, cy, cx)
            colour = _FIGURE + rng.normal(0, 5, (SIZE, SIZE, 3))
            img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
            ref = alpha > 0.5
            continue
        t = rng.uniform(0, 0.45)
        colour = _NUCLEUS * (1 - t) + _NUCLEUS_DARK * t
        _stamp_nucleus(img, rng, cy, cx, rng.uniform(3.0, 4.5), colour, 0.2)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), ref


class TinyVGG(nn.Module):
    """VGG layout with a global max pool: five convolutions (~75 k parameters)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 64
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 32
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 16
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(4 * w, 32), nn.ReLU(inplace=True), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


build = TinyVGG
