"""The source network of a run: pre-trained on the labelled source (cached on disk by a
content key that holds the training code's digest) or read from a ``pretrained:`` file, and
pinned in the run directory (``source.safetensors``, ``source.json``) so that every job of
the run, resumed or not, starts from the same network."""

from __future__ import annotations

import contextlib
import copy
import functools
import glob
import hashlib
import json
import os
import shutil
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from . import __version__
from .backbones import build_backbone, builder_of, definition_digest, is_built_in
from .config import NOT_RESULTS, ExperimentConfig
from .distributed import barrier, is_main_process, world_size
from .engine import Engine, TrainConfig, keyed_fields
from .errors import TransferkitError, check, warn
from .fitting import source_only_of
from .io import atomic_write, cache_dir, read_json, remove_inside, waiting_lock, write_json
from .methods.supervised import SourceOnly
from .networks import (
    PRETRAINED_FILE,
    SAVE_NETWORK,
    head_kind,
    load_network_file,
    network_digest,
    read_network_file,
    restore_head,
    save_network,
)
from .rundata import Prepared
from .runtime import cpu_kernels, resolve_device

PRETRAIN_FORMAT = 2  # 2: the network's initial weights come from cfg.seed


def _initial_source_net(cfg: ExperimentConfig, data: Prepared, head: str = "linear"):
    """The source network's initial weights; ``head``: the kind of head a network file holds
    (:func:`~transferkit.networks.head_kind`: a cosine or prototype head that finetune_cosine / _proto trained)."""
    torch.manual_seed(cfg.seed)  # the initial weights; PyTorch 2.13 seeds each process at random
    return build_backbone(cfg.backbone, num_classes=data.source.train.num_classes, in_channels=data.channels,
                          image_size=cfg.image_size, head=head)


def read_source_file(cfg: ExperimentConfig, data: Prepared, path: Path, classes=None, hint: str = ""):
    """The network of a source network file (a ``pretrained:`` file, a run's pinned copy), built
    with the head the file holds."""
    read = read_network_file(path, hint)
    net = _initial_source_net(cfg, data, head_kind(read[0]))
    load_network_file(net, path, classes=classes, hint=hint, read=read)
    restore_head(net, read[1], path)
    return net


def pretrain_source(cfg: ExperimentConfig, data: Prepared, log=print):
    """Pre-train the backbone on the labelled source (cached on disk by content key: data,
    backbone (a plugin's: its network's definition and initial weights too), budget, seed,
    device, the torch thread count and kernels on CPU and the number of data-parallel processes).

    Returns ``(net, info)`` where ``info`` has the source validation accuracy, wall
    seconds, whether the network came from the cache and (unless it is a ``pretrained:``
    file's) its :func:`~transferkit.networks.network_digest`. A pre-training that diverged
    (:attr:`~transferkit.engine.FitResult.diverged`, which the engine warns of) is not cached: its
    network is written to ``<key>.diverged.safetensors``, which no run reads back, and ``info``
    has ``diverged: true``."""
    source = data.source
    if cfg.pretrained:  # checked against the class names a transferkit pre-training stored in the file
        net = read_source_file(cfg, data, Path(cfg.pretrained).expanduser(), source.train.class_names,
                                f"{PRETRAINED_FILE}; {SAVE_NETWORK}")
        return net, {"cached": True, "wall_s": 0.0, "path": str(Path(cfg.pretrained).expanduser())}
    net = _initial_source_net(cfg, data)
    train = cfg.pretrain if cfg.pretrain.device == cfg.device else replace(cfg.pretrain, device=cfg.device)
    # the network depends on the torch version, on the thread count and kernels on CPU (the GPU
    # model and CUDA version otherwise) and on the number of data-parallel processes (the order
    # of floating-point sums): one trained otherwise is not reused by a run that could not reproduce it
    device = resolve_device(train.device)
    run = {"torch": torch.__version__}
    if device.type == "cpu":
        run |= {"threads": torch.get_num_threads(), "kernels": cpu_kernels()}
    else:
        run |= {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                "cuda": torch.version.cuda}
    if world_size() > 1:
        run["world"] = world_size()
    # a plugin's builder may change under the same name, or start from weights of its own (a file
    # it loads): its network's definition and initial weights are keyed too. A built-in's initial
    # weights follow from what the key holds (transferkit's version, seed, torch, classes, size)
    definition = {} if is_built_in(cfg.backbone) else {
        "definition": definition_digest(net, builder_of(cfg.backbone)), "init": network_digest(net)}
    key = hashlib.sha256(json.dumps({
        "v": [__version__, PRETRAIN_FORMAT], "code": code_digest(), "source": cfg.source,
        "classes": source.train.class_names,
        "n": len(source.train), "data": [source.train.digest(), source.val.digest()],
        "size": cfg.image_size, "channels": data.channels, "backbone": cfg.backbone,
        "train": keyed_fields(result_neutral_defaults(train)), "seed": cfg.seed, **run, **definition},
        sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "pretrained" / f"{cfg.backbone}-{key}.safetensors"
    # one process (one torchrun group) trains a given network at a time; another run that needs it waits,
    # then reads it
    with pretraining_lock(path.with_suffix(".lock"), lambda holder: log(
            f"waiting for another process that pre-trains the same network ({holder}; {path.with_suffix('.lock')}): "
            f"it is read back once that process ends; a stopped or hung one holds it until it is ended")):
        if path.exists():
            try:
                load_network_file(net, path)
                meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
                check(isinstance(meta, dict), f"{path.with_suffix('.json')} holds no record")
                digest = network_digest(net)
                check(meta.get("digest", digest) == digest,  # records from before: none
                      f"{path} is not the network its record describes (a changed byte?)")
                return net, {**meta, "digest": digest, "cached": True, "path": str(path)}
            except (TransferkitError, OSError, ValueError) as e:  # the network's file or its record
                log(f"pre-trained cache {path.with_suffix('.*')} unreadable or changed ({e}); training again")
                net = _initial_source_net(cfg, data)  # from the initial weights, not from what was loaded
        log(f"pre-training {cfg.backbone} on {cfg.source} ({len(source.train)} images, {cfg.pretrain.steps} steps, "
            f"seed {cfg.seed})")  # a benchmark pre-trains several networks alike but for their seed
        method = SourceOnly(net)
        ckpt = path.with_suffix(".ckpt")  # a killed pre-training resumes from here
        fit = Engine(train, seed=cfg.seed, checkpoint_dir=ckpt, run_name="pre-training", lr_key="pretrain.lr",
                     label=f"the pre-training of {cfg.backbone} on {cfg.source} (method {method.name!r})").fit(
            method, source=source.train, val=source.val)
        meta = {"val_accuracy": fit.val_accuracy, "steps": fit.steps, "wall_s": fit.wall_s,
                "digest": network_digest(net)}
        if fit.diverged:  # not cached: written beside the cache (for this run to pin), never read back from there
            path, meta = path.with_name(f"{path.stem}.diverged{path.suffix}"), {**meta, "diverged": True}
            log(f"the pre-training diverged: its network ({path}) is not cached, so a later run pre-trains again")
        if is_main_process():  # the record first: a network in the cache always has its record, and a write
            write_json(path.with_suffix(".json"), meta)  # that fails leaves the last checkpoint to resume from
            save_network(net, path, source.train.class_names)
            shutil.rmtree(ckpt, ignore_errors=True)
        barrier()
    return net, {**meta, "cached": False, "path": str(path)}


@contextlib.contextmanager
def pretraining_lock(path: Path, on_wait=None, poll_s: float = 0.2):
    """Hold ``path``'s lock while pre-training (or reading) the network it guards. Under
    torchrun the group's rank 0 holds it for its ranks, which wait for the marker it then writes
    (``.held-<id>``, torchrun's id of this launch, or its ``MASTER_PORT``; a marker a killed group
    left is removed by the next rank 0 that takes the lock, and never matches another launch): a
    collective would time out while another run pre-trains, and ranks that went on without the
    lock resumed from another run's live checkpoint, each at its own step (gloo aborted on the
    mismatched collectives). ``on_wait(holder)``: called by the process that finds the lock held,
    before it waits and every few minutes of waiting (:func:`~transferkit.io.waiting_lock`)."""
    if world_size() == 1:
        with waiting_lock(path, on_wait):
            yield
        return
    group = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT", "0")  # torchrun: one per launch
    held = path.with_suffix(f".held-{group}")
    if not is_main_process():
        while not held.exists():
            time.sleep(poll_s)
        barrier()  # with rank 0, which keeps the marker until every rank has seen it
        yield
        return
    with waiting_lock(path, on_wait):
        for stale in path.parent.glob(f"{glob.escape(path.stem)}.held-*"):  # of a killed group: none holds the lock
            stale.unlink(missing_ok=True)
        held.touch()
        try:
            barrier()
            yield
        finally:
            held.unlink(missing_ok=True)


def run_source_network(cfg: ExperimentConfig, data: Prepared, run_dir: Path, log=print, check_digest=None):
    """The run's source network, pinned in its directory (``source.safetensors``: a hard
    link to the cached pre-training, which is only ever replaced, never rewritten, or a copy
    of a ``pretrained:`` file; ``source.json``) the first time and read from there on resume:
    every job of a run starts from the same network, even when a resume would pre-train
    another one (another thread count, a cleared cache) or the ``pretrained:`` file was
    overwritten. ``check_digest(digest)``: called with the network's :func:`~transferkit.networks.network_digest`
    before it is pinned (it may refuse it: nothing is pinned then)."""
    pinned, check_digest = run_dir / "source.safetensors", check_digest or (lambda digest: None)
    if not pinned.exists():
        net, info = pretrain_source(cfg, data, log)
        digest = info.get("digest") or network_digest(net)  # a pretrained: file's network has none yet
        check_digest(digest)
        if is_main_process():
            _drop_checkpoints_of_another_source(run_dir, digest, log)
            meta = {k: info[k] for k in ("val_accuracy", "steps", "wall_s", "diverged") if k in info}
            write_json(pinned.with_suffix(".json"), {**meta, "digest": digest})  # first: a network has its record
            _pin(Path(info["path"]), pinned, link=not cfg.pretrained)
            info = {**info, "path": str(pinned)}
        return net, {**info, "digest": digest}
    net = read_source_file(cfg, data, pinned, hint=_repin_hint(cfg))  # as pretrain_source: the same random state
    record = pinned.with_suffix(".json")
    again = "restore it, or delete it and source.safetensors to pin the source network again"
    meta = read_json(record, "source network record", again) if record.exists() else {}
    check(isinstance(meta, dict), f"{record} is not a source network record (a JSON object): {again}")
    digest = network_digest(net)
    check_digest(digest)
    if meta.get("diverged"):
        warn(f"the source network pinned in {run_dir} is of a pre-training that diverged ({record}: diverged): "
             f"the results of its jobs are not worth reading; lower pretrain.lr and run again under another name")
    return net, {"wall_s": 0.0, **meta, "cached": True, "path": str(pinned), "digest": digest}


def _drop_checkpoints_of_another_source(run_dir: Path, digest: str, log) -> None:
    """Before a source network is pinned again (``source.safetensors`` deleted): the unfinished jobs'
    checkpoints grew from the network pinned before, so they are removed (the jobs start again) unless
    the old record names this same network: without ``source.json`` (deleted too) they are removed, as
    their checkpoints do not name the network they started from."""
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        return
    record = run_dir / "source.json"
    try:
        old = read_json(record).get("digest") if record.exists() else None
    except (TransferkitError, AttributeError):
        old = None
    if old != digest:
        log(f"the unfinished jobs' checkpoints in {checkpoints} grew from the source network pinned before "
            f"({old or 'not recorded'}), not from this one ({digest}): they start again")
        remove_inside(checkpoints, run_dir)


def _repin_hint(cfg: ExperimentConfig) -> str:
    """What to do about a run's unreadable ``source.safetensors``, and when that gives the network back."""
    if cfg.pretrained:
        return (f"delete it and resume to copy the pretrained: file {cfg.pretrained} again (the network the finished "
                f"jobs started from unless that file changed since)")
    return ("delete it and resume to pin the source network again: it is read from the pre-training cache or "
            "pre-trained again from the config and seed, which gives the network the finished jobs started from "
            "under the torch version, device, threads and CPU kernels of the run's kernels.json (a resume notes "
            "others; then start a new run)")


def _pin(src: Path, dst: Path, link: bool) -> None:
    """``dst`` becomes ``src``'s content at once: a hard link (renamed into place; the
    linked file itself is never touched) or, for other file systems and with ``link=False``,
    an atomic copy."""
    if link:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return
        except OSError:  # another file system, or none with hard links
            tmp.unlink(missing_ok=True)
    atomic_write(dst, lambda p: shutil.copyfile(src, p))


#: the package's modules that only present or orchestrate (tables, reports, the command line, benchmarks)
PRESENTATION = ("bench/", "cli.py", "report.py", "tables.py", "plots.py", "compare.py")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """16 hex digits of transferkit's source files that a training runs (every module but
    :data:`PRESENTATION`): a source network pre-trained by other code is not read from the cache."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(PRESENTATION):
            h.update(f"{rel}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


#: TrainConfig fields a pre-training cannot depend on: it trains every unit (source_only), so the
#: engine has no frozen prefix to cache
PRETRAIN_NEUTRAL = {"cache_frozen", "cache_limit_mb"}


def result_neutral_defaults(train: TrainConfig) -> TrainConfig:
    """``train`` (a pre-training's) with the settings that do not change what is trained (progress
    bar, checkpoint interval: ``NOT_RESULTS``; the frozen-prefix cache: :data:`PRETRAIN_NEUTRAL`) at
    their defaults: a cache key that ignores them and stays the key of a config that never set them."""
    neutral = {k.split(".", 1)[1] for k in NOT_RESULTS if k.startswith("train.")} | PRETRAIN_NEUTRAL
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name in neutral}
    return replace(train, **defaults)


def source_only_model(net, data: Prepared, before_narrowing=None) -> SourceOnly:
    """source_only's model, in eval mode: a copy of the source network whose head keeps the
    rows of the target classes (by name), so its logits are ``net(x)[:, rows]``.
    ``before_narrowing(model, rows)`` is called before it keeps them, as in
    :func:`~transferkit.fitting.fit_for_target`."""
    return source_only_of(copy.deepcopy(net), data.source.train.class_names, data.target.train.class_names,
                          before_narrowing)  # a run refused what it cannot match before (check_jobs)
