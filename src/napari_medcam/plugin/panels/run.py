"""The run panel: Explain / Cancel, progress, and the explanation worker's life cycle."""

from __future__ import annotations

import logging
import time
import weakref
from functools import partial
from typing import Any

from magicgui.widgets import Label, ProgressBar, PushButton
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QMessageBox, QVBoxLayout, QWidget

from napari_medcam.plugin.cost import Estimate, duration, estimate, record_run
from napari_medcam.plugin.layers import (
    region_pixels,
    region_transform_kwargs,
)
from napari_medcam.plugin.panels.common import Notifier, Session, wrap
from napari_medcam.plugin.results import ResultStore, RunContext
from napari_medcam.plugin.tile_map import tile_map_too_large
from napari_medcam.plugin.worker import ExplainJob, JobResult, explanation_worker

logger = logging.getLogger(__name__)


class RunPanel(QWidget):
    """Start an explanation of the input panel's region in the background; place its result.

    ``busy_changed`` says a run started or ended (the form locks meanwhile);
    ``result_added`` carries the new (or replaced) result layer; ``explained``
    the `Explanation` and what was explained, for the summary.
    """

    busy_changed = Signal(bool)
    result_added = Signal(object)
    explained = Signal(object, object, str, object)

    def __init__(
        self,
        session: Session,
        notify: Notifier,
        results: ResultStore,
        inputs: Any,
        classifier: Any,
        settings: Any,
        config: Any,
    ) -> None:
        super().__init__()
        self.session = session
        self.notify = notify
        self.results = results
        self.inputs = inputs  # InputPanel: the image layer and its region
        self.classifier = classifier  # ClassifierPanel: the model and the target
        self.settings = settings  # SettingsPanel: device, threads, extra layers
        self._config = config  # () -> the MedCAMConfig of a new run
        #: () -> (amortised explainer or None, refine steps); the widget sets it
        self.amortised: Any = lambda: (None, 0)
        self._ctx: RunContext | None = None
        self._pbar: Any = None
        self.last_result: JobResult | None = None
        self.run_button = PushButton(text="Explain")
        self.run_button.native.setMinimumHeight(32)
        self.estimate_label = Label(value="")
        wrap(self.estimate_label)
        self.estimate: Estimate | None = None
        self.progress = ProgressBar(min=0, max=100, value=0, visible=False)
        self.status_label = Label(value="")
        wrap(self.status_label)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in (self.run_button, self.estimate_label, self.progress, self.status_label):
            lay.addWidget(w.native)
        self.run_button.clicked.connect(self._on_clicked)

    def set_status(self, text: str) -> None:
        if not self.session.closed:
            self.status_label.value = text

    def update_button(self, region: Any) -> None:
        """Explain is possible for an explainable region, a classifier, and no check running."""
        if self.session.explaining:
            return
        checking = self.session.checking
        can = region.ok and self.classifier.classifier is not None and not checking
        self.run_button.enabled = can
        why = "wait for the check of the edited mask" if checking else ""
        why = why or region.problem or "load a classifier first"
        self.run_button.tooltip = "" if can else why
        self.estimate = self._estimate(region) if can else None
        self.estimate_label.value = self.estimate.text() if self.estimate else ""

    def _estimate(self, region: Any) -> Estimate | None:
        """The run's cost, from one timed step (None if it cannot be measured)."""
        try:
            if self.amortised()[0] is not None:  # one pass: no per-image steps to time
                return None
            return estimate(
                self.classifier.classifier,
                self._config(),
                region.tiles,
                self.settings.device,
            )
        except Exception:  # a model that cannot be timed still runs; it reports itself
            logger.debug("estimate failed", exc_info=True)
            return None

    def _confirmed(self, est: Estimate | None, what: str) -> bool:
        """Above the settings' threshold, ask before starting (0 minutes: never ask)."""
        limit = self.settings.ask_above_seconds
        if est is None or limit <= 0 or est.seconds <= limit:
            return True
        answer = QMessageBox.question(
            self,
            "Start a long run?",
            f"Explaining {what} may take {est.short()}.\n\n{est.text()}\n\n"
            "A smaller region, a coarser pyramid level or fewer steps (Advanced) cost less.",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _on_clicked(self, _v: Any = None) -> None:
        if self.session.explaining:
            self.cancel()
        else:
            self.explain()

    def explain(self) -> Any:
        """Start explaining the chosen image region; returns the worker (or None)."""
        if self.session.explaining:
            self.notify.info("Med-CAM is already running: cancel it first")
            return None
        if self.session.checking:
            # both would move the one classifier between devices
            self.notify.info(
                "Med-CAM is checking an edited mask: wait until the check has finished "
                "(or cancel it), then explain"
            )
            return None
        region = self.inputs.current_region()
        layer = self.inputs.image_layer
        if not region.ok or layer is None:
            self.notify.error(region.problem or "choose an image layer")
            return None
        clf = self.classifier.classifier or self.classifier.load(notify=True)
        if clf is None:
            return None
        est = self._estimate(region)
        if not self._confirmed(est, f"{region.description} of '{layer.name}'"):
            self.set_status("Not started.")
            return None
        try:
            config = self._config()
            explainer, refine = self.amortised()
            image = region_pixels(layer, region)
        except (ValueError, MemoryError) as err:
            self.notify.error(str(err))
            return None
        settings = self.settings
        job = ExplainJob(
            image=image,
            classifier=clf,
            target=self.classifier.target,
            config=config,
            device=settings.device,
            threads=settings.threads,
            gradcam=bool(getattr(clf, "hookable", True) and clf.layers),
            slice_axis=region.slice_axis,
            soft=settings.layer_options["add_soft"],
            explainer=explainer,
            refine=refine,
        )
        self._ctx = RunContext(
            layer_ref=weakref.ref(layer),
            layer_name=layer.name,
            region=region,
            transforms=region_transform_kwargs(layer, region),
            classifier=clf,
            classifier_label=self.classifier.classifier_label or clf.name,
            config=config,
            **settings.layer_options,
            job=job,
            estimate=est,
            domain=self.classifier.domain_check,
        )
        worker = explanation_worker(job)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(partial(self._on_returned, self._ctx))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(partial(self._on_finished, worker))
        self.session.job, self.session.worker = job, worker
        self._start_progress(f"Med-CAM: {layer.name}")
        self._set_busy(True)
        self.status_label.value = f"Explaining {region.description} of '{layer.name}'…"
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running explanation at its next step; no layer is added."""
        if not self.session.explaining or self._ctx is None:
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

    def stop_progress(self) -> None:
        if self._pbar is not None:
            try:
                self._pbar.close()
            except Exception:
                logger.debug("progress close failed", exc_info=True)
            self._pbar = None
        if not self.session.closed:
            self.progress.visible = False

    def _set_busy(self, busy: bool) -> None:
        self.run_button.text = "Cancel" if busy else "Explain"
        self.run_button.enabled = True
        self.busy_changed.emit(busy)

    def _on_progress(self, event: Any) -> None:
        job = self.session.job
        # a step queued before Cancel (or the end) must not overwrite what the run says
        if self.session.closed or (job is not None and job.cancel.is_set()):
            return
        pct = int(round(100 * float(event.fraction)))
        self.progress.value = pct
        if self._pbar is not None and pct > self._pbar.n:
            self._pbar.update(pct - self._pbar.n)
        self.status_label.value = progress_line(event, self._ctx)

    def _on_aborted(self) -> None:
        self.set_status("Cancelled: no layer added.")

    def _on_finished(self, worker: Any) -> None:
        if worker is not self.session.worker:
            return
        self._ctx = None
        self.session.job = self.session.worker = None
        self.stop_progress()
        if not self.session.closed:
            self._set_busy(False)

    def _on_returned(self, ctx: RunContext, result: JobResult) -> None:
        if self.session.closed:
            return
        self.last_result = result
        if result.cancelled:
            self.status_label.value = "Cancelled: no layer added."
            return
        if result.error:
            self.status_label.value = f"⚠ {result.error}"
            self.notify.error(f"Med-CAM: {result.error}")
            return
        exp = result.explanation
        record_run(ctx.classifier, ctx.job.device, exp.seconds, exp.steps)
        where = ctx.region.description
        names = list(ctx.classifier.class_names)
        if not has_evidence(exp):
            self.explained.emit(exp, names, where, {"domain": ctx.domain})
            self.status_label.value = f"No layer added: the mask is not trustworthy. {exp.status}."
            self.notify.warning(
                "Med-CAM added no layer: the mask is not trustworthy (see why in the widget)"
            )
            return
        try:
            placed = self.results.place(ctx, result)
        except Exception as err:  # e.g. the viewer is being torn down
            logger.debug("adding result failed", exc_info=True)
            self.status_label.value = f"⚠ could not add the result: {err}"
            self.notify.error(f"Med-CAM could not add the result: {err}")
            return
        if placed.kept_edited is not None:
            self.notify.info(
                f"Kept your edited '{placed.kept_edited.name}'; the new result is a new layer"
            )
        self.result_added.emit(placed.layer)
        self.explained.emit(exp, names, where, self._notes(ctx, result))
        self.status_label.value = f"Done: '{placed.layer.name}' ({exp.seconds:.1f} s)"
        if tile_map_too_large(exp):
            self.status_label.value += " · no tile map: the image is too large to hold one"
        if not exp.valid:  # some tiles held: their evidence is kept, the failed ones are empty
            self.status_label.value += f" · not valid overall: {exp.status}"
        if result.gradcam_note and ctx.add_gradcam:
            self.notify.info(result.gradcam_note)

    def _notes(self, ctx: RunContext, result: JobResult) -> dict[str, Any]:
        """What the summary says beyond the explanation: regions, extra layers added."""
        notes: dict[str, Any] = {"regions": regions_text(result), "domain": ctx.domain}
        notes["hidden"] = [
            kind
            for kind, on, there in (
                ("soft map", ctx.add_soft, True),
                ("Grad-CAM", ctx.add_gradcam, result.gradcam is not None),
            )
            if on and there
        ]
        return notes


def progress_line(event: Any, ctx: RunContext | None) -> str:
    """What is being done, against the grid the form counted and the estimate."""
    line = event.describe()
    if ctx is None:
        return line
    grid = ctx.region.tiles
    if grid > 1 and event.stage == "optimise" and event.tiles > 1:
        line = line.replace(f"/{event.tiles} ", f"/{event.tiles} with the class (of {grid}) ", 1)
    elapsed = time.perf_counter() - ctx.started
    est = f" of {ctx.estimate.short()}" if ctx.estimate is not None else ""
    return f"{line} · {duration(elapsed)}{est}"


def regions_text(result: JobResult) -> str:
    """ "3 regions at cell groups", the engine's count of the mask shown, or "" when unknown
    (a mask kept on disk is never read whole to count it)."""
    exp = result.explanation
    if exp is None or exp.regions is None:
        return ""
    scale = f" at {exp.detail}" if exp.detail else ""
    return f"{exp.regions} region{'s' * (exp.regions != 1)}{scale}"


def has_evidence(exp: Any) -> bool:
    """Is there a mask worth a layer: a valid one, or a tiled one where some tiles held
    (failed tiles' windows are empty and the tile map shows them)?"""
    if exp.valid:
        return True
    return exp.tiles > 1 and any(v.get("valid") for v in exp.tile_verdicts or [])
