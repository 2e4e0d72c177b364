"""napari-medcam: Med-CAM minimal-evidence explanations for image classifiers.

The public API; napari itself is only imported by the plugin layer.
"""

from napari_medcam._version import __version__
from napari_medcam.classifiers import Classifier, demo_classifier, load_classifier
from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.data import synthetic_tile
from napari_medcam.engine import (
    Explanation,
    ExplanationCancelled,
    MedCAMConfig,
    ProgressEvent,
    explain,
    iter_explain,
)
from napari_medcam.engine.amortised import Explainer, fit_explainer, load_explainer
from napari_medcam.io import (
    compare,
    open_slide,
    read_annotations,
    read_image,
    read_tiles,
    write_mask,
)

__all__ = [
    "Classifier",
    "Explanation",
    "Explainer",
    "ExplanationCancelled",
    "MedCAMConfig",
    "ProgressEvent",
    "SlideClassifier",
    "__version__",
    "compare",
    "demo_classifier",
    "explain",
    "fit_explainer",
    "iter_explain",
    "load_classifier",
    "load_explainer",
    "open_slide",
    "read_annotations",
    "read_image",
    "read_tiles",
    "synthetic_tile",
    "write_mask",
]
