"""What a cohort run tells its user: the report of a run, and the terminal's progress.

`CohortReport` says which slides were explained, skipped, failed or interrupted;
`Progress` draws the slides and the tiles of the running slides (tqdm) and prints a
line per finished slide (`line_of`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_medcam.batch.manifest import DONE
from napari_medcam.batch.outputs import DECISION


@dataclass
class CohortReport:
    """What a run did: slide ids by outcome, where the summary is, the dashboard."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    dashboard: str | None = None
    summary: list[Path] = field(default_factory=list)

    def one_line(self) -> str:
        if not self.done and not self.failed and not self.interrupted:
            return f"nothing to do: all {len(self.skipped)} slides already explained in {self.out}"
        parts = [f"{len(self.done)} explained"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already done (skipped)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.interrupted:
            parts.append(f"{len(self.interrupted)} interrupted")
        return ", ".join(parts)


class CohortInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_cohort`: running slides were cancelled and recorded; rerun to resume."""

    def __init__(self, report: CohortReport) -> None:
        super().__init__("cohort run interrupted")
        self.report = report


class Progress:
    """Terminal bars: slides finished, and tiles of the slides running now (tqdm).

    Tile events arrive on the client's event-loop thread; lines about finished
    slides are printed through tqdm so the bars stay whole. Without a terminal
    there are no bars, only the lines.
    """

    def __init__(self, total: int, enabled: bool, log: Callable[[str], None]) -> None:
        from tqdm import tqdm

        self.log = log
        self.lock = threading.Lock()
        self.running: dict[str, tuple[int, int]] = {}
        on = enabled and os.isatty(2)
        self.slides = tqdm(total=total, desc="slides", unit="slide", disable=not on, position=0)
        self.tiles = tqdm(total=0, desc="tiles of running slides", disable=not on, position=1)

    def event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        with self.lock:
            self.running[msg["slide"]] = (int(msg["tile"]), int(msg["tiles"]))
            self._tiles()

    def _tiles(self) -> None:
        self.tiles.total = sum(n for _, n in self.running.values())
        self.tiles.n = sum(t for t, _ in self.running.values())
        self.tiles.refresh()

    def finished(self, slide_id: str, line: str) -> None:
        with self.lock:
            self.running.pop(slide_id, None)
            self._tiles()
            self.slides.update(1)
            if self.slides.disable:
                self.log(line)
            else:
                self.slides.write(line)

    def close(self) -> None:
        self.tiles.close()
        self.slides.close()


def line_of(slide_id: str, row: dict[str, Any]) -> str:
    if row["status"] != DONE:
        return f"  failed  {slide_id}: {row.get('reason', '')}"
    if row.get("kind") == DECISION:
        return f"  done    {slide_id}: {row['sentence']} {row['seconds']:.1f} s"
    verdict = "valid" if row["valid"] else "not valid"
    found = row["class_found"] or "no finding"
    return (
        f"  done    {slide_id}: {found}, {row['tiles_valid']}/{row['tiles_explained']} tiles "
        f"valid, {verdict}, {row['seconds']:.1f} s"
    )
