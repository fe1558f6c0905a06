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
