"""`Classifier`: a frozen torch model plus everything needed to feed it an image.

The engine never guesses how a model wants its input: size, normalisation,
channel count, class names and the layers used for activation matching all live
here, once, so every entry point (API, CLI, widget) prepares images identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.classes import class_index
from napari_medcam.classifiers.discovery import (
    Call,
    discover_layers,
    layer_views,
    probe_calls,
    unheard,
)
from napari_medcam.classifiers.outputs import (
    AdaptedModel,
    BackboneHead,
    OutputRule,
    describe_rule,
    logits_of,
)
from napari_medcam.classifiers.prepare import prepare_input
from napari_medcam.classifiers.tokens import LayerView, Reshape

MIN_SIDE = 8


class Classifier:
    """Wrap any `torch.nn.Module` classifier for explanation.

    The module is put in eval mode and its parameters are frozen. Images are
    prepared by :meth:`preprocess`: integer images are scaled to [0, 1] by their
    dtype's range (float images are taken as already in [0, 1]), RGBA drops alpha,
    grey is repeated to the model's channel count, then ``(x - mean) / std``.

    Activation-matching layers (``layers``) are names of sub-modules (as in
    ``module.named_modules()``). When none are given, the default is chosen by
    :meth:`default_layers` from one probe pass through the whole module tree: the
    stage outputs of a CNN, or a transformer's blocks evenly in depth, at most four
    from shallow to deep, the deepest always included (it is Grad-CAM's layer).
    Transformer outputs are read as maps (B, C, h, w): (B, N, C) tokens of the patch
    grid with their prefix (class, distillation, register tokens) dropped, channels-last
    (B, H, W, C) maps permuted, the first tensor of a tuple, dict or output object
    (`napari_medcam.classifiers.tokens`); ``reshape`` (a function of a layer's output
    tensor returning (B, C, h, w), e.g. ``TokenMap(prefix, grid)``) replaces that
    for every layer. The model may return logits or any object holding them
    (`napari_medcam.classifiers.outputs.logits_of`; ``output`` names the key or
    attribute, or is a function of the output). What was reshaped and where the logits
    came from is in :attr:`adaptation` (and each explanation's provenance). ``head``: the
    module is a backbone whose pooled features (or ``pooler_output``) the head classifies
    (`napari_medcam.classifiers.outputs.BackboneHead`).

    A TorchScript model cannot be hooked: it is then explained by its outputs only
    (KL + CE + robustness), and :attr:`hookable` is False.
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
        *,
        reshape: Reshape | None = None,
        output: OutputRule = None,
        head: nn.Module | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"Classifier needs a torch.nn.Module, got {type(module).__name__}")
        if head is not None:  # a backbone and the head trained on its pooled features
            module = BackboneHead(module, head)
        if isinstance(module, AdaptedModel):  # another Classifier's module (e.g. a copy)
            output = module.output if output is None else output
            reshape = reshape or module.reshape
            module = module.model
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
        self.output, self.reshape = output, reshape
        n_out, logits_from = self._probe_outputs()
        if class_names is None:
            class_names = [f"class {i}" for i in range(n_out)]
        if len(class_names) != n_out:
            raise ValueError(
                f"{len(class_names)} class names given but the model outputs {n_out} classes"
            )
        self.class_names = [str(c) for c in class_names]
        calls = self._probe() if self.hookable else []
        if layers is None:
            layers = discover_layers(calls, partial(self._unheard, calls))
        elif layers and not self.hookable:
            raise ValueError("a TorchScript model cannot be hooked: pass layers=[]")
        known = dict(self.module.named_modules())
        missing = [name for name in layers if name not in known]
        if missing:
            raise ValueError(f"layers not found in the model: {missing}; known: {list(known)[:20]}")
        self.layers = list(layers)
        views = layer_views(calls, self.layers, reshape, self.input_size)
        #: how the model was adapted: where its logits come from, which layers were reshaped
        self.adaptation: dict[str, Any] = {}
        if logits_from:
            self.adaptation["model_output"] = logits_from
        if views:
            self.adaptation["activation_reshapes"] = {n: v.text for n, v in views.items()}
        if logits_from or views:
            self.module = AdaptedModel(module, output, views, reshape)

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

    def _probe_outputs(self) -> tuple[int, str]:
        """The number of classes, and where the logits were found ("" for a plain tensor)."""
        x = torch.zeros((1, self.channels, *self.input_size))
        try:
            with torch.no_grad():
                out = self.module(x)
        except Exception as err:  # the model's own message is the useful part
            raise ValueError(
                f"the model does not accept a {tuple(x.shape)} input "
                f"(input_size/mean/std mismatch?): {err}"
            ) from err
        logits = logits_of(out, self.output)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError("the model must return logits of shape (batch, classes)")
        if logits.shape[1] < 2:
            raise ValueError("the model must output at least two classes")
        plain = isinstance(out, torch.Tensor) and self.output is None
        return int(logits.shape[1]), "" if plain else describe_rule(out, self.output)

    def default_layers(self) -> list[str]:
        """Feature-map layers found by one probe pass, up to four, deepest included.

        Stages of a CNN, blocks of a transformer evenly in depth: the rules are in
        `napari_medcam.classifiers.discovery.discover_layers`. Pass ``layers=[...]`` to
        `Classifier` to choose them yourself.
        """
        calls = self._probe()
        return discover_layers(calls, partial(self._unheard, calls))

    def _unheard(self, calls: list[Call], names: list[str]) -> set[str]:
        """Of ``names``, the layers no logit depends on (`discovery.unheard`), on a random
        input: zeros can leave a gradient at zero by accident."""
        x = torch.randn(
            (1, self.channels, *self.input_size), generator=torch.Generator().manual_seed(0)
        )
        return unheard(self.module, x, calls, names, partial(logits_of, rule=self.output))

    def layer_view(self, name: str) -> LayerView | None:
        """How layer ``name``'s output becomes a (B, C, *spatial) map; None: it is one."""
        if name in self.layers or not self.hookable:
            return getattr(self.module, "feature_maps", {}).get(name)
        return layer_views(self._probe(), [name], self.reshape, self.input_size).get(name)

    def _probe(self) -> list[Call]:
        """The module calls of one forward pass on zeros (`discovery.probe_calls`)."""
        x = torch.zeros((1, self.channels, *self.input_size))
        return probe_calls(self.module, x, self.input_size)

    # ----------------------------------------------------------------- preparation
    def class_index(self, target: int | str | None) -> int | None:
        """Resolve a class index or name; None stays None (= predicted class)."""
        return class_index(target, self.class_names)

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
