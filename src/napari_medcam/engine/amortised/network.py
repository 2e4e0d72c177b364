"""The amortised explainer network: one class-conditioned U-Net for every tile.

It sees the classifier's normalised input at ``mask_scale`` of its size (the same
coarse resolution as the per-image U-Net) and returns one mask logit map per class
("a mask channel per class"): the channel of the class to explain is the mask.
As in the per-image engine, the classifier's Grad-CAM for that class is added to the
logits (± ``prior_strength``, `napari_medcam.engine.optimise._prior_logits`): without
it every mask started uniform and crossed the threshold all at once — whole tiles
kept or dropped, never a region (measured on the demo: areas of 0 or 100 % only).
The head starts at ``logit(init_fill)`` everywhere, so the first masks keep the
decision and the area term shrinks them from there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize
from napari_medcam.engine.optimise import _prior_logits
from napari_medcam.engine.unet import UNet


class ExplainerNet(nn.Module):
    """U-Net on the (downscaled) image → ``num_classes`` mask logit maps."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64),
        dims: int = 2,
        mask_scale: float = 0.25,
        init_fill: float = 0.8,
        prior_strength: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.mask_scale = float(mask_scale)
        self.prior_strength = float(prior_strength)
        self.unet = UNet(in_channels, channels, dims, init_fill)
        width = self.unet.head.in_channels
        # one logit map per class instead of the per-image U-Net's single map
        self.unet.head = (
            nn.Conv2d(width, num_classes, 1) if dims == 2 else nn.Conv3d(width, num_classes, 1)
        )
        nn.init.normal_(self.unet.head.weight, std=0.01)
        nn.init.constant_(self.unet.head.bias, math.log(init_fill / (1 - init_fill)))

    def mask_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        return tuple(max(4, round(s * self.mask_scale)) for s in spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, *mask_size) logits for normalised inputs (B, C, *spatial)."""
        return self.unet(resize(x, self.mask_size(x.shape[2:])))

    def class_logits(
        self,
        x: torch.Tensor,
        classes: Sequence[int],
        classifier: Classifier,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 1, *mask_size): each input's logit map for its own class, Grad-CAM added.

        ``logits``: this network's output on ``x`` when already computed.
        """
        logits = self(x) if logits is None else logits
        idx = torch.as_tensor(list(classes), device=x.device, dtype=torch.long)
        own = logits[torch.arange(len(x), device=x.device), idx][:, None]
        if not self.prior_strength:
            return own
        cfg = _PriorConfig(self.prior_strength)
        with torch.enable_grad():
            prior = _prior_logits(x, classifier, list(classes), cfg, tuple(own.shape[2:]))
        return own + prior.detach()


class _PriorConfig:
    """The one setting `_prior_logits` reads."""

    def __init__(self, prior_strength: float) -> None:
        self.prior_strength = prior_strength
