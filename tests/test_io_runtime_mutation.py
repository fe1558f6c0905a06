"""Tests from a mutation pass over transferkit/io.py, transferkit/results.py and
transferkit/runtime.py, jobs.py (with evaluate.mean_se, which the summaries use).

Each test kills at least one plausible bug that the older tests let through: a file written
in place or flushed after its rename, a lock kept after an error or taken from a live holder,
a stored row of another configuration accepted on resume, a result handed to the wrong job,
a thread count left changed. Expected values are worked out by hand (the standard error of
0.25, 0.5, 0.75 is 0.25 / sqrt(3)), never read back from the code under test. Worker pools
are replaced by a thread pool here so that their bookkeeping is tested in well under a second.
"""

import errno
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from transferkit import io
from transferkit.errors import JobsFailed, TransferkitError
from transferkit.jobs import default_workers, map_jobs, run_jobs
from transferkit.results import read_results, summarize, write_results
from transferkit.runtime import env_int, job_threads, threads_per_worker, worker_threads

ROW = {"method": "m", "source": "s", "target": "t", "setting": "-", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


# ---- atomic writes ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")
def test_atomic_write_flushes_a_temporary_file_beside_the_target_before_renaming_it(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", name, Path(name).read_text() if Path(name).is_file() else None))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    path = tmp_path / "r.json"
    io.write_text(path, "new")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    (_, flushed, content), (_, src, dst), (_, directory, _) = events
    assert flushed == src and content == "new"  # the temporary file, whole, before it is moved
    assert Path(src).parent == tmp_path and Path(src) != path and dst == str(path)
    assert directory == str(tmp_path)  # then the directory entry of the rename
    assert path.read_text() == "new"


def test_a_write_that_fails_halfway_or_at_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    io.write_json(path, {"a": 1})
    real_write_text = Path.write_text

    def torn_write(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", torn_write)
        with pytest.raises(OSError, match="No space"):
            io.write_json(path, {"a": 2, "b": [1, 2, 3]})
    assert json.loads(path.read_text()) == {"a": 1}

    def no_rename(src, dst):
        raise OSError(errno.EIO, "I/O error")
    monkeypatch.setattr(io.os, "replace", no_rename)
    with pytest.raises(OSError, match="I/O error"):
        io.write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_atomic_write_gives_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    io.write_text(tmp_path / "r.txt", "x")
    assert (tmp_path / "r.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_json_writes_paths_as_text_and_names_what_it_cannot_write(tmp_path):
    io.write_json(tmp_path / "a.json", {"p": Path("runs") / "x", "t": torch.tensor(1.5)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"p": str(Path("runs") / "x"), "t": 1.5}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        io.write_json(tmp_path / "b.json", {"o": object()})
    assert not (tmp_path / "b.json").exists()


def test_reading_back_names_a_binary_file_and_a_row_that_is_not_an_object(tmp_path):
    garbage = tmp_path / "job.json"
    garbage.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TransferkitError, match=r"job result .*job\.json is unreadable .*delete it to run that job"):
        io.read_job(garbage)
    listed = tmp_path / "list.json"
    listed.write_text("[0.5, 1]")
    with pytest.raises(TransferkitError, match=r"list\.json is not a result row: delete it to run that job again"):
        io.read_job(listed)


def test_cache_dir_follows_transferkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "c"))
    assert io.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("TRANSFERKIT_CACHE", "")
    assert io.cache_dir() == Path.home() / ".cache" / "transferkit"


# ---- locks -------------------------------------------------------------------------------------
def _free(path) -> bool:
    """Whether another open file description can take the flock of ``path`` now."""
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.skipif(io.fcntl is None, reason="flock locks")
def test_locks_are_released_when_the_block_raises(tmp_path):
    lock = tmp_path / "x.lock"
    with pytest.raises(KeyError):
        with io.waiting_lock(lock):
            assert not _free(lock)
            raise KeyError("job failed")
    assert _free(lock)
    with pytest.raises(KeyError):
        with io.directory_lock(tmp_path / "run"):
            raise KeyError("job failed")
    assert not (tmp_path / "run" / ".lock").exists()
    with io.directory_lock(tmp_path / "run") as held:  # free for the resume
        assert held == tmp_path / "run" / ".lock" and held.read_text() == str(os.getpid())


@pytest.mark.skipif(io.fcntl is None, reason="flock locks")
def test_a_lock_file_removed_by_its_releasing_holder_is_not_taken(tmp_path, monkeypatch):
    """The holder removes ``.lock`` while it still holds it: a process that opened the old
    file and locked it after the release holds a file no other process can find."""
    real_flock, calls = io.fcntl.flock, []

    def flock(fd, op):
        real_flock(fd, op)
        calls.append(op)
        if len(calls) == 1:
            (tmp_path / ".lock").unlink()  # the previous holder's release, just before ours
    monkeypatch.setattr(io.fcntl, "flock", flock)
    with io.directory_lock(tmp_path) as lock:
        assert len(calls) == 2 and lock.read_text() == str(os.getpid())


def _no_flock(monkeypatch):
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    if io.fcntl is not None:
        monkeypatch.setattr(io.fcntl, "flock", flock)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_pid_file_lock_refuses_a_live_holder_and_takes_over_a_dead_or_own_one(tmp_path, monkeypatch):
    _no_flock(monkeypatch)
    lock = tmp_path / ".lock"
    live = os.getppid()
    lock.write_text(str(live))
    with pytest.raises(TransferkitError, match=rf"in use by another transferkit process \(pid {live}\)"):
        with io.directory_lock(tmp_path):
            pass
    assert lock.read_text() == str(live)  # the holder's lock stays
    for stale in (_dead_pid(), os.getpid()):  # a killed run's, or this process's id left by an earlier life
        lock.write_text(str(stale))
        with io.directory_lock(tmp_path) as held:
            assert held.read_text() == str(os.getpid())
        assert not lock.exists()


def test_the_pid_file_lock_counts_another_users_process_as_running(tmp_path, monkeypatch):
    _no_flock(monkeypatch)

    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(io.os, "kill", kill)
    (tmp_path / ".lock").write_text("4242")
    with pytest.raises(TransferkitError, match=r"\(pid 4242\)"):
        with io.directory_lock(tmp_path):
            pass


def test_the_cache_is_named_as_transferkit_cache_everywhere(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    texts = {p.name: p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]}
    assert [name for name, text in texts.items() if re.search(r"~/\.cache/transferkit/\w", text)] == []
    assert all(f"`{sub}/`" in io.cache_dir.__doc__ for sub in ("domains", "pretrained", "text"))
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    assert io.cache_dir() == tmp_path


# ---- results -----------------------------------------------------------------------------------
def test_summary_mean_and_standard_error_by_hand():
    rows = [{**ROW, "seed": 2, "accuracy": 0.75, "wall_s": 3.0}, {**ROW, "seed": 0, "accuracy": 0.25, "wall_s": 1.0},
            {**ROW, "seed": 1, "accuracy": 0.5, "wall_s": 2.0, "group_accuracy": 0.5},
            {**ROW, "setting": "k=2", "seed": 0, "accuracy": 0.1}]
    first, other = summarize(rows)
    # sample variance ((-.25)^2 + 0 + .25^2) / (3 - 1) = 0.0625; standard error sqrt(0.0625 / 3)
    assert first["accuracy_mean"] == pytest.approx(0.5) and first["accuracy_se"] == pytest.approx(0.25 / math.sqrt(3))
    assert first["n"] == 3 and first["seeds"] == [0, 1, 2] and first["wall_s"] == pytest.approx(2.0)
    assert (first["group_accuracy_mean"], first["group_accuracy_se"], first["group_n"]) == (0.5, None, 1)
    assert (other["setting"], other["n"], other["accuracy_mean"], other["accuracy_se"]) == ("k=2", 1, 0.1, None)
    assert "group_n" not in other


@pytest.mark.parametrize("change, message", [
    ({"accuracy": 73.5}, r"rows\[0\] has accuracy 73\.5; accuracies are fractions in \[0, 1\] \(a percentage\?\)"),
    ({"accuracy": float("nan")}, "rows\\[0\\] has a non-numeric accuracy or wall_s"),
    ({"seed": True}, "rows\\[0\\] has seed True; seeds are whole numbers"),
])
def test_read_results_refuses_rows_the_tables_would_misprint(tmp_path, change, message):
    (tmp_path / "results.json").write_text(json.dumps({"rows": [{**ROW, **change}]}))
    with pytest.raises(TransferkitError, match=message):
        read_results(tmp_path / "results.json")


def test_a_missing_results_file_of_a_run_with_finished_jobs_says_how_to_complete_it(tmp_path):
    with pytest.raises(TransferkitError, match=r"results.json does not exist$"):
        read_results(tmp_path / "results.json")
    io.write_json(tmp_path / "jobs" / "a.json", ROW)
    with pytest.raises(TransferkitError, match=r"holds 1 finished job\(s\) but is not finished; `transferkit run "
                                               r"--resume"):
        read_results(tmp_path / "results.json")


def test_a_results_write_that_fails_halfway_leaves_the_old_table(tmp_path, monkeypatch):
    write_results(tmp_path, "old", {}, [ROW])
    before = (tmp_path / "results.md").read_text()
    real_write_text = Path.write_text

    def torn_write(self, text, *args, **kwargs):
        if self.name.startswith(".results.md") or self.name == "results.md":
            real_write_text(self, text[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", torn_write)
    with pytest.raises(OSError, match="No space"):
        write_results(tmp_path, "new", {}, [ROW, {**ROW, "seed": 1}])
    assert (tmp_path / "results.md").read_text() == before


# ---- resumable jobs ----------------------------------------------------------------------------
def _never():
    raise AssertionError("a finished job was computed again")


def test_a_stored_row_of_another_digest_is_refused_before_any_job_runs(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    io.write_json(old, {"value": 1, "config_digest": "aaaa"})
    with pytest.raises(TransferkitError, match=r"old\.json was run with another network; delete the job file"):
        run_jobs([(new, _never), (old, _never)], digests=["bbbb", "bbbb"], stale="run with another network")
    assert not new.exists()
    assert run_jobs([(old, _never), (new, lambda: {"value": 2, "config_digest": "aaaa"})],
                    digests=["aaaa", "aaaa"]) == [{"value": 1, "config_digest": "aaaa"},
                                                  {"value": 2, "config_digest": "aaaa"}]
    io.write_json(old, {"value": 0})  # written before digests: read back as it is
    assert run_jobs([(old, _never)], digests=["cccc"]) == [{"value": 0}]
    io.write_json(old, [1, 2])  # not a row at all
    with pytest.raises(TransferkitError, match=r"old\.json was"):
        run_jobs([(old, _never)], digests=["cccc"])


def test_resumed_jobs_come_back_in_job_order_each_written_before_it_is_logged(tmp_path):
    paths = [tmp_path / f"{i}.json" for i in range(4)]
    io.write_json(paths[0], {"value": 0})
    io.write_json(paths[2], {"value": 2})
    seen = []

    def log(row):
        seen.append((row["value"], sorted(p.name for p in tmp_path.iterdir())))
    out = run_jobs([(paths[0], _never), (paths[1], lambda: {"value": 1}), (paths[2], _never),
                    (paths[3], lambda: {"value": 3})], log=log)
    assert out == [{"value": i} for i in range(4)]
    assert seen == [(1, ["0.json", "1.json", "2.json"]), (3, ["0.json", "1.json", "2.json", "3.json"])]


def test_a_failing_job_in_this_process_is_named_and_the_other_jobs_still_run(tmp_path):
    def fail():
        raise ZeroDivisionError("job failed")
    with pytest.raises(JobsFailed, match=r"1 of 3 job\(s\) failed: b \(ZeroDivisionError: job failed\)"):
        run_jobs([(tmp_path / "a.json", lambda: {"value": 1}), (tmp_path / "b.json", fail),
                  (tmp_path / "c.json", lambda: {"value": 3})])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.json", "failed"]  # no result for b
    assert "ZeroDivisionError" in (tmp_path / "failed" / "b.txt").read_text()


def test_under_nproc_a_benchmark_stops_at_its_first_failing_job(tmp_path, monkeypatch):
    """Under --nproc the ranks stop together: a rank that went on would wait in the next job's
    collectives. The failure is named and its traceback kept, as in one process."""
    import transferkit.jobs as jobs

    def fail():
        raise ZeroDivisionError("job failed")
    monkeypatch.setattr(jobs, "world_size", lambda: 2)
    with pytest.raises(JobsFailed, match=r"1 of 3 job\(s\) failed: b \(ZeroDivisionError: job failed\)"):
        run_jobs([(tmp_path / "a.json", lambda: {"value": 1}), (tmp_path / "b.json", fail),
                  (tmp_path / "c.json", lambda: pytest.fail("ran after the failure"))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "failed"]
    assert "ZeroDivisionError" in (tmp_path / "failed" / "b.txt").read_text()


class _ThreadPool:
    """A ProcessPoolExecutor stand-in running jobs in threads (no spawn, no initializer); a
    queued job starts 0.3 s after a worker frees up, as a process pool hands it over."""

    def __init__(self, max_workers, mp_context=None, initializer=None, initargs=()):
        self._free, self._threads, self._futures = threading.Semaphore(max_workers), [], []

    def submit(self, fn, *args):
        from concurrent.futures import Future
        future, queued = Future(), not self._free.acquire(blocking=False)  # in submission order

        def run():
            if queued:
                self._free.acquire()
                time.sleep(0.3)
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as e:
                        future.set_exception(e)
            finally:
                self._free.release()
        self._futures.append(future)
        self._threads.append(threading.Thread(target=run, daemon=True))
        self._threads[-1].start()
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        if cancel_futures:
            for f in self._futures:
                f.cancel()
        if wait:
            for t in self._threads:
                t.join()


@pytest.fixture
def thread_pool(monkeypatch):
    import concurrent.futures
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _ThreadPool)


def _job(value, fail=False, wait=None, signal=None):
    if signal is not None:
        signal.set()
    if wait is not None:
        assert wait.wait(5)
    if fail:
        raise ZeroDivisionError(f"job {value} failed")
    return value


def test_a_pool_raises_a_jobs_error_after_handing_over_the_jobs_beside_it(thread_pool):
    started, release, done = threading.Event(), threading.Event(), {}
    timer = threading.Timer(0.2, release.set)  # job 1 ends after job 0 failed
    timer.start()
    with pytest.raises(ZeroDivisionError, match="job 0 failed"):
        map_jobs(_job, [(0, True, started), (1, False, release, started)], 2, done.__setitem__)
    timer.join()
    assert done == {1: 1}


def test_a_failing_job_cancels_the_jobs_still_queued(thread_pool):
    """Job 0 fails while job 1 runs; jobs 2-4 wait for a worker (the stand-in hands a freed
    worker its next job 0.3 s later) and are cancelled before they start."""
    release, ran, done = threading.Event(), [], {}

    def job(value, fail=False):
        ran.append(value)
        if fail:
            time.sleep(0.1)  # every job is submitted by then, 2-4 queued
            raise ZeroDivisionError(f"job {value} failed")
        if value == 1:
            assert release.wait(5)
        return value
    timer = threading.Timer(1.0, release.set)  # job 1 ends after the queued ones were cancelled
    timer.start()
    with pytest.raises(ZeroDivisionError, match="job 0 failed"):
        map_jobs(job, [(0, True), (1,), (2,), (3,), (4,)], 2, done.__setitem__)
    timer.join()
    assert sorted(ran) == [0, 1] and done == {1: 1}


def _interrupted_pair(interrupt: type) -> list:
    """Two jobs that end together, the first result's hand-over raising ``interrupt`` (as
    Ctrl-C there); the results handed over, once ``interrupt`` came out of map_jobs."""
    done, both = [], threading.Barrier(2)

    def meet(value):
        both.wait(5)  # both jobs end together, before the first result is handed over
        return value

    def on_done(i, result):
        done.append((i, result))
        if len(done) == 1:
            time.sleep(0.2)  # the other job's result is in by now
            raise interrupt
    with pytest.raises(interrupt):
        map_jobs(meet, [(10,), (11,)], 2, on_done)
    return done


def test_an_interrupted_pool_hands_over_the_results_that_came_back(thread_pool):
    assert sorted(_interrupted_pair(KeyboardInterrupt)) == [(0, 10), (1, 11)]


# ---- threads and environment -------------------------------------------------------------------
def test_thread_counts_never_fall_to_zero(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # not a pinned count: the cores are split
    assert threads_per_worker(1) == max(1, os.cpu_count() or 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_per_worker(10 * (os.cpu_count() or 1)) == 1


def test_worker_threads_restore_the_count_after_an_error_and_leave_one_worker_alone(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before + 1))
    try:
        with pytest.raises(KeyError):
            with worker_threads(2):
                assert torch.get_num_threads() == before + 1
                raise KeyError("job failed")
        assert torch.get_num_threads() == before
        with worker_threads(1):
            assert torch.get_num_threads() == before
        assert job_threads(1) == before and job_threads(2) == before + 1
    finally:
        torch.set_num_threads(before)


def test_whole_number_environment_variables_are_checked_with_named_errors(monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "two")
    with pytest.raises(TransferkitError, match="environment variable TRANSFERKIT_WORKERS must be a whole number "
                                               ">= 1, got 'two'"):
        default_workers()
    for value in ("0", "-1"):  # -1 said "must be a whole number", which it is
        monkeypatch.setenv("TRANSFERKIT_WORKERS", value)
        with pytest.raises(TransferkitError, match=f"TRANSFERKIT_WORKERS must be a whole number >= 1, got '{value}'"):
            default_workers()
    monkeypatch.delenv("TRANSFERKIT_X", raising=False)
    assert env_int("TRANSFERKIT_X", 3) == 3


def test_safetensors_files_are_written_atomically_and_a_full_disk_or_torn_file_is_named(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "net.safetensors"
    io.save_safetensors(path, {"w": torch.arange(6.0).reshape(2, 3)}, {"note": "x"})
    tensors, meta = io.load_safetensors(path, "network")
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3)) and meta == {"note": "x"}

    class SafetensorError(Exception):  # safetensors' own type: not an OSError
        pass

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write .*net.safetensors: .*No space left on device") as raised:
        io.save_safetensors(path, {"w": torch.zeros(2)})
    assert raised.value.errno == errno.ENOSPC  # a machine error (jobs._machine_error): the run stops at once
    from transferkit.jobs import _machine_error
    assert _machine_error(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors"]  # no temporary file left
    monkeypatch.undo()
    assert torch.equal(io.load_safetensors(path, "network")[0]["w"], torch.arange(6.0).reshape(2, 3))  # kept
    path.write_bytes(path.read_bytes()[:40])  # torn
    with pytest.raises(TransferkitError, match=r"checkpoint .*net.safetensors is unreadable \(.*\): delete it"):
        io.load_safetensors(path, "checkpoint", "delete it")


def test_a_torn_engine_checkpoint_is_named_with_what_to_do(tmp_path):
    from helpers import seeded_lenet, toy_domain

    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods import get_method
    d, cfg = toy_domain(16), TrainConfig(steps=4, batch_size=8, checkpoint_every=2, progress=False)
    Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(get_method("finetune")(seeded_lenet()), target=d)
    ckpt = next(tmp_path.rglob("last.safetensors"))
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # torn (a full disk, a copy cut short)
    with pytest.raises(TransferkitError, match=r"checkpoint .*last.safetensors is unreadable .*delete it to train "
                                               r"that stage again from its start"):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(get_method("finetune")(seeded_lenet()), target=d)


def test_stored_job_results_must_be_rows_before_any_job_runs(tmp_path):
    from transferkit.results import ROW_KEYS
    good = {"method": "m", "source": "s", "target": "t", "setting": "all", "seed": 0, "accuracy": 0.5, "wall_s": 1}
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text("{}")  # valid JSON, not a row (a hand edit, an old version)
    ran = []
    jobs = [(tmp_path / "a.json", lambda: ran.append("a")), (tmp_path / "b.json", lambda: ran.append("b")),
            (tmp_path / "c.json", lambda: ran.append("c") or good)]
    with pytest.raises(TransferkitError, match=r"job result .*b.json is not a result row \(it lacks \['method', "
                                               r"'source', .*'wall_s'\]\): delete it to run that job again"):
        run_jobs(jobs, keys=ROW_KEYS)
    assert ran == []  # refused before any job ran
    (tmp_path / "b.json").unlink()
    assert run_jobs(jobs[:1] + jobs[2:], keys=ROW_KEYS) == [good, good] and ran == ["c"]


def test_a_job_that_returns_a_list_of_rows_resumes(tmp_path):
    """The zeroshot and represent benchmarks store one list of rows per job."""
    from transferkit.jobs import job_result
    path, rows = tmp_path / "job.json", [{"method": "m", "accuracy": 0.5}, {"method": "n", "accuracy": 0.25}]
    assert job_result(path, lambda: rows) == rows
    assert job_result(path, _never) == rows  # read back, not run again


def test_a_full_run_directory_is_not_blamed_on_the_cache_a_network_was_copied_from(tmp_path, monkeypatch):
    from transferkit.cli import _cache_hint
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cached, run = str(tmp_path / "cache" / "pretrained" / "n.safetensors"), str(tmp_path / "runs" / "r" / "n.tmp")
    out = _cache_hint(OSError(errno.ENOSPC, "No space left on device", cached, None, run))
    assert out == f" (the file system of {tmp_path / 'runs' / 'r'} is full or read-only)"  # a trial: it named the cache
    into = _cache_hint(OSError(errno.ENOSPC, "No space left on device", run, None, cached))
    assert "in transferkit's cache: TRANSFERKIT_CACHE=" in into
    assert "TRANSFERKIT_CACHE=" in _cache_hint(OSError(errno.EACCES, "Permission denied", cached))
    assert _cache_hint(OSError(errno.EACCES, "Permission denied", run)) == ""


class _FirstInterrupt(KeyboardInterrupt):
    pass


def test_a_second_ctrl_c_while_a_pool_stops_is_ignored_and_the_results_are_still_handed_over(thread_pool,
                                                                                          monkeypatch):
    import signal

    from transferkit import jobs
    stop = jobs._stop_pool

    def stop_and_press_again(pool):
        stop(pool)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C pressed a second time while the pool stops
        time.sleep(0.1)
    monkeypatch.setattr(jobs, "_stop_pool", stop_and_press_again)

    def second(signum, frame):
        raise RuntimeError("the second Ctrl-C reached the stop")
    previous = signal.signal(signal.SIGINT, second)
    try:
        done = _interrupted_pair(_FirstInterrupt)  # the first interruption, not one raised inside the stop
        assert sorted(done) == [(0, 10), (1, 11)]
        assert signal.getsignal(signal.SIGINT) is second  # Ctrl-C acts again afterwards
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_command_ignores_ctrl_c_once_it_stopped(monkeypatch):
    import signal

    from transferkit import cli
    previous = signal.getsignal(signal.SIGINT)
    try:
        for code, ignored in ((0, False), (2, False), (130, True), (128 + signal.SIGTERM, True)):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            monkeypatch.setattr(cli, "main", lambda code=code: code)
            with pytest.raises(SystemExit):
                cli.entry()
            assert (signal.getsignal(signal.SIGINT) is signal.SIG_IGN) == ignored, code
    finally:
        signal.signal(signal.SIGINT, previous)


def test_names_moved_out_of_runtime_still_resolve_there_with_a_deprecation_naming_their_module():
    from transferkit import distributed, jobs, runtime
    with pytest.warns(DeprecationWarning, match=r"runtime\.run_jobs moved to transferkit\.jobs\.run_jobs"):
        assert runtime.run_jobs is jobs.run_jobs
    with pytest.warns(DeprecationWarning, match=r"transferkit\.distributed\.init_distributed"):
        assert runtime.init_distributed is distributed.init_distributed
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = runtime.no_such_name
