"""Screenshots of napari with the Med-CAM widget docked and a result shown, into docs/.

Run headless under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py [tile ihc slide]

- ``tile`` → docs/screenshot.png (the README's): the synthetic sample tile with its
  planted evidence, explained with the demo classifier and the default preset, and
  compared with the evidence;
- ``ihc`` → docs/screenshot-ihc.png: scikit-image's IHC sample with its own
  classifier (ihc-dab) and the default preset;
- ``mil`` → docs/screenshot-mil.png: the *Med-CAM slide decision* widget on a
  synthetic MIL slide (``zoo.mil.synthetic_slide("eval", 0)``) with the ``mil-abmil``
  slide classifier: the evidence tiles, the aggregator's weights beside them;
- ``qupath`` → docs/screenshot-qupath.png: the synthetic sample tile beside a QuPath
  GeoJSON annotation of its lesion (a hand-drawn-like polygon around the planted
  nuclei, written here as QuPath exports it) opened with File ▸ Open, and the evidence
  compared with it;
- ``slide`` → docs/screenshot-slide.png: a 4,096² synthetic pyramidal slide written
  with ``make_slide.py --mpp 0.5`` (the synthetic tissue has no real pixel size; the
  value is there to show the Level list), the visible region at level 0, the default
  preset.

Default steps everywhere: a capped run shows what a user who caps it gets (fewer
steps, larger and less readable masks), not what the product does.

Each shows the mask as an outline on the tissue, the legend and the plain-language
result. The whole window is saved at 1500 × 940.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def wait(app: Any, condition: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("timed out")
        app.processEvents()
        time.sleep(0.02)


def settle(app: Any) -> None:
    for _ in range(30):
        app.processEvents()
        time.sleep(0.03)


def run(widget: Any, app: Any) -> bool:
    worker = widget.explain()
    if worker is None:
        print("could not start:", widget.input.region_label.value, file=sys.stderr)
        return False
    wait(app, lambda: widget.worker is None, 3600)
    result = widget.last_result
    if result is None or result.error:
        print("run failed:", result and result.error, file=sys.stderr)
        return False
    print(result.explanation.one_line())
    return True


def frame(viewer: Any, mask: Any, margin: float = 1.8) -> None:
    """Centre the view on the mask's bounding box, ``margin`` times its size."""
    import numpy as np

    rows, cols = np.nonzero(np.asarray(mask.data))
    if not len(rows):
        return
    lo = np.asarray(mask.data_to_world((rows.min(), cols.min())))
    hi = np.asarray(mask.data_to_world((rows.max() + 1, cols.max() + 1)))
    viewer.camera.center = tuple((lo + hi) / 2)
    size = max(float(np.max(hi - lo)) * margin, 1.0)
    canvas = viewer.window._qt_viewer.canvas.native  # screenshot-only use
    viewer.camera.zoom = min(canvas.width(), canvas.height()) / size


def scene(name: str, out: Path) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari · Med-CAM", show=True)
    window = viewer.window._qt_window  # screenshot-only use of the main window
    window.resize(1500, 940)
    app = QApplication.instance()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    widget.settings.ask_above.value = 0  # no question in a script
    reference = None
    if name == "tile":
        viewer.open_sample("napari-medcam", "synthetic_tile")
        reference = viewer.layers["true evidence"]
    elif name == "qupath":
        viewer.open_sample("napari-medcam", "synthetic_tile")
        truth = viewer.layers["true evidence"]
        annotation = Path(tempfile.mkdtemp()) / "qupath-annotation.geojson"
        write_qupath_annotation(np.asarray(truth.data) > 0, annotation)
        viewer.layers.remove(truth)
        (reference,) = viewer.open(str(annotation), plugin="napari-medcam")
    elif name == "ihc":
        viewer.open_sample("napari-medcam", "immunohistochemistry")
    else:
        slide = Path(tempfile.mkdtemp()) / "synthetic-slide.tif"
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/make_slide.py"), str(slide), "--size", "4096"]
            + ["--mpp", "0.5"],
            check=True,
        )
        viewer.open(str(slide), plugin="napari-medcam")
        widget.classifier_panel.classifier_combo.value = ("registered", "demo")
        widget.input.level_combo.value = 0
        widget.input.scope_combo.value = "visible"
        viewer.camera.center = (700, 700)
        viewer.camera.zoom = 0.75
        settle(app)
        widget.input.update_region()
    settle(app)
    if not run(widget, app):
        viewer.close()
        return 1
    mask = widget.review.result_combo.value
    if reference is not None:
        widget.review.reference_combo.value = reference
        widget.compare()
        # the outline is the mask's; the scores say the rest (a QuPath annotation stays)
        reference.visible = name == "qupath"
    viewer.layers.selection.active = mask
    if name in ("tile", "qupath"):
        frame(viewer, mask)  # close enough to read the outline on the nuclei
    elif name == "ihc":
        viewer.reset_view()
    else:  # a step back: the white outline of the explained area, glass around it
        viewer.camera.zoom *= 0.7
    settle(app)
    # the widget scrolled to the result: the sentence, the legend and the numbers
    widget.scroll.verticalScrollBar().setValue(max(0, widget.summary.y() - 90))
    settle(app)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    viewer.close()
    return 0


def write_qupath_annotation(evidence: np.ndarray, path: Path) -> None:
    """A pathologist's polygon around the lesion, as QuPath exports it: the convex hull
    of the planted nuclei, a little outside them, class "Tumor", level-0 pixels."""
    import json

    import shapely

    ys, xs = np.nonzero(evidence)
    hull = shapely.MultiPoint(np.stack([xs + 0.5, ys + 0.5], 1)).convex_hull.buffer(3)
    hull = hull.intersection(shapely.box(0, 0, evidence.shape[1], evidence.shape[0]))
    feature = {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(shapely.simplify(hull, 1.5)),
        "properties": {
            "objectType": "annotation",
            "classification": {"name": "Tumor", "color": [200, 0, 0]},
        },
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def mil_scene(out: Path) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medcam.zoo import mil

    viewer = napari.Viewer(title="napari · Med-CAM", show=True)
    viewer.window._qt_window.resize(1500, 940)  # screenshot-only use of the main window
    app = QApplication.instance()
    slide = mil.synthetic_slide("eval", 0)
    viewer.add_image(slide.image(), rgb=True, name="eval slide 0")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM slide decision")
    widget.classifier_combo.value = "mil-abmil"
    settle(app)
    if widget.explain() is None:
        print("could not start:", widget.status.value, file=sys.stderr)
        return 1
    wait(app, lambda: widget.worker is None, 600)
    if widget.result is None:
        print("failed:", widget.status.value, file=sys.stderr)
        return 1
    weights = [ly for ly in viewer.layers if ly.name.startswith("aggregator weights")]
    for layer in weights:
        layer.visible = True
    widget.evidence_layer.opacity = 0.6
    viewer.layers.selection.active = widget.evidence_layer
    viewer.reset_view()
    settle(app)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}: {widget.result.sentence}")
    viewer.close()
    return 0


TARGETS = {
    "tile": DOCS / "screenshot.png",
    "ihc": DOCS / "screenshot-ihc.png",
    "slide": DOCS / "screenshot-slide.png",
    "qupath": DOCS / "screenshot-qupath.png",
    "mil": DOCS / "screenshot-mil.png",
}


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    names = sys.argv[1:] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        sys.exit(f"unknown scene(s) {unknown}; choose from {list(TARGETS)}")
    sys.exit(max(mil_scene(TARGETS[n]) if n == "mil" else scene(n, TARGETS[n]) for n in names))
