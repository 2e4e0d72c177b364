"""The pixels inside a slide's kept tiles that keep the slide's decision (issue 24, item 3).

On the MIL zoo's tuning entry (``mil-abmil``) and a slide of its tuning split, whose
positive tiles carry a planted cluster of enlarged nuclei (`pool_evidence`): the pixel
evidence of the kept tile must be a few regions on that cluster, placed in level-0
pixels inside the tile, and must keep the slide's decision.
"""

from __future__ import annotations

import json

import numpy as np
import scipy.ndimage as ndi
import shapely
import tifffile

from napari_medcam.cli import main
from napari_medcam.zoo import mil
from napari_medcam.zoo.mil.slides import pool_evidence

SLIDE = 0  # tune slide 0 is positive


def test_the_pixels_inside_the_kept_tile_lie_on_its_evidence(tmp_path, capsys, one_thread):
    slide = mil.synthetic_slide("tune", SLIDE)
    assert slide.label == 1
    tifffile.imwrite(tmp_path / "slide.tif", slide.image(), photometric="rgb")
    out = tmp_path / "evidence.geojson"
    args = ["explain", str(tmp_path / "slide.tif"), "--slide-classifier", "mil-abmil"]
    assert main([*args, "--pixels", "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    features = json.loads(out.read_text())["features"]
    tiles = [f for f in features if f["properties"].get("evidence") != "pixels"]
    pixels = [f for f in features if f["properties"].get("evidence") == "pixels"]
    assert len(tiles) == summary["kept"] == len(summary["pixels"]) == 1
    (px,) = summary["pixels"]
    assert px["valid"] and px["p_tile_masked"] >= 0.95 * px["p_tile_whole"]
    assert 1 <= len(pixels) == px["regions"] <= 3  # a few regions, not speckle
    assert pixels[0]["properties"]["classification"]["name"] == "tumour (pixels)"
    # inside the kept tile's square, in level-0 pixels
    square = shapely.geometry.shape(tiles[0]["geometry"])
    regions = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in pixels])
    assert square.contains(regions)
    # on the planted cluster: rasterise the regions in the tile and compare
    y0, x0 = px["window"][:2]
    r, c = tiles[0]["properties"]["tile"]
    evidence = pool_evidence("tune", int(slide.layout[r, c]))
    yy, xx = np.mgrid[0 : evidence.shape[0], 0 : evidence.shape[1]]
    inside = shapely.contains_xy(regions, xx.ravel() + x0 + 0.5, yy.ravel() + y0 + 0.5)
    mask = inside.reshape(evidence.shape)
    assert mask.sum() == round(px["area_fraction"] * mask.size)
    near = ndi.binary_dilation(evidence, iterations=2)
    assert (mask & near).sum() / mask.sum() >= 0.75  # 0.96 when written (1 thread)
    assert mask.mean() <= 1.5 * evidence.mean()  # minimal: not the whole tile


def test_pixels_are_refused_before_the_work_when_the_encoder_resizes_tiles(tmp_path, capsys):
    from tests.test_mil import toy_slide

    tifffile.imwrite(tmp_path / "s.tif", toy_slide([(3, 2)]), photometric="rgb")
    spec = "tests.test_mil_pixels:resizing_factory"
    args = ["explain", str(tmp_path / "s.tif"), "--slide-classifier", spec, "--pixels"]
    assert main([*args, "--out", str(tmp_path / "e.geojson")]) == 2
    assert "--pixels needs tiles the encoder reads unresized" in capsys.readouterr().err
    assert not list(tmp_path.glob("e.*"))


def resizing_factory():
    import napari_medcam as mc
    from tests.test_mil import TILE, MaxRed, MeanColour

    return mc.SlideClassifier(
        MeanColour(), MaxRed(), tile_size=TILE, input_size=2 * TILE, class_names=["n", "t"]
    )
