"""Tests from a third mutation pass over evaluate.py, retrieval.py, grouped.py and fewshot_eval.py,
after test_evaluate, test_retrieval, test_fewshot_eval, test_eval_edges, test_evaluate_mutation and
test_semantic_fewshot_mutation: module_device falling back to a buffer; grouped_accuracy's named error
for no samples; retrieval_map keeping the query's own item when the source and tuned embeddings
coincide (two splits, never leave-one-out); a gallery of another dtype not taken for the queries;
gallery_labels without a gallery and gallery_groups without groups refused; grouped_views keeping a
domain's groups and recording its views; sample_k_groups' no-groups error and its parts' provenance;
_check_episodes_fit's offered number of queries (the n_way-th largest class, never negative); N x 0
features refused; evaluate_episodes' ci95 (mean_ci95 of its episodes, NaN for one); an empty label set
named. Each test fails when the code it names is changed in the way its comment says.

Judged equivalent, so not tested: _order_matters without `relevant & ~left_out` (only finite cuts
count, and left-out items lie at +inf), without `near[:, -1].isfinite()` (an infinite cut holds only
left-out items, none relevant once masked) and without `near[:, 1:].isfinite()` (two +inf neighbours
are both misses); _sample drawing the last n_way classes of its permutation, not the first (another
valid draw only).

average_precision_at_k's `exclude_self in (None, True, False)` check and its `gallery=None` with
exclude_self=False check, which the pass found alive at its end, are killed by the last test (added
afterwards). Left surviving: none of the mutants tried.
"""

import warnings

import pytest
import torch
from helpers import toy_domain


# ---- evaluate --------------------------------------------------------------------------------
def test_module_device_falls_back_to_a_buffer():
    # mutant: module_device reads parameters only (a module of buffers alone gets None, its inputs stay put)
    from transferkit.evaluate import module_device, predict_logits
    m = torch.nn.Module()
    m.register_buffer("scale", torch.ones(1, device="meta"))
    assert module_device(m) == torch.device("meta")
    assert module_device(torch.nn.Identity()) is None  # neither parameter nor buffer
    seen = []
    m.forward = lambda x: seen.append(x.device) or torch.zeros(len(x), 2)
    predict_logits(m, torch.rand(3, 2))
    assert seen == [torch.device("meta")]



def test_grouped_accuracy_of_no_samples_is_a_named_error():
    # mutant: `len(groups) > 0` -> `>= 0` in grouped_accuracy's shape check (an empty input fails in labels.min())
    from transferkit.errors import TransferkitError
    from transferkit.evaluate import grouped_accuracy
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(TransferkitError, match=r"N x C logits, N labels and N group ids, got \(0, 2\), 0 and 0"):
        grouped_accuracy(torch.zeros(0, 2), empty, empty)

# ---- retrieval -------------------------------------------------------------------------------
def test_retrieval_map_counts_the_same_embedding_as_a_match_across_two_splits():
    # mutant: retrieval_map without exclude_self=False (the default leaves the query out when the embeddings coincide)
    from transferkit.retrieval import map_at_k, retrieval_map
    d = toy_domain(8, seed=0, classes=2)
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [8.0], [12.0], [20.0], [21.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leave-one-out warning: the splits are two, their items are not the same
        got = retrieval_map(None, None, d, d, k=2, gallery=x, queries=x)
    assert got == map_at_k(x, d.labels, x.clone(), d.labels, k=2, exclude_self=False)
    assert got != map_at_k(x, d.labels, k=2)


def test_a_gallery_of_another_dtype_is_not_taken_for_the_queries():
    # mutant: _same_items without the dtype check (a float64 gallery equal in value counts as the queries' copy)
    from transferkit.retrieval import map_at_k
    x, y = torch.tensor([[0.0], [1.0], [3.0], [7.0]]), torch.tensor([0, 0, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert map_at_k(x, y, x.double(), y, k=2) == 0.875  # each query its own first match, no warning


def test_gallery_labels_without_a_gallery_are_refused():
    # mutant: the check of gallery_labels without a gallery dropped (the labels are silently replaced by the queries')
    from transferkit.errors import TransferkitError
    from transferkit.retrieval import map_at_k
    x, y = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0, 0, 1])
    with pytest.raises(TransferkitError, match="gallery_labels without a gallery"):
        map_at_k(x, y, gallery_labels=torch.tensor([1, 1, 0]), k=2)


def test_gallery_groups_without_groups_are_refused():
    # mutant: the check of gallery_groups without groups dropped (the gallery's group ids are silently ignored)
    from transferkit.errors import TransferkitError
    from transferkit.retrieval import map_at_k
    x, y = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0, 0, 1])
    with pytest.raises(TransferkitError, match="gallery_groups without groups"):
        map_at_k(x, y, x + 0.5, y, k=2, gallery_groups=[1, 2, 3])


# ---- grouped ---------------------------------------------------------------------------------
def test_grouped_views_keep_the_domain_s_groups_and_record_their_making():
    # mutants: grouped_views numbering every image as its own group when the domain has groups; "grouped_views"
    # left out of the provenance
    from transferkit.domain import Domain
    from transferkit.grouped import grouped_views
    base = toy_domain(3, classes=3)
    d = Domain("vid", base.images, torch.tensor([0, 0, 1]), base.class_names, groups=torch.tensor([5, 5, 7]))
    views = grouped_views(d, 2, shifts=(), seed=4)
    assert views.groups.tolist() == [5, 5, 5, 5, 7, 7]
    assert grouped_views(base, 2, shifts=()).groups.tolist() == [0, 0, 1, 1, 2, 2]
    assert {k: views.provenance[k] for k in ("grouped_views", "group_shifts", "group_seed")} == {
        "grouped_views": 2, "group_shifts": [], "group_seed": 4}


def test_sample_k_groups_names_a_domain_without_groups_and_records_the_draw():
    # mutants: sample_k_groups without its no-groups check; "k_shot_seed" left out of the parts' provenance
    from transferkit.errors import TransferkitError
    from transferkit.grouped import grouped_views, sample_k_groups
    base = toy_domain(8, classes=2)
    with pytest.raises(TransferkitError, match="domain 'toy' has no groups"):
        sample_k_groups(base, 1, 0)
    labeled, unlabeled = sample_k_groups(grouped_views(base, 2, shifts=()), 1, 3)
    assert len(labeled) == 4 and len(unlabeled) == 12
    for part, name in ((labeled, "labeled"), (unlabeled, "unlabeled")):
        got = part.provenance
        assert (got["k_shot_groups"], got["k_shot_seed"], got["part"]) == (1, 3, name)


# ---- fewshot_eval ----------------------------------------------------------------------------
def test_episodes_fit_offers_the_queries_of_the_n_way_th_largest_class_and_never_a_negative_number():
    # mutants: `fits and fits >= 1` -> `fits` ("--n-query -2" offered); fits from the smallest class, not the n_way-th
    from transferkit.domain import Domain
    from transferkit.errors import TransferkitError
    from transferkit.fewshot_eval import _check_episodes_fit
    base = toy_domain(21, classes=3)
    d = Domain("t", base.images, torch.tensor([0] * 10 + [1] * 8 + [2] * 3), ["a", "b", "c"])
    with pytest.raises(TransferkitError, match="--n-query 3 fits it"):
        _check_episodes_fit(d, 2, [5], 15)  # the two largest classes hold 5 + 3 images
    with pytest.raises(TransferkitError, match="fewer shots or classes fit it with fewer queries, "
                                               "e.g. --n-way 3 --k-shot 2 --n-query 1") as e:
        _check_episodes_fit(d, 3, [5], 15)  # the third class holds only 3 images: no number of queries fits
    assert "--n-query -" not in str(e.value) and "c (3)" in str(e.value)
    with pytest.raises(TransferkitError, match="--n-query 1 fits it"):
        _check_episodes_fit(d, 3, [2], 15)


def test_episodes_refuse_features_of_no_dimension():
    # mutant: `features.shape[1] >= 1` dropped (N x 0 features score every query as the first class)
    from transferkit.errors import TransferkitError
    from transferkit.fewshot_eval import episode_accuracies
    labels = torch.arange(6) % 2
    with pytest.raises(TransferkitError, match=r"N x D features and N labels, got \(6, 0\) and 6"):
        episode_accuracies(torch.zeros(6, 0), labels, n_way=2, k_shot=1, n_query=1, episodes=2)


def test_evaluate_episodes_reports_the_95_percent_interval_of_its_episodes():
    # mutant: evaluate_episodes reporting the episodes' std as ci95 (not mean_ci95's 1.96 std / sqrt(E); NaN for one)
    from transferkit.fewshot_eval import episode_accuracies, evaluate_episodes
    feats, labels = torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), torch.arange(30) % 3
    accs = episode_accuracies(feats, labels, "prototype", n_way=3, k_shot=1, n_query=2, episodes=8)
    out = evaluate_episodes(feats, labels, heads="prototype", n_way=3, k_shot=1, n_query=2, episodes=8)["prototype"]
    assert float(accs.std()) > 0
    assert out["mean"] == pytest.approx(float(accs.mean()), abs=1e-12)
    assert out["ci95"] == pytest.approx(1.96 * float(accs.std()) / 8 ** 0.5, rel=1e-9)
    one = evaluate_episodes(feats, labels, heads="prototype", n_way=3, k_shot=1, n_query=2, episodes=1)["prototype"]
    assert one["ci95"] != one["ci95"] and "one episode" in one["note"]  # NaN


def test_episodes_of_no_labels_are_named_as_such():
    # mutant: _sample's check of an empty label set dropped (the error then counts 0 classes instead)
    from transferkit.errors import TransferkitError
    from transferkit.fewshot_eval import sample_episodes
    with pytest.raises(TransferkitError, match="non-empty set of class ids"):
        sample_episodes(torch.zeros(0, dtype=torch.long), 2, 1, 1, 1, torch.Generator().manual_seed(0))


def test_exclude_self_is_a_switch_and_cannot_keep_queries_without_a_gallery():
    # kills: average_precision_at_k's `exclude_self in (None, True, False)` check dropped ("yes" taken as true);
    # its `exclude_self is not False` check for gallery=None dropped (exclude_self=False silently overridden)
    from transferkit.errors import TransferkitError
    from transferkit.retrieval import average_precision_at_k
    feats, labels = torch.eye(4), torch.tensor([0, 0, 1, 1])
    with pytest.raises(TransferkitError, match="exclude_self must be True, False or None, got 'yes'"):
        average_precision_at_k(feats, labels, feats, labels, k=2, exclude_self="yes")
    with pytest.raises(TransferkitError, match=r"cannot keep the query itself \(exclude_self=False\)"):
        average_precision_at_k(feats, labels, k=2, exclude_self=False)
