"""Tile grids over images larger than the classifier's input, tissue detection, stitching."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A pixel is tissue when its HSV saturation (max − min of RGB, over max) exceeds this:
# stained tissue (H&E, IHC) is clearly coloured, glass and white background are not.
TISSUE_SATURATION = 0.07
# A tile is explained only when at least this fraction of its pixels is tissue.
MIN_TISSUE_FRACTION = 0.05


def axis_starts(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile``; the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


def tile_grid(
    shape: Sequence[int], tile: Sequence[int], overlap: int = 0
) -> list[tuple[slice, ...]]:
    """Slices of a regular grid of ``tile``-sized windows covering ``shape`` (any dims)."""
    per_axis = [
        [slice(s, s + min(t, n)) for s in axis_starts(n, t, overlap)] for n, t in zip(shape, tile)
    ]
    grids = np.meshgrid(*[np.arange(len(a)) for a in per_axis], indexing="ij")
    return [
        tuple(per_axis[d][int(i)] for d, i in enumerate(idx))
        for idx in zip(*(g.ravel() for g in grids))
    ]


def needs_tiling(shape: Sequence[int], tile: Sequence[int]) -> bool:
    """Larger than the input in any axis → tiled; smaller images are resized instead."""
    return any(n > t for n, t in zip(shape, tile))


def tissue_fraction(unit_rgb: np.ndarray) -> float:
    """Fraction of tissue pixels (saturation > `TISSUE_SATURATION`) in an H×W×3 [0, 1] tile.

    Images that are not RGB have no colour to judge by: they count as all tissue.
    """
    if unit_rgb.ndim != 3 or unit_rgb.shape[-1] != 3:
        return 1.0
    hi = unit_rgb.max(-1)
    sat = (hi - unit_rgb.min(-1)) / np.maximum(hi, 1e-6)
    return float((sat > TISSUE_SATURATION).mean())


def blend_weights(shape: Sequence[int]) -> np.ndarray:
    """A tent window: 1 in the middle of a tile, falling towards its edges.

    Overlapping tiles are averaged with these weights, so that no tile's border —
    where it saw the least context — dominates the stitched mask.
    """
    w = np.ones(shape, np.float32)
    for axis, n in enumerate(shape):
        ramp = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1).astype(np.float32)
        ramp = np.minimum(ramp / max(n / 4, 1), 1.0)
        view = [1] * len(shape)
        view[axis] = n
        w = w * ramp.reshape(view)
    return w


class Stitcher:
    """Blend tiles' soft masks in their overlaps, then threshold once."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.soft = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape, np.float32)

    def add(self, where: tuple[slice, ...], soft: np.ndarray) -> None:
        w = blend_weights(soft.shape)
        self.soft[where] += soft * w
        self.weight[where] += w

    def result(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(binary mask, soft mask); places no explained tile covered are 0."""
        soft = np.divide(
            self.soft, self.weight, out=np.zeros_like(self.soft), where=self.weight > 0
        )
        return soft > threshold, soft
