"""Saving from the widget: the GeoJSON of a slide region lands where QuPath shows it."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.io import read_mask_tiff
from tests.conftest import run_explanation
from tests.test_export import rasterise

SCALE = (0.5, 0.5)
TRANSLATE = (10.0, 20.0)


@pytest.fixture(scope="module")
def levels() -> list[np.ndarray]:
    """A two-level slide: level 1 a normal tile beside a lesion tile, level 0 its 2× upsampling."""
    normal, _ = mc.synthetic_tile(seed=1, label=0)
    lesion, _ = mc.synthetic_tile(seed=0, label=1)
    level1 = np.concatenate([normal, lesion], axis=1)  # 224 × 448 × 3
    return [np.kron(level1, np.ones((2, 2, 1), np.uint8)), level1]


def test_geojson_of_a_visible_level_region_overlays_its_level0_pixels(
    medcam, levels, qtbot, tmp_path, monkeypatch
):
    from napari_medcam.plugin.panels import run as run_panel

    # 5 steps on an all-lesion view give an untrustworthy mask; the export is the point
    monkeypatch.setattr(run_panel, "has_evidence", lambda exp: True)
    viewer, widget = medcam
    img = viewer.add_image(
        levels, multiscale=True, rgb=True, scale=SCALE, translate=TRANSLATE, name="slide"
    )
    widget.build_config = lambda: mc.MedCAMConfig.fast(steps=5, min_steps=1)
    widget.input.level_combo.value = 1
    widget.input.scope_combo.value = "visible"
    camera = viewer.scene.camera
    camera.center = (TRANSLATE[0] + 112 * 2 * SCALE[0], TRANSLATE[1] + 336 * 2 * SCALE[1])
    camera.zoom = 6
    region = widget.current_region()
    y0, x0 = region.origin  # at level 1
    assert region.level == 1 and y0 > 0 and x0 > 0
    run_explanation(qtbot, widget)
    labels = widget.review.result_combo.value
    # the pathologist's edit: two known shapes, one of them touching the region's edge
    h, w = labels.data.shape
    edited = np.zeros((h, w), np.uint8)
    edited[3:9, 5:20] = 1
    edited[h - 4 :, 2:4] = 1
    labels.data = edited
    before = os.umask(0o022)
    try:
        tif, geo = widget.save_mask(tmp_path / "m.tif", geojson=True)
    finally:
        os.umask(before)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tif, geo)] == [0o644, 0o644]
    data, meta = read_mask_tiff(tif)
    np.testing.assert_array_equal(data, edited)
    where = meta["medcam"]["region"]
    assert where["level"] == 1 and where["downsample"] == [2.0, 2.0]
    oy, ox = where["origin_level0"]
    assert (oy, ox) == (2 * y0, 2 * x0)
    # the TIFF's pixels placed at level 0 as its metadata says = the GeoJSON's pixels
    full = levels[0].shape[:2]
    level0 = np.zeros(full, bool)
    up = np.kron(data, np.ones((2, 2), np.uint8)).astype(bool)
    level0[int(oy) : int(oy) + up.shape[0], int(ox) : int(ox) + up.shape[1]] = up
    doc = json.loads(geo.read_text())
    assert len(doc["features"]) == 2
    np.testing.assert_array_equal(rasterise(doc, full), level0)
    # ... which is where napari draws the mask over the image (to half a level-1 pixel)
    world = labels.data_to_world((3, 5))
    assert np.allclose(img.world_to_data(world), (oy + 6, ox + 10), atol=1.0)
