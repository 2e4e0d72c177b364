"""A class named by index or name, resolved once for tile and slide classifiers alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_index(target: int | str | None, class_names: Sequence[str]) -> int | None:
    """Resolve a class index or name (a digit string is an index); None stays None
    (= the predicted class). A ValueError names the classes when it does not fit."""
    if target is None:
        return None
    names = list(class_names)
    if isinstance(target, str):
        if target in names:
            return names.index(target)
        if not target.lstrip("-").isdigit():
            raise ValueError(f"unknown class name {target!r}; the classes are {names}")
        target = int(target)
    if isinstance(target, (bool, float)) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"target must be a class index or name, got {target!r}")
    if not 0 <= int(target) < len(names):
        raise ValueError(
            f"target {int(target)} is out of range: the classifier has "
            f"{len(names)} classes (0..{len(names) - 1})"
        )
    return int(target)
