"""Fit the packaged demo explainer (``mc.load_explainer("demo")``).

    OMP_NUM_THREADS=2 python scripts/fit_demo_explainer.py [--steps 600] [--tiles 512]
        [--slide-seeds 1 2] [--per-slide 128] [--randomise-top 0] [--mask-scale 0.25]
        [--out src/napari_medcam/engine/amortised/weights/demo.pt]

Fitting tiles, all decided before anything is measured and used by nothing else:

- ``synthetic_tile(600_000 + i, label)``, every fourth one with a lesion (the synthetic
  slide's share; labels only choose how tiles are made, they are never used);
- tissue windows of synthetic slides ``scripts/make_slide.py --size 4096 --seed S``
  for each ``--slide-seeds`` S (written to a temporary folder): windows cut across the
  mosaic's tiles and lesions at any offset, JPEG-compressed, as on a real slide.

Seeds 600 000+ and slide seeds ≥ 1 are used by nothing else: the demo classifier
trained on 100 000+, tests and evaluations use seeds below 100 000, the amortised
benchmark's held-out tiles are 700 000+ and its held-out slide is seed 0. Each tile's
target is the demo classifier's own prediction; "normal" is the background class (its
tiles teach nothing; its masks are taught empty). ``--randomise-top N`` fits on the
demo classifier with its top N layers re-initialised (`metrics.randomise_top_layers`,
seed 0) instead: the randomisation sanity check of an amortised explainer refits it.
Killed, it resumes from ``<out>.ckpt``. Writes ``<out>.report.json`` and
``<out>.losses.png`` beside the file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import napari_medcam as mc
from napari_medcam.cli.common import Progress
from napari_medcam.cli.fit import report_paths, write_report
from napari_medcam.engine.amortised.fit import fit_explainer
from napari_medcam.metrics import randomise_top_layers

FIT_SEED0 = 600_000
DEFAULT_OUT = Path(__file__).parents[1] / "src/napari_medcam/engine/amortised/weights/demo.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--tiles", type=int, default=512)
    p.add_argument("--slide-seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--per-slide", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--randomise-top", type=int, default=0)
    p.add_argument(
        "--mask-scale", type=float, default=None, help="mask resolution (default: the config's)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if 0 in args.slide_seeds:
        p.error("slide seed 0 is the benchmark's held-out slide")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    clf = mc.demo_classifier()
    if args.randomise_top:
        clf = randomise_top_layers(clf, args.randomise_top)
    tiles: list = [mc.synthetic_tile(FIT_SEED0 + i, int(i % 4 == 0))[0] for i in range(args.tiles)]
    _, _, ckpt = report_paths(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.slide_seeds:
            slide = Path(tmp) / f"fit-slide-{seed}.tif"
            make = [sys.executable, str(Path(__file__).parent / "make_slide.py"), str(slide)]
            subprocess.run([*make, "--size", "4096", "--seed", str(seed)], check=True)
            tiles.append(slide)
        exp = fit_explainer(
            clf,
            mc.read_tiles(tiles, clf, per_slide=args.per_slide),
            mc.MedCAMConfig.fast(),
            args.steps,
            device="cpu",
            progress=Progress(),
            batch=args.batch,
            checkpoint=ckpt,
            network=None if args.mask_scale is None else {"mask_scale": args.mask_scale},
            # a randomised model's classes mean nothing: every class is fitted then
            empty_class=None if args.randomise_top else "normal",
        )
    fit = exp.metadata["fit"]
    fit["command"] = "python scripts/fit_demo_explainer.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    fit["tile_seeds"] = f"synthetic_tile({FIT_SEED0} + i), i < {args.tiles}"
    fit["slides"] = [f"make_slide.py --size 4096 --seed {s}" for s in args.slide_seeds]
    fit["randomised_top_layers"] = args.randomise_top
    exp.save(args.out)
    ckpt.unlink(missing_ok=True)
    for path in write_report(exp, args.out):
        print(path)
    print(fit["held_out_quality"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
