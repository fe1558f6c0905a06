"""Session 79 (mine): a method of several stages passes on whether the stage its weights come from diverged."""

import copy

import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.engine import FitResult
from transferkit.methods import get_method


def _fit(diverged: bool, acc: float = 0.5, n_val: int = 4) -> FitResult:
    return FitResult(steps=3, best_step=3, best_val_accuracy=acc, stopped_early=False, wall_s=0.0,
                     val_accuracy=acc, val_correct=torch.ones(n_val, dtype=torch.bool), val_loss=1.0 - acc,
                     diverged=diverged)


class _Engine:
    def __init__(self, fits: dict, tag: str):
        self.fits, self.tag, self.seed = fits, tag, 0

    def fit(self, method, **kw):
        return self.fits[self.tag]


@pytest.mark.parametrize("first, second", [(True, False), (False, True), (False, False)])
def test_two_stage_is_diverged_when_either_stage_is(first, second):
    net = build_backbone("lenet", num_classes=3)
    fits = {"finetune": _fit(first), "probe": _fit(second)}
    fit = get_method("two_stage")(net).fit_transfer(lambda tag, config=None: _Engine(fits, tag))
    assert fit.diverged is (first or second)


@pytest.mark.parametrize("picked_diverged", [False, True])
def test_flex_is_diverged_only_when_the_picked_candidate_is(monkeypatch, picked_diverged):
    import transferkit.methods.flex as flex

    net = build_backbone("lenet", num_classes=3)
    method = get_method("flex")(net)
    best = method.candidates()[-1]

    def trained(jobs, workers):  # every candidate but the best diverged, at a lower validation accuracy
        return [(copy.deepcopy(net), _fit(c != best or picked_diverged, 0.9 if c == best else 0.1))
                for c in method.candidates()]

    monkeypatch.setattr(flex, "train_candidates", trained)
    monkeypatch.setattr(flex, "candidate_method", lambda *a: None)
    fit = method.fit_transfer(lambda tag, config=None: _Engine({}, tag), val=object.__new__(_Val))
    assert method.picked == best and fit.diverged is picked_diverged


class _Val:
    def __len__(self):
        return 4


def test_a_run_whose_stdout_and_stderr_share_a_pipe_that_closes_finishes(tmp_path):
    """`transferkit run ... 2>&1 | head -1`: progress lines (stderr) meet the closed pipe first."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_session79_h_fk import _tiny_run

    root = Path(__file__).resolve().parents[1]
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "PYTHONPATH": str(root),
           "OMP_NUM_THREADS": "1", "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, "-m", "transferkit", *_tiny_run(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    child.stdout.readline()
    child.stdout.close()  # the reader has gone after one line, as `2>&1 | head -1`
    assert child.wait(timeout=120) == 0
    (results,) = tmp_path.glob("experiment/*/results.json")
    assert len(json.loads(results.read_text())["rows"]) == 2


def test_rows_trained_from_a_diverged_pre_training_are_diverged(tmp_path, monkeypatch):
    from helpers import toy_named_domains

    import transferkit.experiment as ex
    from transferkit.config import load_config

    toy_named_domains(monkeypatch)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    real = ex.run_source_network

    def diverged(*args, **kw):  # the pre-training's info as a diverged one's (the engine's rule is tested apart)
        net, info = real(*args, **kw)
        return net, {**info, "diverged": True}

    monkeypatch.setattr(ex, "run_source_network", diverged)
    cfg = load_config(None, [f"out_dir={tmp_path}", "source=digits", "target=mnist",
                             "methods=[source_only,finetune,target_only]", "k=2", "repeats=1", "pretrain.steps=2",
                             "pretrain.eval_every=2", "train.steps=2", "train.eval_every=2", "select_on=none"])
    _, rows = ex.run_experiment(cfg, log=None)
    assert {r["method"]: r.get("diverged") for r in rows} == {"source_only": True, "finetune": True,
                                                               "target_only": None}


@pytest.mark.parametrize("episodes, noted", [(5, True), (600, False)])
def test_bench_represent_tables_say_when_the_episodes_are_too_few_for_their_interval(episodes, noted):
    from transferkit.bench.represent import represent_tables

    rows = [{"source": "mnist", "target": "digits", "method": f"cat2/fewshot_{head}", "setting": f"5-way {k}-shot",
             "seed": 0, "accuracy": 0.5, "ci95": 0.1, "episodes": episodes}
            for head in ("prototype", "linear") for k in (1, 5)]
    assert ("too narrow" in represent_tables(rows)) is noted
