"""Synthetic shifts of seed 002 Table 2 (transferkit.shifts)."""

import colorsys
import math

import pytest
import torch

from transferkit.data import load_domain
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.shifts import (
    DETERMINISTIC,
    SHIFTS,
    affine_fixed,
    apply_shift,
    gaussian_blur,
    get_shift,
    hsv,
    inversion,
    occlusion,
    yuv,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def colour():
    return load_domain("mnistm").images[:64].clone()


@pytest.fixture(scope="module")
def gray():
    return load_domain("mnist").images[:64].clone()


def test_registry():
    assert {"blur", "noise", "occlusion", "affine_random", "affine_fixed", "rotation", "scaling",
            "inversion", "yuv", "hsv"} <= set(SHIFTS)
    for name, (fn, description, needs_colour) in SHIFTS.items():
        assert callable(fn) and description and fn.__doc__
        assert needs_colour == (name in ("yuv", "hsv"))
    with pytest.raises(UnknownNameError, match="unknown shift 'nope'; known: affine_fixed"):
        get_shift("nope")


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shift_contract(name, colour, gray):
    fn, _, needs_colour = SHIFTS[name]
    batches = [colour] if needs_colour else [colour, gray]
    for x in batches:
        before = x.clone()
        out = fn(x, gen(0))
        assert torch.equal(x, before), "shifts must not modify their input"
        assert out.shape == x.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert (out - x).abs().mean() > 0.01, "shift must change the images"
        assert torch.equal(out, fn(x, gen(0)))
        other = fn(x, gen(1))
        if name in DETERMINISTIC:
            assert torch.equal(out, other)
        else:
            assert not torch.equal(out, other)


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_shifts_act_per_image(name, colour):
    fn = SHIFTS[name][0]
    assert torch.allclose(fn(colour, gen(0))[:5], fn(colour[:5], gen(7)), atol=1e-6)


@pytest.mark.parametrize("name", ["yuv", "hsv"])
def test_colour_shifts_reject_grayscale(name, gray):
    with pytest.raises(TransferkitError, match=f"{name}.*3-channel.*channels=3"):
        SHIFTS[name][0](gray, gen(0))


def test_hsv_matches_colorsys():
    px = torch.rand(50, 3, 1, 1, generator=gen(0))
    px[0] = 0.5  # gray: hue and saturation 0
    px[1] = 0.0
    out = hsv(px).flatten(1)
    ref = torch.tensor([colorsys.rgb_to_hsv(*p.flatten().tolist()) for p in px])
    assert torch.allclose(out, ref, atol=1e-5)


def test_yuv_is_luma_and_centred_chroma():
    px = torch.rand(50, 3, 1, 1, generator=gen(0))
    out = yuv(px).flatten(1)
    luma = (px.flatten(1) * torch.tensor([0.299, 0.587, 0.114])).sum(1)
    assert torch.allclose(out[:, 0], luma, atol=1e-6)
    gray = yuv(torch.full((1, 3, 2, 2), 0.3))
    assert torch.allclose(gray[0, 1:], torch.full((2, 2, 2), 0.5), atol=1e-4)
    corners = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float32)
    uv = yuv(corners.view(8, 3, 1, 1)).flatten(1)[:, 1:]
    assert float(uv.min()) >= -1e-6 and float(uv.max()) <= 1 + 1e-6


def test_inversion_is_an_involution(colour):
    assert torch.allclose(inversion(inversion(colour)), colour, atol=1e-6)


def test_blur_smooths_and_small_sigma_is_identity(gray):
    out = apply_shift("blur", gray, gen(0))
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(out) < 0.7 * tv(gray)
    assert torch.allclose(gaussian_blur(gray, 1e-4), gray, atol=1e-5)
    assert torch.allclose(out.mean(), gray.mean(), atol=0.01)


def test_noise_is_zero_mean_with_std_0_1():
    x = torch.full((8, 3, 28, 28), 0.5)
    d = apply_shift("noise", x, gen(0)) - x
    assert abs(float(d.mean())) < 0.01 and abs(float(d.std()) - 0.1) < 0.01


def test_occlusion_is_one_constant_rectangle_per_image():
    x = torch.rand(32, 3, 28, 28, generator=gen(5))
    out = occlusion(x, gen(0))
    changed = (out != x).any(1)
    for i in range(len(x)):
        ys, xs = torch.nonzero(changed[i], as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert 8 <= h <= 17 and 8 <= w <= 17 and len(ys) == h * w
        patch = out[i, :, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert torch.equal(patch, patch[:, :1, :1].expand_as(patch))


def test_affine_fixed_is_fixed_and_geometric(gray):
    assert torch.equal(affine_fixed(gray, gen(0)), affine_fixed(gray, None))
    mass_ratio = affine_fixed(gray).sum() / gray.sum()
    assert 0.7 < float(mass_ratio) < 1.3  # moves ink, does not erase it


def test_rotation_keeps_digit_mass(gray):
    ratio = apply_shift("rotation", gray, gen(0)).sum((1, 2, 3)) / gray.sum((1, 2, 3))
    assert float(ratio.min()) > 0.8 and float(ratio.max()) < 1.2


def test_scaling_zooms_in_and_out(gray):
    ratio = apply_shift("scaling", gray, gen(0)).sum((1, 2, 3)) / gray.sum((1, 2, 3))
    assert float(ratio.min()) < 0.8 and float(ratio.max()) > 1.3


def test_apply_shift_validates_shape():
    with pytest.raises(TransferkitError, match="N x C x H x W"):
        apply_shift("blur", torch.rand(3, 28, 28), gen(0))


def test_a_rotation_of_a_non_square_image_stays_a_rotation():
    """The affine maps act in pixel units: on a 28 x 56 image a 30 degree rotation about the
    centre keeps the radius of a dot and turns it by 30 degrees (no shear)."""
    from transferkit.shifts import affine_matrix, warp

    img = torch.zeros(1, 1, 28, 56)
    img[0, 0, 13:15, 37:39] = 1.0  # a dot 10 px right of the centre (13.5, 27.5)
    out = warp(img, affine_matrix(30.0, 1.0))[0, 0]
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(56.0), indexing="ij")
    cy, cx = float((out * ys).sum() / out.sum()) - 13.5, float((out * xs).sum() / out.sum()) - 27.5
    assert abs(math.hypot(cx, cy) - 10.0) < 0.5 and abs(math.degrees(math.atan2(cy, cx)) - 30.0) < 1.0
    square = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    m = affine_matrix(30.0, 1.1, shear=0.2, tx=0.1).expand(2, 2, 3)
    inv = torch.linalg.inv(m[:, :, :2])  # square images: exactly the normalised-coordinate maps as before
    grid = torch.nn.functional.affine_grid(torch.cat([inv, -(inv @ m[:, :, 2:])], 2), [2, 1, 28, 28],
                                           align_corners=False)
    before = torch.nn.functional.grid_sample(square, grid, align_corners=False).clamp(0, 1)
    assert torch.equal(warp(square, m), before)


def test_apply_shift_refuses_channels_last_images_and_returns_an_empty_batch():
    from transferkit.errors import TransferkitError
    from transferkit.shifts import apply_shift
    g = torch.Generator().manual_seed(0)
    for name in ("blur", "occlusion"):
        with pytest.raises(TransferkitError, match="look channels-last"):
            apply_shift(name, torch.rand(2, 28, 28, 3), g)
        assert apply_shift(name, torch.rand(0, 1, 28, 28), g).shape == (0, 1, 28, 28)
