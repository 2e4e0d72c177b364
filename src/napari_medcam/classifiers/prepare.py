"""From a user's array to the classifier's input tensor, and back to image space."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the classifier calls these helpers; they only need its type
    from napari_medcam.classifiers.classifier import Classifier


def resize(t: torch.Tensor, size: tuple[int, ...], smooth: bool = True) -> torch.Tensor:
    """Resize (B, C, *spatial) to ``size``; area-aware when shrinking a 2-D image."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    if not smooth:
        return F.interpolate(t, size=size, mode="nearest")
    mode = "bilinear" if t.ndim == 4 else "trilinear"
    shrinking = any(s < o for s, o in zip(size, t.shape[2:]))
    return F.interpolate(
        t, size=size, mode=mode, align_corners=False, antialias=shrinking and t.ndim == 4
    )


def unit_tensor(
    image: np.ndarray,
    classifier: Classifier,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Validated image as (1, C, *spatial) float32 in [0, 1], at its own size."""
    unit = classifier.to_unit_range(image, value_range)
    sd = classifier.spatial_dims
    return torch.from_numpy(np.ascontiguousarray(unit)).permute(sd, *range(sd))[None].contiguous()


def prepare_input(image: np.ndarray, classifier: Classifier) -> torch.Tensor:
    """Image → normalised (1, C, *input_size) tensor, resized to the classifier's input."""
    return classifier.normalise(resize(unit_tensor(image, classifier), classifier.input_size))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` → CUDA, then MPS, then CPU; anything else must name an available device."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda" and (
        not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(f"device {device!r} is not available on this machine")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


def available_devices() -> list[str]:
    """Devices this machine can run on, for choosers in the GUI and CLI help."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out
