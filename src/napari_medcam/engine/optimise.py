"""The per-image Med-CAM optimisation: a generator of progress events, cancellable.

`optimise_masks` trains a fresh U-Net per classifier-sized input and returns (as the
generator's return value) the best mask it saw: the best-ranked (`Objective`) among
steps where the binary mask met the goal — the decision kept on the absence and on
the perturbations (with a tolerance: the confidence kept too) — and was neither empty
nor near-full; failing that, the valid mask with the highest masked confidence.
Stopping the generator (closing it, or a napari worker's quit) cancels at the next step.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize
from napari_medcam.engine.absence import Absence
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.hooks import record_activations
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.regions import RegionReport, at_scale
from napari_medcam.engine.saliency import gradcam_maps
from napari_medcam.engine.steps import MaskRun, TileState
from napari_medcam.engine.unet import UNet
from napari_medcam.engine.verdict import ROBUST_MIN

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
    run = MaskRun(x, classifier, cfg, absences, logits_x, ref_feats, Objective(cfg, p0), targets)
    states = [TileState(int(t), history=[]) for t in targets]
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
            # a fallback (valid, goal not reached in the steps given: a capped run) is made
            # regions under the test it passed — validity — instead of staying speckle
            check = run.checks[i] if met else run.checks[i].with_goal(_valid)
            if classifier.spatial_dims == 2:  # the 3-D preset keeps its own tuned masks
                soft_i, hard_i, report = at_scale(check, soft_i, hard_i, cfg, classifier, cfg.prune)
            results.append(
                MaskResult(soft_i, hard_i, True, len(st.history), st.history, met, report)
            )
    return results


def _valid(p_masked: float, p_pool: float, held: bool) -> bool:
    """The validity test (`napari_medcam.engine.verdict`) as a pool check's goal: the
    decision held on the absence, p(target) ≥ 0.5 on average over the pool."""
    return held and p_pool >= ROBUST_MIN


def to_numpy_mask(t: torch.Tensor) -> np.ndarray:
    return t[0, 0].detach().cpu().numpy()
