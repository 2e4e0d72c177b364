"""The maintained readers behind `napari_medcam.io.slides.open_slide`.

OpenSlide reads the scanner formats (Aperio SVS, Hamamatsu NDPI/VMS/VMU, 3DHistech MRXS,
Leica SCN, Ventana BIF, Philips TIFF, Sakura SVSLIDE); tiffslide (over tifffile) reads
generic tiled and OME-TIFFs, which OpenSlide sees as one flat RGBA image (no sub-IFD
pyramid, no masks, no grey levels); wsidicom reads a DICOM WSI, which is a folder.
Each gives lazy levels read tile by tile and the level metadata the file itself records:
nothing here parses a vendor's description by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the side of a lazy chunk read through a library's read_region (a multiple of the
#: file's tile side when it has one): one read per chunk, never a whole level
REGION_CHUNK = 1024


@dataclass
class Opened:
    """What a backend found: lazy levels (H, W[, C]) and the file's own level metadata."""

    levels: list[Any]
    downsamples: list[float]
    mpp: float | None
    magnification: float | None
    vendor: str
    handle: Any


class _RegionArray:
    """One level as an array whose slices are read by ``read(y, x, h, w)`` (level pixels):
    dask asks it for one chunk at a time."""

    def __init__(self, read: Callable[[int, int, int, int], np.ndarray], shape: tuple) -> None:
        self._read = read
        self.shape = shape
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        """The pixels of ``key`` (slices with any step, or integers, on y and x), read as
        the one box that holds them: dask may fold a strided view into a chunk's key."""
        key = (*(key if isinstance(key, tuple) else (key,)), slice(None), slice(None))
        key = key[: max(self.ndim, 2)]
        spans = [range(n)[k] for n, k in zip(self.shape[:2], key[:2])]
        if any(isinstance(s, range) and not s for s in spans):
            return np.broadcast_to(np.zeros((), self.dtype), self.shape)[key]
        lo = [s if isinstance(s, int) else min(s) for s in spans]
        hi = [s + 1 if isinstance(s, int) else max(s) + 1 for s in spans]
        box = self._read(lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
        rel = tuple(
            s - start
            if isinstance(s, int)
            else slice(s.start - start, s.stop - start if s.stop >= start else None, s.step)
            for s, start in zip(spans, lo)
        )
        return box[rel + tuple(key[2:])]


def _lazy_level(read: Callable, shape: tuple, tile: int, name: str) -> Any:
    """A dask array of a level, one ``read`` per chunk (tile-aligned when ``tile`` > 0)."""
    import dask.array as da

    chunk = tile * max(1, REGION_CHUNK // tile) if tile > 0 else REGION_CHUNK
    return da.from_array(
        _RegionArray(read, shape),
        chunks=(chunk, chunk, shape[2]),
        meta=np.empty((0, 0, 0), np.uint8),
        name=name,
    )


def _number(value: Any) -> float | None:
    """A positive number from a property (a string, a number or missing), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _token(path: Path, *parts: Any) -> str:
    from dask.base import tokenize

    return tokenize(str(path.resolve()), path.stat().st_mtime_ns, *parts)


def open_openslide(path: Path, vendor: str) -> Opened:
    """A scanner's slide through OpenSlide: RGBA regions composited on the slide's own
    background colour (transparent where nothing was scanned, e.g. between MRXS areas)."""
    import openslide

    osr = openslide.OpenSlide(str(path))
    props = osr.properties
    colour = bytes.fromhex(props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff"))
    background = np.frombuffer(colour, np.uint8).astype(float)
    token = _token(path)
    levels = []
    for i, ((w, h), down) in enumerate(zip(osr.level_dimensions, osr.level_downsamples)):

        def read(y: int, x: int, hh: int, ww: int, i: int = i, down: float = down) -> np.ndarray:
            # OpenSlide places a region by its level-0 corner
            rgba = np.asarray(osr.read_region((round(x * down), round(y * down)), i, (ww, hh)))
            alpha = rgba[..., 3:4] / 255.0
            return (rgba[..., :3] * alpha + background * (1 - alpha) + 0.5).astype(np.uint8)

        tile = int(_number(props.get(f"openslide.level[{i}].tile-width")) or 0)
        levels.append(_lazy_level(read, (h, w, 3), tile, f"openslide-{i}-{token}"))
    return Opened(
        levels,
        [float(d) for d in osr.level_downsamples],
        _number(props.get(openslide.PROPERTY_NAME_MPP_X)),
        _number(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
        vendor,
        osr,
    )


def open_tiff(path: Path, max_block_bytes: int) -> Opened:
    """A generic or OME-TIFF through tiffslide's zarr levels (one chunk per stored tile);
    µm/px and magnification from tiffslide's properties, or the OME-XML for an OME-TIFF."""
    import tiffslide

    ts = tiffslide.TiffSlide(path)
    try:
        props = ts.properties
        tif = ts.ts_tifffile
        series = int(props.get("tiffslide.series-index") or 0)
        group = ts.zarr_group
        levels = [
            _bounded(tif, path, series, i, group[str(i)], max_block_bytes)
            for i in range(ts.level_count)
        ]
        mpp = _number(props.get(tiffslide.PROPERTY_NAME_MPP_X))
        magnification = _number(props.get(tiffslide.PROPERTY_NAME_OBJECTIVE_POWER))
        if tif.is_ome:
            mpp, magnification = _ome_scale(tif.ome_metadata or "", mpp, magnification)
        vendor = props.get(tiffslide.PROPERTY_NAME_VENDOR) or ("ome" if tif.is_ome else "tiff")
    except BaseException:
        ts.close()
        raise
    return Opened(levels, [float(d) for d in ts.level_downsamples], mpp, magnification, vendor, ts)


def _ome_scale(
    xml: str, mpp: float | None, magnification: float | None
) -> tuple[float | None, float | None]:
    """µm/px (PhysicalSizeX, in its unit) and the objective's nominal magnification of the
    first OME image, through tifffile's OME-XML parser."""
    import tifffile

    ome = tifffile.xml2dict(xml).get("OME", {})
    image = ome.get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    to_um = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
    size = _number(pixels.get("PhysicalSizeX"))
    unit = to_um.get(str(pixels.get("PhysicalSizeXUnit", "µm")))
    if size is not None and unit is not None:
        mpp = size * unit
    objective = ome.get("Instrument", {})
    objective = objective[0] if isinstance(objective, list) else objective
    objective = objective.get("Objective", {})
    objective = objective[0] if isinstance(objective, list) else objective
    return mpp, _number(objective.get("NominalMagnification")) or magnification


def _bounded(tif: Any, path: Path, series: int, level: int, arr: Any, max_bytes: int) -> Any:
    """``arr`` when its stored blocks are small; else the level memory-mapped (uncompressed),
    or ValueError (compressed): a 60,000² single-strip TIFF must not be read whole (10 GiB)
    to explain a 224² region of it."""
    import tifffile

    block = math.prod(arr.chunks) * arr.dtype.itemsize
    if block <= max_bytes:
        return arr
    page = tif.series[series].levels[level].keyframe
    if page.is_memmappable:
        return tifffile.memmap(path, series=series, level=level, mode="r")
    what = "one strip" if not page.is_tiled and len(page.dataoffsets) == 1 else "blocks"
    raise ValueError(
        f"{path.name} stores level {level} ({' × '.join(map(str, arr.shape[:2]))}) compressed "
        f"in {what} of {block / 2**30:.1f} GiB: any region of it would need that much "
        "memory. Save it as a tiled TIFF first, e.g. tifffile.imwrite(out, data, "
        "tile=(512, 512), compression='zlib') or `vips tiffsave in.tif out.tif --tile "
        "--pyramid`"
    )


def is_dicom_folder(path: Path) -> bool:
    """True for a folder holding DICOM files (the 'DICM' mark at byte 128): a DICOM WSI
    is stored as one file per level (and per label, overview), never as one file."""
    if not path.is_dir():
        return False
    for item in path.iterdir():
        if item.is_file():
            with item.open("rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
    return False


def open_dicom(folder: Path) -> Opened:
    """A DICOM WSI folder through wsidicom: each level read region by region at its own
    pyramid index; µm/px from the files' pixel spacing, the objective from their optics."""
    from wsidicom import WsiDicom

    try:
        wsi = WsiDicom.open(folder)
    except Exception as err:
        raise ValueError(f"cannot read {folder} as a DICOM WSI: {err}") from err
    base = wsi.levels.base_level
    base_mm = base.pixel_spacing.width if base.pixel_spacing else None
    token = _token(folder, *(str(f) for f in wsi.files or ()))
    levels, downsamples = [], []
    for lv in wsi.levels:
        w, h = lv.size.width, lv.size.height

        def read(y: int, x: int, hh: int, ww: int, index: int = lv.level) -> np.ndarray:
            return np.asarray(wsi.read_region((x, y), index, (ww, hh), as_array=True))

        spacing = lv.pixel_spacing.width if lv.pixel_spacing else None
        down = spacing / base_mm if spacing and base_mm else base.size.width / w
        levels.append(_lazy_level(read, (h, w, 3), lv.tile_size.width, f"dicom-{lv.level}-{token}"))
        downsamples.append(float(down))
    powers = [
        _number(getattr(getattr(p, "objective", None), "objective_power", None))
        for p in wsi.pyramid.metadata.optical_paths or ()
    ]
    mpp = base_mm * 1000 if base_mm else None
    return Opened(levels, downsamples, mpp, next(filter(None, powers), None), "dicom", wsi)
