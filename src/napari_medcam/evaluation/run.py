"""Run every method on the held-out set, score it, and summarise per method.

Protocol (issue 4), per image:

1. Med-CAM (fast) explains the image; the area of its binary mask, ``A``, is the
   image's *comparison area* (when its mask is empty, the reference's area is used and
   the record says so).
2. Grad-CAM, RISE and occlusion make their maps; their binary masks are the top ``A``
   of their maps, so that every method is judged at the same area. Med-CAM (paper),
   run on a small subset only (it takes minutes per tile on a CPU), keeps its own mask.
3. Each mask is scored for *sufficiency* (does the masked image keep the decision; the
   target's confidence with the neutral absence and with perturbations
   elsewhere; deletion confidence) and *precision* (share of the mask inside the
   reference); each map for IoU and Dice at the reference's area, the pointing game,
   the share of its energy inside the reference, insertion and deletion AUCs,
   crispness; each mask for its number of connected regions.
4. On the sanity subset, the classifier's top layers are re-initialised (on a copy)
   and every method explains again; the similarity of the two maps is recorded.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.evaluation.cases import Case, ihc_cases, synthetic_cases
from napari_medcam.evaluation.methods import LABELS, MethodOptions, MethodResult, run_method
from napari_medcam.metrics import (
    MaskScorer,
    blur,
    compactness,
    crispness,
    energy_inside,
    equal_area_overlap,
    map_similarity,
    overlap_scores,
    pointing_game,
    randomise_top_layers,
)

#: masked confidence counts as "≥ original" within this absolute tolerance
#: (both are often 1.000 for a confident classifier)
RAISE_TOLERANCE = 1e-3
#: a method passes the sanity check when its maps' mean Spearman ρ before/after
#: randomisation is below this
SANITY_RHO = 0.5
PAPER_STEPS = 60


@dataclass
class EvalSettings:
    """What the evaluation runs. `full()` is the committed run; `quick()` is for the tests."""

    n_standard: int = 24
    n_hard: int = 12
    n_ihc: int | None = 12  # None: every held-out IHC patch that qualifies (34)
    fast: MedCAMConfig = field(default_factory=MedCAMConfig.fast)
    paper: MedCAMConfig = field(
        default_factory=lambda: MedCAMConfig.paper(steps=PAPER_STEPS, min_steps=PAPER_STEPS)
    )
    paper_standard: int = 1  # the first N standard tiles ...
    paper_hard: int = 1  # ... the first N hard tiles ...
    paper_ihc: int = 2  # ... and the first N IHC patches make the paper subset
    sanity_standard: int = 3
    sanity_hard: int = 2
    sanity_ihc: int = 3
    sanity_layers: int = 2
    rise_masks: int = 500
    curve_steps: int = 32
    device: str = "cpu"
    #: rows of the figure: (group, index within the group)
    figure_cases: tuple[tuple[str, int], ...] = (
        ("standard", 0),
        ("standard", 1),
        ("hard", 0),  # faint
        ("hard", 1),  # small
        ("hard", 2),  # cut-off
        ("ihc", 0),
    )
    label: str = "full"

    @classmethod
    def full(cls, **overrides: Any) -> EvalSettings:
        return replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> EvalSettings:
        """A few tiles and short runs: checks the machinery, not the method."""
        base = cls(
            n_standard=2,
            n_hard=1,
            n_ihc=1,
            fast=MedCAMConfig.fast(steps=12, min_steps=12, warmup_steps=3, ramp_steps=6),
            paper=MedCAMConfig.paper(steps=2, min_steps=2),
            paper_standard=1,
            paper_hard=0,
            paper_ihc=1,
            sanity_standard=1,
            sanity_hard=0,
            sanity_ihc=1,
            rise_masks=64,
            curve_steps=8,
            figure_cases=(("standard", 0), ("ihc", 0)),
            label="quick",
        )
        return replace(base, **overrides)


@dataclass
class EvalResult:
    settings: EvalSettings
    records: list[dict[str, Any]]
    cases: list[Case]
    examples: list[dict[str, Any]]  # maps and masks of the figure's cases
    seconds: float
    machine: str
    info: dict[str, Any] = field(default_factory=dict)


def machine_line() -> str:
    import os

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}"
    )


def _classifiers() -> dict[str, Callable[[], Classifier]]:
    from napari_medcam.classifiers.demo import demo_classifier
    from napari_medcam.classifiers.ihc import ihc_classifier

    return {"demo": demo_classifier, "ihc": ihc_classifier}


def _subset(cases: list[Case], n_standard: int, n_hard: int, n_ihc: int) -> set[int]:
    picked: set[int] = set()
    for group, n in (("standard", n_standard), ("hard", n_hard), ("ihc", n_ihc)):
        idx = [i for i, c in enumerate(cases) if c.group == group]
        picked.update(idx[:n])
    return picked


def _score(res: MethodResult, scorer: MaskScorer, case: Case, curve_steps: int) -> dict[str, Any]:
    conf = scorer.confidences(res.mask)
    ov = overlap_scores(res.mask, case.reference)
    eq = equal_area_overlap(res.map, case.reference)
    curves = scorer.curves(res.map, steps=curve_steps)
    comp = compactness(res.mask)
    rec = {
        "seconds": res.seconds,
        "area": res.area,
        "original": conf["original"],
        "masked": conf["masked"],
        "robust": conf["robust"],
        "deletion": conf["deletion"],
        "held": conf["held"],
        "raised": conf["masked"] >= conf["original"] - RAISE_TOLERANCE,
        "precision": ov["precision"],
        "recall": ov["recall"],
        "iou_eq": eq["iou"],
        "dice_eq": eq["dice"],
        "pointing": pointing_game(res.map, case.reference),
        "energy": energy_inside(res.map, case.reference),
        "insertion_auc": curves["insertion_auc"],
        "deletion_auc": curves["deletion_auc"],
        "blur": blur(res.map),
        "crispness": crispness(res.map),
        "regions": comp["regions"],
        "largest_share": comp["largest_region_share"],
    }
    if "valid" in res.info:
        rec["valid"] = res.info["valid"]
        rec["own_area"] = res.info["own_area"]
    return rec


def run_evaluation(
    settings: EvalSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Run the whole evaluation (see the module docstring); ``log`` gets progress lines."""
    s = settings or EvalSettings.full()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    cases = synthetic_cases(s.n_standard, s.n_hard) + ihc_cases(s.n_ihc)
    paper_set = _subset(cases, s.paper_standard, s.paper_hard, s.paper_ihc)
    sanity_set = _subset(cases, s.sanity_standard, s.sanity_hard, s.sanity_ihc)
    by_group: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        by_group.setdefault(c.group, []).append(i)
    fig_idx = {by_group[g][k] for g, k in s.figure_cases if g in by_group and k < len(by_group[g])}
    loaders = _classifiers()
    classifiers: dict[str, Classifier] = {}
    randomised: dict[str, Classifier] = {}
    records: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    invalid_random: dict[str, list[bool]] = {}
    for i, case in enumerate(cases):
        if case.classifier not in classifiers:
            classifiers[case.classifier] = loaders[case.classifier]().to(s.device)
        clf = classifiers[case.classifier]
        scorer = MaskScorer.from_image(case.image, clf, case.target, s.fast)
        opts = MethodOptions(
            fast=s.fast,
            paper=s.paper,
            rise_masks=s.rise_masks,
            baseline=scorer.absence.image,
            device=s.device,
        )
        fast = run_method("medcam-fast", case.image, clf, case.target, options=opts)
        area, fallback = fast.area, False
        if area < s.fast.min_area:
            area, fallback = float(case.reference.mean()), True
        results = [fast]
        methods = ["gradcam", "rise", "occlusion"]
        if i in paper_set:
            methods.insert(0, "medcam-paper")
        for m in methods:
            a = None if m == "medcam-paper" else area
            results.append(run_method(m, case.image, clf, case.target, area=a, options=opts))
        sims: dict[str, dict[str, float]] = {}
        if i in sanity_set:
            if case.classifier not in randomised:
                randomised[case.classifier] = randomise_top_layers(clf, s.sanity_layers)
            rclf = randomised[case.classifier]
            for res in results:
                if res.method == "medcam-paper":
                    continue  # minutes per run on a CPU: the fast preset stands for Med-CAM
                again = run_method(res.method, case.image, rclf, case.target, options=opts)
                sims[res.method] = map_similarity(res.map, again.map)
                if "valid" in again.info:
                    invalid_random.setdefault(res.method, []).append(not again.info["valid"])
        for res in results:
            rec = {
                "case": case.name,
                "group": case.group,
                "kind": case.kind,
                "method": res.method,
                "index": i,
                "in_paper_subset": i in paper_set,
                "area_fallback": fallback,
                **_score(res, scorer, case, s.curve_steps),
            }
            if res.method in sims:
                rec.update({f"sanity_{k}": v for k, v in sims[res.method].items()})
            records.append(rec)
        if i in fig_idx:
            examples.append(
                {
                    "case": case,
                    "maps": {r.method: r.map for r in results},
                    "masks": {r.method: r.mask for r in results},
                }
            )
        fr = records[-len(results) :]
        say(
            f"[{i + 1}/{len(cases)}] {case.name}: p={scorer.original:.3f} "
            + ", ".join(f"{LABELS[r['method']]} {r['seconds']:.1f} s" for r in fr)
            + f"; Med-CAM area {100 * fast.area:.1f} % masked {fr[0]['masked']:.3f} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    info = {
        "randomised_medcam_invalid": {k: f"{sum(v)}/{len(v)}" for k, v in invalid_random.items()},
        "classifiers": {k: repr(v) for k, v in classifiers.items()},
        "paper_steps": s.paper.steps,
    }
    return EvalResult(s, records, cases, examples, time.perf_counter() - t0, machine_line(), info)
