"""Pruning the final mask: only removals that keep meeting the goal, down to what it needs."""

import numpy as np
import torch

import napari_medcam as mc
from napari_medcam.engine.prune import prune
from tests.toys import red_counter, red_square_image


def _needs(region: torch.Tensor, count: int):
    """A goal met while the mask keeps ≥ ``count`` pixels of ``region``."""
    return lambda masks: (masks * region).flatten(1).sum(1) >= count


def test_prune_removes_every_pixel_the_goal_does_not_need():
    hard = torch.zeros(1, 1, 20, 20)
    hard[..., 5:15, 5:15] = 1  # 100 pixels; the goal needs 30 of its left half
    region = torch.zeros_like(hard)
    region[..., 5:15, 5:10] = 1
    rank = region + 0.01 * torch.rand_like(hard)  # the needed pixels ranked higher
    out = prune(hard, rank, _needs(region, 30))
    assert bool(_needs(region, 30)(out)[0])
    assert int(out.sum()) == 30
    assert bool(((out == 1) <= (hard == 1)).all())  # pixels only removed, never added


def test_prune_never_returns_a_mask_that_fails_even_when_removal_is_not_monotone():
    hard = torch.ones(1, 1, 10, 10)
    rank = torch.arange(100.0).view_as(hard)

    def meets(masks):  # only the full mask and masks of exactly 40 or 41 pixels pass
        n = masks.flatten(1).sum(1)
        return (n == 100) | (n == 40) | (n == 41)

    out = prune(hard, rank, meets)
    assert bool(meets(out)[0])
    assert int(out.sum()) in (40, 41, 100)
    assert torch.equal(prune(hard, rank, lambda m: m.flatten(1).sum(1) > 1e9), hard)


def test_pruned_mask_is_the_known_minimal_evidence_on_a_toy():
    """p(red) grows with red pixels: 95 % of the confidence needs a known count of them."""
    clf = red_counter()
    img, square = red_square_image()
    loose = mc.explain(img, clf, config=mc.MedCAMConfig.fast(prune=False), device="cpu")
    exp = mc.explain(img, clf, device="cpu")
    assert exp.valid, exp.status
    goal = 0.95 * exp.original_confidence
    need = (np.log(goal / (1 - goal)) + 1.5) / 100 * img.shape[0] * img.shape[1]
    assert exp.masked_confidence >= goal - 1e-3
    assert int((exp.mask & square).sum()) == exp.mask.sum()  # nothing outside the evidence
    assert need - 1 <= exp.mask.sum() <= 1.05 * need
    assert exp.mask.sum() <= loose.mask.sum()
    assert "pruned" in exp.provenance["mask_resolution"]


def test_soft_map_thresholded_is_the_pruned_mask():
    """Tiled images are stitched from soft maps: thresholded, they must give the mask
    that was pruned and judged, not the larger one before pruning."""
    from napari_medcam.engine.absence import choose_absence
    from napari_medcam.engine.optimise import optimise_masks
    from napari_medcam.engine.prepare import prepare_input

    clf = red_counter()
    img, _ = red_square_image()
    cfg = mc.MedCAMConfig.fast()
    x = prepare_input(img, clf)
    gen = optimise_masks(x, clf, [1], cfg, [choose_absence(x, clf, 1, cfg)])
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        (res,) = stop.value
    assert res.met_goal
    assert torch.equal((res.soft > cfg.threshold).float(), res.hard)
