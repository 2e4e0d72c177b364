"""What "nothing here" means for this classifier: the absence that replaces the image.

A mask keeps evidence only if what replaces the rest of the image is *neutral* (the
classifier does not call it the target) and *in distribution* (something the
classifier has seen, so that its answer on the masked image means something). The
dataset-mean colour of the paper is neither for many real classifiers: brightfield
models call it positive and call glass negative; a ResNet calls every flat fill some
class. So the engine builds candidates a domain expert would reach for:

- flat fills: ``glass`` (white), ``black``, the dataset ``mean`` colour;
- from the image: its own field colour (``background``, lightest or darkest mode)
  and a strong ``blur``;
- ``tissue``: counterfactual tissue, tiles the classifier calls non-target (the
  user's ``absence_tiles``, or other tiles of the same slide).

It keeps the neutral ones (argmax ≠ target and p(target) < 0.5) and picks the one
closest to the image in the classifier's own feature space (every activation layer,
global-average pooled, shallow and deep weighing alike; its logits when no layer is
hookable) — counterfactual tissue only when no fill and nothing made from the image is
neutral (a classifier that calls every flat fill some class): tissue is always the
closest, and pasting the evidence into normal tissue dilutes it, so masks grew and
strayed (measured on the tuning classifiers) — and reports every candidate's verdict.
Perturbations for the robustness term are then drawn
*around* that absence (`backgrounds.draw_backgrounds`) and each is checked for
neutrality: the robustness term never uses a perturbation the classifier calls the
target. Only when no candidate is neutral does the engine refuse, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.engine.backgrounds import FLAT, IMAGE, draw_backgrounds, make_baseline
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.hooks import record_activations

NEUTRAL_P = 0.5  # a replacement counts as neutral below this p(target) (and argmax ≠ target)
POOL = 8  # perturbations drawn (and checked) per tile for the optimisation


@dataclass
class Absence:
    """The chosen replacement image and the perturbations around it, for one input.

    ``image`` (1, C, *spatial) and ``backgrounds`` (K, C, *spatial) are normalised;
    every background was checked neutral. ``problem`` is empty when a neutral absence
    exists. ``candidates`` records each candidate's p(target), neutrality and feature
    distance to the image, for the report.
    """

    image: torch.Tensor
    name: str
    backgrounds: torch.Tensor
    kinds: tuple[str, ...]
    problem: str = ""
    candidates: list[dict[str, float | str | bool]] = field(default_factory=list)
    tissue: torch.Tensor | None = None

    def draw(
        self,
        x: torch.Tensor,
        classifier: Classifier,
        target: int,
        count: int,
        seed: int,
    ) -> torch.Tensor:
        """``count`` fresh backgrounds around this absence, the target-looking ones dropped."""
        return _neutral_pool(
            x, self.image, classifier, target, self.kinds, self.tissue, count, seed
        )


def _features(classifier: Classifier, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, per-layer features) of a batch, without gradients.

    Features are every activation layer's output, global-average pooled and scaled by
    the first item's (the image's) norm, so that shallow layers (colour, texture) and
    deep ones (shapes) weigh alike; the logits when no layer is hookable.
    """
    layers = list(classifier.layers)
    with torch.no_grad(), record_activations(classifier.module, layers) as acts:
        logits = classifier.module(batch)
        parts = []
        for name in layers:
            a = acts.get(name)
            if not isinstance(a, torch.Tensor):
                continue
            pooled = a.flatten(2).mean(2) if a.ndim > 2 else a.flatten(1)
            parts.append(pooled / (pooled[0].norm() + 1e-6))
    feats = torch.cat(parts, 1) / len(parts) ** 0.5 if parts else logits
    return logits, feats


def _neutral_pool(
    x: torch.Tensor,
    around: torch.Tensor,
    classifier: Classifier,
    target: int,
    kinds: tuple[str, ...],
    tissue: torch.Tensor | None,
    count: int,
    seed: int,
) -> torch.Tensor:
    """Draw ``count`` backgrounds cycling through ``kinds``; keep those the classifier
    does not call ``target`` (possibly none)."""
    if not count or not kinds:
        return x.new_zeros((0, *x.shape[1:]))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    per_kind = [count // len(kinds) + (i < count % len(kinds)) for i in range(len(kinds))]
    drawn = torch.cat(
        [
            draw_backgrounds(k, n, x, around, classifier, tissue, gen)
            for k, n in zip(kinds, per_kind)
            if n
        ]
    )
    if not len(drawn):
        return drawn
    with torch.no_grad():
        probs = torch.softmax(classifier.module(drawn), 1)
    ok = (probs.argmax(1) != target) & (probs[:, target] < NEUTRAL_P)
    return drawn[ok]


def choose_absence(
    x: torch.Tensor,
    classifier: Classifier,
    target: int,
    config: MedCAMConfig,
    tissue: torch.Tensor | None = None,
) -> Absence:
    """Choose the absence for one normalised input ``x`` (1, C, *spatial) and ``target``.

    ``config.absence`` ``auto`` picks among all candidates (module docstring); a named
    candidate is used when it is neutral, else the automatic choice replaces it and the
    candidates say why. ``tissue`` (T, C, *spatial), normalised, are counterfactual
    tissue tiles; those the classifier calls the target are not used.
    """
    names: list[str] = list(FLAT + IMAGE)
    cands = [make_baseline(k, x, classifier, config.blur_sigma) for k in names]
    if tissue is not None and len(tissue):
        names += [f"tissue {i + 1}" for i in range(len(tissue))]
        cands += [t[None] for t in tissue]
    logits, feats = _features(classifier, torch.cat([x, *cands]))
    probs = torch.softmax(logits, 1)
    ref = feats[0]
    scale = float(ref.norm()) or 1.0  # distances relative to the image's own features
    report = []
    for i, name in enumerate(names, start=1):
        report.append(
            {
                "name": name,
                "p_target": round(float(probs[i, target]), 4),
                "neutral": bool(int(probs[i].argmax()) != target and probs[i, target] < NEUTRAL_P),
                "distance": round(float((feats[i] - ref).norm()) / scale, 4),
            }
        )
    neutral = [r for r in report if r["neutral"]]
    target_name = classifier.class_names[target]
    kinds = tuple(config.perturbations)
    neutral_tissue = None
    if tissue is not None and len(tissue):
        keep = [i for i, r in enumerate(report[len(FLAT + IMAGE) :]) if r["neutral"]]
        neutral_tissue = tissue[keep] if keep else None
    if not neutral:
        tried = ", ".join(r["name"] for r in report)
        return Absence(
            cands[0],
            names[0],
            x.new_zeros((0, *x.shape[1:])),
            kinds,
            f"no neutral absence: the classifier calls every replacement it was offered "
            f"({tried}) '{target_name}'; give it tiles it calls something else "
            "(absence_tiles)",
            report,
            neutral_tissue,
        )
    forced = next((r for r in neutral if r["name"] == config.absence), None)
    if config.absence == "tissue":
        forced = min(
            (r for r in neutral if str(r["name"]).startswith("tissue")),
            key=lambda r: r["distance"],
            default=None,
        )
    # counterfactual tissue only when nothing else is neutral: it is always the closest
    # in features, and as the absence it asks whether the evidence suffices *among
    # normal tissue* — on hne-modulelist (tuning tiles) precision fell from 0.98 to 0.57
    made = [r for r in neutral if not str(r["name"]).startswith("tissue")]
    pick = forced or min(made or neutral, key=lambda r: r["distance"])
    image = cands[names.index(str(pick["name"]))]
    if neutral_tissue is None:
        kinds = tuple(k for k in kinds if k != "tissue")
    pool = _neutral_pool(
        x,
        image,
        classifier,
        target,
        kinds,
        neutral_tissue,
        POOL * bool(config.n_perturbations),
        config.seed + 7919,
    )
    problem = ""
    if config.n_perturbations and not len(pool):
        problem = (
            f"no neutral perturbation: the classifier calls every perturbation drawn "
            f"around the absence ('{pick['name']}') '{target_name}'"
        )
    return Absence(image, str(pick["name"]), pool, kinds, problem, report, neutral_tissue)
