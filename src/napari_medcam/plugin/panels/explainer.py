"""The explainer panel: explain in one pass with a fitted explainer, fit one, live mode.

Per-image optimisation takes seconds a tile; an amortised explainer, fitted once for
a classifier, explains a tile in one pass. This panel chooses it (none, the packaged
"demo" one for the demo classifier, or a file) and says what it was fitted for; a
file made for another classifier is refused here, in words, before any run. It fits
one on the open image (in the background, with progress and Cancel) and turns live
mode (`napari_medcam.plugin.live`) on and off.
"""

from __future__ import annotations

import time
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox

from napari_medcam.plugin.cost import duration
from napari_medcam.plugin.fitting import FitJob, FitResult, describe, fit_worker
from napari_medcam.plugin.layers import region_pixels
from napari_medcam.plugin.live import LiveController
from napari_medcam.plugin.panels.common import Notifier, Session, add_rows, wrap

NONE, DEMO, FILE = "none", "demo", "file"
FIT_STEPS = 2000


def packaged(name: str) -> bool:
    """Is the packaged explainer ``name`` installed (`load_explainer(name)` finds
    ``engine/amortised/weights/<name>.pt``)? Checked without importing torch."""
    weights = resources.files("napari_medcam.engine") / "amortised" / "weights"
    return (weights / f"{name}.pt").is_file()


def explainer_facts(exp: Any) -> str:
    """What an explainer is for, in two lines: its classifier, classes and fit."""
    meta = exp.metadata
    clf = meta["classifier"]
    lines = [f"For classifier '{clf['name']}' · classes: {', '.join(clf['class_names'])}"]
    fit = meta.get("fit") or {}
    if fit:
        text = f"fitted on {fit.get('tiles', '?')} tiles, {fit.get('steps', '?')} steps"
        if fit.get("tiles_empty_class"):
            text += f" ({fit['tiles_empty_class']} of class {fit['empty_class']} left out)"
        quality = fit.get("held_out_quality") or {}
        if quality.get("tiles"):
            text += f" · held-out tiles valid: {100 * quality['valid_share']:.0f} %"
        if fit.get("empty_class"):
            text += f" · empty class: {fit['empty_class']} (never explained)"
        lines.append(text)
    lines += [f"⚠ {w}" for w in exp.warnings()]
    return "\n".join(lines)


class ExplainerPanel(QGroupBox):
    """Choose, fit and use an amortised explainer; ``changed`` says the choice changed,
    ``fitted`` carries a new explainer file."""

    changed = Signal()
    fitted = Signal(object)

    def __init__(
        self,
        viewer: Any,
        session: Session,
        notify: Notifier,
        inputs: Any,
        classifier: Any,
        settings: Any,
        config: Any,
    ) -> None:
        super().__init__("Explainer (one pass)")
        self.viewer = viewer
        self.session = session
        self.notify = notify
        self.inputs = inputs  # InputPanel: the image and its region
        self.classifier_panel = classifier  # ClassifierPanel: the model and the target
        self.settings = settings
        self._config = config  # () -> the MedCAMConfig of a run
        self.explainer: Any = None
        self.problem = ""
        self._loaded_for: tuple[Any, ...] | None = None
        self.fit_job: FitJob | None = None
        self.fit_worker: Any = None
        self.last_fit: FitResult | None = None
        self._fit_clock: tuple[float, int] | None = None  # (time, step) of the first step seen
        self.choice_combo = ComboBox(
            label="Explainer",
            choices=self._choices,
            tooltip="none: optimise every image (seconds a tile) · an explainer fitted "
            "for this classifier explains every tile in one pass",
        )
        self.file_edit = FileEdit(
            label="File", mode="r", nullable=True, filter="Explainers (*.pt)", visible=False
        )
        self.facts = Label(value="")
        wrap(self.facts)
        self.refine = SpinBox(
            label="Refine (steps)",
            value=0,
            min=0,
            max=1000,
            tooltip="Every tile is held to the per-image goal: a one-pass mask that fails "
            "its check or misses the goal is optimised for up to this many steps, starting "
            "from it; one that meets it is pruned (0: one pass only, failing tiles left out)",
        )
        self.live_check = CheckBox(
            text="Live: explain the view as you pan and zoom",
            value=False,
            tooltip="On a slide: the field in view, at the chosen level, is explained "
            "whenever the view rests (no refinement)",
        )
        self.live_label = Label(value="")
        wrap(self.live_label)
        self.fit_steps = SpinBox(
            label="Fit steps", value=FIT_STEPS, min=1, max=100_000, tooltip="Steps of the fit"
        )
        self.fit_empty = ComboBox(
            label="Empty class",
            choices=self._empty_choices,
            tooltip="The class of 'nothing found' (e.g. normal tissue): its tiles are left "
            "out of the fit, its masks learn to be empty, and it is never explained on a "
            "slide. 'none' fits every class.",
        )
        self.fit_button = PushButton(text="Fit an explainer on this image…")
        self.fit_progress = ProgressBar(min=0, max=100, value=0, visible=False)
        self.fit_label = Label(value="")
        wrap(self.fit_label)
        form = Container(widgets=[self.choice_combo, self.file_edit, self.refine])
        form.margins = (0, 0, 0, 0)
        fit_form = Container(widgets=[self.fit_steps, self.fit_empty])
        fit_form.margins = (0, 0, 0, 0)
        add_rows(
            self,
            form,
            self.facts,
            self.live_check,
            self.live_label,
            fit_form,
            self.fit_button,
            self.fit_progress,
            self.fit_label,
        )
        self.live = LiveController(
            viewer,
            session,
            inputs,
            lambda: (self.classifier_panel.classifier, self.classifier_panel.target),
            lambda: self.explainer,
            settings,
            config,
        )
        self.live.status.connect(self._set_live_status)
        self.choice_combo.changed.connect(self.refresh)
        self.file_edit.changed.connect(self.refresh)
        self.live_check.changed.connect(self._on_live)
        self.fit_button.clicked.connect(self._on_fit_clicked)
        # the widget going away stops the fit and live runs (cancel only, never wait)
        self.destroyed.connect(partial(_cancel_all, self.live, lambda: self.fit_job))
        self.refresh()

    # ------------------------------------------------------------- the choice
    def _choices(self, _w: Any = None) -> list[tuple[str, str]]:
        out = [("none (optimise each image)", NONE)]
        demo = self.classifier_panel.is_demo
        if demo and packaged("demo"):
            out.append(("demo (for the demo classifier)", DEMO))
        return [*out, ("file…", FILE)]

    def _empty_choices(self, _w: Any = None) -> list[tuple[str, str | None]]:
        clf = self.classifier_panel.classifier
        return [("none", None), *((n, n) for n in (clf.class_names if clf else []))]

    def refresh(self, _v: Any = None) -> None:
        """The classifier or the choice changed: offer what fits, load the explainer."""
        if self.session.closed:
            return
        with self.choice_combo.changed.blocked():
            self.choice_combo.reset_choices()
        self.fit_empty.reset_choices()
        self.file_edit.visible = self.choice_combo.value == FILE
        self.load()
        if self.explainer is None and self.live.active:
            self.live_check.value = False
        self.changed.emit()

    def load(self) -> Any:
        """Load the chosen explainer for the loaded classifier; None (``problem`` says
        why, in the panel) when there is none or it cannot be used."""
        kind = self.choice_combo.value
        clf = self.classifier_panel.classifier
        source = str(self.file_edit.value or "") if kind == FILE else kind
        # a file fitted again into the same path is a new explainer: its time is in the key
        stamp = Path(source).stat().st_mtime_ns if kind == FILE and Path(source).is_file() else 0
        key = (kind, source, stamp, id(clf))
        if key == self._loaded_for:
            return self.explainer
        self._loaded_for = key
        self.explainer, self.problem = None, ""
        if kind == NONE:
            self.facts.value = "Each image is optimised on its own."
            return None
        from napari_medcam.engine.amortised import load_explainer

        try:
            if clf is None:
                raise ValueError("load a classifier first")
            if not source:
                raise ValueError("choose an explainer file (*.pt)")
            self.explainer = load_explainer(source, clf)
        except Exception as err:  # a wrong or broken file: said here, never raised
            self.problem = f"cannot use this explainer: {err}"
            self.facts.value = f"⚠ {self.problem}"
            return None
        self.facts.value = explainer_facts(self.explainer)
        return self.explainer

    def choice(self) -> tuple[Any, int]:
        """(explainer or None, refine steps) for a run; ValueError saying why the chosen
        explainer cannot be used."""
        if self.choice_combo.value == NONE:
            return None, 0
        if self.load() is None:
            raise ValueError(self.problem)
        return self.explainer, int(self.refine.value)

    def use_file(self, path: str | Path) -> Any:
        """Choose the explainer file ``path`` (as the user would); returns it or None."""
        with self.file_edit.changed.blocked():
            self.file_edit.value = str(path)
        self.choice_combo.value = FILE
        self.refresh()
        return self.explainer

    # ------------------------------------------------------------------- live
    def _set_live_status(self, text: str) -> None:
        if not self.session.closed:
            self.live_label.value = text

    def _on_live(self, on: bool) -> None:
        if not on:
            self.live.stop()
            return
        if self.load() is None:
            with self.live_check.changed.blocked():
                self.live_check.value = False
            self.live_label.value = f"⚠ {self.problem or 'choose an explainer first'}"
            return
        self.live.start()

    def on_busy(self, busy: bool) -> None:
        """Explain started or ended: live mode lets it have the classifier (its run in
        flight is cancelled), then follows the view again."""
        if busy:
            self.live.pause()
        elif self.live.active:
            self.live.refresh()

    # -------------------------------------------------------------------- fit
    def _on_fit_clicked(self, _v: Any = None) -> None:
        if self.fit_worker is not None:
            self.cancel_fit()
            return
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self, "Save the explainer as", "explainer.pt", "Explainers (*.pt)"
        )
        if path:
            self.fit(path)

    def fit(self, path: str | Path, steps: int | None = None) -> Any:
        """Fit an explainer on the input panel's region and save it to ``path``;
        returns the worker (None, with a message, when it cannot start)."""
        if self.fit_worker is not None:
            self.notify.info("an explainer is being fitted: cancel it first")
            return None
        clf = self.classifier_panel.classifier
        layer = self.inputs.image_layer
        region = self.inputs.current_region()
        problem = "" if clf is not None else "load a classifier first"
        if self.session.explaining or self.session.checking:  # one user of the classifier
            problem = "wait until the explanation (or check) has finished, then fit"
        problem = problem or ("" if layer is not None and region.ok else region.problem)
        if not problem and clf.spatial_dims != 2:
            problem = "explainers are fitted for 2-D classifiers"
        try:
            config = None if problem else self._config()
        except ValueError as err:
            problem = str(err)
        if problem:
            self.fit_label.value = f"⚠ {problem}"
            return None
        job = FitJob(
            image=region_pixels(layer, region),
            classifier=clf,
            config=config,
            path=Path(path),
            steps=int(steps if steps is not None else self.fit_steps.value),
            empty_class=self.fit_empty.value,
            device=self.settings.device,
            threads=self.settings.threads,
        )
        worker = fit_worker(job)
        worker.yielded.connect(self._on_fit_progress)
        worker.returned.connect(self._on_fit_returned)
        worker.finished.connect(partial(self._on_fit_finished, worker))
        self.fit_job, self.fit_worker = job, worker
        self._fit_clock = None
        self.fit_button.text = "Cancel fit"
        self.fit_progress.value = 0
        self.fit_progress.visible = True
        self.fit_label.value = f"Fitting on {region.description}…"
        worker.start()
        return worker

    def cancel_fit(self) -> None:
        """Stop the fit at its next step; its checkpoint stays, no explainer is written."""
        if self.fit_job is not None:
            self.fit_job.cancel.set()
            self.fit_button.text = "Cancelling…"
            self.fit_button.enabled = False

    def _on_fit_progress(self, event: Any) -> None:
        if self.session.closed:
            return
        self.fit_progress.value = int(round(100 * event.fraction))
        text = describe(event)
        if event.phase == "fit":  # a fit takes minutes to hours: say how long is left
            now = time.perf_counter()
            start, first = self._fit_clock = self._fit_clock or (now, event.step)
            if event.step > first:
                left = (now - start) / (event.step - first) * (event.total - event.step)
                text += f" · about {duration(left)} left"
        self.fit_label.value = text

    def _on_fit_returned(self, result: FitResult) -> None:
        if self.session.closed:
            return
        self.last_fit = result
        if result.cancelled:
            self.fit_label.value = (
                f"Fit cancelled at step {result.step}: no explainer written; fitting the "
                "same image into the same file resumes from there"
            )
        elif result.error:
            self.fit_label.value = f"⚠ fit failed: {result.error}"
        else:
            self.fit_label.value = f"Saved {result.path.name}: it is now the chosen explainer"
            self.use_file(result.path)
            self.fitted.emit(result.path)

    def _on_fit_finished(self, worker: Any) -> None:
        if worker is not self.fit_worker:
            return
        self.fit_job = self.fit_worker = None
        if not self.session.closed:
            self.fit_button.text = "Fit an explainer on this image…"
            self.fit_button.enabled = True
            self.fit_progress.visible = False


def _cancel_all(live: LiveController, fit_job: Any, *_a: Any) -> None:
    live.active = False
    if live.job is not None:
        live.job.cancel.set()
    job = fit_job()
    if job is not None:
        job.cancel.set()
