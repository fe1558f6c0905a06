"""Tests from a third mutation pass over methods/adversarial.py, methods/discrepancy.py, methods/dsn.py and
discriminators.py: the size in GiB that the large single-layer discriminator warning gives; the refusal of a
repeated layer by the multi-layer discriminator built directly (a method's layer check refuses it first); the
fixed source encoder of ``adda`` and ``multilayer_adda`` built in eval mode; the units full ADDA trains (every
unit, the classifier too) against ``adda_encoder``, and ``adda_encoder``'s refusal of the full variant, naming
adda; ``multilayer_adv``'s defaults (γ 0.1, ⊕ sum, α 0.1), its untied form's refusal naming the option
``same_label_space``, the ``hidden`` and ``tail_depth`` it passes on and the fit time its results keep beside
the layers; the single-layer discriminator's logit per sample for a batch of one; the average over positions
before a vector layer of the convolutional discriminator. Each test fails when the code it names is changed in
the way its comment says.

Judged equivalent, so not tested: ``multilayer_adv``'s own checks that ``untied`` and ``same_label_space`` are
true / false and that ``lr_mult > 0`` (the options check every method runs first refuses the same values by the
annotation, the switch or the name pattern); the untied form's ``frozen_children`` dropped (``train_mode`` keeps
every child whose parameters all have ``requires_grad`` false in eval mode, and the optimiser groups leave such
parameters out); ``for_network`` sizing ``embedding`` through ``unit_output_shapes`` (its ``embedding`` entry is
``(embed_dim,)``). Mutants that the earlier tests kill, in files beyond the earlier passes'
(``test_methods_base_mutation.py``): ADDA's variant check, its ``lr_mult`` default and groups, its source copy's
``requires_grad_(False)``, also for the untied form.
Left surviving: none of the mutants tried.
"""

import warnings

import pytest
import torch
from helpers import linear_sizes, seeded_lenet, uda_batch

from transferkit.backbones import build_backbone
from transferkit.discriminators import ConvMultiLayerDiscriminator, MLPDiscriminator, multilayer_discriminator
from transferkit.errors import TransferkitError
from transferkit.methods import get_method


def test_the_single_discriminator_warning_gives_its_size_in_gib_at_4_bytes_a_weight():
    # mutant: _mlp_for's GiB counted at 2 bytes a weight (800 x 262144 weights are 0.8 GiB in float32, not 0.4)
    net = seeded_lenet()
    with torch.device("meta"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_method("dann")(net, layers=["conv2"], hidden=2**18, depth=1)  # depth 2: h x h, refused
    messages = [str(w.message) for w in caught]
    assert any("over 210 M weights" in m and "0.8 GiB in float32" in m for m in messages), messages


def test_the_multilayer_discriminator_refuses_a_repeated_layer():
    # mutant: check_layer_order compares with the sorted positions of every name, repeats included (fc1, fc1 passes)
    with pytest.raises(TransferkitError, match="without repeats"):
        multilayer_discriminator(seeded_lenet(), ["fc1", "fc1"], "fc")
    with pytest.raises(TransferkitError, match="without repeats"):
        multilayer_discriminator(seeded_lenet(), ["conv2", "fc1", "fc1"], "conv")


# ---- ADDA: the fixed source encoder, what the full variant trains, its learning rate --------------


@pytest.mark.parametrize("name", ["adda_encoder", "multilayer_adda"])
def test_the_fixed_source_encoder_is_built_in_eval_mode(name):
    # mutants: ADDA's or multilayer_adv's untied source_net copied without .eval() (convnet4's BatchNorm then
    # normalises the source features by the batch's statistics, until a training step's train_mode)
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    method = get_method(name)(net)
    assert not method.source_net.training
    x = uda_batch(n_s=4).source[0]
    with torch.no_grad():
        expected = net.eval().forward_features(x, method.layers)
    if name == "adda_encoder":
        assert torch.allclose(method.source_features(x), expected["embedding"], atol=1e-6)
    else:
        taps = method.source_taps(x)
        assert all(torch.allclose(taps[n], expected[n], atol=1e-6) for n in method.layers)


def test_full_adda_trains_every_unit_and_encoder_only_the_feature_units():
    # mutant: the full variant trains the feature units only (as encoder_only; seed 000 Table 3's ADDA trains both)
    net = seeded_lenet()
    assert get_method("adda")(net).trainable_units() == list(net.unit_names)
    assert get_method("adda_encoder")(net).trainable_units() == list(net.feature_names)



def test_adda_encoder_refuses_the_full_variant_and_names_adda():
    # mutant: adda_encoder's refusal of another variant without its text (the user is not told to use adda)
    with pytest.raises(TransferkitError, match="for variant='full' use adda"):
        get_method("adda_encoder")(seeded_lenet(), variant="full")

# ---- multilayer_adv: eq. 2's defaults ------------------------------------------------------------


@pytest.mark.parametrize("name", ["multilayer_adv", "multilayer_adda"])
def test_multilayer_discriminator_defaults_to_seed_000s_decay_and_sum(name):
    # mutants: multilayer_adv's default gamma 1 (seed 000 §4.3: 0.1); its default combine concat
    disc = get_method(name)(seeded_lenet()).discriminator
    assert (disc.gamma, disc.combine) == (0.1, "sum")


def test_the_untied_form_names_the_option_same_label_space_it_refuses():
    # mutant: the refusal of same_label_space in the untied form without the option's name
    with pytest.raises(TransferkitError, match="option same_label_space"):
        get_method("multilayer_adda")(seeded_lenet(), same_label_space=True)


def test_multilayer_adv_weighs_eq4_by_seed_000s_alpha_0_1_by_default():
    # mutant: multilayer_adv's default weight 1
    ml = get_method("multilayer_adv")
    default, given = ml(seeded_lenet()), ml(seeded_lenet(), weight=1.0)
    given.discriminator.load_state_dict(default.discriminator.state_dict())
    light, full = (m.losses(uda_batch())["adv_encoder"].detach() for m in (default, given))
    assert float(light) == pytest.approx(0.1 * float(full), rel=1e-5)



def test_multilayer_adv_results_keep_the_fit_time_beside_the_layers():
    # mutant: multilayer_adv's extra_results returns only the layers (the row's fit_wall_s is lost)
    method = get_method("multilayer_adv")(seeded_lenet())
    method.fit_wall_s = 1.5
    assert method.extra_results() == {"fit_wall_s": 1.5, "layers": list(method.layers)}

def test_multilayer_adv_passes_hidden_and_tail_depth_to_its_discriminator():
    # mutants: multilayer_adv drops a given tail_depth; it drops a given hidden (the fc form's 500 then)
    disc = get_method("multilayer_adv")(seeded_lenet(), hidden=64, tail_depth=0).discriminator
    assert linear_sizes(disc.tail) == [(64, 1)]
    assert linear_sizes(get_method("multilayer_adv")(seeded_lenet(), tail_depth=0).discriminator.tail) == [(500, 1)]


def test_the_mlp_discriminator_gives_one_logit_per_sample_for_a_batch_of_one():
    # mutant: MLPDiscriminator squeezes every size-1 dimension (a batch of one gives a 0-d logit)
    disc = MLPDiscriminator(3, hidden=4, depth=1)
    assert disc(torch.zeros(1, 3)).shape == (1,)
    assert disc(torch.zeros(2, 3)).shape == (2,)


def test_the_conv_discriminator_averages_a_feature_map_over_positions_before_a_vector_layer():
    # mutant: the feature map -> vector layer of eq. 2 max-pools the positions (the docstring: average)
    torch.manual_seed(0)
    disc = ConvMultiLayerDiscriminator([(2, 3, 3), (4,)], hidden=5).eval()
    layer, e = disc.layers[0], torch.randn(6, 2, 3, 3)
    h = layer[2](layer[1](layer[0](e)))  # conv, BatchNorm, leaky ReLU
    assert torch.allclose(layer(e), layer[5](h.mean((2, 3))), atol=1e-6)
