"""Reader contribution: QuPath GeoJSON annotations as a lazy multiscale Labels layer.

One label value per class (names and colours in the layer's features and metadata), in
level-0 pixels like the slide's layer, so the two line up. Each level is rasterised one
chunk at a time as napari displays it (`Annotations.lazy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
