"""Synthetic data with known evidence, for tests, demos and training the demo models."""

from napari_medcam.data.synthetic import synthetic_tile
from napari_medcam.data.volumes import synthetic_volume

__all__ = ["synthetic_tile", "synthetic_volume"]
