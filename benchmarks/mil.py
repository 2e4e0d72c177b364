"""Slide-level decisions (issue 24): minimal tiles vs the aggregator's attention.

    python benchmarks/mil.py [--entries mil-transmil,mil-maxpool] [--split eval] [--hard]
                             [--slides 30] [--absence removal,replacement]
                             [--timing mil-abmil]
                             [--out benchmarks/records/mil_eval.json]

For each MIL zoo entry (`napari_medcam.zoo.mil`) and each positive slide of ``split``
that the classifier calls 'tumour', `napari_medcam.explain` runs on the slide's array
(tiles embedded once and cached in a zarr store shared by the entries: they share the
encoder) and the minimal set is compared with the slide's truly positive tiles and with
the aggregator's own top-k tiles at the same k (attention; the instance score for
max-pooling):

- decision kept: the set meets the goal (alone, the rest absent, ≥ 95 % of p(tumour),
  and on the random absences);
- kept tiles vs truly positive tiles (medians); precision of the kept tiles;
- attention top-k precision; sufficiency: p(tumour | the set alone) / p(tumour | slide),
  and the share of slides where the set meets the goal, for both sets;
- necessity: the share of slides that read 'normal' without the kept tiles.

``--timing``: a 84×84-tile slide (7,056 tiles, 14 positive, ~40 mimics) built from the pool: the
embedding pass (tiles/s) and, with the embeddings cached, the minimal set (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_line

import napari_medcam as mc
from napari_medcam.engine.mil.absence import BagModel, bag_absence
from napari_medcam.engine.mil.minimal import GoalTest
from napari_medcam.zoo import mil
from napari_medcam.zoo.mil.slides import POOL_SIZE, SyntheticSlide


def top_k_check(clf, result, e: np.ndarray, k: int, absence: str) -> tuple[float, bool]:
    """p(target | attention's top-k alone) / p0, and whether it meets the same goal."""
    model = BagModel(clf, e, result.grid)
    fill = bag_absence(model, result.target, absence, seed=0)
    keep = torch.zeros(len(e), dtype=torch.bool)
    keep[torch.from_numpy(np.argsort(-result.attention, kind="stable")[:k])] = True
    check = GoalTest(model, fill, result.target, result.goal)(keep)
    return check.p_kept / result.p_original, check.meets


def one_slide(clf, slide: SyntheticSlide, pool, cache: Path, absence: str) -> dict | None:
    image = slide.image(pool)
    result = mc.explain(
        image, clf, cache=cache / f"{slide.split}-{slide.index}.zarr", absence=absence
    )
    if result.target_name != "tumour":
        return None  # a missed slide: there is no 'tumour' to explain
    truth = slide.positive[result.grid[:, 0], result.grid[:, 1]]
    k = result.n_kept
    e = np.stack([clf.embed(image[y0:y1, x0:x1][None])[0] for y0, x0, y1, x1 in result.windows])
    top = np.argsort(-result.attention, kind="stable")[:k]
    top_ratio, top_meets = top_k_check(clf, result, e, k, absence)
    return {
        "slide": slide.index,
        "positive_tiles": int(truth.sum()),
        "kept": k,
        "meets_goal": result.meets_goal,
        "necessary": result.necessary,
        "precision": float(truth[result.kept].mean()),
        "attention_precision": float(truth[top].mean()),
        "sufficiency": result.p_kept / result.p_original,
        "attention_sufficiency": top_ratio,
        "attention_meets_goal": top_meets,
        "seconds_minimal": result.provenance["seconds_minimal"],
        "sentence": result.sentence,
    }


def summary(rows: list[dict], n_positive: int) -> dict:
    med = statistics.median
    return {
        "positive_slides": n_positive,
        "explained (called tumour)": len(rows),
        "decision_kept": float(np.mean([r["meets_goal"] for r in rows])),
        "median_kept": med([r["kept"] for r in rows]),
        "median_positive": med([r["positive_tiles"] for r in rows]),
        "kept_le_positive": float(np.mean([r["kept"] <= r["positive_tiles"] for r in rows])),
        "precision": float(np.mean([r["precision"] for r in rows])),
        "attention_precision": float(np.mean([r["attention_precision"] for r in rows])),
        "sufficiency": med([r["sufficiency"] for r in rows]),
        "attention_sufficiency": med([r["attention_sufficiency"] for r in rows]),
        "attention_meets_goal": float(np.mean([r["attention_meets_goal"] for r in rows])),
        "necessary": float(np.mean([bool(r["necessary"]) for r in rows])),
        "median_seconds": med([r["seconds_minimal"] for r in rows]),
    }


def timing(name: str, pool, folder: Path) -> dict:
    """The embedding pass and the minimal set on a 7,056-tile slide."""
    clf = mil.load(name)
    rng = np.random.default_rng(7)
    n_normal, n_mimic, n_positive = POOL_SIZE["eval"]
    layout = rng.integers(0, n_normal, (84, 84))
    positive = np.zeros((84, 84), bool)
    positive[40:42, 30:37] = True  # 14 positive tiles in one cluster
    layout[positive] = n_normal + n_mimic + rng.choice(n_positive, 14, replace=False)
    mimic = np.zeros_like(positive)
    mimic[rng.integers(0, 84, 40), rng.integers(0, 84, 40)] = True
    mimic &= ~positive
    layout[mimic] = n_normal + rng.integers(0, n_mimic, int(mimic.sum()))
    slide = SyntheticSlide("eval", 10_000, layout, positive, mimic, 1)
    image = slide.image(pool)
    cache = folder / "big.zarr"
    t = time.perf_counter()
    first = mc.explain(image, clf, cache=cache)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    second = mc.explain(image, clf, cache=cache)
    cached_s = time.perf_counter() - t
    truth = positive[second.grid[:, 0], second.grid[:, 1]]
    encoded = first.provenance["encoded"]  # 0 when an earlier entry (same encoder) cached it
    return {
        "entry": name,
        "tiles": second.n_tiles,
        "embed_tiles_per_s": encoded / first.provenance["seconds_embed"] if encoded else None,
        "first_call_s": first_s,
        "cached_call_s": cached_s,
        "cached_minimal_s": second.provenance["seconds_minimal"],
        "cache_used": second.provenance["cache_used"],
        "kept": second.n_kept,
        "kept_tiles": np.flatnonzero(second.kept).tolist(),
        "kept_positive": int(truth[second.kept].sum()),
        "relaxed_steps": second.provenance.get("relaxed_steps", 100),  # 100 before the stop
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "sentence": second.sentence,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default=",".join(mil.MIL_HELD_OUT))
    ap.add_argument("--split", default="eval", choices=["tune", "eval"])
    ap.add_argument("--slides", type=int, default=30, help="positive slides per entry")
    ap.add_argument("--hard", action="store_true", help="hard slides (mil.hard_slide)")
    ap.add_argument("--absence", default="removal,replacement", help="absences, in turn")
    ap.add_argument("--timing", default="", help="entries to time on a 7,056-tile slide")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pool = mil.tile_pool(args.split)
    record: dict = {
        "machine": machine_line(torch.device("cpu")),
        "split": args.split,
        "slides": "hard" if args.hard else "standard",
        "runs": {},
        "timing": [],
    }
    print(record["machine"], flush=True)
    with tempfile.TemporaryDirectory(prefix="mil-bench-") as tmp:
        folder = Path(tmp)
        for absence in [a for a in args.absence.split(",") if a]:
            runs = record["runs"].setdefault(absence, {})
            for name in [n for n in args.entries.split(",") if n]:
                clf = mil.load(name)
                make = mil.hard_slide if args.hard else mil.synthetic_slide
                slides = [make(args.split, 2 * i) for i in range(args.slides)]
                rows = [r for s in slides if (r := one_slide(clf, s, pool, folder, absence))]
                runs[name] = {"summary": summary(rows, len(slides)), "slides": rows}
                print(absence, name, json.dumps(runs[name]["summary"]), flush=True)
        eval_pool = pool if args.split == "eval" else mil.tile_pool("eval")
        for name in [n for n in args.timing.split(",") if n]:
            record["timing"].append(timing(name, eval_pool, folder))
            print(json.dumps(record["timing"][-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
