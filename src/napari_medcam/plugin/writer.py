"""npe2 writer: a Labels layer as a compressed uint8 TIFF with Med-CAM metadata."""

from __future__ import annotations

from typing import Any

import numpy as np


def pixel_size(scale: Any) -> tuple[float, float] | None:
    """(sy, sx) from a layer's scale, or None when it has fewer than two axes."""
    if scale is None:
        return None
    s = [float(v) for v in np.asarray(scale, dtype=float).ravel()]
    return (s[-2], s[-1]) if len(s) >= 2 else None


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer (napari's File ▸ Save asks before replacing a file).

    The layer's ``metadata`` goes into the TIFF description as JSON, its scale
    into the resolution tags; the file appears atomically.
    """
    from napari_medcam.io import write_mask_tiff

    out = write_mask_tiff(
        path,
        np.asarray(data),
        metadata=dict(meta.get("metadata") or {}),
        pixel_size=pixel_size(meta.get("scale")),
        overwrite=True,
    )
    return [str(out)]
