"""Tests from a mutation pass over unitnet.py, networks.py and fitting.py: which unit names a UnitNet
refuses, how unit boundaries given by index or name map to the steps run (the pool only when crossing
into the head), forward_features of no layers, when cached unit shapes are recomputed, the mode and
dtype of a new classifier, the layers reset_classifier names as dropped, parameter order and
de-duplication, input normalisation, how a wrong input is named; what a saved network file records
(class names beside a prototype head's options), what loading one refuses and names, the caller's
random state, network digests; and how build_method / fit_for_target / evaluate_on / retarget_head /
source_head_rows match head rows to classes. Each test fails when the code it names is changed in
the way its comment says.

Judged equivalent, so not tested: `_head_shape`'s `n > 0` -> `n >= 0`, load_state_dict's `not in
self.state_dict()` (add_input_norm returns early), the `int(s)` of input_shape, `_added_parameters` at
image_size 28 (the built-in backbones' state keys do not depend on it), file_channels' `len(found) == 1`
-> `found`, `.detach().cpu()` -> `.detach()` on CPU."""

import json

import helpers
import pytest
import torch
from torch import nn

from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.unitnet import UnitNet, _shape3


def _conv_net():
    """One 4-d conv unit, a Flatten pool and a linear head: the pool changes the shape."""
    torch.manual_seed(0)
    return UnitNet({"a": nn.Conv2d(1, 2, 3)}, nn.Linear(2 * 6 * 6, 3), input_shape=(1, 8, 8))


# ---- unitnet: shapes and names ---------------------------------------------------------------------
def test_an_image_one_pixel_high_is_a_valid_size():
    # kills: _shape3's `min(h, w) >= 1` made `> 1`
    assert _shape3(3, (1, 5)) == (3, 1, 5) and _shape3(1, 1) == (1, 1, 1)


@pytest.mark.parametrize("name", ["a.b", "a:b", "all"])
def test_unit_names_with_a_dot_or_a_colon_or_all_are_refused(name):
    # kills: the `"." not in n`, the `":" not in n` and the ALL_UNITS part of the unit name check dropped
    with pytest.raises(TransferkitError, match=f"invalid unit name {name!r}"):
        UnitNet({name: nn.Identity()}, nn.Linear(2, 2))


# ---- unitnet: boundaries ----------------------------------------------------------------------------
def test_a_negative_unit_index_counts_from_the_head():
    # kills: `i = where + n` (n = units with the head) made `where + L` (feature units only)
    net = helpers.tiny_net(3)
    assert net.steps_before(-1) == net.steps_before("head") == [net.unit("unit1"), net.unit("unit2")]
    assert net.steps_before(-3) == []


def test_a_unit_index_past_the_end_is_refused_by_range():
    # kills: the upper bound of `0 <= i <= n` dropped (an IndexError instead of the message)
    net = helpers.tiny_net(3)
    with pytest.raises(TransferkitError, match="unit index 4 out of range for 3 units"):
        net.forward_units(torch.rand(1, 1, 28, 28), 0, 4)


def test_a_bool_is_not_a_unit_index():
    # kills: the `isinstance(where, bool)` refusal dropped (True read as index 1)
    net = helpers.tiny_net(3)
    with pytest.raises(TransferkitError, match="unit boundaries are unit names or indices, got True"):
        net.forward_units(torch.rand(1, 1, 28, 28), True)


def test_the_head_boundary_is_before_the_pool():
    # kills: `where == HEAD: return L` made `L + 1` (the pool skipped when starting at the head)
    net = _conv_net()
    x = torch.rand(2, 1, 8, 8)
    feat = net.forward_units(x, 0, "head")
    assert feat.shape == (2, 2, 6, 6) and net.steps_before("head") == [net.unit("a")]
    assert torch.equal(net.forward_units(feat, "head"), net(x))


# ---- unitnet: forward_features and shapes -----------------------------------------------------------
def test_forward_features_of_no_layers_is_an_empty_dict():
    # kills: the `if not want: return out` early return dropped (max() of an empty dict)
    assert helpers.tiny_net(3).forward_features(torch.rand(1, 1, 28, 28), []) == {}


def test_unit_output_shapes_refresh_recomputes_after_a_unit_is_replaced():
    # kills: `refresh` ignored (the cached shapes kept)
    net = _conv_net()
    assert net.unit_output_shapes()["a"] == (2, 6, 6)
    net._modules["units"]["a"] = nn.Conv2d(1, 2, 3, padding=1)
    net.head = nn.Linear(2 * 8 * 8, 3)
    assert net.unit_output_shapes()["a"] == (2, 6, 6)  # cached
    assert net.unit_output_shapes(refresh=True)["a"] == (2, 8, 8)
    assert net.unit_output_shapes()["embedding"] == (128,)


# ---- unitnet: classifier ----------------------------------------------------------------------------
def _mlp_head(hidden: int) -> nn.Sequential:
    layers = []
    for _ in range(hidden):
        layers += [nn.Linear(4, 4), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(4, 3))


def test_reset_classifier_names_up_to_four_dropped_layers_without_an_ellipsis():
    # kills: `len(hidden) > 4` made `>= 4`, and `hidden[:4]` made `hidden[:3]`
    net = UnitNet({"a": nn.Flatten(1)}, _mlp_head(4), input_shape=(4,))
    with pytest.warns(UserWarning, match=r"\(0: Linear\(4 -> 4\), 2: Linear\(4 -> 4\), 4: Linear\(4 -> 4\), "
                                         r"6: Linear\(4 -> 4\)\) are dropped"):
        net.reset_classifier(2)
    net = UnitNet({"a": nn.Flatten(1)}, _mlp_head(5), input_shape=(4,))
    with pytest.warns(UserWarning, match=r"6: Linear\(4 -> 4\), \.\.\.\) are dropped"):
        net.reset_classifier(2)


def test_a_new_classifier_takes_the_networks_mode():
    # kills: `head.train(self.training)` dropped from _new_classifier (a fresh head in training mode)
    net = helpers.tiny_net(3).eval()
    assert not net.reset_classifier(5).training and not net.reset_classifier(2, "cosine").training
    assert net.train().reset_classifier(4).training


def test_a_new_classifier_takes_the_networks_dtype():
    # kills: `.to(device=ref.device, dtype=ref.dtype)` dropped from the new head
    net = helpers.tiny_net(3).double()
    net.reset_classifier(5)
    assert net.head.weight.dtype == torch.float64
    assert net(torch.rand(2, 1, 28, 28, dtype=torch.float64)).shape == (2, 5)


# ---- unitnet: freezing ------------------------------------------------------------------------------
def test_a_unit_without_parameters_is_not_tunable():
    # kills: tunable_unit_names listing every unit (the parameter check dropped)
    net = UnitNet({"a": nn.Conv2d(1, 2, 3), "r": nn.ReLU(), "f": nn.Flatten(1)}, nn.Linear(72, 3))
    assert net.tunable_unit_names() == ["a", "head"]


def test_parameters_of_are_in_unit_order():
    # kills: parameters_of walking the units in another order (sorted names: the head first)
    net = helpers.tiny_net(3)
    assert [id(p) for p in net.parameters_of("all")] == [id(p) for p in net.parameters()]
    assert [id(p) for p in net.parameters_of(["head", "unit1"])] == [
        id(p) for p in [*net.unit("unit1").parameters(), *net.head.parameters()]]


def test_a_head_tied_to_a_units_weight_after_construction_is_counted_once():
    # kills: the `id(p) not in seen` de-duplication in parameters_of dropped
    net = UnitNet({"a": nn.Linear(4, 4)}, nn.Linear(4, 3))
    net.head = nn.Linear(4, 4, bias=False)
    net.head.weight = net.unit("a").weight  # tied weights, set after the units were checked
    assert len(net.parameters_of("all")) == 2 and net.num_parameters() == 16 + 4


def test_hidden_layers_of_a_head_of_chosen_rows_are_those_of_the_head_it_wraps():
    # kills: hidden_layers not unwrapping a HeadRows (its layers named "head.0", ...)
    from transferkit.heads import HeadRows
    from transferkit.unitnet import hidden_layers
    assert hidden_layers(HeadRows(_mlp_head(2), [2, 0])) == ["0: Linear(4 -> 4)", "2: Linear(4 -> 4)"]


class _ScaledHead(nn.Module):
    """A head of one's own with a parameter of its own before its linear layer."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x * self.gain)


def test_a_heads_own_parameters_are_labelled_head():
    # kills: the label `n or 'head'` made `n` (the head's own layer shown as ": _ScaledHead")
    from transferkit.unitnet import hidden_layers
    assert hidden_layers(_ScaledHead()) == ["head: _ScaledHead"]


# ---- unitnet: input normalisation -------------------------------------------------------------------
def test_a_second_input_norm_keeps_the_first():
    # kills: add_input_norm's early return of an existing InputNorm dropped
    from transferkit.unitnet import add_input_norm
    net = helpers.seeded_lenet()
    first = add_input_norm(net, [0.0], [1.0])
    again = add_input_norm(net, [0.5], [2.0])
    assert again is first is net.unit("conv1").norm and again.mean.flatten().tolist() == [0.0]


def test_an_input_norm_needs_a_sequential_first_unit():
    # kills: add_input_norm's nn.Sequential check dropped (the conv replaced by the norm alone)
    from transferkit.unitnet import add_input_norm
    net = _conv_net()
    with pytest.raises(TransferkitError, match="the first unit 'a' must be an nn.Sequential to take an InputNorm"):
        add_input_norm(net, [0.5], [0.5])
    assert isinstance(net.unit("a"), nn.Conv2d)


# ---- unitnet: naming a wrong input ------------------------------------------------------------------
def test_an_input_of_the_logits_shape_is_not_called_a_units_output():
    # kills: the `n != HEAD` exclusion in _activation_hint dropped (logits named as cached activations)
    net = helpers.tiny_net(3)
    with pytest.raises(TransferkitError, match=r"got input of shape \(2, 3\); the network was built for "
                                               r"N x 1 x 28 x 28 \(") as e:
        net(torch.rand(2, 3))
    assert "That is the shape" not in str(e.value)
    with pytest.raises(TransferkitError, match="That is the shape of the output of unit2 / embedding"):
        net(torch.rand(2, 16))


def test_an_unknown_layer_lists_the_embedding_among_the_known_names():
    # kills: _feature_index's UnknownNameError listing only unit_names (without "embedding")
    from transferkit.errors import UnknownNameError
    with pytest.raises(UnknownNameError, match=r"unknown unit 'embeding'; known: embedding, head, unit1, unit2 "
                                               r"\(did you mean 'embedding'\?\)"):
        helpers.tiny_net(3).forward_features(torch.rand(1, 1, 28, 28), ["embeding"])


class _Buffered(nn.Module):
    """A parameter-free unit whose first buffer is an integer counter, then a float scale."""

    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, x):
        return x * self.scale


def test_a_network_without_parameters_takes_its_dtype_from_a_floating_buffer():
    # kills: _ref_tensor returning the first buffer even when it is not floating point (an integer head)
    net = UnitNet({"a": _Buffered()}, nn.Identity(), input_shape=(4,))
    head = net.reset_classifier(3)
    assert head.weight.dtype == torch.float32 and net(torch.ones(2, 4)).shape == (2, 3)


# ---- networks: digests and files --------------------------------------------------------------------
def test_network_digest_is_sixteen_hex_digits_of_the_weights():
    # kills: the digest cut to another length than 16
    import copy
    import hashlib

    from transferkit.engine import content_text
    from transferkit.networks import network_digest
    net = helpers.tiny_net(3)
    digest = network_digest(net)
    assert digest == hashlib.sha256(content_text(net).encode()).hexdigest()[:16] and len(digest) == 16
    other = copy.deepcopy(net)
    assert network_digest(other) == digest
    with torch.no_grad():
        other.head.bias[0] += 1
    assert network_digest(other) != digest


def test_save_network_refuses_class_names_of_another_count(tmp_path):
    # kills: the count in save_network's class_names check (`len(names) == (rows or len(names))`) dropped
    from transferkit.networks import save_network
    net = helpers.seeded_lenet()
    with pytest.raises(TransferkitError, match=r"class_names must name the 10 rows of the head, in order, as text "
                                               r"\(the source domain's class_names\), got \['a', 'b'\]"):
        save_network(net, tmp_path / "n.safetensors", class_names=["a", "b"])
    assert not (tmp_path / "n.safetensors").exists()


def test_a_loaded_network_is_in_eval_mode(tmp_path):
    # kills: `net.eval()` dropped from load_network_file
    from transferkit.networks import load_network, load_network_file, save_network
    net = helpers.seeded_lenet()
    path = save_network(net, tmp_path / "n.safetensors")
    assert not load_network(path, "lenet").training
    into = helpers.seeded_lenet(seed=1).train()
    load_network_file(into, path)
    assert not into.training and torch.equal(into.head.weight, net.head.weight)


def test_a_built_in_network_without_an_input_shape_is_saved_without_the_added_parameter_check(tmp_path):
    # kills: `or net.input_shape is None` dropped from _added_parameters (a TypeError on input_shape[0])
    from transferkit.networks import load_network, save_network
    net = helpers.seeded_lenet()
    net.input_shape = None
    path = save_network(net, tmp_path / "n.safetensors", class_names=[str(i) for i in range(10)])
    assert load_network(path, "lenet").class_names == [str(i) for i in range(10)]


def test_load_network_counts_the_rows_by_the_last_head_weight(tmp_path, plugin):
    # kills: load_network counting the rows by `heads[0]` (an MLP head's hidden layer) instead of `heads[-1]`
    from transferkit.backbones import BACKBONES
    from transferkit.networks import load_network, save_network

    def mlp(num_classes, in_channels=1, image_size=28):
        head = nn.Sequential(nn.Linear(in_channels * image_size * image_size, 8), nn.ReLU(), nn.Linear(8, num_classes))
        return UnitNet({"flat": nn.Flatten(1)}, head, name="mut_mlp", input_shape=(in_channels, image_size, image_size))
    BACKBONES["mut_mlp"] = mlp  # the plugin fixture forgets it afterwards
    torch.manual_seed(0)
    net = mlp(3)
    back = load_network(save_network(net, tmp_path / "mlp.safetensors"), "mut_mlp")
    assert back.num_classes == 3 and back.class_names is None
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in net.state_dict().items())


def test_a_file_without_class_names_or_head_weight_is_refused_by_load_network(tmp_path):
    # kills: load_network's `rows is not None` check dropped
    from safetensors.torch import save_file

    from transferkit.networks import load_network
    net = helpers.seeded_lenet()
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("head.")},
              str(tmp_path / "headless.safetensors"))
    with pytest.raises(TransferkitError, match=r"headless.safetensors names no classes and holds no head weight to "
                                               r"count its rows by"):
        load_network(tmp_path / "headless.safetensors", "lenet")


def test_a_file_neither_channel_count_fits_is_built_grey(tmp_path):
    # kills: load_network's fallback channels `or 1` made `or 3`
    from transferkit.backbones import build_backbone
    from transferkit.networks import load_network, save_network
    torch.manual_seed(0)
    path = save_network(build_backbone("lenet", 4, in_channels=1, image_size=32), tmp_path / "n32.safetensors")
    with pytest.raises(TransferkitError, match=r"does not fit backbone 'lenet': 1 of another shape \(first "
                                               r"'units.fc1.1.weight'"):
        load_network(path, "lenet")  # built for 28 x 28 grey images: only fc1 differs


def test_load_network_of_a_folder_or_a_missing_file_names_it(tmp_path):
    # kills: load_network's `path.is_file()` check dropped
    from transferkit.networks import load_network
    for path in (tmp_path, tmp_path / "missing.safetensors"):
        with pytest.raises(TransferkitError, match=f"load_network: {path} does not exist or is not a file"):
            load_network(path, "lenet")


def test_stored_class_names_that_are_not_text_are_refused(tmp_path):
    # kills: stored_classes checking only that the metadata is a JSON list (not that its items are text)
    from safetensors.torch import save_file

    from transferkit.networks import load_network
    net = helpers.seeded_lenet()
    path = tmp_path / "ids.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"class_names": json.dumps(list(range(10)))})
    with pytest.raises(TransferkitError, match=r"its metadata class_names must be a JSON list of class names, got "
                                               r"'\[0, 1, 2"):
        load_network(path, "lenet")


def test_a_file_that_misses_tensors_names_the_first_missing_one(tmp_path):
    # kills: check_state_fits naming `missing[-1]` instead of the first missing tensor
    from safetensors.torch import save_file

    from transferkit.networks import load_network_file
    net = helpers.seeded_lenet()
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("units.conv2.")}, str(path))
    with pytest.raises(TransferkitError, match=r"does not fit backbone 'lenet': 2 tensor\(s\) missing \(first "
                                               r"'units.conv2.0.weight'\)\. It was saved"):
        load_network_file(helpers.seeded_lenet(), path)


def test_only_a_prototype_head_takes_a_files_prototype_options():
    # kills: restore_head's `isinstance(net.head, PrototypeHead)` dropped (a linear head given a metric)
    from transferkit.networks import restore_head
    net = helpers.seeded_lenet()
    restore_head(net, {"prototype_head": json.dumps({"metric": "cosine", "scale": 5.0})})
    assert not hasattr(net.head, "metric")


# ---- fitting ------------------------------------------------------------------------------------------
def test_a_head_over_the_same_classes_is_kept_as_it_is():
    # kills: retarget_head's early return for source classes equal to the target's dropped (a copied head)
    from transferkit.fitting import retarget_head
    net = helpers.tiny_net(3)
    kept = net.get_classifier()
    assert retarget_head(net, ["a", "b", "c"], ["a", "b", "c"]) == [] and net.get_classifier() is kept


def test_a_retargeted_head_takes_the_networks_mode():
    # kills: `new.train(net.training)` dropped from retarget_head (a fresh head in training mode in an eval net)
    from transferkit.fitting import retarget_head
    net = helpers.tiny_net(3).eval()
    net.head.train()  # the old head's own mode is not the one the new head takes
    assert retarget_head(net, ["a", "b", "c"], ["c", "a", "z"]) == ["z"]
    assert not net.get_classifier().training and net.num_classes == 3


def test_evaluate_on_scores_a_network_in_eval_mode():
    # kills: evaluate_on's `forward.eval()` of a module dropped (dropout left on while scoring)
    import copy

    from transferkit.fitting import evaluate_on
    torch.manual_seed(0)
    net = UnitNet({"a": nn.Flatten(1), "drop": nn.Dropout(0.9)}, nn.Linear(28 * 28, 4), input_shape=(1, 28, 28))
    domain = helpers.toy_domain(n=32)
    want = evaluate_on(copy.deepcopy(net).eval(), domain)
    got = evaluate_on(net.train(), domain)
    assert not net.training and got["accuracy"] == want["accuracy"] and got["confusion"] == want["confusion"]


def test_the_argmax_over_all_source_classes_is_not_scored_when_the_target_has_them_all():
    # kills: all_source_classes_fields' `len(set(rows)) >= n` made `>`
    from transferkit.fitting import all_source_classes_fields
    from transferkit.methods.supervised import SourceOnly
    model = SourceOnly(helpers.tiny_net(3)).eval()
    assert all_source_classes_fields(model, [2, 0, 1], helpers.toy_domain(n=9, classes=3)) == {}
    fields = all_source_classes_fields(model, [2, 0], helpers.toy_domain(n=8, classes=2))
    assert fields["n_source_classes"] == 3 and 0 <= fields["accuracy_all_source_classes"] <= 1


def test_a_head_fixed_method_on_a_network_without_a_classifier_is_refused_as_such():
    # kills: build_method's `headless and method.keeps_head_fixed` refusal dropped (a "new rows" error instead)
    from transferkit.fitting import build_method
    from transferkit.methods import get_method
    net = helpers.tiny_net(3)
    net.reset_classifier(0)
    with pytest.raises(TransferkitError, match=r"ft_unit:unit1 trains unit1 and keeps the network's classifier "
                                               r"fixed, but the network has none \(as after reset_classifier\(0\)\)"):
        build_method(get_method("ft_unit:unit1"), net, {}, None, ["a", "b"])


def test_source_head_rows_refuse_a_head_of_another_count_than_its_classes():
    # kills: source_head_rows' `len(head_classes) == num_outputs` check dropped
    from transferkit.fitting import source_head_rows
    from transferkit.methods.supervised import SourceOnly
    with pytest.raises(TransferkitError, match="the network has 3 outputs for 2 source classes"):
        source_head_rows(SourceOnly, ["a", "b"], 3, ["b"])
    assert source_head_rows(SourceOnly, ["a", "b", "c"], 3, ["c", "a"]) == [2, 0]


def test_source_head_rows_of_the_head_s_own_classes_are_none():
    # kills: source_head_rows' early `None` for target classes equal to the head's dropped (identity rows)
    from transferkit.fitting import source_head_rows
    from transferkit.methods.supervised import SourceOnly
    assert source_head_rows(SourceOnly, ["a", "b", "c"], 3, ["a", "b", "c"]) is None


def test_fit_for_target_calls_before_narrowing_with_the_rows_while_the_head_has_every_source_class():
    # kills: fit_for_target's `before_narrowing(method, rows)` call dropped
    from transferkit.engine import Engine, TrainConfig
    from transferkit.fitting import fit_for_target
    from transferkit.methods.supervised import SourceOnly
    seen = []
    method = SourceOnly(helpers.tiny_net(3))
    fit_for_target(method, lambda tag, config=None: Engine(TrainConfig(steps=1, batch_size=8, progress=False), seed=0),
                   ["0", "1", "2"], ["2", "0"], before_narrowing=lambda m, rows: seen.append((rows, m.net.num_classes)),
                   source=helpers.toy_domain(n=16, classes=3))
    assert seen == [([2, 0], 3)] and method.net.num_classes == 2


def test_file_channels_leaves_the_callers_random_state(tmp_path):
    # kills: file_channels' `torch.random.fork_rng()` dropped (its trial builds draw from the caller's RNG)
    from transferkit.networks import file_channels
    state = helpers.seeded_lenet().state_dict()
    before = torch.get_rng_state()
    assert file_channels("lenet", 10, 28, state) == 1
    assert torch.equal(torch.get_rng_state(), before)


def test_save_network_leaves_the_callers_random_state(tmp_path):
    # kills: _added_parameters' `torch.random.fork_rng()` dropped (the fresh build draws from the caller's RNG)
    from transferkit.networks import save_network
    net = helpers.seeded_lenet()
    before = torch.get_rng_state()
    save_network(net, tmp_path / "n.safetensors")
    assert torch.equal(torch.get_rng_state(), before)


def test_a_prototype_head_file_keeps_its_class_names_beside_its_metric(tmp_path):
    # kills: save_network's prototype metadata replacing the class_names metadata instead of joining it
    from transferkit.backbones import build_backbone
    from transferkit.networks import load_network, save_network
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=2, in_channels=1, image_size=28, head="prototype")
    net.head.metric, net.head.scale = "cosine", 3.0
    back = load_network(save_network(net, tmp_path / "p.safetensors", class_names=["x", "y"]), "lenet")
    assert back.class_names == ["x", "y"] and (back.head.metric, back.head.scale) == ("cosine", 3.0)


def test_early_stopping_scores_a_val_of_the_source_classes_on_every_row():
    # kills: fit_for_target's eval_rows set for any val (not only one of the target classes, in their order)
    from transferkit.engine import Engine, TrainConfig
    from transferkit.fitting import fit_for_target
    from transferkit.methods.supervised import SourceOnly
    seen = []
    for val_classes in (3, 2):
        method = SourceOnly(helpers.tiny_net(3))
        fit = method.fit_transfer
        method.fit_transfer = lambda *a, m=method, fit=fit, **kw: seen.append(m.eval_rows) or fit(*a, **kw)
        val = helpers.toy_domain(n=8, classes=val_classes, name="toy/val")
        if val_classes == 2:  # labelled with the target classes, in their order
            val = Domain(val.name, val.images, val.labels, ["2", "0"])
        fit_for_target(method, lambda tag, config=None: Engine(TrainConfig(steps=2, batch_size=8, eval_every=1,
                                                                            progress=False), seed=0),
                       ["0", "1", "2"], ["2", "0"], source=helpers.toy_domain(n=16, classes=3), val=val)
        assert method.eval_rows is None
    assert seen == [None, [2, 0]]


def test_a_replaced_head_names_five_shared_classes_without_an_ellipsis():
    # kills: retarget_head's `len(kept) > 5` made `>= 5`
    from transferkit.fitting import retarget_head
    net = helpers.tiny_net(5)
    net.head = nn.Sequential(nn.Linear(16, 5), nn.BatchNorm1d(5))  # no final linear layer to retarget
    with pytest.warns(UserWarning, match=r"shares with the target \(\['a', 'b', 'c', 'd', 'e'\]\), are kept"):
        assert retarget_head(net, list("abcde"), list("abcdef")) == list("abcdef")
    assert net.num_classes == 6


def test_the_output_size_of_a_head_without_out_features_is_read_in_the_networks_dtype():
    # kills: _head_shape's dry run input made without `dtype=ref.dtype` (float32 into a float64 head)
    net = UnitNet({"a": nn.Flatten(1)}, nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)), input_shape=(4,)).double()
    assert net.num_classes == 3 and net.unit_output_shapes()["head"] == (3,)


def test_a_wrong_input_to_a_network_of_no_input_shape_is_torch_s_error():
    # kills: _input_problem's `self.input_shape is not None` guard dropped (a TypeError joining None)
    net = UnitNet({"a": nn.Conv2d(1, 2, 3)}, nn.Flatten(1))
    with pytest.raises(RuntimeError) as e:
        net(torch.rand(2, 3, 8, 8))
    assert not isinstance(e.value, TransferkitError) and "channels" in str(e.value)


def test_build_method_raises_the_methods_own_error_before_the_missing_rows():
    # kills: build_method's `cls(copy.deepcopy(net), **options)` before re-raising source_head_rows' refusal dropped
    from transferkit.fitting import build_method
    from transferkit.methods import get_method
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        build_method(get_method("source_only"), helpers.tiny_net(3), {"bogus": 1}, ["0", "1", "2"], ["z"])


def test_build_method_without_target_classes_keeps_the_head():
    # kills: build_method's `target_classes is not None` guard before retarget_head dropped
    from transferkit.fitting import build_method
    from transferkit.methods import get_method
    net = helpers.tiny_net(3)
    head = net.head
    assert build_method(get_method("finetune"), net, {}, ["0", "1", "2"], None).net.head is head
