"""`Classifier`: a frozen torch model plus everything needed to feed it an image.

The engine never guesses how a model wants its input: size, normalisation,
channel count, class names and the layers used for activation matching all live
here, once, so every entry point (API, CLI, widget) prepares images identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.prepare import prepare_input

MIN_SIDE = 8


@dataclass(eq=False)
class _Call:
    """One module call of the layer-discovery probe, in the tree of calls."""

    name: str
    parent: _Call | None
    children: list[_Call] = field(default_factory=list)
    spatial: tuple[int, ...] | None = None  # set when the output is a feature map

    @property
    def is_block(self) -> bool:
        """It called sub-modules of its own (a block/stage, not a single layer)."""
        return bool(self.children)

    @cached_property
    def resolutions(self) -> set[tuple[int, ...]]:
        """Spatial shapes of every feature map made by this call and the calls inside it."""
        own = {self.spatial} if self.spatial is not None else set()
        return own.union(*(c.resolutions for c in self.children))


def _units(call: _Call, force: bool = False) -> list[_Call]:
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


def _last_of_runs(units: list[_Call], only_leaves: bool) -> list[_Call]:
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


class Classifier:
    """Wrap any `torch.nn.Module` classifier for explanation.

    The module is put in eval mode and its parameters are frozen. Images are
    prepared by :meth:`preprocess`: integer images are scaled to [0, 1] by their
    dtype's range (float images are taken as already in [0, 1]), RGBA drops alpha,
    grey is repeated to the model's channel count, then ``(x - mean) / std``.

    Activation-matching layers (``layers``) are names of sub-modules (as in
    ``module.named_modules()``). When none are given, the default is chosen by
    :meth:`default_layers` from one probe pass through the whole module tree: the
    block or stage outputs that are feature maps (4-D tensors for 2-D models, 5-D
    for 3-D ones), at most four from shallow to deep, the deepest always included
    (it is Grad-CAM's layer). A TorchScript model cannot be hooked: it is then
    explained by its outputs only (KL + CE + robustness), and :attr:`hookable` is
    False.
    """

    def __init__(
        self,
        module: nn.Module,
        input_size: Sequence[int] = (224, 224),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        class_names: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"Classifier needs a torch.nn.Module, got {type(module).__name__}")
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.input_size = tuple(int(s) for s in input_size)
        if len(self.input_size) not in (2, 3) or min(self.input_size) < MIN_SIDE:
            raise ValueError(f"input_size must be (H, W) or (D, H, W), got {input_size!r}")
        if len(mean) != len(std) or not len(mean):
            raise ValueError("mean and std must have one value per input channel")
        if any(s <= 0 for s in std):
            raise ValueError("std must be positive")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name or type(module).__name__
        #: what it was trained on (`napari_medcam.classifiers.card.ClassifierCard`), if known
        self.card: Any = None
        self.hookable = not isinstance(module, torch.jit.ScriptModule)
        n_out = self._probe_outputs()
        if class_names is None:
            class_names = [f"class {i}" for i in range(n_out)]
        if len(class_names) != n_out:
            raise ValueError(
                f"{len(class_names)} class names given but the model outputs {n_out} classes"
            )
        self.class_names = [str(c) for c in class_names]
        if layers is None:
            layers = self.default_layers() if self.hookable else []
        elif layers and not self.hookable:
            raise ValueError("a TorchScript model cannot be hooked: pass layers=[]")
        known = dict(self.module.named_modules())
        missing = [name for name in layers if name not in known]
        if missing:
            raise ValueError(f"layers not found in the model: {missing}; known: {list(known)[:20]}")
        self.layers = list(layers)

    # ------------------------------------------------------------------ shape facts
    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def spatial_dims(self) -> int:
        """2 for an image classifier, 3 for a volume classifier."""
        return len(self.input_size)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"Classifier({self.name!r}, input_size={self.input_size}, "
            f"classes={self.class_names}, layers={self.layers})"
        )

    def _probe_outputs(self) -> int:
        x = torch.zeros((1, self.channels, *self.input_size))
        try:
            with torch.no_grad():
                out = self.module(x)
        except Exception as err:  # the model's own message is the useful part
            raise ValueError(
                f"the model does not accept a {tuple(x.shape)} input "
                f"(input_size/mean/std mismatch?): {err}"
            ) from err
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
            raise ValueError("the model must return logits of shape (batch, classes)")
        if out.shape[1] < 2:
            raise ValueError("the model must output at least two classes")
        return int(out.shape[1])

    def default_layers(self) -> list[str]:
        """Feature-map layers found by one probe pass, up to four, deepest included.

        Every sub-module is hooked during a forward pass on zeros, which records
        which module ran inside which (containers that are never called, such as
        an ``nn.ModuleList`` iterated in ``forward``, are looked through: their
        items appear under the module that called them) and each output's shape.
        A *feature map* is a ``(1, C, *spatial)`` output with spatial extent > 1
        (4-D for 2-D models, 5-D for 3-D ones); pooled vectors and logits are not.

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
        Pass ``layers=[...]`` to `Classifier` to choose them yourself.
        """
        calls = self._probe_calls()
        if not calls:
            return []
        root = calls[0]
        units = _units(root, force=True)
        while len(units) == 1 and len(units[0].resolutions) == 2:
            units = _units(units[0], force=True)
        # a module called more than once counts at its last call
        last = {c.name: i for i, c in enumerate(units)}
        units = [c for i, c in enumerate(units) if last[c.name] == i]
        units = _last_of_runs(units, only_leaves=True)
        if len(units) > 4:
            units = _last_of_runs(units, only_leaves=False)
        if len(units) > 4:
            picks = np.linspace(0, len(units) - 1, 4).round().astype(int)
            units = [units[i] for i in sorted(set(picks))]
        return [c.name for c in units]

    def _probe_calls(self) -> list[_Call]:
        """The module calls of one forward pass on zeros, as a tree (pre-order list)."""
        modules = dict(self.module.named_modules())  # each module once
        names = {id(m): n for n, m in modules.items()}
        calls: list[_Call] = []
        stack: list[_Call] = []
        spatial_dims = self.spatial_dims

        def pre(module: nn.Module, _args: object) -> None:
            call = _Call(names[id(module)], stack[-1] if stack else None)
            if call.parent is not None:
                call.parent.children.append(call)
            calls.append(call)
            stack.append(call)

        def post(_module: nn.Module, _args: object, out: object) -> None:
            call = stack.pop()
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            if len(shape) == 2 + spatial_dims and shape[0] == 1 and max(shape[2:]) > 1:
                call.spatial = shape[2:]

        handles = []
        try:
            for module in modules.values():
                handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post, always_call=True))
            with torch.no_grad():
                self.module(torch.zeros((1, self.channels, *self.input_size)))
        finally:
            for h in handles:
                h.remove()
        return calls

    # ----------------------------------------------------------------- preparation
    def class_index(self, target: int | str | None) -> int | None:
        """Resolve a class index or name; None stays None (= predicted class)."""
        if target is None:
            return None
        if isinstance(target, str):
            if target in self.class_names:
                return self.class_names.index(target)
            if target.lstrip("-").isdigit():
                target = int(target)
            else:
                raise ValueError(
                    f"unknown class name {target!r}; the classes are {self.class_names}"
                )
        if isinstance(target, (bool, float)) or not isinstance(target, (int, np.integer)):
            raise ValueError(f"target must be a class index or name, got {target!r}")
        if not 0 <= int(target) < self.num_classes:
            raise ValueError(
                f"target {int(target)} is out of range: the classifier has "
                f"{self.num_classes} classes (0..{self.num_classes - 1})"
            )
        return int(target)

    def check_image(self, shape: Sequence[int], dtype: np.dtype) -> tuple[int, ...]:
        """Validate an image's shape and dtype without reading its pixels.

        Accepts grey (spatial only), or channels-last with 1, 3 or 4 channels
        (4 = RGBA, alpha dropped). Returns the spatial shape; raises ValueError
        with a clear reason otherwise. Works for lazy (dask, zarr) arrays too.
        """
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        sd = self.spatial_dims
        if not shape or 0 in shape:
            raise ValueError("the image is empty")
        if dtype.kind == "b" or not (
            np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
        ):
            raise ValueError(f"unsupported image dtype {dtype}: use uint8, uint16 or float")
        if len(shape) not in (sd, sd + 1):
            kind = "D×H×W[×C] volume" if sd == 3 else "H×W grey or H×W×C colour image"
            raise ValueError(
                f"expected a {kind} for this {sd}-D classifier, got an array of shape {shape}"
            )
        c = shape[-1] if len(shape) == sd + 1 else 1
        if c != self.channels and not (c == 4 and self.channels == 3) and c != 1:
            raise ValueError(
                f"the image has {c} channels; the classifier takes {self.channels} "
                "(grey and RGBA are converted, other channel counts are not)"
            )
        spatial = shape[:sd]
        if min(spatial) < MIN_SIDE:
            raise ValueError(
                f"the image is too small ({spatial}): at least {MIN_SIDE} pixels a side"
            )
        return spatial

    def value_range(self, image: np.ndarray) -> tuple[float, float]:
        """The range that maps to [0, 1]: the dtype's for integers, else [0, 1] or min..max.

        Float images already in [0, 1] are kept; others (e.g. 0..255 stored as float,
        or CT numbers) are rescaled by their own range. NaN/Inf are refused. A lazy
        (dask, zarr) float image is never read whole for this: it is taken as [0, 1].
        """
        dtype = np.dtype(image.dtype)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return float(info.min), float(info.max)
        if not isinstance(image, np.ndarray):
            return 0.0, 1.0
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("the image contains NaN or infinite values")
        return (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi)

    def to_unit_range(
        self, image: np.ndarray, value_range: tuple[float, float] | None = None
    ) -> np.ndarray:
        """Validate an image and return it as float32 channels-last in [0, 1].

        ``value_range`` (from `value_range` on the whole image) keeps tiles of one
        large image on the same scale; by default it is taken from ``image`` itself.
        """
        image = np.asarray(image)
        self.check_image(image.shape, image.dtype)
        if image.ndim == self.spatial_dims:
            image = image[..., None]
        c = image.shape[-1]
        if c == 4 and self.channels == 3:
            image = image[..., :3]
        elif c == 1 and self.channels > 1:
            image = np.repeat(image, self.channels, axis=-1)
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise ValueError("the image contains NaN or infinite values")
        lo, hi = value_range or self.value_range(image)
        out = (image.astype(np.float32) - lo) / (hi - lo) if hi > lo else np.zeros(image.shape)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def normalise(self, unit: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) in [0, 1] → the model's normalised space."""
        shape = (1, -1) + (1,) * self.spatial_dims
        mean = torch.tensor(self.mean, dtype=unit.dtype, device=unit.device).view(shape)
        std = torch.tensor(self.std, dtype=unit.dtype, device=unit.device).view(shape)
        return (unit - mean) / std

    def to(self, device: torch.device | str) -> Classifier:
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities for one image (resized to the input size)."""
        x = prepare_input(image, self)
        with torch.no_grad():
            return torch.softmax(self.module(x.to(self.device)), 1)[0].cpu().numpy()
