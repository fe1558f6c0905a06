"""Tests from a mutation pass over transferkit/tables.py (the results table as markdown, LaTeX and
CSV, and the lines under it) and transferkit/plots.py (sample grids, per-unit accuracy, units
picked, t-SNE, accuracy-vs-k).

Each test kills at least one plausible bug that the older tests let through: a note's plural or
count worded wrong, a threshold off by one, a list named in the wrong order, a LaTeX column
aligned or escaped wrongly, a CSV field dropped, an axis given the wrong data or a figure drawn
with the wrong scale. Expected values are worked out by hand (a 95 % binomial half-width at 50 %
on 100 images is 1.96 x 0.05 = 9.8 points), never read back from the code under test. Figures
are built with ``path=None`` and read through their axes, lines and texts, never their pixels;
the t-SNE itself is replaced by a stand-in that records its arguments.

Judged equivalent, so not tested: csv_table's `"" if s.get(f) is None` (csv writes None as an empty
field). Left to the older tests: the ± note threshold and the n / wall s column order (asserted in
test_report.py), and `_check_one_curve_set`'s `len(values) < 2` (a three-way mix of curve sets would pass).
"""

import math
import re

import pytest
import torch
from helpers import toy_domain

from transferkit import plots, tables
from transferkit.errors import TransferkitError, first_named
from transferkit.results import summarize

ROW = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


def entry(**fields) -> dict:
    """A summary entry of one seed (as :func:`summarize` makes it), with ``fields`` over it."""
    return {**summarize([ROW])[0], **fields}


# ---- class subsets and units picked ----------------------------------------------------------
def test_class_subsets_name_source_then_target_with_their_classes_comma_separated():
    # kills: sides swapped (target first), "," without a space, "class" for "classes"
    config = {"source_classes": [0, 1, 2], "target_classes": "5-9"}
    assert tables.class_subsets(config) == "source classes 0, 1, 2; target classes 5-9"
    assert tables.class_subsets(None) == "" and tables.class_subsets({"target_classes": (3,)}) == "target classes 3"


def test_a_benchmark_pair_of_subset_and_whole_rows_names_all_classes_beside_the_subset():
    # kills: row_class_subsets dropping the "all classes" name of a pair's rows without a subset
    rows = [{"source": "a", "target": "b", "source_classes": [0, 1]}, {"source": "a", "target": "b"},
            {"source": "c", "target": "d"}]
    assert tables.row_class_subsets(rows) == "a → b: all classes / source classes 0, 1"


def test_a_tap_row_without_its_classifier_names_no_pick():
    # kills: picked_unit taking tap_unit alone ("or" for "and")
    assert tables.picked_unit({"tap_unit": "conv2"}) is None
    assert tables.picked_unit({"tap_unit": "conv2", "tap_classifier": "svm"}) == "conv2/svm"
    assert tables.picked_unit({"picked": "fc1", "tap_unit": "conv2", "tap_classifier": "svm"}) == "fc1"


def test_picked_units_are_counted_most_frequent_first():
    # kills: picked_lines counting units in first-seen order instead of most_common()
    rows = [{**ROW, "method": "flex", "seed": s, "picked": u} for s, u in enumerate(["fc1", "conv2", "conv2"])]
    assert tables.picked_lines(rows) == ["flex picked: conv2 ×2, fc1 ×1"]


def test_picked_units_of_several_runs_name_each_run_in_its_cell():
    # kills: _cell_name leaving out the run of a cell of a combined table
    rows = [{**ROW, "method": "flex", "run": r, "picked": "fc1"} for r in ("a", "b")]
    assert tables.picked_lines(rows, markdown=False) == ["flex (run a: s → t, k=1) picked: fc1 ×1",
                                                         "flex (run b: s → t, k=1) picked: fc1 ×1"]


# ---- partial DA and unlabelled rows ----------------------------------------------------------
def test_partial_da_line_conjugates_for_one_method_and_counts_classes_only_when_rows_agree():
    # kills: "predicts" for several methods / "predict" for one; class counts of the first row when rows differ
    one = [{**ROW, "method": "pada", "accuracy_all_source_classes": 0.25, "class_names": ["a", "b", "c"],
            "n_source_classes": 5}]
    (line,) = tables.partial_da_line(one)
    assert line.startswith("pada predicts with the source classifier among the target's 3 classes only")
    assert "predicts among all 5 source classes" in line and line.endswith("accuracy_all_source_classes): pada 25.0.")
    two = one + [{**one[0], "method": "dann", "class_names": ["a", "b"], "accuracy_all_source_classes": 0.5}]
    (line,) = tables.partial_da_line(two)
    assert line.startswith("pada, dann predict with the source classifier among the target's classes only")
    assert "among all source classes" in line and line.endswith("pada 25.0; dann 50.0.")


def test_settings_sort_by_their_number_not_as_text():
    # kills: setting_order sorting "k=10" before "k=2"
    assert sorted(["k=10", "k=2", "k=5"], key=tables.setting_order) == ["k=2", "k=5", "k=10"]


def test_unlabelled_line_leaves_out_source_only_and_conjugates_for_one_method():
    # kills: source_only named among the methods that read no label; "read"/"reads" swapped
    rows = [{**ROW, "method": "dann", "setting": "k=10", "n_labeled": 0},
            {**ROW, "method": "dann", "setting": "k=2", "n_labeled": 0},
            {**ROW, "method": "source_only", "n_labeled": 0}, {**ROW, "method": "ft", "n_labeled": 10}]
    assert tables.unlabelled_line(rows) == [
        "dann reads no target label (n_labeled 0): the setting of its rows (k=2, k=10) names the labelled "
        "target subset the other methods trained on."]


def test_a_boolean_n_labeled_is_not_a_count_of_labels():
    # kills: unlabelled_line counting n_labeled False as 0 labels
    rows = [{**ROW, "method": "x", "n_labeled": False}, {**ROW, "method": "ft", "n_labeled": 10}]
    assert tables.unlabelled_line(rows) == []


def test_standard_error_note_of_rows_that_read_no_label():
    # kills: "> 0" read as ">= 0" (no row reads a label, yet the note says label subsets)
    rows = [{**ROW, "method": "zs", "setting": "k=5", "n_labeled": 0}]
    assert tables.standard_error_note(rows) == (
        "Mean ± standard error over n seeds (no row reads a target label: a seed changes the initialisation and the "
        "training order, not a label subset; the setting k=5 names no labelled subset).")


def test_standard_error_note_leaves_out_the_drawn_k_images_of_a_configs_own_unlabelled_images():
    # kills: the k-images clause kept for rows that trained on a config's own unlabeled images
    base = {**ROW, "method": "dann", "setting": "k=5", "n_labeled": 0, "n_unlabeled": 100}
    own = tables.standard_error_note([{**base, "unlabeled": "folder:/u"}])
    assert "which k images" not in own and own.endswith("; the setting k=5 names no labelled subset).")
    split = tables.standard_error_note([base])
    assert split.endswith("; under k=5 also which k images per class are drawn as labels, which their unlabelled "
                          "images leave out).")


# ---- one class, never recognised, not scored -------------------------------------------------
def test_one_column_needs_two_true_classes():
    # kills: _one_column accepting a test split of one class (">= 1" for ">= 2")
    rows = [{**ROW, "confusion": [[3, 0], [0, 0]]}]
    assert tables.one_class_line(rows) == []


def test_one_class_line_of_one_seed_says_seed_not_seeds():
    # kills: "seeds" for one seed
    rows = [{**ROW, "confusion": [[0, 3], [0, 2]], "class_names": ["a", "b"]}]
    assert tables.one_class_line(rows) == [
        "Every test image predicted as one class: m (seed 0: class b); such an accuracy is that class's share of the "
        "test images."]


def test_first_named_names_five_and_counts_the_rest():
    # kills: NAMED 6; "and 0 more" at exactly NAMED items (">=" for ">")
    five, six = list("abcde"), list("abcdef")
    assert first_named(five, "classes") == "a, b, c, d, e"
    assert first_named(six, "classes") == "a, b, c, d, e and 1 more class"


def test_a_class_recognised_on_some_seed_is_not_never_recognised():
    # kills: never_recognised_line naming a class 0 on any seed instead of every seed
    rows = [{**ROW, "seed": 0, "per_class_accuracy": [0.5, 0.0], "class_names": ["a", "b"]},
            {**ROW, "seed": 1, "per_class_accuracy": [0.5, 0.2], "class_names": ["a", "b"]}]
    assert tables.never_recognised_line(rows) == []
    rows[1]["per_class_accuracy"] = [0.5, 0.0]
    assert tables.never_recognised_line(rows) == [
        "Never recognised (per-class accuracy 0 on every seed): b (m, k=1) (per_class_accuracy in results.json)."]


def test_not_scored_line_says_class_for_one_other_class():
    # kills: "classes" for one scored class
    rows = [{**ROW, "per_class_accuracy": [0.5, None], "class_names": ["a", "b"]}]
    assert tables.not_scored_line(rows) == ["Not scored (no test images): b; accuracy is over the other 1 class."]


# ---- small test splits, selection on labels, training fields ---------------------------------
def test_small_test_line_starts_below_a_thousand_and_uses_the_smallest_split():
    # kills: "<=" SMALL_TEST; max(ns) for min(ns); 2 for 1.96
    assert tables.small_test_line([{**ROW, "n_test": 1000}]) == []
    rows = [{**ROW, "n_test": 400}, {**ROW, "seed": 1, "n_test": 100}]
    (line,) = tables.small_test_line(rows)
    assert line.startswith("Small test split: t 100 / 400 images (± 9.8): one accuracy")  # 196 * sqrt(.25 / 100)


def test_selection_labels_line_needs_more_validation_labels_than_training_labels_and_counts_with_commas():
    # kills: ">=" for ">" between n_val_labeled and n_labeled; counts printed without thousands separators
    assert tables.selection_labels_line([{**ROW, "n_val_labeled": 10, "n_labeled": 10}]) == []
    (line,) = tables.selection_labels_line([{**ROW, "n_val_labeled": 1500, "n_labeled": 10}])
    assert line.startswith("Selected on target validation labels: m (k=1) chose their weights (early stopping, "
                           "select_on: target_val) on 1,500 labelled target validation images")


def test_training_line_names_a_method_once_over_its_seeds():
    # kills: training_line naming a method once per row
    rows = [{**ROW, "seed": s, "sampler": "balanced"} for s in range(3)]
    assert tables.training_line(rows) == [
        "Trained with sampler balanced (each class equally often in the labelled training batches): m."]


def test_grouped_k_line_of_one_target_is_singular():
    # kills: "targets" for one grouped target
    rows = [{**ROW, "target": "v", "group_accuracy": 0.5}]
    assert tables.grouped_k_line(rows) == [
        "On the grouped target v, k counts labelled groups (videos) per class, every image of a group labelled: "
        "n_labeled counts the images."]


def test_other_metrics_name_text_to_image_retrieval_too():
    # kills: other_metrics matching only "i2t" settings
    assert tables.other_metrics(["t2i (captions)"]) == ["retrieval rows (i2t, t2i): Recall@1"]


# ---- balanced accuracy and GZSL cells ----------------------------------------------------------
def test_test_imbalance_leaves_out_classes_without_test_images():
    # kills: an empty class counted as the smallest (a division by zero)
    assert tables.test_imbalance({"confusion": [[2, 0, 0], [0, 0, 0], [0, 1, 3]]}) == 2.0
    assert tables.test_imbalance({}) is None


def test_balanced_column_appears_at_exactly_the_imbalance_threshold():
    # kills: ">" for ">=" IMBALANCED
    summary = [entry(balanced_accuracy_mean=0.5, balanced_accuracy_se=None, test_imbalance=1.5)]
    assert tables.balanced_shown(summary)
    assert not tables.balanced_shown([entry(balanced_accuracy_mean=0.5, balanced_accuracy_se=None,
                                            test_imbalance=1.4)])


def test_balanced_note_names_the_largest_imbalance():
    # kills: min(ratios) for max(ratios)
    summary = [entry(test_imbalance=1.5), entry(test_imbalance=3.0), entry(test_imbalance=None)]
    assert "; shown because the test images per class differ by up to 3.0x, where" in tables.balanced_note(summary)
    assert "differ by up to 1.5x" in tables.balanced_note(summary[:1])  # one entry's ratio is named too
    assert tables.balanced_note(summary[2:]).endswith("balanced_accuracy_score; per_class_accuracy and confusion in "
                                                      "results.json.")


def test_gzsl_cell_names_seen_then_unseen_then_h():
    # kills: seen and unseen swapped
    s = entry(seen_accuracy_mean=0.8, unseen_accuracy_mean=0.2, h_accuracy_mean=0.32, h_accuracy_se=None)
    assert tables.gzsl_cell(s) == "80.0 / 20.0: 32.0"


# ---- environments ------------------------------------------------------------------------------
def test_environment_lines_name_three_jobs_and_elide_a_fourth():
    # kills: ", ..." after exactly three jobs (">=" for ">")
    rows = [{**ROW, "seed": s, "threads": 1} for s in range(3)] + [{**ROW, "seed": 9, "threads": 2}]
    assert tables.environment_lines(rows) == [
        "Rows made under 2 torch threads per process (1: m seed 0, m seed 1, m seed 2; 2: m seed 9): they may "
        "differ from one environment's rows (docs/scale.md)."]
    (line,) = tables.environment_lines(rows + [{**ROW, "seed": 3, "threads": 1}])
    assert "(1: m seed 0, m seed 1, m seed 2, ...; 2: m seed 9)" in line


# ---- the table: markdown, LaTeX, CSV -----------------------------------------------------------
def test_wall_seconds_are_shown_to_one_decimal():
    # kills: wall s formatted to two decimals
    parts = tables.table_parts([entry(wall_s=1.234)])
    assert parts["cells"] == [["m", "s", "t", "k=1", "50.0", "1", "1.2"]]


def test_a_table_of_validation_and_test_rows_says_each_row_names_its_split():
    # kills: "validation" header when some (not all) rows are validation rows
    rows = [ROW, {**ROW, "split": "val"}]
    assert tables.table_parts([entry()], rows)["header"][4] == (
        "target accuracy, validation or test: see each row's split (%)")
    assert tables.table_parts([entry()], [{**ROW, "split": "val"}])["header"][4] == "target validation accuracy (%)"


def test_the_interval_note_appears_where_any_row_has_an_interval():
    # kills: the 95 % note only when every row has one
    summary = [entry(accuracy_ci95=0.021), entry(method="other")]
    notes = tables.table_parts(summary)["notes"]
    assert "95 %: ± x: a row over episodes (n = 1): the 95 % interval of its mean over the episodes." in notes
    assert tables.table_parts(summary)["cells"][0][4] == "50.0 (95 %: ± 2.1)"


def test_latex_table_right_aligns_number_columns_writes_dashes_and_the_classes_comment():
    # kills: every column "l"; "–" written as "-"; the Classes line left out of the comments
    text = tables.latex_table([entry(wall_s=None)], [ROW], {"source_classes": [0, 1]})
    lines = text.splitlines()
    assert lines[0] == r"\begin{tabular}{llllrrr}"
    assert lines[4] == r"m & s & t & k=1 & 50.0 & 1 & -- \\"
    assert lines[-1] == "% Classes: source classes 0, 1."


def test_csv_table_has_the_fields_some_entry_has_and_space_separated_seeds():
    # kills: seeds joined by ","; fields every entry has (not some); a missing standard error written other than empty
    two = summarize([ROW, {**ROW, "seed": 3, "accuracy": 0.7}])[0]
    one = entry(method="x", accuracy_ci95=0.1)
    assert tables.csv_table([two, one]).splitlines() == [
        "method,source,target,setting,accuracy_mean,accuracy_se,accuracy_ci95,n,seeds,wall_s",
        f"m,s,t,k=1,0.6,{two['accuracy_se']!r},,2,0 3,1.0",
        "x,s,t,k=1,0.5,,0.1,1,0,1.0"]
    assert math.isclose(two["accuracy_se"], 0.1)


# ---- plots: paths and the best candidate -------------------------------------------------------
def test_a_png_path_is_accepted_whatever_the_case_of_its_suffix_but_not_a_directory(tmp_path):
    # kills: check_png comparing the suffix case-sensitively; a directory named *.png accepted
    plots.check_png(tmp_path / "A.PNG", "figure")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(TransferkitError, match="is a directory"):
        plots.check_png(tmp_path / "d.png", "figure")


def test_best_index_breaks_ties_by_the_lower_loss_then_the_first():
    # kills: the higher loss on ties; the last index on ties; NaN taken as the largest
    assert plots.best_index([0.5, 0.5], [0.3, 0.1]) == 1
    assert plots.best_index([0.5, 0.5, 0.2]) == 0
    assert plots.best_index([float("nan"), 0.2]) == 1


# ---- per-unit accuracy -------------------------------------------------------------------------
def flex_row(val: dict, test: dict | None = None, **fields) -> dict:
    return {**ROW, "method": "flex", "candidate_val_accuracy": val,
            **({"candidate_test_accuracy": test} if test is not None else {}), **fields}


def test_per_unit_plot_counts_only_the_flex_rows_and_orders_ratios_with_none_last():
    # kills: n counting other methods' rows; ratios sorted with None first; "best on val" labelled per ratio
    rows = [flex_row({"a": 0.1, "b": 0.2}, ratio=None), flex_row({"a": 0.3, "b": 0.4}, ratio=5),
            flex_row({"a": 0.5, "b": 0.6}, seed=1, ratio=5), {**ROW, "method": "ft"}]
    fig = plots.per_unit_accuracy_plot(rows, None)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["~5/class val (n=2)", "best on val", "val (n=1)", "_child3"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.4, 0.5])  # ratio 5 first, mean of its seeds
    assert ax.get_lines()[0].get_color() == "C0" and ax.get_lines()[2].get_color() == "C1"


def test_per_unit_plot_draws_a_test_curve_with_some_test_values_and_averages_only_rows_that_have_the_unit():
    # kills: the test curve dropped where one unit lacks a test value; a missing unit counted as 0
    rows = [flex_row({"a": 0.2, "b": 0.4}, {"a": 0.3}), flex_row({"a": 0.4}, {"a": 0.1}, seed=1)]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    val, test = ax.get_lines()[:2]
    assert list(val.get_ydata()) == pytest.approx([0.3, 0.4]) and test.get_label() == "test"
    assert test.get_ydata()[0] == pytest.approx(0.2) and math.isnan(test.get_ydata()[1])


def test_per_unit_plot_marks_the_tied_candidate_of_the_lower_validation_loss():
    # kills: the marker placed without the validation losses (first of the tied candidates)
    rows = [flex_row({"a": 0.5, "b": 0.5}, candidate_val_loss={"a": 0.9, "b": 0.2})]
    marker = plots.per_unit_accuracy_plot(rows, None).axes[0].get_lines()[1]
    assert list(marker.get_xdata()) == [1] and marker.get_marker() == "v"


def test_tap_plot_counts_the_rows_of_the_best_covered_unit_and_draws_error_bars_only_over_several():
    # kills: the legend's n of the least covered unit; error bars for one row per unit
    one = [{**ROW, "unit": u, "svm_accuracy": a} for u, a in (("c1", 0.4), ("c2", 0.6))]
    ax = plots.per_unit_accuracy_plot(one, None).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["svm (test, n=1)"] and not ax.containers
    rows = one + [{**ROW, "seed": 1, "unit": "c1", "svm_accuracy": 0.6}]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    assert ax.get_lines()[0].get_label() == "svm (test, n=2)" and len(ax.containers) == 1
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.5, 0.6])


# ---- units picked ------------------------------------------------------------------------------
def test_units_picked_ranks_the_best_test_unit_darkest_and_places_markers_by_method():
    # kills: ranks reversed; the marker offsets of the methods shifted; marker areas not scaled by the picks
    rows = [{**ROW, "method": "flex", "target": "t", "ratio": 1, "candidate_test_accuracy": {"a": 0.9, "b": 0.1},
             "picked": "a"},
            {**ROW, "method": "flex", "seed": 1, "target": "t", "ratio": 1,
             "candidate_test_accuracy": {"a": 0.8, "b": 0.2}, "picked": "a"},
            {**ROW, "method": "faster_flex", "target": "t", "picked": "b"}]
    ax = plots.units_picked_plot(rows, ["t", "u"], None).axes[0]
    assert ax.images[0].get_array().tolist() == [[0.0, -1.0]]  # minus the rank: a ranks 0, the darkest
    flex, _, fast, _, faster, _ = ax.collections
    assert flex.get_offsets().tolist() == [[-0.25, 0.0]] and list(flex.get_sizes()) == [72.0]  # 12 + 60 x 2/2
    assert len(fast.get_offsets()) == 0
    assert faster.get_offsets().tolist() == [[1.25, 0.0]] and list(faster.get_sizes()) == [72.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["t"]


# ---- t-SNE (the fake_tsne fixture of conftest.py) ---------------------------------------------


def test_tsne_lowers_the_perplexity_to_a_third_of_the_points_and_takes_four(fake_tsne):
    # kills: a perplexity of (n - 1) / 2; a panel of 4 points refused
    x = torch.arange(8.0).reshape(4, 2)
    fig = plots.tsne_embeddings({"p": x}, None, seed=3)
    assert fake_tsne == [{"n_components": 2, "perplexity": 1.0, "init": "pca", "random_state": 3}]
    assert fig.axes[0].collections[0].get_offsets().tolist() == x.tolist()
    with pytest.raises(TransferkitError, match="has 3 points; t-SNE needs at least 4"):
        plots.tsne_embeddings({"p": x[:3]}, None)


def test_tsne_names_a_panel_the_labels_leave_out(fake_tsne):
    # kills: the " (no labels)" title of a panel without labels
    x = torch.arange(16.0).reshape(8, 2)
    fig = plots.tsne_embeddings({"a": x, "b": x}, None, labels={"a": [0, 1] * 4})
    assert [ax.get_title() for ax in fig.axes] == ["a", "b (no labels)"]


def test_tsne_legend_takes_a_second_column_beyond_twelve_entries(fake_tsne):
    # kills: a second legend column (and a wider figure) at exactly twelve entries (ten classes, two markers)
    a, b = torch.arange(40.0).reshape(20, 2), torch.arange(40.0).reshape(20, 2) + 0.5
    ten = plots.tsne_embeddings({"p": (a, b)}, None, labels=list(range(10)) * 4)
    assert ten.get_figwidth() == pytest.approx(3.2 + 1.2)
    assert [t.get_text() for t in ten.axes[0].get_legend().get_texts()] == ["source", "target"] + [
        str(c) for c in range(10)]
    eleven = plots.tsne_embeddings({"p": (a, b)}, None, labels=list(range(11)) * 3 + [0] * 7)
    assert eleven.get_figwidth() == pytest.approx(3.2 + 2.4)
    # found by the pass (fixed): panels of one set each draw no domain markers, so 11 classes are 11 entries
    alone = plots.tsne_embeddings({"p": torch.cat([a, b])}, None, labels=list(range(11)) * 3 + [0] * 7)
    assert len(alone.axes[0].get_legend().get_texts()) == 11 and alone.get_figwidth() == pytest.approx(3.2 + 1.2)


def test_class_colours_are_tab10_up_to_ten_classes_then_tab20_dark_and_light():
    # kills: tab20 from ten classes on; tab20's colours taken in order instead of dark then light shades
    from matplotlib import colormaps
    tab20 = colormaps["tab20"].colors
    assert plots.class_colour(9, 10) == "C9"
    assert [plots.class_colour(c, 11) for c in (0, 1, 10, 20)] == [tab20[0], tab20[2], tab20[1], tab20[0]]


# ---- accuracy vs k -----------------------------------------------------------------------------
def test_k_axis_label_of_grouped_rows():
    # kills: "groups (videos)" when only some settings are k=; groups named for grouped rows without k=
    grouped = [{"group_accuracy": 0.5}]
    assert plots.k_axis_label(grouped, ["k=1", "k=2"]) == "labelled target groups (videos) per class"
    assert plots.k_axis_label(grouped, ["k=1", "ratio"]) == "labelled target groups (k) or images per class"
    assert plots.k_axis_label(grouped, ["ratio"]) == "labelled target images per class"
    assert plots.k_axis_label([{}], ["k=1"]) == "labelled target images per class"


def test_accuracy_vs_k_draws_means_and_errors_per_k_with_its_axis_labels():
    # kills: the y label; the title's newline without a title; one k not ticked alone
    rows = [{**ROW, "setting": "k=2", "seed": s, "accuracy": a} for s, a in enumerate([0.4, 0.6])]
    ax = plots.accuracy_vs_k_plot(rows, None).axes[0]
    assert ax.get_ylabel() == "target test accuracy" and ax.get_xlabel() == "labelled target images per class (k)"
    assert list(ax.get_xticks()) == [2] and ax.get_title() == ""
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.5])
    grouped = [{**r, "group_accuracy": 0.5} for r in rows]
    title = plots.accuracy_vs_k_plot(grouped, None).axes[0].get_title()
    assert title == "solid: per-image accuracy, dashed: per-group (video) accuracy"


def test_accuracy_vs_k_refuses_a_k_that_is_not_a_number():
    # kills: settings "k=<not a number>" accepted; found by the pass (fixed): "k=05" passed the check and failed
    # with "mean of no values", "k=²" with int()'s ValueError
    for setting in ("k=all", "k=05", "k=²", "k=-1"):
        with pytest.raises(TransferkitError, match=re.escape(f"setting 'k=K' (K a whole number, as a run writes "
                                                             f"it: no leading zero), got ['{setting}']")):
            plots.accuracy_vs_k_plot([{**ROW, "setting": setting}], None)
    assert plots.accuracy_vs_k_plot([{**ROW, "setting": "k=0"}, {**ROW, "setting": "k=10"}], None).axes


def test_accuracy_curves_give_each_method_a_marker_that_does_not_cycle_with_the_colours():
    # kills: one marker for the first ten methods (told apart by colour alone); 10 markers (a colour's
    # eleventh method would look as its first)
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {f"m{i}": [(1, 0.5, 0.0), (2, 0.6, 0.0)] for i in range(11)})
    markers = [c.lines[0].get_marker() for c in ax.containers]
    assert markers == list("osD^<>pPXh*") and len(set(markers)) == 11


# ---- sample grid -------------------------------------------------------------------------------
def test_sample_grid_titles_counts_draws_grey_on_a_fixed_scale_and_refuses_zero_per_class():
    # kills: the default title without the class count; grey images scaled to their own range; per_class 0
    d = toy_domain(n=12, classes=3)
    fig = plots.sample_grid(d, None, per_class=2)
    assert fig.get_suptitle() == "toy  (12 images, 3 classes)"
    assert [ax.get_ylabel() for ax in fig.axes] == ["0", "1", "2"]
    assert all(ax.images[0].get_clim() == (0, 1) for ax in fig.axes)
    with pytest.raises(TransferkitError, match="per_class must be >= 1, got 0"):
        plots.sample_grid(d, None, per_class=0)


def test_sample_grid_draws_per_class_images_side_by_side_with_a_gap():
    # kills: a row drawn with one image fewer than per_class (its last slot left blank)
    fig = plots.sample_grid(toy_domain(n=12, classes=3), None, per_class=2)
    for ax in fig.axes:
        row = ax.images[0].get_array()
        assert row.shape == (28, 2 * 28 + 2)  # two 28-pixel images and a gap of max(1, 28 // 14)
        assert (row[:, :28] < 1).any() and (row[:, 28:30] == 1).all() and (row[:, 30:] < 1).any()
