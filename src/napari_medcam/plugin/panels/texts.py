"""Rich text of the review panel: a check's outcome, a comparison's scores."""

from __future__ import annotations

import html
from typing import Any

from napari_medcam.plugin.layers import META_KEY

SCORE_KEYS = ("dice", "iou", "precision", "recall")

#: put before a check or scores measured on an earlier state of the mask
OUT_OF_DATE = (
    "<span style='color:#f0ad4e'>⚠ <b>Out of date</b>: the mask changed since; "
    "press {what} again.</span><br>"
)


def check_text(res: dict[str, Any], class_name: str, metadata: dict[str, Any]) -> str:
    """The check's outcome as rich text: confidence before → after, held or lost, where."""
    before = metadata.get(META_KEY, {}).get("summary", {})
    held = (
        "decision <b>held</b>"
        if res["held"]
        else "<span style='color:#f0ad4e'>decision <b>lost</b></span>"
    )
    was = before.get("masked_confidence")
    was_txt = f"{was:.3f} → " if isinstance(was, (int, float)) else ""
    name = html.escape(class_name)
    where = ""
    if "slices" in res:
        where = f" on {res['slices_held']} of {res['slices']} marked slices"
    elif res.get("tiled"):
        where = (
            f" on {res['tiles_held']} of {res['tiles']} '{name}' tiles "
            f"(mean per tile, as explained; {res['windows']} tiles in all)"
        )
    return (
        f"Edited mask: p({name}) {was_txt}<b>{res['masked']:.3f}</b>, "
        f"robust {res['robust']:.3f}, area {100 * res['area_fraction']:.1f} % · {held}{where}"
    )


def scores_text(rows: list[dict[str, Any]], reference: str, gradcam: bool) -> str:
    """The comparison as a rich-text table."""
    head = "".join(
        f"<td align='right' style='color:gray'>&nbsp;{h}</td>"
        for h in ("Dice", "IoU", "prec.", "recall")
    )
    body = "".join(
        f"<tr><td>{html.escape(r['method'])}</td>"
        + "".join(f"<td align='right'>&nbsp;{r[k]:.3f}</td>" for k in SCORE_KEYS)
        + "</tr>"
        for r in rows
    )
    note = "" if gradcam else "<br>Grad-CAM: n/a for this model"
    return (
        f"vs <b>{html.escape(reference)}</b> (Grad-CAM thresholded to the same area):"
        f"<table cellspacing='0' cellpadding='2'><tr><td></td>{head}</tr>{body}</table>{note}"
    )
