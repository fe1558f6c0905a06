"""multitask (seed 001's multitask learning): its loss, which parameters each term trains,
its refusals, and runs through Transfer and the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import multitask_batch, multitask_on_lenet, seeded_lenet, toy_domain

from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method


def test_the_loss_is_target_ce_plus_weighted_source_ce_of_the_two_heads():
    method = multitask_on_lenet(source_weight=0.3).eval()
    batch = multitask_batch()
    (x_s, y_s), (x_t, y_t) = batch.source, batch.target
    terms = method.losses(batch)
    assert set(terms) == {"ce_target", "ce_source"}
    net = method.net
    assert net.num_classes == 4 and method.source_classifier.out_features == 10
    torch.testing.assert_close(terms["ce_target"], F.cross_entropy(net(x_t), y_t))
    torch.testing.assert_close(terms["ce_source"],
                               0.3 * F.cross_entropy(method.source_classifier(net.forward_features(x_s)), y_s))
    assert set(multitask_on_lenet(source_weight=0.0).losses(batch)) == {"ce_target"}


def _grads(method, term):
    method.zero_grad()
    method.train().losses(multitask_batch())[term].backward()
    return {n for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("private", [0, 1])
def test_each_term_trains_its_own_head_and_the_shared_units(private):
    method = multitask_on_lenet(private_units=private)
    first = method.net.feature_names[0]
    target, source = _grads(method, "ce_target"), _grads(method, "ce_source")
    def reaches(prefix, names):
        return any(n.startswith(prefix) for n in names)
    assert reaches("net.head.", target) and not reaches("source_classifier.", target)
    assert reaches("source_classifier.", source) and not reaches("net.head.", source)
    last = method.net.feature_names[-1]
    assert any(n.startswith(f"net.units.{last}.") for n in source & target)  # shared
    assert any(n.startswith(f"net.units.{first}.") for n in target)
    if private:  # the first unit is the target's in the network, the source's in its copy
        assert not any(n.startswith(f"net.units.{first}.") for n in source)
        assert any(n.startswith("source_private.0.") for n in source)
        assert not any(n.startswith("source_private.") for n in target)
    else:
        assert any(n.startswith(f"net.units.{first}.") for n in source) and not list(method.source_private)
    grouped = {id(p) for g in method.param_groups() for p in g["params"]}
    assert grouped == {id(p) for p in method.parameters()}  # every parameter trains, once


def test_refusals_are_named():
    net = seeded_lenet()
    units = len(net.feature_names)
    with pytest.raises(TransferkitError, match=rf"private_units must be a whole number from 0 to {units - 1}"):
        get_method("multitask")(net, private_units=units)
    with pytest.raises(TransferkitError, match="private_units must be a whole number"):
        get_method("multitask")(net, private_units=-1)
    with pytest.raises(TransferkitError, match="source_weight must be a finite number >= 0"):
        get_method("multitask")(net, source_weight=-1)
    headless = seeded_lenet()
    headless.reset_classifier(0)
    with pytest.raises(TransferkitError, match="multitask: the network has no classifier"):
        get_method("multitask")(headless)
    method = get_method("multitask")(seeded_lenet())
    with pytest.raises(TransferkitError, match="the source head has 10 outputs but the source domain 'toy' has 4"):
        method.prepare({"source": toy_domain(8, classes=4), "target": toy_domain(8, classes=4)})


@pytest.mark.filterwarnings("ignore:no target class is named as a source class")
def test_transfer_fits_to_new_classes_and_keeps_the_source_task_that_fine_tuning_forgets():
    from transferkit import Transfer
    from transferkit.domain import Domain
    source = toy_domain(96, classes=4, name="src")
    t = toy_domain(32, seed=2, classes=4)
    noise = torch.rand(t.images.shape, generator=torch.Generator().manual_seed(1))
    target = Domain("tgt", t.images.transpose(-1, -2) * 0.5 + 0.5 * noise, (t.labels + 1) % 4,
                    ["p", "q", "r", "s"])  # another domain (bars turned upright) and new classes
    source_accuracy = {}
    for weight in (1.0, 0.0):
        model = Transfer("multitask", source_weight=weight, backbone="lenet",
                         pretrain=TrainConfig(steps=60, eval_every=60, batch_size=16),
                         train=TrainConfig(steps=100, eval_every=100, lr=3e-3, batch_size=16))
        model.fit(target=target, source=source, val=target)
        assert model.classes_ == ["p", "q", "r", "s"] and model.score(target) > 0.9  # the new classes learnt
        with torch.no_grad():
            source_logits = model.method_.source_logits(source.images)
        source_accuracy[weight] = (source_logits.argmax(1) == source.labels).float().mean().item()
    # trained alongside, the source head still reads the shared features; with the target loss alone
    # (finetune's), the features drift away from it (measured: 1.0 and 0.22)
    assert source_accuracy[1.0] > 0.9 and source_accuracy[0.0] < 0.6


def test_the_cli_runs_multitask_across_tasks(tmp_path):
    from transferkit.cli import main
    rc = main(["run", "--set", "source=mnist", "--set", "target=digits", "--set", "source_classes=0-4",
               "--set", "target_classes=5-9", "--set", "methods=[multitask,finetune]", "--set", "k=2",
               "--set", "repeats=1", "--set", "pretrain.steps=20", "--set", "train.steps=10",
               "--set", "train.batch_size=16", "--set", "options.multitask.private_units=1",
               "--set", f"out_dir={tmp_path}"])
    assert rc == 0
    rows = json.loads(next(tmp_path.rglob("results.json")).read_text())["rows"]
    row = next(r for r in rows if r["method"] == "multitask")
    assert row["method_options"]["private_units"] == 1 and len(row["per_class_accuracy"]) == 5
    assert row["n_labeled"] == 10
