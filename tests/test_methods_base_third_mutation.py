"""Tests from a third mutation pass over methods/base.py, methods/adaptation.py and
methods/supervised.py: precompute's estimate from one row and its limit taken as inclusive; values
shown as given in the errors of building a method and of check_option_values; numbers given as text
with a sign or a leading dot, for ``int | float`` and for list and tuple parameters; the count,
weight, rate and choice options by name (``tail_depth`` 0, ``dim`` 0, every ``_NONNEGATIVE`` and
``_POSITIVE`` name, ``*weight``, every documented choice); annotations mixing simple types with
others, ``None`` for an ``int``; check_options' pass for a user's ``**kwargs`` class, its run
settings ``k`` and ``repeats``, the option it names; check_option_values' fixed options and
unannotated switches; resolved_options' numbers given as text, nested lists and values without a
length; _is_default's ``True`` of ``1`` and arrays; predictor_parts' children and buffers; check_data
(validation set, streams, every class, fewest classes and labels); cache_stream's eval mode and
missing stream; cached_rows of a dict; the default fit's tag; the frozen prefix of the base's cache
limit, of no trained unit and of a method that opts out; prepare and train_mode of untrained units
and parameterless children; class weights padded with ones and the torchrun sum of weights; sized's
named size error and its out-of-memory pass; logits with a hooked network or an overridden forward;
get_method's loading of the outside families and its hint for an unregistered subclass of a
subclass; method_doc of an undocumented user class; number_spellings' default ``most``;
resolve_layers given text or a wrong type; flat_cat's axis; the target entropy and taps' split;
target_only's class weights. Each test names the mutants it kills.

Judged equivalent, so not tested: AdaptationMethod's `float(entmin_weight)` dropped (the wrapper
already gives the number; the term multiplies either way); _options' `except TypeError` narrowed
(the signature's bind then raises the same TypeError, naming the same argument, that ``__init__``
would).

Left surviving: check_data's `fewest = ... if len(present) else 0` changed (reached only by a
method with ``min_classes = 0`` and a labelled target without any image)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import seeded_lenet, shifted_domain

from transferkit.domain import Domain
from transferkit.engine import Batch
from transferkit.errors import TransferkitError
from transferkit.losses import entropy
from transferkit.methods import base, get_method
from transferkit.methods.adaptation import AdaptationMethod, flat_cat, resolve_layers
from transferkit.methods.base import (
    Method,
    _check_option_values,
    check_fixed_options,
    check_option_values,
    check_options,
    method_doc,
    number_spellings,
    precompute,
    resolved_options,
    trained_options,
)

_net = seeded_lenet
_domain = shifted_domain


class _Numbers(Method):
    """A user's method with number options of several annotations."""

    name = "numbers_third_mutation"

    def __init__(self, net, shift: float = 0.0, size: int | float = 1, sizes: list[int] | None = None,
                 widths: tuple[float, ...] = (1.0,), mixed: float | list = 1.0, rounds: int = 1, plain=1,
                 matrix=None, thing=None):
        super().__init__(net)
        self.shift, self.size, self.sizes, self.widths, self.mixed = shift, size, sizes, widths, mixed
        self.rounds, self.plain, self.matrix, self.thing = rounds, plain, matrix, thing


class _Loose(Method):
    """A user's method that takes any option."""

    name = "loose_third_mutation"

    def __init__(self, net, **kwargs):
        super().__init__(net)


class _Trains(Method):
    name = "trains_third_mutation"
    units: list = ["head"]

    def trainable_units(self):
        return self.units


# ---- precompute --------------------------------------------------------------------------


def test_precompute_estimates_from_one_row_and_takes_a_result_of_exactly_its_limit():
    # kills: precompute's `v[0].numel()` -> `v.numel()` (the first chunk's size counted per row); `>` -> `>=`
    inputs = torch.ones(8, 1000)  # 32000 bytes in all, 16000 per chunk of 4
    out = precompute(lambda x: x + 1, inputs, limit_mb=40000 / 2**20, chunk=4)
    assert out is not None and torch.equal(out, inputs + 1)
    assert precompute(lambda x: x, inputs, limit_mb=32000 / 2**20, chunk=4) is not None
    assert precompute(lambda x: x, inputs, limit_mb=31999 / 2**20, chunk=4) is None


# ---- values shown as given -----------------------------------------------------------------


def test_an_error_shows_a_whole_number_as_given():
    # kills: _recording_options' `_typed_numbers(..., floats=False)` -> floats; check_option_values' likewise
    with pytest.raises(TransferkitError, match=r"dann: option weight must be a finite number >= 0, got -1$"):
        get_method("dann")(_net(), weight=-1)
    with pytest.raises(TransferkitError, match=r"dann: option weight must be a finite number >= 0, got -1$"):
        check_option_values(get_method("dann"), {"weight": -1})


# ---- numbers given as text ------------------------------------------------------------------


def test_signed_and_leading_dot_text_is_a_number_and_int_or_float_text_takes_a_fraction():
    # kills: _NUMBER_TEXT without its sign or its `.5` form; _typed_numbers reading `int | float` text as int first
    method = _Numbers(_net(), shift="-0.5", size="2.5")
    assert method.shift == -0.5 and method.size == 2.5
    assert _Numbers(_net(), shift=".25").shift == 0.25
    assert _Numbers(_net(), shift="+1e-1").init_options == {"shift": 0.1}


def test_text_of_list_and_tuple_parameters_stays_text():
    # kills: `list` or `tuple` dropped from the "welcome as given" annotations (text "3" made 3 or 3.0)
    method = _Numbers(_net(), sizes="3", widths="2")
    assert method.sizes == "3" and method.widths == "2"


# ---- option ranges by name ------------------------------------------------------------------


@pytest.mark.parametrize("option", ["alpha", "beta", "gamma", "margin", "triplet_warmup", "metric_ce",
                                    "source_entropy", "target_entropy", "entmin_weight", "domain_weight"])
def test_weights_of_loss_terms_take_zero_and_refuse_negatives(option):
    # kills: a name dropped from _NONNEGATIVE; `name.endswith("weight")` narrowed
    _check_option_values("m", {option: 0})
    with pytest.raises(TransferkitError, match=f"m: option {option} must be a finite number >= 0, got -1"):
        _check_option_values("m", {option: -1})


@pytest.mark.parametrize("option", ["c", "scale", "query_scale"])
def test_scales_must_be_above_zero(option):
    # kills: a name dropped from _POSITIVE
    with pytest.raises(TransferkitError, match=f"m: option {option} must be a finite number > 0, got 0"):
        _check_option_values("m", {option: 0})


def test_a_discriminator_tail_may_be_empty():
    # kills: _COUNTS' `tail_depth` minimum 0 -> 1
    _check_option_values("m", {"tail_depth": 0})
    with pytest.raises(TransferkitError, match="tail_depth must be a whole number >= 0"):
        _check_option_values("m", {"tail_depth": -1})


# ---- annotations --------------------------------------------------------------------------


def test_an_annotation_mixing_simple_and_other_types_is_left_unchecked_and_an_int_refuses_null():
    # kills: _simple_types' `all(k in _KIND_WORDS ...)` -> any; _fits' `kind == "None" and value is None` -> or
    assert _Numbers(_net(), mixed=[1.0, 2.0]).mixed == [1.0, 2.0]
    with pytest.raises(TransferkitError, match="option rounds must be a whole number, got None"):
        _Numbers(_net(), rounds=None)


# ---- check_options and check_option_values -------------------------------------------------


def test_a_user_class_taking_any_option_is_not_checked():
    # kills: check_options' pass for a class outside transferkit whose __init__ takes **kwargs dropped
    check_options(_Loose, {"anything": 1})


def test_k_and_repeats_are_run_settings_and_an_unknown_option_is_named():
    # kills: "k" left out of the run settings; their singular/plural verb; the unknown option named wrongly
    dann = get_method("dann")
    with pytest.raises(TransferkitError, match="k is no method option but a setting of a run's config"):
        check_options(dann, {"k": 5})
    with pytest.raises(TransferkitError, match="k, repeats are no method option"):
        check_options(dann, {"repeats": 3, "k": 5})
    with pytest.raises(TransferkitError, match="method 'dann' has no option 'bogus'"):
        check_options(dann, {"bogus": 1, "zzz": 2})


def test_check_option_values_refuses_a_value_the_name_fixes_otherwise():
    # kills: check_option_values without check_fixed_options; check_fixed_options without `given is None`
    with pytest.raises(TransferkitError, match="ft_fc1 tunes the last 1 unit"):
        check_option_values(get_method("ft_fc1"), {"n": 2})
    check_option_values(get_method("ft_fc1"), {})
    check_fixed_options(get_method("multilayer_adda"), {})


# ---- resolved and trained options -----------------------------------------------------------


def test_resolved_options_read_text_numbers_and_name_what_is_not_plain_data():
    # kills: resolved_options without _typed_numbers; its short-list test's `and all(...)` -> or;
    # the `hasattr(value, "__len__")` test dropped (a value without a length)
    assert resolved_options(get_method("dann"), {"weight": "1e-3"})["weight"] == 0.001
    assert resolved_options(get_method("mmd"), {"scales": [[1.0], [2.0]]})["scales"] == "<list of 2>"
    assert resolved_options(_Numbers, {"thing": object()})["thing"] == "<object>"


def test_true_is_no_default_of_one_and_an_array_is_compared_without_error():
    # kills: _is_default without the bool test (True recorded as the default 1); `except Exception` narrowed
    assert trained_options(_Numbers, {"plain": True}) == {"plain": True}
    recorded = trained_options(_Numbers, {"matrix": np.ones(3)})
    assert list(recorded) == ["matrix"]


def test_number_spellings_spell_six_options_both_ways_by_default():
    # kills: number_spellings' default `most` 6 -> 5
    class Six(Method):
        name = "six_third_mutation"

        def __init__(self, net, a: float = 0.5, b: float = 0.5, c2: float = 0.5, d: float = 0.5, e: float = 0.5,
                     f: float = 0.5):
            super().__init__(net)

    spellings = number_spellings(Six, {k: 1 for k in ("a", "b", "c2", "d", "e", "f")})
    assert len(spellings) == 64


# ---- the Method base ---------------------------------------------------------------------------


def test_predictor_parts_name_children_and_own_nonempty_buffers():
    # kills: predictor_parts without `b.numel()` (an empty buffer named); without `"." not in n` (a child's)
    class Protos(Method):
        name = "protos_third_mutation"

        def __init__(self, net):
            super().__init__(net)
            self.norm = nn.BatchNorm1d(2)
            self.register_buffer("protos", torch.ones(3))
            self.register_buffer("unused", torch.empty(0))

    assert Protos(_net()).predictor_parts() == "norm, protos"
    assert Method(_net()).predictor_parts() == "state held outside the network"


def _labelled(counts, classes=3):
    labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    return Domain("few", torch.zeros(len(labels), 1, 28, 28), labels, [str(i) for i in range(classes)])


def test_check_data_refuses_an_empty_validation_set_and_missing_classes():
    # kills: check_data's `len(val) > 0` dropped; its needs_every_class check dropped
    class Selects(Method):
        name = "selects_third_mutation"
        needs_validation = True

    class Means(Method):
        name = "means_third_mutation"
        needs_every_class = True

    Selects.check_data(val=_labelled([1, 1, 1]))
    with pytest.raises(TransferkitError, match="labelled validation set"):
        Selects.check_data(val=_labelled([0, 0, 0]))
    Means.check_data(target=_labelled([1, 1, 1]))
    with pytest.raises(TransferkitError, match=r"'few' has none of class\(es\) \['1'\]"):
        Means.check_data(target=_labelled([2, 0, 1]))


def test_check_data_counts_classes_and_labels_inclusively_and_only_for_a_target_stream():
    # kills: check_data's `>= min_classes` and `>= min_labels_per_class` -> `>`; its `"target" not in streams` dropped
    class Pairs(Method):
        name = "pairs_third_mutation"
        min_classes, min_labels_per_class = 2, 2

    class SourcePairs(Pairs):
        name = "source_pairs_third_mutation"
        streams = ("source",)

    Pairs.check_data(target=_labelled([2, 2, 0]))
    with pytest.raises(TransferkitError, match="at least 2 classes; 'few' has 1"):
        Pairs.check_data(target=_labelled([3, 0, 0]))
    with pytest.raises(TransferkitError, match="at least 2 labelled target images per class; 'few' has 1"):
        Pairs.check_data(target=_labelled([2, 1, 0]))
    SourcePairs.check_data(target=_labelled([1, 0, 0]))


def test_cache_stream_runs_the_fixed_module_in_eval_mode_and_skips_a_missing_stream():
    # kills: cache_stream without `fixed.eval()`; without its `stream not in inputs` test
    method = Method(_net())
    fixed = nn.Dropout(0.5).train()
    inputs = {"source": torch.ones(4, 3)}
    cached = method.cache_stream(inputs, "feats", fixed, fixed)
    assert not fixed.training and torch.equal(cached["feats"], torch.ones(4, 3))
    assert method.cache_stream(inputs, "feats", fixed, fixed, stream="unlabeled") == {}


def test_cached_rows_of_a_dict_take_the_rows_of_each_tensor():
    # kills: cached_rows returning a cached dict whole
    method = Method(_net())
    method.input_cache = {"k": {"a": torch.arange(4.0), "b": torch.arange(4.0) * 10}}
    rows = method.cached_rows("k", torch.tensor([3, 0]), lambda: "computed")
    assert torch.equal(rows["a"], torch.tensor([3.0, 0.0])) and torch.equal(rows["b"], torch.tensor([30.0, 0.0]))


def test_the_default_fit_is_one_engine_run_tagged_main():
    # kills: fit_transfer's tag "main" changed (an interrupted run would not resume from its checkpoints)
    tags = []

    class Engine:
        def fit(self, method, **streams):
            return streams

    def make_engine(tag):
        tags.append(tag)
        return Engine()

    assert Method(_net()).fit_transfer(make_engine, source="s", target="t") == \
        {"source": "s", "target": "t", "unlabeled": None, "val": None}
    assert tags == ["main"]


def test_the_frozen_prefix_of_a_trained_head_is_the_embedding_unless_the_method_opts_out():
    # kills: max_cache_unit_index `len - 1` -> `len - 2`; frozen_prefix_end's default for no trained unit;
    # its `cache_frozen_prefix` opt-out dropped
    method = _Trains(_net())
    assert method.frozen_prefix_end() == "embedding"
    method.units = []
    assert method.frozen_prefix_end() == "embedding"

    class OptsOut(_Trains):
        name = "opts_out_third_mutation"
        cache_frozen_prefix = False

    assert OptsOut(_net()).frozen_prefix_end() is None


def test_train_mode_fixes_untrained_units_and_keeps_parameterless_children_training():
    # kills: train_mode not putting untrained units in eval mode; its `params and` dropped (a Dropout put in eval)
    method = _Trains(_net())
    method.drop = nn.Dropout(0.5)
    method.train_mode()
    assert method.drop.training and method.net.unit("head").training
    assert not method.net.unit("conv1").training


def test_class_weights_shorter_than_the_logits_are_padded_with_ones():
    # kills: cross_entropy padding with `new_zeros` instead of `new_ones`
    method = Method(_net())
    logits, labels = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2, 2, 1])
    method.class_weights = {"target": torch.tensor([2.0, 1.0])}
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([2.0, 1.0, 1.0]))
    assert torch.allclose(method.cross_entropy(logits, labels), expected)


def test_under_torchrun_the_weighted_sum_is_divided_by_the_whole_batchs_weights(monkeypatch):
    # kills: cross_entropy's torchrun branch dividing by its own shard's weights (a weighted mean)
    monkeypatch.setattr(base, "world_size", lambda: 2)
    monkeypatch.setattr(base, "all_reduce_mean", lambda t: t * 3)  # the other shard holds 5x this one's weights
    method = Method(_net())
    logits, labels = torch.randn(4, 3, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 2, 2, 1])
    weight = torch.tensor([1.0, 2.0, 3.0])
    method.class_weights = {"target": weight}
    expected = F.cross_entropy(logits, labels, weight=weight, reduction="sum") / (3 * weight[labels].sum())
    assert torch.allclose(method.cross_entropy(logits, labels), expected)


# ---- registry and docs -------------------------------------------------------------------------


def test_an_unregistered_subclass_of_a_subclass_is_named_with_the_fix():
    # kills: _subclasses without its recursion (only direct subclasses of Method searched)
    class Middle(Method):
        name = "middle_third_mutation"

    class Deep(Middle):
        name = "deep_third_mutation"

    with pytest.raises(TransferkitError, match="Deep has that name but is not registered"):
        get_method("deep_third_mutation")


def test_an_undocumented_user_class_has_no_docstring():
    # kills: method_doc without its transferkit-module test (nn.Module's docstring shown)
    class Bare(Method):
        name = "bare_third_mutation"

    Bare.__module__ = "my_methods"
    assert method_doc(Bare) == ""
    assert method_doc(get_method("dann")).startswith("Domain-adversarial")


# ---- the adaptation base ---------------------------------------------------------------------


def test_resolve_layers_takes_one_name_and_refuses_another_type_by_name():
    # kills: resolve_layers reading text as a list of letters; its type check dropped
    net = _net()
    assert resolve_layers(net, "conv2", ["fc1"]) == ["conv2"]
    assert resolve_layers(net, None, ("fc1",)) == ["fc1"]
    with pytest.raises(TransferkitError, match="layers must be a unit name or a list of unit names, got 3"):
        resolve_layers(net, 3, ["fc1"])


def test_the_entropy_term_is_of_the_target_predictions_and_taps_split_at_the_source_batch():
    # kills: base_terms' entropy of the source logits; taps' split at `len(x_t)`
    g = torch.Generator().manual_seed(3)
    logits_s, logits_t = torch.randn(4, 3, generator=g) * 5, torch.randn(5, 3, generator=g)
    method = AdaptationMethod(_net(), entmin_weight=0.5)
    terms = method.base_terms(logits_s, torch.tensor([0, 1, 2, 0]), logits_t)
    assert torch.allclose(terms["entmin"], 0.5 * entropy(logits_t))
    x_s, x_t = _domain(2, 0.0, 1).images, _domain(3, 0.3, 2).images
    method.eval()
    src, tgt = method.taps(x_s, x_t, ["fc1"])
    assert src["head"].shape == (2, 10) and tgt["fc1"].shape[0] == 3
    assert torch.allclose(src["head"], method.net(x_s), atol=1e-5)


# ---- the supervised baselines ---------------------------------------------------------------


def test_target_only_weighs_classes_as_the_target_stream():
    # kills: target_only's supervised(batch.target) with the source stream's class weights
    tgt = _domain(6, 0.0, 1, classes=3)
    method = get_method("target_only")(_net())
    method.class_weights = {"target": torch.tensor([1.0, 4.0, 1.0] + [1.0] * 7), "source": torch.ones(10)}
    expected = F.cross_entropy(method.net(tgt.images), tgt.labels, weight=method.class_weights["target"])
    got = method.losses(Batch(step=0, progress=0.0, target=(tgt.images, tgt.labels)))["ce_target"]
    assert torch.allclose(got, expected)


# ---- round two: choices, counts, logits ---------------------------------------------------------


_DOCUMENTED_CHOICES = [("scaling", ["channel", "kernel"]), ("discriminator", ["auto", "fc", "conv"]),
                       ("combine", ["sum", "concat"]), ("lr_schedule", ["constant", "cosine", "dann"]),
                       ("lambda_schedule", ["dann", "constant"]), ("optimizer", ["adam", "sgd"])]


@pytest.mark.parametrize("option, values", _DOCUMENTED_CHOICES)
def test_every_documented_choice_is_accepted(option, values):
    # kills: a name dropped from _CHOICES (e.g. scaling "kernel", discriminator "conv", combine "concat")
    for value in values:
        _check_option_values("m", {option: value})


def test_an_embedding_dimension_must_be_at_least_one():
    # kills: _COUNTS' `dim` minimum 1 -> 0
    with pytest.raises(TransferkitError, match="option dim must be a whole number >= 1, got 0"):
        _check_option_values("m", {"dim": 0})


def test_an_out_of_memory_error_on_images_of_another_size_is_raised_as_it_is():
    # kills: sized without its `"memory" in str(cause)` test (a failure for lack of memory blamed on the size)
    method = Method(_net())

    def score():
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        method.sized(score, torch.zeros(2, 1, 32, 32))


def test_logits_run_a_hook_on_the_network_and_an_overridden_forward():
    # kills: plain_net without `not hooked(...)`; logits' `type(self).forward is not Method.forward` test dropped
    images = _domain(3, 0.0, 1).images
    method = _Trains(_net())
    plain = method.logits(images)
    method.net.register_forward_hook(lambda module, inputs, output: output + 100)
    assert torch.allclose(method.logits(images), plain + 100, atol=1e-4)

    class Halved(_Trains):
        name = "halved_third_mutation"

        def forward(self, images):
            return self.net(images) / 2

    assert torch.allclose(Halved(_net()).logits(images), plain / 2, atol=1e-4)


def test_a_failure_on_images_of_another_size_is_named_and_one_on_the_built_size_is_raised_as_it_is():
    # kills: sized's `tuple(images.shape[1:]) == tuple(shape)` -> `!=`
    method = Method(_net())

    def score():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(TransferkitError, match=r"built for \(1, 28, 28\) images and fails on \(1, 32, 32\).*resize"):
        method.sized(score, torch.zeros(2, 1, 32, 32))
    with pytest.raises(RuntimeError, match="^mat1 and mat2"):
        method.sized(score, torch.zeros(2, 1, 28, 28))


def test_prepare_freezes_the_units_the_method_does_not_train():
    # kills: prepare's `requires_grad_(name in trainable)` -> every unit trained
    method = _Trains(_net())
    method.prepare({})
    assert all(p.requires_grad for p in method.net.unit("head").parameters())
    assert not any(p.requires_grad for p in method.net.unit("conv1").parameters())


def test_an_unknown_name_loads_the_outside_families_before_it_is_refused(monkeypatch):
    # kills: get_method without `load_outside_families()` (clip, zeroshot and plugin methods not found by name)
    loads = []
    monkeypatch.setattr(base, "load_outside_families", lambda: loads.append(1))
    get_method("dann")
    assert loads == []
    with pytest.raises(TransferkitError, match="unknown method 'zz_third_mutation'"):
        get_method("zz_third_mutation")
    assert loads == [1]


def test_check_option_values_refuses_a_non_boolean_for_an_unannotated_switch():
    # kills: check_option_values passing no switches (a user's unannotated `flag=False` given "yes" let through)
    class Flagged(Method):
        name = "flagged_third_mutation"

        def __init__(self, net, flag=False):
            super().__init__(net)

    check_option_values(Flagged, {"flag": True})
    with pytest.raises(TransferkitError, match="flagged_third_mutation: option flag must be true or false, got 'yes'"):
        check_option_values(Flagged, {"flag": "yes"})
    # kills (fourth pass): the switch check letting None through (an unannotated switch's null read as false)
    with pytest.raises(TransferkitError, match="option flag must be true or false, got None"):
        check_option_values(Flagged, {"flag": None})


def test_flat_cat_joins_the_flattened_layers_side_by_side_in_the_order_given():
    # kills: flat_cat's `torch.cat(..., 1)` -> along the batch
    acts = {"a": torch.ones(2, 3), "b": torch.zeros(2, 1, 2), "c": torch.full((2, 4), 2.0)}
    joined = flat_cat(acts, ["b", "a"])
    assert joined.shape == (2, 5) and torch.equal(joined[:, :2], torch.zeros(2, 2))
    assert flat_cat(acts, ["c", "a"]).shape == (2, 7)
