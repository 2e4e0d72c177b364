"""Fixtures for the napari plugin tests (headless under pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_medcam as mc

#: steps of a run whose mask quality is not the point of the test
QUICK_STEPS = 30


@pytest.fixture(scope="session")
def lesion_tile() -> tuple[np.ndarray, np.ndarray]:
    return mc.synthetic_tile(seed=0, label=1)


@pytest.fixture
def medcam(make_napari_viewer, qtbot):
    """A viewer and the Med-CAM widget docked through the manifest, in a quick setting.

    Returns ``(viewer, widget)``; the widget uses the fast preset with
    ``QUICK_STEPS`` steps (tests that need a good mask raise it).
    """
    from napari_medcam.plugin.widget import MedCAMWidget

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    assert isinstance(widget, MedCAMWidget)
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    widget.set_settings("fast", steps=QUICK_STEPS)
    widget.settings.ask_above.value = 0  # never a modal question in a test
    return viewer, widget


def wait_for_run(qtbot, widget, timeout: int = 120_000) -> None:
    """Block (processing Qt events) until the widget's explanation worker is done."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def run_explanation(qtbot, widget, timeout: int = 120_000):
    """Press Explain and wait for the result; returns the worker's `JobResult`."""
    worker = widget.explain()
    assert worker is not None, widget.input.region_label.value
    wait_for_run(qtbot, widget, timeout)
    result = widget.last_result
    assert result is not None and not result.error, result and result.error
    return result


@pytest.fixture
def one_thread():
    """One torch thread for a test whose figure was measured so, restored after (a tiled
    or pixel-evidence result moves with the thread count: BENCHMARKS, test margins)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
