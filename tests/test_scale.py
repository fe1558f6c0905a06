"""Scaling out: worker processes for independent jobs, resuming a killed run, and
data-parallel training on torch.distributed (2 gloo processes on CPU)."""

import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import toy_domain

from transferkit.backbones import build_backbone
from transferkit.config import ExperimentConfig
from transferkit.engine import Engine, TrainConfig
from transferkit.experiment import run_experiment
from transferkit.methods import get_method
from transferkit.runtime import peak_memory, resolve_device, threads_per_worker


def tiny_config(tmp_path, **kw):
    base = dict(name="scale", source="digits", target="digits+blur", k=2, repeats=2,
                methods=["target_only", "finetune"], out_dir=str(tmp_path),
                pretrain=TrainConfig(steps=20, eval_every=10), train=TrainConfig(steps=10, eval_every=5))
    base.update(kw)
    return ExperimentConfig(**base)


def test_workers_give_the_same_rows_as_one_process(tmp_path):
    """Bit-identical rows when the thread count matches (2 workers on 2 cores get one thread
    each; a different thread count changes floating-point summation order only)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(2))  # the main process pre-trains with this count in both runs
    try:
        _, one = run_experiment(tiny_config(tmp_path / "a", workers=1), log=lambda *a: None)
        said = []
        _, two = run_experiment(tiny_config(tmp_path / "b", workers=2), log=said.append)
    finally:
        torch.set_num_threads(threads)
    assert not any("torch thread(s) each" in line for line in said)  # the same count: no note
    import transferkit.experiment as experiment
    with pytest.MonkeyPatch.context() as m:  # a worker's count other than this process's: said
        m.setattr(experiment, "job_threads", lambda workers: torch.get_num_threads() + 1)
        run_experiment(tiny_config(tmp_path / "b", workers=2), run_dir=next((tmp_path / "b").glob("*/*")),
                       log=said.append)
    assert any(f"2 workers of {threads + 1} torch thread(s) each" in line for line in said), said
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    assert [key(r) for r in one] == [key(r) for r in two]
    for a, b in zip(one, two):
        assert a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"]
        assert a["peak_rss_mb"] > 0


def test_worker_threads_follow_a_pinned_omp_num_threads(monkeypatch):
    import os
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_per_worker(2) == threads_per_worker(1) == 1  # as the benchmark commands pin it
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_per_worker(2) == max(1, (os.cpu_count() or 1) // 2)


def test_killed_run_resumes_with_only_missing_jobs(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: killed\nsource: digits\ntarget: digits+noise\nk: 2\nrepeats: 4\nout_dir: {tmp_path}\n"
                   "backbone: lenet\nmethods: [target_only, finetune]\npretrain: {steps: 20, eval_every: 10}\n"
                   "train: {steps: 20, eval_every: 10}\n")
    run_dir = tmp_path / "killed" / "fixed"
    cmd = [sys.executable, "-m", "transferkit.cli", "run", str(cfg), "--resume", str(run_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRANSFERKIT_WORKERS": "1"}  # no worker outlives the kill
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    jobs = run_dir / "jobs"
    deadline = time.time() + 300
    while time.time() < deadline and not (jobs.exists() and len(list(jobs.glob("*.json"))) >= 2):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = {p.name: p.read_bytes() for p in jobs.glob("*.json")}
    assert 2 <= len(done) < 8, "the kill should land mid-way"
    assert not (run_dir / "results.json").exists()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    rerun = [line for line in out.stderr.splitlines() if ": accuracy" in line]  # progress: on stderr
    assert len(rerun) == 8 - len(done)  # only the missing jobs trained again
    for name, content in done.items():
        assert (jobs / name).read_bytes() == content
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert len(rows) == 8


def _exit_now():
    """End a spawned rank once its work is written, skipping the interpreter's teardown, where
    gloo's threads now and then abort the process (SIGABRT, "terminate called without an active
    exception") after a run that went well; the test reads what the ranks wrote."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _ddp_worker(rank, world, init_file, out_file, compute, *args):
    """One rank of a gloo run: ``compute(*args)``, saved to ``out_file`` by rank 0."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    result = compute(*args)
    if rank == 0:
        torch.save(result, out_file)
    dist.barrier()  # both ranks reach teardown together (a lone gloo teardown aborted once in CI)
    dist.destroy_process_group()
    _exit_now()


def _train_lenet(batch_size=32):
    torch.manual_seed(0)
    method = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    cfg = TrainConfig(steps=30, batch_size=batch_size, eval_every=10, patience=None, lr=3e-4)
    res = Engine(cfg, seed=0).fit(method, target=toy_domain(128, 0), val=toy_domain(64, 1))
    return {"val": res.best_val_accuracy, "weights": {k: v.clone() for k, v in method.state_dict().items()}}


@pytest.mark.parametrize("batch_size", [32, 33])
def test_two_gloo_processes_match_one_process(tmp_path, batch_size):
    """Same global batch (32 = 2 x 16; 33 is rounded up to 34 = 2 x 17, as one process with 34
    draws it): LeNet has no BatchNorm, so the only difference is floating-point summation
    order: weights agree to 1e-4, validation accuracy to 2 points."""
    single = _train_lenet(batch_size + batch_size % 2)
    out_file = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file), _train_lenet, batch_size), nprocs=2,
             join=True)
    double = torch.load(out_file)
    assert abs(single["val"] - double["val"]) <= 0.02
    for k, v in single["weights"].items():
        assert torch.allclose(v, double["weights"][k], atol=1e-4), k


def _imbalanced_lenet(batch_size=32):
    """LeNet fine-tuned with class_weight balanced on a toy domain whose class 0 has 5 times
    the images of the others (the batches hold other class mixes in each process's shard)."""
    torch.manual_seed(0)
    d = toy_domain(160, 0)
    d = d[torch.cat([torch.nonzero(d.labels == 0).flatten().repeat(5), torch.nonzero(d.labels != 0).flatten()])]
    method = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    cfg = TrainConfig(steps=12, batch_size=batch_size, eval_every=12, patience=None, lr=0.1, optimizer="sgd",
                      momentum=0.0, class_weight="balanced")  # Adam's step magnifies the rounding of tiny gradients
    Engine(cfg, seed=0).fit(method, target=d)
    return {k: v.clone() for k, v in method.state_dict().items()}


def test_class_weighted_cross_entropy_is_the_global_batch_s_weighted_mean_under_two_processes(tmp_path):
    """Each process divides its shard's weighted sum by the whole batch's sum of weights; the
    mean of per-shard weighted means (before) weighs a shard's images otherwise (measured:
    1.8e-2 of the update apart after 12 SGD steps; now below 1e-6)."""
    out_file = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file), _imbalanced_lenet), nprocs=2, join=True)
    double, single = torch.load(out_file), _imbalanced_lenet()
    start = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)).state_dict()
    for k, v in single.items():
        moved, apart = (v - start[k]).norm(), (v - double[k]).norm()
        assert apart <= 1e-4 * moved, (k, float(apart / moved))


def _ddp_checkpoint_worker(rank, world, init_file, ckpt_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    cfg = TrainConfig(steps=14, batch_size=16, eval_every=10, checkpoint_every=7, patience=None)

    def keep_step_7(step, state):  # the checkpoint of step 7, mid-window, before step 14's replaces it
        if step == 8 and rank == 0:
            shutil.copy(Path(ckpt_dir) / "last.json", Path(ckpt_dir) / "step7.json")
    Engine(cfg, seed=0, checkpoint_dir=ckpt_dir, hooks=(keep_step_7,)).fit(method, target=toy_domain(64, 0))
    dist.barrier()
    dist.destroy_process_group()
    _exit_now()


def test_two_gloo_processes_checkpoint_the_loss_sums_since_the_last_evaluation_together(tmp_path):
    """The sums travel as the mean of the ranks' (a collective every rank joins at each
    checkpoint: only rank 0 writes, but one that alone reduced would hang)."""
    mp.spawn(_ddp_checkpoint_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ck")), nprocs=2, join=True)
    window = json.loads((tmp_path / "ck" / "step7.json").read_text())["state"]["loss_window"]
    assert set(window) == {"loss", "ce_target"} and window["loss"][1] == 7  # steps 0-6, before the evaluation at 10
    assert window["loss"][0] == pytest.approx(window["ce_target"][0]) and window["loss"][0] > 0


BATCH_STATISTIC_METHODS = ("mmd", "coral", "mcc", "dsn")


def _adapt_lenet(method_name):
    torch.manual_seed(0)
    method = get_method(method_name)(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    start = {k: v.clone() for k, v in method.net.state_dict().items()}
    cfg = TrainConfig(steps=3, batch_size=8, eval_every=3, patience=None, lr=1e-3)
    Engine(cfg, seed=0).fit(method, source=toy_domain(32, 0), unlabeled=toy_domain(32, 1))
    return start, {k: v.clone() for k, v in method.net.state_dict().items()}


def _adapt_every_lenet():
    return {m: _adapt_lenet(m) for m in BATCH_STATISTIC_METHODS}


def test_batch_statistic_losses_see_the_global_batch_under_two_processes(tmp_path):
    """MMD, CORAL, MCC and DSN's difference loss are statistics of the whole batch: each
    process gathers the others' features, so 2 x 4 + 4 images give one process's update on
    8 + 8 (before, the mean of per-shard values moved mmd's update by 86 %)."""
    out_file = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file), _adapt_every_lenet), nprocs=2, join=True)
    double = torch.load(out_file)
    for m in BATCH_STATISTIC_METHODS:
        start, single = _adapt_lenet(m)
        for k, v in single.items():  # without the gather: up to 0.86 (mmd), 0.056 (mcc), 0.038 (dsn), 1.1e-3 (coral)
            moved, apart = (v - start[k]).norm(), (v - double[m][1][k]).norm()
            assert apart <= 3e-4 * moved, (m, k, float(apart / moved))  # with it: at most 1e-4 (summation order)


def _clip_lenet(loss):
    """clip (hashing text encoder) trained 3 steps on 16 image-caption pairs of 8 captions, batches of 8."""
    from transferkit.clip import ClipMethod
    from transferkit.domain import Domain
    from transferkit.text import HashingEncoder
    torch.manual_seed(0)
    captions = [f"caption {i}" for i in range(8)]
    dom = Domain("pairs", toy_domain(16, 0).images, torch.arange(16) % 8, captions)  # two images per caption
    method = ClipMethod(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28), captions,
                        text_encoder=HashingEncoder(32), class_names=["a", "b"], loss=loss, triplet_warmup=0.0)
    start = {k: v.clone() for k, v in method.state_dict().items()}
    Engine(TrainConfig(steps=3, batch_size=8, eval_every=3, patience=None, lr=1e-3), seed=0).fit(method, source=dom)
    return start, {k: v.clone() for k, v in method.state_dict().items()}


def _clip_every_loss():
    return {loss: _clip_lenet(loss) for loss in ("infonce", "triplet")}


def test_clip_contrasts_each_pair_with_the_global_batch_under_two_processes(tmp_path):
    """clip's InfoNCE and hard-negative triplet take their negatives from the whole batch: each
    process gathers the others' image and caption embeddings (and caption ids), so 2 x 4 pairs
    give one process's update on 8 (before, each rank contrasted its 4 pairs among themselves: the
    update was 91 % (InfoNCE) and 113 % (triplet) of its size away; with the gather, 3e-6)."""
    out_file = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file), _clip_every_loss), nprocs=2, join=True)
    double = torch.load(out_file)
    for loss in ("infonce", "triplet"):
        start, single = _clip_lenet(loss)
        for k, v in single.items():
            moved, apart = (v - start[k]).norm(), (v - double[loss][1][k]).norm()
            if moved > 0:
                assert apart <= 3e-4 * moved, (loss, k, float(apart / moved))


def test_device_selection_and_peak_memory():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    from transferkit.errors import TransferkitError
    for name in ("tpu", "auto:1", "cuda:x", "cuda:0:1"):
        with pytest.raises(TransferkitError, match="unknown device"):
            resolve_device(name)
    assert resolve_device("cpu:0").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(TransferkitError, match="CUDA is not available"):
            resolve_device("cuda:0")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(TransferkitError, match="MPS is not available"):
            resolve_device("mps:0")  # raised NotImplementedError
    with peak_memory() as mem:
        block = torch.ones(2**24)  # 64 MiB
        del block
    assert mem["peak_rss_mb"] > 64


def test_nccl_processes_each_take_their_local_rank_gpu_before_the_process_group(monkeypatch):
    import torch.distributed as dist

    import transferkit.distributed as distributed
    from transferkit.errors import TransferkitError
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.atexit, "register", lambda f: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.init_distributed("cuda")
    assert calls == [("set_device", 1), ("init", {"backend": "nccl", "device_id": torch.device("cuda", 1)})]
    with pytest.raises(TransferkitError, match="device cuda:0 puts every process on one GPU"):
        distributed.init_distributed("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(TransferkitError, match="local rank 2 has no GPU: 2 CUDA device"):
        distributed.init_distributed("cuda")
    calls.clear()
    assert distributed.init_distributed("cpu") and calls == [("init", {"backend": "gloo"})]


def test_run_joins_the_process_group_with_the_configs_device_not_only_the_flags(tmp_path, monkeypatch):
    import transferkit.distributed as distributed
    import transferkit.experiment as experiment
    from transferkit import cli
    seen = []
    monkeypatch.setattr(distributed, "init_distributed", lambda device="cpu": seen.append(device) or False)

    class Stop(Exception):
        pass

    def stop(cfg, run_dir=None, log=print):
        raise Stop(cfg.device)
    monkeypatch.setattr(experiment, "run_experiment", stop)
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    (tmp_path / "c.yaml").write_text("source: digits\ntarget: digits\nmethods: [finetune]\ndevice: auto\n")
    with pytest.raises(Stop, match="auto"):
        cli.main(["run", str(tmp_path / "c.yaml")])
    assert seen == ["auto"]  # was the environment's cpu: gloo for a cuda config
    (tmp_path / "c.yaml").write_text("source: digits\ntarget: digits\nmethods: [finetune]\n")
    monkeypatch.setattr(experiment, "run_experiment", lambda cfg, run_dir=None, log=print: (_ for _ in ()).throw(
        Stop(f"{cfg.device} {cfg.train.device} {cfg.pretrain.device}")))
    with pytest.raises(Stop, match="auto auto auto"):  # --device reaches the stages' devices too
        cli.main(["run", str(tmp_path / "c.yaml"), "--device", "auto"])


def test_tensorboard_event_files_per_run(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    method = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    Engine(TrainConfig(steps=6, batch_size=16, eval_every=3), seed=0, tensorboard_dir=tmp_path).fit(
        method, target=toy_domain(32, 0), val=toy_domain(16, 1))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"finetune/loss", "finetune/ce_target", "finetune/lr", "finetune/val_accuracy"} <= tags
    assert [e.step for e in events.Scalars("finetune/loss")] == [3, 6]


def test_deterministic_cuda_turns_on_deterministic_kernels(monkeypatch):
    from transferkit.runtime import deterministic_cuda

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        deterministic_cuda()
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_device_flag_reaches_benchmark_plans(monkeypatch):
    """--device sets TRANSFERKIT_DEVICE; every TrainConfig made after it (benchmark plans
    included) trains there instead of silently staying on the CPU."""
    from transferkit.bench import make_plan
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "auto")
    plan = make_plan("flex", True)
    assert plan.train.device == plan.pretrain.device == "auto"
    cfg = ExperimentConfig()
    assert cfg.device == cfg.train.device == "auto"


# A few SGD steps of a small convolutional net in a fresh process: the numbers depend on the
# CPU kernels torch picks (ATen, MKL matrix products, oneDNN convolutions).
KERNEL_PROBE = """
import sys, torch
if sys.argv[1] == "call":
    from transferkit.runtime import portable_kernels
    portable_kernels()
from transferkit.backbones import build_backbone
torch.manual_seed(0)
net = build_backbone("lenet", num_classes=10, in_channels=3, image_size=28).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
x, y = torch.randn(32, 3, 28, 28).to(memory_format=torch.channels_last), torch.randint(0, 10, (32,))
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
print(torch.backends.cpu.get_cpu_capability(), [repr(float(p.double().sum())) for p in net.parameters()])
"""


def _unpinned() -> dict:
    from transferkit.runtime import PORTABLE_KERNELS
    return {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}


def _probe(mode: str, **env) -> str:
    p = subprocess.run([sys.executable, "-c", KERNEL_PROBE, mode], capture_output=True, text=True, timeout=120,
                       env={**_unpinned(), "OMP_NUM_THREADS": "1", **env})
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def _x86_or_skip():
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("portable kernels pin x86 kernels")


@functools.cache
def _runs_avx2() -> bool:
    return _probe("plain", ATEN_CPU_CAPABILITY="avx2").startswith("AVX2 ")


def _avx2_or_skip():
    _x86_or_skip()
    if not _runs_avx2():
        pytest.skip("this CPU has no AVX2")


def test_portable_kernels_set_in_process_equal_the_environment_variables():
    """``portable_kernels()`` (``--portable-kernels``), called after transferkit is imported
    but before any torch operation, trains bit for bit as the three variables set in the
    shell do, and runs AVX2 kernels: MKL and oneDNN read them late enough. (On the
    development machine, AVX-512 with AMX, leaving out MKL_CBWR or ONEDNN_MAX_CPU_ISA alone
    changes the probe's numbers, so the equality shows that both took effect there.)"""
    from transferkit.runtime import PORTABLE_KERNELS
    _avx2_or_skip()
    shell = _probe("plain", **PORTABLE_KERNELS)
    assert shell.startswith("AVX2 ")
    assert _probe("call") == shell


def test_portable_kernels_refuse_when_torch_already_chose_wider_kernels():
    _x86_or_skip()
    native = _probe("plain").split()[0]
    if native in ("AVX2", "DEFAULT"):
        pytest.skip(f"native kernels are {native}: nothing wider to refuse")
    code = "import torch; torch.ones(4).sum(); torch.backends.cpu.get_cpu_capability()\n" \
           "from transferkit.runtime import portable_kernels; portable_kernels()"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_unpinned())
    assert p.returncode != 0 and f"torch already runs {native} kernels" in p.stderr


def test_portable_kernels_flag_is_recorded_in_results(tmp_path):
    _avx2_or_skip()
    p = subprocess.run([sys.executable, "-m", "transferkit.cli", "run", "--portable-kernels", "--set",
                        "methods=[target_only]", "--set", "source=digits", "--set", "target=digits+blur",
                        "--set", f"out_dir={tmp_path}", "--set", "k=2", "--set", "repeats=1",
                        "--set", "pretrain.steps=5", "--set", "train.steps=5", "--set", "train.eval_every=5"],
                       capture_output=True, text=True, timeout=300, env=_unpinned())
    assert p.returncode == 0, p.stderr
    env = json.loads(next(tmp_path.rglob("results.json")).read_text())["environment"]
    assert env["portable_kernels"] is True and env["cpu_capability"] == "AVX2"
    assert env["mkl_cbwr"] == "AVX2" and env["onednn_max_cpu_isa"] == "AVX2"


def test_portable_kernels_do_nothing_but_warn_on_a_cpu_that_is_not_x86(monkeypatch):
    import platform

    from transferkit.runtime import portable_kernels
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(key, raising=False)
    with pytest.warns(UserWarning, match="this CPU is arm64: no effect"):
        assert portable_kernels() == {}
    assert "MKL_CBWR" not in os.environ


def test_a_resume_under_other_kernels_says_so(tmp_path, monkeypatch):
    from transferkit.errors import TransferkitError
    from transferkit.runtime import note_kernels
    said = []
    monkeypatch.delenv("MKL_CBWR", raising=False)
    note_kernels(tmp_path, said.append)
    note_kernels(tmp_path, said.append)  # the same kernels: nothing to say
    assert said == [] and json.loads((tmp_path / "kernels.json").read_text())["mkl_cbwr"] == "auto"
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    note_kernels(tmp_path, said.append)
    assert len(said) == 1 and "mkl_cbwr 'auto' -> 'AVX2'" in said[0]
    note_kernels(tmp_path, said.append)  # still not what the run started with: said again, recorded once
    record = json.loads((tmp_path / "kernels.json").read_text())
    assert len(said) == 2 and record["mkl_cbwr"] == "auto"
    assert [r["mkl_cbwr"] for r in record["resumed_under"]] == ["AVX2"]
    (tmp_path / "kernels.json").write_text('{"torch": "2.')  # torn (a full disk): named, with what to do (a trial)
    with pytest.raises(TransferkitError, match=r"kernel record .*kernels.json is unreadable \(.*\): delete it to "
                                               r"resume \(it records what the run started with"):
        note_kernels(tmp_path, said.append)


_FINGERPRINT = ("import json; from transferkit.runtime import kernel_fingerprint; "
                "print(json.dumps(kernel_fingerprint()))")


@pytest.mark.skipif(not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()),
                    reason="MKL and oneDNN (x86 builds of torch)")
def test_the_kernel_fingerprint_names_the_library_whose_kernels_changed(monkeypatch):
    """MKL_CBWR changes MKL's matrix product and nothing else, ONEDNN_MAX_CPU_ISA oneDNN's convolutions:
    the fingerprint, recorded in results.json and kernels.json, says which operations two machines compute alike."""
    from transferkit.runtime import kernel_fingerprint
    base = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}

    def fingerprint(**env):
        out = subprocess.run([sys.executable, "-c", _FINGERPRINT], capture_output=True, text=True, timeout=120,
                             env={**base, **env})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    native = fingerprint()
    assert set(native) == {"matmul", "conv2d", "conv2d_backward", "resample", "elementwise", "sum"}
    assert fingerprint() == native  # the same kernels, another process: the same bits
    changed = lambda other: sorted(op for op in native if other[op] != native[op])  # noqa: E731
    assert changed(fingerprint(MKL_CBWR="COMPATIBLE")) == ["matmul"]
    assert changed(fingerprint(ONEDNN_MAX_CPU_ISA="SSE41")) == ["conv2d", "conv2d_backward"]
    threads = torch.get_num_threads()
    assert kernel_fingerprint() is kernel_fingerprint() and torch.get_num_threads() == threads  # cached, threads kept


def test_results_record_the_worker_processes_the_jobs_ran_in(tmp_path, monkeypatch):
    from transferkit.results import write_results
    from transferkit.runtime import threads_per_worker
    monkeypatch.delenv("TRANSFERKIT_WORKERS", raising=False)  # a YAML `workers: 3`, not the CLI flag
    rows = [{"method": "m", "source": "s", "target": "t", "setting": "-", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}]
    env = json.loads(write_results(tmp_path, "x", {}, rows, workers=3).read_text())["environment"]
    assert env["workers"] == 3 and env["threads_per_process"] == threads_per_worker(3)
    env = json.loads(write_results(tmp_path, "x", {}, rows).read_text())["environment"]
    assert env["workers"] == 1  # the CLI's --workers when not given


def test_the_last_job_of_a_resumed_run_gets_a_workers_thread_count(tmp_path, monkeypatch):
    from transferkit.jobs import run_jobs
    from transferkit.runtime import threads_per_worker, worker_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # unpinned: workers split the cores
    before = torch.get_num_threads()
    (done,) = run_jobs([(tmp_path / "job.json", lambda: {"threads": torch.get_num_threads()})], workers=2)
    assert done["threads"] == threads_per_worker(2) and torch.get_num_threads() == before
    with worker_threads(1):
        assert torch.get_num_threads() == before  # one worker: the process's own count


def test_a_resume_under_another_thread_count_says_so_and_old_records_compare_on_their_fields(tmp_path, monkeypatch):
    from transferkit.runtime import note_kernels
    said = []
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    note_kernels(tmp_path, said.append, workers=2)
    assert json.loads((tmp_path / "kernels.json").read_text())["threads"] == 1 and said == []
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    note_kernels(tmp_path, said.append, workers=2)
    assert len(said) == 1 and "threads 1 -> 3" in said[0]
    old = {k: v for k, v in json.loads((tmp_path / "kernels.json").read_text()).items()
           if k not in ("threads", "resumed_under")}
    (tmp_path / "kernels.json").write_text(json.dumps(old))  # written before the field existed
    note_kernels(tmp_path, said.append, workers=2)
    assert len(said) == 1
    (tmp_path / "kernels.json").write_text("{}")  # no start record: this one becomes it
    note_kernels(tmp_path, said.append, workers=2)
    assert len(said) == 1 and json.loads((tmp_path / "kernels.json").read_text())["threads"] == 3


def test_results_record_the_versions_of_the_packages_that_make_the_data(tmp_path):
    """Pillow's version alone moved 863 syndigits values between two machines (docs/scale.md):
    results.json names it, with NumPy and the other data-making packages."""
    import numpy
    import PIL

    from transferkit.results import write_results
    from transferkit.runtime import RECORDED_PACKAGES
    rows = [{"method": "m", "source": "s", "target": "t", "setting": "-", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}]
    env = json.loads(write_results(tmp_path, "x", {}, rows).read_text())["environment"]
    assert list(env["packages"]) == list(RECORDED_PACKAGES)
    assert env["packages"]["pillow"] == PIL.__version__ and env["packages"]["numpy"] == numpy.__version__
    assert all(isinstance(v, str) for v in env["packages"].values())  # every one is installed with transferkit


def test_a_resume_under_another_pillow_says_so(tmp_path, monkeypatch):
    """A benchmark resumed after a Pillow upgrade renders other syndigits pixels for its new jobs."""
    import transferkit.runtime as runtime
    said = []
    runtime.note_kernels(tmp_path, said.append)
    assert said == [] and json.loads((tmp_path / "kernels.json").read_text())["packages"] == runtime.package_versions()
    real = runtime.package_version
    monkeypatch.setattr(runtime, "package_version", lambda name: "99.0" if name == "pillow" else real(name))
    runtime.note_kernels(tmp_path, said.append)
    assert len(said) == 1 and "packages pillow" in said[0] and "-> '99.0'" in said[0] and "numpy" not in said[0]
    assert json.loads((tmp_path / "kernels.json").read_text())["resumed_under"][0]["packages"]["pillow"] == "99.0"


_FAULTS = """
import contextlib, io, os, resource, sys, torch
if sys.argv[1] == "command":  # the transferkit command's entry point (cli.main alone leaves a caller's allocator)
    from transferkit.cli import entry
    sys.argv = ["transferkit", "methods", "dann"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            entry()
    except SystemExit as e:
        assert e.code == 0
else:  # what every worker process transferkit starts runs first
    from transferkit.jobs import _worker_init
    _worker_init(1, os.getppid())
x = torch.ones(50_000_000); del x  # 200 MB: above glibc's default mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(49_000_000)  # fits in the freed block whatever the heap's alignment (torch asks 64-byte aligned)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator settings")
def test_the_command_keeps_freed_memory_so_large_tensors_do_not_fault_in_again():
    faults = {}
    for where, flag in (("command", "0"), ("command", "1"), ("worker", "1")):
        out = subprocess.run([sys.executable, "-c", _FAULTS, where], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "TRANSFERKIT_KEEP_FREED_MEMORY": flag, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        faults[where, flag] = int(out.stdout)
    assert faults["command", "0"] > 40_000, faults  # turned off: 200 MB of fresh pages faulted in again
    assert faults["command", "1"] < faults["command", "0"] / 10, faults  # the freed block was reused
    assert faults["worker", "1"] < faults["command", "0"] / 10, faults


def test_a_resume_with_other_main_threads_or_device_says_so(tmp_path, monkeypatch):
    from transferkit.runtime import note_kernels
    said = []
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    threads = torch.get_num_threads()
    note_kernels(tmp_path, said.append)
    try:
        torch.set_num_threads(threads + 1)  # the main process pre-trains the source networks
        note_kernels(tmp_path, said.append)
    finally:
        torch.set_num_threads(threads)
    assert len(said) == 1 and f"main_threads {threads} -> {threads + 1}" in said[0]
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "cuda")  # represent and zeroshot rows would mix devices
    note_kernels(tmp_path, said.append)
    assert len(said) == 2 and "device 'default' -> 'cuda'" in said[1]


def test_peak_memory_measures_the_configs_gpu_and_none_for_a_cpu_job(monkeypatch):
    import transferkit.runtime as runtime
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: asked.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: asked.append(("max", device)) or 2**20)
    with runtime.peak_memory(device="cuda:1") as mem:
        pass
    gpu1 = torch.device("cuda", 1)
    assert mem["peak_cuda_mb"] == 1.0 and asked == [("reset", gpu1), ("max", gpu1)]
    asked.clear()
    with runtime.peak_memory(device="cpu") as mem:  # CUDA was initialised in every CPU job on a GPU host
        pass
    assert "peak_cuda_mb" not in mem and not asked


@pytest.mark.parametrize("workers", [1, 2])
def test_a_benchmark_job_that_raises_is_named_with_its_traceback_and_the_others_still_run(tmp_path, workers):
    from functools import partial

    from transferkit.errors import JobsFailed
    from transferkit.jobs import run_jobs
    jobs = [(tmp_path / "jobs" / "bad.json", partial(int, "not a number")),
            (tmp_path / "jobs" / "good.json", partial(dict, accuracy=0.5))]
    with pytest.raises(JobsFailed, match=r"1 of 2 job\(s\) failed: bad \(ValueError: invalid literal") as e:
        run_jobs(jobs, workers=workers)
    assert "ValueError" in (tmp_path / "jobs" / "failed" / "bad.txt").read_text() and e.value.failures[0].job == "bad"
    assert json.loads((tmp_path / "jobs" / "good.json").read_text()) == {"accuracy": 0.5}
    jobs[0] = (jobs[0][0], partial(dict, accuracy=0.25))  # fixed: a resume runs it alone and drops its traceback
    assert run_jobs(jobs, workers=workers) == [{"accuracy": 0.25}, {"accuracy": 0.5}]
    assert not (tmp_path / "jobs" / "failed" / "bad.txt").exists()


def test_a_rank_ends_when_the_nproc_launcher_is_killed(tmp_path):
    """``transferkit --nproc N`` names itself to the ranks (LAUNCHER_ENV): a SIGKILL of it leaves torchrun and
    the ranks orphaned, and each rank's watcher ends it instead of letting it write on into the run directory;
    it removes the folder the launcher made for the ranks' errors, which the killed launcher cannot."""
    import subprocess
    import sys
    import time

    from transferkit.distributed import EXIT_DIR_ENV
    exits = tmp_path / "transferkit-nproc-x"
    exits.mkdir()
    (exits / "rank-1.json").write_text("{}")
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    rank = subprocess.Popen([sys.executable, "-c", "import time\nfrom transferkit.distributed import "
                             f"_exit_with_launcher\nprint('watching', flush=True)\n"
                             f"_exit_with_launcher({launcher.pid}, 0.05)\ntime.sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, EXIT_DIR_ENV: str(exits)})
    try:
        assert rank.stdout.readline() == "watching\n", rank.stderr.read()
        time.sleep(0.3)
        assert rank.poll() is None  # the launcher lives: the rank goes on
        assert exits.exists()
        launcher.kill()
        launcher.wait()
        assert rank.wait(timeout=20) == 1 and rank.stderr.read() == ""
        assert not exits.exists()
    finally:
        for p in (launcher, rank):
            if p.poll() is None:
                p.kill()
