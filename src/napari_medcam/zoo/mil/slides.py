"""Synthetic slides whose positive tiles are known: grids of `synthetic_tile` tiles.

A slide is an irregular piece of tissue on glass, cut into 128-px tiles. Three kinds of
tissue tile, all from `synthetic_tile`:

- *normal*: ``label=0`` (stroma with an inflammatory aggregate of small regular nuclei);
- *mimic* (negative): ``label=1`` at a contrast of 0.1–0.3 — a few slightly enlarged,
  faint nuclei that the tile zoo's classifier calls normal (reactive atypia); 0–6 of
  them scattered on any slide;
- *positive*: ``label=1`` at a contrast of 0.5–0.9 (enlarged, dark, irregular nuclei,
  weak to clear); 1–8 of them, in one or two contiguous clusters, on a positive slide.

A slide is positive when it holds a positive tile. The tiles come from a pool per split
(`TilePool`), so that thousands of slides cost a few thousand tiles; a slide never uses
a pool tile twice. `hard_slide` draws from the same pool a slide whose evidence is weak
and spread: only the weakest positives, several of them, among many of the strongest
mimics (docs/zoo.md, *Hard slides*).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from napari_medcam.data.synthetic import synthetic_tile

TILE = 128
#: first tile seed of each split's pool (the encoder, hne-modulelist, was trained on
#: seeds 100 000+; these pools never meet it or each other)
MIL_SEED0 = {"train": 300_000, "tune": 340_000, "eval": 350_000}
#: (normal, mimic, positive) tiles in each split's pool, in that order
POOL_SIZE = {"train": (1400, 300, 400), "tune": (450, 100, 120), "eval": (800, 180, 220)}
NORMAL, MIMIC, POSITIVE = 0, 1, 2
CONTRAST = {MIMIC: (0.1, 0.3), POSITIVE: (0.5, 0.9)}
GRID = (8, 13)  # rows and columns of a slide are drawn from this range
POSITIVES = (1, 8)  # positive tiles on a positive slide
MIMICS = (0, 6)  # mimic tiles on any slide
HARD_POSITIVES, HARD_MIMICS = (3, 8), (8, 16)  # per hard slide
HARD_SHARE = 0.25  # hard slides: the weakest quarter of positives, the strongest of mimics
GLASS = 242.0


@dataclass(frozen=True)
class TilePool:
    """A split's tiles (M, 128, 128, 3) uint8 and their kinds (M,): NORMAL, MIMIC, POSITIVE."""

    split: str
    tiles: np.ndarray
    kinds: np.ndarray


def pool_kind(split: str, j: int) -> int:
    n_normal, n_mimic, _ = POOL_SIZE[split]
    return NORMAL if j < n_normal else MIMIC if j < n_normal + n_mimic else POSITIVE


def pool_tile(split: str, j: int) -> np.ndarray:
    """Tile ``j`` of ``split``'s pool alone (seed ``MIL_SEED0[split] + j``; the contrast
    of a mimic or positive tile is fixed by ``j`` within its kind's range)."""
    return _pool_tile_and_evidence(split, j)[0]


def pool_evidence(split: str, j: int) -> np.ndarray:
    """The planted evidence (128×128 bool) of pool tile ``j``: the cluster of enlarged
    nuclei of a positive tile (faint on a mimic); all False on a normal tile."""
    return _pool_tile_and_evidence(split, j)[1]


def _contrast_rank(j: int) -> float:
    """Where pool tile ``j``'s contrast lies in its kind's range (0: lowest, 1: highest)."""
    return ((j * 7919) % 101) / 100


def _pool_tile_and_evidence(split: str, j: int) -> tuple[np.ndarray, np.ndarray]:
    kind = pool_kind(split, j)
    if kind == NORMAL:
        return synthetic_tile(MIL_SEED0[split] + j, 0, TILE)
    lo, hi = CONTRAST[kind]
    contrast = lo + (hi - lo) * _contrast_rank(j)
    return synthetic_tile(MIL_SEED0[split] + j, 1, TILE, contrast=contrast)


@lru_cache(maxsize=3)
def tile_pool(split: str) -> TilePool:
    """The pool of ``split`` (deterministic: `pool_tile` for every index)."""
    if split not in MIL_SEED0:
        raise ValueError(f"split must be one of {sorted(MIL_SEED0)}, got {split!r}")
    n = sum(POOL_SIZE[split])
    tiles = np.stack([pool_tile(split, j) for j in range(n)])
    return TilePool(split, tiles, np.asarray([pool_kind(split, j) for j in range(n)]))


@dataclass(frozen=True)
class SyntheticSlide:
    """One slide: ``layout`` (rows, cols) the pool index of each tile (−1: glass),
    ``positive`` and ``mimic`` (rows, cols) its truly positive and its mimic tiles,
    ``label`` 1 if it has a positive tile."""

    split: str
    index: int
    layout: np.ndarray
    positive: np.ndarray
    mimic: np.ndarray
    label: int

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.layout.shape

    def image(self, pool: TilePool | None = None) -> np.ndarray:
        """The slide as an H×W×3 uint8 array (glass: light grey with a little noise);
        without ``pool``, only the slide's own tiles are generated."""
        rows, cols = self.layout.shape
        rng = np.random.default_rng([self.index, 11])
        out = np.clip(rng.normal(GLASS, 2.0, (rows * TILE, cols * TILE, 3)), 0, 255)
        out = out.astype(np.uint8)
        for (r, c), j in np.ndenumerate(self.layout):
            if j >= 0:
                tile = pool.tiles[j] if pool is not None else pool_tile(self.split, int(j))
                out[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
        return out

    def bag(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings (N, D), grid (N, 2), positive (N,)) of the tissue tiles, row by row
        (the order in which the engine cuts a slide), from the pool's ``embeddings``."""
        grid = np.argwhere(self.layout >= 0)
        return (
            embeddings[self.layout[grid[:, 0], grid[:, 1]]],
            grid,
            self.positive[grid[:, 0], grid[:, 1]],
        )


def _tissue(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """An irregular blob of tissue covering most of the grid."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = (rows - 1) / 2 + rng.uniform(-1, 1), (cols - 1) / 2 + rng.uniform(-1, 1)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6.3))
    r = np.hypot((yy - cy) / (rows / 2), (xx - cx) / (cols / 2))
    return r <= 1.05 * wobble


def _clusters(rng: np.random.Generator, tissue: np.ndarray, k: int) -> np.ndarray:
    """``k`` positive tiles in one or two clusters grown by random steps on the tissue."""
    out = np.zeros_like(tissue)
    cells = np.argwhere(tissue)
    n_clusters = 1 if k < 4 or rng.random() < 0.5 else 2
    sizes = [k] if n_clusters == 1 else [k // 2, k - k // 2]
    for size in sizes:
        frontier = [tuple(cells[rng.integers(len(cells))])]
        placed = 0
        while placed < size and frontier:
            r, c = frontier.pop(rng.integers(len(frontier)))
            if not out[r, c]:
                out[r, c] = True
                placed += 1
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                rr, cc = r + dr, c + dc
                inside = 0 <= rr < tissue.shape[0] and 0 <= cc < tissue.shape[1]
                if inside and tissue[rr, cc] and not out[rr, cc]:
                    frontier.append((rr, cc))
    return out


def _pick(
    rng: np.random.Generator, split: str, kind: int, n: int, hard: bool = False
) -> np.ndarray:
    """``n`` distinct pool indices of ``kind`` (``hard``: only the weakest positives and
    the strongest mimics, `HARD_SHARE` of each)."""
    sizes = POOL_SIZE[split]
    start = sum(sizes[:kind])
    pick = np.arange(start, start + sizes[kind])
    if hard and kind != NORMAL:
        rank = np.asarray([_contrast_rank(int(j)) for j in pick])
        pick = pick[rank <= HARD_SHARE if kind == POSITIVE else rank >= 1 - HARD_SHARE]
    return rng.choice(pick, n, replace=False)


def synthetic_slide(split: str, index: int, label: int | None = None) -> SyntheticSlide:
    """Slide ``index`` of ``split``: positive when ``index`` is even (or as ``label``)."""
    return _slide(split, index, label, hard=False)


def hard_slide(split: str, index: int, label: int | None = None) -> SyntheticSlide:
    """Hard slide ``index`` of ``split`` (module doc): 3–8 of the weakest positive tiles
    when positive, 8–16 of the strongest mimics; its own seeds."""
    return _slide(split, index, label, hard=True)


def _slide(split: str, index: int, label: int | None, hard: bool) -> SyntheticSlide:
    if split not in MIL_SEED0:
        raise ValueError(f"split must be one of {sorted(MIL_SEED0)}, got {split!r}")
    label = int(index % 2 == 0) if label is None else int(label)
    seeds = [MIL_SEED0[split], index, label, 2] if hard else [MIL_SEED0[split], index, label]
    positives, mimics = (HARD_POSITIVES, HARD_MIMICS) if hard else (POSITIVES, MIMICS)
    rng = np.random.default_rng(seeds)
    rows, cols = (int(rng.integers(GRID[0], GRID[1] + 1)) for _ in range(2))
    tissue = _tissue(rng, rows, cols)
    k = int(rng.integers(positives[0], positives[1] + 1)) if label else 0
    positive = _clusters(rng, tissue, k) if k else np.zeros_like(tissue)
    free = np.argwhere(tissue & ~positive)
    m = min(len(free), int(rng.integers(mimics[0], mimics[1] + 1)))
    mimic = np.zeros_like(tissue)
    picked = free[rng.choice(len(free), m, replace=False)]
    mimic[picked[:, 0], picked[:, 1]] = True
    layout = np.full((rows, cols), -1, np.int64)
    for kind, where in (
        (NORMAL, tissue & ~positive & ~mimic),
        (MIMIC, mimic),
        (POSITIVE, positive),
    ):
        layout[where] = _pick(rng, split, kind, int(where.sum()), hard)
    return SyntheticSlide(split, index, layout, positive, mimic, int(positive.any()))
