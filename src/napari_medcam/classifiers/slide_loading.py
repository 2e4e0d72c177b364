"""`load_slide_classifier`: slide (MIL) classifiers from factories and registered names.

As for tile classifiers (`napari_medcam.classifiers.loading`): a name registered by an
installed package (entry-point group ``napari_medcam.slide_classifiers``, each a
function returning a `SlideClassifier`), or ``package.module:factory``. A factory the
user names runs code, by design.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from napari_medcam.classifiers.slide import SlideClassifier

ENTRY_POINT_GROUP = "napari_medcam.slide_classifiers"


def registered_slide_classifiers() -> dict[str, Any]:
    """Slide classifiers registered by installed packages, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_slide_classifier(spec: str) -> SlideClassifier:
    """A registered name, or ``package.module:factory`` returning a `SlideClassifier`."""
    registry = registered_slide_classifiers()
    if spec in registry:
        made, origin = registry[spec].load()(), f"registered slide classifier {spec!r}"
    elif ":" in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import factory {spec!r}: {err}") from err
        made, origin = factory(), f"factory {spec!r}"
    else:
        known = ", ".join(sorted(registry)) or "none"
        raise ValueError(
            f"unknown slide classifier {spec!r}: not a registered name ({known}) or a "
            "'package.module:factory' spec returning a napari_medcam.SlideClassifier"
        )
    if not isinstance(made, SlideClassifier):
        raise ValueError(f"{origin} returned {type(made).__name__}, not a SlideClassifier")
    return made
