"""Scores of a mask or a saliency map: faithful to the classifier, close to a reference?

Faithfulness (the classifier's view):

- `mask_confidences` / `MaskScorer.confidences`: preservation (target probability on
  the binary-masked image, the absence elsewhere), robust confidence (perturbations
  elsewhere), deletion confidence (the mask's content replaced by the absence).
- `MaskScorer.curves`: insertion and deletion curves over the ranking of a
  continuous map, and the area under each (Petsiuk et al. 2018).

Localisation and shape (against a reference mask):

- `overlap_scores`, `equal_area_overlap` (IoU and Dice with the map cut at the
  reference's area), `pointing_game`, `energy_inside`;
- `compactness` (area fraction, connected regions); `blur` (width of a map's
  transition band relative to its core: how sharp) and `crispness` (how binary).

Sanity (Adebayo et al. 2018): `randomise_top_layers` makes a copy of a classifier
with its top layers re-initialised; `map_similarity` (Spearman rank correlation,
SSIM, IoU of the top pixels) says how much an explanation changed. A method that
explains the *model* must change; one that only sees the image will not.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import prepare_input, resize
from napari_medcam.engine.absence import Absence, choose_absence
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.renamed import old_attribute
from napari_medcam.engine.scoring import evaluate_mask

# --------------------------------------------------------------------------- faithfulness


@dataclass
class MaskScorer:
    """One image prepared once for scoring many masks and maps against one classifier.

    ``x`` is the normalised classifier input, ``target`` the explained class (the
    prediction unless given), ``original`` its probability on ``x``, and ``absence``
    the absence (replacement image and perturbations), chosen exactly as `explain`
    chooses it (so scores are comparable with an `Explanation`'s confidences).
    """

    classifier: Classifier
    x: torch.Tensor
    target: int
    original: float
    absence: Absence
    config: MedCAMConfig
    spatial: tuple[int, ...]

    @classmethod
    def from_image(
        cls,
        image: np.ndarray,
        classifier: Classifier,
        target: int | str | None = None,
        config: MedCAMConfig | None = None,
    ) -> MaskScorer:
        config = config or MedCAMConfig.fast()
        x = prepare_input(image, classifier).to(classifier.device)
        with torch.no_grad():
            probs = torch.softmax(classifier.module(x), 1)[0]
        t = classifier.class_index(target)
        t = int(probs.argmax()) if t is None else t
        absence = choose_absence(x, classifier, t, config)
        spatial = tuple(np.asarray(image).shape[: classifier.spatial_dims])
        return cls(classifier, x, t, float(probs[t]), absence, config, spatial)

    @property
    def absence_is_neutral(self) -> bool:
        return not self.absence.problem

    baseline_is_neutral = old_attribute("baseline_is_neutral", "absence_is_neutral", "MaskScorer")

    def _check(self, arr: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.shape != self.spatial:
            raise ValueError(
                f"{what} shape {arr.shape} does not match the image's spatial shape {self.spatial}"
            )
        return arr

    def _to_input(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        return resize(t.to(self.x.device), self.classifier.input_size)

    def confidences(self, mask: np.ndarray) -> dict[str, float]:
        """Preservation, robust and deletion confidence of a binary mask (image-shaped)."""
        mask = self._check(mask, "mask") > 0
        hard = (self._to_input(mask) > 0.5).float()
        ev = evaluate_mask(self.x, hard, self.classifier, self.target, self.absence, self.config)
        return {
            "target": self.target,
            "original": self.original,
            "masked": float(ev["masked"]),
            "robust": float(ev["robust"]),
            "deletion": float(ev["deletion"]),
            "held": int(ev["masked_pred"]) == self.target,
            "area_fraction": float(mask.mean()),
        }

    def curves(
        self, heatmap: np.ndarray, steps: int = 32, seed: int = 0, batch: int = 64
    ) -> dict[str, object]:
        """Insertion and deletion curves over the ranking of ``heatmap`` (Petsiuk et al.).

        Pixels (at the classifier's input resolution) are ranked by the map, highest
        first; ties are broken at random (``seed``), so a flat map scores like a random
        ranking. At each fraction ``k/steps`` of pixels, *deletion* replaces the top
        pixels of the image with the absence and *insertion* pastes them onto the
        absence; the curves are the target's probability. AUCs are trapezoid means over
        the fraction in [0, 1]: high insertion and low deletion are good.
        """
        if steps < 1:
            raise ValueError("steps must be ≥ 1")
        h = self._to_input(self._check(heatmap, "heatmap").astype(np.float32))[0, 0]
        h = h.cpu().numpy().ravel()
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(h.size), -h))  # by -h, ties by a random key
        rank = np.empty(h.size, np.int64)
        rank[order] = np.arange(h.size)
        rank_t = torch.from_numpy(rank.reshape(self.classifier.input_size)).to(self.x.device)
        counts = np.round(np.linspace(0, h.size, steps + 1)).astype(np.int64)
        b = self.absence.image
        probs: list[torch.Tensor] = []
        items = [(kind, int(c)) for kind in ("deletion", "insertion") for c in counts]
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            top = torch.stack([(rank_t < c) for _, c in chunk]).unsqueeze(1).float()
            dele = torch.tensor([k == "deletion" for k, _ in chunk], device=self.x.device).view(
                -1, *[1] * (top.ndim - 1)
            )
            keep = torch.where(dele, 1 - top, top)
            with torch.no_grad():
                logits = self.classifier.module(keep * self.x + (1 - keep) * b)
            probs.append(torch.softmax(logits, 1)[:, self.target].cpu())
        p = torch.cat(probs).numpy()
        n = len(counts)
        fractions = counts / h.size
        deletion, insertion = p[:n], p[n:]
        return {
            "fractions": fractions,
            "deletion_curve": deletion,
            "insertion_curve": insertion,
            "deletion_auc": _auc(fractions, deletion),
            "insertion_auc": _auc(fractions, insertion),
        }


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def mask_confidences(
    image: np.ndarray,
    mask: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
) -> dict[str, float]:
    """Does ``mask`` (e.g. after a user's edit) still carry the decision?

    Returns the target's probability on the original image (``original``), on the
    binary-masked image with the absence elsewhere (``masked``), averaged over
    perturbations (``robust``), and with the mask's content removed
    (``deletion``), plus whether the masked image keeps the decision (``held``).
    The absence and perturbations are chosen exactly as `explain` chooses them.
    """
    mask = np.asarray(mask)
    if mask.shape != np.asarray(image).shape[: mask.ndim] or mask.ndim != classifier.spatial_dims:
        raise ValueError(
            f"mask shape {mask.shape} does not match the image's spatial shape "
            f"{np.asarray(image).shape[: classifier.spatial_dims]}"
        )
    return MaskScorer.from_image(image, classifier, target, config).confidences(mask)


# --------------------------------------------------------------------------- localisation


def overlap_scores(mask: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision (mask inside reference) and recall of two binary masks."""
    a = np.asarray(mask) > 0
    b = np.asarray(reference) > 0
    if a.shape != b.shape:
        raise ValueError(f"mask {a.shape} and reference {b.shape} differ in shape")
    return overlap_from_counts(np.logical_and(a, b).sum(), a.sum(), b.sum())


def overlap_from_counts(inter: float, sa: float, sb: float) -> dict[str, float]:
    """`overlap_scores` from pixel counts (overlap, mask, reference): summed tile by tile,
    they score a whole slide without holding its masks."""
    inter, sa, sb = float(inter), float(sa), float(sb)
    union = sa + sb - inter
    return {
        "dice": 2 * inter / (sa + sb) if sa + sb else 1.0,
        "iou": inter / union if union else 1.0,
        "precision": inter / sa if sa else 0.0,
        "recall": inter / sb if sb else 0.0,
    }


def threshold_to_area(heatmap: np.ndarray, area_fraction: float) -> np.ndarray:
    """Binary mask of the top ``area_fraction`` of a heatmap's values (equal-area comparison)."""
    h = np.asarray(heatmap, dtype=np.float64)
    k = int(round(np.clip(area_fraction, 0.0, 1.0) * h.size))
    out = np.zeros(h.shape, bool)
    if k:
        order = np.argsort(h, axis=None, kind="stable")[::-1][:k]
        out.flat[order] = True
    return out


def equal_area_overlap(heatmap: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """`overlap_scores` of the map's top pixels, as many as the reference has (IoU, Dice)."""
    ref = np.asarray(reference) > 0
    if np.shape(heatmap) != ref.shape:
        raise ValueError(f"heatmap {np.shape(heatmap)} and reference {ref.shape} differ in shape")
    return overlap_scores(threshold_to_area(heatmap, float(ref.mean())), ref)


def pointing_game(heatmap: np.ndarray, reference: np.ndarray, tolerance: int = 0) -> bool:
    """Does the map's maximum fall in the reference (dilated by ``tolerance`` pixels)?

    Zhang et al. (2016). When several pixels share the maximum (a flat or saturated
    map), the hit needs most of them inside, so a constant map does not score.
    """
    from scipy import ndimage

    h = np.asarray(heatmap, dtype=np.float64)
    ref = np.asarray(reference) > 0
    if h.shape != ref.shape:
        raise ValueError(f"heatmap {h.shape} and reference {ref.shape} differ in shape")
    if tolerance > 0:
        ref = ndimage.binary_dilation(ref, iterations=int(tolerance))
    peak = h == h.max()
    return bool(ref[peak].mean() > 0.5)


def energy_inside(heatmap: np.ndarray, reference: np.ndarray) -> float:
    """Share of the map's mass (above its minimum) inside the reference (Wang et al. 2020)."""
    h = np.asarray(heatmap, dtype=np.float64)
    ref = np.asarray(reference) > 0
    if h.shape != ref.shape:
        raise ValueError(f"heatmap {h.shape} and reference {ref.shape} differ in shape")
    h = h - h.min()
    total = float(h.sum())
    return float(h[ref].sum() / total) if total > 0 else float(ref.mean())


# --------------------------------------------------------------------------- shape


def compactness(mask: np.ndarray, connectivity: int | None = None) -> dict[str, float]:
    """Area fraction, number of connected regions and the largest region's share of the mask.

    ``connectivity`` as in `scipy.ndimage.generate_binary_structure` (default: full,
    i.e. 8-connected in 2-D).
    """
    from scipy import ndimage

    m = np.asarray(mask) > 0
    structure = ndimage.generate_binary_structure(m.ndim, connectivity or m.ndim)
    labels, n = ndimage.label(m, structure=structure)
    total = int(m.sum())
    largest = int(np.bincount(labels.ravel())[1:].max()) if n else 0
    return {
        "area_fraction": float(m.mean()),
        "regions": int(n),
        "largest_region_share": largest / total if total else 0.0,
    }


def normalise_map(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (float32); a constant map becomes all zeros."""
    h = np.asarray(heatmap, dtype=np.float64)
    lo, hi = float(h.min()), float(h.max())
    out = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    return out.astype(np.float32)


def crispness(heatmap: np.ndarray) -> float:
    """How binary a map is: ``1 − 4·mean(m·(1 − m))`` of the min-max scaled map ``m``.

    1 for a two-valued map (a mask), 0 for a map at the mid-value everywhere; a smooth
    ramp scores 1/3. A constant map says nothing and scores 0. A "sharp" explanation
    says yes or no per pixel.
    """
    if np.ptp(np.asarray(heatmap)) == 0:
        return 0.0
    m = normalise_map(heatmap).astype(np.float64)
    return float(1 - 4 * np.mean(m * (1 - m)))


def blur(heatmap: np.ndarray, margin: float = 0.1) -> float:
    """How blurred a map is: its transition band's area over its core's area.

    On the min-max scaled map ``m``, the core is ``m ≥ 0.5`` and the band is
    ``margin < m < 1 − margin``. 0 for a two-valued map (a mask); for a blob with soft
    edges it grows with the edge width relative to the blob's size (a linear ramp
    scores 1.6). NaN for a constant map (no core, nothing to be sharp about).
    Unlike `crispness`, a map that is zero almost everywhere gains nothing from its
    zeros: only the edge around what it highlights counts.
    """
    h = np.asarray(heatmap, dtype=np.float64)
    if np.ptp(h) == 0:
        return float("nan")
    m = normalise_map(h)
    band = np.count_nonzero((m > margin) & (m < 1 - margin))
    return float(band / np.count_nonzero(m >= 0.5))


# --------------------------------------------------------------------------- sanity


def parameterised_modules(module: torch.nn.Module) -> list[str]:
    """Names of the sub-modules that hold parameters of their own, input to output order."""
    return [
        name
        for name, m in module.named_modules()
        if name and any(True for _ in m.parameters(recurse=False))
    ]


def randomise_top_layers(
    classifier: Classifier, n_layers: int = 2, seed: int = 0, names: Sequence[str] | None = None
) -> Classifier:
    """A copy of ``classifier`` whose top ``n_layers`` parameterised layers are re-initialised.

    The cascading model-parameter randomisation of Adebayo et al. (2018), from the
    output down. The classifier passed in is never modified (its module is deep-copied).
    ``names`` picks the layers explicitly instead. Layers are re-initialised with their
    own ``reset_parameters`` (PyTorch's default initialisation) under ``seed``.
    """
    device = classifier.device
    module = copy.deepcopy(classifier.module).to("cpu")  # `Classifier` probes it on the CPU
    layers = list(names) if names is not None else parameterised_modules(module)[-n_layers:]
    mods = dict(module.named_modules())
    missing = [n for n in layers if n not in mods or not hasattr(mods[n], "reset_parameters")]
    if missing or not layers:
        raise ValueError(f"cannot re-initialise layers {missing or layers}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for n in layers:
            mods[n].reset_parameters()
    return Classifier(
        module,
        input_size=classifier.input_size,
        mean=classifier.mean,
        std=classifier.std,
        class_names=classifier.class_names,
        layers=classifier.layers,
        name=f"{classifier.name} (top {len(layers)} layers randomised)",
    ).to(device)


def map_similarity(a: np.ndarray, b: np.ndarray, area: float = 0.1) -> dict[str, float]:
    """Similarity of two maps of one image: Spearman ρ, SSIM and IoU of their top ``area``.

    A constant map has no ranking: its Spearman ρ with anything is reported as 0.
    SSIM (Wang et al. 2004, `skimage.metrics.structural_similarity`) is taken on the
    min-max scaled maps.
    """
    from scipy import stats
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape} cannot be compared")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = 0.0
    else:
        rho = float(stats.spearmanr(a.ravel(), b.ravel())[0])
    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd
    ssim = float(
        structural_similarity(normalise_map(a), normalise_map(b), data_range=1.0, win_size=win)
    )
    iou = overlap_scores(threshold_to_area(a, area), threshold_to_area(b, area))["iou"]
    return {"spearman": rho, "ssim": ssim, "iou_top": iou}
