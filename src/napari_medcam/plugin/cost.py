"""What a run will cost, said before it starts: a measured step times the work to do.

A step of the optimisation is, for each tile being explained, one classifier
forward and backward pass over the masked tile and its random backgrounds (the
U-Net's share is small next to the classifier's). `step_seconds` times exactly
that once per classifier, device and input size (cached); `estimate` multiplies
it by the tiles and the most steps the preset allows. It is an upper bound: tiles
without tissue or without the class are skipped, and most tiles stop early.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

_TIMINGS: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Estimate:
    """At most ``seconds`` for ``tiles`` tiles × ``steps`` steps at ``step`` s a tile-step."""

    seconds: float
    tiles: int
    steps: int
    step: float

    def short(self) -> str:
        return f"up to ≈ {duration(self.seconds)}"

    def text(self) -> str:
        tiles = f"{self.tiles} tiles × " if self.tiles > 1 else ""
        return (
            f"Estimate: {self.short()} ({tiles}{self.steps} steps at most; one step measured "
            f"{1000 * self.step:.0f} ms here; tiles without tissue or the class are skipped "
            "and most stop early)"
        )


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1 h 20 min'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def step_seconds(classifier: Any, device: str, backgrounds: int) -> float:
    """Seconds of one optimisation step for one tile: a forward and backward pass of
    the classifier over 1 + ``backgrounds`` input-sized images (timed once, cached)."""
    import torch

    from napari_medcam.engine.prepare import resolve_device

    dev = resolve_device(device)
    key = f"{dev}:{backgrounds}"
    cache = _TIMINGS.setdefault(classifier, {})
    if key in cache:
        return cache[key]
    before = classifier.device
    classifier.to(dev)
    try:
        x = torch.rand((1 + backgrounds, classifier.channels, *classifier.input_size), device=dev)
        best = math.inf
        for _ in range(2):  # the first pass pays one-off costs (allocations, kernels)
            xi = x.clone().requires_grad_(True)
            start = time.perf_counter()
            classifier.module(xi).sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - start)
    finally:
        classifier.to(before)
    cache[key] = best
    return best


def estimate(classifier: Any, config: Any, tiles: int, device: str) -> Estimate:
    """The most a run of ``config`` over ``tiles`` tiles should take on ``device``."""
    steps = int(config.steps) + int(getattr(config, "refine_steps", 0) or 0)
    step = step_seconds(classifier, device, int(getattr(config, "n_backgrounds", 2) or 0))
    classify = step / 3 * max(tiles, 1) if tiles > 1 else 0.0  # forward passes only
    return Estimate(step * steps * max(tiles, 1) + classify, max(tiles, 1), steps, step)
