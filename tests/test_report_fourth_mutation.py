"""Tests from a fourth mutation pass over transferkit/report.py (the HTML page and markdown twin of ``transferkit
report``), for what the first three passes (tests/test_report_distributed_mutation.py,
tests/test_report_compare_second_mutation.py, tests/test_report_third_mutation.py) and tests/test_report.py let
through: label-efficiency curves in percent, the per-group point of a group accuracy of 0, the caption of a grouped
target whose rows hold no group accuracy, a capped ratio named to four digits; per-unit lines in name order and each
method in its own colour, rows without a source; the confusion labels of methods that share one test split but
predict differently; the accuracy panel of training curves whose first records hold no validation accuracy;
metric_note's subsets given as ""; the markdown table's separator row; the balanced and grouped cells under their
headers; a measured 0 MiB in the memory panel; no tick marks on a confusion
matrix of more than 20 classes.

Results rows are written by hand and figures replaced by the ``figures`` stub (conftest.py), so no test trains or
saves a PNG.

Judged equivalent, so not tested: training_curve_figures' colour ``f"C{i % 10}"`` -> ``f"C{i}"`` (matplotlib
takes ``CN`` modulo its colour cycle), confusion_figures' ``names[key] = ...`` -> ``names.setdefault(key, ...)``
(the key holds the class names: a key's rows name the same classes, or none, None and [] alike), _config_files'
test cut to ``parsed != same`` (it differs only for an empty config.yaml beside a results.json without a config,
shown as an empty section or not at all).
Left surviving: none of those tried.
"""

import json

from test_report_compare_second_mutation import ROW, _results

import transferkit.report as report


def _curves(ax):
    """``{label: y values}`` of the error-bar curves of a label-efficiency axis."""
    return {c.get_label(): [float(y) for y in c.lines[0].get_ydata()] for c in ax.containers}


def _legend(ax):
    return list(ax.get_legend_handles_labels()[1])


# ---- label efficiency -------------------------------------------------------------------------------------
def test_label_efficiency_curves_are_in_percent(figures):
    # kills: label_efficiency_figures' `100 * s["accuracy_mean"]` -> the fraction
    report.label_efficiency_figures([{**ROW, "setting": f"k={k}", "accuracy": 0.25 * k} for k in (1, 2)])
    assert _curves(figures[0].axes[0]) == {"m": [25.0, 50.0]}


def test_a_group_accuracy_of_zero_is_drawn(figures):
    # kills: label_efficiency_figures' `"group_accuracy_mean" in s` -> truthiness (a 0 % group point dropped)
    rows = [{**ROW, "setting": f"k={k}", "group_accuracy": g} for k, g in ((1, 0.0), (2, 0.5))]
    report.label_efficiency_figures(rows)
    assert _curves(figures[0].axes[0])["m (per group)"] == [0.0, 50.0]


def test_a_grouped_target_without_group_accuracies_draws_and_says_no_dashed_curve(figures):
    # kills: label_efficiency_figures' `if group_curves` dropped from the caption's "dashed" part
    rows = [{**ROW, "setting": f"k={k}", "n_test_groups": 3} for k in (1, 2)]
    (caption, _), = report.label_efficiency_figures(rows)
    assert "k counts labelled groups" in caption and "dashed" not in caption
    assert "dashed" not in figures[0].axes[0].get_title()


# ---- per-unit figures ---------------------------------------------------------------------------------------
def test_per_unit_methods_are_drawn_in_name_order(figures):
    # kills: per_unit_figures' sorted(by_method.items()) -> first-seen order (legend and colours move)
    report.per_unit_figures([{**ROW, "method": m, "u_acc": {"a": 0.1, "b": 0.2}} for m in ("zeta", "alpha")])
    assert _legend(figures[0].axes[0]) == ["alpha", "zeta"]


def test_per_unit_rows_without_a_source_are_drawn(figures):
    # kills: per_unit_figures' r.get("source", "") -> r["source"] (KeyError on a row that names no source)
    row = {k: v for k, v in ROW.items() if k != "source"}
    (caption, _), = report.per_unit_figures([{**row, "u_acc": {"a": 0.1, "b": 0.2}}])
    assert caption == "u_acc per unit,  → t (k=1)"


# ---- confusion, training curves, the metric note ------------------------------------------------------------
def test_methods_of_one_test_split_that_predict_differently_label_the_first_panel_only(figures):
    # kills: confusion_figures' one_split over the true-class (row) sums -> the prediction (column) sums
    rows = [{**ROW, "method": "a", "confusion": [[2, 0], [0, 2]]},
            {**ROW, "method": "b", "confusion": [[1, 1], [2, 0]]}]
    report.confusion_figures(rows)
    first, second = figures[0].axes[:2]
    assert [t.get_text() for t in first.get_yticklabels()] == ["0 (2)", "1 (2)"]
    assert [t.get_text() for t in second.get_yticklabels()] == ["", ""]


def test_training_curves_draw_the_validation_accuracy_of_the_records_that_have_it(tmp_path, figures):
    # kills: training_curve_figures' `any("val_accuracy" in r ...)` -> all (no accuracy line where the first lacks it)
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"method": "m", "run": "m-k=1-s0/main", "step": s, "loss": 1.0,
                           **({"val_accuracy": 0.5} if s > 1 else {})}) + "\n" for s in (1, 2, 3)))
    report.training_curve_figures(tmp_path, [])
    (line,) = figures[0].axes[1].lines
    assert list(line.get_xdata()) == [2, 3] and list(line.get_ydata()) == [50.0, 50.0]


def test_metric_note_takes_subsets_given_as_empty_over_the_config_s():
    # kills: metric_note's `class_subsets(config) if subsets is None else subsets` -> `subsets or class_subsets(..)`
    config = {"source_classes": [0, 1]}
    assert "source classes 0, 1" in report.metric_note([ROW], config)
    assert "classes" not in report.metric_note([ROW], config, subsets="")


# ---- round two: the table, the markdown, per-unit order and colours, captions, notes ---------------------------
def test_the_markdown_table_has_a_separator_cell_per_column(tmp_path, figures):
    # kills: write_report's "---|" * len(header) -> one cell fewer (the markdown table no longer renders)
    run = _results(tmp_path / "run", [ROW], config={})
    md = report.write_report(run)[1].read_text().splitlines()
    header = next(line for line in md if line.startswith("| method"))
    assert md[md.index(header) + 1] == "|" + "---|" * header.count(" | ") + "---|"


def test_a_grouped_and_balanced_row_puts_each_cell_under_its_header():
    # kills: _table_rows' balanced and grouped cells swapped (each under the other's header)
    rows = [{**ROW, "balanced_accuracy": 0.25, "group_accuracy": 0.75}, {**ROW, "method": "n"}]
    header, table = report._table_rows(report.summarize(rows), rows)
    cells = dict(zip(header, table[0]))
    assert cells[report.BALANCED_HEADER] == "25.0" and cells["grouped accuracy (%)"] == "75.0"
    assert dict(zip(header, table[1]))["grouped accuracy (%)"] == "–"


def test_per_unit_methods_each_have_their_own_colour(figures):
    # kills: per_unit_figures' method lines all drawn in one colour (ax.plot(..., color="C0"))
    report.per_unit_figures([{**ROW, "method": m, "u_acc": {"fc1": 0.1, "conv1": 0.2}} for m in ("a", "b")])
    first, second = figures[0].axes[0].lines
    assert first.get_color() != second.get_color()


def test_a_ratio_capped_by_its_classes_is_named_with_the_labels_used_to_four_digits(figures):
    # kills: label_efficiency_figures' `{used[s]:.4g}` -> `:.0f` (333.3 labels per class shown as 333)
    rows = [{**ROW, "setting": f"ratio={n}", "n_labeled": 1000, "class_names": ["a", "b", "c"]} for n in (100, 400)]
    (caption, _), = report.label_efficiency_figures(rows)
    assert "ratio=400 at 333.3" in caption


def test_the_memory_panel_draws_a_measured_zero(figures):
    # kills: cost_figure's `r.get("peak_rss_mb") is not None` -> truthiness (0 MiB drawn as not measured)
    rows = [{**ROW, "peak_rss_mb": 0.0}]
    report.cost_figure(report.summarize(rows), rows)
    assert [bar.get_width() for bar in figures[0].axes[1].patches] == [0.0]


def test_a_confusion_matrix_of_more_than_twenty_classes_has_no_ticks(figures):
    # kills: confusion_figures' `range(n_classes) if labels else []` -> always range (21 unlabelled tick marks)
    report.confusion_figures([{**ROW, "confusion": [[int(i == j) for j in range(21)] for i in range(21)]}])
    ax = figures[0].axes[0]
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
