"""Explaining with a fitted explainer: every tile in one pass, verdicts fail closed.

Tiles are read, classified and masked in batches (one classifier pass and one
explainer pass per batch); each masked tile then gets exactly the per-image engine's
verdict (`napari_medcam.engine.verdict.tile_verdict` on `evaluate_mask`): the decision
kept on the binary mask over the absence, robust on fresh random backgrounds, a sane
area. The amortised mask passed no optimisation's test, so the verdict alone decides.
A tile that fails is **not shown**. With ``refine=N`` every tile is held to the
per-image goal (the tolerance, on the absence and the whole background pool): a mask
that fails its verdict or misses the goal is optimised per image for at most N
full-resolution steps starting from the amortised mask (warm start), one that meets it
is reduced to the regions the goal needs (`napari_medcam.engine.regions`); both are judged
again, and a refinement never replaces a mask that passed with one that fails.
Every class the classifier finds (except, on a tiled image, the explainer's
background class, or the class the classifier gives a blank image when it has none)
is explained in the same pass (``labels`` holds class index + 1 per pixel,
`napari_medcam.engine.amortised.labels`); a tile of the background class shows
nothing and its verdict says why.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize, resolve_device
from napari_medcam.engine.absence import Absence, choose_absence
from napari_medcam.engine.amortised.file import Explainer, load_explainer
from napari_medcam.engine.amortised.labels import combine_labels
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.optimise import optimise_masks, to_numpy_mask
from napari_medcam.engine.prune import PoolCheck
from napari_medcam.engine.regions import at_scale
from napari_medcam.engine.scoring import evaluate_mask
from napari_medcam.engine.summary import summarise
from napari_medcam.engine.tile_result import Scores, TileResult
from napari_medcam.engine.tiles import Tiles, blank_class, tile_class
from napari_medcam.engine.verdict import tile_verdict
from napari_medcam.tiling import MIN_TISSUE_FRACTION, Stitcher


def resolve_explainer(explainer: Any, classifier: Classifier) -> Explainer:
    """An `Explainer`, a file path or a packaged name, checked against ``classifier``."""
    if isinstance(explainer, (str, Path)):
        return load_explainer(explainer, classifier)
    if not isinstance(explainer, Explainer):
        raise ValueError(f"explainer must be an Explainer, a file or 'demo', got {explainer!r}")
    explainer.check(classifier)
    return explainer


def _facts(
    x: torch.Tensor,
    soft: torch.Tensor,
    classifier: Classifier,
    target: int,
    probs: list[float],
    config: MedCAMConfig,
    absence: Absence,
) -> TileResult:
    """One tile's facts, as `tile_verdict` reads them, for a given soft mask."""
    hard = (soft > config.threshold).float()
    f = TileResult.before_mask(target, probs, absence)
    # no optimisation ran: the verdict's checks on the binary mask decide alone
    f.soft, f.hard, f.found_valid, f.area = soft, hard, True, float(hard.mean())
    if not absence.problem:
        f.scores = Scores.of(evaluate_mask(x, hard, classifier, target, absence, config))
    else:
        f.scores = Scores.nothing_kept(probs, target)
    return f


def explain_batch(
    x: torch.Tensor,
    classifier: Classifier,
    explainer: Explainer,
    targets: list[int],
    probs: list[list[float]],
    config: MedCAMConfig,
    refine: int,
    tissue: torch.Tensor | None = None,
    *,
    done: int = 0,
    total: int = 1,
) -> Generator[ProgressEvent, None, list[TileResult]]:
    """Mask, judge and (``refine`` > 0) repair a batch; one `TileResult` per input."""
    soft = explainer.masks(x, targets, classifier)
    cfg = config.replace(refine_steps=refine)
    # one absence per tile; its optimisation pool only when refining (the verdict draws
    # its own backgrounds)
    absences = [
        choose_absence(
            x[i : i + 1], classifier, t, cfg if refine else cfg.replace(n_backgrounds=0), tissue
        )
        for i, t in enumerate(targets)
    ]
    facts = []
    for i, t in enumerate(targets):
        if t == explainer.background_class:  # fitted to show nothing for it: say so
            soft[i] = 0.0
            absences[i] = replace(
                absences[i],
                problem=f"'{classifier.class_names[t]}' is this explainer's background class: "
                "it was fitted to show no evidence for it (explain it per image instead)",
            )
    for i, (t, absence) in enumerate(zip(targets, absences)):
        f = _facts(x[i : i + 1], soft[i : i + 1], classifier, t, probs[i], config, absence)
        f.reason = tile_verdict(f, config, classifier.class_names[t])
        f.refined, f.amortised_failed = False, bool(f.reason)
        facts.append(f)
    if not refine:
        return facts
    # the per-image goal (the tolerance, on the absence and the whole pool): a mask
    # that meets it is pruned; one that does not is optimised, as per-image would
    objective = Objective(cfg, [probs[i][t] for i, t in enumerate(targets)])
    todo = []
    for i, absence in enumerate(absences):
        if facts[i].problem:
            continue
        check = PoolCheck(
            x[i : i + 1], classifier.module, targets[i], absence, partial(objective.meets, i)
        )
        f = facts[i]
        if f.reason or not bool(check.meets(f.hard)[0]):
            todo.append(i)
        elif cfg.prune:
            pruned, _, report = at_scale(check, f.soft, f.hard, cfg, classifier, True)
            g = _facts(x[i : i + 1], pruned, classifier, targets[i], probs[i], config, absence)
            g.regions = report
            g.reason = tile_verdict(g, config, classifier.class_names[targets[i]])
            g.refined, g.pruned = False, True
            if g.valid:  # judged on fresh backgrounds: kept only if it passes
                facts[i] = g
    if todo:
        results = yield from optimise_masks(
            x[todo],
            classifier,
            [targets[i] for i in todo],
            cfg,
            [absences[i] for i in todo],
            tile=done,
            tiles=total,
            warm_start=soft[todo],
        )
        for i, res in zip(todo, results):
            f = _facts(
                x[i : i + 1], res.soft, classifier, targets[i], probs[i], config, absences[i]
            )
            f.steps, f.history = res.steps, res.history
            f.found_valid, f.regions = res.found_valid, res.regions
            f.reason = tile_verdict(f, config, classifier.class_names[targets[i]])
            f.refined, f.pruned = True, bool(res.met_goal and cfg.prune)
            f.amortised_failed = facts[i].amortised_failed
            if f.valid or not facts[i].valid:  # never worse than it was
                facts[i] = f
    return facts


def iter_explain_amortised(
    image: Any,
    classifier: Classifier,
    explainer: Any,
    target: int | None,
    config: MedCAMConfig | None,
    *,
    device: str | torch.device = "auto",
    tile_overlap: int | None = None,
    tile_batch: int = 16,
    skip_background: bool = True,
    refine: int = 0,
    tissue: torch.Tensor | None = None,
) -> Generator[ProgressEvent, None, Explanation]:
    """One pass over ``image``'s tiles with ``explainer`` (module docstring).

    ``target`` None explains every class found; an index explains that class only.
    Yields one `ProgressEvent` per batch of tiles (and per refinement step).
    """
    exp = resolve_explainer(explainer, classifier)
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be a whole number of steps ≥ 0, got {refine!r}")
    config = config or exp.config
    dev = resolve_device(device)
    tiles = Tiles(image, classifier, dev, tile_overlap)
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be ≥ 1, got {tile_batch}")
    start = time.perf_counter()
    classifier.to(dev)
    if tissue is not None:
        tissue = tissue.to(dev)
    blank = None
    if tiles.tiled and target is None:  # the class of "nothing here": not a finding
        blank = exp.background_class
        if blank is None:
            blank = blank_class(classifier, dev)
    stitchers: dict[int, Stitcher] = {}
    per_tile: list[TileResult] = []
    failed: list[tuple[slice, ...]] = []
    tile_classes: list[dict[str, Any]] = []  # every tissue tile's class, explained or not
    prob_sum = np.zeros(classifier.num_classes)
    n_tissue = 0
    n = len(tiles.windows)
    try:
        for first in range(0, n, tile_batch):
            chunk = list(range(first, min(first + tile_batch, n)))
            sel: list[int] = []
            inputs = [tiles.input(i) for i in chunk]
            keep = [
                j
                for j, (_, frac) in enumerate(inputs)
                if not (tiles.tiled and skip_background and frac < MIN_TISSUE_FRACTION)
            ]
            if keep:
                x = torch.cat([inputs[j][0] for j in keep])
                with torch.no_grad():
                    p = torch.softmax(classifier.module(x), 1)
                prob_sum += p.sum(0).cpu().numpy()
                n_tissue += len(keep)
                preds = p.argmax(1).tolist()
                if tiles.tiled:
                    tile_classes += [
                        tile_class(
                            tiles.windows[chunk[k]], classifier.class_names[c], float(p[j, c])
                        )
                        for j, (k, c) in enumerate(zip(keep, preds))
                    ]
                sel = [
                    j
                    for j, c in enumerate(preds)
                    if (c == target if target is not None else c != blank)
                ]
                if sel:
                    facts = yield from explain_batch(
                        x[sel],
                        classifier,
                        exp,
                        [preds[j] for j in sel],
                        [p[j].tolist() for j in sel],
                        config,
                        refine,
                        tissue,
                        done=first,
                        total=n,
                    )
                    for j, f in zip(sel, facts):
                        f.window = window = tiles.windows[chunk[keep[j]]]
                        if f.reason and tiles.tiled:
                            failed.append(window)
                        else:
                            if f.target not in stitchers:
                                stitchers[f.target] = Stitcher(tiles.spatial)
                            shape = tuple(s.stop - s.start for s in window)
                            stitchers[f.target].add(window, to_numpy_mask(resize(f.soft, shape)))
                        if tiles.tiled:
                            f.drop_tensors()
                        per_tile.append(f)
            done = per_tile[-len(sel) :] if sel else []
            yield ProgressEvent(
                chunk[-1] + 1,
                n,
                {},
                float(np.mean([f.scores.masked for f in done])) if done else 0.0,
                float(np.mean([f.area for f in done])) if done else 0.0,
            )
        labels, mask, soft, area, names = combine_labels(
            stitchers, tiles.spatial, config, failed, classifier.class_names
        )
    finally:
        for s in stitchers.values():
            s.close()
    if not tiles.tiled and per_tile:  # one tile: its binary mask, exactly
        f = per_tile[0]
        mask = to_numpy_mask(resize(f.hard, tiles.spatial, smooth=False)) > 0.5
        labels = mask.astype(np.uint8) * (f.target + 1)
        area = float(mask.mean())
        names = {f.target + 1: classifier.class_names[f.target]} if mask.any() else {}
    if soft is None:
        soft = np.zeros(tiles.spatial, np.float32)
    # the classes shown: those of the valid tiles (every explained tile's when none is)
    shown = [f for f in per_tile if f.valid] or per_tile
    found = sorted({f.target for f in shown})
    main = (
        max(found, key=lambda c: sum(f.target == c for f in shown))
        if found
        else (target if target is not None else int(prob_sum.argmax()) if n_tissue else 0)
    )
    name = " + ".join(classifier.class_names[c] for c in found) or classifier.class_names[main]
    mean_probs = (prob_sum / max(n_tissue, 1)).tolist()
    result = summarise(
        per_tile,
        mask,
        soft,
        area,
        classifier,
        # what ran: the refinement and pruning only with refine, at the network's scale
        config.replace(
            refine_steps=refine,
            prune=config.prune and refine > 0,
            mask_scale=exp.net.mask_scale,
        ),
        main,
        name,
        mean_probs,
        time.perf_counter() - start,
        n,
        dev,
        tile_classes,
        none_explained=_none_explained(
            tiles.tiled, n_tissue, target, blank, int(prob_sum.argmax()), exp, classifier
        ),
    )
    if per_tile:  # each tile's own class: the confidence it was explained for
        result.original_confidence = float(np.mean([f.original for f in shown]))
    refined = [f for f in per_tile if f.refined]
    result.labels = labels
    result.label_classes = names
    result.provenance["explainer"] = {
        "file": exp.metadata.get("file", "(in memory)"),
        "fingerprint": exp.metadata["classifier"]["fingerprint"],
        "refine_steps": refine,
        "tiles_explained": len(per_tile),
        "tiles_failed_amortised": sum(f.amortised_failed for f in per_tile),
        "tiles_refined": len(refined),
        "tiles_fixed_by_refine": sum(f.amortised_failed and f.valid for f in per_tile),
        "tiles_pruned": sum(f.pruned for f in per_tile),
    }
    if refined:
        result.status += f"; {len(refined)} tile(s) refined (≤ {refine} steps each)"
    return result


def _none_explained(
    tiled: bool,
    n_tissue: int,
    target: int | None,
    blank: int | None,
    predicted: int,
    exp: Explainer,
    classifier: Classifier,
) -> str:
    """Why a run explained no tile, in words that are true of this image."""
    names = classifier.class_names
    if tiled and not n_tissue:
        return "no tissue tile: every window is background (glass)"
    if target is not None and tiled:
        return f"no tissue tile is classified '{names[target]}'"
    if target is not None:
        return (
            f"the image is classified '{names[predicted]}', not '{names[target]}': an "
            f"explainer explains an image's own class (explain '{names[target]}' per image)"
        )
    why = (
        "this explainer's background class"
        if blank is not None and blank == exp.background_class
        else "the class the classifier gives a blank image"
    )
    cls = names[blank if blank is not None else predicted]
    return f"every tissue tile is classified '{cls}', {why}: nothing to explain"
