"""Hostile files and killed writes: a huge single-strip TIFF is never read whole, and what a
killed write left behind is cleaned the next time a verb writes there."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_medcam as mc
from napari_medcam.cli import main
from napari_medcam.io import clean_stale_temps, open_slide
from napari_medcam.io import slides as slides_io
from napari_medcam.io.atomic import is_temp_name


@pytest.fixture
def strip_image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (1500, 1200, 3), dtype=np.uint8)


def test_an_uncompressed_single_strip_tiff_is_memory_mapped_not_read_whole(
    tmp_path, strip_image, monkeypatch
):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, strip_image, rowsperstrip=strip_image.shape[0])  # one strip
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages[0].dataoffsets) == 1
    monkeypatch.setattr(slides_io, "MAX_BLOCK_BYTES", 2**20)  # the strip is 5 MiB
    with open_slide(path) as slide:
        assert isinstance(slide.levels[0], np.memmap)
        view, origin, f = slide.region(0, (100, 200, 224, 224))
        assert origin == (100, 200) and f == 1
        np.testing.assert_array_equal(np.asarray(view), strip_image[100:324, 200:424])


def test_a_compressed_single_strip_tiff_is_refused_with_the_remedy(
    tmp_path, strip_image, monkeypatch, capsys
):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, strip_image, rowsperstrip=strip_image.shape[0], compression="zlib")
    monkeypatch.setattr(slides_io, "MAX_BLOCK_BYTES", 2**20)
    with pytest.raises(ValueError, match="one strip.*tiled TIFF"):
        open_slide(path)
    out = tmp_path / "mask.tif"
    code = main(["explain", str(path), "--region", "0,0,224,224", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "tiled TIFF" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_temp_names_are_only_ours():
    assert is_temp_name(".mask.tif.0a1b2c3d.tif") and is_temp_name(".mask.tif.0a1b2c3d.bak")
    for other in (".notes", ".mask.tif", ".mask.tif.0a1b2c3d.png", ".x.zzzzzzzz.x", "a.tif"):
        assert not is_temp_name(other), other


def test_a_killed_write_leaves_nothing_once_a_verb_writes_there_again(tmp_path):
    """What a write killed mid-way left (its hidden temp file, a backup) is removed by the
    next run that writes into the folder; a write still going on (a recent temp file) and
    the user's own hidden files are left alone."""
    stale = [tmp_path / ".mask.tif.0a1b2c3d.tif", tmp_path / ".mask.geojson.9f8e7d6c.bak"]
    fresh = tmp_path / ".other.tif.11223344.tif"
    mine = tmp_path / ".notes"
    for p in [*stale, fresh, mine]:
        p.write_bytes(b"x")
    hour_ago = time.time() - 3600
    for p in stale:
        os.utime(p, (hour_ago, hour_ago))
    png = tmp_path / "tile.png"
    Image.fromarray(mc.synthetic_tile(seed=2, label=1)[0]).save(png)
    assert main(["explain", str(png), "--out", str(tmp_path / "mask.tif"), "--steps", "3"]) == 0
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and mine.exists()
    assert clean_stale_temps(tmp_path, older_than=0) == [fresh]
