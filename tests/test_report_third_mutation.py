"""Tests from a third mutation pass over transferkit/report.py (the HTML page and markdown twin of ``transferkit
report``), for what the first two passes (tests/test_report_distributed_mutation.py,
tests/test_report_compare_second_mutation.py) and tests/test_report.py let through: the order of the label-
efficiency legend and the per-group curve of one seed, ratio rows without class names, a per-unit pick of a unit
its seed did not score and the error bars of one seed, confusion colours of a class without test images and rows
whose matrix is null, the cost figure's means and its one panel without memory, training curves in percent and of
records without a run name, the table's 0 MiB and a grouped cell of one seed, saved figures past the cap, the
directory check (a folder named results.json, a stopped run), the notes under the table (markdown-escaped in the
markdown, HTML-escaped on the page) and an empty environment.

Results files are written by hand under tmp_path and figures replaced by the ``figures`` stub (conftest.py)
where only their contents matter, so no test trains or saves a PNG.

Judged equivalent, so not tested: confusion_figures keyed by `(len(conf),) * 2` instead of `conf.shape` (a
confusion matrix is square), the `<th>` cells unescaped (the headers are fixed words without markup),
_config_files comparing with the stored config itself instead of its YAML round trip (a config read from JSON
comes back unchanged), its `not isinstance(parsed, dict)` dropped (a non-mapping never equals the stored one), and
per_unit_figures' `se or 0.0` dropped from the error bars (matplotlib draws a None error as 0).
Left surviving: none of those tried. The page's image-check script dropped is killed only by the headless
Chromium test of tests/test_report.py (skipped where Chromium is missing), config.yaml files dropped from the page
only by its bench_dir tests.
"""

import json

import pytest
from test_report_compare_second_mutation import ROW, _results

import transferkit.report as report
from transferkit.errors import TransferkitError


def _labels(ax):
    return list(ax.get_legend_handles_labels()[1])


# ---- label efficiency -------------------------------------------------------------------------------------
def test_label_efficiency_methods_are_drawn_in_name_order(figures):
    # kills: label_efficiency_figures' dict(sorted(curves.items())) -> first-seen order (legend and colours move)
    rows = [{**ROW, "method": m, "setting": f"k={k}"} for m in ("zeta", "alpha") for k in (1, 2)]
    assert len(report.label_efficiency_figures(rows)) == 1
    ax = figures[0].axes[0]
    assert _labels(ax) == ["alpha", "zeta"]


def test_ratio_rows_without_class_names_are_drawn_at_their_ratio():
    # kills: _labels_used's `and classes` dropped (n_labeled / len([]) or len(None) raised)
    rows = [{"setting": "ratio=5", "n_labeled": 10, "class_names": []}, {"setting": "ratio=9", "n_labeled": 10}]
    assert report._labels_used(rows) == {}


# ---- per-unit figures ---------------------------------------------------------------------------------------
def test_a_pick_of_a_unit_its_seed_did_not_score_is_not_counted(figures):
    # kills: per_unit_figures' `and pick[1] in flat` dropped (seed 0's pick of c, which it has no value for, counted)
    rows = [{**ROW, "seed": 0, "picked": "c", "u_acc": {"a": 0.1, "b": 0.2}},
            {**ROW, "seed": 1, "picked": "c", "u_acc": {"a": 0.1, "b": 0.2, "c": 0.3}}]
    report.per_unit_figures(rows)
    assert [t.get_text() for t in figures[0].axes[0].texts] == ["1/2"]


def test_one_seed_per_unit_draws_no_error_bars(figures):
    # kills: per_unit_figures' `if any(se ...)` -> always (a bar of nothing for one seed)
    report.per_unit_figures([{**ROW, "u_acc": {"a": 0.1, "b": 0.2}}])
    assert figures[0].axes[0].containers == [] and not figures[0].axes[0].collections
    report.per_unit_figures([{**ROW, "seed": s, "u_acc": {"a": 0.1 * s, "b": 0.2}} for s in (1, 2)])
    assert figures[1].axes[0].collections  # two seeds: bars


# ---- cost figure --------------------------------------------------------------------------------------------
def test_the_cost_figure_draws_the_mean_wall_time(figures):
    # kills: cost_figure's mean_se(wall[m])[0] -> max (or another statistic)
    rows = [{**ROW, "seed": 0, "wall_s": 1.0}, {**ROW, "seed": 1, "wall_s": 3.0}]
    report.cost_figure(report.summarize(rows), rows)
    assert [p.get_width() for p in figures[0].axes[0].patches] == [2.0]


# ---- the directory, the page and the markdown ----------------------------------------------------------------
def test_a_folder_named_results_json_is_no_results_file(tmp_path):
    # kills: check_run_dir's (run_dir / "results.json").is_file() -> exists() (a directory taken for the file)
    (tmp_path / "run" / "results.json").mkdir(parents=True)
    with pytest.raises(TransferkitError, match="no results.json in"):
        report.check_run_dir(tmp_path / "run")


def test_notes_under_the_table_are_markdown_escaped_in_markdown_and_html_escaped_on_the_page(tmp_path, figures):
    # kills: write_report's picks and plain swapped (markdown's escapes on the page, raw names in the markdown)
    run = _results(tmp_path / "run", [{**ROW, "method": "fl<ex", "picked": "fc1"}], config={})
    page, md = (p.read_text() for p in report.write_report(run))
    assert "\n\nfl\\<ex picked: fc1 ×1\n" in md
    assert "<p>fl&lt;ex picked: fc1 ×1</p>" in page and "fl\\" not in page


def test_a_table_row_of_zero_mib_shows_zero_not_a_dash(tmp_path, figures):
    # kills: _table_rows' `r.get("peak_rss_mb") is not None` -> truthiness (a measured 0 MiB shown as unmeasured)
    header, table = report._table_rows(report.summarize([{**ROW, "peak_rss_mb": 0.0}]), [{**ROW, "peak_rss_mb": 0.0}])
    assert table[0][header.index("peak MiB")] == "0"



def test_an_empty_environment_adds_no_environment_section(tmp_path, figures):
    # kills: write_report's `if data.get("environment")` -> `if "environment" in data` (an empty "environment: null")
    run = _results(tmp_path / "run", [ROW], config={"k": 1}, environment=None)
    page, md = (p.read_text() for p in report.write_report(run))
    assert "# environment" not in page and "# environment" not in md

# ---- more figure details ------------------------------------------------------------------------------------
def test_a_grouped_target_of_one_seed_draws_its_group_curve_without_bars(figures):
    # kills: label_efficiency_figures' `group_accuracy_se or 0.0` dropped (None * 100 for one seed)
    rows = [{**ROW, "setting": f"k={k}", "group_accuracy": 0.4} for k in (1, 2)]
    (caption, _), = report.label_efficiency_figures(rows)
    assert "per group" in " ".join(_labels(figures[0].axes[0]))


def test_confusion_colours_are_each_true_class_s_share_and_a_class_without_images_is_empty(figures):
    # kills: confusion_figures' np.maximum(.., 1) dropped (NaN for a class of no test image); rows -> columns
    report.confusion_figures([{**ROW, "confusion": [[3, 1], [0, 0]]}])
    image = figures[0].axes[0].images[0].get_array()
    assert image.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_training_curves_draw_the_validation_accuracy_in_percent(tmp_path, figures):
    # kills: training_curve_figures' `100 * r["val_accuracy"]` -> the fraction
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"method": "m", "run": "m-k=1-s0/main", "step": s, "loss": 1.0, "val_accuracy": 0.25}) + "\n"
        for s in (1, 2, 3)))
    report.training_curve_figures(tmp_path, [])
    assert list(figures[0].axes[1].lines[0].get_ydata()) == [25.0, 25.0, 25.0]


def test_rows_with_an_empty_confusion_draw_no_confusion_figure(figures):
    # kills: confusion_figures' `if r.get("confusion")` -> `if "confusion" in r` (a null matrix drawn or raised on)
    assert report.confusion_figures([{**ROW, "confusion": None}, {**ROW, "seed": 1, "confusion": []}]) == []


def test_the_cost_figure_without_memory_uses_the_whole_width(figures):
    # kills: cost_figure's `1, 2 if memory else 1, 1` -> always two panels (the wall panel squeezed into half)
    report.cost_figure(report.summarize([ROW]), [ROW])
    (ax,) = figures[0].axes
    assert ax.get_position().width > 0.5


def test_training_curves_of_records_without_a_run_name_name_no_job(tmp_path, figures):
    # kills: training_curve_figures' `if recs[0].get("run")` dropped (the caption names a job "None")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"method": "m", "step": s, "loss": 1.0}) + "\n"
                                                    for s in (1, 2, 3)))
    (caption,) = [c for c, _ in report.training_curve_figures(tmp_path, [])]
    assert caption == f"Training curves ({tmp_path.name}, first run of each method)"


def test_a_stopped_run_with_finished_jobs_passes_the_directory_check(tmp_path):
    # kills: check_run_dir's `or unfinished_run(run_dir) is not None` dropped (a stopped run refused by the check)
    run = tmp_path / "run"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: stopped\nk: 1\nratio: null\n")
    (run / "jobs" / "m-k=1-s0.json").write_text(json.dumps(ROW))
    assert report.check_run_dir(run) == run / "results.json"


def test_a_grouped_cell_of_one_seed_among_two_shows_its_mean_alone(figures):
    # kills: _table_rows' format_mean_se(.., s["group_n"]) -> s["n"] (a standard error of one grouped value)
    rows = [{**ROW, "group_accuracy": 0.4}, {**ROW, "seed": 1}]
    header, table = report._table_rows(report.summarize(rows), rows)
    assert table[0][header.index("grouped accuracy (%)")] == "40.0"


def test_saved_figures_beyond_the_cap_are_named_in_the_notes(tmp_path):
    # kills: saved_figures' notes not passed to _capped (figures left out unsaid)
    for i in range(report.MAX_FIGURES + 1):
        (tmp_path / f"f{i:02d}.png").write_bytes(b"png")
    notes = []
    assert len(report.saved_figures(tmp_path, tmp_path / "report_files", notes)) == report.MAX_FIGURES
    assert notes == [f"1 more saved figures not shown (the report draws {report.MAX_FIGURES})"]
