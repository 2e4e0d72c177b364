"""Opening a cohort output folder in napari: a list of slides; choosing one shows the slide
with its mask and tile map lying exactly on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.batch.manifest import Manifest, settings_hash
from napari_medcam.batch.summary import write_summary
from napari_medcam.batch.task import SlideJob, explain_slide
from napari_medcam.classifiers.fingerprint import classifier_fingerprint
from napari_medcam.plugin.cohort import COHORT_KEY, CohortBrowser, get_cohort_reader

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Two explained slides and one that failed, made without a cluster (same task code)."""
    base = tmp_path_factory.mktemp("cohort")
    paths = [base / "first.tif", base / "second.tif"]
    procs = [  # both at once
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/make_slide.py"), str(p), "--size", "1200"]
            + ["--seed", str(i)],
            stdout=subprocess.DEVNULL,
        )
        for i, p in enumerate(paths)
    ]
    assert all(p.wait() == 0 for p in procs)
    (base / "broken.tif").write_bytes(b"no")
    out = base / "out"
    out.mkdir()
    config = mc.MedCAMConfig.fast(retries=0).capped(4)
    fp = classifier_fingerprint(mc.demo_classifier())
    settings = {"config": config.to_dict(), "level": 1, "classifier_fingerprint": fp}
    manifest = Manifest(out, settings, {"spec": "demo", "weights": None, "name": "demo"})
    job = SlideJob("demo", None, fp, config, 1, None, "cpu", settings_hash(settings))
    for p in [*paths, base / "broken.tif"]:
        sid = manifest.add(p)
        manifest.update(sid, **explain_slide(str(p), str(manifest.folder(sid)), sid, job))
    manifest.save()
    write_summary(manifest)
    return out


def _edges(layer) -> np.ndarray:
    half = np.asarray(layer.scale) / 2
    return np.stack([layer.extent.world[0] - half, layer.extent.world[1] + half])


def test_cohort_folder_opens_as_a_list_and_slides_align(make_napari_viewer, cohort, tmp_path):
    assert get_cohort_reader(str(tmp_path)) is None  # a folder without a manifest
    assert get_cohort_reader(str(cohort)) is not None
    viewer = make_napari_viewer()
    viewer.open(str(cohort), plugin="napari-medcam")
    browsers = [w for w in viewer.window._qt_window.findChildren(CohortBrowser)]
    assert len(browsers) == 1
    browser = browsers[0]
    assert browser.list.count() == 3 and "broken — failed" in browser.list.item(2).text()
    assert [layer.name.split(" ·")[0] for layer in viewer.layers] == ["first"] * 3

    browser.select("second")
    names = [layer.name for layer in viewer.layers]
    assert len(names) == 3 and all(n.startswith("second") for n in names)
    image, tiles, mask = viewer.layers
    assert image.multiscale and mask.metadata[COHORT_KEY]["slide"] == "second"
    assert "Med-CAM tiles" in tiles.name and viewer.layers.selection  # mask on top
    # the level-1 mask and tile map cover the level-0 slide exactly
    assert tuple(mask.scale) == (2.0, 2.0) == tuple(tiles.scale)
    assert np.asarray(mask.data[0]).shape == (600, 600)
    for layer in (mask, tiles):  # outer pixel edges in the world: those of the slide
        np.testing.assert_allclose(_edges(layer), _edges(image))
    # level-1 pixel (300, 300) is level-0 pixels 600-601: its centre is their middle
    np.testing.assert_allclose(mask.data_to_world((300, 300)), (600.5, 600.5))
    assert set(np.unique(tiles.data)) <= {0, 1, 2} and tiles.data.any()

    browser.select("broken")  # a failed slide: its reason, the layers stay
    assert "cannot read" in browser.info.text() and len(viewer.layers) == 3


def test_browser_without_viewer_lists_the_slides(cohort):
    browser = CohortBrowser(None, cohort)
    assert browser.finished() == ["first", "second"]
