"""What a binary mask keeps: the classifier's confidences on it, the way every report
(explanations, the edited-mask check, the evaluation) measures them."""

from __future__ import annotations

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.absence import Absence
from napari_medcam.engine.config import MedCAMConfig

EVAL_BACKGROUNDS = 16  # perturbations used to report the robust confidence


def evaluate_mask(
    x: torch.Tensor,
    hard: torch.Tensor,
    classifier: Classifier,
    target: int,
    absence: Absence,
    config: MedCAMConfig,
) -> dict[str, float | list[float]]:
    """Confidences of a binary mask: on the absence, on fresh neutral backgrounds drawn
    around it (never those the optimisation saw), and with the mask's content deleted."""
    noise = absence.draw(x, classifier, target, EVAL_BACKGROUNDS, config.seed + 104729)
    if not len(noise):
        noise = absence.image
    b = absence.image
    batch = torch.cat(
        [hard * x + (1 - hard) * b, hard * x + (1 - hard) * noise, (1 - hard) * x + hard * b]
    )
    with torch.no_grad():
        probs = torch.softmax(classifier.module(batch), 1)
    return {
        "masked": float(probs[0, target]),
        "masked_probabilities": probs[0].tolist(),
        "robust": float(probs[1:-1, target].mean()),
        "deletion": float(probs[-1, target]),
        "masked_pred": int(probs[0].argmax()),
    }
