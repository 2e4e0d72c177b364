"""A slide array → its bag of tile embeddings: once, in batches, tissue tiles only, cached.

The slide is cut into the classifier's tiles on a strict grid — tile (r, c) starts at
(r·stride, c·stride), as MIL pipelines cut slides — so a tile's place on the grid says
exactly where it lies (the result's tile-grid layers and GeoJSON rely on it); the strip
of fewer than a tile's pixels at the bottom and right is not in any tile (``margin`` in
the facts). Glass tiles are skipped by the tile engine's tissue rule
(`napari_medcam.tiling.tissue_fraction`), and the tissue tiles are encoded in batches.
With a ``cache`` path, the bag is read back from its zarr store when the key matches
(`napari_medcam.engine.mil.cache`), so a second explanation of the same slide never runs
the encoder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.mil.cache import Bag, read_cache, write_cache
from napari_medcam.tiling import MIN_TISSUE_FRACTION, tissue_fraction

SIGNATURE_WINDOWS = 8  # windows whose pixels sign the slide in the cache key


def check_slide(image: Any, clf: SlideClassifier) -> tuple[int, int]:
    """The (H, W) of a slide array (NumPy, dask, zarr) the classifier can read; else ValueError."""
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(
            f"the slide must be an array (NumPy, dask or zarr), got {type(image).__name__}: "
            "open a slide file with napari_medcam.open_slide and pass the level's array"
        )
    dtype = np.dtype(dtype)
    if dtype.kind == "b" or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(f"unsupported slide dtype {dtype}: use uint8, uint16 or float in [0, 1]")
    if len(shape) != 3 or shape[-1] not in (clf.channels, 4):
        raise ValueError(
            f"the slide must be H×W×{clf.channels} (channels last), got an array of shape "
            f"{tuple(shape)}"
        )
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < clf.tile_size:
        raise ValueError(
            f"the slide ({h}×{w}) is smaller than one {clf.tile_size}-pixel tile of this classifier"
        )
    return h, w


def tile_layout(
    hw: tuple[int, int], tile: int, overlap: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Every window (M, 4) ``(y0, x0, y1, x1)``, its (row, column) (M, 2), the grid's shape.

    A strict grid: window (r, c) starts at (r·stride, c·stride); no window is moved to
    end flush with the slide (the tile engine's `axis_starts` does that, MIL does not).
    """
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)):
        raise ValueError(f"tile_overlap must be an integer number of pixels, got {overlap!r}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"tile_overlap must be from 0 to {tile // 2} pixels, got {overlap}")
    stride = tile - overlap
    ys, xs = (list(range(0, n - tile + 1, stride)) for n in hw)
    rows, cols = np.meshgrid(np.arange(len(ys)), np.arange(len(xs)), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], 1).astype(np.int64)
    y0, x0 = np.asarray(ys)[grid[:, 0]], np.asarray(xs)[grid[:, 1]]
    windows = np.stack([y0, x0, y0 + tile, x0 + tile], 1).astype(np.int64)
    return windows, grid, (len(ys), len(xs))


def _read(image: Any, window: np.ndarray) -> np.ndarray:
    y0, x0, y1, x1 = (int(v) for v in window)
    return np.asarray(image[y0:y1, x0:x1])


def cache_key(
    image: Any, clf: SlideClassifier, overlap: int, skip_glass: bool, windows: np.ndarray
) -> tuple[str, dict[str, Any]]:
    """(key, its parts): the encoder's fingerprint, the tiling, the tissue rule and a
    signature of the slide (shape, dtype, the pixels of a few evenly spaced windows)."""
    sig = hashlib.sha256(f"{tuple(image.shape)}|{np.dtype(image.dtype)}".encode())
    picks = np.linspace(0, len(windows) - 1, min(SIGNATURE_WINDOWS, len(windows))).round()
    for i in picks.astype(int):
        sig.update(np.ascontiguousarray(_read(image, windows[i])).tobytes())
    parts = {
        "encoder": clf.encoder_fingerprint(),
        "tile_size": clf.tile_size,
        "level": clf.level,
        "mpp": clf.mpp,
        "overlap": int(overlap),
        "stride": clf.tile_size - int(overlap),
        "grid": "strict",  # windows at multiples of the stride (not flush with the edge)
        "slide_shape": [int(n) for n in image.shape],
        "tissue_rule": [MIN_TISSUE_FRACTION, bool(skip_glass)],
        "slide_signature": sig.hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


def iter_embed_slide(
    image: Any,
    clf: SlideClassifier,
    *,
    cache: str | Path | None = None,
    overlap: int = 0,
    batch: int = 64,
    device: torch.device | str = "cpu",
    skip_glass: bool = True,
) -> Generator[ProgressEvent, None, tuple[Bag, dict[str, Any]]]:
    """The slide's bag (from ``cache`` when its key matches), and facts for provenance.

    Yields an "embed" `ProgressEvent` per batch of windows. The facts: the cache key and
    its parts, whether the cache was used, the number of windows and tiles encoded.
    """
    hw = check_slide(image, clf)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"tile_batch must be a positive integer, got {batch!r}")
    windows, grid, grid_shape = tile_layout(hw, clf.tile_size, overlap)
    key, parts = cache_key(image, clf, overlap, skip_glass, windows)
    facts: dict[str, Any] = {
        "cache_key": key,
        "cache_parts": parts,
        "windows": len(windows),
        # pixels at the bottom and right that no tile covers (less than a tile)
        "margin": [int(hw[0] - windows[:, 2].max()), int(hw[1] - windows[:, 3].max())],
    }
    if cache is not None and (bag := read_cache(cache, key)) is not None:
        facts.update(cache_used=True, encoded=0)
        return bag, facts
    keep: list[int] = []
    embeddings: list[np.ndarray] = []
    clf.to(device)
    for start in range(0, len(windows), batch):
        idx = range(start, min(start + batch, len(windows)))
        tiles = np.stack([_read(image, windows[i]) for i in idx])
        if tiles.shape[-1] == 4 and clf.channels == 3:
            tiles = tiles[..., :3]
        if skip_glass:
            unit = tiles / float(np.iinfo(tiles.dtype).max) if tiles.dtype.kind in "ui" else tiles
            tissue = [tissue_fraction(t) >= MIN_TISSUE_FRACTION for t in unit]
        else:
            tissue = [True] * len(tiles)
        chosen = [j for j, t in enumerate(tissue) if t]
        if chosen:
            embeddings.append(clf.embed(tiles[chosen], device))
            keep += [idx[j] for j in chosen]
        yield ProgressEvent(idx[-1] + 1, len(windows), {}, float("nan"), 0.0, stage="embed")
    if not keep:
        raise ValueError("no tissue tile on this slide (every tile is glass): nothing to explain")
    order = np.asarray(keep, np.int64)
    bag = Bag(
        np.concatenate(embeddings).astype(np.float32), windows[order], grid[order], grid_shape
    )
    facts.update(cache_used=False, encoded=len(keep))
    if cache is not None:
        write_cache(cache, key, bag, parts)
    return bag, facts
