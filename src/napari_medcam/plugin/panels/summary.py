"""The result panel: one plain sentence first, then the numbers, each with a tooltip.

The sentence says what the mask shows and how sure, from two measurements: the
masked confidence (is the mask *sufficient*: does the classifier keep its decision
on the mask alone?) and the deletion confidence (is it *necessary*: does the
decision go when the mask's content is removed?). docs/reading-results.md says the
same at length; "What do these mean?" opens it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QDialog,
    QGridLayout,
    QGroupBox,
    QLabel,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from napari_medcam.plugin.panels.common import add_rows, wrap

#: the docs page the "What do these mean?" link opens (in a source checkout)
READING_DOC = Path(__file__).resolve().parents[4] / "docs" / "reading-results.md"

TIPS = {
    "class": "The class explained: the predicted class unless you chose another.",
    "confidence": "p(class) on the whole image → on the image with everything outside the "
    "mask replaced by the absence. The mask is sufficient when the second keeps the decision.",
    "robust": "Mean p(class) on the mask over perturbations drawn around the absence: "
    "the decision should not depend on what replaces the rest of the image.",
    "mask removed": "p(class) with the mask's content replaced by the absence (deletion). "
    "Low: the mask is necessary, without it the classifier changes its mind. High: there "
    "is more evidence for the class outside the mask.",
    "area": "Share of the explained image inside the mask.",
    "regions": "Separate regions of the mask (pixels joined along an edge; one region is one "
    "polygon in the GeoJSON export), "
    "at the detail scale chosen in Settings, after dropping those under the minimum size.",
    "context": "Whether the mask grown by one structure radius (more context) and shrunk by "
    "half of one (less) still gives the decision. Evidence that stops working when "
    "context is added is an artefact of the network, not a finding.",
    "time": "Wall time of the run, optimisation steps (per tile), and tiles explained.",
    "explained": "Which part of which image the classifier saw.",
    "absence": "What replaces the image outside the mask, chosen per image among "
    "candidates the classifier does not call the class (and which others were neutral).",
    "layers": "The classifier's internal layers whose activations the mask must keep.",
    "p(class)": "Every class's probability on the image and on the mask alone.",
}


def plain_sentence(exp: Any) -> tuple[str, str]:
    """(verdict, one sentence) on what the mask shows: sufficient and necessary,
    sufficient only, or neither (not trustworthy, with the engine's reason)."""
    c = exp.class_name
    pm, pd = exp.masked_confidence, exp.deletion_confidence
    tiles = f" ({exp.status})" if exp.valid and exp.status != "valid" else ""
    if not exp.valid:
        return (
            "not trustworthy",
            f"The mask does not hold the '{c}' decision, so it shows no evidence: {exp.status}.",
        )
    if pd < 0.5:
        return (
            "sufficient and necessary",
            f"The '{c}' decision rests on the outlined region: on it alone the classifier "
            f"still says '{c}' ({pm:.0%}), and without it, it no longer does ({pd:.0%}){tiles}.",
        )
    return (
        "sufficient, not necessary",
        f"The outlined region alone is enough for '{c}' ({pm:.0%}), but it is not the only "
        f"evidence: with it removed the classifier still says '{c}' ({pd:.0%}); look for "
        f"more of the same elsewhere{tiles}.",
    )


def facts(exp: Any, where: str = "", regions: str = "") -> list[tuple[str, str]]:
    """(name, rich-text value) rows of the numbers under the sentence."""
    esc = html.escape
    unit = "slices" if exp.provenance.get("slice_axis") is not None else "tiles"
    tiles = f" · {exp.tiles} {unit}" if exp.tiles > 1 else ""
    rows = [
        ("class", f"<b>{esc(exp.class_name)}</b>"),
        (
            "confidence",
            f"{exp.original_confidence:.3f} → <b>{exp.masked_confidence:.3f}</b> on the mask",
        ),
        ("robust", f"{exp.robust_confidence:.3f} on perturbations"),
        ("mask removed", f"{exp.deletion_confidence:.3f}"),
        ("area", f"{100 * exp.area_fraction:.1f} % of the image"),
    ]
    if regions:
        rows.append(("regions", esc(regions)))
    if exp.context_keeps is not None:
        rows.append(("context", context_text(exp)))
    rows.append(("time", f"{exp.seconds:.1f} s · {exp.steps} steps{tiles}"))
    if where:
        rows.append(("explained", esc(where)))
    if exp.absence:
        neutral = [
            c["name"] for c in exp.provenance.get("absence_candidates", []) if c.get("neutral")
        ]
        others = [n for n in neutral if n != exp.absence]
        also = f" (also neutral: {esc(', '.join(others))})" if others else ""
        rows.append(("absence", f"{esc(exp.absence)}{also}"))
    layers = exp.provenance.get("activation_layers")
    if layers is not None:
        rows.append(("layers", esc(", ".join(layers)) or "none (outputs only)"))
    return rows


def context_text(exp: Any) -> str:
    """Whether more / less context around the regions keeps the decision, in words."""

    def said(share: float | None) -> str:
        if share is None:
            return "?"
        if exp.tiles > 1:
            return f"on {share:.0%} of tiles"
        return "yes" if share >= 1 else "<b>no</b>"

    return (
        f"grown by a radius: keeps the decision {said(exp.context_keeps)} · "
        f"shrunk by half a radius: {said(exp.trim_keeps)}"
    )


def probabilities_html(exp: Any, class_names: list[str]) -> str:
    """p(class) on the image and on the mask, the explained class in bold."""
    esc = html.escape
    if len(class_names) != len(exp.probabilities):
        class_names = [f"class {i}" for i in range(len(exp.probabilities))]
    bold = [
        "<b>" + esc(n) + "</b>" if i == exp.target else esc(n) for i, n in enumerate(class_names)
    ]
    rows = "".join(
        f"<tr><td>{bold[i]}</td><td align='right'>{p:.3f}</td><td align='right'>{q:.3f}</td></tr>"
        for i, (p, q) in enumerate(zip(exp.probabilities, exp.masked_probabilities))
    )
    return (
        "<table cellspacing='0' cellpadding='2'>"
        "<tr><td style='color:gray'>p(class)&nbsp;&nbsp;&nbsp;</td>"
        "<td style='color:gray' align='right'>&nbsp;image&nbsp;</td>"
        "<td style='color:gray' align='right'>&nbsp;&nbsp;mask</td></tr>"
        f"{rows}</table>"
    )


def legend_html(exp: Any, notes: dict[str, Any]) -> str:
    """A legend of the layers a run added: outline colour, tile map, hidden extras."""
    from napari_medcam.plugin.results import class_color
    from napari_medcam.plugin.tile_map import TILE_COLORS

    esc = html.escape

    def swatch(colour: str) -> str:
        return f"<span style='color:{colour}'>■</span>"

    rows = [f"{swatch(class_color(exp.target))} evidence for '{esc(exp.class_name)}' (Med-CAM)"]
    classes = exp.label_classes
    if len(classes) > 1:  # one layer, a label value and colour per class
        each = [f"{swatch(class_color(v - 1))} {esc(n)}" for v, n in sorted(classes.items())]
        rows = ["evidence (Med-CAM): " + " · ".join(each)]
    if exp.tiles > 1 and exp.tile_verdicts and exp.provenance.get("slice_axis") is None:
        rows.append(
            f"{swatch(TILE_COLORS[1])} tiles whose mask held · "
            f"{swatch(TILE_COLORS[2])} tiles that failed · "
            f"{swatch(TILE_COLORS[None])} tissue of another class (hover: which) · "
            "unmarked: no tissue"
        )
    if notes.get("hidden"):
        rows.append("hidden, tick the eye to see: " + esc(", ".join(notes["hidden"])))
    return "<br>".join(rows)


class SummaryPanel(QGroupBox):
    """The plain sentence, the numbers (each with a tooltip) and every class's probability."""

    def __init__(self) -> None:
        super().__init__("Result")
        self.sentence = QLabel("No explanation yet.")
        wrap(self.sentence, rich=True)
        self.grid_box = QWidget()
        self.grid = QGridLayout(self.grid_box)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(1)
        self.probs = QLabel("")
        wrap(self.probs, rich=True)
        self.probs.setToolTip(TIPS["p(class)"])
        self.link = QLabel("<a href='reading-results'>What do these mean?</a>")
        self.link.setToolTip(f"Opens {READING_DOC.name}: how to read a result")
        self.link.linkActivated.connect(lambda _h: self.show_help())
        self.legend = QLabel("")
        wrap(self.legend, rich=True)
        self.legend.setVisible(False)
        self.legend.setToolTip("What the layers the run added show")
        self.stale = QLabel("")
        wrap(self.stale, rich=True)
        self.stale.setVisible(False)
        add_rows(self, self.sentence, self.stale, self.legend, self.grid_box, self.probs, self.link)
        self._cells: list[QLabel] = []
        self.grid_box.setVisible(False)
        self.probs.setVisible(False)

    def show_explanation(
        self,
        exp: Any,
        class_names: list[str],
        where: str = "",
        notes: dict[str, Any] | None = None,
    ) -> None:
        """Show a run's result; ``notes`` has the image's ``domain`` check, and when a
        layer was added its ``regions`` text and the ``hidden`` extra layers."""
        notes = notes or {}
        regions = notes.get("regions", "")
        verdict, sentence = plain_sentence(exp)
        domain = notes.get("domain")
        outside = domain is not None and domain.out_of_domain
        colour = "#5cb85c" if exp.valid and not outside else "#f0ad4e"
        warning = (
            "<span style='color:#f0ad4e'><b>⚠ Out of domain</b>: the image is unlike the "
            "classifier's training data, so this may mean nothing.</span><br>"
            if outside
            else ""
        )
        self.sentence.setText(
            f"{warning}<span style='color:{colour}'><b>{html.escape(verdict.capitalize())}."
            f"</b></span> {html.escape(sentence)}"
        )
        self.sentence.setToolTip(exp.one_line())
        self.set_stale("")
        for cell in self._cells:
            self.grid.removeWidget(cell)
            cell.deleteLater()
        self._cells = []
        for row, (name, value) in enumerate(facts(exp, where, regions)):
            for col, text in enumerate((f"<span style='color:gray'>{name}</span>", value)):
                cell = QLabel(text)
                wrap(cell, rich=True)
                cell.setToolTip(TIPS.get(name, ""))
                self.grid.addWidget(cell, row, col)
                self._cells.append(cell)
        self.grid.setColumnStretch(1, 1)
        self.probs.setText(probabilities_html(exp, class_names))
        self.legend.setText(legend_html(exp, notes) if "regions" in notes else "")
        self.legend.setVisible("regions" in notes)
        self.grid_box.setVisible(True)
        self.probs.setVisible(True)

    def set_stale(self, reason: str) -> None:
        """Say the numbers no longer describe the mask (it was edited), or clear that."""
        self.stale.setText(f"<span style='color:#f0ad4e'>⚠ {html.escape(reason)}</span>")
        self.stale.setVisible(bool(reason))

    def text(self) -> str:
        """Everything the panel says, as rich text (for tests and screenshots)."""
        cells = "".join(c.text() for c in self._cells)
        head = self.sentence.text() + self.stale.text() + self.legend.text()
        return head + cells + self.probs.text()

    def show_help(self) -> None:
        """Show docs/reading-results.md in a dialog (the page, or where to find it)."""
        dialog = QDialog(self)
        dialog.setWindowTitle("Reading a Med-CAM result")
        browser = QTextBrowser(dialog)
        browser.setOpenExternalLinks(True)
        if READING_DOC.is_file():
            browser.setMarkdown(READING_DOC.read_text(encoding="utf-8"))
        else:
            browser.setPlainText("See docs/reading-results.md in napari-medcam's repository.")
        QVBoxLayout(dialog).addWidget(browser)
        dialog.resize(560, 640)
        dialog.show()
