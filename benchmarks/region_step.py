"""The region step alone, on captured optimisations: how stable, precise and small it is.

    python benchmarks/region_step.py ENTRY [ENTRY ...] [--images 8] [--split tune]
        [--captures DIR]

The region step (`napari_medcam.engine.regions`) is the last step of an explanation and
the cheapest; the optimisation before it is most of the time. To tune the step, each
image is explained three times as the zoo's stability column does (the config's seed,
seed + 1, the image after a JPEG round trip), the region step's inputs are captured
(``DIR/ENTRY-SPLIT.pt``, reused when present), and the current region step is re-run on
them: per entry the median stability IoU (median of the seed and JPEG IoUs), precision
and area against the reference closed at the scale, and regions. Run it at another
commit (a git worktree, ``PYTHONPATH=<worktree>/src``) with the same ``--captures`` to
compare two region steps on exactly the same optimisations. Tuning and seen entries only
(docs/zoo.md) unless the run is a held-out report.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from _common import machine_line

from napari_medcam import zoo
from napari_medcam.classifiers.demo import demo_classifier
from napari_medcam.engine import optimise, regions
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explain import explain
from napari_medcam.engine.scale import resolve_detail
from napari_medcam.evaluation.readability import iou, jpeg_round_trip
from napari_medcam.evaluation.zoo import demo_cases


def _load(entry: str, n: int, split: str):  # noqa: ANN202 - (classifier, cases)
    if entry == "demo":
        return demo_classifier(), demo_cases(n, split)
    return zoo.load(entry), zoo.cases(entry, n, split=split)


def capture(entry: str, n: int, split: str) -> list[dict]:
    """Per image: the reference and the region step's inputs of the three explanations."""
    clf, cases = _load(entry, n, split)
    seen: list[tuple] = []
    real = optimise.at_scale

    def spy(check, soft, hard, cfg, classifier, prune):  # noqa: ANN001, ANN202
        seen.append((check, soft.clone(), hard.clone(), cfg, prune))
        return real(check, soft, hard, cfg, classifier, prune)

    optimise.at_scale = spy
    cfg = MedCAMConfig.fast()
    out = []
    try:
        for case in cases:
            if int(np.argmax(clf.predict_proba(case.image))) != case.target:
                continue
            runs = []
            for img, c in (
                (case.image, cfg),
                (case.image, cfg.replace(seed=cfg.seed + 1)),
                (jpeg_round_trip(case.image), cfg),
            ):
                seen.clear()
                explain(img, clf, case.target, c)
                runs.append(seen[0] if seen else None)
            if all(runs):
                out.append({"case": case.name, "reference": case.reference, "runs": runs})
    finally:
        optimise.at_scale = real
    return out


def score(entry: str, captured: list[dict]) -> dict[str, float]:
    """The current region step on the captured inputs, as medians over images."""
    clf = _load(entry, 0, "tune")[0]
    rows = []
    for item in captured:
        masks = []
        for check, soft, hard, cfg, prune in item["runs"]:
            detail = resolve_detail(cfg.detail, clf)
            out, _ = regions.regionalise(check, hard, detail, prune, soft, cfg.threshold)
            masks.append(out[0, 0].numpy() > 0.5)
        drawn = regions.close(item["reference"], detail.radius)
        a = masks[0]
        rows.append(
            (
                statistics.median([iou(a, masks[1]), iou(a, masks[2])]),
                float((a & drawn).sum() / max(1, a.sum())),
                float(a.sum() / drawn.sum()),
                regions.label(a)[1],
            )
        )
    med = [statistics.median(r[k] for r in rows) for k in range(4)]
    return dict(zip(("stability", "precision", "area_ref", "regions"), med)) | {"images": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("entries", nargs="+")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--split", default="tune")
    ap.add_argument("--captures", type=Path, default=Path("region-step-captures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(machine_line(torch.device("cpu")))
    args.captures.mkdir(parents=True, exist_ok=True)
    for entry in args.entries:
        path = args.captures / f"{entry}-{args.split}.pt"
        if path.exists():
            captured = torch.load(path, weights_only=False)  # our own file, made below
        else:
            captured = capture(entry, args.images, args.split)
            torch.save(captured, path)
        s = score(entry, captured)
        print(
            f"{entry:22s} images {s['images']}  stability {s['stability']:.2f}  precision "
            f"{s['precision']:.2f}  area/ref {s['area_ref']:.2f}  regions {s['regions']:g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
