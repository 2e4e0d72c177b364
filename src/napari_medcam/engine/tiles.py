"""Reading a large image as classifier-sized tiles, and choosing which to explain.

`Tiles` reads window by window (lazy dask/zarr images are never loaded whole);
`select_tiles` classifies the tissue tiles once, picks the target and the tiles that
show it, and offers a few tiles of other classes as counterfactual tissue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.prepare import resize, unit_tensor
from napari_medcam.tiling import MIN_TISSUE_FRACTION, needs_tiling, tile_grid, tissue_fraction

COUNTERFACTUAL_TILES = 8  # a slide's own non-target tiles offered as absence


class Tiles:
    """Reads the image window by window, as classifier inputs, on demand."""

    def __init__(
        self, image: Any, classifier: Classifier, device: torch.device, overlap: int
    ) -> None:
        self.image = image
        self.classifier = classifier
        self.device = device
        self.spatial = classifier.check_image(image.shape, image.dtype)
        self.value_range = classifier.value_range(image)  # one scale for every tile
        size = classifier.input_size
        if needs_tiling(self.spatial, size):
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


def select_tiles(
    tiles: Tiles,
    classifier: Classifier,
    target: int | None,
    batch: int,
    skip_background: bool,
) -> tuple[list[int], list[float], int, torch.Tensor | None]:
    """Classify every tissue tile; keep those assigned to the target (chosen if None).

    Default target of a tiled image: its most confident finding — the class, other
    than the one the classifier gives a blank (mean-colour) image, that some tile
    shows with the highest probability; the blank class only when no tile shows
    anything else. Also returns up to `COUNTERFACTUAL_TILES` tissue tiles of other
    classes, evenly spread over the image, as counterfactual tissue for the absence.
    """
    tissue_idx, probs = [], []
    with torch.no_grad():
        for i in range(len(tiles.windows)):
            x, tissue = tiles.input(i)
            if skip_background and tissue < MIN_TISSUE_FRACTION:
                continue
            tissue_idx.append(i)
            probs.append(torch.softmax(classifier.module(x), 1)[0])
        if not probs:
            return [], [0.0] * classifier.num_classes, target if target is not None else 0, None
        p = torch.stack(probs)
        blank_in = torch.zeros((1, classifier.channels, *classifier.input_size), device=p.device)
        blank = int(classifier.module(blank_in).argmax())
    preds = p.argmax(1)
    if target is None:
        best = p.max(0).values
        findings = [c for c in range(p.shape[1]) if c != blank and bool((preds == c).any())]
        target = max(findings, key=lambda c: float(best[c])) if findings else blank
    selected = [i for i, pred in zip(tissue_idx, preds.tolist()) if pred == target]
    others = [i for i, pred in zip(tissue_idx, preds.tolist()) if pred != target]
    if len(others) > COUNTERFACTUAL_TILES:
        picks = np.linspace(0, len(others) - 1, COUNTERFACTUAL_TILES).round().astype(int)
        others = [others[j] for j in picks]
    own = torch.cat([tiles.input(i)[0] for i in others]) if others else None
    return selected, p.mean(0).tolist(), target, own
