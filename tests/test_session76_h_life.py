"""Run life-cycle leftovers: the pre-training cache writes a network's record before the network, a
method's own modules are checked on images of another size before the source pre-training, a flex
resume clears its tables until it writes them again."""

from dataclasses import replace
from pathlib import Path

import helpers
import pytest
import torch

from transferkit import source
from transferkit.api import Transfer
from transferkit.config import ExperimentConfig
from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods.supervised import SourceOnly
from transferkit.rundata import Prepared
from transferkit.splits import Split

PRE = TrainConfig(steps=2, eval_every=1, batch_size=8)
CFG = ExperimentConfig(source="toy", target="toy", backbone="lenet", k=2, pretrain=PRE, train=PRE)


def _data() -> Prepared:
    def split(seed):
        return Split(*[helpers.toy_domain(n, seed=seed + i) for i, n in enumerate((32, 12, 12))])
    return Prepared(source=split(0), target=split(10), channels=1)


def test_a_pre_training_whose_record_is_not_written_leaves_no_network_and_resumes_without_a_step(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data, write_json = _data(), source.write_json

    def failing(path, obj):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(source, "write_json", failing)
    with pytest.raises(OSError, match="No space left"):
        source.pretrain_source(CFG, data, log=lambda *a: None)
    cached = list((tmp_path / "cache" / "pretrained").glob("*"))
    assert not [p for p in cached if p.suffix == ".safetensors"]  # no network without its record
    assert [p for p in cached if p.suffix == ".ckpt"]  # the last checkpoint is kept
    monkeypatch.setattr(source, "write_json", write_json)
    steps, logs, losses = [], [], SourceOnly.losses
    monkeypatch.setattr(SourceOnly, "losses", lambda self, batch: steps.append(batch.step) or losses(self, batch))
    net, info = source.pretrain_source(CFG, data, log=logs.append)
    assert steps == [] and not any("unreadable" in line for line in logs)  # resumed at its last step
    path = Path(info["path"])
    assert path.exists() and path.with_suffix(".json").exists() and not path.with_suffix(".ckpt").exists()
    again = source.pretrain_source(CFG, data, log=logs.append)[1]
    assert again["cached"] and again["digest"] == info["digest"]


def test_a_method_whose_own_modules_cannot_take_the_images_is_refused_before_the_pre_training(monkeypatch):
    d = helpers.toy_domain(16)
    wide = Domain("wide", torch.nn.functional.pad(d.images, (0, 8)), d.labels, d.class_names)  # 28x36
    fits, fit = [], Engine.fit
    monkeypatch.setattr(Engine, "fit", lambda self, method, **kw: fits.append(method.name) or fit(self, method, **kw))
    model = Transfer("dsn", backbone="resnet18", pretrain=replace(PRE, steps=1, batch_size=4),
                     train=TrainConfig(steps=1, batch_size=4))
    with pytest.raises(TransferkitError, match=r"method 'dsn': the source domain 'wide' has images of 28x36 pixels, "
                                               r"the network was built for 28x28, and its own modules were sized"):
        model.fit(source=wide, unlabeled=wide)
    assert fits == []  # neither the pre-training nor dsn's training began


@pytest.mark.parametrize("fail", ["before a job", "after a job"])
def test_a_flex_resume_clears_its_tables_and_figures_until_it_writes_them_again(tmp_path, bench_sandbox, fail):
    from test_bench_core_mutation import ROW

    from transferkit.io import write_json, write_text
    reports, state = ("table_ratio3.md", "wins.md", "per_unit_mnist.png", "units_picked.png"), {"fail": None}

    def suite(plan, bench_dir, log):
        if state["fail"] == "before a job":
            raise TransferkitError("unreadable data")
        write_json(bench_dir / "jobs" / f"j{len(list(bench_dir.glob('jobs/*.json')))}.json", ROW)
        if state["fail"] == "after a job":
            raise KeyboardInterrupt
        for name in reports:
            write_text(bench_dir / name, "x")
        return [ROW]

    _, description, plan = bench_sandbox.BENCHMARKS["flex"]
    bench_sandbox.BENCHMARKS["flex"] = (suite, description, plan)  # flex's plan and outputs, a toy's jobs
    bench_dir = tmp_path / "b"
    bench_sandbox.run_benchmark("flex", quick=True, run_dir=bench_dir, log=lambda *a: None)
    state["fail"] = fail
    with pytest.raises((TransferkitError, KeyboardInterrupt)):
        bench_sandbox.run_benchmark("flex", quick=True, run_dir=bench_dir, log=lambda *a: None)
    kept = [name for name in reports if (bench_dir / name).exists()]
    assert kept == (list(reports) if fail == "before a job" else [])  # refused before a job: put back


def test_a_resume_builds_no_not_a_run_message_when_it_is_a_run(tmp_path, monkeypatch):
    from transferkit import cli, results, runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])
    argv = ["run", "--set", "source=digits", "--set", "target=digits", "--set", "methods=[target_only]",
            "--set", "k=2", "--set", "repeats=1", "--set", "train.steps=2", "--set", "select_on=none",
            "--set", f"out_dir={tmp_path}"]
    assert cli.main(argv) == 0
    run_dir = next(tmp_path.glob("*/*/config.yaml")).parent
    hints = []
    monkeypatch.setattr(cli, "_config_copy_hint", lambda folder: hints.append(folder) or "")
    monkeypatch.setattr(results, "unfinished_hint", lambda folder, *a, **k: hints.append(folder) or "")
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert hints == []  # before: both read the run's files for a message the checks did not send
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(TransferkitError, match="not a run directory"):  # the message, when sent, with its hints
        cli._run_config(cli.build_parser().parse_args(["run", "--resume", str(other)]))
    assert hints == [other, other]
