"""AP@k retrieval of seed 002 §5.3 against a plain loop."""

import pytest
import torch

from transferkit.retrieval import average_precision_at_k, map_at_k


def loop_ap(q, ql, g, gl, k):
    out = []
    for x, y in zip(q, ql):
        order = torch.argsort(((g - x) ** 2).sum(1), stable=True)[:k]
        hits, total = 0, 0.0
        for i, j in enumerate(order.tolist(), 1):
            if gl[j] == y:
                hits += 1
                total += hits / i
        out.append(total / max(1, min(k, int((gl == y).sum()))))
    return torch.tensor(out)


def test_matches_loop_on_random_embeddings():
    g = torch.Generator().manual_seed(0)
    q, g_emb = torch.randn(37, 5, generator=g), torch.randn(53, 5, generator=g)
    ql, gl = torch.randint(0, 4, (37,), generator=g), torch.randint(0, 4, (53,), generator=g)
    for k in (1, 5, 10):
        assert torch.allclose(average_precision_at_k(q, ql, g_emb, gl, k, chunk=8), loop_ap(q, ql, g_emb, gl, k),
                              atol=1e-6)


def test_perfect_and_worst_cases():
    gl = torch.arange(4).repeat_interleave(3)
    g = torch.nn.functional.one_hot(gl, 4).float()
    assert map_at_k(g, gl, k=3) == pytest.approx(1.0)  # each among the others (leave-one-out)
    assert map_at_k(g, (gl + 1) % 4, g, gl, k=2, exclude_self=True) == pytest.approx(0.0)  # 2 others at 0
    ap = average_precision_at_k(torch.tensor([[0.0]]), torch.tensor([1]), torch.tensor([[0.0], [1.0], [2.0]]),
                                torch.tensor([0, 1, 1]), k=2)
    assert ap.item() == pytest.approx(0.5 / 2)  # relevant at rank 2 only: P@2 = 1/2, normalised by min(k, R) = 2


@pytest.mark.parametrize("q_labels, g_labels, k, message", [
    ([0, -1], [0, 1, 1], 2, "query labels must be class ids >= 0"),
    ([0], [0, 1, 1], 2, "one label per embedding"),
    ([0, 1], [0, 1, 1], 2.5, "integer k >= 1"),
])
def test_retrieval_input_errors(q_labels, g_labels, k, message):
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match=message):
        map_at_k(torch.randn(2, 3), torch.tensor(q_labels), torch.randn(3, 3), torch.tensor(g_labels), k=k)


def test_nan_embeddings_are_an_error():
    from transferkit.errors import TransferkitError
    q = torch.randn(2, 3)
    q[1, 0] = float("nan")
    with pytest.raises(TransferkitError, match="NaN or infinite"):
        map_at_k(q, torch.tensor([0, 1]), torch.randn(3, 3), torch.tensor([0, 1, 1]))


def test_no_query_is_an_error_and_near_duplicates_rank_exactly():
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="at least one query"):
        map_at_k(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.randn(3, 3), torch.tensor([0, 1, 1]))
    torch.manual_seed(0)
    base = 300 + torch.randn(1, 64)  # large embeddings 1e-2 apart: float32 x.x - 2 x.y + y.y loses them
    gallery = torch.cat([base, base + 1e-2, base + 2e-2, 300 + torch.randn(27, 64)])
    labels = torch.tensor([0, 1, 1] + [1] * 27)
    assert map_at_k(base.repeat(30, 1), torch.zeros(30, dtype=torch.long), gallery, labels, k=1) == 1.0


def test_retrieval_map_embeds_queries_with_the_tuned_net_and_the_gallery_with_the_source_net():
    from helpers import tiny_net, toy_domain

    from transferkit.retrieval import embed, retrieval_map
    torch.manual_seed(0)
    source, tuned = tiny_net(4), tiny_net(4)
    gallery, queries = toy_domain(24, seed=0), toy_domain(12, seed=1)
    got = retrieval_map(source, tuned, gallery, queries, k=5)
    assert got == map_at_k(embed(tuned, queries.images), queries.labels, embed(source, gallery.images),
                           gallery.labels, 5)
    assert got != retrieval_map(tuned, source, gallery, queries, k=5)  # the roles are not interchangeable
    assert got == retrieval_map(None, tuned, gallery, queries, k=5, gallery=embed(source, gallery.images))


def test_embed_takes_bytes_restores_the_mode_and_names_a_wrong_shape():
    from transferkit.backbones import build_backbone
    from transferkit.errors import TransferkitError
    from transferkit.retrieval import embed
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28).train()
    x = torch.rand(5, 1, 28, 28)
    as_bytes = (x * 255).round().to(torch.uint8)
    assert torch.equal(embed(net, as_bytes), embed(net, as_bytes.float() / 255)) and net.training
    assert embed(net, x[:0]).shape == (0, net.embed_dim)
    with pytest.raises(TransferkitError, match=r"embed: images of shape \(3, 28, 28\)"):
        embed(net, torch.rand(2, 3, 28, 28))


def test_retrieval_map_matches_query_and_gallery_classes_by_name():
    from transferkit.backbones import from_sequential
    from transferkit.domain import Domain
    from transferkit.retrieval import embed, retrieval_map
    torch.manual_seed(0)
    net = from_sequential(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)))
    assert embed(net, torch.rand(2, 1, 4, 4)).shape == (2, 8)  # a net without input_shape
    x, y = torch.rand(30, 1, 4, 4), torch.arange(30) % 3
    gallery = Domain("g", x, y, ["a", "b", "c"])
    same = retrieval_map(net, net, gallery, Domain("q", x[:12], y[:12], ["a", "b", "c"]))
    keep = y[:12] >= 1  # the queries of classes b and c, relabelled 0 and 1
    narrowed = retrieval_map(net, net, gallery, Domain("q", x[:12][keep], y[:12][keep] - 1, ["b", "c"]))
    per_query = average_precision_at_k(embed(net, x[:12]), y[:12], embed(net, x), y, 10)
    assert narrowed == pytest.approx(float(per_query[keep].mean())) and same == pytest.approx(float(per_query.mean()))
    unknown = retrieval_map(net, net, gallery, Domain("q", x[:4], torch.zeros(4, dtype=torch.long), ["z"]))
    assert unknown == 0.0  # a class the gallery lacks retrieves nothing relevant


def test_equal_distances_rank_in_gallery_order():
    same = torch.zeros(6, 3)  # a collapsed embedding: every gallery item at the same distance
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    q, ql = torch.ones(1, 3), torch.tensor([0])
    for k in (1, 3, 6):
        assert torch.allclose(average_precision_at_k(q, ql, same, labels, k), loop_ap(q, ql, same, labels, k))
    assert float(average_precision_at_k(q, ql, same, labels, 3)) == 0.0  # the three first items are of class 1
    g = torch.Generator().manual_seed(0)  # many ties: binary embeddings
    q, g_emb = (torch.rand(40, 4, generator=g) > 0.5).float(), (torch.rand(90, 4, generator=g) > 0.5).float()
    ql, gl = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (90,), generator=g)
    assert torch.allclose(average_precision_at_k(q, ql, g_emb, gl, 10, chunk=7), loop_ap(q, ql, g_emb, gl, 10))


def test_a_warning_counts_the_queries_whose_ap_the_order_of_equal_distances_changes():
    """A collapsed embedding against a gallery sorted by class scored 3x chance silently (a trial)."""
    import warnings
    labels = torch.arange(10).repeat_interleave(20)  # sorted by class, as the built-in splits are
    with pytest.warns(UserWarning, match=r"retrieval: 30 of 30 queries have relevant and other gallery items at one "
                                         r"distance among their 10 nearest; .* depends on how the gallery is ordered"):
        collapsed = average_precision_at_k(torch.zeros(30, 4), torch.arange(10).repeat(3), torch.zeros(200, 4),
                                           labels, 10)
    assert float(collapsed.mean()) == pytest.approx(0.1)  # gallery order: class 0's 3 queries score 1, chance ~0.01
    gallery = torch.cat([torch.eye(10), torch.eye(10)])  # two copies of each item: ties of one class only
    dup_labels = torch.arange(10).repeat(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert average_precision_at_k(torch.eye(10), torch.arange(10), gallery, dup_labels, 2).tolist() == [1.0] * 10
    far = torch.tensor([[0.0], [1.0], [-1.0], [5.0]])  # the 1-nearest is one of two items at distance 1, of two classes
    with pytest.warns(UserWarning, match="1 of 1 queries"):
        average_precision_at_k(torch.zeros(1, 1), torch.tensor([0]), far[1:], torch.tensor([0, 1, 0]), 1)
    with warnings.catch_warnings(record=True) as caught:  # a class the gallery lacks: no hit whatever the order
        warnings.simplefilter("always")
        average_precision_at_k(torch.zeros(1, 1), torch.tensor([2]), far[1:], torch.tensor([0, 1, 0]), 2)
    assert [str(w.message) for w in caught if "at one distance" in str(w.message)] == []  # only "no relevant item"


def test_the_top_k_ranking_is_exactly_a_stable_sort_of_the_distances():
    """AP@k ranks by one integer key per (distance, gallery index) and takes its k smallest:
    the same items, in the same order, as a full stable argsort of the distances."""
    def by_sort(q, ql, g_emb, gl, k):
        dist = torch.cdist(q, g_emb, compute_mode="donot_use_mm_for_euclid_dist")
        hits = gl[dist.argsort(dim=1, stable=True)[:, :k]] == ql[:, None]
        precision = hits.long().cumsum(1) / torch.arange(1, k + 1)
        return (precision * hits).sum(1) / torch.bincount(gl, minlength=5)[ql].clamp(max=k).clamp_min(1)
    g = torch.Generator().manual_seed(1)
    q, g_emb = torch.randn(300, 8, generator=g), torch.randn(400, 8, generator=g)
    ql, gl = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (400,), generator=g)
    for qq, gg in ((q, g_emb), ((q * 2).round()[:, :2], (g_emb * 2).round()[:, :2]), (q * 0, g_emb * 0)):
        for k in (1, 7, 400):
            assert torch.equal(average_precision_at_k(qq, ql, gg, gl, k, chunk=64), by_sort(qq, ql, gg, gl, k))


def test_leave_one_out_within_one_set():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    y = torch.tensor([0, 0, 1, 1])
    # by hand: 0 and 1 find each other first, 6 finds 3; 3's two nearest others are 1 (d=2), then 0 (d=3, before 6
    # in gallery order): no hit in the top 2
    assert average_precision_at_k(x, y, k=2).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert map_at_k(x, y, x.clone(), y, k=2, exclude_self=True) == 0.75
    assert map_at_k(x, y, x, y, k=2, exclude_self=False) == 0.875  # each query its own first match: 3 scores 1/2
    with pytest.warns(UserWarning, match="the gallery holds the queries themselves.*leave-one-out"):
        assert map_at_k(x, y, x, y, k=2) == 0.75  # the same tensor twice: left out, with a warning
    assert torch.equal(average_precision_at_k(x, y, k=3, chunk=1), loop_ap(x, y, x, y, 4)[:0].new_tensor(
        [float(loop_ap(x[i:i + 1], y[i:i + 1], torch.cat([x[:i], x[i + 1:]]), torch.cat([y[:i], y[i + 1:]]), 3))
         for i in range(4)]))
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="as many queries as gallery items"):
        map_at_k(x[:2], y[:2], x, y, exclude_self=True)
    with pytest.raises(TransferkitError, match="besides the query"):
        map_at_k(x[:1], y[:1])


def test_leave_one_out_of_random_embeddings_is_chance():
    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(2000, 16, generator=g), torch.randint(0, 10, (2000,), generator=g)
    chance = map_at_k(emb[:1000], labels[:1000], emb[1000:], labels[1000:], k=10)  # two disjoint sets
    assert map_at_k(emb, labels, k=10) == pytest.approx(chance, abs=0.01)
    assert map_at_k(emb, labels, emb, labels, k=10, exclude_self=False) > 3 * chance  # itself at rank 1


def test_labels_may_be_names_matched_by_equality():
    q, g = torch.tensor([[0.0], [5.0]]), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    ids = average_precision_at_k(q, [0, 1], g, [0, 1, 0, 1], k=4)
    assert torch.equal(average_precision_at_k(q, ["cat", "dog"], g, ["cat", "dog", "cat", "dog"], k=4), ids)
    assert map_at_k(g, ["a", "b", "a", "b"], k=1) == map_at_k(g, [0, 1, 0, 1], k=1)  # leave-one-out
    assert map_at_k(q[:1], ["owl"], g, ["cat", "dog", "cat", "dog"], k=2) == 0.0  # a class the gallery lacks
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="all names .strings. or all numbers"):
        map_at_k(q, ["cat", "dog"], g, [0, 1, 0, 1])


def test_groups_leave_out_the_query_s_whole_video():
    from transferkit.errors import TransferkitError
    x = torch.tensor([[0.0], [0.1], [1.0], [1.2], [2.1]])
    y = torch.tensor([0, 0, 1, 0, 1])
    videos = ["v1", "v1", "v2", "v3", "v4"]  # frames 0 and 1 are one video
    # by hand, k=3: frame 0 ranks 2 (miss), 3 (hit), 4 (miss), frame 1 left out: AP = (1/2) / min(3, R=1) = 1/2
    # (without groups frame 1 was its first hit: (1 + 2/3) / 2); frame 1 alike; frame 2 ranks 3, 1, 0 (no B):
    # 0; frame 3 ranks 2, 4, 1: (1/3) / 2; frame 4 ranks 3, 2 (hit), 1: (1/2) / 1
    expected = [0.5, 0.5, 0.0, 1 / 6, 0.5]
    assert average_precision_at_k(x, y, k=3, groups=videos).tolist() == pytest.approx(expected)
    assert average_precision_at_k(x, y, k=3)[:2].tolist() == pytest.approx([5 / 6, 5 / 6])  # the inflation
    assert map_at_k(x, y, k=3, groups=[7, 7, 2, 3, 4]) == pytest.approx(sum(expected) / 5)  # integer ids
    # k=4 reaches past the 3 items left to frame 0: the left-out frame 1 (ranked last) is no hit
    assert average_precision_at_k(x[:1], y[:1], x, y, k=4, exclude_self=False, groups=["v1"],
                                  gallery_groups=videos).tolist() == [0.5]
    with pytest.raises(TransferkitError, match="for a separate gallery give gallery_groups= too"):
        map_at_k(x[:1], y[:1], x[1:], y[1:], groups=["v1"])
    with pytest.raises(TransferkitError, match="5 queries with 4 group ids"):
        map_at_k(x, y, groups=videos[:4])


def test_group_ids_far_apart_are_numbered_without_overflow():
    x = torch.tensor([[0.0], [0.1], [1.0], [1.2], [2.1]])
    y = torch.tensor([0, 0, 1, 0, 1])
    stamps = [-(2 ** 62), 2 ** 62, 5, 6, 7]  # five videos; shifted ids * 2 classes wrapped the first two together
    assert average_precision_at_k(x, y, k=3, groups=stamps).tolist() == average_precision_at_k(x, y, k=3).tolist()
