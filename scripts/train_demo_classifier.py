"""Train the demo tissue classifier shipped with napari-medcam.

    python scripts/train_demo_classifier.py [--tiles 3000] [--epochs 8]

Data: `synthetic_tile(seed, label)` tiles, seeds 100_000+ (tests and evaluations
use seeds below 100_000, so they are always fresh). Besides plain tiles, the
classifier sees the kind of inputs Med-CAM shows it: tiles where random regions
are replaced by a background (the dataset-mean colour, Gaussian or uniform noise,
a blurred copy). A positive tile keeps its whole lesion when masked, so the label
stays true; a background alone is "normal". This makes "evidence = the lesion,
whatever surrounds it" the rule the classifier learns, which is what a masking
explanation assumes of a model.

Writes src/napari_medcam/classifiers/weights/demo_tissue.pt and prints the
accuracy on 400 fresh tiles (seeds 50_000+).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_medcam.classifiers.demo import CLASS_NAMES, DemoTissueNet
from napari_medcam.data.synthetic import _blob, synthetic_tile

OUT = Path(__file__).resolve().parents[1] / "src/napari_medcam/classifiers/weights/demo_tissue.pt"


def make_set(n: int, seed0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    imgs, evid, labels = [], [], []
    for i in range(n):
        label = i % 2
        img, ev = synthetic_tile(seed0 + i, label)
        imgs.append(img)
        evid.append(ev)
        labels.append(label)
    return np.stack(imgs), np.stack(evid), np.array(labels)


def random_keep_mask(rng: np.random.Generator, evidence: np.ndarray) -> np.ndarray:
    """Random blobs, always including the whole evidence."""
    keep = evidence.copy()
    for _ in range(rng.integers(0, 4)):
        keep |= _blob(rng, evidence.shape[0], rng.uniform(0.01, 0.2))
    return keep


def augment(x: torch.Tensor, ev: np.ndarray, y: torch.Tensor, rng: np.random.Generator):
    """Mask random regions with a random background (see module docstring)."""
    x = x.clone()
    y = y.clone()
    for i in range(len(x)):
        if rng.random() < 0.5:  # flips: the task is orientation-free
            x[i] = x[i].flip(-1)
            ev[i] = ev[i][:, ::-1]
        u = rng.random()
        if u < 0.45:
            continue
        kind = rng.integers(0, 4)
        if kind == 0:
            bg = torch.zeros_like(x[i])
        elif kind == 1:
            bg = torch.randn_like(x[i])
        elif kind == 2:
            bg = torch.rand_like(x[i]) * 2 - 1
        else:
            bg = F.avg_pool2d(x[i][None], 31, 1, 15, count_include_pad=False)[0]
        if u < 0.55:  # background only
            x[i] = bg
            y[i] = 0
            continue
        keep = torch.from_numpy(random_keep_mask(rng, ev[i]).copy())
        x[i] = torch.where(keep, x[i], bg)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--tiles", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.time()
    imgs, evid, labels = make_set(args.tiles, 100_000)
    unit = imgs.astype(np.float32) / 255
    # float64: a float32 sum over ~10^8 values loses whole units
    mean = unit.mean((0, 1, 2), dtype=np.float64).astype(np.float32)
    std = unit.std((0, 1, 2), dtype=np.float64).astype(np.float32)
    print(
        f"{len(imgs)} tiles in {time.time() - t0:.0f} s; mean {mean.round(3)}, std {std.round(3)}"
    )
    xs = torch.from_numpy((unit - mean) / std).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(labels)
    net = DemoTissueNet(width=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * (len(xs) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xs))
        net.train()
        tot, correct = 0.0, 0
        for b in range(len(xs) // 32):
            idx = perm[b * 32 : (b + 1) * 32]
            xb, yb = augment(xs[idx], evid[idx.numpy()].copy(), ys[idx], rng)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        print(
            f"epoch {epoch + 1}: loss {tot / len(xs):.4f}, train acc {correct / len(xs):.3f} "
            f"({time.time() - t0:.0f} s)"
        )
    net.eval()
    ti, _, tl = make_set(400, 50_000)
    tx = torch.from_numpy((ti.astype(np.float32) / 255 - mean) / std).permute(0, 3, 1, 2)
    with torch.no_grad():
        acc = float((net(tx).argmax(1).numpy() == tl).mean())
        bgs = torch.cat([torch.zeros(1, 3, 224, 224), torch.randn(4, 3, 224, 224)])
        p_bg = torch.softmax(net(bgs), 1)[:, 1].numpy()
    print(f"held-out accuracy {acc:.4f}; p(lesion | backgrounds) {p_bg.round(3)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "width": args.width,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "class_names": list(CLASS_NAMES),
            "input_size": [224, 224],
            "heldout_accuracy": acc,
        },
        args.out,
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
