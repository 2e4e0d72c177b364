"""Reading images and writing masks: atomic, never overwriting unless asked.

A mask TIFF is uint8 (0/1), zlib-compressed, with the explanation summary as
JSON in the ImageDescription (tifffile's shaped-description convention, under the
key "napari_medcam") and the pixel size (if known) as resolution tags.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    An error or interrupt leaves no half-written file, and an existing file is
    kept unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: pass overwrite=True (--overwrite) to replace it")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        write(tmp)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_mask_tiff(
    path: str | Path,
    mask: np.ndarray,
    metadata: dict[str, Any] | None = None,
    pixel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 0/1 (or label) mask as a compressed uint8 TIFF with JSON metadata."""
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
    meta = {"napari_medcam": _jsonable(metadata or {})}
    kwargs: dict[str, Any] = {}
    if pixel_size is not None and len(pixel_size) >= 2 and all(p > 0 for p in pixel_size[-2:]):
        kwargs["resolution"] = (1.0 / pixel_size[-1], 1.0 / pixel_size[-2])

    def _write(tmp: Path) -> None:
        tifffile.imwrite(tmp, data, compression="zlib", metadata=meta, **kwargs)

    return write_atomic(path, _write, overwrite)


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


def mask_to_geojson(mask: np.ndarray, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """Polygons of a 2-D mask's regions, in image pixel coordinates (x right, y down).

    A FeatureCollection of QuPath-importable annotations, one Polygon per connected
    region (holes as inner rings).
    """
    from skimage import measure

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"GeoJSON export needs a 2-D mask, got shape {mask.shape}")
    labels = measure.label(mask > 0, connectivity=1)
    features = []
    for region in measure.regionprops(labels):
        sub = np.pad(region.image, 1)
        oy, ox = region.bbox[0] - 1, region.bbox[1] - 1
        contours = measure.find_contours(sub.astype(float), 0.5)
        rings = []
        for c in contours:
            ring = [[float(x + ox), float(y + oy)] for y, x in c]
            if len(ring) >= 4:
                if ring[0] != ring[-1]:
                    ring.append(ring[0])
                rings.append(ring)
        if not rings:
            continue
        rings.sort(key=lambda r: -abs(_ring_area(r)))
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": (properties or {}).get("class_name", "Med-CAM")},
                    "area_pixels": int(region.area),
                    **_jsonable(properties or {}),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _ring_area(ring: list[list[float]]) -> float:
    xs = np.array([p[0] for p in ring])
    ys = np.array([p[1] for p in ring])
    return 0.5 * float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))


def write_geojson(
    path: str | Path,
    mask: np.ndarray,
    properties: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `mask_to_geojson` atomically."""
    doc = mask_to_geojson(mask, properties)
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc)), overwrite)
