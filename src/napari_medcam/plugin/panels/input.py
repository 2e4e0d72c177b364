"""The input panel: which image layer, and which part of it the classifier will see."""

from __future__ import annotations

import logging
import weakref
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox

from napari_medcam.classifiers.card import nearest_mpp_level
from napari_medcam.plugin.layers import is_own_layer
from napari_medcam.plugin.panels.common import Session, add_rows, wrap
from napari_medcam.plugin.region import (
    Region,
    default_level,
    find_region,
    level_shapes,
    spatial_shape,
)
from napari_medcam.plugin.results import ResultStore

logger = logging.getLogger(__name__)


class InputPanel(QGroupBox):
    """Image layer, pyramid level and region, every-slice mode.

    The Image list holds the user's image layers only (never the plugin's own
    soft map, Grad-CAM or side-by-side copy). Selecting an image chooses it;
    selecting anything else (a reference, a points layer, a layer the plugin just
    added) leaves the choice alone, and the only image is chosen when none is.

    ``region_changed`` carries the new `Region` whenever what would be explained
    changes; ``result_activated`` a result layer the user selected in the layer list.
    """

    region_changed = Signal(object)
    result_activated = Signal(object)

    def __init__(
        self, viewer: Any, session: Session, results: ResultStore, classifier: Any
    ) -> None:
        super().__init__("Input")
        self.viewer = viewer
        self.session = session
        self.results = results
        self._classifier = classifier  # () -> the loaded classifier, or None
        self._rejected: Any = None  # weakref to a selected non-image layer
        self._levels_of: Any = None  # weakref to the layer whose levels the combo lists
        self.image_combo = ComboBox(
            label="Image",
            choices=self._image_choices,
            nullable=True,
            tooltip="The image layer to explain (follows the image you select; "
            "the plugin's own layers are not listed)",
        )
        self.region_label = Label(value="")
        wrap(self.region_label)
        # multiscale (slide) images: which pyramid level, and the whole slide or the view
        self.level_combo = ComboBox(
            label="Level",
            choices=[],
            tooltip="Pyramid level to explain (0 = full resolution); "
            "coarser levels read fewer pixels",
        )
        self.scope_combo = ComboBox(
            label="Region",
            choices=[("whole slide", "whole"), ("visible region", "visible")],
            value="whole",
            tooltip="whole slide: the whole level · visible region: the part in view",
        )
        self.slide_form = Container(widgets=[self.level_combo, self.scope_combo])
        self.slide_form.margins = (0, 0, 0, 0)
        self.slide_form.visible = False
        # a 2-D classifier on a stack: the displayed slice, or every slice one by one
        self.every_slice = CheckBox(
            text="every slice (one by one)",
            value=False,
            tooltip="Explain every slice of the stack along the slider next to the view, "
            "each on its own, into one mask for the whole stack",
        )
        self.every_slice.visible = False
        form = Container(widgets=[self.image_combo, self.every_slice])
        form.margins = (0, 0, 0, 0)
        add_rows(self, form, self.slide_form, self.region_label)
        self._connect()

    @property
    def image_layer(self) -> Any:
        """The chosen image layer (None before one is chosen)."""
        return self.image_combo.value

    @property
    def level(self) -> Any:
        """The chosen pyramid level of a multiscale image."""
        return self.level_combo.value

    def _connect(self) -> None:
        v = self.viewer
        v.layers.selection.events.active.connect(self._on_active)
        v.dims.events.point.connect(self.update_region)
        v.dims.events.ndisplay.connect(self.update_region)
        v.dims.events.order.connect(self.update_region)
        camera = self._camera()
        if camera is not None:
            camera.events.center.connect(self._on_camera)
            camera.events.zoom.connect(self._on_camera)
        self.level_combo.changed.connect(self.update_region)
        self.scope_combo.changed.connect(self.update_region)
        self.every_slice.changed.connect(self.update_region)
        self.image_combo.changed.connect(self._on_image_chosen)

    # ----------------------------------------------------------- layer choices
    def _image_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [
            (ly.name, ly)
            for ly in self.viewer.layers
            if isinstance(ly, Image) and not is_own_layer(ly)
        ]

    def refresh_choices(self) -> None:
        """The layers changed: list the images again (the region follows if it moved);
        with no image chosen, the active image — or the only one — is."""
        image = self.image_combo.value
        with self.image_combo.changed.blocked():
            self.image_combo.reset_choices()
            if self.image_combo.value is None:
                self._pick_default()
        if self.image_combo.value is not image or image is None:
            self.update_region()

    def _pick_default(self) -> None:
        images = [ly for _name, ly in self._image_choices()]
        active = self.viewer.layers.selection.active
        pick = active if active in images else images[0] if len(images) == 1 else None
        if pick is not None:
            self._rejected = None
            self.image_combo.value = pick

    def _on_active(self, event: Any = None) -> None:
        """Follow the active layer: a user's image is chosen; a result selects its image;
        anything else keeps the current choice (or, with none, says why not)."""
        if self.session.closed:
            return
        from napari.layers import Image

        layer = self.viewer.layers.selection.active
        if layer is None:
            return
        if layer in self.results:
            self._rejected = None
            self.result_activated.emit(layer)
            source = self.results.get(layer).source()
            if source is not None and source in self.viewer.layers:
                self.image_combo.value = source
        elif isinstance(layer, Image) and not is_own_layer(layer):
            self._rejected = None
            self.image_combo.value = layer
        elif self.image_combo.value is None:
            self._pick_default()
            if self.image_combo.value is None and not is_own_layer(layer):
                self._rejected = weakref.ref(layer)
        self.update_region()

    def _on_image_chosen(self, _value: Any = None) -> None:
        if self.image_combo.value is not None:
            self._rejected = None
        self.update_region()

    # ------------------------------------------------------------------ region
    def _camera(self) -> Any:
        scene = getattr(self.viewer, "scene", None)
        camera = getattr(scene, "camera", None)
        return camera if camera is not None else getattr(self.viewer, "camera", None)

    def _on_camera(self, event: Any = None) -> None:
        """Panning/zooming changes the visible region of a slide."""
        if self.session.closed or self.session.explaining:
            return
        layer = self.image_combo.value
        if getattr(layer, "multiscale", False) and self.scope_combo.value == "visible":
            self.update_region()

    def visible_corners(self) -> Any:
        """The canvas' top-left and bottom-right in world coordinates (None if unknown)."""
        if self.viewer.dims.ndisplay != 2:
            return None
        try:
            canvas = self.viewer.window._qt_viewer.canvas
            corners = np.asarray(canvas._viewbox_corners_in_world, dtype=float)
        except Exception:  # no Qt canvas (or a napari without it)
            logger.debug("no canvas corners", exc_info=True)
            return None
        if corners.shape != (2, self.viewer.dims.ndim) or not np.all(np.isfinite(corners)):
            return None
        if np.any(np.abs(corners[1] - corners[0])[list(self.viewer.dims.displayed)] < 1e-9):
            return None  # a canvas not laid out yet
        return corners

    def _sync_levels(self, layer: Any) -> None:
        """Show the Level/Region choice for a multiscale image; list its levels."""
        multiscale = bool(getattr(layer, "multiscale", False))
        self.slide_form.visible = multiscale
        if not multiscale:
            self._levels_of = None
            return
        if self._levels_of is not None and self._levels_of() is layer:
            return
        shapes = level_shapes(layer)
        meta = layer.metadata if isinstance(layer.metadata, dict) else {}
        mpp = meta.get("mpp")
        choices = []
        for i, shp in enumerate(shapes):
            text = f"{i}: {shp[-1]} × {shp[-2]} px"
            if isinstance(mpp, (int, float)) and mpp > 0:
                um = mpp * shapes[0][-1] / shp[-1]
                text += f" · {um:.2f} µm/px (≈ {10 / um:.3g}×)"
            choices.append((text + (" (full resolution)" if i == 0 else ""), i))
        with self.level_combo.changed.blocked():
            self.level_combo.choices = choices
            matched = self._matched_level(mpp, shapes)
            self.level_combo.value = default_level(layer) if matched is None else matched
        self._levels_of = weakref.ref(layer)

    def _matched_level(self, mpp: Any, shapes: list[Any]) -> int | None:
        """The level whose µm/px is nearest the one the loaded classifier's card records
        (a classifier sees tissue at the magnification it was trained at); None when the
        slide or the card records no pixel size."""
        clf = self._classifier()
        want = getattr(getattr(clf, "card", None), "microns_per_pixel", None)
        if not want or not isinstance(mpp, (int, float)) or mpp <= 0:
            return None
        return nearest_mpp_level([mpp * shapes[0][-1] / shp[-1] for shp in shapes], want)

    def current_region(self) -> Region:
        """What Explain would explain now (`Region.problem` says why not, if it cannot)."""
        layer = self.image_combo.value
        if layer is None and self._rejected is not None:
            layer = self._rejected()
        clf = self._classifier()
        sd = clf.spatial_dims if clf is not None else 2
        size = clf.input_size if clf is not None else None
        try:
            level = visible = None
            if getattr(layer, "multiscale", False):
                self._sync_levels(layer)
                level = self.level_combo.value
                if self.scope_combo.value == "visible":
                    visible = self.visible_corners()
            from napari.layers import Image

            stack = (
                sd == 2
                and isinstance(layer, Image)
                and not layer.multiscale
                and len(spatial_shape(layer)) > 2
            )
            self.every_slice.visible = stack
            return find_region(
                layer,
                self.viewer.dims,
                sd,
                size,
                level=level,
                visible=visible,
                every_slice=stack and bool(self.every_slice.value),
            )
        except Exception as err:  # an exotic layer/transform: say so, don't crash
            logger.debug("region failed", exc_info=True)
            return Region(problem=f"cannot tell what to explain: {err}")

    def update_region(self, event: Any = None) -> None:
        if self.session.closed:
            return
        region = self.current_region()
        self._sync_levels(self.image_combo.value)
        if region.ok:
            self.region_label.value = f"Explains: {region.description}"
        else:
            self.region_label.value = f"⚠ {region.problem}"
        self.region_changed.emit(region)
