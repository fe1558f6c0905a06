"""Figures: a grid of sample images per class (``transferkit show DOMAIN --out grid.png``), per-unit
accuracy, units picked, t-SNE and accuracy-vs-k. Each function writes a PNG to ``path`` and returns
the path, or, given ``path=None``, returns the matplotlib ``Figure`` (shown inline in a notebook;
``fig.savefig("f.pdf", dpi=300)`` for other formats)."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .domain import Domain
from .errors import check
from .evaluate import mean_se, unique_ids
from .io import atomic_write

#: one marker per curve beside its colour (grayscale, colour-blind readers): 11 markers against
#: matplotlib's 10 colours, so that a (colour, marker) pair repeats only after 110 curves
MARKERS = "osD^<>pPXh*"  # no "v": per_unit_accuracy_plot marks the best candidate with it
#: the room (inches) beside the axes for the legend of a per-unit or accuracy-vs-k figure
LEGEND_IN = 1.5


def sample_grid(domain: Domain, path: str | os.PathLike | None, per_class: int = 8, seed: int = 0,
                title: str | None = None):
    """Write a PNG with one row per class (labelled by class name) showing up to
    ``per_class`` randomly chosen images of that class (chosen with ``seed``); ``title``: the
    figure's (default: the domain's name and counts)."""
    from .splits import subsample_per_class

    check(per_class >= 1, f"per_class must be >= 1, got {per_class}")
    check_png(path, "sample grid")
    check(len(domain) > 0, f"domain {domain.name!r} is empty; nothing to plot")
    check(domain.images.shape[1] in (1, 3), f"domain {domain.name!r}: can draw 1- or 3-channel images, got "
                                            f"{domain.images.shape[1]} channels")
    sub = subsample_per_class(domain, min(per_class, int(domain.class_counts().max())), seed)
    per_class = int(sub.class_counts().max())  # as wide as the largest row (a group of frames stays whole)
    order = torch.argsort(sub.labels, stable=True)
    images, labels = sub.images[order], sub.labels[order]
    classes = sub.present_classes()
    _, c, h, w = images.shape
    gap = max(1, w // 14)
    rows = []
    for cls in classes:
        row = torch.ones(c, h, per_class * (w + gap) - gap)
        sel = images[labels == cls]
        for j, im in enumerate(sel):
            row[:, :, j * (w + gap): j * (w + gap) + w] = im
        rows.append(row)

    cell = 0.5 if h <= 64 else 1.0
    label_in = 0.2 + 0.075 * max(len(domain.class_names[c]) for c in classes)
    width = label_in + 0.1 + per_class * cell
    fig = new_figure(width, 0.35 + len(classes) * cell * 1.02)
    axes = fig.subplots(len(classes), 1, squeeze=False)[:, 0]
    for ax, cls, row in zip(axes, classes, rows):
        arr = row.permute(1, 2, 0).clamp(0, 1).numpy()
        if c == 1:
            ax.imshow(arr[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(arr, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(domain.class_names[cls], rotation=0, ha="right", va="center", fontsize=9)
    height = fig.get_figheight()  # the title in the top 0.35 in, whatever the figure's height
    fig.suptitle(title or f"{domain.name}  ({len(domain)} images, {domain.num_classes} classes)", fontsize=9,
                 y=1 - 0.08 / height, va="top")
    fig.subplots_adjust(left=label_in / width, right=1 - 0.05 / width,
                        top=1 - 0.35 / height, bottom=0.02, hspace=0.08)
    return save_png(fig, path, 100, "sample grid", f"sample images of {domain.name}, up to {per_class} per class, "
                                                   f"one row per class")


def check_png(path: str | os.PathLike | None, what: str) -> None:
    """``path`` names a ``*.png`` file, not a directory (or is None: the figure is handed back)."""
    if path is None:
        return
    check(isinstance(path, (str, os.PathLike)), f"the {what} goes to a *.png path (or path=None for the figure "
                                                f"itself), got {type(path).__name__}")
    check(Path(path).suffix.lower() == ".png", f"the {what} is a PNG image: name it *.png, got {str(path)!r}")
    check(not Path(path).is_dir(), f"the {what} goes to a file; {str(path)!r} is a directory")
    above = next((p for p in Path(path).parents if p.exists()), None)  # the folders to make must not be files
    check(above is None or above.is_dir(), f"the {what} goes to {str(path)!r}, but {str(above)!r} is a file, "
                                           f"not a folder")


#: the PNG text key of a saved figure's ``description``: the report's alt text for it
DESCRIPTION_KEY = "Description"


def save_png(fig, path: str | os.PathLike | None, dpi: int, what: str, description: str = ""):
    """Write ``fig`` to ``path`` (a ``*.png`` file, not a directory) atomically and return the
    path; ``path=None``: return the matplotlib ``Figure`` (a notebook shows it; ``fig.savefig``
    writes it in any format and resolution). ``description`` (what the figure shows) is kept in the
    PNG's text (:data:`DESCRIPTION_KEY`), which the report gives as the figure's alt text."""
    if path is None:
        return fig
    check_png(path, what)
    metadata = {DESCRIPTION_KEY: description} if description else None
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi, metadata=metadata))
    return Path(path)


def new_figure(width: float, height: float, dpi: float = 100):
    """A matplotlib figure on the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def best_index(values: list[float], losses: list[float] | None = None) -> int:
    """Index of the largest value; on ties the lowest of ``losses`` (flex's rule), then the
    first one; NaN never counts as the largest (nor as the lowest loss)."""
    def loss(j):
        return math.inf if losses is None or math.isnan(losses[j]) else losses[j]
    return max(range(len(values)), key=lambda j: (-math.inf if math.isnan(values[j]) else values[j], -loss(j), -j))


def per_unit_accuracy_plot(rows: list[dict], path: str | os.PathLike | None, title: str = ""):
    """Accuracy per unit. Flex rows (seed 002 Figure 1): validation (solid) and test (dashed)
    accuracy of tuning each single unit (and all units), one colour per ``ratio`` (rows without
    one form one group), mean over seeds; a marker on the candidate with the best mean
    validation accuracy (ties: the lower mean validation loss, as flex breaks them). They carry
    ``candidate_val_accuracy`` (and ``candidate_test_accuracy``, ``candidate_val_loss``); rows
    without it (a run's other methods) are left out and not counted in the legend's n. Rows of
    several methods, sources or targets, or of several settings under one ratio, are refused.
    Rows of :func:`~transferkit.methods.tap.tap` (``unit``, ``svm_accuracy``,
    ``softmax_accuracy``): the test accuracy of each classifier per unit, mean ± standard error
    over the rows of a unit (e.g. the ``tap`` rows of several label subsets; n in the legend)."""
    check(isinstance(rows, (list, tuple)) and len(rows) > 0 and all(isinstance(r, dict) for r in rows),
          "per_unit_accuracy_plot: rows must be a non-empty list of dicts (flex rows, or tap(...)'s rows)")
    if all("unit" in r for r in rows):
        return _tap_plot(rows, path, title)
    cands = list(dict.fromkeys(c for r in rows for c in r.get("candidate_val_accuracy", {})))
    check(len(cands) > 0, "per_unit_accuracy_plot takes flex rows, with candidate_val_accuracy (unit -> accuracy) "
                          "and optionally candidate_test_accuracy and ratio, or tap(...)'s rows, with unit and "
                          f"<classifier>_accuracy; got rows with keys {sorted(rows[0])}")
    rows = [r for r in rows if r.get("candidate_val_accuracy")]  # a run's other methods' rows have none
    _check_one_curve_set(rows)

    def mean_over(rs, key, c):  # rows without this candidate (another candidate set) do not count
        values = [r[key][c] for r in rs if c in r.get(key, {})]
        return sum(values) / len(values) if values else float("nan")

    fig = new_figure(1.2 + 0.8 * len(cands) + LEGEND_IN, 3.2)
    ax = fig.subplots()
    ratios = list(dict.fromkeys(r.get("ratio") for r in rows))
    for i, ratio in enumerate(sorted(ratios, key=lambda v: (v is None, v if v is not None else 0))):
        rs = [r for r in rows if r.get("ratio") == ratio]
        val = [mean_over(rs, "candidate_val_accuracy", c) for c in cands]
        test = [mean_over(rs, "candidate_test_accuracy", c) for c in cands]
        colour, marker, label = f"C{i % 10}", MARKERS[i % len(MARKERS)], "" if ratio is None else f"~{ratio}/class "
        ax.plot(range(len(cands)), val, "-", marker=marker, color=colour, ms=3, label=f"{label}val (n={len(rs)})")
        if not all(math.isnan(t) for t in test):  # a lone point too; hollow markers, dashed
            ax.plot(range(len(cands)), test, "--", marker=marker, mfc="none", color=colour, ms=4, label=f"{label}test")
        best = best_index(val, [mean_over(rs, "candidate_val_loss", c) for c in cands])
        ax.plot([best], [val[best]], "v", color=colour, ms=9, mec="k", label="best on val" if i == 0 else None)
    ax.set_xticks(range(len(cands)), cands)
    ax.set_xlabel("tuned unit")
    return _finish_unit_plot(fig, ax, path, title, "validation and test accuracy of fine-tuning each unit alone "
                                                   "(flex's candidates), its pick marked")


def _check_one_curve_set(rows: list[dict]) -> None:
    """Refuse flex rows of several methods, sources, targets, or settings under one ratio:
    the per-unit means would silently average across them."""
    ratios = dict.fromkeys(r.get("ratio") for r in rows)  # in the rows' order: the first mixed one is named
    mixed = [(key, sorted({str(r[key]) for r in rs if key in r})) for key, rs in
             [(k, rows) for k in ("method", "source", "target")]
             + [("setting", [r for r in rows if r.get("ratio") == ratio]) for ratio in ratios]]
    for key, values in mixed:
        check(len(values) < 2, f"per_unit_accuracy_plot: the rows with candidate_val_accuracy mix {key}s "
                               f"{', '.join(values)}, whose means it would average; pass the rows of one {key}, "
                               f"e.g. [r for r in rows if r['{key}'] == {values[0] if values else ''!r}]")


def _tap_plot(rows: list[dict], path, title: str):
    """Test accuracy of each tap classifier per unit (mean over the rows of a unit)."""
    kinds = list(dict.fromkeys(k[:-len("_accuracy")] for r in rows for k in r if k.endswith("_accuracy")))
    check(len(kinds) > 0, "per_unit_accuracy_plot: tap rows need <classifier>_accuracy values (svm_accuracy, "
                          f"softmax_accuracy) beside unit; got keys {sorted(rows[0])}")
    units = list(dict.fromkeys(str(r["unit"]) for r in rows))
    fig = new_figure(1.2 + 0.8 * len(units) + LEGEND_IN, 3.2)
    ax = fig.subplots()
    for i, kind in enumerate(kinds):
        stats = []
        for u in units:
            values = [r[f"{kind}_accuracy"] for r in rows if str(r["unit"]) == u and f"{kind}_accuracy" in r]
            stats.append((mean_se(values), len(values)) if values else ((float("nan"), 0.0), 0))
        means = [m for (m, _), _ in stats]
        n = max(count for _, count in stats)
        ax.plot(range(len(units)), means, "-", marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", ms=3,
                label=f"{kind} (test, n={n})")
        if n > 1:  # the standard error over the rows (seeds, label subsets) of each unit
            ax.errorbar(range(len(units)), means, yerr=[se for (_, se), _ in stats], fmt="none",
                        ecolor=f"C{i % 10}")
    ax.set_xticks(range(len(units)), units)
    ax.set_xlabel("tapped unit")
    return _finish_unit_plot(fig, ax, path, title, "test accuracy of each tap classifier per tapped unit")


def _finish_unit_plot(fig, ax, path, title: str, shows: str):
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(percent_ticks())
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: over no curve
    fig.tight_layout()
    return save_png(fig, path, 110, "per-unit accuracy figure", shows + (f", {title}" if title else ""))


def units_picked_plot(rows: list[dict], targets: list[str], path: str | os.PathLike | None):
    """Seed 002 Figure 2: one row per target, one column per flex candidate (units, then
    ``all``; every candidate of any row). Background: the mean over the target's ratios of
    each candidate's rank by mean *test* accuracy (darker = better; a target run at fewer
    ratios is on the same scale; a candidate no row of a ratio has ranks last there);
    markers: how often flex (v), fast_flex's proxy choice (D) and faster_flex (^) picked
    each unit, over ratios and seeds (marker area ~ count)."""
    flex_rows = [r for r in rows if r["method"] == "flex"]
    check(len(flex_rows) > 0, "units_picked_plot: no flex rows")
    lacking = next((r for r in flex_rows if not ("candidate_test_accuracy" in r and "ratio" in r)), None)
    check(lacking is None, "units_picked_plot draws the flex rows of `transferkit bench flex`, which carry "
                           "candidate_test_accuracy and ratio; a run's flex rows have candidate_val_accuracy: "
                           "per_unit_accuracy_plot draws those")
    units = list(dict.fromkeys(u for r in flex_rows for u in r["candidate_test_accuracy"]))
    targets = [t for t in targets if any(r["target"] == t for r in flex_rows)]
    check(len(targets) > 0, "units_picked_plot: none of the targets has a flex row")
    rank = torch.zeros(len(targets), len(units))
    for i, t in enumerate(targets):
        ratios = {r["ratio"] for r in flex_rows if r["target"] == t}
        for ratio in ratios:
            rs = [r for r in flex_rows if r["target"] == t and r["ratio"] == ratio]
            have = [[r["candidate_test_accuracy"][u] for r in rs if u in r["candidate_test_accuracy"]] for u in units]
            mean = torch.tensor([sum(v) / len(v) if v else -math.inf for v in have])
            rank[i] += torch.argsort(torch.argsort(-mean, stable=True)).float() / len(ratios)
    fig = new_figure(2.5 + 0.9 * len(units), 0.9 + 0.38 * len(targets))
    ax = fig.subplots()
    ax.imshow(-rank.numpy(), cmap="Greys", aspect="auto")
    for k, (method, key, marker, colour) in enumerate((("flex", "picked", "v", "tab:red"),
                                                        ("fast_flex", "proxy_unit", "D", "tab:green"),
                                                        ("faster_flex", "picked", "^", "tab:blue"))):
        xs, ys, sizes = [], [], []
        for i, t in enumerate(targets):
            picks = [r.get(key) for r in rows if r["method"] == method and r["target"] == t]
            for j, u in enumerate(units):
                n = picks.count(u)
                if n:
                    xs.append(j + (k - 1) * 0.25)
                    ys.append(i)
                    sizes.append(12 + 60 * n / max(1, len(picks)))
        ax.scatter(xs, ys, s=sizes, marker=marker, color=colour, edgecolors="k", linewidths=0.4)
        ax.scatter([], [], s=40, marker=marker, color=colour, edgecolors="k", linewidths=0.4, label=method)
    ax.set_xticks(range(len(units)), units)
    ax.set_yticks(range(len(targets)), targets, fontsize=7)
    ax.set_title("units picked (markers) over test-accuracy rank of each unit (darker = better)", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return save_png(fig, path, 110, "units-picked figure", "the units each flex method picked, per target, over "
                                                            "each unit's test-accuracy rank")


def _panel_sets(name, value) -> list[torch.Tensor]:
    """A panel's point sets: one ``N x D`` array, or a (source, target) pair of them."""
    pair = isinstance(value, (tuple, list)) and len(value) == 2 and all(hasattr(v, "shape") for v in value)
    check(pair or hasattr(value, "shape"),
          f"tsne_embeddings: panel {name!r} must be an N x D array of features (a tensor or NumPy array) or a pair "
          f"(source_features, target_features) of them, got {type(value).__name__}"
          f"{f' of {len(value)} items' if isinstance(value, (tuple, list)) else ''}")
    sets = [torch.as_tensor(f).detach().cpu() for f in (value if pair else [value])]  # NumPy, autograd, GPU too
    check(all(f.dim() >= 2 and len(f) > 0 for f in sets) and len({math.prod(f.shape[1:]) for f in sets}) == 1,
          f"tsne_embeddings: panel {name!r} needs N x D {'source and target ' if pair else ''}features"
          f"{' of one size D' if pair else ''}, got shapes {', '.join(str(tuple(f.shape)) for f in sets)}")
    return sets


#: the drawing style of :func:`tsne_embeddings`' figures: bump it whenever their drawing changes (markers, colours,
#: legend, layout), so that a resumed benchmark redraws a kept figure (``bench.kept_tsne`` keys figures by it).
#: 2: target points as crosses, long legend names shortened in the middle
TSNE_STYLE = 2


def tsne_embeddings(panels, path: str | os.PathLike | None, title: str = "", seed: int = 0,
                    domain_names: tuple[str, str] = ("source", "target"), labels=None):
    """Seed 000 Figure 4: t-SNE of embeddings, one panel per network (e.g. before and after
    adaptation). ``panels``: ``name -> (source_features, target_features)`` (source blue o, target orange x) or
    ``name -> features`` (one set), each ``N x D``; a single array is one panel. ``labels``: class
    ids or names per point (source then target, or a pair ``(source_labels, target_labels)``), one
    for every panel or a dict ``name -> labels`` (of panels it has); the points are then coloured by
    class (source o, target x), one colour per class over all the panels (a panel of classes 1 and 2
    draws them as the legend does), and the legend, beside the panels, names the classes (up to 20,
    each its own colour: tab10, tab20 above 10 classes) and the two markers; above 20 classes the
    colours repeat and the title says so. A panel left out of a ``labels`` dict is drawn grey. Each
    panel gets its own t-SNE (``seed``), perplexity 30 (lowered to ``(n - 1) / 3`` for fewer than 91
    points)."""
    from sklearn.manifold import TSNE

    if hasattr(panels, "shape"):
        panels = {"": panels}
    check(isinstance(panels, dict) and len(panels) > 0,
          f"tsne_embeddings: panels must be a dict name -> features (or -> (source, target) features), got "
          f"{type(panels).__name__ if not isinstance(panels, dict) else 'an empty dict'}")
    check_png(path, "t-SNE figure")  # before the t-SNE runs
    check(isinstance(domain_names, (tuple, list)) and len(domain_names) == 2,
          f"tsne_embeddings: domain_names must be two names (source, target), got {domain_names!r}")
    unknown = [k for k in labels if k not in panels] if isinstance(labels, dict) else []
    check(not unknown, f"tsne_embeddings: labels name panel(s) {unknown} that panels do not have; the panels are "
                       f"{list(panels)}")
    sets = {name: _panel_sets(name, value) for name, value in panels.items()}
    names, classes = _class_ids({name: _point_labels(name, labels, [len(f) for f in fs])
                                 for name, fs in sets.items()})
    labelled = names is not None
    paired = any(len(fs) == 2 for fs in sets.values())  # the legend then names the two domains' markers
    shown = len(names) if labelled and len(names) <= 20 else 0  # classes the legend names
    texts = [legend_name(str(n)) for n in [*(domain_names if paired else []), *(names if shown else [])]]
    columns = 1 if len(texts) <= 12 else 2  # a 3.5 in tall legend holds about 12 entries per column
    column_in = max([1.2] + [0.5 + 0.055 * len(n) for n in texts])  # 7-pt text: about 0.055 in a character
    fig = new_figure(3.2 * len(panels) + (column_in * columns if labelled else 0), 3.5)  # the legend beside
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, fs) in zip(axes, sets.items()):
        x = np.empty((sum(len(f) for f in fs), math.prod(fs[0].shape[1:])))  # float64, filled set by set
        for f, part in zip(fs, np.split(x, np.cumsum([len(f) for f in fs])[:-1])):
            torch.from_numpy(part).copy_(f.flatten(1))
        check(len(x) >= 4, f"tsne_embeddings: panel {name!r} has {len(x)} points; t-SNE needs at least 4")
        check(bool(np.isfinite(x).all()), f"tsne_embeddings: panel {name!r} has NaN or infinite features")
        check(bool((x != x[0]).any()), f"tsne_embeddings: panel {name!r} has identical features for every point "
                                       f"(a collapsed network?); t-SNE cannot place them")
        perplexity = min(30.0, (len(x) - 1) / 3)
        init = "pca" if x.shape[1] >= 2 else "random"  # PCA to 2-D needs 2 features
        z = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(x)
        ends = np.cumsum([0] + [len(f) for f in fs])
        ids = classes.get(name)
        for j, (a, b) in enumerate(zip(ends[:-1], ends[1:])):
            if not labelled:
                ax.scatter(z[a:b, 0], z[a:b, 1], s=3 if j == 0 else 6, marker="ox"[j], alpha=0.6,
                           c=f"tab:{('blue', 'orange')[j]}", label=domain_names[j] if len(fs) == 2 else None)
            elif ids is None:  # a panel the labels dict leaves out: no class colours to show
                ax.scatter(z[a:b, 0], z[a:b, 1], s=3 if j == 0 else 6, marker="ox"[j], alpha=0.6, color="0.6")
            else:
                for c in np.unique(ids[a:b]):
                    mine = np.flatnonzero(ids[a:b] == c) + a
                    ax.scatter(z[mine, 0], z[mine, 1], s=3 if j == 0 else 6, marker="ox"[j], alpha=0.6,
                               color=class_colour(int(c), len(names)))
        ax.set_title(str(name) + (" (no labels)" if labelled and ids is None else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if labelled:  # classes by colour (one map over all panels), domains by marker, beside the panels
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], ls="none", marker=m, color="0.4", ms=2.5) for m in "ox"] if paired else []
        handles += [Line2D([], [], ls="none", marker="o", color=class_colour(c, len(names)), ms=2.5)
                    for c in range(shown)]  # first: which marker is which domain is never cut off
        if handles:
            axes[-1].legend(handles, texts, fontsize=7, markerscale=2, loc="upper left",
                            bbox_to_anchor=(1.02, 1), borderaxespad=0, ncol=columns)
        if len(names) > 20:
            title = (f"{title}\n" if title else "") + f"{len(names)} classes: colours repeat every 20 (not named)"
    elif axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, markerscale=3, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    shown = f"{domain_names[0]} and {domain_names[1]} embeddings" if paired else "embeddings"
    described = f"t-SNE of {shown}" + (f", panels: {', '.join(map(str, panels))}" if any(map(str, panels)) else "")
    return save_png(fig, path, 110, "t-SNE figure", described + (f" ({title})" if title else ""))


def legend_name(text: str, limit: int = 28) -> str:
    """``text`` for a legend beside the axes: at most ``limit`` characters, a longer one shortened in
    the middle (``"a very long c…r 1 of the set"``: its start and its end, where numbers often are, stay)."""
    return text if len(text) <= limit else text[:limit // 2 - 1] + "…" + text[-(limit - limit // 2):]


def class_colour(c: int, n_classes: int):
    """Class ``c``'s colour among ``n_classes``: tab10's for up to 10 classes, else tab20's, its
    dark shades for classes 0-9 (tab10's colours) and its light ones for 10-19; repeats every 20."""
    from matplotlib import colormaps

    if n_classes <= 10:
        return f"C{c}"
    return colormaps["tab20"].colors[2 * (c % 10) + (c // 10) % 2]


def _point_labels(name, labels, sizes: list[int]):
    """A panel's labels (one per point of its feature sets of ``sizes``) as a 1-D array, or
    ``None``; a pair ``(source_labels, target_labels)`` for a pair of sets is joined."""
    mine = labels.get(name) if isinstance(labels, dict) else labels
    if mine is None:
        return None
    as_array = lambda v: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)  # noqa: E731
    if isinstance(mine, (tuple, list)) and len(mine) == len(sizes) == 2 \
            and all(not isinstance(v, str) and hasattr(v, "__len__") for v in mine):
        parts = [as_array(v) for v in mine]
        check([len(v) for v in parts] == sizes, f"tsne_embeddings: panel {name!r} has {sizes[0]} source and "
                                                f"{sizes[1]} target points but {len(parts[0])} and {len(parts[1])} "
                                                f"labels; give one label per point")
        mine = np.concatenate(parts)
    values, n = as_array(mine), sum(sizes)
    check(values.ndim == 1 and len(values) == n,
          f"tsne_embeddings: panel {name!r} has {n} points (source then target) but {values.size} labels of shape "
          f"{values.shape}; give one label per point")
    missing = int(np.isnan(values).sum()) if values.dtype.kind == "f" else 0
    check(not missing, f"tsne_embeddings: panel {name!r}'s labels: {missing} of the {n} are NaN (missing); give "
                       f"every point a label")
    unique_ids(values, f"tsne_embeddings: panel {name!r}'s labels", "or no labels (labels=None)")  # not both kinds
    return values


def _class_ids(labels: dict) -> tuple[np.ndarray | None, dict]:
    """``(class names, {panel: class index per point})`` over every panel's labels together (one
    class, one index in every panel); ``(None, {})`` where no panel has labels."""
    given = {name: v for name, v in labels.items() if v is not None}
    if not given:
        return None, {}
    names, ids = unique_ids(np.concatenate([v.astype(object) for v in given.values()]),  # "1" is not 1
                            "tsne_embeddings: the panels' labels together")
    ends = np.cumsum([0] + [len(v) for v in given.values()])
    return names, {name: ids[a:b].numpy() for name, a, b in zip(given, ends[:-1], ends[1:])}


def grouped_rows(rows: list[dict]) -> bool:
    """Rows of a grouped (video) target: they carry ``group_accuracy`` or ``n_test_groups``."""
    return any(r.get("group_accuracy") is not None or r.get("n_test_groups") is not None for r in rows)


def k_axis_label(rows: list[dict], settings) -> str:
    """The x-axis of a label-efficiency curve over ``settings``: labelled images per class, or on a
    grouped (video) target, whose ``k=`` settings count groups, labelled groups per class."""
    ks = [str(s).startswith("k=") for s in settings]
    if not grouped_rows(rows) or not any(ks):
        return "labelled target images per class"
    return "labelled target groups (videos) per class" if all(ks) else "labelled target groups (k) or images per class"


def percent_ticks():
    """A tick formatter that writes an accuracy held as a fraction in %, as the tables give it (0.85: 85%)."""
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1)


def draw_accuracy_curves(ax, curves: dict, group_curves: dict | None = None) -> None:
    """A label-efficiency curve per method of ``curves`` (``{method: [(x, mean, standard error)]}``,
    in the caller's order; a colour and a marker per method, see :data:`MARKERS`), with the same method's
    ``group_curves`` (per-group accuracy of a grouped target) dashed in its colour; whole-number
    ticks where every x is whole (k = 2, 3: no tick at 2.5)."""
    from matplotlib.ticker import MaxNLocator

    group_curves = group_curves or {}
    for i, (method, pts) in enumerate(curves.items()):
        marker, pts = MARKERS[i % len(MARKERS)], sorted(pts)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker=marker, ms=4,
                    capsize=3, color=f"C{i % 10}", label=method)
        pts = sorted(group_curves.get(method, []))
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker=marker, ms=4,
                        capsize=3, ls="--", mfc="none", color=f"C{i % 10}", label=f"{method} (per group)")
    xs = sorted({p[0] for pts in curves.values() for p in pts})
    if len(xs) == 1:  # one k: its tick alone (a locator over the padded view ticks 1.900, 1.925, ...)
        ax.set_xticks(xs)
    elif all(float(x).is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_vs_k_plot(rows: list[dict], path: str | os.PathLike | None, title: str = ""):
    """Label efficiency: test accuracy (mean ± standard error over label subsets) against the
    number k of labelled target images per class, one line per method. ``rows`` carry
    ``method``, ``setting`` (``k=K``) and ``accuracy``; rows of a grouped (video) target
    (``group_accuracy`` or ``n_test_groups``), where k counts labelled groups per class, are drawn
    against groups per class, with their ``group_accuracy`` dashed beside the per-image accuracy."""
    check(len(rows) > 0, "accuracy_vs_k_plot: no rows")
    bad = sorted({str(r.get("setting")) for r in rows if not re.fullmatch(r"k=(0|[1-9][0-9]*)", str(r.get("setting")))})
    check(not bad, f"accuracy_vs_k_plot needs rows with setting 'k=K' (K a whole number, as a run writes it: no "
                   f"leading zero), got {bad}")
    for key in ("source", "target", "run"):
        values = list(dict.fromkeys(str(r[key]) for r in rows if key in r)) or [""]
        check(len(values) < 2, f"accuracy_vs_k_plot: the rows mix {key}s {', '.join(values)}, which one curve per "
                               f"method would average; pass the rows of one {key}, e.g. "
                               f"[r for r in rows if r['{key}'] == {values[0]!r}]")
    seeds = [(r["method"], r["setting"], r["seed"]) for r in rows if "seed" in r]
    twice = next((s for s, n in Counter(seeds).items() if n > 1), None)
    check(twice is None, f"accuracy_vs_k_plot: rows of {twice and twice[0]} at {twice and twice[1]} repeat seed "
                         f"{twice and twice[2]} (runs merged twice?): the standard error would count one run as two")
    fig = new_figure(5.0, 3.4)
    ax = fig.subplots()
    ax.yaxis.set_major_formatter(percent_ticks())
    curves, group_curves = {}, {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ks = sorted({int(r["setting"].split("=")[1]) for r in mine})
        curves[method] = [(k, *mean_se(r["accuracy"] for r in mine if r["setting"] == f"k={k}")) for k in ks]
        per_group = {k: [r["group_accuracy"] for r in mine if r["setting"] == f"k={k}"
                         and r.get("group_accuracy") is not None] for k in ks}
        group_curves[method] = [(k, *mean_se(v)) for k, v in per_group.items() if v]
    grouped = any(group_curves.values())
    draw_accuracy_curves(ax, curves, group_curves)
    ax.set_xlabel(k_axis_label(rows, [r["setting"] for r in rows]) + " (k)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(title + ("\n" if title and grouped else "")
                 + ("solid: per-image accuracy, dashed: per-group (video) accuracy" if grouped else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_png(fig, path, 110, "accuracy-vs-k figure", "accuracy against labels per class (k), one line per "
                                                             "method" + (f", {title}" if title else ""))
