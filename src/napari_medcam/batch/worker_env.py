"""What every slide task shares, whatever explains the slide: the progress topic, the
worker's device, its memory peak, the symlink-loop check, and the facts that place a
slide's outputs (`task` and `decision`)."""

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


def slide_facts(
    path: Path,
    slide_id: str,
    slide_shape: Any,
    level: int,
    downsample: float,
    level_mpp: float | None,
    level_shape: Any,
    job: Any,
) -> dict[str, Any]:
    """Where a slide's outputs lie (the level, its downsample and shape; level-0 origin
    0, 0) and the run they belong to (settings hash, classifier fingerprint)."""
    return {
        "slide": str(path),
        "slide_id": slide_id,
        "slide_shape": slide_shape,
        "level": level,
        "downsample": downsample,
        "level_mpp": level_mpp,
        "level_shape": [int(n) for n in level_shape],
        "origin_level0": [0, 0],
        "settings_hash": job.settings_hash,
        "classifier_fingerprint": job.fingerprint,
    }
