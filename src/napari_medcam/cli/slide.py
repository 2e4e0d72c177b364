"""``napari-medcam explain --slide-classifier``: a slide-level (MIL) decision's minimal tiles.

The slide is opened lazily at the classifier's level (or the level nearest its µm/px),
its tiles embedded once (cached in a zarr store beside the output) and the smallest set
of tiles that alone keeps the decision found (`napari_medcam.engine.mil`). Written: the
evidence tiles as GeoJSON (QuPath annotations in level-0 pixels) and the summary beside
it (.json), both or neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_medcam.cli.common import Progress, check_outputs, config_from_args, parse_target
from napari_medcam.zoo.mil import load_any


def add_slide_options(p: argparse.ArgumentParser) -> None:
    """--slide-classifier, --absence and --embeddings on ``explain``."""
    p.add_argument(
        "--slide-classifier",
        metavar="SPEC",
        help="explain a slide-level (MIL) decision instead: a MIL zoo name (mil-abmil, "
        "mil-transmil, mil-maxpool), a registered slide classifier or "
        "package.module:factory returning a napari_medcam.SlideClassifier; --out is then "
        "the evidence tiles' GeoJSON (.geojson), the summary is written beside it (.json)",
    )
    p.add_argument(
        "--absence",
        choices=["removal", "replacement"],
        default="removal",
        help="with --slide-classifier: tiles left out are removed from the bag (default) "
        "or replaced by tissue the classifier calls another class",
    )
    p.add_argument(
        "--pixels",
        action="store_true",
        help="with --slide-classifier: also the pixels inside each kept tile that keep the "
        "slide's decision (the tile engine, with the slide's decision as its classifier), "
        "as more annotations in the GeoJSON and per tile in the summary",
    )
    p.add_argument(
        "--embeddings",
        metavar="ZARR",
        help="with --slide-classifier: the tile embeddings' cache (default: beside --out, "
        ".embeddings.zarr), reused while the encoder and tiling are unchanged",
    )


def _level(slide: Any, clf: Any, asked: int | None) -> int:
    """--level, else the level the classifier reads (its own, or nearest its µm/px)."""
    if asked is not None:
        return asked
    try:
        return clf.level_among(slide.level_mpp)
    except ValueError as err:
        raise ValueError(f"{err} (--level)") from None


def _open(
    args: argparse.Namespace, clf: Any, region: tuple[int, int, int, int] | None
) -> tuple[Any, dict[str, Any], Any]:
    """The array at the classifier's level, facts for placing tiles on level 0, a closer."""
    from napari_medcam.io import read_image
    from napari_medcam.io.slides import SLIDE_SUFFIXES, open_slide

    path = Path(args.image)
    if not (path.is_dir() or path.suffix.lower() in SLIDE_SUFFIXES):
        return read_image(path), {"level": 0, "downsample": 1.0, "origin_level0": [0, 0]}, None
    slide = open_slide(path)
    level = _level(slide, clf, args.level)
    view, (y0, x0), f = slide.region(level, region)
    facts = {"level": level, "downsample": f, "origin_level0": [y0 * f, x0 * f], "mpp": slide.mpp}
    return view, facts, slide.close


def run_slide_explain(
    args: argparse.Namespace, region: tuple[int, int, int, int] | None = None
) -> int:
    """Explain the slide with ``args.slide_classifier``; ``region``: (y, x, h, w) at level 0."""
    import napari_medcam as mc
    from napari_medcam.engine.explanation import drive
    from napari_medcam.engine.mil.pixels import check_pixels, iter_kept_pixels, pixels_skipped
    from napari_medcam.io.slide_evidence import write_slide_evidence

    out = Path(args.out)
    if out.suffix.lower() != ".geojson":
        raise ValueError(f"--out must be a .geojson file with --slide-classifier, got {out}")
    check_outputs([out, out.with_suffix(".json")], args.overwrite)
    clf = load_any(args.slide_classifier)
    if args.pixels:
        check_pixels(clf)  # before hours of embedding
    image, facts, close = _open(args, clf, region)
    cache = Path(args.embeddings) if args.embeddings else out.with_suffix(".embeddings.zarr")
    progress = Progress(not args.json)
    try:
        result = mc.explain(
            image,
            clf,
            parse_target(args.target),
            config_from_args(args),
            cache=cache,
            absence=args.absence,
            device=args.device,
            progress=progress,
        )
        pixels, skipped = None, pixels_skipped(result) if args.pixels else ""
        if args.pixels and not skipped:
            pixels = drive(iter_kept_pixels(image, result, clf, config_from_args(args)), progress)
    finally:
        progress.done()
        if close is not None:
            close()
    summary = {**facts, "image": str(args.image), "classifier": args.slide_classifier}
    if skipped:
        print(f"WARNING: pixel evidence skipped: {skipped}", file=sys.stderr)
        summary["pixels_skipped"] = skipped
    written = write_slide_evidence(
        out,
        result,
        summary,
        downsample=facts["downsample"],
        origin=facts["origin_level0"],
        mpp=facts.get("mpp"),
        overwrite=args.overwrite,
        pixels=pixels,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "sentence": result.sentence,
                    "geojson": str(written[0]),
                    "summary": str(written[1]),
                    "kept": result.n_kept,
                    "tiles": result.n_tiles,
                    "meets_goal": result.meets_goal,
                }
            )
        )
    else:
        print(f"{result.sentence} → {', '.join(str(p) for p in written)}")
    return 0 if result.meets_goal or not args.strict else 1
