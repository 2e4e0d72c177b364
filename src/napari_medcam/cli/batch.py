"""``napari-medcam batch``: explain a cohort of slides from the command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from napari_medcam.cli.common import (
    DETAIL_HELP,
    EXIT_INTERRUPTED,
    add_classifier_options,
    add_overwrite,
    add_run_options,
    config_from_args,
    parse_target,
)


def _run_batch(args: argparse.Namespace) -> int:
    from napari_medcam.batch.cohort import CohortInterrupted, run_cohort

    if args.explainer and (args.steps is not None or args.tolerance is not None):
        raise ValueError("--steps and --tolerance do not apply with --explainer (it has its own)")
    config = config_from_args(args)
    try:
        report = run_cohort(
            args.slides,
            args.out,
            slide_list=args.list,
            classifier=args.classifier,
            weights=args.weights,
            config=config,
            level=args.level,
            mpp=args.mpp,
            target=parse_target(args.target),
            scheduler=args.scheduler,
            workers=args.workers,
            device=args.device,
            explainer=args.explainer,
            force=args.overwrite,
            dashboard_address=args.dashboard_address,
            annotations=args.annotations,
            slide_classifier=args.slide_classifier,
            absence=args.absence,
            pixels=args.pixels,
        )
    except CohortInterrupted as stop:
        rep = stop.report
        again = " ".join(shlex.quote(a) for a in ["napari-medcam", *sys.argv[1:]])
        print(
            f"\nnapari-medcam batch: interrupted. {len(rep.done)} slides finished in this run "
            f"are kept, {len(rep.interrupted)} running ones were stopped and will be redone.\n"
            f"Resume with the same command:\n  {again}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    for path in report.summary:
        print(f"  {path}")
    return 1 if report.failed else 0


def add_batch_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command to the ``napari-medcam`` parser's subparsers."""
    b = sub.add_parser(
        "batch",
        help="explain every slide of a cohort on a Dask cluster (resumable)",
        description="Explain every slide of a cohort, one Dask task per slide, into --out: "
        "a folder per slide (mask TIFF, GeoJSON, tile table), a manifest, summary.csv and "
        "summary.html. Rerun the same command to resume: finished slides are skipped.",
    )
    b.add_argument("slides", nargs="*", metavar="SLIDE", help="slide files, or folders of slides")
    b.add_argument("--list", metavar="CSV", help="CSV of slides (a 'path' column, or the first)")
    b.add_argument("--out", required=True, help="cohort output folder (created if needed)")
    b.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); "
        "default: a local cluster on this machine",
    )
    b.add_argument(
        "--workers",
        type=int,
        help="worker processes of the local cluster (default: one per GPU, else per CPU core)",
    )
    b.add_argument(
        "--level",
        type=int,
        help="pyramid level to explain (default: per slide, the level nearest the "
        "classifier's µm/px when --mpp or its card and the slide record one, else the finest "
        "at most 4096 px a side)",
    )
    b.add_argument(
        "--mpp",
        type=float,
        help="µm per pixel the classifier reads (default: its card's): each slide's level "
        "nearest it is explained and recorded in its result.json; a slide without a pixel "
        "size, or whose nearest level is over 1.25x off, gets a warning in the summary",
    )
    b.add_argument("--target", help="class index or name (default: each slide's finding)")
    add_classifier_options(b)
    b.set_defaults(classifier=None)  # None: demo, and --slide-classifier can tell it was not given
    b.add_argument(
        "--slide-classifier",
        metavar="SPEC",
        help="explain each slide's slide-level (MIL) decision instead: a MIL zoo name "
        "(mil-abmil, mil-transmil, mil-maxpool), a registered slide classifier or "
        "package.module:factory returning a napari_medcam.SlideClassifier; each slide's "
        "folder then holds the evidence tiles (evidence.geojson, evidence.json) and its tile "
        "embeddings' cache (embeddings.zarr); not with --classifier, --weights, --explainer, "
        "--mpp or --annotations",
    )
    b.add_argument(
        "--absence",
        choices=["removal", "replacement"],
        help="with --slide-classifier: tiles left out are removed from the bag (default) "
        "or replaced by tissue the classifier calls another class",
    )
    b.add_argument(
        "--pixels",
        action="store_true",
        help="with --slide-classifier: also the pixels inside each kept tile that keep the "
        "slide's decision (at most 16 kept tiles a slide)",
    )
    b.add_argument(
        "--explainer",
        metavar="FILE",
        help="an amortised explainer fitted for the classifier (napari-medcam fit), or "
        "'demo': one pass per tile batch instead of optimising every tile",
    )
    b.add_argument("--steps", type=int, help="at most this many optimisation steps per tile")
    b.add_argument("--tolerance", type=float, help="keep at least this share of the confidence")
    b.add_argument("--detail", help=DETAIL_HELP)
    b.add_argument(
        "--annotations",
        metavar="DIR",
        help="folder of reference annotations (QuPath GeoJSON), one per slide named like it "
        "(case-07.svs → case-07.geojson): summary.csv/html add Dice, IoU, precision, recall "
        "and annotated regions touched; a rerun adds them without explaining again",
    )
    add_run_options(b)
    add_overwrite(
        b,
        "every slide's results in --out: redo them all, also those made with "
        "other settings (without it, a rerun resumes: finished slides are kept); "
        "--force is the same flag's older name",
        "--force",
    )
    b.add_argument(
        "--dashboard-address",
        default=":8787",
        help="where the local cluster serves its Dask dashboard (':0' for any free port)",
    )
    b.set_defaults(run=_run_batch)
    return b
