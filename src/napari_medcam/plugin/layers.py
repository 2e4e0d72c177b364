"""Which part of an image layer gets explained, and result layers aligned with it.

Pure helpers around napari layers: no widgets here. A `Region` says which plane
(or volume) of a layer's data the classifier will see — found through the layer's
world-to-data transform, so it is the plane the viewer displays even when the
layer is scaled, translated or has fewer dimensions than the viewer — and how to
put a mask computed on it back into a full-shape, aligned Labels layer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medcam.tiling import needs_tiling, tile_grid

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.components import Dims

#: attributes that place a layer in the world; copied from the image to its results
TRANSFORM_ATTRS = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")

#: key of our facts in a result layer's ``metadata``
META_KEY = "medcam"


@dataclass
class Region:
    """The part of an image layer a classifier will be shown.

    ``key`` indexes the layer's (spatial) data: an int for every fixed axis and
    ``slice(None)`` for the explained ones; the RGB channel axis, if any, is left
    alone. ``problem`` is non-empty when nothing can be explained (and says why).
    """

    layer_name: str = ""
    key: tuple[Any, ...] = ()
    fixed: dict[int, int] = field(default_factory=dict)
    layer_shape: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()
    description: str = ""
    tiles: int = 1
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def is_full(self) -> bool:
        """True when the region is the whole layer (no fixed axes)."""
        return not self.fixed

    def to_meta(self) -> dict[str, Any]:
        """JSON-ready description, stored with the result."""
        return {
            "layer": self.layer_name,
            "fixed_axes": {str(a): int(i) for a, i in self.fixed.items()},
            "layer_shape": [int(s) for s in self.layer_shape],
            "shape": [int(s) for s in self.shape],
            "description": self.description,
            "tiles": self.tiles,
        }


def image_data(layer: napari.layers.Image) -> Any:
    """The full-resolution data of an image layer (level 0 if multiscale)."""
    return layer.data[0] if layer.multiscale else layer.data


def spatial_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """Data shape without the RGB(A) channel axis."""
    return tuple(int(s) for s in image_data(layer).shape[: layer.ndim])


def _axis_names(
    fixed: list[int], layer: Any, dims: Dims | None, spatial_dims: int
) -> dict[int, str]:
    """Readable names for the fixed axes: user-given axis labels, else z, t, ..."""
    offset = (dims.ndim - layer.ndim) if dims is not None else 0
    labels = list(dims.axis_labels) if dims is not None else []
    names: dict[int, str] = {}
    fallback = ["z", "t"] if spatial_dims == 2 else ["t"]
    for rank, a in enumerate(reversed(fixed)):
        label = labels[a + offset] if 0 <= a + offset < len(labels) else ""
        if label and not label.lstrip("-").isdigit():
            names[a] = label
        else:
            names[a] = fallback[rank] if rank < len(fallback) else f"axis {a}"
    return names


def find_region(
    layer: Any,
    dims: Dims | None,
    spatial_dims: int = 2,
    input_size: tuple[int, ...] | None = None,
) -> Region:
    """What of ``layer`` a ``spatial_dims``-D classifier explains, given the viewer's dims.

    For a 2-D classifier: the displayed plane (its fixed coordinates found by
    mapping the viewer's world point through the layer's world-to-data
    transform). For a 3-D classifier: the displayed (or last three) axes.
    """
    from napari.layers import Image

    if layer is None:
        return Region(problem="no image layer: open an image or pick one above")
    if not isinstance(layer, Image):
        kind = layer.__class__.__name__
        return Region(
            layer_name=layer.name,
            problem=f"'{layer.name}' is a {kind} layer, not an image: select an image layer",
        )
    shape = spatial_shape(layer)
    nd = len(shape)
    if nd < spatial_dims:
        return Region(
            layer_name=layer.name,
            layer_shape=shape,
            problem=f"this {spatial_dims}-D classifier needs a {spatial_dims}-D image; "
            f"'{layer.name}' is {nd}-D",
        )
    ndisplay = dims.ndisplay if dims is not None else 2
    if dims is not None:
        offset = dims.ndim - nd
        displayed = sorted(a - offset for a in dims.displayed if a - offset >= 0)
        point = layer.world_to_data(np.asarray(dims.point, dtype=float))
    else:
        displayed = list(range(nd))[-ndisplay:]
        point = np.zeros(nd)
    if len(displayed) >= spatial_dims:
        explained = displayed[-spatial_dims:]
    else:
        explained = list(range(nd))[-spatial_dims:]
    fixed_axes = [a for a in range(nd) if a not in explained]
    names = _axis_names(fixed_axes, layer, dims, spatial_dims)
    fixed: dict[int, int] = {}
    for a in fixed_axes:
        idx = int(np.floor(float(point[a]) + 0.5))
        if not 0 <= idx < shape[a]:
            return Region(
                layer_name=layer.name,
                layer_shape=shape,
                problem=f"the displayed plane ({names[a]} = {idx}) lies outside "
                f"'{layer.name}' (0..{shape[a] - 1}): move the slider onto the image",
            )
        fixed[a] = idx
    key = tuple(fixed.get(a, slice(None)) for a in range(nd))
    rshape = tuple(shape[a] for a in explained)
    tiles = 1
    if (
        input_size is not None
        and len(input_size) == len(rshape)
        and needs_tiling(rshape, input_size)
    ):
        tiles = len(tile_grid(rshape, input_size))
    size = " × ".join(str(s) for s in rshape)
    where = ", ".join(f"{names[a]} = {i}" for a, i in fixed.items())
    if spatial_dims == 3:
        what = f"volume at {where}" if fixed else "whole volume"
    elif fixed:
        what = f"current slice ({where})" if len(fixed) == 1 else f"current plane ({where})"
    else:
        what = "whole image"
    if tiles > 1:
        what += f", {tiles} tiles"
    what += f" · {size} px"
    if layer.multiscale:
        what += " (full resolution)"
    if spatial_dims == 2 and ndisplay == 3 and fixed:
        what += " · viewer in 3-D: the slice at the slider"
    return Region(
        layer_name=layer.name,
        key=key,
        fixed=fixed,
        layer_shape=shape,
        shape=rshape,
        description=what,
        tiles=tiles,
    )


def region_pixels(layer: Any, region: Region) -> np.ndarray:
    """The image data of ``region`` as a numpy array (channels last for RGB)."""
    return np.asarray(image_data(layer)[region.key])


def region_of(data: np.ndarray, region: Region) -> np.ndarray:
    """The part of a full-shape (mask) array that ``region`` covers."""
    return np.asarray(data[region.key])


def embed(region: Region, values: np.ndarray, dtype: Any) -> np.ndarray:
    """A full-shape array (the layer's spatial shape) with ``values`` in ``region``."""
    out = np.zeros(region.layer_shape, dtype=dtype)
    out[region.key] = values
    return out


def transform_kwargs(layer: Any) -> dict[str, Any]:
    """Layer keyword arguments that put a new layer exactly where ``layer`` lies."""
    out: dict[str, Any] = {}
    for name in TRANSFORM_ATTRS:
        value = getattr(layer, name, None)
        if value is None:
            continue
        out[name] = value.affine_matrix.copy() if name == "affine" else value
    return out


def data_hash(data: Any) -> str:
    """Content hash of an array, to notice edits made without events."""
    arr = np.ascontiguousarray(np.asarray(data))
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def insert_above(viewer: napari.Viewer, anchor: Any, layers: list[Any]) -> None:
    """Insert ``layers`` (bottom first) right above ``anchor``; on top if it is gone."""
    if anchor is not None and anchor in viewer.layers:
        index = viewer.layers.index(anchor) + 1
    else:
        index = len(viewer.layers)
    for offset, layer in enumerate(layers):
        viewer.layers.insert(index + offset, layer)


def result_name(image_name: str, class_name: str, kind: str = "Med-CAM") -> str:
    return f"{image_name} · {kind} · {class_name}"
