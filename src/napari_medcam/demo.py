"""The `napari-medcam demo` job: one synthetic tile, explained, written as files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_medcam.baselines import gradcam
from napari_medcam.classifiers import demo_classifier
from napari_medcam.data import synthetic_tile
from napari_medcam.engine import Explanation, MedCAMConfig, explain
from napari_medcam.io import write_atomic, write_mask_tiff


def outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a binary mask."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def heat_rgb(h: np.ndarray) -> np.ndarray:
    """A small 'inferno'-like ramp, so the overlay needs no plotting library."""
    h = np.clip(h, 0, 1)[..., None]
    stops = np.array([[0, 0, 4], [120, 28, 109], [237, 105, 37], [252, 255, 164]], float)
    pos = h * (len(stops) - 1)
    i = np.clip(np.floor(pos).astype(int), 0, len(stops) - 2)
    f = pos - i
    return (stops[i[..., 0]] * (1 - f) + stops[i[..., 0] + 1] * f).astype(np.uint8)


def overlay_panel(
    image: np.ndarray, mask: np.ndarray, heat: np.ndarray, truth: np.ndarray | None = None
) -> np.ndarray:
    """image | image with Med-CAM outline (green; truth in blue) | Grad-CAM blend."""
    from scipy import ndimage

    med = image.copy()
    if truth is not None:
        med[outline(truth)] = (40, 120, 255)
    med[ndimage.binary_dilation(outline(mask))] = (0, 230, 0)
    cam = (0.5 * image + 0.5 * heat_rgb(heat)).astype(np.uint8)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, med, gap, cam], 1)


def run_demo(
    out: Path,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable | None = None,
) -> tuple[dict[str, Path], Explanation]:
    """Synthesise a lesion tile, explain it, write image/mask/overlay/report into ``out``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "image": out / "tile.png",
        "mask": out / "mask.tif",
        "overlay": out / "overlay.png",
        "report": out / "report.json",
    }
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist: pass --overwrite to replace them")
    image, truth = synthetic_tile(seed, 1)
    clf = demo_classifier()
    exp = explain(image, clf, None, MedCAMConfig.fast(), device=device, progress=progress)
    heat = gradcam(image, clf, exp.target)
    hit = float((exp.mask & truth).sum() / max(exp.mask.sum(), 1))
    report = {
        **exp.summary(),
        "seed": seed,
        "true_evidence_fraction": float(truth.mean()),
        "mask_precision_vs_truth": hit,
    }
    write_atomic(paths["image"], lambda p: Image.fromarray(image).save(p, format="PNG"), overwrite)
    write_mask_tiff(paths["mask"], exp.mask, report, overwrite=overwrite)
    panel = overlay_panel(image, exp.mask, heat, truth)
    write_atomic(
        paths["overlay"], lambda p: Image.fromarray(panel).save(p, format="PNG"), overwrite
    )
    write_atomic(paths["report"], lambda p: p.write_text(json.dumps(report, indent=2)), overwrite)
    return paths, exp
