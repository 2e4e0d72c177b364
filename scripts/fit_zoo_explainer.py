"""Fit an amortised explainer for one zoo classifier, on its ``tune`` split only.

    OMP_NUM_THREADS=2 python scripts/fit_zoo_explainer.py resnet-meanpos \
        [--steps 400] [--tiles 256] [--out explainers/resnet-meanpos.pt]

Fitting tiles: the entry's own generator on the ``tune`` seeds (40 000+), every class
in turn (labels only choose how tiles are made; each tile's target is the classifier's
own prediction); the entry's negative class (its first) is the empty class unless
``--empty-class`` says otherwise. The amortised benchmark
(``benchmarks/amortised.py --classifier NAME``) measures on the ``eval`` split
(50 000+), which the fit never sees. Killed, it resumes
from ``<out>.ckpt``; writes ``<out>.report.json`` and ``<out>.losses.png`` beside the file.
These explainers are not shipped (they are benchmark artefacts); the demo's is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import napari_medcam as mc
from napari_medcam import zoo
from napari_medcam.cli.common import Progress, add_renamed_option
from napari_medcam.cli.fit import report_paths, write_report
from napari_medcam.engine.amortised.fit import fit_explainer
from napari_medcam.metrics import randomise_top_layers
from napari_medcam.zoo._common import SEED0


def fitting_tiles(name: str, n: int) -> list:
    """``n`` tiles of the entry's ``tune`` split, its classes taking turns."""
    mod, entry = zoo.MODULES[name], zoo.ZOO[name]
    classes = len(entry.class_names)
    return [mod.sample(SEED0["tune"] + i, i % classes, "tune")[0] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("entry", choices=sorted(zoo.ZOO))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--tiles", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wrong-weight", type=float, default=None, help="default: the fit's own")
    add_renamed_option(
        p,
        "--empty-class",
        "--background-class",
        help="class of 'nothing found', left out of the fit (default: the entry's negative "
        "class, its first; 'none' fits every class)",
    )
    p.add_argument(
        "--randomise-top",
        type=int,
        default=0,
        help="fit for the classifier with its top N layers re-initialised (the "
        "randomisation check; every class fitted: a random model's classes mean nothing)",
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    out = args.out or Path("explainers") / f"{args.entry}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    clf = zoo.load(args.entry)
    empty = args.empty_class or clf.class_names[0]
    if args.randomise_top:
        clf, empty = randomise_top_layers(clf, args.randomise_top), "none"
    _, _, ckpt = report_paths(out)
    exp = fit_explainer(
        clf,
        fitting_tiles(args.entry, args.tiles),
        mc.MedCAMConfig.fast(),
        args.steps,
        device="cpu",
        progress=Progress(),
        batch=args.batch,
        lr=args.lr,
        checkpoint=ckpt,
        empty_class=None if empty == "none" else empty,
        **({} if args.wrong_weight is None else {"wrong_weight": args.wrong_weight}),
    )
    exp.metadata["fit"]["command"] = "python scripts/fit_zoo_explainer.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    exp.metadata["fit"]["tile_seeds"] = f"{args.entry} tune split, seeds {SEED0['tune']}+"
    exp.metadata["fit"]["randomised_top_layers"] = args.randomise_top
    exp.save(out)
    ckpt.unlink(missing_ok=True)
    for path in write_report(exp, out):
        print(path)
    print(exp.metadata["fit"]["held_out_quality"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
