"""The task a Dask worker runs for one slide: open it, explain it, write its folder.

Nothing large travels: the task gets the slide's path and a small `SlideJob`, opens
the slide itself, loads the classifier once per worker process (checking its
fingerprint against the run's), explains the chosen level tile batch by tile batch
on the worker's device, and returns a one-line dict. A slide that cannot be read or
explained comes back as ``{"status": "failed", "reason": ...}``; only the death of
the worker process itself escapes, and the scheduler reruns the task elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_medcam.batch.outputs import remove_partial, thumbnails, write_slide_outputs
from napari_medcam.batch.worker_env import (
    PROGRESS_TOPIC,
    device_for,
    peak_rss_mb,
    slide_facts,
    symlink_loop,
)
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.io.slide_backends import is_dicom_folder
from napari_medcam.io.slides import WARNING

if TYPE_CHECKING:
    from napari_medcam.batch.decision import DecisionJob

#: level chosen when none is given: the finest at most this many pixels a side
AUTO_LEVEL_SIDE = 4096

_CLASSIFIERS: dict[tuple[str, str | None], Any] = {}
_EXPLAINERS: dict[str, Any] = {}
_MALLOC_TUNED = False


@dataclass(frozen=True)
class SlideJob:
    """What every slide task of a run needs (pickled to the workers, a few hundred bytes)."""

    classifier: str
    weights: str | None
    fingerprint: str
    config: MedCAMConfig | None  # None: an explainer's own
    level: int | None  # None: per slide, by mpp (else by size)
    target: int | str | None
    device: str
    settings_hash: str
    tile_overlap: int | None = None  # None: the engine's (tiling.overlap_for)
    tile_batch: int | None = None  # None: the engine's (4; 16 with an explainer)
    explainer: str | None = None  # an amortised explainer's file, or a packaged name
    mpp: float | None = None  # µm/px the classifier reads: the level nearest it (no --level)


def _classifier(job: SlideJob) -> Any:
    """The run's classifier, loaded once per worker process and checked by fingerprint."""
    from napari_medcam.classifiers import load_classifier
    from napari_medcam.classifiers.fingerprint import classifier_fingerprint

    key = (job.classifier, job.weights)
    if key not in _CLASSIFIERS:
        clf = load_classifier(job.classifier, weights=job.weights)
        fp = classifier_fingerprint(clf)
        if fp != job.fingerprint:
            raise ValueError(
                f"classifier {job.classifier!r} on this worker has other weights "
                f"(fingerprint {fp[:12]}, the run's {job.fingerprint[:12]})"
            )
        _CLASSIFIERS[key] = clf
    return _CLASSIFIERS[key]


def _explainer(job: SlideJob, classifier: Any) -> Any:
    """The run's amortised explainer (None without one), loaded once per worker process;
    `load_explainer` refuses one fitted for another classifier."""
    if job.explainer is None:
        return None
    if job.explainer not in _EXPLAINERS:
        from napari_medcam.engine.amortised import load_explainer

        _EXPLAINERS[job.explainer] = load_explainer(job.explainer, classifier)
    return _EXPLAINERS[job.explainer]


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _tune_malloc() -> None:
    """Undo what dask's nanny environment does to glibc malloc for torch (once per process).

    The nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which turns off
    glibc's adaptive mmap threshold: every large tensor of every optimisation step is
    then mmap'd and unmapped again, and its pages faulted in anew. Measured on one
    768² slide: 16.5 s of system time instead of 0.5, twice the wall time. A 32 MiB
    mmap threshold (glibc's largest) and a 256 MiB trim threshold keep them in the heap.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to undo
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 2**20)
    libc.mallopt(m_trim_threshold, 256 * 2**20)


def _cpu_seconds() -> float:
    """CPU time of this process (user + system): with wall time, how much of a core a
    slide got (a busy machine shows as a share well below 1)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def explain_slide(
    path: str, folder: str, slide_id: str, job: SlideJob | DecisionJob
) -> dict[str, Any]:
    """Explain one slide into ``folder`` (see the module docstring); a small result row.
    A `napari_medcam.batch.decision.DecisionJob` explains the slide's decision by a slide
    (MIL) classifier instead (`napari_medcam.batch.decision.explain_decision`)."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    worker = _worker()
    if worker is not None:
        _tune_malloc()
    try:
        if isinstance(job, SlideJob):
            row = _explain(Path(path), Path(folder), slide_id, job, worker, start)
        else:
            from napari_medcam.batch.decision import explain_decision

            row = explain_decision(Path(path), Path(folder), slide_id, job, worker, start)
    except Exception as err:  # any failure of this slide is recorded; the others go on
        reason = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        row = {"status": "failed", "reason": reason or type(err).__name__}
    row.setdefault("worker", str(getattr(worker, "address", "local")))
    row.setdefault("pid", os.getpid())
    # a finished slide's seconds are those its result.json (and summary.csv) holds
    row.setdefault("seconds", round(time.perf_counter() - start, 3))
    row.update(
        cpu_seconds=round(_cpu_seconds() - cpu, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
    return row


def _found(exp: Any) -> str:
    """The classes with evidence (an explainer's labels), else the class explained ("" when
    no tissue tile showed it)."""
    if exp.labels is not None and exp.label_classes:
        return ", ".join(exp.label_classes[k] for k in sorted(exp.label_classes))
    return exp.class_name if exp.tile_verdicts or exp.tiles == 1 else ""


def _explain(
    path: Path, folder: Path, slide_id: str, job: SlideJob, worker: Any, start: float
) -> dict[str, Any]:
    import dask

    import napari_medcam as mc
    from napari_medcam.io.slides import open_slide

    if path.is_dir() and not is_dicom_folder(path):  # open_slide would call it "not found"
        raise ValueError(f"{path} is a folder, not a slide file")
    if symlink_loop(path):  # open_slide would call it missing too
        raise ValueError(f"{path} is a symbolic link loop")
    clf = _classifier(job)
    explainer = _explainer(job, clf)
    remove_partial(folder)  # the folder itself is made only for a slide's outputs
    last = [-1]

    def progress(event: Any) -> None:
        # tiles of the optimisation only (tile selection also reports, per window)
        if worker is None or getattr(event, "stage", "optimise") != "optimise":
            return
        if event.tile != last[0]:
            last[0] = event.tile
            worker.log_event(
                PROGRESS_TOPIC, {"slide": slide_id, "tile": event.tile, "tiles": event.tiles}
            )

    # the slide's tiles are read here, on this worker's thread: inside a worker, dask's
    # default scheduler would be the cluster itself (a task per tile through the client)
    with dask.config.set(scheduler="synchronous"), open_slide(path) as slide:
        level, note = (
            (job.level, "")
            if job.level is not None
            else slide.level_for_mpp(job.mpp, AUTO_LEVEL_SIDE)
        )
        view, _, f = slide.region(level)
        level_mpp = slide.level_mpp[level]
        exp = mc.explain(
            view,
            clf,
            job.target,
            job.config,
            device=device_for(job, worker),
            progress=progress,
            tile_overlap=job.tile_overlap,
            tile_batch=job.tile_batch,
            explainer=explainer,
        )
        thumbs = thumbnails(slide.levels[-1], exp.mask, exp.tile_verdicts)
        slide_shape = list(slide.shape)
    if worker is not None:
        n = len(exp.tile_verdicts)
        worker.log_event(PROGRESS_TOPIC, {"slide": slide_id, "tile": n, "tiles": n})
    n_valid = sum(bool(v["valid"]) for v in exp.tile_verdicts)
    evidence = float(exp.area_fraction) * int(view.shape[0]) * int(view.shape[1])
    row = {
        "status": "done",
        "class_found": _found(exp),
        "valid": bool(exp.valid),
        "explanation_status": exp.status,
        "tiles": int(exp.tiles),
        "tiles_explained": len(exp.tile_verdicts),
        "tiles_valid": n_valid,
        "area_fraction": round(float(exp.area_fraction), 6),
        "evidence_level0_px": round(evidence * f * f),
        # connected regions of the mask written (None when it was stitched on disk)
        "regions": exp.regions,
        "detail": exp.detail,
        "level": level,
        "downsample": f,
        # µm per pixel of the level explained (None: the slide records no pixel size),
        # what the level was matched to, what was said about it, and its warnings
        "level_mpp": level_mpp,
        "classifier_mpp": job.mpp,
        "level_note": note,
        "warnings": [note.removeprefix(WARNING)] if note.startswith(WARNING) else [],
        "worker": str(getattr(worker, "address", "local")),
        "pid": os.getpid(),
    }
    if exp.labels is not None and exp.label_classes:
        row["label_classes"] = {str(k): v for k, v in exp.label_classes.items()}
    facts = slide_facts(path, slide_id, slide_shape, level, f, level_mpp, view.shape[:2], job)
    row["seconds"] = round(time.perf_counter() - start, 3)
    facts["result"] = {**facts, **row, "peak_rss_mb": round(peak_rss_mb(), 1)}
    folder.mkdir(parents=True, exist_ok=True)
    write_slide_outputs(folder, exp, facts, thumbs, clf.class_names)
    return row
