"""Grad-CAM maps on classifier inputs: the baseline method, and Med-CAM's starting prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from napari_medcam.classifiers.classifier import Classifier


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
    activation-matching layer.
    """
    layer = layer or (classifier.layers[-1] if classifier.layers else None)
    if layer is None:
        raise ValueError("Grad-CAM needs a hookable feature layer; this model has none")
    modules = dict(classifier.module.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} not found in the model")
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

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
    dims = tuple(range(2, act.ndim))
    weights = grad.mean(dim=dims, keepdim=True)
    cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()
    if not normalise:
        return cam, [int(t) for t in targets]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, *[1] * (cam.ndim - 1))
    return cam / peak, [int(t) for t in targets]
