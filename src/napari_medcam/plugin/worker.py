"""Background work for the widget: the explanation and the edited-mask check.

The generator `run_explanation` is plain Python (testable without Qt); the
``*_worker`` functions wrap it in a napari ``thread_worker`` so that the GUI
stays responsive and progress reaches the widget and napari's activity dock.
A Cancel (``job.cancel``, or ``worker.quit()`` from the activity dock) takes
effect at the next optimisation step; torch runs on few threads meanwhile so
that the event loop keeps a core.

Failures never raise into the GUI thread: they come back as a `JobResult` with
``error`` set, which the widget shows as a napari notification.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_medcam import tiling
from napari_medcam.engine.explanation import ExplanationCancelled, relay
from napari_medcam.plugin.lazy import is_lazy, pyramid

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """Torch threads for a run beside a GUI: leave one core to the event loop."""
    return max(1, (os.cpu_count() or 1) - 1)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads in *this* thread for the duration (restored after)."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    owner = threading.get_ident()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        # a generator closed by the garbage collector may finish on another thread
        if threading.get_ident() == owner:
            torch.set_num_threads(before)


_warm_lock = threading.Lock()
_warm_started = False
#: set once the background warm-up has finished (see `start_warm_up`)
warm_up_done = threading.Event()


def _warm_up(threads: int | None) -> None:
    import torch

    with torch_threads(threads):
        try:
            # the first optimiser pulls in torch._dynamo (sympy, ...): ~2 s of imports
            p = torch.zeros(4, requires_grad=True)
            opt = torch.optim.Adam([p], lr=1e-3)
            conv = torch.nn.Conv2d(3, 4, 3)
            loss = conv(torch.zeros(1, 3, 8, 8)).mean() + p.sum()
            loss.backward()
            opt.step()
        except Exception:  # only a head start; a real run reports real errors
            logger.debug("warm-up failed", exc_info=True)
    # napari's first Labels layer imports pandas (~0.7 s) in the GUI thread
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401
    warm_up_done.set()


def start_warm_up(threads: int | None = None) -> None:
    """Pay one-off lazy imports in the background, once per process.

    torch's first optimiser imports torch._dynamo and napari's first Labels layer
    imports pandas; done during the first run (or in the GUI thread when the
    result arrives) they would stall the GUI by 0.3–0.9 s.
    """
    global _warm_started
    with _warm_lock:
        if _warm_started:
            return
        _warm_started = True
    threading.Thread(target=_warm_up, args=(threads,), name="medcam-warm-up", daemon=True).start()


@dataclass
class ExplainJob:
    """Everything one run needs, gathered in the GUI thread before it starts."""

    image: Any  # a numpy array, or a lazy (dask) region of a pyramid level
    classifier: Any  # napari_medcam.Classifier
    target: int | None
    config: Any  # napari_medcam.MedCAMConfig
    device: str = "auto"
    threads: int | None = None
    gradcam: bool = True
    #: every-slice mode: explain the stack slice by slice along this axis of ``image``
    slice_axis: int | None = None
    #: the soft mask will be shown (a large one then gets its pyramid too)
    soft: bool = False
    #: a fitted amortised explainer: one pass instead of per-image optimisation,
    #: every class found when ``target`` is None; ``refine`` N repairs failed tiles
    explainer: Any = None
    refine: int = 0
    #: set by the GUI to stop at the next step (no result is made)
    cancel: threading.Event = field(default_factory=threading.Event)
    #: set by the worker thread when it has let go of the job (finished or stopped)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class JobResult:
    explanation: Any = None  # napari_medcam.Explanation
    gradcam: np.ndarray | None = None
    gradcam_note: str = ""
    error: str = ""
    cancelled: bool = False
    #: a mask stitched on disk (too large for memory): multiscale levels over it, for
    #: napari (`lazy.pyramid`); None when the masks are NumPy arrays
    mask_levels: list[Any] | None = None
    soft_levels: list[Any] | None = None


def _message(err: BaseException) -> str:
    if isinstance(err, (ValueError, FileNotFoundError)):
        return str(err)
    if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
        return f"out of memory: {err}. Try a smaller image, the CPU, or the fast preset"
    return f"{type(err).__name__}: {err}"


def run_explanation(job: ExplainJob) -> Generator[Any, None, JobResult]:
    """Yield the engine's `ProgressEvent`s; return a `JobResult` (never raises).

    ``job.cancel`` is checked before every step: the engine's generator is then
    closed and a cancelled result returned. ``job.done`` is set on the way out.
    """
    import napari_medcam as mc

    try:
        with torch_threads(job.threads):
            try:
                amortised = (
                    {"explainer": job.explainer, "refine": job.refine}
                    if job.explainer is not None
                    else {}
                )
                if amortised and job.slice_axis is not None:
                    raise ValueError("an explainer explains one plane: untick 'every slice'")
                # the engine's default overlap is the one the input panel counted tiles with
                gen = mc.iter_explain(
                    job.image,
                    job.classifier,
                    job.target,
                    job.config,
                    device=job.device,
                    slice_axis=job.slice_axis,  # every-slice mode: one result for the stack
                    **amortised,
                )
                explanation = yield from relay(gen, job.cancel)
            except ExplanationCancelled:
                return JobResult(cancelled=True)
            except Exception as err:  # shown to the user as a notification
                logger.debug("Med-CAM run failed", exc_info=True)
                return JobResult(error=_message(err))
            if job.cancel.is_set():
                return JobResult(cancelled=True)
            # the engine's mask as it is: the API, the CLI and batch make the same one
            result = JobResult(explanation=explanation)
            if is_lazy(explanation.mask):
                # stitched on disk (a whole slide at full resolution): never read whole
                # into memory; napari gets multiscale levels over it, built here
                labels = explanation.labels
                shown = explanation.mask if labels is None else labels
                result.mask_levels = pyramid(shown, np.uint8)
                if job.soft and explanation.soft_mask is not None:
                    result.soft_levels = pyramid(explanation.soft_mask, np.float32)
            if job.gradcam and not job.cancel.is_set():
                pixels = math.prod(int(n) for n in explanation.mask.shape)
                if pixels > tiling.IN_MEMORY_PIXELS:
                    result.gradcam_note = (
                        f"Grad-CAM skipped: the region ({pixels:,} pixels) is larger than "
                        "Med-CAM keeps in memory; explain a smaller region to compare"
                    )
                else:
                    try:
                        result.gradcam = yield from _gradcam(job, explanation.target)
                    except Exception as err:  # Grad-CAM is a comparison, not the result
                        result.gradcam_note = f"Grad-CAM unavailable: {_message(err)}"
            if job.cancel.is_set():
                return JobResult(cancelled=True)
            return result
    finally:
        job.done.set()


def _gradcam(job: ExplainJob, target: int) -> Generator[Any, None, np.ndarray | None]:
    """Grad-CAM of the job's image (slice by slice in every-slice mode), for comparison.

    Yields its progress; returns None as soon as the job is cancelled (checked
    between tiles). A lazy region (pyramid level) is read here, in the worker
    thread, window by window as `explain` reads it (never whole).
    """
    from napari_medcam.comparison import iter_gradcam

    if job.slice_axis is None:
        planes = [job.image]
    else:
        planes = list(np.moveaxis(np.asarray(job.image), job.slice_axis, 0))
    maps = []
    for i, plane in enumerate(planes):
        gen = iter_gradcam(plane, job.classifier, target)
        while True:
            if job.cancel.is_set():
                gen.close()
                return None
            try:
                event = next(gen)
            except StopIteration as stop:
                maps.append(stop.value)
                break
            yield replace(event, tile=i, tiles=len(planes))
    if job.slice_axis is None:
        return maps[0]
    return np.moveaxis(np.stack(maps), 0, job.slice_axis)


@dataclass
class CheckJob:
    """An edited-mask check: copies of the image region and the mask, taken when the
    button was pressed (the user may go on painting meanwhile)."""

    image: Any  # a numpy array, or a lazy (dask) region of a pyramid level
    mask: Any  # a numpy copy of the edited mask, or a lazy on-disk mask (not editable)
    classifier: Any
    target: int
    config: Any
    threads: int | None = None
    slice_axis: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def run_check(job: CheckJob) -> Generator[Any, None, dict[str, Any]]:
    """`checking.iter_check` for an edited mask: yields its progress, returns its facts
    (``{'cancelled': True}`` or ``{'error': ...}`` instead; never raises).

    A mask of an image larger than the classifier's input is scored tile by tile on
    the explanation's grid; ``job.cancel`` is checked before every tile.
    """
    from napari_medcam.checking import iter_check

    try:
        with torch_threads(job.threads):
            try:
                gen = iter_check(
                    job.image,
                    job.mask,
                    job.classifier,
                    job.target,
                    job.config,
                    slice_axis=job.slice_axis,
                )
                return (yield from relay(gen, job.cancel))
            except ExplanationCancelled:
                return {"cancelled": True}
            except Exception as err:
                logger.debug("Med-CAM check failed", exc_info=True)
                return {"error": _message(err)}
    finally:
        job.done.set()


def explanation_worker(job: ExplainJob):
    """A napari ``GeneratorWorker`` (not yet started) running `run_explanation`."""
    from napari.qt.threading import thread_worker

    return thread_worker(run_explanation, start_thread=False, ignore_errors=True)(job)


def check_worker(job: CheckJob):
    """A napari ``GeneratorWorker`` (not yet started) running `run_check`."""
    from napari.qt.threading import thread_worker

    return thread_worker(run_check, start_thread=False, ignore_errors=True)(job)
