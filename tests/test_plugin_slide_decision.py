"""The slide-decision widget: a MIL classifier's evidence tiles in napari, edited, checked, saved.

The toy slide and classifier are test_mil's (flat-coloured 32-px tiles; max-pooling over
the red channel, so the one red tile is the evidence). The slide is a two-level pyramid
whose level 1 is read by the classifier, with a glass margin that is not a whole tile,
shown scaled and translated, so a misplaced tile layer would show.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.plugin.slide_decision import SlideDecisionWidget
from tests.test_mil import TILE, MaxRed, MeanColour, toy_slide

SCALE, TRANSLATE = (0.5, 0.5), (10.0, 20.0)
RED_TILE = (3, 2)


@pytest.fixture
def slide_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    level1 = np.pad(toy_slide([RED_TILE]), ((0, 13), (0, 7), (0, 0)), constant_values=245)
    level0 = np.kron(level1, np.ones((2, 2, 1), np.uint8))
    image = viewer.add_image(
        [level0, level1], multiscale=True, rgb=True, scale=SCALE, translate=TRANSLATE, name="s"
    )
    widget = SlideDecisionWidget(viewer)
    clf = mc.SlideClassifier(
        MeanColour(), MaxRed(), tile_size=TILE, level=1, class_names=["normal", "tumour"]
    )
    widget.set_classifier(clf)
    widget.image_combo.value = image
    return viewer, widget, image


def _wait(qtbot, widget, started) -> None:
    assert started is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def test_the_evidence_tile_lies_exactly_over_its_tile_and_the_sentence_is_shown(
    slide_widget, qtbot
):
    viewer, widget, image = slide_widget
    _wait(qtbot, widget, widget.explain())
    result = widget.result
    assert result is not None and result.n_kept == 1 and result.target_name == "tumour"
    layer = widget.evidence_layer
    assert layer.data.shape == (6, 8)  # the 13- and 7-px glass margins are no tiles
    assert np.argwhere(layer.data == 1).tolist() == [list(RED_TILE)]
    # the cell's centre is the tile's centre as napari draws level 1 (pixel j at 2j)
    r, c = RED_TILE
    centre_level1 = np.array([r * TILE + (TILE - 1) / 2, c * TILE + (TILE - 1) / 2])
    assert np.allclose(layer.data_to_world(RED_TILE), image.data_to_world(2 * centre_level1))
    assert np.allclose(layer.scale, np.asarray(SCALE) * 2 * TILE)  # one cell = one tile
    assert widget.sentence.value == result.sentence
    assert widget.sentence.value.startswith("1 of 46 tiles suffice for 'tumour'")
    weights = [ly for ly in viewer.layers if ly.name.startswith("aggregator weights")]
    assert len(weights) == 1 and weights[0].data.argmax() == r * 8 + c


def test_an_edited_set_is_checked_before_it_is_saved_and_saved_exactly(
    slide_widget, qtbot, tmp_path
):
    _, widget, _ = slide_widget
    _wait(qtbot, widget, widget.explain())
    out = tmp_path / "evidence.geojson"
    assert [p.name for p in widget.save(out)] == ["evidence.geojson", "evidence.json"]
    saved = json.loads(out.read_text())["features"]
    y0, x0 = (2 * TILE * v for v in RED_TILE)  # level-0 pixels: level 1 is 2× smaller
    ring = saved[0]["geometry"]["coordinates"][0]
    assert len(saved) == 1 and ring[0] == [x0, y0] and ring[2] == [x0 + 2 * TILE, y0 + 2 * TILE]

    layer = widget.evidence_layer
    layer.data[RED_TILE] = 0  # the pathologist moves the evidence to another tile
    layer.data[4, 5] = 1
    layer.refresh()
    again = tmp_path / "edited.geojson"
    assert widget.save(again) == [] and not again.exists()
    assert "Check edited tiles first" in widget.status.value
    _wait(qtbot, widget, widget.check_edited())
    assert widget.sentence.value.startswith("These 1 of 46 tiles do not keep 'tumour'")
    assert widget.save(again)
    summary = json.loads(again.with_suffix(".json").read_text())
    assert summary["chosen"] == "given" and summary["meets_goal"] is False
    ring = json.loads(again.read_text())["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == [5 * 2 * TILE, 4 * 2 * TILE]

    layer.data[0, 7] = 1  # a glass cell: not a tile of the bag
    layer.refresh()
    assert widget.save(tmp_path / "glass.geojson") == []
    assert "outside the slide's tissue tiles" in widget.status.value


def test_what_cannot_be_explained_is_said_in_the_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SlideDecisionWidget(viewer)
    assert widget.explain() is None and "open a slide" in widget.status.value
    viewer.add_image(np.zeros((64, 64), np.float32), name="grey")
    widget.image_combo.reset_choices()
    widget.set_classifier(
        mc.SlideClassifier(MeanColour(), MaxRed(), tile_size=TILE, class_names=["n", "t"])
    )
    assert widget.explain() is None and "not a 2-D RGB slide" in widget.status.value
    widget.set_classifier(None)
    widget.factory_edit.value = "no_such_module:factory"
    assert widget.explain() is None and "cannot import factory" in widget.status.value
    assert widget.check_edited() is None and "explain a slide first" in widget.status.value
    assert not [ly for ly in viewer.layers if ly.name.startswith("slide evidence")]


def test_a_cancel_stops_at_the_next_batch_and_adds_nothing(slide_widget):
    from napari_medcam.plugin.slide_grid import SlideJob, SlideOutcome, run_slide_job

    viewer, widget, image = slide_widget
    job = SlideJob(image.data[1], widget.classifier(), None, "removal")
    steps = run_slide_job(job)
    assert next(steps).stage == "embed"
    job.cancel.set()
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value == SlideOutcome(cancelled=True)
    before = len(viewer.layers)
    widget._on_done(stop.value.value)  # what the worker hands the widget
    assert len(viewer.layers) == before and widget.status.value.startswith("Cancelled")


def test_the_mil_zoo_classifier_explains_a_synthetic_slide_in_the_widget(make_napari_viewer, qtbot):
    from napari_medcam.zoo import mil

    viewer = make_napari_viewer()
    slide = mil.synthetic_slide("eval", 0)
    image = viewer.add_image(slide.image(), rgb=True, name="eval-0")
    widget = SlideDecisionWidget(viewer)
    widget.classifier_combo.value = "mil-abmil"
    widget.image_combo.value = image
    _wait(qtbot, widget, widget.explain())
    result = widget.result
    assert result is not None, widget.status.value
    assert widget.evidence_layer.data.shape == result.grid_shape
    assert widget.sentence.value == result.sentence


def test_pixel_evidence_lies_in_its_tile_and_is_saved_only_while_it_is_current(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_medcam.zoo import mil

    viewer = make_napari_viewer()
    slide = mil.synthetic_slide("tune", 0)  # the tuning entry on its tuning split
    image = viewer.add_image(
        slide.image(),
        rgb=True,
        name="tune-0",
        scale=SCALE,
        translate=TRANSLATE,
    )
    widget = SlideDecisionWidget(viewer)
    widget.classifier_combo.value = "mil-abmil"
    widget.image_combo.value = image
    _wait(qtbot, widget, widget.explain())
    assert widget.result.n_kept == 1
    _wait(qtbot, widget, widget.explain_pixels())
    assert widget.status.value.startswith("Pixel evidence in 1 tile(s): 1 region"), (
        widget.status.value
    )
    (layer,) = [ly for ly in viewer.layers if ly.name.startswith("slide evidence pixels")]
    y0, x0, y1, x1 = (int(v) for v in widget.result.kept_windows[0])
    assert layer.data.shape == (y1 - y0, x1 - x0)
    # pixel (i, j) of the layer is pixel (y0 + i, x0 + j) of the slide, in the world
    assert np.allclose(layer.data_to_world((5, 7)), image.data_to_world((y0 + 5, x0 + 7)))
    out = tmp_path / "with-pixels.geojson"
    assert widget.save(out) and "with the pixel evidence" in widget.status.value
    kinds = [f["properties"].get("evidence") for f in json.loads(out.read_text())["features"]]
    assert kinds.count("pixels") >= 1 and kinds.count(None) == 1
    layer.data[:] = 0  # the pathologist erases the pixel evidence: it is no longer what was found
    layer.refresh()
    again = tmp_path / "tiles-only.geojson"
    assert widget.save(again) and "tiles only" in widget.status.value
    assert "pixels" not in json.loads(again.with_suffix(".json").read_text())
