"""A slide's tile embeddings on disk (zarr), reused while the encoder and tiling stay.

Embedding a slide is the slow part of explaining a slide-level decision (thousands of
encoder passes); the explanation itself runs on the embeddings. So they are kept in a
zarr store at a path the caller chooses (beside the outputs), keyed by everything they
depend on: the encoder's fingerprint (weights and tile preparation), the tiling (tile
size, level or µm/px, overlap, stride, the slide's shape), the tissue rule and a
signature of the slide's pixels. A store whose key differs is ignored and replaced.

A store appears whole or not at all: it is written into a hidden temporary folder beside
the target and renamed into place (an older store is first renamed aside, then
removed), so a run killed mid-write never leaves a half-valid cache at the path.
(The engine works on arrays and does not import ``napari_medcam.io``, whose atomic
helpers write single files; a zarr store is a folder, renamed the same way.)
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bump when the layout below changes: older stores are then recomputed


@dataclass
class Bag:
    """A slide as its classifier sees it: one embedding per tissue tile.

    ``embeddings`` (N, D) float32; ``windows`` (N, 4) int64 ``(y0, x0, y1, x1)`` in the
    array's pixels; ``grid`` (N, 2) int64 (row, column) on the tile grid, whose shape is
    ``grid_shape``.
    """

    embeddings: np.ndarray
    windows: np.ndarray
    grid: np.ndarray
    grid_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.embeddings)


def read_cache(path: str | Path, key: str) -> Bag | None:
    """The bag stored at ``path`` under ``key``; None when absent, stale or unreadable."""
    import zarr

    path = Path(path)
    if not path.is_dir():
        return None
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        if attrs.get("key") != key or attrs.get("format") != FORMAT:
            return None
        bag = Bag(
            np.asarray(group["embeddings"][:], np.float32),
            np.asarray(group["windows"][:], np.int64),
            np.asarray(group["grid"][:], np.int64),
            (int(attrs["grid_shape"][0]), int(attrs["grid_shape"][1])),
        )
    except Exception:  # a foreign or damaged folder is not a cache: recompute
        return None
    n = len(bag.embeddings)
    if bag.embeddings.ndim != 2 or bag.windows.shape != (n, 4) or bag.grid.shape != (n, 2):
        return None
    return bag


def write_cache(path: str | Path, key: str, bag: Bag, parts: dict[str, Any]) -> Path:
    """Store ``bag`` at ``path`` under ``key`` (``parts``: what the key was made of)."""
    import zarr

    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the cache's folder {path.parent} does not exist")
    if path.exists() and not path.is_dir():
        raise ValueError(f"the cache path {path} is a file, not a zarr store (a folder)")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        group = zarr.open_group(str(tmp), mode="w")
        d = max(1, bag.embeddings.shape[1])
        rows = max(1, min(len(bag), (1 << 22) // (4 * d)))  # ~4 MiB chunks
        for name, data in (
            ("embeddings", bag.embeddings.astype(np.float32)),
            ("windows", bag.windows.astype(np.int64)),
            ("grid", bag.grid.astype(np.int64)),
        ):
            arr = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=(rows, data.shape[1])
            )
            if len(data):
                arr[:] = data
        group.attrs.update(
            {"key": key, "format": FORMAT, "grid_shape": list(bag.grid_shape), "parts": parts}
        )
        _replace_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace_folder(new: Path, target: Path) -> None:
    """Move folder ``new`` to ``target``; an older ``target`` is moved aside first, then
    removed, so the path holds either the old whole store, nothing, or the new one."""
    if target.exists():
        old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
        os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, target)
