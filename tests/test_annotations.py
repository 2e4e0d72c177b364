"""QuPath annotations in (issue 23, items 2-4): reading, lazy rasters, the loss-free round
trip of exported evidence, comparison tile by tile, the napari reader and the CLI verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.cli.main import main
from napari_medcam.io import mask_to_geojson, write_mask
from napari_medcam.io.annotations import looks_like_annotations


def _feature(geometry: dict, name: str | None, color=(200, 0, 0), otype="annotation") -> dict:
    """A Feature as QuPath ≥ 0.4 writes it (File ▸ Export objects as GeoJSON)."""
    props: dict = {"objectType": otype, "isLocked": False}
    if name is not None:
        props["classification"] = {"name": name, "color": list(color)}
    return {"type": "Feature", "id": "e1b8b1a0", "geometry": geometry, "properties": props}


def _square(x0, y0, x1, y1) -> list:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def qupath_file(tmp_path) -> Path:
    """Three classes: a Tumor square with a hole, a Stroma MultiPolygon, an old-style
    (colorRGB) Necrosis detection, an unclassified annotation and a skipped point."""
    hole = {"type": "Polygon", "coordinates": [_square(10, 10, 40, 40), _square(20, 20, 30, 30)]}
    multi = {
        "type": "MultiPolygon",
        "coordinates": [[_square(50, 0, 60, 10)], [_square(70, 0, 80, 10)]],
    }
    old = _feature({"type": "Polygon", "coordinates": [_square(0, 50, 10, 60)]}, None)
    old["properties"]["classification"] = {"name": "Necrosis", "colorRGB": -16744448}
    old["properties"]["objectType"] = "detection"
    features = [
        _feature(hole, "Tumor"),
        _feature(multi, "Stroma", (0, 150, 0)),
        old,
        _feature({"type": "Polygon", "coordinates": [_square(90, 90, 95, 95)]}, None),
        _feature({"type": "Point", "coordinates": [5, 5]}, "Tumor"),
    ]
    return _write(tmp_path / "slide.geojson", {"type": "FeatureCollection", "features": features})


def test_reads_qupath_classes_holes_and_object_types(qupath_file, tmp_path):
    ann = mc.read_annotations(qupath_file, slide_shape=(100, 100, 3))
    assert ann.names == {1: "Tumor", 2: "Stroma", 3: "Necrosis", 4: "Unclassified"}
    assert [c.color for c in ann.classes[:3]] == [(200, 0, 0), (0, 150, 0), (0, 128, 0)]
    assert len(ann) == 5 and ann.skipped == 1
    assert sorted(set(ann.object_types)) == ["annotation", "detection"]
    r = ann.raster()
    assert r.shape == (100, 100)
    assert r[15, 15] == 1 and r[25, 25] == 0 and r[5, 55] == 2 and r[5, 65] == 0
    assert r[55, 5] == 3 and r[92, 92] == 4
    assert (r == 1).sum() == 30 * 30 - 10 * 10
    only = mc.read_annotations(qupath_file, object_types={"detection"})
    assert only.names == {1: "Necrosis"} and only.shape == (60, 10)
    # a bare list of features, as QuPath writes without FEATURE_COLLECTION
    bare = _write(tmp_path / "bare.json", json.loads(qupath_file.read_text())["features"])
    assert (mc.read_annotations(bare).raster((1, 1), (0, 0, 100, 100)) == r).all()


def test_windows_and_levels_are_rasterised_alone(qupath_file):
    ann = mc.read_annotations(qupath_file, slide_shape=(100_000, 100_000))
    window = ann.raster(1.0, (5, 45, 40, 30))  # a slide this large is never rasterised whole
    assert window.shape == (40, 30)
    small = mc.read_annotations(qupath_file, slide_shape=(100, 100))
    assert (window == small.raster()[5:45, 45:75]).all()
    lazy = small.lazy(2.0, chunk=16)
    assert lazy.shape == (50, 50) and (np.asarray(lazy) == small.raster(2.0)).all()
    assert small.raster(2.0)[6, 6] == 1  # level-1 pixel (6, 6): level-0 centre (13, 13)
    assert small.raster(2.0)[12, 12] == 0  # centre (25, 25): in the hole


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not JSON"),
        ('{"type": "Topology"}', "is not GeoJSON features"),
        ('[{"type": "Feature", "geometry": {"type": "Circle"}}]', "geometry type 'Circle'"),
        ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": 3}}]', "malformed"),
        (
            '[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}]',
            "no polygon",
        ),
    ],
)
def test_bad_files_are_refused_in_one_line(tmp_path, content, reason):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(ValueError, match=reason) as err:
        mc.read_annotations(path)
    assert "\n" not in str(err.value)


def test_another_slides_annotations_do_not_fit(qupath_file):
    with pytest.raises(ValueError, match="does not fit the slide.*another slide"):
        mc.read_annotations(qupath_file, slide_shape=(60, 80))


def _round_trip(tmp_path, mask, **placement) -> mc.io.Annotations:
    geo = mask_to_geojson(mask, {"class_name": "Evidence"}, **placement)
    return mc.read_annotations(_write(tmp_path / "evidence.geojson", geo))


def test_exported_evidence_round_trips_pixel_exact(tmp_path):
    mask = np.zeros((40, 50), np.uint8)
    mask[2:20, 2:20] = 1
    mask[6:12, 6:12] = 0  # a hole
    mask[8:10, 8:10] = 1  # an island in the hole
    mask[25:30, 30:35] = 1
    mask[30:35, 35:40] = 1  # touches the region above at one corner only
    mask[0, 49] = mask[39, 0] = 1  # single pixels at the edges
    ann = _round_trip(tmp_path, mask)
    assert ann.raster(1.0, (0, 0, *mask.shape)).tolist() == mask.tolist()
    rng = np.random.default_rng(0)
    noisy = (rng.random((64, 64)) > 0.5).astype(np.uint8)  # many corner contacts
    assert (_round_trip(tmp_path, noisy).raster(1.0, (0, 0, 64, 64)) == noisy).all()


def test_level_one_export_with_origin_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    mask = (rng.random((48, 40)) > 0.6).astype(np.uint8)
    ann = _round_trip(tmp_path, mask, downsample=2.0, origin=(300, 120), mpp=0.5)
    assert (ann.raster(2.0, (150, 60, 48, 40)) == mask).all()  # origin / downsample
    geo = json.loads((tmp_path / "evidence.geojson").read_text())
    props = geo["features"][0]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"]["name"] == "Evidence"
    assert props["measurements"]["Area µm^2"] == pytest.approx(props["area_pixels"] * 4 * 0.25)


def test_label_mask_round_trips_with_its_class_values(tmp_path):
    labels = np.zeros((30, 30), np.uint8)
    labels[0:10, 0:10] = 2
    labels[10:20, 10:20] = 3  # corner contact with class 2
    geo = mask_to_geojson(labels, {}, classes={1: "Benign", 2: "Tumor", 3: "Stroma"})
    ann = mc.read_annotations(_write(tmp_path / "labels.geojson", geo), slide_shape=(30, 30))
    assert ann.names == {2: "Tumor", 3: "Stroma"}
    assert (ann.raster() == labels).all()


def test_compare_counts_per_class_tile_by_tile(tmp_path, qupath_file):
    ann = mc.read_annotations(qupath_file, slide_shape=(100, 100))
    evidence = np.zeros((100, 100), np.uint8)
    evidence[10:40, 10:25] = 1  # half the tumor square, its hole's left part included
    evidence[0:10, 50:60] = 1  # one of the two stroma squares
    result = mc.compare(evidence, ann, tile=16)
    rows = {r.name: r for r in result.rows}
    tumor = rows["Tumor"].scores()
    assert rows["Tumor"].overlap == 30 * 15 - 10 * 5 and rows["Tumor"].annotated == 800
    assert tumor["precision"] == pytest.approx(400 / 550)
    assert tumor["recall"] == pytest.approx(0.5)
    assert (rows["Stroma"].regions, rows["Stroma"].touched) == (2, 1)
    assert rows["Necrosis"].scores()["touched"] == 0.0
    assert rows["all classes"].annotated == 800 + 200 + 100 + 25
    whole = mc.compare(evidence, ann, tile=4096)
    assert whole.as_dict() == result.as_dict()


def test_compare_reads_a_level_one_mask_tiff_and_the_cli(tmp_path, capsys):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:15] = 1
    meta = {"downsample": 2.0, "origin_level0": [40, 60], "slide_shape": [200, 200]}
    written = write_mask(
        tmp_path / "m.tif",
        mask,
        meta,
        geojson={"class_name": "Tumor"},
        downsample=2.0,
        origin=(40, 60),
    )
    scores = mc.compare(written[0], written[1]).rows[0].scores()
    assert scores["dice"] == 1.0 and scores["touched"] == 1.0
    assert main(["compare", str(written[0]), str(written[1]), "--json", "--tile", "7"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"][0]["name"] == "Tumor" and out["classes"][0]["iou"] == 1.0
    other = _write(
        tmp_path / "o.geojson",
        [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 500, 500)]}, "Tumor")],
    )
    assert main(["compare", str(written[0]), str(other)]) == 2
    assert "does not fit the slide" in capsys.readouterr().err


def test_napari_opens_annotations_as_labels(make_napari_viewer, qupath_file, tmp_path):
    from napari_medcam.plugin.annotations import get_annotations_reader

    (tmp_path / "result.json").write_text('{"target": 1}')
    assert get_annotations_reader(str(tmp_path / "result.json")) is None
    assert looks_like_annotations(qupath_file)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(qupath_file, plugin="napari-medcam")
    assert layer.__class__.__name__ == "Labels"
    assert layer.metadata["classes"] == {
        "1": "Tumor",
        "2": "Stroma",
        "3": "Necrosis",
        "4": "Unclassified",
    }
    assert list(layer.features["class"])[1:] == ["Tumor", "Stroma", "Necrosis", "Unclassified"]
    assert np.asarray(layer.data)[15, 15] == 1
