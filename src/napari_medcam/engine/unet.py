"""The explainer network: a small U-Net, 2-D or 3-D, trained from scratch per image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


class _DoubleConv(nn.Sequential):
    def __init__(self, dims: int, cin: int, cout: int) -> None:
        conv = _conv(dims)
        super().__init__(
            conv(cin, cout, 3, padding=1),
            nn.GroupNorm(min(8, cout), cout),
            nn.LeakyReLU(0.1),
            conv(cout, cout, 3, padding=1),
            nn.GroupNorm(min(8, cout), cout),
            nn.LeakyReLU(0.1),
        )


class UNet(nn.Module):
    """U-Net returning one logit map the size of its input.

    ``channels`` gives the width of each level (the paper: 32-64-128-256-512).
    Inputs whose sides are not multiples of ``2**(levels-1)`` are padded and the
    output cropped back, so any size works. The last layer starts with bias
    ``logit(init_fill)`` and weights of std ``init_spread`` (0 in every preset): the
    first mask is ``init_fill`` everywhere, above the threshold, so the decision is
    held from step 0. Pixels then part by their gradients — and, in the fast
    presets, by a Grad-CAM prior added to the logits (`MedCAMConfig.prior_strength`)
    — so they cross the threshold region by region, not all at once.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (16, 32, 64),
        dims: int = 2,
        init_fill: float = 0.9,
        init_spread: float = 0.0,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.dims = dims
        self.down = nn.ModuleList()
        cin = in_channels
        for c in channels:
            self.down.append(_DoubleConv(dims, cin, c))
            cin = c
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for c_skip in reversed(channels[:-1]):
            self.up.append(_conv(dims)(cin, c_skip, 1))
            self.fuse.append(_DoubleConv(dims, 2 * c_skip, c_skip))
            cin = c_skip
        self.head = _conv(dims)(cin, 1, 1)
        nn.init.normal_(self.head.weight, std=init_spread)
        nn.init.constant_(self.head.bias, math.log(init_fill / (1 - init_fill)))
        self._factor = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        pad = []
        for s in reversed(spatial):
            pad += [0, (-s) % self._factor]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        pool = F.max_pool2d if self.dims == 2 else F.max_pool3d
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = pool(x, 2)
            x = block(x)
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = fuse(torch.cat([up(x), skip], 1))
        out = self.head(x)
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
        return out[crop]
