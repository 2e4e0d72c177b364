"""Every metric of `napari_medcam.metrics` on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import napari_medcam as mc
from napari_medcam.metrics import (
    MaskScorer,
    blur,
    compactness,
    crispness,
    energy_inside,
    equal_area_overlap,
    map_similarity,
    mask_confidences,
    normalise_map,
    overlap_scores,
    parameterised_modules,
    pointing_game,
    randomise_top_layers,
    threshold_to_area,
)

SIZE = 32


def square(size: int = SIZE, lo: int = 8, hi: int = 16) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[lo:hi, lo:hi] = True
    return m


class SquareDetector(nn.Module):
    """Class 1's logit is 10 × (mean of channel 0 inside a fixed square) − 2; class 0's is 0.

    On the normalised input (mean 0.5, std 0.25) a white square gives channel 0 = 2
    there, so logit 18 (p ≈ 1); the dataset-mean colour (0) gives −2 (p ≈ 0.12).
    Nothing outside the square matters, so its evidence is exactly the square.
    """

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)[:, 0]
        s = (f * self.region).sum((1, 2)) / self.region.sum()
        return torch.stack([torch.zeros_like(s), 10 * s - 2], 1)


def toy_classifier(region: np.ndarray | None = None) -> mc.Classifier:
    region = square() if region is None else region
    return mc.Classifier(
        SquareDetector(region),
        input_size=region.shape,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        class_names=["empty", "square"],
        layers=["features"],
    )


def toy_image(region: np.ndarray | None = None) -> np.ndarray:
    """Mid-grey (the dataset mean) with a white square."""
    region = square() if region is None else region
    img = np.full((*region.shape, 3), 0.5, np.float32)
    img[region] = 1.0
    return img


P_SQUARE = float(torch.sigmoid(torch.tensor(18.0)))
P_BLANK = float(torch.sigmoid(torch.tensor(-2.0)))


# ------------------------------------------------------------------ preservation


def test_preservation_robust_and_deletion_of_the_true_evidence():
    clf, img, ev = toy_classifier(), toy_image(), square()
    c = mask_confidences(img, ev, clf, target=1)
    assert c["target"] == 1 and c["held"]
    assert c["original"] == pytest.approx(P_SQUARE, abs=1e-6)
    assert c["masked"] == pytest.approx(P_SQUARE, abs=1e-6)  # mean colour elsewhere: unchanged
    assert c["robust"] == pytest.approx(P_SQUARE, abs=1e-6)  # only the square matters
    assert c["deletion"] == pytest.approx(P_BLANK, abs=1e-4)  # square → mean colour
    assert c["area_fraction"] == pytest.approx(ev.mean())


def test_preservation_of_a_wrong_mask_loses_the_decision():
    clf, img, ev = toy_classifier(), toy_image(), square()
    empty = mask_confidences(img, np.zeros_like(ev), clf, target=1)
    assert not empty["held"] and empty["masked"] == pytest.approx(P_BLANK, abs=1e-4)
    outside = mask_confidences(img, ~ev, clf, target=1)
    assert not outside["held"] and outside["masked"] == pytest.approx(P_BLANK, abs=1e-4)
    assert outside["deletion"] == pytest.approx(P_SQUARE, abs=1e-6)  # the square stays
    half = ev.copy()
    half[8:12] = False  # half of the square kept: logit 10·1 − 2 = 8
    c = mask_confidences(img, half, clf, target=1)
    assert c["held"] and c["masked"] == pytest.approx(float(torch.sigmoid(torch.tensor(8.0))))


def test_mask_confidences_checks_shapes_and_defaults_to_the_prediction():
    clf, img = toy_classifier(), toy_image()
    with pytest.raises(ValueError, match="shape"):
        mask_confidences(img, np.ones((8, 8), bool), clf)
    assert mask_confidences(img, square(), clf)["target"] == 1
    with pytest.raises(ValueError, match="shape"):
        MaskScorer.from_image(img, clf).confidences(np.ones((8, 8), bool))


# ------------------------------------------------------------------ insertion / deletion


def test_insertion_deletion_curves_of_a_perfect_and_a_reversed_map():
    clf, img, ev = toy_classifier(), toy_image(), square()
    scorer = MaskScorer.from_image(img, clf, target=1)
    good = scorer.curves(ev.astype(float), steps=16)
    bad = scorer.curves((~ev).astype(float), steps=16)
    for c in (good, bad):
        assert c["fractions"][0] == 0 and c["fractions"][-1] == 1
        assert c["deletion_curve"][0] == pytest.approx(P_SQUARE, abs=1e-6)  # nothing removed
        assert c["deletion_curve"][-1] == pytest.approx(P_BLANK, abs=1e-4)  # all removed
        assert c["insertion_curve"][0] == pytest.approx(P_BLANK, abs=1e-4)
        assert c["insertion_curve"][-1] == pytest.approx(P_SQUARE, abs=1e-6)
    # the square is 1/16 of the image: the perfect map's deletion curve has collapsed
    # after the first step (1/16) and its insertion curve is at the top there
    assert good["deletion_curve"][1] == pytest.approx(P_BLANK, abs=1e-4)
    assert good["insertion_curve"][1] == pytest.approx(P_SQUARE, abs=1e-4)
    assert good["deletion_auc"] < 0.2 < 0.8 < bad["deletion_auc"]
    assert good["insertion_auc"] > 0.9 > 0.3 > bad["insertion_auc"]
    # the curves are monotone for the perfect ranking
    assert np.all(np.diff(good["deletion_curve"]) <= 1e-6)
    assert np.all(np.diff(good["insertion_curve"]) >= -1e-6)


def test_a_flat_map_ranks_at_random_and_scores_in_between():
    clf, img, ev = toy_classifier(), toy_image(), square()
    scorer = MaskScorer.from_image(img, clf, target=1)
    flat = scorer.curves(np.zeros(ev.shape), steps=16, seed=3)
    good = scorer.curves(ev.astype(float), steps=16)
    bad = scorer.curves((~ev).astype(float), steps=16)
    assert good["insertion_auc"] > flat["insertion_auc"] > bad["insertion_auc"]
    assert good["deletion_auc"] < flat["deletion_auc"] < bad["deletion_auc"]
    with pytest.raises(ValueError):
        scorer.curves(ev.astype(float), steps=0)


# ------------------------------------------------------------------ localisation


def test_overlap_scores_and_equal_area_overlap():
    ref = square(16, 0, 4)  # 16 pixels
    s = overlap_scores(square(16, 0, 2), ref)  # 4 pixels, all inside
    assert s == {"dice": pytest.approx(0.4), "iou": 0.25, "precision": 1.0, "recall": 0.25}
    # a map peaking on the reference's upper half, then its lower half: at equal area
    # (16 pixels) its top pixels are exactly the reference
    heat = np.zeros((16, 16))
    heat[:4, :4] = 1.0
    heat[:2, :4] = 2.0
    heat[10:, 10:] = 0.5
    eq = equal_area_overlap(heat, ref)
    assert eq["iou"] == 1.0 and eq["dice"] == 1.0
    shifted = np.zeros((16, 16))
    shifted[2:6, :4] = 1.0  # half overlap at equal area
    assert equal_area_overlap(shifted, ref)["iou"] == pytest.approx(8 / 24)
    assert threshold_to_area(heat, 0.25).sum() == 64
    with pytest.raises(ValueError):
        equal_area_overlap(heat, np.zeros((4, 4)))


def test_pointing_game():
    ref = square(16, 4, 8)
    heat = np.zeros((16, 16))
    heat[5, 5] = 1.0
    assert pointing_game(heat, ref)
    heat2 = np.zeros((16, 16))
    heat2[10, 10] = 1.0
    assert not pointing_game(heat2, ref)
    heat3 = np.zeros((16, 16))
    heat3[9, 5] = 1.0  # two pixels below the reference
    assert not pointing_game(heat3, ref)
    assert pointing_game(heat3, ref, tolerance=2)
    # a constant map does not "point" at a small reference
    assert not pointing_game(np.ones((16, 16)), ref)
    assert pointing_game(np.ones((16, 16)), np.ones((16, 16), bool))


def test_energy_inside():
    ref = square(10, 0, 5)  # 25 pixels
    assert energy_inside(ref.astype(float), ref) == 1.0
    assert energy_inside((~ref).astype(float), ref) == 0.0
    heat = np.ones((10, 10))  # the minimum is taken off: a constant floor does not count
    heat[ref] = 3.0
    heat[5:, 5:] = 2.0  # 25 pixels at half the height
    assert energy_inside(heat, ref) == pytest.approx(50 / 75)
    # a constant map has no energy: the reference's share of the image
    assert energy_inside(np.zeros((10, 10)), ref) == pytest.approx(0.25)


# ------------------------------------------------------------------ compactness, crispness


def test_compactness_counts_regions():
    m = np.zeros((12, 12), bool)
    m[1:4, 1:4] = True  # 9 px
    m[6:8, 6:8] = True  # 4 px
    m[8, 8] = True  # touches the second one diagonally only
    c8 = compactness(m)
    assert c8["regions"] == 2 and c8["area_fraction"] == pytest.approx(14 / 144)
    assert c8["largest_region_share"] == pytest.approx(9 / 14)
    assert compactness(m, connectivity=1)["regions"] == 3
    assert compactness(np.zeros((4, 4))) == {
        "area_fraction": 0.0,
        "regions": 0,
        "largest_region_share": 0.0,
    }


def test_crispness():
    assert crispness(square().astype(float)) == 1.0
    assert crispness(square().astype(float) * 5 + 2) == 1.0  # scale-free
    ramp = np.tile(np.linspace(0, 1, 1001), (3, 1))
    assert crispness(ramp) == pytest.approx(1 / 3, abs=1e-3)
    half = np.zeros((4, 4))
    half[0, 0], half[0, 1] = 0.0, 1.0
    half[1:] = 0.5
    half[0, 2:] = 0.5
    assert crispness(half) == pytest.approx(2 / 16)  # 14 of 16 pixels at the mid-value
    assert crispness(np.full((4, 4), 0.7)) == 0.0  # a constant map says nothing
    n = normalise_map(np.array([2.0, 4.0, 3.0]))
    assert n.dtype == np.float32 and list(n) == [0.0, 1.0, 0.5]


# ------------------------------------------------------------------ sanity


def test_blur_measures_the_edge_not_the_empty_background():
    sq = square(64, 16, 48).astype(float)
    assert blur(sq) == 0.0
    assert blur(sq * 3 + 1) == 0.0
    ramp = np.tile(np.linspace(0, 1, 1001), (3, 1))
    assert blur(ramp) == pytest.approx(0.8 / 0.5, abs=0.01)
    from scipy import ndimage

    soft = ndimage.uniform_filter(sq, 9)  # the same square with 9-px soft edges
    wide = ndimage.uniform_filter(sq, 25)
    assert 0 < blur(soft) < blur(wide)
    # zero-padding the map (a larger empty background) does not change it
    assert blur(np.pad(soft, 100)) == pytest.approx(blur(soft))
    assert np.isnan(blur(np.ones((4, 4))))


def test_randomise_top_layers_copies_and_reinitialises_only_the_top():
    clf = mc.demo_classifier()
    before = {k: v.clone() for k, v in clf.module.state_dict().items()}
    assert parameterised_modules(clf.module) == [
        "block1.0",
        "block2.0",
        "block3.0",
        "block4.0",
        "fc",
    ]
    rnd = randomise_top_layers(clf, n_layers=2, seed=0)
    after = clf.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # shipped model untouched
    new = rnd.module.state_dict()
    for k in before:
        same = torch.equal(before[k], new[k])
        assert same == (not k.startswith(("fc.", "block4.0."))), k
    assert rnd.class_names == clf.class_names and rnd.layers == clf.layers
    assert rnd.input_size == clf.input_size and rnd.mean == clf.mean
    assert not any(p.requires_grad for p in rnd.module.parameters())
    again = randomise_top_layers(clf, n_layers=2, seed=0)  # reproducible
    assert all(torch.equal(v, again.module.state_dict()[k]) for k, v in new.items())
    img, _ = mc.synthetic_tile(30_000, 1)
    assert not np.allclose(clf.predict_proba(img), rnd.predict_proba(img))
    with pytest.raises(ValueError):
        randomise_top_layers(clf, names=["nonexistent"])


def test_map_similarity():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    same = map_similarity(a, a)
    assert same["spearman"] == pytest.approx(1.0)
    assert same["ssim"] == pytest.approx(1.0)
    assert same["iou_top"] == 1.0
    # a monotone transform keeps the ranking: Spearman and the top pixels do not change
    mono = map_similarity(a, a**3)
    assert mono["spearman"] == pytest.approx(1.0) and mono["iou_top"] == 1.0
    assert map_similarity(a, -a)["spearman"] == pytest.approx(-1.0)
    other = map_similarity(a, rng.random((32, 32)))
    assert abs(other["spearman"]) < 0.1 and other["ssim"] < 0.2 and other["iou_top"] < 0.2
    assert map_similarity(a, np.zeros((32, 32)))["spearman"] == 0.0  # no ranking
    with pytest.raises(ValueError):
        map_similarity(a, np.zeros((8, 8)))
