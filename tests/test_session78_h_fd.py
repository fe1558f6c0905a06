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
