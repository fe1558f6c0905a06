"""The main job: SynDigits 0-9 -> MNIST 0-9 with k = 5 target labels per class, 3 repeats,
comparing source_only, target_only, linear_probe and finetune."""

from __future__ import annotations

from ..config import ExperimentConfig
from ..engine import TrainConfig
from ..experiment import run_experiment
from . import benchmark


def demo_config(quick: bool = False) -> ExperimentConfig:
    return ExperimentConfig(
        name="demo", source="syndigits", target="mnist", k=5, repeats=3, backbone="convnet4",
        methods=["source_only", "target_only", "linear_probe", "finetune"],
        pretrain=TrainConfig(steps=150 if quick else 800, batch_size=64, eval_every=50 if quick else 100),
        train=TrainConfig(steps=60 if quick else 300, batch_size=32, eval_every=20 if quick else 25),
    )


@benchmark("demo", "syndigits -> mnist, k=5 labels per class: source_only, target_only, linear_probe, finetune")
def demo_suite(plan, bench_dir, log):
    cfg = demo_config(plan.quick)
    cfg.out_dir = str(bench_dir)
    _, rows = run_experiment(cfg, run_dir=bench_dir / cfg.name, log=log)
    return rows
