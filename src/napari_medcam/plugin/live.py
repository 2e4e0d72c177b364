"""Live mode: the part of a slide in view, explained in one pass as the user pans and zooms.

An amortised explainer explains a field in about the time napari takes to draw it,
so the evidence can follow the view. Every camera (or slider, or level) change
cancels the run in flight — its field is no longer the one in view — and restarts a
single-shot timer; when the view has rested for ``delay_ms`` the visible field at
the input panel's pyramid level is explained in a worker thread (the same
`worker.run_explanation` as Explain, with the explainer), and one Labels layer,
``Med-CAM live: <image>``, is moved onto it on the GUI thread. A result from a
run that was overtaken is never shown. The GUI thread only computes the field
(a few coordinate transforms) and swaps the layer's data: it never reads pixels.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from napari_medcam.plugin.layers import embed, own_metadata, region_pixels, region_transform_kwargs
from napari_medcam.plugin.panels.common import Session
from napari_medcam.plugin.region import Region, find_region
from napari_medcam.plugin.results import class_color, show_filled
from napari_medcam.plugin.worker import ExplainJob, JobResult, explanation_worker

#: pause after the last camera move before the field is explained (ms)
DELAY_MS = 300
#: fields of more tiles than this are not explained live (zoom in or take a coarser level)
MAX_TILES = 64
ROLE = "Med-CAM live"


def class_colormap(class_names: list[str]) -> dict[Any, str]:
    """Label value c + 1 in class c's evidence colour; 0 (and any other) transparent."""
    classes = {c + 1: class_color(c) for c in range(len(class_names))}
    return {0: "transparent", None: "transparent", **classes}


def _camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def _key(layer: Any, region: Region) -> tuple[Any, ...]:
    """What identifies a field: the image, its level and the part of it."""
    return (id(layer), region.level, region.key)


class LiveController(QObject):
    """Explains the field in view of the input panel's slide whenever the view rests.

    ``status`` carries one line for the widget (what is shown, or why nothing is);
    ``updated`` the live Labels layer after each update. ``worker`` is the run in
    flight (None when idle); ``runs`` counts the runs started, ``stale`` those cancelled
    before they ended (the view moved, Explain started or live mode was turned off).
    """

    status = Signal(str)
    updated = Signal(object)

    def __init__(
        self,
        viewer: Any,
        session: Session,
        inputs: Any,
        classifier: Callable[[], Any],
        explainer: Callable[[], Any],
        settings: Any,
        config: Callable[[], Any],
        delay_ms: int = DELAY_MS,
    ) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session
        self.inputs = inputs  # InputPanel: the image, its level, the canvas corners
        self._classifier = classifier  # () -> (Classifier, target or None)
        self._explainer = explainer  # () -> the chosen Explainer (or None)
        self.settings = settings  # SettingsPanel: device, threads, fill
        self._config = config
        self.active = False
        self.worker: Any = None
        self.job: ExplainJob | None = None
        self.runs = 0
        self.stale = 0
        self._pending = False
        self._shown: tuple[Any, ...] | None = None
        self._layer_ref: Any = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.refresh)

    @property
    def layer(self) -> Any:
        """The live Labels layer while it is in the viewer (None before the first field)."""
        layer = self._layer_ref() if self._layer_ref is not None else None
        return layer if layer is not None and layer in self.viewer.layers else None

    # ------------------------------------------------------------- on and off
    def start(self) -> None:
        """Follow the view from now on; the current field is explained at once."""
        if self.active:
            return
        self.active = True
        camera = _camera(self.viewer)
        camera.events.center.connect(self._on_view)
        camera.events.zoom.connect(self._on_view)
        self.viewer.dims.events.point.connect(self._on_view)
        self.inputs.level_combo.changed.connect(self._on_view)
        self.inputs.image_combo.changed.connect(self._on_view)
        self.refresh()

    def stop(self) -> None:
        """Stop following the view and cancel the run in flight; the layer stays."""
        if not self.active:
            return
        self.active = False
        self.pause()
        camera = _camera(self.viewer)
        camera.events.center.disconnect(self._on_view)
        camera.events.zoom.disconnect(self._on_view)
        self.viewer.dims.events.point.disconnect(self._on_view)
        self.inputs.level_combo.changed.disconnect(self._on_view)
        self.inputs.image_combo.changed.disconnect(self._on_view)

    def pause(self) -> None:
        """Cancel the run in flight (Explain needs the classifier); `refresh` resumes."""
        self._timer.stop()
        self._pending = False
        self._cancel()

    def _cancel(self) -> None:
        if self.job is not None and not self.job.cancel.is_set():
            self.job.cancel.set()
            self.stale += 1

    def _on_view(self, _event: Any = None) -> None:
        """The view moved: the field in flight is stale; explain the new one once it rests."""
        if not self.active or self.session.closed:
            return
        self._cancel()
        self._timer.start()

    # ----------------------------------------------------------------- runs
    def field(self) -> tuple[Any, Region]:
        """(image layer, the visible field at its chosen level); ``Region.problem`` says
        why there is nothing to explain live."""
        layer = self.inputs.image_layer
        clf, _target = self._classifier()
        if layer is None or not getattr(layer, "multiscale", False):
            return layer, Region(
                problem="live mode follows the view on a slide (a multiscale image)"
            )
        if clf is None or clf.spatial_dims != 2:
            return layer, Region(problem="live mode needs a 2-D classifier")
        corners = self.inputs.visible_corners()
        if corners is None:
            return layer, Region(problem="live mode needs the 2-D view")
        region = find_region(
            layer,
            self.viewer.dims,
            2,
            clf.input_size,
            level=self.inputs.level,
            visible=corners,
        )
        if region.ok and region.tiles > MAX_TILES:
            region.problem = (
                f"the view holds {region.tiles} tiles at level {region.level}: zoom in or "
                f"choose a coarser level (live mode explains up to {MAX_TILES})"
            )
        return layer, region

    def refresh(self) -> None:
        """Explain the field in view now, unless it is the one shown (or being let go of)."""
        if not self.active or self.session.closed:
            return
        if self.session.explaining:  # one run at a time on the classifier: wait for it
            self.status.emit("Live: paused while Explain runs")
            return
        layer, region = self.field()
        if not region.ok:
            self.status.emit(f"Live: {region.problem}")
            return
        if self.worker is not None:  # the stale run stops at its next batch; then this
            self._cancel()
            self._pending = True
            return
        if _key(layer, region) == self._shown and self.layer is not None:
            return
        explainer = self._explainer()
        clf, target = self._classifier()
        if explainer is None:
            self.status.emit("Live: choose an explainer first")
            return
        try:
            config = self._config()
        except ValueError as err:
            self.status.emit(f"Live: {err}")
            return
        job = ExplainJob(
            image=region_pixels(layer, region),  # a lazy view: read in the worker
            classifier=clf,
            target=target,
            config=config,
            device=self.settings.device,
            threads=self.settings.threads,
            gradcam=False,
            explainer=explainer,
        )
        if self.layer is None:  # made now, empty: its one-off cost falls on the click
            self._show(layer, region, np.zeros(region.layer_shape, np.uint8))
        self.runs += 1
        worker = explanation_worker(job)
        worker.returned.connect(partial(self._on_returned, job, weakref.ref(layer), region))
        worker.finished.connect(partial(self._on_finished, worker))
        self.job, self.worker = job, worker
        self.status.emit(f"Live: explaining {region.description}…")
        worker.start()

    def _on_finished(self, worker: Any) -> None:
        if worker is not self.worker:
            return
        self.job = self.worker = None
        if self._pending and self.active:
            self._pending = False
            self.refresh()

    def _on_returned(
        self, job: ExplainJob, layer_ref: Any, region: Region, result: JobResult
    ) -> None:
        if self.session.closed or not self.active or job is not self.job:
            return
        if job.cancel.is_set() or result.cancelled:
            return  # the view moved on: even a run that finished is never shown
        if result.error:
            self.status.emit(f"Live: ⚠ {result.error}")
            return
        image = layer_ref()
        if image is None or image not in self.viewer.layers:
            return
        exp = result.explanation
        labels = exp.labels if exp.labels is not None else exp.mask
        data = np.asarray(labels, np.uint8)
        if len(region.layer_shape) != data.ndim:
            data = embed(region, data, np.uint8)
        self._show(image, region, data)
        self._shown = _key(image, region)
        found = ", ".join(exp.label_classes.values()) or "no class with evidence"
        self.status.emit(f"Live: {region.description} · {found} · {exp.status}")
        self.updated.emit(self.layer)

    def _show(self, image: Any, region: Region, data: np.ndarray) -> None:
        """Put ``data`` in the live layer (made on first use) over ``region``."""
        from napari.layers import Labels

        clf, _ = self._classifier()
        where = region_transform_kwargs(image, region)
        layer = self.layer
        if layer is None:
            layer = Labels(
                data,
                name=f"{ROLE}: {image.name}",
                colormap=class_colormap(list(clf.class_names)),
                metadata=own_metadata(ROLE, image.name),
                **where,
            )
            show_filled(layer, self.settings.fill)
            self.viewer.layers.append(layer)
            self._layer_ref = weakref.ref(layer)
            return
        colours = class_colormap(list(clf.class_names))
        if set(layer.colormap.color_dict) != set(colours):  # another classifier's classes
            layer.colormap = colours
        layer.data = data
        layer.scale = where["scale"]
        layer.translate = where["translate"]
