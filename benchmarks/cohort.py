"""Cohort throughput: slides per hour with 1 and 2 Dask worker processes, in one run.

    OMP_NUM_THREADS=1 python benchmarks/cohort.py [--slides 6] [--size 1536] [--level 1]
                                                  [--steps 10] [--json OUT.json]

Makes ``--slides`` synthetic pyramidal slides (scripts/make_slide.py, one seed each),
then explains all of them with `napari_medcam.batch.run_cohort` on a LocalCluster of
1 worker, then of 2 workers (fresh output folders, same settings), each worker a
single-threaded process. Wall time includes starting the cluster and writing every
output and the summary. Peak memory per worker is the largest ``ru_maxrss`` its
process reported after a slide (the task records it in ``result.json``). The core
share (CPU seconds over wall seconds of the slide tasks) and the load average say how
much of the machine the run really had.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine_line

import napari_medcam as mc
from napari_medcam.batch import run_cohort
from napari_medcam.batch.outputs import read_result

ROOT = Path(__file__).resolve().parents[1]


def make_slides(folder: Path, n: int, size: int) -> list[Path]:
    paths = [folder / f"slide{i:02d}.tif" for i in range(n)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/make_slide.py"), str(p), "--size", str(size)]
            + ["--seed", str(100 + i)],
            stdout=subprocess.DEVNULL,
        )
        for i, p in enumerate(paths)
    ]
    if any(p.wait() for p in procs):
        raise SystemExit("make_slide.py failed")
    return paths


def run(slides: list[Path], out: Path, workers: int, config: mc.MedCAMConfig, level: int):
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    report = run_cohort(
        slides,
        out,
        config=config,
        level=level,
        workers=workers,
        device="cpu",
        progress=False,
        log=lambda line: None,
        dashboard_address=":0",
    )
    seconds = time.perf_counter() - t
    results = [read_result(out / "slides" / sid) for sid in report.done]
    rows = [json.loads((out / "manifest.json").read_text())["slides"][sid] for sid in report.done]
    per_worker: dict[int, float] = {}
    for r in results:
        per_worker[r["pid"]] = max(per_worker.get(r["pid"], 0.0), r["peak_rss_mb"])
    return {
        "workers": workers,
        "slides": len(slides),
        "done": len(report.done),
        "failed": len(report.failed),
        "seconds": round(seconds, 1),
        "slides_per_hour": round(3600 * len(report.done) / seconds, 1),
        "slide_seconds_mean": round(sum(r["seconds"] for r in results) / len(results), 1),
        "tiles_explained": sum(r["tiles_explained"] for r in results),
        "peak_rss_mb_per_worker": sorted(per_worker.values()),
        # CPU seconds / wall seconds of the slide tasks: 1.0 = a whole core each
        "core_share": round(
            sum(r["cpu_seconds"] for r in rows) / sum(r["seconds"] for r in rows), 2
        ),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slides", type=int, default=6)
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    config = mc.MedCAMConfig.fast().capped(args.steps)
    print(machine_line(torch.device("cpu")), f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        slides = make_slides(Path(tmp), args.slides, args.size)
        rows = [run(slides, Path(tmp) / f"out{w}", w, config, args.level) for w in (1, 2)]
    print(f"load average after {os.getloadavg()}")
    base = rows[0]["slides_per_hour"]
    print(
        "| workers | slides | wall s | slides / h | speed-up | s per slide (in task) "
        "| core share per task | load average (before, after) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['done']}/{r['slides']} | {r['seconds']} | "
            f"{r['slides_per_hour']} | {r['slides_per_hour'] / base:.2f}× | "
            f"{r['slide_seconds_mean']} | {r['core_share']} | {r['load_average']} |"
        )
    for r in rows:
        print(f"peak RSS per worker ({r['workers']} worker(s)): {r['peak_rss_mb_per_worker']} MiB")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, "rows": rows}))


if __name__ == "__main__":
    main()
