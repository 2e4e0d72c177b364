"""Forward hooks on named sub-modules: the one way the engine reads a classifier's layers."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def record_activations(module: nn.Module, names: Sequence[str]):
    """Collect the outputs of the named sub-modules during forward passes."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, o, n=n: store.__setitem__(n, o))
        for n in names
    ]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
