"""The per-image Med-CAM optimisation: a generator of progress events, cancellable.

`optimise_masks` trains a fresh U-Net per classifier-sized input and returns (as the
generator's return value) the best mask it saw: the best-ranked (`Objective`) among
steps where the binary mask met the goal — the decision kept on the absence and on
random backgrounds (with a tolerance: the confidence kept too) — and was neither empty
nor near-full; failing that, the valid mask with the highest masked confidence.
Stopping the generator (closing it, or a napari worker's quit) cancels at the next step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize
from napari_medcam.engine import losses
from napari_medcam.engine.absence import Absence
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.hooks import record_activations
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.prune import PoolCheck
from napari_medcam.engine.regions import RegionReport, at_scale
from napari_medcam.engine.saliency import gradcam_maps
from napari_medcam.engine.unet import UNet

CRISP = 0.25  # mean |soft − binary| below which a mask counts as committed
REFINE_LOGIT = 1.0  # how far from the threshold the refinement starts (logit units)


@dataclass
class MaskResult:
    """What one optimisation found, at the classifier's input resolution."""

    soft: torch.Tensor  # (1, 1, *input) in [0, 1]
    hard: torch.Tensor  # (1, 1, *input) in {0, 1}
    found_valid: bool
    steps: int
    history: list[dict[str, float]]
    met_goal: bool = False  # the constrained goal (tolerance) was reached, not only validity
    regions: RegionReport | None = None  # what `regionalise` made of the mask


def _layer_weights(config: MedCAMConfig, n: int) -> list[float]:
    if config.layer_weights is not None:
        if len(config.layer_weights) != n:
            raise ValueError(f"layer_weights has {len(config.layer_weights)} values for {n} layers")
        w = [float(v) for v in config.layer_weights]
    else:
        w = [2.0**i for i in range(n)]
    total = sum(w) or 1.0
    return [v / total for v in w]


@dataclass
class _TileState:
    """Book-keeping of one tile in a batched optimisation."""

    target: int
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None  # met the goal
    fallback: tuple[float, torch.Tensor, torch.Tensor] | None = None  # valid only
    prev_hard: torch.Tensor | None = None
    stable: int = 0
    since_best: int = 0
    done: bool = False
    history: list[dict[str, float]] | None = None


def _stacked_unets(n: int, classifier: Classifier, cfg: MedCAMConfig, device: torch.device):
    """``n`` independently initialised U-Nets as one functional model over stacked weights.

    Tile ``i`` is initialised from seed ``cfg.seed + i``, so a batch of one equals the
    single-image run and each tile of a batch keeps its own explainer.
    """
    nets = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for i in range(n):
            torch.manual_seed(cfg.seed + i)
            nets.append(
                UNet(
                    classifier.channels,
                    cfg.unet_channels,
                    classifier.spatial_dims,
                    cfg.init_fill,
                    cfg.init_spread,
                )
            )
    params, buffers = stack_module_state(nets)
    params = {k: v.to(device).detach().requires_grad_(True) for k, v in params.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    base = copy.deepcopy(nets[0]).to("meta")

    def one(p, b, xi):
        return functional_call(base, (p, b), (xi[None],))[0]

    batched = vmap(one)
    return params, lambda x_small: batched(params, buffers, x_small)


def _prior_logits(
    x: torch.Tensor,
    classifier: Classifier,
    targets: Sequence[int],
    cfg: MedCAMConfig,
    size: tuple[int, ...],
) -> torch.Tensor:
    """A fixed logit offset from Grad-CAM, in [−strength, +strength], at mask resolution.

    The explainer starts from an (almost) full mask either way; with a prior, the
    least class-relevant regions leave the mask first, so it shrinks region by
    region instead of falling off a cliff (all pixels crossing 0.5 together),
    which is how the optimisation otherwise loses the decision and stays lost.
    The U-Net remains free to override it.
    """
    if not cfg.prior_strength or not classifier.layers:
        return x.new_zeros((x.shape[0], 1, *size))
    cams, _ = gradcam_maps(x, classifier, targets)
    return cfg.prior_strength * (2 * resize(cams, size) - 1)


def optimise_masks(
    x: torch.Tensor,
    classifier: Classifier,
    targets: Sequence[int],
    config: MedCAMConfig,
    absences: Sequence[Absence],
    *,
    tile: int = 0,
    tiles: int = 1,
    warm_start: torch.Tensor | None = None,
) -> Generator[ProgressEvent, None, list[MaskResult]]:
    """Train one U-Net per input so that its binary mask keeps the evidence for its target.

    ``x`` holds N normalised inputs (N, C, *input_size) on the classifier's device;
    all N masked images and their N·K random-background versions go through the
    classifier in one batch per step. The U-Net works at ``mask_scale`` of the input;
    with ``refine_steps`` its mask is then refined at full resolution (coarse to fine:
    a free logit map added to the coarse logits), so that evidence a few pixels across
    can be followed. Each tile keeps the best mask that met the goal (`Objective`) and
    stops counting once stable; a phase ends when every tile is done. ``warm_start``
    (N, 1, *input_size) soft masks (an amortised explainer's) skip the coarse phase:
    only the ``refine_steps`` full-resolution refinement runs, starting from them.
    """
    cfg = config
    n = x.shape[0]
    model, layers = classifier.module, classifier.layers
    with torch.no_grad(), record_activations(model, layers) as acts:
        logits_x = model(x)
        ref_feats = [acts[name].detach() for name in layers]
    p0 = torch.softmax(logits_x, 1)[torch.arange(n), torch.as_tensor(list(targets))].tolist()
    run = _Run(x, classifier, cfg, absences, logits_x, ref_feats, Objective(cfg, p0), targets)
    states = [_TileState(int(t), history=[]) for t in targets]
    coarse_steps = cfg.steps if warm_start is None else 0
    total = coarse_steps + cfg.refine_steps

    spatial = tuple(x.shape[2:])
    if warm_start is None:
        mask_size = tuple(max(4, round(s * cfg.mask_scale)) for s in spatial)
        params, unets = _stacked_unets(n, classifier, cfg, x.device)
        x_small = resize(x, mask_size)
        prior = _prior_logits(x, classifier, targets, cfg, mask_size)
        opt = torch.optim.Adam(params.values(), lr=cfg.lr)
        yield from run.phase(
            lambda: unets(x_small) + prior, opt, cfg.lr, cfg.steps, states, 0, tile, tiles, total
        )
        with torch.no_grad():
            final = resize(torch.sigmoid(unets(x_small) + prior), spatial)
    else:
        final = warm_start.detach()

    if cfg.refine_steps:
        start = torch.cat(
            [
                st.best[1] if st.best else st.fallback[1] if st.fallback else final[i : i + 1]
                for i, st in enumerate(states)
            ]
        )
        # the coarse mask's logits, squeezed to ±REFINE_LOGIT: from ±4 a pixel deep inside
        # a coarse blob could not leave it in a short refinement (Adam moves ~lr a step)
        coarse = REFINE_LOGIT * torch.tanh(torch.logit(start.clamp(1e-4, 1 - 1e-4)) / 4)
        coarse = coarse.detach()
        residual = torch.zeros_like(coarse, requires_grad=True)
        opt = torch.optim.Adam([residual], lr=cfg.refine_lr)
        for st in states:
            st.done, st.stable, st.prev_hard, st.since_best = False, 0, None, 0
        fine = cfg.replace(warmup_steps=0, ramp_steps=0, min_steps=0)
        run.cfg = fine
        yield from run.phase(
            lambda: coarse + residual,
            opt,
            cfg.refine_lr,
            cfg.refine_steps,
            states,
            coarse_steps,
            tile,
            tiles,
            total,
        )
        with torch.no_grad():
            final = torch.sigmoid(coarse + residual)

    results = []
    for i, st in enumerate(states):
        kept = st.best or st.fallback
        if kept is None:
            soft_i = final[i : i + 1]
            hard_i = (soft_i > cfg.threshold).float()
            results.append(MaskResult(soft_i, hard_i, False, len(st.history), st.history))
        else:
            met = st.best is not None
            soft_i, hard_i, report = kept[1], kept[2], None
            if classifier.spatial_dims == 2:  # the 3-D preset keeps its own tuned masks
                soft_i, hard_i, report = at_scale(
                    run.checks[i], soft_i, hard_i, cfg, classifier, cfg.prune and met
                )
            results.append(
                MaskResult(soft_i, hard_i, True, len(st.history), st.history, met, report)
            )
    return results


class _Run:
    """The per-step work shared by the coarse and the fine phase of one batch."""

    def __init__(self, x, classifier, cfg, absences, logits_x, ref_feats, objective, targets):
        self.targets = [int(t) for t in targets]
        self.x, self.classifier, self.cfg = x, classifier, cfg
        self.absences, self.logits_x, self.ref_feats = absences, logits_x, ref_feats
        self.objective = objective
        self.alphas = _layer_weights(cfg, len(classifier.layers))
        self.b = torch.cat([a.baseline for a in absences])
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

    def phase(self, mask_logits, opt, lr, steps, states, offset, tile, tiles, total):
        cfg, x, obj = self.cfg, self.x, self.objective
        model, layers = self.classifier.module, self.classifier.layers
        n, k = x.shape[0], cfg.n_backgrounds
        spatial = tuple(x.shape[2:])
        for step in range(1, steps + 1):
            warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            for group in opt.param_groups:
                group["lr"] = lr * warm
            ramp = min(1.0, step / cfg.ramp_steps) if cfg.ramp_steps else 1.0
            logits_m = mask_logits()
            soft_small = torch.sigmoid(logits_m)
            # the area term's pull on the logits: through the sigmoid it fades once the
            # mask is crisp; `linear_area` gives it a constant slope instead, same value
            area_map = losses.linear_slope(logits_m, soft_small) if cfg.linear_area else soft_small
            soft = resize(soft_small, spatial)
            hard = losses.binarize(soft, cfg.threshold)
            e = hard * x + (1 - hard) * self.b
            if k:
                hk = hard.repeat_interleave(k, 0)
                r = hk * x.repeat_interleave(k, 0) + (1 - hk) * self._backgrounds(offset + step, k)
                batch = torch.cat([e, r])
            else:
                batch = e
            with record_activations(model, layers) as acts:
                logits = model(batch)
                feats = {name: acts[name] for name in layers}
            logits_e, logits_r = logits[:n], logits[n:]
            loss = soft.new_zeros(())
            for i, st in enumerate(states):
                one = slice(i, i + 1)
                rob = logits_r[i * k : (i + 1) * k]
                terms = {
                    "act": losses.activation_loss(
                        [f[one] for f in self.ref_feats],
                        [feats[name][one] for name in layers],
                        self.alphas,
                    ),
                    "kl": losses.kl_loss(self.logits_x[one], logits_e[one], cfg.temperature),
                    "ce": losses.ce_loss(logits_e[one], st.target),
                    "margin": losses.margin_loss(logits_e[one], st.target),
                    "area": losses.area_loss(area_map[one]),
                    "bin": losses.binarization_loss(soft[one]),
                    "tv": losses.tv_loss(soft[one]),
                    "rob": losses.robustness_loss(rob, st.target) if k else soft.new_zeros(()),
                    "area_value": hard[one].mean(),
                    "tv_value": losses.tv_loss(hard[one]).detach(),
                }
                tile_loss, rank = obj.combine(i, terms, ramp)
                loss = loss + tile_loss
                with torch.no_grad():
                    logp_m = float(torch.log_softmax(logits_e[i], 0)[st.target])
                    p_rob_each = torch.softmax(rob, 1)[:, st.target] if k else None
                    p_masked = math.exp(logp_m)
                    p_robust = float(p_rob_each.mean()) if k else p_masked
                    held = int(logits_e[i].argmax()) == st.target
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
                        st.fallback = (
                            -p_masked,
                            soft[one].detach().clone(),
                            hard[one].detach().clone(),
                        )
                    st.since_best += held  # a tile recovering the decision is not quiet
                    obj.update(i, logp_m, math.log(max(p_robust, 1e-12)))
                    flipped = (
                        1.0
                        if st.prev_hard is None
                        else float((hard[one] != st.prev_hard).float().mean())
                    )
                    st.prev_hard = hard[one].detach()
                record = {
                    n: float(v.detach()) for n, v in terms.items() if not n.endswith("_value")
                }
                record.update(
                    masked=p_masked,
                    robust=p_robust,
                    mask_area=area,
                    loss=float(tile_loss.detach()),
                    **obj.multipliers(i),
                )
                if not st.done:
                    st.history.append(record)
                    # stable = the binary mask stopped changing, the decision holds, and
                    # the soft mask has committed (a uniform 0.6 start is "stable" but
                    # undecided)
                    crisp = float((soft[one] - hard[one]).detach().abs().mean()) < CRISP
                    settled = flipped <= cfg.stable_change and held and crisp
                    st.stable = st.stable + 1 if settled else 0
                    # done: stable, or (constrained) no better mask for twice the patience
                    quiet = obj.constrained and st.since_best >= 2 * cfg.patience
                    st.done = bool(
                        cfg.patience
                        and step >= cfg.min_steps
                        and (st.stable >= cfg.patience or quiet)
                        and st.best is not None
                    )
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


def to_numpy_mask(t: torch.Tensor) -> np.ndarray:
    return t[0, 0].detach().cpu().numpy()
