"""Fit the packaged demo explainer (``mc.load_explainer("demo")``).

    OMP_NUM_THREADS=2 python scripts/fit_demo_explainer.py [--steps 100] [--tiles 256]
        [--out src/napari_medcam/engine/amortised/weights/demo.pt]

Fitting tiles: ``synthetic_tile(600_000 + i, label)``, every fourth one with a lesion
(the synthetic slide's share; labels only choose how tiles are made, they are never
used) — each tile's target is the demo classifier's own prediction. Seeds 600 000+
are used by nothing else: the demo classifier trained on 100 000+, tests and
evaluations use seeds below 100 000, and the amortised benchmark's held-out tiles are
700 000+. Killed, it resumes from
``<out>.ckpt``. Writes ``<out>.report.json`` and ``<out>.losses.png`` beside the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import napari_medcam as mc
from napari_medcam.engine.amortised.cli import _Bar, report_paths, write_report
from napari_medcam.engine.amortised.fit import fit_explainer

FIT_SEED0 = 600_000
DEFAULT_OUT = Path(__file__).parents[1] / "src/napari_medcam/engine/amortised/weights/demo.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--tiles", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))
    clf = mc.demo_classifier()
    tiles = [mc.synthetic_tile(FIT_SEED0 + i, int(i % 4 == 0))[0] for i in range(args.tiles)]
    _, _, ckpt = report_paths(args.out)
    exp = fit_explainer(
        clf,
        tiles,
        mc.MedCAMConfig.fast(),
        args.steps,
        device="cpu",
        progress=_Bar(),
        batch=args.batch,
        checkpoint=ckpt,
    )
    exp.metadata["fit"]["command"] = "python scripts/fit_demo_explainer.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    exp.metadata["fit"]["tile_seeds"] = f"synthetic_tile({FIT_SEED0} + i), i < {args.tiles}"
    exp.save(args.out)
    ckpt.unlink(missing_ok=True)
    for path in write_report(exp, args.out):
        print(path)
    print(exp.metadata["fit"]["held_out_quality"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
