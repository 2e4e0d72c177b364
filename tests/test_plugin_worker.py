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


def test_masks_stitched_on_disk_reach_the_gui_as_lazy_levels(lesion_tile, monkeypatch):
    from napari_medcam.plugin import lazy

    monkeypatch.setattr("napari_medcam.tiling.IN_MEMORY_PIXELS", 1000)  # as for a whole slide
    monkeypatch.setattr(lazy, "MIN_SIDE", 112)  # a pyramid even for this small canvas
    monkeypatch.setattr(lazy, "IN_MEMORY_LEVEL", 100)  # and its coarse levels on disk
    canvas = np.full((224, 448, 3), 245, np.uint8)
    canvas[:, :224] = lesion_tile[0]
    job = ExplainJob(
        canvas, mc.demo_classifier(), None, mc.MedCAMConfig.fast(steps=5, min_steps=1), soft=True
    )
    _events, result = _drain(run_explanation(job))
    exp = result.explanation
    assert not result.error, result.error
    # nothing was read whole into memory: the mask stays on disk, napari gets levels
    assert not isinstance(exp.mask, np.ndarray)
    levels = result.mask_levels
    assert [lv.shape for lv in levels] == [(224, 448), (112, 224), (56, 112)]
    assert not any(isinstance(lv, np.ndarray) for lv in levels)
    mask = np.asarray(exp.mask).astype(np.uint8)  # (read here, to compare)
    np.testing.assert_array_equal(np.asarray(levels[0]), mask)
    np.testing.assert_array_equal(np.asarray(levels[2]), mask[::4, ::4])
    assert [lv.shape for lv in result.soft_levels] == [(224, 448), (112, 224), (56, 112)]
    # Grad-CAM of a region too large for memory would be held whole: skipped, said why
    assert result.gradcam is None and "Grad-CAM skipped" in result.gradcam_note


class _CountingArray:
    """A read-only 2-D array that records the size of every read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.data[key]
        self.reads.append(out.size)
        return out


def test_pyramid_reads_a_large_mask_block_by_block(monkeypatch):
    from napari_medcam.plugin import lazy

    monkeypatch.setattr(lazy, "BLOCK", 64)
    rng = np.random.default_rng(0)
    data = rng.random((300, 500)) > 0.7
    source = _CountingArray(data)
    levels = lazy.pyramid(source, np.uint8, min_side=80)
    assert [lv.shape for lv in levels] == [(300, 500), (150, 250), (75, 125), (38, 63)]
    assert max(source.reads) <= 64 * 64  # never more than one block at a time
    for f, lv in zip((1, 2, 4, 8), levels):
        np.testing.assert_array_equal(np.asarray(lv), data[::f, ::f].astype(np.uint8))
