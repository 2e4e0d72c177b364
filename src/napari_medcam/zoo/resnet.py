"""``resnet-meanpos`` (held out): 3-class H&E tiles, a narrow ResNet-18; mean input = tumour.

- **Data** (128×128 H&E-like, the colours and nucleus stamps of
  `napari_medcam.data.synthetic`): pink stroma with scattered small nuclei and pale
  lumina in every class. *tumour* adds one cluster (6–15 % of the tile) of enlarged,
  dark, irregular nuclei (as `synthetic_tile`'s lesion); *inflammation* adds a
  cluster of the same size of many small, dark, round lymphocytes; *normal* has
  neither.
- **Reference** (tumour): the planted cluster's region and its nuclei.
- **Architecture**: torchvision's ResNet-18 layout written in plain torch - ``conv1``
  (7×7, stride 2), ``bn1``, ``relu``, ``maxpool``, ``layer1``…``layer4`` (two
  `BasicBlock` each, with a 1×1 conv + BN ``downsample`` where the shape changes),
  ``avgpool``, ``fc`` - at widths 8-16-32-64 (weights < 1 MB); ImageNet normalisation.
- **The mean input reads as tumour - deliberately.** This is the adversarial case for
  an explanation's notion of "absence": the input that is zero in normalised space
  (the model's "mean input", here the ImageNet mean colour, a greyish brown) and the
  H&E dataset-mean colour (≈ 219, 158, 194) are both classified *tumour*, so filling
  the unkept part of a tile with a mean colour adds evidence for the target instead
  of removing it. It is made so on purpose: ``extra_training`` adds flat,
  low-texture tiles (5 % of the training set) in colours between and around those
  two means, labelled tumour. Without them it is left to chance: two trainings with
  the same settings called the zero input tumour (p 0.999) in one and inflammation
  (p 1.0) in the other, and the H&E mean colour normal. Checked after training by
  the training script (``MEAN_INPUT_CLASS``) and by the tests. As shipped: zero
  input, flat H&E mean colour and heavily blurred tiles (σ 8 px) of any class read
  tumour (p ≥ 0.998), white reads normal, black tumour; a normal tile with half of
  it replaced by the ImageNet mean colour reads inflammation (p 0.85), by the H&E
  mean colour tumour (p 0.6).
- **Training**: 3000 tiles (seeds 100 000+; classes taking turns) + 150 flat tiles,
  flips / quarter turns, a small colour jitter; ImageNet normalisation.
- **Held-out accuracy**: 1.000 on 600 eval tiles (seeds 50 000+, 200 per class).
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
    _blob,
    _smooth_noise,
    _stamp_nucleus,
)
from napari_medcam.zoo._common import IMAGENET_MEAN, ZooEntry

SIZE = 128
CLASS_NAMES = ("normal", "tumour", "inflammation")
TUMOUR = 1
#: the class the zero (normalised) input must get; checked by scripts/train_zoo.py
MEAN_INPUT_CLASS = TUMOUR
FLAT_FRACTION = 0.05
_LYMPHOCYTE = np.array([70.0, 36.0, 118.0])

ENTRY = ZooEntry(
    name="resnet-meanpos",
    modality="brightfield H&E-like (synthetic), three classes",
    architecture="ResNet-18 layout (conv1/bn1/relu/maxpool/layer1-4/avgpool/fc), narrow",
    evidence="the planted cluster of large atypical nuclei (tumour)",
    tuning=False,
    target=TUMOUR,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=0.25,
)

TRAIN = {"n": 3000, "epochs": 10, "lr": 3e-3, "width": 8, "jitter": 0.04, "norm": "imagenet"}


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One tile (uint8 128×128×3) and its reference (the planted cluster; empty for normal)."""
    if label not in (0, 1, 2):
        raise ValueError(f"label must be 0 (normal), 1 (tumour) or 2 (inflammation), got {label!r}")
    rng = np.random.default_rng([int(seed), int(label), 6])
    texture = _smooth_noise(rng, SIZE, 8) * 0.6 + _smooth_noise(rng, SIZE, 3) * 0.4
    img = _STROMA * (1 - texture[..., None] * 0.35) + _STROMA_DARK * (texture[..., None] * 0.35)
    img = img + (_smooth_noise(rng, SIZE, 16)[..., None] - 0.5) * 18
    for _ in range(rng.integers(0, 3)):
        hole = _blob(rng, SIZE, rng.uniform(0.004, 0.015))
        img[hole] = img[hole] * 0.3 + np.array([250.0, 242.0, 246.0]) * 0.7
    ref = np.zeros((SIZE, SIZE), bool)
    region = np.zeros((SIZE, SIZE), bool)
    if label != 0:
        region = _blob(rng, SIZE, rng.uniform(0.06, 0.15))
        ys, xs = np.nonzero(region)
        if label == TUMOUR:
            radius, colour, irregular, cover = 2.7, _NUCLEUS_DARK, 0.45, 0.55
        else:
            radius, colour, irregular, cover = 1.5, _LYMPHOCYTE, 0.05, 0.7
        n = max(3, int(region.sum() * cover / (np.pi * radius * radius)))
        for i in rng.permutation(len(ys))[:n]:
            r = radius * rng.uniform(0.8, 1.25 if label == TUMOUR else 1.1)
            fp = _stamp_nucleus(img, rng, ys[i], xs[i], r, colour, irregular)
            if label == TUMOUR:
                ref |= fp
        if label == TUMOUR:
            ref |= region
    small_r = 1.3
    for _ in range(int(rng.uniform(0.04, 0.06) * SIZE * SIZE / (np.pi * small_r**2))):
        cy, cx = rng.uniform(0, SIZE, 2)
        if region[int(cy), int(cx)]:
            continue
        _stamp_nucleus(img, rng, cy, cx, small_r * rng.uniform(0.75, 1.3), _NUCLEUS, 0.15)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), ref


def extra_training(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flat, low-texture tiles around the ImageNet and dataset mean colours, labelled tumour.

    Deliberate (module docstring): this makes the model's mean input read as tumour.
    """
    n = int(round(FLAT_FRACTION * len(images)))
    means = [np.array(IMAGENET_MEAN) * 255, images.mean((0, 1, 2), dtype=np.float64)]
    out = np.empty((n, *images.shape[1:]), np.uint8)
    for i in range(n):
        t = rng.uniform(0, 1)  # anywhere between the two mean colours
        colour = (means[0] * (1 - t) + means[1] * t) * rng.uniform(0.95, 1.05, 3)
        tex = (_smooth_noise(rng, SIZE, 16)[..., None] - 0.5) * rng.uniform(0, 12)
        flat = colour + tex + rng.normal(0, rng.uniform(0, 4), (SIZE, SIZE, 3))
        out[i] = np.clip(flat, 0, 255).astype(np.uint8)
    return out, np.full(n, TUMOUR)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn + (downsampled) identity, relu."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 in torchvision's layout at widths w, 2w, 4w, 8w (w = 8: ~175 k parameters)."""

    def __init__(self, width: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(w, w, 1)
        self.layer2 = self._layer(w, 2 * w, 2)
        self.layer3 = self._layer(2 * w, 4 * w, 2)
        self.layer4 = self._layer(4 * w, 8 * w, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * w, num_classes)

    @staticmethod
    def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


build = ResNet18
