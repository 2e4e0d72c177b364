"""`load_classifier`: TorchScript files, ``module:factory`` specs and registered names.

Opening a model *file* never runs code from it: TorchScript is loaded by
``torch.jit.load`` and state dicts with ``weights_only=True``. Only a factory the
user names explicitly runs code, by design.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier

ENTRY_POINT_GROUP = "napari_medcam.classifiers"


def registered_classifiers() -> dict[str, Callable[[], Classifier]]:
    """Classifiers registered by installed packages (entry-point group above), by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ValueError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} is not a file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} is empty: {path}")


def _load_state_dict(path: Path) -> dict[str, Any]:
    _check_file(path, "weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"cannot read weights file {path}: not a torch state dict ({err})"
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    return state


def _from_factory(spec: str, weights: str | Path | None, kwargs: dict[str, Any]) -> Classifier:
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import factory {spec!r}: {err}") from err
    made = factory()
    if isinstance(made, Classifier):
        if weights is not None:
            made.module.load_state_dict(_load_state_dict(Path(weights)))
        return made
    if not isinstance(made, nn.Module):
        raise ValueError(f"factory {spec!r} returned {type(made).__name__}, not a torch module")
    if weights is not None:
        try:
            made.load_state_dict(_load_state_dict(Path(weights)))
        except RuntimeError as err:
            raise ValueError(f"weights {weights} do not fit {spec}: {err}") from err
    return Classifier(made, name=kwargs.pop("name", spec), **kwargs)


def _from_torchscript(path: Path, kwargs: dict[str, Any]) -> Classifier:
    _check_file(path, "model file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model file {path} is corrupt or not a TorchScript archive")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise ValueError(f"cannot load TorchScript model {path}: {err}") from err
    kwargs.setdefault("layers", [])
    return Classifier(module, name=kwargs.pop("name", path.name), **kwargs)


def load_classifier(
    spec: str | Path, weights: str | Path | None = None, **kwargs: Any
) -> Classifier:
    """Load a classifier from a spec.

    - a registered name (``"demo"``, or any name in the ``napari_medcam.classifiers``
      entry-point group);
    - ``"package.module:factory"``: the factory returns a ``nn.Module`` (or a
      ready `Classifier`); ``weights`` is an optional state-dict file;
    - a TorchScript file (``.pt``/``.pth``/``.ts``): explained by its outputs only.

    ``kwargs`` (input_size, mean, std, class_names, layers) go to `Classifier`.
    """
    spec_s = str(spec)
    registry = registered_classifiers()
    if spec_s in registry:
        made = registry[spec_s].load()()
        if weights is not None:
            made.module.load_state_dict(_load_state_dict(Path(weights)))
        return made
    path = Path(spec_s)
    if ":" in spec_s and not path.exists() and not spec_s.endswith((".pt", ".pth", ".ts")):
        return _from_factory(spec_s, weights, dict(kwargs))
    if path.suffix in (".pt", ".pth", ".ts", ".zip") or path.exists():
        return _from_torchscript(path, dict(kwargs))
    known = ", ".join(sorted(registry)) or "none"
    raise ValueError(
        f"unknown classifier {spec_s!r}: not a registered name ({known}), "
        "a 'package.module:factory' spec or a TorchScript file"
    )
