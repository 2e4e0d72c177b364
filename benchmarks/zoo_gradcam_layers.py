"""Grad-CAM on a ViT at two layers, at the masks' areas of a recorded zoo run.

    python benchmarks/zoo_gradcam_layers.py benchmarks/records/zoo_round5_transformers.json

The zoo evaluation computes Grad-CAM on the deepest discovered layer: a transformer's last
block, tokens reshaped. For a model that pools its *class token*, the last block's patch
tokens never reach the logits (only the class token goes on through the final norm to the
head), so the gradient there is exactly zero and Grad-CAM's map is empty. ViT users
therefore take the last block's ``norm1`` (pytorch-grad-cam's documented target layer for
ViT and DeiT): the tokens entering its attention, which the class token reads.

For every entry of the records with a ``<last block>.norm1`` layer, this recomputes on the
same eval cases (``zoo.cases`` is deterministic) Grad-CAM at both layers and scores their
top pixels at each image's recorded mask area, as the evaluation does. Med-CAM is not run.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from napari_medcam import zoo
from napari_medcam.comparison import gradcam
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.evaluation.readability import near_reference, scale_reference
from napari_medcam.metrics import pointing_game, threshold_to_area


def precision(heat: np.ndarray, area: float, near: np.ndarray) -> float:
    mask = threshold_to_area(heat, area)
    return float((mask & near).sum() / mask.sum()) if mask.any() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.records, encoding="utf-8") as f:
        results = json.load(f)
    config = MedCAMConfig.fast()
    print("| classifier | layer | Grad-CAM precision | pointing | empty maps | Med-CAM |")
    print("|---|---|---|---|---|---|")
    for name, records in results.items():
        clf = zoo.load(name)
        norm1 = f"{clf.layers[-1]}.norm1"
        if norm1 not in dict(clf.module.named_modules()):
            continue
        cases = zoo.cases(name, n=len(records), split="eval")
        for layer in (clf.layers[-1], norm1):
            prec, point, empty = [], [], 0
            for case, rec in zip(cases, records):
                if not rec.get("area"):
                    continue
                near = near_reference(scale_reference(case.reference, clf, config))
                heat = gradcam(case.image, clf, case.target, layer=layer)
                empty += int(heat.max() == 0)
                prec.append(precision(heat, rec["area"], near))
                point.append(pointing_game(heat, near))
            medcam = np.nanmean([r["precision"] for r in records if r.get("area")])
            print(
                f"| {name} | {layer} | {np.nanmean(prec):.2f} | {100 * np.mean(point):.0f} % | "
                f"{empty} / {len(prec)} | {medcam:.2f} |"
            )


if __name__ == "__main__":
    main()
