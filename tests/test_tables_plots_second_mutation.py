"""Tests from a second mutation pass over transferkit/tables.py (the lines under the results table, its
header, ± note and class-subset line, LaTeX) and transferkit/plots.py (paths and files, the sample grid,
the per-unit and units-picked figures, t-SNE, accuracy-vs-k), after test_tables_plots_mutation.py.

Each test kills mutants that the related tests (test_tables_plots_mutation.py, test_evaluate.py, the plot
tests of test_data.py; for the first tables.py mutants test_report.py and the table tests of
test_experiment*.py too) let through: a line under the table written for rows it should leave out
(source_only's n_labeled 0, a select_on other than source_val, a grouped row of no k= setting, an n_test of
0 or True), a clause dropped or joined wrongly (a test set's class count and its overlap with the source,
unlabelled images inside test and val, a resume under another thread count, CPU kernels), the ± note of a
grouped cell, the header of a table without rows, the class-subset line of a run's or a benchmark's config,
LaTeX's comments and escapes; in plots.py a path of the wrong type, the dpi and the atomic write of a PNG,
the sample grid's checks, title and row width, a NaN validation loss, a mix of sources, the tap axis,
units-picked's rank of a missing candidate and fast_flex's proxy marker, t-SNE's input checks, perplexity
cap, path check before it runs, legends and grey panels, and accuracy-vs-k's grouped rows, ticks, dashes
and colours. As in the first pass, figures are built with ``path=None`` and read through their axes, and
the t-SNE is a stand-in that records its arguments.

Judged equivalent, so not tested: _one_column's ``== 1`` as ``<= 1`` (two true classes with images put
images in some column, so no count of columns is 0); sample_grid without its early check_png (save_png
checks the same path before it writes; only the drawing's time is lost); _tap_plot's
``f"{kind}_accuracy" in r`` as ``r.get(...) is not None`` (only more lenient with a None value).
Left surviving: none of the mutants tried. Mutants that the older tests already kill are not listed.
"""

from pathlib import Path

import pytest
import torch
from helpers import toy_domain
from test_tables_plots_mutation import ROW, entry

from transferkit import plots, tables
from transferkit.domain import Domain
from transferkit.errors import TransferkitError


# ---- what ± means, one-class cells, classes never recognised -----------------------------------
def test_source_only_reading_no_label_leaves_the_note_on_label_subsets_alone():
    # kills: standard_error_note counting source_only's n_labeled 0 as a row that reads no label
    rows = [{**ROW, "method": "source_only", "n_labeled": 0}, {**ROW, "method": "ft", "n_labeled": 10}]
    assert tables.standard_error_note(rows) == "Mean ± standard error over n seeds (label subsets)."


def test_a_cell_predicting_one_class_on_some_seeds_only_still_gets_its_never_recognised_class():
    # kills: never_recognised_line skipping a cell where any (not every) seed predicted one class
    names = {"class_names": ["a", "b"]}
    rows = [{**ROW, **names, "seed": 0, "confusion": [[0, 3], [0, 2]], "per_class_accuracy": [0.0, 1.0]},
            {**ROW, **names, "seed": 1, "confusion": [[0, 3], [1, 1]], "per_class_accuracy": [0.0, 0.5]}]
    assert tables.never_recognised_line(rows) == [
        "Never recognised (per-class accuracy 0 on every seed): a (m, k=1) (per_class_accuracy in results.json)."]


# ---- lines on the test set and the unlabelled images ------------------------------------------
def test_not_scored_line_of_a_test_set_that_counts_its_classes_names_only_the_classes():
    # kills: the "accuracy is over the other n classes" clause kept where the test-images line counts them
    rows = [{**ROW, "per_class_accuracy": [0.5, None], "class_names": ["a", "b"], "test": "folder:/t",
             "n_test_classes": 1}]
    assert tables.not_scored_line(rows) == ["Not scored (no test images): b."]


def test_unlabelled_images_inside_test_and_val_are_joined_by_and_and_a_method_is_named_once():
    # kills: the test / val counts joined by a comma; a method named once per seed
    rows = [{**ROW, "seed": s, "unlabeled": "folder:/u", "n_unlabeled": 50, "unlabeled_in_test": 2,
             "unlabeled_in_val": 3} for s in range(2)]
    assert tables.unlabeled_images_line(rows) == [
        "Unlabelled target images of m: folder:/u, 50 images (instead of the target's train split); 2 of them are "
        "target test images and 3 of them are target val images (transductive)."]


def test_test_images_line_counts_classes_only_with_both_counts_and_names_source_overlap():
    # kills: " of 3 of the None target classes" without n_target_classes; the source-overlap clause dropped
    rows = [{**ROW, "test": "folder:/t", "n_test": 20, "n_test_classes": 3, "test_in_source": 4}]
    assert tables.test_images_line(rows) == [
        "Test images: folder:/t, 20 images (a test set of its own, not a split of the target); 4 of them are also "
        "source train or val images."]


def test_small_test_line_ignores_empty_and_boolean_counts_and_names_the_target_split_fix_for_a_mix():
    # kills: n_test 0 counted (a division by zero); n_test True counted as 1 image; "a larger test set" when only
    # some small splits are a config's own test set
    assert tables.small_test_line([{**ROW, "n_test": 0}]) == []
    assert tables.small_test_line([{**ROW, "n_test": True}]) == []
    rows = [{**ROW, "n_test": 100}, {**ROW, "test": "folder:/t", "n_test": 100}]
    (line,) = tables.small_test_line(rows)
    assert line.endswith("(a larger test_fraction, or a test set of its own, test:, scores more images).")


def test_source_selection_line_names_only_source_val_rows_and_is_under_the_table():
    # kills: source_selection_line naming rows of any select_on; the line left out of row_notes
    assert tables.source_selection_line([{**ROW, "select_on": "target_val"}]) == []
    line = ("Selected on the source's validation split (select_on: source_val): m; their val_accuracy (and a flex "
            "candidate's) is the source's.")
    assert tables.table_parts([entry()], [{**ROW, "select_on": "source_val"}])["notes"] == [line]


def test_grouped_k_line_needs_a_k_setting():
    # kills: grouped_k_line naming grouped rows of any setting
    assert tables.grouped_k_line([{**ROW, "setting": "ratio=1", "group_accuracy": 0.5}]) == []


# ---- metrics, balanced accuracy, environments --------------------------------------------------
def test_other_metrics_name_gzsl_with_a_prior_too():
    # kills: other_metrics matching "gzsl" but not "gzsl_prior"
    assert tables.other_metrics(["gzsl_prior"]) == ["GZSL rows: the harmonic mean H of seen and unseen accuracy"]


def test_balanced_column_shows_for_rows_without_a_confusion_matrix_and_dashes_an_entry_without_it():
    # kills: balanced_shown needing a test_imbalance; the dash of an entry without balanced accuracy as "-"
    summary = [entry(balanced_accuracy_mean=0.4, balanced_accuracy_se=None, test_imbalance=None),
               entry(method="x")]
    parts = tables.table_parts(summary)
    assert parts["header"][5] == "balanced accuracy (%)"
    assert [c[5] for c in parts["cells"]] == ["40.0", "–"]


def test_environment_lines_name_a_resume_under_another_thread_count_and_several_kernels():
    # kills: a resume under another thread count not named (one value seen); its count as 1 for "changing";
    # the kernels key misspelt
    rows = [{**ROW, "threads": 2, "threads_before_resume": [1]}]
    assert tables.environment_lines(rows) == [
        "Rows made under changing torch threads per process (1 then 2: m seed 0): they may differ from one "
        "environment's rows (docs/scale.md)."]
    rows = [{**ROW, "kernels": "avx2"}, {**ROW, "seed": 1, "kernels": "avx512"}]
    assert tables.environment_lines(rows) == [
        "Rows made under 2 CPU kernels (avx2: m seed 0; avx512: m seed 1): they may differ from one environment's "
        "rows (docs/scale.md)."]


# ---- the table: header, notes, class subsets, LaTeX, CSV -------------------------------------------
def test_a_grouped_standard_error_gets_the_plus_minus_note_and_a_table_without_rows_names_test_accuracy():
    # kills: the ± note only for n > 1 (a grouped cell of one seed over several groups has a ±); the header of a
    # table without rows naming a mix of splits
    parts = tables.table_parts([entry(group_accuracy_mean=0.5, group_accuracy_se=0.1, group_n=3)])
    assert parts["notes"] == ["Mean ± standard error over n seeds (label subsets)."]
    assert parts["header"][4] == "target accuracy (%)"


def test_a_runs_own_config_names_no_class_subsets_of_its_rows_but_a_benchmark_of_a_combined_table_does():
    # kills: table_parts reading rows' class subsets under a run's config (it has "source"); _run_subsets ignoring
    # a benchmark run's rows
    rows = [{**ROW, "source_classes": [0, 1]}]
    assert tables.table_parts([entry()], rows, {"source": "s", "target": "t"})["classes"] == ""
    assert tables.table_parts([entry()], rows, {"plan": "x"})["classes"] == "source classes 0, 1"
    runs = [{**rows[0], "run": "a"}]
    assert tables.table_parts([entry(run="a")], runs, [("a", {"plan": "x"})])["classes"] == (
        "run a: source classes 0, 1")


def test_latex_escapes_angle_brackets_and_keeps_each_note_on_one_comment_line():
    # kills: "<" left unescaped; a note with a line break written as two lines, the second outside the comment
    assert tables.latex_text("a<b>c") == r"a\textless{}b\textgreater{}c"
    text = tables.latex_table([entry()], notes=["one\ntwo"])
    assert text.splitlines()[-1] == "% one two"


def test_accuracy_text_shows_an_interval_of_zero():
    # kills: an interval of 0.0 dropped as if none were given
    assert tables.accuracy_text(entry(accuracy_ci95=0.0)) == "50.0 (95 %: ± 0.0)"


def test_a_picked_value_that_is_not_a_name_names_no_unit():
    # kills: picked_unit taking any non-None picked value
    assert tables.picked_unit({"picked": 3}) is None


# ---- plots: paths and files --------------------------------------------------------------------
def test_a_path_of_another_type_is_named_and_a_str_path_comes_back_as_a_path(tmp_path):
    # kills: check_png without its type check (a TypeError from Path); save_png returning the str it was given
    with pytest.raises(TransferkitError, match="got int"):
        plots.check_png(5, "figure")
    out = plots.sample_grid(toy_domain(n=4, classes=2), str(tmp_path / "g.png"), per_class=1)
    assert isinstance(out, Path) and out.is_file()


def test_a_figure_is_written_at_its_dpi_and_atomically(tmp_path):
    # kills: save_png ignoring dpi (the figure's 100); a figure written in place (a failed write leaves half a file)
    import matplotlib.image
    path = plots.per_unit_accuracy_plot([{**ROW, "candidate_val_accuracy": {"a": 0.5}}], tmp_path / "u.png")
    assert matplotlib.image.imread(path).shape[0] == round(3.2 * 110)

    class Broken:
        def savefig(self, p, **kw):
            Path(p).write_bytes(b"half")
            raise OSError("disk full")
    target = tmp_path / "old.png"
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        plots.save_png(Broken(), target, 100, "figure")
    assert target.read_bytes() == b"old"


# ---- sample grid -------------------------------------------------------------------------------
def test_sample_grid_refuses_empty_domains_and_two_channels_and_takes_a_title():
    # kills: the empty-domain and channel checks dropped; title ignored
    with pytest.raises(TransferkitError, match="is empty"):
        plots.sample_grid(Domain("e", torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), ["a"]), None)
    two = Domain("two", torch.zeros(4, 2, 28, 28), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(TransferkitError, match="1- or 3-channel images, got 2 channels"):
        plots.sample_grid(two, None)
    assert plots.sample_grid(toy_domain(n=4, classes=2), None, title="T").get_suptitle() == "T"


def test_sample_grid_rows_are_as_wide_as_the_largest_class_not_per_class():
    # kills: the row width from per_class when every class has fewer images
    fig = plots.sample_grid(toy_domain(n=6, classes=3), None, per_class=8)
    assert all(ax.images[0].get_array().shape == (28, 2 * 28 + 2) for ax in fig.axes)


# ---- per-unit, units picked ---------------------------------------------------------------------
def test_best_index_takes_a_nan_loss_as_the_highest():
    # kills: a NaN validation loss left as NaN (the tie then goes to the first, NaN-loss candidate)
    assert plots.best_index([0.5, 0.5], [float("nan"), 0.3]) == 1


def test_per_unit_plot_refuses_rows_of_several_sources_and_names_the_tapped_unit_axis():
    # kills: _check_one_curve_set not checking sources; the tap plot's x label as flex's "tuned unit"
    rows = [{**ROW, "candidate_val_accuracy": {"a": 0.5}},
            {**ROW, "source": "s2", "candidate_val_accuracy": {"a": 0.6}}]
    with pytest.raises(TransferkitError, match="mix sources s, s2"):
        plots.per_unit_accuracy_plot(rows, None)
    ax = plots.per_unit_accuracy_plot([{**ROW, "unit": "c1", "svm_accuracy": 0.5}], None).axes[0]
    assert ax.get_xlabel() == "tapped unit"


def test_units_picked_ranks_a_candidate_missing_from_a_ratio_last_and_marks_fast_flex_proxy_units():
    # kills: a missing candidate's mean taken as 0 (ties an accuracy of 0); fast_flex's marker read from "picked"
    rows = [{**ROW, "method": "flex", "ratio": 1, "candidate_test_accuracy": {"b": 0.5, "a": 0.2}},
            {**ROW, "method": "flex", "ratio": 2, "candidate_test_accuracy": {"a": 0.0}},
            {**ROW, "method": "fast_flex", "proxy_unit": "b", "picked": "a"}]
    ax = plots.units_picked_plot(rows, ["t"], None).axes[0]
    # ratio 1: b ranks 0, a 1; ratio 2: a ranks 0, b (missing) 1; the mean over the two ratios: 0.5 each
    assert ax.images[0].get_array().tolist() == [[-0.5, -0.5]]
    assert ax.collections[2].get_offsets().tolist() == [[0.0, 0.0]]  # fast_flex's marker on b, unshifted


# ---- t-SNE (the fake_tsne fixture of conftest.py) ---------------------------------------------


def test_tsne_refuses_an_empty_set_features_of_two_sizes_and_nan_features(fake_tsne):
    # kills: _panel_sets taking an empty set or a pair of two sizes D; the finite-features check dropped
    x = torch.arange(16.0).reshape(8, 2)
    with pytest.raises(TransferkitError, match="needs N x D source and target features"):
        plots.tsne_embeddings({"p": (x, torch.zeros(0, 2))}, None)
    with pytest.raises(TransferkitError, match="of one size D, got shapes"):
        plots.tsne_embeddings({"p": (x, torch.zeros(4, 3))}, None)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(TransferkitError, match="NaN or infinite"):
        plots.tsne_embeddings({"p": bad}, None)


def test_tsne_perplexity_is_at_most_thirty_and_a_bad_path_is_refused_before_the_tsne_runs(fake_tsne):
    # kills: the perplexity not capped at 30; check_png left to the write, after every t-SNE has run
    plots.tsne_embeddings({"p": torch.arange(200.0).reshape(100, 2)}, None)
    assert fake_tsne[0]["perplexity"] == 30.0
    with pytest.raises(TransferkitError, match="name it"):
        plots.tsne_embeddings({"p": torch.arange(200.0).reshape(100, 2)}, "t.jpg")
    assert len(fake_tsne) == 1


def test_tsne_legend_names_the_domains_in_order_with_their_given_names(fake_tsne):
    # kills: the domain names swapped; the labelled legend naming "source", "target" whatever domain_names says;
    # a legend drawn for one unlabelled set (nothing to name)
    a, b = torch.arange(16.0).reshape(8, 2), torch.arange(16.0).reshape(8, 2) + 0.5
    plain = plots.tsne_embeddings({"p": (a, b)}, None, domain_names=("mnist", "usps"))
    assert [t.get_text() for t in plain.axes[0].get_legend().get_texts()] == ["mnist", "usps"]
    labelled = plots.tsne_embeddings({"p": (a, b)}, None, domain_names=("mnist", "usps"), labels=[0, 1] * 8)
    assert [t.get_text() for t in labelled.axes[0].get_legend().get_texts()] == ["mnist", "usps", "0", "1"]
    assert plots.tsne_embeddings({"p": a}, None).axes[0].get_legend() is None


def test_tsne_draws_an_unlabelled_panels_target_points_larger_and_names_many_classes_in_the_title(fake_tsne):
    # kills: the grey panel's target points drawn as its source points; the class count dropped from a given title
    a, b = torch.arange(16.0).reshape(8, 2), torch.arange(16.0).reshape(8, 2) + 0.5
    fig = plots.tsne_embeddings({"a": (a, b), "b": (a, b)}, None, labels={"a": [0, 1] * 8})
    assert [list(c.get_sizes()) for c in fig.axes[1].collections] == [[3.0], [6.0]]
    x = torch.arange(42.0).reshape(21, 2)
    fig = plots.tsne_embeddings({"p": x}, None, title="T", labels=list(range(21)))
    assert fig.get_suptitle() == "T\n21 classes: colours repeat every 20 (not named)"


def test_tsne_labels_must_be_one_per_point_and_of_one_kind_over_every_panel(fake_tsne):
    # kills: labels of another length accepted; the panels' labels concatenated as text ("1" and 1 one class)
    x = torch.arange(16.0).reshape(8, 2)
    with pytest.raises(TransferkitError, match="give one label per point"):
        plots.tsne_embeddings({"p": x}, None, labels=[0] * 7)
    with pytest.raises(TransferkitError, match="mixed kinds"):
        plots.tsne_embeddings({"a": x, "b": x}, None, labels={"a": [1] * 8, "b": ["1"] * 8})


# ---- accuracy vs k -----------------------------------------------------------------------------
def test_rows_counting_test_groups_are_grouped_and_a_missing_group_accuracy_draws_no_dashed_curve():
    # kills: grouped_rows ignoring n_test_groups; accuracy_vs_k averaging None group accuracies
    assert plots.k_axis_label([{"n_test_groups": 3}], ["k=1"]) == "labelled target groups (videos) per class"
    rows = [{**ROW, "n_test_groups": 3, "group_accuracy": None}]
    ax = plots.accuracy_vs_k_plot(rows, None).axes[0]
    assert ax.get_xlabel() == "labelled target groups (videos) per class (k)" and len(ax.containers) == 1


def test_accuracy_curves_of_fractional_x_keep_the_default_ticks_and_group_curves_are_dashed():
    # kills: whole-number ticks forced on fractional x; the per-group curve drawn solid
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {"m": [(0.5, 0.5, 0.0), (1.5, 0.6, 0.0)]}, {"m": [(0.5, 0.4, 0.0)]})
    assert type(ax.xaxis.get_major_locator()).__name__ == "AutoLocator"  # not MaxNLocator(integer=True)
    assert ax.containers[1].lines[0].get_linestyle() == "--"
    with pytest.raises(TransferkitError, match="no rows"):
        plots.accuracy_vs_k_plot([], None)


def test_accuracy_curves_cycle_ten_colours():
    # kills: colours "C10" and on for an eleventh method (matplotlib's cycle, not the method's marker cycle)
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {f"m{i}": [(1, 0.5, 0.0)] for i in range(11)})
    assert ax.containers[10].lines[0].get_color() == "C0"
