"""The `napari-medcam demo` job: one synthetic tile, explained, written as files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_medcam.classifiers import demo_classifier
from napari_medcam.comparison import gradcam
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


GREEN = (0, 230, 0)
BLUE = (40, 120, 255)


def overlay_panel(
    image: np.ndarray,
    mask: np.ndarray,
    heat: np.ndarray,
    truth: np.ndarray | None = None,
    titles: tuple[str, str, str] = ("tile", "Med-CAM evidence", "Grad-CAM"),
    legend: str = "",
) -> np.ndarray:
    """image | image with Med-CAM outline (green; truth in blue) | Grad-CAM blend, each
    panel under its title, a legend line below (what the colours are)."""
    from scipy import ndimage

    med = image.copy()
    if truth is not None:
        med[outline(truth)] = BLUE
    med[ndimage.binary_dilation(outline(mask))] = GREEN
    cam = (0.5 * image + 0.5 * heat_rgb(heat)).astype(np.uint8)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([image, gap, med, gap, cam], 1)
    return _annotate(row, image.shape[1] + 4, titles, legend)


def _annotate(row: np.ndarray, step: int, titles: tuple[str, ...], legend: str) -> np.ndarray:
    """``row`` with a title band above each panel and a legend band below."""
    from PIL import Image, ImageDraw, ImageFont

    band = 18
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + 2 * band), (255, 255, 255))
    canvas.paste(Image.fromarray(row), (0, band))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, title in enumerate(titles):
        draw.text((i * step + 3, 3), title, fill=(0, 0, 0), font=font)
    y = row.shape[0] + band + 3
    x = 3
    for colour, words in ((GREEN, "Med-CAM evidence"), (BLUE, "planted lesion (truth)")):
        draw.rectangle((x, y + 2, x + 10, y + 10), outline=colour, width=2)
        draw.text((x + 14, y), words, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(words, font=font))
    if legend:
        draw.text((x, y), legend, fill=(80, 80, 80), font=font)
    return np.asarray(canvas)


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
    panel = overlay_panel(
        image,
        exp.mask,
        heat,
        truth,
        ("tile", f"Med-CAM: {exp.describe_mask()}", "Grad-CAM (bright: high)"),
        f"p('{exp.class_name}') {exp.original_confidence:.2f} on the tile, "
        f"{exp.masked_confidence:.2f} on the evidence",
    )
    write_atomic(
        paths["overlay"], lambda p: Image.fromarray(panel).save(p, format="PNG"), overwrite
    )
    write_atomic(paths["report"], lambda p: p.write_text(json.dumps(report, indent=2)), overwrite)
    return paths, exp
