"""One slide's outputs in its own folder, written all at once; and reading them back.

A slide folder holds ``mask.tif`` (pyramidal uint8 0/1 TIFF at the explained level,
the explanation as metadata), ``mask.geojson`` (QuPath annotations in level-0
pixels), ``tiles.csv`` (one row per explained tile: window, confidences, verdict),
``thumbnail.png`` / ``overlay.png`` (the slide, and the slide with its evidence, for
the summary) and ``result.json``. They are written by one `write_files` call, and
``result.json`` is renamed last. A slide is finished when its ``result.json`` names
the run's settings and every other file is there and readable (`slide_outputs_valid`);
a resume redoes any other slide, its old outputs removed first (`remove_outputs`). A
worker killed while writing leaves at most hidden temporary files
(``.mask.tif.1a2b3c4d.tif``), which the next attempt removes.

A cohort explained with a slide (MIL) classifier (``batch --slide-classifier``) has no
mask: its slide folders hold ``evidence.geojson`` (the kept tiles, and with --pixels
the pixels in them, as QuPath annotations), ``evidence.json`` (the decision's summary:
`napari_medcam.io.slide_evidence.write_slide_evidence`), the thumbnails and
``result.json`` (its ``kind`` is `DECISION`), and the tile embeddings' cache
``embeddings.zarr``, which is not an output: a redo reuses it while the encoder and the
tiling are unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.io import geojson_writer, jsonable, write_files

MASK, GEOJSON, TILES, THUMB, OVERLAY, RESULT = (
    "mask.tif",
    "mask.geojson",
    "tiles.csv",
    "thumbnail.png",
    "overlay.png",
    "result.json",
)
EVIDENCE_GEOJSON, EVIDENCE_JSON, EMBEDDINGS = "evidence.geojson", "evidence.json", "embeddings.zarr"
#: ``result.json``'s ``kind`` of a slide explained with a slide (MIL) classifier
DECISION = "slide decision"
#: larger side of the summary's thumbnails, in pixels
THUMB_SIDE = 320
TILE_COLUMNS = (
    "tile",
    "y0",
    "x0",
    "y1",
    "x1",
    "y0_level0",
    "x0_level0",
    "y1_level0",
    "x1_level0",
    "target",
    "class_name",
    "original",
    "masked",
    "robust",
    "area",
    "valid",
    "status",
)
#: what the summary, the cohort reader and a resume read from a finished slide's result.json
RESULT_KEYS = (
    "slide",
    "level",
    "downsample",
    "level_shape",
    "settings_hash",
    "class_found",
    "valid",
    "explanation_status",
    "tiles",
    "tiles_explained",
    "tiles_valid",
    "area_fraction",
    "evidence_level0_px",
    "seconds",
)
#: what a slide-decision result.json holds instead of the tile counts (`DECISION`)
DECISION_KEYS = (
    *(k for k in RESULT_KEYS if k not in ("tiles_explained", "tiles_valid")),
    "kind",
    "sentence",
    "kept",
    "meets_goal",
    "necessary",
    "p_original",
    "p_kept",
)
EVIDENCE = (0, 229, 255)  # the mask's cyan, as in napari and QuPath
FAILED_TILE = (240, 173, 78)  # the plugin's orange for tiles whose mask failed


def remove_partial(folder: Path) -> None:
    """Delete hidden temporary files a killed attempt left in a slide folder."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.is_file():
                p.unlink(missing_ok=True)


def tiles_csv(verdicts: list[dict[str, Any]], class_names: list[str], downsample: float) -> str:
    """The per-tile verdict table: windows at the explained level and in level-0 pixels."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TILE_COLUMNS)
    for i, v in enumerate(verdicts):
        y0, x0, y1, x1 = (int(c) for c in v["window"])
        level0 = [round(c * downsample) for c in (y0, x0, y1, x1)]
        w.writerow(
            [i, y0, x0, y1, x1, *level0, v["target"], class_names[v["target"]]]
            + [v["original"], v["masked"], v["robust"], v["area"], int(bool(v["valid"]))]
            + [v["status"]]
        )
    return buf.getvalue()


def read_tiles_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``tiles.csv``, windows as ints and ``valid`` as bool."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in TILE_COLUMNS[:10]:
            r[k] = int(r[k])
        r["valid"] = r["valid"] == "1"
    return rows


def _small(image: Any, side: int = THUMB_SIDE) -> np.ndarray:
    """An RGB uint8 view of ``image`` (2-D or RGB, lazy or not) at most ``side`` a side."""
    step = max(1, -(-max(int(n) for n in image.shape[:2]) // side))
    arr = np.asarray(image[::step, ::step])
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = ((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    return arr


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum(
        (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1
    )
    cols = np.minimum(
        (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1
    )
    return mask[rows][:, cols]


def thumbnails(
    image: Any, mask: Any, verdicts: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """(slide thumbnail, thumbnail with the evidence in cyan and failed tiles outlined)."""
    thumb = _small(image)
    step = max(1, -(-max(int(n) for n in mask.shape[:2]) // THUMB_SIDE))
    small_mask = _resize_nearest(np.asarray(mask[::step, ::step]) > 0, thumb.shape[:2])
    over = thumb.copy()
    over[small_mask] = (0.4 * over[small_mask] + 0.6 * np.array(EVIDENCE)).astype(np.uint8)
    fy, fx = thumb.shape[0] / mask.shape[0], thumb.shape[1] / mask.shape[1]
    for v in verdicts:
        if v["valid"]:
            continue
        y0, x0, y1, x1 = v["window"]
        a, b = int(y0 * fy), max(int(y1 * fy) - 1, int(y0 * fy))
        c, d = int(x0 * fx), max(int(x1 * fx) - 1, int(x0 * fx))
        over[a, c : d + 1] = over[b, c : d + 1] = FAILED_TILE
        over[a : b + 1, c] = over[a : b + 1, d] = FAILED_TILE
    return thumb, over


def _png_writer(rgb: np.ndarray):
    from PIL import Image

    return lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG")


def write_slide_outputs(
    folder: Path,
    exp: Any,
    facts: dict[str, Any],
    thumbs: tuple[np.ndarray, np.ndarray],
    class_names: list[str],
) -> list[Path]:
    """Write every output of one explained slide into ``folder``: all of them, or none.

    ``facts``: the run's and slide's facts (slide path, level, downsample, settings
    hash, ...) that go into ``result.json`` and the mask's metadata. Existing
    outputs of an earlier attempt are replaced.
    """
    from napari_medcam.io.slides import pyramid_writer

    summary = exp.summary()
    verdicts = summary.pop("tile_verdicts")
    f = float(facts["downsample"])
    meta = {**summary, **{k: v for k, v in facts.items() if k != "result"}}
    props = {
        "class_name": exp.class_name,
        "slide": facts["slide"],
        "level": facts["level"],
        "valid": exp.valid,
        "masked_confidence": exp.masked_confidence,
        "original_confidence": exp.original_confidence,
    }
    result = {**facts["result"], "explanation": summary}
    # µm per level-0 pixel, when the slide records it: QuPath's "Area µm^2" per region
    mpp = facts["level_mpp"] / f if facts.get("level_mpp") else None
    labels = exp.labels
    if labels is not None and exp.label_classes:
        # an explainer's classes: class index + 1 per pixel, polygons per class
        mask, geo = labels, _labels_geojson(labels, exp.label_classes, props, f, mpp)
    else:
        mask = exp.mask
        geo = geojson_writer(mask, props, downsample=f, origin=(0.0, 0.0), mpp=mpp)
    writers = {
        folder / MASK: pyramid_writer(mask, meta),
        folder / GEOJSON: geo,
        folder / TILES: _text_writer(tiles_csv(verdicts, class_names, f)),
        folder / THUMB: _png_writer(thumbs[0]),
        folder / OVERLAY: _png_writer(thumbs[1]),
        # last: its presence means every file above is in place
        folder / RESULT: _text_writer(json.dumps(jsonable(result), indent=1)),
    }
    return write_files(writers, overwrite=True)


def _labels_geojson(
    labels: Any, classes: dict[int, str], props: dict[str, Any], f: float, mpp: float | None
):
    """One FeatureCollection with every class's polygons, each named by its class."""
    from napari_medcam.io import mask_to_geojson

    features = []
    for value, name in sorted(classes.items()):
        plane = _Equals(labels, int(value))
        gj = mask_to_geojson(plane, {**props, "class_name": name}, downsample=f, mpp=mpp)
        features.extend(gj["features"])
    text = json.dumps(jsonable({"type": "FeatureCollection", "features": features}))
    return _text_writer(text)


class _Equals:
    """``labels == value``, read lazily band by band (labels may be a zarr array)."""

    def __init__(self, labels: Any, value: int) -> None:
        self.labels, self.value, self.shape = labels, value, tuple(labels.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.labels[key]) == self.value


def _text_writer(text: str):
    return lambda tmp: tmp.write_text(text)


def read_result(folder: Path) -> dict[str, Any] | None:
    """A slide folder's ``result.json``; None when it is missing, unreadable or not a
    JSON object (a hand-edited or damaged file means: not finished)."""
    try:
        result = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def remove_outputs(folder: Path) -> None:
    """Delete a slide's outputs before it is redone, ``result.json`` first (from then on
    the slide is not finished), and a killed attempt's hidden temporary files.

    Only the files a slide's run writes, in its own folder: a reader's notes stay, and
    a link is removed, never what it points to.
    """
    for name in (RESULT, MASK, GEOJSON, TILES, THUMB, OVERLAY, EVIDENCE_GEOJSON, EVIDENCE_JSON):
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    remove_partial(folder)


def slide_outputs_valid(folder: Path, settings_hash: str | None = None) -> str:
    """Empty when every output of a finished slide is there and readable, else what is wrong.

    A slide is finished only when all its files are (result.json alone is not enough:
    a file may have been deleted or damaged since). ``settings_hash``: the run's; a
    result made with others is not finished. Cheap at any slide size: of the mask, its
    header, metadata and smallest pyramid level are read, not its full resolution.
    """
    result = read_result(folder)
    if result is None:
        return f"{RESULT} missing, unreadable or not a JSON object"
    decision = result.get("kind") == DECISION
    lacking = [k for k in (DECISION_KEYS if decision else RESULT_KEYS) if k not in result]
    if lacking:
        return f"{RESULT} lacks {', '.join(lacking)}"
    if settings_hash is not None and result["settings_hash"] != settings_hash:
        return f"{RESULT} was made with other settings"
    checks = (
        {
            EVIDENCE_GEOJSON: _geojson_problem,
            EVIDENCE_JSON: _evidence_problem,
            THUMB: _png_problem,
            OVERLAY: _png_problem,
        }
        if decision
        else {
            MASK: _mask_problem,
            GEOJSON: _geojson_problem,
            TILES: _tiles_problem,
            THUMB: _png_problem,
            OVERLAY: _png_problem,
        }
    )
    for name, check in checks.items():
        if not (folder / name).is_file():
            return f"{name} missing"
        try:
            problem = check(folder / name, result)
        except Exception as err:  # a damaged file fails in its reader's own ways
            problem = f"{type(err).__name__}: {err}"
        if problem:
            return f"{name}: {problem}"
    return ""


def _mask_problem(path: Path, result: dict[str, Any]) -> str:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        meta = (tif.shaped_metadata or ({},))[0].get("napari_medcam", {})
        smallest = series.levels[-1].asarray()
    if list(series.shape[:2]) != list(result["level_shape"]):
        return f"shape {list(series.shape[:2])} is not the level's {result['level_shape']}"
    if meta.get("settings_hash") != result["settings_hash"]:
        return f"its metadata does not match {RESULT}"
    values = set(range(max(int(k) for k in result.get("label_classes") or {1: ""}) + 1))
    if set(np.unique(smallest).tolist()) - values:
        return f"values outside the classes of {RESULT}"
    return ""


def _geojson_problem(path: Path, result: dict[str, Any]) -> str:
    gj = json.loads(path.read_text())
    if not isinstance(gj, dict) or gj.get("type") != "FeatureCollection":
        return "not a GeoJSON FeatureCollection"
    return "" if isinstance(gj.get("features"), list) else "no list of features"


def _evidence_problem(path: Path, result: dict[str, Any]) -> str:
    facts = json.loads(path.read_text())
    if not isinstance(facts, dict):
        return "not a JSON object"
    if facts.get("kept") != result["kept"] or facts.get("tiles") != result["tiles"]:
        return f"its tiles do not match {RESULT}"
    return ""


def _tiles_problem(path: Path, result: dict[str, Any]) -> str:
    rows = read_tiles_csv(path)
    if len(rows) != result["tiles_explained"]:
        return f"{len(rows)} rows, {RESULT} says {result['tiles_explained']} tiles"
    return ""


def _png_problem(path: Path, result: dict[str, Any]) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    return ""
