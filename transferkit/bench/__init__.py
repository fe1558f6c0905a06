"""Benchmarks: named suites run by ``transferkit bench NAME [--quick]``.

A suite is a function ``suite(quick: bool, bench_dir: Path, log) -> list[dict]`` that
returns rows of the common results shape (see :mod:`transferkit.results`) and may write
extra tables and figures into ``bench_dir``. It is registered with :func:`benchmark` in
its own module of this package, imported in :data:`SUITE_MODULES`. The runner writes
``results.json`` and ``results.md`` of all rows and prints the table.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch

from ..errors import UnknownNameError
from ..results import markdown_table, summarize, write_results
from ..runtime import is_main_process, world_size

Suite = Callable[[bool, Path, Callable], list]
BENCHMARKS: dict[str, tuple[Suite, str]] = {}
SUITE_MODULES = ["demo", "flex", "uda", "uda_tune", "zeroshot", "represent", "fewshot"]


def benchmark(name: str, description: str):
    def wrap(fn: Suite) -> Suite:
        BENCHMARKS[name] = (fn, description)
        return fn
    return wrap


def load_suites() -> dict[str, tuple[Suite, str]]:
    for module in SUITE_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return BENCHMARKS


def run_benchmark(name: str, quick: bool = False, out_dir: str = "runs", run_dir: str | Path | None = None,
                  log=print) -> tuple[Path, list[dict]]:
    """Run suite ``name`` into ``run_dir`` (a new ``out_dir/bench-NAME/<time>`` by default;
    an existing directory is resumed: finished jobs are not run again)."""
    suites = load_suites()
    if name not in suites:
        raise UnknownNameError("benchmark", name, suites)
    suite, description = suites[name]
    tag = f"bench-{name}{'-quick' if quick else ''}"
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    if world_size() > 1:  # under torchrun every rank works in rank 0's directory; rank 0 writes
        torch.distributed.broadcast_object_list(stamp, src=0)
    log = log if is_main_process() else (lambda *a, **k: None)
    bench_dir = Path(run_dir) if run_dir else Path(out_dir) / tag / stamp[0]
    bench_dir.mkdir(parents=True, exist_ok=True)
    log(f"benchmark {name}{' (quick)' if quick else ''}: {description}")
    rows = suite(quick, bench_dir, log)
    if is_main_process():
        write_results(bench_dir, tag, {"benchmark": name, "quick": quick}, rows)
    log("\n" + markdown_table(summarize(rows)))
    return bench_dir, rows
