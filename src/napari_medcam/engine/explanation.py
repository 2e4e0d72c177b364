"""What one explanation returns, and the progress it reports on the way."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from napari_medcam.engine.renamed import renamed_fields

T = TypeVar("T")


class ExplanationCancelled(RuntimeError):
    """Raised by `explain` when its ``cancel`` flag was set during the run."""


def relay(
    gen: Generator[Any, None, T],
    cancel: threading.Event | Callable[[], bool] | None = None,
    cancelled: type[Exception] = ExplanationCancelled,
) -> Generator[Any, None, T]:
    """Re-yield a progress generator's events and return its result: the one loop behind
    every front end (a GUI worker yields on; `drive` consumes).

    ``cancel`` (an Event or a callable) is checked before every step; when set, the
    generator is closed (it cleans up) and ``cancelled`` is raised.
    """
    is_set = cancel.is_set if isinstance(cancel, threading.Event) else cancel
    while True:
        if is_set is not None and is_set():
            gen.close()
            raise cancelled("cancelled")
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        yield event


def drive(
    gen: Generator[Any, None, T],
    progress: Callable[[Any], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    cancelled: type[Exception] = ExplanationCancelled,
) -> T:
    """Run a progress generator to its result (`relay`, consumed): every blocking verb.

    ``progress`` gets every event; ``cancel`` is checked after each one.
    """
    loop = relay(gen, cancel, cancelled)
    while True:
        try:
            event = next(loop)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)


@dataclass
class ProgressEvent:
    """One unit of work (a step, or tiles classified): yielded for progress bars and plots."""

    step: int
    total: int
    losses: dict[str, float]
    masked_confidence: float
    area_fraction: float
    tile: int = 0
    tiles: int = 1
    # "optimise": a step of the mask's optimisation; "classify": tiles or slices
    # classified before any is explained; "gradcam": tiles of the comparison map;
    # "embed": a slide's tiles encoded for a slide classifier; "search": the search
    # for a slide's minimal tiles (relaxed steps, then tiles tried one by one)
    stage: str = "optimise"

    @property
    def fraction(self) -> float:
        """Progress of the current stage in [0, 1], across tiles."""
        return min(1.0, (self.tile + self.step / max(self.total, 1)) / max(self.tiles, 1))

    def describe(self) -> str:
        """One line for a status bar or terminal: what is being done, how far along."""
        tile = f"tile {self.tile + 1}/{self.tiles} · " if self.tiles > 1 else ""
        if self.stage == "classify":
            return f"{tile}classifying tiles {self.step}/{self.total}"
        if self.stage == "embed":
            return f"embedding tiles {self.step}/{self.total}"
        if self.stage == "gradcam":
            return f"Grad-CAM {self.step}/{self.total}"
        if self.stage == "search":
            return f"searching the fewest tiles {self.step}/{self.total}"
        return (
            f"{tile}step {self.step}/{self.total} · p(masked) {self.masked_confidence:.2f}"
            f" · area {100 * self.area_fraction:.1f} %"
        )


@renamed_fields
@dataclass
class Explanation:
    """A Med-CAM explanation of one image.

    ``valid`` is False, with the reason in ``status``, when the mask should not be
    trusted (`napari_medcam.engine.verdict`): no mask passed the optimisation's test,
    empty or near-full mask, decision lost on the binary mask or on the
    perturbations, or no neutral absence (the classifier already gives the class to a
    blank image). A tiled image (slide, region, volume) is valid when at least
    ``config.valid_share`` (default 0.9) of the tiles it explained are, never when
    it explained none; ``tile_verdicts`` has one dict per explained tile (window
    as starts then stops — [y0, x0, y1, x1] or [z0, y0, x0, z1, y1, x1] — target,
    original, masked, robust, area, valid, status), and the windows of invalid tiles
    hold no evidence in ``mask``.

    ``mask`` and ``soft_mask`` are NumPy arrays, except for images larger than
    `napari_medcam.tiling.IN_MEMORY_PIXELS` (a whole slide at full resolution):
    there they are chunked zarr arrays in temporary folders (removed when the
    arrays are collected); slice them, or `napari_medcam.io`/`slides` write them
    chunk by chunk.
    """

    mask: np.ndarray  # or zarr.Array, see above
    soft_mask: np.ndarray
    target: int
    class_name: str
    original_confidence: float
    masked_confidence: float
    robust_confidence: float
    deletion_confidence: float
    area_fraction: float
    seconds: float
    valid: bool
    status: str
    probabilities: list[float]
    masked_probabilities: list[float]
    absence: str  # the absence used (docs/glossary.md); tiles' differing ones comma-joined
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    tiles: int = 1
    tile_verdicts: list[dict[str, Any]] = field(default_factory=list)
    # a tiled image: every tissue tile's class and probability (window as above), so
    # "not explained: another class" differs from "no tissue" (glass has no entry)
    tile_classes: list[dict[str, Any]] = field(default_factory=list)
    # multi-class evidence (amortised explainers): class index + 1 per pixel, 0 none;
    # label value → class name
    labels: Any = None
    label_classes: dict[int, str] = field(default_factory=dict)
    # readability (`napari_medcam.engine.regions`): the detail scale the mask was made
    # at; connected regions of ``mask`` (None for a mask too large to hold in memory);
    # share of the explained tiles whose mask, dilated by one structure radius (more
    # context) / eroded by half of one (less), still keeps the decision on the absence
    detail: str = ""
    regions: int | None = None
    context_keeps: float | None = None
    trim_keeps: float | None = None

    @classmethod
    def not_explained(
        cls, *, target: int, probabilities: list[float], status: str, **facts: Any
    ) -> Explanation:
        """The invalid, empty result for an input that does not show the target class.

        No optimisation ran: confidences are the input's own, the mask keeps nothing.
        ``facts`` are the remaining fields (mask, soft_mask, class_name, seconds, ...).
        """
        p = float(probabilities[target])
        return cls(
            target=target,
            original_confidence=p,
            masked_confidence=0.0,
            robust_confidence=0.0,
            deletion_confidence=p,
            area_fraction=0.0,
            valid=False,
            status=status,
            probabilities=list(probabilities),
            masked_probabilities=[0.0] * len(probabilities),
            absence="",
            steps=0,
            **facts,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the result (no arrays, no history)."""
        return {
            "target": self.target,
            "class_name": self.class_name,
            "original_confidence": round(self.original_confidence, 6),
            "masked_confidence": round(self.masked_confidence, 6),
            "robust_confidence": round(self.robust_confidence, 6),
            "deletion_confidence": round(self.deletion_confidence, 6),
            "area_fraction": round(self.area_fraction, 6),
            "seconds": round(self.seconds, 3),
            "valid": self.valid,
            "status": self.status,
            "probabilities": [round(p, 6) for p in self.probabilities],
            "masked_probabilities": [round(p, 6) for p in self.masked_probabilities],
            "absence": self.absence,
            "steps_run": self.steps,  # every tile's steps, refinement and retries included
            "tiles": self.tiles,
            "tile_verdicts": [dict(v) for v in self.tile_verdicts],
            "tile_classes": [dict(c) for c in self.tile_classes],
            "label_classes": {str(k): v for k, v in self.label_classes.items()},
            "detail": self.detail,
            "regions": self.regions,
            "context_keeps": self.context_keeps,
            "trim_keeps": self.trim_keeps,
            "shape": list(self.mask.shape),
            "provenance": self.provenance,
            "config": self.config,
        }

    def describe_mask(self) -> str:
        """`3 regions, 2.1 % of the image` — what the mask shown is, in words."""
        area = f"{100 * self.area_fraction:.1f} % of the image"
        if self.regions is None:
            return area
        return f"{self.regions} region{'' if self.regions == 1 else 's'}, {area}"

    def one_line(self) -> str:
        """`lesion: 0.998 → 0.994 (robust 0.97), 3 regions, 4.1 % of the image, 3.2 s, valid`."""
        state = "valid" if self.valid else f"INVALID ({self.status})"
        return (
            f"{self.class_name}: {self.original_confidence:.3f} → {self.masked_confidence:.3f} "
            f"(robust {self.robust_confidence:.3f}), {self.describe_mask()}, "
            f"{self.seconds:.1f} s, {state}"
        )
