"""H&E-like synthetic tissue tiles with a planted, known piece of evidence.

The positive class holds one cluster of enlarged, dark, irregular nuclei; the
negative class holds a cluster of the same size made of small regular nuclei (an
inflammatory aggregate), and both have the same density of scattered nuclei, so
that stain amount and layout are alike: the lesion's nuclei (size, darkness,
shape) are the only evidence a classifier can use.
"""

from __future__ import annotations

import numpy as np

TILE_SIZE = 224

_STROMA = np.array([236.0, 178.0, 206.0])  # eosin pink
_STROMA_DARK = np.array([205.0, 120.0, 170.0])
_NUCLEUS = np.array([120.0, 72.0, 160.0])  # haematoxylin purple
_NUCLEUS_DARK = np.array([62.0, 28.0, 105.0])


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Band-limited noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    n = size // scale + 2
    coarse = rng.random((n, n))
    pos = np.arange(size) / scale
    i0 = np.floor(pos).astype(int)
    f = pos - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _blob(rng: np.random.Generator, size: int, area_fraction: float) -> np.ndarray:
    """An irregular, smooth, connected region of about `area_fraction` of the tile."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    radius = np.sqrt(area_fraction * size * size / np.pi)
    margin = radius * 0.6
    cy, cx = rng.uniform(margin, size - margin, 2)
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.05, 0.18) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = np.hypot(yy - cy, xx - cx) <= radius * wobble
    return inside


def _stamp_nucleus(
    img: np.ndarray,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    radius: float,
    colour: np.ndarray,
    irregular: float,
) -> np.ndarray:
    """Paint one (possibly irregular) nucleus; return its footprint."""
    size = img.shape[0]
    r = int(np.ceil(radius * (1 + irregular) + 2))
    y0, y1 = max(0, int(cy) - r), min(size, int(cy) + r + 1)
    x0, x1 = max(0, int(cx) - r), min(size, int(cx) + r + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    theta = np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 2 * np.pi)
    elong = rng.uniform(1.0, 1.0 + irregular)
    rr = np.hypot((yy - cy) * elong, (xx - cx) / elong)
    edge = radius * (1 + irregular * 0.5 * np.sin(3 * theta + rng.uniform(0, 6.3)))
    alpha = np.clip(edge - rr + 0.5, 0.0, 1.0)[..., None]  # anti-aliased disc
    speckle = rng.normal(0, 6, alpha.shape[:2] + (3,))
    patch = img[y0:y1, x0:x1]
    patch[:] = patch * (1 - alpha) + (colour + speckle) * alpha
    footprint = np.zeros(img.shape[:2], bool)
    footprint[y0:y1, x0:x1] = alpha[..., 0] > 0.5
    return footprint


def synthetic_tile(
    seed: int = 0,
    label: int = 1,
    size: int = TILE_SIZE,
    *,
    evidence_fraction: tuple[float, float] = (0.05, 0.15),
    contrast: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one tissue tile and its true evidence.

    Args:
        seed: random seed; the same seed always gives the same tile.
        label: 1 plants a cluster of enlarged dark nuclei (the evidence), 0 does not.
        size: side of the square tile in pixels.
        evidence_fraction: range of the cluster's area as a fraction of the tile.
        contrast: 1.0 = typical lesion; lower values give fainter, smaller nuclei
            (harder cases, used by the evaluation).

    Returns:
        (image, evidence): uint8 H×W×3 RGB, and bool H×W marking the planted cluster
        (all False for label 0).
    """
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (normal) or 1 (lesion), got {label!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng([int(seed), int(label)])

    texture = _smooth_noise(rng, size, 12) * 0.6 + _smooth_noise(rng, size, 4) * 0.4
    fibres = _smooth_noise(rng, size, 24)
    img = _STROMA[None, None] * (1 - texture[..., None] * 0.35) + _STROMA_DARK[None, None] * (
        texture[..., None] * 0.35
    )
    img = img + (fibres[..., None] - 0.5) * 18
    # a few pale lumen/vessel holes in both classes
    for _ in range(rng.integers(0, 3)):
        hole = _blob(rng, size, rng.uniform(0.004, 0.015))
        img[hole] = img[hole] * 0.3 + np.array([250.0, 242.0, 246.0]) * 0.7

    evidence = np.zeros((size, size), bool)
    # Both classes hold one dense cluster of the same size distribution: the lesion
    # (enlarged, dark, irregular nuclei) or, for normal tissue, an inflammatory
    # aggregate of small regular nuclei. Stain amount and layout are thus alike;
    # only the nuclei's size, darkness and shape tell the classes apart.
    region = _blob(rng, size, rng.uniform(*evidence_fraction))
    ys, xs = np.nonzero(region)
    if label == 1:
        radius = 4.5 * (0.7 + 0.3 * contrast) * size / TILE_SIZE
        colour, irregular = _NUCLEUS_DARK * contrast + _NUCLEUS * (1 - contrast), 0.45
    else:
        radius, colour, irregular = 2.4 * size / TILE_SIZE, _NUCLEUS, 0.15
    n_cluster = max(3, int(region.sum() * 0.55 / (np.pi * radius * radius)))
    for i in rng.permutation(len(ys))[:n_cluster]:
        fp = _stamp_nucleus(
            img, rng, ys[i], xs[i], radius * rng.uniform(0.8, 1.25), colour, irregular
        )
        if label == 1:
            evidence |= fp
    if label == 1:
        evidence |= region
    # scattered small nuclei, same density in both classes
    small_r = 2.2 * size / TILE_SIZE
    for _ in range(int(rng.uniform(0.04, 0.06) * size * size / (np.pi * small_r**2))):
        cy, cx = rng.uniform(0, size, 2)
        if region[int(cy), int(cx)]:
            continue
        _stamp_nucleus(img, rng, cy, cx, small_r * rng.uniform(0.75, 1.3), _NUCLEUS, 0.15)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), evidence
