"""A slide-level explanation in napari: its tile grid placed over the slide, and back.

Pure helpers, no widgets. The engine cuts a slide level into tiles on a strict grid
(tile (r, c) starts at (r·stride, c·stride) level pixels,
`napari_medcam.engine.mil.embedding.tile_layout`), so a layer with one pixel per tile,
scaled by the stride, lies exactly over the tiles. `SlideJob` / `run_slide_job` are
the background work; `edited_keep` reads an (edited) tile layer back as a set of the
bag's tiles.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medcam.classifiers.slide import SlideClassifier
from napari_medcam.engine.explanation import ExplanationCancelled, ProgressEvent, relay
from napari_medcam.engine.mil import SlideExplanation, check_tiles, iter_explain_slide
from napari_medcam.plugin.layers import transform_kwargs
from napari_medcam.plugin.worker import torch_threads

#: key of a slide-evidence layer's facts in its ``metadata``
SLIDE_META_KEY = "medcam_slide"


@dataclass
class SlideJob:
    """One slide-level run, gathered in the GUI thread: the level's (lazy) array and
    what to explain it with."""

    image: Any
    classifier: SlideClassifier
    target: int | None
    absence: str
    threads: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class SlideOutcome:
    """What came back: an explanation, or why not (``error``; ``cancelled``)."""

    explanation: SlideExplanation | None = None
    error: str = ""
    cancelled: bool = False


def _relayed(steps: Generator[ProgressEvent, None, Any], job: SlideJob) -> Generator:
    """``steps``' events re-yielded (a cancel acts before the next one) and its result;
    a cancel or an error comes back as a `SlideOutcome`, never raised in the GUI."""
    try:
        with torch_threads(job.threads):
            return (yield from relay(steps, job.cancel))
    except ExplanationCancelled:
        return SlideOutcome(cancelled=True)
    except ValueError as err:
        return SlideOutcome(error=str(err))
    except Exception as err:  # noqa: BLE001 - shown to the user, never raised in the GUI
        return SlideOutcome(error=f"{type(err).__name__}: {err}")


def run_slide_job(job: SlideJob) -> Generator[ProgressEvent, None, SlideOutcome]:
    """Embed the slide and find its minimal tiles, yielding progress; a cancel takes
    effect at the next batch of tiles or search step."""
    steps = iter_explain_slide(job.image, job.classifier, job.target, absence=job.absence)
    out = yield from _relayed(steps, job)
    return out if isinstance(out, SlideOutcome) else SlideOutcome(out)


def run_tile_check(
    result: SlideExplanation, clf: SlideClassifier, keep: np.ndarray, threads: int | None
) -> Generator[None, None, SlideOutcome]:
    """`check_tiles` in the background (a generator, so napari runs it as a worker)."""
    yield
    try:
        with torch_threads(threads):
            return SlideOutcome(check_tiles(result, clf, keep))
    except Exception as err:  # noqa: BLE001
        return SlideOutcome(error=f"{type(err).__name__}: {err}")


def grid_transform_kwargs(layer: Any, downsample: float, stride: int) -> dict[str, Any]:
    """Layer keyword arguments placing a one-pixel-per-tile array over ``layer``'s
    level of ``downsample``, whose tiles start every ``stride`` level pixels.

    napari draws level pixel j of a pyramid centred on level-0 data coordinate j·f, so
    tile cell r (level pixels r·S … r·S + S − 1) is centred on f·(r·S + (S − 1)/2):
    data scale f·S and offset f·(S − 1)/2, through the image's own transform."""
    from napari.utils.transforms import CompositeAffine

    out = transform_kwargs(layer)  # a 2-D slide layer (the widget refuses others)
    scale = np.asarray(layer.scale, dtype=float)
    linear = CompositeAffine(
        scale=scale, translate=np.zeros(2), rotate=layer.rotate, shear=layer.shear, ndim=2
    ).linear_matrix
    offset = np.full(2, downsample * (stride - 1) / 2.0)
    out["scale"] = scale * downsample * stride
    out["translate"] = np.asarray(layer.translate, dtype=float) + linear @ offset
    return out


def window_transform_kwargs(
    layer: Any, downsample: float, origin: tuple[int, int]
) -> dict[str, Any]:
    """Layer keyword arguments placing a tile-sized array over the tile whose first pixel
    is ``origin`` (y, x) at the level of ``downsample`` (as napari draws that level)."""
    from napari.utils.transforms import CompositeAffine

    out = transform_kwargs(layer)
    scale = np.asarray(layer.scale, dtype=float)
    linear = CompositeAffine(
        scale=scale, translate=np.zeros(2), rotate=layer.rotate, shear=layer.shear, ndim=2
    ).linear_matrix
    out["scale"] = scale * downsample
    out["translate"] = np.asarray(layer.translate, dtype=float) + linear @ (
        np.asarray(origin, dtype=float) * downsample
    )
    return out


def run_pixels(
    image: Any, result: SlideExplanation, clf: SlideClassifier, job: SlideJob
) -> Generator[ProgressEvent, None, Any]:
    """The pixel evidence of ``result``'s kept tiles in the background: yields the tile
    engine's progress, returns the `KeptTilePixels` list (or a `SlideOutcome` with the
    error, or cancelled)."""
    from napari_medcam.engine.mil.pixels import iter_kept_pixels

    return (yield from _relayed(iter_kept_pixels(image, result, clf), job))


def grid_layer_data(result: SlideExplanation) -> np.ndarray:
    """The evidence as a binary tile-grid array: 1 on each kept tile, 0 elsewhere."""
    out = np.zeros(result.grid_shape, np.uint8)
    kept = result.grid[result.kept]
    out[kept[:, 0], kept[:, 1]] = 1
    return out


def attention_data(result: SlideExplanation) -> np.ndarray | None:
    """The aggregator's weights on the tile grid, relative to their maximum (0 on glass)."""
    if result.attention is None:
        return None
    w = np.asarray(result.attention, dtype=np.float32)
    out = np.zeros(result.grid_shape, np.float32)
    top = float(w.max())
    out[result.grid[:, 0], result.grid[:, 1]] = w / top if top > 0 else w
    return out


def edited_keep(result: SlideExplanation, data: Any) -> tuple[np.ndarray, int]:
    """(keep over the bag's tiles, painted cells outside the bag) of a tile layer's data;
    ValueError when the layer no longer has the tile grid's shape."""
    arr = np.asarray(data)
    if arr.shape != tuple(result.grid_shape):
        raise ValueError(
            f"the evidence layer is {arr.shape}, not the slide's tile grid {result.grid_shape}: "
            "it can no longer be read as tiles"
        )
    painted = arr != 0
    keep = painted[result.grid[:, 0], result.grid[:, 1]]
    return keep, int(painted.sum()) - int(keep.sum())


def add_result_layers(viewer: Any, result: SlideExplanation, place: dict[str, Any]) -> Any:
    """Add the evidence tiles (Labels, one pixel per tile) and the aggregator's weights
    (hidden) over the slide layer ``place["layer"]`` (a weakref); the Labels layer, or
    None when the slide layer is gone. Main thread only."""
    image = place["layer"]()
    if image is None or image not in viewer.layers:
        return None
    clf = place["clf"]
    # the engine's MIL tiles do not overlap: the stride is the tile size
    kwargs = grid_transform_kwargs(image, place["downsample"], clf.tile_size)
    facts = {
        "image": place["image"],
        "level": place["level"],
        "downsample": place["downsample"],
        "tile_size": clf.tile_size,
    }
    weights = attention_data(result)
    if weights is not None:
        viewer.add_image(
            weights,
            name=f"aggregator weights: {result.target_name}",
            colormap="inferno",
            opacity=0.5,
            blending="additive",
            contrast_limits=(0.0, 1.0),
            visible=False,
            metadata={SLIDE_META_KEY: facts},
            **kwargs,
        )
    return viewer.add_labels(
        grid_layer_data(result),
        name=f"slide evidence: {result.target_name}",
        opacity=0.5,
        metadata={SLIDE_META_KEY: facts},
        **kwargs,
    )
