"""Reader contributions: slides (scanner formats, pyramidal and OME-TIFF, a DICOM WSI
folder) as a lazy multiscale image layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_medcam.io.slide_backends import is_dicom_folder
from napari_medcam.io.slides import SLIDE_SUFFIXES, open_slide, opens_lazily


def get_slide_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Claim single slides; leave small flat TIFFs to napari's default reader."""
    if isinstance(path, list) or not str(path).lower().endswith(SLIDE_SUFFIXES):
        return None
    return read_slide if opens_lazily(path) else None


def get_dicom_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Claim a folder holding a DICOM WSI (one file per level)."""
    if isinstance(path, list) or not is_dicom_folder(Path(path)):
        return None
    return read_slide


def read_slide(path: str) -> list[tuple[Any, dict[str, Any], str]]:
    """Every level lazily (tile by tile): napari reads only the tiles it displays. The
    level metadata (µm/px, magnification, downsamples) is the file's own."""
    slide = open_slide(path)
    meta = {
        "name": Path(path).name,
        "multiscale": True,
        "rgb": slide.rgb,
        "metadata": {
            "path": str(path),
            "format": slide.vendor,
            "downsamples": slide.downsamples,
            "mpp": slide.mpp,
            "level_mpp": slide.level_mpp,
            "magnification": slide.magnification,
        },
    }
    return [(slide.levels, meta, "image")]
