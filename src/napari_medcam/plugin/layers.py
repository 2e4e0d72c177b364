"""Result layers aligned with the image region they explain.

Pure helpers around napari layers: no widgets here. Given a `Region`
(`napari_medcam.plugin.region`), read its pixels, place a result computed on it
over it in the world (a pyramid level's downsample and origin included), put the
result back into a full-shape array, and take the region's part of a mask again.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medcam.plugin.lazy import as_dask
from napari_medcam.plugin.region import Region, image_data

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: attributes that place a layer in the world; copied from the image to its results
TRANSFORM_ATTRS = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")

#: key of our facts in a result layer's ``metadata``
META_KEY = "medcam"


def region_transform_kwargs(layer: Any, region: Region) -> dict[str, Any]:
    """Layer keyword arguments placing a region-sized result over ``region`` in the world.

    For a plain region (not a pyramid level) the image's own transforms. For a
    level region: scale = image scale × downsample and translate moved to the
    region's origin (``translate + R·Sh·S·(origin × downsample)``, which is
    ``translate + origin × downsample × scale`` without rotation or shear) —
    where napari draws that level; rotate, shear and affine are kept.
    """
    out = transform_kwargs(layer)
    if region.level is None:
        return out
    from napari.utils.transforms import CompositeAffine

    f = np.asarray(region.downsample, dtype=float)
    origin = np.asarray(region.origin, dtype=float)
    scale = np.asarray(layer.scale, dtype=float)
    linear = CompositeAffine(
        scale=scale,
        translate=np.zeros_like(scale),
        rotate=layer.rotate,
        shear=layer.shear,
        ndim=len(scale),
    ).linear_matrix
    out["scale"] = scale * f
    out["translate"] = np.asarray(layer.translate, dtype=float) + linear @ (origin * f)
    return out


def region_pixels(layer: Any, region: Region) -> Any:
    """The image data of ``region`` (channels last for RGB).

    A numpy array for a plain layer; for a pyramid level a lazy dask view of the
    region (nothing is read here: the engine reads it window by window, in the
    worker thread).
    """
    if region.level is not None:
        return as_dask(layer.data[region.level])[region.key]
    return np.asarray(image_data(layer)[region.key])


def region_of(data: Any, region: Region, copy: bool = True) -> Any:
    """The part of a full-shape (mask) array that ``region`` covers.

    A level region's result layer is the region itself (fixed axes of length 1).
    A NumPy result is copied unless ``copy`` is False (the user may go on painting
    on the layer while a worker reads it); lazy data (zarr, dask) stays lazy.
    """
    if not isinstance(data, np.ndarray):
        arr = as_dask(data)
        if region.level is None:
            return arr[region.key]
        return arr if tuple(arr.shape) == tuple(region.shape) else arr.reshape(region.shape)
    part = data.reshape(region.shape) if region.level is not None else data[region.key]
    return np.array(part, copy=True) if copy else np.asarray(part)


def embed(region: Region, values: np.ndarray, dtype: Any) -> np.ndarray:
    """A full-shape array (the layer's spatial shape) with ``values`` in ``region``."""
    if region.level is not None:
        return np.asarray(values, dtype=dtype).reshape(region.layer_shape)
    out = np.zeros(region.layer_shape, dtype=dtype)
    out[region.key] = values
    return out


def embed_levels(region: Region, levels: list[Any]) -> list[Any]:
    """Multiscale levels of a region's (lazy) result, shaped like its layer: the fixed
    axes of a level region (length 1 in the result layer) added to every level."""
    if region.level is None or len(region.layer_shape) == len(region.shape):
        return list(levels)
    axes = tuple(sorted(region.fixed))
    return [_expand(lv, axes) for lv in levels]


def _expand(level: Any, axes: tuple[int, ...]) -> Any:
    for a in axes:
        level = level[(slice(None),) * a + (None,)]
    return level


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


def result_name(class_name: str, kind: str = "Med-CAM") -> str:
    """A short layer name, "Med-CAM: lesion" (the image is in the layer's metadata)."""
    return f"{kind}: {class_name}"


def own_metadata(role: str, source_name: str) -> dict[str, Any]:
    """Metadata marking a layer the plugin made (so it is never offered as input)."""
    return {META_KEY: {"role": role, "source_layer": source_name}}


def is_own_layer(layer: Any) -> bool:
    """Did napari-medcam make this layer (a result, soft map, Grad-CAM, tile map, twin)?"""
    meta = getattr(layer, "metadata", None)
    return isinstance(meta, dict) and META_KEY in meta


def microns_per_pixel(layer: Any, region: Region | None = None) -> float | None:
    """The size of one explained pixel in µm, when known: the slide's recorded µm/pixel
    (reader metadata ``mpp``) or the layer's scale in length units; None otherwise."""
    f = float(np.max(region.downsample)) if region is not None and region.level is not None else 1.0
    meta = getattr(layer, "metadata", None) or {}
    mpp = meta.get("mpp") if isinstance(meta, dict) else None
    if isinstance(mpp, (int, float)) and mpp > 0:
        return float(mpp) * f
    try:
        unit = layer.units[-1]
        um = float((1 * unit).to("micrometer").magnitude)
    except Exception:  # pixels, or no units: the size is not known
        return None
    return um * float(abs(layer.scale[-1])) * f
