"""Sample data for napari's File ▸ Open Sample menu (offline, no downloads)."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]


def synthetic_tile_sample() -> list[LayerData]:
    """A synthetic H&E-like 'lesion' tile and, as Labels, the evidence planted in it."""
    from napari_medcam import synthetic_tile

    image, evidence = synthetic_tile(seed=0, label=1)
    return [
        (image, {"name": "synthetic tile", "rgb": True}, "image"),
        (
            evidence.astype(np.uint8),
            {
                "name": "true evidence",
                "opacity": 0.4,
                "metadata": {"description": "planted lesion (ground truth)"},
            },
            "labels",
        ),
    ]


def ihc_sample() -> list[LayerData]:
    """scikit-image's immunohistochemistry image (512×512 RGB, DAB-brown nuclei)."""
    from skimage import data

    return [(data.immunohistochemistry(), {"name": "immunohistochemistry", "rgb": True}, "image")]
