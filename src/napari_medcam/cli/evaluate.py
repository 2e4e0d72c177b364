"""``napari-medcam evaluate``: Med-CAM against the comparison methods, and the zoo."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medcam.classifiers.prepare import resolve_device

DEFAULT_BENCHMARKS = "BENCHMARKS.md"
DEFAULT_FIGURE = "docs/evaluation.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 tiles + 1 IHC patch with short runs (a smoke test; writes nothing unless "
        "--benchmarks/--figure are given)",
    )
    p.add_argument(
        "--benchmarks",
        help=f"Markdown file whose evaluation section is replaced (default: {DEFAULT_BENCHMARKS} "
        "for a full run)",
    )
    p.add_argument("--figure", help=f"figure to write (default: {DEFAULT_FIGURE} for a full run)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument(
        "--records", metavar="JSON", help="also write every per-image, per-method record as JSON"
    )
    p.add_argument(
        "--from-json",
        metavar="JSON",
        help="do not run: render the table again from records written by --records",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default: GPU when there is one), cpu, cuda, cuda:N or mps; the machine "
        "is written beside the table",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--rise-masks", type=int, help="RISE masks per image (full run: 500)")
    p.add_argument(
        "--paper-steps", type=int, help="steps of the paper preset (full run: 60 of 880)"
    )
    p.add_argument("--tiles", type=int, help="synthetic tiles (a third of them hard; full: 36)")
    p.add_argument(
        "--zoo",
        action="store_true",
        help="the default recipe on the classifier zoo (held-out entries unless --classifiers); "
        "writes BENCHMARKS.md's zoo section",
    )
    p.add_argument("--classifiers", help="with --zoo: comma-separated zoo entries")
    p.add_argument("--split", default="eval", help="with --zoo: eval (default) or tune")
    p.add_argument("--images", type=int, default=12, help="with --zoo: images per classifier")


def settings_from_args(args: argparse.Namespace):
    from napari_medcam.engine.config import MedCAMConfig
    from napari_medcam.evaluation.run import EvalSettings

    s = EvalSettings.quick() if args.quick else EvalSettings.full()
    changes = {"device": str(resolve_device(args.device))}  # "auto" → the device it means
    if args.rise_masks is not None:
        changes["rise_masks"] = args.rise_masks
    if args.paper_steps is not None:
        changes["paper"] = MedCAMConfig.paper(steps=args.paper_steps, min_steps=args.paper_steps)
    if args.tiles is not None:
        n_hard = args.tiles // 3
        changes.update(n_standard=args.tiles - n_hard, n_hard=n_hard)
    if any(k != "device" for k in changes):
        changes["label"] = s.label + " (modified)"
    return s.__class__(**{**vars(s), **changes})


def run_from_args(args: argparse.Namespace) -> int:
    import torch

    from napari_medcam.evaluation import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("rise_masks", "paper_steps", "tiles", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {v}")
    if args.zoo:
        return _run_zoo(args)
    benchmarks, figure = args.benchmarks, args.figure
    if not args.quick:
        benchmarks = benchmarks or DEFAULT_BENCHMARKS
        figure = figure or DEFAULT_FIGURE
    if args.no_write:
        benchmarks = figure = None
    if args.from_json:
        from napari_medcam.evaluation import rerender

        if not Path(args.from_json).is_file():
            raise FileNotFoundError(f"no records at {args.from_json}")
        rerender(args.from_json, benchmarks=benchmarks, figure=figure)
        if benchmarks:
            print(f"wrote table: {benchmarks}")
        return 0
    evaluate(
        settings_from_args(args),
        benchmarks=Path(benchmarks) if benchmarks else None,
        figure=Path(figure) if figure else None,
        json_path=Path(args.records) if args.records else None,
    )
    for what, path in (("table", benchmarks), ("figure", figure), ("records", args.records)):
        if path:
            print(f"wrote {what}: {path}")
    return 0


def _run_zoo(args: argparse.Namespace) -> int:
    import json

    from napari_medcam.evaluation.run import machine_line
    from napari_medcam.evaluation.zoo import ZooSettings, render, run_zoo, write_block

    if args.images < 1:
        raise ValueError(f"--images must be ≥ 1, got {args.images}")
    names = tuple(n.strip() for n in (args.classifiers or "").split(",") if n.strip())
    device = str(resolve_device(args.device))
    settings = ZooSettings(names=names, split=args.split, n=args.images, device=device)
    if args.rise_masks is not None:
        settings.rise_masks = args.rise_masks
    results = run_zoo(settings, log=lambda s: print(s, flush=True))
    block = render(results, settings, machine_line())
    print(block)
    if args.records:
        Path(args.records).write_text(
            json.dumps(results, indent=1, default=float), encoding="utf-8"
        )
    benchmarks = None if args.no_write else (args.benchmarks or DEFAULT_BENCHMARKS)
    if benchmarks:
        write_block(benchmarks, block)
        print(f"wrote table: {benchmarks}")
    return 0
