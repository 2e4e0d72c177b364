"""`run_cohort`: explain every slide of a study on a Dask cluster, resumably.

One task per slide (`napari_medcam.batch.task.explain_slide`) on a
``distributed.LocalCluster`` (default: one single-threaded worker process per CPU
core, or per GPU) or on any running scheduler (``scheduler="tcp://host:8786"``:
dask-jobqueue, Kubernetes, ``dask scheduler`` by hand; the workers must see the
slides and the output folder at the same paths). The client only submits paths and
records results: the manifest after every slide, the summary at the end.

A worker process that dies (killed, out of memory) loses only its slide's partial
work: the scheduler reruns the task on another worker, up to
``distributed.scheduler.allowed-failures`` times (default 3); past that the slide
is recorded as failed. Ctrl-C cancels what is running, records it as interrupted
and raises `CohortInterrupted`; the same call (command) again resumes.

With ``slide_classifier`` the cohort explains what a slide (MIL) classifier decided
about each slide instead: the minimal tiles that keep the decision
(`napari_medcam.batch.decision`), with the same manifest, resume and summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from napari_medcam.batch import agreement
from napari_medcam.batch.decision import (
    DecisionJob,
    check_options,
    load_slide_classifier,
    slide_classifier_fingerprint,
)
from napari_medcam.batch.manifest import DONE, FAILED, INTERRUPTED, RUNNING, open_manifest
from napari_medcam.batch.outputs import RESULT, remove_outputs, slide_outputs_valid
from napari_medcam.batch.report import CohortInterrupted, CohortReport, Progress, line_of
from napari_medcam.batch.slides import resolve_slides
from napari_medcam.batch.summary import write_summary
from napari_medcam.batch.task import SlideJob, explain_slide
from napari_medcam.batch.worker_env import PROGRESS_TOPIC
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.mil.pixels import check_pixels
from napari_medcam.io.slides import check_mpp, wanted_mpp
from napari_medcam.tiling import overlap_for


def _default_workers() -> int:
    import torch

    return torch.cuda.device_count() or os.cpu_count() or 1


def run_cohort(
    slides: Iterable[str | Path] = (),
    out: str | Path = "medcam-cohort",
    *,
    slide_list: str | Path | None = None,
    classifier: str | None = None,
    weights: str | Path | None = None,
    config: MedCAMConfig | None = None,
    level: int | None = None,
    target: int | str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    explainer: str | Path | None = None,
    force: bool = False,
    dashboard_address: str = ":8787",
    progress: bool = True,
    log: Callable[[str], None] = print,
    annotations: str | Path | None = None,
    mpp: float | None = None,
    slide_classifier: str | None = None,
    absence: str | None = None,
    pixels: bool = False,
) -> CohortReport:
    """Explain every slide into ``out`` (one folder per slide, manifest, summary).

    ``slides``: slide files or folders of slides; ``slide_list``: a CSV whose
    ``path`` column (or first column) names more. ``scheduler``: the address of a
    running Dask scheduler; None starts a LocalCluster of ``workers`` processes.
    Finished slides (same settings) are skipped, others (new, failed, interrupted)
    explained; a folder made with other settings is a ValueError unless ``force``,
    which redoes every slide. ``explainer``: an amortised explainer's file (or a
    packaged name, "demo") fitted for the classifier: one pass per tile batch instead
    of per-tile optimisation, with the explainer's own config (``config`` is not
    used). ``annotations``: a folder of QuPath GeoJSON files, one per slide by name:
    summary.csv/html score each finished slide's evidence against its file (a rerun
    adds them without explaining again). ``level`` None: per slide, the level whose
    µm/px is nearest ``mpp`` (else the classifier card's µm/px), as ``explain --mpp``
    picks it (`Slide.level_for_mpp`); without either, or when a slide records no pixel
    size, the finest level at most 4096 px a side — the slide's result then records a
    warning, as it does when the nearest level is more than 1.25× off. Raises
    `CohortInterrupted` on Ctrl-C. ``classifier`` None: the demo classifier.

    ``slide_classifier``: a slide (MIL) classifier's spec (a MIL zoo name, a registered
    slide classifier or ``package.module:factory``) instead of a tile ``classifier``:
    each slide's decision is explained by its minimal tiles (``absence`` "removal", the
    default, or "replacement"; ``pixels``: the pixels inside them too), at the level the
    classifier reads (``level`` overrides), the tile embeddings cached in the slide's
    folder. ``config`` gives the tolerance and seed (and, with ``pixels``, the tile
    engine's recipe). ``classifier``, ``weights``, ``explainer``, ``mpp`` and
    ``annotations`` do not apply to it and are refused.
    """
    from napari_medcam.classifiers import load_classifier
    from napari_medcam.classifiers.fingerprint import classifier_fingerprint

    config = config if config is not None else MedCAMConfig.fast()
    if not isinstance(config, MedCAMConfig):
        raise ValueError(f"config must be a MedCAMConfig, got {type(config).__name__}")
    check_options(
        slide_classifier, classifier, weights, explainer, mpp, annotations, absence, pixels
    )
    if level is not None and level < 0:
        raise ValueError(f"level must be ≥ 0, got {level}")
    mpp = check_mpp(mpp)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    annotations = agreement.check_folder(annotations)
    paths = resolve_slides(slides, slide_list)
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if slide_classifier is not None:
        return _run_decisions(
            paths,
            out,
            slide_classifier,
            config,
            level,
            target,
            absence or "removal",
            pixels,
            device,
            force,
            _Run(scheduler, workers, dashboard_address, progress, log),
        )
    classifier = classifier or "demo"
    clf = load_classifier(classifier, weights=weights)
    fingerprint = classifier_fingerprint(clf)
    if target is not None:
        clf.class_index(target)  # an unknown class is an error now, not on every worker
    amortised = _explainer_facts(explainer, clf)
    # the µm/px the level is matched to (--level overrides it): part of the settings only
    # when it chooses the level, so cohorts explained without one keep their hash
    want = wanted_mpp(mpp, clf) if level is None else None
    settings = {
        "config": amortised["config"] if amortised else config.to_dict(),
        "explainer": amortised["fingerprint"] if amortised else None,
        "level": "auto" if level is None else level,
        "target": target,
        "classifier_fingerprint": fingerprint,
        "tile_overlap": overlap_for(clf.input_size),  # the engine's, as explain uses it
        "tile_batch": None,
        **({"mpp": want} if want else {}),
    }
    about = {
        "spec": str(classifier),
        "weights": str(weights) if weights else None,
        "name": clf.name,
    }
    run = _Run(scheduler, workers, dashboard_address, progress, log)
    manifest, report, todo = _open(out, paths, settings, about, force, log)
    if not todo:
        report.summary = write_summary(manifest, annotations)
        log(report.one_line())
        return report
    job = SlideJob(
        classifier=str(classifier),
        weights=str(Path(weights).resolve()) if weights else None,
        fingerprint=fingerprint,
        config=None if amortised else config,
        level=level,
        mpp=want,
        target=target,
        device=device,
        settings_hash=manifest.hash,
        explainer=amortised["spec"] if amortised else None,
        tile_overlap=settings["tile_overlap"],
    )
    try:
        _submit_all(manifest, todo, job, report, *run)
    finally:  # interrupted too: the summary says what finished
        report.summary = write_summary(manifest, annotations)
    log(report.one_line())
    return report


class _Run(NamedTuple):
    """Where and how the slides' tasks run (`_submit_all`'s last arguments)."""

    scheduler: str | None
    workers: int | None
    dashboard_address: str
    progress: bool
    log: Callable[[str], None]


def _open(
    out: Path,
    paths: Sequence[Path],
    settings: dict[str, Any],
    about: dict[str, Any],
    force: bool,
    log: Callable[[str], None],
) -> tuple[Any, CohortReport, list[str]]:
    """The folder's manifest for these settings, a report of the slides already done
    (skipped), and the slides to explain (their old outputs removed)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest, started_over = open_manifest(out, settings, about, force)
    if started_over:
        log(f"--overwrite: settings changed, every slide in {out} is redone")
    ids = [manifest.add(p) for p in paths]
    report = CohortReport(out)
    todo = []
    for sid in ids:
        folder = manifest.folder(sid)
        problem = "" if force else slide_outputs_valid(folder, manifest.hash)
        if not force and not problem:
            report.skipped.append(sid)
            if manifest.slides[sid]["status"] != DONE:  # recovered: done, but not recorded
                manifest.update(sid, status=DONE)
            continue
        if problem and (manifest.slides[sid]["status"] == DONE or (folder / RESULT).exists()):
            log(f"  redo    {sid}: {problem}")  # was finished, or looked so
        remove_outputs(folder)  # a missing or broken file: none of the old ones is trusted
        todo.append(sid)
    manifest.save()
    return manifest, report, todo


def _run_decisions(
    paths: Sequence[Path],
    out: Path,
    spec: str,
    config: MedCAMConfig,
    level: int | None,
    target: int | str | None,
    absence: str,
    pixels: bool,
    device: str,
    force: bool,
    run: _Run,
) -> CohortReport:
    """`run_cohort` with a slide classifier: its settings, manifest and tasks."""
    clf = load_slide_classifier(spec)
    if target is not None:
        clf.class_index(target)  # an unknown class is an error now, not on every worker
    if pixels:
        check_pixels(clf)  # before hours of embedding
    fingerprint = slide_classifier_fingerprint(clf)
    settings = {
        "config": config.to_dict(),
        "explainer": None,
        "level": "auto" if level is None else level,
        "target": target,
        "classifier_fingerprint": fingerprint,
        "tile_overlap": 0,  # MIL tiles lie on a strict grid
        "tile_batch": None,
        "slide_classifier": spec,
        "absence": absence,
        "pixels": bool(pixels),
    }
    about = {"spec": spec, "weights": None, "name": clf.name, "kind": "slide classifier"}
    manifest, report, todo = _open(out, paths, settings, about, force, run.log)
    if not todo:
        report.summary = write_summary(manifest)
        run.log(report.one_line())
        return report
    job = DecisionJob(
        slide_classifier=spec,
        fingerprint=fingerprint,
        config=config,
        level=level,
        target=target,
        absence=absence,
        pixels=bool(pixels),
        device=device,
        settings_hash=manifest.hash,
    )
    try:
        _submit_all(manifest, todo, job, report, *run)
    finally:  # interrupted too: the summary says what finished
        report.summary = write_summary(manifest)
    run.log(report.one_line())
    return report


def _explainer_facts(explainer: str | Path | None, clf: Any) -> dict[str, Any] | None:
    """Load the explainer once here (refused for another classifier: an error now, not
    on every worker); what the workers load (spec), its file's SHA-256, its config."""
    if explainer is None:
        return None
    import hashlib

    from napari_medcam.engine.amortised.file import PACKAGED, load_explainer

    loaded = load_explainer(explainer, clf)
    spec = str(explainer) if str(explainer) in PACKAGED else str(Path(explainer).resolve())
    digest = hashlib.sha256(Path(loaded.metadata["file"]).read_bytes()).hexdigest()
    return {"spec": spec, "fingerprint": digest, "config": loaded.config.to_dict()}


def _submit_all(
    manifest: Any,
    todo: Sequence[str],
    job: SlideJob | DecisionJob,
    report: CohortReport,
    scheduler: str | None,
    workers: int | None,
    dashboard_address: str,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    """Run the slides in ``todo`` as Dask tasks and record each as it finishes."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        n = min(workers or _default_workers(), len(todo))
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard_address,
        )
        # not the process's default client: dask.compute elsewhere (napari's lazy
        # layers, the widget) must keep its own scheduler after the cohort ends
        client = Client(cluster, set_as_default=False)
        log(f"local Dask cluster: {n} worker process{'es' if n > 1 else ''}")
    else:
        try:
            client = Client(scheduler, timeout="20s", set_as_default=False)
        except OSError as err:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        log(f"Dask scheduler {scheduler}: {len(client.scheduler_info()['workers'])} workers")
    report.dashboard = client.dashboard_link
    log(f"Dask dashboard: {report.dashboard}")
    bars = Progress(len(todo), progress, log)
    futures: dict[Any, str] = {}
    try:
        client.subscribe_topic(PROGRESS_TOPIC, bars.event)
        for rank, sid in enumerate(todo):
            manifest.update(sid, status=RUNNING)
            fut = client.submit(
                explain_slide,
                manifest.slides[sid]["path"],
                str(manifest.folder(sid)),
                sid,
                job,
                key=f"medcam-slide-{sid}-{manifest.hash}",
                pure=False,
                priority=-rank,  # in the order given
            )
            futures[fut] = sid
        manifest.save()
        for fut in as_completed(list(futures), loop=client.loop):
            sid = futures.pop(fut)
            row = _row(fut)
            manifest.update(sid, **row)
            manifest.save()
            if row["status"] == DONE:
                report.done.append(sid)
            else:
                report.failed[sid] = row["reason"]
            bars.finished(sid, line_of(sid, row))
    except KeyboardInterrupt:
        client.cancel(list(futures))
        for sid in futures.values():
            manifest.update(sid, status=INTERRUPTED, reason="run interrupted (Ctrl-C)")
            report.interrupted.append(sid)
        manifest.save()
        raise CohortInterrupted(report) from None
    finally:
        bars.close()
        client.close()
        if cluster is not None:
            cluster.close()


def _row(fut: Any) -> dict[str, Any]:
    """The task's result row; a task that could not run at all (its workers kept dying,
    or it raised before its own error handling) as a failed row with the reason."""
    from distributed.scheduler import KilledWorker

    try:
        return fut.result()
    except KilledWorker:
        return {
            "status": FAILED,
            "reason": "the worker process died every time it explained this slide "
            "(out of memory? see the worker logs)",
        }
    except Exception as err:
        return {"status": FAILED, "reason": f"{type(err).__name__}: {err}"}
