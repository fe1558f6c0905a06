"""Tests from a fifth mutation pass over transferkit/plots.py (the figures), after the plot parts of
test_tables_plots_mutation.py, test_tables_plots_second_mutation.py, test_tables_plots_third_mutation.py and
test_plots_fourth_mutation.py.

Each test kills mutants that the related tests (those four passes and the plot, t-SNE, sample-grid and
label-efficiency tests of test_evaluate.py, test_data.py, test_report*.py, test_cli.py and the fewshot bench
tests) let through. In the sample grid: no gap between small (< 14 px wide) images, 64-pixel images drawn in
one-inch cells, colour images smoothed. In the per-unit plot: a row without a method or setting counted as a
second method or setting. In the tap plot: integer unit names never matched (every point NaN). In the
units-picked figure: a target's markers counting every target's picks, faster_flex drawn with flex's marker,
the columns of the first flex row only. In the t-SNE figure: the domain markers named only where every panel
is a pair, infinite features let through, an unlabelled pair's scatters each drawing every point, a labelled
pair's target points drawn at the source points' places, a panel's class colours from a map of its own
classes. In the accuracy curves: each k's point the mean over every k, the "dashed" title line for grouped
rows without group accuracies, the per-group curve without error bars or out of x order.
Figures are built with ``path=None`` and read through their axes, lines, containers and collections (never
their pixels); the t-SNE is the ``fake_tsne`` stand-in of conftest.py (points at their first two features).

Judged equivalent, so not tested: sample_grid's suptitle without ``va="top"`` (Figure.suptitle's default
is "top"); k_axis_label's ``startswith("k=")`` as ``"k=" in`` (no setting a run writes holds "k=" past its
start: k=, ratio=, zsl, gzsl, gzsl_prior). Left surviving: units_picked_plot's ``argsort(..., stable=True)``
without stable (torch's CPU sort keeps tied test accuracies in order on tensors this small, so no test can
show the difference deterministically). Mutants that the older tests already kill are not listed.
"""

import pytest
import torch
from test_plots_fourth_mutation import same_marker
from test_tables_plots_mutation import flex_row
from test_tables_plots_second_mutation import ROW

from transferkit import plots
from transferkit.domain import Domain
from transferkit.errors import TransferkitError


# ---- sample grid -------------------------------------------------------------------------------
def test_sample_grid_keeps_a_one_pixel_gap_between_small_images():
    # kills: sample_grid's gap max(1, w // 14) as w // 14 (images under 14 px wide drawn edge to edge)
    d = Domain("d", torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]), ["a", "b"])
    fig = plots.sample_grid(d, None, per_class=2)
    row = fig.axes[0].images[0].get_array()
    assert row.shape == (8, 2 * 8 + 1)
    assert row[:, 8].tolist() == [1.0] * 8 and row[:, :8].max() == 0 and row[:, 9:].max() == 0  # a white gap


def test_sample_grid_draws_64_pixel_images_in_half_inch_cells_and_larger_ones_in_inch_cells():
    # kills: the half-inch cell only for images under 64 px (h < 64 for h <= 64)
    def height(size):
        d = Domain("d", torch.rand(2, 1, size, size), torch.tensor([0, 1]), ["a", "b"])
        return plots.sample_grid(d, None, per_class=1).get_figheight()
    assert height(64) == pytest.approx(0.35 + 2 * 0.5 * 1.02)
    assert height(65) == pytest.approx(0.35 + 2 * 1.0 * 1.02)


def test_sample_grid_draws_colour_images_pixel_for_pixel():
    # kills: colour rows drawn with matplotlib's default (smoothing) interpolation instead of "nearest"
    d = Domain("d", torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), ["a", "b"])
    assert [ax.images[0].get_interpolation() for ax in plots.sample_grid(d, None, per_class=1).axes] == ["nearest"] * 2


# ---- units picked ------------------------------------------------------------------------------------
def test_units_picked_marks_each_targets_own_picks_and_draws_faster_flex_as_up_triangles():
    # kills: a target's markers counting the picks of every target; faster_flex's marker "v" (flex's) for "^"
    acc = {"a": 0.5, "b": 0.4}
    rows = [{**ROW, "method": m, "target": t, "ratio": 1, "candidate_test_accuracy": acc, "picked": u}
            for m in ("flex", "faster_flex") for t, u in (("t", "a"), ("u", "b"))]
    ax = plots.units_picked_plot(rows, ["t", "u"], None).axes[0]
    flex, faster = ax.collections[0], ax.collections[4]
    assert flex.get_offsets().tolist() == [[-0.25, 0], [0.75, 1]]  # t picked a (column 0), u picked b (column 1)
    assert faster.get_offsets().tolist() == [[0.25, 0], [1.25, 1]]
    assert same_marker(faster, "^") and not same_marker(faster, "v")


def test_units_picked_has_a_column_for_every_candidate_of_any_flex_row():
    # kills: the columns taken from the first flex row's candidates only
    rows = [{**ROW, "method": "flex", "target": t, "ratio": 1, "candidate_test_accuracy": acc, "picked": "a"}
            for t, acc in (("t", {"a": 0.5, "b": 0.4}), ("u", {"a": 0.5, "b": 0.4, "all": 0.7}))]
    ax = plots.units_picked_plot(rows, ["t", "u"], None).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "all"]
    assert ax.images[0].get_array().shape == (2, 3)


# ---- t-SNE ---------------------------------------------------------------------------------------------
A = torch.arange(16.0).reshape(8, 2)


def test_tsne_legend_names_the_domain_markers_where_any_panel_is_a_pair(fake_tsne):
    # kills: the domain markers named only where every panel (not any) is a (source, target) pair
    fig = plots.tsne_embeddings({"pair": (A, A + 0.5), "one": A}, None, labels={"pair": [0, 1] * 8, "one": [0] * 8})
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["source", "target", "0", "1"]


def test_tsne_places_each_domains_points_where_the_embedding_puts_them(fake_tsne):
    # kills: an unlabelled pair's scatters each drawing every point of the panel; a labelled pair's target points
    # drawn at the places of the source points (the class's indices not offset by the source's size)
    fig = plots.tsne_embeddings({"p": (A, A + 100)}, None)
    source, target = fig.axes[0].collections
    assert source.get_offsets().tolist() == A.tolist() and target.get_offsets().tolist() == (A + 100).tolist()
    fig = plots.tsne_embeddings({"p": (A, A + 100)}, None, labels=[0, 1] * 8)
    source0, source1, target0, target1 = fig.axes[0].collections
    assert source0.get_offsets().tolist() == A[0::2].tolist()
    assert target1.get_offsets().tolist() == (A + 100)[1::2].tolist()


def test_tsne_colours_a_panel_of_few_classes_from_the_map_of_every_panels_classes(fake_tsne):
    # kills: a panel's class colours taken from a map sized to its own classes (tab10's C0, C1 for classes 10
    # and 11 of twelve, where the legend shows tab20's)
    from matplotlib import colormaps
    fig = plots.tsne_embeddings({"all": torch.arange(48.0).reshape(24, 2), "few": A},
                                None, labels={"all": list(range(12)) * 2, "few": [10, 11] * 4})
    got = [tuple(c.get_facecolor()[0][:3]) for c in fig.axes[1].collections]
    assert got == [tuple(colormaps["tab20"].colors[i]) for i in (1, 3)]  # tab20's light shades for 10, 11


def test_tsne_refuses_infinite_features_and_names_the_panel(fake_tsne):
    # kills: only NaN features refused (an infinite one let through to the t-SNE)
    x = A.clone()
    x[3, 1] = float("inf")
    with pytest.raises(TransferkitError, match="panel 'p' has NaN or infinite"):
        plots.tsne_embeddings({"p": x}, None)


# ---- accuracy vs k ---------------------------------------------------------------------------------------
def test_accuracy_vs_k_draws_the_mean_and_standard_error_of_each_k_apart():
    # kills: each k's point the mean over every row of the method (whatever its k)
    rows = [{**ROW, "setting": "k=1", "seed": 0, "accuracy": 0.2},
            {**ROW, "setting": "k=1", "seed": 1, "accuracy": 0.4}, {**ROW, "setting": "k=2", "accuracy": 0.8}]
    ax = plots.accuracy_vs_k_plot(rows, None).axes[0]
    (curve,) = ax.containers
    assert curve.lines[0].get_xdata().tolist() == [1, 2]
    assert curve.lines[0].get_ydata().tolist() == pytest.approx([0.3, 0.8])
    low, high = curve.lines[2][0].get_segments()[0].tolist()  # k=1: 0.3 ± the standard error 0.1
    assert low == [1, pytest.approx(0.2)] and high == [1, pytest.approx(0.4)]


def test_accuracy_vs_k_of_grouped_rows_without_group_accuracy_says_nothing_of_dashed_curves():
    # kills: the title's "dashed: per-group accuracy" line written for rows that count test groups but hold no
    # group_accuracy (no dashed curve drawn)
    rows = [{**ROW, "n_test_groups": 3}]
    ax = plots.accuracy_vs_k_plot(rows, None, title="T").axes[0]
    assert ax.get_title() == "T" and len(ax.containers) == 1
    assert "groups" in ax.get_xlabel()


def test_accuracy_curves_draw_the_per_group_standard_errors_with_the_per_group_points_in_order_of_x():
    # kills: the per-group curve drawn without its error bars; its points drawn in the order given, not of x
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {"m": [(1, 0.5, 0.0), (2, 0.6, 0.0)]}, {"m": [(2, 0.45, 0.05), (1, 0.4, 0.1)]})
    group = ax.containers[1]
    assert group.lines[0].get_xdata().tolist() == [1, 2] and group.lines[0].get_ydata().tolist() == [0.4, 0.45]
    segments = [s.tolist() for s in group.lines[2][0].get_segments()]
    assert segments == [[[1, pytest.approx(0.3)], [1, pytest.approx(0.5)]], [[2, pytest.approx(0.4)],
                                                                             [2, pytest.approx(0.5)]]]


# ---- per-unit accuracy ------------------------------------------------------------------------------------
def test_per_unit_plot_takes_rows_without_a_method_or_setting_beside_rows_that_name_theirs():
    # kills: _check_one_curve_set counting a row without the key as a second value ("None") of it
    rows = [flex_row({"a": 0.2}), {"candidate_val_accuracy": {"a": 0.4}}]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    assert ax.get_lines()[0].get_label() == "val (n=2)" and ax.get_lines()[0].get_ydata().tolist() == [
        pytest.approx(0.3)]


# ---- tap --------------------------------------------------------------------------------------------------
def test_tap_plot_of_units_numbered_by_integers_draws_their_accuracies():
    # kills: _tap_plot's units taken as given (an integer unit never matches its str, so every point is NaN)
    rows = [{"unit": 1, "svm_accuracy": 0.4}, {"unit": 2, "svm_accuracy": 0.6}]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    assert ax.get_lines()[0].get_ydata().tolist() == [0.4, 0.6]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
