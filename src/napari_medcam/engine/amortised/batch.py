"""One batch of tiles through a fitted explainer: masked, judged, and (``refine``) repaired.

Each masked tile gets exactly the per-image engine's verdict
(`napari_medcam.engine.verdict.tile_verdict` on `evaluate_mask`): the decision kept on
the binary mask over the absence, robust on fresh perturbations, a sane area. The
amortised mask passed no optimisation's test, so the verdict alone decides. With
``refine=N`` every tile is held to the per-image goal (the tolerance, on the absence
and the whole pool of perturbations): a mask that fails its verdict or misses the goal is
optimised per image for at most N full-resolution steps starting from the amortised
mask (warm start), one that meets it is reduced to the regions the goal needs
(`napari_medcam.engine.regions`); both are judged again, and a refinement never
replaces a mask that passed with one that fails. A tile of the explainer's empty
class shows nothing and its verdict says why.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from functools import partial

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.absence import Absence, choose_absence
from napari_medcam.engine.amortised.file import Explainer
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.optimise import optimise_masks
from napari_medcam.engine.prune import PoolCheck
from napari_medcam.engine.regions import at_scale
from napari_medcam.engine.scoring import evaluate_mask
from napari_medcam.engine.tile_result import Scores, TileResult
from napari_medcam.engine.verdict import tile_verdict


def _scored(
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
            x[i : i + 1], classifier, t, cfg if refine else cfg.replace(n_perturbations=0), tissue
        )
        for i, t in enumerate(targets)
    ]
    facts = []
    for i, t in enumerate(targets):
        if t == explainer.empty_class:  # fitted to show nothing for it: say so
            soft[i] = 0.0
            absences[i] = replace(
                absences[i],
                problem=f"'{classifier.class_names[t]}' is this explainer's empty class: "
                "it was fitted to show no evidence for it (explain it per image instead)",
            )
    for i, (t, absence) in enumerate(zip(targets, absences)):
        f = _scored(x[i : i + 1], soft[i : i + 1], classifier, t, probs[i], config, absence)
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
            g = _scored(x[i : i + 1], pruned, classifier, targets[i], probs[i], config, absence)
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
            f = _scored(
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
