"""Cancel and progress where long work happens before and after the optimisation:
tile selection, slice classification and the Grad-CAM comparison pass."""

from __future__ import annotations

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.comparison import gradcam, iter_gradcam
from napari_medcam.plugin.worker import ExplainJob, run_explanation

GLASS = 245


@pytest.fixture(scope="module")
def clf():
    return mc.demo_classifier()


@pytest.fixture(scope="module")
def mosaic():
    """A 3×3-tile canvas: one lesion tile among glass and normal tissue."""
    canvas = np.full((3 * 224, 3 * 224, 3), GLASS, np.uint8)
    canvas[:224, :224] = mc.synthetic_tile(seed=0, label=1)[0]
    canvas[224:448, 224:448] = mc.synthetic_tile(seed=1, label=0)[0]
    return canvas


class ForwardCounter:
    """Counts the images the classifier sees (forward hook on its module)."""

    def __init__(self, clf) -> None:
        self.images = 0
        self.handle = clf.module.register_forward_hook(self._hook)

    def _hook(self, _m, inputs, _out) -> None:
        self.images += int(inputs[0].shape[0])

    def remove(self) -> None:
        self.handle.remove()


def test_tile_selection_reports_progress_and_stops_when_cancelled(clf, mosaic):
    events = []
    counter = ForwardCounter(clf)
    try:
        with pytest.raises(mc.ExplanationCancelled):
            mc.explain(
                mosaic,
                clf,
                config=mc.MedCAMConfig.fast(steps=5, min_steps=1),
                device="cpu",
                tile_overlap=0,
                tile_batch=2,
                skip_glass=False,
                progress=events.append,
                cancel=lambda: len(events) >= 1,
            )
    finally:
        counter.remove()
    assert [(e.stage, e.step, e.total) for e in events] == [("classify", 2, 9)]
    assert counter.images == 2  # the other seven tiles were never classified
    assert "classifying tiles 2/9" in events[0].describe()


def test_tile_selection_progress_precedes_the_optimisation(clf, mosaic):
    gen = mc.iter_explain(
        mosaic,
        clf,
        config=mc.MedCAMConfig.fast(steps=3, min_steps=1),
        device="cpu",
        tile_overlap=0,
        tile_batch=4,
    )
    stages = []
    try:
        while True:
            stages.append(next(gen))
    except StopIteration as stop:
        exp = stop.value
    classify = [e for e in stages if e.stage == "classify"]
    assert [e.step for e in classify] == [4, 8, 9] and classify[-1].fraction == 1.0
    first_step = next(i for i, e in enumerate(stages) if e.stage == "optimise")
    assert all(e.stage == "classify" for e in stages[:first_step])
    assert exp.class_name == "lesion" and len(exp.tile_verdicts) >= 1
    # what the classifier calls every tissue tile, explained or not; glass has no entry
    assert [(c["window"], c["class"]) for c in exp.tile_classes] == [
        ([0, 0, 224, 224], "lesion"),
        ([224, 224, 448, 448], "normal"),
    ]
    assert all(0.5 < c["probability"] <= 1 for c in exp.tile_classes)


def test_gradcam_pass_is_tile_by_tile_and_the_same_map(clf, mosaic):
    gen = iter_gradcam(mosaic, clf, "lesion", tile_overlap=0)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        cam = stop.value
    assert [e.step for e in events] == list(range(1, 10))
    assert all(e.stage == "gradcam" for e in events)
    np.testing.assert_allclose(cam, gradcam(mosaic, clf, "lesion", tile_overlap=0))
    assert cam[:224, :224].mean() > cam[448:, 448:].mean()  # the lesion tile, not glass


def test_slice_classification_reports_progress(clf):
    stack = np.stack([mc.synthetic_tile(seed=s, label=s % 2)[0] for s in range(4)])
    gen = mc.iter_explain(
        stack, clf, config=mc.MedCAMConfig.fast(steps=2, min_steps=1), slice_axis=0
    )
    first = [next(gen) for _ in range(4)]
    gen.close()
    assert [(e.stage, e.step, e.total) for e in first] == [("classify", i, 4) for i in (1, 2, 3, 4)]


def test_worker_cancels_during_the_gradcam_pass(clf, mosaic):
    job = ExplainJob(
        mosaic, clf, None, mc.MedCAMConfig.fast(steps=3, min_steps=1), device="cpu", gradcam=True
    )
    gen = run_explanation(job)
    stages = []
    try:
        while True:
            event = next(gen)
            stages.append(event.stage)
            if event.stage == "gradcam":
                job.cancel.set()
    except StopIteration as stop:
        result = stop.value
    assert stages.count("gradcam") == 1  # stopped at the first Grad-CAM tile
    assert result.cancelled and result.explanation is None and job.done.is_set()
