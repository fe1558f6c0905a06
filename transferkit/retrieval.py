"""Retrieval of target images among source images in embedding space (seed 002 §5.3, Table 4).

Source images (the source validation split) are embedded by the source network, target
images by the tuned network; every target image queries its ``k`` nearest source
neighbours (Euclidean distance) and a neighbour is relevant when it has the same class.
Average precision at ``k`` of one query, with ``rel_i`` the relevance of the ``i``-th
neighbour and ``R`` the number of relevant gallery items::

    AP@k = 1 / min(k, R) * sum_{i <= k} P@i * rel_i,     P@i = (1/i) sum_{j <= i} rel_j

and mAP@k (reported as AP@k in seed 002 Table 4) is its mean over queries. A query with no
relevant gallery item (``R = 0``: its class is not in the gallery, or only the query itself
or its group is) scores ``AP@k = 0`` and counts in the mean, with a warning that counts such
queries (a target class the source lacks lowers mAP@k). Within one set
(``gallery=None``, or ``exclude_self=True``) each query is ranked among the others, never
itself: counting a query as its own first match inflates AP@k far above chance. With
``groups`` (video ids of frames) every gallery item of the query's group is left out as well:
the other frames of the query's video are near-copies, easy hits that inflate video search.
"""

from __future__ import annotations

import warnings

import torch

from .backbones import check_input_shape, evaluating
from .domain import as_images, head_mapping
from .errors import TransferkitWarning, check, class_ids, is_whole, warn
from .evaluate import chunk_rows, text_ids

#: the words of :func:`average_precision_at_k`'s warning that counts queries without a relevant item
NO_RELEVANT = "queries have no relevant gallery item"


def _same_items(queries: torch.Tensor, gallery: torch.Tensor) -> bool:
    """The gallery holds the queries, row for row (one tensor or array passed twice, or a copy)."""
    if queries.shape != gallery.shape or queries.dtype != gallery.dtype:
        return False
    return queries.data_ptr() == gallery.data_ptr() or torch.equal(queries, gallery.to(queries.device))


def average_precision_at_k(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor | None = None,
                           gallery_labels: torch.Tensor | None = None, k: int = 10, chunk: int = 2048,
                           exclude_self: bool | None = None, groups=None, gallery_groups=None) -> torch.Tensor:
    """AP@k of every query (``Q x D`` against a ``G x D`` gallery); a vector of ``Q`` values,
    computed on the queries' device (the gallery and the labels are moved there). Gallery
    items at equal distances rank in gallery order, so a collapsed embedding (every distance
    equal) gets the AP of the gallery's order, not whatever order a top-k kernel returns; a
    warning counts the queries whose AP that order changes (equally distant relevant and other
    items among or at the edge of their ``k`` nearest; a gallery sorted by class lifts a
    collapsed embedding above chance).
    A query with no relevant gallery item (``R = 0``) gets AP@k 0 (which :func:`map_at_k` averages
    in), and a warning counts such queries once per call.
    NumPy arrays are taken as well; labels may be class ids or names (strings, matched by equality).

    Leave-one-out: with ``exclude_self`` query ``i`` is gallery item ``i`` and is left out of
    its own ranking (and of its count ``R``); otherwise each query would be its own first match.
    ``gallery=None`` retrieves every query among the other queries. ``exclude_self=None``
    (default) also leaves each query out when the gallery holds the same embeddings as the
    queries (one tensor passed twice), with a warning; ``exclude_self=False`` keeps them.

    ``groups`` (one id per query: integers or names such as video ids) leaves out, as the query
    itself is, every gallery item of the query's group (the other frames of its video, which would
    count as easy hits) from its ranking and its ``R``; ``gallery_groups`` gives the gallery's ids
    (by default ``groups``, when the gallery is the queries: ``gallery=None`` or ``exclude_self``)."""
    if gallery is None:
        check(gallery_labels is None, "gallery_labels without a gallery: give both, or neither to retrieve each "
                                      "query among the other queries")
        check(exclude_self is not False, "gallery=None retrieves each query among the other queries: it cannot "
                                         "keep the query itself (exclude_self=False); pass the gallery to do that")
        gallery, gallery_labels, exclude_self = queries, query_labels, True
    queries, gallery = torch.as_tensor(queries), torch.as_tensor(gallery)
    check(is_whole(chunk, 1), f"chunk must be a whole number >= 1, got {chunk!r}")
    check(queries.dim() == 2 and gallery.dim() == 2 and queries.shape[1] == gallery.shape[1],
          f"embeddings must be Q x D and G x D, got {tuple(queries.shape)} and {tuple(gallery.shape)}")
    check(exclude_self in (None, True, False), f"exclude_self must be True, False or None, got {exclude_self!r}")
    if exclude_self is None:
        exclude_self = _same_items(queries, gallery)
        if exclude_self:
            warn("retrieval: the gallery holds the queries themselves, so each query is left out of its own "
                 "ranking (leave-one-out); pass gallery=None or exclude_self=True to say so, or exclude_self=False "
                 "to count each query as its own match")
    check(not exclude_self or len(queries) == len(gallery),
          f"exclude_self takes query i to be gallery item i: it needs as many queries as gallery items, got "
          f"{len(queries)} and {len(gallery)}")
    check(len(gallery) > exclude_self and is_whole(k, 1),
          f"retrieval needs a non-empty gallery{' (besides the query)' if exclude_self else ''} and an integer "
          f"k >= 1, got {len(gallery)} items and k={k!r}")
    check(gallery_labels is not None and len(query_labels) == len(queries) and len(gallery_labels) == len(gallery),
          f"{len(queries)} queries with {len(query_labels)} labels, {len(gallery)} gallery items with "
          f"{0 if gallery_labels is None else len(gallery_labels)} labels: one label per embedding")
    groups, gallery_groups = _group_ids(groups, gallery_groups, len(queries), len(gallery), exclude_self)
    query_labels, gallery_labels = text_ids(query_labels, gallery_labels, what="retrieval labels")
    query_labels, gallery_labels = class_ids(query_labels, "query labels"), class_ids(gallery_labels, "gallery labels")
    check(bool(torch.isfinite(queries).all()) and bool(torch.isfinite(gallery).all()),
          "retrieval embeddings have NaN or infinite values")
    k = min(int(k), len(gallery) - exclude_self)
    exact = torch.promote_types(torch.promote_types(queries.dtype, gallery.dtype), torch.float32)  # float64 kept
    dev = queries.device
    gallery, query_labels, gallery_labels = gallery.to(dev), query_labels.to(dev), gallery_labels.to(dev)
    n_classes = int(max(gallery_labels.max(), query_labels.max() if len(query_labels) else 0)) + 1
    counts = torch.bincount(gallery_labels.long(), minlength=n_classes)
    if groups is not None:  # the gallery items of the query's group (itself among them) are not relevant
        groups, gallery_groups = groups.to(dev), gallery_groups.to(dev)
        keys = torch.cat([gallery_groups * n_classes + gallery_labels, groups * n_classes + query_labels])
        _, inverse = torch.unique(keys, return_inverse=True)
        same = torch.bincount(inverse[:len(gallery)], minlength=int(inverse.max()) + 1)[inverse[len(gallery):]]
        counts = counts[query_labels] - same
    elif exclude_self:  # the query is no gallery item of its own: one relevant item fewer when it is relevant
        counts = counts[query_labels] - (gallery_labels == query_labels).long()
    else:
        counts = counts[query_labels]
    if bool((counts == 0).any()):
        warn(f"retrieval: {int((counts == 0).sum())} of {len(queries)} {NO_RELEVANT} (none "
             f"of their class{' outside their group' if groups is not None else ''}"
             f"{' besides themselves' if exclude_self and groups is None else ''}); each scores AP@{k} 0, which "
             f"counts in the mean (map_at_k)")
    out, tied = [], 0  # tied: queries whose AP the order of equally distant gallery items changes
    ranks = torch.arange(1, k + 1, dtype=torch.float32, device=dev)
    order = torch.arange(len(gallery), dtype=torch.int64, device=dev)
    chunk = max(1, min(chunk, 2**25 // len(gallery)))  # the top-k holds chunk x G distances and keys
    for start, (q, ql, n_rel) in enumerate(zip(queries.split(chunk), query_labels.split(chunk), counts.split(chunk))):
        dist = torch.cdist(q.to(exact), gallery.to(exact), compute_mode="donot_use_mm_for_euclid_dist") + 0.0  # no -0
        if exclude_self:  # +inf ranks last: never among the k <= G - 1 nearest
            rows = torch.arange(len(q), device=dev)
            dist[rows, rows + start * chunk] = torch.inf
        left_out = None
        if groups is not None:  # ranked last, and no hit where fewer than k items are left
            left_out = groups[start * chunk:start * chunk + len(q), None] == gallery_groups[None]
            dist[left_out] = torch.inf
        # one integer key per (distance, gallery index): the bits of a float >= +0 order as the float does, so
        # the k smallest keys are the k nearest items, equal distances in gallery order (a stable sort's
        # order, exactly, without sorting all G; topk on the distances alone orders ties arbitrarily)
        if dist.dtype == torch.float32:
            nn_idx = ((dist.view(torch.int32).to(torch.int64) << 32) | order).topk(k, dim=1, largest=False).indices
        else:  # float64 embeddings: no room for the index beside 64 bits; a stable sort, the same order
            nn_idx = torch.argsort(dist, dim=1, stable=True)[:, :k]
        hits = gallery_labels[nn_idx] == ql[:, None]
        if left_out is not None:
            hits &= ~left_out.gather(1, nn_idx)
        tied += int(_order_matters(dist, nn_idx, hits, gallery_labels[None] == ql[:, None], left_out).sum())
        rel = hits.float()
        precision = hits.long().cumsum(1) / ranks  # an integer running count: exact, and deterministic on a GPU
        out.append((precision * rel).sum(1) / n_rel.clamp(max=k).float().clamp_min(1))
    if tied:
        warn(f"retrieval: {tied} of {len(queries)} queries have relevant and other gallery items at one distance "
             f"among their {k} nearest; equal distances rank in gallery order, so their AP@{k} depends on how the "
             f"gallery is ordered (a gallery sorted by class favours its first classes: a collapsed embedding, every "
             f"distance equal, scores above chance)")
    return torch.cat(out) if out else torch.empty(0)


def _order_matters(dist: torch.Tensor, nn_idx: torch.Tensor, hits: torch.Tensor, relevant: torch.Tensor,
                   left_out: torch.Tensor | None) -> torch.Tensor:
    """Which queries' AP@k the order of equally distant gallery items changes: a run of equal
    distances within the top k that holds a hit and a miss, or items at the k-th distance, within
    the top k and beyond it, relevant and not."""
    near = dist.gather(1, nn_idx)
    inside = ((near[:, 1:] == near[:, :-1]) & (hits[:, 1:] != hits[:, :-1]) & near[:, 1:].isfinite()).any(1)
    at_cut = dist == near[:, -1:]
    if left_out is not None:
        relevant = relevant & ~left_out
    n_relevant = (at_cut & relevant).sum(1)
    return inside | (near[:, -1].isfinite() & (n_relevant > 0) & (n_relevant < at_cut.sum(1)))


def _group_ids(groups, gallery_groups, n_queries: int, n_gallery: int, same_items: bool):
    """``(groups, gallery_groups)`` as ``long`` tensors numbered together (names such as video ids
    by equality), or ``(None, None)``; the gallery's default to the queries' for one set."""
    if groups is None:
        check(gallery_groups is None, "gallery_groups without groups: give the queries' group ids too")
        return None, None
    if gallery_groups is None:
        check(same_items, "groups= names the queries' groups; for a separate gallery give gallery_groups= too "
                          "(or leave both out)")
        gallery_groups = groups
    check(len(groups) == n_queries and len(gallery_groups) == n_gallery,
          f"{n_queries} queries with {len(groups)} group ids, {n_gallery} gallery items with {len(gallery_groups)}: "
          f"one group id per embedding")
    groups, gallery_groups = text_ids(groups, gallery_groups, what="retrieval group ids")
    groups, gallery_groups = torch.as_tensor(groups).cpu(), torch.as_tensor(gallery_groups).cpu()  # either device
    check(groups.dim() == 1 and gallery_groups.dim() == 1 and not groups.is_floating_point()
          and not gallery_groups.is_floating_point(), "retrieval group ids must be 1-D integers or names")
    check(not same_items or torch.equal(groups, gallery_groups), "with exclude_self the gallery is the queries: "
                                                                 "gallery_groups must equal groups (or leave it out)")
    _, ids = torch.unique(torch.cat([groups, gallery_groups]), return_inverse=True)  # 0..G-1: group * C + label
    return ids[:len(groups)], ids[len(groups):]  # stays small whatever the ids (hashes, timestamps)


def map_at_k(queries, query_labels, gallery=None, gallery_labels=None, k: int = 10,
             exclude_self: bool | None = None, groups=None, gallery_groups=None) -> float:
    """Mean AP@k over queries, a query with no relevant gallery item counted as 0 (with a warning);
    ``gallery=None``, ``exclude_self`` and ``groups`` (leave out the query's whole group, e.g. the
    other frames of its video) as in :func:`average_precision_at_k` (leave-one-out within one set)."""
    check(len(queries) > 0, "retrieval needs at least one query")
    return float(average_precision_at_k(queries, query_labels, gallery, gallery_labels, k,
                                        exclude_self=exclude_self, groups=groups,
                                        gallery_groups=gallery_groups).mean())


@torch.no_grad()
def embed(net, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """``N x D`` embeddings (input of the head) in eval mode (the net's mode is restored), in
    chunks of ``batch_size`` images (by default :func:`~transferkit.evaluate.chunk_rows`)."""
    images = as_images(images, "embed")
    check_input_shape(net, images, "embed")
    with evaluating(net):
        dev = next(net.parameters()).device
        if len(images) == 0:
            return torch.zeros(0, net.embed_dim)
        rows = chunk_rows(images) if batch_size is None else batch_size
        return torch.cat([net.forward_features(x.to(dev)).cpu() for x in images.split(rows)])


def retrieval_map(source_net, tuned_net, source_val, target_test, k: int = 10,
                  gallery: torch.Tensor | None = None, queries: torch.Tensor | None = None) -> float:
    """Seed 002 §5.3: mAP@k of ``target_test`` embedded by ``tuned_net`` against
    ``source_val`` embedded by ``source_net``. ``gallery`` / ``queries``: those embeddings
    when the caller already has them (``embed(source_net, source_val.images)``,
    ``embed(tuned_net, target_test.images)``; a benchmark scoring many tuned networks
    against one source network computes the gallery once). A target class the source lacks
    scores AP@k 0, without :func:`average_precision_at_k`'s warning (each job would repeat it)."""
    if gallery is None:
        gallery = embed(source_net, source_val.images)
    check(len(gallery) == len(source_val), f"gallery has {len(gallery)} embeddings for {len(source_val)} images")
    if queries is None:
        queries = embed(tuned_net, target_test.images)
    check(len(queries) == len(target_test), f"{len(queries)} query embeddings for {len(target_test)} images")
    labels = target_test.labels
    if list(target_test.class_names) != list(source_val.class_names):  # the same class is the same name
        absent = len(source_val.class_names)  # an id no gallery item has: AP 0
        ids = [absent if i is None else i for i in head_mapping(source_val.class_names, target_test.class_names)]
        labels = torch.tensor(ids, dtype=torch.long)[labels]
    with warnings.catch_warnings():  # a class the source lacks scores 0 by the protocol: not warned per job
        warnings.filterwarnings("ignore", message=rf"retrieval: \d+ of \d+ {NO_RELEVANT}", category=TransferkitWarning)
        return map_at_k(queries, labels, gallery, source_val.labels, k, exclude_self=False)  # two splits
