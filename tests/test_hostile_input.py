"""Hostile and mistaken input (issue 21): one clear line and exit 2 from the CLI, a
ValueError that says what is wrong from the API — never a traceback, never torch's
advice to load a file with ``weights_only=False``."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import napari_medcam as mc
from napari_medcam.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = mc.MedCAMConfig.fast(steps=2, min_steps=1)
#: torch's text: advice to run a refused file's code, unpickling and archive internals
UNSAFE = ("weights_only", "Re-running", "arbitrary code", "Unpickl", "GLOBAL", "miniz", "Pytorch")


@pytest.fixture(scope="module")
def clf():
    return mc.demo_classifier()


@pytest.fixture
def tile(tmp_path) -> Path:
    path = tmp_path / "tile.png"
    Image.fromarray(mc.synthetic_tile(0, 1)[0]).save(path)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-medcam: error:") and "\n" not in err, err
    assert "Traceback" not in err and not any(s in err for s in UNSAFE), err
    return err


def _damaged(tmp_path: Path) -> dict[str, Path]:
    """Torch files as they arrive broken or hostile."""
    whole = tmp_path / "whole.pt"
    torch.save({"x": torch.zeros(1000)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    objects = tmp_path / "objects.pt"  # an object weights_only refuses (torch advises
    torch.save({"x": np.zeros(3)}, objects)  # loading it with weights_only=False)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"x": 1})[:-3])
    return {"truncated": truncated, "objects": objects, "legacy": legacy}


# --- weights that do not fit (item 5) -------------------------------------------------


@pytest.mark.parametrize("spec", ["demo", "napari_medcam.classifiers.demo:demo_classifier"])
def test_weights_that_do_not_fit_are_one_line_and_exit_2(spec, tile, tmp_path, capsys):
    weights = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(3)}, weights)
    argv = ["explain", str(tile), "--classifier", spec, "--weights", str(weights)]
    assert main([*argv, "--out", str(tmp_path / "m.tif"), "--steps", "2"]) == 2
    err = _one_line_error(capsys)
    assert "do not fit" in err and "missing block1.0.weight" in err and "unexpected a" in err
    assert "more" in err and len(err) < 300, err  # the first keys, not all of them
    assert not (tmp_path / "m.tif").exists()


def test_weights_of_another_shape_name_the_tensor(clf, tmp_path):
    state = dict(clf.module.state_dict())
    state["fc.weight"] = torch.zeros(7, state["fc.weight"].shape[1])
    weights = tmp_path / "seven.pt"
    torch.save(state, weights)
    with pytest.raises(ValueError, match=r"do not fit.*fc\.weight is \(7, ") as info:
        mc.load_classifier("demo", weights=weights)
    assert "\n" not in str(info.value)


# --- damaged torch files (item 10) ------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "kind"),
    # a classifier file that is no zip at all was refused plainly before: not listed
    [(o, k) for o in ("--explainer", "--weights") for k in ("truncated", "objects", "legacy")]
    + [("--classifier", "objects")],
)
def test_damaged_torch_files_are_refused_without_torchs_advice(
    option, kind, tile, tmp_path, capsys, recwarn
):
    bad = _damaged(tmp_path)[kind]
    argv = ["explain", str(tile), "--out", str(tmp_path / "m.tif"), option, str(bad)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    said = err.split(str(bad), 1)[1]  # the words after the path (tmp_path says "damaged")
    assert "damaged" in said or "Python objects" in said, err
    assert not any(str(w.message) for w in recwarn if "weights_only" in str(w.message))


def test_damaged_explainer_and_weights_through_the_api(clf, tmp_path):
    for bad in _damaged(tmp_path).values():
        for load in (
            lambda p: mc.load_explainer(p, clf),
            lambda p: mc.load_classifier("demo", weights=p),
        ):
            with pytest.raises(ValueError) as info:
                load(bad)
            # torch's exception is not chained either: a traceback would print it
            assert info.value.__cause__ is None and info.value.__suppress_context__
            assert not any(s in str(info.value) for s in UNSAFE), info.value


def test_a_state_dict_given_as_the_model_says_so(clf, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(clf.module.state_dict(), weights)
    with pytest.raises(ValueError, match="holds weights .a state dict., not a model"):
        mc.load_classifier(weights)


def _calls_torch_load(path: Path) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    )


def test_every_torch_load_goes_through_the_safe_helper():
    calls = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "src").rglob("*.py") if _calls_torch_load(p)
    }
    assert calls == {"src/napari_medcam/classifiers/torchfile.py"}


# --- messages that mislead (item 12) ----------------------------------------------------


def test_a_path_instead_of_an_image_says_how_to_read_it(clf, tile):
    for image in (str(tile), tile):
        with pytest.raises(ValueError, match=r"image must be an array.*read_image\(path\)"):
            mc.explain(image, clf, config=QUICK)
    with pytest.raises(ValueError, match="image must be an array .*got NoneType"):
        mc.explain(None, clf, config=QUICK)


def test_absence_tiles_that_are_not_images_say_so(clf, tile):
    img = mc.synthetic_tile(1, 0)[0]
    with pytest.raises(ValueError, match=r"absence_tiles must be images \(a sequence.*got str"):
        mc.explain(img, clf, config=QUICK, absence_tiles="abc")
    with pytest.raises(ValueError, match="absence_tiles must be images .*got int"):
        mc.explain(img, clf, config=QUICK, absence_tiles=5)
    with pytest.raises(ValueError, match=r"absence_tiles\[1\] must be an array, not a path"):
        mc.explain(img, clf, config=QUICK, absence_tiles=[img, tile])


def _cohort_settings(config: mc.MedCAMConfig) -> dict:
    """The settings `run_cohort` records for the demo classifier and ``config``."""
    from napari_medcam.classifiers.fingerprint import classifier_fingerprint
    from napari_medcam.tiling import overlap_for

    clf = mc.demo_classifier()
    return {
        "config": config.to_dict(),
        "explainer": None,
        "level": "auto",
        "target": None,
        "classifier_fingerprint": classifier_fingerprint(clf),
        "tile_overlap": overlap_for(clf.input_size),
        "tile_batch": None,
    }


def test_a_cohort_rerun_with_other_steps_names_the_option(tmp_path, tile, capsys):
    from napari_medcam.batch.manifest import Manifest

    out = tmp_path / "cohort"
    out.mkdir()
    settings = _cohort_settings(mc.MedCAMConfig.preset("fast", seed=0).capped(10))
    Manifest(out, settings, {"spec": "demo", "weights": None, "name": "demo"}).save()
    assert main(["batch", str(tile), "--out", str(out), "--steps", "12"]) == 2
    err = _one_line_error(capsys)
    assert "--steps: the cohort was run with 10, now 12" in err, err
    assert "config." not in err and "min_steps" not in err, err


def test_cohort_changes_of_preset_tolerance_and_level_in_option_words():
    from napari_medcam.batch.changes import option_changes

    fast = mc.MedCAMConfig.preset("fast", seed=0)
    paper = mc.MedCAMConfig.preset("paper", seed=0).capped(50).replace(tolerance=0.9)
    old, new = _cohort_settings(fast), {**_cohort_settings(paper), "level": 1}
    assert option_changes(old, new) == [
        "--preset: the cohort was run with fast, now paper",
        f"--steps: the cohort was run with {fast.steps + fast.refine_steps}, now 50",
        f"--tolerance: the cohort was run with {fast.tolerance}, now 0.9",
        "--level: the cohort was run with auto, now 1",
    ]


def _slide_job(clf):
    from napari_medcam.batch.task import SlideJob
    from napari_medcam.classifiers.fingerprint import classifier_fingerprint

    return SlideJob(
        classifier="demo",
        weights=None,
        fingerprint=classifier_fingerprint(clf),
        config=QUICK,
        level=None,
        target=None,
        device="cpu",
        settings_hash="test",
    )


def test_a_folder_named_like_a_slide_is_called_a_folder(clf, tmp_path):
    from napari_medcam.batch.task import explain_slide

    folder = tmp_path / "cases" / "case-1.svs"
    folder.mkdir(parents=True)
    row = explain_slide(str(folder), str(tmp_path / "out"), "case-1", _slide_job(clf))
    assert row["status"] == "failed"
    assert row["reason"] == f"{folder} is a folder, not a slide file"


def test_the_terminal_and_summary_give_the_same_seconds(clf, tmp_path):
    import tifffile

    from napari_medcam.batch.outputs import read_result
    from napari_medcam.batch.task import explain_slide

    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, mc.synthetic_tile(3, 1)[0])
    folder = tmp_path / "out"
    row = explain_slide(str(slide), str(folder), "slide", _slide_job(clf))
    assert row["status"] == "done", row
    # the terminal prints the row's seconds, summary.csv the result.json's
    assert row["seconds"] == read_result(folder)["seconds"]
