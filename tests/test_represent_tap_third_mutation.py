"""Tests from a third mutation pass over layer tapping (``methods/tap.py``) and CAT / distillation
(``represent.py``). The first two passes (``test_represent_mutation``, ``test_represent_tap_second_mutation``)
and the tap tests of ``test_tap``, ``test_finetune_methods`` and ``test_finetune_flex_mutation`` pinned the
equations, the argument checks and the tables; these kill what they let through: the unknown-unit error
listing the units there are; frozen features taken over every chunk of images; ``fit_linear``'s unknown
classifier, its count of the classes present (not the largest label) and its seed handed to the SVM;
``tap``'s ``c`` checked as a number and named in the convergence warning; the ``Tap`` method naming a
validation split of another image size, and its ``logits`` and ``test_results`` before a fit and without a
test split; ``source_members``' pinned members seeded one apart, each in its own folder; ``cat_network``'s
class count checked as a whole number; ``CatTwoStage`` refusing a network that is no CAT and fine-tuning
each member with the validation split; ``distill_network`` handing its validation split and options to the
fit. Each test names the mutants it kills.

A real bug it found, fixed with its test: ``Distill`` built its teacher-shape message with
``tuple(net.input_shape)`` before the check, so a student that binds no image shape raised ``TypeError``.

Judged equivalent, so not tested: in ``Tap.fit_transfer``, the tie-break ``-self.units.index(...)`` dropped
(``scores`` is filled in network order and ``max`` keeps the first of equal keys); in ``Tap.logits``,
``image_batch`` given no input shape (the forward's own error names the same shapes, as a TransferkitError);
in ``CatTwoStage``, ``config`` not handed on in the members' engine factory (``Finetune`` never passes one)."""

import warnings

import pytest
import torch
from helpers import tiny_net, toy_domain

from transferkit.engine import Engine, FitResult, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.methods import tap as tap_module
from transferkit.methods.tap import Tap, fit_linear, tap, unit_features

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_tap():
    m = Tap(tiny_net(4), units="unit2")
    m.fit_transfer(None, target=toy_domain(32), val=toy_domain(16, seed=1))
    return m


# ---- tap_units and unit_features ------------------------------------------------------------------------------


def test_an_unknown_unit_is_refused_naming_the_units_there_are():
    # kills: the list of units dropped from the message
    with pytest.raises(TransferkitError, match=r"unknown unit 'fc9'; units are \['unit1', 'unit2'\]"):
        Tap(tiny_net(4), units=["fc9"])


def test_unit_features_cover_every_chunk_of_images():
    net, images = tiny_net(4), toy_domain(5).images
    whole = unit_features(net, images, ["unit1", "unit2"])
    chunked = unit_features(net, images, ["unit1", "unit2"], batch_size=2)  # kills: only the first chunk kept
    assert chunked["unit2"].shape == (5, 16) and all(torch.allclose(whole[u], chunked[u]) for u in whole)


# ---- fit_linear -----------------------------------------------------------------------------------------------


def test_fit_linear_refuses_an_unknown_classifier_by_name():
    with pytest.raises(TransferkitError, match="unknown tap classifier 'svm2' \\(svm, softmax\\)"):  # kills: check
        fit_linear("svm2", torch.randn(8, 3), torch.arange(8) % 2, 2)  # dropped (any other kind fit as a softmax)


def test_fit_linear_hands_its_seed_to_the_svm(monkeypatch):
    from sklearn.svm import LinearSVC
    seeds, real = [], LinearSVC.fit

    def recording(self, *a, **k):
        seeds.append(self.random_state)
        return real(self, *a, **k)
    monkeypatch.setattr(LinearSVC, "fit", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_linear("svm", torch.randn(20, 3), torch.arange(20) % 2, 2, seed=3)
    # kills: LinearSVC's random_state=seed dropped (liblinear's shuffle drawn from numpy's global state);
    # fit_linear not handing its seed to _fit_linear
    assert seeds == [3]


# ---- tap ------------------------------------------------------------------------------------------------------


def test_tap_refuses_a_c_that_is_no_number():
    # kills: isinstance check dropped
    with pytest.raises(TransferkitError, match="c must be a finite number > 0, got '1'"):
        tap(tiny_net(4), toy_domain(16), toy_domain(8, seed=1), c="1")


def test_tap_names_its_c_in_the_convergence_warning(monkeypatch):
    real = tap_module._fit_linear
    monkeypatch.setattr(tap_module, "_fit_linear", lambda *a, **k: (real(*a, **k)[0], False))  # none converged
    with pytest.warns(TransferkitWarning, match="did not converge.*at c=0.25;"):  # kills: c not named (1.0 or "1")
        tap(tiny_net(4), toy_domain(32), toy_domain(16, seed=1), units="unit2", c=0.25, progress=False)


def test_the_tap_method_names_a_validation_split_of_another_image_size():
    big = toy_domain(16, seed=1).to_format(size=32)
    with pytest.raises(TransferkitError, match=r"tap: the validation domain 'toy': images of shape \(1, 32, 32\)"):
        Tap(tiny_net(4), units="unit2").fit_transfer(None, target=toy_domain(32), val=big)  # kills: named "target"


def test_the_tap_method_before_a_fit_and_without_a_test_split():
    with pytest.raises(TransferkitError, match="call fit_transfer first"):  # kills: tap_head None check dropped
        Tap(tiny_net(4)).logits(torch.rand(2, 1, 28, 28))  # in logits (no unit to read the activations of)
    m = _fit_tap()
    assert m.test_results(None) == {}  # kills: `test is None` dropped (len(None))


# ---- represent.py ---------------------------------------------------------------------------------------------


def test_pinned_source_members_are_seeded_one_apart_each_in_its_folder(tmp_path, monkeypatch):
    from transferkit.config import ExperimentConfig
    from transferkit.represent import source_members
    seen = []

    def fake_run(cfg, data, where, log):
        seen.append((cfg.seed, where.name, where.is_dir()))
        return tiny_net(4), None
    monkeypatch.setattr("transferkit.source.run_source_network", fake_run)
    members = source_members(ExperimentConfig(seed=5), None, 2, log=lambda *a: None, pin_dir=tmp_path / "pins")
    # kills: the run's cfg (one seed) pinned for every member; the member folders not made
    assert len(members) == 2 and seen == [(5, "member0", True), (6, "member1", True)]


def test_cat_two_stage_refuses_a_network_that_is_no_cat():
    from transferkit.represent import CatTwoStage
    with pytest.raises(TransferkitError, match="cat_two_stage needs a network built by .*cat_network"):  # kills:
        CatTwoStage(tiny_net(4))  # the check dropped (it failed at the fit, on unit 'cat')


def test_distill_takes_a_student_that_binds_no_image_shape():
    from transferkit.represent import Distill
    student = tiny_net(4)
    student.input_shape = None
    method = Distill(student, teacher=[tiny_net(4)])  # kills: `net.input_shape is None or` dropped (tuple(None))
    assert len(method.student_heads) == 1
    with pytest.raises(TransferkitError, match=r"teacher 0 takes images of shape \(1, 28, 28\) but the student "
                                               r"takes \(3, 28, 28\)"):  # the check itself still stands
        Distill(tiny_net(4, channels=3), teacher=[tiny_net(4)])


def test_distill_network_hands_its_validation_split_and_options_to_the_fit():
    from transferkit.represent import distill_network
    seen = {}

    class Recording:
        def fit(self, method, source=None, val=None):
            seen.update(val=val, temperature=method.temperature, ce_weight=method.ce_weight)
            return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    val = toy_domain(8, seed=1)
    distill_network([tiny_net(4)], lambda: tiny_net(4), lambda tag, config=None: Recording(), toy_domain(8), val,
                    temperature=5.0, ce_weight=0.5)
    # kills: val not handed to the fit; **options not handed to Distill
    assert seen == {"val": val, "temperature": 5.0, "ce_weight": 0.5}


def test_cat_refuses_a_class_count_that_is_no_whole_number():
    from transferkit.represent import cat_network
    for bad in (2.5, True):  # kills: is_whole(num_classes, 1) -> num_classes >= 1
        with pytest.raises(TransferkitError, match="num_classes must be a whole number >= 1"):
            cat_network([tiny_net(4)], num_classes=bad)


def test_fit_linear_counts_the_classes_present_not_the_largest_label():
    with pytest.raises(TransferkitError, match="at least 2 classes.*got 1"):  # kills: present = y.max() + 1
        fit_linear("softmax", torch.randn(12, 3), torch.full((12,), 2), 3)


def test_cat_two_stage_fine_tunes_each_member_with_the_validation_split(monkeypatch):
    from transferkit.methods.finetune import Finetune
    from transferkit.represent import CatTwoStage, cat_network
    seen = []

    def fake_member_fit(self, make_engine, target=None, val=None):
        seen.append(val)
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    monkeypatch.setattr(Finetune, "fit_transfer", fake_member_fit)
    val = toy_domain(8, seed=1)
    CatTwoStage(cat_network([tiny_net(4), tiny_net(4)])).fit_transfer(
        lambda tag, config=None: Engine(TrainConfig(steps=1, eval_every=1, progress=False)), target=toy_domain(8),
        val=val)
    assert seen == [val, val]  # kills: the members fine-tuned without validation (no early stopping, no accuracy)
