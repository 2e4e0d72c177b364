"""Exported masks: GeoJSON where QuPath puts the slide's pixels, files a lab can read,
and a TIFF with its GeoJSON written as a pair (both, or neither)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr
from shapely.geometry import shape

import napari_medcam as mc
from napari_medcam.cli import main
from napari_medcam.io import (
    mask_to_geojson,
    read_mask_tiff,
    write_files,
    write_geojson,
    write_mask,
    write_mask_tiff,
)
from napari_medcam.io.slides import write_pyramid


def _mask() -> np.ndarray:
    """A non-square mask: a ring (with a hole), a bar, and a pixel touching it by a corner."""
    m = np.zeros((12, 20), np.uint8)
    m[1:6, 2:7] = 1
    m[3, 4] = 0  # the hole
    m[8:10, 3:15] = 1  # a wide bar: x and y swapped would not fit
    m[10, 15] = 1  # touches the bar's corner only: a region of its own
    return m


def rasterise(doc: dict, shape_yx: tuple[int, int], origin: tuple[int, int] = (0, 0)):
    """Level-0 pixels whose centres lie inside the GeoJSON's polygons ([x, y] order)."""
    geoms = [shape(f["geometry"]) for f in doc["features"]]
    ys, xs = np.mgrid[: shape_yx[0], : shape_yx[1]]
    inside = np.zeros(shape_yx, bool)
    for g in geoms:
        inside |= shapely.contains_xy(g, xs + origin[1] + 0.5, ys + origin[0] + 0.5)
    return inside


@pytest.mark.parametrize("factor", [2, 4])
def test_geojson_of_a_level_region_lands_on_its_level0_pixels(factor):
    mask = _mask()
    origin = (1000, 3000)  # (y0, x0) of the region's first pixel, in level-0 pixels
    doc = mask_to_geojson(mask, {"class_name": "lesion"}, downsample=factor, origin=origin)
    assert doc["type"] == "FeatureCollection"
    kinds = [f["geometry"]["type"] for f in doc["features"]]
    assert kinds == ["Polygon"] * 3  # the ring, the bar, the corner pixel
    ring = doc["features"][0]["geometry"]["coordinates"]
    assert len(ring) == 2  # outer boundary and the hole
    # what QuPath reads: an annotation of the class, in the mask's colour
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"] == {"name": "lesion", "color": [0, 229, 255]}
    assert sum(f["properties"]["area_pixels"] for f in doc["features"]) == mask.sum()
    # rasterised at level 0, the polygons are the mask's pixels, upsampled and placed
    # at the origin: pixel for pixel
    level0 = np.kron(mask, np.ones((factor, factor), np.uint8)).astype(bool)
    pad = 2 * factor
    window = (level0.shape[0] + 2 * pad, level0.shape[1] + 2 * pad)
    drawn = rasterise(doc, window, (origin[0] - pad, origin[1] - pad))
    expected = np.zeros(window, bool)
    expected[pad:-pad, pad:-pad] = level0
    np.testing.assert_array_equal(drawn, expected)
    # coordinates are [x, y]: the bar is wide (x) and thin (y)
    bar = shape(doc["features"][1]["geometry"]).bounds  # (minx, miny, maxx, maxy)
    assert bar == (
        origin[1] + 3 * factor,
        origin[0] + 8 * factor,
        origin[1] + 15 * factor,
        origin[0] + 10 * factor,
    )


def test_geojson_of_a_lazy_mask_is_read_in_bands_and_equals_the_array(tmp_path):
    mask = np.zeros((700, 300), bool)
    mask[100:650, 50:60] = True  # crosses the 512-row band edge
    mask[500:520, 40:250] = True
    store = zarr.create_array(
        store=str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(128, 128), dtype=bool
    )
    store[:] = mask
    lazy = mask_to_geojson(store, downsample=2, origin=(10, 20))
    eager = mask_to_geojson(mask, downsample=2, origin=(10, 20))
    assert len(lazy["features"]) == 1
    assert shape(lazy["features"][0]["geometry"]).equals(shape(eager["features"][0]["geometry"]))
    assert lazy["features"][0]["properties"]["area_pixels"] == mask.sum()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for a test; restored after."""
    before = os.umask(0o022)
    os.umask(before)

    def set_(value: int) -> None:
        os.umask(value)

    yield set_
    os.umask(before)


@pytest.mark.parametrize("mask_bits, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_exported_files_have_the_users_normal_permissions(tmp_path, umask, mask_bits, mode):
    umask(mask_bits)
    m = _mask()
    paths = [
        write_mask_tiff(tmp_path / "a.tif", m),
        write_geojson(tmp_path / "a.geojson", m),
        write_pyramid(tmp_path / "p.tif", m, min_side=4, tile=16),
        *write_mask(tmp_path / "b.tif", m, {"x": 1}, geojson={"class_name": "lesion"}),
    ]
    assert [_mode(p) for p in paths] == [mode] * len(paths)
    # replacing a file gives the new one the same normal mode
    again = write_mask_tiff(tmp_path / "a.tif", m, overwrite=True)
    assert _mode(again) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.geojson",
        "a.tif",
        "b.geojson",
        "b.tif",
        "p.tif",
    ]


def test_tiff_and_geojson_are_written_both_or_neither(tmp_path):
    m = _mask()
    tif, geo = tmp_path / "m.tif", tmp_path / "m.geojson"
    # the GeoJSON cannot be made (a 3-D plane): no TIFF either
    with pytest.raises(ValueError, match="2-D"):
        write_mask(tif, m, geojson={}, plane=np.zeros((2, 3, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
    # an existing GeoJSON alone stops both (nothing replaced without overwrite)
    geo.write_text("old")
    with pytest.raises(FileExistsError):
        write_mask(tif, m, geojson={})
    assert not tif.exists() and geo.read_text() == "old"
    geo.unlink()

    # a writer failing half-way: neither file appears, no temporary file is left
    def broken(_tmp: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_files({tif: lambda p: p.write_text("tif"), geo: broken})
    assert list(tmp_path.iterdir()) == []
    # both written; then a replacement whose first writer fails keeps the old pair
    write_mask(tif, m, {"v": 1}, geojson={"class_name": "lesion"})
    old_tif, old_geo = tif.read_bytes(), geo.read_bytes()
    with pytest.raises(OSError):
        write_files({tif: broken, geo: lambda p: p.write_text("new")}, overwrite=True)
    assert tif.read_bytes() == old_tif and geo.read_bytes() == old_geo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.geojson", "m.tif"]


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_second_rename_takes_the_first_file_back(tmp_path, monkeypatch, existed):
    tif, geo = tmp_path / "m.tif", tmp_path / "m.geojson"
    if existed:
        tif.write_text("old tif")
        geo.write_text("old geojson")
    real = os.replace
    moved: list[Path] = []

    def replace(src, dst):
        if Path(dst) == geo and not Path(src).name.endswith(".bak"):
            raise OSError("rename failed")
        moved.append(Path(dst))
        return real(src, dst)

    monkeypatch.setattr("napari_medcam.io.atomic.os.replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_files(
            {tif: lambda p: p.write_text("new tif"), geo: lambda p: p.write_text("new")},
            overwrite=True,
        )
    assert tif in moved  # the TIFF had been moved into place before the failure
    if existed:  # ... and was taken back: the old pair is intact
        assert tif.read_text() == "old tif" and geo.read_text() == "old geojson"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.geojson", "m.tif"]
    else:  # ... and was removed: neither file
        assert list(tmp_path.iterdir()) == []


def _planted(shape_yx: tuple[int, int]) -> mc.Explanation:
    """A real Explanation with a known mask (placement is the point, not the method)."""
    mask = np.zeros(shape_yx, bool)
    mask[10:30, 40:100] = True
    mask[50:52, 5:7] = True
    return mc.Explanation(
        mask=mask,
        soft_mask=mask.astype(np.float32),
        target=1,
        class_name="lesion",
        original_confidence=0.9,
        masked_confidence=0.9,
        robust_confidence=0.9,
        deletion_confidence=0.1,
        area_fraction=float(mask.mean()),
        seconds=0.0,
        valid=True,
        status="valid",
        probabilities=[0.1, 0.9],
        masked_probabilities=[0.1, 0.9],
        absence="glass",
        steps=0,
    )


def test_cli_geojson_of_a_level_region_overlays_the_tiff_at_level_0(tmp_path, monkeypatch):
    import tifffile

    from tests.test_slides import _make_slide

    slide = tmp_path / "slide.tif"
    _make_slide(slide, 2048)  # levels 0 (2048²) and 1 (1024²)
    planted: list[mc.Explanation] = []

    def fake_explain(image, *_a, **_k):
        planted.append(_planted(tuple(image.shape[:2])))
        return planted[-1]

    monkeypatch.setattr(mc, "explain", fake_explain)
    out = tmp_path / "region.tif"
    # a region whose level-0 origin (301, 515) is not a multiple of the downsample
    args = ["explain", str(slide), "--level", "1", "--region", "301,515,200,300"]
    assert main([*args, "--out", str(out), "--geojson"]) == 0
    mask, meta = read_mask_tiff(out)
    np.testing.assert_array_equal(mask, planted[0].mask)
    f = meta["downsample"]
    y0, x0 = meta["origin_level0"]
    assert f == 2.0 and (y0, x0) == (300.0, 514.0)  # level-1 pixel (150, 257)
    doc = json.loads(out.with_suffix(".geojson").read_text())
    assert doc["features"][0]["properties"]["class_name"] == "lesion"
    # the TIFF's pixels, placed at level 0 as its metadata says, are the polygons' pixels
    with tifffile.TiffFile(slide) as tif:
        full = tif.series[0].levels[0].shape[:2]
    level0 = np.zeros(full, bool)
    up = np.kron(mask, np.ones((2, 2), np.uint8)).astype(bool)
    level0[int(y0) : int(y0) + up.shape[0], int(x0) : int(x0) + up.shape[1]] = up
    np.testing.assert_array_equal(rasterise(doc, full), level0)
    # both files exist now: a rerun without --overwrite replaces neither
    assert main([*args, "--out", str(out), "--geojson"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "region.geojson",
        "region.tif",
        "slide.tif",
    ]
