"""Slice-by-slice explanation of a volume with a 2-D classifier.

A 3-D classifier explains a volume directly (`explain` trains a 3-D U-Net). A 2-D
classifier sees one slice at a time: ``explain(volume, clf, slice_axis=0)`` comes here,
to `iter_explain_slices`, which cuts the volume along the axis and runs the ordinary
2-D engine (`engine.single`) on every slice, for one target shared by the whole volume,
and stacks the slices' masks back into a volume-shaped mask (`SliceExplanations`,
summed up as one `Explanation` by ``as_explanation``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import prepare_input, resolve_device
from napari_medcam.engine.config import MedCAMConfig
from napari_medcam.engine.explanation import Explanation, ProgressEvent
from napari_medcam.engine.single import iter_explain_one
from napari_medcam.engine.tiles import blank_class, choose_target, classify_stage
from napari_medcam.engine.verdict import overall
from napari_medcam.tiling import needs_tiling


@dataclass
class SliceExplanations:
    """Per-slice explanations of a volume, and their masks stacked back into the volume.

    ``mask`` / ``soft_mask`` have the volume's spatial shape (D×H×W); slice ``i``
    along ``axis`` holds ``explanations[i]``'s mask when that explanation is valid or
    tiled (a tiled slice's mask holds only its valid tiles' evidence), and is empty
    otherwise (its soft mask is kept either way).

    A slice is *explained* when at least one of its tiles was (it has tile
    verdicts); slices the classifier does not assign to the target are not.
    """

    explanations: list[Explanation]
    mask: np.ndarray
    soft_mask: np.ndarray
    axis: int
    target: int
    class_name: str
    seconds: float

    @property
    def valid(self) -> list[bool]:
        return [e.valid for e in self.explanations]

    @property
    def n_valid(self) -> int:
        return sum(self.valid)

    @property
    def explained(self) -> list[bool]:
        return [bool(e.tile_verdicts) for e in self.explanations]

    @property
    def area_fraction(self) -> float:
        return float(self.mask.mean())

    def one_line(self) -> str:
        return (
            f"{self.class_name}: {self.n_valid} of {len(self.explanations)} slices valid "
            f"(axis {self.axis}), area {100 * self.area_fraction:.1f} %, {self.seconds:.1f} s"
        )

    def as_explanation(self) -> Explanation:
        """The whole volume as one `Explanation`, for code that shows or saves one result.

        Masks are the stacked volumes; confidences are means over the slices whose
        masks are valid (over the explained slices when none is); ``valid`` when at least
        ``valid_share`` (the slices' config, default 0.9) of the explained slices are (and
        at least one was explained); ``tiles`` counts slices,
        ``status`` says how many of the explained slices are valid, and
        ``tile_verdicts`` lists every explained slice's tile verdicts with 3-D windows
        ([z0, y0, x0, z1, y1, x1] in the volume's axis order) and the slice index.
        """
        exps = self.explanations
        n = len(exps)
        explained = [e for e, x in zip(exps, self.explained) if x]
        used = [e for e in exps if e.valid] or explained or exps
        cfg = exps[0].config if exps else {}
        share = float(cfg.get("valid_share", MedCAMConfig.valid_share))
        status = (
            f"{self.n_valid} of {len(explained)} '{self.class_name}' slices valid "
            f"({n} slices in all, slice by slice along axis {self.axis})"
        )
        problems = [e.status for e in explained if not e.valid]
        if problems:
            status += f"; first problem: {problems[0]}"
        skipped = [e.status for e, x in zip(exps, self.explained) if not x]
        if skipped:
            status += f"; {len(skipped)} not explained (first: {skipped[0]})"

        def mean(values: list[Any]) -> Any:
            return np.mean(np.asarray(values, dtype=float), axis=0).tolist()

        return Explanation(
            mask=self.mask,
            soft_mask=self.soft_mask,
            target=self.target,
            class_name=self.class_name,
            original_confidence=mean([e.original_confidence for e in used]),
            masked_confidence=mean([e.masked_confidence for e in used]),
            robust_confidence=mean([e.robust_confidence for e in used]),
            deletion_confidence=mean([e.deletion_confidence for e in used]),
            area_fraction=self.area_fraction,
            seconds=self.seconds,
            valid=overall([e.valid for e in explained], share),
            status=status,
            probabilities=mean([e.probabilities for e in used]),
            masked_probabilities=mean([e.masked_probabilities for e in used]),
            absence=",".join(dict.fromkeys(e.absence for e in exps if e.absence)),
            steps=sum(e.steps for e in exps),
            config=exps[0].config if exps else {},
            provenance={**(exps[0].provenance if exps else {}), "slice_axis": self.axis},
            tiles=n,
            tile_verdicts=self._tile_verdicts(),
        )

    def _tile_verdicts(self) -> list[dict[str, Any]]:
        """Every explained slice's tile verdicts, windows lifted into the volume."""
        out = []
        for i, exp in enumerate(self.explanations):
            for v in exp.tile_verdicts:
                half = len(v["window"]) // 2
                starts, stops = list(v["window"][:half]), list(v["window"][half:])
                starts.insert(self.axis, i)
                stops.insert(self.axis, i + 1)
                out.append({**v, "window": starts + stops, "slice": i})
        return out


def _check_volume(volume: Any, classifier: Classifier, axis: int) -> tuple[int, ...]:
    """Validate a volume for a 2-D classifier; return its spatial (D, H, W) shape."""
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a napari_medcam.Classifier, got {type(classifier)}")
    if classifier.spatial_dims != 2:
        raise ValueError(
            "slice-by-slice explanation needs a 2-D classifier; this one takes "
            f"{classifier.input_size} volumes: explain the volume directly with `explain`"
        )
    shape = tuple(int(n) for n in volume.shape)
    multichannel = len(shape) == 4
    if len(shape) not in (3, 4) or (multichannel and shape[-1] not in (1, 3, 4)):
        raise ValueError(
            "expected a D×H×W grey volume or a D×H×W×C (C = 1, 3 or 4) colour volume, "
            f"got an array of shape {shape}"
        )
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
        raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis), got {axis!r}")
    spatial = shape[:3]
    plane = tuple(n for a, n in enumerate(spatial) if a != axis % 3)
    classifier.check_image(plane + shape[3:], volume.dtype)  # raises on a bad slice
    return spatial


def _slice(volume: Any, axis: int, i: int, value_range: tuple[float, float]) -> np.ndarray:
    """Slice ``i`` along ``axis`` as float32 on the volume's [0, 1] scale."""
    index = [slice(None)] * volume.ndim
    index[axis] = i
    plane = np.asarray(volume[tuple(index)], dtype=np.float32)
    lo, hi = value_range
    unit = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
    return np.clip(unit, 0.0, 1.0)


def _slice_probabilities(
    slices: Callable[[int], np.ndarray], n: int, classifier: Classifier, device: torch.device
) -> Generator[ProgressEvent, None, torch.Tensor]:
    """Probabilities (n × classes) of every slice; a "classify" event per slice."""
    probs = []
    for i in range(n):
        with torch.no_grad():
            x = prepare_input(slices(i), classifier).to(device)
            probs.append(torch.softmax(classifier.module(x), 1)[0])
        yield classify_stage(i + 1, n)
    return torch.stack(probs).cpu()


def _not_shown(
    plane_shape: tuple[int, ...],
    probs: list[float],
    target: int,
    classifier: Classifier,
    config: MedCAMConfig,
) -> Explanation:
    """The (invalid, empty) explanation of a slice the classifier does not assign to target."""
    names = classifier.class_names
    shown = names[int(np.argmax(probs))]
    return Explanation.not_explained(
        target=target,
        probabilities=probs,
        status=f"slice classified '{shown}', not '{names[target]}': not explained",
        mask=np.zeros(plane_shape, bool),
        soft_mask=np.zeros(plane_shape, np.float32),
        class_name=names[target],
        seconds=0.0,
        config=config.to_dict(),
        provenance={"package": "napari-medcam", "classifier": classifier.name},
    )


def iter_explain_slices(
    volume: Any,
    classifier: Classifier,
    target: int | str | None = None,
    config: MedCAMConfig | None = None,
    *,
    axis: int = 0,
    device: str | torch.device = "auto",
    **tiling: Any,
) -> Generator[ProgressEvent, None, SliceExplanations]:
    """Explain a volume slice by slice with a 2-D classifier.

    ``volume`` is D×H×W (grey) or D×H×W×C (colour), NumPy or lazy (dask, zarr; read
    one slice at a time); slices are cut along spatial ``axis`` (0, 1 or 2). All
    slices are put on the volume's intensity scale and explained for one ``target``:
    by default the volume's most confident finding (the class some slice shows most
    confidently, other than the class of a blank image). Every slice gets its own
    `Explanation`: from `iter_explain_one` (``tiling`` goes to it: tile_overlap,
    tile_batch, skip_glass) when the classifier assigns the slice to the
    target — or when the slice is larger than the input and so tiled — and
    otherwise an invalid one saying what the slice shows, without optimisation
    (its part of the stacked mask stays empty), as tiles are selected in
    `iter_explain`.

    Yields `iter_explain`'s `ProgressEvent`s with ``tile`` = the slice index and
    ``tiles`` = the number of slices; returns a `SliceExplanations`. Stop iterating
    (or ``close()`` the generator) to cancel. Raises ValueError for anything it
    cannot explain, before any work starts.
    """
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    spatial = _check_volume(volume, classifier, axis)
    axis = int(axis) % 3
    target_idx = classifier.class_index(target)
    if config is not None and not isinstance(config, MedCAMConfig):
        raise ValueError(f"config must be a MedCAMConfig, got {type(config).__name__}")
    dev = resolve_device(device)
    classifier.to(dev)
    start = time.perf_counter()
    value_range = classifier.value_range(volume)  # one scale for all slices
    n = spatial[axis]

    def plane(i: int) -> np.ndarray:
        return _slice(volume, axis, i, value_range)

    probs = yield from _slice_probabilities(plane, n, classifier, dev)
    if target_idx is None:  # the volume's most confident finding, as for a tiled image
        target_idx = choose_target(probs, blank_class(classifier, dev))
    plane_shape = tuple(k for a, k in enumerate(spatial) if a != axis)
    # a slice larger than the input is tiled, and `iter_explain` picks its own tiles
    tiled = needs_tiling(plane_shape, classifier.input_size)
    shows_target = [tiled or bool(p.argmax() == target_idx) for p in probs]
    explanations: list[Explanation] = []
    mask = np.zeros(spatial, bool)
    soft = np.zeros(spatial, np.float32)
    for i in range(n):
        if shows_target[i]:
            exp = yield from _relabel(
                iter_explain_one(plane(i), classifier, target_idx, config, device=dev, **tiling),
                i,
                n,
            )
        else:  # as for tiles: only what the classifier assigns to the target is explained
            exp = _not_shown(
                plane_shape,
                probs[i].tolist(),
                target_idx,
                classifier,
                config or MedCAMConfig.fast(),
            )
        explanations.append(exp)
        where = [slice(None)] * 3
        where[axis] = i
        soft[tuple(where)] = exp.soft_mask
        if exp.valid or exp.tiles > 1:  # a tiled slice's mask holds only valid tiles
            mask[tuple(where)] = exp.mask
    return SliceExplanations(
        explanations,
        mask,
        soft,
        axis,
        target_idx,
        classifier.class_names[target_idx],
        time.perf_counter() - start,
    )


def _relabel(
    gen: Generator[ProgressEvent, None, Explanation], i: int, n: int
) -> Generator[ProgressEvent, None, Explanation]:
    """Re-yield one slice's events as slice ``i`` of ``n``; return its Explanation.

    Closing this generator closes the slice's, so cancelling stops between steps.
    """
    try:
        while True:
            event = next(gen)
            yield replace(event, tile=i, tiles=n)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()
