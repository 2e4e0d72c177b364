"""Review a result: check an edited mask, compare it with a reference, export it.

`ReviewMixin` holds the "Check and compare" part of the Med-CAM widget; it
uses the widget's form controls (``result_combo``, ``reference_combo``, ...),
its `ResultStore` (``results``) and its notification helpers.
"""

from __future__ import annotations

import csv
import html
import io as _io
import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QApplication, QFileDialog, QMessageBox

from napari_medcam.plugin.layers import META_KEY, region_of, region_pixels
from napari_medcam.plugin.results import ResultRecord
from napari_medcam.plugin.worker import CheckJob, check_worker
from napari_medcam.plugin.writer import pixel_size

SCORE_KEYS = ("dice", "iou", "precision", "recall")


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "mask"


def viewer_grid(viewer: Any) -> Any:
    """The viewer's grid settings: ``viewer.canvas.grid`` (napari ≥ 0.9), else ``viewer.grid``."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None)
    return grid if grid is not None else viewer.grid


class ReviewMixin:
    """Check edited mask · Compare with · Side by side · Save mask (part of `MedCAMWidget`)."""

    # provided by the widget
    viewer: Any
    results: Any
    _side: dict[str, Any] | None
    check_job: Any

    # ------------------------------------------------------------ check edits
    def _record(self, layer: Any) -> ResultRecord | None:
        if layer is None:
            self._notify_info("Choose a Med-CAM mask layer first")
            return None
        rec = self.results.get(layer)
        if rec is None:
            self._notify_error(f"'{layer.name}' is not a Med-CAM result of this session")
        return rec

    def check_edited_mask(self, _v: Any = None) -> Any:
        """Score the (edited) mask as its explanation was made; returns the worker.

        The mask is copied now (painting on goes on in the layer, not in the check),
        and scored in the background tile by tile on the explanation's grid, with
        progress; pressing the button again cancels. Not while an explanation runs:
        both would move the one classifier between devices.
        """
        if self.check_worker is not None:
            self._notify_info("Med-CAM is already checking a mask: wait for it, or cancel it")
            return None
        if self.worker is not None:
            self._notify_info(
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
            self._notify_error(f"the image '{rec.source_name}' is no longer open")
            return None
        try:
            image = region_pixels(source, rec.region)
            data = layer.data[0] if layer.multiscale else layer.data
            mask = region_of(data, rec.region)  # a copy: the user may go on painting
        except Exception as err:
            self._notify_error(f"cannot read the mask: {err}")
            return None
        job = CheckJob(
            image=image,
            mask=mask,
            classifier=rec.classifier,
            target=rec.target,
            config=rec.config,
            threads=int(self.threads_spin.value),
            slice_axis=rec.region.slice_axis,
        )
        worker = check_worker(job)
        worker.yielded.connect(self._on_check_progress)
        worker.returned.connect(partial(self._on_checked, layer, rec))
        worker.finished.connect(partial(self._on_check_finished, worker))
        self.check_worker = worker
        self.check_job = job
        self._session.check_job = job
        self.check_label.setText("Checking the edited mask…")
        self.check_label.setVisible(True)
        self._update_buttons()
        worker.start()
        return worker

    def cancel_check(self) -> None:
        """Stop the running check before its next tile."""
        if self.check_job is not None:
            self.check_job.cancel.set()
            self.check_label.setText("Cancelling the check…")

    def _on_check_clicked(self, _v: Any = None) -> None:
        if self.check_worker is not None:
            self.cancel_check()
        else:
            self.check_edited_mask()

    def _on_check_progress(self, event: Any) -> None:
        if self._closed or event.total <= 1:
            return
        self.check_label.setText(
            f"Checking the edited mask… tile {event.done}/{event.total} "
            f"({100 * event.fraction:.0f} %)"
        )

    def _on_check_finished(self, worker: Any) -> None:
        if worker is self.check_worker:
            self.check_worker = None
            self.check_job = None
            self._session.check_job = None
            if not self._closed:
                self._update_buttons()

    def _on_checked(self, layer: Any, rec: ResultRecord, res: dict[str, Any]) -> None:
        if self._closed:
            return
        self.last_check = res
        if res.get("cancelled"):
            self.check_label.setText("Check cancelled.")
            return
        if "error" in res:
            self.check_label.setText(f"⚠ {html.escape(res['error'])}")
            self._notify_error(f"Med-CAM check: {res['error']}")
            return
        meta = layer.metadata.get(META_KEY, {})
        before = meta.get("summary", {})
        held = (
            "decision <b>held</b>"
            if res["held"]
            else "<span style='color:#f0ad4e'>decision <b>lost</b></span>"
        )
        was = before.get("masked_confidence")
        was_txt = f"{was:.3f} → " if isinstance(was, (int, float)) else ""
        where = ""
        if "slices" in res:
            where = f" on {res['slices_held']} of {res['slices']} marked slices"
        elif res.get("tiled"):
            where = (
                f" on {res['tiles_held']} of {res['tiles']} '{html.escape(rec.class_name)}' "
                f"tiles (mean per tile, as explained; {res['windows']} tiles in all)"
            )
        self.check_label.setText(
            f"Edited mask: p({html.escape(rec.class_name)}) {was_txt}<b>{res['masked']:.3f}</b>, "
            f"robust {res['robust']:.3f}, area {100 * res['area_fraction']:.1f} % · {held}"
            f"{where}"
        )
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
            self._notify_info("Choose a reference Labels layer under 'Compare with'")
            return None
        if layer.multiscale:
            self._notify_error(
                f"'{layer.name}' is a mask too large for memory (kept on disk): "
                "explain a smaller region (or a coarser level) to compare it"
            )
            return None
        mask = region_of(layer.data, rec.region, copy=False)
        ref_data = np.asarray(ref.data)
        if ref_data.shape == tuple(rec.region.layer_shape):
            reference = region_of(ref_data, rec.region)
        elif ref_data.shape == tuple(rec.region.shape):
            reference = ref_data
        else:
            self._notify_error(
                f"reference '{ref.name}' has shape {ref_data.shape}; the mask has "
                f"{tuple(rec.region.layer_shape)} (or {tuple(rec.region.shape)} for its plane)"
            )
            return None
        if not (
            np.allclose(ref.scale[-mask.ndim :], layer.scale[-mask.ndim :])
            and np.allclose(ref.translate[-mask.ndim :], layer.translate[-mask.ndim :])
        ):
            self._notify_warning(
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
        for r in rows:
            r.update(mask=layer.name, reference=ref.name)
        self.last_scores = rows
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
        note = "" if rec.gradcam is not None else "<br>Grad-CAM: n/a for this model"
        self.scores_label.setVisible(True)
        self.scores_label.setText(
            f"vs <b>{html.escape(ref.name)}</b> (Grad-CAM thresholded to the same area):"
            f"<table cellspacing='0' cellpadding='2'><tr><td></td>{head}</tr>{body}</table>{note}"
        )
        self._update_buttons()
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
            self.status_label.value = "Scores copied to the clipboard (CSV)."

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
                self._notify_error(f"cannot save scores: {err}")

    # ----------------------------------------------------------- side by side
    def set_side_by_side(self, on: bool) -> None:
        """Grid view: image + Med-CAM mask in one pane, image + reference in the other."""
        on = bool(on)
        if on and self._side is None:
            self._enter_side_by_side()
        elif not on and self._side is not None:
            self._leave_side_by_side()

    def _enter_side_by_side(self) -> None:
        from napari.layers import Layer

        layer = self.result_combo.value
        rec = self.results.get(layer) if layer is not None else None
        ref = self.reference_combo.value
        source = rec.source_ref() if rec is not None else None
        if rec is None or ref is None or source is None or source not in self.viewer.layers:
            self._notify_info(
                "Side by side needs a Med-CAM mask, its image and a reference ('Compare with')"
            )
            with self.side_by_side.changed.blocked():
                self.side_by_side.value = False
            return
        layers = self.viewer.layers
        grid = viewer_grid(self.viewer)
        state = {
            "order": list(layers),
            "visible": {id(ly): ly.visible for ly in layers},
            "grid": (grid.enabled, grid.stride, grid.shape),
        }
        data, meta, kind = source.as_layer_data_tuple()
        meta = dict(meta, name=f"{source.name} (side by side)")
        twin = Layer.create(data, meta, kind)
        layers.append(twin)
        state["twin"] = twin
        self._side = state
        for i, ly in enumerate([source, layer, twin, ref]):
            layers.move(layers.index(ly), i)
        keep = {id(source), id(layer), id(twin), id(ref)}
        for ly in layers:
            ly.visible = id(ly) in keep
        grid.stride = 2
        grid.shape = (-1, -1)
        grid.enabled = True

    def _leave_side_by_side(self) -> None:
        state, self._side = self._side, None
        layers = self.viewer.layers
        twin = state["twin"]
        if twin in layers:
            layers.remove(twin)
        order = [ly for ly in state["order"] if ly in layers]
        for i, ly in enumerate(order):
            layers.move(layers.index(ly), i)
        for ly in layers:
            if id(ly) in state["visible"]:
                ly.visible = state["visible"][id(ly)]
        enabled, stride, shape = state["grid"]
        grid = viewer_grid(self.viewer)
        grid.stride = stride
        grid.shape = shape
        grid.enabled = enabled
        with self.side_by_side.changed.blocked():
            self.side_by_side.value = False

    # ------------------------------------------------------------------ save
    def save_mask(
        self,
        path: str | Path,
        geojson: bool | None = None,
        overwrite: bool = False,
        layer: Any = None,
    ) -> list[Path]:
        """Write the mask as TIFF (+ GeoJSON of its explained plane): both, or neither.

        The GeoJSON is in the slide's level-0 pixels (a pyramid level's downsample
        and the region's origin applied), as QuPath places annotations. An existing
        file is kept (FileExistsError) unless ``overwrite``.
        """
        from napari_medcam.io import write_mask

        layer = layer if layer is not None else self.result_combo.value
        if layer is None:
            raise ValueError("no Med-CAM mask layer to save")
        geojson = bool(self.geojson_check.value) if geojson is None else geojson
        path = Path(path)
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_suffix(".tif")
        data = layer.data[0] if layer.multiscale else layer.data
        if isinstance(data, np.ndarray):  # a copy: the user may paint while it is written
            data = data.copy()
        rec = self.results.get(layer)
        props = None
        downsample: tuple[float, ...] = (1.0, 1.0)
        origin: tuple[float, ...] = (0.0, 0.0)
        plane = data
        if geojson:
            plane = region_of(data, rec.region, copy=False) if rec is not None else data
            if len(plane.shape) != 2:
                raise ValueError(
                    f"GeoJSON needs a 2-D mask; this one is {len(plane.shape)}-D: "
                    "untick 'also GeoJSON' to save the TIFF alone"
                )
            if rec is not None:
                downsample, origin = rec.region.level0_placement()
            summary = layer.metadata.get(META_KEY, {}).get("summary", {})
            props = {
                "class_name": summary.get("class_name", "Med-CAM"),
                "source_layer": layer.metadata.get(META_KEY, {}).get("source_layer", ""),
                "fixed_axes": rec.region.to_meta()["fixed_axes"] if rec is not None else {},
                "level": rec.region.level if rec is not None else None,
                "masked_confidence": summary.get("masked_confidence"),
                "original_confidence": summary.get("original_confidence"),
                "valid": summary.get("valid"),
            }
        return write_mask(
            path,
            data,
            dict(layer.metadata),
            pixel_size=pixel_size(layer.scale),
            geojson=props,
            plane=plane,
            downsample=downsample,
            origin=origin,
            overwrite=overwrite,
        )

    def _save_dialog(self, _v: Any = None) -> None:
        layer = self.result_combo.value
        if layer is None:
            self._notify_info("Choose a Med-CAM mask layer first")
            return
        default = Path.home() / f"{_safe_filename(layer.name)}.tif"
        path, _ = QFileDialog.getSaveFileName(
            self, "Save Med-CAM mask", str(default), "TIFF (*.tif *.tiff)"
        )
        if not path:
            return
        path = Path(path)
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_suffix(".tif")
            if path.exists() and not self._confirm_replace(path):
                return
        geo = bool(self.geojson_check.value)
        if (
            geo
            and path.with_suffix(".geojson").exists()
            and not self._confirm_replace(path.with_suffix(".geojson"))
        ):
            return
        try:  # the file dialog (or we) asked before replacing anything
            written = self.save_mask(path, geojson=geo, overwrite=True, layer=layer)
        except (OSError, ValueError) as err:
            self._notify_error(f"cannot save the mask: {err}")
            return
        self.status_label.value = "Saved " + ", ".join(p.name for p in written)

    def _confirm_replace(self, path: Path) -> bool:
        answer = QMessageBox.question(self, "Replace file?", f"{path} exists. Replace it?")
        return answer == QMessageBox.StandardButton.Yes
