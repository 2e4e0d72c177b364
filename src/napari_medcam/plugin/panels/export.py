"""The export panel: save a result mask as TIFF and, beside it, GeoJSON for QuPath."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, PushButton
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QGroupBox, QMessageBox

from napari_medcam.plugin.layers import META_KEY, microns_per_pixel, region_of
from napari_medcam.plugin.panels.common import Notifier, add_rows
from napari_medcam.plugin.results import ResultStore
from napari_medcam.plugin.writer import pixel_size


def safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "mask"


class ExportPanel(QGroupBox):
    """Save mask… (+ GeoJSON); ``status`` reports what was written."""

    status = Signal(str)

    def __init__(self, notify: Notifier, results: ResultStore, current: Any) -> None:
        super().__init__("Export")
        self.notify = notify
        self.results = results
        self._current = current  # () -> the result layer chosen in the review panel
        self.geojson_check = CheckBox(text="also GeoJSON (QuPath)", value=True)
        self.save_button = PushButton(text="Save mask…")
        row = Container(
            widgets=[self.save_button, self.geojson_check], layout="horizontal", labels=False
        )
        row.margins = (0, 0, 0, 0)
        add_rows(self, row)
        self.save_button.clicked.connect(self._save_dialog)

    def update_buttons(self) -> None:
        self.save_button.enabled = self._current() is not None

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

        layer = layer if layer is not None else self._current()
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
        summary = layer.metadata.get(META_KEY, {}).get("summary", {})
        # multi-class evidence: the class of each label value, in the TIFF and GeoJSON
        classes = {int(k): v for k, v in (summary.get("label_classes") or {}).items()}
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
            meta = layer.metadata.get(META_KEY, {})
            summary = meta.get("summary", {})
            props = {
                "class_name": summary.get("class_name", "Med-CAM"),
                "source_layer": meta.get("source_layer", ""),
                "fixed_axes": rec.region.to_meta()["fixed_axes"] if rec is not None else {},
                "level": rec.region.level if rec is not None else None,
                "masked_confidence": summary.get("masked_confidence"),
                "original_confidence": summary.get("original_confidence"),
                "valid": summary.get("valid"),
            }
        metadata = dict(layer.metadata)
        if rec is not None and len(data.shape) == 2:
            # where the TIFF's pixels lie on the slide: what `napari-medcam compare` and
            # `mc.compare` place it by (a level region's TIFF holds just the region)
            f, o = rec.region.level0_placement()
            metadata.update(downsample=list(f), origin_level0=list(o))
        return write_mask(
            path,
            data,
            metadata,
            pixel_size=pixel_size(layer.scale),
            geojson=props,
            plane=plane,
            downsample=downsample,
            origin=origin,
            overwrite=overwrite,
            # µm per level-0 pixel: QuPath's "Area µm^2" on each exported region
            mpp=microns_per_pixel(rec.source()) if rec is not None and rec.source() else None,
            **({"classes": classes} if classes else {}),
        )

    def _save_dialog(self, _v: Any = None) -> None:
        layer = self._current()
        if layer is None:
            self.notify.info("Choose a Med-CAM mask layer first")
            return
        default = Path.home() / f"{safe_filename(layer.name)}.tif"
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
            self.notify.error(f"cannot save the mask: {err}")
            return
        self.status.emit("Saved " + ", ".join(p.name for p in written))

    def _confirm_replace(self, path: Path) -> bool:
        answer = QMessageBox.question(self, "Replace file?", f"{path} exists. Replace it?")
        return answer == QMessageBox.StandardButton.Yes
