"""How long the napari event loop stalls while live mode follows a panning user.

    xvfb-run -a python benchmarks/live_responsiveness.py [--size 8192] [--pans 24]

Writes a synthetic pyramidal slide (scripts/make_slide.py), opens it with the
plugin's reader, docks the widget with the demo classifier and the demo explainer
(or, until that ships, one fitted here for ``--fit-steps`` steps: its masks' quality
does not matter for this measure), turns live mode on at level 0 with about
``--view`` pixels in view, and pans: ``--burst`` camera moves 40 ms apart (a drag),
then a rest of ``--rest`` s, ``--pans`` moves in all. A 10 ms QTimer ticks on the GUI
thread throughout; a gap between ticks is time the viewer could not repaint or take
a click. Reports the largest, 99th-percentile and median gaps, the runs started, the
stale runs cancelled, the fields shown, the time from the end of a drag to the layer
showing the field it rested on, and the longest layer update on the GUI thread.
Wall-clock, so here and not in the tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_line

ROOT = Path(__file__).resolve().parents[1]


def explainer_for(clf, slide: Path, steps: int, folder: Path):
    """The demo explainer, or a quick stand-in fitted on the slide's tiles."""
    from napari_medcam.engine.amortised import fit_explainer, load_explainer
    from napari_medcam.io import read_tiles

    try:
        return load_explainer("demo", clf), "demo"
    except (FileNotFoundError, ValueError) as err:
        print(f"demo explainer not available ({err}); fitting {steps} steps")
    tiles = read_tiles([slide], clf, per_slide=24)
    exp = fit_explainer(clf, tiles, steps=steps, device="cpu", held_out=0.0)
    return exp.save(folder / "standin.pt"), f"stand-in ({steps} steps)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--view", type=int, default=700, help="level-0 pixels across the view")
    ap.add_argument("--pans", type=int, default=24)
    ap.add_argument("--burst", type=int, default=4)
    ap.add_argument("--rest", type=float, default=4.0)
    ap.add_argument("--fit-steps", type=int, default=20)
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_medcam.plugin.worker import warm_up_done

    folder = Path(tempfile.mkdtemp(prefix="medcam-live-"))
    slide = folder / "slide.tif"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/make_slide.py"), str(slide), "--size", str(args.size)],
        check=True,
    )
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    viewer.open(str(slide), plugin="napari-medcam")
    app = QApplication.instance()
    panel = widget.explainer_panel
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    clf = widget.classifier
    assert clf is not None, widget.classifier_panel.classifier_label_w.value
    exp, what = explainer_for(clf, slide, args.fit_steps, folder)
    if what == "demo":
        panel.choice_combo.value = "demo"
    else:
        panel.use_file(exp)
    assert panel.explainer is not None, panel.facts.value
    widget.input.level_combo.value = 0
    while not warm_up_done.is_set():
        app.processEvents()
        time.sleep(0.01)
    camera = viewer.scene.camera
    canvas = viewer.window._qt_viewer.canvas.size
    camera.zoom = min(canvas) / args.view
    live = panel.live
    shown: list[float] = []
    live.updated.connect(lambda _layer: shown.append(time.perf_counter()))
    updates: list[float] = []  # GUI-thread time of each layer update (ms)
    place = live._on_returned

    def timed_place(*a) -> None:
        t = time.perf_counter()
        place(*a)
        updates.append(1000 * (time.perf_counter() - t))

    live._on_returned = timed_place  # the workers' returned signals are bound to it

    def pump(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)

    def session(on: bool) -> dict[str, object]:
        """The same pans with live mode on or off: gaps, runs, fields, latencies."""
        camera.center = (args.size / 2, args.size / 4)
        pump(1.0)  # napari reads the first view's tiles
        stamps: list[float] = []
        ticker = QTimer()
        ticker.setInterval(10)
        ticker.timeout.connect(lambda: stamps.append(time.perf_counter()))
        runs, stale, fields, placed = live.runs, live.stale, len(shown), len(updates)
        ticker.start()
        panel.live_check.value = on
        pump(args.rest)
        latencies = []
        rng = np.random.default_rng(0)
        y, x = camera.center[-2:]
        for i in range(args.pans):
            y = float(np.clip(y + rng.uniform(-0.4, 0.4) * args.view, 0, args.size))
            x = float(np.clip(x + 0.3 * args.view, 0, args.size))
            camera.center = (y, x)
            pump(0.04)
            if (i + 1) % args.burst == 0:
                rest, n = time.perf_counter(), len(shown)
                pump(args.rest)
                if len(shown) > n:
                    latencies.append(shown[n] - rest)
        ticker.stop()
        panel.live_check.value = False
        gaps = 1000 * np.diff(stamps)
        return {
            "live": "on" if on else "off",
            "runs": live.runs - runs,
            "stale": live.stale - stale,
            "fields": len(shown) - fields,
            "largest": f"{gaps.max():.0f} ms",
            "p99": f"{np.percentile(gaps, 99):.0f} ms",
            "median": f"{np.median(gaps):.0f} ms",
            "latency": f"{np.median(latencies):.1f} s" if latencies else "–",
            "update": f"{max(updates[placed:]):.0f} ms" if updates[placed:] else "–",
        }

    rows = [session(False), session(True)]
    print(machine_line(torch.device("cpu")))
    print(f"slide {args.size}² px, level 0, ~{args.view} px in view; explainer: {what}")
    print(f"torch threads in the worker: {widget.settings.threads}; {args.pans} moves")
    print(
        "| live | runs started | stale cancelled | fields shown | largest gap | p99 gap | "
        "median gap | rest → layer (median) | layer update on the GUI thread (max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    print(f"last status: {panel.live_label.value}")
    viewer.close()


if __name__ == "__main__":
    main()
