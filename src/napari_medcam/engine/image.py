"""Explaining one image with the per-image optimisation, tile by tile.

An image no larger than the classifier's input is resized to it, explained once
and the mask resized back. A larger one is cut into input-sized tiles overlapping
by ``tile_overlap`` pixels (the last row/column flush with the edge) and read tile
by tile, so lazy (dask, zarr) images are never loaded whole. Background tiles
(little tissue, see `napari_medcam.tiling`) are skipped; tiles the classifier
assigns to the target are explained ``tile_batch`` at a time — one classifier
batch per step, each tile with its own U-Net — and their soft masks are stitched
by their maximum in the overlaps and thresholded once: the mask is the union of the
tiles' masks, each tile's regions whole. Each explained tile gets a verdict
(`napari_medcam.engine.verdict`) before it is stitched: an invalid tile adds nothing
and its whole window is cleared after stitching — a valid neighbour's evidence in
the overlap included — so the mask shown holds only evidence that passed the checks
(an untiled image keeps its one mask, valid or not, with the reason in ``status``).
Past `napari_medcam.tiling.IN_MEMORY_PIXELS`
the stitched masks are chunked zarr arrays on disk, not NumPy arrays, so memory is
bounded by the tile batch and a few chunks, not by the image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import prepare_input, resize, resolve_device
from napari_medcam.engine.absence import choose_absence
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent
from napari_medcam.engine.optimise import optimise_masks, to_numpy_mask
from napari_medcam.engine.scoring import evaluate_mask
from napari_medcam.engine.summary import summarise
from napari_medcam.engine.tile_result import Scores, TileResult
from napari_medcam.engine.tiles import Tiles, select_tiles
from napari_medcam.engine.verdict import tile_verdict
from napari_medcam.tiling import Stitcher

#: how to turn a file into the array the engine takes
READ_HINT = "read files with napari_medcam.io.read_image(path)"


def _explain_batch(
    x: torch.Tensor,
    classifier: Classifier,
    target: int | None,
    config: MedCAMConfig,
    done: int,
    total: int,
    tissue: torch.Tensor | None = None,
) -> Generator[ProgressEvent, None, list[TileResult]]:
    """Explain a batch of classifier inputs; one `TileResult` per input.

    ``tissue`` (T, C, *input_size), normalised: counterfactual tissue for the absence.
    """
    with torch.no_grad():
        probs = torch.softmax(classifier.module(x), 1)
    facts = []
    for i in range(len(x)):
        t = int(probs[i].argmax()) if target is None else target
        absence = choose_absence(x[i : i + 1], classifier, t, config, tissue)
        facts.append(TileResult.before_mask(t, probs[i].tolist(), absence))
    todo = [i for i, f in enumerate(facts) if not f.problem]
    cfg = config
    for attempt in range(config.retries + 1):
        if not todo:
            break
        results = yield from optimise_masks(
            x[todo],
            classifier,
            [facts[i].target for i in todo],
            cfg,
            [facts[i].absence for i in todo],
            tile=done,
            tiles=total,
        )
        for i, res in zip(todo, results):
            f = facts[i]
            f.steps += res.steps
            better = res.found_valid and (
                not f.found_valid or float(res.hard.mean()) < float(f.hard.mean())
            )
            if attempt == 0 or better:  # a new start never replaces a better mask
                f.soft, f.hard, f.history = res.soft, res.hard, res.history
                f.found_valid, f.regions = res.found_valid, res.regions
        # what still failed (no valid mask, or one that never shrank) gets a new
        # start: another seed and a stronger Grad-CAM prior
        todo = [
            i
            for i, res in zip(todo, results)
            if not res.found_valid or float(res.hard.mean()) > config.retry_area
        ]
        cfg = cfg.replace(seed=cfg.seed + 1009, prior_strength=2 * cfg.prior_strength)
    for i, f in enumerate(facts):
        if f.problem:
            f.soft = f.hard = torch.zeros((1, 1, *x.shape[2:]), device=x.device)
        f.scores = Scores.of(
            evaluate_mask(x[i : i + 1], f.hard, classifier, f.target, f.absence, config)
        )
        f.area = float(f.hard.mean())
    return facts


def iter_explain_image(
    image: Any,
    classifier: Classifier,
    target: int | str | None,
    config: MedCAMConfig,
    *,
    device: str | torch.device,
    tile_overlap: int | None,
    tile_batch: int,
    skip_glass: bool,
    absence_tiles: Any,
) -> Generator[ProgressEvent, None, Explanation]:
    """Explain ``image`` with the per-image optimisation (module docstring).

    `napari_medcam.engine.explain.iter_explain`'s work once it has checked
    ``config`` and chosen ``tile_batch``; the other arguments are its own.
    """
    target_idx = classifier.class_index(target)
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    dev = resolve_device(device)
    tiles = Tiles(image, classifier, dev, tile_overlap)
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be ≥ 1, got {tile_batch}")
    user_tissue = absence_tensor(absence_tiles, classifier)
    start = time.perf_counter()
    classifier.to(dev)

    own_tissue = None
    if tiles.tiled:
        selection = yield from select_tiles(tiles, classifier, target_idx, tile_batch, skip_glass)
        selected, mean_probs, target_idx, own_tissue, tile_classes = selection
    else:
        selected, mean_probs, tile_classes = [0], None, []
    parts = [t.to(dev) for t in (user_tissue, own_tissue) if t is not None]
    tissue = torch.cat(parts) if parts else None
    stitcher = Stitcher(tiles.spatial, mode="max")  # keeps each tile's regions whole
    per_tile: list[TileResult] = []
    failed: list[tuple[slice, ...]] = []  # windows of invalid tiles: no evidence shown there
    try:
        for chunk, x in tiles.batches(selected, tile_batch):
            facts = yield from _explain_batch(
                x, classifier, target_idx, config, len(per_tile), len(selected), tissue
            )
            for i, f in zip(chunk, facts):
                f.window = window = tiles.windows[i]
                f.reason = tile_verdict(f, config, classifier.class_names[f.target])
                if f.reason and tiles.tiled:
                    failed.append(window)
                else:
                    shape = tuple(s.stop - s.start for s in window)
                    stitcher.add(window, to_numpy_mask(resize(f.soft, shape)))
                if tiles.tiled:  # only the facts stay: memory must not grow with the slide
                    f.drop_tensors()
                per_tile.append(f)
            target_idx = per_tile[0].target
        mask, soft, area = stitcher.result(config.threshold)
        area = _clear(failed, mask, soft, area)
    finally:  # cancelled (closed) or failed: no half-stitched files are left behind
        stitcher.close()
    if not tiles.tiled and per_tile:  # one tile: the optimised binary mask, exactly
        shape = tiles.spatial
        mask = to_numpy_mask(resize(per_tile[0].hard, shape, smooth=False)) > 0.5
        area = float(mask.mean())
    name = classifier.class_names[target_idx] if target_idx is not None else "?"
    return summarise(
        per_tile,
        mask,
        soft,
        area,
        classifier,
        config,
        target_idx,
        name,
        mean_probs,
        time.perf_counter() - start,
        len(tiles.windows),
        dev,
        tile_classes,
    )


def _clear(windows: list[tuple[slice, ...]], mask: Any, soft: Any, area: float) -> float:
    """Clear the windows of invalid tiles in the stitched masks; return the new area.

    A valid neighbour's evidence in the overlap goes too: no pixel a failed tile
    covers is shown as evidence. Works window by window (NumPy or zarr).
    """
    total = float(np.prod(mask.shape))
    for window in windows:  # cleared one after another: no pixel is subtracted twice
        area -= np.count_nonzero(np.asarray(mask[window])) / total
        mask[window] = False
        soft[window] = 0.0
    return max(area, 0.0)


def check_array(image: Any, what: str, hint: str) -> None:
    """Refuse a path or another non-array by name: as an array it would be 0-d, and
    refused as "empty" — a message that hides the mistake."""
    if isinstance(image, (str, bytes, os.PathLike)):
        raise ValueError(f"{what} must be an array, not a path ({image!s}); {hint}")
    if not hasattr(image, "shape") and not isinstance(image, (list, tuple)):
        raise ValueError(
            f"{what} must be an array (NumPy, dask or zarr), got {type(image).__name__}"
        )


def absence_tensor(tiles: Any, classifier: Classifier) -> torch.Tensor | None:
    """User-supplied absence tiles as one normalised (T, C, *input_size) tensor."""
    if tiles is None:
        return None
    if isinstance(tiles, (str, bytes, os.PathLike)) or not isinstance(tiles, Iterable):
        raise ValueError(
            "absence_tiles must be images (a sequence or an N×H×W[×C] array), "
            f"got {type(tiles).__name__}"
        )
    items = list(tiles)
    for i, tile in enumerate(items):
        check_array(tile, f"absence_tiles[{i}]", READ_HINT)
    if not items:
        return None
    try:
        return torch.cat([prepare_input(np.asarray(t), classifier) for t in items])
    except ValueError as err:
        raise ValueError(f"absence_tiles: {err}") from err
