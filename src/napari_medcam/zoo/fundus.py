"""``fundus-microaneurysm`` (held out): microaneurysms planted on a real fundus photograph.

- **Data** (96×96 RGB): patches of scikit-image's ``retina`` image (a real colour
  fundus photograph, bundled), downscaled by 2 (705×705), lying wholly inside the
  field of view. A positive ("microaneurysm") patch has one to three planted
  microaneurysms: small round dark-red dots (radius 1.8–3 px, about a vessel's
  width, as in scikit-image's ``microaneurysms`` crop), darkening the local fundus
  colour to 55–72 % (a little more in green and blue) with a soft edge. Negatives
  are the bare patches - which hold vessels, their crossings and the optic disc,
  the natural look-alikes.
- **Split**: training patches lie in the top half of the image (rows < 352),
  "eval" and "tune" patches in the bottom half (rows ≥ 352); a seed picks the
  position. One image only, so "tune" and "eval" patches of this held-out entry may
  overlap each other (never the training half).
- **Reference**: the planted dots' pixels (anti-aliased footprint > 0.5).
- **Architecture**: the timm-like layout of ``fluo-stages`` (``stem`` / ``stages``
  of `Stage` with ``blocks`` / ``head``) at 96×96 input.
- **Training**: 3000 patches, flips / quarter turns, a small colour jitter;
  mean/std of the training set.
- **Held-out accuracy**: 1.000 on 400 bottom-half patches (200 per class).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from napari_medcam.zoo._common import ZooEntry, soft_ellipse
from napari_medcam.zoo.fluo import StagesNet

SIZE = 96
HALF = 352  # rows of the downscaled image: training above, evaluation below
CLASS_NAMES = ("no microaneurysm", "microaneurysm")

ENTRY = ZooEntry(
    name="fundus-microaneurysm",
    modality="colour fundus photograph, real (scikit-image retina) with planted lesions",
    architecture="timm-like stem / stages (Stage.blocks) / head",
    evidence="one to three planted microaneurysms (dark-red dots)",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=0.02,
)

TRAIN = {"n": 3000, "epochs": 10, "lr": 3e-3, "width": 16, "jitter": 0.05}


@lru_cache(maxsize=1)
def _fundus() -> tuple[np.ndarray, np.ndarray]:
    """The downscaled retina (float 0–255) and the admissible top-left corners of patches."""
    from skimage import data, transform

    img = transform.rescale(data.retina(), 0.5, channel_axis=-1, anti_aliasing=True) * 255
    fov = ndimage.binary_erosion(img.max(-1) > 25, iterations=2)
    # a patch is admissible when it lies wholly inside the field of view
    inside = ndimage.minimum_filter(fov.astype(np.uint8), size=SIZE, origin=-(SIZE // 2))
    corners = inside[: img.shape[0] - SIZE + 1, : img.shape[1] - SIZE + 1].astype(bool)
    return img, corners


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One patch (uint8 96×96×3) and its reference (the planted microaneurysms)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    img, corners = _fundus()
    rows = np.arange(corners.shape[0])
    allowed = rows + SIZE <= HALF if split == "train" else rows >= HALF
    ys, xs = np.nonzero(corners & allowed[:, None])
    rng = np.random.default_rng([int(seed), int(label), 7])
    i = int(rng.integers(0, len(ys)))
    patch = img[ys[i] : ys[i] + SIZE, xs[i] : xs[i] + SIZE].copy()
    ref = np.zeros((SIZE, SIZE), bool)
    if label == 1:
        local = ndimage.uniform_filter(patch, (15, 15, 1))
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(6, SIZE - 6, 2)
            r = rng.uniform(1.8, 3.0)
            a = soft_ellipse((SIZE, SIZE), cy, cx, r, r * rng.uniform(0.85, 1.0), soft=0.8)
            dark = local * rng.uniform(0.55, 0.72) * np.array([1.0, 0.85, 0.9])
            patch = patch * (1 - a[..., None]) + dark * a[..., None]
            ref |= a > 0.5
    patch += rng.normal(0, 1.5, patch.shape)
    return np.clip(patch, 0, 255).round().astype(np.uint8), ref


build = StagesNet
