"""Peak memory of the CLI explaining large pyramidal slides, as a separate process.

    python benchmarks/slide_memory.py [--sizes 20000 40000] [--jobs region coarse level0]
                                      [--level0-steps 3] [--keep DIR]

For each size, makes a synthetic pyramidal TIFF (scripts/make_slide.py), then runs
`napari-medcam explain` on (region) a 2,048 × 2,048 region at level 0, (coarse) the
whole slide at the level nearest 2,000 pixels a side, and, when asked, (level0) the
whole slide at full resolution with ``--steps`` capped (a memory measurement only:
tens of thousands of tiles at the full preset take hours on a CPU; memory does not
depend on the step count). Reports the peak resident memory of each run (sampled
every 50 ms with psutil, children included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(cmd: list[str]) -> tuple[float, float, int, str]:
    """(peak MiB, seconds, exit code, stdout) of a command.

    Its output goes to temporary files, not pipes: a command that writes more than a
    pipe holds (64 KiB of warnings or progress) would otherwise block for ever while
    this loop only polls.
    """
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        text = out.read() or err.read()
    return peak / 2**20, time.perf_counter() - t, proc.returncode, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 40_000])
    ap.add_argument(
        "--jobs", nargs="+", choices=["region", "coarse", "level0"], default=["region", "coarse"]
    )
    ap.add_argument("--level0-steps", type=int, default=3, help="--steps of the level0 job")
    ap.add_argument("--keep", type=Path, help="folder for the slides (default: a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "napari_medcam.cli", "explain"]
    print("| slide | job | mask | peak RSS | seconds | result |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        slide = work / f"slide_{size}.tif"
        if not slide.exists():
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts/make_slide.py"),
                    str(slide),
                    "--size",
                    str(size),
                ],
                check=True,
            )
        jobs = {
            "region": (
                "2,048² region at level 0",
                ["--level", "0", "--region", "4096,4096,2048,2048"],
            ),
            "coarse": ("whole slide, level ≈ 2,000 px", ["--level", str(_level_near(slide, 2000))]),
            "level0": (
                f"whole slide, level 0, {args.level0_steps} steps (memory only)",
                ["--level", "0", "--steps", str(args.level0_steps)],
            ),
        }
        for job in args.jobs:
            name, extra = jobs[job]
            out = work / f"mask_{size}_{job}.tif"
            mib, secs, code, text = peak_rss(
                [*cli, str(slide), *extra, "--out", str(out), "--json", "--overwrite"]
            )
            if code == 0:
                summary = json.loads(text)
                res = f"{summary['class_name']}, {summary['status']}"
                shape = "×".join(map(str, summary["shape"]))
            else:
                res, shape = f"exit {code}: {text.strip()[-80:]}", "–"
            print(
                f"| {size:,}² | {name} | {shape} | {mib:,.0f} MiB | {secs:.0f} | {res} |",
                flush=True,
            )


def _level_near(path: Path, side: int) -> int:
    from napari_medcam.io.slides import open_slide

    with open_slide(path) as slide:
        sides = [max(a.shape[:2]) for a in slide.levels]
    return min(range(len(sides)), key=lambda i: abs(sides[i] - side))


if __name__ == "__main__":
    main()
