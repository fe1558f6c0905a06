"""Tests from a mutation pass over the fine-tuning family (``methods/finetune.py``), flex-tuning
(``methods/flex.py``, seed 002 Algorithms 1-3) and layer tapping (``methods/tap.py``): each one
kills mutations the existing tests let through. Selection rules are checked on scripted
validation accuracies and losses (candidate training monkeypatched away), parameter rules on
which tensors change and which stay bit-identical after a few steps of a tiny network."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn as nn
from helpers import changed, state_copy, toy_domain

from transferkit.backbones import build_backbone, from_sequential
from transferkit.engine import Engine, FitResult, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import flex as flex_module
from transferkit.methods import get_method
from transferkit.methods import tap as tap_module
from transferkit.methods.finetune import fc_units
from transferkit.methods.flex import FastFlex, Flex, proxy_accuracies
from transferkit.methods.tap import Tap, fit_linear, tap, unit_features

CFG = TrainConfig(steps=4, batch_size=16, eval_every=2, patience=None, progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def lenet():
    torch.manual_seed(0)
    return build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)


def engines(cfg=CFG):
    return lambda tag, config=None: Engine(config or cfg, seed=0)


def train(method, target=None, val=None, cfg=CFG):
    before = state_copy(method.net)
    fit = method.fit_transfer(engines(cfg), target=target or toy_domain(), val=val or toy_domain(seed=1))
    return before, state_copy(method.net), fit


# ---- fine-tuning family -----------------------------------------------------------------


def test_fc_units_are_only_the_trailing_ones():
    """A linear unit before the first convolution is not one of the trailing fully connected units."""
    seq = nn.Sequential(nn.Linear(28, 28), nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 13 * 13, 4))
    net = from_sequential(seq, input_shape=(1, 28, 28))
    assert net.tunable_unit_names() == ["unit1", "unit2", "head"]
    assert fc_units(net) == ["head"]
    assert get_method("ft_fc")(net).trainable_units() == ["head"]


def test_ft_unit_with_a_list_tunes_exactly_those_units():
    method = get_method("ft_unit")(lenet(), unit=["conv1", "fc1"])
    before, after, _ = train(method)
    assert changed(before, after) == {k for k in before if k.startswith(("units.conv1.", "units.fc1."))}
    with pytest.raises(TransferkitError, match="ft_unit: unit lists 'conv2' more than once"):
        get_method("ft_unit")(lenet(), unit=["conv2", "conv2"])  # as flex's units


def test_ft_ss_leaves_every_pretrained_tensor_of_a_batchnorm_network_bit_identical():
    """ft-ss freezes the pre-trained weights, BatchNorm running statistics included (frozen
    units stay in eval mode); only the head and the scale/shift parameters train."""
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    source = state_copy(net)
    method = get_method("ft_ss")(net)
    _, after, _ = train(method, cfg=dataclasses.replace(CFG, steps=2))
    assert any("running_mean" in k for k in source)
    assert changed(source, after) == {k for k in source if k.startswith("head.")}


def test_linear_probe_starts_from_a_new_head_unless_told_to_keep_the_source_one():
    net = lenet()
    source_head = state_copy(net.head)
    get_method("linear_probe")(net)
    assert all(not torch.equal(v, net.head.state_dict()[k]) for k, v in source_head.items())
    net = lenet()
    get_method("linear_probe")(net, reset_head=False)
    assert all(torch.equal(v, net.head.state_dict()[k]) for k, v in source_head.items())


def test_two_stage_reports_stage_one_accuracy_and_returns_stage_two(monkeypatch):
    real_fit, calls = Engine.fit, []

    def scripted_fit(self, method, **kw):
        fit = real_fit(self, method, **kw)
        acc = 0.25 if not calls else 0.5  # stage 1, then stage 2
        calls.append(acc)
        return dataclasses.replace(fit, best_val_accuracy=acc, val_accuracy=acc)

    monkeypatch.setattr(Engine, "fit", scripted_fit)
    method = get_method("two_stage")(lenet())
    _, _, fit = train(method)
    assert calls == [0.25, 0.5]
    assert method.extra_results()["stage1_val_accuracy"] == 0.25
    assert fit.val_accuracy == fit.best_val_accuracy == 0.5


# ---- flex (Algorithm 1), scripted ----------------------------------------------------------


def scripted_flex(monkeypatch, accs, losses, steps=None):
    """A ``flex`` whose candidates are copies of the source network (each with its own head
    bias, to tell them apart) with the given validation accuracies and losses."""
    nets = {}

    def fake_train(self, make_engine, candidates, target, val, config=None, tag="cand"):
        out = []
        for i, c in enumerate(candidates):
            net = copy.deepcopy(self.net)
            with torch.no_grad():
                net.head.bias.fill_(float(i + 1))
            nets[id(net)] = c
            out.append((net, FitResult(steps=(steps or {}).get(c, 1), best_step=1, best_val_accuracy=accs[c],
                                       stopped_early=False, wall_s=0.0, val_accuracy=accs[c])))
        return out

    def fake_predictions(net, domain):
        c = nets[id(net)]
        n = 8
        correct = torch.arange(n) < round(accs[c] * n)
        return correct, losses[c]

    monkeypatch.setattr(Flex, "_train", fake_train)
    monkeypatch.setattr(flex_module, "val_predictions", fake_predictions)
    method = Flex(lenet(), keep_candidates=True)
    fit = method.fit_transfer(None, target=toy_domain(), val=toy_domain(seed=1))
    return method, fit


def adopted(method):
    return int(method.net.head.bias[0].item()) - 1  # the index of the candidate whose weights it holds


def test_flex_accuracy_first_then_lower_loss(monkeypatch):
    accs = {"conv1": 0.5, "conv2": 0.75, "fc1": 0.75, "head": 0.625, "all": 0.5}
    losses = {"conv1": 0.1, "conv2": 0.9, "fc1": 0.4, "head": 0.2, "all": 0.05}  # the lowest losses lose on accuracy
    method, fit = scripted_flex(monkeypatch, accs, losses)
    assert method.picked == "fc1" and adopted(method) == 2
    assert method.extra_results()["selection"]["runner_up"] == "conv2"
    assert fit.val_accuracy == 0.75


def test_flex_full_ties_go_to_the_earlier_candidate(monkeypatch):
    accs = {"conv1": 0.5, "conv2": 0.75, "fc1": 0.75, "head": 0.5, "all": 0.75}
    losses = {"conv1": 0.3, "conv2": 0.4, "fc1": 0.4, "head": 0.3, "all": 0.4}
    method, _ = scripted_flex(monkeypatch, accs, losses)
    assert method.picked == "conv2" and adopted(method) == 1  # units in network order, then all
    assert method.extra_results()["selection"]["runner_up"] == "fc1"


def test_flex_counts_the_steps_of_every_candidate(monkeypatch):
    accs = {"conv1": 0.5, "conv2": 0.75, "fc1": 0.5, "head": 0.5, "all": 0.5}
    losses = dict.fromkeys(accs, 1.0)
    steps = {"conv1": 1, "conv2": 2, "fc1": 4, "head": 8, "all": 16}
    method, fit = scripted_flex(monkeypatch, accs, losses, steps)
    assert method.picked == "conv2" and fit.steps == 31
    assert method.extra_results()["candidate_steps"] == steps


# ---- fast_flex / faster_flex (Algorithms 2, 3) ---------------------------------------------


def scripted_fast_flex(monkeypatch, proxies, a_all, a_best_seen, a_best_kept):
    """``fast_flex`` with scripted proxy accuracies and scripted validation accuracies of
    ``N_ft-all`` and of the tuned best unit (best seen during training, and of the weights kept)."""
    real = FastFlex._train

    def with_val_accuracies(self, make_engine, candidates, target, val, config=None, tag="cand"):
        (net, fit), = real(self, make_engine, candidates, target, val, config, tag)
        best, kept = (a_all, a_all) if tag == "surgery" else (a_best_seen, a_best_kept)
        return [(net, dataclasses.replace(fit, best_val_accuracy=best, val_accuracy=kept))]

    monkeypatch.setattr(FastFlex, "_train", with_val_accuracies)
    monkeypatch.setattr(flex_module, "proxy_accuracies", lambda *args, **kwargs: dict(proxies))
    method = FastFlex(lenet(), keep_candidates=True)
    fit = method.fit_transfer(engines(dataclasses.replace(CFG, steps=2)), target=toy_domain(), val=toy_domain(seed=1))
    return method, fit


def test_fast_flex_proxy_ties_go_to_the_earlier_unit(monkeypatch):
    method, _ = scripted_fast_flex(monkeypatch, {"conv1": 0.25, "conv2": 0.5, "fc1": 0.5, "head": 0.5},
                                   a_all=0.5, a_best_seen=0.5, a_best_kept=0.5)
    assert method.extra_results()["proxy_unit"] == "conv2"


def test_fast_flex_scores_its_proxies_with_the_engine_s_select_metric(monkeypatch):
    seen, real = [], flex_module.proxy_accuracies

    def recording(*args, **kwargs):
        seen.append(kwargs.get("metric"))
        return real(*args, **kwargs)

    monkeypatch.setattr(flex_module, "proxy_accuracies", recording)
    cfg = dataclasses.replace(CFG, steps=2)
    for metric in ("accuracy", "balanced_accuracy"):
        def make(tag, config=None, m=metric):
            return Engine(config or cfg, seed=0, select_metric=m)
        FastFlex(lenet()).fit_transfer(make, target=toy_domain(), val=toy_domain(seed=1))
    assert seen == ["accuracy", "balanced_accuracy"]


def test_fast_flex_compares_the_kept_weights_and_returns_the_picked_fit(monkeypatch):
    """a_ft-best is the accuracy of the network N_best returns (0.5), not the best seen
    during its training (0.875): below a_ft-all = 0.75, so N_ft-all is output, with its fit."""
    method, fit = scripted_fast_flex(monkeypatch, {"conv1": 0.25, "conv2": 0.5, "fc1": 0.25, "head": 0.25},
                                     a_all=0.75, a_best_seen=0.875, a_best_kept=0.5)
    extra = method.extra_results()
    assert method.picked == "all" and extra["proxy_unit"] == "conv2"
    assert extra["ft_best_val_accuracy"] == 0.5 and extra["ft_all_val_accuracy"] == 0.75
    assert fit.val_accuracy == fit.best_val_accuracy == 0.75
    assert not method.net.training  # handed back in eval mode, as an engine fit leaves a network


def test_faster_flex_one_epoch_without_validation_then_the_best_unit_with_early_stopping(monkeypatch):
    fits, real_fit = [], Engine.fit

    def recording_fit(self, method, **kw):
        fits.append((self.cfg.steps, kw.get("val") is not None, list(method.trainable_units())))
        return real_fit(self, method, **kw)

    monkeypatch.setattr(Engine, "fit", recording_fit)
    target = toy_domain(40)  # 40 images, batches of 16: one epoch is 3 steps
    method = get_method("faster_flex")(lenet())
    method.fit_transfer(engines(), target=target, val=toy_domain(seed=1))
    (s1, val1, units1), (s2, val2, units2) = fits
    assert (s1, val1) == (math.ceil(40 / CFG.batch_size), False) and units1 == method.net.unit_names
    assert (s2, val2) == (CFG.steps, True) and units2 == [method.picked]  # Alg. 3 line 7: until val stops improving


@pytest.mark.parametrize("mode", [True, False])
def test_proxy_accuracies_leave_both_networks_in_their_mode(mode):
    base, donor = lenet(), build_backbone("lenet", 4)
    base.train(mode), donor.train(mode)
    proxy_accuracies(base, donor, ["conv1", "head"], toy_domain(16, seed=1))
    assert base.training == mode and donor.training == mode


# ---- tap ---------------------------------------------------------------------------------


def test_tap_passes_its_c_to_every_classifier(monkeypatch):
    seen = []

    original = tap_module._fit_linear

    def recording(kind, x, y, num_classes, c=1.0, seed=0):
        seen.append(c)
        return original(kind, x, y, num_classes, c, seed)

    monkeypatch.setattr(tap_module, "_fit_linear", recording)  # what tap and Tap call (it tells convergence)
    net = lenet()
    tap(net, toy_domain(32), toy_domain(16, seed=1), units=["conv2"], c=0.5)
    Tap(net, c=0.25, units=["conv2"]).fit_transfer(None, target=toy_domain(32), val=toy_domain(16, seed=1))
    assert seen == [0.5, 0.5, 0.25, 0.25]


def test_tap_ties_go_to_the_earliest_unit_in_the_network(monkeypatch):
    def constant(kind, x, y, num_classes, c=1.0, seed=0):  # predicts class 0 from any unit
        lin = nn.Linear(x.shape[1], num_classes)
        with torch.no_grad():
            lin.weight.zero_()
            lin.bias.copy_(torch.arange(num_classes, 0, -1).float())
        return lin, True

    monkeypatch.setattr(tap_module, "_fit_linear", constant)
    method = Tap(lenet(), units=["conv2", "conv1", "fc1"])  # network order, whatever the order given
    method.fit_transfer(None, target=toy_domain(32), val=toy_domain(16, seed=1))
    assert method.tap_unit == "conv1" and method.extra_results()["tap_classifier"] == "svm"


def test_tap_scores_the_selection_on_validation_features():
    """Validation labels rolled by one class: the validation accuracy of each classifier
    (trained on the target features) is far from its training accuracy."""
    net, target = lenet(), toy_domain(32)
    val = toy_domain(16, seed=1)
    val = dataclasses.replace(val, labels=(val.labels + 1) % 4)
    method = Tap(net, units=["conv2"])
    method.fit_transfer(None, target=target, val=val)
    f_train = unit_features(net, target.images, ["conv2"])["conv2"]
    f_val = unit_features(net, val.images, ["conv2"])["conv2"]
    for kind in ("svm", "softmax"):
        lin = fit_linear(kind, f_train, target.labels, 4)
        with torch.no_grad():
            want = float((lin(f_val).argmax(1) == val.labels).float().mean())
        assert method.extra_results()["tap_val_accuracy"]["conv2"][kind] == want


def test_a_class_absent_from_training_never_wins():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    x = torch.cat([c + 0.3 * torch.randn(10, 2, generator=g) for c in centres])
    y = torch.tensor([0] * 10 + [1] * 10 + [3] * 10)  # class 2 of 4 absent
    probe = torch.tensor([[0.0, 1.0], [0.0, 1.5], [0.0, -20.0], [20.0, -20.0]])  # between or away from the classes
    for kind in ("svm", "softmax"):  # one-vs-rest SVM scores are all negative at (0, 1) and (0, 1.5)
        lin = fit_linear(kind, x, y, num_classes=4)
        with torch.no_grad():
            assert 2 not in lin(probe).argmax(1).tolist(), kind


def test_unit_features_are_those_of_eval_mode_and_change_no_statistic():
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    with torch.no_grad():  # running statistics away from the fresh ones, so that batch statistics differ
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.1)
                m.running_var.fill_(2.0)
    net.train()
    before = state_copy(net)
    images = toy_domain(8).images
    feats = unit_features(net, images, ["conv2"])["conv2"]
    assert net.training and not changed(before, state_copy(net))
    net.eval()
    with torch.no_grad():
        assert torch.equal(feats, net.forward_features(images, ["conv2"])["conv2"].flatten(1))
