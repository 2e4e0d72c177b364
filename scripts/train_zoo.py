"""Train the classifiers of the zoo (`napari_medcam.zoo`) and write their weights.

    OMP_NUM_THREADS=1 python scripts/train_zoo.py [--only/--entries NAME ...] [--epochs N]

For every entry: the training set is regenerated from the entry's own generator
(``sample(seed, label, "train")``, seeds 100 000+, labels taking turns; real-image
entries crop the training part of their image), plus the extra examples an entry
may define (``extra_training``: only ``resnet-meanpos``, see there). Training is
plain supervised learning, as a user would train a classifier: random flips and
quarter turns (where the entry allows them), a small per-channel brightness jitter,
cross-entropy, AdamW with a one-cycle schedule. Inputs are normalised as the entry
says (``TRAIN["norm"]``): the training set's per-channel mean/std (the default),
ImageNet's (``"imagenet"``), or a fixed ``(mean, std)`` window for every channel.
Unlike the demo classifiers' training, there is NO masking augmentation: the zoo is
meant to show how the explanation recipe fares on classifiers it was not made for.

Held-out accuracy is measured on the "eval" split (seeds 50 000+, or the held-out
part of a real image), both classes, and printed with the sensitivity for the target
class and p(target) for the dataset-mean input (zeros in normalised space). Everything
is seeded (torch and numpy, seed 0) and runs on one CPU thread.

Writes ``src/napari_medcam/zoo/weights/<name>.pt`` (state dict + input size, mean/std,
class names, width, held-out accuracy), read back with ``torch.load(weights_only=True)``.
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

from napari_medcam.zoo import MODULES, ZOO  # noqa: E402
from napari_medcam.zoo._common import IMAGENET_MEAN, IMAGENET_STD, SEED0  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "src/napari_medcam/zoo/weights"
DEFAULTS = {"batch": 32, "lr": 3e-3, "rot90": True, "flips": True, "jitter": 0.04}
DEFAULTS.update({"norm": "data", "n_eval": 200, "weight_decay": 1e-4})


def make_set(mod, split: str, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``split`` (labels taking turns) as uint8 (N, H, W, C), and labels."""
    imgs, labels = [], []
    for i in range(n):
        label = i % num_classes
        img, _ = mod.sample(SEED0[split] + i, label, split)
        imgs.append(img if img.ndim == 3 else img[..., None])
        labels.append(label)
    return np.stack(imgs), np.array(labels)


def augment(x: torch.Tensor, rng: np.random.Generator, cfg: dict) -> torch.Tensor:
    """Flips, quarter turns and a per-channel brightness jitter, in [0, 1] space."""
    x = x.clone()
    for i in range(len(x)):
        if cfg["rot90"]:
            x[i] = x[i].rot90(int(rng.integers(0, 4)), (1, 2))
        if cfg["flips"] and rng.random() < 0.5:
            x[i] = x[i].flip(-1)
        if cfg["jitter"]:
            j = cfg["jitter"]
            gain = rng.uniform(1 - j, 1 + j, (x.shape[1], 1, 1)).astype(np.float32)
            x[i] = x[i] * torch.from_numpy(gain) + float(rng.uniform(-j, j)) / 2
    return x.clamp(0, 1)


def train_one(name: str, epochs: int | None, out_dir: Path) -> dict:
    mod, entry = MODULES[name], ZOO[name]
    cfg = {**DEFAULTS, **mod.TRAIN}
    if epochs is not None:
        cfg["epochs"] = epochs
    nc = len(entry.class_names)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.time()
    imgs, labels = make_set(mod, "train", cfg["n"], nc)
    if hasattr(mod, "extra_training"):
        more, more_labels = mod.extra_training(imgs, labels, rng)
        imgs, labels = np.concatenate([imgs, more]), np.concatenate([labels, more_labels])
    unit = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255)
    if cfg["norm"] == "imagenet":
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    elif isinstance(cfg["norm"], tuple):  # a fixed window (mean, std), the same per channel
        mean = np.full(unit.shape[1], float(cfg["norm"][0]))
        std = np.full(unit.shape[1], float(cfg["norm"][1]))
    else:  # float64: a float32 sum over ~10^8 values loses whole units
        mean = unit.double().mean((0, 2, 3)).numpy()
        std = unit.double().std((0, 2, 3)).numpy()
    m_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    ys = torch.from_numpy(labels).long()
    print(
        f"[{name}] {len(unit)} training images {tuple(unit.shape[1:])}, "
        f"class counts {np.bincount(labels, minlength=nc).tolist()}, "
        f"mean {np.round(mean, 3).tolist()}, std {np.round(std, 3).tolist()} "
        f"({time.time() - t0:.0f} s)",
        flush=True,
    )
    net = mod.build(width=cfg["width"], num_classes=nc)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    per_epoch = len(unit) // cfg["batch"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg["lr"], total_steps=cfg["epochs"] * per_epoch
    )
    for epoch in range(cfg["epochs"]):
        net.train()
        perm = torch.randperm(len(unit))
        tot, correct = 0.0, 0
        for b in range(per_epoch):
            idx = perm[b * cfg["batch"] : (b + 1) * cfg["batch"]]
            xb = (augment(unit[idx], rng, cfg) - m_t) / s_t
            out = net(xb)
            loss = F.cross_entropy(out, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == ys[idx]).sum())
        n_seen = per_epoch * cfg["batch"]
        print(
            f"[{name}] epoch {epoch + 1}/{cfg['epochs']}: loss {tot / n_seen:.4f}, "
            f"train acc {correct / n_seen:.3f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
    train_s = time.time() - t0
    net.eval()
    ev_imgs, ev_labels = make_set(mod, "eval", cfg["n_eval"] * nc, nc)
    ex = (torch.from_numpy(ev_imgs).permute(0, 3, 1, 2).float() / 255 - m_t) / s_t
    with torch.no_grad():
        pred = torch.cat([net(ex[i : i + 64]) for i in range(0, len(ex), 64)]).argmax(1).numpy()
        p_mean = torch.softmax(net(torch.zeros(1, *ex.shape[1:])), 1)[0].numpy()
    acc = float((pred == ev_labels).mean())
    t = entry.target
    sens = float((pred[ev_labels == t] == t).mean())
    per_class = [float((pred[ev_labels == c] == c).mean()) for c in range(nc)]
    print(
        f"[{name}] held-out accuracy {acc:.4f} on {len(ev_labels)} eval images "
        f"(per class {[round(a, 3) for a in per_class]}; sensitivity for "
        f"{entry.class_names[t]!r} {sens:.3f}); p(classes | mean input) "
        f"{[round(float(p), 3) for p in p_mean]}; trained in {train_s:.0f} s",
        flush=True,
    )
    wanted = getattr(mod, "MEAN_INPUT_CLASS", None)
    if wanted is not None and int(np.argmax(p_mean)) != wanted:
        print(f"[{name}] WARNING: the mean input is not {entry.class_names[wanted]!r}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.pt"
    torch.save(
        {
            "state_dict": net.state_dict(),
            "width": cfg["width"],
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "class_names": list(entry.class_names),
            "input_size": list(entry.input_size),
            "heldout_accuracy": acc,
            "heldout_per_class": per_class,
            "p_mean_input": [float(p) for p in p_mean],
            "train_seconds": train_s,
        },
        path,
    )
    print(f"[{name}] wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return {"name": name, "accuracy": acc, "seconds": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--only", "--entries", nargs="+", choices=sorted(MODULES), help="entries to train"
    )
    ap.add_argument("--epochs", type=int, default=None, help="override every entry's epochs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [train_one(name, args.epochs, args.out) for name in (args.only or list(MODULES))]
    for r in results:
        print(f"{r['name']:20s} held-out accuracy {r['accuracy']:.4f}  ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
