"""The demo volume classifier: a small 3-D CNN trained on `synthetic_volume` data.

Trained by ``scripts/train_demo3d_classifier.py``; its weights ship inside the
package so that everything works offline. Input: one-channel 32³ volumes in
[0, 1] (larger volumes are tiled by the engine, smaller ones resized). Classes:
0 = "normal", 1 = "lesion" (a solid, bright, irregular mass).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.packaged import packaged_classifier

WEIGHTS = "demo_volume.pt"
CLASS_NAMES = ("normal", "lesion")
INPUT_SIZE = (32, 32, 32)


class DemoVolumeNet(nn.Module):
    """Four 3-D conv blocks and a global-average-pool head (45 k parameters at width 8).

    The first convolution has stride 2 (a 32³ input is seen at 16³ from there on),
    which keeps training and explaining cheap on a CPU; a lesion (radius ≥ 5
    voxels) is still several voxels across at that resolution.
    """

    def __init__(self, width: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        w = width
        # kernel 4 with stride 2 and padding 1 is symmetric (output j is centred on input
        # 2j + 0.5); kernel 3 would see one padded border and not the other, and its
        # evidence maps (Grad-CAM, masks) came out shifted by a few voxels
        self.block1 = nn.Sequential(nn.Conv3d(1, w, 4, stride=2, padding=1), nn.ReLU())
        # pooling before the ReLU gives the same result for 8× less elementwise work
        self.block2 = nn.Sequential(nn.Conv3d(w, 2 * w, 3, padding=1), nn.MaxPool3d(2), nn.ReLU())
        self.block3 = nn.Sequential(nn.Conv3d(2 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.block4 = nn.Sequential(nn.Conv3d(4 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.fc(self.pool(x))


def demo_volume_classifier() -> Classifier:
    """The frozen demo 3-D classifier (normal vs lesion on 32³ volumes), ready offline."""
    return packaged_classifier(
        WEIGHTS, DemoVolumeNet, "demo-volume", "scripts/train_demo3d_classifier.py"
    )
