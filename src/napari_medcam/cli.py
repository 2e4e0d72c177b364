"""The ``napari-medcam`` command: explain images and run the demo without a GUI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_medcam.engine.scale import parse_detail

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
DETAIL_HELP = (
    "the scale of the evidence: 'cells', 'cell groups' (default), 'regions', a structure "
    "size in pixels, or 'N um' when the classifier's card knows its pixel size; the mask "
    "is made of regions at least that size, never single pixels"
)


class _Progress:
    """A terminal progress bar (tqdm) on stderr; on a non-terminal, one line per 10 %."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.last = -1

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        pct = int(100 * event.fraction)
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=100,
                    unit="%",
                    file=sys.stderr,
                    leave=True,
                    bar_format="{l_bar}{bar}| {elapsed}<{remaining} {desc}",
                )
            self.bar.set_description_str(event.describe(), refresh=False)
            self.bar.update(max(0, pct - self.bar.n))
        elif pct // 10 > self.last:
            self.last = pct // 10
            print(f"{pct:3d} % {event.describe()}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _parse_target(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _parse_region(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        y, x, h, w = (int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"--region must be Y,X,H,W in level-0 pixels, got {value!r}") from None
    return y, x, h, w


def _load_input(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any]:
    """The image to explain (lazy for slides), facts for the mask's metadata, a closer."""
    from napari_medcam.io import read_image
    from napari_medcam.slides import SLIDE_SUFFIXES, is_pyramidal, open_slide

    path = Path(args.image)
    region = _parse_region(args.region)
    wants_slide = args.level is not None or region is not None
    if path.suffix.lower() in SLIDE_SUFFIXES and (wants_slide or is_pyramidal(path)):
        slide = open_slide(path)
        level = args.level if args.level is not None else slide.level_for_size(4096)
        view, (y0, x0), f = slide.region(level, region)
        facts = {
            "level": level,
            "downsample": f,
            "origin_level0": [y0 * f, x0 * f],
            "region": list(region) if region else None,
            "slide_shape": list(slide.shape),
        }
        return view, facts, slide.close
    return read_image(path), {}, None


def check_outputs(outputs: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that could not all be written as asked: two on
    one path, a folder, a missing folder, an existing file without ``overwrite``."""
    if len(set(outputs)) < len(outputs):
        raise ValueError(
            f"--out {outputs[0]} would be overwritten by its own GeoJSON: name the mask "
            "file (.tif); the polygons go beside it as .geojson"
        )
    for path in outputs:
        if path.is_dir():
            raise ValueError(f"--out {path} is a folder: name the mask file (.tif) to write")
        if not path.parent.is_dir():
            raise ValueError(f"--out: folder {path.parent} does not exist")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: pass --overwrite to replace it")


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

    out = Path(args.out)
    outputs = [out, out.with_suffix(".geojson")] if args.geojson else [out]
    check_outputs(outputs, args.overwrite)
    image, facts, close = _load_input(args)
    try:
        clf = mc.load_classifier(args.classifier, weights=args.weights)
        config = mc.MedCAMConfig.preset(args.preset, seed=args.seed)
        if args.steps is not None:
            config = config.capped(args.steps)
        if args.tolerance is not None:
            config = config.replace(tolerance=args.tolerance)
        if args.detail is not None:
            config = config.replace(detail=parse_detail(args.detail, "--detail"))
        absence = _absence_tiles(args.absence_tiles)
        explainer = args.explainer
        if explainer is not None:  # its fit report's warnings, before any tile is read
            explainer = mc.load_explainer(explainer, clf)
            hint = "" if args.refine else " (--refine N optimises such tiles from their mask)"
            for warning in explainer.warnings():
                print(f"warning: explainer: {warning}{hint}", file=sys.stderr)
        progress = _Progress(not args.json)
        try:
            exp = mc.explain(
                image,
                clf,
                _parse_target(args.target),
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
    )
    if args.json:
        extra = {"geojson": str(written[1])} if len(written) > 1 else {}
        print(json.dumps({**summary, "mask": str(out), **extra}))
    else:
        print(f"{exp.one_line()} → {', '.join(str(p) for p in written)}")
    return 0 if exp.valid or not args.strict else 1


def _run_demo(args: argparse.Namespace) -> int:
    from napari_medcam.demo import run_demo

    paths, exp = run_demo(
        Path(args.out),
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        progress=_Progress(True),
    )
    print(exp.one_line())
    for kind, p in paths.items():
        print(f"  {kind:8s} {p}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from napari_medcam.evaluation.cli import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    from napari_medcam._version import __version__
    from napari_medcam.engine.amortised.cli import add_fit_parser

    p = argparse.ArgumentParser(
        prog="napari-medcam",
        description="Med-CAM: the minimal evidence an image classifier used for its decision.",
    )
    p.add_argument("--version", action="version", version=f"napari-medcam {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explain", help="explain one image; write its evidence mask as TIFF")
    e.add_argument("image", help="TIFF, PNG or JPEG image, or a pyramidal TIFF/SVS slide")
    e.add_argument(
        "--level",
        type=int,
        help="pyramid level of a slide (default: the finest at most 4096 px a side)",
    )
    e.add_argument("--region", help="Y,X,H,W of a slide region, in level-0 pixels")
    e.add_argument(
        "--classifier",
        default="demo",
        help="registered name, TorchScript file or package.module:factory (default: demo)",
    )
    e.add_argument("--weights", help="state-dict file for a factory classifier")
    e.add_argument("--target", help="class index or name (default: the predicted class)")
    e.add_argument("--preset", choices=["fast", "paper", "volume"], default="fast")
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
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True, help="mask TIFF to write (uint8 0/1)")
    e.add_argument(
        "--geojson",
        action="store_true",
        help="also write the mask's polygons beside --out (.geojson, QuPath annotations "
        "in level-0 slide pixels); both files are written or neither",
    )
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    e.add_argument("--strict", action="store_true", help="exit 1 when the explanation is not valid")
    e.set_defaults(run=_run_explain)

    d = sub.add_parser("demo", help="explain a synthetic tile with the demo classifier")
    d.add_argument("--out", default="medcam-demo", help="folder for the results")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(run=_run_demo)

    add_fit_parser(sub)

    from napari_medcam.evaluation.cli import add_arguments

    v = sub.add_parser("evaluate", help="Med-CAM vs Grad-CAM, RISE and occlusion (BENCHMARKS.md)")
    add_arguments(v)
    v.set_defaults(run=_run_evaluate)

    from napari_medcam.batch.cli import add_batch_parser

    add_batch_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"napari-medcam: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nnapari-medcam: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
