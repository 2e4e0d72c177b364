"""Reading images and writing masks: atomic, never overwriting unless asked.

A mask TIFF is uint8 (0/1), zlib-compressed, with the explanation summary as
JSON in the ImageDescription (tifffile's shaped-description convention, under the
key "napari_medcam") and the pixel size (if known) as resolution tags.

Files appear atomically (written to a temporary file beside the target, then
renamed) with the permissions a plain ``open()`` would give them (0666 less the
umask, e.g. 0644). Several files that belong together (a mask TIFF and its
GeoJSON) are written by `write_files`: all of them, or none. The GeoJSON itself
(polygons, QuPath features) is made by `napari_medcam.io_geojson`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io_geojson import mask_to_geojson

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _new_temp(path: Path) -> Path:
    """Create an empty, new file beside ``path`` with the umask's normal permissions.

    `tempfile.mkstemp` makes owner-only (0600) files, and a rename keeps the mode:
    an exported mask would be unreadable to the rest of a lab. ``os.open`` with mode
    0666 lets the kernel apply the umask, as for any file a program creates.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _check_targets(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: pass overwrite=True (--overwrite) to replace it")
        if not path.parent.is_dir():
            raise ValueError(f"folder {path.parent} does not exist")


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    An error or interrupt leaves no half-written file, and an existing file is
    kept unless ``overwrite``.
    """
    with atomic_paths([path], overwrite) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(paths: Sequence[str | Path], overwrite: bool = False) -> Iterator[list[Path]]:
    """Temporary paths beside ``paths``; on success all are moved into place, else none.

    Nothing is touched before every target has been checked (exists without
    ``overwrite``, missing folder). The renames come last; if one fails, the files
    already moved are taken back (a replaced file is restored from a hard link kept
    until the end), so the targets are left as they were.
    """
    targets = [Path(p) for p in paths]
    if len(set(targets)) != len(targets):
        raise ValueError(f"the same file is named twice: {[str(p) for p in targets]}")
    _check_targets(targets, overwrite)
    temps: list[Path] = []
    try:
        for path in targets:
            temps.append(_new_temp(path))
        yield list(temps)
        _commit(temps, targets)
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


def _commit(temps: list[Path], targets: list[Path]) -> None:
    """Rename every temporary file onto its target: all of them, or none."""
    backups: list[Path | None] = []
    try:
        for path in targets:
            backup = None
            if path.exists():
                backup = path.parent / f".{path.name}.{secrets.token_hex(4)}.bak"
                try:
                    os.link(path, backup)
                except OSError:  # no hard links here: replaced files cannot be restored
                    backup = None
            backups.append(backup)
        done: list[int] = []
        try:
            for i, (tmp, path) in enumerate(zip(temps, targets)):
                os.replace(tmp, path)
                done.append(i)
        except BaseException:
            for i in reversed(done):  # take back what was moved already
                if backups[i] is not None:
                    os.replace(backups[i], targets[i])
                else:
                    targets[i].unlink(missing_ok=True)
            raise
    finally:
        for backup in backups:
            if backup is not None:
                backup.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        write(tmp)
    return Path(path)


def write_files(
    writers: Mapping[str | Path, Callable[[Path], None]], overwrite: bool = False
) -> list[Path]:
    """Write files that belong together (``{path: write(tmp_path)}``): all, or none.

    Each writer writes its temporary file; only when all have succeeded are they
    renamed into place (see `atomic_paths`). Returns the paths, in order.
    """
    paths = [Path(p) for p in writers]
    with atomic_paths(paths, overwrite) as temps:
        for tmp, write in zip(temps, writers.values()):
            write(tmp)
    return paths


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
    meta = {"napari_medcam": _jsonable(metadata or {})}
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
) -> Callable[[Path], None]:
    """Compute `mask_to_geojson` now; return ``write(path)`` for its JSON text."""
    geo = mask_to_geojson(mask, properties, downsample, origin, classes)
    text = json.dumps(_jsonable(geo))
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
) -> list[Path]:
    """Write a mask TIFF and, when ``geojson`` (its Feature properties) is given, its
    GeoJSON beside it (same name, ``.geojson``): both files, or neither.

    A 2-D mask larger than `PYRAMID_ABOVE` a side (it may be lazy: zarr, dask) is
    written as a tiled pyramid, read tile by tile; smaller ones as a flat TIFF. The
    GeoJSON outlines ``plane`` (the 2-D mask the explanation made, default ``mask``)
    in level-0 slide coordinates (``downsample``, ``origin``: see
    `mask_to_geojson`; ``classes``: a label mask's {value: class name}, one
    classification per polygon). Everything is checked and computed before the first
    file is created.
    """
    path = Path(path)
    if len(mask.shape) == 2 and max(mask.shape) > PYRAMID_ABOVE:
        from napari_medcam.slides import pyramid_writer

        writers: dict[Path, Callable[[Path], None]] = {path: pyramid_writer(mask, metadata)}
    else:
        writers = {path: mask_tiff_writer(np.asarray(mask), metadata, pixel_size)}
    if geojson is not None:
        writers[path.with_suffix(".geojson")] = geojson_writer(
            mask if plane is None else plane, geojson, downsample, origin, classes
        )
    return write_files(writers, overwrite)
