"""Retrieval of target images among source images in embedding space (seed 002 §5.3, Table 4).

Source images (the source validation split) are embedded by the source network, target
images by the tuned network; every target image queries its ``k`` nearest source
neighbours (Euclidean distance) and a neighbour is relevant when it has the same class.
Average precision at ``k`` of one query, with ``rel_i`` the relevance of the ``i``-th
neighbour and ``R`` the number of relevant gallery items::

    AP@k = 1 / min(k, R) * sum_{i <= k} P@i * rel_i,     P@i = (1/i) sum_{j <= i} rel_j

and mAP@k (reported as AP@k in seed 002 Table 4) is its mean over queries.
"""

from __future__ import annotations

import torch

from .backbones import evaluating
from .domain import as_images, head_mapping
from .errors import check, class_ids, is_whole


def average_precision_at_k(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                           gallery_labels: torch.Tensor, k: int = 10, chunk: int = 2048) -> torch.Tensor:
    """AP@k of every query (``Q x D`` against a ``G x D`` gallery); a vector of ``Q`` values,
    computed on the queries' device (the gallery and the labels are moved there). Gallery
    items at equal distances rank in gallery order, so a collapsed embedding (every distance
    equal) gets the AP of the gallery's order, not whatever order a top-k kernel returns.
    NumPy arrays are taken as well."""
    queries, gallery = torch.as_tensor(queries), torch.as_tensor(gallery)
    check(is_whole(chunk, 1), f"chunk must be a whole number >= 1, got {chunk!r}")
    check(queries.dim() == 2 and gallery.dim() == 2 and queries.shape[1] == gallery.shape[1],
          f"embeddings must be Q x D and G x D, got {tuple(queries.shape)} and {tuple(gallery.shape)}")
    check(len(gallery) > 0 and is_whole(k, 1),
          f"retrieval needs a non-empty gallery and an integer k >= 1, got {len(gallery)} items and k={k!r}")
    check(len(query_labels) == len(queries) and len(gallery_labels) == len(gallery),
          f"{len(queries)} queries with {len(query_labels)} labels, {len(gallery)} gallery items with "
          f"{len(gallery_labels)} labels: one label per embedding")
    query_labels, gallery_labels = class_ids(query_labels, "query labels"), class_ids(gallery_labels, "gallery labels")
    check(bool(torch.isfinite(queries).all()) and bool(torch.isfinite(gallery).all()),
          "retrieval embeddings have NaN or infinite values")
    k = min(int(k), len(gallery))
    dev = queries.device
    gallery, query_labels, gallery_labels = gallery.to(dev), query_labels.to(dev), gallery_labels.to(dev)
    n_classes = int(max(gallery_labels.max(), query_labels.max() if len(query_labels) else 0)) + 1
    counts = torch.bincount(gallery_labels.long(), minlength=n_classes)
    out = []
    ranks = torch.arange(1, k + 1, dtype=torch.float32, device=dev)
    order = torch.arange(len(gallery), dtype=torch.int64, device=dev)
    chunk = max(1, min(chunk, 2**25 // len(gallery)))  # the top-k holds chunk x G distances and keys
    for q, ql in zip(queries.split(chunk), query_labels.split(chunk)):
        dist = torch.cdist(q.float(), gallery.float(), compute_mode="donot_use_mm_for_euclid_dist") + 0.0  # no -0
        # one integer key per (distance, gallery index): the bits of a float >= +0 order as the float does, so
        # the k smallest keys are the k nearest items, equal distances in gallery order (a stable sort's
        # order, exactly, without sorting all G; topk on the distances alone orders ties arbitrarily)
        nn_idx = ((dist.view(torch.int32).to(torch.int64) << 32) | order).topk(k, dim=1, largest=False).indices
        hits = gallery_labels[nn_idx] == ql[:, None]
        rel = hits.float()
        precision = hits.long().cumsum(1) / ranks  # an integer running count: exact, and deterministic on a GPU
        n_rel = counts[ql.long()].clamp(max=k).float()
        out.append((precision * rel).sum(1) / n_rel.clamp_min(1))
    return torch.cat(out) if out else torch.empty(0)


def map_at_k(queries, query_labels, gallery, gallery_labels, k: int = 10) -> float:
    """Mean AP@k over queries."""
    check(len(queries) > 0, "retrieval needs at least one query")
    return float(average_precision_at_k(queries, query_labels, gallery, gallery_labels, k).mean())


@torch.no_grad()
def embed(net, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``N x D`` embeddings (input of the head) in eval mode (the net's mode is restored)."""
    images = as_images(images, "embed")
    shape = getattr(net, "input_shape", None)
    check(shape is None or tuple(images.shape[1:]) == tuple(shape),
          f"embed: images of shape {tuple(images.shape[1:])}, the network takes {shape and tuple(shape)}")
    with evaluating(net):
        dev = next(net.parameters()).device
        if len(images) == 0:
            return torch.zeros(0, net.embed_dim)
        return torch.cat([net.forward_features(x.to(dev)).cpu() for x in images.split(batch_size)])


def retrieval_map(source_net, tuned_net, source_val, target_test, k: int = 10,
                  gallery: torch.Tensor | None = None, queries: torch.Tensor | None = None) -> float:
    """Seed 002 §5.3: mAP@k of ``target_test`` embedded by ``tuned_net`` against
    ``source_val`` embedded by ``source_net``. ``gallery`` / ``queries``: those embeddings
    when the caller already has them (``embed(source_net, source_val.images)``,
    ``embed(tuned_net, target_test.images)``; a benchmark scoring many tuned networks
    against one source network computes the gallery once)."""
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
    return map_at_k(queries, labels, gallery, source_val.labels, k)
