"""The explainer panel: choose an explainer, explain in one pass, refuse a wrong file, fit.

The three-class colour counter of `tests.test_amortised` keeps the fits to seconds;
the widget loads it as a user would, through its Python-factory choice.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medcam.engine.amortised import fit_explainer
from napari_medcam.io import read_mask_tiff
from napari_medcam.plugin.panels.explainer import DEMO, FILE, packaged
from napari_medcam.plugin.results import class_color
from tests.conftest import run_explanation
from tests.test_amortised import colour_counter, colour_tile

COLOUR_FACTORY = "tests.test_amortised:colour_counter"


@functools.cache
def colour_explainer(folder: str) -> Path:
    """A small explainer for the colour counter, fitted once per test session (the live
    tests use it too): enough steps that the green tiles hold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same fit on any machine; restored for what follows
    try:
        tiles = [colour_tile(i, 1 + i % 2) for i in range(18)]
        exp = fit_explainer(colour_counter(), tiles, steps=120, device="cpu", batch=6, held_out=0.0)
    finally:
        torch.set_num_threads(before)
    return exp.save(Path(folder) / "colour-explainer.pt")


@pytest.fixture
def explainer_file(tmp_path_factory) -> Path:
    return colour_explainer(str(tmp_path_factory.getbasetemp()))


def use_classifier(widget, factory: str) -> None:
    """Load a classifier through the widget's Python-factory choice."""
    panel = widget.classifier_panel
    panel.classifier_combo.value = ("factory", "")
    panel.factory_spec.value = factory
    panel.load_button.clicked()
    assert panel.classifier is not None, panel.classifier_label_w.value


def three_colours() -> np.ndarray:
    """red | grey | green, one classifier input each."""
    return np.concatenate([colour_tile(101, 1), colour_tile(102, 0), colour_tile(103, 2)], 1)


def test_choose_an_explainer_and_explain_every_class_in_one_pass(
    medcam, qtbot, explainer_file, tmp_path
):
    viewer, widget = medcam
    panel = widget.explainer_panel
    # the packaged demo explainer is offered with the demo classifier only
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    assert (DEMO in panel.choice_combo.choices) == packaged("demo")
    if packaged("demo"):  # shipped: it loads for the demo classifier and says so
        panel.choice_combo.value = DEMO
        assert panel.explainer is not None, panel.facts.value
        assert "normal, lesion" in panel.facts.value
    use_classifier(widget, COLOUR_FACTORY)
    assert DEMO not in panel.choice_combo.choices
    assert panel.use_file(explainer_file) is not None, panel.facts.value
    assert "colour counter" in panel.facts.value and "grey, red, green" in panel.facts.value
    viewer.add_image(three_colours(), name="colours", rgb=True)
    widget.set_settings("fast", steps=1)  # an optimisation would fail in one step
    panel.refine.value = 3
    result = run_explanation(qtbot, widget)
    exp = result.explanation
    assert exp.provenance["explainer"]["file"] == str(explainer_file)
    assert exp.provenance["explainer"]["refine_steps"] == 3
    facts = exp.provenance["explainer"]
    # only tiles that missed the per-image goal were optimised, at most 3 steps each
    assert exp.steps <= 3 * facts["tiles_refined"]
    assert facts["tiles_refined"] + facts["tiles_pruned"] >= 1
    layer = viewer.layers[-1]
    assert layer.name == "Med-CAM: red + green"
    data = np.asarray(layer.data)
    # one layer, a label per class: red (index 1) → 2 on the red tile, green → 3
    assert set(np.unique(data[:, :64])) == {0, 2}
    # evidence is made of regions at the detail scale (4 px for a 64-px input): the grey
    # tile holds none farther than one structure size from a coloured tile, and what is
    # there belongs to that tile's class
    assert set(np.unique(data[:, 68:124])) == {0}
    assert set(np.unique(data[:, 64:68])) <= {0, 2} and set(np.unique(data[:, 124:128])) <= {0, 3}
    assert set(np.unique(data[:, 128:])) == {0, 3}
    colours = layer.colormap
    for value, cls in ((2, 1), (3, 2)):
        np.testing.assert_allclose(colours.map(value), _rgba(class_color(cls)), atol=1e-6)
    legend = widget.summary.legend.text()
    for name, cls in (("red", 1), ("green", 2)):
        assert f"<span style='color:{class_color(cls)}'>■</span> {name}" in legend, legend
    # saved: the label values, their classes in the TIFF's metadata and on each polygon
    tif, gj = widget.save_mask(tmp_path / "colours.tif", geojson=True)
    saved, meta = read_mask_tiff(tif)
    classes = meta["medcam"]["summary"]["label_classes"]
    assert np.array_equal(saved, data) and classes == {"2": "red", "3": "green"}
    features = json.loads(gj.read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} == {"red", "green"}


def _rgba(hex_colour: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(hex_colour)[0]


def test_a_file_for_another_classifier_is_refused_in_words(medcam, qtbot, explainer_file, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer, widget = medcam
    panel = widget.explainer_panel
    use_classifier(widget, "tests.toys:red_counter")
    viewer.add_image(colour_tile(1, 1), name="tile", rgb=True)
    assert panel.use_file(explainer_file) is None
    assert panel.facts.value.startswith("⚠ cannot use this explainer")
    assert "fitted for classifier 'colour counter'" in panel.facts.value
    before, layers = len(notification_manager.records), len(viewer.layers)
    assert widget.explain() is None  # refused before any run: no per-image fallback
    assert len(viewer.layers) == layers
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("fitted for classifier 'colour counter'" in m for m in msgs), msgs
    assert not any("Traceback" in m for m in msgs)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    assert panel.use_file(junk) is None and "not an explainer file" in panel.facts.value
    # live mode cannot start without a usable explainer: it says so and stays off
    panel.live_check.value = True
    assert not panel.live_check.value and not panel.live.active
    assert panel.live_label.value.startswith("⚠")
    panel.choice_combo.value = "none"  # per-image again: Explain works
    assert panel.choice() == (None, 0)
    assert FILE in panel.choice_combo.choices


def test_fit_on_the_image_with_cancel_then_resume(medcam, qtbot, tmp_path):
    viewer, widget = medcam
    panel = widget.explainer_panel
    assert panel.fit(tmp_path / "none.pt") is None  # no image yet: said, not raised
    assert panel.fit_label.value.startswith("⚠ no image layer")
    use_classifier(widget, COLOUR_FACTORY)
    tiles = [[colour_tile(10 * r + c, 1 + (r + c) % 2) for c in range(3)] for r in range(2)]
    image = np.concatenate([np.concatenate(row, 1) for row in tiles], 0)  # 2 × 3 tiles
    viewer.add_image(image, name="six", rgb=True)
    out = tmp_path / "six.pt"
    steps = []
    assert panel.fit_empty.choices == (None, "grey", "red", "green")
    panel.fit_empty.value = "grey"  # the colour counter's class of nothing found

    def cancel_once_fitting(event):
        if event.phase == "fit":
            steps.append(event.step)
            panel.cancel_fit()

    worker = panel.fit(out, steps=30)
    assert worker is not None, panel.fit_label.value
    worker.yielded.connect(cancel_once_fitting)
    assert panel.fit_button.text in ("Cancel fit", "Cancelling…")
    qtbot.waitUntil(lambda: panel.fit_worker is None, timeout=60_000)
    first = panel.last_fit
    assert first.cancelled and 1 <= first.step < 30
    assert not out.exists() and out.with_name("six.pt.ckpt").exists()
    assert "cancelled" in panel.fit_label.value
    assert panel.fit_button.text.startswith("Fit an explainer")
    # the same fit again resumes from the checkpoint, writes the file and chooses it
    seen, lines = [], []
    worker = panel.fit(out, steps=30)
    worker.yielded.connect(lambda e: seen.append(e.step) if e.phase == "fit" else None)
    worker.yielded.connect(lambda e: lines.append(panel.fit_label.value))
    qtbot.waitUntil(lambda: panel.fit_worker is None, timeout=60_000)
    assert not panel.last_fit.error, panel.last_fit.error
    assert out.exists() and not out.with_name("six.pt.ckpt").exists()
    assert seen and seen[0] > 1 and seen[-1] == 30  # resumed, not restarted
    assert any(line.startswith("fitting: step") and " left" in line for line in lines), lines
    assert panel.choice_combo.value == FILE and panel.explainer is not None
    assert "colour counter" in panel.facts.value and "30 steps" in panel.facts.value
    assert panel.explainer.empty_class == 0  # "grey": chosen in the form
    # the same file written again (a new fit) is read again, not taken from the cache
    panel.explainer.metadata["fit"]["steps"] = 7
    panel.explainer.save(out)
    panel.use_file(out)
    assert "7 steps" in panel.facts.value


def test_a_multi_class_result_too_large_for_memory_is_a_lazy_labels_pyramid(
    medcam, qtbot, explainer_file, monkeypatch
):
    from napari_medcam.plugin import lazy

    # as for a whole slide at level 0: everything above 1,000 pixels counts as large
    monkeypatch.setattr("napari_medcam.tiling.IN_MEMORY_PIXELS", 1000)
    monkeypatch.setattr(lazy, "MIN_SIDE", 48)
    viewer, widget = medcam
    use_classifier(widget, COLOUR_FACTORY)
    widget.explainer_panel.use_file(explainer_file)
    viewer.add_image(three_colours(), name="colours", rgb=True)
    run_explanation(qtbot, widget)
    layer = viewer.layers[-1]
    assert layer.multiscale and not isinstance(layer.data[0], np.ndarray)
    level0 = np.asarray(layer.data[0])  # the class labels, not a 0/1 mask
    assert set(np.unique(level0[:, :64])) == {0, 2} and set(np.unique(level0[:, 128:])) == {0, 3}
