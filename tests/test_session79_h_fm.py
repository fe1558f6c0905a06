"""Session 79 (h_fm): clear refusals of the public loss helpers' misuse, mixed dtypes promoted, the few-episode
interval's note."""

import pytest
import torch

from transferkit.errors import TransferkitError
from transferkit.fewshot_eval import evaluate_episodes
from transferkit.heads import prototype_logits
from transferkit.losses import coral, difference_loss, mmd2, scale_invariant_mse
from transferkit.methods.semantic import matching_log_probs, nearest_support_scores, similarity_entropy


@pytest.mark.parametrize("fn, name", [(mmd2, "mmd2"), (coral, "coral")])
def test_discrepancy_losses_refuse_one_dimensional_features(fn, name):
    with pytest.raises(TransferkitError, match=rf"{name} needs N x D.*\(8,\) and \(6,\)"):
        fn(torch.randn(8), torch.randn(6))


def test_difference_loss_refuses_codes_of_two_batch_sizes():
    with pytest.raises(TransferkitError, match=r"difference_loss.*same B samples.*\(4, 3\) and \(5, 3\)"):
        difference_loss(torch.randn(4, 3), torch.randn(5, 3))


def test_scale_invariant_mse_refuses_to_broadcast():
    with pytest.raises(TransferkitError, match=r"scale_invariant_mse.*same.*\(4, 3\) and \(1, 3\)"):
        scale_invariant_mse(torch.randn(4, 3), torch.randn(1, 3))


def test_mixed_dtypes_are_computed_in_the_promoted_dtype():
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g)
    for fn in (prototype_logits, lambda a, b: similarity_entropy(a, b, 1.0)):
        mixed = fn(q, s)
        assert mixed.dtype == torch.float64
        assert torch.allclose(mixed, fn(q, s.double()))
    labels = torch.tensor([0, 1, 2])
    for fn in (matching_log_probs, nearest_support_scores):
        assert torch.allclose(fn(q.float(), s.double(), labels, 3), fn(q.double(), s.double(), labels, 3))


@pytest.mark.parametrize("fn", [matching_log_probs, nearest_support_scores])
def test_support_labels_out_of_range_are_refused(fn):
    q, s = torch.randn(2, 4), torch.randn(3, 4)
    with pytest.raises(TransferkitError, match=rf"{fn.__name__}: support labels.*\[0, 2\].*from 0 to 4"):
        fn(q, s, torch.tensor([0, 1, 4]), 3)
    with pytest.raises(TransferkitError, match=r"from -1 to 1"):
        fn(q, s, torch.tensor([0, 1, -1]), 3)


def test_few_episodes_note_that_the_normal_interval_is_too_narrow():
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(60, 8, generator=g), torch.arange(6).repeat(10)
    few = evaluate_episodes(features, labels, "prototype", n_way=3, k_shot=1, n_query=2, episodes=5)["prototype"]
    assert few["episodes"] == 5 and few["ci95"] > 0
    assert "5 episodes" in few["note"] and "normal approximation" in few["note"] and "too narrow" in few["note"]
    many = evaluate_episodes(features, labels, "prototype", n_way=3, k_shot=1, n_query=2,
                             episodes=30)["prototype"]  # the z interval is fine from 30 on
    assert "note" not in many


def test_episodes_note_says_a_few_episodes_interval_is_too_narrow():
    from transferkit.fewshot_eval import episodes_note
    row = {"episodes": 600, "classes": 5, "setting": "5-way 1-shot (k=2)"}
    assert "too narrow" not in episodes_note([row])
    assert "too narrow" not in episodes_note([{**row, "episodes": 1}])  # no interval at all there
    assert "too narrow" in episodes_note([row, {**row, "episodes": 10, "setting": "5-way 5-shot (k=2)"}])
