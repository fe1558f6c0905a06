"""Tests from a fourth mutation pass over transferkit/io.py, jobs.py, results.py and runtime.py.

Covered here: the stale temporaries of a file whose name holds glob characters (``[1]``); a metrics stream
torn after its first byte, or inside a nested object, and no blank lines between whole records; a file system
without ``flock`` naming no holder; a saved failure told on stderr and in the log by the main process only; the
line under a stopped run's table only when there is something to say; a folder without ``config.yaml`` not read
as a stopped run; a job file holding a list beside a run's config; a config.yaml that is no mapping; an accuracy
of exactly 1.0; the holder of a benchmark directory and the hint of a finished one; the wall seconds of a group
where one row lacks them; a whole-number variable with spaces around it; ``peak_memory``'s measured seconds;
the thread count left by ``kernel_fingerprint``; ``--nproc`` on the CPU needing no GPUs. Nothing here spawns a
process.

Judged equivalent, so not tested: ``_settings_of`` reading ``ratio`` before ``k`` (the config refuses
both, "give k or ratio, not both", so a stored config names one of the two). Left surviving:
``_settings_of`` accepting a text ``k`` (a stored config has a number or a list there); runtime and jobs
mutants not tried for lack of time (``_exit_with_parent``, ``_worker_init``, CUDA branches: see the
earlier passes).
"""

import errno
import os
import time

import pytest
import torch
from test_io_jobs_third_mutation import ROW, _run

from transferkit import io, jobs, runtime
from transferkit.results import read_results, stopped_lines, summarize, unfinished_hint, unfinished_run


# ---- io --------------------------------------------------------------------------------------------
def test_a_stale_temporary_of_a_file_named_with_brackets_is_removed(tmp_path):
    # kills: atomic_path's glob without glob.escape (`[1]` read as a character class: the stale file stays)
    stale = tmp_path / ".r[1].json.abc.tmp"
    stale.write_text("half")
    old = time.time() - 2 * io.STALE_TMP_S
    os.utime(stale, (old, old))
    io.write_json(tmp_path / "r[1].json", {"a": 1})
    assert not stale.exists() and io.read_json(tmp_path / "r[1].json") == {"a": 1}


def test_a_metrics_line_torn_after_one_byte_or_inside_an_object_costs_only_itself(tmp_path):
    # kills: append_jsonl's `f.tell() > 0` -> `> 1`, its `!= b"\n"` compared with another byte (`}`)
    one = tmp_path / "one.jsonl"
    one.write_text("{")  # killed right after the first byte
    io.append_jsonl(one, {"step": 5})
    assert io.read_jsonl(one) == [{"step": 5}]
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"a": {"b": 1}')  # killed before the outer brace
    io.append_jsonl(nested, {"step": 20})
    assert io.read_jsonl(nested) == [{"step": 20}]
    whole = tmp_path / "whole.jsonl"
    io.append_jsonl(whole, {"step": 1})
    io.append_jsonl(whole, {"step": 2})
    assert whole.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']  # no blank line between records


def test_a_file_system_without_flock_names_no_holder(tmp_path, monkeypatch):
    # kills: directory_holder's `except OSError: return None` -> "pid unknown" (a run blamed on a holder)
    (tmp_path / ".lock").write_text("123")

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(io.fcntl, "flock", no_flock)
    assert io.directory_holder(tmp_path) is None


# ---- jobs ------------------------------------------------------------------------------------------
def test_a_failure_saved_off_the_main_process_is_written_but_not_told(tmp_path, monkeypatch, capsys):
    # kills: save_failure's `if is_main_process()` dropped (every rank prints and logs the same failure)
    monkeypatch.setattr(jobs, "is_main_process", lambda: False)
    logged = []
    failure = jobs.save_failure(tmp_path / "failed" / "j.txt", jobs.JobFailure("ValueError: x", "tb"), "j",
                                log=logged.append)
    assert capsys.readouterr().err == "" and logged == []
    assert (tmp_path / "failed" / "j.txt").read_text().startswith("job j failed: ValueError: x")
    assert failure.path == str(tmp_path / "failed" / "j.txt")


# ---- results ---------------------------------------------------------------------------------------
def test_the_line_under_a_stopped_runs_table_only_when_it_says_something():
    # kills: stopped_lines's `data.get("unfinished")` -> `"unfinished" in data` (an empty hint still a line)
    assert stopped_lines({"unfinished": ""}) == [] and stopped_lines({}) == []
    (line,) = stopped_lines({"unfinished": ": do X"})
    assert "not finished" in line and "do X" in line


def test_a_folder_without_config_yaml_is_no_stopped_run(tmp_path):
    # kills: unfinished_run without its `config.yaml` check (the job files of a benchmark read as a run)
    assert unfinished_run(_run(tmp_path / "b", None, {"m-all-s0": ROW})) is None
    assert unfinished_run(_run(tmp_path / "r", "methods: [m]\n", {"m-all-s0": ROW}))["rows"] == [ROW]


def test_a_job_file_holding_a_list_beside_a_runs_config_is_no_row(tmp_path):
    # kills: _row_field's `if isinstance(row, dict) else None` dropped (AttributeError on a list)
    run = _run(tmp_path, "k: 5\n", {"m-k=5-s0": {**ROW, "setting": "k=5"}, "x": [1, 2]})
    hint = unfinished_hint(run)
    assert "holds 1 finished job(s)" in hint and f"--resume {run}" in hint


def test_an_accuracy_of_exactly_one_is_read(tmp_path):
    # kills: read_results's `row["accuracy"] <= 1.0` -> `< 1.0` (a perfect score refused as a percentage)
    io.write_json(tmp_path / "results.json", {"rows": [{**ROW, "accuracy": 1.0}, {**ROW, "seed": 1, "accuracy": 0.0}]})
    assert [r["accuracy"] for r in read_results(tmp_path / "results.json")["rows"]] == [1.0, 0.0]


def test_a_benchmark_directory_held_by_a_process_names_it_and_a_finished_one_no_resume(tmp_path):
    # kills: unfinished_hint asking for the holder only where there is a config.yaml; the benchmark
    # message without `not results.json` (a finished benchmark told to resume)
    bench = tmp_path / "bench"
    io.write_json(bench / "plan.json", {"benchmark": "main", "quick": False})
    io.write_json(bench / "jobs" / "m-all-s0.json", ROW)
    with io.directory_lock(bench):
        hint = unfinished_hint(bench)
    assert f"pid {os.getpid()}" in hint and "working in it now" in hint
    io.write_json(bench / "results.json", {"rows": [ROW]})
    assert "not finished" not in unfinished_hint(bench) and "--resume" not in unfinished_hint(bench)



def test_a_config_yaml_that_is_no_mapping_is_no_config(tmp_path):
    # kills: _run_config returning what YAML read when it is not a mapping (a string "kilo" holds "k": a crash)
    run = _run(tmp_path, "kilo\n", {"m-all-s0": ROW})
    data = unfinished_run(run)
    assert data["config"] is None and data["rows"] == [ROW]


def test_the_wall_seconds_of_a_group_where_one_row_lacks_them_are_none():
    # kills: summarize's `all("wall_s" in r ...)` -> `any` (a KeyError on a hand-made row without wall_s)
    (s,) = summarize([ROW, {"method": "m", "source": "s", "target": "t", "setting": "all", "seed": 1,
                            "accuracy": 0.75}])
    assert s["wall_s"] is None and s["n"] == 2 and s["accuracy_mean"] == pytest.approx(0.625)


# ---- runtime ---------------------------------------------------------------------------------------
def test_a_whole_number_variable_with_spaces_around_it_is_read(monkeypatch):
    # kills: env_int's `value.strip().isdigit()` -> `value.isdigit()` (" 3 " from a .env file refused)
    monkeypatch.setenv("TRANSFERKIT_WORKERS", " 3 ")
    assert runtime.env_int("TRANSFERKIT_WORKERS", 1, least=1) == 3


def test_peak_memory_records_the_seconds_it_measured():
    # kills: peak_memory without its "measured_s"
    with runtime.peak_memory(interval_s=0.01) as m:
        time.sleep(0.03)
    assert m["peak_rss_mb"] > 0 and 0.02 < m["measured_s"] < 5


def test_the_kernel_fingerprint_leaves_the_thread_count_as_it_was():
    # kills: kernel_fingerprint without its finally restoring torch's thread count (1 left behind)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runtime.kernel_fingerprint.__wrapped__()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_processes_on_the_cpu_need_no_gpus():
    # kills: check_processes_have_gpus's `!= "cuda"` early return dropped (--nproc 4 on the CPU refused)
    assert runtime.check_processes_have_gpus("cpu", 4) is None
