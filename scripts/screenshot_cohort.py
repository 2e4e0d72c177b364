"""Screenshot of a cohort's summary.html, rendered by Qt WebEngine (Chromium).

    xvfb-run -a python scripts/screenshot_cohort.py [--cohort DIR] [--out docs/cohort-summary.png]

Without ``--cohort`` it first explains a small cohort into a temporary folder: four
synthetic slides (scripts/make_slide.py, 1,536 px, level 1), the fast preset capped at
20 steps, and one corrupt file (listed first), on a local Dask cluster of 2 workers. Needs
PyQt6-WebEngine (not a dependency of napari-medcam: ``pip install PyQt6-WebEngine``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_cohort(folder: Path) -> Path:
    import napari_medcam as mc
    from napari_medcam.batch import run_cohort

    slides = []
    for i in range(4):
        path = folder / f"case-{i + 1:02d}.tif"
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/make_slide.py"), str(path), "--size", "1536"]
            + ["--seed", str(10 + i)],
            check=True,
            capture_output=True,
        )
        slides.append(path)
    corrupt = folder / "case-00.svs"
    corrupt.write_bytes(slides[0].read_bytes()[:4096])  # a copy cut short
    slides.insert(0, corrupt)  # first: its row is on screen
    out = folder / "cohort"
    run_cohort(
        slides,
        out,
        config=mc.MedCAMConfig.fast().capped(20),
        level=1,
        workers=2,
        progress=False,
        dashboard_address=":0",
    )
    return out


def grab(html: Path, out: Path, size: tuple[int, int] = (1500, 1100)) -> None:
    os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox")
    from PyQt6.QtCore import QTimer, QUrl
    from PyQt6.QtWebEngineWidgets import QWebEngineView
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    view = QWebEngineView()
    view.resize(*size)

    def loaded(ok: bool) -> None:
        if not ok:
            raise SystemExit(f"cannot load {html}")
        # let the thumbnails decode and paint before grabbing
        QTimer.singleShot(1500, lambda: (view.grab().save(str(out)), app.quit()))

    view.loadFinished.connect(loaded)
    view.load(QUrl.fromLocalFile(str(html.resolve())))
    view.show()
    app.exec()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", type=Path, help="an existing cohort output folder")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "cohort-summary.png")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort or make_cohort(Path(tmp))
        grab(cohort / "summary.html", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
