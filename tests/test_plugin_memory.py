"""Large results and closing: masks on disk reach napari lazily, closing never blocks."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import numpy as np

import napari_medcam as mc
from napari_medcam.io import read_mask_tiff
from tests.conftest import run_explanation

QUICK = mc.MedCAMConfig.fast(steps=5, min_steps=1)


def test_a_mask_too_large_for_memory_is_added_as_a_lazy_multiscale_layer(
    medcam, qtbot, lesion_tile, monkeypatch, tmp_path
):
    from napari.utils.notifications import notification_manager

    from napari_medcam.plugin import lazy

    # as for a whole slide at level 0: everything above 1,000 pixels counts as large
    monkeypatch.setattr("napari_medcam.tiling.IN_MEMORY_PIXELS", 1000)
    monkeypatch.setattr(lazy, "MIN_SIDE", 112)
    viewer, widget = medcam
    canvas = np.full((224, 448, 3), 245, np.uint8)
    canvas[:, :224] = lesion_tile[0]
    image = viewer.add_image(canvas, rgb=True, name="big", scale=(0.5, 0.5))
    widget.build_config = lambda: QUICK
    widget.settings.add_soft.value = True
    result = run_explanation(qtbot, widget)
    labels = widget.review.result_combo.value
    assert labels is viewer.layers[-1]  # on top, above its soft mask
    # a multiscale layer over the mask on disk: never read whole into memory
    assert labels.multiscale
    assert not isinstance(labels.data[0], np.ndarray)  # level 0: a view of the disk
    assert [tuple(level.shape) for level in labels.data] == [(224, 448), (112, 224), (56, 112)]
    np.testing.assert_allclose(labels.scale, image.scale)
    mask = np.asarray(result.explanation.mask)
    np.testing.assert_array_equal(np.asarray(labels.data[0]), mask)
    soft = viewer.layers[viewer.layers.index(image) + 1]
    assert soft.multiscale and soft.name == "Med-CAM soft: lesion"
    assert not widget.is_edited(labels)
    # it is checked tile by tile, reading the mask window by window
    worker = widget.check_edited_mask()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    check = widget.last_check
    assert "error" not in check, check
    assert check["windows"] == 3 and check["tiles"] >= 1
    assert check["area_fraction"] == mask.mean()
    # saved: the TIFF and its GeoJSON
    tif, geo = widget.save_mask(tmp_path / "big.tif", geojson=True)
    np.testing.assert_array_equal(read_mask_tiff(tif)[0], mask)
    assert json.loads(geo.read_text())["type"] == "FeatureCollection"
    # comparing needs the arrays in memory: a clear message, nothing raised
    viewer.add_labels(np.zeros((224, 448), np.uint8), name="reference")
    widget.review.reference_combo.value = viewer.layers["reference"]
    before = len(notification_manager.records)
    assert widget.compare() is None
    msgs = [str(n.message) for n in notification_manager.records[before:]]
    assert any("too large for memory" in m for m in msgs), msgs
    # a rerun replaces the unedited lazy result (a new layer: napari cannot swap kinds)
    n = len(viewer.layers)
    widget.input.image_combo.value = image
    run_explanation(qtbot, widget)
    assert len(viewer.layers) == n and labels not in viewer.layers
    assert widget.review.result_combo.value.multiscale


def test_closing_the_viewer_never_waits_for_the_worker(
    make_napari_viewer, qtbot, lesion_tile, monkeypatch
):
    """A run in a stretch without cancel points (a long Grad-CAM pass, say) must not
    freeze the GUI when the viewer closes: the run is cancelled, not waited for."""
    import napari_medcam.plugin.worker as worker_module

    release, started = threading.Event(), threading.Event()

    def busy(job):
        started.set()
        yield SimpleNamespace(
            step=1,
            total=2,
            fraction=0.5,
            tile=0,
            tiles=1,
            masked_confidence=0.5,
            area_fraction=0.5,
            stage="optimise",
            describe=lambda: "step 1/2",
        )
        release.wait(60)  # ignores job.cancel until released
        job.done.set()
        return worker_module.JobResult(cancelled=job.cancel.is_set())

    monkeypatch.setattr(worker_module, "run_explanation", busy)
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    viewer.add_image(lesion_tile[0], name="tile", rgb=True)
    worker = widget.explain()
    job = widget.run._ctx.job
    assert started.wait(30)
    t0 = time.perf_counter()
    viewer.close()
    closed_in = time.perf_counter() - t0
    try:
        assert job.cancel.is_set()  # the run was told to stop ...
        assert worker.is_running  # ... and the GUI did not wait for it
        assert closed_in < 5.0, f"closing took {closed_in:.1f} s"  # waiting took ≥ 10 s
    finally:
        release.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    assert len(viewer.layers) == 0
