"""One fitting step's loss for an amortised explainer (`napari_medcam.engine.amortised.fit`).

Exactly the per-image objective (`napari_medcam.engine.objective.Objective`, `losses`)
for each tile of the batch, on the network's mask for the class the classifier gives
it, plus the area of a *wrong-class* mask (another class's mask on the same tile),
pushed to empty.
"""

from __future__ import annotations

import math

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize
from napari_medcam.engine import losses
from napari_medcam.engine.amortised.data import FitTiles
from napari_medcam.engine.amortised.network import ExplainerNet
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.hooks import record_activations
from napari_medcam.engine.objective import Objective
from napari_medcam.engine.steps import layer_weights


def batch_loss(
    net: ExplainerNet,
    data: FitTiles,
    idx: list[int],
    classifier: Classifier,
    obj: Objective,
    cfg: MedCAMConfig,
    step: int,
    ramp: float,
    device: torch.device,
    wrong_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch's loss: the per-image objective per tile + the wrong-class area.

    Returns the loss (to step the network) and the batch's record for the fit's
    history (mean area, masked confidence, decision kept, wrong-class area, loss).
    The shared multipliers are stepped by the batch's mean violation.
    """
    model, layers = classifier.module, classifier.layers
    x = data.x[idx].float().to(device)
    b = data.absence[idx].float().to(device)
    n, k = len(idx), cfg.n_perturbations
    targets = [data.targets[i] for i in idx]
    with torch.no_grad(), record_activations(model, layers) as acts:
        logits_x = model(x)
        ref = [acts[name].detach() for name in layers]
    logits_all = net(x)
    lt = net.class_logits(x, targets, classifier, logits_all)
    soft_small = torch.sigmoid(lt)
    area_map = losses.linear_slope(lt, soft_small) if cfg.linear_area else soft_small
    spatial = tuple(x.shape[2:])
    soft = resize(soft_small, spatial)
    hard = losses.binarize(soft, cfg.threshold)
    e = hard * x + (1 - hard) * b
    if k:
        pick = [(step * k + j) % data.pool.shape[1] for j in range(k)]
        bg = data.pool[idx][:, pick].float().to(device).flatten(0, 1)
        hk = hard.repeat_interleave(k, 0)
        batch = torch.cat([e, hk * x.repeat_interleave(k, 0) + (1 - hk) * bg])
    else:
        batch = e
    with record_activations(model, layers) as acts:
        logits = model(batch)
        feats = [acts[name] for name in layers]
    logits_e, logits_r = logits[:n], logits[n:]
    alphas = layer_weights(cfg, len(layers))
    total = soft.new_zeros(())
    record = {"area": 0.0, "masked": 0.0, "kept": 0.0, "wrong_area": 0.0}
    logps: list[tuple[float, float]] = []
    for j, i in enumerate(idx):
        one, t = slice(j, j + 1), targets[j]
        rob = logits_r[j * k : (j + 1) * k]
        terms = {
            "act": losses.activation_loss([r[one] for r in ref], [f[one] for f in feats], alphas),
            "kl": losses.kl_loss(logits_x[one], logits_e[one], cfg.temperature),
            "ce": losses.ce_loss(logits_e[one], t),
            "margin": losses.margin_loss(logits_e[one], t),
            "area": losses.area_loss(area_map[one]),
            "bin": losses.binarization_loss(soft[one]),
            "tv": losses.tv_loss(soft[one]),
            "rob": losses.robustness_loss(rob, t) if k else soft.new_zeros(()),
            "area_value": hard[one].mean(),
            "tv_value": losses.tv_loss(hard[one]).detach(),
        }
        loss, _ = obj.combine(i, terms, ramp)
        total = total + loss
        with torch.no_grad():
            logp_m = float(torch.log_softmax(logits_e[j], 0)[t])
            p_rob = float(torch.softmax(rob, 1)[:, t].mean()) if k else math.exp(logp_m)
            logps.append((logp_m, math.log(max(p_rob, 1e-12))))
            record["area"] += float(hard[one].mean()) / n
            record["masked"] += math.exp(logp_m) / n
            record["kept"] += float(int(logits_e[j].argmax()) == t) / n
    obj.update_batch(idx, [m for m, _ in logps], [r for _, r in logps])
    # wrong-class examples: another class's mask on the same tile must be empty
    num = logits_all.shape[1]
    gen = torch.Generator().manual_seed(step)
    shift = torch.randint(1, num, (n,), generator=gen).tolist()
    wrong = torch.as_tensor([(t + s) % num for t, s in zip(targets, shift)], device=device)
    lw = net.class_logits(x, wrong.tolist(), classifier, logits_all)
    wrong_area = losses.linear_slope(lw, torch.sigmoid(lw)).mean()
    total = total / n + wrong_weight * wrong_area
    record["wrong_area"] = float((torch.sigmoid(lw) > cfg.threshold).float().mean())
    record["loss"] = float(total.detach())
    return total, record
