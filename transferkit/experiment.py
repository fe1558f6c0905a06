"""Run an experiment: pre-train on the source, transfer to the target with each method
over several random label subsets, evaluate on the target test split, write results.

Layout of a run directory ``runs/<name>/<timestamp>/``: ``config.yaml`` (resolved),
``metrics.jsonl`` (every evaluation of every training), ``jobs/*.json`` (one finished
(method, seed) each, written atomically), ``models/*.pt`` (the model each finished job
evaluated, :func:`load_model`), ``checkpoints/`` (engine checkpoints of unfinished jobs),
``results.json`` and ``results.md``, ``kernels.json`` (the torch version, CPU and kernels
the run started with; :func:`~transferkit.runtime.note_kernels`). Passing the directory
again (``run_dir``, ``--resume``) skips finished jobs, runs added methods or repeats, and
continues an interrupted training from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import time
import warnings
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path

import torch
import yaml

from . import __version__
from .backbones import (
    build_backbone,
    definition_digest,
    is_built_in,
)
from .config import (
    ADDED_FIELDS,
    CHOOSES_JOBS,
    CHOOSES_SETTINGS,
    NOT_RESULTS,
    ExperimentConfig,
    dump_config,
    flat_config,
    from_dict,
    load_config,
)
from .engine import Engine, TrainConfig, keyed_fields
from .errors import JobsFailed, TransferkitError, TransferkitWarning, check, is_whole, warn
from .fitting import (
    all_source_classes_fields,
    evaluate_on,
    fit_for_target,
    report_seen_unseen,
    source_only_of,
)
from .io import (
    MATRIX_FILES,
    atomic_write,
    cache_dir,
    check_job_name,
    directory_lock,
    read_job,
    read_json,
    waiting_lock,
    write_json,
    write_text,
)
from .methods import get_method
from .methods.base import resolved_options, trained_options
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
from .preflight import check_names, check_settings, warn_pretrain_unused
from .results import RESULT_FILES, ROW_KEYS, unfinished_hint, write_results
from .rundata import (
    Prepared,
    class_fields,
    job_method,
    label_subset,
    prepare_domains,
    process_domains,
    selection_domain,
    test_fields,
    training_fields,
)
from .runtime import (
    JobFailure,
    barrier,
    cpu_kernels,
    failures_message,
    guarded,
    held_benchmark_dir,
    invocation,
    is_main_process,
    job_threads,
    map_jobs,
    note_kernels,
    note_work_dir,
    peak_memory,
    preload_lazy_imports,
    resolve_device,
    save_failure,
    worker_threads,
    world_size,
)

PRETRAIN_FORMAT = 2  # 2: the network's initial weights come from cfg.seed


def _initial_source_net(cfg: ExperimentConfig, data: Prepared, head: str = "linear"):
    """The source network's initial weights; ``head``: the kind of head a network file holds
    (:func:`~transferkit.networks.head_kind`: a cosine or prototype head that finetune_cosine / _proto trained)."""
    torch.manual_seed(cfg.seed)  # the initial weights; PyTorch 2.13 seeds each process at random
    return build_backbone(cfg.backbone, num_classes=data.source.train.num_classes, in_channels=data.channels,
                          image_size=cfg.image_size, head=head)


def _read_source_file(cfg: ExperimentConfig, data: Prepared, path: Path, classes=None, hint: str = ""):
    """The network of a source network file (a ``pretrained:`` file, a run's pinned copy), built
    with the head the file holds."""
    read = read_network_file(path, hint)
    net = _initial_source_net(cfg, data, head_kind(read[0]))
    load_network_file(net, path, classes=classes, hint=hint, read=read)
    restore_head(net, read[1])
    return net


def pretrain_source(cfg: ExperimentConfig, data: Prepared, log=print):
    """Pre-train the backbone on the labelled source (cached on disk by content key: data,
    backbone (a plugin's: its network's definition and initial weights too), budget, seed,
    device, the torch thread count and kernels on CPU and the number of data-parallel processes).

    Returns ``(net, info)`` where ``info`` has the source validation accuracy, wall
    seconds, whether the network came from the cache and (unless it is a ``pretrained:``
    file's) its :func:`~transferkit.networks.network_digest`."""
    source = data.source
    if cfg.pretrained:  # checked against the class names a transferkit pre-training stored in the file
        net = _read_source_file(cfg, data, Path(cfg.pretrained).expanduser(), source.train.class_names,
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
    definition = {} if is_built_in(cfg.backbone) else {"definition": definition_digest(net),
                                                       "init": network_digest(net)}
    key = hashlib.sha256(json.dumps({
        "v": [__version__, PRETRAIN_FORMAT], "code": code_digest(), "source": cfg.source,
        "classes": source.train.class_names,
        "n": len(source.train), "data": [source.train.digest(), source.val.digest()],
        "size": cfg.image_size, "channels": data.channels, "backbone": cfg.backbone,
        "train": keyed_fields(_result_neutral_defaults(train)), "seed": cfg.seed, **run, **definition},
        sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "pretrained" / f"{cfg.backbone}-{key}.safetensors"
    # one process trains a given network at a time; another run that needs it waits, then reads it
    # (not under torchrun, whose ranks train it together)
    with waiting_lock(path.with_suffix(".lock")) if world_size() == 1 else contextlib.nullcontext():
        if path.exists():
            try:
                load_network_file(net, path)
                meta = json.loads(path.with_suffix(".json").read_text())
                check(isinstance(meta, dict), f"{path.with_suffix('.json')} holds no record")
                digest = network_digest(net)
                check(meta.get("digest", digest) == digest,  # records from before: none
                      f"{path} is not the network its record describes (a changed byte?)")
                return net, {**meta, "digest": digest, "cached": True, "path": str(path)}
            except (TransferkitError, OSError, ValueError) as e:  # the network's file or its record
                log(f"pre-trained cache {path.with_suffix('.*')} unreadable or changed ({e}); training again")
                net = _initial_source_net(cfg, data)  # from the initial weights, not from what was loaded
        log(f"pre-training {cfg.backbone} on {cfg.source} ({len(source.train)} images, {cfg.pretrain.steps} steps)")
        method = SourceOnly(net)
        ckpt = path.with_suffix(".ckpt")  # a killed pre-training resumes from here
        fit = Engine(train, seed=cfg.seed, checkpoint_dir=ckpt).fit(method, source=source.train, val=source.val)
        meta = {"val_accuracy": fit.val_accuracy, "steps": fit.steps, "wall_s": fit.wall_s,
                "digest": network_digest(net)}
        if is_main_process():
            save_network(net, path, source.train.class_names)
            write_json(path.with_suffix(".json"), meta)
            shutil.rmtree(ckpt, ignore_errors=True)
        barrier()
    return net, {**meta, "cached": False, "path": str(path)}


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
            meta = {k: info[k] for k in ("val_accuracy", "steps", "wall_s") if k in info}
            write_json(pinned.with_suffix(".json"), {**meta, "digest": digest})  # first: a network has its record
            _pin(Path(info["path"]), pinned, link=not cfg.pretrained)
            info = {**info, "path": str(pinned)}
        return net, {**info, "digest": digest}
    net = _read_source_file(cfg, data, pinned, hint=_repin_hint(cfg))  # as pretrain_source: the same random state
    record = pinned.with_suffix(".json")
    again = "restore it, or delete it and source.safetensors to pin the source network again"
    meta = read_json(record, "source network record", again) if record.exists() else {}
    check(isinstance(meta, dict), f"{record} is not a source network record (a JSON object): {again}")
    digest = network_digest(net)
    check_digest(digest)
    return net, {"wall_s": 0.0, **meta, "cached": True, "path": str(pinned), "digest": digest}


def _drop_checkpoints_of_another_source(run_dir: Path, digest: str, log) -> None:
    """Before a source network is pinned again (``source.safetensors`` deleted): the unfinished jobs'
    checkpoints grew from the network pinned before, so they are removed (the jobs start again) unless
    the old record names this same network."""
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
        shutil.rmtree(checkpoints, ignore_errors=True)


def job_environment(source_digest: str | None, trained: bool = True) -> dict:
    """What a row records of where it was computed, besides ``world_size``: the torch threads
    of its process (``trained``: a job that trains; source_only's row only evaluates the source
    network, in the main process), the CPU kernels, the source network it started from
    (``None``: none) and the :func:`~transferkit.runtime.invocation` that computed it."""
    k = cpu_kernels()
    return {**({"threads": torch.get_num_threads()} if trained else {}), "world_size": world_size(),
            "kernels": f"{k['cpu_capability']} (MKL_CBWR {k['mkl_cbwr']}, oneDNN {k['onednn_max_cpu_isa']})",
            **({"source_digest": source_digest} if source_digest else {}), "invocation": invocation()}


def _made_otherwise(finished: dict, key: str, now) -> list[tuple[str, int]]:
    """The ``(method, seed)`` of the finished rows whose ``key`` is not ``now``; a row without
    ``key`` (written before it was recorded) is not counted."""
    return sorted(job for job, row in finished.items() if row.get(key, now) != now)


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


def _check_same_source(run_dir: Path, finished: dict, digest: str) -> None:
    """Refuse to add rows from another source network than the finished rows started from (a
    deleted ``source.safetensors`` pre-trained again under other threads or kernels); rows
    without ``source_digest`` (written before it was recorded) are not checked."""
    other = [f"{name} seed {seed}" for name, seed in _made_otherwise(finished, "source_digest", digest)]
    check(not other, f"{run_dir}: {len(other)} finished job(s) ({', '.join(other[:5])}) started from another "
                     f"source network than this resume has ({digest}; source.safetensors was made again, under other "
                     f"threads, CPU kernels or torch than kernels.json records, or by a plugin backbone's builder "
                     f"that changed since?): their rows and new ones would not go together; restore "
                     f"source.safetensors, resume under the environment of kernels.json, or start a new run (or "
                     f"delete those job files to run them again)")


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


#: ``data.json``'s format: 2 adds class names and groups to each split's digest
DATA_FORMAT = 2


def _splits(data: Prepared) -> dict:
    """``{"source.train": domain, ...}``: the six splits of a run."""
    splits = {f"{side}.{part}": getattr(getattr(data, side), part)
              for side in ("source", "target") for part in ("train", "val", "test")}
    return splits if data.unlabeled is None else {**splits, "unlabeled": data.unlabeled}


def data_digests(data: Prepared) -> dict:
    """Content digests of the run's splits: images, labels, class names and groups; with a
    folder, the version of its label draws (:data:`FOLDER_LABEL_DRAWS`)."""
    out: dict = {"format": DATA_FORMAT}
    for key, d in _splits(data).items():
        h = hashlib.sha256(f"{d.digest()}|{json.dumps(list(d.class_names))}".encode())
        if d.groups is not None:
            h.update(d.groups.detach().cpu().contiguous().numpy().data)
        out[key] = h.hexdigest()[:16]
        if key.startswith("target.") and str(d.provenance.get("origin", "")).startswith("folder:"):
            out["folder_label_draws"] = FOLDER_LABEL_DRAWS  # the labels drawn from a target folder
    return out


#: how a folder's k / ratio label subsets are drawn: 2 since 2026-12-02 10:00 UTC (keys mixed otherwise
#: than the split's; videos by their sub-folders): a folder run made before cannot resume with other subsets
FOLDER_LABEL_DRAWS = 2


def _check_same_data(run_dir: Path, data: Prepared, main: bool) -> None:
    """A run directory's rows are kept only while the data is what they were computed on (a
    ``folder:`` / ``npz:`` domain may change under the same config); ``data.json`` records
    it. Without rows, new data is recorded and a source network pinned for the old one is
    dropped."""
    path, now = run_dir / "data.json", data_digests(data)
    sizes = {key: len(d) for key, d in _splits(data).items()}  # for the message: not compared
    then = read_json(path, "data.json", "restore it, or start a new run") if path.exists() else None
    check(then is None or isinstance(then, dict), f"{path} is not a data record (not a mapping): restore it, or start "
                                                  f"a new run")
    stored = then
    old_sizes = (then or {}).get("sizes") if isinstance((then or {}).get("sizes"), dict) else {}
    then = None if then is None else {k: v for k, v in then.items() if k != "sizes"}
    if then is not None and "format" not in then:  # format 1 (2026-11-29): images and labels only
        old = {key: d.digest() for key, d in _splits(data).items()}
        then = now if then == old else then
    rows = (run_dir / "jobs").is_dir() and any((run_dir / "jobs").glob("*.json"))
    changed = set() if then is None else {k for k in set(then) | set(now) if then.get(k) != now.get(k)}
    unlabelled_only = changed == {"unlabeled"}
    if rows and unlabelled_only and not _rows_read_unlabelled(run_dir):
        rows = False  # only unlabelled images changed, and no finished job read them: its rows stand
    if then is None or then == now:
        if main and stored != {**now, "sizes": sizes}:
            write_json(path, {**now, "sizes": sizes})
        return
    diff = sorted(changed - {"format"})
    check(not rows or diff != ["folder_label_draws"],
          f"{run_dir} was made before 2026-12-02 10:00 UTC, since when a target folder's label subsets (k, ratio) "
          f"are drawn otherwise: its unfinished jobs would train on other labelled images than its finished ones; "
          f"start a new run")
    splits = _splits(data)
    origins = [str(splits[k].provenance.get("origin", "")) for k in diff if k in splits]
    built = any(not o.startswith(("folder:", "npz:")) for o in origins)
    folder = any(o.startswith("folder:") for o in origins)
    counted = [f"{k}: {old_sizes[k]:,} images there, {sizes[k]:,} now" for k in diff
               if k in sizes and isinstance(old_sizes.get(k), int) and old_sizes[k] != sizes[k]]
    check(not rows, f"{run_dir} holds results computed on other data: the images, labels, class names or group ids "
                    f"of {', '.join(diff)} changed since" + (f" ({'; '.join(counted)})" if counted else "")
                    + "; restore them, or start a new run"
                    + (" (built-in domains are rendered under the CPU kernels in force: resume with those of the "
                       "run's kernels.json, e.g. --portable-kernels)" if built else "")
                    + (" (if the folder's files did not change: since 2026-12-02 a folder's split and label subsets "
                       "place each file by a hash of its path, and class names are compared in one Unicode form, so "
                       "a folder run made before then was cut otherwise and cannot resume)" if folder else "")
                    + (" (folder_label_draws: since 2026-12-02 10:00 UTC a target folder's label subsets are drawn "
                       "otherwise, so a folder run made before then would give its unfinished jobs other labelled "
                       "images than its finished ones)" if "folder_label_draws" in diff else ""))
    if main:  # what was made from the old data: its source network and the checkpoints of unfinished jobs
        for name in ("source.safetensors", "source.json") if not unlabelled_only else ():  # no source image changed
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        write_json(path, {**now, "sizes": sizes})


def _rows_read_unlabelled(run_dir: Path) -> bool:
    """Whether a finished job of ``run_dir`` trained on unlabelled images (its method reads the
    ``unlabeled`` stream), or a job file cannot say (unreadable, or a method not known here)."""
    for job in (run_dir / "jobs").glob("*.json"):
        try:
            if "unlabeled" in get_method(read_job(job, ("method",))["method"]).streams:
                return True
        except (TransferkitError, KeyError):
            return True
    return False


def source_only_model(net, data: Prepared, before_narrowing=None) -> SourceOnly:
    """source_only's model, in eval mode: a copy of the source network whose head keeps the
    rows of the target classes (by name), so its logits are ``net(x)[:, rows]``.
    ``before_narrowing(model, rows)`` is called before it keeps them, as in
    :func:`~transferkit.fitting.fit_for_target`."""
    return source_only_of(copy.deepcopy(net), data.source.train.class_names, data.target.train.class_names,
                          before_narrowing)  # a run refused what it cannot match before (check_jobs)


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """A fresh ``out_dir/name/<timestamp>``; under torch.distributed every rank gets rank 0's."""
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S-%f")]
    if world_size() > 1:
        torch.distributed.broadcast_object_list(stamp, src=0)
    return Path(cfg.out_dir).expanduser() / cfg.name / stamp[0]


def job_path(run_dir: Path, cfg: ExperimentConfig, method: str, seed: int) -> Path:
    return Path(run_dir) / "jobs" / f"{method}-{cfg.setting}-s{seed}.json"


def model_path(run_dir: Path, cfg: ExperimentConfig, method: str, seed: int) -> Path:
    return Path(run_dir) / "models" / f"{method}-{cfg.setting}-s{seed}.pt"


def save_model(path: Path, method) -> None:
    """The trained method object as it was evaluated (``torch.save``), atomically."""
    data = _model_bytes(method)
    atomic_write(path, lambda p: p.write_bytes(data))


def _model_bytes(method) -> memoryview:
    """``torch.save``'s file of ``method``, in memory: pickling fails here, writing with the disk."""
    buf = io.BytesIO()
    torch.save(method, buf)
    return buf.getbuffer()


def load_model(run_dir: str | Path, method: str, seed: int | None = None, setting: str | None = None):
    """The model that job (``method``, ``seed``) of a ``transferkit run`` evaluated, in eval
    mode: ``model.logits(images)`` gives target-class logits (the images checked, in chunks;
    ``model(images)`` runs one unchecked batch), column ``i`` for ``model.classes_[i]``
    (the class names of the job's result row; ``seed``: the config's first by default;
    ``setting``: ``"k=5"``, which a run of a list ``k`` or ``ratio`` needs). The
    file is a pickle (``torch.load(weights_only=False)``): load only run directories you trust."""
    run_dir = Path(run_dir)
    check((run_dir / "config.yaml").is_file(), f"{run_dir} is not a run directory (no config.yaml)"
                                               f"{unfinished_hint(run_dir)}")
    name = get_method(method).name
    cfg = _setting_of(load_config(run_dir / "config.yaml"), setting, run_dir, name == "source_only")
    check(seed is None or is_whole(seed), f"seed must be a whole number (a job's label-subset seed), got {seed!r}")
    seed = cfg.seed if seed is None else int(seed)
    path = model_path(run_dir, cfg, name, seed)
    if not path.is_file():
        saved = sorted(p.stem for p in (run_dir / "models").glob(f"*-{cfg.setting}-s*.pt"))
        listed = ", ".join(saved[:12]) + (f" and {len(saved) - 12} more" if len(saved) > 12 else "")
        why = ""
        if name == "source_only" and seed != cfg.seed:
            why = f" (source_only runs once, as seed {cfg.seed}: its row does not depend on the label subset)"
        elif name == "source_only" and job_path(run_dir, cfg, name, seed).is_file():
            why = (" (older versions of transferkit saved no source_only model, and a model that does not pickle "
                   "is not saved: delete its job file and resume to save one; its network is also the run's "
                   "source.safetensors)")
        raise TransferkitError(f"{path} does not exist: {run_dir} has no finished {name} job of seed {seed} with a "
                               f"saved model{why}; its saved models (method-setting-seed): {listed or 'none'}")
    try:
        model = torch.load(path, weights_only=False, map_location="cpu")
    except (EOFError, pickle.UnpicklingError, RuntimeError, KeyError) as e:  # torn (a cut zip archive), zeroed
        # (a zip without its records: KeyError 'storages') or not a model file
        if isinstance(e, RuntimeError) and "zip archive" not in str(e) and "PytorchStreamReader" not in str(e):
            raise
        if isinstance(e, KeyError) and "storages" not in str(e):  # a method's own unpickling
            raise
        raise TransferkitError(f"model {path} is unreadable ({type(e).__name__}: {e}): run the job again "
                               f"(delete its job file and resume)") from e
    except OSError as e:  # a file cut short inside its archive reads as [Errno 22] Invalid argument
        raise TransferkitError(f"model {path} cannot be read ({e}): if it is cut short or damaged, run the job "
                               f"again (delete its job file and resume)") from e
    except (ImportError, AttributeError) as e:  # e.g. a plugin's method whose module is not importable here
        raise TransferkitError(f"model {path} needs code that is not available here ({e}); for a plugin "
                               f"method, name its module in TRANSFERKIT_PLUGINS") from e
    row = job_path(run_dir, cfg, name, seed)
    if row.is_file():
        model.classes_ = list(read_job(row, ("class_names",))["class_names"])
    else:  # saved, then stopped before its row: the job did not finish (a resume trains it again)
        known = getattr(model, "classes_", None)  # a model file saved since 2026-12-02 holds them
        what = "the job did not finish" if known else "the model's classes_ are not known"
        warn(f"{row} does not exist: the job stopped after saving {path.name} and before its result "
             f"row, so {what} (a resume trains the job again)")
    return model.eval()


def _setting_of(cfg: ExperimentConfig, setting: str | None, run_dir: Path, any_one: bool = False) -> ExperimentConfig:
    """The config of one ``setting`` (``"k=5"``) of a run's ``cfg`` (one per value of a list
    ``k`` or ``ratio``); ``None``: its only one, or its first with ``any_one`` (source_only's
    model is the same in every setting)."""
    subs = {sub.setting: sub for sub in cfg.settings()}
    if setting is None and any_one:
        return next(iter(subs.values()))
    if setting is None:
        check(len(subs) == 1, f"{run_dir} ran the settings {', '.join(subs)}: say which, e.g. "
                              f"setting='{next(iter(subs))}'")
        return next(iter(subs.values()))
    setting = str(setting).replace(" ", "")
    if setting in subs:
        return subs[setting]
    dropped = re.fullmatch(r"(k|ratio)=(\d+)", setting)  # a setting a resume left out: its models stay
    check(dropped is not None and any((Path(run_dir) / "models").glob(f"*-{setting}-s*.pt")),
          f"{run_dir} has no setting {setting!r}: it ran {', '.join(subs)}")
    key, value = dropped.groups()
    return replace(cfg, **{"k": None, "ratio": None, key: int(value)})


def trained_before(checkpoints: Path) -> tuple[float, set[int]]:
    """The seconds the stages of a job trained before it stopped and the torch thread counts
    they trained with, as its checkpoints record them (``trained_s``, 0 for checkpoints from
    before 2026-12-02; ``threads``, none before 2026-12-04): a resumed job's ``wall_s`` counts
    the seconds, and its row names threads other than its own."""
    total, threads = 0.0, set()
    for meta in sorted(checkpoints.glob("*/last.json")) if checkpoints.is_dir() else ():
        try:
            state = read_json(meta).get("state") or {}
            total += float(state.get("trained_s") or 0.0)
            threads |= {int(t) for t in state.get("threads") or ()}
        except (TransferkitError, AttributeError, TypeError, ValueError):  # unreadable: the engine names it
            continue
    return total, threads


def run_job(cfg: ExperimentConfig, data: Prepared, source_net, run_dir: Path, cls, seed: int,
            source_digest: str | None = None) -> dict:
    """Train and evaluate one (method, label subset) job; write its row atomically.

    ``source_net()`` returns a fresh copy of the source network; it draws no random
    numbers, so a job gives the same row in the main process and in a worker process.
    ``source_digest``: that network's :func:`~transferkit.networks.network_digest`, recorded in the row."""
    job = job_path(run_dir, cfg, cls.name, seed)
    with warnings.catch_warnings():  # check_jobs drew every label subset and showed their warnings once
        warnings.simplefilter("ignore", TransferkitWarning)
        labeled, unlabeled = label_subset(cfg, data.target, seed, data.unlabeled)
    before_s, before_threads = trained_before(run_dir / "checkpoints" / job.stem)  # a job resumed midway
    t0 = time.perf_counter() - before_s
    with peak_memory(device=cfg.device) as memory:
        net = source_net() if cls.needs_pretrained else None
        torch.manual_seed(seed)
        if net is None:
            net = build_backbone(cfg.backbone, num_classes=data.source.train.num_classes,
                                 in_channels=data.channels, image_size=cfg.image_size)
        with warnings.catch_warnings():  # check_jobs built it with these options and showed its warnings
            warnings.simplefilter("ignore", TransferkitWarning)
            method = job_method(cfg, data, cls, net)

        def make_engine(tag, config=None):
            train = config or cfg.train
            if train.device != cfg.device:
                train = replace(train, device=cfg.device)
            return Engine(train, seed=seed, metrics_path=run_dir / "metrics.jsonl", select_metric=cfg.select_metric,
                          checkpoint_dir=run_dir / "checkpoints" / job.stem / tag,
                          tensorboard_dir=run_dir / "tensorboard" / job.stem / tag, run_name=f"{job.stem}/{tag}")

        every = {}  # partial DA: the argmax over every source class as well
        val = selection_domain(cfg, data, cls)
        fit = fit_for_target(method, make_engine, data.source.train.class_names, data.target.train.class_names,
                             lambda m, rows: every.update(all_source_classes_fields(m, rows, data.target.test)),
                             source=data.source.train if cfg.source is not None else None, target=labeled,
                             unlabeled=unlabeled, val=val)
        report = evaluate_on(method, data.target.test)
        measured = method.test_results(data.target.test)  # e.g. tap's accuracy of every unit
    selected = val is not None and fit.best_val_accuracy is not None  # weights chosen on a validation split
    row = {"method": cls.name, "source": cfg.source_label, "target": cfg.target, "setting": cfg.setting, "seed": seed,
           "accuracy": report["accuracy"], "wall_s": time.perf_counter() - t0, "val_accuracy": fit.val_accuracy,
           "steps": fit.steps, "best_step": fit.best_step,
           **({"select_metric": cfg.select_metric} if cfg.select_metric != "accuracy" else {}),
           **({"select_on": cfg.select_on} if cfg.select_on != "target_val" and selected else {}),  # the source's
           **(training_fields(cfg.train) if fit.steps > 0 else {}), **class_fields(cfg),
           **({"n_val_labeled": len(val)} if selected and val is data.target.val and cls.selects_on_validation
              else {}),
           "n_labeled": len(labeled) if "target" in cls.streams else 0, **memory,
           **test_fields(cfg, data),
           **({"n_unlabeled": len(unlabeled)} if "unlabeled" in cls.streams else {}),
           **({"unlabeled": cfg.unlabeled, "unlabeled_in_test": data.unlabeled_overlap.get("test", 0),
               "unlabeled_in_val": data.unlabeled_overlap.get("val", 0)}
              if data.unlabeled is not None and "unlabeled" in cls.streams else {}),
           "config_digest": job_digest(cfg, cls.name), **every,
           "method_options": resolved_options(cls, cfg.options.get(cls.name, {})),
           **job_environment(source_digest if cls.needs_pretrained else None), **method.extra_results(),
           **({"threads_before_resume": sorted(before_threads)}
              if fit.steps > 0 and before_threads - {torch.get_num_threads()} else {}),
           **measured}
    if is_main_process():  # before the row: a job counts as finished once its row exists
        method.classes_ = list(data.target.test.class_names)  # in the file too: a model copied out knows them
        _save_evaluated(model_path(run_dir, cfg, cls.name, seed), method, job.stem)
    row = _finish_row(job, row, report, data.target.test.class_names, _seen_classes(data))
    if is_main_process():  # checkpoints only serve resuming an unfinished job; models/ keeps what was evaluated
        shutil.rmtree(run_dir / "checkpoints" / job.stem, ignore_errors=True)
    return row


def _save_evaluated(path: Path, method, job: str) -> None:
    """:func:`save_model`, or a warning: a model that does not pickle (a user's method or
    backbone) must not cost the job's result. Writing it is not excused: a full disk fails the
    job before its row (a resume trains it again) and stops the run."""
    try:
        data = _model_bytes(method)
    except Exception as e:
        path.unlink(missing_ok=True)  # not an older run's model
        warn(f"{job}: the trained model is not saved ({type(e).__name__}: {e})")
        return
    atomic_write(path, lambda p: p.write_bytes(data))


def _seen_classes(data: Prepared) -> list[str]:
    """The source classes with training images (without source images, ``source: null``, the
    network's classes): a target class among them is seen."""
    train = data.source.train
    return list(train.class_names) if len(train) == 0 else [train.class_names[i] for i in train.present_classes()]


def _finish_row(job: Path, row: dict, report: dict, class_names: list[str], seen: list[str] = ()) -> dict:
    row["class_names"] = list(class_names)  # what the per-class accuracies and confusion rows are
    row["per_class_accuracy"] = report["per_class_accuracy"]
    row["balanced_accuracy"] = report["balanced_accuracy"]
    row.update(report_seen_unseen(report, class_names, seen))
    row["confusion"] = report["confusion"]
    if "group_accuracy" in report:
        row["group_accuracy"] = report["group_accuracy"]
    row.pop("measured_s", None)
    if is_main_process():
        write_json(job, row)
    return row


def _worker_job(cfg_dict: dict, run_dir: str, method: str, seed: int, source_path: str | None,
                source_digest: str | None = None):
    """Entry point of a worker process: the data (see :func:`~transferkit.rundata.process_domains`) and one job."""
    cfg = from_dict(ExperimentConfig, cfg_dict)
    data = process_domains(cfg, Path(run_dir))
    cls = get_method(method)

    def source_net():
        return _read_source_file(cfg, data, Path(source_path))
    return run_job(cfg, data, source_net, Path(run_dir), cls, seed, source_digest)


def run_experiment(cfg: ExperimentConfig, run_dir: Path | None = None, log=print) -> tuple[Path, list[dict]]:
    """Run every (method, repeat) job of ``cfg``; return the run directory and the rows.

    Passing an existing ``run_dir`` resumes it: finished jobs are read back, not re-run.
    With ``cfg.workers > 1`` the jobs run in that many worker processes (each row is
    written as soon as its job ends); under ``torchrun`` every rank runs every job
    data-parallel and rank 0 writes the files. The caller's global CPU random state is as it was
    before (as after :meth:`Transfer.fit`)."""
    methods = check_names(cfg, run_dir)
    resolve_device(cfg.device)  # CUDA or MPS that is not there: refused now, not after the data loaded
    main = is_main_process()
    if cfg.pretrained is not None and main:
        warn_pretrain_unused(cfg)
    log = log if main else (lambda *a, **k: None)
    run_dir_given = bool(run_dir)
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
    fresh = main and not run_dir.exists()
    parent_fresh = fresh and not run_dir.parent.exists()
    preload_lazy_imports()
    if main:
        _make_run_dir(run_dir, None if run_dir_given else cfg.out_dir)
    try:  # the caller's CPU RNG is left as it was (each job seeds its own; CUDA's is not touched: no CUDA init here)
        with directory_lock(run_dir) if main else contextlib.nullcontext(), torch.random.fork_rng(devices=[]):
            rows = _run_jobs_of(cfg, run_dir, methods, main, log)
    except BaseException:  # refused, failed or interrupted (Ctrl-C) before any job finished: leave nothing
        if fresh:
            _remove_if_unused(run_dir, parent_fresh)
        raise
    barrier()
    return run_dir, rows


def _make_run_dir(run_dir: Path, out_dir: str | None) -> None:
    """Make ``run_dir`` (in ``out_dir``, the config's, unless the directory was given), or a
    named error: the file system's alone names neither the setting nor what to do."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        there = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
        why = f"{there} is a file, not a directory" if there is not None and not there.is_dir() else (
            f"{e.strerror or e}{f': {e.filename}' if e.filename and str(e.filename) != str(run_dir) else ''}")
        where = f"out_dir {out_dir!r}: " if out_dir is not None else ""
        fix = ("set out_dir to a directory you can write to, or to a path where one can be made (--set out_dir=DIR)"
               if out_dir is not None else "give a directory you can write to, or a path where one can be made")
        raise TransferkitError(f"{where}cannot make the run directory {run_dir} ({why}); {fix}") from e


def _remove_if_unused(run_dir: Path, parent_too: bool = False) -> None:
    """Remove a run directory that this run made and that holds nothing but its config (the
    run was refused before any job), and its parent (``out_dir/NAME``) when this run made it
    too and it is empty: empty directories would break ``report runs/NAME/*``."""
    jobs = run_dir / "jobs"
    names = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if names <= {"config.yaml", "jobs", "data.json", "source.safetensors", "source.json", "kernels.json"} and not (
            jobs.is_dir() and any(jobs.iterdir())):
        shutil.rmtree(run_dir, ignore_errors=True)
        if parent_too:
            try:
                run_dir.parent.rmdir()
            except OSError:  # not empty
                pass


def _run_jobs_of(cfg: ExperimentConfig, run_dir: Path, methods: list, main: bool, log) -> list[dict]:
    """The body of :func:`run_experiment` in its run directory: every job's row, in job order
    (setting by setting: one per value of a list ``k`` or ``ratio``, on one source network)."""
    old = run_dir / "config.yaml"
    stored = _check_same_config(old, cfg) if old.exists() else None
    data = prepare_domains(cfg, run_dir=run_dir)
    subs = cfg.settings()
    check_settings(subs, data, methods)
    jobs = [(sub, cls, seed) for sub in subs for cls, seed in _jobs_of(sub, methods)]
    finished = {sub.setting: _finished_rows(sub, run_dir, _jobs_of(sub, methods), stored) for sub in subs}
    _check_same_data(run_dir, data, main)  # first: it drops the checkpoints of changed data
    for sub in subs:
        _check_unfinished_checkpoints(sub, run_dir, _jobs_of(sub, methods), finished[sub.setting], stored)
    every_finished = {(name, seed if len(subs) == 1 else f"{seed} ({setting})"): row
                      for setting, rows in finished.items() for (name, seed), row in rows.items()}
    barrier()  # every rank sees what rank 0 kept of the source network and checkpoints
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    before = old.read_text() if old.exists() else None
    if main:  # only now: a refused resume leaves the run's config as it was (and so does a refused source)
        placed = {k: stored[k] for k in ("name", "out_dir") if isinstance((stored or {}).get(k), str)}
        inside = run_dir.resolve().is_relative_to(Path(cfg.out_dir).expanduser().resolve())  # a moved benchmark's
        moved = {k: v for k, v in placed.items() if getattr(cfg, k) != v and not (k == "out_dir" and inside)}
        if moved:  # they name where a new run goes: a resumed one stays where it is
            warn(f"{', '.join(f'{k}: {getattr(cfg, k)!r}' for k in moved)} not used: a resumed run stays in "
                 f"{run_dir} (its config keeps {', '.join(f'{k}: {v!r}' for k, v in moved.items())}); they name "
                 f"where a new run goes")
        write_text(old, dump_config(replace(cfg, **placed)))  # where the run was made: a resume names its directory
        note_kernels(run_dir, log, cfg.workers)
    log(f"run directory: {run_dir}")
    note_work_dir(run_dir)
    if cfg.workers > 1 and world_size() == 1 and job_threads(cfg.workers) != torch.get_num_threads():
        log(f"note: {cfg.workers} workers of {job_threads(cfg.workers)} torch thread(s) each (OMP_NUM_THREADS is "
            f"not set: the cores split between them), one process here has {torch.get_num_threads()}: results "
            f"depend on the thread count, so set OMP_NUM_THREADS for rows that do not depend on --workers")
    source = (f"source {cfg.source}: {len(data.source.train)} train / {len(data.source.val)} val"
              if cfg.source is not None else
              f"source: the network of {cfg.pretrained} alone ({data.source.train.num_classes} classes)")
    log(f"{source}; target {cfg.target}: {len(data.target.train)} train / {len(data.target.val)} val / "
        f"{len(data.target.test)} test{f' (test {cfg.test})' if cfg.test is not None else ''}"
        f"{f'; unlabeled {cfg.unlabeled}: {len(data.unlabeled)} images' if data.unlabeled is not None else ''}; "
        f"{data.channels} channel(s), {cfg.image_size} px")
    pretrained, pre_info = None, {}
    if any((cls.needs_pretrained or cls is SourceOnly) and (cls.name, seed) not in finished[sub.setting]
           for sub, cls, seed in jobs):
        try:
            pretrained, pre_info = run_source_network(cfg, data, run_dir, log, lambda digest: _check_same_source(
                run_dir, every_finished, digest))
        except TransferkitError:
            if main and before is not None:
                write_text(old, before)
            raise
        val_acc = pre_info.get("val_accuracy")
        log(f"source network: from the pretrained file {cfg.pretrained}" if cfg.pretrained else
            f"source network: source val accuracy {'n/a' if val_acc is None else f'{100 * val_acc:.1f}%'}, "
            f"{pre_info['wall_s']:.1f}s{' (cached)' if pre_info['cached'] else ''}")
    rows, todo, order = [], [], {}
    for sub, cls, seed in jobs:
        job = job_path(run_dir, sub, cls.name, seed)
        order[(sub.setting, cls.name, seed)] = len(order)
        if (cls.name, seed) in finished[sub.setting]:
            rows.append(finished[sub.setting][cls.name, seed])
        elif cls is SourceOnly:
            every = {}  # partial DA: the argmax over every source class as well
            model = source_only_model(pretrained, data, lambda m, rows, every=every: every.update(
                all_source_classes_fields(m, rows, data.target.test)))
            report = evaluate_on(model, data.target.test)
            row = {"method": cls.name, "source": cfg.source_label, "target": cfg.target, "setting": sub.setting,
                   "seed": cfg.seed, "accuracy": report["accuracy"], "wall_s": pre_info["wall_s"], "n_labeled": 0,
                   "pretrain_cached": None if cfg.pretrained else pre_info["cached"],
                   "source_val_accuracy": pre_info.get("val_accuracy"),
                   **test_fields(cfg, data), **({} if cfg.pretrained else training_fields(cfg.pretrain)),
                   **class_fields(cfg),
                   "config_digest": job_digest(sub, cls.name), **every,
                   **job_environment(pre_info.get("digest"), trained=False)}
            if main:  # before the row, as run_job: load_model / Transfer.from_run read it
                model.classes_ = list(data.target.test.class_names)
                _save_evaluated(model_path(run_dir, sub, cls.name, cfg.seed), model, job.stem)
            del model  # a network's copy: not held through the jobs that follow (their peak memory)
            rows.append(_log_row(log, len(subs) > 1, _finish_row(job, row, report, data.target.test.class_names,
                                                  _seen_classes(data))))
        else:
            todo.append((sub, cls, seed))
    if main and todo:  # an older results.json would call the run finished while these run (or after a stop)
        for name in RESULT_FILES:
            (run_dir / name).unlink(missing_ok=True)
    failures: list = []
    if cfg.workers > 1 and len(todo) > 1 and world_size() == 1:
        rows += _run_in_workers(cfg, run_dir, todo, pre_info, log, failures)
    else:  # with a worker's thread count: the one job a resumed run has left computes what a worker did
        with worker_threads(cfg.workers if world_size() == 1 else 1):
            for sub, cls, seed in todo:
                result = guarded(run_job, sub, data, lambda: copy.deepcopy(pretrained), run_dir, cls, seed,
                                 pre_info.get("digest"))
                rows += _job_done(sub, run_dir, cls.name, seed, result, failures, log, len(subs) > 1)
    rows.sort(key=lambda row: order[(row["setting"], row["method"], row["seed"])])  # job order, resumed or not
    if main:
        failed = [{"job": f.job, "error": f.error, "traceback": str(Path(f.path).relative_to(run_dir))}
                  for f in failures]
        write_results(run_dir, cfg.name, cfg.to_dict(), rows, workers=cfg.workers, failed=failed)
        for kept in ("failed", "checkpoints"):  # no empty failed/ (every failed job ran again), checkpoints/
            try:
                (run_dir / kept).rmdir()
            except OSError:  # none, or tracebacks or checkpoints of unfinished jobs kept
                pass
    if failures:
        raise _jobs_failed(cfg, run_dir, failures, rows, len(jobs))
    return rows


def _job_done(cfg: ExperimentConfig, run_dir: Path, method: str, seed: int, result, failures: list, log,
              several: bool = False) -> list:
    """``[row]`` of a finished job, logged; ``[]`` for a :class:`JobFailure`, named in one line
    and its traceback saved in ``RUN_DIR/failed/`` (the other jobs go on)."""
    job = job_path(run_dir, cfg, method, seed)
    if isinstance(result, JobFailure):
        failures.append(save_failure(run_dir / "failed" / f"{job.stem}.txt", result,
                                     f"{method} seed {seed}{f' ({cfg.setting})' if several else ''}",
                                     None if log is print else log))  # a caller's own log gets the line too
        return []
    (run_dir / "failed" / f"{job.stem}.txt").unlink(missing_ok=True)  # of an earlier try of this job
    return [_log_row(log, several, result)]


def _jobs_failed(cfg: ExperimentConfig, run_dir: Path, failures: list, rows: list, total: int) -> JobsFailed:
    """The error that ends a run some of whose jobs failed: each named, where their
    tracebacks are, and the two ways on (resume after a fix, or leave their methods out)."""
    failed = {f.job.split(" seed ")[0] for f in failures}
    others = [m for m in cfg.methods if m not in failed]
    narrow = (f", or leave their methods out: transferkit run --resume {run_dir} --set 'methods=[{','.join(others)}]'"
              if others else "")
    kept = f"results.json and results.md hold the {len(rows)} finished row(s)"
    again = f"transferkit run --resume {run_dir}"
    bench = held_benchmark_dir()
    if bench is not None:  # a benchmark's jobs: the benchmark resumes, not the run its jobs made in it
        kept, narrow = "the finished jobs are kept", ""
        again = f"the same transferkit bench command with --resume {bench}"
    return JobsFailed(failures_message(failures, total, kept, again) + narrow, failures, rows)


def _jobs_of(cfg: ExperimentConfig, methods: list) -> list[tuple]:
    """``(method class, seed)`` of every job, in order; source_only once (its row does not
    vary with the label subset)."""
    return [(cls, cfg.seed + r) for r in range(cfg.repeats) for cls in methods if not (cls is SourceOnly and r > 0)]


def _check_unfinished_checkpoints(cfg: ExperimentConfig, run_dir: Path, jobs: list, finished: dict,
                                  stored: dict | None) -> None:
    """An unfinished job's checkpoints were trained under the run's stored options for its
    method; a resume that gives other options would be refused by the engine only after
    ``config.yaml`` had been rewritten, so it is refused here, while the config is as it was."""
    if stored is None:
        return
    then = stored.get("options") or {}
    now = yaml.safe_load(dump_config(cfg)).get("options") or {}  # as the stored config reads back (tuples: lists)
    unfinished = [(cls, job_path(run_dir, cfg, cls.name, seed).stem) for cls, seed in jobs
                  if (cls.name, seed) not in finished]
    stale = [stem for cls, stem in unfinished if (run_dir / "checkpoints" / stem).is_dir()
             and trained_options(cls, then.get(cls.name)) != trained_options(cls, now.get(cls.name))]
    check(not stale, f"{run_dir}: the unfinished job(s) {', '.join(stale)} have checkpoints trained with other options "
                     f"for their method than this resume gives: resume with the run's options (its config.yaml), or "
                     f"delete their folders under {run_dir / 'checkpoints'} to train them again with the new ones")


def _finished_rows(cfg: ExperimentConfig, run_dir: Path, jobs: list, stored: dict | None) -> dict:
    """``{(method, seed): row}`` of the jobs already finished in ``run_dir``, each checked
    against ``cfg`` by its digest; a row from before digests (no ``config_digest``) by the
    options that the run's stored config gave its method."""
    out = {}
    for cls, seed in jobs:
        job = job_path(run_dir, cfg, cls.name, seed)
        if not job.exists():
            continue
        row = read_job(job, ROW_KEYS)  # the fields the results table reads
        check_job_name(job, row)
        then, now = _stored_options(stored, cls.name), cfg.options.get(cls.name, {})
        if "config_digest" in row:
            same = row["config_digest"] in row_digests(cfg, cls.name)
            older = cls.revision and any(row["config_digest"] in row_digests(cfg, cls.name, revision)
                                         for revision in range(cls.revision))
            check(same or not older, f"{job} was trained by an older form of {cls.name} ({cls.revision_note}); "
                                     f"delete the job file to run the job again, or use a new run directory")
        else:
            same = stored is not None and then == now
        hint = f" (options of {cls.name}: {then!r} there, {now!r} now)" if stored is not None and then != now else ""
        if not same and not hint and "config_digest" in row:
            hint = _changed_since(cfg, run_dir, cls.name, row["config_digest"])
        if not same and not hint and isinstance(row.get("method_options"), dict):  # the job's own record
            hint = _options_since(cls, row["method_options"], now)
        files = option_files(cls, now)
        if not same and not hint and files:
            hint = (f" (the options of {cls.name} read {', '.join(f'{k} {v}' for k, v in files.items())}, whose "
                    f"contents the job's digest holds: edited since the job ran?)")
        check(same, f"{job} was run with another configuration than {run_dir / 'config.yaml'} gives now{hint}; "
                    f"restore that config, or delete the job file to run the job again")
        out[cls.name, seed] = row
    _check_same_world(cfg, run_dir, out)
    return out


def _options_since(cls, ran: dict, now: dict) -> str:
    """The options a job ran with (its row's ``method_options``) that ``now`` gives otherwise, as a
    refusal's hint; ``""`` where they agree (something else changed)."""
    try:
        given = resolved_options(cls, now)
    except Exception:  # options the method refuses: the refusal is theirs to name
        return ""
    changed = {k: (ran[k], given.get(k)) for k in ran if given.get(k) != ran[k]}
    if not changed:
        return ""
    said = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
    return (f" (options of {cls.name}: {said}; --set options.{cls.name}.<option>=<then> restores one, "
            f"--set options.{cls.name}=null the defaults)")


def _changed_since(cfg: ExperimentConfig, run_dir: Path, method: str, digest: str) -> str:
    """`` (changed: key: old there, new now)`` naming what differs from the config that
    ``results.json`` keeps, when that config gives the row's ``digest``; else ``""`` (the
    row keeps only a digest, which cannot name a key)."""
    try:
        kept = from_dict(ExperimentConfig, read_json(run_dir / "results.json")["config"])
        if digest not in row_digests(kept, method):
            return ""
    except Exception:  # no results.json (an interrupted first run), or one of another form
        return ""
    diff = _config_changes(yaml.safe_load(dump_config(kept)), cfg)
    old, new = (trained_options(get_method(method), c.options.get(method, {})) for c in (kept, cfg))
    diff += [f"options of {method}: {old!r} there, {new!r} now"] if old != new else []
    return f" (changed since the job ran, by the config its results.json keeps: {'; '.join(diff)})" if diff else ""


def _check_same_world(cfg: ExperimentConfig, run_dir: Path, finished: dict) -> None:
    """Refuse to resume rows made with another number of data-parallel processes (``--nproc``
    rounds the batch up and keeps BatchNorm statistics per shard: other rows); a row without
    ``world_size`` (written before it was recorded) is not checked: its count is unknown."""
    now = world_size()
    other = sorted(f"jobs/{job_path(run_dir, cfg, name, seed).name}"
                   for name, seed in _made_otherwise(finished, "world_size", now))
    if other:
        then = sorted({row.get("world_size", now) for row in finished.values()} - {now})
        counts, named = " and ".join(map(str, then)), ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise TransferkitError(
            f"{run_dir}: {len(other)} finished job(s) ({named}) ran "
            f"in {counts} data-parallel process(es) and this resume runs {now}: --nproc changes a job's rows "
            f"(docs/scale.md), so they would not go together; resume with --nproc {then[0]}, or use a new run "
            f"directory (or delete those job files to run them again)")


def _run_in_workers(cfg: ExperimentConfig, run_dir: Path, todo: list, pre_info: dict, log,
                    failures: list) -> list[dict]:
    """The rows of the ``(setting's config, method class, seed)`` jobs of ``todo``, run in
    ``cfg.workers`` processes (each row logged and written as its job ends)."""
    rows: list = [[]] * len(todo)
    several = len(cfg.settings()) > 1

    def done(i, result):
        sub, cls, seed = todo[i]
        rows[i] = _job_done(sub, run_dir, cls.name, seed, result, failures, log, several)
    source = None if pre_info.get("path") is None else str(pre_info["path"])
    jobs = [(_worker_job, sub.to_dict(), str(run_dir), cls.name, seed, source, pre_info.get("digest"))
            for sub, cls, seed in todo]
    map_jobs(guarded, jobs, cfg.workers, done)
    return [row for done_rows in rows for row in done_rows]


def _result_neutral_defaults(train: TrainConfig) -> TrainConfig:
    """``train`` with the settings that do not change what is trained (progress bar,
    checkpoint interval; ``NOT_RESULTS``) at their defaults: a cache key that ignores them and
    stays the key of a config that never set them."""
    neutral = {k.split(".", 1)[1] for k in NOT_RESULTS if k.startswith("train.")}
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name in neutral}
    return replace(train, **defaults)


#: how :func:`job_digest` counted a method's options: now, and in rows of earlier versions
DIGEST_FORMS = ("trained", "given", "every")


def job_digest(cfg: ExperimentConfig, method: str, form: str = "trained", revision: int | None = None,
               stages: str | None = None) -> str:
    """What a job's row depends on: the config but what only chooses jobs or where they run
    (``methods``, ``repeats``, ``NOT_RESULTS``), with only this method's options as they
    change what is trained (``form="trained"``: :func:`~transferkit.methods.base.trained_options`,
    so an option spelled at its default or a ``not_trained_options`` one, e.g. flex's
    ``workers``, changes nothing). Earlier rows counted the options as given, less
    (``"given"``) or with (``"every"``) the ``not_trained_options``. Stored in the row, it
    tells a job file written under another config.yaml from one of this run. A method's
    nonzero ``revision`` (``revision``: another one) is part of it. ``stages``: the stages'
    devices as counted instead of ``cfg``'s (see :func:`row_digests`)."""
    check(form in DIGEST_FORMS, f"digest form must be one of {DIGEST_FORMS}, got {form!r}")
    flat = {k: v for k, v in flat_config(cfg.to_dict()).items() if k not in NOT_RESULTS | CHOOSES_JOBS}
    if stages is not None:
        flat["pretrain.device"] = flat["train.device"] = stages
    for key, default in ADDED_FIELDS.items():
        if flat.get(key) == default:  # at its default: rows from before the field keep their digest
            flat.pop(key, None)
    cls, given = get_method(method), cfg.options.get(method, {})
    revision = cls.revision if revision is None else revision
    if revision:
        flat["method_revision"] = revision
    files = {k: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for k, path in option_files(cls, given).items()}
    if files:  # a matrix file's contents, not only its name (an edited file gives other jobs)
        flat["option_files"] = files
    if form == "trained":
        flat["options"] = trained_options(cls, given)
    else:
        skip = () if form == "every" else cls.not_trained_options
        flat["options"] = {k: v for k, v in given.items() if k not in skip}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_digests(cfg: ExperimentConfig, method: str, revision: int | None = None) -> set[str]:
    """Every :func:`job_digest` a row of ``method`` trained under ``cfg`` may hold: one per
    ``DIGEST_FORMS``, and on a device other than cpu each also with the stages' devices at cpu
    (config.yaml stored them so when a config file or --set gave `device`, before 2026-12-04;
    the stages always ran on `device`)."""
    stages = (None, "cpu") if cfg.device != "cpu" else (None,)
    return {job_digest(cfg, method, form, revision, s) for form in DIGEST_FORMS for s in stages}


def option_files(cls, given: dict) -> dict:
    """``{option: path}`` of the files that method class ``cls``'s options ``given`` read (a matrix
    file, ``.npy`` / ``.csv`` / ``.txt``, or an option the class names in ``file_options``, as clip's
    ``captions_file``), those that exist: their contents enter a job's digest."""
    out = {}
    for k, v in given.items():
        named = k in getattr(cls, "file_options", ())
        if isinstance(v, str) and (named or v.lower().endswith(MATRIX_FILES)):
            path = Path(v).expanduser() if named else Path(v)  # a matrix file's rule as before (older digests)
            with contextlib.suppress(OSError):  # a name too long to be a path
                if path.is_file():
                    out[k] = path
    return out


def _stored_options(stored: dict, method: str) -> dict:
    """The options a run's stored config gave ``method``."""
    return ((stored or {}).get("options") or {}).get(method, {})


def _check_same_config(path: Path, cfg: ExperimentConfig) -> dict:
    """Refuse to resume the run of ``path`` (its ``config.yaml``) with a config whose results
    would differ; the error names the keys. ``methods``, ``repeats``, ``options``, ``k`` and
    ``ratio`` only choose jobs: a finished job is checked by its own digest (:func:`job_digest`) instead."""
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise TransferkitError(f"{path} is unreadable: {e}") from e
    check(isinstance(stored, dict), f"{path} is not a run config (not a mapping)")
    diff = _config_changes(stored, cfg)
    check(not diff, f"{path.parent} holds a run with another config ({'; '.join(diff)}); resume it with the same "
                    f"config")
    return stored


def _config_changes(stored: dict, cfg: ExperimentConfig) -> list[str]:
    """``"key: old there, new now"`` for each key that a job's results depend on (not one of
    :data:`NOT_RESULTS`, :data:`CHOOSES_JOBS` or :data:`CHOOSES_SETTINGS`) and that differs between a ``stored`` config
    mapping and ``cfg``, sorted by key."""
    then = {**ADDED_FIELDS, **flat_config(stored)}
    for key in ("pretrain.device", "train.device"):  # the stages ran on `device`; stored at cpu before 2026-12-04
        if then.get(key) == "cpu":
            then[key] = then.get("device", "cpu")
    now = {**ADDED_FIELDS, **flat_config(yaml.safe_load(dump_config(cfg)))}  # as stored: lists
    return [f"{k}: {then.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(then) | set(now))
            if k not in NOT_RESULTS | CHOOSES_JOBS | CHOOSES_SETTINGS and then.get(k) != now.get(k)]


def _log_row(log, several: bool, row: dict) -> dict:
    """Log a finished job's line (``several``: the run has several settings, which it names)."""
    picked = f", picked {row['picked']}" if isinstance(row.get("picked"), str) else ""
    log(f"  {row['method']:<14} {row['setting'] + ' ' if several else ''}seed {row['seed']}: accuracy "
        f"{100 * row['accuracy']:.1f}%  ({row['wall_s']:.1f}s)"
        + picked)
    return row
