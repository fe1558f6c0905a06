"""Tests from a fourth mutation pass over transferkit/shifts.py and transferkit/heads.py: gaussian_blur's
kernel per image over the radius of the batch's largest sigma, blur's sigma scaled with the width of a
non-square image, occlusion placed along the width of a wide image and filled with a colour per image,
apply_shift refusing images of five dimensions; and, in heads.py, a cosine head given a whole-number scale,
prototype_logits and class_means refusing features that are not N x D by name, squared distances rounded below
0 giving a logit of 0, and PrototypeHead.fit taking whole-valued float labels into whole counts. Each test
fails when the code it names is changed in the way its comment says. Expected values are written out with
the documented formula in plain torch, never read back from the code under test.

Judged equivalent, so not tested: hsv's saturation without its `where(mx > 0, ...)` (a pixel whose maximum
is 0 has delta 0 on images in [0, 1], so delta / 1 is 0 as well); gaussian_blur's smallest radius 1 -> 2
(only a sigma below 1/3 px gets radius 1, and its kernel at 2 px is below 2e-8).

Left surviving: none of those tried. Not tested here, being killed by test_splits_data_mutation /
test_data_config_mutation / test_splits_data_third_mutation: data._shift_generator leaving the shift's
position out of its seed.
"""

import math

import pytest
import torch
from test_shifts import gen

from transferkit.errors import TransferkitError
from transferkit.heads import PrototypeHead, class_means, make_head, prototype_logits
from transferkit.shifts import apply_shift, blur, gaussian_blur, occlusion


def blurred_impulse(sigma, radius, size):
    """The outer product of a normalised Gaussian kernel of ``radius`` centred in a ``size`` x ``size`` image."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    out = torch.zeros(size, size, dtype=torch.float64)
    c = size // 2
    out[c - radius:c + radius + 1, c - radius:c + radius + 1] = torch.outer(k, k)
    return out


# ---- shifts ---------------------------------------------------------------------------------------------
# kills: gaussian_blur's radius from sigma.min() rather than .max(); one kernel of the largest sigma for all images
def test_gaussian_blur_gives_each_image_its_own_sigma_over_the_largest_sigmas_radius():
    x = torch.zeros(2, 1, 15, 15)
    x[:, 0, 7, 7] = 1.0
    out = gaussian_blur(x, torch.tensor([0.5, 1.5])).double()
    radius = math.ceil(3 * 1.5)  # 5: the batch's largest sigma sets the radius
    assert torch.allclose(out[0, 0], blurred_impulse(0.5, radius, 15), atol=1e-6)
    assert torch.allclose(out[1, 0], blurred_impulse(1.5, radius, 15), atol=1e-6)


# kills: blur's sigma scaled with the height (images.shape[-2]) rather than the width
def test_blur_sigma_scales_with_the_width_of_a_non_square_image():
    x = torch.rand(3, 1, 28, 56, generator=gen(4))
    sigma = (1.0 + 0.5 * torch.rand(3, generator=gen(5))) * (56 / 28)
    assert torch.allclose(blur(x, gen(5)), gaussian_blur(x, sigma), atol=1e-6)


# kills: occlusion's x0 drawn over the height (h - rw + 1) rather than the width
def test_occlusion_on_a_wide_image_keeps_whole_rectangles_that_reach_both_sides():
    n, h, w = 200, 6, 40
    out = occlusion(torch.zeros(n, 1, h, w), gen(6))
    cols = (out[:, 0] != 0).any(1)  # n x w: the columns each rectangle covers
    widths = cols.sum(1)
    assert int(widths.min()) >= round(0.3 * w) and int(widths.max()) <= round(0.6 * w)
    assert bool(cols[:, 0].any()) and bool(cols[:, -1].any())


# kills: occlusion drawing one fill colour for the whole batch rather than one per image
def test_occlusion_fills_each_image_with_its_own_colour():
    out = occlusion(torch.zeros(4, 3, 12, 12), gen(8))
    colours = {tuple(round(float(v), 6) for v in out[i].amax((1, 2))) for i in range(4)}
    assert len(colours) == 4


# kills: apply_shift's `images.dim() == 4` weakened to `>= 4`
def test_apply_shift_refuses_images_of_five_dimensions_by_shape():
    with pytest.raises(TransferkitError, match=r"N x C x H x W.*\(2, 1, 1, 8, 8\)"):
        apply_shift("noise", torch.zeros(2, 1, 1, 8, 8), gen(0))


# ---- heads ----------------------------------------------------------------------------------------------
# kills: CosineHead storing torch.tensor(scale) rather than torch.tensor(float(scale)) (an int scale cannot learn)
def test_a_cosine_head_takes_a_whole_number_scale_as_a_learned_float():
    head = make_head("cosine", 4, 3, scale=5)
    assert head.scale.dtype == torch.float32 and head.scale.requires_grad
    logits = head(torch.randn(6, 4, generator=gen(7))).detach()
    assert float(logits.abs().max()) <= 5.0 + 1e-5


# kills: prototype_logits' `features.dim() == 2` dropped (one feature vector fails with an IndexError)
def test_prototype_logits_refuse_features_that_are_not_a_matrix():
    with pytest.raises(TransferkitError, match=r"N x D features.*\(4,\)"):
        prototype_logits(torch.zeros(4), torch.zeros(3, 4))


# kills: prototype_logits' `-d.clamp_min(0)` -> `-d.abs()` (a rounding below 0 must give 0, not a negative logit)
def test_squared_distances_rounded_below_zero_give_a_logit_of_zero():
    f = 1000 + torch.rand(64, 16, generator=gen(0))  # a large shared offset: the expansion rounds
    d = f.pow(2).sum(1, keepdim=True) - 2 * f @ f.t() + f.pow(2).sum(1).unsqueeze(0)  # the documented formula
    if not bool((d < 0).any()):
        pytest.skip("no distance rounded below zero on this machine")
    logits = prototype_logits(f, f)
    assert bool((logits[d < 0] == 0).all())
    assert torch.equal(logits, -d.clamp_min(0))


# kills: class_means' `features.dim() == 2` dropped (N x D x E features fail inside index_add)
def test_class_means_refuses_features_that_are_not_a_matrix():
    with pytest.raises(TransferkitError, match=r"N x D features.*\(4, 2, 2\)"):
        class_means(torch.zeros(4, 2, 2), torch.tensor([0, 1, 0, 1]), 2)


# kills: PrototypeHead.fit's labels through torch.as_tensor rather than class_ids (float labels break bincount);
# the counts buffer registered as float rather than long
def test_prototype_fit_takes_whole_valued_float_labels():
    features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    head = PrototypeHead(2, 2).fit(features, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert head.counts.dtype == torch.long and head.counts.tolist() == [2, 2]
    assert torch.allclose(head.prototypes, torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
