"""The Med-CAM widget opens through the manifest and says what it will explain."""

from __future__ import annotations

import numpy as np

from napari_medcam.plugin.widget import MedCAMWidget
from tests.conftest import run_explanation


def test_widget_opens_through_manifest(medcam):
    viewer, widget = medcam
    assert isinstance(widget, MedCAMWidget)
    assert widget.classifier is not None
    assert widget.classifier.class_names == ["normal", "lesion"]
    assert "lesion" in widget.classifier_label_w.value
    assert [c for c in widget.target_combo.choices] == [None, 0, 1]
    assert "auto" in widget.device_combo.choices and "cpu" in widget.device_combo.choices
    assert widget.device_combo.native.currentText() == "auto → cpu"
    # nothing to explain yet: a clear message, Explain disabled
    assert not widget.run_button.enabled
    assert "no image layer" in widget.region_label.value


def test_follows_active_layer_and_rejects_non_images(medcam):
    viewer, widget = medcam
    a = viewer.add_image(np.zeros((64, 64), np.uint8), name="a")
    assert widget.image_combo.value is a
    assert widget.run_button.enabled
    assert "whole image" in widget.region_label.value
    b = viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="b", rgb=True)
    assert widget.image_combo.value is b
    points = viewer.add_points(np.array([[1.0, 2.0]]), name="pts")
    assert viewer.layers.selection.active is points
    assert not widget.run_button.enabled
    assert "'pts' is a Points layer, not an image" in widget.region_label.value
    # the chooser can still be changed by hand
    widget.image_combo.value = a
    assert widget.run_button.enabled
    viewer.layers.selection.active = b
    assert widget.image_combo.value is b


def test_states_slice_and_tiles(medcam):
    viewer, widget = medcam
    big = viewer.add_image(np.zeros((512, 512, 3), np.uint8), rgb=True, name="big")
    assert "whole image, 9 tiles" in widget.region_label.value
    viewer.layers.remove(big)
    # a z-stack with a z scale and offset: the displayed plane comes from world → data
    stack = viewer.add_image(np.zeros((6, 64, 64), np.uint8), name="stack",
                             scale=(2.5, 1, 1), translate=(10, 0, 0))
    viewer.dims.set_point(0, 10 + 2.5 * 4)
    assert "current slice (z = 4)" in widget.region_label.value
    region = widget.current_region()
    assert region.key[0] == 4 and region.shape == (64, 64)
    viewer.dims.set_point(0, 10 + 2.5 * 1)
    assert "current slice (z = 1)" in widget.region_label.value
    assert stack is widget.image_combo.value


def test_layer_with_fewer_dims_than_viewer(medcam):
    viewer, widget = medcam
    viewer.add_image(np.zeros((4, 8, 32, 32), np.uint8), name="4d")
    small = viewer.add_image(np.zeros((32, 32), np.uint8), name="2d")
    viewer.dims.set_point(0, 2)
    viewer.dims.set_point(1, 5)
    assert widget.image_combo.value is small
    assert "whole image" in widget.region_label.value
    viewer.layers.selection.active = viewer.layers["4d"]
    assert "current plane (t = 2, z = 5)" in widget.region_label.value


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
    assert "⚠" in widget.status_label.value
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("too small" in m for m in msgs), msgs
    assert len(viewer.layers) == 1
    # a broken model file: a message, Explain disabled, nothing raised
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    widget.classifier_combo.value = ("file", "")
    widget.model_file.value = bad
    widget.load_button.clicked()
    assert widget.classifier is None
    assert "cannot load classifier" in widget.classifier_label_w.value
    assert not widget.run_button.enabled
    # invalid advanced setting
    widget.classifier_combo.value = ("registered", "demo")
    assert widget.classifier is not None
    widget.advanced["lr"].value = widget.advanced["lr"].min
    widget.advanced["threshold"].value = 0.5
    assert widget.build_config().lr > 0


def test_explain_adds_layer_and_summary(medcam, qtbot, lesion_tile):
    viewer, widget = medcam
    image, _ = lesion_tile
    layer = viewer.add_image(image, name="tile", rgb=True)
    result = run_explanation(qtbot, widget)
    exp = result.explanation
    labels = viewer.layers[viewer.layers.index(layer) + 1]
    assert labels.name == f"tile · Med-CAM · {exp.class_name}"
    assert labels.data.shape == image.shape[:2]
    assert "original_confidence" in labels.metadata["medcam"]["summary"]
    assert labels.metadata["medcam"]["config"]["steps"] == 30
    text = widget.summary.text()
    assert exp.class_name in text and "normal" in text and "%" in text
    assert widget.run_button.text == "Explain" and widget.run_button.enabled
    assert not widget.progress.visible
