"""The review panel: check an edited mask, compare it with a reference, side by side."""

from __future__ import annotations

import csv
import html
import io as _io
import weakref
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QApplication, QFileDialog, QGroupBox, QLabel

from napari_medcam.plugin.annotations import annotation_path, annotation_rows
from napari_medcam.plugin.layers import META_KEY, is_own_layer, region_of, region_pixels
from napari_medcam.plugin.panels.common import Notifier, Session, add_rows, wrap
from napari_medcam.plugin.panels.edits import content_hash
from napari_medcam.plugin.panels.grid import enter_side_by_side, leave_side_by_side
from napari_medcam.plugin.panels.texts import OUT_OF_DATE, check_text, scores_text
from napari_medcam.plugin.results import ResultRecord, ResultStore
from napari_medcam.plugin.worker import CheckJob, check_worker


class ReviewPanel(QGroupBox):
    """Check edited mask · Compare with · Copy / Save CSV · Side by side.

    ``status`` reports one-line outcomes; ``changed`` asks for the buttons to be
    updated (a check started or ended, scores appeared).
    """

    status = Signal(str)
    changed = Signal()

    def __init__(
        self,
        viewer: Any,
        session: Session,
        notify: Notifier,
        results: ResultStore,
        threads: Any,
    ) -> None:
        super().__init__("Check and compare")
        self.viewer = viewer
        self.session = session
        self.notify = notify
        self.results = results
        self._threads = threads  # () -> torch threads for a check
        self.last_check: dict[str, Any] | None = None
        self.last_scores: list[dict[str, Any]] = []
        self._side: dict[str, Any] | None = None  # what side by side will restore
        # (layer, content hash) the shown check and scores were measured on
        self._checked: tuple[Any, str] | None = None
        self._scored: tuple[Any, str] | None = None
        self._check_html = self._scores_html = ""
        self.result_combo = ComboBox(label="Mask", choices=self._result_choices, nullable=True)
        self.reference_combo = ComboBox(
            label="Compare with", choices=self._reference_choices, nullable=True
        )
        self.check_button = PushButton(text="Check edited mask")
        self.check_label = QLabel("")
        wrap(self.check_label, rich=True)
        self.check_label.setVisible(False)
        self.compare_button = PushButton(text="Compare")
        self.copy_button = PushButton(text="Copy")
        self.csv_button = PushButton(text="Save CSV…")
        self.side_by_side = CheckBox(text="side by side (grid)", value=False)
        self.scores_label = QLabel("")
        wrap(self.scores_label, rich=True)
        self.scores_label.setVisible(False)
        form = Container(widgets=[self.result_combo, self.reference_combo])
        buttons = Container(
            widgets=[self.check_button, self.compare_button], layout="horizontal", labels=False
        )
        scores = Container(
            widgets=[self.copy_button, self.csv_button, self.side_by_side],
            layout="horizontal",
            labels=False,
        )
        for c in (form, buttons, scores):
            c.margins = (0, 0, 0, 0)
        add_rows(self, form, buttons, self.check_label, self.scores_label, scores)
        self.check_button.clicked.connect(self._on_check_clicked)
        self.compare_button.clicked.connect(self.compare)
        self.copy_button.clicked.connect(self.copy_scores)
        self.csv_button.clicked.connect(self._save_csv_dialog)
        self.side_by_side.changed.connect(self.set_side_by_side)
        self.result_combo.changed.connect(lambda *_: self.changed.emit())
        self.reference_combo.changed.connect(lambda *_: self.changed.emit())

    # ------------------------------------------------------------ choices
    def _result_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(ly.name, ly) for ly in self.results.layers()]

    def _reference_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        return [
            (ly.name, ly)
            for ly in self.viewer.layers
            if isinstance(ly, Labels) and ly not in self.results and not is_own_layer(ly)
        ]

    def refresh_choices(self) -> None:
        """The layers changed: list them again; a reference is chosen if there is one."""
        for combo in (self.result_combo, self.reference_combo):
            with combo.changed.blocked():
                combo.reset_choices()
        if self.reference_combo.value is None:
            refs = self._reference_choices()
            if refs:
                with self.reference_combo.changed.blocked():
                    self.reference_combo.value = refs[-1][1]

    def select_result(self, layer: Any) -> None:
        """Make ``layer`` (a result) the mask to check, compare and save."""
        self.refresh_choices()
        with self.result_combo.changed.blocked():
            self.result_combo.value = layer

    def update_buttons(self, explaining: bool) -> None:
        result = self.result_combo.value is not None
        checking = self.session.checking
        # while a check runs its button cancels it; no check during an explanation
        self.check_button.text = "Cancel check" if checking else "Check edited mask"
        self.check_button.enabled = checking or (result and not explaining)
        self.compare_button.enabled = result and self.reference_combo.value is not None
        self.copy_button.enabled = bool(self.last_scores)
        self.csv_button.enabled = bool(self.last_scores)

    def _record(self, layer: Any) -> ResultRecord | None:
        if layer is None:
            self.notify.info("Choose a Med-CAM mask layer first")
            return None
        rec = self.results.get(layer)
        if rec is None:
            self.notify.error(f"'{layer.name}' is not a Med-CAM result of this session")
        return rec

    # ------------------------------------------------------------ check edits
    def check_edited_mask(self, _v: Any = None) -> Any:
        """Score the (edited) mask as its explanation was made; returns the worker.

        The mask is copied now (painting on goes on in the layer, not in the check),
        and scored in the background tile by tile on the explanation's grid, with
        progress; pressing the button again cancels. Not while an explanation runs:
        both would move the one classifier between devices.
        """
        if self.session.checking:
            self.notify.info("Med-CAM is already checking a mask: wait for it, or cancel it")
            return None
        if self.session.explaining:
            self.notify.info(
                "Med-CAM is explaining: wait until it has finished (or cancel it), "
                "then check the mask"
            )
            return None
        layer = self.result_combo.value
        rec = self._record(layer)
        if rec is None:
            return None
        source = rec.source_ref()
        if source is None or source not in self.viewer.layers:
            self.notify.error(f"the image '{rec.source_name}' is no longer open")
            return None
        try:
            image = region_pixels(source, rec.region)
            data = layer.data[0] if layer.multiscale else layer.data
            mask = region_of(data, rec.region)  # a copy: the user may go on painting
        except Exception as err:
            self.notify.error(f"cannot read the mask: {err}")
            return None
        self._checked = (weakref.ref(layer), content_hash(layer))
        job = CheckJob(
            image=image,
            mask=mask,
            classifier=rec.classifier,
            target=rec.target,
            config=rec.config,
            threads=int(self._threads()),
            slice_axis=rec.region.slice_axis,
        )
        worker = check_worker(job)
        worker.yielded.connect(self._on_check_progress)
        worker.returned.connect(partial(self._on_checked, layer, rec))
        worker.finished.connect(partial(self._on_check_finished, worker))
        self.session.check_job, self.session.check_worker = job, worker
        self.check_label.setText("Checking the edited mask…")
        self.check_label.setVisible(True)
        self.changed.emit()
        worker.start()
        return worker

    def cancel_check(self) -> None:
        """Stop the running check before its next tile."""
        if self.session.check_job is not None:
            self.session.check_job.cancel.set()
            self.check_label.setText("Cancelling the check…")

    def _on_check_clicked(self, _v: Any = None) -> None:
        if self.session.checking:
            self.cancel_check()
        else:
            self.check_edited_mask()

    def _on_check_progress(self, event: Any) -> None:
        if self.session.closed or event.total <= 1:
            return
        self.check_label.setText(
            f"Checking the edited mask… tile {event.done}/{event.total} "
            f"({100 * event.fraction:.0f} %)"
        )

    def _on_check_finished(self, worker: Any) -> None:
        if worker is self.session.check_worker:
            self.session.check_worker = self.session.check_job = None
            if not self.session.closed:
                self.changed.emit()

    def _on_checked(self, layer: Any, rec: ResultRecord, res: dict[str, Any]) -> None:
        if self.session.closed:
            return
        self.last_check = res
        if res.get("cancelled"):
            self.check_label.setText("Check cancelled.")
            return
        if "error" in res:
            self.check_label.setText(f"⚠ {html.escape(res['error'])}")
            self.notify.error(f"Med-CAM check: {res['error']}")
            return
        self._check_html = check_text(res, rec.class_name, layer.metadata)
        self.check_label.setText(self._check_html)
        new_meta = dict(layer.metadata)
        entry = dict(new_meta.get(META_KEY, {}))
        entry["check"] = {
            k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
            for k, v in res.items()
            if isinstance(v, (bool, np.bool_, int, float, np.number))
        }
        new_meta[META_KEY] = entry
        layer.metadata = new_meta

    # --------------------------------------------------------------- compare
    def compare(self, _v: Any = None) -> list[dict[str, Any]] | None:
        """Dice/IoU/precision/recall of the mask and of Grad-CAM at equal area vs a reference."""
        from napari_medcam.metrics import overlap_scores, threshold_to_area

        layer = self.result_combo.value
        ref = self.reference_combo.value
        rec = self._record(layer)
        if rec is None:
            return None
        if ref is None:
            self.notify.info("Choose a reference Labels layer under 'Compare with'")
            return None
        path = annotation_path(ref)
        if path is not None:  # a QuPath file: scored from it, per class, tile by tile
            data = layer.data[0] if layer.multiscale else layer.data
            downsample, origin = rec.region.level0_placement()
            try:
                rows = annotation_rows(
                    region_of(data, rec.region, copy=False), rec.gradcam, path, downsample, origin
                )
            except ValueError as err:
                self.notify.error(f"Cannot compare with '{ref.name}': {err}")
                return None
            return self._show_scores(rows, layer, ref.name, rec.gradcam is not None)
        if layer.multiscale:
            self.notify.error(
                f"'{layer.name}' is a mask too large for memory (kept on disk): "
                "explain a smaller region (or a coarser level) to compare it"
            )
            return None
        mask = region_of(layer.data, rec.region, copy=False)
        ref_data = np.asarray(ref.data)
        if ref_data.shape == tuple(rec.region.layer_shape):
            reference = region_of(ref_data, rec.region, copy=False)
        elif ref_data.shape == tuple(rec.region.shape):
            reference = ref_data
        else:
            self.notify.error(
                f"reference '{ref.name}' has shape {ref_data.shape}; the mask has "
                f"{tuple(rec.region.layer_shape)} (or {tuple(rec.region.shape)} for its plane)"
            )
            return None
        if not (
            np.allclose(ref.scale[-mask.ndim :], layer.scale[-mask.ndim :])
            and np.allclose(ref.translate[-mask.ndim :], layer.translate[-mask.ndim :])
        ):
            self.notify.warning(
                f"'{ref.name}' is placed differently from the mask (scale/translate): "
                "the scores compare pixel by pixel"
            )
        area = float((mask > 0).mean())
        rows = [
            {"method": "Med-CAM", "area_percent": 100 * area, **overlap_scores(mask, reference)}
        ]
        if rec.gradcam is not None:
            g = threshold_to_area(rec.gradcam, area)
            rows.append(
                {
                    "method": "Grad-CAM",
                    "area_percent": 100 * float(g.mean()),
                    **overlap_scores(g, reference),
                }
            )
        return self._show_scores(rows, layer, ref.name, rec.gradcam is not None)

    def _show_scores(
        self, rows: list[dict[str, Any]], layer: Any, reference: str, gradcam: bool
    ) -> list[dict[str, Any]]:
        for r in rows:
            r.update(mask=layer.name, reference=reference)
        self.last_scores = rows
        self.scores_label.setVisible(True)
        self._scored = (weakref.ref(layer), content_hash(layer))
        self._scores_html = scores_text(rows, reference, gradcam)
        self.scores_label.setText(self._scores_html)
        self.changed.emit()
        return rows

    def scores_csv(self) -> str:
        buf = _io.StringIO()
        keys = ["method", "dice", "iou", "precision", "recall", "area_percent", "mask", "reference"]
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in self.last_scores:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def copy_scores(self, _v: Any = None) -> None:
        if self.last_scores:
            QApplication.clipboard().setText(self.scores_csv())
            self.status.emit("Scores copied to the clipboard (CSV).")

    def save_scores(self, path: str | Path, overwrite: bool = False) -> Path:
        from napari_medcam.io import write_atomic

        text = self.scores_csv()
        return write_atomic(path, lambda tmp: tmp.write_text(text), overwrite)

    def _save_csv_dialog(self, _v: Any = None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save scores", str(Path.home() / "scores.csv"), "CSV (*.csv)"
        )
        if path:
            try:  # the dialog has asked before replacing a file
                self.save_scores(path, overwrite=True)
            except (OSError, ValueError) as err:
                self.notify.error(f"cannot save scores: {err}")

    # ---------------------------------------------------------------- edits
    def mark_edited(self, layer: Any, current: str | None) -> bool:
        """The mask may have changed: ``current`` is its content hash (None while being
        painted). The shown check and scores say whether they are out of date; True
        while either is."""
        stale = False
        for state, label, text, what in (
            (self._checked, self.check_label, self._check_html, "Check edited mask"),
            (self._scored, self.scores_label, self._scores_html, "Compare"),
        ):
            if state is None or state[0]() is not layer or not text:
                continue
            out = current is None or current != state[1]
            stale |= out
            label.setText(OUT_OF_DATE.format(what=what) + text if out else text)
        return stale

    # ----------------------------------------------------------- side by side
    def set_side_by_side(self, on: bool) -> None:
        """Grid view: image + Med-CAM mask in one pane, image + reference in the other."""
        on = bool(on)
        if on and self._side is None:
            layer = self.result_combo.value
            rec = self.results.get(layer) if layer is not None else None
            ref = self.reference_combo.value
            source = rec.source_ref() if rec is not None else None
            if rec is None or ref is None or source is None or source not in self.viewer.layers:
                self.notify.info(
                    "Side by side needs a Med-CAM mask, its image and a reference ('Compare with')"
                )
                with self.side_by_side.changed.blocked():
                    self.side_by_side.value = False
                return
            self._side = enter_side_by_side(self.viewer, source, layer, ref)
        elif not on and self._side is not None:
            state, self._side = self._side, None
            leave_side_by_side(self.viewer, state)
            with self.side_by_side.changed.blocked():
                self.side_by_side.value = False
