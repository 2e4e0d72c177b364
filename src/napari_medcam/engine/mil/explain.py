"""Explaining a slide classifier's decision: slide array → bag → minimal tiles.

`iter_explain_slide` is what `napari_medcam.explain` does with a `SlideClassifier`:
embed the slide's tissue tiles (cached, `napari_medcam.engine.mil.embedding`), then
`explain_bag` finds the smallest set of tiles that alone keeps the decision
(`napari_medcam.engine.mil.minimal`) and whether the decision needs them.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.prepare import resolve_device
from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import ProgressEvent, drive
from napari_medcam.engine.mil.absence import MODES, REMOVAL, BagModel, bag_absence
from napari_medcam.engine.mil.cache import Bag
from napari_medcam.engine.mil.embedding import iter_embed_slide
from napari_medcam.engine.mil.minimal import (
    GoalTest,
    contiguous_order,
    goal_for,
    greedy_drop,
    relaxed_scores,
    smallest_prefix,
)
from napari_medcam.engine.mil.result import SlideExplanation
from napari_medcam.engine.renamed import renamed_keywords

DEFAULT_TOLERANCE = 0.95  # the tile engine's (MedCAMConfig.fast)
# a bag's passes are small products ((N, D) by (D, h)): below this many numbers, torch's
# threads cost more in synchronisation than they save (a 15-tile bag on the loaded 2-core
# VM: 24 s with 2 threads, 2.1 s with 1), so the search runs on one
ONE_THREAD_BELOW = 1 << 20


@contextmanager
def _threads_for(numbers: int) -> Iterator[None]:
    """One torch thread for a small bag, restored after (on the calling thread)."""
    before = torch.get_num_threads()
    if numbers >= ONE_THREAD_BELOW or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tolerance(config: MedCAMConfig | None) -> tuple[float, int]:
    if config is None:
        return DEFAULT_TOLERANCE, 0
    if not isinstance(config, MedCAMConfig):
        raise ValueError(f"config must be a MedCAMConfig, got {type(config).__name__}")
    return config.tolerance or DEFAULT_TOLERANCE, config.seed


def check_bag(embeddings: Any, grid: Any, clf: SlideClassifier) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N, D) and grid positions (N, 2) as arrays; ValueError when they do not fit."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2 or e.shape[1] != clf.embedding_dim or not len(e):
        raise ValueError(
            f"embeddings must be (N ≥ 1, {clf.embedding_dim}) for this encoder, got {e.shape}"
        )
    if not np.isfinite(e).all():
        raise ValueError("the embeddings contain NaN or infinite values")
    g = np.asarray(grid)
    if g.shape != (len(e), 2) or not np.issubdtype(g.dtype, np.integer) or (g < 0).any():
        raise ValueError(f"grid must be ({len(e)}, 2) non-negative integer (row, column) positions")
    if len(np.unique(g, axis=0)) != len(g):
        raise ValueError("two tiles of the bag share a grid position")
    return e, g.astype(np.int64)


class _BagSetup:
    """What a search and a check of one bag share: the model, the decision explained,
    its goal, and the absence (counterfactual tissue and random draws)."""

    def __init__(
        self,
        embeddings: Any,
        grid: Any,
        clf: SlideClassifier,
        target: int | str | None,
        config: MedCAMConfig | None,
        absence: str,
        absence_embeddings: np.ndarray | None,
    ) -> None:
        e, g = check_bag(embeddings, grid, clf)
        self.tolerance, self.seed = _tolerance(config)
        target_given = clf.class_index(target)
        self.clf, self.e, self.g, self.absence = clf, e, g, absence
        self.model = BagModel(clf, e, g)
        with torch.no_grad():
            logits, attention = clf.aggregate(self.model.e, self.model.coords)
        p_full = torch.softmax(logits[0], 0)
        self.target = int(p_full.argmax()) if target_given is None else target_given
        self.p0 = float(p_full[self.target])
        self.goal = goal_for(self.p0, self.tolerance)
        self.attention = None if attention is None else attention.detach().cpu().numpy().copy()
        with _threads_for(e.size):
            self.fill = bag_absence(self.model, self.target, absence, absence_embeddings, self.seed)
        self.test = GoalTest(self.model, self.fill, self.target, self.goal)

    def result(
        self, keep: torch.Tensor, check: Any, windows: np.ndarray | None, chosen: str, **facts: Any
    ) -> SlideExplanation:
        with _threads_for(self.e.size):
            necessary, without, p_without = _necessity(self.model, self.fill, keep, self.target)
        n, g = len(self.e), self.g
        return SlideExplanation(
            target=self.target,
            target_name=self.clf.class_names[self.target],
            class_names=list(self.clf.class_names),
            kept=keep.numpy().copy(),
            windows=np.zeros((n, 4), np.int64) if windows is None else np.asarray(windows),
            grid=g,
            grid_shape=(int(g[:, 0].max()) + 1, int(g[:, 1].max()) + 1),
            absence=self.absence,
            tolerance=self.tolerance,
            goal=self.goal,
            p_original=self.p0,
            p_kept=check.p_kept,
            p_drawn=check.p_drawn,
            meets_goal=check.meets,
            necessary=necessary,
            without_name=without,
            p_without=p_without,
            attention=self.attention,
            chosen=chosen,
            embeddings=self.e,
            provenance={
                "classifier": self.clf.name,
                "counterfactual_tissue": f"{len(self.fill.counterfactual)} from {self.fill.source}",
                **facts,
            },
        )


def explain_bag(
    embeddings: Any,
    grid: Any,
    clf: SlideClassifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    absence: str = REMOVAL,
    absence_embeddings: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> SlideExplanation:
    """The minimal tiles of a bag already embedded: ``embeddings`` (N, D), ``grid`` (N, 2).

    ``target``: the class to explain (default: the slide's predicted class).
    ``absence``: "removal" (absent tiles leave the bag) or "replacement" (they become
    counterfactual tissue: the slide's own tiles that read as another class, or
    ``absence_embeddings``). ``config``: its ``tolerance`` (default 0.95) and ``seed``.
    `iter_explain_bag` is the same with progress.
    """
    return drive(
        iter_explain_bag(
            embeddings,
            grid,
            clf,
            target,
            config,
            absence=absence,
            absence_embeddings=absence_embeddings,
            windows=windows,
        )
    )


def iter_explain_bag(
    embeddings: Any,
    grid: Any,
    clf: SlideClassifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    absence: str = REMOVAL,
    absence_embeddings: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> Generator[ProgressEvent, None, SlideExplanation]:
    """`explain_bag`, yielding "search" events (a cancel acts at each)."""
    started = time.perf_counter()
    bag = _BagSetup(embeddings, grid, clf, target, config, absence, absence_embeddings)
    with _threads_for(bag.e.size):
        scores, steps = yield from relaxed_scores(
            bag.model, bag.fill, bag.target, bag.goal, bag.tolerance, bag.seed
        )
        keep, check = smallest_prefix(contiguous_order(scores, bag.g), bag.test)
        keep, check = yield from greedy_drop(keep, scores, bag.g, bag.test, check)
    return bag.result(
        keep,
        check,
        windows,
        "search",
        relaxed_steps=steps,
        goal_checks=bag.test.calls,
        seconds_minimal=round(time.perf_counter() - started, 3),
    )


def check_bag_tiles(
    embeddings: Any,
    grid: Any,
    clf: SlideClassifier,
    keep: Any,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    absence: str = REMOVAL,
    absence_embeddings: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> SlideExplanation:
    """Score a set of tiles someone chose (``keep``: (N,) bool over the bag) exactly as a
    found set is scored: does it alone keep the decision (the rest absent, and on the
    random absences), and does the slide read otherwise without it? Same options and
    seed as `explain_bag`, so a found set checked again gives the same answer."""
    bag = _BagSetup(embeddings, grid, clf, target, config, absence, absence_embeddings)
    k = np.asarray(keep)
    if k.shape != (len(bag.e),) or k.dtype != bool:
        raise ValueError(f"keep must be a ({len(bag.e)},) boolean array over the bag's tiles")
    chosen = torch.from_numpy(k.copy())
    with _threads_for(bag.e.size):
        check = bag.test(chosen)
    return bag.result(chosen, check, windows, "given")


def check_tiles(
    result: SlideExplanation,
    clf: SlideClassifier,
    keep: Any,
    config: MedCAMConfig | None = None,
    *,
    absence_embeddings: np.ndarray | None = None,
) -> SlideExplanation:
    """`check_bag_tiles` on the bag, decision and absence of an earlier ``result`` (pass
    the ``config`` and ``absence_embeddings`` it was made with for the same goal)."""
    if result.embeddings is None:
        raise ValueError("this explanation does not carry its bag's embeddings: explain again")
    return check_bag_tiles(
        result.embeddings,
        result.grid,
        clf,
        keep,
        result.target,
        config,
        absence=result.absence,
        absence_embeddings=absence_embeddings,
        windows=result.windows,
    )


def _necessity(
    model: BagModel, fill: Any, keep: torch.Tensor, target: int
) -> tuple[bool | None, str | None, float | None]:
    """Whether the decision flips with exactly ``keep`` absent: (flips, class read, p(target))."""
    e, coords = fill.without(model, keep)
    if not len(e):
        return None, None, None
    p = model.probs(e, coords)
    read = int(p.argmax())
    return read != target, model.clf.class_names[read], float(p[target])


@renamed_keywords("skip_background")
def iter_explain_slide(
    image: Any,
    clf: SlideClassifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    cache: str | Path | None = None,
    absence: str = REMOVAL,
    absence_embeddings: np.ndarray | None = None,
    device: str | torch.device = "auto",
    tile_overlap: int = 0,
    tile_batch: int = 64,
    skip_glass: bool = True,
) -> Generator[ProgressEvent, None, SlideExplanation]:
    """Explain a slide array's decision (options as `explain_bag`); yields "embed" events,
    then "search" events.

    ``image``: the slide at the classifier's level (H×W×C NumPy, dask or zarr array; the
    engine never opens a slide file). ``cache``: a zarr store path for the embeddings
    (reused while the encoder and tiling are unchanged). ``tile_overlap``: pixels shared
    by neighbouring tiles (default 0: MIL tiles do not overlap).
    """
    clf_checked = _check_classifier(clf)
    clf_checked.class_index(target)
    _tolerance(config)
    if absence not in MODES:  # before the embedding pass, which may take minutes
        raise ValueError(f"absence must be one of {MODES}, got {absence!r}")
    started = time.perf_counter()
    home = clf_checked.device  # where the caller keeps the classifier: restored at the end
    bag: Bag
    bag, facts = yield from iter_embed_slide(
        image,
        clf_checked,
        cache=cache,
        overlap=tile_overlap,
        batch=tile_batch,
        device=resolve_device(device),
        skip_glass=skip_glass,
    )
    clf_checked.to("cpu")  # the bag's passes are small: the CPU avoids per-call transfers
    seconds_embed = time.perf_counter() - started
    try:
        result = yield from iter_explain_bag(
            bag.embeddings,
            bag.grid,
            clf_checked,
            target,
            config,
            absence=absence,
            absence_embeddings=absence_embeddings,
            windows=bag.windows,
        )
    finally:
        clf_checked.to(home)
    result.grid_shape = bag.grid_shape
    result.provenance.update(facts, seconds_embed=round(seconds_embed, 3))
    yield ProgressEvent(1, 1, {}, result.p_kept, result.n_kept / result.n_tiles, stage="optimise")
    return result


def _check_classifier(clf: Any) -> SlideClassifier:
    if not isinstance(clf, SlideClassifier):
        raise ValueError(f"a slide classifier is needed, got {type(clf).__name__}")
    return clf
