"""The main job: SynDigits 0-9 -> MNIST 0-9 with k = 5 target labels per class, 3 repeats,
comparing source_only, target_only, linear_probe and finetune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import ExperimentConfig
from ..engine import TrainConfig
from ..experiment import run_experiment
from . import Plan, benchmark


def demo_config(quick: bool = False) -> ExperimentConfig:
    return ExperimentConfig(
        name="demo", source="syndigits", target="mnist", k=5, repeats=3, backbone="convnet4",
        methods=["source_only", "target_only", "linear_probe", "finetune"],
        pretrain=TrainConfig(steps=150 if quick else 800, batch_size=64, eval_every=50 if quick else 100),
        train=TrainConfig(steps=60 if quick else 300, batch_size=32, eval_every=20 if quick else 25),
    )


def config_budget(cfg: ExperimentConfig) -> str:
    """A run's budget in words: pre-training and training steps, label subsets."""
    return (f"pre-training up to {cfg.pretrain.steps} steps, training up to {cfg.train.steps} steps per job, "
            f"{cfg.repeats} label subsets of k = {cfg.k}")


@dataclass
class DemoPlan(Plan):
    """demo's plan: ``quick`` alone; its budget is :func:`demo_config`'s."""

    budget_fields: ClassVar[bool] = False

    def budget(self) -> str:
        return config_budget(demo_config(self.quick))


def demo_plan(quick: bool) -> DemoPlan:
    return DemoPlan(quick=quick)


@benchmark("demo", "syndigits -> mnist, k=5 labels per class: source_only, target_only, linear_probe, finetune",
           plan=demo_plan)
def demo_suite(plan, bench_dir, log):
    cfg = demo_config(plan.quick)
    cfg.out_dir = str(bench_dir)
    _, rows = run_experiment(cfg, run_dir=bench_dir / cfg.name, log=log)
    return rows
