"""`explain` and `iter_explain`: the public entry points of the engine.

They check what they are given and hand the work on: a volume with a 2-D classifier
(``slice_axis``) slice by slice to `napari_medcam.engine.volumes`, any other image to
`napari_medcam.engine.single` (a fitted explainer's one pass, or the per-image
optimisation, tile by tile).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import (
    Explanation,
    ExplanationCancelled,
    ProgressEvent,
    drive,
)
from napari_medcam.engine.image import check_array
from napari_medcam.engine.mil.explain import iter_explain_slide
from napari_medcam.engine.mil.result import SlideExplanation
from napari_medcam.engine.renamed import renamed_keywords
from napari_medcam.engine.single import check_overlap, iter_explain_one
from napari_medcam.engine.volumes import iter_explain_slices


@renamed_keywords("skip_background")
def iter_explain(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    device: str | torch.device = "auto",
    tile_overlap: int | None = None,
    tile_batch: int | None = None,
    skip_glass: bool = True,
    absence_tiles: Any = None,
    explainer: Any = None,
    refine: int = 0,
    slice_axis: int | None = None,
) -> Generator[ProgressEvent, None, Explanation]:
    """Explain ``image`` step by step: yields `ProgressEvent`s, returns the `Explanation`.

    ``image`` is a NumPy array or a lazy array (dask, zarr) of the same layout.
    ``slice_axis``: a volume (D×H×W[×C]) with a 2-D classifier, explained slice by slice
    along that spatial axis (`napari_medcam.engine.volumes`) into one D×H×W mask;
    its ``tile_verdicts`` are the slices'.
    ``absence_tiles``: images (a sequence, or an N×H×W[×C] array) of tissue without the
    finding, e.g. normal tiles; those the classifier calls something else than the
    target are candidates for what replaces the image outside the mask
    (`napari_medcam.engine.absence`). On a tiled image, up to `COUNTERFACTUAL_TILES`
    of its own tissue tiles classified as another class are candidates too.
    ``explainer`` (an `napari_medcam.engine.amortised.Explainer`, its file, or "demo"):
    one pass of a fitted explainer instead of per-image optimisation, every class found
    when ``target`` is None (`napari_medcam.engine.amortised.explain`); ``refine`` N
    holds every tile to the per-image goal: a mask that fails its verdict or misses the
    goal is optimised for ≤ N steps from it, one that meets it is pruned.
    ``tile_batch``: tiles per batch (default 4; 16 with an explainer). ``tile_overlap``:
    pixels shared by neighbouring tiles (default `napari_medcam.tiling.overlap_for`: 32,
    at most a quarter of the input — the widget counts tiles the same way).
    Stop iterating (or ``close()`` the generator) to cancel: no result is made.
    Raises ValueError for anything it cannot explain, before any work starts.
    """
    if isinstance(classifier, SlideClassifier):
        raise ValueError(
            "a SlideClassifier is explained by explain(slide, classifier, cache=..., "
            "absence=...) or napari_medcam.engine.mil.iter_explain_slide"
        )
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a napari_medcam.Classifier, got {type(classifier)}")
    check_array(image, "image", "to explain a file, read it with napari_medcam.io.read_image(path)")
    check_overlap(tile_overlap, classifier)
    if slice_axis is not None:
        stack = yield from iter_explain_slices(
            image,
            classifier,
            target,
            config,
            axis=slice_axis,
            device=device,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            skip_glass=skip_glass,
            absence_tiles=absence_tiles,
            explainer=explainer,
            refine=refine,
        )
        return stack.as_explanation()
    return (
        yield from iter_explain_one(
            image,
            classifier,
            target,
            config,
            device=device,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            skip_glass=skip_glass,
            absence_tiles=absence_tiles,
            explainer=explainer,
            refine=refine,
        )
    )


@renamed_keywords("skip_background")
def explain(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    **options: Any,
) -> Explanation | SlideExplanation:
    """Explain ``image``'s classification with Med-CAM (see `iter_explain`).

    ``progress`` is called with every `ProgressEvent`; ``cancel`` (an Event or a
    callable) is checked at every step and raises `ExplanationCancelled` when set.
    ``options`` are `iter_explain`'s (device, slice_axis, explainer, refine,
    absence_tiles, tile_overlap, tile_batch, skip_glass).

    With a `napari_medcam.SlideClassifier` (a multiple-instance classifier of whole
    slides) it returns a `napari_medcam.engine.mil.SlideExplanation`: the smallest set
    of tiles that alone keeps the slide's decision; ``options`` are then
    `napari_medcam.engine.mil.iter_explain_slide`'s (cache, absence, absence_embeddings,
    device, tile_overlap, tile_batch, skip_glass).
    """
    if isinstance(classifier, SlideClassifier):
        slide = iter_explain_slide(image, classifier, target, config, **options)
        return drive(slide, progress, cancel, ExplanationCancelled)
    gen = iter_explain(image, classifier, target, config, **options)
    return drive(gen, progress, cancel, ExplanationCancelled)
