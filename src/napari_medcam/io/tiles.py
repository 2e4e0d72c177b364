"""Tiles from files: image folders, image files and tissue tiles sampled from slides.

What `napari-medcam fit` and `napari_medcam.fit_explainer` learn from; the engine itself
takes arrays only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import unit_tensor
from napari_medcam.io.images import IMAGE_SUFFIXES, read_image
from napari_medcam.io.slide_backends import is_dicom_folder
from napari_medcam.io.slides import SLIDE_SUFFIXES, is_pyramidal, open_slide
from napari_medcam.tiling import MIN_TISSUE_FRACTION, tile_grid, tissue_fraction


def _slide_tiles(path: Path, classifier: Classifier, level: int, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` tissue tiles of a slide at ``level``, evenly spread over it."""
    with open_slide(path) as slide:
        view, _, _ = slide.region(level)
        grid = tile_grid(view.shape[:2], classifier.input_size, 0)
        picks = np.linspace(0, len(grid) - 1, min(len(grid), 4 * limit)).round().astype(int)
        out = []
        for i in dict.fromkeys(picks.tolist()):
            tile = np.asarray(view[grid[i]])
            unit = unit_tensor(tile, classifier)[0].permute(1, 2, 0).numpy()
            if tissue_fraction(unit) >= MIN_TISSUE_FRACTION:
                out.append(tile)
            if len(out) >= limit:
                break
    return out


def read_tiles(
    sources: Any, classifier: Classifier, *, level: int = 0, per_slide: int = 256
) -> list[np.ndarray]:
    """Images from ``sources``: an iterable of arrays, folders of images, or slide files.

    Folders give every image in them (sorted); slides (``.svs``, pyramidal TIFF, a DICOM
    WSI's folder) give up to ``per_slide`` tissue tiles at ``level``; arrays are taken as
    they are.
    """
    if isinstance(sources, (str, Path, np.ndarray)):
        sources = [sources]
    out: list[np.ndarray] = []
    for src in sources:
        if not isinstance(src, (str, Path)):
            out.append(np.asarray(src))
            continue
        path = Path(src)
        if is_dicom_folder(path):  # a DICOM WSI is a folder of .dcm files: one slide
            out += _slide_tiles(path, classifier, level, per_slide)
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
            out += [read_image(f) for f in files]
        elif path.suffix.lower() in SLIDE_SUFFIXES and is_pyramidal(path):
            out += _slide_tiles(path, classifier, level, per_slide)
        elif path.is_file():
            out.append(read_image(path))
        else:
            raise FileNotFoundError(f"no such image, folder or slide: {path}")
    if not out:
        raise ValueError("no tiles to fit on")
    return out
