"""The minimal-tile search on the eval slides of `benchmarks/mil.py`: which tiles it keeps.

    python benchmarks/mil_search.py --out after.json [--against before.json]
                                    [--slides 20] [--bags /tmp/mil_eval_bags.npz]

For the positive ``eval`` slides that `benchmarks/mil.py --split eval` explains (the
same 20 by default), each slide's bag (its tissue tiles embedded once by the zoo's
shared encoder, kept in ``--bags`` so a second run reads them) is explained by every MIL
zoo entry with both absences through `explain_bag`, the search `mc.explain` runs after
the embedding pass. Recorded per slide: the kept tiles, whether they meet the goal, the
relaxed steps and the seconds. ``--against``: a record of another version of the search
(run with ``PYTHONPATH=<its src>``): per entry and absence, how many kept sets are
identical, and the slides where they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_line

import napari_medcam as mc
from napari_medcam.engine.mil import explain_bag
from napari_medcam.zoo import mil


def eval_bags(n: int, path: Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Slide index → (embeddings, grid, truly positive) for the first ``n`` positive slides."""
    if path.exists():
        z = np.load(path)
        return {i: (z[f"e{i}"], z[f"g{i}"], z[f"t{i}"]) for i in range(0, 2 * n, 2)}
    pool, clf = mil.tile_pool("eval"), mil.load(mil.MIL_TUNING[0])
    bags, arrays = {}, {}
    for i in range(0, 2 * n, 2):
        slide = mil.synthetic_slide("eval", i)
        r = mc.explain(slide.image(pool), clf)
        truth = slide.positive[r.grid[:, 0], r.grid[:, 1]]
        bags[i] = (r.embeddings, r.grid, truth)
        arrays |= {f"e{i}": r.embeddings, f"g{i}": r.grid, f"t{i}": truth}
    np.savez(path, **arrays)
    return bags


def compare(record: dict, other: dict) -> dict:
    """Per entry and absence: identical kept sets, and the slides where they differ."""
    out = {}
    for key, rows in record["runs"].items():
        theirs = {r["slide"]: r for r in other["runs"][key]}
        differ = [
            {"slide": r["slide"], "kept": r["kept_tiles"], "other": theirs[r["slide"]]}
            for r in rows
            if r["kept_tiles"] != theirs[r["slide"]]["kept_tiles"]
        ]
        out[key] = {"identical": f"{len(rows) - len(differ)} / {len(rows)}", "differ": differ}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slides", type=int, default=20)
    ap.add_argument("--bags", type=Path, default=Path("/tmp/mil_eval_bags.npz"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--against", type=Path, default=None)
    args = ap.parse_args()
    bags = eval_bags(args.slides, args.bags)
    record: dict = {"machine": machine_line(torch.device("cpu")), "runs": {}}
    for name in mil.MIL_ZOO:
        clf = mil.load(name)
        for absence in ("removal", "replacement"):
            rows = []
            for i, (e, g, truth) in bags.items():
                t = time.perf_counter()
                r = explain_bag(e, g, clf, absence=absence)
                rows.append(
                    {
                        "slide": i,
                        "kept_tiles": np.flatnonzero(r.kept).tolist(),
                        "kept_positive": int(truth[r.kept].sum()),
                        "meets_goal": r.meets_goal,
                        "relaxed_steps": r.provenance.get("relaxed_steps", 100),
                        "seconds": time.perf_counter() - t,
                    }
                )
            record["runs"][f"{name} {absence}"] = rows
            seconds = statistics.median(r["seconds"] for r in rows)
            print(name, absence, f"median {seconds:.2f} s / slide", flush=True)
    record["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.against:
        record["against"] = compare(record, json.loads(args.against.read_text()))
        for key, c in record["against"].items():
            print(key, "identical", c["identical"], [d["slide"] for d in c["differ"]])
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
