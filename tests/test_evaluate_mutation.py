"""Known values and named errors of the evaluation code (evaluate, retrieval, grouped, fewshot_eval)
that a second mutation-testing pass found unpinned: each test fails when the code it names is
changed in the way its comment says."""

import math
import statistics
import warnings

import pytest
import torch
import torch.nn.functional as F

from transferkit.domain import Domain
from transferkit.errors import TransferkitError


# ---- evaluate --------------------------------------------------------------------------------
def test_mean_se_of_no_values_is_a_named_error_not_a_zero_division():
    from transferkit.evaluate import mean_se, mean_se_text
    for call in (lambda: mean_se([]), lambda: mean_se_text(iter(()))):  # a ZeroDivisionError without the check
        with pytest.raises(TransferkitError, match="mean of no values"):
            call()


def test_mean_recall_leaves_out_classes_without_images():
    from transferkit.evaluate import mean_recall
    # class 1 has no image: the mean is over classes 0 and 2 (scikit-learn's balanced accuracy), not a 0 for
    # class 1 pulling it down to (3/4 + 0 + 1/2) / 3
    assert mean_recall([3, 0, 1], [4, 0, 2]) == (3 / 4 + 1 / 2) / 2
    assert mean_recall([0, 5], [0, 5]) == 1.0


def test_grouped_accuracy_refuses_fractional_group_ids():
    from transferkit.evaluate import grouped_accuracy
    logits, labels = torch.eye(2)[[0, 0, 1]], torch.tensor([0, 0, 1])
    assert grouped_accuracy(logits, labels, torch.tensor([4, 4, 9])) == 1.0
    for groups in (torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 1.5])):  # float ids were taken as they are
        with pytest.raises(TransferkitError, match="group ids must be a 1-D tensor of integers"):
            grouped_accuracy(logits, labels, groups)


# ---- retrieval -------------------------------------------------------------------------------
def test_leave_one_out_with_k_beyond_the_gallery_never_counts_the_query_itself():
    from transferkit.retrieval import average_precision_at_k, map_at_k
    x, y = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0, 0, 1])
    # k=10 is cut to the 2 other items; a k of 3 would reach the query itself (ranked last, at +inf) and
    # count it as a hit: (1 + 2/3) / min(3, R=1) for the first two queries
    assert average_precision_at_k(x, y, k=10).tolist() == [1.0, 1.0, 0.0]
    assert map_at_k(x, y, x.clone(), y, k=10, exclude_self=True) == pytest.approx(2 / 3)


def test_a_copy_of_the_queries_as_gallery_is_left_one_out_like_the_same_tensor():
    from transferkit.retrieval import map_at_k
    x, y = torch.tensor([[0.0], [1.0], [3.0], [7.0]]), torch.tensor([0, 0, 1, 1])  # no two distances tie
    with pytest.warns(UserWarning, match="the gallery holds the queries themselves"):
        assert map_at_k(x, y, x.clone(), y, k=2) == 0.75  # a copy (another tensor, equal values) is detected too
    assert map_at_k(x, y, x.clone(), y, k=2, exclude_self=False) == 0.875


def test_leave_one_out_refuses_gallery_groups_other_than_the_queries():
    from transferkit.retrieval import map_at_k
    x, y = torch.tensor([[0.0], [0.1], [1.0], [1.2]]), torch.tensor([0, 0, 1, 0])
    assert map_at_k(x, y, k=2, groups=[1, 1, 2, 3], gallery_groups=[1, 1, 2, 3]) == map_at_k(x, y, k=2,
                                                                                           groups=[1, 1, 2, 3])
    with pytest.raises(TransferkitError, match="gallery_groups must equal groups"):
        map_at_k(x, y, k=2, groups=[1, 1, 2, 3], gallery_groups=[1, 2, 2, 3])


# ---- grouped ---------------------------------------------------------------------------------
def test_grouped_views_are_clipped_to_the_unit_range():
    from transferkit.grouped import grouped_views
    images = torch.full((2, 1, 4, 4), 0.5)
    images[0, 0, 0, 0], images[1, 0, 0, 0] = -5e-5, 1 + 5e-5  # within the tolerance a domain takes
    d = Domain("edge", images, torch.tensor([0, 1]), ["a", "b"])
    views = grouped_views(d, 2, shifts=("inversion",))  # 1 - x keeps the overshoot: grouped_views clips it
    assert float(views.images.min()) == 0.0 and float(views.images.max()) == 1.0
    assert torch.equal(views.images, (1 - images.repeat_interleave(2, 0)).clamp(0, 1))


def test_the_grouped_suffix_ignores_case():
    from transferkit.grouped import parse_grouped
    assert parse_grouped("digits@GROUPED3") == ("digits", 3) == parse_grouped("digits@Grouped3")
    assert parse_grouped("digits@groupedx") is None


# ---- fewshot_eval ----------------------------------------------------------------------------
def test_mean_ci95_is_computed_in_float64():
    from transferkit.fewshot_eval import mean_ci95
    accs = [1 / 15, 2 / 15, 4 / 15, 11 / 15]  # episode accuracies, float64 fractions
    mean, ci = mean_ci95(torch.tensor(accs, dtype=torch.float64))
    assert mean == pytest.approx(statistics.fmean(accs), rel=1e-15, abs=0)  # float32: off by ~1e-8
    assert ci == pytest.approx(1.96 * statistics.stdev(accs) / 2, rel=1e-13, abs=0)


def test_episodes_do_not_warn_about_class_ids_without_samples():
    from transferkit.fewshot_eval import evaluate_episodes
    labels = torch.tensor([0] * 6 + [2] * 6 + [3] * 6)  # no sample of class 1: no class to leave out
    feats = torch.randn(18, 4, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = evaluate_episodes(feats, labels, heads="prototype", n_way=2, k_shot=1, n_query=2, episodes=4)
    assert out["prototype"]["classes"] == 3


def test_two_episodes_have_an_interval_and_no_one_episode_note():
    from transferkit.fewshot_eval import evaluate_episodes
    feats, labels = torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), torch.arange(30) % 3
    out = evaluate_episodes(feats, labels, heads="prototype", n_way=3, k_shot=1, n_query=2, episodes=2)["prototype"]
    assert out["episodes"] == 2 and math.isfinite(out["ci95"])
    assert "one episode" not in out["note"] and "2 episodes" in out["note"]  # the few-episodes note, not one's


def test_the_cosine_head_matches_a_per_episode_baseline_plus_plus_reference():
    """Baseline++ (Chen et al. 2019) per episode, as a plain loop: weights from a seeded N(0, 0.01^2) draw,
    full-batch Adam on ``scale * cos(f, w_c)`` of the normalised support features, the mean cross entropy."""
    from transferkit.fewshot_eval import episode_accuracies, sample_episodes
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(6).repeat_interleave(10)
    feats = torch.randn(60, 5, generator=g) + 0.8 * torch.eye(5).repeat(2, 1)[labels]
    n, k, q, e, steps, lr, scale = 4, 2, 5, 12, 20, 0.05, 10.0
    sup, qry, _ = sample_episodes(labels, n, k, q, e, torch.Generator().manual_seed(7))
    init = torch.randn(e, n, 6, generator=torch.Generator().manual_seed(0)) * 0.01  # the bias column is unused
    want = []
    for i in range(e):
        x = F.normalize(feats[sup[i]].reshape(n * k, 5), dim=-1)
        y = torch.arange(n).repeat_interleave(k)
        w = init[i, :, :-1].clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        for _ in range(steps):
            loss = F.cross_entropy(scale * x @ F.normalize(w, dim=-1).T, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = scale * F.normalize(feats[qry[i]].reshape(n * q, 5), dim=-1) @ F.normalize(w, dim=-1).T
        want.append(float((logits.argmax(1) == torch.arange(n).repeat_interleave(q)).double().mean()))
    got = episode_accuracies(feats, labels, "cosine", n_way=n, k_shot=k, n_query=q, episodes=e, seed=7,
                             steps=steps, lr=lr, scale=scale)
    # 0 flips here; zero initial weights (no direction to normalise) flip 22 of the 240 queries
    assert float((got - torch.tensor(want, dtype=torch.float64)).abs().sum()) * n * q <= 1 + 1e-9
