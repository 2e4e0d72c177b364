"""Turning a finished run into layers, and remembering which layers the user edited.

`ResultStore` places a result as a Labels layer aligned with its image (plus the
optional soft-mask and Grad-CAM Image layers), and keeps, for every result layer,
the facts the widget needs later (image region, classifier, target, Grad-CAM
heatmap). Its rule: a rerun may replace a result only when the user has not
edited it; an edited result is never touched — the new result becomes a new layer.
"""

from __future__ import annotations

import itertools
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medcam.io.geojson import CLASS_COLORS
from napari_medcam.plugin.layers import (
    META_KEY,
    data_hash,
    embed,
    embed_levels,
    insert_above,
    own_metadata,
    result_name,
)
from napari_medcam.plugin.region import Region
from napari_medcam.plugin.tile_map import TILE_COLORS, TILE_OUTLINE, tile_features, tile_map

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from napari_medcam.plugin.worker import ExplainJob, JobResult

_SERIAL = itertools.count()

#: what the user paints with another label than 1
PAINT_COLOR = "#ffd400"
#: outline thickness (data pixels) of a mask shown as an outline; 0 fills it
OUTLINE = 2
FILL_OPACITY = 0.45


def class_color(target: int) -> str:
    return CLASS_COLORS[int(target) % len(CLASS_COLORS)]


def mask_colors(target: int) -> dict[Any, str]:
    """A mask's Labels colormap: evidence in its class colour, other labels yellow."""
    return {0: "transparent", 1: class_color(target), None: PAINT_COLOR}


def evidence_colors(exp: Any) -> dict[Any, str]:
    """A result's colormap: multi-class labels (class index + 1) each in its class
    colour, else `mask_colors` of its one class."""
    if exp.labels is None:
        return mask_colors(exp.target)
    classes = {v: class_color(v - 1) for v in exp.label_classes}
    return {0: "transparent", **classes, None: PAINT_COLOR}


def show_filled(layer: Any, fill: bool) -> None:
    """Show a mask as its outline (the tissue stays readable) or filled."""
    layer.contour = 0 if fill else OUTLINE
    layer.opacity = FILL_OPACITY if fill else 1.0


def explained_area(region: Region) -> np.ndarray | None:
    """The explained region's corners (4 × 2, in the result layer's data coordinates) of
    a 2-D result; None for stacks and volumes."""
    if len(region.layer_shape) != 2:
        return None
    if region.level is not None or region.is_full:
        y0, x0, (y1, x1) = 0, 0, region.layer_shape
    else:
        (ys, xs) = region.key
        y0, x0 = ys.start or 0, xs.start or 0
        y1 = region.layer_shape[0] if ys.stop is None else ys.stop
        x1 = region.layer_shape[1] if xs.stop is None else xs.stop
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


@dataclass
class RunContext:
    """What the GUI knew when a run started (the user may change things meanwhile)."""

    layer_ref: Any  # weakref to the image layer
    layer_name: str
    region: Region
    transforms: dict[str, Any]
    classifier: Any
    classifier_label: str
    config: Any
    add_soft: bool
    add_gradcam: bool
    replace: bool
    fill: bool
    job: ExplainJob
    estimate: Any = None  # cost.Estimate made before the run (None: not measured)
    domain: Any = None  # classifiers.card.DomainCheck of the image (None: not known)
    started: float = field(default_factory=time.perf_counter)


@dataclass
class ResultRecord:
    """Facts kept for a result layer (arrays stay out of the layer's metadata)."""

    source_ref: Any  # weakref to the image layer
    source_name: str
    region: Region
    classifier: Any
    classifier_label: str
    target: int
    class_name: str
    config: Any
    data_hash: str
    gradcam: np.ndarray | None = None
    extras: list[Any] = field(default_factory=list)  # weakrefs to soft/Grad-CAM layers
    serial: int = field(default_factory=lambda: next(_SERIAL))  # creation order

    def source(self) -> Any:
        return self.source_ref()


@dataclass
class Placement:
    layer: Any
    replaced: bool = False
    kept_edited: Any = None  # an edited earlier result that was left alone


def result_metadata(ctx: RunContext, exp: Any) -> dict[str, Any]:
    """The result layer's metadata: the explanation summary, its config, where it came from."""
    return {
        META_KEY: {
            "summary": exp.summary(),
            "config": exp.config,
            "role": "Med-CAM",
            "source_layer": ctx.layer_name,
            "region": ctx.region.to_meta(),
            "classifier": ctx.classifier_label,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    }


class ResultStore:
    """Result layers of one widget, their records and whether the user edited them."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self._records: weakref.WeakKeyDictionary[Any, ResultRecord] = weakref.WeakKeyDictionary()
        self._edited: weakref.WeakSet[Any] = weakref.WeakSet()

    def __contains__(self, layer: Any) -> bool:
        return layer is not None and layer in self._records

    def get(self, layer: Any) -> ResultRecord | None:
        return self._records.get(layer) if layer is not None else None

    def layers(self) -> list[Any]:
        return [ly for ly in self.viewer.layers if ly in self._records]

    # ------------------------------------------------------------------ edits
    def _on_paint(self, event: Any) -> None:
        source = getattr(event, "source", None)
        if source is not None:
            self._edited.add(source)

    def is_edited(self, layer: Any) -> bool:
        """Has the user changed this result since it was made? (paint events or content)

        A multiscale result (a mask too large for memory, on disk) cannot be painted
        in napari; it is not hashed (that would read it whole).
        """
        if layer in self._edited:
            return True
        rec = self.get(layer)
        if rec is None or getattr(layer, "multiscale", False):
            return False
        return data_hash(layer.data) != rec.data_hash

    def previous(self, ctx: RunContext, class_name: str) -> Any:
        """The most recent result of the same image, region and class, if any."""
        source = ctx.layer_ref()
        if source is None:  # the image was closed during the run
            return None
        same = [
            (rec.serial, layer)
            for layer in self.viewer.layers
            if (rec := self.get(layer)) is not None
            and rec.source() is source
            and rec.class_name == class_name
            and rec.region.key == ctx.region.key
            and rec.region.level == ctx.region.level
            and rec.region.layer_shape == ctx.region.layer_shape
        ]
        return max(same, key=lambda t: t[0])[1] if same else None

    # -------------------------------------------------------------- placing
    def _extras(self, ctx: RunContext, result: JobResult) -> list[Any]:
        from napari.layers import Image, Labels, Shapes

        exp = result.explanation
        region = ctx.region
        out = []
        wanted = [
            ("Med-CAM soft", ctx.add_soft, exp.soft_mask, "magma"),
            ("Grad-CAM", ctx.add_gradcam, result.gradcam, "inferno"),
        ]
        if result.soft_levels is not None:  # too large for memory: multiscale, lazy
            wanted[0] = ("Med-CAM soft", ctx.add_soft, result.soft_levels, "magma")
        for kind, on, values, cmap in wanted:
            if not on or values is None:
                continue
            if isinstance(values, list):
                data: Any = embed_levels(region, values)
            else:
                data = values if region.is_full else embed(region, values, np.float32)
                data = np.asarray(data, np.float32)
            name = result_name(exp.class_name, kind)
            out.append(
                Image(
                    data,
                    name=name,
                    colormap=cmap,
                    contrast_limits=(0.0, 1.0),
                    blending="translucent",
                    opacity=0.5,
                    visible=False,  # one click away; shown at once they hide the tissue
                    multiscale=isinstance(data, list),
                    metadata=own_metadata(kind, ctx.layer_name),
                    **ctx.transforms,
                )
            )
        tiles = tile_map(exp) if result.mask_levels is None else None
        if tiles is not None:  # right below the mask: where tiles held and where they failed
            data = tiles if region.is_full else embed(region, tiles, np.uint8)
            tile_layer = Labels(
                data,
                name=result_name(exp.class_name, "Med-CAM tiles"),
                colormap=dict(TILE_COLORS),
                opacity=0.8,
                features=tile_features(exp),
                metadata=own_metadata("Med-CAM tiles", ctx.layer_name),
                **ctx.transforms,
            )
            tile_layer.contour = TILE_OUTLINE  # outlines: a tint of every tile hid the tissue
            out.append(tile_layer)
        corners = explained_area(region) if exp.tiles > 1 else None
        if corners is not None:  # "not explained" and "no evidence" look different
            out.append(
                Shapes(
                    [corners],
                    shape_type="rectangle",
                    edge_color="white",
                    face_color="transparent",
                    edge_width=max(2.0, float(np.max(corners[2])) / 300),
                    opacity=0.8,
                    name=result_name(exp.class_name, "Med-CAM area"),
                    metadata=own_metadata("Med-CAM area", ctx.layer_name),
                    **ctx.transforms,
                )
            )
        return out

    def place(self, ctx: RunContext, result: JobResult) -> Placement:
        """Add (or replace, when allowed) the result layers right above the image."""

        exp = result.explanation
        region = ctx.region
        if result.mask_levels is not None and (region.is_full or region.level is not None):
            # a mask on disk: multiscale levels over it, never read whole (not paintable)
            data: Any = embed_levels(region, result.mask_levels)
        else:
            labels = exp.labels  # multi-class: a value per class
            mask = np.asarray(exp.mask if labels is None else labels).astype(np.uint8)
            data = mask if region.is_full else embed(region, mask, np.uint8)
        lazy = isinstance(data, list)
        meta = result_metadata(ctx, exp)
        extras = self._extras(ctx, result)
        record = ResultRecord(
            source_ref=ctx.layer_ref,
            source_name=ctx.layer_name,
            region=region,
            classifier=ctx.classifier,
            classifier_label=ctx.classifier_label,
            target=int(exp.target),
            class_name=exp.class_name,
            config=ctx.config,
            data_hash="" if lazy else data_hash(data),
            gradcam=result.gradcam,
            extras=[weakref.ref(e) for e in extras],
        )
        layers = self.viewer.layers
        source = ctx.layer_ref()
        previous = self.previous(ctx, exp.class_name)
        if previous is not None and ctx.replace and not self.is_edited(previous):
            old = self.get(previous)
            for ref in old.extras if old else []:
                extra = ref()
                if extra is not None and extra in layers:
                    layers.remove(extra)
            if lazy or previous.multiscale:  # a layer cannot change between the two kinds
                layers.remove(previous)
                placed = self._new_layer(ctx, exp, data, meta, record, source, extras)
                return Placement(placed, replaced=True)
            self._records[previous] = record
            previous.data = data
            previous.metadata = meta
            previous.colormap = evidence_colors(exp)
            record.data_hash = data_hash(previous.data)
            insert_above(self.viewer, source, extras)
            # the mask on top of everything (references included), and selected
            layers.move(layers.index(previous), len(layers))
            layers.selection.active = previous
            return Placement(previous, replaced=True)
        kept = previous if previous is not None and self.is_edited(previous) else None
        layer = self._new_layer(ctx, exp, data, meta, record, source, extras)
        return Placement(layer, kept_edited=kept)

    def _new_layer(
        self,
        ctx: RunContext,
        exp: Any,
        data: Any,
        meta: dict[str, Any],
        record: ResultRecord,
        source: Any,
        extras: list[Any],
    ) -> Any:
        from napari.layers import Labels

        layer = Labels(
            data,
            name=result_name(exp.class_name),
            metadata=meta,
            colormap=evidence_colors(exp),
            multiscale=isinstance(data, list),
            **ctx.transforms,
        )
        show_filled(layer, ctx.fill)
        self._records[layer] = record
        layer.events.paint.connect(self._on_paint)
        insert_above(self.viewer, source, extras)
        # on top of everything, references included: colours never mix under it
        self.viewer.layers.append(layer)
        return layer

    def set_fill(self, fill: bool) -> None:
        """Show every result mask filled or as its outline."""
        for layer in self.layers():
            show_filled(layer, fill)
