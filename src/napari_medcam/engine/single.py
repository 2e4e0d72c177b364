"""One image — a 2-D image, or a volume for a 3-D classifier — to its `Explanation`.

A fitted explainer explains it in one pass (`napari_medcam.engine.amortised.explain`),
anything else goes to the per-image optimisation, tile by tile
(`napari_medcam.engine.image`). `napari_medcam.engine.explain` routes here, and so does
`napari_medcam.engine.volumes` for each slice of a volume explained slice by slice.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.amortised.explain import iter_explain_amortised
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent
from napari_medcam.engine.image import absence_tensor, iter_explain_image


def checked_config(config: MedCAMConfig | None) -> MedCAMConfig:
    if config is None:
        return MedCAMConfig.fast()
    if not isinstance(config, MedCAMConfig):
        raise ValueError(f"config must be a MedCAMConfig, got {type(config).__name__}")
    return config


def check_overlap(overlap: Any, classifier: Classifier) -> None:
    """An overlap of at most half the input: beyond it the stride shrinks towards one
    pixel (a 4,096² image at overlap ≥ 224 would be millions of tiles)."""
    if overlap is None:
        return
    most = min(classifier.input_size) // 2
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)):
        raise ValueError(f"tile_overlap must be an integer number of pixels, got {overlap!r}")
    if not 0 <= overlap <= most:
        raise ValueError(
            f"tile_overlap must be from 0 to {most} pixels (half the classifier's input), "
            f"got {overlap}"
        )


def iter_explain_one(
    image: Any,
    classifier: Classifier,
    target: int | str | None,
    config: MedCAMConfig | None,
    *,
    device: str | torch.device = "auto",
    tile_overlap: int | None = None,
    tile_batch: int | None = None,
    skip_glass: bool = True,
    absence_tiles: Any = None,
    explainer: Any = None,
    refine: int = 0,
) -> Generator[ProgressEvent, None, Explanation]:
    """Explain one image (options as `napari_medcam.engine.explain.iter_explain`)."""
    if explainer is not None:
        return (
            yield from iter_explain_amortised(
                image if hasattr(image, "shape") else np.asarray(image),
                classifier,
                explainer,
                classifier.class_index(target),
                None if config is None else checked_config(config),
                device=device,
                tile_overlap=tile_overlap,
                tile_batch=16 if tile_batch is None else tile_batch,
                skip_glass=skip_glass,
                refine=refine,
                tissue=absence_tensor(absence_tiles, classifier),
            )
        )
    if refine:
        raise ValueError("refine needs an explainer (it repairs an amortised mask)")
    return (
        yield from iter_explain_image(
            image,
            classifier,
            target,
            checked_config(config),
            device=device,
            tile_overlap=tile_overlap,
            tile_batch=4 if tile_batch is None else tile_batch,
            skip_glass=skip_glass,
            absence_tiles=absence_tiles,
        )
    )
