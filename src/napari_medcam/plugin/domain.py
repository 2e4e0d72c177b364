"""Is the image like the classifier's training data? The card's check, on the region.

Judged on the pixels Explain would explain (a slide's region at its level, read crop
by crop, never whole), and remembered per image, region and classifier so that the
form can ask on every change.
"""

from __future__ import annotations

import logging
from typing import Any

from napari_medcam.classifiers.card import DomainCheck, card_of, check_domain
from napari_medcam.plugin.layers import region_pixels
from napari_medcam.plugin.region import Region

logger = logging.getLogger(__name__)

_CACHE: dict[tuple[Any, ...], DomainCheck | None] = {}
_CACHE_SIZE = 16


def domain_of(classifier: Any, layer: Any, region: Region) -> DomainCheck | None:
    """The card's verdict on ``region`` of ``layer``; None when it cannot be told
    (no card or no statistics, a volume classifier, nothing to explain)."""
    if classifier is None or layer is None or not region.ok or classifier.spatial_dims != 2:
        return None
    if region.slice_axis is not None:  # every slice: judge the displayed one's stack
        return None
    key = (id(classifier), id(layer), str(region.key), region.level, region.layer_shape)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        try:
            _CACHE[key] = check_domain(card_of(classifier), region_pixels(layer, region))
        except Exception:  # a check is advice: never stop a run over it
            logger.debug("domain check failed", exc_info=True)
            _CACHE[key] = None
    return _CACHE[key]
