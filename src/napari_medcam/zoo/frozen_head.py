"""``frozen-backbone-head`` (held out, blind): a frozen ViT backbone trained on another task,
and a linear head trained on the target — the foundation-model pattern.

- **Backbone**: timm's ``VisionTransformer`` (`napari_medcam.zoo._vit`) with
  ``num_classes=0`` (it returns its pooled class token, as a foundation model loaded with
  ``timm.create_model(..., num_classes=0)`` does): 16-px patches (an 8×8 grid), class
  token, ``blocks.0…3`` (64 wide, 4 heads), ``norm``. **Pretrained on another task**:
  `PRETRAIN` — another generator with another label set: `synthetic_tile` at 128²
  (the data of the tuning entry ``hne-modulelist``; its task, a cluster of atypical nuclei
  versus an inflammatory aggregate, with no "normal" class), then frozen. (The first
  choice, ``mitosis-tiny``'s task, was dropped before training it: a transformer of the
  same kind, ``swin-like``, stayed at chance on it; docs/zoo.md.)
- **Target data**: the generator of ``resnet-meanpos`` (three-class H&E; target tumour: a
  cluster of enlarged, dark, irregular nuclei, 6–15 % of the tile); without that entry's
  flat mean-colour tiles.
- **Reference** (tumour): the planted cluster's region and its nuclei.
- **Classifier**: ``nn.Sequential(backbone, head)`` as users build it, ``head`` one
  ``nn.Linear`` (the only part trained on the target); ImageNet normalisation.
- **Training** (``scripts/train_zoo_transformers.py``): the backbone with a temporary
  linear head on `PRETRAIN` (2000 tiles, seeds 100 000+, 12 epochs, AdamW lr 1e-3, weight
  decay 0.05; eval accuracy on that task 1.000), then frozen; the linear head alone on 3000
  target tiles (seeds 100 000+), 30 epochs, AdamW lr 1e-2; flips / quarter turns, a small
  colour jitter throughout.
- **Held-out accuracy**: 0.967 on 600 eval tiles (seeds 50 000+; normal 1.000, tumour
  0.955, inflammation 0.945).
"""

from __future__ import annotations

from torch import nn

from napari_medcam.zoo import hne, resnet
from napari_medcam.zoo._common import ZooEntry
from napari_medcam.zoo._vit import VisionTransformer

SIZE = resnet.SIZE
ENTRY = ZooEntry(
    name="frozen-backbone-head",
    modality="brightfield H&E-like (synthetic), three classes",
    architecture="nn.Sequential(frozen ViT backbone pretrained on another task, linear head)",
    evidence="the planted cluster of large atypical nuclei (tumour)",
    tuning=False,
    target=resnet.TUMOUR,
    description=__doc__.split("\n")[0],
    class_names=resnet.CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=0.967,
    max_reference_fraction=0.25,
)

#: the backbone's own task, before it is frozen: another generator, another label
PRETRAIN = {
    "generator": hne,
    "classes": hne.CLASS_NAMES,
    "n": 2000,
    "epochs": 12,
    "lr": 1e-3,
    "weight_decay": 0.05,
}
#: the linear head on the frozen backbone
TRAIN = {"n": 3000, "epochs": 30, "lr": 1e-2, "width": 64, "weight_decay": 0.0}
TRAIN["norm"] = "imagenet"

sample = resnet.sample


def backbone(width: int = 64) -> VisionTransformer:
    """The backbone alone: pooled class token out (``num_classes=0``)."""
    return VisionTransformer(SIZE, 16, width, depth=4, num_heads=4, num_classes=0)


def build(width: int = 64, num_classes: int = 3) -> nn.Sequential:
    """``nn.Sequential(backbone, head)``: layers ``0.…`` (backbone) and ``1`` (head)."""
    return nn.Sequential(backbone(width), nn.Linear(width, num_classes))
