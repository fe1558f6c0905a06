"""Tests from a second mutation pass over losses.py, methods/discrepancy.py and methods/dsn.py: mmd2's refusal
of a negative bandwidth and its flattening of feature maps; coral's check of the target's sample count (and the
counts its message names) and when it uses d x d covariances rather than Gram matrices; MCC's refusal of logits
that are not a B x K matrix; difference_loss and scale_invariant_mse in float32 under bfloat16 autocast; the
mmd method's refusal of scales that are not a list of numbers > 0 when it is built; coral over several layers;
``entmin_weight`` reaching the loss of coral, mcc and dsn; dsn's check of the backbone's input shape, its
``hidden`` size in decoder and discriminator, the discriminator's two hidden layers, its split of unequal source
and target batches, the private encoder's and shared decoder's layers (also on non-square images) and the size
its warning gives in GiB. Each test fails when the code it names is changed in the way its comment says.

Judged equivalent, so not tested: MCC's ``len(y) *`` in the weights and a column instead of a row normalisation
of ``C`` (the rows are normalised, so a common factor of ``W`` cancels, and ``C = Yᵀ W Y`` is symmetric);
mmd2's ``k[:n, n:]`` for ``k[n:, :n]`` (``k`` is symmetric) and its ``in_float32`` (cdist is not run in bfloat16
by CPU autocast, and is on CUDA's float32 list); the source/target order of mmd and coral (both symmetric);
MCC's own ``temperature > 0`` and entmin's ``weight > 0`` against ``!= 0`` (the options check common to all
methods refuses temperature <= 0 and negative weights first); dsn's ``gathered`` (the identity in one process)
and its decoder's ``view`` against ``reshape`` (a linear layer's output is contiguous). Left surviving: none of
the mutants tried beyond these.
"""

import math

import pytest
import torch
from helpers import linear_sizes, seeded_lenet, spread_lenet, uda_batch

from transferkit import losses
from transferkit.errors import TransferkitError
from transferkit.losses import coral, difference_loss, entropy, minimum_class_confusion, mmd2, scale_invariant_mse
from transferkit.methods import get_method


def test_mmd2_refuses_a_negative_bandwidth():
    # mutant: bandwidth check `!= 0` (a negative bandwidth squared gave a plausible value)
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    with pytest.raises(TransferkitError, match="bandwidth must be > 0"):
        mmd2(x, y, bandwidth=-1.0)


def test_mmd2_flattens_feature_maps_into_rows():
    # mutant: source/target not flattened (cdist then works per channel on 4-d maps)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 2, 2, 2, generator=g), torch.randn(4, 2, 2, 2, generator=g) + 0.5
    assert float(mmd2(s, t)) == pytest.approx(float(mmd2(s.flatten(1), t.flatten(1))), rel=1e-6)
    # hand value: one 2x1x1x2 pair at distance 2, σ² given 1, one kernel c = 2: 2 - 2 exp(-4 / 2)
    a, b = torch.zeros(1, 1, 1, 2), torch.tensor([[[[0.0, 2.0]]]])
    assert float(mmd2(a, b, scales=(2.0,), bandwidth=1.0)) == pytest.approx(2 - 2 * math.exp(-2), rel=1e-6)


def test_coral_refuses_a_one_sample_target_and_names_both_counts():
    # mutants: the target's len(t) >= 2 check dropped; the message's source and target counts swapped
    x = torch.randn(3, 2)
    with pytest.raises(TransferkitError, match="got 3 source and 1 target"):
        coral(x, x[:1])
    with pytest.raises(TransferkitError, match="got 1 source and 3 target"):
        coral(x[:1], x)


def test_coral_uses_covariances_up_to_the_width_and_when_the_batches_hold_more_rows(monkeypatch):
    # mutants: `d < CORAL_GRAM_WIDTH` (d equal to the width goes to Gram matrices); the `d <= n_s + n_t` clause
    # dropped (Gram matrices of n x n larger than the d x d covariances)
    calls = []
    covariance = losses.covariance
    monkeypatch.setattr(losses, "covariance", lambda x: calls.append(x.shape) or covariance(x))
    monkeypatch.setattr(losses, "CORAL_GRAM_WIDTH", 6)
    g = torch.Generator().manual_seed(0)
    for (n, d), direct in ((2, 6), True), ((4, 8), True), ((2, 8), False):  # n samples per domain
        calls.clear()
        s, t = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        expected = (covariance(s) - covariance(t)).pow(2).sum() / (4 * d * d)
        assert float(coral(s, t)) == pytest.approx(float(expected), rel=1e-4)
        assert bool(calls) == direct, (n, d)


def test_minimum_class_confusion_refuses_logits_that_are_not_a_matrix():
    # mutant: the dim() == 2 check dropped (a 1-d vector then failed with an IndexError)
    for bad in (torch.zeros(3), torch.zeros(2, 3, 1)):
        with pytest.raises(TransferkitError, match="B x K matrix"):
            minimum_class_confusion(bad)


def test_difference_and_reconstruction_losses_run_in_float32_under_bfloat16_autocast():
    # mutants: @in_float32 dropped from difference_loss (its matrix product in bfloat16) and from
    # scale_invariant_mse (bfloat16 arguments give a bfloat16 value)
    g = torch.Generator().manual_seed(0)
    shared, private = torch.randn(64, 300, generator=g), torch.randn(64, 200, generator=g)
    x, x_hat = torch.rand(4, 3, 8, 8, generator=g).bfloat16(), torch.rand(4, 3, 8, 8, generator=g).bfloat16()
    exact = difference_loss(shared, private), scale_invariant_mse(x.float(), x_hat.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = difference_loss(shared, private), scale_invariant_mse(x, x_hat)
    for m, e in zip(mixed, exact):
        assert m.dtype == torch.float32 and torch.allclose(m, e, rtol=1e-5, atol=0)


@pytest.mark.parametrize("scales", [2.0, [True, 1.0], [0.0, 1.0], [], (1.0, -0.5)])
def test_mmd_method_refuses_scales_that_are_not_a_list_of_positive_numbers_when_built(scales):
    # mutants: the list/tuple check dropped (a bare number: TypeError); booleans taken as 1; `s >= 0`
    # (the zero scale refused by mmd2 only at the first step)
    with pytest.raises(TransferkitError, match="mmd: scales must be a non-empty list of numbers > 0"):
        get_method("mmd")(seeded_lenet(), scales=scales)


def test_coral_method_sums_its_term_over_every_layer():
    # mutant: only the first layer's CORAL
    net = spread_lenet()
    b = uda_batch(4, 4)
    (x_s, _), x_t = b.source, b.unlabeled
    layers = ["conv2", "embedding"]
    term = get_method("coral")(net, weight=0.5, layers=layers).losses(b)["coral"]
    with torch.no_grad():
        s, t = net.forward_features(x_s, layers), net.forward_features(x_t, layers)
        parts = [float(coral(s[n], t[n])) for n in layers]
    assert min(parts) > 0
    assert float(term.detach()) == pytest.approx(0.5 * sum(parts), rel=1e-4)


@pytest.mark.parametrize("name", ["coral", "mcc", "dsn"])
def test_entmin_weight_adds_the_target_entropy_to_coral_mcc_and_dsn(name):
    # mutants: coral, mcc or dsn not passing entmin_weight on to AdaptationMethod
    net = spread_lenet()
    b = uda_batch(4, 4)
    terms = get_method(name)(net, entmin_weight=0.5).losses(b)
    with torch.no_grad():
        expected = 0.5 * entropy(net(b.unlabeled))
    assert float(terms["entmin"].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_dsn_refuses_a_backbone_without_input_shape():
    # mutant: the input_shape check dropped (private_encoder then fails on None with a TypeError)
    from transferkit.adapters import from_sequential
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with pytest.raises(TransferkitError, match="input_shape"):
        get_method("dsn")(from_sequential(seq, units=[1, 2]))


def test_dsn_hidden_sizes_its_decoder_and_its_two_hidden_layer_discriminator():
    # mutants: hidden not passed to the decoder or to the discriminator; the discriminator's depth 1
    method = get_method("dsn")(seeded_lenet(), hidden=7)
    assert linear_sizes(method.decoder) == [(500, 7), (7, 28 * 28)]
    assert linear_sizes(method.discriminator) == [(500, 7), (7, 7), (7, 1)]  # as dann's: two hidden layers


def test_dsn_splits_unequal_source_and_target_batches_for_its_discriminator():
    # mutant: the discriminator's logits split at the target batch's size
    from transferkit.discriminators import discriminator_loss
    net = seeded_lenet()
    b = uda_batch(n_s=5, n_t=3)
    (x_s, _), x_t = b.source, b.unlabeled
    method = get_method("dsn")(net, sim_weight=1.0)
    term = method.losses(b)["similarity"]
    with torch.no_grad():
        expected = discriminator_loss(method.discriminator(net.forward_features(x_s)),
                                      method.discriminator(net.forward_features(x_t)))
    assert float(term.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_private_encoder_and_shared_decoder_have_their_documented_layers():
    # mutants: private encoder with 16 channels first, 3x3 kernels, no ReLU after the second convolution, its
    # linear layer sized from the height twice (non-square images); decoder without the ReLU between its linear
    # layers, or a default hidden size other than 500
    from transferkit.methods.dsn import SharedDecoder, private_encoder
    enc = private_encoder((2, 8, 16), 4)  # 8 x 16 -> 4 x 8 -> 2 x 4
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (2, 32, (5, 5), (2, 2)), (32, 64, (5, 5), (2, 2))]
    assert [type(m).__name__ for m in enc[0]] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten"]
    assert enc[1].in_features == 64 * 2 * 4 and enc(torch.zeros(3, 2, 8, 16)).shape == (3, 4)
    dec = SharedDecoder(6, (1, 2, 3))
    assert [type(m).__name__ for m in dec.net] == ["Linear", "ReLU", "Linear"]
    assert linear_sizes(dec) == [(6, 500), (500, 6)]


def test_dsn_size_warning_counts_16_bytes_a_weight(monkeypatch):
    # mutant: the GiB estimate from 4 bytes a weight (weights, gradients and Adam's two moments take 16)
    from transferkit.backbones import build_backbone
    from transferkit.methods import dsn
    monkeypatch.setattr(dsn, "LARGE_DISCRIMINATOR", 1000)  # warn on small images too
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"dsn's private encoders and decoder have \d+ M weights") as seen:
        method = get_method("dsn")(build_backbone("lenet", 10, 1, 64))
    extra = sum(p.numel() for m in (method.private_source, method.private_target, method.decoder)
                for p in m.parameters())
    text = next(str(w.message) for w in seen if "GiB" in str(w.message))
    assert f"{extra * 16 / 2**30:.1f} GiB" in text and extra * 16 / 2**30 > 0.2
