"""Session 81, last leftovers: one listing of the runs inside a folder, the count's noun, the held benchmark
per context."""
from transferkit.cli import main


def _run(folder, relative):
    (folder / relative / "jobs").mkdir(parents=True)
    (folder / relative / "config.yaml").write_text("methods: [source_only]\n")


def test_episodes_lists_the_newest_runs_of_a_folder_as_summary_does(tmp_path, capsys):
    # before: the first 3 by name ("bench-flex, demo/20270101-000000-000001, demo/..." and 4 more, "give one of them")
    for stamp in range(1, 7):
        _run(tmp_path, f"demo/20270101-00000{stamp}-000001")
    _run(tmp_path, "bench-flex")
    assert main(["episodes", str(tmp_path)]) == 2
    newest = [f"demo/20270101-00000{stamp}-000001" for stamp in range(3, 7)]
    assert (f"; it holds runs, one directory each (demo/20270101-000002-000001, {', '.join(newest)} and 2 more): "
            f"give one, e.g. {tmp_path / newest[-1]}") in capsys.readouterr().err


def test_first_named_counts_one_more_in_the_singular():
    # before: "and 1 more classes", "and 1 more groups of classes", "and 1 more job(s)"
    from transferkit.errors import first_named
    six, seven = list("abcdef"), list("abcdefg")
    assert first_named(six, "classes") == "a, b, c, d, e and 1 more class"
    assert first_named(six, "groups of classes") == "a, b, c, d, e and 1 more group of classes"
    assert first_named(six, "job(s)", "; ") == "a; b; c; d; e and 1 more job"
    assert first_named(six, "jobs") == "a, b, c, d, e and 1 more job"
    assert first_named(seven, "classes") == "a, b, c, d, e and 2 more classes"
    assert first_named(seven, "job(s)") == "a, b, c, d, e and 2 more job(s)"
    assert first_named(six) == "a, b, c, d, e, ..."


def test_lists_past_five_say_how_many_more():
    # before: check_distinct named the first five pairs and reinitialise the first five parameters, nothing more
    import pytest
    import torch
    from torch import nn

    from transferkit.errors import TransferkitError
    from transferkit.text import check_distinct
    from transferkit.unitnet import reinitialise
    with pytest.raises(TransferkitError, match=r"'row 1' and 'row 3' and 1 more pair get the same description"):
        check_distinct(torch.ones(4, 3), None, "who")  # 6 pairs of 4 alike rows
    raw = nn.Module()
    for name in "abcdefg":
        setattr(raw, name, nn.Parameter(torch.zeros(1)))
    with pytest.raises(TransferkitError, match=r"cannot re-initialise \['a', 'b', 'c', 'd', 'e', \.\.\.\]: their"):
        reinitialise(raw)


def test_the_held_benchmark_is_its_threads(tmp_path):
    # before: a run in another thread during a benchmark read the benchmark's directory (and its wording)
    import threading

    from transferkit import runtime
    bench, seen = tmp_path / "bench", []

    def other_run():
        seen.append(runtime.held_benchmark_dir())
        runtime.note_work_dir(tmp_path / "other")
        seen.append(runtime.work_dir())

    runtime.note_work_dir(None)
    try:
        with runtime.holding_work_dir(bench):
            thread = threading.Thread(target=other_run)
            thread.start()
            thread.join()
            runtime.note_work_dir(bench / "run")  # one of the benchmark's runs: not recorded
            assert runtime.held_benchmark_dir() == bench
        assert seen == [None, tmp_path / "other"] and runtime.held_benchmark_dir() is None
    finally:
        runtime.note_work_dir(None)
