"""Train the demo volume classifier shipped with napari-medcam.

    OMP_NUM_THREADS=1 python scripts/train_demo3d_classifier.py [--volumes 2400] [--epochs 8]

Data: `synthetic_volume(seed, label)` volumes (32³), seeds 100_000+ (tests and
evaluations use seeds below 100_000, so they are always fresh). As for the demo
tissue classifier (scripts/train_demo_classifier.py), the classifier also sees the
kind of inputs Med-CAM shows it: volumes where random regions are replaced by a
background (the dataset-mean intensity, Gaussian or uniform noise, a blurred
copy). A lesion volume keeps its whole lesion when masked, so the label stays
true; a background alone is "normal". This makes "evidence = the lesion, whatever
surrounds it" the rule the classifier learns, which is what a masking explanation
assumes of a model. Volumes are also flipped and their axes permuted (the task has
no orientation). Every convolution kernel is kept mirror-symmetric along each
axis during training (a weight parametrisation; the saved weights are plain,
symmetric kernels), which makes the network exactly equivariant to flips: its
feature maps, Grad-CAM and Med-CAM masks then have no built-in direction bias
(with free kernels, evidence maps came out shifted by 1-2 voxels towards one side).

Writes src/napari_medcam/classifiers/weights/demo_volume.pt and prints the
accuracy on 400 fresh volumes (seeds 50_000+). About 5 minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from napari_medcam.classifiers.demo3d import CLASS_NAMES, INPUT_SIZE, DemoVolumeNet
from napari_medcam.data.volumes import _lesion_region, synthetic_volume

OUT = Path(__file__).resolve().parents[1] / "src/napari_medcam/classifiers/weights/demo_volume.pt"
SIZE = INPUT_SIZE[0]
BATCH = 32


class MirrorSymmetric(nn.Module):
    """Weight parametrisation: a kernel averaged with its mirror images along every axis."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        for axis in range(2, w.ndim):
            w = (w + w.flip(axis)) / 2
        return w


def make_set(n: int, seed0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vols, lesions, labels = [], [], []
    for i in range(n):
        label = i % 2
        vol, lesion = synthetic_volume(seed0 + i, label, SIZE)
        vols.append(vol)
        lesions.append(lesion)
        labels.append(label)
    return np.stack(vols), np.stack(lesions), np.array(labels)


def blob_bank(rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """Random irregular blobs (1-20 % of the volume), reused with random shifts and flips."""
    return np.stack([_lesion_region(rng, SIZE, rng.uniform(0.01, 0.2))[0] for _ in range(n)])


def random_keep_mask(rng: np.random.Generator, lesion: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Random blobs, always including the whole lesion."""
    keep = lesion.copy()
    for _ in range(rng.integers(0, 4)):
        blob = bank[rng.integers(len(bank))]
        blob = np.roll(blob, tuple(rng.integers(-SIZE // 3, SIZE // 3 + 1, 3)), axis=(0, 1, 2))
        keep |= blob[tuple(slice(None, None, rng.choice([-1, 1])) for _ in range(3))]
    return keep


def augment(
    x: torch.Tensor, lesion: np.ndarray, y: torch.Tensor, rng: np.random.Generator, bank
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip / permute axes, then mask random regions with a random background."""
    x = x.clone()
    y = y.clone()
    for i in range(len(x)):
        perm = rng.permutation(3)
        flips = [int(a) for a in np.nonzero(rng.random(3) < 0.5)[0]]
        x[i, 0] = x[i, 0].permute(*perm.tolist()).flip(flips)
        lesion[i] = np.flip(lesion[i].transpose(perm), flips)
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
            bg = F.avg_pool3d(x[i][None], 5, 1, 2, count_include_pad=False)[0]
        if u < 0.55:  # background only
            x[i] = bg
            y[i] = 0
            continue
        keep = torch.from_numpy(random_keep_mask(rng, lesion[i], bank))
        x[i] = torch.where(keep, x[i], bg)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--volumes", type=int, default=2400)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.time()
    vols, lesions, labels = make_set(args.volumes, 100_000)
    bank = blob_bank(rng)
    mean = float(vols.mean(dtype=np.float64))
    std = float(vols.std(dtype=np.float64))
    print(f"{len(vols)} volumes in {time.time() - t0:.0f} s; mean {mean:.4f}, std {std:.4f}")
    xs = torch.from_numpy((vols - mean) / std)[:, None].contiguous()
    ys = torch.from_numpy(labels)
    net = DemoVolumeNet(width=args.width)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    for conv in convs:
        parametrize.register_parametrization(conv, "weight", MirrorSymmetric())
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    per_epoch = len(xs) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=args.epochs * per_epoch)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xs))
        net.train()
        tot, correct = 0.0, 0
        for b in range(per_epoch):
            idx = perm[b * BATCH : (b + 1) * BATCH]
            xb, yb = augment(xs[idx], lesions[idx.numpy()].copy(), ys[idx], rng, bank)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        n = per_epoch * BATCH
        print(
            f"epoch {epoch + 1}: loss {tot / n:.4f}, train acc {correct / n:.3f} "
            f"({time.time() - t0:.0f} s)"
        )
    for conv in convs:  # plain (symmetric) weights in the checkpoint
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    net.eval()
    tv, _, tl = make_set(400, 50_000)
    tx = torch.from_numpy((tv - mean) / std)[:, None]
    with torch.no_grad():
        acc = float((net(tx).argmax(1).numpy() == tl).mean())
        bgs = torch.cat(
            [
                torch.zeros(1, 1, *INPUT_SIZE),
                torch.randn(2, 1, *INPUT_SIZE),
                torch.rand(2, 1, *INPUT_SIZE) * 2 - 1,
            ]
        )
        p_bg = torch.softmax(net(bgs), 1)[:, 1].numpy()
    print(f"held-out accuracy {acc:.4f}; p(lesion | backgrounds) {p_bg.round(3)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "width": args.width,
            "mean": [mean],
            "std": [std],
            "class_names": list(CLASS_NAMES),
            "input_size": list(INPUT_SIZE),
            "heldout_accuracy": acc,
        },
        args.out,
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
