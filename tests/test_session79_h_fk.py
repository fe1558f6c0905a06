"""Session 79 (h_fk): stdout for results, stderr for progress; a closed stdout does not stop a long command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import run_cli

from transferkit import cli

ROOT = Path(__file__).resolve().parents[1]


def _tiny_run(tmp_path) -> list[str]:
    """``run``'s arguments for two jobs on a small npz domain, into ``tmp_path``."""
    data = tmp_path / "toy.npz"
    np.savez(data, x=np.random.default_rng(0).random((48, 1, 12, 12)).astype("float32"), y=np.arange(48) % 3)
    sets = [f"source=npz:{data}", f"target=npz:{data}", "methods=[finetune,target_only]", "repeats=1", "k=2",
            "pretrain.steps=2", "pretrain.eval_every=2", "train.steps=2", "train.eval_every=2", "select_on=none",
            f"out_dir={tmp_path}"]
    return ["run", *[w for s in sets for w in ("--set", s)]]


class _ClosedPipe:
    """A stdout whose reader has gone: every write and flush raises BrokenPipeError."""

    def __init__(self):
        self.writes = 0

    def write(self, text):
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_run_progress_goes_to_stderr_and_the_table_and_results_line_to_stdout(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(capsys, *_tiny_run(tmp_path))
    assert code == 0, err
    for progress in ("reading source npz:", "run directory:", "pre-training", "finetune       seed 0: accuracy"):
        assert progress in err and progress not in out, progress
    assert "| method |" in out and "| method |" not in err
    results = out.strip().splitlines()[-1]
    assert results.startswith("results: ") and Path(results[len("results: "):]).is_file()


def test_a_closed_stdout_does_not_stop_a_run_and_one_stderr_line_says_where_the_results_are(tmp_path, monkeypatch,
                                                                                            capsys):
    argv = _tiny_run(tmp_path)
    closed = _ClosedPipe()
    monkeypatch.setattr(sys, "stdout", closed)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    (results,) = tmp_path.glob("*/*/results.json")
    assert len(json.loads(results.read_text())["rows"]) == 2
    said = [line for line in err.splitlines() if "stdout was closed" in line]
    assert len(said) == 1 and str(results) in said[0], err
    assert closed.writes >= 1 and sys.stdout is closed  # it was written to, then given back to the caller


def test_a_listing_on_a_closed_stdout_still_ends_quietly_with_141(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["methods"]) == 141
    assert capsys.readouterr().err == ""


def test_bench_logs_progress_on_stderr_and_prints_its_table_once_on_stdout(tmp_path, bench_sandbox, capsys):
    row = {"method": "m", "source": "s", "target": "t", "setting": "x", "seed": 0, "accuracy": 0.5, "wall_s": 1}

    def suite(plan, bench_dir, log):
        log("text extra not installed: a progress note")  # as bench zeroshot's note of a missing extra
        return [dict(row)]
    bench_sandbox.benchmark("toy79", "a toy suite", plan=lambda quick: bench_sandbox.Plan(quick=quick))(suite)
    code, out, err = run_cli(capsys, "bench", "toy79", "--out", str(tmp_path))
    assert code == 0, err
    for progress in ("a progress note", "benchmark toy79: a toy suite", "benchmark directory:"):
        assert progress in err and progress not in out, progress
    assert out.count("| m |") == 1 and "| m |" not in err
    (results,) = tmp_path.glob("bench-toy79/*/results.json")
    assert out.strip().splitlines()[-1] == f"results: {results}"


def test_episodes_logs_progress_on_stderr_and_prints_its_table_on_stdout(tmp_path, monkeypatch, capsys):
    import transferkit.fewshot_eval as fewshot_eval
    row = {"method": "finetune/prototype", "source": "s", "target": "t", "setting": "5-way 1-shot (k=2)", "seed": 0,
           "accuracy": 0.5, "wall_s": 1.0, "episodes": 600, "classes": 5}

    def fake(*args):
        args[8]("scoring finetune: a progress line")
        return [row], {"config": {}}
    monkeypatch.setattr(fewshot_eval, "run_episodes", fake)
    code, out, err = run_cli(capsys, "episodes", str(tmp_path))
    assert code == 0, err
    assert "a progress line" in err and "a progress line" not in out and "| finetune/prototype |" in out
    assert out.strip().splitlines()[-1].startswith(f"episodes: {tmp_path / 'episodes.json'}")


def test_episodes_without_a_stdout_at_all_still_writes_its_files(tmp_path, monkeypatch, capsys):
    import transferkit.fewshot_eval as fewshot_eval
    row = {"method": "finetune/prototype", "source": "s", "target": "t", "setting": "5-way 1-shot (k=2)", "seed": 0,
           "accuracy": 0.5, "wall_s": 1.0, "episodes": 600, "classes": 5}
    monkeypatch.setattr(fewshot_eval, "run_episodes", lambda *a: ([row], {"config": {}}))
    monkeypatch.setattr(sys, "stdout", None)  # pythonw, a daemon: print() writes nothing
    assert cli.main(["episodes", str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "episodes.json").is_file() and sys.stdout is None


def test_a_run_piped_into_a_reader_that_closes_after_one_line_finishes(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, "-m", "transferkit", *_tiny_run(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    child.stdout.readline()
    child.stdout.close()  # the reader has gone, as `| head -1` after its line
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 0, err
    (results,) = tmp_path.glob("experiment/*/results.json")
    assert len(json.loads(results.read_text())["rows"]) == 2 and "Traceback" not in err
