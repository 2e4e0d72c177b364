"""The evaluation of issue 4: baselines, held-out cases, IHC classifier, report and CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import napari_medcam as mc
from napari_medcam.classifiers.ihc import (
    EVAL_COLS,
    PATCH,
    TRAIN_COLS,
    dab_reference,
    ihc_classifier,
    ihc_image,
    ihc_patches,
    patch_label,
)
from napari_medcam.comparison import gradcam, occlusion, rise
from napari_medcam.evaluation import (
    METHODS,
    EvalSettings,
    MethodOptions,
    cut_off_tile,
    ihc_cases,
    run_method,
    synthetic_cases,
)
from napari_medcam.evaluation.report import BEGIN, END, SECTION, write_benchmarks
from napari_medcam.metrics import pointing_game
from tests.test_metrics import square, toy_classifier, toy_image

# ------------------------------------------------------------------ baselines


@pytest.mark.parametrize("method", ["gradcam", "rise", "occlusion"])
def test_baseline_maps_find_the_toy_evidence(method):
    clf, img, ev = toy_classifier(), toy_image(), square()
    if method == "gradcam":
        heat = gradcam(img, clf, target=1, layer="features")
    elif method == "rise":
        heat = rise(img, clf, 1, n_masks=300, cells=4, seed=1)
    else:
        heat = occlusion(img, clf, 1, window=6, stride=2)
    assert heat.shape == ev.shape and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert pointing_game(heat, ev)
    assert heat[ev].mean() > heat[~ev].mean() + 0.2


def test_occlusion_stays_informative_for_a_saturated_classifier():
    clf = mc.demo_classifier()
    img, ev = mc.synthetic_tile(30_000, 1)
    assert clf.predict_proba(img)[1] == pytest.approx(1.0)  # p = 1 − 1e-14
    heat = occlusion(img, clf, 1, stride=16)
    assert np.ptp(heat) == pytest.approx(1.0) and heat[ev].mean() > heat[~ev].mean()


def test_baselines_reject_bad_arguments():
    clf, img = toy_classifier(), toy_image()
    with pytest.raises(ValueError):
        rise(img, clf, n_masks=0)
    with pytest.raises(ValueError):
        rise(img, clf, p_keep=1.0)
    with pytest.raises(ValueError):
        rise(img, clf, baseline=torch.zeros(1, 3, 8, 8))


def test_run_method_gives_map_mask_area_and_seconds():
    clf, img, ev = toy_classifier(), toy_image(), square()
    opts = MethodOptions(
        fast=mc.MedCAMConfig.fast(steps=6, min_steps=6), rise_masks=40, occlusion_window=8
    )
    for method in ("medcam-fast", "gradcam", "rise", "occlusion"):
        res = run_method(method, img, clf, 1, area=0.25, options=opts)
        assert res.method == method and res.label
        assert res.map.shape == res.mask.shape == ev.shape and res.mask.dtype == bool
        assert res.area == pytest.approx(0.25) and res.seconds > 0
        assert res.map.min() >= 0 and res.map.max() <= 1
    own = run_method("medcam-fast", img, clf, 1, options=opts)  # its own mask
    assert own.area == pytest.approx(own.info["own_area"]) and "valid" in own.info
    with pytest.raises(ValueError, match="unknown method"):
        run_method("lime", img, clf)
    assert METHODS == (
        "medcam-fast",
        "medcam-paper",
        "gradcam",
        "rise",
        "occlusion",
        "attention-rollout",
    )
    with pytest.raises(ValueError, match="attention probabilities"):  # a CNN has none
        run_method("attention-rollout", img, clf)


# ------------------------------------------------------------------ held-out cases


def test_held_out_set_has_a_hard_third_and_fixed_seeds():
    cases = synthetic_cases(4, 3)
    assert [c.group for c in cases] == ["standard"] * 4 + ["hard"] * 3
    assert [c.kind for c in cases[4:]] == ["faint", "small", "cut-off"]
    assert all(c.reference.any() and c.image.shape == (224, 224, 3) for c in cases)
    again = synthetic_cases(4, 3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(cases, again))
    assert cases[0].name == "tile 30000"  # seeds 30 000+: not used for training or tuning
    # hard tiles have less evidence than standard ones
    assert np.mean([c.reference.mean() for c in cases[4:]]) < np.mean(
        [c.reference.mean() for c in cases[:4]]
    )


def test_cut_off_tile_cuts_the_cluster_at_an_edge():
    full_img, full_ev = mc.synthetic_tile(31_002, 1, evidence_fraction=(0.04, 0.08), contrast=0.8)
    img, ev = cut_off_tile(31_002)
    assert img.shape == full_img.shape and img.dtype == np.uint8 and ev.dtype == bool
    edges = np.concatenate([ev[0], ev[-1], ev[:, 0], ev[:, -1]])
    assert edges.any()  # the cluster touches the border
    assert 0.3 < ev.sum() / full_ev.sum() < 0.85  # about 60 % of it is left
    with pytest.raises(ValueError):
        cut_off_tile(1, kept=1.0)


# ------------------------------------------------------------------ IHC case


def test_dab_reference_and_split_are_offline_and_disjoint():
    img = ihc_image()
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    ref = dab_reference(img)
    assert ref.dtype == bool and 0.4 < ref.mean() < 0.7  # the brown glands
    assert np.array_equal(ref, dab_reference())
    train, held = ihc_patches("train"), ihc_patches("eval")
    assert all(c + PATCH <= TRAIN_COLS[1] for _, _, (_, c) in train)
    assert all(c >= EVAL_COLS[0] for _, _, (_, c) in held)
    assert patch_label(np.ones((4, 4))) == 1 and patch_label(np.zeros((4, 4))) == 0
    assert patch_label(np.eye(8)) is None  # 12.5 %: ambiguous
    cases = ihc_cases()
    assert len(cases) == 12 and all(0.15 <= c.reference.mean() <= 0.75 for c in cases)
    assert len(ihc_cases(None)) > 12 and [c.name for c in ihc_cases(1)] == [cases[0].name]
    with pytest.raises(ValueError):
        ihc_patches("test")


def test_ihc_classifier_separates_held_out_patches():
    clf = ihc_classifier()
    assert clf.input_size == (PATCH, PATCH) and clf.class_names[1] == "DAB-positive"
    labelled = [(p, patch_label(r)) for p, r, _ in ihc_patches("eval", stride=32)]
    labelled = [(p, y) for p, y in labelled if y is not None]
    pred = [int(clf.predict_proba(p).argmax()) for p, _ in labelled]
    acc = np.mean([p == y for p, (_, y) in zip(pred, labelled)])
    assert len(labelled) > 50 and acc >= 0.95
    # the dataset-mean colour is a neutral baseline (docs/method.md)
    with torch.no_grad():
        p_blank = torch.softmax(clf.module(torch.zeros(1, 3, PATCH, PATCH)), 1)[0, 1]
    assert p_blank < 0.5


# ------------------------------------------------------------------ report and CLI


def test_write_benchmarks_replaces_only_its_block(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Speed\n\nspeed table\n", encoding="utf-8")
    write_benchmarks(path, "first")
    text = path.read_text(encoding="utf-8")
    assert "## Speed\n\nspeed table" in text and SECTION in text and "first" in text
    write_benchmarks(path, "second")
    text = path.read_text(encoding="utf-8")
    assert "second" in text and "first" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.count(SECTION) == 1
    # a section written by hand without markers gets them after its heading
    other = tmp_path / "B2.md"
    other.write_text(f"# B\n\n{SECTION}\n\nnotes\n\n## Speed\n\nx\n", encoding="utf-8")
    write_benchmarks(other, "table")
    t2 = other.read_text(encoding="utf-8")
    assert t2.index(SECTION) < t2.index("table") < t2.index("notes") < t2.index("## Speed")
    new = write_benchmarks(tmp_path / "new.md", "fresh")
    assert SECTION in new.read_text(encoding="utf-8")


def test_quick_settings_are_small():
    q = EvalSettings.quick()
    assert q.n_standard + q.n_hard <= 4 and q.fast.steps <= 20 and q.paper.steps <= 5
    full = EvalSettings.full()
    assert full.n_standard + full.n_hard >= 32 and full.n_hard * 3 >= full.n_standard + full.n_hard


def test_cli_evaluate_quick_writes_table_and_figure(tmp_path, capsys):
    from napari_medcam.cli import main

    bench, fig, js = tmp_path / "BENCHMARKS.md", tmp_path / "docs" / "ev.png", tmp_path / "r.json"
    args = ["evaluate", "--quick", "--threads", "1", "--benchmarks", str(bench)]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--figure", str(fig), "--records", str(js)]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for label in ("Med-CAM (fast)", "Med-CAM (paper)", "Grad-CAM", "RISE", "occlusion"):
        assert f"| {label} |" in out
    for header in ("precision", "IoU@ref", "ins AUC", "sanity ρ", "s/image", "× Grad-CAM"):
        assert header in out
    assert "Masked confidence ≥ original" in out and "Sanity check" in out
    text = bench.read_text(encoding="utf-8")
    assert SECTION in text and BEGIN in text and "| Grad-CAM |" in text
    assert "](docs/ev.png)" in text
    with Image.open(fig) as im:
        assert im.size[0] > 6 * 150 and im.size[1] > 2 * 150
    assert '"records"' in js.read_text(encoding="utf-8")
    # the table renders again from the records alone, without a run
    again = tmp_path / "again.md"
    assert main(["evaluate", "--from-json", str(js), "--benchmarks", str(again)]) == 0
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert table and table == [
        ln for ln in again.read_text(encoding="utf-8").splitlines() if ln.startswith("| ")
    ]
    assert main(["evaluate", "--quick", "--tiles", "0"]) == 2  # bad input: exit 2
