"""Blind held-out zoo entries checked with the engine locked out: registered, loading, sane
cases.

Classifier and data checks only - no explanation is run here, and the entry points
into the explanation engine (explain, iter_explain, the saliency maps) are made to
fail inside every test of this module.
"""

from __future__ import annotations

import ast
import sys
from importlib import resources

import numpy as np
import pytest
import torch

import napari_medcam
from napari_medcam import Classifier, zoo
from napari_medcam.zoo import ct, cyto, fish, hne_multifocal

N_CASES = 12
#: entries whose data are checked here without the explanation engine ever running
ENTRIES = ("fish-her2", "ct-nodule", *zoo.REDUNDANT)


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch):
    """Any explanation or saliency run on these entries fails the test."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the explanation engine must never run in these data checks")

    import napari_medcam.engine as engine
    import napari_medcam.engine.saliency as saliency

    explain_module = sys.modules["napari_medcam.engine.explain"]
    for owner in (napari_medcam, engine, explain_module):
        for name in ("explain", "iter_explain"):
            monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setattr(sys.modules["napari_medcam.engine.image"], "_explain_batch", refuse)
    for name in dir(saliency):
        if not name.startswith("_") and getattr(getattr(saliency, name), "__module__", "") == (
            saliency.__name__
        ):
            monkeypatch.setattr(saliency, name, refuse)


@pytest.fixture(scope="module")
def classifiers() -> dict[str, Classifier]:
    return {name: zoo.load(name) for name in ENTRIES}


@pytest.fixture(scope="module")
def eval_cases() -> dict[str, list[zoo.ZooCase]]:
    return {name: zoo.cases(name, n=N_CASES, split="eval") for name in ENTRIES}


def test_entries_are_blind_and_held_out():
    assert set(ENTRIES) <= set(zoo.BLIND) and not set(ENTRIES) & set(zoo.SEEN)
    for name in ENTRIES:
        assert name in zoo.HELD_OUT and name not in zoo.TUNING
        assert zoo.MODULES[name] in (fish, ct, hne_multifocal, cyto)
        entry = zoo.ZOO[name]
        assert not entry.tuning
        assert entry.heldout_accuracy is not None and entry.heldout_accuracy >= 0.97
        assert f"{entry.heldout_accuracy:.3f}" in zoo.MODULES[name].__doc__
        assert name in zoo.__doc__


@pytest.mark.parametrize("module", [fish, ct, hne_multifocal, cyto])
def test_modules_do_not_touch_the_engine(module):
    assert napari_medcam.explain.__name__ == "refuse"  # the guard above is in place
    tree = ast.parse(
        resources.files("napari_medcam.zoo")
        .joinpath(module.__name__.rsplit(".", 1)[1] + ".py")
        .read_text(encoding="utf-8")
    )
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    banned = ("napari_medcam.engine", "napari_medcam.evaluation", "napari_medcam.plugin")
    assert not [m for m in imported if m and m.startswith(banned)]


@pytest.mark.parametrize("name", ENTRIES)
def test_each_class_is_recognised(name):
    """Loading, freezing and overall accuracy are checked with every blind entry
    (tests/test_zoo_blind.py); these checkpoints also record each class's."""
    weights = resources.files("napari_medcam.zoo") / "weights" / f"{name}.pt"
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    assert min(ckpt["heldout_per_class"]) >= 0.95


def test_normalisation(classifiers):
    # fish-her2: the training set's own per-channel mean/std (dark field, DAPI blue)
    clf = classifiers["fish-her2"]
    assert len(clf.mean) == 3 and clf.mean[2] > clf.mean[0] and max(clf.mean) < 0.4
    assert tuple(clf.mean) != pytest.approx((0.485, 0.456, 0.406))
    # ct-nodule: one fixed scalar window, (x - 0.4) / 0.25
    clf = classifiers["ct-nodule"]
    assert list(clf.mean) == pytest.approx([0.4]) and list(clf.std) == pytest.approx([0.25])


def test_fish_evidence_is_tiny_and_red(eval_cases):
    assert zoo.ZOO["fish-her2"].max_reference_fraction == 0.005
    for case in eval_cases["fish-her2"]:
        assert case.reference.sum() >= 8
        assert case.reference.mean() <= 0.005
        img = case.image.astype(float)
        # the amplified red spots: far redder than the tile, in the dark field
        assert img[case.reference, 0].mean() > img[~case.reference, 0].mean() + 60
        assert np.median(img[..., 0]) < 40


def test_ct_nodule_is_a_bright_spot_in_a_dark_lung(eval_cases):
    from scipy import ndimage

    assert zoo.ZOO["ct-nodule"].max_reference_fraction == 0.012
    for case in eval_cases["ct-nodule"]:
        assert 0.0015 <= case.reference.mean() <= 0.012
        img = case.image.astype(float)
        ring = ndimage.binary_dilation(case.reference, iterations=4) & ~ndimage.binary_dilation(
            case.reference, iterations=1
        )
        # solid (soft-tissue bright at the lung window), in a lung: at least a quarter of
        # the ring around it is dark parenchyma (the rest may be the vessels it touches)
        assert img[case.reference].mean() > 180
        assert np.percentile(img[ring], 25) < img[case.reference].mean() - 60


# ----------------------------------------- round 6 (docs/zoo.md): issue 20's stability test


def test_round6_discovery_finds_conv_feature_maps(classifiers):
    """Layer discovery (no explanation) picks feature maps inside each layout."""
    layers = classifiers["hne-multifocal"].layers
    assert len(layers) >= 2 and all(name.startswith("stages.") for name in layers)
    layers = classifiers["cyto-atypia"].layers
    assert len(layers) >= 2 and all(
        name.startswith(("blocks.", "conv_head", "bn2")) for name in layers
    )
    assert sum(name.startswith("blocks.") for name in layers) >= 2


def _foci(reference: np.ndarray) -> int:
    from scipy import ndimage

    return ndimage.label(ndimage.binary_dilation(reference, iterations=6))[1]


def test_hne_multifocal_has_two_to_four_separate_dark_foci(eval_cases):
    assert zoo.ZOO["hne-multifocal"].max_reference_fraction == hne_multifocal.MAX_FRACTION
    for case in eval_cases["hne-multifocal"]:
        assert 2 <= _foci(case.reference) <= 4
        grey = case.image.astype(float).mean(-1)
        assert grey[case.reference].mean() < np.median(grey[~case.reference]) - 70
    # training positives may hold a single focus: one focus alone is enough
    train = [hne_multifocal.sample(100_000 + i, 1, "train")[1] for i in range(12)]
    assert min(_foci(ref) for ref in train) == 1


def test_cyto_atypical_nuclei_are_large_and_dark(eval_cases):
    from scipy import ndimage

    assert zoo.ZOO["cyto-atypia"].max_reference_fraction == cyto.MAX_FRACTION
    for case in eval_cases["cyto-atypia"]:
        labels, n = ndimage.label(case.reference)
        assert 1 <= n <= 3
        assert np.bincount(labels.ravel())[1:].min() >= 50  # radius ≥ 4.5 px
        grey = case.image.astype(float).mean(-1)
        assert grey[case.reference].mean() < np.median(grey[~case.reference]) - 100
