"""Figures: a grid of sample images per class (``transferkit show DOMAIN --out grid.png``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .domain import Domain
from .errors import check
from .io import atomic_write


def sample_grid(domain: Domain, path: str | os.PathLike, per_class: int = 8, seed: int = 0) -> Path:
    """Write a PNG with one row per class (labelled by class name) showing up to
    ``per_class`` randomly chosen images of that class (chosen with ``seed``)."""
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
    fig.suptitle(f"{domain.name}  ({len(domain)} images, {domain.num_classes} classes)", fontsize=9)
    fig.subplots_adjust(left=label_in / width, right=1 - 0.05 / width,
                        top=1 - 0.35 / fig.get_figheight(), bottom=0.02, hspace=0.08)
    return save_png(fig, path, 100, "sample grid")


def check_png(path: str | os.PathLike, what: str) -> None:
    """``path`` names a ``*.png`` file, not a directory."""
    check(Path(path).suffix.lower() == ".png", f"the {what} is a PNG image: name it *.png, got {str(path)!r}")
    check(not Path(path).is_dir(), f"the {what} goes to a file; {str(path)!r} is a directory")


def save_png(fig, path: str | os.PathLike, dpi: int, what: str) -> Path:
    """Write ``fig`` to ``path`` (a ``*.png`` file, not a directory) atomically."""
    check_png(path, what)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
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


def per_unit_accuracy_plot(flex_rows: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Seed 002 Figure 1: validation (solid) and test (dashed) accuracy of tuning each single
    unit (and all units), one colour per ratio, mean over seeds; a marker on the candidate
    with the best mean validation accuracy (ties: the lower mean validation loss, as flex
    breaks them). ``flex_rows`` carry ``candidate_val_accuracy`` and
    ``candidate_test_accuracy`` (and ``candidate_val_loss``)."""
    check(len(flex_rows) > 0, "per_unit_accuracy_plot: no flex rows")
    cands = list(dict.fromkeys(c for r in flex_rows for c in r.get("candidate_val_accuracy", {})))
    check(len(cands) > 0, "per_unit_accuracy_plot: the rows have no candidate_val_accuracy")

    def mean_over(rs, key, c):  # rows without this candidate (another candidate set) do not count
        values = [r[key][c] for r in rs if c in r.get(key, {})]
        return sum(values) / len(values) if values else float("nan")

    fig = new_figure(1.2 + 0.8 * len(cands), 3.2)
    ax = fig.subplots()
    for i, ratio in enumerate(sorted({r["ratio"] for r in flex_rows})):
        rs = [r for r in flex_rows if r["ratio"] == ratio]
        val = [mean_over(rs, "candidate_val_accuracy", c) for c in cands]
        test = [mean_over(rs, "candidate_test_accuracy", c) for c in cands]
        colour = f"C{i}"
        ax.plot(range(len(cands)), val, "-o", color=colour, ms=3, label=f"~{ratio}/class val (n={len(rs)})")
        ax.plot(range(len(cands)), test, "--", color=colour, label=f"~{ratio}/class test")
        best = best_index(val, [mean_over(rs, "candidate_val_loss", c) for c in cands])
        ax.plot([best], [val[best]], "v", color=colour, ms=9, mec="k", label="best on val" if i == 0 else None)
    ax.set_xticks(range(len(cands)), cands)
    ax.set_xlabel("tuned unit")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return save_png(fig, path, 110, "per-unit accuracy figure")


def units_picked_plot(rows: list[dict], targets: list[str], path: str | os.PathLike) -> Path:
    """Seed 002 Figure 2: one row per target, one column per flex candidate (units, then
    ``all``; every candidate of any row). Background: the mean over the target's ratios of
    each candidate's rank by mean *test* accuracy (darker = better; a target run at fewer
    ratios is on the same scale; a candidate no row of a ratio has ranks last there);
    markers: how often flex (v), fast_flex's proxy choice (D) and faster_flex (^) picked
    each unit, over ratios and seeds (marker area ~ count)."""
    flex_rows = [r for r in rows if r["method"] == "flex"]
    check(len(flex_rows) > 0, "units_picked_plot: no flex rows")
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
    return save_png(fig, path, 110, "units-picked figure")


def tsne_embeddings(panels: dict, path: str | os.PathLike, title: str = "", seed: int = 0,
                    domain_names: tuple[str, str] = ("source", "target")) -> Path:
    """Seed 000 Figure 4: t-SNE of source and target embeddings, one panel per network
    (e.g. before and after adaptation). ``panels``: ``name -> (source_features,
    target_features)``, each ``N x D``; each panel gets its own t-SNE (``seed``), perplexity 30
    (lowered to ``(n - 1) / 3`` for fewer than 91 points)."""
    from sklearn.manifold import TSNE

    check(len(panels) > 0, "tsne_embeddings: no panel")
    check_png(path, "t-SNE figure")  # before the t-SNE runs
    fig = new_figure(3.2 * len(panels), 3.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (fs, ft)) in zip(axes, panels.items()):
        fs, ft = (torch.as_tensor(f).detach().cpu() for f in (fs, ft))  # NumPy, autograd or GPU features too
        check(fs.dim() >= 2 and ft.dim() >= 2 and len(fs) > 0 and len(ft) > 0
              and math.prod(fs.shape[1:]) == math.prod(ft.shape[1:]),
              f"tsne_embeddings: panel {name!r} needs N x D source and target features of one size D, got shapes "
              f"{tuple(fs.shape)} and {tuple(ft.shape)}")
        x = torch.cat([fs.flatten(1), ft.flatten(1)]).double().numpy()
        check(len(x) >= 4, f"tsne_embeddings: panel {name!r} has {len(x)} points; t-SNE needs at least 4")
        check(bool(np.isfinite(x).all()), f"tsne_embeddings: panel {name!r} has NaN or infinite features")
        check(bool((x != x[0]).any()), f"tsne_embeddings: panel {name!r} has identical features for every point "
                                       f"(a collapsed network?); t-SNE cannot place them")
        perplexity = min(30.0, (len(x) - 1) / 3)
        init = "pca" if x.shape[1] >= 2 else "random"  # PCA to 2-D needs 2 features
        z = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(x)
        n = len(fs)
        ax.scatter(z[:n, 0], z[:n, 1], s=3, c="tab:blue", alpha=0.6, label=domain_names[0])
        ax.scatter(z[n:, 0], z[n:, 1], s=3, c="tab:orange", alpha=0.6, label=domain_names[1])
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, markerscale=3, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path, 110, "t-SNE figure")


def accuracy_vs_k_plot(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Label efficiency: test accuracy (mean ± standard error over label subsets) against the
    number k of labelled target examples per class, one line per method. ``rows`` carry
    ``method``, ``setting`` (``k=K``) and ``accuracy``."""
    from .evaluate import mean_se

    check(len(rows) > 0, "accuracy_vs_k_plot: no rows")
    bad = sorted({str(r.get("setting")) for r in rows if not str(r.get("setting", "")).startswith("k=")
                  or not str(r["setting"])[2:].isdigit()})
    check(not bad, f"accuracy_vs_k_plot needs rows with setting 'k=K', got {bad}")
    fig = new_figure(5.0, 3.4)
    ax = fig.subplots()
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        ks = sorted({int(r["setting"].split("=")[1]) for r in rows if r["method"] == method})
        stats = [mean_se(r["accuracy"] for r in rows if r["method"] == method and r["setting"] == f"k={k}")
                 for k in ks]
        ax.errorbar(ks, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", ms=3, capsize=2,
                    color=f"C{i % 10}", label=method)
    ax.set_xticks(sorted({int(r["setting"].split("=")[1]) for r in rows}))
    ax.set_xlabel("labelled target examples per class (k)")
    ax.set_ylabel("target test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_png(fig, path, 110, "accuracy-vs-k figure")
