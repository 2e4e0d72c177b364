"""Any model output → logits, and the model as the engine sees it (`AdaptedModel`).

The engine calls ``classifier.module(x)`` for logits and hooks its sub-modules by name.
A Hugging Face model returns an ``ImageClassifierOutput``, others a dict or a tuple; a
transformer's layers output tokens. `AdaptedModel` wraps such a model so that the engine
needs to know none of it: calling it returns the logits, hooking a layer yields the map
(`napari_medcam.classifiers.tokens`), and its sub-modules, parameters and buffers are the
model's own — same names, same ``state_dict`` keys — so layer names and weight files work
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from napari_medcam.classifiers.tokens import primary_tensor

#: how logits are found: a key or attribute name, or a function of the model's output
OutputRule = str | Callable[[Any], torch.Tensor] | None


def logits_of(out: Any, rule: OutputRule = None) -> torch.Tensor:
    """The logits in a model's output.

    ``rule`` None: a tensor is the logits; a dict's ``"logits"`` item, an object's
    ``.logits`` attribute (``transformers``' ``ImageClassifierOutput``); a tuple or list's
    first tensor (Hugging Face with ``return_dict=False``). A string names the key or
    attribute; a function gets the output and returns the logits.
    """
    if callable(rule):
        return rule(out)
    if isinstance(rule, str):
        found = out.get(rule) if isinstance(out, Mapping) else getattr(out, rule, None)
        if not isinstance(found, torch.Tensor):
            raise ValueError(f"the model's {type(out).__name__} output has no tensor {rule!r}")
        return found
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise ValueError(
        f"the model returned a {type(out).__name__} with no logits found (a tensor, a "
        "'logits' key or attribute, or a tuple's first tensor): pass output= (a key or "
        "attribute name, or a function of the output returning the logits)"
    )


def describe_rule(out: Any, rule: OutputRule) -> str:
    """Where the logits came from, for the provenance."""
    kind = type(out).__name__
    if callable(rule):
        return f"output= {getattr(rule, '__name__', type(rule).__name__)} of the {kind}"
    if isinstance(rule, str):
        return f"{rule!r} of the {kind}"
    if isinstance(out, Mapping) and "logits" in out:
        return f"'logits' of the {kind}"
    if hasattr(out, "logits"):
        return f".logits of the {kind}"
    return f"first tensor of the {kind}"


class AdaptedModel(nn.Module):
    """A model whose output is not plain logits, or whose layers are not plain maps, as the
    engine needs it: ``forward`` returns the logits; ``feature_maps`` (layer name → callable
    on the layer's raw output) is what `napari_medcam.engine.hooks` applies when it records.

    The model's sub-modules, parameters and buffers are shared, not nested under a name:
    ``named_modules`` and ``state_dict`` are the model's own, and ``.to()`` moves both.
    """

    def __init__(
        self,
        model: nn.Module,
        output: OutputRule = None,
        feature_maps: dict[str, Callable[[Any], torch.Tensor]] | None = None,
        reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.__dict__["model"] = model  # not a sub-module: its children are ours
        for slot in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"):
            self.__dict__[slot] = model.__dict__[slot]
        self.output = output
        self.feature_maps = dict(feature_maps or {})
        self.reshape = reshape  # the user's override, kept for a `Classifier` made again
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x), self.output)

    def train(self, mode: bool = True) -> AdaptedModel:
        self.model.training = mode
        return super().train(mode)


def pooled_features(out: Any) -> torch.Tensor:
    """What a backbone hands its head: a tensor as it is, else the object's
    ``pooler_output`` (Hugging Face models), else its first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = out.get("pooler_output") if isinstance(out, Mapping) else None
    pooled = pooled if pooled is not None else getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    found = primary_tensor(out)
    if found is None:
        raise ValueError(f"the backbone returned a {type(out).__name__} holding no tensor")
    return found


class BackboneHead(nn.Module):
    """A frozen backbone (a foundation model returning pooled features, or an output object
    with ``pooler_output``) and the head trained on it, as one classifier: the pattern of
    pathology foundation models. Layers are named ``backbone.…`` and ``head.…``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> Any:
        return self.head(pooled_features(self.backbone(x)))
