"""Cohorts on a real Dask cluster (2 worker processes): every slide explained, reruns skip
finished slides, a worker killed mid-slide loses nothing, a corrupt slide fails alone,
other settings are refused unless forced, Ctrl-C says how to resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.batch import run_cohort
from napari_medcam.batch.changes import option_changes
from napari_medcam.batch.manifest import FORMAT, MANIFEST
from napari_medcam.batch.outputs import read_result, slide_outputs_valid
from napari_medcam.batch.slides import resolve_slides
from napari_medcam.cli import main
from napari_medcam.io import read_mask_tiff

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
#: a quick look per tile: the cohort machinery is under test, not the masks
QUICK = mc.MedCAMConfig.fast(retries=0).capped(5)
LEVEL = 1  # 600² of a 1,200² slide: 9 windows, a few seconds a slide on one core
N_SLIDES = 4


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cohort-slides")
    paths = [folder / f"case{i}.tif" for i in range(N_SLIDES)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/make_slide.py"), str(p), "--size", "1200"]
            + ["--seed", str(i)],
            stdout=subprocess.DEVNULL,
        )
        for i, p in enumerate(paths)
    ]
    assert all(p.wait() == 0 for p in procs)
    return paths


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes (nannies restart killed ones)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


def _run(slides, out, **kw):
    kw.setdefault("config", QUICK)
    lines: list[str] = []
    report = run_cohort(
        slides, out, level=LEVEL, progress=False, log=lines.append, dashboard_address=":0", **kw
    )
    return report, lines


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return {r["slide"]: r for r in csv.DictReader(f)}


def test_every_slide_is_explained_and_a_rerun_does_nothing(slides, tmp_path):
    out = tmp_path / "cohort"
    report, lines = _run(slides, out, workers=2)  # its own LocalCluster
    ids = [p.stem for p in slides]
    assert sorted(report.done) == sorted(ids) and not report.failed and not report.skipped
    assert any(line.startswith("Dask dashboard: http") for line in lines), lines
    for sid in ids:
        folder = out / "slides" / sid
        assert slide_outputs_valid(folder) == ""
        result = read_result(folder)
        assert result["level"] == LEVEL and result["downsample"] == 2.0
        mask, meta = read_mask_tiff(folder / "mask.tif")
        assert mask.shape == (600, 600) and meta["slide"] == str(slides[ids.index(sid)])
        geo = json.loads((folder / "mask.geojson").read_text())
        if mask.any():  # polygons in level-0 pixels: up to 1,200, not 600
            xs = [pt[0] for ft in geo["features"] for pt in ft["geometry"]["coordinates"][0]]
            assert max(xs) > 600 and max(xs) <= 1200
            total = sum(ft["properties"]["area_pixels"] for ft in geo["features"])
            assert total == int(mask.sum())
        assert len(geo["features"]) == result["regions"]  # one polygon per region
    rows = _summary(out)
    assert all(
        int(r["evidence_regions"]) == read_result(out / "slides" / s)["regions"]
        for s, r in rows.items()
    )
    assert set(rows) == set(ids) and all(r["status"] == "done" for r in rows.values())
    assert all(int(r["tiles_explained"]) > 0 for r in rows.values())
    page = (out / "summary.html").read_text()
    assert all(f"slides/{sid}/overlay.png" in page for sid in ids)
    manifest = json.loads((out / MANIFEST).read_text())
    assert {s["status"] for s in manifest["slides"].values()} == {"done"}
    assert (
        manifest["settings"]["classifier_fingerprint"]
        == read_result(out / "slides" / ids[0])["classifier_fingerprint"]
    )

    stamps = {sid: (out / "slides" / sid / "result.json").stat().st_mtime_ns for sid in ids}
    again, lines = _run(slides, out, workers=2)
    assert again.done == [] and sorted(again.skipped) == sorted(ids)
    assert lines == [f"nothing to do: all {N_SLIDES} slides already explained in {out}"]
    assert stamps == {sid: (out / "slides" / sid / "result.json").stat().st_mtime_ns for sid in ids}


def test_a_worker_killed_mid_slide_loses_nothing(slides, cluster, tmp_path):
    out = tmp_path / "cohort"
    killed: dict[str, object] = {}

    def executing(dask_worker) -> tuple[int, list[str]]:  # runs on each worker
        return os.getpid(), [str(ts.key) for ts in dask_worker.state.executing]

    def kill_a_busy_worker() -> None:
        """SIGKILL a worker process 1.5 s into a slide it is still explaining."""
        with distributed.Client(
            cluster.scheduler_address, timeout="20s", set_as_default=False
        ) as c:
            seen: dict[str, float] = {}
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                for pid, keys in c.run(executing).values():
                    for key in keys:
                        first = seen.setdefault(key, time.time())
                        if time.time() - first > 1.5:
                            os.kill(pid, signal.SIGKILL)
                            killed.update(pid=pid, key=key)
                            return
                time.sleep(0.1)

    scheduler_before = dask.config.get("scheduler", None)
    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    report, _ = _run(slides, out, scheduler=cluster.scheduler_address)
    killer.join()
    # the cohort's clients never become the process's default: dask.compute in napari's
    # lazy layers afterwards still runs locally, not on a closed cluster
    assert dask.config.get("scheduler", None) == scheduler_before
    assert killed, "no worker was killed: the test did not test anything"
    assert sorted(report.done) == sorted(p.stem for p in slides) and not report.failed
    for p in slides:
        folder = out / "slides" / p.stem
        assert slide_outputs_valid(folder) == ""
        assert not [f for f in folder.iterdir() if f.name.startswith(".")]
    victim = killed["key"].split("-")[2]  # medcam-slide-<id>-<hash>
    assert read_result(out / "slides" / victim)["pid"] != killed["pid"]  # redone elsewhere
    manifest = json.loads((out / MANIFEST).read_text())
    assert {s["status"] for s in manifest["slides"].values()} == {"done"}


def test_a_corrupt_slide_is_reported_and_the_others_finish(slides, cluster, tmp_path, capsys):
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(slides[0].read_bytes()[:3000])  # header kept, tiles gone
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide at all")
    out = tmp_path / "cohort"
    args = [str(slides[1]), str(bad), str(slides[2]), str(junk), "--out", str(out)]
    args += ["--scheduler", cluster.scheduler_address, "--level", str(LEVEL), "--steps", "5"]
    assert main(["batch", *args]) == 1  # some slides failed
    printed = capsys.readouterr().out
    assert "failed  junk: cannot read" in printed and "failed  truncated:" in printed
    rows = _summary(out)
    assert rows["junk"]["status"] == "failed" and "not a TIFF" in rows["junk"]["reason"]
    assert rows["truncated"]["status"] == "failed" and rows["truncated"]["reason"]
    for p in (slides[1], slides[2]):
        assert rows[p.stem]["status"] == "done"
        assert slide_outputs_valid(out / "slides" / p.stem) == ""
    assert "failed" in (out / "summary.html").read_text()


def test_other_settings_are_refused_unless_forced(slides, cluster, tmp_path, capsys):
    out = tmp_path / "cohort"
    two = slides[:2]
    first, _ = _run(two, out, scheduler=cluster.scheduler_address)
    before = {p.stem: read_result(out / "slides" / p.stem)["settings_hash"] for p in two}
    args = ["batch", *map(str, two), "--out", str(out), "--level", str(LEVEL), "--steps", "8"]
    args += ["--scheduler", cluster.scheduler_address]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.stem: read_result(out / "slides" / p.stem)["settings_hash"] for p in two} == before

    other = mc.MedCAMConfig.fast().capped(8)
    forced, lines = _run(two, out, scheduler=cluster.scheduler_address, config=other, force=True)
    assert sorted(forced.done) == sorted(p.stem for p in two) and not forced.skipped
    assert any("--overwrite" in line for line in lines)
    for p in two:
        result = read_result(out / "slides" / p.stem)
        assert result["settings_hash"] != before[p.stem]
        assert result["explanation"]["config"]["steps"] == other.steps
        assert slide_outputs_valid(out / "slides" / p.stem) == ""


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(slides, cluster, tmp_path):
    # twice the cluster's 4 task slots: with 4 slides all could finish together,
    # between the first "done" and the interrupt (seen on a loaded machine)
    copies = tmp_path / "more"
    copies.mkdir()
    for p in slides:
        shutil.copy(p, copies / f"{p.stem}-copy{p.suffix}")
    slides = [*slides, *sorted(copies.iterdir())]
    out = tmp_path / "cohort"
    cmd = [sys.executable, "-m", "napari_medcam.cli", "batch", *map(str, slides)]
    cmd += ["--out", str(out), "--scheduler", cluster.scheduler_address]
    cmd += ["--level", str(LEVEL), "--steps", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    manifest = out / MANIFEST
    while time.time() < deadline:  # wait for the first finished slide
        if manifest.exists() and '"status": "done"' in manifest.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Resume with the same command" in stderr
    assert "napari-medcam batch" in stderr and "Traceback" not in stderr
    statuses = {s["status"] for s in json.loads(manifest.read_text())["slides"].values()}
    assert "done" in statuses and statuses - {"done"} <= {"interrupted"}
    report = run_cohort(  # the same settings as the command line's
        slides,
        out,
        level=LEVEL,
        config=mc.MedCAMConfig.fast().capped(5),
        scheduler=cluster.scheduler_address,
        progress=False,
        log=lambda line: None,
    )
    assert report.skipped and len(report.skipped) + len(report.done) == len(slides)
    assert all(slide_outputs_valid(out / "slides" / p.stem) == "" for p in slides)


def test_bad_input_gets_a_clear_message(tmp_path, capsys):
    assert main(["batch", "--out", str(tmp_path / "o")]) == 2
    assert "no slides given" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no slides" in capsys.readouterr().err
    assert main(["batch", "x.tif", "--out", str(tmp_path), "--target", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "not-ours").mkdir()
    (tmp_path / "not-ours" / MANIFEST).write_text("{}")
    assert main(["batch", "x.tif", "--out", str(tmp_path / "not-ours")]) == 2
    assert "not a napari-medcam cohort manifest" in capsys.readouterr().err


def test_slide_lists_and_setting_differences(tmp_path):
    (tmp_path / "a.tif").touch()
    sub = tmp_path / "more"
    sub.mkdir()
    (sub / "b.svs").touch()
    (sub / "notes.txt").touch()
    listing = tmp_path / "list.csv"
    listing.write_text("id,path\n1,a.tif\n2,more/b.svs\n")
    got = resolve_slides([sub, tmp_path / "a.tif"], listing)
    assert got == [(sub / "b.svs").resolve(), (tmp_path / "a.tif").resolve()]
    diff = option_changes({"config": {"steps": 4, "lr": 1}}, {"config": {"steps": 7, "lr": 1}})
    assert diff == ["--steps: the cohort was run with 4, now 7"]
    shutil.rmtree(sub)


def test_an_amortised_explainer_runs_the_cohort(slides, cluster, tmp_path, capsys):
    clf = mc.demo_classifier()
    tiles = [mc.synthetic_tile(500 + i, i % 2)[0] for i in range(4)]
    explainer = mc.fit_explainer(clf, tiles, steps=3, device="cpu", batch=4, held_out=0.0)
    path = explainer.save(tmp_path / "tiny-explainer.pt")  # the machinery, not the masks
    out = tmp_path / "cohort"
    two = slides[:2]
    report, _ = _run(two, out, scheduler=cluster.scheduler_address, explainer=path)
    assert sorted(report.done) == sorted(p.stem for p in two) and not report.failed
    manifest = json.loads((out / MANIFEST).read_text())
    assert len(manifest["settings"]["explainer"]) == 64  # the file's SHA-256
    assert "amortised explainer" in (out / "summary.html").read_text()
    assert manifest["settings"]["config"] == json.loads(json.dumps(explainer.config.to_dict()))
    for p in two:
        assert slide_outputs_valid(out / "slides" / p.stem) == ""
        assert read_result(out / "slides" / p.stem)["tiles_explained"] > 0
    with pytest.raises(ValueError, match="explainer"):  # the same folder without it
        _run(two, out, scheduler=cluster.scheduler_address)
    assert (
        main(["batch", str(two[0]), "--out", str(out), "--explainer", str(path), "--steps", "3"])
        == 2
    )
    assert "do not apply with --explainer" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["../../elsewhere", "/abs/olute", "a/b", "..", ""])
def test_a_manifest_whose_slide_key_leaves_the_folder_is_refused(tmp_path, capsys, key):
    """A hand-edited or untrusted manifest.json never makes batch write or delete outside
    --out: a slide key that is not a plain folder name is refused before any work."""
    out = tmp_path / "cohort" / "out"
    (out / "slides").mkdir(parents=True)
    victim = tmp_path / "cohort" / ".keep"  # what '../..' would reach from a slide folder
    victim.write_text("keep me")
    manifest = {
        "format": FORMAT,
        "created": "now",
        "settings": {},
        "classifier": {},
        "slides": {key: {"path": str(tmp_path / "x.tif"), "status": "done"}},
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "x.tif").touch()
    assert main(["batch", str(tmp_path / "x.tif"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a napari-medcam cohort manifest" in err and "plain folder name" in err
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "cohort").iterdir()) == [".keep", "out"]


def _annotation(path: Path, ring: list[list[float]], name: str = "Tumor") -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"objectType": "annotation", "classification": {"name": name}},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def test_annotations_score_each_slide_in_the_summary_without_explaining_again(
    slides, cluster, tmp_path, capsys
):
    """`batch --annotations DIR`: a slide's file by name (case0.geojson, case1.json) is
    scored against the slide's written mask; one that does not fit the slide is refused
    in its row (the slide stays done); a rerun with annotations explains nothing again."""
    out, refs = tmp_path / "cohort", tmp_path / "refs"
    three = slides[:3]
    args = ["batch", *map(str, three), "--out", str(out), "--level", str(LEVEL), "--steps", "5"]
    args += ["--scheduler", cluster.scheduler_address]
    assert main(args) == 0
    refs.mkdir()
    (refs / "case0.geojson").write_bytes((out / "slides/case0/mask.geojson").read_bytes())
    _annotation(refs / "case1.json", [[0, 0], [1200, 0], [1200, 1200], [0, 1200], [0, 0]])
    _annotation(refs / "case2.geojson", [[0, 0], [5000, 0], [5000, 90], [0, 0]])  # another slide's
    stamps = {p.stem: (out / "slides" / p.stem / "result.json").stat().st_mtime_ns for p in three}

    args += ["--annotations", str(refs)]
    assert main(args) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert stamps == {
        p.stem: (out / "slides" / p.stem / "result.json").stat().st_mtime_ns for p in three
    }
    rows = _summary(out)
    assert all(r["status"] == "done" for r in rows.values())

    own = rows["case0"]  # its own evidence exported and read back: the same pixels
    assert own["annotation"] == "case0.geojson" and not own["annotation_problem"]
    if read_mask_tiff(out / "slides/case0/mask.tif")[0].any():
        assert float(own["dice"]) == 1.0 and float(own["precision"]) == 1.0
    whole = rows["case1"]  # the whole slide annotated: all evidence inside it
    area = float(whole["evidence_area_fraction"])
    assert float(whole["recall"]) == pytest.approx(area, abs=1e-4)
    assert float(whole["precision"]) == (1.0 if area > 0 else 0.0)
    assert whole["regions_touched"] == ("1/1" if area > 0 else "0/1")
    other = rows["case2"]
    assert other["dice"] == "" and "case2.geojson" in other["annotation_problem"]
    page = (out / "summary.html").read_text()
    assert "vs annotation" in page and "refused" in page and "case1.json" in page

    assert main([*args[:-1], str(tmp_path / "missing")]) == 2  # refused before any work
    assert "--annotations" in capsys.readouterr().err


def test_a_dicom_wsi_folder_is_one_slide_of_the_cohort(slides, cluster, tmp_path):
    """A DICOM WSI is a folder of files: named itself, or found inside a folder of
    slides beside the TIFFs, it is explained as one slide (not "a folder, not a slide")."""
    from tests.test_slide_formats import write_dicom

    cohort = tmp_path / "cohort-slides"
    cohort.mkdir()
    shutil.copy(slides[0], cohort / "case0.tif")
    lesion, _ = mc.synthetic_tile(seed=3, label=1)
    write_dicom(cohort / "dicom-case", np.kron(lesion, np.ones((2, 2, 1), np.uint8)))
    assert resolve_slides([cohort / "dicom-case"], None) == [(cohort / "dicom-case").resolve()]

    out = tmp_path / "out"
    report, _ = _run([cohort], out, scheduler=cluster.scheduler_address)
    assert sorted(report.done) == ["case0", "dicom-case"] and not report.failed
    assert slide_outputs_valid(out / "slides" / "dicom-case") == ""
    result = read_result(out / "slides" / "dicom-case")
    assert result["level"] == LEVEL and result["slide_shape"][:2] == [448, 448]
