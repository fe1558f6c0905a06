"""Benchmarks: named suites run by ``transferkit bench NAME [--quick] [--set KEY=VALUE]``.

A suite is a function ``suite(plan, bench_dir: Path, log) -> list[dict]`` that returns
rows of the common results shape (see :mod:`transferkit.results`) and may write extra
tables and figures into ``bench_dir``. ``plan`` is a dataclass (a :class:`Plan`) holding
what the suite runs, seeds and budgets; the suite's plan factory makes the default one
for ``--quick`` or the full run, and ``--set`` overrides its fields (``--set seeds=3``,
``--set train.steps=100``), checked like a config. A suite is registered with
:func:`benchmark` in its own module of this package, imported in :data:`SUITE_MODULES`.
The runner writes ``results.json`` (with the plan) and ``results.md`` of all rows and
prints the table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, ClassVar

import torch
import yaml

from ..config import override
from ..data import check_spec, parse_spec
from ..distributed import is_main_process, world_size
from ..engine import ADDED_TRAIN_FIELDS, content_text
from ..errors import TransferkitError, UnknownNameError, check, warn
from ..fields import updated
from ..io import atomic_write, directory_lock, links_warned_once, read_json, remove_inside, write_json
from ..jobs import default_workers
from ..results import RESULT_FILES, summarize, world_sizes, write_results
from ..runtime import (
    callers_state_kept,
    holding_work_dir,
    job_threads,
    note_kernels,
    note_work_dir,
    own_invocation,
    preload_lazy_imports,
)
from ..tables import markdown_table


@dataclass
class Plan:
    """What a suite runs. Suites with options subclass it; ``quick`` comes from ``--quick``.
    ``selects`` names the fields that only choose which jobs run (targets, seeds, ...): a
    benchmark directory may be resumed with other values of those, never of the rest
    (budgets and protocol), whose jobs would not be comparable."""

    selects: ClassVar[tuple[str, ...]] = ()
    #: selection fields that depend on the first of their group: a resume that sets the first takes the
    #: others' defaults (flex's image_targets among its targets); one that sets another keeps the first
    select_groups: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: False where the budget is not plan fields but fixed by ``quick`` (``--set`` does not change it)
    budget_fields: ClassVar[bool] = True
    quick: bool = False

    def budget(self) -> str:
        """The steps, episodes and seeds this plan runs, in words (``""``: not described)."""
        return ""

    def settings(self) -> list[str]:
        """What the plan's jobs run with besides its fields (uda's per-pair settings), a line each, as
        ``--print-plan`` shows them under the budget; none here."""
        return []

    def check_named(self, named: set[str]) -> None:
        """Checks of the fields that ``--set`` named (``named``: their top-level names); none here."""


#: the key of ``plan.json`` that names the benchmark whose plan it is
PLAN_OWNER = "benchmark"

Suite = Callable[[Plan, Path, Callable], list]
PlanFactory = Callable[[bool], Plan]
BENCHMARKS: dict[str, tuple[Suite, str, PlanFactory]] = {}
#: suites that run their jobs in one process (``--workers`` does not apply)
ONE_PROCESS: set[str] = set()
SUITE_MODULES = ["demo", "flex", "uda", "uda_tune", "zeroshot", "represent", "fewshot"]


#: the tables a suite writes from its rows besides results.json / .md (cleared with them when a resume starts)
OUTPUTS: dict[str, tuple[str, ...]] = {}


def benchmark(name: str, description: str, plan: PlanFactory = Plan, workers: bool = True,
              outputs: tuple[str, ...] = ()):
    """Register a suite; ``plan(quick)`` makes its default plan; ``workers=False``: it runs
    its jobs in one process, whatever ``--workers`` says; ``outputs``: the files it writes from
    its rows at its end, by name or glob pattern (flex's ``table_ratio*.md``; a resume removes them
    until it writes them again, as results.json)."""
    def wrap(fn: Suite) -> Suite:
        BENCHMARKS[name] = (fn, description, plan)
        OUTPUTS[name] = tuple(outputs)
        if not workers:
            ONE_PROCESS.add(name)
        return fn
    return wrap


def load_suites() -> dict[str, tuple[Suite, str, PlanFactory]]:
    for module in SUITE_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return BENCHMARKS


def as_list(value, cast=str, what: str = "list", empty: bool = False, minimum=None) -> list:
    """Plan field ``what`` given as a list, one scalar or a comma-separated string (``3,30,300``);
    an empty list (no job to run), repeated values and values below ``minimum`` are refused
    (``empty`` allows an empty list)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            items = ",".join(item.strip() for item in text[1:-1].split(","))
            raise TransferkitError(f"{what}: got the text {value!r}, a YAML list in quotes; give the list itself, "
                                   f"--set {shlex.quote(f'{what}={text}')}, or its items with commas, "
                                   f"--set {shlex.quote(f'{what}={items}')}")
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif value is None:
        value = []
    elif not isinstance(value, (list, tuple)):
        value = [value]
    check(empty or len(value) > 0, f"{what}: the list is empty, so no job would run; give at least one value")
    try:
        out = [_strict_int(v) if cast is int else cast(v) for v in value]
    except (TypeError, ValueError) as e:
        raise TransferkitError(f"{what}: bad value {value!r} ({e})") from e
    twice = sorted({str(v) for v in out if out.count(v) > 1})
    check(not twice, f"{what}: {', '.join(twice)} given more than once (its jobs would count twice)")
    low = [v for v in out if minimum is not None and v < minimum]
    check(not low, f"{what}: values must be >= {minimum}, got {low}")
    return out


def _strict_int(value) -> int:
    """``int(value)`` for whole numbers only: ``1.5`` or ``True`` is an error, not seed 1."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _pair(item) -> tuple:
    """``("mnist", "npz:x.npz")`` from ``"mnist:npz:x.npz"``: a ``folder:`` or ``npz:`` prefix
    stays with the path after it, and a Windows drive letter with the rest of its path
    (``folder:C:\\data``)."""
    if not isinstance(item, str):
        return tuple(item) if isinstance(item, (list, tuple)) else ()
    parts: list[str] = []
    for token in item.split(":"):
        if parts and (parts[-1] in ("folder", "npz") or re.fullmatch(r"(folder|npz):[A-Za-z]", parts[-1])
                      and token[:1] in ("/", "\\")):
            parts[-1] += ":" + token
        else:
            parts.append(token)
    return tuple(parts)


#: characters of a domain spec that a folder or file name cannot hold on every system
_NAME_CHARS = re.compile(r'[/\\:*?"<>|\x00-\x1f]')


def path_part(*specs: str) -> str:
    """Domain specs joined by ``-`` as one folder or file name: built-in specs as written
    (``mnist+inversion``); a spec with characters a name cannot hold everywhere (the ``/`` and
    ``:`` of ``npz:data/x.npz``, backslashes, ``*?"<>|``) gets them as ``_`` and a hash of the
    specs, so that two paths never share a name."""
    text = "-".join(specs)
    safe = _NAME_CHARS.sub("_", text)
    return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def check_canonical(spec: str, what: str) -> None:
    """Refuse a domain spec written otherwise than the loader reads it (``MNIST + Blur`` for
    ``mnist+blur``): a benchmark keys its jobs, tables and tuned settings by the text, so two
    spellings of one domain would run and count it twice, or miss its settings."""
    from ..grouped import parse_grouped

    grouped = parse_grouped(spec)
    base, shifts = parse_spec(grouped[0] if grouped else spec)
    canonical = "+".join([base, *shifts]) + (f"@grouped{grouped[1]}" if grouped else "")
    check(spec == canonical, f"{what}: write {spec!r} as {canonical!r} (the benchmark keys its jobs and tables by "
                             f"this text)")


def as_pairs(value) -> tuple:
    """``source:target`` pairs from ``a:b,c:d``, a list of such strings or a list of pairs."""
    items = as_list(value, str, "pairs") if isinstance(value, str) else value
    pairs = tuple(map(_pair, items)) if isinstance(items, (list, tuple)) else ()
    check(pairs and all(len(p) == 2 and all(isinstance(n, str) and n for n in p) for p in pairs),
          f"pairs must be source:target items such as syndigits:mnist,mnist:digits; got {value!r}")
    check(len(set(pairs)) == len(pairs), f"pairs: a pair is given more than once in {value!r}")
    for a, b in pairs:
        if a == b:
            warn(f"pairs: {a}:{b} adapts a domain to itself (its target is the source's own images, scored on the "
                 f"source's test split): a control, or a misspelt target?")
    for name in dict.fromkeys(n for p in pairs for n in p):  # a misspelt domain fails before any training (the first)
        check_spec(name)
        check_canonical(name, "pairs")
    return pairs


def make_plan(name: str, quick: bool = False, overrides: list[str] = ()) -> Plan:
    """Suite ``name``'s default plan for ``quick`` with ``--set`` overrides applied."""
    suites = load_suites()
    if name not in suites:
        raise UnknownNameError("suite", name, suites)
    plan = suites[name][2](quick)
    _check_overrides(name, plan, overrides)
    return _named_checked(override(plan, overrides, plan_label(name)), overrides)


def plan_label(name: str) -> str:
    """What errors of a plan's fields call it (``"bench flex plan seeds must be int ..."``), not a config."""
    return f"bench {name} plan"


def _named_checked(plan: Plan, overrides: list[str]) -> Plan:
    """``plan`` after :meth:`Plan.check_named` of the fields ``overrides`` name."""
    plan.check_named({a.split("=", 1)[0].strip().partition(".")[0] for a in overrides})
    return plan


def _check_overrides(name: str, plan: Plan, overrides: list[str]) -> None:
    """Refuse ``--set quick=...`` (``--quick`` is the flag) and any ``--set`` of a plan with no
    other field (demo's)."""
    for assignment in overrides:
        check(assignment.split("=")[0].strip() != "quick", "use --quick, not --set quick=...")
    check(not overrides or {f.name for f in dataclasses.fields(plan)} - {"quick"},
          f"benchmark {name} has no plan field that --set could change (--quick sets its budget): leave out --set")


def note_capped_sizes(train, sizes, log, said: str) -> None:
    """Log, for each per-class size ``n`` in ``sizes`` above ``train``'s smallest class, that it
    takes every image of a class with fewer; ``said`` names the size (``{n}``) and what it takes
    ("ratio {n} takes every training image"); the rows' ``n_labeled`` say how many."""
    counts = train.class_counts()
    smallest = int(counts[counts > 0].min())
    for n in (n for n in sizes if n > smallest):
        log(f"note: {said.replace('{n}', str(n))} of a class with fewer ({smallest} in its smallest class); the rows' "
            f"n_labeled say how many")


def kept_tsne(panels: dict, path: Path, log, **options) -> Path:
    """``plots.tsne_embeddings(panels, path, **options)``, unless ``path`` holds the figure of
    these very panels and options: a record beside it (``path.json``) keys them with
    scikit-learn's version and the drawing's (``plots.TSNE_STYLE``), so a resume keeps the figure
    instead of running the t-SNE again (seconds per panel), and redraws one of older drawing code."""
    from .. import plots

    key = hashlib.sha256(content_text({"panels": panels, **options, "style": plots.TSNE_STYLE,
                                       "sklearn": importlib.metadata.version("scikit-learn")}).encode()).hexdigest()
    record = Path(path).with_suffix(".json")
    with contextlib.suppress(OSError, AttributeError, TransferkitError):  # no record, or not one of these
        if Path(path).is_file() and read_json(record).get("key") == key:
            log(f"t-SNE figure: {path} (unchanged: the same embeddings)")
            return Path(path)
    path = plots.tsne_embeddings(panels, path, **options)
    write_json(record, {"key": key})
    log(f"t-SNE figure: {path}")
    return path


def plan_yaml(plan: Plan) -> str:
    """The plan as ``--print-plan`` shows it: its fields, and its budget as a comment (read-only
    where ``--quick`` fixes it rather than a field), then its :meth:`Plan.settings` as comments."""
    text = yaml.safe_dump(dataclasses.asdict(plan), sort_keys=False, default_flow_style=False)
    settings = "".join(f"# {line}\n" for line in plan.settings())
    if not plan.budget():
        return text + settings
    fixed = "" if plan.budget_fields else " (its steps are set by --quick, not plan fields: --set does not change them)"
    return text + f"# budget{fixed}: {plan.budget()}\n" + settings


def budget_line(plan: Plan, full: Plan) -> str:
    """The header line of a suite's tables: the budget ``plan`` ran with; for ``--quick``, that
    the run is quick and the full run's budget (``full``), which the docs' tables show."""
    if plan.quick:
        return (f"Quick run (--quick): {plan.budget()}. The docs' tables are of the full run ({full.budget()}): "
                f"these numbers are not comparable with them.")
    return f"Budget: {plan.budget()}."


def _stored_plan(bench_dir: Path) -> tuple[dict | None, str | None]:
    """``(plan, benchmark)`` that ``bench_dir``'s jobs were run with (``plan.json``, or the
    plan in an older ``results.json``); ``(None, None)`` for a new directory. A directory
    that is not a benchmark directory (a `transferkit run` one) is refused."""
    rewrite = ('write plan.json back: {"benchmark": "NAME", ...} with the fields `transferkit bench NAME '
               '--print-plan` prints for the --quick and --set the benchmark began with (JSON), or start a new '
               'benchmark directory')

    def results_config() -> dict:  # read only when plan.json does not say it all
        if not (bench_dir / "results.json").is_file():
            return {}
        results = read_json(bench_dir / "results.json", "results file",
                            "delete it to resume" if (bench_dir / "plan.json").is_file() else rewrite)
        config = results.get("config") if isinstance(results, dict) else None
        return config if isinstance(config, dict) else {}

    stored = config = None
    if (bench_dir / "plan.json").is_file():
        recorded = False  # an older form's results.json holds the plan too: then plan.json may go
        with contextlib.suppress(TransferkitError, AttributeError):
            recorded = isinstance(results_config().get("plan"), dict)
        fix = "delete it: results.json records the plan" if recorded else rewrite
        stored = read_json(bench_dir / "plan.json", "benchmark plan", fix)
        check(isinstance(stored, dict), f"{bench_dir / 'plan.json'} is not a benchmark plan (not a mapping): {fix}")
    elif (bench_dir / "results.json").is_file():
        config = results_config()
        stored = config.get("plan")
        check(isinstance(stored, dict), f"{bench_dir} holds results but no benchmark plan: it is not a benchmark "
                                        f"directory (a `transferkit run` directory?); use another directory")
    check(stored is not None or not (bench_dir / "config.yaml").is_file(),
          f"{bench_dir} is a `transferkit run` directory, not a benchmark directory; use another directory")
    stored = dict(stored) if isinstance(stored, dict) else None
    owner = stored.pop(PLAN_OWNER, None) if stored is not None else None
    return stored, owner or (config if config is not None else results_config()).get("benchmark")


def _check_same_plan(bench_dir: Path, plan: Plan, name: str | None = None) -> None:
    """Refuse to resume ``bench_dir`` with another benchmark (``name``, when given: two suites
    may share a plan type) or with a plan whose budgets or protocol differ from the plan its
    jobs were run with (:func:`_stored_plan`)."""
    stored, owner = _stored_plan(bench_dir)
    check(name is None or owner is None or owner == name,
          f"{bench_dir} holds a run of the {owner} benchmark, not of {name}; use another directory")
    if not isinstance(stored, dict):
        return
    now = json.loads(json.dumps(dataclasses.asdict(plan)))  # tuples as lists, as stored
    stored = with_added_fields(stored, now)
    if set(stored) | _added_selects(plan, stored) != set(now):
        owners = [owner] if owner else [n for n, (_, _, make) in BENCHMARKS.items()
                                        if set(dataclasses.asdict(make(False))) == set(stored)]
        whose = f"the {owners[0]} benchmark" if owners else "another benchmark (or an older version of this one)"
        check(False, f"{bench_dir} holds a run of {whose}: its plan has the fields {', '.join(sorted(stored))}, "
                     f"this one {', '.join(sorted(now))}; use another directory")
    keys = sorted((set(now) | set(stored)) - set(plan.selects))
    diff = []
    for k in (k for k in keys if now.get(k) != stored.get(k)):
        then_k, now_k = stored.get(k), now.get(k)
        if isinstance(then_k, dict) and isinstance(now_k, dict):  # a section (flex's train): the keys that differ
            diff += [(f"{k}.{sub}", then_k.get(sub), now_k.get(sub)) for sub in sorted(set(then_k) | set(now_k))
                     if then_k.get(sub) != now_k.get(sub)]
        else:
            diff.append((k, then_k, now_k))
    device = any(k.endswith(".device") for k, _, _ in diff)
    check(not diff, f"{bench_dir} was run with another plan: " + "; ".join(
        f"{k}: {a!r} there, {b!r} now" for k, a, b in diff)
        + (" (a stage's device is where this invocation runs: --device / $TRANSFERKIT_DEVICE)" if device else "")
        + (f". Only {', '.join(plan.selects)} may change when resuming" if plan.selects else ""))


def with_added_fields(stored: dict, now: dict) -> dict:
    """``stored`` (a plan an earlier version wrote) with the fields added to a stage's TrainConfig
    since at their defaults, in each section that ``now`` (today's plan as a dict) has."""
    sections = [k for k, section in now.items() if isinstance(section, dict) and isinstance(stored.get(k), dict)]
    return {**stored, **{k: {**{f: d for f, d in ADDED_TRAIN_FIELDS.items() if f in now[k]}, **stored[k]}
                         for k in sections}}


def comparable_plan(name, quick, stored: dict) -> dict:
    """A results.json's plan of benchmark ``name`` as a table of several runs compares it: with a
    stage's fields added since at their defaults, and without its selection fields (seeds, pairs,
    methods...: they choose the jobs, which rows name). As stored where ``name`` is no benchmark
    of this version."""
    if name not in load_suites():
        return stored
    plan = make_plan(name, bool(quick))
    now = json.loads(json.dumps(dataclasses.asdict(plan)))
    return {k: v for k, v in with_added_fields(stored, now).items() if k not in plan.selects}


def _added_selects(plan: Plan, stored: dict) -> set[str]:
    """Selection fields that ``stored`` (a plan written by an earlier version) lacks: the suite
    got them later, and a resume runs them at their defaults, which select what the earlier
    version ran (``uda``'s ``methods`` and ``skada``: all of them)."""
    return set(plan.selects) - set(stored)


def _resumed_selection(name: str, quick: bool, run_dir, overrides: list[str]) -> Plan:
    """A resumed directory runs under its stored plan (``plan.json``, or an older
    directory's ``results.json``) with the ``--set`` overrides applied to it (and ``quick`` when
    ``--quick`` is given): ``--resume DIR`` of a run made with ``--set pairs=...`` or
    ``--set train.steps=...`` finishes that run, and an override is checked against the
    directory's plan (``cats`` against its ``n_max``), not the defaults. A named selection field
    (targets, ratios, seeds, pairs, parts...) may differ; a named budget or protocol field must
    match (:func:`_check_same_plan`). The first field of a ``select_groups`` entry resets the
    others (flex's new ``targets`` take their default ``image_targets``; new ``image_targets``
    keep the stored ``targets``)."""
    default = make_plan(name, quick)
    stored, owner = None, None
    if run_dir:
        with contextlib.suppress(TransferkitError):  # an unreadable plan: _check_same_plan names the problem
            stored, owner = _stored_plan(Path(run_dir))
    fields = {f.name for f in dataclasses.fields(default)}
    if stored is None or owner not in (None, name) or set(stored) | _added_selects(default, stored) != fields:
        return make_plan(name, quick, overrides)  # new, another benchmark's or an older version's: checked later
    given, dotted = {"quick"} if quick else set(), set()  # dotted: sections --set changes a key of
    for a in overrides:
        top, _, rest = a.split("=", 1)[0].strip().partition(".")
        (dotted if rest else given).add(top)
    for group in default.select_groups:
        if group[0] in given | dotted:
            given |= set(group[1:])
    keep = {k: stored[k] for k in fields & set(stored) if k not in given}
    for k, value in keep.items():  # a stage's device is where this invocation runs (--device): compared, not kept
        if isinstance(value, dict) and "device" in value and hasattr(getattr(default, k), "device"):
            keep[k] = {**value, "device": getattr(default, k).device}
    try:  # built as from YAML: stored sections (flex's train: {...}) become their dataclasses again
        base = updated(default, keep) if keep else default
    except (TypeError, ValueError, TransferkitError):
        return make_plan(name, quick, overrides)  # a stored value of another form: _check_same_plan compares them
    _check_overrides(name, base, overrides)
    return _named_checked(override(base, overrides, plan_label(name)), overrides)  # errors: the directory's values


def resumed_plan(name: str, quick: bool = False, overrides: list[str] = (), run_dir=None) -> Plan:
    """The plan ``transferkit bench NAME`` runs: :func:`make_plan`'s, or with ``run_dir`` of a
    resumed directory its stored plan with the fields ``--set`` names (what ``--print-plan``
    shows), checked against that directory as the run checks it (another benchmark's, or a
    `transferkit run` directory, is refused)."""
    if run_dir is not None:
        check(not Path(run_dir).is_file(), f"--resume {run_dir}: a file, not a benchmark directory")
        _check_bench_dir(Path(run_dir))
    plan = _resumed_selection(name, quick, run_dir, overrides)
    if run_dir is not None:
        _check_same_plan(Path(run_dir), plan, name)
    return plan


def _check_bench_dir(bench_dir: Path) -> None:
    """Refuse to resume a folder that holds files but is no benchmark directory."""
    check(not _entries(bench_dir) - {".lock"} or (bench_dir / "plan.json").is_file()
          or (bench_dir / "results.json").is_file(),
          f"--resume {bench_dir}: not a benchmark directory (neither plan.json nor results.json) and not empty; "
          f"leave out --resume to start a new benchmark under --out, or give an empty directory")


def _check_same_world(bench_dir: Path) -> None:
    """Refuse a resume under another ``--nproc`` than the benchmark's finished jobs ran in before
    anything changes (each suite's run refuses it too, but only once the results are cleared)."""
    now = world_size()
    then = world_sizes(bench_dir.glob("**/jobs/*.json")) - {now}  # a torn job file runs again: not counted
    check(not then, f"{bench_dir}: finished jobs ran in {' and '.join(map(str, sorted(then)))} data-parallel "
                    f"process(es) and this resume runs {now}: --nproc changes a job's rows (docs/scale.md); resume "
                    f"with --nproc {min(then, default=now)}, or start a new benchmark directory")


def run_benchmark(name: str, quick: bool = False, out_dir: str = "runs", run_dir: str | Path | None = None,
                  log=print, overrides: list[str] = (), log_table: bool = True) -> tuple[Path, list[dict]]:
    """Run suite ``name`` into ``run_dir`` (a new ``out_dir/bench-NAME[-quick]/<time>`` by default;
    an existing directory is resumed: finished jobs are not run again). Each call is an
    invocation of its own (its rows' wall seconds are timed apart), and the caller's CPU random
    state is as it was before (as after ``run_experiment``). ``log`` gets the progress lines, then,
    with ``log_table``, the rows' table (``transferkit bench`` logs on stderr and prints the table
    on stdout itself: ``log_table=False``)."""
    with own_invocation(new=True), links_warned_once(), callers_state_kept():  # a link named once per benchmark
        return _run_benchmark(name, quick, out_dir, run_dir, log, overrides, log_table)


def _run_benchmark(name: str, quick: bool, out_dir: str, run_dir, log, overrides,
                   log_table: bool = True) -> tuple[Path, list[dict]]:
    plan = resumed_plan(name, quick, overrides, run_dir)
    quick = plan.quick  # a resumed quick run stays one
    suite, description, _ = BENCHMARKS[name]
    tag = f"bench-{name}{'-quick' if quick else ''}"
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S-%f")]  # two benchmarks started in one second: two directories
    if world_size() > 1:  # under torchrun every rank works in rank 0's directory; rank 0 writes
        torch.distributed.broadcast_object_list(stamp, src=0)
    log = log if is_main_process() else (lambda *a, **k: None)
    bench_dir = Path(run_dir) if run_dir else Path(out_dir) / tag / stamp[0]
    existed, parent_existed = bench_dir.exists(), bench_dir.parent.exists()
    if run_dir and not existed:
        log(f"note: {bench_dir} does not exist; starting a new benchmark there")
    workers = 1 if name in ONE_PROCESS else default_workers()
    from ..experiment import _make_run_dir
    try:
        _make_run_dir(bench_dir, None)
    except TransferkitError as e:
        raise TransferkitError(f"{'--resume ' + str(run_dir) if run_dir else '--out ' + str(out_dir)}: {e}") from e
    try:
        with directory_lock(bench_dir) if is_main_process() else contextlib.nullcontext():  # one process per dir
            before = _entries(bench_dir)  # under the lock: no other process works here
            fresh = is_main_process() and not before - {".lock"}  # this invocation's to clear if it stops early
            outputs = _output_names(bench_dir, (*RESULT_FILES, *OUTPUTS.get(name, ())))
            kept = {} if fresh or not is_main_process() else _finished_files(bench_dir, outputs)
            try:
                if is_main_process():  # under the lock: a refused second process changes nothing here
                    _check_same_world(bench_dir)  # before the results are cleared: a refusal keeps them
                    write_json(bench_dir / "plan.json", {PLAN_OWNER: name, **dataclasses.asdict(plan)})
                    for stale in outputs:  # the plan is kept: until the suite ends, the directory is unfinished
                        remove_inside(bench_dir / stale, bench_dir)
                    note_kernels(bench_dir, log, workers)
                log(f"benchmark {name}{' (quick)' if quick else ''}: {description}")
                if plan.budget():
                    log(budget_line(plan, BENCHMARKS[name][2](False)))
                if job_threads(workers) > 1:  # sums in another order: other numbers than the docs' tables
                    log(f"note: jobs run with {job_threads(workers)} torch threads per process; the documented "
                        f"tables were made with OMP_NUM_THREADS=1, so numbers may differ (set it to match them)")
                log(f"benchmark directory: {bench_dir} (--resume it to finish an interrupted run)")
                note_work_dir(bench_dir)
                if overrides:
                    log("plan: " + ", ".join(overrides))
                if name in ONE_PROCESS and default_workers() > 1:
                    log(f"note: benchmark {name} runs its jobs in one process; --workers {default_workers()} "
                        f"does not apply")
                preload_lazy_imports()
                with holding_work_dir(bench_dir):  # a stop inside a job's run directory resumes the benchmark
                    rows = suite(plan, bench_dir, log)
                if is_main_process():
                    write_results(bench_dir, tag, {"benchmark": name, "quick": quick,
                                                   "plan": dataclasses.asdict(plan)}, rows)
            except BaseException:
                if fresh:
                    _clear_start_files(bench_dir, before)
                elif kept and _job_files(bench_dir) == kept["jobs"]:  # refused before a new job: as it was
                    _restore_finished_files(bench_dir, kept)
                raise
    except BaseException:
        if is_main_process() and not existed:  # after the lock is released (its file removed). rmdir removes
            with contextlib.suppress(OSError):  # only an empty folder: work or another process's files stay
                bench_dir.rmdir()
                if not parent_existed:  # out_dir/bench-NAME[-quick] made for it
                    bench_dir.parent.rmdir()
        raise
    if log_table:
        log("\n" + markdown_table(summarize(rows), rows))
    return bench_dir, rows


#: what a benchmark writes before its first job's work
_START_FILES = ("plan.json", "kernels.json")


def _output_names(bench_dir: Path, outputs: tuple[str, ...]) -> tuple[str, ...]:
    """``outputs`` with each glob pattern (``table_ratio*.md``) as the names it matches in ``bench_dir``."""
    names: list[str] = []
    for output in outputs:
        names += sorted(p.name for p in bench_dir.glob(output)) if any(c in output for c in "*?[") else [output]
    return tuple(names)


def _job_files(bench_dir: Path) -> set[str]:
    """Every file under a ``jobs`` folder of ``bench_dir`` (rows, failed jobs' records)."""
    return {str(p.relative_to(bench_dir)) for p in bench_dir.glob("**/jobs/**/*") if p.is_file()}


def _finished_files(bench_dir: Path, outputs: tuple[str, ...] = RESULT_FILES) -> dict:
    """What a resume changes before its first job (its plan, the ``outputs`` it clears), with the
    job files there: a resume that fails before a new job (a new pair's data unreadable) puts
    them back, so that a finished directory stays finished."""
    kept = {name: (bench_dir / name).read_bytes() if (bench_dir / name).is_file() else None
            for name in ("plan.json", *outputs)}
    return {**kept, "jobs": _job_files(bench_dir)} if any(v is not None for v in kept.values()) else {}


def _restore_finished_files(bench_dir: Path, kept: dict) -> None:
    for name, data in kept.items():
        if name == "jobs":
            continue
        if data is None:
            remove_inside(bench_dir / name, bench_dir)
        else:
            atomic_write(bench_dir / name, lambda p, data=data: p.write_bytes(data))


def _entries(bench_dir: Path) -> set[str]:
    """Names in ``bench_dir`` (none when it does not exist); a lock's temporary file counts
    as the lock."""
    if not bench_dir.is_dir():
        return set()
    return {".lock" if p.name.startswith(".lock.") else p.name for p in bench_dir.iterdir()}


def _clear_start_files(bench_dir: Path, before: set[str]) -> bool:
    """Undo what a benchmark that stopped before any work wrote into a directory that held
    nothing (``before``): its start files, their temporary files and empty folders it made,
    only when nothing else is there; ``True`` when it did. Never raises: it runs while
    another error propagates."""
    def ours(p: Path) -> bool:
        return p.name in _START_FILES or any(p.name.startswith(f".{f}.") and p.name.endswith(".tmp")
                                             for f in _START_FILES)
    try:
        made = [p for p in bench_dir.iterdir() if p.name not in before]
        if not all(ours(p) or (p.is_dir() and not any(p.iterdir())) for p in made):
            return False  # work was kept: the directory stays as it is
        for p in made:
            p.rmdir() if p.is_dir() else p.unlink()
        return True
    except OSError:
        return False
