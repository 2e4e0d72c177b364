"""What every verb of ``napari-medcam`` shares: exit codes, options, progress, checks.

One definition per option, so a flag means the same in every verb: ``--overwrite``
replaces what is already in the output, ``--preset`` lists the same recipes, ``--device``
defaults to ``auto``, ``--json`` prints JSON (files are named ``--records``). A flag
renamed to the glossary's word (docs/glossary.md) keeps its old name, hidden and warning,
for one release (`add_renamed_option`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_medcam.engine.renamed import warn_renamed

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

DETAIL_HELP = (
    "the scale of the evidence: 'cells', 'cell groups' (default), 'regions', a structure "
    "size in pixels, or 'N um' when the classifier's card knows its pixel size; the mask "
    "is made of regions at least that size, never single pixels"
)
PRESET_HELP = (
    "the recipe: 'fast' (default; a small U-Net at quarter resolution, seconds per tile on "
    "a CPU), 'paper' (the authors' recipe from a full mask: minutes per tile), 'volume' "
    "(3-D classifiers: a half-resolution 3-D mask)"
)
PRESETS = ("fast", "paper", "volume")


def add_classifier_options(p: argparse.ArgumentParser, what: str = "") -> None:
    """--classifier and --weights, worded alike in every verb."""
    p.add_argument(
        "--classifier",
        default="demo",
        help="a registered name (see `napari-medcam classifiers`), a classifier file "
        "(torch.export .pt2 or TorchScript) or package.module:factory (default: demo)" + what,
    )
    p.add_argument("--weights", help="state-dict file for a factory classifier")


def add_run_options(p: argparse.ArgumentParser, presets: bool = True) -> None:
    """--preset, --device and --seed, worded alike in every verb."""
    if presets:
        p.add_argument("--preset", choices=PRESETS, default="fast", help=PRESET_HELP)
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default: GPU when there is one), cpu, cuda, cuda:N or mps",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the optimisation: the same seed, image and settings give the "
        "same mask (default 0)",
    )


class _OldFlag(argparse.Action):
    """A flag's name before the glossary: stores into the new flag's destination, with a
    FutureWarning naming the new flag."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        warn_renamed(str(option), self.new, FutureWarning)
        setattr(namespace, self.dest, values)


def add_renamed_option(p: argparse.ArgumentParser, new: str, old: str, **kwargs: Any) -> None:
    """Option ``new`` (``kwargs`` as `add_argument`'s) and ``old``, its deprecated name,
    hidden from --help; giving both is an error."""
    both = p.add_mutually_exclusive_group()
    action = both.add_argument(new, **kwargs)
    both.add_argument(old, dest=action.dest, action=_OldFlag, new=new, help=argparse.SUPPRESS)


def add_overwrite(p: argparse.ArgumentParser, what: str, *aliases: str) -> None:
    """--overwrite: replace what the output already holds (the same flag in every verb)."""
    p.add_argument(
        "--overwrite", *aliases, dest="overwrite", action="store_true", help=f"replace {what}"
    )


class Progress:
    """The terminal progress bar of every verb: tqdm on a terminal, else a line per 10 %.

    Takes any event with ``fraction`` (0..1) and ``describe()``: the engine's
    `ProgressEvent` and a fit's `FitEvent` alike.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.last = -1

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        pct = int(100 * event.fraction)
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=100,
                    unit="%",
                    file=sys.stderr,
                    leave=True,
                    bar_format="{l_bar}{bar}| {elapsed}<{remaining} {desc}",
                )
            self.bar.set_description_str(event.describe(), refresh=False)
            self.bar.update(max(0, pct - self.bar.n))
        elif pct // 10 > self.last:
            self.last = pct // 10
            print(f"{pct:3d} % {event.describe()}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def check_outputs(outputs: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that could not all be written as asked: two on
    one path, a folder, a missing folder, an existing file without ``overwrite``.

    Hidden temporary files that an earlier, killed write left beside them are removed.
    """
    from napari_medcam.io import clean_stale_temps

    if len(set(outputs)) < len(outputs):
        raise ValueError(
            f"--out {outputs[0]} would be overwritten by its own GeoJSON: name the mask "
            "file (.tif); the polygons go beside it as .geojson"
        )
    for path in outputs:
        if path.is_dir():
            raise ValueError(f"--out {path} is a folder: name the file to write")
        if not path.parent.is_dir():
            raise ValueError(f"--out: folder {path.parent} does not exist")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: pass --overwrite to replace it")
    for folder in {path.parent for path in outputs}:
        clean_stale_temps(folder)


def parse_target(value: str | None) -> int | str | None:
    """A class index (digits) or a class name, as typed."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def config_from_args(args: argparse.Namespace) -> Any:
    """The `MedCAMConfig` that --preset, --seed, --steps, --tolerance and --detail ask for:
    one place, so explain and batch build the same recipe from the same options."""
    from napari_medcam.engine.config import MedCAMConfig
    from napari_medcam.engine.scale import parse_detail

    config = MedCAMConfig.preset(args.preset, seed=args.seed)
    if args.steps is not None:
        config = config.capped(args.steps)
    if args.tolerance is not None:
        config = config.replace(tolerance=args.tolerance)
    if args.detail is not None:
        config = config.replace(detail=parse_detail(args.detail, "--detail"))
    return config
