"""The labels of an amortised run: one stitched soft mask per class, combined.

`napari_medcam.engine.amortised.explain` stitches every class it explains in a
`napari_medcam.tiling.Stitcher` of its own; `combine_labels` turns them into one label
image (class index + 1 per pixel), the binary mask and the soft mask of the winning
class, in memory or, past `napari_medcam.tiling.IN_MEMORY_PIXELS`, in chunked zarr
arrays on disk, one chunk at a time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.tiling import Stitcher, _chunk_blocks, owned_zarr


def combine_labels(
    stitchers: dict[int, Stitcher],
    shape: tuple[int, ...],
    config: MedCAMConfig,
    failed: list[tuple[slice, ...]],
    class_names: list[str],
) -> tuple[Any, Any, Any, float, dict[int, str]]:
    """(labels, mask, soft, area, {label: name}) from one stitched soft mask per class.

    A pixel's label is the class with the highest blended soft mask above the
    threshold (class index + 1; 0: no evidence); failed tiles' windows hold nothing;
    the names are those of the labels present.
    ``soft`` is that highest soft mask everywhere, below the threshold too, as the
    per-image engine's: it ranks every pixel (deletion and insertion curves, the
    pointing game read it), and thresholding it gives exactly ``mask``.
    """
    from napari_medcam.tiling import IN_MEMORY_PIXELS

    classes = sorted(stitchers)
    on_disk = math.prod(shape) > IN_MEMORY_PIXELS
    results = [stitchers[c].result(config.threshold)[1] for c in classes]
    if not on_disk:
        labels = np.zeros(shape, np.uint8)
        best = np.zeros(shape, np.float32)
        for c, s in zip(classes, results):
            win = (s > config.threshold) & (s > best)
            labels[win] = c + 1
            np.maximum(best, s, out=best)
        for w in failed:
            labels[w], best[w] = 0, 0.0
        mask = labels > 0
        return labels, mask, best, float(mask.mean()), _names(np.unique(labels), class_names)
    chunks = next(iter(stitchers.values())).chunks if stitchers else (512,) * len(shape)
    labels, mask, best = (
        owned_zarr(shape, chunks, d, "napari-medcam-labels-") for d in (np.uint8, bool, np.float32)
    )
    kept = 0
    for block in _chunk_blocks(shape, chunks):
        lab = np.zeros([b.stop - b.start for b in block], np.uint8)
        top = np.zeros(lab.shape, np.float32)
        for c, s in zip(classes, results):
            v = np.asarray(s[block])
            win = (v > config.threshold) & (v > top)
            lab[win] = c + 1
            np.maximum(top, v, out=top)
        labels[block], mask[block], best[block] = lab, lab > 0, top
    for w in failed:
        labels[w], mask[w], best[w] = 0, False, 0.0
    values: set[int] = set()
    for block in _chunk_blocks(shape, chunks):
        lab = np.asarray(labels[block])
        kept += int(np.count_nonzero(lab))
        values.update(np.unique(lab).tolist())
    return labels, mask, best, kept / math.prod(shape), _names(values, class_names)


def _names(values: Any, class_names: list[str]) -> dict[int, str]:
    """{label: class name} for the label values present (0, no evidence, is not one): a
    class whose every pixel lost to another class or to a failed tile is not listed."""
    return {int(v): class_names[int(v) - 1] for v in sorted(values) if v}
