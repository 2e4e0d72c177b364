"""Replacement images: what fills the image outside the mask.

Everything here lives in the classifier's normalised space, where 0 is the
dataset-mean colour. `make_baseline` builds one named candidate; `draw_backgrounds`
draws perturbations of named kinds (docs/glossary.md). Which of them mean "nothing here" for a given
classifier is decided in `napari_medcam.engine.absence`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from napari_medcam.classifiers.classifier import Classifier

# flat candidates, and the image-derived ones
FLAT = ("mean", "glass", "black")
IMAGE = ("background", "blur")


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


def _flat(value: float, x: torch.Tensor, classifier: Classifier) -> torch.Tensor:
    unit = torch.full((1, x.shape[1], *[1] * (x.ndim - 2)), value, dtype=x.dtype, device=x.device)
    return classifier.normalise(unit).expand_as(x).clone()


def image_background(x: torch.Tensor, classifier: Classifier) -> torch.Tensor:
    """The image's own background colour: the median of its lightest or darkest mode.

    Brightfield slides show glass (the lightest pixels), fluorescence and radiology a
    dark field (the darkest). The mode whose pixels are most alike (the smaller spread
    of the brightest or darkest 10 % of pixels) is taken as the field.
    """
    flat = x.flatten(2)  # (1, C, P)
    bright = flat.mean(1)[0]
    n = max(1, bright.numel() // 10)
    light = flat[..., bright.topk(n).indices]
    dark = flat[..., (-bright).topk(n).indices]
    pick = light if float(light.std(2).mean()) <= float(dark.std(2).mean()) else dark
    colour = pick.median(dim=2).values
    return colour.view(*x.shape[:2], *[1] * (x.ndim - 2)).expand_as(x).clone()


def make_baseline(kind: str, x: torch.Tensor, classifier: Classifier, sigma: float) -> torch.Tensor:
    """One candidate replacement image like ``x`` (normalised).

    - ``mean``: the dataset-mean colour (zero in normalised space; the paper's default);
    - ``glass``: white, as unstained glass in brightfield;
    - ``black``: black, the empty field of fluorescence and radiology;
    - ``background``: the image's own field colour (`image_background`);
    - ``blur``: the image under a strong Gaussian blur (``sigma`` pixels at 224).
    """
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "glass":
        return _flat(1.0, x, classifier)
    if kind == "black":
        return _flat(0.0, x, classifier)
    if kind == "background":
        return image_background(x, classifier)
    if kind == "blur":
        return gaussian_blur(x, sigma * max(x.shape[2:]) / 224)
    raise ValueError(f"unknown baseline {kind!r}")


def draw_backgrounds(
    kind: str,
    count: int,
    x: torch.Tensor,
    around: torch.Tensor,
    classifier: Classifier,
    tissue: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """``count`` perturbations of one ``kind``, shaped like ``x`` (1, C, *spatial).

    Kinds drawn around an absence ``around`` (the chosen baseline):
    - ``jitter``: the absence with a random colour shift (σ 0.05) and pixel noise
      (σ 0.02), in [0, 1] units;
    - ``blur``: the image blurred at a random σ of 4-16 pixels (at 224);
    - ``tissue``: negative tissue (``tissue``, (T, C, *spatial)), flipped, rotated or
      block-shuffled at random.
    Opt-in kinds far from any data (the paper's): ``zeros`` (the mean colour),
    ``normal`` N(0, 1) and ``uniform`` U(−1, 1) in normalised space.
    """
    shape = (count, *x.shape[1:])
    sd = x.ndim - 2
    std = torch.tensor(classifier.std, dtype=x.dtype, device=x.device).view(1, -1, *[1] * sd)
    mean = torch.tensor(classifier.mean, dtype=x.dtype, device=x.device).view(1, -1, *[1] * sd)

    def rand(*s: int) -> torch.Tensor:
        return torch.rand(s, generator=generator, device=x.device, dtype=x.dtype)

    def randn(*s: int) -> torch.Tensor:
        return torch.randn(s, generator=generator, device=x.device, dtype=x.dtype)

    if kind == "jitter":
        shift = 0.05 * randn(count, x.shape[1], *[1] * sd)
        unit = (around * std + mean + shift + 0.02 * randn(*shape)).clamp(0, 1)
        return (unit - mean) / std
    if kind == "blur":
        sigmas = 4 + 12 * rand(count)
        scale = max(x.shape[2:]) / 224
        return torch.cat([gaussian_blur(x, float(s) * scale) for s in sigmas])
    if kind == "tissue":
        if tissue is None or not len(tissue):
            return x.new_zeros((0, *x.shape[1:]))
        picks = torch.randint(len(tissue), (count,), generator=generator, device=x.device)
        return torch.cat([_rearrange(tissue[int(i) : int(i) + 1], generator) for i in picks])
    if kind == "zeros":
        return x.new_zeros(shape)
    if kind == "normal":
        return randn(*shape)
    if kind == "uniform":
        return rand(*shape) * 2 - 1
    raise ValueError(f"unknown background {kind!r}")


def _rearrange(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random flip/rotation of a tissue tile, or its blocks shuffled (8 per side)."""
    choice = int(torch.randint(3, (1,), generator=generator, device=t.device))
    spatial = tuple(range(2, t.ndim))
    if choice == 0:
        return t.flip(spatial[-1])
    if choice == 1 and t.ndim == 4 and t.shape[2] == t.shape[3]:
        return t.rot90(1, (2, 3))
    if t.ndim != 4:
        return t.flip(spatial[0])
    h, w = t.shape[2:]
    bh, bw = max(1, h // 8), max(1, w // 8)
    gh, gw = h // bh, w // bw
    core = t[:, :, : gh * bh, : gw * bw]
    blocks = core.reshape(1, t.shape[1], gh, bh, gw, bw).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(1, t.shape[1], gh * gw, bh, bw)
    order = torch.randperm(gh * gw, generator=generator, device=t.device)
    shuffled = blocks[:, :, order].reshape(1, t.shape[1], gh, gw, bh, bw)
    out = t.clone()
    out[:, :, : gh * bh, : gw * bw] = shuffled.permute(0, 1, 2, 4, 3, 5).reshape(core.shape)
    return out
