"""Grad-CAM maps on classifier inputs: the baseline method, and Med-CAM's starting prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.tokens import primary_tensor


def gradcam_maps(
    x: torch.Tensor,
    classifier: Classifier,
    targets: Sequence[int] | None = None,
    layer: str | None = None,
    normalise: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Grad-CAM (Selvaraju et al. 2017) of a batch of normalised inputs.

    Returns (maps (N, 1, *feature-map size) scaled to [0, 1] per input — raw when
    not ``normalise``, so that tiles of one image stay comparable — and the targets
    used; None → each input's predicted class). ``layer`` defaults to the deepest
    activation-matching layer; its output is read as the classifier reads it
    (`Classifier.layer_view`: a transformer's tokens as their patch grid).
    """
    layer = layer or (classifier.layers[-1] if classifier.layers else None)
    if layer is None:
        raise ValueError("Grad-CAM needs a hookable feature layer; this model has none")
    modules = dict(classifier.module.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} not found in the model")
    view = classifier.layer_view(layer)  # transformer tokens → (N, C, h, w)
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        tensor = primary_tensor(out)
        if tensor is None:
            raise ValueError(f"layer {layer!r} outputs no tensor")
        tensor.retain_grad()
        store["a"] = tensor

    handle = modules[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = classifier.module(x.detach().clone().requires_grad_(True))
            if targets is None:
                targets = logits.argmax(1).tolist()
            picked = logits[torch.arange(len(x)), torch.as_tensor(list(targets))]
            picked.sum().backward()
    finally:
        handle.remove()
    act, grad = store["a"], store["a"].grad
    if view is not None and view.reshape is not None:  # the gradient re-indexed alike
        act, grad = view.reshape(act), view.reshape(grad)
    dims = tuple(range(2, act.ndim))
    weights = grad.mean(dim=dims, keepdim=True)
    cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()
    if not normalise:
        return cam, [int(t) for t in targets]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, *[1] * (cam.ndim - 1))
    return cam / peak, [int(t) for t in targets]
