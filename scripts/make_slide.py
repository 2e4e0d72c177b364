"""Write a large synthetic pyramidal TIFF slide for benchmarks and manual tests.

    python scripts/make_slide.py OUT.tif [--size 20000] [--tile 512] [--seed 0]

The slide is a periodic mosaic of a 2,048-pixel base image made of synthetic
tissue tiles (a quarter of them with a planted lesion) and white background
bands, so it has tissue to explain and glass to skip. Levels are written
tile by tile from per-level copies of the base: memory stays at a few hundred
MB whatever --size is. JPEG-compressed RGB, 512-pixel tiles, sub-IFD pyramid
down to ~1,000 pixels, like a scanner's SVS/OME-TIFF.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_medcam.data import synthetic_tile

BASE = 2048


def make_base(seed: int) -> np.ndarray:
    base = np.full((BASE, BASE, 3), 245, np.uint8)  # glass
    rng = np.random.default_rng(seed)
    step = 256
    for y in range(0, BASE - step + 1, step):
        for x in range(0, BASE - step + 1, step):
            if (y // step) % 4 == 3:  # a background band every fourth row
                continue
            label = int(rng.random() < 0.25)
            img, _ = synthetic_tile(int(rng.integers(1e9)), label, size=step)
            base[y : y + step, x : x + step] = img
    return base


def tiles(base: np.ndarray, shape: tuple[int, int], tile: int):
    """Tiles of the periodic mosaic of ``base`` over ``shape``, row by row."""
    b = base.shape[0]
    for y in range(0, shape[0], tile):
        for x in range(0, shape[1], tile):
            ys = (np.arange(y, min(y + tile, shape[0])) % b)[:, None]
            xs = (np.arange(x, min(x + tile, shape[1])) % b)[None, :]
            out = np.zeros((tile, tile, 3), np.uint8)
            out[: ys.shape[0], : xs.shape[1]] = base[ys, xs]
            yield out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="record this many µm per level-0 pixel (the synthetic tissue has no real size)",
    )
    args = ap.parse_args()
    t0 = time.time()
    base = make_base(args.seed)
    shapes = [(args.size, args.size)]
    while max(shapes[-1]) > 1024:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    bases = [base]
    for _ in shapes[1:]:
        b = bases[-1].astype(np.float32)
        bases.append(
            ((b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4).astype(np.uint8)
        )
    with tifffile.TiffWriter(args.out, bigtiff=True) as tw:
        for i, (shape, b) in enumerate(zip(shapes, bases)):
            tw.write(
                tiles(b, shape, args.tile),
                shape=(*shape, 3),
                dtype=np.uint8,
                tile=(args.tile, args.tile),
                compression="jpeg",
                photometric="rgb",
                subifds=len(shapes) - 1 if i == 0 else None,
                subfiletype=1 if i else 0,
                **(
                    {"resolution": (1e4 / args.mpp, 1e4 / args.mpp), "resolutionunit": "CENTIMETER"}
                    if args.mpp and i == 0
                    else {}
                ),
            )
    mb = args.out.stat().st_size / 2**20
    print(
        f"wrote {args.out}: {args.size}² px, {len(shapes)} levels, {mb:.0f} MiB, "
        f"{time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
