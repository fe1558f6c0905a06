"""Tests from a third mutation pass over transferkit/shifts.py and transferkit/heads.py: gaussian_blur's reflect
padding on both axes, noise drawn per image, occlusion's sides rounded to the nearest pixel, the zero padding of the
random rotation and scaling, apply_shift's messages (the shape it got, the permute fix, an unknown name); and, in
heads.py, the value named by a refused scale, num_classes or head kind, class_means' checks (labels of another
length, an empty batch, float64 features), prototype_logits' size check and unknown metric, the
reprs of the cosine and prototype heads, HeadRows' input size, a stateful layer with buffers only ending a head,
retargeted heads (float64 layers, a final layer nested three deep), and head_for_classes'
rows checked against the head's own size. Each test fails when the code it names is changed in the way its
comment says.

Judged equivalent, so not tested: _first_line reading the whole docstring rather than its first paragraph (every
shift's docstring is one paragraph); the clamps of hsv and inversion dropped (both stay in [0, 1] on images in
[0, 1]); class_means dividing by `counts.float()` rather than the features' dtype (float32 and float64 features
give the same result by type promotion); class_means' `int(labels.min()) >= 0` dropped (class_ids
refuses negative labels before it).

Left surviving: the device moves of class_means' labels and of PrototypeHead.fit's features dropped (only a GPU
tells them apart; none in this pass). Not tested here, being killed by test_unitnet_networks_mutation /
test_user_networks: retargeted_head's HeadRows unwrapping passing `rows` or `r` for `int(head.rows[r])`."""

import numpy as np
import pytest
import torch
from test_shifts import gen
from torch import nn

from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.heads import (
    CosineHead,
    HeadRows,
    PrototypeHead,
    class_means,
    final_layer,
    head_for_classes,
    make_head,
    prototype_logits,
    retargeted_head,
)
from transferkit.shifts import apply_shift, gaussian_blur, noise, occlusion, rotation, scaling


# ---- shifts ---------------------------------------------------------------------------------------------
def test_gaussian_blur_pads_both_axes_by_reflection():
    # kills: gaussian_blur's horizontal or vertical F.pad mode "reflect" made "replicate"
    x = torch.rand(1, 1, 9, 9, generator=gen(0))
    t = np.arange(-3, 4, dtype=np.float64)  # sigma 1: radius 3
    k = np.exp(-0.5 * t ** 2)
    k /= k.sum()
    p = np.pad(x[0, 0].numpy().astype(np.float64), 3, mode="reflect")  # mirror without repeating the edge
    rows = np.stack([np.convolve(r, k, mode="valid") for r in p])  # 15 x 9
    expected = np.stack([np.convolve(c, k, mode="valid") for c in rows.T]).T  # 9 x 9
    assert np.allclose(gaussian_blur(x, 1.0)[0, 0].numpy(), expected, atol=1e-5)


def test_noise_is_drawn_for_every_image_of_the_batch():
    # kills: noise drawn of shape images.shape[1:] (one noise image broadcast over the whole batch)
    out = noise(torch.full((3, 1, 8, 8), 0.5), gen(0))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_occlusion_sides_are_rounded_to_the_nearest_pixel():
    # kills: occlusion's `.round()` of the rectangle's sides made `.floor()` (60 % of 10 px never reached)
    x = torch.full((300, 1, 10, 10), -1.0)  # the fill is in [0, 1]: every changed pixel is the rectangle's
    changed = (occlusion(x, gen(0)) != x)[:, 0]
    heights = set(changed.any(2).sum(1).tolist())
    widths = set(changed.any(1).sum(1).tolist())
    assert heights == widths == {3, 4, 5, 6}  # round([3, 6)): 30 % to 60 % of 10 px


@pytest.mark.parametrize("fn", [rotation, scaling])
def test_random_rotation_and_scaling_pad_with_zeros(fn):
    # kills: rotation's / scaling's warp given padding_mode "border" or "reflection" instead of the zero default
    out = fn(torch.ones(20, 1, 28, 28), gen(0))
    corners = out[:, 0, 0, 0]
    assert int((corners < 0.5).sum()) >= 5  # turned or zoomed-out images show the zero border in a corner


def test_apply_shift_names_the_shape_it_got_and_the_permute_fix():
    # kills: apply_shift's messages without the shape got (N x C x H x W check) or without the permute fix
    with pytest.raises(TransferkitError, match=r"\(2, 8, 8\)"):
        apply_shift("blur", torch.rand(2, 8, 8), gen(0))
    with pytest.raises(TransferkitError, match=r"permute\(0, 3, 1, 2\)"):
        apply_shift("blur", torch.rand(2, 28, 28, 3), gen(0))


def test_apply_shift_refuses_an_unknown_shift_by_name():
    # kills: apply_shift reading SHIFTS[name] rather than get_shift(name) (a bare KeyError, no known names)
    with pytest.raises(UnknownNameError, match="unknown shift 'blurr'; known: .*blur"):
        apply_shift("blurr", torch.rand(2, 1, 8, 8), gen(0))


# ---- heads: messages -------------------------------------------------------------------------------------
def test_refusals_of_make_head_name_the_value_given_and_the_known_kinds():
    # kills: _check_scale's and make_head's num_classes messages without `got {value!r}`; the unknown kind's
    # message listing no known heads
    with pytest.raises(TransferkitError, match=r"got -2\.5"):
        make_head("cosine", 4, 2, scale=-2.5)
    with pytest.raises(TransferkitError, match="got 0"):
        make_head("linear", 4, 0)
    with pytest.raises(UnknownNameError, match="known: cosine, linear, prototype"):
        make_head("svm", 4, 2)


def test_cosine_and_prototype_heads_show_their_sizes_and_metric():
    # kills: CosineHead.extra_repr without out_features; PrototypeHead.extra_repr without the metric
    assert "in_features=4, out_features=3" in repr(CosineHead(4, 3))
    assert "metric=cosine" in repr(PrototypeHead(4, 3, metric="cosine"))


# ---- heads: class means and prototypes ---------------------------------------------------------------------
def test_class_means_refuses_labels_of_another_length_by_shape():
    # kills: class_means' `labels.shape[0] == features.shape[0]` check dropped (torch's index_add error)
    with pytest.raises(TransferkitError, match=r"\(3, 2\).*\(2,\)"):
        class_means(torch.randn(3, 2), torch.tensor([0, 1]), 2)


def test_class_means_of_no_samples_names_the_classes_without_one():
    # kills: class_means' `if labels.numel():` guard dropped (min() of an empty tensor: torch's RuntimeError)
    with pytest.raises(TransferkitError, match=r"no samples for class\(es\) \[0, 1\]"):
        class_means(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)


def test_class_means_of_float64_features_are_float64():
    # kills: class_means' `features.new_zeros(...)` made `torch.zeros(...)` (float32 sums: index_add refuses float64)
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    m = class_means(f, torch.tensor([0, 0, 1]), 2)
    assert m.dtype == torch.float64 and torch.equal(m, torch.tensor([[2.0, 3.0], [5.0, 6.0]], dtype=torch.float64))


def test_prototype_logits_refuse_prototypes_of_another_size_and_an_unknown_metric():
    # kills: prototype_logits' `features.shape[1] == prototypes.shape[1]` dropped; its final raise made `return None`
    with pytest.raises(TransferkitError, match=r"C x D prototypes, got \(3, 4\) and \(2, 5\)"):
        prototype_logits(torch.randn(3, 4), torch.randn(2, 5))
    with pytest.raises(UnknownNameError, match="manhattan"):
        prototype_logits(torch.randn(3, 4), torch.randn(2, 4), "manhattan")


# ---- heads: rows -----------------------------------------------------------------------------------------
def test_head_rows_keeps_the_input_size_of_its_head():
    # kills: HeadRows' in_features set to None instead of the wrapped head's
    assert HeadRows(nn.Linear(4, 3), [2, 0]).in_features == 4


def test_a_head_ending_in_a_layer_with_buffers_only_has_no_final_layer():
    # kills: _has_state reading parameters only (a BatchNorm without affine skipped; the linear before it retargeted)
    head = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, affine=False))
    assert final_layer(head) is None and retargeted_head(head, [1, 0]) is None


def test_a_retargeted_float64_head_stays_float64():
    # kills: retargeted_head's `new.to(device=..., dtype=ref.dtype)` without the dtype (a float32 layer)
    head = nn.Linear(4, 3).double()
    new = retargeted_head(head, [2, None])
    assert new.weight.dtype == new.bias.dtype == torch.float64 and torch.equal(new.weight[0], head.weight[2])


def test_a_final_layer_nested_three_deep_is_replaced_where_it_is():
    # kills: retargeted_head's parent `get_submodule(".".join(path[:-1]))` made `get_submodule(path[0])`
    torch.manual_seed(0)
    head = nn.Sequential(nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))))
    new = retargeted_head(head, [2, 0])
    x = torch.randn(5, 4)
    assert torch.allclose(new(x), head(x)[:, [2, 0]], atol=1e-6)


def test_head_for_classes_checks_rows_against_the_heads_own_size():
    # kills: num_outputs preferred to the head's out_features; the range message's `n - 1` made `n`;
    # `n is not None and` made `n is None or` (a head of unknown size wrapped unchecked)
    with pytest.raises(TransferkitError, match=r"\[0, 2\]"):
        head_for_classes(make_head("linear", 4, 3), [4], num_outputs=5)
    with pytest.raises(TransferkitError, match=r"\[0, \?\]"):
        head_for_classes(nn.Sequential(nn.Linear(4, 3)), [0])
