"""Sample data for napari's File ▸ Open Sample menu (offline, no downloads)."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]

#: image metadata naming the classifier a sample was made for (the widget takes it
#: when none is chosen; a user's own image gets none by default)
SAMPLE_KEY = "medcam_sample"


def synthetic_tile_sample() -> list[LayerData]:
    """A synthetic H&E-like 'lesion' tile and, as Labels, the evidence planted in it."""
    from napari_medcam import synthetic_tile

    image, evidence = synthetic_tile(seed=0, label=1)
    return [
        (
            image,
            {
                "name": "synthetic tile",
                "rgb": True,
                "metadata": {SAMPLE_KEY: {"classifier": "demo"}},
            },
            "image",
        ),
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
    """scikit-image's immunohistochemistry image (512×512 RGB, DAB-brown nuclei), with
    the classifier trained on its left half ('ihc-dab') as its suggestion."""
    from skimage import data

    meta = {"name": "immunohistochemistry", "rgb": True}
    meta["metadata"] = {SAMPLE_KEY: {"classifier": "ihc-dab"}}
    return [(data.immunohistochemistry(), meta, "image")]
