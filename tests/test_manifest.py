"""The plugin manifest: valid, and the installed one is the repository's root file."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_manifest_is_the_root_file_and_valid():
    installed = PluginManifest.from_distribution("napari-medcam")
    root = PluginManifest.from_file(ROOT / "napari.yaml")
    assert installed.name == root.name == "napari-medcam"
    assert installed.contributions == root.contributions
    import napari_medcam

    shipped = Path(napari_medcam.__file__).parent / "napari.yaml"
    assert shipped.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    proc = subprocess.run([npe2, "validate", "napari-medcam"], capture_output=True, text=True)
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.timeout(300)
def test_wheel_ships_the_root_manifest(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("napari_medcam-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("napari_medcam/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        assert "napari_medcam/classifiers/weights/demo_tissue.pt" in names
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        text = zf.read(entry).decode()
    assert "napari_medcam:napari.yaml" in text and "napari_medcam.classifiers" in text
    extracted = tmp_path / "napari.yaml"
    extracted.write_bytes((ROOT / "napari.yaml").read_bytes())
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    proc = subprocess.run([npe2, "validate", str(extracted)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
