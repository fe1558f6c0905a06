"""Tests from a mutation pass over methods/base.py (registry, get_method, option checking,
option recording for checkpoint signatures, numbers given as text), methods/adaptation.py
and methods/adversarial.py (ADDA's two steps, the untied multi-layer form, the layer rule).
Each test kills at least one mutation that the earlier tests let survive; expected values
come from the docstrings and seed 000 §4.3, not from snapshots of current outputs."""

import sys

import pytest
import torch
import torch.nn as nn
from helpers import seeded_lenet, shifted_domain

from transferkit.engine import Batch
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.methods import get_method
from transferkit.methods.base import METHODS, Method, _check_option_values, option_choices, trained_options

_net = seeded_lenet
_domain = shifted_domain


# ---- option checking -----------------------------------------------------------------


def test_documented_option_choices_are_accepted():
    """DANN's docstring: lambda_schedule "dann" or "constant"; lr_schedule None keeps the
    experiment's schedule; optimizer None keeps the experiment's optimiser."""
    assert "constant" in option_choices("lambda_schedule") and None in option_choices("optimizer")
    _check_option_values("dann", {"lambda_schedule": "constant", "optimizer": None, "lr_schedule": None})
    assert get_method("dann")(_net(), lambda_schedule="constant").coefficient(0.0) == pytest.approx(0.1)
    with pytest.raises(TransferkitError, match="dann: option optimizer must be one of adam, sgd, null, got 'rms'"):
        _check_option_values("dann", {"optimizer": "rms"})


def test_switch_options_must_be_true_or_false_whatever_their_default():
    with pytest.raises(TransferkitError, match="mcc: option detach_weights must be true or false, got 'yes'"):
        get_method("mcc")(_net(), detach_weights="yes")  # defaults to True
    with pytest.raises(TransferkitError, match="flex: option keep_candidates must be true or false, got 1"):
        get_method("flex")(_net(), keep_candidates=1)  # defaults to False


def test_none_means_not_given_and_is_not_checked_as_a_number():
    _check_option_values("m", {"hidden": None, "lr": None, "weight": None, "tau": None, "head_lr_mult": None})


def test_options_passed_on_with_star_star_options_are_checked_too():
    with pytest.raises(TransferkitError, match="adda_encoder: option weight must be a finite number >= 0, got -1"):
        get_method("adda_encoder")(_net(), weight=-1)
    with pytest.raises(TransferkitError, match="multilayer_adda: option hidden must be a whole number >= 1, got 0"):
        get_method("multilayer_adda")(_net(), hidden=0)


def test_adda_variant_and_empty_layers_are_refused_by_name():
    with pytest.raises(TransferkitError, match="variant must be full or encoder_only, got 'both'"):
        get_method("adda")(_net(), variant="both")
    with pytest.raises(TransferkitError, match="layers must name at least one unit"):
        get_method("dann")(_net(), layers=[])


# ---- numbers given as text -------------------------------------------------------------


def test_int_options_take_whole_numbers_given_as_text_only():
    assert get_method("dann")(_net(), hidden="64").discriminator(torch.zeros(2, 500)).shape == (2,)
    assert get_method("dann")(_net(), hidden="64").init_options == {"hidden": 64}
    assert get_method("dann")(_net(), hidden="1e2").init_options == {"hidden": 100}
    with pytest.raises(TransferkitError, match=r"dann: option hidden must be a whole number >= 1, got '2\.5'"):
        get_method("dann")(_net(), hidden="2.5")  # not truncated to 2


def test_numbers_take_their_options_type_as_the_config_counts_do():
    """``hidden: 100.0`` is taken (as ``train.steps: 2.0`` is) and ``weight: 5`` is 5.0: one
    job digest for both spellings of a number (they train the same)."""
    method = get_method("dann")(_net(), hidden=100.0, weight=5)
    assert method.init_options == {"hidden": 100, "weight": 5.0}
    assert type(method.init_options["hidden"]) is int and type(method.init_options["weight"]) is float
    with pytest.raises(TransferkitError, match=r"dann: option hidden must be a whole number >= 1, got 2\.5"):
        get_method("dann")(_net(), hidden=2.5)
    with pytest.raises(TransferkitError, match="dann: option weight must be a finite number >= 0, got True"):
        get_method("dann")(_net(), weight=True)  # a bool is no number: not made 1.0
    from transferkit import rundir
    from transferkit.config import load_config
    ints, floats = (load_config(None, ["methods=[dann]", f"options.dann.weight={w}", "options.dann.hidden=64.0"])
                    for w in ("5", "5.0"))
    assert rundir.job_digest(ints, "dann") == rundir.job_digest(floats, "dann")
    assert rundir.job_digest(ints, "dann", "untyped") != rundir.job_digest(floats, "dann", "untyped")
    assert rundir.job_digest(ints, "dann", "untyped") in rundir.row_digests(ints, "dann")  # an older row resumes
    # ... also when its config wrote `5` and the resume writes `5.0` (older digests hashed the number as written)
    assert rundir.job_digest(ints, "dann", "untyped") in rundir.row_digests(floats, "dann")
    assert rundir.job_digest(floats, "dann", "untyped") in rundir.row_digests(ints, "dann")
    mixed = load_config(None, ["methods=[dann]", "options.dann.weight=5", "options.dann.entmin_weight=2.0"])
    other = load_config(None, ["methods=[dann]", "options.dann.weight=5.0", "options.dann.entmin_weight=2"])
    assert rundir.job_digest(mixed, "dann", "untyped") in rundir.row_digests(other, "dann")
    assert rundir.job_digest(mixed, "dann", "given") in rundir.row_digests(other, "dann")
    from transferkit.methods.base import number_spellings
    assert len(number_spellings(get_method("dann"), {"weight": 5, "entmin_weight": 2.0, "hidden": 64})) == 4
    assert number_spellings(get_method("dann"), {"weight": 5, "entmin_weight": 2.0}, most=1) == \
        [{"weight": 5, "entmin_weight": 2}, {"weight": 5.0, "entmin_weight": 2.0}]
    changed = load_config(None, ["methods=[dann]", "options.dann.weight=6.0", "options.dann.entmin_weight=2"])
    assert rundir.row_digests(changed, "dann").isdisjoint({rundir.job_digest(mixed, "dann", f)
                                                           for f in rundir.DIGEST_FORMS})


def test_number_text_with_surrounding_spaces_is_a_number():
    method = get_method("dann")(_net(), weight=" 1e-3 ")
    assert method.weight == 0.001 and method.init_options == {"weight": 0.001}


def test_text_stays_text_for_an_option_that_also_takes_text():
    class Tagged(Method):
        name = "tagged_test_method"

        def __init__(self, net, tag: int | str = "auto", rate: float = 1.0):
            super().__init__(net)
            self.tag, self.rate = tag, rate

    method = Tagged(_net(), tag="12", rate="2e-1")
    assert method.tag == "12" and method.rate == 0.2  # "text or containers are welcome as given"


def test_trained_options_read_text_numbers_and_leave_out_defaults_and_untrained_options():
    dann = get_method("dann")
    assert trained_options(dann, {"weight": "1e-3", "hidden": "500"}) == {"weight": 0.001}  # hidden: its default
    assert trained_options(dann, {"weight": "0.1"}) == {}
    flex = get_method("flex")
    assert flex.not_trained_options == ("workers", "keep_candidates")
    assert trained_options(flex, {"workers": 4, "keep_candidates": True, "image_units": ["stn"]}) == \
        {"image_units": ["stn"]}


def test_a_tuple_default_given_as_a_list_is_not_recorded():
    mmd = get_method("mmd")
    assert mmd(_net(), scales=[0.25, 0.5, 1.0, 2.0, 4.0]).init_options == {}  # YAML gives lists
    assert mmd(_net(), scales=[1.0]).init_options == {"scales": [1.0]}


# ---- registry -------------------------------------------------------------------------


def test_a_prefix_without_its_argument_is_an_unknown_method_and_the_error_lists_the_prefixes():
    with pytest.raises(UnknownNameError, match=r"^unknown method 'ft_unit:'; known: .*ft_unit:<arg>"):
        get_method("ft_unit:")
    with pytest.raises(UnknownNameError, match=r"ft_unit:<arg>"):
        get_method("no_such_method_anywhere")


def test_get_method_imports_the_modules_named_in_transferkit_plugins(tmp_path, monkeypatch):
    (tmp_path / "plugin_for_get_method.py").write_text(
        "from transferkit.methods.base import Method, register\n\n\n"
        "@register\nclass Plugged(Method):\n    name = 'plugged_for_get_method'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", " plugin_for_get_method ")
    try:
        assert get_method("plugged_for_get_method").__module__ == "plugin_for_get_method"
    finally:
        METHODS.pop("plugged_for_get_method", None)
        sys.modules.pop("plugin_for_get_method", None)


# ---- ADDA's two steps and the untied multi-layer form ------------------------------------


@pytest.mark.parametrize("name", ["adda", "adda_encoder", "multilayer_adda"])
def test_the_source_encoder_is_the_pretrained_network_and_the_target_encoder_starts_from_it(name):
    """Seed 000 §4.3 / ADDA: E^s is a fixed copy of the source network; E^t (the method's
    network) is initialised from it, so both start bit-identical to the given network."""
    net = _net(seed=3)
    given = {k: v.clone() for k, v in net.state_dict().items()}
    method = get_method(name)(net)
    assert method.net is net and method.source_net is not net
    for k, v in given.items():
        assert torch.equal(method.source_net.state_dict()[k], v), k
        assert torch.equal(method.net.state_dict()[k], v), k
    assert not any(p.requires_grad for p in method.source_net.parameters())  # fixed, whatever the optimiser
    assert "source_net" in method.frozen_children
    method.train_mode()
    assert method.net.training and not any(m.training for m in method.source_net.modules())


def test_the_fixed_source_encoder_keeps_its_batchnorm_statistics_during_training():
    from transferkit.backbones import from_sequential
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 13 * 13, 16), nn.ReLU(), nn.Linear(16, 10))
    for name in ("adda", "multilayer_adda"):
        method = get_method(name)(from_sequential(seq, units=[3, 1, 2], input_shape=(1, 28, 28)))
        before = {k: v.clone() for k, v in method.source_net.state_dict().items()}
        src, x_t = _domain(8, 0.0, 1), _domain(8, 0.3, 2).images
        x_s, y_s = src.images, src.labels
        method.train_mode()  # as the engine does before its steps
        method.losses(Batch(step=0, progress=0.0, source=(x_s, y_s), unlabeled=x_t))  # nothing cached
        assert all(torch.equal(v, before[k]) for k, v in method.source_net.state_dict().items()), name


def test_adda_scales_the_learning_rate_of_the_target_encoder_and_discriminator():
    """ADDA's docstring: ``lr_mult`` (default 0.2: ADDA's 2e-4 for the experiment's 1e-3)."""
    groups = get_method("adda")(_net()).param_groups()
    assert [g["lr_mult"] for g in groups] == [0.2, 0.2]
    net = _net()
    method = get_method("adda_encoder")(net, lr_mult=0.5)
    groups = method.param_groups()
    assert [g["lr_mult"] for g in groups] == [0.5, 0.5]
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in list(net.parameters_of(net.feature_names)) + list(method.discriminator.parameters())}


def test_given_layers_are_kept_when_the_label_sets_differ():
    """The second-and-third-last rule applies to the default layers only."""
    src, five = _domain(8, 0.0, 1), _domain(8, 0.3, 2, classes=5)
    method = get_method("multilayer_adv")(_net(), layers=["conv1", "conv2", "fc1"])
    method.prepare({"source": src, "unlabeled": five})
    assert method.layers == ["conv1", "conv2", "fc1"] and len(method.discriminator.layers) == 3
    auto = get_method("multilayer_adv")(_net())
    auto.prepare({"source": src, "unlabeled": five})
    assert auto.layers == ["conv2", "fc1"]  # second and third last of conv1, conv2, fc1, head


def test_gamma_lies_in_0_1_for_the_multi_layer_discriminator_only():
    from transferkit.methods import get_method
    from transferkit.methods.base import check_option_values
    with pytest.raises(TransferkitError, match=r"option gamma must be a number in \(0, 1\], got 2"):
        check_option_values(get_method("multilayer_adv"), {"gamma": 2})

    class Focal(get_method("finetune")):  # another method's gamma (a focal loss's 2) keeps its own range
        name = "focal_test"

        def __init__(self, net, gamma: float = 2.0):
            super().__init__(net)
    check_option_values(Focal, {"gamma": 2})
    with pytest.raises(TransferkitError, match="option gamma must be a finite number >= 0"):
        check_option_values(Focal, {"gamma": -1})
