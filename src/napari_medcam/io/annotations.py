"""QuPath annotations in: GeoJSON polygons as a reference aligned with the slide.

`read_annotations` reads what QuPath's *Export as GeoJSON* writes (a FeatureCollection,
a bare list of Features, or one Feature; Polygon/MultiPolygon with holes; annotations,
detections and cells; ``classification`` as {"name", "color"} or the older "colorRGB")
with shapely, in QuPath's own coordinates: level-0 pixels, x right, y down, origin at
the slide's top-left corner. Its `Annotations` hold the polygons and give a label raster
(one value per class) for any pyramid level and window on request, so a 100,000² slide's
annotation is never rasterised whole.

Rasterisation rule (the one `mask_to_geojson`'s pixel-edge polygons round-trip under):
level pixel (r, c) of a level with downsample (fy, fx) is the level-0 rectangle
[c·fx, (c+1)·fx) × [r·fy, (r+1)·fy); it is inside a polygon when its centre
((c + ½)·fx, (r + ½)·fy) is. A centre exactly on an edge belongs to the polygon on its
right / below (half-open, so polygons that tile the plane share no pixel). Where
classes overlap, the higher class value wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io.geojson import class_rgb

ANNOTATION_SUFFIXES = (".geojson", ".json")
#: the class of features QuPath exported without a classification
UNCLASSIFIED = "Unclassified"
#: how far (level-0 pixels) polygons may reach past the slide's edge and still fit it
FIT_TOLERANCE = 1.0
#: rows rasterised at a time: the temporary counts stay small whatever the window
RASTER_BAND = 1024
_AREA_TYPES = ("Polygon", "MultiPolygon", "GeometryCollection")
_SKIPPED_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString")
#: QuPath ≤ 0.2 named the object type in the Feature's "id"
_LEGACY_TYPES = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
}


@dataclass(frozen=True)
class AnnotationClass:
    """One class of the reference: its label value, QuPath name and colour (r, g, b)."""

    value: int
    name: str
    color: tuple[int, int, int]


@dataclass
class Annotations:
    """Polygons of a QuPath GeoJSON file in level-0 pixels, one class value each.

    ``polygons`` are the files' connected parts (a MultiPolygon is several), each with
    its ``values`` entry (an `AnnotationClass`'s value) and ``object_types`` entry
    ("annotation", "detection", ...). ``shape`` is the level-0 (H, W) the polygons are
    placed in: the slide's when given, else the polygons' extent. ``skipped`` counts the
    features without an area (points, lines).
    """

    polygons: np.ndarray
    values: np.ndarray
    object_types: np.ndarray
    classes: list[AnnotationClass]
    shape: tuple[int, int]
    path: Path | None = None
    skipped: int = 0
    _tree: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import shapely

        self._tree = shapely.STRtree(self.polygons)

    def __len__(self) -> int:
        return len(self.polygons)

    @property
    def names(self) -> dict[int, str]:
        """{label value: class name}, as napari-medcam's label masks record them."""
        return {c.value: c.name for c in self.classes}

    def shape_at(self, downsample: float | Sequence[float] = 1.0) -> tuple[int, int]:
        """(H, W) of the raster at a level with this downsample (level-0 px per pixel)."""
        fy, fx = _factors(downsample)
        return math.ceil(self.shape[0] / fy - 1e-9), math.ceil(self.shape[1] / fx - 1e-9)

    def runs(
        self, downsample: float | Sequence[float], window: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Inside pixels of ``window`` = (y, x, h, w) (level pixels) as horizontal runs.

        Returns (polygon index, row, first column, end column) arrays, rows and columns
        relative to the window, one run per polygon and row span: every polygon's
        pixels under the module's rule, so callers can paint classes or find the
        polygons a mask touches without a raster per polygon.
        """
        import shapely

        fy, fx = _factors(downsample)
        y, x, h, w = (int(v) for v in window)
        empty = np.zeros(0, np.int64)
        if h <= 0 or w <= 0 or not len(self.polygons):
            return empty, empty, empty, empty
        box = shapely.box(x * fx, y * fy, (x + w) * fx, (y + h) * fy)
        cand = self._tree.query(box)
        if not len(cand):
            return empty, empty, empty, empty
        rings, ring_poly = shapely.get_rings(self.polygons[cand], return_index=True)
        coords, ring = shapely.get_coordinates(rings, return_index=True)
        px, py = coords[:, 0] / fx - x, coords[:, 1] / fy - y
        same = ring[1:] == ring[:-1]  # consecutive vertices of one ring make an edge
        x1, y1, x2, y2 = px[:-1][same], py[:-1][same], px[1:][same], py[1:][same]
        poly = cand[ring_poly[ring[:-1][same]]]
        lo, hi = np.minimum(y1, y2), np.maximum(y1, y2)
        # rows whose centre r + ½ lies in [lo, hi): each vertex is counted once
        r0 = np.clip(np.ceil(lo - 0.5), 0, h).astype(np.int64)
        r1 = np.clip(np.ceil(hi - 0.5), 0, h).astype(np.int64)
        count = r1 - r0
        edge = np.repeat(np.arange(len(count)), count)
        rows = np.arange(len(edge)) - np.repeat(np.cumsum(count) - count, count) + r0[edge]
        t = (rows + 0.5 - y1[edge]) / (y2[edge] - y1[edge])
        xs = x1[edge] + t * (x2[edge] - x1[edge])
        pid = poly[edge]
        order = np.lexsort((xs, rows, pid))  # crossings pair up: in, out, in, out ...
        pid, rows, xs = pid[order], rows[order], xs[order]
        c0 = np.clip(np.ceil(xs[0::2] - 0.5), 0, w).astype(np.int64)
        c1 = np.clip(np.ceil(xs[1::2] - 0.5), 0, w).astype(np.int64)
        keep = c1 > c0
        return pid[0::2][keep], rows[0::2][keep], c0[keep], c1[keep]

    def raster(
        self,
        downsample: float | Sequence[float] = 1.0,
        window: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """The label raster (0 outside, a class value inside) of ``window`` = (y, x, h, w)
        in pixels of the level with ``downsample``; the whole level when None.

        Only the window is made (row band by row band), so memory follows its size.
        """
        if window is None:
            window = (0, 0, *self.shape_at(downsample))
        y, x, h, w = (int(v) for v in window)
        top = max((c.value for c in self.classes), default=0)
        out = np.zeros((max(h, 0), max(w, 0)), np.uint8 if top < 256 else np.uint32)
        for b in range(0, h, RASTER_BAND):
            bh = min(RASTER_BAND, h - b)
            pid, rows, c0, c1 = self.runs(downsample, (y + b, x, bh, w))
            for cls in self.classes:  # ascending: a higher value paints over a lower
                sel = self.values[pid] == cls.value
                out[b : b + bh][cover(rows[sel], c0[sel], c1[sel], (bh, w))] = cls.value
        return out

    def lazy(self, downsample: float | Sequence[float] = 1.0, chunk: int = 1024) -> Any:
        """The level's label raster as a dask array: each chunk rasterised when read."""
        import dask.array as da

        h, w = self.shape_at(downsample)
        dtype = np.uint8 if max(self.names, default=0) < 256 else np.uint32
        blank = da.zeros((h, w), dtype=dtype, chunks=(chunk, chunk))

        def block(part: np.ndarray, block_info: dict | None = None) -> np.ndarray:
            (ys, ye), (xs, xe) = block_info[0]["array-location"]
            return self.raster(downsample, (ys, xs, ye - ys, xe - xs))

        return blank.map_blocks(block, dtype=dtype)


def cover(rows: np.ndarray, c0: np.ndarray, c1: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (h, w) image of runs [c0, c1) on ``rows`` (overlapping runs are fine)."""
    h, w = shape
    edges = np.bincount(rows * (w + 1) + c0, minlength=h * (w + 1)) - np.bincount(
        rows * (w + 1) + c1, minlength=h * (w + 1)
    )
    return np.cumsum(edges.reshape(h, w + 1), axis=1)[:, :w] > 0


def _factors(downsample: float | Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in np.atleast_1d(np.asarray(downsample, dtype=float))]
    fy, fx = (vals * 2)[-2:] if len(vals) == 1 else vals[-2:]
    if not (np.isfinite(fy) and np.isfinite(fx) and fy > 0 and fx > 0):
        raise ValueError(f"downsample must be positive and finite, got {downsample!r}")
    return fy, fx


def looks_like_annotations(path: str | Path) -> bool:
    """Whether a file is worth parsing as GeoJSON features (for the napari reader)."""
    path = Path(path)
    if not path.is_file() or not path.name.lower().endswith(ANNOTATION_SUFFIXES):
        return False
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("utf-8", "ignore")
    return head.lstrip()[:1] in ("{", "[") and '"Feature' in head


def read_annotations(
    path: str | Path,
    slide_shape: Sequence[int] | None = None,
    object_types: Collection[str] | None = None,
) -> Annotations:
    """Read a QuPath GeoJSON file as `Annotations` (level-0 pixels).

    ``slide_shape`` (level-0 (H, W[, C])) checks that the polygons fit the slide; a file
    whose coordinates leave it (another slide's annotations) is refused. Only features
    of ``object_types`` ("annotation", "detection", "cell", "tile") are kept when given.
    Points and lines are skipped (counted in ``skipped``); anything else that is not a
    polygon, and malformed JSON or GeoJSON, is a ValueError saying which feature.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path.name} is not JSON: {err}") from None
    polygons, labels, types, skipped = _parse(data, path.name, object_types)
    if not polygons:
        raise ValueError(
            f"{path.name} holds no polygon annotations"
            + (f" ({skipped} points or lines skipped)" if skipped else "")
        )
    polys = np.asarray(polygons, dtype=object)
    classes, values = _classes(labels)
    shape = _fit(polys, slide_shape, path.name)
    return Annotations(polys, values, np.asarray(types), classes, shape, path, skipped)


def _features(data: Any, name: str) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features")
        if not isinstance(feats, list):
            raise ValueError(f"{name}: the FeatureCollection has no 'features' list")
        return feats
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise ValueError(f"{name} is not GeoJSON features (a FeatureCollection or a list of Features)")


def _parse(
    data: Any, name: str, object_types: Collection[str] | None
) -> tuple[list[Any], list[tuple[str, Any, Any]], list[str], int]:
    """Polygons, (class name, colour, Med-CAM label) and object type of each, skipped."""
    import shapely
    from shapely.geometry import shape

    geoms: list[Any] = []
    labels: list[tuple[str, Any, Any]] = []
    types: list[str] = []
    skipped = 0
    for i, feat in enumerate(_features(data, name)):
        where = f"{name}: feature {i}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            raise ValueError(f"{where} is not a GeoJSON Feature")
        geom = feat.get("geometry")
        kind = geom.get("type") if isinstance(geom, dict) else None
        if kind in _SKIPPED_TYPES:
            skipped += 1
            continue
        if kind not in _AREA_TYPES:
            raise ValueError(
                f"{where} has geometry type {kind!r}: annotations are Polygon or MultiPolygon"
            )
        props = feat.get("properties") if isinstance(feat.get("properties"), dict) else {}
        otype = str(props.get("objectType") or _LEGACY_TYPES.get(feat.get("id"), "annotation"))
        if object_types is not None and otype not in object_types:
            continue
        try:
            geoms.append(shape(geom))
        except Exception as err:
            raise ValueError(f"{where}: malformed {kind} coordinates ({err})") from None
        labels.append(_classification(props, where))
        types.append(otype)
    arr = np.asarray(geoms, dtype=object)
    coords, owner = shapely.get_coordinates(arr, return_index=True)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: feature {owner[bad][0]}'s coordinates are not finite numbers")
    invalid = ~shapely.is_valid(arr)
    arr[invalid] = shapely.make_valid(arr[invalid])
    polygons: list[Any] = []
    part_labels: list[tuple[str, Any, Any]] = []
    part_types: list[str] = []
    for geo, label, otype in zip(arr, labels, types, strict=True):
        parts = _polygons(geo)
        polygons += parts
        part_labels += [label] * len(parts)
        part_types += [otype] * len(parts)
    return polygons, part_labels, part_types, skipped


def _polygons(geo: Any) -> list[Any]:
    """The polygonal parts of a geometry, empty ones dropped."""
    if geo.geom_type == "Polygon":
        return [] if geo.is_empty else [geo]
    return [p for part in getattr(geo, "geoms", []) for p in _polygons(part)]


def _classification(props: dict[str, Any], where: str) -> tuple[str, Any, Any]:
    cls = props.get("classification")
    color: Any = None
    if isinstance(cls, dict):
        names = cls.get("names")
        label = cls.get("name") or (": ".join(map(str, names)) if isinstance(names, list) else None)
        color = cls.get("color", cls.get("colorRGB"))
    else:
        label = cls if isinstance(cls, str) else None
    if isinstance(color, int) and not isinstance(color, bool):  # packed (A)RGB
        color = [(color >> 16) & 255, (color >> 8) & 255, color & 255]
    if color is not None and not (
        isinstance(color, list) and len(color) >= 3 and all(isinstance(v, int) for v in color)
    ):
        raise ValueError(f"{where}: classification colour {color!r} is not [r, g, b]")
    rgb = tuple(int(v) for v in color[:3]) if color is not None else None
    return str(label) if label else UNCLASSIFIED, rgb, props.get("label")


def _classes(labels: list[tuple[str, Any, Any]]) -> tuple[list[AnnotationClass], np.ndarray]:
    """Class values: napari-medcam's own ``label`` when the file carries one per class
    consistently (its exports round-trip), else 1, 2, ... in order of first appearance."""
    order: dict[str, Any] = {}
    for name, rgb, _ in labels:
        order.setdefault(name, rgb)
    own = {name: lab for name, _, lab in labels}
    consistent = all(
        isinstance(lab, int) and not isinstance(lab, bool) and 0 < lab < 2**31 and own[n] == lab
        for n, _, lab in labels
    ) and len(set(own.values())) == len(own)
    value = own if consistent else {name: i + 1 for i, name in enumerate(order)}
    classes = sorted(
        (
            AnnotationClass(value[n], n, rgb or tuple(class_rgb(value[n] - 1)))
            for n, rgb in order.items()
        ),
        key=lambda c: c.value,
    )
    return classes, np.asarray([value[n] for n, _, _ in labels], np.int64)


def _fit(polys: np.ndarray, slide_shape: Sequence[int] | None, name: str) -> tuple[int, int]:
    """The level-0 (H, W) the polygons lie in; ValueError when they leave the slide."""
    import shapely

    x0, y0, x1, y1 = (float(v) for v in shapely.total_bounds(polys))
    if x0 < -FIT_TOLERANCE or y0 < -FIT_TOLERANCE:
        raise ValueError(
            f"{name} does not fit the slide: its polygons reach x={x0:.0f}, y={y0:.0f}, "
            "left of or above the slide (QuPath exports level-0 pixels from the top-left)"
        )
    if slide_shape is None:
        return math.ceil(y1), math.ceil(x1)
    h, w = (int(v) for v in tuple(slide_shape)[:2])
    if x1 > w + FIT_TOLERANCE or y1 > h + FIT_TOLERANCE:
        raise ValueError(
            f"{name} does not fit the slide: its polygons reach x={x1:.0f}, y={y1:.0f} but "
            f"the slide is {w} × {h} level-0 pixels (W × H); were they drawn on another slide?"
        )
    return h, w
