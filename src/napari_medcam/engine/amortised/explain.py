"""Explaining with a fitted explainer: every tile in one pass, verdicts fail closed.

Tiles are read, classified and masked in batches (one classifier pass and one
explainer pass per batch); each masked tile is then judged with exactly the per-image
engine's verdict and, with ``refine=N``, held to the per-image goal and repaired
(`napari_medcam.engine.amortised.batch`). A tile that fails is **not shown**.
Every class the classifier finds (except, on a tiled image, the explainer's
empty class, or the class the classifier gives a blank image when it has none)
is explained in the same pass (``labels`` holds class index + 1 per pixel,
`napari_medcam.engine.amortised.labels`); a tile of the empty class shows
nothing and its verdict says why.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize, resolve_device
from napari_medcam.engine.amortised.batch import explain_batch
from napari_medcam.engine.amortised.file import Explainer, load_explainer
from napari_medcam.engine.amortised.labels import combine_labels
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent
from napari_medcam.engine.optimise import to_numpy_mask
from napari_medcam.engine.summary import summarise
from napari_medcam.engine.tile_result import TileResult
from napari_medcam.engine.tiles import Tiles, blank_class, tile_class
from napari_medcam.tiling import MIN_TISSUE_FRACTION, Stitcher


def resolve_explainer(explainer: Any, classifier: Classifier) -> Explainer:
    """An `Explainer`, a file path or a packaged name, checked against ``classifier``."""
    if isinstance(explainer, (str, Path)):
        return load_explainer(explainer, classifier)
    if not isinstance(explainer, Explainer):
        raise ValueError(f"explainer must be an Explainer, a file or 'demo', got {explainer!r}")
    explainer.check(classifier)
    return explainer


def iter_explain_amortised(
    image: Any,
    classifier: Classifier,
    explainer: Any,
    target: int | None,
    config: MedCAMConfig | None,
    *,
    device: str | torch.device = "auto",
    tile_overlap: int | None = None,
    tile_batch: int = 16,
    skip_glass: bool = True,
    refine: int = 0,
    tissue: torch.Tensor | None = None,
) -> Generator[ProgressEvent, None, Explanation]:
    """One pass over ``image``'s tiles with ``explainer`` (module docstring).

    ``target`` None explains every class found; an index explains that class only.
    Yields one `ProgressEvent` per batch of tiles (and per refinement step).
    """
    exp = resolve_explainer(explainer, classifier)
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be a whole number of steps ≥ 0, got {refine!r}")
    config = config or exp.config
    dev = resolve_device(device)
    tiles = Tiles(image, classifier, dev, tile_overlap)
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be ≥ 1, got {tile_batch}")
    start = time.perf_counter()
    classifier.to(dev)
    if tissue is not None:
        tissue = tissue.to(dev)
    blank = None
    if tiles.tiled and target is None:  # the class of "nothing here": not a finding
        blank = exp.empty_class
        if blank is None:
            blank = blank_class(classifier, dev)
    run = _Pass(tiles, classifier, exp, config, refine, tissue, target, blank, skip_glass)
    n = len(tiles.windows)
    try:
        for first in range(0, n, tile_batch):
            chunk = list(range(first, min(first + tile_batch, n)))
            done = yield from run.explain(chunk)
            yield ProgressEvent(
                chunk[-1] + 1,
                n,
                {},
                float(np.mean([f.scores.masked for f in done])) if done else 0.0,
                float(np.mean([f.area for f in done])) if done else 0.0,
            )
        labels, mask, soft, area, names = run.masks()
    finally:
        run.close()
    return _result(run, labels, mask, soft, area, names, start)


class _Pass:
    """One pass over an image's tiles: what it explains with, and what it has gathered.

    Each target class gets its own `Stitcher` (soft masks blended by their maximum);
    a failed tile's window is cleared after stitching; every tissue tile's class and
    probabilities are counted, explained or not.
    """

    def __init__(
        self,
        tiles: Tiles,
        classifier: Classifier,
        explainer: Explainer,
        config: MedCAMConfig,
        refine: int,
        tissue: torch.Tensor | None,
        target: int | None,
        blank: int | None,
        skip_glass: bool,
    ) -> None:
        self.tiles, self.classifier, self.explainer = tiles, classifier, explainer
        self.config, self.refine, self.tissue = config, refine, tissue
        #: the class to explain (None: every class found but ``blank``, "nothing here")
        self.target, self.blank, self.skip_glass = target, blank, skip_glass
        self.stitchers: dict[int, Stitcher] = {}
        self.per_tile: list[TileResult] = []
        self.failed: list[tuple[slice, ...]] = []  # windows of invalid tiles
        self.tile_classes: list[dict[str, Any]] = []  # every tissue tile's class
        self.prob_sum = np.zeros(classifier.num_classes)
        self.n_tissue = 0

    def explain(self, chunk: list[int]) -> Generator[ProgressEvent, None, list[TileResult]]:
        """Classify the windows ``chunk``; explain, judge and stitch those of the target
        class; return the tiles explained."""
        tiles, classifier, target, blank = self.tiles, self.classifier, self.target, self.blank
        inputs = [tiles.input(i) for i in chunk]
        keep = [
            j
            for j, (_, frac) in enumerate(inputs)
            if not (tiles.tiled and self.skip_glass and frac < MIN_TISSUE_FRACTION)
        ]
        if not keep:
            return []
        x = torch.cat([inputs[j][0] for j in keep])
        with torch.no_grad():
            p = torch.softmax(classifier.module(x), 1)
        self.prob_sum += p.sum(0).cpu().numpy()
        self.n_tissue += len(keep)
        preds = p.argmax(1).tolist()
        if tiles.tiled:
            self.tile_classes += [
                tile_class(tiles.windows[chunk[k]], classifier.class_names[c], float(p[j, c]))
                for j, (k, c) in enumerate(zip(keep, preds))
            ]
        wanted = (lambda c: c == target) if target is not None else (lambda c: c != blank)
        sel = [j for j, c in enumerate(preds) if wanted(c)]
        if not sel:
            return []
        facts = yield from explain_batch(
            x[sel],
            classifier,
            self.explainer,
            [preds[j] for j in sel],
            [p[j].tolist() for j in sel],
            self.config,
            self.refine,
            self.tissue,
            done=chunk[0],
            total=len(tiles.windows),
        )
        for j, f in zip(sel, facts):
            self._keep(f, tiles.windows[chunk[keep[j]]])
        return facts

    def _keep(self, tile: TileResult, window: tuple[slice, ...]) -> None:
        """Stitch a judged tile's soft mask into its class's map, or note its window as
        failed; on a tiled image keep only its facts (memory must not grow with it)."""
        tile.window = window
        if tile.reason and self.tiles.tiled:
            self.failed.append(window)
        else:
            if tile.target not in self.stitchers:
                self.stitchers[tile.target] = Stitcher(self.tiles.spatial)
            shape = tuple(s.stop - s.start for s in window)
            self.stitchers[tile.target].add(window, to_numpy_mask(resize(tile.soft, shape)))
        if self.tiles.tiled:
            tile.drop_tensors()
        self.per_tile.append(tile)

    def masks(self) -> tuple[Any, Any, Any, float, dict[int, str]]:
        """(labels, mask, soft, area, {label: class name}) of what the pass shows.

        One tile shows its binary mask, exactly (not a resized soft map's threshold).
        """
        tiles, names = self.tiles, self.classifier.class_names
        labels, mask, soft, area, shown = combine_labels(
            self.stitchers, tiles.spatial, self.config, self.failed, names
        )
        if not tiles.tiled and self.per_tile:
            f = self.per_tile[0]
            mask = to_numpy_mask(resize(f.hard, tiles.spatial, smooth=False)) > 0.5
            labels = mask.astype(np.uint8) * (f.target + 1)
            area = float(mask.mean())
            shown = {f.target + 1: names[f.target]} if mask.any() else {}
        if soft is None:
            soft = np.zeros(tiles.spatial, np.float32)
        return labels, mask, soft, area, shown

    def close(self) -> None:
        """Remove the stitchers' files (cancelled, failed or done)."""
        for s in self.stitchers.values():
            s.close()


def _result(
    run: _Pass,
    labels: Any,
    mask: Any,
    soft: Any,
    area: float,
    names: dict[int, str],
    start: float,
) -> Explanation:
    """The pass's `Explanation`: `summarise` of the tiles shown, with the explainer's
    own provenance (what it explained, failed, refined and pruned)."""
    per_tile, classifier, exp = run.per_tile, run.classifier, run.explainer
    config, refine, target = run.config, run.refine, run.target
    # the classes shown: those of the valid tiles (every explained tile's when none is)
    shown = [f for f in per_tile if f.valid] or per_tile
    found = sorted({f.target for f in shown})
    predicted = int(run.prob_sum.argmax())
    main = (
        max(found, key=lambda c: sum(f.target == c for f in shown))
        if found
        else (target if target is not None else predicted if run.n_tissue else 0)
    )
    name = " + ".join(classifier.class_names[c] for c in found) or classifier.class_names[main]
    result = summarise(
        per_tile,
        mask,
        soft,
        area,
        classifier,
        # what ran: the refinement and pruning only with refine, at the network's scale
        config.replace(
            refine_steps=refine,
            prune=config.prune and refine > 0,
            mask_scale=exp.net.mask_scale,
        ),
        main,
        name,
        (run.prob_sum / max(run.n_tissue, 1)).tolist(),
        time.perf_counter() - start,
        len(run.tiles.windows),
        run.tiles.device,
        run.tile_classes,
        none_explained=_none_explained(
            run.tiles.tiled, run.n_tissue, target, run.blank, predicted, exp, classifier
        ),
    )
    if per_tile:  # each tile's own class: the confidence it was explained for
        result.original_confidence = float(np.mean([f.original for f in shown]))
    refined = [f for f in per_tile if f.refined]
    result.labels = labels
    result.label_classes = names
    result.provenance["explainer"] = {
        "file": exp.metadata.get("file", "(in memory)"),
        "fingerprint": exp.metadata["classifier"]["fingerprint"],
        "refine_steps": refine,
        "tiles_explained": len(per_tile),
        "tiles_failed_amortised": sum(f.amortised_failed for f in per_tile),
        "tiles_refined": len(refined),
        "tiles_fixed_by_refine": sum(f.amortised_failed and f.valid for f in per_tile),
        "tiles_pruned": sum(f.pruned for f in per_tile),
    }
    if refined:
        result.status += f"; {len(refined)} tile(s) refined (≤ {refine} steps each)"
    return result


def _none_explained(
    tiled: bool,
    n_tissue: int,
    target: int | None,
    blank: int | None,
    predicted: int,
    exp: Explainer,
    classifier: Classifier,
) -> str:
    """Why a run explained no tile, in words that are true of this image."""
    names = classifier.class_names
    if tiled and not n_tissue:
        return "no tissue tile: every window is glass"
    if target is not None and tiled:
        return f"no tissue tile is classified '{names[target]}'"
    if target is not None:
        return (
            f"the image is classified '{names[predicted]}', not '{names[target]}': an "
            f"explainer explains an image's own class (explain '{names[target]}' per image)"
        )
    why = (
        "this explainer's empty class"
        if blank is not None and blank == exp.empty_class
        else "the class the classifier gives a blank image"
    )
    cls = names[blank if blank is not None else predicted]
    return f"every tissue tile is classified '{cls}', {why}: nothing to explain"
