"""How long the napari event loop stalls while the widget explains a tile.

    xvfb-run -a python benchmarks/gui_responsiveness.py [--steps 40] [--repeat 3]

Docks the Med-CAM widget in a real viewer, explains the synthetic lesion tile with the
fast preset while a 10 ms QTimer ticks on the GUI thread, and reports the largest and
median gap between ticks during the run and while the result layers are added. A gap
is time the viewer could not repaint or take a click. This is a wall-clock measure,
so it lives here, not in the test suite (a loaded machine inflates it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import machine_line


def one_run(viewer, widget, app) -> dict[str, float]:
    from qtpy.QtCore import QTimer

    stamps: list[float] = []
    returned: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    worker = widget.explain()
    worker.returned.connect(lambda _r: returned.append(time.perf_counter()))
    while widget.worker is not None or not returned:
        app.processEvents()
        time.sleep(0.001)
    end = time.perf_counter() + 0.1
    while time.perf_counter() < end:
        app.processEvents()
    timer.stop()
    run = np.diff([t for t in stamps if t <= returned[0]])
    return {
        "seconds": returned[0] - stamps[0],
        "largest": float(run.max()),
        "median": float(np.median(run)),
        "with_result": float(np.diff(stamps).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    import napari_medcam as mc
    from napari_medcam.plugin.worker import warm_up_done

    viewer = napari.Viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medcam", "Med-CAM")
    viewer.add_image(mc.synthetic_tile(seed=0, label=1)[0], name="tile", rgb=True)
    widget.classifier_panel.classifier_combo.value = ("registered", "demo")
    widget.set_settings("fast", steps=args.steps)
    widget.settings.ask_above.value = 0  # no "long run?" question
    app = QApplication.instance()
    while not warm_up_done.is_set():  # torch's one-off imports, paid when the widget opens
        app.processEvents()
        time.sleep(0.01)
    print(machine_line(torch.device("cpu")))
    print(f"torch threads in the worker: {widget.settings.threads}")
    print("| run | seconds | largest gap | median gap | largest incl. adding layers |")
    print("|---|---|---|---|---|")
    for i in range(args.repeat):
        r = one_run(viewer, widget, app)
        print(
            f"| {i + 1} | {r['seconds']:.1f} | {1000 * r['largest']:.0f} ms | "
            f"{1000 * r['median']:.0f} ms | {1000 * r['with_result']:.0f} ms |"
        )
    viewer.close()


if __name__ == "__main__":
    main()
