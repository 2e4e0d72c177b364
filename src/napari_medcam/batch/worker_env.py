"""What every slide task shares, whatever explains the slide: the progress topic, the
worker's device, its memory peak, and the symlink-loop check (`task` and `decision`)."""

from __future__ import annotations

import errno
import resource
import sys
from pathlib import Path
from typing import Any

#: Dask event topic on which workers report tiles of running slides
PROGRESS_TOPIC = "napari-medcam-progress"


def device_for(job: Any, worker: Any) -> str:
    """``auto`` spreads a local cluster's workers over the GPUs (by worker name)."""
    import torch

    n = torch.cuda.device_count()
    if job.device == "auto" and n > 1 and worker is not None and isinstance(worker.name, int):
        return f"cuda:{worker.name % n}"
    return job.device


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def symlink_loop(path: Path) -> bool:
    """Whether ``path`` is a symbolic link loop (a.tif -> b.tif -> a.tif)."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13
        return True
    except OSError as err:
        return err.errno == errno.ELOOP
    return False
