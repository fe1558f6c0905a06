"""Benchmarks: named suites of experiments run by ``transferkit bench NAME [--quick]``.

A suite is a function ``quick -> list[ExperimentConfig]`` registered with
:func:`benchmark`; later families add theirs. All rows of a suite land in one
``results.json`` of the common shape (see :mod:`transferkit.results`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from .config import ExperimentConfig
from .engine import TrainConfig
from .errors import UnknownNameError
from .experiment import run_experiment
from .results import markdown_table, summarize, write_results

BENCHMARKS: dict[str, tuple[Callable[[bool], list[ExperimentConfig]], str]] = {}


def benchmark(name: str, description: str):
    def wrap(fn):
        BENCHMARKS[name] = (fn, description)
        return fn
    return wrap


def demo_config(quick: bool = False) -> ExperimentConfig:
    """The main job: SynDigits 0-9 -> MNIST 0-9 with k = 5 labels per class, 3 repeats."""
    return ExperimentConfig(
        name="demo", source="syndigits", target="mnist", k=5, repeats=3, backbone="convnet4",
        methods=["source_only", "target_only", "linear_probe", "finetune"],
        pretrain=TrainConfig(steps=150 if quick else 800, batch_size=64, eval_every=50 if quick else 100),
        train=TrainConfig(steps=60 if quick else 300, batch_size=32, eval_every=20 if quick else 25),
    )


@benchmark("demo", "syndigits -> mnist, k=5 labels per class: source_only, target_only, linear_probe, finetune")
def demo_suite(quick: bool) -> list[ExperimentConfig]:
    return [demo_config(quick)]


def run_benchmark(name: str, quick: bool = False, out_dir: str = "runs", run_dir: str | Path | None = None,
                  log=print) -> tuple[Path, list[dict]]:
    """Run every experiment of suite ``name``; return the benchmark directory and rows."""
    if name not in BENCHMARKS:
        raise UnknownNameError("benchmark", name, BENCHMARKS)
    suite, _ = BENCHMARKS[name]
    configs = suite(quick)
    tag = f"bench-{name}{'-quick' if quick else ''}"
    bench_dir = Path(run_dir) if run_dir else Path(out_dir) / tag / datetime.now().strftime("%Y%m%d-%H%M%S")
    rows: list[dict] = []
    for cfg in configs:
        cfg.out_dir = str(bench_dir)
        _, exp_rows = run_experiment(cfg, run_dir=bench_dir / cfg.name, log=log)
        rows += exp_rows
    write_results(bench_dir, tag, {"benchmark": name, "quick": quick,
                                   "experiments": [c.to_dict() for c in configs]}, rows)
    log("\n" + markdown_table(summarize(rows)))
    return bench_dir, rows
