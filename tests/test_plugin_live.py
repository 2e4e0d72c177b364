"""Live mode in a real viewer: the field in view of a slide is explained as the user pans.

The slide (in memory, two levels) is 4 × 8 colour-counter tiles: red on the left
half, green on the right, so which field the live layer shows can be read off its
label values (red → 2, green → 3) and its placement.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from tests.test_amortised import colour_tile
from tests.test_plugin_explainer import COLOUR_FACTORY, colour_explainer, use_classifier

TILE = 64


@pytest.fixture
def explainer_file(tmp_path_factory) -> Path:
    return colour_explainer(str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def live(medcam, explainer_file):
    """(viewer, widget, controller) with the slide open at level 0 and live mode on."""
    viewer, widget = medcam
    rows = [
        np.concatenate([colour_tile(8 * r + c, 1 if c < 4 else 2) for c in range(8)], 1)
        for r in range(4)
    ]
    level0 = np.concatenate(rows, 0)  # 256 × 512 × 3
    viewer.add_image([level0, level0[::2, ::2]], multiscale=True, rgb=True, name="slide")
    use_classifier(widget, COLOUR_FACTORY)
    panel = widget.explainer_panel
    assert panel.use_file(explainer_file) is not None, panel.facts.value
    widget.input.level_combo.value = 0
    look_at(viewer, 128, 128)
    controller = panel.live
    controller._timer.setInterval(50)  # the debounce, shortened for the test
    return viewer, widget, controller


def look_at(viewer, y: float, x: float, side: float = 128) -> None:
    """Centre the view on level-0 pixel (y, x), ``side`` pixels across."""
    camera = viewer.scene.camera
    camera.center = (y, x)
    canvas = viewer.window._qt_viewer.canvas.size
    camera.zoom = min(canvas) / side


def wait_idle(qtbot, controller, timeout: int = 60_000) -> None:
    qtbot.waitUntil(
        lambda: controller.worker is None and not controller._timer.isActive(), timeout=timeout
    )


def field_origin(layer) -> tuple[float, float]:
    return tuple(float(t) for t in layer.translate)


def test_live_layer_follows_the_view(live, qtbot):
    viewer, widget, controller = live
    widget.explainer_panel.live_check.value = True
    assert controller.active
    wait_idle(qtbot, controller)
    layer = controller.layer
    assert layer is not None, widget.explainer_panel.live_label.value
    assert layer.name == "Med-CAM live: slide" and layer.metadata["medcam"]["role"]
    first = field_origin(layer)
    values = set(np.unique(np.asarray(layer.data)))
    assert values == {0, 2}, values  # the left half: red evidence only
    assert first[1] < 4 * TILE
    # pan to the green half: the layer moves onto the new field and shows green
    look_at(viewer, 128, 384)
    wait_idle(qtbot, controller)
    assert field_origin(layer) != first and field_origin(layer)[1] > 4 * TILE - TILE
    assert set(np.unique(np.asarray(layer.data))) == {0, 3}
    assert controller.layer is layer and "green" in widget.explainer_panel.live_label.value
    # off: the view no longer moves the layer
    widget.explainer_panel.live_check.value = False
    shown = field_origin(layer)
    look_at(viewer, 128, 128)
    qtbot.wait(150)
    assert controller.worker is None and field_origin(layer) == shown


def test_a_move_during_a_run_cancels_the_stale_run(live, qtbot):
    viewer, widget, controller = live
    shown = []
    controller.updated.connect(lambda layer: shown.append(field_origin(layer)))
    widget.explainer_panel.live_check.value = True  # explains the left field at once
    stale_job = controller.job
    assert stale_job is not None and controller.worker is not None
    assert isinstance(stale_job.image, da.Array)  # nothing read on the GUI thread
    look_at(viewer, 128, 384)  # the view moves while that run is in flight
    assert stale_job.cancel.is_set() and controller.stale == 1
    wait_idle(qtbot, controller)
    # only the new field was ever shown: the stale run's result never reached the layer
    assert len(shown) == 1 and shown[0][1] > 4 * TILE - TILE
    assert set(np.unique(np.asarray(controller.layer.data))) == {0, 3}
    assert controller.job is None and stale_job.done.is_set()


def test_live_mode_says_why_it_cannot_follow(live, qtbot, monkeypatch):
    from napari_medcam.plugin import live as live_module

    monkeypatch.setattr(live_module, "MAX_TILES", 16)
    viewer, widget, controller = live
    panel = widget.explainer_panel
    look_at(viewer, 128, 256, side=4096)  # zoomed out: more tiles than live explains
    panel.live_check.value = True
    wait_idle(qtbot, controller)
    assert controller.layer is None
    assert "zoom in or choose a coarser level" in panel.live_label.value
    viewer.layers.selection.active = viewer.add_image(colour_tile(1, 1), name="flat", rgb=True)
    qtbot.wait(120)
    assert "multiscale" in panel.live_label.value and controller.layer is None


def test_a_run_finished_before_the_move_arrived_is_not_shown(live, qtbot):
    """The worker may finish between the move and the GUI thread hearing of it: its
    (complete, not cancelled) result is still of the old field and never shown."""
    import time

    viewer, widget, controller = live
    shown = []
    controller.updated.connect(lambda layer: shown.append(field_origin(layer)))
    widget.explainer_panel.live_check.value = True
    stale_job = controller.job
    deadline = time.monotonic() + 60
    while not stale_job.done.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)  # no Qt events: its result waits in the queue
    assert stale_job.done.is_set()
    look_at(viewer, 128, 384)
    assert stale_job.cancel.is_set()
    wait_idle(qtbot, controller)
    assert len(shown) == 1 and shown[0][1] > 4 * TILE - TILE
    assert set(np.unique(np.asarray(controller.layer.data))) == {0, 3}
