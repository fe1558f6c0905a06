"""Data-parallel processes (``transferkit --nproc N``, started by torchrun): the process group
and its collectives, and the errors ranks leave for the launcher (:func:`record_rank_error`)."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import TransferkitError, check
from .io import WINDOWS, process_running, read_json, write_json


def check_one_gpu_per_process(device: str) -> None:
    """Several processes need ``cuda`` (each takes its local rank's GPU), not one ``cuda:N``."""
    check(":" not in device, f"device {device} puts every process on one GPU: with several processes "
                             f"(--nproc) give device cuda, and each takes the GPU of its local rank")


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
        check_one_gpu_per_process(device)
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
        if not re.fullmatch(r"rank-(0|[1-9][0-9]*)", path.stem):  # as record_rank_error names them, no other
            continue
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
    SIGKILL leaves torchrun and the ranks running on, writing into a run directory a resume wants), and
    remove the folder of the ranks' errors, which the killed launcher made and cannot remove."""
    while True:
        if WINDOWS:  # os.kill(pid, 0) would send CTRL_C_EVENT there
            gone = not process_running(launcher)
        else:
            try:
                os.kill(launcher, 0)
                gone = False
            except ProcessLookupError:
                gone = True
            except PermissionError:  # alive, another user's (a reused pid): nothing to watch
                return
        if gone:
            if os.environ.get(EXIT_DIR_ENV):
                shutil.rmtree(os.environ[EXIT_DIR_ENV], ignore_errors=True)
            os._exit(1)
        time.sleep(interval_s)
