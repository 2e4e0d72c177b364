"""``batch --mpp`` (issue 23, item 5, for cohorts): each slide's level nearest the µm/px
the classifier reads (``--mpp``, else its card's) is explained, as ``explain --mpp``
picks it; a slide without a pixel size, or whose nearest level is over 1.25× off, gets a
warning in its result and the summary; ``--level`` overrides; the µm/px the level is
matched to is part of the cohort's settings (a rerun re-explains nothing, another value is
refused unless --overwrite); a non-positive --mpp is one line, exit 2.

Real files in tmp_path and a real LocalCluster (tests/test_batch.py's).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

import napari_medcam as mc
from napari_medcam.batch import run_cohort
from napari_medcam.batch.manifest import MANIFEST
from napari_medcam.batch.outputs import read_result, slide_outputs_valid
from napari_medcam.cli import main
from tests import test_batch
from tests.test_batch import ROOT, _summary

cluster = test_batch.cluster  # its LocalCluster fixture, one for this module too

#: the demo classifier, its card saying it reads 1 µm/px (what the workers load too)
CARD_1UM = "tests.test_batch_mpp:demo_reading_one_micron"


def demo_reading_one_micron() -> mc.Classifier:
    clf = mc.demo_classifier()
    clf.card = dataclasses.replace(clf.card, microns_per_pixel=1.0)
    return clf


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    """'scaled': a 1,200² two-level slide recording 0.5 µm/px (0.5 and 1 µm/px by level;
    by size, level 0 would be explained); 'plain': one 224² tile recording no pixel size."""
    folder = tmp_path_factory.mktemp("mpp-cohort")
    scaled, plain = folder / "scaled.tif", folder / "plain.tif"
    cmd = [sys.executable, str(ROOT / "scripts/make_slide.py"), str(scaled), "--size", "1200"]
    subprocess.run([*cmd, "--mpp", "0.5"], check=True, stdout=subprocess.DEVNULL)
    image, _ = mc.synthetic_tile(seed=701, label=1, size=224)
    tifffile.imwrite(plain, image, photometric="rgb")
    return {"scaled": scaled, "plain": plain}


def _cli(cluster, *args: str) -> int:
    return main(["batch", *args, "--scheduler", cluster.scheduler_address, "--steps", "2"])


def _stamps(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("slides/*/result.json")}


def test_the_level_nearest_the_cards_mpp_is_explained_and_a_slide_without_one_warned(
    slides, cluster, tmp_path, capsys
):
    out = tmp_path / "cohort"
    both = [str(slides["scaled"]), str(slides["plain"])]
    assert _cli(cluster, *both, "--out", str(out), "--classifier", CARD_1UM) == 0
    scaled, plain = read_result(out / "slides/scaled"), read_result(out / "slides/plain")
    assert scaled["level"] == 1 and scaled["downsample"] == 2.0  # not level 0, by size
    assert scaled["level_mpp"] == pytest.approx(1.0) and scaled["classifier_mpp"] == 1.0
    assert scaled["level_note"] == "level 1: 1 µm/px, nearest the classifier's 1 µm/px"
    assert scaled["warnings"] == []
    assert plain["level"] == 0 and plain["level_mpp"] is None  # chosen by size
    assert len(plain["warnings"]) == 1 and "records no pixel size" in plain["warnings"][0]
    rows = _summary(out)
    assert "warning: the slide records no pixel size" in rows["plain"]["reason"]
    assert "warning" not in rows["scaled"]["reason"]
    assert float(rows["scaled"]["level_mpp"]) == 1.0 and rows["plain"]["level_mpp"] == ""
    # the regions carry QuPath's area in µm² where the slide records its pixel size
    regions = json.loads((out / "slides/scaled/mask.geojson").read_text())["features"]
    assert regions, "the scaled slide's mask has no region to measure"
    for feature in regions:
        props = feature["properties"]
        area = props["measurements"]["Area µm^2"]
        assert area == pytest.approx(props["area_level0_pixels"] * 0.5**2)
    plain_regions = json.loads((out / "slides/plain/mask.geojson").read_text())["features"]
    assert all("measurements" not in f["properties"] for f in plain_regions)
    page = (out / "summary.html").read_text()
    assert "records no pixel size" in page and "nearest 1 µm/px" in page
    assert json.loads((out / MANIFEST).read_text())["settings"]["mpp"] == 1.0

    stamps = _stamps(out)  # --mpp equal to the card's: the same settings, nothing redone
    assert _cli(cluster, *both, "--out", str(out), "--classifier", CARD_1UM, "--mpp", "1") == 0
    assert _stamps(out) == stamps
    capsys.readouterr()
    again = [*both, "--out", str(out), "--classifier", CARD_1UM, "--mpp", "3"]
    assert _cli(cluster, *again) == 2  # another µm/px: other settings
    err = capsys.readouterr().err
    assert "--mpp: the cohort was run with 1.0, now 3.0" in err and "Traceback" not in err
    assert _stamps(out) == stamps

    assert _cli(cluster, *again, "--overwrite") == 0
    far = read_result(out / "slides/scaled")
    assert far["level"] == 1 and far["level_mpp"] == pytest.approx(1.0)  # the coarsest
    assert far["warnings"] == [
        "level 1: 1 µm/px, nearest the classifier's 3 µm/px — 0.33× off "
        "(the slide has no closer level)"
    ]
    assert "warning: level 1: 1 µm/px" in _summary(out)["scaled"]["reason"]
    assert all(slide_outputs_valid(out / "slides" / s) == "" for s in ("scaled", "plain"))


def test_level_overrides_mpp_and_leaves_it_out_of_the_settings(slides, cluster, tmp_path):
    out = tmp_path / "cohort"
    one = str(slides["scaled"])
    assert _cli(cluster, one, "--out", str(out), "--level", "1", "--mpp", "0.5") == 0
    result = read_result(out / "slides/scaled")
    assert result["level"] == 1 and result["level_mpp"] == pytest.approx(1.0)  # not level 0
    assert result["warnings"] == [] and result["classifier_mpp"] is None
    settings = json.loads((out / MANIFEST).read_text())["settings"]
    assert settings["level"] == 1 and "mpp" not in settings
    stamps = _stamps(out)
    assert _cli(cluster, one, "--out", str(out), "--level", "1") == 0  # the same cohort
    assert _stamps(out) == stamps


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_non_positive_mpp_is_one_line_and_exit_2(slides, tmp_path, capsys, value):
    out = tmp_path / "cohort"
    assert main(["batch", str(slides["plain"]), "--out", str(out), f"--mpp={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mpp must be a positive number of µm per pixel" in err and "\n" not in err
    assert not out.exists()  # nothing written
    with pytest.raises(ValueError, match="--mpp must be a positive number"):
        run_cohort([slides["plain"]], out, mpp=float(value), progress=False)
    assert not out.exists()
