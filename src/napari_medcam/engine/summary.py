"""`summarise`: the `Explanation` of what the user sees, with its provenance.

Shared by the per-image engine (`napari_medcam.engine.image`) and the amortised one
(`napari_medcam.engine.amortised.explain`): one definition of the status line, of the
confidences (means over the valid tiles) and of what the result records about how it
was made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_medcam._version import __version__
from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation
from napari_medcam.engine.regions import RegionReport, count_regions
from napari_medcam.engine.scale import resolve_detail
from napari_medcam.engine.tile_result import TileResult
from napari_medcam.engine.verdict import overall


def summarise(
    per_tile: list[TileResult],
    mask: Any,
    soft: Any,
    area: float,
    classifier: Classifier,
    config: MedCAMConfig,
    target: int,
    name: str,
    mean_probs: list[float] | None,
    seconds: float,
    n_windows: int,
    dev: torch.device,
    tile_classes: list[dict[str, Any]] | None = None,
    none_explained: str = "",
) -> Explanation:
    """The `Explanation` of what the user sees.

    ``valid`` when at least ``config.valid_share`` of the explained tiles are
    (`napari_medcam.engine.verdict`).
    On a tiled image the confidences (original, masked, robust, deletion) and the
    probabilities are means over the *valid* tiles only — the tiles whose evidence
    is in the mask — or over every explained tile when none is valid;
    ``area_fraction`` is the stitched mask's (invalid windows cleared);
    ``tile_verdicts`` has one entry per explained tile, ``tile_classes`` one per
    tissue tile (what the classifier calls it, explained or not). ``none_explained``
    is the status when no tile was explained (default: no tissue tile shows ``name``).
    On one tile, ``soft`` is made to threshold to exactly ``mask`` (a smooth resize
    of the soft map and a nearest one of the binary mask disagree on the rim).
    """
    # the region step ran on the masks shown (per-image masks, refined or pruned
    # amortised ones), not on one-pass amortised masks
    scaled = any(t.regions is not None for t in per_tile)
    detail = resolve_detail(config.detail, classifier).describe() if scaled else ""
    common = dict(
        mask=mask,
        soft_mask=soft,
        target=target,
        class_name=name,
        seconds=seconds,
        config=config.to_dict(),
        provenance=_provenance(per_tile, classifier, config, dev, detail),
        tiles=n_windows,
        tile_classes=tile_classes or [],
        detail=detail,
    )
    if not per_tile:  # tiled image where no tissue tile shows the target
        return Explanation.not_explained(
            **common,
            probabilities=mean_probs or [0.0] * classifier.num_classes,
            status=none_explained or f"no tissue tile is classified '{name}'",
        )
    if n_windows == 1 and isinstance(mask, np.ndarray) and isinstance(soft, np.ndarray):
        common["soft_mask"] = _thresholds_to(soft, mask, config.threshold)
    # what the user sees: on a tiled image only valid tiles are in the mask, so the
    # confidences are theirs (every explained tile's when none is valid)
    used = [t for t in per_tile if t.valid] or per_tile
    scores = [t.scores for t in used]

    def share(keeps: Callable[[RegionReport], bool]) -> float | None:
        values = [keeps(t.regions) for t in used if t.regions is not None]
        return float(np.mean(values)) if values else None

    return Explanation(
        **common,
        original_confidence=_mean([t.probabilities[target] for t in used]),
        masked_confidence=_mean([s.masked for s in scores]),
        robust_confidence=_mean([s.robust for s in scores]),
        deletion_confidence=_mean([s.deletion for s in scores]),
        area_fraction=area,
        valid=overall([t.valid for t in per_tile], config.valid_share),
        status=_status(per_tile, n_windows, name, classifier),
        probabilities=_mean([t.probabilities for t in used]),
        masked_probabilities=_mean([s.masked_probabilities for s in scores]),
        absence=",".join(dict.fromkeys(t.absence_name for t in per_tile)),
        steps=int(sum(t.steps for t in per_tile)),
        history=per_tile[0].history if n_windows == 1 else [],
        tile_verdicts=[t.as_record() for t in per_tile],
        regions=count_regions(mask, 1)[0] if isinstance(mask, np.ndarray) else None,
        context_keeps=share(lambda r: r.dilated_keeps),
        trim_keeps=share(lambda r: r.eroded_keeps),
    )


def _mean(values: list[Any]) -> Any:
    """The mean of numbers, or of equal-length lists element-wise, as Python floats."""
    return np.mean(np.asarray(values, dtype=float), axis=0).tolist()


def _provenance(
    per_tile: list[TileResult],
    classifier: Classifier,
    config: MedCAMConfig,
    dev: torch.device,
    detail: str,
) -> dict[str, Any]:
    """How the result was made: package, classifier, mask resolution, goal, device.

    ``detail`` is the region step's scale ("" when no shown mask went through it).
    """
    provenance = {
        "package": "napari-medcam",
        "version": __version__,
        "classifier": classifier.name,
        "classes": classifier.class_names,
        "activation_layers": classifier.layers,
        "output_only_matching": not classifier.layers,
        **getattr(classifier, "adaptation", {}),  # reshaped tokens, logits of an object
        "mask_resolution": f"{config.mask_scale:g} of the input"
        + (
            f", refined at full resolution (≤ {config.refine_steps} steps)"
            if config.refine_steps
            else ""
        )
        + (f", made into regions at the detail scale ({detail})" if detail else "")
        + (", pruned to the regions the goal needs" if config.prune and detail else ""),
        "goal": (
            f"keep ≥ {config.tolerance:g} of the original confidence"
            if config.tolerance is not None
            else "fixed loss weights"
        ),
        "device": str(dev),
        "torch": torch.__version__,
    }
    if per_tile:  # what "absence" meant (the first explained tile's candidates)
        provenance["absence_candidates"] = per_tile[0].absence_report
    return provenance


def _thresholds_to(soft: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
    """``soft`` nudged to threshold to exactly ``mask`` (a smooth resize of the soft map
    and a nearest one of the binary mask disagree on the rim)."""
    t = np.float32(threshold)
    above = np.nextafter(t, np.float32(1))
    return np.where(mask, np.maximum(soft, above), np.minimum(soft, t)).astype(np.float32)


def _status(per_tile: list[TileResult], n_windows: int, name: str, classifier: Classifier) -> str:
    """The status line: one tile's verdict, or how many tiles are valid and the first
    problem; and whether the classifier could only be matched on its output."""
    if n_windows == 1:
        status = per_tile[0].reason or "valid"
    else:
        n_ok = sum(t.valid for t in per_tile)
        status = f"{n_ok} of {len(per_tile)} '{name}' tiles valid ({n_windows} tiles in all)"
        if n_ok < len(per_tile):
            status += "; first problem: " + next(t.reason for t in per_tile if t.reason)
    if not classifier.layers:
        status += "; output-only matching (no hookable layers)"
    return status
