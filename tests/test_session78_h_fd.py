"""Session 78 (h_fd): a Ctrl-C while the command loads torch; a run directory a kill left before its first job."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Ctrl-C arrives while torch loads: every import of torch raises KeyboardInterrupt, as the first one did
_STOPPED_LOADING = """
import importlib.abc, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
sys.argv = ["transferkit", *sys.argv[1:]]
from transferkit.cli import entry
entry()
"""


def _python(code: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=60,
                          cwd=ROOT)


@pytest.mark.parametrize("argv, line", [(["methods"], "transferkit: interrupted"),
                                        (["run", "--set", "k=1"], "transferkit: interrupted; it stopped before its "
                                                                  "first job, and nothing was kept: start it again")])
def test_ctrl_c_while_torch_loads_gives_the_commands_one_line_and_130(argv, line):
    done = _python(_STOPPED_LOADING, *argv)
    assert done.returncode == 130 and done.stderr == line + "\n", done.stderr
    assert done.stdout == ""


def test_ctrl_c_while_torch_loads_with_bad_arguments_says_interrupted_and_nothing_of_the_arguments():
    done = _python(_STOPPED_LOADING, "run", "--no-such-flag")
    assert done.returncode == 130 and done.stderr == "transferkit: interrupted\n", done.stderr


def test_the_command_module_loads_without_torch_and_the_package_names_load_on_first_use():
    code = ("import sys, transferkit.cli, transferkit\n"
            "print('torch' in sys.modules, sorted(set(transferkit.__all__) - set(dir(transferkit))))\n"
            "from transferkit import Transfer, load_domain\n"
            "from transferkit.api import Transfer as T\n"
            "print('torch' in sys.modules, Transfer is T is transferkit.Transfer, transferkit.__version__)\n"
            "try:\n    transferkit.no_such_name\nexcept AttributeError as e:\n    print(e)\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False []" and lines[1].startswith("True True ")
    assert "no_such_name" in lines[2]


def _kept_by_a_kill_while_reading_data(tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A new run's directory as a SIGKILL while it reads its data leaves it (the files there then), and its config."""
    from transferkit import experiment
    from transferkit.config import load_config

    seen = {}

    def read(cfg, run_dir=None):
        seen.update({p.name: p.read_bytes() for p in Path(run_dir).iterdir()})
        raise KeyboardInterrupt  # the kill: here a stop, which removes the directory; a kill leaves what was seen
    monkeypatch.setattr(experiment, "prepare_domains", read)
    cfg = load_config(None, [f"out_dir={tmp_path / 'runs'}", "k=3", "methods=[finetune]"])
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(cfg, log=lambda *a: None)
    killed = tmp_path / "killed"
    killed.mkdir()
    for name, data in seen.items():
        (killed / name).write_bytes(data)
    return killed, {"k": cfg.k, "methods": cfg.methods}


def test_a_run_killed_while_reading_its_data_resumes_with_its_directory_alone(tmp_path, monkeypatch):
    from transferkit import cli

    killed, given = _kept_by_a_kill_while_reading_data(tmp_path, monkeypatch)
    assert sorted(p.name for p in killed.iterdir()) == [".lock", "config.yaml"]
    cfg = cli._run_config(cli.build_parser().parse_args(["run", "--resume", str(killed)]))
    assert {"k": cfg.k, "methods": cfg.methods} == given


def test_report_names_a_run_killed_while_reading_its_data_as_one_to_resume(tmp_path, monkeypatch, capsys):
    from helpers import run_cli

    killed, _ = _kept_by_a_kill_while_reading_data(tmp_path, monkeypatch)
    code, _, err = run_cli(capsys, "report", str(killed))
    assert code == 2 and f"transferkit run --resume {killed}` goes on with it" in err, err


def test_a_directory_holding_only_the_lock_of_a_killed_run_is_named_plainly_by_resume_and_report(tmp_path, capsys):
    from helpers import run_cli

    from transferkit import cli
    from transferkit.errors import TransferkitError

    killed = tmp_path / "killed"  # as an earlier transferkit's run killed while reading its data left it
    killed.mkdir()
    (killed / ".lock").write_text("")
    plain = f"{killed} holds only the lock of a run stopped before its first job"
    with pytest.raises(TransferkitError) as refused:
        cli._run_config(cli.build_parser().parse_args(["run", "--resume", str(killed)]))
    assert plain in str(refused.value) and "nothing was kept; run its config again" in str(refused.value)
    other = tmp_path / "other"
    other.mkdir()
    code, _, err = run_cli(capsys, "report", str(killed), str(other))
    assert code == 2 and f"skipped {killed}: no results.json in {killed}: {plain}" in err, err
