"""The Med-CAM dock widget: gather settings, run the engine in the background, add layers.

No engine logic lives here: the widget picks the image region (`layers.find_region`),
builds a `MedCAMConfig` from the form, starts a worker (`worker.py`) and turns
its result into layers aligned with the image. The form is made of magicgui
widgets (typed settings become controls) inside a plain QWidget.
"""

from __future__ import annotations

import html
import logging
import time
import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    create_widget,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QGroupBox,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_medcam.plugin.layers import (
    Region,
    default_level,
    find_region,
    level_shapes,
    region_pixels,
    region_transform_kwargs,
    spatial_shape,
)
from napari_medcam.plugin.results import ResultStore, RunContext
from napari_medcam.plugin.review import ReviewMixin
from napari_medcam.plugin.worker import (
    ExplainJob,
    JobResult,
    default_threads,
    explanation_worker,
    start_warm_up,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

FILE_CHOICE = ("file", "")
FACTORY_CHOICE = ("factory", "")

#: (field, type, label, magicgui options) of the Advanced section
ADVANCED: list[tuple[str, type, str, dict[str, Any]]] = [
    ("lambda_act", float, "λ activations", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_ce", float, "λ cross-entropy", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_kl", float, "λ KL", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_area", float, "λ area", {"min": 0.0, "max": 1e5, "step": 1.0}),
    ("lambda_bin", float, "λ binary", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_tv", float, "λ smoothness (TV)", {"min": 0.0, "max": 1e5, "step": 10.0}),
    ("lambda_rob", float, "λ robustness", {"min": 0.0, "max": 1e5, "step": 1.0}),
    ("steps", int, "max steps", {"min": 1, "max": 100_000}),
    ("lr", float, "learning rate", {"min": 1e-5, "max": 1.0, "step": 1e-5}),
    ("threshold", float, "mask threshold", {"min": 0.01, "max": 0.99, "step": 0.05}),
    ("seed", int, "seed", {"min": 0, "max": 2**31 - 1}),
]


class _Session:
    """What Qt slots may need after the widget's C++ object is gone (viewer closing)."""

    def __init__(self) -> None:
        self.closed = False
        self.job: ExplainJob | None = None
        self.worker: Any = None
        self.check_job: Any = None  # worker.CheckJob of a running edited-mask check

    def stop(self, timeout: float = 0.0) -> bool:
        """Mark closed and cancel any run and check; True when their threads have let go.

        Cancelling is immediate: each worker stops at its next step or tile and
        drops its result. Closing the viewer calls this without waiting (the GUI
        thread never blocks on a worker); ``timeout`` > 0 waits that long, for
        callers that must know (tests, scripts).
        """
        self.closed = True
        for job in (self.job, self.check_job):
            if job is not None:
                job.cancel.set()
        deadline = time.monotonic() + timeout
        while not self._let_go():
            if time.monotonic() >= deadline:
                if timeout > 0:
                    logger.warning("Med-CAM worker did not stop within %.0f s", timeout)
                return False
            time.sleep(0.01)
        return True

    def _let_go(self) -> bool:
        run = self.job is None or self.job.done.is_set()
        run = run or (self.worker is not None and not self.worker.is_running)
        return run and (self.check_job is None or self.check_job.done.is_set())


def _group(title: str, *widgets: Any) -> QGroupBox:
    box = QGroupBox(title)
    lay = QVBoxLayout(box)
    lay.setContentsMargins(6, 4, 6, 6)
    lay.setSpacing(2)
    for w in widgets:
        lay.addWidget(w if isinstance(w, QWidget) else w.native)
    return box


def _wrap(label: Label | QLabel) -> None:
    native = label.native if isinstance(label, Label) else label
    native.setWordWrap(True)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)


class MedCAMWidget(ReviewMixin, QWidget):
    """Explain the displayed tile, slice or volume and add an aligned, editable mask."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy; its layers are new proxy objects on
        # every access, which breaks identity (``is``) and weak references to layers.
        # We only use public API, so keep the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._classifier_cache: dict[tuple[str, str, str, str], Any] = {}
        self.classifier: Any = None
        self.classifier_label = ""
        self.worker: Any = None  # running explanation
        self.check_worker: Any = None  # running edited-mask check
        self.check_job: Any = None  # its job (copies of image and mask, cancel flag)
        self._ctx: RunContext | None = None
        self._pbar: Any = None
        self.results = ResultStore(self.viewer)
        self._rejected: Any = None  # weakref to a selected non-image layer
        self._side: dict[str, Any] | None = None
        self._session = _Session()
        # stop a run when the widget goes (its dock or the whole viewer is closed):
        # cancel only, never wait on the GUI thread
        self.destroyed.connect(lambda *_a, s=self._session: s.stop(timeout=0.0))
        self.last_result: JobResult | None = None
        self.last_check: dict[str, Any] | None = None
        self.last_scores: list[dict[str, Any]] = []

        self._build()
        self._connect()
        self._refresh_layer_choices()
        self._on_active()
        self._load_classifier(notify=False)
        self._apply_preset()
        start_warm_up(int(self.threads_spin.value))

    # ---------------------------------------------------------------- building
    def _build(self) -> None:
        from napari_medcam.classifiers import registered_classifiers
        from napari_medcam.engine.prepare import available_devices

        # input
        self.image_combo = ComboBox(
            label="Image",
            choices=self._image_choices,
            nullable=True,
            tooltip="The image layer to explain (follows the selection)",
        )
        self.region_label = Label(value="")
        _wrap(self.region_label)
        # multiscale (slide) images: which pyramid level, and the whole slide or the view
        self.level_combo = ComboBox(
            label="Level",
            choices=[],
            tooltip="Pyramid level to explain (0 = full resolution); "
            "coarser levels read fewer pixels",
        )
        self.scope_combo = ComboBox(
            label="Region",
            choices=[("whole slide", "whole"), ("visible region", "visible")],
            value="whole",
            tooltip="whole slide: the whole level · visible region: the part in view",
        )
        self.slide_form = Container(widgets=[self.level_combo, self.scope_combo])
        self.slide_form.margins = (0, 0, 0, 0)
        self.slide_form.visible = False
        # a 2-D classifier on a stack: the displayed slice, or every slice one by one
        self.every_slice = CheckBox(
            text="every slice (one by one)",
            value=False,
            tooltip="Explain every slice of the stack along the slider next to the view, "
            "each on its own, into one mask for the whole stack",
        )
        self.every_slice.visible = False
        self._levels_of: Any = None  # weakref to the layer whose levels the combo lists
        # classifier
        names = sorted(registered_classifiers())
        if "demo" in names:
            names.remove("demo")
            names.insert(0, "demo")
        clf_choices = [(n, ("registered", n)) for n in names]
        clf_choices += [("TorchScript file…", FILE_CHOICE), ("Python factory…", FACTORY_CHOICE)]
        self.classifier_combo = ComboBox(label="Classifier", choices=clf_choices)
        self.model_file = FileEdit(
            label="Model file", mode="r", nullable=True, filter="Models (*.pt *.pth *.ts *.zip)"
        )
        self.factory_spec = LineEdit(
            label="Factory", value="", tooltip="package.module:function returning a torch module"
        )
        self.weights_file = FileEdit(
            label="Weights", mode="r", nullable=True, filter="State dicts (*.pt *.pth)"
        )
        self.class_names_edit = LineEdit(
            label="Class names", value="", tooltip="Comma-separated, when the model has none"
        )
        self.load_button = PushButton(text="Load model")
        self.file_box = Container(
            widgets=[
                self.model_file,
                self.factory_spec,
                self.weights_file,
                self.class_names_edit,
                self.load_button,
            ]
        )
        self.file_box.margins = (0, 0, 0, 0)
        self.classifier_label_w = Label(value="")
        _wrap(self.classifier_label_w)
        self.target_combo = ComboBox(label="Explain class", choices=[("predicted class", None)])
        self.model_form = Container(widgets=[self.classifier_combo, self.target_combo])
        self.model_form.margins = (0, 0, 0, 0)
        # settings
        self.preset_combo = ComboBox(
            label="Preset",
            choices=["fast", "paper"],
            value="fast",
            tooltip="fast: seconds on a CPU · paper: the authors' recipe",
        )
        self.device_combo = ComboBox(
            label="Device",
            value="auto",
            choices=self._device_choices(available_devices()),
            tooltip="auto: CUDA, then MPS, then the CPU",
        )
        self.advanced: dict[str, Any] = {}
        adv_widgets = []
        for name, typ, label, opts in ADVANCED:
            w = create_widget(
                value=typ(opts.get("min", 0)),
                annotation=typ,
                name=name,
                label=label,
                options=dict(opts),
            )
            self.advanced[name] = w
            adv_widgets.append(w)
        self.threads_spin = create_widget(
            value=default_threads(),
            annotation=int,
            name="threads",
            label="CPU threads",
            options={"min": 1, "max": 256},
        )
        self.threads_spin.tooltip = "torch threads for a run; fewer keep napari responsive"
        adv_widgets.append(self.threads_spin)
        self.advanced_box = Container(widgets=adv_widgets)
        self.advanced_box.margins = (12, 0, 0, 0)
        self.advanced_box.visible = False
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setAutoRaise(True)
        self.settings_form = Container(widgets=[self.preset_combo, self.device_combo])
        self.settings_form.margins = (0, 0, 0, 0)
        self.add_soft = CheckBox(text="add soft-mask layer", value=False)
        self.add_gradcam = CheckBox(text="add Grad-CAM layer", value=False)
        self.replace_unedited = CheckBox(text="replace my previous result if unedited", value=True)
        options = Container(widgets=[self.add_soft, self.add_gradcam, self.replace_unedited])
        options.margins = (0, 0, 0, 0)
        # run
        self.run_button = PushButton(text="Explain")
        self.run_button.native.setMinimumHeight(32)
        self.progress = ProgressBar(min=0, max=100, value=0, visible=False)
        self.status_label = Label(value="")
        _wrap(self.status_label)
        # results
        self.summary = QLabel("No explanation yet.")
        _wrap(self.summary)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.result_combo = ComboBox(label="Mask", choices=self._result_choices, nullable=True)
        self.check_button = PushButton(text="Check edited mask")
        self.check_label = QLabel("")
        _wrap(self.check_label)
        self.check_label.setTextFormat(Qt.TextFormat.RichText)
        self.check_label.setVisible(False)
        self.reference_combo = ComboBox(
            label="Compare with", choices=self._reference_choices, nullable=True
        )
        self.compare_button = PushButton(text="Compare")
        self.copy_button = PushButton(text="Copy")
        self.csv_button = PushButton(text="Save CSV…")
        self.side_by_side = CheckBox(text="side by side (grid)", value=False)
        self.scores_label = QLabel("")
        _wrap(self.scores_label)
        self.scores_label.setTextFormat(Qt.TextFormat.RichText)
        self.scores_label.setVisible(False)
        self.geojson_check = CheckBox(text="also GeoJSON (QuPath)", value=True)
        self.save_button = PushButton(text="Save mask…")
        result_form = Container(widgets=[self.result_combo, self.reference_combo])
        result_form.margins = (0, 0, 0, 0)
        compare_row = Container(
            widgets=[self.check_button, self.compare_button], layout="horizontal", labels=False
        )
        compare_row.margins = (0, 0, 0, 0)
        export_row = Container(
            widgets=[self.copy_button, self.csv_button, self.side_by_side],
            layout="horizontal",
            labels=False,
        )
        export_row.margins = (0, 0, 0, 0)
        save_row = Container(
            widgets=[self.save_button, self.geojson_check], layout="horizontal", labels=False
        )
        save_row.margins = (0, 0, 0, 0)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(6)
        input_form = Container(widgets=[self.image_combo, self.every_slice])
        input_form.margins = (0, 0, 0, 0)
        layout.addWidget(_group("Input", input_form, self.slide_form, self.region_label))
        layout.addWidget(
            _group("Classifier", self.model_form, self.file_box, self.classifier_label_w)
        )
        layout.addWidget(
            _group("Settings", self.settings_form, self.advanced_toggle, self.advanced_box, options)
        )
        layout.addWidget(self.run_button.native)
        layout.addWidget(self.progress.native)
        layout.addWidget(self.status_label.native)
        layout.addWidget(_group("Result", self.summary))
        layout.addWidget(
            _group(
                "Check and compare",
                result_form,
                compare_row,
                self.check_label,
                self.scores_label,
                export_row,
                save_row,
            )
        )
        layout.addStretch(1)
        self.setMinimumWidth(340)
        self._update_classifier_inputs()

    def _connect(self) -> None:
        v = self.viewer
        v.layers.selection.events.active.connect(self._on_active)
        v.layers.events.inserted.connect(self._on_layers_changed)
        v.layers.events.removed.connect(self._on_layers_changed)
        v.layers.events.moved.connect(self._on_layers_changed)
        for layer in v.layers:
            layer.events.name.connect(self._on_layers_changed)
        v.dims.events.point.connect(self._update_region)
        v.dims.events.ndisplay.connect(self._update_region)
        v.dims.events.order.connect(self._update_region)
        camera = self._camera()
        if camera is not None:
            camera.events.center.connect(self._on_camera)
            camera.events.zoom.connect(self._on_camera)
        self.level_combo.changed.connect(self._update_region)
        self.scope_combo.changed.connect(self._update_region)
        self.every_slice.changed.connect(self._update_region)
        self.image_combo.changed.connect(self._on_image_chosen)
        self.classifier_combo.changed.connect(self._on_classifier_choice)
        self.load_button.clicked.connect(lambda: self._load_classifier(notify=True))
        self.preset_combo.changed.connect(self._apply_preset)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        self.run_button.clicked.connect(self._on_run_clicked)
        self.check_button.clicked.connect(self._on_check_clicked)
        self.compare_button.clicked.connect(self.compare)
        self.copy_button.clicked.connect(self.copy_scores)
        self.csv_button.clicked.connect(self._save_csv_dialog)
        self.side_by_side.changed.connect(self.set_side_by_side)
        self.save_button.clicked.connect(self._save_dialog)
        self.result_combo.changed.connect(self._update_buttons)
        self.reference_combo.changed.connect(self._update_buttons)

    # ----------------------------------------------------------- layer choices
    def _image_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Image)]

    def _result_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(ly.name, ly) for ly in self.results.layers()]

    def _reference_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        return [
            (ly.name, ly)
            for ly in self.viewer.layers
            if isinstance(ly, Labels) and ly not in self.results
        ]

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._closed:
            return
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
        self._refresh_layer_choices()

    def _refresh_layer_choices(self) -> None:
        image = self.image_combo.value
        for combo in (self.image_combo, self.result_combo, self.reference_combo):
            with combo.changed.blocked():
                combo.reset_choices()
        if self.reference_combo.value is None:
            refs = self._reference_choices()
            if refs:
                with self.reference_combo.changed.blocked():
                    self.reference_combo.value = refs[-1][1]
        if self.image_combo.value is not image or image is None:
            self._update_region()
        self._update_buttons()

    def _on_active(self, event: Any = None) -> None:
        """Follow the active layer: an image is chosen; a result selects its image."""
        if self._closed:
            return
        from napari.layers import Image

        layer = self.viewer.layers.selection.active
        if layer is None:
            return
        if isinstance(layer, Image):
            self._rejected = None
            self.image_combo.value = layer
        elif layer in self.results:
            self._rejected = None
            with self.result_combo.changed.blocked():
                self.result_combo.value = layer
            source = self.results.get(layer).source()
            if source is not None and source in self.viewer.layers:
                self.image_combo.value = source
        else:
            self._rejected = weakref.ref(layer)
            self.image_combo.value = None
        self._update_region()

    def _on_image_chosen(self, _value: Any = None) -> None:
        if self.image_combo.value is not None:
            self._rejected = None
        self._update_region()

    # ------------------------------------------------------------------ region
    def _camera(self) -> Any:
        scene = getattr(self.viewer, "scene", None)
        camera = getattr(scene, "camera", None)
        return camera if camera is not None else getattr(self.viewer, "camera", None)

    def _on_camera(self, event: Any = None) -> None:
        """Panning/zooming changes the visible region of a slide."""
        if self._closed or self.worker is not None:
            return
        layer = self.image_combo.value
        if getattr(layer, "multiscale", False) and self.scope_combo.value == "visible":
            self._update_region()

    def visible_corners(self) -> Any:
        """The canvas' top-left and bottom-right in world coordinates (None if unknown)."""
        if self.viewer.dims.ndisplay != 2:
            return None
        try:
            canvas = self.viewer.window._qt_viewer.canvas
            corners = np.asarray(canvas._viewbox_corners_in_world, dtype=float)
        except Exception:  # no Qt canvas (or a napari without it)
            logger.debug("no canvas corners", exc_info=True)
            return None
        if corners.shape != (2, self.viewer.dims.ndim) or not np.all(np.isfinite(corners)):
            return None
        if np.any(np.abs(corners[1] - corners[0])[list(self.viewer.dims.displayed)] < 1e-9):
            return None  # a canvas not laid out yet
        return corners

    def _sync_levels(self, layer: Any) -> None:
        """Show the Level/Region choice for a multiscale image; list its levels."""
        multiscale = bool(getattr(layer, "multiscale", False))
        self.slide_form.visible = multiscale
        if not multiscale:
            self._levels_of = None
            return
        if self._levels_of is not None and self._levels_of() is layer:
            return
        shapes = level_shapes(layer)
        choices = [
            (f"{i}: {shp[-1]} × {shp[-2]} px" + (" (full resolution)" if i == 0 else ""), i)
            for i, shp in enumerate(shapes)
        ]
        with self.level_combo.changed.blocked():
            self.level_combo.choices = choices
            self.level_combo.value = default_level(layer)
        self._levels_of = weakref.ref(layer)

    def current_region(self) -> Region:
        layer = self.image_combo.value
        if layer is None and self._rejected is not None:
            layer = self._rejected()
        clf = self.classifier
        sd = clf.spatial_dims if clf is not None else 2
        size = clf.input_size if clf is not None else None
        try:
            level = visible = None
            if getattr(layer, "multiscale", False):
                self._sync_levels(layer)
                level = self.level_combo.value
                if self.scope_combo.value == "visible":
                    visible = self.visible_corners()
            from napari.layers import Image

            stack = (
                sd == 2
                and isinstance(layer, Image)
                and not layer.multiscale
                and len(spatial_shape(layer)) > 2
            )
            self.every_slice.visible = stack
            return find_region(
                layer,
                self.viewer.dims,
                sd,
                size,
                level=level,
                visible=visible,
                every_slice=stack and bool(self.every_slice.value),
            )
        except Exception as err:  # an exotic layer/transform: say so, don't crash
            logger.debug("region failed", exc_info=True)
            return Region(problem=f"cannot tell what to explain: {err}")

    def _update_region(self, event: Any = None) -> None:
        if self._closed:
            return
        region = self.current_region()
        self._sync_levels(self.image_combo.value)
        if region.ok:
            self.region_label.value = f"Explains: {region.description}"
        else:
            self.region_label.value = f"⚠ {region.problem}"
        self._update_buttons(region=region)

    def _update_buttons(self, _v: Any = None, region: Region | None = None) -> None:
        if self._closed:
            return
        busy = self.worker is not None
        checking = self.check_worker is not None
        if not busy:
            region = region if region is not None else self.current_region()
            can = region.ok and self.classifier is not None and not checking
            self.run_button.enabled = can
            why = "wait for the check of the edited mask" if checking else ""
            why = why or region.problem or "load a classifier first"
            self.run_button.tooltip = "" if can else why
        result = self.result_combo.value
        # while a check runs its button cancels it; no check during an explanation
        self.check_button.text = "Cancel check" if checking else "Check edited mask"
        self.check_button.enabled = checking or (result is not None and not busy)
        self.compare_button.enabled = result is not None and self.reference_combo.value is not None
        self.save_button.enabled = result is not None
        self.copy_button.enabled = bool(self.last_scores)
        self.csv_button.enabled = bool(self.last_scores)

    # -------------------------------------------------------------- classifier
    def _update_classifier_inputs(self) -> None:
        kind = self.classifier_combo.value[0]
        self.file_box.visible = kind != "registered"
        self.model_file.visible = kind == "file"
        self.factory_spec.visible = kind == "factory"
        self.weights_file.visible = kind == "factory"

    def _on_classifier_choice(self, _v: Any = None) -> None:
        self._update_classifier_inputs()
        if self.classifier_combo.value[0] == "registered":
            self._load_classifier(notify=True)
        else:
            self._set_classifier(None, "choose the model, then press Load model")

    def _classifier_spec(self) -> tuple[str, str, str, str]:
        kind, name = self.classifier_combo.value
        names = self.class_names_edit.value.strip()
        if kind == "registered":
            return ("registered", name, "", "")
        if kind == "file":
            path = self.model_file.value
            return ("file", str(path) if path else "", "", names)
        weights = self.weights_file.value
        return ("factory", self.factory_spec.value.strip(), str(weights) if weights else "", names)

    def _load_classifier(self, notify: bool = True) -> Any:
        """Load (or take from the cache) the chosen classifier; None with a message if not."""
        from napari_medcam.classifiers import load_classifier, registered_classifiers

        spec = self._classifier_spec()
        kind, name, weights, names = spec
        if spec in self._classifier_cache:
            self._set_classifier(self._classifier_cache[spec], "")
            return self.classifier
        kwargs: dict[str, Any] = {}
        if names:
            kwargs["class_names"] = [c.strip() for c in names.split(",") if c.strip()]
        try:
            if kind == "registered":
                clf = registered_classifiers()[name].load()()
                label = name
            elif not name:
                raise ValueError(
                    "choose a model file"
                    if kind == "file"
                    else "enter a factory as package.module:function"
                )
            else:
                clf = load_classifier(name, weights=weights or None, **kwargs)
                label = Path(name).name if kind == "file" else name
        except Exception as err:
            msg = f"cannot load classifier: {err}"
            self._set_classifier(None, msg)
            if notify:
                self._notify_error(msg)
            return None
        clf.name = getattr(clf, "name", label) or label
        self._classifier_cache[spec] = clf
        self.classifier_label = label
        self._set_classifier(clf, "")
        return clf

    def _set_classifier(self, clf: Any, message: str) -> None:
        self.classifier = clf
        if clf is None:
            self.classifier_label_w.value = f"⚠ {message}" if message else ""
            choices: list[tuple[str, Any]] = [("predicted class", None)]
        else:
            size = " × ".join(str(s) for s in clf.input_size)
            hook = (
                ""
                if getattr(clf, "hookable", True) and clf.layers
                else " · output-only (no hookable layers)"
            )
            self.classifier_label_w.value = (
                f"Classes: {', '.join(clf.class_names)}\n"
                f"Input {size}, {clf.channels} channel{'s' * (clf.channels != 1)}{hook}"
            )
            choices = [("predicted class", None)] + [(c, i) for i, c in enumerate(clf.class_names)]
        self.target_combo.choices = choices
        self._update_region()

    # ---------------------------------------------------------------- settings
    def _apply_preset(self, _v: Any = None) -> None:
        from napari_medcam import MedCAMConfig

        cfg = MedCAMConfig.preset(self.preset_combo.value)
        for name, w in self.advanced.items():
            w.value = getattr(cfg, name)

    def _toggle_advanced(self, on: bool) -> None:
        self.advanced_box.visible = on
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    @staticmethod
    def _device_choices(devices: list[str]) -> list[tuple[str, str]]:
        """Choices showing what ``auto`` resolves to, e.g. ``auto → cpu``."""
        from napari_medcam.engine.prepare import resolve_device

        try:
            auto = str(resolve_device("auto"))
        except ValueError:
            auto = "?"
        return [(f"auto → {auto}" if d == "auto" else d, d) for d in devices]

    def build_config(self) -> Any:
        """The `MedCAMConfig` of the form: the preset with the Advanced values."""
        from napari_medcam import MedCAMConfig

        changes = {name: w.value for name, w in self.advanced.items()}
        return MedCAMConfig.preset(self.preset_combo.value).replace(**changes)

    def set_settings(self, preset: str = "fast", **values: Any) -> None:
        """Set the preset and any Advanced field (or ``threads``) programmatically."""
        self.preset_combo.value = preset
        self._apply_preset()
        for name, value in values.items():
            if name == "threads":
                self.threads_spin.value = value
            elif name in self.advanced:
                self.advanced[name].value = value
            else:
                raise ValueError(f"unknown setting {name!r}; known: {list(self.advanced)}")

    # -------------------------------------------------------------------- run
    def _on_run_clicked(self, _v: Any = None) -> None:
        if self.worker is not None:
            self.cancel()
        else:
            self.explain()

    def explain(self) -> Any:
        """Start explaining the chosen image region; returns the worker (or None)."""
        if self.worker is not None:
            self._notify_info("Med-CAM is already running: cancel it first")
            return None
        if self.check_worker is not None:
            # both would move the one classifier between devices
            self._notify_info(
                "Med-CAM is checking an edited mask: wait until the check has finished "
                "(or cancel it), then explain"
            )
            return None
        region = self.current_region()
        layer = self.image_combo.value
        if not region.ok or layer is None:
            self._notify_error(region.problem or "choose an image layer")
            return None
        clf = self.classifier or self._load_classifier(notify=True)
        if clf is None:
            return None
        try:
            config = self.build_config()
            image = region_pixels(layer, region)
        except (ValueError, MemoryError) as err:
            self._notify_error(str(err))
            return None
        job = ExplainJob(
            image=image,
            classifier=clf,
            target=self.target_combo.value,
            config=config,
            device=self.device_combo.value,
            threads=int(self.threads_spin.value),
            gradcam=bool(getattr(clf, "hookable", True) and clf.layers),
            slice_axis=region.slice_axis,
            soft=bool(self.add_soft.value),
        )
        self._ctx = RunContext(
            layer_ref=weakref.ref(layer),
            layer_name=layer.name,
            region=region,
            transforms=region_transform_kwargs(layer, region),
            classifier=clf,
            classifier_label=self.classifier_label or clf.name,
            config=config,
            add_soft=bool(self.add_soft.value),
            add_gradcam=bool(self.add_gradcam.value),
            replace=bool(self.replace_unedited.value),
            job=job,
        )
        worker = explanation_worker(job)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(partial(self._on_returned, self._ctx))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(partial(self._on_finished, worker))
        self.worker = worker
        self._session.job, self._session.worker = job, worker
        self._start_progress(f"Med-CAM: {layer.name}")
        self._set_busy(True)
        self.status_label.value = f"Explaining {region.description} of '{layer.name}'…"
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running explanation at its next step; no layer is added."""
        if self.worker is None or self._ctx is None:
            return
        self._ctx.job.cancel.set()
        self.run_button.text = "Cancelling…"
        self.run_button.enabled = False

    def _start_progress(self, desc: str) -> None:
        from napari.utils import progress

        self.progress.value = 0
        self.progress.visible = True
        try:
            self._pbar = progress(total=100, desc=desc)
        except Exception:  # the activity dock is a nicety
            self._pbar = None

    def _stop_progress(self) -> None:
        if self._pbar is not None:
            try:
                self._pbar.close()
            except Exception:
                logger.debug("progress close failed", exc_info=True)
            self._pbar = None
        if not self._closed:
            self.progress.visible = False

    def _set_busy(self, busy: bool) -> None:
        self.run_button.text = "Cancel" if busy else "Explain"
        self.run_button.enabled = True
        for w in (
            self.classifier_combo,
            self.load_button,
            self.preset_combo,
            self.device_combo,
            self.target_combo,
        ):
            w.enabled = not busy
        self._update_buttons()

    def _on_progress(self, event: Any) -> None:
        if self._closed:
            return
        pct = int(round(100 * float(event.fraction)))
        self.progress.value = pct
        if self._pbar is not None and pct > self._pbar.n:
            self._pbar.update(pct - self._pbar.n)
        tile = f"tile {event.tile + 1}/{event.tiles} · " if event.tiles > 1 else ""
        self.status_label.value = (
            f"{tile}step {event.step}/{event.total} · p(masked) {event.masked_confidence:.2f}"
            f" · area {100 * event.area_fraction:.1f} %"
        )

    def _on_aborted(self) -> None:
        if not self._closed:
            self.status_label.value = "Cancelled: no layer added."

    def _on_finished(self, worker: Any) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        self._ctx = None
        self._session.job = self._session.worker = None
        self._stop_progress()
        if not self._closed:
            self._set_busy(False)

    def _on_returned(self, ctx: RunContext, result: JobResult) -> None:
        if self._closed:
            return
        self.last_result = result
        if result.cancelled:
            self.status_label.value = "Cancelled: no layer added."
            return
        if result.error:
            self.status_label.value = f"⚠ {result.error}"
            self._notify_error(f"Med-CAM: {result.error}")
            return
        exp = result.explanation
        try:
            layer = self._add_result(ctx, result)
        except Exception as err:  # e.g. the viewer is being torn down
            logger.debug("adding result failed", exc_info=True)
            self._notify_error(f"Med-CAM could not add the result: {err}")
            return
        self._show_summary(exp, list(ctx.classifier.class_names), ctx.region.description)
        self.status_label.value = f"Done: '{layer.name}' ({exp.seconds:.1f} s)"
        if not exp.valid:
            self._notify_warning(f"Med-CAM: the mask is not trustworthy: {exp.status}")
        if result.gradcam_note and ctx.add_gradcam:
            self._notify_info(result.gradcam_note)

    # ---------------------------------------------------------------- results
    def is_edited(self, layer: Any) -> bool:
        """Has the user changed this result layer since the widget made it?"""
        return self.results.is_edited(layer)

    def _add_result(self, ctx: RunContext, result: JobResult) -> Any:
        placed = self.results.place(ctx, result)
        if placed.kept_edited is not None:
            self._notify_info(
                f"Kept your edited '{placed.kept_edited.name}'; the new result is a new layer"
            )
        self._refresh_layer_choices()
        with self.result_combo.changed.blocked():
            self.result_combo.value = placed.layer
        self._update_buttons()
        return placed.layer

    def _show_summary(self, exp: Any, class_names: list[str], where: str = "") -> None:
        """The result panel: decision kept?, confidences, area, time, every class."""
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
        head = "".join(f"<tr><td style='color:gray'>{k}</td><td>{v}</td></tr>" for k, v in facts)
        bold = [
            "<b>" + esc(n) + "</b>" if i == exp.target else esc(n)
            for i, n in enumerate(class_names)
        ]
        probs = "".join(
            f"<tr><td>{bold[i]}</td>"
            f"<td align='right'>{p:.3f}</td><td align='right'>{q:.3f}</td></tr>"
            for i, (n, p, q) in enumerate(
                zip(class_names, exp.probabilities, exp.masked_probabilities)
            )
        )
        self.summary.setText(
            f"<table cellspacing='0' cellpadding='2'>{head}</table>"
            "<table cellspacing='0' cellpadding='2' style='margin-top:6px'>"
            "<tr><td style='color:gray'>p(class)&nbsp;&nbsp;&nbsp;</td>"
            "<td style='color:gray' align='right'>&nbsp;image&nbsp;</td>"
            "<td style='color:gray' align='right'>&nbsp;&nbsp;mask</td></tr>"
            f"{probs}</table>"
        )
        self.summary.setToolTip(exp.one_line())

    # ------------------------------------------------------------ messages
    def _notify_error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        if not self._closed:
            show_error(message)

    def _notify_warning(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        if not self._closed:
            show_warning(message)

    def _notify_info(self, message: str) -> None:
        from napari.utils.notifications import show_info

        if not self._closed:
            show_info(message)

    # ------------------------------------------------------------- shutdown
    @property
    def _closed(self) -> bool:
        return self._session.closed

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop any run and check for good; wait up to ``timeout`` s for their threads.

        True when they let go in time. (Closing the viewer cancels without waiting.)
        """
        done = self._session.stop(timeout)
        self._stop_progress()
        return done
