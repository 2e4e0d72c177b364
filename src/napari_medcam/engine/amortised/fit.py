"""Fitting an amortised explainer: the per-image objective, summed over many tiles.

Each step takes a batch of fitting tiles, asks the network for each tile's mask for
the class the frozen classifier gives it, and minimises exactly the per-image loss
(`napari_medcam.engine.objective.Objective`, `losses`): area + TV + binarisation
subject to keeping ≥ ``tolerance`` of the confidence on the tile's absence and on
the perturbations around it, with one pair of GECO multipliers shared by every tile
and stepped by each batch's mean violation (`Objective` with ``shared=True``). Each
tile also gives a *wrong-class* example: the mask for a class the classifier did not
give it is pushed to empty, so that a class absent from a tile gets no evidence.
The classifier stays frozen (never trained jointly: the mask would then encode the
label). Checkpoints every ``checkpoint_every`` steps (and when cancelled) let a
killed fit resume where it stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resolve_device
from napari_medcam.classifiers.torchfile import load_torch_file
from napari_medcam.engine.amortised.data import FitTiles, as_tiles, class_index, prepare
from napari_medcam.engine.amortised.events import FitCancelled, FitEvent
from napari_medcam.engine.amortised.file import Explainer, classifier_facts, upgraded_metadata
from napari_medcam.engine.amortised.loss import batch_loss
from napari_medcam.engine.amortised.network import ExplainerNet
from napari_medcam.engine.amortised.quality import held_out_quality
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.renamed import renamed_keywords

# wrong-class masks: their area, as heavy as a true mask's area term. 4× (demo, half the
# tiles lesions) kept the wrong-class masks at ~50 % and the fit collapsed after 200 steps
# into whole-tile masks (decision kept on 45 % of the batch); see BENCHMARKS.md
WRONG_WEIGHT = 1.0
WARMUP_STEPS = 50  # learning-rate warm-up, then the area term ramps in over RAMP_STEPS
RAMP_STEPS = 100
HELD_OUT_MAX = 64  # fitting tiles kept aside for the report's held-out quality


def _split(n: int, held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """(fitting, held-out) tile indices, decided before any training."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    k = min(HELD_OUT_MAX, int(round(held_out * n))) if n > 1 else 0
    return sorted(order[k:]), sorted(order[:k])


def _checkpoint_state(net, opt, obj, step, history, meta) -> dict[str, Any]:
    return {
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "log_mu_keep": list(obj.log_mu_keep),
        "log_mu_rob": list(obj.log_mu_rob),
        "step": step,
        "history": history,
        "meta": meta,
    }


@renamed_keywords("background_class")
def iter_fit(
    classifier: Classifier,
    tiles: Any,
    config: MedCAMConfig | None = None,
    steps: int = 2000,
    *,
    device: str | torch.device = "auto",
    batch: int = 8,
    lr: float = 3e-3,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    held_out: float = 0.1,
    seed: int = 0,
    network: dict[str, Any] | None = None,
    wrong_weight: float = WRONG_WEIGHT,
    warmup_steps: int = WARMUP_STEPS,
    ramp_steps: int = RAMP_STEPS,
    empty_class: str | int | None = None,
) -> Generator[FitEvent, None, Explainer]:
    """Fit step by step: yields `FitEvent`s, returns the `Explainer`.

    ``tiles``: images, a sequence of arrays (read folders, files and slides with
    `napari_medcam.read_tiles`).
    ``network``: the explainer's ``channels``, ``mask_scale``, ``init_fill``,
    ``prior_strength`` (default: the config's). ``wrong_weight``: weight of the
    wrong-class masks' area; ``warmup_steps``/``ramp_steps``: learning-rate warm-up and
    area-term ramp. ``empty_class`` (a class name or index, e.g. "normal"): the
    class of "nothing found" — its tiles are left out and its masks are only taught
    to be empty (default: every class is fitted for evidence). A fraction
    ``held_out`` of them (at most 64) is set aside before training and only used for
    the held-out quality in ``explainer.metadata["fit"]``. With ``checkpoint`` (a
    path), the state is saved every ``checkpoint_every`` steps and when the generator
    is closed; a fit started again with the same classifier, tiles count and settings
    resumes from it. Stop iterating (``close()``) to cancel.
    """
    cfg = _checked(classifier, config, steps, batch, checkpoint_every, held_out)
    empty = class_index(classifier, empty_class)
    dev = resolve_device(device)
    classifier.to(dev)
    start = time.perf_counter()
    images = as_tiles(tiles)
    data = yield from _prepared(images, classifier, cfg, dev, empty)
    fit_idx, held_idx = _split(len(data.targets), held_out, seed)
    if not fit_idx:
        raise ValueError("no fitting tiles left after setting the held-out ones aside")
    net, net_cfg = _network(classifier, cfg, network, seed, dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    p0 = [data.probabilities[i][data.targets[i]] for i in range(len(data.targets))]
    obj = Objective(cfg, p0, shared=True)
    run = _Settings(steps, batch, lr, seed, wrong_weight, warmup_steps, ramp_steps)
    meta = {
        "classifier": classifier_facts(classifier),
        "tiles": len(data.targets),
        **asdict(run),
        "empty_class": empty,
        "multipliers": "shared",
        "network": net_cfg,
        "config": cfg.to_dict(),
    }
    ckpt = Path(checkpoint) if checkpoint else None
    history = yield from _train(
        net, opt, obj, data, fit_idx, classifier, cfg, dev, run, meta, ckpt, checkpoint_every
    )
    net.eval()
    explainer = Explainer(net.cpu(), {})
    net.to(dev)
    quality = yield from held_out_quality(explainer, classifier, data, held_idx, cfg, dev)
    fit = {
        **{k: v for k, v in asdict(run).items() if k not in ("warmup_steps", "ramp_steps")},
        **_tile_counts(data, classifier, empty, fit_idx, held_idx),
        "seconds": round(time.perf_counter() - start, 1),
        "device": str(dev),
        "held_out_quality": quality,
        "history": history,
    }
    explainer.metadata.update(
        classifier=meta["classifier"],
        network=net_cfg,
        config=cfg.to_dict(),
        absence=_absences(cfg, data.absence_names),
        fit=fit,
    )
    explainer.net.cpu()
    return explainer


@dataclass(frozen=True)
class _Settings:
    """How the network is trained (recorded in the checkpoint and the fit report)."""

    steps: int
    batch: int
    lr: float
    seed: int
    wrong_weight: float
    warmup_steps: int
    ramp_steps: int


def _train(
    net: ExplainerNet,
    opt: torch.optim.Optimizer,
    obj: Objective,
    data: FitTiles,
    fit_idx: list[int],
    classifier: Classifier,
    cfg: MedCAMConfig,
    dev: torch.device,
    run: _Settings,
    meta: dict[str, Any],
    ckpt: Path | None,
    checkpoint_every: int,
) -> Generator[FitEvent, None, list[dict[str, float]]]:
    """Train ``net`` to ``run.steps`` (resuming from ``ckpt``); returns the history.

    The state is saved every ``checkpoint_every`` steps and when the generator is
    closed, so a cancelled or failed fit keeps what it learnt.
    """
    step, history = _resume(ckpt, meta, net, opt, obj, dev)
    # fixed lengths, not shares of ``steps``: a shorter fit is a prefix of a longer one
    warm, ramp_steps = max(1, run.warmup_steps), max(1, run.ramp_steps)
    saved = step
    try:
        net.train()
        while step < run.steps:
            step += 1
            gen = torch.Generator().manual_seed(run.seed * 1_000_003 + step)
            pos = torch.randint(0, len(fit_idx), (min(run.batch, len(fit_idx)),), generator=gen)
            idx = [fit_idx[p] for p in pos.tolist()]
            for group in opt.param_groups:
                group["lr"] = run.lr * min(1.0, step / warm)
            loss, record = batch_loss(
                net,
                data,
                idx,
                classifier,
                obj,
                cfg,
                step,
                min(1.0, step / ramp_steps),
                dev,
                run.wrong_weight,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"step": step, **record})
            if ckpt is not None and step % checkpoint_every == 0:
                _save(ckpt, _checkpoint_state(net, opt, obj, step, history, meta))
                saved = step
            yield FitEvent("fit", step, run.steps, record)
    finally:  # cancelled or failed: keep what was learnt so far
        if ckpt is not None and step > saved:
            _save(ckpt, _checkpoint_state(net, opt, obj, step, history, meta))
    return history


def _checked(
    classifier: Classifier,
    config: MedCAMConfig | None,
    steps: int,
    batch: int,
    checkpoint_every: int,
    held_out: float,
) -> MedCAMConfig:
    """The fit's config, after refusing what cannot be fitted (before any work)."""
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a napari_medcam.Classifier, got {type(classifier)}")
    if classifier.spatial_dims != 2:
        raise ValueError("amortised explainers are 2-D only (volumes: per-image Med-CAM)")
    if steps < 1 or batch < 1 or checkpoint_every < 1:
        raise ValueError("steps, batch and checkpoint_every must be ≥ 1")
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must be in [0, 1), got {held_out}")
    cfg = config or MedCAMConfig.fast()
    if cfg.tolerance is None:
        raise ValueError("fit needs the constrained objective (config.tolerance set)")
    return cfg


def _network(
    classifier: Classifier,
    cfg: MedCAMConfig,
    network: dict[str, Any] | None,
    seed: int,
    dev: torch.device,
) -> tuple[ExplainerNet, dict[str, Any]]:
    """A fresh explainer network (seeded) and its settings: the config's unless
    ``network`` says otherwise."""
    net_cfg = {
        "channels": list(cfg.unet_channels),
        "mask_scale": cfg.mask_scale,
        "init_fill": cfg.init_fill,
        "prior_strength": cfg.prior_strength,
    }
    net_cfg.update(network or {})
    torch.manual_seed(seed)
    net = ExplainerNet(
        classifier.channels,
        classifier.num_classes,
        net_cfg["channels"],
        2,
        net_cfg["mask_scale"],
        net_cfg["init_fill"],
        net_cfg["prior_strength"],
    ).to(dev)
    return net, net_cfg


def _absences(cfg: MedCAMConfig, names: list[str]) -> dict[str, Any]:
    """What "absence" meant in the fit: the setting, and how often each was chosen."""
    return {
        "absence": cfg.absence,
        "perturbations": list(cfg.perturbations),
        "chosen": {n: names.count(n) for n in sorted(set(names))},
    }


def _resume(
    ckpt: Path | None,
    meta: dict[str, Any],
    net: ExplainerNet,
    opt: torch.optim.Optimizer,
    obj: Objective,
    dev: torch.device,
) -> tuple[int, list[dict[str, float]]]:
    """(step, history) of the checkpoint's fit, its state loaded; (0, []) without one.

    A checkpoint of another fit (classifier, tiles or settings) is refused; one with
    more or fewer ``steps`` is the same fit.
    """
    if ckpt is None or not ckpt.exists():
        return 0, []
    state = load_torch_file(ckpt, "a fit checkpoint", map_location=dev)
    if {**upgraded_metadata(state["meta"]), "steps": meta["steps"]} != meta:
        raise ValueError(
            f"checkpoint {ckpt} is from another fit (classifier, tiles or settings "
            "differ): remove it to start afresh"
        )
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    obj.log_mu_keep, obj.log_mu_rob = list(state["log_mu_keep"]), list(state["log_mu_rob"])
    return int(state["step"]), list(state["history"])


def _tile_counts(
    data: FitTiles,
    classifier: Classifier,
    empty: int | None,
    fit_idx: list[int],
    held_idx: list[int],
) -> dict[str, Any]:
    """The fit report's tile counts: read, left out (no absence, empty class),
    fitted, held out, and per class fitted."""
    return {
        "tiles": len(data.targets) + data.skipped + data.empty,
        "tiles_without_absence": data.skipped,
        "empty_class": None if empty is None else classifier.class_names[empty],
        "tiles_empty_class": data.empty,
        "fitting_tiles": len(fit_idx),
        "held_out_tiles": held_idx,
        "classes_fitted": {
            classifier.class_names[c]: data.targets.count(c) for c in sorted(set(data.targets))
        },
    }


def _prepared(images, classifier, cfg, dev, empty) -> Generator[FitEvent, None, FitTiles]:
    gen = prepare(images, classifier, cfg, dev, empty)
    try:
        while True:
            done = next(gen)
            yield FitEvent("prepare", done, len(images))
    except StopIteration as stop:
        return stop.value


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@renamed_keywords("background_class")
def fit_explainer(
    classifier: Classifier,
    tiles: Any,
    config: MedCAMConfig | None = None,
    steps: int = 2000,
    *,
    device: str | torch.device = "auto",
    progress: Callable[[FitEvent], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    **options: Any,
) -> Explainer:
    """Fit an amortised explainer for ``classifier`` on ``tiles`` (see `iter_fit`).

    ``progress`` gets every `FitEvent`; ``cancel`` (an Event or a callable) is checked
    after each and raises `FitCancelled` (with ``checkpoint``, the fit resumes later).
    """
    is_set = cancel.is_set if isinstance(cancel, threading.Event) else cancel
    gen = iter_fit(classifier, tiles, config, steps, device=device, **options)
    try:
        while True:
            event = next(gen)
            if progress is not None:
                progress(event)
            if is_set is not None and is_set():
                gen.close()
                raise FitCancelled(f"fit cancelled at step {event.step} of {event.total}")
    except StopIteration as stop:
        return stop.value
    finally:  # an exception in ``progress`` (Ctrl-C) still saves the checkpoint now
        gen.close()
