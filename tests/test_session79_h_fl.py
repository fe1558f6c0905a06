"""Session 79 (h_fl): observability: diverged jobs marked, warnings at the user's line, the interrupt
message, small CLI mends."""


import warnings

import pytest
from helpers import toy_named_domains


def test_a_diverged_job_is_named_in_its_warning_its_row_and_a_line_under_the_table(tmp_path, monkeypatch):
    from transferkit.config import load_config
    from transferkit.errors import TransferkitWarning
    from transferkit.experiment import run_experiment
    from transferkit.tables import row_notes

    toy_named_domains(monkeypatch)
    cfg = load_config(None, [f"out_dir={tmp_path}", "source=digits", "target=mnist", "methods=[target_only]", "k=2",
                             "repeats=1", "train.steps=8", "train.eval_every=2", "train.batch_size=8",
                             "train.optimizer=sgd", "train.lr=3", "select_on=none", "train.progress=false"])
    lines = []
    with pytest.warns(TransferkitWarning, match=r"^target_only-k=2-s0: the training loss grew") as caught:
        run_dir, rows = run_experiment(cfg, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert [r.get("diverged") for r in rows] == [True]
    assert not any(str(w.message).startswith("method ") for w in caught)
    assert any("seed 0: accuracy" in line and line.endswith(", diverged") for line in lines), lines
    assert "Diverged" in (run_dir / "results.md").read_text()
    notes = [line for line in row_notes(rows, markdown=False) if line.startswith("Diverged")]
    assert len(notes) == 1 and "target_only (seed 0)" in notes[0]
    assert not [line for line in row_notes([{**rows[0], "diverged": False}]) if line.startswith("Diverged")]


def test_warnings_of_predict_transform_and_a_domain_point_at_the_callers_line():
    import torch
    from helpers import toy_domain

    from transferkit import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitWarning

    model = Transfer("target_only", train=TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False))
    model.fit(toy_domain(16, 0, 2))
    three = torch.rand(3, *model.input_shape_[1:])  # N x H x W, N = 3: also one colour image
    with pytest.warns(TransferkitWarning) as caught:
        model.predict(three)
        model.transform(three)
        Domain("dark", torch.full((2, 1, 4, 4), 3, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"])
    assert len(caught) == 3
    assert {w.filename for w in caught} == {__file__}, [(w.filename, w.lineno) for w in caught]
    assert len({w.lineno for w in caught}) == 3


def test_the_interrupt_message_names_only_what_the_run_directory_keeps(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from transferkit import cli, runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])  # an earlier run's in this process is not this one's
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("k: 5\n")
    args, argv = SimpleNamespace(resume=str(run), nproc=1), ["run", "c.yaml"]
    hint = cli._resume_hint(args, argv)
    assert "finished jobs" not in hint and "checkpoints are kept" not in hint, hint
    assert "no job had finished" in hint and hint.endswith(f"go on with: transferkit run c.yaml --resume {run}")
    (run / "checkpoints" / "finetune-k=5-s0" / "main").mkdir(parents=True)
    assert "checkpoints are kept" not in cli._resume_hint(args, argv)  # an empty folder keeps nothing
    (run / "checkpoints" / "finetune-k=5-s0" / "main" / "last.pt").write_bytes(b"x")
    hint = cli._resume_hint(args, argv)
    assert hint.startswith(f"checkpoints are kept in {run} (no job had finished)"), hint
    (run / "jobs").mkdir()
    (run / "jobs" / "target_only-k=5-s0.json").write_text("{}")
    assert cli._resume_hint(args, argv).startswith(f"finished jobs and checkpoints are kept in {run};")


def test_a_failed_jobs_stderr_line_has_the_prefix_and_the_subcommands_describe_themselves(tmp_path, capsys):
    from transferkit import cli
    from transferkit.jobs import JobFailure, save_failure
    save_failure(tmp_path / "failed" / "boom-k=5-s0.txt", JobFailure("ValueError: x", "TB"), "boom seed 0")
    assert capsys.readouterr().err.startswith("transferkit: job boom seed 0 failed: ValueError: x (traceback: ")
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("methods", "report", "episodes", "summary"):
        assert commands[name].description, name
        assert "%%" not in commands[name].format_help()
    run_dir = next(a for a in commands["report"]._actions if a.dest == "run_dirs")
    assert run_dir.help
    assert "--set" not in commands["demo"].format_help() and "--set" in commands["bench"].format_help()


def test_a_warning_made_an_error_by_python_w_error_is_one_line_and_exit_2(monkeypatch, capsys):
    from transferkit import cli
    from transferkit.errors import warn
    monkeypatch.setattr(cli, "_dispatch", lambda args, argv: warn("the images look dark"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = cli.main(["summary", "nowhere.json"])
    assert (code, capsys.readouterr().err) == (2, "transferkit: error: the images look dark\n")
