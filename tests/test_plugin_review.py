"""After a run: check an edited mask, compare with a reference, export, and lose nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcam.io import read_mask_tiff
from napari_medcam.plugin.panels.grid import viewer_grid
from napari_medcam.plugin.sample_data import synthetic_tile_sample
from tests.conftest import run_explanation


@pytest.fixture
def explained(medcam, qtbot):
    """The sample tile with its true evidence, explained: (viewer, widget, image, mask layer)."""
    viewer, widget = medcam
    (img, img_meta, _), (ev, ev_meta, _) = synthetic_tile_sample()
    image = viewer.add_image(img, scale=(0.5, 0.5), translate=(5.0, 7.0), **img_meta)
    viewer.add_labels(ev, scale=(0.5, 0.5), translate=(5.0, 7.0), **ev_meta)
    widget.input.image_combo.value = image
    run_explanation(qtbot, widget)
    mask = widget.review.result_combo.value
    assert mask is viewer.layers[-1]  # on top of the reference: colours never mix
    return viewer, widget, image, mask


def test_erasing_the_evidence_lowers_masked_confidence(explained, qtbot):
    viewer, widget, image, _quick = explained
    evidence = viewer.layers["true evidence"].data > 0
    widget.set_settings("fast")  # a real mask: the decision must hold on it
    run_explanation(qtbot, widget)
    mask = widget.review.result_combo.value
    # the mask as the widget made it: the classifier keeps its decision
    worker = widget.check_edited_mask()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    first = widget.last_check
    assert "error" not in first, first
    assert first["held"] and first["masked"] > 0.5
    # the pathologist erases the planted evidence from the mask (as the eraser would)
    edited = mask.data.copy()
    edited[evidence] = 0
    mask.data = edited
    worker = widget.check_edited_mask()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    after = widget.last_check
    assert after["masked"] < first["masked"] - 0.2, (first, after)
    assert after["area_fraction"] < first["area_fraction"]
    assert "Edited mask" in widget.review.check_label.text()
    assert mask.metadata["medcam"]["check"]["masked"] == pytest.approx(after["masked"])


def test_compare_with_reference_and_side_by_side(explained, tmp_path):
    viewer, widget, image, mask = explained
    reference = viewer.layers["true evidence"]
    widget.review.reference_combo.value = reference
    rows = widget.compare()
    assert [r["method"] for r in rows] == ["Med-CAM", "Grad-CAM"]
    truth = np.asarray(reference.data) > 0
    shown = np.asarray(mask.data) > 0
    dice = 2 * (truth & shown).sum() / (truth.sum() + shown.sum())
    assert rows[0]["dice"] == pytest.approx(dice, abs=1e-3)  # the mask the user sees
    for r in rows:
        assert {"dice", "iou", "precision", "recall"} <= set(r)
    assert rows[1]["area_percent"] == pytest.approx(rows[0]["area_percent"], abs=0.1)
    assert "Dice" in widget.review.scores_label.text()
    csv_text = widget.review.scores_csv()
    assert csv_text.splitlines()[0].startswith("method,dice,iou,precision,recall")
    widget.review.copy_scores()
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text() == csv_text
    out = widget.review.save_scores(tmp_path / "scores.csv")
    assert out.read_text() == csv_text
    with pytest.raises(FileExistsError):
        widget.review.save_scores(tmp_path / "scores.csv")
    # side by side: image + mask in one pane, image (twin) + reference in the other
    order = list(viewer.layers)
    widget.review.side_by_side.value = True
    assert viewer_grid(viewer).enabled and viewer_grid(viewer).stride == 2
    twin = viewer.layers[2]
    assert twin.name.endswith("(side by side)")
    assert list(viewer.layers)[:4] == [image, mask, twin, reference]
    assert all(ly.visible for ly in list(viewer.layers)[:4])
    widget.review.side_by_side.value = False
    assert not viewer_grid(viewer).enabled
    assert list(viewer.layers) == order


def test_save_mask_round_trips_with_metadata(explained, tmp_path):
    viewer, widget, image, mask = explained
    tif, geo = widget.save_mask(tmp_path / "mask.tif", geojson=True)
    data, meta = read_mask_tiff(tif)
    np.testing.assert_array_equal(data, mask.data)
    assert data.dtype == np.uint8
    summary = meta["medcam"]["summary"]
    assert summary["class_name"] == "lesion"
    assert meta["medcam"]["config"]["steps"] == mask.metadata["medcam"]["config"]["steps"]
    assert meta["medcam"]["source_layer"] == "synthetic tile"
    doc = json.loads(geo.read_text())
    assert doc["type"] == "FeatureCollection" and doc["features"]
    props = doc["features"][0]["properties"]
    assert props["class_name"] == "lesion" and props["source_layer"] == "synthetic tile"
    # polygons are in image pixel coordinates (x, y) and enclose the mask
    xy = np.array(doc["features"][0]["geometry"]["coordinates"][0])
    assert xy[:, 0].max() <= mask.data.shape[1] and xy[:, 1].max() <= mask.data.shape[0]
    # never overwrite silently; replace when asked, atomically
    with pytest.raises(FileExistsError):
        widget.save_mask(tmp_path / "mask.tif", geojson=True)
    mask.data = np.zeros_like(mask.data)
    widget.save_mask(tmp_path / "mask.tif", geojson=False, overwrite=True)
    assert read_mask_tiff(tif)[0].max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.geojson", "mask.tif"]


def test_rerun_never_overwrites_an_edited_mask(explained, qtbot):
    viewer, widget, image, mask = explained
    n = len(widget.results.layers())  # result masks (their hidden soft maps come along)
    # an unedited result is replaced in place by a rerun (nothing of the user's is lost)
    run_explanation(qtbot, widget)
    assert len(widget.results.layers()) == n
    assert widget.review.result_combo.value is mask
    # the user paints on it ...
    mask.selected_label = 1
    mask.paint((3, 3), 1)
    assert widget.is_edited(mask)
    painted = mask.data.copy()
    # ... so the next run adds a new layer and leaves the edited one alone
    run_explanation(qtbot, widget)
    assert len(widget.results.layers()) == n + 1
    new = widget.review.result_combo.value
    assert new is not mask
    np.testing.assert_array_equal(mask.data, painted)
    assert viewer.layers[-1] is new
    # edits without events (a script changing the data) count too
    new.data = np.zeros_like(new.data)
    assert widget.is_edited(new)
    run_explanation(qtbot, widget)
    assert len(widget.results.layers()) == n + 2
    newest = widget.review.result_combo.value
    assert newest is not new and newest is not mask
    # asking not to replace: a new layer even when unedited
    widget.settings.replace_unedited.value = False
    run_explanation(qtbot, widget)
    assert len(widget.results.layers()) == n + 3


def test_save_dialog_asks_before_replacing(explained, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    viewer, widget, image, mask = explained
    target = tmp_path / "m.tif"
    monkeypatch.setattr(
        QFileDialog,
        "getSaveFileName",
        staticmethod(lambda *a, **k: (str(target), "TIFF (*.tif *.tiff)")),
    )
    asked: list[str] = []

    def answer(reply):
        def question(_parent, _title, text, *a, **k):
            asked.append(text)
            return reply

        return staticmethod(question)

    widget.export.geojson_check.value = True
    widget.export.save_button.clicked()
    assert target.exists() and target.with_suffix(".geojson").exists()
    assert not asked
    before = target.read_bytes()
    # the GeoJSON exists: the widget asks; "No" leaves both files alone
    mask.data = np.zeros_like(mask.data)
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    widget.export.save_button.clicked()
    assert len(asked) == 1 and "m.geojson" in asked[0]
    assert target.read_bytes() == before
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    widget.export.save_button.clicked()
    assert read_mask_tiff(target)[0].max() == 0


def test_edits_mark_results_out_of_date_and_undo_clears_it(explained, qtbot):
    viewer, widget, image, mask = explained
    widget.review.reference_combo.value = viewer.layers["true evidence"]
    widget.compare()
    assert not widget.summary.stale.isVisibleTo(widget.summary)
    # one stroke of the eraser: out of date at once, before any timer
    mask.selected_label = 0
    mask.paint((112, 112), 0) if mask.data[112, 112] else mask.paint((112, 112), 1)
    assert widget.summary.stale.isVisibleTo(widget.summary)
    assert "Out of date" in widget.review.scores_label.text()
    # Ctrl+Z back to the mask as made: the warnings go
    mask.undo()
    qtbot.waitUntil(lambda: not widget.summary.stale.isVisibleTo(widget.summary), timeout=5000)
    assert "Out of date" not in widget.review.scores_label.text()
    # an edit without events (a script) is noticed too; Compare recomputes
    mask.data = np.zeros_like(mask.data)
    qtbot.waitUntil(lambda: widget.summary.stale.isVisibleTo(widget.summary), timeout=5000)
    assert "Out of date" in widget.review.scores_label.text()
    rows = widget.compare()
    assert rows[0]["area_percent"] == 0.0
    assert "Out of date" not in widget.review.scores_label.text()
    assert widget.summary.stale.isVisibleTo(widget.summary)  # still not what was measured
