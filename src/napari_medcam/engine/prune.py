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

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

# removal sizes tried in one batch per round (at ⅓, ⅔ and all of the open interval),
# and rounds: the interval narrows 3× a round, so masks up to 3⁵ = 243 pixels are
# searched to the pixel with 15 masks (× 1 + pool images each), larger ones to within
# 0.4 % of their size; one candidate a round (bisection) costs fewer images but
# more passes, more candidates the reverse (worth it on a GPU, not on 2 CPU cores)
CANDIDATES = 3
ROUNDS = 5

Meets = Callable[[torch.Tensor], torch.Tensor]


class PoolCheck:
    """One input's goal on its absence and its whole background pool, for batches of masks.

    ``goal(p_masked, p_pool, held)`` is the test a mask must pass (`Objective.meets`).
    """

    def __init__(
        self,
        x: torch.Tensor,
        module: torch.nn.Module,
        target: int,
        absence: Any,
        goal: Callable[[float, float, bool], bool],
    ) -> None:
        self.x, self.module, self.target, self.goal = x, module, int(target), goal
        self.baseline = absence.baseline
        self.pool = absence.backgrounds if len(absence.backgrounds) else absence.baseline

    def _batch(self, masks: torch.Tensor) -> torch.Tensor:
        """Each mask on the absence, then on every background: (B·(1+P), C, *spatial)."""
        on_pool = masks.repeat_interleave(len(self.pool), 0)
        pool = self.pool.repeat(len(masks), *[1] * (self.pool.dim() - 1))
        return torch.cat(
            [masks * self.x + (1 - masks) * self.baseline, on_pool * self.x + (1 - on_pool) * pool]
        )

    def log_p(self, masks: torch.Tensor) -> torch.Tensor:
        """Mean log p(target) of each mask over the absence and the pool (differentiable)."""
        b = len(masks)
        logp = torch.log_softmax(self.module(self._batch(masks)), 1)[:, self.target]
        return torch.cat([logp[:b, None], logp[b:].view(b, -1)], 1).mean(1)

    def pool_confidence(self, hard: torch.Tensor) -> float:
        """Mean p(target) of one binary mask over the whole pool."""
        with torch.no_grad():
            probs = torch.softmax(self.module(self._batch(hard.detach())), 1)
        return float(probs[1:, self.target].mean())

    def meets(self, masks: torch.Tensor) -> torch.Tensor:
        """Whether each binary mask of the batch passes the goal, (B,) bool."""
        b, t = len(masks), self.target
        with torch.no_grad():
            probs = torch.softmax(self.module(self._batch(masks)), 1)
        held = probs[:b].argmax(1) == t
        p_pool = probs[b:, t].view(b, -1).mean(1)
        return torch.tensor(
            [self.goal(float(probs[j, t]), float(p_pool[j]), bool(held[j])) for j in range(b)]
        )


def prune_mask(
    check: PoolCheck, soft: torch.Tensor, hard: torch.Tensor, threshold: float, min_area: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft, hard) with ``hard`` pruned; pruned pixels fall to ``threshold`` in the soft
    map, so that thresholding it (as stitching does) gives exactly the pruned mask."""
    keep_min = math.ceil(min_area * hard.numel())
    pruned = prune(hard, importance(hard, check.log_p), check.meets, keep_min)
    return torch.where(pruned < hard, soft.clamp(max=threshold), soft), pruned


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
        sizes = sorted(
            {lo + max(1, round((hi - lo) * (j + 1) / CANDIDATES)) for j in range(CANDIDATES)}
        )
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
