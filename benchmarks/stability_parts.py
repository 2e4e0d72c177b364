"""What makes a mask unstable: another extent of the same regions, or other regions?

    python benchmarks/stability_parts.py ENTRY [--images 6] [--split tune]

The zoo's *stability IoU* (pixel IoU of the mask with the mask explained with another
seed and after a JPEG round trip, `napari_medcam.evaluation.readability`) mixes two
things. This prints, per image, for the same two re-explanations: the pixel IoU; the IoU
of both masks dilated by the detail scale's radius (the extent at the scale a person
reads); and the *region agreement* — the share of the regions of either mask that
overlap a region of the other (1.0: the same regions, whatever their extent; < 1: the
method picked other evidence, e.g. another of several equally sufficient lesions).
Use tuning or seen entries (docs/zoo.md) unless the run is a held-out report.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.ndimage as ndi
import torch
from _common import machine_line

from napari_medcam import zoo
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explain import explain
from napari_medcam.engine.scale import resolve_detail
from napari_medcam.evaluation.readability import iou, jpeg_round_trip


def region_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the regions of ``a`` and ``b`` that overlap a region of the other."""
    la, na = ndi.label(a)
    lb, nb = ndi.label(b)
    if not na or not nb:
        return float(na == nb)
    hit_a = sum(bool(b[la == i].any()) for i in range(1, na + 1))
    hit_b = sum(bool(a[lb == i].any()) for i in range(1, nb + 1))
    return (hit_a + hit_b) / (na + nb)


def scale_iou(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    n = max(1, int(round(radius)))
    cross = ndi.generate_binary_structure(2, 1)
    return iou(ndi.binary_dilation(a, cross, n), ndi.binary_dilation(b, cross, n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("entry")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--split", default="tune")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    clf = zoo.load(args.entry)
    config = MedCAMConfig.fast()
    radius = resolve_detail(config.detail, clf).radius
    for case in zoo.cases(args.entry, args.images, split=args.split):
        if int(np.argmax(clf.predict_proba(case.image))) != case.target:
            continue
        started = time.perf_counter()
        runs = [
            explain(case.image, clf, case.target, config),
            explain(case.image, clf, case.target, config.replace(seed=config.seed + 1)),
            explain(jpeg_round_trip(case.image), clf, case.target, config),
        ]
        m = [np.asarray(e.mask, bool) for e in runs]
        row = {
            "area": round(float(m[0].mean()), 4),
            "regions": [e.regions for e in runs],
            "pixel_iou": [round(iou(m[0], m[k]), 2) for k in (1, 2)],
            "scale_iou": [round(scale_iou(m[0], m[k], radius), 2) for k in (1, 2)],
            "region_agreement": [round(region_agreement(m[0], m[k]), 2) for k in (1, 2)],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
