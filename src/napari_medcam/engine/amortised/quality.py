"""The fit report's quality: the fitted explainer judged on tiles set aside before fitting.

Each set-aside tile gets exactly the verdict of any amortised explanation
(`napari_medcam.engine.amortised.batch.explain_batch`), so the report's "valid"
means what it means on a slide.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.amortised.batch import explain_batch
from napari_medcam.engine.amortised.data import FitTiles
from napari_medcam.engine.amortised.events import FitEvent
from napari_medcam.engine.amortised.file import Explainer
from napari_medcam.engine.config import MedCAMConfig


def held_out_quality(
    explainer: Explainer,
    classifier: Classifier,
    data: FitTiles,
    indices: list[int],
    config: MedCAMConfig,
    device: torch.device,
) -> Generator[Any, None, dict[str, Any]]:
    """The fit report's quality on tiles set aside before fitting: the same verdict as
    any explanation, the share valid, median area, and the wrong-class masks' area."""
    valid, areas, masked, wrong = [], [], [], []
    for n, i in enumerate(indices, start=1):
        x = data.x[i : i + 1].float().to(device)
        t = data.targets[i]
        facts = yield from explain_batch(
            x, classifier, explainer, [t], [data.probabilities[i]], config, 0
        )
        tile = facts[0]
        valid.append(tile.valid)
        areas.append(tile.area)
        masked.append(tile.scores.masked)
        others = [c for c in range(classifier.num_classes) if c != t]
        w = explainer.masks(x.expand(len(others), *x.shape[1:]), others, classifier)
        wrong += (w > config.threshold).float().flatten(1).mean(1).tolist()
        yield FitEvent("evaluate", n, len(indices))
    if not indices:
        return {"tiles": 0}
    by_class = {}
    for c in sorted({data.targets[i] for i in indices}):
        mine = [k for k, i in enumerate(indices) if data.targets[i] == c]
        by_class[classifier.class_names[c]] = {
            "tiles": len(mine),
            "valid_share": round(float(np.mean([valid[k] for k in mine])), 4),
            "median_area": round(float(np.median([areas[k] for k in mine])), 4),
        }
    return {
        "tiles": len(indices),
        "valid_share": round(float(np.mean(valid)), 4),
        "median_area": round(float(np.median(areas)), 4),
        "mean_masked_confidence": round(float(np.mean(masked)), 4),
        "wrong_class_median_area": round(float(np.median(wrong)), 4),
        "by_class": by_class,
    }
