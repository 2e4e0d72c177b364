"""Med-CAM and the methods people would pick instead, behind one interface.

`run_method(name, image, classifier, ...)` returns a `MethodResult`: a continuous
map in [0, 1] (Med-CAM's soft mask; the others' heatmaps), a binary mask at a stated
area, and the seconds it took. Med-CAM's mask is its own binary mask unless an area
is asked for; the other methods have no mask of their own, so theirs is the top
``area`` of their map (`metrics.threshold_to_area`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_medcam.baselines import gradcam, occlusion, rise
from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.metrics import threshold_to_area

METHODS = ("medcam-fast", "medcam-paper", "gradcam", "rise", "occlusion")
LABELS = {
    "medcam-fast": "Med-CAM (fast)",
    "medcam-paper": "Med-CAM (paper)",
    "gradcam": "Grad-CAM",
    "rise": "RISE",
    "occlusion": "occlusion",
}
DEFAULT_AREA = 0.1


@dataclass
class MethodOptions:
    """Settings of every method; ``baseline`` is what RISE and occlusion hide pixels with.

    ``baseline`` None means the dataset-mean colour (their usual choice); the
    evaluation passes the neutral baseline `explain` chose for the image, so that all
    perturbation methods hide pixels the same way.
    """

    fast: MedCAMConfig = field(default_factory=MedCAMConfig.fast)
    paper: MedCAMConfig = field(default_factory=MedCAMConfig.paper)
    rise_masks: int = 1000
    rise_cells: int = 7
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    baseline: str | torch.Tensor | None = None
    device: str = "cpu"


@dataclass
class MethodResult:
    method: str
    map: np.ndarray  # float32 in [0, 1], the image's spatial shape
    mask: np.ndarray  # bool, the image's spatial shape
    area: float  # the mask's area fraction
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS.get(self.method, self.method)


def run_method(
    method: str,
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    *,
    area: float | None = None,
    options: MethodOptions | None = None,
) -> MethodResult:
    """Explain ``image`` with ``method`` (one of `METHODS`); see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    opt = options or MethodOptions()
    info: dict[str, Any] = {}
    start = time.perf_counter()
    if method.startswith("medcam"):
        from napari_medcam.engine import explain

        config = opt.fast if method == "medcam-fast" else opt.paper
        exp = explain(image, classifier, target, config, device=opt.device)
        heat = np.asarray(exp.soft_mask, np.float32)
        own = np.asarray(exp.mask, bool)
        info = {
            "valid": bool(exp.valid),
            "status": exp.status,
            "steps": int(exp.steps),
            "baseline": exp.baseline,
            "own_area": float(exp.area_fraction),
        }
    elif method == "gradcam":
        heat = gradcam(image, classifier, target)
    elif method == "rise":
        heat = rise(
            image,
            classifier,
            target,
            n_masks=opt.rise_masks,
            cells=opt.rise_cells,
            baseline=opt.baseline,
        )
    else:
        heat = occlusion(
            image,
            classifier,
            target,
            window=opt.occlusion_window,
            stride=opt.occlusion_stride,
            baseline=opt.baseline,
        )
    seconds = time.perf_counter() - start
    if method.startswith("medcam") and area is None:
        mask = own
    else:
        mask = threshold_to_area(heat, DEFAULT_AREA if area is None else area)
    return MethodResult(method, heat, mask, float(mask.mean()), seconds, info)
