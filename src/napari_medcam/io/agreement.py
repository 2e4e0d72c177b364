"""Evidence against a reference annotation, per class, tile by tile in bounded memory.

`compare` reads an evidence mask (a napari-medcam mask TIFF, or an array placed on the
slide) and `Annotations` one tile at a time, rasterises only that tile of the
annotation (`Annotations.runs`), and sums pixel counts; the scores come from the sums
(`napari_medcam.metrics.overlap_from_counts`), so a whole slide is scored without its
masks in memory. Pixels are the mask's (its level), placed on the slide by its
downsample and level-0 origin, as the explain verb records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io.annotations import Annotations, cover, read_annotations
from napari_medcam.metrics import overlap_from_counts

#: rows and columns of the mask read at a time
COMPARE_TILE = 1024
#: the name of the row that scores the evidence against every class together
ALL_CLASSES = "all classes"


@dataclass
class ClassAgreement:
    """Pixel counts of one class (or all together) and the scores they give.

    ``regions`` counts the class's polygons with a pixel in the explained region,
    ``touched`` those of them with at least one evidence pixel.
    """

    name: str
    overlap: int
    evidence: int
    annotated: int
    regions: int
    touched: int

    def scores(self) -> dict[str, float]:
        """Dice, IoU, precision, recall and the share of regions touched by evidence."""
        share = self.touched / self.regions if self.regions else 0.0
        return {
            **overlap_from_counts(self.overlap, self.evidence, self.annotated),
            "touched": share,
        }


@dataclass
class Agreement:
    """`compare`'s result: one `ClassAgreement` per class, then all classes together."""

    rows: list[ClassAgreement]
    shape: tuple[int, int]
    downsample: tuple[float, float]
    origin: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "downsample": list(self.downsample),
            "origin_level0": list(self.origin),
            "classes": [{**asdict(r), **r.scores()} for r in self.rows],
        }

    def table(self) -> str:
        """The scores as an aligned text table, one class a line."""
        width = max(len(r.name) for r in self.rows)
        head = f"{'class':{width}s}  dice   iou    prec   recall  regions touched"
        lines = [head]
        for r in self.rows:
            s = r.scores()
            lines.append(
                f"{r.name:{width}s}  {s['dice']:.3f}  {s['iou']:.3f}  {s['precision']:.3f}  "
                f"{s['recall']:.3f}   {r.touched}/{r.regions} ({100 * s['touched']:.0f} %)"
            )
        return "\n".join(lines)


def compare(
    mask: Any,
    annotations: Annotations | str | Path,
    *,
    downsample: float | Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    tile: int = COMPARE_TILE,
) -> Agreement:
    """Score evidence (mask > 0) against each annotated class, tile by tile.

    ``mask`` is a mask TIFF path (its metadata places it on the slide: ``downsample``,
    ``origin_level0``, ``slide_shape``) or a 2-D array (numpy, zarr, dask) with
    ``downsample`` (level-0 pixels per mask pixel) and ``origin`` (level-0 (y, x) of its
    first pixel), which also override the TIFF's. ``annotations`` is `Annotations` or a
    QuPath GeoJSON path (checked against the slide's shape when the mask records it).
    """
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile}")
    meta: dict[str, Any] = {}
    close = None
    if isinstance(mask, (str, Path)):
        mask, meta, close = _open_mask(Path(mask))
    try:
        if len(mask.shape) != 2:
            raise ValueError(f"compare needs a 2-D mask, got shape {tuple(mask.shape)}")
        fy, fx = _pair(downsample if downsample is not None else meta.get("downsample", 1.0))
        oy, ox = _pair(origin if origin is not None else meta.get("origin_level0", (0.0, 0.0)))
        if not isinstance(annotations, Annotations):
            annotations = read_annotations(annotations, meta.get("slide_shape"))
        rows = _count(mask, annotations, (fy, fx), (round(oy / fy), round(ox / fx)), tile)
    finally:
        if close is not None:
            close()
    return Agreement(rows, tuple(int(n) for n in mask.shape), (fy, fx), (oy, ox))


def _count(
    mask: Any, ann: Annotations, factors: tuple[float, float], at: tuple[int, int], tile: int
) -> list[ClassAgreement]:
    """Sum overlap, evidence and annotated pixels, and regions seen/touched, per class."""
    height, width = (int(n) for n in mask.shape)
    k = len(ann.classes)
    overlap, annotated = np.zeros(k + 1, np.int64), np.zeros(k + 1, np.int64)
    evidence = 0
    seen, touched = np.zeros(len(ann), bool), np.zeros(len(ann), bool)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            ev = np.asarray(mask[y : y + tile, x : x + tile]) > 0
            th, tw = ev.shape
            evidence += int(ev.sum())
            pid, rows, c0, c1 = ann.runs(factors, (at[0] + y, at[1] + x, th, tw))
            inside = np.zeros((th, tw + 1), np.int64)  # evidence pixels left of each column
            np.cumsum(ev, axis=1, out=inside[:, 1:])
            seen[pid] = True
            touched[pid[inside[rows, c1] > inside[rows, c0]]] = True
            every = np.zeros((th, tw), bool)
            for i, cls in enumerate(ann.classes):
                sel = ann.values[pid] == cls.value
                cov = cover(rows[sel], c0[sel], c1[sel], (th, tw))
                annotated[i] += int(cov.sum())
                overlap[i] += int((cov & ev).sum())
                every |= cov
            annotated[k] += int(every.sum())
            overlap[k] += int((every & ev).sum())
    out = []
    for i, cls in enumerate([*ann.classes, None]):
        mine = np.ones(len(ann), bool) if cls is None else ann.values == cls.value
        name = ALL_CLASSES if cls is None else cls.name
        regions, hit = int((seen & mine).sum()), int((touched & mine).sum())
        out.append(ClassAgreement(name, int(overlap[i]), evidence, int(annotated[i]), regions, hit))
    return out


def _open_mask(path: Path) -> tuple[Any, dict[str, Any], Any]:
    """A mask TIFF's level 0 as a lazy array, its napari-medcam metadata, and a closer."""
    import tifffile
    import zarr

    if not path.is_file():
        raise ValueError(f"mask file not found: {path}")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as err:
        raise ValueError(f"{path.name} is not a mask TIFF: {err}") from None
    try:
        meta = dict((tif.shaped_metadata or ({},))[0].get("napari_medcam", {}))
        data = zarr.open(tif.aszarr(series=0, level=0), mode="r")
    except Exception as err:
        tif.close()
        raise ValueError(f"cannot read {path.name} as a mask TIFF: {err}") from None
    return data, meta, tif.close


def _pair(value: Any) -> tuple[float, float]:
    vals = [float(v) for v in np.atleast_1d(np.asarray(value, dtype=float))]
    pair = (vals * 2)[-2:] if len(vals) == 1 else vals[-2:]
    if len(vals) > 2 or not all(np.isfinite(pair)):
        raise ValueError(f"a placement must be one or two finite numbers, got {value!r}")
    return pair[0], pair[1]
