"""Manifest contributions: sample data, the Labels writer, the menus."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcam.io import read_mask_tiff
from napari_medcam.plugin.sample_data import ihc_sample, synthetic_tile_sample
from napari_medcam.plugin.writer import write_labels_tiff


def test_manifest_is_valid_and_contributes_the_widget():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-medcam")
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Med-CAM",
        "Med-CAM slide decision",
    ]
    menus = manifest.contributions.menus
    from napari._app_model.constants import MenuId

    for menu_id in menus:
        assert menu_id in {str(m) for m in MenuId.contributables()}, menu_id


def test_sample_data_layers():
    (img, img_meta, kind), (ev, ev_meta, ev_kind) = synthetic_tile_sample()
    assert kind == "image" and img.shape == (224, 224, 3) and img_meta["rgb"]
    assert ev_kind == "labels" and ev.shape == (224, 224) and ev.dtype == np.uint8
    assert ev_meta["name"] == "true evidence" and 0 < ev.mean() < 0.5
    ((ihc, meta, kind),) = ihc_sample()
    assert ihc.shape == (512, 512, 3) and kind == "image" and meta["rgb"]


def test_open_sample_through_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medcam", "synthetic_tile")
    assert [ly.name for ly in viewer.layers] == ["synthetic tile", "true evidence"]
    viewer.open_sample("napari-medcam", "immunohistochemistry")
    assert viewer.layers[-1].data.shape == (512, 512, 3)


def test_writer_round_trips_metadata_and_pixel_size(tmp_path):
    data = np.zeros((30, 40), np.uint8)
    data[5:10, 5:20] = 1
    meta = {
        "metadata": {"medcam": {"summary": {"class_name": "lesion"}}},
        "scale": (0.25, 0.5),
        "name": "m",
    }
    (out,) = write_labels_tiff(str(tmp_path / "m.tif"), data, meta)
    back, info = read_mask_tiff(out)
    np.testing.assert_array_equal(back, data)
    assert info["medcam"]["summary"]["class_name"] == "lesion"
    import tifffile

    with tifffile.TiffFile(out) as tif:
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
    assert xres[0] / xres[1] == pytest.approx(1 / 0.5)
    assert yres[0] / yres[1] == pytest.approx(1 / 0.25)


def test_napari_saves_labels_with_the_writer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((16, 16), np.uint8)
    data[2:5, 2:5] = 1
    viewer.add_labels(data, name="mask", metadata={"medcam": {"note": "hi"}}, scale=(2, 2))
    paths = viewer.layers.save(str(tmp_path / "saved.tif"), selected=False, plugin="napari-medcam")
    (path,) = paths
    back, info = read_mask_tiff(path)
    np.testing.assert_array_equal(back, data)
    assert info == {"medcam": {"note": "hi"}}
