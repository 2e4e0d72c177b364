"""The result panel: what the last explanation found, as a table."""

from __future__ import annotations

import html
from typing import Any

from qtpy.QtWidgets import QGroupBox, QLabel

from napari_medcam.plugin.panels.common import add_rows, wrap


class SummaryPanel(QGroupBox):
    """Decision kept?, confidences, area, time, and every class's probability."""

    def __init__(self) -> None:
        super().__init__("Result")
        self.label = QLabel("No explanation yet.")
        wrap(self.label, rich=True)
        add_rows(self, self.label)

    def show_explanation(self, exp: Any, class_names: list[str], where: str = "") -> None:
        self.label.setText(summary_html(exp, class_names, where))
        self.label.setToolTip(exp.one_line())


def summary_html(exp: Any, class_names: list[str], where: str = "") -> str:
    """An `Explanation` as rich text: facts, then p(class) on the image and on the mask."""
    esc = html.escape
    if len(class_names) != len(exp.probabilities):
        class_names = [f"class {i}" for i in range(len(exp.probabilities))]
    state = (
        "<span style='color:#5cb85c'><b>valid</b></span>"
        if exp.valid
        else f"<span style='color:#f0ad4e'><b>not valid</b></span>: {esc(exp.status)}"
    )
    if exp.valid and exp.status != "valid":  # tiles or slices: how many hold
        state += f"<br>{esc(exp.status)}"
    unit = "slices" if exp.provenance.get("slice_axis") is not None else "tiles"
    tiles = f" · {exp.tiles} {unit}" if exp.tiles > 1 else ""
    facts = [
        ("class", f"<b>{esc(exp.class_name)}</b> — {state}"),
        (
            "confidence",
            f"{exp.original_confidence:.3f} → <b>{exp.masked_confidence:.3f}</b> on the mask",
        ),
        ("robust", f"{exp.robust_confidence:.3f} on random backgrounds"),
        ("mask removed", f"{exp.deletion_confidence:.3f}"),
        ("area", f"{100 * exp.area_fraction:.1f} % of the image"),
        ("time", f"{exp.seconds:.1f} s · {exp.steps} steps{tiles}"),
    ]
    if where:
        facts.append(("explained", esc(where)))
    facts += _choices(exp)
    head = "".join(f"<tr><td style='color:gray'>{k}</td><td>{v}</td></tr>" for k, v in facts)
    bold = [
        "<b>" + esc(n) + "</b>" if i == exp.target else esc(n) for i, n in enumerate(class_names)
    ]
    probs = "".join(
        f"<tr><td>{bold[i]}</td><td align='right'>{p:.3f}</td><td align='right'>{q:.3f}</td></tr>"
        for i, (p, q) in enumerate(zip(exp.probabilities, exp.masked_probabilities))
    )
    return (
        f"<table cellspacing='0' cellpadding='2'>{head}</table>"
        "<table cellspacing='0' cellpadding='2' style='margin-top:6px'>"
        "<tr><td style='color:gray'>p(class)&nbsp;&nbsp;&nbsp;</td>"
        "<td style='color:gray' align='right'>&nbsp;image&nbsp;</td>"
        "<td style='color:gray' align='right'>&nbsp;&nbsp;mask</td></tr>"
        f"{probs}</table>"
    )


def _choices(exp: Any) -> list[tuple[str, str]]:
    """What the engine chose for this classifier: replacement image and matched layers."""
    esc = html.escape
    out = []
    if exp.baseline:
        neutral = [
            c["name"] for c in exp.provenance.get("absence_candidates", []) if c.get("neutral")
        ]
        others = [n for n in neutral if n != exp.baseline]
        tip = f" (also neutral: {esc(', '.join(others))})" if others else ""
        out.append(("absence", f"{esc(exp.baseline)}{tip}"))
    layers = exp.provenance.get("activation_layers")
    if layers is not None:
        out.append(("layers", esc(", ".join(layers)) or "none (outputs only)"))
    return out
