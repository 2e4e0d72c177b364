"""The comparison methods (Grad-CAM, RISE, occlusion) on the same `Classifier`, side by side
with Med-CAM: other explanations of the same decision, never part of its result."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from napari_medcam.classifiers.classifier import Classifier
from napari_medcam.classifiers.prepare import resize, unit_tensor
from napari_medcam.engine.explanation import ProgressEvent
from napari_medcam.engine.saliency import gradcam_maps
from napari_medcam.tiling import MIN_TISSUE_FRACTION, Stitcher


def iter_gradcam(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    layer: str | None = None,
    *,
    tile_overlap: int | None = None,
) -> Generator[ProgressEvent, None, np.ndarray]:
    """`gradcam` tile by tile: yields a "gradcam" `ProgressEvent` per window, returns the map.

    Stop iterating (or ``close()`` the generator) to cancel between tiles.
    """
    from napari_medcam.engine.tiles import Tiles

    target_idx = classifier.class_index(target)
    targets = None if target_idx is None else [target_idx]
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    tiles = Tiles(image, classifier, classifier.device, tile_overlap)
    if not tiles.tiled:
        unit = unit_tensor(np.asarray(image), classifier)
        x = classifier.normalise(resize(unit, classifier.input_size)).to(classifier.device)
        cams, _ = gradcam_maps(x, classifier, targets, layer)
        cam = resize(cams, tuple(unit.shape[2:]))[0, 0].cpu().numpy()
    else:
        stitcher = Stitcher(tiles.spatial)
        n = len(tiles.windows)
        try:
            for i, window in enumerate(tiles.windows):
                x, tissue = tiles.input(i)
                if tissue >= MIN_TISSUE_FRACTION:
                    raw, _ = gradcam_maps(x, classifier, targets, layer, normalise=False)
                    shape = tuple(s.stop - s.start for s in window)
                    stitcher.add(window, resize(raw, shape)[0, 0].cpu().numpy())
                yield ProgressEvent(i + 1, n, {}, float("nan"), 0.0, stage="gradcam")
            cam = np.asarray(stitcher.result(0.5)[1])
        finally:
            stitcher.close()
    peak = float(cam.max())  # peak 1 at the image's resolution, not only the feature map's
    return (cam / peak if peak > 0 else cam).astype(np.float32)


def gradcam(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    layer: str | None = None,
    *,
    tile_overlap: int | None = None,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) heatmap in [0, 1], the image's spatial shape.

    ``layer`` defaults to the deepest activation-matching layer. An image larger
    than the classifier's input gets the tile grid `explain` uses (glass skipped,
    read window by window): raw tile maps are blended in the overlaps and scaled
    to peak 1 over the whole image, so that a strong tile and a weak one compare —
    one pass over the image resized to the input would blur a slide into a few
    cells. ``target`` None: each tile's predicted class.
    """
    gen = iter_gradcam(image, classifier, target, layer, tile_overlap=tile_overlap)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _prepared(image: np.ndarray, classifier: Classifier, what: str):
    if classifier.spatial_dims != 2:
        raise ValueError(f"{what} is implemented for 2-D classifiers only")
    unit = unit_tensor(image, classifier)
    x = classifier.normalise(resize(unit, classifier.input_size)).to(classifier.device)
    return x, tuple(unit.shape[2:])


def _baseline_tensor(
    x: torch.Tensor, classifier: Classifier, baseline: str | torch.Tensor | None
) -> torch.Tensor:
    """What replaces hidden pixels, in the classifier's normalised space (like ``x``)."""
    from napari_medcam.engine.backgrounds import make_baseline

    if baseline is None:
        return torch.zeros_like(x)  # the dataset-mean colour
    if isinstance(baseline, str):
        return make_baseline(baseline, x, classifier, 10.0)
    b = baseline.to(x.device, x.dtype)
    if b.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"baseline of shape {tuple(b.shape)} does not match the input {x.shape}")
    return b


def _target(x: torch.Tensor, classifier: Classifier, target: int | str | None) -> int:
    t = classifier.class_index(target)
    if t is None:
        with torch.no_grad():
            t = int(classifier.module(x).argmax())
    return t


def _to_image(sal: torch.Tensor, spatial: tuple[int, ...]) -> np.ndarray:
    out = resize(sal.reshape(1, 1, *sal.shape[-2:]).float(), spatial)[0, 0].cpu().numpy()
    lo, hi = float(out.min()), float(out.max())
    return ((out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)).astype(np.float32)


def _log_odds(logits: torch.Tensor, t: int) -> torch.Tensor:
    """``z_t − logsumexp_{j≠t} z_j`` per row: log(p_t / (1 − p_t)), computed without saturating."""
    others = torch.cat([logits[:, :t], logits[:, t + 1 :]], 1)
    return logits[:, t] - torch.logsumexp(others, 1)


def rise(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    *,
    n_masks: int = 1000,
    cells: int = 7,
    p_keep: float = 0.5,
    baseline: str | torch.Tensor | None = None,
    batch: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """RISE (Petsiuk et al. 2018): saliency from ``n_masks`` random smooth masks.

    Each mask is a ``cells``×``cells`` grid of cells kept with probability ``p_keep``,
    bilinearly upsampled to (cells + 1) cell sizes and cropped at a random shift. The
    map is ``Σ_i p(target | M_i ⊙ x + (1 − M_i) ⊙ b) M_i / (N · p_keep)``, with ``b``
    the ``baseline`` (default: the dataset-mean colour, as in the paper's zeroing in
    normalised space; a kind name of `make_baseline` or a normalised tensor also work).
    Returned min-max scaled to [0, 1], the image's spatial shape.
    """
    if n_masks < 1 or cells < 1 or not 0 < p_keep < 1:
        raise ValueError("RISE needs n_masks ≥ 1, cells ≥ 1 and 0 < p_keep < 1")
    x, spatial = _prepared(image, classifier, "RISE")
    b = _baseline_tensor(x, classifier, baseline)
    t = _target(x, classifier, target)
    h, w = classifier.input_size
    ch, cw = -(-h // cells), -(-w // cells)
    gen = torch.Generator().manual_seed(seed)
    sal = torch.zeros((h, w), device=x.device)
    done = 0
    while done < n_masks:
        n = min(batch, n_masks - done)
        grid = (torch.rand((n, 1, cells, cells), generator=gen) < p_keep).float()
        up = torch.nn.functional.interpolate(
            grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False
        )
        dy = torch.randint(0, ch, (n,), generator=gen).tolist()
        dx = torch.randint(0, cw, (n,), generator=gen).tolist()
        masks = torch.stack(
            [up[i, :, y : y + h, xx : xx + w] for i, (y, xx) in enumerate(zip(dy, dx))]
        )
        masks = masks.to(x.device)
        with torch.no_grad():
            p = torch.softmax(classifier.module(masks * x + (1 - masks) * b), 1)[:, t]
        sal += (p.view(-1, 1, 1) * masks[:, 0]).sum(0)
        done += n
    return _to_image(sal / (n_masks * p_keep), spatial)


def occlusion(
    image: np.ndarray,
    classifier: Classifier,
    target: int | str | None = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    baseline: str | torch.Tensor | None = None,
    batch: int = 64,
) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014): how much hiding each window costs.

    A ``window``-pixel square (default: 1/7 of the input side, 32 px at 224) slides
    with ``stride`` (default: half the window; the last row/column flush with the
    edge) and is replaced by the ``baseline`` (as in `rise`). A pixel's score is the
    mean drop of the target's log-odds, ``z_t − logsumexp_{j≠t} z_j``, over the windows
    covering it: unlike p or log p, the log-odds do not saturate in float32 when the
    classifier is sure (p = 1 − 1e-14). Returned min-max scaled to [0, 1].
    """
    x, spatial = _prepared(image, classifier, "occlusion")
    b = _baseline_tensor(x, classifier, baseline)
    t = _target(x, classifier, target)
    h, w = classifier.input_size
    win = int(window or max(2, round(min(h, w) / 7)))
    win = min(win, h, w)
    step = int(stride or max(1, win // 2))
    if win < 1 or step < 1:
        raise ValueError("occlusion needs window ≥ 1 and stride ≥ 1")

    def starts(n: int) -> list[int]:
        s = list(range(0, n - win + 1, step))
        return s if s[-1] == n - win else [*s, n - win]

    boxes = [(y, xx) for y in starts(h) for xx in starts(w)]
    with torch.no_grad():
        ref = _log_odds(classifier.module(x), t)[0]
    total = torch.zeros((h, w), device=x.device)
    count = torch.zeros((h, w), device=x.device)
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        keep = torch.ones((len(chunk), 1, h, w), device=x.device)
        for j, (y, xx) in enumerate(chunk):
            keep[j, :, y : y + win, xx : xx + win] = 0
        with torch.no_grad():
            lp = _log_odds(classifier.module(keep * x + (1 - keep) * b), t)
        drop = (ref - lp).view(-1, 1, 1)
        total += ((1 - keep[:, 0]) * drop).sum(0)
        count += (1 - keep[:, 0]).sum(0)
    return _to_image(total / count.clamp(min=1), spatial)


def _attention_probabilities(classifier: Classifier, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Every (1, heads, n, n) row-stochastic module output of one forward pass, in call order:
    the attention probabilities a timm-layout block passes through ``attn.attn_drop`` (or a
    softmax module), each distinct tensor once."""
    found: list[torch.Tensor] = []

    def hook(_m: torch.nn.Module, _i: object, out: object) -> None:
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[-2:] != (n, n):
            return
        if found and out.data_ptr() == found[-1].data_ptr():  # softmax → dropout: one tensor
            return
        if (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(()), atol=1e-4):
            found.append(out.detach())

    handles = [m.register_forward_hook(hook) for m in classifier.module.modules()]
    try:
        with torch.no_grad():
            classifier.module(x)
    finally:
        for h in handles:
            h.remove()
    return found


def _class_token_pooled(module: torch.nn.Module) -> bool:
    """Whether the model's decision reads a class token: it has a ``cls_token`` and, where
    its owner says how it pools (timm's ``global_pool``), pools that token."""
    module = getattr(module, "model", module)  # an AdaptedModel's own attributes are not shared
    for owner in module.modules():
        if isinstance(getattr(owner, "cls_token", None), torch.Tensor):
            return getattr(owner, "global_pool", "token") in ("token", "")
    return False


def attention_rollout(image: np.ndarray, classifier: Classifier) -> np.ndarray | None:
    """Attention rollout (Abnar & Zuidema 2020), or None where it cannot be computed.

    Each block's attention probabilities are averaged over heads, the identity added (the
    residual path) and rows renormalised; the blocks' matrices are multiplied in order. The
    map is the class token's row (a model pooling a class token), else the mean of the patch
    tokens' rows (a mean-pooled head), over the patch tokens, laid out on the patch grid and
    upsampled to the image. It needs the probabilities over the whole token grid, captured
    from a module's output (timm's ``attn.attn_drop``): None for a model without tokens,
    with attention inside windows (Swin) or with fused attention that outputs none — never
    a made-up map. Class-agnostic, as the method is.
    """
    from napari_medcam.classifiers.tokens import TokenMap

    view = classifier.layer_view(classifier.layers[-1]) if classifier.layers else None
    tokens = view.reshape if view is not None else None
    if not isinstance(tokens, TokenMap):
        return None
    x, spatial = _prepared(image, classifier, "attention rollout")
    h, w = tokens.grid
    n = tokens.prefix + h * w
    probs = _attention_probabilities(classifier, x, n)
    if not probs:
        return None
    eye = torch.eye(n, device=x.device)
    rollout = eye
    for attn in probs:
        a = attn[0].mean(0) + eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    if _class_token_pooled(classifier.module):
        row = rollout[0, tokens.prefix :]
    else:
        row = rollout[tokens.prefix :, tokens.prefix :].mean(0)
    return _to_image(row.reshape(h, w), spatial)
