"""The pixel evidence inside a slide's kept tiles, in napari, and saving a tile set
(for the slide-decision widget).

One Labels layer per kept tile, at the level read and placed over its tile: the pixels
that keep the *slide's* decision with the other kept tiles as they are
(`napari_medcam.engine.mil.explain_kept_pixels`). They are computed in a background
worker; `current_for` tells whether they may be saved with a tile set (made for exactly
those tiles, and not edited since). `save_tile_set` writes a set only when a sentence is
true of it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcam.engine.mil import SlideExplanation
from napari_medcam.io.slide_evidence import write_slide_evidence
from napari_medcam.plugin.slide_grid import (
    SLIDE_META_KEY,
    SlideJob,
    SlideOutcome,
    run_pixels,
    window_transform_kwargs,
)


class PixelEvidence:
    """Start, place and keep track of the pixel evidence of one tile set."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.pixels: list[Any] | None = None  # KeptTilePixels, for ``kept``
        self.kept: np.ndarray | None = None
        self._layers: list[tuple[Any, Any]] = []  # (weakref to layer, its mask)

    def start(
        self,
        image: Any,
        result: SlideExplanation,
        place: dict[str, Any],
        job: SlideJob,
        done: Callable[[str], None],
    ) -> Any:
        """Start the worker for ``result``'s kept tiles; ``done`` gets the status line."""
        from napari.qt.threading import thread_worker

        worker = thread_worker(run_pixels, start_thread=False)(image, result, place["clf"], job)
        worker.returned.connect(lambda out: done(self._on_done(out, result, place)))
        worker.errored.connect(lambda err: done(f"Pixel evidence failed: {err}"))
        worker.start()
        return worker

    def _on_done(self, out: Any, result: SlideExplanation, place: dict[str, Any]) -> str:
        if isinstance(out, SlideOutcome):
            return "Cancelled: no pixel evidence." if out.cancelled else f"No pixels: {out.error}"
        image = place["layer"]()
        if image is None or image not in self.viewer.layers:
            return "The slide layer was closed: the pixel evidence was not placed."
        self.clear()
        for px in out:
            r, c = (int(v) for v in result.grid[px.index])
            mask = (np.asarray(px.explanation.mask) > 0).astype(np.uint8)
            layer = self.viewer.add_labels(
                mask.copy(),
                name=f"slide evidence pixels: {result.target_name}, tile ({r}, {c})",
                opacity=0.7,
                metadata={SLIDE_META_KEY: {"tile": [r, c], "window": list(px.window)}},
                **window_transform_kwargs(image, place["downsample"], px.window[:2]),
            )
            self._layers.append((weakref.ref(layer), mask))
        self.pixels, self.kept = list(out), result.kept.copy()
        parts = [px.explanation.describe_mask().replace("image", "tile") for px in out]
        return f"Pixel evidence in {len(out)} tile(s): " + "; ".join(parts)

    def clear(self) -> None:
        """Forget the pixel evidence (its layers stay in the viewer, for the user)."""
        self.pixels, self.kept, self._layers = None, None, []

    def current_for(self, keep: np.ndarray) -> bool:
        """Were the pixels made for exactly ``keep``, and are their layers as made?"""
        if self.pixels is None or self.kept is None or not np.array_equal(self.kept, keep):
            return False
        for ref, mask in self._layers:
            layer = ref()
            if layer is None or layer not in self.viewer.layers:
                return False
            if not np.array_equal(np.asarray(layer.data) > 0, mask > 0):
                return False
        return True


def save_tile_set(
    path: str | Path,
    keep: np.ndarray,
    outside: int,
    described: SlideExplanation | None,
    place: dict[str, Any],
    pixels: PixelEvidence,
    overwrite: bool = False,
) -> tuple[list[Path], str]:
    """Write tiles ``keep`` (GeoJSON at ``path``, summary beside it) and say what was
    written; ValueError with the reason when the set shown cannot be saved as it is:
    painted cells off the tissue tiles (``outside``), no sentence true of it
    (``described`` None: edited and not checked), a path that is not a .geojson file in
    a folder. The pixel evidence goes with it when it was made for these tiles."""
    if outside:
        raise ValueError(
            f"{outside} painted cell(s) lie outside the slide's tissue tiles; erase them "
            "so that the saved tiles are the ones you see"
        )
    if described is None:
        raise ValueError(
            "the tiles were edited since they were last scored: Check edited tiles first, "
            "so that the summary saved beside them is true of them"
        )
    out = Path(path)
    if out.suffix.lower() != ".geojson":
        raise ValueError(f"save as a .geojson file, got {out.name!r}")
    if out.is_dir() or not out.parent.is_dir():
        raise ValueError(f"{out} is a folder or its folder does not exist")
    with_pixels = pixels.current_for(keep)
    try:
        written = write_slide_evidence(
            out,
            replace(described, embeddings=None),
            {"image": place["image"], "level": place["level"]},
            downsample=place["downsample"],
            mpp=place["mpp"],
            overwrite=overwrite,
            pixels=pixels.pixels if with_pixels else None,
        )
    except OSError as err:
        raise ValueError(str(err)) from None
    note = (
        " with the pixel evidence"
        if with_pixels
        else " (tiles only: the pixel evidence shown was made for other tiles or edited)"
        if pixels.pixels is not None
        else ""
    )
    return written, f"Saved {', '.join(p.name for p in written)}{note}"
