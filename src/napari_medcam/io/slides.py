"""Pyramidal slides (tiled TIFF, OME-TIFF, Aperio SVS), opened lazily through zarr.

Nothing here reads pixels until a region is sliced: opening a 10⁵-pixel slide costs
the same as opening a small one, and a region at level 0 reads only its tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io.atomic import write_atomic
from napari_medcam.io.jsonable import jsonable

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff")
#: a stored block (strip or tile) larger than this is never read whole to reach a region:
#: an uncompressed one is memory-mapped, a compressed one refused with the remedy
MAX_BLOCK_BYTES = 256 * 2**20
#: the chunks of a memory-mapped level: a region reads only the rows and columns it needs
MEMMAP_CHUNK = 2048


@dataclass
class Slide:
    """An open pyramidal image: one lazy array per level, level 0 the full resolution."""

    path: Path
    levels: list[Any]  # zarr arrays, (H, W[, C])
    downsamples: list[float]
    rgb: bool
    _handle: Any = field(repr=False, default=None)
    #: µm per level-0 pixel when the file records it (Aperio MPP, OME PhysicalSizeX,
    #: or the TIFF resolution in cm/inch); None when it does not
    mpp: float | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.levels[0].shape)

    def level_for_size(self, max_side: int) -> int:
        """The finest level whose larger side is at most ``max_side`` (else the coarsest)."""
        for i, arr in enumerate(self.levels):
            if max(arr.shape[:2]) <= max_side:
                return i
        return len(self.levels) - 1

    def region(self, level: int, region: tuple[int, int, int, int] | None = None):
        """A lazy (dask) view of ``region`` = (y, x, h, w) in level-0 pixels, at ``level``.

        Returns (array, (y0, x0) of the view at that level, downsample factor).
        """
        import dask.array as da

        if not 0 <= level < len(self.levels):
            raise ValueError(
                f"level {level} does not exist: the slide has levels 0..{len(self.levels) - 1}"
            )
        arr = self.levels[level]
        f = self.downsamples[level]
        if hasattr(arr, "store"):
            lazy = da.from_zarr(arr)
        else:  # a memory-mapped level (`_lazy_level`): chunks a region can read alone
            chunks = (MEMMAP_CHUNK, MEMMAP_CHUNK, *arr.shape[2:])
            lazy = da.from_array(arr, chunks=chunks[: arr.ndim])
        if region is None:
            return lazy, (0, 0), f
        y, x, h, w = region
        H0, W0 = self.shape[:2]
        if h <= 0 or w <= 0 or y < 0 or x < 0 or y + h > H0 or x + w > W0:
            raise ValueError(
                f"region y={y}, x={x}, h={h}, w={w} is not inside the slide "
                f"({H0} × {W0} at level 0)"
            )
        ys, xs = int(y / f), int(x / f)
        ye, xe = int(np.ceil((y + h) / f)), int(np.ceil((x + w) / f))
        return lazy[ys:ye, xs:xe], (ys, xs), f

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path) -> Slide:
    """Open a (pyramidal or plain) TIFF lazily; ValueError if it cannot be read."""
    import tifffile
    import zarr

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a slide file")
    if not path.is_file():
        raise ValueError(f"slide not found: {path}")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as err:
        raise ValueError(f"cannot read {path} as TIFF: {err}") from err
    try:
        series = tif.series[0]
        levels = [
            _lazy_level(tif, path, i, zarr.open(tif.aszarr(series=0, level=i), mode="r"))
            for i in range(len(series.levels))
        ]
    except Exception as err:
        tif.close()
        if isinstance(err, ValueError) and "tiled TIFF" in str(err):
            raise
        raise ValueError(f"cannot open {path} lazily: {err}") from err
    full = levels[0].shape
    downs = [full[0] / a.shape[0] for a in levels]
    rgb = len(full) == 3 and full[-1] in (3, 4)
    return Slide(path, levels, downs, rgb, tif, microns_per_pixel(tif))


def _lazy_level(tif: Any, path: Path, level: int, arr: Any) -> Any:
    """``arr`` when its stored blocks are small; else the level memory-mapped (uncompressed),
    or ValueError (compressed): a 60,000² single-strip TIFF must not be read whole (10 GiB)
    to explain a 224² region of it."""
    import math

    import tifffile

    block = math.prod(arr.chunks) * arr.dtype.itemsize
    if block <= MAX_BLOCK_BYTES:
        return arr
    page = tif.series[0].levels[level].keyframe
    if page.is_memmappable:
        return tifffile.memmap(path, series=0, level=level, mode="r")
    what = "one strip" if not page.is_tiled and len(page.dataoffsets) == 1 else "blocks"
    raise ValueError(
        f"{path.name} stores level {level} ({' × '.join(map(str, arr.shape[:2]))}) compressed "
        f"in {what} of {block / 2**30:.1f} GiB: any region of it would need that much "
        "memory. Save it as a tiled TIFF first, e.g. tifffile.imwrite(out, data, "
        "tile=(512, 512), compression='zlib') or `vips tiffsave in.tif out.tif --tile "
        "--pyramid`"
    )


def microns_per_pixel(tif: Any) -> float | None:
    """µm per level-0 pixel as the file records it, or None (a plain pixel grid)."""
    import re

    page = tif.pages[0]
    desc = page.description or ""
    found = re.search(r"MPP\s*=\s*([0-9.]+)", desc)  # Aperio SVS
    if found is None and getattr(tif, "is_ome", False):
        found = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata or "")
    if found is not None:
        value = float(found.group(1))
        return value if value > 0 else None
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    per_unit = num / den if den else 0.0
    unit = int(tags["ResolutionUnit"].value)
    um = {2: 25_400.0, 3: 10_000.0}.get(unit)  # pixels per inch, per centimetre
    return um / per_unit if um and per_unit > 0 else None


def is_pyramidal(path: str | Path) -> bool:
    """True for a readable TIFF with more than one resolution level."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:
        return False


def opens_lazily(path: str | Path, above: int = 4096) -> bool:
    """True for a TIFF to open as a slide (lazily) rather than read whole: pyramidal, or
    larger than ``above`` pixels a side (a flat 60,000² TIFF is no image to load)."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return len(series.levels) > 1 or max(series.shape[:2]) > above
    except Exception:
        return False


def write_pyramid(
    path: str | Path,
    data: Any,
    metadata: dict[str, Any] | None = None,
    tile: int = 512,
    min_side: int = 512,
    overwrite: bool = False,
) -> Path:
    """Write a 2-D mask (uint8) as a tiled pyramidal TIFF (sub-IFDs, nearest downsampling).

    For masks too large for a flat TIFF to be comfortable to open; metadata as in
    `napari_medcam.io.images.write_mask_tiff`. ``data`` may be lazy (zarr, dask): every
    level is read and written one tile at a time, so a whole-slide mask is never
    held in memory.
    """
    return write_atomic(path, pyramid_writer(data, metadata, tile, min_side), overwrite)


def pyramid_writer(
    data: Any,
    metadata: dict[str, Any] | None = None,
    tile: int = 512,
    min_side: int = 512,
) -> Callable[[Path], None]:
    """Check ``data`` now; return ``write(path)`` writing it as `write_pyramid` does."""
    import tifffile

    if len(data.shape) != 2:
        raise ValueError(f"a pyramid mask must be 2-D, got shape {tuple(data.shape)}")
    height, width = (int(n) for n in data.shape)
    steps = [1]
    while max(-(-height // steps[-1]), -(-width // steps[-1])) > min_side:
        steps.append(steps[-1] * 2)
    meta = {"napari_medcam": jsonable(metadata or {})}

    def level_tiles(step: int) -> Iterator[np.ndarray]:
        h, w = -(-height // step), -(-width // step)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                rows = slice(y * step, min(y + tile, h) * step, step)
                cols = slice(x * step, min(x + tile, w) * step, step)
                block = np.asarray(data[rows, cols]).astype(np.uint8)
                out = np.zeros((tile, tile), np.uint8)
                out[: block.shape[0], : block.shape[1]] = block
                yield out

    def _write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=height * width > 2**31) as tw:
            for i, step in enumerate(steps):
                tw.write(
                    level_tiles(step),
                    shape=(-(-height // step), -(-width // step)),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    compression="zlib",
                    metadata=meta if i == 0 else {},
                    subifds=len(steps) - 1 if i == 0 else None,
                    subfiletype=1 if i else 0,
                )

    return _write
