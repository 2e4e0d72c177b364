"""Each finished slide's evidence scored against its reference annotation, for the summary.

``batch --annotations DIR`` matches a slide to ``DIR/<slide name>.geojson`` (or
``.json``): the slide's file name without its last suffix, then without each further
one (``case-07.ome.tiff`` → ``case-07.ome``, then ``case-07``), or a DICOM folder's
name. The agreement is computed from the slide's written mask TIFF (placed on the slide
by its own metadata) when the summary is made, so a rerun with annotations — new or
changed — scores finished slides without explaining them again, and memory stays
bounded (`napari_medcam.io.compare` reads the mask tile by tile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_medcam.batch.outputs import MASK
from napari_medcam.io import compare

#: what a reference annotation file of a slide may end with, in the order tried
SUFFIXES = (".geojson", ".json")
#: the summary's agreement columns (empty when the slide has no annotation)
COLUMNS = (
    "annotation",
    "dice",
    "iou",
    "precision",
    "recall",
    "regions_touched",
    "annotation_problem",
)


def check_folder(folder: str | Path | None) -> Path | None:
    """``folder`` resolved, or a ValueError before any slide is explained."""
    if folder is None:
        return None
    path = Path(folder).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "not found"
        raise ValueError(f"--annotations {folder}: {what} (a folder of QuPath GeoJSON files)")
    return path.resolve()


def annotation_for(folder: Path, slide: str | Path) -> Path | None:
    """The reference annotation of ``slide`` in ``folder`` (module docstring), or None."""
    name = Path(slide).name
    stems = [name] if Path(slide).is_dir() else []
    stem = name
    while "." in stem.strip("."):
        stem = stem.rsplit(".", 1)[0]
        stems.append(stem)
    for stem in stems:
        for suffix in SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def agreement_cells(slide_folder: Path, annotation: Path) -> dict[str, Any]:
    """The agreement columns of one finished slide: scores over all annotated classes
    together, or the reason the annotation was refused (e.g. another slide's file)."""
    cells: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    cells["annotation"] = annotation.name
    try:
        row = compare(slide_folder / MASK, annotation).rows[-1]  # all classes together
    except ValueError as err:
        cells["annotation_problem"] = str(err)
        return cells
    scores = row.scores()
    cells.update({k: round(scores[k], 4) for k in ("dice", "iou", "precision", "recall")})
    cells["regions_touched"] = f"{row.touched}/{row.regions}"
    return cells
