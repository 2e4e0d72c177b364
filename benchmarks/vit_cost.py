"""What explaining a foundation-model-sized classifier costs: a ViT-B/16 on one 224² tile.

    python benchmarks/vit_cost.py [--threads 2] [--steps N] [--device cpu]

The classifier is ViT-B/16 in timm's layout (`napari_medcam.zoo._vit.VisionTransformer`:
768 wide, 12 blocks, 12 heads, MLP ×4, class token; 86 M parameters) with random weights
(seeded) and a two-class head: the cost of an explanation depends on the model's size and
the recipe, not on what the weights learnt. It explains one synthetic H&E tile with the
default recipe (`MedCAMConfig.fast()`), or with at most ``--steps`` optimisation steps
(`MedCAMConfig.capped`), in which case the full recipe's time is extrapolated from the
seconds per step and the run says so.

Measured in one process: one forward+backward pass of one input and of the recipe's batch
per step (the masked input on the absence plus ``n_perturbations`` perturbations); the
activations torch keeps for the backward pass of that batch (summed over the tensors saved
by autograd: what grows with the batch); the parameters; the peak resident memory of the
process during the explanation (sampled every 20 ms, and the kernel's ``ru_maxrss``); the
seconds, steps and ratio to one forward+backward. On a GPU, torch's own peak allocation too.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import numpy as np
import psutil
import torch
from _common import machine_line, timed

import napari_medcam as mc
from napari_medcam.classifiers.prepare import prepare_input, resolve_device
from napari_medcam.zoo._vit import VisionTransformer

GIB = 1024**3
LAPTOP = 16 * GIB


def vit_b16() -> torch.nn.Module:
    """ViT-B/16 at 224² (86 M parameters), random weights, timm's layout."""
    torch.manual_seed(0)
    return VisionTransformer(224, 16, 768, depth=12, num_heads=12, num_classes=2, mlp_ratio=4.0)


class PeakRSS:
    """The process's peak resident memory while the block runs, sampled in a thread."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._proc = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def saved_activation_bytes(clf: mc.Classifier, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``x`` (the input needs
    a gradient, as the mask's does; the frozen weights do not)."""
    total = 0
    seen = {p.untyped_storage().data_ptr() for p in clf.module.parameters()}  # not weights

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        clf.module(x.clone().requires_grad_(True))[:, 0].sum()
    return total


def timed_explanation(
    image: np.ndarray, clf: mc.Classifier, config: mc.MedCAMConfig, dev: torch.device
) -> tuple[mc.Explanation, list[float]]:
    """The explanation, and the seconds between consecutive optimisation steps."""
    gen = mc.iter_explain(image, clf, config=config, device=dev)
    stamps: list[tuple[int, float]] = []
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            exp = stop.value
            break
        if event.stage == "optimise":
            stamps.append((event.step, time.perf_counter()))
    gaps = [t1 - t0 for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]) if s1 == s0 + 1]
    return exp, gaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--steps", type=int, default=None, help="cap the optimisation steps")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    rss0 = psutil.Process().memory_info().rss
    clf = mc.Classifier(vit_b16(), input_size=(224, 224), class_names=["normal", "lesion"]).to(dev)
    params = sum(p.numel() for p in clf.module.parameters())
    image = mc.synthetic_tile(20_000, 1)[0]
    config = mc.MedCAMConfig.fast()
    if args.steps:
        config = config.capped(args.steps)
    per_step = 1 + config.n_perturbations
    x = prepare_input(image, clf).to(dev)

    def fwd_bwd(batch: int) -> None:
        xi = x.repeat(batch, 1, 1, 1).requires_grad_(True)
        clf.module(xi)[:, 0].sum().backward()

    fwd_bwd(1)  # warm-up
    t_one, t_batch = timed(lambda: fwd_bwd(1), 5), timed(lambda: fwd_bwd(per_step), 5)
    act_one = saved_activation_bytes(clf, x)
    act_batch = saved_activation_bytes(clf, x.repeat(per_step, 1, 1, 1))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = psutil.Process().memory_info().rss
    with PeakRSS() as peak:
        exp, step_times = timed_explanation(image, clf, config, dev)
    torch_peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(machine_line(dev))
    print(f"ViT-B/16 at 224²: {params / 1e6:.1f} M parameters ({params * 4 / GIB:.2f} GiB)")
    print(f"one forward+backward: {t_one:.2f} s (1 input), {t_batch:.2f} s ({per_step} inputs)")
    print(
        f"activations saved for backward: {act_one / GIB:.2f} GiB (1 input), "
        f"{act_batch / GIB:.2f} GiB (the recipe's {per_step} per step)"
    )
    secs, steps = exp.seconds, int(exp.steps)
    print(
        f"explanation: {secs:.0f} s, {steps} steps, {secs / t_one:.0f}× one forward+backward; "
        f"valid {exp.valid} ({exp.status}); mask area {100 * exp.area_fraction:.1f} %"
    )
    per_step_s = float(np.median(step_times)) if step_times else float("nan")
    fixed = secs - per_step_s * steps
    print(
        f"per optimisation step {per_step_s:.1f} s (median of {len(step_times)}); the rest "
        f"(absence choice, prior, checks, regions, pruning) {fixed:.0f} s"
    )
    if args.steps:
        full = mc.MedCAMConfig.fast()
        least, most = full.min_steps, (full.retries + 1) * (full.steps + full.refine_steps)
        lo, hi = fixed + per_step_s * least, fixed + per_step_s * most
        print(
            f"EXTRAPOLATED (steps capped at {args.steps}): the uncapped recipe runs "
            f"{least}–{most} steps (early stop … every attempt to its end): {lo:.0f}–{hi:.0f} s "
            f"= {lo / t_one:.0f}–{hi / t_one:.0f}× one forward+backward"
        )
    print(
        f"peak RSS: {peak.peak / GIB:.2f} GiB sampled, {maxrss / GIB:.2f} GiB ru_maxrss "
        f"(process at start {rss0 / GIB:.2f} GiB, before explaining {rss_before / GIB:.2f} GiB)"
        + (f"; torch's peak on the GPU {torch_peak / GIB:.2f} GiB" if torch_peak else "")
    )
    fits = max(peak.peak, maxrss) < LAPTOP / 2
    print(
        f"fits a 16 GB laptop: {'yes' if fits else 'NO'} (peak under half of 16 GiB, leaving "
        f"the rest to the OS and napari); each further background per step adds "
        f"{(act_batch - act_one) / max(per_step - 1, 1) / GIB:.2f} GiB of activations"
    )


if __name__ == "__main__":
    main()
