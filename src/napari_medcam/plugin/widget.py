"""The Med-CAM dock widget: the panels, assembled and wired; no work of its own.

Each panel has one job (`napari_medcam.plugin.panels`): the input panel says what
would be explained, the classifier and settings panels what with, the run panel
runs the engine in the background and places the result (`results.ResultStore`),
the summary shows it, the review panel checks and compares it, the export panel
saves it. Panels share the viewer, one `panels.common.Session` (running jobs,
closed or not) and the result store, and report through Qt signals, which this
class connects. Its methods are the widget's public verbs, for scripts and tests.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

from napari_medcam.plugin.domain import domain_of
from napari_medcam.plugin.panels.classifier import ClassifierPanel
from napari_medcam.plugin.panels.common import Notifier, Session
from napari_medcam.plugin.panels.edits import EditWatcher, content_hash
from napari_medcam.plugin.panels.explainer import ExplainerPanel
from napari_medcam.plugin.panels.export import ExportPanel
from napari_medcam.plugin.panels.input import InputPanel
from napari_medcam.plugin.panels.review import ReviewPanel
from napari_medcam.plugin.panels.run import RunPanel
from napari_medcam.plugin.panels.settings import SettingsPanel
from napari_medcam.plugin.panels.summary import SummaryPanel
from napari_medcam.plugin.region import Region
from napari_medcam.plugin.results import ResultStore
from napari_medcam.plugin.sample_data import SAMPLE_KEY
from napari_medcam.plugin.worker import JobResult, start_warm_up

if TYPE_CHECKING:  # pragma: no cover
    import napari


class MedCAMWidget(QWidget):
    """Explain the displayed tile, slice or volume and add an aligned, editable mask."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy; its layers are new proxy objects on
        # every access, which breaks identity (``is``) and weak references to layers.
        # We only use public API, so keep the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.session = Session()
        self.results = ResultStore(self.viewer)
        notify = Notifier(self.session)
        self.classifier_panel = ClassifierPanel(notify)
        self.input = InputPanel(
            self.viewer, self.session, self.results, lambda: self.classifier_panel.classifier
        )
        self.settings = SettingsPanel()
        self.run = RunPanel(
            self.session,
            notify,
            self.results,
            self.input,
            self.classifier_panel,
            self.settings,
            lambda: self.build_config(),  # a method, so that scripts may replace it
        )
        self.explainer_panel = ExplainerPanel(
            self.viewer,
            self.session,
            notify,
            self.input,
            self.classifier_panel,
            self.settings,
            lambda: self.build_config(),
        )
        self.run.amortised = self.explainer_panel.choice
        self.summary = SummaryPanel()
        self.review = ReviewPanel(
            self.viewer, self.session, notify, self.results, lambda: self.settings.threads
        )
        self.export = ExportPanel(notify, self.results, lambda: self.review.result_combo.value)
        self.edits = EditWatcher()
        self._summary_of: Any = None  # weakref to the result layer the summary describes
        # everything in a scroll area: docked, the widget fits a 1366×768 laptop
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(6)
        for panel in (
            self.input,
            self.classifier_panel,
            self.settings,
            self.explainer_panel,
            self.run,
            self.summary,
            self.review,
            self.export,
        ):
            layout.addWidget(panel)
        layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        # sections that only make sense after a run stay out of the way until then
        for panel in (self.summary, self.review, self.export):
            panel.setVisible(False)
        self.setMinimumWidth(340)
        self._connect()
        # stop a run when the widget goes (its dock or the whole viewer is closed):
        # cancel only, never wait on the GUI thread
        self.destroyed.connect(lambda *_a, s=self.session: s.stop(timeout=0.0))
        self.destroyed.connect(lambda *_a, e=self.edits: e.stop())
        self.refresh_choices()
        self.input._on_active()
        self.classifier_panel.load(notify=False)
        start_warm_up(self.settings.threads)

    def _connect(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        for layer in layers:
            layer.events.name.connect(self._on_layers_changed)
        self.classifier_panel.changed.connect(self.input.update_region)
        self.classifier_panel.changed.connect(self.explainer_panel.refresh)
        self.run.busy_changed.connect(self.explainer_panel.on_busy)
        self.explainer_panel.changed.connect(self.update_buttons)
        self.input.region_changed.connect(self._on_region)
        self.input.region_changed.connect(self.update_buttons)
        self.input.result_activated.connect(self.review.select_result)
        self.run.busy_changed.connect(self._on_busy)
        self.run.result_added.connect(self._on_result_added)
        self.run.explained.connect(self._on_explained)
        self.settings.fill_check.changed.connect(self.results.set_fill)
        self.edits.painted.connect(lambda layer: self._on_edited(layer, None))
        self.edits.edited.connect(lambda layer: self._on_edited(layer, content_hash(layer)))
        self.review.changed.connect(self.update_buttons)
        self.review.status.connect(self.run.set_status)
        self.export.status.connect(self.run.set_status)

    # ------------------------------------------------------------------ wiring
    def _on_layers_changed(self, event: Any = None) -> None:
        if self.session.closed:
            return
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
        self.refresh_choices()

    def refresh_choices(self) -> None:
        """List the layers again in every chooser; update the buttons."""
        self.review.refresh_choices()
        self.input.refresh_choices()
        self.update_buttons()

    def _on_region(self, region: Region) -> None:
        """A sample image names its classifier (taken when none is chosen); the card
        says whether the image looks like the training data."""
        if self.session.closed:
            return
        layer = self.input.image_combo.value
        meta = getattr(layer, "metadata", None) or {}
        sample = meta.get(SAMPLE_KEY) if isinstance(meta, dict) else None
        if isinstance(sample, dict) and sample.get("classifier"):
            self.classifier_panel.suggest(str(sample["classifier"]))
        self.classifier_panel.show_domain(domain_of(self.classifier, layer, region))

    def _on_busy(self, busy: bool) -> None:
        self.classifier_panel.set_enabled(not busy)
        self.settings.set_enabled(not busy)
        self.update_buttons()

    def _on_result_added(self, layer: Any) -> None:
        self.edits.watch(layer)
        self._summary_of = weakref.ref(layer)
        self.review.select_result(layer)
        self.update_buttons()

    def _on_explained(self, exp: Any, names: list[str], where: str, notes: Any) -> None:
        if "regions" not in notes:  # no layer was added: the summary describes none
            self._summary_of = None
        self.summary.show_explanation(exp, names, where, notes)
        self.summary.setVisible(True)

    def _on_edited(self, layer: Any, current: str | None) -> None:
        """A result's mask changed (``current``: its hash; None while painting): what
        was measured on another state of it is marked out of date, or cleared again."""
        if self.session.closed:
            return
        stale = self.review.mark_edited(layer, current)
        rec = self.results.get(layer)
        if self._summary_of is not None and self._summary_of() is layer and rec is not None:
            edited = current is None or (bool(rec.data_hash) and current != rec.data_hash)
            self.summary.set_stale(
                "You edited the mask: the numbers below describe the mask as Med-CAM "
                "made it. Check edited mask measures the edited one."
                if edited
                else ""
            )
            stale |= edited
        self.edits.poll(layer, stale)

    def update_buttons(self, region: Region | None = None) -> None:
        """Enable what can be done now (Explain, check, compare, save)."""
        if self.session.closed:
            return
        if not self.session.explaining:
            self.run.update_button(region if region is not None else self.current_region())
        self.review.update_buttons(explaining=self.session.explaining)
        self.export.update_buttons()
        has_results = bool(self.results.layers())
        self.review.setVisible(has_results)
        self.export.setVisible(has_results)

    # ------------------------------------------------------------ public verbs
    @property
    def classifier(self) -> Any:
        return self.classifier_panel.classifier

    @property
    def worker(self) -> Any:
        """The running explanation's worker (None when idle)."""
        return self.session.worker

    @property
    def check_worker(self) -> Any:
        """The running edited-mask check's worker (None when idle)."""
        return self.session.check_worker

    @property
    def last_result(self) -> JobResult | None:
        return self.run.last_result

    @property
    def last_check(self) -> dict[str, Any] | None:
        return self.review.last_check

    def current_region(self) -> Region:
        return self.input.current_region()

    def build_config(self) -> Any:
        """The `MedCAMConfig` of the form: the preset with the Advanced values."""
        return self.settings.build_config()

    def set_settings(self, preset: str = "fast", **values: Any) -> None:
        """Set the preset and any Advanced field (or ``threads``) programmatically."""
        self.settings.set_settings(preset, **values)

    def explain(self) -> Any:
        """Start explaining the chosen image region; returns the worker (or None)."""
        return self.run.explain()

    def cancel(self) -> None:
        self.run.cancel()

    def check_edited_mask(self) -> Any:
        """Score the (edited) mask as its explanation was made; returns the worker."""
        return self.review.check_edited_mask()

    def compare(self) -> list[dict[str, Any]] | None:
        return self.review.compare()

    def save_mask(
        self, path: str | Path, geojson: bool | None = None, overwrite: bool = False
    ) -> list[Path]:
        return self.export.save_mask(path, geojson=geojson, overwrite=overwrite)

    def is_edited(self, layer: Any) -> bool:
        """Has the user changed this result layer since the widget made it?"""
        return self.results.is_edited(layer)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop any run and check for good; wait up to ``timeout`` s for their threads.

        True when they let go in time. (Closing the viewer cancels without waiting.)
        """
        done = self.session.stop(timeout)
        self.run.stop_progress()
        return done
