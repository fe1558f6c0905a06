"""Tests from a fourth mutation pass over transferkit/tables.py, after test_tables_plots_mutation.py,
test_tables_plots_second_mutation.py and test_tables_plots_third_mutation.py.

Each test kills mutants that the related tests (the three earlier passes, test_bench_tables_mutation.py and the
tests of test_report.py, test_evaluate.py, test_api_usability.py, test_cli_fourth_mutation.py, test_experiment*.py
and test_docs_examples.py that read the tables) let through: picked-unit names left unescaped;
partial_da_line's "0 classes" for rows without class counts; not_scored_line's
"accuracy is over the other classes" for a test set that does not count its classes; the order of the lines under
the table (training before selection, GZSL before balanced); source_selection_line naming a method once per seed;
grouped_k_line for a None group accuracy and its targets in sorted order; selection_labels_line's counts sorted and
its need of n_labeled; environment lines naming a run; the grouped cell's ± over the groups' n; the header order of
the balanced and grouped columns; LaTeX's right-aligned GZSL column, line breaks and the escape of \\; the CSV's
group_n and seen / unseen standard errors, and a 0.0 written as a number, not left empty.

Judged equivalent, so not tested: environment_lines reading ``kernels_before_resume`` for the kernels too (no row
records such a field: only threads are recorded before a resume).
Left surviving: none of the mutants tried. Mutants that the older tests already kill (md_cell's link-only bracket
escape, line breaks and ``|``; unlabelled_line where no method reads labels; the mixed ± note's drawn-k clause; a
class without test images taken as never recognised; the never-recognised cell's run; the GZSL note; markdown
cells unescaped; no newline after the notes; LaTeX's | and ± unescaped) are not listed.
"""

from test_tables_plots_mutation import entry
from test_tables_plots_second_mutation import ROW
from test_tables_plots_third_mutation import NAMES

from transferkit import tables


# ---- markdown cells --------------------------------------------------------------------------------
def test_markdown_table_escapes_its_cells_and_picked_names_and_ends_with_a_newline():
    # kills: picked_lines not escaping the method (unescaped cells, no final newline: also test_report.py)
    text = tables.markdown_table([entry(method="a|b")], [{**ROW, "method": "a*b", "picked": "fc1"}])
    assert r"| a\|b |" in text
    assert r"a\*b picked: fc1 ×1" in text.splitlines()
    assert text.endswith("×1\n")


# ---- lines under the table ---------------------------------------------------------------------------
def test_partial_da_line_of_rows_without_class_counts_names_no_count():
    # kills: partial_da_line writing "the target's 0 classes" for rows without class_names
    (line,) = tables.partial_da_line([{**ROW, tables.ALL_SOURCE: 0.3}])
    assert "the target's classes only" in line and "among all source classes" in line


def test_not_scored_line_of_a_test_set_without_a_class_count_says_what_the_accuracy_is_over():
    # kills: not_scored_line leaving out "accuracy is over the other ..." for a test set whose line counts no classes
    (line,) = tables.not_scored_line([{**ROW, **NAMES, "test": "folder:/t", "per_class_accuracy": [None, 1.0]}])
    assert line.endswith("accuracy is over the other 1 class.")


def test_row_notes_name_the_training_fields_before_the_selection_on_target_labels():
    # kills: row_notes putting selection_labels_line before training_line
    notes = tables.row_notes([{**ROW, "sampler": "balanced", "n_val_labeled": 100, "n_labeled": 10}])
    assert [n.split()[0] for n in notes] == ["Trained", "Selected"]


def test_source_selection_line_names_a_method_once_over_its_seeds():
    # kills: source_selection_line naming the method once per seed
    rows = [{**ROW, "seed": s, "select_on": "source_val"} for s in (0, 1)]
    (line,) = tables.source_selection_line(rows)
    assert "source_val): m; their" in line


def test_grouped_k_line_needs_a_group_accuracy_and_names_targets_sorted():
    # kills: grouped_k_line taking a None group_accuracy; the targets in set order (1 chance in 720 to be sorted)
    assert tables.grouped_k_line([{**ROW, "group_accuracy": None}]) == []
    rows = [{**ROW, "target": t, "group_accuracy": 0.5} for t in ("f", "b", "d", "a", "e", "c")]
    (line,) = tables.grouped_k_line(rows)
    assert line.startswith("On the grouped targets a, b, c, d, e, f, k counts")


def test_selection_labels_line_sorts_its_counts_and_needs_a_training_count():
    # kills: the validation counts in set order ({9, 2} iterates 9 first); a row without n_labeled taken as 0
    rows = [{**ROW, "n_val_labeled": v, "n_labeled": 1} for v in (9, 2)]
    (line,) = tables.selection_labels_line(rows)
    assert "on 2 / 9 labelled target validation images" in line
    assert tables.selection_labels_line([{**ROW, "n_val_labeled": 100}]) == []


def test_environment_lines_name_each_jobs_run():
    # kills: environment_lines naming a job without its run
    rows = [{**ROW, "run": "r1", "threads": 1}, {**ROW, "run": "r2", "threads": 2}]
    (line,) = tables.environment_lines(rows)
    assert "1: r1: m seed 0; 2: r2: m seed 0" in line


# ---- the table: columns, cells and notes ----------------------------------------------------------------
GZSL = {"seen_accuracy_mean": 0.6, "unseen_accuracy_mean": 0.4, "h_accuracy_mean": 0.48, "h_accuracy_se": None}


def test_a_gzsl_and_balanced_table_has_the_gzsl_note_before_the_balanced_note():
    # kills: the balanced note before the GZSL note (dropping the GZSL note: also test_experiment.py)
    s = entry(**GZSL, balanced_accuracy_mean=0.5, balanced_accuracy_se=None, test_imbalance=None)
    notes = tables.table_parts([s])["notes"]
    assert notes[0].startswith("Seen / unseen classes: accuracy averaged") and notes[1].startswith("Balanced accuracy")


def test_the_grouped_cell_has_a_plus_minus_over_its_groups_seeds_and_comes_after_the_balanced_column():
    # kills: the grouped cell formatted with the entry's n (no ±); the grouped column before the balanced one
    s = entry(group_accuracy_mean=0.6, group_accuracy_se=0.1, group_n=2, balanced_accuracy_mean=0.5,
              balanced_accuracy_se=None, test_imbalance=None)
    parts = tables.table_parts([s])
    assert parts["header"][5:7] == [tables.BALANCED_HEADER, "grouped accuracy (%)"]
    assert parts["cells"][0][6] == "60.0 ± 10.0"


def test_latex_right_aligns_the_gzsl_column():
    # kills: latex_table taking only "... accuracy (%)" headers as numbers (the GZSL column "... H (%)" left-aligned)
    text = tables.latex_table([entry(**GZSL)])
    assert text.splitlines()[0] == r"\begin{tabular}{llllrrrr}"


def test_latex_text_joins_lines_and_escapes_backslash_bar_and_plus_minus():
    # kills: latex_text keeping line breaks; \\ dropped from LATEX_ESCAPES (| and ±: also test_report.py)
    assert tables.latex_text("a\nb") == "a b"
    assert tables.latex_text("\\|±") == r"\textbackslash{}\textbar{}$\pm$"


def test_csv_table_has_group_n_and_the_seen_and_unseen_errors_and_writes_zero_as_a_number():
    # kills: CSV_FIELDS without group_n or the seen / unseen standard errors; a 0.0 accuracy written as empty
    s = entry(accuracy_mean=0.0, group_accuracy_mean=0.5, group_accuracy_se=None, group_n=1, seen_accuracy_mean=0.6,
              seen_accuracy_se=None, unseen_accuracy_mean=0.4, unseen_accuracy_se=None)
    header, line = tables.csv_table([s]).splitlines()
    fields = header.split(",")
    assert {"group_n", "seen_accuracy_se", "unseen_accuracy_se"} <= set(fields)
    assert line.split(",")[fields.index("accuracy_mean")] == "0.0"
