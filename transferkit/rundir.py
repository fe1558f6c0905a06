"""A run directory's files and the checks that let it resume: where a job's row and model
go, the digests that tie each finished row to the config, data, source network and number
of processes it was computed with, and the refusals (each naming what changed) when a resume
would mix rows computed otherwise."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
from pathlib import Path

import yaml

from .config import (
    ADDED_FIELDS,
    CHOOSES_JOBS,
    CHOOSES_SETTINGS,
    NOT_RESULTS,
    ExperimentConfig,
    dump_config,
    flat_config,
    from_dict,
)
from .distributed import world_size
from .errors import TransferkitError, check, first_named, quiet
from .io import MATRIX_FILES, check_job_name, job_stem, read_job, read_json, remove_inside, write_json
from .methods import get_method
from .methods.base import number_spellings, resolved_options, trained_options
from .results import ROW_KEYS
from .rundata import Prepared


def job_path(run_dir: Path, cfg: ExperimentConfig, method: str, seed: int) -> Path:
    return Path(run_dir) / "jobs" / f"{job_stem(method, cfg.setting, seed)}.json"


def model_path(run_dir: Path, cfg: ExperimentConfig, method: str, seed: int) -> Path:
    return Path(run_dir) / "models" / f"{job_stem(method, cfg.setting, seed)}.pt"


def network_path(model: Path) -> Path:
    """The network file (safetensors, :func:`~transferkit.networks.save_network`'s) saved beside a job's
    model file ``model`` (:func:`model_path`)."""
    return model.with_name(f"{model.stem}.safetensors")


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


def check_same_data(run_dir: Path, data: Prepared, main: bool) -> None:
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
    changed = set() if then is None else _changed_keys(then, now)
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
            remove_inside(run_dir / name, run_dir)
        remove_inside(run_dir / "checkpoints", run_dir)
        write_json(path, {**now, "sizes": sizes})


def check_worker_data(run_dir: Path, data: Prepared) -> None:
    """Refuse a job in a worker process whose data is not what the run recorded in ``data.json``
    when it started (:func:`check_same_data`): a worker reads a ``folder:`` / ``npz:`` domain again,
    and files changed in between would give its job other images than the other jobs and the
    record."""
    path = run_dir / "data.json"
    then = read_json(path, "data.json") if path.exists() else None
    if not isinstance(then, dict) or "format" not in then:  # none, or format 1: nothing to compare
        return
    now = data_digests(data)
    changed = sorted(_changed_keys(then, now) - {"sizes"})
    check(not changed, f"{run_dir}: the data changed while the run ran: this worker process read other images, labels "
                       f"or class names of {', '.join(changed)} than the run recorded in data.json when it started; "
                       f"restore the files and resume")


def changed_since(run_dir: Path, data: Prepared, keys: tuple[str, ...]) -> list[str]:
    """The splits among ``keys`` (``"target.test"``, ...) whose data differ from what the run's
    ``data.json`` records, and ``folder_label_draws`` where a folder's split rule changed since;
    read only (none where the record is missing or unreadable). A record of format 1 (2026-11-29:
    images and labels only) is compared as a resume compares it."""
    path = Path(run_dir) / "data.json"
    try:
        then = read_json(path) if path.is_file() else None
    except TransferkitError:
        return []
    now = data_digests(data)
    if not isinstance(then, dict) or then.get("format", now["format"]) != now["format"]:  # another format's digests
        return []
    if "format" not in then:
        old = {key: d.digest() for key, d in _splits(data).items()}
        then = {**{k: now[k] if then.get(k) == old[k] else then.get(k) for k in old}, "format": now["format"]}
    return sorted(k for k in _changed_keys(then, now) if k in keys or k == "folder_label_draws")


def _changed_keys(then: dict, now: dict) -> set[str]:
    """The keys of two ``data.json`` records whose values differ (or that one of them lacks)."""
    return {k for k in set(then) | set(now) if then.get(k) != now.get(k)}


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


def _made_otherwise(finished: dict, key: str, now) -> list[tuple[str, int]]:
    """The ``(method, seed)`` of the finished rows whose ``key`` is not ``now``; a row without
    ``key`` (written before it was recorded) is not counted."""
    return sorted(job for job, row in finished.items() if row.get(key, now) != now)


def check_same_source(run_dir: Path, finished: dict, digest: str) -> None:
    """Refuse to add rows from another source network than the finished rows started from (a
    deleted ``source.safetensors`` pre-trained again under other threads or kernels); rows
    without ``source_digest`` (written before it was recorded) are not checked."""
    other = [f"{name} seed {seed}" for name, seed in _made_otherwise(finished, "source_digest", digest)]
    check(not other, f"{run_dir}: {len(other)} finished job(s) ({first_named(other)}) started from another "
                     f"source network than this resume has ({digest}; source.safetensors was made again, under other "
                     f"threads, CPU kernels or torch than kernels.json records, or by a plugin backbone's builder "
                     f"that changed since?): their rows and new ones would not go together; restore "
                     f"source.safetensors, resume under the environment of kernels.json, or start a new run (or "
                     f"delete those job files to run them again)")


def check_unfinished_checkpoints(cfg: ExperimentConfig, run_dir: Path, jobs: list, finished: dict,
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


def finished_rows(cfg: ExperimentConfig, run_dir: Path, jobs: list, stored: dict | None) -> dict:
    """``{(method, seed): row}`` of the jobs already finished in ``run_dir``, each checked
    against ``cfg`` by its digest; a row from before digests (no ``config_digest``) by the
    options that the run's stored config gave its method."""
    out, refused = {}, []  # every job file refused, named at once
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
            if older and not same:
                refused.append(f"{job} was trained by an older form of {cls.name} ({cls.revision_note}); delete the "
                               f"job file to run the job again, or use a new run directory")
                continue
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
        if not same:
            refused.append(f"{job} was run with another configuration than {run_dir / 'config.yaml'} gives "
                           f"now{hint}; restore that config, or delete the job file to run the job again")
            continue
        # its digest is of the current revision: recorded as new rows record it (summarize keeps revisions apart)
        out[cls.name, seed] = {**row, "method_revision": cls.revision} if cls.revision and "config_digest" in row \
            else row
    if refused:
        raise TransferkitError(refused[0] if len(refused) == 1 else
                               f"{len(refused)} job files cannot be resumed as they are:\n  " + "\n  ".join(refused))
    check_same_world(cfg, run_dir, out)
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


def check_same_world(cfg: ExperimentConfig, run_dir: Path, finished: dict) -> None:
    """Refuse to resume rows made with another number of data-parallel processes (``--nproc``
    rounds the batch up and keeps BatchNorm statistics per shard: other rows); a row without
    ``world_size`` (written before it was recorded) is not checked: its count is unknown."""
    now = world_size()
    other = sorted(f"jobs/{job_path(run_dir, cfg, name, seed).name}"
                   for name, seed in _made_otherwise(finished, "world_size", now))
    if other:
        then = sorted({row.get("world_size", now) for row in finished.values()} - {now})
        counts, named = " and ".join(map(str, then)), first_named(other)
        raise TransferkitError(
            f"{run_dir}: {len(other)} finished job(s) ({named}) ran "
            f"in {counts} data-parallel process(es) and this resume runs {now}: --nproc changes a job's rows "
            f"(docs/scale.md), so they would not go together; resume with --nproc {then[0]}, or use a new run "
            f"directory (or delete those job files to run them again)")


#: how :func:`job_digest` counted a method's options: now, and in rows of earlier versions
DIGEST_FORMS = ("trained", "untyped", "given", "every")


def job_digest(cfg: ExperimentConfig, method: str, form: str = "trained", revision: int | None = None,
               stages: str | None = None, options: dict | None = None) -> str:
    """What a job's row depends on: the config but what only chooses jobs or where they run
    (``methods``, ``repeats``, ``NOT_RESULTS``), with only this method's options as they
    change what is trained (``form="trained"``: :func:`~transferkit.methods.base.trained_options`,
    so an option spelled at its default or a ``not_trained_options`` one, e.g. flex's
    ``workers``, changes nothing, and ``5`` and ``5.0`` of a float option are one). Earlier rows
    counted the numbers as written (``"untyped"``, before 2026-12-05), or the options as given, less
    (``"given"``) or with (``"every"``) the ``not_trained_options``. Stored in the row, it
    tells a job file written under another config.yaml from one of this run. A method's
    nonzero ``revision`` (``revision``: another one) is part of it. ``stages``: the stages'
    devices as counted instead of ``cfg``'s (see :func:`row_digests`); ``options``: the method's
    options as counted instead of ``cfg``'s."""
    check(form in DIGEST_FORMS, f"digest form must be one of {DIGEST_FORMS}, got {form!r}")
    flat = {k: v for k, v in flat_config(cfg.to_dict()).items() if k not in NOT_RESULTS | CHOOSES_JOBS}
    if stages is not None:
        flat["pretrain.device"] = flat["train.device"] = stages
    for key, default in ADDED_FIELDS.items():
        if flat.get(key) == default:  # at its default: rows from before the field keep their digest
            flat.pop(key, None)
    cls, given = get_method(method), cfg.options.get(method, {}) if options is None else options
    revision = cls.revision if revision is None else revision
    if revision:
        flat["method_revision"] = revision
    files = {k: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for k, path in option_files(cls, given).items()}
    if files:  # a matrix file's contents, not only its name (an edited file gives other jobs)
        flat["option_files"] = files
    if form in ("trained", "untyped"):
        flat["options"] = trained_options(cls, given, typed=form == "trained")
    else:
        skip = () if form == "every" else cls.not_trained_options
        flat["options"] = {k: v for k, v in given.items() if k not in skip}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_digests(cfg: ExperimentConfig, method: str, revision: int | None = None) -> set[str]:
    """Every :func:`job_digest` a row of ``method`` trained under ``cfg`` may hold: one per
    ``DIGEST_FORMS``, and on a device other than cpu each also with the stages' devices at cpu
    (config.yaml stored them so when a config file or --set gave `device`, before 2026-12-04;
    the stages always ran on `device`). The earlier forms, which counted numbers as written, are
    taken with a ``float`` option's whole numbers spelled either way (``1`` or ``1.0``)."""
    stages = (None, "cpu") if cfg.device != "cpu" else (None,)
    spellings = number_spellings(get_method(method), cfg.options.get(method, {}))
    return {job_digest(cfg, method, form, revision, s, options)
            for form in DIGEST_FORMS for s in stages for options in ([None] if form == "trained" else spellings)}


def row_revision(row: dict, config: dict | None) -> int | None:
    """The ``revision`` of its method that trained a run's ``row``: the one it records
    (``method_revision``, rows since 2026-12-07, of a nonzero revision), 0 for a method that has
    none, else the one whose :func:`job_digest` under the run's ``config`` (results.json's or
    config.yaml's mapping) its ``config_digest`` is; None where that cannot tell (a method not
    known here, a row without a digest, a benchmark's plan for a config, a config changed since)."""
    if isinstance(row.get("method_revision"), int) and not isinstance(row["method_revision"], bool):
        return row["method_revision"]
    try:
        cls = get_method(row["method"])
    except Exception:  # a plugin's method not registered here
        return None
    if not cls.revision:
        return 0
    if not isinstance(row.get("config_digest"), str) or not isinstance(config, dict) or "source" not in config:
        return None
    try:
        with quiet():  # a config of an older form warns as it is read: not here, for a table
            sub = next(c for c in from_dict(ExperimentConfig, config).settings() if c.setting == row.get("setting"))
        return next((rev for rev in range(cls.revision, -1, -1)
                     if row["config_digest"] in row_digests(sub, cls.name, rev)), None)
    except Exception:  # a config of another form, or options the method refuses now
        return None


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


def check_same_config(path: Path, cfg: ExperimentConfig) -> dict:
    """Refuse to resume the run of ``path`` (its ``config.yaml``) with a config whose results
    would differ; the error names the keys. ``methods``, ``repeats``, ``options``, ``k`` and
    ``ratio`` only choose jobs: a finished job is checked by its own digest (:func:`job_digest`) instead."""
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise TransferkitError(f"{path} is unreadable: {e}") from e
    check(isinstance(stored, dict), f"{path} is not a run config (not a mapping)")
    diff = _config_changes(stored, cfg)
    # a benchmark's run (BENCH/NAME, uda's BENCH/pair/s0): bench resumes it
    in_bench = any((p / "plan.json").is_file() for p in path.parent.parents[:2])
    command = shlex.join(["transferkit", "run", "--resume", str(path.parent)])
    check(not diff, f"{path.parent} holds a run with another config ({'; '.join(diff)}); resume it with the same "
                    f"config" + ("" if in_bench else f" (`{command}` alone reads its config.yaml)"))
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
