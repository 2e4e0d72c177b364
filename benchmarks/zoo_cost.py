"""Seconds per image of the default recipe on zoo classifiers, as a ratio to one
forward+backward pass of each classifier: the unit in which CNNs and transformers compare.

    python benchmarks/zoo_cost.py [--classifiers a,b,...] [--images 3] [--threads 2]

For each entry: one forward+backward of one input (median of 5, `forward_backward_seconds`
of the zoo evaluation), then `explain` with `MedCAMConfig.fast()` on its first ``--images``
positive eval images, timed. Default: the CNN entries of the zoo (not the transformer
entries, which are held out and timed in their one reported run). Prints a Markdown table
and the median ratio over the entries.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine_line

import napari_medcam as mc
from napari_medcam import zoo
from napari_medcam.evaluation.zoo import forward_backward_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = [n for n in zoo.ZOO if n not in zoo.TRANSFORMERS]
    ap.add_argument("--classifiers", default=",".join(default))
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.classifiers.split(","):
        clf = zoo.load(name)
        unit = forward_backward_seconds(clf)
        secs = []
        for case in zoo.cases(name, n=args.images, split="eval"):
            start = time.perf_counter()
            mc.explain(case.image, clf, case.target, mc.MedCAMConfig.fast(), device="cpu")
            secs.append(time.perf_counter() - start)
        s = statistics.mean(secs)
        rows.append((name, unit, s, s / unit))
        print(f"{name}: {1000 * unit:.1f} ms fwd+bwd, {s:.1f} s / image", flush=True)
    print(machine_line(torch.device("cpu")))
    print("| classifier | fwd+bwd (ms) | s / image | × fwd+bwd |")
    print("|---|---|---|---|")
    for name, unit, s, ratio in rows:
        print(f"| {name} | {1000 * unit:.1f} | {s:.1f} | {ratio:.0f} |")
    median = statistics.median(r[3] for r in rows)
    print(f"\nmedian × fwd+bwd over {len(rows)} classifiers: {median:.0f}")


if __name__ == "__main__":
    main()
