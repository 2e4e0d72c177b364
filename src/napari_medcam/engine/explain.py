"""`explain` and `iter_explain`: the public entry points of the engine.

An image no larger than the classifier's input is resized to it, explained once
and the mask resized back. A larger one is cut into input-sized tiles overlapping
by ``tile_overlap`` pixels (the last row/column flush with the edge) and read tile
by tile, so lazy (dask, zarr) images are never loaded whole. Background tiles
(little tissue, see `napari_medcam.tiling`) are skipped; tiles the classifier
assigns to the target are explained ``tile_batch`` at a time — one classifier
batch per step, each tile with its own U-Net — and their soft masks are blended
in the overlaps and thresholded once. Each explained tile gets a verdict
(`napari_medcam.engine.verdict`) before it is stitched: an invalid tile adds nothing
and its whole window is cleared after stitching — a valid neighbour's evidence in
the overlap included — so the mask shown holds only evidence that passed the checks
(an untiled image keeps its one mask, valid or not, with the reason in ``status``).
Past `napari_medcam.tiling.IN_MEMORY_PIXELS`
the stitched masks are chunked zarr arrays on disk, not NumPy arrays, so memory is
bounded by the tile batch and a few chunks, not by the image.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from napari_medcam._version import __version__
from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.absence import choose_absence
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import (
    Explanation,
    ExplanationCancelled,
    ProgressEvent,
    drive,
)
from napari_medcam.engine.optimise import optimise_masks, to_numpy_mask
from napari_medcam.engine.prepare import prepare_input, resize, resolve_device
from napari_medcam.engine.scoring import evaluate_mask
from napari_medcam.engine.tiles import Tiles, select_tiles
from napari_medcam.engine.verdict import overall, tile_record, tile_verdict
from napari_medcam.tiling import Stitcher

# a tile's tensors, dropped once stitched (its facts — verdict, confidences — are kept)
_TILE_TENSORS = ("soft", "hard", "absence", "history")


def _check_config(config: MedCAMConfig | None) -> MedCAMConfig:
    if config is None:
        return MedCAMConfig.fast()
    if not isinstance(config, MedCAMConfig):
        raise ValueError(f"config must be a MedCAMConfig, got {type(config).__name__}")
    return config


def _explain_batch(
    x: torch.Tensor,
    classifier: Classifier,
    target: int | None,
    config: MedCAMConfig,
    done: int,
    total: int,
    tissue: torch.Tensor | None = None,
) -> Generator[ProgressEvent, None, list[dict[str, Any]]]:
    """Explain a batch of classifier inputs; one facts dict per input.

    ``tissue`` (T, C, *input_size), normalised: counterfactual tissue for the absence.
    """
    with torch.no_grad():
        probs = torch.softmax(classifier.module(x), 1)
    facts = []
    for i in range(len(x)):
        t = int(probs[i].argmax()) if target is None else target
        absence = choose_absence(x[i : i + 1], classifier, t, config, tissue)
        facts.append(
            {
                "target": t,
                "probabilities": probs[i].tolist(),
                "absence": absence,
                "baseline": absence.name,
                "absence_report": absence.candidates,
                "problem": absence.problem,
                "steps": 0,
                "history": [],
            }
        )
    todo = [i for i, f in enumerate(facts) if not f["problem"]]
    cfg = config
    for attempt in range(config.retries + 1):
        if not todo:
            break
        results = yield from optimise_masks(
            x[todo],
            classifier,
            [facts[i]["target"] for i in todo],
            cfg,
            [facts[i]["absence"] for i in todo],
            tile=done,
            tiles=total,
        )
        for i, res in zip(todo, results):
            f = facts[i]
            f["steps"] += res.steps
            better = res.found_valid and (
                not f.get("found_valid") or float(res.hard.mean()) < float(f["hard"].mean())
            )
            if attempt == 0 or better:  # a new start never replaces a better mask
                f.update(
                    soft=res.soft, hard=res.hard, history=res.history, found_valid=res.found_valid
                )
        # what still failed (no valid mask, or one that never shrank) gets a new
        # start: another seed and a stronger Grad-CAM prior
        todo = [
            i
            for i, res in zip(todo, results)
            if not res.found_valid or float(res.hard.mean()) > config.retry_area
        ]
        cfg = cfg.replace(seed=cfg.seed + 1009, prior_strength=2 * cfg.prior_strength)
    for i, f in enumerate(facts):
        if f["problem"]:
            f["soft"] = f["hard"] = torch.zeros((1, 1, *x.shape[2:]), device=x.device)
        f["eval"] = evaluate_mask(
            x[i : i + 1], f["hard"], classifier, f["target"], f["absence"], config
        )
        f["area"] = float(f["hard"].mean())
    return facts


def iter_explain(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    device: str | torch.device = "auto",
    tile_overlap: int | None = None,
    tile_batch: int | None = None,
    skip_background: bool = True,
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
    optimises the tiles whose amortised mask fails its verdict for ≤ N steps from it.
    ``tile_batch``: tiles per batch (default 4; 16 with an explainer). ``tile_overlap``:
    pixels shared by neighbouring tiles (default `napari_medcam.tiling.overlap_for`: 32,
    at most a quarter of the input — the widget counts tiles the same way).
    Stop iterating (or ``close()`` the generator) to cancel: no result is made.
    Raises ValueError for anything it cannot explain, before any work starts.
    """
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a napari_medcam.Classifier, got {type(classifier)}")
    if slice_axis is not None:
        from napari_medcam.engine.volumes import iter_explain_slices  # built on this module

        stack = yield from iter_explain_slices(
            image,
            classifier,
            target,
            config,
            axis=slice_axis,
            device=device,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            skip_background=skip_background,
            absence_tiles=absence_tiles,
            explainer=explainer,
            refine=refine,
        )
        return stack.as_explanation()
    if explainer is not None:
        from napari_medcam.engine.amortised.explain import iter_explain_amortised

        return (
            yield from iter_explain_amortised(
                image if hasattr(image, "shape") else np.asarray(image),
                classifier,
                explainer,
                classifier.class_index(target),
                None if config is None else _check_config(config),
                device=device,
                tile_overlap=tile_overlap,
                tile_batch=16 if tile_batch is None else tile_batch,
                skip_background=skip_background,
                refine=refine,
                tissue=_absence_tensor(absence_tiles, classifier),
            )
        )
    if refine:
        raise ValueError("refine needs an explainer (it repairs an amortised mask)")
    tile_batch = 4 if tile_batch is None else tile_batch
    config = _check_config(config)
    target_idx = classifier.class_index(target)
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    dev = resolve_device(device)
    tiles = Tiles(image, classifier, dev, tile_overlap)
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be ≥ 1, got {tile_batch}")
    user_tissue = _absence_tensor(absence_tiles, classifier)
    start = time.perf_counter()
    classifier.to(dev)

    own_tissue = None
    if tiles.tiled:
        selection = yield from select_tiles(
            tiles, classifier, target_idx, tile_batch, skip_background
        )
        selected, mean_probs, target_idx, own_tissue, tile_classes = selection
    else:
        selected, mean_probs, tile_classes = [0], None, []
    parts = [t.to(dev) for t in (user_tissue, own_tissue) if t is not None]
    tissue = torch.cat(parts) if parts else None
    stitcher = Stitcher(tiles.spatial)
    per_tile: list[dict[str, Any]] = []
    failed: list[tuple[slice, ...]] = []  # windows of invalid tiles: no evidence shown there
    try:
        for chunk, x in tiles.batches(selected, tile_batch):
            facts = yield from _explain_batch(
                x, classifier, target_idx, config, len(per_tile), len(selected), tissue
            )
            for i, f in zip(chunk, facts):
                window = tiles.windows[i]
                f["verdict"] = tile_verdict(f, config, classifier.class_names[f["target"]])
                f["record"] = tile_record(f, window, f["verdict"])
                if f["verdict"] and tiles.tiled:
                    failed.append(window)
                else:
                    shape = tuple(s.stop - s.start for s in window)
                    stitcher.add(window, to_numpy_mask(resize(f["soft"], shape)))
                if tiles.tiled:  # only the facts stay: memory must not grow with the slide
                    for key in _TILE_TENSORS:
                        f.pop(key, None)
                per_tile.append(f)
            target_idx = per_tile[0]["target"]
        mask, soft, area = stitcher.result(config.threshold)
        area = _clear(failed, mask, soft, area)
    finally:  # cancelled (closed) or failed: no half-stitched files are left behind
        stitcher.close()
    if not tiles.tiled and per_tile:  # one tile: the optimised binary mask, exactly
        shape = tiles.spatial
        mask = to_numpy_mask(resize(per_tile[0]["hard"], shape, smooth=False)) > 0.5
        area = float(mask.mean())
    name = classifier.class_names[target_idx] if target_idx is not None else "?"
    return _summarise(
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


def _absence_tensor(tiles: Any, classifier: Classifier) -> torch.Tensor | None:
    """User-supplied absence tiles as one normalised (T, C, *input_size) tensor."""
    if tiles is None:
        return None
    items = list(tiles)
    if not items:
        return None
    try:
        return torch.cat([prepare_input(np.asarray(t), classifier) for t in items])
    except ValueError as err:
        raise ValueError(f"absence_tiles: {err}") from err


def _summarise(
    per_tile: list[dict[str, Any]],
    mask: Any,
    soft: Any,
    area: float,
    classifier: Classifier,
    config: MedCAMConfig,
    target: int,
    name: str,
    mean_probs: list[float] | None,
    seconds: float,
    n_windows: int,
    dev: torch.device,
    tile_classes: list[dict[str, Any]] | None = None,
) -> Explanation:
    """The `Explanation` of what the user sees.

    ``valid`` when at least ``config.valid_share`` of the explained tiles are
    (`napari_medcam.engine.verdict`).
    On a tiled image the confidences (original, masked, robust, deletion) and the
    probabilities are means over the *valid* tiles only — the tiles whose evidence
    is in the mask — or over every explained tile when none is valid;
    ``area_fraction`` is the stitched mask's (invalid windows cleared);
    ``tile_verdicts`` has one entry per explained tile, ``tile_classes`` one per
    tissue tile (what the classifier calls it, explained or not).
    """
    provenance = {
        "package": "napari-medcam",
        "version": __version__,
        "classifier": classifier.name,
        "classes": classifier.class_names,
        "activation_layers": classifier.layers,
        "output_only_matching": not classifier.layers,
        "mask_resolution": f"{config.mask_scale:g} of the input"
        + (
            f", refined at full resolution (≤ {config.refine_steps} steps)"
            if config.refine_steps
            else ""
        )
        + (", pruned to the pixels the goal needs" if config.prune else ""),
        "goal": (
            f"keep ≥ {config.tolerance:g} of the original confidence"
            if config.tolerance is not None
            else "fixed loss weights"
        ),
        "device": str(dev),
        "torch": torch.__version__,
    }
    common = dict(
        mask=mask,
        soft_mask=soft,
        target=target,
        class_name=name,
        seconds=seconds,
        config=config.to_dict(),
        provenance=provenance,
        tiles=n_windows,
        tile_classes=tile_classes or [],
    )
    if per_tile:  # what "absence" meant (the first explained tile's candidates)
        provenance["absence_candidates"] = per_tile[0].get("absence_report", [])
    if not per_tile:  # tiled image where no tissue tile shows the target
        return Explanation.not_explained(
            **common,
            probabilities=mean_probs or [0.0] * classifier.num_classes,
            status=f"no tissue tile is classified '{name}'",
        )
    verdicts = [f["verdict"] for f in per_tile]
    if n_windows == 1:
        status = verdicts[0] or "valid"
    else:
        n_ok = sum(not v for v in verdicts)
        status = f"{n_ok} of {len(per_tile)} '{name}' tiles valid ({n_windows} tiles in all)"
        if n_ok < len(per_tile):
            status += "; first problem: " + next(v for v in verdicts if v)
    valid = overall([not v for v in verdicts], config.valid_share)
    if not classifier.layers:
        status += "; output-only matching (no hookable layers)"
    # what the user sees: on a tiled image only valid tiles are in the mask, so the
    # confidences are theirs (every explained tile's when none is valid)
    used = [f for f, v in zip(per_tile, verdicts) if not v] or per_tile

    def mean(values: list[Any]) -> Any:
        return np.mean(np.asarray(values, dtype=float), axis=0).tolist()

    return Explanation(
        **common,
        original_confidence=mean([f["probabilities"][target] for f in used]),
        masked_confidence=mean([f["eval"]["masked"] for f in used]),
        robust_confidence=mean([f["eval"]["robust"] for f in used]),
        deletion_confidence=mean([f["eval"]["deletion"] for f in used]),
        area_fraction=area,
        valid=valid,
        status=status,
        probabilities=mean([f["probabilities"] for f in used]),
        masked_probabilities=mean([f["eval"]["masked_probabilities"] for f in used]),
        baseline=",".join(dict.fromkeys(f["baseline"] for f in per_tile)),
        steps=int(sum(f["steps"] for f in per_tile)),
        history=per_tile[0]["history"] if n_windows == 1 else [],
        tile_verdicts=[f["record"] for f in per_tile],
    )


def explain(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``image``'s classification with Med-CAM (see `iter_explain`).

    ``progress`` is called with every `ProgressEvent`; ``cancel`` (an Event or a
    callable) is checked at every step and raises `ExplanationCancelled` when set.
    ``options`` are `iter_explain`'s (device, slice_axis, explainer, refine,
    absence_tiles, tile_overlap, tile_batch, skip_background).
    """
    gen = iter_explain(image, classifier, target, config, **options)
    return drive(gen, progress, cancel, ExplanationCancelled)
