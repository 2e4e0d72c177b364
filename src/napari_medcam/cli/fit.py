"""``napari-medcam fit``: fit an explainer from the terminal, with a training report.

Beside ``--out`` it writes ``<out>.report.json`` (settings, held-out quality, the loss
history) and ``<out>.losses.png`` (loss curves; only when matplotlib is installed —
the command says when it is not). ``<out>.ckpt`` holds the checkpoint while fitting:
run the same command again after a crash or Ctrl-C and it resumes from there; it is
removed once the explainer file is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_medcam.cli.common import (
    Progress,
    add_classifier_options,
    add_overwrite,
    add_renamed_option,
    add_run_options,
    check_outputs,
)
from napari_medcam.io import read_tiles, write_atomic


def report_paths(out: Path) -> tuple[Path, Path, Path]:
    """(report JSON, loss curves PNG, checkpoint) beside the explainer file ``out``."""
    return (
        out.with_name(out.name + ".report.json"),
        out.with_name(out.name + ".losses.png"),
        out.with_name(out.name + ".ckpt"),
    )


def write_report(explainer: Any, out: Path) -> list[Path]:
    """The training report beside ``out``: JSON always, loss curves when matplotlib is here."""
    report, png, _ = report_paths(out)
    fit = explainer.metadata["fit"]
    facts = {k: v for k, v in explainer.metadata.items() if k != "fit"}
    text = json.dumps({**facts, "fit": fit}, indent=1)
    write_atomic(report, lambda tmp: tmp.write_text(text), overwrite=True)
    written = [report]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss-curve PNG (the JSON has the history)")
        return written
    hist = fit["history"]
    steps = [h["step"] for h in hist]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("loss",):
        axes[0].plot(steps, _smooth([h[key] for h in hist]), label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].legend()
    for key in ("area", "masked", "kept", "wrong_area"):
        axes[1].plot(steps, _smooth([h[key] for h in hist]), label=key)
    axes[1].set_xlabel("step")
    axes[1].legend()
    fig.suptitle(f"explainer for {explainer.metadata['classifier']['name']} (smoothed)")
    fig.tight_layout()
    write_atomic(png, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), overwrite=True)
    plt.close(fig)
    return [*written, png]


def _smooth(values: list[float], k: int = 25) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc = v if i == 0 else acc + (v - acc) / min(i + 1, k)
        out.append(acc)
    return out


def run_fit(args: argparse.Namespace) -> int:
    import napari_medcam as mc
    from napari_medcam.engine.amortised.fit import fit_explainer

    out = Path(args.out)
    report, png, ckpt = report_paths(out)
    check_outputs([out, report, png], args.overwrite)
    clf = mc.load_classifier(args.classifier, weights=args.weights)
    config = mc.MedCAMConfig.preset(args.preset, seed=args.seed)
    if ckpt.exists():
        print(f"resuming from {ckpt}", file=sys.stderr)
    tiles = read_tiles(args.tiles, clf, level=args.level, per_slide=args.per_slide)
    bar = Progress()
    try:
        exp = fit_explainer(
            clf,
            tiles,
            config,
            args.steps,
            device=args.device,
            progress=bar,
            batch=args.batch,
            checkpoint=ckpt,
            seed=args.seed,
            empty_class=args.empty_class,
        )
    finally:
        bar.done()
    exp.save(out)
    ckpt.unlink(missing_ok=True)
    written = write_report(exp, out)
    quality = exp.metadata["fit"]["held_out_quality"]
    print(f"explainer → {out}; held-out: {json.dumps(quality)}")
    for warning in exp.warnings():
        print(f"  warning  {warning}")
    for p in written:
        print(f"  report   {p}")
    return 0


def add_fit_parser(sub: Any) -> None:
    """Register ``fit`` on the ``napari-medcam`` subcommands."""
    f = sub.add_parser("fit", help="fit an amortised explainer for a classifier (once)")
    add_classifier_options(f)
    f.add_argument(
        "--tiles",
        nargs="+",
        required=True,
        help="image folders, image files or slides, a DICOM WSI given as its folder "
        "(tissue tiles sampled at --level)",
    )
    f.add_argument("--level", type=int, default=0, help="slide level to sample tiles at")
    f.add_argument("--per-slide", type=int, default=256, help="tiles sampled per slide")
    add_renamed_option(
        f,
        "--empty-class",
        "--background-class",
        help="the class of 'nothing found' (e.g. normal): its tiles are left out and its "
        "masks taught to be empty; on slides it is never explained",
    )
    f.add_argument("--out", required=True, help="explainer file to write (.pt)")
    f.add_argument(
        "--steps",
        type=int,
        default=1500,
        help="training steps of the explainer network (default 1500); each step explains "
        "one batch of tiles",
    )
    f.add_argument("--batch", type=int, default=8, help="tiles per training step (default 8)")
    add_run_options(f)
    add_overwrite(f, "an existing explainer file (and its report) at --out")
    f.set_defaults(run=run_fit)
