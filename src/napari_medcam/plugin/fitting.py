"""Fitting an explainer from the widget: tiles of the open image, `iter_fit` in a worker.

Like `worker.run_explanation`, `run_fit` is a plain generator (testable without
Qt) that never raises: the tiles are read in the worker thread (a slide region is
a lazy view), the fit checkpoints beside the chosen file so that a cancelled fit
started again on the same image resumes, and the explainer is written only when the
fit has finished. `fit_worker` wraps it in a napari ``thread_worker``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.plugin.worker import _message, torch_threads

logger = logging.getLogger(__name__)

#: tissue tiles read from the image for a fit (spread evenly over it)
MAX_TILES = 256


@dataclass
class FitJob:
    """One fit, gathered in the GUI thread before it starts."""

    image: Any  # a numpy array, or a lazy (dask) region of a pyramid level
    classifier: Any
    config: Any
    path: Path  # where the explainer is written
    steps: int
    empty_class: str | None = None  # the class of "nothing found", if any
    device: str = "auto"
    threads: int | None = None
    max_tiles: int = MAX_TILES
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def checkpoint(self) -> Path:
        return self.path.with_name(self.path.name + ".ckpt")


@dataclass
class FitResult:
    path: Path | None = None
    explainer: Any = None
    error: str = ""
    cancelled: bool = False
    step: int = 0  # the last fitting step done


def describe(event: Any) -> str:
    """One status line for a `FitEvent`."""
    if event.phase == "read":
        return f"reading tiles {event.step}/{event.total}"
    if event.phase == "prepare":
        return f"classifying tiles {event.step}/{event.total}"
    if event.phase == "evaluate":
        return f"held-out check {event.step}/{event.total}"
    loss = event.losses.get("loss")
    area = event.losses.get("area")
    text = f"fitting: step {event.step}/{event.total}"
    text += f" · loss {loss:.3f}" if loss is not None else ""
    return text + (f" · area {100 * area:.1f} %" if area is not None else "")


def image_tiles(job: FitJob) -> Generator[Any, None, list[np.ndarray]]:
    """Up to ``job.max_tiles`` tissue tiles of the image at the classifier's input size,
    evenly spread over it; yields a "read" `FitEvent` per tile looked at."""
    from napari_medcam.classifiers.prepare import unit_tensor
    from napari_medcam.engine.amortised import FitEvent
    from napari_medcam.tiling import MIN_TISSUE_FRACTION, tile_grid, tissue_fraction

    clf = job.classifier
    grid = tile_grid(tuple(job.image.shape[:2]), clf.input_size, 0)
    picks = np.linspace(0, len(grid) - 1, min(len(grid), 4 * job.max_tiles)).round()
    picks = list(dict.fromkeys(int(i) for i in picks))
    out: list[np.ndarray] = []
    for n, i in enumerate(picks, start=1):
        if job.cancel.is_set() or len(out) >= job.max_tiles:
            break
        tile = np.asarray(job.image[grid[i]])
        unit = unit_tensor(tile, clf)[0].permute(1, 2, 0).numpy()
        if tissue_fraction(unit) >= MIN_TISSUE_FRACTION:
            out.append(tile)
        yield FitEvent("read", n, len(picks))
    return out


def run_fit(job: FitJob) -> Generator[Any, None, FitResult]:
    """Yield the fit's `FitEvent`s; return a `FitResult` (never raises).

    ``job.cancel`` is checked before every step: the fit is then closed (its
    checkpoint written) and nothing else. ``job.done`` is set on the way out.
    """
    from napari_medcam.engine.amortised import iter_fit

    step = 0
    try:
        with torch_threads(job.threads):
            try:
                tiles = yield from image_tiles(job)
                if job.cancel.is_set():
                    return FitResult(cancelled=True)
                if not tiles:
                    raise ValueError("no tissue tiles in this image to fit on")
                gen = iter_fit(
                    job.classifier,
                    tiles,
                    job.config,
                    job.steps,
                    device=job.device,
                    checkpoint=job.checkpoint,
                    empty_class=job.empty_class,
                )
                while True:
                    if job.cancel.is_set():
                        gen.close()
                        return FitResult(cancelled=True, step=step)
                    try:
                        event = next(gen)
                    except StopIteration as stop:
                        explainer = stop.value
                        break
                    step = event.step if event.phase == "fit" else step
                    yield event
                explainer.save(job.path)
                job.checkpoint.unlink(missing_ok=True)
            except Exception as err:  # shown in the widget
                logger.debug("explainer fit failed", exc_info=True)
                return FitResult(error=_message(err), step=step)
            return FitResult(path=job.path, explainer=explainer, step=step)
    finally:
        job.done.set()


def fit_worker(job: FitJob) -> Any:
    """A napari ``GeneratorWorker`` (not yet started) running `run_fit`."""
    from napari.qt.threading import thread_worker

    return thread_worker(run_fit, start_thread=False, ignore_errors=True)(job)
