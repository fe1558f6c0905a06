"""Tests from a fourth mutation pass over cli.py. Covered: `run --resume` of a directory that does not
exist yet saying it starts a new run there (left alive by the two passes before); `bench` printing its
results path and `demo` (without --quick) running the benchmark "demo"; `methods NAME` saying "options:
none"; _cache_hint naming the default cache when TRANSFERKIT_CACHE is unset; main restoring
warnings.formatwarning and forgetting an earlier command's invocation id; `report` of several
directories, one skipped, still naming the failed jobs of the others, and naming each sub-folder of
--out by the resolved directory (a/sub/.. is a); `summary` leaving out a results file's notes that are
not text; `domains` writing ? for an unknown size; `show folder:PATH --size 0` refused by name, and its
one-class hint naming the folder without its +shift. Each test fails when the code its comment names
is changed in the way it says. A last test found a bug, fixed since: --workers and --device of one
in-process main() call stayed in os.environ as the next call's defaults; main now gives the two
variables back their earlier values (unset, or what the caller had set).

Killed by older tests elsewhere (so not tested here): run's finished-rows table before a JobsFailed
error, its "results:" line, the WorkerDied resume hint and --workers 1 refused (test_cli.py's slow
end-to-end tests); episodes' least --n-query / --episodes and `--methods` omitted meaning every method
(test_fewshot_eval.py); report --out's sub-folder per directory, summary's csv "Classes" note and its
latex branch (test_report.py); _cache_hint's ENOSPC (test_io_runtime_mutation.py); "(no description)"
of a described method (test_plugins.py); summary's failed-job count when no rows, _error printing an
empty line for a closed pipe, a shift dropped from show's plain-folder check, the report's several-names
check and its failed/no-rows lines, methods' "(one of ...)" choices and _resume_hint's hasattr check
(test_cli.py, test_cli_mutation.py, test_experiment_mutation.py).

Judged equivalent, so not tested: none of the mutants tried.

Left surviving: summary's markdown table without md_cell on the "data differ" lines of combined runs
(needs two runs whose one domain spec read other data; not written for lack of time). Not tried for
lack of time: the remaining --nproc checks (_checked_for_torchrun's bench branch, --workers with
--nproc 1), _run_config's overrides and own-config resume, the SIGHUP/SIGTERM handler choice."""

import errno
import os

import pytest
from helpers import image_file, run_cli
from test_cli_api_third_mutation import _run

from transferkit import cli
from transferkit.errors import TransferkitError


@pytest.fixture
def experiment(monkeypatch):
    """run_experiment replaced: the run directories it was given; it stops each run with an error."""
    import transferkit.experiment as experiment
    calls = []

    def stopped(cfg, run_dir=None, log=print):
        calls.append(run_dir)
        raise TransferkitError("stopped before any work")
    monkeypatch.setattr(experiment, "run_experiment", stopped)
    return calls


def _config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"methods: [finetune]\nout_dir: {tmp_path / 'runs'}\n")
    return config


# -- run: what it says around run_experiment ---------------------------------------------------

def test_run_resume_of_a_new_directory_says_it_starts_a_run_there(tmp_path, capsys, experiment):
    # kills: run's "does not exist; starting a new run there" line dropped
    new = tmp_path / "new"
    code, _, err = run_cli(capsys, "run", str(_config(tmp_path)), "--resume", str(new))
    assert code == 2 and f"{new} does not exist; starting a new run there" in err and experiment == [str(new)], err
    (tmp_path / "empty").mkdir()  # it exists: no such line
    code, _, err = run_cli(capsys, "run", str(_config(tmp_path)), "--resume", str(tmp_path / "empty"))
    assert code == 2 and "does not exist" not in err, err


# -- bench and demo ---------------------------------------------------------------------------

@pytest.fixture
def benchmarks(monkeypatch, tmp_path):
    """run_benchmark replaced: the benchmarks it was asked to run."""
    import transferkit.bench as bench
    calls = []

    def fake(name, quick=False, out_dir="runs", run_dir=None, log=print, overrides=(), log_table=True):
        calls.append((name, quick, out_dir, run_dir, list(overrides)))
        return tmp_path / "b", []
    monkeypatch.setattr(bench, "run_benchmark", fake)
    return calls


def test_bench_and_demo_run_their_benchmark_and_print_the_results_path(tmp_path, capsys, benchmarks):
    # kills: bench's `results: BENCH_DIR/results.json` line dropped; demo running another benchmark than "demo"
    code, out, err = run_cli(capsys, "bench", "flex", "--quick", "--out", str(tmp_path), "--set", "seeds=1")
    assert code == 0 and out.strip() == f"results: {tmp_path / 'b' / 'results.json'}", err
    code, out, err = run_cli(capsys, "demo")
    assert code == 0 and f"results: {tmp_path / 'b' / 'results.json'}" in out, err
    assert benchmarks == [("flex", True, str(tmp_path), None, ["seeds=1"]), ("demo", False, "runs", None, [])]


# -- methods ----------------------------------------------------------------------------------

def test_methods_says_none_for_a_method_without_options(capsys, monkeypatch):
    # kills: "  options: none" left out of a described method (a heading with nothing under it)
    from transferkit.methods import METHODS
    from transferkit.methods.finetune import Finetune

    class Bare(Finetune):
        name = "bare_thing"
        description = ""
    monkeypatch.setitem(METHODS, "bare_thing", Bare)
    code, out, err = run_cli(capsys, "methods", "bare_thing")
    assert code == 0 and out.startswith("bare_thing: (no description)\n") and "  options: none\n" in out, err


# -- main and the cache hint --------------------------------------------------------------------

def test_the_cache_hint_names_the_default_cache_when_the_variable_is_unset(tmp_path, monkeypatch):
    # kills: "(TRANSFERKIT_CACHE unset)" left out of the hint (the fix names a variable the user never set)
    monkeypatch.delenv("TRANSFERKIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".cache" / "transferkit"
    hint = cli._cache_hint(PermissionError(errno.EACCES, "Permission denied", str(cache / "domains")))
    assert f"the cache {cache} (TRANSFERKIT_CACHE unset)" in hint and "set TRANSFERKIT_CACHE to" in hint


def test_main_restores_the_warning_format_and_forgets_an_earlier_command_s_invocation(capsys, monkeypatch):
    # kills: main's `finally: warnings.formatwarning = default_format` dropped (transferkit's one-line format stays
    # on every later warning of a notebook); main's `new_invocation()` dropped (an earlier command's id reused)
    import warnings

    from transferkit import cli, runtime
    before = warnings.formatwarning
    monkeypatch.setenv(runtime.INVOCATION_VARIABLE, "20260101-000000-7")
    dispatch, used = cli._dispatch, []
    monkeypatch.setattr(cli, "_dispatch", lambda args, argv: used.append(runtime.invocation()) or dispatch(args, argv))
    assert run_cli(capsys, "domains")[0] == 0
    assert warnings.formatwarning is before and used and used[0] != "20260101-000000-7"  # its own id within
    assert os.environ.get(runtime.INVOCATION_VARIABLE) == "20260101-000000-7"  # the caller's given back


# -- report and summary -----------------------------------------------------------------------

def test_report_with_a_skipped_directory_also_names_the_failed_jobs_of_the_others(tmp_path, capsys, pages):
    # kills: the lines of the written reports' failed jobs left out of the "N of M directories" error
    good = _run(tmp_path, "good", failed=[{"job": "dann seed 0", "error": "ValueError: boom"}])
    code, _, err = run_cli(capsys, "report", str(tmp_path / "bad"), str(good))
    assert code == 2 and "1 of 2 directories have no report" in err and "dann seed 0: ValueError: boom" in err, err


def test_report_of_several_directories_names_each_sub_folder_by_the_resolved_directory(tmp_path, capsys, pages):
    # kills: `Path(d).resolve().name` -> `Path(d).name` in _report (a/sub/.. wrote its report to OUT/.., beside OUT)
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b")
    (a / "sub").mkdir()
    code, _, err = run_cli(capsys, "report", str(a / "sub" / ".."), str(b), "--out", str(tmp_path / "o"))
    assert code == 0 and [out for _, out in pages] == [str(tmp_path / "o" / "a"), str(tmp_path / "o" / "b")], err


def test_summary_leaves_out_notes_of_a_results_file_that_are_not_text(tmp_path, capsys):
    # kills: summary's `isinstance(n, str)` filter of a results file's notes dropped (a mapping printed as a note)
    import json
    run = _run(tmp_path, "a")
    data = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**data, "notes": ["a note", {"not": "text"}, 3]}))
    code, out, err = run_cli(capsys, "summary", str(run), "--format", "csv")
    assert code == 0 and "finetune" in out and "note: a note" in err, err
    assert "text" not in err and "note: 3" not in err, err


# -- domains ----------------------------------------------------------------------------------

def test_domains_writes_a_question_mark_for_a_domain_of_unknown_size(capsys, monkeypatch):
    # kills: `d['size'] or '?'` -> `d['size']` in _domains (a registered domain's unknown size printed as None)
    import transferkit.data as data
    mine = {"name": "mine", "size": None, "classes": ["a", "b"], "channels": 3, "image_size": 32,
            "description": "a plugin's domain", "registered_in": "plug"}
    monkeypatch.setattr(data, "list_domains", lambda: [mine])
    code, out, err = run_cli(capsys, "domains")
    line = next(line for line in out.splitlines() if line.startswith("mine"))
    assert code == 0 and line.split()[:5] == ["mine", "?", "2", "3", "32"] and "(registered by plug)" in line, out


# -- show -------------------------------------------------------------------------------------

def _two_classes(root):
    for c in "ab":
        for i in range(2):
            image_file(root / c / f"{i}.png", 60 + 40 * i, size=(8, 8))
    return f"folder:{root}"


def test_show_of_a_folder_refuses_a_size_of_zero_by_name(tmp_path, capsys):
    # kills: _drawn_of_folder without `_check_size_channels` (every file "cannot be read", repair or remove them)
    spec = _two_classes(tmp_path / "f")
    code, _, err = run_cli(capsys, "show", spec, "--size", "0", "--out", str(tmp_path / "g.png"))
    assert code == 2 and "size must be a positive int" in err and "cannot be read" not in err, err


def test_show_of_one_class_names_the_folder_without_its_shift(tmp_path, capsys, monkeypatch):
    # kills: the one-class hint naming `args.domain` (folder:PATH+blur) instead of the folder before its shifts
    import transferkit.plots as plots
    monkeypatch.setattr(plots, "sample_grid", lambda domain, out, **kw: out)
    for i in range(2):
        image_file(tmp_path / "outer" / "Photos" / f"{i}.png", 60 + 40 * i, size=(8, 8))
    code, out, err = run_cli(capsys, "show", f"folder:{tmp_path / 'outer'}+blur", "--out", str(tmp_path / "g.png"))
    assert code == 0 and f"is folder:{tmp_path / 'outer'} one level above the class folders" in out, (out, err)


# -- a real gap, left to the library's authors -------------------------------------------------

def test_a_second_command_in_one_process_does_not_inherit_the_flags_of_the_first(capsys, monkeypatch):
    # the bug: main left --workers / --device in os.environ for every later call in the process
    monkeypatch.delenv("TRANSFERKIT_WORKERS", raising=False)
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "cpu")
    code, out, err = run_cli(capsys, "run", "--workers", "2", "--device", "auto", "--print-config")
    assert code == 0 and "workers: 2" in out.splitlines() and "device: auto" in out.splitlines(), err
    assert "TRANSFERKIT_WORKERS" not in os.environ and os.environ["TRANSFERKIT_DEVICE"] == "cpu"
    code, out, err = run_cli(capsys, "run", "--print-config")
    assert code == 0 and "workers: 1" in out.splitlines() and "device: cpu" in out.splitlines(), out
