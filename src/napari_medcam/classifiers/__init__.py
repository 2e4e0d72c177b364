"""Classifiers to explain: the `Classifier` wrapper, loaders, registry and demo model."""

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.demo import demo_classifier
from napari_medcam.classifiers.loading import load_classifier, registered_classifiers
from napari_medcam.classifiers.tokens import ChannelsLast, TokenMap

__all__ = [
    "ChannelsLast",
    "Classifier",
    "TokenMap",
    "demo_classifier",
    "load_classifier",
    "registered_classifiers",
]
