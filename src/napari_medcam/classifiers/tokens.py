"""Transformer outputs as feature maps: token sequences and channels-last maps → (B, C, h, w).

Grad-CAM, activation matching and the comparison methods work on (B, C, *spatial) maps.
Transformers make other shapes: a ViT block outputs (B, N, C) tokens — a prefix (class,
distillation, register tokens) then an h×w patch grid — a Swin stage a channels-last
(B, H, W, C) map, and Hugging Face layers tuples or output objects. This module finds the
tensor in such an output, tells which form it is from one probe pass and turns it into a
map, checking the token count (N = prefix + h·w) instead of guessing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: the most prefix tokens (class + distillation + registers) a token sequence may carry
MAX_PREFIX = 16
#: spatial strides (input side / map side) more unequal than this are not one map's
MAX_STRIDE_RATIO = 1.5

Reshape = Callable[[torch.Tensor], torch.Tensor]


def primary_tensor(out: Any) -> torch.Tensor | None:
    """The tensor a layer's output stands for: itself, or the first tensor in a tuple, list,
    dict or dataclass (``transformers``' ``BaseModelOutput`` puts ``last_hidden_state`` first;
    its layers return ``(hidden_states, attentions…)``). None when there is no tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        items: Sequence[Any] = list(out.values())
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [getattr(out, f.name) for f in dataclasses.fields(out)]
    elif isinstance(out, (tuple, list)):
        items = out
    else:
        return None
    for item in items:
        found = primary_tensor(item)
        if found is not None:
            return found
    return None


def _side(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape)


@dataclass(frozen=True)
class TokenMap:
    """(B, prefix + h·w, C) tokens → (B, C, h, w): the prefix dropped, the patches laid out
    row by row (the order of a flattened patch-embedding convolution, timm's and HF's)."""

    prefix: int
    grid: tuple[int, int]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        if tokens.ndim != 3 or tokens.shape[1] != self.prefix + h * w:
            raise ValueError(
                f"cannot read a {tuple(tokens.shape)} output as tokens of a {h}×{w} patch grid "
                f"with {self.prefix} prefix tokens: that needs (B, {self.prefix + h * w}, C) "
                f"(N = prefix + h·w); pass the right prefix/grid or reshape="
            )
        patches = tokens[:, self.prefix :]
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)

    def describe(self) -> str:
        h, w = self.grid
        return f"tokens (B, {self.prefix + h * w}, C): {self.prefix} prefix dropped, {h}×{w} grid"


@dataclass(frozen=True)
class ChannelsLast:
    """(B, H, W, C) → (B, C, H, W) (Swin stages, some ConvNeXt blocks)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"a channels-last map is (B, H, W, C), got {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2)

    def describe(self) -> str:
        return "channels-last (B, H, W, C) permuted to (B, C, H, W)"


@dataclass(frozen=True)
class LayerView:
    """How one layer's output becomes a map: its tensor taken out, then ``reshape``d.

    Called on the layer's raw output (what a forward hook sees). ``text`` says what was done
    for the explanation's provenance."""

    reshape: Reshape | None
    text: str

    def __call__(self, out: Any) -> torch.Tensor:
        tensor = primary_tensor(out)
        if tensor is None:
            raise ValueError(f"the layer output a {type(out).__name__} holding no tensor")
        return self.reshape(tensor) if self.reshape is not None else tensor


def _consistent(map_side: Sequence[int], input_size: Sequence[int]) -> bool:
    """The map could cover the input: each side no larger, strides alike (a square input's
    map is square, up to padding)."""
    if len(map_side) != len(input_size) or min(map_side) < 1:
        return False
    if any(m > s for m, s in zip(map_side, input_size)):
        return False
    strides = [s / m for m, s in zip(map_side, input_size)]
    return max(strides) / min(strides) <= MAX_STRIDE_RATIO


def is_channels_last(shape: Sequence[int], input_size: Sequence[int]) -> bool:
    """A (1, a, b, c) output read as (B, H, W, C) only when (B, C, H, W) cannot fit the input
    and (B, H, W, C) can: a CNN's map is never re-read."""
    if len(shape) != 4 or len(input_size) != 2:
        return False
    first, last = shape[2:], shape[1:3]
    return not _consistent(first, input_size) and max(last) > 1 and _consistent(last, input_size)


def patch_grid(
    shapes: Sequence[tuple[int, ...]], input_size: Sequence[int]
) -> tuple[int, int] | None:
    """The patch grid of a ViT-like model from its outputs in call order, or None.

    It is the last (1, C, h, w) map (the patch-embedding convolution) before the first
    (1, N, C) token sequence with N = prefix + h·w, 0 ≤ prefix ≤ `MAX_PREFIX`.
    """
    if len(input_size) != 2:
        return None
    grid: tuple[int, int] | None = None
    for shape in shapes:
        if len(shape) == 4 and _consistent(shape[2:], input_size):
            grid = (int(shape[2]), int(shape[3]))
        elif (
            len(shape) == 3 and grid is not None and 0 <= shape[1] - grid[0] * grid[1] <= MAX_PREFIX
        ):
            return grid
    return None


def infer_view(
    shape: tuple[int, ...], grid: tuple[int, int] | None, input_size: Sequence[int]
) -> LayerView | None:
    """The reshape a (1, …) output of ``shape`` needs to be a map; None when it needs none
    or is not one (a pooled vector, logits, tokens that do not fit ``grid``)."""
    if len(shape) == 3 and grid is not None:
        prefix = shape[1] - grid[0] * grid[1]
        if 0 <= prefix <= MAX_PREFIX:
            view = TokenMap(prefix, grid)
            return LayerView(view, view.describe())
    if is_channels_last(shape, input_size):
        view2 = ChannelsLast()
        return LayerView(view2, view2.describe())
    return None


def token_misfit(shape: tuple[int, ...], grid: tuple[int, int] | None) -> str:
    """Why a (1, N, C) output is not a token map of ``grid``: the clear refusal's words."""
    if grid is None:
        return (
            f"it outputs {shape}, which looks like tokens, but no patch grid was found (no "
            "patch-embedding map before the first token sequence); pass reshape="
        )
    h, w = grid
    return (
        f"it outputs {shape}: as tokens of the {h}×{w} patch grid that would be "
        f"{shape[1] - h * w} prefix tokens (N = prefix + h·w needs 0–{MAX_PREFIX}); "
        "pass reshape= (e.g. TokenMap(prefix, grid)) if the grid or prefix differs"
    )


def describe_output(shape: tuple[int, ...], view: LayerView | None) -> str:
    """One line for the provenance: the output's shape and what was done to it."""
    return f"{_side(shape)} output; " + (view.text if view is not None else "used as it is")
