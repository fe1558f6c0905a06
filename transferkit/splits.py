"""Train/val/test splits, k-shot sampling and per-class subsampling.

* :func:`split_domain` -- a fixed stratified split per domain (seed 002 §5.1 keeps separate
  validation data for early stopping and unit selection; seed 000 §4 evaluates on held-out
  target data).
* :func:`sample_k_shot` -- k labelled samples per class, the rest unlabelled (seed 000 §4.1,
  k-shot SVHN 0-4 -> MNIST 5-9 over random subsets).
* :func:`subsample_per_class` -- the subsampling ratios of seed 002 Table 2 (~3, 30, 300
  images per class).

All selections are vectorised: every sample gets a random rank within its class, from a seeded
``torch.randperm`` and a stable sort by class, or for a domain with ``keys`` (a folder's) from its
key mixed with the seed (:func:`keyed_ranks`), so a file keeps its place when others are added.
"""

from __future__ import annotations

import numbers
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from .domain import Domain, group_labels
from .errors import TransferkitError, check, is_whole, torch_seed


@dataclass
class Split:
    train: Domain
    val: Domain
    test: Domain

    def sizes(self) -> dict:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def __iter__(self):  # train, val, test = split_domain(d)
        return iter((self.train, self.val, self.test))


#: the name parts that split_domain, sample_k_shot and subsample_per_class append
_PART = re.compile(r"^(train|val|test|unlabeled|\d+-shot|\d+-per-class)$")


def dataset_name(domain_name: str) -> str:
    """The domain a split part was cut from: ``mnist/train/unlabeled`` -> ``mnist``,
    ``folder:/data/office/webcam/val`` -> ``folder:/data/office/webcam``."""
    parts = domain_name.split("/")
    while len(parts) > 1 and _PART.match(parts[-1]):
        parts.pop()
    return "/".join(parts)


def seeded_generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(torch_seed(seed))


def class_ranks(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random rank ``0..n_c-1`` for every sample within its class."""
    perm = torch.randperm(labels.shape[0], generator=generator)
    return _ranks_in_order(labels, perm[torch.argsort(labels[perm], stable=True)])


def _ranks_in_order(labels: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Each sample's rank within its class, given ``order``: the samples sorted by class, then
    by what ranks them."""
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty(len(labels), dtype=torch.long)
    ranks[order] = torch.arange(len(labels)) - starts[sorted_labels]
    return ranks


def _part_sizes(counts: torch.Tensor, val_fraction: float, test_fraction: float):
    """Per-class test and val sizes, leaving at least one training sample per class."""
    n_test = torch.round(counts * test_fraction).long()
    n_val = torch.round(counts * val_fraction).long()
    room = (counts - 1).clamp_min(0)
    n_test = torch.minimum(n_test, room)
    n_val = torch.minimum(n_val, room - n_test)
    return n_test, n_val


#: mixed into the keys of label-subset draws, so that they do not follow the split's order (with seed
#: 0 the labelled images were those ranked just after the val split, and moved with its boundary)
LABEL_DRAWS = 0x6C6162656C73


def keyed_ranks(labels: torch.Tensor, keys: torch.Tensor, seed: int, salt: int = 0) -> torch.Tensor:
    """A rank ``0..n_c-1`` for every sample within its class, in the order of its key mixed with
    ``seed`` and ``salt`` (splitmix64): a sample's place depends on its own key, not on the other
    samples; another ``salt`` (:data:`LABEL_DRAWS`) gives an order unrelated to the split's."""
    z = keys.numpy().view(np.uint64) ^ np.uint64((torch_seed(seed) * 0x9E3779B97F4A7C15 + salt) % 2**64)
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = (z ^ (z >> np.uint64(shift))) * np.uint64(mult)  # uint64 arrays wrap around
    z ^= z >> np.uint64(31)
    return _ranks_in_order(labels, torch.from_numpy(np.lexsort((z, labels.numpy()))))  # by class, then mixed key


def _assign(labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int,
            keys: torch.Tensor | None = None) -> torch.Tensor:
    """0 = train, 1 = val, 2 = test for every element of ``labels`` (stratified): by rank in a
    random order, or with ``keys`` in the order of the keys."""
    if labels.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    ranks = class_ranks(labels, seeded_generator(seed)) if keys is None else keyed_ranks(labels, keys, seed)
    n_test, n_val = _part_sizes(torch.bincount(labels), val_fraction, test_fraction)
    test = ranks < n_test[labels]
    val = ~test & (ranks < (n_test + n_val)[labels])
    return test.long() * 2 + val.long()


def split_parts(domain: Domain, val_fraction: float = 0.15, test_fraction: float = 0.25,
                seed: int = 0) -> torch.Tensor:
    """The part of every sample in :func:`split_domain`: 0 train, 1 val, 2 test (each part
    keeps the samples in domain order, so ``nonzero(parts == 1)`` are the val images' indices).
    A domain with ``keys`` (a folder's: its files' paths) places each sample (group) by its key."""
    _check_domain(domain, "split_domain / split_parts")
    fractions = []
    for what, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim == 0 and not v.dtype == bool:
            v = v.item()  # a 0-d tensor or array holds one number
        check(isinstance(v, numbers.Real) and not isinstance(v, bool),
              f"split fractions must be numbers in [0, 1): {what} is {type(v).__name__} {v!r:.40}")
        fractions.append(float(v))
    val_fraction, test_fraction = fractions
    check(0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1,
          f"split fractions must be in [0, 1) and sum below 1 (val={val_fraction}, test={test_fraction})")
    if domain.groups is None or len(domain) == 0:
        return _assign(domain.labels, val_fraction, test_fraction, seed, domain.keys)
    inverse, labels = group_labels(domain.groups, domain.labels)
    return _assign(labels, val_fraction, test_fraction, seed, group_keys(domain, inverse, len(labels)))[inverse]


def group_keys(domain: Domain, inverse: torch.Tensor, n_groups: int) -> torch.Tensor | None:
    """A key per group (``inverse``: each sample's group): the smallest of its samples' keys (a
    folder gives every image of a group its sub-folder's key); None for a domain without keys."""
    if domain.keys is None:
        return None
    return torch.full((n_groups,), torch.iinfo(torch.int64).max).scatter_reduce_(0, inverse, domain.keys, "amin")


def group_ranks(domain: Domain, inverse: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A rank within its class for every group of ``domain`` for a label-subset draw: in the
    order of the groups' keys (a folder's: a new video moves few draws), else random with ``seed``."""
    keys = group_keys(domain, inverse, len(labels))
    return class_ranks(labels, seeded_generator(seed)) if keys is None else \
        keyed_ranks(labels, keys, seed, LABEL_DRAWS)


def fewest_for(part: str, val_fraction: float = 0.15, test_fraction: float = 0.25) -> int | None:
    """The fewest samples (groups, for a grouped domain) of a class that give one to ``part``
    (``"val"`` or ``"test"``) at these fractions, as :func:`split_domain` counts them (defaults:
    round(0.25 x 3) = 1 test, round(0.15 x 4) = 1 val; round(0.5) is 0); None: none up to a million."""
    counts = torch.arange(1, 10**6 + 1)
    n_test, n_val = _part_sizes(counts, val_fraction, test_fraction)
    hit = torch.nonzero((n_test if part == "test" else n_val) > 0).flatten()
    return int(counts[hit[0]]) if len(hit) else None


def split_units(split: Split) -> tuple[torch.Tensor, str]:
    """``(counts, unit)``: per class, the number of what :func:`split_domain` divided into
    ``split``'s parts: groups (``unit`` ``"groups (videos)"``) for a grouped domain, else images."""
    parts, n = list(split), split.train.num_classes
    labels = torch.cat([p.labels for p in parts])
    if split.train.groups is None or len(labels) == 0:
        return torch.bincount(labels, minlength=n), "images"
    _, labels = group_labels(torch.cat([p.groups for p in parts]), labels)
    folder = str(split.train.provenance.get("origin", "")).startswith("folder:")  # groups are its sub-folders
    unit = "groups (videos: sub-folders of class folders)" if folder else "groups (videos)"
    return torch.bincount(labels, minlength=n), unit


def split_domain(domain: Domain, val_fraction: float = 0.15, test_fraction: float = 0.25,
                 seed: int = 0) -> Split:
    """Stratified train/val/test split, fixed for a domain (``seed`` defaults to 0 and is
    independent of the experiment seed). Each class contributes ``round(fraction * n_c)``
    samples to val and test (computed in float32, so a product that lands within float32
    rounding of a half may round the other way, e.g. 0.15 x 190 -> 29), keeping at least one
    for train. With ``groups`` (frames of one
    video) whole groups are split, stratified by the groups' labels."""
    part = split_parts(domain, val_fraction, test_fraction, seed)
    info = {"val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": seed}

    def take(code: int, tag: str) -> Domain:
        sub = domain.subset(part == code, name=f"{domain.name}/{tag}")
        sub.provenance = {**domain.provenance, "split": tag, **info}
        return sub

    return Split(take(0, "train"), take(1, "val"), take(2, "test"))


def _per_class(domain: Domain, n: int, seed: int) -> torch.Tensor:
    """Mask of at most ``n`` randomly chosen samples per class. With groups (frames of one
    video), whole groups in a random order per class, as many as fit in ``n`` samples, and at
    least one (which may alone hold more)."""
    if domain.groups is None or len(domain) == 0:  # a folder's files by their keys: a new file moves few draws
        ranks = (class_ranks(domain.labels, seeded_generator(seed)) if domain.keys is None else
                 keyed_ranks(domain.labels, domain.keys, seed, LABEL_DRAWS))
        return ranks < n
    inverse, labels = group_labels(domain.groups, domain.labels)
    ranks = group_ranks(domain, inverse, labels, seed)
    order = torch.argsort(labels * len(labels) + ranks)  # by class, then the random rank
    sizes, ordered = torch.bincount(inverse, minlength=len(labels))[order], labels[order]
    total = torch.cumsum(sizes, 0)
    first = torch.searchsorted(ordered, ordered)  # where each group's class starts in that order
    keep = torch.zeros(len(labels), dtype=torch.bool)
    keep[order] = (total - total[first] + sizes[first] <= n) | (ranks[order] == 0)
    return keep[inverse]


def _check_domain(domain, where: str) -> None:
    check(not isinstance(domain, Split), f"{where} takes one Domain, got a Split (train, val and test): give its "
                                         f"training part, split.train")
    check(isinstance(domain, Domain), f"{where} takes a Domain, got {type(domain).__name__}")


def sample_k_shot(domain: Domain, k: int | None = None, seed: int | None = None, *,
                  k_shot: int | None = None) -> tuple[Domain, Domain]:
    """Exactly ``k`` labelled samples of every class present, chosen with ``seed``; the rest
    is the unlabelled part (its labels are kept for evaluation only). Seed 000 §4.1. ``k_shot=``
    is another name of ``k``, as the few-shot functions (``sample_episodes``, ``evaluate_episodes``)
    call it; give one of them. A domain with groups (frames of videos) is refused: use
    :func:`~transferkit.grouped.sample_k_groups`, which keeps each group on one side."""
    check(k is None or k_shot is None, f"sample_k_shot: give k or k_shot (two names of one number), not both: got "
                                       f"k={k!r}, k_shot={k_shot!r}")
    name, k = ("k_shot", k_shot) if k is None else ("k", k)
    check(k is not None, "sample_k_shot needs k (or k_shot), the labelled samples per class, e.g. "
                         "sample_k_shot(domain, k=5, seed=0)")
    check(seed is not None, "sample_k_shot needs a seed, e.g. sample_k_shot(domain, k=5, seed=0)")
    _check_domain(domain, "sample_k_shot")
    check(is_whole(k, 1), f"{name} must be an integer >= 1, got {k!r}")
    k = int(k)
    check(domain.groups is None, f"domain {domain.name!r} has groups (frames of one video): k-shot sampling of "
                                 f"frames would put frames of one group on both sides; use "
                                 f"transferkit.grouped.sample_k_groups (k labelled groups per class)")
    counts = domain.class_counts()
    present = domain.present_classes()
    check(len(present) > 0, f"domain {domain.name!r} is empty; cannot sample k-shot")
    smallest = min(present, key=lambda c: int(counts[c]))
    if k > int(counts[smallest]):
        small = [c for c in present if int(counts[c]) < k]  # every one at once: not one round trip per class
        listed = ", ".join(f"{domain.class_names[c]} ({int(counts[c])})" for c in small[:30])
        raise TransferkitError(
            f"k={k} is larger than the smallest class (class {domain.class_names[smallest]} has "
            f"{int(counts[smallest])} samples) in domain {domain.name!r}"
            + (f"; {len(small)} classes have fewer than {k}: {listed}{', ...' if len(small) > 30 else ''}"
               if len(small) > 1 else "") + "; lower k, or leave those classes out")
    mask = _per_class(domain, k, seed)
    labeled = domain.subset(mask, name=f"{domain.name}/{k}-shot")
    unlabeled = domain.subset(~mask, name=f"{domain.name}/unlabeled")
    labeled.provenance = {**domain.provenance, "k_shot": k, "k_shot_seed": int(seed), "part": "labeled"}
    unlabeled.provenance = {**domain.provenance, "k_shot": k, "k_shot_seed": int(seed), "part": "unlabeled"}
    return labeled, unlabeled


def subsample_per_class(domain: Domain, n: int, seed: int) -> Domain:
    """At most ``n`` randomly chosen samples per class (seed 002 Table 2 subsampling ratios);
    a domain with groups keeps whole groups (see :func:`_per_class`)."""
    _check_domain(domain, "subsample_per_class")
    check(is_whole(n, 1), f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    sub = domain.subset(_per_class(domain, n, seed), name=f"{domain.name}/{n}-per-class")
    sub.provenance = {**domain.provenance, "per_class": n, "subsample_seed": int(seed)}
    return sub


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_OTHER_RANGE = re.compile(r"\s*(\d+)\s*(?:\.\.\.?|:|–|—|to)\s*(\d+)\s*")
#: the most ids a range such as ``"0-99"`` gives without a domain to check them against (more classes than
#: any dataset names: ImageNet-21k has 21,841)
MAX_RANGE_IDS = 100_000


def parse_classes(text_or_list, domain: Domain | None = None) -> list[int]:
    """Class ids from ``"0-4"``, ``"5,6,7"``, ``"0-2,7"``, ``[0, 1]`` or class names
    (``"cat,dog"``, ``["cat"]``). ``"all"`` means every class of ``domain``. Ids are checked
    against ``domain`` when given; names need a domain. A name wins over an id; when every
    class is named by a number other than its id (numbered folders ``1, 10, 2, 3``), every
    number (``"2"``, ``2``, a range ``"1-3"`` with both ends present) names a class."""
    if isinstance(text_or_list, str):
        text = text_or_list.strip()
        check(text != "", "empty class subset: the class list is empty")
        if text.lower() == "all":
            check(domain is not None, "'all' classes needs a domain")
            return list(range(domain.num_classes))
        items = [t.strip() for t in text.split(",")]
        check(all(items), f"class list {text_or_list!r} has an empty entry")
    elif isinstance(text_or_list, int) and not isinstance(text_or_list, bool):
        items = [text_or_list]
    else:
        check(not isinstance(text_or_list, dict), f"classes {text_or_list!r} are a mapping; give a list of ids or "
                                                  f"names, or a text such as '0-4'")
        if isinstance(text_or_list, (set, frozenset)):  # unordered: ids in order; names would change per process
            check(all(is_whole(c) for c in text_or_list),
                  f"classes {text_or_list!r} are a set of names, whose order changes between processes; give a list")
            text_or_list = sorted(text_or_list)
        try:
            items = list(text_or_list)
        except TypeError:
            raise TransferkitError(f"cannot read classes from {text_or_list!r}; use '0-4', '5,6,7', "
                                   f"a list of ids or a list of names") from None
    ids: list[int] = []
    numbered = numbered_classes(domain)
    for item in items:
        ids.extend(_parse_item(item, domain, numbered))
    check(len(ids) > 0, f"empty class subset: class list {text_or_list!r} is empty")
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    check(not dupes, f"class list {text_or_list!r} repeats class(es) {dupes}")
    return ids


def numbered_classes(domain: Domain | None) -> dict[int, int] | None:
    """``number -> class id`` when every class of ``domain`` is named by a distinct integer
    other than its own id (numbered folders: ``1, 10, 2, 3`` or ``01, 02``); ``None`` otherwise
    (built-in digits are named by their ids: both readings agree)."""
    if domain is None or not all(_is_int(c) for c in domain.class_names):
        return None
    values = [int(c) for c in domain.class_names]
    if len(set(values)) < len(values) or values == list(range(len(values))):
        return None
    return {v: i for i, v in enumerate(values)}


def _class_of_number(value: int, domain: Domain | None, numbered: dict[int, int] | None) -> int:
    """The class a number names: the class named by it in a numbered domain, else the id."""
    if numbered is None:
        return _check_id(value, domain)
    check(value in numbered, f"no class of domain {dataset_name(domain.name)!r} is numbered {value} (its classes "
                             f"are named by numbers, so numbers name classes); classes are {domain.class_names}")
    return numbered[value]


def _parse_item(item, domain: Domain | None, numbered: dict[int, int] | None) -> list[int]:
    if isinstance(item, bool):  # YAML 1.1 reads no, yes, on, off, true, false unquoted as these
        raise TransferkitError(f"invalid class {item!r}: a class is an id or a name; YAML reads no / yes / on / off "
                               f"as false / true, so quote such a class name ('no')")
    if isinstance(item, str):
        item = unicodedata.normalize("NFC", item)  # as Domain keeps class names
        if domain is not None and item in domain.class_names:
            return [domain.class_names.index(item)]
        m = _RANGE.match(item)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            check(lo <= hi, f"empty class range {item!r} (start {lo} > end {hi})")
            if numbered is not None:  # "1-3" and "1,2,3" name the same classes; both ends must be classes
                _class_of_number(lo, domain, numbered), _class_of_number(hi, domain, numbered)
                return [numbered[v] for v in sorted(numbered) if lo <= v <= hi]
            check(domain is not None or hi - lo < MAX_RANGE_IDS,
                  f"class range {item!r} gives {hi - lo + 1} ids, more classes than any dataset has (at most "
                  f"{MAX_RANGE_IDS} without a domain to check them against)")
            return [_check_id(i, domain) for i in range(lo, hi + 1)]
        if _is_int(item):
            return [_class_of_number(int(item), domain, numbered)]
        if domain is None:
            raise TransferkitError(f"class name {item!r} needs a domain to resolve")
        other = _OTHER_RANGE.fullmatch(item)  # 0..4, 0:4, 0 to 4: a range in another notation
        raise TransferkitError(f"unknown class {item!r} in domain {dataset_name(domain.name)!r}; classes are "
                               f"{domain.class_names}" + (f"; a range of ids is written '{other[1]}-{other[2]}'"
                                                          if other else ""))
    try:
        i = int(item)
    except (TypeError, ValueError, OverflowError):
        raise TransferkitError(f"invalid class {item!r}") from None
    check(i == item, f"invalid class {item!r} (not an integer)")
    return [_class_of_number(i, domain, numbered)]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _check_id(i: int, domain: Domain | None) -> int:
    check(i >= 0, f"class id {i} is negative")
    if domain is not None:
        named = f"; a class is named {str(i)!r}: quote it to name it ('{i}', or in a list ['{i}'])" \
            if str(i) in domain.class_names else ""
        check(i < domain.num_classes, f"class id {i} out of range [0, {domain.num_classes - 1}] for "
                                      f"domain {dataset_name(domain.name)!r}{named}")
    return i
