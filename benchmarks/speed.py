"""Seconds per 224×224 tile for the fast and paper presets, as ratios measured in one run.

    python benchmarks/speed.py [--tiles 4] [--device auto] [--paper-steps N]

Baselines timed in the same process on the same tiles: one classifier
forward+backward pass, and Grad-CAM. Prints a Markdown table (paste it into
BENCHMARKS.md with the machine line it prints).
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import machine_line, timed

import napari_medcam as mc
from napari_medcam.classifiers.prepare import prepare_input, resolve_device
from napari_medcam.comparison import gradcam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--paper-steps",
        type=int,
        default=None,
        help="cap the paper preset's 880 steps (time scales linearly)",
    )
    ap.add_argument("--no-paper", action="store_true", help="time the fast preset only")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    clf = mc.demo_classifier().to(dev)
    tiles = [mc.synthetic_tile(20_000 + i, 1)[0] for i in range(args.tiles)]

    def fwd_bwd(img):
        x = prepare_input(img, clf).to(dev).requires_grad_(True)
        clf.module(x)[0].max().backward()

    fwd_bwd(tiles[0])  # warm-up
    t_pass = np.mean([timed(lambda im=im: fwd_bwd(im), 5) for im in tiles])
    t_cam = np.mean([timed(lambda im=im: gradcam(im, clf), 5) for im in tiles])
    rows = []
    paper = mc.MedCAMConfig.paper()
    if args.paper_steps:
        paper = paper.replace(steps=args.paper_steps, min_steps=args.paper_steps)
    presets = [
        ("fast", mc.MedCAMConfig.fast()),
        ("fast, no pruning", mc.MedCAMConfig.fast(prune=False)),  # what pruning costs
        ("paper", paper),
    ]
    if args.no_paper:
        presets.pop()
    for name, cfg in presets:
        secs, steps, masked, valid = [], [], [], []
        for im in tiles:
            exp = mc.explain(im, clf, config=cfg, device=dev)
            secs.append(exp.seconds)
            steps.append(exp.steps)
            masked.append(exp.masked_confidence)
            valid.append(exp.valid)
        s = float(np.mean(secs))
        if name == "paper" and args.paper_steps:
            s_full = s * 880 / args.paper_steps
            steps = args.paper_steps
            name = f"paper ({steps} of 880 steps; ×{880 / steps:.1f} → {s_full:.1f} s)"
        rows.append((name, s, float(np.mean(steps)), float(np.mean(masked)), sum(valid)))
    print(machine_line(dev))
    print(f"one forward+backward: {1000 * t_pass:.1f} ms; Grad-CAM: {1000 * t_cam:.1f} ms\n")
    print("| method | s / tile | steps | × fwd+bwd | × Grad-CAM | masked conf. | valid |")
    print("|---|---|---|---|---|---|---|")
    print(f"| Grad-CAM | {t_cam:.3f} | 1 | {t_cam / t_pass:.1f} | 1.0 | – | – |")
    for name, s, st, m, v in rows:
        print(
            f"| Med-CAM {name} | {s:.2f} | {st:.0f} | {s / t_pass:.0f} | {s / t_cam:.0f} "
            f"| {m:.3f} | {v}/{len(tiles)} |"
        )


if __name__ == "__main__":
    main()
