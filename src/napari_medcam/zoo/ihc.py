"""``ihc-vgg`` (held out): real IHC patches (DAB-positive vs negative), a VGG-like net.

- **Data**: 64×64 crops of scikit-image's ``immunohistochemistry`` image (colon
  tissue, DAB brown on haematoxylin blue; bundled, offline). Labels and reference
  come from `napari_medcam.classifiers.ihc`: ``dab_reference`` (colour
  deconvolution, smoothed DAB channel > 0.05) and ``patch_label`` (positive when
  ≥ 15 % of the crop is DAB, negative when ≤ 2 %, ambiguous crops skipped).
- **Split**: training crops come from the left half (columns 0–255) only; "eval"
  (and "tune") crops from the right half (columns 256–511). A seed picks a random
  crop position, redrawn until the crop has the requested label. There is only one
  image, so "tune" and "eval" crops of this held-out entry may overlap each other
  (never the training half).
- **Reference**: the DAB mask within the crop. `zoo.cases` keeps positives with
  at most 75 % DAB (room for localisation), as the evaluation's IHC case does.
- **Architecture**: torchvision's VGG layout - ``features`` (an ``nn.Sequential``
  of conv/ReLU pairs and max-pools, 64 → 8 px), ``avgpool``
  (``AdaptiveAvgPool2d(2)``), flatten, ``classifier`` (Linear-ReLU-Dropout-Linear).
- **Training**: 4000 crops, the eight flips/rotations, a per-channel colour jitter
  (±6 %); plain ImageNet normalisation.
- **Held-out accuracy**: 0.9975 on 400 right-half crops (200 per class; negatives
  0.995, positives 1.000).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.ihc import (
    EVAL_COLS,
    PATCH,
    TRAIN_COLS,
    dab_reference,
    ihc_image,
    patch_label,
)
from napari_medcam.zoo._common import ZooEntry

CLASS_NAMES = ("DAB-negative", "DAB-positive")

ENTRY = ZooEntry(
    name="ihc-vgg",
    modality="brightfield IHC, real (scikit-image immunohistochemistry, DAB)",
    architecture="VGG-like features / avgpool / classifier, ImageNet normalisation",
    evidence="DAB-positive (brown) tissue by colour deconvolution",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(PATCH, PATCH),
    heldout_accuracy=0.9975,
    max_reference_fraction=0.75,
)

TRAIN = {"n": 4000, "epochs": 10, "lr": 2e-3, "width": 16, "jitter": 0.06, "norm": "imagenet"}


@lru_cache(maxsize=1)
def _image_and_reference() -> tuple[np.ndarray, np.ndarray]:
    img = ihc_image()
    return img, dab_reference(img)


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """A 64×64 crop with ``label`` from the split's half of the image, and its DAB mask."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    img, ref = _image_and_reference()
    c0, c1 = TRAIN_COLS if split == "train" else EVAL_COLS
    rng = np.random.default_rng([int(seed), int(label), 2])
    for _ in range(10_000):
        r = int(rng.integers(0, img.shape[0] - PATCH + 1))
        c = int(rng.integers(c0, c1 - PATCH + 1))
        rp = ref[r : r + PATCH, c : c + PATCH]
        if patch_label(rp) == label:
            return img[r : r + PATCH, c : c + PATCH].copy(), rp.copy()
    raise RuntimeError(f"no crop with label {label} found in the {split} half")


class VGGNet(nn.Module):
    """VGG layout for 64×64 input: three double-conv stages (~90 k parameters)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


build = VGGNet
