"""Figures: a grid of sample images per class (``transferkit show DOMAIN --out grid.png``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .domain import Domain
from .errors import check
from .io import atomic_write


def sample_grid(domain: Domain, path: str | os.PathLike, per_class: int = 8, seed: int = 0) -> Path:
    """Write a PNG with one row per class (labelled by class name) showing up to
    ``per_class`` randomly chosen images of that class (chosen with ``seed``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .splits import subsample_per_class

    check(per_class >= 1, f"per_class must be >= 1, got {per_class}")
    check(len(domain) > 0, f"domain {domain.name!r} is empty; nothing to plot")
    sub = subsample_per_class(domain, per_class, seed)
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
    fig = Figure(figsize=(width, 0.35 + len(classes) * cell * 1.02))
    FigureCanvasAgg(fig)
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
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    return Path(path)
