"""The settings panel shows only the knobs the chosen recipe uses."""

from __future__ import annotations

import pytest

import napari_medcam as mc

pytestmark = pytest.mark.gui


def _shown(w) -> bool:
    return not w.native.isHidden()  # set hidden, whether or not the panel is on screen


def test_fast_shows_its_one_knob_and_paper_its_weights(qtbot):
    from napari_medcam.plugin.panels.settings import SettingsPanel

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    adv = panel.advanced
    assert panel.preset_combo.value == "fast"
    assert _shown(adv["tolerance"]) and adv["tolerance"].value == pytest.approx(0.95)
    assert not any(_shown(w) for n, w in adv.items() if n.startswith("lambda_"))
    adv["tolerance"].value = 0.9
    adv["lambda_area"].value = 1.0  # hidden: must not leak into the recipe
    cfg = panel.build_config()
    assert cfg.tolerance == pytest.approx(0.9)
    assert cfg.lambda_area == mc.MedCAMConfig.fast().lambda_area

    assert cfg.detail == "cell groups"  # the default scale of evidence
    panel.set_settings("fast", detail="regions")
    assert panel.build_config().detail == "regions"

    panel.preset_combo.value = "paper"
    assert not _shown(adv["tolerance"])
    assert all(_shown(w) for n, w in adv.items() if n.startswith("lambda_"))
    adv["lambda_area"].value = 50.0
    cfg = panel.build_config()
    assert cfg.tolerance is None and cfg.lambda_area == 50.0


def test_the_untouched_form_is_the_preset_and_steps_mean_the_clis(qtbot):
    """The widget's recipe is the API's: untouched, the preset itself; "max steps" as the
    CLI's --steps (coarse and refinement together), so both make the same mask."""
    from napari_medcam.plugin.panels.settings import SettingsPanel

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    fast = mc.MedCAMConfig.fast(detail="cell groups")
    assert panel.build_config() == fast
    panel.set_settings("fast", steps=12)
    assert panel.build_config() == fast.capped(12)
    assert panel.build_config().steps + panel.build_config().refine_steps == 12
