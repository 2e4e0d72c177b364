"""``napari-medcam compare``: an evidence mask against QuPath annotations, per class."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _run_compare(args: argparse.Namespace) -> int:
    from napari_medcam.io.agreement import compare

    result = compare(args.mask, args.annotations, tile=args.tile)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.table())
    return 0


def add_compare_parser(sub: Any) -> None:
    """Register ``compare`` on the ``napari-medcam`` subcommands."""
    c = sub.add_parser(
        "compare",
        help="score an evidence mask against QuPath annotations (Dice, IoU, precision, "
        "recall, share of annotated regions touched), per class, tile by tile",
    )
    c.add_argument(
        "mask",
        help="mask TIFF written by `napari-medcam explain` (its metadata places it on the slide)",
    )
    c.add_argument(
        "annotations",
        help="QuPath GeoJSON (File > Export objects as GeoJSON), level-0 pixel coordinates",
    )
    c.add_argument(
        "--tile",
        type=int,
        default=1024,
        help="mask pixels per side read at a time (default 1024): memory follows it",
    )
    c.add_argument("--json", action="store_true", help="print the scores as JSON")
    c.set_defaults(run=_run_compare)
