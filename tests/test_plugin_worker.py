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
