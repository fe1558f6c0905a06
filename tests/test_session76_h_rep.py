"""Session 76 (h_rep): results and report leftovers: rows of an older revision of their method,
the selection note of rows without n_val_labeled, job lines sized to the longest method name, and
methods that --workers processes cannot import."""

import json
import sys
import types

import pytest

from transferkit import experiment
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError
from transferkit.methods.base import METHODS, Method


class Sentinel(Exception):
    """Raised where a run's checks before the pre-training end: the refusal must come before."""


def _main_method(name, qualname=None):
    cls = type(name.title(), (Method,), {"name": name, "streams": ("source",), "__module__": "__main__"})
    cls.__qualname__ = qualname or cls.__name__
    return cls


def test_workers_refuse_a_method_registered_only_in_main(tmp_path, monkeypatch):
    cls = _main_method("main_only_m", "f.<locals>.Main_Only_M")
    METHODS["main_only_m"] = cls
    try:
        monkeypatch.setattr(experiment, "check_same_data", lambda *a, **k: (_ for _ in ()).throw(Sentinel()))
        cfg = ExperimentConfig(name="w", source="digits", target="digits", methods=["main_only_m"], k=2, repeats=2,
                               workers=2, out_dir=str(tmp_path))
        with pytest.raises(TransferkitError, match=r"method 'main_only_m' is not defined and registered at the top.*"
                                                   r"module they can import.*--workers 1"):
            experiment.run_experiment(cfg, log=lambda *a: None)
        for other in ({"workers": 1}, {"repeats": 1}):  # one process, or one job (it runs in this process)
            with pytest.raises(Sentinel):
                experiment.run_experiment(ExperimentConfig(**{**cfg.to_dict(), **other}), log=lambda *a: None)
    finally:
        del METHODS["main_only_m"]


def test_main_only_reads_the_script_top_level(tmp_path, monkeypatch):
    from transferkit.preflight import main_only
    script = tmp_path / "script.py"
    script.write_text("class Top:\n    pass\n\nif __name__ == '__main__':\n    class Guarded:\n        pass\n")
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    assert not main_only(_main_method("top", "Top"))
    assert main_only(_main_method("guarded", "Guarded"))
    assert not main_only(type("Guarded", (Method,), {"name": "g", "__module__": "my_methods"}))
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace())  # a notebook, python -c
    assert main_only(_main_method("top", "Top"))


def test_job_lines_keep_their_columns_for_long_method_names(tmp_path):
    from transferkit.engine import TrainConfig
    from transferkit.methods.finetune import LinearProbe

    class LongProbe(LinearProbe):
        name = "linear_probe_of_a_plugin_with_a_long_name"
    METHODS[LongProbe.name] = LongProbe
    try:
        lines = []
        cfg = ExperimentConfig(name="w", source="digits", target="digits", backbone="lenet",
                               methods=["linear_probe", LongProbe.name], k=[1, 10], repeats=1,
                               pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2),
                               out_dir=str(tmp_path))
        experiment.run_experiment(cfg, log=lines.append)
    finally:
        del METHODS[LongProbe.name]
    jobs = [line for line in lines if "accuracy" in line and " seed " in line]
    assert len(jobs) == 4 and len({line.index(" seed ") for line in jobs}) == 1, jobs
    assert all(line.split()[0] in ("linear_probe", LongProbe.name) for line in jobs)


def _row(method="finetune", seed=0, **fields):
    return {"method": method, "source": "mnist", "target": "digits", "setting": "k=2", "seed": seed,
            "accuracy": 0.5, "wall_s": 1.0, **fields}


def test_rows_without_n_val_labeled_say_their_selection_count_is_unknown():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    old = [_row(seed=s, val_accuracy=0.6, n_labeled=20) for s in (0, 1)] + [_row("dann", val_accuracy=0.4,
                                                                                n_labeled=0)]
    text = markdown_table(summarize(old), old)
    line = next((x for x in text.splitlines() if "how many unknown" in x), "")
    assert "finetune (k=2, trained on 20 labels)" in line and "dann (k=2, trained on 0 labels)" in line, text
    quiet = [_row(val_accuracy=0.6, n_labeled=20, n_val_labeled=10), _row("mine", val_accuracy=None, n_labeled=20),
             _row("src", val_accuracy=0.6, n_labeled=20, select_on="source_val")]
    assert "how many unknown" not in markdown_table(summarize(quiet), quiet)
    counted = [_row(val_accuracy=0.6, n_labeled=20, n_val_labeled=300)]
    assert "on 300 labelled target validation images" in markdown_table(summarize(counted), counted)


def _dsn_run(path, name, revision=None, seeds=(0, 1), record=False):
    """A finished run directory of dsn rows, whose digests are those of ``revision`` (None: now)."""
    from transferkit.io import write_json
    from transferkit.rundir import job_digest
    cfg = ExperimentConfig(name=name, source="mnist", target="digits", methods=["dsn"], k=2, repeats=len(seeds))
    digest = job_digest(cfg, "dsn", revision=revision)
    rows = [_row("dsn", seed=s, config_digest=digest, **({"method_revision": revision} if record else {}))
            for s in seeds]
    (path / name).mkdir()
    write_json(path / name / "results.json", {"name": name, "config": cfg.to_dict(), "rows": rows})
    return path / name


def test_summary_of_an_old_run_beside_a_new_one_names_the_older_revision(tmp_path):
    from transferkit.compare import combine_runs
    from transferkit.methods import get_method
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    now = get_method("dsn").revision
    assert now >= 1
    old, new = _dsn_run(tmp_path, "old", revision=0), _dsn_run(tmp_path, "new")
    data = combine_runs([old, new])
    summary = summarize(data["rows"])
    text = markdown_table(summary, data["rows"], data["config"])
    assert "| old | dsn (revision 0) |" in text and "| new | dsn |" in text, text
    line = next((x for x in text.splitlines() if x.startswith("Rows of another revision")), "")
    assert "dsn revision 0 (run old: seeds 0, 1)" in line and f"dsn is at revision {now} here" in line
    assert "run new" not in line


def test_report_table_of_one_old_run_names_it_and_unknown_rows_are_said_unknown(tmp_path):
    from transferkit.results import read_results, summarize
    from transferkit.tables import table_parts
    data = read_results(_dsn_run(tmp_path, "old", revision=0) / "results.json")
    notes = table_parts(summarize(data["rows"]), data["rows"], data["config"], markdown=False)["notes"]
    assert any(n.startswith("Rows of another revision") and "dsn revision 0 (seeds 0, 1)" in n for n in notes)
    current = read_results(_dsn_run(tmp_path, "new") / "results.json")
    assert not any("revision" in n for n in table_parts(summarize(current["rows"]), current["rows"],
                                                       current["config"])["notes"])
    bare = [_row("dsn", seed=0)]  # no digest, no config: cannot tell
    notes = table_parts(summarize(bare), bare)["notes"]
    assert any(n.startswith("Rows whose revision of their method is unknown") and "dsn (seed 0)" in n for n in notes)


def test_rows_of_two_revisions_are_never_averaged():
    from transferkit.results import summarize
    rows = [_row("dsn", seed=0, accuracy=0.2, method_revision=0), _row("dsn", seed=1, accuracy=0.8, method_revision=1),
            _row("dsn", seed=2, accuracy=0.6)]  # its revision unknown: with the current one (as one run's resume)
    summary = summarize(rows)
    assert sorted((s.get("method_revision", -1), round(s["accuracy_mean"], 6), s["n"]) for s in summary) == \
        [(-1, 0.7, 2), (0, 0.2, 1)]


def test_rows_record_the_revision_of_their_method(tmp_path, monkeypatch):
    from transferkit.engine import TrainConfig
    from transferkit.methods.finetune import LinearProbe
    from transferkit.rundir import row_revision
    monkeypatch.setattr(LinearProbe, "revision", 2)
    cfg = ExperimentConfig(name="r", source="digits", target="digits", backbone="lenet", methods=["linear_probe"],
                           k=1, repeats=1, pretrain=TrainConfig(steps=2, eval_every=2),
                           train=TrainConfig(steps=2, eval_every=2), out_dir=str(tmp_path))
    run_dir, rows = experiment.run_experiment(cfg, log=lambda *a: None)
    assert rows[0]["method_revision"] == 2
    unrecorded = {k: v for k, v in rows[0].items() if k != "method_revision"}  # a row of before: its digest says
    assert row_revision(unrecorded, cfg.to_dict()) == 2 and row_revision(unrecorded, None) is None
    job = next((run_dir / "jobs").glob("linear_probe*.json"))
    job.write_text(json.dumps(unrecorded))
    (run_dir / "results.json").unlink()
    _, resumed = experiment.run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    assert resumed[0]["method_revision"] == 2  # read back: of the current revision, which its digest shows


def test_summary_of_one_old_run_marks_its_rows(tmp_path, capsys):
    from helpers import run_cli
    _, out, _ = run_cli(capsys, "summary", str(_dsn_run(tmp_path, "old", revision=0)))
    assert "| dsn (revision 0) |" in out, out
    assert "Rows of another revision of their method than the one here: dsn revision 0" in out, out


# --- the review's findings ------------------------------------------------------------------------------------------


def test_rows_of_a_newer_revision_are_kept_apart_marked_and_named():
    from transferkit.results import summarize
    from transferkit.tables import csv_table, markdown_table, revision_lines
    rows = [_row("dsn", seed=0, accuracy=0.2, method_revision=2), _row("dsn", seed=1, accuracy=0.8, method_revision=1),
            _row("dsn", seed=10, accuracy=0.6, method_revision=0), _row("dsn", seed=2, accuracy=0.6, method_revision=0)]
    summary = summarize(rows)
    assert sorted((s.get("method_revision", -1), s["n"]) for s in summary) == [(-1, 1), (0, 2), (2, 1)]
    table = markdown_table(summary, rows)
    assert "dsn (revision 2)" in table and "dsn (revision 0)" in table
    (line,) = revision_lines(rows)
    assert "dsn revision 2 (newer) (seed 0)" in line and "dsn revision 0 (seeds 2, 10)" in line  # 2 before 10
    header, *lines = csv_table(summary).splitlines()
    assert header.split(",")[:2] == ["method", "method_revision"]
    assert sorted(line.split(",")[1] for line in lines) == ["", "0", "2"]


def test_the_label_efficiency_figure_draws_each_revision_as_its_own_curve(monkeypatch):
    from transferkit import plots, report
    drawn = []
    monkeypatch.setattr(plots, "draw_accuracy_curves", lambda ax, curves, groups: drawn.append(curves))
    rows = [_row("dsn", seed=s, setting=f"k={k}", method_revision=r, accuracy=0.2 + 0.6 * r)
            for s in (0, 1) for k in (1, 5) for r in (0, 1)]
    report.label_efficiency_figures(rows)
    (curves,) = drawn
    assert sorted(curves) == ["dsn", "dsn (revision 0)"]
    assert all(len(points) == 2 for points in curves.values())  # one point per k, not two


def test_flex_benchmark_rows_record_how_many_validation_labels_chose_them():
    from test_bench_core_flex_second_mutation import seeded_lenet, toy_domain, toy_split

    from transferkit.bench import flex
    from transferkit.engine import TrainConfig
    split = toy_split(0, sizes=(26, 8, 12))
    row = flex.run_job("ft_fc1", seeded_lenet(), split, toy_domain(8, seed=5), 2, 0,
                       TrainConfig(steps=2, batch_size=4, eval_every=1, progress=False), {"target": "t"})
    assert row["n_val_labeled"] == len(split.val) == 8
