"""One definition of a valid mask, used for every tile, image, slide and volume.

A tile's mask is **valid** when all of these hold:

- there was no problem before optimising (a neutral absence was found);
- the optimisation found a mask that passed its own test (``MaskResult.found_valid``:
  the decision held, on random backgrounds too, with a sane area) — a fallback mask
  that never passed is invalid whatever it scores afterwards;
- the decision holds on the binary mask over the absence (``masked_pred == target``);
- the robust confidence (fresh random backgrounds around the absence) is ≥ 0.5;
- the area is within ``config.min_area`` … ``config.max_area``.

A tiled image (slide, region, volume) is valid when at least ``config.valid_share``
(default 0.9) of the tiles it explained are, and never when it explained none
(`overall`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_medcam.engine.config import MedCAMConfig

ROBUST_MIN = 0.5  # the robust confidence a valid mask needs (as during optimisation)


def tile_facts(target: int, probabilities: list[float], absence: Any) -> dict[str, Any]:
    """A tile's facts before any mask: what the verdict reads, in one shape for the
    per-image and the amortised engine (masks, ``eval`` and ``area`` are added later)."""
    return {
        "target": target,
        "probabilities": probabilities,
        "absence": absence,
        "baseline": absence.name,
        "absence_report": absence.candidates,
        "problem": absence.problem,
        "steps": 0,
        "history": [],
    }


def _failure(facts: dict[str, Any], config: MedCAMConfig, name: str) -> str:
    """Why the mask itself fails the checks ("" when it passes them)."""
    ev = facts["eval"]
    area = facts["area"]
    if area < config.min_area:
        return "empty mask: no region keeps the decision on its own"
    if area > config.max_area:
        return f"mask covers {100 * area:.0f} % of the image: no minimal evidence found"
    if ev["masked_pred"] != facts["target"]:
        return f"decision lost on the binary mask (p({name}) = {ev['masked']:.2f})"
    if ev["robust"] < ROBUST_MIN:
        return (
            f"decision not robust: p({name}) = {ev['robust']:.2f} on random backgrounds "
            f"(< {ROBUST_MIN:g})"
        )
    return ""


def tile_verdict(facts: dict[str, Any], config: MedCAMConfig, name: str) -> str:
    """Empty string when a tile's mask can be trusted, else why not.

    ``facts`` is one of `napari_medcam.engine.image._explain_batch`'s dicts:
    ``problem``, ``found_valid``, ``target``, ``area`` and ``eval`` (`evaluate_mask`).
    ``name`` is the target's class name, for the message.
    """
    if facts.get("problem"):
        return facts["problem"]
    failure = _failure(facts, config, name)
    if not facts.get("found_valid"):
        why = (
            "no mask passed the optimisation's test (decision held on the absence and on "
            "random backgrounds, sane area): the mask is the last one tried, a fallback"
        )
        return f"{why}; {failure}" if failure else why
    return failure


def tile_record(facts: dict[str, Any], window: Sequence[slice], reason: str) -> dict[str, Any]:
    """One tile's verdict as JSON-ready data.

    ``window``: the tile's bounds in the image, as [y0, x0, y1, x1] (2-D) or
    [z0, y0, x0, z1, y1, x1] (3-D) — starts, then stops.
    """
    ev = facts["eval"]
    report = facts.get("regions")
    extra = {}
    if report is not None:
        extra = {
            "regions": report.regions,
            "context_keeps": report.dilated_keeps,
            "trim_keeps": report.eroded_keeps,
        }
    return {
        "window": [int(s.start) for s in window] + [int(s.stop) for s in window],
        "target": int(facts["target"]),
        "original": round(float(facts["probabilities"][facts["target"]]), 6),
        "masked": round(float(ev["masked"]), 6),
        "robust": round(float(ev["robust"]), 6),
        "area": round(float(facts["area"]), 6),
        "valid": not reason,
        "status": reason or "valid",
        **extra,
    }


def overall(valid: Sequence[bool], share: float = 1.0) -> bool:
    """A tiled result is valid when it explained something and ≥ ``share`` of its parts are.

    ``share`` is ``config.valid_share``; 1.0 asks for every part.
    """
    if not valid:
        return False
    return sum(bool(v) for v in valid) >= share * len(valid) - 1e-9
