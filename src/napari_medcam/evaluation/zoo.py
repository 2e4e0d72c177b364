"""`napari-medcam evaluate --zoo`: the default recipe on classifiers it was never tuned on.

For every zoo classifier (held-out ones by default; `napari_medcam.zoo`), each positive
image of its ``eval`` split that the classifier calls the target is explained with
`MedCAMConfig.fast()` and defaults (no λ, no absence, no layer given by hand) and scored
against the entry's evidence reference:

- **valid %**, **kept %** (the binary-masked image still classified as the target),
  original → masked confidence (means);
- **area** of the mask vs the reference's (medians, and their ratio);
- **precision**: share of the mask on the reference drawn at the detail scale (closed by
  the scale's radius, `napari_medcam.evaluation.readability`) and dilated `DILATE` px;
- **pointing**: the soft mask's maximum on that dilated reference;
- **Grad-CAM** and **RISE** precision at the mask's own area (their top pixels); Grad-CAM
  on the deepest discovered layer as the classifier reads it (a transformer's last block,
  tokens reshaped to the patch grid: ``gradcam_layer`` in the record says which and how);
- **attention rollout** precision at that area, where the model's attention probabilities
  can be captured (`napari_medcam.comparison.attention_rollout`; "n/a" where they cannot);
- **reference suffices**: whether the dilated reference alone, on the same absence,
  keeps the confidence the mask had to keep (the classifier may use more than it);
- **seconds** per image (wall time of `explain`, this machine), and as a ratio to one
  forward+backward pass of the classifier on one input (`forward_backward_seconds`);
- readability (`napari_medcam.evaluation.readability`): **regions** per image,
  share of the mask in regions of at least the scale's minimum area, **stability**
  IoU (another seed, a JPEG round trip), **context keeps** (dilated by a radius).

``demo`` is accepted as a name too: the demo classifier on synthetic tiles (split
"tune": seeds 1000+, where its recipe was tuned; "eval": seeds 9000+, never looked at).

The table goes between the zoo markers of BENCHMARKS.md, with the machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.comparison import attention_rollout, gradcam, rise
from napari_medcam.engine.backgrounds import FLAT, IMAGE
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explain import explain
from napari_medcam.evaluation.readability import (
    DILATE,
    near_reference,
    readability,
    scale_reference,
)
from napari_medcam.metrics import MaskScorer, pointing_game, threshold_to_area
from napari_medcam.zoo._common import ZooCase

DEMO_SEEDS = {"tune": 1000, "eval": 9000}
SECTION = "## Classifier zoo (issue 9)"
BEGIN = "<!-- zoo:begin - written by `napari-medcam evaluate --zoo`; a rerun replaces it -->"
END = "<!-- zoo:end -->"


@dataclass
class ZooSettings:
    """What `run_zoo` explains: which entries, how many images each, on which split."""

    names: Sequence[str] = ()  # empty: the held-out entries
    split: str = "eval"
    n: int = 12
    device: str = "cpu"
    rise_masks: int = 500
    config: MedCAMConfig = field(default_factory=MedCAMConfig.fast)
    readability: bool = True  # regions, stability (two more explanations), context


def _precision(mask: np.ndarray, near: np.ndarray) -> float:
    return float((mask & near).sum() / mask.sum()) if mask.any() else float("nan")


def score_case(case: Any, clf: Any, settings: ZooSettings) -> dict[str, Any]:
    """One image: the explanation and the comparison methods, scored on the reference."""
    probs = clf.predict_proba(case.image)
    drawn = scale_reference(case.reference, clf, settings.config)
    near = near_reference(drawn)
    rec: dict[str, Any] = {
        "case": case.name,
        "p0": float(probs[case.target]),
        "called_target": int(np.argmax(probs)) == case.target,
        "reference_area": float(np.mean(drawn)),
    }
    if not rec["called_target"]:
        return rec
    start = time.perf_counter()
    exp = explain(case.image, clf, case.target, settings.config, device=settings.device)
    rec["seconds"] = time.perf_counter() - start
    mask = np.asarray(exp.mask, bool)
    area = float(mask.mean())
    rec.update(
        valid=bool(exp.valid),
        status=exp.status,
        kept=int(np.argmax(exp.masked_probabilities)) == case.target,
        masked=float(exp.masked_confidence),
        robust=float(exp.robust_confidence),
        area=area,
        absence=exp.absence,
        precision=_precision(mask, near),
        pointing=pointing_game(np.asarray(exp.soft_mask), near) if mask.any() else False,
    )
    # does the reference alone (dilated as above) reach the same goal, on the same absence?
    # If not, the classifier uses more than the reference, and precision must fall short
    ref_conf = MaskScorer.from_image(case.image, clf, case.target, settings.config).confidences(
        near
    )
    goal = (settings.config.tolerance or 0.5) * rec["p0"]
    rec["reference_suffices"] = bool(
        ref_conf["held"] and ref_conf["masked"] >= goal and ref_conf["robust"] >= goal
    )
    if mask.any():
        gc = gradcam(case.image, clf, case.target)
        baseline = exp.absence if exp.absence in FLAT + IMAGE else None
        rs = rise(case.image, clf, case.target, n_masks=settings.rise_masks, baseline=baseline)
        rec["gradcam_precision"] = _precision(threshold_to_area(gc, area), near)
        rec["rise_precision"] = _precision(threshold_to_area(rs, area), near)
        rec["gradcam_pointing"] = pointing_game(gc, near)
        layer = clf.layers[-1] if clf.layers else None
        reshapes = exp.provenance.get("activation_reshapes", {})
        rec["gradcam_layer"] = f"{layer}: {reshapes.get(layer, 'used as it is')}"
        rollout = attention_rollout(case.image, clf)
        if rollout is not None:
            rec["rollout_precision"] = _precision(threshold_to_area(rollout, area), near)
        if settings.readability:
            rec.update(
                readability(case.image, clf, case.target, settings.config, exp, settings.device)
            )
    return rec


def forward_backward_seconds(clf: Any, device: str = "cpu", repeats: int = 5) -> float:
    """Median wall time of one forward and backward pass of one input: the unit the
    explanation's cost is measured in, so that machines and model sizes compare."""
    x = torch.zeros((1, clf.channels, *clf.input_size), device=device)
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        xi = x.clone().requires_grad_(True)
        clf.module(xi)[0].max().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def demo_cases(n: int, split: str) -> list[ZooCase]:
    """``n`` lesion tiles of the demo classifier with their planted evidence."""
    from napari_medcam.data.synthetic import synthetic_tile

    if split not in DEMO_SEEDS:
        raise ValueError(f"split must be 'eval' or 'tune', got {split!r}")
    out = []
    for seed in range(DEMO_SEEDS[split], DEMO_SEEDS[split] + n):
        img, ref = synthetic_tile(seed=seed, label=1)
        out.append(ZooCase(f"demo-{seed}", img, ref, 1, 1))
    return out


def run_zoo(
    settings: ZooSettings | None = None, log: Callable[[str], None] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Records per classifier (see `score_case`)."""
    from napari_medcam import zoo

    settings = settings or ZooSettings()
    names = list(settings.names) or list(zoo.HELD_OUT)
    unknown = [n for n in names if n not in zoo.ZOO and n != "demo"]
    if unknown:
        raise ValueError(f"unknown zoo classifiers {unknown}; the zoo holds {sorted(zoo.ZOO)}")
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        if name == "demo":
            from napari_medcam.classifiers.demo import demo_classifier

            clf, cases = demo_classifier(), demo_cases(settings.n, settings.split)
        else:
            clf, cases = zoo.load(name), zoo.cases(name, n=settings.n, split=settings.split)
        records = []
        fwd_bwd = forward_backward_seconds(clf, settings.device)
        for case in cases:
            rec = {**score_case(case, clf, settings), "fwd_bwd_seconds": fwd_bwd}
            records.append(rec)
            if log:
                log(f"{name} {case.name}: {_describe(rec)}")
        out[name] = records
    return out


def _describe(rec: dict[str, Any]) -> str:
    if not rec["called_target"]:
        return "not called the target: skipped"
    return (
        f"{'valid' if rec['valid'] else 'INVALID'} {rec['p0']:.2f}→{rec['masked']:.2f} "
        f"area {100 * rec['area']:.2f} % (ref {100 * rec['reference_area']:.2f} %) "
        f"prec {rec['precision']:.2f} (GC {rec.get('gradcam_precision', float('nan')):.2f}) "
        f"{rec['seconds']:.1f} s [{rec['absence']}]"
        + (
            f" regions {rec['regions']} (≥min {rec['big_share']:.2f}) "
            f"stab {rec['stability']:.2f} ctx {'y' if rec['context_keeps'] else 'n'}"
            if "regions" in rec
            else ""
        )
    )


def _or_na(value: float, fmt: str) -> str:
    return fmt.format(value) if value == value else "n/a"


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def _split(name: str, split: str = "eval") -> str:
    """How the recipe relates to a classifier: tuned on it, seen its failures, or neither."""
    from napari_medcam import zoo

    if name in zoo.TUNING:
        return "tuning"
    if name == "demo":
        return "demo (tuning: seeds 1000+)" if split == "tune" else "demo (held out: seeds 9000+)"
    if name in zoo.SEEN:
        return f"seen (round {zoo.SEEN[name]})"
    return "blind held out" if name in zoo.BLIND else "held out"


def summary_row(name: str, records: list[dict[str, Any]], split: str = "eval") -> dict[str, Any]:
    """The per-classifier figures of the table."""

    done = [r for r in records if r["called_target"]]
    row: dict[str, Any] = {
        "classifier": name,
        "split": _split(name, split),
        "images": len(records),
        "explained": len(done),
    }
    if not done:
        return row
    pct = lambda key: 100 * float(np.mean([bool(r.get(key)) for r in done]))  # noqa: E731
    area = statistics.median(r["area"] for r in done)
    ref = statistics.median(r["reference_area"] for r in done)
    row.update(
        valid=pct("valid"),
        kept=pct("kept"),
        p0=float(np.mean([r["p0"] for r in done])),
        masked=float(np.mean([r["masked"] for r in done])),
        area=100 * area,
        ref_area=100 * ref,
        area_ratio=area / ref if ref else float("nan"),
        precision=_nanmean([r["precision"] for r in done]),
        gradcam=_nanmean([r.get("gradcam_precision", float("nan")) for r in done]),
        rise=_nanmean([r.get("rise_precision", float("nan")) for r in done]),
        rollout=_nanmean([r.get("rollout_precision", float("nan")) for r in done]),
        pointing=pct("pointing"),
        reference_suffices=pct("reference_suffices"),
        gradcam_pointing=pct("gradcam_pointing"),
        seconds=float(np.mean([r["seconds"] for r in done])),
        per_fwd_bwd=_nanmean([r["seconds"] / r.get("fwd_bwd_seconds", np.nan) for r in done]),
        absence=", ".join(sorted({r["absence"].split(" ")[0] for r in done})),
    )
    read = [r for r in done if "regions" in r]  # images with a mask to read
    if read:
        row.update(
            regions=statistics.median(r["regions"] for r in read),
            big_share=100 * _nanmean([r["big_share"] for r in read]),
            stability=statistics.median(r["stability"] for r in read),
            context=100 * float(np.mean([bool(r["context_keeps"]) for r in read])),
        )
    return row


def render(results: dict[str, list[dict[str, Any]]], settings: ZooSettings, machine: str) -> str:
    """The Markdown block: one row per classifier, then what each column means."""
    head = (
        "| classifier | split | explained | valid % | kept % | p orig → masked | area (ref) | "
        "area / ref | precision | Grad-CAM | RISE | rollout | pointing (GC) | ref. suffices | "
        "s / image | × fwd+bwd | absence | regions | ≥ min area | stability IoU | "
        "context keeps |"
    )
    lines = [
        f"Recipe `MedCAMConfig.fast()` with defaults; split `{settings.split}`, up to "
        f"{settings.n} positive images per classifier; {machine}.",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for name, records in results.items():
        r = summary_row(name, records, settings.split)
        if "valid" not in r:
            lines.append(f"| {name} | {r['split']} | 0 / {r['images']} |" + " |" * 18)
            continue
        read = (
            f" {r['regions']:g} | {r['big_share']:.0f} % | {r['stability']:.2f} | "
            f"{r['context']:.0f} % |"
            if "regions" in r
            else " | | | |"
        )
        lines.append(
            f"| {name} | {r['split']} | {r['explained']} / {r['images']} | {r['valid']:.0f} | "
            f"{r['kept']:.0f} | {r['p0']:.3f} → {r['masked']:.3f} | {r['area']:.2f} % "
            f"({r['ref_area']:.2f} %) | {r['area_ratio']:.2f} | {r['precision']:.2f} | "
            f"{r['gradcam']:.2f} | {r['rise']:.2f} | {_or_na(r['rollout'], '{:.2f}')} | "
            f"{r['pointing']:.0f} % ({r['gradcam_pointing']:.0f} %) | "
            f"{r['reference_suffices']:.0f} % | {r['seconds']:.1f} | "
            f"{_or_na(r['per_fwd_bwd'], '{:.0f}')} | {r['absence']} |" + read
        )
    lines += [
        "",
        "*explained*: positive images the classifier calls the target (the others are not "
        "explained); *area*: medians of the mask and of the reference evidence; "
        "*area*, *precision*: against the reference drawn at the detail scale (closed by "
        f"the scale's radius) — precision on it dilated {DILATE} px; *Grad-CAM*, "
        "*RISE*, *rollout* (attention rollout; n/a: the model's attention over the whole token "
        "grid cannot be captured, or no record has it): the same for their top pixels at the "
        "mask's own area; *× fwd+bwd*: seconds per image over one forward+backward pass of "
        "the classifier on one input, this machine; *pointing*: the soft "
        "mask's (Grad-CAM's) maximum on the dilated reference; *ref. suffices*: images where "
        "the dilated reference alone, on the same absence, keeps the confidence the mask must "
        "keep (where it does not, the classifier uses more than the reference and precision "
        "cannot reach 1); *absence*: what replaced the image outside the mask; *regions*: "
        "median connected regions per mask; *≥ min area*: mean share of the mask in regions "
        "of at least the scale's minimum area; *stability IoU*: median over images of the "
        "median IoU with the mask explained with another seed and after a JPEG round trip "
        "(quality 90); *context keeps*: masks that, dilated by one structure radius, keep "
        "the decision.",
    ]
    return "\n".join(lines)


def write_block(path: str | Path, block: str) -> Path:
    """Put ``block`` between the zoo markers of ``path``; other sections stay as they are."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    marked = f"{BEGIN}\n{block.rstrip()}\n{END}"
    start, stop = text.find("<!-- zoo:begin"), text.find(END)
    if start != -1 and stop > start:
        text = text[:start] + marked + text[stop + len(END) :]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{marked}\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
