"""Summaries of an `EvalResult`: the table, the verdicts on the paper's claims, BENCHMARKS.md."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.evaluation.methods import LABELS, METHODS
from napari_medcam.evaluation.run import RAISE_TOLERANCE, SANITY_RHO, EvalResult

SECTION = "## Evaluation (issue 4)"
BEGIN = (
    "<!-- evaluation:begin - written by `napari-medcam evaluate`; a rerun replaces this block -->"
)
END = "<!-- evaluation:end -->"

#: (name, selector of records, methods shown)
SETS: tuple[tuple[str, Callable[[dict[str, Any]], bool], tuple[str, ...]], ...] = (
    ("synthetic, standard", lambda r: r["group"] == "standard", ()),
    ("synthetic, hard", lambda r: r["group"] == "hard", ()),
    ("synthetic, all", lambda r: r["group"] in ("standard", "hard"), ()),
    ("IHC (real)", lambda r: r["group"] == "ihc", ()),
    ("paper subset", lambda r: r["in_paper_subset"], METHODS),
)
DEFAULT_METHODS = tuple(m for m in METHODS if m != "medcam-paper")
#: the sets the verdicts are given on
CLAIM_SETS = ("synthetic, standard", "synthetic, hard", "IHC (real)")
#: localisation scores compared for the "better localised" verdict
LOCALISATION = ("precision", "IoU@ref", "pointing %", "energy in")
#: differences below this (on a 0-1 scale) count as ties
TIE = 0.02

# (header, function of the records of one method on one set, format)
Column = tuple[str, Callable[[list[dict[str, Any]]], float | None], str]


def _mean(key: str) -> Callable[[list[dict[str, Any]]], float | None]:
    def f(rs: list[dict[str, Any]]) -> float | None:
        vals = [float(r[key]) for r in rs if r.get(key) is not None]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else None

    return f


def _pct(key: str) -> Callable[[list[dict[str, Any]]], float | None]:
    def f(rs: list[dict[str, Any]]) -> float | None:
        vals = [bool(r[key]) for r in rs if r.get(key) is not None]
        return 100 * float(np.mean(vals)) if vals else None

    return f


COLUMNS: tuple[Column, ...] = (
    ("n", lambda rs: float(len(rs)), "{:.0f}"),
    ("area %", lambda rs: 100 * _mean("area")(rs), "{:.1f}"),
    ("kept %", _pct("held"), "{:.0f}"),
    ("p orig", _mean("original"), "{:.3f}"),
    ("p masked", _mean("masked"), "{:.3f}"),
    ("Δp", lambda rs: float(np.mean([r["masked"] - r["original"] for r in rs])), "{:+.3f}"),
    ("≥ orig %", _pct("raised"), "{:.0f}"),
    ("p robust", _mean("robust"), "{:.3f}"),
    ("p deleted", _mean("deletion"), "{:.3f}"),
    ("precision", _mean("precision"), "{:.2f}"),
    ("IoU@ref", _mean("iou_eq"), "{:.2f}"),
    ("Dice@ref", _mean("dice_eq"), "{:.2f}"),
    ("pointing %", _pct("pointing"), "{:.0f}"),
    ("energy in", _mean("energy"), "{:.2f}"),
    ("ins AUC", _mean("insertion_auc"), "{:.3f}"),
    ("del AUC", _mean("deletion_auc"), "{:.3f}"),
    ("blur", _mean("blur"), "{:.2f}"),
    ("regions", _mean("regions"), "{:.1f}"),
    ("sanity ρ", _mean("sanity_spearman"), "{:.2f}"),
    ("sanity SSIM", _mean("sanity_ssim"), "{:.2f}"),
    ("valid %", _pct("valid"), "{:.0f}"),
    ("s/image", _mean("seconds"), "{:.2f}"),
)

LEGEND = f"""\
Columns: **n** images; **area %** of the binary mask scored (Med-CAM: its own mask; the
others: the top of their map at Med-CAM (fast)'s area on the same image, i.e. equal
area); **kept %** masked image (the absence elsewhere) still classified as the target; **p
orig / p masked / Δp** target probability on the image / on the masked image / their
mean difference; **≥ orig %** images where p masked ≥ p orig − {RAISE_TOLERANCE:g}; **p
robust** mean over 16 perturbations; **p deleted** with the mask's content replaced
by the absence (low = the evidence was needed); **precision** share of the mask inside
the reference; **IoU@ref / Dice@ref** of the map's top pixels at the reference's area;
**pointing %** map maximum inside the reference; **energy in** share of the map's mass
inside the reference; **ins / del AUC** insertion (↑) and deletion (↓) curves over the
map's ranking, baseline-filled; **blur** the map's transition band (0.1 < m < 0.9 of its
range) over its core (m ≥ 0.5): 0 = sharp as a mask, lower = sharper (Med-CAM: its soft
mask; its binary mask has blur 0); **regions** connected components of the mask;
**sanity ρ / SSIM** Spearman ρ and SSIM between the maps before and after
re-initialising the classifier's top two layers (low = the method explains the model;
computed on the sanity subset only); **valid %** Med-CAM's own trust verdict;
**s/image** wall time; **× Grad-CAM** the same relative to Grad-CAM's on the same images
and run."""


def _fmt(v: float | None, fmt: str) -> str:
    if v is None or not np.isfinite(v):
        return "—"
    out = fmt.format(v)
    if out.startswith("-") and float(out) == 0:  # no "-0.000"
        out = ("+" if "+" in fmt else "") + out[1:]
    return out


def _signed(v: float) -> str:
    return _fmt(v, "{:+.3f}")


def summary_rows(result: EvalResult) -> list[dict[str, Any]]:
    """One row per (set, method): the columns' values (None where not measured)."""
    rows = []
    for name, select, shown in SETS:
        recs = [r for r in result.records if select(r)]
        if not recs:
            continue
        methods = shown or DEFAULT_METHODS
        present = [m for m in methods if any(r["method"] == m for r in recs)]
        if name == "paper subset" and "medcam-paper" not in present:
            continue
        t_cam = _mean("seconds")([r for r in recs if r["method"] == "gradcam"])
        for m in present:
            rs = [r for r in recs if r["method"] == m]
            row = {"set": name, "method": m, "label": LABELS[m]}
            for header, f, _ in COLUMNS:
                row[header] = f(rs)
            row["× Grad-CAM"] = row["s/image"] / t_cam if t_cam else None
            rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    headers = ["set", "method", *[c[0] for c in COLUMNS], "× Grad-CAM"]
    fmts = {c[0]: c[2] for c in COLUMNS} | {"× Grad-CAM": "{:.0f}"}
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(headers) - 2)) + "|",
    ]
    for r in rows:
        cells = [r["set"], r["label"]]
        for h in headers[2:]:
            v = r[h]
            if h == "× Grad-CAM" and v is not None and v < 10:
                cells.append(_fmt(v, "{:.1f}"))
            else:
                cells.append(_fmt(v, fmts[h]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _row(rows: list[dict[str, Any]], set_name: str, method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["set"] == set_name and r["method"] == method), None)


def claims(result: EvalResult, rows: list[dict[str, Any]] | None = None) -> list[str]:
    """Plain verdicts on the paper's claims, computed from the numbers (Markdown bullets)."""
    rows = rows if rows is not None else summary_rows(result)
    out = []
    # 1. masked confidence ≥ original with a small area
    parts, verdicts = [], []
    for set_name in CLAIM_SETS:
        r = _row(rows, set_name, "medcam-fast")
        if r is None:
            continue
        ok = r["≥ orig %"] >= 90 and r["area %"] <= 20 and r["kept %"] >= 90
        part = r["≥ orig %"] >= 50 and r["kept %"] >= 50 and r["area %"] <= 50
        why = []
        if r["≥ orig %"] < 90:
            why.append("confidence drops on many images")
        if r["kept %"] < 90:
            why.append("decision lost on some")
        if r["area %"] > 20:
            why.append("masks are not small")
        verdict = "holds" if ok else "partly holds" if part else "fails"
        verdicts.append(verdict)
        notes = []
        if r["p orig"] >= 0.99:
            notes.append("the classifier is saturated here, so a raise cannot show")
        gc = _row(rows, set_name, "gradcam")
        if gc is not None:
            notes.append(f"Grad-CAM's top pixels at the same area: Δ {_signed(gc['Δp'])}")
        notes.append(f"{100 * r['precision']:.0f} % of the mask inside the reference")
        parts.append(
            f"{set_name}: p {r['p orig']:.3f} → {r['p masked']:.3f} (Δ {_signed(r['Δp'])}), "
            f"≥ original on {r['≥ orig %']:.0f} % of images, decision kept on "
            f"{r['kept %']:.0f} %, area {r['area %']:.1f} % (valid {r['valid %']:.0f} %) → "
            f"**{verdict}**"
            + (f" ({', '.join(why)})" if why and not ok else "")
            + f" [{'; '.join(notes)}]"
        )
    if parts:
        out.append(
            "**Masked confidence ≥ original with a small area** (Med-CAM fast): "
            + "; ".join(parts)
            + "."
        )
    # 2. sharper and better localised than Grad-CAM
    for set_name in CLAIM_SETS:
        mc, gc = _row(rows, set_name, "medcam-fast"), _row(rows, set_name, "gradcam")
        if mc is None or gc is None:
            continue
        if mc["blur"] is None or gc["blur"] is None:
            sharp = "sharpness not measurable"
        else:
            sharp = "sharper" if mc["blur"] < gc["blur"] - TIE else "not sharper"
        scale = {"pointing %": 100.0}
        wins, losses, ties = [], [], []
        for k in LOCALISATION:
            if mc[k] is None or gc[k] is None:
                continue
            d = (mc[k] - gc[k]) / scale.get(k, 1.0)
            (wins if d > TIE else losses if d < -TIE else ties).append(k)
        if len(wins) > len(losses) and "precision" not in losses:
            loc = "better localised"
        elif len(losses) > len(wins):
            loc = "worse localised"
        else:
            loc = "no better localised"
        detail = ", ".join(f"{k} {mc[k]:.2f} vs {gc[k]:.2f}" for k in LOCALISATION)
        out.append(
            f"**Sharper and better localised than Grad-CAM** ({set_name}; Med-CAM fast vs "
            f"Grad-CAM): blur of the maps {_fmt(mc['blur'], '{:.2f}')} vs "
            f"{_fmt(gc['blur'], '{:.2f}')} → **{sharp}**; "
            f"{detail} → **{loc}**"
            + (f" (Grad-CAM ahead on {', '.join(losses)})" if losses else "")
            + "."
        )
    # faithfulness curves: who ranks the pixels the classifier needs first
    for set_name in CLAIM_SETS:
        rs = [r for r in rows if r["set"] == set_name and r["ins AUC"] is not None]
        if len(rs) < 2:
            continue
        ins = max(rs, key=lambda r: r["ins AUC"])
        dele = min(rs, key=lambda r: r["del AUC"])
        mc = _row(rows, set_name, "medcam-fast")
        out.append(
            f"**Insertion / deletion** ({set_name}): best insertion AUC {ins['label']} "
            f"{ins['ins AUC']:.3f}, best deletion AUC {dele['label']} {dele['del AUC']:.3f}"
            + (
                f"; Med-CAM (fast) {mc['ins AUC']:.3f} / {mc['del AUC']:.3f}"
                if mc is not None
                else ""
            )
            + "."
        )
    # 3. sanity check
    sane = []
    for m in DEFAULT_METHODS:
        rhos = [
            r["sanity_spearman"]
            for r in result.records
            if r["method"] == m and "sanity_spearman" in r
        ]
        if rhos:
            rho = float(np.mean(rhos))
            sane.append(f"{LABELS[m]} ρ = {rho:.2f} ({'passes' if rho < SANITY_RHO else 'FAILS'})")
    if sane:
        inv = result.info.get("randomised_medcam_invalid", {}).get("medcam-fast")
        extra = (
            f"; Med-CAM's explanations of the randomised model were invalid in {inv}" if inv else ""
        )
        out.append(
            f"**Sanity check** (top {result.settings.sanity_layers} layers re-initialised; "
            f"passes when the maps' mean Spearman ρ < {SANITY_RHO}): "
            + ", ".join(sane)
            + extra
            + "."
        )
    # 4. speed
    r_fast = _row(rows, "synthetic, all", "medcam-fast")
    r_cam = _row(rows, "synthetic, all", "gradcam")
    r_paper = _row(rows, "paper subset", "medcam-paper")
    if r_fast and r_cam:
        line = (
            f"**Speed**: Med-CAM (fast) {r_fast['s/image']:.1f} s per 224² tile "
            f"({r_fast['× Grad-CAM']:.0f}× Grad-CAM's {r_cam['s/image'] * 1000:.0f} ms)"
        )
        if r_paper:
            line += (
                f"; Med-CAM (paper, {result.settings.paper.steps} of 880 steps) "
                f"{r_paper['s/image']:.1f} s per image on the paper subset"
            )
        out.append(line + ".")
    return out


def render(result: EvalResult) -> str:
    """The Markdown block written into BENCHMARKS.md (and printed)."""
    s = result.settings
    rows = summary_rows(result)
    n_syn = sum(1 for c in result.cases if c.group in ("standard", "hard"))
    n_hard = sum(1 for c in result.cases if c.group == "hard")
    n_ihc = sum(1 for c in result.cases if c.group == "ihc")
    head = (
        f"Run `{s.label}` on {time.strftime('%Y-%m-%d')}: {n_syn} synthetic positive tiles "
        f"({n_hard} hard), {n_ihc} held-out IHC patches; Med-CAM (paper) with "
        f"{s.paper.steps} of its 880 steps on the paper subset; RISE with {s.rise_masks} "
        f"masks; curves with {s.curve_steps} steps. Machine: {result.machine}. "
        f"Total {result.seconds / 60:.1f} min."
    )
    fallback = sorted({r["case"] for r in result.records if r.get("area_fallback")})
    if fallback:
        head += (
            f" Med-CAM (fast)'s mask was empty on {len(fallback)} image(s); there the "
            "other methods were cut at the reference's area instead."
        )
    bullets = "\n".join(f"- {c}" for c in claims(result, rows))
    return f"{head}\n\n{markdown_table(rows)}\n\n{LEGEND}\n\n{bullets}\n"


def write_benchmarks(path: str | Path, block: str) -> Path:
    """Put ``block`` between the evaluation markers of ``path`` (created if missing).

    Only the text between the markers changes; a missing section is appended with
    its heading, so that other sections (e.g. "## Speed") are left as they are.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    marked = f"{BEGIN}\n{block.rstrip()}\n{END}"
    start = text.find("<!-- evaluation:begin")
    stop = text.find(END)
    if start != -1 and stop > start:
        text = text[:start] + marked + text[stop + len(END) :]
    elif SECTION in text:
        at = text.index(SECTION) + len(SECTION)
        text = text[:at] + "\n\n" + marked + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{marked}\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
