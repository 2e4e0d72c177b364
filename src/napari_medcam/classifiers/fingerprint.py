"""A classifier's fingerprint: which weights produced a result, checkable later."""

from __future__ import annotations

import hashlib

import torch

from napari_medcam.classifiers.classifier import Classifier


def classifier_fingerprint(classifier: Classifier) -> str:
    """SHA-256 (hex) of the module's state dict: every tensor's name, dtype, shape, values.

    Keys sorted and tensors on the CPU, so two loads of the same weights agree
    wherever they run: a cohort run checks that every worker explains with the
    weights the run started with, and a rerun that it still does. (The same sum
    as the amortised explainer files' classifier fingerprint.)
    """
    return module_fingerprint(classifier.module)


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (hex) of any module's state dict (`classifier_fingerprint`'s sum): a slide
    classifier's encoder is fingerprinted the same way to key its cached embeddings."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.float().numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()
