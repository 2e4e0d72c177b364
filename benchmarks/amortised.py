"""Amortised vs per-image Med-CAM on held-out tiles: time per tile and mask quality.

    python benchmarks/amortised.py --classifier demo --explainer demo [--tiles 40]
        [--refine 20] [--out benchmarks/records/amortised_demo.json]

Held-out tiles — decided before anything is measured, never used to fit: for the
demo, ``synthetic_tile(700_000 + i, 1)`` (the demo explainer was fitted on 600 000+);
for a zoo entry, ``zoo.cases(name, n, "eval")`` (its explainer fitted on "tune").
Each tile is explained three ways in one run, one tile at a time: per-image (the
fast preset, the reference), amortised (one pass), amortised + ``--refine``. For each:
wall time, decision kept on the binary mask (`MaskScorer.confidences`), insertion and
deletion AUC of the soft mask (`MaskScorer.curves`, the same absence for all three),
precision and area against the reference evidence, verdict; the wrong-class masks'
median area; and the randomisation sanity check (top two layers re-initialised: how
similar the amortised map stays, `map_similarity`; with ``--randomised-explainer`` the
explainer refitted on the randomised classifier, as the check should be done for a
method that is fitted per classifier).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_line

import napari_medcam as mc
from napari_medcam.classifiers.prepare import prepare_input, resolve_device
from napari_medcam.metrics import MaskScorer, map_similarity, overlap_scores, randomise_top_layers

DEMO_HELD_OUT = 700_000


def held_out(name: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if name == "demo":
        return [mc.synthetic_tile(DEMO_HELD_OUT + i, 1) for i in range(n)]
    from napari_medcam import zoo

    return [(c.image, c.reference) for c in zoo.cases(name, n, "eval")]


def classifier(name: str) -> mc.Classifier:
    if name == "demo":
        return mc.demo_classifier()
    from napari_medcam import zoo

    return zoo.load(name)


def measure(image, clf, exp_kwargs) -> dict:
    t = time.perf_counter()
    exp = mc.explain(image, clf, device="cpu", **exp_kwargs)
    return {"exp": exp, "seconds": time.perf_counter() - t}


def scores(scorer: MaskScorer, exp, ref) -> dict:
    mask = np.asarray(exp.mask)
    conf = scorer.confidences(mask)
    curves = scorer.curves(np.asarray(exp.soft_mask))
    return {
        "valid": bool(exp.valid),
        "kept": bool(conf["held"]),
        "masked": conf["masked"],
        "area": float(mask.mean()),
        "precision": overlap_scores(mask, ref)["precision"],
        "insertion_auc": curves["insertion_auc"],
        "deletion_auc": curves["deletion_auc"],
    }


def randomisation_only(args: argparse.Namespace) -> None:
    """The explainer's map and the refitted one's, for the tile's class, on every tile."""
    if not args.randomised_explainer:
        raise SystemExit("--randomisation-only needs --randomised-explainer")
    clf = classifier(args.classifier)
    explainer = mc.load_explainer(args.explainer, clf)
    randomised = randomise_top_layers(clf, 2)
    refitted = mc.load_explainer(args.randomised_explainer, randomised)
    sanity, flat = [], 0
    for image, _ in held_out(args.classifier, args.tiles):
        x = prepare_input(image, clf)
        with torch.no_grad():
            t = int(clf.module(x).argmax())
        a = explainer.masks(x, [t], clf)[0, 0].numpy()
        b = refitted.masks(x, [t], randomised)[0, 0].numpy()
        flat += int(np.ptp(b) == 0)
        sanity.append(map_similarity(a, b)["spearman"])
    result = {
        "machine": machine_line(resolve_device("cpu")),
        "classifier": args.classifier,
        "explainer": args.explainer,
        "randomisation": "refitted explainer: " + args.randomised_explainer,
        "tiles": len(sanity),
        "randomisation_spearman_median": float(np.median(sanity)),
        "randomisation_spearman_mean": float(np.mean(sanity)),
        "refitted_maps_constant": flat,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifier", default="demo")
    ap.add_argument("--explainer", default="demo")
    ap.add_argument("--tiles", type=int, default=40)
    ap.add_argument("--refine", type=int, default=20)
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--randomised-explainer",
        help="an explainer refitted on the classifier with its top 2 layers re-initialised "
        "(scripts/fit_demo_explainer.py --randomise-top 2): the randomisation check compares "
        "its map with the explainer's (without it: the explainer fed the randomised "
        "classifier, which only changes its Grad-CAM prior)",
    )
    ap.add_argument(
        "--reference",
        type=Path,
        help="JSON cache of the per-image rows (written when missing, read when present: "
        "the per-image run does not depend on the explainer)",
    )
    ap.add_argument(
        "--randomisation-only",
        action="store_true",
        help="only the randomisation check (needs --randomised-explainer): no explanations",
    )
    args = ap.parse_args()
    dev = resolve_device("cpu")
    if args.randomisation_only:
        return randomisation_only(args)
    clf = classifier(args.classifier)
    cases = held_out(args.classifier, args.tiles)
    methods: dict[str, dict] = {"per-image": {}}
    explainer = None
    if args.explainer != "none":  # "none": only the per-image reference (--reference)
        explainer = mc.load_explainer(args.explainer, clf)
        methods["amortised"] = {"explainer": explainer}
        methods[f"amortised+refine{args.refine}"] = {"explainer": explainer, "refine": args.refine}
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    cached = None
    if args.reference is not None and args.reference.exists():
        cached = json.loads(args.reference.read_text())
        if len(cached) < len(cases):
            raise SystemExit(f"{args.reference} has {len(cached)} tiles, not {len(cases)}")
        rows["per-image"] = cached[: len(cases)]
        del methods["per-image"]
    wrong, sanity = [], []
    randomised = randomise_top_layers(clf, 2)
    refitted = (
        mc.load_explainer(args.randomised_explainer, randomised)
        if args.randomised_explainer
        else explainer
    )
    for k, (image, ref) in enumerate(cases):
        scorer = MaskScorer.from_image(image, clf)
        for name, kw in methods.items():
            r = measure(image, clf, kw)
            rows[name].append({"seconds": r["seconds"], **scores(scorer, r["exp"], ref)})
        print(k + 1, {m: round(v[-1]["seconds"], 2) for m, v in rows.items()}, flush=True)
        if explainer is None:
            continue
        x = prepare_input(image, clf)
        t = scorer.target
        others = [c for c in range(clf.num_classes) if c != t]
        w = explainer.masks(x.expand(len(others), *x.shape[1:]), others, clf)
        wrong += (w > 0.5).float().flatten(1).mean(1).tolist()
        a = explainer.masks(x, [t], clf)[0, 0].numpy()
        b = refitted.masks(x, [t], randomised)[0, 0].numpy()
        sanity.append(map_similarity(a, b)["spearman"])
    if args.reference is not None and cached is None:
        args.reference.write_text(json.dumps(rows["per-image"], indent=1))
    if explainer is None:
        return
    summary = {}
    for name, rs in rows.items():
        summary[name] = {
            "tiles": len(rs),
            "seconds_per_tile": float(np.mean([r["seconds"] for r in rs])),
            "valid_rate": float(np.mean([r["valid"] for r in rs])),
            "kept_rate": float(np.mean([r["kept"] for r in rs])),
            "insertion_auc": float(np.mean([r["insertion_auc"] for r in rs])),
            "deletion_auc": float(np.mean([r["deletion_auc"] for r in rs])),
            "precision": float(np.mean([r["precision"] for r in rs])),
            "median_area": float(np.median([r["area"] for r in rs])),
        }
    ref = summary["per-image"]
    for s in summary.values():
        s["speedup_vs_per_image"] = ref["seconds_per_tile"] / s["seconds_per_tile"]
        for key in ("insertion_auc", "deletion_auc", "precision", "median_area", "kept_rate"):
            s[f"{key}_ratio"] = s[key] / ref[key] if ref[key] else None
    result = {
        "machine": machine_line(dev),
        "classifier": args.classifier,
        "explainer": explainer.metadata.get("file"),
        "per_image_reference": str(args.reference) if args.reference else "this run",
        "held_out": f"{len(cases)} tiles: "
        + (f"synthetic_tile({DEMO_HELD_OUT} + i, 1)" if args.classifier == "demo" else "eval"),
        "summary": summary,
        "wrong_class_median_area": float(np.median(wrong)),
        "randomisation_spearman_median": float(np.median(sanity)),
        "randomisation": "refitted explainer: " + args.randomised_explainer
        if args.randomised_explainer
        else "same explainer, randomised classifier",
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
