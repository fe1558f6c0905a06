"""Splits, k-shot sampling, per-class subsampling and class lists (transferkit.splits)."""

from collections import Counter

import numpy as np
import pytest
import torch

from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.splits import Split, parse_classes, sample_k_shot, split_domain, split_parts, subsample_per_class


def indexed(labels, names=None, groups=None):
    """A domain whose single pixel is the sample index, so subsets can be traced back."""
    labels = torch.as_tensor(labels)
    n = len(labels)
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) / max(n, 1)
    names = names or [f"c{i}" for i in range(int(labels.max()) + 1)]
    return Domain("toy", images, labels, names, groups)


def ids(d):
    return (d.images.flatten() * N).round().long()


N = 1000
LABELS = torch.arange(N) % 7  # 143 of classes 0-5, 142 of class 6
LABELS = torch.where(torch.arange(N) < 40, torch.tensor(6), LABELS)


def test_split_is_disjoint_covering_and_stratified():
    d = indexed(LABELS)
    s = split_domain(d)
    assert isinstance(s, Split) and sum(s.sizes().values()) == N
    parts = [set(ids(p).tolist()) for p in (s.train, s.val, s.test)]
    assert parts[0] | parts[1] | parts[2] == set(range(N))
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    counts = d.class_counts()
    assert torch.equal(s.test.class_counts(), torch.round(counts * 0.25).long())
    assert torch.equal(s.val.class_counts(), torch.round(counts * 0.15).long())
    assert s.train.name == "toy/train" and s.test.provenance["split"] == "test"
    for p in (s.train, s.val, s.test):
        assert torch.equal(p.labels, LABELS[ids(p)])


def test_split_is_fixed_and_seeded():
    d = indexed(LABELS)
    a, b, c = split_domain(d), split_domain(d), split_domain(d, seed=1)
    assert torch.equal(ids(a.test), ids(b.test))
    assert not torch.equal(ids(a.test), ids(c.test))


def test_split_keeps_a_training_sample_of_tiny_classes():
    d = indexed([0] * 20 + [1] + [2, 2])
    s = split_domain(d, val_fraction=0.3, test_fraction=0.4)
    assert s.train.class_counts().tolist()[1:] == [1, 1]
    with pytest.raises(TransferkitError, match="fractions"):
        split_domain(d, val_fraction=0.5, test_fraction=0.5)


def test_split_by_group():
    groups = torch.arange(N) // 10  # 100 groups of 10 frames
    labels = groups % 5
    s = split_domain(indexed(labels, groups=groups))
    part_of = {}
    for k, p in enumerate((s.train, s.val, s.test)):
        for g in p.groups.unique().tolist():
            assert g not in part_of, "a group was split across parts"
            part_of[g] = k
    assert len(part_of) == 100
    assert s.test.class_counts().tolist() == [50] * 5  # 5 of 20 groups per class
    assert s.val.class_counts().tolist() == [30] * 5


def test_k_shot_exact_counts_and_disjoint_parts():
    d = indexed(LABELS)
    s = split_domain(d)
    labeled, unlabeled = sample_k_shot(s.train, 5, seed=3)
    assert labeled.class_counts().tolist() == [5] * 7
    assert len(labeled) + len(unlabeled) == len(s.train)
    lab, unl, test = set(ids(labeled).tolist()), set(ids(unlabeled).tolist()), set(ids(s.test).tolist())
    assert not (lab & unl or lab & test or unl & test)
    assert lab | unl == set(ids(s.train).tolist())
    again, _ = sample_k_shot(s.train, 5, seed=3)
    other, _ = sample_k_shot(s.train, 5, seed=4)
    assert torch.equal(ids(again), ids(labeled)) and not torch.equal(ids(other), ids(labeled))
    assert labeled.provenance["k_shot"] == 5


def test_k_shot_counts_only_present_classes():
    d = indexed(LABELS).subset(LABELS >= 3)
    labeled, _ = sample_k_shot(d, 2, seed=0)
    assert labeled.class_counts().tolist() == [0, 0, 0, 2, 2, 2, 2]


def test_k_shot_errors_name_the_class():
    d = indexed([0] * 10 + [1] * 3 + [2] * 8, names=["zero", "seven", "two"])
    message = r"k=4 is larger than the smallest class \(class seven has 3 samples\)"
    with pytest.raises(TransferkitError, match=message):
        sample_k_shot(d, 4, seed=0)
    labeled, unlabeled = sample_k_shot(d, 3, seed=0)
    assert labeled.class_counts().tolist() == [3, 3, 3] and unlabeled.class_counts().tolist() == [7, 0, 5]
    for k in (0, -1, 1.5):
        with pytest.raises(TransferkitError, match="k must be an integer >= 1"):
            sample_k_shot(d, k, seed=0)


@pytest.mark.parametrize("n", [1, 3, 30, 300])
def test_subsample_per_class(n):
    d = indexed(LABELS)
    sub = subsample_per_class(d, n, seed=0)
    assert torch.equal(sub.class_counts(), torch.clamp(d.class_counts(), max=n))
    assert len(set(ids(sub).tolist())) == len(sub)
    assert torch.equal(ids(sub), ids(subsample_per_class(d, n, seed=0)))


def test_parse_classes():
    d = indexed(torch.arange(10) % 10, names=["zero", "one", "two", "three", "four", "five", "six",
                                             "seven", "eight", "nine"])
    assert parse_classes("0-4", d) == [0, 1, 2, 3, 4]
    assert parse_classes("5,6,7", d) == [5, 6, 7]
    assert parse_classes(" 0-1, 9 ", d) == [0, 1, 9]
    assert parse_classes([0, 1], d) == [0, 1]
    assert parse_classes(["two", "nine"], d) == [2, 9]
    assert parse_classes("two,three", d) == [2, 3]
    assert parse_classes(4, d) == [4]
    assert parse_classes("all", d) == list(range(10))
    assert parse_classes("5-9") == [5, 6, 7, 8, 9]
    for bad, message in [("0-12", "out of range"), ("4-2", "empty class range"),
                         ("ten", "unknown class 'ten'"), ("", "empty"), ("1,,2", "empty entry"),
                         ("1,1", "repeats"), ([], "empty"), ("-3", "negative"), ([1.5], "not an integer"),
                         (None, "cannot read classes")]:
        with pytest.raises(TransferkitError, match=message):
            parse_classes(bad, d)
    folders = indexed(torch.arange(3), names=["01", "1", "10"])  # not numbered: "1" and "01" are both 1
    assert parse_classes("1,10", folders) == [1, 2] and parse_classes([1, 2], folders) == [1, 2]
    with pytest.raises(TransferkitError, match=r"class id 10 out of range \[0, 2\] for domain '.*'; a class is "
                                               r"named '10': quote it to name it \('10', or in a list \['10'\]\)"):
        parse_classes([1, 10], folders)  # a trial: an int is an id, the message did not say so
    with pytest.raises(TransferkitError, match=r"invalid class False: .*quote such a class name \('no'\)"):
        parse_classes([False, True], folders)  # target_classes: [no, yes], as YAML 1.1 reads it


@pytest.mark.parametrize("change, message", [
    ({"labels": torch.tensor([0.0, 1.5, 1.0])}, "labels must be integer class ids"),
    ({"images": torch.tensor([0.0, float("nan"), 1.0]).view(3, 1, 1, 1)}, "NaN or infinite"),
    ({"class_names": ["a", "b", "a"]}, r"repeated class names \['a'\]"),
    ({"class_names": "abc"}, "list of names"),
    ({"groups": [0.5, 1, 2]}, "integer id per image"),
    ({"labels": torch.tensor([0, 1, 3])}, "labels out of range"),
    ({"groups": [4, 5, 4]}, r"group 4 holds samples of different labels \[0, 2\]"),
    ({"groups": [5, 4, 4]}, r"group 4 holds samples of different labels \[1, 2\]"),
    ({"images": torch.tensor([0.0, 255.0, 1.0]).view(3, 1, 1, 1)}, r"found 0..255 \(divide by their full range: 255"),
    ({"images": torch.tensor([-0.5, 0.5, 1.0]).view(3, 1, 1, 1)}, r"must lie in \[0, 1\], found -0.5..1$"),
    ({"images": torch.tensor([0, 1, 1]).view(3, 1, 1, 1)}, "float in \\[0, 1\\] or uint8 in 0-255, got torch.int64"),
])
def test_domain_names_bad_input(change, message):
    fields = {"name": "toy", "images": torch.rand(3, 1, 1, 1), "labels": torch.tensor([0, 1, 2]),
              "class_names": ["a", "b", "c"], **change}
    with pytest.raises(TransferkitError, match=message):
        Domain(**fields)


def test_domain_scales_uint8_images_and_takes_float64():
    d = Domain("toy", torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1), torch.tensor([0, 1, 2]),
               ["a", "b", "c"])
    assert d.images.dtype == torch.float32 and torch.equal(d.images.flatten(), torch.tensor([0.0, 51 / 255, 1.0]))
    d = Domain("toy", torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64).view(3, 1, 1, 1), torch.tensor([0, 1, 2]),
               ["a", "b", "c"])
    assert d.images.dtype == torch.float32


def test_domain_takes_integral_float_labels_list_groups_and_empty_subsets():
    d = Domain("toy", torch.rand(3, 1, 1, 1), torch.tensor([0.0, 1.0, 2.0]), ["a", "b", "c"], [7, 9, 8])
    assert d.labels.dtype == torch.int64 and d.labels.tolist() == [0, 1, 2]
    assert d.groups.tolist() == [7, 9, 8]
    assert len(d.subset([])) == 0 and d.subset([]).image_shape == (1, 1, 1)
    with pytest.raises(TransferkitError, match="bool mask or integer indices"):
        d.subset([0.0, 1.0])


def test_k_shot_sampling_takes_numpy_integers_and_keeps_groups_whole():
    import numpy as np

    from transferkit.data import load_domain
    d = split_domain(load_domain("digits")).train
    labeled, _ = sample_k_shot(d, np.int64(2), 0)
    assert len(labeled) == 2 * d.num_classes and len(subsample_per_class(d, np.int32(3), 0)) == 3 * d.num_classes
    grouped = split_domain(load_domain("digits@grouped2")).train
    with pytest.raises(TransferkitError, match="has groups .* use transferkit.grouped.sample_k_groups"):
        sample_k_shot(grouped, 2, 0)



def test_dataset_name_strips_the_parts_splits_append():
    from transferkit.splits import dataset_name
    assert dataset_name("mnist/train/unlabeled") == dataset_name("mnist/val") == "mnist"
    assert dataset_name("folder:/data/office/webcam/val") == "folder:/data/office/webcam"
    assert dataset_name("digits/train/5-shot") == dataset_name("digits/train/30-per-class") == "digits"


def test_a_range_of_integer_class_names_means_names_as_a_list_does():
    folders = Domain("num", torch.rand(8, 1, 4, 4), torch.arange(8) % 4, ["1", "10", "2", "3"])  # sorted as text
    assert parse_classes("1-2", folders) == parse_classes("1,2", folders) == [0, 2]
    assert parse_classes("2-10", folders) == [2, 3, 1]  # in value order
    assert parse_classes([2, 10], folders) == parse_classes("2,10", folders) == [2, 1]
    with pytest.raises(TransferkitError, match="no class of domain 'num' is numbered 4"):
        parse_classes("4-10", folders)  # both ends must be classes
    padded = Domain("pad", torch.rand(8, 1, 4, 4), torch.arange(8) % 4, ["01", "02", "03", "04"])
    assert parse_classes("1-2", padded) == parse_classes("1,2", padded) == parse_classes("01,02", padded) == [0, 1]
    digits = Domain("d", torch.rand(10, 1, 4, 4), torch.arange(10), [str(i) for i in range(10)])
    assert parse_classes("3-5", digits) == [3, 4, 5]  # names 0-9 in order: the same as ids


def test_subsampling_a_grouped_domain_keeps_whole_groups_and_seeds_are_whole_numbers():
    labels = torch.arange(24) // 12  # two classes, groups of 3 frames (ids 0..7)
    grouped = Domain("videos", torch.rand(24, 1, 4, 4), labels, ["a", "b"], groups=torch.arange(24) // 3)
    for n in (1, 3, 5, 7):
        sub = subsample_per_class(grouped, n, seed=0)
        counts = torch.bincount(sub.groups, minlength=8)
        assert set(counts.tolist()) <= {0, 3}  # every group whole or absent
        assert sub.class_counts().tolist() == [max(3, 3 * (n // 3))] * 2  # as many groups as fit, at least one
    assert torch.equal(subsample_per_class(grouped, 6, 1).groups, subsample_per_class(grouped, 6, 1).groups)
    assert not torch.equal(subsample_per_class(grouped, 6, 0).groups, subsample_per_class(grouped, 6, 1).groups)
    plain = Domain("d", torch.rand(24, 1, 4, 4), labels, ["a", "b"])
    for bad in (None, 1.7, True):
        with pytest.raises(TransferkitError, match="seed must be a whole number"):
            subsample_per_class(plain, 2, bad)
        with pytest.raises(TransferkitError, match="sample_k_shot needs a seed" if bad is None else
                           "seed must be a whole number"):
            sample_k_shot(plain, 2, bad)
    import numpy as np
    assert sample_k_shot(plain, 2, np.int64(3))[0].provenance["k_shot_seed"] == 3


def test_domain_subset_select_classes_and_to_format_name_bad_arguments():
    d = Domain("d", torch.rand(10, 1, 4, 4), torch.arange(10) % 2, ["a", "b"])
    for index, message in ((torch.tensor([True, False]), r"one entry per sample \(10\), got shape \(2,\)"),
                           ([100], r"indices must lie in \[0, 9\] \(or count back from -1\), found 100..100"),
                           ([-11], r"found -11..-11"),
                           ([[0, 1]], "1-D index")):
        with pytest.raises(TransferkitError, match=message):
            d.subset(index)
    assert len(d.subset([-1, 0])) == 2
    assert torch.equal(d.subset(np.array([0, 1, 2], np.uint8)).labels, d.labels[:3])  # integers, not a mask
    for classes, message in (([1.5], "whole-number id, got 1.5"), ([True], "whole-number id, got True"),
                             ("ab", "takes a list of class names or ids, got the string 'ab'")):
        with pytest.raises(TransferkitError, match=message):
            d.select_classes(classes)
    assert d.select_classes(torch.tensor([1])).class_names == ["b"]  # ids in an integer tensor
    for size in (0, "16", 16.0, True):
        with pytest.raises(TransferkitError, match="size must be a whole number of pixels >= 1"):
            d.to_format(size=size)
    assert d.to_format(size=8).image_shape == (1, 8, 8)


def test_split_sizes_round_and_leave_one_training_image():
    from transferkit.splits import _part_sizes
    n_test, n_val = _part_sizes(torch.tensor([7]), 0.0, 0.25)
    assert (n_test.tolist(), n_val.tolist()) == ([2], [0])  # round(1.75), not floor
    n_test, n_val = _part_sizes(torch.tensor([3]), 0.05, 0.9)
    assert (n_test.tolist(), n_val.tolist()) == ([2], [0])  # round(2.7) = 3 leaves none to train: capped


def test_seeds_out_of_torch_range_are_named_not_a_raw_overflow():
    d = Domain("d", torch.rand(6, 1, 4, 4), torch.tensor([0, 0, 0, 1, 1, 1]), ["a", "b"])
    for call in (lambda s: sample_k_shot(d, 1, seed=s), lambda s: subsample_per_class(d, 1, seed=s),
                 lambda s: split_domain(d, seed=s)):
        with pytest.raises(TransferkitError, match=r"seed must be a whole number in \[-2\*\*63, 2\*\*64\)"):
            call(2**70)
        call(2**64 - 1)  # the largest seed torch takes


def test_a_named_class_without_training_images_is_refused():
    from transferkit.rundata import narrowed

    train = Domain("d/train", torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 2, 2]), ["a", "b", "c"])
    with pytest.raises(TransferkitError, match=r"'d' has no training image of class\(es\) \['b'\]"):
        narrowed(Split(train, train, train), "a,b")  # trained a head with a dead 'b' output
    assert narrowed(Split(train, train, train), "a,c").train.class_names == ["a", "c"]
    assert narrowed(Split(train, train, train), "all").train.num_classes == 3  # "all" keeps declared classes


def test_domain_digest_is_pinned():
    # hashed in place since 2026-12-01 (no bytes copy): the same digest as before, so caches stay valid
    d = Domain("d", torch.arange(16, dtype=torch.float32).reshape(2, 1, 2, 4) / 16, torch.tensor([0, 1]), ["a", "b"])
    assert d.digest() == "13c4dc55812721f0"


def test_a_folder_split_places_each_file_by_its_path_so_removing_one_moves_few_others(tmp_path):
    from PIL import Image

    from transferkit.data import load_domain
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / c).mkdir()
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / c / f"{i:02d}.png")

    def parts():
        d = load_domain(f"folder:{tmp_path}")
        names = sorted(f"{c}/{p.name}" for c in ("a", "b", "c") for p in (tmp_path / c).iterdir())
        return dict(zip(names, split_parts(d).tolist()))  # the folder's files in the order it reads them

    before = parts()
    (tmp_path / "b" / "17.png").unlink()
    after = parts()
    moved = [f for f in after if after[f] != before[f]]
    assert len(moved) <= 2, moved  # b's val / test sizes may round otherwise: one file at a boundary moves
    assert all(f.startswith("b/") for f in moved)  # the other classes keep every file's part
    assert sorted(Counter(before.values()).items()) == [(0, 72), (1, 18), (2, 30)]


def test_a_folder_s_k_shot_draws_and_grouped_views_follow_its_files_keys(tmp_path):
    from PIL import Image

    from transferkit.data import load_domain
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(30):
            Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / c / f"{i:02d}.png")

    def labelled():
        d = load_domain(f"folder:{tmp_path}", size=None)
        names = sorted(f"{c}/{p.name}" for c in ("a", "b") for p in (tmp_path / c).iterdir())
        return {names[int(i)] for i in torch.nonzero(_mask(d)).flatten()}

    def _mask(d):
        from transferkit.splits import _per_class
        return _per_class(d, 5, seed=3)

    before = labelled()
    (tmp_path / "a" / "07.png").unlink()
    after = labelled()
    assert len(before - after) <= 1  # the removed file's place goes to the next one; the other nine stay
    plain, grouped = load_domain(f"folder:{tmp_path}", size=None), load_domain(f"folder:{tmp_path}@grouped2",
                                                                                size=None)
    assert torch.equal(split_parts(grouped)[::2], split_parts(plain))  # each image's views land where it does


def test_a_folder_s_label_draws_do_not_follow_its_split_order():
    """The split ranks a folder's files by their keys with seed 0; k-shot draws with seed 0 mix in
    another salt, so the labelled files are not the train files ranked next to the val split
    (which moved whenever a file entered or left val / test)."""
    from transferkit.splits import keyed_ranks, sample_k_shot, split_domain
    keys = torch.arange(40, dtype=torch.int64) * 7919 + 13
    d = Domain("f", torch.rand(40, 1, 4, 4), torch.zeros(40, dtype=torch.long), ["a"], keys=keys)
    train = split_domain(d).train
    ranks = keyed_ranks(train.labels, train.keys, 0)  # the split's order within the train part
    boundary = set(train.keys[ranks < 2].tolist())
    labelled = sample_k_shot(train, 2, 0)[0]
    assert len(labelled) == 2 and set(labelled.keys.tolist()) != boundary
