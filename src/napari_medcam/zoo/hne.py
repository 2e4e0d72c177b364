"""``hne-modulelist`` (TUNING): synthetic H&E tiles, conv blocks in an ``nn.ModuleList``.

- **Data**: the repository's `synthetic_tile(seed, label, size=128)` generator,
  parameterised at 128×128 (nuclei scale with the tile): a positive ("lesion") tile
  holds one cluster of enlarged, dark, irregular nuclei covering 5–15 % of the tile;
  a negative ("normal") tile holds a same-sized inflammatory aggregate of small
  regular nuclei instead.
- **Reference**: the generator's planted evidence (the cluster region and its nuclei).
- **Architecture**: four Conv-BN-ReLU-MaxPool blocks held in ``self.blocks``
  (an ``nn.ModuleList`` iterated in ``forward``), global average pooling in
  ``forward`` and a linear ``head``. No top-level child outputs a feature map: the
  layers to match must be found inside the ModuleList.
- **Training**: 3000 tiles (seeds 100 000+), flips / quarter turns and a small
  colour jitter, no masking augmentation; normalisation by the training set's
  per-channel mean/std.
- **Held-out accuracy**: 1.000 on 400 eval tiles (seeds 50 000+, both classes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_medcam.data.synthetic import synthetic_tile
from napari_medcam.zoo._common import ZooEntry

SIZE = 128
CLASS_NAMES = ("normal", "lesion")

ENTRY = ZooEntry(
    name="hne-modulelist",
    modality="brightfield H&E (synthetic_tile at 128×128)",
    architecture="ModuleList of conv blocks iterated in forward + linear head",
    evidence="the planted cluster of enlarged dark irregular nuclei",
    tuning=True,
    target=1,
    description=__doc__.split("\n")[0],
    class_names=CLASS_NAMES,
    input_size=(SIZE, SIZE),
    heldout_accuracy=1.0,
    max_reference_fraction=0.25,
)

TRAIN = {"n": 3000, "epochs": 8, "lr": 3e-3, "width": 16, "rot90": True, "jitter": 0.04}


def sample(seed: int, label: int, split: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """One tile (uint8 128×128×3) and its evidence; the seed alone picks the tile."""
    return synthetic_tile(seed, label, SIZE)


class ModuleListNet(nn.Module):
    """Conv blocks in an ``nn.ModuleList`` (128 → 8 px) and a linear head (~75 k parameters)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        chans = [(3, w, 2), (w, 2 * w, 1), (2 * w, 4 * w, 1), (4 * w, 4 * w, 1)]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2) if i < 3 else nn.Identity(),
            )
            for i, (cin, cout, stride) in enumerate(chans)
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


build = ModuleListNet
