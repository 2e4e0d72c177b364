"""Large masks for napari without reading them whole: multiscale levels over the disk.

A whole slide explained at full resolution is stitched on disk (chunked zarr,
`napari_medcam.tiling.Stitcher`): 20,000² pixels would be 400 MB as a uint8
array, 1.6 GB as float32. napari draws a multiscale layer from the level that
suits the zoom, reading only the chunks in view, so the worker hands it a pyramid:
level 0 a lazy (dask) view of the stitched array, each coarser level every second
pixel of the one before, computed once in one pass over level 0, one chunk at a
time. Coarse levels too large for memory are zarr arrays in temporary folders,
removed when the arrays are collected (with the layer).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from napari_medcam.tiling import owned_zarr

#: levels are added until the larger side is at most this
MIN_SIDE = 512
#: a coarse level up to this many pixels is kept in memory, larger ones on disk
IN_MEMORY_LEVEL = 2048 * 2048
#: side of the level-0 blocks read at a time (a multiple of every level's step)
BLOCK = 1024


def is_lazy(data: Any) -> bool:
    """True for array-likes that are not NumPy arrays (zarr, dask, ...)."""
    return not isinstance(data, np.ndarray) and hasattr(data, "shape")


def as_dask(arr: Any) -> Any:
    """A dask view of a lazy array (zarr, dask), chunked as the array is."""
    import dask.array as da

    if isinstance(arr, da.Array):
        return arr
    chunks = getattr(arr, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == len(arr.shape)):
        chunks = tuple(min(int(n), 1024) for n in arr.shape)
    return da.from_array(arr, chunks=chunks)


def level_steps(shape: tuple[int, ...], min_side: int) -> list[int]:
    """Steps (1, 2, 4, ...) of a pyramid over ``shape``'s last two axes."""
    steps = [1]
    while max(math.ceil(n / steps[-1]) for n in shape[-2:]) > min_side:
        steps.append(steps[-1] * 2)
    return steps


def pyramid(arr: Any, dtype: Any = np.uint8, min_side: int | None = None) -> list[Any]:
    """[level 0, every 2nd pixel, every 4th, ...] of a large 2-D (or N-D: the last two
    axes are downsampled) array, for a multiscale napari layer; never read whole.

    Level 0 is a lazy dask view (``dtype``); the coarser levels are written in one
    pass over level 0, `BLOCK`² pixels at a time (nearest: a mask stays 0/1), until
    the larger side is at most ``min_side`` (default `MIN_SIDE`).
    """
    shape = tuple(int(n) for n in arr.shape)
    steps = level_steps(shape, MIN_SIDE if min_side is None else min_side)
    base = as_dask(arr).astype(dtype)
    if len(steps) == 1:
        return [base]
    block = max(BLOCK, steps[-1])
    levels = [_new_level(_level_shape(shape, f), dtype) for f in steps[1:]]
    for y, x in itertools.product(range(0, shape[-2], block), range(0, shape[-1], block)):
        window = (..., slice(y, y + block), slice(x, x + block))
        values = np.asarray(arr[window]).astype(dtype)
        for f, level in zip(steps[1:], levels):
            part = values[..., ::f, ::f]
            h, w = part.shape[-2:]
            level[(..., slice(y // f, y // f + h), slice(x // f, x // f + w))] = part
    return [base, *(lv if isinstance(lv, np.ndarray) else as_dask(lv) for lv in levels)]


def _level_shape(shape: tuple[int, ...], step: int) -> tuple[int, ...]:
    return (*shape[:-2], *(math.ceil(n / step) for n in shape[-2:]))


def _new_level(shape: tuple[int, ...], dtype: Any) -> Any:
    if math.prod(shape) <= IN_MEMORY_LEVEL:
        return np.zeros(shape, dtype)
    chunks = (*(1,) * (len(shape) - 2), *(min(512, n) for n in shape[-2:]))
    return owned_zarr(shape, chunks, dtype, "napari-medcam-level-")
