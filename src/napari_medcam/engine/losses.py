"""The seven Med-CAM loss terms (docs/method.md), one small function each.

All take batched tensors: masks are (B, 1, *spatial), logits (B, classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-6
MIN_CHANNEL_SCALE = 0.1  # floor of a channel's scale, relative to its layer's mean (see below)


def binarize(soft: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard mask forward, identity gradient backward (straight-through estimator)."""
    hard = (soft > threshold).to(soft.dtype)
    return soft + (hard - soft).detach()


def linear_slope(logits: torch.Tensor, soft: torch.Tensor, slope: float = 0.25) -> torch.Tensor:
    """``soft`` (= sigmoid(logits)) forward, a constant ``slope`` w.r.t. the logits backward.

    0.25 is the sigmoid's steepest slope, so the gradient never exceeds the true one's
    scale, but it does not vanish where the mask is already crisp.
    """
    return soft.detach() + slope * (logits - logits.detach())


def feature_distance(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Channel-normalised MSE for feature maps, cosine distance for vectors.

    ``ref`` (1, C, ...) is the original image's activation; each channel is scaled
    by its spatial standard deviation on the original, so every channel counts
    alike whatever its magnitude. That scale is floored at `MIN_CHANNEL_SCALE` of
    the layer's mean channel std: a channel silent (all zero after a ReLU) on the
    original would otherwise be divided by ~1e-6, and the first activation a mask
    wakes in it (a cut edge, a flat baseline) would outweigh every other loss term
    by orders of magnitude.
    """
    if ref.ndim <= 2:
        return 1 - F.cosine_similarity(ref.flatten(1), other.flatten(1), dim=1, eps=EPS).mean()
    dims = tuple(range(2, ref.ndim))
    std = ref.std(dim=dims, keepdim=True, unbiased=False)
    scale = torch.maximum(std, MIN_CHANNEL_SCALE * std.mean(dim=1, keepdim=True)) + EPS
    return (((other - ref) / scale) ** 2).mean()


def activation_loss(
    ref: Sequence[torch.Tensor], other: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """L_act = Σ_l α_l d(φ_l(x), φ_l(e))."""
    total = ref[0].new_zeros(()) if ref else torch.zeros(())
    for a, b, w in zip(ref, other, weights):
        total = total + w * feature_distance(a, b)
    return total


def kl_loss(
    logits_ref: torch.Tensor, logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """L_KL = KL(softmax(f(x)/T) ‖ softmax(f(e)/T)), averaged over the batch."""
    log_p = F.log_softmax(logits_ref / temperature, 1)
    log_q = F.log_softmax(logits / temperature, 1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def ce_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """L_CE = −log p_f(e)(y), averaged over the batch."""
    return -F.log_softmax(logits, 1)[:, target].mean()


def area_loss(soft: torch.Tensor) -> torch.Tensor:
    """L_area = mean(s): the fraction of the image kept."""
    return soft.mean()


def binarization_loss(soft: torch.Tensor) -> torch.Tensor:
    """L_bin = mean(s − s²): zero only where the mask is exactly 0 or 1."""
    return (soft - soft * soft).mean()


def tv_loss(soft: torch.Tensor) -> torch.Tensor:
    """L_tv = Σ |differences between neighbours| / number of pixels (any dimension)."""
    total = soft.new_zeros(())
    for axis in range(2, soft.ndim):
        total = total + soft.diff(dim=axis).abs().sum()
    return total / soft[:, :1].numel()


def robustness_loss(logits_bg: torch.Tensor, target: int) -> torch.Tensor:
    """L_rob = mean over the perturbations of −log p(y | m⊙x + (1−m)⊙r)."""
    return ce_loss(logits_bg, target)


def margin_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """−log-odds of the target, (log Σ other exp) − target logit, averaged over the batch.

    Unlike −log p it does not saturate when the classifier is sure (p ≈ 1 gives
    −log p ≈ 0 and no gradient): it keeps telling which pixels carry the decision.
    """
    others = torch.cat([logits[:, :target], logits[:, target + 1 :]], 1)
    return (torch.logsumexp(others, 1) - logits[:, target]).mean()
