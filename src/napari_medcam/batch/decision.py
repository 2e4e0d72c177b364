"""A cohort explained with a slide (MIL) classifier: one slide's decision per task.

``batch --slide-classifier`` (`run_cohort` with ``slide_classifier``) explains what a
slide classifier decided about each slide, as ``explain --slide-classifier`` does for
one: the worker opens the slide at the level the classifier reads (`--level`
overrides), embeds its tiles once — cached in the slide's own folder
(``embeddings.zarr``), so a redo with another ``--absence`` or target reuses them —
finds the smallest set of tiles that alone keeps the decision, with ``--pixels`` the
pixels inside them, and writes the slide's folder: ``evidence.geojson`` and
``evidence.json`` (`napari_medcam.io.slide_evidence.write_slide_evidence`), the
thumbnails (the kept tiles in cyan), and ``result.json`` last, which resume reads
(`napari_medcam.batch.outputs.slide_outputs_valid`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.batch.outputs import (
    DECISION,
    EMBEDDINGS,
    EVIDENCE_GEOJSON,
    OVERLAY,
    RESULT,
    THUMB,
    _png_writer,
    _text_writer,
    remove_partial,
    thumbnails,
)
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.io import jsonable, write_files
from napari_medcam.io.slide_backends import is_dicom_folder

_SLIDE_CLASSIFIERS: dict[str, Any] = {}


@dataclass(frozen=True)
class DecisionJob:
    """What every slide task of a slide-classifier cohort needs (pickled to the workers)."""

    slide_classifier: str
    fingerprint: str
    config: MedCAMConfig
    level: int | None  # None: per slide, the level the classifier reads
    target: int | str | None
    absence: str
    pixels: bool
    device: str
    settings_hash: str


def slide_classifier_fingerprint(clf: Any) -> str:
    """SHA-256 of what a slide classifier's decisions depend on: its encoder (weights and
    tile preparation, as the embeddings' cache keys it), its aggregator's weights, the
    tiles it reads and its classes."""
    from napari_medcam.classifiers.fingerprint import module_fingerprint

    parts = {
        "encoder": clf.encoder_fingerprint(),
        "aggregator": module_fingerprint(clf.aggregator),
        "tile_size": clf.tile_size,
        "level": clf.level,
        "mpp": clf.mpp,
        "class_names": list(clf.class_names),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load_slide_classifier(spec: str) -> Any:
    """A MIL zoo name, a registered slide classifier or ``package.module:factory``."""
    from napari_medcam.zoo.mil import load_any

    return load_any(spec)


def _classifier(job: DecisionJob) -> Any:
    """The run's slide classifier, loaded once per worker process, checked by fingerprint."""
    if job.slide_classifier not in _SLIDE_CLASSIFIERS:
        clf = load_slide_classifier(job.slide_classifier)
        fp = slide_classifier_fingerprint(clf)
        if fp != job.fingerprint:
            raise ValueError(
                f"slide classifier {job.slide_classifier!r} on this worker has other weights "
                f"(fingerprint {fp[:12]}, the run's {job.fingerprint[:12]})"
            )
        _SLIDE_CLASSIFIERS[job.slide_classifier] = clf
    return _SLIDE_CLASSIFIERS[job.slide_classifier]


class _KeptTiles:
    """The kept tiles as a mask of the explained level's shape, read only as
    ``mask[::step, ::step]`` (what `thumbnails` reads): never made at full size."""

    def __init__(self, shape: tuple[int, int], windows: np.ndarray) -> None:
        self.shape, self.windows = shape, windows

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        sy, sx = (k.step or 1 for k in key)
        out = np.zeros((-(-self.shape[0] // sy), -(-self.shape[1] // sx)), bool)
        for y0, x0, y1, x1 in self.windows:
            out[-(-int(y0) // sy) : -(-int(y1) // sy), -(-int(x0) // sx) : -(-int(x1) // sx)] = 1
        return out


def _remove_stale_cache_temps(folder: Path) -> None:
    """A worker killed while writing the embeddings leaves a hidden temporary store."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_dir() and not p.is_symlink() and p.name.startswith(f".{EMBEDDINGS}."):
                shutil.rmtree(p, ignore_errors=True)


def explain_decision(
    path: Path, folder: Path, slide_id: str, job: DecisionJob, worker: Any, start: float
) -> dict[str, Any]:
    """Explain one slide's decision into ``folder``; the task's result row (see the
    module docstring). Raises on a slide that cannot be read or explained."""
    import dask

    import napari_medcam as mc
    from napari_medcam.batch.worker_env import (
        PROGRESS_TOPIC,
        device_for,
        peak_rss_mb,
        slide_facts,
        symlink_loop,
    )
    from napari_medcam.engine.explanation import drive
    from napari_medcam.engine.mil.pixels import iter_kept_pixels, pixels_skipped
    from napari_medcam.io.slide_evidence import write_slide_evidence
    from napari_medcam.io.slides import open_slide

    if path.is_dir() and not is_dicom_folder(path):
        raise ValueError(f"{path} is a folder, not a slide file")
    if symlink_loop(path):
        raise ValueError(f"{path} is a symbolic link loop")
    clf = _classifier(job)
    remove_partial(folder)
    _remove_stale_cache_temps(folder)

    def progress(event: Any) -> None:
        if worker is not None and event.stage == "embed":
            worker.log_event(
                PROGRESS_TOPIC, {"slide": slide_id, "tile": event.step, "tiles": event.total}
            )

    with dask.config.set(scheduler="synchronous"), open_slide(path) as slide:
        if job.level is not None:
            level = job.level
        else:
            try:
                level = clf.level_among(slide.level_mpp)
            except ValueError as err:
                raise ValueError(f"{err} (--level)") from None
        view, _, f = slide.region(level)
        level_mpp, mpp = slide.level_mpp[level], slide.mpp
        folder.mkdir(parents=True, exist_ok=True)  # the slide opened: its folder holds the cache
        result = mc.explain(
            view,
            clf,
            job.target,
            job.config,
            cache=folder / EMBEDDINGS,
            absence=job.absence,
            device=device_for(job, worker),
            progress=progress,
        )
        skipped = pixels_skipped(result) if job.pixels else ""
        pixels = None
        if job.pixels and not skipped:
            pixels = drive(iter_kept_pixels(view, result, clf, job.config), progress)
        shape = (int(view.shape[0]), int(view.shape[1]))
        thumbs = thumbnails(slide.levels[-1], _KeptTiles(shape, result.kept_windows), [])
        slide_shape = list(slide.shape)
    kept_px = sum(int((y1 - y0) * (x1 - x0)) for y0, x0, y1, x1 in result.kept_windows)
    warnings = [f"pixel evidence skipped: {skipped}"] if skipped else []
    row = {
        "status": "done",
        "kind": DECISION,
        "class_found": result.target_name,
        "valid": bool(result.meets_goal),
        "explanation_status": "meets its goal" if result.meets_goal else "goal not met",
        "sentence": result.sentence,
        "tiles": result.n_tiles,
        "kept": result.n_kept,
        "meets_goal": bool(result.meets_goal),
        "necessary": result.necessary,
        "p_original": round(float(result.p_original), 6),
        "p_kept": round(float(result.p_kept), 6),
        "area_fraction": round(kept_px / (shape[0] * shape[1]), 6),
        "evidence_level0_px": round(kept_px * f * f),
        "regions": None,
        "level": level,
        "downsample": f,
        "level_mpp": level_mpp,
        "warnings": warnings,
        "worker": str(getattr(worker, "address", "local")),
        "pid": os.getpid(),
    }
    facts = slide_facts(path, slide_id, slide_shape, level, f, level_mpp, shape, job)
    facts["slide_classifier"] = job.slide_classifier
    summary = {**facts, **({"pixels_skipped": skipped} if skipped else {})}
    write_slide_evidence(
        folder / EVIDENCE_GEOJSON,
        result,
        summary,
        downsample=f,
        origin=(0.0, 0.0),
        mpp=mpp,
        overwrite=True,
        pixels=pixels,
    )
    row["seconds"] = round(time.perf_counter() - start, 3)
    record = {**facts, **row, "peak_rss_mb": round(peak_rss_mb(), 1)}
    record["explanation"] = {k: v for k, v in result.to_dict().items() if k != "kept_windows"}
    write_files(
        {
            folder / THUMB: _png_writer(thumbs[0]),
            folder / OVERLAY: _png_writer(thumbs[1]),
            # last: its presence means every file above is in place
            folder / RESULT: _text_writer(json.dumps(jsonable(record), indent=1)),
        },
        overwrite=True,
    )
    if worker is not None:
        worker.log_event(PROGRESS_TOPIC, {"slide": slide_id, "tile": 1, "tiles": 1})
    return row


def check_options(
    slide_classifier: str | None,
    classifier: str | None,
    weights: Any,
    explainer: Any,
    mpp: float | None,
    annotations: Any,
    absence: str | None,
    pixels: bool,
) -> None:
    """ValueError when options of a tile-classifier cohort and of a slide-classifier
    cohort are mixed (before anything is loaded or written)."""
    from napari_medcam.engine.mil import MODES

    if slide_classifier is None:
        if absence is not None or pixels:
            raise ValueError("--absence and --pixels apply with --slide-classifier only")
        return
    if not isinstance(slide_classifier, str) or not slide_classifier:
        raise ValueError(f"--slide-classifier must be a spec, got {slide_classifier!r}")
    given = {
        "--classifier": classifier is not None,
        "--weights": weights is not None,
        "--explainer": explainer is not None,
        "--mpp": mpp is not None,
        "--annotations": annotations is not None,
    }
    clash = [name for name, on in given.items() if on]
    if clash:
        raise ValueError(
            f"{', '.join(clash)} do{'es' if len(clash) == 1 else ''} not apply with "
            "--slide-classifier (it is the classifier, and reads its own level or µm/px; "
            "--level overrides)"
        )
    if absence is not None and absence not in MODES:
        raise ValueError(f"--absence must be one of {', '.join(MODES)}, got {absence!r}")
