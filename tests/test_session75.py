"""Session 75: fixes found by this session's audits and leftovers, each with a test that fails on the
code before it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_bench_core_flex_second_mutation import toy  # noqa: F401 (a fixture)

from transferkit import compare
from transferkit.bench import make_plan


def _plan_config(name: str, quick: bool = True, **changes) -> dict:
    plan = json.loads(json.dumps(dataclasses.asdict(make_plan(name, quick))))
    return {"benchmark": name, "quick": quick, "plan": {**plan, **changes}}


def test_benchmark_runs_side_by_side_do_not_differ_in_fields_added_since_or_in_what_only_chooses_jobs():
    old = _plan_config("uda")
    del old["plan"]["skada"], old["plan"]["methods"]  # a uda directory of before both were plan fields
    new = _plan_config("uda", seeds=[0, 1, 2], pairs=[["mnist", "digits"]])  # other jobs: the rows name them
    assert compare.config_differ_lines([("old", old), ("new", new)]) == []
    flex_old = _plan_config("flex")
    for section in ("pretrain", "train"):
        del flex_old["plan"][section]["sampler"]  # a stage field added since: at its default
    assert compare.config_differ_lines([("old", flex_old), ("new", _plan_config("flex"))]) == []
    (line,) = compare.config_differ_lines([("old", old), ("new", _plan_config("uda", adapt_steps=60))])
    assert line.startswith("The runs' configs differ in plan.adapt_steps: 50 in old; 60 in new (results.json's")


def test_progress_bars_show_by_default_in_a_jupyter_kernel_whose_stderr_is_no_terminal(monkeypatch):
    import io as stdio
    import sys
    import types

    from helpers import toy_domain
    from test_engine_mutation import custom

    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.tap import _fit_pairs
    from transferkit.runtime import shows_progress

    monkeypatch.setattr(sys, "stderr", stdio.StringIO())
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not shows_progress() and _fit_pairs(["unit1"], None).disable  # a script's pipe: none

    class ZMQInteractiveShell:  # the class name ipykernel's shell has
        pass
    for shell, shown in ((ZMQInteractiveShell(), True), (None, False), (object(), False)):  # kernel, none, terminal
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda shell=shell: shell))
        assert shows_progress() is shown and _fit_pairs(["unit1"], None).disable is not shown
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    Engine(TrainConfig(steps=3, eval_every=3)).fit(custom(), target=toy_domain(16))
    assert "custom:   0%| " in sys.stderr.getvalue()  # the engine's bar drew into the kernel's stderr


def test_a_feature_constant_on_the_training_images_gets_no_weight_in_taps_linear_classifiers():
    # a float32 mean misses 1.906124... by rounding: the column was standardised to a nonzero constant and its
    # weight folded back through a std of ~1e-7 (logits moved by 19 for a test value of 0)
    import torch

    from transferkit.methods.tap import fit_linear

    informative = torch.tensor([-2.0, 1.5, -1.0, 2.0, -1.5, 1.0, -0.5])
    y = (informative > 0).long()
    for value in (1.906124472618103, 3.3, 0.1):
        x = torch.stack([informative, torch.full((7,), value)], 1)
        for kind in ("svm", "softmax"):
            lin = fit_linear(kind, x, y, 2)
            assert lin.weight[:, 1].abs().max() < 1e-6, (value, kind, lin.weight)
            moved = x.clone()
            moved[:, 1] += 0.01  # the constant column elsewhere at test time: the same predictions
            assert torch.equal(lin(moved).argmax(1), lin(x).argmax(1)) and torch.equal(lin(x).argmax(1), y)


def test_a_refused_portable_kernels_call_leaves_the_environment_as_it_was(monkeypatch):
    # the variables stayed set: workers then ran AVX2 kernels beside a native main process, and kernels.json
    # recorded caps that were not in force
    import os
    import platform

    import pytest
    import torch

    from transferkit import runtime
    from transferkit.errors import TransferkitError

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for key in runtime.PORTABLE_KERNELS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")  # the user's own: kept
    with pytest.raises(TransferkitError, match="torch already runs AVX512 kernels"):
        runtime.portable_kernels()
    assert "ATEN_CPU_CAPABILITY" not in os.environ and "ONEDNN_MAX_CPU_ISA" not in os.environ
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"


def test_a_source_changed_through_a_numpy_view_is_pre_trained_again_not_read_from_the_process_memo():
    # a write through np.asarray(domain.images) leaves the tensor's version as it was: the memoised digest was
    # stale, and the second fit reused the first fit's pre-training of the images as they were
    import numpy as np
    import torch

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    from transferkit.networks import network_digest

    rng = np.random.default_rng(0)
    source = Domain("src", rng.random((48, 1, 28, 28)).astype(np.float32), np.arange(48) % 4, list("abcd"))
    target = Domain("tgt", rng.random((16, 1, 28, 28)).astype(np.float32), np.arange(16) % 4, list("abcd"))

    def fit(src):
        tiny = TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False)
        return network_digest(Transfer("finetune", backbone="lenet", train=tiny, pretrain=tiny)
                              .fit(target=target, source=src).net_)

    first = fit(source)
    np.asarray(source.images)[:] *= 0.5  # in place, torch does not see it
    changed = Domain("src", source.images.clone(), source.labels.clone(), list("abcd"))
    assert fit(source) == fit(changed) != first
    assert torch.equal(source.images, changed.images)


def test_a_fit_on_the_cpu_reads_no_gpus_random_state(monkeypatch):
    # fork_rng() without devices read every GPU's state (which starts CUDA on each, and warns with two) for
    # fits, builds and checks on the CPU
    import numpy as np
    import torch

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    from transferkit.runtime import rng_devices

    read = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": read.append(device) or torch.zeros(8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a, **k: None)
    x = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)
    target = Domain("t", x, np.arange(16) % 4, list("abcd"))
    Transfer("target_only", train=TrainConfig(steps=1, batch_size=8, progress=False, device="cpu")).fit(target=target)
    assert read == [] and rng_devices("cpu", "cpu") == []
    # a stage that does not run is not checked for its device (target_only pre-trains nothing)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    Transfer("target_only", train=TrainConfig(steps=1, batch_size=8, progress=False),
             pretrain=TrainConfig(steps=1, device="cuda")).fit(target=target)


def test_glibcs_freed_memory_setting_is_the_commands_not_a_python_callers_of_cli_main(monkeypatch, capsys):
    # cli.main(["methods"]) in a notebook changed the process's malloc settings for good (RSS stayed 190 MB higher)
    from transferkit import cli, runtime

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append("set") or True)
    assert cli.main(["methods"]) == 0 and calls == []
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    with pytest.raises(SystemExit):
        cli.entry()
    assert calls == ["set", "main"]


@pytest.mark.usefixtures("toy")
def test_each_run_or_benchmark_of_a_python_caller_is_an_invocation_of_its_own_and_keeps_its_rng(tmp_path, monkeypatch):
    # the id stayed in os.environ after run_experiment and cli.main: a notebook's next run recorded the same
    # invocation (its wall seconds said to be timed together); a benchmark left the caller's torch RNG changed
    import os
    import re

    import torch

    from transferkit import runtime
    from transferkit.bench import run_benchmark
    from transferkit.experiment import run_experiment

    monkeypatch.delenv(runtime.INVOCATION_VARIABLE, raising=False)
    seen = []

    def recorded(**kw):
        from transferkit.config import ExperimentConfig
        cfg = ExperimentConfig(source="digits", target="digits", k=1, repeats=1, methods=["target_only"],
                               out_dir=str(tmp_path), **kw)
        cfg.train.steps = 1
        return run_experiment(cfg, log=lambda *a: None)[1][0]["invocation"]

    def suite(plan, bench_dir, log):
        torch.manual_seed(123)  # as a suite's jobs seed themselves
        ids = [recorded(name=f"{bench_dir.name}-{i}") for i in range(2)] if not seen else []
        seen.append(runtime.invocation())
        assert all(i == seen[-1] for i in ids)  # its experiments' rows: the benchmark's id (each made one of its own)
        return [{"method": "m", "source": "a", "target": "b", "setting": "k=1", "seed": 0, "accuracy": 0.5}]
    from transferkit import bench
    bench.benchmark("toy", "a toy suite", plan=bench.BENCHMARKS["toy"][2])(suite)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    run_benchmark("toy", out_dir=str(tmp_path), log=lambda *a: None)
    assert torch.equal(torch.get_rng_state(), state) and runtime.INVOCATION_VARIABLE not in os.environ
    run_benchmark("toy", out_dir=str(tmp_path), log=lambda *a: None)
    assert seen[0] != seen[1] and re.fullmatch(rf"\d{{8}}-\d{{6}}-{os.getpid()}(-\d+)?", seen[1])
    first, second = recorded(name="a"), recorded(name="b")
    assert first != second and runtime.INVOCATION_VARIABLE not in os.environ
    monkeypatch.setenv(runtime.INVOCATION_VARIABLE, "outer")  # a benchmark's experiments: the benchmark's id
    assert recorded(name="c") == "outer" and os.environ[runtime.INVOCATION_VARIABLE] == "outer"
    from transferkit import cli
    assert cli.main(["methods"]) == 0 and os.environ[runtime.INVOCATION_VARIABLE] == "outer"  # given back
    monkeypatch.delenv(runtime.INVOCATION_VARIABLE)
    assert cli.main(["methods"]) == 0 and runtime.INVOCATION_VARIABLE not in os.environ  # a command's own: gone


def test_syndigits_names_the_fonts_an_older_matplotlib_lacks(tmp_path, monkeypatch):
    # matplotlib 3.7-3.10 ship no cmti10: the build failed with PIL's bare "cannot open resource"
    import shutil

    import matplotlib

    from transferkit import data
    from transferkit.errors import TransferkitError

    fonts = tmp_path / "fonts" / "ttf"
    fonts.mkdir(parents=True)
    for face in data.FONT_FACES[:-1]:
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{face}.ttf", fonts)
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path))
    data.glyph_masks.cache_clear()
    try:
        with pytest.raises(TransferkitError, match=r"lacks cmti10 \(.*install matplotlib 3.11 or newer"):
            data.glyph_masks()
    finally:
        data.glyph_masks.cache_clear()


def test_autocast_on_mps_is_no_autocast_context_and_on_the_cpu_turns_a_callers_off():
    # torch before 2.5 refuses torch.autocast(device_type="mps"), even disabled: every step on a Mac failed
    import contextlib

    import torch

    from transferkit.runtime import autocast

    for enabled in (True, False):
        assert isinstance(autocast(torch.device("mps"), enabled), contextlib.nullcontext)
        with torch.autocast("cpu", dtype=torch.bfloat16), autocast(torch.device("cpu"), enabled):
            assert not torch.is_autocast_enabled("cpu")


def test_a_callers_float64_default_dtype_trains_the_float32_networks_it_would_train_anyway():
    # torch.set_default_dtype(torch.float64) built float64 networks, discriminators and heads: every fit failed
    # ("its network's parameters are float64 ... net.float()", for a network the library built) and tap mixed dtypes
    import numpy as np
    import torch

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    from transferkit.networks import network_digest

    rng = np.random.default_rng(0)
    src = Domain("s", rng.random((32, 1, 28, 28)).astype(np.float32), np.arange(32) % 4, list("abcd"))
    tgt = Domain("t", rng.random((16, 1, 28, 28)).astype(np.float32), np.arange(16) % 4, list("abcd"))
    tiny = TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False)

    def fits():
        unlabeled = Domain.unlabeled("u", tgt.images)
        dann = Transfer("dann", backbone="lenet", train=tiny, pretrain=tiny).fit(target=tgt, source=src,
                                                                                 unlabeled=unlabeled)
        tap = Transfer("tap", backbone="lenet", train=tiny, pretrain=tiny).fit(target=tgt, source=src, val=tgt)
        return network_digest(dann.net_), tap.predict_logits(tgt.images)
    plain = fits()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        digest, logits = fits()
        assert torch.get_default_dtype() == torch.float64  # the caller's, given back
    finally:
        torch.set_default_dtype(before)
    assert digest == plain[0] and torch.equal(logits, plain[1])


def test_a_fit_without_a_progress_bar_leaves_multiprocessings_start_method_free():
    # a disabled tqdm bar made tqdm's multiprocessing lock (and monitor thread): a notebook's later
    # multiprocessing.set_start_method("spawn") failed with "context has already been set"
    import subprocess
    import sys

    code = ("import multiprocessing as mp, numpy as np\n"
            "from transferkit.api import Transfer\nfrom transferkit.domain import Domain\n"
            "from transferkit.engine import TrainConfig\n"
            "x = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)\n"
            "d = Domain('t', x, np.arange(16) % 4, list('abcd'))\n"
            "Transfer('tap').fit(target=d, val=d, net=__import__('transferkit').build_backbone('lenet', 4))\n"
            "Transfer('target_only', train=TrainConfig(steps=2, batch_size=8)).fit(target=d)\n"
            "mp.set_start_method('spawn')\nprint('free')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "free", out.stderr[-2000:]


@pytest.fixture
def probe_model(monkeypatch):
    """A fitted linear probe on 16 random 28-px images (``probe_model.domain_``), with a memo of its own."""
    import numpy as np

    from transferkit import frozen
    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig

    monkeypatch.setattr(frozen, "MEMO", frozen.FrozenMemo(limit_mb=64))
    monkeypatch.setattr("transferkit.api.MEMO", frozen.MEMO)
    x = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)
    d = Domain("t", x, np.arange(16) % 4, list("abcd"))
    tiny = TrainConfig(steps=2, batch_size=8, progress=False)
    model = Transfer("linear_probe", backbone="lenet", train=tiny, pretrain=tiny).fit(target=d, source=d)
    frozen.MEMO.clear()
    model.domain_ = d
    return model


def test_predicting_new_images_at_every_call_keeps_no_activations_once_they_are_gone(probe_model):
    # a service's predict of new images stored each call's frozen activations (tap: 3 MB per 64 images) up to the
    # memo's 1 GB, which no later call could read; a test set the caller keeps is still read back
    import gc

    import torch

    from transferkit import frozen

    model, d = probe_model, probe_model.domain_
    for _ in range(5):
        model.predict(torch.rand(8, 1, 28, 28))
    gc.collect()
    assert len(frozen.MEMO) == 0 and frozen.MEMO.megabytes() == 0
    test = torch.rand(8, 1, 28, 28)
    first = model.predict_logits(test)
    assert len(frozen.MEMO) == 1 and torch.equal(model.predict_logits(test), first) and frozen.MEMO.hits == 1
    model.score(d)  # a domain's images: kept while the domain is
    assert len(frozen.MEMO) == 2
    del test
    gc.collect()
    assert len(frozen.MEMO) == 1
    sizes = sum(t.numel() * t.element_size() for t in frozen.MEMO._store.values()) / 2**20
    assert frozen.MEMO.megabytes() == sizes  # the running total is the stored tensors' bytes


def test_float64_scores_are_compared_in_float64_and_mean_recall_of_nothing_is_named():
    # float64 logits and embeddings were cast to float32 first: differences below float32's precision became
    # ties (a one-image group lost the class its image's own accuracy gives it; AP@1 of 0 instead of 1)
    import torch

    from transferkit.errors import TransferkitError
    from transferkit.evaluate import classification_report, grouped_accuracy, mean_recall
    from transferkit.retrieval import map_at_k

    logits = torch.tensor([[0.0, 1e-9]], dtype=torch.float64)
    labels = torch.tensor([1])
    assert classification_report(logits, labels)["accuracy"] == 1.0  # the reference: the image's own accuracy
    assert grouped_accuracy(logits, labels, torch.tensor([0])) == 1.0
    queries = torch.tensor([[0.0]], dtype=torch.float64)
    gallery = torch.tensor([[1.0], [1.0 - 1e-12]], dtype=torch.float64)  # the second is nearer, in float64 only
    assert map_at_k(queries, torch.tensor([1]), gallery, torch.tensor([0, 1]), k=1) == 1.0
    with pytest.raises(TransferkitError, match="no class has an image"):
        mean_recall([0, 0], [0, 0])


def test_a_feature_constant_up_to_rounding_also_gets_no_weight_and_tap_runs_under_a_float64_default():
    # one entry one ulp above the others: not caught by an exact test (weight -24,366); fit_linear's layer was
    # built in the caller's default dtype (tap() under float64: "mat1 and mat2 must have the same dtype")
    import torch

    from transferkit.methods.tap import fit_linear

    informative = torch.tensor([-2.0, 1.5, -1.0, 2.0, -1.5, 1.0, -0.5])
    near = torch.full((7,), 1.906124472618103)
    near[3] = torch.nextafter(near[3], torch.tensor(2.0))
    x = torch.stack([informative, near], 1)
    y = (informative > 0).long()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for kind in ("svm", "softmax"):
            lin = fit_linear(kind, x, y, 2)
            assert lin.weight.dtype == torch.float32 and lin.weight[:, 1].abs().max() < 1e-3, lin.weight
    finally:
        torch.set_default_dtype(before)


def test_an_owned_memo_entry_is_dropped_only_by_its_own_owner_and_a_view_lives_as_its_base():
    # the owner's drop removed whatever the key held by then (an entry stored again by a fit: lost); a slice
    # t[:4] was dropped as the call returned, so predict(t[:4]) then score(t[:4], y) ran the units twice
    import gc

    import numpy as np
    import torch

    from transferkit.frozen import FrozenMemo

    memo = FrozenMemo(limit_mb=64)
    a = torch.rand(4)
    with memo.owned_by(a):
        memo.put("k", torch.ones(3))
    memo.put("k", torch.zeros(3))  # stored again with no owner (a fit's)
    del a
    gc.collect()
    assert torch.equal(memo.get("k"), torch.zeros(3)) and memo.megabytes() == 12 / 2**20
    for make in (lambda: torch.rand(8, 2), lambda: np.random.default_rng(0).random((8, 2))):  # a NumPy view too
        base = make()
        with memo.owned_by(base[:4]):
            memo.put("view", torch.ones(2))
        gc.collect()
        assert memo.get("view") is not None
        del base
        gc.collect()
        assert memo.get("view") is None and len(memo._owned) == 0
    b = torch.rand(2)
    with memo.owned_by(b):
        memo.put("b", torch.ones(2))
    memo.clear()
    del b
    gc.collect()
    assert len(memo) == 0 and memo.megabytes() == 0


def test_small_domain_and_discriminator_advice_names_what_works():
    # a one-image unlabelled domain was told to raise the batch size; the fully connected fallback after the
    # convolutional discriminator was refused recommended the convolutional one; a conv discriminator on fc
    # layers alone said what was wrong, not what to change
    import warnings

    import torch

    from transferkit.backbones import build_backbone
    from transferkit.discriminators import ConvMultiLayerDiscriminator, multilayer_discriminator
    from transferkit.errors import TransferkitError
    from transferkit.losses import coral, minimum_class_confusion

    with pytest.raises(TransferkitError, match="give each domain 2 images or more"):
        coral(torch.rand(8, 3), torch.rand(1, 3))
    with pytest.raises(TransferkitError, match="give the unlabelled target 2 images or more"):
        minimum_class_confusion(torch.rand(1, 3))
    with pytest.raises(TransferkitError, match=r"tap a convolutional unit too \(layers: \[...\]\), or use "
                                               r"discriminator: fc"):
        ConvMultiLayerDiscriminator([(500,)])
    net = build_backbone("lenet", 10, image_size=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        multilayer_discriminator(net, ["conv1", "conv2", "fc1"], "auto")
    (said,) = [str(w.message) for w in caught if "multi-layer discriminator" in str(w.message)]
    assert "discriminator: conv" not in said and "no strided convolution maps these layers" in said
