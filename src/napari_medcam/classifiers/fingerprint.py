"""A classifier's fingerprint: which weights produced a result, checkable later."""

from __future__ import annotations

import hashlib

import torch

from napari_medcam.classifiers.classifier import Classifier


def classifier_fingerprint(classifier: Classifier) -> str:
    """SHA-256 (hex) of the module's state dict: every tensor's name, dtype, shape, bytes.

    Two loads of the same weights agree wherever they run (CPU bytes, in key
    order), so a cohort run can tell that every worker explains with the weights
    the run was started with, and a rerun that it still does.
    """
    h = hashlib.sha256()
    for name, tensor in classifier.module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
