"""One explained tile's facts, typed: what the verdict reads and what the summary reports.

Both engines (per-image, `napari_medcam.engine.image`; amortised,
`napari_medcam.engine.amortised.explain`) fill a `TileResult` per tile, judge it with
`napari_medcam.engine.verdict.tile_verdict` and hand the list to
`napari_medcam.engine.summary.summarise`. Only at that boundary does a tile become a
plain dict (`TileResult.as_record`): ``Explanation.tile_verdicts`` stays JSON-ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from napari_medcam.engine.absence import Absence
from napari_medcam.engine.regions import RegionReport


@dataclass(frozen=True)
class Scores:
    """What a tile's binary mask keeps (`napari_medcam.engine.scoring.evaluate_mask`)."""

    masked: float  # p(target) on the mask over the absence
    masked_probabilities: list[float]
    robust: float  # mean p(target) on fresh perturbations around the absence
    deletion: float  # p(target) with the mask's content replaced by the absence
    masked_pred: int  # the class the classifier gives the masked image

    @classmethod
    def of(cls, scores: Mapping[str, Any]) -> Scores:
        """From `evaluate_mask`'s dict (shared with the metrics and the edited-mask check)."""
        return cls(
            masked=scores["masked"],
            masked_probabilities=scores["masked_probabilities"],
            robust=scores["robust"],
            deletion=scores["deletion"],
            masked_pred=scores["masked_pred"],
        )

    @classmethod
    def nothing_kept(cls, probabilities: Sequence[float], target: int) -> Scores:
        """A tile with no neutral absence: nothing can be kept, and deleting changes nothing."""
        return cls(0.0, [0.0] * len(probabilities), 0.0, probabilities[target], -1)


@dataclass
class TileResult:
    """One tile's facts, from its classification to its verdict.

    ``soft``/``hard`` (1, 1, *input_size), ``absence`` and ``history`` are dropped
    (`drop_tensors`) once a tiled image's tile is stitched: a slide's memory must not
    grow with its tile count; the facts the summary reads stay.
    """

    target: int
    probabilities: list[float]
    absence: Absence | None = None
    absence_name: str = ""  # which absence (its candidate name)
    absence_report: list[dict[str, Any]] = field(default_factory=list)  # its candidates
    problem: str = ""  # why no mask could be made (no neutral absence, ...)
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    soft: torch.Tensor | None = None
    hard: torch.Tensor | None = None
    found_valid: bool = False  # the optimisation's own test passed (`MaskResult`)
    regions: RegionReport | None = None  # what the region step made of the mask
    scores: Scores | None = None
    area: float = 0.0
    reason: str = ""  # the verdict: why the mask cannot be trusted, "" when it can
    window: tuple[slice, ...] = ()  # where the tile lies in the image
    # amortised only: the refinement ran (None: per-image, not in the record), the mask
    # was pruned, the one-pass mask failed its verdict
    refined: bool | None = None
    pruned: bool = False
    amortised_failed: bool = False

    @classmethod
    def before_mask(cls, target: int, probabilities: list[float], absence: Absence) -> TileResult:
        """A tile's facts before any mask, in one shape for both engines."""
        return cls(
            target=target,
            probabilities=probabilities,
            absence=absence,
            absence_name=absence.name,
            absence_report=absence.candidates,
            problem=absence.problem,
        )

    @property
    def valid(self) -> bool:
        return not self.reason

    @property
    def original(self) -> float:
        """The classifier's confidence in the tile's target, unmasked."""
        return self.probabilities[self.target]

    def drop_tensors(self) -> None:
        """Forget the masks, the absence and the history: only the facts stay."""
        self.soft = self.hard = self.absence = None
        self.history = []

    def as_record(self) -> dict[str, Any]:
        """The tile's verdict as JSON-ready data (one entry of ``tile_verdicts``).

        ``window`` as [y0, x0, y1, x1] (2-D) or [z0, y0, x0, z1, y1, x1] (3-D): starts,
        then stops.
        """
        assert self.scores is not None, "a tile is judged before it is recorded"
        record: dict[str, Any] = {
            "window": [int(s.start) for s in self.window] + [int(s.stop) for s in self.window],
            "target": int(self.target),
            "original": round(float(self.original), 6),
            "masked": round(float(self.scores.masked), 6),
            "robust": round(float(self.scores.robust), 6),
            "area": round(float(self.area), 6),
            "valid": self.valid,
            "status": self.reason or "valid",
        }
        if self.regions is not None:
            record.update(
                regions=self.regions.regions,
                context_keeps=self.regions.dilated_keeps,
                trim_keeps=self.regions.eroded_keeps,
            )
        if self.refined is not None:
            record["refined"] = self.refined
        return record
