"""Tests from a third mutation pass over transferkit/io.py, jobs.py, results.py and runtime.py.

Covered here: an OSError of safetensors kept as it is (its type and errno); JSON written in the order given,
ending with a line break; a waiting lock in a directory not made yet; the fix named when a directory is in use;
the first error of a pool raised, not a later one; the thread count of a worker given to the last job left to
this process; "the finished jobs are kept" in a failure; ``job_result``'s digest and the ``stale`` words of its
refusal; the hint of a benchmark whose plan is unreadable; the setting a stopped run's config runs with
``k: null`` (``all``), no rows, a renamed job file,
an unreadable config.yaml; a boolean group accuracy left out of a summary; ``mps`` refused where it is not
available; a user's ``CUBLAS_WORKSPACE_CONFIG`` kept; a plugin's own error passed and a plugin whose import
fails told from one that is missing; the defaults of the kernel record; a missing package's version.
Pools are stand-ins, so nothing here spawns a process.

Judged equivalent, so not tested: ``directory_holder`` taking ``LOCK_EX`` instead of ``LOCK_SH`` (a probe
that is released at once; only two probes at the same instant differ). Left surviving: ``test_imbalance``'s
``None in ratios`` (needs rows of a class-count shape this pass did not build).
"""

import errno
import json
import os
import sys
import threading
import time
from concurrent.futures import Future

import pytest
import torch

from transferkit import io, runtime
from transferkit.errors import JobsFailed, TransferkitError
from transferkit.jobs import job_result, map_jobs, run_jobs
from transferkit.results import summarize, unfinished_hint, unfinished_run

ROW = {"method": "m", "source": "s", "target": "t", "setting": "all", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


def _raise(e):
    raise e


def _value(v):
    return v


# ---- io --------------------------------------------------------------------------------------------
def test_an_os_error_of_safetensors_keeps_its_type_and_errno(tmp_path, monkeypatch):
    # kills: save_safetensors without `except OSError: raise` (a PermissionError turned into a bare OSError)
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file",
                        lambda *a, **k: _raise(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError) as raised:
        io.save_safetensors(tmp_path / "w.safetensors", {"w": torch.zeros(2)})
    assert raised.value.errno == errno.EACCES


def test_json_is_written_in_the_order_given_and_ends_with_a_line_break(tmp_path):
    # kills: write_json's sort_keys=True, the final "\n" left off
    path = io.write_json(tmp_path / "r.json", {"b": 1, "a": 2})
    assert path.read_text() == '{\n  "b": 1,\n  "a": 2\n}\n'


@pytest.mark.skipif(io.fcntl is None, reason="flock locks")
def test_a_waiting_lock_makes_its_directory(tmp_path):
    # kills: waiting_lock without the mkdir of its parent (FileNotFoundError in a new cache folder)
    with io.waiting_lock(tmp_path / "new" / "x.lock"):
        assert (tmp_path / "new" / "x.lock").exists()


@pytest.mark.skipif(io.fcntl is None, reason="flock locks")
def test_a_directory_in_use_names_its_holder_and_the_fix(tmp_path):
    # kills: _in_use's message without "let it finish or stop it, then resume"
    with io.directory_lock(tmp_path):
        with pytest.raises(TransferkitError, match=rf"in use by another transferkit process \(pid {os.getpid()}\); "
                                                   r"let it finish or stop it, then resume"):
            with io.directory_lock(tmp_path):
                pass


# ---- jobs ------------------------------------------------------------------------------------------
class _OrderedPool:
    """A ProcessPoolExecutor stand-in whose jobs end one after another, in the order submitted."""

    def __init__(self, max_workers, mp_context=None, initializer=None, initargs=()):
        self.calls = []

    def submit(self, fn, *args):
        future = Future()
        future.set_running_or_notify_cancel()  # running: not cancelled by the first failure
        self.calls.append((future, fn, args))
        if len(self.calls) == 1:
            threading.Thread(target=self._finish).start()
        return future

    def _finish(self):
        time.sleep(0.05)  # every job submitted
        for future, fn, args in list(self.calls):
            try:
                future.set_result(fn(*args))
            except BaseException as e:
                future.set_exception(e)
            time.sleep(0.02)

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_pool_raises_its_first_error_not_a_later_one(monkeypatch):
    # kills: map_jobs's `if error is None` dropped (the last error raised, not the first)
    import concurrent.futures
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _OrderedPool)
    monkeypatch.delenv(runtime.INVOCATION_VARIABLE, raising=False)
    jobs_ = [(lambda: _raise(ValueError("first")),), (lambda: _raise(ValueError("second")),), (lambda: 3,)]
    done = {}
    with pytest.raises(ValueError, match="first"):
        map_jobs(lambda f: f(), jobs_, 3, done.__setitem__)
    assert done == {2: 3}


def test_the_last_job_left_to_this_process_computes_with_a_workers_threads(tmp_path, monkeypatch):
    # kills: run_jobs's worker_threads(workers) -> worker_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (row,) = run_jobs([(tmp_path / "a.json", lambda: {"threads": torch.get_num_threads()})], workers=2)
        assert row == {"threads": 3} and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_failure_says_the_finished_jobs_are_kept(tmp_path):
    # kills: _jobs_failed_here without "the finished jobs are kept"
    with pytest.raises(JobsFailed, match=r"1 of 2 job\(s\) failed.*the finished jobs are kept"):
        run_jobs([(tmp_path / "a.json", lambda: {"v": 1}), (tmp_path / "b.json", lambda: _raise(ValueError("x")))])
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1}


def test_job_result_refuses_a_stored_row_of_another_digest_saying_how_it_was_made(tmp_path):
    # kills: job_result passing no digests to run_jobs, or dropping its `stale` words
    path = tmp_path / "j.json"
    io.write_json(path, {"config_digest": "d1", "v": 1})
    with pytest.raises(TransferkitError, match="was run with another network; delete the job file"):
        job_result(path, lambda: {"v": 2}, digest="d2", stale="run with another network")
    assert job_result(path, lambda: {"v": 2}, digest="d1")["v"] == 1


# ---- results ---------------------------------------------------------------------------------------
def _run(tmp_path, config_text, rows):
    """A run folder of job files ``rows`` (name: row) and a config.yaml of ``config_text`` (none for ``None``)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        (tmp_path / "config.yaml").write_text(config_text)
    for name, row in rows.items():
        io.write_json(tmp_path / "jobs" / f"{name}.json", row)
    return tmp_path


def test_a_benchmark_with_an_unreadable_plan_is_still_a_benchmark(tmp_path):
    # kills: bench_plan giving None for a torn plan.json (the directory read as a run's)
    (tmp_path / "plan.json").write_text('{"bench')
    io.write_json(tmp_path / "jobs" / "m-all-s0.json", ROW)
    hint = unfinished_hint(tmp_path)
    assert "is a benchmark directory" in hint and f"transferkit bench NAME --resume {tmp_path}" in hint


def test_a_stopped_run_whose_k_is_null_keeps_only_its_all_setting(tmp_path):
    # kills: _settings_of's `{"all"}` -> None (the rows of a setting a resume left out shown)
    few = _run(tmp_path / "few", "k: null\n", {"m-all-s0": ROW, "m-k=5-s0": {**ROW, "setting": "k=5"}})
    assert [r["setting"] for r in unfinished_run(few)["rows"]] == ["all"]


def test_a_stopped_run_without_rows_is_none_and_a_renamed_job_file_is_refused(tmp_path):
    # kills: unfinished_run without check_job_name (its no-rows None is killed in test_report.py too)
    empty = _run(tmp_path / "e", "k: 5\n", {"m-k=5-s0": {"not": "a row"}})
    assert unfinished_run(empty) is None
    renamed = _run(tmp_path / "r", "methods: [m]\n", {"m-all-s1": ROW})
    with pytest.raises(TransferkitError, match="copied or renamed by hand"):
        unfinished_run(renamed)


def test_a_stopped_run_with_an_unreadable_config_still_shows_its_rows(tmp_path):
    # kills: _run_config without yaml.YAMLError in its except (a YAML traceback instead of the rows)
    run = _run(tmp_path, "k: [1\n", {"m-all-s0": ROW})
    data = unfinished_run(run)
    assert data["config"] is None and data["rows"] == [ROW]


def test_a_boolean_group_accuracy_is_no_group_accuracy():
    # kills: summarize counting a bool group_accuracy (True as 1.0)
    (s,) = summarize([{**ROW, "group_accuracy": True}])
    assert "group_accuracy_mean" not in s and "group_n" not in s


# ---- runtime ---------------------------------------------------------------------------------------
@pytest.mark.skipif(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                    reason="MPS is available here")
def test_mps_is_refused_where_it_is_not_available():
    # kills: resolve_device without its MPS check (a device every tensor move then fails on)
    with pytest.raises(TransferkitError, match="MPS is not available: use --device cpu, or auto"):
        runtime.resolve_device("mps")


def test_deterministic_cuda_keeps_a_users_cublas_workspace(monkeypatch):
    # kills: CUBLAS_WORKSPACE_CONFIG overwritten instead of setdefault
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: None)  # slow, and global
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    runtime.deterministic_cuda()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and torch.backends.cudnn.deterministic


def test_plugin_errors_pass_as_they_are_and_a_failing_import_is_told_from_a_missing_module(tmp_path, monkeypatch):
    # kills: import_plugins without `except TransferkitError: raise`, the missing check as `module.startswith(e.name)`
    (tmp_path / "tkthird_taken.py").write_text(
        "from transferkit.errors import TransferkitError\nraise TransferkitError('method x is taken')\n")
    (tmp_path / "tkthird_ab.py").write_text("import tkthird_a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("tkthird_taken", "tkthird_ab", "tkthird_a"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "tkthird_taken")
    with pytest.raises(TransferkitError) as raised:
        runtime.import_plugins()
    assert str(raised.value) == "method x is taken"
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "tkthird_ab")
    with pytest.raises(TransferkitError, match="importing plugin module 'tkthird_ab'.*ModuleNotFoundError"):
        runtime.import_plugins()


def test_the_kernel_record_defaults_and_a_missing_packages_version(monkeypatch):
    # kills: cpu_kernels's "auto" / "native" defaults swapped, package_version of a missing one not None
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    kernels = runtime.cpu_kernels()
    assert kernels["mkl_cbwr"] == "auto" and kernels["onednn_max_cpu_isa"] == "native"
    assert runtime.package_version("no-such-package-tkthird") is None
