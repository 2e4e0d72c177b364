"""Forward hooks on named sub-modules: the one way the engine reads a classifier's layers."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def record_activations(module: nn.Module, names: Sequence[str]):
    """Collect the outputs of the named sub-modules during forward passes.

    A module that says how its layers' outputs become maps (``feature_maps``, name →
    callable: `napari_medcam.classifiers.outputs.AdaptedModel`, for transformer tokens
    and output objects) has them recorded as those maps.
    """
    store: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    maps = getattr(module, "feature_maps", None) or {}

    def keep(name: str, out: object) -> None:
        store[name] = maps[name](out) if name in maps else out

    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: keep(n, o)) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
