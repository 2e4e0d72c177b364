"""The steps of the per-image optimisation, for a batch of tiles (`MaskRun.phase`).

Each step puts the masked inputs and their random-background versions through the
classifier in one batch (`MaskRun._forward`), adds each tile's loss (`MaskRun._terms`,
`Objective.combine`) and keeps each tile's book (`TileState`: its best mask that met
the goal, a valid fallback, whether it has settled). `napari_medcam.engine.optimise`
runs a coarse and a fine phase of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize
from napari_medcam.engine import losses
from napari_medcam.engine.absence import Absence
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.hooks import record_activations
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.prune import PoolCheck

CRISP = 0.25  # mean |soft − binary| below which a mask counts as committed


def layer_weights(config: MedCAMConfig, n: int) -> list[float]:
    """The activation loss's weight per layer (deeper layers weigh more), summing to 1."""
    if config.layer_weights is not None:
        if len(config.layer_weights) != n:
            raise ValueError(f"layer_weights has {len(config.layer_weights)} values for {n} layers")
        w = [float(v) for v in config.layer_weights]
    else:
        w = [2.0**i for i in range(n)]
    total = sum(w) or 1.0
    return [v / total for v in w]


@dataclass
class TileState:
    """Book-keeping of one tile in a batched optimisation."""

    target: int
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None  # met the goal
    fallback: tuple[float, torch.Tensor, torch.Tensor] | None = None  # valid only
    prev_hard: torch.Tensor | None = None
    stable: int = 0
    since_best: int = 0
    done: bool = False
    history: list[dict[str, float]] | None = None


class _Forward(NamedTuple):
    """One step's masks and the classifier's answers on them, for every tile."""

    soft: torch.Tensor  # (N, 1, *input)
    hard: torch.Tensor  # binarised with a straight-through gradient
    area_map: torch.Tensor  # what the area term pulls on (mask resolution)
    logits_e: torch.Tensor  # (N, classes): the masks over the absences
    logits_r: torch.Tensor  # (N·K, classes): over the perturbations
    feats: dict[str, torch.Tensor]  # activations of the masked batch


class _Seen(NamedTuple):
    """What a step showed of one tile's mask (no gradients)."""

    p_masked: float
    p_robust: float
    held: bool  # the decision held on the absence
    area: float
    flipped: float  # share of the binary mask that changed since the last step


class MaskRun:
    """The per-step work shared by the coarse and the fine phase of one batch."""

    def __init__(
        self,
        x: torch.Tensor,
        classifier: Classifier,
        cfg: MedCAMConfig,
        absences: Sequence[Absence],
        logits_x: torch.Tensor,
        ref_feats: list[torch.Tensor],
        objective: Objective,
        targets: Sequence[int],
    ) -> None:
        self.targets = [int(t) for t in targets]
        self.x, self.classifier, self.cfg = x, classifier, cfg
        self.absences, self.logits_x, self.ref_feats = absences, logits_x, ref_feats
        self.objective = objective
        self.alphas = layer_weights(cfg, len(classifier.layers))
        self.b = torch.cat([a.image for a in absences])
        #: each tile's goal on its absence and whole pool (the best-mask test, pruning)
        self.checks = [
            PoolCheck(x[i : i + 1], classifier.module, t, a, partial(objective.meets, i))
            for i, (t, a) in enumerate(zip(self.targets, absences))
        ]

    def _backgrounds(self, step: int, k: int) -> torch.Tensor:
        """``k`` checked backgrounds per tile, rotating through each tile's pool."""
        out = []
        for check in self.checks:
            idx = [(step * k + j) % len(check.pool) for j in range(k)]
            out.append(check.pool[idx])
        return torch.cat(out)

    def phase(
        self,
        mask_logits: Callable[[], torch.Tensor],
        opt: torch.optim.Optimizer,
        lr: float,
        steps: int,
        states: list[TileState],
        offset: int,
        tile: int,
        tiles: int,
        total: int,
    ) -> Generator[ProgressEvent, None, None]:
        """Up to ``steps`` optimiser steps on ``mask_logits``; ends when every tile is done.

        ``offset`` is the steps run in earlier phases (progress, background rotation).
        """
        cfg = self.cfg
        for step in range(1, steps + 1):
            warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            for group in opt.param_groups:
                group["lr"] = lr * warm
            ramp = min(1.0, step / cfg.ramp_steps) if cfg.ramp_steps else 1.0
            fwd = self._forward(mask_logits(), offset + step)
            loss = fwd.soft.new_zeros(())
            for i, st in enumerate(states):
                terms = self._terms(i, st, fwd)
                tile_loss, rank = self.objective.combine(i, terms, ramp)
                loss = loss + tile_loss
                with torch.no_grad():
                    seen = self._track(i, st, fwd, rank)
                record = {
                    n: float(v.detach()) for n, v in terms.items() if not n.endswith("_value")
                }
                record.update(
                    masked=seen.p_masked,
                    robust=seen.p_robust,
                    mask_area=seen.area,
                    loss=float(tile_loss.detach()),
                    **self.objective.multipliers(i),
                )
                if not st.done:
                    self._settle(st, i, fwd, seen, record, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield ProgressEvent(
                offset + step,
                total,
                states[0].history[-1],
                float(np.mean([s.history[-1]["masked"] for s in states])),
                float(np.mean([s.history[-1]["mask_area"] for s in states])),
                tile,
                tiles,
            )
            if all(s.done for s in states):
                break

    def _forward(self, logits_m: torch.Tensor, step: int) -> _Forward:
        """The step's masks over the absences and the perturbations, classified."""
        cfg, x = self.cfg, self.x
        model, layers = self.classifier.module, self.classifier.layers
        n, k = x.shape[0], cfg.n_perturbations
        soft_small = torch.sigmoid(logits_m)
        # the area term's pull on the logits: through the sigmoid it fades once the
        # mask is crisp; `linear_area` gives it a constant slope instead, same value
        area_map = losses.linear_slope(logits_m, soft_small) if cfg.linear_area else soft_small
        soft = resize(soft_small, tuple(x.shape[2:]))
        hard = losses.binarize(soft, cfg.threshold)
        e = hard * x + (1 - hard) * self.b
        if k:
            hk = hard.repeat_interleave(k, 0)
            r = hk * x.repeat_interleave(k, 0) + (1 - hk) * self._backgrounds(step, k)
            batch = torch.cat([e, r])
        else:
            batch = e
        with record_activations(model, layers) as acts:
            logits = model(batch)
            feats = {name: acts[name] for name in layers}
        return _Forward(soft, hard, area_map, logits[:n], logits[n:], feats)

    def _terms(self, i: int, st: TileState, fwd: _Forward) -> dict[str, torch.Tensor]:
        """Tile ``i``'s loss terms (`napari_medcam.engine.losses`) and measured values."""
        cfg, k, one = self.cfg, self.cfg.n_perturbations, slice(i, i + 1)
        soft, hard, logits_e = fwd.soft, fwd.hard, fwd.logits_e
        rob = fwd.logits_r[i * k : (i + 1) * k]
        return {
            "act": losses.activation_loss(
                [f[one] for f in self.ref_feats],
                [fwd.feats[name][one] for name in self.classifier.layers],
                self.alphas,
            ),
            "kl": losses.kl_loss(self.logits_x[one], logits_e[one], cfg.temperature),
            "ce": losses.ce_loss(logits_e[one], st.target),
            "margin": losses.margin_loss(logits_e[one], st.target),
            "area": losses.area_loss(fwd.area_map[one]),
            "bin": losses.binarization_loss(soft[one]),
            "tv": losses.tv_loss(soft[one]),
            "rob": losses.robustness_loss(rob, st.target) if k else soft.new_zeros(()),
            "area_value": hard[one].mean(),
            "tv_value": losses.tv_loss(hard[one]).detach(),
        }

    def _track(self, i: int, st: TileState, fwd: _Forward, rank: float) -> _Seen:
        """Measure tile ``i``'s mask; keep it as the best (or the fallback) when it is;
        step the tile's multipliers."""
        cfg, k, obj, one = self.cfg, self.cfg.n_perturbations, self.objective, slice(i, i + 1)
        soft, hard = fwd.soft, fwd.hard
        rob = fwd.logits_r[i * k : (i + 1) * k]
        logp_m = float(torch.log_softmax(fwd.logits_e[i], 0)[st.target])
        p_rob_each = torch.softmax(rob, 1)[:, st.target] if k else None
        p_masked = math.exp(logp_m)
        p_robust = float(p_rob_each.mean()) if k else p_masked
        held = int(fwd.logits_e[i].argmax()) == st.target
        area = float(hard[one].mean())
        sane = cfg.min_area <= area <= cfg.max_area
        valid = held and p_robust >= 0.5 and sane
        if (
            not st.done
            and sane
            and obj.meets(i, p_masked, p_robust, held)
            and (st.best is None or rank < st.best[0])
            and obj.meets(i, p_masked, self.checks[i].pool_confidence(hard[one]), held)
        ):
            # a step sees only k backgrounds: a new best must also hold on the
            # tile's whole pool, or a lucky draw would pick too small a mask
            st.best = (rank, soft[one].detach().clone(), hard[one].detach().clone())
            st.since_best = -1
        elif (
            not st.done
            and valid
            and st.best is None
            and (st.fallback is None or -p_masked < st.fallback[0])
        ):
            st.fallback = (-p_masked, soft[one].detach().clone(), hard[one].detach().clone())
        st.since_best += held  # a tile recovering the decision is not quiet
        obj.update(i, logp_m, math.log(max(p_robust, 1e-12)))
        flipped = 1.0 if st.prev_hard is None else float((hard[one] != st.prev_hard).float().mean())
        st.prev_hard = hard[one].detach()
        return _Seen(p_masked, p_robust, held, area, flipped)

    def _settle(
        self,
        st: TileState,
        i: int,
        fwd: _Forward,
        seen: _Seen,
        record: dict[str, float],
        step: int,
    ) -> None:
        """Record the step in the tile's history and decide whether the tile is done."""
        cfg, one = self.cfg, slice(i, i + 1)
        st.history.append(record)
        # stable = the binary mask stopped changing, the decision holds, and the soft
        # mask has committed (a uniform 0.6 start is "stable" but undecided)
        crisp = float((fwd.soft[one] - fwd.hard[one]).detach().abs().mean()) < CRISP
        settled = seen.flipped <= cfg.stable_change and seen.held and crisp
        st.stable = st.stable + 1 if settled else 0
        # done: stable, or (constrained) no better mask for twice the patience
        quiet = self.objective.constrained and st.since_best >= 2 * cfg.patience
        st.done = bool(
            cfg.patience
            and step >= cfg.min_steps
            and (st.stable >= cfg.patience or quiet)
            and st.best is not None
        )
