"""The names used before the glossary (docs/glossary.md), kept working for one release.

Issue 21 gave every idea one word, in the code as in the docs. Scripts written with the
older names keep running: an old keyword argument or attribute still works and warns
(`DeprecationWarning`; the command line's flags a `FutureWarning`), naming the new word.
Giving both names is an error, not a silent choice. What was *saved* with the old names
(explainer files, fit checkpoints, cohort manifests) is read without a warning — the
user cannot change a file already written — and a cohort's settings hash is computed
with the old names (`as_before`), so that a cohort started before the rename resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Collection
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)

#: old name → the glossary's word; the old names are removed in a later release
RENAMED: dict[str, str] = {
    "baseline": "absence",  # MedCAMConfig: forces an absence; Explanation: the one used
    "noises": "perturbations",  # MedCAMConfig: the kinds of perturbations
    "n_backgrounds": "n_perturbations",  # MedCAMConfig: perturbations per step
    "background_class": "empty_class",  # an explainer's "nothing found" class
    "tiles_background_class": "tiles_empty_class",  # a fit's report: its tiles left out
    "skip_background": "skip_glass",  # skip tiles that are mostly glass
}
_BEFORE = {new: old for old, new in RENAMED.items()}


def warn_renamed(
    old: str, new: str, category: type[Warning] = DeprecationWarning, stacklevel: int = 2
) -> None:
    """Warn that ``old`` is now ``new`` (``stacklevel`` as `warnings.warn`'s, from the
    caller of this function)."""
    warnings.warn(
        f"{old} is deprecated, use {new} (docs/glossary.md); "
        f"the old name will be removed in a later release",
        category,
        stacklevel=stacklevel + 1,
    )


def new_names(
    given: dict[str, Any], accepted: Collection[str], where: str, stacklevel: int = 2
) -> dict[str, Any]:
    """``given`` keyword arguments with the old names of ``accepted`` parameters renamed,
    each with a warning; TypeError when an old name and its new one are both given."""
    out = dict(given)
    for old, new in RENAMED.items():
        if old in out and new in accepted:
            if new in out:
                raise TypeError(
                    f"{where} got both {new}= and {old}= (its deprecated old name): "
                    f"pass {new}= only"
                )
            warn_renamed(f"{where}'s {old}=", f"{new}=", stacklevel=stacklevel + 1)
            out[new] = out.pop(old)
    return out


def renamed_keywords(*old: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the function also accepts these old names (`RENAMED`) of its keyword
    parameters, or of those its ``**options`` are passed on to, with a warning."""
    accepted = {RENAMED[name] for name in old}

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        where = f"{func.__qualname__}()"

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return func(*args, **new_names(kwargs, accepted, where, stacklevel=2))

        return wrapper

    return decorate


def old_attribute(old: str, new: str, owner: str) -> property:
    """A read-only attribute ``old`` that warns and reads ``new``."""

    def read(self: Any) -> Any:
        warn_renamed(f"{owner}.{old}", f"{owner}.{new}")
        return getattr(self, new)

    return property(read, doc=f"Deprecated: the old name of ``{new}``.")


def renamed_fields(cls: C) -> C:
    """A dataclass whose constructor also takes its fields' old names, and whose old
    names read (with a warning) as attributes."""
    accepted = {f.name for f in dataclasses.fields(cls)}
    init = cls.__init__
    where = f"{cls.__name__}()"

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **new_names(kwargs, accepted, where, stacklevel=2))

    cls.__init__ = __init__  # type: ignore[misc]
    for old, new in RENAMED.items():
        if new in accepted:
            setattr(cls, old, old_attribute(old, new, cls.__name__))
    return cls


def upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved mapping (a config, a fit's facts) with its old keys renamed, silently; a
    new key present wins over its old one."""
    return {
        RENAMED.get(k, k): v for k, v in saved.items() if not (k in RENAMED and RENAMED[k] in saved)
    }


def as_before(current: dict[str, Any]) -> dict[str, Any]:
    """A mapping with the new keys spelled as before the rename (`upgraded`'s inverse):
    what a settings hash is computed from, so that it did not change with the words."""
    return {_BEFORE.get(k, k): v for k, v in upgraded(current).items()}
