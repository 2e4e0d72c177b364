"""Train the IHC DAB-positive patch classifier used by the evaluation (issue 4).

    python scripts/train_ihc_classifier.py [--crops 6000] [--epochs 10]

Data: 64×64 crops of scikit-image's immunohistochemistry image, from its LEFT half
only (columns 0–255); the right half is held out for the evaluation. A crop is
labelled by its share of the DAB reference mask (colour deconvolution, see
`napari_medcam.classifiers.ihc`): positive ≥ 15 %, negative ≤ 2 %, ambiguous crops
in between are skipped. Augmentation: the eight flips/rotations, a mild per-channel
brightness jitter, and - as for the demo classifier - crops whose non-kept part is
replaced by a background (dataset-mean colour, Gaussian or uniform noise, a blurred
copy). A positive crop always keeps all its DAB-positive pixels, so its label stays
true; a background alone is negative. Without that, the dataset-mean colour (a
light brown) is itself called positive and masking explanations have no neutral
baseline (docs/method.md).

Writes src/napari_medcam/classifiers/weights/ihc_dab.pt and prints the accuracy on
every unambiguous 64×64 crop of the held-out right half (stride 16).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_medcam.classifiers.ihc import (
    CLASS_NAMES,
    EVAL_COLS,
    PATCH,
    TRAIN_COLS,
    IHCNet,
    dab_reference,
    ihc_image,
    patch_label,
)
from napari_medcam.data.synthetic import _blob

OUT = Path(__file__).resolve().parents[1] / "src/napari_medcam/classifiers/weights/ihc_dab.pt"


def crops(
    img: np.ndarray, ref: np.ndarray, cols: tuple[int, int], positions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, rs, ys = [], [], []
    for r, c in positions:
        assert cols[0] <= c and c + PATCH <= cols[1]
        rp = ref[r : r + PATCH, c : c + PATCH]
        label = patch_label(rp)
        if label is None:
            continue
        xs.append(img[r : r + PATCH, c : c + PATCH])
        rs.append(rp)
        ys.append(label)
    return np.stack(xs), np.stack(rs), np.array(ys)


def augment(x: torch.Tensor, ref: np.ndarray, y: torch.Tensor, rng: np.random.Generator):
    x, y = x.clone(), y.clone()
    for i in range(len(x)):
        k = int(rng.integers(0, 4))
        keep_ref = torch.from_numpy(np.ascontiguousarray(ref[i]))
        x[i], keep_ref = x[i].rot90(k, (1, 2)), keep_ref.rot90(k, (0, 1))
        if rng.random() < 0.5:
            x[i], keep_ref = x[i].flip(-1), keep_ref.flip(-1)
        x[i] = x[i] * torch.from_numpy(rng.uniform(0.93, 1.07, (3, 1, 1)).astype(np.float32))
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
            bg = F.avg_pool2d(x[i][None], 15, 1, 7, count_include_pad=False)[0]
        if u < 0.55:  # background only
            x[i], y[i] = bg, 0
            continue
        keep = keep_ref.clone() if y[i] == 1 else torch.zeros_like(keep_ref)
        for _ in range(rng.integers(0, 4)):
            keep |= torch.from_numpy(_blob(rng, PATCH, rng.uniform(0.02, 0.2)))
        x[i] = torch.where(keep, x[i], bg)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.time()
    img, ref = ihc_image(), dab_reference()
    pos = zip(
        rng.integers(0, img.shape[0] - PATCH + 1, args.crops),
        rng.integers(TRAIN_COLS[0], TRAIN_COLS[1] - PATCH + 1, args.crops),
    )
    imgs, refs, labels = crops(img, ref, TRAIN_COLS, pos)
    counts = np.bincount(labels, minlength=2)
    # balance the classes by repeating the rarer one
    idx = [np.flatnonzero(labels == c) for c in (0, 1)]
    n = max(len(i) for i in idx)
    idx = np.concatenate([rng.choice(i, n, replace=len(i) < n) for i in idx])
    imgs, refs, labels = imgs[idx], refs[idx], labels[idx]
    unit = imgs.astype(np.float32) / 255
    mean = unit.mean((0, 1, 2), dtype=np.float64).astype(np.float32)
    std = unit.std((0, 1, 2), dtype=np.float64).astype(np.float32)
    print(
        f"{len(imgs)} crops (balanced from {counts[0]} negative, {counts[1]} positive) "
        f"in {time.time() - t0:.0f} s; "
        f"mean {mean.round(3)}, std {std.round(3)}"
    )
    xs = torch.from_numpy((unit - mean) / std).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(labels)
    net = IHCNet(width=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * (len(xs) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xs))
        net.train()
        tot, correct = 0.0, 0
        for b in range(len(xs) // 32):
            i = perm[b * 32 : (b + 1) * 32]
            xb, yb = augment(xs[i], refs[i.numpy()], ys[i], rng)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(i)
            correct += int((out.argmax(1) == yb).sum())
        print(
            f"epoch {epoch + 1}: loss {tot / len(xs):.4f}, train acc {correct / len(xs):.3f} "
            f"({time.time() - t0:.0f} s)"
        )
    net.eval()
    grid = [
        (r, c)
        for r in range(0, img.shape[0] - PATCH + 1, 16)
        for c in range(EVAL_COLS[0], EVAL_COLS[1] - PATCH + 1, 16)
    ]
    ti, _, tl = crops(img, ref, EVAL_COLS, grid)
    tx = torch.from_numpy((ti.astype(np.float32) / 255 - mean) / std).permute(0, 3, 1, 2)
    with torch.no_grad():
        pred = net(tx).argmax(1).numpy()
        acc = float((pred == tl).mean())
        bgs = torch.cat([torch.zeros(1, 3, PATCH, PATCH), torch.randn(4, 3, PATCH, PATCH)])
        p_bg = torch.softmax(net(bgs), 1)[:, 1].numpy()
    sens = float((pred[tl == 1] == 1).mean())
    spec = float((pred[tl == 0] == 0).mean())
    print(
        f"held-out (right half, {len(tl)} crops: {int((tl == 1).sum())} pos) accuracy {acc:.4f} "
        f"(sensitivity {sens:.3f}, specificity {spec:.3f}); "
        f"p(positive | backgrounds) {p_bg.round(3)}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "width": args.width,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "class_names": list(CLASS_NAMES),
            "input_size": [PATCH, PATCH],
            "heldout_accuracy": acc,
            "heldout_sensitivity": sens,
            "heldout_specificity": spec,
        },
        args.out,
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
