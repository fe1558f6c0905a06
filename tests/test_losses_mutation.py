"""Tests from a mutation pass over losses, discriminators, methods/discrepancy and methods/dsn.

Each test kills at least one mutant that the earlier tests let through (the mutant it targets
is named in the test's comment). Expected values come from the docstrings' equations, the
seeds (000 Tables 5/6, 003 DSN) or docs/adaptation.md, written out by hand on tiny tensors.
"""

from types import SimpleNamespace

import pytest
import torch
from helpers import linear_sizes, spread_lenet

from transferkit.discriminators import ConvMultiLayerDiscriminator, MultiLayerDiscriminator, _conv_stride
from transferkit.errors import TransferkitError
from transferkit.losses import CORAL_GRAM_WIDTH, coral, frozen_call, grad_reverse, minimum_class_confusion, mmd2


def test_grad_reverse_default_coefficient_is_one():
    # mutant: default coeff 0.5
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    (grad_reverse(x) * torch.tensor([3.0, 5.0])).sum().backward()
    assert x.grad.tolist() == [-3.0, -5.0]


def test_mmd_of_samples_with_zero_spread_is_zero_not_nan():
    # mutant: σ² not clamped, so identical points give 0 / 0 in every kernel
    s, t = torch.zeros(2, 3), torch.zeros(3, 3)
    value = mmd2(s, t)
    assert torch.isfinite(value) and float(value) == 0.0


def test_coral_of_narrow_features_uses_the_direct_form_exact_when_covariances_agree():
    # mutant: the Gram form also for narrow features (d = 8 > n_s + n_t = 6): its difference of
    # O(1) terms leaves float32 rounding of ~1e-8; the direct form's (C_s - C_t)² is ~1e-15
    s = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    assert float(coral(s, s + 1.0)) < 1e-12


def test_coral_of_wide_features_is_clamped_at_zero():
    # mutant: no clamp; the Gram form's cancellation can round below 0 when C_s = C_t (a shift)
    values = []
    for seed in (7, 12, 16, 19):
        s = torch.randn(6, CORAL_GRAM_WIDTH + 1, generator=torch.Generator().manual_seed(seed))
        values.append(float(coral(s, s + 0.5)))
    assert min(values) >= 0.0


def test_minimum_class_confusion_refuses_an_empty_batch_by_name():
    # mutant: the B > 0 check dropped (the loss is then NaN)
    with pytest.raises(TransferkitError, match="non-empty B x K matrix"):
        minimum_class_confusion(torch.zeros(0, 3))


def test_frozen_call_passes_keyword_arguments_to_the_module():
    # mutant: kwargs dropped
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x, scale=1.0):
            return self.w * x * scale

    m = Scaled()
    x = torch.tensor([1.0, 3.0], requires_grad=True)
    out = frozen_call(m, x, scale=10.0)
    assert out.tolist() == [20.0, 60.0]
    out.sum().backward()
    assert x.grad.tolist() == [20.0, 20.0] and m.w.grad is None


def test_multilayer_discriminator_default_tail_is_table5s_two_hidden_layers():
    # mutants: constructor default tail_depth 1; for_network's default for unlisted backbones 1
    assert linear_sizes(MultiLayerDiscriminator([64, 64, 5]).tail) == [(500, 500), (500, 500), (500, 1)]
    net = SimpleNamespace(name="other", embed_dim=6, unit_output_shapes=lambda: {"head": (3,)})
    disc = MultiLayerDiscriminator.for_network(net, ["embedding", "head"], hidden=4)
    assert [(m.in_features, m.out_features) for m in disc.layers] == [(6, 3), (3, 4)]
    assert linear_sizes(disc.tail) == [(4, 4), (4, 4), (4, 1)]


def test_conv_stride_maps_grids_like_a_resnets_3x3_padding_1_convolutions():
    # mutants: stride 1 never tried; output size h // s instead of (h - 1) // s + 1
    assert _conv_stride((3, 3), (3, 3)) == 1
    assert _conv_stride((7, 7), (4, 4)) == 2  # (7 - 1) // 2 + 1 = 4
    assert _conv_stride((7, 7), (3, 3)) == 3
    disc = ConvMultiLayerDiscriminator([(4, 3, 3), (8, 3, 3)])
    assert disc.layers[0][0].stride == (1, 1)
    assert disc.layers[0](torch.zeros(2, 4, 3, 3)).shape == (2, 8, 3, 3)


def test_conv_discriminator_averages_the_last_map_over_positions():
    # mutant: max over positions instead of the average (Table 6's conv3 logits averaged)
    torch.manual_seed(0)
    disc = ConvMultiLayerDiscriminator([(2, 3, 3)], hidden=4).eval()
    e = torch.randn(5, 2, 3, 3)
    d = torch.nn.functional.leaky_relu(disc.layers[0](e), 0.2)
    expected = d.mean((2, 3)) @ disc.tail[0].weight.T + disc.tail[0].bias
    assert torch.allclose(disc([e]), expected.squeeze(1), atol=1e-6)


def test_conv_discriminator_joint_pass_splits_unequal_domain_batches():
    # mutant: the split point taken from the target batch's size
    torch.manual_seed(0)
    disc = ConvMultiLayerDiscriminator([(4, 2, 2)]).train()
    src, tgt = torch.randn(5, 4, 2, 2), torch.randn(3, 4, 2, 2)
    d_s, d_t = disc([src], [tgt])
    assert d_s.shape == (5,) and d_t.shape == (3,)
    both = disc([torch.cat([src, tgt])])
    assert torch.allclose(d_s, both[:5]) and torch.allclose(d_t, both[5:])


def _method_batch(n=4, progress=0.5):
    from transferkit.engine import Batch
    net = spread_lenet()
    g = torch.Generator().manual_seed(1)
    x_s, x_t = torch.rand(n, 1, 28, 28, generator=g), (torch.rand(n, 1, 28, 28, generator=g) * 0.7 + 0.3)
    return net, Batch(step=1, progress=progress, source=(x_s, torch.arange(n) % 10), unlabeled=x_t)


def test_coral_and_entmin_use_their_documented_defaults():
    # mutants: coral's default layer the logits; entmin's default weight 1 (docs/adaptation.md:
    # coral weight 1.0, layers default the embedding; entmin weight 0.1)
    from transferkit.losses import entropy
    from transferkit.methods import get_method
    net, b = _method_batch()
    (x_s, _), x_t = b.source, b.unlabeled
    coral_term = get_method("coral")(net).losses(b)["coral"]
    entmin_term = get_method("entmin")(net).losses(b)["entmin"]
    with torch.no_grad():
        expected_coral = coral(net.forward_features(x_s), net.forward_features(x_t))
        assert float(expected_coral) != pytest.approx(float(coral(net(x_s), net(x_t))), rel=1e-2)
        expected_entmin = 0.1 * entropy(net(x_t))
    assert float(coral_term.detach()) == pytest.approx(float(expected_coral), rel=1e-4)
    assert float(entmin_term.detach()) == pytest.approx(float(expected_entmin), rel=1e-5)


@pytest.mark.parametrize("name, kw, message", [("entmin", {"weight": 0.0}, "entmin weight must be > 0"),
                                               ("mcc", {"weight": 0.0}, "mcc weight and temperature must be > 0")])
def test_discrepancy_methods_refuse_non_positive_weights_and_temperatures(name, kw, message):
    # mutants: entmin's check weight >= 0; mcc's own check dropped (the options check common to all
    # methods takes weights >= 0: a zero weight would silently drop the term the method is named after;
    # it already refuses temperature 0)
    from transferkit.backbones import build_backbone
    from transferkit.methods import get_method
    with pytest.raises(TransferkitError, match=message):
        get_method(name)(build_backbone("lenet", num_classes=10), **kw)


def test_private_encoder_sizes_its_linear_layer_for_odd_image_sizes():
    # mutant: h // 4 for the grid after two stride-2 convolutions (ceil(ceil(h / 2) / 2) = ceil(h / 4))
    from transferkit.methods.dsn import private_encoder
    enc = private_encoder((1, 30, 30), 4)  # 30 -> 15 -> 8
    assert enc[1].in_features == 64 * 8 * 8
    assert enc(torch.zeros(2, 1, 30, 30)).shape == (2, 4)


def test_shared_decoder_outputs_a_sigmoid_image_in_the_unit_interval():
    # mutant: no sigmoid
    from transferkit.methods.dsn import SharedDecoder
    torch.manual_seed(0)
    dec = SharedDecoder(3, (1, 2, 2), hidden=5)
    code = 10 * torch.randn(6, 3)
    with torch.no_grad():
        out = dec(code)
        expected = torch.sigmoid(dec.net(code)).view(6, 1, 2, 2)
    assert out.shape == (6, 1, 2, 2)
    assert torch.allclose(out, expected)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_dsn_defaults_are_the_papers_weights():
    # mutants: α, β or γ default changed (docstring and docs: α = 0.01, β = 0.05, γ = 0.25)
    from transferkit.discriminators import discriminator_loss
    from transferkit.losses import difference_loss, scale_invariant_mse
    from transferkit.methods import get_method
    net, b = _method_batch()
    (x_s, _), x_t = b.source, b.unlabeled
    method = get_method("dsn")(net)
    terms = method.losses(b)
    with torch.no_grad():
        hc_s, hc_t = net.forward_features(x_s), net.forward_features(x_t)
        hp_s, hp_t = method.private_source(x_s), method.private_target(x_t)
        recon = (scale_invariant_mse(x_s, method.decoder(hc_s + hp_s))
                 + scale_invariant_mse(x_t, method.decoder(hc_t + hp_t)))
        diff = difference_loss(hc_s, hp_s) + difference_loss(hc_t, hp_t)
        sim = discriminator_loss(method.discriminator(hc_s), method.discriminator(hc_t))
    assert float(terms["recon"].detach()) == pytest.approx(0.01 * float(recon), rel=1e-4)
    assert float(terms["difference"].detach()) == pytest.approx(0.05 * float(diff), rel=1e-4)
    assert float(terms["similarity"].detach()) == pytest.approx(0.25 * float(sim), rel=1e-4)


def test_dsn_constant_lambda_schedule_reverses_the_full_gradient():
    # mutant: the constant schedule's coefficient other than 1
    from transferkit.discriminators import discriminator_loss
    from transferkit.methods import get_method
    net, b = _method_batch(progress=0.1)  # the dann schedule would give λ = 0.46 here
    (x_s, _), x_t = b.source, b.unlabeled
    method = get_method("dsn")(net, sim_weight=1.0, lambda_schedule="constant")
    w = net.unit("fc1")[1].weight
    logit = method.discriminator(net.forward_features(torch.cat([x_s, x_t])))
    plain = torch.autograd.grad(discriminator_loss(logit[:4], logit[4:]), w)[0]
    method.zero_grad(set_to_none=True)
    method.losses(b)["similarity"].backward()
    assert torch.allclose(w.grad, -plain, rtol=1e-4, atol=1e-5 * float(plain.abs().max()))


def test_dsn_private_encoders_are_separate_per_domain():
    # mutant: one private encoder shared by both domains (seed 003: E_p^s and E_p^t)
    from transferkit.methods import get_method
    net, b = _method_batch()
    method = get_method("dsn")(net)
    source_ids = {id(p) for p in method.private_source.parameters()}
    assert source_ids.isdisjoint(id(p) for p in method.private_target.parameters())
    x = b.unlabeled
    before = method.private_source(x).detach().clone()
    with torch.no_grad():
        for p in method.private_target.parameters():
            p.add_(1.0)
    assert torch.equal(method.private_source(x), before)
