"""The Med-CAM widget opens through the manifest and says what it will explain."""

from __future__ import annotations

import numpy as np

from napari_medcam.plugin.widget import MedCAMWidget


def test_widget_opens_through_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    assert isinstance(widget, MedCAMWidget)
    # no classifier for a user's own image: the user chooses
    assert widget.classifier is None
    assert "choose the classifier" in widget.classifier_panel.classifier_label_w.value
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    assert widget.classifier is not None
    assert widget.classifier.class_names == ["normal", "lesion"]
    assert "lesion" in widget.classifier_panel.classifier_label_w.value
    assert [c for c in widget.classifier_panel.target_combo.choices] == [None, 0, 1]
    assert (
        "auto" in widget.settings.device_combo.choices
        and "cpu" in widget.settings.device_combo.choices
    )
    assert widget.settings.device_combo.native.currentText() == "auto → cpu"
    # nothing to explain yet: a clear message, Explain disabled
    assert not widget.run.run_button.enabled
    assert "no image layer" in widget.input.region_label.value


def test_follows_images_but_not_other_layers(medcam):
    viewer, widget = medcam
    points = viewer.add_points(np.array([[1.0, 2.0]]), name="pts")
    assert viewer.layers.selection.active is points
    assert not widget.run.run_button.enabled
    assert "'pts' is a Points layer, not an image" in widget.input.region_label.value
    a = viewer.add_image(np.zeros((64, 64), np.uint8), name="a")
    assert widget.input.image_combo.value is a
    assert widget.run.run_button.enabled
    assert "whole image" in widget.input.region_label.value
    b = viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="b", rgb=True)
    assert widget.input.image_combo.value is b
    # selecting (or adding) a layer that is not an image keeps the chosen image
    viewer.layers.selection.active = points
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="ref")
    assert widget.input.image_combo.value is b and widget.run.run_button.enabled
    # the chooser can still be changed by hand
    widget.input.image_combo.value = a
    assert widget.run.run_button.enabled
    viewer.layers.selection.active = b
    assert widget.input.image_combo.value is b


def test_the_only_image_is_chosen_and_samples_open_ready(medcam):
    viewer, widget = medcam
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="ref")
    image = viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    viewer.layers.selection.active = viewer.layers["ref"]
    widget.input.image_combo.value = None
    widget.refresh_choices()
    assert widget.input.image_combo.value is image
    viewer.layers.clear()
    viewer.open_sample("napari-medcam", "synthetic_tile")
    assert isinstance(viewer.layers.selection.active, type(viewer.layers["true evidence"]))
    assert widget.input.image_combo.value is viewer.layers["synthetic tile"]
    assert widget.run.run_button.enabled, widget.run.run_button.tooltip


def test_states_slice_and_tiles(medcam):
    viewer, widget = medcam
    big = viewer.add_image(np.zeros((512, 512, 3), np.uint8), rgb=True, name="big")
    assert "whole image, 9 tiles" in widget.input.region_label.value
    viewer.layers.remove(big)
    # a z-stack with a z scale and offset: the displayed plane comes from world → data
    stack = viewer.add_image(
        np.zeros((6, 64, 64), np.uint8), name="stack", scale=(2.5, 1, 1), translate=(10, 0, 0)
    )
    viewer.dims.set_point(0, 10 + 2.5 * 4)
    assert "current slice (z = 4)" in widget.input.region_label.value
    region = widget.current_region()
    assert region.key[0] == 4 and region.shape == (64, 64)
    viewer.dims.set_point(0, 10 + 2.5 * 1)
    assert "current slice (z = 1)" in widget.input.region_label.value
    assert stack is widget.input.image_combo.value


def test_layer_with_fewer_dims_than_viewer(medcam):
    viewer, widget = medcam
    viewer.add_image(np.zeros((4, 8, 32, 32), np.uint8), name="4d")
    small = viewer.add_image(np.zeros((32, 32), np.uint8), name="2d")
    viewer.dims.set_point(0, 2)
    viewer.dims.set_point(1, 5)
    assert widget.input.image_combo.value is small
    assert "whole image" in widget.input.region_label.value
    viewer.layers.selection.active = viewer.layers["4d"]
    assert "current plane (t = 2, z = 5)" in widget.input.region_label.value


def test_errors_become_notifications_not_tracebacks(medcam, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer, widget = medcam
    # an image the classifier cannot take (its displayed plane is 64 × 2 pixels)
    viewer.add_image(np.zeros((64, 64, 2), np.uint8), name="two-channel")
    viewer.dims.set_point(0, 3)
    before = len(notification_manager.records)
    worker = widget.explain()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.last_result.error
    assert "too small" in widget.last_result.error
    assert "⚠" in widget.run.status_label.value
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("too small" in m for m in msgs), msgs
    assert len(viewer.layers) == 1
    # a broken model file: a message, Explain disabled, nothing raised
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    widget.classifier_panel.classifier_combo.value = ("file", "")
    widget.classifier_panel.model_file.value = bad
    widget.classifier_panel.load_button.clicked()
    assert widget.classifier is None
    assert "cannot load classifier" in widget.classifier_panel.classifier_label_w.value
    assert not widget.run.run_button.enabled
    # invalid advanced setting
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    assert widget.classifier is not None
    widget.settings.advanced["lr"].value = widget.settings.advanced["lr"].min
    widget.settings.advanced["threshold"].value = 0.5
    # the form's value is what the run gets, at full precision
    assert widget.build_config().lr == widget.settings.advanced["lr"].min


def test_explain_a_chosen_class_with_extra_layers(medcam, qtbot, lesion_tile):
    from napari.layers import Image, Labels
    from napari.utils import progress

    viewer, widget = medcam
    image, _ = lesion_tile
    layer = viewer.add_image(image, name="tile", rgb=True, scale=(2.0, 2.0))
    widget.classifier_panel.target_combo.value = 1  # chosen, not "predicted class"
    widget.settings.add_soft.value = True
    widget.settings.add_gradcam.value = True
    worker = widget.explain()
    assert worker is not None
    # progress reaches napari's activity dock
    assert widget.run._pbar is not None and widget.run._pbar in progress._all_instances
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    exp = widget.last_result.explanation
    assert exp.class_name == "lesion" and exp.valid, exp.status
    i = viewer.layers.index(layer)
    soft, gradcam, labels = viewer.layers[i + 1 : i + 4]
    assert isinstance(soft, Image) and soft.name == "Med-CAM soft: lesion"
    assert isinstance(gradcam, Image) and gradcam.name == "Grad-CAM: lesion"
    assert isinstance(labels, Labels) and labels.name == "Med-CAM: lesion"
    # evidence as an outline in the class colour; the extras added hidden
    assert labels.contour > 0 and labels.opacity == 1.0
    assert not soft.visible and not gradcam.visible
    assert labels.metadata["medcam"]["source_layer"] == "tile"
    assert gradcam.metadata["medcam"]["source_layer"] == "tile"
    widget.settings.fill_check.value = True
    assert labels.contour == 0 and labels.opacity < 1
    widget.settings.fill_check.value = False
    assert labels.contour > 0
    legend = widget.summary.legend.text()
    assert "evidence for 'lesion'" in legend and "Grad-CAM" in legend
    # the summary's region count is the Labels layer's, at the scale it was made at
    from napari_medcam.engine.regions import label

    assert exp.regions == label(labels.data > 0)[1] and exp.detail.startswith("cell groups")
    assert f"{exp.regions} region" in widget.summary.text()
    assert (
        "at cell groups" in widget.summary.text() and "grown by a radius" in widget.summary.text()
    )
    for extra in (soft, gradcam, labels):
        np.testing.assert_allclose(extra.scale, layer.scale)
        assert extra.data.shape == image.shape[:2]
    assert gradcam.data.min() >= 0.0 and gradcam.data.max() <= 1.0
    assert labels.metadata["medcam"]["summary"]["target"] == 1
    text = widget.summary.text()
    assert "normal" in text and "lesion" in text and "% of the image" in text
    # what the engine chose for this classifier is shown: the layers it matched
    assert "layers" in text and all(name in text for name in exp.provenance["activation_layers"])
    if exp.absence:
        assert exp.absence in text
    assert widget.run.run_button.text == "Explain" and widget.run.run_button.enabled
    assert not widget.run.progress.visible
    assert widget.run._pbar is None
    # the plugin's own layers are never offered as input: a second Explain explains
    # the original image, not the Grad-CAM heatmap the run added and selected
    assert [n for n, _ in widget.input._image_choices()] == ["tile"]
    viewer.layers.selection.active = gradcam
    assert widget.input.image_combo.value is layer
    assert widget.explain() is not None
    assert widget.run._ctx.layer_name == "tile"
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert len(viewer.layers) == i + 4


def test_region_for_multiscale_and_volume_classifiers(medcam):
    from napari_medcam.plugin.region import find_region

    viewer, widget = medcam
    pyramid = [np.zeros((512, 512), np.uint8), np.zeros((256, 256), np.uint8)]
    ms = viewer.add_image(pyramid, multiscale=True, name="pyramid")
    region = widget.current_region()
    assert region.shape == (512, 512) and region.tiles == 9
    assert "full resolution" in region.description
    viewer.layers.remove(ms)
    vol = viewer.add_image(np.zeros((2, 40, 48, 56), np.uint8), name="tv")
    viewer.dims.set_point(0, 1)
    region = find_region(vol, viewer.dims, spatial_dims=3, input_size=(32, 32, 32))
    assert region.key == (1, slice(None), slice(None), slice(None))
    assert region.shape == (40, 48, 56) and region.tiles == 8
    assert region.description.startswith("volume at t = 1, 8 tiles")
    flat = viewer.add_image(np.zeros((40, 40), np.uint8), name="flat")
    assert "needs a 3-D image" in find_region(flat, viewer.dims, spatial_dims=3).problem


def test_a_tiled_run_adds_a_tile_map_of_valid_and_failed_tiles(medcam, qtbot, monkeypatch):
    from napari.layers import Labels

    import napari_medcam as mc
    from napari_medcam import tiling
    from napari_medcam.engine import image as image_module
    from napari_medcam.plugin.tile_map import tile_map, tile_map_too_large

    real = image_module.evaluate_mask
    calls = []

    def first_tile_fails(*args, **kwargs):  # the first explained tile loses its decision
        ev = real(*args, **kwargs)
        calls.append(ev)
        return {**ev, "masked_pred": 1 - args[3]} if len(calls) == 1 else ev

    monkeypatch.setattr(image_module, "evaluate_mask", first_tile_fails)
    viewer, widget = medcam
    left, _ = mc.synthetic_tile(8000, 1)
    right, _ = mc.synthetic_tile(8001, 1)
    canvas = np.concatenate([left, right], axis=1)  # 224 × 448: three overlapping tiles
    layer = viewer.add_image(canvas, name="slide", rgb=True, scale=(0.5, 0.5), translate=(3, 7))
    # one tile count everywhere: the form, the progress line and the result
    assert widget.current_region().tiles == 3
    assert "3 tiles" in widget.input.region_label.value
    assert "3 tiles ×" in widget.run.estimate_label.value
    lines: list[str] = []
    worker = widget.explain()
    worker.yielded.connect(lambda _e: lines.append(widget.run.status_label.value))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    exp = widget.last_result.explanation
    assert exp.tiles == 3 and len(exp.tile_verdicts) >= 2
    assert any("with the class (of 3)" in line and "at most" in line for line in lines), lines
    # the next estimate uses what a step took in this run
    assert "in the last run here" in widget.run.estimate_label.value
    assert "(3 tiles in all)" in exp.status
    i = viewer.layers.index(layer)
    assert len(viewer.layers) > i + 2, (exp.status, widget.run.status_label.value)
    tiles = viewer.layers[f"Med-CAM tiles: {exp.class_name}"]
    mask = viewer.layers[-1]
    assert viewer.layers.index(tiles) > i
    assert isinstance(tiles, Labels) and tiles.name == f"Med-CAM tiles: {exp.class_name}"
    assert mask.name == f"Med-CAM: {exp.class_name}"
    assert viewer.layers.selection.active is mask  # the mask stays selected
    assert tiles.visible and tiles.contour > 0  # outlines, the tissue stays readable
    assert tiles not in [ly for _n, ly in widget.review._reference_choices()]
    for attr in ("scale", "translate"):
        np.testing.assert_allclose(getattr(tiles, attr), getattr(layer, attr))
    assert tiles.data.shape == mask.data.shape == canvas.shape[:2]
    expected = np.zeros(canvas.shape[:2], np.uint8)
    names = list(exp.provenance["classes"])
    for c in exp.tile_classes:  # tissue of another class: 3 + its class index
        if c["class"] != exp.class_name:
            y0, x0, y1, x1 = c["window"]
            expected[y0:y1, x0:x1] = 3 + names.index(c["class"])
    for v in exp.tile_verdicts:
        if v["valid"]:
            y0, x0, y1, x1 = v["window"]
            expected[y0:y1, x0:x1] = 1
    for v in exp.tile_verdicts:
        if not v["valid"]:  # painted last: the failed window shows whole
            y0, x0, y1, x1 = v["window"]
            expected[y0:y1, x0:x1] = 2
    np.testing.assert_array_equal(tiles.data, expected)
    assert {1, 2} <= set(np.unique(tiles.data).tolist())
    failed = next(v for v in exp.tile_verdicts if not v["valid"])["window"]
    status = tiles.get_status((failed[0] + 1, failed[1] + 1))["coordinates"]
    assert "failed its check" in status  # hovering a tile says what it is
    # no tile map past the in-memory limit (the status says so)
    monkeypatch.setattr(tiling, "IN_MEMORY_PIXELS", 1000)
    assert tile_map(exp) is None and tile_map_too_large(exp)


def test_an_invalid_run_adds_no_layer_and_says_why(medcam, qtbot):
    from napari.utils.notifications import notification_manager

    from .conftest import run_explanation

    viewer, widget = medcam
    viewer.add_image(np.full((64, 64, 3), 255, np.uint8), name="glass", rgb=True)
    widget.classifier_panel.target_combo.value = 1  # 'lesion' on an empty slide
    before = len(notification_manager.records)
    exp = run_explanation(qtbot, widget).explanation
    assert not exp.valid
    assert [ly.name for ly in viewer.layers] == ["glass"]
    status = widget.run.status_label.value
    assert status.startswith("No layer added") and exp.status in status
    text = widget.summary.text()
    assert "Not trustworthy" in text and "lesion" in text
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("no layer" in m for m in msgs) and all(len(m) < 100 for m in msgs), msgs


def test_the_result_reads_as_a_sentence_with_tooltips(medcam):
    from types import SimpleNamespace

    from napari_medcam.plugin.panels.summary import READING_DOC, plain_sentence

    _viewer, widget = medcam
    exp = SimpleNamespace(
        class_name="lesion",
        valid=True,
        status="valid",
        masked_confidence=0.97,
        deletion_confidence=0.99,
        original_confidence=0.99,
        robust_confidence=0.95,
        area_fraction=0.02,
        seconds=3.0,
        steps=40,
        tiles=1,
        provenance={},
        absence="glass",
        probabilities=[0.01, 0.99],
        masked_probabilities=[0.03, 0.97],
        target=1,
        one_line=lambda: "lesion",
        context_keeps=1.0,
        trim_keeps=0.0,
    )
    assert plain_sentence(exp)[0] == "sufficient, not necessary"
    assert "not the only evidence" in plain_sentence(exp)[1]
    assert plain_sentence(SimpleNamespace(**{**vars(exp), "deletion_confidence": 0.1}))[0] == (
        "sufficient and necessary"
    )
    widget.summary.show_explanation(exp, ["normal", "lesion"], "whole image")
    assert widget.summary.text().count("not the only evidence") == 1
    assert "keeps the decision yes" in widget.summary.text()  # the context row
    cells = widget.summary._cells
    assert cells and all(c.toolTip() for c in cells)
    assert READING_DOC.is_file() and "What do these mean?" in widget.summary.link.text()
    from qtpy.QtWidgets import QTextBrowser

    widget.summary.show_help()
    (browser,) = widget.summary.findChildren(QTextBrowser)
    text = browser.toPlainText()  # the whole page (an HTML-like <tag> once cut it short)
    assert "Sufficient and necessary" in text and 'The "normal" class' in text


def test_docked_widget_fits_a_1366x768_screen(medcam, qtbot):
    viewer, widget = medcam
    viewer.window._qt_window.show()
    widget.settings.advanced_toggle.setChecked(True)  # even with Advanced open
    qtbot.wait(50)
    dock = widget.parentWidget()
    while dock is not None and not hasattr(dock, "setFloating"):
        dock = dock.parentWidget()
    assert dock is not None
    window = viewer.window._qt_window
    assert dock.minimumSizeHint().height() <= 400  # the panels scroll inside it
    assert window.minimumSizeHint().height() <= 768 - 40
    window.resize(1366, 768 - 40)  # the screen less a panel or taskbar
    qtbot.wait(50)
    assert window.height() <= 768 - 40
    # the panels do not fit at that height: they scroll, nothing is cut off
    assert widget.scroll.widget().sizeHint().height() > widget.scroll.viewport().height()
    # sections that need a result stay hidden until there is one
    assert not widget.review.isVisibleTo(widget) and not widget.export.isVisibleTo(widget)
    assert all(w.tooltip for w in widget.settings.advanced.values())


def test_cost_is_said_before_work_and_a_long_run_asks_first(medcam, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    viewer, widget = medcam
    viewer.add_image(np.zeros((512, 512, 3), np.uint8), rgb=True, name="big")
    assert widget.current_region().tiles == 9
    assert "whole image, 9 tiles" in widget.input.region_label.value
    text = widget.run.estimate_label.value
    assert text.startswith("Estimate: about") and "9 tiles ×" in text and "timed at" in text
    asked: list[str] = []

    def no(*args, **_kw):
        asked.append(args[2])
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", staticmethod(no))
    widget.set_settings("fast", steps=5000)  # far above a minute on any machine
    widget.settings.ask_above.value = 1
    assert widget.explain() is None and widget.worker is None
    assert asked and "may take about" in asked[0]
    assert widget.run.status_label.value == "Not started."


def test_the_card_says_what_the_classifier_knows_and_warns_out_of_domain(medcam):
    from skimage import data

    import napari_medcam as mc

    viewer, widget = medcam
    card = widget.classifier_panel.classifier_label_w.value
    assert "Synthetic H&E-like" in card and "224 × 224" in card and "lesion" in card
    tile = viewer.add_image(mc.synthetic_tile(3, 1)[0], rgb=True, name="tile")
    assert widget.input.image_combo.value is tile
    check = widget.classifier_panel.domain_check
    assert check is not None and not check.out_of_domain
    assert widget.classifier_panel.domain_label.value.startswith("In domain")
    viewer.add_image(data.immunohistochemistry(), rgb=True, name="ihc")
    check = widget.classifier_panel.domain_check
    assert check is not None and check.out_of_domain
    assert "Out of domain" in widget.classifier_panel.domain_label.value
    # the classifier trained on that image finds it in domain
    widget.classifier_panel.classifier_combo.value = ("registered", "ihc-dab")
    assert not widget.classifier_panel.domain_check.out_of_domain


def test_samples_bring_their_classifier_and_own_images_none(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="mine")
    assert widget.classifier is None and not widget.run.run_button.enabled
    viewer.open_sample("napari-medcam", "synthetic_tile")
    assert widget.input.image_combo.value is viewer.layers["synthetic tile"]
    assert widget.classifier is not None and widget.classifier.class_names == ["normal", "lesion"]
    assert widget.run.run_button.enabled
    # a choice the user made is never changed by a sample
    widget.classifier_panel.classifier_combo.value = ("registered", "ihc-dab")
    viewer.open_sample("napari-medcam", "immunohistochemistry")
    assert widget.classifier_panel.classifier_combo.value == ("registered", "ihc-dab")
