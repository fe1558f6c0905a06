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
