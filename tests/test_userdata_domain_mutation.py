"""Tests from a second mutation pass over userdata.py and domain.py.

The first passes (test_data_config_mutation.py, test_shifts_heads_mutation.py) and test_userdata.py
leave these alive, each killed here: image suffixes in upper case; the skipped files named at most
five; train/val/test (valid, validation) folders read as classes; a folder of videos only is not
warned of mixed levels; 32-bit integer images up to 65535 and float images within the rounding
tolerance of [0, 1]; a palette of colours that differ only in blue; no grey-content warning when
the channels were chosen; read_images of no files, channels 4; the folder cache at exactly its file
count, keyed on the channels, and a foreign entry of another image count not read; path keys of
the NFC form; npz images on the channel axis in a tie, an alpha channel first, negative integer
images, whole float labels, a key 'vid', an upper-case .NPY, named groups of the wrong length, an
unlabelled file without 'x'. On the Domain: the 1-based hint, keys of int64 and groups cast to
int64, the layout warning for a band count equal to the width, channels-last detection of 4-pixel
tall patches, no 255 hint for values of 1.5, complex labels, repr and describe of groups, a numpy
array of text given as images; select_classes' provenance, relabel=False, an empty subset and a
subset without images, class ids as float or bool tensors; labels_by_name's -1; to_format of RGBA
to grey, of images of the right height only, of five bands to colour; _loose_names never cutting
into a number or a whole name; head_mapping on exact names; warn_unshared_classes at exactly half
alike, with other class counts and with one shared class; warn_numbered_match on one file. Each
test's comment names the mutant(s) it kills; expected values are written out by hand.

Judged equivalent, so not tested: _decode_images raising a single unreadable file's own message
rather than "1 of the N image files cannot be read" (both name the file and the cause); load_npz's
checks that a member is a NumPy array (np.load of an .npz gives only arrays); check_labeled's
getattr default True -> False (every Domain has ``labeled``). Left surviving: image_batch's
``nhwc`` without ``images.shape[1] != images.shape[3]``, which differs only for N x C x W x C images
given to a network built for C x C x W (images as many pixels wide as channels: truly ambiguous)."""

import warnings

import numpy as np
import pytest
import torch
from helpers import image_file, npz_file
from PIL import Image

import transferkit.userdata as userdata
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.userdata import load_image_folder, load_npz, path_keys, read_images


def _bytes(n, shape=(4, 4)):
    """``n`` uint8 images with one white pixel (not almost black)."""
    x = np.zeros((n, *shape), np.uint8)
    x[:, 0, 0] = 255
    return x


def _messages(record):
    return [str(w.message) for w in record]


# ---- userdata.py: which files an image folder reads --------------------------------------------
def test_image_suffixes_are_matched_in_any_case(tmp_path):
    # kills: _sort_file's p.suffix.lower() -> p.suffix (a camera's IMG_0001.JPG skipped as not an image)
    image_file(tmp_path / "f" / "a" / "0.PNG")
    image_file(tmp_path / "f" / "a" / "1.JpG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_image_folder(tmp_path / "f")
    assert len(d) == 2


def test_skipped_files_are_counted_and_at_most_five_named(tmp_path):
    # kills: _warn_skipped's len(skipped) > 5 -> > 6 (a sixth file neither shown nor hinted at)
    image_file(tmp_path / "f" / "a" / "0.png")
    for i in range(6):
        (tmp_path / "f" / "a" / f"note{i}.txt").write_text("x")
    with pytest.warns(UserWarning, match=r"skipped 6 file\(s\)") as record:
        load_image_folder(tmp_path / "f")
    text = next(m for m in _messages(record) if "skipped" in m)
    assert "note4.txt" in text and "note5.txt" not in text and "note4.txt', ...)" in text


@pytest.mark.parametrize("classes", [("test", "train", "val"), ("validation",), ("other", "valid")])
def test_split_folders_read_as_classes_warn(tmp_path, classes):
    # kills: _class_files' len(classes) <= 3 -> < 3; the split names without "valid" / "validation"
    for c in classes:
        image_file(tmp_path / "f" / c / "0.png")
    with pytest.warns(UserWarning, match=r"read as classes.*for a dataset split into train/val/test folders"):
        d = load_image_folder(tmp_path / "f")
    assert d.class_names == sorted(classes)


def test_a_folder_of_videos_only_does_not_warn_of_mixed_levels(tmp_path):
    # kills: _class_files' 0 < nested < len(files) -> <= (every image in a video folder warned as mixed)
    for c in ("a", "b"):
        for v in ("v1", "v2"):
            image_file(tmp_path / "f" / c / v / "0.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_image_folder(tmp_path / "f")
    assert d.groups.tolist() == [0, 1, 2, 3]


# ---- userdata.py: decoding image files ---------------------------------------------------------
def test_a_32_bit_integer_image_up_to_65535_is_read_as_16_bit_grey(tmp_path):
    # kills: _decode_image's a.max() > 65535 -> >= 65535 (the brightest 16-bit value refused)
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.array([[0, 65535], [32768, 65535]], np.int32)).save(tmp_path / "f" / "a" / "0.tif")
    d = load_image_folder(tmp_path / "f")
    assert d.images[0, 0].mul(255).round().tolist() == [[0, 255], [128, 255]]


def test_a_palette_image_whose_colours_differ_only_in_blue_stays_colour(tmp_path):
    # kills: the palette's grey test comparing red and green only
    im = Image.new("P", (4, 2))
    im.putpalette([0, 0, 255, 255, 255, 0] + [0] * (256 * 3 - 6))
    im.putdata([0, 1] * 4)
    im.save(tmp_path / "p.png")
    x = read_images(tmp_path / "p.png")
    assert x.shape == (1, 3, 2, 4)
    assert x[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0] and x[0, :, 0, 1].tolist() == [1.0, 1.0, 0.0]


def test_colour_files_of_grey_content_read_with_channels_3_do_not_warn(tmp_path):
    # kills: _decode_images' grey = channels is None and ... -> without channels is None (warns though chosen)
    image_file(tmp_path / "f" / "a" / "0.png", (90, 90, 90), mode="RGB")
    image_file(tmp_path / "f" / "b" / "1.png", (30, 30, 30), mode="RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_image_folder(tmp_path / "f", channels=3)
        x = read_images([tmp_path / "f" / "a" / "0.png"], channels=3)
    assert d.images.shape == (2, 3, 4, 4) and x.shape == (1, 3, 4, 4)
    with pytest.warns(UserWarning, match="grey in content"):  # channels left to the files: said
        load_image_folder(tmp_path / "f")


def test_read_images_of_no_files_and_channels_4_are_refused_by_name(tmp_path):
    # kills: read_images without its "got none" check (an AttributeError); channels 4 let through (a KeyError)
    with pytest.raises(TransferkitError, match="one or more image files, got none"):
        read_images([])
    path = image_file(tmp_path / "f" / "a" / "0.png")
    for call in (lambda: read_images(path, channels=4), lambda: load_image_folder(tmp_path / "f", channels=4)):
        with pytest.raises(TransferkitError, match="channels must be 1, 3 or None, got 4"):
            call()



def test_float_images_within_the_rounding_tolerance_of_0_and_1_are_read(tmp_path):
    # kills: _decode_image's 32-bit float range check without RANGE_TOL (a hair outside [0, 1] refused)
    (tmp_path / "f" / "a").mkdir(parents=True)
    values = np.array([[-5e-5, 0.5], [1 + 5e-5, 1.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "f" / "a" / "0.tif")
    assert load_image_folder(tmp_path / "f").images[0, 0].mul(255).round().tolist() == [[0, 128], [255, 255]]

# ---- userdata.py: the folder cache -----------------------------------------------------------
def _cached_setup(tmp_path, monkeypatch, limit=2):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", limit)
    return tmp_path / "cache" / "folders"


def test_a_folder_of_exactly_the_cached_number_of_files_is_cached(tmp_path, monkeypatch):
    # kills: decoded_images' len(files) < CACHED_FOLDER_FILES -> <=
    cache = _cached_setup(tmp_path, monkeypatch)
    image_file(tmp_path / "f" / "a" / "0.png", 10)
    image_file(tmp_path / "f" / "b" / "1.png", 200)
    load_image_folder(tmp_path / "f")
    assert len(list(cache.glob("*.npz"))) == 1


def test_the_folder_cache_is_keyed_on_the_channels(tmp_path, monkeypatch):
    # kills: the cache key without "channels" (a hit of the colour pixels for a grey read)
    _cached_setup(tmp_path, monkeypatch)
    image_file(tmp_path / "f" / "a" / "0.png", (255, 0, 0), mode="RGB")
    image_file(tmp_path / "f" / "b" / "1.png", (0, 0, 255), mode="RGB")
    assert load_image_folder(tmp_path / "f", channels=3).images.shape == (2, 3, 4, 4)
    grey = load_image_folder(tmp_path / "f", channels=1)
    assert grey.images.shape == (2, 1, 4, 4)
    assert grey.images[:, 0, 0, 0].mul(255).round().tolist() == [76, 29]  # PIL's luma of pure red and blue


def test_a_cache_entry_of_another_number_of_images_is_not_read(tmp_path, monkeypatch):
    # kills: decoded_images' check len(pixels) == len(files) dropped (a foreign entry's pixels taken)
    cache = _cached_setup(tmp_path, monkeypatch)
    image_file(tmp_path / "f" / "a" / "0.png", 10)
    image_file(tmp_path / "f" / "b" / "1.png", 200)
    first = load_image_folder(tmp_path / "f")
    (entry,) = cache.glob("*.npz")
    with open(entry, "wb") as f:
        np.savez(f, x=np.zeros((3, 1, 4, 4), np.uint8), stretched=np.int64(0), grey=np.bool_(False))
    again = load_image_folder(tmp_path / "f")
    assert torch.equal(again.images, first.images)


def test_path_keys_are_those_of_the_nfc_form():
    # kills: path_keys without unicodedata.normalize("NFC", ...) (a folder copied from macOS splits otherwise)
    assert path_keys(["cafe\u0301/0.png"]).tolist() == path_keys(["caf\u00e9/0.png"]).tolist()
    assert path_keys(["a"]).tolist() != path_keys(["b"]).tolist()


# ---- userdata.py: npz files ------------------------------------------------------------------
def test_npz_images_on_the_channel_axis_in_a_tie_are_read_as_n_c_h_w(tmp_path):
    # kills: _images_nchw's x.shape[1] > x.shape[-1] -> >= (a tie read channels-last)
    x = np.zeros((2, 3, 5, 3), np.uint8)
    x[0, 2, 4, 0] = 255
    d = load_npz(npz_file(tmp_path / "a.npz", x=x, y=np.array([0, 1])))
    assert d.images.shape == (2, 3, 5, 3) and float(d.images[0, 2, 4, 0]) == 1.0


def test_npz_alpha_channel_first_is_dropped(tmp_path):
    # kills: _images_nchw's x[:, :3] if x.shape[1] == 4 -> x (N x 4 x H x W kept with its alpha)
    x = np.full((2, 4, 5, 6), 200, np.uint8)
    x[:, 3] = 0  # alpha
    d = load_npz(npz_file(tmp_path / "a.npz", x=x, y=np.array([0, 1])))
    assert d.images.shape == (2, 3, 5, 6) and float(d.images.min()) == pytest.approx(200 / 255)


def test_npz_negative_integer_images_are_named_as_out_of_0_255(tmp_path):
    # kills: _images_float's x.min() >= 0 dropped (refused later, as a Domain's [0, 1] without the npz rule)
    x = np.zeros((2, 4, 4), np.int16)
    x[1, 0, 0] = -3
    with pytest.raises(TransferkitError, match=r"integer images must be in 0\.\.255 \(found -3\.\.0\)"):
        load_npz(npz_file(tmp_path / "a.npz", x=x, y=np.array([0, 1])))


def test_npz_whole_float_labels_are_read_as_ids(tmp_path):
    # kills: _int_vector without its whole-float conversion (labels saved from a float column refused)
    d = load_npz(npz_file(tmp_path / "a.npz", x=_bytes(3), y=np.array([1.0, 0.0, 1.0])))
    assert d.labels.tolist() == [1, 0, 1] and d.labels.dtype == torch.int64


def test_an_npz_key_starting_with_vid_is_refused_as_a_missed_groups(tmp_path):
    # kills: _meant without low.startswith("vid")
    path = npz_file(tmp_path / "a.npz", x=_bytes(2), y=np.array([0, 1]), vid=np.array([0, 1]))
    with pytest.raises(TransferkitError, match=r"key 'vid' is not read .*did you mean 'groups'"):
        load_npz(path)


def test_an_upper_case_npy_file_is_named_a_single_array(tmp_path):
    # kills: load_npz's p.suffix.lower() != ".npy" -> p.suffix (named "not an .npz archive" instead)
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "x.npy").rename(tmp_path / "X.NPY")
    with pytest.raises(TransferkitError, match=r"single array \(\.npy\); save x and y together"):
        load_npz(tmp_path / "X.NPY")


def test_npz_named_groups_of_the_wrong_length_are_named_with_both_counts(tmp_path):
    # kills: _group_ids' len(a) == n check for names dropped (a Domain's vaguer message instead)
    path = npz_file(tmp_path / "a.npz", x=_bytes(3), y=np.array([0, 1, 1]), groups=np.array(["v1", "v2"]))
    with pytest.raises(TransferkitError, match="'groups' has 2 entries but 'x' has 3 images"):
        load_npz(path)



def test_unlabelled_npz_without_x_is_named(tmp_path):
    # kills: load_npz(labeled=False)'s check that 'x' is there (a KeyError instead)
    path = npz_file(tmp_path / "a.npz", images=_bytes(2))
    with pytest.raises(TransferkitError, match=r"lacks key 'x' \(the images\); found \['images'\]"):
        load_npz(path, labeled=False)
    assert len(load_npz(npz_file(tmp_path / "b.npz", x=_bytes(2)), labeled=False)) == 2

# ---- domain.py: the Domain's checks ------------------------------------------------------------
def _domain(n=6, classes=3, channels=1, **kw):
    return Domain("d", torch.rand(n, channels, 4, 4, generator=torch.Generator().manual_seed(0)),
                  torch.arange(n) % classes, [f"c{i}" for i in range(classes)], **kw)


def test_labels_up_to_the_class_count_from_1_are_named_1_based_but_other_ranges_are_not():
    # kills: Domain's 1-based hint on lo == 1 alone (labels 1..5 of 3 classes are not 1-based)
    images = torch.rand(2, 1, 4, 4)
    with pytest.raises(TransferkitError, match="they look 1-based"):
        Domain("d", images, torch.tensor([1, 3]), ["a", "b", "c"])
    with pytest.raises(TransferkitError, match=r"found 1\.\.5\): 3 class_names for labels up to 5") as e:
        Domain("d", images, torch.tensor([1, 5]), ["a", "b", "c"])
    assert "1-based" not in str(e.value)


def test_keys_must_be_int64_and_groups_become_int64():
    # kills: Domain's keys check without dtype == torch.int64; groups not cast with .long()
    with pytest.raises(TransferkitError, match="keys must be one int64 per image"):
        _domain(keys=torch.arange(6, dtype=torch.int32))
    d = _domain(groups=torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32))
    assert d.groups.dtype == torch.int64 and d.groups.tolist() == [0, 1, 2, 0, 1, 2]


def test_a_band_count_equal_to_the_width_warns_that_the_layout_may_be_either():
    # kills: Domain's x.shape[1] in x.shape[2:] -> == x.shape[2] (the width not compared)
    with pytest.warns(UserWarning, match=r"read as 5 channels .*permute\(0, 3, 1, 2\)"):
        Domain("d", torch.rand(2, 5, 8, 5), torch.tensor([0, 1]), ["a", "b"])


def test_six_band_patches_four_pixels_tall_are_not_taken_for_channels_last():
    # kills: looks_channels_last's x.shape[2] > 4 -> >= 4
    from transferkit.domain import as_images

    assert as_images(torch.rand(2, 6, 4, 3)).shape == (2, 6, 4, 3)


def test_values_a_little_over_1_are_refused_without_the_255_hint():
    # kills: as_images' scale hint on hi > 2 -> hi > 1 (values of 1.5 told to divide by 255)
    from transferkit.domain import as_images

    with pytest.raises(TransferkitError, match=r"must lie in \[0, 1\], found 0\.5\.\.1\.5$"):
        as_images(torch.tensor([0.5, 1.5]).view(1, 1, 1, 2))


def test_complex_labels_are_refused_by_name():
    # kills: label_ids without its is_complex check
    from transferkit.domain import label_ids

    with pytest.raises(TransferkitError, match="labels must be integer class ids .*complex"):
        label_ids(torch.tensor([1 + 0j, 0j]), "score")


def test_repr_and_describe_say_the_domain_is_grouped():
    # kills: __repr__ without its group count; describe()'s "grouped" always False
    d = _domain(groups=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert repr(d) == "Domain('d', 6 images of 1 x 4 x 4, 3 classes, 3 groups)"
    assert d.describe()["grouped"] is True and _domain().describe()["grouped"] is False



def test_image_batch_refuses_a_numpy_array_of_text_by_name():
    # kills: image_batch without its numpy dtype check (a TypeError of torch.from_numpy instead)
    from transferkit.domain import image_batch

    with pytest.raises(TransferkitError, match="predict: images must be numbers, got a numpy array of dtype <U1"):
        image_batch(np.array([[["a"]]]), "predict")

# ---- domain.py: subsets and class handling -----------------------------------------------------
def test_select_classes_records_the_classes_and_relabel_false_keeps_the_ids():
    # kills: select_classes without provenance["classes"]; relabel=False ignored (the branch dropped)
    d = _domain()
    sub = d.select_classes(["c2", "c1"])
    assert sub.provenance["classes"] == ["c2", "c1"] and sub.class_names == ["c2", "c1"]
    kept = d.select_classes(["c2", "c1"], relabel=False)
    assert kept.class_names == ["c0", "c1", "c2"] and kept.labels.tolist() == [1, 2, 1, 2]


def test_select_classes_without_an_image_of_them_is_refused_unless_allowed():
    # kills: select_classes' len(sub) > 0 or allow_empty check dropped
    few = Domain("few", torch.rand(2, 1, 4, 4), torch.tensor([0, 0]), ["a", "b"])
    with pytest.raises(TransferkitError, match=r"no samples of classes \['b'\]"):
        few.select_classes(["b"])
    with pytest.raises(TransferkitError, match="empty class subset"):  # kills: the empty-subset check dropped
        few.select_classes([], allow_empty=True)


def test_a_class_id_as_a_float_or_bool_tensor_is_refused_and_an_integer_one_taken():
    # kills: _class_id's int() of every 0-dim tensor (1.5 read as class 1, True as class 1)
    d = _domain()
    assert d.select_classes([torch.tensor(1)]).class_names == ["c1"]
    for bad in (torch.tensor(1.5), torch.tensor(True)):
        with pytest.raises(TransferkitError, match="a class is a name or a whole-number id"):
            d.select_classes([bad])


def test_labels_by_name_marks_a_class_the_names_lack_with_minus_1():
    # kills: labels_by_name's -1 for a missing class -> 0 (read as the first class)
    from transferkit.domain import labels_by_name

    d = _domain()
    assert labels_by_name(d, ["c2", "c0"]).tolist() == [1, -1, 0, 1, -1, 0]


# ---- domain.py: to_format ------------------------------------------------------------------------
def test_to_format_turns_rgba_into_grey_by_dropping_the_alpha():
    # kills: to_format's alpha dropped for channels == 3 only (RGBA -> grey refused)
    x = torch.zeros(1, 4, 2, 2)
    x[:, 0] = 1.0  # pure red, alpha 0
    grey = Domain("rgba", x, torch.tensor([0]), ["a"]).to_format(channels=1)
    assert grey.images.shape == (1, 1, 2, 2) and torch.allclose(grey.images, torch.full((1, 1, 2, 2), 0.299))


def test_to_format_resizes_images_of_the_right_height_but_not_width():
    # kills: to_format's size test on the height alone
    d = Domain("wide", torch.rand(2, 1, 4, 6), torch.tensor([0, 1]), ["a", "b"])
    assert d.to_format(size=4).images.shape == (2, 1, 4, 4)


def test_to_format_refuses_to_make_colour_of_multi_band_images_by_name():
    # kills: to_format's grey-to-colour branch taken for any channel count (a RuntimeError of expand)
    d = Domain("bands", torch.rand(2, 5, 8, 8), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(TransferkitError, match="cannot convert 5 channels to 3"):
        d.to_format(channels=3)


# ---- domain.py: class names of two domains -------------------------------------------------------
def test_loose_names_never_cut_into_a_number_or_a_whole_name():
    # kills: _loose_names' prefix without rstrip of digits (11, 12 -> 1, 2); len(k) > ... -> >= (a name cut empty)
    from transferkit.domain import _loose_names

    assert _loose_names(["11", "12"]) == ["11", "12"]
    assert _loose_names(["a", "ab"]) == ["a", "ab"]
    assert _loose_names(["class_01", "class_02"]) == ["1", "2"]


def test_head_mapping_does_not_warn_of_exactly_matching_names():
    # kills: head_mapping's near list without s is None (every exact match warned as differing in case)
    from transferkit.domain import head_mapping

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert head_mapping(["cat", "dog"], ["dog", "cow"]) == [1, None]
    with pytest.warns(UserWarning, match=r"\['Cat'\] differ from the source's \['cat'\] only in case"):
        head_mapping(["cat", "dog"], ["Cat", "dog"])


def test_unshared_classes_half_alike_are_named_alike_and_other_counts_stay_quiet():
    # kills: warn_unshared_classes' 2 * len(pairs) >= len(target) -> >; numbered-vs-named without equal counts
    from transferkit.domain import warn_unshared_classes

    with pytest.warns(UserWarning, match=r"look like the same classes named otherwise \(target '0' ~ source 'd0'\)"):
        warn_unshared_classes(["d0", "d1"], ["0", "x"], chosen=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unshared_classes(["0", "1", "2"], ["cat", "dog"], chosen=False)


def test_unshared_classes_stay_quiet_when_one_class_is_shared():
    # kills: warn_unshared_classes without its return on a shared name (a shared class warned as none shared)
    from transferkit.domain import warn_unshared_classes

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unshared_classes(["a", "b"], ["a", "c"], chosen=False)


def test_one_numbered_npz_file_as_source_and_target_does_not_warn(tmp_path):
    # kills: warn_numbered_match without its one-origin exception (a file split into source and target warned)
    from transferkit.domain import warn_numbered_match

    x = _bytes(4)
    a = load_npz(npz_file(tmp_path / "a.npz", x=x, y=np.array([0, 1, 0, 1])))
    b = load_npz(npz_file(tmp_path / "b.npz", x=x, y=np.array([0, 1, 0, 1])))
    (tmp_path / "link.npz").symlink_to(tmp_path / "a.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_numbered_match(a, load_npz(tmp_path / "link.npz"))
    with pytest.warns(UserWarning, match="both number their classes"):
        warn_numbered_match(a, b)
