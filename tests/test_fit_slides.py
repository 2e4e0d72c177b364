"""``napari-medcam fit`` (and `read_tiles`) take a DICOM WSI folder as one slide, opened
through the same `open_slide` as ``explain`` and ``batch`` — not as a folder of images."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.cli import main
from napari_medcam.io import read_tiles
from tests.test_slide_formats import write_dicom


@pytest.fixture(scope="module")
def dicom(tmp_path_factory):
    """A 448² two-level DICOM WSI: a lesion tile, each pixel doubled (4 tiles at level 0)."""
    lesion, _ = mc.synthetic_tile(seed=3, label=1)
    data = np.kron(lesion, np.ones((2, 2, 1), np.uint8))
    return write_dicom(tmp_path_factory.mktemp("dicom") / "case", data), data


def test_read_tiles_samples_a_dicom_wsi_folder_as_one_slide(dicom):
    folder, data = dicom
    clf = mc.demo_classifier()
    tiles = read_tiles([folder], clf, level=0, per_slide=8)
    blocks = [data[y : y + 224, x : x + 224] for y in (0, 224) for x in (0, 224)]
    assert len(tiles) == 4 and all(t.shape == (224, 224, 3) for t in tiles)
    assert all(any(np.array_equal(t, b) for b in blocks) for t in tiles)
    (coarse,) = read_tiles(folder, clf, level=1, per_slide=8)
    np.testing.assert_array_equal(coarse, data[::2, ::2])  # the slide's level 1


def test_cli_fit_takes_a_dicom_wsi_folder(dicom, tmp_path):
    folder, _ = dicom
    out = tmp_path / "explainer.pt"
    args = ["fit", "--tiles", str(folder), "--level", "0", "--out", str(out)]
    assert main([*args, "--steps", "2", "--batch", "2", "--device", "cpu"]) == 0
    report = json.loads(out.with_name("explainer.pt.report.json").read_text())
    assert report["fit"]["tiles"] == 4 and out.is_file()
