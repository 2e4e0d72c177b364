"""Transformers as users bring them: tokens read as feature maps, any model output, backbone + head.

Tiny ViTs in timm's layout (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N``,
``norm``, ``head``; 16-px patches of a 64² input), a Swin-like channels-last model and a
Hugging Face ``ViTForImageClassification`` built from its config (no download).
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import napari_medcam as mc
from napari_medcam.classifiers.outputs import AdaptedModel
from napari_medcam.classifiers.tokens import ChannelsLast, TokenMap
from napari_medcam.comparison import gradcam
from napari_medcam.engine.hooks import record_activations
from napari_medcam.engine.saliency import gradcam_maps
from napari_medcam.metrics import randomise_top_layers

SIZE, DIM = 64, 32


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TinyViT(nn.Module):
    """timm's VisionTransformer in miniature: class token, registers, token or mean pooling."""

    def __init__(
        self, depth: int = 4, cls: bool = True, registers: int = 0, pool: str = "token"
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = PatchEmbed(DIM)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02) if cls else None
        self.reg_token = nn.Parameter(torch.randn(1, registers, DIM) * 0.02) if registers else None
        self.pos_embed = nn.Parameter(torch.randn(1, (SIZE // 16) ** 2, DIM) * 0.02)
        self.blocks = nn.Sequential(*[Block(DIM) for _ in range(depth)])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 3)
        self.pool = pool
        self.prefix = int(cls) + registers

    def forward_features(self, x):
        x = self.patch_embed(x) + self.pos_embed
        prefix = [
            t.expand(len(x), -1, -1) for t in (self.cls_token, self.reg_token) if t is not None
        ]
        return self.norm(self.blocks(torch.cat([*prefix, x], 1)))

    def forward(self, x):
        x = self.forward_features(x)
        return self.head(x[:, 0] if self.pool == "token" else x[:, self.prefix :].mean(1))


class Stage(nn.Module):
    """A Swin-like stage on channels-last maps: patch merging (2×2 → 1), then MLP blocks."""

    def __init__(self, dim_in: int, dim: int, merge: bool) -> None:
        super().__init__()
        self.downsample = nn.Linear(4 * dim_in, dim) if merge else None
        self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))] * 2)

    def forward(self, x):
        if self.downsample is not None:
            b, h, w, c = x.shape
            x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).flatten(3)
            x = self.downsample(x)
        return x + self.blocks(x)


class TinySwin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = nn.Conv2d(3, 24, 4, 4)
        self.layers = nn.Sequential(Stage(24, 24, False), Stage(24, 40, True), Stage(40, 48, True))
        self.norm = nn.LayerNorm(48)
        self.head = nn.Linear(48, 3)

    def forward(self, x):
        x = self.layers(self.patch_embed(x).permute(0, 2, 3, 1))
        return self.head(self.norm(x).mean((1, 2)))


def hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=SIZE,
        patch_size=16,
        hidden_size=DIM,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config)


@dataclass
class Output:
    scores: torch.Tensor
    logits: torch.Tensor


class Returns(nn.Module):
    """A ViT whose forward returns a dict, a tuple or a dataclass instead of logits."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.vit, self.kind = TinyViT(), kind

    def forward(self, x):
        z = self.vit(x)
        if self.kind == "dict":
            return {"logits": z, "features": z.detach()}
        if self.kind == "tuple":
            return (z, None)
        return Output(scores=torch.zeros_like(z), logits=z)


def classifier(module: nn.Module, **kw) -> mc.Classifier:
    return mc.Classifier(module, input_size=(SIZE, SIZE), class_names=["a", "b", "c"], **kw)


def blocks(prefix: str, n: int = 4) -> list[str]:
    return [f"{prefix}.{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("make", "layers", "reshape"),
    [
        # a class-token head: the last block's patch tokens reach no logit, its input
        # normalisation does (below)
        (TinyViT, [*blocks("blocks", 3), "blocks.3.norm1"], "1 prefix dropped, 4×4 grid"),
        (lambda: TinyViT(registers=4, pool="mean"), blocks("blocks"), "5 prefix dropped"),
        (lambda: TinyViT(cls=False, pool="mean"), blocks("blocks"), "0 prefix dropped"),
        (TinySwin, blocks("layers", 3), "channels-last"),
        (hf_vit, "hf", "1 prefix dropped, 4×4 grid"),
    ],
    ids=["class-token", "registers", "no-prefix", "swin", "hugging-face"],
)
def test_discovery_on_each_layout(make, layers, reshape):
    model = make()
    if layers == "hf":  # `encoder.layer.N` before transformers 5, `layers.N` since
        lists = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
        # its head reads the class token: the last layer's input normalisation
        layers = [*blocks(lists[0], 3), f"{lists[0]}.3.layernorm_before"]
    clf = classifier(model)
    assert clf.layers == layers  # the blocks, not the patch embedding (the stem)
    assert reshape in clf.adaptation["activation_reshapes"][layers[-1]]
    x = torch.zeros((2, 3, SIZE, SIZE))
    with torch.no_grad(), record_activations(clf.module, clf.layers) as acts:
        assert clf.module(x).shape == (2, 3)
    assert all(acts[n].ndim == 4 and acts[n].shape[0] == 2 for n in layers)
    cams, _ = gradcam_maps(x, clf)
    assert cams.shape[:2] == (2, 1) and cams.shape[2:] == acts[layers[-1]].shape[2:]


def test_blocks_picked_evenly_in_depth_last_block_is_gradcams():
    clf = classifier(TinyViT(depth=8, pool="mean"))
    assert clf.layers == ["blocks.0", "blocks.2", "blocks.5", "blocks.7"]
    assert clf.layer_view("blocks.7").reshape == TokenMap(1, (4, 4))


def test_a_class_token_head_moves_gradcam_to_the_last_blocks_input():
    """With a head that reads only the class token, the last block's patch tokens feed
    nothing: their gradient is exactly zero and Grad-CAM there is an empty map (what the
    widget showed as the comparison, and the engine used as its prior). Discovery leaves
    that block out and takes its input normalisation (``norm1``, which reaches the class
    token through attention: the layer ViT users pick), where Grad-CAM has a real map."""
    from napari_medcam.classifiers.discovery import probe_calls, unheard

    model = TinyViT(depth=8)
    x = torch.randn((1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    calls = probe_calls(model, torch.zeros_like(x), (SIZE, SIZE))
    assert unheard(model, x, calls, blocks("blocks", 8), lambda out: out) == {"blocks.7"}
    clf = classifier(model)
    assert clf.layers == ["blocks.0", "blocks.2", "blocks.5", "blocks.7.norm1"]
    cams, _ = gradcam_maps(clf.normalise(torch.rand((1, 3, SIZE, SIZE))), clf)
    assert float(cams.std()) > 0  # on blocks.7 every value was the same (zero gradient)
    mean_pooled = TinyViT(depth=8, pool="mean")
    assert unheard(mean_pooled, x, calls, blocks("blocks", 8), lambda out: out) == set()


def test_reshape_round_trips_a_known_token_grid():
    grid = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).view(2, 5, 3, 4)  # (B, C, h, w)
    prefix = torch.full((2, 2, 5), -1.0)
    tokens = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], 1)  # (B, 2 + h·w, C)
    assert torch.equal(TokenMap(2, (3, 4))(tokens), grid)
    assert torch.equal(ChannelsLast()(grid.permute(0, 2, 3, 1)), grid)


def test_wrong_prefix_or_grid_is_refused_clearly():
    with pytest.raises(ValueError, match=r"0 prefix tokens: that needs \(B, 16, C\)"):
        classifier(TinyViT(), layers=["blocks.3"], reshape=TokenMap(0, (4, 4)))
    with pytest.raises(ValueError, match=r"3×3 patch grid"):
        classifier(TinyViT(), layers=["blocks.3"], reshape=TokenMap(1, (3, 3)))
    many = TinyViT(registers=20)  # 21 prefix tokens: more than a prefix is taken to be
    with pytest.raises(ValueError, match=r"not a feature map: .* 21 prefix tokens"):
        classifier(many, layers=["blocks.3"])
    clf = classifier(many, layers=["blocks.3"], reshape=TokenMap(21, (4, 4)))
    assert clf.adaptation["activation_reshapes"] == {
        "blocks.3": "reshape=TokenMap(prefix=21, grid=(4, 4))"
    }


@pytest.mark.parametrize("kind", ["dict", "tuple", "dataclass"])
def test_model_outputs_are_found(kind):
    clf = classifier(Returns(kind))
    assert isinstance(clf.module, AdaptedModel) and clf.num_classes == 3
    assert clf.module(torch.zeros((1, 3, SIZE, SIZE))).shape == (1, 3)
    # a class-token head: the last block is unheard, its input normalisation is not
    assert clf.layers == [*blocks("vit.blocks", 3), "vit.blocks.3.norm1"]
    assert "logits" in clf.adaptation["model_output"] or kind == "tuple"


def test_output_rule_is_documented_and_overridable():
    class Scores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = TinyViT()

        def forward(self, x):
            return {"scores": self.vit(x)}

    with pytest.raises(ValueError, match="pass output="):
        classifier(Scores())
    assert classifier(Scores(), output="scores").num_classes == 3
    clf = classifier(Scores(), output=lambda out: out["scores"])
    assert clf.adaptation["model_output"].startswith("output= <lambda>")


def test_adapted_model_keeps_the_models_names_and_weights():
    vit = TinyViT()
    clf = classifier(vit)
    assert isinstance(clf.module, AdaptedModel)
    assert clf.module.state_dict().keys() == vit.state_dict().keys()
    assert {n for n, _ in clf.module.named_modules()} == {n for n, _ in vit.named_modules()}
    clf.module.load_state_dict(TinyViT().state_dict())  # a weight file loads as it is
    copy = randomise_top_layers(clf, 1)  # deep-copies the module and wraps it again
    assert copy.layers == clf.layers and isinstance(copy.module, AdaptedModel)


def test_backbone_and_head_without_glue():
    backbone = TinyViT(pool="mean")
    backbone.head = nn.Identity()  # returns pooled features, as timm with num_classes=0
    clf = classifier(nn.Sequential(backbone, nn.Linear(DIM, 3)))
    assert clf.layers == blocks("0.blocks")
    assert classifier(backbone, head=nn.Linear(DIM, 3)).layers == blocks("backbone.blocks")


def test_hugging_face_backbone_and_a_separate_head():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=SIZE,
        patch_size=16,
        hidden_size=DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    backbone = transformers.ViTModel(config)  # returns an object with pooler_output
    clf = classifier(backbone, head=nn.Linear(DIM, 3))
    # its pooler reads the class token: the last layer's patch tokens reach no logit,
    # its input normalisation does
    assert clf.num_classes == 3 and len(clf.layers) == 2
    assert clf.layers[0].startswith("backbone.") and clf.layers[0].endswith(".0")
    assert clf.layers[-1].endswith(".1.layernorm_before")


def test_cnns_are_not_adapted():
    cnn = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    clf = classifier(cnn)
    assert clf.module is cnn and clf.adaptation == {} and clf.layers == ["0", "1"]


@pytest.mark.parametrize("make", [lambda: Returns("dataclass"), hf_vit], ids=["dataclass", "hf"])
def test_transformer_returning_an_object_explains(make):
    clf = classifier(make())
    image = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    exp = mc.explain(image, clf, config=mc.MedCAMConfig.fast().capped(5))
    assert exp.mask.shape == (SIZE, SIZE)
    assert exp.provenance["activation_layers"] == clf.layers
    assert exp.provenance["model_output"] == clf.adaptation["model_output"]
    assert exp.provenance["activation_reshapes"] == clf.adaptation["activation_reshapes"]
    heat = gradcam(image, clf)
    assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
