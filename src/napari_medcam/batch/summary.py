"""``summary.csv`` and ``summary.html`` of a cohort folder: one row per slide.

Made from the manifest and each finished slide's ``result.json`` (small files: no
slide is opened here). The HTML page is static and self-contained apart from the
slides' own thumbnails and files, linked relatively, so the folder can be moved,
zipped, or opened from a file share in any browser.

A cohort explained with a slide (MIL) classifier adds `DECISION_COLUMNS` (the sentence,
kept tiles of tiles, whether they meet the goal and are necessary, the probabilities);
its slides have no tile verdicts (``tiles_explained``, ``tiles_valid`` blank) and its
``evidence_area_fraction`` and ``evidence_level0_px`` are the kept tiles' area.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

from napari_medcam.batch import agreement
from napari_medcam.batch.manifest import DONE, Manifest
from napari_medcam.batch.outputs import (
    DECISION,
    EVIDENCE_GEOJSON,
    EVIDENCE_JSON,
    GEOJSON,
    MASK,
    OVERLAY,
    RESULT,
    THUMB,
    TILES,
    read_result,
)
from napari_medcam.io import write_files

COLUMNS = (
    "slide",
    "status",
    "reason",
    "class_found",
    "valid",
    "tiles",
    "tiles_explained",
    "tiles_valid",
    "evidence_area_fraction",
    "evidence_level0_px",
    "evidence_regions",
    "level",
    "level_mpp",
    "seconds",
    "path",
    "folder",
    *agreement.COLUMNS,
)
#: a slide-classifier cohort's columns, after `COLUMNS`
DECISION_COLUMNS = ("sentence", "kept_tiles", "meets_goal", "necessary", "p_original", "p_kept")


def columns(manifest: Manifest) -> tuple[str, ...]:
    """summary.csv's columns: `COLUMNS`, and `DECISION_COLUMNS` for a slide-classifier cohort."""
    return COLUMNS + DECISION_COLUMNS if decisions(manifest) else COLUMNS


def decisions(manifest: Manifest) -> bool:
    """Whether the cohort was explained with a slide (MIL) classifier."""
    return bool(manifest.settings.get("slide_classifier"))


def _or_blank(value: Any) -> Any:
    return "" if value is None else value


def _notes(result: dict[str, Any]) -> str:
    """A finished slide's notes: why its explanation is not valid, and its warnings (the
    level could not be matched to the classifier's µm/px)."""
    notes = [] if result["valid"] else [str(result["explanation_status"])]
    warnings = result.get("warnings")
    if isinstance(warnings, list):
        notes += [f"warning: {w}" for w in warnings]
    return "; ".join(notes)


def summary_rows(manifest: Manifest, annotations: Path | None = None) -> list[dict[str, Any]]:
    """One dict per slide of the manifest (COLUMNS), finished ones from their result.json;
    with an ``annotations`` folder, each finished slide that has one scored against it
    (`napari_medcam.batch.agreement`)."""
    rows = []
    for sid, rec in manifest.slides.items():
        row: dict[str, Any] = dict.fromkeys(columns(manifest), "")
        row.update(slide=sid, path=rec["path"], folder=f"slides/{sid}")
        result = read_result(manifest.folder(sid)) if manifest.finished(sid) else None
        if result is not None:
            row.update(
                status=DONE,
                class_found=result["class_found"],
                valid=result["valid"],
                tiles=result["tiles"],
                tiles_explained=result.get("tiles_explained", ""),
                tiles_valid=result.get("tiles_valid", ""),
                evidence_area_fraction=result["area_fraction"],
                evidence_level0_px=result["evidence_level0_px"],
                evidence_regions=_or_blank(result.get("regions")),
                level=result["level"],
                level_mpp=_or_blank(result.get("level_mpp")),
                seconds=result["seconds"],
                reason=_notes(result),
            )
            if result.get("kind") == DECISION:
                row.update(
                    sentence=result["sentence"],
                    kept_tiles=result["kept"],
                    meets_goal=result["meets_goal"],
                    necessary=_or_blank(result["necessary"]),
                    p_original=result["p_original"],
                    p_kept=result["p_kept"],
                )
            reference = agreement.annotation_for(annotations, rec["path"]) if annotations else None
            if reference is not None:
                row.update(agreement.agreement_cells(manifest.folder(sid), reference))
        else:
            status = rec.get("status", "new")
            row.update(
                status="not finished" if status == DONE else status,
                reason=rec.get("reason", ""),
                seconds=rec.get("seconds", ""),
            )
        rows.append(row)
    return rows


def summary_csv(rows: list[dict[str, Any]], names: tuple[str, ...] = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, names, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:6px 10px;
text-align:left;vertical-align:top}th{background:#f4f4f4}img{display:block;max-width:200px}
.done{color:#2e7d32}.failed{color:#c62828;font-weight:bold}.other{color:#ef6c00}
.bad{color:#ef6c00}.small{font-size:85%;color:#555}code{font-size:85%}
"""


def _status_cell(row: dict[str, Any]) -> str:
    status = str(row["status"])
    cls = {"done": "done", "failed": "failed"}.get(status, "other")
    out = f'<span class="{cls}">{html.escape(status)}</span>'
    if row["status"] == DONE:
        verdict = "valid" if row["valid"] else "not valid"
        if row.get("kept_tiles", "") != "":  # a slide decision: its kept tiles' goal
            verdict = "meets its goal" if row["valid"] else "goal not met"
        out += f'<br><span class="{"done" if row["valid"] else "bad"}">{verdict}</span>'
    if row["reason"]:
        out += f'<br><span class="small">{html.escape(str(row["reason"]))}</span>'
    return out


def _agreement_cell(row: dict[str, Any]) -> str:
    """Scores against the slide's annotation, or why it was refused, or nothing."""
    if not row["annotation"]:
        return ""
    name = f"<br><span class=small>vs {html.escape(str(row['annotation']))}</span>"
    if row["annotation_problem"]:
        return (
            f"<span class=bad>refused</span>{name}<br><span class=small>"
            + html.escape(str(row["annotation_problem"]))
            + "</span>"
        )
    return (
        f"Dice {float(row['dice']):.2f}<br><span class=small>precision "
        f"{float(row['precision']):.2f}, recall {float(row['recall']):.2f}, "
        f"{html.escape(str(row['regions_touched']))} annotated regions touched</span>{name}"
    )


def _level_words(settings: dict[str, Any]) -> str:
    level = str(settings.get("level", "auto"))
    mpp = settings.get("mpp")
    return f"{level} (nearest {mpp:g} µm/px)" if isinstance(mpp, (int, float)) else level


def summary_html(manifest: Manifest, rows: list[dict[str, Any]], annotated: bool = False) -> str:
    """The page a pathologist opens: per slide its thumbnail, its evidence, the numbers
    (and, with ``annotated``, its agreement with the slide's reference annotation)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    cfg = manifest.settings["config"]
    mil = decisions(manifest)
    head = (
        f"<h1>Med-CAM cohort: {len(rows)} slides</h1><p>"
        + ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items()))
        + "</p><p class=small>"
        + (_decision_words(manifest) if mil else _tile_words(manifest, cfg))
        + "</p>"
    )
    lines = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Med-CAM cohort {html.escape(manifest.out.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        head,
        "<table><tr><th>slide</th><th>status</th><th>slide</th><th>evidence</th>"
        + (
            "<th>decision</th><th>kept tiles / tiles</th><th>kept area</th>"
            if mil
            else "<th>finding</th><th>tiles valid / explained</th><th>evidence area</th>"
        )
        + ("<th>vs annotation</th>" if annotated else "")
        + "<th>seconds</th><th>files</th></tr>",
    ]
    names = (EVIDENCE_GEOJSON, EVIDENCE_JSON, RESULT) if mil else (MASK, GEOJSON, TILES, RESULT)
    for r in rows:
        folder = f"slides/{html.escape(r['slide'])}"
        done = r["status"] == DONE
        imgs = (
            [
                f'<img src="{folder}/{THUMB}" alt="slide">',
                f'<img src="{folder}/{OVERLAY}" alt="evidence">',
            ]
            if done
            else ["", ""]
        )
        files = " ".join(f'<a href="{folder}/{n}">{n}</a>' for n in names) if done else ""
        area = (
            f"{100 * float(r['evidence_area_fraction']):.2f} %<br>"
            f"<span class=small>{int(r['evidence_level0_px']):,} level-0 px"
            + (f", {r['evidence_regions']} regions" if r["evidence_regions"] != "" else "")
            + "</span>"
            if done
            else ""
        )
        decided = done and mil and r.get("kept_tiles", "") != ""
        tiles = (
            f"{r['kept_tiles']} / {r['tiles']}"
            if decided
            else f"{r['tiles_valid']} / {r['tiles_explained']}"
            if done
            else ""
        )
        finding = html.escape(str(r["class_found"] or ("none" if done else "")))
        if decided:
            finding += (
                f"<br><span class=small>{html.escape(str(r['sentence']))} p = "
                f"{float(r['p_original']):.2f} on the whole slide, {float(r['p_kept']):.2f} "
                "on the kept tiles alone</span>"
            )
        seconds = f"{float(r['seconds']):.1f}" if r["seconds"] != "" else ""
        lines.append(
            f"<tr><td><b>{html.escape(r['slide'])}</b><br><span class=small>"
            f"{html.escape(str(r['path']))}</span></td><td>{_status_cell(r)}</td>"
            f"<td>{imgs[0]}</td><td>{imgs[1]}</td>"
            f"<td>{finding}</td>"
            f"<td>{tiles}</td><td>{area}</td>"
            + (f"<td>{_agreement_cell(r)}</td>" if annotated else "")
            + f"<td>{seconds}</td><td>{files}</td></tr>"
        )
    lines.append("</table></body></html>")
    return "\n".join(lines)


def _decision_words(manifest: Manifest) -> str:
    """The head of a slide-classifier cohort's page: what explained it, and how."""
    settings = manifest.settings
    return (
        f"slide classifier <code>{html.escape(str(settings['slide_classifier']))}</code> "
        f"(fingerprint <code>{settings['classifier_fingerprint'][:12]}</code>), level "
        f"{html.escape(str(settings.get('level', 'auto')))}, target "
        f"{html.escape(str(settings.get('target') or 'the slide’s decision'))}, absent tiles "
        f"{'removed' if settings.get('absence') == 'removal' else 'replaced'}"
        + (", pixels inside the kept tiles" if settings.get("pixels") else "")
        + f", tolerance {settings['config']['tolerance']}; settings <code>{manifest.hash}"
        "</code>. The smallest set of tiles that alone keeps each slide's decision, in cyan."
    )


def _tile_words(manifest: Manifest, cfg: dict[str, Any]) -> str:
    """The head of a tile-classifier cohort's page: what explained it, and how."""
    return (
        f"classifier <code>{html.escape(str(manifest.classifier['spec']))}"
        f"</code> (fingerprint <code>{manifest.settings['classifier_fingerprint'][:12]}</code>), "
        f"level {html.escape(_level_words(manifest.settings))}, target "
        f"{html.escape(str(manifest.settings.get('target') or 'predicted class'))}, "
        + (
            f"amortised explainer <code>{manifest.settings['explainer'][:12]}</code>, "
            if manifest.settings.get("explainer")
            else f"≤ {cfg['steps'] + cfg['refine_steps']} steps per tile, "
        )
        + f"tolerance {cfg['tolerance']}; "
        f"settings <code>{manifest.hash}</code>. Evidence in cyan; tiles whose mask failed "
        "its checks outlined in orange (they add no evidence)."
    )


def write_summary(manifest: Manifest, annotations: Path | None = None) -> list[Path]:
    """Write ``summary.csv`` and ``summary.html`` into the cohort folder (both, or neither);
    ``annotations``: a folder of reference annotations to score the evidence against."""
    rows = summary_rows(manifest, annotations)
    csv_text = summary_csv(rows, columns(manifest))
    page = summary_html(manifest, rows, annotations is not None)
    return write_files(
        {
            manifest.out / "summary.csv": lambda tmp: tmp.write_text(csv_text),
            manifest.out / "summary.html": lambda tmp: tmp.write_text(page),
        },
        overwrite=True,
    )
