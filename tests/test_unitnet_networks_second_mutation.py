"""Tests from a second mutation pass over unitnet.py, networks.py and backbones.py: the dry run of
unit_output_shapes in the network's dtype, the warning of reset_classifier(0) on an MLP head, the
parameters reinitialise names; which channels load_network builds for a file that both channel counts
fit or that it is given without them, a path under ``~``, class names that do not count the head's rows,
class names that are not text, the shapes check_state_fits names (file first, then network), the
added-parameter check of a built-in's name whose fresh build fails, of a plugin's builder that needs an
option and of a network without classifier; a plugin's backbone named in $TRANSFERKIT_PLUGINS built by
name; ResNet-18's explicit ``small_input`` and the flag it records,
torchvision stem weights of two channels into a grey stem, the grey input norm's std, check_input_shape of
a network without input shape and definition digests of buffers of another shape. Each test fails when
the code it names is changed in the way its comment says.

Judged equivalent, so not tested: unit_output_shapes' `self._shapes is None or refresh` -> `refresh or
not self._shapes` (the cache always holds "embedding", so it is never empty); hidden_layers' `last =
found[1] if found ... else layers[-1][1]` -> `layers[-1][1]` (final_layer returns the last child with
state, which is the last layer with parameters in named_modules order).

Left surviving: load_network's `v.dim() == 2` filter of head weights dropped (only a 1-d ``...weight``
after the final layer, of another size than the class count, as a PReLU(1) after the logits, would tell).
Not tested here, being killed by the file named (checked by a run against the mutant): the default
`input_shape_guessed`, _check_built's `None` outputs and `_check_runs` of a plugin (test_plugins),
save_network's `classes_` / `class_names` fallbacks (test_api_usability) and load_network_file's class
order check (test_experiment)."""

import json

import pytest
import torch
from helpers import seeded_lenet, tiny_net
from torch import nn

from transferkit.errors import TransferkitError
from transferkit.unitnet import UnitNet, add_input_norm, reinitialise

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- unitnet -------------------------------------------------------------------------------------------
def test_unit_output_shapes_of_a_double_network_run_in_its_dtype():
    # kills: unit_output_shapes' dry run input made without `dtype=ref.dtype` (float32 zeros into a float64 conv)
    net = tiny_net(3).double()
    assert net.unit_output_shapes() == {"unit1": (4, 13, 13), "unit2": (16,), "head": (3,), "embedding": (16,)}


def test_removing_an_mlp_head_warns_that_its_hidden_layers_go():
    # kills: reset_classifier's warning given only for a new head (`if hidden and num_classes`)
    head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    net = UnitNet({"a": nn.Flatten(1)}, head, input_shape=(4,))
    with pytest.warns(UserWarning, match=r"removes the classifier .*\(0: Linear\(4 -> 4\)\) are dropped"):
        net.reset_classifier(0)
    assert net.num_classes == 0


class _Raw(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(2))


def test_reinitialise_names_every_parameter_it_cannot_redraw():
    # kills: reinitialise's message naming `kept[:1]` instead of up to five parameters
    with pytest.raises(TransferkitError, match=r"cannot re-initialise \['a', 'b'\]"):
        reinitialise(_Raw())


# ---- networks: loading ----------------------------------------------------------------------------------
_GREY_PLUGIN = '''
import torch
from torch import nn
from transferkit.backbones import BACKBONES, UnitNet

class Grey(nn.Module):
    def forward(self, x):
        return x.mean(1, keepdim=True)

def mut_grey(num_classes, in_channels=1, image_size=28):
    return UnitNet({"grey": Grey(), "flat": nn.Flatten(1)}, nn.Linear(image_size * image_size, num_classes),
                   name="mut_grey", input_shape=(in_channels, image_size, image_size))

BACKBONES["mut_grey"] = mut_grey
'''


def test_a_file_both_channel_counts_fit_is_loaded_grey(tmp_path, plugin):
    # kills: file_channels' `found[0] if len(found) == 1 else None` made `found[-1] if found else None` (RGB)
    plugin("mut_grey_plugin", _GREY_PLUGIN)
    import mut_grey_plugin

    from transferkit.networks import file_channels, load_network, save_network
    net = mut_grey_plugin.mut_grey(3, in_channels=3)
    path = save_network(net, tmp_path / "g.safetensors")
    assert file_channels("mut_grey", 3, 28, net.state_dict()) is None
    assert load_network(path, "mut_grey").input_shape == (1, 28, 28)


def test_load_network_builds_the_channels_an_rgb_file_fits(tmp_path):
    # kills: load_network's `in_channels = file_channels(...) or 1` made `in_channels = 1`
    from transferkit.networks import load_network, save_network
    path = save_network(seeded_lenet(channels=3), tmp_path / "rgb.safetensors")
    assert load_network(path, "lenet").input_shape == (3, 28, 28)


def test_load_network_takes_a_path_under_home(tmp_path, monkeypatch):
    # kills: load_network's `Path(path).expanduser()` made `Path(path)` ("~/..." called missing)
    from transferkit.networks import load_network, save_network
    net = seeded_lenet()
    save_network(net, tmp_path / "n.safetensors")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert torch.equal(load_network("~/n.safetensors", "lenet").head.weight, net.head.weight)


def test_a_file_whose_class_names_do_not_count_its_head_rows_is_refused(tmp_path):
    # kills: load_network counting the rows by the head weight even when the file names its classes
    from transferkit.io import save_safetensors
    from transferkit.networks import load_network
    state = {k: v.contiguous() for k, v in seeded_lenet().state_dict().items()}
    path = save_safetensors(tmp_path / "n.safetensors", state, {"class_names": json.dumps(["a", "b", "c"])})
    with pytest.raises(TransferkitError, match="does not fit backbone 'lenet'"):
        load_network(path, "lenet")


def test_a_state_of_another_shape_names_the_files_shape_first():
    # kills: check_state_fits' message with the file's and the network's shapes swapped
    from transferkit.networks import check_state_fits
    state = seeded_lenet().state_dict()
    state["head.weight"] = torch.zeros(3, 500)
    state["head.bias"] = torch.zeros(3)
    with pytest.raises(TransferkitError, match=r"2 of another shape \(first 'head.weight': \(3, 500\) in the file, "
                                               r"\(10, 500\) here\)"):
        check_state_fits(seeded_lenet(), state, "f")


# ---- networks: saving -----------------------------------------------------------------------------------
def test_save_network_refuses_class_names_that_are_not_text(tmp_path):
    # kills: the `all(isinstance(c, str) ...)` part of save_network's class_names check dropped
    from transferkit.networks import save_network
    with pytest.raises(TransferkitError, match=r"class_names must name the 10 rows of the head, in order, as text"):
        save_network(seeded_lenet(), tmp_path / "n.safetensors", class_names=list(range(10)))
    assert not (tmp_path / "n.safetensors").exists()


def test_a_network_named_as_a_built_in_that_cannot_be_rebuilt_is_saved(tmp_path):
    # kills: _added_parameters' `except TransferkitError: return []` narrowed (lenet refuses 8 px: the save fails)
    from transferkit.networks import save_network
    net = UnitNet({"flat": nn.Flatten(1)}, nn.Linear(64, 2), name="lenet", input_shape=(1, 8, 8))
    assert save_network(net, tmp_path / "n.safetensors").is_file()


def test_a_plugin_network_is_saved_without_a_fresh_build(tmp_path, plugin):
    # kills: _added_parameters' `not is_built_in(net.name)` dropped (a builder needing an option rebuilt without it)
    plugin("mut_needs_plugin", '''
from torch import nn
from transferkit.backbones import BACKBONES, UnitNet

def mut_needs(num_classes, in_channels=1, image_size=28, *, width):
    return UnitNet({"flat": nn.Flatten(1)}, nn.Linear(in_channels * image_size * image_size, num_classes),
                   name="mut_needs", input_shape=(in_channels, image_size, image_size))

BACKBONES["mut_needs"] = mut_needs
''')
    import mut_needs_plugin

    from transferkit.networks import save_network
    assert save_network(mut_needs_plugin.mut_needs(3, width=4), tmp_path / "n.safetensors").is_file()


def test_a_network_without_classifier_that_holds_an_added_parameter_is_refused(tmp_path):
    # kills: _added_parameters' fresh build of `known_outputs(net) or 1` classes made `or 0` (no build: no check)
    from transferkit.networks import save_network
    net = seeded_lenet()
    net.reset_classifier(0)
    net.unit("fc1").register_parameter("scale", nn.Parameter(torch.ones(1)))
    with pytest.raises(TransferkitError, match=r"parameters its backbone 'lenet' does not have \(units.fc1.scale"):
        save_network(net, tmp_path / "n.safetensors")


# ---- backbones ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, small, kernel", [(32, False, (7, 7)), (64, True, (3, 3))])
def test_resnet18_takes_an_explicit_small_input_and_records_it(size, small, kernel):
    # kills: resnet18 ignoring an explicit `small_input` (the default by size), and `net.small_input` recorded
    # from the size instead of the stem built
    from transferkit.backbones import resnet18
    net = resnet18(10, image_size=size, small_input=small)
    assert net.unit("stem").conv1.kernel_size == kernel and net.small_input is small


def test_stem_weights_of_two_channels_into_a_grey_stem_are_refused():
    # kills: the `v.shape[1] == 3` part of the grey stem check dropped (two channels summed into one)
    from transferkit.backbones import load_torchvision_weights, resnet18
    net = resnet18(10, in_channels=1, image_size=64, small_input=False)
    sd = {k.replace("units.stem.", "").replace("units.", "").replace("head.", "fc."): v.clone()
          for k, v in net.state_dict().items()}
    sd["conv1.weight"] = torch.zeros(64, 2, 7, 7)
    with pytest.raises(TransferkitError, match=r"stem conv1 has shape \(64, 1, 7, 7\) but the weights have "
                                               r"\(64, 2, 7, 7\)"):
        load_torchvision_weights(net, sd)


def test_a_grey_networks_input_norm_takes_the_mean_imagenet_std():
    # kills: the grey input norm's std made the mean of IMAGENET_MEAN instead of IMAGENET_STD
    from transferkit.backbones import IMAGENET_MEAN, IMAGENET_STD, load_torchvision_weights, resnet18
    net = resnet18(10, in_channels=1, image_size=64, small_input=False)
    sd = {k.replace("units.stem.", "").replace("units.", "").replace("head.", "fc."): v.clone()
          for k, v in resnet18(10, in_channels=3, image_size=64, small_input=False).state_dict().items()}
    load_torchvision_weights(net, sd)
    norm = net.unit("stem").norm
    assert norm.mean.flatten().tolist() == pytest.approx([sum(IMAGENET_MEAN) / 3])
    assert norm.std.flatten().tolist() == pytest.approx([sum(IMAGENET_STD) / 3])


def test_check_input_shape_takes_any_images_for_a_network_without_input_shape():
    # kills: check_input_shape's `shape is None or` dropped (every image refused against an empty shape)
    from transferkit.backbones import check_input_shape
    net = tiny_net(3)
    net.input_shape = None
    check_input_shape(net, torch.zeros(2, 1, 28, 28), "predict")


def test_definition_digest_counts_the_shapes_of_buffers():
    # kills: definition_digest's shapes listing only the parameters (an InputNorm of 1 or 3 channels alike)
    from transferkit.backbones import definition_digest
    grey, rgb = tiny_net(3), tiny_net(3)
    add_input_norm(grey, [0.5], [0.25])
    add_input_norm(rgb, [0.5] * 3, [0.25] * 3)
    assert repr(grey) == repr(rgb) and definition_digest(grey) != definition_digest(rgb)


def test_a_backbone_of_a_plugin_named_in_the_environment_is_built_by_name(plugin, monkeypatch):
    # kills: check_backbone's `load_outside_families()` before refusing an unknown name dropped
    plugin("mut_grey_env_plugin", _GREY_PLUGIN)
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "mut_grey_env_plugin")
    from transferkit.backbones import build_backbone
    assert build_backbone("mut_grey", 3).num_classes == 3
