"""Tests from a second mutation pass over methods/adversarial.py and discriminators.py: the
single-layer discriminators' sizes (DANN's and ADDA's ``hidden`` and ``depth``, confusion's
default layer), DANN's SGD learning rate given with ``lr`` and its domain term for source and
target batches of different sizes, the default weights (confusion 0.1, ADDA 1) and ADDA's use
of no source label by default, the target entropy of ``entmin_weight`` in every adversarial
method, Adam's β1 of 0, ``multilayer_adv``'s layer rule (a labelled ``target`` without labels,
placeholder class names, given layers, the untied form, a second ``prepare``), the layers in its
results and its checkpoint options, eq. 4 of the untied form with the convolutional (joint
BatchNorm) discriminator, and the multi-layer discriminators' own checks (γ, ⊕, at least one
layer), the ReLU before the fully connected tail, the strides tried and the fully connected
fallback when no convolutional form fits. Each test fails when the code it names is changed in
the way its comment says; expected values come from the docstrings and seed 000 / 003.

Judged equivalent, so not tested: `_beta1`'s `not isinstance(beta1, bool)` (the annotation check
of every method refuses true/false first); `multilayer_adv`'s `lr_mult > 0` -> `>= 0` (the
option check refuses `lr_mult` <= 0 by its name pattern before `__init__` runs); auto's
`len(in_shapes[0]) == 3` dropped (a first vector makes the conv form refuse, and the refusal is
caught); ADDA's entropy of `f_t` for the full variant (its layer is the head: the same logits).
Left surviving: none of this pass's mutants. The pass found one real bug, fixed since:
multilayer_adda with `hidden: 500` written out kept `{"options": {}}` in its options, so its
checkpoint signature differed from the default's."""

import math
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import linear_sizes, seeded_lenet, shifted_domain, spread_lenet, toy_domain, uda_batch

from transferkit.discriminators import (
    ConvMultiLayerDiscriminator,
    MLPDiscriminator,
    MultiLayerDiscriminator,
    _conv_stride,
    default_layers,
    discriminator_loss,
    inverted_label_loss,
    multilayer_discriminator,
)
from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.losses import entropy
from transferkit.methods import get_method

_net = seeded_lenet
_domain = shifted_domain


# ---- single-layer discriminators: sizes and options -------------------------------------


def test_dann_and_adda_discriminators_take_hidden_and_depth():
    # mutants: _mlp_for drops depth; DANN's default depth 1; ADDA ignores hidden
    assert linear_sizes(get_method("dann")(_net()).discriminator) == [(500, 500), (500, 500), (500, 1)]
    digits = get_method("dann")(_net(), hidden=100, depth=1).discriminator  # the DANN paper's digit one
    assert linear_sizes(digits) == [(500, 100), (100, 1)]
    assert linear_sizes(get_method("adda")(_net(), hidden=64).discriminator) == [(10, 64), (64, 64), (64, 1)]


def test_confusion_reads_the_embedding_by_default_with_weight_0_1():
    # mutants: confusion's default layer the logits; its default weight 1
    method = get_method("confusion")(_net())
    assert linear_sizes(method.discriminator)[0] == (500, 500)
    heavy = get_method("confusion")(_net(), weight=1.0)
    heavy.discriminator.load_state_dict(method.discriminator.state_dict())
    batch = uda_batch()
    light, full = method.losses(batch)["confusion"].detach(), heavy.losses(batch)["confusion"].detach()
    assert float(light) == pytest.approx(0.1 * float(full))


def test_dann_sgd_uses_the_given_learning_rate():
    # mutant: optimizer="sgd" always takes μ_0 = 0.01, even with lr given
    assert get_method("dann")(_net(), optimizer="sgd", lr=0.05).optimizer_override == {
        "optimizer": "sgd", "momentum": 0.9, "lr": 0.05}


def test_dann_domain_term_splits_source_and_target_at_the_source_batch_size():
    # mutant: the joined logits split at the target batch's size
    net = _net()
    method = get_method("dann")(net, weight=1.0, lambda_schedule="constant")
    batch = uda_batch(n_s=8, n_t=5)
    (x_s, _), x_t = batch.source, batch.unlabeled
    with torch.no_grad():
        logit = method.discriminator(net.forward_features(torch.cat([x_s, x_t])))
        expected = discriminator_loss(logit[:8], logit[8:])
        assert float(method.losses(batch)["domain"]) == pytest.approx(float(expected), rel=1e-5)


def test_adda_weight_defaults_to_one_and_reads_no_source_label():
    # mutants: ADDA's default weight 0.1; its default source_weight 1 (the source cross entropy added)
    for name in ("adda", "adda_encoder"):
        default, given = get_method(name)(_net()), get_method(name)(_net(), weight=2.0)
        given.discriminator.load_state_dict(default.discriminator.state_dict())
        terms = {k: v.detach() for k, v in default.losses(uda_batch()).items()}
        assert set(terms) == {"disc", "adv_target"}, name
        doubled = given.losses(uda_batch())["adv_target"].detach()
        assert 2 * float(terms["adv_target"]) == pytest.approx(float(doubled), rel=1e-5)


@pytest.mark.parametrize("name", ["dann", "confusion", "adda", "adda_encoder", "multilayer_adv", "multilayer_adda"])
def test_entmin_weight_adds_the_entropy_of_the_target_predictions(name):
    # mutants: DANN drops entmin_weight; DANN, confusion, ADDA or untied multilayer pass other logits than the target's
    net = spread_lenet()
    method = get_method(name)(net, entmin_weight=0.5)
    batch = uda_batch()
    terms = {k: v.detach() for k, v in method.losses(batch).items()}
    with torch.no_grad():
        expected, other = 0.5 * entropy(net(batch.unlabeled)), 0.5 * entropy(net(batch.source[0]))
    assert abs(float(expected) - float(other)) > 1e-3  # the test tells the two apart
    assert float(terms["entmin"]) == pytest.approx(float(expected), rel=1e-4)


def test_adam_beta1_of_zero_is_accepted():
    # mutant: beta1 must be > 0 (Adam's β1 lies in [0, 1): 0 is plain RMSprop-like Adam)
    assert [g["beta1"] for g in get_method("adda")(_net(), beta1=0).param_groups()] == [0.0, 0.0]
    assert [g["beta1"] for g in get_method("multilayer_adv")(_net(), beta1=0.0).param_groups()] == [0.0, 0.0]


def test_the_large_single_discriminator_warning_names_both_fixes(monkeypatch):
    # mutant: the warning's fix (tap a smaller activation with layers, or lower hidden) dropped
    from transferkit.methods import adversarial
    monkeypatch.setattr(adversarial, "LARGE_DISCRIMINATOR", 1000)
    with pytest.warns(UserWarning, match=r"tap a smaller activation with `layers`.*lower `hidden`"):
        get_method("dann")(_net())


# ---- multilayer_adv: the layer rule and what it records ---------------------------------


def test_a_target_without_labels_leaves_the_labelled_unlabeled_domain_to_decide():
    # mutant: prepare() takes target= even when it has no labels (its placeholder class flips the layers)
    src, same = _domain(8, 0.0, 1), _domain(8, 0.3, 2)
    method = get_method("multilayer_adv")(_net())
    method.prepare({"source": src, "target": Domain.unlabeled("t", same.images), "unlabeled": same})
    assert method.layers == default_layers(method.net, True)


def test_placeholder_names_that_are_none_of_the_sources_warn_even_for_several_classes():
    # mutant: the warning needs one class AND no shared name (it is one OR the other)
    src, t = _domain(8, 0.0, 1), _domain(8, 0.3, 2)
    renamed = Domain("u", t.images, t.labels % 3, ["a", "b", "c"])
    with pytest.warns(UserWarning, match="look like placeholders"):
        get_method("multilayer_adv")(_net()).prepare({"source": src, "unlabeled": renamed})


def test_given_layers_or_label_space_do_not_warn_about_placeholder_names():
    # mutant: the placeholder warning also when the layers do not depend on the class names
    src, t = _domain(8, 0.0, 1), _domain(8, 0.3, 2)
    placeholder = Domain("u", t.images, torch.zeros(8, dtype=torch.long), ["unlabelled"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("multilayer_adv")(_net(), layers=["conv2", "fc1"]).prepare(
            {"source": src, "unlabeled": placeholder})
        get_method("multilayer_adv")(_net(), same_label_space=True).prepare({"source": src, "unlabeled": placeholder})


def test_the_untied_form_keeps_its_feature_layers_for_other_label_sets():
    # mutant: _auto_layers also for untied (prepare swaps in the second and third last units, the logits among them)
    src, five = _domain(8, 0.0, 1), _domain(8, 0.3, 2, classes=5)
    method = get_method("multilayer_adda")(_net())
    method.prepare({"source": src, "unlabeled": five})
    assert method.layers == ["conv1", "conv2", "fc1"] and len(method.discriminator.layers) == 3


def test_a_second_prepare_keeps_the_discriminator_it_chose():
    # mutant: _auto_layers not cleared after the rebuild (each later prepare builds a fresh discriminator)
    src, five = _domain(8, 0.0, 1), _domain(8, 0.3, 2, classes=5)
    method = get_method("multilayer_adv")(_net())
    method.prepare({"source": src, "unlabeled": five})
    disc = method.discriminator
    method.prepare({"source": src, "unlabeled": five})
    assert method.discriminator is disc and method.layers == ["conv2", "fc1"]


def test_results_record_the_layers_the_fit_resolved():
    # mutant: extra_results without the layers
    src, five = _domain(8, 0.0, 1), _domain(8, 0.3, 2, classes=5)
    method = get_method("multilayer_adv")(_net())
    method.prepare({"source": src, "unlabeled": five})
    assert method.extra_results()["layers"] == ["conv2", "fc1"]


def test_hidden_500_is_left_out_of_the_options_for_the_fc_discriminator_only():
    # mutants: the pop of hidden=500 dropped; popped for the convolutional one too (where 500 is not the default)
    ml = get_method("multilayer_adv")
    assert ml(_net(), hidden=500).init_options == {}
    assert ml(_net(), hidden=500, discriminator="conv").init_options == {"hidden": 500, "discriminator": "conv"}


def test_multilayer_adda_with_hidden_500_written_out_has_the_default_signature(tmp_path):
    # was a real bug: the pop of hidden=500 from the subclass's **options left {"options": {}} behind
    engine = Engine(TrainConfig(steps=2, batch_size=8, progress=False), seed=0, checkpoint_dir=tmp_path)
    domains, ml = {"source": toy_domain(16), "unlabeled": toy_domain(16)}, get_method("multilayer_adda")
    assert ml(_net(), hidden=500).init_options == {}
    assert engine._signature(ml(_net(), hidden=500), domains, None) == engine._signature(ml(_net()), domains, None)


def test_untied_eq4_with_the_convolutional_discriminator_sees_both_domains_in_one_pass():
    # mutant: the untied form runs eq. 4's target half alone (BatchNorm statistics of the target only)
    torch.manual_seed(0)
    method = get_method("multilayer_adda")(_net(), discriminator="conv", weight=0.3)
    assert isinstance(method.discriminator, ConvMultiLayerDiscriminator)
    method.train_mode()
    batch = uda_batch()
    (x_s, _), x_t = batch.source, batch.unlabeled
    terms = {k: v.detach() for k, v in method.losses(batch).items()}
    with torch.no_grad():
        a_s = method.source_net.forward_features(x_s, method.layers)
        a_t = method.net.forward_features(x_t, method.layers)
        d_s, d_t = method.discriminator([a_s[n] for n in method.layers], [a_t[n] for n in method.layers])
    assert float(terms["adv_encoder"]) == pytest.approx(float(0.3 * inverted_label_loss(d_s, d_t)), rel=1e-5)


# ---- the multi-layer discriminators' own checks and structure ---------------------------


@pytest.mark.parametrize("cls, shapes", [(MultiLayerDiscriminator, [4]), (ConvMultiLayerDiscriminator, [(4, 2, 2)])])
def test_multilayer_discriminators_refuse_gamma_0_and_an_unknown_combine(cls, shapes):
    # mutants: gamma 0 accepted (eq. 2 would drop d_(l-1)); the combine check dropped ('cat' silently concatenates)
    with pytest.raises(TransferkitError, match=r"gamma must be in \(0, 1\], got 0"):
        cls(shapes, gamma=0.0)
    with pytest.raises(TransferkitError, match="combine must be 'sum' or 'concat', got 'cat'"):
        cls(shapes, combine="cat")


def test_the_fc_discriminator_needs_a_layer():
    # mutant: the at-least-one-layer check dropped
    with pytest.raises(TransferkitError, match="at least one layer"):
        MultiLayerDiscriminator([])


def test_the_fc_tail_applies_relu_before_each_linear_layer():
    # mutants: no ReLU between d_L and the tail's last layer; the tail's hidden layers as Linear, ReLU
    torch.manual_seed(0)
    disc = MultiLayerDiscriminator([6, 3], hidden=5, tail_depth=1)
    e1, e2 = torch.randn(4, 6), torch.randn(4, 3)
    d = disc.layers[1](torch.relu(disc.gamma * disc.layers[0](e1) + e2))
    lin = [m for m in disc.tail if isinstance(m, nn.Linear)]
    expected = lin[1](torch.relu(lin[0](torch.relu(d)))).squeeze(1)
    assert torch.allclose(disc([e1, e2]), expected, atol=1e-6)


def test_the_mlp_discriminator_uses_relu():
    # mutant: another activation between the MLP's layers
    torch.manual_seed(0)
    disc = MLPDiscriminator(3, hidden=4, depth=1)
    x = torch.randn(5, 3)
    lin = [m for m in disc.net if isinstance(m, nn.Linear)]
    assert torch.allclose(disc(x), lin[1](torch.relu(lin[0](x))).squeeze(1), atol=1e-6)


def test_conv_stride_tries_strides_up_to_the_grid_size():
    # mutant: range(1, max(size)) (a stride equal to the grid size never tried)
    assert _conv_stride((3, 3), (1, 1)) == 3
    assert _conv_stride((2, 2), (1, 1)) == 2


def test_auto_falls_back_to_the_fc_discriminator_when_no_convolution_chains_the_maps():
    # mutant: the conv form's refusal not caught (auto raises instead of building the fc one, which warns)
    from transferkit.backbones import from_sequential
    seq = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=2), nn.Flatten(),
                        nn.Linear(16 * 30 * 30, 10))
    net = from_sequential(seq, input_shape=(1, 28, 28))  # 28 x 28 then 30 x 30: no stride maps a grid onto a larger one
    with torch.device("meta"), pytest.warns(UserWarning, match="has over .* M weights"):
        disc = multilayer_discriminator(net, ["unit1", "unit2"])
    assert isinstance(disc, MultiLayerDiscriminator)


def test_concats_wider_inputs_count_toward_the_size_warning_and_the_auto_choice(monkeypatch):
    # mutants: for_network's warning and auto's choice count the weights as for sum (|E_l| inputs, not 2 |E_l|)
    from transferkit import discriminators
    monkeypatch.setattr(discriminators, "LARGE_DISCRIMINATOR", 407_000)  # lenet: sum 405,000, concat 410,000
    net = _net()
    with pytest.warns(UserWarning, match="has over"):
        MultiLayerDiscriminator.for_network(net, ["conv2", "fc1", "head"], combine="concat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiLayerDiscriminator.for_network(net, ["conv2", "fc1", "head"])
    auto = multilayer_discriminator(net, ["conv2", "fc1", "head"], combine="concat")
    assert isinstance(auto, ConvMultiLayerDiscriminator)


def test_multilayer_discriminator_passes_its_options_on_and_counts_activations():
    # mutants: for_network overrides a given tail_depth; kind "conv" drops gamma/combine; "fc" drops hidden;
    # the conv form's activation-count check dropped (zip silently reads fewer layers)
    net = _net()
    fc = MultiLayerDiscriminator.for_network(net, ["fc1", "head"], tail_depth=0)
    assert linear_sizes(fc.tail) == [(500, 1)]
    conv = multilayer_discriminator(net, ["conv2", "fc1"], "conv", gamma=0.5, combine="concat")
    assert (conv.gamma, conv.combine) == (0.5, "concat")
    narrow = multilayer_discriminator(net, ["fc1", "head"], "fc", hidden=64)
    assert linear_sizes(narrow)[-1] == (64, 1)
    with pytest.raises(TransferkitError, match="expected 2 activations, got 1"):
        conv([torch.zeros(2, 50, 4, 4)])


def test_dann_coefficient_follows_seed_003s_schedule():
    # sanity for the schedule switch: λ_p = weight · (2 / (1 + exp(-10 p)) - 1)
    method = get_method("dann")(_net(), weight=0.5)
    assert method.coefficient(0.25) == pytest.approx(0.5 * (2 / (1 + math.exp(-2.5)) - 1))
