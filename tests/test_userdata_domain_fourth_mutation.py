"""Tests from a fourth mutation pass over userdata.py and domain.py.

The earlier passes (test_userdata_domain_mutation.py, test_userdata_domain_third_mutation.py,
test_data_config_mutation.py, test_shifts_heads_mutation.py) and the other tests leave these alive, each killed here.
In userdata: the loose-files warning naming five files; an upper-case .NPZ given as a folder; the folder cache keyed
on Pillow's version; an unlabelled folder's provenance counting its files; npz float images a hair below 0 and the
"255 for 8-bit pixels" hint; the group ids "NaN" and "<NA>" pandas writes for a missing value; the
"numbered_classes" mark only for files without class_names; the unlabelled hint only when 'y' alone is missing.
On the Domain: uint8 images at exactly 16 and all-zero ones warned; the digest after labels changed in place; the
repr of unlabelled images; warn_unshared_classes quiet for a subset the caller chose and for 10, 20 against 1, 2
(_loose_names never cutting a shared last digit); warn_numbered_match quiet without a shared number. Each test's
comment names the mutant(s) it kills.

Judged equivalent, so not tested: none of those tried (the mutants of image_batch's grey-batch warning and
images[None] hint, label_ids' bool and fraction checks, as_images' float conversion, the empty-name check,
__getitem__'s tuple and 0-d checks, to_format's size check and check_memory survive the files above but are killed
by test_api_usability.py, test_splits.py and test_eval_edges.py). The pass left path_keys' byte order ("little"
-> "big") alive; the key is now documented (a file keeps its split across versions) and pinned by the last test.
"""

import warnings

import numpy as np
import pytest
import torch
from helpers import image_file, npz_file
from test_userdata_domain_third_mutation import _quiet

import transferkit.userdata as userdata
from transferkit.domain import Domain, warn_numbered_match, warn_unshared_classes
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.userdata import load_image_folder


# ---- userdata.py: image folders ----------------------------------------------------------------
def test_loose_images_beside_the_class_folders_are_named_five_at_most(tmp_path):
    # kills: the loose-files warning's loose[:5] / len(loose) > 5 -> 4 (a fifth file left unnamed)
    image_file(tmp_path / "f" / "a" / "0.png")
    for i in range(5):
        image_file(tmp_path / "f" / f"loose{i}.png")
    with pytest.warns(TransferkitWarning, match="5 image files lie outside any class folder") as record:
        load_image_folder(tmp_path / "f")
    text = next(str(w.message) for w in record if "outside any class" in str(w.message))
    assert "'loose4.png')" in text and "..." not in text.split("directly in it")[1].split(")")[0]


def test_an_upper_case_npz_file_given_as_a_folder_is_named_as_npz(tmp_path):
    # kills: _folder's root.suffix.lower() == ".npz" -> root.suffix (D.NPZ called a zip archive to unzip)
    path = tmp_path / "d.NPZ"
    with open(path, "wb") as f:
        np.savez(f, x=np.zeros((1, 4, 4), np.uint8), y=np.zeros(1, np.int64))
    with pytest.raises(TransferkitError, match=r"is an \.npz file: give it as npz:"):
        load_image_folder(path)


def test_the_folder_cache_is_keyed_on_pillow_s_version(tmp_path, monkeypatch):
    # kills: the folder cache key without "pillow" (pixels of another Pillow's decoding reused after an upgrade)
    import PIL

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)
    image_file(tmp_path / "f" / "a" / "0.png", 10)
    image_file(tmp_path / "f" / "b" / "1.png", 200)
    load_image_folder(tmp_path / "f")
    monkeypatch.setattr(PIL, "__version__", PIL.__version__ + ".other")
    load_image_folder(tmp_path / "f")
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 2


def test_an_unlabelled_folder_s_provenance_counts_its_files(tmp_path):
    # kills: load_unlabeled_folder's provenance without "files" (results lose how many files were read)
    image_file(tmp_path / "f" / "0.png", 200)
    image_file(tmp_path / "f" / "sub" / "1.png", 100)
    d = userdata.load_unlabeled_folder(tmp_path / "f")
    assert d.provenance == {"origin": f"folder:{tmp_path / 'f'}", "files": 2}


# ---- userdata.py: npz files ----------------------------------------------------------------------
def test_npz_float_images_a_hair_below_zero_are_read_as_zero(tmp_path):
    # kills: _images_float's lo >= -1e-3 -> lo >= 0 (rounding noise of a float pipeline refused)
    x = np.array([[[-5e-4, 0.5], [1.0, 1.0005]]], np.float32)
    d = userdata.load_npz(npz_file(tmp_path / "d.npz", x=x, y=np.array([0])))
    assert d.images[0, 0].tolist() == [[0.0, 0.5], [1.0, 1.0]]


def test_npz_float_images_of_0_255_are_told_to_divide_by_255_only(tmp_path):
    # kills: _images_float's hint with "255 if it is their maximum" repeated when the maximum is 255
    x = np.array([[[0.0, 255.0]]], np.float32)
    with pytest.raises(TransferkitError, match=r"found 0\.\.255\); divide by .* \(255 for 8-bit pixels\)"):
        userdata.load_npz(npz_file(tmp_path / "d.npz", x=x, y=np.array([0])))
    x = np.array([[[0.0, 4095.0]]], np.float32)
    with pytest.raises(TransferkitError, match=r"255 for 8-bit pixels, 4\.1e\+03 if it is their maximum"):
        userdata.load_npz(npz_file(tmp_path / "e.npz", x=x, y=np.array([0])))


@pytest.mark.parametrize("missing", ["NaN", "<NA>"])
def test_npz_group_ids_that_pandas_writes_for_a_missing_value_are_refused(tmp_path, missing):
    # kills: _group_ids' _MISSING_IDS without "NaN" / "<NA>" (images of no video pooled into one group)
    x, y = np.full((3, 4, 4), 200, np.uint8), np.array([0, 0, 1])
    path = npz_file(tmp_path / "d.npz", x=x, y=y, groups=np.array(["v1", missing, missing]))
    with pytest.raises(TransferkitError, match=r"2 of the 3 'groups' ids are missing"):
        userdata.load_npz(path)


def test_npz_files_with_class_names_are_not_marked_as_numbering_their_classes(tmp_path):
    # kills: load_npz's provenance "numbered_classes" set also when the file has class_names (a false warning)
    x, y = np.full((2, 4, 4), 200, np.uint8), np.array([0, 1])
    s = userdata.load_npz(npz_file(tmp_path / "s.npz", x=x, y=y, class_names=np.array(["0", "1"])))
    t = userdata.load_npz(npz_file(tmp_path / "t.npz", x=x, y=y, class_names=np.array(["0", "1"])))
    assert "numbered_classes" not in s.provenance
    with _quiet():
        warn_numbered_match(s, t)
    numbered = userdata.load_npz(npz_file(tmp_path / "n.npz", x=x, y=y))
    assert numbered.provenance["numbered_classes"] is True


def test_uint8_images_up_to_exactly_16_warn_that_they_load_almost_black():
    # kills: Domain's int(x.max()) <= DARK_UINT8 -> < (images stored at 0..16 loaded dark without a word)
    x = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    x[0, 0, 0, 0] = 16
    with pytest.warns(TransferkitWarning, match="go up to 16 of 255"):
        Domain("d", x, torch.tensor([0]), ["a"])
    x[0, 0, 0, 0] = 17
    with _quiet():
        Domain("d", x, torch.tensor([0]), ["a"])


# ---- domain.py: sub-domains ----------------------------------------------------------------------
def _domain(n=4):
    return Domain("d", torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 2,
                  ["a", "b"])


# ---- domain.py: class-name warnings --------------------------------------------------------------
def test_numbered_named_classes_chosen_by_the_caller_do_not_warn_as_unshared():
    # kills: warn_unshared_classes' "not chosen" dropped (a subset the caller chose warned as a naming mistake)
    with _quiet():
        warn_unshared_classes(["0", "1"], ["cat", "dog"], chosen=True)
    with pytest.warns(TransferkitWarning, match="one side numbers its classes and the other names them"):
        warn_unshared_classes(["0", "1"], ["cat", "dog"], chosen=False)


def test_two_numbered_files_without_a_shared_number_do_not_warn():
    # kills: warn_numbered_match's "if shared" dropped (a warning naming no class for digits 0-1 -> 2-3)
    x = torch.rand(2, 1, 2, 2)
    s = Domain("s", x, torch.tensor([0, 1]), ["0", "1"], provenance={"origin": "npz:/a/s.npz",
                                                                      "numbered_classes": True})
    t = Domain("t", x, torch.tensor([0, 1]), ["2", "3"], provenance={"origin": "npz:/a/t.npz",
                                                                      "numbered_classes": True})
    with _quiet():
        warn_numbered_match(s, t)


def test_the_digest_changes_when_the_labels_are_changed_in_place():
    # kills: Domain.digest's memo stamp without self.labels._version (a stale digest after d.labels[0] = ...)
    d = _domain()
    before = d.digest()
    d.labels[0] = 1 - d.labels[0]
    assert d.digest() != before


def test_the_repr_of_unlabelled_images_says_so_not_one_class():
    # kills: Domain.__repr__ without its labeled branch ("1 classes" for Domain.unlabeled images)
    assert repr(Domain.unlabeled("u", torch.rand(3, 1, 2, 2))) == "Domain('u', 3 images of 1 x 2 x 2, unlabeled)"
    assert repr(_domain()) == "Domain('d', 4 images of 1 x 2 x 2, 2 classes)"


def test_an_npz_file_without_x_and_y_is_not_told_it_could_be_unlabelled_images(tmp_path):
    # kills: load_npz's unlabelled hint given when 'x' is missing too (missing == ["y"] -> "y" in missing)
    path = npz_file(tmp_path / "d.npz", foo=np.zeros(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TransferkitError, match=r"lacks key\(s\) \['x', 'y'\]") as info:
            userdata.load_npz(path)
    assert "unlabel" not in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TransferkitError, match="unlabelled target"):
            userdata.load_npz(npz_file(tmp_path / "e.npz", x=np.full((1, 4, 4), 200, np.uint8)))


def test_all_black_uint8_images_are_named_all_zero():
    # kills: Domain's "every pixel of the uint8 images is 0" for top == 0 -> top == 1 (all-black told "up to 0")
    with pytest.warns(TransferkitWarning, match="every pixel of the uint8 images is 0"):
        Domain("d", torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([0]), ["a"])


def test_numbers_that_share_a_last_digit_are_not_cut_into_other_numbers():
    # kills: _loose_names' suffix without .lstrip of digits ("10", "20" read as "1", "2": a false naming warning)
    with _quiet():
        warn_unshared_classes(["10", "20"], ["1", "2"], chosen=False)


def test_a_file_key_is_the_documented_sha256_prefix_so_splits_stay_across_versions():
    # kills: path_keys' byte order "little" -> "big" (every key, and so every folder split, would change)
    import hashlib

    name = "cat/caf\u0065\u0301.png"  # NFD text: the key is of its NFC form
    digest = hashlib.sha256("cat/caf\u00e9.png".encode()).digest()[:8]
    assert userdata.path_keys([name]).tolist() == [int.from_bytes(digest, "little", signed=True)]
