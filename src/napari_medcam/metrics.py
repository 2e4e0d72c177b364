"""Scores of a mask: how faithful to the classifier, and how close to a reference."""

from __future__ import annotations

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.optimise import choose_baseline, evaluate_mask
from napari_medcam.engine.prepare import prepare_input, resize


def mask_confidences(
    image: np.ndarray,
    mask: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
) -> dict[str, float]:
    """Does ``mask`` (e.g. after a user's edit) still carry the decision?

    Returns the target's probability on the original image (``original``), on the
    binary-masked image with the baseline elsewhere (``masked``), averaged over
    random backgrounds (``robust``), and with the mask's content removed
    (``deletion``), plus whether the masked image keeps the decision (``held``).
    Baseline and backgrounds are chosen exactly as `explain` chooses them.
    """
    config = config or MedCAMConfig.fast()
    mask = np.asarray(mask)
    if mask.shape != np.asarray(image).shape[: mask.ndim] or mask.ndim != classifier.spatial_dims:
        raise ValueError(
            f"mask shape {mask.shape} does not match the image's spatial shape "
            f"{np.asarray(image).shape[: classifier.spatial_dims]}"
        )
    device = classifier.device
    x = prepare_input(image, classifier).to(device)
    with torch.no_grad():
        probs = torch.softmax(classifier.module(x), 1)[0]
    t = classifier.class_index(target)
    t = int(probs.argmax()) if t is None else t
    m = torch.from_numpy((mask > 0).astype(np.float32))[None, None].to(device)
    hard = (resize(m, classifier.input_size) > 0.5).float()
    choice = choose_baseline(x, classifier, t, config)
    ev = evaluate_mask(x, hard, classifier, t, choice, config)
    return {
        "target": t,
        "original": float(probs[t]),
        "masked": ev["masked"],
        "robust": ev["robust"],
        "deletion": ev["deletion"],
        "held": ev["masked_pred"] == t,
        "area_fraction": float((mask > 0).mean()),
    }


def overlap_scores(mask: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision (mask inside reference) and recall of two binary masks."""
    a = np.asarray(mask) > 0
    b = np.asarray(reference) > 0
    if a.shape != b.shape:
        raise ValueError(f"mask {a.shape} and reference {b.shape} differ in shape")
    inter = float(np.logical_and(a, b).sum())
    sa, sb = float(a.sum()), float(b.sum())
    union = sa + sb - inter
    return {
        "dice": 2 * inter / (sa + sb) if sa + sb else 1.0,
        "iou": inter / union if union else 1.0,
        "precision": inter / sa if sa else 0.0,
        "recall": inter / sb if sb else 0.0,
    }


def threshold_to_area(heatmap: np.ndarray, area_fraction: float) -> np.ndarray:
    """Binary mask of the top ``area_fraction`` of a heatmap's values (equal-area comparison)."""
    h = np.asarray(heatmap, dtype=np.float64)
    k = int(round(np.clip(area_fraction, 0.0, 1.0) * h.size))
    out = np.zeros(h.shape, bool)
    if k:
        order = np.argsort(h, axis=None, kind="stable")[::-1][:k]
        out.flat[order] = True
    return out
