"""Tests from a third mutation pass over unitnet.py and networks.py: a memory error of a unit on a wrong input
left as it is, forward_features of one layer named as text, steps_before of no stop, image sizes of 0 on either
side, load_state_dict's ``assign``, num_parameters of the units named, units that share a layer inside their
Sequentials; save_network's count of class names (too many), its non-contiguous tensors, file_channels of a file
with an extra tensor and of an RGB prototype-head file. Each test fails when the code it names is changed in the
way its comment says.

Judged equivalent, so not tested: add_input_norm's `ref.dtype if ref.is_floating_point() else None` -> `ref.dtype`
(_ref_tensor only returns a floating tensor, bar an integer nn.Parameter); `input_shape_guessed = False` -> `None`
(only read as a truth value); `unit("head")` returning `self._steps()[-1]` (the same module); reinitialise's
`callable(getattr(m, "reset_parameters"))` -> `hasattr`; load_state_dict reading the InputNorm std from the mean
(the buffers are then loaded from the state anyway); _added_parameters' fresh build at image_size 28, with
in_channels 1 or with 1 class (the built-in backbones' state keys depend on none of them) and its `except
TransferkitError` widened to `Exception` (the built-in builders refuse with TransferkitError); file_channels'
`(1, 3)` -> `(3, 1)` (one fit is taken alone). Not tested here, being killed by the file named (checked by a run
against the mutant): UnitNet.unit's refusal of an unknown name and load_network_file's class order check made
order-blind (test_experiment); an index one past the head stopping at the embedding (test_semantic_backbones_mutation);
load_network's row count by `prototypes` and head_kind's cosine (test_api_usability / test_experiment).

Left surviving: extra_repr listing the feature units without "head" (cosmetic); save_network's
`getattr(net, "class_names")` fallback dropped (the earlier pass found it killed by test_api_usability)."""

import pytest
import torch
from helpers import seeded_lenet, tiny_net
from torch import nn

from transferkit.errors import TransferkitError
from transferkit.unitnet import UnitNet

pytestmark = pytest.mark.usefixtures("one_thread")


class _OutOfMemory(nn.Module):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


# ---- unitnet: forward ------------------------------------------------------------------------------------
def test_running_out_of_memory_on_a_wrong_input_stays_an_out_of_memory_error():
    # kills: _named_input_errors' `except torch.OutOfMemoryError: raise` dropped (the memory error renamed an input one)
    net = UnitNet({"a": _OutOfMemory()}, nn.Linear(4, 2), input_shape=(1, 4, 4))
    with pytest.raises(torch.OutOfMemoryError):
        net(torch.zeros(2, 1, 5, 5))


def test_forward_features_of_one_name_given_as_text_is_that_layer():
    # kills: _activations' `[layers] if isinstance(layers, str)` dropped (the name read as a list of letters)
    net = tiny_net(3)
    x = torch.rand(2, 1, 28, 28)
    acts = net.forward_features(x, "unit1")
    assert list(acts) == ["unit1"] and torch.equal(acts["unit1"], net.forward_units(x, 0, 1))


def test_the_steps_before_no_stop_are_every_step_through_the_head():
    # kills: steps_before's stop read as a start (`_boundary(stop, True)`: None gives no step)
    net = tiny_net(3)
    assert net.steps_before(None) == [net.unit("unit1"), net.unit("unit2"), net.pool, net.head]


# ---- unitnet: names, sizes and states -------------------------------------------------------------------
def test_an_image_size_of_zero_on_either_side_is_refused():
    # kills: _shape3's `min(h, w) >= 1` made `h >= 1` (a width of 0 taken)
    from transferkit.unitnet import _shape3
    for size in [(5, 0), (0, 5), 0]:
        with pytest.raises(TransferkitError, match="image_size must be >= 1"):
            _shape3(1, size)


def test_load_state_dict_passes_assign_on():
    # kills: UnitNet.load_state_dict dropping `assign=assign` (the file's tensors copied, not taken)
    net = tiny_net(3)
    state = {k: v.clone() for k, v in tiny_net(3).state_dict().items()}
    net.load_state_dict(state, assign=True)
    assert net.head.weight.data_ptr() == state["head.weight"].data_ptr()


def test_num_parameters_counts_only_the_units_named():
    # kills: num_parameters counting every unit whatever `units` names
    net = tiny_net(3)
    assert net.num_parameters("head") == 16 * 3 + 3 and net.num_parameters(["unit1"]) == 4 * 1 * 3 * 3 + 4
    assert net.num_parameters() == sum(p.numel() for p in net.parameters())


def test_units_that_share_a_layer_inside_their_sequentials_are_refused():
    # kills: UnitNet's shared-parameter check reading only each unit's own parameters (`recurse=False`)
    shared = nn.Linear(4, 4)
    with pytest.raises(TransferkitError, match="units 'a' and 'b' share parameters"):
        UnitNet({"a": nn.Sequential(shared), "b": nn.Sequential(nn.ReLU(), shared)}, nn.Linear(4, 2))
    with pytest.raises(TransferkitError, match="units 'a' and 'head' share parameters"):
        UnitNet({"a": nn.Sequential(shared)}, nn.Sequential(shared))


# ---- networks --------------------------------------------------------------------------------------------
def test_save_network_refuses_more_class_names_than_head_rows(tmp_path):
    # kills: save_network's count check `len(names) == rows` made `>=` (extra names stored beside 10 rows)
    from transferkit.networks import save_network
    with pytest.raises(TransferkitError, match="class_names must name the 10 rows"):
        save_network(seeded_lenet(), tmp_path / "n.safetensors", class_names=[str(i) for i in range(11)])


def test_a_file_with_a_tensor_no_build_has_fits_no_channel_count():
    # kills: file_channels' `set(own) == set(state)` made `<=` (a file with an extra tensor said to fit the grey build)
    from transferkit.networks import file_channels
    state = dict(seeded_lenet().state_dict())
    assert file_channels("lenet", 10, 28, state) == 1
    state["units.fc1.scale"] = torch.ones(1)
    assert file_channels("lenet", 10, 28, state) is None



def test_load_network_builds_the_channels_of_an_rgb_prototype_head_file(tmp_path):
    # kills: file_channels' trial builds made without `head=head_kind(state)` (a prototype file fits neither: grey)
    from transferkit.networks import load_network, save_network
    net = seeded_lenet(channels=3)
    net.reset_classifier(4, "prototype")
    loaded = load_network(save_network(net, tmp_path / "p.safetensors"), "lenet")
    assert loaded.input_shape == (3, 28, 28) and torch.equal(loaded.head.prototypes, net.head.prototypes)


def test_a_network_with_a_transposed_weight_is_saved_and_loaded(tmp_path):
    # kills: save_network's `.contiguous()` dropped (safetensors refuses a non-contiguous tensor)
    from transferkit.networks import load_network, save_network
    net = seeded_lenet()
    w = net.head.weight.detach()
    net.head.weight = nn.Parameter(w.t().contiguous().t())  # same values, column-major
    assert not net.head.weight.is_contiguous()
    assert torch.equal(load_network(save_network(net, tmp_path / "t.safetensors"), "lenet").head.weight, w)
