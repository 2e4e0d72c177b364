"""Baselines (what replaces the image outside the mask) and random backgrounds.

Everything here lives in the classifier's normalised space, where 0 is the
dataset-mean colour.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from napari_medcam.classifiers.classifier import Classifier


def gaussian_blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, *spatial), reflect-padded, any dimension."""
    radius = max(1, int(math.ceil(3 * sigma)))
    xs = torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device)
    kernel = torch.exp(-0.5 * (xs / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = t.shape[1]
    sd = t.ndim - 2
    conv = F.conv2d if sd == 2 else F.conv3d
    out = t
    for axis in range(sd):
        size = out.shape[2 + axis]
        r = min(radius, size - 1)
        k = kernel[radius - r : radius + r + 1] if r < radius else kernel
        k = k / k.sum()
        shape = [1] * sd
        shape[axis] = len(k)
        pad = [0, 0] * sd
        pad[2 * (sd - 1 - axis)] = pad[2 * (sd - 1 - axis) + 1] = r
        out = conv(
            F.pad(out, pad, mode="reflect"), k.view(1, 1, *shape).repeat(c, 1, *[1] * sd), groups=c
        )
    return out


def make_baseline(kind: str, x: torch.Tensor, classifier: Classifier, sigma: float) -> torch.Tensor:
    """One baseline image like ``x`` (normalised): mean / blur / background / constant.

    - ``mean``: the dataset-mean colour (zero in normalised space; the paper's default);
    - ``blur``: the image under a strong Gaussian blur (``sigma`` pixels at 224);
    - ``background``: the image's own dominant (per-channel median) colour;
    - ``constant``: black.
    """
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":
        scale = max(x.shape[2:]) / 224
        return gaussian_blur(x, sigma * scale)
    if kind == "background":
        dims = tuple(range(2, x.ndim))
        return x.flatten(2).median(dim=2).values.view(*x.shape[:2], *[1] * len(dims)).expand_as(x)
    if kind == "constant":
        return classifier.normalise(torch.zeros_like(x)).expand_as(x).clone()
    raise ValueError(f"unknown baseline {kind!r}")


def sample_backgrounds(
    kinds: tuple[str, ...],
    count: int,
    x: torch.Tensor,
    blurred: torch.Tensor,
    generator: torch.Generator,
    offset: int = 0,
) -> torch.Tensor:
    """``count`` random backgrounds, cycling through ``kinds`` (zeros/normal/uniform/blur).

    ``offset`` rotates the cycle, so that with fewer backgrounds per step than kinds
    every kind still takes its turn over consecutive steps.
    """
    out = []
    for i in range(count):
        kind = kinds[(i + offset) % len(kinds)]
        if kind == "zeros":
            out.append(torch.zeros_like(x))
        elif kind == "normal":
            out.append(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
        elif kind == "uniform":
            out.append(
                torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
            )
        elif kind == "blur":
            out.append(blurred)
        else:
            raise ValueError(f"unknown background {kind!r}")
    return torch.cat(out) if out else x.new_zeros((0, *x.shape[1:]))
