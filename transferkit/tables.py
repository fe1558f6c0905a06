"""The results table and the lines under it: one summary entry per row of the table
(:func:`~transferkit.results.summarize`), rendered as markdown, LaTeX or CSV, with notes
that say what a reader needs to read the numbers (the units flex picked, what ± means,
small test splits, selection on target labels, mixed environments)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from numbers import Real

from .errors import TransferkitError, first_named
from .evaluate import format_mean_se


def accuracy_text(s: dict) -> str:
    """A summary entry's accuracy in percent: mean ± standard error over seeds, and for one
    row over episodes (``accuracy_ci95``) its 95 % interval, ``"76.7 (95 %: ± 2.1)"``."""
    text = format_mean_se(s["accuracy_mean"], s["accuracy_se"], s["n"])
    ci = s.get("accuracy_ci95")
    return text if ci is None else f"{text} (95 %: ± {100 * ci:.1f})"


#: what :func:`accuracy_text`'s interval is (a line under a table that has one)
INTERVAL_NOTE = "95 %: ± x: a row over episodes (n = 1): the 95 % interval of its mean over the episodes"


def md_cell(value) -> str:
    """``value`` as the text of one markdown table cell: line breaks as spaces, and ``|`` and
    the characters that would start markup (``\\ * ` < >``: emphasis, code, HTML; ``[ ]``
    only where they would make a link, ``](``; ``&`` only where it starts an entity, ``&lt;``)
    backslash-escaped. The table is printed as text too (``transferkit summary``), so
    ``mnist[0-6]``, ``a & b`` and ``ft_unit`` stay as they are."""
    text = " ".join(str(value).splitlines())
    return re.sub(r"([\\|*`<>]" + (r"|[\[\]]" if "](" in text else "") + r"|&(?=#?\w+;))", r"\\\1", text)


def class_subsets(config: dict | None) -> str:
    """``"source classes 0-4; target classes 5-9"``: the class subsets a run's config chose
    (as written there), ``""`` when it uses every class of both domains."""
    parts = []
    for side in ("source", "target"):
        value = (config or {}).get(f"{side}_classes")
        if value is not None:
            shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            parts.append(f"{side} classes {shown}")
    return "; ".join(parts)


def picked_unit(row: dict) -> str | None:
    """The unit a row's method picked on validation: ``picked`` (flex, fast_flex, faster_flex;
    tap's ``"unit/classifier"``), else, in a tap row written before tap recorded ``picked``,
    ``tap_unit/tap_classifier``; None when the row names none."""
    if isinstance(row.get("picked"), str):
        return row["picked"]
    if isinstance(row.get("tap_unit"), str) and isinstance(row.get("tap_classifier"), str):
        return f"{row['tap_unit']}/{row['tap_classifier']}"
    return None


def row_class_subsets(rows: list[dict]) -> str:
    """The class subsets the rows record (``source_classes`` / ``target_classes``), as
    :func:`class_subsets` names a config's; several: one per source -> target pair."""
    pairs: dict[tuple, set] = {}
    for r in rows:
        pairs.setdefault((r.get("source", ""), r.get("target", "")), set()).add(class_subsets(r))
    every = {n for ns in pairs.values() for n in ns}
    if every == {""}:
        return ""
    if len(every) == 1:  # every row of the table: one line for all
        return next(iter(every))
    return "; ".join(f"{s} → {t}: {' / '.join(n or 'all classes' for n in sorted(ns))}"
                     for (s, t), ns in pairs.items() if ns != {""})


def picked_lines(rows: list[dict], markdown: bool = True) -> list[str]:
    """One line per method whose rows name the unit they picked (:func:`picked_unit`: flex,
    fast_flex, faster_flex, tap), counted over seeds, most frequent first: ``"flex picked: fc1 ×3,
    conv2 ×2"``, ``"tap picked: conv2/softmax ×2"``; a method with several (source, target,
    setting) cells gets a line per cell, naming it. ``markdown``: names escaped as in a table
    cell (:func:`md_cell`)."""
    cell = md_cell if markdown else str
    lines = []
    for method, by_cell in _cells(rows, lambda r: picked_unit(r) is not None).items():
        for key, rs in by_cell.items():
            counts = ", ".join(f"{cell(unit)} ×{n}" for unit, n in Counter(map(picked_unit, rs)).most_common())
            lines.append(f"{cell(_cell_name(method, key, len(by_cell)))} picked: {counts}")
    return lines


#: a row field of partial domain adaptation: the accuracy of the argmax over every source class
ALL_SOURCE = "accuracy_all_source_classes"


def _cells(rows: list[dict], keep) -> dict[str, dict[tuple, list[dict]]]:
    """``{method: {(source, target, setting, run): rows}}`` of the rows ``keep(row)`` accepts."""
    cells: dict[str, dict[tuple, list[dict]]] = {}
    for r in rows:
        if keep(r):
            key = (r.get("source", ""), r.get("target", ""), r.get("setting", ""), r.get("run"))
            cells.setdefault(r["method"], {}).setdefault(key, []).append(r)
    return cells


def _cell_name(method: str, key: tuple, cells: int) -> str:
    """``method``, with its cell's run, source, target and setting when it has ``cells`` > 1 of them."""
    source, target, setting, run = key
    return method + (f" ({f'run {run}: ' if run else ''}{source} → {target}, {setting})" if cells > 1 else "")


def partial_da_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the methods whose rows predict with the source classifier among the target's
    classes only, where those are a strict subset of the source's (partial domain adaptation; the
    rows record ``accuracy_all_source_classes``), with that accuracy: the argmax over every source
    class, as the partial-DA protocol scores them."""
    cell = md_cell if markdown else str
    cells = _cells(rows, lambda r: isinstance(r.get(ALL_SOURCE), Real))
    if not cells:
        return []
    sizes = {(len(r.get("class_names") or []), r.get("n_source_classes")) for by in cells.values()
             for rs in by.values() for r in rs}
    n_t, n_s = next(iter(sizes)) if len(sizes) == 1 else (None, None)
    parts = [f"{cell(_cell_name(m, key, len(by)))} {100 * sum(r[ALL_SOURCE] for r in rs) / len(rs):.1f}"
             for m, by in cells.items() for key, rs in by.items()]
    return [f"{cell(', '.join(cells))} predict{'s' if len(cells) == 1 else ''} with the source classifier among "
            f"the target's {f'{n_t} ' if n_t else ''}classes only (closed to them); the partial-DA protocol "
            f"predicts among all {f'{n_s} ' if n_s else ''}source classes, which gives accuracy (%, mean over "
            f"seeds, {ALL_SOURCE}): {'; '.join(parts)}."]


def labels_used(rows: list[dict]) -> dict:
    """Of the rows of one summary entry of setting ``all``, which does not say its labels: ``labels_per_class``,
    ``[fewest, most]`` over the rows that read target labels (None where none did or a row records none), and
    ``labels_in_all``, the ``n_labeled`` of those rows where they agree (None where they differ or none read
    labels). Its own key: a ``summarize`` of ``extra_keys=("n_labeled",)`` writes the mean under ``n_labeled``."""
    mine = [r for r in rows if r.get("n_labeled")]
    spans = [r.get("labels_per_class") for r in mine]
    counts = {r["n_labeled"] for r in mine}
    return {"labels_per_class": [min(v[0] for v in spans), max(v[1] for v in spans)]
            if mine and all(isinstance(v, list) and len(v) == 2 for v in spans) else None,
            "labels_in_all": counts.pop() if len(counts) == 1 else None}


def setting_text(s: dict, rows: list[dict] | None = None) -> str:
    """A summary entry's setting for the table: ``all`` with the labels per class its rows trained on,
    which it does not say (``all (4 per class)``, ``all (3-5 per class)``), as :func:`~transferkit.results.summarize`
    records them (:func:`labels_used`); rows that record none, their total count (``all (12 labels in all)``).
    Other settings, and rows that read no target label, as they are. An entry of an older ``results.json``,
    which records no ``labels_in_all``: from ``rows`` where they are given (its rows among them)."""
    setting = str(s["setting"])
    if setting != "all":
        return setting
    used = s if "labels_in_all" in s or not rows else labels_used(
        [r for r in rows if str(r.get("setting", "")) == setting and (r.get("method"), r.get("source", ""),
         r.get("target", ""), r.get("run")) == (s["method"], s["source"], s["target"], s.get("run"))])
    if used.get("labels_per_class"):
        lo, hi = used["labels_per_class"]
        return f"all ({lo if lo == hi else f'{lo}-{hi}'} per class)"
    return f"all ({used['labels_in_all']} labels in all)" if used.get("labels_in_all") else setting


def setting_order(setting: str) -> tuple:
    """A sort key that puts ``k=2`` before ``k=10`` (settings of one kind by their number)."""
    return len(setting), setting


def unlabelled_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the methods whose rows read no target label (``n_labeled`` 0: domain
    adaptation, zero-shot) where the table mixes them with rows that do: their setting (``k=5``)
    names the others' label subsets. source_only, the un-adapted network, is left out."""
    cell = md_cell if markdown else str
    counts: dict[str, set] = {}
    for r in rows:
        if isinstance(r.get("n_labeled"), Real) and not isinstance(r["n_labeled"], bool):
            counts.setdefault(r["method"], set()).add(r["n_labeled"] > 0)
    none = [m for m, seen in counts.items() if seen == {False} and str(m).split("/")[0] != "source_only"]
    if not none or not any(True in seen for seen in counts.values()):
        return []
    settings = sorted({str(r.get("setting", "")) for r in rows if r["method"] in none}, key=setting_order)
    one = len(none) == 1
    return [f"{cell(', '.join(none))} read{'s' if one else ''} no target label (n_labeled 0): the setting of "
            f"{'its' if one else 'their'} rows ({cell(', '.join(settings))}) names the labelled target subset the "
            f"other methods trained on."]


def standard_error_note(rows: list[dict]) -> str:
    """What ± means under a table: the standard error over seeds, which draw label subsets; rows
    that read no target label (``n_labeled`` 0: zero-shot, domain adaptation) train on none, a
    seed changes their initialisation and training order, and under a ``k=`` setting the k
    images per class it draws, which their unlabelled images leave out (not so with a config's
    own ``unlabeled`` images)."""
    unread = [r for r in rows if isinstance(r.get("n_labeled"), Real) and not isinstance(r["n_labeled"], bool)
              and str(r.get("method")).split("/")[0] != "source_only"]  # one row, no ± (episodes: source_only/head)
    reads = {r["n_labeled"] > 0 for r in unread}

    def k_settings(rs) -> list[str]:
        return sorted({str(r["setting"]) for r in rs if str(r.get("setting", "")).startswith("k=")}, key=setting_order)
    settings = k_settings(r for r in unread if r["n_labeled"] == 0 and not r.get("unlabeled")
                          and r.get("n_unlabeled"))  # rows that trained on the target's train split less k labels
    left_out = (f"; under {', '.join(settings)} also which k images per class are drawn as labels, which their "
                f"unlabelled images leave out" if settings else "")
    if reads == {False}:
        named = k_settings(rows)
        return ("Mean ± standard error over n seeds (no row reads a target label: a seed changes the initialisation "
                "and the training order, not a label subset" + (left_out or (
                    f"; the setting {', '.join(named)} names no labelled subset" if named else "")) + ").")
    if reads == {True, False}:
        return ("Mean ± standard error over n seeds (label subsets; for rows that read no target label, n_labeled 0, "
                f"a seed changes the initialisation and the training order{left_out}).")
    return "Mean ± standard error over n seeds (label subsets)."


def _one_column(row: dict) -> bool:
    """Whether ``row``'s test images, of two classes or more, were all predicted as one class (its
    ``confusion``, true class x predicted class, has one non-empty column)."""
    conf = row.get("confusion")
    if not isinstance(conf, list) or not all(isinstance(c, list) for c in conf):
        return False
    return (sum(1 for r in conf if sum(r) > 0) >= 2
            and sum(1 for column in zip(*conf) if sum(column) > 0) == 1)


def _cell_seeds(cell, method: str, key, n_cells: int, rs: list[dict]) -> str:
    """``NAME (seed(s) S, ...`` of a table cell's rows ``rs``, for a line under the tables (the caller
    closes the parenthesis, after what it adds)."""
    return (f"{cell(_cell_name(method, key, n_cells))} (seed{'s' if len(rs) > 1 else ''} "
            f"{', '.join(str(r['seed']) for r in rs)}")


def one_class_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the rows whose test images, of two classes or more, were all predicted as
    one class (their ``confusion``, true class x predicted class, has one non-empty column):
    their accuracy is that class's share of the images, not what a classifier learned."""
    cell = md_cell if markdown else str
    cells = _cells(rows, _one_column)
    parts = []
    for method, by_cell in cells.items():
        for key, rs in by_cell.items():
            predicted = {next(j for j, v in enumerate(zip(*r["confusion"])) if sum(v) > 0) for r in rs}
            names = rs[0].get("class_names") or []
            shown = ", ".join(_class_name(names, j) for j in sorted(predicted))
            parts.append(f"{_cell_seeds(cell, method, key, len(by_cell), rs)}: class {cell(shown)})")
    if not parts:
        return []
    return [f"Every test image predicted as one class: {'; '.join(parts)}; such an accuracy is that class's share "
            f"of the test images."]


def diverged_mark(diverged) -> dict:
    """A row's ``diverged: true`` field where ``diverged`` (its training, or the pre-training it started
    from, diverged), else no field: a row of a normal training has none."""
    return {"diverged": True} if diverged else {}


def diverged_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the rows whose training diverged (``diverged: true``, the run's warning): their
    accuracy is not worth reading."""
    cell = md_cell if markdown else str
    cells = _cells(rows, lambda r: r.get("diverged") is True)
    parts = [f"{_cell_seeds(cell, method, key, len(by_cell), rs)})"
             for method, by_cell in cells.items() for key, rs in by_cell.items()]
    if not parts:
        return []
    return [f"Diverged (the training loss, or the pre-training's it started from, grew a thousandfold; diverged in "
            f"results.json): {'; '.join(parts)}; such an accuracy is not worth reading (lower the learning rate)."]


def _class_name(names, j: int) -> str:
    """Class ``j``'s name in a row's ``class_names``, ``"id j"`` where it has none."""
    return str(names[j]) if j < len(names) else f"id {j}"


def _per_class(row: dict) -> list | None:
    """A row's ``per_class_accuracy`` (a number per target class, None for a class without test
    images), None where it has no such list."""
    values = row.get("per_class_accuracy")
    if isinstance(values, list) and all(v is None or (isinstance(v, Real) and not isinstance(v, bool))
                                        for v in values):
        return values
    return None


def _short_cell_namer(rows: list[dict]):
    """A function naming a table cell (method, source, target, setting, run) briefly for the lines
    under the table: ``"dann, k=5"``, with its run and its source → target where the rows hold
    several runs or pairs."""
    pairs = {(r.get("source", ""), r.get("target", "")) for r in rows}

    def name(method: str, key: tuple) -> str:
        source, target, setting, run = key
        parts = ([method] + ([f"run {run}"] if run else []) + ([f"{source} → {target}"] if len(pairs) > 1 else [])
                 + ([str(setting)] if setting else []))
        return ", ".join(parts)
    return name


def never_recognised_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming, per table cell, the target classes with test images whose per-class accuracy
    (recall) is 0 on every seed: a method that never recognises a class can still score a high
    accuracy where that class has few test images. Cells whose every row predicted one class are
    left out (:func:`one_class_line` names them), and a long list names a few and counts the rest."""
    cell = md_cell if markdown else str
    short = _short_cell_namer(rows)
    never: dict[str, list[str]] = {}  # a class -> the cells that never recognised it
    for method, by_cell in _cells(rows, lambda r: _per_class(r) is not None).items():
        for key, rs in by_cell.items():
            values = [_per_class(r) for r in rs]
            if all(_one_column(r) for r in rs) or len({len(v) for v in values}) != 1:
                continue
            names = rs[0].get("class_names") or []
            for j in range(len(values[0])):
                if all(v[j] is not None and v[j] == 0 for v in values):
                    never.setdefault(_class_name(names, j), []).append(cell(short(method, key)))
    by_cells: dict[tuple[str, ...], list[str]] = {}  # classes that the same cells never recognised, named once
    for name, where in never.items():
        by_cells.setdefault(tuple(where), []).append(cell(name))
    if not by_cells:
        return []
    parts = [f"{first_named(classes, 'classes')} ({first_named(list(where), 'cells', '; ')})"
             for where, classes in by_cells.items()]
    return [f"Never recognised (per-class accuracy 0 on every seed): {first_named(parts, 'groups of classes')} "
            f"(per_class_accuracy in results.json)."]


def not_scored_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line per target (and run) naming the classes the methods trained on that have no test
    images (``per_class_accuracy`` null): the accuracy is over the other classes only. Where the
    rows were scored on a test set of their own whose line (:func:`test_images_line`) already counts
    the classes it holds, only the classes are named."""
    cell = md_cell if markdown else str
    given: dict[tuple, None] = {}
    for r in rows:
        values = _per_class(r)
        if values is None or None not in values:
            continue
        names = r.get("class_names") or []
        missing = tuple(_class_name(names, j) for j, v in enumerate(values) if v is None)
        counted = isinstance(r.get("test"), str) and r.get("n_test_classes") is not None
        given.setdefault((r.get("run"), r.get("target", ""), missing, len(values) - len(missing), counted))
    targets = {target for _, target, *_ in given}
    lines = []
    for run, target, missing, scored, counted in given:
        where = ", ".join(([f"target {cell(target)}"] if len(targets) > 1 else []) + ([f"run {cell(run)}"] if run
                                                                                       else []))
        over = "" if counted else f"; accuracy is over the other {scored} class{'es' if scored > 1 else ''}"
        lines.append(f"Not scored (no test images{f'; {where}' if where else ''}): "
                     f"{first_named([cell(m) for m in missing], 'classes')}{over}.")
    return lines


def unlabeled_images_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the unlabelled images (a config's ``unlabeled``) the rows' methods trained
    on instead of the target's train split, with those methods."""
    cell = md_cell if markdown else str
    given: dict[tuple, list[str]] = {}
    for r in rows:
        if isinstance(r.get("unlabeled"), str):
            key = (r.get("run"), r["unlabeled"], r.get("n_unlabeled"), r.get("unlabeled_in_test") or 0,
                   r.get("unlabeled_in_val") or 0)
            if r["method"] not in given.setdefault(key, []):
                given[key].append(r["method"])
    def inside(test: int, val: int) -> str:
        parts = [f"{k} of them are target {part} images" for part, k in (("test", test), ("val", val)) if k]
        return f"; {' and '.join(parts)} (transductive)" if parts else ""
    return [f"Unlabelled target images of {cell(', '.join(methods))}{f' (run {cell(run)})' if run else ''}: "
            f"{cell(spec)}{f', {n} images' if n is not None else ''} (instead of the target's train split)"
            f"{inside(test, val)}." for (run, spec, n, test, val), methods in given.items()]


def test_images_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the test set of its own (a config's ``test``) the rows were scored on."""
    cell = md_cell if markdown else str
    given = dict.fromkeys((r.get("run"), r["test"], r.get("n_test"), r.get("n_test_classes"), r.get("n_target_classes"),
                           r.get("test_in_target") or 0, r.get("test_in_source") or 0)
                          for r in rows if isinstance(r.get("test"), str))
    return [f"Test images{f' (run {cell(run)})' if run else ''}: {cell(spec)}"
            f"{f', {n} images' if n is not None else ''}"
            f"{f' of {held} of the {of} target classes' if held is not None and of is not None else ''}"
            f" (a test set of its own, not a split of the target)"
            f"{f'; {inside} of them are also target train or val images' if inside else ''}"
            f"{f'; {in_source} of them are also source train or val images' if in_source else ''}."
            for run, spec, n, held, of, inside, in_source in given]


#: a test split of fewer images than this gets a line under the table on how well one accuracy is known
SMALL_TEST = 1000


def small_test_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the targets whose test split holds fewer than :data:`SMALL_TEST` images
    (rows' ``n_test``), with the 95 % binomial half-width of one accuracy measured on it at 50 %
    (its widest): the ± over seeds counts the label subsets, not the test images' own chance."""
    cell = md_cell if markdown else str
    sizes: dict[tuple, set] = {}
    for r in rows:
        for key, what in (("n_test", "images"), ("n_test_groups", "groups (grouped accuracy)")):
            n = r.get(key)
            if isinstance(n, int) and not isinstance(n, bool) and 0 < n < SMALL_TEST:
                test = f"test {r['test']}" if isinstance(r.get("test"), str) else r.get("target", "")
                sizes.setdefault((r.get("run"), test, what), set()).add(n)
    if not sizes:
        return []
    parts = [f"{cell(test)}{f' (run {cell(run)})' if run else ''} {' / '.join(map(str, sorted(ns)))} {what} "
             f"(± {100 * 1.96 * math.sqrt(0.25 / min(ns)):.1f})" for (run, test, what), ns in sizes.items()]
    own = all(t.startswith("test ") for _, t, _ in sizes)  # every small one a config's own test set
    larger = "a larger test set" if own else "a larger test_fraction, or a test set of its own, test:,"
    return [f"Small test split: {'; '.join(parts)}: one accuracy measured on it is known to within that many "
            f"points (95 %, binomial, at 50 % accuracy; less near 0 or 100 %), which the ± over seeds does not "
            f"include ({larger} scores more images)."]


def row_notes(rows: list[dict], markdown: bool = True) -> list[str]:
    """The lines under a table that its rows call for: units picked, partial domain adaptation,
    rows that read no target label, the unlabelled images and test set given, target classes without
    test images, rows whose training diverged, rows that predicted one class, classes a method never
    recognised, a small test split, training with a sampler or class weights off their defaults, selection on
    more target labels than trained on, k counting groups on a grouped target, and selection on the source's
    validation split."""
    return (picked_lines(rows, markdown) + partial_da_line(rows, markdown) + unlabelled_line(rows, markdown)
            + unlabeled_images_line(rows, markdown) + test_images_line(rows, markdown) + not_scored_line(rows, markdown)
            + diverged_line(rows, markdown) + one_class_line(rows, markdown) + never_recognised_line(rows, markdown)
            + small_test_line(rows, markdown)
            + training_line(rows, markdown) + selection_labels_line(rows, markdown) + grouped_k_line(rows, markdown)
            + source_selection_line(rows, markdown))


def source_selection_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the methods whose rows chose their weights (and flex its unit) on the source's
    validation split (``select_on: source_val``, which rows record): their ``val_accuracy`` is the
    source's."""
    cell = md_cell if markdown else str
    names = list(dict.fromkeys(_row_name(r, cell) for r in rows if r.get("select_on") == "source_val"))
    return [f"Selected on the source's validation split (select_on: source_val): {', '.join(names)}; their "
            f"val_accuracy (and a flex candidate's) is the source's."] if names else []


def grouped_k_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line under a table with rows of grouped targets (videos: ``group_accuracy``) in ``k=`` settings:
    there k counts labelled groups per class, and n_labeled the images of those groups."""
    cell = md_cell if markdown else str
    targets = sorted({str(r.get("target", "")) for r in rows if r.get("group_accuracy") is not None
                      and str(r.get("setting", "")).startswith("k=")})
    if not targets:
        return []
    return [f"On the grouped target{'s' if len(targets) > 1 else ''} {', '.join(cell(t) for t in targets)}, k counts "
            f"labelled groups (videos) per class, every image of a group labelled: n_labeled counts the images."]


def selection_labels_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line naming the methods that chose their weights (early stopping) on more labelled target
    validation images (``n_val_labeled``) than they trained on (``n_labeled``): labels the setting
    does not count; and one naming those whose rows chose them on a validation split (``val_accuracy``,
    no ``select_on``) without saying how many labels it held (:func:`uncounted_selection`: rows written
    before ``n_val_labeled``, 2026-12-02, or by bench flex and represent before 2026-12-07)."""
    cell = md_cell if markdown else str
    seen: dict[tuple, set] = {}
    uncounted: dict[tuple, set] = {}
    for r in rows:
        n_val, n = r.get("n_val_labeled"), r.get("n_labeled")
        if isinstance(n_val, int) and isinstance(n, int) and n_val > n:
            seen.setdefault((_row_name(r, cell), str(r.get("setting", ""))), set()).add(n_val)
        elif uncounted_selection(r):
            uncounted.setdefault((_row_name(r, cell), str(r.get("setting", ""))), set()).add(n)
    out = []
    if seen:
        counts = sorted({v for vs in seen.values() for v in vs})
        named = ", ".join(f"{m} ({cell(s)})" if s else m for m, s in seen)
        out.append(f"Selected on target validation labels: {named} chose their weights (early stopping, select_on: "
                   f"target_val) on {' / '.join(f'{c:,}' for c in counts)} labelled target validation images "
                   f"(n_val_labeled), more than the labels they trained on (n_labeled), which the setting counts; "
                   f"val_per_class caps them, select_on: none uses none.")
    if uncounted:
        named = ", ".join(f"{m} ({', '.join(([cell(s)] if s else []) + [_labels_text(ns)])})"
                          for (m, s), ns in uncounted.items())
        out.append(f"Selected on target validation labels, how many unknown: {named} chose their weights on a "
                   f"labelled target validation split (val_accuracy) whose size their rows do not record (no "
                   f"n_val_labeled: written before 2026-12-02, or by bench flex or represent before 2026-12-07); it "
                   f"may hold more labels than they trained on (n_labeled), which the setting counts.")
    return out


def uncounted_selection(row: dict) -> bool:
    """Whether ``row`` chose its weights on a labelled validation split of the target without
    recording how many labels it held: a ``val_accuracy``, no ``select_on`` (the source's split, or
    none) and no ``n_val_labeled``."""
    v = row.get("val_accuracy")
    return (isinstance(v, Real) and not isinstance(v, bool) and "n_val_labeled" not in row
            and row.get("select_on", "target_val") == "target_val")


def _labels_text(counts: set) -> str:
    """``"trained on 20 labels"`` (``"trained on 20 / 50 labels"``) of a cell's ``n_labeled`` values, or
    that the rows do not record them."""
    known = sorted(n for n in counts if isinstance(n, int) and not isinstance(n, bool))
    return f"trained on {' / '.join(f'{n:,}' for n in known)} labels" if known else "n_labeled not recorded"


#: what a row's training field (TrainConfig.sampler / class_weight, recorded off its default) did
TRAINING_FIELDS = {"sampler": "each class equally often in the labelled training batches",
                   "class_weight": "each class's cross-entropy weighed by n / (classes x its images)"}


def _row_name(r: dict, cell) -> str:
    """A row's method for a line under a table, with its run where the table holds several."""
    return cell(r["method"]) + (f" (run {cell(r['run'])})" if r.get("run") else "")


def training_line(rows: list[dict], markdown: bool = True) -> list[str]:
    """A line per training field (``sampler``, ``class_weight``) naming the methods whose rows were
    trained with it off its default (rows record it then), or none."""
    cell = md_cell if markdown else str
    out = []
    for key, what in TRAINING_FIELDS.items():
        by_value: dict[str, list[str]] = {}
        for r in rows:
            if isinstance(r.get(key), str):
                names = by_value.setdefault(r[key], [])
                if _row_name(r, cell) not in names:
                    names.append(_row_name(r, cell))
        out += [f"Trained with {key} {value} ({what}): {', '.join(names)}." for value, names in by_value.items()]
    return out


def other_metrics(settings) -> list[str]:
    """What the accuracy column holds on rows of these settings that are not accuracies:
    GZSL rows the harmonic mean H, retrieval rows Recall@1 (none for other settings)."""
    settings = {str(s) for s in settings}
    return ((["GZSL rows: the harmonic mean H of seen and unseen accuracy"] if settings & {"gzsl", "gzsl_prior"}
             else []) + (["retrieval rows (i2t, t2i): Recall@1"] if any(s[:3] in ("i2t", "t2i") for s in settings)
                         else []))


GZSL_HEADER = "seen / unseen classes: H (%)"
#: what the GZSL column holds, against the accuracy column (a line under the tables)
GZSL_NOTE = ("seen / unseen classes: accuracy averaged over the seen / unseen target classes (each class counts once; "
             "the target accuracy column counts each test image once); H: the mean over seeds of each seed's harmonic "
             "mean, not the H of the seen / unseen means shown")


#: a test split whose largest class has this many times the images of its smallest adds a balanced accuracy column
IMBALANCED = 1.5
BALANCED_HEADER = "balanced accuracy (%)"


def test_imbalance(row: dict) -> float | None:
    """The test images of ``row``'s largest class over those of its smallest (classes without
    test images left out), from its confusion matrix; None for a row without one."""
    support = [sum(c) for c in row.get("confusion") or () if isinstance(c, list) and sum(c) > 0]
    return max(support) / min(support) if support else None


def balanced_shown(summary: list[dict]) -> bool:
    """Whether a table gets the balanced accuracy column: some entry's test classes are
    imbalanced (:data:`IMBALANCED`), or its rows give a balanced accuracy without a confusion matrix."""
    return any("balanced_accuracy_mean" in s and (s["test_imbalance"] is None or s["test_imbalance"] >= IMBALANCED)
               for s in summary)


def balanced_cell(s: dict) -> str:
    """The balanced accuracy cell of a summary entry, or ``–``."""
    if "balanced_accuracy_mean" not in s:
        return "–"
    return format_mean_se(s["balanced_accuracy_mean"], s["balanced_accuracy_se"], s["n"])


def balanced_note(summary: list[dict]) -> str:
    """What the balanced accuracy column holds and why it is there (a line under the tables)."""
    ratios = [s["test_imbalance"] for s in summary if s.get("test_imbalance") is not None]
    why = (f"; shown because the test images per class differ by up to {max(ratios):.1f}x, where accuracy counts "
           f"the large classes most" if ratios else "")
    return (f"Balanced accuracy: the mean over the target classes with test images of each class's accuracy (recall), "
            f"as scikit-learn's balanced_accuracy_score{why}; per_class_accuracy and confusion in results.json.")


def gzsl_cell(s: dict) -> str:
    """The GZSL cell of a summary entry: ``"seen / unseen: H ± se"`` in percent, or ``–``."""
    if "h_accuracy_mean" not in s:
        return "–"
    return (f"{100 * s['seen_accuracy_mean']:.1f} / {100 * s['unseen_accuracy_mean']:.1f}: "
            f"{format_mean_se(s['h_accuracy_mean'], s['h_accuracy_se'], s['n'])}")


def environment_lines(rows: list[dict]) -> list[str]:
    """A line when the rows were computed under several thread counts, CPU kernels or process
    counts (a resume elsewhere, runs combined: valid rows, but not bit-identical to what one
    environment gives; ``--nproc`` also rounds the batch), naming them."""
    out = []
    for key, what in (("threads", "torch threads per process"), ("kernels", "CPU kernels"),
                      ("world_size", "data-parallel process counts (--nproc)")):
        seen: dict = {}
        resumed = False  # a row trained under one count, then resumed under another
        for r in rows:
            if r.get(key) is not None:
                before = r.get(f"{key}_before_resume") if key == "threads" else None
                resumed = resumed or bool(before)
                value = f"{'/'.join(map(str, before))} then {r[key]}" if before else str(r[key])
                seen.setdefault(value, []).append(f"{str(r['run']) + ': ' if r.get('run') else ''}{r['method']} "
                                                  f"seed {r['seed']}")
        if len(seen) > 1 or resumed:
            parts = "; ".join(f"{v}: {', '.join(jobs[:3])}{', ...' if len(jobs) > 3 else ''}"
                              for v, jobs in seen.items())
            count = "changing" if resumed else len(seen)
            out.append(f"Rows made under {count} {what} ({parts}): they may differ from one environment's rows "
                       f"(docs/scale.md).")
    return out


def current_revision(method: str) -> int | None:
    """The ``revision`` of the method registered here as ``method`` (0: none), None where none is
    (a plugin's method not imported here)."""
    from .methods import get_method
    try:
        return get_method(method).revision
    except Exception:
        return None


class RevisionsHere(dict):
    """``method -> its revision here`` (:func:`current_revision`), looked up once per method."""

    def __missing__(self, method: str) -> int | None:
        self[method] = current_revision(method)
        return self[method]


def revision_cell(s: dict) -> str:
    """A summary entry's method as the table's cell: ``"dsn (revision 0)"`` where its rows record
    another revision of their method than the one registered here (:func:`revision_lines` says which;
    :func:`~transferkit.results.summarize` keeps it only then)."""
    revision = s.get("method_revision")
    return str(s["method"]) + (f" (revision {revision})" if isinstance(revision, int)
                               and revision != current_revision(str(s["method"])) else "")


def revision_lines(rows: list[dict], config: dict | list | None = None, markdown: bool = True) -> list[str]:
    """A line naming the rows trained by another ``revision`` of their method than the one
    registered here, older or newer (:func:`~transferkit.rundir.row_revision`: their ``method_revision``, else
    their digest under their run's ``config``; a list of (run, config) for combined runs), with what the
    method's ``revision_note`` says changed; and one naming the rows of a method that has a revision
    whose own cannot be told (rows without ``method_revision`` and no run config their digest is found
    under): they may be of an older form. Rows that record another revision are never averaged with
    the current one's (:func:`~transferkit.results.summarize`)."""
    from .methods import get_method
    from .rundir import row_revision
    cell = md_cell if markdown else str
    configs = dict(config) if isinstance(config, list) else {None: config}
    other: dict[tuple, list] = {}  # (method, run, revision) -> seeds
    unknown: dict[tuple, list] = {}  # (method, run) -> seeds
    known: dict[tuple, int | None] = {}  # one digest's revision, worked out once
    nows = RevisionsHere()
    for r in rows:
        now = nows[r["method"]]
        if now is None:  # a plugin's method not imported here: its cell names a revision its rows record
            continue
        key = (r["method"], r.get("run"), r.get("setting"), r.get("config_digest"), r.get("method_revision"))
        if key not in known:
            known[key] = row_revision(r, configs.get(r.get("run")))
        revision = known[key]
        if revision is None:
            unknown.setdefault((r["method"], r.get("run")), []).append(r["seed"])
        elif revision != now:
            other.setdefault((r["method"], r.get("run"), revision), []).append(r["seed"])

    def where(run, seeds) -> str:
        numbers = sorted(s for s in set(seeds) if isinstance(s, int))  # 2 before 10
        shown = ", ".join(map(str, numbers + sorted((s for s in set(seeds) if not isinstance(s, int)), key=str)))
        return f"{f'run {cell(run)}: ' if run else ''}seed{'s' if len(set(seeds)) > 1 else ''} {shown}"

    def changes(methods) -> str:
        return "; ".join(f"{cell(m)} is at revision {get_method(m).revision} here"
                         + (f" ({cell(get_method(m).revision_note)})" if get_method(m).revision_note else "")
                         for m in dict.fromkeys(methods))
    out = []
    if other:
        parts = "; ".join(f"{cell(m)} revision {rev}{' (newer)' if rev > nows[m] else ''} ({where(run, seeds)})"
                          for (m, run, rev), seeds in other.items())
        out.append(f"Rows of another revision of their method than the one here: {parts}; "
                   f"{changes(m for m, _, _ in other)}. Their numbers are of that form, not of the method as it "
                   f"trains here.")
    if unknown:
        parts = "; ".join(f"{cell(m)} ({where(run, seeds)})" for (m, run), seeds in unknown.items())
        out.append(f"Rows whose revision of their method is unknown (no method_revision, and no run config their "
                   f"config_digest matches): {parts}; {changes(m for m, _ in unknown)}: they may be of an older form.")
    return out


def check_summary(summary: list[dict], who: str) -> None:
    """Refuse result rows given where :func:`~transferkit.results.summarize`'s entries belong."""
    entry = next((s for s in summary if not (isinstance(s, dict) and "accuracy_mean" in s and "n" in s)), None)
    if entry is not None:
        rows = isinstance(entry, dict) and "accuracy" in entry
        call = f"{who}(summarize(rows))" if who == "csv_table" else f"{who}(summarize(rows), rows)"
        raise TransferkitError(f"{who} takes summarize(rows)'s entries (accuracy_mean, n, ...); "
                               + (f"these look like result rows (accuracy, seed): give summarize(rows), {call}"
                                  if rows else f"got {str(entry)[:80]}"))


def table_parts(summary: list[dict], rows: list[dict] = (), config: dict | list | None = None,
                notes: list[str] = (), markdown: bool = True) -> dict:
    """The parts of the results table, as text: ``classes`` (the class subsets, a line above the
    table, or ``""``), ``header`` and ``cells`` (one list of cell texts per summary entry,
    unescaped), and ``notes`` (the lines under it; ``markdown``: as markdown, else plain text).
    :func:`markdown_table` and :func:`latex_table` render them alike."""
    check_summary(summary, "markdown_table" if markdown else "latex_table")
    grouped = any("group_accuracy_mean" in s for s in summary)
    gzsl, balanced = any("h_accuracy_mean" in s for s in summary), balanced_shown(summary)
    splits = {r.get("split", "test") for r in rows}
    what = "target accuracy" if splits <= {"test"} else "target validation accuracy" if splits == {"val"} else \
        "target accuracy, validation or test: see each row's split"
    runs = any("run" in s for s in summary)
    header = (["run"] if runs else []) + ["method", "source", "target", "setting", f"{what} (%)"] \
        + ([BALANCED_HEADER] if balanced else []) + (["grouped accuracy (%)"] if grouped else []) \
        + ([GZSL_HEADER] if gzsl else []) + ["n", "wall s"]
    cells = []
    for s in summary:
        group = (format_mean_se(s["group_accuracy_mean"], s["group_accuracy_se"], s["group_n"])
                 if "group_accuracy_mean" in s else "–")
        cells.append(([str(s.get("run", ""))] if runs else [])
                     + [revision_cell(s), str(s["source"]), str(s["target"]), setting_text(s, rows), accuracy_text(s)]
                     + ([balanced_cell(s)] if balanced else []) + ([group] if grouped else [])
                     + ([gzsl_cell(s)] if gzsl else [])
                     + [str(s["n"]), "–" if s["wall_s"] is None else format(s["wall_s"], ".1f")])
    picks = row_notes(rows, markdown)
    if any(s["n"] > 1 or s.get("group_n", 0) > 1 for s in summary):  # a ± in the table
        picks.append(standard_error_note(rows))
    if any("accuracy_ci95" in s for s in summary):
        picks.append(INTERVAL_NOTE[0].upper() + INTERVAL_NOTE[1:] + ".")
    if gzsl:
        picks.append(GZSL_NOTE[0].upper() + GZSL_NOTE[1:] + ".")
    if balanced:
        picks.append(balanced_note(summary))
    others = other_metrics(s["setting"] for s in summary)
    if others:
        picks.append(f"The {what} column holds other metrics on some rows: {'; '.join(others)}.")
    picks += revision_lines(rows, config, markdown) + environment_lines(rows) + list(notes)
    subsets = class_subsets(config) if not isinstance(config, list) else "; ".join(
        f"run {run}: {named}" for run, named in ((run, _run_subsets(c, [r for r in rows if r.get("run") == run]))
                                                 for run, c in config) if named)
    if not subsets and (not isinstance(config, dict) or "source" not in config):  # a benchmark's: its rows say
        subsets = row_class_subsets(rows)
    return {"classes": subsets, "header": header, "cells": cells, "notes": picks}


def _run_subsets(config, rows: list[dict]) -> str:
    """The class subsets of one run of a combined table: its config's, or a benchmark's rows' (its
    plan names none)."""
    return class_subsets(config) or ("" if isinstance(config, dict) and "source" in config else
                                     row_class_subsets(rows))


def markdown_table(summary: list[dict], rows: list[dict] = (), config: dict | list | None = None,
                   notes: list[str] = ()) -> str:
    """The results table: accuracy in percent, mean ± standard error over seeds (and the
    grouped, per-video accuracy when a target is grouped). ``rows``: the rows summarised,
    whose ``split`` (test unless a row says otherwise, e.g. ``bench uda_tune``'s validation
    rows) the accuracy header names. ``config``: the run's, whose class subsets, if any, a
    line above the table names (the source and target columns name only the domains). Lines under
    the table name the units the flex methods picked (:func:`picked_lines`) and, where some rows
    hold another metric (:func:`other_metrics`), what the accuracy column holds there; one says
    what ± means where a cell has one. Rows of several runs (:func:`combine_runs`) get a run
    column, and ``config`` is then their list of (run, config). ``notes``: more lines under the
    table (e.g. :func:`data_differ_lines` of combined runs)."""
    parts = table_parts(summary, rows, config, notes)
    lines = ["| " + " | ".join(parts["header"]) + " |", "|" + "---|" * len(parts["header"])]
    lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in parts["cells"]]
    picks = parts["notes"]
    return ((f"Classes: {parts['classes']}.\n\n" if parts["classes"] else "") + "\n".join(lines) + "\n"
            + ("\n" + "\n".join(picks) + "\n" if picks else ""))


#: LaTeX's special characters in text, and what writes each
LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "–": "--", "×": r"$\times$", "|": r"\textbar{}", "<": r"\textless{}",
                 ">": r"\textgreater{}", "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "λ": r"$\lambda$",
                 "τ": r"$\tau$", "ψ": r"$\psi$", "·": r"$\cdot$", "→": r"$\rightarrow$", "≈": r"$\approx$"}


def latex_text(value) -> str:
    """``value`` as LaTeX text: its special characters escaped, ±, ×, the Greek letters of method
    labels (α, β, γ, λ, τ, ψ, ·), → and ≈ in math mode (pdflatex rejects them as text)."""
    return "".join(LATEX_ESCAPES.get(c, c) for c in " ".join(str(value).splitlines()))


def latex_table(summary: list[dict], rows: list[dict] = (), config: dict | list | None = None,
                notes: list[str] = ()) -> str:
    """The results table of :func:`markdown_table` as a LaTeX ``tabular`` (booktabs rules:
    ``\\usepackage{booktabs}``), the class subsets and the lines under the table as ``%``
    comments after it, for the caption one writes oneself."""
    parts = table_parts(summary, rows, config, notes, markdown=False)
    header = parts["header"]
    numbers = {h for h in header if "(%)" in h or h in ("n", "wall s")}
    lines = [r"\begin{tabular}{" + "".join("r" if h in numbers else "l" for h in header) + "}", r"\toprule",
             " & ".join(latex_text(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_text(c) for c in cells) + r" \\" for cells in parts["cells"]]
    lines += [r"\bottomrule", r"\end{tabular}"]
    comments = ([f"Classes: {parts['classes']}."] if parts["classes"] else []) + parts["notes"]
    lines += [f"% {' '.join(line.splitlines())}" for line in comments]
    return "\n".join(lines) + "\n"


#: summary fields a CSV table has, in order, where some entry has them (fractions, not percent)
CSV_FIELDS = ("run", "method", "method_revision", "source", "target", "setting", "labels_per_class", "labels_in_all",
              "accuracy_mean", "accuracy_se",
              "accuracy_ci95", "balanced_accuracy_mean", "balanced_accuracy_se", "group_accuracy_mean",
              "group_accuracy_se", "group_n",
              "seen_accuracy_mean", "seen_accuracy_se", "unseen_accuracy_mean", "unseen_accuracy_se",
              "h_accuracy_mean", "h_accuracy_se", f"{ALL_SOURCE}_mean", f"{ALL_SOURCE}_se", "n", "seeds", "wall_s")


def csv_table(summary: list[dict]) -> str:
    """The summary entries as CSV, one line per table row: the fields of :data:`CSV_FIELDS` that
    some entry has, as ``results.json``'s ``summary`` holds them (accuracies as fractions, full
    precision; a standard error of one seed empty; ``seeds`` and ``labels_per_class`` separated by spaces). The
    labels of setting ``all``, which the markdown table gives in its setting column (``all (3-5 per class)``), are
    columns of their own: ``setting`` holds the setting alone, as in ``results.json``."""
    check_summary(summary, "csv_table")
    fields = [f for f in CSV_FIELDS if any(f in s for s in summary)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for s in summary:
        writer.writerow(["" if s.get(f) is None else " ".join(map(str, s[f])) if f in ("seeds", "labels_per_class")
                         else s[f] for f in fields])
    return out.getvalue()


