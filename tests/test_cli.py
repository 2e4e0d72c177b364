"""The command line: masks with metadata, JSON, the demo, and never clobbering files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_medcam as mc
from napari_medcam.cli import build_parser, main
from napari_medcam.engine.config import PRESETS
from napari_medcam.io import read_mask_tiff


@pytest.fixture()
def tile_png(tmp_path):
    img, evidence = mc.synthetic_tile(7600, 1)
    path = tmp_path / "tile.png"
    Image.fromarray(img).save(path)
    return path, evidence


def test_explain_writes_compressed_mask_with_metadata(tile_png, tmp_path, capsys):
    path, evidence = tile_png
    out = tmp_path / "mask.tif"
    assert main(["explain", str(path), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("lesion: ") and "→" in line and "% of the image" in line
    assert " region" in line and str(out) in line
    mask, meta = read_mask_tiff(out)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert mask.shape == evidence.shape and mask.any()
    assert meta["class_name"] == "lesion" and meta["valid"] is True
    assert meta["image"] == str(path)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].compression != 1  # compressed


def test_explain_json_and_overwrite_rules(tile_png, tmp_path, capsys):
    path, _ = tile_png
    out = tmp_path / "mask.tif"
    out.write_bytes(b"precious")
    assert main(["explain", str(path), "--out", str(out), "--json"]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    code = main(
        [
            "explain",
            str(path),
            "--out",
            str(out),
            "--json",
            "--overwrite",
            "--target",
            "lesion",
            "--seed",
            "1",
            "--steps",  # JSON and the overwrite rules are under test, not the mask
            "5",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["target"] == 1 and summary["mask"] == str(out)
    assert summary["config"]["seed"] == 1
    assert read_mask_tiff(out)[0].shape == (224, 224)


def test_explain_steps_and_presets(tile_png, tmp_path, capsys):
    path, _ = tile_png
    out = tmp_path / "quick.tif"
    assert main(["explain", str(path), "--out", str(out), "--json", "--steps", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    cfg = summary["config"]
    assert cfg["steps"] + cfg["refine_steps"] == 5  # coarse and full-resolution steps together
    assert 1 <= summary["steps_run"] <= 10  # one retry at most
    assert main(["explain", str(path), "--out", str(out), "--overwrite", "--steps", "0"]) == 2
    assert "steps must be ≥ 1" in capsys.readouterr().err
    kept = read_mask_tiff(out)[1]["config"]
    assert kept["steps"] + kept["refine_steps"] == 5  # the earlier mask is untouched
    choices = build_parser()._subparsers._group_actions[0].choices["explain"]
    preset = next(a for a in choices._actions if a.dest == "preset")
    assert set(preset.choices) == set(PRESETS)


def test_demo_writes_all_outputs_and_says_where(tmp_path, capsys):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_medcam.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("tile.png", "mask.tif", "overlay.png", "report.json"):
        assert (out / name).is_file()
        assert str(out / name) in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["valid"] and report["mask_precision_vs_truth"] > 0.8
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert overlay.shape == (224 + 2 * 18, 3 * 224 + 8, 3)  # titles above, legend below
    assert 1 <= report["regions"] <= 5  # regions, not specks
    # the same command again, in this process (the entry point is shown above: no second
    # interpreter start to see it refuse before any work)
    assert main(["demo", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def slides_with_and_without_mpp(tmp_path_factory):
    """1,200² synthetic slides of two levels: one recording 0.5 µm/px (0.5 and 1 µm/px by
    level), one recording no pixel size."""
    folder = tmp_path_factory.mktemp("mpp-slides")
    made, procs = {}, []
    for name, extra in (("with", ["--mpp", "0.5"]), ("without", [])):
        made[name] = folder / f"{name}.tif"
        cmd = [sys.executable, "scripts/make_slide.py", str(made[name]), "--size", "1200"]
        procs.append(subprocess.Popen(cmd + extra, stdout=subprocess.DEVNULL))  # both at once
    assert all(p.wait() == 0 for p in procs)
    return made


@pytest.mark.parametrize(
    ("mpp", "level", "said"),
    [
        ("1.0", 1, "level 1: 1 µm/px, nearest the classifier's 1 µm/px"),
        ("3", 1, "warning: level 1: 1 µm/px, nearest the classifier's 3 µm/px — 0.33× off"),
    ],
)
def test_the_level_nearest_the_classifiers_pixel_size_is_explained_and_said(
    slides_with_and_without_mpp, tmp_path, capsys, mpp, level, said
):
    out = tmp_path / "mask.tif"
    args = ["explain", str(slides_with_and_without_mpp["with"]), "--mpp", mpp]
    # one classifier tile at level 1 (224²): the level chosen and said is under test
    args += ["--region", "0,0,448,448", "--steps", "2", "--out", str(out), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert said in captured.err
    assert json.loads(captured.out)["level"] == level
    assert read_mask_tiff(out)[1]["level"] == level


def test_a_slide_without_pixel_size_is_read_by_size_with_a_warning(
    slides_with_and_without_mpp, tmp_path, capsys
):
    out = tmp_path / "mask.tif"
    args = ["explain", str(slides_with_and_without_mpp["without"]), "--mpp", "1"]
    # one classifier tile at level 0 (224²): the level chosen and the warning are under test
    args += ["--region", "0,0,224,224", "--steps", "2", "--out", str(out), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "the slide records no pixel size" in captured.err and "pass --level" in captured.err
    assert json.loads(captured.out)["level"] == 0  # the finest at most 4096 px a side
    bad = ["explain", str(slides_with_and_without_mpp["with"]), "--mpp", "-1", "--out", str(out)]
    assert main([*bad, "--overwrite"]) == 2
    assert "--mpp must be a positive number" in capsys.readouterr().err
