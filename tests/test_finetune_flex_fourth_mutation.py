"""Tests from a fourth mutation pass over the fine-tuning family (``methods/finetune.py``) and
flex-tuning (``methods/flex.py``, seed 002 Algorithms 1-3), after ``test_finetune_flex_mutation.py``,
``test_finetune_flex_second_mutation.py`` and ``test_finetune_flex_third_mutation.py``: the validation
set both stages of ``two_stage`` select on and the copy of its record it hands out; ``ft_ss``'s
``scaling`` attribute and the pre-trained weights its ``prepare`` freezes; the units a flex that picks
``all`` tunes (head included), a unit named like ``image...`` that is no image candidate, units that
are no names (repeated, or refused with the names there are); faster_flex naming itself in its
refusals and its proxy tie warning, a tie's image count when ``k / n * n`` is not exact in floating
point, and whether the picked candidate stopped early (flex and fast_flex). Candidate trainings are
scripted (the helpers of ``test_finetune_flex_second_mutation.py``) or ``Engine.fit`` is
monkeypatched, so no test trains. Each test fails when the code its comment names is changed in the
way it says.

Judged equivalent, so not tested: ``proxy_accuracies``' ``width = max(domain.num_classes, 1)`` ->
``domain.num_classes`` (an empty domain is refused first, a labelled one has a class);
``candidate_units`` keeping only tunable units in its result (each was checked tunable already);
``_adopt``'s image unit test ``in net.feature_names`` -> ``in net.unit_names`` (an image unit is a
feature unit); ``FtSlow.param_groups``' ``feature_names`` -> ``unit_names[:-1]`` (the head is the last
unit). Left surviving: ``candidate_units``' unknown-unit refusal listing the units with parameters
instead of every unit (both name valid choices; wording only).
"""

import dataclasses

import pytest
from helpers import toy_domain
from test_finetune_flex_second_mutation import FLEX_SCORES, engines, lenet, scripted_trainings

from transferkit.engine import Engine, FitResult
from transferkit.errors import TransferkitError
from transferkit.methods import flex as flex_module
from transferkit.methods import get_method
from transferkit.methods.finetune import KernelScaleShift, ScaleShift
from transferkit.methods.flex import FastFlex, Flex

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- two_stage -----------------------------------------------------------------------------


def test_two_stage_selects_both_stages_on_validation_and_hands_out_a_copy_of_its_record(monkeypatch):
    # kills TwoStage.fit_transfer: stage 1 or stage 2 fitted without `val=val` (no early stopping on it);
    # TwoStage.extra_results: `dict(self._extra)` -> `self._extra` (a caller's edit changed the method's record)
    seen = []

    def fake_fit(self, method, target=None, val=None, **kw):
        seen.append((self.tag, val))
        return FitResult(steps=1, best_step=1, best_val_accuracy=0.5, stopped_early=False, wall_s=0.0,
                         history=[], val_accuracy=0.5)

    monkeypatch.setattr(Engine, "fit", fake_fit)
    method, val = get_method("two_stage")(lenet()), toy_domain(8, seed=1)
    method.fit_transfer(engines([]), target=toy_domain(16), val=val)
    assert seen == [("finetune", val), ("probe", val)]
    record = method.extra_results()
    record["picked"] = "head"
    assert method.extra_results() == {"stage1_val_accuracy": 0.5}


# ---- ft_ss -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", ["kernel", "channel"])
def test_ft_ss_says_which_scaling_it_tunes(scaling):
    # kills FtSS.__init__: dropped `self.scaling = scaling` (the method no longer says its scaling)
    method = get_method("ft_ss")(lenet(), scaling=scaling)
    assert method.scaling == scaling
    kinds = {type(m) for m in method.scale_shifts}  # lenet: two convolutions, then linear layers
    assert kinds == ({KernelScaleShift, ScaleShift} if scaling == "kernel" else {ScaleShift})



def test_ft_ss_freezes_the_pretrained_weights_before_training():
    # kills FtSS.prepare: dropped `super().prepare(domains)` (frozen weights kept requires_grad)
    method = get_method("ft_ss")(lenet())
    method.prepare({})
    ss = {id(p) for p in method.ss_parameters()}
    head = {id(p) for p in method.net.unit("head").parameters()}
    for name, p in method.net.named_parameters():
        assert p.requires_grad == (id(p) in ss or id(p) in head), name
    assert ss and head

# ---- fast_flex, faster_flex ------------------------------------------------------------------


def test_faster_flex_names_itself_when_it_refuses_a_missing_split(monkeypatch):
    # kills FastFlex.fit_transfer: the refusals' `{self.name}` -> "fast_flex" (naming another method)
    monkeypatch.setattr(flex_module, "train_candidates", lambda jobs, workers=1: pytest.fail("trained"))
    method = get_method("faster_flex")(lenet())
    with pytest.raises(TransferkitError, match="^faster_flex selects on a labelled validation set"):
        method.fit_transfer(engines([]), target=toy_domain(16), val=None)
    with pytest.raises(TransferkitError, match="^faster_flex tunes on labelled target images"):
        method.fit_transfer(engines([]), target=None, val=toy_domain(8, seed=1))


# ---- flex ------------------------------------------------------------------------------------


def test_flex_that_picks_ft_all_tunes_every_unit_head_included(monkeypatch):
    # kills _FlexBase._units_of: `all` -> the feature units only (the adopted head left frozen, not listed)
    scripted_trainings(monkeypatch, {**FLEX_SCORES, "cand-all": (0.875, 0.1, 16)})
    method = Flex(lenet())
    method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert method.picked == "all" and method.trainable_units() == method.net.unit_names
    assert all(p.requires_grad for p in method.net.parameters())


def test_faster_flex_names_itself_in_its_proxy_tie_warning(monkeypatch):
    # kills FastFlex._tie_message: `{self.name}` -> "fast_flex" (the warning of faster_flex named another method)
    scripted_trainings(monkeypatch, {"surgery-all": (0.5, 1.0, 1), "tune-conv2": (0.75, 0.5, 3)})
    monkeypatch.setattr(flex_module, "proxy_accuracies", lambda base, donor, units, domain, **kw: {
        u: 0.5 if u in ("conv2", "fc1") else 0.25 for u in units})
    with pytest.warns(UserWarning, match="^faster_flex: the proxies of conv2, fc1 tie"):
        get_method("faster_flex")(lenet()).fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))


def test_flex_refuses_units_that_are_no_names_and_says_which_names_there_are():
    # kills candidate_units: `str(u)` dropped from the repeat check (a TypeError instead of the refusal);
    # the known unit names dropped from the refusal of a unit that is no name
    with pytest.raises(TransferkitError, match="units lists 3 more than once"):
        Flex(lenet(), units=[3, 3])
    with pytest.raises(TransferkitError, match="got 3; units are conv1, conv2, fc1, head"):
        Flex(lenet(), units=[3])


def test_a_proxy_tie_counts_images_whose_fraction_is_not_exact_in_floating_point(monkeypatch):
    # kills FastFlex._tie_message: `round(score * n_val)` -> `int(score * n_val)` (29 / 100 * 100 is 28.99...)
    scripted_trainings(monkeypatch, {"surgery-all": (0.5, 1.0, 1), "tune-conv2": (0.75, 0.5, 3)})
    monkeypatch.setattr(flex_module, "proxy_accuracies", lambda base, donor, units, domain, **kw: {
        u: 29 / 100 if u in ("conv2", "fc1") else 0.25 for u in units})
    with pytest.warns(UserWarning, match=r"accuracy 29\.0% \(29 of 100 images\)"):
        FastFlex(lenet()).fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(100, seed=1))



@pytest.mark.parametrize("name", ["flex", "fast_flex"])
def test_the_fit_says_whether_the_picked_candidate_stopped_early(name, monkeypatch):
    # kills Flex.fit_transfer: `stopped_early=fit.stopped_early` -> False; FastFlex.fit_transfer: the stop of
    # ft_all (the surgery donor) reported for the tuned unit it outputs
    scripted_trainings(monkeypatch, {**FLEX_SCORES, "surgery-all": (0.5, 1.0, 5), "tune-conv1": (0.75, 0.5, 3)})
    scripted = flex_module.train_candidates
    monkeypatch.setattr(flex_module, "train_candidates", lambda jobs, workers=1: [
        (net, dataclasses.replace(fit, stopped_early=job[0].tag != "surgery-all"))
        for job, (net, fit) in zip(jobs, scripted(jobs, workers))])
    monkeypatch.setattr(flex_module, "proxy_accuracies", lambda base, donor, units, domain, **kw: {
        u: 0.5 if u == "conv1" else 0.25 for u in units})
    method = get_method(name)(lenet())
    fit = method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert method.picked == ("conv2" if name == "flex" else "conv1") and fit.stopped_early


def test_a_unit_whose_name_starts_with_image_is_no_image_candidate():
    # kills _FlexBase._units_of: `startswith("image:")` -> `startswith("image")` (unit "imagery" read as the image unit)
    method = Flex(lenet())
    assert method._units_of("imagery") == ["imagery"] and method._units_of("image:colour") == ["image"]
