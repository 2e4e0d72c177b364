"""The classifier zoo: entries load offline, cases are positive with sane references."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch

from napari_medcam import Classifier, zoo

NAMES = sorted(zoo.ZOO)
N_CASES = 12


@pytest.fixture(scope="module")
def classifiers() -> dict[str, Classifier]:
    return {name: zoo.load(name) for name in NAMES}


@pytest.fixture(scope="module")
def eval_cases() -> dict[str, list[zoo.ZooCase]]:
    return {name: zoo.cases(name, n=N_CASES, split="eval") for name in NAMES}


def _probs(clf: Classifier, images: list[np.ndarray]) -> np.ndarray:
    unit = np.stack([clf.to_unit_range(im) for im in images])
    x = clf.normalise(torch.from_numpy(unit).permute(0, 3, 1, 2))
    with torch.no_grad():
        return torch.softmax(clf.module(x), 1).numpy()


def test_split_is_fixed_and_disjoint():
    assert zoo.TUNING == ("hne-modulelist", "fluo-stages")
    assert len(zoo.ZOO) >= 6
    assert not set(zoo.TUNING) & set(zoo.HELD_OUT)
    assert set(zoo.TUNING) | set(zoo.HELD_OUT) == set(zoo.ZOO)
    for name, entry in zoo.ZOO.items():
        assert entry.name == name
        assert entry.tuning == (name in zoo.TUNING)


@pytest.mark.parametrize("name", NAMES)
def test_entry_loads_frozen_with_its_classes(name, classifiers):
    entry, clf = zoo.ZOO[name], classifiers[name]
    assert isinstance(clf, Classifier)
    assert tuple(clf.class_names) == entry.class_names
    assert 0 <= entry.target < clf.num_classes
    assert clf.input_size == entry.input_size
    assert not any(p.requires_grad for p in clf.module.parameters())
    assert not clf.module.training
    weights = resources.files("napari_medcam.zoo") / "weights" / f"{name}.pt"
    assert weights.is_file() and len(weights.read_bytes()) < 1024 * 1024


@pytest.mark.parametrize("name", NAMES)
def test_eval_cases_are_positive_with_a_small_reference(name, eval_cases):
    entry, cases = zoo.ZOO[name], eval_cases[name]
    assert len(cases) == N_CASES
    for case in cases:
        assert case.name == name
        assert case.label == case.target == entry.target
        assert case.image.dtype == np.uint8
        assert case.image.shape[:2] == entry.input_size
        assert case.reference.dtype == bool and case.reference.shape == entry.input_size
        assert 0 < case.reference.mean() <= entry.max_reference_fraction
    # deterministic
    again = zoo.cases(name, n=2, split="eval")
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, cases[:2]))


@pytest.mark.parametrize("name", NAMES)
def test_classifier_predicts_the_target_on_most_eval_cases(name, classifiers, eval_cases):
    clf, cases = classifiers[name], eval_cases[name]
    pred = _probs(clf, [c.image for c in cases]).argmax(1)
    assert np.mean(pred == zoo.ZOO[name].target) >= 0.8


def test_tune_and_eval_splits_differ():
    for name in zoo.TUNING:
        tune = zoo.cases(name, n=3, split="tune")
        ev = zoo.cases(name, n=3, split="eval")
        assert all(not np.array_equal(t.image, e.image) for t in tune for e in ev)
    with pytest.raises(ValueError):
        zoo.cases("hne-modulelist", split="train")
    with pytest.raises(KeyError):
        zoo.load("no-such-entry")


def test_mitosis_evidence_is_tiny(eval_cases):
    for case in eval_cases["mitosis-tiny"]:
        assert case.reference.mean() <= 0.005


def test_resnet_meanpos_calls_the_mean_input_tumour(classifiers):
    clf = classifiers["resnet-meanpos"]
    assert clf.class_names == ["normal", "tumour", "inflammation"]
    with torch.no_grad():
        out = clf.module(torch.zeros((1, clf.channels, *clf.input_size)))
    assert int(out.argmax(1)) == zoo.ZOO["resnet-meanpos"].target == 1
    # the H&E dataset-mean colour as a flat tile reads tumour too (deliberately)
    flat = np.full((*clf.input_size, 3), (219, 158, 194), np.uint8)
    assert int(_probs(clf, [flat]).argmax(1)[0]) == 1


def test_fluorescence_is_dark_field(eval_cases):
    for case in eval_cases["fluo-stages"]:
        assert np.median(case.image) < 30


def test_phantom_is_grey_one_channel(classifiers, eval_cases):
    assert classifiers["phantom-functional"].channels == 1
    assert all(c.image.ndim == 2 for c in eval_cases["phantom-functional"])
