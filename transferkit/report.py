"""``transferkit report RUN_DIR...``: one self-contained HTML page (and a markdown twin) per
run or benchmark directory: the config, the results table (mean ± standard error), label-
efficiency curves, per-unit curves (any per-unit dictionary a method reports, such as
flex-tuning's candidate accuracies), training curves, confusion matrices, wall time and
peak memory per method, and every figure the run saved. Plots are matplotlib PNGs,
embedded as data URIs so the page is one file."""

from __future__ import annotations

import base64
import html
import io
import re
from collections import defaultdict
from pathlib import Path

import yaml

from .compare import with_revisions
from .errors import check, first_named
from .evaluate import format_mean_se, mean_se
from .io import atomic_write, read_jsonl, resolves_inside, write_text
from .plots import MARKERS, new_figure
from .results import (  # check_run_dir: report.check_run_dir as before
    check_run_dir,
    failed_line,
    read_results,
    stopped_lines,
    summarize,
    unfinished_run,
)
from .tables import (
    BALANCED_HEADER,
    GZSL_HEADER,
    accuracy_text,
    balanced_cell,
    balanced_shown,
    class_subsets,
    gzsl_cell,
    md_cell,
    picked_unit,
    revision_cell,
    setting_text,
    table_parts,
)

MAX_FIGURES = 24


def _capped(items: list, cap: int, what: str, notes: list | None, name=None) -> list:
    """The first ``cap`` of ``items``; the rest is counted in ``notes`` (the report says so), and
    named by ``name(item)`` where given (at most 10)."""
    if len(items) > cap and notes is not None:
        rest = [name(item) for item in items[cap:]] if name is not None else []
        named = f": {', '.join(rest[:10])}{', ...' if len(rest) > 10 else ''}" if rest else ""
        notes.append(f"{len(items) - cap} more {what} not shown{named} (the report draws {cap})")
    return items[:cap]


def _figure():
    return new_figure(6.4, 3.8)


def _png(fig, tight_box: bool = False) -> bytes:
    """The figure as PNG bytes; ``tight_box`` saves the box of everything drawn (labels under
    fixed-aspect image axes fall outside the figure that tight_layout arranges)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", **({"bbox_inches": "tight", "pad_inches": 0.08} if tight_box else {}))
    return buf.getvalue()


def _setting_value(setting: str) -> float | None:
    m = re.fullmatch(r"(?:k|ratio)=(\d+)|(\d+)/class", setting)
    return float(m.group(1) or m.group(2)) if m else None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unit_values(value: dict) -> dict | None:
    """``{series: {unit: number}}``: a ``unit -> number`` mapping as one series (``None``), or one
    level of nesting as one series per inner key (tap's ``{u: {svm: a}}`` -> ``{"svm": {"u": a}}``:
    a line per classifier across the units); None when some value is neither a number nor a
    dictionary of numbers."""
    out: dict = {}
    for name, v in value.items():
        if _is_number(v):
            out.setdefault(None, {})[str(name)] = v
        elif isinstance(v, dict) and v and all(_is_number(x) for x in v.values()):
            for inner, x in v.items():
                out.setdefault(str(inner), {})[str(name)] = x
        else:
            return None
    return out


def label_efficiency_figures(rows: list[dict]) -> list[tuple[str, bytes]]:
    """Accuracy vs labels per class (mean ± standard error) per method, one plot per pair. On a
    grouped (video) target, whose ``k=`` settings count labelled groups per class, the axis says
    groups, and the per-group accuracy the rows hold is drawn dashed beside the per-image one."""
    from .plots import draw_accuracy_curves, grouped_rows, k_axis_label

    out = []
    by_pair = defaultdict(list)
    for r in rows:
        by_pair[(r["source"], r["target"])].append(r)
    for (source, target), rs in by_pair.items():
        settings = {r["setting"] for r in rs if _setting_value(r["setting"]) is not None}
        if len(settings) < 2:
            continue
        fig = _figure()
        ax = fig.add_subplot()
        curves, group_curves = defaultdict(list), defaultdict(list)
        used = _labels_used(rs)
        for s in summarize(rs):
            x = used.get(s["setting"], _setting_value(s["setting"]))
            if x is not None:
                se = s["accuracy_se"] or 0.0  # None for one seed: no bar
                curves[revision_cell(s)].append((x, 100 * s["accuracy_mean"], 100 * se))  # a revision: its own
                if "group_accuracy_mean" in s:
                    group_curves[revision_cell(s)].append((x, 100 * s["group_accuracy_mean"],
                                                      100 * (s["group_accuracy_se"] or 0.0)))
        draw_accuracy_curves(ax, dict(sorted(curves.items())), group_curves)
        capped = sorted((s for s in settings if used.get(s, _setting_value(s)) < _setting_value(s)), key=_setting_value)
        ax.set_xlabel(k_axis_label(rs, settings) + (" (as used)" if capped else ""))
        ax.set_ylabel("target test accuracy (%)")
        what = "\nsolid: per-image accuracy, dashed: per-group (video) accuracy" if group_curves else ""
        ax.set_title(f"label efficiency: {source} -> {target}{what}")
        ax.legend(fontsize=7)
        note = "; ".join(f"{s} at {used[s]:.4g}" for s in capped)
        groups = grouped_rows(rs) and any(s.startswith("k=") for s in settings)
        out.append((f"Label efficiency, {source} → {target}" + (f" ({note}: the labels per class its rows used, "
                                                               f"n_labeled / classes; smaller classes keep all of "
                                                               f"theirs)" if capped else "")
                    + (" (k counts labelled groups (videos) per class" + ("; dashed: the per-group accuracy"
                                                                          if group_curves else "") + ")"
                       if groups else ""), _png(fig)))
    return out


def _labels_used(rows: list[dict]) -> dict[str, float]:
    """``{"ratio=400": 300.0}``: the labelled images per class that the rows of a ratio setting
    trained on (``n_labeled`` over the target classes, the most of any row), where classes smaller
    than the ratio keep all of theirs (never above the ratio); a ``k=`` setting's k is what was
    asked, and a grouped target's settings count groups, not the images ``n_labeled`` counts."""
    used: dict[str, float] = {}
    for r in rows:
        n, classes, setting = r.get("n_labeled"), r.get("class_names"), str(r.get("setting", ""))
        if setting.startswith("ratio=") and _is_number(n) and n > 0 and classes and "group_accuracy" not in r:
            used[setting] = min(_setting_value(setting), max(used.get(setting, 0.0), n / len(classes)))
    return used


def _pick(row: dict) -> tuple[str | None, str] | None:
    """``(series, unit)`` a row's method picked on validation (:func:`picked_unit`; flex's: series None,
    tap's ``unit/classifier``: its classifier's series, as :func:`_unit_values` splits them), or None."""
    pick = picked_unit(row)
    if pick is None:
        return None
    unit, _, series = pick.partition("/")
    return series or None, unit


def _accuracy_label(key: str) -> str:
    """A per-unit field's name for an axis: ``candidate_val_accuracy`` -> ``validation accuracy``."""
    words = {"val": "validation", "acc": "accuracy"}
    return " ".join(words.get(w, w) for w in key.split("_") if w != "candidate") or key


def per_unit_figures(rows: list[dict], notes: list | None = None) -> list[tuple[str, bytes]]:
    """Every row field whose name holds ``acc`` and that maps names to accuracies (fractions
    in [0, 1]; e.g. validation accuracy per flex candidate unit; with one level of nesting, as
    tap's unit -> classifier, one line per classifier across the units), in % as the tables,
    mean ± standard error over seeds, one line per method (and classifier), one plot per (source,
    target, setting). Other per-unit fields (``candidate_steps``, ``candidate_val_loss``) are not drawn."""
    groups = defaultdict(lambda: defaultdict(list))
    picks = defaultdict(lambda: defaultdict(list))
    for r in rows:
        pick = _pick(r)
        for key, value in r.items():
            if key in ("per_class_accuracy", "confusion") or "acc" not in key or not isinstance(value, dict) \
                    or not value:
                continue
            series = _unit_values(value)
            if series and not any(v < 0 or v > 1 for flat in series.values() for v in flat.values()):  # NaN: none
                group = (key, r.get("source", ""), r["target"], r["setting"])
                for name, flat in series.items():
                    line = r["method"] if name is None else f"{r['method']}: {name}"
                    groups[group][line].append(flat)
                    if pick is not None and pick[0] == name and pick[1] in flat:
                        picks[group][line].append(pick[1])
    out = []
    for group_key, by_method in _capped(list(groups.items()), MAX_FIGURES,
                                        "per-unit figures", notes):
        key, source, target, setting = group_key
        fig = _figure()
        ax = fig.add_subplot()
        for i, (method, dicts) in enumerate(sorted(by_method.items())):
            names = list(dict.fromkeys(n for d in dicts for n in d))  # every seed's units, in first-seen order
            stats = [mean_se([100 * d[n] for d in dicts if n in d]) for n in names]  # over the seeds that have it
            means = [m for m, _ in stats]
            (line,) = ax.plot(names, means, marker=MARKERS[i % len(MARKERS)], label=method)
            if any(se for _, se in stats):  # one seed: no bar
                ax.errorbar(names, means, yerr=[se or 0.0 for _, se in stats], fmt="none", ecolor=line.get_color())
            picked = [n for n in names if n in picks[group_key][method]]
            for j, n in enumerate(picked):  # a triangle where the method picked, "2/3": by 2 of 3 seeds
                y, count = means[names.index(n)], picks[group_key][method].count(n)
                ax.plot([n], [y], "v", ms=10, color=line.get_color(), mec="k", zorder=3,
                        label=f"{method}: picked" if j == 0 else None)
                if count < len(dicts):
                    ax.annotate(f"{count}/{len(dicts)}", (ax.xaxis.convert_units(n), y), textcoords="offset points",
                                xytext=(0, 8), ha="center", fontsize=6)
        ax.set_title(f"{key}: {source} -> {target} ({setting})")
        ax.set_xlabel("unit")
        ax.set_ylabel(f"{_accuracy_label(key)} (%)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.legend(fontsize=7)
        out.append((f"{key} per unit, {source} → {target} ({setting})", _png(fig)))
    return out


#: a confusion matrix of at most this many classes has its counts written in its cells
COUNTED_CLASSES = 12


def _support_labels(labels: list[str], per_seed: list, one_split: bool) -> list[str]:
    """The true-class tick labels with each class's test images, ``"malignant (6)"``: the images per
    seed where every matrix of the figure has the same (``one_split``), else their sum over this
    method's seeds (the row sums of its summed matrix)."""
    counts = per_seed[0].sum(1) if one_split else sum(per_seed).sum(1)
    return [f"{name} ({int(n)})" for name, n in zip(labels, counts)]


def _draw_counts(ax, counts, normalised) -> None:
    """Write each cell's count (summed over seeds) in it, white on dark cells, so that a class of 2
    test images does not read as solidly as one of 40."""
    size = 7 if len(counts) <= 6 else 5
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            ax.text(j, i, str(int(n)), ha="center", va="center", fontsize=size,
                    color="white" if normalised[i, j] > 0.6 else "black")


def _confusion_caption(seeds: set[int], counted: bool, one_split: bool, labelled: bool) -> str:
    """What a confusion figure's colours, numbers and true-class labels hold (its caption and title)."""
    n = f"{next(iter(seeds))} seed{'s' if seeds != {1} else ''}" if len(seeds) == 1 else "each method's seeds"
    return ("colour: row-normalised per true class (recall on the diagonal)"
            + (f"; numbers: counts summed over {n}" if counted else "")
            + (f"; a true class's label gives its test images{' per seed' if one_split else ', summed over the seeds'}"
               if labelled else ""))


def confusion_figures(rows: list[dict], notes: list | None = None) -> list[tuple[str, bytes]]:
    """Confusion matrices per (source, target, setting), one panel per method: colour row-normalised
    (each true class's share of predictions, its recall on the diagonal, with a colour bar), the
    counts summed over seeds written in the cells (up to :data:`COUNTED_CLASSES` classes) and each
    true class's test images in its label, since normalised rows hide how few images a class has."""
    import numpy as np
    groups, names = defaultdict(lambda: defaultdict(list)), {}
    for r in rows:
        if r.get("confusion"):  # keyed by shape and class names too: other class sets are drawn apart
            conf = np.array(r["confusion"])
            key = (r["source"], r["target"], r["setting"], conf.shape, tuple(r.get("class_names") or ()))
            groups[key][r["method"]].append(conf)
            names[key] = r.get("class_names")
    out = []
    for key, by_method in _capped(list(groups.items()), 4, "confusion figures", notes,
                                  lambda item: f"{item[0][0]} → {item[0][1]} ({item[0][2]})"):
        source, target, setting, shape, _ = key
        n_classes, counted = shape[0], shape[0] <= COUNTED_CLASSES
        labels = ([str(n) for n in names[key]] if names[key] and len(names[key]) == shape[0] == shape[1]
                  else [str(i) for i in range(n_classes)]) if n_classes <= 20 else None
        one_split = len({tuple(c.sum(1).tolist()) for confs in by_method.values() for c in confs}) == 1
        methods = sorted(by_method)
        side = max(2.2, 0.22 * min(n_classes, COUNTED_CLASSES) + 0.8)  # room for a count in each cell, up to 12
        fig = new_figure(side * len(methods) + 0.9, side + 0.9)
        grid = fig.add_gridspec(1, len(methods) + 1, width_ratios=[1] * len(methods) + [0.06])
        for i, method in enumerate(methods):
            per_seed = by_method[method]
            counts = sum(per_seed)
            normalised = counts / np.maximum(counts.sum(1, keepdims=True), 1)
            ax = fig.add_subplot(grid[0, i])
            image = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
            if counted:
                _draw_counts(ax, counts, normalised)
            ax.set_title(f"{method} ({len(per_seed)} seed{'s' if len(per_seed) > 1 else ''})", fontsize=8)
            ticks = range(n_classes) if labels else []
            ax.set_xticks(ticks, labels or [], fontsize=5, rotation=90)
            shown = labels and (i == 0 or not one_split)  # one split: the first panel's labels hold for all
            ax.set_yticks(ticks, _support_labels(labels, per_seed, one_split) if shown else [], fontsize=5)
            ax.set_xlabel("predicted", fontsize=7)
            if i == 0:
                ax.set_ylabel("true (test images)" if labels else "true", fontsize=7)
        bar = fig.colorbar(image, cax=fig.add_subplot(grid[0, -1]))
        bar.set_label("share of the true class", fontsize=6)
        bar.ax.tick_params(labelsize=5)
        caption = _confusion_caption({len(c) for c in by_method.values()}, counted, one_split, bool(labels))
        fig.suptitle(f"confusion: {source} -> {target} ({setting})\n{caption}", fontsize=7, wrap=True)
        out.append((f"Confusion matrices, {source} → {target} ({setting}); {caption}", _png(fig, tight_box=True)))
    return out


def cost_figure(summary: list[dict], rows: list[dict]) -> list[tuple[str, bytes]]:
    """Mean wall seconds and peak resident memory per method."""
    wall, memory = defaultdict(list), defaultdict(list)
    for r in rows:
        wall[r["method"]].append(r["wall_s"])
        if r.get("peak_rss_mb") is not None:
            memory[r["method"]].append(r["peak_rss_mb"])
    methods = sorted(wall)
    fig = _figure()
    ax = fig.add_subplot(1, 2 if memory else 1, 1)
    ax.barh(methods, [mean_se(wall[m])[0] for m in methods])
    ax.set_xlabel("wall seconds per job")
    if memory:  # a method without a measurement gets no bar (not a bar at 0); its row stays its row
        ax = fig.add_subplot(1, 2, 2, sharey=ax)
        ax.barh(methods, [mean_se(memory[m])[0] if memory.get(m) else float("nan") for m in methods])
        ax.set_xlabel("peak memory (MiB; none: not measured)", fontsize=8)
        ax.tick_params(axis="y", labelleft=False)
    return [("Wall time and peak memory per method" if memory else "Wall time per method", _png(fig))]


def training_curves(path: Path) -> dict[str, list[dict]]:
    """The records of the first training (``run``) of each method in a ``metrics.jsonl``, by
    step. A resumed training logs the steps after its checkpoint again: the last record of a
    step counts. Records without a run name (older files) end a training where the step goes back."""
    first: dict[str, tuple] = {}
    finished: set[str] = set()
    for rec in read_jsonl(path):
        run = rec.get("run")
        m = _curve_name(rec.get("method", "?"), run)
        run0, by_step = first.setdefault(m, (run, {}))
        if m in finished or run != run0:
            continue
        if run is None and by_step and rec["step"] <= max(by_step):
            finished.add(m)
            continue
        by_step[rec["step"]] = rec
    return {m: [by_step[s] for s in sorted(by_step)] for m, (_, by_step) in first.items() if by_step}


def _curve_name(method: str, run: str | None) -> str:
    """A training's name among the curves: its method, or for a stage of a job of several
    trainings (flex's candidates, whose records name ft_unit and ft_all) the job's method and the stage."""
    stem, _, tag = (run or "").partition("/")
    if not tag or tag == "main":
        return method
    job = re.match(r"(.+?)-[^-]*=", stem)  # <method>-<setting>-s<seed>: the setting holds '='
    return f"{job.group(1) if job else stem}: {tag}"


def training_curve_figures(run_dir: Path, notes: list | None = None) -> list[tuple[str, bytes]]:
    """Validation accuracy and loss over steps of the first training of each method."""
    from matplotlib.ticker import LogFormatter
    out = []
    for path in _capped(sorted(run_dir.rglob("metrics.jsonl")), 4, "training-curve files", notes,
                        lambda p: p.parent.relative_to(run_dir).as_posix()):
        curves = training_curves(path)
        if not curves:
            continue
        fig = _figure()
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for i, (m, recs) in enumerate(sorted(curves.items())):  # a method's colour is the same in both panels
            steps, colour, marker = [r["step"] for r in recs], f"C{i % 10}", MARKERS[i % len(MARKERS)]
            ax1.plot(steps, [r["loss"] for r in recs], marker=marker, ms=3, label=m, color=colour)  # one: a dot
            if any("val_accuracy" in r for r in recs):
                ax2.plot([r["step"] for r in recs if "val_accuracy" in r],
                         [100 * r["val_accuracy"] for r in recs if "val_accuracy" in r], marker=marker, ms=3, label=m,
                         color=colour)
        ax1.set_xlabel("step")
        ax1.set_ylabel("training loss")
        ax1.set_yscale("log")
        # plain-text log labels (the default ones are maths markup, shown raw with text.parse_math off);
        # minor ticks labelled too, for a loss that stays within one decade
        ax1.yaxis.set_major_formatter(LogFormatter())
        ax1.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
        ax2.set_xlabel("step")
        ax2.set_ylabel("validation accuracy (%)")
        ax1.legend(fontsize=7)  # every method has a loss curve; the accuracy panel's lines share its colours
        if not ax2.lines:  # select_on: none, no validation split: no accuracy axis either
            ax2.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax2.transAxes)
            ax2.set_yticks([])
            ax2.set_ylabel("")
        where = path.parent.relative_to(run_dir).as_posix()  # mnist-digits/s0: each uda pair has an s0/
        where = run_dir.name if where == "." else where
        fig.suptitle(f"training curves: {where}", fontsize=9)
        jobs = sorted({str(recs[0].get("run")).split("/")[0] for recs in curves.values() if recs[0].get("run")})
        shown = f": {', '.join(jobs)}" if jobs else ""  # job files' names: method, setting, seed
        out.append((f"Training curves ({where}, first run of each method{shown})", _png(fig)))
        sparse = sorted(m for m, recs in curves.items() if len(recs) < 3)
        if sparse and notes is not None:  # the engine logs the loss at each evaluation (every eval_every steps)
            notes.append(f"Training curves of {where}: {', '.join(sparse)} logged fewer than 3 points (the loss "
                         f"is logged at each evaluation, every train.eval_every steps, as its mean over the steps "
                         f"since the previous one, and is the sum of the method's terms, a discriminator's "
                         f"included): lower eval_every for a curve; each term is in metrics.jsonl")
    return out


def _inside(files: list[Path], run_dir: Path, what: str, notes: list | None) -> list[Path]:
    """``files`` but those that resolve outside ``run_dir`` (symbolic links out of it: a report
    shows what the run wrote, never other files of the machine), which ``notes`` names."""
    outside = [p for p in files if not resolves_inside(p, run_dir)]
    if outside and notes is not None:
        notes.append(f"{len(outside)} {what} not shown: symbolic links out of the run directory "
                     f"({', '.join(str(p.relative_to(run_dir)) for p in outside[:10])})")
    return [p for p in files if p not in outside]


#: what a run's figure of an older transferkit (no description in the PNG) shows, by its file name
_FIGURES_BY_NAME = (("tsne*.png", "t-SNE of source and target embeddings"),
                    ("per_unit_*.png", "accuracy of each unit fine-tuned alone"),
                    ("units_picked*.png", "the units each flex method picked, per target"),
                    ("accuracy_vs_k_*.png", "accuracy against labels per class (k), one line per method"))


def saved_figure_caption(relative: str, png: bytes) -> str:
    """What a figure the run saved shows, then its path: the description its PNG keeps
    (:func:`~transferkit.plots.save_png`), else what its file name tells, else that the run saved it."""
    import fnmatch

    from PIL import Image

    from .plots import DESCRIPTION_KEY
    try:
        with Image.open(io.BytesIO(png)) as im:
            text = im.info.get(DESCRIPTION_KEY)
    except Exception:  # not a PNG Pillow reads: named by its path alone
        text = None
    name = Path(relative).name
    text = text or next((shows for pattern, shows in _FIGURES_BY_NAME if fnmatch.fnmatch(name, pattern)),
                        "a figure the run saved")
    return f"{text} ({relative})"


def saved_figures(run_dir: Path, exclude: Path, notes: list | None = None) -> list[tuple[str, bytes]]:
    """PNG figures the run or benchmark wrote itself (t-SNE, per-unit plots, ...), not those of
    a report (``exclude`` or any other ``report_files/`` folder, e.g. of an earlier ``--out``), nor
    files linked from outside ``run_dir``; each captioned (and its alt text) by what it shows and its path
    (:func:`saved_figure_caption`)."""
    files = [p for p in sorted(run_dir.rglob("*.png"))
             if exclude not in p.parents and "report_files" not in p.relative_to(run_dir).parts]
    files = _inside(files, run_dir, "figures", notes)
    return [(saved_figure_caption(str(p.relative_to(run_dir)), png), png)
            for p in _capped(files, MAX_FIGURES, "saved figures", notes) for png in [p.read_bytes()]]


def _table_rows(summary: list[dict], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the results table; a grouped (video) target adds its per-group
    accuracy, a target of seen and new classes (GZSL) its seen / unseen accuracies and H, as
    ``results.md`` shows them."""
    grouped = any("group_accuracy_mean" in s for s in summary)
    gzsl, balanced = any("h_accuracy_mean" in s for s in summary), balanced_shown(summary)
    memory = defaultdict(list)
    for r in rows:
        key = (r["method"], r["source"], r["target"], r["setting"])
        if r.get("peak_rss_mb") is not None:
            memory[key].append(r["peak_rss_mb"])
    table = []
    for s in summary:
        key = (s["method"], s["source"], s["target"], s["setting"])
        mem = memory.get(key)
        group = ([format_mean_se(s["group_accuracy_mean"], s["group_accuracy_se"], s["group_n"])
                  if "group_accuracy_mean" in s else "–"] if grouped else [])
        accuracy = accuracy_text(s)  # one row over many episodes: with its own 95 % interval
        table.append([revision_cell(s), s["source"], s["target"], setting_text(s, rows), accuracy,
                      *([balanced_cell(s)] if balanced else []), *group,
                      *([gzsl_cell(s)] if gzsl else []), str(s["n"]), f"{s['wall_s']:.1f}",
                      f"{max(mem):.0f}" if mem else "–"])
    header = (HEADER[:5] + ([BALANCED_HEADER] if balanced else []) + (["grouped accuracy (%)"] if grouped else [])
              + ([GZSL_HEADER] if gzsl else []) + HEADER[5:])
    return header, table


HEADER = ["method", "source", "target", "setting", "target accuracy (%)", "n", "wall s", "peak MiB"]


def metric_note(rows: list[dict], config: dict | None = None, subsets: str | None = None) -> str:
    """What the accuracy column holds, from the rows themselves, and the class subsets:
    ``subsets`` (``table_parts``' ``classes``: a benchmark's from its rows), else those of the
    run's ``config`` (:func:`~transferkit.tables.class_subsets`)."""
    splits = {r.get("split", "test") for r in rows}
    what = ("target validation accuracy" if splits == {"val"} else "target test accuracy" if splits <= {"test"}
            else "target accuracy on the split each row names (validation or test)")
    also = []  # what else the lines under the table say (other metrics, GZSL) is theirs to say
    if any("ci95" in r for r in rows):
        also.append("a row over episodes: its 95 % interval")
    subsets = class_subsets(config) if subsets is None else subsets
    if subsets:
        also.append(subsets)
    return (f"the accuracy column is {what}, mean ± standard error over seeds (n)"
            + (f"; {'; '.join(also)}" if also else "") + ".")
CHECK_IMAGES = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken-images',
    imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length);
});
</script>"""


def _config_files(run_dir: Path, stored) -> str:
    """The ``config.yaml`` files under ``run_dir`` that say something the config results.json
    stores does not (a run's own file is that config, with its name and out_dir): a benchmark's
    runs, or a run's file changed since its rows were written (e.g. a narrowing resume that failed).
    The first ``MAX_FIGURES`` of them; a last comment line names those left out (and those that are
    symbolic links out of ``run_dir``, not shown)."""
    same = yaml.safe_load(yaml.safe_dump(stored, sort_keys=False)) if isinstance(stored, dict) else None
    differing = []
    left_out: list[str] = []
    for sub in _inside(sorted(run_dir.rglob("config.yaml")), run_dir, "config.yaml files", left_out):
        text = sub.read_text(encoding="utf-8")
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
        if same is None or not isinstance(parsed, dict) or parsed != same:
            differing.append((sub, text))
    out = ""
    for sub, text in _capped(differing, MAX_FIGURES, "config.yaml files", left_out,
                             name=lambda d: str(d[0].relative_to(run_dir))):
        why = (" (differs from the config above, which results.json stores and its rows were made with)"
               if sub.parent == run_dir and same is not None else "")
        out += f"\n# {sub.relative_to(run_dir)}{why}\n" + text
    return out + "".join(f"\n# {line}\n" for line in left_out)


def _failed_status(failed: list) -> list[str]:
    """The line at the top of a report whose results.json names failed jobs: how many, which (the first
    :data:`~transferkit.errors.NAMED`, the rest counted)."""
    if not failed:
        return []
    names = [str(f.get("job")) if isinstance(f, dict) else str(f) for f in failed]
    return [f"{len(failed)} job(s) failed and have no row in the table: {first_named(names, 'jobs')} (their errors "
            f"are under the table)."]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report_files/``) for the
    run or benchmark in ``run_dir``; return their paths. A ``report_files`` there that is a
    symbolic link is refused (the report removes its older figures in it)."""
    run_dir = Path(run_dir)
    data = unfinished_run(run_dir)  # a stopped run's finished jobs, read once
    where = run_dir / "jobs" if data is not None else check_run_dir(run_dir)
    data = data or read_results(where)
    rows = with_revisions(data["rows"], data.get("config"))  # rows of an older revision apart in the tables
    out_dir = Path(out) if out else run_dir
    files_dir = out_dir / "report_files"
    check(not files_dir.is_symlink() and resolves_inside(files_dir, out_dir),
          f"{files_dir} is a symbolic link (to {files_dir.resolve()}): the report writes its figures there and "
          f"removes older ones, and does not follow links out of its folder; remove the link (the report makes "
          f"the folder)")
    summary = summarize(rows)
    notes: list[str] = []
    import matplotlib
    with matplotlib.rc_context({"text.parse_math": False}):  # a '$' in a name is text, not mathtext
        figures = (label_efficiency_figures(rows) + per_unit_figures(rows, notes)
                   + training_curve_figures(run_dir, notes) + confusion_figures(rows, notes)
                   + (cost_figure(summary, rows) if rows else []) + saved_figures(run_dir, files_dir, notes))
    header, table = _table_rows(summary, rows)
    config = data.get("config") if isinstance(data.get("config"), dict) else None
    parts = [table_parts(summary, rows, config, markdown=m) for m in (True, False)]  # results.md's lines
    picks, plain, subsets = parts[0]["notes"], parts[1]["notes"], parts[1]["classes"]
    failed = data.get("failed") if isinstance(data.get("failed"), list) else []
    status = stopped_lines(data) + _failed_status(failed)  # at the top: a reader sees first what the table lacks
    shown = yaml.safe_dump(data.get("config", {}), sort_keys=False)
    if data.get("environment"):
        shown += "\n# environment (results.json)\n" + yaml.safe_dump({"environment": data["environment"]},
                                                                     sort_keys=False)
    shown += _config_files(run_dir, data.get("config"))
    title = f"transferkit report: {data.get('name', run_dir.name)}"
    note = metric_note(rows, config, subsets)

    cells = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in header)
    body_rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table)
    figs_html = "".join(
        f'<figure><img alt="{html.escape(cap)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, png in figures)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}
th {{ background: #eef; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
figure img {{ max-width: 32em; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.8em; color: #555; }}
pre {{ background: #f6f6f6; padding: 0.8em; font-size: 0.8em; max-height: 25em; overflow: auto; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{"".join(f"<p>{html.escape(line)}</p>" for line in status)}
<p>{len(rows)} results from <code>{html.escape(str(where))}</code>; {html.escape(note)}</p>
<h2>Results</h2>
<table id="results"><thead><tr>{cells}</tr></thead><tbody>{body_rows}</tbody></table>
{"".join(f"<p>failed: {html.escape(failed_line(f))}</p>" for f in failed)}
{"".join(f"<p>{html.escape(p)}</p>" for p in plain)}
<h2>Figures</h2>
{figs_html or "<p>no figures</p>"}{"".join(f"<p>{html.escape(n)}</p>" for n in notes)}
<h2>Configuration</h2>
<pre>{html.escape(shown)}</pre>
{CHECK_IMAGES}
</body></html>
"""
    html_path = write_text(out_dir / "report.html", page)

    files_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {md_cell(title)}", "", *(x for line in status for x in (md_cell(line), "")),
          f"{len(rows)} results; {note}", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in table]
    md += [line for f in failed for line in ("", f"failed: {md_cell(failed_line(f))}")]
    md += [line for p in picks for line in ("", p)]
    md += ["", "## Figures", ""]
    names = [f"figure{i:02d}.png" for i in range(len(figures))]
    for name, (cap, png) in zip(names, figures):
        atomic_write(files_dir / name, lambda p, png=png: p.write_bytes(png))
        alt = md_cell(cap) if "](" in cap else re.sub(r"([][])", r"\\\1", md_cell(cap))  # a ] would end it
        md += [f"![{alt}](report_files/{name})", ""]
    md += [line for n in notes for line in (f"{md_cell(n)}.", "")]  # a paragraph each, names escaped
    fence = "`" * max(3, 1 + max(map(len, re.findall("`+", shown)), default=0))  # longer than any ``` in a value
    md += ["## Configuration", "", f"{fence}yaml", shown.rstrip(), fence, ""]
    md_path = write_text(out_dir / "report.md", "\n".join(md))
    for stale in files_dir.glob("figure*.png"):  # of an earlier report with more figures; after report.md, so a
        if stale.name not in names:  # failed write leaves the old report.md with its images
            stale.unlink()
    return html_path, md_path
