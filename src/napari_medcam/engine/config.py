"""`MedCAMConfig`: every knob of one Med-CAM optimisation, with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from napari_medcam.engine.renamed import new_names, renamed_fields
from napari_medcam.engine.scale import check_detail

# "auto": the neutral candidate closest to the image (engine/absence.py)
ABSENCES = ("auto", "mean", "glass", "black", "background", "blur", "tissue")
# drawn around the absence: jitter, blur, tissue; far from any data (opt-in): the rest
PERTURBATIONS = ("jitter", "blur", "tissue", "zeros", "normal", "uniform")


@renamed_fields
@dataclass(frozen=True)
class MedCAMConfig:
    """Loss weights, explainer size and optimisation schedule.

    With ``tolerance`` None the loss is the paper's weighted sum ``λ_act·L_act +
    λ_ce·L_CE + λ_kl·L_KL + λ_area·L_area + λ_bin·L_bin + λ_tv·L_tv + λ_rob·L_rob``;
    with a ``tolerance`` the λ's are not used: the mask minimises area (+ ``weight_tv``
    TV, ``weight_bin`` binarisation) subject to keeping ≥ ``tolerance`` of the original
    confidence on the absence and the perturbations, with multipliers adapted per image
    (`napari_medcam.engine.objective`).

    ``fast()`` is the default (constrained, coarse-to-fine, automatic absence);
    ``paper()`` is the authors' ImageNet recipe, exactly as published.

    The names before the glossary (``baseline``, ``noises``, ``n_backgrounds``) still
    work, with a DeprecationWarning (`napari_medcam.engine.renamed`).
    """

    # loss weights
    lambda_act: float = 10.0
    lambda_ce: float = 15.0
    lambda_kl: float = 5.0
    lambda_area: float = 100.0
    lambda_bin: float = 1.0
    lambda_tv: float = 500.0
    lambda_rob: float = 100.0
    temperature: float = 2.0
    layer_weights: tuple[float, ...] | None = None  # None: 1, 2, 4, ... shallow → deep
    # constrained form (engine/objective.py): None = the fixed λ's above
    tolerance: float | None = None
    weight_tv: float = 1.0  # TV and binarisation relative to the area (see FAST)
    weight_bin: float = 0.01
    multiplier_init: float = 0.1
    multiplier_rate: float = 0.2
    # explainer network
    unet_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    mask_scale: float = 1.0  # mask resolution relative to the classifier input
    # initial soft-mask value everywhere (sigmoid of the head's bias): the mask starts
    # full, so its first binary mask keeps the decision; at 0.5 every pixel sits on the
    # threshold and the first binary mask is empty (the paper does not say how it starts)
    init_fill: float = 0.8
    init_spread: float = 0.0  # std of the U-Net head's initial weights (0: uniform start)
    prior_strength: float = 0.0  # ± logits added from the classifier's Grad-CAM (0: none)
    linear_area: bool = False  # area gradient with a constant slope in logit space
    retries: int = 0  # new starts (new seed, prior ×2) for a tile whose mask failed
    retry_area: float = 0.5  # ...or whose best valid mask still covers more than this
    # optimisation
    steps: int = 880
    min_steps: int = 880
    lr: float = 5e-5
    warmup_steps: int = 0
    ramp_steps: int = 0  # minimality weights ramp linearly from 0 over these steps
    threshold: float = 0.5
    patience: int = 0  # early stop: steps the mask must stay stable (0 = never)
    stable_change: float = 0.002  # fraction of pixels that may flip and still be "stable"
    refine_steps: int = 0  # full-resolution refinement after a coarse mask (0: none)
    refine_lr: float = 0.1
    # the scale of evidence (engine/scale.py): "auto", "cells", "cell groups", "regions",
    # a structure size in pixels, or "N um"; the final mask is closed at that scale
    detail: str | float = "auto"
    # remove the whole regions the goal does not need from the final mask (engine/regions.py)
    prune: bool = False
    # robustness and absence (engine/absence.py)
    n_perturbations: int = 4  # drawn per step
    perturbations: tuple[str, ...] = ("zeros", "normal", "uniform", "blur")  # their kinds
    absence: str = "mean"  # "auto", or the candidate forced when it is neutral
    blur_sigma: float = 10.0
    # validity thresholds
    min_area: float = 0.001
    max_area: float = 0.9
    valid_share: float = 0.9  # a tiled image is valid when ≥ this share of its tiles is
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("lambda_") and (not isinstance(v, (int, float)) or v < 0):
                problems.append(f"{f.name} must be a number ≥ 0, got {v!r}")
        if self.steps < 1:
            problems.append(f"steps must be ≥ 1, got {self.steps}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 < self.threshold < 1:
            problems.append(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0 < self.init_fill < 1:
            problems.append(f"init_fill must be in (0, 1), got {self.init_fill}")
        if not 0 < self.mask_scale <= 1:
            problems.append(f"mask_scale must be in (0, 1], got {self.mask_scale}")
        if not self.unet_channels or min(self.unet_channels) < 1:
            problems.append("unet_channels must be a non-empty tuple of positive ints")
        if self.temperature <= 0:
            problems.append("temperature must be > 0")
        if self.absence not in ABSENCES:
            problems.append(f"absence must be one of {ABSENCES}, got {self.absence!r}")
        bad = [n for n in self.perturbations if n not in PERTURBATIONS]
        if bad or not self.perturbations:
            problems.append(
                f"perturbations must be a non-empty subset of {PERTURBATIONS}, "
                f"got {self.perturbations}"
            )
        if self.tolerance is not None and not 0 < self.tolerance <= 1:
            problems.append(f"tolerance must be in (0, 1] or None, got {self.tolerance}")
        if self.refine_steps < 0 or self.refine_lr <= 0:
            problems.append("refine_steps must be ≥ 0 and refine_lr > 0")
        if self.multiplier_init <= 0 or self.multiplier_rate <= 0:
            problems.append("multiplier_init and multiplier_rate must be > 0")
        if self.n_perturbations < 0:
            problems.append("n_perturbations must be ≥ 0")
        if not isinstance(self.valid_share, (int, float)) or not 0 < self.valid_share <= 1:
            problems.append(f"valid_share must be in (0, 1], got {self.valid_share!r}")
        if (why := check_detail(self.detail)) is not None:
            problems.append(why)
        if problems:
            raise ValueError("invalid MedCAMConfig: " + "; ".join(problems))

    @classmethod
    def paper(cls, **overrides: Any) -> MedCAMConfig:
        """The authors' recipe (docs/method.md), from a full mask: minutes per image on a CPU."""
        return cls().replace(**_renamed(overrides, "MedCAMConfig.paper()"))

    @classmethod
    def fast(cls, **overrides: Any) -> MedCAMConfig:
        """Interactive default: a small U-Net at quarter resolution, a few seconds on a CPU."""
        return cls(**FAST).replace(**_renamed(overrides, "MedCAMConfig.fast()"))

    @classmethod
    def volume(cls, **overrides: Any) -> MedCAMConfig:
        """Volumes with a 3-D classifier: the fast recipe with a half-resolution 3-D mask."""
        return cls(**VOLUME).replace(**_renamed(overrides, "MedCAMConfig.volume()"))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MedCAMConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return getattr(cls, name)(**_renamed(overrides, "MedCAMConfig.preset()"))

    def replace(self, **changes: Any) -> MedCAMConfig:
        """A copy with ``changes``; an old field name (`renamed`) is mapped to its new one
        here, since `dataclasses.replace` would pass both to the constructor."""
        return replace(self, **_renamed(changes, "MedCAMConfig.replace()"))

    def capped(self, steps: int) -> MedCAMConfig:
        """At most ``steps`` optimisation steps per attempt, coarse and refinement together
        (a fifth of them at most for the refinement), for a quick look."""
        if steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {steps}")
        refine = min(self.refine_steps, steps // 5)
        return replace(
            self,
            steps=steps - refine,
            refine_steps=refine,
            min_steps=min(self.min_steps, steps - refine),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Chosen on seeds 1000-1007, 2000-2007 and 7000-7007: see README "The fast preset".
FAST: dict[str, Any] = dict(
    unet_channels=(16, 32, 64),  # 0.1 M parameters instead of 7.8 M
    mask_scale=0.25,  # the U-Net works at 56×56 for a 224×224 input; the mask is upsampled
    init_fill=0.8,  # starts full: the decision is held at step 0
    prior_strength=1.0,  # ...and the least relevant regions (by Grad-CAM) leave first
    linear_area=True,  # the area term keeps pulling once the mask is crisp
    steps=100,
    min_steps=25,
    lr=3e-3,  # 60× the paper's; warm-up + ramp keep the area term from emptying the mask
    warmup_steps=10,
    ramp_steps=30,
    patience=10,
    n_perturbations=2,  # two perturbations per step, rotating through the pool
    retries=1,  # one new start when a mask fails or never shrinks below half the tile
    # issue 9: no λ to set per classifier — keep ≥ 95 % of the confidence, minimal area;
    # the absence is chosen per image among in-distribution candidates; the quarter-
    # resolution mask is refined at full resolution. Tuned on the demo, hne-modulelist
    # and fluo-stages only (docs/zoo.md): weight_tv 1 (the paper's ratio, 5, kept masks
    # 2-4x larger on hne-modulelist and the demo at the same precision), multipliers
    # starting at 0.1 and relaxing at half the rate they rise (a fast fall let the whole
    # mask cross the threshold at once on fluo-stages)
    tolerance=0.95,
    absence="auto",
    # counterfactual tissue is an absence candidate, but not a perturbation by default:
    # block-shuffled / flipped normal tiles as perturbations took the demo's two-lesion
    # slide from 0.98 to 0.47 of the mask near the lesions (opt-in: "tissue")
    perturbations=("jitter", "blur"),
    refine_steps=20,
    # round 3 (docs/zoo.md): the final binary mask loses the pixels its goal does not
    # need (checked on the tuning entries only: hne 0.14 → 0.10, fluo 0.51 → 0.18 of the
    # reference at equal precision; the demo unchanged)
    prune=True,
)
# Chosen with the demo volume classifier on seeds 1000-1007 (tests use 7000+). Spelled
# out rather than derived from FAST, so that retuning the 2-D preset leaves it alone.
# A quarter-resolution mask (8³ for 32³) is too coarse to follow a lesion; in 3-D the
# surface (TV) grows faster than the area, and activation matching must weigh more for
# the mask to keep the whole lesion rather than its core. With the 2-D step size the
# mask was still shrinking after 100 steps (IoU 0.16-0.57 on fresh volumes, halos of
# 2-3 voxels); lr 1e-2 and up to 200 steps gave IoU 0.56-0.78 on the tuning seeds.
VOLUME: dict[str, Any] = dict(
    unet_channels=(16, 32, 64),  # a 3-D U-Net at 16³ for a 32³ input: ~70 % of a step's time
    mask_scale=0.5,
    init_fill=0.8,
    prior_strength=2.0,  # the 2-D ±1 lets the mask fall off the cliff more often in 3-D
    linear_area=True,
    lambda_act=50.0,
    lambda_tv=250.0,
    steps=200,
    min_steps=25,
    lr=1e-2,
    warmup_steps=10,
    ramp_steps=30,
    patience=10,
    n_perturbations=2,
    retries=1,
    # the 3-D recipe keeps the fixed weights and absence it was tuned with
    absence="mean",
    perturbations=("zeros", "normal", "uniform", "blur"),
)
PRESETS = ("fast", "paper", "volume")


def _renamed(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """``overrides`` in the new field names (a preset's or `replace`'s caller warned)."""
    return new_names(overrides, _FIELDS, where, stacklevel=3)


_FIELDS = frozenset(f.name for f in fields(MedCAMConfig))
