"""The evaluation of issue 4: Med-CAM vs Grad-CAM, RISE and occlusion on held-out data.

    python benchmarks/evaluate.py [--quick] [--threads N] [--rise-masks N] [--paper-steps N]

The same as ``napari-medcam evaluate``, with the repository's BENCHMARKS.md and
docs/evaluation.png as the default outputs whatever the working directory. Prints one
table (rows: methods per data set; columns: sufficiency, precision, localisation,
faithfulness curves, compactness, sanity check, seconds per image and the ratio to
Grad-CAM) and the verdicts on the paper's claims; see
`napari_medcam.evaluation` for the protocol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medcam.cli.evaluate import add_arguments, run_from_args

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    if not args.quick:
        args.benchmarks = args.benchmarks or str(ROOT / "BENCHMARKS.md")
        args.figure = args.figure or str(ROOT / "docs" / "evaluation.png")
    try:
        return run_from_args(args)
    except ValueError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
