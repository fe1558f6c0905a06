"""Session 81, helper h_perf: speed-ups of the hot paths with results unchanged."""

import subprocess
import sys

import pytest

_ENTRY = ("import sys; sys.argv = ['transferkit', *sys.argv[1:]]\n"
          "from transferkit.cli import entry\n"
          "try:\n    entry()\n"
          "except SystemExit as e:\n"
          "    print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', e.code, file=sys.stderr)\n")


@pytest.mark.parametrize("argv, code, shown", [
    (["--help"], 0, "Label-efficient transfer learning"),
    (["run", "--help"], 0, "--resume"),
    (["episodes", "-h"], 0, "--n-way"),
    (["runn", "--help"], 2, "invalid choice: 'runn'"),  # the usage error argparse meets first, as main's parse
])
def test_help_answers_without_loading_torch(argv, code, shown):
    done = subprocess.run([sys.executable, "-c", _ENTRY, *argv], capture_output=True, text=True, timeout=120)
    assert shown in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"torch not loaded {code}", done.stderr


def test_a_set_value_cut_by_the_shell_is_still_named_by_main_with_help_among_the_words():
    done = subprocess.run([sys.executable, "-c", _ENTRY, "run", "demo", "--set", "k=[1,", "5]", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert "was cut at a space by the shell" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "torch loaded 2", done.stderr
