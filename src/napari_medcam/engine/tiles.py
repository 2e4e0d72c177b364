"""Reading a large image as classifier-sized tiles, and choosing which to explain.

`Tiles` reads window by window (lazy dask/zarr images are never loaded whole);
`select_tiles` classifies the tissue tiles once, picks the target and the tiles that
show it, and offers a few tiles of other classes as counterfactual tissue.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize, unit_tensor
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.tiling import (
    MIN_TISSUE_FRACTION,
    needs_tiling,
    overlap_for,
    tile_grid,
    tissue_fraction,
)

COUNTERFACTUAL_TILES = 8  # a slide's own non-target tiles offered as absence


class Tiles:
    """Reads the image window by window, as classifier inputs, on demand."""

    def __init__(
        self,
        image: Any,
        classifier: Classifier,
        device: torch.device,
        overlap: int | None = None,
    ) -> None:
        self.image = image
        self.classifier = classifier
        self.device = device
        self.spatial = classifier.check_image(image.shape, image.dtype)
        self.value_range = classifier.value_range(image)  # one scale for every tile
        size = classifier.input_size
        if needs_tiling(self.spatial, size):
            if overlap is None:  # one default for explain, Grad-CAM, checks and the widget
                overlap = overlap_for(size)
            self.windows = tile_grid(self.spatial, size, overlap)
        else:
            self.windows = [tuple(slice(0, n) for n in self.spatial)]

    @property
    def tiled(self) -> bool:
        return len(self.windows) > 1

    def unit(self, i: int) -> torch.Tensor:
        region = np.asarray(self.image[self.windows[i]])
        return unit_tensor(region, self.classifier, self.value_range)

    def input(self, i: int) -> tuple[torch.Tensor, float]:
        """(normalised classifier input, tissue fraction) of window ``i``."""
        unit = self.unit(i)
        tissue = tissue_fraction(unit[0].permute(*range(1, unit.ndim - 1), 0).numpy())
        x = self.classifier.normalise(resize(unit.to(self.device), self.classifier.input_size))
        return x, tissue

    def batches(self, indices: list[int], size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            yield chunk, torch.cat([self.input(i)[0] for i in chunk])


class Selection(NamedTuple):
    """What `select_tiles` found on a tiled image."""

    selected: list[int]  # windows classified as the target: to explain
    mean_probabilities: list[float]  # over the tissue tiles
    target: int
    counterfactual: torch.Tensor | None  # ≤ COUNTERFACTUAL_TILES tissue tiles of other classes
    classes: list[dict[str, Any]]  # every tissue tile's class (`tile_class`); glass has none


def blank_class(classifier: Classifier, device: torch.device) -> int:
    """The class the classifier gives a blank (dataset-mean) input: "nothing found"."""
    with torch.no_grad():
        blank_in = torch.zeros((1, classifier.channels, *classifier.input_size), device=device)
        return int(classifier.module(blank_in).argmax())


def choose_target(probs: torch.Tensor, blank: int) -> int:
    """The most confident finding among tiles or slices (rows of ``probs``).

    The class, other than the blank input's, that some row is assigned to with the
    highest probability; the blank class only when no row shows anything else.
    """
    preds = probs.argmax(1)
    best = probs.max(0).values
    findings = [c for c in range(probs.shape[1]) if c != blank and bool((preds == c).any())]
    return max(findings, key=lambda c: float(best[c])) if findings else blank


def classify_stage(done: int, total: int) -> ProgressEvent:
    """A progress event for inputs classified before any is explained."""
    return ProgressEvent(done, total, {}, float("nan"), 0.0, stage="classify")


def select_tiles(
    tiles: Tiles,
    classifier: Classifier,
    target: int | None,
    batch: int,
    skip_glass: bool,
) -> Generator[ProgressEvent, None, Selection]:
    """Classify every tissue tile; keep those assigned to the target (chosen if None).

    Yields a "classify" `ProgressEvent` per batch of windows (one forward pass
    each), so a slide's first minutes can be watched and cancelled; returns a
    `Selection`. Default target: `choose_target`.
    """
    n = len(tiles.windows)
    tissue_idx: list[int] = []
    probs: list[torch.Tensor] = []
    for start in range(0, n, batch):
        inputs = [tiles.input(i) for i in range(start, min(start + batch, n))]
        keep = [
            (start + j, x)
            for j, (x, tissue) in enumerate(inputs)
            if not skip_glass or tissue >= MIN_TISSUE_FRACTION
        ]
        if keep:
            with torch.no_grad():
                p = torch.softmax(classifier.module(torch.cat([x for _, x in keep])), 1)
            tissue_idx += [i for i, _ in keep]
            probs += list(p)
        yield classify_stage(min(start + batch, n), n)
    if not probs:
        return Selection([], [0.0] * classifier.num_classes, target or 0, None, [])
    p = torch.stack(probs)
    if target is None:
        target = choose_target(p, blank_class(classifier, p.device))
    preds = p.argmax(1).tolist()
    selected = [i for i, pred in zip(tissue_idx, preds) if pred == target]
    others = [i for i, pred in zip(tissue_idx, preds) if pred != target]
    if len(others) > COUNTERFACTUAL_TILES:
        picks = np.linspace(0, len(others) - 1, COUNTERFACTUAL_TILES).round().astype(int)
        others = [others[j] for j in picks]
    own = torch.cat([tiles.input(i)[0] for i in others]) if others else None
    best = p.max(1)
    classes = [
        tile_class(tiles.windows[i], classifier.class_names[int(c)], float(q))
        for i, c, q in zip(tissue_idx, best.indices.tolist(), best.values.tolist())
    ]
    return Selection(selected, p.mean(0).tolist(), target, own, classes)


def tile_class(window: tuple[slice, ...], name: str, probability: float) -> dict[str, Any]:
    """What the classifier calls one tissue tile (window as starts then stops)."""
    return {
        "window": [s.start for s in window] + [s.stop for s in window],
        "class": name,
        "probability": probability,
    }
