"""Grouped domains: several views of one underlying image form a group (the offline stand-in
for the frames of one video, seed 000 §4.2), and group-level k-shot sampling.

``load_domain("digits@grouped5")`` is :func:`grouped_views` of ``digits`` with 5 views.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch

from .domain import Domain, check_memory, group_labels
from .errors import TransferkitError, check, is_whole
from .shifts import apply_shift
from .splits import group_ranks, seeded_generator

SUFFIX = re.compile(r"^(?P<base>.+)@grouped(?P<views>\d+)$", re.IGNORECASE)


def grouped_views(domain: Domain, views: int = 5, shifts: Sequence[str] = ("affine_random", "noise"),
                  seed: int = 0) -> Domain:
    """Each image of ``domain`` becomes ``views`` images, each with its own draw of ``shifts``
    (applied in order), in a group with the other views: ``groups[i]`` is the index of the
    underlying image, or its own group when ``domain`` has groups (the frames of a folder's
    videos: all views of all frames of a video form one group, so that no split cuts a video
    apart). The views of an image are consecutive and share its label."""
    check(is_whole(views, 1), f"views must be an integer >= 1, got {views!r}")
    check(is_whole(seed), f"seed must be an integer, got {seed!r}")
    views, seed = int(views), int(seed)
    shifts = [shifts] if isinstance(shifts, str) else list(shifts)
    check_memory(domain.images.numel() * views * 4, f"{domain.name}@grouped{views}: {len(domain)} images x {views} "
                 f"views", "use fewer views")
    images = domain.images.repeat_interleave(views, 0)
    for i, name in enumerate(shifts):
        g = torch.Generator().manual_seed(zlib.crc32(f"grouped:{seed}:{i}:{name}".encode()))
        images = apply_shift(name, images, g).clamp_(0, 1)
    name = f"{domain.name}@grouped{views}"
    groups = torch.arange(len(domain)) if domain.groups is None else domain.groups
    return Domain(name, images, domain.labels.repeat_interleave(views), list(domain.class_names),
                  groups=groups.repeat_interleave(views),
                  provenance={**domain.provenance, "grouped_views": views, "group_shifts": list(shifts),
                              "group_seed": seed},
                  keys=None if domain.keys is None else domain.keys.repeat_interleave(views))  # split as domain is


def parse_grouped(spec: str) -> tuple[str, int] | None:
    """``("digits+blur", 5)`` for ``"digits+blur@grouped5"``; ``None`` without the suffix."""
    m = SUFFIX.match(spec.strip()) if isinstance(spec, str) else None
    return (m["base"], int(m["views"])) if m else None


def sample_k_groups(domain: Domain, k: int, seed: int) -> tuple[Domain, Domain]:
    """``k`` labelled groups of every class (all their samples), chosen with ``seed``; the
    rest is unlabelled (seed 000 §4.2: k labelled videos per class)."""
    from .splits import _check_domain
    _check_domain(domain, "sample_k_groups")
    check(domain.groups is not None, f"domain {domain.name!r} has no groups")
    check(is_whole(k, 1), f"k must be an integer >= 1, got {k!r}")
    check(len(domain) > 0, f"domain {domain.name!r} is empty: no group to label")
    k, g = int(k), seeded_generator(seed)
    inverse, group_label = group_labels(domain.groups, domain.labels)
    n_groups = len(group_label)
    counts = torch.bincount(group_label, minlength=domain.num_classes)
    short = [c for c in torch.nonzero(counts).flatten().tolist() if int(counts[c]) < k]
    if short:
        named = ", ".join(f"{domain.class_names[c]} ({int(counts[c])})" for c in short[:10])
        raise TransferkitError(f"k={k} is larger than the number of groups (videos) of class"
                               f"{'es' if len(short) > 1 else ''} {named}{', ...' if len(short) > 10 else ''} in "
                               f"domain {domain.name!r}: k labels k groups of every class; lower k to "
                               f"{min(int(counts[c]) for c in short)} (a run's groups are those of its train split: "
                               f"a smaller test_fraction or val_fraction leaves it more)")
    if domain.keys is not None:  # a folder's videos by their keys: a new video moves few draws
        rank = group_ranks(domain, inverse, group_label, seed)
    else:  # the draw of before keys, kept: built-in grouped domains label the same groups
        perm = torch.randperm(n_groups, generator=g)
        order = perm[torch.argsort(group_label[perm], stable=True)]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(n_groups, dtype=torch.long)
        rank[order] = torch.arange(n_groups) - starts[group_label[order]]
    mask = (rank < k)[inverse]
    labeled = domain.subset(mask, name=f"{domain.name}/{k}-shot-groups")
    unlabeled = domain.subset(~mask, name=f"{domain.name}/unlabeled")
    for d, part in ((labeled, "labeled"), (unlabeled, "unlabeled")):
        d.provenance = {**domain.provenance, "k_shot_groups": k, "k_shot_seed": int(seed), "part": part}
    return labeled, unlabeled
