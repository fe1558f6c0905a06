"""User data: image folders, npz arrays, torchvision adapters (transferkit.userdata)."""

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.data import load_domain
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.userdata import load_image_folder, load_npz, load_torchvision


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(8, 8), mode="L", suffix=".png"):
    rng = np.random.default_rng(0)
    written = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = size[::-1] + ((3,) if mode == "RGB" else ())
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / c / f"{i:03d}{suffix}")
            written[(c, i)] = arr
    return written


def test_image_folder_round_trip(tmp_path):
    written = write_folder(tmp_path / "pets", classes=("dog", "cat"))
    d = load_image_folder(tmp_path / "pets")
    assert d.class_names == ["cat", "dog"] and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.images.shape == (6, 1, 8, 8) and d.groups is None and d.name == "pets"
    expected = np.stack([written[("cat", i)] for i in range(3)] + [written[("dog", i)] for i in range(3)])
    assert torch.allclose(d.images[:, 0], torch.from_numpy(expected).float() / 255)
    assert load_image_folder(tmp_path / "pets", channels=3).images.shape == (6, 3, 8, 8)
    assert load_image_folder(tmp_path / "pets", size=5).images.shape == (6, 1, 5, 5)


def test_image_folder_16_bit_grey_is_scaled_not_clipped(tmp_path):
    (tmp_path / "set" / "a").mkdir(parents=True)
    grey16 = np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "set" / "a" / "0.png")
    img = load_image_folder(tmp_path / "set").images[0, 0]
    assert torch.allclose(img, torch.from_numpy(grey16 / 65535).float(), atol=1 / 255)


def test_image_folder_wide_integer_and_float_grey_follow_one_scale_for_every_file(tmp_path):
    (tmp_path / "w" / "a").mkdir(parents=True)
    for i, value in enumerate((2000, 3000)):  # 32-bit integer TIFFs: the same scale, brighter stays brighter
        Image.fromarray(np.full((4, 4), value, dtype=np.int32)).save(tmp_path / "w" / "a" / f"{i}.tif")
    with pytest.warns(UserWarning, match="almost black"):  # 3000 of 65535 is 11.7 of 255
        dim, bright = load_image_folder(tmp_path / "w").images[:, 0, 0, 0]
    assert 0 < dim < bright < 0.05  # 16-bit: 2000 / 65535
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "f" / "a" / "0.tif")
    assert float(load_image_folder(tmp_path / "f").images[0, 0, 0, 0]) == pytest.approx(0.5, abs=1 / 255)
    for name, values in (("g", np.linspace(0, 255, 16)), ("n", np.array([0.5] * 15 + [np.nan]))):
        (tmp_path / name / "a").mkdir(parents=True)  # float TIFFs of 0-255, or with NaN: refused, not binarised
        Image.fromarray(values.reshape(4, 4).astype(np.float32)).save(tmp_path / name / "a" / "0.tif")
        with pytest.raises(TransferkitError, match=r"0\.tif.*32-bit float image is read as values in \[0, 1\]; "
                                                   r"this one holds (0\.\.255|NaN)"):
            load_image_folder(tmp_path / name)


def test_twelve_bit_images_and_zero_one_masks_warn_that_they_load_almost_black(tmp_path, recwarn):
    (tmp_path / "t" / "a").mkdir(parents=True)
    Image.fromarray(np.linspace(0, 4095, 16).reshape(4, 4).astype(np.uint16)).save(tmp_path / "t" / "a" / "0.png")
    with pytest.warns(UserWarning, match=r"no pixel of any image is brighter than 16 of 255.*12- or 10-bit"):
        load_image_folder(tmp_path / "t")
    masks = np.zeros((4, 5, 5), np.uint8)
    masks[:, 2, 2] = 1
    np.savez(tmp_path / "m.npz", x=masks, y=np.array([0, 1, 0, 1]))
    with pytest.warns(UserWarning, match=r"no pixel of any image is brighter than 1 of 255.*multiply 0/1 masks by 255"):
        load_npz(tmp_path / "m.npz")
    recwarn.clear()
    np.savez(tmp_path / "bright.npz", x=masks * 17, y=np.array([0, 1, 0, 1]))  # 17 of 255: not warned
    np.savez(tmp_path / "float.npz", x=masks.astype(np.float32) * 0.01, y=np.array([0, 1, 0, 1]))  # floats: as given
    load_npz(tmp_path / "bright.npz"), load_npz(tmp_path / "float.npz")
    assert not [w for w in recwarn if "almost black" in str(w.message)]


def test_image_folder_rgb_and_bmp_and_jpeg(tmp_path):
    write_folder(tmp_path / "a", classes=("x",), mode="RGB", suffix=".bmp")
    write_folder(tmp_path / "a", classes=("y",), mode="RGB", suffix=".jpg")
    write_folder(tmp_path / "a", classes=("z",), mode="RGB", suffix=".gif")
    write_folder(tmp_path / "a", classes=("w",), mode="RGB", suffix=".tiff")
    (tmp_path / "a" / "x" / "notes.txt").write_text("ignored")
    d = load_image_folder(tmp_path / "a")
    assert d.images.shape == (12, 3, 8, 8) and d.class_names == ["w", "x", "y", "z"]
    assert load_image_folder(tmp_path / "a", channels=1).images.shape == (12, 1, 8, 8)


def test_image_folder_mixed_modes_become_rgb(tmp_path):
    write_folder(tmp_path / "m", classes=("g",), mode="L")
    write_folder(tmp_path / "m", classes=("c",), mode="RGB")
    assert load_image_folder(tmp_path / "m").images.shape == (6, 3, 8, 8)


def test_image_folder_sizes_must_match_or_be_resized(tmp_path):
    write_folder(tmp_path / "s", classes=("a",), size=(8, 8))
    write_folder(tmp_path / "s", classes=("b",), size=(10, 6))
    message = r"different sizes: .*000.png' is 8x8 but .*b/000.png' is 10x6.*size"
    with pytest.raises(TransferkitError, match=message):
        load_image_folder(tmp_path / "s")
    d = load_image_folder(tmp_path / "s", size=12)
    assert d.images.shape == (6, 1, 12, 12)


def test_image_folder_corrupt_file_is_named(tmp_path):
    write_folder(tmp_path / "c")
    bad = tmp_path / "c" / "dog" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(TransferkitError, match=r"cannot read image file .*dog/001.png"):
        load_image_folder(tmp_path / "c")
    bad.write_bytes(b"hello")
    with pytest.raises(TransferkitError, match=r"cannot read image file .*dog/001.png"):
        load_image_folder(tmp_path / "c")
    (tmp_path / "c" / "cat" / "002.png").write_bytes(b"")
    with pytest.raises(TransferkitError) as e:  # all of them at once, not one per attempt
        load_image_folder(tmp_path / "c")
    assert str(e.value).startswith("2 of the 6 image files in") and "(repair or remove them)" in str(e.value)
    assert "cat/002.png" in str(e.value) and "dog/001.png" in str(e.value)


def test_read_images_reads_new_files_as_the_folder_domain_does_for_predict(tmp_path):
    import transferkit
    write_folder(tmp_path / "f", classes=("a",), per_class=2, size=(10, 6))
    write_folder(tmp_path / "g", classes=("b",), per_class=1, size=(8, 8), mode="RGB")
    files = sorted((tmp_path / "f" / "a").iterdir())
    folder = load_image_folder(tmp_path / "f", size=12)
    assert torch.equal(transferkit.read_images(files, size=12), folder.images)
    mixed = transferkit.read_images([files[0], tmp_path / "g" / "b" / "000.png"], size=8)
    assert mixed.shape == (2, 3, 8, 8) and transferkit.read_images(files[0], size=8, channels=3).shape == (1, 3, 8, 8)
    with pytest.raises(TransferkitError, match="different sizes: .* pass a size"):
        transferkit.read_images([files[0], tmp_path / "g" / "b" / "000.png"])
    with pytest.raises(TransferkitError, match="1 of the files do not exist or are not files: '.*nope.png'"):
        transferkit.read_images([files[0], tmp_path / "nope.png"])
    files[1].write_bytes(b"")
    with pytest.raises(TransferkitError, match="cannot read image file .*001.png"):
        transferkit.read_images(files, size=12)


def test_image_folder_structure_errors(tmp_path):
    with pytest.raises(TransferkitError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TransferkitError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty")
    write_folder(tmp_path / "half", classes=("a",))
    (tmp_path / "half" / "b").mkdir()
    with pytest.raises(TransferkitError, match="class folder .*b' contains no images .*add images or remove the"):
        load_image_folder(tmp_path / "half")
    (tmp_path / "half" / "c").mkdir()
    with pytest.raises(TransferkitError, match="2 class folders contain no images .*: '.*b', '.*c'; add images"):
        load_image_folder(tmp_path / "half")


def test_image_folder_nested_frames_form_groups(tmp_path):
    for c, videos in (("run", ("v1", "v2")), ("walk", ("v3",))):
        for v in videos:
            write_folder(tmp_path / "vid" / c, classes=(v,), per_class=2)
    d = load_image_folder(tmp_path / "vid")
    assert d.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert d.groups.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_folder_of_videos_keeps_its_split_and_labelled_videos_when_frames_or_videos_come_and_go(tmp_path):
    from transferkit.grouped import sample_k_groups
    from transferkit.splits import split_parts
    for c in ("run", "walk", "jump"):
        for v in range(12):
            write_folder(tmp_path / "vid" / c, classes=(f"v{v:02d}",), per_class=3)

    def placed(d):  # each video's split part, and which videos k=2 labels (by sub-folder)
        parts = split_parts(d)
        names = [str(p) for p in sorted((tmp_path / "vid").glob("*/*"))]
        first = {int(g): i for i, g in reversed(list(enumerate(d.groups)))}
        where = {names[g]: int(parts[i]) for g, i in first.items()}
        train = d.subset(parts == 0)
        labeled = sample_k_groups(train, 2, seed=0)[0]
        chosen = {names[int(g)] for g in labeled.groups.unique()}
        return where, chosen
    before, chosen = placed(load_image_folder(tmp_path / "vid"))
    (tmp_path / "vid" / "run" / "v03" / "000.png").unlink()  # a video's first frame removed
    after, chosen_after = placed(load_image_folder(tmp_path / "vid"))
    assert after == before and chosen_after == chosen  # no video moved (its key is its sub-folder's)
    write_folder(tmp_path / "vid" / "walk", classes=("v99",), per_class=3)  # a new video
    grown, chosen_grown = placed(load_image_folder(tmp_path / "vid"))
    assert sum(grown.get(v) != p for v, p in before.items()) <= 2 and len(chosen_grown - chosen) <= 1


def test_image_folder_group_is_the_first_sub_folder_whatever_lies_below(tmp_path):
    for cam in ("cam1", "cam2"):  # one video seen by two cameras: one group, never split across train and test
        write_folder(tmp_path / "deep" / "0" / "vid0_00", classes=(cam,), per_class=2)
    write_folder(tmp_path / "deep" / "0", classes=("vid0_01",), per_class=1)
    write_folder(tmp_path / "deep", classes=("1",), per_class=2)  # directly in the class folder: a group each
    d = load_image_folder(tmp_path / "deep")
    assert d.labels.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert d.groups.tolist() == [0, 0, 0, 0, 1, 2, 3]


def save_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "nhwc4"])
def test_npz_round_trip_layouts(tmp_path, layout):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (6, 3, 10, 12), dtype=np.uint8)  # N C H W
    x = {"nhw": base[:, 0], "nhwc": base.transpose(0, 2, 3, 1), "nchw": base,
         "nhwc4": np.concatenate([base, base[:, :1]], 1).transpose(0, 2, 3, 1)}[layout]
    path = save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]),
                    class_names=np.array(["a", "b", "c"]), groups=np.array([0, 1, 2, 0, 1, 2]))
    d = load_npz(path)
    expected = base[:, :1] if layout == "nhw" else base
    assert d.images.shape == expected.shape
    assert torch.allclose(d.images, torch.from_numpy(expected).float() / 255)
    assert d.class_names == ["a", "b", "c"] and d.groups.tolist() == [0, 1, 2, 0, 1, 2]
    assert d.provenance["origin"].startswith("npz:")
    named = load_npz(save_npz(tmp_path / "v.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]),
                              groups=np.array(["va", "vb", "vc", "va", "vb", "vc"])))  # video ids as names
    assert named.groups.tolist() == [0, 1, 2, 0, 1, 2]
    as_bytes = load_npz(save_npz(tmp_path / "b.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]),
                                 groups=np.array([b"va", b"vb", b"vc", b"va", b"vb", b"vc"])))
    assert as_bytes.groups.tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("key", ["group", "video_ids", "Groups", "labels_of_videos_x"])
def test_npz_key_that_means_groups_is_refused_not_dropped(tmp_path, key):
    arrays = {"x": np.full((4, 4, 4), 200, np.uint8), "y": np.array([0, 0, 1, 1]), key: np.array([0, 0, 1, 1])}
    with pytest.raises(TransferkitError, match=f"key '{key}' is not read .*x, y, class_names, groups.*did you mean "
                                               f"'groups'\\? save it as groups="):
        load_npz(save_npz(tmp_path / "v.npz", **arrays))  # was: no groups, frames of a video in train and test


def test_npz_other_unknown_keys_warn_and_a_known_one_present_is_read(tmp_path):
    arrays = {"x": np.full((4, 4, 4), 200, np.uint8), "y": np.array([0, 0, 1, 1]), "groups": np.array([0, 0, 1, 1])}
    with pytest.warns(UserWarning, match=r"key\(s\) 'meta', 'group' are ignored; the keys read are x, y, "):
        d = load_npz(save_npz(tmp_path / "m.npz", meta=np.zeros(2), group=np.zeros(4), **arrays))
    assert d.groups.tolist() == [0, 0, 1, 1]
    with pytest.raises(TransferkitError, match=r"lacks key\(s\) \['y'\].*'labels' looks like 'y': save it as y="):
        load_npz(save_npz(tmp_path / "l.npz", x=arrays["x"], labels=arrays["y"]))
    with pytest.warns(UserWarning, match=r"key\(s\) 'n_classes' \(class_names\?\), 'class_ids' \(class_names\?\) "
                                         r"are ignored"):  # legitimate extra keys: a warning, not a refusal
        load_npz(save_npz(tmp_path / "n.npz", n_classes=np.array(2), class_ids=np.array([3, 4]), **arrays))


def test_npz_object_groups_are_named_with_the_cast_that_saves_them(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, x=np.full((2, 4, 4), 200, np.uint8), y=np.array([0, 1]), groups=np.array(["a", "b"], dtype=object))
    with pytest.raises(TransferkitError, match=r"'groups' is an object array \(e.g. pandas .values\).*"
                                               r"groups=values.astype\(str\)"):
        load_npz(path)
    np.savez(path, x=np.full((2, 4, 4), 200, np.uint8), y=np.array([0, 1]), groups=np.array(["a", "nan"]))
    with pytest.raises(TransferkitError, match="1 of the 2 'groups' ids are missing"):
        load_npz(path)


@pytest.mark.parametrize("column", [np.array([[0], [0], [1], [1]]), np.array([["a"], ["a"], ["b"], ["b"]]),
                                    np.array([[5, 5, 7, 7]])])
def test_npz_groups_as_a_column_are_taken_whatever_their_kind(tmp_path, column):
    d = load_npz(save_npz(tmp_path / "c.npz", x=np.full((4, 4, 4), 200, np.uint8), y=np.array([0, 0, 1, 1]),
                          groups=column))  # an N x 1 integer column was refused, a string one taken
    assert torch.unique(d.groups, return_inverse=True)[1].tolist() == [0, 0, 1, 1]
    with pytest.raises(TransferkitError, match=r"'groups' must be 1-D.*got shape \(2, 2\)"):
        load_npz(save_npz(tmp_path / "s.npz", x=np.full((4, 4, 4), 200, np.uint8), y=np.array([0, 0, 1, 1]),
                          groups=column.reshape(2, 2)))


def test_npz_float_images_and_default_names(tmp_path):
    x = np.random.default_rng(2).random((5, 1, 4, 4)).astype(np.float32)
    d = load_npz(save_npz(tmp_path / "f.npz", x=x, y=np.array([0, 3, 1, 1, 2])))
    assert torch.allclose(d.images, torch.from_numpy(x)) and d.class_names == ["0", "1", "2", "3"]
    spec = load_domain(f"npz:{tmp_path / 'f.npz'}+inversion", size=8, channels=3)
    assert spec.images.shape == (5, 3, 8, 8) and spec.provenance["shifts"] == ["inversion"]
    with pytest.warns(UserWarning, match=r"no image has label\(s\) \[1, 2, 3\].*3 of them are empty"):
        d = load_npz(save_npz(tmp_path / "g.npz", x=x, y=np.array([0, 4, 4, 0, 4])))
    assert d.num_classes == 5


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 4, 4), np.uint8)}, r"lacks key\(s\) \['y'\]"),
    ({"x": np.zeros((0, 4, 4), np.uint8), "y": np.zeros(0, int)}, "holds no images"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(4, int)}, "'y' has 4 entries but 'x' has 3"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, -1, 1])}, "labels must be >= 0"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0.5, 1, 1])}, "'y' must hold integers"),
    ({"x": np.full((3, 4, 4), 2.0), "y": np.zeros(3, int)}, r"float images must be in \[0, 1\]"),
    ({"x": np.zeros((3, 4), np.uint8), "y": np.zeros(3, int)}, "got shape"),
    ({"x": np.zeros((3, 5, 4, 6), np.uint8), "y": np.zeros(3, int)}, "cannot tell the channel axis"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1, 2]), "class_names": np.array(["a", "b"])},
     "2 class_names but labels go up to 2"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(3, int), "groups": np.zeros(2, int)},
     "'groups' has 2 entries"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1, 10**6])}, "labels go up to 1000000 for 3 images"),
])
def test_npz_errors(tmp_path, arrays, message):
    with pytest.raises(TransferkitError, match=message):
        load_npz(save_npz(tmp_path / "bad.npz", **arrays))


def test_npz_bytes_class_names_and_paths_with_plus_and_spaces(tmp_path):
    folder = tmp_path / "my + data"
    folder.mkdir()
    names = np.array([b"cat", b"dog"])  # an 'S' array, as numpy stores byte strings
    save_npz(folder / "d.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]), class_names=names)
    d = load_domain(f"npz:{folder / 'd.npz'}+inversion", size=4)
    assert d.class_names == ["cat", "dog"] and d.provenance["shifts"] == ["inversion"]
    with pytest.raises(TransferkitError, match="path .*missing' does not exist"):
        load_domain(f"npz:{tmp_path / 'missing'}+set")  # was: unknown shift 'set'


def test_a_missing_relative_path_names_the_directory_it_was_read_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = repr(str(tmp_path))
    for call in (lambda: load_domain("folder:data/pets"), lambda: load_domain("npz:data/d.npz+blur"),
                 lambda: load_image_folder("data/pets"), lambda: load_npz("data/d.npz")):
        with pytest.raises(TransferkitError, match=f"does not exist( or is not a directory)? \\(a relative path, read "
                                                   f"from the current directory {re.escape(here)}: run or resume from"):
            call()
    with pytest.raises(TransferkitError, match="does not exist$"):
        load_npz(tmp_path / "d.npz")


def test_npz_unreadable(tmp_path):
    with pytest.raises(TransferkitError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_text("junk")  # numpy said "contains pickled (object) data"
    with pytest.raises(TransferkitError, match="is not an .npz archive"):
        load_npz(tmp_path / "junk.npz")
    good = save_npz(tmp_path / "good.npz", x=np.zeros((4, 8, 8), dtype=np.uint8), y=np.arange(4))
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:100])
    with pytest.raises(TransferkitError, match="cannot be read as .npz"):
        load_npz(tmp_path / "cut.npz")


def test_torchvision_missing_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(TransferkitError, match=r"pip install 'transferkit\[vision\]'"):  # quoted: zsh globs []
        load_torchvision("mnist", tmp_path)
    with pytest.raises(TransferkitError, match=r"unknown torchvision dataset 'imagenet'"):  # named before the import
        load_torchvision("imagenet", tmp_path)


def test_a_single_array_npy_file_is_named_as_such(tmp_path):
    from transferkit.userdata import load_npz
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4)))
    with pytest.raises(TransferkitError, match=r"is a single array \(.npy\); save x and y together"):
        load_npz(tmp_path / "x.npy")


def test_grouped_views_take_one_shift_name_as_one_shift():
    from transferkit.grouped import grouped_views
    d = Domain("d", torch.rand(3, 1, 8, 8), torch.arange(3), ["a", "b", "c"])
    assert grouped_views(d, 2, shifts="noise").provenance["group_shifts"] == ["noise"]


def test_grouped_views_of_a_folder_of_videos_keep_each_video_one_group(tmp_path):
    for c, videos in (("run", ("v1", "v2")), ("walk", ("v3",))):
        for v in videos:
            write_folder(tmp_path / "vid" / c, classes=(v,), per_class=2)
    d = load_domain(f"folder:{tmp_path / 'vid'}@grouped2", size=8)
    assert d.groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]  # 2 views of 2 frames per video


def test_transparent_images_are_composited_on_white_and_exif_orientation_is_applied(tmp_path):
    from transferkit.userdata import _read_image
    sketch = np.zeros((6, 6, 4), dtype=np.uint8)  # black everywhere, opaque only on a stroke
    sketch[2, :, 3] = 255
    Image.fromarray(sketch, "RGBA").save(tmp_path / "sketch.png")
    arr = _read_image(tmp_path / "sketch.png", None, None)
    assert arr.shape == (6, 6, 3) and (arr[2] == 0).all() and (np.delete(arr, 2, axis=0) == 255).all()
    grey = np.zeros((6, 6, 2), dtype=np.uint8)
    grey[:, 1, 1] = 255
    Image.fromarray(grey, "LA").save(tmp_path / "grey.png")
    arr = _read_image(tmp_path / "grey.png", None, None)
    assert arr.shape == (6, 6, 1) and (arr[:, 1] == 0).all() and (np.delete(arr, 1, axis=1) == 255).all()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.zeros((20, 40), dtype=np.uint8), "L").save(tmp_path / "phone.jpg", exif=exif)
    assert _read_image(tmp_path / "phone.jpg", None, None).shape == (40, 20, 1)


def test_shifts_of_a_folder_domain_see_its_native_channels_as_built_ins_do(tmp_path):
    write_folder(tmp_path / "colour", mode="RGB")
    d = load_domain(f"folder:{tmp_path / 'colour'}+yuv", size=8, channels=1)  # refused as grayscale before
    native = load_domain(f"folder:{tmp_path / 'colour'}+yuv", size=8)
    assert d.images.shape[1] == 1 and torch.allclose(d.images, native.to_format(channels=1).images)


def test_a_palette_image_of_greys_is_grey():
    import tempfile
    from pathlib import Path

    from transferkit.userdata import _read_image
    with tempfile.TemporaryDirectory() as d:
        grey = Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6) * 7, "L").convert("P")
        grey.save(Path(d) / "grey.png")
        arr = _read_image(Path(d) / "grey.png", None, None)
        assert arr.shape == (6, 6, 1) and (arr[..., 0] == np.arange(36).reshape(6, 6) * 7).all()
        see_through = grey.copy()
        see_through.save(Path(d) / "grey_t.png", transparency=int(np.asarray(grey)[0, 0]))
        arr = _read_image(Path(d) / "grey_t.png", None, None)
        assert arr.shape == (6, 6, 1) and arr[0, 0, 0] == 255 and arr[0, 1, 0] == 7
        key = Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6), "L")
        key.save(Path(d) / "key.png", transparency=0)  # grey with a transparent key value (tRNS)
        arr = _read_image(Path(d) / "key.png", None, None)
        assert arr.shape == (6, 6, 1) and arr[0, 0, 0] == 255 and arr[0, 1, 0] == 1
        colour = Image.fromarray(np.full((6, 6, 3), (200, 10, 10), dtype=np.uint8), "RGB").convert("P")
        colour.save(Path(d) / "red.png")
        assert _read_image(Path(d) / "red.png", None, None).shape == (6, 6, 3)


def test_user_data_errors_name_the_problem(tmp_path):
    from transferkit.splits import parse_classes
    write_folder(tmp_path / "f")
    with pytest.raises(TransferkitError, match="size must be a positive int"):
        load_image_folder(tmp_path / "f", size=True)
    with pytest.raises(TransferkitError, match="is a directory; an image folder loads as 'folder:"):
        load_npz(tmp_path / "f")
    x = np.zeros((2, 4, 4), np.uint8)
    save_npz(tmp_path / "inf.npz", x=x, y=np.array([0, np.inf]))
    with pytest.raises(TransferkitError, match="'y' contains NaN or infinite values"):
        load_npz(tmp_path / "inf.npz")
    save_npz(tmp_path / "latin.npz", x=x, y=np.array([0, 1]), class_names=np.array([b"caf\xe9", b"tea"]))
    with pytest.raises(TransferkitError, match="class_names are bytes that are not UTF-8"):
        load_npz(tmp_path / "latin.npz")
    images = torch.zeros(2, 1, 4, 4)
    assert Domain("d", images, torch.tensor([0, 1]), torch.tensor([3, 7])).class_names == ["3", "7"]
    assert Domain("d", images, torch.tensor([0, 1]), {"dog": 1, "cat": 0}).class_names == ["cat", "dog"]  # by id
    for other in ({0: "cat", 1: "dog"}, {"a": 0, "b": 0}, {"a": 0, "b": 5}):  # id -> name, repeats, gaps
        with pytest.raises(TransferkitError, match="must map each name to its id, 0..C-1 once each"):
            Domain("d", images, torch.tensor([0, 1]), other)
    assert Domain("d", images, torch.tensor([0, 1]), [0.5, 1.5]).class_names == ["0.5", "1.5"]
    assert parse_classes({1, 0}, Domain("d", images, torch.tensor([0, 1]), ["a", "b"])) == [0, 1]  # ids: sorted
    for names in (None, [["a"], ["b"]]):
        with pytest.raises(TransferkitError, match="class_names must be a list of names"):
            Domain("d", images, torch.tensor([0, 1]), names)
    with pytest.raises(TransferkitError, match="labels contain NaN or infinite values"):
        Domain("d", images, torch.tensor([0.0, float("inf")]), ["a", "b"])
    four = images.repeat(2, 1, 1, 1)
    named = Domain("d", four, torch.tensor([0, 1, 0, 1]), ["a", "b"], groups=["v2", "v1", "v2", "v1"])
    assert named.groups.tolist() == [1, 0, 1, 0]  # video ids as names, as grouped_accuracy takes them
    with pytest.raises(TransferkitError, match=r"domain 'd': group 'v1' holds samples of different labels \[0, 1\]"):
        Domain("d", four, torch.tensor([0, 1, 1, 1]), ["a", "b"], groups=["v1", "v1", "v2", "v2"])
    with pytest.raises(TransferkitError, match=r"group ids: 1 of the 2 are None or NaN \(missing\); give every"):
        Domain("d", images, torch.tensor([0, 1]), ["a", "b"], groups=["v1", None])
    with pytest.raises(TransferkitError, match=r"group ids are all None \(missing\).*or no ids at all"):
        Domain("d", images, torch.tensor([0, 1]), ["a", "b"], groups=[None, None])  # was: 'names of mixed kinds'
    with pytest.raises(TransferkitError, match=r"group ids: names of mixed kinds \(strings and numbers\)"):
        Domain("d", images, torch.tensor([0, 1]), ["a", "b"], groups=np.array(["v1", 2], dtype=object))
    with pytest.raises(TransferkitError, match=r"group -1 holds samples of different labels \[0, 1\]: .*unique over "
                                               r"the whole dataset, not numbered per class; -1 is a group like any "
                                               r"other, not 'no group'"):
        Domain("d", four, torch.tensor([0, 1, 0, 1]), ["a", "b"], groups=torch.tensor([-1, -1, 0, 1]))
    with pytest.raises(TransferkitError, match=r"group 0 holds .*: a group must have one label, and group ids must "
                                               r"be unique over the whole dataset, not numbered per class$"):
        Domain("d", four, torch.tensor([0, 1, 0, 1]), ["a", "b"], groups=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(TransferkitError, match="are a set of names, whose order changes between processes"):
        parse_classes({"a", "b"}, Domain("d", images, torch.tensor([0, 1]), ["a", "b"]))


def test_two_image_folders_with_one_name_are_two_domains_for_adaptation(tmp_path):
    from transferkit.fitting import unsupervised_validation
    from transferkit.splits import split_domain
    for office in ("amazon", "webcam"):  # the Office-31 layout: <domain>/images/<class>/<file>
        write_folder(tmp_path / office / "images", per_class=8, size=(28, 28))
    source, target = (split_domain(load_image_folder(tmp_path / o / "images")) for o in ("amazon", "webcam"))
    assert source.train.name == target.train.name == "images/train"
    with pytest.warns(UserWarning, match="ignoring the labelled target validation"):  # the rule Transfer.fit applies
        assert unsupervised_validation("dann", source.train, target.train, target.val) is None
    assert unsupervised_validation("dann", source.train, target.train, source.val) is source.val


def test_foreign_npz_members_empty_images_and_undecodable_folder_names_are_named(tmp_path):
    import os
    import zipfile

    bad = tmp_path / "member.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("x.npy", b"garbage")
        z.writestr("y.npy", b"garbage")
    with pytest.raises(TransferkitError, match="member 'x' is not a NumPy array"):
        load_npz(bad)
    np.savez(tmp_path / "flat.npz", x=np.zeros((20, 0, 0), np.uint8), y=np.arange(20) % 4)
    with pytest.raises(TransferkitError, match="images are 0 x 0 pixels"):
        load_npz(tmp_path / "flat.npz")
    root = tmp_path / "folder"
    name = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8, kept with a surrogate escape
    try:
        (root / name).mkdir(parents=True)
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system refuses a name that is not UTF-8")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / name / "a.png")
    with pytest.raises(TransferkitError, match="not valid UTF-8"):
        load_image_folder(root)


def test_npz_class_names_without_images_and_split_folders_are_named(tmp_path):
    x = np.zeros((4, 1, 4, 4), dtype=np.uint8)
    path = save_npz(tmp_path / "e.npz", x=x, y=np.array([0, 1, 0, 1]), class_names=np.array(["a", "b", "hexagon"]))
    with pytest.warns(UserWarning, match=r"no image has the class\(es\) \['hexagon'\] of class_names"):
        assert load_npz(path).class_names == ["a", "b", "hexagon"]  # trained a dead output silently
    for part in ("train", "val"):
        for cls in ("circle", "square"):
            (tmp_path / "split" / part / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "split" / part / cls / "0.png")
    with pytest.warns(UserWarning, match=r"sub-folders \['train', 'val'\], read as classes.*folder:"):
        load_image_folder(tmp_path / "split")  # classified train vs val, the shapes as video groups


def test_read_images_takes_pil_images_as_it_reads_their_files(tmp_path):
    from PIL import Image

    import transferkit
    write_folder(tmp_path / "f", classes=("a",), per_class=2, size=(10, 6), mode="RGB")
    files = sorted((tmp_path / "f" / "a").iterdir())
    opened = [Image.open(f) for f in files]
    expected = transferkit.read_images(files, size=12, channels=1)
    assert torch.equal(transferkit.read_images(opened, size=12, channels=1), expected)
    assert torch.equal(transferkit.read_images([files[0], opened[1]], size=12, channels=1), expected)  # order kept
    assert torch.equal(transferkit.read_images(opened[0], size=12, channels=1), expected[:1])
    assert opened[0].mode == "RGB"  # the caller's image is not converted in place
    with pytest.raises(TransferkitError, match="file paths or PIL images, got ndarray: arrays and tensors go to"):
        transferkit.read_images([np.zeros((8, 8))])


def test_unlabeled_images_are_read_from_any_folder_layout_and_from_x_alone(tmp_path):
    written = write_folder(tmp_path / "nested" / "a" / "b", classes=("x", "y"), per_class=2)
    flat = tmp_path / "flat"
    write_folder(flat, classes=("",), per_class=3)  # images directly in the folder
    (flat / ".DS_Store").write_bytes(b"junk")
    (flat / "__MACOSX").mkdir()
    (flat / "__MACOSX" / "._000.png").write_bytes(b"AppleDouble, not an image")
    d = load_domain(f"folder:{flat}", labeled=False, size=None)
    assert not d.labeled and len(d) == 3 and d.class_names == ["(unlabeled)"]
    nested = load_domain(f"folder:{tmp_path / 'nested'}", labeled=False, size=None)
    assert len(nested) == 4 and nested.groups is None
    assert torch.equal((nested.images[0, 0] * 255).round().byte(), torch.from_numpy(written[("x", 0)]))
    shifted = load_domain(f"folder:{flat}+inversion", labeled=False, size=None)
    assert not shifted.labeled and torch.allclose(shifted.images, 1 - d.images)
    npz = save_npz(tmp_path / "x.npz", x=np.zeros((5, 6, 6), np.float32) + 0.5)
    assert len(load_domain(f"npz:{npz}", labeled=False, size=None)) == 5
    with pytest.raises(TransferkitError, match=r"lacks key\(s\) \['y'\].*`unlabeled: npz:PATH` in a config"):
        load_domain(f"npz:{npz}")
    with pytest.raises(TransferkitError, match=r"no class sub-folders.*`unlabeled: folder:PATH` in a config"):
        load_domain(f"folder:{flat}")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(TransferkitError, match=r"holds no images .* at any depth"):
        load_domain(f"folder:{tmp_path / 'empty'}", labeled=False)
    with pytest.raises(TransferkitError, match=r"@grouped views need labels"):
        load_domain("digits@grouped3", labeled=False)


def test_folder_names_in_either_unicode_form_are_one_class_and_linked_sub_folders_are_read(tmp_path, recwarn):
    import os
    import unicodedata

    mac, win = tmp_path / "mac", tmp_path / "win"
    write_folder(mac, classes=(unicodedata.normalize("NFD", "café"), "b"))
    write_folder(win, classes=("café", "b"))
    assert load_domain(f"folder:{mac}").class_names == load_domain(f"folder:{win}").class_names == ["b", "café"]
    assert load_domain(f"folder:{mac}").select_classes([unicodedata.normalize("NFD", "café")]).num_classes == 1
    write_folder(tmp_path / "drive", classes=("more",), per_class=4)
    os.symlink(tmp_path / "drive" / "more", win / "b" / "from drive")  # a linked folder inside a class folder
    os.symlink(win / "b", win / "b" / "loop")  # a link loop ends
    (win / "b" / "notes.txt").write_text("not an image")
    (win / "b" / "Thumbs.db").write_bytes(b"\0")
    os.symlink(tmp_path / "gone.png", win / "b" / "dead.png")
    d = load_domain(f"folder:{win}")
    assert d.class_counts().tolist() == [3 + 4, 3]  # its own and the linked folder's, each once
    skipped = [str(w.message) for w in recwarn if "skipped" in str(w.message)]
    assert skipped and all(part in skipped[-1] for part in ("skipped 2 file(s)", "notes.txt", "broken link"))
    os.symlink(win, win / "b" / "up")  # up to the folder, and so into café: its images would be b's too
    with pytest.raises(TransferkitError, match=r"b/up/café' is a link into class folder 'café' .* two labels"):
        load_domain(f"folder:{win}")
    os.unlink(win / "b" / "up")
    os.symlink(win / "b", win / "copy of b")  # a class folder that is another: two labels for each image
    with pytest.raises(TransferkitError, match=r"class folders 'copy of b' and 'b' of .* are one folder"):
        load_domain(f"folder:{win}")


def test_a_folder_in_either_unicode_form_gives_the_same_class_ids_and_data(tmp_path):
    import unicodedata
    nfc, nfd = tmp_path / "nfc", tmp_path / "nfd"
    for root, form in ((nfc, "NFC"), (nfd, "NFD")):
        write_folder(root, classes=[unicodedata.normalize(form, c) for c in ("é", "f", "zebra")])
        for name in ("été.png", "abc.png"):  # file names in the form too
            Image.new("L", (8, 8), 90 if name == "abc.png" else 200).save(root / "f" / unicodedata.normalize(form,
                                                                                                           name))
    a, b = load_domain(f"folder:{nfc}"), load_domain(f"folder:{nfd}")
    assert a.class_names == b.class_names == ["f", "zebra", "é"]  # NFC order: é (U+00E9) after z
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images) and a.digest() == b.digest()


def test_paths_written_for_another_system_are_named_with_what_is_wrong(tmp_path, monkeypatch):
    import zipfile

    from transferkit.config import load_config
    from transferkit.io import atomic_path, cache_dir, relative_hint

    assert "$DATA is not expanded" in relative_hint("$DATA/train") and "%DATA% is not" in relative_hint("%DATA%\\x")
    assert "instead of Windows backslashes" in relative_hint("data\\train")
    assert "holds a tab" in relative_hint("data\train")  # "folder:data\train" in double quotes in YAML
    assert "relative path, read from the current directory" in relative_hint("data/train")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        z.writestr("a/1.txt", "x")
    with pytest.raises(TransferkitError, match="is a zip archive: unzip it"):
        load_domain(f"folder:{tmp_path / 'photos.zip'}")
    with pytest.raises(TransferkitError, match=r"out_dir '\$DATA/runs': \$DATA is not expanded"):
        load_config(None, ["out_dir=$DATA/runs"])
    (tmp_path / "ansi.yaml").write_bytes("name: café\n".encode("cp1252"))
    with pytest.raises(TransferkitError, match="is not UTF-8 text .*save it as UTF-8"):
        load_config(tmp_path / "ansi.yaml")
    (tmp_path / "ps.yaml").write_bytes("name: café\n".encode("utf-16"))  # PowerShell's `>`: a BOM, then UTF-16
    assert load_config(tmp_path / "ps.yaml").name == "café"
    monkeypatch.setenv("TRANSFERKIT_CACHE", "~/tk-cache")
    assert cache_dir() == Path.home() / "tk-cache"

    def refused(**kwargs):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr("tempfile.mkstemp", refused)
    with pytest.raises(PermissionError, match=r"writing '.*grid\.png'"):
        with atomic_path(tmp_path / "grid.png"):
            pass


def test_images_both_in_and_below_class_folders_warn_of_the_groups_they_make(tmp_path, recwarn):
    write_folder(tmp_path, classes=("a", "b"))
    write_folder(tmp_path / "a", classes=("2023",), per_class=2)
    d = load_domain(f"folder:{tmp_path}")
    assert d.groups is not None and len(d) == 8
    assert any("2 image(s) lie in sub-folders of class folders and 6 directly" in str(w.message) for w in recwarn)


def _mixed_folder(root):
    """PNG and JPEG files, grey, RGB, 16-bit grey, palette and transparent, of several sizes (one not square)."""
    rng = np.random.default_rng(3)

    def rgb(h=12, w=12):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    files = {"a/0grey.png": Image.fromarray(rgb()[..., 0]), "a/1rgb.jpg": Image.fromarray(rgb(14, 18)),
             "a/2rgb.png": Image.fromarray(rgb()), "a/3grey.jpg": Image.fromarray(rgb(16, 16)[..., 1]),
             "b/g16.png": Image.fromarray(rng.integers(0, 65536, (12, 12)).astype(np.uint16)),
             "b/pal.png": Image.fromarray(rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8),
             "b/rgba.png": Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8))}
    for name, im in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        im.save(root / name)
    return sorted(root.glob("*/*"))


def test_read_images_fills_one_preallocated_tensor_with_the_pixels_of_a_stack_of_the_files(tmp_path, monkeypatch):
    import tracemalloc

    import transferkit.userdata as ud
    paths = _mixed_folder(tmp_path / "mixed")
    for channels in (None, 1, 3):  # bit for bit what stacking every file's uint8 pixels, then dividing, gave
        stacked = [ud._read_image(p, 10, {1: "L", 3: "RGB", None: None}[channels]) for p in paths]
        if channels is None:
            stacked = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in stacked]
        expected = torch.from_numpy(np.stack(stacked)).permute(0, 3, 1, 2).float().div_(255)
        with pytest.warns(UserWarning, match="1 of the 7 images in 'x' is not square; it is stretched to 10x10"):
            got = ud._read_images(paths, 10, channels, "in 'x'")
        assert got.is_contiguous() and torch.equal(got.view(torch.int32), expected.view(torch.int32))
    allocated, empty = [], torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: allocated.append(empty(*a, **k)) or allocated[-1])
    write_folder(tmp_path / "rgb", classes=("a",), size=(48, 48), mode="RGB")
    rgb = sorted((tmp_path / "rgb" / "a").glob("*.png")) * 20  # 60 colour files of 48 x 48
    tracemalloc.start()
    x = ud._read_images(rgb, None, None, "given")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.data_ptr() == allocated[0].data_ptr()  # filled in place: no float copy of a stack
    assert peak < 60 * 48 * 48 * 3 / 3  # nor a uint8 stack of all the files (numpy's memory is traced)
    domain = load_image_folder(tmp_path / "mixed", size=10, channels=3)
    assert domain.images.data_ptr() == allocated[-1].data_ptr()  # the domain keeps that tensor


def test_npz_images_convert_into_one_tensor_in_chunks_bit_for_bit_in_every_layout(monkeypatch):
    import tracemalloc

    import transferkit.userdata as ud
    monkeypatch.setattr(ud, "CHUNK_BYTES", 7 * 4 * 3 * 9 * 11)  # 7 images a chunk: 50 images in 8 chunks
    base = np.random.default_rng(0).integers(0, 256, (50, 9, 11, 4), dtype=np.uint8)
    layouts = {"nhw": base[..., 0], "nhwc1": base[..., :1], "nhwc3": base[..., :3], "nhwc4": base,
               "nchw3": np.ascontiguousarray(np.moveaxis(base[..., :3], -1, 1)),
               "nchw4": np.ascontiguousarray(np.moveaxis(base, -1, 1))}
    for name, a in layouts.items():
        for x in (a, a.astype(np.int64), a > 128, (a / 255).astype(np.float16), (a / 255).astype(np.float32),
                  np.clip(a / 255 + 5e-4, 0, 1.0004)):  # a float a little above 1 is clipped, as before
            nchw = ud._images_nchw(x, name)
            if x.dtype.kind in "iu":
                expected = nchw.astype(np.float32) / 255
            else:
                expected = np.clip(nchw, 0, 1).astype(np.float32)
            got = ud._npz_images(x, name)
            assert got.is_contiguous() and got.dtype == torch.float32, (name, x.dtype)
            assert np.array_equal(got.numpy().view(np.int32), expected.view(np.int32)), (name, x.dtype)
    x = np.random.default_rng(1).integers(0, 256, (400, 16, 16, 3), dtype=np.uint8)
    tracemalloc.start()
    got = ud._npz_images(x, "big")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < got.numel()  # a whole-array float32 conversion took 4 bytes an element, twice
    with pytest.raises(TransferkitError, match="'x' contains NaN or infinite values"):
        ud._npz_images(np.where(np.arange(50)[:, None, None] == 45, np.nan, 0.5), "late")  # in the last chunk


def test_decoding_a_large_folder_shows_a_bar_unless_progress_is_off(tmp_path, monkeypatch, capsys):
    import transferkit.userdata as ud
    write_folder(tmp_path / "f", per_class=2)
    monkeypatch.setattr(ud, "PROGRESS_FROM", 3)
    for show, drawn in ((True, True), (False, False)):
        with ud.reading_progress(show):
            load_image_folder(tmp_path / "f")
        assert ("reading 4 images in" in capsys.readouterr().err) == drawn
    monkeypatch.setattr(ud, "PROGRESS_FROM", 5)
    with ud.reading_progress(True):
        load_image_folder(tmp_path / "f")
    assert "reading" not in capsys.readouterr().err  # a small folder: no bar


def test_square_images_and_native_sizes_do_not_warn_of_stretching(tmp_path, recwarn):
    write_folder(tmp_path / "sq", size=(8, 8))
    write_folder(tmp_path / "wide", size=(12, 8))
    load_image_folder(tmp_path / "sq", size=5)
    load_image_folder(tmp_path / "wide")  # kept 12 x 8
    assert not [w for w in recwarn if "not square" in str(w.message)]
    with pytest.warns(UserWarning, match="6 of the 6 images in .*wide' are not square; they are stretched to 8x8"):
        load_image_folder(tmp_path / "wide", size=8)


def test_a_large_folder_s_decoded_pixels_are_cached_bit_identical_and_keyed_on_its_files(tmp_path, monkeypatch):
    import transferkit.userdata as userdata
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)
    write_folder(tmp_path / "data", classes=("a", "b"), mode="RGB", size=(9, 7))
    first = load_domain(f"folder:{tmp_path / 'data'}", size=8)
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 1
    real = userdata._decode_images
    monkeypatch.setattr(userdata, "_decode_images", lambda *a: pytest.fail("decoded again"))
    again = load_domain(f"folder:{tmp_path / 'data'}", size=8)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    monkeypatch.setattr(userdata, "_decode_images", real)
    Image.new("RGB", (9, 7), (255, 0, 0)).save(tmp_path / "data" / "a" / "000.png")  # a file changed
    changed = load_domain(f"folder:{tmp_path / 'data'}", size=8)
    assert not torch.equal(changed.images, first.images)
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 2
    edited = tmp_path / "data" / "b" / "000.png"  # an edit that keeps the file's size and time: seen
    Image.new("RGB", (9, 7), (0, 255, 0)).save(edited, format="BMP")  # a BMP's size depends on its shape alone
    green, before = load_domain(f"folder:{tmp_path / 'data'}", size=8).images, edited.stat()
    Image.new("RGB", (9, 7), (0, 0, 255)).save(edited, format="BMP")
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert edited.stat().st_size == before.st_size and edited.stat().st_mtime_ns == before.st_mtime_ns
    assert not torch.equal(load_domain(f"folder:{tmp_path / 'data'}", size=8).images, green)
    shutil.copytree(tmp_path / "data", tmp_path / "copy")  # elsewhere, the same files: the same entry
    monkeypatch.setattr(userdata, "_decode_images", lambda *a: pytest.fail("decoded again"))
    load_domain(f"folder:{tmp_path / 'copy'}", size=8)
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("TRANSFERKIT_FOLDER_CACHE", off)
        monkeypatch.setattr(userdata, "_read_images", lambda *a: torch.zeros(len(a[0]), 3, 8, 8))
        assert float(load_domain(f"folder:{tmp_path / 'data'}", size=8).images.max()) == 0  # read, not the cache


def test_a_folder_grey_in_content_but_stored_in_colour_warns_that_it_is_read_as_colour(tmp_path, recwarn):
    write_folder(tmp_path / "mixed", classes=("a", "b"))  # grey files
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "mixed" / "a" / "rgb.png")  # one stored as RGB
    with pytest.warns(UserWarning, match=r"the 7 images .* are grey in content, but some files are stored in colour"):
        assert load_image_folder(tmp_path / "mixed").images.shape[1] == 3
    recwarn.clear()
    assert load_image_folder(tmp_path / "mixed", channels=1).images.shape[1] == 1
    load_domain(f"folder:{tmp_path / 'mixed'}+blur", channels=1)  # grey asked for: the shift reads RGB, no word
    from transferkit.config import ExperimentConfig
    from transferkit.rundata import prepare_domains
    for channels in (1, 3):  # chosen by the config (3: colour wanted): the advice is for the automatic choice
        prepare_domains(ExperimentConfig(source="digits", target=f"folder:{tmp_path / 'mixed'}", channels=channels,
                                         image_size=8))
    assert not [w for w in recwarn if "grey in content" in str(w.message)]
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "mixed" / "b" / "red.png")  # really colour: no word
    load_image_folder(tmp_path / "mixed")
    assert not [w for w in recwarn if "grey in content" in str(w.message)]


def test_links_that_would_give_images_two_labels_are_refused(tmp_path):
    import os
    write_folder(tmp_path / "pets", classes=("cat", "dog"))
    write_folder(tmp_path / "pets" / "dog", classes=("pups",))
    write_folder(tmp_path / "elsewhere", classes=("shared",))
    os.symlink(tmp_path / "pets" / "dog" / "pups", tmp_path / "pets" / "alias")  # a class inside another's
    with pytest.raises(TransferkitError, match=r"class folder 'alias' of .* lies inside class folder 'dog'"):
        load_image_folder(tmp_path / "pets")
    os.unlink(tmp_path / "pets" / "alias")
    for c in ("cat", "dog"):  # one outside folder linked from two classes
        os.symlink(tmp_path / "elsewhere" / "shared", tmp_path / "pets" / c / "shared")
    with pytest.raises(TransferkitError, match=r"dog/shared' is a folder that class 'cat' reads too"):
        load_image_folder(tmp_path / "pets")
    os.unlink(tmp_path / "pets" / "dog" / "shared")
    assert load_image_folder(tmp_path / "pets").class_counts().tolist() == [3 + 3, 3 + 3]  # linked from one: read


def test_files_beside_the_class_folders_are_counted_and_images_there_named_with_what_to_do(tmp_path, recwarn):
    import os
    root = tmp_path / "pets"
    write_folder(root)
    Image.new("L", (8, 8), 50).save(root / "stray.png")  # an image beside the class folders: in no class
    (root / "readme.txt").write_text("about the data")
    for hidden in (".DS_Store", "Thumbs.db", "desktop.ini"):  # skipped silently, as in class folders
        (root / hidden).write_bytes(b"\0")
    os.symlink(tmp_path / "gone.png", root / "dead.png")
    assert len(load_domain(f"folder:{root}")) == 6
    messages = [str(w.message) for w in recwarn]
    loose = [m for m in messages if "outside any class folder" in m]
    assert len(loose) == 1 and "1 image file lies outside any class folder (directly in it: 'stray.png') and is " \
                               "not read" in loose[0] and f"`unlabeled: folder:{root}` in a config" in loose[0]
    skipped = [m for m in messages if "skipped" in m]
    assert len(skipped) == 1 and "skipped 2 file(s)" in skipped[0] and "readme.txt" in skipped[0] \
        and "dead.png (a broken link)" in skipped[0] and "Thumbs" not in skipped[0] and "DS_Store" not in skipped[0]
    recwarn.clear()
    batch = tmp_path / "batch0"  # unlabelled images with a sub-folder of more: one class, and the rest named
    write_folder(batch, classes=("", "day1"), per_class=4)
    assert load_domain(f"folder:{batch}").class_names == ["day1"]
    assert [str(w.message) for w in recwarn if "4 image files lie outside any class folder" in str(w.message)]
    recwarn.clear()
    assert len(load_domain(f"folder:{batch}", labeled=False)) == 8  # as unlabelled images: all of them, no word
    assert not [w for w in recwarn if "outside any class folder" in str(w.message)]
    (batch / "day1" / "000.png").rename(batch / "day1.png")
    shutil.rmtree(batch / "day1")
    with pytest.raises(TransferkitError, match=r"has no class sub-folders \(5 image file\(s\) lie directly in it\)"):
        load_domain(f"folder:{batch}")


def test_a_cached_folder_gives_the_warnings_of_its_decoding_on_a_hit_too(tmp_path, monkeypatch, recwarn):
    import transferkit.userdata as userdata
    from transferkit.data import channels_chosen
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)
    root = tmp_path / "scans"
    write_folder(root, classes=("a", "b"))  # grey files
    Image.new("RGB", (12, 8), (90, 90, 90)).save(root / "a" / "wide.png")  # not square, grey stored as RGB
    Image.new("L", (8, 8), 10).save(root / "loose.png")

    def warned():
        messages = [str(w.message) for w in recwarn]
        recwarn.clear()
        return [sum(part in m for m in messages) for part in
                ("1 of the 7 images in", "are grey in content, but some files are stored in colour",
                 "1 image file lies outside any class folder")]

    first = load_domain(f"folder:{root}", size=8)
    assert warned() == [1, 1, 1] and len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 1
    real = userdata._decode_images
    monkeypatch.setattr(userdata, "_decode_images", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_domain(f"folder:{root}", size=8).images, first.images)  # a hit: the same words
    assert warned() == [1, 1, 1]
    with channels_chosen(1):  # the caller chose the channels: no grey advice, from the cache too
        load_image_folder(root, size=8)
    assert warned() == [1, 0, 1]
    entry = next((tmp_path / "cache" / "folders").glob("*.npz"))
    with np.load(entry) as z:
        np.savez(entry.with_suffix(".tmp.npz"), x=z["x"])  # an entry without the warnings' facts
    entry.with_suffix(".tmp.npz").replace(entry)
    monkeypatch.setattr(userdata, "_decode_images", real)
    assert torch.equal(load_domain(f"folder:{root}", size=8).images, first.images)  # decoded again, and said
    assert warned() == [1, 1, 1]
    with np.load(entry) as z:
        assert int(z["stretched"]) == 1 and bool(z["grey"])  # rewritten with them


def test_32_bit_integer_images_outside_16_bit_grey_are_refused_not_saturated(tmp_path):
    for name, values in (("big", np.arange(16) * 50_000), ("neg", np.arange(16) - 8)):
        (tmp_path / name / "a").mkdir(parents=True)
        Image.fromarray(values.reshape(4, 4).astype(np.int32)).save(tmp_path / name / "a" / "0.tif")
        with pytest.raises(TransferkitError, match=r"0\.tif.*32-bit integer image is read as 16-bit grey "
                                                   r"\(0\.\.65535\); this one holds (0\.\.750000|-8\.\.7)"):
            load_image_folder(tmp_path / name)


@pytest.mark.skipif(sys.platform != "linux", reason="file names as bytes: Linux file systems")
def test_a_file_name_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    write_folder(tmp_path / "set")
    os.rename(tmp_path / "set" / "cat" / "000.png", os.path.join(os.fsencode(tmp_path / "set" / "cat"), b"caf\xe9.png"))
    with pytest.raises(TransferkitError, match=r"image file .*caf.*\.png' has a name that is not valid UTF-8"):
        load_domain(f"folder:{tmp_path / 'set'}")


def test_a_file_link_into_another_class_folder_is_refused(tmp_path):
    write_folder(tmp_path / "set")
    os.symlink(tmp_path / "set" / "dog" / "000.png", tmp_path / "set" / "cat" / "from_dog.png")
    with pytest.raises(TransferkitError, match=r"from_dog\.png' is a link to a file of class folder 'dog'.*two labels"):
        load_image_folder(tmp_path / "set")
    os.remove(tmp_path / "set" / "cat" / "from_dog.png")  # a link to a file outside the class folders is read
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", tmp_path / "set" / "cat" / "outside.png")
    assert len(load_image_folder(tmp_path / "set")) == 7


def test_a_class_folder_of_other_files_only_names_them_and_npz_files_are_not_folders(tmp_path):
    write_folder(tmp_path / "set")
    for p in (tmp_path / "set" / "dog").iterdir():
        p.rename(p.with_suffix(".heic"))
    with pytest.raises(TransferkitError, match=r"dog' contains no images \(.*\); it holds 3 file\(s\) of other kinds: "
                                               r"'dog/000\.heic', 'dog/001\.heic', 'dog/002\.heic'; 3 of them are "
                                               r"HEIC / HEIF photos .*pip install pillow-heif.*; add images"):
        load_image_folder(tmp_path / "set")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]))
    with pytest.raises(TransferkitError, match=r"is an \.npz file: give it as npz:"):
        load_domain(f"folder:{tmp_path / 'd.npz'}")
    with pytest.raises(TransferkitError, match=r"folder: needs a path, folder:PATH"):
        load_domain("folder:")


def test_class_names_equal_in_one_unicode_form_say_so():
    with pytest.raises(TransferkitError, match=r"repeated class names \['café'\] \(spelt in two Unicode forms"):
        Domain("d", torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["caf\u00e9", "cafe\u0301"])
    with pytest.raises(TransferkitError, match=r"repeated class names \['a'\]$"):
        Domain("d", torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "a"])
    with pytest.raises(TransferkitError, match=r"images must hold real numbers .* dtype complex128"):
        Domain("d", np.zeros((2, 1, 4, 4), complex), torch.tensor([0, 1]), ["a", "b"])
