"""What a fit tells the outside while it runs: its progress events, and how it stops."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FitEvent:
    """Progress of a fit: ``phase`` is "prepare" (tiles classified), "fit" or "evaluate"."""

    phase: str
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / max(self.total, 1))

    def describe(self) -> str:
        """`fit 120/1500 area 12 % kept 0.97 wrong-class 0 %`, for progress bars."""
        a = self.losses
        extra = f" area {100 * a['area']:.0f} % kept {a['kept']:.2f}" if a else ""
        wrong = f" wrong-class {100 * a['wrong_area']:.0f} %" if "wrong_area" in a else ""
        return f"{self.phase} {self.step}/{self.total}{extra}{wrong}"


class FitCancelled(RuntimeError):
    """Raised by `fit_explainer` when its ``cancel`` flag was set (a checkpoint is kept)."""
