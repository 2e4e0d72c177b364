"""Make a binary mask that meets the goal readable: a few regions at the detail scale.

The optimisation returns a mask that keeps the decision, but thresholding a relaxed map
leaves specks: nuclei a few pixels apart shown as separate dots, pinholes, fragments.
A pathologist reads, edits and compares *regions*, so the last step works on regions
only, never on single pixels (`napari_medcam.engine.scale` fixes the structure size
``d``):

1. **extent**: grow to the structure the pieces belong to in the optimisation's soft
   map (`extent`), so that another seed gives the same regions;
2. **close** the mask with a disk of radius ``d/2``: pieces closer than ``d`` become one
   region and holes narrower than ``d`` fill (context is added, nothing is removed);
3. **prune whole regions**: regions are ranked by the first-order cost of removing them
   (the gradient of the mean log p(target) over the absence and the background pool,
   summed over the region) and the largest number of the least needed is removed for
   which the binary mask still meets the goal (`Objective.meets` on the absence and the
   tile's whole pool) — a removal that breaks the goal is never kept;
4. **trim** the rim evenly: the mask eroded by the most whole pixels (up to ``d/2``)
   that still meets the goal, pieces under the minimum area dropped;
5. **grow** a region smaller than the scale's minimum area (a disk of diameter ``d``)
   that the goal needs, by dilating it, when the grown mask still meets the goal.

Each step is checked with the same test the optimisation's mask passed — the goal, or,
for a fallback (a capped run that never reached the goal kept its best *valid* mask),
validity; a step that fails it is skipped, so the mask returned passes whatever test
the mask given passed.
Finally the result records whether adding context (dilating by ``d/2``) and removing
a little (eroding by ``d/4``) keep the decision: evidence that stops working when a
structure radius of context is added is an artefact, not a finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.prune import PoolCheck, importance, largest_prefix
from napari_medcam.engine.scale import Detail, resolve_detail


@dataclass
class RegionReport:
    """What `regionalise` did to one mask, and how robust the result is to its rim."""

    regions: int  # connected regions of the final mask
    small: int  # of them, smaller than the scale's minimum area (the goal needs them)
    removed: int  # regions pruned
    dilated_keeps: bool  # the mask dilated by one structure radius keeps the decision
    eroded_keeps: bool  # ... eroded by half a radius


def _ball(radius: float, dims: int) -> np.ndarray:
    r = max(0, int(np.floor(radius)))
    grid = np.ogrid[tuple(slice(-r, r + 1) for _ in range(dims))]
    return sum(g.astype(float) ** 2 for g in grid) <= radius**2 + 1e-9


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    if radius < 1 or not mask.any():
        return mask.copy()
    return ndimage.binary_dilation(mask, _ball(radius, mask.ndim))


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion that treats the image edge as inside (a region at the edge keeps it)."""
    if radius < 1 or not mask.any():
        return mask.copy()
    return ndimage.binary_erosion(mask, _ball(radius, mask.ndim), border_value=1)


def close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Closing with a ball; the edge does not erode what dilation brought."""
    return erode(dilate(mask, radius), radius) | mask


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions, pixels joined along an edge: one region is one polygon of the
    GeoJSON export (pixels meeting only at a corner are two polygons there, and two
    regions here)."""
    return ndimage.label(mask)


def fill_small_holes(mask: np.ndarray, min_area: int) -> np.ndarray:
    holes, n = label(~mask)
    if not n:
        return mask
    sizes = np.bincount(holes.ravel())
    edge = np.unique(
        np.concatenate(
            [np.ravel(holes[(slice(None),) * d + (i,)]) for d in range(mask.ndim) for i in (0, -1)]
        )
    )
    small = sizes < min_area
    small[0] = False
    small[edge] = False
    return mask | small[holes]


def count_regions(mask: np.ndarray, min_area: int) -> tuple[int, int, float]:
    """(regions, regions below ``min_area``, share of the mask in regions ≥ it)."""
    labels, n = label(mask)
    if not n:
        return 0, 0, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    big = sizes >= min_area
    return n, int((~big).sum()), float(sizes[big].sum() / sizes.sum())


def extent(given: np.ndarray, soft: np.ndarray, threshold: float, radius: float) -> np.ndarray:
    """The pieces of the soft map's raised area that hold a piece of ``given``.

    The optimisation lowers the soft map everywhere it is not needed and leaves the
    evidence raised; which few of several redundant pieces cross the threshold depends
    on the seed. Hysteresis (pieces of ``soft`` above half-way between the background's
    level and the threshold, closer than two structure sizes, that touch ``given``) keeps the
    whole raised structure — the same with any seed.
    """
    far = ~dilate(given, 4 * radius)
    background = float(np.median(soft[far])) if far.any() else 0.0
    low = soft > (background + threshold) / 2
    labels, n = label(close(low, 2 * radius))
    hit = np.unique(labels[given & (labels > 0)])
    return given | (np.isin(labels, hit) & low)


def drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    labels, n = label(mask)
    if not n:
        return mask
    big = np.bincount(labels.ravel()) >= min_area
    big[0] = False
    return big[labels]


def trim(mask: np.ndarray, detail: Detail, meets: Any) -> np.ndarray:
    """``mask`` eroded by the most whole pixels (≤ one structure radius) that still meets
    the goal, pieces below the minimum area dropped: the rim the extent and the closing
    added, taken off evenly all round (never pixel by pixel)."""
    cands = [drop_small(erode(mask, k), detail.min_area) for k in range(1, int(detail.radius) + 1)]
    cands = [c for c in cands if c.any()]
    if not cands:
        return mask
    passed = [c for c, ok in zip(cands, meets(cands)) if ok]
    return passed[-1] if passed else mask


def regionalise(
    check: PoolCheck,
    hard: torch.Tensor,
    detail: Detail,
    prune: bool = True,
    soft: torch.Tensor | None = None,
    threshold: float = 0.5,
) -> tuple[torch.Tensor, RegionReport]:
    """``hard`` (1, 1, *spatial), a mask meeting ``check``'s goal, as regions at ``detail``.

    With ``soft`` (the optimisation's map) the mask first grows to its `extent`, when
    the grown mask still meets the goal. Returns the new binary mask (same shape, dtype,
    device) and what was done.
    """
    dev, dtype = hard.device, hard.dtype

    def tensor(masks: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(masks)[:, None]).to(dev, dtype)

    def meets(masks: list[np.ndarray]) -> list[bool]:
        return check.meets(tensor(masks)).tolist()

    given = hard[0, 0].detach().cpu().numpy() > 0.5
    if not given.any():
        return hard, RegionReport(0, 0, 0, False, False)
    if soft is not None:
        grown = extent(given, soft[0, 0].detach().cpu().numpy(), threshold, detail.radius)
        if grown.sum() > given.sum() and meets([grown])[0]:
            given = grown
    closed = fill_small_holes(close(given, detail.radius), detail.min_area)
    mask = closed if meets([closed])[0] else given

    removed = 0
    labels, n = label(mask)
    if prune and n > 1:
        need = importance(tensor([mask]), check.log_p)[0, 0].detach().cpu().numpy()
        per_region = ndimage.sum_labels(need, labels, np.arange(1, n + 1))
        order = np.argsort(per_region, kind="stable") + 1  # least needed first

        def without(k: int) -> np.ndarray:
            return mask & ~np.isin(labels, order[:k])

        removed = largest_prefix(n - 1, lambda ks: meets([without(k) for k in ks]))
        mask = without(removed)
    if prune:
        mask = trim(mask, detail, meets)
    labels, n = label(mask)

    sizes = np.bincount(labels.ravel())[1:]
    small = np.flatnonzero(sizes < detail.min_area) + 1
    if len(small):
        grown = mask | dilate(np.isin(labels, small), detail.radius)
        if meets([grown])[0]:
            mask = grown
    dilated = dilate(mask, detail.radius)
    eroded = erode(mask, detail.radius / 2)
    held = check.decides(tensor([dilated, eroded])).tolist()
    n, n_small, _ = count_regions(mask, detail.min_area)
    report = RegionReport(n, n_small, removed, bool(held[0]), bool(held[1] and eroded.any()))
    return tensor([mask])[:1], report


def at_scale(
    check: PoolCheck,
    soft: torch.Tensor,
    hard: torch.Tensor,
    cfg: MedCAMConfig,
    classifier: Any,
    prune: bool,
) -> tuple[torch.Tensor, torch.Tensor, RegionReport]:
    """(soft, hard, report): ``hard`` as regions at the detail scale (`regionalise`), the
    soft map moved across the threshold where the mask changed, so that thresholding it
    (as stitching does) gives exactly the new mask."""
    detail = resolve_detail(cfg.detail, classifier)
    hard2, report = regionalise(check, hard, detail, prune, soft, cfg.threshold)
    t = torch.tensor(cfg.threshold, dtype=soft.dtype, device=soft.device)
    above = torch.nextafter(t, torch.ones_like(t))
    on = hard2 > 0.5
    soft2 = torch.where(on, torch.maximum(soft, above), torch.minimum(soft, t))
    return soft2, hard2, report
