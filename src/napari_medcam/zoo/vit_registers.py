"""``vit-registers`` (held out, blind): a ViT with register tokens and a mean-pooled head
(DINOv2-like) on dermoscopy images.

- **Data**: the generator of ``dermo-pigment`` (`napari_medcam.zoo.dermo.sample`): 128×128
  dermoscopy-like skin with hairs; *atypical* holds an irregular pigmented lesion (dark
  irregular network and globules, 2–5.5 % of the tile), *benign* a regular mole or none.
- **Reference**: the atypical lesion's pixels, never the benign mole.
- **Architecture**: timm's ``VisionTransformer`` (`napari_medcam.zoo._vit`) with no class
  token and 4 ``reg_token`` registers (no position embedding on them, as DINOv2's):
  ``patch_embed.proj`` (16-px patches → an 8×8 grid), ``pos_embed``, ``blocks.0…3``
  (48 wide, 4 heads), ``norm``, the mean of the patch tokens into ``head``; ImageNet
  normalisation.
- **Training** (``scripts/train_zoo_transformers.py``), from scratch: 3000 images (seeds
  100 000+), 12 epochs, AdamW (lr 1e-3, weight decay 0.05), flips / quarter turns, a small
  colour jitter; 355 s on one loaded CPU thread.
- **Held-out accuracy**: 0.980 on 400 eval images (seeds 50 000+; benign 0.985,
  atypical 0.975).
"""

from __future__ import annotations

from napari_medcam.zoo import dermo
from napari_medcam.zoo._common import ZooEntry
from napari_medcam.zoo._vit import VisionTransformer

SIZE = dermo.SIZE
REGISTERS = 4
ENTRY = ZooEntry(
    name="vit-registers",
    modality="dermoscopy-like skin (synthetic), moles and hairs as distractors",
    architecture="ViT, 4 register tokens, patch tokens mean-pooled (DINOv2-like)",
    evidence="the atypical pigmented lesion (dark irregular network and globules)",
    tuning=False,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=dermo.CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=0.98,
    max_reference_fraction=dermo.MAX_FRACTION,
)

TRAIN = {"n": 3000, "epochs": 12, "lr": 1e-3, "width": 48, "weight_decay": 0.05}
TRAIN["norm"] = "imagenet"

sample = dermo.sample


def build(width: int = 48, num_classes: int = 2) -> VisionTransformer:
    """The architecture (``width``: the embedding dimension)."""
    return VisionTransformer(
        SIZE,
        16,
        width,
        depth=4,
        num_heads=4,
        num_classes=num_classes,
        class_token=False,
        reg_tokens=REGISTERS,
        global_pool="avg",
    )
