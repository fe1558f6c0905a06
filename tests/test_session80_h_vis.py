"""Session 80, h_vis: a visual audit of the figures (plots.py, report.py). Covers: domains told apart by
marker as well as colour (grayscale, colour-blind readers) in the unlabelled t-SNE; legend names that fit
beside the t-SNE panels; a marker per method or ratio in the accuracy-vs-k and per-unit figures; accuracy
ticks in % as the tables and the report give it; legends beside the per-unit axes (never over the curves)."""

import torch

from tests.test_plots_fourth_mutation import same_marker
from transferkit import plots

A = torch.arange(16.0).reshape(8, 2)


def test_tsne_unlabelled_pair_draws_target_points_as_crosses_not_only_in_another_colour(fake_tsne):
    fig = plots.tsne_embeddings({"p": (A, A + 0.5)}, None)
    source, target = fig.axes[0].collections
    assert same_marker(source, "o") and same_marker(target, "x")
    handles = fig.axes[0].get_legend().legend_handles
    assert same_marker(handles[0], "o") and same_marker(handles[1], "x")


def _inside_figure(fig, artist) -> bool:
    fig.canvas.draw()
    box, page = artist.get_window_extent(), fig.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1


def test_tsne_legend_of_long_class_names_is_shortened_and_fits_in_the_figure(fake_tsne):
    x = torch.arange(80.0).reshape(40, 2)
    names = [f"a very long class name number {i} of the set" for i in range(20)]
    fig = plots.tsne_embeddings({"one": x}, None, labels=[names[i % 20] for i in range(40)])
    legend = fig.axes[0].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 20 and len(set(texts)) == 20 and max(map(len, texts)) <= 28
    assert texts[1] == "a very long c…r 1 of the set"
    assert _inside_figure(fig, legend)


def test_tsne_legend_of_short_names_keeps_the_width_it_had(fake_tsne):
    fig = plots.tsne_embeddings({"p": (A, A + 0.5)}, None, labels=[0, 1] * 8)
    assert fig.get_figwidth() == 3.2 + 1.2
