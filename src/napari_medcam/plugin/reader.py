"""Reader contribution: pyramidal TIFF / SVS / OME-TIFF as a lazy multiscale image layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_medcam.io.slides import SLIDE_SUFFIXES, is_pyramidal, open_slide


def get_slide_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Claim single pyramidal slides; leave plain TIFFs to napari's default reader."""
    if isinstance(path, list) or not str(path).lower().endswith(SLIDE_SUFFIXES):
        return None
    return read_slide if is_pyramidal(path) else None


def read_slide(path: str) -> list[tuple[Any, dict[str, Any], str]]:
    """Every level as a lazy zarr array: napari reads only the tiles it displays."""
    slide = open_slide(path)
    meta = {
        "name": Path(path).name,
        "multiscale": True,
        "rgb": slide.rgb,
        "metadata": {"path": str(path), "downsamples": slide.downsamples, "mpp": slide.mpp},
    }
    return [(slide.levels, meta, "image")]
