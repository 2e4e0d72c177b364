"""`explain` and `iter_explain`: the public entry points of the engine.

An image no larger than the classifier's input is resized to it, explained once
and the mask resized back. A larger one is cut into input-sized tiles (the last
row/column flush with the edge); each tile the classifier assigns to the target
is explained, the others get an empty mask, and the masks are stitched.
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
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent
from napari_medcam.engine.optimise import (
    choose_baseline,
    evaluate_mask,
    optimise_mask,
    to_numpy_mask,
)
from napari_medcam.engine.prepare import resize, resolve_device, unit_tensor
from napari_medcam.tiling import Stitcher, needs_tiling, tile_grid


class ExplanationCancelled(RuntimeError):
    """Raised by `explain` when its ``cancel`` flag was set during the run."""


def _check_config(config: MedCAMConfig | None) -> MedCAMConfig:
    if config is None:
        return MedCAMConfig.fast()
    if not isinstance(config, MedCAMConfig):
        raise ValueError(f"config must be a MedCAMConfig, got {type(config).__name__}")
    return config


def _explain_input(
    x: torch.Tensor,
    classifier: Classifier,
    target: int | None,
    config: MedCAMConfig,
    tile: int,
    tiles: int,
) -> Generator[ProgressEvent, None, dict[str, Any]]:
    """Explain one normalised classifier-sized input; returns raw facts as a dict."""
    with torch.no_grad():
        probs = torch.softmax(classifier.module(x), 1)[0]
    if target is None:
        target = int(probs.argmax())
    choice = choose_baseline(x, classifier, target, config)
    facts: dict[str, Any] = {
        "target": target,
        "probabilities": probs.tolist(),
        "baseline": choice.name,
    }
    if choice.problem:
        empty = torch.zeros((1, 1, *x.shape[2:]), device=x.device)
        facts.update(
            soft=empty, hard=empty, steps=0, history=[], found_valid=False, problem=choice.problem
        )
    else:
        result = yield from optimise_mask(
            x, classifier, target, config, choice, tile=tile, tiles=tiles
        )
        facts.update(
            soft=result.soft,
            hard=result.hard,
            steps=result.steps,
            history=result.history,
            found_valid=result.found_valid,
            problem="",
        )
    facts["eval"] = evaluate_mask(x, facts["hard"], classifier, target, choice, config)
    return facts


def _verdict(facts: dict[str, Any], config: MedCAMConfig, area: float, name: str) -> str:
    """Empty string when the mask can be trusted, else why not."""
    if facts["problem"]:
        return facts["problem"]
    ev = facts["eval"]
    if area < config.min_area:
        return "empty mask: no region keeps the decision on its own"
    if area > config.max_area:
        return f"mask covers {100 * area:.0f} % of the image: no minimal evidence found"
    if ev["masked_pred"] != facts["target"]:
        return f"decision lost on the binary mask (p({name}) = {ev['masked']:.2f})"
    return ""


def iter_explain(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    device: str | torch.device = "auto",
) -> Generator[ProgressEvent, None, Explanation]:
    """Explain ``image`` step by step: yields `ProgressEvent`s, returns the `Explanation`.

    Stop iterating (or ``close()`` the generator) to cancel: no result is made.
    Raises ValueError for anything it cannot explain, before any work starts.
    """
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a napari_medcam.Classifier, got {type(classifier)}")
    config = _check_config(config)
    target_idx = classifier.class_index(target)
    unit = unit_tensor(image, classifier)  # validates the image
    dev = resolve_device(device)
    start = time.perf_counter()
    classifier.to(dev)
    unit = unit.to(dev)
    spatial = tuple(unit.shape[2:])
    tile_size = classifier.input_size

    if needs_tiling(spatial, tile_size):
        windows = tile_grid(spatial, tile_size)
    else:
        windows = [tuple(slice(0, n) for n in spatial)]
    stitcher = Stitcher(spatial)
    per_tile: list[dict[str, Any]] = []
    inputs = [
        classifier.normalise(resize(unit[(slice(None), slice(None), *w)], tile_size))
        for w in windows
    ]
    if len(windows) > 1 and target_idx is None:
        target_idx = _finding_target(inputs, classifier, config)
    for i, (w, x) in enumerate(zip(windows, inputs)):
        if len(windows) > 1:
            with torch.no_grad():
                if int(classifier.module(x).argmax()) != target_idx:
                    continue  # no evidence for the target in this tile
        facts = yield from _explain_input(x, classifier, target_idx, config, i, len(windows))
        target_idx = facts["target"]
        shape = tuple(s.stop - s.start for s in w)
        soft = to_numpy_mask(resize(facts["soft"], shape))
        hard = to_numpy_mask(resize(facts["hard"], shape, smooth=False)) > 0.5
        stitcher.add(w, soft, hard)
        facts["area"] = float(facts["hard"].mean())
        per_tile.append(facts)

    mask, soft = stitcher.result()
    name = classifier.class_names[target_idx] if target_idx is not None else "?"
    seconds = time.perf_counter() - start
    provenance = {
        "package": "napari-medcam",
        "version": __version__,
        "classifier": classifier.name,
        "classes": classifier.class_names,
        "activation_layers": classifier.layers,
        "output_only_matching": not classifier.layers,
        "device": str(dev),
        "torch": torch.__version__,
    }
    if not per_tile:  # tiled image where no tile shows the target
        with torch.no_grad():
            probs = torch.softmax(classifier.module(torch.cat(inputs)), 1).mean(0).tolist()
        return Explanation(
            mask=mask,
            soft_mask=soft,
            target=target_idx,
            class_name=name,
            original_confidence=probs[target_idx],
            masked_confidence=0.0,
            robust_confidence=0.0,
            deletion_confidence=probs[target_idx],
            area_fraction=0.0,
            seconds=seconds,
            valid=False,
            status=f"no tile is classified '{name}'",
            probabilities=probs,
            masked_probabilities=[0.0] * len(probs),
            baseline="",
            steps=0,
            config=config.to_dict(),
            provenance=provenance,
            tiles=len(windows),
        )
    verdicts = [_verdict(f, config, f["area"], name) for f in per_tile]
    if len(per_tile) == 1:
        status = verdicts[0] or "valid"
    else:
        n_ok = sum(not v for v in verdicts)
        status = f"{n_ok} of {len(per_tile)} '{name}' tiles valid ({len(windows)} tiles)"
        if n_ok < len(per_tile):
            status += "; first problem: " + next(v for v in verdicts if v)
    if not classifier.layers:
        status += "; output-only matching (no hookable layers)"

    def mean(key: str) -> float:
        return float(np.mean([f["eval"][key] for f in per_tile]))

    return Explanation(
        mask=mask,
        soft_mask=soft,
        target=target_idx,
        class_name=name,
        original_confidence=float(np.mean([f["probabilities"][target_idx] for f in per_tile])),
        masked_confidence=mean("masked"),
        robust_confidence=mean("robust"),
        deletion_confidence=mean("deletion"),
        area_fraction=float(mask.mean()),
        seconds=seconds,
        valid=any(not v for v in verdicts) and (len(per_tile) > 1 or not verdicts[0]),
        status=status,
        probabilities=list(np.mean([f["probabilities"] for f in per_tile], 0)),
        masked_probabilities=list(
            np.mean([f["eval"]["masked_probabilities"] for f in per_tile], 0)
        ),
        baseline=",".join(dict.fromkeys(f["baseline"] for f in per_tile)),
        steps=int(sum(f["steps"] for f in per_tile)),
        history=per_tile[0]["history"] if len(per_tile) == 1 else [],
        config=config.to_dict(),
        provenance=provenance,
        tiles=len(windows),
    )


def _finding_target(
    inputs: list[torch.Tensor], classifier: Classifier, config: MedCAMConfig
) -> int:
    """Default target of a tiled image: its most confident finding.

    The class, other than the one the classifier gives a blank (mean-colour) image,
    that some tile shows with the highest probability; the blank class itself only
    when no tile shows anything else.
    """
    with torch.no_grad():
        probs = torch.softmax(classifier.module(torch.cat(inputs)), 1)
        blank = int(classifier.module(torch.zeros_like(inputs[0])).argmax())
    preds = probs.argmax(1)
    best = probs.max(0).values
    findings = [c for c in range(probs.shape[1]) if c != blank and bool((preds == c).any())]
    return max(findings, key=lambda c: float(best[c])) if findings else blank


def explain(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    device: str | torch.device = "auto",
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> Explanation:
    """Explain ``image``'s classification with Med-CAM (see `iter_explain`).

    ``progress`` is called with every `ProgressEvent`; ``cancel`` (an Event or a
    callable) is checked at every step and raises `ExplanationCancelled` when set.
    """
    is_set = cancel.is_set if isinstance(cancel, threading.Event) else cancel
    gen = iter_explain(image, classifier, target, config, device=device)
    try:
        while True:
            event = next(gen)
            if progress is not None:
                progress(event)
            if is_set is not None and is_set():
                gen.close()
                raise ExplanationCancelled("explanation cancelled")
    except StopIteration as stop:
        return stop.value
