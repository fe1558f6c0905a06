"""Session 77: a fit's checkpoint clean-up removes only the stage folders it wrote; the configs ship in the
package (``transferkit run demo`` from any folder)."""
from pathlib import Path

import pytest
from helpers import toy_domain
from test_api_mutation import ONE

from transferkit import Transfer
from transferkit.errors import TransferkitError


def test_fit_keeps_a_users_checkpoint_folder_beside_its_own_stages(tmp_path, one_thread):
    root = tmp_path / "ckpt"
    other = root / "other-run"  # another fit's (or the user's) resumable checkpoint in the same folder
    other.mkdir(parents=True)
    (other / "last.json").write_text("{}")
    Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE).fit(
        target=toy_domain(8), source=toy_domain(16, classes=4), checkpoint_dir=root)
    assert (other / "last.json").read_text() == "{}"
    assert sorted(p.name for p in root.iterdir()) == ["other-run"]  # the fit's own stages are gone


def test_run_finds_a_shipped_config_by_name_from_any_folder(tmp_path, monkeypatch):
    from transferkit.config import BUNDLED_CONFIGS, bundled_config_names, config_file
    monkeypatch.chdir(tmp_path)  # no configs/ here: a wheel's user
    demo = BUNDLED_CONFIGS / "demo.yaml"
    assert config_file("demo") == config_file("demo.yaml") == config_file("configs/demo.yaml") == demo
    (tmp_path / "demo.yaml").write_text("k: 3\n")
    assert config_file("demo.yaml") == Path("demo.yaml")  # a file of the user's wins
    with pytest.raises(TransferkitError, match=r"config file other/demo.yaml does not exist; the configs that ship "
                                               r"with transferkit are cross_task, demo, label_efficiency"):
        config_file("other/demo.yaml")
    assert {"cross_task", "demo", "label_efficiency"} <= set(bundled_config_names())


def test_run_help_names_the_shipped_configs(capsys):
    from transferkit.cli import main
    from transferkit.config import bundled_config_names
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"ships with transferkit ({', '.join(sorted(bundled_config_names()))})" in help_text


def test_print_config_of_a_shipped_config_by_name(tmp_path, monkeypatch, capsys):
    from transferkit.cli import main
    from transferkit.config import load_config
    monkeypatch.chdir(tmp_path)
    main(["run", "cross_task", "--print-config"])
    (tmp_path / "my.yaml").write_text(capsys.readouterr().out)
    from transferkit.config import BUNDLED_CONFIGS
    assert load_config(tmp_path / "my.yaml") == load_config(BUNDLED_CONFIGS / "cross_task.yaml")


def test_a_stopped_command_that_keeps_no_run_gets_no_resume_advice(monkeypatch, tmp_path):
    import argparse

    from transferkit import cli, runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])
    episodes = cli.build_parser().parse_args(["episodes", "runs/x"])
    assert cli._resume_hint(episodes, ["episodes", "runs/x"]) == ""  # no --resume: nothing to go on from
    new = cli.build_parser().parse_args(["run", "--set", "k=1"])
    assert cli._resume_hint(new, ["run", "--set", "k=1"]) == ("it stopped before its first job, and nothing was "
                                                              "kept: start it again")
    old = tmp_path / "old"  # a run resumed, stopped before it noted its directory: the one given
    (old / "jobs").mkdir(parents=True)
    hint = cli._resume_hint(argparse.Namespace(resume=str(old)), ["run", "--resume", str(old)])
    assert hint == f"finished jobs and checkpoints are kept in {old}; go on with: transferkit run --resume {old}"


def test_a_stopped_episodes_command_says_only_that_it_was_interrupted(monkeypatch, capsys):
    from transferkit import cli, runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])

    def stop(args, argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_dispatch", stop)
    assert cli.main(["episodes", "runs/x"]) == 130
    assert capsys.readouterr().err.strip() == "transferkit: interrupted"


def test_a_file_size_limit_is_named_as_the_process_limit(tmp_path):
    import errno

    from transferkit import cli
    error = OSError(errno.EFBIG, "File too large", str(tmp_path / "x.safetensors"))
    assert "raise the file-size limit, e.g. ulimit -f unlimited" in cli._cache_hint(error)


def test_a_failed_jobs_error_is_told_when_its_traceback_cannot_be_written(tmp_path, monkeypatch, capsys):
    from transferkit import jobs
    from transferkit.jobs import JobFailure, failures_message, save_failure

    def denied(path, text):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(jobs, "write_text", denied)
    failure = save_failure(tmp_path / "failed" / "a.txt", JobFailure("ValueError: bad", "Traceback ...", None), "a")
    err = capsys.readouterr().err
    assert failure.path == "" and "Traceback ..." in err
    assert "job a failed: ValueError: bad (its traceback could not be written to" in err
    assert "tracebacks above (they could not be written)" in failures_message([failure], 1, "kept", "again")
