"""The settings panel: a preset, the device, the Advanced fields of `MedCAMConfig`,
and which extra layers a run adds."""

from __future__ import annotations

import dataclasses
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, create_widget
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QToolButton

from napari_medcam.plugin.panels.common import add_rows
from napari_medcam.plugin.worker import default_threads

#: (field, label, magicgui options) of the Advanced section; fields the config does
#: not (or no longer) have are left out, and each control's type is the field's
ADVANCED: list[tuple[str, str, dict[str, Any]]] = [
    ("tolerance", "keep ≥ confidence", {"min": 0.5, "max": 1.0, "step": 0.01}),
    ("lambda_act", "λ activations", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_ce", "λ cross-entropy", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_kl", "λ KL", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_area", "λ area", {"min": 0.0, "max": 1e5, "step": 1.0}),
    ("lambda_bin", "λ binary", {"min": 0.0, "max": 1e5, "step": 0.5}),
    ("lambda_tv", "λ smoothness (TV)", {"min": 0.0, "max": 1e5, "step": 10.0}),
    ("lambda_rob", "λ robustness", {"min": 0.0, "max": 1e5, "step": 1.0}),
    ("steps", "max steps", {"min": 1, "max": 100_000}),
    ("lr", "learning rate", {"min": 1e-5, "max": 1.0, "step": 1e-5}),
    ("threshold", "mask threshold", {"min": 0.01, "max": 0.99, "step": 0.05}),
    ("seed", "seed", {"min": 0, "max": 2**31 - 1}),
]

#: what each Advanced field does, in the words of its effect on the mask
TOOLTIPS = {
    "tolerance": "Share of the original confidence the mask must keep. Lower: smaller "
    "masks that keep less of the decision",
    "lambda_act": "Weight of keeping the classifier's internal activations on the mask. "
    "Higher: the mask keeps what the classifier sees, not only its answer",
    "lambda_ce": "Weight of keeping the decision (cross-entropy of the class on the mask)",
    "lambda_kl": "Weight of keeping every class's probability (KL divergence)",
    "lambda_area": "Weight of a small mask. Higher: smaller masks, at the risk of losing "
    "the decision",
    "lambda_bin": "Weight pushing the soft mask to 0 or 1 (a crisp mask)",
    "lambda_tv": "Weight of a smooth mask (total variation). Higher: fewer, rounder pieces",
    "lambda_rob": "Weight of keeping the decision on perturbations (random replacements "
    "drawn around the absence)",
    "steps": "Most optimisation steps per tile, coarse and refinement together (the CLI's "
    "--steps); fewer are faster and coarser",
    "lr": "Learning rate of the mask's optimisation",
    "threshold": "Soft-mask value above which a pixel is in the mask",
    "seed": "Random seed: the same seed gives the same mask",
}


def advanced_fields() -> list[tuple[str, type, str, dict[str, Any]]]:
    """(field, type, label, options) of the `ADVANCED` fields `MedCAMConfig` has."""
    from napari_medcam import MedCAMConfig

    presets = [MedCAMConfig.fast(), MedCAMConfig()]  # a field may be unset in one (None)
    known = {f.name for f in dataclasses.fields(MedCAMConfig)}
    out = []
    for name, label, opts in ADVANCED:
        values = [getattr(p, name) for p in presets] if name in known else [None]
        value = next((v for v in values if v is not None), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((name, type(value), label, opts))
    return out


class SettingsPanel(QGroupBox):
    """What a run will do: `build_config` is the preset with the Advanced values."""

    def __init__(self) -> None:
        super().__init__("Settings")
        from napari_medcam.classifiers.prepare import available_devices

        self.preset_combo = ComboBox(
            label="Preset",
            choices=["fast", "paper"],
            value="fast",
            tooltip="fast: the default recipe, one knob (the confidence to keep) · "
            "paper: the published fixed-weight recipe, more steps. "
            "The time a run will take is estimated under Explain before it starts",
        )
        self.device_combo = ComboBox(
            label="Device",
            value="auto",
            choices=device_choices(available_devices()),
            tooltip="auto: CUDA, then MPS, then the CPU",
        )
        from napari_medcam.engine.scale import LEVELS

        self.detail_combo = ComboBox(
            label="Detail",
            choices=list(LEVELS),
            value="cell groups",
            tooltip="The scale of the evidence: the mask is made of regions at least this "
            "size, never single pixels · cells: single cells or nuclei · cell groups: a few "
            "cells together (default) · regions: glands, foci. In µm when the classifier's "
            "card knows its pixel size, otherwise a fraction of its input",
        )
        self.advanced: dict[str, Any] = {}
        for name, typ, label, opts in advanced_fields():
            self.advanced[name] = create_widget(
                value=typ(opts.get("min", 0)),
                annotation=typ,
                name=name,
                label=label,
                options=dict(opts),
            )
            self.advanced[name].tooltip = TOOLTIPS.get(name, "")
        self.threads_spin = create_widget(
            value=default_threads(),
            annotation=int,
            name="threads",
            label="CPU threads",
            options={"min": 1, "max": 256},
        )
        self.threads_spin.tooltip = "torch threads for a run; fewer keep napari responsive"
        self.advanced_box = Container(widgets=[*self.advanced.values(), self.threads_spin])
        self.advanced_box.margins = (12, 0, 0, 0)
        self.advanced_box.visible = False
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setAutoRaise(True)
        form = Container(widgets=[self.preset_combo, self.detail_combo, self.device_combo])
        form.margins = (0, 0, 0, 0)
        self.add_soft = CheckBox(
            text="add soft-mask layer (hidden)",
            value=True,
            tooltip="The mask before thresholding, as an image layer added hidden, so it is "
            "there after a run without rerunning: tick its eye to see how sure each pixel is",
        )
        self.add_gradcam = CheckBox(
            text="add Grad-CAM layer (hidden)",
            value=False,
            tooltip="Grad-CAM of the same class, for comparison, added hidden",
        )
        self.replace_unedited = CheckBox(text="replace my previous result if unedited", value=True)
        self.fill_check = CheckBox(
            text="fill the mask",
            value=False,
            tooltip="Off: the mask is drawn as its outline in the class colour, so the "
            "tissue under it stays readable · On: filled, half transparent",
        )
        self.ask_above = create_widget(
            value=2,
            annotation=int,
            name="ask_above",
            label="ask above (min)",
            options={"min": 0, "max": 10_000},
        )
        self.ask_above.tooltip = (
            "Ask before starting a run estimated to take longer than this many minutes "
            "(0: never ask)"
        )
        size = Container(widgets=[self.ask_above])
        size.margins = (0, 0, 0, 0)
        options = Container(
            widgets=[self.fill_check, self.add_soft, self.add_gradcam, self.replace_unedited]
        )
        options.margins = (0, 0, 0, 0)
        add_rows(self, form, size, options, self.advanced_toggle, self.advanced_box)
        self.preset_combo.changed.connect(self._apply_preset)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        self._apply_preset()

    @property
    def threads(self) -> int:
        return int(self.threads_spin.value)

    # what other panels read: the form's values, never its controls
    @property
    def device(self) -> str:
        return str(self.device_combo.value)

    @property
    def ask_above_seconds(self) -> int:
        """Ask before a run estimated longer than this (0: never ask)."""
        return 60 * int(self.ask_above.value)

    @property
    def fill(self) -> bool:
        return bool(self.fill_check.value)

    @property
    def layer_options(self) -> dict[str, bool]:
        """How a run's result is shown: extra layers, replacing, filling."""
        return {
            "add_soft": bool(self.add_soft.value),
            "add_gradcam": bool(self.add_gradcam.value),
            "replace": bool(self.replace_unedited.value),
            "fill": self.fill,
        }

    def set_enabled(self, enabled: bool) -> None:
        """Lock preset, detail and device while a run uses them."""
        self.preset_combo.enabled = enabled
        self.detail_combo.enabled = enabled
        self.device_combo.enabled = enabled

    def _apply_preset(self, _v: Any = None) -> None:
        from napari_medcam import MedCAMConfig

        cfg = MedCAMConfig.preset(self.preset_combo.value)
        for name, w in self.advanced.items():
            value = getattr(cfg, name)
            # a constrained preset has no λ to set (its one knob is the share of the
            # confidence to keep); the paper's fixed weights have no tolerance
            used = value is not None and not (
                name.startswith("lambda_") and cfg.tolerance is not None
            )
            w.visible = used
            if name == "steps":  # every step, refinement included: as the CLI's --steps
                value = cfg.steps + cfg.refine_steps
            if value is not None:
                w.value = value

    def _toggle_advanced(self, on: bool) -> None:
        self.advanced_box.visible = on
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def build_config(self) -> Any:
        """The `MedCAMConfig` of the form: the preset with the Advanced values."""
        from napari_medcam import MedCAMConfig

        cfg = MedCAMConfig.preset(self.preset_combo.value)
        changes = {
            name: w.value
            for name, w in self.advanced.items()
            if getattr(cfg, name) is not None
            and not (name.startswith("lambda_") and cfg.tolerance is not None)
        }
        steps = int(changes.pop("steps"))  # as the CLI's --steps: `MedCAMConfig.capped`
        return cfg.replace(detail=self.detail_combo.value, **changes).capped(steps)

    def set_settings(self, preset: str = "fast", **values: Any) -> None:
        """Set the preset and any Advanced field (or ``threads``) programmatically."""
        self.preset_combo.value = preset
        self._apply_preset()
        for name, value in values.items():
            if name == "threads":
                self.threads_spin.value = value
            elif name == "detail":
                self.detail_combo.value = value
            elif name in self.advanced:
                self.advanced[name].value = value
            else:
                raise ValueError(f"unknown setting {name!r}; known: {list(self.advanced)}")


def device_choices(devices: list[str]) -> list[tuple[str, str]]:
    """Choices showing what ``auto`` resolves to, e.g. ``auto → cpu``."""
    from napari_medcam.classifiers.prepare import resolve_device

    try:
        auto = str(resolve_device("auto"))
    except ValueError:
        auto = "?"
    return [(f"auto → {auto}" if d == "auto" else d, d) for d in devices]
