"""The blind held-out zoo entries (``zoo.BLIND``): registered, loading, sane cases.

Classifier and data checks only - no explanation is run here.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch

from napari_medcam import Classifier, zoo
from napari_medcam.zoo import (
    ct,
    cyto,
    dermo,
    fish,
    frozen_head,
    hne_multifocal,
    malaria,
    swin_like,
    vit_cls,
    vit_registers,
)
from napari_medcam.zoo._common import SEED0

N_CASES = 12
ALL_BLIND = zoo.BLIND
CHANNELS = {"ct-nodule": 1}  # greyscale; every other blind entry is RGB


@pytest.fixture(scope="module")
def classifiers() -> dict[str, Classifier]:
    return {name: zoo.load(name) for name in ALL_BLIND}


@pytest.fixture(scope="module")
def eval_cases() -> dict[str, list[zoo.ZooCase]]:
    return {name: zoo.cases(name, n=N_CASES, split="eval") for name in ALL_BLIND}


def _probs(clf: Classifier, images: list[np.ndarray]) -> np.ndarray:
    unit = np.stack([clf.to_unit_range(im) for im in images])
    x = clf.normalise(torch.from_numpy(unit).permute(0, 3, 1, 2))
    with torch.no_grad():
        return torch.softmax(clf.module(x), 1).numpy()


def test_blind_entries_are_held_out():
    assert zoo.BLIND[:4] == ("malaria-tiny", "dermo-pigment", "fish-her2", "ct-nodule")
    assert zoo.BLIND[4:8] == zoo.TRANSFORMERS  # issue 22, docs/zoo.md round 5
    assert zoo.BLIND[8:] == zoo.REDUNDANT == ("hne-multifocal", "cyto-atypia")  # issue 20
    transformers = (vit_cls, vit_registers, swin_like, frozen_head)
    for name in zoo.BLIND:
        assert name in zoo.HELD_OUT and name not in zoo.TUNING
        assert zoo.MODULES[name] in (malaria, dermo, fish, ct, *transformers, hne_multifocal, cyto)
        entry = zoo.ZOO[name]
        assert not entry.tuning
        assert entry.heldout_accuracy is not None and entry.heldout_accuracy >= 0.9
        assert f"{entry.heldout_accuracy:.3f}" in zoo.MODULES[name].__doc__


@pytest.mark.parametrize("name", ALL_BLIND)
def test_blind_entry_loads_frozen(name, classifiers):
    entry, clf = zoo.ZOO[name], classifiers[name]
    assert tuple(clf.class_names) == entry.class_names
    assert clf.input_size == entry.input_size == (128, 128)
    assert clf.channels == CHANNELS.get(name, 3)
    assert not any(p.requires_grad for p in clf.module.parameters())
    assert not clf.module.training
    weights = resources.files("napari_medcam.zoo") / "weights" / f"{name}.pt"
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    assert len(weights.read_bytes()) < 1024 * 1024
    assert ckpt["heldout_accuracy"] == pytest.approx(entry.heldout_accuracy, abs=5e-4)


@pytest.mark.parametrize("name", ALL_BLIND)
def test_blind_eval_cases_are_positive_within_the_stated_size(name, eval_cases):
    entry, cases = zoo.ZOO[name], eval_cases[name]
    assert len(cases) == N_CASES
    for case in cases:
        assert case.label == case.target == entry.target == 1
        channels = CHANNELS.get(name, 3)
        shape = (128, 128) if channels == 1 else (128, 128, channels)
        assert case.image.dtype == np.uint8 and case.image.shape == shape
        assert case.reference.dtype == bool and case.reference.shape == (128, 128)
        assert 0 < case.reference.mean() <= entry.max_reference_fraction
    again = zoo.cases(name, n=2, split="eval")
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, cases[:2]))
    assert all(np.array_equal(a.reference, b.reference) for a, b in zip(again, cases[:2]))


@pytest.mark.parametrize("name", ALL_BLIND)
def test_blind_classifier_predicts_the_target_on_most_eval_cases(name, classifiers, eval_cases):
    pred = _probs(classifiers[name], [c.image for c in eval_cases[name]]).argmax(1)
    assert np.mean(pred == zoo.ZOO[name].target) >= 0.8


@pytest.mark.parametrize("name", ALL_BLIND)
def test_blind_classifier_calls_eval_negatives_negative(name, classifiers):
    mod = zoo.MODULES[name]
    negatives = [mod.sample(SEED0["eval"] + i, 0, "eval") for i in range(8)]
    assert all(not ref.any() for _, ref in negatives)
    pred = _probs(classifiers[name], [img for img, _ in negatives]).argmax(1)
    assert np.mean(pred == 0) >= 0.8


@pytest.mark.parametrize("name", ALL_BLIND)
def test_blind_splits_are_disjoint(name):
    mod = zoo.MODULES[name]
    train = mod.sample(SEED0["train"], 1, "train")[0]
    ev = mod.sample(SEED0["eval"], 1, "eval")[0]
    tune = mod.sample(SEED0["tune"], 1, "tune")[0]
    assert not np.array_equal(train, ev) and not np.array_equal(tune, ev)
    with pytest.raises(ValueError):
        mod.sample(0, len(zoo.ZOO[name].class_names))  # one past the last class


def test_malaria_evidence_is_tiny(eval_cases):
    for case in eval_cases["malaria-tiny"]:
        assert case.reference.sum() >= 5
        assert case.reference.mean() <= 0.005
    assert zoo.ZOO["malaria-tiny"].max_reference_fraction == 0.005


def test_dermo_lesion_covers_two_to_six_percent(eval_cases):
    for case in eval_cases["dermo-pigment"]:
        assert 0.019 <= case.reference.mean() <= 0.06
        # the reference is the atypical lesion: darker inside than the skin around it
        grey = case.image.mean(-1)
        assert grey[case.reference].mean() < np.median(grey[~case.reference]) - 40
