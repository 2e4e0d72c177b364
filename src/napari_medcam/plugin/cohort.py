"""Reader contribution for a cohort output folder (``napari-medcam batch --out DIR``).

Opening the folder docks a list of its slides (status, finding, tiles valid) and
opens the first finished one; choosing another replaces it. A slide opens as its
pyramid (lazy, level 0 at scale 1), the tile map of its explained tiles (valid
green, failed orange) and its evidence mask on top, both at the explained level's
downsample, each of their pixels exactly over the level-0 pixels it stands for.
A slide-classifier cohort (``--slide-classifier``) lists each slide's sentence and
opens its evidence tiles as a Labels layer with one pixel per tile, over the tiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from napari_medcam.batch.manifest import DONE, MANIFEST, Manifest
from napari_medcam.batch.outputs import DECISION, MASK, TILES, read_result, read_tiles_csv
from napari_medcam.batch.summary import summary_rows
from napari_medcam.io.slides import open_slide
from napari_medcam.plugin.tile_map import TILE_COLORS, TILE_INVALID, TILE_VALID

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: key in a layer's metadata naming the cohort folder and slide it shows
COHORT_KEY = "medcam_cohort"
#: the evidence in the cyan of the widget's masks and of the GeoJSON for QuPath
MASK_COLORS = {0: "transparent", 1: "#00e5ff", None: "#ffd400"}


def get_cohort_reader(path: str | list[str]) -> Any:
    """Claim a folder holding a cohort manifest."""
    if isinstance(path, list) or not (Path(path) / MANIFEST).is_file():
        return None
    return read_cohort


def _tile_map(rows: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """Explained tiles' windows painted valid (1) or failed (2, painted last)."""
    out = np.zeros(shape, np.uint8)
    for value, wanted in ((TILE_VALID, True), (TILE_INVALID, False)):
        for r in rows:
            if r["valid"] == wanted:
                out[r["y0"] : r["y1"], r["x0"] : r["x1"]] = value
    return out


def slide_layers(cohort: Path, slide_id: str) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data of one finished slide: the slide, its tile map and its mask, aligned."""
    folder = cohort / "slides" / slide_id
    result = read_result(folder)
    if result is None:
        raise ValueError(f"slide {slide_id} has no finished result in {cohort}")
    marker = {COHORT_KEY: {"folder": str(cohort), "slide": slide_id}}
    slide = open_slide(result["slide"])
    image = (
        slide.levels,
        {"name": slide_id, "multiscale": True, "rgb": slide.rgb, "metadata": dict(marker)},
        "image",
    )
    if result.get("kind") == DECISION:
        return [image, _decision_tiles(folder, slide_id, result, marker)]
    f = float(result["downsample"])
    # mask pixel (r, c) covers level-0 pixels [r·f, (r+1)·f): its centre lies (f − 1)/2
    # past the centre of the first of them, where napari puts level-0 pixel r·f
    scale, translate = (f, f), ((f - 1) / 2,) * 2
    mask = open_slide(folder / MASK)
    name = result["class_found"] or "no finding"
    tiles = _tile_map(read_tiles_csv(folder / TILES), tuple(result["level_shape"]))
    return [
        image,
        (
            tiles,
            {
                "name": f"{slide_id} · Med-CAM tiles · {name}",
                "colormap": dict(TILE_COLORS),
                "opacity": 0.3,
                "scale": scale,
                "translate": translate,
                "metadata": dict(marker),
            },
            "labels",
        ),
        (
            mask.levels,
            {
                "name": f"{slide_id} · Med-CAM · {name}",
                "multiscale": len(mask.levels) > 1,
                "colormap": dict(MASK_COLORS),
                "scale": scale,
                "translate": translate,
                "metadata": {**marker, "medcam_result": result},
            },
            "labels",
        ),
    ]


def _decision_tiles(
    folder: Path, slide_id: str, result: dict[str, Any], marker: dict[str, Any]
) -> tuple[Any, dict[str, Any], str]:
    """The kept tiles of a slide-decision result as Labels, one pixel per tile: the
    windows in evidence.json lie on a strict grid of the tile size at the explained
    level, so cell (r, c) is exactly the tile at (r·S, c·S) (napari draws level-0 pixel
    i at i, so the cell's centre is at f·(r·S + (S − 1)/2))."""
    import json

    evidence = json.loads((folder / "evidence.json").read_text())
    windows = np.asarray(evidence["kept_windows"], np.int64).reshape(-1, 4)
    f = float(result["downsample"])
    size = int(windows[0, 2] - windows[0, 0]) if len(windows) else 1
    rows, cols = (int(n) // size for n in result["level_shape"][:2])
    grid = np.zeros((max(rows, 1), max(cols, 1)), np.uint8)
    grid[windows[:, 0] // size, windows[:, 1] // size] = 1
    return (
        grid,
        {
            "name": f"{slide_id} · Med-CAM slide evidence · {evidence['target']}",
            "colormap": dict(MASK_COLORS),
            "opacity": 0.5,
            "scale": (f * size, f * size),
            "translate": (f * (size - 1) / 2,) * 2,
            "metadata": {**marker, "medcam_result": result},
        },
        "labels",
    )


def _list_line(slide_id: str, r: dict[str, Any]) -> str:
    if r["status"] != DONE:
        return f"{slide_id} — {r['status']}: {r['reason']}"
    if r.get("sentence"):  # a slide-classifier cohort
        return f"{slide_id} — {r['sentence']}"
    return (
        f"{slide_id} — {r['class_found'] or 'no finding'}, {r['tiles_valid']}/"
        f"{r['tiles_explained']} tiles valid" + ("" if r["valid"] else " (not valid)")
    )


class CohortBrowser(QWidget):
    """The cohort's slides; choosing one shows it (and removes the one shown before)."""

    def __init__(self, viewer: napari.Viewer | None, cohort: Path) -> None:
        super().__init__()
        self.viewer = viewer
        self.cohort = cohort
        manifest = Manifest.load(cohort)
        self.rows = {r["slide"]: r for r in summary_rows(manifest)} if manifest else {}
        self.list = QListWidget()
        for sid, r in self.rows.items():
            QListWidgetItem(_list_line(sid, r), self.list).setData(256, sid)  # Qt.UserRole
        self.info = QLabel(f"{len(self.rows)} slides in {cohort.name}")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.info)
        self.list.currentItemChanged.connect(self._chosen)

    def finished(self) -> list[str]:
        return [sid for sid, r in self.rows.items() if r["status"] == DONE]

    def _chosen(self, item: QListWidgetItem | None, _previous: Any = None) -> None:
        if item is not None:
            self.show_slide(item.data(256))

    def select(self, slide_id: str) -> None:
        """Choose ``slide_id`` in the list (shows it, as a click does)."""
        for i in range(self.list.count()):
            if self.list.item(i).data(256) == slide_id:
                self.list.setCurrentRow(i)
                return
        raise ValueError(f"no slide {slide_id!r} in {self.cohort}")

    def show_slide(self, slide_id: str) -> None:
        """Replace the cohort layers in the viewer with ``slide_id``'s."""
        row = self.rows[slide_id]
        if row["status"] != DONE:
            self.info.setText(f"{slide_id}: {row['status']} — {row['reason']}")
            return
        if self.viewer is None:
            return
        for layer in list(self.viewer.layers):
            mark = layer.metadata.get(COHORT_KEY)
            if mark and mark["folder"] == str(self.cohort):
                self.viewer.layers.remove(layer)
        for data, meta, kind in slide_layers(self.cohort, slide_id):
            getattr(self.viewer, f"add_{kind}")(data, **meta)
        self.info.setText(f"{slide_id}: {row['reason'] or 'valid'}")


def read_cohort(path: str) -> list[tuple]:
    """Dock the slide list in the current viewer and return the first finished slide."""
    import napari

    cohort = Path(path).resolve()
    viewer = napari.current_viewer()
    browser = CohortBrowser(viewer, cohort)
    first = browser.finished()[:1]
    if viewer is not None:
        viewer.window.add_dock_widget(browser, name=f"Med-CAM cohort · {cohort.name}")
        if first:  # selecting it shows it (added by the browser, replaced on the next pick)
            browser.select(first[0])
        return [(None,)]
    return slide_layers(cohort, first[0]) if first else [(None,)]
