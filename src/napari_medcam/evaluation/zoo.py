"""`napari-medcam evaluate --zoo`: the default recipe on classifiers it was never tuned on.

For every zoo classifier (held-out ones by default; `napari_medcam.zoo`), each positive
image of its ``eval`` split that the classifier calls the target is explained with
`MedCAMConfig.fast()` and defaults (no λ, no absence, no layer given by hand) and scored
against the entry's evidence reference:

- **valid %**, **kept %** (the binary-masked image still classified as the target),
  original → masked confidence (means);
- **area** of the mask vs the reference's (medians, and their ratio);
- **precision**: share of the mask on the reference dilated by `DILATE` pixels;
- **pointing**: the soft mask's maximum on that dilated reference;
- **Grad-CAM** and **RISE** precision at the mask's own area (their top pixels);
- **reference suffices**: whether the dilated reference alone, on the same absence,
  keeps the confidence the mask had to keep (the classifier may use more than it);
- **seconds** per image (wall time of `explain`, this machine).

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

from napari_medcam.baselines import gradcam, rise
from napari_medcam.engine.backgrounds import FLAT, IMAGE
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explain import explain
from napari_medcam.metrics import MaskScorer, pointing_game, threshold_to_area

DILATE = 2
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


def _precision(mask: np.ndarray, near: np.ndarray) -> float:
    return float((mask & near).sum() / mask.sum()) if mask.any() else float("nan")


def score_case(case: Any, clf: Any, settings: ZooSettings) -> dict[str, Any]:
    """One image: the explanation and the comparison methods, scored on the reference."""
    from scipy import ndimage

    probs = clf.predict_proba(case.image)
    rec: dict[str, Any] = {
        "case": case.name,
        "p0": float(probs[case.target]),
        "called_target": int(np.argmax(probs)) == case.target,
        "reference_area": float(np.mean(case.reference)),
    }
    if not rec["called_target"]:
        return rec
    start = time.perf_counter()
    exp = explain(case.image, clf, case.target, settings.config, device=settings.device)
    rec["seconds"] = time.perf_counter() - start
    mask = np.asarray(exp.mask, bool)
    near = ndimage.binary_dilation(case.reference, iterations=DILATE)
    area = float(mask.mean())
    rec.update(
        valid=bool(exp.valid),
        status=exp.status,
        kept=int(np.argmax(exp.masked_probabilities)) == case.target,
        masked=float(exp.masked_confidence),
        robust=float(exp.robust_confidence),
        area=area,
        absence=exp.baseline,
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
        baseline = exp.baseline if exp.baseline in FLAT + IMAGE else None
        rs = rise(case.image, clf, case.target, n_masks=settings.rise_masks, baseline=baseline)
        rec["gradcam_precision"] = _precision(threshold_to_area(gc, area), near)
        rec["rise_precision"] = _precision(threshold_to_area(rs, area), near)
        rec["gradcam_pointing"] = pointing_game(gc, near)
    return rec


def run_zoo(
    settings: ZooSettings | None = None, log: Callable[[str], None] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Records per classifier (see `score_case`)."""
    from napari_medcam import zoo

    settings = settings or ZooSettings()
    names = list(settings.names) or list(zoo.HELD_OUT)
    unknown = [n for n in names if n not in zoo.ZOO]
    if unknown:
        raise ValueError(f"unknown zoo classifiers {unknown}; the zoo holds {sorted(zoo.ZOO)}")
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        clf = zoo.load(name)
        records = []
        for case in zoo.cases(name, n=settings.n, split=settings.split):
            rec = score_case(case, clf, settings)
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
    )


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def _split(name: str) -> str:
    """How the recipe relates to a classifier: tuned on it, seen its failures, or neither."""
    from napari_medcam import zoo

    if name in zoo.TUNING:
        return "tuning"
    if name in zoo.SEEN:
        return f"seen (round {zoo.SEEN[name]})"
    return "fresh held out" if name in zoo.FRESH + zoo.FRESH2 else "held out"


def summary_row(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-classifier figures of the table."""

    done = [r for r in records if r["called_target"]]
    row: dict[str, Any] = {
        "classifier": name,
        "split": _split(name),
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
        pointing=pct("pointing"),
        reference_suffices=pct("reference_suffices"),
        gradcam_pointing=pct("gradcam_pointing"),
        seconds=float(np.mean([r["seconds"] for r in done])),
        absence=", ".join(sorted({r["absence"].split(" ")[0] for r in done})),
    )
    return row


def render(results: dict[str, list[dict[str, Any]]], settings: ZooSettings, machine: str) -> str:
    """The Markdown block: one row per classifier, then what each column means."""
    head = (
        "| classifier | split | explained | valid % | kept % | p orig → masked | area (ref) | "
        "area / ref | precision | Grad-CAM | RISE | pointing (GC) | ref. suffices | s / image | "
        "absence |"
    )
    lines = [
        f"Recipe `MedCAMConfig.fast()` with defaults; split `{settings.split}`, up to "
        f"{settings.n} positive images per classifier; {machine}.",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for name, records in results.items():
        r = summary_row(name, records)
        if "valid" not in r:
            lines.append(f"| {name} | {r['split']} | 0 / {r['images']} |" + " |" * 12)
            continue
        lines.append(
            f"| {name} | {r['split']} | {r['explained']} / {r['images']} | {r['valid']:.0f} | "
            f"{r['kept']:.0f} | {r['p0']:.3f} → {r['masked']:.3f} | {r['area']:.2f} % "
            f"({r['ref_area']:.2f} %) | {r['area_ratio']:.2f} | {r['precision']:.2f} | "
            f"{r['gradcam']:.2f} | {r['rise']:.2f} | {r['pointing']:.0f} % "
            f"({r['gradcam_pointing']:.0f} %) | {r['reference_suffices']:.0f} % | "
            f"{r['seconds']:.1f} | {r['absence']} |"
        )
    lines += [
        "",
        "*explained*: positive images the classifier calls the target (the others are not "
        "explained); *area*: medians of the mask and of the reference evidence; "
        f"*precision*: share of the mask on the reference dilated {DILATE} px; *Grad-CAM*, "
        "*RISE*: the same for their top pixels at the mask's own area; *pointing*: the soft "
        "mask's (Grad-CAM's) maximum on the dilated reference; *ref. suffices*: images where "
        "the dilated reference alone, on the same absence, keeps the confidence the mask must "
        "keep (where it does not, the classifier uses more than the reference and precision "
        "cannot reach 1); *absence*: what replaced the image outside the mask.",
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
