"""Tile grids over images larger than the classifier's input, tissue detection, stitching."""

from __future__ import annotations

import itertools
import math
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# A pixel is tissue when its HSV saturation (max − min of RGB, over max) exceeds this:
# stained tissue (H&E, IHC) is clearly coloured, glass and white background are not.
TISSUE_SATURATION = 0.07
# A tile is explained only when at least this fraction of its pixels is tissue.
MIN_TISSUE_FRACTION = 0.05
# Stitched masks larger than this (pixels) are kept in chunked zarr arrays on disk
# instead of memory: 4,096² float32 is 64 MiB per array.
IN_MEMORY_PIXELS = 4096 * 4096
#: overlap (pixels) of neighbouring tiles: `explain`'s default ``tile_overlap``
TILE_OVERLAP = 32


def overlap_for(input_size: Sequence[int]) -> int:
    """`TILE_OVERLAP`, at most a quarter of the input's smallest side: 32 pixels of a
    32³ input would move each window by one voxel."""
    return min(TILE_OVERLAP, min(int(n) for n in input_size) // 4)


STITCH_CHUNK = 512  # a tile add touches ≤ 4 chunks: 42 ms per 224² tile (1,024²: 80 ms)


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
    """Blend tiles' soft masks in their overlaps, then threshold once.

    ``mode`` "mean" averages overlapping tiles with `blend_weights`; "max" keeps each
    pixel's highest value, so that thresholding gives the union of the tiles' own masks
    — evidence made of regions stays whole where tiles overlap (an average of two
    tiles' maps, each thresholding to its own regions, cuts them into fragments).

    Images up to `IN_MEMORY_PIXELS` are stitched in NumPy arrays. Larger ones (a
    whole slide at full resolution) are stitched in chunked, compressed zarr arrays
    in temporary folders, so memory stays bounded by a few chunks whatever the size;
    the results are then zarr arrays too, each deleting its folder when collected.
    """

    def __init__(self, shape: Sequence[int], chunk: int = STITCH_CHUNK, mode: str = "mean") -> None:
        if mode not in ("mean", "max"):
            raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
        self.mode = mode
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(min(chunk, n) for n in self.shape)
        self.on_disk = math.prod(self.shape) > IN_MEMORY_PIXELS
        if self.on_disk:
            self._scratch = tempfile.TemporaryDirectory(prefix="napari-medcam-stitch-")
            root = Path(self._scratch.name)
            self.soft = self._zarr(root / "soft.zarr", np.float32)
            self.weight = self._zarr(root / "weight.zarr", np.float32)
        else:
            self.soft = np.zeros(self.shape, np.float32)
            self.weight = np.zeros(self.shape, np.float32)

    def _zarr(self, path: Path, dtype: type) -> Any:
        import zarr

        return zarr.create_array(
            store=str(path), shape=self.shape, chunks=self.chunks, dtype=dtype, fill_value=0
        )

    def add(self, where: tuple[slice, ...], soft: np.ndarray) -> None:
        if self.mode == "max":  # weight 1 where covered: the normalisation is a no-op
            self.soft[where] = np.maximum(self.soft[where], soft)
            self.weight[where] = 1.0
            return
        w = blend_weights(soft.shape)
        self.soft[where] = self.soft[where] + soft * w
        self.weight[where] = self.weight[where] + w

    def result(self, threshold: float) -> tuple[Any, Any, float]:
        """(binary mask, soft mask, mask's area fraction); places no tile covered are 0."""
        if not self.on_disk:
            soft = _normalised(self.soft, self.weight)
            mask = soft > threshold
            return mask, soft, float(mask.mean())
        mask = owned_zarr(self.shape, self.chunks, bool, "napari-medcam-mask-")
        soft = owned_zarr(self.shape, self.chunks, np.float32, "napari-medcam-mask-")
        kept = 0
        for block in _chunk_blocks(self.shape, self.chunks):
            s = _normalised(self.soft[block], self.weight[block])
            soft[block] = s
            mask[block] = s > threshold
            kept += int((s > threshold).sum())
        self.close()
        return mask, soft, kept / math.prod(self.shape)

    def close(self) -> None:
        """Remove the on-disk sums (safe to call again; the results are kept)."""
        if self.on_disk:
            self._scratch.cleanup()


def owned_zarr(shape: Sequence[int], chunks: Sequence[int], dtype: Any, prefix: str) -> Any:
    """A zarr array of zeros in its own temporary folder (named ``prefix``…), the folder
    removed when the array is collected: a result too large for memory that cleans up
    after itself (stitched masks, amortised labels, coarse levels of a napari pyramid)."""
    import zarr

    folder = tempfile.TemporaryDirectory(prefix=prefix)
    array = zarr.create_array(
        store=str(Path(folder.name) / "data.zarr"),
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype=dtype,
        fill_value=0,
    )
    weakref.finalize(array, folder.cleanup)
    return array


def _normalised(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)


def _chunk_blocks(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The chunk-aligned blocks of an array, one at a time."""
    starts = [range(0, n, c) for n, c in zip(shape, chunks)]
    for corner in itertools.product(*starts):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(corner, chunks, shape))
