"""Med-CAM's promise on tiles with planted evidence: minimal, sufficient, in the right place."""

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import napari_medcam as mc

FRESH_SEEDS = range(7000, 7008)  # the demo classifier was trained on seeds ≥ 100 000
SHORT = mc.MedCAMConfig.fast(steps=25, min_steps=5)


@pytest.fixture(scope="module")
def clf():
    return mc.demo_classifier()


@pytest.fixture(scope="module")
def positives(clf):
    out = []
    for seed in FRESH_SEEDS:
        img, evidence = mc.synthetic_tile(seed, 1)
        out.append((img, evidence, mc.explain(img, clf, device="cpu")))
    return out


def test_sufficient_decision_holds_on_every_binary_mask(positives):
    for _, _, exp in positives:
        assert exp.valid, exp.status
        assert exp.class_name == "lesion"
        assert int(np.argmax(exp.masked_probabilities)) == exp.target
    assert np.mean([e.masked_confidence for *_, e in positives]) >= 0.9
    assert np.mean([e.robust_confidence for *_, e in positives]) >= 0.8


def test_minimal_mask_no_larger_than_planted_evidence(positives):
    mask_area = np.mean([e.area_fraction for *_, e in positives])
    truth_area = np.mean([ev.mean() for _, ev, _ in positives])
    assert 0 < mask_area <= truth_area


def test_mask_lies_in_planted_evidence(positives):
    inside = total = 0
    for _, evidence, exp in positives:
        near = ndimage.binary_dilation(evidence, iterations=2)
        inside += int((exp.mask & near).sum())
        total += int(exp.mask.sum())
    assert inside / total >= 0.85


def test_result_fields_and_provenance(positives):
    img, _, exp = positives[0]
    assert exp.mask.shape == img.shape[:2] and exp.mask.dtype == bool
    assert (
        exp.soft_mask.dtype == np.float32 and 0 <= exp.soft_mask.min() <= exp.soft_mask.max() <= 1
    )
    assert exp.area_fraction == pytest.approx(exp.mask.mean())
    assert exp.seconds > 0 and exp.steps > 0 and exp.history
    assert set(exp.history[0]) >= {"act", "kl", "ce", "area", "bin", "tv", "rob", "masked"}
    assert exp.provenance["classifier"] == "demo-tissue"
    assert exp.provenance["device"] == "cpu"
    assert exp.config["steps"] == mc.MedCAMConfig.fast().steps
    assert exp.deletion_confidence < exp.original_confidence


def test_negative_tile_gets_an_honest_answer(clf):
    img, _ = mc.synthetic_tile(7100, 0)
    exp = mc.explain(img, clf, config=SHORT)
    assert exp.class_name == "normal"
    # "normal" is the absence of a lesion: either nothing reads as its absence, or only
    # (almost) the whole tile keeps it — never a small "valid" mask
    assert not exp.valid
    assert "no neutral" in exp.status or "no minimal evidence" in exp.status


def test_same_seed_same_mask(clf):
    img, _ = mc.synthetic_tile(7200, 1)
    a = mc.explain(img, clf, config=SHORT.replace(seed=3))
    b = mc.explain(img, clf, config=SHORT.replace(seed=3))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.soft_mask, b.soft_mask)


def test_cancel_stops_at_the_next_step(clf):
    img, _ = mc.synthetic_tile(7300, 1)
    cancel = threading.Event()
    seen = []

    def progress(event):
        seen.append(event.step)
        if event.step == 3:
            cancel.set()

    with pytest.raises(mc.ExplanationCancelled):
        mc.explain(img, clf, config=mc.MedCAMConfig.fast(), progress=progress, cancel=cancel)
    assert seen == [1, 2, 3]


def test_generator_reports_progress_and_returns_explanation(clf):
    img, _ = mc.synthetic_tile(7301, 1)
    gen = mc.iter_explain(img, clf, config=SHORT)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        exp = stop.value
    assert isinstance(exp, mc.Explanation)
    assert [e.step for e in events] == list(range(1, len(events) + 1))
    assert 0 < events[0].fraction < events[-1].fraction <= 1
    assert {"area", "ce", "rob"} <= set(events[0].losses)


class BlankIsLesion(nn.Module):
    """The demo model, except that a perfectly flat image reads as 'lesion'."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        flat = (x.flatten(1).std(1) < 1e-4).float()[:, None]
        return self.inner(x) + flat * torch.tensor([-20.0, 20.0])


def test_non_neutral_baseline_is_replaced(clf):
    biased = mc.Classifier(
        BlankIsLesion(clf.module),
        mean=clf.mean,
        std=clf.std,
        class_names=clf.class_names,
        layers=["inner.block2", "inner.block4"],
    )
    img, _ = mc.synthetic_tile(7400, 1)
    exp = mc.explain(img, biased, config=SHORT)
    assert exp.absence == "blur"  # mean colour, dominant colour and black all read 'lesion'
    assert exp.target == 1


def test_large_image_is_tiled_and_mask_keeps_its_shape(clf):
    a, ev_a = mc.synthetic_tile(7500, 1)
    b, _ = mc.synthetic_tile(7501, 0)
    big = np.concatenate([a, b], axis=1)  # 224 × 448: lesion left, normal right
    exp = mc.explain(big, clf, config=mc.MedCAMConfig.fast(), tile_overlap=0)
    assert exp.tiles == 2 and exp.mask.shape == big.shape[:2]
    assert exp.class_name == "lesion"
    assert exp.mask[:, 224:].sum() == 0  # the normal tile has no lesion evidence
    assert (exp.mask[:, :224] & ndimage.binary_dilation(ev_a, iterations=2)).sum() > 0


def test_paper_preset_starts_from_a_full_mask_that_keeps_the_decision(lesion_tile):
    """The published recipe's first binary mask is the whole image, not an empty one."""
    gen = mc.iter_explain(
        lesion_tile[0],
        mc.demo_classifier(),
        "lesion",
        mc.MedCAMConfig.paper(steps=2, min_steps=2),
        device="cpu",
    )
    first = next(gen)
    gen.close()
    assert first.step == 1 and first.area_fraction > 0.99
    assert first.masked_confidence > 0.9
