"""Tests from a third mutation pass over splits.py and data.py.

Each test kills at least one mutant that survived the existing tests (tests/test_splits.py,
test_data.py, test_domain_registry.py, test_userdata.py and the earlier passes,
test_data_config_mutation.py and test_splits_data_mutation.py). splits.py: the names a split
part's domain name is cut back from (a lone part name, a name that only starts like one), k-shot
and subsample counts given as numpy integers (kept as ints in names and provenance), k-shot
sampling of an empty domain, an empty class text, both ends of a range of numbered classes, and
the draw of a grouped domain without keys (one-frame groups draw as the ungrouped domain does).
data.py: ``folder:`` / ``npz:`` without a path, check_spec's missing paths, unlabelled loads of a
labelled file, cached files of another count than a built-in's and their labels' dtype, builder
shapes named as returned (no channel axis added to an RGB domain's, no channels-last hint for
channels-first images), photo crops reaching the photo's last row and column, ``use_cache=False``
not reading the cache, and shifts applied at the size asked for. They use hand-made small domains,
npz files and Builtin records and never build a built-in.

Judged equivalent, so not tested: ``split_units`` and ``_per_class`` sending an empty grouped
domain through ``group_labels`` (zero counts and an empty mask either way; only the unit's word for
a domain without images changes); load_domain's ``provenance.setdefault("origin", base)`` dropped
(the folder and npz loaders always set an origin); the photos' ``[..., :3]`` dropped (none of the
skimage photographs has an alpha channel: mnistm builds the same); ``"/" in base`` dropped from
parse_spec's path check (``os.sep`` is "/" on POSIX).

Left surviving: ``parse_classes(True)`` read as an item (as in the second pass: both refuse it).
"""

import json

import numpy as np
import pytest
import torch

from transferkit import data
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.splits import dataset_name, parse_classes, sample_k_shot, subsample_per_class


def _named(counts, names=None):
    """A domain of ``counts[c]`` images of class ``c`` (4 x 4 grey)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)]).long()
    names = names or [f"c{c}" for c in range(len(counts))]
    return Domain("toy", torch.rand(len(labels), 1, 4, 4), labels, names)


# ---- splits.py: part names ----------------------------------------------------------------------
def test_dataset_name_keeps_a_lone_part_name_and_names_that_only_start_like_a_part():
    # kills: len(parts) > 0 (a domain named "train" cut to ""); _PART without its closing $
    assert dataset_name("train") == "train" and dataset_name("val/test") == "val"
    assert dataset_name("mnist/trainset") == "mnist/trainset"
    assert dataset_name("folder:/data/tests/val") == "folder:/data/tests"
    assert dataset_name("mnist/5-shots/unlabeled") == "mnist/5-shots"


# ---- splits.py: k-shot and subsampling ----------------------------------------------------------
def test_numpy_counts_are_kept_as_ints_in_names_and_provenance():
    # kills: k = int(k) and n = int(n) dropped (numpy ints in provenance, which json cannot write); "k_shot" left out
    d = _named([4, 4])
    labeled, unlabeled = sample_k_shot(d, np.int64(2), seed=np.int64(1))
    for part in (labeled, unlabeled):
        assert type(part.provenance["k_shot"]) is int and part.provenance["k_shot"] == 2
        json.dumps(part.provenance)
    assert labeled.name == "toy/2-shot" and len(labeled) == 4
    sub = subsample_per_class(d, np.int64(3), seed=0)
    assert type(sub.provenance["per_class"]) is int and sub.name == "toy/3-per-class" and len(sub) == 6
    json.dumps(sub.provenance)


def test_k_shot_of_an_empty_domain_is_named():
    # kills: the empty-domain check dropped (a raw ValueError from min())
    empty = Domain("none", torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long), ["a", "b"])
    with pytest.raises(TransferkitError, match="'none' is empty; cannot sample k-shot"):
        sample_k_shot(empty, 1, seed=0)


def test_one_frame_groups_without_keys_are_drawn_as_the_ungrouped_domain():
    # kills: group_ranks drawing from another generator than seeded_generator(seed)
    d = _named([9, 7, 8])
    grouped = Domain("g", d.images, d.labels, d.class_names, groups=torch.arange(len(d)))
    for seed in (0, 3):
        plain = subsample_per_class(d, 3, seed=seed)
        assert torch.equal(subsample_per_class(grouped, 3, seed=seed).images, plain.images)


# ---- splits.py: class lists -------------------------------------------------------------------
def test_an_empty_class_text_is_an_empty_subset():
    # kills: the empty-text check dropped (it then told of an empty entry in a list)
    for text in ("", "   "):
        with pytest.raises(TransferkitError, match="empty class subset"):
            parse_classes(text, _named([1, 1]))


def test_both_ends_of_a_numbered_range_must_name_classes():
    # kills: only the range's start checked on numbered classes ("2-99" took 2, 3 and 10)
    d = _named([1] * 4, ["1", "2", "3", "10"])
    assert parse_classes("2-10", d) == [1, 2, 3]
    with pytest.raises(TransferkitError, match="numbered 99"):
        parse_classes("2-99", d)
    with pytest.raises(TransferkitError, match="numbered 0"):
        parse_classes("0-3", d)


# ---- data.py: domain specs --------------------------------------------------------------------
def test_a_folder_or_npz_spec_without_a_path_is_told_it_needs_one():
    # kills: the empty-path check of folder: / npz: dropped (it then said path '' does not exist)
    for spec in ("folder:", "npz: ", "folder:+blur"):
        with pytest.raises(TransferkitError, match="needs a path"):
            data.check_spec(spec)


def test_unlabelled_images_of_a_labelled_file_come_back_unlabelled(tmp_path):
    # kills: load_domain(labeled=False) returning a labelled Domain of the placeholder labels
    np.savez(tmp_path / "a.npz", x=np.full((5, 1, 4, 4), 120, np.uint8), y=np.arange(5) % 2)
    d = data.load_domain(f"npz:{tmp_path / 'a.npz'}", labeled=False, size=None)
    assert not d.labeled and len(d) == 5 and d.provenance["spec"] == f"npz:{tmp_path / 'a.npz'}"
    assert data.load_domain(f"npz:{tmp_path / 'a.npz'}", size=None).labeled


# ---- data.py: built and cached arrays ---------------------------------------------------------
def _record(size=None, channels=1, native=4):
    return data.Builtin("t", lambda: None, size, channels, native, "", "", ("a", "b"))


def test_a_cached_file_of_another_count_than_the_domain_s_is_not_read_and_labels_come_back_int64(tmp_path):
    # kills: _read_cache taking the count from the file for a domain of known size; labels not cast to int64
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 1, 4, 4), np.uint8), y=np.array([0, 1, 0], np.uint8))
    assert data._read_cache(tmp_path / "c.npz", _record(size=5)) is None
    x, y = data._read_cache(tmp_path / "c.npz", _record(size=3))
    assert x.shape == (3, 1, 4, 4) and y.dtype == np.int64 and y.tolist() == [0, 1, 0]


def test_builder_shapes_are_named_as_returned_without_a_wrong_channels_last_hint():
    # kills: grey N x H x W given a channel axis for an RGB domain; the channels-last hint for channels-first images
    y = np.zeros(6, np.int64)
    with pytest.raises(TransferkitError, match=r"images of shape \(6, 4, 4\); it was registered for 6 x 3 x 4 x 4$"):
        data.checked_arrays(_record(6, channels=3), (np.zeros((6, 4, 4), np.uint8), y))
    with pytest.raises(TransferkitError, match=r"shape \(6, 3, 5, 3\); it was registered for 6 x 3 x 4 x 4$"):
        data.checked_arrays(_record(6, channels=3), (np.zeros((6, 3, 5, 3), np.uint8), y))
    with pytest.raises(TransferkitError, match=r"channels last\? x.transpose\(0, 3, 1, 2\)"):
        data.checked_arrays(_record(6, channels=3), (np.zeros((6, 4, 4, 3), np.uint8), y))


def test_photo_crops_reach_every_row_and_column_of_a_photo(monkeypatch):
    # kills: crop offsets drawn from h - size (never the last row) and w - size
    photo = torch.arange(25.0).reshape(1, 5, 5).expand(3, 5, 5)
    monkeypatch.setattr(data, "_photos", lambda: (photo,))
    crops = data.photo_crops(200, 4, torch.Generator().manual_seed(0))
    corners = set(crops[:, 0, 0, 0].tolist())
    assert corners == {0.0, 1.0, 5.0, 6.0}  # offsets 0 and 1 both ways
    assert crops.shape == (200, 3, 4, 4) and torch.equal(crops[:, 1], crops[:, 0])


def test_check_spec_names_a_missing_folder_or_npz_path(tmp_path):
    # kills: check_spec's path-exists check dropped (a missing folder was only found on loading)
    for kind in ("folder", "npz"):
        with pytest.raises(TransferkitError, match=f"{kind} path .*nothing.* does not exist"):
            data.check_spec(f"{kind}:{tmp_path / 'nothing'}+blur")


def test_building_without_the_cache_does_not_read_a_cached_file(tmp_path, monkeypatch):
    # kills: builtin_arrays reading the cache when use_cache=False
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    built = (np.full((2, 1, 4, 4), 200, np.uint8), np.array([0, 1]))
    monkeypatch.setitem(data.BUILTINS, "fresh", data.Builtin("fresh", lambda: built, 2, 1, 4, "", "", ("a", "b"),
                                                             digest="0123456789ab"))
    path = data.cache_path("fresh")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.zeros((2, 1, 4, 4), np.uint8), y=np.array([1, 0]))  # another (stale) build
    assert data.builtin_arrays("fresh")[1].tolist() == [1, 0]  # read back
    x, y = data.builtin_arrays("fresh", use_cache=False)
    assert int(x.min()) == 200 and y.tolist() == [0, 1]


def test_shifts_apply_to_the_images_at_the_size_asked_for(tmp_path):
    # kills: the base resized only after the shifts (noise drawn at the native 4 x 4, then blown up)
    from transferkit.shifts import get_shift
    np.savez(tmp_path / "a.npz", x=np.full((4, 1, 4, 4), 120, np.uint8), y=np.arange(4) % 2)
    spec = f"npz:{tmp_path / 'a.npz'}"
    resized = data.load_domain(spec, size=8).images
    expected = get_shift("noise")[0](resized, data._shift_generator(5, 0, "noise")).clamp_(0, 1)
    assert torch.equal(data.load_domain(f"{spec}+noise", seed=5, size=8).images, expected)
