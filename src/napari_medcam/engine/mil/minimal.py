"""The smallest set of tiles that alone keeps a slide's decision.

The tile engine's constrained objective (`napari_medcam.engine.objective`), on a bag:

    minimise   #kept + w_tv · TV(keep on the slide's tile grid)
    subject to p(target | kept, the rest absent)        ≥ goal
               p(target | kept, on random absences)      ≥ goal

with the same goal (``tolerance`` × the slide's confidence, never below the decision)
and the same GECO-style multipliers. Two stages:

1. **Relaxed**: a keep value ``m = sigmoid(θ)`` per tile, optimised with Adam on the
   embeddings; each tile's embedding is mixed towards its absence,
   ``m·e + (1 − m)·fill`` (its nearest counterfactual tissue; a random one for the
   robustness term). The mix is the relaxation for both absences — removal cannot be
   made fractional for an arbitrary aggregator — and only ranks the tiles. It stops
   before `STEPS` once converged: the relaxed goal met and the best-ranked tiles the
   same as `YIELD_EVERY` steps before (each step is two passes of the aggregator over
   the whole bag: 100 of them took 23 s on a 7,056-tile TransMIL-like bag).
2. **Exact**: whole tiles, best ranked first: the smallest prefix that passes the binary
   goal (`napari_medcam.engine.mil.absence`, the real removal or replacement, on the
   absence and every random draw), found by galloping then bisection, then a greedy
   pass dropping any kept tile the goal does not need (isolated tiles tried first, so
   what stays is contiguous where it can be). Only a set that passed is returned as
   meeting the goal; when none does, the whole bag is returned and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import torch

from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.mil.absence import BagAbsence, BagModel
from napari_medcam.engine.objective import DECAY, MULTIPLIER_RANGE

YIELD_EVERY = 10  # relaxed steps between progress events
STEPS = 100  # relaxed steps: Adam at LR moves θ by up to ~10, from keep 0.8 to ~0
# no stop before this: Adam moves θ by ≤ ~LR a step, so the unneeded tiles take ~14 steps
# to fall below keep 0.5, and the score's window (the last half) is then past the fall
MIN_STEPS = 30
STABLE_HEAD = 4  # converged: these best-ranked tiles unchanged for YIELD_EVERY steps
LR = 0.1
INIT_FILL = 0.8  # every tile starts kept (as the tile engine's masks start full)
WEIGHT_TV = 0.5  # contiguity on the tile grid, relative to the count
MULTIPLIER_INIT, MULTIPLIER_RATE = 0.1, 0.2  # MedCAMConfig's defaults
GREEDY_MAX = 64  # kept sets up to this size get the one-by-one pass
CONTIGUITY_BONUS = 1.0  # θ units: a near-tie goes to a tile touching the evidence so far
ORDER_HEAD = 256  # ranked places chosen with the contiguity bonus


def goal_for(p0: float, tolerance: float) -> float:
    """The confidence a kept set must reach: ``tolerance·p0``, and above the decision
    when the slide is unsure (as `Objective`'s goal)."""
    return max(tolerance * p0, min(0.5, p0) + 1e-3)


def neighbour_pairs(grid: np.ndarray) -> torch.Tensor:
    """(E, 2) index pairs of tiles that touch on the grid (edge neighbours)."""
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(grid)}
    pairs = [
        (i, j)
        for i, (r, c) in enumerate(grid)
        for j in (index.get((int(r) + 1, int(c))), index.get((int(r), int(c) + 1)))
        if j is not None
    ]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


@dataclass
class Check:
    """The exact goal test of one kept set."""

    meets: bool
    p_kept: float  # p(target) with the rest absent
    p_drawn: float  # mean p(target) over the random absences
    held: bool  # argmax is still the target with the rest absent


class GoalTest:
    """The binary goal on a bag: counts its calls (each one 1 + draws aggregator passes)."""

    def __init__(self, model: BagModel, absence: BagAbsence, target: int, goal: float) -> None:
        self.model, self.absence, self.target, self.goal = model, absence, target, goal
        self.calls = 0

    def __call__(self, keep: torch.Tensor) -> Check:
        self.calls += 1
        if not bool(keep.any()) and self.absence.mode == "removal":
            return Check(False, 0.0, 0.0, False)
        p = self.model.probs(*self.absence.absent_bag(self.model, keep))
        drawn = [
            float(self.model.probs(e, c)[self.target])
            for e, c in self.absence.drawn_bags(self.model, keep)
            if len(e)
        ]
        p_t, p_d = float(p[self.target]), float(np.mean(drawn)) if drawn else 0.0
        held = int(p.argmax()) == self.target
        return Check(held and p_t >= self.goal and p_d >= self.goal, p_t, p_d, held)


def _search_event(step: int, total: int) -> ProgressEvent:
    return ProgressEvent(step, total, {}, float("nan"), 0.0, stage="search")


def _window_mean(thetas: list[torch.Tensor]) -> torch.Tensor:
    """The mean θ over the last half of the steps so far (summed in step order)."""
    window = thetas[len(thetas) // 2 :]
    total = torch.zeros_like(window[0])
    for theta in window:
        total += theta
    return total / len(window)


def relaxed_scores(
    model: BagModel, absence: BagAbsence, target: int, goal: float, tolerance: float, seed: int
) -> Generator[ProgressEvent, None, tuple[np.ndarray, int]]:
    """Each tile's keep score (mean θ over the last half of the steps): higher = needed,
    and the steps taken (0: ranked by the gradient). Yields a "search" event every
    `YIELD_EVERY` steps (a cancel acts there); stops there once converged (module doc)."""
    n = len(model)
    if not len(absence.counterfactual):  # nothing to mix towards: rank by the gradient
        return _gradient_scores(model, target), 0
    pairs = neighbour_pairs(model.coords.numpy().astype(np.int64))
    theta = torch.full((n,), math.log(INIT_FILL / (1 - INIT_FILL)), requires_grad=True)
    opt = torch.optim.Adam([theta], lr=LR)
    log_goal, unit = math.log(goal), max(-math.log(tolerance), 0.05)
    log_mu = [math.log(MULTIPLIER_INIT)] * 2
    lo, hi = (math.log(v) for v in MULTIPLIER_RANGE)
    g = torch.Generator().manual_seed(int(seed))
    near = absence.soft_fill(None)
    thetas: list[torch.Tensor] = []
    head: np.ndarray | None = None
    for step in range(STEPS):
        m = torch.sigmoid(theta)[:, None]
        draw = int(torch.randint(0, len(absence.draws), (1,), generator=g))
        logps = [
            torch.log_softmax(model.logits(m * model.e + (1 - m) * fill, model.coords), 0)[target]
            for fill in (near, absence.soft_fill(draw))
        ]
        area = m.mean()
        tv = (
            torch.sqrt((m[pairs[:, 0]] - m[pairs[:, 1]]) ** 2 + 1e-4).sum() / n
            if len(pairs)
            else area * 0
        )
        keep = [torch.relu(log_goal + 0.1 * unit - lp) for lp in logps]
        mu = [math.exp(v) for v in log_mu]
        loss = area + WEIGHT_TV * tv + mu[0] * keep[0] + mu[1] * keep[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, lp in enumerate(logps):  # GECO: quick to defend, slow to relax
            c = max(-1.0, min(1.0, (log_goal - float(lp.detach())) / unit))
            log_mu[k] = max(lo, min(hi, log_mu[k] + MULTIPLIER_RATE * c * (1 if c > 0 else DECAY)))
        thetas.append(theta.detach().clone())
        if (step + 1) % YIELD_EVERY:
            continue
        yield _search_event(step + 1, STEPS)
        last, head = head, np.argsort(-_window_mean(thetas).numpy(), kind="stable")[:STABLE_HEAD]
        met = all(float(lp.detach()) >= log_goal for lp in logps)
        if step + 1 >= MIN_STEPS and met and last is not None and np.array_equal(last, head):
            break
    return _window_mean(thetas).numpy(), len(thetas)


def _gradient_scores(model: BagModel, target: int) -> np.ndarray:
    """Without counterfactual tissue: how much p(target) falls as each tile fades (to 0)."""
    m = torch.ones((len(model), 1), requires_grad=True)
    logp = torch.log_softmax(model.logits(m * model.e, model.coords), 0)[target]
    (grad,) = torch.autograd.grad(logp, m)
    return grad[:, 0].numpy()


def contiguous_order(scores: np.ndarray, grid: np.ndarray, head: int = ORDER_HEAD) -> np.ndarray:
    """Tiles best first, near-ties going to a tile that touches those already ranked.

    The first ``head`` places are chosen one at a time by score + `CONTIGUITY_BONUS` per
    edge neighbour already placed (evidence that is equally strong in several tiles is
    then kept as one piece, not scattered); the rest follow by score.
    """
    n = len(scores)
    order = list(np.argsort(-scores, kind="stable")[: min(n, 4 * head)])
    pool = np.asarray(order)
    index = {(int(grid[i, 0]), int(grid[i, 1])): k for k, i in enumerate(pool)}
    bonus = np.zeros(len(pool))
    free = np.ones(len(pool), bool)
    chosen: list[int] = []
    for _ in range(min(head, len(pool))):
        k = int(np.argmax(np.where(free, scores[pool] + bonus, -np.inf)))
        free[k] = False
        chosen.append(int(pool[k]))
        r, c = grid[pool[k]]
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            j = index.get((int(r + dr), int(c + dc)))
            if j is not None:
                bonus[j] += CONTIGUITY_BONUS
    taken = set(chosen)
    rest = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in taken]
    return np.asarray(chosen + rest, np.int64)


def smallest_prefix(order: np.ndarray, test: GoalTest) -> tuple[np.ndarray, Check]:
    """The fewest best-ranked tiles that pass (galloping, then bisection between the
    last failure and the first pass); the whole bag, failing or not, when none does."""
    n = len(order)

    def keep_top(k: int) -> torch.Tensor:
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.from_numpy(order[:k])] = True
        return keep

    failed, k, passed = 0, 1, None
    while passed is None:
        check = test(keep_top(k))
        if check.meets:
            passed = (k, check)
        elif k == n:
            return keep_top(n), check
        else:
            failed, k = k, min(n, 2 * k)
    hi, best = passed
    while hi - failed > 1:
        mid = (hi + failed) // 2
        check = test(keep_top(mid))
        if check.meets:
            hi, best = mid, check
        else:
            failed = mid
    return keep_top(hi), best


def greedy_drop(
    keep: torch.Tensor,
    scores: np.ndarray,
    grid: np.ndarray,
    test: Callable[[torch.Tensor], Check],
    check: Check,
) -> Generator[ProgressEvent, None, tuple[torch.Tensor, Check]]:
    """Drop, one at a time, every kept tile the goal does not need: those with the fewest
    kept neighbours first, then the lowest scored. Yields a "search" event per tile tried."""
    kept = torch.nonzero(keep)[:, 0].tolist()
    if not check.meets or len(kept) > GREEDY_MAX or len(kept) < 2:
        return keep, check
    cells = {(int(grid[i, 0]), int(grid[i, 1])) for i in kept}

    def touching(i: int) -> int:
        r, c = int(grid[i, 0]), int(grid[i, 1])
        return sum((r + dr, c + dc) in cells for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)))

    for tried, i in enumerate(sorted(kept, key=lambda i: (touching(i), scores[i]))):
        if int(keep.sum()) <= 1:
            break
        yield _search_event(tried + 1, len(kept))
        trial = keep.clone()
        trial[i] = False
        result = test(trial)
        if result.meets:
            keep, check = trial, result
            cells.discard((int(grid[i, 0]), int(grid[i, 1])))
    return keep, check
