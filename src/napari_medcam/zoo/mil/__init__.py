"""The slide-level (MIL) zoo: three trained slide classifiers on synthetic slides.

**The split is fixed here, before any tuning (docs/zoo.md, "Slide-level (MIL) zoo"):**
``MIL_TUNING = ("mil-abmil",)`` on ``tune`` slides only; ``MIL_HELD_OUT`` (the other two)
and every ``eval`` slide are reported on, never tuned on.

Each entry: the frozen tile encoder of the tile zoo's ``hne-modulelist`` (its conv blocks
and global average pooling, 64-d) and an aggregator trained on bags of its embeddings
by ``scripts/train_mil_zoo.py`` (weights ``zoo/weights/<name>.pt``). Slides, with their
truly positive tiles, come from `napari_medcam.zoo.mil.slides`.

API::

    from napari_medcam.zoo import mil
    clf = mil.load("mil-transmil")                  # napari_medcam.SlideClassifier
    slide = mil.synthetic_slide("eval", 0)          # layout + positive tiles
    hard = mil.hard_slide("eval", 0)                # weak, spread evidence; many mimics
    image = slide.image(mil.tile_pool("eval"))      # H×W×3 uint8
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from torch import nn

from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.classifiers.slide_loading import load_slide_classifier
from napari_medcam.classifiers.torchfile import load_torch_file
from napari_medcam.zoo import load as load_tile_classifier
from napari_medcam.zoo.mil.models import (
    GatedAttentionMIL,
    MaxPoolMIL,
    PooledFeatures,
    TransMILLike,
)
from napari_medcam.zoo.mil.slides import (
    MIL_SEED0,
    TILE,
    SyntheticSlide,
    TilePool,
    hard_slide,
    synthetic_slide,
    tile_pool,
)

ENCODER = "hne-modulelist"  # the tile zoo entry whose pooled features embed the tiles
CLASS_NAMES = ("normal", "tumour")
TRAIN_SCRIPT = "scripts/train_mil_zoo.py"


@dataclass(frozen=True)
class MILEntry:
    """One slide classifier of the zoo: its aggregator and how it was trained."""

    name: str
    aggregator: str
    build: Callable[[], nn.Module]
    tuning: bool
    train: dict


MIL_ZOO: dict[str, MILEntry] = {
    e.name: e
    for e in (
        MILEntry(
            "mil-abmil",
            "gated attention MIL (Ilse et al. 2018)",
            GatedAttentionMIL,
            True,
            {"epochs": 20, "lr": 1e-3},
        ),
        MILEntry(
            "mil-transmil",
            "TransMIL-like: Nyström attention, class token, PPEG on the tile grid",
            TransMILLike,
            False,
            {"epochs": 20, "lr": 5e-4},
        ),
        MILEntry(
            "mil-maxpool",
            "max-pooling MIL (instance classifier, highest tile)",
            MaxPoolMIL,
            False,
            {"epochs": 20, "lr": 1e-3},
        ),
    )
}
MIL_TUNING: tuple[str, ...] = ("mil-abmil",)
MIL_HELD_OUT: tuple[str, ...] = tuple(n for n in MIL_ZOO if n not in MIL_TUNING)


def encoder() -> tuple[PooledFeatures, tuple[float, ...], tuple[float, ...]]:
    """The frozen encoder and its tiles' normalisation (mean, std): ``hne-modulelist``'s."""
    tile = load_tile_classifier(ENCODER)
    return PooledFeatures(tile.module.blocks), tile.mean, tile.std


def load(name: str) -> SlideClassifier:
    """The slide classifier of entry ``name``, offline, from ``zoo/weights/<name>.pt``."""
    if name not in MIL_ZOO:
        raise KeyError(f"unknown MIL zoo entry {name!r}; the MIL zoo holds {sorted(MIL_ZOO)}")
    ref = resources.files("napari_medcam.zoo") / "weights" / f"{name}.pt"
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise FileNotFoundError(f"weights for {name!r} missing at {path}: run {TRAIN_SCRIPT}")
        ckpt = load_torch_file(path, "a napari-medcam MIL zoo checkpoint")
    aggregator = MIL_ZOO[name].build()
    aggregator.load_state_dict(ckpt["state_dict"])
    enc, mean, std = encoder()
    return SlideClassifier(
        enc,
        aggregator,
        tile_size=TILE,
        level=0,
        mean=mean,
        std=std,
        class_names=CLASS_NAMES,
        name=f"zoo/{name}",
    )


def load_any(spec: str) -> SlideClassifier:
    """A MIL zoo entry by name, else a registered slide classifier or
    ``package.module:factory`` (`napari_medcam.classifiers.slide_loading`)."""
    return load(spec) if spec in MIL_ZOO else load_slide_classifier(spec)


__all__ = [
    "MIL_HELD_OUT",
    "MIL_SEED0",
    "MIL_TUNING",
    "MIL_ZOO",
    "MILEntry",
    "SyntheticSlide",
    "TilePool",
    "encoder",
    "hard_slide",
    "load",
    "load_any",
    "synthetic_slide",
    "tile_pool",
]
