"""One engine, four front ends: the same image and settings give the same mask through the
API, `napari-medcam explain`, `napari-medcam batch` and the napari widget.

Every option that changes the mask lives in the engine (`MedCAMConfig`: preset, steps,
seed, detail), and each front end passes it on without touching the mask afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import napari_medcam as mc
from napari_medcam.cli import main
from napari_medcam.io import read_mask_tiff
from tests.conftest import run_explanation

distributed = pytest.importorskip("distributed")

STEPS, SEED, DETAIL = 12, 3, "cell groups"


@pytest.fixture(scope="module")
def tile():
    return mc.synthetic_tile(seed=11, label=1)[0]


@pytest.fixture(scope="module")
def api_mask(tile):
    cfg = mc.MedCAMConfig.fast(seed=SEED, detail=DETAIL).capped(STEPS)
    exp = mc.explain(tile, mc.demo_classifier(), None, cfg, device="cpu")
    assert exp.mask.any(), exp.status  # a mask to compare, not two empty ones
    return exp.mask


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.array_equal(a > 0, b > 0), f"{int(((a > 0) != (b > 0)).sum())} pixels differ"


def test_cli_explain_gives_the_api_mask(tile, api_mask, tmp_path):
    png, out = tmp_path / "tile.png", tmp_path / "mask.tif"
    Image.fromarray(tile).save(png)
    args = ["explain", str(png), "--out", str(out), "--steps", str(STEPS)]
    assert main([*args, "--seed", str(SEED), "--detail", DETAIL, "--device", "cpu"]) == 0
    _same(read_mask_tiff(out)[0], api_mask)


def test_batch_gives_the_api_mask(tile, api_mask, tmp_path):
    from napari_medcam.batch import run_cohort

    slide = tmp_path / "case.tif"
    tifffile.imwrite(slide, tile)
    cfg = mc.MedCAMConfig.fast(seed=SEED, detail=DETAIL).capped(STEPS)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        report = run_cohort(
            [slide],
            tmp_path / "cohort",
            config=cfg,
            scheduler=cluster.scheduler_address,
            progress=False,
            log=lambda line: None,
            device="cpu",
        )
    assert not report.failed
    _same(read_mask_tiff(tmp_path / "cohort" / "slides" / "case" / "mask.tif")[0], api_mask)


def test_widget_gives_the_api_mask(tile, api_mask, medcam, qtbot):
    viewer, widget = medcam
    widget.input.image_combo.value = viewer.add_image(tile, name="tile", rgb=True)
    widget.set_settings(
        "fast", steps=STEPS, seed=SEED, detail=DETAIL, threads=torch.get_num_threads()
    )
    widget.settings.device_combo.value = "cpu"
    run_explanation(qtbot, widget)
    _same(np.asarray(viewer.layers[-1].data), api_mask)
