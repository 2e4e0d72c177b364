"""``batch --slide-classifier`` (issue 24, item 4): a cohort of slides explained with a
slide (MIL) classifier — per slide the minimal tiles that keep its decision, written in
its folder (evidence GeoJSON and summary, result.json, the embeddings' cache), resumed
like any cohort (a rerun re-explains nothing), its settings hashed with the slide
classifier, --absence and --pixels (a change, or a tile classifier in the same folder,
is refused), summary.csv/html with the decision's columns; bad input is one line and
exit 2, before any work.

Real files in tmp_path and a real LocalCluster (tests/test_batch.py's); the slides and
the max-pooling toy slide classifier of tests/test_mil.py, whose minimal set is known:
the one tumour tile.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tifffile

from napari_medcam.batch import run_cohort
from napari_medcam.batch.changes import option_changes
from napari_medcam.batch.manifest import MANIFEST
from napari_medcam.batch.outputs import read_result, slide_outputs_valid
from napari_medcam.batch.summary import DECISION_COLUMNS
from napari_medcam.cli import main
from tests import test_batch
from tests.test_batch import _summary
from tests.test_mil import TILE, toy_slide

cluster = test_batch.cluster  # its LocalCluster fixture, one for this module too

TOY = "tests.test_mil:toy_factory"
#: each slide's one tumour tile (row, column) on its 6×8 tile grid
TUMOUR = {"left": (3, 2), "right": (1, 5)}


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mil-cohort")
    paths = {}
    for name, tile in TUMOUR.items():
        paths[name] = folder / f"{name}.tif"
        tifffile.imwrite(paths[name], toy_slide([tile]), photometric="rgb")
    return paths


def _cli(cluster, *args: str) -> int:
    return main(["batch", *args, "--scheduler", cluster.scheduler_address])


def _stamps(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("slides/*/result.json")}


def test_every_slides_decision_is_explained_and_a_rerun_re_explains_nothing(
    slides, cluster, tmp_path, capsys
):
    out = tmp_path / "cohort"
    both = [str(p) for p in slides.values()]
    assert _cli(cluster, *both, "--slide-classifier", TOY, "--out", str(out)) == 0
    for name, (row, col) in TUMOUR.items():
        folder = out / "slides" / name
        assert slide_outputs_valid(folder) == ""
        (feature,) = json.loads((folder / "evidence.geojson").read_text())["features"]
        x0, y0 = col * TILE, row * TILE  # the tumour tile, in level-0 pixels
        assert feature["geometry"]["coordinates"][0][:3] == [
            [x0, y0],
            [x0 + TILE, y0],
            [x0 + TILE, y0 + TILE],
        ]
        assert feature["properties"]["classification"]["name"] == "tumour"
        evidence = json.loads((folder / "evidence.json").read_text())
        assert evidence["meets_goal"] and evidence["necessary"] and evidence["kept"] == 1
        assert evidence["slide"] == str(slides[name]) and evidence["absence"] == "removal"
        result = read_result(folder)
        assert result["kind"] == "slide decision" and result["level"] == 0
        assert result["sentence"].startswith("1 of 46 tiles suffice for 'tumour';")
        assert result["kept"] == 1 and result["tiles"] == 46 and result["meets_goal"]
        assert (folder / "embeddings.zarr").is_dir()  # cached inside the slide's folder
        assert (folder / "thumbnail.png").is_file() and (folder / "overlay.png").is_file()
    # nothing written beside the slides: every file is under --out
    assert sorted(p.name for p in slides["left"].parent.iterdir()) == ["left.tif", "right.tif"]

    with open(out / "summary.csv") as f:
        header = f.readline().strip().split(",")
    assert header[-len(DECISION_COLUMNS) :] == list(DECISION_COLUMNS)
    rows = _summary(out)
    for name in TUMOUR:
        r = rows[name]
        assert r["status"] == "done" and r["class_found"] == "tumour"
        assert r["sentence"] == read_result(out / "slides" / name)["sentence"]
        assert (r["kept_tiles"], r["tiles"]) == ("1", "46")
        assert r["meets_goal"] == "True" and r["necessary"] == "True"
        assert float(r["p_kept"]) >= 0.95 * float(r["p_original"]) > 0.5
        assert r["tiles_explained"] == r["tiles_valid"] == ""  # no tile verdicts here
        assert int(r["evidence_level0_px"]) == TILE * TILE
    page = (out / "summary.html").read_text()
    assert "1 / 46" in page and "1 of 46 tiles suffice for" in page
    assert "slides/left/evidence.geojson" in page and "mask.tif" not in page
    settings = json.loads((out / MANIFEST).read_text())["settings"]
    assert settings["slide_classifier"] == TOY and settings["absence"] == "removal"
    assert settings["pixels"] is False and len(settings["classifier_fingerprint"]) == 64

    stamps = _stamps(out)
    capsys.readouterr()
    assert _cli(cluster, *both, "--slide-classifier", TOY, "--out", str(out)) == 0
    assert _stamps(out) == stamps  # nothing explained again
    assert "nothing to do: all 2 slides already explained" in capsys.readouterr().out


def test_another_setting_or_a_tile_classifier_is_refused_in_the_same_folder(
    slides, cluster, tmp_path, capsys
):
    out = tmp_path / "cohort"
    one = str(slides["left"])
    report = run_cohort(
        [one],
        out,
        slide_classifier=TOY,
        scheduler=cluster.scheduler_address,
        progress=False,
        log=lambda line: None,
    )
    assert report.done == ["left"] and not report.failed
    folder = out / "slides" / "left"
    stamps, cache = _stamps(out), (folder / "embeddings.zarr").stat().st_mtime_ns
    capsys.readouterr()
    refused = {
        ("--absence", "replacement"): "--absence: the cohort was run with removal, now replacement",
        ("--pixels",): "--pixels: the cohort was run with off, now on",
        ("--target", "normal"): "--target: the cohort was run with none, now normal",
    }
    for extra, message in refused.items():
        assert _cli(cluster, one, "--slide-classifier", TOY, "--out", str(out), *extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
    # a tile classifier into a slide-classifier cohort's folder: refused like any change
    assert _cli(cluster, one, "--out", str(out), "--steps", "2") == 2
    err = capsys.readouterr().err
    assert f"--slide-classifier: the cohort was run with {TOY}, now a tile classifier" in err
    assert _stamps(out) == stamps  # nothing redone
    # and the other way round
    tile = {"classifier_fingerprint": "a" * 64, "level": "auto", "config": {}}
    mil = {**tile, "classifier_fingerprint": "b" * 64, "slide_classifier": TOY}
    mil |= {"absence": "removal", "pixels": False}
    assert option_changes(tile, mil) == [
        f"--slide-classifier: the cohort was run with a tile classifier (--classifier), now {TOY}"
    ]

    # --overwrite: redone with the new absence, the embeddings read back from the cache
    args = [one, "--slide-classifier", TOY, "--out", str(out), "--absence", "replacement"]
    assert _cli(cluster, *args, "--overwrite") == 0
    result = read_result(folder)
    assert result["explanation"]["absence"] == "replacement" and result["kept"] == 1
    assert (folder / "embeddings.zarr").stat().st_mtime_ns == cache  # not embedded again
    assert json.loads((folder / "evidence.json").read_text())["absence"] == "replacement"


def test_pixels_inside_the_kept_tiles(slides, cluster, tmp_path):
    out = tmp_path / "cohort"
    args = [str(slides["right"]), "--slide-classifier", TOY, "--out", str(out), "--pixels"]
    assert _cli(cluster, *args, "--steps", "4") == 0
    folder = out / "slides" / "right"
    assert slide_outputs_valid(folder) == ""
    evidence = json.loads((folder / "evidence.json").read_text())
    assert len(evidence["pixels"]) == 1 and evidence["pixels"][0]["window"] == [
        1 * TILE,
        5 * TILE,
        2 * TILE,
        6 * TILE,
    ]
    features = json.loads((folder / "evidence.geojson").read_text())["features"]
    assert features[0]["properties"]["classification"]["name"] == "tumour"
    pixel_features = [f for f in features if f["properties"].get("evidence") == "pixels"]
    assert pixel_features and len(features) == 1 + len(pixel_features)
    assert json.loads((out / MANIFEST).read_text())["settings"]["pixels"] is True


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--slide-classifier", "nope"], "unknown slide classifier 'nope'"),
        (["--slide-classifier", TOY, "--classifier", "demo"], "--classifier does not apply"),
        (["--slide-classifier", TOY, "--explainer", "demo"], "--explainer does not apply"),
        (["--slide-classifier", TOY, "--mpp", "0.5"], "--mpp does not apply"),
        (["--slide-classifier", TOY, "--target", "cancer"], "unknown class name"),
        (["--pixels"], "--absence and --pixels apply with --slide-classifier only"),
        (["--absence", "replacement"], "apply with --slide-classifier only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(slides, tmp_path, capsys, extra, message):
    out = tmp_path / "cohort"
    assert main(["batch", str(slides["left"]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()  # nothing written, no cluster started


def test_run_cohort_refuses_options_of_the_other_kind(slides, tmp_path):
    out = tmp_path / "cohort"
    with pytest.raises(ValueError, match="--weights does not apply"):
        run_cohort([slides["left"]], out, slide_classifier=TOY, weights="w.pt")
    with pytest.raises(ValueError, match="--absence must be one of"):
        run_cohort([slides["left"]], out, slide_classifier=TOY, absence="blur")
    assert not out.exists()


def test_the_cohort_opens_in_napari_with_each_slides_evidence_tiles_over_its_tiles(
    slides, cluster, tmp_path, make_napari_viewer
):
    import numpy as np

    from napari_medcam.plugin.cohort import CohortBrowser

    out = tmp_path / "cohort"
    assert (
        _cli(
            cluster,
            *[str(p) for p in slides.values()],
            "--slide-classifier",
            TOY,
            "--out",
            str(out),
        )
        == 0
    )
    viewer = make_napari_viewer()
    browser = CohortBrowser(viewer, out)
    lines = [browser.list.item(i).text() for i in range(browser.list.count())]
    assert lines == [
        "left — 1 of 46 tiles suffice for 'tumour'; without them the slide reads 'normal'.",
        "right — 1 of 46 tiles suffice for 'tumour'; without them the slide reads 'normal'.",
    ]
    browser.select("right")
    image, tiles = viewer.layers
    assert tiles.name == "right · Med-CAM slide evidence · tumour"
    row, col = TUMOUR["right"]
    assert np.argwhere(tiles.data == 1).tolist() == [[row, col]]
    centre = (row * TILE + (TILE - 1) / 2, col * TILE + (TILE - 1) / 2)
    assert np.allclose(tiles.data_to_world((row, col)), image.data_to_world(centre))
