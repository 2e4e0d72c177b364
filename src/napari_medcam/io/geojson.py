"""Masks as GeoJSON: polygons of their pixels, QuPath-importable FeatureCollections.

`mask_polygons` traces a (possibly lazy) 2-D mask, band by band, into polygons that
cover exactly its pixels; `mask_to_geojson` turns them into QuPath annotations in the
slide's level-0 pixel coordinates, one classification per class of a label mask.
`napari_medcam.io.images` writes the result atomically (`geojson_writer`,
`write_geojson`, `write_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medcam.io.jsonable import jsonable

#: QuPath class colour of Med-CAM evidence (the mask's cyan in napari), as QuPath reads it
QUPATH_COLOR = (0, 229, 255)
#: evidence colour per class (class index modulo the list), the same in napari and in
#: the GeoJSON: bright hues that stay visible on H&E pink/purple and on DAB brown
CLASS_COLORS = ("#00e5ff", "#39ff14", "#ff3df5", "#ffd400", "#ff7f0e", "#ffffff")


def class_rgb(index: int) -> list[int]:
    """Class ``index``'s evidence colour as QuPath's [r, g, b]."""
    hex_colour = CLASS_COLORS[int(index) % len(CLASS_COLORS)]
    return [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]


#: rows of a (lazy) mask read at a time when turning it into polygons
POLYGON_BAND = 512


def _pair(value: float | Sequence[float], what: str) -> tuple[float, float]:
    vals = [float(v) for v in np.atleast_1d(np.asarray(value, dtype=float))]
    if len(vals) == 1:
        vals = vals * 2
    pair = (vals[-2], vals[-1])
    if not all(np.isfinite(pair)):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return pair


def mask_polygons(mask: Any, band: int = POLYGON_BAND) -> Any:
    """The mask's pixels (> 0) as one shapely geometry in pixel-edge coordinates.

    Pixel (row r, column c) is the square [c, c+1] × [r, r+1] (x right, y down, as
    QuPath and most image tools count), so the polygons cover exactly the mask's
    pixels — no corner cut off, holes kept; regions touching only at a corner are
    separate polygons. ``mask`` may be lazy (zarr, dask): it is read ``band`` rows
    at a time. Runs of pixels in a row become boxes (a run repeated in the next rows
    one taller box), and the boxes are merged.
    """
    import shapely

    if len(mask.shape) != 2:
        raise ValueError(f"GeoJSON export needs a 2-D mask, got shape {tuple(mask.shape)}")
    height, width = (int(n) for n in mask.shape)
    boxes = []
    for r0 in range(0, height, band):
        rows = np.asarray(mask[r0 : min(r0 + band, height)]) > 0
        padded = np.zeros((rows.shape[0], width + 2), np.int8)
        padded[:, 1:-1] = rows
        step = np.diff(padded, axis=1)
        rr, c0 = np.nonzero(step == 1)  # row-major order: starts and ends pair up
        _, c1 = np.nonzero(step == -1)
        if not len(rr):
            continue
        rr = rr + r0
        order = np.lexsort((rr, c1, c0))
        rr, c0, c1 = rr[order], c0[order], c1[order]
        new = np.ones(len(rr), bool)  # a run starts a new box unless it continues one
        new[1:] = (c0[1:] != c0[:-1]) | (c1[1:] != c1[:-1]) | (rr[1:] != rr[:-1] + 1)
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(rr)) - 1
        boxes.append(shapely.box(c0[first], rr[first], c1[first], rr[last] + 1))
    if not boxes:
        return shapely.MultiPolygon()
    merged = shapely.union_all(np.concatenate(boxes))
    return shapely.simplify(merged, 0.0)  # drop the points where boxes met along an edge


def mask_to_geojson(
    mask: Any,
    properties: dict[str, Any] | None = None,
    downsample: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    classes: dict[int, str] | None = None,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Polygons of a 2-D mask's regions as a QuPath-importable FeatureCollection.

    One Feature (an annotation of class ``properties["class_name"]``, in the mask's
    cyan) per connected region, holes as inner rings. Coordinates are [x, y] in
    the slide's level-0 pixels: a mask of a region explained at a pyramid level
    with ``downsample`` (level-0 pixels per level pixel; one value, or (y, x)) whose
    first pixel lies at level-0 ``origin`` = (y0, x0) maps pixel edge (r, c) to
    x = x0 + c · downsample_x, y = y0 + r · downsample_y. The defaults (1, (0, 0))
    keep the mask's own pixel coordinates. ``area_pixels`` counts the region's pixels
    in the mask; ``area_level0_pixels`` the level-0 pixels they cover.

    ``classes`` ({label value: class name}) reads ``mask`` as a label image (several
    classes' evidence): each label's regions become Features classified by its name
    (a colour per class), with ``label`` in their properties.

    ``mpp`` (µm per level-0 pixel, when the slide records it) adds QuPath's
    ``measurements`` {"Area µm^2": ...}. `napari_medcam.io.annotations.read_annotations`
    reads the file back as the same mask, pixel for pixel (its rasterisation rule:
    a pixel is inside when its centre is, and these polygons follow pixel edges).
    """
    if classes:
        features = []
        for value, cls in sorted(classes.items()):
            props = {**(properties or {}), "class_name": cls, "label": int(value)}
            one = mask_to_geojson(_LabelView(mask, int(value)), props, downsample, origin, mpp=mpp)
            for feat in one["features"]:  # label value - 1 is the class index
                feat["properties"]["classification"]["color"] = class_rgb(int(value) - 1)
            features += one["features"]
        return {"type": "FeatureCollection", "features": features}
    import shapely
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    fy, fx = _pair(downsample, "downsample")
    if fy <= 0 or fx <= 0:
        raise ValueError(f"downsample must be positive, got {downsample!r}")
    oy, ox = _pair(origin, "origin")
    geom = mask_polygons(mask)
    polygons = list(getattr(geom, "geoms", [geom])) if not geom.is_empty else []
    props = dict(properties or {})
    name = str(props.get("class_name", "Med-CAM"))
    features = []
    for poly in sorted(polygons, key=lambda p: (p.bounds[1], p.bounds[0])):
        area = float(poly.area)
        placed = shapely.transform(orient(poly), lambda xy: xy * (fx, fy) + (ox, oy))
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(placed),
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": name, "color": list(QUPATH_COLOR)},
                    "area_pixels": int(round(area)),
                    "area_level0_pixels": area * fx * fy,
                    **jsonable(props),
                    **({"measurements": {"Area µm^2": area * fx * fy * mpp**2}} if mpp else {}),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


class _LabelView:
    """``mask == value``, read lazily row band by row band (for `mask_polygons`)."""

    def __init__(self, labels: Any, value: int) -> None:
        self.labels, self.value, self.shape = labels, value, labels.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.labels[key]) == self.value
