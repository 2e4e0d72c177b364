"""Amortised explainers: fit, file, one-pass explain with fail-closed verdicts, classes.

A hand-built three-class colour classifier (grey, red, green; red and green pixels
raise their class's logit) keeps the fits tiny: a few seconds on two CPU cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

import napari_medcam as mc
from napari_medcam.engine.amortised import (
    FitCancelled,
    fit_explainer,
    iter_fit,
    load_explainer,
)
from napari_medcam.io import write_mask
from napari_medcam.io.geojson import class_rgb

from .toys import MEAN, STD, _Unit, red_counter

SIZE = 64


class ColourCounter(nn.Module):
    """logits = (0, gain·red fraction − bias, gain·green fraction − bias)."""

    def __init__(self, gain: float = 100.0, bias: float = 1.5) -> None:
        super().__init__()
        self.unit = _Unit()
        self.features = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            w = torch.tensor([[40.0, -40.0, 0.0], [-40.0, 40.0, 0.0]]).view(2, 3, 1, 1)
            self.features.weight.copy_(w)
            self.features.bias.fill_(-12.0)
        self.gain, self.bias = gain, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frac = torch.sigmoid(self.features(self.unit(x))).mean((2, 3))
        pos = self.gain * frac - self.bias
        return torch.cat([torch.zeros_like(pos[:, :1]), pos], 1)


def colour_counter() -> mc.Classifier:
    return mc.Classifier(
        ColourCounter(),
        (SIZE, SIZE),
        MEAN,
        STD,
        ["grey", "red", "green"],
        ["features"],
        name="colour counter",
    )


def colour_tile(seed: int, colour: int, side: int | None = None) -> np.ndarray:
    """Grey noise with one square of ``colour`` (1 red, 2 green; 0 none)."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(128, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    if colour:
        side = side or int(rng.integers(10, 18))
        y, x = rng.integers(0, SIZE - side, 2)
        img[y : y + side, x : x + side] = (230, 40, 40) if colour == 1 else (40, 230, 40)
    return img


@pytest.fixture(scope="module")
def clf():
    """One torch thread for this module's fits (the same numbers on any machine); the
    count is restored after it, so that the modules after it keep their threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield colour_counter()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def explainer(clf):
    tiles = [colour_tile(i, i % 3) for i in range(30)]
    return fit_explainer(
        clf, tiles, steps=150, device="cpu", batch=8, held_out=0.2, warmup_steps=8, ramp_steps=15
    )


def test_fit_learns_evidence_and_empty_wrong_class_masks(explainer):
    quality = explainer.metadata["fit"]["held_out_quality"]
    assert quality["tiles"] == 4  # 20 % of the 20 tiles with an absence
    assert quality["valid_share"] >= 0.75, quality
    assert quality["median_area"] < 0.2, quality
    # an unfitted network's wrong-class masks are full (init_fill 0.8); 150 steps empty them
    assert quality["wrong_class_median_area"] < 0.05, quality
    assert explainer.metadata["fit"]["classes_fitted"].keys() == {"red", "green"}
    assert explainer.metadata["fit"]["tiles_without_absence"] == 10  # grey: no neutral fill


def test_file_round_trip_and_fingerprint_mismatch_refused(explainer, clf, tmp_path):
    path = explainer.save(tmp_path / "colour.pt")
    blob = torch.load(path, weights_only=True)  # plain tensors and metadata: safe to load
    assert blob["metadata"]["classifier"]["fingerprint"] == mc.engine.amortised.fingerprint(clf)
    again = load_explainer(path, clf)
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(again.masks(x, [1, 2], clf), explainer.masks(x, [1, 2], clf))
    other = colour_counter()
    with torch.no_grad():
        other.module.features.bias.fill_(-11.0)  # same architecture, other weights
    with pytest.raises(ValueError, match="fitted for classifier 'colour counter'.*fingerprint"):
        load_explainer(path, other)
    with pytest.raises(ValueError, match="fitted for"):
        mc.explain(colour_tile(0, 1), red_counter(), explainer=path)
    with pytest.raises(ValueError, match="not an explainer file"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        load_explainer(tmp_path / "junk.pt")


def test_multi_class_one_pass_labels_tiff_and_geojson(explainer, clf, tmp_path):
    image = np.concatenate(
        [colour_tile(101, 1, 16), colour_tile(102, 0), colour_tile(103, 2, 16)], 1
    )
    exp = mc.explain(image, clf, explainer=explainer, tile_overlap=0, device="cpu")
    verdicts = {v["window"][1]: v for v in exp.tile_verdicts}
    assert set(verdicts) == {0, 128}  # the grey tile is the blank class: not a finding
    assert all(v["valid"] for v in verdicts.values()), exp.tile_verdicts
    assert exp.label_classes == {2: "red", 3: "green"}
    assert exp.valid and exp.class_name == "red + green"
    labels = exp.labels
    assert set(np.unique(labels[:, :64])) == {0, 2} and set(np.unique(labels[:, 128:])) == {0, 3}
    assert not labels[:, 64:128].any()
    assert np.array_equal(exp.mask, labels > 0)
    soft = np.asarray(exp.soft_mask)  # the explainer's whole map, as per-image's: it ranks
    assert np.array_equal(soft > explainer.config.threshold, exp.mask)  # every pixel, and
    assert ((soft > 0) & ~exp.mask).any()  # thresholding it gives exactly the mask
    red_sq = np.all(image == (230, 40, 40), -1)
    assert (labels[red_sq] == 2).mean() > 0.5  # the evidence is on the red square
    written = write_mask(
        tmp_path / "m.tif",
        labels,
        exp.summary(),
        geojson={"image": "x"},
        classes=exp.label_classes,
    )
    with tifffile.TiffFile(written[0]) as tif:
        data = tif.asarray()
        meta = json.loads(tif.pages[0].description)["napari_medcam"]
    assert np.array_equal(data, labels)
    assert meta["label_classes"] == {"2": "red", "3": "green"}
    features = json.loads(written[1].read_text())["features"]
    names = {f["properties"]["classification"]["name"] for f in features}
    assert names == {"red", "green"}
    for f in features:  # QuPath shows each class in napari's colour for it (one palette)
        label = f["properties"]["label"]
        assert f["properties"]["classification"]["color"] == class_rgb(label - 1)
    assert {f["properties"]["label"] for f in features} == {2, 3}
    red_x = [
        pt[0]
        for f in features
        if f["properties"]["label"] == 2
        for pt in f["geometry"]["coordinates"][0]
    ]
    assert max(red_x) <= 64


def test_fail_closed_and_refine_repairs(explainer, clf):
    """A mask that loses the decision is never shown; refine repairs from it, and says so."""
    broken = load_explainer.__globals__["Explainer"](
        load_explainer.__globals__["build_net"](explainer.metadata), dict(explainer.metadata)
    )
    with torch.no_grad():  # every mask empty: no tile keeps its decision
        broken.net.unet.head.weight.zero_()
        broken.net.unet.head.bias.fill_(-6.0)
    image = np.concatenate([colour_tile(201, 1, 16), colour_tile(202, 2, 16)], 1)
    plain = mc.explain(image, clf, explainer=broken, tile_overlap=0, device="cpu")
    assert not plain.valid and not plain.mask.any() and plain.labels.max() == 0
    assert not np.asarray(plain.soft_mask).any()  # a failed tile shows no soft map either
    assert all(not v["valid"] and "empty" in v["status"] for v in plain.tile_verdicts)
    facts = plain.provenance["explainer"]
    assert facts["tiles_failed_amortised"] == 2 and facts["tiles_refined"] == 0
    fixed = mc.explain(image, clf, explainer=broken, tile_overlap=0, device="cpu", refine=30)
    facts = fixed.provenance["explainer"]
    assert facts["tiles_refined"] == 2 and "2 tile(s) refined" in fixed.status
    assert all(v["refined"] for v in fixed.tile_verdicts)
    for v in fixed.tile_verdicts:  # valid ones are in the mask, failed ones are not
        y0, x0, y1, x1 = v["window"]
        assert fixed.mask[y0:y1, x0:x1].any() == v["valid"]
    assert facts["tiles_fixed_by_refine"] == sum(v["valid"] for v in fixed.tile_verdicts) >= 1


def test_empty_class_is_left_out_of_the_fit_and_never_shown(clf):
    """A class of "nothing found" teaches no evidence: its tiles are left out of the
    fit, a tile of that class gets a verdict that says why it shows nothing, and on a
    tiled image it is not explained at all (only the other classes are)."""
    tiles = [colour_tile(500 + i, 1 + i % 2) for i in range(12)]
    opts = dict(steps=20, device="cpu", batch=4, held_out=0.0, warmup_steps=4, ramp_steps=8)
    with pytest.raises(ValueError, match="not one of the classes"):
        fit_explainer(clf, tiles, empty_class="blue", **opts)
    exp = fit_explainer(clf, tiles, empty_class="green", **opts)
    fit = exp.metadata["fit"]
    assert fit["empty_class"] == "green" and exp.empty_class == 2
    assert fit["tiles_empty_class"] == 6 and fit["classes_fitted"] == {"red": 6}
    one = mc.explain(colour_tile(600, 2, 16), clf, explainer=exp, device="cpu")
    assert not one.valid and not one.mask.any()
    assert "empty class" in one.tile_verdicts[0]["status"]
    assert one.label_classes == {}  # no pixel of any class: no class listed
    image = np.concatenate([colour_tile(601, 1, 16), colour_tile(602, 2, 16)], 1)
    both = mc.explain(image, clf, explainer=exp, tile_overlap=0, device="cpu")
    assert [v["window"][1] for v in both.tile_verdicts] == [0]  # the red tile only
    assert set(np.unique(both.labels).tolist()) <= {0, 2}  # never the green label (3)
    # every tissue tile is in the tile map, explained or not: the green one is not
    # "no tissue"
    assert [(c["window"][1], c["class"]) for c in both.tile_classes] == [(0, "red"), (64, "green")]
    # one pass, no refine: the result does not claim a refinement or pruning that never ran
    assert both.config["refine_steps"] == 0 and not both.config["prune"]
    assert "refined" not in both.provenance["mask_resolution"]
    assert "pruned" not in both.provenance["mask_resolution"]
    greens = np.concatenate([colour_tile(603, 2, 16), colour_tile(604, 2, 16)], 1)
    none = mc.explain(greens, clf, explainer=exp, tile_overlap=0, device="cpu")
    assert not none.valid and not none.tile_verdicts and not none.label_classes
    assert none.status == (
        "every tissue tile is classified 'green', this explainer's empty class: nothing to explain"
    )
    red = mc.explain(colour_tile(605, 1, 16), clf, explainer=exp, device="cpu", target="green")
    assert red.status.startswith("the image is classified 'red', not 'green'")


def test_a_class_that_failed_its_set_aside_tiles_is_a_warning(explainer):
    """The first demo explainer's report said 'normal': 0 % of 19 set-aside tiles valid
    (whole-tile masks) and nobody was told: the CLI and the widget now say it, and
    suggest the empty class when none was set."""
    meta = json.loads(json.dumps(explainer.metadata))
    meta["fit"]["held_out_quality"]["by_class"] = {
        "red": {"tiles": 5, "valid_share": 1.0, "median_area": 0.05},
        "green": {"tiles": 19, "valid_share": 0.0, "median_area": 0.99},
        "grey": {"tiles": 2, "valid_share": 0.0, "median_area": 1.0},  # too few to say
    }
    exp = type(explainer)(explainer.net, meta)
    (warning,) = exp.warnings()
    assert warning.startswith("'green' tiles: 0 % of 19 set-aside tiles valid")
    assert "fit again with it as the empty class" in warning
    meta["fit"]["empty_class"] = "grey"
    assert "empty class" not in type(explainer)(explainer.net, meta).warnings()[0]


def test_killed_fit_resumes_from_its_checkpoint(clf, tmp_path):
    tiles = [colour_tile(300 + i, 1 + i % 2) for i in range(6)]
    ckpt = tmp_path / "fit.ckpt"
    opts = dict(device="cpu", batch=4, held_out=0.0, checkpoint=ckpt, checkpoint_every=2)
    steps_seen = []

    def stop_at_3(event):
        if event.phase == "fit":
            steps_seen.append(event.step)
            if event.step == 3:
                raise KeyboardInterrupt  # a kill between two checkpoints' worth of steps

    with pytest.raises(KeyboardInterrupt):
        fit_explainer(clf, tiles, steps=6, progress=stop_at_3, **opts)
    assert ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] == 3
    resumed = [e.step for e in iter_fit(clf, tiles, steps=6, **opts) if e.phase == "fit"]
    assert resumed == [4, 5, 6]  # not restarted
    exp = fit_explainer(clf, tiles, steps=6, **opts)  # already complete: no step runs
    assert [h["step"] for h in exp.metadata["fit"]["history"]] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="another fit"):
        fit_explainer(clf, tiles[:5], steps=6, **opts)


def test_fit_cancel_flag_and_bad_input(clf):
    with pytest.raises(FitCancelled, match="cancelled"):
        fit_explainer(clf, [colour_tile(1, 1)] * 2, steps=5, device="cpu", cancel=lambda: True)
    with pytest.raises(ValueError, match="steps"):
        fit_explainer(clf, [colour_tile(1, 1)], steps=0)
    with pytest.raises(ValueError, match="refine needs an explainer"):
        mc.explain(colour_tile(1, 1), clf, refine=5)


def test_cli_fit_then_explain(tmp_path, capsys):
    from PIL import Image

    from napari_medcam.cli import main

    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(colour_tile(400 + i, 1 + i % 2)).save(folder / f"t{i}.png")
    out = tmp_path / "colour.pt"
    factory = "tests.test_amortised:colour_counter"
    args = ["fit", "--classifier", factory, "--tiles", str(folder), "--out", str(out)]
    assert main([*args, "--steps", "3", "--device", "cpu"]) == 0
    report = json.loads(out.with_name("colour.pt.report.json").read_text())
    assert report["fit"]["steps"] == 3 and len(report["fit"]["history"]) == 3
    assert not out.with_name("colour.pt.ckpt").exists()  # removed once the file is written
    assert main([*args, "--steps", "3"]) == 2  # never overwritten silently
    image = tmp_path / "img.png"
    Image.fromarray(np.concatenate([colour_tile(1, 1, 16), colour_tile(2, 2, 16)], 1)).save(image)
    mask = tmp_path / "mask.tif"
    code = main(
        [
            "explain",
            str(image),
            "--classifier",
            factory,
            "--explainer",
            str(out),
            "--refine",
            "5",
            "--out",
            str(mask),
            "--geojson",
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["provenance"]["explainer"]["refine_steps"] == 5
    with tifffile.TiffFile(mask) as tif:
        meta = json.loads(tif.pages[0].description)["napari_medcam"]
        values = set(np.unique(tif.asarray()).tolist())
    assert values <= {0, 2, 3}
    assert {int(k) for k in meta["label_classes"]} == values - {0}
    assert mask.with_suffix(".geojson").exists()
    # an explainer whose fit report says a class failed: explaining with it says so
    warned = load_explainer(out, colour_counter())
    warned.metadata["fit"]["held_out_quality"]["by_class"] = {
        "green": {"tiles": 4, "valid_share": 0.0, "median_area": 1.0}
    }
    warned.save(tmp_path / "warned.pt")
    again = ["explain", str(image), "--classifier", factory, "--device", "cpu"]
    again += ["--explainer", str(tmp_path / "warned.pt"), "--out", str(tmp_path / "m2.tif")]
    main(again)
    err = capsys.readouterr().err
    assert "warning: explainer: 'green' tiles: 0 % of 4 set-aside tiles valid" in err
    assert "--refine N" in err


def test_shipped_demo_explainer_loads_offline_and_refuses_other_classifiers():
    clf = mc.demo_classifier()
    demo = load_explainer("demo", clf)
    assert demo.class_names == ["normal", "lesion"]
    assert demo.metadata["fit"]["command"].startswith("python scripts/fit_demo_explainer.py")
    img, _ = mc.synthetic_tile(7, 1)
    res = mc.explain(img, clf, explainer="demo", device="cpu")
    assert res.provenance["explainer"]["tiles_explained"] == 1
    assert res.label_classes == {2: "lesion"} or not res.valid
    with pytest.raises(ValueError, match="fitted for classifier 'demo-tissue'"):
        load_explainer("demo", red_counter())


def test_one_small_image_soft_map_thresholds_to_its_mask(explainer, clf):
    """An image smaller than the input is one tile: its mask is the binary mask resized
    exactly, and its soft map must threshold to that mask, rim included."""
    img = colour_tile(700, 0)[:40, :40].copy()
    img[10:24, 12:26] = (230, 40, 40)
    exp = mc.explain(img, clf, explainer=explainer, device="cpu")
    assert exp.mask.any()
    assert np.array_equal(np.asarray(exp.soft_mask) > explainer.config.threshold, exp.mask)


def test_bad_explainer_input_is_a_clear_error(explainer, clf, tmp_path):
    path = explainer.save(tmp_path / "colour.pt")
    blob = torch.load(path, weights_only=True)
    del blob["metadata"]["network"]
    torch.save(blob, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="not a usable explainer file"):
        load_explainer(tmp_path / "edited.pt", clf)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"] = {k: v[..., :1] for k, v in blob["state_dict"].items()}
    torch.save(blob, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="not a usable explainer file"):
        load_explainer(tmp_path / "damaged.pt", clf)
    for refine in ("2", 2.5, True, -1):
        with pytest.raises(ValueError, match="whole number of steps"):
            mc.explain(colour_tile(1, 1), clf, explainer=explainer, device="cpu", refine=refine)


def test_the_summary_names_the_class_the_user_sees(explainer, clf):
    """Green's masks all fail, red's pass: the mask shows red only, so the result's
    class, confidences and class table are red's, though green has more tiles."""
    broken = load_explainer.__globals__["Explainer"](
        load_explainer.__globals__["build_net"](explainer.metadata), dict(explainer.metadata)
    )
    broken.net.load_state_dict(explainer.net.state_dict())
    with torch.no_grad():  # green's channel (class 2) empty: its tiles fail closed
        broken.net.unet.head.weight[2].zero_()
        broken.net.unet.head.bias[2] = -6.0
    image = np.concatenate(
        [colour_tile(301, 1, 16), colour_tile(302, 2, 16), colour_tile(303, 2, 16)], 1
    )
    exp = mc.explain(image, clf, explainer=broken, tile_overlap=0, device="cpu")
    ok = {v["window"][1]: v["valid"] for v in exp.tile_verdicts}
    assert ok == {0: True, 64: False, 128: False}, exp.tile_verdicts
    assert exp.target == 1 and exp.class_name == "red" and exp.label_classes == {2: "red"}
    red = next(v for v in exp.tile_verdicts if v["valid"])
    assert exp.original_confidence == pytest.approx(red["original"], abs=1e-5)
    assert exp.masked_confidence == pytest.approx(red["masked"], abs=1e-5)
