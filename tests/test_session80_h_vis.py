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


ROW = {"method": "m", "source": "s", "target": "t"}
FLEX = {"method": "flex", "source": "s", "target": "t", "setting": "ratio=3"}


def _tick_texts(ax) -> list[str]:
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_yticklabels() if t.get_text()]


def test_accuracy_vs_k_marks_each_method_apart_and_writes_accuracy_ticks_in_percent():
    rows = [{**ROW, "method": m, "setting": f"k={k}", "seed": 0, "accuracy": 0.5 + 0.1 * k} for m in "abc"
            for k in (1, 2)]
    ax = plots.accuracy_vs_k_plot(rows, None).axes[0]
    assert [c.lines[0].get_marker() for c in ax.containers] == ["o", "s", "D"]
    assert _tick_texts(ax) and all(t.endswith("%") for t in _tick_texts(ax))


def test_per_unit_plot_marks_each_ratio_apart_and_keeps_its_legend_beside_the_axes():
    rows = [{**FLEX, "ratio": r, "setting": f"ratio={r}", "candidate_val_accuracy": {"a": 0.5, "b": 0.6},
             "candidate_test_accuracy": {"a": 0.4, "b": 0.7}} for r in (3, 30)]
    fig = plots.per_unit_accuracy_plot(rows, None)
    ax = fig.axes[0]
    val3, test3, _, val30, test30, _ = ax.get_lines()
    assert (val3.get_marker(), val30.get_marker()) == ("o", "s")
    assert test30.get_marker() == "s" and test30.get_markerfacecolor() == "none" and test30.get_linestyle() == "--"
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # over no curve
    assert all(t.endswith("%") for t in _tick_texts(ax))


def test_tap_plot_marks_each_classifier_apart():
    rows = [{"unit": u, "svm_accuracy": 0.5, "softmax_accuracy": 0.4} for u in ("a", "b")]
    ax = plots.per_unit_accuracy_plot(rows, None).axes[0]
    assert [ln.get_marker() for ln in ax.get_lines()] == ["o", "s"]


def test_report_per_unit_and_training_curves_mark_each_method_apart(tmp_path, monkeypatch):
    import json

    from transferkit import report
    rows = [{"method": m, "source": "s", "target": "t", "setting": "ratio=3", "seed": 0,
             "candidate_val_accuracy": {"a": 0.5, "b": 0.6}} for m in ("fast_flex", "flex")]
    ((_, png),) = report.per_unit_figures(rows)
    assert png.startswith(b"\x89PNG")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"method": m, "run": m, "step": s, "loss": 1.0 / s,
                                                                "val_accuracy": 0.1 * s}) + "\n"
                                                    for m in ("a", "b") for s in (1, 2)))
    drawn, real = [], report._png
    monkeypatch.setattr(report, "_png", lambda fig, tight_box=False: drawn.append(fig) or real(fig, tight_box))
    report.per_unit_figures(rows)
    report.training_curve_figures(tmp_path)
    per_unit, curves = drawn
    assert [ln.get_marker() for ln in per_unit.axes[0].get_lines()] == ["o", "s"]
    assert [ln.get_marker() for ax in curves.axes for ln in ax.get_lines()] == ["o", "s", "o", "s"]
