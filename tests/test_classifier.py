"""The Classifier wrapper, loaders, registry, and the demo model's accuracy."""

import numpy as np
import pytest
import torch
from torch import nn

import napari_medcam as mc
from napari_medcam.classifiers import registered_classifiers


class TinyNet(nn.Module):
    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.deep(self.features(x))).flatten(1))


def tiny_factory() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


def test_wrapper_freezes_and_picks_feature_layers():
    clf = mc.Classifier(TinyNet(), input_size=(32, 32), class_names=["a", "b", "c"])
    assert not clf.module.training
    assert all(not p.requires_grad for p in clf.module.parameters())
    assert clf.layers == ["features", "deep"]  # feature maps only, shallow → deep
    assert clf.class_index("b") == 1 and clf.class_index(2) == 2 and clf.class_index(None) is None


def test_channel_handling_and_scaling():
    clf = mc.Classifier(TinyNet(), input_size=(32, 32))
    grey = np.full((20, 20), 65535, np.uint16)
    assert clf.to_unit_range(grey).shape == (20, 20, 3)
    assert clf.to_unit_range(grey).max() == pytest.approx(1.0)
    rgba = np.zeros((20, 20, 4), np.uint8)
    assert clf.to_unit_range(rgba).shape == (20, 20, 3)
    assert clf.to_unit_range(np.full((9, 9, 3), 0.25, np.float32)).max() == pytest.approx(0.25)


def test_demo_classifier_is_registered_and_small(tmp_path):
    assert "demo" in registered_classifiers()
    clf = mc.load_classifier("demo")
    assert clf.class_names == ["normal", "lesion"]
    from importlib import resources

    weights = resources.files("napari_medcam.classifiers") / "weights" / "demo_tissue.pt"
    assert weights.stat().st_size < 2 * 1024 * 1024


def test_demo_classifier_accuracy_on_fresh_seeds():
    clf = mc.demo_classifier()
    correct = 0
    n = 0
    for seed in range(9000, 9100):  # never used in training (seeds ≥ 100 000)
        for label in (0, 1):
            img, _ = mc.synthetic_tile(seed, label)
            correct += int(clf.predict_proba(img).argmax() == label)
            n += 1
    assert correct / n >= 0.97


def test_factory_with_state_dict(tmp_path):
    weights = tmp_path / "w.pt"
    net = tiny_factory()
    with torch.no_grad():
        net.fc.bias.fill_(3.0)
    torch.save(net.state_dict(), weights)
    clf = mc.load_classifier(
        "tests.test_classifier:tiny_factory", weights=weights, input_size=(32, 32)
    )
    assert float(clf.module.fc.bias[0]) == 3.0


def test_torchscript_model_explains_with_outputs_only(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.script(tiny_factory()).save(str(path))
    clf = mc.load_classifier(path, input_size=(32, 32))
    assert clf.layers == [] and not clf.hookable
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    exp = mc.explain(img, clf, config=mc.MedCAMConfig.fast(steps=3, min_steps=1))
    assert exp.provenance["output_only_matching"] is True
    assert "output-only" in exp.status


def test_state_dict_loading_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ValueError, match="not a weights file"):
        mc.load_classifier("tests.test_classifier:tiny_factory", weights=path)
