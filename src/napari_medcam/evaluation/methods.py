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

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.comparison import attention_rollout, gradcam, occlusion, rise
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.metrics import threshold_to_area

LABELS = {
    "medcam-fast": "Med-CAM (fast)",
    "medcam-paper": "Med-CAM (paper)",
    "gradcam": "Grad-CAM",
    "rise": "RISE",
    "occlusion": "occlusion",
    "attention-rollout": "attention rollout",
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


def _medcam(config: MedCAMConfig):
    def run(image: np.ndarray, classifier: Classifier, target: Any, opt: MethodOptions):
        from napari_medcam.engine import explain

        exp = explain(image, classifier, target, config(opt), device=opt.device)
        info = {
            "valid": bool(exp.valid),
            "status": exp.status,
            "steps": int(exp.steps),
            "absence": exp.absence,
            "own_area": float(exp.area_fraction),
        }
        return np.asarray(exp.soft_mask, np.float32), np.asarray(exp.mask, bool), info

    return run


def _map_only(method):
    """A comparison method with a heatmap and no mask of its own."""

    def run(image: np.ndarray, classifier: Classifier, target: Any, opt: MethodOptions):
        return method(image, classifier, target, opt), None, {}

    return run


def _rollout(image: np.ndarray, classifier: Classifier, target: Any, opt: MethodOptions):
    """Attention rollout, for models whose attention probabilities can be captured."""
    heat = attention_rollout(image, classifier)
    if heat is None:
        raise ValueError(
            "attention rollout needs a transformer whose attention probabilities over the "
            "whole token grid a hook can read (timm's attn.attn_drop); this model has none"
        )
    return heat, None, {}


# every method: (image, classifier, target, options) -> (map, own mask or None, info)
_RUNNERS = {
    "medcam-fast": _medcam(lambda opt: opt.fast),
    "medcam-paper": _medcam(lambda opt: opt.paper),
    "gradcam": _map_only(lambda image, clf, target, opt: gradcam(image, clf, target)),
    "rise": _map_only(
        lambda image, clf, target, opt: rise(
            image,
            clf,
            target,
            n_masks=opt.rise_masks,
            cells=opt.rise_cells,
            baseline=opt.baseline,
        )
    ),
    "occlusion": _map_only(
        lambda image, clf, target, opt: occlusion(
            image,
            clf,
            target,
            window=opt.occlusion_window,
            stride=opt.occlusion_stride,
            baseline=opt.baseline,
        )
    ),
    "attention-rollout": _rollout,
}
METHODS = tuple(_RUNNERS)


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
    if method not in _RUNNERS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    start = time.perf_counter()
    heat, own, info = _RUNNERS[method](image, classifier, target, options or MethodOptions())
    seconds = time.perf_counter() - start
    if own is not None and area is None:
        mask = own
    else:
        mask = threshold_to_area(heat, DEFAULT_AREA if area is None else area)
    return MethodResult(method, heat, mask, float(mask.mean()), seconds, info)
