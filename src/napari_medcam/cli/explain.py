"""``napari-medcam explain`` and ``demo``: one image (or slide region) to a mask file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_medcam.cli.common import (
    DETAIL_HELP,
    Progress,
    add_classifier_options,
    add_overwrite,
    add_run_options,
    check_outputs,
    config_from_args,
    parse_target,
)
from napari_medcam.cli.slide import add_slide_options, run_slide_explain


def _parse_region(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        y, x, h, w = (int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"--region must be Y,X,H,W in level-0 pixels, got {value!r}") from None
    return y, x, h, w


def _slide_level(slide: Any, args: argparse.Namespace, clf: Any) -> tuple[int, str]:
    """(level, what to tell the user): ``--level``; else the level whose µm/px is nearest
    the classifier's (``--mpp``, else its card's), `Slide.level_for_mpp`; else the finest
    level at most 4096 px a side."""
    if args.level is not None:
        return args.level, ""
    from napari_medcam.io.slides import wanted_mpp

    return slide.level_for_mpp(wanted_mpp(args.mpp, clf), 4096)


def _load_input(args: argparse.Namespace, clf: Any) -> tuple[Any, dict[str, Any], Any]:
    """The image to explain (lazy for slides), facts for the mask's metadata, a closer."""
    from napari_medcam.io import read_image
    from napari_medcam.io.slides import SLIDE_SUFFIXES, open_slide, opens_lazily

    path = Path(args.image)
    region = _parse_region(args.region)
    wants_slide = args.level is not None or region is not None or args.mpp is not None
    # a folder is a DICOM WSI, or refused as 'a folder, not a slide file'
    if path.is_dir() or (
        path.suffix.lower() in SLIDE_SUFFIXES and (wants_slide or opens_lazily(path))
    ):
        slide = open_slide(path)
        level, note = _slide_level(slide, args, clf)
        if note:
            print(note, file=sys.stderr)
        view, (y0, x0), f = slide.region(level, region)
        facts = {
            "level": level,
            "downsample": f,
            "origin_level0": [y0 * f, x0 * f],
            "region": list(region) if region else None,
            "slide_shape": list(slide.shape),
            "mpp": slide.mpp,
        }
        return view, facts, slide.close
    return read_image(path), {}, None


def _absence_tiles(folder: str | None) -> list[Any] | None:
    """Images of tissue without the finding, from a folder (``--absence-tiles``)."""
    if folder is None:
        return None
    from napari_medcam.io import IMAGE_SUFFIXES, read_image

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"--absence-tiles: not a folder: {path}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--absence-tiles: no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return [read_image(f) for f in files]


def _run_explain(args: argparse.Namespace) -> int:
    import napari_medcam as mc
    from napari_medcam.io import write_mask
    from napari_medcam.io.slides import check_mpp

    if args.slide_classifier:
        return run_slide_explain(args, _parse_region(args.region))

    out = Path(args.out)
    outputs = [out, out.with_suffix(".geojson")] if args.geojson else [out]
    check_outputs(outputs, args.overwrite)
    check_mpp(args.mpp)
    clf = mc.load_classifier(args.classifier, weights=args.weights)
    image, facts, close = _load_input(args, clf)
    try:
        config = config_from_args(args)
        absence = _absence_tiles(args.absence_tiles)
        explainer = args.explainer
        if explainer is not None:  # its fit report's warnings, before any tile is read
            explainer = mc.load_explainer(explainer, clf)
            hint = "" if args.refine else " (--refine N optimises such tiles from their mask)"
            for warning in explainer.warnings():
                print(f"warning: explainer: {warning}{hint}", file=sys.stderr)
        progress = Progress(not args.json)
        try:
            exp = mc.explain(
                image,
                clf,
                parse_target(args.target),
                config,
                device=args.device,
                progress=progress,
                absence_tiles=absence,
                explainer=explainer,
                refine=args.refine,
            )
        finally:
            progress.done()
    finally:
        if close is not None:
            close()
    summary = {**exp.summary(), **facts, "image": str(args.image)}
    geojson = None
    if args.geojson:
        geojson = {
            "class_name": exp.class_name,
            "image": str(args.image),
            "level": facts.get("level", 0),
            "masked_confidence": exp.masked_confidence,
            "original_confidence": exp.original_confidence,
            "valid": exp.valid,
        }
    # the GeoJSON in the slide's level-0 pixels: the level's downsample and the
    # region's level-0 origin applied (both 1 and (0, 0) for a plain image)
    written = write_mask(
        out,
        exp.mask if exp.labels is None else exp.labels,
        summary,
        pixel_size=(facts["downsample"],) * 2 if facts else None,
        geojson=geojson,
        downsample=facts.get("downsample", 1.0),
        origin=facts.get("origin_level0", (0.0, 0.0)),
        overwrite=args.overwrite,
        classes=exp.label_classes or None,
        mpp=facts.get("mpp"),
    )
    if args.json:
        extra = {"geojson": str(written[1])} if len(written) > 1 else {}
        print(json.dumps({**summary, "mask": str(out), **extra}))
    else:
        print(f"{exp.one_line()} → {', '.join(str(p) for p in written)}")
    return 0 if exp.valid or not args.strict else 1


def _run_demo(args: argparse.Namespace) -> int:
    from napari_medcam.demo import run_demo
    from napari_medcam.io import clean_stale_temps

    clean_stale_temps(args.out)
    paths, exp = run_demo(
        Path(args.out),
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        progress=Progress(True),
    )
    print(exp.one_line())
    for kind, p in paths.items():
        print(f"  {kind:8s} {p}")
    return 0


def add_explain_parser(sub: Any) -> None:
    """Register ``explain`` and ``demo`` on the ``napari-medcam`` subcommands."""
    e = sub.add_parser("explain", help="explain one image; write its evidence mask as TIFF")
    e.add_argument("image", help="TIFF, PNG or JPEG image, or a pyramidal TIFF/SVS slide")
    e.add_argument(
        "--level",
        type=int,
        help="pyramid level of a slide (default: the level nearest the classifier's µm/px "
        "when its card and the slide record one, else the finest at most 4096 px a side)",
    )
    e.add_argument(
        "--mpp",
        type=float,
        help="µm per pixel the classifier reads (default: its card's): the slide level "
        "nearest it is explained, and which is said",
    )
    e.add_argument("--region", help="Y,X,H,W of a slide region, in level-0 pixels")
    add_classifier_options(e)
    add_slide_options(e)
    e.add_argument("--target", help="class index or name (default: the predicted class)")
    add_run_options(e)
    e.add_argument(
        "--steps",
        type=int,
        help="at most this many optimisation steps per tile (default: the preset's); "
        "fewer for a quick, coarser look",
    )
    e.add_argument(
        "--tolerance",
        type=float,
        help="keep at least this share of the classifier's confidence (default 0.95; "
        "lower gives smaller masks)",
    )
    e.add_argument("--detail", help=DETAIL_HELP)
    e.add_argument(
        "--absence-tiles",
        metavar="DIR",
        help="folder of images without the finding (e.g. normal tissue): candidates for "
        "what replaces the image outside the mask",
    )
    e.add_argument(
        "--explainer",
        metavar="demo|FILE",
        help="explain in one pass with a fitted explainer (`napari-medcam fit`): every "
        "class found, the mask TIFF holds class index + 1 per pixel",
    )
    e.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="N",
        help="with --explainer: hold every tile to the per-image goal; a mask that fails "
        "its verdict or misses the goal is optimised for ≤ N steps from it, one that meets "
        "it is pruned",
    )
    e.add_argument("--out", required=True, help="mask TIFF to write (uint8 0/1)")
    e.add_argument(
        "--geojson",
        action="store_true",
        help="also write the mask's polygons beside --out (.geojson, QuPath annotations "
        "in level-0 slide pixels); both files are written or neither",
    )
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_overwrite(e, "an existing --out file (and its GeoJSON)")
    e.add_argument("--strict", action="store_true", help="exit 1 when the explanation is not valid")
    e.set_defaults(run=_run_explain)

    d = sub.add_parser("demo", help="explain a synthetic tile with the demo classifier")
    d.add_argument("--out", default="medcam-demo", help="folder for the results")
    add_run_options(d, presets=False)
    add_overwrite(d, "the demo's files already in --out")
    d.set_defaults(run=_run_demo)
