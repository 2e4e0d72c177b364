"""The round-3 fresh held-out zoo entries (``zoo.FRESH2``): registered, loading, sane cases.

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
from napari_medcam.zoo import ct, fish
from napari_medcam.zoo._common import SEED0

N_CASES = 12


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch):
    """Any explanation or saliency run on these entries fails the test."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the explanation engine must never run on the FRESH2 entries")

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
    return {name: zoo.load(name) for name in zoo.FRESH2}


@pytest.fixture(scope="module")
def eval_cases() -> dict[str, list[zoo.ZooCase]]:
    return {name: zoo.cases(name, n=N_CASES, split="eval") for name in zoo.FRESH2}


def _probs(clf: Classifier, images: list[np.ndarray]) -> np.ndarray:
    unit = np.stack([clf.to_unit_range(im) for im in images])
    x = clf.normalise(torch.from_numpy(unit).permute(0, 3, 1, 2))
    with torch.no_grad():
        return torch.softmax(clf.module(x), 1).numpy()


def test_fresh2_entries_are_held_out():
    assert zoo.FRESH2 == ("fish-her2", "ct-nodule")
    assert zoo.FRESH == ("malaria-tiny", "dermo-pigment")  # round 2's, unchanged
    assert not set(zoo.FRESH2) & (set(zoo.FRESH) | set(zoo.SEEN))
    for name in zoo.FRESH2:
        assert name in zoo.HELD_OUT and name not in zoo.TUNING
        assert zoo.MODULES[name] in (fish, ct)
        entry = zoo.ZOO[name]
        assert not entry.tuning
        assert entry.heldout_accuracy is not None and entry.heldout_accuracy >= 0.97
        assert f"{entry.heldout_accuracy:.3f}" in zoo.MODULES[name].__doc__
        assert name in zoo.__doc__


@pytest.mark.parametrize("module", [fish, ct])
def test_fresh2_modules_do_not_touch_the_engine(module):
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


@pytest.mark.parametrize("name", zoo.FRESH2)
def test_fresh2_entry_loads_frozen(name, classifiers):
    entry, clf = zoo.ZOO[name], classifiers[name]
    assert tuple(clf.class_names) == entry.class_names
    assert clf.input_size == entry.input_size == (128, 128)
    assert clf.channels == (3 if name == "fish-her2" else 1)
    assert not any(p.requires_grad for p in clf.module.parameters())
    assert not clf.module.training
    weights = resources.files("napari_medcam.zoo") / "weights" / f"{name}.pt"
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    assert len(weights.read_bytes()) < 1024 * 1024
    assert ckpt["heldout_accuracy"] == pytest.approx(entry.heldout_accuracy, abs=5e-4)
    assert min(ckpt["heldout_per_class"]) >= 0.95


def test_fresh2_normalisation(classifiers):
    # fish-her2: the training set's own per-channel mean/std (dark field, DAPI blue)
    clf = classifiers["fish-her2"]
    assert len(clf.mean) == 3 and clf.mean[2] > clf.mean[0] and max(clf.mean) < 0.4
    assert tuple(clf.mean) != pytest.approx((0.485, 0.456, 0.406))
    # ct-nodule: one fixed scalar window, (x - 0.4) / 0.25
    clf = classifiers["ct-nodule"]
    assert list(clf.mean) == pytest.approx([0.4]) and list(clf.std) == pytest.approx([0.25])


@pytest.mark.parametrize("name", zoo.FRESH2)
def test_fresh2_eval_cases_are_positive_within_the_stated_size(name, eval_cases):
    entry, cases = zoo.ZOO[name], eval_cases[name]
    shape = (128, 128, 3) if name == "fish-her2" else (128, 128)
    assert len(cases) == N_CASES
    for case in cases:
        assert case.label == case.target == entry.target == 1
        assert case.image.dtype == np.uint8 and case.image.shape == shape
        assert case.reference.dtype == bool and case.reference.shape == (128, 128)
        assert 0 < case.reference.mean() <= entry.max_reference_fraction
    again = zoo.cases(name, n=2, split="eval")
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, cases[:2]))
    assert all(np.array_equal(a.reference, b.reference) for a, b in zip(again, cases[:2]))


@pytest.mark.parametrize("name", zoo.FRESH2)
def test_fresh2_classifier_predicts_the_target_on_most_eval_cases(name, classifiers, eval_cases):
    pred = _probs(classifiers[name], [c.image for c in eval_cases[name]]).argmax(1)
    assert np.mean(pred == zoo.ZOO[name].target) >= 0.8


@pytest.mark.parametrize("name", zoo.FRESH2)
def test_fresh2_classifier_calls_eval_negatives_negative(name, classifiers):
    mod = zoo.MODULES[name]
    negatives = [mod.sample(SEED0["eval"] + i, 0, "eval") for i in range(8)]
    assert all(not ref.any() for _, ref in negatives)
    pred = _probs(classifiers[name], [img for img, _ in negatives]).argmax(1)
    assert np.mean(pred == 0) >= 0.8


@pytest.mark.parametrize("name", zoo.FRESH2)
def test_fresh2_splits_are_disjoint(name):
    mod = zoo.MODULES[name]
    train = mod.sample(SEED0["train"], 1, "train")[0]
    ev = mod.sample(SEED0["eval"], 1, "eval")[0]
    tune = mod.sample(SEED0["tune"], 1, "tune")[0]
    assert not np.array_equal(train, ev) and not np.array_equal(tune, ev)
    with pytest.raises(ValueError):
        mod.sample(0, 2)


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
