"""Jobs: worker processes (:func:`map_jobs`; they exit when their parent dies) and resumable job
files (:func:`run_jobs`), with the failures a job hands back instead of a result."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .distributed import is_main_process, peer_failed, world_size
from .errors import JobsFailed, TransferkitError, WorkerDied, check, first_named, interrupts_ignored  # noqa: F401 (its old home)
from .io import (
    STORAGE_FULL,
    WINDOWS,
    check_written_folders,
    failed_writing,
    process_running,
    read_job,
    read_json,
    remove_inside,
    write_json,
    write_text,
)
from .runtime import (
    env_int,
    invocation,
    keep_freed_memory,
    one_line_warnings,
    preload_lazy_imports,
    threads_per_worker,
    work_dir,
    worker_threads,
)


def default_workers() -> int:
    """``--workers`` of the CLI (``TRANSFERKIT_WORKERS``), 1 when unset."""
    return env_int("TRANSFERKIT_WORKERS", 1, least=1)


def map_jobs(fn, jobs: list[tuple], workers: int, on_done) -> None:
    """Run ``fn(*args)`` for every ``args`` of ``jobs``, in this process or in ``workers``
    spawned processes (``$OMP_NUM_THREADS`` torch threads each if set, else ``cores / workers``;
    each exits when this process dies); ``on_done(index, result)``
    is called in this process as soon as each job ends, so its result can be written
    atomically right away. ``fn`` must be a module-level function. When a job fails, the
    queued jobs are cancelled, but for those the pool has already passed to its workers'
    queue (``ProcessPoolExecutor`` keeps up to one call more than it has workers there, and
    cannot cancel them: they run); the running ones still finish and are handed to
    ``on_done``, and then the first error is raised. When this process is interrupted
    (Ctrl-C) or ``on_done`` raises, it stops at once: queued jobs are cancelled, the workers
    are ended (running jobs are lost, a resumed run repeats them), the results that had
    already come back are handed to ``on_done``, and the interruption is raised. When a
    worker process dies (killed for memory, ``kill -9``), the pool cannot go on: the results
    that came back are handed to ``on_done`` and :class:`~transferkit.errors.WorkerDied` is raised."""
    if workers <= 1 or len(jobs) <= 1:
        for i, args in enumerate(jobs):
            on_done(i, fn(*args))
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    ctx = torch.multiprocessing.get_context("spawn")
    invocation()  # set now: the workers inherit it, and their rows name this command
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init,
                               initargs=(threads_per_worker(workers), os.getpid()))
    futures, handed, error = {}, set(), None
    try:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(jobs)}
        procs = list((getattr(pool, "_processes", None) or {}).values())  # started by the submits
        for future in as_completed(futures):
            if future.cancelled():
                continue
            if future.exception() is not None:
                if error is None:
                    error = future.exception()
                    for f in futures:
                        f.cancel()
                continue
            handed.add(futures[future])
            on_done(futures[future], future.result())
    except BaseException:
        with interrupts_ignored():  # a second Ctrl-C would cut the stop short and lose the results below
            _stop_pool(pool)
            for f, i in futures.items():  # results that came back before the interruption are kept
                if i not in handed and f.done() and not f.cancelled() and f.exception() is None:
                    handed.add(i)
                    on_done(i, f.result())
        raise
    pool.shutdown(wait=True)
    if isinstance(error, BrokenProcessPool):
        # BrokenProcessPool says "terminated abruptly" either way; a worker killed by a signal has a negative exit code
        exited = any(p.exitcode is not None and p.exitcode >= 0 for p in procs)
        how = ("a worker process failed to start or exited (its error is printed above)" if exited else
               "a worker process died before its job ended (killed by the system, e.g. for memory, or by a signal; "
               "fewer --workers use less memory)")
        raise WorkerDied(f"{how} and the other workers were stopped") from error
    if error is not None:
        raise error


def _stop_pool(pool) -> None:
    """Cancel a process pool's queued jobs and end its workers without waiting for the
    running ones (``shutdown`` alone would let every queued job run first)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.terminate()


def run_jobs(jobs: list[tuple[str | os.PathLike, Callable[[], Any]]], workers: int = 1,
             log: Callable[[Any], None] | None = None, digests: list[str] | None = None, stale: str = "",
             keys: tuple = ()) -> list:
    """Results of ``jobs``, pairs ``(path, compute)``, in their order: the JSON stored at
    ``path`` by an earlier run, or ``compute()`` run by :func:`map_jobs` (``compute`` must
    pickle, e.g. a ``functools.partial`` of a module-level function, when ``workers > 1``),
    written atomically the moment it ends and then passed to ``log``. An interrupted
    benchmark resumes where it stopped. With ``digests`` (one per job, stored by ``compute``
    as the row's ``config_digest``), a stored row with another digest is refused before any
    job runs, the error saying how it was made (``stale``, e.g. "run with another network");
    rows written before digests carry none and are read back as they are. With ``keys``, a
    stored result must be a JSON object with them (a hand-edited file is named before any job
    runs); without, any JSON is a result (a job may return a list of rows)."""
    hint = "delete it to run that job again"
    results = [(read_job(p, keys) if keys else read_json(p, "job result", hint)) if Path(p).exists() else None
               for p, _ in jobs]
    for (path, _), r, digest in zip(jobs, results, digests or []):
        check(r is None or (isinstance(r, dict) and r.get("config_digest", digest) == digest),
              f"{path} was {stale}; delete the job file to run it again, or use a new directory")
    todo = [i for i, r in enumerate(results) if r is None]
    for folder in dict.fromkeys(Path(jobs[i][0]).parent for i in todo):  # where failed/ is
        check_written_folders(folder, ("failed",))

    failures: list[JobFailure] = []

    def done(j: int, result) -> None:
        path = jobs[todo[j]][0]
        if isinstance(result, JobFailure):  # named now; the other jobs go on (under --nproc, none does)
            failures.append(save_failure(failure_path(path), result, Path(path).stem))
            if world_size() > 1:
                raise _jobs_failed_here(failures, len(jobs))
            return
        results[todo[j]] = result
        write_json(path, result)
        remove_inside(failure_path(path), Path(path).parent)  # of an earlier try
        if log is not None:
            log(result)
    with worker_threads(workers):  # a last job left to this process computes what a worker would
        map_jobs(guarded, [(_call, jobs[i][1]) for i in todo], workers, done)
    if failures:
        raise _jobs_failed_here(failures, len(jobs))
    return results


def _jobs_failed_here(failures: list[JobFailure], total: int) -> JobsFailed:
    """The error of :func:`run_jobs` some of whose ``total`` jobs failed."""
    nproc = f"--nproc {world_size()} " if world_size() > 1 else ""
    again = f"{nproc}--resume {work_dir()}" if work_dir() else "the same call"
    return JobsFailed(failures_message(failures, total, "the finished jobs are kept (the results are written when "
                                       "every job has run)", again), failures)


class JobFailure:
    """What a job that raised an ordinary exception hands back instead of its result: its
    one-line ``error`` (``ValueError: ...``) and ``traceback``; picklable, so a worker can
    hand it back. ``path``: where :func:`save_failure` wrote the traceback."""

    def __init__(self, error: str, traceback: str, job: str = "", path: str = ""):
        self.error, self.traceback, self.job, self.path = error, traceback, job, path


def guarded(fn, *args):
    """``fn(*args)``, or a :class:`JobFailure` when it raises an ordinary exception (a bug, a
    plugin's error), so that the other jobs still run. Ctrl-C, SIGTERM, ``SystemExit`` and
    :class:`~transferkit.errors.WorkerDied` pass, and so do errors of the machine that every
    later job would meet too (out of memory, a full disk or quota, a read-only file system, a
    closed pipe). Under ``--nproc`` the caller stops the run at its first failure (the ranks
    must stop together), after saving its traceback; an error that another rank's failure
    caused (its process group closed) passes too: that rank names the failure."""
    try:
        return fn(*args)
    except Exception as e:
        if isinstance(e, (WorkerDied, MemoryError, BrokenPipeError)) or _machine_error(e) or peer_failed():
            raise
        import traceback

        text = str(e) if isinstance(e, TransferkitError) else f"{type(e).__name__}: {e}"
        return JobFailure(" ".join(text.split()) or type(e).__name__, traceback.format_exc())


def _machine_error(e: Exception) -> bool:
    """A full disk or quota, a file-size limit, a read-only file system, or a result file that
    cannot be written (permissions): every job after it would fail the same way."""
    import errno
    if not isinstance(e, OSError):
        return False
    return e.errno in STORAGE_FULL or (e.errno in (errno.EACCES, errno.EPERM) and failed_writing(e))


def failure_path(job_path: str | os.PathLike) -> Path:
    """Where :func:`run_jobs` keeps the traceback of the job whose result goes to
    ``DIR/NAME.json``: ``DIR/failed/NAME.txt``."""
    job_path = Path(job_path)
    return job_path.parent / "failed" / f"{job_path.stem}.txt"


def save_failure(path: str | os.PathLike, failure: JobFailure, job: str,
                 log: Callable[[str], Any] | None = None) -> JobFailure:
    """Write ``failure``'s traceback atomically to ``path``, name it ``job`` and say so in one
    line on stderr (``transferkit: job NAME failed: ...``), where a sweep script looks (and to ``log``, without
    the prefix, when given), in the main process."""
    path = Path(path)
    text = f"job {job} failed: {failure.error}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, f"{text}\n\n{failure.traceback}")
        failure.job, failure.path, where = job, str(path), f"traceback: {path}"
    except OSError as e:  # a full or read-only run directory: the job's own error is still the one told
        failure.job, failure.path, where = job, "", f"its traceback could not be written to {path}: {e}"
        if is_main_process():
            print(failure.traceback, file=sys.stderr)
    if is_main_process():
        print(f"transferkit: {text} ({where})", file=sys.stderr)  # prefixed as the command's other stderr lines
        if log is not None:
            log(f"{text} ({where})")
    return failure


def failures_message(failures: list[JobFailure], total: int, kept: str, again: str) -> str:
    """One line: which of ``total`` jobs failed and why, where their tracebacks are, what is
    ``kept``, and ``again``: the command that runs only the failed ones."""
    shown = first_named((f"{f.job} ({f.error[:200]})" for f in failures), "job(s)", sep="; ")
    written = [f.path for f in failures if f.path]
    where = f"tracebacks in {Path(written[0]).parent}" if written else "tracebacks above (they could not be written)"
    return (f"{len(failures)} of {total} job(s) failed: {shown}; {where}; {kept}; after a fix, "
            f"{again} runs only the failed jobs (a fix of the config they ran with needs a new run)")


def job_result(path: str | os.PathLike, compute: Callable[[], Any], log: Callable[[Any], None] | None = None,
               digest: str | None = None, stale: str = ""):
    """One job of :func:`run_jobs`, in this process."""
    return run_jobs([(path, compute)], 1, log, None if digest is None else [digest], stale)[0]


def _call(compute: Callable[[], Any]):
    return compute()


def _worker_init(threads: int, parent: int) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops the pool
    one_line_warnings()
    keep_freed_memory()
    torch.set_num_threads(threads)
    preload_lazy_imports()
    os.environ["TRANSFERKIT_WORKERS"] = "1"  # no nested pools inside a worker
    from . import engine
    engine.BARS = False  # the workers' bars would overwrite each other on the parent's terminal
    # tqdm's default lock adds a multiprocessing RLock, a named semaphore that a worker ended by _stop_pool
    # never unlinks ("leaked semaphore objects" at exit); a spawned worker's own RLock locks nothing across processes
    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, interval_s: float = 0.5) -> None:
    """End this worker when the process that started it is gone (e.g. killed with SIGKILL,
    which leaves it no time to stop its pool): an orphan would go on writing job files into
    a run directory that a resumed run now holds."""
    while os.getppid() == parent and (not WINDOWS or process_running(parent)):  # Windows keeps the ppid
        time.sleep(interval_s)
    os._exit(1)
