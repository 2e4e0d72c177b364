"""The minimal pixels inside each kept tile that keep the *slide's* decision.

A slide explanation keeps whole tiles. Inside each, the tile engine finds the pixels
that matter, with the slide's decision as its classifier: `TileInBag` maps one kept
tile's pixels to the slide's logits — the encoder embeds the (masked) tile, which takes
its place in the bag the explanation kept (the other kept tiles as they are, the rest
absent as the explanation made them absent), and the aggregator reads that bag. The
tile engine (`napari_medcam.engine.explain`) then masks the tile as it masks any image,
with the same goal: keep p(slide's class) with this tile masked and the rest as kept.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent, drive
from napari_medcam.engine.mil.absence import BagModel, bag_absence
from napari_medcam.engine.mil.result import SlideExplanation

MAX_TILES = 16  # kept tiles explained pixel by pixel at most (each is a tile explanation)


class TileInBag(nn.Module):
    """One kept tile's normalised pixels (B, C, s, s) → the slide's logits (B, K), with
    the tile at ``position`` of a fixed ``bag`` (M, D) at grid ``coords`` (M, 2)."""

    def __init__(
        self, clf: SlideClassifier, bag: torch.Tensor, coords: torch.Tensor, position: int
    ) -> None:
        super().__init__()
        self.encoder, self.aggregator = clf.encoder, clf.aggregator
        self.clf = clf
        self.register_buffer("bag", bag.detach().clone())
        self.register_buffer("coords", coords.detach().clone())
        self.position = int(position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        p = self.position
        rows = [
            self.clf.aggregate(
                torch.cat([self.bag[:p], z[b : b + 1].to(self.bag.dtype), self.bag[p + 1 :]]),
                self.coords,
            )[0]
            for b in range(len(z))
        ]
        return torch.cat(rows)


@dataclass
class KeptTilePixels:
    """The pixel evidence of one kept tile: its index in the bag, its window (y0, x0,
    y1, x1) in the slide array's pixels, and the tile engine's explanation of it."""

    index: int
    window: tuple[int, int, int, int]
    explanation: Explanation


def check_pixels(clf: SlideClassifier) -> None:
    """ValueError when pixel evidence cannot be made for this classifier's tiles (ask
    before the embedding pass, which may take hours): the encoder must read tiles
    unresized, so that a mask on the tile is a mask on what the encoder sees."""
    if clf.input_size != clf.tile_size:
        raise ValueError(
            f"--pixels needs tiles the encoder reads unresized ({clf.tile_size} px tiles, "
            f"encoder input {clf.input_size} px)"
        )


def pixels_skipped(result: SlideExplanation) -> str:
    """Why the kept tiles of ``result`` get no pixel evidence ("" when they can)."""
    if not result.meets_goal:
        return "no set of tiles keeps the decision, so no pixels inside them do"
    if result.n_kept > MAX_TILES:
        return f"{result.n_kept} kept tiles; pixel evidence is computed for at most {MAX_TILES}"
    return ""


def tile_classifier(
    result: SlideExplanation,
    clf: SlideClassifier,
    index: int,
    absence_embeddings: np.ndarray | None = None,
) -> Classifier:
    """A tile classifier whose decision is the slide's, for kept tile ``index``."""
    if result.embeddings is None:
        raise ValueError("this explanation does not carry its bag's embeddings: explain again")
    check_pixels(clf)
    model = BagModel(clf, result.embeddings, result.grid)
    fill = bag_absence(model, result.target, result.absence, absence_embeddings, 0)
    keep = torch.from_numpy(result.kept.copy())
    bag, coords = fill.absent_bag(model, keep)
    # removal keeps the kept rows in bag order; replacement keeps every row
    position = int(keep[:index].sum()) if result.absence == "removal" else index
    module = TileInBag(clf, bag, coords, position)
    return Classifier(
        module,
        input_size=(clf.tile_size, clf.tile_size),
        mean=clf.mean,
        std=clf.std,
        class_names=list(clf.class_names),
        name=f"{clf.name} (slide decision, tile {index})",
    )


def iter_kept_pixels(
    image: Any,
    result: SlideExplanation,
    clf: SlideClassifier,
    config: MedCAMConfig | None = None,
    *,
    absence_embeddings: np.ndarray | None = None,
) -> Generator[ProgressEvent, None, list[KeptTilePixels]]:
    """Explain the pixels of every kept tile of ``result`` (``image``: the slide array
    it was made on), yielding the tile engine's progress. Only for a set that meets its
    goal, and at most `MAX_TILES` tiles."""
    reason = pixels_skipped(result)
    if reason:
        raise ValueError(reason)
    kept = np.flatnonzero(result.kept)
    # the tile engine's verb imports this package (it dispatches slide classifiers here)
    from napari_medcam.engine.explain import iter_explain

    out: list[KeptTilePixels] = []
    for k, i in enumerate(kept):
        y0, x0, y1, x1 = (int(v) for v in result.windows[i])
        tile = np.asarray(image[y0:y1, x0:x1])
        tile_clf = tile_classifier(result, clf, int(i), absence_embeddings)
        steps = iter_explain(tile, tile_clf, result.target, config)
        while True:
            try:
                event = next(steps)
            except StopIteration as done:
                exp = done.value
                break
            event.tile, event.tiles = k, len(kept)
            yield event
        out.append(KeptTilePixels(int(i), (y0, x0, y1, x1), exp))
    return out


def explain_kept_pixels(
    image: Any,
    result: SlideExplanation,
    clf: SlideClassifier,
    config: MedCAMConfig | None = None,
    **options: Any,
) -> list[KeptTilePixels]:
    """`iter_kept_pixels` to its end."""
    return drive(iter_kept_pixels(image, result, clf, config, **options))
