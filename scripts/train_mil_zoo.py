"""Train the slide-level (MIL) zoo's aggregators (`napari_medcam.zoo.mil`) and write their weights.

    OMP_NUM_THREADS=1 python scripts/train_mil_zoo.py [--only NAME ...] [--slides N]

The encoder is frozen (the tile zoo's ``hne-modulelist`` up to its pooling); only the
aggregators are trained. The "train" tile pool (seeds 300 000+) is embedded once through
`SlideClassifier.embed`, the exact path `napari_medcam.explain` embeds a slide by; each
training slide (`synthetic_slide("train", i)`, positive when i is even) is a bag of its
tissue tiles' embeddings at their grid positions. Plain supervised MIL, as a user trains
one: slide labels only (the positive tiles' positions are never used), cross-entropy,
Adam, one bag per step, bags in a new random order each epoch. Held-out slide accuracy
is measured on 200 "eval" slides (tiles seeds 350 000+, both classes). Everything is
seeded (torch and numpy, seed 0) and runs on one CPU thread.

Writes ``src/napari_medcam/zoo/weights/<name>.pt`` (the aggregator's state dict, the
encoder's name, the training settings, the held-out accuracy), read back with
``torch.load(weights_only=True)`` by `napari_medcam.zoo.mil.load`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from napari_medcam.classifiers.slide import SlideClassifier  # noqa: E402
from napari_medcam.zoo.mil import ENCODER, MIL_ZOO, encoder, synthetic_slide, tile_pool  # noqa: E402
from napari_medcam.zoo.mil.models import MaxPoolMIL  # noqa: E402
from napari_medcam.zoo.mil.slides import TILE  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "src/napari_medcam/zoo/weights"
N_TRAIN, N_EVAL = 600, 200


def pool_embeddings(split: str) -> np.ndarray:
    """Every tile of ``split``'s pool through the frozen encoder, (M, 64)."""
    enc, mean, std = encoder()
    clf = SlideClassifier(enc, MaxPoolMIL(), tile_size=TILE, mean=mean, std=std)
    tiles = tile_pool(split).tiles
    return np.concatenate([clf.embed(tiles[i : i + 64]) for i in range(0, len(tiles), 64)])


def bags(split: str, n: int, emb: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    out = []
    for i in range(n):
        slide = synthetic_slide(split, i)
        e, grid, _ = slide.bag(emb)
        out.append((torch.from_numpy(e), torch.from_numpy(grid).float(), slide.label))
    return out


def accuracy(model: torch.nn.Module, data: list) -> float:
    model.eval()
    with torch.no_grad():
        hits = [int(model(e, g)[0].argmax()) == y for e, g, y in data]
    return float(np.mean(hits))


def train(name: str, train_set: list, eval_set: list) -> dict:
    entry = MIL_ZOO[name]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = entry.build()
    opt = torch.optim.Adam(model.parameters(), lr=entry.train["lr"], weight_decay=1e-4)
    started = time.time()
    for epoch in range(entry.train["epochs"]):
        model.train()
        losses = []
        for i in rng.permutation(len(train_set)):
            e, g, y = train_set[i]
            loss = F.cross_entropy(model(e, g)[0], torch.tensor([y]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        print(f"{name} epoch {epoch + 1}: loss {np.mean(losses):.4f}", flush=True)
    acc = accuracy(model, eval_set)
    print(f"{name}: held-out slide accuracy {acc:.3f} ({time.time() - started:.0f} s)")
    return {
        "state_dict": model.state_dict(),
        "entry": name,
        "encoder": ENCODER,
        "train": {**entry.train, "slides": len(train_set)},
        "heldout_accuracy": acc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MIL_ZOO), default=None)
    parser.add_argument("--slides", type=int, default=N_TRAIN, help="training slides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    train_emb, eval_emb = pool_embeddings("train"), pool_embeddings("eval")
    print(f"pools embedded ({time.time() - t0:.0f} s)", flush=True)
    train_set, eval_set = bags("train", args.slides, train_emb), bags("eval", N_EVAL, eval_emb)
    for name in args.only or list(MIL_ZOO):
        ckpt = train(name, train_set, eval_set)
        torch.save(ckpt, OUT / f"{name}.pt")


if __name__ == "__main__":
    main()
