"""`load_classifier`: model files, ``module:factory`` specs and registered names.

Model files:

- ``.pt2``: a `torch.export` program (``torch.export.save(ep, "model.pt2")``),
  recognised by its suffix or its content. It is loaded with
  ``torch.export.load`` and ``torch.export.unflatten``, so its sub-modules keep
  their names: layers are discovered and hooked as for any ``nn.Module``
  (activation matching, Grad-CAM). Export in eval mode with a dynamic batch
  dimension (see `load_classifier`).
- ``.pt``/``.pth``/``.ts``: TorchScript (``torch.jit.load``, which torch 2.13
  deprecates), explained by its outputs only: TorchScript cannot be hooked.
- state dicts (``weights=``, for a factory or registered name) are read with
  ``weights_only=True``: tensors only, never code.

Safety: a state dict is data, a model file is a program. ``torch.export.load``
is *not* hardened against malicious files (torch's documentation says never to
load one from an untrusted source: it may unpickle payloads with
``weights_only=False`` and evaluates the shape expressions it reads with sympy),
and TorchScript runs the code it carries. Open only model files you trust; weights
of unknown origin are safe as a state dict with a factory. A factory the user
names explicitly runs code, by design.
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.torchfile import load_torch_file

ENTRY_POINT_GROUP = "napari_medcam.classifiers"

#: suffixes read as TorchScript unless the content is a torch.export archive
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".zip")
EXPORT_SUFFIX = ".pt2"

DYNAMIC_BATCH_HINT = (
    "export it with a dynamic batch dimension and an example batch of 2 or more "
    "(torch specialises a batch of 1), in eval mode: torch.export.export(model.eval(), "
    "(torch.zeros(2, C, *input_size),), "
    'dynamic_shapes={"x": {0: torch.export.Dim("batch")}}) — "x" is the name of '
    "the forward argument"
)


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
    state = load_torch_file(path, "a weights file (a torch state dict)")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    return state


def _keys(keys: list[str]) -> str:
    """At most three keys, then how many more: a message, not a dump."""
    more = f", … {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def _misfit(module: nn.Module, state: dict[str, Any]) -> str:
    """What of ``state`` does not fit ``module`` ("" when it all fits), in a few words."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    parts = [f"missing {_keys(missing)}"] if missing else []
    parts += [f"unexpected {_keys(unexpected)}"] if unexpected else []
    return "; ".join(parts + shapes[:2])


def _load_weights(module: nn.Module, path: Path, name: str) -> None:
    """Load the state dict at ``path`` into ``module``; ValueError (one line) saying what
    does not fit, instead of torch's multi-line RuntimeError."""
    state = _load_state_dict(path)
    misfit = _misfit(module, state)
    try:
        if not misfit:
            module.load_state_dict(state)
    except (RuntimeError, TypeError) as err:  # e.g. a value that is not a tensor
        misfit = str(err).strip().splitlines()[0]
    if misfit:
        raise ValueError(f"weights {path} do not fit the classifier {name}: {misfit}")


def _from_factory(spec: str, weights: str | Path | None, kwargs: dict[str, Any]) -> Classifier:
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import factory {spec!r}: {err}") from err
    made = factory()
    if isinstance(made, Classifier):
        if weights is not None:
            _load_weights(made.module, Path(weights), spec)
        return made
    if not isinstance(made, nn.Module):
        raise ValueError(f"factory {spec!r} returned {type(made).__name__}, not a torch module")
    if weights is not None:
        _load_weights(made, Path(weights), spec)
    return Classifier(made, name=kwargs.pop("name", spec), **kwargs)


def _is_export_archive(path: Path) -> bool:
    """True when ``path`` is a zip written by ``torch.export.save`` (a .pt2 archive)."""
    try:
        with zipfile.ZipFile(path) as archive:
            marks = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "archive_format"]
            return bool(marks) and archive.read(marks[0]).strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def _export_input_shape(program: Any) -> tuple[int | None, ...] | None:
    """The shape the program's single input was exported with (None: dynamic dim)."""
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise ValueError(
            f"the exported program takes {len(user_inputs)} inputs ({user_inputs}); "
            "a classifier takes one image batch"
        )
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == user_inputs[0]:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                return tuple(d if isinstance(d, int) else None for d in val.shape)
    return None


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"


def _from_exported(path: Path, kwargs: dict[str, Any]) -> Classifier:
    _check_file(path, "model file")
    if not _is_export_archive(path):
        raise ValueError(
            f"model file {path} is corrupt or not a torch.export archive "
            '(write one with torch.export.save(program, "model.pt2"))'
        )
    try:
        # torch's own pytree deprecation notices, not the user's business
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.export.load(str(path))
            module = torch.export.unflatten(program)
    except Exception:  # torch's text may be unpickling advice: never passed on
        raise ValueError(
            f"cannot load exported program {path}: it is damaged, or was written by a torch "
            f"that this one ({torch.__version__}) cannot read"
        ) from None
    shape = _export_input_shape(program)
    if shape is not None and "input_size" not in kwargs and None not in shape[2:]:
        kwargs["input_size"] = shape[2:]  # a static spatial size is the model's input size
    name = kwargs.pop("name", path.name)
    try:
        clf = Classifier(module, name=name, **kwargs)
    except ValueError as err:
        if shape is None or "does not accept" not in str(err):  # not the input probe
            raise
        if shape[0] is not None:
            fix = f"it was exported with a fixed batch of {shape[0]}: {DYNAMIC_BATCH_HINT}"
        else:
            fix = "pass a matching input_size and one mean/std value per channel"
        raise ValueError(
            f"{err}\nThe exported program {path.name} takes inputs of shape "
            f"{_fmt_shape(shape)} (batch, channels, *input_size): {fix}"
        ) from err
    try:  # the engine calls the model with batches of many sizes
        with torch.no_grad():
            module(torch.zeros((2, clf.channels, *clf.input_size)))
    except Exception as err:
        takes = f" (it takes {_fmt_shape(shape)})" if shape is not None else ""
        raise ValueError(
            f"the exported program {path.name} does not accept a batch of 2 "
            f"{tuple(clf.input_size)} inputs{takes}: {DYNAMIC_BATCH_HINT}. ({err})"
        ) from err
    return clf


def _not_torchscript(path: Path) -> str:
    """Why ``path`` is no TorchScript model: a state dict given as the model, or damage."""
    try:
        weights = isinstance(load_torch_file(path, "a torch file"), dict)
    except ValueError:
        weights = False
    if weights:
        return (
            f"model file {path} holds weights (a state dict), not a model: pass it as "
            "--weights (weights=) with the classifier it belongs to (a registered name "
            "or package.module:factory)"
        )
    return f"model file {path} is damaged or not a TorchScript model"


def _from_torchscript(path: Path, kwargs: dict[str, Any]) -> Classifier:
    _check_file(path, "model file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model file {path} is corrupt or not a TorchScript archive")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:  # torch's text is about archive internals: say what the file is
        raise ValueError(_not_torchscript(path)) from None
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
    - a ``torch.export`` program (``.pt2``, or any file whose content is one):
      unflattened into an ``nn.Module`` whose sub-modules keep their names, so
      layers are discovered (or named in ``layers``) and hooked as usual;
    - a TorchScript file (``.pt``/``.pth``/``.ts``): explained by its outputs only.

    A ``.pt2`` program is specialised to the shape of the example input it was
    exported with, unless a dimension was made dynamic. The engine calls the model
    with batches of many sizes, so export with a dynamic batch dimension (and an
    example batch of 2 or more: torch specialises a batch of 1), in eval mode::

        ep = torch.export.export(model.eval(), (torch.zeros(2, 3, 224, 224),),
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        torch.export.save(ep, "model.pt2")

    Loading probes a batch of 2 and raises ValueError if it fails. The input size
    defaults to the program's own (static) spatial size. Like TorchScript, a .pt2
    file is a program, not data: ``torch.export.load`` is not safe for untrusted
    files (see the module docstring) — open only files you trust.

    ``kwargs`` (input_size, mean, std, class_names, layers) go to `Classifier`.
    """
    spec_s = str(spec)
    registry = registered_classifiers()
    if spec_s in registry:
        made = registry[spec_s].load()()
        if weights is not None:
            _load_weights(made.module, Path(weights), spec_s)
        return made
    path = Path(spec_s)
    suffixes = (*TORCHSCRIPT_SUFFIXES, EXPORT_SUFFIX)
    if ":" in spec_s and not path.exists() and not spec_s.endswith(suffixes):
        return _from_factory(spec_s, weights, dict(kwargs))
    if path.suffix == EXPORT_SUFFIX or (path.is_file() and _is_export_archive(path)):
        return _from_exported(path, dict(kwargs))
    if path.suffix in TORCHSCRIPT_SUFFIXES or path.exists():
        return _from_torchscript(path, dict(kwargs))
    known = ", ".join(sorted(registry)) or "none"
    raise ValueError(
        f"unknown classifier {spec_s!r}: not a registered name ({known}), "
        "a 'package.module:factory' spec, a .pt2 exported program or a TorchScript file"
    )
