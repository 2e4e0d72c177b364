"""The goal test behind pruning, and the search for the largest removal that passes it.

`PoolCheck` answers, for a batch of binary masks, whether each still meets one input's
goal (`Objective.meets`) on its absence and its whole pool of perturbations — the test the
optimisation's best mask passed. `largest_prefix` finds how many items (regions, ranked
least needed first by `importance`) can go while that test still passes;
`napari_medcam.engine.regions` uses both to remove whole regions, never single pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

# counts tried in one batch when there are few (regions of one tile: usually < 8);
# otherwise removal sizes tried per round (at ⅓, ⅔ and all of the open interval) and
# rounds: the interval narrows 3× a round, so up to 3⁵ = 243 items are searched exactly
# with 15 masks (× 1 + pool images each); one candidate a round (bisection) costs
# fewer images but more passes, more candidates the reverse
ALL_AT_ONCE = 8
CANDIDATES = 3
ROUNDS = 5

Meets = Callable[[torch.Tensor], torch.Tensor]


class PoolCheck:
    """One input's goal on its absence and its whole pool of perturbations, for masks.

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
        self.absence = absence.image
        self.pool = absence.backgrounds if len(absence.backgrounds) else absence.image

    def with_goal(self, goal: Callable[[float, float, bool], bool]) -> PoolCheck:
        """The same input, absence and pool held to another test (e.g. validity alone)."""
        other = object.__new__(PoolCheck)
        other.__dict__.update(self.__dict__, goal=goal)
        return other

    def _batch(self, masks: torch.Tensor) -> torch.Tensor:
        """Each mask on the absence, then on every perturbation: (B·(1+P), C, *spatial)."""
        on_pool = masks.repeat_interleave(len(self.pool), 0)
        pool = self.pool.repeat(len(masks), *[1] * (self.pool.dim() - 1))
        return torch.cat(
            [masks * self.x + (1 - masks) * self.absence, on_pool * self.x + (1 - on_pool) * pool]
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

    def decides(self, masks: torch.Tensor) -> torch.Tensor:
        """Whether the classifier still calls the target on each mask over the absence, (B,)."""
        with torch.no_grad():
            logits = self.module(masks * self.x + (1 - masks) * self.absence)
        return logits.argmax(1) == self.target

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


def importance(hard: torch.Tensor, log_p: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-pixel cost of removal (higher = more needed), (1, 1, *spatial).

    ``log_p(masks)`` is the mean log p(target) of each mask in a batch (B, 1, *spatial).
    """
    m = hard.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_p(m).sum(), m)
    dims = hard.dim() - 2
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(grad, 3, stride=1, padding=1, count_include_pad=False)


def largest_prefix(n: int, test: Callable[[list[int]], list[bool]]) -> int:
    """The largest k in [0, n] that ``test`` accepts (0 when none does).

    ``test(ks)`` answers for a batch of candidate counts. Up to `ALL_AT_ONCE` counts are
    tried in one batch; more are searched `CANDIDATES` at a time over `ROUNDS` rounds.
    The search assumes removal is roughly monotone (more removed, less kept) and never
    trusts it: only a count ``test`` accepted is returned.
    """
    if n <= 0:
        return 0
    if n <= ALL_AT_ONCE:
        ks = list(range(1, n + 1))
        return max([k for k, good in zip(ks, test(ks)) if good], default=0)
    lo, hi = 0, n  # lo: known to pass; hi: largest to try
    for _ in range(ROUNDS):
        if hi <= lo:
            break
        sizes = sorted(
            {lo + max(1, round((hi - lo) * (j + 1) / CANDIDATES)) for j in range(CANDIDATES)}
        )
        passed = [s for s, good in zip(sizes, test(sizes)) if good]
        if not passed:
            hi = sizes[0] - 1
            continue
        best = max(passed)
        above = [s for s in sizes if s > best]
        lo, hi = best, (above[0] - 1 if above else best)
    return lo
