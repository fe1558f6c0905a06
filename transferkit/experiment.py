"""Run an experiment: pre-train on the source, transfer to the target with each method
over several random label subsets, evaluate on the target test split, write results.

Layout of a run directory ``runs/<name>/<timestamp>/``: ``config.yaml`` (resolved; a new run's
is written before its data is read),
``metrics.jsonl`` (every evaluation of every job's training; the source pre-training logs
none), ``jobs/*.json`` (one finished (method, seed) each, written atomically),
``models/*.pt`` (the model each finished job evaluated, :func:`load_model`),
``checkpoints/`` (engine checkpoints of unfinished jobs),
``results.json`` and ``results.md``, ``kernels.json`` (the torch version, CPU and kernels
the run started with; :func:`~transferkit.runtime.note_kernels`). Passing the directory
again (``run_dir``, ``--resume``) skips finished jobs, runs added methods or repeats, and
continues an interrupted training from its last checkpoint. The source network is
:mod:`transferkit.source`'s; the checks a resume passes are :mod:`transferkit.rundir`'s.
"""

from __future__ import annotations

import contextlib
import copy
import io
import pickle
import re
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch

from .backbones import (
    build_backbone,
)
from .config import (
    ExperimentConfig,
    dump_config,
    from_dict,
    load_config,
)
from .distributed import barrier, is_main_process, world_size
from .engine import Engine
from .errors import JobsFailed, TransferkitError, UntrustedPickle, check, is_whole, progress, quiet, warn
from .fitting import (
    all_source_classes_fields,
    evaluate_on,
    fit_for_target,
    report_seen_unseen,
)
from .io import (
    atomic_write,
    check_written_folders,
    clear_left_temporaries,
    directory_lock,
    links_warned_once,
    make_dir,
    read_job,
    remove_inside,
    write_json,
    write_text,
)
from .jobs import JobFailure, failures_message, guarded, map_jobs, save_failure
from .methods import get_method
from .methods.base import resolved_options
from .methods.supervised import SourceOnly
from .networks import load_network, save_network
from .preflight import check_names, check_settings, check_workers_reach, warn_api_only_options, warn_pretrain_unused
from .results import RESULT_FILES, unfinished_hint, write_results
from .rundata import (
    Prepared,
    class_fields,
    job_method,
    label_subset,
    labels_per_class,
    prepare_domains,
    process_domains,
    selection_domain,
    test_fields,
    training_fields,
)
from .rundir import (
    check_same_config,
    check_same_data,
    check_same_source,
    check_unfinished_checkpoints,
    check_worker_data,
    finished_rows,
    job_digest,
    job_path,
    model_path,
    network_path,
    trained_before,
)
from .runtime import (
    callers_state_kept,
    cpu_kernels,
    held_benchmark_dir,
    invocation,
    job_threads,
    note_kernels,
    note_work_dir,
    own_invocation,
    peak_memory,
    preload_lazy_imports,
    resolve_device,
    worker_threads,
)
from .source import read_source_file, run_source_network, source_only_model
from .tables import diverged_mark


def job_environment(source_digest: str | None, trained: bool = True) -> dict:
    """What a row records of where it was computed, besides ``world_size``: the torch threads
    of its process (``trained``: a job that trains; source_only's row only evaluates the source
    network, in the main process), the CPU kernels, the source network it started from
    (``None``: none) and the :func:`~transferkit.runtime.invocation` that computed it."""
    k = cpu_kernels()
    return {**({"threads": torch.get_num_threads()} if trained else {}), "world_size": world_size(),
            "kernels": f"{k['cpu_capability']} (MKL_CBWR {k['mkl_cbwr']}, oneDNN {k['onednn_max_cpu_isa']})",
            **({"source_digest": source_digest} if source_digest else {}), "invocation": invocation()}


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """A fresh ``out_dir/name/<timestamp>``; under torch.distributed every rank gets rank 0's."""
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S-%f")]
    if world_size() > 1:
        torch.distributed.broadcast_object_list(stamp, src=0)
    return Path(cfg.out_dir).expanduser() / cfg.name / stamp[0]


def save_model(path: Path, method) -> None:
    """The trained method object as it was evaluated (``torch.save``), atomically."""
    data = _model_bytes(method)
    atomic_write(path, lambda p: p.write_bytes(data))


def _model_bytes(method) -> memoryview:
    """``torch.save``'s file of ``method``, in memory: pickling fails here, writing with the disk."""
    buf = io.BytesIO()
    torch.save(method, buf)
    return buf.getbuffer()


def _saved_model(run_dir: str | Path, method: str, seed: int | None, setting: str | None,
                 network: bool = False) -> tuple:
    """``(run_dir, cfg, name, seed, path)`` of job (``method``, ``seed``, ``setting``) of a run: ``path`` its
    model file (``.pt``), refused, naming the run's saved models, when it does not exist (with ``network``:
    nor its network file, :func:`~transferkit.rundir.network_path`)."""
    run_dir = Path(run_dir)
    check((run_dir / "config.yaml").is_file(), f"{run_dir} is not a run directory (no config.yaml)"
                                               f"{unfinished_hint(run_dir)}")
    name = get_method(method).name
    cfg = _setting_of(load_config(run_dir / "config.yaml"), setting, run_dir, name == "source_only")
    check(seed is None or is_whole(seed), f"seed must be a whole number (a job's label-subset seed), got {seed!r}")
    seed = cfg.seed if seed is None else int(seed)
    path = model_path(run_dir, cfg, name, seed)
    if not path.is_file() and not (network and network_path(path).is_file()):
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
    return run_dir, cfg, name, seed, path


def load_model(run_dir: str | Path, method: str, seed: int | None = None, setting: str | None = None):
    """The model that job (``method``, ``seed``) of a ``transferkit run`` evaluated, in eval
    mode: ``model.logits(images)`` gives target-class logits (the images checked, in chunks;
    ``model(images)`` runs one unchecked batch), column ``i`` for ``model.classes_[i]``
    (the class names of the job's result row; ``seed``: the config's first by default;
    ``setting``: ``"k=5"``, which a run of a list ``k`` or ``ratio`` needs). The
    file is a pickle (``torch.load(weights_only=False)``): unpickling runs whatever code the file names, so load
    only run directories you trust (:func:`load_job_network` reads a job's network without unpickling)."""
    run_dir, cfg, name, seed, path = _saved_model(run_dir, method, seed, setting)
    try:
        model = torch.load(path, weights_only=False, map_location="cpu")
    except (EOFError, pickle.UnpicklingError, RuntimeError, KeyError) as e:  # torn (a cut zip archive), zeroed
        # (a zip without its records: KeyError 'storages') or not a model file
        if isinstance(e, RuntimeError) and "zip archive" not in str(e) and "PytorchStreamReader" not in str(e):
            raise
        if isinstance(e, KeyError) and "storages" not in str(e):  # a method's own unpickling
            raise
        raise TransferkitError(f"model {path} is unreadable ({type(e).__name__}: {e}): run the job again "
                               f"(delete its job file {job_path(run_dir, cfg, name, seed)} and resume)") from e
    except OSError as e:  # a file cut short inside its archive reads as [Errno 22] Invalid argument
        raise TransferkitError(f"model {path} cannot be read ({e}): if it is cut short or damaged, run the job "
                               f"again (delete its job file {job_path(run_dir, cfg, name, seed)} and resume)") from e
    except (ImportError, AttributeError) as e:  # e.g. a plugin's method whose module is not importable here
        raise TransferkitError(f"model {path} needs code that is not available here ({e}); for a plugin "
                               f"method, name its module in TRANSFERKIT_PLUGINS") from e
    check(isinstance(model, torch.nn.Module), f"model {path} holds a {type(model).__name__}, not a model (a "
                                              f"transferkit method, a torch module): it is not a file transferkit run "
                                              f"saved")
    row = job_path(run_dir, cfg, name, seed)
    if row.is_file():
        model.classes_ = list(read_job(row, ("class_names",))["class_names"])
    else:  # saved, then stopped before its row: the job did not finish (a resume trains it again)
        known = getattr(model, "classes_", None)  # a model file saved since 2026-12-02 holds them
        what = "the job did not finish" if known else "the model's classes_ are not known"
        warn(f"{row} does not exist: the job stopped after saving {path.name} and before its result "
             f"row, so {what} (a resume trains the job again)")
    return model.eval()


def load_job_network(run_dir: str | Path, method: str, seed: int | None = None, setting: str | None = None,
                     in_channels: int | None = None, trust_pickles: bool = False):
    """The network (a :class:`~transferkit.unitnet.UnitNet`, in eval mode) of job (``method``, ``seed``,
    ``setting``, as :func:`load_model`) of a run, for its embedding (``net.forward_features``), read from the
    job's network file ``models/<job>.safetensors``: reading it runs no code. A job with only its pickled
    model (a run from before 2026-12-07; a method that adds parameters to the network, ``Method.adds_to_network``:
    ft_ss, image_unit) is refused, saying which,
    unless ``trust_pickles``: then :func:`load_model` unpickles it, which runs whatever code the file names.
    ``in_channels``: the images' channels (``None``: those the file fits)."""
    run_dir, cfg, name, seed, path = _saved_model(run_dir, method, seed, setting, network=True)
    file = network_path(path)
    if file.is_file():
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: the caller's random state stays
            return load_network(file, cfg.backbone, in_channels, cfg.image_size).eval()
    if not trust_pickles:
        added = get_method(name).adds_to_network
        why = (f"{name} writes no network file, as it adds {added} (which a network file, the backbone's weights, "
               f"cannot describe)" if added else "a run from before 2026-12-07 saved only pickled models")
        which = f", setting={cfg.setting!r}" if setting is not None else ""  # a run of several: load_model needs it
        raise UntrustedPickle(f"{file} does not exist: {why}; job {name} seed {seed} ({cfg.setting}) is only its "
                              f"pickled model {path.name}, and unpickling a file runs whatever code it names, so it "
                              f"is not read by default: load_model(run_dir, {name!r}, seed={seed}{which}).net, or "
                              f"trust_pickles=True here (--trust-pickles), reads it; only for a run you trust (you "
                              f"made {run_dir}, or someone you trust did)")
    return load_model(run_dir, name, seed, setting).net


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


def run_job(cfg: ExperimentConfig, data: Prepared, source_net, run_dir: Path, cls, seed: int,
            source_digest: str | None = None, source_diverged: bool = False) -> dict:
    """Train and evaluate one (method, label subset) job; write its row atomically.

    ``source_net()`` returns a fresh copy of the source network; it draws no random
    numbers, so a job gives the same row in the main process and in a worker process.
    ``source_digest``: that network's :func:`~transferkit.networks.network_digest`, recorded in the row;
    ``source_diverged``: its pre-training diverged, so the row of a method that starts from it is too."""
    job = job_path(run_dir, cfg, cls.name, seed)
    with quiet():  # check_jobs drew every label subset and showed their warnings once
        labeled, unlabeled = label_subset(cfg, data.target, seed, data.unlabeled)
    before_s, before_threads = trained_before(run_dir / "checkpoints" / job.stem)  # a job resumed midway
    t0 = time.perf_counter() - before_s
    with peak_memory(device=cfg.device) as memory:
        net = source_net() if cls.needs_pretrained else None
        torch.manual_seed(seed)
        if net is None:
            net = build_backbone(cfg.backbone, num_classes=data.source.train.num_classes,
                                 in_channels=data.channels, image_size=cfg.image_size)
        with quiet():  # check_jobs built it with these options and showed its warnings
            method = job_method(cfg, data, cls, net)

        def make_engine(tag, config=None):
            train = config or cfg.train
            if train.device != cfg.device:
                train = replace(train, device=cfg.device)
            named = job.stem if tag == "main" else f"{job.stem}/{tag}"  # what the divergence warning names
            return Engine(train, seed=seed, metrics_path=run_dir / "metrics.jsonl", select_metric=cfg.select_metric,
                          checkpoint_dir=run_dir / "checkpoints" / job.stem / tag,
                          tensorboard_dir=run_dir / "tensorboard" / job.stem / tag, run_name=f"{job.stem}/{tag}",
                          label=named)

        every = {}  # partial DA: the argmax over every source class as well
        val = selection_domain(cfg, data, cls)
        fit = fit_for_target(method, make_engine, data.source.train.class_names, data.target.train.class_names,
                             lambda m, rows: every.update(all_source_classes_fields(m, rows, data.target.test)),
                             source=data.source.train if cfg.source is not None else None, target=labeled,
                             unlabeled=unlabeled, val=val)
        # first: tap's accuracy of every unit runs its units over the test images once, and scoring reads them
        measured = method.test_results(data.target.test)
        report = evaluate_on(method, data.target.test)
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
           **({"labels_per_class": labels_per_class(labeled)} if "target" in cls.streams else {}),
           **test_fields(cfg, data),
           **({"n_unlabeled": len(unlabeled)} if "unlabeled" in cls.streams else {}),
           **({"unlabeled": cfg.unlabeled, "unlabeled_in_test": data.unlabeled_overlap.get("test", 0),
               "unlabeled_in_val": data.unlabeled_overlap.get("val", 0)}
              if data.unlabeled is not None and "unlabeled" in cls.streams else {}),
           "config_digest": job_digest(cfg, cls.name), **every,
           **({"method_revision": cls.revision} if cls.revision else {}),  # summary and report name older ones
           "method_options": resolved_options(cls, cfg.options.get(cls.name, {})),
           **job_environment(source_digest if cls.needs_pretrained else None), **method.extra_results(),
           **diverged_mark(fit.diverged or (source_diverged and cls.needs_pretrained)),
           **({"threads_before_resume": sorted(before_threads)}
              if fit.steps > 0 and before_threads - {torch.get_num_threads()} else {}),
           **measured}
    if is_main_process():  # before the row: a job counts as finished once its row exists
        method.classes_ = list(data.target.test.class_names)  # in the file too: a model copied out knows them
        _save_evaluated(model_path(run_dir, cfg, cls.name, seed), method, job.stem)
    row = _finish_row(job, row, report, data.target.test.class_names, _seen_classes(data))
    if is_main_process():  # checkpoints only serve resuming an unfinished job; models/ keeps what was evaluated
        remove_inside(run_dir / "checkpoints" / job.stem, run_dir)
    return row


def _save_evaluated(path: Path, method, job: str) -> None:
    """:func:`save_model` and its network (:func:`_save_job_network`), or a warning: a model that does not
    pickle (a user's method or backbone) must not cost the job's result. Writing
    them is not excused: a full disk fails the job before its row (a resume trains it again) and
    stops the run."""
    try:
        data = _model_bytes(method)
    except Exception as e:
        remove_inside(path, path.parent.parent)  # not an older run's model (RUN_DIR/models/)
        remove_inside(network_path(path), path.parent.parent)
        warn(f"{job}: the trained model is not saved ({type(e).__name__}: {e})")
        return
    atomic_write(path, lambda p: p.write_bytes(data))
    _save_job_network(network_path(path), method)


def _save_job_network(path: Path, method) -> None:
    """The method's network as :func:`~transferkit.networks.save_network` writes it (safetensors, which
    load without running code): what :func:`load_job_network` reads for its embedding, the network alone
    also where the method's predictions read more. None where it does not save so (a method's parameters
    added to the network, a network of no UnitNet)."""
    try:
        save_network(getattr(method, "net", None), path)
    except OSError:
        raise
    except Exception:  # save_network's refusals, a plugin builder's own
        path.unlink(missing_ok=True)


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
                source_digest: str | None = None, source_diverged: bool = False):
    """Entry point of a worker process: the data (see :func:`~transferkit.rundata.process_domains`) and one job."""
    cfg = from_dict(ExperimentConfig, cfg_dict)
    data = process_domains(cfg, Path(run_dir))
    check_worker_data(Path(run_dir), data)  # read again here: files changed since the run started are refused
    cls = get_method(method)

    def source_net():
        return read_source_file(cfg, data, Path(source_path))
    return run_job(cfg, data, source_net, Path(run_dir), cls, seed, source_digest, source_diverged)


def run_experiment(cfg: ExperimentConfig, run_dir: Path | None = None, log=print) -> tuple[Path, list[dict]]:
    """Run every (method, repeat) job of ``cfg``; return the run directory and the rows.

    Passing an existing ``run_dir`` resumes it: finished jobs are read back, not re-run.
    With ``cfg.workers > 1`` the jobs run in that many worker processes (each row is
    written as soon as its job ends); under ``torchrun`` every rank runs every job
    data-parallel and rank 0 writes the files. The caller's global CPU random state is as it was
    before (as after :meth:`Transfer.fit`). Its rows' ``invocation`` is the enclosing command's (a
    benchmark's) or, where none is, this call's own. ``log`` gets every progress line (``transferkit
    run`` passes :func:`~transferkit.errors.progress`: stderr, its stdout keeping the table; None: silent).
    ``cfg`` may be a mapping of a config file's keys; a config file or a shipped config's name is read
    with :func:`~transferkit.config.load_config`."""
    cfg = _experiment_config(cfg)
    log = log if log is not None else (lambda *a, **k: None)
    check(callable(log), f"run_experiment: log must be a function (e.g. print) or None, got {type(log).__name__}")
    with own_invocation(), links_warned_once(), callers_state_kept():  # the CPU RNG (no CUDA init here)
        return _run_experiment(cfg, run_dir, log)


def _experiment_config(cfg) -> ExperimentConfig:
    """``cfg`` as an :class:`ExperimentConfig` (a mapping read as a config file's keys); anything else refused."""
    if isinstance(cfg, Mapping):
        return from_dict(ExperimentConfig, dict(cfg))
    check(isinstance(cfg, ExperimentConfig),
          f"run_experiment takes an ExperimentConfig or a mapping of its keys, got {type(cfg).__name__} {cfg!r:.60}"
          + (f": load_config({str(cfg)!r}) reads a config file or a shipped config by name" if
             isinstance(cfg, (str, Path)) else ""))
    return cfg


def _run_experiment(cfg: ExperimentConfig, run_dir: Path | None, log) -> tuple[Path, list[dict]]:
    methods = check_names(cfg, run_dir)
    resolve_device(cfg.device)  # CUDA or MPS that is not there: refused now, not after the data loaded
    main = is_main_process()
    if cfg.pretrained is not None and main:
        warn_pretrain_unused(cfg)
    if main:
        warn_api_only_options(cfg)
    log = log if main else (lambda *a, **k: None)
    run_dir_given = bool(run_dir)
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
    fresh = main and not run_dir.exists()
    parent_fresh = fresh and not run_dir.parent.exists()
    if main:
        _make_run_dir(run_dir, None if run_dir_given else cfg.out_dir)
    try:
        with directory_lock(run_dir) if main else contextlib.nullcontext():
            if fresh:  # before the data is read: a run killed then (SIGKILL) goes on with `--resume DIR` alone
                write_text(run_dir / "config.yaml", dump_config(cfg))
            rows = _run_jobs_of(cfg, run_dir, methods, main, log, fresh)
    except BaseException:  # refused, failed or interrupted (Ctrl-C) before any job finished: leave nothing
        if fresh:
            _remove_if_unused(run_dir, parent_fresh)
        raise
    barrier()
    return run_dir, rows


def _make_run_dir(run_dir: Path, out_dir: str | None) -> None:
    """Make ``run_dir`` (in ``out_dir``, the config's, unless the directory was given), or a
    named error: the file system's alone names neither the setting nor what to do."""
    where = f"out_dir {out_dir!r}: " if out_dir is not None else ""
    fix = ("set out_dir to a directory you can write to, or to a path where one can be made (--set out_dir=DIR)"
           if out_dir is not None else "give a directory you can write to, or a path where one can be made")
    make_dir(run_dir, f"{where}cannot make the run directory", fix)


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


def _run_jobs_of(cfg: ExperimentConfig, run_dir: Path, methods: list, main: bool, log,
                 fresh: bool = False) -> list[dict]:
    """The body of :func:`run_experiment` in its run directory: every job's row, in job order
    (setting by setting: one per value of a list ``k`` or ``ratio``, on one source network).
    ``fresh``: a new run, whose config.yaml is its own (written before its data is read)."""
    old = run_dir / "config.yaml"
    stored = check_same_config(old, cfg) if old.exists() and not fresh else None
    check_written_folders(run_dir)
    data = prepare_domains(cfg, run_dir=run_dir)
    subs = cfg.settings()
    jobs = [(sub, cls, seed) for sub in subs for cls, seed in _jobs_of(sub, methods)]
    widths = line_widths(cfg, methods)  # the job lines' columns
    try:
        finished = {sub.setting: finished_rows(sub, run_dir, _jobs_of(sub, methods), stored) for sub in subs}
    except TransferkitError:
        check_settings(subs, data, methods)  # its refusal comes first, as its warnings do
        raise
    every_finished = {(name, seed if len(subs) == 1 else f"{seed} ({setting})"): row
                      for setting, rows in finished.items() for (name, seed), row in rows.items()}
    with quiet() if len(every_finished) == len(jobs) else contextlib.nullcontext():  # no job left to warn of
        check_settings(subs, data, methods)
    left = [cls for sub in subs for cls, seed in _jobs_of(sub, methods)
            if (cls.name, seed) not in finished[sub.setting] and cls is not SourceOnly]
    if world_size() == 1 and len(left) > 1:  # before the pre-training: the jobs worker processes would run
        check_workers_reach(list(dict.fromkeys(left)), cfg.workers, cfg.backbone,
                            [cfg.source, cfg.target, cfg.unlabeled, cfg.test])
    check_same_data(run_dir, data, main)  # first: it drops the checkpoints of changed data
    for sub in subs:
        check_unfinished_checkpoints(sub, run_dir, _jobs_of(sub, methods), finished[sub.setting], stored)
    if len(every_finished) < len(jobs):  # after the checks (a refused run says so 2 s sooner); none for no job left
        preload_lazy_imports()
    barrier()  # every rank sees what rank 0 kept of the source network and checkpoints
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    before = old.read_text(encoding="utf-8") if old.exists() else None
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
            pretrained, pre_info = run_source_network(cfg, data, run_dir, log, lambda digest: check_same_source(
                run_dir, every_finished, digest))
        except TransferkitError:
            if main and before is not None:
                write_text(old, before)
            raise
        val_acc = pre_info.get("val_accuracy")
        log(f"source network: from the pretrained file {cfg.pretrained}" if cfg.pretrained else
            f"source network: source val accuracy {'n/a' if val_acc is None else f'{100 * val_acc:.1f}%'}, "
            + (f"read back (pre-trained earlier in {pre_info['wall_s']:.1f}s)" if pre_info["cached"] else
               f"{pre_info['wall_s']:.1f}s"))
    rows, todo, order = [], [], {}
    for sub, cls, seed in jobs:
        job = job_path(run_dir, sub, cls.name, seed)
        order[(sub.setting, cls.name, seed)] = len(order)
        if (cls.name, seed) in finished[sub.setting]:
            rows.append(finished[sub.setting][cls.name, seed])
            if main:  # a stop between its row and the removal of its checkpoints left them: they serve nothing
                remove_inside(run_dir / "checkpoints" / job.stem, run_dir)
                saved = model_path(run_dir, sub, cls.name, seed)
                for path in (job, saved, network_path(saved)):
                    clear_left_temporaries(path)
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
                   **class_fields(cfg), **diverged_mark(pre_info.get("diverged")),
                   "config_digest": job_digest(sub, cls.name), **every,
                   **job_environment(pre_info.get("digest"), trained=False)}
            if main:  # before the row, as run_job: load_model / Transfer.from_run read it
                model.classes_ = list(data.target.test.class_names)
                _save_evaluated(model_path(run_dir, sub, cls.name, cfg.seed), model, job.stem)
            del model  # a network's copy: not held through the jobs that follow (their peak memory)
            rows.append(_log_row(log, len(subs) > 1, _finish_row(job, row, report, data.target.test.class_names,
                                                                 _seen_classes(data)), *widths))
        else:
            todo.append((sub, cls, seed))
    if main and todo:  # an older results.json would call the run finished while these run (or after a stop)
        for name in RESULT_FILES:
            remove_inside(run_dir / name, run_dir)
    failures: list = []
    if cfg.workers > 1 and len(todo) > 1 and world_size() == 1:
        rows += _run_in_workers(cfg, run_dir, todo, pre_info, log, failures, widths)
    else:  # with a worker's thread count: the one job a resumed run has left computes what a worker did
        with worker_threads(cfg.workers if world_size() == 1 else 1):
            for sub, cls, seed in todo:
                result = guarded(run_job, sub, data, lambda: copy.deepcopy(pretrained), run_dir, cls, seed,
                                 pre_info.get("digest"), bool(pre_info.get("diverged")))
                rows += _job_done(sub, run_dir, cls.name, seed, result, failures, log, len(subs) > 1, widths)
                if failures and world_size() > 1:  # the ranks stop together: one that went on would wait
                    raise _jobs_failed(cfg, run_dir, failures, rows, len(jobs))  # in the next job's collectives
    rows.sort(key=lambda row: order[(row["setting"], row["method"], row["seed"])])  # job order, resumed or not
    if main:
        failed = [{"job": f.job, "error": f.error,  # a traceback that could not be written: none
                   "traceback": str(Path(f.path).relative_to(run_dir)) if f.path else None} for f in failures]
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
              several: bool = False, widths: tuple[int, int] = (14, 0)) -> list:
    """``[row]`` of a finished job, logged; ``[]`` for a :class:`JobFailure`, named in one line
    and its traceback saved in ``RUN_DIR/failed/`` (the other jobs go on)."""
    job = job_path(run_dir, cfg, method, seed)
    if isinstance(result, JobFailure):
        failures.append(save_failure(run_dir / "failed" / f"{job.stem}.txt", result,
                                     f"{method} seed {seed}{f' ({cfg.setting})' if several else ''}",
                                     None if log in (print, progress) else log))  # a caller's own log gets it too
        return []
    remove_inside(run_dir / "failed" / f"{job.stem}.txt", run_dir)  # of an earlier try of this job
    return [_log_row(log, several, result, *widths)]


def _jobs_failed(cfg: ExperimentConfig, run_dir: Path, failures: list, rows: list, total: int) -> JobsFailed:
    """The error that ends a run some of whose jobs failed: each named, where their
    tracebacks are, and the two ways on (resume after a fix, or leave their methods out)."""
    failed = {f.job.split(" seed ")[0] for f in failures}
    others = [m for m in cfg.methods if m not in failed]
    nproc = f" --nproc {world_size()}" if world_size() > 1 else ""
    again = f"transferkit run{nproc} --resume {shlex.quote(str(run_dir))}"
    narrow = f", or leave their methods out: {again} --set 'methods=[{','.join(others)}]'" if others else ""
    kept = f"results.json and results.md hold the {len(rows)} finished row(s)"
    if world_size() > 1:  # the run stopped at its first failure: results.json is written when every job has run
        kept = "the finished jobs are kept"
    bench = held_benchmark_dir()
    if bench is not None:  # a benchmark's jobs: the benchmark resumes, not the run its jobs made in it
        kept, narrow = "the finished jobs are kept", ""
        again = f"the same transferkit bench command with --resume {shlex.quote(str(bench))}"
    return JobsFailed(failures_message(failures, total, kept, again) + narrow, failures, rows)


def _jobs_of(cfg: ExperimentConfig, methods: list) -> list[tuple]:
    """``(method class, seed)`` of every job, in order; source_only once (its row does not
    vary with the label subset)."""
    return [(cls, cfg.seed + r) for r in range(cfg.repeats) for cls in methods if not (cls is SourceOnly and r > 0)]


def _run_in_workers(cfg: ExperimentConfig, run_dir: Path, todo: list, pre_info: dict, log,
                    failures: list, widths: tuple[int, int] = (14, 0)) -> list[dict]:
    """The rows of the ``(setting's config, method class, seed)`` jobs of ``todo``, run in
    ``cfg.workers`` processes (each row logged and written as its job ends; ``widths``: :func:`line_widths`)."""
    rows: list = [[]] * len(todo)
    several = len(cfg.settings()) > 1

    def done(i, result):
        sub, cls, seed = todo[i]
        rows[i] = _job_done(sub, run_dir, cls.name, seed, result, failures, log, several, widths)
    source = None if pre_info.get("path") is None else str(pre_info["path"])
    jobs = [(_worker_job, sub.to_dict(), str(run_dir), cls.name, seed, source, pre_info.get("digest"),
             bool(pre_info.get("diverged"))) for sub, cls, seed in todo]
    map_jobs(guarded, jobs, cfg.workers, done)
    return [row for done_rows in rows for row in done_rows]


def line_widths(cfg: ExperimentConfig, methods: list) -> tuple[int, int]:
    """The widths of a run's job lines' method and setting columns: its longest method name (14 at
    least) and setting, so that ``ft_unit:conv2`` or a plugin's long name keeps the lines aligned."""
    return max([14] + [len(cls.name) for cls in methods]), max(len(sub.setting) for sub in cfg.settings())


def _log_row(log, several: bool, row: dict, width: int = 14, setting_width: int = 0) -> dict:
    """Log a finished job's line (``several``: the run has several settings, which it names); the method
    and setting padded to ``width`` and ``setting_width`` (:func:`line_widths`)."""
    picked = f", picked {row['picked']}" if isinstance(row.get("picked"), str) else ""
    setting = f"{row['setting']:<{setting_width}} " if several else ""
    log(f"  {row['method']:<{width}} {setting}seed {row['seed']}: accuracy "
        f"{100 * row['accuracy']:.1f}%  ({row['wall_s']:.1f}s)"
        + picked + (", diverged" if row.get("diverged") is True else ""))
    return row
