"""Reader contribution: QuPath GeoJSON annotations as a lazy multiscale Labels layer.

One label value per class (names and colours in the layer's features and metadata), in
level-0 pixels like the slide's layer, so the two line up. Each level is rasterised one
chunk at a time as napari displays it (`Annotations.lazy`). Such a layer chosen under
Compare is scored from its file, per class, tile by tile (`annotation_rows`): a slide's
annotation layer is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io.agreement import ALL_CLASSES, ClassAgreement, compare
from napari_medcam.io.annotations import Annotations, looks_like_annotations, read_annotations

#: the coarsest level of the layer's pyramid is at most this many pixels a side
COARSEST_SIDE = 1024


def get_annotations_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Claim one ``.geojson``/``.json`` file that holds GeoJSON features; nothing else."""
    if isinstance(path, list) or not looks_like_annotations(path):
        return None
    return read_annotations_layer


def read_annotations_layer(path: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The annotations as Labels: levels at downsample 1, 2, 4, ... each lazy."""
    return [annotations_layer_data(read_annotations(path))]


def annotations_layer_data(ann: Annotations) -> tuple[Any, dict[str, Any], str]:
    """napari layer data of `Annotations`: (levels, keyword arguments, "labels")."""
    factors = [1]
    while max(ann.shape_at(factors[-1])) > COARSEST_SIDE:
        factors.append(factors[-1] * 2)
    levels = [ann.lazy(f) for f in factors]
    colors: dict[int | None, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    colors.update({c.value: tuple(v / 255 for v in c.color) + (1.0,) for c in ann.classes})
    name = ann.path.name if ann.path is not None else "annotations"
    kwargs = {
        "name": name,
        "multiscale": len(levels) > 1,
        "opacity": 0.5,
        "colormap": colors,
        "features": {
            "index": [0] + [c.value for c in ann.classes],
            "class": ["background"] + [c.name for c in ann.classes],
        },
        "metadata": {
            "path": str(ann.path) if ann.path is not None else None,
            "classes": {str(c.value): c.name for c in ann.classes},
            "polygons": len(ann),
            "skipped": ann.skipped,
        },
    }
    return (levels if len(levels) > 1 else levels[0], kwargs, "labels")


def annotation_path(layer: Any) -> Path | None:
    """The GeoJSON file a Labels layer was read from by this reader, else None."""
    meta = getattr(layer, "metadata", None) or {}
    path = meta.get("path")
    if "classes" not in meta or not path or not Path(path).is_file():
        return None
    return Path(path)


def annotation_rows(
    mask: Any,
    gradcam: np.ndarray | None,
    path: Path,
    downsample: tuple[float, ...],
    origin: tuple[float, ...],
) -> list[dict[str, Any]]:
    """Scores of the evidence (and of Grad-CAM at the same area) against the annotation
    file, tile by tile at the mask's level (`napari_medcam.io.compare`): one row per class
    when there are several, then all classes together — what `napari-medcam compare` says
    of the exported mask."""
    from napari_medcam.metrics import threshold_to_area

    ann = read_annotations(path)
    ours = compare(mask, ann, downsample=downsample, origin=origin)
    pixels = float(np.prod(ours.shape))
    area = ours.rows[-1].evidence / pixels
    rows = [r for r in ours.rows if len(ours.rows) > 2 or r.name == ALL_CLASSES]
    out = [_row("Med-CAM", r, area, len(rows) > 1) for r in rows]
    if gradcam is not None:
        top = threshold_to_area(gradcam, area)
        theirs = compare(top, ann, downsample=downsample, origin=origin)
        out.append(_row("Grad-CAM", theirs.rows[-1], theirs.rows[-1].evidence / pixels, False))
    return out


def _row(method: str, row: ClassAgreement, area: float, named: bool) -> dict[str, Any]:
    return {
        "method": f"{method} · {row.name}" if named else method,
        "class": row.name,
        "area_percent": 100 * area,
        "regions_touched": f"{row.touched}/{row.regions}",
        **row.scores(),
    }
