"""How the loss terms combine: the paper's fixed weights, or a constrained problem.

**Fixed** (``config.tolerance is None``, the paper preset): the published weighted sum
``λ_act·L_act + λ_ce·L_CE + λ_kl·L_KL + λ_area·L_area + λ_bin·L_bin + λ_tv·L_tv +
λ_rob·L_rob``. Seven weights, chosen per data set by hand.

**Constrained** (``config.tolerance`` set, the default recipe): the paper's own future
work, "automatic choice of the loss weights". The mask solves

    minimise  L_area + w_tv·L_tv + w_bin·L_bin
    subject to  p(target | mask on the absence)       ≥ tolerance · p(target | image)
                p(target | mask on the backgrounds)   ≥ tolerance · p(target | image)

by a Lagrangian whose two multipliers (one for keeping the evidence — CE with the
activation and KL terms in the paper's 15:10:5 proportion — one for robustness) adapt
per image and step, GECO-style (Rezende & Viola 2018): ``log μ += rate · c``, where
``c`` ∈ [−1, 1] is the constraint's normalised violation (the shortfall of
log p(target) below the goal, in units of −log tolerance). A satisfied constraint lets
its multiplier decay (at half the rate), so the area shrinks; a violated one
raises it until the evidence comes back. Fitting an amortised explainer uses one
*shared* pair (``shared=True``) stepped by the batch's mean violation, as GECO does
for a network: a tile's own pair would move only when it is sampled (every ~50
steps), far too slowly to stop the area term emptying every mask. (Tiles that can
never meet the goal keep the shared pair rising, so masks grow with the fit's length:
the fit's step count is part of the recipe; BENCHMARKS.md.) The user's one knob is
``tolerance`` ("keep ≥ 95 % of the confidence"); ``weight_tv``, ``weight_bin`` and the rates are the
recipe's, the same for every classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from napari_medcam.engine.config import MedCAMConfig

KEEP_ACT = 10 / 15  # activation and KL terms relative to CE inside "keep" (paper 10:15:5)
KEEP_KL = 5 / 15
MARGIN = 0.1  # the non-saturating log-odds stands for CE in "keep" (see losses.margin_loss)
MULTIPLIER_RANGE = (1e-2, 1e3)
DECAY = 0.5  # a satisfied constraint relaxes its multiplier at half the rate


class Objective:
    """Combine one tile's loss terms; adapt its multipliers; say when it meets the goal."""

    def __init__(
        self, config: MedCAMConfig, originals: Sequence[float], shared: bool = False
    ) -> None:
        self.cfg = config
        self.constrained = config.tolerance is not None
        self.shared = shared
        n = 1 if shared else len(originals)
        self.log_mu_keep = [math.log(config.multiplier_init)] * n
        self.log_mu_rob = [math.log(config.multiplier_init)] * n
        tol = config.tolerance if self.constrained else 0.0
        # the goal in log-probability; never above log 0.5 less a little when the
        # original is unsure (p0 = 0.55 → the decision must still hold)
        self.goal = [
            math.log(max(tol * p0, min(0.5, p0) + 1e-3)) if self.constrained else 0.0
            for p0 in originals
        ]
        self.unit = -math.log(tol) if self.constrained and tol < 1 else 0.05

    def combine(
        self, i: int, terms: dict[str, torch.Tensor], ramp: float
    ) -> tuple[torch.Tensor, float]:
        """(loss to minimise, the objective value used to rank valid masks)."""
        cfg = self.cfg
        if not self.constrained:
            keep = cfg.lambda_act * terms["act"] + cfg.lambda_ce * terms["ce"]
            keep = keep + cfg.lambda_kl * terms["kl"]
            minimal = (
                cfg.lambda_area * terms["area"]
                + cfg.lambda_bin * terms["bin"]
                + cfg.lambda_tv * terms["tv"]
            )
            robust = cfg.lambda_rob * terms["rob"]
            return keep + ramp * minimal + robust, float((keep + minimal + robust).detach())
        minimal = terms["area"] + cfg.weight_tv * terms["tv"] + cfg.weight_bin * terms["bin"]
        keep = MARGIN * terms["margin"] + KEEP_ACT * terms["act"] + KEEP_KL * terms["kl"]
        k = 0 if self.shared else i
        mu_k, mu_r = math.exp(self.log_mu_keep[k]), math.exp(self.log_mu_rob[k])
        loss = ramp * minimal + mu_k * keep + mu_r * terms["rob"]
        # ranked on the binary mask the user gets: the soft map's TV favours a blurry
        # coarse blob over a crisp full-resolution mask of the same evidence
        rank = float((terms["area_value"] + cfg.weight_tv * terms["tv_value"]).detach())
        return loss, rank

    def update(self, i: int, log_p_masked: float, log_p_robust: float) -> None:
        """One dual step for tile ``i`` from this step's (mean) log-probabilities."""
        self.update_batch([i], [log_p_masked], [log_p_robust])

    def update_batch(
        self, tiles: Sequence[int], log_p_masked: Sequence[float], log_p_robust: Sequence[float]
    ) -> None:
        """One dual step for each of ``tiles`` (shared: one step by their mean violation)."""
        if not self.constrained or not len(tiles):
            return
        rate = self.cfg.multiplier_rate
        lo, hi = (math.log(v) for v in MULTIPLIER_RANGE)
        for name, logps in (("log_mu_keep", log_p_masked), ("log_mu_rob", log_p_robust)):
            cs = [
                max(-1.0, min(1.0, (self.goal[i] - logp) / self.unit))
                for i, logp in zip(tiles, logps)
            ]
            pairs = [(0, sum(cs) / len(cs))] if self.shared else list(zip(tiles, cs))
            values = getattr(self, name)
            for k, c in pairs:
                # slow to relax, quick to defend: a multiplier that falls fast lets the
                # whole mask cross the threshold at once and the decision is lost
                step = rate * c if c > 0 else DECAY * rate * c
                values[k] = max(lo, min(hi, values[k] + step))

    def meets(self, i: int, p_masked: float, p_robust: float, held: bool) -> bool:
        """Whether a step's binary mask reaches the goal (fixed weights: keeps the decision
        on the absence and on average over the backgrounds)."""
        if not self.constrained:
            return held and p_robust >= 0.5
        goal = math.exp(self.goal[i])
        return held and p_masked >= goal and p_robust >= goal

    def multipliers(self, i: int) -> dict[str, float]:
        k = 0 if self.shared else i
        return {"mu_keep": math.exp(self.log_mu_keep[k]), "mu_rob": math.exp(self.log_mu_rob[k])}
