"""Other attribution methods on the same `Classifier`, for side-by-side comparison."""

from __future__ import annotations

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.prepare import resize, unit_tensor


def gradcam(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) heatmap in [0, 1], the image's spatial shape.

    ``layer`` defaults to the deepest activation-matching layer. Images larger
    than the classifier's input are resized to it (Grad-CAM is one pass).
    """
    layer = layer or (classifier.layers[-1] if classifier.layers else None)
    if layer is None:
        raise ValueError("Grad-CAM needs a hookable feature layer; this model has none")
    modules = dict(classifier.module.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} not found in the model")
    target_idx = classifier.class_index(target)
    unit = unit_tensor(image, classifier)
    spatial = tuple(unit.shape[2:])
    device = classifier.device
    x = classifier.normalise(resize(unit, classifier.input_size)).to(device)
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = modules[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = classifier.module(x.requires_grad_(True))
            if target_idx is None:
                target_idx = int(logits.argmax())
            logits[0, target_idx].backward()
    finally:
        handle.remove()
    act, grad = store["a"], store["a"].grad
    dims = tuple(range(2, act.ndim))
    weights = grad.mean(dim=dims, keepdim=True)
    cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()
    cam = resize(cam, spatial)[0, 0].cpu().numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).astype(np.float32)
