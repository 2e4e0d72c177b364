"""The evaluation figure: image | reference | Med-CAM | Grad-CAM | RISE | occlusion.

Composed with numpy and PIL (no matplotlib). Med-CAM shows its own binary mask (green,
outlined); the other methods show their map as a heat overlay, outlined at the
equal-area mask that was scored; the reference is outlined in cyan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from napari_medcam.evaluation.methods import LABELS

COLUMNS = ("image", "reference", "medcam-fast", "gradcam", "rise", "occlusion")
CELL = 160
PAD = 4
HEADER = 22
CAPTION = 16

# anchor colours of an inferno-like colour map, dark → bright
_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)


def colour_map(values: np.ndarray) -> np.ndarray:
    """[0, 1] → uint8 RGB along an inferno-like ramp."""
    v = np.clip(np.asarray(values, np.float64), 0, 1) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    f = (v - i)[..., None]
    return (_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f).astype(np.uint8)


def _font(size: int):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _fit(arr: np.ndarray, nearest: bool) -> np.ndarray:
    img = Image.fromarray(arr)
    return np.asarray(img.resize((CELL, CELL), Image.NEAREST if nearest else Image.BILINEAR))


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = mask > 0
    return m & ~ndimage.binary_erosion(m, iterations=2, border_value=0)


def _mask_cell(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    m = _fit((np.asarray(mask) > 0).astype(np.uint8) * 255, nearest=True) > 127
    out = image.astype(np.float64) * 0.55
    out[m] = out[m] * 0.4 + np.array(colour) * 0.6 + image[m] * 0.25
    out[_outline(m)] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _heat_cell(image: np.ndarray, heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    h = _fit((np.clip(heat, 0, 1) * 255).astype(np.uint8), nearest=False) / 255
    out = image.astype(np.float64) * 0.45 + colour_map(h).astype(np.float64) * 0.55
    m = _fit((np.asarray(mask) > 0).astype(np.uint8) * 255, nearest=True) > 127
    out[_outline(m)] = (255, 255, 255)
    return np.clip(out, 0, 255).astype(np.uint8)


def compose(examples: list[dict[str, Any]]) -> Image.Image:
    """One row per example (``case``, ``maps``, ``masks``), one column per `COLUMNS`."""
    n = len(examples)
    width = len(COLUMNS) * (CELL + PAD) + PAD
    height = HEADER + n * (CAPTION + CELL + PAD) + PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(13), _font(11)
    titles = {"image": "image", "reference": "reference", **LABELS}
    for j, col in enumerate(COLUMNS):
        draw.text((PAD + j * (CELL + PAD) + 4, 4), titles[col], fill=(0, 0, 0), font=font)
    for i, ex in enumerate(examples):
        case = ex["case"]
        y = HEADER + i * (CAPTION + CELL + PAD)
        fast = ex["masks"].get("medcam-fast")
        area = f", Med-CAM area {100 * float(np.mean(fast)):.1f} %" if fast is not None else ""
        ref = 100 * float(np.mean(case.reference))
        caption = f"{case.name} — reference {ref:.1f} % of the image{area}"
        draw.text((PAD + 2, y + 1), caption, fill=(40, 40, 40), font=small)
        image = _fit(np.asarray(case.image)[..., :3], nearest=False)
        cells = {
            "image": image,
            "reference": _mask_cell(image, case.reference, (0, 220, 255)),
        }
        for m in COLUMNS[2:]:
            if m not in ex["maps"]:
                cells[m] = np.full_like(image, 235)
            elif m.startswith("medcam"):
                cells[m] = _mask_cell(image, ex["masks"][m], (60, 230, 60))
            else:
                cells[m] = _heat_cell(image, ex["maps"][m], ex["masks"][m])
        for j, col in enumerate(COLUMNS):
            canvas.paste(Image.fromarray(cells[col]), (PAD + j * (CELL + PAD), y + CAPTION))
    return canvas


def save_figure(examples: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the committed PNG small; the maps survive it well
    compose(examples).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
