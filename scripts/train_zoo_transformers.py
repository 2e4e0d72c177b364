"""Train the transformer entries of the zoo (issue 22) and write their weights.

    OMP_NUM_THREADS=1 python scripts/train_zoo_transformers.py [--only NAME ...]

Same protocol as ``scripts/train_zoo.py`` (whose data and augmentation functions it uses):
the training set regenerated from the entry's generator (seeds 100 000+, labels taking
turns), flips / quarter turns / a small brightness jitter, cross-entropy, AdamW with a
one-cycle schedule, no masking augmentation, ImageNet normalisation; held-out accuracy on
the "eval" split (seeds 50 000+). Transformers trained from scratch get AdamW's usual
weight decay for ViTs (0.05) and gradients clipped at norm 1.

``frozen-backbone-head`` is trained as a foundation model is used: its backbone first, with
a temporary linear head, on another task (``PRETRAIN`` of `napari_medcam.zoo.frozen_head`),
then frozen; only the final linear head is trained on the target.

Everything is seeded (torch and numpy, seed 0) and runs on one CPU thread. Writes
``src/napari_medcam/zoo/weights/<name>.pt`` in ``train_zoo.py``'s format.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_zoo import DEFAULTS, OUT, augment, make_set  # noqa: E402

from napari_medcam.zoo import frozen_head, swin_like, vit_cls, vit_registers  # noqa: E402
from napari_medcam.zoo._common import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

ENTRIES = {m.ENTRY.name: m for m in (vit_cls, vit_registers, swin_like, frozen_head)}
MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, -1, 1, 1)
CLIP = 1.0


def unit_set(mod, split: str, n: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of ``split`` in [0, 1] (N, C, H, W) and their labels."""
    imgs, labels = make_set(mod, split, n, num_classes)
    unit = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255)
    return unit, torch.from_numpy(labels).long()


def fit(
    net: nn.Module,
    trained: list[nn.Parameter],
    data: tuple[torch.Tensor, torch.Tensor],
    cfg: dict,
    tag: str,
) -> float:
    """Train ``trained`` (the rest of ``net`` stays as it is) on ``data``; seconds taken."""
    unit, ys = data
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(trained, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    per_epoch = len(unit) // cfg["batch"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg["lr"], total_steps=cfg["epochs"] * per_epoch
    )
    t0 = time.time()
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(len(unit))
        tot, correct = 0.0, 0
        for b in range(per_epoch):
            idx = perm[b * cfg["batch"] : (b + 1) * cfg["batch"]]
            out = net((augment(unit[idx], rng, cfg) - MEAN) / STD)
            loss = F.cross_entropy(out, ys[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, CLIP)
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == ys[idx]).sum())
        seen = per_epoch * cfg["batch"]
        print(
            f"[{tag}] epoch {epoch + 1}/{cfg['epochs']}: loss {tot / seen:.4f}, "
            f"train acc {correct / seen:.3f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
    return time.time() - t0


def accuracy(net: nn.Module, mod, n_per_class: int, num_classes: int) -> tuple[float, list[float]]:
    """Accuracy on the eval split (both / all classes) and per class."""
    unit, ys = unit_set(mod, "eval", n_per_class * num_classes, num_classes)
    net.eval()
    with torch.no_grad():
        x = (unit - MEAN) / STD
        pred = torch.cat([net(x[i : i + 64]) for i in range(0, len(x), 64)]).argmax(1)
    per_class = [float((pred[ys == c] == c).float().mean()) for c in range(num_classes)]
    return float((pred == ys).float().mean()), per_class


def pretrain_backbone(mod, width: int) -> tuple[nn.Module, dict]:
    """The backbone of ``frozen-backbone-head`` trained on its own task, then frozen."""
    pre = {**DEFAULTS, **mod.PRETRAIN}
    gen, nc = pre["generator"], len(pre["classes"])
    net = nn.Sequential(mod.backbone(width), nn.Linear(width, nc))
    data = unit_set(gen, "train", pre["n"], nc)
    seconds = fit(net, list(net.parameters()), data, pre, "pretrain")
    acc, per_class = accuracy(net, gen, DEFAULTS["n_eval"], nc)
    print(f"[pretrain] {gen.ENTRY.name} task: eval accuracy {acc:.4f} {per_class}", flush=True)
    backbone = net[0]
    backbone.requires_grad_(False).eval()
    info = {"task": f"{gen.ENTRY.name}: {' / '.join(pre['classes'])}", "accuracy": acc}
    return backbone, {**info, "seconds": seconds}


def train_one(name: str, out_dir: Path) -> dict:
    mod, entry = ENTRIES[name], ENTRIES[name].ENTRY
    cfg = {**DEFAULTS, **mod.TRAIN}
    nc = len(entry.class_names)
    torch.manual_seed(0)
    net = mod.build(width=cfg["width"], num_classes=nc)
    extra: dict = {}
    if hasattr(mod, "PRETRAIN"):
        backbone, extra["pretrain"] = pretrain_backbone(mod, cfg["width"])
        net[0].load_state_dict(backbone.state_dict())
        net[0].requires_grad_(False)
    trained = [p for p in net.parameters() if p.requires_grad]
    net.train()
    if hasattr(mod, "PRETRAIN"):
        net[0].eval()  # frozen: no dropout or statistics change in it
    data = unit_set(mod, "train", cfg["n"], nc)
    print(f"[{name}] {sum(p.numel() for p in trained)} trained parameters", flush=True)
    seconds = fit(net, trained, data, cfg, name)
    acc, per_class = accuracy(net, mod, cfg["n_eval"], nc)
    print(f"[{name}] held-out accuracy {acc:.4f} (per class {per_class})", flush=True)
    net.requires_grad_(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.pt"
    torch.save(
        {
            "state_dict": net.state_dict(),
            "width": cfg["width"],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "class_names": list(entry.class_names),
            "input_size": list(entry.input_size),
            "heldout_accuracy": acc,
            "heldout_per_class": per_class,
            "train_seconds": seconds,
            **extra,
        },
        path,
    )
    print(f"[{name}] wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return {"name": name, "accuracy": acc, "per_class": per_class, "seconds": seconds, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(ENTRIES), help="entries to train")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [train_one(name, args.out) for name in (args.only or list(ENTRIES))]
    for r in results:
        print(f"{r['name']:22s} held-out accuracy {r['accuracy']:.4f}  ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
