"""Tests from a mutation pass over transferkit/shifts.py, transferkit/heads.py and transferkit/domain.py.

Each test kills at least one plausible bug that the older tests let through (a wrong range,
sign, axis, default, padding mode or weakened check). Expected values are written out by hand
or with the documented formula in plain torch/numpy, never read back from the code under test.
"""

import math

import numpy as np
import pytest
import torch
from test_shifts import gen

from transferkit.domain import Domain, as_images
from transferkit.errors import TransferkitError
from transferkit.heads import (
    CosineHead,
    PrototypeHead,
    class_means,
    head_for_classes,
    make_head,
    prototype_logits,
)
from transferkit.shifts import (
    affine_fixed,
    affine_matrix,
    affine_random,
    apply_shift,
    blur,
    gaussian_blur,
    inversion,
    occlusion,
    rotation,
    rotation_fixed,
    scaling_stretch,
    scaling_symmetric,
    warp,
    yuv,
)


def centroid(img):
    """(x, y) centre of mass of a 2-D image, in pixels."""
    ys, xs = torch.meshgrid(torch.arange(img.shape[0], dtype=torch.float32),
                            torch.arange(img.shape[1], dtype=torch.float32), indexing="ij")
    return float((img * xs).sum() / img.sum()), float((img * ys).sum() / img.sum())


def dot(n=1, size=28, dx=10):
    """``n`` images with a 2 x 2 dot ``dx`` px right of the centre (13.5, 13.5)."""
    img = torch.zeros(n, 1, size, size)
    c = size // 2
    img[:, 0, c - 1:c + 1, c - 1 + dx:c + 1 + dx] = 1.0
    return img


# ---- shifts: blur ----------------------------------------------------------------------
def test_gaussian_blur_of_an_impulse_is_the_outer_product_of_a_3_sigma_kernel():
    x = torch.zeros(1, 1, 11, 11)
    x[0, 0, 5, 5] = 1.0
    t = np.arange(-3, 4, dtype=np.float64)  # sigma 1: radius 3 sigma = 3
    k = np.exp(-0.5 * t ** 2)
    k /= k.sum()
    expected = np.zeros((11, 11))
    expected[2:9, 2:9] = np.outer(k, k)
    assert np.allclose(gaussian_blur(x, 1.0)[0, 0].numpy(), expected, atol=1e-6)


def test_gaussian_blur_keeps_a_constant_image_constant_and_in_range():
    """Reflect padding adds no dark border; a normalised kernel neither brightens nor darkens."""
    x = torch.full((2, 3, 12, 16), 0.6)
    assert torch.allclose(gaussian_blur(x, torch.tensor([1.0, 2.5])), x, atol=1e-6)
    ones = torch.ones(1, 1, 28, 28)
    out = gaussian_blur(ones, 0.32)  # a sigma whose kernel sums to a hair above 1 in float32
    assert float(out.max()) <= 1.0 and float(out.min()) >= 1 - 1e-5


def test_gaussian_blur_of_sigma_zero_is_the_identity_and_small_images_work():
    x = torch.rand(2, 1, 5, 5, generator=gen(0))
    assert torch.allclose(gaussian_blur(x, 0.0), x, atol=1e-6)  # not NaN: sigma is clamped above 0
    out = gaussian_blur(torch.rand(1, 1, 4, 6, generator=gen(1)), 3.0)  # radius capped below the side
    assert out.shape == (1, 1, 4, 6) and bool(torch.isfinite(out).all())


def test_blur_sigma_is_uniform_1_to_1_5_px_per_image_scaled_with_the_width():
    x = torch.rand(4, 1, 56, 56, generator=gen(2))
    sigma = (1.0 + 0.5 * torch.rand(4, generator=gen(3))) * (56 / 28)
    assert torch.allclose(blur(x, gen(3)), gaussian_blur(x, sigma), atol=1e-6)


# ---- shifts: occlusion -----------------------------------------------------------------
def _rectangles(x, out):
    """(y0, y1, x0, x1) of the changed box of every image (inclusive ends)."""
    boxes = []
    for i in range(len(x)):
        ys, xs = torch.nonzero((out[i] != x[i]).any(0), as_tuple=True)
        boxes.append((int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())))
    return boxes


def test_occlusion_sides_follow_each_side_of_a_non_square_image():
    x = torch.rand(64, 3, 20, 40, generator=gen(4)) * 0.5 + 0.25
    out = occlusion(x, gen(0))
    for (y0, y1, x0, x1) in _rectangles(x, out):
        assert 6 <= y1 - y0 + 1 <= 12 and 12 <= x1 - x0 + 1 <= 24  # 30-60 % of 20 and of 40
    patch_colours = torch.stack([out[i, :, y0, x0] for i, (y0, _, x0, _) in enumerate(_rectangles(x, out))])
    fills = (patch_colours.max(1).values - patch_colours.min(1).values > 0.05).sum()
    assert int(fills) > 32, "each channel of the fill colour is drawn on its own"


def test_occlusion_rectangles_reach_every_edge_of_the_image():
    """Placed uniformly inside the image: the last position (touching the bottom or right
    edge) is drawn as often as the first."""
    x = torch.full((400, 1, 28, 28), 0.5)
    boxes = _rectangles(x, occlusion(x, gen(1)))
    assert any(b[0] == 0 for b in boxes) and any(b[1] == 27 for b in boxes)
    assert any(b[2] == 0 for b in boxes) and any(b[3] == 27 for b in boxes)


# ---- shifts: colour --------------------------------------------------------------------
def test_inversion_is_one_minus_x_pixel_by_pixel():
    x = torch.tensor([[[[0.0, 0.25, 1.0], [0.5, 0.1, 0.9]]]])
    assert torch.allclose(inversion(x), torch.tensor([[[[1.0, 0.75, 0.0], [0.5, 0.9, 0.1]]]]))


def test_yuv_of_pure_red_and_blue_by_the_bt601_formula():
    px = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).view(2, 3, 1, 1)
    u = lambda r, g, b: (-0.14713 * r - 0.28886 * g + 0.436 * b) / 0.872 + 0.5  # noqa: E731
    v = lambda r, g, b: (0.615 * r - 0.51499 * g - 0.10001 * b) / 1.23 + 0.5  # noqa: E731
    expected = torch.tensor([[0.299, u(1, 0, 0), v(1, 0, 0)], [0.114, u(0, 0, 1), v(0, 0, 1)]])
    assert torch.allclose(yuv(px).flatten(1), expected, atol=1e-5)


def test_colour_shifts_refuse_four_channel_images():
    with pytest.raises(TransferkitError, match="3-channel images, got 4 channel"):
        yuv(torch.rand(1, 4, 5, 5))


def test_apply_shift_takes_double_images_and_returns_float32():
    out = apply_shift("blur", torch.rand(2, 1, 8, 8, dtype=torch.float64), gen(0))
    assert out.dtype == torch.float32


# ---- shifts: geometry ------------------------------------------------------------------
def test_affine_matrix_is_rotation_times_shear_times_scale_plus_translation():
    a = math.radians(30.0)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lin = rot @ np.array([[1.0, 0.5], [0.0, 1.0]]) @ np.diag([2.0, 3.0])
    expected = np.concatenate([lin, [[0.1], [-0.2]]], 1)
    m = affine_matrix(30.0, 2.0, 3.0, shear=0.5, tx=0.1, ty=-0.2)
    assert np.allclose(m.numpy(), expected, atol=1e-6)
    assert np.allclose(affine_matrix(0.0, 2.0).numpy(), [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # scale_y = scale_x


def test_affine_fixed_is_the_documented_map():
    x = torch.rand(3, 1, 28, 28, generator=gen(5))
    m = affine_matrix(40.0, 0.85, 1.1, shear=0.4, tx=0.1, ty=-0.1)  # translation +-5 % of a side of 2
    assert torch.allclose(affine_fixed(x), warp(x, m), atol=1e-6)


def test_affine_random_draws_the_documented_ranges():
    """Angle in +-30 deg, scale in [0.8, 1.2], shear in +-0.3, translations in +-15 % of the side
    (+-0.3 in normalised coordinates), drawn in that order from the generator."""
    n = 6
    x = torch.rand(n, 1, 28, 28, generator=gen(6))
    g = gen(7)
    u = [torch.rand(n, generator=g) for _ in range(5)]
    m = affine_matrix(-30 + 60 * u[0], 0.8 + 0.4 * u[1], shear=-0.3 + 0.6 * u[2],
                      tx=-0.3 + 0.6 * u[3], ty=-0.3 + 0.6 * u[4])
    assert torch.allclose(affine_random(x, gen(7)), warp(x, m), atol=1e-5)


def test_rotation_fixed_turns_a_dot_30_degrees_about_the_centre_and_pads_with_zeros():
    cx, cy = centroid(rotation_fixed(dot())[0, 0])
    assert abs(math.degrees(math.atan2(cy - 13.5, cx - 13.5)) - 30.0) < 1.0
    corners = rotation_fixed(torch.ones(1, 1, 28, 28))[0, 0]
    assert float(corners[0, 0]) == 0.0 and float(corners[-1, -1]) == 0.0  # zero padding, not the border


def test_rotation_angles_span_plus_minus_45_degrees():
    out = rotation(dot(300), gen(8))
    angles = [math.degrees(math.atan2(cy - 13.5, cx - 13.5)) for cx, cy in (centroid(o[0]) for o in out)]
    assert min(angles) < -40 and max(angles) > 40 and max(abs(a) for a in angles) < 46


def test_scaling_stretch_zooms_out_by_0_7_and_repeats_the_edge_pixels():
    cx, cy = centroid(scaling_stretch(dot(dx=6))[0, 0])
    assert abs(cx - 13.5 - 0.7 * 6) < 0.3 and abs(cy - 13.5) < 0.3
    edge = torch.zeros(1, 1, 28, 28)
    edge[..., 0] = 1.0  # the left column lit
    assert torch.allclose(scaling_stretch(edge)[0, 0, :, 0], torch.ones(28))  # stretched outwards
    mirrored = scaling_symmetric(edge)[0, 0]
    assert float(mirrored[:, 0].max()) < 0.1  # the mirror shows the dark interior at the far border
    assert float(mirrored[14, :8].max()) > 0.5  # the lit column itself, moved inwards


def test_scaling_symmetric_fills_the_border_by_mirroring():
    grey = torch.full((1, 1, 28, 28), 0.4)
    assert torch.allclose(scaling_symmetric(grey), grey, atol=1e-6)  # no zero border


# ---- heads -----------------------------------------------------------------------------
def test_cosine_head_default_scale_is_10_and_learned():
    h = CosineHead(4, 3)
    assert float(h.scale.detach()) == 10.0
    h(torch.randn(5, 4)).sum().backward()
    assert h.scale.grad is not None and float(h.scale.grad.abs()) > 0


def test_class_means_refuses_labels_out_of_range():
    with pytest.raises(TransferkitError, match=r"labels out of range \[0, 2\]"):
        class_means(torch.randn(2, 4), torch.tensor([0, 3]), 3)


def test_squared_distance_logits_are_never_positive():
    """Minus a squared distance is <= 0, also when the expansion ||f||^2 - 2 f.p + ||p||^2
    rounds below zero (features with a large common offset)."""
    f = 1000 + torch.rand(50, 8, generator=gen(0))
    assert float(prototype_logits(f, f[:10]).max()) <= 0.0


def test_prototype_cosine_normalises_prototypes_and_default_scale_is_10():
    h = PrototypeHead(2, 2, metric="cosine", scale=3.0).fit(torch.tensor([[2.0, 0.0], [0.0, 3.0]]),
                                                            torch.tensor([0, 1]))
    assert torch.allclose(h(torch.tensor([[1.0, 1.0]])), torch.full((1, 2), 3 / math.sqrt(2)))
    f, p = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    assert torch.allclose(prototype_logits(f, p, "cosine"), torch.tensor([[10 * 0.6]]))


def test_prototype_head_with_a_class_without_samples_is_not_fitted():
    h = PrototypeHead(2, 2)
    h.load_state_dict({"prototypes": torch.ones(2, 2), "counts": torch.tensor([3, 0])})
    assert not h.fitted
    with pytest.raises(TransferkitError, match="no prototypes yet"):
        h(torch.randn(1, 2))


def test_prototype_fit_checks_the_feature_size():
    with pytest.raises(TransferkitError, match=r"expects N x 2 features, got \(4, 5\)"):
        PrototypeHead(2, 2).fit(torch.randn(4, 5), torch.tensor([0, 1, 0, 1]))


def test_head_for_classes_refuses_negative_rows_and_keeps_frozen_parameters_frozen():
    head = make_head("linear", 4, 3)
    with pytest.raises(TransferkitError, match="head rows must lie in"):
        head_for_classes(head, [-1])
    head.requires_grad_(False)
    assert not any(p.requires_grad for p in head_for_classes(head, [2, 0]).parameters())


def test_make_head_refuses_zero_classes_and_unknown_keywords():
    with pytest.raises(TransferkitError, match="whole num_classes >= 1"):
        make_head("linear", 4, 0)
    with pytest.raises(TransferkitError, match="linear head: .*scale"):
        make_head("linear", 4, 2, scale=2.0)


# ---- domain ----------------------------------------------------------------------------
def toy(n=6, classes=3, **kw):
    return Domain("toy", torch.rand(n, 1, 4, 4, generator=gen(0)), torch.arange(n) % classes,
                  [f"c{i}" for i in range(classes)], **kw)


def test_as_images_scales_uint8_by_255_and_allows_the_documented_tolerance():
    assert torch.equal(as_images(torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)),
                       torch.tensor([0.0, 0.2, 1.0]).view(1, 1, 1, 3))
    for ok in (-5e-5, 1 + 5e-5):  # rounding of resizing and colour transforms (RANGE_TOL = 1e-4)
        as_images(torch.full((1, 1, 2, 2), ok))
    for bad in (-1e-3, 1 + 1e-3):
        with pytest.raises(TransferkitError, match="must lie in \\[0, 1\\]"):
            as_images(torch.full((1, 1, 2, 2), bad))


def test_a_two_channel_batch_of_small_images_is_not_taken_for_channels_last():
    assert as_images(torch.rand(2, 2, 3, 3)).shape == (2, 2, 3, 3)  # (a Domain refuses 2 channels, but not as this)


def test_class_names_given_as_a_dict_are_ordered_by_id():
    d = Domain("d", torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), {"zebra": 0, "ant": 1})
    assert d.class_names == ["zebra", "ant"]
    d = Domain("d", torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), {"zebra": 1, "ant": 0})
    assert d.class_names == ["ant", "zebra"]


def test_domain_refuses_negative_labels():
    with pytest.raises(TransferkitError, match=r"labels out of range \[0, 1\] \(found -1\.\.1\)"):
        Domain("d", torch.rand(2, 1, 4, 4), torch.tensor([-1, 1]), ["a", "b"])


def test_domain_refuses_float_groups():
    with pytest.raises(TransferkitError, match="one integer id per image"):
        toy(groups=torch.arange(6).float())


def test_subset_counts_negative_indices_from_the_end_and_names_bad_ones():
    d = toy()
    sub = d.subset([-1, 0], name="ends")
    assert sub.name == "ends" and torch.equal(sub.labels, torch.tensor([2, 0]))
    assert torch.equal(sub.images, d.images[[5, 0]])
    for bad in ([6], [-7]):
        with pytest.raises(TransferkitError, match=r"indices must lie in \[0, 5\]"):
            d.subset(bad)
    with pytest.raises(TransferkitError, match=r"a bool mask must have one entry per sample \(6\)"):
        d.subset(torch.tensor([True, False, True]))


def test_select_classes_relabels_in_the_given_order_and_allows_empty_on_request():
    d = toy()
    sub = d.select_classes([2, 0])
    assert sub.class_names == ["c2", "c0"]
    assert torch.equal(sub.labels, torch.tensor([1, 0, 1, 0]))  # samples 0, 2, 3, 5 with labels 0, 2, 0, 2
    with pytest.raises(TransferkitError, match=r"class id -1 out of range \[0, 2\]"):
        d.select_classes([-1])
    with pytest.raises(TransferkitError, match=r"repeated class in \[0, 'c0'\]"):
        d.select_classes([0, "c0"])
    few = Domain("few", torch.rand(2, 1, 4, 4), torch.tensor([0, 0]), ["a", "b"])
    assert len(few.select_classes(["b"], allow_empty=True)) == 0


def test_class_counts_has_one_entry_per_class_even_if_the_last_is_absent():
    d = Domain("d", torch.rand(3, 1, 4, 4), torch.tensor([0, 0, 1]), ["a", "b", "c"])
    assert d.class_counts().tolist() == [2, 1, 0] and d.present_classes() == [0, 1]


def test_digest_changes_with_the_labels():
    d = toy()
    other = Domain("toy", d.images, d.labels.flip(0), d.class_names)
    assert d.digest() != other.digest() and d.digest() == toy().digest()


def test_digest_is_computed_once_until_the_images_or_labels_change(monkeypatch):
    import hashlib
    d = toy()
    first, calls = d.digest(), []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert d.digest() == first and not calls  # remembered: not hashed again
    d.images[0, 0, 0, 0] += 0.5  # in place: the tensor's version moves on
    changed = d.digest()
    assert changed != first and len(calls) == 1
    d.labels = d.labels.flip(0)  # another labels tensor
    assert d.digest() not in (first, changed) and len(calls) == 2
    assert Domain("same", d.images.clone(), d.labels.clone(), d.class_names).digest() == d.digest()  # by content


def test_to_format_uses_luma_weights_and_keeps_values_in_range():
    rgb = Domain("c", torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0]).view(2, 3, 1, 1), torch.tensor([0, 1]), ["r", "b"])
    assert torch.allclose(rgb.to_format(channels=1).images.flatten(), torch.tensor([0.299, 0.114]))
    ones = Domain("w", torch.ones(1, 1, 28, 28), torch.tensor([0]), ["a"]).to_format(size=5)
    assert float(ones.images.max()) <= 1.0  # antialiased resizing may round a hair above 1
