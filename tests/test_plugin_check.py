"""Checking an edited mask: as the explanation was made (tile by tile), on a copy taken
when the button is pressed, never alongside an explanation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.metrics import mask_confidences
from napari_medcam.plugin.sample_data import synthetic_tile_sample
from tests.conftest import run_explanation, wait_for_run

QUICK = mc.MedCAMConfig.fast(steps=5, min_steps=1)  # the mask is edited by hand anyway


def two_by_two() -> tuple[np.ndarray, np.ndarray]:
    """416² pixels of four lesion tiles: explain's grid (224², overlap 32) is 2 × 2."""
    img = np.zeros((416, 416, 3), np.uint8)
    ev = np.zeros((416, 416), bool)
    for i in range(4):
        tile, evidence = mc.synthetic_tile(seed=100 + i, label=1, size=208)
        y, x = 208 * (i // 2), 208 * (i % 2)
        img[y : y + 208, x : x + 208] = tile
        ev[y : y + 208, x : x + 208] = evidence
    return img, ev


def _finish(qtbot, worker, timeout: int = 60_000) -> None:
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


def test_check_of_a_tiled_image_scores_each_tile_as_explained(medcam, qtbot):
    viewer, widget = medcam
    img, ev = two_by_two()
    viewer.add_image(img, rgb=True, name="2x2")
    assert "4 tiles" in widget.input.region_label.value
    widget.build_config = lambda: QUICK
    run_explanation(qtbot, widget)
    labels = widget.review.result_combo.value
    # the pathologist keeps the evidence of the top two tiles only
    edited = np.where(np.arange(416)[:, None] < 208, ev, False).astype(np.uint8)
    labels.data = edited
    worker = widget.check_edited_mask()
    done: list[int] = []
    worker.yielded.connect(lambda event: done.append(event.done))
    _finish(qtbot, worker)
    check = widget.last_check
    assert "error" not in check, check
    assert done == [1, 2, 3, 4]  # progress, tile by tile
    assert check["tiled"] and check["tiles"] == 4 and check["windows"] == 4
    assert check["tiles_held"] == 2 and not check["held"]
    # each tile's score is that of the tile scored on its own, at full resolution
    clf, cfg = widget.classifier, widget.results.get(labels).config
    for rec in check["per_tile"]:
        window = tuple(slice(s, s + n) for s, n in zip(rec["start"], rec["size"]))
        alone = mask_confidences(img[window], edited[window], clf, 1, cfg)
        assert rec["masked"] == pytest.approx(alone["masked"], abs=1e-5)
        assert rec["held"] == alone["held"]
    assert check["masked"] == pytest.approx(np.mean([r["masked"] for r in check["per_tile"]]))
    # the whole image resized to the input (a thumbnail) says something else entirely
    thumb = mask_confidences(img, edited, clf, 1, cfg)
    assert thumb["held"] and thumb["masked"] > check["masked"] + 0.3
    text = widget.review.check_label.text()
    assert "decision <b>lost</b>" in text and "2 of 4 'lesion' tiles" in text
    assert labels.metadata["medcam"]["check"]["tiles_held"] == 2


@pytest.fixture
def explained(medcam, qtbot):
    viewer, widget = medcam
    (img, img_meta, _), _evidence = synthetic_tile_sample()
    viewer.add_image(img, **img_meta)
    widget.build_config = lambda: QUICK
    run_explanation(qtbot, widget)
    return viewer, widget, widget.review.result_combo.value


@pytest.fixture
def held_check(monkeypatch):
    """Checks start, then wait in their worker thread until ``release`` is set, before
    reading anything; ``seen`` gets each mask as the worker then reads it."""
    import napari_medcam.checking as checking

    release, started = threading.Event(), threading.Event()
    seen: list[np.ndarray] = []
    real = checking.iter_check

    def waiting(image, mask, *args, **kwargs):
        started.set()
        release.wait(30)
        seen.append(np.array(mask))
        return (yield from real(image, mask, *args, **kwargs))

    monkeypatch.setattr(checking, "iter_check", waiting)
    yield release, started, seen
    release.set()


def test_an_edit_made_while_a_check_runs_is_kept_and_not_checked(explained, qtbot, held_check):
    release, started, seen = held_check
    viewer, widget, labels = explained
    pressed = labels.data.copy()
    worker = widget.check_edited_mask()
    assert worker is not None
    assert started.wait(30)
    # the user goes on painting while the check runs (in place, as the brush does)
    labels.selected_label = 1
    labels.paint((5, 5), 1)
    labels.data[100:140, 100:140] = 1
    painted = labels.data.copy()
    assert not np.array_equal(painted, pressed)
    release.set()
    _finish(qtbot, worker)
    # the check scored the mask as it was when the button was pressed ...
    (checked,) = seen
    np.testing.assert_array_equal(checked, pressed > 0)
    assert widget.last_check["area_fraction"] == pytest.approx((pressed > 0).mean())
    # ... and the edit is in the layer, not lost
    np.testing.assert_array_equal(labels.data, painted)
    assert widget.is_edited(labels)


def test_explain_and_check_never_run_together(explained, qtbot, held_check, lesion_tile):
    from napari.utils.notifications import notification_manager

    release, started, _seen = held_check
    viewer, widget, labels = explained
    worker = widget.check_edited_mask()
    assert started.wait(30)
    # while the check runs: Explain is disabled and refuses with a reason
    assert not widget.run.run_button.enabled
    assert "check" in widget.run.run_button.tooltip
    before = len(notification_manager.records)
    assert widget.explain() is None
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("checking an edited mask" in m for m in msgs), msgs
    assert widget.review.check_button.text == "Cancel check"
    release.set()
    _finish(qtbot, worker)
    assert widget.run.run_button.enabled and widget.review.check_button.text == "Check edited mask"
    # while an explanation runs: no check (both move the one classifier between devices)
    widget.build_config = lambda: mc.MedCAMConfig.paper(steps=400)
    steps: list[int] = []
    run = widget.explain()
    run.yielded.connect(lambda ev: steps.append(ev.step))
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=60_000)
    assert not widget.review.check_button.enabled
    before = len(notification_manager.records)
    assert widget.check_edited_mask() is None
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("Med-CAM is explaining" in m for m in msgs), msgs
    widget.cancel()
    wait_for_run(qtbot, widget, timeout=30_000)
    assert widget.review.check_button.enabled


def test_a_running_check_can_be_cancelled(explained, qtbot, held_check):
    release, started, _seen = held_check
    viewer, widget, labels = explained
    worker = widget.check_edited_mask()
    assert started.wait(30)
    widget.review.check_button.clicked()  # the button cancels while a check runs
    release.set()
    _finish(qtbot, worker)
    assert widget.last_check == {"cancelled": True}
    assert "cancelled" in widget.review.check_label.text()
    assert "check" not in labels.metadata["medcam"]
