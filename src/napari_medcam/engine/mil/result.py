"""What explaining a slide-level decision returns: the kept tiles, and what is true of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# tile labels on the slide's tile grid (`SlideExplanation.tile_labels`)
GLASS, TISSUE, KEPT = 0, 1, 2


@dataclass
class SlideExplanation:
    """The minimal set of tiles that keeps a slide classifier's decision.

    ``kept`` (N,) bool over the bag's tiles; ``windows`` (N, 4) their ``(y0, x0, y1, x1)``
    in the slide array's pixels; ``grid`` (N, 2) their (row, column) on the tile grid of
    shape ``grid_shape``. ``meets_goal``: with only the kept tiles present (the rest
    absent: ``absence`` "removal" or "replacement") the slide still reads ``target_name``
    with p ≥ ``goal`` (``tolerance`` of ``p_original``), and on average over the random
    absences too (``p_drawn``). ``necessary``: with exactly the kept tiles absent the
    slide reads another class (``without_name``, p(target) ``p_without``); None when the
    kept set is the whole bag (nothing is left to read). ``attention``: the aggregator's
    own weights on the full bag, where it has them, for comparison. ``chosen``: "search"
    (the engine found the set) or "given" (someone chose it and the engine checked it:
    `napari_medcam.engine.mil.check_bag_tiles`). `sentence` says it.
    """

    target: int
    target_name: str
    class_names: list[str]
    kept: np.ndarray
    windows: np.ndarray
    grid: np.ndarray
    grid_shape: tuple[int, int]
    absence: str
    tolerance: float
    goal: float
    p_original: float
    p_kept: float
    p_drawn: float
    meets_goal: bool
    necessary: bool | None
    without_name: str | None
    p_without: float | None
    attention: np.ndarray | None = None
    chosen: str = "search"
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the bag's embeddings (N, D), kept so that an edited set can be checked
    #: (`napari_medcam.engine.mil.check_tiles`) without embedding the slide again
    embeddings: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_tiles(self) -> int:
        return len(self.kept)

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    @property
    def kept_windows(self) -> np.ndarray:
        return self.windows[self.kept]

    @property
    def sentence(self) -> str:
        """One sentence that is exactly true of the returned set (and says when it fails)."""
        k, n, t = self.n_kept, self.n_tiles, self.target_name
        gone = (
            "without them"
            if self.absence == "removal"
            else "with them replaced by counterfactual tissue"
        )
        if self.chosen == "given":
            return self._checked_sentence(gone)
        if not self.meets_goal:
            return (
                f"No set of tiles meets the goal for {t!r} (p ≥ {self.goal:.2f}: "
                f"{self.tolerance:.0%} of the slide's p = {self.p_original:.2f}, and above the "
                f"decision): all {n:,} tiles are returned, and they do not meet it either."
            )
        head = f"{k:,} of {n:,} tiles suffice for {t!r}"
        if self.necessary is None:
            return f"{head}: the search found no smaller set that keeps it."
        if self.necessary:
            return f"{head}; {gone} the slide reads {self.without_name!r}."
        return (
            f"{head}; {gone} the slide still reads {t!r} (p = {self.p_without:.2f}): "
            "other tiles carry it too."
        )

    def _checked_sentence(self, gone: str) -> str:
        k, n, t = self.n_kept, self.n_tiles, self.target_name
        if not self.meets_goal:
            return (
                f"These {k:,} of {n:,} tiles do not keep {t!r} on their own: p = "
                f"{self.p_kept:.2f} (on random absences {self.p_drawn:.2f}); the goal is "
                f"p ≥ {self.goal:.2f} ({self.tolerance:.0%} of the slide's {self.p_original:.2f})."
            )
        head = f"These {k:,} of {n:,} tiles keep {t!r} on their own (p = {self.p_kept:.2f})"
        if self.necessary is None:
            return f"{head}: they are the whole bag."
        if self.necessary:
            return f"{head}; {gone} the slide reads {self.without_name!r}."
        return f"{head}; {gone} the slide still reads {t!r} (p = {self.p_without:.2f})."

    def tile_labels(self) -> np.ndarray:
        """The tile grid as labels: 0 glass (not in the bag), 1 tissue, 2 kept evidence."""
        out = np.full(self.grid_shape, GLASS, np.uint8)
        out[self.grid[:, 0], self.grid[:, 1]] = TISSUE
        kept = self.grid[self.kept]
        out[kept[:, 0], kept[:, 1]] = KEPT
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary: the decision, the kept tiles' windows, the sentence."""
        return {
            "sentence": self.sentence,
            "target": self.target_name,
            "absence": self.absence,
            "chosen": self.chosen,
            "tiles": self.n_tiles,
            "kept": self.n_kept,
            "kept_windows": self.kept_windows.tolist(),
            "meets_goal": self.meets_goal,
            "necessary": self.necessary,
            "reads_without": self.without_name,
            "p_original": self.p_original,
            "p_kept": self.p_kept,
            "p_drawn": self.p_drawn,
            "p_without": self.p_without,
            "goal": self.goal,
            "tolerance": self.tolerance,
            "provenance": self.provenance,
        }
