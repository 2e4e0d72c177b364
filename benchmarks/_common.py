"""What every benchmark script shares: best-of timing and the machine line it prints.

The scripts are run as files (``python benchmarks/x.py``), so this module is found
beside them on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls, waiting for the GPU when there is one."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def machine_line(device: torch.device) -> str:
    """`machine: OS CPU, N cores, torch V (T threads), device D (GPU name)` for BENCHMARKS.md."""
    cpu = platform.processor() or platform.machine()
    gpu = f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    return (
        f"machine: {platform.system()} {cpu}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} thread(s)), device {device}{gpu}"
    )
