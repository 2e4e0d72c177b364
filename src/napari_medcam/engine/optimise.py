"""The per-image Med-CAM optimisation: a generator of progress events, cancellable.

`optimise_mask` trains a fresh U-Net on one classifier-sized input and returns
(as the generator's return value) the best *valid* mask it saw: the lowest full
objective among steps where the binary mask kept the decision, kept it on random
backgrounds, and was neither empty nor near-full. Stopping the generator (closing
it, or a napari worker's quit) cancels at the next step.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine import losses
from napari_medcam.engine.backgrounds import make_baseline, sample_backgrounds
from napari_medcam.engine.config import BASELINES, MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.prepare import resize
from napari_medcam.engine.unet import UNet

EVAL_BACKGROUNDS = 16  # random backgrounds used to report the robust confidence


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


def optimise_mask(
    x: torch.Tensor,
    classifier: Classifier,
    target: int,
    config: MedCAMConfig,
    choice: BaselineChoice,
    *,
    tile: int = 0,
    tiles: int = 1,
) -> Generator[ProgressEvent, None, MaskResult]:
    """Train a U-Net so that its binary mask keeps ``classifier``'s evidence for ``target``.

    ``x`` is one normalised input (1, C, *input_size) on the classifier's device.
    """
    device = x.device
    cfg = config
    model = classifier.module
    layers = classifier.layers
    alphas = _layer_weights(cfg, len(layers))
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        unet = UNet(classifier.channels, cfg.unet_channels, classifier.spatial_dims, cfg.init_fill)
    unet = unet.to(device)
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    mask_size = tuple(max(4, round(s * cfg.mask_scale)) for s in x.shape[2:])
    x_small = resize(x, mask_size)
    b = choice.baseline
    blurred = make_baseline("blur", x, classifier, cfg.blur_sigma)
    with torch.no_grad(), record_activations(model, layers) as acts:
        logits_x = model(x)
        ref_feats = [acts[n].detach() for n in layers]

    history: list[dict[str, float]] = []
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    prev_hard: torch.Tensor | None = None
    stable = 0
    step = 0
    for step in range(1, cfg.steps + 1):
        warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warm
        ramp = min(1.0, step / cfg.ramp_steps) if cfg.ramp_steps else 1.0

        soft = resize(torch.sigmoid(unet(x_small)), tuple(x.shape[2:]))
        hard = losses.binarize(soft, cfg.threshold)
        e = hard * x + (1 - hard) * b
        noise = sample_backgrounds(
            choice.noises, cfg.n_backgrounds, x, blurred, gen, offset=step * cfg.n_backgrounds
        )
        r = hard * x + (1 - hard) * noise
        with record_activations(model, layers) as acts:
            logits = model(torch.cat([e, r]))
            feats = [acts[n][:1] for n in layers]
        terms = {
            "act": losses.activation_loss(ref_feats, feats, alphas),
            "kl": losses.kl_loss(logits_x, logits[:1], cfg.temperature),
            "ce": losses.ce_loss(logits[:1], target),
            "area": losses.area_loss(soft),
            "bin": losses.binarization_loss(soft),
            "tv": losses.tv_loss(soft),
            "rob": losses.robustness_loss(logits[1:], target) if len(r) else soft.new_zeros(()),
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
        loss = keep + ramp * minimal + robust

        with torch.no_grad():
            probs = torch.softmax(logits, 1)[:, target]
            p_masked = float(probs[0])
            p_robust = float(probs[1:].mean()) if len(r) else p_masked
            held = int(logits[0].argmax()) == target
            area = float(hard.mean())
            objective = float(keep + minimal + robust)
            ok = held and p_robust >= 0.5 and cfg.min_area <= area <= cfg.max_area
            if ok and (best is None or objective < best[0]):
                best = (objective, soft.detach().clone(), hard.detach().clone())
            flipped = 1.0 if prev_hard is None else float((hard != prev_hard).float().mean())
            prev_hard = hard.detach()
        record = {k: float(v.detach()) for k, v in terms.items()}
        record.update(loss=float(loss.detach()), masked=p_masked, robust=p_robust, mask_area=area)
        history.append(record)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield ProgressEvent(step, cfg.steps, record, p_masked, area, tile, tiles)

        stable = stable + 1 if (flipped <= cfg.stable_change and held) else 0
        if cfg.patience and step >= cfg.min_steps and stable >= cfg.patience and best is not None:
            break

    if best is None:
        with torch.no_grad():
            soft = resize(torch.sigmoid(unet(x_small)), tuple(x.shape[2:]))
        return MaskResult(soft, (soft > cfg.threshold).float(), False, step, history)
    return MaskResult(best[1], best[2], True, step, history)


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
