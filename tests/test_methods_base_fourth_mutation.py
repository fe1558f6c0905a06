"""Tests from a fourth mutation pass over methods/base.py, methods/adaptation.py and methods/supervised.py: numbers
given as text with an upper-case exponent, a signed exponent or underscores (also a whole number past float
precision), ``dict`` parameters keeping text; the counts ``workers``, ``n`` and ``depth`` by name;
``lambda_schedule`` refusing null; the run settings ``ratio`` and ``val_per_class`` and the training setting ``lr``
named with the fix; ``bool`` annotations refusing a number and ``Union[..., None]`` annotations (``NoneType``)
checked; list_methods' order and its loading of the outside families; plain_net of a network subclass that overrides
an entry point; sized's named error for a UnitNet's wrapped input error and its first line only; cache_stream over
the memory limit; the default classifier input and its size, extra and test results; the adaptation base's opt-out
of the frozen-prefix cache and its pretrained start; target_only's one stream; resolve_layers given a tuple;
get_method given a class that is no method; an unannotated switch given null (asserted in
test_methods_base_third_mutation's switch test); a family class for a prefix without argument; method_doc dedented;
precompute's estimate over a dict's tensors; class weights in the logits' dtype; sized without an input shape; the
source head of a method without target stream; the outside families loaded; method_options without ``*args``. Each
test names the mutants it kills.

Judged equivalent, so not tested: Method.param_groups over every parameter of the network instead
of the trained units' (prepare turns the others' ``requires_grad`` off, so they get no gradient and
both optimisers skip them); _is_default's `value is default` -> False (the `==` that follows gives
True for every default a method declares); resolve_layers accepting ``"head"`` beside the known
units (the head is one of the network's units already); precompute's estimate from ``parts[0][:1]``
instead of ``parts[0]`` (it reads only the first row either way); _typed_numbers' hint without its `annotation is empty`
test (``str(inspect.Parameter.empty)`` names no type the patterns look for).

Left surviving: none of those tried."""

from typing import Union

import pytest
import torch
import torch.nn as nn
from helpers import seeded_lenet

from transferkit.errors import TransferkitError
from transferkit.methods import base, get_method
from transferkit.methods.adaptation import AdaptationMethod, resolve_layers
from transferkit.methods.base import (
    Method,
    _check_option_values,
    check_option_values,
    check_options,
    list_methods,
    method_doc,
    method_options,
    precompute,
    trained_options,
)

_net = seeded_lenet


class _Annotated(Method):
    """A user's method with annotations the option checks read."""

    name = "annotated_fourth_mutation"

    def __init__(self, net, weights: dict[int, float] | None = None, flag: bool | None = None,
                 pick: Union[int, str, None] = None, big: int = 0):
        super().__init__(net)


class _Adapts(AdaptationMethod):
    name = "adapts_fourth_mutation"

    def trainable_units(self):
        return ["fc1", "head"]


# ---- numbers given as text -----------------------------------------------------------------


def test_number_text_takes_an_upper_case_or_signed_exponent_and_underscores():
    # kills: _NUMBER_TEXT's `[eE]` -> `[e]`; its `[-+]?` exponent sign -> `[-]?`; `[0-9_]*` -> `[0-9]*`
    dann = get_method("dann")
    assert trained_options(dann, {"weight": "1E-3"}) == {"weight": 0.001}
    assert trained_options(dann, {"hidden": "1e+2"}) == {"hidden": 100}
    assert trained_options(dann, {"hidden": "1_000"}) == {"hidden": 1000}


def test_a_whole_number_with_underscores_past_float_precision_stays_exact():
    # kills: the whole-number pattern `[0-9][0-9_]*` -> `[0-9][0-9]*` (read through float, losing digits)
    assert trained_options(_Annotated, {"big": "9_007_199_254_740_993"}) == {"big": 9007199254740993}


def test_text_of_a_dict_parameter_stays_text():
    # kills: `dict` dropped from _typed_numbers' text-or-containers pattern
    assert trained_options(_Annotated, {"weights": "5"}) == {"weights": "5"}


# ---- option ranges and choices by name -------------------------------------------------------


@pytest.mark.parametrize("option", ["workers", "n", "depth"])
def test_worker_unit_and_layer_counts_must_be_at_least_one(option):
    # kills: _COUNTS' `workers`, `n` and `depth` minimum 1 -> 0
    _check_option_values("m", {option: 1})
    with pytest.raises(TransferkitError, match=f"m: option {option} must be a whole number >= 1, got 0"):
        _check_option_values("m", {option: 0})


def test_the_lambda_schedule_takes_no_null():
    # kills: None added to _CHOICES' `lambda_schedule` (a null schedule silently constant)
    with pytest.raises(TransferkitError, match="option lambda_schedule must be one of dann, constant, got None"):
        _check_option_values("m", {"lambda_schedule": None})


@pytest.mark.parametrize("option", ["ratio", "val_per_class"])
def test_ratio_and_val_per_class_are_run_settings(option):
    # kills: "ratio" and "val_per_class" left out of check_options' run settings
    with pytest.raises(TransferkitError, match=f"{option} is no method option but a setting of a run's config"):
        check_options(get_method("dann"), {option: 1})


def test_the_learning_rate_given_to_a_method_without_it_is_named_a_training_setting():
    # kills: check_options' training settings missing `lr` (an unknown option error without the fix)
    with pytest.raises(TransferkitError, match=r"lr is a training setting.*TrainConfig\(lr=\.\.\.\)"):
        check_options(get_method("source_only"), {"lr": 0.1})


# ---- annotations ---------------------------------------------------------------------------


def test_a_bool_annotation_refuses_a_number():
    # kills: _fits' bool kind accepting ints (1 for true)
    check_option_values(_Annotated, {"flag": True})
    with pytest.raises(TransferkitError, match="option flag must be true or false or null, got 1"):
        check_option_values(_Annotated, {"flag": 1})


def test_a_union_with_none_is_checked():
    # kills: _simple_types' `NoneType` -> `None` mapping dropped (typing.Union[..., None] left unchecked)
    check_option_values(_Annotated, {"pick": None})
    check_option_values(_Annotated, {"pick": "auto"})
    with pytest.raises(TransferkitError, match="option pick must be a whole number or text or null, got 2.5"):
        check_option_values(_Annotated, {"pick": 2.5})


# ---- registry --------------------------------------------------------------------------------


def test_a_class_that_is_no_method_is_refused_by_name():
    # kills: get_method's `issubclass(name, Method)` test dropped (an AttributeError on the class's name)
    with pytest.raises(TransferkitError, match="a method is given by its name"):
        get_method(int)


def test_list_methods_loads_the_outside_families_and_is_sorted_by_name(monkeypatch):
    # kills: list_methods without load_outside_families(); without `sorted`
    names = list(list_methods())
    assert names == sorted(names) and "source_only" in names
    loads = []
    monkeypatch.setattr(base, "load_outside_families", lambda: loads.append(1))
    list_methods()
    assert loads == [1]


def test_a_family_class_for_a_prefix_without_its_argument_is_refused(monkeypatch):
    # kills: _from_prefix's `sep and arg` -> `sep` (the class of "prefix:" taken, a name get_method refuses)
    class Bare(Method):
        name = "fourth_mutation_family:"

    monkeypatch.setitem(base.PREFIXES, "fourth_mutation_family", lambda arg: Bare)
    with pytest.raises(TransferkitError, match="not registered under its name"):
        get_method(Bare)


def test_a_user_docstring_is_given_dedented():
    # kills: method_doc's `inspect.cleandoc(doc)` -> the raw docstring
    class Documented(Method):
        """First line.

        Second paragraph, indented in the source."""

        name = "documented_fourth_mutation"

    assert method_doc(Documented) == "First line.\n\nSecond paragraph, indented in the source."


def test_load_outside_families_imports_zeroshot_clip_and_represent(monkeypatch):
    # kills: a family dropped from OUTSIDE_FAMILIES (its methods unknown by name until imported by hand)
    imported = []
    monkeypatch.setattr(base.importlib, "import_module", imported.append)
    base.load_outside_families()
    assert {"transferkit.zeroshot", "transferkit.clip", "transferkit.represent"} <= set(imported)


def test_method_options_leave_out_star_args():
    # kills: method_options' skip of `*args` narrowed to `**kwargs` (a positional catch-all listed as an option)
    class Starred(Method):
        name = "starred_fourth_mutation"

        def __init__(self, net, *extra, rate: float = 1.0):
            super().__init__(net)

    assert method_options(Starred) == {"rate": 1.0}


# ---- the base method's machinery -------------------------------------------------------------


def test_precompute_of_a_dict_estimates_the_size_of_every_tensor_together():
    # kills: precompute's estimate `sum(...)` over the dict's tensors -> `max(...)`
    inputs = torch.zeros(1024, 256)  # each tensor of the result: 1 MiB of float32
    assert precompute(lambda x: {"a": x, "b": x.clone()}, inputs, limit_mb=1.5) is None
    assert precompute(lambda x: {"a": x, "b": x.clone()}, inputs, limit_mb=2)["b"].shape == (1024, 256)


def test_class_weights_take_the_logits_dtype():
    # kills: cross_entropy's weight `.to(dtype=logits.dtype)` dropped (float32 weights against float64 logits)
    method = Method(_net())
    method.class_weights = {"target": torch.tensor([1.0, 3.0])}
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    expected = nn.functional.cross_entropy(logits, labels, weight=torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert torch.allclose(method.cross_entropy(logits, labels), expected)


def test_a_failure_of_a_network_without_input_shape_is_raised_as_it_is():
    # kills: sized's `shape is None` test dropped (a TypeError from tuple(None) instead of the failure)
    method = Method(_net())
    method.net.input_shape = None

    def score():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="^mat1 and mat2"):
        method.sized(score, torch.zeros(2, 1, 32, 32))


def test_a_method_without_a_target_stream_predicts_with_the_source_head():
    # kills: predicts_with_source_head's `"target" not in streams` -> `"source" in streams`
    class Unlabelled(Method):
        name = "unlabelled_fourth_mutation"
        streams = ("unlabeled",)

    class Both(Method):
        name = "both_fourth_mutation"
        streams = ("source", "target")

    assert Unlabelled.predicts_with_source_head() and not Both.predicts_with_source_head()



def test_a_network_subclass_overriding_one_entry_point_is_not_plain():
    # kills: plain_net's `all(...)` over the entry points -> `any(...)`
    class Shifted(type(_net())):
        def forward_units(self, x, start):
            return super().forward_units(x, start) + 1

    net = _net()
    net.__class__ = Shifted
    method = Method(net)
    assert method.plain_net("forward")
    assert not method.plain_net("forward", "forward_units")


def test_a_unitnet_input_error_on_images_of_another_size_is_named_with_its_first_line():
    # kills: sized's `cause = e.__cause__` for a TransferkitError dropped; `.splitlines()[0]` dropped
    method = Method(_net())

    def score():
        try:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\nsecond line of detail")
        except RuntimeError as e:
            raise TransferkitError("fc1 failed") from e

    with pytest.raises(TransferkitError, match=r"built for \(1, 28, 28\).*\(1, 32, 32\)") as info:
        method.sized(score, torch.zeros(2, 1, 32, 32))
    assert "mat1 and mat2" in str(info.value) and "resize" in str(info.value)
    assert "second line" not in str(info.value)


def test_cache_stream_over_the_memory_limit_caches_nothing(monkeypatch):
    # kills: cache_stream's `{} if value is None` dropped (a None cached under the key)
    monkeypatch.setattr(base, "precompute", lambda forward, inputs: None)
    method = Method(_net())
    assert method.cache_stream({"source": torch.ones(4, 3)}, "feats", nn.Identity(), nn.Identity()) == {}


def test_the_default_classifier_input_is_the_pooled_embedding_and_results_add_nothing():
    # kills: classifier_input -> the logits; classifier_input_dim -> num_classes; extra/test results not empty
    net = _net()
    method = Method(net).eval()
    images = torch.rand(3, 1, 28, 28)
    features = method.classifier_input(images)
    assert features.shape == (3, method.classifier_input_dim) == (3, net.embed_dim)
    assert torch.equal(features, net.forward_features(images))
    assert method.extra_results() == {} and method.test_results(None) == {}


# ---- adaptation base and supervised baselines --------------------------------------------------


def test_the_adaptation_base_starts_pretrained_and_caches_no_frozen_prefix():
    # kills: AdaptationMethod's `cache_frozen_prefix = False` -> True; `needs_pretrained = True` -> False
    method = _Adapts(_net())
    assert method.frozen_prefix_end() is None  # its alignment terms read early units' activations
    assert method.needs_pretrained


def test_resolve_layers_takes_a_tuple_of_unit_names():
    # kills: resolve_layers' accepted types without `tuple`
    assert resolve_layers(_net(), ("conv2", "embedding"), ["fc1"]) == ["conv2", "embedding"]


def test_target_only_draws_the_target_stream_alone():
    # kills: target_only's streams widened with "source"
    assert get_method("target_only").streams == ("target",)
    assert not get_method("target_only").predicts_with_source_head()
