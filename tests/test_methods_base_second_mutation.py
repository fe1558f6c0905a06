"""Tests from a second mutation pass over methods/base.py, methods/adaptation.py and
methods/supervised.py: get_method given a class (one holding another class's name, a family's
cached class) or no name at all; a user class's own docstring; precompute's memory limit and its
last chunk; numbers given as text for ``int | float``, container and ``Any`` parameters and text
that only looks like a number; the ranges of rates (``lr``, ``*lr_mult``, ``tau*``) and of the
unit interval; ``Optional`` and ``int`` annotations; an empty ``**options`` left out of
``init_options``; method_options' nearest default and where it stops; check_options' "takes no
options", training and run settings and its check of transferkit's ``**options`` families; a fixed
``True`` not given by 1; resolved_options' list length and options without default;
number_spellings; cached_rows without rows; a declared ``source_head``; class weights cut to the
logits; train_mode of a network without gradients; the frozen prefix; the adaptation base's forced
schedule and optimiser, ``fit_wall_s``, its optimiser groups and frozen children, ``source_weight``
0 and the source stream's class weights, the head of a network without classifier; source_only's
stream and the baselines' flags. Each test names the mutants it kills.

Judged equivalent, so not tested: taps' `dict.fromkeys` de-duplication (forward_features returns a
dict, so a repeated name gives the same activations); method_options' `klass is nn.Module` skip
(nn.Module's and object's ``__init__`` take only ``*args, **kwargs``, which are not collected);
the switch check accepting None for an annotated ``bool`` option (the annotation check refuses it
with the same message). _check_option_values' `passed_on` test widened to every dict, which the pass
left alive, is killed by the last test (added afterwards: clip's captions by class, with a class named
like an option). check_data, cache_stream and sized were not mutated in this pass."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pytest
import torch
from helpers import seeded_lenet, shifted_domain

from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.methods.adaptation import AdaptationMethod
from transferkit.methods.base import (
    METHODS,
    PREFIXES,
    Method,
    _check_option_values,
    check_fixed_options,
    check_option_values,
    check_options,
    method_doc,
    method_options,
    number_spellings,
    precompute,
    resolved_options,
    trained_options,
)

_net = seeded_lenet
_domain = shifted_domain


class _Typed(Method):
    """A user's method with annotated options (defined outside transferkit)."""

    name = "typed_second_mutation"

    def __init__(self, net, size: int | float = 1, scales: Sequence[float] = (1.0,), extra: Any = None,
                 rounds: int = 1, limit: Optional[int] = None):
        super().__init__(net)
        self.size, self.scales, self.extra, self.rounds, self.limit = size, scales, extra, rounds, limit


class _Own(AdaptationMethod):
    """An adaptation method whose own options do not pass the parent's on."""

    name = "own_second_mutation"

    def __init__(self, net, w: float = 1.0):
        super().__init__(net)


class _Required(Method):
    name = "required_second_mutation"

    def __init__(self, net, k: int):
        super().__init__(net)


# ---- get_method ------------------------------------------------------------------------


def test_a_class_holding_a_registered_name_but_not_registered_is_refused():
    # kills: get_method's `METHODS.get(name.name) is name` -> `name.name in METHODS`
    class Impostor(Method):
        name = "source_only"

    with pytest.raises(TransferkitError, match="not registered under its name 'source_only'"):
        get_method(Impostor)
    assert get_method(METHODS["source_only"]) is METHODS["source_only"]


def test_a_name_that_is_no_text_is_refused_by_name():
    # kills: dropping get_method's `isinstance(name, str)` check (an AttributeError from partition instead)
    with pytest.raises(TransferkitError, match="given by its name"):
        get_method(5)


def test_a_family_class_whose_name_a_registered_class_holds_is_refused():
    # kills: _from_prefix without `cls.name not in METHODS` (get_method("zz2m:a") gives the registered class)
    class Made(Method):
        name = "zz2m:a"

    class Held(Method):
        name = "zz2m:a"

    PREFIXES["zz2m"] = lambda arg: Made
    METHODS["zz2m:a"] = Held
    try:
        assert get_method("zz2m:a") is Held
        with pytest.raises(TransferkitError, match="not registered"):
            get_method(Made)
    finally:
        METHODS.pop("zz2m:a", None)
        PREFIXES.pop("zz2m", None)


def test_a_user_class_outside_transferkit_keeps_its_own_docstring():
    # kills: method_doc without `klass is cls or` (a user's class would show Method's or no doc)
    assert method_doc(_Typed) == "A user's method with annotated options (defined outside transferkit)."


# ---- precompute --------------------------------------------------------------------------


def test_precompute_stops_at_its_limit_in_mebibytes_and_keeps_the_last_chunk():
    # kills: precompute's `limit_mb * 2**20` -> `2**10`; its chunks' `range(chunk, len(inputs), ...)` shortened
    inputs = torch.arange(5 * 300, dtype=torch.float32).reshape(5, 300)  # 6000 bytes: over 1 KiB, under 1 MiB
    out = precompute(lambda x: x * 2, inputs, limit_mb=1, chunk=2)
    assert out is not None and torch.equal(out, inputs * 2)
    assert precompute(lambda x: x, inputs, limit_mb=5000 / 2**20, chunk=2) is None
    parts = precompute(lambda x: {"a": x[:, :1], "b": x[:, 1:3]}, inputs, chunk=2)
    assert torch.equal(parts["a"], inputs[:, :1]) and torch.equal(parts["b"], inputs[:, 1:3])


# ---- numbers given as text and numbers of the other type ----------------------------------


def test_an_int_of_an_int_or_float_option_stays_an_int_and_containers_or_any_keep_text():
    # kills: _typed_numbers' `not is_int` dropped (3 of `int | float` recorded as 3.0); Sequence and Any
    # left out of the "welcome as given" annotations (text "2" of `Sequence[float]` made 2.0)
    recorded = trained_options(_Typed, {"size": 3, "scales": "2", "extra": "7"})
    assert recorded == {"size": 3, "scales": "2", "extra": "7"}
    assert type(recorded["size"]) is int
    method = _Typed(_net(), size=3, scales="2")
    assert method.scales == "2" and type(method.init_options["size"]) is int


def test_text_that_only_looks_like_a_whole_number_is_refused_by_name():
    # kills: _typed_numbers' `except ValueError` narrowed ("1__0" would raise a bare ValueError)
    with pytest.raises(TransferkitError, match="dann: option hidden must be a whole number >= 1, got '1__0'"):
        get_method("dann")(_net(), hidden="1__0")


# ---- option ranges and annotations ----------------------------------------------------------


@pytest.mark.parametrize("option", ["lr", "head_lr_mult", "tau", "temperature"])
def test_rates_scales_and_temperatures_must_be_above_zero(option):
    # kills: `value > 0` -> `>= 0`; the `*lr_mult` and `tau*` patterns dropped
    with pytest.raises(TransferkitError, match=f"m: option {option} must be a finite number > 0, got 0"):
        _check_option_values("m", {option: 0})
    _check_option_values("m", {option: 1e-6})


def test_the_unit_interval_includes_one():
    # kills: `0 < value <= 1` -> `0 < value < 1`
    check_option_values(get_method("multilayer_adv"), {"gamma": 1})
    with pytest.raises(TransferkitError, match=r"in \(0, 1\], got 0"):
        check_option_values(get_method("multilayer_adv"), {"gamma": 0})


def test_optional_int_takes_null_and_int_refuses_a_fraction():
    # kills: _simple_types without Optional's None; _fits' `numbers.Integral if kind == "int"` -> Real
    assert _Typed(_net(), limit=None).limit is None
    check_option_values(_Typed, {"limit": None, "rounds": 2})
    with pytest.raises(TransferkitError, match="option limit must be a whole number or null, got 'x'"):
        check_option_values(_Typed, {"limit": "x"})
    with pytest.raises(TransferkitError, match=r"option rounds must be a whole number, got 2\.5"):
        _Typed(_net(), rounds=2.5)


# ---- options recorded, listed and resolved ---------------------------------------------------


def test_nothing_passed_on_with_star_star_options_records_nothing():
    # kills: _options keeping an empty dict of **options (`{"options": {}}` in the checkpoint signature)
    assert get_method("adda_encoder")(_net()).init_options == {}
    assert get_method("adda_encoder")(_net(), weight=1.0).init_options == {}  # ADDA's default
    assert get_method("multilayer_adda")(_net(), hidden=64).init_options == {"options": {"hidden": 64}}


def test_method_options_take_the_nearest_default_and_stop_where_nothing_is_passed_on():
    # kills: method_options' `setdefault` -> assignment (the farthest default wins); its `break` dropped
    options = method_options("multilayer_adda")
    assert options["lr_schedule"] == "constant" and options["lr_mult"] == 0.2 and options["untied"] is True
    assert method_options(_Own) == {"w": 1.0}


def test_a_method_without_options_says_so_and_a_transferkit_family_with_star_star_options_is_checked():
    # kills: check_options' "takes no options" check dropped; its outside-transferkit test widened to every class
    with pytest.raises(TransferkitError, match="method 'source_only' takes no options, got \\['depth'\\]"):
        check_options(get_method("source_only"), {"depth": 2})
    with pytest.raises(TransferkitError, match="bogus"):
        check_options(get_method("adda_encoder"), {"bogus": 1})


def test_a_fixed_true_is_not_given_by_the_number_one():
    # kills: check_fixed_options without `isinstance(given, bool) == isinstance(value, bool)`
    check_fixed_options(get_method("multilayer_adda"), {"untied": True})
    with pytest.raises(TransferkitError, match="multilayer_adv"):
        check_fixed_options(get_method("multilayer_adda"), {"untied": 1})


def test_resolved_options_keep_lists_of_twenty_and_skip_options_without_default():
    # kills: resolved_options' `len(value) <= 20` -> `< 20`; the skip of an option without default dropped
    assert resolved_options(get_method("mmd"), {"scales": [1.0] * 20})["scales"] == [1.0] * 20
    assert resolved_options(get_method("mmd"), {"scales": [1.0] * 21})["scales"] == "<list of 21>"
    assert resolved_options(_Required, {}) == {}
    assert resolved_options(_Required, {"k": 3}) == {"k": 3}


def test_number_spellings_leave_text_alone_and_spell_up_to_most_options_both_ways():
    # kills: number_spellings without `not isinstance(options[k], str)`; `len(whole) <= most` -> `<`
    dann = get_method("dann")
    assert number_spellings(dann, {"weight": "5"}) == [{"weight": "5"}]
    assert len(number_spellings(dann, {"weight": 5, "entmin_weight": 2.0}, most=2)) == 4


# ---- the Method base ---------------------------------------------------------------------------


def test_cached_rows_compute_when_no_rows_are_named():
    # kills: cached_rows without `idx is None` (a whole cached tensor instead of the batch's computation)
    method = Method(_net())
    method.input_cache = {"k": torch.arange(6.0)}
    assert method.cached_rows("k", None, lambda: "computed") == "computed"
    assert torch.equal(method.cached_rows("k", torch.tensor([4, 1]), lambda: "computed"), torch.tensor([4.0, 1.0]))


def test_a_declared_source_head_wins_over_the_streams():
    # kills: predicts_with_source_head ignoring `source_head`
    class Declared(Method):
        name = "declared_second_mutation"
        streams = ("target",)
        source_head = True

    class Described(Method):
        name = "described_second_mutation"
        streams = ("source",)
        source_head = False

    assert Declared.predicts_with_source_head() and not Described.predicts_with_source_head()
    assert get_method("source_only").predicts_with_source_head()
    assert not get_method("target_only").predicts_with_source_head()


def test_class_weights_longer_than_the_logits_are_cut_to_them():
    # kills: cross_entropy without `[:logits.shape[1]]`
    method = Method(_net())
    logits, labels = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 1])
    method.class_weights = {"target": torch.tensor([1.0, 2.0, 3.0, 9.0])}
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(method.cross_entropy(logits, labels), expected)


def test_train_mode_keeps_the_network_in_training_even_with_every_parameter_fixed():
    # kills: train_mode's `child is not self.net` dropped (a network without gradients put in eval mode)
    net = _net()
    net.requires_grad_(False)
    method = Method(net)
    method.train_mode()
    assert all(net.unit(n).training for n in net.unit_names)


# ---- the adaptation base --------------------------------------------------------------------


class _Engine:
    """A stand-in for make_engine's engine: keeps the config it would train with."""

    def __init__(self):
        from transferkit.engine import TrainConfig
        self.cfg, self.seen = TrainConfig(), None

    def fit(self, method, **streams):
        self.seen = self.cfg
        return type("Fit", (), {"wall_s": 1.5})()


def test_an_adaptation_fit_trains_with_the_methods_schedule_and_optimizer_and_reports_its_time():
    # kills: fit_transfer not forcing `lr_schedule`; not applying `optimizer_override`; extra_results without fit_wall_s
    engine = _Engine()
    method = get_method("dann")(_net(), optimizer="sgd", lr=0.05)
    assert method.extra_results() == {}
    method.fit_transfer(lambda tag: engine)
    assert engine.seen.schedule == "dann" and engine.seen.optimizer == "sgd" and engine.seen.lr == 0.05
    assert method.extra_results() == {"fit_wall_s": 1.5}
    kept = _Engine()
    get_method("dann")(_net(), lr_schedule=None).fit_transfer(lambda tag: kept)
    assert kept.seen.schedule == "constant" and kept.seen.optimizer == "adam"


def test_frozen_children_and_fixed_parameters_are_left_out_of_the_optimiser_and_of_training_mode():
    # kills: param_groups without `frozen_children` or without `p.requires_grad`; train_mode not putting
    # frozen_children in eval mode (a declared child whose parameters still require gradients)
    class Teacher(AdaptationMethod):
        name = "teacher_second_mutation"
        frozen_children = ("teacher",)

        def __init__(self, net):
            super().__init__(net)
            self.teacher = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
            self.disc = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
            self.disc[0].requires_grad_(False)

    method = Teacher(_net())
    groups = method.param_groups()
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in method.disc[1].parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in method.net.parameters()}
    method.train_mode()
    assert method.net.training and method.disc.training and not any(m.training for m in method.teacher.modules())


def test_the_source_term_is_left_out_at_weight_zero_and_weighs_classes_as_the_source_stream():
    # kills: base_terms' `if self.source_weight` -> always; its cross_entropy of stream "target" instead of "source"
    logits_s = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    y_s = torch.tensor([0, 1, 2, 2])
    assert AdaptationMethod(_net(), source_weight=0).base_terms(logits_s, y_s, logits_s) == {}
    method = AdaptationMethod(_net(), source_weight=2.0)
    method.class_weights = {"source": torch.tensor([1.0, 5.0, 1.0]), "target": torch.ones(3)}
    expected = 2.0 * torch.nn.functional.cross_entropy(logits_s, y_s, weight=torch.tensor([1.0, 5.0, 1.0]))
    assert torch.allclose(method.base_terms(logits_s, y_s, logits_s)["ce_source"], expected)


def test_the_head_of_a_network_without_classifier_is_its_embedding():
    # kills: layer_size's `or net.num_classes == 0` dropped (0 inputs for a discriminator on "head")
    from transferkit.methods.adaptation import layer_size
    net = _net()
    net.reset_classifier(0)
    assert layer_size(net, "head") == net.embed_dim == 500
    assert layer_size(_net(), "head") == 10


# ---- the supervised baselines ---------------------------------------------------------------


def test_source_only_weighs_classes_as_the_source_stream_and_target_only_starts_fresh():
    # kills: source_only's supervised(batch.source) without "source"; target_only's fresh_init and
    # source_only's needs_pretrained flipped
    from transferkit.engine import Batch
    src = _domain(6, 0.0, 1, classes=3)
    method = get_method("source_only")(_net())
    method.class_weights = {"source": torch.tensor([1.0, 4.0, 1.0] + [1.0] * 7), "target": torch.ones(10)}
    logits = method.net(src.images)
    expected = torch.nn.functional.cross_entropy(logits, src.labels, weight=method.class_weights["source"])
    got = method.losses(Batch(step=0, progress=0.0, source=(src.images, src.labels)))["ce_source"]
    assert torch.allclose(got, expected)
    assert get_method("target_only").fresh_init and not get_method("target_only").needs_pretrained
    assert not get_method("source_only").needs_pretrained


# ---- check_options' hints, switches, text numbers, the frozen prefix -------------------------


def test_training_settings_and_run_settings_given_as_method_options_are_named_with_the_fix():
    # kills: check_options' training-setting check dropped; its singular/plural verb; "seed" left out of run settings
    dann = get_method("dann")
    with pytest.raises(TransferkitError, match="steps is a training setting, not a method option"):
        check_options(dann, {"steps": 5})
    with pytest.raises(TransferkitError, match="batch_size, steps are training settings"):
        check_options(dann, {"steps": 5, "batch_size": 8})
    with pytest.raises(TransferkitError, match="seed is no method option but a setting of a run's config"):
        check_options(dann, {"seed": 1})


def test_check_option_values_reads_numbers_given_as_text_as_building_the_method_does():
    # kills: check_option_values without its _typed_numbers (text "1e-3" refused as no number)
    check_option_values(get_method("dann"), {"weight": "1e-3", "hidden": "64"})


def test_the_frozen_prefix_ends_at_the_first_trained_unit_capped_by_the_cache_limit():
    # kills: frozen_prefix_end's `first == 0` -> a unit name; "embedding" for the head dropped; the cap dropped
    class Trains(Method):
        name = "trains_second_mutation"
        units, cap = ["head"], 3

        def trainable_units(self):
            return self.units

        def max_cache_unit_index(self):
            return self.cap

    method = Trains(_net())
    assert method.frozen_prefix_end() == "embedding"
    method.units = ["fc1", "head"]
    assert method.frozen_prefix_end() == "fc1"
    method.cap = 1
    assert method.frozen_prefix_end() == "conv2"
    method.units = ["conv1", "head"]
    assert method.frozen_prefix_end() is None


def test_a_dict_valued_option_is_checked_as_one_value_and_only_passed_on_options_are_flattened():
    # kills: _check_option_values' `passed_on` widened to every dict (clip's captions by class, named like options)
    clip = get_method("clip")
    _check_option_values("clip", {"captions": {"combine": "a photo of a combine harvester"}}, cls=clip)
    with pytest.raises(TransferkitError, match="option combine must be one of"):
        _check_option_values("m", {"options": {"combine": "a photo of a combine harvester"}})
