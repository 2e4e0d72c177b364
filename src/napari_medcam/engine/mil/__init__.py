"""Slide-level (multiple-instance) decisions: the minimal tiles that keep them.

Arrays only, like the rest of the engine: the caller hands over the slide's array (or
a bag of embeddings); the embeddings may be cached in a zarr store at a path it gives.
"""

from napari_medcam.engine.mil.absence import MODES, REMOVAL, REPLACEMENT
from napari_medcam.engine.mil.cache import Bag
from napari_medcam.engine.mil.explain import (
    check_bag_tiles,
    check_tiles,
    explain_bag,
    iter_explain_slide,
)
from napari_medcam.engine.mil.pixels import KeptTilePixels, explain_kept_pixels, iter_kept_pixels
from napari_medcam.engine.mil.result import SlideExplanation

__all__ = [
    "MODES",
    "REMOVAL",
    "REPLACEMENT",
    "Bag",
    "KeptTilePixels",
    "SlideExplanation",
    "check_bag_tiles",
    "check_tiles",
    "explain_bag",
    "explain_kept_pixels",
    "iter_kept_pixels",
    "iter_explain_slide",
]
