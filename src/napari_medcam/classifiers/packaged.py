"""Classifiers whose weights ship inside this package (the demo and evaluation models)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from torch import nn

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.torchfile import load_torch_file


def load_checkpoint(path: str | Path, build: Callable[..., nn.Module], name: str) -> Classifier:
    """A `Classifier` from a checkpoint our training scripts write.

    The checkpoint holds the state dict and everything `Classifier` needs (width,
    input size, mean/std, class names); it is read as data only (`load_torch_file`).
    """
    ckpt = load_torch_file(path, "a napari-medcam classifier checkpoint")
    net = build(width=int(ckpt["width"]), num_classes=len(ckpt["class_names"]))
    net.load_state_dict(ckpt["state_dict"])
    return Classifier(
        net,
        input_size=tuple(ckpt["input_size"]),
        mean=ckpt["mean"],
        std=ckpt["std"],
        class_names=ckpt["class_names"],
        name=name,
    )


def packaged_classifier(
    weights: str, build: Callable[..., nn.Module], name: str, script: str
) -> Classifier:
    """Load ``weights`` from the package's weights folder (made by ``script``), with
    its card (``<stem>.card.json`` beside it, made by ``scripts/make_cards.py``)."""
    from napari_medcam.classifiers.card import ClassifierCard

    folder = resources.files("napari_medcam.classifiers") / "weights"
    with resources.as_file(folder / weights) as path:
        if not path.is_file():
            raise FileNotFoundError(f"{name} weights missing at {path}: run {script}")
        clf = load_checkpoint(path, build, name)
    card = folder / (Path(weights).stem + ".card.json")
    if card.is_file():
        clf.card = ClassifierCard.from_json(card.read_text(encoding="utf-8"))
    return clf
