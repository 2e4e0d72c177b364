"""Check a (user-edited) mask the way its explanation was made: tile by tile.

An image larger than the classifier's input is explained tile by tile, over the
grid `napari_medcam.tiling.tile_grid` lays with ``explain``'s overlap: each
input-sized window is read at full resolution, background windows are skipped and
only windows the classifier assigns to the target are explained. Resizing a whole
region (say 4,096²) to the input (224²) to check an edit would score a thumbnail
the classifier never saw, a number not comparable with the explanation's. So
`iter_check` reads the same windows, keeps the same ones and scores the edited
mask on each (`score_window`); it reports the masked confidence per tile and the
share of tiles whose decision the mask holds. An image no larger than the input is
checked in one piece (resized, as ``explain`` resizes it).

`score_window` is the one call into the engine's scoring (absence, random
backgrounds, deletion): a change of the engine's scoring interface is a change
there alone.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medcam.engine.renamed import renamed_keywords
from napari_medcam.tiling import (
    MIN_TISSUE_FRACTION,
    needs_tiling,
    overlap_for,
    tile_grid,
    tissue_fraction,
)

#: a tiled mask "holds the decision" when at least this share of its tiles does
HELD_SHARE = 0.9
_SCORES = ("original", "masked", "robust", "deletion")


@dataclass(frozen=True)
class CheckProgress:
    """``done`` of ``total`` windows (tiles or slices) looked at."""

    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def score_window(
    image: np.ndarray, mask: np.ndarray, classifier: Any, target: int, config: Any
) -> dict[str, Any]:
    """Confidences of ``mask`` on one window (the one call into the engine's scoring).

    ``image`` is the window as float32 channels-last in [0, 1] (the whole image's
    value range already applied), ``mask`` its part of the mask. The absence and
    perturbations are chosen for this window as ``explain`` chooses them.
    Returns original, masked, robust and deletion confidence of ``target``, and
    ``held`` (the masked image is still classified ``target``).
    """
    from napari_medcam.metrics import mask_confidences

    return mask_confidences(image, mask, classifier, target, config)


def area_fraction(mask: Any) -> float:
    """Share of the mask's pixels that are set; a lazy mask is counted chunk by chunk."""
    if isinstance(mask, np.ndarray):
        return float((mask > 0).mean()) if mask.size else 0.0
    import dask.array as da

    arr = mask if isinstance(mask, da.Array) else da.from_array(mask)
    return float((arr > 0).mean().compute())


@renamed_keywords("skip_background")
def iter_check(
    image: Any,
    mask: Any,
    classifier: Any,
    target: int,
    config: Any,
    *,
    slice_axis: int | None = None,
    tile_overlap: int | None = None,
    skip_glass: bool = True,
) -> Generator[CheckProgress, None, dict[str, Any]]:
    """Score ``mask`` on ``image`` tile by tile; yields `CheckProgress`, returns the facts.

    ``image`` and ``mask`` may be lazy (dask, zarr): only one window is read at a
    time. With ``slice_axis`` (an every-slice result) each slice the mask marks is
    checked on its own (tile by tile when larger than the input). Closing the
    generator cancels at the next window. Raises ValueError when nothing can be
    checked (shapes that do not match, no window the classifier assigns to the
    target).

    Returns ``original``, ``masked``, ``robust`` and ``deletion`` (means over the
    scored tiles), ``area_fraction`` (of the whole mask), ``held`` (at least
    `HELD_SHARE` of the scored tiles keep the decision), ``tiles`` (scored),
    ``tiles_held``, ``held_fraction``, ``windows`` (in the grid) and ``per_tile``:
    one record per scored tile with its window (start and size per axis) and scores.
    Slice mode adds ``slices`` and ``slices_held``.
    """
    sd = classifier.spatial_dims
    spatial = tuple(int(n) for n in image.shape[: sd + (slice_axis is not None)])
    if tuple(int(n) for n in mask.shape) != spatial:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match the image's spatial shape {spatial}"
        )
    vrange = classifier.value_range(image)  # as explain takes it
    if slice_axis is None:
        planes: list[tuple[int | None, Any, Any]] = [(None, image, mask)]
    else:
        marked = [
            i for i in range(spatial[slice_axis]) if np.asarray(_take(mask, slice_axis, i)).any()
        ]
        indices = marked or list(range(spatial[slice_axis]))
        planes = [(i, _take(image, slice_axis, i), _take(mask, slice_axis, i)) for i in indices]
    size = tuple(classifier.input_size)
    grids = [
        _windows(tuple(int(n) for n in p.shape[:sd]), size, tile_overlap) for _, p, _ in planes
    ]
    total = sum(len(g) for g in grids)
    tiled = any(len(g) > 1 for g in grids)
    records: list[dict[str, Any]] = []
    done = 0
    for (index, plane, plane_mask), windows in zip(planes, grids):
        for w, window in enumerate(windows):
            unit = classifier.to_unit_range(np.asarray(plane[window]), vrange)
            if len(windows) > 1 and not _explained(unit, classifier, target, skip_glass):
                done += 1
                yield CheckProgress(done, total)
                continue
            scores = score_window(
                unit, np.asarray(plane_mask[window]) > 0, classifier, target, config
            )
            records.append(
                {
                    **({"slice": index} if index is not None else {}),
                    "tile": w,
                    "start": [s.start for s in window],
                    "size": [s.stop - s.start for s in window],
                    **{k: float(scores[k]) for k in _SCORES},
                    "held": bool(scores["held"]),
                    "area_fraction": float(scores["area_fraction"]),
                }
            )
            done += 1
            yield CheckProgress(done, total)
    if not records:
        name = classifier.class_names[target]
        raise ValueError(
            f"no tissue tile is classified '{name}': there is nothing to check the mask against"
        )
    held = sum(r["held"] for r in records)
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in records])) for k in _SCORES}
    out.update(
        target=int(target),
        area_fraction=area_fraction(mask),
        held=held >= HELD_SHARE * len(records) if tiled else held == len(records),
        tiles=len(records),
        tiles_held=int(held),
        held_fraction=held / len(records),
        windows=total,
        tiled=tiled,
        per_tile=records,
    )
    if slice_axis is not None:
        out["slices"] = len(planes)
        out["slices_held"] = len(
            {r["slice"] for r in records} - {r["slice"] for r in records if not r["held"]}
        )
        out["held"] = out["slices_held"] == len(planes)
    return out


@renamed_keywords("skip_background")
def check_mask(
    image: Any, mask: Any, classifier: Any, target: int, config: Any, **kwargs: Any
) -> dict[str, Any]:
    """`iter_check` run to the end (no progress, no cancel)."""
    gen = iter_check(image, mask, classifier, target, config, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _take(arr: Any, axis: int, index: int) -> Any:
    key = tuple(index if a == axis else slice(None) for a in range(axis + 1))
    return arr[key]


def _windows(spatial: tuple[int, ...], size: tuple[int, ...], overlap: int | None) -> list[tuple]:
    if needs_tiling(spatial, size):
        return tile_grid(spatial, size, overlap_for(size) if overlap is None else overlap)
    return [tuple(slice(0, n) for n in spatial)]


def _explained(unit: np.ndarray, classifier: Any, target: int, skip_glass: bool) -> bool:
    """Would ``explain`` have explained this window? Tissue, and classified ``target``."""
    if skip_glass and tissue_fraction(unit) < MIN_TISSUE_FRACTION:
        return False
    return int(np.argmax(classifier.predict_proba(unit))) == int(target)
