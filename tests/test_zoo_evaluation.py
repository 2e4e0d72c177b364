"""`napari-medcam evaluate --zoo`: records, the table, and BENCHMARKS.md's zoo block."""

from __future__ import annotations

import numpy as np

import napari_medcam as mc
from napari_medcam import zoo
from napari_medcam.evaluation.zoo import ZooSettings, render, run_zoo, summary_row, write_block


def test_zoo_evaluation_scores_and_writes_its_block(tmp_path):
    settings = ZooSettings(
        names=("hne-modulelist",),
        split="tune",
        n=2,
        rise_masks=20,
        config=mc.MedCAMConfig.fast().capped(10),
    )
    results = run_zoo(settings)
    records = results["hne-modulelist"]
    assert len(records) == 2
    for r in records:
        assert r["called_target"]  # the tuning classifier is right on these
        assert 0 <= r["area"] <= 1 and r["reference_area"] > 0
        if r["area"]:
            assert 0 <= r["precision"] <= 1 and 0 <= r["gradcam_precision"] <= 1
        assert isinstance(r["reference_suffices"], bool)
        assert r["fwd_bwd_seconds"] > 0
        if r["area"]:  # Grad-CAM's layer is recorded; a CNN has no attention to roll out
            assert r["gradcam_layer"].startswith(zoo.load("hne-modulelist").layers[-1])
            assert "rollout_precision" not in r
    row = summary_row("hne-modulelist", records)
    assert row["split"] == "tuning" and row["explained"] == 2
    assert np.isclose(row["area"] / row["ref_area"], row["area_ratio"])
    assert row["per_fwd_bwd"] > 1 and row["rollout"] != row["rollout"]  # NaN: not measured

    block = render(results, settings, "test machine")
    assert "| hne-modulelist | tuning | 2 / 2 |" in block
    assert "| rollout |" in block and "| n/a |" in block
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Speed\n\nkept\n", encoding="utf-8")
    write_block(bench, block)
    write_block(bench, block)  # a rerun replaces the block, nothing else
    text = bench.read_text(encoding="utf-8")
    assert text.count("<!-- zoo:begin") == 1 and "## Speed\n\nkept" in text
