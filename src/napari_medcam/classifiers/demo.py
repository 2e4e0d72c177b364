"""The demo tissue classifier: a small CNN trained on `synthetic_tile` data.

Trained by ``scripts/train_demo_classifier.py``; its weights ship inside the
package so that everything works offline. Classes: 0 = "normal", 1 = "lesion"
(a cluster of enlarged, dark, irregular nuclei).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.packaged import packaged_classifier

WEIGHTS = "demo_tissue.pt"
CLASS_NAMES = ("normal", "lesion")


class DemoTissueNet(nn.Module):
    """Four conv blocks and a global-average-pool head (~60 k parameters)."""

    def __init__(self, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        self.block1 = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.block4 = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.fc(self.pool(x))


def demo_classifier() -> Classifier:
    """The frozen demo classifier (normal vs lesion), ready to use offline."""
    return packaged_classifier(
        WEIGHTS, DemoTissueNet, "demo-tissue", "scripts/train_demo_classifier.py"
    )
