"""Prune a binary mask that meets the goal down to the pixels the goal needs.

The optimisation minimises a *relaxed* area (a soft map, thresholded, smoothed by TV,
at quarter resolution then briefly refined): what it returns keeps the decision but
often with a rim of a pixel or two around small evidence — for a 20-pixel parasite
that rim is most of the mask. Pruning is the last, exact step: pixels are ranked
(least needed first) and the largest number of them is removed for which the *binary*
masked image still meets the same goal (`Objective.meets`) on the absence and on the
tile's whole background pool. A removal that breaks the goal is never kept, so the
mask the user gets meets exactly the test it met before, with fewer pixels.

The rank is the first-order cost of removing each pixel — the gradient of the mean
log p(target) over the absence and the pool with respect to the mask, smoothed over
3×3 — so that a pixel the classifier does not use goes first, wherever it lies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

CANDIDATES = 8  # removal sizes tried in one batch per round
ROUNDS = 3  # rounds of the batched search (each narrows the interval CANDIDATES-fold)

Meets = Callable[[torch.Tensor], torch.Tensor]


def importance(hard: torch.Tensor, log_p: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-pixel cost of removal (higher = more needed), (1, 1, *spatial).

    ``log_p(masks)`` is the mean log p(target) of each mask in a batch (B, 1, *spatial).
    """
    m = hard.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_p(m).sum(), m)
    dims = hard.dim() - 2
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(grad, 3, stride=1, padding=1, count_include_pad=False)


def prune(hard: torch.Tensor, rank: torch.Tensor, meets: Meets, keep_min: int = 1) -> torch.Tensor:
    """The smallest mask, removing ``hard``'s pixels in order of ``rank``, that meets.

    ``meets(masks)`` answers for a batch of binary masks (B, 1, *spatial) with a bool
    tensor (B,). The search assumes removal is roughly monotone (more removed, less
    kept) and never trusts it: only a removal ``meets`` accepted is returned.
    """
    flat = hard.flatten()
    inside = torch.nonzero(flat > 0.5).flatten()
    if len(inside) <= keep_min:
        return hard
    order = inside[torch.argsort(rank.flatten()[inside])]  # least needed first
    lo, hi = 0, len(order) - keep_min  # lo: removal known to meet; hi: largest to try
    for _ in range(ROUNDS):
        if hi <= lo:
            break
        sizes = sorted({lo + max(1, round((hi - lo) * (j + 1) / CANDIDATES)) for j in range(CANDIDATES)})
        masks = []
        for s in sizes:
            m = flat.clone()
            m[order[:s]] = 0
            masks.append(m.view_as(hard))
        ok = meets(torch.cat(masks)).tolist()
        passed = [s for s, good in zip(sizes, ok) if good]
        if not passed:
            hi = sizes[0] - 1
            continue
        best = max(passed)
        above = [s for s in sizes if s > best]
        lo, hi = best, (above[0] - 1 if above else best)
    if lo == 0:
        return hard
    out = flat.clone()
    out[order[:lo]] = 0
    return out.view_as(hard)
