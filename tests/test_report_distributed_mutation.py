"""Tests from a mutation pass over transferkit/report.py (the page of ``transferkit report`` and its
markdown twin: sections, escaping, captions and notes of the figures, which files are embedded,
stale figures, what a missing or unfinished directory gives) and transferkit/distributed.py (the
process-group helpers in one process, what they do under a faked group of two, the environment
variables read, the rank error files, ``peer_failed``, the launcher watch).

Each test kills at least one small hand-made mutant the older tests let through (a flipped bound,
a dropped escape, a wrong sort, a skipped record that is no longer skipped). Results files are
written by hand; figures are replaced by a stub PNG where only their captions and notes matter,
and collectives by fakes, so no test trains, draws at full cost or starts a process.

Judged equivalent, so not tested: `world_size() == 1` -> `<= 1`, rank_errors sorted by the whole tuple
or by rank only (they differ only for two files of one rank), peer_failed's `bool(folder) and` -> `folder
and`. Not tried: report's `v > 1` -> `>= 1` of per-unit values, `sorted(rglob)` -> `list` of saved figures.
"""

import base64
import json
import re

import numpy as np
import pytest
import torch

import transferkit.distributed as distributed
import transferkit.report as report
from transferkit.errors import TransferkitError

ROW = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


def _run(tmp_path, rows, name="x", config=None, **more):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "results.json").write_text(json.dumps({"name": name, "config": config or {}, "rows": rows, **more}))
    return run


# ---- small helpers of report.py -------------------------------------------------------------
def test_capped_counts_and_names_what_it_leaves_out():
    notes = []
    assert report._capped([1, 2, 3], 3, "things", notes) == [1, 2, 3] and notes == []  # `>` -> `>=`
    assert report._capped(list(range(14)), 2, "things", notes, name=str) == [0, 1]  # cap off by one
    assert notes == ["12 more things not shown: 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (the report draws 2)"]
    notes.clear()
    report._capped(list(range(12)), 2, "things", notes, name=str)  # ten names: no ", ..." (`> 10` -> `>= 10`)
    assert notes == ["10 more things not shown: 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 (the report draws 2)"]
    notes.clear()
    report._capped([1, 2, 3], 1, "things", notes)  # no names: no colon
    assert notes == ["2 more things not shown (the report draws 1)"]
    assert report._capped([1, 2, 3], 1, "things", None) == [1]  # no notes: cut all the same


def test_setting_values_are_whole_settings_only():
    assert [report._setting_value(s) for s in ("k=5", "ratio=400", "12/class")] == [5.0, 400.0, 12.0]
    for other in ("k=5x", "xk=5", "5-way 1-shot", "k=", "gzsl"):  # fullmatch -> match/search
        assert report._setting_value(other) is None, other


def test_unit_values_refuse_booleans_empty_and_non_numeric_inner_dicts():
    assert report._is_number(3) and report._is_number(0.5) and not report._is_number(True)
    assert report._unit_values({"a": True}) is None  # a bool is no accuracy
    assert report._unit_values({"a": {}}) is None  # an empty inner dict: no series
    assert report._unit_values({"a": {"svm": 0.1, "x": "no"}}) is None  # all() -> any()
    assert report._unit_values({"a": 0.2, "b": {"svm": 0.3}}) == {None: {"a": 0.2}, "svm": {"b": 0.3}}


def test_labels_used_are_the_most_per_class_of_a_ratio_never_above_it():
    names = ["a", "b", "c"]
    rows = [{"setting": "ratio=400", "n_labeled": 600, "class_names": names},  # 200 per class
            {"setting": "ratio=400", "n_labeled": 900, "class_names": names},  # 300: the most counts (max -> min)
            {"setting": "ratio=100", "n_labeled": 3000, "class_names": names},  # 1000 capped at 100 (min -> max)
            {"setting": "ratio=50", "n_labeled": 0, "class_names": names},  # nothing labelled: not used
            {"setting": "ratio=20", "n_labeled": 30, "class_names": names, "group_accuracy": 0.5},  # groups
            {"setting": "k=5", "n_labeled": 3, "class_names": names}]  # a k is what was asked
    assert report._labels_used(rows) == {"ratio=400": 300.0, "ratio=100": 100.0}


def test_pick_splits_a_unit_and_classifier_and_accuracy_labels_read_as_words():
    assert report._pick({"picked": "fc1/svm"}) == ("svm", "fc1")  # partition's sides swapped
    assert report._pick({"picked": "conv2"}) == (None, "conv2")  # "" -> None dropped
    assert report._pick({}) is None
    assert report._accuracy_label("candidate_val_accuracy") == "validation accuracy"
    assert report._accuracy_label("tap_val_acc") == "tap validation accuracy"
    assert report._accuracy_label("candidate") == "candidate"  # nothing left: the key itself (`or key` dropped)


def test_per_unit_figures_take_fractions_from_0_to_1_and_skip_other_fields(figures):
    rows = [{**ROW, "edge_acc": {"a": 0.0, "b": 1.0},  # both bounds are accuracies (`<` -> `<=`, `>` -> `>=`)
             "pct_acc": {"a": 50.0},  # a percentage: out of [0, 1]
             "neg_acc": {"a": -0.1},
             "per_class_accuracy": {"a": 0.5}, "confusion": {"a": 0.5},  # drawn elsewhere
             "loss": {"a": 0.5}, "empty_acc": {}}]
    assert [c for c, _ in report.per_unit_figures(rows)] == ["edge_acc per unit, s → t (k=1)"]


def test_per_unit_figures_annotate_a_pick_made_by_some_seeds_only(figures):
    rows = [{**ROW, "seed": s, "picked": p, "cand_acc": {"a": 0.2, "b": 0.4}}
            for s, p in ((0, "a"), (1, "b"), (2, "b"))]
    report.per_unit_figures(rows)
    ax = figures[0].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1/3", "2/3"]  # `count < len` -> `<=` or the count wrong
    rows = [{**r, "picked": "b"} for r in rows]
    report.per_unit_figures(rows)
    assert len(figures[1].axes[0].texts) == 0  # every seed picked b: no count


# ---- confusion figures ----------------------------------------------------------------------
def test_support_labels_per_seed_for_one_split_else_summed():
    per_seed = [np.array([[2, 1], [0, 3]]), np.array([[1, 2], [3, 0]])]
    assert report._support_labels(["a", "b"], per_seed, True) == ["a (3)", "b (3)"]
    per_seed = [np.array([[2, 1], [0, 3]]), np.array([[4, 0], [0, 1]])]
    assert report._support_labels(["a", "b"], per_seed, False) == ["a (7)", "b (4)"]  # row sums, not columns


def test_confusion_captions_say_seeds_counts_and_labels():
    colour = "colour: row-normalised per true class (recall on the diagonal)"
    assert report._confusion_caption({1}, True, True, True) == (
        colour + "; numbers: counts summed over 1 seed; a true class's label gives its test images per seed")
    assert report._confusion_caption({3}, True, False, True) == (
        colour + "; numbers: counts summed over 3 seeds; a true class's label gives its test images, summed over "
                 "the seeds")
    assert report._confusion_caption({1, 2}, True, True, False) == colour + "; numbers: counts summed over each " \
                                                                            "method's seeds"
    assert report._confusion_caption({2}, False, True, False) == colour


def test_counts_are_white_on_dark_cells_and_smaller_beyond_six_classes():
    fig = report.new_figure(2, 2)
    ax = fig.add_subplot()
    counts = np.array([[6, 4], [7, 3]])
    report._draw_counts(ax, counts, np.array([[0.6, 0.4], [0.7, 0.3]]))
    assert [(t.get_text(), t.get_color(), t.get_fontsize()) for t in ax.texts] == [
        ("6", "black", 7), ("4", "black", 7), ("7", "white", 7), ("3", "black", 7)]  # 0.6 is no dark cell
    ax = fig.add_subplot()
    report._draw_counts(ax, np.eye(7, dtype=int), np.eye(7))
    assert {t.get_fontsize() for t in ax.texts} == {5} and len(ax.texts) == 49  # `<= 6` -> `< 6` / `<= 7`
    ax = fig.add_subplot()
    report._draw_counts(ax, np.eye(6, dtype=int), np.eye(6))
    assert {t.get_fontsize() for t in ax.texts} == {7}


def test_confusion_figures_count_up_to_twelve_classes_and_label_up_to_twenty(figures):
    def rows(n, setting):
        return [{**ROW, "setting": setting, "confusion": np.eye(n, dtype=int).tolist()}]
    caps = [c for c, _ in report.confusion_figures(rows(12, "k=12") + rows(13, "k=13") + rows(20, "k=20")
                                                   + rows(21, "k=21"))]
    assert ["numbers:" in c for c in caps] == [True, False, False, False]  # COUNTED_CLASSES boundary
    assert ["label gives" in c for c in caps] == [True, True, True, False]  # labels up to 20 classes
    assert [len(figures[i].axes[0].texts) for i in range(2)] == [144, 0]
    assert figures[0].axes[0].get_ylabel() == "true (test images)" and figures[3].axes[0].get_ylabel() == "true"


def test_confusion_figures_label_every_panel_where_the_splits_differ(figures):
    conf = {"a": [[2, 0], [0, 2]], "b": [[3, 0], [1, 1]]}
    rows = [{**ROW, "method": m, "confusion": c, "class_names": ["x", "y"]} for m, c in conf.items()]
    (cap, _), = report.confusion_figures(rows)
    assert "summed over the seeds" in cap
    a, b = figures[0].axes[:2]
    assert [t.get_text() for t in a.get_yticklabels()] == ["x (2)", "y (2)"]
    assert [t.get_text() for t in b.get_yticklabels()] == ["x (3)", "y (2)"]  # `or not one_split` dropped
    assert a.get_title() == "a (1 seed)" and b.get_xlabel() == "predicted" and b.get_ylabel() == ""
    rows = [{**r, "confusion": [[2, 0], [0, 2]]} for r in rows]  # one split: the first panel's labels hold for all
    report.confusion_figures(rows)
    assert [t.get_text() for t in figures[1].axes[1].get_yticklabels()] == ["", ""]


# ---- training curves ------------------------------------------------------------------------
def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_training_curves_keep_the_last_record_of_a_step_and_the_first_run_of_a_method(tmp_path):
    path = _jsonl(tmp_path / "metrics.jsonl", [
        {"method": "a", "run": "a-k=1-s0/main", "step": 10, "loss": 3.0},
        {"method": "a", "run": "a-k=1-s0/main", "step": 20, "loss": 2.0},
        {"method": "a", "run": "a-k=1-s0/main", "step": 10, "loss": 1.0},  # resumed: the step again, last counts
        {"method": "a", "run": "a-k=1-s0/main", "step": 5, "loss": 4.0},
        {"method": "a", "run": "a-k=1-s1/main", "step": 10, "loss": 9.0},  # a later run of a: not drawn
        {"method": "b", "step": 5, "loss": 1.0}, {"method": "b", "step": 10, "loss": 0.5},
        {"method": "b", "step": 10, "loss": 7.0}, {"method": "b", "step": 15, "loss": 7.0}])  # no run: ends it
    curves = report.training_curves(path)
    assert [(r["step"], r["loss"]) for r in curves["a"]] == [(5, 4.0), (10, 1.0), (20, 2.0)]  # sorted by step
    assert [(r["step"], r["loss"]) for r in curves["b"]] == [(5, 1.0), (10, 0.5)]
    assert report._curve_name("dann", "dann-k=1-s0/main") == "dann" and report._curve_name("dann", None) == "dann"
    assert report._curve_name("ft_unit", "flex-k=5-s0/cand-conv1") == "flex: cand-conv1"
    assert report._curve_name("ft_unit", "nosetting/cand-x") == "nosetting: cand-x"


def test_training_curve_files_beyond_four_are_named_and_few_points_noted(tmp_path, figures):
    for i in range(6):
        _jsonl(tmp_path / f"p{i}" / "metrics.jsonl", [{"method": "m", "run": "m-k=1-s0/main", "step": s, "loss": 1.0}
                                                      for s in range(1, 3 if i == 0 else 4)])
    notes = []
    caps = [c for c, _ in report.training_curve_figures(tmp_path, notes)]
    assert caps == [f"Training curves (p{i}, first run of each method: m-k=1-s0)" for i in range(4)]  # sorted
    assert notes[0] == "2 more training-curve files not shown: p4, p5 (the report draws 4)"
    assert len(notes) == 2 and notes[1].startswith("Training curves of p0: m logged fewer than 3 points")
    assert "no validation split" in [t.get_text() for t in figures[0].axes[1].texts]


# ---- saved figures, config files, metric note, missing directories --------------------------
def test_saved_figures_are_the_runs_own_sorted_and_named_by_their_path(tmp_path):
    for name in ("b/t.png", "a.png", "report_files/figure00.png", "out/report_files/figure01.png", "mine/x.png",
                 "note.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    got = report.saved_figures(tmp_path, tmp_path / "mine")
    # captioned by what they show (session 81: none told here, not PNGs), then their path
    assert got == [("a figure the run saved (a.png)", b"a.png"), ("a figure the run saved (b/t.png)", b"b/t.png")]


def test_config_files_show_what_differs_from_the_stored_config(tmp_path):
    stored = {"name": "x", "k": 1}
    (tmp_path / "config.yaml").write_text("k: 1\nname: x\n")  # the same, in another key order: not shown
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.yaml").write_text("name: b\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("name: [\n")  # unreadable yaml: shown as it is
    assert report._config_files(tmp_path, stored) == "\n# a/config.yaml\nname: [\n\n# b/config.yaml\nname: b\n"
    (tmp_path / "config.yaml").write_text("k: 2\nname: x\n")
    assert report._config_files(tmp_path, stored).startswith(
        "\n# a/config.yaml\nname: [\n\n# b/config.yaml\nname: b\n\n# config.yaml (differs from the config above")
    assert "(differs" not in report._config_files(tmp_path, None)  # nothing stored: nothing to differ from


def test_metric_note_says_the_split_and_the_subsets():
    assert report.metric_note([ROW]) == "the accuracy column is target test accuracy, mean ± standard error over " \
                                        "seeds (n)."
    assert "is target test accuracy" in report.metric_note([{**ROW, "split": "test"}])
    assert "is target test accuracy" in report.metric_note([])  # no rows: no split named
    assert "on the split each row names" in report.metric_note([ROW, {**ROW, "split": "val"}])
    assert "is target validation accuracy" in report.metric_note([{**ROW, "split": "val"}])
    assert report.metric_note([{**ROW, "ci95": 0.1}], subsets="classes 0-4").endswith(
        "(n); a row over episodes: its 95 % interval; classes 0-4.")


def test_a_missing_or_empty_directory_is_named_in_the_error(tmp_path):
    with pytest.raises(TransferkitError, match=f"{re.escape(str(tmp_path / 'gone'))} does not exist: give a run"):
        report.check_run_dir(tmp_path / "gone")
    with pytest.raises(TransferkitError, match=f"no results.json in {re.escape(str(tmp_path))}: not a run"):
        report.write_report(tmp_path)
    (tmp_path / "results.json").write_text("{}")
    assert report.check_run_dir(str(tmp_path)) == tmp_path / "results.json"


# ---- the page and its markdown twin ---------------------------------------------------------
def test_the_page_and_markdown_hold_title_table_failures_notes_and_config_escaped(tmp_path, figures):
    rows = [{**ROW, "method": "a<b>", "seed": s, "accuracy": 0.5 + s / 10, "peak_rss_mb": 100.0 + s} for s in (0, 1)]
    failed = [{"job": "c-k=1-s0", "error": "x<y", "traceback": "tb"}, "plain & text"]
    run = _run(tmp_path, rows, name="n<&>", config={"note": "<i>"}, failed=failed, environment={"torch": "2.x"})
    html_path, md_path = report.write_report(run)
    assert (html_path, md_path) == (run / "report.html", run / "report.md")  # no --out: in the run directory
    page, md = html_path.read_text(), md_path.read_text()
    title = "transferkit report: n&lt;&amp;&gt;"
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page
    assert f"<p>2 results from <code>{run / 'results.json'}</code>; the accuracy column is" in page
    assert "<p>failed: job c-k=1-s0: x&lt;y (traceback: tb)</p><p>failed: plain &amp; text</p>" in page
    assert "<td>a&lt;b&gt;</td><td>s</td><td>t</td><td>k=1</td>" in page and "<td>101</td>" in page
    assert page.count('<th scope="col">') == 8 and page.index("<h2>Results</h2>") < page.index("<h2>Figures</h2>") \
        < page.index("<h2>Configuration</h2>")
    assert "note: &lt;i&gt;" in page and "# environment (results.json)\nenvironment:\n  torch: 2.x" in page
    assert '<img alt="Wall time and peak memory per method" src="data:image/png;base64,' \
           + base64.b64encode(b"png").decode() + '">' in page and "<p>no figures</p>" not in page
    assert md.startswith("# transferkit report: n\\<&\\>\n\n2 job(s) failed and have no row in the table: c-k=1-s0, "
                         "plain & text (their errors are under the table).\n\n2 results; the accuracy column is")
    assert "| a\\<b\\> | s | t | k=1 | 55.0 ± 5.0 | 2 | 1.0 | 101 |" in md
    assert "\n\nfailed: job c-k=1-s0: x\\<y (traceback: tb)\n\nfailed: plain & text\n" in md
    assert "## Figures\n\n![Wall time and peak memory per method](report_files/figure00.png)\n" in md
    assert md.endswith("## Configuration\n\n```yaml\nnote: <i>\n\n# environment (results.json)\nenvironment:\n"
                       "  torch: 2.x\n```\n")
    assert (run / "report_files" / "figure00.png").read_bytes() == b"png"


def test_a_report_without_rows_says_it_has_no_figures_and_named_by_its_folder(tmp_path, figures):
    run = tmp_path / "myrun"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"config": {}, "rows": []}))
    page = report.write_report(run)[0].read_text()
    assert "<h1>transferkit report: myrun</h1>" in page and "<p>no figures</p>" in page
    assert "<p>0 results from" in page and "<tbody></tbody>" in page


def test_figure_notes_end_both_pages_and_stale_figures_are_removed(tmp_path, figures):
    rows = [{**ROW, "setting": f"k={k}", "u_acc": {"a": 0.1}} for k in range(1, 27)]  # 26 per-unit figures > 24
    run = _run(tmp_path, rows)
    out = tmp_path / "out"
    (out / "report_files").mkdir(parents=True)
    for name in ("figure99.png", "figure00.png", "keep.png"):
        (out / "report_files" / name).write_bytes(b"old")
    page, md = (p.read_text() for p in report.write_report(run, out))
    note = "2 more per-unit figures not shown (the report draws 24)"
    assert f"<p>{note}</p>\n<h2>Configuration</h2>" in page
    assert f"\n{note}.\n\n## Configuration" in md
    files = sorted(p.name for p in (out / "report_files").iterdir())
    assert "figure99.png" not in files and "keep.png" in files and (out / "report_files" / "figure00.png"
                                                                    ).read_bytes() == b"png"
    names = re.findall(r"\(report_files/(figure\d+\.png)\)", md)
    assert names == [f"figure{i:02d}.png" for i in range(len(names))] and len(names) == 26  # 24, label efficiency, cost
    assert not (run / "report.html").exists()  # --out: the run directory is left as it was


def test_captions_are_escaped_in_the_page_and_alt_text_brackets_in_markdown(tmp_path, figures):
    rows = [{**ROW, "target": "t[1]\\2<&>", "confusion": [[1, 0], [0, 1]]}]
    page, md = (p.read_text() for p in report.write_report(_run(tmp_path, rows)))
    assert "![Confusion matrices, s → t\\[1\\]\\\\2\\<&\\> (k=1); colour:" in md
    caption = "Confusion matrices, s → t[1]\\2&lt;&amp;&gt; (k=1); colour:"
    assert f'<img alt="{caption}' in page and f"<figcaption>{caption}" in page


def test_the_report_embeds_the_runs_own_figures_not_its_earlier_report(tmp_path, figures):
    run = _run(tmp_path, [ROW])
    (run / "tsne.png").write_bytes(b"tsne-bytes")
    report.write_report(run)  # the first report's report_files/figure*.png are no figures of the run
    page, md = (p.read_text() for p in report.write_report(run))
    assert page.count("<figure>") == 2 and base64.b64encode(b"tsne-bytes").decode() in page
    shown = "t-SNE of source and target embeddings (tsne.png)"  # session 81: what it shows (the file name tells)
    assert f"<figcaption>{shown}</figcaption>" in page and f"![{shown}](report_files/figure01.png)" in md


# ---- distributed.py ---------------------------------------------------------------------------
def test_one_process_collectives_are_identities(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("a collective in one process")
    for name in ("all_reduce", "broadcast", "barrier", "get_world_size", "get_rank"):
        monkeypatch.setattr(distributed.dist, name, boom)
    x = torch.arange(4.0)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    assert distributed.gathered(x) is x and distributed.all_reduce_mean(x) is x
    distributed.broadcast_state(torch.nn.Linear(2, 2))
    distributed.barrier()


@pytest.fixture
def two_ranks(monkeypatch):
    """A faked initialised group of two, this process rank 1; the collectives it sees, in order."""
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)

    def all_reduce(t, op=None):
        calls.append(("all_reduce", op))
        t.mul_(2)  # the other rank holds the same values: their sum
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(distributed.dist, "broadcast", lambda t, src: calls.append(("broadcast", tuple(t.shape), src)))
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append(("barrier",)))
    return calls


def test_all_reduce_mean_averages_a_copy_and_broadcast_takes_rank_0_s_state(two_ranks):
    assert distributed.world_size() == 2 and distributed.rank() == 1 and not distributed.is_main_process()
    x = torch.tensor([1.0, 3.0], requires_grad=True)
    mean = distributed.all_reduce_mean(x)
    assert mean.tolist() == [1.0, 3.0] and x.tolist() == [1.0, 3.0]  # mean of equal values; x untouched (clone)
    assert two_ranks == [("all_reduce", distributed.dist.ReduceOp.SUM)]
    two_ranks.clear()
    distributed.broadcast_state(torch.nn.BatchNorm1d(3))
    assert two_ranks == [("broadcast", (3,), 0)] * 4 + [("broadcast", (), 0)]  # every parameter and buffer
    two_ranks.clear()
    distributed.barrier()
    assert two_ranks == [("barrier",)]


def test_init_distributed_joins_no_group_for_one_process(monkeypatch):
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: pytest.fail("joined a group"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed() is False
    monkeypatch.setenv("WORLD_SIZE", "1")  # `<= 1` -> `< 1`
    assert distributed.init_distributed() is False


def test_init_distributed_watches_the_launcher_named_by_its_pid_only(monkeypatch):
    started = []

    class Thread:
        def __init__(self, target, args, daemon):
            started.append((target, args, daemon))

        def start(self):
            pass
    monkeypatch.setattr(distributed.threading, "Thread", Thread)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.atexit, "register", lambda f: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(distributed.LAUNCHER_ENV, "4321")
    assert distributed.init_distributed("cpu") is True
    assert started == [(distributed._exit_with_launcher, (4321,), True)]
    started.clear()
    for value in ("", "x12"):
        monkeypatch.setenv(distributed.LAUNCHER_ENV, value)
        assert distributed.init_distributed("cpu") is True and started == []


def test_record_rank_error_leaves_rank_n_json_where_the_launcher_reads(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # an empty folder taken as one would write here
    monkeypatch.delenv(distributed.EXIT_DIR_ENV, raising=False)
    assert distributed.record_rank_error(2, "no folder") is False
    monkeypatch.setenv(distributed.EXIT_DIR_ENV, "")
    assert distributed.record_rank_error(2, "empty") is False
    monkeypatch.setenv(distributed.EXIT_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.record_rank_error(3, "first") is True
    monkeypatch.setenv("RANK", "12")
    assert distributed.record_rank_error(2, "twelfth") is True
    assert json.loads((tmp_path / "rank-0.json").read_text()) == {"code": 3, "error": "first"}
    assert distributed.rank_errors(tmp_path) == [(0, 3, "first"), (12, 2, "twelfth")]
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv(distributed.EXIT_DIR_ENV, str(tmp_path / "afile"))
    assert distributed.record_rank_error(2, "lost") is False  # cannot be left: the caller prints it


def test_rank_errors_sort_by_rank_number_and_skip_malformed_records(tmp_path):
    records = {"rank-10.json": {"code": 1, "error": "ten"}, "rank-2.json": {"code": "2", "error": 5},
               "rank-9.json": {"code": 1}, "rank-x.json": {"code": 1, "error": "x"}, "rank-3.json": [1, 2],
               "rank-4.json": {"code": None, "error": "none"}, "other-1.json": {"code": 1, "error": "o"}}
    for name, value in records.items():
        (tmp_path / name).write_text(json.dumps(value))
    (tmp_path / "rank-5.json").write_text("{not json")
    (tmp_path / "rank-6.txt").write_text(json.dumps({"code": 1, "error": "txt"}))
    assert distributed.rank_errors(tmp_path) == [(2, 2, "5"), (10, 1, "ten")]  # 10 after 2, not as text


def test_rank_errors_read_only_the_names_ranks_write(tmp_path):
    # int() reads "-1", "01", " 7" and other scripts' digits: none is a name record_rank_error writes
    for stem in ("rank--1", "rank-01", "rank-+3", "rank-\u0663", "rank-1_0", "rank-7"):
        (tmp_path / f"{stem}.json").write_text(json.dumps({"code": 1, "error": stem}))
    assert distributed.rank_errors(tmp_path) == [(7, 1, "rank-7")]


def test_peer_failed_counts_other_ranks_only(monkeypatch, tmp_path):
    (tmp_path / "rank-3.json").write_text(json.dumps({"code": 2, "error": "mine"}))
    monkeypatch.delenv(distributed.EXIT_DIR_ENV, raising=False)
    monkeypatch.setenv("RANK", "0")
    assert distributed.peer_failed() is False
    monkeypatch.setenv(distributed.EXIT_DIR_ENV, str(tmp_path))
    assert distributed.peer_failed() is True
    monkeypatch.setenv("RANK", "3")
    assert distributed.peer_failed() is False  # its own error
    (tmp_path / "rank-3.json").rename(tmp_path / "rank-0.json")
    monkeypatch.delenv("RANK")
    assert distributed.peer_failed() is False  # RANK unset: rank 0, whose own error this is
    monkeypatch.setenv("RANK", "1")
    assert distributed.peer_failed() is True
    monkeypatch.setenv("RANK", "x")
    assert distributed.peer_failed() is False


def test_exit_with_launcher_polls_then_removes_the_error_folder_and_exits_1(monkeypatch, tmp_path):
    events, alive = [], [True, True, False]

    def kill(pid, sig):
        events.append(("kill", pid, sig))
        if not alive.pop(0):
            raise ProcessLookupError

    class Exit(BaseException):
        pass

    def exit_(code):
        events.append(("exit", code, (tmp_path / "e").exists()))
        raise Exit
    monkeypatch.setattr(distributed.os, "kill", kill)
    monkeypatch.setattr(distributed.os, "_exit", exit_)
    monkeypatch.setattr(distributed.time, "sleep", lambda s: events.append(("sleep", s)))
    (tmp_path / "e").mkdir()
    monkeypatch.setenv(distributed.EXIT_DIR_ENV, str(tmp_path / "e"))
    with pytest.raises(Exit):
        distributed._exit_with_launcher(77, 0.25)
    assert events == [("kill", 77, 0), ("sleep", 0.25), ("kill", 77, 0), ("sleep", 0.25), ("kill", 77, 0),
                      ("exit", 1, False)]


def test_exit_with_launcher_stops_watching_another_users_process(monkeypatch):
    def kill(pid, sig):
        raise PermissionError
    monkeypatch.setattr(distributed.os, "kill", kill)
    monkeypatch.setattr(distributed.os, "_exit", lambda code: pytest.fail("exited"))
    monkeypatch.setattr(distributed.time, "sleep", lambda s: pytest.fail("watches on"))
    assert distributed._exit_with_launcher(1) is None


def test_one_gpu_per_process_refuses_a_numbered_device():
    distributed.check_one_gpu_per_process("cuda")
    with pytest.raises(TransferkitError, match="device cuda:1 puts every process on one GPU"):
        distributed.check_one_gpu_per_process("cuda:1")


def test_config_files_past_the_cap_are_named_not_dropped_and_the_stored_config_s_twin_does_not_count(tmp_path):
    # found by the pass (fixed): the first MAX_FIGURES config.yaml files were read and the rest left out unsaid
    stored = {"name": "b", "k": 1}
    (tmp_path / "config.yaml").write_text("name: b\nk: 1\n")  # the stored config itself: not shown, not counted
    for i in range(report.MAX_FIGURES + 2):
        (tmp_path / f"r{i:02d}").mkdir()
        (tmp_path / f"r{i:02d}" / "config.yaml").write_text(f"name: r{i}\n")
    text = report._config_files(tmp_path, stored)
    shown = re.findall(r"^# (r\d+)/config.yaml$", text, re.M)
    assert shown == [f"r{i:02d}" for i in range(report.MAX_FIGURES)]
    assert text.rstrip().endswith(f"# 2 more config.yaml files not shown: r{report.MAX_FIGURES:02d}/config.yaml, "
                                  f"r{report.MAX_FIGURES + 1:02d}/config.yaml (the report draws {report.MAX_FIGURES})")
