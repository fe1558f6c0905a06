"""Tests from a third mutation pass over transferkit/tables.py and transferkit/plots.py, after
test_tables_plots_mutation.py and test_tables_plots_second_mutation.py.

Each test kills mutants that the related tests (the two earlier passes; for the tables.py mutants also the table
tests of test_report.py, test_report_third_mutation.py and test_bench_tables_mutation.py) let through: a pair's
class subsets named in set order; one_class_line's predicted classes in set order and "id j" as a bare number;
booleans taken as per-class accuracies; never_recognised_line's empty setting, seeds of different class counts,
more than five groups of classes; the unlabelled-images line's missing count and run; the test-images line's run
and target overlap; selection_labels_line's empty setting; partial_da_line's first seed instead of the mean;
test_imbalance of one class; the other-metrics note's header name; the order of the given notes; the markdown rule
row one column short; a combined table's class subsets per run; LaTeX's escapes (~ ^ # $ { } x & %) and plain-text
notes; the CSV's run, balanced and all-source-class fields. In plots.py: the per-unit and tap plots' tick names,
title and input checks; units-picked's target names; t-SNE's list pairs, 1-D, identical, too few and empty-dict
inputs, the grey panel's title and the width without a legend; accuracy curves drawn in x order.

Judged equivalent, so not tested: accuracy_vs_k_plot's ks in order of appearance instead of sorted
(draw_accuracy_curves sorts the points); _point_labels reading a tensor without .detach().cpu() (the same
for CPU tensors without grad). Left surviving: training_line taking any truthy non-string value (rows record
the fields only as strings); row_class_subsets's unsorted mutant is killed unless the string hash order happens
to be sorted (about 1 time in 24). Not tried for lack of time: the rest of plots.py's mutants (one-k ticks,
the k= regex, the y label, the grouped title, tab20 colours, legend markers, sample-grid margins and labels).
"""

import pytest
import torch
from test_tables_plots_mutation import entry
from test_tables_plots_second_mutation import ROW

from transferkit import plots, tables
from transferkit.errors import TransferkitError

NAMES = {"class_names": ["a", "b"]}


# ---- class subsets and units picked ------------------------------------------------------------
def test_a_pairs_several_class_subsets_are_named_in_sorted_order():
    # kills: row_class_subsets naming a pair's subsets in set order, not sorted (killed unless the hash order
    # happens to be sorted: 1 chance in 24)
    rows = [{**ROW, "target_classes": [c]} for c in (3, 1, 2)] + [ROW, {**ROW, "target": "u", "target_classes": [1]}]
    assert tables.row_class_subsets(rows) == (
        "s → t: all classes / target classes 1 / target classes 2 / target classes 3; s → u: target classes 1")


# ---- one class, never recognised, class ids -------------------------------------------------------
def test_one_class_line_names_the_predicted_classes_in_order_by_their_ids():
    # kills: one_class_line naming the classes in set order (8 before 1); _class_name's "id j" as a bare "j"
    def all_as(j):  # nine classes, true classes 0 and 2 with images, every image predicted as class j
        return [[3 if (i in (0, 2) and c == j) else 0 for c in range(9)] for i in range(9)]
    rows = [{**ROW, "seed": 0, "confusion": all_as(1)}, {**ROW, "seed": 1, "confusion": all_as(8)}]
    assert tables.one_class_line(rows) == [
        "Every test image predicted as one class: m (seeds 0, 1: class id 1, id 8); such an accuracy is that "
        "class's share of the test images."]


def test_per_class_values_must_be_numbers_not_booleans():
    # kills: _per_class taking True / False as accuracies (False == 0: a class "never recognised")
    assert tables.never_recognised_line([{**ROW, **NAMES, "per_class_accuracy": [False, True]}]) == []


def test_never_recognised_cells_name_no_empty_setting():
    # kills: the short cell name of a row without a setting ending in ", "
    rows = [{**NAMES, "method": "m", "source": "s", "target": "t", "seed": 0, "per_class_accuracy": [0.0, 1.0]}]
    assert tables.never_recognised_line(rows) == [
        "Never recognised (per-class accuracy 0 on every seed): a (m) (per_class_accuracy in results.json)."]


def test_never_recognised_skips_a_cell_whose_seeds_score_different_class_counts():
    # kills: never_recognised_line comparing per-class lists of different lengths (classes of different seeds)
    rows = [{**ROW, **NAMES, "per_class_accuracy": [0.0, 1.0]},
            {**ROW, "seed": 1, "class_names": ["a", "b", "c"], "per_class_accuracy": [0.0, 1.0, 0.5]}]
    assert tables.never_recognised_line(rows) == []


def test_never_recognised_counts_groups_of_classes_beyond_five():
    # kills: every group of classes named, however many
    ks = {"k=1": [0, 1, 1, 0, 0, 1], "k=2": [1, 0, 1, 0, 1, 0], "k=3": [1, 1, 0, 1, 0, 0]}  # classes a..f
    rows = [{**ROW, "setting": k, "class_names": list("abcdef"), "per_class_accuracy": [float(v) for v in vs]}
            for k, vs in ks.items()]
    assert tables.never_recognised_line(rows) == [
        "Never recognised (per-class accuracy 0 on every seed): a (m, k=1), d (m, k=1; m, k=2), e (m, k=1; m, k=3), "
        "b (m, k=2), f (m, k=2; m, k=3) and 1 more group of classes (per_class_accuracy in results.json)."]


# ---- lines on classes without test images, unlabelled images, test sets, small splits -------------
def test_unlabelled_images_line_names_its_run_and_no_count_it_was_not_given():
    # kills: ", None images" for a row without n_unlabeled; the run left out
    assert tables.unlabeled_images_line([{**ROW, "unlabeled": "folder:/u"}]) == [
        "Unlabelled target images of m: folder:/u (instead of the target's train split)."]
    assert tables.unlabeled_images_line([{**ROW, "run": "r1", "unlabeled": "folder:/u", "n_unlabeled": 5}]) == [
        "Unlabelled target images of m (run r1): folder:/u, 5 images (instead of the target's train split)."]


def test_test_images_line_names_its_run_and_its_overlap_with_the_target():
    # kills: the run left out; the "also target train or val images" clause dropped
    rows = [{**ROW, "run": "r1", "test": "folder:/t", "test_in_target": 2}]
    assert tables.test_images_line(rows) == [
        "Test images (run r1): folder:/t (a test set of its own, not a split of the target); 2 of them are also "
        "target train or val images."]


def test_selection_labels_line_of_a_row_without_a_setting_names_the_method_alone():
    # kills: "m ()" for a row without a setting
    (line,) = tables.selection_labels_line([{"method": "m", "seed": 0, "n_val_labeled": 100, "n_labeled": 10}])
    assert line.startswith("Selected on target validation labels: m chose their weights")


def test_partial_da_accuracy_is_the_mean_over_seeds():
    # kills: partial_da_line showing the first seed's accuracy over every source class
    rows = [{**ROW, "seed": s, tables.ALL_SOURCE: a} for s, a in ((0, 0.2), (1, 0.4))]
    (line,) = tables.partial_da_line(rows)
    assert line.endswith("accuracy_all_source_classes): m 30.0.")


def test_a_test_set_of_one_class_is_balanced_not_unknown():
    # kills: test_imbalance None for a confusion matrix with one class of test images (as if none were given)
    assert tables.test_imbalance({"confusion": [[5, 0], [0, 0]]}) == 1.0


# ---- the table: notes, markdown, LaTeX, CSV ------------------------------------------------------
def test_the_other_metrics_note_names_the_accuracy_column_as_the_header_does():
    # kills: the other-metrics note naming "target accuracy" under a validation table
    parts = tables.table_parts([entry(setting="gzsl")], [{**ROW, "setting": "gzsl", "split": "val"}])
    assert parts["notes"] == ["The target validation accuracy column holds other metrics on some rows: GZSL rows: "
                              "the harmonic mean H of seen and unseen accuracy."]


def test_given_notes_come_after_the_environment_lines():
    # kills: table_parts putting the caller's notes (a combined table's differ lines) before the environment lines
    rows = [{**ROW, "kernels": "avx2"}, {**ROW, "seed": 1, "kernels": "avx512"}]
    notes = tables.table_parts([entry()], rows, notes=["N."])["notes"]
    assert notes[-1] == "N." and notes[0].startswith("Rows made under 2 CPU kernels")


def test_markdown_table_rules_every_column_and_leaves_a_blank_line_after_the_classes():
    # kills: the |---| rule one column short (the blank line after the classes: test_report.py)
    text = tables.markdown_table([entry()], config={"source_classes": [0, 1]})
    lines = text.splitlines()
    assert lines[:3] == ["Classes: source classes 0, 1.", "", "| method | source | target | setting | "
                         "target accuracy (%) | n | wall s |"]
    assert lines[3] == "|---|---|---|---|---|---|---|"


def test_a_combined_tables_class_subsets_read_each_runs_own_rows():
    # kills: _run_subsets reading every run's rows (run b, of every class, then named as a mix)
    rows = [{**ROW, "run": "a", "source_classes": [0, 1]}, {**ROW, "run": "b"}]
    config = [("a", {"plan": "x"}), ("b", {"plan": "x"})]
    assert tables.table_parts([entry(run="a"), entry(run="b")], rows, config)["classes"] == "run a: source classes 0, 1"


def test_latex_text_escapes_every_special_character():
    # kills: any of ~ ^ # $ { } × & % dropped from LATEX_ESCAPES (a LaTeX error or a wrong glyph)
    assert tables.latex_text("~^#$_{}×&%") == (
        r"\textasciitilde{}\textasciicircum{}\#\$\_\{\}$\times$\&\%")


def test_latex_notes_are_plain_text_not_markdown():
    # kills: latex_table asking table_parts for markdown notes (names with a backslash before * in the comments)
    text = tables.latex_table([entry()], [{**ROW, "picked": "a*b"}])
    assert "% m picked: a*b ×1" in text.splitlines()


def test_csv_table_has_run_balanced_and_all_source_class_fields():
    # kills: CSV_FIELDS without run, the balanced accuracy or the accuracy over every source class
    s = entry(run="a", balanced_accuracy_mean=0.4, balanced_accuracy_se=None, accuracy_all_source_classes_mean=0.3,
              accuracy_all_source_classes_se=None)
    header = tables.csv_table([s]).splitlines()[0].split(",")
    assert header[0] == "run"
    assert {"balanced_accuracy_mean", "balanced_accuracy_se", "accuracy_all_source_classes_mean",
            "accuracy_all_source_classes_se"} <= set(header)


# ---- plots: per-unit accuracy ------------------------------------------------------------------
def test_per_unit_plot_names_its_candidates_and_title_and_refuses_rows_without_candidates():
    # kills: the x ticks without the candidates' names; the title dropped; the no-candidates check dropped
    ax = plots.per_unit_accuracy_plot([{**ROW, "candidate_val_accuracy": {"fc1": 0.5, "all": 0.6}}], None,
                                      title="T").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "all"] and ax.get_title() == "T"
    with pytest.raises(TransferkitError, match="candidate_val_accuracy"):
        plots.per_unit_accuracy_plot([ROW], None)


def test_tap_plot_names_its_units_and_refuses_rows_without_a_classifier_accuracy():
    # kills: the tap x ticks without the units' names; the <classifier>_accuracy check dropped
    ax = plots.per_unit_accuracy_plot([{"unit": "c1", "svm_accuracy": 0.5}, {"unit": "c2", "svm_accuracy": 0.6}],
                                      None).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c1", "c2"]
    with pytest.raises(TransferkitError, match="svm_accuracy"):
        plots.per_unit_accuracy_plot([{"unit": "c1"}], None)


def test_units_picked_names_its_targets_on_the_y_axis():
    # kills: the y ticks without the targets' names
    rows = [{**ROW, "method": "flex", "ratio": 1, "candidate_test_accuracy": {"a": 0.5}, "picked": "a"}]
    ax = plots.units_picked_plot(rows, ["t"], None).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["t"]


# ---- plots: t-SNE --------------------------------------------------------------------------------
def test_tsne_takes_a_list_pair_and_refuses_one_dimensional_identical_and_too_few_points(fake_tsne):
    # kills: a [source, target] list not taken as a pair; 1-D features let through; the identical-features check
    # dropped; three points let through
    a = torch.arange(16.0).reshape(8, 2)
    fig = plots.tsne_embeddings({"p": [a, a + 0.5]}, None)
    assert len(fig.axes[0].collections) == 2
    with pytest.raises(TransferkitError, match="needs N x D"):
        plots.tsne_embeddings({"p": torch.arange(8.0)}, None)
    with pytest.raises(TransferkitError, match="identical features"):
        plots.tsne_embeddings({"p": torch.ones(8, 2)}, None)
    with pytest.raises(TransferkitError, match="at least 4"):
        plots.tsne_embeddings({"p": a[:3]}, None)
    with pytest.raises(TransferkitError, match="empty dict"):
        plots.tsne_embeddings({}, None)


def test_tsne_titles_a_panel_left_out_of_the_labels_and_leaves_no_legend_room_without_labels(fake_tsne):
    # kills: " (no labels)" dropped from the grey panel's title; an unlabelled figure widened for a legend
    a = torch.arange(16.0).reshape(8, 2)
    fig = plots.tsne_embeddings({"a": a, "b": a}, None, labels={"a": [0, 1] * 4})
    assert fig.axes[1].get_title() == "b (no labels)"
    assert plots.tsne_embeddings({"p": a}, None).get_figwidth() == pytest.approx(3.2)


# ---- plots: accuracy curves ----------------------------------------------------------------------
def test_accuracy_curves_draw_points_in_order_of_x():
    # kills: draw_accuracy_curves drawing the points in the caller's order (a zigzag line)
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {"m": [(5, 0.6, 0.0), (1, 0.5, 0.0)]})
    assert list(ax.containers[0].lines[0].get_xdata()) == [1, 5]
