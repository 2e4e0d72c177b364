"""A slide-level explanation on disk: the evidence tiles as GeoJSON, and its summary.

The kept tiles of a `napari_medcam.engine.mil.SlideExplanation` become one QuPath
annotation each (a square in the slide's level-0 pixels, classified as the decision they
keep), and the summary (the sentence, the probabilities, every kept window) a JSON file
beside it; both are written or neither (`napari_medcam.io.atomic.write_files`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_medcam.engine.mil.pixels import KeptTilePixels
from napari_medcam.engine.mil.result import SlideExplanation
from napari_medcam.io.atomic import write_files
from napari_medcam.io.geojson import class_rgb, mask_to_geojson
from napari_medcam.io.jsonable import jsonable


def evidence_tiles_geojson(
    result: SlideExplanation,
    downsample: float = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    mpp: float | None = None,
) -> dict[str, Any]:
    """The kept tiles as a FeatureCollection in level-0 pixels: a tile window (y0, x0,
    y1, x1) at a level with ``downsample``, whose array starts at level-0 ``origin``
    (y, x), covers x0·f + ox … x1·f + ox."""
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, got {downsample!r}")
    oy, ox = (float(v) for v in origin)
    f = float(downsample)
    weights = result.attention
    features = []
    for i in sorted(range(result.n_tiles), key=lambda i: tuple(result.windows[i][:2])):
        if not result.kept[i]:
            continue
        y0, x0, y1, x1 = (float(v) for v in result.windows[i])
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        ring = [[x * f + ox, y * f + oy] for x, y in ring]
        area = (x1 - x0) * (y1 - y0) * f * f
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": result.target_name, "color": class_rgb(result.target)},
            "tile": [int(v) for v in result.grid[i]],
            "area_level0_pixels": area,
        }
        if weights is not None:
            props["attention"] = float(weights[i])
        if mpp:
            props["measurements"] = {"Area µm^2": area * mpp**2}
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def pixel_evidence_features(
    result: SlideExplanation,
    pixels: Sequence[KeptTilePixels],
    downsample: float = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    mpp: float | None = None,
) -> list[dict[str, Any]]:
    """The pixel evidence inside each kept tile as QuPath annotations (one per region,
    level-0 pixels, classified "<class> (pixels)"), placed as the tiles are."""
    oy, ox = (float(v) for v in origin)
    f = float(downsample)
    features: list[dict[str, Any]] = []
    for px in pixels:
        y0, x0 = px.window[:2]
        props = {
            "class_name": f"{result.target_name} (pixels)",
            "tile": [int(v) for v in result.grid[px.index]],
            "evidence": "pixels",
        }
        one = mask_to_geojson(px.explanation.mask, props, f, (oy + y0 * f, ox + x0 * f), mpp=mpp)
        for feat in one["features"]:
            feat["properties"]["classification"]["color"] = class_rgb(result.target)
        features += one["features"]
    return features


def pixel_summary(pixels: Sequence[KeptTilePixels]) -> list[dict[str, Any]]:
    """What is true of each kept tile's pixel evidence, for the summary."""
    return [
        {
            "tile_index": px.index,
            "window": list(px.window),
            "area_fraction": float(px.explanation.area_fraction),
            "regions": px.explanation.regions,
            "valid": bool(px.explanation.valid),
            "p_tile_masked": float(px.explanation.masked_confidence),
            "p_tile_whole": float(px.explanation.original_confidence),
            "result": px.explanation.one_line(),
        }
        for px in pixels
    ]


def write_slide_evidence(
    path: str | Path,
    result: SlideExplanation,
    summary: dict[str, Any] | None = None,
    *,
    downsample: float = 1.0,
    origin: Sequence[float] = (0.0, 0.0),
    mpp: float | None = None,
    overwrite: bool = False,
    pixels: Sequence[KeptTilePixels] | None = None,
) -> list[Path]:
    """Write the evidence tiles' GeoJSON at ``path`` and the summary beside it (.json);
    with ``pixels``, each kept tile's pixel evidence too (features and summary)."""
    path = Path(path)
    collection = evidence_tiles_geojson(result, downsample, origin, mpp)
    facts = {**result.to_dict(), **(summary or {})}
    if pixels is not None:
        collection["features"] += pixel_evidence_features(result, pixels, downsample, origin, mpp)
        facts["pixels"] = pixel_summary(pixels)
    geo = json.dumps(jsonable(collection))
    text = json.dumps(jsonable(facts), indent=1)
    return write_files(
        {
            path: lambda tmp: tmp.write_text(geo),
            path.with_suffix(".json"): lambda tmp: tmp.write_text(text),
        },
        overwrite,
    )
