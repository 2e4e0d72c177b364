"""One command line: every verb words the same option the same way (issue 21, item 11)."""

from __future__ import annotations

import argparse

import pytest

from napari_medcam.cli import build_parser, main
from napari_medcam.cli.common import PRESETS


def _verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_option_of_every_verb_has_help():
    for verb, parser in _verbs().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            assert action.help, f"{verb} {action.option_strings[0]} has no help"


@pytest.mark.parametrize("flag", ["--overwrite", "--preset", "--device", "--seed", "--json"])
def test_a_shared_option_means_one_thing_everywhere(flag):
    found = {v: a for v, p in _verbs().items() if (a := _option(p, flag)) is not None}
    assert len(found) >= 2, f"{flag} is shared by at least two verbs"
    if flag in ("--overwrite", "--json"):  # a switch everywhere, never a path
        assert all(a.nargs == 0 for a in found.values()), flag
    if flag == "--preset":
        assert all(tuple(a.choices) == PRESETS for a in found.values())
    if flag == "--device":
        assert {a.default for a in found.values()} == {"auto"}


def test_batch_takes_overwrite_and_its_older_name_force():
    batch = _verbs()["batch"]
    assert _option(batch, "--overwrite") is _option(batch, "--force")


def test_classifiers_lists_every_registered_one_with_its_card(capsys):
    assert main(["classifiers"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "demo-volume", "ihc-dab"):
        assert f"\n{name}\n" in f"\n{out}"
    assert "classes: normal, lesion" in out and "Stain:" in out


def test_fit_errors_are_one_line_without_a_blank_line_first(tmp_path, capsys):
    code = main(["fit", "--tiles", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("napari-medcam: error:") and "Traceback" not in err
