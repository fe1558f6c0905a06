"""Tests from a fifth mutation pass over transferkit/tables.py, after test_tables_plots_mutation.py,
test_tables_plots_second_mutation.py, test_tables_plots_third_mutation.py and test_tables_fourth_mutation.py.

Each test kills mutants that the related tests (the four earlier passes, test_bench_tables_mutation.py and the
table tests of test_report.py, test_report_third_mutation.py, test_report_fourth_mutation.py and
test_api_usability.py) let through: a method that reads target labels in some rows named as one that reads none;
the ± note's drawn-k clause for rows that read a label or under a setting that is not k=, and a boolean n_labeled
taken as a count; partial_da_line taking a null all-source-class accuracy; not_scored_line leaving out what the
accuracy is over where no test set of its own counts the classes; a confusion row that is not a list crashing
_one_column and test_imbalance; a resume's several thread counts cut to the first, and an empty list of them
taken as a resume; selection_labels_line comparing a count written as text; a run column, a GZSL column or a
grouped column only where every entry has one; a wall time of 0.0 s dashed; the CSV without h_accuracy_se; LaTeX's
run column right-aligned. One test pins a bug fixed after this pass: runs named by numbers crashed markdown_table.

Judged equivalent, so not tested: table_parts's ``s.get("group_n", 0) > 1`` as ``> 2`` (summarize counts a
group accuracy only on rows it counts, so ``group_n <= n``, and ``n > 1`` already calls for the ± note).
Left surviving: none of the mutants tried. Mutants that the older tests already kill (md_cell's ``<`` and link
escapes, picked units sorted by name, the lines' runs, the ± note for ungrouped seeds, the never-recognised
cell's run) are not listed.
"""

from test_tables_plots_mutation import entry
from test_tables_plots_second_mutation import ROW
from test_tables_plots_third_mutation import NAMES

from transferkit import tables
from transferkit.results import summarize


# ---- lines under the table ---------------------------------------------------------------------------
def test_unlabelled_line_leaves_out_a_method_that_reads_labels_in_some_rows():
    # kills: unlabelled_line naming a method with any n_labeled 0 row (``False in seen``) instead of only such rows
    rows = [{**ROW, "method": "a", "n_labeled": 0}, {**ROW, "method": "a", "setting": "k=5", "n_labeled": 5},
            {**ROW, "method": "b", "n_labeled": 5}]
    assert tables.unlabelled_line(rows) == []


def test_standard_error_note_names_drawn_k_images_only_for_rows_that_read_no_label():
    # kills: standard_error_note's drawn-k clause taking rows of n_labeled 1 (``<= 1`` for ``== 0``)
    rows = [{**ROW, "method": "a", "setting": "k=1", "n_labeled": 1, "n_unlabeled": 50},
            {**ROW, "method": "b", "setting": "uda", "n_labeled": 0, "n_unlabeled": 50}]
    note = tables.standard_error_note(rows)
    assert "initialisation and the training order" in note and "k images per class" not in note


def test_standard_error_note_does_not_take_a_boolean_n_labeled_as_a_count():
    # kills: standard_error_note without its bool check (n_labeled False read as 0: "no row reads a target label")
    note = tables.standard_error_note([{**ROW, "n_labeled": False}])
    assert note == "Mean ± standard error over n seeds (label subsets)."


def test_standard_error_note_names_drawn_k_images_only_under_k_settings():
    # kills: standard_error_note's k_settings without its "k=" filter (a "uda" setting named as drawing k images)
    note = tables.standard_error_note([{**ROW, "setting": "uda", "n_labeled": 0, "n_unlabeled": 50}])
    assert "no row reads a target label" in note and "uda" not in note and "k images" not in note


def test_partial_da_line_skips_a_null_all_source_class_accuracy():
    # kills: partial_da_line taking any row with the field (a null in results.json) as a partial-DA row
    assert tables.partial_da_line([{**ROW, tables.ALL_SOURCE: None}]) == []


def test_not_scored_line_says_what_the_accuracy_is_over_for_rows_without_a_test_set_of_their_own():
    # kills: not_scored_line taking a class count without a test set (whose line would count them) as counted
    (line,) = tables.not_scored_line([{**ROW, **NAMES, "n_test_classes": 1, "per_class_accuracy": [None, 1.0]}])
    assert line.endswith("accuracy is over the other 1 class.")


def test_one_column_is_false_for_a_confusion_matrix_with_a_row_that_is_not_a_list():
    # kills: _one_column without its check that every row of the matrix is a list (a TypeError instead)
    assert tables._one_column({"confusion": [[3, 0], 4]}) is False


def test_environment_lines_name_every_thread_count_before_a_resume():
    # kills: environment_lines naming only the first of several thread counts before a resume
    (line,) = tables.environment_lines([{**ROW, "threads": 4, "threads_before_resume": [1, 2]}])
    assert "1/2 then 4: m seed 0" in line


def test_selection_labels_line_needs_whole_counts():
    # kills: selection_labels_line without its int checks (a count written as text compared with a number)
    assert tables.selection_labels_line([{**ROW, "n_val_labeled": "100", "n_labeled": 10}]) == []


def test_environment_lines_take_an_empty_list_of_thread_counts_before_a_resume_as_no_resume():
    # kills: environment_lines taking an empty threads_before_resume as a resume ("changing")
    assert tables.environment_lines([{**ROW, "threads": 4, "threads_before_resume": []}]) == []


def test_test_imbalance_skips_a_confusion_row_that_is_not_a_list():
    # kills: test_imbalance without its check that a row of the matrix is a list (a TypeError instead)
    assert tables.test_imbalance({"confusion": [[2, 2], 7, [1, 1]]}) == 2.0


# ---- the table -----------------------------------------------------------------------------------------
def test_a_table_where_some_entries_name_a_run_gets_a_run_column():
    # kills: table_parts giving the run column only where every entry names a run
    parts = tables.table_parts([entry(run="r1"), entry(method="b")])
    assert parts["header"][0] == "run"
    assert [c[:2] for c in parts["cells"]] == [["r1", "m"], ["", "b"]]


def test_a_wall_time_of_zero_seconds_is_shown_not_dashed():
    # kills: table_parts dashing a wall_s of 0.0 (``not s["wall_s"]`` for ``is None``)
    assert tables.table_parts([entry(wall_s=0.0)])["cells"][0][-1] == "0.0"


def test_csv_table_has_the_standard_error_of_h():
    # kills: CSV_FIELDS without h_accuracy_se
    s = entry(seen_accuracy_mean=0.6, seen_accuracy_se=0.1, unseen_accuracy_mean=0.4, unseen_accuracy_se=0.1,
              h_accuracy_mean=0.48, h_accuracy_se=0.02, n=2)
    header, line = tables.csv_table([s]).splitlines()
    fields = header.split(",")
    assert line.split(",")[fields.index("h_accuracy_se")] == "0.02"


def test_a_table_with_one_gzsl_and_one_grouped_entry_gets_both_columns_dashed_elsewhere():
    # kills: table_parts adding the GZSL or the grouped column only where every entry has it
    gzsl = entry(seen_accuracy_mean=0.6, unseen_accuracy_mean=0.4, h_accuracy_mean=0.48, h_accuracy_se=None)
    grouped = entry(method="g", group_accuracy_mean=0.7, group_accuracy_se=None, group_n=1)
    parts = tables.table_parts([gzsl, grouped])
    assert parts["header"][5:7] == ["grouped accuracy (%)", tables.GZSL_HEADER]
    assert parts["cells"][0][5:7] == ["–", "60.0 / 40.0: 48.0"] and parts["cells"][1][5:7] == ["70.0", "–"]


def test_latex_left_aligns_the_run_column():
    # kills: latex_table right-aligning the run column as a number
    assert tables.latex_table([entry(run="r1")]).splitlines()[0] == r"\begin{tabular}{lllllrrr}"


def test_a_table_of_runs_named_by_numbers_renders_its_lines():
    # a bug this pass found, now fixed: _cell_name and environment_lines joined a run to text with +, so a run
    # named by a number (rows made by hand) raised TypeError in markdown_table
    rows = [{**ROW, "method": "flex", "run": r, "picked": "fc1", "threads": r} for r in (1, 2)]
    text = tables.markdown_table(summarize(rows), rows)
    assert "flex (run 1: s → t, k=1) picked: fc1 ×1" in text
    assert "2 torch threads per process (1: 1: flex seed 0; 2: 2: flex seed 0)" in text
