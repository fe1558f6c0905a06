"""Tests from a third mutation pass over userdata.py and domain.py.

The earlier passes (test_data_config_mutation.py, test_shifts_heads_mutation.py,
test_userdata_domain_mutation.py) and the other tests leave these alive, each killed here. On the
Domain: labels of another length than the images; class_names as a set or holding None; the "one
name per class id" hint given for negative labels; keys of another length; an empty subset list and
float indices; select_classes of one string; a digit text read as a name when only some classes are
numbers; warn_numbered_match when only one side numbers its classes; warn_unshared_classes quiet
when only some names match up to case; to_format of RGBA to colour and without antialiasing;
image_batch's read_images hint for a model of non-square images; Domain.unlabeled dropping its
groups; a read-only NumPy array not copied; describe()'s class counts. In userdata:
load_torchvision's CIFAR10 axis, name case and split; read_images' resampling filter, the place of
PIL images among paths, size 0, the "... and N more" of over 20 unreadable files; the folder cache
keyed on the size, a warning for an unknown TRANSFERKIT_FOLDER_CACHE value, a cache that cannot be
written; an unlabelled folder's skipped files; an unlabelled npz file's provenance; npz uint64
labels beyond int64 and the cast named for object labels. Each test's comment names the mutant(s) it
kills.

Judged equivalent, so not tested: load_torchvision's SVHN labels % 10 dropped (torchvision already
maps SVHN's 10 to 0); load_npz's "class_names are not unique" check dropped (the Domain refuses the
same names, naming them); labels_by_name without its same-names fast path (the lookup gives the same
ids); group_labels' negative-id hint without names is None (named groups are numbered from 0);
warn_unshared_classes without its empty-side return (no warning follows either way). Left
surviving: none of those tried."""

import contextlib
import warnings

import numpy as np
import pytest
import torch
from helpers import image_file, npz_file

import transferkit.userdata as userdata
from transferkit.domain import Domain, warn_numbered_match
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.userdata import load_image_folder, load_npz, read_images


@contextlib.contextmanager
def _quiet():
    """A block in which a transferkit warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        yield


def _bytes(n, shape=(4, 4)):
    """``n`` uint8 images with one white pixel (not almost black)."""
    x = np.zeros((n, *shape), np.uint8)
    x[:, 0, 0] = 255
    return x


# ---- domain.py: construction checks -----------------------------------------------------------
def test_labels_of_another_length_than_the_images_are_refused():
    # kills: Domain's check y.shape[0] == x.shape[0] dropped (two labels for three images taken)
    with pytest.raises(TransferkitError, match=r"one label per image \(3 images, labels of shape \(2,\)\)"):
        Domain("d", torch.rand(3, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])


def test_a_numbered_source_and_a_named_target_do_not_warn_of_numbered_classes():
    # kills: warn_numbered_match's not all(numbered) -> not any (one file with class_names warned as numbered)
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    s = Domain("s", x, y, ["0", "1"], provenance={"origin": "npz:/a/s.npz", "numbered_classes": True})
    t = Domain("t", x, y, ["0", "1"], provenance={"origin": "npz:/a/t.npz"})
    with _quiet():
        warn_numbered_match(s, t)
        warn_numbered_match(t, s)


def _domain(n=6, classes=3, **kw):
    return Domain("d", torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0)),
                  torch.arange(n) % classes, [f"c{i}" for i in range(classes)], **kw)


def test_class_names_as_a_set_or_with_none_are_refused():
    # kills: Domain's class_names check without set / frozenset (ids in hash order); without c is not None ("None")
    for names in ({"a", "b"}, frozenset({"a", "b"}), ["a", None]):
        with pytest.raises(TransferkitError, match="class_names must be a list of names"):
            Domain("d", torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), names)


def test_negative_labels_are_named_without_the_one_name_per_class_hint():
    # kills: Domain's "one name per class id is needed" hint given for negative labels too (lo >= 0 dropped)
    with pytest.raises(TransferkitError, match=r"labels out of range \[0, 1\] \(found -1\.\.1\)") as e:
        Domain("d", torch.rand(2, 1, 4, 4), torch.tensor([-1, 1]), ["a", "b"])
    assert "one name per class id" not in str(e.value)


def test_keys_of_another_length_than_the_labels_are_refused():
    # kills: Domain's keys check without keys.shape == y.shape (five keys for six images taken)
    with pytest.raises(TransferkitError, match=r"keys must be one int64 per image, got torch.int64 of shape \(5,\)"):
        _domain(keys=torch.arange(5))


def test_subset_of_an_empty_list_is_an_empty_domain_and_float_indices_are_refused():
    # kills: subset without its .long() of an empty index (torch.as_tensor([]) is float: refused);
    # subset's float check dropped (indices 0.0, 2.0 taken as ids)
    d = _domain()
    empty = d.subset([])
    assert len(empty) == 0 and empty.images.shape == (0, 1, 4, 4) and empty.class_names == d.class_names
    with pytest.raises(TransferkitError, match="bool mask or integer indices, got torch.float32"):
        d.subset(torch.tensor([0.0, 2.0]))



def test_select_classes_refuses_a_string_of_class_names():
    # kills: select_classes without its str check ("ab" read as the classes 'a' and 'b')
    d = Domain("d", torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]), ["a", "b", "c"])
    with pytest.raises(TransferkitError, match=r"got the string 'ab' \(transferkit\.splits\.parse_classes\('ab', "
                                               r"domain\) reads"):
        d.select_classes("ab")


def test_a_digit_text_is_a_class_id_unless_every_class_is_named_by_a_number():
    # kills: _class_id's not all(n.isdigit() ...) -> not any (one year among named classes made "1" unknown)
    d = Domain("d", torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]), ["a", "b", "2000"])
    assert d.select_classes(["1"]).class_names == ["b"]
    numbered = Domain("n", torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), ["1999", "2000"])
    with pytest.raises(TransferkitError, match="unknown class '1'"):
        numbered.select_classes(["1"])


# ---- userdata.py: torchvision datasets -------------------------------------------------------
def test_load_torchvision_moves_cifar10_channels_first_and_names_the_split(monkeypatch, tmp_path):
    # kills: load_torchvision without its moveaxis of CIFAR10's N x H x W x C; name.lower() dropped; the split
    # always "train"
    import sys
    import types

    from transferkit.userdata import load_torchvision

    class CIFAR10:  # torchvision's layout: uint8 N x 32 x 32 x 3 data, a list of targets, the class names
        classes = ["airplane", "automobile"]

        def __init__(self, root, train, download):
            assert not train and download
            self.data = np.zeros((2, 32, 32, 3), np.uint8)
            self.data[1, 0, 0, 2] = 255  # one blue pixel
            self.targets = [0, 1]

    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = CIFAR10
    vision = types.ModuleType("torchvision")
    vision.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    d = load_torchvision("CIFAR10", tmp_path, train=False)
    assert d.name == "cifar10-test" and d.provenance["split"] == "test"
    assert d.images.shape == (2, 3, 32, 32) and float(d.images[1, 2, 0, 0]) == 1.0 and float(d.images.sum()) == 1.0
    assert d.labels.tolist() == [0, 1] and d.class_names == ["airplane", "automobile"]


def test_to_format_shrinks_with_antialiasing_so_a_small_detail_is_not_lost():
    # kills: to_format's F.interpolate(..., antialias=True) -> False (a point between the samples vanishes)
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 0] = 1.0
    small = Domain("d", x, torch.tensor([0]), ["a"]).to_format(size=2).images
    assert small.shape == (1, 1, 2, 2) and float(small[0, 0, 0, 0]) > 0.02 and float(small[0, 0, 1, 1]) == 0.0


# ---- userdata.py: reading image files -----------------------------------------------------------
def test_read_images_shrinks_with_bilinear_filtering_not_nearest_pixels(tmp_path):
    # kills: _decode_image's resize with Image.Resampling.BILINEAR -> NEAREST (a stripe image kept hard-edged)
    from PIL import Image

    a = np.zeros((4, 4), np.uint8)
    a[:, 2:] = 255  # left half black, right half white
    Image.fromarray(a).save(tmp_path / "s.png")
    x = read_images(tmp_path / "s.png", size=2)
    assert x.shape == (1, 1, 2, 2)
    assert 0.05 < float(x[0, 0, 0, 0]) < 0.5 < float(x[0, 0, 0, 1]) < 0.95  # filtered: neither 0 nor 1


def test_read_images_keeps_pil_images_at_their_place_among_the_paths(tmp_path):
    # kills: read_images' paths.insert(i, im) -> paths.append(im) (a PIL image first read last)
    from PIL import Image

    path = image_file(tmp_path / "black.png", value=0)
    x = read_images([Image.new("L", (4, 4), 255), path, Image.new("L", (4, 4), 128)])
    assert x[:, 0, 0, 0].mul(255).round().tolist() == [255.0, 0.0, 128.0]


def test_read_images_refuses_size_0_by_name(tmp_path):
    # kills: _check_size_channels' size >= 1 -> size >= 0 (a size of 0 reaches PIL)
    path = image_file(tmp_path / "a.png")
    with pytest.raises(TransferkitError, match="size must be a positive int or None, got 0"):
        read_images(path, size=0)


def test_more_than_twenty_unreadable_files_are_counted_beyond_the_twenty_named(tmp_path):
    # kills: _decode_images without its "... and N more" line (22 broken files named as if 20 were all)
    paths = []
    for i in range(22):
        paths.append(tmp_path / f"{i:02d}.png")
        paths[-1].write_bytes(b"not a png")
    with pytest.raises(TransferkitError, match="22 of the 22 image files given cannot be read") as e:
        read_images(paths)
    assert str(e.value).endswith("... and 2 more") and "20.png" not in str(e.value)


# ---- userdata.py: the folder cache ------------------------------------------------------------
def test_the_folder_cache_is_keyed_on_the_size(tmp_path, monkeypatch):
    # kills: the cache key without "size" (the 4 x 4 pixels of a first read given for size=2)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)
    image_file(tmp_path / "f" / "a" / "0.png", 10)
    image_file(tmp_path / "f" / "b" / "1.png", 200)
    assert load_image_folder(tmp_path / "f").images.shape == (2, 1, 4, 4)
    assert load_image_folder(tmp_path / "f", size=2).images.shape == (2, 1, 2, 2)
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 2


def test_an_unknown_folder_cache_setting_warns_and_leaves_the_cache_on(monkeypatch):
    # kills: folder_cache_on without its warning for a value that is neither on nor off ("flase" read as on silently)
    monkeypatch.setenv("TRANSFERKIT_FOLDER_CACHE", "flase")
    with pytest.warns(TransferkitWarning, match=r"TRANSFERKIT_FOLDER_CACHE='flase' is read as on; 0, false, off"):
        assert userdata.folder_cache_on()
    monkeypatch.setenv("TRANSFERKIT_FOLDER_CACHE", " Yes ")
    with _quiet():
        assert userdata.folder_cache_on()


def test_a_cache_that_cannot_be_written_costs_the_speed_up_not_the_load(tmp_path, monkeypatch):
    # kills: decoded_images' except OSError around the cache write narrowed (a read-only cache failed the load)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)

    def read_only(path, write):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(userdata, "atomic_write", read_only)
    image_file(tmp_path / "f" / "a" / "0.png", 10)
    image_file(tmp_path / "f" / "b" / "1.png", 200)
    with pytest.warns(TransferkitWarning, match="its decoded pixels are not cached .*Permission denied"):
        d = load_image_folder(tmp_path / "f")
    assert d.images[:, 0, 0, 0].mul(255).round().tolist() == [10.0, 200.0]


def test_an_unlabelled_folder_names_the_files_it_skips(tmp_path):
    # kills: load_unlabeled_folder without _warn_skipped (a notes file beside the images dropped silently)
    from transferkit.userdata import load_unlabeled_folder

    image_file(tmp_path / "u" / "0.png", 200)
    (tmp_path / "u" / "notes.txt").write_text("x")
    with pytest.warns(TransferkitWarning, match=r"skipped 1 file\(s\) that are not images .*\('notes.txt'\)"):
        d = load_unlabeled_folder(tmp_path / "u")
    assert len(d) == 1 and not d.labeled


# ---- userdata.py: npz files -------------------------------------------------------------------
def test_npz_uint64_labels_beyond_int64_are_named_not_wrapped(tmp_path):
    # kills: _int_vector without its uint64 > int64 max check (2**63 wrapped to a negative label)
    path = npz_file(tmp_path / "a.npz", x=_bytes(2), y=np.array([0, 2**63], np.uint64))
    with pytest.raises(TransferkitError, match="'y' holds 9223372036854775808, beyond int64"):
        load_npz(path)


def test_npz_object_labels_are_named_with_the_integer_cast_that_saves_them(tmp_path):
    # kills: _member's cast for 'y' dropped (labels told to be saved as .astype(str), which load_npz refuses)
    path = npz_file(tmp_path / "a.npz", x=_bytes(2), y=np.array([0, 1], dtype=object))
    with pytest.raises(TransferkitError, match=r"'y' is an object array .*save it as y=values\.astype\(int\)"):
        load_npz(path)


def test_an_unlabelled_npz_file_records_where_it_came_from(tmp_path):
    # kills: load_npz(labeled=False) without its provenance {"origin": "npz:PATH"} (results without the file)
    path = npz_file(tmp_path / "u.npz", x=_bytes(2))
    d = load_npz(path, labeled=False)
    assert d.provenance == {"origin": f"npz:{path}"} and d.name == "u"


def test_image_batch_suggests_read_images_with_a_size_only_for_square_images():
    # kills: image_batch's read_images / to_format hint without shape[1] == shape[2] (size= of a 28 x 32 model)
    from transferkit.domain import image_batch

    with pytest.raises(TransferkitError, match=r"got \(2, 1, 8, 8\); image files: transferkit.read_images\(paths, "
                                               r"size=28, channels=1\)"):
        image_batch(torch.rand(2, 1, 8, 8), "predict", shape=(1, 28, 28), exact=True)
    with pytest.raises(TransferkitError, match=r"got \(2, 1, 8, 8\)$"):
        image_batch(torch.rand(2, 1, 8, 8), "predict", shape=(1, 28, 32), exact=True)


def test_to_format_turns_rgba_into_colour_by_dropping_the_alpha():
    # kills: to_format's alpha dropped for channels == 1 only (RGBA -> RGB refused as "cannot convert 4 channels")
    x = torch.rand(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    rgb = Domain("d", x, torch.tensor([0, 1]), ["a", "b"]).to_format(channels=3).images
    assert torch.equal(rgb, x[:, :3])


def test_unshared_classes_warn_when_only_some_target_names_differ_from_the_source_in_case():
    # kills: warn_unshared_classes' early return on all(... in near) -> any (one case-alike name hid the rest)
    from transferkit.domain import warn_unshared_classes

    with pytest.warns(TransferkitWarning, match=r"no target class is named as a source class .*target 'Cat' ~ "
                                                r"source 'cat'"):
        warn_unshared_classes(["cat", "dog"], ["Cat", "eel"], chosen=False)
    with _quiet():  # every name alike up to case: head_mapping names them
        warn_unshared_classes(["cat", "dog"], ["Cat", "Dog"], chosen=False)


def test_unlabelled_images_keep_their_groups():
    # kills: Domain.unlabeled passing groups=None (the videos of an unlabelled target lost)
    d = Domain.unlabeled("u", torch.rand(3, 1, 4, 4), groups=["v1", "v1", "v2"])
    assert d.groups.tolist() == [0, 0, 1] and not d.labeled


def test_a_read_only_numpy_array_is_copied_into_a_writable_tensor():
    # kills: Domain's np.require without "W" (torch warns of a non-writable array and shares its memory)
    a = np.full((2, 1, 4, 4), 0.5, np.float32)
    a.flags.writeable = False  # as a memory-mapped .npy opens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = Domain("d", a, np.array([0, 1]), ["a", "b"])
    d.images.add_(0.25)
    assert float(d.images.max()) == 0.75 and float(a.max()) == 0.5


def test_describe_counts_the_images_of_each_class():
    # kills: describe()'s "class_counts" emptied (a class without images not shown as 0)
    d = Domain("d", torch.rand(3, 1, 4, 4), torch.tensor([0, 2, 2]), ["a", "b", "c"])
    assert d.describe()["class_counts"] == [1, 0, 2] and d.describe()["size"] == 3
