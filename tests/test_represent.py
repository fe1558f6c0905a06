"""CAT_n, two-stage over CAT and DISTILL_n (seed 004)."""

import pytest
import torch
import torch.nn as nn

from transferkit.backbones import from_sequential
from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.evaluate import predict_logits
from transferkit.methods.finetune import LinearProbe
from transferkit.represent import CatTwoStage, Distill, cat_network


def tiny_net(classes: int, width: int = 16):
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, width),
                        nn.ReLU(), nn.Linear(width, classes))
    return from_sequential(seq, units=[2, 3], input_shape=(1, 28, 28))


def _domain(n=40):
    g = torch.Generator().manual_seed(0)
    return Domain("d", torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 4, [str(i) for i in range(4)])


def test_cat_feature_size_is_the_sum_of_its_members():
    members = [tiny_net(4, 16), tiny_net(4, 8), tiny_net(4, 5)]
    cat = cat_network(members)
    assert cat.embed_dim == 29
    x = _domain(3).images
    f = cat.forward_features(x)
    assert f.shape == (3, 29)
    assert torch.allclose(f[:, 16:24], members[1].forward_features(x))
    assert cat(x).shape == (3, 4)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 4))
    rgb = from_sequential(seq, units=[3], input_shape=(3, 28, 28))
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="same images"):  # it failed only at the first forward
        cat_network([tiny_net(4), rgb])


def test_linear_probe_on_cat_keeps_members_frozen():
    members = [tiny_net(4), tiny_net(4)]
    cat = cat_network(members)
    before = [p.detach().clone() for p in cat.unit("cat").parameters()]
    Engine(TrainConfig(steps=5, eval_every=5)).fit(LinearProbe(cat), target=_domain())
    assert all(torch.equal(a, b) for a, b in zip(before, cat.unit("cat").parameters()))


def test_cat_two_stage_fine_tunes_each_member_then_probes():
    members = [tiny_net(4), tiny_net(4)]
    cat = cat_network(members)
    before = [m.unit("unit1")[0].weight.detach().clone() for m in members]
    method = CatTwoStage(cat)
    fit = method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=4, eval_every=4)), target=_domain(),
                              val=_domain())
    assert all(not torch.equal(b, m.unit("unit1")[0].weight) for b, m in zip(before, members))
    assert len(method.extra_results()["member_val_accuracy"]) == 2 and fit.best_val_accuracy is not None


def test_distill_trains_the_student_only():
    teacher = [tiny_net(4), tiny_net(4)]
    t_before = [p.detach().clone() for m in teacher for p in m.parameters()]
    student = tiny_net(4)
    s_before = student.unit("unit1")[0].weight.detach().clone()
    method = Distill(student, teacher=teacher)
    fit = Engine(TrainConfig(steps=5, eval_every=5)).fit(method, source=_domain(), val=_domain())
    assert all(torch.equal(a, b) for a, b in zip(t_before, (p for m in teacher for p in m.parameters())))
    assert not torch.equal(s_before, student.unit("unit1")[0].weight)
    assert "kd" in fit.history[-1] and predict_logits(student, _domain(5).images).shape == (5, 4)


def test_distill_computes_the_teacher_logits_once_per_fit():
    from helpers import check_frozen_features_cached

    from transferkit.engine import Batch
    teacher = [tiny_net(4), tiny_net(4)]
    method = Distill(tiny_net(4), teacher=teacher)
    src = _domain()
    idx = torch.tensor([3, 30, 1])
    batch = Batch(step=0, progress=0.0, source=(src.images[idx], src.labels[idx]), indices={"source": idx})
    check_frozen_features_cached(method, teacher[1].unit("unit1"),
                                 lambda: Engine(TrainConfig(steps=5, eval_every=5)).fit(method, source=src),
                                 batch, {"source": src.images})


def test_distill_kd_term_is_t_squared_times_the_kl_to_each_teachers_softened_outputs():
    import torch.nn.functional as F

    from transferkit.engine import Batch
    torch.manual_seed(0)
    teacher = [tiny_net(4), tiny_net(4)]
    method = Distill(tiny_net(4), teacher=teacher, temperature=3.0)
    x, y = _domain(6).images, _domain(6).labels
    terms = method.losses(Batch(step=0, progress=0.0, source=(x, y)))
    f = method.net.forward_features(x)
    kd = sum(F.kl_div(F.log_softmax(h(f) / 3, 1), F.softmax(m(x) / 3, 1), reduction="batchmean")
             for h, m in zip(method.student_heads, teacher)) * 9
    assert float(terms["kd"]) == pytest.approx(float(kd), rel=1e-5) and float(kd) > 0
    assert float(terms["ce_source"]) == pytest.approx(float(F.cross_entropy(method.net.head(f), y)), rel=1e-5)


def test_cat_two_stage_probe_keeps_the_fine_tuned_members_fixed(monkeypatch):
    from helpers import state_copy
    members = [tiny_net(4), tiny_net(4)]
    stages, real = [], Engine.fit

    def recording_fit(self, method, **kw):
        before = [state_copy(m) for m in members]
        result = real(self, method, **kw)
        stages.append((before, [state_copy(m) for m in members]))
        return result
    monkeypatch.setattr(Engine, "fit", recording_fit)
    CatTwoStage(cat_network(members)).fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=4, eval_every=4)),
                                                   target=_domain(), val=_domain())
    assert len(stages) == 3  # two members, then the probe
    changed = [any(not torch.equal(b[k], a[k]) for k in b) for b, a in zip(*stages[0])]
    assert changed == [True, False]  # stage 1 tunes one member per fit
    for b, a in zip(*stages[-1]):
        assert all(torch.equal(b[k], a[k]) for k in b)


def test_distill_ce_weight_scales_the_label_term():
    from transferkit.engine import Batch
    d = Distill(tiny_net(4), teacher=[tiny_net(4)], ce_weight=0.5)
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6) % 4
    t = d.losses(Batch(step=0, progress=0.0, source=(x, y)))
    assert t["ce_source"].item() == pytest.approx(0.5 * torch.nn.functional.cross_entropy(d.net(x), y).item(),
                                                  rel=1e-5)


def test_distill_in_a_config_names_its_missing_teachers_first(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    from transferkit.experiment import run_experiment
    cfg = ExperimentConfig(name="d", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["distill"], k=2, repeats=1, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match="distill needs the teacher members"):  # not the disjoint label sets
        run_experiment(cfg, log=lambda *a: pytest.fail("started"))


def test_cat_heads_of_the_bench_are_seeded_not_drawn_from_the_global_rng():
    from transferkit.bench.represent import _representations
    members = [tiny_net(4), tiny_net(4)]
    heads = []
    for state in (1, 2):  # the random state left by training vs loading the source networks
        torch.manual_seed(state)
        reps = _representations(members, [2], seed=0)
        heads.append(reps["cat2"].head.weight.detach().clone())
        assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(state)))  # untouched
    assert torch.equal(*heads) and reps["erm"] is members[0]
    assert not torch.equal(cat_network(members, seed=1).head.weight, heads[0])


def test_distill_refuses_teachers_of_another_input_shape():
    from helpers import tiny_net as net_of

    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match=r"teacher 1 takes images of shape \(3, 28, 28\).*\(1, 28, 28\)"):
        Distill(net_of(4), teacher=[net_of(4), net_of(4, channels=3)])


def test_cat_two_stage_reports_the_steps_of_all_its_fits(monkeypatch):
    steps, real = [], Engine.fit

    def recording_fit(self, method, **kw):
        result = real(self, method, **kw)
        steps.append(result.steps)
        return result
    monkeypatch.setattr(Engine, "fit", recording_fit)
    fit = CatTwoStage(cat_network([tiny_net(4), tiny_net(4)])).fit_transfer(
        lambda tag, config=None: Engine(TrainConfig(steps=3 if tag == "probe" else 4, eval_every=2)),
        target=_domain(), val=_domain())
    assert len(steps) == 3 and fit.steps == sum(steps) > steps[-1]


def test_distill_network_calls_its_engine_factory_as_fit_transfer_does():
    from transferkit.represent import distill_network
    tags = []

    def make_engine(tag, config=None):
        tags.append(tag)
        return Engine(config or TrainConfig(steps=2, eval_every=2))
    student = tiny_net(4)
    net, fit = distill_network([tiny_net(4), tiny_net(4)], lambda: student, make_engine, _domain(), _domain())
    assert tags == ["distill"] and fit.steps == 2 and net is not None


def test_distillation_teachers_stay_frozen_and_in_eval_mode():
    from transferkit.backbones import build_backbone
    from transferkit.represent import Distill
    torch.manual_seed(0)
    teachers = [build_backbone("lenet", num_classes=4, in_channels=1, image_size=28) for _ in range(2)]
    method = Distill(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28), teachers)
    method.train_mode()
    assert not any(m.training for m in method.teacher.modules())
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_cat_two_stage_fine_tunes_a_member_as_two_stage_fine_tunes_one_network():
    import copy

    from transferkit.methods.finetune import TwoStage
    torch.manual_seed(0)
    member, target, val = tiny_net(4), _domain(), _domain(24)
    cfg = TrainConfig(steps=6, eval_every=3, batch_size=8, progress=False)
    erm = copy.deepcopy(member)
    TwoStage(erm).fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=0), target=target, val=val)
    cat = cat_network([copy.deepcopy(member)], seed=0)
    CatTwoStage(cat).fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=0), target=target, val=val)
    fine_tuned = cat.unit("cat").members[0]  # stage 1 started from the member's own head, as ERM's did
    assert all(torch.equal(a, b) for a, b in zip(erm.parameters_of(erm.feature_names),
                                                 fine_tuned.parameters_of(fine_tuned.feature_names)))
    three = cat_network([tiny_net(3)], num_classes=4, seed=0)  # 3 outputs for 4 target classes: a new head
    CatTwoStage(three).fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=0), target=target, val=val)
    assert three.unit("cat").members[0].num_classes == 4


def test_cat_and_distill_inputs_are_checked_by_name():
    import dataclasses

    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    from transferkit.represent import source_members
    net = tiny_net(4)
    for call, words in [(lambda: cat_network([net, net]), "distinct networks"),
                        (lambda: cat_network([nn.Sequential(nn.Flatten())]), "must be UnitNets"),
                        (lambda: cat_network([tiny_net(4)], num_classes=0), "num_classes must be a whole number"),
                        (lambda: Distill(tiny_net(4), teacher=[nn.Linear(2, 2)]), "teacher 0 must be a UnitNet"),
                        (lambda: source_members(dataclasses.replace(ExperimentConfig(), pretrained="net.safetensors"),
                                                None, 2), "different seeds")]:
        with pytest.raises(TransferkitError, match=words):
            call()


def test_episodes_and_tap_refuse_bad_features_and_c():
    import numpy as np

    from transferkit.errors import TransferkitError
    from transferkit.fewshot_eval import episode_accuracies
    from transferkit.methods.tap import tap
    labels = torch.arange(60) % 6
    with pytest.raises(TransferkitError, match="as a torch.Tensor"):
        episode_accuracies(np.zeros((60, 4), np.float32), labels, n_way=3, k_shot=1, n_query=2, episodes=2)
    with pytest.raises(TransferkitError, match="N x D features"):
        episode_accuracies(torch.zeros(60, 0), labels, n_way=3, k_shot=1, n_query=2, episodes=2)
    with pytest.raises(TransferkitError, match="c must be a finite number > 0"):
        tap(tiny_net(4), _domain(), _domain(), c=0)


def test_each_episodic_row_times_its_own_head(monkeypatch):
    import itertools
    from types import SimpleNamespace

    from transferkit.bench import represent as bench
    ticks = itertools.count()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(ticks)))  # every call: one more second
    target = SimpleNamespace(test=Domain("t", torch.rand(150, 1, 28, 28), torch.arange(150) % 5,
                                         [str(i) for i in range(5)]))
    rows = bench._fewshot_rows("erm", tiny_net(5), SimpleNamespace(target=target), SimpleNamespace(episodes=4), {})
    assert len(rows) == 6 and {r["features_wall_s"] for r in rows} == {1.0}
    assert {r["wall_s"] for r in rows} == {2.0}  # extraction (1 s) + its own episodes (1 s), not a running total


def test_pinned_source_members_are_read_back_instead_of_pre_trained_again(tmp_path, monkeypatch):
    from transferkit.config import ExperimentConfig
    from transferkit.represent import source_members
    from transferkit.rundata import prepare_domains

    cfg = ExperimentConfig(source="digits", target="digits", backbone="lenet", seed=0,
                           pretrain=TrainConfig(steps=2, eval_every=2, batch_size=8))
    data = prepare_domains(cfg)
    first = source_members(cfg, data, 2, log=lambda *a: None, pin_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member0", "member1"]

    def refused(*a, **k):
        raise AssertionError("pre-trained again (another thread count or a cleared cache gives other networks)")

    monkeypatch.setattr("transferkit.source.pretrain_source", refused)
    again = source_members(cfg, data, 2, log=lambda *a: None, pin_dir=tmp_path)
    for a, b in zip(first, again):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
