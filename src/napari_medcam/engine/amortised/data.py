"""Tiles to fit an explainer on (arrays; `napari_medcam.io.tiles` reads files), as inputs.

Labels are never asked for: each tile's target is the frozen classifier's own
prediction, and its absence is chosen exactly as for a per-image explanation
(`napari_medcam.engine.absence.choose_absence`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import prepare_input
from napari_medcam.engine.absence import choose_absence
from napari_medcam.engine.config import MedCAMConfig

POOL_KEPT = 4  # checked perturbations kept per fitting tile (memory: 6 images a tile)


@dataclass
class FitTiles:
    """Fitting tiles as classifier inputs, with targets and absences (stored as float16)."""

    x: torch.Tensor  # (N, C, *input) normalised
    absence: torch.Tensor  # (N, C, *input) the chosen absence of each tile
    pool: torch.Tensor  # (N, POOL_KEPT, C, *input) neutral perturbations around it
    targets: list[int]
    probabilities: list[list[float]]
    absence_names: list[str]
    skipped: int  # tiles with no neutral absence: nothing to learn from them
    empty: int = 0  # tiles of the empty class: no evidence to learn


def as_tiles(tiles: Any) -> list[np.ndarray]:
    """``tiles`` (a sequence of arrays, or one array: one image) as a list of images.

    Files are read above the engine: paths are refused with the function that reads them.
    """
    if isinstance(tiles, (str, Path, np.ndarray)):
        items = [tiles]
    elif isinstance(tiles, Iterable):
        items = list(tiles)
    else:
        raise ValueError(f"tiles must be a sequence of images (arrays), got {type(tiles).__name__}")
    if any(isinstance(t, (str, Path)) for t in items):
        raise ValueError(
            "tiles must be images (arrays); read folders, image files and slides with "
            "napari_medcam.read_tiles(paths, classifier, level=..., per_slide=...)"
        )
    out = [np.asarray(t) for t in items]
    if not out:
        raise ValueError("no tiles to fit on")
    return out


def prepare(
    images: Iterable[np.ndarray],
    classifier: Classifier,
    config: MedCAMConfig,
    device: torch.device,
    empty: int | None = None,
) -> Generator[int, None, FitTiles]:
    """Classify each image and choose its absence; yields the count done, returns `FitTiles`.

    Tiles the classifier gives the ``empty`` class ("nothing found") are left
    out: that class has no evidence to learn (its masks are taught to be empty by the
    wrong-class examples of the other tiles).
    """
    xs, bases, pools, targets, probs, names = [], [], [], [], [], []
    skipped = n_empty = 0
    for n, image in enumerate(images, start=1):
        x = prepare_input(np.asarray(image), classifier).to(device)
        with torch.no_grad():
            p = torch.softmax(classifier.module(x), 1)[0]
        t = int(p.argmax())
        if t == empty:
            n_empty += 1
            yield n
            continue
        absence = choose_absence(x, classifier, t, config)
        if absence.problem:
            skipped += 1
            yield n
            continue
        pool = absence.backgrounds if len(absence.backgrounds) else absence.image
        pool = pool[torch.arange(POOL_KEPT) % len(pool)]
        xs.append(x.half().cpu())
        bases.append(absence.image.half().cpu())
        pools.append(pool.half().cpu()[None])
        targets.append(t)
        probs.append(p.tolist())
        names.append(absence.name)
        yield n
    if not xs:
        why = f" ({n_empty} of the empty class)" if n_empty else ""
        raise ValueError(
            f"no tile has evidence to learn and a neutral absence{why}: nothing to fit on"
        )
    return FitTiles(
        torch.cat(xs),
        torch.cat(bases),
        torch.cat(pools),
        targets,
        probs,
        names,
        skipped,
        n_empty,
    )


def class_index(classifier: Classifier, cls: str | int | None) -> int | None:
    """``cls`` (a class name or index; None: none) as an index of ``classifier``'s classes."""
    if cls is None:
        return None
    names = list(classifier.class_names)
    if isinstance(cls, str) and cls in names:
        return names.index(cls)
    if isinstance(cls, int) and not isinstance(cls, bool) and 0 <= cls < len(names):
        return cls
    raise ValueError(f"empty_class {cls!r} is not one of the classes {names}")
