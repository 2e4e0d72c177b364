"""What a run will cost, said before it starts: a measured step times the work to do.

A step of the optimisation is, for each tile being explained, a classifier forward
and backward pass over the masked tile and its perturbations, plus the U-Net,
the check of a new best mask on the whole pool of perturbations and bookkeeping.
`step_seconds` times the classifier pass once per classifier and device (cached);
a whole step took `STEP_FACTOR` times that in our runs. After a run the widget
records what a step really took (`record_run`) and later estimates use that.
`estimate` multiplies by the tiles and the most steps the preset allows: tiles
without tissue or the class are skipped and most tiles stop early, so a run is
usually shorter — unless the machine is busier than when it was measured.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

_TIMINGS: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()

#: a whole step over the timed classifier pass: 2.4-4x on the demo (224², 33-67 ms
#: timed, 136 ms a step) and ihc-dab (64², 9 ms timed, 27 ms a step) on 1-2 CPU threads
STEP_FACTOR = 3.0


@dataclass(frozen=True)
class Estimate:
    """About ``seconds`` for ``tiles`` tiles × ``steps`` steps at ``step`` s a tile-step;
    ``measured`` says where ``step`` comes from."""

    seconds: float
    tiles: int
    steps: int
    step: float
    measured: str

    def short(self) -> str:
        return f"about {duration(self.seconds)} at most"

    def text(self) -> str:
        tiles = f"{self.tiles} tiles × " if self.tiles > 1 else ""
        return (
            f"Estimate: {self.short()} ({tiles}{self.steps} steps at most; {self.measured}; "
            "tiles without tissue or the class are skipped and most stop early)"
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

    from napari_medcam.classifiers.prepare import resolve_device

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


def record_run(classifier: Any, device: str, seconds: float, steps: int) -> None:
    """Remember what a tile-step of a finished run took, for the next estimates."""
    from napari_medcam.classifiers.prepare import resolve_device

    if steps > 0 and seconds > 0:
        key = f"{resolve_device(device)}:run"
        _TIMINGS.setdefault(classifier, {})[key] = seconds / steps


def estimate(classifier: Any, config: Any, tiles: int, device: str) -> Estimate:
    """About the most a run of ``config`` over ``tiles`` tiles takes on ``device``."""
    from napari_medcam.classifiers.prepare import resolve_device

    steps = int(config.steps) + int(getattr(config, "refine_steps", 0) or 0)
    last = _TIMINGS.get(classifier, {}).get(f"{resolve_device(device)}:run")
    if last is not None:
        step, measured = last, f"a step took {1000 * last:.0f} ms in the last run here"
    else:
        timed = step_seconds(classifier, device, int(getattr(config, "n_perturbations", 2) or 0))
        step = STEP_FACTOR * timed
        measured = (
            f"the classifier's pass timed at {1000 * timed:.0f} ms here, a step "
            f"≈ {STEP_FACTOR:g}× that"
        )
    n = max(tiles, 1)
    classify = step / (3 * STEP_FACTOR) * n if n > 1 else 0.0  # one forward pass a tile
    return Estimate(step * steps * n + classify, n, steps, step, measured)
