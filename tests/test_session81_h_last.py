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
