"""The per-image Med-CAM optimisation: a generator of progress events, cancellable.

`optimise_mask` trains a fresh U-Net on one classifier-sized input and returns
(as the generator's return value) the best *valid* mask it saw: the lowest full
objective among steps where the binary mask kept the decision, kept it on random
backgrounds, and was neither empty nor near-full. Stopping the generator (closing
it, or a napari worker's quit) cancels at the next step.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine import losses
from napari_medcam.engine.backgrounds import make_baseline, sample_backgrounds
from napari_medcam.engine.config import BASELINES, MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.prepare import resize
from napari_medcam.engine.saliency import gradcam_maps
from napari_medcam.engine.unet import UNet

EVAL_BACKGROUNDS = 16  # random backgrounds used to report the robust confidence
CRISP = 0.25  # mean |soft − binary| below which a mask counts as committed


@contextmanager
def record_activations(module: nn.Module, names: Sequence[str]):
    """Collect the outputs of the named sub-modules during forward passes."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, o, n=n: store.__setitem__(n, o))
        for n in names
    ]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@dataclass
class MaskResult:
    """What one optimisation found, at the classifier's input resolution."""

    soft: torch.Tensor  # (1, 1, *input) in [0, 1]
    hard: torch.Tensor  # (1, 1, *input) in {0, 1}
    found_valid: bool
    steps: int
    history: list[dict[str, float]]


@dataclass
class BaselineChoice:
    baseline: torch.Tensor
    name: str
    noises: tuple[str, ...]
    problem: str  # empty when a neutral baseline and neutral backgrounds exist


def choose_baseline(
    x: torch.Tensor, classifier: Classifier, target: int, config: MedCAMConfig
) -> BaselineChoice:
    """Pick the first neutral baseline (one the classifier does not call ``target``).

    On real stain the dataset-mean colour can itself look positive; an empty mask
    would then "keep" the decision. The configured baseline is tried first, then
    the others; random-background kinds that look like the target are dropped.
    """
    order = [config.baseline] + [b for b in BASELINES if b != config.baseline]
    cands = [make_baseline(k, x, classifier, config.blur_sigma) for k in order]
    gen = torch.Generator(device=x.device).manual_seed(config.seed + 7919)
    noise_kinds = tuple(dict.fromkeys(config.noises))
    blurred = make_baseline("blur", x, classifier, config.blur_sigma)
    noises = sample_backgrounds(noise_kinds, len(noise_kinds), x, blurred, gen)
    with torch.no_grad():
        pred = classifier.module(torch.cat(cands + [noises])).argmax(1).tolist()
    neutral = [k for k, p in zip(order, pred[: len(order)]) if p != target]
    kept = tuple(k for k, p in zip(noise_kinds, pred[len(order) :]) if p != target)
    name = target_name = classifier.class_names[target]
    if not neutral:
        return BaselineChoice(
            cands[0],
            order[0],
            kept or noise_kinds,
            f"no neutral baseline: the classifier calls every baseline ({', '.join(order)}) "
            f"'{target_name}', so the evidence for '{name}' is the absence of anything else",
        )
    if not kept and config.n_backgrounds:
        return BaselineChoice(
            cands[order.index(neutral[0])],
            neutral[0],
            noise_kinds,
            f"no neutral random background: the classifier calls every one '{target_name}'",
        )
    return BaselineChoice(cands[order.index(neutral[0])], neutral[0], kept or noise_kinds, "")


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
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    prev_hard: torch.Tensor | None = None
    stable: int = 0
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
    choices: Sequence[BaselineChoice],
    *,
    tile: int = 0,
    tiles: int = 1,
) -> Generator[ProgressEvent, None, list[MaskResult]]:
    """Train one U-Net per input so that its binary mask keeps the evidence for its target.

    ``x`` holds N normalised inputs (N, C, *input_size) on the classifier's device;
    all N masked images and their N·K random-background versions go through the
    classifier in one batch per step. Each tile keeps the best valid mask it saw and
    stops counting once stable; the loop ends when every tile is done.
    """
    device = x.device
    cfg = config
    n = x.shape[0]
    model = classifier.module
    layers = classifier.layers
    alphas = _layer_weights(cfg, len(layers))
    k = cfg.n_backgrounds
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    params, unets = _stacked_unets(n, classifier, cfg, device)
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    spatial = tuple(x.shape[2:])
    mask_size = tuple(max(4, round(s * cfg.mask_scale)) for s in spatial)
    x_small = resize(x, mask_size)
    prior = _prior_logits(x, classifier, targets, cfg, mask_size)
    b = torch.cat([c.baseline for c in choices])
    blurred = make_baseline("blur", x, classifier, cfg.blur_sigma)
    with torch.no_grad(), record_activations(model, layers) as acts:
        logits_x = model(x)
        ref_feats = [acts[name].detach() for name in layers]
    states = [_TileState(int(t), history=[]) for t in targets]

    step = 0
    for step in range(1, cfg.steps + 1):
        warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warm
        ramp = min(1.0, step / cfg.ramp_steps) if cfg.ramp_steps else 1.0

        logits_m = unets(x_small) + prior
        soft_small = torch.sigmoid(logits_m)
        # the area term's pull on the logits: through the sigmoid it fades to nothing
        # once the mask is crisp (and the mask freezes at whatever size it had);
        # `linear_area` gives it a constant slope instead, same value
        area_map = losses.linear_slope(logits_m, soft_small) if cfg.linear_area else soft_small
        soft = resize(soft_small, spatial)
        hard = losses.binarize(soft, cfg.threshold)
        e = hard * x + (1 - hard) * b
        noise = torch.cat(
            [
                sample_backgrounds(
                    choices[i].noises, k, x[i : i + 1], blurred[i : i + 1], gen, offset=step * k
                )
                for i in range(n)
            ]
        )
        r = (
            hard.repeat_interleave(k, 0) * x.repeat_interleave(k, 0)
            + (1 - hard.repeat_interleave(k, 0)) * noise
        )
        with record_activations(model, layers) as acts:
            logits = model(torch.cat([e, r]))
            feats = {name: acts[name] for name in layers}
        logits_e, logits_r = logits[:n], logits[n:]

        loss = soft.new_zeros(())
        for i, st in enumerate(states):
            one = slice(i, i + 1)
            rob = logits_r[i * k : (i + 1) * k]
            terms = {
                "act": losses.activation_loss(
                    [f[one] for f in ref_feats], [feats[name][one] for name in layers], alphas
                ),
                "kl": losses.kl_loss(logits_x[one], logits_e[one], cfg.temperature),
                "ce": losses.ce_loss(logits_e[one], st.target),
                "area": losses.area_loss(area_map[one]),
                "bin": losses.binarization_loss(soft[one]),
                "tv": losses.tv_loss(soft[one]),
                "rob": losses.robustness_loss(rob, st.target) if k else soft.new_zeros(()),
            }
            keep = (
                cfg.lambda_act * terms["act"]
                + cfg.lambda_ce * terms["ce"]
                + cfg.lambda_kl * terms["kl"]
            )
            minimal = (
                cfg.lambda_area * terms["area"]
                + cfg.lambda_bin * terms["bin"]
                + cfg.lambda_tv * terms["tv"]
            )
            robust = cfg.lambda_rob * terms["rob"]
            loss = loss + keep + ramp * minimal + robust
            with torch.no_grad():
                p_masked = float(torch.softmax(logits_e[i], 0)[st.target])
                p_robust = float(torch.softmax(rob, 1)[:, st.target].mean()) if k else p_masked
                held = int(logits_e[i].argmax()) == st.target
                area = float(hard[one].mean())
                objective = float((keep + minimal + robust).detach())
                ok = held and p_robust >= 0.5 and cfg.min_area <= area <= cfg.max_area
                if not st.done and ok and (st.best is None or objective < st.best[0]):
                    st.best = (objective, soft[one].detach().clone(), hard[one].detach().clone())
                flipped = (
                    1.0
                    if st.prev_hard is None
                    else float((hard[one] != st.prev_hard).float().mean())
                )
                st.prev_hard = hard[one].detach()
            record = {name: float(v.detach()) for name, v in terms.items()}
            record.update(
                masked=p_masked,
                robust=p_robust,
                mask_area=area,
                loss=float((keep + ramp * minimal + robust).detach()),
            )
            if not st.done:
                st.history.append(record)
                # stable = the binary mask stopped changing, the decision holds, and the
                # soft mask has committed (a uniform 0.6 start is "stable" but undecided)
                crisp = float((soft[one] - hard[one]).detach().abs().mean()) < CRISP
                settled = flipped <= cfg.stable_change and held and crisp
                st.stable = st.stable + 1 if settled else 0
                st.done = bool(
                    cfg.patience
                    and step >= cfg.min_steps
                    and st.stable >= cfg.patience
                    and st.best is not None
                )

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = states[0].history[-1]
        yield ProgressEvent(
            step,
            cfg.steps,
            first,
            float(np.mean([s.history[-1]["masked"] for s in states])),
            float(np.mean([s.history[-1]["mask_area"] for s in states])),
            tile,
            tiles,
        )
        if all(s.done for s in states):
            break

    results = []
    with torch.no_grad():
        final = resize(torch.sigmoid(unets(x_small) + prior), spatial)
    for i, st in enumerate(states):
        if st.best is None:
            soft_i = final[i : i + 1]
            results.append(
                MaskResult(
                    soft_i, (soft_i > cfg.threshold).float(), False, len(st.history), st.history
                )
            )
        else:
            results.append(MaskResult(st.best[1], st.best[2], True, len(st.history), st.history))
    return results


def evaluate_mask(
    x: torch.Tensor,
    hard: torch.Tensor,
    classifier: Classifier,
    target: int,
    choice: BaselineChoice,
    config: MedCAMConfig,
) -> dict[str, float | list[float]]:
    """Confidences of a binary mask: on the baseline, on random backgrounds, and deleted."""
    gen = torch.Generator(device=x.device).manual_seed(config.seed + 104729)
    blurred = make_baseline("blur", x, classifier, config.blur_sigma)
    noise = sample_backgrounds(choice.noises, EVAL_BACKGROUNDS, x, blurred, gen)
    b = choice.baseline
    batch = torch.cat(
        [hard * x + (1 - hard) * b, hard * x + (1 - hard) * noise, (1 - hard) * x + hard * b]
    )
    with torch.no_grad():
        probs = torch.softmax(classifier.module(batch), 1)
    return {
        "masked": float(probs[0, target]),
        "masked_probabilities": probs[0].tolist(),
        "robust": float(probs[1:-1, target].mean()),
        "deletion": float(probs[-1, target]),
        "masked_pred": int(probs[0].argmax()),
    }


def to_numpy_mask(t: torch.Tensor) -> np.ndarray:
    return t[0, 0].detach().cpu().numpy()
