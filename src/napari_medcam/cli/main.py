"""The ``napari-medcam`` command: every verb's parser, and one way errors end a run."""

from __future__ import annotations

import argparse
import sys
import warnings

from napari_medcam.cli.batch import add_batch_parser
from napari_medcam.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from napari_medcam.cli.compare import add_compare_parser
from napari_medcam.cli.evaluate import add_arguments, run_from_args
from napari_medcam.cli.explain import add_explain_parser
from napari_medcam.cli.fit import add_fit_parser


def _run_classifiers(args: argparse.Namespace) -> int:
    """Print every registered classifier with its card's summary (``classifiers`` verb)."""
    from napari_medcam.classifiers.card import card_of
    from napari_medcam.classifiers.loading import load_classifier, registered_classifiers

    names = sorted(registered_classifiers())
    if not names:
        print("no classifiers are registered (entry-point group napari_medcam.classifiers)")
    for name in names:
        try:
            clf = load_classifier(name)
        except Exception as err:  # one broken plugin must not hide the others
            print(f"{name}\n  cannot be loaded: {str(err).splitlines()[0]}\n")
            continue
        card = card_of(clf)
        size = " × ".join(str(s) for s in clf.input_size)
        lines = (
            card.lines(clf)
            if card is not None
            else [
                f"Input {size} px · classes: {', '.join(clf.class_names)}",
                "No card: what it was trained on is not recorded",
            ]
        )
        print(name)
        for line in lines:
            print(f"  {line}")
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from napari_medcam._version import __version__

    p = argparse.ArgumentParser(
        prog="napari-medcam",
        description="Med-CAM: the minimal evidence an image classifier used for its decision.",
    )
    p.add_argument("--version", action="version", version=f"napari-medcam {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    add_explain_parser(sub)
    add_fit_parser(sub)
    v = sub.add_parser(
        "evaluate", help="Med-CAM vs the comparison methods Grad-CAM, RISE and occlusion"
    )
    add_arguments(v)
    v.set_defaults(run=run_from_args)
    add_batch_parser(sub)
    add_compare_parser(sub)
    c = sub.add_parser(
        "classifiers", help="list the registered classifiers and what each was trained on"
    )
    c.set_defaults(run=_run_classifiers)
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The verb's arguments; a deprecated flag's FutureWarning is one line on stderr, as
    an error is, not a warning pointing into argparse."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        args = build_parser().parse_args(argv)
    for w in caught:
        if issubclass(w.category, FutureWarning):
            print(f"napari-medcam: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input is one line on stderr and exit 2, never a traceback."""
    args = _parse(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"napari-medcam: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print(
            "napari-medcam: error: out of memory; explain a smaller --region, a coarser "
            "--level, or use a machine with more memory",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nnapari-medcam: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
