"""Reading images and writing masks: atomic, never overwriting unless asked.

A mask TIFF is uint8 (0/1), zlib-compressed, with the explanation summary as
JSON in the ImageDescription (tifffile's shaped-description convention, under the
key "napari_medcam") and the pixel size (if known) as resolution tags.

Files appear atomically (`napari_medcam.io.atomic`); a mask TIFF and its GeoJSON
are written together by `write_mask`: both, or neither. The GeoJSON itself
(polygons, QuPath features) is made by `napari_medcam.io.geojson`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io.atomic import write_atomic, write_files
from napari_medcam.io.geojson import mask_to_geojson
from napari_medcam.io.jsonable import jsonable
from napari_medcam.io.slides import pyramid_writer

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def mask_tiff_writer(
    mask: np.ndarray,
    metadata: dict[str, Any] | None = None,
    pixel_size: tuple[float, ...] | None = None,
) -> Callable[[Path], None]:
    """Check a 0/1 (or label) mask now; return ``write(path)`` for a compressed uint8 TIFF."""
    import tifffile

    mask = np.asarray(mask)
    if mask.size == 0:
        raise ValueError("the mask is empty")
    if mask.dtype == bool or mask.max(initial=0) <= 255:
        data = mask.astype(np.uint8)
    else:
        raise ValueError("mask values above 255 do not fit a uint8 TIFF")
    # tifffile's own JSON ("shaped") description: {"shape": ..., "napari_medcam": {...}},
    # which tifffile, napari and QuPath read without surprise
    meta = {"napari_medcam": jsonable(metadata or {})}
    kwargs: dict[str, Any] = {}
    if pixel_size is not None and len(pixel_size) >= 2 and all(p > 0 for p in pixel_size[-2:]):
        kwargs["resolution"] = (1.0 / pixel_size[-1], 1.0 / pixel_size[-2])

    def _write(tmp: Path) -> None:
        tifffile.imwrite(tmp, data, compression="zlib", metadata=meta, **kwargs)

    return _write


def write_mask_tiff(
    path: str | Path,
    mask: np.ndarray,
    metadata: dict[str, Any] | None = None,
    pixel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 0/1 (or label) mask as a compressed uint8 TIFF with JSON metadata."""
    return write_atomic(path, mask_tiff_writer(mask, metadata, pixel_size), overwrite)


def read_mask_tiff(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a mask TIFF written by `write_mask_tiff`: (array, metadata dict)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        shaped = tif.shaped_metadata or ({},)
    return data, dict(shaped[0].get("napari_medcam", {}))


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF/PNG/JPEG into an array; ValueError with the reason if it cannot."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"unsupported image type {suffix!r}: use one of {IMAGE_SUFFIXES}")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def geojson_writer(
    mask: Any,
    properties: dict[str, Any] | None = None,
    downsample: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    classes: dict[int, str] | None = None,
    mpp: float | None = None,
) -> Callable[[Path], None]:
    """Compute `mask_to_geojson` now; return ``write(path)`` for its JSON text."""
    geo = mask_to_geojson(mask, properties, downsample, origin, classes, mpp)
    text = json.dumps(jsonable(geo))
    return lambda tmp: tmp.write_text(text)


def write_geojson(
    path: str | Path,
    mask: Any,
    properties: dict[str, Any] | None = None,
    overwrite: bool = False,
    downsample: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
) -> Path:
    """Write `mask_to_geojson` atomically."""
    return write_atomic(path, geojson_writer(mask, properties, downsample, origin), overwrite)


#: masks larger than this (a side) are written as tiled pyramids, read tile by tile
PYRAMID_ABOVE = 4096


def write_mask(
    path: str | Path,
    mask: Any,
    metadata: dict[str, Any] | None = None,
    *,
    pixel_size: tuple[float, ...] | None = None,
    geojson: dict[str, Any] | None = None,
    plane: Any = None,
    downsample: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    overwrite: bool = False,
    classes: dict[int, str] | None = None,
    mpp: float | None = None,
) -> list[Path]:
    """Write a mask TIFF and, when ``geojson`` (its Feature properties) is given, its
    GeoJSON beside it (same name, ``.geojson``): both files, or neither.

    A 2-D mask larger than `PYRAMID_ABOVE` a side (it may be lazy: zarr, dask) is
    written as a tiled pyramid, read tile by tile; smaller ones as a flat TIFF. The
    GeoJSON outlines ``plane`` (the 2-D mask the explanation made, default ``mask``)
    in level-0 slide coordinates (``downsample``, ``origin``: see
    `mask_to_geojson`; ``classes``: a label mask's {value: class name}, one
    classification per polygon; ``mpp``: µm per level-0 pixel, for QuPath's area
    measurement). Everything is checked and computed before the first
    file is created.
    """
    path = Path(path)
    if len(mask.shape) == 2 and max(mask.shape) > PYRAMID_ABOVE:
        writers: dict[Path, Callable[[Path], None]] = {path: pyramid_writer(mask, metadata)}
    else:
        writers = {path: mask_tiff_writer(np.asarray(mask), metadata, pixel_size)}
    if geojson is not None:
        writers[path.with_suffix(".geojson")] = geojson_writer(
            mask if plane is None else plane, geojson, downsample, origin, classes, mpp
        )
    return write_files(writers, overwrite)
