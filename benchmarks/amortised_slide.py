"""An amortised explainer on a whole synthetic slide: time, peak memory, valid tiles.

    python benchmarks/amortised_slide.py --explainer demo [--size 4096] [--seed 0]
        [--refine 0 20] [--out benchmarks/records/amortised_slide.json]

Makes ``scripts/make_slide.py --size S --seed N`` (seed 0 is held out from every
explainer fit: the fitting slides use seeds ≥ 1), then runs ``napari-medcam explain
SLIDE --level 0 --explainer E [--refine R] --json`` as a separate process for each
``--refine`` value, sampling its peak resident memory (`slide_memory.peak_rss`), and
reads the tile counts from the result's provenance: tissue tiles explained, valid,
failed by the amortised pass, refined, fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from _common import machine_line
from slide_memory import ROOT, peak_rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--explainer", default="demo")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 20])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "slide.tif"
        make = [sys.executable, str(ROOT / "scripts/make_slide.py"), str(slide)]
        peak_rss([*make, "--size", str(args.size), "--seed", str(args.seed)])
        for refine in args.refine:
            out = Path(tmp) / f"mask-{refine}.tif"
            cmd = [sys.executable, "-m", "napari_medcam.cli", "explain", str(slide)]
            cmd += ["--level", "0", "--explainer", args.explainer, "--refine", str(refine)]
            cmd += ["--out", str(out), "--json", "--device", "cpu"]
            mib, seconds, code, stdout = peak_rss(cmd)
            if code:
                raise SystemExit(f"explain failed ({code}): {stdout[-2000:]}")
            summary = json.loads(stdout.strip().splitlines()[-1])
            facts = summary["provenance"]["explainer"]
            verdicts = summary.get("tile_verdicts") or []
            row = {
                "refine": refine,
                "seconds": round(seconds, 1),
                "peak_rss_mib": round(mib),
                "tiles_explained": facts["tiles_explained"],
                "tiles_valid": sum(bool(v["valid"]) for v in verdicts),
                **{k: v for k, v in facts.items() if k.startswith("tiles_")},
                "valid": summary.get("valid"),
            }
            print(row, flush=True)
            rows.append(row)
    result = {
        "machine": machine_line(torch.device("cpu")),
        "explainer": args.explainer,
        "slide": f"make_slide.py --size {args.size} --seed {args.seed}",
        "rows": rows,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
