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


def test_loss_modules_give_their_functions_values_and_show_their_options():
    import inspect

    from transferkit import losses
    torch.manual_seed(0)
    s, t, logits = torch.randn(6, 4), torch.randn(5, 4) + 1, torch.randn(6, 3)
    pairs = [(losses.MMDLoss(scales=(1.0, 2.0)), losses.mmd2(s, t, scales=(1.0, 2.0)), (s, t)),
             (losses.CoralLoss(), losses.coral(s, t), (s, t)),
             (losses.EntropyLoss(), losses.entropy(logits), (logits,)),
             (losses.MinimumClassConfusionLoss(temperature=1.5), losses.minimum_class_confusion(logits, 1.5),
              (logits,)),
             (losses.DifferenceLoss(), losses.difference_loss(s, s[:, :2]), (s, s[:, :2])),
             (losses.ScaleInvariantMSELoss(), losses.scale_invariant_mse(s, s + 0.1 * s ** 2), (s, s + 0.1 * s ** 2))]
    for module, value, tensors in pairs:
        assert isinstance(module, torch.nn.Module) and torch.equal(module(*tensors), value), type(module).__name__
    assert "scales=(1.0, 2.0), bandwidth=None" in repr(pairs[0][0]) and "temperature=1.5" in repr(pairs[3][0])
    # the modules' defaults are the functions'
    for module, fn in [(losses.MMDLoss, losses.mmd2), (losses.GradientReversal, losses.grad_reverse),
                       (losses.MinimumClassConfusionLoss, losses.minimum_class_confusion)]:
        given = inspect.signature(module).parameters
        assert {k: p.default for k, p in given.items()} == \
            {k: p.default for k, p in inspect.signature(fn).parameters.items() if k in given}


def test_gradient_reversal_module_flips_the_gradient():
    from transferkit.losses import GradientReversal
    x = torch.ones(3, requires_grad=True)
    layer = GradientReversal(0.5)
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5)) and "coeff=0.5" in repr(layer)


def test_captioned_domain_has_a_length_and_a_short_repr_as_domain():
    from transferkit import CaptionedDomain, Domain
    images = Domain("toy", torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 1]), ["zero", "one"])
    cd = CaptionedDomain(images, ["a zero", ["a one", "one"], "a one"])
    assert len(cd) == len(cd.domain) == 4
    assert repr(cd) == "CaptionedDomain('toy/captions', 4 pairs, 3 captions)"
