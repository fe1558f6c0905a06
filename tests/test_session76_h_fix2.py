"""Fuzzing-audit leftovers: huge or complex sample weights, a checkpoint folder that cannot be made, byte-string
class names, wrong argument types, a huge class range, empty images and messages that named the wrong thing."""

import helpers
import numpy as np
import pytest
import torch

from transferkit.api import Transfer
from transferkit.domain import Domain
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.splits import parse_classes, split_domain

TINY = TrainConfig(steps=2, batch_size=8)


@pytest.fixture(scope="module")
def fitted():
    d = helpers.toy_domain(6)
    return Transfer("target_only", backbone="lenet", train=TINY).fit(target=d), d


def test_huge_sample_weights_score_as_equal_ones(fitted):
    model, d = fitted
    assert model.score(d, sample_weight=[1e308] * 6) == pytest.approx(model.score(d))
    assert model.score(d, sample_weight=[1e308, 1e308, 0, 0, 0, 0]) == \
        pytest.approx(model.score(d, sample_weight=[1, 1, 0, 0, 0, 0]))


@pytest.mark.parametrize("bad", [3, b"/x"])
def test_a_checkpoint_dir_of_another_type_is_refused(bad):
    with pytest.raises(TransferkitError, match="checkpoint_dir must be a folder's path"):
        Transfer("target_only", backbone="lenet", train=TINY).fit(target=helpers.toy_domain(6), checkpoint_dir=bad)


def test_a_checkpoint_dir_that_cannot_be_made_is_named_before_any_training(tmp_path, monkeypatch):
    from transferkit.engine import Engine
    (tmp_path / "some_file.py").write_text("")
    fits = []
    monkeypatch.setattr(Engine, "fit", lambda self, *a, **kw: fits.append(1))
    with pytest.raises(TransferkitError, match="cannot make checkpoint_dir .*some_file.py/sub"):
        Transfer("finetune", backbone="lenet", pretrain=TINY, train=TINY).fit(
            target=helpers.toy_domain(6), source=helpers.toy_domain(8),
            checkpoint_dir=tmp_path / "some_file.py" / "sub")
    assert fits == []


def test_a_checkpoint_dir_made_for_a_fit_that_failed_before_training_is_removed(tmp_path):
    # as before the folder was made ahead of the training: only a checkpoint made it
    with pytest.raises(TransferkitError):
        Transfer("target_only", backbone="lenet", train=TINY).fit(target=helpers.toy_domain(0),
                                                                  checkpoint_dir=tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []


def test_byte_string_class_names_are_decoded():
    x = torch.rand(2, 1, 8, 8)
    d = Domain("d", x, [0, 1], np.array([b"cat", "dog".encode()]))
    assert d.class_names == ["cat", "dog"]
    assert Domain("d", x, [0, 1], [b"caf\xc3\xa9", "x"]).class_names[0] == "café"
    with pytest.raises(TransferkitError, match="not UTF-8"):
        Domain("d", x, [0, 1], [b"\xff", b"x"])


def test_complex_sample_weights_are_refused(fitted):
    model, d = fitted
    with pytest.raises(TransferkitError, match="sample_weight must be real numbers"):
        model.score(d, sample_weight=np.array([1 + 5j] * 6))
    with pytest.raises(TransferkitError, match="sample_weight must be real numbers"):
        model.score(d, sample_weight=[1, 1, 1, 1, 1, 2j])


def test_a_complex_attribute_matrix_file_is_refused(tmp_path):
    from transferkit.zeroshot import attribute_matrix
    path = tmp_path / "a.npy"
    np.save(path, np.eye(3) * (0.5 + 0.5j))
    with pytest.raises(TransferkitError, match="must be real numbers"):
        attribute_matrix(str(path))
    assert attribute_matrix(np.eye(3)).shape == (3, 3)


@pytest.mark.parametrize("call", [
    lambda d: d.subset(None), lambda d: d[None], lambda d: d[...], lambda d: d.subset({0, 1}),
    lambda d: d.subset("a"), lambda d: d.subset([1j]), lambda d: d.select_classes(1), lambda d: d.select_classes(None),
    lambda d: Domain.unlabeled("u", np.array(0.5)), lambda d: Domain.unlabeled("u", None),
    lambda d: Domain.unlabeled("u", 5), lambda d: Domain.unlabeled("u", d.images, provenance=[1]),
    lambda d: Domain("d", d.images[:2], [0, 1], ["a", "b"], keys="ab"),
])
def test_domain_calls_of_wrong_types_are_named(call):
    d = helpers.toy_domain(4, classes=2)
    with pytest.raises(TransferkitError):
        call(d)
    assert len(d.subset([0, 1])) == 2 and d.select_classes(("1",)).class_names == ["1"]


@pytest.mark.parametrize("call", [
    lambda d: split_domain(d, "0.1", 0.2), lambda d: split_domain(3), lambda d: parse_classes([float("inf")], d),
    lambda d: parse_classes([float("-inf")]),
])
def test_split_calls_of_wrong_types_are_named(call):
    with pytest.raises(TransferkitError):
        call(helpers.toy_domain(8, classes=2))


@pytest.mark.parametrize("hooks", [-1, lambda: 0, lambda step: 0, (lambda step, state, extra: 0,)])
def test_hooks_of_a_wrong_type_or_arity_are_refused_when_given(hooks):
    with pytest.raises(TransferkitError, match="hook"):
        Transfer("finetune", hooks=hooks)


def test_hooks_that_take_step_and_state_are_kept():
    class Hook:
        def __call__(self, step, state, extra=None):
            pass
    assert len(Transfer("finetune", hooks=(lambda step, state: 0, lambda *a: 0, Hook(), print)).hooks) == 4


@pytest.mark.parametrize("overrides", [[3], [None], "k=2"])
def test_load_config_overrides_of_a_wrong_type_are_named(overrides):
    from transferkit.config import load_config
    with pytest.raises(TransferkitError, match="overrides must be a list of 'key=value' texts"):
        load_config(None, overrides)
    assert load_config(None, ["k=2"]).k == 2


def test_a_long_class_range_is_checked_for_repeats_in_one_pass(monkeypatch):
    from transferkit import splits
    calls = []
    counter = splits.Counter
    monkeypatch.setattr(splits, "Counter", lambda ids: calls.append(len(ids)) or counter(ids))
    assert parse_classes("0-20000") == list(range(20001)) and calls == [20001]
    with pytest.raises(TransferkitError, match=r"repeats class\(es\) \[3, 4\]"):
        parse_classes("0-4,3-4")


def test_a_class_range_far_above_any_class_count_is_refused_without_a_domain(monkeypatch):
    from transferkit import splits
    calls, check_id = [], splits._check_id

    def counted(i, domain):
        calls.append(i)
        assert len(calls) <= 1000, "an id made for each class of the range"
        return check_id(i, domain)
    monkeypatch.setattr(splits, "_check_id", counted)
    with pytest.raises(TransferkitError, match="more classes than any dataset"):
        parse_classes("0-999999999")
    assert calls == []
    d = helpers.toy_domain(8, classes=2)
    with pytest.raises(TransferkitError, match="out of range"):
        parse_classes("0-999999999", d)
    assert len(calls) == 3  # ids 0, 1 and the first out of range


@pytest.mark.parametrize("shape", [(0, 0), (5, 0), (0, 3)])
def test_an_empty_image_is_refused(shape):
    from PIL import Image

    from transferkit.userdata import read_images
    with pytest.raises(TransferkitError, match="has no pixels"):
        read_images([Image.new("L", shape)], size=4)
    assert read_images([Image.new("L", (2, 3))]).shape == (1, 1, 3, 2)


def test_show_of_an_npz_of_one_class_gives_no_folder_advice(tmp_path, capsys):
    path = tmp_path / "one_class.npz"
    np.savez(path, x=np.zeros((3, 8, 8), dtype=np.uint8), y=np.zeros(3, dtype=np.int64))
    code, out, _ = helpers.run_cli(capsys, "show", f"npz:{path}", "--out", str(tmp_path / "g.png"))
    assert code == 0 and "one class: a run needs two or more" in out
    assert "class folders" not in out and "labels 'y'" in out


@pytest.mark.parametrize("labels", [np.array([0, 2**63 + 5], dtype=np.uint64), [0, 1e30], np.array([0.0, -1e19])])
def test_labels_beyond_int64_are_named_as_they_are(labels):
    with pytest.raises(TransferkitError, match=r"found [-\d.e+]+, beyond any class id") as caught:
        Domain("d", torch.rand(2, 1, 4, 4), labels, ["a", "b"])
    assert "-9223372036854775" not in str(caught.value)
    assert Domain("d", torch.rand(2, 1, 4, 4), np.array([1, 0], dtype=np.uint64), ["a", "b"]).labels.tolist() == [1, 0]


@pytest.mark.parametrize("channels", ["3", 3.0, True])
def test_to_format_names_a_channels_value_of_another_type(channels):
    with pytest.raises(TransferkitError, match=f"channels must be 1 or 3 \\(an int\\), got {type(channels).__name__}"):
        helpers.toy_domain(4).to_format(channels=channels)
    assert helpers.toy_domain(4).to_format(channels=3).images.shape[1] == 3


def test_losses_returning_a_list_are_told_to_return_a_dict():
    from test_engine_mutation import custom

    from transferkit.engine import Engine
    method = custom(lambda m, b: [m.supervised(b.target)])
    with pytest.raises(TransferkitError, match="losses must return a dict .*, got list"):
        Engine(TrainConfig(steps=1, batch_size=8, progress=False)).fit(method, target=helpers.toy_domain(16))


# --- the second review (of the fuzzing fixes) -----------------------------------------------------------------------


def test_a_multilayer_discriminator_beyond_the_machines_memory_is_refused_before_building(monkeypatch):
    from transferkit import domain
    from transferkit.backbones import build_backbone
    from transferkit.methods import get_method
    monkeypatch.setattr(domain, "memory_bytes", lambda: 8 * 2**30)
    net = build_backbone("lenet", 10, in_channels=3, image_size=224)  # eq. 2's layers: 34 G weights
    with torch.device("meta"), pytest.warns(Warning), pytest.raises(TransferkitError, match="eq. 2 layers .* tap "
                                                                                             "smaller ones"):
        get_method("multilayer_adda")(net)


def test_a_whole_number_of_thousands_of_digits_is_named_as_out_of_range():
    with pytest.raises(TransferkitError, match="lr must be a number within float's range .* about 5001 digits"):
        TrainConfig(lr=10**5000)


def test_lists_of_units_captions_and_fractions_given_as_arrays_or_tensors_still_work():
    from transferkit.backbones import build_backbone
    from transferkit.clip import ClipMethod
    from transferkit.config import load_config
    from transferkit.methods import get_method
    from transferkit.methods.base import _fits
    from transferkit.text import HashingEncoder
    assert _fits(np.array(["conv3", "conv4"]), "list[str]") and not _fits(np.array([["conv3"]]), "list[str]")
    net = build_backbone("lenet", 4, in_channels=1, image_size=28)
    assert get_method("flex")(net, units=np.array(["conv1"])).units == ["conv1"]
    assert get_method("flex")(net, units={"conv2": 1}.keys()).units == ["conv2"]
    ClipMethod(helpers.tiny_net(2), captions=np.array(["a", "b"]), text_encoder=HashingEncoder(16))
    d = helpers.toy_domain(40)
    plain = split_domain(d, 0.25, 0.25)
    for val in (torch.tensor(0.25), np.array(0.25), np.float32(0.25)):
        assert torch.equal(split_domain(d, val, 0.25).val.labels, plain.val.labels)
    assert load_config(None, (a for a in ["seed=1"])).seed == 1


def test_an_anchor_shared_many_times_is_walked_once_for_self_reference(monkeypatch):
    from transferkit import config
    value, calls, real = [1, 2], [], config.self_reference
    for _ in range(5):
        value = [value] * 10  # an anchor used ten times in each of five levels: 10^5 paths to its leaves
    monkeypatch.setattr(config, "self_reference", lambda *a: calls.append(1) or real(*a))
    assert config.self_reference({"k": value}) is None
    assert len(calls) < 100
