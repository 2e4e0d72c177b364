"""Per-tile verdicts: one definition of valid, a slide valid when enough of its explained
tiles are (``valid_share``), failed tiles kept out of the mask, summaries of what the user
sees."""

import dataclasses
import json

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.engine import image as image_module
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.tile_result import Scores, TileResult
from napari_medcam.engine.verdict import overall, tile_verdict

QUICK = MedCAMConfig.fast().capped(15)


@pytest.fixture(scope="module")
def clf():
    return mc.demo_classifier()


def _facts(**changes):
    """A tile's facts that pass every check, with ``changes`` applied."""
    scores = {"masked": 0.9, "robust": 0.8, "deletion": 0.2, "masked_pred": 1}
    scores.update((k, changes.pop(k)) for k in list(changes) if k in scores)
    tile = TileResult(target=1, probabilities=[0.05, 0.95], found_valid=True, area=0.1)
    tile.scores = Scores(masked_probabilities=[0.1, 0.9], **scores)
    return dataclasses.replace(tile, **changes)


def test_one_definition_of_valid():
    cfg = MedCAMConfig.fast()
    assert tile_verdict(_facts(), cfg, "lesion") == ""
    assert "no neutral" in tile_verdict(_facts(problem="no neutral absence"), cfg, "lesion")
    assert "decision lost" in tile_verdict(_facts(masked_pred=0), cfg, "lesion")
    assert "not robust" in tile_verdict(_facts(robust=0.3), cfg, "lesion")
    assert "empty mask" in tile_verdict(_facts(area=0.0), cfg, "lesion")
    assert "covers 95 %" in tile_verdict(_facts(area=0.95), cfg, "lesion")
    assert overall([True, True]) and not overall([True, False]) and not overall([])


def test_a_share_of_valid_tiles_is_enough_but_never_none():
    assert not overall([True] * 8 + [False] * 2, 0.9)  # 80 % < 90 %
    assert overall([True] * 9 + [False], 0.9)  # 90 %: just enough
    assert overall([True, False], 0.5) and not overall([True, False], 0.9)
    assert not overall([False], 0.5) and not overall([], 0.5)
    assert MedCAMConfig().valid_share == 0.9 and MedCAMConfig(valid_share=1).valid_share == 1
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="valid_share must be in"):
            MedCAMConfig(valid_share=bad)


def test_a_fallback_mask_that_never_passed_is_invalid_even_if_it_scores_well():
    cfg = MedCAMConfig.fast()
    reason = tile_verdict(_facts(found_valid=False), cfg, "lesion")
    assert reason.startswith("no mask passed the optimisation's test")
    both = tile_verdict(_facts(found_valid=False, masked_pred=0), cfg, "lesion")
    assert "no mask passed" in both and "decision lost" in both
    window = (slice(0, 224), slice(192, 416))
    record = _facts(found_valid=False, window=window, reason=reason).as_record()
    assert record["window"] == [0, 192, 224, 416]
    assert not record["valid"] and record["status"] == reason


def test_untiled_fallback_is_reported_invalid_and_keeps_its_mask(clf, monkeypatch):
    real = image_module.optimise_masks

    def never_passes(*args, **kwargs):
        results = yield from real(*args, **kwargs)
        return [dataclasses.replace(r, found_valid=False) for r in results]

    monkeypatch.setattr(image_module, "optimise_masks", never_passes)
    img, _ = mc.synthetic_tile(8000, 1)
    exp = mc.explain(img, clf, config=QUICK, device="cpu")
    assert not exp.valid
    assert exp.status.startswith("no mask passed the optimisation's test")
    # one tile: the user sees the mask it found, flagged invalid with the reason
    assert exp.mask.shape == img.shape[:2]
    assert exp.area_fraction == pytest.approx(float(exp.mask.mean()))
    (verdict,) = exp.tile_verdicts
    assert verdict["window"] == [0, 0, 224, 224] and not verdict["valid"]
    assert verdict["status"] == exp.status


@pytest.mark.parametrize("share", [0.9, 0.5])
def test_a_failed_tile_makes_the_slide_invalid_and_stays_out_of_the_mask(clf, monkeypatch, share):
    real = image_module.evaluate_mask
    calls = []

    def first_tile_fails(*args, **kwargs):  # the first explained tile loses its decision
        ev = real(*args, **kwargs)
        calls.append(ev)
        if len(calls) == 1:
            ev = {**ev, "masked_pred": 1 - args[3]}
        return ev

    monkeypatch.setattr(image_module, "evaluate_mask", first_tile_fails)
    left, _ = mc.synthetic_tile(8000, 1)
    right, _ = mc.synthetic_tile(8001, 1)
    canvas = np.concatenate([left, right], axis=1)  # 224 × 448: three overlapping tiles
    config = dataclasses.replace(QUICK, valid_share=share)
    exp = mc.explain(canvas, clf, target="lesion", config=config, device="cpu")
    verdicts = exp.tile_verdicts
    assert exp.tiles == 3 and len(verdicts) >= 2
    failed, rest = verdicts[0], verdicts[1:]
    assert not failed["valid"] and failed["status"].startswith("decision lost on the binary mask")
    n_ok = sum(v["valid"] for v in verdicts)
    # 1 of 2 (or 2 of 3) tiles valid: not enough at 0.9, enough at 0.5
    assert 0.5 <= n_ok / len(verdicts) < 0.9
    assert exp.valid == (share == 0.5)
    assert exp.status.startswith(f"{n_ok} of {len(verdicts)} 'lesion' tiles valid (3 tiles in all)")
    assert "first problem: decision lost" in exp.status
    y0, x0, y1, x1 = failed["window"]
    assert not exp.mask[y0:y1, x0:x1].any() and not exp.soft_mask[y0:y1, x0:x1].any()
    # the summary describes the mask shown: its area, the valid tiles' confidences
    assert exp.area_fraction == pytest.approx(float(exp.mask.mean()))
    valid = [v for v in rest if v["valid"]]
    assert valid, verdicts  # the other lesion tile is explained validly
    assert exp.mask.any()
    for key in ("original", "masked", "robust"):
        mean = np.mean([v[key] for v in valid])
        assert getattr(exp, f"{key}_confidence") == pytest.approx(mean, abs=1e-5)
    summary = exp.summary()
    assert summary["tile_verdicts"] == verdicts
    json.dumps(summary)  # JSON-ready
    base = {"window", "target", "original", "masked", "robust", "area", "valid", "status"}
    readability = {"regions", "context_keeps", "trim_keeps"}  # where a mask was found
    assert all(set(v) in (base, base | readability) for v in verdicts)


def _slice_exp(valid, explained=True, status="valid"):
    plane = np.zeros((4, 6), bool)
    exp = mc.Explanation.not_explained(
        target=1,
        probabilities=[0.1, 0.9],
        status=status,
        mask=plane | valid,
        soft_mask=plane.astype(np.float32),
        class_name="lesion",
        seconds=0.0,
    )
    if not explained:
        return exp
    reason = "" if valid else "decision lost on the binary mask"
    record = _facts(window=(slice(0, 4), slice(0, 6)), reason=reason).as_record()
    return dataclasses.replace(exp, valid=valid, status=status, tile_verdicts=[record])


def test_a_volume_is_valid_only_when_every_explained_slice_is():
    from napari_medcam.engine.volumes import SliceExplanations

    def volume(*exps):
        mask = np.stack([e.mask for e in exps])
        return SliceExplanations(list(exps), mask, mask.astype(np.float32), 0, 1, "lesion", 0.0)

    skipped = _slice_exp(False, explained=False, status="slice classified 'normal': not explained")
    mixed = volume(_slice_exp(True), _slice_exp(False, status="decision lost"), skipped)
    whole = mixed.as_explanation()
    assert not whole.valid
    assert whole.status.startswith("1 of 2 'lesion' slices valid (3 slices in all")
    assert "first problem: decision lost" in whole.status and "1 not explained" in whole.status
    assert [v["window"] for v in whole.tile_verdicts] == [[0, 0, 0, 1, 4, 6], [1, 0, 0, 2, 4, 6]]
    assert [v["valid"] for v in whole.tile_verdicts] == [True, False]
    assert [v["slice"] for v in whole.tile_verdicts] == [0, 1]
    halves = dataclasses.replace(
        mixed,
        explanations=[
            dataclasses.replace(e, config={"valid_share": 0.5}) for e in mixed.explanations
        ],
    )
    assert halves.as_explanation().valid  # 1 of 2 slices valid is enough at 0.5
    good = volume(_slice_exp(True), skipped, _slice_exp(True)).as_explanation()
    assert good.valid and good.status.startswith("2 of 2 'lesion' slices valid")
    assert not volume(skipped).as_explanation().valid  # nothing explained: nothing valid
