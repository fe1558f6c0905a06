"""Tests from a fourth mutation pass over unitnet.py and networks.py: the modes ``evaluating`` gives back when its block
fails, a wrong input of a built-in type named by its plain type name, freeze() of no units, a pool with a nested
dropout, the shape of InputNorm's stored statistics; save_network of a module that is no UnitNet and the class names
of a head whose rows cannot be counted; network files that are neither safetensors nor a PyTorch file, the caller's
hint for an unreadable file, class names stored as JSON that is no list, a builder that refuses other channels with
its own error, a prototype-head file without its options and a state that both misses a tensor and has an unexpected
one. Each test fails when the code it names is changed in the way its comment says.

Judged equivalent, so not tested: _UnitsView's `pop` and `update` in its list of refusals (ModuleDict's own `pop` and
`update` go through `__delitem__` / `__setitem__`, which refuse anyway); load_network_file's `read or` dropped (it
reads the same file again); the `int(s)` of input_shape (as the first pass found); embed_dim's `[0]` -> `[-1]` of the
embedding shape (the embedding is N x D: one dimension). Not tested here, being killed by
the file named (checked by a run against the mutant): evaluating's `yield module` -> `yield None`
(test_pixel_multitask_mutation, through unit_gan's `with evaluating(...) as tr`).

Left surviving: load_network's `net.class_names = names` -> `names or None` (only a file of no classes, `[]`, tells
them apart: a network without classifier saved with `class_names=[]`).
"""

import json

import pytest
import torch
from helpers import seeded_lenet, tiny_net
from torch import nn

from transferkit.backbones import known_outputs
from transferkit.errors import TransferkitError
from transferkit.networks import (
    check_state_fits,
    file_channels,
    load_network,
    load_network_file,
    read_network_file,
    save_network,
    stored_classes,
)
from transferkit.unitnet import UnitNet, add_input_norm, evaluating

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- unitnet: evaluating --------------------------------------------------------------------------------------------
def test_evaluating_gives_each_module_its_mode_back_when_the_block_fails():
    # kills: evaluating's `try: ... finally:` dropped (a failure inside left the network in eval mode)
    net = tiny_net(3)
    net.train()
    net.unit("unit1").eval()  # a frozen unit a method keeps in eval mode
    with pytest.raises(ValueError, match="inside"):
        with evaluating(net):
            assert not net.training
            raise ValueError("a failure inside the block")
    assert net.training and net.head.training and not net.unit("unit1").training


# ---- unitnet: inputs and freezing -----------------------------------------------------------------------------------
def test_an_input_of_a_builtin_type_is_named_by_its_plain_type_name():
    # kills: _input_problem's `if type(x).__module__ == "builtins"` -> `if False` (named "builtins.list")
    net = tiny_net(3)
    with pytest.raises(TransferkitError, match=r"takes a torch tensor N x C x H x W, got a list \(") as info:
        net([[0.0] * 28] * 28)
    assert "builtins" not in str(info.value)


def test_freeze_without_units_freezes_every_unit():
    # kills: freeze's default `units="all"` -> `"head"` (the feature units stayed trainable)
    net = tiny_net(3)
    net.freeze()
    assert not any(p.requires_grad for p in net.parameters())
    net.unfreeze()
    assert all(p.requires_grad for p in net.parameters())


def test_a_pool_with_a_dropout_nested_in_a_sequential_is_refused():
    # kills: the pool's dropout check over `pool.children()` instead of `pool.modules()` (a nested dropout passed)
    pool = nn.Sequential(nn.Sequential(nn.Flatten(1), nn.Dropout(0.5)))
    with pytest.raises(TransferkitError, match="the same in training and evaluation"):
        UnitNet({"conv": nn.Conv2d(1, 2, 3)}, nn.Linear(2 * 6 * 6, 2), pool=pool, input_shape=(1, 8, 8))


def test_input_norm_statistics_are_stored_as_one_by_c_by_one_by_one():
    # kills: InputNorm's buffers viewed (C, 1, 1) instead of (1, C, 1, 1) (files saved before would not load)
    net = seeded_lenet(channels=3)
    add_input_norm(net, [0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    state = net.state_dict()
    first = net.unit_names[0]
    assert state[f"units.{first}.norm.mean"].shape == (1, 3, 1, 1)
    assert state[f"units.{first}.norm.std"].shape == (1, 3, 1, 1)


# ---- networks: save_network -----------------------------------------------------------------------------------------
def test_save_network_of_a_module_that_is_no_unitnet_is_refused_by_name(tmp_path):
    # kills: save_network's `check_unitnet(net, "save_network")` dropped (an AttributeError on net.name)
    with pytest.raises(TransferkitError, match=r"save_network: net must be a transferkit UnitNet.*Linear"):
        save_network(nn.Linear(4, 2), tmp_path / "net.safetensors")
    assert not (tmp_path / "net.safetensors").exists()


def test_a_network_whose_rows_cannot_be_counted_saves_the_class_names_given(tmp_path):
    # kills: save_network's `len(names) == (rows or len(names))` -> `== rows` (refused a head of unknown rows)
    net = UnitNet({"conv": nn.Conv2d(1, 2, 3)}, nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 2)))
    assert known_outputs(net) is None  # no out_features and no input_shape to run it on
    path = save_network(net, tmp_path / "net.safetensors", class_names=["cat", "dog"])
    _, metadata = read_network_file(path)
    assert json.loads(metadata["class_names"]) == ["cat", "dog"]


# ---- networks: reading and loading files ----------------------------------------------------------------------------
def test_a_file_that_is_neither_safetensors_nor_a_zip_is_named_unreadable(tmp_path):
    # kills: _torch_file's `except (OSError, zipfile.BadZipFile)` narrowed to OSError (zipfile's error escaped)
    path = tmp_path / "net.safetensors"
    path.write_bytes(b"not a network file at all")
    with pytest.raises(TransferkitError, match="unreadable"):
        read_network_file(path)
    with pytest.raises(TransferkitError, match="unreadable"):
        load_network(path, "lenet")


def test_stored_class_names_that_are_json_but_no_list_are_refused(tmp_path):
    # kills: stored_classes' `isinstance(names, list)` dropped (a JSON text was taken as its letters' classes)
    path = tmp_path / "net.safetensors"
    for stored in ('"cat"', '{"cat": "dog"}'):
        with pytest.raises(TransferkitError, match="must be a JSON list of class names"):
            stored_classes(path, {"class_names": stored})
    assert stored_classes(path, {"class_names": '["cat", "dog"]'}) == ["cat", "dog"]


_GREY_ONLY_PLUGIN = '''
from torch import nn
from transferkit.backbones import BACKBONES, UnitNet


def mut4_grey_only(num_classes, in_channels=1, image_size=28):
    if in_channels != 1:
        raise ValueError("mut4_grey_only takes grey images only")
    return UnitNet({"flat": nn.Flatten(1)}, nn.Linear(image_size * image_size, num_classes),
                   name="mut4_grey_only", input_shape=(in_channels, image_size, image_size))

BACKBONES["mut4_grey_only"] = mut4_grey_only
'''


def test_a_builder_that_refuses_colour_with_its_own_error_gives_the_grey_fit(tmp_path, plugin):
    # kills: file_channels' `except Exception` narrowed to TransferkitError (the plugin's ValueError escaped)
    plugin("mut4_grey_only_plugin", _GREY_ONLY_PLUGIN)
    import mut4_grey_only_plugin
    net = mut4_grey_only_plugin.mut4_grey_only(3)
    assert file_channels("mut4_grey_only", 3, 28, net.state_dict()) == 1
    path = save_network(net, tmp_path / "g.safetensors")
    assert load_network(path, "mut4_grey_only").input_shape == (1, 28, 28)


def test_an_unreadable_network_file_gives_the_callers_hint(tmp_path):
    # kills: read_network_file's `load_safetensors(path, ..., hint)` without the hint, and load_network_file's
    # `read_network_file(path, hint)` without it
    path = tmp_path / "net.safetensors"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(TransferkitError, match="unreadable.*: pre-train it anew"):
        read_network_file(path, "pre-train it anew")
    with pytest.raises(TransferkitError, match="unreadable.*: pre-train it anew"):
        load_network_file(seeded_lenet(), path, hint="pre-train it anew")


def test_a_state_that_misses_a_tensor_and_has_another_names_both():
    # kills: check_state_fits' message keeping only its first part (`parts[0]`: the unexpected tensor went unnamed)
    net = seeded_lenet()
    state = dict(net.state_dict())
    state["head.w"] = state.pop("head.weight")
    with pytest.raises(TransferkitError, match=r"1 tensor\(s\) missing \(first 'head.weight'\); "
                                               r"1 unexpected \(first 'head.w'\)"):
        check_state_fits(net, state, "a state")


def test_a_prototype_head_file_without_its_options_loads_with_the_defaults(tmp_path):
    # kills: restore_head's `stored is not None` dropped (json.loads(None) failed a file saved without the options)
    from transferkit.backbones import build_backbone
    from transferkit.io import save_safetensors
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28, head="prototype")
    path = save_safetensors(tmp_path / "p.safetensors", {k: v.contiguous() for k, v in net.state_dict().items()})
    loaded = load_network(path, "lenet")
    assert (loaded.head.metric, loaded.head.scale) == ("sqeuclidean", 10.0)
    assert torch.equal(loaded.head.prototypes, net.head.prototypes)
