"""The slide-decision dock widget: which tiles keep a slide classifier's diagnosis.

For multiple-instance (MIL) classifiers, which read a whole slide as a bag of tiles
(`napari_medcam.SlideClassifier`). The slide layer's level that the classifier reads is
embedded and explained in a background worker (progress in the widget and napari's
activity dock; Cancel acts at the next batch of tiles). The result, added on the main
thread: the evidence tiles as a Labels layer with one pixel per tile, lying exactly over
the tiles (the engine cuts a strict grid), and the aggregator's weights beside it for
comparison, with the sentence that is true of the set. Paint tiles in or out, *Check
edited tiles* scores the edited set on the same bag, and *Save* writes the set the
sentence describes as QuPath GeoJSON in level-0 pixels, with its summary.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
)

from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.classifiers.slide_loading import registered_slide_classifiers
from napari_medcam.engine.mil import MODES, SlideExplanation
from napari_medcam.plugin.slide_grid import (
    SlideJob,
    SlideOutcome,
    add_result_layers,
    edited_keep,
    run_slide_job,
    run_tile_check,
)
from napari_medcam.plugin.slide_pixels import PixelEvidence, save_tile_set
from napari_medcam.plugin.worker import default_threads
from napari_medcam.zoo.mil import MIL_ZOO, load_any

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)
PREDICTED = "predicted class"
CLASSIFIERS_LEVEL = "the classifier's"


class SlideDecisionWidget(Container):
    """Explain a slide classifier's decision on the chosen slide layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.image_combo = ComboBox(label="Slide", choices=self._image_choices)
        self.level_combo = ComboBox(label="Level", choices=self._level_choices)
        self.level_combo.tooltip = (
            "the pyramid level the tiles are read at; by default the classifier's own "
            "(or the level nearest its µm/px)"
        )
        names = list(MIL_ZOO) + sorted(registered_slide_classifiers())
        self.classifier_combo = ComboBox(label="Slide classifier", choices=names)
        self.factory_edit = LineEdit(label="or factory")
        self.factory_edit.native.setPlaceholderText("package.module:function")
        self.target_combo = ComboBox(label="Explain", choices=[PREDICTED])
        self.absence_combo = ComboBox(label="Absent tiles", choices=list(MODES))
        self.absence_combo.tooltip = (
            "removal: left out of the bag; replacement: replaced by tissue the classifier "
            "calls another class"
        )
        self.explain_button = PushButton(text="Explain slide decision")
        self.cancel_button = PushButton(text="Cancel", visible=False)
        self.progress = ProgressBar(min=0, max=100, value=0, visible=False)
        self.status = Label(value="")
        self.sentence = Label(value="")
        self.check_button = PushButton(text="Check edited tiles", enabled=False)
        self.pixels_button = PushButton(text="Pixels inside the kept tiles", enabled=False)
        self.pixels_button.tooltip = (
            "the pixels of each kept tile that keep the slide's decision (the tile engine; "
            "a few seconds per tile)"
        )
        self.path_edit = FileEdit(label="Save as", mode="w", filter="*.geojson")
        self.save_button = PushButton(text="Save evidence tiles (GeoJSON + summary)")
        self.save_button.enabled = False
        super().__init__(
            widgets=[
                self.image_combo,
                self.level_combo,
                self.classifier_combo,
                self.factory_edit,
                self.target_combo,
                self.absence_combo,
                self.explain_button,
                self.cancel_button,
                self.progress,
                self.status,
                self.sentence,
                self.check_button,
                self.pixels_button,
                self.path_edit,
                self.save_button,
            ]
        )
        for label in (self.status, self.sentence):
            label.native.setWordWrap(True)
        self._loaded: dict[str, SlideClassifier] = {}
        self._given: SlideClassifier | None = None
        self.worker: Any = None
        self._job: SlideJob | None = None
        self.result: SlideExplanation | None = None  # what the search found
        self.checked: SlideExplanation | None = None  # the last checked (edited) set
        self._layer: Any = None  # weakref to the evidence layer
        self._place: dict[str, Any] = {}
        self.explain_button.changed.connect(self.explain)
        self.cancel_button.changed.connect(self.cancel)
        self.check_button.changed.connect(self.check_edited)
        self.pixels_button.changed.connect(self.explain_pixels)
        self.pixel_evidence = PixelEvidence(self.viewer)
        self.save_button.changed.connect(lambda: self.save(self.path_edit.value))
        self.classifier_combo.changed.connect(self._on_classifier)
        self.factory_edit.changed.connect(self._on_classifier)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda *_: self.image_combo.reset_choices())
        self.image_combo.changed.connect(lambda *_: self.level_combo.reset_choices())
        self._on_classifier()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Image)]

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layer = self.image_combo.value
        n = len(layer.data) if getattr(layer, "multiscale", False) else 1
        return [(CLASSIFIERS_LEVEL, None)] + [(f"level {i}", i) for i in range(n)]

    def set_classifier(self, clf: SlideClassifier | None) -> None:
        """Use this slide classifier (for scripts); None goes back to the form's choice."""
        if clf is not None and not isinstance(clf, SlideClassifier):
            raise ValueError(f"a SlideClassifier is needed, got {type(clf).__name__}")
        self._given = clf
        self._on_classifier()

    def classifier(self) -> SlideClassifier:
        """The slide classifier chosen (loaded once per name); ValueError if it cannot load."""
        if self._given is not None:
            return self._given
        spec = str(self.factory_edit.value).strip() or str(self.classifier_combo.value or "")
        if not spec:
            raise ValueError("choose a slide classifier, or name a factory")
        if spec not in self._loaded:
            self._loaded[spec] = load_any(spec)
        return self._loaded[spec]

    def _on_classifier(self, *_: Any) -> None:
        try:
            names = self.classifier().class_names
        except Exception as err:  # noqa: BLE001 - a factory may raise anything
            self.target_combo.choices = [PREDICTED]
            self.status.value = f"Slide classifier: {err}"
            return
        self.target_combo.choices = [PREDICTED, *names]
        self.status.value = ""

    # ------------------------------------------------------------------ explain
    def _level(
        self, layer: Any, clf: SlideClassifier, level: int | None = None
    ) -> tuple[Any, int, float]:
        """(the level's array, its index, its downsample) that ``clf`` reads (``level``,
        else the form's choice, else the classifier's)."""
        if getattr(layer, "ndim", 0) != 2 or not getattr(layer, "rgb", False):
            raise ValueError(f"{layer.name!r} is not a 2-D RGB slide: a slide classifier reads RGB")
        levels = list(layer.data) if layer.multiscale else [layer.data]
        level = self.level_combo.value if level is None else level
        if level is None or level >= len(levels):
            meta = layer.metadata if isinstance(layer.metadata, dict) else {}
            level_mpp = meta.get("level_mpp")
            if not isinstance(level_mpp, list) or len(level_mpp) != len(levels):
                level_mpp = [None] * len(levels)
            level = clf.level_among(level_mpp)
        f = float(levels[0].shape[1]) / float(levels[level].shape[1])
        return levels[level], level, f

    def explain(self) -> Any:
        """Start explaining the chosen slide's decision; returns the worker (None if refused)."""
        if self.worker is not None:
            return None
        layer = self.image_combo.value
        try:
            if layer is None:
                raise ValueError("open a slide (an RGB image layer) first")
            clf = self.classifier()
            image, level, f = self._level(layer, clf)
        except Exception as err:  # noqa: BLE001
            self.status.value = f"Cannot explain: {err}"
            return None
        target = self.target_combo.value
        self._job = SlideJob(
            image=image,
            classifier=clf,
            target=None if target == PREDICTED else clf.class_index(str(target)),
            absence=str(self.absence_combo.value),
            threads=default_threads(),
        )
        meta = layer.metadata if isinstance(layer.metadata, dict) else {}
        self._place = {
            "layer": weakref.ref(layer),
            "level": level,
            "downsample": f,
            "mpp": meta.get("mpp"),
            "clf": clf,
            "image": layer.name,
        }
        from napari.qt.threading import thread_worker

        worker = thread_worker(run_slide_job, start_thread=False)(self._job)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.errored.connect(lambda err: self._on_done(SlideOutcome(error=str(err))))
        self.worker = worker
        self._busy(True, f"Embedding the tiles of {layer.name!r} at level {level}…")
        worker.start()
        return worker

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel.set()
            self.status.value = "Cancelling at the next batch of tiles…"

    def _busy(self, busy: bool, text: str = "") -> None:
        self.explain_button.enabled = not busy
        self.cancel_button.visible = busy
        self.progress.visible = busy
        self.progress.value = 0
        for button in (self.check_button, self.pixels_button, self.save_button):
            button.enabled = not busy and self.result is not None
        if text:
            self.status.value = text

    def _on_progress(self, event: Any) -> None:
        self.progress.value = int(round(100 * event.fraction))
        self.status.value = event.describe()

    def _on_done(self, outcome: SlideOutcome) -> None:
        self.worker = None
        self._job = None
        if outcome.explanation is None:
            self._busy(False, "Cancelled: nothing was added." if outcome.cancelled else "")
            if outcome.error:
                self.status.value = f"Explanation failed: {outcome.error}"
            return
        result = self.result = outcome.explanation
        self.checked = None
        self.pixel_evidence.clear()
        layer = add_result_layers(self.viewer, result, self._place)
        self._layer = None if layer is None else weakref.ref(layer)
        margin = result.provenance.get("margin")
        self._busy(
            False,
            f"{result.n_tiles:,} tissue tiles of {self._place['clf'].tile_size} px at level "
            f"{self._place['level']}"
            + (
                f"; the last {margin[0]} rows and {margin[1]} columns of pixels are in no tile"
                if margin and any(margin)
                else ""
            ),
        )
        self.sentence.value = result.sentence
        if layer is None:
            self.status.value = "The slide layer was closed: the result was not placed."

    # ------------------------------------------------------------------ edits
    @property
    def evidence_layer(self) -> Any:
        layer = self._layer() if self._layer is not None else None
        return layer if layer is not None and layer in self.viewer.layers else None

    def _current(self) -> tuple[np.ndarray, int]:
        layer = self.evidence_layer
        if layer is None or self.result is None:
            raise ValueError("explain a slide first (the evidence layer is gone)")
        return edited_keep(self.result, layer.data)

    def check_edited(self) -> Any:
        """Score the evidence layer's tiles as they are now; returns the worker."""
        if self.worker is not None:
            return None
        try:
            keep, outside = self._current()
        except ValueError as err:
            self.status.value = f"Cannot check: {err}"
            return None
        from napari.qt.threading import thread_worker

        clf = self._place["clf"]
        worker = thread_worker(run_tile_check, start_thread=False)(
            self.result, clf, keep, default_threads()
        )
        note = (
            f" ({outside} painted cell(s) outside the slide's tissue tiles are not tiles and "
            "were not scored)"
            if outside
            else ""
        )
        worker.returned.connect(lambda outcome: self._on_checked(outcome, note))
        self.worker = worker
        self._busy(True, "Checking the edited tiles…")
        worker.start()
        return worker

    def _on_checked(self, outcome: SlideOutcome, note: str) -> None:
        self.worker = None
        self._busy(False, "")
        if outcome.explanation is None:
            self.status.value = f"Check failed: {outcome.error}"
            return
        self.checked = outcome.explanation
        self.sentence.value = outcome.explanation.sentence + note

    def _described(self, keep: np.ndarray) -> SlideExplanation | None:
        """The explanation whose sentence is true of ``keep``: the search's or the check's."""
        for known in (self.result, self.checked):
            if known is not None and np.array_equal(known.kept, keep):
                return known
        return None

    def save(self, path: str | Path, overwrite: bool = False) -> list[Path]:
        """Write the evidence layer's tiles as GeoJSON at ``path`` and the summary beside
        it (.json); [] with the reason in the status when it cannot."""
        try:
            keep, outside = self._current()
            written, self.status.value = save_tile_set(
                path,
                keep,
                outside,
                self._described(keep),
                self._place,
                self.pixel_evidence,
                overwrite,
            )
        except ValueError as err:
            self.status.value = f"Not saved: {err}"
            return []
        return written

    # ------------------------------------------------------------------ pixels
    def explain_pixels(self) -> Any:
        """Find the pixel evidence of the tiles shown (once their sentence is true of
        them and they keep the decision); returns the worker (None if refused)."""
        if self.worker is not None:
            return None
        try:
            keep, outside = self._current()
            described = self._described(keep)
            if described is None or outside:
                raise ValueError("the tiles were edited: Check edited tiles first")
            if not described.meets_goal:
                raise ValueError("these tiles do not keep the decision, so no pixels in them do")
            image = self._place["layer"]()
            if image is None or image not in self.viewer.layers:
                raise ValueError("the slide layer was closed")
            level_data, _, _ = self._level(image, self._place["clf"], self._place["level"])
        except ValueError as err:
            self.status.value = f"Cannot find pixels: {err}"
            return None
        self._job = SlideJob(level_data, self._place["clf"], None, described.absence)
        self._job.threads = default_threads()
        self.worker = self.pixel_evidence.start(
            level_data, described, self._place, self._job, self._on_pixels
        )
        self.worker.yielded.connect(self._on_progress)
        self._busy(True, f"Pixel evidence in {described.n_kept} tile(s)…")
        return self.worker

    def _on_pixels(self, text: str) -> None:
        self.worker = None
        self._job = None
        self._busy(False, text)
