"""Tests from a mutation-testing pass over transferkit/represent.py (seed 004: CAT, CatTwoStage,
distillation), transferkit/methods/supervised.py (source_only / target_only) and the few-shot
methods of transferkit/methods/semantic.py (matching networks, prototype / cosine heads).

Each test kills at least one mutation that the earlier tests let survive; expected values come
from the documented equations in plain torch, from which parameters change, or from named errors.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_net, toy_domain

from transferkit.engine import Batch, Engine, FitResult, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.represent import CatTwoStage, ConcatFeatures, Distill, cat_network, distill_network


# ---- cat_network ------------------------------------------------------------------------------
def test_cat_network_takes_its_class_count_and_the_members_input_shape():
    cat = cat_network([tiny_net(4), tiny_net(4)], num_classes=7)
    assert cat.num_classes == 7 and cat(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert tuple(cat.input_shape) == (1, 28, 28)


def test_cat_needs_a_member():
    with pytest.raises(TransferkitError, match="at least one member"):
        cat_network([])
    with pytest.raises(TransferkitError, match="at least one member"):
        ConcatFeatures([])


def test_cat_head_without_a_seed_draws_from_the_global_random_state():
    members = [tiny_net(4), tiny_net(4)]
    torch.manual_seed(0)
    first = cat_network(members).head.weight.detach().clone()
    second = cat_network(members).head.weight.detach().clone()  # the state moved on: another head
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    assert torch.equal(cat_network(members).head.weight, first)


# ---- CatTwoStage ------------------------------------------------------------------------------
def test_cat_two_stage_gives_each_member_a_new_head_over_the_target_classes():
    members = [tiny_net(3), tiny_net(3)]  # source networks of 3 classes, a 4-class target
    cat = cat_network(members, num_classes=4)
    CatTwoStage(cat).fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=2, eval_every=2)),
                                  target=toy_domain(16), val=toy_domain(16, seed=1))
    assert [m.num_classes for m in members] == [4, 4]


def test_cat_two_stage_probes_with_a_new_head():
    cat = cat_network([tiny_net(4), tiny_net(4)])
    old = cat.head
    with torch.no_grad():
        old.weight.fill_(float("nan"))  # a head left over from before: must not be what the probe starts from
    method = CatTwoStage(cat)
    method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=2, eval_every=2)),
                        target=toy_domain(16), val=toy_domain(16, seed=1))
    assert cat.head is not old and torch.isfinite(cat.head.weight).all()


def test_cat_two_stage_tags_reports_and_history_of_every_fit(monkeypatch):
    from transferkit.methods.finetune import Finetune
    tags = []

    def fake_member_fit(self, make_engine, **kw):
        make_engine("main")  # Finetune asks for its engine by tag
        i = len(tags) - 1
        return FitResult(steps=3, best_step=1, best_val_accuracy=0.9, val_accuracy=0.5 + i / 10,
                         stopped_early=False, wall_s=0.0, history=[{"step": 1, "member": i}])
    monkeypatch.setattr(Finetune, "fit_transfer", fake_member_fit)

    def make_engine(tag, config=None):
        tags.append(tag)
        return Engine(TrainConfig(steps=2, eval_every=2))
    method = CatTwoStage(cat_network([tiny_net(4), tiny_net(4)]))
    fit = method.fit_transfer(make_engine, target=toy_domain(16), val=toy_domain(16, seed=1))
    assert tags == ["member0", "member1", "probe"]
    assert method.extra_results()["member_val_accuracy"] == [0.5, 0.6]  # what each fit kept, as the probe's
    assert [r.get("member") for r in fit.history[:2]] == [0, 1] and len(fit.history) > 2
    assert fit.steps == 3 + 3 + 2


# ---- Distill ----------------------------------------------------------------------------------
def test_distill_trains_the_student_heads():
    method = Distill(tiny_net(4), teacher=[tiny_net(4), tiny_net(4)])
    before = [h.weight.detach().clone() for h in method.student_heads]
    Engine(TrainConfig(steps=3, eval_every=3)).fit(method, source=toy_domain(16))
    assert all(not torch.equal(b, h.weight) for b, h in zip(before, method.student_heads))


def test_distill_student_heads_have_each_teachers_classes():
    torch.manual_seed(0)
    teacher = [tiny_net(5), tiny_net(3)]
    method = Distill(tiny_net(4), teacher=teacher, temperature=2.0)
    assert [h.out_features for h in method.student_heads] == [5, 3]
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6) % 4
    kd = method.losses(Batch(step=0, progress=0.0, source=(x, y)))["kd"]
    f = method.net.forward_features(x)
    ref = sum((F.softmax(m(x) / 2, 1) * (F.log_softmax(m(x) / 2, 1) - F.log_softmax(h(f) / 2, 1))).sum(1).mean()
              for h, m in zip(method.student_heads, teacher)) * 4
    assert kd.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)  # a KL near 0: float32 cancellation


def test_distill_network_copies_the_members_and_returns_the_fresh_student():
    members = [tiny_net(4), tiny_net(4)]
    student = tiny_net(4)
    net, _ = distill_network(members, lambda: student, lambda tag, config=None: Engine(TrainConfig(steps=1)),
                             toy_domain(16), None)
    assert net is student
    assert all(m.training for m in members) and all(p.requires_grad for m in members for p in m.parameters())


# ---- supervised baselines ---------------------------------------------------------------------
def test_source_only_loss_is_the_plain_cross_entropy_on_the_source():
    from transferkit.methods.supervised import SourceOnly, TargetOnly
    torch.manual_seed(0)
    net = tiny_net(4)
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 0])
    want = float(F.cross_entropy(net(x), y))
    assert float(SourceOnly(net).losses(Batch(step=0, progress=0.0, source=(x, y)))["ce_source"]) == \
        pytest.approx(want, rel=1e-6)
    assert float(TargetOnly(net).losses(Batch(step=0, progress=0.0, target=(x, y)))["ce_target"]) == \
        pytest.approx(want, rel=1e-6)


def test_target_only_trains_from_the_target_alone_without_pre_training(monkeypatch):
    from transferkit.api import Transfer
    from transferkit.methods.supervised import SourceOnly

    def no_pretraining(self, *a, **k):
        raise AssertionError("pre-trained a source network")
    monkeypatch.setattr(SourceOnly, "losses", no_pretraining)
    model = Transfer("target_only", backbone="lenet", train=TrainConfig(steps=2, eval_every=2)).fit(
        target=toy_domain(16))
    assert model.predict_logits(torch.rand(2, 1, 28, 28)).shape == (2, 4)


# ---- matching networks ------------------------------------------------------------------------
def test_matching_ft_episode_loss_keeps_the_queries_out_of_the_support():
    from transferkit.methods.semantic import FinetunedMatchingNet
    torch.manual_seed(0)
    net = tiny_net(3)
    method = FinetunedMatchingNet(net, scale=10.0)
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 0, 1, 2, 0])
    loss = method.losses(Batch(step=0, progress=0.0, target=(x, y)))["episode_ce"]
    f = net.forward_features(x)
    q, s = torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])  # first of classes 0 and 1; class 2 has one image
    att = torch.softmax(10 * F.normalize(f[q], dim=1) @ F.normalize(f[s], dim=1).t(), 1)
    probs = att @ F.one_hot(y[s], 3).float()
    assert float(loss) == pytest.approx(float(-probs[torch.arange(2), y[q]].log().mean()), rel=1e-5)


def test_matching_net_infers_its_classes_from_the_support_set():
    from transferkit.methods.semantic import MatchingNet
    method = MatchingNet(tiny_net(3))
    method.fit_transfer(None, target=toy_domain(8, classes=4))
    assert method.num_target_classes == 4 and method(torch.rand(2, 1, 28, 28)).shape == (2, 4)


def test_transfer_says_a_validation_split_given_to_a_matching_network_is_not_used():
    from transferkit.api import Transfer
    with pytest.warns(Warning, match="fit: val= is not used: method 'matching_net' selects nothing on a validation"):
        Transfer("matching_net").fit(target=toy_domain(8, classes=4), net=tiny_net(3), val=toy_domain(8, classes=4))


# ---- prototype and cosine heads on the fine-tuned network -------------------------------------
def test_finetune_proto_trains_through_the_linear_head():
    from transferkit.methods.semantic import FinetunePrototype
    net = tiny_net(4)
    method = FinetunePrototype(net)
    method._labeled = toy_domain(8)  # as during its fit: validation predicts by class means, training does not
    method.train()
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(method.forward_from_input(x), net(x))


def test_finetune_cosine_head_starts_from_the_given_scale():
    from transferkit.methods.semantic import FinetuneCosine
    method = FinetuneCosine(tiny_net(4), scale=3.0)
    assert float(method.net.head.scale) == 3.0
    f = torch.rand(2, 16)
    w = method.net.head.weight
    assert torch.allclose(method.net.head(f), 3.0 * F.normalize(f, dim=1) @ F.normalize(w, dim=1).t())


def test_matching_ft_matches_against_the_labelled_set_after_fine_tuning():
    from transferkit.methods.semantic import FinetunedMatchingNet
    method = FinetunedMatchingNet(tiny_net(4))
    labeled = toy_domain(8)
    method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=1)), target=labeled)
    assert torch.equal(method.support_labels, labeled.labels)
    assert torch.allclose(method.support_features, method.net.forward_features(labeled.images), atol=1e-6)
