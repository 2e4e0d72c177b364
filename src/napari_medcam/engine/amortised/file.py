"""The explainer file: network weights plus what they are only valid for.

A plain dict saved with `torch.save` — tensors and JSON-able metadata only — so it
loads with ``torch.load(weights_only=True)`` (no code runs on load). The metadata
records the classifier's **fingerprint** (sha256 of its state_dict), class names,
input size and channels, the absence model and the `MedCAMConfig` the explainer was
fitted with; `Explainer.check` refuses any other classifier, because masks learnt for
one model's decisions say nothing about another's. Files written before the glossary's
words (docs/glossary.md) record ``baseline``, ``noises``, ``n_backgrounds`` and
``background_class``: they are read in the new words (`napari_medcam.engine.renamed`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.fingerprint import classifier_fingerprint
from napari_medcam.classifiers.prepare import resize
from napari_medcam.classifiers.torchfile import load_torch_file
from napari_medcam.engine.amortised.network import ExplainerNet
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.renamed import old_attribute, upgraded

FORMAT = "napari-medcam-explainer"
VERSION = 1
PACKAGED = {"demo": "demo.pt"}  # names loadable without a path (shipped in weights/)


def fingerprint(classifier: Classifier) -> str:
    """The classifier's weights' SHA-256 (`classifiers.fingerprint`): an explainer file
    records it and refuses any other classifier."""
    return classifier_fingerprint(classifier)


def classifier_facts(classifier: Classifier) -> dict[str, Any]:
    return {
        "name": classifier.name,
        "fingerprint": fingerprint(classifier),
        "class_names": list(classifier.class_names),
        "input_size": list(classifier.input_size),
        "channels": classifier.channels,
    }


class Explainer:
    """A fitted amortised explainer: the network and the facts it depends on."""

    def __init__(self, net: ExplainerNet, metadata: dict[str, Any]) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.metadata = upgraded_metadata(metadata)

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["classifier"]["class_names"])

    @property
    def empty_class(self) -> int | None:
        """The class of "nothing found" it was fitted to show no evidence for, if any."""
        name = self.metadata.get("fit", {}).get("empty_class")
        return None if name is None else self.class_names.index(name)

    background_class = old_attribute("background_class", "empty_class", "Explainer")

    @property
    def config(self) -> MedCAMConfig:
        """The configuration it was fitted with (tolerance, absence, thresholds); a knob
        added after the file was written takes the default recipe's (`MedCAMConfig.fast`)."""
        cfg = {**MedCAMConfig.fast().to_dict(), **self.metadata["config"]}
        for key in ("unet_channels", "perturbations", "layer_weights"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        return MedCAMConfig(**cfg)

    def warnings(self) -> list[str]:
        """What its fit report says a user must know: classes that failed on the tiles
        set aside before fitting (fewer than half valid, from at least 3 tiles)."""
        fit = self.metadata.get("fit") or {}
        by_class = (fit.get("held_out_quality") or {}).get("by_class") or {}
        out = []
        for name, q in by_class.items():
            if q["tiles"] >= 3 and q["valid_share"] < 0.5:
                out.append(
                    f"'{name}' tiles: {100 * q['valid_share']:.0f} % of {q['tiles']} set-aside "
                    f"tiles valid (median area {100 * q['median_area']:.0f} %): expect its "
                    "tiles to fail their check"
                    + (
                        ""
                        if fit.get("empty_class")
                        else f"; if '{name}' means 'nothing found', fit again with it as the "
                        "empty class"
                    )
                )
        return out

    def check(self, classifier: Classifier) -> None:
        """Raise ValueError unless ``classifier`` is the one this explainer was fitted for."""
        want = self.metadata["classifier"]
        got = classifier_facts(classifier)
        for key in ("class_names", "input_size", "channels", "fingerprint"):
            if got[key] != want[key]:
                raise ValueError(
                    f"this explainer was fitted for classifier {want['name']!r} "
                    f"({key} {_short(want[key])}), not for {got['name']!r} "
                    f"({key} {_short(got[key])}): fit one for it with "
                    "`napari-medcam fit` or mc.fit_explainer"
                )

    @torch.no_grad()
    def masks(self, x: torch.Tensor, classes: list[int], classifier: Classifier) -> torch.Tensor:
        """Soft masks (B, 1, *spatial) in [0, 1] of normalised inputs for their classes."""
        self.net.to(x.device)
        soft = torch.sigmoid(self.net.class_logits(x, classes, classifier))
        return resize(soft, tuple(x.shape[2:]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        blob = {
            "format": FORMAT,
            "version": VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "metadata": self.metadata,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        return path


def upgraded_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """An explainer's (or a fit checkpoint's) metadata in the glossary's words: one
    written before them names its config's fields and its empty class the old way."""
    return {k: upgraded(v) if isinstance(v, dict) else v for k, v in upgraded(metadata).items()}


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 and " " not in text else text


def build_net(metadata: dict[str, Any]) -> ExplainerNet:
    net = metadata["network"]
    return ExplainerNet(
        metadata["classifier"]["channels"],
        len(metadata["classifier"]["class_names"]),
        tuple(net["channels"]),
        len(metadata["classifier"]["input_size"]),
        net["mask_scale"],
        net["init_fill"],
        net["prior_strength"],
    )


def load_explainer(path: str | Path, classifier: Classifier | None = None) -> Explainer:
    """Load an explainer file (or a packaged one by name: "demo").

    With ``classifier``, refuse (ValueError) an explainer fitted for another one.
    Loading is safe: `load_torch_file` (``torch.load(weights_only=True)``).
    """
    if str(path) in PACKAGED:
        ref = resources.files("napari_medcam.engine.amortised") / "weights" / PACKAGED[str(path)]
        with resources.as_file(ref) as p:
            return load_explainer(p, classifier)
    path = Path(path)
    if not path.is_file():
        known = ", ".join(sorted(PACKAGED))
        raise FileNotFoundError(f"no explainer file {path} (packaged explainers: {known})")
    blob = load_torch_file(path, "an explainer file")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a napari-medcam explainer file")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: explainer format version {blob.get('version')} unsupported")
    try:
        net = build_net(blob["metadata"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # damaged or edited
        raise ValueError(f"{path} is not a usable explainer file: {err!r}") from err
    exp = Explainer(net, blob["metadata"])
    exp.metadata["file"] = str(path)
    if classifier is not None:
        exp.check(classifier)
    return exp
