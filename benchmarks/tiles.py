"""Tiles per second: a batch of tiles in one optimisation vs the same tiles one by one.

    python benchmarks/tiles.py [--tiles 8] [--batch 4] [--device auto]

Both runs explain the same lesion tiles (laid side by side in one image, so the
engine's tiling path is used) with the fast preset, in one process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import machine_line

import napari_medcam as mc
from napari_medcam.classifiers.prepare import resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    clf = mc.demo_classifier()
    image = np.concatenate([mc.synthetic_tile(21_000 + i, 1)[0] for i in range(args.tiles)], 1)
    cfg = mc.MedCAMConfig.fast()
    rows = []
    for batch in (1, args.batch):
        t = time.perf_counter()
        exp = mc.explain(image, clf, config=cfg, device=dev, tile_overlap=0, tile_batch=batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        s = time.perf_counter() - t
        rows.append((batch, s, args.tiles / s, exp.steps, exp.status))
    print(machine_line(dev))
    print("| tiles per optimisation | seconds | tiles / s | speed-up | status |")
    print("|---|---|---|---|---|")
    for batch, s, tps, _steps, status in rows:
        print(f"| {batch} | {s:.1f} | {tps:.2f} | {tps / rows[0][2]:.2f}× | {status} |")


if __name__ == "__main__":
    main()
