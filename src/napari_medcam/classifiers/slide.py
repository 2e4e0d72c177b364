"""`SlideClassifier`: a multiple-instance (MIL) classifier of whole slides.

A slide is diagnosed in two stages: a frozen tile ``encoder`` turns every tissue tile
into an embedding, and an ``aggregator`` turns the bag of embeddings into one slide
label (and, for attention MIL, a weight per tile). Med-CAM's question at slide level —
which tiles keep the diagnosis on their own — is answered on the embeddings
(`napari_medcam.engine.mil`), so everything needed to make them lives here, once: the
tile size, the pyramid level or µm/px the tiles are read at, the normalisation.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medcam.classifiers.card import nearest_mpp_level
from napari_medcam.classifiers.classes import class_index
from napari_medcam.classifiers.fingerprint import module_fingerprint
from napari_medcam.classifiers.prepare import resize

MIN_TILE = 16


def _accepts_coords(aggregator: nn.Module) -> bool:
    """Whether ``aggregator(bag, coords)`` is a valid call (a second parameter)."""
    try:
        params = list(inspect.signature(aggregator.forward).parameters.values())
    except (TypeError, ValueError):  # a TorchScript module has no Python signature
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.name == "coords" for p in params)


def split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An aggregator's output → (logits (1, K), attention (N,) or None).

    Accepted: a logits tensor; a (logits, attention) tuple; a dict with "logits" and
    optionally "attention".
    """
    attention = None
    if isinstance(out, dict):
        logits, attention = out.get("logits"), out.get("attention")
    elif isinstance(out, (tuple, list)) and out:
        logits = out[0]
        attention = out[1] if len(out) > 1 else None
    else:
        logits = out
    if not isinstance(logits, torch.Tensor):
        raise ValueError(
            "the aggregator must return logits, (logits, attention) or "
            f"{{'logits': ..., 'attention': ...}}, got {type(out).__name__}"
        )
    if logits.ndim == 1:
        logits = logits[None]
    if attention is not None and not isinstance(attention, torch.Tensor):
        attention = None
    return logits, attention


class SlideClassifier:
    """Wrap a tile encoder and a MIL aggregator for slide-level explanation.

    ``encoder``: (B, C, h, w) normalised tiles → (B, D) embeddings. ``aggregator``:
    an (N, D) bag — and, when its ``forward`` takes a second argument, the (N, 2)
    (row, column) positions of the tiles on the slide's tile grid — → logits (1, K),
    optionally with attention (N,) (see `split_output`). ``tile_size``: the side of a
    tile in slide pixels at ``level`` (or at ``mpp`` µm/px; one of the two): the front
    end reads that level and hands the engine its array; tiles are resized to
    ``input_size`` (default: the tile size) for the encoder. Tiles are prepared as for
    a tile classifier: integers scaled by their dtype's range, then ``(x - mean) / std``.
    Both modules are put in eval mode and frozen.
    """

    def __init__(
        self,
        encoder: nn.Module,
        aggregator: nn.Module,
        tile_size: int = 224,
        level: int | None = 0,
        mpp: float | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        class_names: Sequence[str] | None = None,
        name: str | None = None,
        *,
        input_size: int | None = None,
    ) -> None:
        for what, m in (("encoder", encoder), ("aggregator", aggregator)):
            if not isinstance(m, nn.Module):
                raise ValueError(f"{what} must be a torch.nn.Module, got {type(m).__name__}")
        if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)):
            raise ValueError(f"tile_size must be an integer number of pixels, got {tile_size!r}")
        if tile_size < MIN_TILE:
            raise ValueError(f"tile_size must be at least {MIN_TILE} pixels, got {tile_size}")
        if mpp is not None:
            if not isinstance(mpp, (int, float)) or mpp <= 0:
                raise ValueError(f"mpp (µm per pixel) must be a positive number, got {mpp!r}")
            level = None
        elif level is None or isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ValueError(f"give a pyramid level ≥ 0 or mpp (µm/px), got level={level!r}")
        if len(mean) != len(std) or not len(mean) or any(s <= 0 for s in std):
            raise ValueError("mean and std need one value per channel, std positive")
        self.encoder, self.aggregator = encoder.eval(), aggregator.eval()
        for p in [*encoder.parameters(), *aggregator.parameters()]:
            p.requires_grad_(False)
        self.tile_size, self.level, self.mpp = int(tile_size), level, mpp
        self.input_size = int(input_size or tile_size)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self.name = name or f"{type(encoder).__name__}+{type(aggregator).__name__}"
        self.takes_coords = _accepts_coords(aggregator)
        self.embedding_dim = self._probe_encoder()
        n_out = self._probe_aggregator()
        names = [f"class {i}" for i in range(n_out)] if class_names is None else class_names
        if len(names) != n_out:
            raise ValueError(f"{len(names)} class names given but the aggregator outputs {n_out}")
        self.class_names = [str(c) for c in names]

    # ------------------------------------------------------------------ probes
    def _probe_encoder(self) -> int:
        x = torch.zeros((2, self.channels, self.input_size, self.input_size))
        try:
            with torch.no_grad():
                z = self.encoder(x)
        except Exception as err:  # the model's own message is the useful part
            raise ValueError(
                f"the encoder does not accept a {tuple(x.shape)} batch: {err}"
            ) from err
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != 2:
            raise ValueError("the encoder must return embeddings of shape (batch, D)")
        return int(z.shape[1])

    def _probe_aggregator(self) -> int:
        bag = torch.zeros((3, self.embedding_dim))
        coords = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        try:
            logits, attention = self.aggregate(bag, coords)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(
                f"the aggregator does not accept a (3, {self.embedding_dim}) bag: {err}"
            ) from err
        if logits.ndim != 2 or logits.shape[0] != 1 or logits.shape[1] < 2:
            raise ValueError(
                f"the aggregator must return logits (1, K ≥ 2), got {tuple(logits.shape)}"
            )
        if attention is not None and attention.numel() != 3:
            raise ValueError("the aggregator's attention must have one value per tile")
        return int(logits.shape[1])

    # ------------------------------------------------------------------ facts
    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        where = f"level={self.level}" if self.mpp is None else f"mpp={self.mpp}"
        return (
            f"SlideClassifier({self.name!r}, tile_size={self.tile_size}, {where}, "
            f"D={self.embedding_dim}, classes={self.class_names})"
        )

    def class_index(self, target: int | str | None) -> int | None:
        """A class index or name → index; None stays None (= the slide's predicted class)."""
        return class_index(target, self.class_names)

    def level_among(self, level_mpp: Sequence[float | None]) -> int:
        """The pyramid level this classifier reads, of a slide whose levels have these
        µm/px: its ``level``, or the level nearest its ``mpp`` (by ratio). ValueError
        when the slide has no such level or records no pixel size."""
        n = len(level_mpp)
        if self.mpp is None:
            if self.level is None or self.level >= n:
                raise ValueError(
                    f"the classifier reads pyramid level {self.level}; this image has {n} level(s)"
                )
            return self.level
        if not level_mpp or any(not m for m in level_mpp):
            raise ValueError(
                f"the image records no pixel size and the classifier reads tiles at {self.mpp} "
                "µm/px: choose the level yourself"
            )
        return nearest_mpp_level([float(m) for m in level_mpp if m], self.mpp)

    def encoder_fingerprint(self) -> str:
        """What the embeddings depend on: the encoder's weights and the tile preparation."""
        parts = {
            "weights": module_fingerprint(self.encoder),
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ the two stages
    def prepare(self, tiles: np.ndarray) -> torch.Tensor:
        """(B, h, w, C) tiles (uint8/uint16, or float in [0, 1]) → normalised (B, C, s, s)."""
        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[-1] not in (self.channels, 4):
            raise ValueError(f"tiles must be (B, h, w, {self.channels}), got {tiles.shape}")
        if tiles.shape[-1] == 4 and self.channels == 3:
            tiles = tiles[..., :3]
        if np.issubdtype(tiles.dtype, np.integer):
            unit = tiles.astype(np.float32) / float(np.iinfo(tiles.dtype).max)
        else:
            unit = tiles.astype(np.float32)
            if not np.isfinite(unit).all() or unit.min() < 0 or unit.max() > 1:
                raise ValueError("float tiles must be finite and in [0, 1]")
        x = torch.from_numpy(np.ascontiguousarray(unit)).permute(0, 3, 1, 2)
        x = resize(x, (self.input_size, self.input_size))
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def embed(self, tiles: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """Embeddings (B, D) float32 of a batch of tiles (`prepare`d, then the encoder)."""
        with torch.no_grad():
            z = self.encoder(self.prepare(tiles).to(device))
        return z.float().cpu().numpy()

    def aggregate(
        self, bag: torch.Tensor, coords: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (1, K), attention (N,) or None) of one bag (N, D) at grid ``coords``."""
        if self.takes_coords:
            if coords is None:
                raise ValueError("this aggregator needs the tiles' (N, 2) grid coordinates")
            out = self.aggregator(bag, coords.to(bag.dtype))
        else:
            out = self.aggregator(bag)
        logits, attention = split_output(out)
        return logits, None if attention is None else attention.reshape(-1)

    def to(self, device: torch.device | str) -> SlideClassifier:
        self.encoder.to(device)
        self.aggregator.to(device)
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.encoder.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
