"""Tests from a second mutation pass over transferkit/io.py, jobs.py, runtime.py and results.py.

Covered here: the temporary files an atomic write removes (only a killed writer's, over an hour old, of the
same file) and the name an unwritable directory is given; NaN and infinity written as null inside lists,
tuples, mappings and tensors; a safetensors file without metadata and an unreadable file without a hint;
a missing JSON file named; a job file holding another job's row; a lock file whose longer old content is
overwritten, who holds a directory (pid N, pid unknown, none); a ``~`` in TRANSFERKIT_CACHE; the hints of
a path as written (variables, tabs, backslashes, relative paths); device names and ``auto`` without a GPU;
autocast off on CPU; the kernel record of a resumed run (one entry per other environment, only changed
packages named); the recorded work directory of a benchmark; the invocation id; the environment record
(workers, threads, portable kernels); plugin hints; ``TRANSFERKIT_KEEP_FREED_MEMORY=0``; Ctrl-C handling
off the main thread; a pool of one job or one worker not started, its size and thread count, a died
worker told from one that exited, stopping only live workers; a retried job losing its old traceback,
the resume command of a failure, at most five failures listed, a failure's one-line error and which
errors pass; the hint of a held run, of settings a resume left out and of a run of several --nproc; the
order of a stopped run's rows; rows read_results refuses; summaries of repeated seeds, extra keys, ci95,
open-set, balanced and partial-DA fields; failed jobs in results.json and results.md. Pools are stand-ins
that run each job at once, so nothing here spawns a process.

Judged equivalent, so not tested: ``_pid_file_lock``'s ``or 0`` (an empty file raises ValueError, read as
pid 0 all the same); ``directory_holder``'s
``not path.is_file()`` dropped (opening a missing file fails and gives None all the same);
``_fsync``'s ``O_RDWR`` on Windows; ``invocation`` set anew on every call (the same
second and process give the same id). Left surviving: ``_exit_with_parent``'s interval and
``_worker_init`` (they run only in a spawned worker); ``_create_lock``'s fallback without hard links;
``peak_memory``'s CUDA branches and ``check_processes_have_gpus`` (no GPU here); ``portable_kernels``
(torch has chosen its kernels before any test runs).
"""

import errno
import json
import os
import re
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from transferkit import io, jobs, runtime
from transferkit.errors import JobsFailed, TransferkitError, WorkerDied
from transferkit.jobs import JobFailure, failures_message, guarded, map_jobs, run_jobs, save_failure
from transferkit.results import (
    read_results,
    stopped_lines,
    summarize,
    unfinished_hint,
    unfinished_run,
    write_results,
)

ROW = {"method": "m", "source": "s", "target": "t", "setting": "-", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
needs_flock = pytest.mark.skipif(io.fcntl is None, reason="flock locks")


def _raise(e):
    raise e


# ---- atomic writes and reading back ------------------------------------------------------------
def test_an_atomic_write_removes_only_its_own_files_temporaries_left_over_an_hour_ago(tmp_path):
    # kills: stale age `>` -> `<` (a live writer's file removed); the glob of every file's temporaries; no unlink
    old, fresh, other = tmp_path / ".r.json.a1.tmp", tmp_path / ".r.json.b2.tmp", tmp_path / ".q.json.c3.tmp"
    past = time.time() - io.STALE_TMP_S - 60
    for p in (old, fresh, other):
        p.write_text("x")
    for p in (old, other):
        os.utime(p, (past, past))
    io.write_text(tmp_path / "r.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".q.json.c3.tmp", ".r.json.b2.tmp", "r.json"]


def test_a_directory_where_no_temporary_file_can_be_made_is_named_by_the_file_asked_for(tmp_path, monkeypatch):
    # kills: the mkstemp error re-raised as it is (it named neither the file nor kept its type and errno)
    def refuse(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"Permission denied while writing '.*r\.json' in the folder: ") as raised:
        io.write_text(tmp_path / "r.json", "x")
    assert raised.value.errno == errno.EACCES


def test_nan_and_infinity_become_null_in_nested_lists_tuples_mappings_and_tensors(tmp_path):
    # kills: _finite without its dict or list/tuple branch, keeping a non-finite float, the fallback's default=_jsonable
    path = tmp_path / "r.json"
    io.write_json(path, {"a": [1.0, float("nan"), {"b": float("inf")}], "t": (float("-inf"), 2),
                         "x": torch.tensor(float("nan")), "y": torch.tensor([1.0, float("inf")]), "s": "NaN"})
    assert json.loads(path.read_text()) == {"a": [1.0, None, {"b": None}], "t": [None, 2], "x": None,
                                            "y": [1.0, None], "s": "NaN"}


def test_safetensors_without_metadata_read_back_with_empty_metadata_and_a_missing_file_is_named(tmp_path):
    # kills: `dict(f.metadata() or {})` -> `dict(f.metadata())`; the hint's ": " added when there is none
    path = tmp_path / "n.safetensors"
    io.save_safetensors(path, {"w": torch.ones(3)})
    tensors, meta = io.load_safetensors(path, "network")
    assert meta == {} and torch.equal(tensors["w"], torch.ones(3))
    with pytest.raises(TransferkitError, match=r"^network .*gone\.safetensors is unreadable \(.*\)$"):
        io.load_safetensors(tmp_path / "gone.safetensors", "network")


def test_a_missing_json_file_is_a_named_error_with_its_hint(tmp_path):
    # kills: OSError dropped from read_json's except (a FileNotFoundError traceback instead)
    with pytest.raises(TransferkitError, match=r"results file .*gone\.json is unreadable \(.*\): run it again$"):
        io.read_json(tmp_path / "gone.json", "results file", "run it again")
    with pytest.raises(TransferkitError, match=r"file .*gone\.json is unreadable \(.*\)$"):
        io.read_json(tmp_path / "gone.json")


def test_a_job_file_holding_another_jobs_row_is_refused_with_its_right_name(tmp_path):
    # kills: check_job_name's stem compared as the whole name, the file name without `-s` before the seed, no check
    row = {"method": "dann", "setting": "k=5", "seed": 2}
    io.check_job_name(tmp_path / "dann-k=5-s2.json", row)
    with pytest.raises(TransferkitError, match=r"dann-k=5-s1\.json holds the row of dann seed 2 \(k=5\), whose file "
                                               r"is dann-k=5-s2\.json.*delete it"):
        io.check_job_name(tmp_path / "dann-k=5-s1.json", row)


# ---- locks -------------------------------------------------------------------------------------
@needs_flock
def test_a_lock_file_with_a_longer_old_pid_holds_only_this_processs_id(tmp_path):
    # kills: the ftruncate before the pid is written (an old "99999999" left digits behind it)
    (tmp_path / ".lock").write_text("9" * 20)
    with io.directory_lock(tmp_path) as lock:
        assert lock.read_text() == str(os.getpid())


@needs_flock
def test_the_holder_of_a_directory_is_named_while_it_holds_it_and_none_otherwise(tmp_path):
    # kills: directory_holder's `not path.is_file()` inverted, None or "pid unknown" for a held lock, a holder
    # named for a lock file left unheld
    assert io.directory_holder(tmp_path) is None
    with io.directory_lock(tmp_path):
        assert io.directory_holder(tmp_path) == f"pid {os.getpid()}"
    (tmp_path / ".lock").write_text("4242")  # left by a process that ended: no flock on it
    assert io.directory_holder(tmp_path) is None


@needs_flock
def test_a_held_lock_file_without_a_pid_names_an_unknown_holder(tmp_path):
    # kills: ValueError dropped from the except of directory_holder and _in_use (a traceback instead)
    lock = tmp_path / ".lock"
    lock.write_text("garbage")
    fd = os.open(lock, os.O_RDWR)
    try:
        io.fcntl.flock(fd, io.fcntl.LOCK_EX)
        assert io.directory_holder(tmp_path) == "pid unknown"
        with pytest.raises(TransferkitError, match=r"in use by another transferkit process \(pid unknown\)"):
            with io.directory_lock(tmp_path):
                pass
    finally:
        os.close(fd)


# ---- paths -------------------------------------------------------------------------------------
def test_a_tilde_in_transferkit_cache_is_the_home_folder(monkeypatch):
    # kills: cache_dir without expanduser (a folder named ~ under the current directory)
    monkeypatch.setenv("TRANSFERKIT_CACHE", "~/tk-cache")
    assert io.cache_dir() == Path.home() / "tk-cache"


@pytest.mark.skipif(os.sep != "/", reason="a backslash is the separator on Windows")
def test_path_hints_name_variables_tabs_and_backslashes_and_relative_paths_their_directory(tmp_path):
    # kills: the variable pattern without ${...} or %...%, the tab branch's `elif` -> `if`, `os.sep == "/"`
    # inverted, relative_hint's `not` dropped (an absolute path blamed on the current directory)
    for written, variable in (("$DATA/train", "$DATA"), ("${DATA}/train", "${DATA}"), ("%DATA%/x", "%DATA%")):
        hints = io.path_hints(written)
        assert len(hints) == 1 and hints[0].startswith(f"{variable} is not expanded")
    tab = io.path_hints("data\\t\tx")
    assert len(tab) == 1 and "tab or line break" in tab[0]
    assert len(io.path_hints("data\\train")) == 1 and "backslashes" in io.path_hints("data\\train")[0]
    assert io.path_hints("data/train") == []
    assert io.relative_hint(tmp_path / "missing") == ""
    assert os.getcwd() in io.relative_hint("data/missing")
    assert "relative path" not in io.relative_hint("$DATA/missing")


# ---- devices and precision -----------------------------------------------------------------------
def test_device_names_are_checked_before_any_device_is_looked_up(monkeypatch):
    # kills: `count(":") <= 1` -> `< 1` or dropped, the `!= "auto"` and isdigit checks, the $TRANSFERKIT_DEVICE note
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    for name in ("cpu", "cuda", "cuda:1", "mps", "auto"):
        runtime.check_device_name(name)
    for name in ("gpu", "cuda:x", "cuda:", "cuda:0:1", "auto:0", "", None):
        with pytest.raises(TransferkitError, match=r"unknown device .*; choose one of cpu, cuda, mps, auto") as e:
            runtime.check_device_name(name)
        assert "TRANSFERKIT_DEVICE" not in str(e.value)
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "gpu")
    with pytest.raises(TransferkitError, match=r"unknown device 'gpu' \(from \$TRANSFERKIT_DEVICE\)"):
        runtime.check_device_name("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_with_the_fix():
    # kills: auto resolved to cuda, the CUDA availability check dropped
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(TransferkitError, match=r"device cuda:0 requested but CUDA is not available.*--device cpu"):
        runtime.resolve_device("cuda:0")


def test_mixed_precision_is_off_on_the_cpu():
    # kills: autocast's `and device.type == "cuda"` dropped (bfloat16 on the CPU)
    with runtime.autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


# ---- records of a run's environment ---------------------------------------------------------------
def test_a_resume_under_another_cpu_is_noted_once_and_the_start_record_kept(tmp_path, monkeypatch):
    # kills: `now not in later` dropped (one entry per resume), the start record overwritten, resumed_under
    # compared as a field of the start, no note
    notes = []
    monkeypatch.setattr(runtime, "cpu_model", lambda: "cpu A")
    runtime.note_kernels(tmp_path, notes.append)
    monkeypatch.setattr(runtime, "cpu_model", lambda: "cpu B")
    runtime.note_kernels(tmp_path, notes.append)
    runtime.note_kernels(tmp_path, notes.append)
    record = json.loads((tmp_path / "kernels.json").read_text())
    assert record["cpu"] == "cpu A" and [r["cpu"] for r in record["resumed_under"]] == ["cpu B"]
    assert len(notes) == 2 and "cpu 'cpu A' -> 'cpu B'" in notes[0] and "docs/scale.md" in notes[0]
    monkeypatch.setattr(runtime, "cpu_model", lambda: "cpu A")
    runtime.note_kernels(tmp_path, notes.append)  # back where it started: nothing to note
    assert len(notes) == 2


def test_a_change_of_packages_names_only_the_packages_that_changed():
    # kills: _change listing every key of two mappings, or `before.get(k) != now.get(k)` inverted
    assert runtime._change("packages", {"numpy": "1", "pillow": "9"}, {"numpy": "1", "pillow": "10"}) == \
        "packages pillow '9' -> '10'"
    assert runtime._change("packages", {"numpy": "1"}, {}) == "packages numpy '1' -> None"
    assert runtime._change("cpu", "a", "b") == "cpu 'a' -> 'b'"


def test_a_benchmark_keeps_its_directory_recorded_over_the_runs_of_its_jobs(tmp_path):
    # kills: note_work_dir ignoring _HELD, holding_work_dir not clearing _HELD, held_benchmark_dir without a hold
    bench, run = tmp_path / "bench", tmp_path / "bench" / "run"
    runtime.note_work_dir(None)
    try:
        with runtime.holding_work_dir(bench):
            runtime.note_work_dir(run)
            assert runtime.work_dir() == bench and runtime.held_benchmark_dir() == bench
        assert runtime.work_dir() == bench and runtime.held_benchmark_dir() is None
        runtime.note_work_dir(run)
        assert runtime.work_dir() == run
        runtime.note_work_dir(None)
        assert runtime.work_dir() is None
    finally:
        runtime.note_work_dir(None)


def test_the_invocation_is_inherited_and_forgotten_for_a_new_command(monkeypatch):
    # kills: invocation ignoring an inherited id, new_invocation keeping it
    monkeypatch.setenv(runtime.INVOCATION_VARIABLE, "20260101-000000-7")
    assert runtime.invocation() == "20260101-000000-7"
    runtime.new_invocation()
    assert runtime.INVOCATION_VARIABLE not in os.environ
    now = runtime.invocation()
    assert re.search(rf"-{os.getpid()}(-\d+)?$", now) and now != "20260101-000000-7" and runtime.invocation() == now


def test_the_environment_record_names_workers_threads_and_portable_kernels(monkeypatch):
    # kills: "workers" or "threads_per_process" of another count, portable_kernels `all` -> `any` or case-sensitive
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "")
    for key, value in runtime.PORTABLE_KERNELS.items():
        monkeypatch.setenv(key, value.lower())
    env = runtime.kernel_environment(4)
    assert (env["workers"], env["threads_per_process"], env["world_size"], env["plugins"]) == (4, 3, 1, [])
    assert env["portable_kernels"] is True
    monkeypatch.delenv("MKL_CBWR")
    assert runtime.kernel_environment(1)["portable_kernels"] is False


def test_plugin_hints_say_what_is_set_here_and_what_the_run_was_made_with(monkeypatch):
    # kills: plugin_modules keeping empty names, plugin_hint's recorded note always or never given
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", " a , ,b ")
    assert runtime.plugin_modules() == ["a", "b"]
    assert runtime.plugin_hint("method", ["a"]) == ("a plugin's method? name its module in TRANSFERKIT_PLUGINS, "
                                                    "which names only a,b here")
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "")
    hint = runtime.plugin_hint("domain", ["p", "q"])
    assert "is unset here" in hint and hint.endswith("the run was made with TRANSFERKIT_PLUGINS=p,q")


def test_freed_memory_is_handed_back_when_the_variable_says_0(monkeypatch):
    # kills: the variable's check inverted or its default "1" -> "0"
    monkeypatch.setenv("TRANSFERKIT_KEEP_FREED_MEMORY", "0")
    assert runtime.keep_freed_memory() is False


def test_interrupts_ignored_off_the_main_thread_changes_nothing():
    # kills: the main-thread check dropped (signal.signal raises ValueError in another thread)
    errors = []

    def work():
        try:
            with jobs.interrupts_ignored():
                pass
        except Exception as e:
            errors.append(e)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []
    before = signal.getsignal(signal.SIGINT)
    with jobs.interrupts_ignored():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before


# ---- worker pools --------------------------------------------------------------------------------
class _InlinePool:
    """A ProcessPoolExecutor stand-in that runs each job when it is submitted."""

    made: list = []
    exitcodes: tuple = ()

    def __init__(self, max_workers, mp_context=None, initializer=None, initargs=()):
        self.max_workers, self.initializer, self.initargs = max_workers, initializer, initargs
        self.shutdowns, self.terminated = [], []
        self._processes = {i: SimpleNamespace(exitcode=code, is_alive=lambda: False)
                           for i, code in enumerate(type(self).exitcodes)}
        type(self).made.append(self)

    def submit(self, fn, *args):
        future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except BaseException as e:
            future.set_exception(e)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        self.shutdowns.append((wait, cancel_futures))


@pytest.fixture
def inline_pool(monkeypatch):
    import concurrent.futures
    monkeypatch.setattr(_InlinePool, "made", [])
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _InlinePool)
    monkeypatch.delenv(runtime.INVOCATION_VARIABLE, raising=False)  # map_jobs sets it for its workers
    return _InlinePool


def _value(v):
    return v


def _broken(v):
    raise BrokenProcessPool("A process in the process pool was terminated abruptly")


def test_one_job_or_one_worker_runs_in_this_process_without_a_pool(inline_pool):
    # kills: `len(jobs) <= 1` -> `< 1`, `workers <= 1` -> `< 1`
    done = {}
    map_jobs(_value, [(7,)], 4, done.__setitem__)
    map_jobs(_value, [(1,), (2,)], 1, lambda i, r: done.setdefault(("one", i), r))
    assert inline_pool.made == [] and done == {0: 7, ("one", 0): 1, ("one", 1): 2}


def test_a_pool_has_no_more_workers_than_jobs_each_with_the_threads_of_its_share(inline_pool, monkeypatch):
    # kills: max_workers=workers (idle processes started), initargs with the threads of a share of len(jobs)
    # workers, or without the parent pid
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)
    done = {}
    map_jobs(_value, [(1,), (2,), (3,)], 8, done.__setitem__)
    (pool,) = inline_pool.made
    assert pool.max_workers == 3 and pool.initializer is jobs._worker_init and pool.initargs == (2, os.getpid())
    assert done == {0: 1, 1: 2, 2: 3} and pool.shutdowns == [(True, False)]
    assert os.environ.get(runtime.INVOCATION_VARIABLE)  # set before the workers start: they inherit it


@pytest.mark.parametrize("exitcode, how", [(-9, "died before its job ended .*fewer --workers"),
                                           (1, "failed to start or exited")])
def test_a_broken_pool_tells_a_killed_worker_from_one_that_exited(inline_pool, monkeypatch, exitcode, how):
    # kills: exitcode `>= 0` -> `< 0` or `any` -> `all`, the two explanations swapped, a WorkerDied not raised
    monkeypatch.setattr(inline_pool, "exitcodes", (exitcode,))
    done = {}
    with pytest.raises(WorkerDied, match=how + ".* and the other workers were stopped"):
        map_jobs(lambda v: _value(v) if v == 0 else _broken(v), [(0,), (1,)], 2, done.__setitem__)
    assert done == {0: 0}


def test_stopping_a_pool_cancels_its_queue_and_ends_only_live_workers():
    # kills: _stop_pool's shutdown(wait=True) or without cancel_futures, terminate() of every process
    ended = []
    alive = SimpleNamespace(is_alive=lambda: True, terminate=lambda: ended.append("alive"))
    dead = SimpleNamespace(is_alive=lambda: False, terminate=lambda: ended.append("dead"))
    pool = SimpleNamespace(_processes={1: alive, 2: dead}, calls=[])
    pool.shutdown = lambda wait=True, cancel_futures=False: pool.calls.append((wait, cancel_futures))
    jobs._stop_pool(pool)
    assert pool.calls == [(False, True)] and ended == ["alive"]


# ---- job files and failures ----------------------------------------------------------------------
def test_a_job_that_succeeds_on_a_retry_loses_its_old_traceback_and_the_failure_names_the_resume(tmp_path,
                                                                                             monkeypatch):
    # kills: the failure file of an earlier try kept, "--nproc" named in one process (`> 1` -> `>= 1`),
    # the resume command without the work directory, JobsFailed without its failures
    job = tmp_path / "jobs" / "b.json"
    runtime.note_work_dir(tmp_path)
    try:
        with pytest.raises(JobsFailed, match=rf"failed: b \(ValueError: bad\).*after a fix, --resume {tmp_path} runs "
                                             r"only the failed jobs") as raised:
            run_jobs([(job, lambda: _raise(ValueError("bad")))])
    finally:
        runtime.note_work_dir(None)
    assert "--nproc" not in str(raised.value)
    (failure,) = raised.value.failures
    assert failure.job == "b" and failure.path == str(tmp_path / "jobs" / "failed" / "b.txt")
    assert Path(failure.path).read_text().startswith("job b failed: ValueError: bad\n\n")
    with pytest.raises(JobsFailed, match="the same call runs only the failed jobs"):
        run_jobs([(job, lambda: _raise(ValueError("bad")))])
    monkeypatch.setattr(jobs, "world_size", lambda: 3)
    runtime.note_work_dir(tmp_path)
    try:
        with pytest.raises(JobsFailed, match=rf"--nproc 3 --resume {tmp_path} runs only"):
            run_jobs([(job, lambda: _raise(ValueError("bad")))])
    finally:
        runtime.note_work_dir(None)
    monkeypatch.undo()
    assert run_jobs([(job, lambda: {"value": 1})]) == [{"value": 1}]
    assert not (tmp_path / "jobs" / "failed" / "b.txt").exists()


def test_at_most_five_failures_are_listed_each_error_cut_at_200_characters(tmp_path):
    # kills: `[:5]` -> `[:6]`, `> 5` -> `>= 5`, `len - 5` off by one, `error[:200]` dropped, the `failed/` fallback
    many = [JobFailure(f"E{i}", "tb", f"j{i}", str(tmp_path / "failed" / f"j{i}.txt")) for i in range(7)]
    message = failures_message(many, 9, "kept", "again")
    assert message.startswith("7 of 9 job(s) failed: j0 (E0); ") and "j4 (E4) and 2 more job(s); " in message
    assert "j5" not in message and f"tracebacks in {tmp_path / 'failed'}; kept; after a fix, again runs" in message
    five = failures_message(many[:5], 5, "kept", "again")
    assert "j4 (E4); tracebacks in" in five and "more" not in five
    long = failures_message([JobFailure("x" * 300, "tb", "j")], 1, "kept", "again")
    assert "x" * 200 + ")" in long and "x" * 201 not in long and "tracebacks above (they could not be written);" in long


def test_a_saved_failure_is_named_on_stderr_in_the_log_and_in_its_file(tmp_path, capsys):
    # kills: save_failure without the log call, the job name or path left off the failure, the file's first line
    path, lines = tmp_path / "failed" / "j.txt", []
    failure = save_failure(path, JobFailure("ValueError: bad", "TRACEBACK"), "j", log=lines.append)
    line = f"job j failed: ValueError: bad (traceback: {path})"
    assert (failure.job, failure.path) == ("j", str(path)) and lines == [line]
    assert capsys.readouterr().err == f"transferkit: {line}\n"
    assert path.read_text() == "job j failed: ValueError: bad\n\nTRACEBACK"


def test_a_failure_is_one_line_and_errors_every_later_job_would_meet_pass():
    # kills: the TransferkitError text with its type, `or type(e).__name__` dropped, the message not joined to
    # one line, an errno dropped from _machine_error, MemoryError or BrokenPipeError caught
    assert guarded(_raise, TransferkitError("no such\n   class")).error == "no such class"
    assert guarded(_raise, TransferkitError("")).error == "TransferkitError"
    failure = guarded(_raise, ValueError("a\n b"))
    assert failure.error == "ValueError: a b" and "ValueError" in failure.traceback
    assert guarded(_raise, OSError(errno.EACCES, "Permission denied")).error.startswith("PermissionError")
    for e in (OSError(errno.ENOSPC, "full"), OSError(errno.EDQUOT, "quota"), OSError(errno.EROFS, "read-only"),
              MemoryError(), BrokenPipeError(errno.EPIPE, "pipe")):
        with pytest.raises(type(e)):
            guarded(_raise, e)


# ---- stopped runs ---------------------------------------------------------------------------------
def _job_file(run, row):
    io.write_json(run / "jobs" / f"{row['method']}-{row['setting']}-s{row['seed']}.json", row)


@needs_flock
def test_a_run_that_a_process_works_in_is_said_to_be_in_use_not_to_be_resumed(tmp_path):
    # kills: unfinished_hint without the holder, `not results.json` inverted
    (tmp_path / "config.yaml").write_text("k: 1\n")
    _job_file(tmp_path, {**ROW, "setting": "k=1"})
    with io.directory_lock(tmp_path):
        hint = unfinished_hint(tmp_path)
    assert f"a transferkit process (pid {os.getpid()}) is working in it now" in hint and "--resume" not in hint
    assert "holds 1 finished job(s)" in unfinished_hint(tmp_path)


def test_the_hint_counts_only_the_settings_a_run_runs_and_resumes_under_its_largest_nproc(tmp_path):
    # kills: the settings filter dropped, `max(worlds)` -> `min`, world size 1 counted as --nproc
    (tmp_path / "config.yaml").write_text("k: [1, 5]\nratio: null\n")
    for seed, world in ((0, 2), (1, 4), (2, 1)):
        _job_file(tmp_path, {**ROW, "setting": "k=1", "seed": seed, "world_size": world})
    _job_file(tmp_path, {**ROW, "setting": "k=10", "seed": 0})  # a setting a resume left out
    assert f"holds 3 finished job(s) but is not finished; `transferkit run --nproc 4 --resume {tmp_path}`" in \
        unfinished_hint(tmp_path)


def test_a_folder_of_many_runs_names_the_latest_five_and_gives_the_last(tmp_path):
    # kills: `runs[-5:]` -> `runs[:5]`, `> 5` -> `>= 5`, the example of the first run
    for i in range(7):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "config.yaml").write_text("k: 1\n")
    assert unfinished_hint(tmp_path) == (f": {tmp_path} holds runs, one directory each (r2, r3, r4, r5, r6 and 2 "
                                         f"more): give one, e.g. {tmp_path / 'r6'}")


def test_a_benchmark_without_a_name_counts_the_jobs_of_its_runs_too(tmp_path):
    # kills: the glob `**/jobs` -> `jobs`, --quick given when false, the NAME fallback
    (tmp_path / "plan.json").write_text(json.dumps({"quick": False}))
    io.write_json(tmp_path / "jobs" / "a.json", ROW)
    io.write_json(tmp_path / "main-k2" / "jobs" / "b.json", ROW)
    assert f"(it holds 2 finished job(s)); `transferkit bench NAME --resume {tmp_path}` completes" in \
        unfinished_hint(tmp_path)


def test_a_stopped_runs_rows_come_in_its_job_order_without_settings_left_out_or_non_rows(tmp_path):
    # kills: the listed k order, the seed or method rank dropped from the sort key, the settings filter
    (tmp_path / "config.yaml").write_text("k: [10, 1]\nmethods: [b, a]\n")
    for setting in ("k=1", "k=10", "k=5"):
        for seed in (1, 0):
            for method in ("a", "b"):
                _job_file(tmp_path, {**ROW, "method": method, "setting": setting, "seed": seed})
    io.write_json(tmp_path / "jobs" / "c-k=1-s0.json", {"method": "c"})  # not a row
    data = unfinished_run(tmp_path)
    assert [(r["setting"], r["seed"], r["method"]) for r in data["rows"]] == [
        ("k=10", 0, "b"), ("k=10", 0, "a"), ("k=10", 1, "b"), ("k=10", 1, "a"),
        ("k=1", 0, "b"), ("k=1", 0, "a"), ("k=1", 1, "b"), ("k=1", 1, "a")]
    assert stopped_lines(data) == [f"The run is not finished: the jobs finished so far{data['unfinished']}."]
    assert stopped_lines({"rows": []}) == []


# ---- results -------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    ([ROW], r"is not a transferkit results file \(no 'rows' list\)"),
    ({"rows": [{"method": "m", "source": "s", "target": "t", "setting": "-", "accuracy": 0.5}]},
     r"rows\[0\] lacks seed, wall_s"),
    ({"rows": [ROW, "row"]}, r"rows\[1\] lacks method, source"),
    ({"rows": [{**ROW, "wall_s": float("inf")}]}, r"rows\[0\] has a non-numeric accuracy or wall_s"),
    ({"rows": [{**ROW, "accuracy": True}]}, r"rows\[0\] has a non-numeric accuracy or wall_s"),
    ({"rows": [{**ROW, "accuracy": -0.1}]}, r"rows\[0\] has accuracy -0\.1; accuracies are fractions"),
    ({"rows": [{**ROW, "method": 3}]}, r"rows\[0\] has a method, source, target or setting that is not text"),
    ({"rows": [{**ROW, "peak_rss_mb": "big"}]}, r"rows\[0\] has a non-numeric peak_rss_mb"),
    ({"rows": [{**ROW, "group_accuracy": 1.5}]}, r"rows\[0\] has group_accuracy 1\.5; it is a fraction"),
    ({"rows": [{**ROW, "group_accuracy": False}]}, r"rows\[0\] has group_accuracy False"),
])
def test_read_results_names_each_kind_of_broken_row(tmp_path, data, message):
    # kills: each check of read_results dropped or loosened (bool as a number, `0.0 <=` dropped, ...)
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(TransferkitError, match=message):
        read_results(tmp_path / "results.json")


def test_read_results_takes_null_optional_fields(tmp_path):
    # kills: `peak_rss_mb is None or` and `g is None or` dropped
    (tmp_path / "results.json").write_text(json.dumps({"rows": [{**ROW, "peak_rss_mb": None, "group_accuracy": None},
                                                                {**ROW, "seed": 1, "peak_rss_mb": 12}]}))
    assert len(read_results(tmp_path / "results.json")["rows"]) == 2


def test_summaries_refuse_a_repeated_seed_but_not_the_same_seed_of_two_runs():
    # kills: the repeated-seed check dropped, `run` left out of the group key
    with pytest.raises(TransferkitError, match=r"rows of m / s / t / - repeat seed 0 \(runs merged twice\?\)"):
        summarize([ROW, {**ROW, "accuracy": 0.7}])
    a, b = summarize([{**ROW, "run": "a"}, {**ROW, "run": "b", "accuracy": 0.7}])
    assert (a["run"], a["accuracy_mean"], b["run"], b["accuracy_mean"]) == ("a", 0.5, "b", 0.7)
    with pytest.raises(TransferkitError, match=r"rows\[0\] has no seed, accuracy: a row needs method, seed and"):
        summarize([{"method": "m"}])


def test_a_summary_of_hand_made_rows_and_extra_keys():
    # kills: wall_s averaged over rows without one, a str extra_keys iterated by letter, None or bool values
    # averaged, an extra key left out
    rows = [{"method": "m", "seed": 0, "accuracy": 0.25, "peak_rss_mb": 100.0},
            {"method": "m", "seed": 1, "accuracy": 0.75, "peak_rss_mb": None},
            {"method": "m", "seed": 2, "accuracy": 0.5, "peak_rss_mb": 300.0, "flag": True}]
    (summary,) = summarize(rows, "peak_rss_mb")
    assert (summary["source"], summary["target"], summary["setting"], summary["wall_s"]) == ("", "", "", None)
    assert summary["peak_rss_mb"] == 200.0 and summary["seeds"] == [0, 1, 2]
    (summary,) = summarize(rows, ("flag", "peak_rss_mb"))
    assert "flag" not in summary and summary["peak_rss_mb"] == 200.0


def test_a_summary_keeps_one_rows_own_interval_and_the_open_set_balanced_and_partial_fields():
    # kills: ci95 kept for two rows or a NaN one, the h/balanced/all-source means dropped or taken from one
    # field for another, test_imbalance's `max` -> `min`
    (one,) = summarize([{**ROW, "ci95": 0.02}])
    assert one["accuracy_ci95"] == 0.02
    assert "accuracy_ci95" not in summarize([{**ROW, "ci95": float("nan")}])[0]
    assert "accuracy_ci95" not in summarize([{**ROW, "ci95": 0.02}, {**ROW, "seed": 1, "ci95": 0.03}])[0]
    rows = [{**ROW, "seen_accuracy": 0.8, "unseen_accuracy": 0.2, "h_accuracy": 0.32, "balanced_accuracy": 0.4,
             "confusion": [[3, 1], [0, 1]], "accuracy_all_source_classes": 0.3},
            {**ROW, "seed": 1, "seen_accuracy": 0.6, "unseen_accuracy": 0.4, "h_accuracy": 0.48,
             "balanced_accuracy": 0.6, "confusion": [[2, 0], [0, 2]], "accuracy_all_source_classes": 0.5}]
    (s,) = summarize(rows)
    assert s["seen_accuracy_mean"] == pytest.approx(0.7) and s["unseen_accuracy_mean"] == pytest.approx(0.3)
    assert s["h_accuracy_mean"] == pytest.approx(0.4) and s["h_accuracy_se"] == pytest.approx(0.08)
    assert s["balanced_accuracy_mean"] == pytest.approx(0.5) and s["test_imbalance"] == 4.0
    assert s["accuracy_all_source_classes_mean"] == pytest.approx(0.4)
    (partial,) = summarize([rows[0], {**ROW, "seed": 1}])
    assert "h_accuracy_mean" not in partial and "balanced_accuracy_mean" not in partial


def test_failed_jobs_are_kept_in_results_json_and_named_in_results_md(tmp_path, monkeypatch):
    # kills: "failed" written always or never, failed_line's fields, the workers default not from --workers
    failed = [{"job": "b", "error": "ValueError: bad", "traceback": "failed/b.txt"}, "older text"]
    write_results(tmp_path, "demo", {}, [ROW], workers=3, failed=failed)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["failed"] == failed and data["environment"]["workers"] == 3
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# demo\n\n")
    assert "failed: job b: ValueError: bad (traceback: failed/b.txt)" in md and md.endswith("failed: older text")
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "2")
    write_results(tmp_path, "demo", {}, [ROW])
    data = json.loads((tmp_path / "results.json").read_text())
    assert "failed" not in data and data["environment"]["workers"] == 2
    assert "failed" not in (tmp_path / "results.md").read_text()
