"""Layer discovery on common layouts, and torch.export (.pt2) model files.

Every model is written here in plain torch (no torchvision): narrow widths, small
inputs, untrained weights — discovery only needs one forward pass.
"""

import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import napari_medcam as mc
from napari_medcam.comparison import gradcam


def _bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


# --------------------------------------------------------------------- ResNet-18
class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module, called twice, in place."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout, widths 8-16-32-64."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin = (8, 16, 32, 64), 8
        for i, w in enumerate(widths, 1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ----------------------------------------------------------------------------- VGG
class VGGLike(nn.Module):
    """torchvision's VGG layout: ``features`` (flat Sequential), ``avgpool``, ``classifier``."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (8, 16, 32, 32):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)  # a real (head) pooling: 4 → 2
        self.classifier = nn.Sequential(
            nn.Linear(32 * 4, 16), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(16, 2)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------------- ModuleList
class ListNet(nn.Module):
    """Conv blocks in an ``nn.ModuleList`` (never called itself), iterated in forward."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, 8, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(_bn_relu(cin, cout), nn.MaxPool2d(2))
            for cin, cout in ((8, 8), (8, 16), (16, 16), (16, 32))
        )
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


# ----------------------------------------------------------------- timm-like stages
class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = _bn_relu(ch, ch)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.conv(x))


class Stage(nn.Module):
    """A ``downsample`` (identity in the first stage) then ``blocks`` in a ModuleList."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.downsample = _bn_relu(cin, cout, stride) if stride > 1 or cin != cout else None
        self.blocks = nn.ModuleList([ResBlock(cout), ResBlock(cout)])

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class StagesNet(nn.Module):
    """timm's layout: ``stem`` → ``stages`` (Sequential of `Stage`) → ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _bn_relu(3, 8, stride=2)
        self.stages = nn.Sequential(
            Stage(8, 8, 1), Stage(8, 16, 2), Stage(16, 32, 2), Stage(32, 32, 2)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


# -------------------------------------------------------------- functional pooling
class FunctionalPoolNet(nn.Module):
    """Conv blocks with pooling done by ``F.max_pool2d``/``F.adaptive_avg_pool2d``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = _bn_relu(3, 8), _bn_relu(8, 16)
        self.conv3, self.conv4 = _bn_relu(16, 32), _bn_relu(32, 32)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.max_pool2d(self.conv3(x), 2)
        x = self.conv4(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BareConvNet(nn.Module):
    """Bare convolutions, ReLU and pooling all functional, one pool module reused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)  # same resolution as conv1
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))  # 64 → 32
        x = self.pool(F.relu(self.conv3(x)))  # 32 → 16
        x = F.relu(self.conv4(x))  # 16
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# -------------------------------------------------------------------------- 3-D
class ListNet3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2))
            for cin, cout in ((1, 4), (4, 8), (8, 8))
        )
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean((2, 3, 4)))


def _classifier(net: nn.Module, size: int = 64, **kwargs) -> mc.Classifier:
    torch.manual_seed(0)
    return mc.Classifier(net, input_size=(size, size), **kwargs)


def _no_hooks_left(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_resnet18_gets_its_four_stages():
    clf = _classifier(ResNet18())
    # the stem (conv1/bn1/relu/maxpool) is loose layers beside blocks: left out
    assert clf.layers == ["layer1", "layer2", "layer3", "layer4"]
    assert _no_hooks_left(clf.module)


def test_vgg_picks_inside_features_deepest_included():
    clf = _classifier(VGGLike())
    # candidates: the last map at each resolution inside `features` — the ReLU
    # before each pool (64, 32, 16, 8 px), then the final pool (4 px); the head's
    # avgpool sits beside `features` and is left out. Five → four evenly spread
    # (indices 0, 1, 3, 4), the deepest included.
    assert clf.layers == ["features.3", "features.8", "features.18", "features.19"]
    assert all(name.startswith("features.") for name in clf.layers)


def test_blocks_in_a_modulelist_are_found():
    clf = _classifier(ListNet())
    assert clf.layers == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def test_timm_like_stages_get_stage_names():
    clf = _classifier(StagesNet())
    # stem (32 px) and stages.0 (32 px) share a resolution: with five candidates
    # the stage output of each resolution is kept
    assert clf.layers == ["stages.0", "stages.1", "stages.2", "stages.3"]


def test_functional_pooling_blocks_and_bare_convs():
    clf = _classifier(FunctionalPoolNet())
    assert clf.layers == ["conv1", "conv2", "conv3", "conv4"]
    # bare layers: conv1 → conv2 at one resolution count once; the reused pool
    # module counts at its last call (16 px), the deepest map is conv4's
    bare = _classifier(BareConvNet())
    assert bare.layers == ["conv2", "conv3", "conv4"]


def test_volume_classifier_layers():
    clf = mc.Classifier(ListNet3d(), input_size=(16, 16, 16), mean=(0.5,), std=(0.25,))
    assert clf.layers == ["blocks.0", "blocks.1", "blocks.2"]  # 8³, 4³, 2³ maps
    from napari_medcam.classifiers.demo3d import demo_volume_classifier

    assert demo_volume_classifier().layers == ["block1", "block2", "block3", "block4"]


def test_demo_classifier_layers_unchanged():
    assert mc.demo_classifier().layers == ["block1", "block2", "block3", "block4"]


def test_model_without_feature_maps_gets_none():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 2))
    clf = _classifier(mlp, size=16)
    assert clf.hookable and clf.layers == []


def test_explicit_layers_still_win():
    clf = _classifier(ResNet18(), layers=["layer2.1.bn2", "layer4"])
    assert clf.layers == ["layer2.1.bn2", "layer4"]
    with pytest.raises(ValueError, match="layers not found"):
        _classifier(ResNet18(), layers=["layer9"])


def test_hooks_removed_when_the_probe_fails():
    clf = _classifier(ListNet())
    clf.module.blocks[1].register_forward_hook(lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        clf.default_layers()
    clf.module.blocks[1]._forward_hooks.clear()
    assert _no_hooks_left(clf.module)


def test_gradcam_on_modulelist_model():
    clf = _classifier(ListNet())
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    cam = gradcam(img, clf)
    assert cam.shape == (64, 64) and np.isfinite(cam).all()
    assert cam.min() >= 0.0 and cam.max() <= 1.0


# ------------------------------------------------------------------- .pt2 programs
def _export(net: nn.Module, path, dynamic: bool = True, batch: int = 2, size: int = 32):
    torch.manual_seed(0)
    net = net.eval()
    x = torch.rand(batch, 3, size, size)
    dyn = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=dyn), str(path))
    return net


def test_pt2_program_is_hooked_and_explained(tmp_path):
    path = tmp_path / "m.pt2"
    net = _export(ListNet(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation (or any) warning on this path
        clf = mc.load_classifier(
            path, input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, class_names=["a", "b"]
        )
    assert clf.hookable and clf.name == "m.pt2"
    assert clf.layers == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)
    from napari_medcam.classifiers.prepare import prepare_input

    with torch.no_grad():
        expected = torch.softmax(net(prepare_input(img, clf)), 1)[0].numpy()
    np.testing.assert_allclose(clf.predict_proba(img), expected, atol=1e-5)
    assert gradcam(img, clf).shape == (32, 32)
    exp = mc.explain(img, clf, config=mc.MedCAMConfig.fast(steps=3, min_steps=1))
    assert exp.provenance["activation_layers"] == clf.layers
    assert exp.provenance["output_only_matching"] is False


def test_pt2_by_content_and_default_input_size(tmp_path):
    path = tmp_path / "exported.pt"  # a TorchScript suffix, but a .pt2 archive inside
    _export(ResNet18(), path, size=64)
    clf = mc.load_classifier(path)  # input size read from the program (64²)
    assert clf.input_size == (64, 64)
    assert clf.layers == ["layer1", "layer2", "layer3", "layer4"]


def test_pt2_static_batch_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "static.pt2"
    _export(ListNet(), path, dynamic=False, batch=1)
    with pytest.raises(ValueError, match=r"batch of 2.*dynamic batch dimension"):
        mc.load_classifier(path, input_size=(32, 32))
    path2 = tmp_path / "static2.pt2"
    _export(ListNet(), path2, dynamic=False, batch=2)
    with pytest.raises(
        ValueError, match=r"takes inputs of shape \(2, 3, 32, 32\).*fixed batch of 2.*Dim"
    ):
        mc.load_classifier(path2, input_size=(32, 32))


def test_pt2_wrong_input_size_names_the_exported_shape(tmp_path):
    path = tmp_path / "m.pt2"
    _export(ListNet(), path)
    with pytest.raises(ValueError, match=r"takes inputs of shape \(any, 3, 32, 32\)"):
        mc.load_classifier(path, input_size=(64, 64))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "is empty"),
        (b"not a zip at all" * 10, "corrupt or not a torch.export archive"),
    ],
)
def test_pt2_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.pt2"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        mc.load_classifier(path)


def test_pt2_truncated_or_torchscript_inside(tmp_path):
    good = tmp_path / "good.pt2"
    _export(ListNet(), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or not a torch.export archive"):
        mc.load_classifier(cut)
    other_zip = tmp_path / "script.pt2"  # a zip, but not torch.export's (TorchScript's layout)
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("script/data.pkl", b"")
        archive.writestr("script/code/__torch__/model.py", "")
    with pytest.raises(ValueError, match="not a torch.export archive"):
        mc.load_classifier(other_zip)
