"""Slides opened lazily through maintained readers: OpenSlide, tiffslide, wsidicom.

Nothing here reads pixels until a region is sliced: opening a 10⁵-pixel slide costs
the same as opening a small one, and a region at level 0 reads only its tiles. Which
library reads which file is `napari_medcam.io.slide_backends`'s business; every slide
comes out as the same `Slide`. Writing (mask pyramids) stays with tifffile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.classifiers.card import nearest_mpp_level
from napari_medcam.io import slide_backends as backends
from napari_medcam.io.atomic import write_atomic
from napari_medcam.io.jsonable import jsonable

#: files that may be slides (a DICOM WSI is a folder of .dcm files: give the folder)
SLIDE_SUFFIXES = (
    ".tif",
    ".tiff",
    ".ome.tif",
    ".ome.tiff",
    ".svs",
    ".ndpi",
    ".vms",
    ".vmu",
    ".mrxs",
    ".scn",
    ".bif",
    ".svslide",
)
#: a slide level whose µm/px is further than this factor from the classifier's is warned of
MPP_TOLERANCE = 1.25
#: how a note about the level chosen begins when it is a warning (`Slide.level_for_mpp`)
WARNING = "warning: "
#: a stored block (strip or tile) larger than this is never read whole to reach a region:
#: an uncompressed one is memory-mapped, a compressed one refused with the remedy
MAX_BLOCK_BYTES = 256 * 2**20
#: the chunks of a memory-mapped level: a region reads only the rows and columns it needs
MEMMAP_CHUNK = 2048


def check_mpp(mpp: Any) -> float | None:
    """``mpp`` (µm per pixel asked for, ``--mpp``) as a float, None if not given; a
    ValueError, in one line, unless it is a positive number."""
    if mpp is None:
        return None
    if isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not 0 < mpp < math.inf:
        raise ValueError(f"--mpp must be a positive number of µm per pixel, got {mpp}")
    return float(mpp)


def wanted_mpp(asked: Any, classifier: Any) -> float | None:
    """The µm/px a classifier reads: ``asked`` (``--mpp``, checked) when given, else what
    its card records; None when neither says."""
    if asked is not None:
        return check_mpp(asked)
    card = getattr(classifier, "card", None)
    return getattr(card, "microns_per_pixel", None) or None


@dataclass
class Slide:
    """An open pyramidal image: one lazy array per level, level 0 the full resolution."""

    path: Path
    #: (H, W[, C]) per level: zarr (a TIFF's tiles), dask (a library's read_region per
    #: chunk) or a memory map (a huge single-strip TIFF)
    levels: list[Any]
    #: level-0 pixels per level pixel, as the file (its library) records them
    downsamples: list[float]
    rgb: bool
    _handle: Any = field(repr=False, default=None)
    #: µm per level-0 pixel when the file records it; None when it does not
    mpp: float | None = None
    #: the objective's magnification the file records (e.g. 40), else None
    magnification: float | None = None
    #: the format as its library names it ("aperio", "hamamatsu", "dicom", "tiff", ...)
    vendor: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.levels[0].shape)

    @property
    def level_mpp(self) -> list[float | None]:
        """µm per pixel of each level (None when the file records no pixel size)."""
        return [self.mpp * f if self.mpp else None for f in self.downsamples]

    def level_for_size(self, max_side: int) -> int:
        """The finest level whose larger side is at most ``max_side`` (else the coarsest)."""
        for i, arr in enumerate(self.levels):
            if max(arr.shape[:2]) <= max_side:
                return i
        return len(self.levels) - 1

    def level_for_mpp(self, want: float | None, max_side: int = 4096) -> tuple[int, str]:
        """(level, what to tell the user; "" for nothing): the level whose µm/px is nearest
        ``want`` by ratio (the µm/px a classifier reads: it sees tissue at the magnification
        it was trained at). Without ``want``, or when the slide records no pixel size, the
        finest level at most ``max_side`` a side (`level_for_size`). The note starts with
        `WARNING` when the slide records no pixel size or the nearest level is more than
        `MPP_TOLERANCE` times off: ``explain`` prints it, ``batch`` records it in the
        slide's result and summary."""
        if not want:
            return self.level_for_size(max_side), ""
        if not self.mpp:
            return self.level_for_size(max_side), (
                f"{WARNING}the slide records no pixel size, so the level cannot be matched to "
                f"the classifier's {want:g} µm/px: level chosen by size; pass --level to choose"
            )
        mpps = self.level_mpp
        level = nearest_mpp_level(mpps, want)
        note = f"level {level}: {mpps[level]:.3g} µm/px, nearest the classifier's {want:g} µm/px"
        if abs(math.log(mpps[level] / want)) > math.log(MPP_TOLERANCE):
            off = mpps[level] / want
            note = f"{WARNING}{note} — {off:.2f}× off (the slide has no closer level)"
        return level, note

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
        if isinstance(arr, da.Array):
            lazy = arr
        elif hasattr(arr, "store"):
            lazy = da.from_zarr(arr)
        else:  # a memory-mapped level: chunks a region can read alone
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
    """Open a slide lazily: a scanner's file (OpenSlide), a generic or OME-TIFF
    (tiffslide), a DICOM WSI folder (wsidicom). ValueError, in words, if it cannot."""
    import openslide

    path = Path(path)
    if path.is_dir():
        if not backends.is_dicom_folder(path):
            raise ValueError(f"{path} is a folder, not a slide file")
        opened = backends.open_dicom(path)
    elif not path.is_file():
        raise ValueError(f"slide not found: {path}")
    else:
        vendor = openslide.OpenSlide.detect_format(str(path))
        if vendor == "dicom":
            raise ValueError(f"{path} is one file of a DICOM WSI: open its folder, {path.parent}")
        try:
            if vendor not in (None, "generic-tiff"):
                opened = backends.open_openslide(path, vendor)
            else:
                opened = backends.open_tiff(path, MAX_BLOCK_BYTES)
        except Exception as err:
            if isinstance(err, ValueError) and "tiled TIFF" in str(err):
                raise
            raise ValueError(f"cannot read {path} as a slide: {err}") from err
    full = opened.levels[0].shape
    rgb = len(full) == 3 and full[-1] in (3, 4)
    return Slide(
        path,
        opened.levels,
        opened.downsamples,
        rgb,
        opened.handle,
        opened.mpp,
        opened.magnification,
        opened.vendor,
    )


def is_pyramidal(path: str | Path) -> bool:
    """True for a readable slide with more than one resolution level."""
    try:
        with open_slide(path) as slide:
            return len(slide.levels) > 1
    except Exception:
        return False


def opens_lazily(path: str | Path, above: int = 4096) -> bool:
    """True for a file to open as a slide (lazily) rather than read whole: a scanner's
    format or a DICOM WSI, pyramidal, or larger than ``above`` pixels a side (a flat
    60,000² TIFF is no image to load)."""
    try:
        with open_slide(path) as slide:
            scanner = slide.vendor not in ("tiff", "ome")
            return scanner or len(slide.levels) > 1 or max(slide.shape[:2]) > above
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
