"""Tests from a second mutation pass over unitnet.py, backbones.py, heads.py and networks.py: which image
sizes and unit names a UnitNet refuses by name, what reinitialise returns, a negative unit index before the
first unit, units that do not fit the declared input shape; the smallest-size hint up to its limit, ResNet-18's
small stem (below 64 pixels on either side) and its fan-out init, torchvision weights that lack a tensor, have
a 7x7 stem for a grey small stem, or go into another backbone; images of other channels, known_outputs of a
head that fails, a plugin network's run check in eval mode, definition digests without memory addresses; heads
refusing an infinite scale or an input size of 0, a linear head without bias, a cosine head's init; the final
layer of a lazy or softmax-ended head and retargeted heads (a fixed scale, no bias, the mode, rows after a new
row, the caller's head untouched, a nested final layer); the dry run of unit_output_shapes in eval mode, an
InputNorm loaded into a first unit not called stem, a wrong input named when the dry run fails, torchvision
weights into a net without classifier, a network given as a backbone name; network files saved by a legacy
torch.save, zip archives that are not one, a missing file, class names that are not JSON and states with an
unexpected tensor. Each test fails when the code it names is changed in the way its comment says.

Judged equivalent, so not tested: head_for_classes' `type(head) not in HEADS.values()` -> `isinstance` (only a
subclass of a built-in head tells them apart, and it indexes the same row tensors) and its `t.shape[0] == n`
dropped (every tensor of the built-in heads with a dimension has one row per class); reinitialise's `own and`
(an empty update); resnet18's downsample `or` -> `and` (every channel change in ResNet-18 also has stride 2);
hidden_layers' `len(layers) < 2` -> `< 1` (a single layer is the final one and left out anyway); build_backbone's
`fixed` names cut to `num_classes` (in_channels and image_size are its own parameters, never in `kw`; only the
list of known options in the message changes). Not tested here, being killed by test_plugins: the builder's
channel check, `input_shape_guessed`, `is_built_in` and `_check_runs` for plugins; nor, going by the asserts of
test_experiment and test_api_usability, the class-name check of load_network_file and head_kind's cosine.
save_network's `predicts_with_net` check, its `classes_` and `class_names` fallbacks and its added-parameters
check, which this pass left alive in the files it ran, each fail a save_network test of test_api_usability or
test_experiment (checked by hand)."""

import pytest
import torch
from helpers import tiny_net
from test_backbones import _tv_state_dict
from torch import nn

from transferkit.backbones import build_backbone, lenet
from transferkit.errors import TransferkitError
from transferkit.unitnet import UnitNet, reinitialise

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- unitnet: sizes and names ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(28, 28, 1), (28.0, 28), (28, 28.5)])
def test_an_image_size_that_is_not_a_pair_of_ints_is_refused_by_name(size):
    # kills: _shape3's `len(image_size) == 2` made `>= 2` (an unpacking ValueError), and its
    # `all(isinstance(s, int) ...)` dropped (28.5 cut to 28 without a word)
    with pytest.raises(TransferkitError, match="image_size"):
        lenet(10, image_size=size)


def test_an_empty_unit_name_is_refused_by_name():
    # kills: the `n and` (non-empty) part of UnitNet's unit name check dropped (a KeyError of torch's ModuleDict)
    with pytest.raises(TransferkitError, match="non-empty"):
        UnitNet({"": nn.Flatten(1)}, nn.Linear(4, 2))


def test_reinitialise_returns_the_module_it_redrew():
    # kills: reinitialise returning None instead of the module (so `net = reinitialise(net)` loses the net)
    net = tiny_net(3)
    assert reinitialise(net) is net


# ---- unitnet: boundaries ----------------------------------------------------------------------------
def test_a_negative_unit_index_before_the_first_unit_is_refused():
    # kills: the lower bound of `0 <= i <= n` dropped (-5 of 3 units read as Python's index -2)
    net = tiny_net(3)
    x = torch.zeros(2, 1, 28, 28)
    assert torch.equal(net.forward_units(x, -3), net(x))  # -3 of feature, feature, head: the first unit
    with pytest.raises(TransferkitError, match="out of range"):
        net.forward_units(x, -5)


def test_units_that_do_not_fit_the_input_shape_are_named_by_unit_output_shapes():
    # kills: unit_output_shapes' `except RuntimeError` re-raise as a TransferkitError dropped (torch's bare error)
    net = UnitNet({"conv": nn.Conv2d(1, 2, 5)}, nn.LazyLinear(3), input_shape=(1, 3, 3))
    with pytest.raises(TransferkitError, match=r"do not fit input shape \(1, 3, 3\)"):
        net.unit_output_shapes()


# ---- backbones: sizes and the ResNet-18 ---------------------------------------------------------------
def test_the_smallest_size_hint_tries_the_limit_itself():
    # kills: _smallest_size_hint's `range(..., limit + 1)` made `range(..., limit)` (the limit never tried)
    from transferkit.backbones import _smallest_size_hint
    hint = _smallest_size_hint({"conv": nn.Conv2d(1, 1, 5)}, (1, 2, 2), limit=5)
    assert "5 x 5" in hint


@pytest.mark.parametrize("size, small", [(64, False), (63, True), ((100, 32), True), ((32, 100), True)])
def test_resnet18_takes_the_small_stem_below_64_pixels_on_either_side(size, small):
    # kills: the default `min(shape[1:]) < 64` made `<= 64`, or read from the height alone (`shape[1] < 64`)
    from transferkit.backbones import resnet18
    net = resnet18(2, image_size=size)
    assert net.small_input is small
    assert net.unit("stem").conv1.kernel_size == ((3, 3) if small else (7, 7))


def test_resnet18_convolutions_are_kaiming_normal_over_their_fan_out():
    # kills: the torchvision init's `mode="fan_out"` made `"fan_in"` (the 7x7 stem's std about 4.6 times too large)
    from transferkit.backbones import resnet18
    torch.manual_seed(0)
    w = resnet18(2, in_channels=3, image_size=64).unit("stem").conv1.weight.detach()
    expected = (2 / (64 * 7 * 7)) ** 0.5  # gain sqrt(2) of ReLU over fan_out = out channels x kernel area
    assert abs(float(w.std()) / expected - 1) < 0.05


def test_torchvision_weights_that_lack_a_tensor_are_refused_by_name():
    # kills: load_torchvision_weights' check of the tensors the weights lack dropped (loaded with strict=False)
    from transferkit.backbones import load_torchvision_weights, resnet18
    sd = _tv_state_dict(resnet18(10, image_size=64))
    del sd["layer4.1.bn2.running_mean"]
    with pytest.raises(TransferkitError, match=r"lack.*units\.layer4\.1\.bn2\.running_mean"):
        load_torchvision_weights(resnet18(10, image_size=64), sd)


def test_seven_by_seven_rgb_weights_into_a_grey_small_stem_name_the_fix():
    # kills: the `own[nk].shape[2:] == v.shape[2:]` part of the grey stem check dropped (summed, then a bare mismatch)
    from transferkit.backbones import load_torchvision_weights, resnet18
    sd = _tv_state_dict(resnet18(10, in_channels=3, image_size=64))
    with pytest.raises(TransferkitError, match="small_input=False"):
        load_torchvision_weights(resnet18(10, in_channels=1, image_size=32), sd)


# ---- backbones: checks of networks and images ---------------------------------------------------------
def test_check_input_shape_refuses_images_of_other_channels():
    # kills: check_input_shape comparing only the height and width (`images.shape[2:]` with `shape[1:]`)
    from transferkit.backbones import check_input_shape
    net = tiny_net(3)
    check_input_shape(net, torch.zeros(2, 1, 28, 28), "predict")
    with pytest.raises(TransferkitError, match=r"predict: images of shape \(3, 28, 28\)"):
        check_input_shape(net, torch.zeros(2, 3, 28, 28), "predict")


def test_known_outputs_of_a_head_that_fails_on_the_embedding_is_none():
    # kills: known_outputs catching only TransferkitError (the head's RuntimeError escapes save_network's checks)
    from transferkit.backbones import known_outputs
    net = UnitNet({"flat": nn.Flatten(1)}, nn.Sequential(nn.Linear(4, 3)), input_shape=(1, 5, 1))
    assert known_outputs(net) is None


def test_the_run_check_of_a_plugins_network_leaves_its_batchnorm_statistics(monkeypatch):
    # kills: `evaluating(net)` dropped from _check_runs (the check's forward counted as a training batch)
    from transferkit.backbones import BACKBONES

    def with_bn(num_classes, in_channels=1, image_size=28):
        units = {"conv": nn.Sequential(nn.Conv2d(in_channels, 2, 3), nn.BatchNorm2d(2), nn.ReLU())}
        return UnitNet(units, nn.Linear(2 * (image_size - 2) ** 2, num_classes),
                       input_shape=(in_channels, image_size, image_size), name="mut_bn_net")
    monkeypatch.setitem(BACKBONES, "mut_bn_net", with_bn)
    net = build_backbone("mut_bn_net", 3, 1, image_size=8)
    bn = net.unit("conv")[1]
    assert int(bn.num_batches_tracked) == 0 and net.training and bn.training


class _Act(nn.Module):
    """A unit holding a function, whose repr names the function (and its memory address)."""

    def __init__(self):
        super().__init__()
        self.fn = lambda x: x.clamp_min(0)

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self):
        return f"fn={self.fn}"


def test_definition_digest_leaves_out_memory_addresses():
    # kills: definition_digest's `re.sub(r" at 0x...", "", repr(net))` dropped (two builds of one definition differ)
    from transferkit.backbones import definition_digest

    def build():
        return UnitNet({"act": _Act(), "flat": nn.Flatten(1)}, nn.Linear(4, 2), input_shape=(1, 2, 2))
    a, b = build(), build()
    assert " at 0x" in repr(a)
    assert definition_digest(a) == definition_digest(b)
    assert definition_digest(a) != definition_digest(UnitNet({"flat": nn.Flatten(1)}, nn.Linear(4, 2)))


def test_torchvision_weights_into_another_backbone_name_the_resnet18_it_expects():
    # kills: load_torchvision_weights' resnet18 check dropped (an "unexpected torchvision key" instead)
    from transferkit.backbones import load_torchvision_weights, resnet18
    sd = _tv_state_dict(resnet18(10, image_size=32))
    with pytest.raises(TransferkitError, match="expects a resnet18 UnitNet, got 'lenet'"):
        load_torchvision_weights(lenet(10), sd)


# ---- heads ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cosine", "prototype"])
@pytest.mark.parametrize("scale", [float("inf"), float("nan")])
def test_a_head_refuses_a_scale_that_is_not_finite(kind, scale):
    # kills: `math.isfinite(scale)` dropped from _check_scale (logits of inf * cos, nan after a step)
    from transferkit.heads import make_head
    with pytest.raises(TransferkitError, match="finite scale"):
        make_head(kind, 4, 2, scale=scale)


def test_a_linear_head_without_bias_has_none():
    # kills: LinearHead passing `bias=True` to nn.Linear whatever its `bias` says
    from transferkit.heads import make_head
    head = make_head("linear", 4, 2, bias=False)
    assert head.bias is None and [n for n, _ in head.named_parameters()] == ["weight"]


def test_a_cosine_heads_rows_start_as_a_linear_layers():
    # kills: CosineHead's `kaiming_uniform_(weight, a=sqrt(5))` (nn.Linear's init, |w| <= 1/sqrt(D)) made `normal_`
    from transferkit.heads import CosineHead
    torch.manual_seed(0)
    w = CosineHead(64, 10).weight.detach()
    assert float(w.abs().max()) <= 1 / 64 ** 0.5
    assert float(w.abs().max()) > 0.9 / 64 ** 0.5  # uniform over the whole bound, not all near zero


def test_a_lazy_linear_head_has_no_final_layer_to_retarget():
    # kills: final_layer's `not is_lazy(head.weight)` dropped (a LazyLinear retargeted as a 0-input LinearHead)
    from transferkit.heads import final_layer, retargeted_head
    assert final_layer(nn.LazyLinear(3)) is None
    assert retargeted_head(nn.LazyLinear(3), [1, 0]) is None


def test_the_final_layer_of_a_sequential_head_is_found_past_a_softmax():
    # kills: final_layer's skip of stateless children (`if not _has_state(child): continue`) dropped
    from transferkit.heads import final_layer, retargeted_head
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 3), nn.Softmax(1))
    assert final_layer(head) == (["0"], head[0])
    new = retargeted_head(head, [2, 0])
    x = torch.randn(5, 4)
    assert torch.allclose(new[0](x), head[0](x)[:, [2, 0]])


def test_a_retargeted_cosine_head_keeps_a_fixed_scale_fixed():
    # kills: _new_rows_layer's `learn_scale=learn` dropped (a fixed scale made a learned parameter)
    from transferkit.heads import CosineHead, retargeted_head
    new = retargeted_head(CosineHead(4, 3, scale=5.0, learn_scale=False), [2, 0])
    assert "scale" not in dict(new.named_parameters()) and float(new.scale) == 5.0


@pytest.mark.parametrize("head", [nn.Linear(4, 3, bias=False),
                                  nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3, bias=False))])
def test_a_retargeted_head_without_bias_gets_none(head):
    # kills: _new_rows_layer's `bias=old.bias is not None` dropped (a bias added to a head that had none)
    from transferkit.heads import final_layer, retargeted_head
    new = retargeted_head(head, [1, None])
    assert final_layer(new)[1].bias is None


def test_a_retargeted_head_takes_the_mode_of_the_old_layer():
    # kills: retargeted_head's `new.train(old.training)` dropped (a new layer in training mode inside an eval head)
    from transferkit.heads import retargeted_head
    head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    new = retargeted_head(head, [0, 1])
    assert not any(m.training for m in new.modules())


def test_rows_after_a_new_row_are_still_copied():
    # kills: retargeted_head's `continue` past a new row (None) made `break` (the later rows left fresh)
    from transferkit.heads import retargeted_head
    torch.manual_seed(0)
    head = nn.Linear(4, 3)
    new = retargeted_head(head, [None, 2, 0])
    assert torch.equal(new.weight[1:], head.weight[[2, 0]]) and torch.equal(new.bias[1:], head.bias[[2, 0]])
    assert not torch.equal(new.weight[0], head.weight[0])


def test_retargeting_an_mlp_head_leaves_the_callers_head_as_it_was():
    # kills: retargeted_head's `copy.deepcopy(head)` dropped (the caller's head given the new final layer)
    from transferkit.heads import retargeted_head
    head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    last = head[2]
    new = retargeted_head(head, [0, 1])
    assert head[2] is last and new is not head and new[2].out_features == 2


def test_the_final_layer_of_a_nested_sequential_head_is_replaced_where_it_is():
    # kills: retargeted_head setting the new layer on the outer head (`parent = out`) instead of its own parent
    from transferkit.heads import retargeted_head
    torch.manual_seed(0)
    head = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Sequential(nn.Linear(4, 3)))
    new = retargeted_head(head, [2, 1])
    x = torch.randn(5, 4)
    assert isinstance(new[0], nn.Sequential) and new[1][0].out_features == 2
    assert torch.allclose(new(x), head(x)[:, [2, 1]])


@pytest.mark.parametrize("dim", [0, 2.5])
def test_make_head_refuses_an_input_size_that_is_not_a_whole_number_above_zero(dim):
    # kills: make_head's `is_whole(dim, 1)` check dropped (a 0-input head built, or torch's TypeError)
    from transferkit.heads import make_head
    with pytest.raises(TransferkitError, match="input size"):
        make_head("linear", dim, 2)


# ---- networks: files ----------------------------------------------------------------------------------
def test_a_legacy_torch_save_pickle_is_named_as_a_pytorch_file(tmp_path):
    # kills: _torch_file's check of a bare pickle (first byte 0x80) dropped (only zip archives named)
    from transferkit.networks import read_network_file
    path = tmp_path / "weights.pt"
    torch.save(tiny_net(3).state_dict(), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(TransferkitError, match=r"is a PyTorch file \(torch.save\)"):
        read_network_file(path)


def test_a_zip_archive_that_is_no_torch_save_is_not_called_one(tmp_path):
    # kills: _torch_file calling any zip archive a torch.save file (its `data.pkl` check dropped)
    import zipfile

    from transferkit.networks import read_network_file
    path = tmp_path / "weights.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a network")
    with pytest.raises(TransferkitError) as e:
        read_network_file(path)
    assert "PyTorch file" not in str(e.value)


def test_a_state_with_an_extra_tensor_names_the_first_unexpected_one():
    # kills: check_state_fits' part naming the unexpected tensors dropped (an extra tensor passed as fitting)
    from transferkit.networks import check_state_fits
    net = tiny_net(3)
    state = {**net.state_dict(), "units.extra.weight": torch.zeros(2)}
    with pytest.raises(TransferkitError, match=r"1 unexpected \(first 'units\.extra\.weight'\)"):
        check_state_fits(net, state, "pre-trained network n.safetensors")


def test_stored_class_names_that_are_not_json_are_refused_by_name(tmp_path):
    # kills: stored_classes' `except ValueError` made `except KeyError` (json's own decode error escapes)
    from transferkit.networks import stored_classes
    with pytest.raises(TransferkitError, match="must be a JSON list of class names"):
        stored_classes(tmp_path / "n.safetensors", {"class_names": "cat, dog"})


def test_a_missing_network_file_is_named_as_missing(tmp_path):
    # kills: read_network_file's `path.exists()` check dropped
    from transferkit.networks import read_network_file
    with pytest.raises(TransferkitError, match="does not exist"):
        read_network_file(tmp_path / "none.safetensors")


def test_the_dry_run_of_unit_output_shapes_leaves_batchnorm_statistics():
    # kills: `evaluating(self)` dropped from unit_output_shapes' dry run (counted as a training batch of zeros)
    net = UnitNet({"conv": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))}, nn.LazyLinear(3),
                  input_shape=(1, 5, 5))
    bn = net.unit("conv")[1]
    assert net.unit_output_shapes()["conv"] == (2, 3, 3)
    assert int(bn.num_batches_tracked) == 0 and bn.training


def test_a_state_with_an_input_norm_in_a_first_unit_not_called_stem_gives_it_one():
    # kills: load_state_dict looking for the InputNorm under `units.stem.norm.` whatever the first unit's name
    from transferkit.unitnet import add_input_norm
    src = lenet(10)
    add_input_norm(src, [0.5], [0.25])
    dst = lenet(10)
    dst.load_state_dict(src.state_dict())
    assert float(dst.unit("conv1").norm.std) == 0.25


def test_a_wrong_input_to_a_network_whose_dry_run_fails_is_still_named_as_the_input():
    # kills: _activation_hint's `except Exception` narrowed (the dry run's own refusal raised instead of the input's)
    net = UnitNet({"conv": nn.Conv2d(1, 2, 5)}, nn.LazyLinear(3), input_shape=(1, 3, 3))
    with pytest.raises(TransferkitError, match=r"got input of shape \(1, 2, 8, 8\); the network was built for N x 1"):
        net(torch.zeros(1, 2, 8, 8))


def test_torchvision_weights_into_a_network_without_a_classifier_skip_the_fc():
    # kills: load_torchvision_weights' `nk not in own` skip of the fc dropped (a KeyError on a headless net)
    from transferkit.backbones import load_torchvision_weights, resnet18
    sd = _tv_state_dict(resnet18(10, image_size=32))
    net = resnet18(10, image_size=32)
    net.reset_classifier(0)
    assert load_torchvision_weights(net, sd, normalize=False)["skipped"] == ["head.weight", "head.bias"]


def test_a_network_given_as_the_backbone_name_is_pointed_to_fit_net():
    # kills: check_backbone's refusal of a name that is no text dropped (an unknown-name error instead)
    from transferkit.backbones import check_backbone
    with pytest.raises(TransferkitError, match=r"got a UnitNet; give your own network to fit\(net=\.\.\.\)"):
        check_backbone(tiny_net(3))
