import math

import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.discriminators import (
    MultiLayerDiscriminator,
    default_layers,
    discriminator_loss,
    inverted_label_loss,
)
from transferkit.errors import TransferkitError


def test_table5_structure_for_convnet4_sum():
    net = build_backbone("convnet4", num_classes=5, in_channels=3, image_size=28)
    layers = default_layers(net, same_label_space=True)
    assert layers == ["conv4", "fc1", "head"]
    disc = MultiLayerDiscriminator.for_network(net, layers, combine="sum")
    shapes = [(m.in_features, m.out_features) for m in disc.layers]
    tail = [(m.in_features, m.out_features) for m in disc.tail if isinstance(m, torch.nn.Linear)]
    assert shapes + tail == [(64, 64), (64, 5), (5, 500), (500, 500), (500, 500), (500, 1)]  # Table 5


def test_table8_structure_for_lenet_and_concat_sizes():
    net = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    layers = default_layers(net, same_label_space=True)
    disc = MultiLayerDiscriminator.for_network(net, layers)
    linear = [(m.in_features, m.out_features) for m in list(disc.layers) + list(disc.tail)
              if isinstance(m, torch.nn.Linear)]
    assert linear == [(800, 500), (500, 10), (10, 500), (500, 500), (500, 1)]  # Table 8
    concat = MultiLayerDiscriminator.for_network(net, layers, combine="concat")
    # eq. 2 with concatenation: layer l reads |d_{l-1}| + |E_l| = 2 |E_l|
    assert concat.layer_input_sizes() == [800, 1000, 20]


def test_disjoint_label_sets_use_second_and_third_last():
    net = build_backbone("convnet4", num_classes=5, in_channels=1, image_size=28)
    assert default_layers(net, same_label_space=False) == ["conv4", "fc1"]


def test_forward_and_decay_gamma_effect():
    torch.manual_seed(0)
    acts = [torch.randn(4, 64, 1, 1), torch.randn(4, 64), torch.randn(4, 5)]
    d1 = MultiLayerDiscriminator([64, 64, 5], gamma=1.0)
    d2 = MultiLayerDiscriminator([64, 64, 5], gamma=0.5)
    d2.load_state_dict(d1.state_dict())
    out1, out2 = d1(acts), d2(acts)
    assert out1.shape == (4,)
    assert not torch.allclose(out1, out2)
    with pytest.raises(TransferkitError, match="expected 3 activations"):
        d1(acts[:2])
    with pytest.raises(TransferkitError, match="gamma"):
        MultiLayerDiscriminator([4], gamma=1.5)


def test_losses_known_values_and_gradient_directions():
    zero = torch.zeros(3)
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    ls = torch.zeros(3, requires_grad=True)
    lt = torch.zeros(3, requires_grad=True)
    discriminator_loss(ls, lt).backward()
    # the discriminator pushes source logits up and target logits down
    assert (ls.grad < 0).all() and (lt.grad > 0).all()
    ls.grad = lt.grad = None
    inverted_label_loss(ls, lt).backward()
    # the encoder (eq. 4) pushes the other way
    assert (ls.grad > 0).all() and (lt.grad < 0).all()
    confident = torch.full((3,), 10.0)
    assert discriminator_loss(confident, -confident).item() < 1e-3


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_eq2_layer_l_reads_relu_of_decayed_previous_output_combined_with_the_tap(combine):
    torch.manual_seed(0)
    acts = [torch.randn(4, 3, 2, 2), torch.randn(4, 6), torch.randn(4, 5)]
    disc = MultiLayerDiscriminator([12, 6, 5], gamma=0.5, combine=combine, hidden=7)
    mix = (lambda d, e: 0.5 * d + e) if combine == "sum" else (lambda d, e: torch.cat([0.5 * d, e], 1))
    d = disc.layers[0](acts[0].flatten(1))  # d_1 = E_1 through the first layer
    d = disc.layers[1](torch.relu(mix(d, acts[1])))  # d_l from σ(γ d_{l-1} ⊕ E_l), σ = ReLU
    d = disc.layers[2](torch.relu(mix(d, acts[2])))
    assert torch.allclose(disc(acts), disc.tail(d).squeeze(1), atol=1e-6)


def test_table6_convolutional_discriminator_for_resnet18():
    from transferkit.discriminators import ConvMultiLayerDiscriminator, multilayer_discriminator
    net = build_backbone("resnet18", num_classes=10, in_channels=3, image_size=224)
    layers = default_layers(net, same_label_space=False)
    assert layers == ["layer3", "layer4"]
    disc = multilayer_discriminator(net, layers)  # auto: the fully connected one would hold 1.26 G weights
    assert isinstance(disc, ConvMultiLayerDiscriminator)
    convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
             for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(256, 512, (3, 3), (2, 2), (1, 1)), (512, 512, (3, 3), (1, 1), (1, 1))]  # Table 6 conv1, conv2
    assert [type(m) for m in disc.layers[0]] == [torch.nn.Conv2d, torch.nn.BatchNorm2d]
    assert [(m.in_features, m.out_features) for m in disc.tail] == [(512, 1)]  # conv3: 1x1x1
    assert disc.layer_input_shapes() == [(256, 14, 14), (512, 7, 7)]
    assert sum(p.numel() for p in disc.parameters()) < 4_000_000
    lenet = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    assert isinstance(multilayer_discriminator(lenet, default_layers(lenet, True)), MultiLayerDiscriminator)


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_conv_discriminator_computes_eq2_with_feature_maps_then_vectors(combine):
    from transferkit.discriminators import ConvMultiLayerDiscriminator
    torch.manual_seed(0)
    disc = ConvMultiLayerDiscriminator([(4, 6, 6), (8, 3, 3), (5,)], gamma=0.5, combine=combine).eval()
    double = 2 if combine == "concat" else 1
    assert disc.layer_input_shapes() == [(4, 6, 6), (8 * double, 3, 3), (5 * double,)]
    assert disc.layers[0][0].stride == (2, 2) and disc.layers[2].out_features == 8  # hidden: last map's channels
    acts = [torch.randn(3, 4, 6, 6), torch.randn(3, 8, 3, 3), torch.randn(3, 5)]
    sigma = torch.nn.functional.leaky_relu
    mix = (lambda d, e: 0.5 * d + e) if combine == "sum" else (lambda d, e: torch.cat([0.5 * d, e], 1))
    d = disc.layers[0](acts[0])  # a map onto the next map's grid
    d = disc.layers[1](sigma(mix(d, acts[1]), 0.2))  # a map onto the next vector: conv, pool, linear
    assert d.shape == (3, 5)
    d = disc.layers[2](sigma(mix(d, acts[2]), 0.2))
    assert torch.allclose(disc(acts), disc.tail(sigma(d, 0.2)).squeeze(1), atol=1e-6)


def test_conv_discriminator_sees_both_domains_in_one_batchnorm_pass():
    from transferkit.discriminators import ConvMultiLayerDiscriminator
    torch.manual_seed(0)
    disc = ConvMultiLayerDiscriminator([(4, 1, 1)]).train()
    src = torch.randn(16, 4, 1, 1)
    tgt = src + 3.0  # a constant shift: per-domain BatchNorm statistics would remove it
    alone_s, alone_t = disc([src]), disc([tgt])
    assert torch.allclose(alone_s, alone_t, atol=1e-4)
    joint_s, joint_t = disc([src], [tgt])
    assert not torch.allclose(joint_s, joint_t, atol=1e-2)
    both = disc([torch.cat([src, tgt])])
    assert torch.allclose(torch.cat([joint_s, joint_t]), both)
    fc = MultiLayerDiscriminator([4])
    pair = fc([src], [tgt])
    assert torch.equal(pair[0], fc([src])) and torch.equal(pair[1], fc([tgt]))  # no BatchNorm: each on its own


def test_conv_discriminator_refuses_shapes_it_cannot_chain():
    from transferkit.discriminators import ConvMultiLayerDiscriminator, multilayer_discriminator
    with pytest.raises(TransferkitError, match=r"no strided 3x3 convolution maps the feature map \(4, 3, 3\)"):
        ConvMultiLayerDiscriminator([(4, 3, 3), (8, 6, 6)])
    with pytest.raises(TransferkitError, match="cannot be followed by the feature map"):
        ConvMultiLayerDiscriminator([(5,), (8, 3, 3)])
    with pytest.raises(TransferkitError, match="needs a feature map"):
        ConvMultiLayerDiscriminator([(5,), (3,)])
    net = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match="discriminator must be one of auto, fc, conv"):
        multilayer_discriminator(net, ["conv2"], "cnn")
    with pytest.raises(TransferkitError, match=r"activation 1 has shape \(50, 5, 5\), expected \(50, 4, 4\)"):
        multilayer_discriminator(net, ["conv2"], "conv")([torch.zeros(2, 50, 5, 5)])


@pytest.mark.parametrize("method", ["dann", "confusion", "adda"])
def test_a_single_layer_discriminator_on_a_large_activation_warns(method, monkeypatch):
    import warnings

    from transferkit.methods import adversarial, get_method
    monkeypatch.setattr(adversarial, "LARGE_DISCRIMINATOR", 300_000)  # lenet: conv2 800 x 500, embedding 500 x 500
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    with pytest.warns(UserWarning, match=r"discriminator on \['conv2'\] of lenet has over 0 M weights in its first "
                                         r"layer \(800 inputs x 500"):
        get_method(method)(net, layers=["conv2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method(method)(net)  # the embedding


def test_the_large_discriminator_count_includes_concats_wider_inputs_and_layer_names_are_checked():
    from transferkit.backbones import build_backbone
    from transferkit.discriminators import _fc_weights, check_layer_order
    from transferkit.errors import UnknownNameError
    d = MultiLayerDiscriminator([800, 500, 10], combine="concat", hidden=7)
    linear = sum(layer.weight.numel() for layer in d.layers[:-1])
    assert _fc_weights([800, 500, 10], "concat") == linear == 800 * 500 + 2 * 500 * 10
    assert _fc_weights([800, 500, 10]) == sum(layer.weight.numel()
                                              for layer in MultiLayerDiscriminator([800, 500, 10]).layers[:-1])
    with pytest.raises(UnknownNameError, match="unknown layer 'fc_1'"):
        check_layer_order(build_backbone("lenet", 10), ["conv2", "fc_1"])
