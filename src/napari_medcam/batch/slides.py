"""Which slides a cohort run explains: files, DICOM WSI folders, folders of slides, and a
CSV list."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from napari_medcam.io.slide_backends import is_dicom_folder
from napari_medcam.io.slides import SLIDE_SUFFIXES


def _from_csv(path: Path) -> list[Path]:
    """The ``path`` column (else the first) of a CSV; relative paths from its folder."""
    if not path.is_file():
        raise ValueError(f"--list: no such file: {path}")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"--list: {path} is empty")
    header = [c.strip().lower() for c in rows[0]]
    col = header.index("path") if "path" in header else 0
    body = rows[1:] if "path" in header else rows
    out = [Path(r[col].strip()) for r in body if len(r) > col and r[col].strip()]
    return [p if p.is_absolute() else path.parent / p for p in out]


def resolve_slides(slides: Iterable[str | Path], slide_list: str | Path | None) -> list[Path]:
    """Absolute slide paths, in the order given, each once.

    A DICOM WSI folder is one slide; any other folder stands for the slide files and
    DICOM WSI folders directly inside it. Files are not opened here: a missing or
    unreadable slide is the worker's to report, as failed.
    """
    paths: list[Path] = []
    for item in slides:
        p = Path(item)
        if is_dicom_folder(p):
            paths.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if _is_slide(q))
            if not found:
                raise ValueError(
                    f"no slides ({', '.join(SLIDE_SUFFIXES)}, or DICOM WSI folders) in folder {p}"
                )
            paths.extend(found)
        else:
            paths.append(p)
    if slide_list is not None:
        paths.extend(_from_csv(Path(slide_list)))
    if not paths:
        raise ValueError("no slides given: name slide files or folders, or --list slides.csv")
    return list(dict.fromkeys(_absolute(p) for p in paths))


def _is_slide(path: Path) -> bool:
    if path.is_dir():
        return is_dicom_folder(path)
    return path.name.lower().endswith(SLIDE_SUFFIXES)


def _absolute(path: Path) -> Path:
    """``path`` resolved; when it cannot be (a symbolic link loop), made absolute as it
    is: the worker then reports that one slide as failed, and the others go on."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))
