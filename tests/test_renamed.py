"""The names used before the glossary (issue 21) keep working for one release.

Each old keyword, attribute and flag warns and means its new word; old and new together
are an error; what was saved with the old names (explainer files, fit checkpoints,
cohort manifests and their settings hash) is read without a warning.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import napari_medcam as mc
from napari_medcam.batch.manifest import MANIFEST, Manifest, open_manifest, settings_hash
from napari_medcam.engine.amortised.file import upgraded_metadata
from napari_medcam.engine.renamed import RENAMED, as_before, upgraded

# settings hashes computed on main before the rename (commit 705c573), config as named
# in each key; a cohort started then must resume after it
HASHES_BEFORE = {
    "fast": "8bc407fc14146293",
    "paper": "230722c1fbd6c5a6",
    "custom": "df74365b17ec1cc2",  # fast, absence glass, perturbations (blur,), 3 of them
}


def _configs() -> dict[str, mc.MedCAMConfig]:
    return {
        "fast": mc.MedCAMConfig.fast(),
        "paper": mc.MedCAMConfig.paper(),
        "custom": mc.MedCAMConfig.fast(absence="glass", perturbations=("blur",), n_perturbations=3),
    }


def _settings(config: dict) -> dict:
    """A tile-classifier cohort's settings, as `run_cohort` records them."""
    return {
        "config": config,
        "explainer": None,
        "level": "auto",
        "target": None,
        "classifier_fingerprint": "f" * 64,
        "tile_overlap": 32,
        "tile_batch": None,
    }


def _old_spelling(config: dict) -> dict:
    """A config dict as the code before the rename wrote it."""
    old = {new: old for old, new in RENAMED.items()}
    return {old.get(k, k): v for k, v in config.items()}


# --------------------------------------------------------------- MedCAMConfig


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("baseline", "absence", "glass"),
        ("noises", "perturbations", ("blur",)),
        ("n_backgrounds", "n_perturbations", 3),
    ],
)
def test_old_config_names_warn_and_mean_the_new_field(old, new, value):
    makers = {
        "constructor": lambda kw: mc.MedCAMConfig(**kw),
        "fast": lambda kw: mc.MedCAMConfig.fast(**kw),
        "paper": lambda kw: mc.MedCAMConfig.paper(**kw),
        "preset": lambda kw: mc.MedCAMConfig.preset("volume", **kw),
        "replace": lambda kw: mc.MedCAMConfig.fast().replace(**kw),
    }
    for how, make in makers.items():
        with pytest.warns(DeprecationWarning, match=f"{old}=.*use {new}=") as caught:
            cfg = make({old: value})
        assert getattr(cfg, new) == value, how
        assert caught[0].filename == __file__, how  # points at the caller's line
        with pytest.warns(DeprecationWarning, match=f"MedCAMConfig.{old} .*MedCAMConfig.{new}"):
            assert getattr(cfg, old) == value
        with pytest.raises(TypeError, match=f"both {new}= and {old}="):
            make({old: value, new: value})
    assert old not in mc.MedCAMConfig.fast().to_dict()  # saved in the new words only


def test_old_config_attribute_is_read_only():
    cfg = mc.MedCAMConfig.fast()
    with pytest.raises(AttributeError):
        cfg.baseline = "glass"  # type: ignore[misc]


def test_new_config_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = mc.MedCAMConfig.fast(absence="glass", perturbations=("blur",), n_perturbations=1)
        assert cfg.replace(absence="black").absence == "black"


# --------------------------------------------------------------- Explanation


def test_explanation_baseline_is_the_absence_used():
    exp = mc.Explanation.not_explained(
        target=0,
        probabilities=[0.9, 0.1],
        status="not the target",
        mask=np.zeros((4, 4), bool),
        soft_mask=np.zeros((4, 4), np.float32),
        class_name="a",
        seconds=0.0,
    )
    assert exp.absence == "" and exp.summary()["absence"] == ""
    assert "baseline" not in exp.summary()
    with pytest.warns(DeprecationWarning, match="Explanation.baseline .*Explanation.absence"):
        assert exp.baseline == ""
    facts = {k: v for k, v in vars(exp).items() if k != "absence"}
    with pytest.warns(DeprecationWarning, match="baseline=.*use absence="):
        old = mc.Explanation(**facts, baseline="glass")
    assert old.absence == "glass"
    with pytest.raises(TypeError, match="both absence= and baseline="):
        mc.Explanation(**facts, absence="glass", baseline="glass")


# --------------------------------------------------------------- skip_background


def _record_keywords(monkeypatch, module: str, name: str, result: str) -> dict:
    """Replace generator ``module.name`` by one that records its keyword arguments and
    returns ``result``: what the public verb passed on, after the renaming."""
    seen: dict = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        yield from ()
        return result

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    return seen


def test_explain_skip_background_is_skip_glass(monkeypatch):
    seen = _record_keywords(
        monkeypatch, "napari_medcam.engine.explain", "iter_explain_one", "explained"
    )
    clf = mc.demo_classifier()
    image = mc.synthetic_tile(0)[0]
    with pytest.warns(DeprecationWarning, match="skip_background=.*use skip_glass="):
        assert mc.explain(image, clf, skip_background=False) == "explained"
    assert seen["skip_glass"] is False
    with pytest.raises(TypeError, match="both skip_glass= and skip_background="):
        mc.explain(image, clf, skip_glass=False, skip_background=False)
    with pytest.warns(DeprecationWarning, match="iter_explain\\(\\)'s skip_background="):
        mc.iter_explain(image, clf, skip_background=True).close()


def test_slide_and_check_verbs_take_skip_background():
    from napari_medcam.checking import iter_check
    from napari_medcam.engine.mil import iter_explain_slide

    from .test_mil import slide_classifier, toy_slide

    with pytest.warns(DeprecationWarning, match="skip_background="):
        iter_explain_slide(toy_slide([(1, 1)]), slide_classifier(), skip_background=False).close()
    with pytest.warns(DeprecationWarning, match="skip_background="):
        iter_check(np.zeros((8, 8, 3)), None, None, 0, None, skip_background=False).close()


def test_mask_scorer_baseline_is_neutral_is_absence_is_neutral():
    from napari_medcam.metrics import MaskScorer

    scorer = MaskScorer.from_image(mc.synthetic_tile(0)[0], mc.demo_classifier())
    with pytest.warns(DeprecationWarning, match="MaskScorer.baseline_is_neutral"):
        assert scorer.baseline_is_neutral == scorer.absence_is_neutral


# --------------------------------------------------------------- empty class


def test_fit_background_class_is_empty_class(monkeypatch):
    seen = _record_keywords(monkeypatch, "napari_medcam.engine.amortised.fit", "iter_fit", "fitted")
    with pytest.warns(DeprecationWarning, match="background_class=.*use empty_class="):
        assert mc.fit_explainer(None, [], background_class="normal") == "fitted"
    assert seen["empty_class"] == "normal" and "background_class" not in seen
    with pytest.raises(TypeError, match="both empty_class= and background_class="):
        mc.fit_explainer(None, [], empty_class="normal", background_class="normal")


def test_explainer_saved_with_the_old_names_loads_in_the_new_words():
    """The packaged demo explainer was written before the rename: its metadata says
    ``background_class``, its config ``baseline``, ``noises`` and ``n_backgrounds``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a saved file is read without a warning
        exp = mc.load_explainer("demo")
        cfg = exp.config
        assert exp.empty_class == exp.class_names.index("normal")
        assert exp.metadata["fit"]["empty_class"] == "normal"
    assert {"baseline", "noises", "n_backgrounds"}.isdisjoint(exp.metadata["config"])
    assert cfg.absence == "auto" and cfg.n_perturbations == 2
    with pytest.warns(DeprecationWarning, match="Explainer.background_class"):
        assert exp.background_class == exp.empty_class


def test_old_fit_checkpoint_metadata_is_the_same_fit():
    new = {
        "tiles": 8,
        "empty_class": 2,
        "config": mc.MedCAMConfig.fast().to_dict(),
        "network": {"channels": [16]},
    }
    old = {**new, "config": _old_spelling(new["config"])}
    old["background_class"] = old.pop("empty_class")
    assert upgraded_metadata(old) == new
    assert upgraded({"background_class": 1, "empty_class": 2}) == {"empty_class": 2}


# --------------------------------------------------------------- the command line


def test_background_class_flag_is_a_hidden_alias_of_empty_class(capsys):
    from napari_medcam.cli.main import build_parser

    base = ["fit", "--tiles", "t", "--out", "e.pt"]
    with pytest.warns(FutureWarning, match="--background-class is deprecated, use --empty-class"):
        args = build_parser().parse_args([*base, "--background-class", "normal"])
    assert args.empty_class == "normal"
    assert build_parser().parse_args([*base, "--empty-class", "normal"]).empty_class == "normal"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--empty-class", "a", "--background-class", "b"])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    helptext = capsys.readouterr().out
    assert "--empty-class" in helptext and "--background-class" not in helptext


def test_command_line_prints_the_deprecated_flag_as_one_line(tmp_path, capsys):
    from napari_medcam.cli import main

    missing = str(tmp_path / "none")
    code = main(["fit", "--tiles", missing, "--out", "e.pt", "--background-class", "normal"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2  # the missing tiles, after the warning
    assert err[0] == (
        "napari-medcam: warning: --background-class is deprecated, use --empty-class "
        "(docs/glossary.md); the old name will be removed in a later release"
    )


# --------------------------------------------------------------- cohorts


@pytest.mark.parametrize("name", sorted(HASHES_BEFORE))
def test_settings_hash_is_unchanged_by_the_rename(name):
    config = _configs()[name].to_dict()
    assert settings_hash(_settings(config)) == HASHES_BEFORE[name]
    assert settings_hash(_settings(_old_spelling(config))) == HASHES_BEFORE[name]
    assert as_before(config) == _old_spelling(config)


def test_cohort_started_before_the_rename_resumes_without_force(tmp_path: Path):
    """A manifest written before the rename (old config names, the old hash) is the
    same cohort for a run with the same config today: no --overwrite needed."""
    config = mc.MedCAMConfig.fast().to_dict()
    old = _settings(json.loads(json.dumps(_old_spelling(config))))
    (tmp_path / MANIFEST).write_text(
        json.dumps(
            {
                "format": "napari-medcam cohort 1",
                "created": "2026-01-01T00:00:00Z",
                "settings_hash": HASHES_BEFORE["fast"],
                "settings": old,
                "classifier": {"spec": "demo"},
                "slides": {"a": {"path": "/slides/a.tif", "status": "done"}},
            }
        )
    )
    loaded = Manifest.load(tmp_path)
    assert loaded is not None and loaded.hash == HASHES_BEFORE["fast"]
    assert loaded.settings["config"]["absence"] == "auto"  # read in the new words
    manifest, started_over = open_manifest(tmp_path, _settings(config), {"spec": "demo"}, False)
    assert not started_over and manifest.slides["a"]["status"] == "done"
    assert manifest.hash == HASHES_BEFORE["fast"]
    changed = _settings(mc.MedCAMConfig.fast(absence="glass").to_dict())
    with pytest.raises(ValueError, match="absence: auto → glass"):
        open_manifest(tmp_path, changed, {"spec": "demo"}, False)
    manifest.save()
    saved = json.loads((tmp_path / MANIFEST).read_text())
    assert saved["settings_hash"] == HASHES_BEFORE["fast"]
    assert (
        "absence" in saved["settings"]["config"] and "baseline" not in saved["settings"]["config"]
    )
