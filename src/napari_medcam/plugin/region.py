"""Which part of an image layer the classifier will see: a `Region`.

Pure helpers around napari layers: no widgets here. A `Region` says which plane
(or volume) of a layer's data the classifier will see — found through the layer's
world-to-data transform, so it is the plane the viewer displays even when the
layer is scaled, translated or has fewer dimensions than the viewer — at which
pyramid level, over the whole slide or the part in view. `napari_medcam.plugin.layers`
puts a mask computed on it back into an aligned Labels layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medcam.tiling import needs_tiling, overlap_for, tile_grid

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.components import Dims


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
    #: multiscale only: the pyramid level explained (``key`` then indexes
    #: ``layer.data[level]``), the level's spatial shape, its downsample per axis
    #: (level-0 shape / level shape) and the region's first pixel at that level.
    #: The result layer then covers just the region (``layer_shape``), placed
    #: over it with `region_transform_kwargs`.
    level: int | None = None
    level_shape: tuple[int, ...] = ()
    downsample: tuple[float, ...] = ()
    origin: tuple[int, ...] = ()
    visible: bool = False
    #: every-slice mode (a 2-D classifier over a stack): the axis of ``shape``
    #: along which the region is cut into slices, each explained on its own
    slice_axis: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def is_full(self) -> bool:
        """True when the region is the whole layer (no fixed axes)."""
        return not self.fixed

    @property
    def explained_axes(self) -> list[int]:
        """Axes of the layer's data the classifier sees (the others are fixed)."""
        return [a for a, k in enumerate(self.key) if isinstance(k, slice)]

    def level0_placement(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(downsample, level-0 origin) of the explained axes: where the region's pixel
        edge 0 lies in full-resolution pixels, and how many of those one region pixel
        spans. A plain (not multiscale) region: (1, ...) and (0, ...)."""
        axes = self.explained_axes
        if self.level is None:
            return (1.0,) * len(axes), (0.0,) * len(axes)
        f = tuple(float(self.downsample[a]) for a in axes)
        return f, tuple(float(self.origin[a]) * fa for a, fa in zip(axes, f))

    def to_meta(self) -> dict[str, Any]:
        """JSON-ready description, stored with the result."""
        return {
            "layer": self.layer_name,
            "fixed_axes": {str(a): int(i) for a, i in self.fixed.items()},
            "layer_shape": [int(s) for s in self.layer_shape],
            "shape": [int(s) for s in self.shape],
            "description": self.description,
            "tiles": self.tiles,
            **({"slice_axis": int(self.slice_axis)} if self.slice_axis is not None else {}),
            **(
                {
                    "level": int(self.level),
                    "level_shape": [int(s) for s in self.level_shape],
                    "downsample": [float(f) for f in self.downsample],
                    "origin": [int(o) for o in self.origin],
                    "origin_level0": list(self.level0_placement()[1]),
                    "visible_region": bool(self.visible),
                }
                if self.level is not None
                else {}
            ),
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
    level: int | None = None,
    visible: np.ndarray | None = None,
    every_slice: bool = False,
) -> Region:
    """What of ``layer`` a ``spatial_dims``-D classifier explains, given the viewer's dims.

    For a 2-D classifier: the displayed plane (its fixed coordinates found by
    mapping the viewer's world point through the layer's world-to-data
    transform), or with ``every_slice`` the whole stack of such planes along the
    nearest slider axis (not for pyramids). For a 3-D classifier: the displayed
    (or last three) axes.
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
    along = None  # every-slice mode: the stack axis (the slider nearest the plane)
    if every_slice and spatial_dims == 2 and fixed_axes and not layer.multiscale:
        along = fixed_axes.pop()
        explained = sorted([along, *explained])
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
    ms: dict[str, Any] = {}
    if layer.multiscale:
        ms = _level_region(layer, shape, explained, fixed, level, visible, dims)
        if "problem" in ms:
            return Region(layer_name=layer.name, layer_shape=shape, problem=ms["problem"])
        key = ms["key"]
        rshape = ms["shape"]
    else:
        key = tuple(fixed.get(a, slice(None)) for a in range(nd))
        rshape = tuple(shape[a] for a in explained)
    slice_axis = explained.index(along) if along is not None else None
    plane = tuple(n for i, n in enumerate(rshape) if i != slice_axis)
    tiles = 1
    if input_size is not None and len(input_size) == len(plane) and needs_tiling(plane, input_size):
        tiles = len(tile_grid(plane, input_size, overlap_for(input_size)))
    size = " × ".join(str(s) for s in rshape)
    where = ", ".join(f"{names[a]} = {i}" for a, i in fixed.items())
    if along is not None:
        n = shape[along]
        what = f"every {names[along]} slice ({n}, one by one)"
        what += f" at {where}" if fixed else ""
        tiles *= n
    elif spatial_dims == 3:
        what = f"volume at {where}" if fixed else "whole volume"
    elif fixed:
        what = f"current slice ({where})" if len(fixed) == 1 else f"current plane ({where})"
    else:
        what = "whole image"
    if layer.multiscale:
        lvl = ms["level"]
        res = "full resolution" if lvl == 0 else f"downsample {_factor_text(ms['downsample'])}"
        place = "visible region" if ms["visible"] else "whole slide"
        base = f"{place} at level {lvl} ({res})"
        what = base if what in ("whole image", "whole volume") else f"{base}, {what}"
    if tiles > 1 and along is None:
        what += f", {tiles} tiles"
    what += f" · {size} px"
    if spatial_dims == 2 and ndisplay == 3 and fixed and along is None:
        what += " · viewer in 3-D: the slice at the slider"
    if layer.multiscale:
        return Region(
            layer_name=layer.name,
            key=key,
            fixed={a: ms["fixed"][a] for a in fixed},
            layer_shape=ms["result_shape"],
            shape=rshape,
            description=what,
            tiles=tiles,
            level=ms["level"],
            level_shape=ms["level_shape"],
            downsample=ms["downsample"],
            origin=ms["origin"],
            visible=ms["visible"],
        )
    return Region(
        layer_name=layer.name,
        key=key,
        fixed=fixed,
        layer_shape=shape,
        shape=rshape,
        description=what,
        tiles=tiles,
        slice_axis=slice_axis,
    )


#: the default level is the finest whose larger side is at most this
DEFAULT_MAX_SIDE = 4096


def level_shapes(layer: Any) -> list[tuple[int, ...]]:
    """Spatial shape (no RGB axis) of every level of a multiscale layer."""
    return [tuple(int(s) for s in d.shape[: layer.ndim]) for d in layer.data]


def default_level(layer: Any, max_side: int = DEFAULT_MAX_SIDE) -> int:
    """The finest level whose in-plane sides are all ≤ ``max_side`` (else the coarsest)."""
    shapes = level_shapes(layer)
    for i, shp in enumerate(shapes):
        if max(shp[-2:]) <= max_side:
            return i
    return len(shapes) - 1


def _factor_text(factors: tuple[float, ...]) -> str:
    vals = [round(float(f), 3) for f in factors[-2:]]
    if len(set(vals)) == 1:
        return f"{vals[0]:g}×"
    return " × ".join(f"{v:g}" for v in vals)


def _level_region(
    layer: Any,
    shape: tuple[int, ...],
    explained: list[int],
    fixed: dict[int, int],
    level: int | None,
    visible: np.ndarray | None,
    dims: Any,
) -> dict[str, Any]:
    """Key, shape and placement of a multiscale region at ``level`` (see `find_region`)."""
    shapes = level_shapes(layer)
    lvl = default_level(layer) if level is None else int(level)
    if not 0 <= lvl < len(shapes):
        return {"problem": f"'{layer.name}' has no level {lvl} (0..{len(shapes) - 1})"}
    lshape = shapes[lvl]
    f = tuple(float(shape[a]) / float(lshape[a]) for a in range(len(shape)))
    start = [0] * len(shape)
    stop = list(lshape)
    fixed_l: dict[int, int] = {}
    for a, idx in fixed.items():
        fixed_l[a] = min(max(int(np.floor(idx / f[a] + 0.5)), 0), lshape[a] - 1)
        start[a], stop[a] = fixed_l[a], fixed_l[a] + 1
    use_visible = visible is not None and len(explained) == 2
    if use_visible:
        box = _visible_box(layer, visible, explained, dims)
        if box is None:
            use_visible = False
        else:
            for a, (lo, hi) in zip(explained, box):
                lo_l = int(np.floor(lo / f[a] + 0.5))
                hi_l = int(np.floor(hi / f[a] + 0.5)) + 1
                start[a] = min(max(lo_l, 0), lshape[a])
                stop[a] = min(max(hi_l, 0), lshape[a])
            if any(stop[a] - start[a] < 1 for a in explained):
                return {
                    "problem": f"no part of '{layer.name}' is in view: "
                    "pan onto the image or explain the whole slide"
                }
    key = tuple(fixed_l[a] if a in fixed_l else slice(start[a], stop[a]) for a in range(len(shape)))
    return {
        "level": lvl,
        "level_shape": lshape,
        "downsample": f,
        "origin": tuple(start),
        "key": key,
        "fixed": fixed_l,
        "shape": tuple(stop[a] - start[a] for a in explained),
        "result_shape": tuple(stop[a] - start[a] for a in range(len(shape))),
        "visible": use_visible,
    }


def _visible_box(
    layer: Any, corners: np.ndarray, explained: list[int], dims: Any
) -> list[tuple[float, float]] | None:
    """Level-0 data bounds (min, max) on ``explained`` of the canvas corners (world)."""
    corners = np.asarray(corners, dtype=float)
    if corners.ndim != 2 or corners.shape[0] != 2 or not np.all(np.isfinite(corners)):
        return None
    wnd = corners.shape[1]
    base = np.asarray(dims.point, dtype=float) if dims is not None else np.zeros(wnd)
    if base.shape[0] != wnd:
        return None
    offset = wnd - len(layer.data[0].shape[: layer.ndim])
    waxes = [a + offset for a in explained]
    pts = []
    for i in (0, 1):
        for j in (0, 1):
            p = base.copy()
            p[waxes[0]] = corners[i, waxes[0]]
            p[waxes[1]] = corners[j, waxes[1]]
            pts.append(np.asarray(layer.world_to_data(p), dtype=float))
    data = np.stack(pts)
    return [(float(data[:, a].min()), float(data[:, a].max())) for a in explained]
