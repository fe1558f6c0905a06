"""Tests from a fourth mutation pass over layer tapping (``methods/tap.py``) and CAT / distillation
(``represent.py``). The first three passes (``test_represent_mutation``, ``test_represent_tap_second_mutation``,
``test_represent_tap_third_mutation``) and the tests of ``test_tap``, ``test_represent``, ``test_finetune_methods``
and the tap part of ``test_finetune_flex_mutation`` pinned the equations, the argument checks, the tie rules and the
tables; these kill what they let through: frozen features and the ``Tap`` method's ``logits`` taken in eval mode (a
dropout unit gives its deterministic output); classes absent from training never winning, even where every present
class scores below 0; each classifier row written at its class id when the classes present are not the first ones;
the head refused as a unit; the convergence warning naming each classifier's own units; the classifier recorded
as picked without a validation split; ``CatTwoStage``'s probe loss named ``ce_target`` and a new head for members
with more classes than the target; ``Distill`` taking a teacher that binds no image shape, weighting its label term
by the source stream's class weights and never pre-training a source network; CAT members and teachers compared
by their whole image shape, not their channels. Each test names the mutants it kills.

A bug the pass found, now fixed: ``cat_network`` took its input shape from its first member only, so a CAT whose
first member binds no image shape bound none even where another member did, and images of the wrong size gave
PyTorch's bare ``RuntimeError`` instead of the error naming the shape the network takes.

Judged equivalent, so not tested: in ``Distill.train_mode``, ``self.teacher.eval()`` dropped (the base
``train_mode`` already puts every frozen child beside ``net`` in eval mode); ``cache_frozen_prefix = False`` ->
``True`` (every unit of the student trains: there is no frozen prefix to cache); in ``distill_network``,
``copy.deepcopy(m).eval()`` -> ``copy.deepcopy(m)`` (``cache_stream`` and ``train_mode`` put the teachers in eval
mode before any forward); in ``unit_features``, the ``input_shape_guessed`` guard defaulting to ``True``
(``check_input_shape`` skips a guessed shape itself); in ``tap_units``, the units returned in ``unit_names`` order
rather than ``feature_names`` order (the check admits feature units only, in the same order).

Left surviving: none of those tried."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import tiny_net, toy_domain

from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.methods import tap as tap_module
from transferkit.methods.tap import Tap, fit_linear, tap, unit_features
from transferkit.represent import CatTwoStage, Distill, cat_network

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- tap ------------------------------------------------------------------------------------------------------


def _dropout_net():
    """A UnitNet whose unit ``unit2`` is a dropout: random in training mode, the identity in eval mode."""
    from transferkit.backbones import from_sequential
    seq = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8), nn.Dropout(0.5), nn.Linear(8, 4))
    return seq, from_sequential(seq, units=[2, 1], input_shape=(1, 28, 28))


def test_unit_features_are_taken_in_eval_mode():
    seq, net = _dropout_net()
    net.train()
    x = toy_domain(6).images
    torch.manual_seed(0)
    feats = unit_features(net, x, ["unit2"])["unit2"]
    with torch.no_grad():
        want = seq[2].eval()(seq[1](seq[0](x)))  # dropout off: the deterministic features
    assert torch.allclose(feats, want)  # kills: `with evaluating(net)` dropped (dropout drawn in the features)


def test_classes_absent_from_training_never_win_even_where_every_present_class_scores_below_zero():
    import math
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[math.cos(a), math.sin(a)] for a in (0.0, 2.1, 4.2)]) * 3
    y = torch.arange(30) % 3  # classes 0-2 of 5
    x = centres[y] + 0.3 * torch.randn(30, 2, generator=g)
    lin = fit_linear("svm", x, y, 5)
    with torch.no_grad():
        between = lin(torch.zeros(1, 2))  # one-vs-rest: every present class scores below 0 between the clusters
    assert bool((between[0, :3] < 0).all())
    assert int(between.argmax(1)) in (0, 1, 2)  # kills: the absent classes' bias -1e9 -> 0 (they would win)



def test_tap_refuses_the_head_as_a_unit():
    with pytest.raises(TransferkitError, match="unknown unit 'head'"):  # kills: units checked against unit_names
        Tap(tiny_net(4), units="head")  # (the head slipped through the check and was then silently dropped)


def test_fit_linear_puts_each_classifier_row_at_its_class_id_when_the_classes_present_are_not_the_first():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([1, 3] * 10)  # classes 1 and 3 of 4
    x = torch.randn(20, 3, generator=g) + 3 * (y == 3).float()[:, None]
    for kind in ("svm", "softmax"):
        lin = fit_linear(kind, x, y, 4)
        with torch.no_grad():
            assert torch.equal(lin(x).argmax(1), y)  # kills: the rows written to ids 0, 1 (not clf.classes_)


def test_the_convergence_warning_names_each_classifiers_own_units(monkeypatch):
    real = tap_module._fit_linear

    def svm_at_unit1_softmax_at_unit2(kind, x, *a, **k):
        lin, _ = real(kind, x, *a, **k)
        return lin, not ((kind == "svm" and x.shape[1] == 4 * 13 * 13) or (kind == "softmax" and x.shape[1] == 16))
    monkeypatch.setattr(tap_module, "_fit_linear", svm_at_unit1_softmax_at_unit2)
    with pytest.warns(TransferkitWarning) as caught:
        tap(tiny_net(4), toy_domain(32), toy_domain(16, seed=1), progress=False)
    text = " ".join(str(w.message) for w in caught if w.category is TransferkitWarning)
    # kills: each classifier listed with every unconverged pair's unit (`if k == kind` dropped)
    assert "svm at unit(s) 'unit1' (in" in text and "softmax at unit(s) 'unit2' (in" in text


def test_the_tap_methods_logits_run_the_network_in_eval_mode():
    _, net = _dropout_net()
    m = Tap(net, units="unit2")
    m.fit_transfer(None, target=toy_domain(32), val=toy_domain(16, seed=1))
    x = toy_domain(8, seed=2).images
    m.eval()
    with torch.no_grad():
        want = m(x)
    m.train()  # as a method left after a training
    torch.manual_seed(0)
    assert torch.allclose(m.logits(x), want)  # kills: self.eval() dropped from Tap.logits (dropout drawn)


def test_the_tap_method_without_validation_records_the_classifier_it_picked(monkeypatch):
    scores = iter([0.5, 0.9, 0.5, 0.5])  # (unit1, svm), (unit1, softmax), (unit2, svm), (unit2, softmax)
    monkeypatch.setattr(tap_module, "fraction_correct", lambda pred, labels: next(scores))
    m = Tap(tiny_net(4))
    with pytest.warns(TransferkitWarning, match="no validation set"):
        m.fit_transfer(None, target=toy_domain(32))
    extra = m.extra_results()
    # kills: tap_classifier not the pick's when it picks on training accuracy
    assert (m.tap_unit, extra["tap_classifier"], extra["picked"]) == ("unit1", "softmax", "unit1/softmax")


# ---- represent.py ---------------------------------------------------------------------------------------------


def test_cat_two_stage_probe_loss_is_named_ce_target_as_every_supervised_methods():
    method = CatTwoStage(cat_network([tiny_net(4), tiny_net(4)]))
    d = toy_domain(4)
    assert set(method.losses(Batch(step=0, progress=0.0, target=(d.images, d.labels)))) == {"ce_target"}  # kills:
    # the key renamed (history and loss weights read it by name)


def test_distill_takes_a_teacher_that_binds_no_image_shape():
    teacher = tiny_net(4)
    teacher.input_shape = None
    method = Distill(tiny_net(4), teacher=[teacher])  # kills: `shape is not None and` dropped (tuple(None))
    assert len(method.student_heads) == 1


def test_distill_weights_its_label_term_by_the_source_streams_class_weights():
    torch.manual_seed(0)
    method = Distill(tiny_net(4), teacher=[tiny_net(4)])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    method.class_weights = {"source": w}  # as the engine sets them for class_weight: balanced
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 3, 3])
    got = float(method.losses(Batch(step=0, progress=0.0, source=(x, y)))["ce_source"].detach())
    with torch.no_grad():
        logits = method.net(x)
    # kills: self.cross_entropy(..., "source") -> F.cross_entropy (unweighted) or the "target" stream's weights
    assert got == pytest.approx(float(F.cross_entropy(logits, y, weight=w)), rel=1e-5)
    assert got != pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-3)


def test_distill_does_not_pre_train_a_source_network(monkeypatch):
    from transferkit import Transfer

    def trained(*a, **k):
        raise AssertionError("trained")
    monkeypatch.setattr(Engine, "fit", trained)
    # kills: needs_pretrained = True (a source network pre-trained, then distilled from the teachers anyway)
    with pytest.raises(TransferkitError, match="method 'distill' does not pre-train"):
        Transfer("distill", teacher=[tiny_net(4)]).fit(source=toy_domain(8), source_val=toy_domain(8, seed=1))


def test_cat_and_distill_refuse_networks_of_another_image_size_with_the_same_channels():
    big = tiny_net(4)
    big.input_shape = (1, 32, 32)  # one channel, as the others, but 32 x 32 images
    with pytest.raises(TransferkitError, match="same images"):  # kills: the members' shapes compared by channels
        cat_network([tiny_net(4), big])
    with pytest.raises(TransferkitError, match=r"teacher 0 takes images of shape \(1, 32, 32\)"):  # kills: the
        Distill(tiny_net(4), teacher=[big])  # teachers' shapes compared by channels


def test_cat_two_stage_gives_members_with_more_classes_than_the_target_a_new_head(monkeypatch):
    from transferkit.engine import FitResult
    from transferkit.methods.finetune import Finetune
    seen = []

    def fake_member_fit(self, make_engine, target=None, val=None):
        seen.append(self.net.num_classes)
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    monkeypatch.setattr(Finetune, "fit_transfer", fake_member_fit)
    cat = cat_network([tiny_net(6), tiny_net(6)], num_classes=4)  # 6 source classes, a 4-class target
    CatTwoStage(cat).fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=1, eval_every=1, progress=False)),
                                  target=toy_domain(8), val=toy_domain(8, seed=1))
    assert seen == [4, 4]  # kills: `!=` -> `<` (only members with fewer classes than the target given a new head)


def test_a_cat_binds_the_image_shape_of_any_member_that_has_one():
    # found as a bug by this pass: cat_network bound members[0].input_shape only (now the first member's that binds one)
    free = tiny_net(3)
    free.input_shape = None  # a network that binds no image shape, listed first
    cat = cat_network([free, tiny_net(3)])
    assert cat.input_shape is not None and tuple(cat.input_shape) == (1, 28, 28)
    with pytest.raises(TransferkitError, match=r"1 x 28 x 28"):  # not PyTorch's bare shape error
        cat(torch.rand(2, 1, 32, 32))
