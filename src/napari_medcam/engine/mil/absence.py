"""What "without these tiles" means for a bag: removal, or counterfactual tissue.

A tile absent from the explanation is either **removed** from the bag (the slide read
as if those tiles had never been cut), or **replaced** by the embedding of a tile the
classifier calls another class — counterfactual tissue, as for tiles
(`napari_medcam.engine.absence`): the slide read as if that place held ordinary tissue.
Counterfactual tissue is the slide's own tissue (tiles whose bag of one reads as another
class than the target, with p(target) < 0.5), or embeddings the caller gives.

Robustness, as for tiles: the kept set must also hold on random absences. For removal,
each draw replaces a random half of the absent tiles by random counterfactual tissue
(the rest removed); for replacement, each draw replaces every absent tile by a random
counterfactual tile instead of the nearest one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_medcam.classifiers.slide import SlideClassifier

REMOVAL, REPLACEMENT = "removal", "replacement"
MODES = (REMOVAL, REPLACEMENT)
NEUTRAL_P = 0.5  # counterfactual tissue reads below this p(target), and not as the target
CANDIDATES = 256  # the slide's tiles tried as counterfactual tissue (evenly spaced)
DRAWS = 4  # random absences each kept set is checked on


class BagModel:
    """One bag and its classifier: probabilities of any variant of the bag."""

    def __init__(self, clf: SlideClassifier, embeddings: np.ndarray, grid: np.ndarray) -> None:
        self.clf = clf
        self.e = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32))
        self.coords = torch.from_numpy(np.ascontiguousarray(grid, np.float32))

    def __len__(self) -> int:
        return len(self.e)

    def logits(self, e: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.clf.aggregate(e, coords)[0][0]

    def probs(self, e: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(self.logits(e, coords), 0)


@dataclass
class BagAbsence:
    """How absent tiles are filled: ``mode``, the counterfactual embeddings (M, D), each
    tile's nearest one (N,), and the random draws: a counterfactual per tile (P, N) and
    which absent tiles each draw replaces (P, N)."""

    mode: str
    counterfactual: torch.Tensor
    nearest: torch.Tensor
    draws: torch.Tensor
    replaced: torch.Tensor
    source: str

    def absent_bag(self, model: BagModel, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bag with only ``keep`` (bool (N,)) present, the rest absent."""
        if self.mode == REMOVAL:
            return model.e[keep], model.coords[keep]
        fill = self.counterfactual[self.nearest]
        return torch.where(keep[:, None], model.e, fill), model.coords

    def drawn_bags(
        self, model: BagModel, keep: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The bag on each random absence (one per draw)."""
        if not len(self.counterfactual):
            return [self.absent_bag(model, keep)]
        out = []
        for p in range(len(self.draws)):
            fill = torch.where(keep[:, None], model.e, self.counterfactual[self.draws[p]])
            if self.mode == REMOVAL:
                present = keep | self.replaced[p]
                out.append((fill[present], model.coords[present]))
            else:
                out.append((fill, model.coords))
        return out

    def without(self, model: BagModel, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bag with exactly ``keep`` absent (for necessity)."""
        return self.absent_bag(model, ~keep)

    def soft_fill(self, draw: int | None) -> torch.Tensor:
        """What a relaxed keep value mixes each tile towards: its nearest counterfactual
        embedding, or a draw's (there must be counterfactual tissue)."""
        return self.counterfactual[self.nearest if draw is None else self.draws[draw]]


def _neutral(model: BagModel, candidates: torch.Tensor, target: int) -> torch.Tensor:
    """Those of ``candidates`` (M, D) whose bag of one reads as another class than the target."""
    ok = []
    for j in range(len(candidates)):
        p = model.probs(candidates[j : j + 1], torch.zeros((1, 2)))
        ok.append(int(p.argmax()) != target and float(p[target]) < NEUTRAL_P)
    return candidates[torch.tensor(ok, dtype=torch.bool)] if ok else candidates[:0]


def bag_absence(
    model: BagModel,
    target: int,
    mode: str,
    given: np.ndarray | None = None,
    seed: int = 0,
) -> BagAbsence:
    """The absence for ``model``'s bag: counterfactual tissue found (or ``given``), drawn."""
    if mode not in MODES:
        raise ValueError(f"absence must be one of {MODES}, got {mode!r}")
    n, d = model.e.shape
    if given is not None:
        given = np.asarray(given, np.float32)
        if given.ndim != 2 or given.shape[1] != d or not len(given):
            raise ValueError(f"absence_embeddings must be (M, {d}) embeddings, got {given.shape}")
        cf, source = _neutral(model, torch.from_numpy(given), target), "given embeddings"
    else:
        picks = np.unique(np.linspace(0, n - 1, min(CANDIDATES, n)).round().astype(int))
        cf, source = _neutral(model, model.e[torch.from_numpy(picks)], target), "the slide's tiles"
    if not len(cf) and mode == REPLACEMENT:
        raise ValueError(
            f"no counterfactual tissue: none of {source} reads as another class than "
            f"{model.clf.class_names[target]!r} on its own; pass absence_embeddings= "
            "(embeddings of tissue without the finding) or use absence='removal'"
        )
    g = torch.Generator().manual_seed(int(seed))
    m = max(1, len(cf))
    draws = torch.randint(0, m, (DRAWS, n), generator=g)
    replaced = (
        torch.rand((DRAWS, n), generator=g) < 0.5
        if mode == REMOVAL
        else torch.ones((DRAWS, n), dtype=torch.bool)
    )
    nearest = torch.cdist(model.e, cf).argmin(1) if len(cf) else torch.zeros(n, dtype=torch.long)
    return BagAbsence(mode, cf, nearest, draws, replaced, source)
