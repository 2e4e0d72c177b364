"""Slides (multiscale images) in the widget: a chosen pyramid level, the whole slide or the view.

The slide is built in memory: level 1 is a normal tile beside a lesion tile
(224 × 448 RGB), level 0 its 2× upsampling; the layer is scaled and translated
so that a misplaced result would show.
"""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest

import napari_medcam as mc
from tests.conftest import run_explanation

SCALE = (0.5, 0.5)
TRANSLATE = (10.0, 20.0)


@pytest.fixture(scope="module")
def slide() -> tuple[list[np.ndarray], np.ndarray]:
    normal, _ = mc.synthetic_tile(seed=1, label=0)
    lesion, evidence = mc.synthetic_tile(seed=0, label=1)
    level1 = np.concatenate([normal, lesion], axis=1)  # 224 × 448 × 3
    ev1 = np.zeros(level1.shape[:2], bool)
    ev1[:, 224:] = evidence
    level0 = np.kron(level1, np.ones((2, 2, 1), np.uint8))  # 448 × 896 × 3
    return [level0, level1], ev1


def _add_slide(viewer, widget, levels):
    img = viewer.add_image(
        levels, multiscale=True, rgb=True, scale=SCALE, translate=TRANSLATE, name="slide"
    )
    assert widget.input.image_combo.value is img
    # a short run; min_steps is not in the form, so the config is given directly
    widget.build_config = lambda: mc.MedCAMConfig.fast(steps=30, min_steps=5)
    return img


def _world_box(layer, shape) -> np.ndarray:
    lo = np.asarray(layer.translate, float)
    return np.stack([lo, lo + np.asarray(shape[:2], float) * np.asarray(layer.scale, float)])


def _mask_world_points(labels) -> np.ndarray:
    rc = np.argwhere(np.asarray(labels.data) == 1).astype(float)
    return np.asarray([labels.data_to_world(p) for p in rc])


def test_whole_slide_at_level_1_lines_up_with_the_image(medcam, slide, qtbot, tmp_path):
    viewer, widget = medcam
    levels, ev1 = slide
    img = _add_slide(viewer, widget, levels)
    # the form offers the levels (finest ≤ 4096 px by default) and the region choice
    assert not widget.input.slide_form.native.isHidden()
    assert list(widget.input.level_combo.choices) == [0, 1]
    assert widget.input.level_combo.value == 0 and widget.input.scope_combo.value == "whole"
    widget.input.level_combo.value = 1
    assert "whole slide at level 1 (downsample 2×)" in widget.input.region_label.value
    assert "224 × 448 px" in widget.input.region_label.value

    worker = widget.explain()
    assert worker is not None
    # the worker gets a lazy view: no pixel was read in the GUI thread
    assert isinstance(worker_job_image(widget), da.Array)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    result = widget.last_result
    assert result is not None and not result.error, result and result.error

    labels = widget.review.result_combo.value
    assert labels.data.shape == (224, 448)
    np.testing.assert_allclose(labels.scale, np.multiply(SCALE, 2))
    np.testing.assert_allclose(labels.translate, TRANSLATE)
    # the same world extent as the image: [translate, translate + shape × pixel size]
    np.testing.assert_allclose(
        _world_box(labels, labels.data.shape), _world_box(img, levels[0].shape[:2])
    )
    # napari's pixel-centre extents differ by one level-0 pixel at most (it centres
    # level-1 pixel i on level-0 pixel 2i, as it draws that level)
    np.testing.assert_allclose(labels.extent.world, img.extent.world, atol=SCALE[0] + 1e-9)
    meta = labels.metadata["medcam"]["region"]
    assert meta["level"] == 1 and meta["origin"] == [0, 0] and not meta["visible_region"]
    assert "level 1" in widget.summary.text()
    # the explained area is outlined: "not explained" differs from "no evidence"
    (area,) = [ly for ly in viewer.layers if ly.name.startswith("Med-CAM area")]
    np.testing.assert_allclose(area.scale, labels.scale)
    np.testing.assert_allclose(area.translate, labels.translate)
    np.testing.assert_allclose(np.ptp(area.data[0], axis=0), (224, 448))

    # mask pixels, taken to the world and back into the image's level 1, hit the lesion
    world = _mask_world_points(labels)
    assert len(world) > 0
    data0 = np.asarray([img.world_to_data(p) for p in world])
    rc1 = np.clip(np.floor(data0 / 2 + 0.5).astype(int), 0, np.array(ev1.shape) - 1)
    on_lesion_tile = rc1[:, 1] >= 224
    assert on_lesion_tile.mean() > 0.8, on_lesion_tile.mean()
    assert ev1[rc1[:, 0], rc1[:, 1]].mean() > 0.3
    # (the same explanation, to keep the suite short:) compared with a QuPath file
    _compare_with_qupath_annotations(viewer, widget, tmp_path)


def _compare_with_qupath_annotations(viewer, widget, tmp_path):
    """A QuPath GeoJSON (level-0 pixels) opened as a layer and chosen under Compare is
    scored from its file per class, at the mask's level and placement: the very numbers
    `mc.compare` gives for the exported mask."""

    def feature(x0, x1, name):
        ring = [[x0, 0], [x1, 0], [x1, 448], [x0, 448], [x0, 0]]
        props = {"objectType": "annotation", "classification": {"name": name}}
        return {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props,
        }

    path = tmp_path / "slide.geojson"
    features = [feature(448, 896, "Tumor"), feature(0, 448, "Stroma")]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (ann,) = viewer.open(str(path), plugin="napari-medcam")
    mask_layer = widget.review.result_combo.value
    widget.review.reference_combo.value = ann
    rows = widget.compare()
    assert rows is not None
    by = {r["method"]: r for r in rows}
    assert {"Med-CAM · Tumor", "Med-CAM · Stroma", "Med-CAM · all classes"} <= set(by)
    assert by["Med-CAM · Tumor"]["precision"] > by["Med-CAM · Stroma"]["precision"]
    assert "Tumor" in widget.review.scores_label.text()
    widget.review.result_combo.value = mask_layer
    viewer.layers["slide"].metadata["mpp"] = 0.25  # as the reader records a scanner's
    saved = widget.save_mask(tmp_path / "mask.tif", geojson=True)
    regions = json.loads(saved[1].read_text())["features"]
    assert regions
    for region in regions:  # QuPath's area: level-1 pixels are 2 × 2 level-0 ones
        props = region["properties"]
        assert props["measurements"]["Area µm^2"] == pytest.approx(
            props["area_pixels"] * (2 * 0.25) ** 2
        )
    expected = {r.name: r.scores() for r in mc.compare(saved[0], path).rows}
    for name, scores in expected.items():
        got = by[f"Med-CAM · {name}"]
        assert all(got[k] == pytest.approx(v) for k, v in scores.items()), (name, got, scores)


def worker_job_image(widget):
    return widget.run._ctx.job.image


def test_visible_region_after_zoom_is_placed_where_it_is(medcam, slide, qtbot, monkeypatch):
    from napari_medcam.plugin.panels import run as run_panel

    # the view is all lesion, so the mask is (rightly) not minimal; placement is the
    # point here: place it even so
    monkeypatch.setattr(run_panel, "has_evidence", lambda exp: True)
    viewer, widget = medcam
    levels, ev1 = slide
    img = _add_slide(viewer, widget, levels)
    widget.input.level_combo.value = 1
    widget.input.scope_combo.value = "visible"
    camera = viewer.scene.camera
    # look at the middle of the lesion tile (level-1 pixel (112, 336)), zoomed in
    camera.center = (TRANSLATE[0] + 112 * 2 * SCALE[0], TRANSLATE[1] + 336 * 2 * SCALE[1])
    camera.zoom = 6
    corners = widget.input.visible_corners()
    assert corners is not None
    region = widget.current_region()
    assert region.ok and region.visible and region.level == 1
    assert "visible region at level 1" in widget.input.region_label.value
    h, w = region.shape
    assert h < 224 and w < 448 and h > 8 and w > 8
    y0, x0 = region.origin
    # the region is the part of level 1 inside the canvas corners (world → level 1)
    lo = (corners[0] - TRANSLATE) / np.asarray(SCALE) / 2
    hi = (corners[1] - TRANSLATE) / np.asarray(SCALE) / 2
    assert abs(y0 - lo[0]) <= 1 and abs(x0 - lo[1]) <= 1
    assert abs(y0 + h - hi[0]) <= 2 and abs(x0 + w - hi[1]) <= 2
    assert region.key == (slice(y0, y0 + h), slice(x0, x0 + w))

    exp = run_explanation(qtbot, widget).explanation
    labels = widget.review.result_combo.value
    assert labels is not None, exp.status
    assert labels.data.shape == (h, w)
    np.testing.assert_allclose(labels.scale, np.multiply(SCALE, 2))
    np.testing.assert_allclose(
        labels.translate, np.asarray(TRANSLATE) + np.array([y0, x0]) * 2 * np.asarray(SCALE)
    )
    # its first pixel sits on the image's level-1 pixel (y0, x0)
    np.testing.assert_allclose(
        np.asarray(img.world_to_data(labels.data_to_world((0, 0)))) / 2, (y0, x0)
    )
    # and the result lies inside the view
    ext = labels.extent.world
    assert np.all(ext[0] >= corners[0] - 1.0) and np.all(ext[1] <= corners[1] + 1.0)
    assert "visible region at level 1" in widget.summary.text()

    # the whole slide is still one choice away; a plain image hides the slide form
    widget.input.scope_combo.value = "whole"
    assert widget.current_region().shape == (224, 448)
    viewer.add_image(np.zeros((64, 64), np.uint8), name="plain")
    assert widget.input.slide_form.native.isHidden()
    assert "whole image" in widget.input.region_label.value


def test_level_list_shows_microns_per_pixel_when_the_file_records_it(medcam, tmp_path):
    import tifffile

    from napari_medcam.plugin.reader import read_slide

    viewer, widget = medcam
    path = tmp_path / "slide.tif"
    base = np.full((512, 512, 3), 200, np.uint8)
    with tifffile.TiffWriter(path) as tw:
        for i, img in enumerate([base, base[::2, ::2]]):
            tw.write(
                img,
                tile=(128, 128),
                photometric="rgb",
                subifds=1 if i == 0 else None,
                subfiletype=1 if i else 0,
                **({"resolution": (4e4, 4e4), "resolutionunit": "CENTIMETER"} if i == 0 else {}),
            )
    ((levels, meta, _kind),) = read_slide(str(path))
    assert meta["metadata"]["mpp"] == pytest.approx(0.25)
    viewer.add_image(levels, **meta)
    names = [widget.input.level_combo.native.itemText(i) for i in range(2)]
    assert "0.25 µm/px (≈ 40×)" in names[0] and "0.50 µm/px (≈ 20×)" in names[1], names
    assert widget.input.level_combo.value == 0  # the demo's card records no pixel size

    # a classifier whose card says 0.5 µm/px: the slide's 20× level is the default
    import copy

    from napari_medcam.classifiers.card import ClassifierCard

    clf = copy.copy(widget.classifier_panel.classifier)  # the shared demo stays as it is
    clf.card = ClassifierCard(description="trained at 20x", microns_per_pixel=0.5)
    widget.classifier_panel.classifier = clf
    viewer.add_image(levels, **{**meta, "name": "again"})
    assert widget.input.level_combo.value == 1
