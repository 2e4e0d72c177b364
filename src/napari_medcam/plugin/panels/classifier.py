"""The classifier panel: a registered classifier, a TorchScript file or a Python factory,
and the class to explain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox

from napari_medcam.classifiers.card import card_of
from napari_medcam.plugin.panels.common import Notifier, add_rows, wrap

FILE_CHOICE = ("file", "")
FACTORY_CHOICE = ("factory", "")
#: nothing chosen: a user's own image gets no classifier by default
NO_CHOICE = ("none", "")


class ClassifierPanel(QGroupBox):
    """Choose and load the classifier (cached per choice); ``changed`` says it changed.

    Nothing is chosen at first: which classifier fits an image is the user's call
    (a sample image suggests its own, see `suggest`). The classifier's card (what it
    was trained on) shows under the choice, and `show_domain` says whether the image
    looks like that.
    """

    changed = Signal()

    def __init__(self, notify: Notifier) -> None:
        super().__init__("Classifier")
        from napari_medcam.classifiers import registered_classifiers

        self.notify = notify
        self._cache: dict[tuple[str, str, str, str], Any] = {}
        self.classifier: Any = None
        self.classifier_label = ""
        names = sorted(registered_classifiers())
        if "demo" in names:
            names.remove("demo")
            names.insert(0, "demo")
        choices = [("— choose a classifier —", NO_CHOICE)]
        choices += [(n, ("registered", n)) for n in names]
        choices += [("TorchScript file…", FILE_CHOICE), ("Python factory…", FACTORY_CHOICE)]
        self.classifier_combo = ComboBox(label="Classifier", choices=choices)
        self.model_file = FileEdit(
            label="Model file", mode="r", nullable=True, filter="Models (*.pt *.pth *.ts *.zip)"
        )
        self.factory_spec = LineEdit(
            label="Factory", value="", tooltip="package.module:function returning a torch module"
        )
        self.weights_file = FileEdit(
            label="Weights", mode="r", nullable=True, filter="State dicts (*.pt *.pth)"
        )
        self.class_names_edit = LineEdit(
            label="Class names", value="", tooltip="Comma-separated, when the model has none"
        )
        self.load_button = PushButton(text="Load model")
        self.file_box = Container(
            widgets=[
                self.model_file,
                self.factory_spec,
                self.weights_file,
                self.class_names_edit,
                self.load_button,
            ]
        )
        self.file_box.margins = (0, 0, 0, 0)
        self.classifier_label_w = Label(value="")
        wrap(self.classifier_label_w)
        self.domain_label = Label(value="")
        wrap(self.domain_label)
        self.domain_label.visible = False
        self.card: Any = None  # the loaded classifier's ClassifierCard, if it has one
        self.domain_check: Any = None  # the card's verdict on the chosen image
        self.target_combo = ComboBox(label="Explain class", choices=[("predicted class", None)])
        form = Container(widgets=[self.classifier_combo, self.target_combo])
        form.margins = (0, 0, 0, 0)
        add_rows(self, form, self.file_box, self.classifier_label_w, self.domain_label)
        self._update_inputs()
        self.classifier_combo.changed.connect(self._on_choice)
        self.load_button.clicked.connect(lambda: self.load(notify=True))

    @property
    def is_demo(self) -> bool:
        """The registered demo classifier is chosen (it has a shipped explainer)."""
        return self.classifier_combo.value == ("registered", "demo")

    @property
    def target(self) -> int | None:
        return self.target_combo.value

    def set_enabled(self, enabled: bool) -> None:
        """Lock the choice while a run uses the classifier."""
        for w in (self.classifier_combo, self.load_button, self.target_combo):
            w.enabled = enabled

    def _update_inputs(self) -> None:
        kind = self.classifier_combo.value[0]
        self.file_box.visible = kind in ("file", "factory")
        self.model_file.visible = kind == "file"
        self.factory_spec.visible = kind == "factory"
        self.weights_file.visible = kind == "factory"

    def _on_choice(self, _v: Any = None) -> None:
        self._update_inputs()
        kind = self.classifier_combo.value[0]
        if kind == "registered":
            self.load(notify=True)
        elif kind == "none":
            self._set(None, "choose the classifier that was trained on images like yours")
        else:
            self._set(None, "choose the model, then press Load model")

    def _spec(self) -> tuple[str, str, str, str]:
        kind, name = self.classifier_combo.value
        names = self.class_names_edit.value.strip()
        if kind in ("registered", "none"):
            return (kind, name, "", "")
        if kind == "file":
            path = self.model_file.value
            return ("file", str(path) if path else "", "", names)
        weights = self.weights_file.value
        return ("factory", self.factory_spec.value.strip(), str(weights) if weights else "", names)

    def load(self, notify: bool = True) -> Any:
        """Load (or take from the cache) the chosen classifier; None with a message if not."""
        from napari_medcam.classifiers import load_classifier, registered_classifiers

        spec = self._spec()
        kind, name, weights, names = spec
        if kind == "none":
            self._set(None, "choose the classifier that was trained on images like yours")
            return None
        if spec in self._cache:
            self._set(self._cache[spec], "")
            return self.classifier
        kwargs: dict[str, Any] = {}
        if names:
            kwargs["class_names"] = [c.strip() for c in names.split(",") if c.strip()]
        try:
            if kind == "registered":
                clf = registered_classifiers()[name].load()()
                label = name
            elif not name:
                raise ValueError(
                    "choose a model file"
                    if kind == "file"
                    else "enter a factory as package.module:function"
                )
            else:
                clf = load_classifier(name, weights=weights or None, **kwargs)
                label = Path(name).name if kind == "file" else name
        except Exception as err:
            msg = f"cannot load classifier: {err}"
            self._set(None, msg)
            if notify:
                self.notify.error(msg)
            return None
        clf.name = getattr(clf, "name", label) or label
        if getattr(clf, "card", None) is None and kind == "file":
            clf.card = card_of(clf, name)  # a model file's <name>.card.json, if any
        self._cache[spec] = clf
        self.classifier_label = label
        self._set(clf, "")
        return clf

    def suggest(self, name: str) -> None:
        """Choose the registered classifier ``name`` when none is chosen (a sample image
        names the classifier made for it); a user's choice is never changed."""
        wanted = ("registered", name)
        if self.classifier_combo.value == NO_CHOICE and wanted in self.classifier_combo.choices:
            self.classifier_combo.value = wanted

    def show_domain(self, check: Any) -> None:
        """Say whether the image looks like the training data (hidden when unknown)."""
        self.domain_check = check
        self.domain_label.visible = check is not None
        self.domain_label.value = check.text() if check is not None else ""
        colour = "#f0ad4e" if check is not None and check.out_of_domain else ""
        self.domain_label.native.setStyleSheet(f"color: {colour}" if colour else "")

    def _set(self, clf: Any, message: str) -> None:
        self.classifier = clf
        self.card = card_of(clf) if clf is not None else None
        if clf is None:
            self.classifier_label_w.value = f"⚠ {message}" if message else ""
            choices: list[tuple[str, Any]] = [("predicted class", None)]
        else:
            hook = (
                ""
                if getattr(clf, "hookable", True) and clf.layers
                else " · output-only (no hookable layers)"
            )
            if self.card is not None:
                lines = self.card.lines(clf)
            else:
                size = " × ".join(str(s) for s in clf.input_size)
                lines = [
                    "No card: what it was trained on is not recorded",
                    f"Input {size} px · classes: {', '.join(clf.class_names)}",
                ]
            lines[-1] += f", {clf.channels} channel{'s' * (clf.channels != 1)}{hook}"
            self.classifier_label_w.value = "\n".join(lines)
            choices = [("predicted class", None)] + [(c, i) for i, c in enumerate(clf.class_names)]
        self.target_combo.choices = choices
        self.changed.emit()
