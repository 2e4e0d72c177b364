"""Is the evidence readable? Regions, stability, context — measured per image.

A mask is read, edited with a brush, exported and compared with a person's annotation,
so besides keeping the decision it must be a few regions at the detail scale
(`napari_medcam.engine.scale`), the same regions when nothing that matters changed, and
not an artefact that breaks when context is added. Per explained image:

- **regions**: connected regions of the mask; **≥ min area**: share of the mask in
  regions of at least the scale's minimum area;
- **stability IoU**: the median IoU of the mask with the mask explained with another
  seed and with the mask of the image after a JPEG round trip (quality `JPEG_QUALITY`);
- **context keeps**: the mask dilated by one structure radius keeps the decision;
- **precision** and **area** against the reference *drawn at the same scale* (closed by
  the scale's radius), since a person's reference is a region too; Grad-CAM's top
  pixels at the mask's area are scored on the same reference.
"""

from __future__ import annotations

import io
import statistics
from typing import Any

import numpy as np
from PIL import Image

from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explain import explain
from napari_medcam.engine.regions import close, count_regions, dilate
from napari_medcam.engine.scale import resolve_detail

JPEG_QUALITY = 90
DILATE = 2  # pixels of tolerance around the reference, as the zoo table's precision


def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``image`` (uint8, grey or RGB) compressed as JPEG and decoded again."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue()))).copy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def scale_reference(reference: np.ndarray, clf: Any, config: MedCAMConfig) -> np.ndarray:
    """The reference as a person would draw it at the detail scale: closed by its radius."""
    detail = resolve_detail(config.detail, clf)
    return close(np.asarray(reference, bool), detail.radius)


def near_reference(drawn: np.ndarray) -> np.ndarray:
    """A reference drawn at the scale with `DILATE` pixels of tolerance (precision's)."""
    return dilate(drawn, DILATE)


def readability(
    image: np.ndarray,
    clf: Any,
    target: int,
    config: MedCAMConfig,
    exp: Any,
    device: str = "cpu",
) -> dict[str, Any]:
    """The readability figures of ``exp`` (an `Explanation` of ``image`` under ``config``).

    Explains ``image`` twice more (another seed; after a JPEG round trip).
    """
    mask = np.asarray(exp.mask, bool)
    detail = resolve_detail(config.detail, clf)
    n, _, big_share = count_regions(mask, detail.min_area)
    other = explain(image, clf, target, config.replace(seed=config.seed + 1), device=device)
    ious = [iou(mask, np.asarray(other.mask, bool))]
    if image.dtype == np.uint8 and image.ndim in (2, 3):
        jpeg = explain(jpeg_round_trip(image), clf, target, config, device=device)
        ious.append(iou(mask, np.asarray(jpeg.mask, bool)))
    return {
        "regions": n,
        "big_share": big_share if mask.any() else float("nan"),
        "stability": statistics.median(ious),
        "context_keeps": bool(exp.context_keeps),
        "trim_keeps": bool(exp.trim_keeps),
    }
