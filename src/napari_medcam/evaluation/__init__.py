"""The evaluation of issue 4: Med-CAM vs Grad-CAM, RISE and occlusion, with a report.

    napari-medcam evaluate [--quick]        # or: python benchmarks/evaluate.py

`evaluate` runs `run_evaluation` (held-out cases in `cases`, methods in `methods`,
metrics in `napari_medcam.metrics`), prints one table, and writes it with the verdicts
on the paper's claims into BENCHMARKS.md's evaluation section, plus the figure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_medcam.evaluation.cases import Case, cut_off_tile, ihc_cases, synthetic_cases
from napari_medcam.evaluation.methods import METHODS, MethodOptions, MethodResult, run_method
from napari_medcam.evaluation.run import EvalResult, EvalSettings, run_evaluation

__all__ = [
    "METHODS",
    "Case",
    "EvalResult",
    "EvalSettings",
    "MethodOptions",
    "MethodResult",
    "cut_off_tile",
    "evaluate",
    "ihc_cases",
    "rerender",
    "run_evaluation",
    "run_method",
    "synthetic_cases",
]


def evaluate(
    settings: EvalSettings | None = None,
    *,
    benchmarks: str | Path | None = None,
    figure: str | Path | None = None,
    json_path: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    out: Callable[[str], None] | None = None,
) -> tuple[EvalResult, str]:
    """Run the evaluation, print its report (``out``, default stdout) and write the files.

    ``benchmarks``: BENCHMARKS.md whose evaluation block is replaced; ``figure``: the PNG;
    ``json_path``: per-image, per-method records. None writes nothing there.
    """
    from napari_medcam.evaluation.figure import save_figure
    from napari_medcam.evaluation.report import render, write_benchmarks

    result = run_evaluation(settings, log=log)
    block = render(result)
    (out or (lambda s: print(s, file=sys.stdout, flush=True)))(block)
    if figure is not None:
        save_figure(result.examples, figure)
    if benchmarks is not None:
        write_benchmarks(benchmarks, block + _figure_note(figure, benchmarks))
    if json_path is not None:
        Path(json_path).write_text(json.dumps(jsonable(result), indent=1), encoding="utf-8")
    return result, block


def rerender(
    json_path: str | Path,
    *,
    benchmarks: str | Path | None = None,
    figure: str | Path | None = None,
    out: Callable[[str], None] | None = None,
) -> str:
    """Render the report again from records written with ``json_path`` (no re-run).

    For a change of the report's layout or verdicts; the figure is not redrawn (its
    maps are not in the records), only linked when ``figure`` is given.
    """
    from dataclasses import fields

    from napari_medcam.engine.config import MedCAMConfig
    from napari_medcam.evaluation.report import render, write_benchmarks

    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    raw = data["settings"]
    known = {f.name for f in fields(EvalSettings)} - {"fast", "paper", "figure_cases"}
    steps = int(raw["paper"]["steps"])
    settings = EvalSettings(
        **{k: v for k, v in raw.items() if k in known},
        paper=MedCAMConfig.paper(steps=steps, min_steps=steps),
    )
    records = data["records"]
    seen: dict[str, Case] = {}
    for r in records:
        seen.setdefault(r["case"], Case(r["case"], r["group"], None, None, "", kind=r["kind"]))
    result = EvalResult(
        settings, records, list(seen.values()), [], data["seconds"], data["machine"], data["info"]
    )
    block = render(result)
    (out or (lambda s: print(s, file=sys.stdout, flush=True)))(block)
    if benchmarks is not None:
        write_benchmarks(benchmarks, block + _figure_note(figure, benchmarks))
    return block


def _figure_note(figure: str | Path | None, benchmarks: str | Path) -> str:
    if figure is None:
        return ""
    rel = _relative(Path(figure), Path(benchmarks).parent)
    return f"\n![image | reference | Med-CAM | Grad-CAM | RISE | occlusion]({rel})\n"


def _relative(path: Path, start: Path) -> str:
    import os

    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive
        return path.as_posix()


def jsonable(result: EvalResult) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        if hasattr(v, "item"):
            return v.item()
        return v

    return {
        "settings": {
            k: (v.to_dict() if hasattr(v, "to_dict") else v)
            for k, v in vars(result.settings).items()
        },
        "machine": result.machine,
        "seconds": result.seconds,
        "info": result.info,
        "records": [{k: clean(v) for k, v in r.items()} for r in result.records],
    }
