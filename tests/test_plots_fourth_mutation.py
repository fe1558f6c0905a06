"""Tests from a fourth mutation pass over transferkit/plots.py (the figures), after the plot parts of
test_tables_plots_mutation.py, test_tables_plots_second_mutation.py and test_tables_plots_third_mutation.py.

Each test kills mutants that the related tests (those three passes and the plot, t-SNE, sample-grid and
label-efficiency tests of test_evaluate.py, test_data.py and test_report.py) let through. In the sample grid:
rows labelled by class id instead of class name, a row for a class without images, the seed ignored, the cell
size of small images, the default of 8 images per class, the row labels rotated, ticks and frames left on, the
left margin and the title's place, the dpi of the PNG; check_png's refusal without the path. In the per-unit
plot: the test curve in another ratio's colour, the axis labels, the legend, the width per candidate, a mix of
targets let through and the hint that names the fix, settings compared across ratios, rows taken as tap rows
where any row has a unit, an empty list let through, save_png without its path check. In the tap plot: error
bars of another colour or of the mean instead of the standard error, one colour for every classifier, a
missing unit drawn at 0. In the units-picked figure: the colour map reversed, the legend's method names, the
title, the x ticks, flex's marker, the dpi. In the t-SNE figure: the domain colours swapped, a labelled panel's
target points drawn as source points, the legend's domain markers swapped, the unlabelled legend on the last
panel, the width per panel, a lone array's panel named, image-shaped features cut short, 20 classes left
unnamed, 21 unnamed classes counted as legend entries, an empty legend, more labels than points, a panel's
mixed labels not named, the dpi. In the accuracy curves: error bars or caps dropped, the per-group curve's
label, hollow markers and marker, whole-number ticks where any x is whole; accuracy_vs_k's method order, the
title's line break, the legend, the bad settings unsorted, the dpi. Figures are built with ``path=None`` and
read through their axes, lines, collections and texts (never their pixels); the t-SNE is the ``fake_tsne``
stand-in of conftest.py or a stand-in here that records the points.

Judged equivalent, so not tested: sample_grid without ``.clamp(0, 1)`` (a Domain's images lie in [0, 1] within
1e-4; grey rows are drawn on a fixed 0..1 scale and matplotlib clips RGB floats itself); sample_grid's
``min(per_class, largest class)`` as ``per_class`` (subsample_per_class takes at most n per class).
Left surviving: none of the mutants tried. Mutants that the older tests already kill are not listed.
"""

import math

import matplotlib.colors as mcolors
import pytest
import torch
from helpers import toy_domain
from test_tables_plots_mutation import flex_row
from test_tables_plots_second_mutation import ROW

from transferkit import plots
from transferkit.domain import Domain
from transferkit.errors import TransferkitError


def rgba(colour):
    return tuple(mcolors.to_rgba(colour))


# ---- sample grid -------------------------------------------------------------------------------
def test_sample_grid_labels_rows_by_class_name_upright_without_ticks_or_frames():
    # kills: rows labelled by class id; the row labels rotated; ticks or frames left on the images
    d = toy_domain(n=8, classes=2)
    d.class_names = ["cat", "dog"]
    fig = plots.sample_grid(d, None, per_class=2)
    assert [ax.get_ylabel() for ax in fig.axes] == ["cat", "dog"]
    for ax in fig.axes:
        assert ax.yaxis.label.get_rotation() == 0
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
        assert not any(spine.get_visible() for spine in ax.spines.values())


def test_sample_grid_draws_the_images_its_seed_picks():
    # kills: sample_grid ignoring seed (always the images of seed 0)
    d = toy_domain(n=80, classes=2)
    rows = {s: [ax.images[0].get_array().tolist() for ax in plots.sample_grid(d, None, per_class=2, seed=s).axes]
            for s in (0, 1)}
    again = [ax.images[0].get_array().tolist() for ax in plots.sample_grid(d, None, per_class=2, seed=1).axes]
    assert rows[1] == again and rows[0] != rows[1]


def test_sample_grid_shows_eight_images_per_class_in_half_inch_cells_of_small_images():
    # kills: the default per_class other than 8; small (<= 64 px) images drawn in one-inch cells
    fig = plots.sample_grid(toy_domain(n=40, classes=2), None)
    assert all(ax.images[0].get_array().shape == (28, 8 * 30 - 2) for ax in fig.axes)  # 8 images, gaps of 2
    assert fig.get_figheight() == pytest.approx(0.35 + 2 * 0.5 * 1.02)
    assert fig.get_figwidth() == pytest.approx(0.2 + 0.075 * 1 + 0.1 + 8 * 0.5)


def test_sample_grid_draws_only_the_classes_with_images_and_leaves_room_for_their_names():
    # kills: a row per class of class_names (an empty row for a class without images); the left margin not
    # sized to the longest class name; the title not placed in the top 0.35 in
    d = Domain("d", torch.rand(4, 1, 28, 28), torch.tensor([0, 2, 0, 2]), ["ant", "bee", "caterpillar"])
    fig = plots.sample_grid(d, None, per_class=2)
    assert [ax.get_ylabel() for ax in fig.axes] == ["ant", "caterpillar"]
    label_in = 0.2 + 0.075 * len("caterpillar")
    width = label_in + 0.1 + 2 * 0.5
    assert fig.get_figwidth() == pytest.approx(width) and fig.subplotpars.left == pytest.approx(label_in / width)
    assert fig.get_suptitle() == "d  (4 images, 3 classes)"
    assert fig._suptitle.get_position()[1] == pytest.approx(1 - 0.08 / fig.get_figheight())


def test_sample_grid_is_written_at_100_dpi(tmp_path):
    # kills: sample_grid's PNG written at another dpi
    import matplotlib.image
    d = toy_domain(n=8, classes=2)
    path = plots.sample_grid(d, tmp_path / "g.png", per_class=2)
    assert matplotlib.image.imread(path).shape[0] == round((0.35 + 2 * 0.5 * 1.02) * 100)


def test_a_png_path_of_another_suffix_is_named_in_the_refusal(tmp_path):
    # kills: check_png's refusal without the path it was given
    with pytest.raises(TransferkitError, match=r"name it \*\.png, got '.*grid\.jpg'"):
        plots.check_png(tmp_path / "grid.jpg", "sample grid")


# ---- per-unit accuracy and tap -------------------------------------------------------------------
def test_per_unit_plot_draws_each_ratios_test_curve_dashed_in_its_colour_with_its_marker_and_labels():
    # kills: the test curve solid; the test curve or the best-on-val marker in the first ratio's colour; the
    # "tuned unit" / "accuracy" axis labels; the legend dropped
    rows = [flex_row({"a": 0.2, "b": 0.4}, {"a": 0.3, "b": 0.1}, ratio=1),
            flex_row({"a": 0.5, "b": 0.3}, {"a": 0.6, "b": 0.2}, ratio=2)]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["~1/class val (n=1)", "~1/class test", "best on val",
                                                    "~2/class val (n=1)", "~2/class test", "_child5"]
    assert lines[1].get_linestyle() == "--" and lines[1].get_color() == "C0"
    assert lines[4].get_linestyle() == "--" and lines[4].get_color() == "C1"
    assert list(lines[5].get_xdata()) == [0] and lines[5].get_color() == "C1"  # ratio 2's best: a
    assert ax.get_xlabel() == "tuned unit" and ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "~1/class val (n=1)", "~1/class test", "best on val", "~2/class val (n=1)", "~2/class test"]


def test_per_unit_plot_is_as_wide_as_its_candidates_need():
    # kills: the figure's width not grown with the number of candidates
    fig = plots.per_unit_accuracy_plot([flex_row({"a": 0.2, "b": 0.4, "c": 0.1, "all": 0.3})], None)
    assert fig.get_figwidth() == pytest.approx(1.2 + 0.8 * 4 + plots.LEGEND_IN)


def test_per_unit_plot_refuses_rows_of_several_targets_and_names_the_fix():
    # kills: _check_one_curve_set not checking targets; the refusal without the list comprehension that fixes it
    rows = [flex_row({"a": 0.5}), flex_row({"a": 0.6}, target="u")]
    with pytest.raises(TransferkitError, match=r"mix targets t, u.*\[r for r in rows if r\['target'\] == 't'\]"):
        plots.per_unit_accuracy_plot(rows, None)


def test_per_unit_plot_of_flex_rows_beside_tap_rows_draws_the_flex_curves_and_refuses_no_rows():
    # kills: rows taken as tap rows where any (not every) row has a unit; an empty list let through
    ax = plots.per_unit_accuracy_plot([{"unit": "c1", "svm_accuracy": 0.5}, flex_row({"a": 0.5})], None).axes[0]
    assert ax.get_xlabel() == "tuned unit"
    with pytest.raises(TransferkitError, match="non-empty list"):
        plots.per_unit_accuracy_plot([], None)


def test_per_unit_plot_takes_one_setting_per_ratio_and_refuses_a_figure_path_of_another_format(tmp_path):
    # kills: the settings compared over every ratio together (each ratio is its own setting); save_png writing
    # a path check_png would refuse
    rows = [flex_row({"a": 0.5}, ratio=1, setting="ratio=1"), flex_row({"a": 0.6}, ratio=2, setting="ratio=2")]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    assert [line.get_label() for line in ax.get_lines()][::2] == ["~1/class val (n=1)", "~2/class val (n=1)"]
    with pytest.raises(TransferkitError, match="name it"):
        plots.per_unit_accuracy_plot(rows, tmp_path / "u.jpg")
    assert list(tmp_path.iterdir()) == []


def test_tap_plot_draws_standard_errors_in_each_classifiers_colour_and_leaves_a_missing_unit_empty():
    # kills: error bars without the classifier's colour; error bars of the mean instead of the standard error;
    # the legend without "test"; every classifier in C0; a unit without a classifier's value drawn at 0
    rows = [{"unit": "c1", "svm_accuracy": 0.4, "softmax_accuracy": 0.3},
            {"unit": "c1", "svm_accuracy": 0.6, "softmax_accuracy": 0.5}, {"unit": "c2", "svm_accuracy": 0.5}]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    svm, softmax = ax.get_lines()
    assert [svm.get_label(), softmax.get_label()] == ["svm (test, n=2)", "softmax (test, n=2)"]
    assert svm.get_color() == "C0" and softmax.get_color() == "C1"
    assert softmax.get_ydata()[0] == pytest.approx(0.4) and math.isnan(softmax.get_ydata()[1])
    for container, colour, (low, high) in zip(ax.containers, ("C0", "C1"), ((0.4, 0.6), (0.3, 0.5))):
        bars = container.lines[2][0]  # c1's bar: mean ± the standard error 0.1 of two values 0.2 apart
        assert bars.get_segments()[0].tolist() == [[0, pytest.approx(low)], [0, pytest.approx(high)]]
        assert tuple(bars.get_colors()[0]) == rgba(colour)


# ---- units picked ------------------------------------------------------------------------------------
def same_marker(collection, marker: str) -> bool:
    """Whether a scatter's points are drawn as ``marker``."""
    import numpy as np
    from matplotlib.markers import MarkerStyle
    style = MarkerStyle(marker)
    want = style.get_path().transformed(style.get_transform()).vertices
    got = collection.get_paths()[0].vertices
    return got.shape == want.shape and bool(np.allclose(got, want))


def test_units_picked_shades_better_ranks_darker_names_units_methods_and_draws_flex_as_down_triangles(tmp_path):
    # kills: the Greys colour map reversed; the legend without the methods' names; the title dropped; the x ticks
    # without the units' names; flex's marker other than "v"; the PNG at another dpi
    import matplotlib.image
    rows = [{**ROW, "method": "flex", "ratio": 1, "candidate_test_accuracy": {"a": 0.9, "b": 0.1, "c": 0.5},
             "picked": "a"}]
    ax = plots.units_picked_plot(rows, ["t"], None).axes[0]
    assert ax.images[0].get_cmap().name == "Greys"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["flex", "fast_flex", "faster_flex"]
    assert "darker = better" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert same_marker(ax.collections[0], "v") and not same_marker(ax.collections[0], "o")
    path = plots.units_picked_plot(rows, ["t"], tmp_path / "u.png")
    assert abs(matplotlib.image.imread(path).shape[0] - (0.9 + 0.38) * 110) <= 1


# ---- t-SNE (the fake_tsne fixture of conftest.py) ------------------------------------------------------
A = torch.arange(16.0).reshape(8, 2)
B = A + 0.5


def test_tsne_draws_source_blue_and_target_orange_with_the_legend_on_the_first_panel(fake_tsne):
    # kills: the domain colours swapped; the legend of unlabelled pairs on the last panel; the width per panel
    fig = plots.tsne_embeddings({"before": (A, B), "after": (A, B)}, None)
    source, target = fig.axes[0].collections
    assert tuple(source.get_facecolor()[0][:3]) == rgba("tab:blue")[:3]
    assert tuple(target.get_facecolor()[0][:3]) == rgba("tab:orange")[:3]
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None
    assert fig.get_figwidth() == pytest.approx(2 * 3.2)


def test_tsne_draws_a_labelled_panels_target_points_as_larger_crosses_and_its_legend_beside_the_last_panel(
        fake_tsne):
    # kills: a labelled panel's target points drawn as source points (marker o, size 3); the legend's domain
    # markers swapped; the labelled legend beside the first panel
    fig = plots.tsne_embeddings({"before": (A, B), "after": (A, B)}, None, labels=[0, 1] * 8)
    cols = fig.axes[0].collections  # source class 0, 1, then target class 0, 1
    assert [list(c.get_sizes()) for c in cols] == [[3.0], [3.0], [6.0], [6.0]]
    assert same_marker(cols[0], "o") and same_marker(cols[2], "x") and not same_marker(cols[2], "o")
    assert fig.axes[0].get_legend() is None
    legend = fig.axes[1].get_legend()
    assert [h.get_marker() for h in legend.legend_handles[:2]] == ["o", "x"]
    assert [t.get_text() for t in legend.get_texts()] == ["source", "target", "0", "1"]


def test_tsne_titles_the_figure_greys_a_panel_without_labels_and_names_a_lone_array_panel_by_nothing(fake_tsne):
    # kills: the suptitle dropped without labels; the panel left out of the labels in colour; a lone array's
    # panel given a name
    assert plots.tsne_embeddings({"p": A}, None, title="T").get_suptitle() == "T"
    fig = plots.tsne_embeddings({"a": A, "b": A}, None, labels={"a": [0, 1] * 4})
    assert tuple(fig.axes[1].collections[0].get_facecolor()[0][:3]) == (0.6, 0.6, 0.6)
    assert plots.tsne_embeddings(A, None).axes[0].get_title() == ""


def test_tsne_legend_of_many_entries_takes_two_columns(fake_tsne):
    # kills: the legend drawn in one column however many entries it has (the figure widened for two)
    fig = plots.tsne_embeddings({"p": (A.repeat(3, 1), B.repeat(3, 1))}, None, labels=list(range(12)) * 4)
    assert fig.axes[0].get_legend()._ncols == 2


def test_tsne_names_twenty_classes_but_not_twenty_one(fake_tsne):
    # kills: the classes left unnamed (and the title's note) from 20 classes on; 21 unnamed classes counted as
    # legend entries (a second column); an empty legend drawn where nothing is named
    a, b = torch.arange(84.0).reshape(42, 2), torch.arange(84.0).reshape(42, 2) + 0.5
    twenty = plots.tsne_embeddings({"p": a[:40]}, None, labels=list(range(20)) * 2)
    assert [t.get_text() for t in twenty.axes[0].get_legend().get_texts()] == [str(c) for c in range(20)]
    assert twenty.get_suptitle() == ""
    pair = plots.tsne_embeddings({"p": (a, b)}, None, labels=list(range(21)) * 4)
    assert [t.get_text() for t in pair.axes[0].get_legend().get_texts()] == ["source", "target"]
    assert pair.get_figwidth() == pytest.approx(3.2 + 1.2)
    alone = plots.tsne_embeddings({"p": a}, None, labels=list(range(21)) * 2)
    assert alone.axes[0].get_legend() is None


def test_tsne_refuses_more_labels_than_points_and_names_the_panel_of_mixed_labels(fake_tsne):
    # kills: _point_labels taking more labels than points; a panel's names-and-numbers labels refused only
    # over every panel together (without naming the panel)
    import numpy as np
    with pytest.raises(TransferkitError, match="give one label per point"):
        plots.tsne_embeddings({"p": A}, None, labels=[0] * 9)
    with pytest.raises(TransferkitError, match="panel 'p'"):
        plots.tsne_embeddings({"p": A}, None, labels=np.array([1, "a"] * 4, dtype=object))


def recording_tsne(monkeypatch) -> list:
    """scikit-learn's TSNE replaced by a stand-in that places each point at its first feature, twice, and
    records its arguments and the points it was given (``x``)."""
    import numpy as np
    import sklearn.manifold
    calls = []

    class Stand:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, x):
            calls[-1]["x"] = np.array(x)
            return np.concatenate([x[:, :1], x[:, :1]], axis=1)
    monkeypatch.setattr(sklearn.manifold, "TSNE", Stand)
    return calls


def test_tsne_of_one_feature_starts_from_a_random_layout(monkeypatch):
    # kills: the PCA init taken for points of one feature (PCA to 2-D needs two)
    calls = recording_tsne(monkeypatch)
    plots.tsne_embeddings({"p": torch.arange(8.0).reshape(8, 1)}, None)
    assert calls[0]["init"] == "random"


def test_tsne_embeds_every_feature_of_image_shaped_features_source_then_target(monkeypatch):
    # kills: N x C x H x W features cut to their first values instead of flattened whole
    calls = recording_tsne(monkeypatch)
    a = torch.arange(48.0).reshape(4, 2, 2, 3)
    plots.tsne_embeddings({"p": (a, a + 100)}, None)
    assert calls[0]["x"].tolist() == torch.cat([a, a + 100]).reshape(8, 12).tolist()


def test_tsne_figure_is_written_at_110_dpi(fake_tsne, tmp_path):
    # kills: the t-SNE PNG written at another dpi
    import matplotlib.image
    path = plots.tsne_embeddings({"p": A}, tmp_path / "t.png")
    assert abs(matplotlib.image.imread(path).shape[0] - 3.5 * 110) <= 1


# ---- accuracy curves and accuracy vs k ------------------------------------------------------------------
def test_accuracy_curves_draw_capped_error_bars_and_a_hollow_dashed_per_group_curve_of_the_same_style():
    # kills: the error bars or their caps dropped; the per-group curve's label, hollow markers, colour or marker
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {"a": [(1, 0.5, 0.0)], "m": [(1, 0.5, 0.1), (2, 0.6, 0.2)]},
                               {"m": [(1, 0.4, 0.05), (2, 0.45, 0.0)]})
    image, group = ax.containers[1:]
    segments = [s.tolist() for s in image.lines[2][0].get_segments()]  # mean ± standard error at each x
    assert segments == [[[1, pytest.approx(0.4)], [1, pytest.approx(0.6)]], [[2, pytest.approx(0.4)],
                                                                             [2, pytest.approx(0.8)]]]
    assert len(image.lines[1]) == 2  # the caps below and above
    assert ax.get_legend_handles_labels()[1] == ["a", "m", "m (per group)"]
    line = group.lines[0]
    assert line.get_markerfacecolor() == "none" and line.get_color() == "C1" and line.get_marker() == "s"


def test_an_eleventh_methods_per_group_curve_takes_its_methods_marker():
    # kills: the per-group curve always drawn with circles (the eleventh method's curve has stars)
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {f"m{i}": [(1, 0.5, 0.0)] for i in range(11)}, {"m10": [(1, 0.4, 0.0)]})
    assert [c.lines[0].get_marker() for c in ax.containers[10:]] == ["*", "*"]


def test_accuracy_curves_of_whole_and_fractional_x_keep_the_default_ticks():
    # kills: whole-number ticks where any (not every) x is whole
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots.draw_accuracy_curves(ax, {"m": [(1, 0.5, 0.0), (1.5, 0.6, 0.0)]})
    assert type(ax.xaxis.get_major_locator()).__name__ == "AutoLocator"


def test_accuracy_vs_k_names_methods_in_row_order_in_its_legend_and_breaks_the_title_only_for_grouped_rows(
        tmp_path):
    # kills: methods sorted by name; the legend dropped; a line break after a title of ungrouped rows; the PNG at
    # another dpi
    import matplotlib.image
    rows = [{**ROW, "method": m} for m in ("b", "a")]
    ax = plots.accuracy_vs_k_plot(rows, None, title="T").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["b", "a"]
    assert ax.get_title() == "T"
    grouped = [{**r, "group_accuracy": 0.5} for r in rows]
    assert plots.accuracy_vs_k_plot(grouped, None, title="T").axes[0].get_title() == (
        "T\nsolid: per-image accuracy, dashed: per-group (video) accuracy")
    path = plots.accuracy_vs_k_plot(rows, tmp_path / "k.png")
    assert abs(matplotlib.image.imread(path).shape[0] - 3.4 * 110) <= 1


def test_accuracy_vs_k_names_its_bad_settings_sorted():
    # kills: the bad settings listed in set order
    rows = [{**ROW, "setting": s} for s in ("k=z", "k=b", "k=x", "k=a", "k=c")]
    with pytest.raises(TransferkitError, match=r"got \['k=a', 'k=b', 'k=c', 'k=x', 'k=z'\]"):
        plots.accuracy_vs_k_plot(rows, None)
