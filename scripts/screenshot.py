"""Screenshot of napari with the Med-CAM widget docked and a result shown → docs/screenshot.png.

Run headless under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py [out.png]

Opens the synthetic sample tile (with its planted evidence), docks the widget,
explains the tile with the default (fast) preset, compares the mask with the
evidence, and saves the whole window.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari · Med-CAM", show=True)
    window = viewer.window._qt_window  # screenshot-only use of the main window
    window.resize(1500, 940)
    viewer.open_sample("napari-medcam", "synthetic_tile")
    image = viewer.layers["synthetic tile"]
    evidence = viewer.layers["true evidence"]
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    viewer.layers.selection.active = image
    app = QApplication.instance()

    def wait(condition, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError("timed out")
            app.processEvents()
            time.sleep(0.02)

    worker = widget.explain()
    if worker is None:
        print("could not start:", widget.input.region_label.value, file=sys.stderr)
        return 1
    wait(lambda: widget.worker is None, 600)
    result = widget.last_result
    if result is None or result.error:
        print("run failed:", result and result.error, file=sys.stderr)
        return 1
    print(result.explanation.one_line())
    mask = widget.review.result_combo.value
    widget.review.reference_combo.value = evidence
    widget.compare()
    evidence.contour = 2  # the planted evidence as an outline over the cyan mask
    viewer.layers.selection.active = mask
    viewer.reset_view()
    wait(lambda: True, 0)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.03)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png"
    sys.exit(main(target))
