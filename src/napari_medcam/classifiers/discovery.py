"""Which layers to match: one probe pass through the module tree, then stages or blocks.

`probe_calls` records every module call of a forward pass on zeros with its output's
shape and, when it is a map only after a reshape (transformer tokens, channels-last), how
(`napari_medcam.classifiers.tokens`). `discover_layers` picks from them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.tokens import (
    LayerView,
    Reshape,
    infer_view,
    patch_grid,
    primary_tensor,
    token_misfit,
)

MAX_LAYERS = 4


@dataclass(eq=False)
class Call:
    """One module call of the layer-discovery probe, in the tree of calls."""

    name: str
    parent: Call | None
    children: list[Call] = field(default_factory=list)
    shape: tuple[int, ...] = ()  # of the output's tensor (`primary_tensor`); () when none
    wrapped: bool = False  # the output is a tuple/dict/object holding that tensor
    spatial: tuple[int, ...] | None = None  # set when the output is (or reshapes to) a map
    view: LayerView | None = None  # set when the output must be taken out or reshaped
    done: int = -1  # when the output was made: a block's comes after its layers'

    @property
    def is_block(self) -> bool:
        """It called sub-modules of its own (a block/stage, not a single layer)."""
        return bool(self.children)

    @cached_property
    def resolutions(self) -> set[tuple[int, ...]]:
        """Spatial shapes of every feature map made by this call and the calls inside it."""
        own = {self.spatial} if self.spatial is not None else set()
        return own.union(*(c.resolutions for c in self.children))


def probe_calls(module: nn.Module, x: torch.Tensor, input_size: tuple[int, ...]) -> list[Call]:
    """The module calls of one forward pass of ``x`` (zeros), as a tree (pre-order list).

    Each call's ``spatial`` is set when its output is a feature map: ``(1, C, *spatial)``
    with spatial extent > 1, or — for 2-D models — tokens of the patch grid
    (`tokens.patch_grid`) or a channels-last map, with the ``view`` that reshapes it.
    """
    modules = dict(module.named_modules())  # each module once
    names = {id(m): n for n, m in modules.items()}
    calls: list[Call] = []
    stack: list[Call] = []
    made = itertools.count()

    def pre(mod: nn.Module, _args: object) -> None:
        call = Call(names[id(mod)], stack[-1] if stack else None)
        if call.parent is not None:
            call.parent.children.append(call)
        calls.append(call)
        stack.append(call)

    def post(_mod: nn.Module, _args: object, out: object) -> None:
        call = stack.pop()
        tensor = primary_tensor(out)
        call.shape = tuple(tensor.shape) if tensor is not None else ()
        call.wrapped = tensor is not None and not isinstance(out, torch.Tensor)
        call.done = next(made)

    handles = []
    try:
        for mod in modules.values():
            handles.append(mod.register_forward_pre_hook(pre))
            handles.append(mod.register_forward_hook(post, always_call=True))
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    _annotate(calls, _grid(calls, input_size), input_size)
    return calls


def _grid(calls: list[Call], input_size: tuple[int, ...]) -> tuple[int, int] | None:
    """The patch grid (`tokens.patch_grid`) from the outputs in the order they were made."""
    return patch_grid([c.shape for c in sorted(calls, key=lambda c: c.done)], input_size)


def _annotate(calls: list[Call], grid: tuple[int, int] | None, input_size: tuple[int, ...]) -> None:
    """Set each call's ``spatial`` and ``view`` from its output's shape and the patch grid."""
    for call in calls:
        shape = call.shape
        view = infer_view(shape, grid, input_size) if shape and shape[0] == 1 else None
        if view is not None:
            call.spatial = view.reshape(torch.empty(shape, device="meta")).shape[2:]
        elif len(shape) == 2 + len(input_size) and shape[0] == 1 and max(shape[2:]) > 1:
            call.spatial = shape[2:]
        if view is None and call.wrapped and call.spatial is not None:
            view = LayerView(None, "the first tensor of its output")
        call.view = view


def _units(call: Call, force: bool = False) -> list[Call]:
    """The coarsest calls inside ``call`` that make a map over at most two resolutions.

    Loose single layers beside two or more blocks, or beside a container that had
    to be looked into, are stem or head layers (a stem conv, a classifier's
    pooling): they are left out.
    """
    if not force and call.spatial is not None and len(call.resolutions) <= 2:
        return [call]
    found = [(child, _units(child)) for child in call.children]
    looked_into = any(units and units != [child] for child, units in found)
    blocks = sum(units == [child] and child.is_block for child, units in found)
    structured = looked_into or blocks >= 2
    return [
        unit
        for child, units in found
        for unit in units
        if not (structured and units == [child] and not child.is_block)
    ]


def _last_of_runs(units: list[Call], only_leaves: bool) -> list[Call]:
    """Keep the last of each run of consecutive units at one resolution.

    With ``only_leaves`` only runs of single layers (no sub-modules) are merged.
    """
    kept = []
    for unit, after in zip(units, [*units[1:], None]):
        same_run = (
            after is not None
            and after.spatial == unit.spatial
            and not (only_leaves and (unit.is_block or after.is_block))
        )
        if not same_run:
            kept.append(unit)
    return kept


def _evenly(units: list[Call]) -> list[Call]:
    """At most `MAX_LAYERS` of ``units``, evenly spread, the deepest always included."""
    if len(units) <= MAX_LAYERS:
        return units
    picks = np.linspace(0, len(units) - 1, MAX_LAYERS).round().astype(int)
    return [units[i] for i in sorted(set(picks))]


def _transformer_blocks(calls: list[Call]) -> list[Call] | None:
    """A transformer's blocks: the shallowest run of numbered siblings (``blocks.0…``,
    ``encoder.layer.0…``, Swin's ``layers.0…``) whose outputs are all maps; None when the
    model has no reshaped outputs (a CNN) or no such run."""
    if not any(c.view is not None and c.view.reshape is not None for c in calls):
        return None
    runs: dict[str, dict[int, Call]] = {}
    for call in calls:
        head, _, index = call.name.rpartition(".")
        if head and index.isdigit():
            runs.setdefault(head, {})[int(index)] = call  # a module counts at its last call
    runs = {
        head: run
        for head, run in runs.items()
        if len(run) >= 2 and all(c.spatial is not None for c in run.values())
    }
    if not runs:
        return None
    head = min(runs, key=lambda h: (h.count("."), -len(runs[h])))
    return [runs[head][i] for i in sorted(runs[head])]


def _entry(block: Call) -> Call | None:
    """The first map a block makes of its input (a ViT block's ``norm1``), if any."""
    return next((c for c in block.children if c.spatial is not None), None)


def _transformer_layers(
    blocks: list[Call], silent: Callable[[list[str]], set[str]] | None
) -> list[Call]:
    """Up to four blocks evenly in depth, after the trailing blocks no logit hears.

    With a class-token head the last block's patch tokens reach nothing (`unheard`),
    but its input does — through its attention to the class token. So the deepest layer
    (Grad-CAM's) is the first map the first unheard block makes of its input (timm's
    ``blocks[-1].norm1``, the layer pytorch-grad-cam documents for ViTs) when it is
    heard, else the last heard block."""
    entries = {b.name: _entry(b) for b in blocks}
    names = [b.name for b in blocks] + [e.name for e in entries.values() if e is not None]
    mute = silent(names) if silent is not None else set()
    kept = list(blocks)
    while len(kept) > 1 and kept[-1].name in mute:
        kept.pop()
    if len(kept) < len(blocks):
        entry = entries[blocks[len(kept)].name]
        if entry is not None and entry.name not in mute:
            return _evenly([*kept, entry])
    return _evenly(kept)


def unheard(
    module: nn.Module,
    x: torch.Tensor,
    calls: list[Call],
    names: list[str],
    logits: Callable[[Any], torch.Tensor],
) -> set[str]:
    """The layers among ``names`` whose map (their output through its view) no logit
    depends on: exactly zero gradient. A ViT whose head reads only the class token
    leaves its last block's patch tokens unheard — Grad-CAM there is empty, matching
    them is void — so the deepest block that reaches the decision is the one before."""
    last = {c.name: c for c in calls}
    modules = dict(module.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: object, out: object) -> None:
            tensor = primary_tensor(out)
            if tensor is not None and tensor.requires_grad:
                seen[name] = tensor

        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names if n in modules]
    try:
        with torch.enable_grad():
            out = logits(module(x.requires_grad_(True)))
            found = [n for n in names if n in seen]
            grads = torch.autograd.grad(out.sum(), [seen[n] for n in found], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    silent = set(names) - set(found)
    for name, grad in zip(found, grads):
        view = last[name].view if name in last else None
        if grad is not None and view is not None and view.reshape is not None:
            grad = view.reshape(grad)
        if grad is None or not bool(grad.abs().sum() > 0):
            silent.add(name)
    return silent


def discover_layers(
    calls: list[Call], silent: Callable[[list[str]], set[str]] | None = None
) -> list[str]:
    """Feature-map layers from a probe (`probe_calls`), up to four, deepest included.

    **Transformers** (some output is tokens or a channels-last map): the blocks of the
    shallowest run of numbered siblings whose outputs are all maps — a ViT's ``blocks.0…``,
    Hugging Face's ``encoder.layer.0…``, a Swin's stages ``layers.0…`` — four picked evenly
    in depth, the last block's output (before the final norm) always included: Grad-CAM's
    layer, as ViT users choose it by hand. The patch embedding (the stem) is left out.
    With ``silent`` (`unheard` on the model), trailing blocks whose maps no logit
    depends on are left out first: with a class-token head the last block's patch
    tokens reach nothing; its input normalisation (``norm1``) does, and is Grad-CAM's
    layer (`_transformer_layers`).

    **CNNs** (every other model):

    1. **Units.** From the root down, the first module whose output is a feature
       map and whose own calls produce maps at no more than two resolutions is
       taken whole — a block (conv-ReLU-pool, a residual block or stage that
       down-samples once), named as the block, not its last ReLU. Modules
       without a map output (the root, a backbone that pools, a head) and
       modules spanning three or more resolutions (VGG's ``features``, timm's
       ``stages``) are looked into. A lone unit spanning two resolutions is
       looked into too, so that there is more than one depth to match.
    2. **Blocks before loose layers.** Single layers (no sub-modules) that sit
       beside two or more blocks, or beside a container that was looked into,
       are stem or head layers — ResNet's ``conv1``/``bn1``/``relu``/``maxpool``,
       VGG's ``avgpool`` before its classifier — and are left out. Elsewhere
       (VGG's ``features``, a model of bare convolutions) a run of single layers
       at one resolution counts once, the last (conv → ReLU is one feature map).
    3. **At most four.** With more than four, the last unit of each run at one
       resolution is kept (the stage outputs); if still more than four, four are
       picked evenly spread, the deepest always included (Grad-CAM's layer).

    So a ResNet gets ``layer1``–``layer4``; VGG the ReLU before each pool inside
    ``features`` and its final pool; blocks in a ``ModuleList`` ``blocks.0``…;
    timm-like ``stages`` ``stages.0``…; a model pooling with ``F.max_pool2d`` its
    conv blocks. A module called several times counts at its last call (the
    hook sees that one). A model without feature maps gets none (it is then
    explained by its outputs only).
    """
    if not calls:
        return []
    blocks = _transformer_blocks(calls)
    if blocks is not None:
        return [c.name for c in _transformer_layers(blocks, silent)]
    units = _units(calls[0], force=True)
    while len(units) == 1 and len(units[0].resolutions) == 2:
        units = _units(units[0], force=True)
    # a module called more than once counts at its last call
    last = {c.name: i for i, c in enumerate(units)}
    units = [c for i, c in enumerate(units) if last[c.name] == i]
    units = _last_of_runs(units, only_leaves=True)
    if len(units) > MAX_LAYERS:
        units = _last_of_runs(units, only_leaves=False)
    return [c.name for c in _evenly(units)]


def layer_views(
    calls: list[Call],
    layers: list[str],
    reshape: Reshape | None,
    input_size: tuple[int, ...],
) -> dict[str, LayerView]:
    """The views that turn the named layers' outputs into maps, checked on the probe's shapes.

    ``reshape`` (the user's) is used for every layer and must give (1, C, *spatial) from
    each layer's output; without it a layer's own view is used (`probe_calls`). A layer
    whose output looks like tokens but does not fit the patch grid is refused: a wrong
    prefix or grid is never guessed.
    """
    last = {c.name: c for c in calls}
    grid = _grid(calls, input_size)  # for the refusal's words
    views: dict[str, LayerView] = {}
    for name in layers:
        call = last.get(name)
        if call is None:  # never called in the probe: nothing to check
            if reshape is not None:
                views[name] = LayerView(reshape, f"reshape={_called(reshape)}")
            continue
        if reshape is not None:
            view = LayerView(reshape, f"reshape={_called(reshape)}")
            views[name] = _checked(name, call, view, 2 + len(input_size))
        elif call.view is not None:
            views[name] = call.view
        elif len(call.shape) == 3 and len(input_size) == 2:
            raise ValueError(
                f"layer {name!r} is not a feature map: {token_misfit(call.shape, grid)}"
            )
    return views


def _called(fn: Reshape) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


def _checked(name: str, call: Call, view: LayerView, ndim: int) -> LayerView:
    """``view``, after it made a map of the probe's output of layer ``name``."""
    if not call.shape:
        raise ValueError(f"layer {name!r} outputs no tensor to reshape")
    try:
        made = view(torch.zeros(call.shape))
    except Exception as err:  # the reshape's own message says what does not fit
        raise ValueError(f"reshape= fails on layer {name!r} ({call.shape}): {err}") from err
    if not isinstance(made, torch.Tensor) or made.ndim != ndim or made.shape[0] != call.shape[0]:
        shape = tuple(made.shape) if isinstance(made, torch.Tensor) else type(made).__name__
        raise ValueError(
            f"reshape= made {shape} of layer {name!r}'s {call.shape} output: "
            "it must give (B, C, h, w)"
        )
    return view
