"""Session 75's mutation pass: 81 mutants of this session's library changes, 48 killed by the tests before;
each test here kills survivors (named in its comment: F frozen, R runtime, T tap, C compare, B bench, Ds
discriminators, Rt retrieval, E evaluate, Ex experiment), checked to fail on its mutant and pass on the code.
Judged equivalent: T5 (|hi| vs max(|hi|, |lo|) within 8 ulps), C4 (quick and full plans share their selects and
sections), B3 / B4b (plans with dict sections other than TrainConfigs), E2 (zeros then .to), Rt2 (argsort's
stable flag on CPU sizes this small)."""

import gc
import io
import itertools
import os
import sys
import time
import types
import warnings

import numpy as np
import pytest
import torch
from test_bench_core_flex_second_mutation import toy  # noqa: F401 (a fixture)
from test_session75 import probe_model  # noqa: F401 (a fixture)

from transferkit import bench, cli, compare, frozen, runtime
from transferkit.bench import run_benchmark
from transferkit.domain import Domain
from transferkit.frozen import FrozenMemo
from transferkit.methods.tap import fit_linear
from transferkit.retrieval import map_at_k


def test_clear_detaches_owner_drops_so_a_later_entry_of_the_key_survives_the_old_owner():  # F5, F6
    memo = FrozenMemo(limit_mb=64)
    b = torch.rand(2)
    with memo.owned_by(b):
        memo.put("b", torch.ones(2))
    memo.clear()
    assert len(memo._owned) == 0
    memo.put("b", torch.zeros(2))  # stored again with no owner, after the clear
    del b
    gc.collect()
    assert memo.get("b") is not None and torch.equal(memo.get("b"), torch.zeros(2))


def test_an_owner_with_no_weak_reference_keeps_nothing():  # F9
    memo = FrozenMemo(limit_mb=64)
    with memo.owned_by([1, 2, 3]):  # a list: no weakref
        memo.put("k", torch.ones(3))
    assert memo.get("k") is None and len(memo) == 0 and memo.megabytes() == 0


def test_a_numpy_batch_the_caller_keeps_is_read_back(probe_model):  # noqa: F811  (F16)
    model = probe_model
    batch = np.random.default_rng(1).random((8, 1, 28, 28)).astype(np.float32)
    first = model.predict_logits(batch)
    gc.collect()
    assert len(frozen.MEMO) == 1
    assert torch.equal(model.predict_logits(batch), first) and frozen.MEMO.hits == 1


def test_a_domains_entry_lives_as_long_as_its_images(probe_model):  # noqa: F811  (F17)
    model = probe_model
    d = Domain("q", torch.rand(8, 1, 28, 28), torch.arange(8) % 4, list("abcd"))
    images = d.images
    model.predict_logits(d)
    del d
    gc.collect()
    assert len(frozen.MEMO) == 1  # the images are still held by the caller
    del images
    gc.collect()
    assert len(frozen.MEMO) == 0


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_shows_progress_on_a_terminal_none_without_stderr_and_in_a_kernel_subclass(monkeypatch):  # R1, R2, R3
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert runtime.shows_progress() is True
    monkeypatch.setattr(sys, "stderr", None)  # pythonw: no stderr at all
    assert runtime.shows_progress() is False

    class ZMQInteractiveShell:
        pass

    class HostedShell(ZMQInteractiveShell):  # a hosted kernel's subclass
        pass
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=HostedShell))
    assert runtime.shows_progress() is True


def test_nobar_counts_updates():  # R4
    bar = runtime.NoBar([1, 2])
    bar.update()
    bar.update(3)
    assert bar.n == 4 and list(bar) == [1, 2] and bar.disable


def test_invocation_numbers_from_the_second_on_and_two_in_one_second_differ(monkeypatch):  # R11, R12
    monkeypatch.setattr(runtime, "_INVOCATIONS", itertools.count(1))
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    monkeypatch.delenv(runtime.INVOCATION_VARIABLE, raising=False)
    first = runtime.invocation()
    runtime.new_invocation()
    second = runtime.invocation()
    runtime.new_invocation()
    assert first == f"20260101-000000-{os.getpid()}" and second == f"{first}-2"


def test_rng_devices_of_gpu_work(monkeypatch):  # R14, R15, R16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(runtime, "world_size", lambda: 1)
    assert runtime.rng_devices("cpu") == []
    assert runtime.rng_devices("auto") == [0]
    assert runtime.rng_devices("cuda:1", "cpu") == [1]
    monkeypatch.setattr(runtime, "world_size", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.rng_devices("cuda") == [1]


def test_portable_kernels_accept_torchs_default_kernels(monkeypatch):  # R20
    import platform
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    for key in runtime.PORTABLE_KERNELS:  # set, then removed: monkeypatch takes back what portable_kernels sets
        monkeypatch.setenv(key, "")  # (delenv of an absent variable records nothing, and AVX2 caps stayed set for
        monkeypatch.delenv(key)  # every later test's workers beside this process's native kernels)
    assert set(runtime.portable_kernels()) == set(runtime.PORTABLE_KERNELS)


def test_a_column_spread_exactly_eight_ulps_counts_as_constant():  # T1 (the boundary of <=)
    informative = torch.tensor([-2.0, 1.5, -1.0, 2.0, -1.5, 1.0, -0.5])
    y = (informative > 0).long()
    lo = 1.0 - 2.0 ** -20  # hi - lo == 8 * eps(float32) * 1.0 exactly
    col = torch.tensor([1.0, lo, lo, 1.0, lo, 1.0, 1.0])
    x = torch.stack([informative, col], 1)
    for kind in ("svm", "softmax"):
        lin = fit_linear(kind, x, y, 2)
        assert lin.weight[:, 1].abs().max() < 1e-3, (kind, lin.weight)


def test_an_exactly_constant_column_gets_exactly_no_weight():  # T3 (mean read from the column itself)
    informative = torch.tensor([-2.0, 1.5, -1.0, 2.0, -1.5, 1.0, -0.5])
    y = (informative > 0).long()
    x = torch.stack([informative, torch.full((7,), 1.906124472618103)], 1)
    for kind in ("svm", "softmax"):
        assert torch.all(fit_linear(kind, x, y, 2).weight[:, 1] == 0), kind


def test_a_results_json_whose_benchmark_is_no_name_is_compared_as_written():  # C1
    a = {"benchmark": ["uda"], "plan": {"steps": 1}}
    b = {"benchmark": ["uda"], "plan": {"steps": 2}}
    (line,) = compare.config_differ_lines([("a", a), ("b", b)])
    assert "plan.steps" in line


def test_a_plan_written_before_a_whole_section_existed_is_compared_not_refused():  # B4
    import dataclasses
    import json

    from transferkit.bench import make_plan
    plan = json.loads(json.dumps(dataclasses.asdict(make_plan("flex", True))))
    old = {"benchmark": "flex", "quick": True, "plan": {k: v for k, v in plan.items() if k != "pretrain"}}
    new = {"benchmark": "flex", "quick": True, "plan": plan}
    lines = compare.config_differ_lines([("old", old), ("new", new)])
    assert len(lines) == 1 and "plan.pretrain" in lines[0]


@pytest.mark.usefixtures("toy")
def test_a_benchmark_has_its_own_invocation_and_float32_under_a_callers_id_and_dtype(tmp_path, monkeypatch):
    seen = []

    def suite(plan, bench_dir, log):
        seen.append((runtime.invocation(), torch.get_default_dtype()))
        return [{"method": "m", "source": "a", "target": "b", "setting": "k=1", "seed": 0, "accuracy": 0.5}]
    bench.benchmark("toy", "a toy suite", plan=bench.BENCHMARKS["toy"][2])(suite)
    monkeypatch.setenv(runtime.INVOCATION_VARIABLE, "outer")  # B6: a caller's (or an earlier command's) id
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # B7
    try:
        run_benchmark("toy", out_dir=str(tmp_path), log=lambda *a: None)
    finally:
        torch.set_default_dtype(before)
    assert seen[0][0] != "outer" and seen[0][1] == torch.float32


def test_cli_main_is_an_invocation_of_its_own_under_an_inherited_id(monkeypatch):  # Cl2, Cl3
    seen = []
    monkeypatch.setattr(cli, "_dispatch", lambda args, argv: seen.append(runtime.invocation()) or 0)
    monkeypatch.setenv(runtime.INVOCATION_VARIABLE, "outer")
    assert cli.main(["methods"]) == 0
    assert seen and seen[0] != "outer"


def test_the_fully_connected_fallback_keeps_its_500_hidden_units():  # Ds3
    from transferkit.backbones import build_backbone
    from transferkit.discriminators import MultiLayerDiscriminator, multilayer_discriminator
    net = build_backbone("lenet", 10, image_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = multilayer_discriminator(net, ["conv1", "conv2", "fc1"], "auto")
    assert isinstance(d, MultiLayerDiscriminator) and d.tail[-1].in_features == 500


def test_float32_queries_against_a_float64_gallery_are_compared_in_float64():  # Rt4
    queries = torch.tensor([[0.0]], dtype=torch.float32)
    gallery = torch.tensor([[1.0], [1.0 - 1e-12]], dtype=torch.float64)  # the second is nearer, in float64 only
    assert map_at_k(queries, torch.tensor([1]), gallery, torch.tensor([0, 1]), k=1) == 1.0


def test_a_callers_earlier_id_is_given_back_and_run_experiment_trains_in_float32(tmp_path, monkeypatch):
    # own_invocation(new=True) dropped a caller's TRANSFERKIT_INVOCATION for good; Ex2: run_experiment under a
    # caller's float64 default (no test reached it)
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment

    monkeypatch.setenv(runtime.INVOCATION_VARIABLE, "outer")
    with runtime.own_invocation(new=True):
        assert runtime.invocation() != "outer"
    assert os.environ[runtime.INVOCATION_VARIABLE] == "outer"
    cfg = ExperimentConfig(source="digits", target="digits", k=1, repeats=1, methods=["target_only"],
                           out_dir=str(tmp_path), name="f64")
    cfg.train.steps = 1
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        (row,) = run_experiment(cfg, log=lambda *a: None)[1]
    finally:
        torch.set_default_dtype(before)
    assert 0.0 <= row["accuracy"] <= 1.0
