"""``vit-cls`` (held out, blind): a ViT with a class token (timm layout) on 3-class H&E tiles.

- **Data**: the generator of ``resnet-meanpos`` (`napari_medcam.zoo.resnet.sample`): 128×128
  H&E-like tiles, *normal* / *tumour* (a cluster of enlarged, dark, irregular nuclei, 6–15 %
  of the tile) / *inflammation* (a cluster of small dark lymphocytes of the same size);
  without that entry's flat mean-colour tiles.
- **Reference** (tumour): the planted cluster's region and its nuclei.
- **Architecture**: timm's ``VisionTransformer`` in plain torch (`napari_medcam.zoo._vit`):
  ``patch_embed.proj`` (16-px patches → an 8×8 grid), ``cls_token``, ``pos_embed``,
  ``blocks.0…3`` (``norm1``, ``attn``, ``norm2``, ``mlp``; 64 wide, 4 heads), ``norm``,
  the class token into ``head``; ImageNet normalisation.
- **Training** (``scripts/train_zoo_transformers.py``), from scratch: 3000 tiles (seeds
  100 000+, classes taking turns), 12 epochs, AdamW (lr 1e-3, weight decay 0.05), flips /
  quarter turns, a small colour jitter; 354 s on one loaded CPU thread.
- **Held-out accuracy**: 1.000 on 600 eval tiles (seeds 50 000+, 200 per class; each 1.000).
"""

from __future__ import annotations

from napari_medcam.zoo import resnet
from napari_medcam.zoo._common import ZooEntry
from napari_medcam.zoo._vit import VisionTransformer

SIZE = resnet.SIZE
ENTRY = ZooEntry(
    name="vit-cls",
    modality="brightfield H&E-like (synthetic), three classes",
    architecture="ViT, class token pooled (timm layout: patch_embed/cls_token/blocks/norm/head)",
    evidence="the planted cluster of large atypical nuclei (tumour)",
    tuning=False,
    target=resnet.TUMOUR,
    description=__doc__.split("\n")[0],
    class_names=resnet.CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=0.25,
)

TRAIN = {"n": 3000, "epochs": 12, "lr": 1e-3, "width": 64, "weight_decay": 0.05}
TRAIN["norm"] = "imagenet"

sample = resnet.sample


def build(width: int = 64, num_classes: int = 3) -> VisionTransformer:
    """The architecture (``width``: the embedding dimension)."""
    return VisionTransformer(SIZE, 16, width, depth=4, num_heads=4, num_classes=num_classes)
