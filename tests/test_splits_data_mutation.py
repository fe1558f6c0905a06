"""Tests from a second mutation pass over splits.py and data.py.

Each test kills at least one mutant that survived the existing tests (tests/test_splits.py,
test_data.py, test_domain_registry.py, test_userdata.py and the first pass,
test_data_config_mutation.py). splits.py: part names of several digits, fractions of 0 and
negative ones, the per-group key (the smallest of its images') and the label-draw salt of
grouped domains with keys, split_units' counts of classes without images and its unit for a
folder's videos, the provenance and names of split, k-shot and subsampled parts, the classes a
too-large k lists, ``n=0`` subsamples, a Split or a list given as a domain, and class lists
("ALL", "all" without a domain, mappings, sets of ids and of names, numbers on digit-named
domains, the first id past the end, NFC names, one-class and spaced ranges, items that are no
number). data.py: folder specs with ``~`` and spaces, a folder's origin, ``@groupedV`` before
shifts, ``x.npz`` and a folder or file of the working directory given as a name, size 0 and
fractional seeds, shift generators per position, the seed under ``@groupedV``, a folder's keys
through shifts, size and channels in provenance, empty cached files, negative builder labels,
a declared image count, empty class names, a registration's origin and class names in its cache
key, and built-ins listed as registered by no module. They use hand-made small domains, tiny
image folders and npz files and never build a built-in.

Judged equivalent, so not tested: ``room = counts - 1`` without ``clamp_min(0)`` in
``_part_sizes`` (only classes without samples get -1, and they have no sample to place);
dropping ``_assign``'s early return for no labels, and sending an empty grouped domain through
``group_labels`` in ``split_parts`` (both give empty parts); ``part != "val"`` for
``part == "test"`` in ``fewest_for`` (the same for its two parts).

Left surviving: ``parse_classes(True)`` read as an item (``invalid class True``, with the YAML
hint) instead of ``cannot read classes from True``: both refuse it, and the mutant's message is
no worse.
"""

import numpy as np
import pytest
import torch
from helpers import image_file, toy_domain

from transferkit import data
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.splits import (
    LABEL_DRAWS,
    Split,
    dataset_name,
    keyed_ranks,
    parse_classes,
    sample_k_shot,
    split_domain,
    split_parts,
    split_units,
    subsample_per_class,
)


def _named(counts, names=None):
    """A domain of ``counts[c]`` images of class ``c`` (4 x 4 grey)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    names = names or [f"c{c}" for c in range(len(counts))]
    return Domain("toy", torch.rand(len(labels), 1, 4, 4), labels, names)


# ---- splits.py: names, fractions and provenance -----------------------------------------------
def test_dataset_name_strips_shot_counts_of_several_digits():
    # kills: _PART's \d+-shot read as \d-shot
    assert dataset_name("digits/train/10-shot") == dataset_name("digits/train/125-per-class") == "digits"


def test_a_val_fraction_of_zero_is_allowed_and_negative_fractions_are_refused():
    # kills: 0 < val_fraction; the lower bounds of both fractions dropped
    d = toy_domain(40)
    assert split_domain(d, val_fraction=0.0).sizes()["val"] == 0
    assert split_domain(d, test_fraction=0.0).sizes()["test"] == 0
    for fractions in ({"val_fraction": -0.1}, {"test_fraction": -0.1}):
        with pytest.raises(TransferkitError, match="fractions must be in"):
            split_domain(d, **fractions)


def test_split_parts_carry_their_fractions_and_seed():
    # kills: split_seed left out of a split part's provenance
    s = split_domain(toy_domain(40), val_fraction=0.2, test_fraction=0.3, seed=3)
    for part in s:
        assert {k: part.provenance[k] for k in ("val_fraction", "test_fraction", "split_seed")} == {
            "val_fraction": 0.2, "test_fraction": 0.3, "split_seed": 3}


def _grouped_with_keys():
    """40 groups of 2 frames, all class 0; the frames of group g have keys 1000 + 7g and 10 - g."""
    groups = torch.arange(80) // 2
    keys = torch.where(torch.arange(80) % 2 == 0, 1000 + 7 * groups, 10 - groups).long()
    return Domain("v", torch.rand(80, 1, 4, 4), torch.zeros(80, dtype=torch.long), ["a"], groups=groups, keys=keys)


def test_a_grouped_domain_with_keys_is_split_and_drawn_by_each_group_s_smallest_key_and_the_label_salt():
    # kills: group_keys' "amin" as "amax"; group_ranks without LABEL_DRAWS
    d = _grouped_with_keys()
    group_key = 10 - torch.arange(40)  # the smallest of each group's two keys
    labels = torch.zeros(40, dtype=torch.long)
    split_ranks = keyed_ranks(labels, group_key, 0)
    expected = torch.where(split_ranks < 10, 2, torch.where(split_ranks < 16, 1, 0))  # 10 test, 6 val groups
    assert torch.equal(split_parts(d)[::2], expected)
    drawn = keyed_ranks(labels, group_key, 0, LABEL_DRAWS) < 3
    assert not torch.equal(drawn, split_ranks < 3)  # another order than the split's
    assert sorted(subsample_per_class(d, 6, 0).groups.unique().tolist()) == torch.nonzero(drawn).flatten().tolist()


def test_split_units_count_classes_without_images_and_name_folder_videos():
    # kills: bincount without minlength (both branches); the sub-folder unit of a folder's groups
    d = _named([3, 4, 0])
    counts, unit = split_units(split_domain(d))
    assert counts.tolist() == [3, 4, 0] and unit == "images"
    grouped = Domain("g", torch.rand(8, 1, 4, 4), torch.tensor([0] * 4 + [1] * 4), ["a", "b", "c"],
                     groups=torch.arange(8) // 2, provenance={"origin": "folder:/data/videos"})
    counts, unit = split_units(split_domain(grouped))
    assert counts.tolist() == [2, 2, 0] and "sub-folders" in unit
    grouped.provenance = {"origin": "npz:/data/v.npz"}
    assert split_units(split_domain(grouped))[1] == "groups (videos)"


# ---- splits.py: k-shot and subsampling ------------------------------------------------------
def test_k_shot_parts_are_named_and_marked():
    # kills: the labelled part's name without /k-shot; the unlabelled part's name; "part" left out of provenance
    labeled, unlabeled = sample_k_shot(_named([5, 5]), 2, seed=1)
    assert (labeled.name, unlabeled.name) == ("toy/2-shot", "toy/unlabeled")
    assert (labeled.provenance["part"], unlabeled.provenance["part"]) == ("labeled", "unlabeled")
    assert labeled.provenance["k_shot_seed"] == unlabeled.provenance["k_shot_seed"] == 1


def test_a_too_large_k_lists_only_the_classes_below_it():
    # kills: classes with exactly k listed (<= k); a lone small class listed as "1 classes"
    with pytest.raises(TransferkitError, match="class c0 has 2 samples") as e:
        sample_k_shot(_named([2, 3, 5, 9]), 5, seed=0)
    assert "2 classes have fewer than 5: c0 (2), c1 (3);" in str(e.value) and "c2 (5)" not in str(e.value)
    with pytest.raises(TransferkitError, match="class c0 has 2 samples") as e:
        sample_k_shot(_named([2, 5, 9]), 5, seed=0)
    assert "classes have fewer" not in str(e.value) and "lower k" in str(e.value)


def test_a_too_large_k_lists_thirty_small_classes_then_an_ellipsis():
    # kills: the list of small classes cut at 3
    with pytest.raises(TransferkitError, match="35 classes have fewer than 2") as e:
        sample_k_shot(_named([1] * 35 + [4]), 2, seed=0)
    assert "c29 (1), ..." in str(e.value) and "c30 (1)" not in str(e.value)


def test_subsampling_refuses_zero_and_names_and_marks_its_part():
    # kills: is_whole(n, 0); subsample_seed left out of provenance; the name without /n-per-class
    d = _named([5, 5])
    with pytest.raises(TransferkitError, match="n must be an integer >= 1, got 0"):
        subsample_per_class(d, 0, seed=0)
    sub = subsample_per_class(d, 3, seed=2)
    assert sub.name == "toy/3-per-class" and sub.provenance["subsample_seed"] == 2 and sub.provenance["per_class"] == 3


def test_a_split_or_a_list_given_as_a_domain_is_named():
    # kills: the Split check and the Domain check of _check_domain dropped
    s = split_domain(toy_domain(40))
    with pytest.raises(TransferkitError, match=r"got a Split .*split\.train"):
        sample_k_shot(s, 1, seed=0)
    with pytest.raises(TransferkitError, match="takes a Domain, got list"):
        subsample_per_class([1, 2], 1, seed=0)
    assert isinstance(s, Split)


# ---- splits.py: class lists -------------------------------------------------------------------
def test_all_in_any_case_and_all_without_a_domain():
    # kills: "all" matched case-sensitively; the domain check of "all" dropped
    d = _named([1, 1, 1])
    assert parse_classes(" ALL ", d) == [0, 1, 2]
    with pytest.raises(TransferkitError, match="'all' classes needs a domain"):
        parse_classes("all")


def test_mappings_and_sets_of_names_are_refused_and_sets_of_ids_sorted():
    # kills: the mapping check dropped; a set of ids kept in set order; a set of names accepted
    d = _named([1] * 10)
    with pytest.raises(TransferkitError, match="are a mapping"):
        parse_classes({0: "c0"}, d)
    assert list({1, 8}) == [8, 1]  # the set's own order
    assert parse_classes({1, 8}, d) == [1, 8]
    with pytest.raises(TransferkitError, match="set of names"):
        parse_classes({"c0", "c1"}, d)


def test_numbers_on_a_domain_named_by_its_ids_are_ids():
    # kills: numbered_classes without its ids-are-names exception (numbers then named no class 10)
    digits = _named([1] * 10, [str(i) for i in range(10)])
    with pytest.raises(TransferkitError, match=r"class id 10 out of range \[0, 9\]"):
        parse_classes("8-10", digits)
    with pytest.raises(TransferkitError, match=r"class id 10 out of range \[0, 9\]"):
        parse_classes([10], digits)  # the first id past the end: i <= num_classes let it through


def test_names_are_matched_in_nfc():
    # kills: the NFC normalisation of a class name given as text
    d = _named([1, 1], ["caf\u00e9", "b"])
    assert parse_classes("cafe\u0301", d) == [0] and parse_classes(["cafe\u0301", "b"], d) == [0, 1]


def test_one_class_ranges_and_spaced_ranges():
    # kills: lo < hi; _RANGE without the spaces around '-'
    d = _named([1] * 5)
    assert parse_classes("3-3", d) == [3]
    assert parse_classes("0 - 2, 4", d) == [0, 1, 2, 4]


def test_an_item_that_is_no_number_is_named():
    # kills: int(item) outside try (a raw TypeError / ValueError)
    d = _named([1, 1])
    for bad in ([None], [[1]], [object]):
        with pytest.raises(TransferkitError, match="invalid class"):
            parse_classes(bad, d)


# ---- data.py: domain specs --------------------------------------------------------------------
def _npz(path, n=6, value=100, **extra):
    """An npz domain of ``n`` grey 4 x 4 images of one value, labels 0, 1, 0, 1, ..."""
    np.savez(path, x=np.full((n, 1, 4, 4), value, np.uint8), y=np.arange(n) % 2, **extra)
    return f"npz:{path}"


def _folder(root, classes=("a", "b"), per_class=3):
    for c in classes:
        for i in range(per_class):
            image_file(root / c / f"{i}.png", 60 + 40 * i)
    return f"folder:{root}"


def test_folder_paths_in_specs_expand_the_home_folder_and_drop_spaces(tmp_path, monkeypatch):
    # kills: the longest existing prefix looked up without expanduser; without strip
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a+b").mkdir()
    assert data.parse_spec("folder:~/a+b+blur") == ("folder:~/a+b", ["blur"])
    assert data.parse_spec(f"folder: {tmp_path}/a+b + blur") == (f"folder:{tmp_path}/a+b", ["blur"])


def test_a_folder_s_origin_is_the_folder_it_read_not_the_spec_s_text(tmp_path, monkeypatch):
    # kills: load_domain overwriting the loader's origin with the spec's base (folder:~/f)
    monkeypatch.setenv("HOME", str(tmp_path))
    _folder(tmp_path / "f")
    origin = data.load_domain("folder:~/f", size=None).provenance["origin"]
    assert origin.startswith("folder:") and "~" not in origin and origin.endswith("f")


def test_grouped_before_the_shifts_is_told_where_it_goes():
    # kills: the @groupedV-comes-last check dropped
    with pytest.raises(TransferkitError, match=r"@groupedV comes last.*: digits\+blur@grouped2"):
        data.parse_spec("digits@Grouped2+blur")


def test_an_npz_file_name_without_its_kind_is_told_it(tmp_path, monkeypatch):
    # kills: kind == "npz" dropped (x.npz read as a domain name); the folder / file hints of _builtin
    with pytest.raises(TransferkitError, match="needs its kind in front: npz:x.npz"):
        data.check_spec("x.npz")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata").mkdir()
    import zipfile
    with zipfile.ZipFile(tmp_path / "mine", "w") as archive:  # an npz without its suffix
        archive.writestr("x.npy", b"")
    (tmp_path / "notes").write_bytes(b"")
    with pytest.raises(TransferkitError, match=r"'notes' is a file; a domain is a folder \(folder:PATH"):
        data.check_spec("notes")
    with pytest.raises(TransferkitError, match="'mydata' is a folder here: give it as folder:mydata"):
        data.check_spec("mydata")
    with pytest.raises(TransferkitError, match="'mine' is a file here: give it as npz:mine"):
        data.check_spec("mine")


# ---- data.py: load_domain -----------------------------------------------------------------------
def test_size_zero_fractional_seeds_and_unlabelled_grouped_views_are_refused(tmp_path):
    # kills: size >= 0; the seed check dropped
    spec = _npz(tmp_path / "a.npz")
    with pytest.raises(TransferkitError, match="size must be a positive int, got 0"):
        data.load_domain(spec, size=0)
    with pytest.raises(TransferkitError, match="seed must be a whole number, got 1.5"):
        data.load_domain(f"{spec}+noise", seed=1.5)
    with pytest.raises(TransferkitError, match="@grouped views need labels"):
        data.load_domain(f"{spec}@grouped2", labeled=False)


def test_each_shift_draws_from_its_seed_position_and_name(tmp_path):
    # kills: _shift_generator(seed, 0, name) (noise+noise drawing the same noise twice)
    from transferkit.shifts import get_shift
    spec = _npz(tmp_path / "a.npz")
    noise = get_shift("noise")[0]
    x = data.load_domain(spec, size=None).images
    for i in range(2):
        x = noise(x, data._shift_generator(7, i, "noise")).clamp_(0, 1)
    assert torch.equal(data.load_domain(f"{spec}+noise+noise", seed=7, size=None).images, x)


def test_grouped_views_of_a_shifted_spec_follow_the_seed(tmp_path):
    # kills: the seed not passed on to the spec under @groupedV
    from transferkit.grouped import grouped_views
    spec = _npz(tmp_path / "a.npz")
    expected = grouped_views(data.load_domain(f"{spec}+noise", seed=3, size=None), 2, seed=3)
    assert torch.equal(data.load_domain(f"{spec}+noise@grouped2", seed=3, size=None).images, expected.images)


def test_a_folder_keeps_its_keys_and_channels_through_shifts(tmp_path):
    # kills: keys dropped in the shift loop or in the returned domain
    spec = _folder(tmp_path / "f")
    plain = data.load_domain(spec, size=None)
    shifted = data.load_domain(f"{spec}+inversion", size=None)
    assert plain.keys is not None and torch.equal(shifted.keys, plain.keys)
    coloured = data.load_domain(f"{spec}+noise", size=None, channels=3)
    assert coloured.images.shape[1:] == (3, 4, 4)
    assert torch.equal(coloured.images[:, 0], coloured.images[:, 1])  # grey noise, then 3 equal channels


def test_provenance_records_size_and_channels(tmp_path):
    # kills: size and channels left out of load_domain's provenance
    p = data.load_domain(_npz(tmp_path / "a.npz"), size=8, channels=3).provenance
    assert (p["size"], p["channels"], p["spec"]) == (8, 3, f"npz:{tmp_path / 'a.npz'}")


# ---- data.py: registered domains and the cache --------------------------------------------------
@pytest.fixture
def registered(tmp_path, monkeypatch):
    """``register(name, build, **settings)`` on an empty cache; the names are forgotten afterwards."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    before = set(data.BUILTINS)

    def register(name, build, **settings):
        settings = {"channels": 1, "size": 4, "class_names": ["a", "b"], "description": "tiny", **settings}
        return data.register_domain(name, build, **settings)
    yield register
    for name in set(data.BUILTINS) - before:
        del data.BUILTINS[name]


def _tiny_arrays(n=6, labels=None):
    return np.full((n, 4, 4), 9, np.uint8), np.arange(n) % 2 if labels is None else labels


def test_an_empty_cached_file_is_not_read(tmp_path):
    # kills: n > 0 dropped from _read_cache (a registered domain's size comes from the file)
    b = data.Builtin("t", None, None, 1, 4, "", "", ("a", "b"))
    np.savez(tmp_path / "c.npz", x=np.zeros((0, 1, 4, 4), np.uint8), y=np.zeros(0, np.int64))
    assert data._read_cache(tmp_path / "c.npz", b) is None


def test_builders_with_negative_labels_or_another_count_than_declared_are_refused(registered):
    # kills: y.min() >= 0 dropped from checked_arrays; num_images not checked there
    registered("negative", lambda: _tiny_arrays(labels=np.array([0, 1, -1, 0, 1, 0])))
    with pytest.raises(TransferkitError, match=r"labels -1..1; they index its 2 class_names"):
        data.load_domain("negative")
    registered("twelve", lambda: _tiny_arrays(12), num_images=10)
    with pytest.raises(TransferkitError, match="images of shape .12, 1, 4, 4.; it was registered for 10 x 1 x 4 x 4"):
        data.load_domain("twelve")


def test_registration_refuses_empty_class_names_and_keeps_origin_and_class_names_in_its_key(registered):
    # kills: empty class names accepted; origin replaced by the builder's name; class_names left out of the digest;
    # a built-in listed as registered_in its module
    with pytest.raises(TransferkitError, match="class_names must be a list of distinct non-empty strings"):
        registered("blank", _tiny_arrays, class_names=["a", ""])
    registered("keyed", _tiny_arrays, origin="my lab")
    row = next(r for r in data.list_domains() if r["name"] == "keyed")
    digest = data.BUILTINS["keyed"].digest
    assert row["origin"] == "my lab"
    assert next(r for r in data.list_domains() if r["name"] == "digits")["registered_in"] is None  # shipped
    registered("keyed", _tiny_arrays, class_names=["b", "a"])  # the same builder, its classes renamed
    assert data.BUILTINS["keyed"].digest != digest
