"""Tests from a second mutation pass over the fine-tuning family (``methods/finetune.py``) and
flex-tuning (``methods/flex.py``, seed 002 Algorithms 1-3), after ``test_finetune_flex_mutation.py``:
``ft_unit`` without a unit, the pickled class of a dotted unit name, a unit name with braces in its
refusal, module attributes that are no classes; ``ft_ss`` kernel scaling of grouped and bias-free
convolutions, the scaling an earlier ``ft_ss`` left named in the refusal, no warning under channel
scaling; what ``two_stage`` returns (stage 2's fit with both histories, stage 1's kept accuracy),
its engine tags and a second fit; flex's ``units`` checked and ordered when the method is made, its
``image_units`` (a single name, an unknown kind, a network without channels), an image candidate
that would train the head, an empty validation set refused before any training; validation scores
and proxies that leave each network in its own mode, an empty margin, an empty proxy domain; the
network flex adopts (a unit picked with the head: only its units require gradients; a picked
image unit that its forward from the input runs), the fit and margin it returns, candidates not
kept by default, engine tags without a colon; fast_flex's step count, the fit of ``ft_all`` when
output, proxies over its ``units`` with the head, and the tie warning under balanced accuracy.
Candidate trainings are scripted (``train_candidates`` or ``Engine.fit`` monkeypatched), so no test
trains. Each test fails when the code it names is changed in the way its comment says. The pass found
one real bug, fixed since: a metric proxy_accuracies refuses left both networks in eval mode.

Judged equivalent, so not tested: ``FtFc``'s ``1 <= n`` -> ``0 <= n``, ``_FlexBase``'s ``workers >= 1``
-> ``>= 0`` and ``FtSS``'s ``scaling == "kernel"`` -> ``!= "channel"`` (the option checks refuse
``n=0``, ``workers=0`` and any scaling but channel or kernel before ``__init__`` runs); flex's
``len(ranked) > 1`` -> ``>= 1`` (there are always at least one unit and ``all``); faster_flex's
``patience=None`` and ``eval_every=10**9`` dropped from the one-epoch config, and its ``a_all = None``
-> ``all_fit.val_accuracy`` (that donor trains without validation, so nothing is evaluated and its
val_accuracy is None). Left surviving: ``_train``'s per-candidate seed ``engine.seed * 1009 + i`` ->
without ``+ i`` (any fixed seed gives a valid initialisation of an image unit; a test would pin
random numbers, not a behaviour) and faster_flex's ``checkpoint_every=10**9`` dropped (the one-epoch
donor then may write a checkpoint mid-epoch: files only, not results).
"""

import math
import pickle
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import toy_domain

from transferkit.backbones import build_backbone, from_sequential
from transferkit.domain import Domain
from transferkit.engine import Engine, FitResult, TrainConfig
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.methods import finetune as finetune_module
from transferkit.methods import flex as flex_module
from transferkit.methods import get_method
from transferkit.methods.finetune import KernelScaleShift, add_scale_shift
from transferkit.methods.flex import (
    FastFlex,
    Flex,
    candidate_method,
    proxy_accuracies,
    selection_margin,
    val_predictions,
)

CFG = TrainConfig(steps=2, batch_size=16, eval_every=1, patience=None, progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def lenet():
    torch.manual_seed(0)
    return build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)


def engines(tags, metric="accuracy"):
    """A ``make_engine`` that records the tag of every engine it makes, and tells the engine its tag
    (read by :func:`scripted_trainings` and :func:`scripted_two_stage`)."""
    def make(tag, config=None):
        tags.append(tag)
        engine = Engine(config or CFG, seed=0, select_metric=metric)
        engine.tag = tag
        return engine
    return make


class OneUnit:
    """A stand-in network of one unit (``add_scale_shift`` reads only ``net.unit(name)``)."""

    def __init__(self, module):
        self.module = module

    def unit(self, name):
        return self.module


# ---- ft_fc, ft_unit ----------------------------------------------------------------------


def test_ft_unit_without_a_unit_says_how_to_name_one():
    # kills FtUnit.__init__: dropped `check(unit is not None, ...)`
    with pytest.raises(TransferkitError, match="ft_unit needs a unit: use ft_unit:<name>"):
        get_method("ft_unit")(lenet())


def test_the_class_of_a_dotted_unit_name_pickles_and_odd_attribute_names_are_no_attributes():
    # kills ft_unit_named: `unit.isidentifier()` -> True (a qualname with a dot does not pickle back)
    cls = get_method("ft_unit:layer1.0")
    assert pickle.loads(pickle.dumps(cls)) is cls
    # kills __getattr__: `except ValueError` -> another exception (bad hex, bad UTF-8 escaped as ValueError)
    assert not hasattr(finetune_module, "FtUnitHex_zz") and not hasattr(finetune_module, "FtUnitHex_ff")


def test_a_unit_name_with_braces_is_named_in_the_refusal_of_another_unit():
    # kills ft_unit_named: dropped `.replace("{", "{{")...` (the refusal's format failed)
    with pytest.raises(TransferkitError, match=r"tunes unit \{a\}; for unit=conv1 use ft_unit:conv1"):
        get_method("ft_unit:{a}")(lenet(), unit="conv1")


# ---- ft_ss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 6, 3, groups=2), nn.Conv2d(4, 6, 3, bias=False)],
                         ids=["grouped", "no-bias"])
def test_kernel_scaling_of_grouped_and_bias_free_convolutions(conv):
    # kills KernelScaleShift: `in_channels // groups` -> `in_channels`; _KernelScaledConv: `self.bias + shift` always
    x = torch.rand(2, 4, 8, 8)
    with torch.no_grad():
        plain = conv(x)
    ss, = add_scale_shift(OneUnit(conv), ["u"], kernel=True)
    assert isinstance(ss, KernelScaleShift) and ss.scale.shape == (6, conv.weight.shape[1], 1, 1)
    with torch.no_grad():
        assert torch.allclose(conv(x), plain)  # the identity at the start
        ss.scale.fill_(2.0)
        ss.shift.fill_(0.5)
        bias = 0.0 if conv.bias is None else conv.bias.view(1, -1, 1, 1)
        assert torch.allclose(conv(x), 2 * (plain - bias) + bias + 0.5, atol=1e-5)


def test_ft_ss_of_the_other_scaling_names_the_one_the_network_has():
    # kills add_scale_shift: the refusal's `'channel' if kernel else 'kernel'` swapped
    for first, second in (("kernel", "channel"), ("channel", "kernel")):
        net = lenet()
        get_method("ft_ss")(net, scaling=first)
        with pytest.raises(TransferkitError, match=rf"other scaling \({first}\); tune it with that one"):
            get_method("ft_ss")(net, scaling=second)


def test_channel_scaling_of_a_conv_subclass_does_not_warn():
    # kills add_scale_shift: `if kernel and conv` -> `if conv` (warned of kernels under channel scaling)
    same = nn.Conv2d(1, 2, 3)
    same.__class__ = type("Conv2dSame", (nn.Conv2d,), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ss, = add_scale_shift(OneUnit(same), ["u"], kernel=False)
    assert ss.scale.shape == (2,)


# ---- two_stage ---------------------------------------------------------------------------


def scripted_two_stage(monkeypatch, fits=2):
    """``two_stage`` fitted ``fits`` times with engine fits that train nothing and return scripted
    results: stage 1 keeps weights worse than its best (no restore_best), stage 2 stops early."""
    calls = []

    def fake_fit(self, method, **kw):
        stage = len(calls) % 2 + 1
        calls.append((self.tag, list(method.trainable_units())))
        if stage == 1:
            return FitResult(steps=5, best_step=2, best_val_accuracy=0.75, stopped_early=False, wall_s=0.0,
                             history=[{"step": 2}, {"step": 5}], val_accuracy=0.5)
        return FitResult(steps=3, best_step=1, best_val_accuracy=0.625, stopped_early=True, wall_s=0.0,
                         history=[{"step": 1}, {"step": 3}], val_accuracy=0.625)

    monkeypatch.setattr(Engine, "fit", fake_fit)
    method = get_method("two_stage")(lenet())
    for _ in range(fits):
        fit = method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    return method, fit, calls


def test_two_stage_returns_stage_two_with_both_histories_and_stage_one_s_kept_accuracy(monkeypatch):
    # kills TwoStage.fit_transfer: best_step / stopped_early of stage 1, history of stage 2 only,
    # stage1_val_accuracy = stage 1's best_val_accuracy (not that of the weights stage 2 starts from)
    method, fit, _ = scripted_two_stage(monkeypatch, fits=1)
    assert (fit.steps, fit.best_step, fit.stopped_early) == (8, 1, True)
    assert fit.history == [{"step": 2}, {"step": 5}, {"step": 1}, {"step": 3}]
    assert fit.val_accuracy == fit.best_val_accuracy == 0.625
    assert method.extra_results() == {"stage1_val_accuracy": 0.5}


def test_two_stage_stages_have_their_own_engine_tags_and_a_second_fit_starts_at_stage_one(monkeypatch):
    # kills TwoStage.fit_transfer: stage 1 tagged "probe" (its checkpoints shared with stage 2's);
    # dropped `self.stage = 1` (a second fit's stage 1 trained the head only)
    method, _, calls = scripted_two_stage(monkeypatch, fits=2)
    units = method.net.unit_names
    assert calls == [("finetune", units), ("probe", ["head"])] * 2


# ---- flex, fast_flex, faster_flex: options ---------------------------------------------------


def test_flex_units_are_checked_when_the_method_is_made_and_kept_in_network_order():
    # kills candidate_units: each dropped check (an empty list, a unit twice, a unit that is no name,
    # an unknown name, a unit without parameters), `return units` unordered; unit_candidates ignoring units
    net = lenet()
    for units, error in (([], "at least one unit"), (["conv1", "conv1"], "units lists conv1 more than once"),
                         ([3], "units are unit names, got 3"), (["fc9"], "unknown unit 'fc9'")):
        with pytest.raises(TransferkitError, match=error):
            Flex(net, units=units)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 4))
    with pytest.raises(TransferkitError, match="'unit2' has no parameters to tune"):
        Flex(from_sequential(seq, input_shape=(1, 28, 28)), units=["unit2"])
    method = Flex(net, units=["fc1", "conv1"])
    assert method.units == ["conv1", "fc1"] and method.candidates() == ["conv1", "fc1", "all"]


def test_flex_options_are_checked_when_the_method_is_made():
    # kills Flex: a str image_units split into letters, dropped
    # input_channels(net) and unknown-kind checks; trainable_units before fit not []
    net = lenet()
    assert Flex(net, image_units="colour").candidates()[-1] == "image:colour"
    with pytest.raises(UnknownNameError, match="pix2pix"):
        Flex(net, image_units=["pix2pix"])
    flat = from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4)))
    with pytest.raises(TransferkitError, match="image channels"):
        Flex(flat, image_units=["colour"])
    assert Flex(net).trainable_units() == [] and FastFlex(net).trainable_units() == []


def test_an_image_candidate_refuses_to_train_the_head():
    # kills candidate_method: dropped `check(not with_head, ...)` (reached by a direct call)
    with pytest.raises(TransferkitError, match="image-unit candidate 'image:colour' keeps the head fixed"):
        candidate_method(lenet(), "image:colour", with_head=True)


@pytest.mark.parametrize("name", ["flex", "fast_flex", "faster_flex"])
def test_flex_without_validation_images_says_so_before_training(name, monkeypatch):
    # kills Flex / FastFlex.fit_transfer: `len(val) > 0` dropped from the validation check
    monkeypatch.setattr(flex_module, "train_candidates", lambda jobs, workers=1: pytest.fail("trained"))
    empty = toy_domain(8, seed=1).subset(torch.zeros(8, dtype=torch.bool))
    with pytest.raises(TransferkitError, match="selects on a labelled validation set; none was given"):
        get_method(name)(lenet()).fit_transfer(engines([]), target=toy_domain(16), val=empty)


# ---- validation scores and proxies ---------------------------------------------------------


@pytest.mark.parametrize("mode", [True, False])
def test_val_predictions_leave_the_network_in_its_mode(mode):
    # kills val_predictions: dropped `net.train(was)`
    net = lenet().train(mode)
    val_predictions(net, toy_domain(8, seed=1))
    assert net.training == mode


def test_selection_margin_of_no_images_is_zero_with_no_standard_error():
    # kills selection_margin: `/ len(d) if len(d) else 0.0` -> `/ len(d)` (ZeroDivisionError)
    empty = torch.zeros(0, dtype=torch.bool)
    assert selection_margin(empty, empty) == (0.0, math.inf)


def test_proxy_accuracies_refuse_an_empty_domain_and_restore_each_network_s_own_mode():
    # kills proxy_accuracies: dropped `check(len(domain) > 0, ...)`; the two modes restored swapped
    base, donor = lenet(), lenet()
    empty = toy_domain(8, seed=1).subset(torch.zeros(8, dtype=torch.bool))
    with pytest.raises(TransferkitError, match="validation set; it is empty"):
        proxy_accuracies(base, donor, ["conv1"], empty)
    base.train(), donor.eval()
    proxy_accuracies(base, donor, ["conv1", "head"], toy_domain(8, seed=1))
    assert base.training and not donor.training


# ---- flex, fast_flex, faster_flex: scripted candidates -----------------------------------------


def scripted_trainings(monkeypatch, scores):
    """Candidate trainings that train nothing: the job of engine tag ``t`` returns its method's
    network with the scripted ``(accuracy, loss, steps)`` of ``scores[t]`` (its first images
    right, as the engine's scoring of the kept weights), history ``[{"tag": t}]``."""
    def fake(jobs, workers=1):
        out = []
        for engine, method, _target, val in jobs:
            acc, loss, steps = scores[engine.tag]
            correct = None if val is None else torch.arange(len(val)) < round(acc * len(val))
            out.append((method.net, FitResult(steps=steps, best_step=steps, best_val_accuracy=acc,
                                              stopped_early=False, wall_s=0.0, history=[{"tag": engine.tag}],
                                              val_accuracy=acc, val_correct=correct, val_loss=loss)))
        return out

    monkeypatch.setattr(flex_module, "train_candidates", fake)


FLEX_SCORES = {"cand-conv1": (0.5, 1.0, 1), "cand-conv2": (0.75, 0.5, 2), "cand-fc1": (0.25, 1.0, 4),
               "cand-head": (0.5, 0.25, 8), "cand-all": (0.625, 0.1, 16), "cand-image-colour": (0.875, 2.0, 32)}


def test_flex_returns_the_pick_s_fit_and_margin_and_keeps_no_candidate_by_default(monkeypatch):
    # kills Flex.fit_transfer: the selection margin's arguments swapped; best_step / history / val_correct /
    # val_loss not the pick's; Flex: keep_candidates default True
    scripted_trainings(monkeypatch, FLEX_SCORES)
    method = Flex(lenet())
    val = toy_domain(8, seed=1)
    fit = method.fit_transfer(engines([]), target=toy_domain(16), val=val)
    assert method.picked == "conv2" and method.candidate_nets == {}
    assert method.extra_results()["selection"] == {"runner_up": "all", "margin": 0.125, "se": pytest.approx(0.125)}
    assert (fit.steps, fit.best_step, fit.history, fit.val_loss) == (31, 2, [{"tag": "cand-conv2"}], 0.5)
    assert fit.val_correct.tolist() == [True] * 6 + [False] * 2


def test_flex_adopts_a_unit_picked_with_the_head_and_only_its_units_require_gradients(monkeypatch):
    # kills _FlexBase._units_of: the head left out of a unit candidate that trained it; _adopt:
    # requires_grad_(True) on every unit
    scripted_trainings(monkeypatch, FLEX_SCORES)
    method = Flex(lenet())
    method.head_has_new_rows(["4"])
    method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert method.picked == "conv2" and method.trainable_units() == ["conv2", "head"]
    grads = {u: {p.requires_grad for p in method.net.unit(u).parameters()} for u in method.net.unit_names}
    assert grads == {"conv1": {False}, "conv2": {True}, "fc1": {False}, "head": {True}}


def test_flex_adopts_a_picked_image_unit_that_its_network_runs(monkeypatch):
    # kills _FlexBase._adopt: dropped insert_image_unit / `self.input_unit = ...`; _units_of: the
    # image candidate's units [candidate]; _train: engine tags with a colon (a checkpoint folder name)
    scripted_trainings(monkeypatch, FLEX_SCORES)
    torch.manual_seed(0)
    method, tags = Flex(lenet(), image_units=["colour"], keep_candidates=True), []
    method.fit_transfer(engines(tags), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert tags == [f"cand-{c}" for c in ("conv1", "conv2", "fc1", "head", "all", "image-colour")]
    assert method.picked == "image:colour" and method.trainable_units() == ["image"]
    picked = method.candidate_nets["image:colour"]
    with torch.no_grad():
        for p in [*picked.unit("image").parameters(), *method.net.unit("image").parameters()]:
            p.add_(0.5)  # away from the identity, so that skipping the unit shows
        x = toy_domain(4, seed=2).images
        method.eval()
        assert torch.allclose(method.forward_from_input(x), picked.eval()(x))  # from the image unit on


@pytest.mark.filterwarnings("ignore:fast_flex. the proxies")
def test_fast_flex_counts_both_trainings_returns_the_pick_s_fit_and_scores_proxies_of_its_units_with_the_head(
        monkeypatch):
    # kills FastFlex.fit_transfer: steps of the tuned unit only; best_step / history of the tuned unit,
    # no val_correct / val_loss, when ft_all is output; proxies without the head (with_head dropped) or
    # over every unit (units ignored); _FlexBase: keep_candidates default True
    scripted_trainings(monkeypatch, {"surgery-all": (0.75, 1.0, 5), "tune-conv2": (0.5, 0.5, 3),
                                     "tune-fc1": (0.5, 0.5, 3)})
    seen, real = [], flex_module.proxy_accuracies

    def recording(base, donor, units, domain, **kwargs):
        seen.append((list(units), kwargs.get("with_head")))
        return real(base, donor, units, domain, **kwargs)

    monkeypatch.setattr(flex_module, "proxy_accuracies", recording)
    method = FastFlex(lenet(), units=["conv2", "fc1"])
    method.head_has_new_rows(["4"])
    fit = method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert seen == [(["conv2", "fc1"], True)] and set(method.extra_results()["proxy_val_accuracy"]) == {"conv2", "fc1"}
    assert method.picked == "all" and method.candidate_nets == {}
    assert (fit.steps, fit.best_step, fit.history, fit.val_loss) == (8, 5, [{"tag": "surgery-all"}], 1.0)
    assert fit.val_correct.tolist() == [True] * 6 + [False] * 2


@pytest.mark.parametrize("name", ["fast_flex", "faster_flex"])
def test_a_proxy_tie_under_balanced_accuracy_names_the_metric_and_the_earlier_unit(name, monkeypatch):
    # kills FastFlex._tie_message: "k of n images" under balanced accuracy, the metric named accuracy,
    # tied[-1] named; faster_flex's advice without its batch size
    scripted_trainings(monkeypatch, {"surgery-all": (0.5, 1.0, 1), "tune-conv2": (0.75, 0.5, 3)})
    monkeypatch.setattr(flex_module, "proxy_accuracies", lambda base, donor, units, domain, **kw: {
        u: 0.5 if u in ("conv2", "fc1") else 0.25 for u in units})
    with pytest.warns(UserWarning) as caught:
        get_method(name)(lenet()).fit_transfer(engines([], metric="balanced_accuracy"),
                                               target=toy_domain(16), val=toy_domain(8, seed=1))
    message = str(caught[0].message)
    assert "tie at the best validation balanced accuracy 50.0% (8 images); the tie goes to the earlier unit, " \
           "conv2," in message
    assert ("batch_size 16" in message) == (name == "faster_flex")


def test_a_refused_proxy_metric_leaves_both_networks_in_training_mode():
    # was a real bug: check_select_metric(metric) ran after base.eval(), donor.eval(), with no restore on the error
    base, donor = lenet().train(), lenet().train()
    with pytest.raises(TransferkitError, match="select_metric must be accuracy or balanced_accuracy"):
        proxy_accuracies(base, donor, ["conv1"], toy_domain(8, seed=1), metric="recall")
    assert base.training and donor.training


def test_a_proxy_pass_that_fails_part_way_leaves_both_networks_in_their_modes():
    # kills: the modes restored after the loop only, not in a finally (images of 3 channels fail in conv1)
    base, donor = lenet().train(), lenet().eval()
    grey = toy_domain(8, seed=1)
    colour = Domain("colour", grey.images.expand(-1, 3, -1, -1).contiguous(), grey.labels, grey.class_names)
    with pytest.raises(RuntimeError):
        proxy_accuracies(base, donor, ["conv1"], colour)
    assert base.training and not donor.training


def test_scoring_gives_each_submodule_its_own_mode_back():
    # kills: val_predictions / proxy_accuracies restoring with net.train(was), which also switched a unit a
    # method keeps in eval mode (a frozen unit's batch norm) back to training
    base, donor = lenet().train(), lenet().train()
    base.unit("conv1").eval(), donor.unit("conv2").eval()
    val_predictions(base, toy_domain(8, seed=1))
    proxy_accuracies(base, donor, ["conv1"], toy_domain(8, seed=1))
    assert base.training and donor.training
    assert not base.unit("conv1").training and not donor.unit("conv2").training
    assert base.unit("conv2").training and donor.unit("conv1").training
