"""MR-like synthetic volumes with a planted, known lesion.

Mirrors `napari_medcam.data.synthetic`: both classes hold one region of the same
size distribution (2-8 % of the volume) at a random place. In a lesion volume the
region is a solid, heterogeneous, bright mass with an irregular outline; in a
normal volume the same region holds a loose cluster of small bright nodules (like
a group of vessels seen end-on), with about the same amount of bright signal.
Both classes have the same tissue texture and the same density of scattered small
bright and dark spots, so that mean intensity and histogram are alike: a solid
mass larger than any nodule is the only evidence a classifier can use.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

VOLUME_SIZE = 32

_TISSUE = 0.42  # mean tissue intensity (volumes are float32 in [0, 1])
_BRIGHT = 0.80  # lesion and nodule intensity


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Band-limited noise in [0, 1]: a coarse random grid, linearly upsampled on every axis."""
    coarse = rng.random(tuple(int(n / scale) + 2 for n in shape))
    out = coarse
    for axis, n in enumerate(shape):
        pos = np.arange(n) / scale
        i0 = np.floor(pos).astype(int)
        f = (pos - i0).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        out = np.take(out, i0, axis=axis) * (1 - f) + np.take(out, i0 + 1, axis=axis) * f
    return out


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> tuple[tuple, np.ndarray]:
    """(window, distance/radius inside the window) around ``centre``; the window is clipped."""
    r = int(np.ceil(radius)) + 1
    window = tuple(slice(max(0, int(c) - r), min(n, int(c) + r + 2)) for c, n in zip(centre, shape))
    grids = np.meshgrid(
        *[np.arange(w.start, w.stop, dtype=float) for w in window], indexing="ij", sparse=True
    )
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    return window, dist / radius


def _lesion_region(
    rng: np.random.Generator, size: int, fraction: float, reference: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """An irregular, smooth, connected blob of about ``fraction`` of a ``reference``³
    volume (default: the volume itself, ``size``³).

    Returns (bool mask, centre, radius); the outline wobbles by up to ±40 % of the radius.
    """
    shape = (size,) * 3
    voxels = fraction * (size if reference is None else reference) ** 3
    radius = (3 * voxels / (4 * np.pi)) ** (1 / 3)
    margin = radius * 0.8 + 1
    centre = rng.uniform(margin, size - margin, 3)
    grids = np.meshgrid(*[np.arange(size, dtype=float)] * 3, indexing="ij", sparse=True)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    wobble = 1 + 0.8 * (_smooth_noise(rng, shape, max(2.5, radius * 0.6)) - 0.5)
    centre_voxel = tuple(int(round(v)) for v in centre)

    def blob(r: float) -> np.ndarray:
        # the centre's connected component (the wobble can pinch off a sliver)
        lab, _ = ndimage.label((dist <= r * wobble) | (dist <= r * 0.5))
        return lab == lab[centre_voxel]

    inside = blob(radius)
    # one correction of the radius brings the volume close to the asked fraction
    radius *= (voxels / max(1, inside.sum())) ** (1 / 3)
    inside = blob(radius)
    return inside, centre, radius


def _stamp_spot(
    vol: np.ndarray, rng: np.random.Generator, centre: np.ndarray, radius: float, level: float
) -> tuple[tuple, np.ndarray]:
    """Blend one small anti-aliased sphere of intensity ``level`` into ``vol``.

    Returns its window and the distance/radius map inside it (< 1: the footprint).
    """
    window, rel = _ball(vol.shape, centre, radius)
    alpha = np.clip((1 - rel) * radius + 0.5, 0.0, 1.0)
    patch = vol[window]
    patch[:] = patch * (1 - alpha) + (level + rng.normal(0, 0.02)) * alpha
    return window, rel


def synthetic_volume(
    seed: int = 0,
    label: int = 1,
    size: int = VOLUME_SIZE,
    *,
    lesion_fraction: tuple[float, float] = (0.02, 0.08),
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one MR-like volume and its true lesion.

    Args:
        seed: random seed; the same seed (and label) always gives the same volume.
        label: 1 plants a lesion (a solid, bright, irregular mass), 0 does not (the
            same region holds a loose cluster of small nodules instead).
        size: side of the cubic volume in voxels (at least 24).
        lesion_fraction: range of the region's volume as a fraction of a 32³ volume
            at this ``scale`` (of the whole volume by default).
        scale: voxels per voxel of the 32³ reference anatomy. Default ``size / 32``:
            the same anatomy sampled more finely. 1 keeps the voxel size of 32³
            volumes (the demo classifier's), so a larger ``size`` shows more tissue
            around a lesion of the usual size — a larger field of view.

    Returns:
        (volume, lesion): float32 D×H×W in [0, 1], and bool D×H×W marking the lesion
        (all False for label 0).
    """
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (normal) or 1 (lesion), got {label!r}")
    if size < 24:
        raise ValueError(f"size must be at least 24 voxels, got {size}")
    if scale is not None and not 0 < scale <= size / 16:
        raise ValueError(f"scale must be in (0, size / 16] for the lesion to fit, got {scale}")
    lo, hi = lesion_fraction
    if not 0 < lo <= hi < 0.3:
        raise ValueError(
            f"lesion_fraction must satisfy 0 < low ≤ high < 0.3, got {lesion_fraction}"
        )
    rng = np.random.default_rng([int(seed), int(label), 3])
    shape = (size,) * 3
    unit = size / VOLUME_SIZE if scale is None else float(scale)  # lengths: voxels of 32³

    texture = _smooth_noise(rng, shape, 8 * unit) * 0.6 + _smooth_noise(rng, shape, 3 * unit) * 0.4
    vol = _TISSUE + 0.22 * (texture - 0.5)
    # a darker, smoothly varying band (a fold / ventricle-like structure) in both classes
    fold = _smooth_noise(rng, shape, 12 * unit)
    vol -= 0.12 * np.clip((fold - 0.62) * 6, 0, 1)

    reference = None if scale is None else VOLUME_SIZE * unit
    region, centre, radius = _lesion_region(rng, size, rng.uniform(lo, hi), reference)
    if label == 1:
        inner = _smooth_noise(rng, shape, 2.5 * unit)
        level = _BRIGHT - 0.10 + 0.20 * inner
        # soft edge: one voxel of blending outside the mask
        edge = ndimage.gaussian_filter(region.astype(float), 0.7)
        alpha = np.maximum(region, np.clip(edge * 1.6, 0, 1))
        vol = vol * (1 - alpha) + level * alpha
        lesion = region
    else:
        # a loose cluster of nodules spread over a zone about twice the region's
        # volume, adding up to as many bright voxels as a lesion has (tested)
        zone = ndimage.binary_dilation(region, iterations=max(1, round(0.3 * radius)))
        coords = np.argwhere(zone)
        footprint = np.zeros(shape, bool)
        wanted = 0.9 * region.sum()  # nodule rims are bright too: 0.9 matches a lesion
        for _ in range(1000):
            if footprint.sum() >= wanted:
                break
            c = coords[rng.integers(len(coords))] + rng.uniform(-0.5, 0.5, 3)
            window, rel = _stamp_spot(
                vol, rng, c, rng.uniform(1.3, 2.1) * unit, _BRIGHT + rng.uniform(-0.06, 0.06)
            )
            footprint[window] |= rel < 1
        lesion = np.zeros(shape, bool)

    # scattered small bright (vessels) and dark (calcification-free cysts) spots, both classes
    n_spots = int(rng.uniform(0.8, 1.2) * 14 * (size / VOLUME_SIZE) ** 3)
    for _ in range(n_spots):
        c = rng.uniform(0, size, 3)
        if region[tuple(np.minimum(c.astype(int), size - 1))]:
            continue
        bright = rng.random() < 0.6
        level = _BRIGHT + rng.uniform(-0.08, 0.04) if bright else 0.15 + rng.uniform(0, 0.08)
        _stamp_spot(vol, rng, c, rng.uniform(1.0, 1.9) * unit, level)
    vol += rng.normal(0, 0.025, shape)
    return np.clip(vol, 0, 1).astype(np.float32), lesion
