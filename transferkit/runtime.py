"""Where code runs: device selection, mixed precision, CPU kernels (:func:`portable_kernels`)
and the record of them (:func:`kernel_environment`), distributed rank, worker processes
(:func:`map_jobs`; they exit when their parent dies), resumable job files (:func:`run_jobs`)
and peak-memory measurement, all handled here and nowhere else."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import platform
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .errors import JobsFailed, TransferkitError, TransferkitWarning, WorkerDied, check, warn
from .io import read_job, read_json, write_json, write_text

DEVICES = ("cpu", "cuda", "mps", "auto")


def check_device_name(name) -> None:
    """Refuse a device name :func:`resolve_device` cannot take, naming the choices."""
    check(isinstance(name, str) and name.split(":")[0] in DEVICES and name.count(":") <= 1
          and (":" not in name or (name.split(":")[0] != "auto" and name.split(":")[1].isdigit())),
          f"unknown device {name!r}"
          f"{' (from $TRANSFERKIT_DEVICE)' if name and name == os.environ.get('TRANSFERKIT_DEVICE') else ''}; "
          f"choose one of {', '.join(DEVICES)} (cuda:N for one GPU)")


def resolve_device(name: str = "cpu") -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``), ``mps`` or ``auto`` (cuda, then mps, then cpu). Under
    ``torchrun`` with CUDA, each process takes the GPU of its local rank."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else (
            "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    if name.startswith("cuda"):
        check(torch.cuda.is_available(), f"device {name} requested but CUDA is not available (this torch "
                                         f"{torch.__version__} sees no GPU): use --device cpu, or auto")
        check(":" not in name or int(name.split(":")[1]) < torch.cuda.device_count(),
              f"device {name} requested but there are {torch.cuda.device_count()} CUDA devices")
        if world_size() > 1:
            _check_one_gpu_per_process(name)
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        deterministic_cuda()
    if name.startswith("mps"):
        check(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
              "device mps requested but MPS is not available: use --device cpu, or auto")
    return torch.device(name)


def _check_one_gpu_per_process(device: str) -> None:
    """Several processes need ``cuda`` (each takes its local rank's GPU), not one ``cuda:N``."""
    check(":" not in device, f"device {device} puts every process on one GPU: with several processes "
                             f"(--nproc) give device cuda, and each takes the GPU of its local rank")


def check_processes_have_gpus(device: str, nproc: int) -> None:
    """Before ``--nproc`` starts its processes: on CUDA (``cuda`` or ``auto`` with a GPU) each
    process takes a GPU of its own, so ``nproc`` may not exceed the GPUs there are (else one
    error line here, instead of a rank's error and torchrun's traceback)."""
    if resolve_device(device).type != "cuda":
        return
    _check_one_gpu_per_process(device)
    count = torch.cuda.device_count()
    check(nproc <= count, f"--nproc {nproc} on device {device} needs one GPU per process, and there are {count} "
                          f"CUDA device(s): lower --nproc to {count} or fewer, or use --device cpu (gloo)")


def deterministic_cuda() -> None:
    """The same results for the same seed on a GPU as well: deterministic cuDNN and cuBLAS
    kernels (an op with no deterministic CUDA kernel warns instead of failing). Without
    this, worker processes on one GPU gave different rows for the same job."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def in_float32(fn):
    """Run ``fn`` in float32 under an enabled autocast: its floating tensor arguments are cast
    up and autocast is off inside (losses that subtract large terms or scale similarities by
    up to 100 lose their value in bfloat16). Without autocast ``fn`` runs as it is."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return fn(*(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args),
                      **kwargs)
    return wrapper


def autocast(device: torch.device, enabled: bool):
    """Mixed precision (bfloat16 autocast) on GPU when ``enabled``; a no-op on CPU."""
    on = enabled and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


# ---- CPU kernels ------------------------------------------------------------------------------
#: environment variables that fix which x86 kernels torch uses: ATen's vectorised kernels, MKL's
#: matrix products (conditional numerical reproducibility) and oneDNN's convolutions, each capped
#: at AVX2. Left free, each library picks the widest kernels the CPU has (AVX-512, AMX), which sum
#: in another order, and training turns the rounding into other accuracies (docs/scale.md).
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def portable_kernels() -> dict:
    """Cap torch's CPU kernels at AVX2 (:data:`PORTABLE_KERNELS`), so that a fixed seed gives
    the same numbers on x86 machines whose native kernels differ (AVX2, AVX-512, AMX). The
    libraries read these variables when they first compute, so call this before any torch
    operation (``transferkit --portable-kernels`` does); worker processes inherit them. A
    variable already set by the user is kept. MKL honours ``MKL_CBWR=AVX2`` on Intel processors
    only (elsewhere it computes as unset; ``MKL_CBWR=COMPATIBLE`` is its setting for both).
    Returns the variables in force; raises when torch already chose wider kernels, and warns
    (no effect) on a CPU that is not x86-64."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        warn(f"portable kernels pin x86 kernels; this CPU is {platform.machine()}: no effect")
        return {}
    for key, value in PORTABLE_KERNELS.items():
        os.environ.setdefault(key, value)
    chosen = torch.backends.cpu.get_cpu_capability()
    wanted = os.environ["ATEN_CPU_CAPABILITY"].upper()
    check(chosen == wanted or chosen == "DEFAULT",
          f"portable kernels: torch already runs {chosen} kernels ({wanted} wanted); call portable_kernels() "
          f"before the first torch operation, or set {', '.join(f'{k}={v}' for k, v in PORTABLE_KERNELS.items())} "
          f"in the environment")
    return {k: os.environ[k] for k in PORTABLE_KERNELS}


def cpu_kernels() -> dict:
    """The CPU kernels torch computes with in this process: ATen's capability and the MKL and
    oneDNN caps (``auto`` / ``native`` when free)."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", "auto"),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native")}


def _fixed_values(*shape: int) -> torch.Tensor:
    """Values in [-0.5, 0.5) from integer arithmetic and one division: the same bits on every
    machine (``torch.randn`` itself computes with the kernels a fingerprint compares)."""
    n = torch.arange(int(torch.tensor(shape).prod()), dtype=torch.int64)
    return ((n * 7919 + 13) % 1000).float().div(1000).sub(0.5).reshape(shape)


@functools.cache
def kernel_fingerprint() -> dict:
    """A digest of each of a few operations computed on fixed inputs, on one CPU thread, with the
    kernels this process computes with: ``matmul`` (MKL's matrix product, which ``Linear``
    layers use), ``conv2d`` and ``conv2d_backward`` (oneDNN's convolutions), ``resample``
    (ATen's grid sampling and antialiased resizing, which render ``syndigits``),
    ``elementwise`` (ATen's vectorised exp, log, tanh, sigmoid, sqrt and softmax) and ``sum``
    (a long reduction). Two machines, or kernel settings, whose digests of an operation agree
    compute it bit for bit alike; where one differs, that library's kernels make their rows
    differ (docs/scale.md, "Same numbers on another machine"). Computed once per process."""
    import hashlib

    def digest(*tensors: torch.Tensor) -> str:
        h = hashlib.sha1()
        for t in tensors:
            h.update(t.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:10]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import torch.nn.functional as F
        x = _fixed_values(8, 1, 28, 28)
        w1, w2 = _fixed_values(20, 1, 5, 5).requires_grad_(), _fixed_values(50, 20, 5, 5).requires_grad_()
        conv = F.conv2d(F.conv2d(x, w1).relu(), w2)
        grads = torch.autograd.grad(conv.square().sum(), (w1, w2))
        theta = torch.tensor([[0.9, 0.1, 0.05], [-0.1, 0.9, -0.05]]).expand(8, 2, 3)
        grid = F.affine_grid(theta, [8, 1, 28, 28], align_corners=False)
        v = _fixed_values(4096)
        return {"matmul": digest(_fixed_values(64, 800) @ _fixed_values(800, 500)),
                "conv2d": digest(conv), "conv2d_backward": digest(*grads),
                "resample": digest(F.grid_sample(x, grid, align_corners=False),
                                   F.interpolate(x, size=(19, 19), mode="bilinear", antialias=True)),
                "elementwise": digest(v.exp(), (v + 1).log(), v.tanh(), v.sigmoid(), (v + 0.5).sqrt(),
                                      v.reshape(64, 64).softmax(1)),
                "sum": digest(torch.stack([v.mul(1.1).sum(), v.mul(0.7).mean()]))}
    finally:
        torch.set_num_threads(threads)


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        return cpu


#: packages recorded in a run's environment: NumPy and the ones that make the built-in domains
RECORDED_PACKAGES = ("numpy", "pillow", "matplotlib", "scikit-image", "scikit-learn", "mlxtend")


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict:
    """``{name: version}`` of ``names`` (:data:`RECORDED_PACKAGES` by default)."""
    return {name: package_version(name) for name in names}


def note_kernels(run_dir: str | os.PathLike, log: Callable[[str], Any] = print, workers: int = 1) -> None:
    """Keep the torch version, CPU, kernels (and their :func:`kernel_fingerprint`), torch threads per
    process (of ``workers`` job processes, and of this main process, which pre-trains the source networks), the
    ``--device`` (``$TRANSFERKIT_DEVICE``) and versions of :data:`RECORDED_PACKAGES` a run or benchmark directory was
    started with in its ``kernels.json`` and say so when a resume runs under others: its new
    rows are valid but would not be bit-identical to rows computed where the first jobs ran
    (another Pillow renders other ``syndigits`` pixels). The start record is never
    overwritten; each other environment a resume ran under is added to ``resumed_under``. A
    record from before a field existed is compared on the fields it has."""
    path = Path(run_dir) / "kernels.json"
    now = {"torch": torch.__version__, "cpu": cpu_model(), **cpu_kernels(), "threads": job_threads(workers),
           "main_threads": torch.get_num_threads(), "device": os.environ.get("TRANSFERKIT_DEVICE") or "default",
           "packages": package_versions(), "kernel_fingerprint": kernel_fingerprint()}
    before = read_json(path, "kernel record", "delete it to resume (it records what the run started with; the "
                                              "environment of each job is in its row)") if path.exists() else None
    started = {k: v for k, v in before.items() if k != "resumed_under"} if isinstance(before, dict) else {}
    if not started:  # none, or one without a start record
        write_json(path, now)
        return
    if any(started[k] != now.get(k) for k in started):
        changed = ", ".join(_change(k, started[k], now.get(k)) for k in started if started[k] != now.get(k))
        log(f"note: {run_dir} was started with other torch kernels, CPU, threads, device or package versions "
            f"({changed}); "
            f"jobs run now may differ from the same jobs run there (docs/scale.md)")
        later = before.get("resumed_under", [])
        if now not in later:
            write_json(path, {**started, "resumed_under": later + [now]})


def _change(key: str, before, now) -> str:
    """``key 'a' -> 'b'``; of two mappings (the packages, the kernel fingerprint), only the keys that changed."""
    if isinstance(before, dict) and isinstance(now, dict):
        return f"{key} " + ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}"
                                     for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))
    return f"{key} {before!r} -> {now!r}"


_WORK_DIR: list[Path] = []  # the run or benchmark directory this process works in, for the CLI's stop message
_HELD: list[bool] = []  # a benchmark runs: its directory, not the runs its jobs make in it, is what --resume takes


def note_work_dir(path: str | os.PathLike | None) -> None:
    """Record the run or benchmark directory this command works in (what ``--resume`` takes);
    None forgets it (a new command). While :func:`holding_work_dir` holds a benchmark's
    directory, the run directories its jobs make inside it are not recorded."""
    if path is None:
        _HELD.clear()
    elif _HELD:
        return
    _WORK_DIR[:] = [] if path is None else [Path(path)]


@contextmanager
def holding_work_dir(path: str | os.PathLike):
    """Record ``path`` (a benchmark directory) and keep it recorded while the block runs: a
    stopped benchmark is resumed there, not in the run directory of the job it stopped in."""
    note_work_dir(path)
    _HELD.append(True)
    try:
        yield
    finally:
        _HELD.clear()  # the directory stays recorded for the stop message


def held_benchmark_dir() -> Path | None:
    """The benchmark directory :func:`holding_work_dir` holds now, or None (no benchmark runs)."""
    return work_dir() if _HELD else None


def work_dir() -> Path | None:
    """The directory :func:`note_work_dir` recorded last in this process, or None."""
    return _WORK_DIR[0] if _WORK_DIR else None


#: the environment variable that carries :func:`invocation` to worker processes
INVOCATION_VARIABLE = "TRANSFERKIT_INVOCATION"


def invocation() -> str:
    """The id of the command computing jobs now (its start time and process id; its worker
    processes inherit it), recorded in their rows: the rows of a resumed directory can come
    from several invocations, whose wall seconds were measured under other loads."""
    if not os.environ.get(INVOCATION_VARIABLE):
        os.environ[INVOCATION_VARIABLE] = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    return os.environ[INVOCATION_VARIABLE]


def new_invocation() -> None:
    """Forget :func:`invocation` (a new command in this process gets a new one)."""
    os.environ.pop(INVOCATION_VARIABLE, None)


def kernel_environment(workers: int = 1) -> dict:
    """What the numbers of a run depend on besides the code, the config and the seed: versions,
    the CPU, the kernels torch chose on it, the threads per process, the data-parallel
    processes (``world_size``, ``--nproc``) and the GPU (if any).
    Stored in every ``results.json`` (``environment``) so that a table can be reproduced on a
    matching machine."""
    from . import __version__
    return {"transferkit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": sys.platform, "cpu": cpu_model(), **cpu_kernels(),
            "portable_kernels": all(os.environ.get(k, "").upper() == v.upper() for k, v in PORTABLE_KERNELS.items()),
            "threads_per_process": job_threads(workers),
            "workers": workers, "world_size": world_size(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "packages": package_versions(), "plugins": plugin_modules(), "kernel_fingerprint": kernel_fingerprint()}


def plugin_modules() -> list[str]:
    """The modules named in ``$TRANSFERKIT_PLUGINS`` (comma-separated), which register plugin
    methods, backbones and domains when imported."""
    return [m.strip() for m in os.environ.get("TRANSFERKIT_PLUGINS", "").split(",") if m.strip()]


def import_plugins() -> None:
    """Import the modules named in ``$TRANSFERKIT_PLUGINS``, which register methods, backbones
    and domains when imported; one that cannot be imported is named with the fix."""
    import importlib

    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except TransferkitError:  # the plugin's own named error (e.g. a name that is taken)
            raise
        except Exception as e:
            missing = isinstance(e, ModuleNotFoundError) and e.name and (module + ".").startswith(e.name + ".")
            if missing:  # the plugin module itself (or its package), not one that it imports
                raise TransferkitError(f"TRANSFERKIT_PLUGINS names module {module!r}, which cannot be imported: "
                                       f"{e} (is its folder on PYTHONPATH?)") from e
            raise TransferkitError(f"importing plugin module {module!r} (TRANSFERKIT_PLUGINS) failed: "
                                   f"{type(e).__name__}: {e}; run `python -c 'import {module}'` to see the "
                                   f"traceback") from e


def plugin_hint(kind: str, recorded: list[str] | None = None) -> str:
    """Where an unknown method, backbone or domain may come from: a plugin module that
    ``$TRANSFERKIT_PLUGINS`` does not name now; ``recorded``: those a run was made with."""
    now = plugin_modules()
    hint = f"a plugin's {kind}? name its module in TRANSFERKIT_PLUGINS, which " + (
        f"names only {','.join(now)} here" if now else "is unset here")
    missing = [m for m in recorded or () if m not in now]
    return hint + (f"; the run was made with TRANSFERKIT_PLUGINS={','.join(recorded)}" if missing else "")


# ---- torch.distributed ---------------------------------------------------------------------
def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gathered(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every process concatenated along the batch in rank order, differentiably (its
    backward sums the processes' gradients, and DDP's average then gives the gradient of the
    loss on the global batch); ``x`` itself in one process. For losses that are statistics of
    the whole batch (MMD, covariances, class confusion), which an average of per-shard values
    would change. The engine's shards have equal sizes, which the all-gather needs."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(device: str = "cpu") -> bool:
    """Join the process group started by ``torchrun`` (gloo on CPU, nccl on GPU); returns
    whether this is a multi-process run."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or dist.is_initialized():
        return world_size() > 1
    backend = "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"
    if backend == "nccl":  # each process on its local rank's GPU, before the first collective
        _check_one_gpu_per_process(device)
        local, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        check(local < count, f"process of local rank {local} has no GPU: {count} CUDA device(s) for "
                             f"{os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on this node (lower --nproc)")
        torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, device_id=torch.device("cuda", local))
    else:
        dist.init_process_group(backend=backend)
    atexit.register(_leave_process_group)
    launcher = os.environ.get(LAUNCHER_ENV, "")
    if launcher.isdigit():
        threading.Thread(target=_exit_with_launcher, args=(int(launcher),), daemon=True).start()
    return True


def _leave_process_group() -> None:
    """Destroy the process group while the interpreter is still alive: gloo's threads left
    to interpreter teardown can abort the process (SIGABRT) after a finished run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (identity in a single process)."""
    if world_size() == 1:
        return values
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / world_size()


def broadcast_state(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (BatchNorm statistics drift apart
    because each rank updates them on its own shard)."""
    if world_size() > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# ---- worker processes --------------------------------------------------------------------------
def job_threads(workers: int) -> int:
    """Torch threads of the process a job runs in: a worker's (:func:`threads_per_worker`)
    with ``workers > 1``, else this process's."""
    return threads_per_worker(workers) if workers > 1 else torch.get_num_threads()


def threads_per_worker(workers: int) -> int:
    """Torch threads of each of ``workers`` processes: ``$OMP_NUM_THREADS`` when set (results
    depend on the thread count, so a pinned count gives the same rows with any number of
    workers), else the machine's cores split between them (at least one each)."""
    pinned = os.environ.get("OMP_NUM_THREADS", "").strip()
    if pinned.isdigit() and int(pinned) >= 1:
        return int(pinned)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextmanager
def worker_threads(workers: int):
    """Run the block with the torch thread count a worker of ``workers`` processes gets
    (:func:`threads_per_worker`), so that a job run in this process (the only job left of a
    resumed run) computes what it would have computed in a worker. No change for one worker."""
    before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(threads_per_worker(workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def env_int(name: str, default: int, least: int = 0) -> int:
    """Whole-number environment variable ``name`` >= ``least`` (``default`` when unset), or a named error."""
    value = os.environ.get(name, str(default))
    check(value.strip().isdigit() and int(value) >= least,
          f"environment variable {name} must be a whole number >= {least}, got {value!r}")
    return int(value)


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


@contextmanager
def interrupts_ignored():
    """Ctrl-C (SIGINT) ignored inside: for the stop that follows a first one (the main thread
    only; elsewhere nothing changes)."""
    import signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
        failure_path(path).unlink(missing_ok=True)  # of an earlier try
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
    """A full disk or quota, or a read-only file system: every job after it would fail the same way."""
    import errno
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def failure_path(job_path: str | os.PathLike) -> Path:
    """Where :func:`run_jobs` keeps the traceback of the job whose result goes to
    ``DIR/NAME.json``: ``DIR/failed/NAME.txt``."""
    job_path = Path(job_path)
    return job_path.parent / "failed" / f"{job_path.stem}.txt"


def save_failure(path: str | os.PathLike, failure: JobFailure, job: str,
                 log: Callable[[str], Any] | None = None) -> JobFailure:
    """Write ``failure``'s traceback atomically to ``path``, name it ``job`` and say so in one
    line on stderr, where a sweep script looks (and to ``log`` when given), in the main process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"job {job} failed: {failure.error}"
    write_text(path, f"{text}\n\n{failure.traceback}")
    failure.job, failure.path = job, str(path)
    if is_main_process():
        print(f"{text} (traceback: {path})", file=sys.stderr)
        if log is not None:
            log(f"{text} (traceback: {path})")
    return failure


def failures_message(failures: list[JobFailure], total: int, kept: str, again: str) -> str:
    """One line: which of ``total`` jobs failed and why, where their tracebacks are, what is
    ``kept``, and ``again``: the command that runs only the failed ones."""
    shown = "; ".join(f"{f.job} ({f.error[:200]})" for f in failures[:5]) + (
        f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
    where = Path(failures[0].path).parent if failures and failures[0].path else "failed/"
    return (f"{len(failures)} of {total} job(s) failed: {shown}; tracebacks in {where}; {kept}; after a fix, "
            f"{again} runs only the failed jobs")


def job_result(path: str | os.PathLike, compute: Callable[[], Any], log: Callable[[Any], None] | None = None,
               digest: str | None = None, stale: str = ""):
    """One job of :func:`run_jobs`, in this process."""
    return run_jobs([(path, compute)], 1, log, None if digest is None else [digest], stale)[0]


def _call(compute: Callable[[], Any]):
    return compute()


def preload_lazy_imports() -> None:
    """Import what torch loads on a process's first optimizer (``torch._dynamo``: 1.5-2 s on
    our 2-core machine), so that the first timed training of a process (a benchmark job's
    wall seconds) does not pay for it. Called by benchmarks, experiments and every worker."""
    import torch._dynamo  # noqa: F401


def keep_freed_memory(mmap_mb: int = 256, trim_mb: int = 1024) -> bool:
    """Linux/glibc: serve allocations up to ``mmap_mb`` from the heap and keep up to ``trim_mb``
    of freed heap instead of handing it back to the system. glibc's default maps every block
    above its threshold (at most 32 MB) afresh, so each large activation (a 1024-image chunk
    of a 64-channel 28 x 28 map is 205 MB) faults its pages in again: test evaluation ran 2x
    slower and a demo run about 25 % slower (2026-12-01). Results are bit-identical; the
    price is a resident memory that stays near its peak. Set by the ``transferkit`` command
    and in every worker process transferkit starts (also for a Python caller's ``workers``);
    importing the library leaves the calling process as it is.
    ``TRANSFERKIT_KEEP_FREED_MEMORY=0`` turns it off. ``False`` where it does not apply (another OS or C library)."""
    if os.environ.get("TRANSFERKIT_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, mmap_mb << 20)) and bool(mallopt(m_trim_threshold, trim_mb << 20))


def one_line_warnings():
    """Print :class:`TransferkitWarning` as one line for a command's user (no file name, no
    source line), other warnings as Python does; returns the formatter it replaced."""
    default = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, TransferkitWarning):
            return f"transferkit: warning: {message}\n"
        return default(message, category, filename, lineno, line)
    warnings.formatwarning = fmt
    return default


def _worker_init(threads: int, parent: int) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops the pool
    one_line_warnings()
    keep_freed_memory()
    torch.set_num_threads(threads)
    preload_lazy_imports()
    os.environ["TRANSFERKIT_WORKERS"] = "1"  # no nested pools inside a worker
    # tqdm's default lock adds a multiprocessing RLock, a named semaphore that a worker ended by _stop_pool
    # never unlinks ("leaked semaphore objects" at exit); a spawned worker's own RLock locks nothing across processes
    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, interval_s: float = 0.5) -> None:
    """End this worker when the process that started it is gone (e.g. killed with SIGKILL,
    which leaves it no time to stop its pool): an orphan would go on writing job files into
    a run directory that a resumed run now holds."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(1)


#: the environment variable naming the ``transferkit --nproc N`` process that started torchrun
LAUNCHER_ENV = "TRANSFERKIT_LAUNCHER_PID"


#: the environment variable naming the folder where each rank of ``--nproc`` leaves its error
#: (``rank-N.json``) for the launcher to print once, with its exit status
EXIT_DIR_ENV = "TRANSFERKIT_EXIT_DIR"


def record_rank_error(code: int, text: str) -> bool:
    """Under ``transferkit --nproc``: leave this rank's error (``text``, exit status ``code``) for the
    launcher, which prints each error once after torchrun ends and exits with its status; ``False``
    when not under it, or when it cannot be left (the caller prints it)."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder:
        return False
    try:
        write_json(Path(folder) / f"rank-{int(os.environ.get('RANK', '0'))}.json", {"code": code, "error": text})
    except (OSError, ValueError):
        return False
    return True


def rank_errors(folder: str | Path) -> list[tuple[int, int, str]]:
    """``(rank, exit status, error)`` that the ranks left in ``folder`` (:func:`record_rank_error`), by rank."""
    out = []
    for path in Path(folder).glob("rank-*.json"):
        with contextlib.suppress(TransferkitError, ValueError, KeyError, TypeError):
            left = read_json(path)
            out.append((int(path.stem[5:]), int(left["code"]), str(left["error"])))
    return sorted(out)


def peer_failed() -> bool:
    """Under ``transferkit --nproc``: another rank has left its error (its failure, not this rank's
    own, is why this rank's process group closed or torchrun stopped it)."""
    folder = os.environ.get(EXIT_DIR_ENV)
    rank = os.environ.get("RANK", "0")
    return bool(folder) and any(r != int(rank) for r, _, _ in rank_errors(folder)) if rank.isdigit() else False


def _exit_with_launcher(launcher: int, interval_s: float = 0.5) -> None:
    """End this rank when the ``transferkit --nproc`` process that started its torchrun is gone (a
    SIGKILL leaves torchrun and the ranks running on, writing into a run directory a resume wants)."""
    while True:
        try:
            os.kill(launcher, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, another user's (a reused pid): nothing to watch
            return
        time.sleep(interval_s)


# ---- memory ------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def peak_memory(interval_s: float = 0.05, device: str | None = None):
    """Measure the peak resident memory of this process while the block runs (sampled every
    ``interval_s``), and the peak CUDA memory of ``device`` (a config's device name; ``None``
    or ``auto``: the current CUDA device when CUDA is available; another kind: none). Yields
    a dict that holds ``peak_rss_mb`` (and ``peak_cuda_mb``) when the block ends."""
    cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    gpu = None if device in (None, "auto", "cuda") or not cuda else torch.device(device)
    result: dict = {}
    peak = [_rss_bytes()]
    stop = threading.Event()

    def sample():
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    if cuda:
        torch.cuda.reset_peak_memory_stats(gpu)
    t0 = time.perf_counter()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        result["peak_rss_mb"] = round(peak[0] / 2**20, 1)
        result["measured_s"] = time.perf_counter() - t0
        if cuda:
            result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(gpu) / 2**20, 1)
