"""Hand-built classifiers whose evidence and absence are known exactly (for engine tests)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import napari_medcam as mc

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class _Unit(nn.Module):
    """Undo the normalisation: back to [0, 1] colours."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * STD[0] + MEAN[0]


class RedCounter(nn.Module):
    """p(red) grows with the number of red pixels: ``logit = gain · red fraction − bias``.

    ``features`` is a per-pixel "red" map, so activation matching has a layer to hook.
    The minimal evidence keeping ≥ t of the confidence is a known share of the red
    pixels, and nothing outside them.
    """

    def __init__(self, gain: float = 100.0, bias: float = 1.5) -> None:
        super().__init__()
        self.unit = _Unit()
        self.features = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([40.0, -40.0, 0.0]).view(1, 3, 1, 1))
            self.features.bias.fill_(-12.0)
        self.gain, self.bias = gain, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = torch.sigmoid(self.features(self.unit(x)))  # r − g > 0.3
        frac = red.mean((1, 2, 3))
        pos = self.gain * frac - self.bias
        return torch.stack([torch.zeros_like(pos), pos], 1)


class StainOnGlass(nn.Module):
    """A brightfield classifier: "positive" unless the field is mostly glass.

    Brown stain (dark blue channel) anywhere raises the positive logit; white glass
    lowers it. The dataset-mean grey, black and noise read positive; only glass is
    negative — the case where the paper's mean-colour absence gives no answer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.unit = _Unit()
        self.features = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            w = torch.tensor([[0.0, 0.0, -30.0], [50 / 3, 50 / 3, 50 / 3]]).view(2, 3, 1, 1)
            self.features.weight.copy_(w)
            self.features.bias.copy_(torch.tensor([10.5, -45.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.sigmoid(self.features(self.unit(x)))  # stain (blue < 0.35), glass (> 0.9)
        stain = nn.functional.max_pool2d(maps[:, :1], 8).amax((1, 2, 3))
        glass = maps[:, 1].mean((1, 2))
        pos = 2 - 6 * glass + 6 * stain
        return torch.stack([torch.zeros_like(pos), pos], 1)


def red_counter() -> mc.Classifier:
    return mc.Classifier(
        RedCounter(),
        input_size=(64, 64),
        mean=MEAN,
        std=STD,
        class_names=["grey", "red"],
        layers=["features"],
        name="red counter",
    )


def stain_on_glass() -> mc.Classifier:
    return mc.Classifier(
        StainOnGlass(),
        input_size=(64, 64),
        mean=MEAN,
        std=STD,
        class_names=["negative", "positive"],
        layers=["features"],
        name="stain on glass",
    )


def red_square_image(size: int = 64, side: int = 16, at: tuple[int, int] = (20, 28)):
    """Grey image with a red square: (uint8 image, bool square)."""
    img = np.full((size, size, 3), 128, np.uint8)
    ref = np.zeros((size, size), bool)
    ref[at[0] : at[0] + side, at[1] : at[1] + side] = True
    img[ref] = (230, 40, 40)
    return img, ref


def stained_glass_image(size: int = 64):
    """White glass with one brown (DAB-like) blob: (uint8 image, bool blob)."""
    yy, xx = np.mgrid[:size, :size]
    ref = (yy - 24) ** 2 + (xx - 36) ** 2 <= 7**2
    img = np.full((size, size, 3), 245, np.uint8)
    img[ref] = (150, 100, 50)
    return img, ref


class FlatReadsPositive(nn.Module):
    """Every flat or smooth fill reads "positive"; textured normal tissue reads negative.

    Like a ResNet that calls every flat fill some class: only real tissue without the
    finding is neutral. Red pixels raise the positive logit.
    """

    def __init__(self) -> None:
        super().__init__()
        self.unit = _Unit()
        self.features = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([40.0, -40.0, 0.0]).view(1, 3, 1, 1))
            self.features.bias.fill_(-12.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unit(x)
        grey = u.mean(1, keepdim=True)
        texture = (grey[..., 1:, :] - grey[..., :-1, :]).abs().mean((1, 2, 3))
        red = torch.sigmoid(self.features(u)).mean((1, 2, 3))
        pos = 3 - 40 * texture + 100 * red
        return torch.stack([torch.zeros_like(pos), pos], 1)


def flat_reads_positive() -> mc.Classifier:
    return mc.Classifier(
        FlatReadsPositive(),
        input_size=(64, 64),
        mean=MEAN,
        std=STD,
        class_names=["normal", "finding"],
        layers=["features"],
        name="flat reads positive",
    )


def textured_tile(seed: int, size: int = 64) -> np.ndarray:
    """Grey-ish "tissue" with strong pixel texture (what FlatReadsPositive calls normal)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(60, 200, (size, size, 1))
    return np.repeat(v, 3, axis=2).astype(np.uint8)
