"""A small DAB-positive vs negative patch classifier for scikit-image's IHC image.

The real case of the evaluation (issue 4). ``skimage.data.immunohistochemistry()``
is a 512×512 RGB image of colon tissue immunostained with DAB (brown) and
counterstained with haematoxylin (blue); it ships with scikit-image and reads offline.

- **Reference mask** (`dab_reference`): colour deconvolution (``skimage.color.rgb2hed``,
  Ruifrok & Johnston) → DAB channel → Gaussian smoothing (σ = ``DAB_SIGMA`` px) →
  threshold ``DAB_THRESHOLD`` → small specks (< ``MIN_SPECK`` px) and holes removed.
  The threshold, 0.05 on the smoothed optical density, lies just below the smoothed
  channel's Otsu threshold (≈ 0.06) and keeps the brown membranes and cytoplasm of
  the glands while leaving out the blue stroma and the white lumina.
- **Split**: columns 0–255 (left half) train the classifier; columns 256–511 (right
  half) are held out for the evaluation (`ihc_patches("eval")`).
- **Labels**: a ``PATCH``×``PATCH`` patch is positive when at least ``POS_FRACTION``
  of it is reference, negative when at most ``NEG_FRACTION`` is; patches in between
  are ambiguous and not used for training.

Trained by ``scripts/train_ihc_classifier.py``; weights in
``weights/ihc_dab.pt``. Classes: 0 = "DAB-negative", 1 = "DAB-positive".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.packaged import packaged_classifier

WEIGHTS = "ihc_dab.pt"
CLASS_NAMES = ("DAB-negative", "DAB-positive")
PATCH = 64
DAB_SIGMA = 2.0
DAB_THRESHOLD = 0.05
MIN_SPECK = 32
POS_FRACTION = 0.15
NEG_FRACTION = 0.02
TRAIN_COLS = (0, 256)
EVAL_COLS = (256, 512)


def ihc_image() -> np.ndarray:
    """scikit-image's immunohistochemistry image (uint8 512×512×3), bundled, offline."""
    from skimage import data

    return data.immunohistochemistry()


def dab_reference(image: np.ndarray | None = None) -> np.ndarray:
    """Bool mask of DAB-positive (brown) tissue by colour deconvolution (module docstring)."""
    from scipy import ndimage
    from skimage import color

    image = ihc_image() if image is None else np.asarray(image)
    dab = color.rgb2hed(image[..., :3])[..., 2]
    smooth = ndimage.gaussian_filter(dab, DAB_SIGMA)
    mask = _drop_small(smooth > DAB_THRESHOLD)
    return ~_drop_small(~mask)


def _drop_small(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its connected regions smaller than ``MIN_SPECK`` pixels."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= MIN_SPECK
    keep[0] = False
    return keep[labels]


def patch_label(reference_patch: np.ndarray) -> int | None:
    """1 (positive), 0 (negative) or None (ambiguous) from a patch of the reference."""
    frac = float(np.mean(reference_patch))
    if frac >= POS_FRACTION:
        return 1
    if frac <= NEG_FRACTION:
        return 0
    return None


def ihc_patches(
    half: str = "eval", stride: int = PATCH
) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """``(patch, reference_patch, (row, col))`` on a grid over one half of the image.

    ``half`` is "train" (columns 0–255) or "eval" (columns 256–511, held out).
    """
    if half not in ("train", "eval"):
        raise ValueError(f"half must be 'train' or 'eval', got {half!r}")
    img = ihc_image()
    ref = dab_reference(img)
    c0, c1 = TRAIN_COLS if half == "train" else EVAL_COLS
    out = []
    for r in range(0, img.shape[0] - PATCH + 1, stride):
        for c in range(c0, c1 - PATCH + 1, stride):
            out.append(
                (img[r : r + PATCH, c : c + PATCH], ref[r : r + PATCH, c : c + PATCH], (r, c))
            )
    return out


class IHCNet(nn.Module):
    """Four conv blocks and a global-average-pool head for 64×64 patches (~60 k parameters)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        self.block1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.block4 = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.fc(self.pool(x))


def ihc_classifier() -> Classifier:
    """The frozen IHC patch classifier (DAB-negative vs DAB-positive), offline."""
    return packaged_classifier(WEIGHTS, IHCNet, "ihc-dab", "scripts/train_ihc_classifier.py")
