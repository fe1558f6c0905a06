"""Session 80 (h_api): API consistency: timm's forward_head / num_features on every built backbone (and on a
headless one), reprs of the heads, loss functions as nn.Modules."""

import pytest
import torch

from transferkit.backbones import build_backbone, list_backbones


@pytest.mark.parametrize("name", ["convnet4", "lenet", "convnet7", "resnet18"])
def test_backbones_split_forward_as_timm(name):
    assert name in list_backbones()
    net = build_backbone(name, 3, in_channels=1, image_size=28).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        feats = net.forward_features(x)
        assert torch.equal(net.forward_head(feats), net(x))
        assert torch.equal(net.forward_head(feats, pre_logits=True), feats)
    assert net.num_features == net.embed_dim == feats.shape[1] and net.num_classes == 3


def test_headless_net_forward_head_gives_features():
    net = build_backbone("convnet4", 3, in_channels=1, image_size=28).eval()
    net.reset_classifier(0)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(net.forward_head(net.forward_features(x)), net(x))
    assert net.num_classes == 0 and net.num_features == net(x).shape[1]


def test_small_modules_show_their_settings_in_repr():
    from transferkit.clip import LearnableTemperature
    from transferkit.heads import HeadRows, LinearHead
    assert "rows=[2, 0]" in repr(HeadRows(LinearHead(4, 3), [2, 0]))
    text = repr(LearnableTemperature(0.07, learn=False))
    assert "temperature=0.07" in text and "max_scale=100" in text and "learn=False" in text
