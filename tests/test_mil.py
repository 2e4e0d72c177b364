"""Slide-level (MIL) decisions: SlideClassifier, the embedding cache, the minimal tiles.

Toy slides are grids of flat-coloured 32-px tiles: pink tissue, a few glass tiles and
"tumour" tiles that are redder. The toy encoder is the tile's mean colour (through a
linear layer whose weights can change), the toy aggregator max-pooling over the red
channel, so the minimal set is known: the tumour tile, alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import napari_medcam as mc
from napari_medcam.engine.explanation import drive
from napari_medcam.engine.mil import explain_bag
from napari_medcam.engine.mil.cache import Bag, read_cache, write_cache
from napari_medcam.engine.mil.embedding import iter_embed_slide

TILE = 32
PINK, RED, GLASS = (200, 150, 180), (250, 110, 150), (245, 245, 245)


class MeanColour(nn.Module):
    """Embedding: the tile's mean normalised colour through a linear map; counts tiles seen."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(3))
            self.linear.bias.zero_()
        self.tiles_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tiles_seen += len(x)
        return self.linear(x.mean((2, 3)))


class MaxRed(nn.Module):
    """Max-pooling MIL: a tile's score is its red embedding; the slide's, the highest."""

    def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = 4.0 * (bag[:, 0] - 1.5)
        return torch.stack([torch.zeros(()), score.max()])[None], torch.softmax(score, 0)


class GatedRed(nn.Module):
    """Attention MIL with fixed weights: attention and evidence both follow the red channel."""

    def forward(self, bag: torch.Tensor, coords: torch.Tensor) -> dict[str, torch.Tensor]:
        attention = torch.softmax(3.0 * bag[:, 0], 0)
        pooled = (attention[:, None] * bag).sum(0)
        return {
            "logits": torch.stack([torch.zeros(()), 6.0 * (pooled[0] - 1.3)])[None],
            "attention": attention,
        }


def toy_slide(red: list[tuple[int, int]], rows: int = 6, cols: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((rows * TILE, cols * TILE, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            colour = RED if (r, c) in red else GLASS if c == cols - 1 and r < 2 else PINK
            noise = rng.integers(-6, 7, (TILE, TILE, 3))
            img[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = np.clip(
                np.asarray(colour) + noise, 0, 255
            )
    return img


def slide_classifier(aggregator: nn.Module | None = None) -> mc.SlideClassifier:
    return mc.SlideClassifier(
        MeanColour(),
        aggregator or MaxRed(),
        tile_size=TILE,
        class_names=["normal", "tumour"],
    )


def toy_bag(clf: mc.SlideClassifier, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every tile of a 6×8 toy slide embedded (glass too): (48, 3) and their grid."""
    bag = np.stack(
        [
            clf.embed(image[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE][None])[0]
            for r in range(6)
            for c in range(8)
        ]
    )
    return bag, np.stack(np.divmod(np.arange(48), 8), 1)


def p_tumour(clf: mc.SlideClassifier, bag: np.ndarray, grid: np.ndarray) -> float:
    logits, _ = clf.aggregate(torch.from_numpy(bag), torch.from_numpy(grid).float())
    return float(torch.softmax(logits[0], 0)[1])


@pytest.mark.parametrize("absence", ["removal", "replacement"])
def test_max_pooling_keeps_exactly_the_one_tumour_tile(absence):
    clf = slide_classifier()
    result = mc.explain(toy_slide([(3, 2)]), clf, absence=absence)
    assert result.target_name == "tumour"
    assert result.n_tiles == 6 * 8 - 2  # the two glass tiles are not in the bag
    assert result.n_kept == 1
    assert result.kept_windows.tolist() == [[3 * TILE, 2 * TILE, 4 * TILE, 3 * TILE]]
    assert result.meets_goal and result.necessary is True
    assert result.sentence.startswith("1 of 46 tiles suffice for 'tumour';")
    assert result.sentence.endswith("the slide reads 'normal'.")
    assert result.tile_labels()[3, 2] == 2 and result.tile_labels()[0, 7] == 0


def test_the_sentence_is_true_of_the_returned_set():
    clf = slide_classifier(GatedRed())
    image = toy_slide([(1, 1), (1, 2), (2, 1), (2, 2)])
    result = mc.explain(image, clf)
    bag = np.stack([clf.embed(image[y0:y1, x0:x1][None])[0] for y0, x0, y1, x1 in result.windows])
    kept, grid = result.kept, result.grid
    # suffices: the kept tiles alone keep ≥ 95 % of the slide's confidence
    p_all, p_alone = p_tumour(clf, bag, grid), p_tumour(clf, bag[kept], grid[kept])
    assert result.meets_goal and p_alone >= 0.95 * p_all and p_alone > 0.5
    # necessity as the sentence says it: without them the slide reads normal, or not
    p_without = p_tumour(clf, bag[~kept], grid[~kept])
    assert abs(p_without - 0.5) > 0.05  # the toy is not on the decision's edge
    assert result.necessary is (p_without < 0.5)
    said = "reads 'normal'" if p_without < 0.5 else "still reads 'tumour'"
    assert said in result.sentence
    # on the evidence, and in one piece (the four tumour tiles are a 2×2 block)
    cells = sorted(tuple(rc) for rc in grid[kept].tolist())
    assert set(cells) <= {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert (
        all(any(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for b in cells) for a in cells)
        or len(cells) == 1
    )
    assert result.attention is not None and result.attention.shape == (result.n_tiles,)


def test_a_sufficient_but_unnecessary_set_says_so():
    result = mc.explain(toy_slide([(0, 0), (5, 6)]), slide_classifier())
    assert result.n_kept == 1 and result.meets_goal
    assert result.necessary is False
    assert "still reads 'tumour'" in result.sentence


def test_replacement_with_given_counterfactual_tissue():
    clf = slide_classifier()
    e = np.full((20, 3), 0.8, np.float32)
    e[7] = [2.5, 0.0, 0.5]
    grid = np.stack(np.divmod(np.arange(20), 5), 1)
    normal = np.full((4, 3), 0.7, np.float32)
    result = explain_bag(e, grid, clf, absence="replacement", absence_embeddings=normal)
    assert np.flatnonzero(result.kept).tolist() == [7] and result.necessary is True
    assert result.provenance["counterfactual_tissue"] == "4 from given embeddings"


def test_embeddings_are_cached_and_reused(tmp_path):
    clf, image = slide_classifier(), toy_slide([(3, 2)])
    cache = tmp_path / "slide.embeddings.zarr"
    probed = clf.encoder.tiles_seen  # the probe when the classifier was made
    first = mc.explain(image, clf, cache=cache)
    seen = clf.encoder.tiles_seen
    assert seen - probed == 46 and first.provenance["cache_used"] is False and cache.is_dir()
    second = mc.explain(image, clf, cache=cache)
    assert clf.encoder.tiles_seen == seen  # the encoder was not called again
    assert second.provenance["cache_used"] is True
    assert second.kept.tolist() == first.kept.tolist()


def test_changed_encoder_or_tiling_invalidates_the_cache(tmp_path):
    clf, image = slide_classifier(), toy_slide([(3, 2)])
    cache = tmp_path / "slide.embeddings.zarr"
    mc.explain(image, clf, cache=cache)
    seen = clf.encoder.tiles_seen
    with torch.no_grad():
        clf.encoder.linear.bias.add_(0.01)  # new weights: new embeddings
    assert mc.explain(image, clf, cache=cache).provenance["cache_used"] is False
    assert clf.encoder.tiles_seen == seen + 46
    retiled = mc.explain(image, clf, cache=cache, tile_overlap=8)
    assert retiled.provenance["cache_used"] is False and retiled.n_tiles > 46
    other = mc.explain(toy_slide([(0, 0)]), clf, cache=cache)  # same shape, other pixels
    assert other.provenance["cache_used"] is False


def test_a_failed_write_leaves_no_cache(tmp_path, monkeypatch):
    bag = Bag(
        np.ones((3, 2), np.float32),
        np.zeros((3, 4), np.int64),
        np.array([[0, 0], [0, 1], [1, 0]]),
        (2, 2),
    )
    path = tmp_path / "c.zarr"
    write_cache(path, "old", bag, {})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_medcam.engine.mil.cache._replace_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        write_cache(path, "new", bag, {})
    assert read_cache(path, "old") is not None and read_cache(path, "new") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]  # no temp left


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda clf: mc.explain("slide.svs", clf), "must be an array"),
        (lambda clf: mc.explain(np.zeros((64, 64), np.uint8), clf), "H×W×3"),
        (lambda clf: mc.explain(np.zeros((16, 64, 3), np.uint8), clf), "smaller than one"),
        (lambda clf: mc.explain(toy_slide([]), clf, absence="blur"), "absence must be one of"),
        (lambda clf: mc.explain(toy_slide([]), clf, target="cancer"), "unknown class name"),
        (lambda clf: mc.explain(toy_slide([]), clf, tile_overlap=20), "tile_overlap"),
        (lambda clf: mc.explain(np.full((64, 64, 3), 250, np.uint8), clf), "no tissue tile"),
        (lambda clf: explain_bag(np.zeros((4, 5)), np.zeros((4, 2), int), clf), "(N ≥ 1, 3)"),
        (lambda clf: explain_bag(np.zeros((2, 3)), np.zeros((2, 2), int), clf), "share a grid"),
        (lambda clf: next(mc.iter_explain(toy_slide([]), clf)), "SlideClassifier is explained by"),
    ],
)
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(slide_classifier())


def test_bad_models_are_refused_clearly():
    with pytest.raises(ValueError, match="encoder must be a torch.nn.Module"):
        mc.SlideClassifier(lambda x: x, MaxRed(), tile_size=TILE)
    with pytest.raises(ValueError, match="logits \\(1, K ≥ 2\\)"):
        mc.SlideClassifier(MeanColour(), nn.Linear(3, 1), tile_size=TILE)
    with pytest.raises(ValueError, match="3 class names given but the aggregator outputs 2"):
        mc.SlideClassifier(MeanColour(), MaxRed(), tile_size=TILE, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="level ≥ 0 or mpp"):
        mc.SlideClassifier(MeanColour(), MaxRed(), tile_size=TILE, level=-1)


def test_replacement_without_counterfactual_tissue_says_what_to_do():
    e = np.full((6, 3), 2.5, np.float32)  # every tile reads tumour on its own
    grid = np.stack(np.divmod(np.arange(6), 3), 1)
    with pytest.raises(ValueError, match="no counterfactual tissue.*absence_embeddings="):
        explain_bag(e, grid, slide_classifier(), absence="replacement")


class Unsure(nn.Module):
    """Three classes, none above 0.5: no set can keep the decision above the goal."""

    def forward(self, bag: torch.Tensor) -> torch.Tensor:
        return torch.stack([bag[:, 0].mean() * 0, torch.tensor(0.3), torch.tensor(0.5)])[None]


def test_a_set_that_fails_the_goal_is_never_passed_off_as_sufficient():
    clf = mc.SlideClassifier(MeanColour(), Unsure(), tile_size=TILE, class_names=["a", "b", "c"])
    result = explain_bag(np.ones((6, 3), np.float32), np.stack(np.divmod(np.arange(6), 3), 1), clf)
    assert result.target_name == "c" and result.p_original < 0.5
    assert not result.meets_goal and result.n_kept == 6
    assert result.sentence.startswith("No set of tiles meets the goal for 'c'")


def test_the_mil_zoo_loads_and_its_tuning_entry_is_explained_on_a_tune_slide():
    from napari_medcam.zoo import mil

    full = mil.synthetic_slide("tune", 2)  # positive, with mimic tiles
    rows, cols = np.nonzero(full.positive)
    crop = np.s_[max(0, rows.min() - 2) : rows.max() + 3, max(0, cols.min() - 2) : cols.max() + 3]
    slide = mil.SyntheticSlide(  # the part around the positive tiles: fewer tiles to make
        "tune", 2, full.layout[crop], full.positive[crop], full.mimic[crop], 1
    )
    image = slide.image()
    models = {name: mil.load(name) for name in mil.MIL_ZOO}
    bag, _ = drive(iter_embed_slide(image, models["mil-maxpool"]))
    assert len(bag) == (slide.layout >= 0).sum()  # every tissue tile, no glass
    for clf in models.values():  # every entry reads the slide as tumour
        assert p_tumour(clf, bag.embeddings, bag.grid) > 0.9
    result = mc.explain(image, models["mil-abmil"])  # the tuning entry only (docs/zoo.md)
    truth = slide.positive[result.grid[:, 0], result.grid[:, 1]]
    assert result.target_name == "tumour" and result.meets_goal
    assert 1 <= result.n_kept <= truth.sum() and truth[result.kept].all()


def toy_factory() -> mc.SlideClassifier:
    """A `package.module:factory` for the command line: the max-pooling toy."""
    return slide_classifier()


def test_command_line_writes_the_evidence_tiles_for_qupath(tmp_path, capsys):
    import tifffile

    from napari_medcam.cli import main

    tifffile.imwrite(tmp_path / "slide.tif", toy_slide([(3, 2)]), photometric="rgb")
    out = tmp_path / "evidence.geojson"
    args = [
        "explain",
        str(tmp_path / "slide.tif"),
        "--slide-classifier",
        "tests.test_mil:toy_factory",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "1 of 46 tiles suffice for 'tumour'" in capsys.readouterr().out
    (feature,) = json.loads(out.read_text())["features"]
    x0, y0 = 2 * TILE, 3 * TILE  # the tumour tile, in level-0 pixels
    assert feature["geometry"]["coordinates"][0][:3] == [
        [x0, y0],
        [x0 + TILE, y0],
        [x0 + TILE, y0 + TILE],
    ]
    assert feature["properties"]["classification"]["name"] == "tumour"
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["meets_goal"] and summary["necessary"] and summary["kept"] == 1
    assert (tmp_path / "evidence.embeddings.zarr").is_dir()
    assert main(args) == 2  # the outputs exist: refused without --overwrite
    bad = [
        "explain",
        str(tmp_path / "slide.tif"),
        "--slide-classifier",
        "nope",
        "--out",
        str(tmp_path / "e.geojson"),
    ]
    assert main(bad) == 2 and "unknown slide classifier 'nope'" in capsys.readouterr().err


def test_removal_without_counterfactual_tissue_ranks_by_the_gradient():
    e = np.full((6, 3), 2.0, np.float32)  # every tile reads tumour on its own
    e[4, 0] = 3.0
    grid = np.stack(np.divmod(np.arange(6), 3), 1)
    result = explain_bag(e, grid, slide_classifier())
    assert result.provenance["counterfactual_tissue"] == "0 from the slide's tiles"
    assert np.flatnonzero(result.kept).tolist() == [4] and result.meets_goal
    assert result.necessary is False  # the other tiles still read tumour


def test_bad_options_are_refused_before_the_embedding_pass():
    clf = slide_classifier()
    seen = clf.encoder.tiles_seen
    for options in ({"absence": "blur"}, {"target": "cancer"}, {"config": "fast"}):
        with pytest.raises(ValueError):
            mc.explain(toy_slide([]), clf, **options)
    assert clf.encoder.tiles_seen == seen


def test_tiles_lie_on_a_strict_grid_and_the_uncovered_margin_is_said():
    """A slide that is not a whole number of tiles: tile (r, c) starts at (r·T, c·T) —
    none is moved flush with the edge, so its grid cell says exactly where it lies."""
    image = toy_slide([(3, 2)])[: 6 * TILE - 5, : 8 * TILE - 11]  # 5 and 11 px short
    result = mc.explain(image, slide_classifier())
    starts = result.windows[:, :2]
    assert (starts == result.grid * TILE).all()
    assert (result.windows[:, 2:] - starts == TILE).all()
    assert result.grid_shape == (5, 7)  # the last, partial row and column are no tiles
    assert result.provenance["margin"] == [TILE - 5, TILE - 11]


def test_an_edited_set_is_checked_like_a_found_one():
    clf = slide_classifier()
    result = mc.explain(toy_slide([(3, 2)]), clf)
    from napari_medcam.engine.mil import check_tiles

    again = check_tiles(result, clf, result.kept)
    assert again.chosen == "given" and again.meets_goal and again.necessary is True
    assert again.p_kept == pytest.approx(result.p_kept)
    assert again.sentence.startswith("These 1 of 46 tiles keep 'tumour' on their own")
    # the tumour tile taken away and two pink ones kept: not enough, and said so
    edited = np.zeros(result.n_tiles, bool)
    edited[:2] = True
    assert not result.kept[:2].any()
    worse = check_tiles(result, clf, edited)
    assert not worse.meets_goal and worse.p_kept < 0.5
    assert worse.sentence.startswith("These 2 of 46 tiles do not keep 'tumour' on their own")
    with pytest.raises(ValueError, match=r"\(46,\) boolean array"):
        check_tiles(result, clf, edited[:5])


def test_the_search_yields_progress_and_a_cancel_stops_it():
    from napari_medcam.engine.explanation import ExplanationCancelled, drive
    from napari_medcam.engine.mil.explain import iter_explain_bag

    clf = slide_classifier(GatedRed())
    bag, grid = toy_bag(clf, toy_slide([(1, 1), (1, 2)]))
    events = []
    result = drive(iter_explain_bag(bag, grid, clf), events.append)
    steps = result.provenance["relaxed_steps"]
    assert result.meets_goal and len(events) >= steps // 10 >= 3  # one per 10 relaxed steps
    assert {e.stage for e in events} == {"search"}
    assert events[0].describe() == "searching the fewest tiles 10/100"
    seen = []
    with pytest.raises(ExplanationCancelled):
        drive(iter_explain_bag(bag, grid, clf), seen.append, cancel=lambda: bool(seen))
    assert len(seen) == 1  # stopped at the first event, long before the search ends


@pytest.mark.parametrize("absence", ["removal", "replacement"])
def test_a_converged_relaxed_stage_stops_early_with_the_full_search_s_set(absence, monkeypatch):
    from napari_medcam.engine.mil import minimal

    clf = slide_classifier()
    bag, grid = toy_bag(clf, toy_slide([(2, 3)]))
    early = explain_bag(bag, grid, clf, absence=absence)
    assert minimal.MIN_STEPS <= early.provenance["relaxed_steps"] < minimal.STEPS
    monkeypatch.setattr(minimal, "MIN_STEPS", minimal.STEPS + 1)  # never converged: all steps
    full = explain_bag(bag, grid, clf, absence=absence)
    assert full.provenance["relaxed_steps"] == minimal.STEPS
    assert early.meets_goal and np.array_equal(early.kept, full.kept)
    assert np.flatnonzero(early.kept).tolist() == [2 * 8 + 3]  # the tumour tile, alone


def test_hard_slides_hold_several_weak_positives_among_many_strong_mimics():
    from napari_medcam.zoo.mil import slides

    for i in range(0, 12, 2):
        hard, plain = slides.hard_slide("tune", i), slides.synthetic_slide("tune", i)
        assert not np.array_equal(hard.layout, plain.layout)  # its own seeds
        assert 3 <= hard.positive.sum() <= 8 and 8 <= hard.mimic.sum() <= 16
        rank = {
            kind: [slides._contrast_rank(int(j)) for j in hard.layout[where]]
            for kind, where in ((slides.POSITIVE, hard.positive), (slides.MIMIC, hard.mimic))
        }
        assert max(rank[slides.POSITIVE]) <= slides.HARD_SHARE  # the weakest positives only
        assert min(rank[slides.MIMIC]) >= 1 - slides.HARD_SHARE  # the strongest mimics only
    assert slides.hard_slide("tune", 1).positive.sum() == 0
