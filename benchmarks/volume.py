"""Seconds to explain a 64³ volume with the demo 3-D classifier, as ratios measured in one run.

    OMP_NUM_THREADS=1 python benchmarks/volume.py [--size 64] [--device auto] [--threads 1]

The demo volume classifier takes 32³ inputs, so a 64³ volume is explained in
overlapping 32³ tiles (``--overlap`` voxels; the tiles the classifier assigns to
the target are optimised ``--tile-batch`` at a time, each with its own 3-D U-Net)
and their soft masks are blended. Two 64³ volumes: one at the classifier's voxel
size (a larger field of view around a lesion of the usual size: the realistic
case) and one with the same anatomy sampled twice as finely (every structure,
lesion included, twice the size the classifier was trained on). Also timed, in the
same process: one classifier forward+backward pass on one 32³ input (the unit of
the ratios), and a single 32³ volume (no tiling). Prints a Markdown table (paste it
into BENCHMARKS.md with the machine line it prints).
"""

from __future__ import annotations

import argparse

import torch
from _common import machine_line, timed

import napari_medcam as mc
from napari_medcam.classifiers.demo3d import demo_volume_classifier
from napari_medcam.classifiers.prepare import prepare_input, resolve_device
from napari_medcam.data.volumes import synthetic_volume
from napari_medcam.metrics import overlap_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64, help="side of the large volume")
    ap.add_argument("--overlap", type=int, default=8, help="tile overlap in voxels")
    ap.add_argument("--tile-batch", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=30_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    clf = demo_volume_classifier().to(dev)
    cfg = mc.MedCAMConfig.volume()
    small, small_truth = synthetic_volume(args.seed, 1)
    wide, wide_truth = synthetic_volume(args.seed, 1, size=args.size, scale=1)
    fine, fine_truth = synthetic_volume(args.seed, 1, size=args.size)

    def fwd_bwd():
        x = prepare_input(small, clf).to(dev).requires_grad_(True)
        clf.module(x)[0].max().backward()

    fwd_bwd()  # warm-up
    t_pass = timed(fwd_bwd, 10)
    rows = []
    tiling = dict(tile_overlap=args.overlap, tile_batch=args.tile_batch)
    tiles = f"tiles of {clf.input_size[0]}³, overlap {args.overlap}"
    runs = [
        (f"{small.shape[0]}³ (one input)", small, small_truth, {}),
        (f"{args.size}³, training voxel size ({tiles})", wide, wide_truth, tiling),
        (
            f"{args.size}³, anatomy sampled {args.size / 32:g}× finer ({tiles})",
            fine,
            fine_truth,
            tiling,
        ),
    ]
    for name, vol, truth, tiling in runs:
        exp = mc.explain(vol, clf, config=cfg, device=dev, **tiling)
        rows.append((name, exp, overlap_scores(exp.mask, truth)["iou"]))
    print(machine_line(dev))
    print(
        f"classifier: demo-volume, input {clf.input_size}; preset volume "
        f"(U-Net {cfg.unet_channels}, mask at {cfg.mask_scale:g}× input, ≤ {cfg.steps} steps)"
    )
    print(f"one forward+backward on a {clf.input_size[0]}³ input: {1000 * t_pass:.1f} ms\n")
    print("| volume | tiles explained / all | steps | s | × fwd+bwd | valid | IoU vs lesion |")
    print("|---|---|---|---|---|---|---|")
    for name, exp, score in rows:
        n_tiles = 1 if exp.tiles == 1 else _explained(exp)
        print(
            f"| {name} | {n_tiles} / {exp.tiles} | {exp.steps} | {exp.seconds:.1f} "
            f"| {exp.seconds / t_pass:.0f} | {exp.status} | {score:.2f} |"
        )


def _explained(exp: mc.Explanation) -> int:
    """Tiles optimised in a tiled run (the status says "k of n '<class>' tiles valid")."""
    words = exp.status.split()
    if len(words) > 2 and words[1] == "of" and words[2].isdigit():
        return int(words[2])
    return exp.tiles


if __name__ == "__main__":
    main()
