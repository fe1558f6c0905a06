"""Redundant work removed (session 76): each test counts the calls of the repeated step."""

from collections import Counter
from dataclasses import replace

import torch
from helpers import tiny_net

import transferkit.bench.uda as uda
import transferkit.rundata as rundata


def _counted_loads(monkeypatch):
    loads, real = [], rundata.load_domain
    monkeypatch.setattr(rundata, "load_domain", lambda spec, **kw: loads.append((spec, kw["seed"])) or real(spec, **kw))
    return loads


# --- bench uda: a seed's data prepared once --------------------------------------------------------------------


def test_uda_suite_prepares_each_seeds_data_once_for_its_runs_ceiling_and_skada_rows(tmp_path, monkeypatch):
    loads = _counted_loads(monkeypatch)

    def run_experiment(cfg, run_dir, log):  # the run's first step: its config's data
        rundata.prepare_domains(cfg, run_dir=run_dir)
        return run_dir, [{"method": m, "seed": cfg.seed, "accuracy": 0.5, "wall_s": 1.0} for m in cfg.methods]
    monkeypatch.setattr(uda, "run_experiment", run_experiment)
    monkeypatch.setattr(uda, "SKADA_PAIRS", (("digits", "digits+inversion"),))
    monkeypatch.setattr(uda, "run_source_network", lambda cfg, data, run_dir, log: (tiny_net(10), {}))
    monkeypatch.setattr(uda.skada_compare, "available", lambda: True)
    monkeypatch.setattr(uda.skada_compare, "version", lambda: "0.6")
    monkeypatch.setattr(uda.skada_compare, "run_skada", lambda *a: {"accuracy": 0.4, "wall_s": 1.0})
    monkeypatch.setattr(uda, "tsne_figure", lambda *a: None)
    plan = uda.UdaPlan(seeds=(3, 4), pairs="digits:digits+inversion", methods="dann,target_only", skada="DANN",
                       batch_size=64)
    from transferkit.runtime import own_invocation
    with own_invocation():  # as the benchmark runner calls it: the SKADA rows' invocation id is forgotten after
        rows = uda.uda_suite(plan, tmp_path, lambda *a: None)
    assert {r["method"] for r in rows} == {"source_only", "dann", "target_only", "skada:DANN"}
    assert {seed for _, seed in loads} == set(plan.seeds)
    assert set(Counter(loads).values()) == {1}  # each domain of each seed loaded once


def test_shared_domains_gives_one_preparation_per_data_key_and_nothing_outside(monkeypatch):
    loads = _counted_loads(monkeypatch)
    cfg = uda.pair_config("digits", "digits+inversion", 0, uda.budget(True), ["source_only"], 1)
    other_run = replace(cfg, name="other", methods=["dann"], train=replace(cfg.train, steps=7), workers=2)
    with rundata.shared_domains():
        first = rundata.prepare_domains(cfg)
        assert rundata.prepare_domains(other_run) is first
        assert len(loads) == 2
        assert rundata.prepare_domains(replace(cfg, seed=1)) is not first  # another seed: its own data
        assert rundata.prepare_domains(replace(cfg, val_fraction=0.2)).target.val is not first.target.val
        assert len(loads) == 6
    assert rundata.prepare_domains(cfg) is not rundata.prepare_domains(cfg)  # no memo outside
    assert rundata.data_key(cfg) == rundata.data_key(other_run) != rundata.data_key(replace(cfg, target="digits"))


# --- fast_flex: the tune step reads the base network's validation activations the proxies ran --------------------


def test_fast_flex_runs_the_base_networks_first_unit_over_the_validation_images_once(monkeypatch):
    from helpers import toy_domain

    from transferkit.backbones import build_backbone
    from transferkit.engine import Engine, TrainConfig
    from transferkit.frozen import MEMO
    from transferkit.methods.flex import FastFlex
    from transferkit.unitnet import UnitNet
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    base_conv1 = [p.detach().clone() for p in net.unit("conv1").parameters()]
    val, runs, real = toy_domain(37, seed=1), [], UnitNet.forward_units

    def counting(self, h, start=0, stop=None):
        if self.unit_names[self._boundary(start, True)] == "conv1" and len(h) == len(val) and all(
                torch.equal(p, q) for p, q in zip(self.unit("conv1").parameters(), base_conv1)):
            runs.append(stop)  # base's conv1 (not the trained donor's) over the validation images
        return real(self, h, start, stop)
    monkeypatch.setattr(UnitNet, "forward_units", counting)
    MEMO.clear()
    cfg = TrainConfig(steps=4, batch_size=16, eval_every=2, progress=False)
    method = FastFlex(net, units=["conv2", "fc1"])  # the unit tuned has conv1 before it, frozen
    method.fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=0), target=toy_domain(16), val=val)
    assert method.extra_results()["proxy_unit"] in ("conv2", "fc1")
    assert len(runs) == 1


# --- tap: the test images run the tapped prefix once, for every unit's accuracy and the scoring --------------------


def _count_first_unit_runs(monkeypatch, n_images: int) -> list:
    """The runs of a grey-image network's first convolution over ``n_images`` images."""
    runs, real = [], torch.nn.Conv2d.forward

    def counting(self, x):
        if x.shape[:2] == (n_images, 1):
            runs.append(x.shape)
        return real(self, x)
    monkeypatch.setattr(torch.nn.Conv2d, "forward", counting)
    return runs


def test_tap_scores_the_test_images_from_the_activations_its_test_results_ran(monkeypatch):
    from helpers import toy_domain

    from transferkit.backbones import build_backbone
    from transferkit.frozen import MEMO
    from transferkit.methods.tap import Tap
    torch.manual_seed(0)
    method = Tap(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28), units=["conv1", "conv2"])
    method.fit_transfer(None, target=toy_domain(24), val=toy_domain(16, seed=1))
    test = toy_domain(29, seed=2)
    MEMO.clear()
    runs = _count_first_unit_runs(monkeypatch, len(test))
    table = method.test_results(test)["tap_test_accuracy"]
    logits = method.logits(test.images)
    assert set(table) == {"conv1", "conv2"}
    assert len(runs) == 1  # the units' pass; scoring read the tapped unit's activations it kept
    monkeypatch.undo()
    assert torch.equal(logits, method.sized(lambda: method.forward(test.images.clone()), test.images))


def test_a_tap_job_runs_the_network_over_the_test_images_once(tmp_path, monkeypatch, one_thread):
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    from transferkit.frozen import MEMO
    cfg = ExperimentConfig(name="tap", source="digits", target="digits", k=3, repeats=1, backbone="lenet",
                           methods=["tap"], options={"tap": {"units": ["conv1", "fc1"]}}, out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2))
    n_test = len(rundata.prepare_domains(cfg).target.test)
    MEMO.clear()
    runs = _count_first_unit_runs(monkeypatch, n_test)
    _, (row,) = run_experiment(cfg, log=lambda *a: None)
    assert set(row["tap_test_accuracy"]) == {"conv1", "fc1"}
    assert len(runs) == 1


def test_a_worker_process_shares_one_preparation_between_settings_and_methods_of_its_data(monkeypatch):
    from transferkit.config import ExperimentConfig
    made = []
    monkeypatch.setattr(rundata, "prepare_domains", lambda cfg, **kw: made.append(cfg.seed) or object())
    monkeypatch.setattr(rundata, "_PROCESS_DATA", {})
    a = ExperimentConfig(seed=1, k=1, methods=["dann"])
    same_data = [replace(a, k=5), replace(a, methods=["mcc"], train=replace(a.train, steps=3)),
                 replace(a, pretrained="source.safetensors")]  # a source's images: the file names no class
    assert all(rundata.process_domains(c) is rundata.process_domains(a) for c in same_data)
    assert made == [1]
    rundata.process_domains(replace(a, seed=2))
    rundata.process_domains(replace(a, source=None, pretrained="source.safetensors"))  # the network's classes
    assert made == [1, 2, 1]


def test_kept_rows_beside_each_other_share_the_memos_limit_the_first_kept_first(monkeypatch):
    from transferkit.frozen import MEMO, KeptRows
    MEMO.clear()
    monkeypatch.setattr(MEMO, "limit_mb", 1.5)
    beside: list = []
    first, second = KeptRows("session76-a", 1024, beside), KeptRows("session76-b", 1024, beside)
    beside += [first, second]
    h = torch.rand(512, 256)  # 0.5 MB a chunk, 1 MB each in all
    for start in (0, 512):
        first.add(start, h + start)
        second.add(start, h - start)
    first.store()
    second.store()
    assert torch.equal(MEMO.get("session76-a"), torch.cat([h, h + 512]))
    assert MEMO.get("session76-b") is None  # 2 MB together: over the limit
    MEMO.clear()
