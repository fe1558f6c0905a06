"""Shared test fixtures."""

import os
import sys

import pytest

#: the defaults the CLI's --workers / --device set for its process. The suite checks the library's
#: defaults whatever the shell exports: with TRANSFERKIT_DEVICE=cuda it trained on the GPU and 8
#: tests of CPU behaviour failed (2026-11-30); tests/test_cuda.py is where training on the GPU is
#: tested. Cleared before the test modules build their configs.
CLI_ENVIRONMENT = ("TRANSFERKIT_WORKERS", "TRANSFERKIT_DEVICE")
for _key in CLI_ENVIRONMENT:
    os.environ.pop(_key, None)


@pytest.fixture(scope="session", autouse=True)
def transferkit_cache(tmp_path_factory):
    """Point ``TRANSFERKIT_CACHE`` at a session temporary directory (built-in domains are
    built once per test session, never in the user's cache). The processes of one pytest-xdist
    session share it (built domains and pre-trained source networks are written atomically, and
    a process that needs one being built waits for it), so each is built once, not once per process."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "transferkit-cache"  # the session's, above each worker's
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("transferkit-cache")
    old = os.environ.get("TRANSFERKIT_CACHE")
    os.environ["TRANSFERKIT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TRANSFERKIT_CACHE", None)
    else:
        os.environ["TRANSFERKIT_CACHE"] = old


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread (and do not fight other processes for cores)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def cli_environment():
    """The CLI's --workers / --device set environment defaults for its command (main gives them
    back at its end; a test may call the helpers that set them directly), so each test leaves them
    unset, as every test finds them."""
    yield
    for key in CLI_ENVIRONMENT:
        os.environ.pop(key, None)


@pytest.fixture(autouse=True)
def process_numerics_kept():
    """Every test leaves torch's thread count, deterministic-algorithms flag and float32 matmul
    precision, and the kernel caps of ``--portable-kernels`` (environment variables worker
    processes inherit), as it found them: else this process computes other numbers than the
    workers it starts (tests/test_scale.py and tests/test_flex.py compare them bit for bit), and
    a later test fails only after it. A test that changed one is failed, and the setting restored."""
    import torch

    from transferkit.runtime import PORTABLE_KERNELS

    def state():
        return {"torch.get_num_threads()": torch.get_num_threads(),
                "torch.are_deterministic_algorithms_enabled()": torch.are_deterministic_algorithms_enabled(),
                "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
                "torch.get_float32_matmul_precision()": torch.get_float32_matmul_precision(),
                **{key: os.environ.get(key) for key in PORTABLE_KERNELS}}
    before = state()
    yield
    after = state()
    changed = [f"{name}: {before[name]!r} -> {after[name]!r}" for name in before if before[name] != after[name]]
    if not changed:
        return
    torch.set_num_threads(before["torch.get_num_threads()"])
    torch.use_deterministic_algorithms(before["torch.are_deterministic_algorithms_enabled()"],
                                       warn_only=before["warn_only"])
    torch.set_float32_matmul_precision(before["torch.get_float32_matmul_precision()"])
    for key in PORTABLE_KERNELS:
        if before[key] is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before[key]
    pytest.fail(f"the test left process settings changed (restored now): {'; '.join(changed)}")


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test starts from torch's RNG seeded with 0, so that what it draws (initial weights,
    random inputs) does not depend on which tests ran before it in the process: a test passes
    or fails the same alone, in its file or in the whole suite."""
    import torch
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def empty_frozen_memo():
    """Every test starts with an empty memo of frozen activations (``transferkit.frozen``), so
    that how often a test's units run does not depend on the tests before it."""
    from transferkit.frozen import MEMO
    MEMO.clear()


@pytest.fixture(autouse=True)
def empty_pretraining_memo():
    """Every test starts with no pre-training kept by an earlier ``Transfer`` of the process
    (``transferkit.api.PRETRAINED``), so that how often a test pre-trains does not depend on the
    tests before it."""
    from transferkit.api import PRETRAINED
    PRETRAINED.clear()


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """``plugin(module, text)``: a module on the path, forgotten (with what it registered) afterwards."""
    written = []
    monkeypatch.syspath_prepend(str(tmp_path))
    from transferkit.backbones import BACKBONES
    from transferkit.data import BUILTINS
    from transferkit.methods.base import METHODS, load_outside_families
    load_outside_families()  # built-in families registered on first use are not the plugin's to forget
    methods, backbones, domains = dict(METHODS), dict(BACKBONES), dict(BUILTINS)

    def write(module: str, text: str):
        (tmp_path / f"{module}.py").write_text(text)
        written.append(module)
    yield write
    for module in written:
        sys.modules.pop(module, None)
    for registry, before in ((METHODS, methods), (BACKBONES, backbones), (BUILTINS, domains)):
        for name in set(registry) - set(before):
            del registry[name]


class FakeTSNE:
    """Records the arguments of each t-SNE and places the points at their first two features."""
    calls: list = []

    def __init__(self, **kwargs):
        FakeTSNE.calls.append(kwargs)

    def fit_transform(self, x):
        import numpy as np
        return np.asarray(x)[:, :2]


@pytest.fixture
def fake_tsne(monkeypatch):
    """scikit-learn's TSNE replaced by :class:`FakeTSNE`; the list of its calls' arguments."""
    import sklearn.manifold
    FakeTSNE.calls = []
    monkeypatch.setattr(sklearn.manifold, "TSNE", FakeTSNE)
    return FakeTSNE.calls


@pytest.fixture
def bench_sandbox(monkeypatch):
    """The benchmark registry copied (toy suites a test registers are forgotten after it), one worker, and
    no lazy imports (seconds of imports no fake suite needs); the ``transferkit.bench`` module."""
    import transferkit.bench as bench
    monkeypatch.setattr(bench, "BENCHMARKS", dict(bench.load_suites()))
    monkeypatch.setattr(bench, "ONE_PROCESS", set(bench.ONE_PROCESS))
    monkeypatch.setattr(bench, "OUTPUTS", dict(bench.OUTPUTS))
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "1")
    monkeypatch.setattr(bench, "preload_lazy_imports", lambda: None)
    return bench


@pytest.fixture
def figures(monkeypatch):
    """The figures ``transferkit report`` draws, each saved as the stub PNG ``b"png"``."""
    import transferkit.report as report
    drawn = []
    monkeypatch.setattr(report, "_png", lambda fig, **kw: drawn.append(fig) or b"png")
    return drawn


@pytest.fixture(scope="module")
def fitted():
    """A 4-class target_only LeNet after one step of ``TrainConfig(steps=1, batch_size=8)`` (what the API
    files' predict / score / report tests read)."""
    import torch
    from helpers import toy_domain

    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    torch.manual_seed(0)
    return Transfer("target_only", backbone="lenet", train=TrainConfig(steps=1, batch_size=8)).fit(
        target=toy_domain(16, classes=4))


@pytest.fixture
def pages(monkeypatch):
    """write_report replaced: the places it was asked to write (the exit and the paths, not the page)."""
    import transferkit.report as report
    calls = []

    def fake(run_dir, out=None):
        from pathlib import Path

        from transferkit.errors import TransferkitError
        if not (Path(run_dir) / "results.json").is_file() and not (Path(run_dir) / "config.yaml").is_file():
            raise TransferkitError(f"{run_dir} is not a run directory")
        calls.append((str(run_dir), None if out is None else str(out)))
        return "r.html", "r.md"
    monkeypatch.setattr(report, "write_report", fake)
    return calls
