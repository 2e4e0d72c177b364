"""Cohorts given hostile or damaged input (issue 21): resume checks every output on disk,
a manifest of wrong types and a result.json that is not an object are handled without a
traceback, a symlink loop or a missing slide fails alone and leaves no folder behind.

Real files in tmp_path and a real LocalCluster (tests/test_batch.py's); one-tile slides.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import tifffile

import napari_medcam as mc
from napari_medcam.batch import run_cohort
from napari_medcam.batch.manifest import MANIFEST
from napari_medcam.batch.outputs import RESULT, slide_outputs_valid
from napari_medcam.cli import main
from tests import test_batch
from tests.test_batch import QUICK, _summary

cluster = test_batch.cluster  # its LocalCluster fixture, one for this module too

#: one tile of the demo classifier's input: a slide explained in a second or two
SIDE = 224


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[Path]:
    """Five single-level one-tile slides (synthetic tissue, some with a lesion)."""
    folder = tmp_path_factory.mktemp("tiny-slides")
    paths = []
    for i, name in enumerate("abcde"):
        image, _ = mc.synthetic_tile(seed=700 + i, label=i % 2, size=SIDE)
        tifffile.imwrite(folder / f"{name}.tif", image, photometric="rgb")
        paths.append(folder / f"{name}.tif")
    return paths


def _cohort(slides, out, cluster, **kw):
    return run_cohort(
        slides,
        out,
        config=QUICK.capped(2),  # the cohort machinery is under test, not the masks
        scheduler=cluster.scheduler_address,
        progress=False,
        log=lambda line: None,
        **kw,
    )


def _cli(cluster, *args: str) -> int:
    return main(["batch", *args, "--scheduler", cluster.scheduler_address, "--steps", "2"])


def test_resume_redoes_slides_whose_files_are_missing_or_broken(tiny, cluster, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    slides = [Path(shutil.copy(p, src / p.name)) for p in tiny]
    out = tmp_path / "cohort"
    first = _cohort(slides, out, cluster)
    assert sorted(first.done) == list("abcde")
    folder = {p.stem: out / "slides" / p.stem for p in slides}
    (folder["a"] / "mask.tif").unlink()
    (folder["b"] / "mask.geojson").write_text("garbage {")
    (folder["c"] / RESULT).write_text("[1, 2]")  # valid JSON, not an object
    (folder["d"] / "mask.tif").unlink()
    (folder["d"] / "notes.txt").write_text("a reader's notes")  # not an output: kept
    slides[3].write_bytes(b"no longer a slide")  # d's redo fails
    assert "mask.tif" in slide_outputs_valid(folder["a"])
    assert "mask.geojson" in slide_outputs_valid(folder["b"])
    assert "not a JSON object" in slide_outputs_valid(folder["c"])

    again = _cohort(slides, out, cluster)
    assert sorted(again.done) == ["a", "b", "c"] and again.skipped == ["e"]
    assert list(again.failed) == ["d"]
    for sid in "abce":
        assert slide_outputs_valid(folder[sid]) == "", sid
    # d's broken outputs are gone: nothing in the summary or the folder says it is done
    assert sorted(p.name for p in folder["d"].iterdir()) == ["notes.txt"]
    rows = _summary(out)
    assert rows["d"]["status"] == "failed" and "not a TIFF" in rows["d"]["reason"]
    assert {rows[s]["status"] for s in "abce"} == {"done"}
    page = (out / "summary.html").read_text()
    assert "slides/d/mask.tif" not in page and "slides/a/mask.tif" in page


def test_a_manifest_of_wrong_types_is_one_line_and_exit_2(tiny, cluster, tmp_path, capsys):
    out = tmp_path / "cohort"
    args = [str(tiny[0]), "--out", str(out)]
    assert _cli(cluster, *args) == 0
    good = json.loads((out / MANIFEST).read_text())
    other = {"path": str(tmp_path / "gone.tif"), "status": "failed"}
    cases = {
        "settings": lambda m: m.update(settings=["a", "list"]),
        "classifier": lambda m: m.update(classifier="demo"),
        "record list": lambda m: m["slides"].update(z=["a", "list"]),
        "record string": lambda m: m["slides"].update(z="z.tif"),
        "status": lambda m: m["slides"].update(z={**other, "status": ["done"]}),
        "seconds": lambda m: m["slides"].update(z={**other, "seconds": [1.5]}),
        "reason": lambda m: m["slides"].update(z={**other, "reason": {"a": 1}}),
    }
    capsys.readouterr()
    for name, spoil in cases.items():
        bad = json.loads(json.dumps(good))
        spoil(bad)
        (out / MANIFEST).write_text(json.dumps(bad))
        assert _cli(cluster, *args) == 2, name
        err = capsys.readouterr().err
        assert "not a napari-medcam cohort manifest" in err, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)


def test_a_symlink_loop_is_one_failed_slide_and_the_others_finish(tiny, cluster, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(tiny[0], src / "ok.tif")
    os.symlink(src / "loop2.tif", src / "loop1.tif")
    os.symlink(src / "loop1.tif", src / "loop2.tif")
    out = tmp_path / "cohort"
    assert _cli(cluster, str(src), "--out", str(out)) == 1  # some slides failed
    rows = _summary(out)
    assert rows["ok"]["status"] == "done"
    for sid in ("loop1", "loop2"):
        assert rows[sid]["status"] == "failed" and "symbolic link loop" in rows[sid]["reason"]
    assert sorted(p.name for p in (out / "slides").iterdir()) == ["ok"]


def test_a_missing_slide_leaves_no_folder(tiny, cluster, tmp_path):
    out = tmp_path / "cohort"
    missing = tmp_path / "missing.tif"
    assert _cli(cluster, str(missing), str(tiny[1]), "--out", str(out)) == 1
    rows = _summary(out)
    assert rows["missing"]["status"] == "failed" and "not found" in rows["missing"]["reason"]
    assert rows["b"]["status"] == "done"
    assert sorted(p.name for p in (out / "slides").iterdir()) == ["b"]
