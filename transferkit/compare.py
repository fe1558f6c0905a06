"""Several runs or benchmarks side by side (``transferkit summary A B``): their rows as one
table, and lines that name where the runs differ (environment, settings, data)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from .config import ADDED_EPISODE_FIELDS, ADDED_FIELDS, CHOOSES_JOBS, NOT_RESULTS
from .errors import TransferkitError, check
from .io import read_json
from .results import read_results, text_notes, unfinished_run


def combine_runs(paths) -> dict:
    """The results of several runs or benchmarks as one: ``rows`` each naming its ``run`` (the
    directory's name, or its path where two names are the same), ``config``: a list of (run,
    config), ``failed``: each run's failed jobs, named by run, ``data_differ``: a line per domain
    spec that two runs read into other data (:func:`data_differ_lines`), ``config_differ``: the
    line naming the config keys the runs differ in (:func:`config_differ_lines`), ``notes``: each
    run's own notes (named by run), the environment-differ lines and a note when episode rows are
    mixed with test-split rows; ``unfinished`` (when one is): what completes the runs not
    finished, whose finished jobs' rows are in. The same directory twice is refused."""
    files = [Path(p) / "results.json" if Path(p).is_dir() else Path(p) for p in paths]
    where = [f.resolve() for f in files]
    twice = sorted({str(f) for f, w in zip(files, where) if where.count(w) > 1})
    check(not twice, f"{', '.join(twice)} given twice: its rows would count twice")
    names = [_run_label(f.parent) for f in files]
    labels = [n if names.count(n) == 1 else str(f.parent) for n, f in zip(names, files)]
    labels = [label if labels.count(label) == 1 else str(f) for label, f in zip(labels, files)]  # one folder's files
    rows, config, failed, notes, episodes, envs, unfinished = [], [], [], [], [], [], []
    for label, f in zip(labels, files):  # a run not finished (one still working, or stopped): its finished jobs
        data = (unfinished_run(f.parent) if f.name == "results.json" and not f.exists() else None) or read_results(f)
        if data.get("unfinished"):
            unfinished.append(data["unfinished"].removeprefix(": "))
        rows += [{**r, "run": label} for r in with_revisions(data["rows"], data.get("config"))]
        notes += [f"Run {label}: {n}" for n in text_notes(data)]
        envs.append((label, data.get("environment") if isinstance(data.get("environment"), dict) else None))
        if isinstance(data.get("config"), dict) and "episodes" in data["config"]:
            episodes.append(label)
        config.append((label, data.get("config") if isinstance(data.get("config"), dict) else None))
        failed += [{**x, "job": f"{label}/{x.get('job')}"} if isinstance(x, dict) else f"{label}: {x}"
                   for x in data.get("failed") or []]
    differ = data_differ_lines([(label, f.parent) for label, f in zip(labels, files)], rows)
    notes += environment_differ_lines(envs)
    others = [label for label in labels if label not in episodes]
    if episodes and others:
        notes.append(f"The rows of {', '.join(episodes)} are N-way K-shot episode accuracies (transferkit episodes), "
                     f"those of {', '.join(others)} accuracies on a test split: not one measure.")
    return {"rows": rows, "config": config, "failed": failed, "data_differ": differ,
            "config_differ": config_differ_lines(config), "notes": notes,
            **({"unfinished": f": {'; '.join(unfinished)}"} if unfinished else {})}


def with_revisions(rows: list[dict], config) -> list[dict]:
    """A run's ``rows``, each of a method that has a ``revision`` given the ``method_revision`` it does
    not record (rows of before 2026-12-07) where its digest under the run's ``config`` tells it
    (:func:`~transferkit.rundir.row_revision`), so that :func:`~transferkit.results.summarize` keeps
    rows of two revisions apart; the others as they are."""
    from .rundir import row_revision
    from .tables import RevisionsHere
    out, known, nows = [], {}, RevisionsHere()
    for r in rows:
        if "method_revision" not in r and nows[str(r.get("method"))]:
            key = (r.get("method"), r.get("setting"), r.get("config_digest"))
            if key not in known:
                known[key] = row_revision(r, config if isinstance(config, dict) else None)
            r = r if known[key] is None else {**r, "method_revision": known[key]}
        out.append(r)
    return out


#: what a results.json's ``environment`` records that moves the numbers (docs/scale.md), as a table names it
VERSIONED = {"transferkit": "transferkit", "revision": "transferkit revision", "torch": "torch", "cuda": "CUDA",
             "packages.pillow": "Pillow", "packages.numpy": "NumPy"}


def environment_differ_lines(envs: list[tuple[str, dict | None]]) -> list[str]:
    """A line naming the versions (transferkit, torch, CUDA, Pillow, NumPy) that differ between the
    ``environment`` records of combined runs (runs without one are left out): rows of other versions
    may differ for that alone (docs/scale.md); and one naming the operations whose
    :func:`~transferkit.runtime.kernel_fingerprint` differs between them (runs without one are left out)."""
    flats = [(label, _flat_all(env)) for label, env in envs if env]
    parts = []
    for key, name in VERSIONED.items():
        by_value: dict[str, list[str]] = {}
        for label, env in flats:
            if key in env:
                by_value.setdefault(str(env[key]), []).append(label)
        if len(by_value) > 1:
            parts.append(f"{name} " + "; ".join(f"{v} in {', '.join(runs)}" for v, runs in by_value.items()))
    lines = [f"The runs were made with other versions: {' / '.join(parts)}; their rows may differ for that alone "
             f"(docs/scale.md)."] if parts else []
    prints = [(label, env["kernel_fingerprint"]) for label, env in envs
              if env and isinstance(env.get("kernel_fingerprint"), dict)]
    ops = sorted({op for _, fp in prints for op in fp if len({str(f.get(op)) for _, f in prints}) > 1})
    if ops:  # the same versions can still compute differently: another processor's kernels
        lines.append(f"The runs' CPU kernels compute {', '.join(ops)} differently (kernel_fingerprint: "
                     f"{', '.join(label for label, _ in prints)}): rows that pass through them may differ for that "
                     f"alone (docs/scale.md).")
    return lines


#: the name of a directory transferkit run or bench makes: the time it started (``runs/NAME/<time>``)
RUN_STAMP = re.compile(r"\d{8}-\d{6}(-\d+)?")


def _run_label(run_dir: Path) -> str:
    """A run's name in a table of several: its directory's name, with the folder above it for a
    timestamped one (``cli1/20261202-101500-000001``: the timestamps alone do not tell runs apart)."""
    name = run_dir.name
    return f"{run_dir.parent.name}/{name}" if RUN_STAMP.fullmatch(name) and run_dir.parent.name else name


#: config keys a table of several runs does not compare: where and how they ran, which jobs (rows name them)
UNCOMPARED = NOT_RESULTS | (CHOOSES_JOBS - {"options"})
#: most config keys the line of :func:`config_differ_lines` names
DIFFER_KEYS = 6


def config_differ_lines(configs: list[tuple[str, dict | None]]) -> list[str]:
    """A line naming the config keys (those that change rows) in which the runs of a combined table
    differ, with each value's runs: ``backbone: lenet in a; mine in b``, e.g. rows of two networks
    side by side, which the table's columns do not show. Runs without a config are left out; a run's
    config from before a key was added reads it at its default."""
    flats = [(label, _flat_all(_comparable(c))) for label, c in configs if isinstance(c, dict)]
    if len(flats) < 2:
        return []
    if all("backbone" in f for _, f in flats):  # run configs, not benchmark plans
        flats = [(label, {**ADDED_FIELDS, **f}) for label, f in flats]
    parts = []
    for key in sorted({k for _, f in flats for k in f} - UNCOMPARED - {f"plan.{k}" for k in UNCOMPARED}):
        by_value: dict[str, list[str]] = {}  # the value's canonical JSON -> its runs
        # a method's options, among the runs that ran it (the others have no rows of it)
        for label, f in ([(label, f) for label, f in flats if key in f] if key.startswith("options.") else flats):
            by_value.setdefault(json.dumps(f.get(key), sort_keys=True, default=str), []).append(label)
        if len(by_value) > 1:
            parts.append(f"{key}: " + "; ".join(f"{_short(json.loads(value))} in {', '.join(runs)}"
                                                for value, runs in by_value.items()))
    if not parts:
        return []
    more = f"; and {len(parts) - DIFFER_KEYS} more key(s)" if len(parts) > DIFFER_KEYS else ""
    where = "config.yaml" if all("backbone" in f for _, f in flats) else "results.json's config"
    return [f"The runs' configs differ in {' / '.join(parts[:DIFFER_KEYS])}{more} ({where}): the rows of one "
            f"method are not of one config."]


def _comparable(config: dict) -> dict:
    """A run's config with its methods' options as its jobs ran them (an episodes.json's with the episodes
    plan's keys added since at an older file's values), or a benchmark's results.json config with its plan as
    :func:`~transferkit.bench.comparable_plan` reads it."""
    if isinstance(config.get("episodes"), dict):
        config = {**config, "episodes": {**ADDED_EPISODE_FIELDS, **config["episodes"]}}
    if "options" in config:
        return {**config, "options": _run_options(config)}
    if isinstance(config.get("plan"), dict) and isinstance(config.get("benchmark"), str):
        from .bench import comparable_plan
        return {**config, "plan": comparable_plan(config["benchmark"], config.get("quick"), config["plan"])}
    return config


def _run_options(config: dict):
    """A run config's ``options`` as its jobs ran them: of the methods it runs only, each option at
    its value (given, else the default); as written where a method is not known here (a plugin's)."""
    from .methods import get_method
    from .methods.base import resolved_options
    options, methods = config.get("options"), config.get("methods")
    if not isinstance(options, dict) or not isinstance(methods, list):
        return options
    out = {}
    for name in methods:
        try:
            out[str(name)] = resolved_options(get_method(name), options.get(name))
        except Exception:  # unknown here, or options it refuses: compared as written
            out[str(name)] = options.get(name)
    return out


def _flat_all(config: dict, prefix: str = "") -> dict:
    """A config mapping with every nested mapping's keys dotted (``train.lr``, ``plan.train.lr``;
    ``options.dann`` kept whole: a method's options are one value)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and k == "options":
            out.update({f"{prefix}options.{name}": value for name, value in v.items()})
        elif isinstance(v, dict) and v:
            out.update(_flat_all(v, f"{prefix}{k}."))
        else:
            out[prefix + str(k)] = v
    return out


def _short(value, width: int = 40) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


#: the config keys besides a domain's spec that decide the splits a run reads from it (``seed`` too for a
#: spec with shifts or grouped views, whose images it draws): runs that differ in them read other data
DATA_KEYS = {"source": ("image_size", "channels", "source_classes", "val_fraction", "test_fraction"),
             "target": ("image_size", "channels", "target_classes", "val_per_class", "test", "val_fraction",
                        "test_fraction")}


def _data_records(run_dir: Path) -> list[tuple[dict, dict]]:
    """``(config, data)`` of each run in ``run_dir`` (its own, or a benchmark's runs up to two
    levels below it, ``PAIR/s0/``; not a whole tree a results.json was copied into): a
    run's ``data.json`` (content digests of its splits) with the ``config.yaml`` beside it. Runs
    without both (made before data.json was written) are left out."""
    out = []
    for path in sorted(p for depth in ("", "*/", "*/*/") for p in run_dir.glob(f"{depth}data.json")):
        try:
            data = read_json(path)
            config = yaml.safe_load((path.parent / "config.yaml").read_text(encoding="utf-8"))
        except (TransferkitError, OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(config, dict):
            out.append((config, data))
    return out


def _domain_digests(config: dict, data: dict) -> dict[tuple, tuple]:
    """``{(side, spec, how the config reads it): its splits' digests}`` of one run's record."""
    out = {}
    config = {**ADDED_FIELDS, **config}  # a run from before a key was added read it at its default
    for side, keys in DATA_KEYS.items():
        spec = config.get(side)
        digests = tuple(sorted((k, v) for k, v in data.items() if k.startswith(f"{side}.")))
        if isinstance(spec, str) and digests:
            how = tuple(repr(config.get(k)) for k in keys) + ((config.get("seed"),) if "+" in spec or "@" in spec
                                                              else ())
            out[(side, spec, how)] = digests
    return out


def _runs_apart(groups: list[list[str]]) -> str:
    """Runs grouped by the data they read: ``"run a as in run b"``, or of three groups and more
    ``"runs a, c / b / d"`` (runs of the same data together)."""
    named = [f"run{'s' if len(g) > 1 else ''} {', '.join(g)}" for g in groups]
    return f"{named[0]} as in {named[1]}" if len(groups) == 2 else f"runs {' / '.join(', '.join(g) for g in groups)}"


def data_differ_lines(runs: list[tuple[str, Path]], rows: list[dict]) -> list[str]:
    """A line per domain spec (a source or target the table's rows name) that two of ``runs``
    (``(label, directory)``) read into other data under the same config keys: their ``data.json``
    digests differ, e.g. ``npz:data.npz``, a relative path, read from two working directories. Their
    rows are then side by side in one table but not on the same data. Silent where a run has no data.json."""
    named = {(r["run"], side, r.get(side)) for r in rows for side in DATA_KEYS}
    seen: dict[tuple, dict[str, set]] = {}  # (side, spec, how) -> run -> its digests
    for label, run_dir in runs:
        for config, data in _data_records(run_dir):
            for key, digests in _domain_digests(config, data).items():
                if (label, key[0], key[1]) in named:
                    seen.setdefault(key, {}).setdefault(label, set()).add(digests)
    lines = []
    for (side, spec, _), by_run in seen.items():
        groups: dict[frozenset, list[str]] = {}  # runs of the same data, named together
        for label, digests in by_run.items():
            groups.setdefault(frozenset(digests), []).append(label)
        if len(groups) < 2:
            continue
        split_digests = [dict(d) for ds in groups for d in ds]
        splits = sorted({k for d in split_digests for k in d if len({x.get(k) for x in split_digests}) > 1})
        base = spec.split("+")[0].split("@")[0]
        relative = base.startswith(("npz:", "folder:")) and not Path(base.split(":", 1)[1]).expanduser().is_absolute()
        lines.append(f"The {side} {spec} is not the same data in {_runs_apart(list(groups.values()))} "
                     f"({', '.join(splits)} differ in their data.json): their rows are not on the same data"
                     + ("; a relative path is read from the directory each run started in" if relative else "") + ".")
    return lines
