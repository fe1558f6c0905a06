"""Results: one stable JSON shape for runs and benchmarks, read, summarised and written
(the tables printed from it: :mod:`transferkit.tables`; several runs side by side:
:mod:`transferkit.compare`).

``results.json`` is ``{"name": ..., "config": {...}, "rows": [...], "summary": [...], "environment": {...}}``
with one row per (method, source, target, setting, seed) holding at least ``method``, ``source``,
``target``, ``setting``, ``seed``, ``accuracy`` (target test accuracy in [0, 1]) and
``wall_s``; methods may add fields. ``environment`` (:func:`~transferkit.runtime.kernel_environment`)
names the versions, CPU, kernels and threads of the process that wrote the file; the rows of a
resumed directory may have been computed by an earlier process.
"""

from __future__ import annotations

import math
import re
import shlex
from numbers import Real
from pathlib import Path

import yaml

from .errors import TransferkitError, check
from .evaluate import mean_se
from .io import check_job_name, directory_holder, read_json, write_json, write_text
from .jobs import default_workers
from .runtime import kernel_environment
from .tables import ALL_SOURCE, RevisionsHere, labels_used, markdown_table, md_cell, setting_order, test_imbalance

ROW_KEYS = ("method", "source", "target", "setting", "seed", "accuracy", "wall_s")


#: what :func:`write_results` writes: removed when a resume starts jobs, so that a stopped
#: resume reads as not finished (not as the older results)
RESULT_FILES = ("results.json", "results.md")


def unfinished_hint(run_dir: Path) -> str:
    """What to do with a run or benchmark directory that has finished jobs but no results, or
    with the folder of a config's runs (``runs/NAME``: one timestamped directory per run). A
    benchmark directory (``plan.json``) is completed by the benchmark its plan names."""
    run_dir = Path(run_dir)
    plan = bench_plan(run_dir)
    lock_only = only_its_lock(run_dir)
    holder = directory_holder(run_dir) if (run_dir / "config.yaml").is_file() or plan is not None or lock_only \
        else None
    if holder is not None and not (run_dir / "results.json").is_file():  # resuming it now would be refused
        return (f": {run_dir} is not finished: a transferkit process ({holder}) is working in it now and writes the "
                f"results when it ends")
    if lock_only:
        return (f": {run_dir} holds only the lock of a run stopped before its first job (killed while it read its "
                f"data): nothing was kept; run its config again")
    if plan is not None and not (run_dir / "results.json").is_file():
        found = list(run_dir.glob("**/jobs/*.json"))  # its own and those of the runs its jobs made (main-k2/jobs)
        command = shlex.join(["transferkit", "bench", *_nproc_flag(found), str(plan.get("benchmark") or "NAME"),
                              *(["--quick"] if plan.get("quick") else []), "--resume", str(run_dir)])
        return (f": {run_dir} is a benchmark directory that is not finished (it holds {len(found)} finished job(s)); "
                f"`{command}` completes it and writes the results")
    jobs = sorted((run_dir / "jobs").glob("*.json")) if plan is None else []
    settings = _settings_of(_run_config(run_dir)) if jobs else None
    if settings is not None:  # not the jobs of a setting a resume left out (their files stay)
        jobs = [j for j in jobs if _row_field(j, "setting") in settings]
    n = len(jobs)
    if n and (run_dir / "config.yaml").is_file():
        return (f": {run_dir} holds {n} finished job(s) but is not finished; "
                f"`{shlex.join(['transferkit', 'run', *_nproc_flag(jobs), '--resume', str(run_dir)])}` completes it "
                f"and writes the results")
    if (run_dir / "config.yaml").is_file() and plan is None:  # e.g. killed during pre-training
        return (f": {run_dir} is a run that has finished no job yet; "
                f"`{shlex.join(['transferkit', 'run', '--resume', str(run_dir)])}` goes on with it")
    if n:  # neither a config nor a plan: which command made it is not written down
        quoted = shlex.quote(str(run_dir))
        return (f": {run_dir} holds {n} finished job(s) but is not finished; `transferkit run --resume {quoted}` "
                f"(or `transferkit bench NAME --resume {quoted}`) completes it and writes the results")
    listing = runs_listing(run_dir, runs_inside(run_dir))
    return f": {run_dir} {listing}" if listing else ""


def runs_listing(folder: Path, runs: list[str], shown: int = 5) -> str:
    """``runs`` (:func:`runs_inside` of ``folder``) as the end of a message: the newest ``shown`` by start
    time (:func:`_by_time`) and how many more, and the newest as an example ('' if none)."""
    runs = sorted(runs, key=_by_time)  # newest last
    if not runs:
        return ""
    more = f" and {len(runs) - shown} more" if len(runs) > shown else ""
    listed = ", ".join(runs[-shown:])
    return f"holds runs, one directory each ({listed}{more}): give one, e.g. {Path(folder) / runs[-1]}"


#: a run or benchmark directory's own name: its start time (``20261208-012345-123456``)
_STARTED = re.compile(r"\d{8}-\d{6}(-\d+)?")


def _by_time(relative: str) -> tuple:
    """A sort key of run directories (``NAME/<timestamp>``) by their start time, those named otherwise
    (a folder made for ``--resume``, ``runs/bench-flex/v5``) first, by name."""
    name = relative.rsplit("/", 1)[-1]
    return bool(_STARTED.fullmatch(name)), name, relative


def runs_inside(folder: Path, depth: int = 2, with_jobs: bool = False) -> list[str]:
    """The run and benchmark directories (``config.yaml``, ``plan.json``) 1 to ``depth`` levels inside ``folder``
    (a config's ``runs/NAME``, or the ``--out`` folder that holds ``NAME/<timestamp>``), not those inside another,
    as paths relative to it, sorted; ``with_jobs``: only runs (``config.yaml``) with their ``jobs/``, such as
    those inside a benchmark directory."""
    folder = Path(folder)
    names = ("config.yaml",) if with_jobs else ("config.yaml", "plan.json")
    found = {p.parent for level in range(1, depth + 1) for name in names
             for p in folder.glob("*/" * level + name)
             if not with_jobs or (p.parent / "jobs").is_dir()} if folder.is_dir() else set()
    return sorted(p.relative_to(folder).as_posix() for p in found if not any(q in p.parents for q in found))


def stopped_lines(data: dict) -> list[str]:
    """The line under a table of a stopped run's finished jobs (``data``: :func:`unfinished_run`'s,
    whose ``unfinished`` names what completes it); none for a finished run's."""
    return [f"The run is not finished: the jobs finished so far{data['unfinished']}."] if data.get("unfinished") \
        else []


def only_its_lock(run_dir: Path) -> bool:
    """``run_dir`` holds nothing but a ``.lock``: a run killed (SIGKILL) after it took its new
    directory and before its config.yaml (written before its data is read; until 2026-12-07 after)."""
    return run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == [".lock"]


def unfinished_run(run_dir: Path) -> dict | None:
    """The finished rows of a run directory that is not finished (``config.yaml`` and job files,
    no ``results.json``), as :func:`read_results` gives a finished one's (``unfinished``: what
    completes it); None for any other path. Job files that are no result rows are left out."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / "results.json").exists() or not (run_dir / "config.yaml").is_file():
        return None
    config = _run_config(run_dir)
    settings = _settings_of(config)
    rows = []
    for job in sorted((run_dir / "jobs").glob("*.json")):
        row = _row_field(job, None)
        if isinstance(row, dict) and all(k in row for k in ROW_KEYS) and (settings is None or row.get("setting")
                                                                         in settings):  # not a setting left out
            check_job_name(job, row)
            rows.append(row)
    if not rows:
        return None
    methods = [str(m) for m in config.get("methods") or []] if isinstance(config, dict) and \
        isinstance(config.get("methods"), list) else []
    rank = {m: i for i, m in enumerate(methods)}  # the run's job order: setting, seed, the config's methods
    listed = next(([f"{key}={v}" for v in config[key]] for key in ("k", "ratio")
                   if isinstance(config, dict) and isinstance(config.get(key), list)), [])
    placed = {setting: i for i, setting in enumerate(listed)}  # a list k or ratio runs in its order (k: [10, 1])
    rows.sort(key=lambda r: (placed.get(str(r["setting"]), len(placed)), setting_order(str(r["setting"])),
                             r["seed"] if isinstance(r["seed"], int) else -1, rank.get(r["method"], len(rank)),
                             str(r["method"])))
    return {"rows": rows, "config": config, "unfinished": unfinished_hint(run_dir)}


def _run_config(run_dir: Path) -> dict | None:
    """A run directory's ``config.yaml`` as a mapping; None where it has none or it is unreadable."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _settings_of(config: dict | None) -> set[str] | None:
    """The settings (``k=5``, ...) a run's stored config runs, one per value of a list ``k`` or
    ``ratio``; None where the config does not say."""
    if config is None or "k" not in config or not all(isinstance(config.get(key), (int, list, type(None)))
                                                      for key in ("k", "ratio")):
        return None
    for key in ("k", "ratio"):
        value = config.get(key)
        if value is not None:
            return {f"{key}={v}" for v in (value if isinstance(value, list) else [value])}
    return {"all"}


def _row_field(path: Path, key: str | None):
    """Field ``key`` of the finished job row in ``path`` (``None``: the whole row), None when it
    has none or is unreadable."""
    try:
        row = read_json(path)
    except TransferkitError:
        return None
    return row if key is None else row.get(key) if isinstance(row, dict) else None


def world_sizes(jobs) -> set[int]:
    """The process counts (``--nproc``) the job rows in the files ``jobs`` were made under (rows
    without one, written before it was recorded, and unreadable files left out)."""
    return {w for w in (_row_field(j, "world_size") for j in jobs) if isinstance(w, int)}


def _nproc_flag(jobs) -> list[str]:
    """``--nproc N`` for a resume of the job rows ``jobs``, which resume under their count."""
    worlds = world_sizes(jobs) - {1}
    return ["--nproc", str(max(worlds))] if worlds else []


def bench_plan(run_dir: Path) -> dict | None:
    """A benchmark directory's ``plan.json`` (naming its ``benchmark`` and ``quick``; ``{}``
    when unreadable), or None where there is none."""
    if not (run_dir / "plan.json").is_file():
        return None
    try:
        plan = read_json(run_dir / "plan.json")
    except TransferkitError:
        plan = None
    return plan if isinstance(plan, dict) else {}


def text_notes(data: dict) -> list[str]:
    """The lines of a results file's ``notes`` that are text (one text given alone is one line,
    not one line per character)."""
    notes = data.get("notes") or []
    return [notes] if isinstance(notes, str) else [n for n in notes if isinstance(n, str)] \
        if isinstance(notes, list) else []


def read_results(path: str | Path) -> dict:
    """Read a ``results.json`` (a run directory given: its ``results.json``), checking the shape
    the tables rely on (a clear error names what is missing instead of a KeyError deep inside a table)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    check(path.is_file(), f"results file {path} does not exist{unfinished_hint(path.parent)}")
    data = read_json(path, "results file")
    check(isinstance(data, dict) and isinstance(data.get("rows"), list),
          f"{path} is not a transferkit results file (no 'rows' list)")
    for i, row in enumerate(data["rows"]):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        check(not missing, f"{path}: rows[{i}] lacks {', '.join(missing)}")
        check(all(isinstance(row[k], Real) and not isinstance(row[k], bool) and math.isfinite(row[k])
                  for k in ("accuracy", "wall_s")), f"{path}: rows[{i}] has a non-numeric accuracy or wall_s")
        check(isinstance(row["seed"], int) and not isinstance(row["seed"], bool),
              f"{path}: rows[{i}] has seed {row['seed']!r}; seeds are whole numbers")
        check(all(isinstance(row[k], str) for k in ("method", "source", "target", "setting")),
              f"{path}: rows[{i}] has a method, source, target or setting that is not text")
        check(row.get("peak_rss_mb") is None or isinstance(row["peak_rss_mb"], Real),
              f"{path}: rows[{i}] has a non-numeric peak_rss_mb")
        check(0.0 <= row["accuracy"] <= 1.0, f"{path}: rows[{i}] has accuracy {row['accuracy']!r}; accuracies are "
                                             f"fractions in [0, 1] (a percentage?)")
        g = row.get("group_accuracy")
        check(g is None or (isinstance(g, Real) and not isinstance(g, bool) and 0.0 <= g <= 1.0),
              f"{path}: rows[{i}] has group_accuracy {g!r}; it is a fraction in [0, 1] or null")
    return data


def summarize(rows: list[dict], extra_keys: tuple[str, ...] = ()) -> list[dict]:
    """Group rows by (method, source, target, setting, ``run`` where rows name one: the
    rows of several runs in one table, :func:`combine_runs`, and ``method_revision`` where rows record
    another than the method's here, older or newer, or the method is not registered here: never averaged
    with rows of its current revision, the entry keeps it): mean and standard error of the
    accuracy over seeds (``None`` for one seed: undefined), number of seeds, mean wall
    seconds, and for grouped (video) targets those of ``group_accuracy``; ``extra_keys``: the
    mean of those fields over the rows that have them. Two rows of one group and seed (runs merged
    twice?) are refused: the standard error would count one run as two. Rows made by hand need
    ``method``, ``seed`` and ``accuracy`` (a fraction); ``source``, ``target``, ``setting`` and
    ``wall_s`` may be left out."""
    extra_keys = (extra_keys,) if isinstance(extra_keys, str) else tuple(extra_keys)
    groups: dict[tuple, list[dict]] = {}
    nows = RevisionsHere()
    for i, r in enumerate(rows):
        missing = [k for k in ("method", "seed", "accuracy") if k not in r]
        check(not missing, f"rows[{i}] has no {', '.join(missing)}: a row needs method, seed and accuracy (a "
                           f"fraction, e.g. model.score(test)); source, target, setting and wall_s are optional")
        a = r["accuracy"]
        check(isinstance(a, Real) and not isinstance(a, bool) and math.isfinite(a) and 0.0 <= a <= 1.0,
              f"rows[{i}] has accuracy {a!r}; accuracies are finite fractions in [0, 1]"
              + (" (a percentage?)" if isinstance(a, Real) and 1.0 < a <= 100.0 else ""))
        revision = r.get("method_revision")  # apart when not the method's here; its current and unknown: one group
        revision = revision if isinstance(revision, int) and not isinstance(revision, bool) \
            and revision != nows[r["method"]] else None
        groups.setdefault((r["method"], r.get("source", ""), r.get("target", ""), r.get("setting", ""),
                           r.get("run"), revision), []).append(r)
    for key, rs in groups.items():
        seeds = [r["seed"] for r in rs]
        twice = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        check(not twice, f"rows of {' / '.join(str(k) for k in key if k is not None)} repeat seed {', '.join(twice)} "
                         f"(runs merged twice?): the standard error would count one run as two")
    out = []
    def mean_and_se(values) -> tuple[float, float | None]:  # a standard error of one value is undefined: None
        values = list(values)
        mean, se = mean_se(values)
        return mean, se if len(values) > 1 else None

    for (method, source, target, setting, run, revision), rs in groups.items():
        mean, se = mean_and_se(r["accuracy"] for r in rs)
        summary = {**({"run": run} if run is not None else {}),
                   "method": method, "source": source, "target": target, "setting": setting,
                   "accuracy_mean": mean, "accuracy_se": se, "n": len(rs),
                   "wall_s": sum(r["wall_s"] for r in rs) / len(rs)
                   if all(r.get("wall_s") is not None for r in rs) else None,
                   "seeds": sorted(r["seed"] for r in rs), **({"method_revision": revision} if revision is not None
                                                             else {})}
        if str(setting) == "all":  # the table says the labels its rows trained on (tables.setting_text)
            summary.update(labels_used(rs))
        ci = rs[0].get("ci95") if len(rs) == 1 else None  # one row over episodes: its own 95 % interval
        if isinstance(ci, Real) and not isinstance(ci, bool) and math.isfinite(ci):  # NaN: one episode, none
            summary["accuracy_ci95"] = ci
        grouped = [r["group_accuracy"] for r in rs
                   if isinstance(r.get("group_accuracy"), Real) and not isinstance(r["group_accuracy"], bool)]
        if grouped:
            summary["group_accuracy_mean"], summary["group_accuracy_se"] = mean_and_se(grouped)
            summary["group_n"] = len(grouped)
        if all(isinstance(r.get("h_accuracy"), Real) for r in rs):  # a target of seen and new classes
            for key in ("seen_accuracy", "unseen_accuracy", "h_accuracy"):
                summary[f"{key}_mean"], summary[f"{key}_se"] = mean_and_se(r[key] for r in rs)
        if all(isinstance(r.get("balanced_accuracy"), Real) for r in rs):
            summary["balanced_accuracy_mean"], summary["balanced_accuracy_se"] = \
                mean_and_se(r["balanced_accuracy"] for r in rs)
            ratios = [test_imbalance(r) for r in rs]
            summary["test_imbalance"] = None if None in ratios else max(ratios)
        if all(isinstance(r.get(ALL_SOURCE), Real) for r in rs):  # partial DA: the argmax over every source class
            summary[f"{ALL_SOURCE}_mean"], summary[f"{ALL_SOURCE}_se"] = mean_and_se(r[ALL_SOURCE] for r in rs)
        for key in extra_keys:
            values = [r[key] for r in rs if isinstance(r.get(key), Real) and not isinstance(r[key], bool)]  # not null
            if values:
                summary[key] = mean_se(values)[0]
        out.append(summary)
    return out


def failed_line(failure) -> str:
    """A failed job of a results.json's ``failed`` as one line of text."""
    if not isinstance(failure, dict):
        return str(failure)
    return f"job {failure.get('job')}: {failure.get('error')} (traceback: {failure.get('traceback')})"


def write_results(run_dir: Path, name: str, config: dict, rows: list[dict], workers: int | None = None,
                  failed: list[dict] | None = None) -> Path:
    """Write ``results.json`` and ``results.md`` atomically; return the JSON path. ``workers``:
    the worker processes the jobs ran in (default: the CLI's ``--workers``); ``failed``: the
    jobs that raised (``job``, ``error``, ``traceback``), kept as ``failed`` and named in results.md."""
    run_dir = Path(run_dir)
    summary = summarize(rows)
    env = kernel_environment(default_workers() if workers is None else workers)
    path = write_json(run_dir / "results.json", {"name": name, "config": config, "rows": rows, "summary": summary,
                                                 "environment": env, **({"failed": failed} if failed else {})})
    write_text(run_dir / "results.md", f"# {md_cell(name)}\n\n" + markdown_table(summary, rows, config)
               + "".join(f"\n\nfailed: {failed_line(f)}" for f in failed or ()))
    return path


def check_run_dir(run_dir: str | Path) -> Path:
    """The ``results.json`` of a run or benchmark directory (of a stopped run with finished jobs,
    where it would be: :func:`write_report` draws those jobs); an error says what is missing."""
    run_dir = Path(run_dir)
    check(run_dir.exists(), f"{run_dir} does not exist: give a run or benchmark directory (the 'run directory:' "
                            f"`transferkit run` prints, under its config's out_dir, or one under `transferkit bench`'s "
                            f"--out)")
    check((run_dir / "results.json").is_file() or unfinished_run(run_dir) is not None,
          f"no results.json in {run_dir}"
          f"{unfinished_hint(run_dir) or ': not a run or benchmark directory (a finished one holds results.json)'}")
    return run_dir / "results.json"
