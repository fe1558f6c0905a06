"""Tests from a fourth mutation pass over methods/adversarial.py, methods/discrepancy.py, methods/dsn.py and
discriminators.py: DANN's discriminator on several layers (every activation flattened and joined); ADDA and the untied
multilayer form without source labels running the target encoder on the target batch alone (a joined pass would mix
the source into the target encoder's BatchNorm statistics); the tied multilayer form training every unit, the
classifier too, keeping no source copy, and its ``prepare`` still setting which units train; ``multilayer_adv``'s
layer rule for label sets of the same size under other names, and its placeholder warning for an unlabeled domain of
one class that the source also has; dsn's size warning just above its threshold and not at it; a stride of the
convolutional discriminator fitting both sides of the grid; the single-layer discriminator flattening a feature map
itself; the fully connected eq. 2 discriminator asked for by name with Tables 5 and 8's 500 hidden units; the
convolutional one without layers naming the missing layer. Each test fails when the code it names is changed in the
way its comment says.

Judged equivalent, so not tested: DANN's ``lambda_schedule == "dann"`` -> ``!= "constant"`` (the option check admits
only those two names); ADDA's ``@torch.no_grad()`` on ``source_features`` dropped (the fixed source encoder's
parameters have ``requires_grad`` false and the images none, so no graph is built either way); ``multilayer_adv``'s
``lr_mult > 0`` check dropped (the options check refuses ``lr_mult`` <= 0 by its name pattern first, as the earlier
passes found).
Left surviving: none of the mutants tried.
"""

import warnings

import pytest
import torch
from helpers import seeded_lenet, shifted_domain, uda_batch

from transferkit.discriminators import (
    ConvMultiLayerDiscriminator,
    MLPDiscriminator,
    _conv_stride,
    default_layers,
    discriminator_loss,
    multilayer_discriminator,
)
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.methods import get_method

_net = seeded_lenet


def _renamed(domain, names):
    return Domain("u", domain.images, domain.labels % len(names), list(names))


# ---- dann: several layers -----------------------------------------------------------------------------------------


def test_dann_on_two_layers_feeds_both_flattened_activations_to_its_discriminator():
    # mutant: DANN's discriminator reads the first of its layers only
    net = _net()
    method = get_method("dann")(net, layers=["conv2", "head"], lambda_schedule="constant")
    batch = uda_batch(n_s=6, n_t=4)
    (x_s, _), x_t = batch.source, batch.unlabeled
    with torch.no_grad():
        acts = net.forward_features(torch.cat([x_s, x_t]), ["conv2", "head"])
        logit = method.discriminator(torch.cat([acts["conv2"].flatten(1), acts["head"]], 1))
        expected = discriminator_loss(logit[:6], logit[6:])
        assert float(method.losses(batch)["domain"]) == pytest.approx(float(expected), rel=1e-5)


# ---- adda and the untied multilayer form: the target encoder's batch ------------------------------------------------


@pytest.mark.parametrize("name", ["adda", "adda_encoder", "multilayer_adda"])
def test_without_source_labels_the_target_encoder_runs_on_the_target_batch_alone(name):
    # mutants: ADDA's losses, or the untied multilayer form's, take the joined taps (the source batch goes through
    # E^t, and its BatchNorm statistics)
    net = _net()
    method = get_method(name)(net)
    seen = []
    forward = net.forward_features

    def recording(x, names):
        seen.append(len(x))
        return forward(x, names)
    net.forward_features = recording
    method.losses(uda_batch(n_s=8, n_t=5))
    assert seen == [5]


# ---- multilayer_adv: the layer rule and its placeholder warning ----------------------------------------------------


def test_as_many_classes_under_other_names_take_the_second_and_third_last_layers():
    # mutant: prepare() compares the number of classes, not their names
    src, t = shifted_domain(8, 0.0, 1, classes=4), shifted_domain(8, 0.3, 2, classes=4)
    method = get_method("multilayer_adv")(_net())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shares three names with the source: not placeholders
        method.prepare({"source": src, "unlabeled": _renamed(t, ["0", "1", "2", "x"])})
    assert method.layers == default_layers(method.net, False) and len(method.discriminator.layers) == 2


def test_one_unlabeled_class_that_the_source_has_too_warns_as_a_placeholder():
    # mutants: the one-class case of the placeholder warning dropped, or tested as no class
    src, t = shifted_domain(8, 0.0, 1, classes=4), shifted_domain(8, 0.3, 2, classes=4)
    with pytest.warns(UserWarning, match="look like placeholders"):
        get_method("multilayer_adv")(_net()).prepare({"source": src, "unlabeled": _renamed(t, ["0"])})


def test_the_tied_multilayer_form_trains_every_unit_with_the_classifier():
    # mutant: multilayer_adv (not untied) trains the feature units only, as its untied form
    net = _net()
    trained = {id(p) for p in get_method("multilayer_adv")(net).param_groups()[0]["params"]}
    assert trained == {id(p) for p in net.parameters()}
    untied = get_method("multilayer_adda")(net)
    assert {id(p) for p in untied.param_groups()[0]["params"]} == {id(p) for p in net.parameters_of(net.feature_names)}


def test_the_tied_multilayer_form_keeps_no_copy_of_the_network():
    # mutant: multilayer_adv builds the fixed source copy (and its frozen child) for the tied form too
    method = get_method("multilayer_adv")(_net())
    assert not hasattr(method, "source_net") and method.frozen_children == ()
    assert not any(k.startswith("source_net.") for k in method.state_dict())


# ---- dsn and the convolutional discriminator's strides -------------------------------------------------------------


def test_dsn_warns_just_above_the_large_size_and_not_at_it(monkeypatch):
    # mutants: dsn's size warning from a higher threshold, or at it (>=)
    from transferkit.methods import dsn
    torch.manual_seed(0)
    method = get_method("dsn")(_net())
    extra = sum(p.numel() for m in (method.private_source, method.private_target, method.decoder)
                for p in m.parameters())
    monkeypatch.setattr(dsn, "LARGE_DISCRIMINATOR", extra - 1)
    with pytest.warns(UserWarning, match="dsn's private encoders and decoder"):
        get_method("dsn")(_net())
    monkeypatch.setattr(dsn, "LARGE_DISCRIMINATOR", extra)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("dsn")(_net())


def test_conv_stride_must_fit_the_height_and_the_width():
    # mutant: _conv_stride accepts a stride that maps one side of the grid only
    assert _conv_stride((8, 4), (4, 2)) == 2
    assert _conv_stride((8, 4), (4, 4)) is None
    assert _conv_stride((8, 4), (8, 2)) is None


def test_the_mlp_discriminator_flattens_a_feature_map_itself():
    # mutant: MLPDiscriminator.forward without the flatten (a feature map reaches its first linear layer as is)
    disc = MLPDiscriminator(50 * 4 * 4, hidden=8, depth=1)
    maps = torch.rand(3, 50, 4, 4)
    with torch.no_grad():
        assert torch.allclose(disc(maps), disc(maps.flatten(1)))


def test_the_fc_form_asked_for_by_name_has_500_hidden_units_by_default():
    # mutant: multilayer_discriminator(kind="fc") with another hidden default than Tables 5 and 8's 500
    disc = multilayer_discriminator(_net(), ["conv2", "fc1"], "fc")
    assert disc.layers[-1].out_features == 500 and disc.tail[-1].in_features == 500
    assert get_method("multilayer_adv")(_net(), discriminator="fc").discriminator.layers[-1].out_features == 500


def test_the_conv_discriminator_without_layers_says_it_needs_one():
    # mutant: its own layer count check dropped (the feature-map check refuses with a message about feature maps)
    with pytest.raises(TransferkitError, match="at least one layer"):
        ConvMultiLayerDiscriminator([])


def test_prepare_still_sets_which_units_train():
    # mutant: multilayer_adv's prepare() without the base one (units left as frozen or trainable as they were)
    src, t = shifted_domain(8, 0.0, 1, classes=4), shifted_domain(8, 0.3, 2, classes=4)
    tied, untied = _net().requires_grad_(False), _net()
    get_method("multilayer_adv")(tied).prepare({"source": src, "unlabeled": t})
    assert all(p.requires_grad for p in tied.parameters())
    get_method("multilayer_adda")(untied).prepare({"source": src, "unlabeled": t})
    assert not any(p.requires_grad for p in untied.unit("head").parameters())
    assert all(p.requires_grad for p in untied.parameters_of(untied.feature_names))
