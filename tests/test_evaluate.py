import math
import warnings

import numpy as np
import pytest
import torch

from transferkit.errors import TransferkitError
from transferkit.evaluate import classification_report, confusion_matrix, grouped_accuracy, mean_se
from transferkit.results import summarize
from transferkit.tables import markdown_table


def test_confusion_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.eye(3)[torch.tensor([0, 1, 1, 1, 0])]
    rep = classification_report(logits, labels)
    assert rep["accuracy"] == pytest.approx(3 / 5)
    assert rep["per_class_accuracy"] == [0.5, 1.0, 0.0]
    assert rep["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3)[0, 2] == 1


def test_balanced_accuracy_is_the_mean_recall_over_classes_with_samples_as_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score
    rep = classification_report(torch.eye(3)[torch.tensor([0, 1, 1, 1, 0])], torch.tensor([0, 0, 1, 1, 2]))
    assert rep["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # accuracy is 3 / 5
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.zeros(90, dtype=torch.long), torch.randint(1, 4, (10,), generator=g)])  # no class 4
    logits = torch.randn(100, 5, generator=g)
    rep = classification_report(logits, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's: class 4 is predicted, never true
        want = balanced_accuracy_score(labels, logits.argmax(1))
    assert rep["balanced_accuracy"] == pytest.approx(want, abs=1e-12)


def test_per_class_accuracy_is_the_fraction_rounded_to_six_decimals_as_balanced_accuracy():
    labels = torch.zeros(29, dtype=torch.long)
    logits = torch.zeros(29, 2)
    logits[:27, 0] = 1
    logits[27:, 1] = 1
    rep = classification_report(logits, labels)  # float32 division gave 0.931035
    assert rep["per_class_accuracy"][0] == round(27 / 29, 6) == 0.931034
    assert rep["balanced_accuracy"] == 27 / 29


def test_per_class_accuracy_of_absent_class_is_none():
    rep = classification_report(torch.eye(3)[[0, 0]], torch.tensor([0, 0]))
    assert rep["per_class_accuracy"] == [1.0, None, None]


def test_grouped_accuracy_averages_softmax_over_group():
    # group 0: two frames wrong with low confidence, one right with high confidence -> right
    logits = torch.tensor([[0.0, 0.2], [0.0, 0.2], [5.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1])
    groups = torch.tensor([7, 7, 7, 9])
    assert classification_report(logits, labels)["accuracy"] == pytest.approx(0.5)
    assert grouped_accuracy(logits, labels, groups) == 1.0
    with pytest.raises(TransferkitError, match="different labels"):
        grouped_accuracy(logits, torch.tensor([0, 1, 0, 1]), groups)


def test_a_group_whose_mean_softmax_ties_is_predicted_as_the_lowest_class_id():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # one frame each way: equal mean softmax
    assert grouped_accuracy(logits, torch.tensor([0, 0]), torch.tensor([3, 3])) == 1.0  # class 0 wins the tie
    assert grouped_accuracy(logits, torch.tensor([1, 1]), torch.tensor([3, 3])) == 0.0


def test_mean_and_standard_error():
    m, se = mean_se([0.5, 0.7, 0.9])
    assert m == pytest.approx(0.7)
    assert se == pytest.approx(math.sqrt(0.04 / 3))
    assert mean_se([0.3]) == (0.3, 0.0)


def test_one_value_prints_its_mean_without_a_standard_error():
    from transferkit.evaluate import mean_se_text
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    assert mean_se_text([0.5, 0.7, 0.9]) == "70.0 ± 11.5" and mean_se_text([0.735]) == "73.5"
    assert mean_se_text([0.25, 0.25], scale=1, digits=3) == "0.250 ± 0.000"
    rows = [{"method": "m", "source": "s", "target": "t", "setting": "k=5", "seed": 0, "accuracy": 0.735,
             "wall_s": 1.0}]
    assert "| 73.5 | 1 |" in markdown_table(summarize(rows))


def test_empty_evaluation_is_an_error():
    with pytest.raises(TransferkitError, match="empty"):
        classification_report(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_summary_table_groups_by_method_and_setting():
    rows = [{"method": "a", "source": "s", "target": "t", "setting": "k=2", "seed": i, "accuracy": acc,
             "wall_s": 1.0} for i, acc in enumerate([0.5, 0.7])]
    rows.append({"method": "b", "source": "s", "target": "t", "setting": "k=2", "seed": 0, "accuracy": 0.9,
                 "wall_s": 2.0})
    summary = summarize(rows)
    assert [(s["method"], s["n"]) for s in summary] == [("a", 2), ("b", 1)]
    assert summary[0]["accuracy_mean"] == pytest.approx(0.6)
    table = markdown_table(summary)
    assert "| a | s | t | k=2 | 60.0 ± 10.0 | 2 | 1.0 |" in table


def test_summary_table_shows_the_95_interval_of_a_row_over_episodes():
    base = {"source": "s", "target": "t", "seed": 0, "wall_s": 1.0}
    rows = [{**base, "method": "erm/fewshot_linear", "setting": "5-way 5-shot", "accuracy": 0.767, "ci95": 0.021,
             "episodes": 600},
            {**base, "method": "erm/fewshot_linear", "setting": "5-way 1-shot", "accuracy": 0.5,
             "ci95": float("nan"), "episodes": 1},  # one episode: no interval
            {**base, "method": "erm/finetune", "setting": "5/class", "accuracy": 0.5},
            {**base, "method": "erm/finetune", "setting": "5/class", "accuracy": 0.7, "seed": 1}]
    summary = summarize(rows)
    assert summary[0]["accuracy_ci95"] == 0.021 and "accuracy_ci95" not in summary[1]
    assert "accuracy_ci95" not in summary[2] and summary[0]["accuracy_se"] is None  # the fields it had stay
    table = markdown_table(summary, rows)
    assert "| erm/fewshot_linear | s | t | 5-way 5-shot | 76.7 (95 %: ± 2.1) | 1 | 1.0 |" in table
    assert "| 5-way 1-shot | 50.0 | 1 |" in table and "| 60.0 ± 10.0 | 2 |" in table
    assert "95 %: ± x: a row over episodes (n = 1): the 95 % interval of its mean over the episodes." in table
    assert "95 %" not in markdown_table(summary[1:], rows[1:])


def test_confusion_has_a_column_per_model_output_and_checks_labels():
    logits = torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])  # 3 outputs, 2 classes
    report = classification_report(logits, torch.tensor([0, 1, 1]), num_classes=2)
    assert report["confusion"] == [[0, 0, 1], [1, 1, 0]]  # output 2 is its own column, not class 1's row
    assert report["per_class_accuracy"] == [0.0, 0.5] and report["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(TransferkitError, match=r"labels must lie in \[0, 1\], found 0..2"):
        classification_report(logits, torch.tensor([0, 1, 2]), num_classes=2)
    with pytest.raises(TransferkitError, match="labels must lie"):
        confusion_matrix(torch.tensor([0]), torch.tensor([-1]), 2)


def test_per_unit_plot_marks_the_best_candidate_never_a_nan_one(tmp_path):
    from transferkit.plots import best_index, per_unit_accuracy_plot
    assert best_index([float("nan"), 0.4, 0.6, 0.6]) == 2 and best_index([0.5, float("nan")]) == 0
    rows = [{"ratio": 30, "candidate_val_accuracy": {"conv1": float("nan"), "fc": 0.7, "all": 0.6},
             "candidate_test_accuracy": {"conv1": 0.1, "fc": 0.6, "all": 0.5}}]
    assert per_unit_accuracy_plot(rows, tmp_path / "u.png").stat().st_size > 0
    with_image = {"ratio": 30, "candidate_val_accuracy": {"conv1": 0.5, "fc": 0.6, "all": 0.6, "image:stn": 0.8},
                  "candidate_test_accuracy": {"conv1": 0.5, "fc": 0.6, "all": 0.6, "image:stn": 0.7}}
    assert per_unit_accuracy_plot(rows + [with_image], tmp_path / "v.png").stat().st_size > 0  # other candidates


def test_mismatched_or_broken_evaluation_inputs_are_named():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    for call, message in (
            (lambda: confusion_matrix(torch.tensor([0]), labels, 3), "one prediction per label"),
            (lambda: confusion_matrix(labels.float() + 0.5, labels, 3), "predictions must be whole class ids"),
            (lambda: classification_report(logits[:, 0], labels), "needs N x C logits"),
            (lambda: classification_report(torch.full((4, 3), float("nan")), labels), "NaN or infinite"),
            (lambda: classification_report(logits, labels, groups=torch.tensor([0, 1])), "4 labels but 2 group"),
            (lambda: grouped_accuracy(logits, labels, torch.tensor([0, 0, 1])), "N group ids")):
        with pytest.raises(TransferkitError, match=message):
            call()
    assert confusion_matrix(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2).sum() == 0


def test_zero_shot_scores_and_labels_must_agree():
    from transferkit.zeroshot import prior_matched_gamma, zero_shot_report
    scores, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 2])
    with pytest.raises(TransferkitError, match="6 score rows for 5 labels"):
        zero_shot_report(scores, labels[:5], [0, 1], [2, 3])
    with pytest.raises(TransferkitError, match=r"labels \[3\] are neither seen nor unseen"):
        zero_shot_report(scores, labels, [0, 1], [2])
    with pytest.raises(TransferkitError, match=r"unseen classes: ids must lie in \[0, 3\]"):
        prior_matched_gamma(scores, [0, 1], [2, 9])
    with pytest.raises(TransferkitError, match="overlap"):
        prior_matched_gamma(scores, [0, 1], [1, 2])


def test_tsne_of_identical_features_is_named_not_a_crash(tmp_path):
    from transferkit.plots import tsne_embeddings
    with pytest.raises(TransferkitError, match="identical features for every point"):
        tsne_embeddings({"a": (torch.zeros(10, 4), torch.zeros(10, 4))}, tmp_path / "t.png")
    with pytest.raises(TransferkitError, match="one size D"):
        tsne_embeddings({"a": (torch.randn(10, 4), torch.randn(10, 5))}, tmp_path / "t.png")
    with pytest.raises(TransferkitError, match="one size D"):
        tsne_embeddings({"a": (torch.zeros(0, 5), torch.randn(10, 5))}, tmp_path / "t.png")
    with pytest.raises(TransferkitError, match="name it \\*.png"):
        tsne_embeddings({"a": (torch.randn(10, 4), torch.randn(10, 4))}, tmp_path / "t.jpg")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(TransferkitError, match="is a directory"):
        tsne_embeddings({"a": (torch.randn(10, 4), torch.randn(10, 4))}, tmp_path / "d.png")
    assert tsne_embeddings({"a": (torch.randn(10, 1), torch.randn(10, 1))}, tmp_path / "one.png").exists()


def test_units_picked_of_targets_without_flex_rows_and_a_tsne_point_count_the_plot_refuses():
    from transferkit.bench import make_plan
    from transferkit.plots import units_picked_plot
    row = {"method": "flex", "target": "t", "ratio": 30, "picked": "all", "candidate_test_accuracy": {"all": 0.9}}
    with pytest.raises(TransferkitError, match="none of the targets has a flex row"):
        units_picked_plot([row], ["other"], "/tmp/never.png")
    with pytest.raises(TransferkitError, match="tsne_points must be >= 2"):
        make_plan("uda", False, ["tsne_points=1"])


def test_summary_refuses_a_seed_counted_twice_and_averages_extra_keys_where_present():
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0}
    with pytest.raises(TransferkitError, match="repeat seed 0 .* count one run as two"):
        summarize([{**row, "seed": 0}, {**row, "seed": 0}])
    s = summarize([{**row, "seed": 0, "best_step": 4}, {**row, "seed": 1}], extra_keys="best_step")
    assert s[0]["best_step"] == 4 and s[0]["n"] == 2


def test_an_empty_test_split_and_bad_grouped_inputs_are_named():
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.fitting import evaluate_on
    net = build_backbone("lenet", num_classes=2, in_channels=1, image_size=28)
    empty = Domain("none", torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), ["a", "b"])
    with pytest.raises(TransferkitError, match="cannot evaluate on an empty domain"):
        evaluate_on(net, empty)
    logits, labels, groups = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), torch.tensor([0, 1])
    with pytest.raises(TransferkitError, match="NaN or infinite"):
        grouped_accuracy(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), labels, groups)
    with pytest.raises(TransferkitError, match=r"labels must lie in \[0, 1\].*found 0..5"):
        grouped_accuracy(logits, torch.tensor([0, 5]), groups)


def test_units_picked_background_is_the_mean_rank_over_each_targets_ratios(tmp_path, monkeypatch):
    from transferkit import plots
    from transferkit.plots import best_index, tsne_embeddings, units_picked_plot
    assert best_index([0.8, 0.8, 0.7], [0.5, 0.4, 0.1]) == 1  # flex's tie rule: the lower validation loss
    assert best_index([0.8, 0.8], [float("nan"), 0.4]) == 1 and best_index([0.8, 0.8]) == 0
    order = {"conv1": 0.9, "fc1": 0.8, "all": 0.7}  # the same unit order on both targets
    rows = [{"method": "flex", "target": t, "ratio": ratio, "candidate_test_accuracy": order}
            for t, ratios in (("A", (3, 30, 300)), ("B", (3,))) for ratio in ratios]
    rows[0] = {**rows[0], "candidate_test_accuracy": {**order, "image:colour": 0.95}}  # another candidate set
    shown = {}
    real = plots.new_figure

    def spy(*a, **k):
        fig = real(*a, **k)
        shown["fig"] = fig
        return fig
    monkeypatch.setattr(plots, "new_figure", spy)
    units_picked_plot(rows, ["A", "B"], tmp_path / "u.png")
    background = -shown["fig"].axes[0].images[0].get_array()  # the plot shows -rank
    # A: image:colour first at ratio 3 (ranked on the row that has it), last at 30 and 300
    assert background[0].tolist() == pytest.approx([1 / 3, 4 / 3, 7 / 3, (0 + 3 + 3) / 3])
    assert background[1].tolist() == [0, 1, 2, 3]  # B, one ratio: on the same scale as A
    grad = torch.randn(20, 4, requires_grad=True)
    tsne_embeddings({"a": (grad * 2, torch.randn(20, 4).numpy())}, tmp_path / "t.png")  # autograd and NumPy inputs


def test_known_values_that_pin_grouped_accuracy_paired_counts_and_retrieval_at_small_galleries():
    from transferkit.evaluate import grouped_accuracy, paired_difference
    from transferkit.retrieval import average_precision_at_k
    # group 1 averages softmax probabilities (two confident 1s, one very confident 0): class 1 wins;
    # averaging raw logits instead would pick class 0
    logits = torch.tensor([[0.0, 3.0], [0.0, 3.0], [10.0, 0.0]])
    assert grouped_accuracy(logits, torch.tensor([1, 1, 1]), torch.tensor([0, 0, 0])) == 1.0
    with pytest.raises(TransferkitError, match=r"labels must lie in \[0, 1\]"):
        grouped_accuracy(torch.zeros(2, 2), torch.tensor([0, 2]), torch.tensor([0, 1]))
    rows = [{"method": m, "seed": s, "accuracy": 0.5} for m, seeds in (("a", (0, 1, 2)), ("b", (0, 1))) for s in seeds]
    assert paired_difference(rows, "a", "b")[2] == 2  # only the seeds both have
    ap = average_precision_at_k(torch.zeros(1, 1), torch.tensor([0]), torch.tensor([[1.0], [2.0], [3.0]]),
                                torch.tensor([1, 0, 0]), k=10)  # k above the gallery: two hits, at ranks 2 and 3
    assert float(ap[0]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_each_ratios_best_unit_marker_has_its_ratios_colour(monkeypatch):
    from transferkit import plots
    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path, dpi, what, description="": figures.append(fig))
    rows = [{"ratio": ratio, "candidate_val_accuracy": {"conv1": 0.5, "all": 0.6},
             "candidate_test_accuracy": {"conv1": 0.5, "all": 0.6}, "candidate_val_loss": {"conv1": 1, "all": 1}}
            for ratio in (10, 30)]
    plots.per_unit_accuracy_plot(rows, "x.png")
    lines = figures[0].axes[0].get_lines()
    markers = [ln for ln in lines if ln.get_marker() == "v"]
    curves = [ln for ln in lines if ln.get_linestyle() == "-"]
    assert [m.get_color() for m in markers] == [c.get_color() for c in curves] == ["C0", "C1"]


def test_predict_logits_runs_each_chunk_where_the_model_is_and_answers_where_the_images_are():
    from transferkit.evaluate import module_device, predict_logits
    seen = []

    class OnMeta(torch.nn.Module):  # a model on another device than the images ('meta' stands in for a GPU)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2, device="meta"))

        def forward(self, x):
            seen.append((x.device.type, len(x)))
            return torch.zeros(len(x), 3, device=x.device)

    model = OnMeta()
    assert module_device(model) == torch.device("meta") and module_device(lambda x: x) is None
    with pytest.raises(NotImplementedError):  # the output of a meta model cannot come back; a GPU's does
        predict_logits(model, torch.rand(5, 1, 2, 2), batch_size=2)
    assert seen[0] == ("meta", 2)
    x = torch.rand(5, 1, 2, 2)
    out = predict_logits(lambda c: c.mul_(2).flatten(1), x, batch_size=2)  # a function: the images' device
    assert out.device.type == "cpu" and torch.equal(out, (x * 2).flatten(1))  # and the images stay as they were


def test_evaluation_helpers_name_bad_arguments():
    import numpy as np

    from transferkit.retrieval import average_precision_at_k, map_at_k
    labels = torch.tensor([0, 1, 0, 1])
    for kwargs, message in ((dict(logits=torch.zeros(4, 0)), r"N x C logits \(C >= 1\), got shape \(4, 0\)"),
                            (dict(num_classes=2.5), "num_classes must be a whole number >= 1 or None, got 2.5"),
                            (dict(num_classes=0), "num_classes must be a whole number >= 1 or None, got 0")):
        with pytest.raises(TransferkitError, match=message):
            classification_report(**{"logits": torch.randn(4, 2), "labels": labels, **kwargs})
    assert classification_report(torch.randn(4, 2), labels, num_classes=2)["n"] == 4
    emb = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    assert map_at_k(emb, labels, emb, labels, k=2, exclude_self=False) == map_at_k(
        torch.from_numpy(emb), labels, torch.from_numpy(emb), labels, k=2, exclude_self=False)
    with pytest.raises(TransferkitError, match="chunk must be a whole number >= 1, got 2.5"):
        average_precision_at_k(torch.from_numpy(emb), labels, torch.from_numpy(emb), labels, chunk=2.5)


def test_predict_logits_builds_no_graph():
    from transferkit.evaluate import predict_logits
    with torch.enable_grad():
        out = predict_logits(torch.nn.Linear(4, 2), torch.randn(5, 4))
    assert not out.requires_grad  # a graph per chunk held every activation of a scored split (5.7 GB for 8192 images)


def test_group_ids_may_be_names_and_labels_must_be_class_ids():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 3), torch.arange(3).repeat_interleave(4)
    videos = ["v1"] * 4 + ["v2"] * 4 + ["v10"] * 4
    by_number = grouped_accuracy(logits, labels, torch.arange(12) // 4)
    assert grouped_accuracy(logits, labels, videos) == by_number
    assert grouped_accuracy(logits, labels, np.array(videos, dtype=object)) == by_number
    assert classification_report(logits, labels, groups=videos)["group_accuracy"] == by_number
    with pytest.raises(TransferkitError, match="group 'v1' holds samples of different labels"):
        grouped_accuracy(logits, labels, ["v1"] * 6 + ["v2"] * 6)
    with pytest.raises(TransferkitError, match=r"labels must be class ids 0..C-1 .*class_names.index"):
        grouped_accuracy(logits, ["cat"] * 12, videos)
    with pytest.raises(TransferkitError, match="labels must be class ids"):
        classification_report(logits, ["cat"] * 12)


def test_tsne_takes_one_set_per_panel_and_class_labels(tmp_path):
    from transferkit.plots import tsne_embeddings
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 4, generator=g), torch.randn(10, 4, generator=g).numpy()
    assert tsne_embeddings({"p": a}, tmp_path / "one.png").exists()
    assert tsne_embeddings(a, tmp_path / "bare.png", labels=torch.arange(12) % 3).exists()
    names = [f"c{i % 2}" for i in range(22)]
    assert tsne_embeddings({"pair": (a, b), "one": a}, tmp_path / "mix.png", labels={"pair": names}).exists()
    for panels, labels, message in (({"p": (a, b, a)}, None, "must be an N x D array .* got tuple of 3 items"),
                                    ({"p": "a"}, None, "or a pair .source_features, target_features."),
                                    ([a], None, "panels must be a dict"),
                                    ({"p": (a, b)}, [0, 1], "22 points .source then target. but 2 labels")):
        with pytest.raises(TransferkitError, match=message):
            tsne_embeddings(panels, tmp_path / "bad.png", labels=labels)


def test_tsne_colours_each_class_apart_with_one_map_over_every_panel():
    from matplotlib.colors import to_rgb

    from transferkit.plots import tsne_embeddings
    g = torch.Generator().manual_seed(0)

    def legend_colours(fig):
        legend = fig.axes[-1].get_legend()
        return {t.get_text(): to_rgb(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles)}

    def drawn(ax):  # each class's points: (how many, colour)
        return {(len(c.get_offsets()), to_rgb(c.get_facecolor()[0])) for c in ax.collections}

    twelve = torch.arange(120) % 12
    fig = tsne_embeddings(torch.randn(120, 4, generator=g), None, labels=twelve)
    colours = legend_colours(fig)
    assert list(colours) == [str(c) for c in range(12)] and len(set(colours.values())) == 12  # 10 and 11 too
    assert {c for _, c in drawn(fig.axes[0])} == set(colours.values())
    a, b = torch.randn(30, 4, generator=g), torch.randn(40, 4, generator=g)
    fig = tsne_embeddings({"A": a, "B": b}, None, labels={"A": torch.arange(30) % 3, "B": [1] * 15 + [2] * 25})
    colours = legend_colours(fig)
    assert list(colours) == ["0", "1", "2"]  # the classes of both panels, not panel A's alone
    assert drawn(fig.axes[1]) == {(15, colours["1"]), (25, colours["2"])}  # B's classes as the legend names them
    fig = tsne_embeddings({"p": (a, b)}, None, labels=torch.arange(70) % 25)
    assert "25 classes: colours repeat every 20" in fig._suptitle.get_text()
    assert list(legend_colours(fig)) == ["source", "target"]  # the markers, no class names
    fig = tsne_embeddings({"A": a, "B": b}, None, labels={"A": torch.arange(30) % 3})
    assert fig.axes[1].get_title() == "B (no labels)" and drawn(fig.axes[1]) == {(40, to_rgb("0.6"))}
    with pytest.raises(TransferkitError, match="panels' labels together: names of mixed kinds"):
        tsne_embeddings({"A": a, "B": b}, None, labels={"A": torch.arange(30) % 3, "B": ["1"] * 40})


def test_per_unit_plot_takes_tap_rows_and_names_the_keys_it_needs(tmp_path):
    from transferkit.plots import per_unit_accuracy_plot
    tap_rows = [{"unit": "c1", "dim": 8, "svm_accuracy": 0.9, "softmax_accuracy": 0.8},
                {"unit": "c2", "dim": 4, "svm_accuracy": 0.7, "softmax_accuracy": 0.85}]
    assert per_unit_accuracy_plot(tap_rows, tmp_path / "tap.png").stat().st_size > 0
    seeds = tap_rows + [{**r, "svm_accuracy": r["svm_accuracy"] - 0.1} for r in tap_rows]  # two label subsets
    ax = per_unit_accuracy_plot(seeds, None).axes[0]
    svm = next(ln for ln in ax.lines if ln.get_label() == "svm (test, n=2)")
    assert list(svm.get_ydata()) == pytest.approx([0.85, 0.65])
    assert len(ax.collections) == 2  # a standard-error bar per classifier
    no_ratio = [{"candidate_val_accuracy": {"c1": 0.5, "all": 0.6}}]  # no ratio, no test accuracies
    assert per_unit_accuracy_plot(no_ratio, tmp_path / "flex.png").stat().st_size > 0
    with pytest.raises(TransferkitError, match=r"takes flex rows, with candidate_val_accuracy .* tap\(...\)'s rows, "
                                               r"with unit and <classifier>_accuracy; got rows with"
                                               r" keys \['accuracy'\]"):
        per_unit_accuracy_plot([{"accuracy": 0.5}], tmp_path / "x.png")
    with pytest.raises(TransferkitError, match="tap rows need <classifier>_accuracy"):
        per_unit_accuracy_plot([{"unit": "c1"}], tmp_path / "x.png")


def test_the_readme_evaluation_snippet_runs(tmp_path, monkeypatch):
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Evaluation\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Evaluation)", "exec"), {})
    assert (tmp_path / "tsne.png").exists()


def test_accuracies_are_exact_fractions_not_float32_means():
    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.flex import val_scores
    labels = torch.tensor([0] * 50 + [1] * 50)
    pred = labels.clone()
    pred[:21] = 1  # 79 of 100 right: a float32 mean gives 0.7900000214576721
    logits = torch.nn.functional.one_hot(pred, 2).float()
    assert classification_report(logits, labels)["accuracy"] == 0.79
    groups = torch.tensor([0] * 21 + [1] * 29 + [2] * 50)  # the first wrong, the others right
    assert grouped_accuracy(logits, labels, groups) == 2 / 3

    class Fixed:  # the engine's validation scorer sees these logits
        name = "fixed"

        def eval(self):
            pass

        def forward_from_input(self, x):
            return x
    assert Engine(TrainConfig(progress=False))._accuracy(Fixed(), logits, labels)[0] == 0.79
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False))
    torch.nn.init.eye_(net[1].weight)
    assert val_scores(net, Domain("d", logits.view(100, 1, 1, 2), labels, ["a", "b"]))[0] == 0.79


def test_per_unit_plot_counts_only_flex_rows_and_refuses_mixed_methods_or_settings(tmp_path, monkeypatch):
    from transferkit import plots
    flex = [{"method": "flex", "source": "s", "target": "t", "setting": "k=5", "seed": i,
             "candidate_val_accuracy": {"c1": 0.5, "all": 0.6}} for i in range(3)]
    others = [{"method": m, "source": "s", "target": "t", "setting": "k=5", "seed": i, "accuracy": 0.5}
              for m in ("ft_fc1", "finetune") for i in range(3)]
    labels = []
    monkeypatch.setattr(plots, "_finish_unit_plot", lambda fig, ax, path, title, shows: labels.extend(
        line.get_label() for line in ax.lines))
    plots.per_unit_accuracy_plot(flex + others, tmp_path / "u.png")
    assert "val (n=3)" in labels  # was n=9: every row of the run counted
    fast = [{**r, "method": "fast_flex"} for r in flex]
    with pytest.raises(TransferkitError, match="mix methods fast_flex, flex, whose means it would average"):
        plots.per_unit_accuracy_plot(flex + fast, tmp_path / "u.png")
    with pytest.raises(TransferkitError, match="mix settings k=5, k=9"):
        plots.per_unit_accuracy_plot(flex + [{**flex[0], "setting": "k=9"}], tmp_path / "u.png")


def test_tsne_with_labels_names_the_domain_markers_in_a_legend_beside_the_points(tmp_path, monkeypatch):
    from transferkit import plots
    figs = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path, dpi, what, description="": figs.append(fig))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 4, generator=g), torch.randn(10, 4, generator=g)
    labels = [f"c{i % 3}" for i in range(22)]
    plots.tsne_embeddings({"before": (a, b), "after": (a, b)}, tmp_path / "t.png", labels=labels,
                          domain_names=("syndigits", "mnist"))
    fig = figs[-1]
    legend = fig.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["syndigits", "mnist", "c0", "c1", "c2"]  # domains first
    fig.canvas.draw()
    box, panel = legend.get_window_extent(), fig.axes[-1].get_window_extent()
    assert box.x0 >= panel.x1 and box.x1 <= fig.bbox.x1  # beside the points, inside the picture
    many = [f"class_{i % 20}" for i in range(22 * 20)]  # 20 named classes and the markers: two columns, all inside
    plots.tsne_embeddings({"before": (a.repeat(20, 1), b.repeat(20, 1) + 0.1)}, tmp_path / "t.png", labels=many)
    legend = figs[-1].axes[-1].get_legend()
    figs[-1].canvas.draw()
    box = legend.get_window_extent()
    assert len(legend.get_texts()) == 22 and box.y0 >= figs[-1].bbox.y0 and box.x1 <= figs[-1].bbox.x1
