"""A classifier's card: what it was trained on, and whether an image looks like that.

A confident answer on an image unlike the training data means little, and so does
its explanation. The card says in words what the classifier expects (stain,
magnification or µm per pixel, input size, classes) and records the training
images' colour statistics: per input-sized crop, the mean and spread of each
channel. An image is *out of domain* when its crops' statistics lie far from the
training crops' (an RMS z-score above the card's threshold, set from the training
crops themselves). Cards of the packaged classifiers are JSON files beside their
weights, made by ``scripts/make_cards.py``; any classifier may carry one as
``classifier.card``, and a model file ``m.pt`` one as ``m.card.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: an image is out of domain when its median crop is this many times further from the
#: training crops than the card's threshold (the training crops' 99th percentile).
#: The demo's synthetic tiles are so alike (threshold 1.2) that its own synthetic
#: slide, JPEG-compressed, lies at 2.4-3.9; the IHC image lies at ~70
MARGIN = 3.0
#: crops sampled from an image to judge it
SAMPLES = 16


@dataclass
class ClassifierCard:
    """What a classifier was trained on, in words and in colour statistics."""

    description: str
    stain: str = ""
    microns_per_pixel: float | None = None
    magnification: str = ""
    #: per feature (channel means, then channel spreads, in [0, 1]): training mean and
    #: covariance
    feature_mean: list[float] = field(default_factory=list)
    feature_cov: list[list[float]] = field(default_factory=list)
    #: 99th percentile of the training crops' own distance
    threshold: float = 0.0
    training: str = ""  # where the statistics come from
    crop_size: int = 224  # side of the training crops the statistics are of

    @property
    def has_statistics(self) -> bool:
        return bool(self.feature_mean) and self.threshold > 0

    def lines(self, classifier: Any) -> list[str]:
        """The card in words, for the widget and the CLI."""
        size = " × ".join(str(s) for s in classifier.input_size)
        scale = []
        if self.microns_per_pixel:
            scale.append(f"{self.microns_per_pixel:g} µm/pixel")
        if self.magnification:
            scale.append(self.magnification)
        out = [self.description]
        if self.stain:
            out.append(f"Stain: {self.stain}" + (f" · {', '.join(scale)}" if scale else ""))
        elif scale:
            out.append(", ".join(scale))
        out.append(f"Input {size} px · classes: {', '.join(classifier.class_names)}")
        if not self.has_statistics:
            out.append("No training statistics: cannot tell whether an image is in domain")
        return out

    def distance(self, image: np.ndarray) -> float:
        """Median over sampled crops of their statistics' distance from the training's."""
        feats = crop_features(image, self.crop_size)
        if feats.shape[1] != len(self.feature_mean):
            return float("inf")  # another channel count: certainly not the training data
        return float(np.median(mahalanobis(feats, self.feature_mean, self.feature_cov)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ClassifierCard:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> ClassifierCard:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def nearest_mpp_level(level_mpp: Sequence[float], want: float) -> int:
    """The index of the level whose µm/px is nearest ``want``, by ratio (a classifier
    sees tissue at the magnification it was trained at: 0.5 is as far from 1 as 2 is).
    The one rule for slides, slide layers and slide classifiers."""
    return min(range(len(level_mpp)), key=lambda i: abs(math.log(level_mpp[i] / want)))


def unit_channels(image: np.ndarray) -> np.ndarray:
    """An H×W(×C) image as float32 H×W×C in [0, 1] (integers by their dtype's range)."""
    arr = np.asarray(image)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    else:
        arr = arr.astype(np.float32)
        hi = float(np.nanmax(arr)) if arr.size else 1.0
        if hi > 1.0:
            arr = arr / hi
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr[..., :3]


def features(crop: np.ndarray) -> np.ndarray:
    """Each channel's mean, then each channel's standard deviation, over the crop's
    tissue pixels when it has enough (glass between tissue says nothing of the stain)."""
    from napari_medcam.tiling import MIN_TISSUE_FRACTION, TISSUE_SATURATION

    flat = crop.reshape(-1, crop.shape[-1])
    if flat.shape[1] == 3:
        hi = flat.max(1)
        tissue = (hi - flat.min(1)) / np.maximum(hi, 1e-6) > TISSUE_SATURATION
        if tissue.mean() >= MIN_TISSUE_FRACTION:
            flat = flat[tissue]
    return np.concatenate([flat.mean(0), flat.std(0)])


def crop_features(image: Any, size: int, samples: int = SAMPLES) -> np.ndarray:
    """Features of up to ``samples`` crops of ``size`` spread evenly over a 2-D image
    (NumPy or lazy: only the crops are read). Crops that are mostly glass are left out
    when any crop has tissue: the classifier never sees them either."""
    from napari_medcam.tiling import MIN_TISSUE_FRACTION, tissue_fraction

    h, w = int(image.shape[0]), int(image.shape[1])
    s = min(size, h, w)
    n = max(1, int(np.ceil(np.sqrt(samples))))
    ys = np.unique(np.linspace(0, h - s, n).astype(int))
    xs = np.unique(np.linspace(0, w - s, n).astype(int))
    crops = [unit_channels(np.asarray(image[y : y + s, x : x + s])) for y in ys for x in xs]
    tissue = [c for c in crops if tissue_fraction(c) >= MIN_TISSUE_FRACTION]
    return np.stack([features(c) for c in (tissue or crops)])


def mahalanobis(feats: np.ndarray, mean: Any, cov: Any) -> np.ndarray:
    """Each row's Mahalanobis distance from ``mean``, divided by √(features)."""
    c = np.asarray(cov, dtype=float)
    c = c + (1e-3) ** 2 * np.eye(len(c))  # a floor: a constant feature is not infinitely sure
    z = np.asarray(feats, dtype=float) - np.asarray(mean, dtype=float)
    return np.sqrt(np.einsum("ij,jk,ik->i", z, np.linalg.inv(c), z) / len(c))


def card_from_crops(crops: list[np.ndarray], **words: Any) -> ClassifierCard:
    """A card whose statistics are those of the training ``crops``."""
    feats = np.stack([features(unit_channels(c)) for c in crops])
    mean, cov = feats.mean(0), np.cov(feats, rowvar=False)
    own = mahalanobis(feats, mean, cov)
    return ClassifierCard(
        feature_mean=[round(float(v), 6) for v in mean],
        feature_cov=[[float(f"{v:.4e}") for v in row] for row in cov],
        threshold=round(float(np.percentile(own, 99)), 4),
        crop_size=int(crops[0].shape[0]),
        **words,
    )


@dataclass
class DomainCheck:
    """How far an image is from a classifier's training data."""

    distance: float
    threshold: float
    out_of_domain: bool

    def text(self) -> str:
        if self.out_of_domain:
            return (
                f"⚠ Out of domain: this image's colours are far from the classifier's "
                f"training data (distance {self.distance:.1f}; training images ≤ "
                f"{self.threshold:.1f}). Its answers here, and their explanations, may "
                "mean nothing."
            )
        return f"In domain: colours like the training data (distance {self.distance:.1f})"


def check_domain(card: ClassifierCard | None, image: np.ndarray) -> DomainCheck | None:
    """Compare a 2-D image (H×W or H×W×C) with the card's statistics; None if it has none."""
    if card is None or not card.has_statistics:
        return None
    d = card.distance(image)
    return DomainCheck(d, card.threshold, d > MARGIN * card.threshold)


def card_of(classifier: Any, source: str | Path | None = None) -> ClassifierCard | None:
    """The classifier's card: its ``card`` attribute, else ``<model file>.card.json``."""
    card = getattr(classifier, "card", None)
    if card is not None:
        return card
    if source:
        path = Path(source)
        sidecar = path.with_name(path.name.split(".")[0] + ".card.json")
        if sidecar.is_file():
            return ClassifierCard.load(sidecar)
    return None
