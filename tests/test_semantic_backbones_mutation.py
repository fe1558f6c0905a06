"""Tests from a mutation pass over methods/semantic.py, methods/image_unit.py and backbones.py.

Each test kills at least one mutant that the earlier tests (test_semantic, test_backbones,
test_heads, the image-unit tests of test_finetune_methods and test_flex) let through; the
mutant is named in the test's comment. Expected values are written out in plain torch on
tiny tensors from seed 000 §3.3 (eq. 5-7, ψ = <s/|s|, f(x)>), seed 002 §5.4 (identity-
initialised image units) and the docstrings of UnitNet.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from transferkit.backbones import UnitNet, from_modules, from_sequential
from transferkit.errors import TransferkitError
from transferkit.methods.semantic import SemanticTransfer


def _entropy_by_hand(queries, support, tau, scale=None):
    """Mean over queries of H(softmax(ψ(x, support) / τ)), ψ = <s / |s|, f(x)> (seed 000 eq. 5 / 7)."""
    if scale is not None:
        queries = scale * queries / queries.norm(dim=1, keepdim=True)
    sim = queries @ (support / support.norm(dim=1, keepdim=True)).t()
    p = torch.softmax(sim / tau, dim=1)
    return float(-(p * p.log()).sum(1).mean())


def _tiny_net(d_in=3, d=4, classes=2):
    torch.manual_seed(0)
    return from_sequential(nn.Sequential(nn.Linear(d_in, d), nn.Linear(d, classes)))


_F_T = torch.tensor([[1.0, 0.0, 0.0, 0.5], [0.0, 2.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
_Y_T = torch.tensor([0, 1, 0, 1])
_F_U = torch.tensor([[0.5, 1.0, 0.0, 0.0], [2.0, 0.0, 1.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
_F_S = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def _centroids():
    return torch.stack([_F_T[_Y_T == c].mean(0) for c in (0, 1)])


# ---- semantic.py -------------------------------------------------------------------------------
def test_target_entropy_term_is_weighted_by_its_own_weight():
    # mutant: st_target_entropy weighted by w["source_entropy"]
    method = SemanticTransfer(_tiny_net(), beta=0.5, source_entropy=0.25, metric_ce=0.0, target_entropy=2.0,
                              source_support="examples", tau_target=1.5)
    terms = method.semantic_terms(_F_T, _Y_T, _F_U, _F_S)
    assert set(terms) == {"st_source_entropy", "st_target_entropy"}
    assert float(terms["st_target_entropy"]) == pytest.approx(0.5 * 2.0 * _entropy_by_hand(_F_U, _centroids(), 1.5),
                                                              rel=1e-5)
    assert float(terms["st_source_entropy"]) == pytest.approx(0.5 * 0.25 * _entropy_by_hand(_F_U, _F_S, 2.0),
                                                              rel=1e-5)


def test_target_entropy_term_uses_the_query_scale():
    # mutant: eq. 7 drops query_scale (the seed's ψ there, s · cos everywhere else)
    method = SemanticTransfer(_tiny_net(), beta=1.0, source_entropy=0.0, metric_ce=0.0, tau_target=1.0,
                              query_scale=6.0, source_support="examples")
    h = float(method.semantic_terms(_F_T, _Y_T, _F_U, _F_S)["st_target_entropy"])
    assert h == pytest.approx(_entropy_by_hand(_F_U, _centroids(), 1.0, scale=6.0), rel=1e-5)
    assert abs(h - _entropy_by_hand(_F_U, _centroids(), 1.0)) > 1e-3  # the values tell the mutant apart


@pytest.mark.parametrize("kw, message", [
    ({"source_support": "batch"}, "source_support must be 'prototypes' or 'examples', got 'batch'"),
    ({"predict": "logits"}, "predict must be 'head' or 'centroids', got 'logits'"),
])
def test_lext_names_a_bad_option_when_built(kw, message):
    # mutants: the source_support / predict checks dropped
    with pytest.raises(TransferkitError, match=message):
        SemanticTransfer(_tiny_net(), **kw)


def test_fitted_lext_predicts_by_scaled_cosine_to_the_target_centroids():
    # mutant: forward drops query_scale
    net = _tiny_net()
    method = SemanticTransfer(net, query_scale=5.0).eval()
    method.target_centroids = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 3.0, 4.0, 0.0]])
    x = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.3, 3.0]])
    with torch.no_grad():
        f = net.forward_features(x)
        want = 5.0 * F.normalize(f, dim=1) @ torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.8, 0.0]]).t()
        assert torch.allclose(method(x), want, atol=1e-5)


def test_head_layer_needs_as_many_source_as_target_classes():
    # mutant: the class-count check weakened to n_s >= n_t
    from transferkit.domain import Domain
    torch.manual_seed(0)
    net = from_sequential(nn.Sequential(nn.Flatten(1), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 3)))
    method = SemanticTransfer(net, layers=["unit3", "head"])
    src = Domain("s", torch.rand(6, 1, 4, 4), torch.arange(6) % 3, ["a", "b", "c"])
    tgt = Domain("t", torch.rand(4, 1, 4, 4), torch.arange(4) % 2, ["d", "e"])
    with pytest.raises(TransferkitError, match="only when source and target have as many classes .* here 3 and 2"):
        method.prepare({"source": src, "target": tgt, "unlabeled": tgt})


# ---- image_unit.py ----------------------------------------------------------------------------
def _lenet_like():
    torch.manual_seed(0)
    return from_sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(1), nn.Linear(4 * 6 * 6, 2)),
                           input_shape=(3, 8, 8))


def test_unet_decoder_reads_the_encoders_first_level_through_its_skip():
    # mutant: the e1 skip into dec2 dropped (torch.cat([up, 0 * e1]))
    from transferkit.methods.image_unit import EncoderDecoder
    torch.manual_seed(0)
    unit = EncoderDecoder(3, width=4)
    with torch.no_grad():
        nn.init.normal_(unit.out.weight)  # an output layer that has learnt something
        unit.enc2[0].weight.zero_()
        unit.enc2[0].bias.zero_()  # the deep path gives 0: only the skip carries e1 to the decoder
    x = torch.rand(2, 3, 8, 8)
    before = unit(x).detach()
    with torch.no_grad():
        unit.enc1[0].bias.add_(1.0)
    assert (unit(x) - before).abs().max() > 1e-3


def test_unet_output_layer_sees_the_input_through_its_skip():
    # mutant: the x skip into the output layer dropped (torch.cat([d, 0 * x])); x + out(cat[d, x]) by hand
    from transferkit.methods.image_unit import EncoderDecoder
    unit = EncoderDecoder(3, width=4)
    with torch.no_grad():
        for conv in (unit.enc1[0], unit.enc2[0], unit.dec2[0]):
            conv.weight.zero_()
            conv.bias.zero_()  # d = 0
        unit.out.weight[:, 4:, 1, 1] = torch.eye(3)  # the output layer copies the input channels
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(unit(x), 2 * x)


def test_inserting_an_image_unit_refreshes_cached_shapes_and_names_a_second_one():
    # mutants: the shape cache kept after the surgery; the duplicate-name check dropped
    from transferkit.methods.image_unit import insert_image_unit, make_image_unit
    net = _lenet_like()
    assert net.unit_output_shapes()["unit1"] == (4, 6, 6)  # cached before the surgery
    insert_image_unit(net, make_image_unit("colour", 3))
    assert net.unit_names[0] == "image" and net.unit_output_shapes()["image"] == (3, 8, 8)
    with pytest.raises(TransferkitError, match="the network already has a unit 'image'"):
        insert_image_unit(net, make_image_unit("colour", 3))


@pytest.mark.parametrize("kind, no_decay", [("colour", True), ("stn", True), ("unet", False)])
def test_identity_initialised_units_get_no_weight_decay(kind, no_decay):
    # mutant: stn dropped from NO_DECAY (its identity theta would decay toward a zero map)
    from transferkit.methods.image_unit import ImageUnit
    method = ImageUnit(_lenet_like(), kind=kind, lr_mult=7.0)
    (group,) = method.param_groups()
    assert group["lr_mult"] == 7.0 and ("weight_decay" in group) == no_decay
    if no_decay:
        assert group["weight_decay"] == 0.0
    assert {id(p) for p in group["params"]} == {id(p) for p in method.net.unit("image").parameters()}


def test_image_unit_is_the_input_unit_and_takes_the_networks_dtype():
    # mutants: input_unit is the old first unit; the unit not cast to the network's dtype
    from transferkit.methods.image_unit import ImageUnit
    net = _lenet_like().double()
    method = ImageUnit(net, kind="colour")
    assert method.input_unit == "image" and net.unit_names[:2] == ["image", "unit1"]
    assert net.unit("image").conv.weight.dtype == torch.float64
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(net(x), net.forward_units(x, "unit1"))  # identity unit first: the same logits
    with torch.no_grad():
        net.unit("image").conv.weight.mul_(2.0)  # no longer the identity: the method's input runs through it
        assert torch.allclose(method.forward_from_input(x), net(x))
        assert not torch.allclose(method.forward_from_input(x), net.forward_units(x, "unit1"))


# ---- backbones.py -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["embedding", "a.b", "all", "image:x"])
def test_unit_names_that_would_clash_with_taps_or_keys_are_refused(name):
    # mutants: "embedding" (a tap name) or dotted names (state-dict keys) accepted as unit names
    with pytest.raises(TransferkitError, match=f"invalid unit name '{name}'"):
        UnitNet({name: nn.Identity()}, nn.Linear(2, 2))


def test_embed_dim_of_a_lazy_head_is_the_pooled_embedding_size():
    # mutant: embed_dim read from the last feature unit's output instead of the pooled embedding
    net = UnitNet({"conv": nn.Conv2d(1, 4, 3)}, nn.LazyLinear(5), input_shape=(1, 8, 8))
    assert net.embed_dim == 4 * 6 * 6


def test_reset_classifier_gives_a_fresh_head_in_the_networks_mode_and_dtype():
    # mutants: head mode / dtype not matched; a same-size linear head kept, or its bias carried over
    net = _lenet_like().double().eval()
    old = net.head
    with torch.no_grad():
        old.bias.fill_(7.0)
    head = net.reset_classifier(2)
    assert head is net.head and head is not old
    assert not head.training and head.weight.dtype == torch.float64
    assert (head.bias != 7.0).all()
    net.train()
    assert net.reset_classifier(3).training


def test_parameters_of_lists_parameters_in_unit_order():
    # mutant: parameters in the order the units are asked for
    net = _lenet_like()
    params = net.parameters_of(["head", "unit1"])
    assert [id(p) for p in params] == [id(p) for p in (*net.unit("unit1").parameters(), *net.head.parameters())]


@pytest.mark.parametrize("units, message", [
    ([0, 3], r"unit sizes \[0, 3\] must be positive"),
    ([["1"], ["0"], ["2"]], "must list the feature children .* once each, in order"),
])
def test_from_sequential_refuses_empty_or_reordered_groups(units, message):
    # mutants: a zero group size accepted; groups checked as a set, not in order
    seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.Linear(3, 2))
    with pytest.raises(TransferkitError, match=message):
        from_sequential(seq, units=units)


def test_from_sequential_refuses_an_auto_name_that_a_child_already_has():
    # mutant: duplicate names accepted, so one unit silently replaces the other
    from collections import OrderedDict
    seq = nn.Sequential(OrderedDict([("a", nn.Linear(3, 3)), ("b", nn.ReLU()), ("unit1", nn.Linear(3, 3)),
                                     ("fc", nn.Linear(3, 2))]))
    with pytest.raises(TransferkitError, match=r"duplicate unit names \['unit1', 'unit1'\]"):
        from_sequential(seq, units=[2, 1])


def test_unit_index_past_the_head_is_a_named_error():
    # mutant: the index bound one too large (an IndexError instead of the named error)
    net = _lenet_like()  # unit1..unit3 and head: indices 0..4, 4 meaning "after the head"
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(net.forward_units(x, 0, 4), net(x))
    with pytest.raises(TransferkitError, match="unit index 5 out of range for 4 units"):
        net.forward_units(x, 0, 5)


def test_unit_output_shapes_refresh_sees_a_replaced_unit():
    # mutant: refresh=True ignored
    net = UnitNet({"conv": nn.Conv2d(1, 4, 3)}, nn.LazyLinear(2), input_shape=(1, 8, 8))
    assert net.unit_output_shapes()["conv"] == (4, 6, 6)
    net._modules["units"]["conv"] = nn.Conv2d(1, 2, 5)
    assert net.unit_output_shapes()["conv"] == (4, 6, 6)  # cached
    assert net.unit_output_shapes(refresh=True)["conv"] == (2, 4, 4)


def test_from_modules_names_a_module_used_twice():
    # mutant: the check dropped (the UnitNet's shared-parameter check fires with another message, or none
    # for a module without parameters)
    model = nn.Module()
    model.act, model.fc = nn.ReLU(), nn.Linear(3, 2)
    with pytest.raises(TransferkitError, match="a module is used twice in units/head"):
        from_modules(model, ["act", "act"], head="fc", input_shape=None)


def test_forward_units_pools_when_it_crosses_into_the_head():
    # mutant: the "head" boundary placed after the pool, so forward_units(x, 0, "head") returns the embedding
    net = UnitNet({"conv": nn.Conv2d(1, 4, 3)}, nn.Linear(4 * 6 * 6, 2), input_shape=(1, 8, 8))
    x = torch.rand(2, 1, 8, 8)
    h = net.forward_units(x, 0, "head")  # the last feature unit's output, before the pool
    assert h.shape == (2, 4, 6, 6) and torch.equal(h, net.unit("conv")(x))
    assert torch.equal(net.forward_units(h, "head"), net(x))


def test_tunable_unit_names_leave_out_units_without_parameters():
    # mutant: every unit listed
    assert _lenet_like().tunable_unit_names() == ["unit1", "head"]  # unit2 (ReLU) and unit3 (Flatten) have none


def test_resnet_basic_block_adds_its_input():
    # mutant: the residual connection dropped; with bn2 scaled to 0 the block is relu(x + 0)
    from transferkit.backbones import BasicBlock
    torch.manual_seed(0)
    block = BasicBlock(4, 4).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(block(x), torch.relu(x))
