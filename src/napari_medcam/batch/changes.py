"""What differs between a cohort's settings and a rerun's, in the command line's words.

The manifest records what the engine was given — the whole `MedCAMConfig`, the
classifier's fingerprint — not the options typed: ``--steps 12`` is ``steps`` 10 and
``refine_steps`` 2 there. A refused rerun names the options to change back
("--steps: the cohort was run with 10, now 12"); only a config made in Python,
which no preset matches, is described by its own field names.
"""

from __future__ import annotations

import json
from typing import Any

from napari_medcam.engine.config import PRESETS, MedCAMConfig

#: config fields ``--steps N`` sets (`MedCAMConfig.capped`: steps + refine_steps = N)
_STEPS = ("steps", "refine_steps", "min_steps")
#: config fields one option each sets
_OPTIONS = {"tolerance": "--tolerance", "detail": "--detail", "seed": "--seed"}
_OWN = (*_STEPS, *_OPTIONS)


def _plain(value: Any) -> Any:
    """As the manifest stores it (JSON: tuples are lists)."""
    return json.loads(json.dumps(value, default=str))


def _was(option: str, old: Any, new: Any) -> str:
    def word(v: Any) -> Any:
        return "none" if v is None else v

    return f"{option}: the cohort was run with {word(old)}, now {word(new)}"


def _preset(config: dict[str, Any]) -> str | None:
    """The preset ``config`` was made from (whatever its steps, tolerance, detail, seed)."""
    for name in PRESETS:
        base = _plain(MedCAMConfig.preset(name).to_dict())
        if all(config.get(k) == v for k, v in base.items() if k not in _OWN):
            return name
    return None


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    def differ(keys: Any) -> list[str]:
        return [k for k in keys if old.get(k) != new.get(k)]

    def fields(keys: list[str]) -> list[str]:
        return [f"config.{k}: {old.get(k, '—')} → {new.get(k, '—')}" for k in keys]

    def total(c: dict[str, Any]) -> Any:
        return (c.get("steps") or 0) + (c.get("refine_steps") or 0)

    changes: list[str] = []
    before, after = _preset(old), _preset(new)
    if before and after:
        changes += [_was("--preset", before, after)] if before != after else []
    else:  # a config made in Python: its own field names
        changes += fields(differ(k for k in sorted(old.keys() | new.keys()) if k not in _OWN))
    if total(old) != total(new):
        changes.append(_was("--steps", total(old), total(new)))
    else:  # the same total split otherwise: only a config made in Python does that
        changes += fields(differ(_STEPS))
    changes += [
        _was(option, old.get(k), new.get(k))
        for k, option in _OPTIONS.items()
        if old.get(k) != new.get(k)
    ]
    return changes


def _explainer_change(old: Any, new: Any) -> str:
    if old and new:
        return "--explainer: the cohort was run with another explainer"
    return _was("--explainer", "one" if old else None, "one" if new else None)


def _classifier_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The classifier changed: a tile classifier's, a slide classifier's, or one for the other."""
    before, after = old.get("slide_classifier"), new.get("slide_classifier")
    if before is None and after is None:
        return "--classifier/--weights: the cohort was run with another classifier"
    if before == after:
        return f"--slide-classifier: the cohort was run with other weights of {after}"
    if before is None or after is None:
        return (
            "--slide-classifier: the cohort was run with "
            + (f"a tile classifier (--classifier), now {after}" if before is None else before)
            + ("" if before is None else ", now a tile classifier (--classifier)")
        )
    return _was("--slide-classifier", before, after)


def option_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per option whose value differs between cohort settings ``old`` and ``new``."""
    old, new = _plain(old), _plain(new)
    seen = {"classifier_fingerprint", "explainer", "config", "level", "target", "mpp"}
    seen |= {"slide_classifier", "absence", "pixels"}
    changes: list[str] = []
    if old.get("classifier_fingerprint") != new.get("classifier_fingerprint") or old.get(
        "slide_classifier"
    ) != new.get("slide_classifier"):
        changes.append(_classifier_change(old, new))
        seen.add("tile_overlap")  # follows from the classifier's input size
        if (old.get("slide_classifier") is None) != (new.get("slide_classifier") is None):
            return changes  # a tile cohort and a slide-decision cohort: nothing else compares
    if old.get("explainer") != new.get("explainer"):  # its config comes with it
        changes.append(_explainer_change(old.get("explainer"), new.get("explainer")))
    elif isinstance(old.get("config"), dict) and isinstance(new.get("config"), dict):
        changes += _config_changes(old["config"], new["config"])
    for key in ("level", "target", "mpp", "absence"):
        if old.get(key) != new.get(key):
            changes.append(_was(f"--{key}", old.get(key), new.get(key)))
    if bool(old.get("pixels")) != bool(new.get("pixels")):
        changes.append(
            _was(
                "--pixels",
                "on" if old.get("pixels") else "off",
                "on" if new.get("pixels") else "off",
            )
        )
    changes += [
        f"{k}: {old.get(k, '—')} → {new.get(k, '—')}"
        for k in sorted(old.keys() | new.keys())
        if k not in seen and old.get(k) != new.get(k)
    ]
    return changes
