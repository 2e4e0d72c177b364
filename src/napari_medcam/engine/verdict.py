"""One definition of a valid mask, used for every tile, image, slide and volume.

A tile's mask is **valid** when all of these hold:

- there was no problem before optimising (a neutral absence was found);
- the optimisation found a mask that passed its own test (``MaskResult.found_valid``:
  the decision held, on the perturbations too, with a sane area) — a fallback mask
  that never passed is invalid whatever it scores afterwards;
- the decision holds on the binary mask over the absence (``masked_pred == target``);
- the robust confidence (fresh perturbations around the absence) is ≥ 0.5;
- the area is within ``config.min_area`` … ``config.max_area``.

A tiled image (slide, region, volume) is valid when at least ``config.valid_share``
(default 0.9) of the tiles it explained are, and never when it explained none
(`overall`).
"""

from __future__ import annotations

from collections.abc import Sequence

from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.tile_result import TileResult

ROBUST_MIN = 0.5  # the robust confidence a valid mask needs (as during optimisation)


def _failure(tile: TileResult, config: MedCAMConfig, name: str) -> str:
    """Why the mask itself fails the checks ("" when it passes them)."""
    scores = tile.scores
    assert scores is not None, "a tile is scored before it is judged"
    if tile.area < config.min_area:
        return "empty mask: no region keeps the decision on its own"
    if tile.area > config.max_area:
        return f"mask covers {100 * tile.area:.0f} % of the image: no minimal evidence found"
    if scores.masked_pred != tile.target:
        return f"decision lost on the binary mask (p({name}) = {scores.masked:.2f})"
    if scores.robust < ROBUST_MIN:
        return (
            f"decision not robust: p({name}) = {scores.robust:.2f} on the perturbations "
            f"(< {ROBUST_MIN:g})"
        )
    return ""


def tile_verdict(tile: TileResult, config: MedCAMConfig, name: str) -> str:
    """Empty string when a tile's mask can be trusted, else why not.

    Reads the tile's ``problem``, ``found_valid``, ``target``, ``area`` and ``scores``;
    ``name`` is the target's class name, for the message.
    """
    if tile.problem:
        return tile.problem
    failure = _failure(tile, config, name)
    if not tile.found_valid:
        why = (
            "no mask passed the optimisation's test (decision held on the absence and on "
            "its perturbations, sane area): the mask is the last one tried, a fallback"
        )
        return f"{why}; {failure}" if failure else why
    return failure


def overall(valid: Sequence[bool], share: float = 1.0) -> bool:
    """A tiled result is valid when it explained something and ≥ ``share`` of its parts are.

    ``share`` is ``config.valid_share``; 1.0 asks for every part.
    """
    if not valid:
        return False
    return sum(bool(v) for v in valid) >= share * len(valid) - 1e-9
