"""Tile grids over images larger than the classifier's input, and stitching."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


class Stitcher:
    """Blend soft masks in overlaps (mean) and union the binary masks."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.soft = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape, np.float32)
        self.hard = np.zeros(shape, bool)

    def add(self, where: tuple[slice, ...], soft: np.ndarray, hard: np.ndarray) -> None:
        self.soft[where] += soft
        self.weight[where] += 1
        self.hard[where] |= hard

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        soft = np.divide(
            self.soft, self.weight, out=np.zeros_like(self.soft), where=self.weight > 0
        )
        return self.hard, soft
