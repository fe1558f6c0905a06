"""Flex-tuning (seed 002 Algorithms 1-3): selection on validation, surgery proxies never
trained, results independent of the number of worker processes, registration."""

import math

import pytest
import torch
from helpers import state_copy, toy_domain

from transferkit.backbones import build_backbone
from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.evaluate import classification_report
from transferkit.methods import get_method
from transferkit.methods.flex import (
    candidate_method,
    proxy_accuracies,
    proxy_network,
    selection_margin,
    val_accuracy,
)

CFG = TrainConfig(steps=6, batch_size=16, eval_every=3, patience=None, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")
toy = toy_domain
state = state_copy


def pretrained():
    torch.manual_seed(0)
    return build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)


def run(name, cfg=CFG, tags=None, **options):
    net = pretrained()
    method = get_method(name)(net, **options)

    def make_engine(tag, config=None):
        if tags is not None:
            tags.append(tag)
        return Engine(config or cfg, seed=0)

    fit = method.fit_transfer(make_engine, target=toy(), val=toy(seed=1))
    return method, fit


def test_flex_picks_the_best_candidate_on_validation():
    method, fit = run("flex", keep_candidates=True)
    extra = method.extra_results()
    accs = extra["candidate_val_accuracy"]
    assert list(accs) == method.net.unit_names + ["all"]
    assert accs[extra["picked"]] == max(accs.values()) == fit.best_val_accuracy
    losses = extra["candidate_val_loss"]  # accuracy ties go to the lower validation loss
    assert losses[extra["picked"]] == min(v for c, v in losses.items() if accs[c] == accs[extra["picked"]])
    picked = method.candidate_nets[extra["picked"]]
    assert all(torch.equal(v, picked.state_dict()[k]) for k, v in method.net.state_dict().items())
    for c, net in method.candidate_nets.items():  # early stopping restored each candidate's best
        assert val_accuracy(net, toy(seed=1)) == pytest.approx(accs[c])
    sel = extra["selection"]  # the pick's margin over the runner-up, from per-image correctness
    runner = max((c for c in accs if c != extra["picked"]), key=lambda c: (accs[c], -losses[c]))
    assert sel["runner_up"] == runner and sel["se"] >= 0
    assert sel["margin"] == pytest.approx(accs[extra["picked"]] - accs[runner], abs=1e-6)
    base = pretrained().state_dict()
    head_only = method.candidate_nets["head"].state_dict()
    assert all(torch.equal(base[k], head_only[k]) for k in base if not k.startswith("head."))


def test_selection_margin_is_the_paired_accuracy_difference_and_its_standard_error():
    a = torch.tensor([1, 1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    d = torch.tensor([0, 1, 0, 0, 0, -1, 1, 0], dtype=torch.float)
    margin, se = selection_margin(a, b)
    assert margin == pytest.approx(0.125) and se == pytest.approx(float(d.std()) / 8 ** 0.5)
    assert selection_margin(a, a) == (0.0, 0.0)
    best, other = torch.zeros(375, dtype=torch.bool), torch.zeros(375, dtype=torch.bool)
    best[:100], other[:99] = True, True
    assert selection_margin(best, other)[0] == 1 / 375  # exact: was 0.0026666666381061077, a float32 mean


def test_flex_same_results_with_two_workers():
    short = TrainConfig(steps=3, batch_size=8, eval_every=3, progress=False)
    one, _ = run("flex", cfg=short, workers=1)
    two, _ = run("flex", cfg=short, workers=2)
    assert one.extra_results() == two.extra_results()
    for k, v in one.net.state_dict().items():
        assert torch.allclose(v, two.net.state_dict()[k], atol=1e-6), k


def test_flex_image_unit_candidates():
    method, _ = run("flex", cfg=TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False),
                    image_units=["colour"])
    assert "image:colour" in method.extra_results()["candidate_val_accuracy"]
    assert ("image" in method.net.unit_names) == (method.picked == "image:colour")


def test_flex_image_candidates_take_their_own_learning_rate():
    net = pretrained()
    assert candidate_method(net, "image:colour", image_lr_mult=30).param_groups()[0]["lr_mult"] == 30
    assert candidate_method(net, "image:colour").param_groups()[0]["lr_mult"] == 1.0
    with pytest.raises(TransferkitError, match="image_lr_mult"):
        get_method("flex")(net, image_units=["colour"], image_lr_mult=0)


def test_proxy_network_is_pure_surgery():
    base, donor = pretrained(), build_backbone("lenet", 4)
    proxy = proxy_network(base, donor, "conv2")
    for k, v in proxy.state_dict().items():
        assert torch.equal(v, (donor if k.startswith("units.conv2.") else base).state_dict()[k]), k


def test_proxy_accuracies_match_the_surgery_networks():
    base, donor = pretrained(), build_backbone("lenet", 4)
    val = toy(seed=1)
    before = state(base)
    shared = proxy_accuracies(base, donor, base.unit_names, val, batch_size=7)
    assert shared == {u: val_accuracy(proxy_network(base, donor, u), val) for u in base.unit_names}
    assert len(set(shared.values())) > 1  # the proxies really differ
    assert all(torch.equal(v, state(base)[k]) for k, v in before.items()) and base.training
    lopsided = val.subset(torch.cat([torch.nonzero(val.labels == c).flatten()[:1 + 3 * c] for c in range(4)]))
    balanced = proxy_accuracies(base, donor, base.unit_names, lopsided, batch_size=7, metric="balanced_accuracy")
    for u in base.unit_names:  # the engine's select_metric: the mean recall over the classes present
        proxy = proxy_network(base, donor, u).eval()
        with torch.no_grad():
            report = classification_report(proxy(lopsided.images), lopsided.labels)
        assert balanced[u] == pytest.approx(report["balanced_accuracy"], abs=1e-12)
    plain = proxy_accuracies(base, donor, base.unit_names, lopsided, batch_size=7)
    assert plain != balanced
    with pytest.raises(TransferkitError, match="select_metric must be accuracy or balanced_accuracy"):
        proxy_accuracies(base, donor, base.unit_names, lopsided, metric="recall")


@pytest.mark.parametrize("name", ["fast_flex", "faster_flex"])
def test_fast_flex_trains_two_networks_and_never_the_proxies(name, monkeypatch):
    fits = []
    real_fit = Engine.fit

    def counting_fit(self, method, **kw):
        fits.append((self.cfg.steps, list(method.trainable_units())))
        return real_fit(self, method, **kw)

    monkeypatch.setattr(Engine, "fit", counting_fit)
    tags = []
    before = state(pretrained())
    method, _ = run(name, tags=tags)
    extra = method.extra_results()
    assert len(fits) == 2  # N_ft-all (or its one epoch) and N_best: L proxies are never trained
    assert fits[0][1] == method.net.unit_names and fits[1][1] == [extra["proxy_unit"]]
    assert set(extra["proxy_val_accuracy"]) == set(method.net.unit_names)
    best = max(extra["proxy_val_accuracy"].values())
    assert extra["proxy_val_accuracy"][extra["proxy_unit"]] == best
    if name == "faster_flex":
        assert fits[0][0] == math.ceil(len(toy()) / CFG.batch_size) and method.picked == extra["proxy_unit"]
        after = state(method.net)
        assert all(torch.equal(before[k], after[k]) for k in before
                   if not k.startswith(f"units.{method.picked}.") and not (method.picked == "head"
                                                                          and k.startswith("head.")))


@pytest.mark.parametrize("name", ["fast_flex", "faster_flex"])
def test_fast_flex_warns_when_the_best_proxies_tie_and_records_the_tie(name, monkeypatch):
    import warnings

    from transferkit.errors import TransferkitWarning
    from transferkit.methods import flex
    real = flex.proxy_accuracies

    def tying(base, donor, units, domain, **kw):
        scores = real(base, donor, units, domain, **kw)
        return {u: 0.25 if u in units[1:3] else 0.125 for u in scores}  # the 2nd and 3rd units tie at the top

    monkeypatch.setattr(flex, "proxy_accuracies", tying)
    with pytest.warns(TransferkitWarning, match="tie at the best validation accuracy 25.0%") as caught:
        method, _ = run(name)
    units = method.net.tunable_unit_names()
    extra = method.extra_results()
    assert extra["proxy_unit"] == units[1] and extra["proxy_tie"] == units[1:3]  # the rule is unchanged
    message = str(caught[0].message)
    assert f"proxies of {units[1]}, {units[2]} tie" in message and f"{extra['surgery_steps']} step(s)" in message
    assert ("use fast_flex" in message) == (name == "faster_flex")
    monkeypatch.setattr(flex, "proxy_accuracies", lambda base, donor, units, domain, **kw: {
        u: 0.5 - 0.125 * abs(i - 1) for i, u in enumerate(units)})  # ties below the best are no matter
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        method, _ = run(name)
    assert method.extra_results()["proxy_tie"] == [] and method.extra_results()["proxy_unit"] == units[1]


def test_flex_in_run_experiment(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment

    cfg = ExperimentConfig(name="flex", source="digits", target="digits", backbone="lenet", k=2, repeats=1,
                           methods=["faster_flex", "ft_unit:fc1"], pretrain=TrainConfig(steps=5, progress=False),
                           train=TrainConfig(steps=4, eval_every=2, batch_size=8, progress=False),
                           out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert {r["method"] for r in rows} == {"faster_flex", "ft_unit:fc1"}
    from transferkit.experiment import load_model
    assert load_model(run_dir, "ft_unit:fc1").name == "ft_unit:fc1"  # a class made for the unit name pickles
    assert [r for r in rows if r["method"] == "faster_flex"][0]["picked"] in ("conv1", "conv2", "fc1", "head")


@pytest.mark.parametrize("a_best, expected", [(0.9, "unit"), (0.75, "unit"), (0.5, "all")])
def test_fast_flex_keeps_the_tuned_unit_when_it_is_at_least_as_good_as_ft_all(a_best, expected, monkeypatch):
    import dataclasses

    from transferkit.methods.flex import FastFlex
    real = FastFlex._train

    def with_val_accuracies(self, make_engine, candidates, target, val, config=None, tag="cand"):
        (net, fit), = real(self, make_engine, candidates, target, val, config, tag)
        acc = 0.75 if tag == "surgery" else a_best
        return [(net, dataclasses.replace(fit, best_val_accuracy=acc, val_accuracy=acc))]

    monkeypatch.setattr(FastFlex, "_train", with_val_accuracies)
    method, _ = run("fast_flex", keep_candidates=True)
    unit = method.extra_results()["proxy_unit"]
    assert method.picked == (unit if expected == "unit" else "all")  # Alg. 2: keep it if a_ft-best >= a_ft-all
    kept = method.candidate_nets[method.picked].state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in method.net.state_dict().items())


def test_fast_flex_proxies_are_the_source_network_with_one_unit_of_ft_all():
    method, _ = run("fast_flex", keep_candidates=True)
    base = pretrained()
    expected = proxy_accuracies(base, method.candidate_nets["all"], base.unit_names, toy_domain(seed=1))
    assert method.extra_results()["proxy_val_accuracy"] == expected


def test_flex_candidates_and_proxies_skip_units_without_parameters():
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 4))
    net = from_sequential(seq, input_shape=(1, 28, 28))  # every layer its own unit: ReLU and Flatten hold nothing
    assert net.tunable_unit_names() == ["unit1", "head"]
    for name in ("flex", "faster_flex"):
        method = get_method(name)(from_sequential(seq, input_shape=(1, 28, 28)))
        method.fit_transfer(lambda tag, config=None: Engine(config or CFG, seed=0), target=toy(), val=toy(seed=1))
        picks = method.extra_results().get("candidate_val_accuracy") or method.extra_results()["proxy_val_accuracy"]
        assert set(picks) <= {"unit1", "head", "all"} and method.picked in ("unit1", "head", "all")
    with pytest.raises(TransferkitError, match="'unit2' has no parameters to tune; units with parameters: unit1, head"):
        get_method("ft_unit:unit2")(net)


def test_flex_refuses_an_image_unit_listed_twice():
    with pytest.raises(TransferkitError, match="image_units lists colour more than once"):
        get_method("flex")(pretrained(), image_units=["colour", "colour"])


def test_flex_ranks_the_weights_it_keeps_without_restore_best():
    cfg = TrainConfig(steps=6, batch_size=16, eval_every=1, patience=None, progress=False, restore_best=False,
                      lr=3e-2)  # some candidates end below their best
    method, fit = run("flex", cfg=cfg, keep_candidates=True)
    accs = method.extra_results()["candidate_val_accuracy"]
    for c, net in method.candidate_nets.items():  # the last evaluation's weights are kept, and ranked
        assert val_accuracy(net, toy(seed=1)) == pytest.approx(accs[c])
    assert fit.val_accuracy == pytest.approx(val_accuracy(method.net, toy(seed=1)))


@pytest.mark.parametrize("restore_best", [True, False])
def test_flex_ranks_on_the_engine_scoring_of_the_kept_weights_without_a_second_pass(restore_best, monkeypatch):
    import transferkit.methods.flex as flex

    def no_second_pass(net, domain):
        raise AssertionError("the engine scored these weights already")

    monkeypatch.setattr(flex, "val_predictions", no_second_pass)
    cfg = TrainConfig(steps=6, batch_size=16, eval_every=2, patience=None, progress=False,
                      restore_best=restore_best, lr=3e-2)
    method, fit = run("flex", cfg=cfg, keep_candidates=True)
    monkeypatch.undo()
    extra = method.extra_results()
    for c, net in method.candidate_nets.items():  # the scores are those of the weights each candidate returned
        correct, loss = flex.val_predictions(net, toy(seed=1))
        assert extra["candidate_val_loss"][c] == pytest.approx(loss, rel=1e-5)
        assert extra["candidate_val_accuracy"][c] == pytest.approx(float(correct.double().mean()))
    assert fit.val_correct is not None and len(fit.val_correct) == len(toy(seed=1))


@pytest.mark.parametrize("name", ["fast_flex", "faster_flex"])
def test_fast_flex_without_target_images_names_the_problem(name):
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    method = get_method(name)(net)
    with pytest.raises(TransferkitError, match="labelled target images; none were given"):
        method.fit_transfer(lambda tag, config=None: Engine(CFG), target=None, val=toy_domain(16, seed=1, classes=3))


def test_validation_scores_name_cross_entropy_and_an_empty_split():
    from transferkit.methods.flex import selection_margin, val_scores
    assert selection_margin(torch.tensor([True]), torch.tensor([False])) == (1.0, math.inf)
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    dom = Domain("d", torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    acc, loss = val_scores(net, dom)
    with torch.no_grad():
        assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(net.eval()(dom.images), dom.labels)))
    assert val_scores(net, dom.subset(torch.zeros(6, dtype=torch.bool))) == (0.0, math.inf)


def _inplace_net():
    """Units 2 and 4 start with an in-place activation: run on cached activations, they change them."""
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.Flatten(), torch.nn.Linear(676, 16),
                              torch.nn.LeakyReLU(0.5, inplace=True), torch.nn.Linear(16, 16),
                              torch.nn.LeakyReLU(0.5, inplace=True), torch.nn.Linear(16, 4))
    from transferkit.backbones import from_sequential
    return from_sequential(seq, units=[2, 1, 2, 1], input_shape=(1, 28, 28))


def test_a_unit_that_changes_its_input_in_place_leaves_cached_activations_and_scores_intact():
    import copy

    from transferkit.evaluate import predict_logits
    from transferkit.methods.finetune import FtUnit
    val, images = toy_domain(n=200, seed=1), toy_domain(n=300, seed=5).images
    cfg = TrainConfig(steps=20, batch_size=16, eval_every=5, patience=None, restore_best=False, progress=False)
    method = FtUnit(_inplace_net(), "unit3")  # validation runs unit3 on the cached output of unit2
    fit = Engine(cfg, seed=0).fit(method, target=toy_domain(n=128), val=val)
    assert fit.val_accuracy == val_accuracy(method.net, val)  # the last evaluation, on intact activations
    before = images.clone()
    method.eval()
    reference = method.net(images.clone())
    assert all(torch.equal(method.logits(images), reference) for _ in range(2))  # a miss, then a memo hit
    assert torch.equal(predict_logits(method.net, images), reference) and torch.equal(images, before)
    base = _inplace_net()
    donor = copy.deepcopy(base)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    units = base.tunable_unit_names()
    assert proxy_accuracies(base, donor, units, val) == pytest.approx(
        {u: val_accuracy(proxy_network(base, donor, u), val) for u in units})


def test_flex_inputs_are_checked_by_name():
    from transferkit.errors import UnknownNameError
    from transferkit.methods.finetune import FtUnit
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    with pytest.raises(UnknownNameError, match="unknown unit 'fc9'"):
        proxy_accuracies(net, net, ["conv1", "fc9"], toy_domain(n=8))
    with pytest.raises(TransferkitError, match="at least one unit"):
        FtUnit(net, unit=[])
    assert get_method("flex")(net, image_units=None).candidates() == get_method("flex")(net).candidates()


@pytest.mark.parametrize("name", ["flex", "fast_flex"])
def test_flex_candidates_train_the_head_when_the_target_has_classes_the_source_lacks(name, monkeypatch):
    import transferkit
    from transferkit.methods import flex
    made = []

    def recording(net, candidate, *args, **kwargs):
        method = candidate_method(net, candidate, *args, **kwargs)
        made.append((candidate, method.trainable_units()))
        return method

    monkeypatch.setattr(flex, "candidate_method", recording)
    src = toy_domain(n=128, classes=4, name="src")
    tgt, val = toy_domain(n=60, seed=3, classes=5, name="tgt"), toy_domain(n=60, seed=4, classes=5, name="val")
    cfg = TrainConfig(steps=4, batch_size=16, eval_every=2, patience=None, progress=False)
    pre = TrainConfig(steps=10, batch_size=32, progress=False)
    transferkit.Transfer(name, backbone="lenet", train=cfg, pretrain=pre).fit(target=tgt, source=src, val=val)
    assert len(made) == (5 if name == "flex" else 2)  # lenet: conv1, conv2, fc1, head, all; fast: all + the best
    assert all("head" in units for _, units in made)  # the new class's head row is trained by every candidate
    made.clear()
    transferkit.Transfer(name, backbone="lenet", train=cfg, pretrain=pre).fit(target=val, source=tgt, val=val)
    assert not all("head" in units for _, units in made)  # same classes: a unit candidate tunes its unit alone
    with pytest.raises(TransferkitError, match="image-unit candidates keep the head fixed"):
        transferkit.Transfer("flex", backbone="lenet", train=cfg, pretrain=pre, image_units=["colour"]).fit(
            target=tgt, source=src, val=val)


def test_proxies_with_the_head_are_surgery_of_the_unit_and_the_head():
    import copy
    base = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    donor, val = copy.deepcopy(base), toy_domain(n=64, seed=2)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    units = base.tunable_unit_names()
    with_head = proxy_accuracies(base, donor, units, val, with_head=True)
    assert with_head == pytest.approx({u: val_accuracy(proxy_network(base, donor, u, with_head=True), val)
                                       for u in units})
    assert with_head != proxy_accuracies(base, donor, units, val)
