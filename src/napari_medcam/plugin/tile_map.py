"""The tile map of a tiled run: which tiles held, which failed, what the rest is.

The values and colours of the Labels layer placed under a result's mask
(`napari_medcam.plugin.results`), used too for a cohort slide's tiles
(`napari_medcam.plugin.cohort`) and in the widget's legend
(`napari_medcam.plugin.panels.summary`): valid tiles green, failed tiles orange,
tissue the classifier calls another class grey-blue (hovering names its class).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: outline thickness (data pixels) of the tile map's valid and failed areas
TILE_OUTLINE = 3
#: the tile map of a tiled run: valid tiles green, invalid (failed) tiles orange, and
#: tissue the classifier calls another class grey-blue (value TILE_OTHER + its class
#: index, so hovering a tile names its class)
TILE_VALID, TILE_INVALID, TILE_OTHER = 1, 2, 3
OTHER_COLOR = "#8fa9c4"
TILE_COLORS = {0: "transparent", 1: "#5cb85c", 2: "#f0ad4e", None: OTHER_COLOR}


def tile_map_too_large(exp: Any) -> bool:
    """Whether a tiled 2-D result gets no tile map because its mask is too large."""
    from napari_medcam.tiling import IN_MEMORY_PIXELS

    shape = tuple(getattr(exp.mask, "shape", ()))
    tiled = exp.tiles > 1 and bool(exp.tile_verdicts) and len(shape) == 2
    return tiled and int(np.prod(shape)) > IN_MEMORY_PIXELS


def tile_map(exp: Any) -> np.ndarray | None:
    """The tiles of a tiled 2-D result, over the mask's shape: 1 explained and valid,
    2 explained and failed, `TILE_OTHER` + k tissue the classifier calls class k.

    Failed tiles are painted last, so a failed tile's whole window shows even where
    it overlaps valid neighbours. None unless a 2-D image was tiled (and has tile
    verdicts), or when the mask is too large to hold a second copy in memory.
    """
    from napari_medcam.tiling import IN_MEMORY_PIXELS

    verdicts = exp.tile_verdicts or []
    shape = tuple(getattr(exp.mask, "shape", ()))
    if exp.tiles <= 1 or not verdicts or len(shape) != 2:
        return None
    if any(len(v["window"]) != 4 for v in verdicts) or int(np.prod(shape)) > IN_MEMORY_PIXELS:
        return None
    names = list(exp.provenance.get("classes") or [])
    out = np.zeros(shape, np.uint8)
    for c in exp.tile_classes:
        if c["class"] != exp.class_name and c["class"] in names:
            y0, x0, y1, x1 = (int(v) for v in c["window"])
            out[y0:y1, x0:x1] = TILE_OTHER + names.index(c["class"])
    for value, wanted in ((TILE_VALID, True), (TILE_INVALID, False)):
        for v in verdicts:
            if bool(v["valid"]) == wanted:
                y0, x0, y1, x1 = (int(c) for c in v["window"])
                out[y0:y1, x0:x1] = value
    return out


def tile_features(exp: Any) -> dict[str, list[Any]]:
    """What each tile-map value means, shown by napari when the pointer is over a tile."""
    names = list(exp.provenance.get("classes") or [])
    meaning = ["", f"'{exp.class_name}': evidence held", f"'{exp.class_name}': failed its check"]
    meaning += [f"classified '{n}' (not explained)" for n in names]
    return {"index": list(range(len(meaning))), "tile": meaning}
