"""The scale of evidence: how fine a detail the mask may show.

A pathologist reads, edits and annotates *regions* — a cell, a group of cells, a
gland — not pixels. The detail level fixes the size ``d`` of the smallest structure the
mask shows, in pixels of the classifier's input (which, for a tiled image, are the
image's own pixels):

- regions are at least a disk of diameter ``d`` (``min_area``);
- pieces closer than ``d`` belong to one region (closed with a disk of radius ``d/2``);
- "adding context" means dilating by ``d/2`` (one structure radius).

Names a user understands map to ``d`` in µm when the classifier's card knows its pixel
size, and to a fraction of the input's side otherwise, at least `MIN_FALLBACK` pixels
(a 224-pixel tile: cells 4 px, cell groups 8 px, regions 16 px — the demo's nuclei are
6–8 px across, its lesion ~70 px). A number is ``d`` in pixels; ``"12um"`` /
``"12 µm"`` is ``d`` in µm.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

#: detail name → (structure size in µm, structure size as a fraction of the input side)
LEVELS: dict[str, tuple[float, float]] = {
    "cells": (8.0, 1 / 56),
    "cell groups": (20.0, 1 / 28),
    "regions": (50.0, 1 / 14),
}
DEFAULT = "cell groups"
#: the smallest structure a named level gives without a pixel size (pixels): below it
#: a "region" is a speck (a 64-pixel input's 1/28 would be 2.3 px)
MIN_FALLBACK = 4.0
#: what `MedCAMConfig.detail` accepts besides a number of pixels or a size in µm
NAMES = ("auto", *LEVELS)
_MICRONS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(um|µm|micron|microns)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Detail:
    """A resolved detail level: the structure size in classifier-input pixels."""

    name: str  # "cell groups", "12 µm", "6 px"
    size: float  # d, pixels of the classifier input
    microns: float | None = None  # d in µm, when the pixel size is known

    @property
    def radius(self) -> float:
        """One structure radius (pixels): the closing and the dilation check use it."""
        return self.size / 2

    @property
    def min_area(self) -> int:
        """The smallest region shown, in pixels: a disk of diameter ``size``."""
        return max(1, math.ceil(math.pi * self.radius**2))

    def describe(self) -> str:
        um = f"{self.microns:g} µm, " if self.microns is not None and "µm" not in self.name else ""
        return f"{self.name} ({um}{self.size:.1f} px)"


def check_detail(value: Any) -> str | None:
    """Why ``value`` is not a detail level, or None when it is."""
    if isinstance(value, bool):
        return f"detail must be one of {NAMES}, a size in pixels or 'N um', got {value!r}"
    if isinstance(value, (int, float)):
        return None if 0 < value < 1e4 else f"detail in pixels must be in (0, 10000), got {value}"
    if isinstance(value, str):
        if value in NAMES or _MICRONS.match(value):
            return None
        try:
            return check_detail(float(value))
        except ValueError:
            pass
    return f"detail must be one of {NAMES}, a size in pixels or 'N um', got {value!r}"


def parse_detail(text: str, what: str = "detail") -> str | float:
    """A detail level typed by a user (CLI, widget): a name, pixels, or 'N um'."""
    try:
        value: str | float = float(text)
    except ValueError:
        value = text.strip()
    problem = check_detail(value)
    if problem:
        raise ValueError(f"{what}: {problem}")
    return value


def resolve_detail(value: Any, classifier: Any) -> Detail:
    """``value`` (a `MedCAMConfig.detail`) as pixels of ``classifier``'s input.

    The pixel size comes from the classifier's card (``microns_per_pixel``): images
    are explained at the classifier's own scale.
    """
    problem = check_detail(value)
    if problem:
        raise ValueError(problem)
    card = getattr(classifier, "card", None)
    mpp = getattr(card, "microns_per_pixel", None) if card is not None else None
    side = min(classifier.input_size)
    if isinstance(value, str) and value in NAMES:
        name = DEFAULT if value == "auto" else value
        microns, fraction = LEVELS[name]
        if mpp:
            return Detail(name, max(1.0, microns / mpp), microns)
        return Detail(name, max(MIN_FALLBACK, side * fraction))
    if isinstance(value, str) and (match := _MICRONS.match(value)):
        microns = float(match.group(1))
        if not mpp:
            raise ValueError(
                f"detail {value!r} is in µm, but the classifier's pixel size is unknown "
                "(its card has no microns_per_pixel): give the size in pixels"
            )
        return Detail(f"{microns:g} µm", max(1.0, microns / mpp), microns)
    size = float(value)
    return Detail(f"{size:g} px", size, size * mpp if mpp else None)
