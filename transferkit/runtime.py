"""Where code runs: device selection, mixed precision, CPU kernels (:func:`portable_kernels`)
and the record of them (:func:`kernel_environment`), the command's work directory and
invocation, plugins, process settings and peak-memory measurement. Data-parallel processes
live in :mod:`transferkit.distributed`, worker processes and job files in :mod:`transferkit.jobs`."""

from __future__ import annotations

import contextvars
import functools
import itertools
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

from .distributed import check_one_gpu_per_process, world_size
from .errors import TransferkitError, TransferkitWarning, check, warn
from .io import read_json, write_json

DEVICES = ("cpu", "cuda", "mps", "auto")


def default_device() -> str:
    """The device of a config or command that names none: ``$TRANSFERKIT_DEVICE`` (``--device`` sets it),
    else ``cpu``."""
    return os.environ.get("TRANSFERKIT_DEVICE", "cpu")


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
            check_one_gpu_per_process(name)
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        deterministic_cuda()
    if name.startswith("mps"):
        check(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
              "device mps requested but MPS is not available: use --device cpu, or auto")
    return torch.device(name)


def rng_devices(*names: str) -> list[int]:
    """The CUDA devices whose random state a ``torch.random.fork_rng`` around work on the devices
    ``names`` keeps: none for work on the CPU (fork_rng's default reads every GPU's state, which
    starts CUDA on each of them)."""
    devices = set()
    for name in map(str, names):  # read, not resolved: a stage that never runs is not checked here
        if not torch.cuda.is_available() or not (name == "auto" or name.startswith("cuda")):
            continue
        if world_size() > 1:
            devices.add(int(os.environ.get("LOCAL_RANK", 0)))
        else:
            devices.add(int(name.split(":")[1]) if name.startswith("cuda:") else torch.cuda.current_device())
    return sorted(devices)


def check_processes_have_gpus(device: str, nproc: int) -> None:
    """Before ``--nproc`` starts its processes: on CUDA (``cuda`` or ``auto`` with a GPU) each
    process takes a GPU of its own, so ``nproc`` may not exceed the GPUs there are (else one
    error line here, instead of a rank's error and torchrun's traceback)."""
    if resolve_device(device).type != "cuda":
        return
    check_one_gpu_per_process(device)
    count = torch.cuda.device_count()
    check(nproc <= count, f"--nproc {nproc} on device {device} needs one GPU per process, and there are {count} "
                          f"CUDA device(s): lower --nproc to {count} or fewer, or use --device cpu (gloo)")


def deterministic_cuda() -> None:
    """The same results for the same seed on a GPU as well: deterministic cuDNN and cuBLAS
    kernels (an op with no deterministic CUDA kernel warns instead of failing). Without
    this, worker processes on one GPU gave different rows for the same job. Process settings:
    they stay on after the fit (docs/scale.md)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def in_float32(fn):
    """Run ``fn`` in float32 where its inputs are of lower precision: under an enabled autocast
    its floating tensor arguments are cast up and autocast is off inside (losses that subtract
    large terms or scale similarities by up to 100 lose their value in bfloat16); without
    autocast float16 and bfloat16 arguments are cast up (``cdist`` has no CPU half kernel,
    CORAL's covariances overflow float16), float32 and float64 ones run as they are."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(device):
            return fn(*(_float32_if_low(a) for a in args), **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return fn(*(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args),
                      **kwargs)
    return wrapper


def _float32_if_low(a):
    """``a`` as float32 if it is a floating tensor of less precision than float32 (float16, bfloat16, float8)."""
    if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype not in (torch.float32, torch.float64):
        return a.float()
    return a


def shows_progress() -> bool:
    """Whether a progress bar shows by default: stderr is a terminal, or this is a Jupyter kernel
    (whose stderr is no terminal but shows a text bar's updates)."""
    if sys.stderr is not None and sys.stderr.isatty():
        return True
    ipython = sys.modules.get("IPython")  # never imported here: loaded where a kernel runs
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)  # a hosted kernel's subclass too


class NoBar:
    r"""A progress bar that is not shown: iterates ``iterable``, counts ``update``\ s. A disabled tqdm
    bar still makes tqdm's multiprocessing lock (which fixes the process's start method: a later
    ``multiprocessing.set_start_method`` fails) and its monitor thread."""
    disable = True

    def __init__(self, iterable=None):
        self.iterable, self.n = iterable, 0

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


#: torch's out-of-memory error (``torch.OutOfMemoryError`` in newer torch, ``torch.cuda.OutOfMemoryError`` in older)
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@contextmanager
def float32_default():
    """Within it, torch's default dtype is float32 (the weights and buffers transferkit trains and
    the tensors its losses make), whatever the caller set (``torch.set_default_dtype``); restored on exit."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextmanager
def callers_state_kept(devices: list[int] = ()):
    """Within it, transferkit's work on a Python caller's process: torch's random state forked
    (the CPU's and that of the GPUs ``devices``, :func:`rng_devices`), NumPy's global random state
    (the SKADA side-by-side seeds it) and the float32 default dtype; the caller's given back on exit
    (``Transfer.fit``, ``run_experiment``, a benchmark)."""
    import numpy as np

    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=list(devices)), float32_default():
            yield
    finally:
        np.random.set_state(numpy_state)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision (bfloat16 autocast) on GPU when ``enabled``; off on CPU (a caller's CPU
    autocast too); no autocast context on other devices (torch before 2.5 refuses one for ``mps``,
    even a disabled one)."""
    if device.type not in ("cpu", "cuda"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


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
    added = [key for key in PORTABLE_KERNELS if key not in os.environ]
    for key, value in PORTABLE_KERNELS.items():
        os.environ.setdefault(key, value)
    chosen = torch.backends.cpu.get_cpu_capability()
    wanted = os.environ["ATEN_CPU_CAPABILITY"].upper()
    if chosen != wanted and chosen != "DEFAULT":  # refused: the variables would reach workers and records alone
        for key in added:
            del os.environ[key]
        raise TransferkitError(
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
#: the benchmark directory :func:`holding_work_dir` holds in this thread (or task): its runs' directories are not
#: what --resume takes; a run in another thread is no run of the benchmark
_HELD: contextvars.ContextVar[Path | None] = contextvars.ContextVar("transferkit_held_benchmark", default=None)


def note_work_dir(path: str | os.PathLike | None) -> None:
    """Record the run or benchmark directory this command works in (what ``--resume`` takes);
    None forgets it (a new command). While :func:`holding_work_dir` holds a benchmark's
    directory, the run directories its jobs make inside it are not recorded."""
    if path is None:
        _HELD.set(None)
    elif _HELD.get() is not None:
        return
    _WORK_DIR[:] = [] if path is None else [Path(path)]


@contextmanager
def holding_work_dir(path: str | os.PathLike):
    """Record ``path`` (a benchmark directory) and keep it recorded while the block runs: a
    stopped benchmark is resumed there, not in the run directory of the job it stopped in. The hold
    is its thread's (a context variable, as :func:`~transferkit.io.links_warned_once`'s scope)."""
    note_work_dir(path)
    token = _HELD.set(Path(path))
    try:
        yield
    finally:
        _HELD.reset(token)  # the directory stays recorded for the stop message


def held_benchmark_dir() -> Path | None:
    """The benchmark directory :func:`holding_work_dir` holds now in this thread, or None (no benchmark runs
    here)."""
    return _HELD.get()


def work_dir() -> Path | None:
    """The directory :func:`note_work_dir` recorded last in this process, or None."""
    return _WORK_DIR[0] if _WORK_DIR else None


#: the environment variable that carries :func:`invocation` to worker processes
INVOCATION_VARIABLE = "TRANSFERKIT_INVOCATION"


_INVOCATIONS = itertools.count(1)  # this process's: a second one in the same second is told apart


def invocation() -> str:
    """The id of the command computing jobs now (its start time and process id, and its number
    in the process from the second on; its worker processes inherit it), recorded in their rows:
    the rows of a resumed directory can come from several invocations, whose wall seconds were
    measured under other loads."""
    if not os.environ.get(INVOCATION_VARIABLE):
        n = next(_INVOCATIONS)
        os.environ[INVOCATION_VARIABLE] = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{f'-{n}' if n > 1 else ''}"
    return os.environ[INVOCATION_VARIABLE]


def new_invocation() -> None:
    """Forget :func:`invocation` (a new command in this process gets a new one)."""
    os.environ.pop(INVOCATION_VARIABLE, None)


@contextmanager
def own_invocation(new: bool = False):
    """Within it, :func:`invocation` is the enclosing command's (a benchmark's experiments, a
    worker's parent) or, where none is, (``new``: always) one of its own, which is forgotten on
    exit: the next experiment or benchmark a Python caller runs is an invocation of its own; an
    enclosing id ``new`` set aside is given back then."""
    earlier = os.environ.get(INVOCATION_VARIABLE) if new else None
    if new:
        new_invocation()
    mine = not os.environ.get(INVOCATION_VARIABLE)
    if mine:
        invocation()  # now: every experiment a benchmark runs inside shares it
    try:
        yield
    finally:
        if mine:
            new_invocation()
        if earlier:
            os.environ[INVOCATION_VARIABLE] = earlier


@functools.lru_cache(maxsize=1)
def source_revision() -> str | None:
    """The git commit of the transferkit source tree this process imported (``+dirty`` when its
    tracked files under ``transferkit/`` differ from it), None outside a git checkout or without
    git: ``transferkit``'s version alone does not tell the code of the docs' tables apart."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "transferkit"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if changed else commit or None


def kernel_environment(workers: int = 1) -> dict:
    """What the numbers of a run depend on besides the config and the seed: versions (and the git
    ``revision`` of the code, :func:`source_revision`), the CPU, the kernels torch chose on it,
    the threads per process, the data-parallel processes (``world_size``, ``--nproc``) and the GPU (if any).
    Stored in every ``results.json`` (``environment``) so that a table can be reproduced on a
    matching machine."""
    from . import __version__
    return {"transferkit": __version__, "revision": source_revision(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": sys.platform, "cpu": cpu_model(), **cpu_kernels(),
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
            if missing and (module.endswith(".py") or "/" in module or os.sep in module):
                raise TransferkitError(f"TRANSFERKIT_PLUGINS names {module!r}: give the module's name, "
                                       f"{os.path.basename(module).removesuffix('.py')!r}, not a file name (its "
                                       f"folder on PYTHONPATH)") from e
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
    (its entry point, not ``cli.main`` called in a Python process) and in every worker process
    transferkit starts (also for a Python caller's ``workers``); importing the library, or calling
    it, leaves the calling process's allocator as it is.
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


# ---- memory ------------------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    """This process's resident memory (Linux: ``/proc``), else its peak so far (``ru_maxrss``: KiB on
    Linux, bytes on macOS); ``None`` where neither can be read (Windows has no ``resource`` module)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc; os.sysconf is POSIX's
        try:
            import resource
        except ImportError:
            return None
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024


@contextmanager
def peak_memory(interval_s: float = 0.05, device: str | None = None):
    """Measure the peak resident memory of this process while the block runs (sampled every
    ``interval_s``), and the peak CUDA memory of ``device`` (a config's device name; ``None``
    or ``auto``: the current CUDA device when CUDA is available; another kind: none). Yields
    a dict that holds ``peak_rss_mb`` (and ``peak_cuda_mb``) when the block ends (no ``peak_rss_mb``
    where the memory of a process cannot be read: Windows)."""
    cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    gpu = None if device in (None, "auto", "cuda") or not cuda else torch.device(device)
    result: dict = {}
    peak = [_rss_bytes()]
    stop = threading.Event()

    def sample():
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True) if peak[0] is not None else None
    if thread is not None:
        thread.start()
    if cuda:
        torch.cuda.reset_peak_memory_stats(gpu)
    t0 = time.perf_counter()
    try:
        yield result
    finally:
        stop.set()
        if thread is not None:
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())
            result["peak_rss_mb"] = round(peak[0] / 2**20, 1)
        result["measured_s"] = time.perf_counter() - t0
        if cuda:
            result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(gpu) / 2**20, 1)


_MOVED = {**dict.fromkeys(("default_workers", "map_jobs", "interrupts_ignored", "run_jobs", "JobFailure",
                           "guarded", "failure_path", "save_failure", "failures_message", "job_result"),
                          "transferkit.jobs"),
          **dict.fromkeys(("gathered", "rank", "is_main_process", "init_distributed", "all_reduce_mean",
                           "broadcast_state", "barrier", "record_rank_error", "rank_errors", "peer_failed",
                           "LAUNCHER_ENV", "EXIT_DIR_ENV"),
                          "transferkit.distributed")}


def __getattr__(name: str):
    """The names that moved to :mod:`transferkit.jobs` and :mod:`transferkit.distributed` on
    2026-12-05 still resolve here, with a ``DeprecationWarning`` that names their new module."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    warnings.warn(f"transferkit.runtime.{name} moved to {_MOVED[name]}.{name}; import it from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)
