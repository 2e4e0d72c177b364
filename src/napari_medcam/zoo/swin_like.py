"""``swin-like`` (held out, blind): a hierarchical channels-last transformer (Swin layout)
on dermoscopy images.

- **Data**: the generator of ``dermo-pigment`` (`napari_medcam.zoo.dermo.sample`): 128×128
  dermoscopy-like skin with hairs; *atypical* holds an irregular pigmented lesion (dark
  irregular network and globules, 2–5.5 % of the tile), *benign* a regular mole or none.
  (Planned on ``mitosis-tiny``'s data; it stayed at chance there for 6 of 12 epochs, so
  the data changed before any explanation ran: docs/zoo.md, round 5.)
- **Reference**: the atypical lesion's pixels, never the benign mole.
- **Architecture**: timm's Swin layout in plain torch (`napari_medcam.zoo._vit`):
  ``patch_embed`` (8-px patches, channels-last (B, 16, 16, C), normed), ``layers.0…2``
  (stages at 16², 8², 4², widths 32 / 48 / 80; each but the first begins with patch
  merging; two blocks of window attention (4×4 windows, not shifted) and an MLP; every
  output channels-last (B, H, W, C)), ``norm``, the mean over the map into ``head``;
  ImageNet normalisation. Its attention is inside windows, so attention rollout (which
  needs attention over the whole token grid) does not apply to it.
- **Training** (``scripts/train_zoo_transformers.py``), from scratch: 3000 images (seeds
  100 000+), 12 epochs, AdamW (lr 1e-3, weight decay 0.05), flips / quarter turns, a small
  colour jitter; 242 s on one loaded CPU thread.
- **Held-out accuracy**: 0.985 on 400 eval images (seeds 50 000+; benign 0.975,
  atypical 0.995).
"""

from __future__ import annotations

from napari_medcam.zoo import dermo
from napari_medcam.zoo._common import ZooEntry
from napari_medcam.zoo._vit import SwinLike

SIZE = dermo.SIZE
ENTRY = ZooEntry(
    name="swin-like",
    modality="dermoscopy-like skin (synthetic), moles and hairs as distractors",
    architecture="Swin layout: channels-last stages, patch merging, window attention",
    evidence="the atypical pigmented lesion (dark irregular network and globules)",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=dermo.CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=0.985,
    max_reference_fraction=dermo.MAX_FRACTION,
)

TRAIN = {"n": 3000, "epochs": 12, "lr": 1e-3, "width": 32, "weight_decay": 0.05}
TRAIN["norm"] = "imagenet"

sample = dermo.sample


def build(width: int = 32, num_classes: int = 2) -> SwinLike:
    """The architecture (``width``: the first stage's; the others 1.5× and 2.5× it)."""
    return SwinLike(8, (width, width * 3 // 2, width * 5 // 2), num_classes=num_classes)
