"""The worker generator on its own (no Qt): progress, cancel, errors as messages."""

from __future__ import annotations

import numpy as np

import napari_medcam as mc
from napari_medcam.plugin.worker import ExplainJob, run_explanation, torch_threads


def _drain(gen, on_event=None):
    events = []
    try:
        while True:
            ev = next(gen)
            events.append(ev)
            if on_event:
                on_event(ev)
    except StopIteration as stop:
        return events, stop.value


def test_cancel_stops_at_the_next_step_and_releases_the_job(lesion_tile):
    job = ExplainJob(
        lesion_tile[0],
        mc.demo_classifier(),
        None,
        mc.MedCAMConfig.fast(steps=200, min_steps=200),
        device="cpu",
        threads=1,
    )
    events, result = _drain(
        run_explanation(job), lambda ev: job.cancel.set() if ev.step == 3 else None
    )
    assert result.cancelled and result.explanation is None
    assert [e.step for e in events] == [1, 2, 3]
    assert job.done.is_set()


def test_errors_come_back_as_messages():
    job = ExplainJob(
        np.zeros((4, 4, 3), np.uint8),
        mc.demo_classifier(),
        None,
        mc.MedCAMConfig.fast(steps=2, min_steps=1),
        device="cpu",
    )
    events, result = _drain(run_explanation(job))
    assert events == [] and "too small" in result.error and job.done.is_set()
    job = ExplainJob(
        np.zeros((32, 32, 3), np.uint8),
        mc.demo_classifier(),
        "tumour",
        mc.MedCAMConfig.fast(steps=2, min_steps=1),
        device="cpu",
    )
    assert "unknown class name" in _drain(run_explanation(job))[1].error


def test_torch_threads_is_restored():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_masks_stitched_on_disk_come_back_as_arrays(lesion_tile, monkeypatch):
    monkeypatch.setattr("napari_medcam.tiling.IN_MEMORY_PIXELS", 1000)  # as for a whole slide
    canvas = np.full((224, 448, 3), 245, np.uint8)
    canvas[:, :224] = lesion_tile[0]
    job = ExplainJob(canvas, mc.demo_classifier(), None, mc.MedCAMConfig.fast(steps=5, min_steps=1))
    _events, result = _drain(run_explanation(job))
    exp = result.explanation
    assert not result.error, result.error
    # the layers are made from these in the GUI thread: no disk reads left there
    assert isinstance(exp.mask, np.ndarray) and isinstance(exp.soft_mask, np.ndarray)
    assert exp.mask.shape == exp.soft_mask.shape == (224, 448)
