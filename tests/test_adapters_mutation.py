"""Tests from a mutation pass over adapters.py, registry.py and errors.py: which children of an
nn.Sequential become the head and the units (head_index 0, a one-child Sequential, an index out of
range, children named in a plain list) and a Sequential's default name; how from_modules names units
cut at dotted paths, refuses a module listed in a unit and as the head, and lists known module
names; the guessed input shape (a Conv1d model, a model without convolutions) and a given one the
model does not take; how a failing step is named (the pool, the head, the unit after a given unit,
a linear layer that gets a 2-d input, a TypeError of a unit's signature); when outputs count as the
same function (the shape, the float32 tolerance, near-zero outputs, a float64 model); which
left-out modules are refused or listed (a BatchNorm, a DropPath, at most five, where they run,
modules of the pool, outermost only, a module that cannot run alone in training); registries that
keep their fix through pickling and name an instance; near names, sorted known names, hints, the
first line of an error and no labels as class ids. Each test fails when the code it names is
changed in the way its comment says.

Judged equivalent, so not tested: `_auto_name`'s `"." not in group[0]` (an nn.Sequential's child
names cannot hold a dot); `paths ... or ["..."]` of `_failing_step` (from_modules lists the paths of
every unit); `diff <= tol` -> `<`; `_acts_in_training`'s `u.shape != v.shape` (torch.equal is False
on other shapes) and its `torch.manual_seed(0)` (fork_rng restores the state after each run, so
both runs draw alike without it); `_left_out`'s `n and` (the root is always a holder); Registry's
`held is not value` (one object has one qualified name). Left surviving: `_failing_step`'s
`failed is None` branch and its `what == "from_modules"` fix for from_sequential (reached only
when a step fails in the whole net but not alone, or a Sequential's unit fails though it runs as
the Sequential does: modules that change between calls); recording the last call of a left-out
module instead of its first (`name not in ran`), whose killing test would pin a blind spot (a
dropout first run on zeros) rather than a behaviour meant."""

import pickle
import warnings

import pytest
import torch
from torch import nn

from transferkit.adapters import from_modules, from_sequential
from transferkit.errors import (
    TransferkitError,
    TransferkitWarning,
    UnknownNameError,
    UnknownOptionError,
    class_ids,
    first_line,
)
from transferkit.registry import Registry

pytestmark = pytest.mark.usefixtures("one_thread")


class Two(nn.Module):
    """Two conv units; the forward averages over space (functional) before the linear head."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


class Aux(nn.Module):
    """A conv unit and a head; ``extra`` runs on the features (its output unused or used, see ``use``)."""

    def __init__(self, extra, use=False):
        super().__init__()
        self.conv, self.extra, self.fc = nn.Conv2d(1, 2, 3), extra, nn.Linear(2 * 4 * 4, 3)
        self.use = use

    def forward(self, x):
        h = self.conv(x)
        e = self.extra(h)
        return self.fc(torch.flatten(e if self.use else h, 1))


def _cut(model, **kw):
    kw.setdefault("head", "fc")
    return from_modules(model, input_shape=(1, 6, 6), **kw)


# ---- from_sequential: head and units ---------------------------------------------------------------
def test_head_index_0_makes_every_child_the_head():
    # kills: `h = head_index + len if head_index < 0` made `<= 0` (0 read as past the end)
    net = from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), head_index=0, input_shape=(1, 2, 2))
    assert net.feature_names == [] and isinstance(net.head, nn.Sequential) and len(net.head) == 2


def test_a_one_child_sequential_is_a_head_alone():
    # kills: `len(children) >= 1` made `> 1`
    net = from_sequential(nn.Sequential(nn.Linear(4, 2)), input_shape=(4,))
    assert net.feature_names == [] and isinstance(net.head, nn.Linear)


def test_a_head_index_before_the_first_child_is_refused():
    # kills: the lower bound of `0 <= h < len(children)` dropped (children[:-1] cut silently)
    with pytest.raises(TransferkitError, match="head_index -5 out of range for 4 children"):
        from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), head_index=-5)


def test_child_names_may_be_listed_as_plain_strings():
    # kills: `[g] if isinstance(g, str) else list(g)` made `list(g)` (a name split into letters)
    from collections import OrderedDict
    seq = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(32, 3)))
    net = from_sequential(seq, units=["conv", "act", "flat"], input_shape=(1, 6, 6))
    assert net.feature_names == ["conv", "act", "flat"] and net.unit("conv") is seq.conv


def test_a_sequential_cut_is_named_sequential():
    # kills: from_sequential's default `name="sequential"` changed
    assert from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), input_shape=(1, 2, 2)).name == "sequential"


# ---- from_modules: names and checks ----------------------------------------------------------------
def test_units_cut_at_dotted_paths_are_named_with_underscores():
    # kills: `_merge`'s `n.replace(".", "_")` dropped; `g[0].replace(".", "_")` dropped; `unit{k + 1}` -> `unit{k}`
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1)), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3))
    net = from_modules(model, units=[["0.0", "0.1"], "0.2"], head="2", input_shape=(1, 6, 6))
    assert net.feature_names == ["unit1", "0_2"]
    assert list(net.unit("unit1")._modules) == ["0_0", "0_1"] and net.unit("0_2") is model[0][2]


def test_a_module_in_a_unit_and_in_the_head_is_refused():
    # kills: `+ group(head)` dropped from the modules checked for being used twice
    with pytest.raises(TransferkitError, match=r"a module is used twice in units/head: \['a', 'b', 'fc', 'fc'\]"):
        _cut(Two(), units=["a", "b", "fc"])


def test_an_unknown_module_lists_the_known_names_without_the_root():
    # kills: `known` made to keep the model's own empty name ("known: , a, ...")
    with pytest.raises(UnknownNameError, match=r"unknown module 'c'; known: a, b, fc$"):
        _cut(Two(), units=["a", "c"])


def test_a_conv1d_model_gets_no_guessed_image_shape_and_no_warning():
    # kills: the guess's `isinstance(conv, nn.Conv2d)` made `conv is not None` (a 224 x 224 image for a Conv1d)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(16, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = from_modules(model, ["0"], head="2")
    assert net.input_shape is None and not net.input_shape_guessed


def test_a_model_without_convolutions_has_no_guessed_shape():
    # kills: `input_shape_guessed = guessed and input_shape is not None` made `= guessed`
    net = from_modules(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), ["0"], head="1")
    assert net.input_shape is None and net.input_shape_guessed is False


def test_a_given_input_shape_the_model_does_not_take_is_kept():
    # kills: `if net.input_shape_guessed and checked == "model fails"` made `if checked == ...` (a given shape dropped)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(200, 2))
    with pytest.warns(TransferkitWarning, match=r"could not check the cut: model\(x\) fails on a random input of "
                                                r"shape \(2, 1, 8, 8\)"):
        net = from_modules(model, ["0"], head="2", input_shape=(1, 8, 8))
    assert net.input_shape == (1, 8, 8)


# ---- the step that fails ---------------------------------------------------------------------------
def test_a_failing_pool_is_named_with_the_last_unit():
    # kills: `failed >= len(names)` made `>` (the pool blamed as a unit); `names[-1]` -> `names[0]`; head/pool flipped
    with pytest.raises(TransferkitError, match=r"the pool \(Unflatten\) fails on what the last unit 'b' gives"):
        _cut(Two(), units=["a", "b"], pool=nn.Unflatten(1, (3, 3)))


def test_a_failing_pool_after_no_unit_is_named_with_the_input():
    # kills: `failed == 0 and names` made `failed == 0` (the pool called "the first unit")
    with pytest.raises(TransferkitError, match=r"the pool \(Unflatten\) fails on what the input gives"):
        _cut(Two(), units=[], pool=nn.Unflatten(1, (3, 3)))


def test_a_failing_head_is_named_as_the_head():
    # kills: `"the head" if name == HEAD` made `!=`
    with pytest.raises(TransferkitError, match=r"the head fails on what the last unit 'b' gives \(shape \(2, 144\)"):
        _cut(Two(), units=["a", "b"])


class Widen(nn.Module):
    """Three linear units; the forward doubles the features before the third (lost in the cut)."""

    def __init__(self):
        super().__init__()
        self.flatten, self.a, self.b = nn.Flatten(1), nn.Linear(4, 4), nn.Linear(4, 4)
        self.c, self.fc = nn.Linear(8, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.b(self.a(self.flatten(x)))
        return self.fc(self.c(torch.cat([h, h], 1)))


def test_a_failing_unit_names_the_unit_before_it_and_no_flatten_for_a_2d_input():
    # kills: `names[failed - 1]` -> `names[0]`; `len(shape) > 2` made `>= 2` (a flatten blamed on a 2-d input)
    with pytest.raises(TransferkitError, match=r"unit 'c' fails on the output of unit 'b', of shape \(2, 4\)") as e:
        from_modules(Widen(), units=[["flatten", "a"], "b", "c"], head="fc", input_shape=(1, 2, 2))
    assert "flattens it first" not in str(e.value)


class Twice(nn.Module):
    """The forward concatenates the features with themselves before the second conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 2, 3), nn.Conv2d(4, 2, 1), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = self.a(x)
        return self.fc(torch.flatten(self.b(torch.cat([h, h], 1)), 1))


def test_a_convolution_that_fails_on_a_map_is_not_said_to_need_a_flatten():
    # kills: `isinstance(first, nn.Linear)` dropped from the "flattens it first" note
    with pytest.raises(TransferkitError, match=r"unit 'b' fails on the output of unit 'a'") as e:
        _cut(Twice(), units=["a", "b"])
    assert "flattens it first" not in str(e.value)


class Pair(nn.Module):
    def forward(self, x, y):
        return x + y


def test_a_unit_that_needs_another_signature_is_named_not_raised_as_a_type_error():
    # kills: TypeError dropped from the errors of the units that are named
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.pair, self.fc = nn.Conv2d(1, 2, 3), Pair(), nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            h = self.a(x)
            return self.fc(torch.flatten(self.pair(h, h), 1))

    with pytest.raises(TransferkitError, match=r"unit 'pair' fails on the output of unit 'a'.*TypeError"):
        _cut(Model(), units=["a", "pair"])


# ---- the same function -----------------------------------------------------------------------------
def test_a_model_output_of_another_shape_warns_and_is_not_compared():
    # kills: the `want.shape != got.shape` skip dropped (shapes broadcast into a difference)
    class Unsqueezed(Two):
        def forward(self, x):
            return super().forward(x).unsqueeze(1)

    with pytest.warns(TransferkitWarning, match=r"model\(x\) returns shape \(2, 1, 3\), the UnitNet \(2, 3\)"):
        _cut(Unsqueezed(), units=["a", "b"], pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))


class Offset(Two):
    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return super().forward(x) + self.offset


POOL = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_a_float32_difference_of_1e_3_is_refused():
    # kills: the tolerance's `element_size() < 4` made `<= 4` (float32 given the half-precision 1e-2)
    with pytest.raises(TransferkitError, match=r"the units compute another function .* = 0\.001 "):
        _cut(Offset(1e-3), units=["a", "b"], pool=POOL)


def test_outputs_near_zero_keep_an_absolute_tolerance():
    # kills: the tolerance's `(1 + max|model(x)|)` made `max|model(x)|` (a rounding difference refused near 0)
    model = Offset(1e-5)
    nn.init.zeros_(model.fc.weight), nn.init.zeros_(model.fc.bias)
    _cut(model, units=["a", "b"], pool=POOL)


def test_a_float64_model_is_compared_on_a_float64_batch():
    # kills: the batch's `dtype=ref.dtype` dropped (the model fails on float32: the check only warns)
    with pytest.raises(TransferkitError, match="the units compute another function"):
        _cut(Offset(1.0).double(), units=["a", "b"], pool=POOL)


# ---- left-out modules ------------------------------------------------------------------------------
class DropPath(nn.Module):
    def forward(self, x):
        return x


class Many(nn.Module):
    """Six left-out modules that may act in training, and a head sized for 6 x 6 inputs (not 224)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.dp = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), DropPath()
        self.d3, self.d4, self.d5, self.d6 = nn.Dropout(), nn.Dropout(), nn.Dropout(), nn.Dropout()
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


def test_the_guess_warning_lists_five_left_out_batch_norms_and_drop_paths():
    # kills: BatchNorm dropped from `_mode_dependent`; its `"drop" in` name test dropped; `acting[:5]` -> `[:4]`
    with pytest.warns(TransferkitWarning, match=r"may act in training \('bn' \(BatchNorm2d\), 'dp' \(DropPath\), "
                                                r"'d3' \(Dropout\), 'd4' \(Dropout\), 'd5' \(Dropout\), \.\.\.\)"):
        from_modules(Many(), units=["conv"], head="fc")


class Drops(nn.Module):
    """A dropout on the input and six on the features, all run by the forward."""

    def __init__(self):
        super().__init__()
        self.first = nn.Dropout()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 3)
        self.d1, self.d2, self.d3, self.d4, self.d5, self.d6 = (nn.Dropout() for _ in range(6))

    def forward(self, x):
        h = self.conv(self.first(x))
        for d in (self.d1, self.d2, self.d3, self.d4, self.d5, self.d6):
            h = d(h)
        return self.fc(torch.flatten(h, 1))


def test_a_refusal_names_five_left_out_modules_where_they_run():
    # kills: `acting[:5]` -> `[:4]`; `if not before` dropped; `", in unit"` added for a unit named as its module
    with pytest.raises(TransferkitError, match=r"'first' \(Dropout.*runs before the first listed module\); 'd1' "
                                               r"\(Dropout.*runs after 'conv'\);.*'d3' .*; 'd4' \(Dropout\(p=0.5, "
                                               r"inplace=False\), runs after 'conv'\) and 2 more module\(s\)\. "
                                               r"The check") as e:
        _cut(Drops(), units=["conv"])
    assert "'d5'" not in str(e.value)


def test_a_left_out_container_is_named_not_its_children():
    # kills: `_left_out`'s outermost-only filter dropped ('extra.0' named beside 'extra')
    with pytest.raises(TransferkitError, match=r"'extra' \(Sequential") as e:
        _cut(Aux(nn.Sequential(nn.Dropout()), use=True), units=["conv"])
    assert "'extra.0'" not in str(e.value)


class Jitter(nn.Module):
    """Noise in training only: no dropout, no buffer, so a pool may hold it."""

    def forward(self, x):
        return x + torch.rand_like(x) if self.training else x


def test_a_model_module_in_the_pool_is_not_left_out():
    # kills: `[net.pool]` dropped from the modules a cut uses (the pool's Jitter refused as left out)
    model = Aux(Jitter(), use=True)
    _cut(model, units=["conv"], pool=nn.Sequential(model.extra, nn.Flatten()))


class TrainFails(nn.Module):
    def forward(self, x):
        if self.training:
            raise RuntimeError("not in training")
        return x


def test_a_left_out_module_that_cannot_run_in_training_is_not_refused():
    # kills: `_acts_in_training`'s `return False` for a module that cannot be run alone made `True`
    _cut(Aux(TrainFails()), units=["conv"])


# ---- registry --------------------------------------------------------------------------------------
def _one():
    pass


def test_a_pickled_registry_keeps_its_kind_fix_and_refusal():
    # kills: `__reduce__` handing back another fix
    reg = pickle.loads(pickle.dumps(Registry("thing", "choose another name", {"a": _one})))
    assert reg == {"a": _one} and (reg.kind, reg.fix) == ("thing", "choose another name")
    with pytest.raises(TransferkitError, match="thing name 'a' is taken by .*_one; .*: choose another name"):
        reg["a"] = len


def test_an_instance_is_named_by_its_class():
    # kills: `qualified_name`'s fallback `type(obj).__name__` made `?`
    reg = Registry("thing", "fix", {"a": Pair()})
    with pytest.raises(TransferkitError, match=rf"'a' is taken by {__name__}\.Pair; "):
        reg["a"] = _one


# ---- errors ----------------------------------------------------------------------------------------
def test_a_spelling_below_the_cutoff_gets_the_hint_not_a_suggestion():
    # kills: near_name's cutoff 0.85 -> 0.8 ('gamme' is 0.8 like 'gamma'); `else hint` dropped
    err = UnknownNameError("shift", "gamme", ["gamma", "blur"], hint="see plugins")
    assert str(err) == "unknown shift 'gamme'; known: blur, gamma (see plugins)"


def test_known_names_are_listed_sorted():
    # kills: `sorted(known)` made `list(known)`
    assert str(UnknownNameError("domain", "x", ["svhn", "mnist", "usps"])) == \
        "unknown domain 'x'; known: mnist, svhn, usps"


def test_a_pickled_unknown_name_error_keeps_its_hint():
    # kills: `__reduce__` dropping the hint
    err = pickle.loads(pickle.dumps(UnknownNameError("method", "zzz", ["dann"], hint="a plugin?")))
    assert str(err).endswith("(a plugin?)") and err.hint == "a plugin?"


def test_an_option_below_0_75_gets_the_list_of_options():
    # kills: UnknownOptionError's cutoff 0.75 -> 0.7 ('epsixyn' is 0.71 like 'epsilon'); the `it takes` list dropped
    assert str(UnknownOptionError("mcc", "epsixyn", ["lr", "epsilon"])) == \
        "method 'mcc' has no option 'epsixyn'; it takes epsilon, lr"


def test_first_line_of_an_empty_or_indented_message():
    # kills: `or ['']` dropped (IndexError on an empty message); `.strip()` dropped (an empty first line)
    assert first_line(ValueError()) == "ValueError: "
    assert first_line(RuntimeError("\n  shapes differ\nmore")) == "RuntimeError: shapes differ"


def test_complex_and_boolean_labels_are_refused():
    # kills: `not t.is_complex()` dropped from whole_valued; `dtype != torch.bool` dropped from class_ids
    with pytest.raises(TransferkitError, match="with values that are not whole numbers"):
        class_ids(torch.tensor([1 + 0j, 2 + 0j]))
    with pytest.raises(TransferkitError, match="of torch.bool with values that are not whole numbers"):
        class_ids(torch.tensor([True, False]))


def test_no_labels_are_whole_class_ids():
    # kills: `if len(labels):` dropped before the smallest id is taken (min() of no labels raises)
    empty = class_ids(torch.tensor([]))
    assert empty.dtype == torch.long and empty.shape == (0,)


def test_a_pool_raising_an_index_error_is_named_as_the_failing_step():
    # found by the pass (fixed): an IndexError of the pool escaped raw ("Dimension out of range"), unnamed
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Flatten(2))
    with pytest.raises(TransferkitError, match="the units fail on an input of shape") as e:
        from_modules(Two(), units=["a", "b"], head="fc", pool=pool, input_shape=(1, 6, 6))
    assert "pool" in str(e.value) and isinstance(e.value.__cause__, IndexError)


def test_unit_names_that_clash_are_refused_not_merged_into_one_unit():
    # found by the pass (fixed): a group's name unit1 replaced the module unit1 (or x.y the module x_y) silently
    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.unit1, self.fc = nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Linear(4, 3)
            self.x = nn.Module()
            self.x.y, self.x_y = nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.fc(self.unit1(self.b(self.a(x))).mean((2, 3)))
    for units in ([["a", "b"], "unit1"], ["x.y", "x_y"]):
        with pytest.raises(TransferkitError, match=r"duplicate unit names \['unit1', 'unit1'\]|duplicate unit names "
                                                   r"\['x_y', 'x_y'\].*give the units as a dict"):
            from_modules(Clash(), units=units, head="fc", input_shape=(1, 6, 6), verify=False)
    net = from_modules(Clash(), units={"ab": ["a", "b"], "c": "unit1"}, head="fc", input_shape=(1, 6, 6),
                       pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    assert net.feature_names == ["ab", "c"]
