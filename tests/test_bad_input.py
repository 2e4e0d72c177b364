"""Every kind of bad input gets a clear message: ValueError from the API, one line
and a non-zero exit from the CLI, and no file left behind."""

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.cli import main

QUICK = mc.MedCAMConfig.fast(steps=2, min_steps=1)


@pytest.fixture(scope="module")
def clf():
    return mc.demo_classifier()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
        (np.full((32, 32, 3), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((2, 3, 32, 32, 3), np.uint8), "expected"),
        (np.zeros((32,), np.uint8), "expected"),
        (np.zeros((32, 32, 5), np.uint8), "5 channels"),
        (np.zeros((7, 32, 3), np.uint8), "too small"),
        (np.zeros((32, 32, 3), bool), "dtype"),
    ],
)
def test_api_rejects_bad_images(clf, image, message):
    with pytest.raises(ValueError, match=message):
        mc.explain(image, clf, config=QUICK)


@pytest.mark.parametrize(
    ("target", "message"),
    [(5, "out of range"), (-1, "out of range"), ("tumour", "unknown class name")],
)
def test_api_rejects_bad_targets(clf, target, message):
    img, _ = mc.synthetic_tile(0, 1)
    with pytest.raises(ValueError, match=message):
        mc.explain(img, clf, target=target, config=QUICK)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="lr must be > 0"):
        mc.MedCAMConfig.fast(lr=0)
    with pytest.raises(ValueError, match="unknown preset"):
        mc.MedCAMConfig.preset("slow")


def test_model_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        mc.load_classifier(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(ValueError, match="empty"):
        mc.load_classifier(empty)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        mc.load_classifier(corrupt)
    with pytest.raises(ValueError, match="unknown classifier"):
        mc.load_classifier("no-such-model")
    with pytest.raises(ValueError, match="cannot import factory"):
        mc.load_classifier("no_such_pkg.mod:factory")


def _file(name, data):
    def make(d):
        (d / name).write_bytes(data)
        return d / name

    return make


def _tile_file(tmp_path):
    from PIL import Image

    img, _ = mc.synthetic_tile(1, 1)
    path = tmp_path / "tile.png"
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: d / "missing.png", [], "not found"),
        (_file("bad.png", b"garbage"), [], "cannot read"),
        (_file("e.tif", b""), [], "empty"),
        (_file("x.bmp", b"BM"), [], "unsupported"),
        (_tile_file, ["--target", "7"], "out of range"),
        (_tile_file, ["--target", "tumour"], "unknown class"),
        (_tile_file, ["--classifier", "missing.pt"], "not found"),
        (_tile_file, ["--device", "cuda:7"], "not available"),
    ],
)
def test_cli_bad_input_one_line_nonzero_no_file(tmp_path, capsys, make, extra, message):
    image = make(tmp_path)
    out = tmp_path / "mask.tif"
    code = main(["explain", str(image), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mask")]


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("same.geojson", ["--geojson"], "overwritten by its own GeoJSON"),
        ("folder", [], "is a folder"),
        ("missing/mask.tif", [], "does not exist"),
    ],
)
def test_cli_refuses_outputs_it_cannot_write_before_any_work(tmp_path, capsys, out, extra, message):
    """Where the results go is checked before the explanation runs (on a slide: hours)."""
    (tmp_path / "folder").mkdir()
    image = _tile_file(tmp_path)
    code = main(["explain", str(image), "--out", str(tmp_path / out), "--steps", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "tile.png"]


@pytest.mark.parametrize(
    ("overlap", "message"), [(224, "from 0 to 112"), (-3, "from 0 to 112"), ("8", "integer")]
)
def test_tile_overlap_is_checked_before_any_work(overlap, message):
    clf = mc.demo_classifier()
    big = np.zeros((600, 600, 3), np.uint8)
    with pytest.raises(ValueError, match=message):
        mc.explain(big, clf, tile_overlap=overlap)
