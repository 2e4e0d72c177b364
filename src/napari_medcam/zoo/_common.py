"""Shared pieces of the zoo: the entry and case records, splits, weights loading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.packaged import load_checkpoint

#: first seed of each split; an entry's generator is called with ``SEED0[split] + i``.
#: "train" seeds only ever feed ``scripts/train_zoo.py``; "eval" seeds give the
#: held-out accuracy and the evaluation cases; "tune" seeds are for tuning the
#: explanation recipe (on the tuning entries) and never overlap the other two.
SEED0 = {"tune": 40_000, "eval": 50_000, "train": 100_000}
SPLITS = tuple(SEED0)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRAIN_SCRIPT = "scripts/train_zoo.py"


@dataclass(frozen=True)
class ZooEntry:
    """One zoo classifier: what it sees, how it is built, what its evidence is."""

    name: str
    modality: str
    architecture: str
    evidence: str
    tuning: bool
    target: int
    description: str
    class_names: tuple[str, ...] = ("negative", "positive")
    input_size: tuple[int, int] = (128, 128)
    #: the largest share of the tile a case's reference may cover (by construction
    #: for the synthetic generators; a selection rule for real images)
    max_reference_fraction: float = 1.0
    #: held-out accuracy (both classes, "eval" split) as printed by the training script
    heldout_accuracy: float | None = None


@dataclass
class ZooCase:
    """One positive image of an entry, at the classifier's input size, and its evidence."""

    name: str
    image: np.ndarray  # uint8 H×W×3 or H×W
    reference: np.ndarray  # bool H×W
    target: int
    label: int


def weights_loader(name: str, build: Callable[..., nn.Module]) -> Classifier:
    """The frozen classifier of zoo entry ``name`` from ``zoo/weights/<name>.pt``.

    ``layers`` is left to the engine's own discovery (``Classifier`` with layers=None).
    """
    ref = resources.files("napari_medcam.zoo") / "weights" / f"{name}.pt"
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise FileNotFoundError(
                f"zoo weights for {name!r} missing at {path}: run {TRAIN_SCRIPT} --only {name}"
            )
        return load_checkpoint(path, build, f"zoo/{name}")


def soft_ellipse(
    shape: tuple[int, int],
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
    soft: float = 0.7,
) -> np.ndarray:
    """Anti-aliased filled ellipse in [0, 1] (semi-axes ``ry``, ``rx``; ``angle`` in rad)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dy + s * dx, -s * dy + c * dx
    r = np.hypot(u / ry, v / rx)  # 1 on the boundary
    scale = min(ry, rx)
    return np.clip((1.0 - r) * scale / soft + 0.5, 0.0, 1.0)


def place_apart(
    rng: np.random.Generator,
    n: int,
    size: int,
    min_dist: float,
    margin: float = 0.0,
    taken: list[tuple[float, float]] | None = None,
    tries: int = 60,
) -> list[tuple[float, float]]:
    """Up to ``n`` random centres at least ``min_dist`` apart (and from ``taken``)."""
    pts = list(taken or [])
    out: list[tuple[float, float]] = []
    for _ in range(n):
        for _ in range(tries):
            p = tuple(rng.uniform(margin, size - margin, 2))
            if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= min_dist**2 for q in pts):
                pts.append(p)
                out.append(p)
                break
    return out
