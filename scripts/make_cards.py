"""Write the packaged classifiers' cards: what each was trained on, and the training
crops' colour statistics (`napari_medcam.classifiers.card`).

    python scripts/make_cards.py

The crops come from the same generators and image halves the training scripts use
(`scripts/train_demo_classifier.py`, `scripts/train_ihc_classifier.py`), so the
statistics describe the training data, not the data the classifiers are tested on.
Each card is written beside its weights as ``<weights stem>.card.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medcam.classifiers.card import ClassifierCard, card_from_crops
from napari_medcam.classifiers.ihc import PATCH, TRAIN_COLS, ihc_image
from napari_medcam.data.synthetic import synthetic_tile

WEIGHTS = Path(__file__).resolve().parents[1] / "src/napari_medcam/classifiers/weights"


def demo_card(n: int = 200) -> ClassifierCard:
    """The demo's training tiles: `synthetic_tile` seeds 100,000 on, both labels."""
    crops = [synthetic_tile(100_000 + i, i % 2)[0] for i in range(n)]
    return card_from_crops(
        crops,
        description="Synthetic H&E-like tissue tiles (napari_medcam.synthetic_tile): pink "
        "stroma, purple nuclei; 'lesion' is a cluster of enlarged, dark, irregular nuclei",
        stain="H&E (synthetic)",
        magnification="one scale: the synthetic tiles' (no physical pixel size)",
        training=f"{n} training tiles (seeds 100000+)",
    )


def ihc_card(n: int = 400) -> ClassifierCard:
    """The IHC classifier's training crops: 64² crops of the image's left half."""
    img = ihc_image()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, img.shape[0] - PATCH + 1, n)
    cols = rng.integers(TRAIN_COLS[0], TRAIN_COLS[1] - PATCH + 1, n)
    crops = [img[r : r + PATCH, c : c + PATCH] for r, c in zip(rows, cols)]
    return card_from_crops(
        crops,
        description="Crops of scikit-image's immunohistochemistry image (human colon), "
        "left half; 'dab-positive' when ≥ 15 % of a crop is DAB-stained",
        stain="IHC: DAB (brown) with haematoxylin counterstain (blue)",
        magnification="the image's own scale (pixel size not recorded)",
        training=f"{n} crops of the left half (columns 0-255)",
    )


def volume_card() -> ClassifierCard:
    """The 3-D demo: words only (colour statistics are for 2-D RGB crops)."""
    return ClassifierCard(
        description="Synthetic grey volumes (napari_medcam.data.synthetic_volume) with a "
        "planted solid mass ('lesion')",
        stain="none (grey values)",
    )


def main() -> None:
    for stem, card in (
        ("demo_tissue", demo_card()),
        ("ihc_dab", ihc_card()),
        ("demo_volume", volume_card()),
    ):
        out = WEIGHTS / f"{stem}.card.json"
        out.write_text(card.to_json() + "\n", encoding="utf-8")
        print(f"{out.name}: threshold {card.threshold}")


if __name__ == "__main__":
    main()
