"""The Med-CAM engine: pure torch + numpy, no napari, no Qt."""

from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explain import ExplanationCancelled, explain, iter_explain
from napari_medcam.engine.explanation import Explanation, ProgressEvent

__all__ = [
    "Explanation",
    "ExplanationCancelled",
    "MedCAMConfig",
    "ProgressEvent",
    "explain",
    "iter_explain",
]
