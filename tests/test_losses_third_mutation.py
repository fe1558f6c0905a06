"""Tests from a third mutation pass over losses.py: ``dann_lambda``'s ``gamma`` argument; mmd2's within-source and
within-target kernel means taken from their own blocks (samples of unequal spread) and its pooled bandwidth's
invariance to the features' scale (the clamp of σ² only guards against 0 / 0); the offending value named in
mmd2's and MCC's argument errors, and MCC's fix for a one-sample batch; ``covariance`` of one row (0, not NaN);
``frozen_call`` using the module's own buffers (a batch-norm layer in training mode updates its running
statistics). Each test fails when the code it names is changed in the way its comment says.

Judged equivalent, so not tested: ``_GradReverse.forward`` returning ``x`` itself rather than ``x.view_as(x)``
(autograd gives an unmodified input back as a new tensor with the same reversed gradient) and ``grad_reverse``
without ``float(coeff)`` (the backward multiplies the same way by an int, a float or a tensor); entropy's
``isinf`` for ``isneginf`` (a log-softmax is never +inf) and its ``log_softmax`` over dim -1 for dim 1 (the
same for the documented B x K logits); MCC's column normalisation (as the second pass: ``C`` is symmetric);
coral's ``gram.abs()`` for ``gram.clamp_min(0)`` (they differ only on the Gram form's rounding below 0, at
~1e-9 of the value, which the first pass checks stays >= 0); mmd2's default scales changed (killed by
tests/test_adaptation.py, which compares the mmd method with mmd2's defaults). Left surviving: none of the
mutants tried beyond these.
"""

import math

import pytest
import torch

from transferkit.errors import TransferkitError
from transferkit.losses import covariance, dann_lambda, frozen_call, minimum_class_confusion, mmd2


def test_dann_lambda_uses_its_gamma_argument():
    # mutant: γ fixed at 10 in the exponent (the gamma argument ignored)
    assert dann_lambda(0.1, gamma=5.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)
    assert dann_lambda(1.0, gamma=0.0) == 0.0
    assert dann_lambda(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)


def test_mmd2_takes_each_domains_kernel_mean_from_its_own_block():
    # mutants: k_ss counted twice for k_ss + k_tt; k_tt counted twice
    s, t = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    # k = exp(-d²): k_ss over pairs at d² 0, 4, 4, 0 = (1 + e^-4) / 2; k_tt = 1; k_st = e^-1
    expected = (1 + math.exp(-4)) / 2 + 1 - 2 * math.exp(-1)
    assert float(mmd2(s, t, scales=(1.0,), bandwidth=1.0)) == pytest.approx(expected, rel=1e-6)
    assert float(mmd2(t, s, scales=(1.0,), bandwidth=1.0)) == pytest.approx(expected, rel=1e-6)


def test_mmd2_with_the_pooled_bandwidth_does_not_depend_on_the_features_scale():
    # mutant: σ² clamped at 1e-2 instead of 1e-8 (features of small spread then get a too-wide kernel)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(5, 3, generator=g) + 0.7
    reference = float(mmd2(s, t))
    assert reference > 0.01
    for factor in (1e-3, 1e3):
        assert float(mmd2(factor * s, factor * t)) == pytest.approx(reference, rel=1e-4)


def test_mmd2_and_mcc_argument_errors_name_the_offending_value_and_the_fix():
    # mutants: mmd2's bandwidth or scales message, or MCC's temperature message, without the value it got; MCC's
    # one-sample message without its fix (raise batch_size)
    x = torch.randn(3, 2)
    with pytest.raises(TransferkitError, match=r"bandwidth must be > 0, got -2\.5"):
        mmd2(x, x, bandwidth=-2.5)
    with pytest.raises(TransferkitError, match=r"scales must be non-empty and > 0, got \(1\.0, -1\.0\)"):
        mmd2(x, x, scales=(1.0, -1.0))
    with pytest.raises(TransferkitError, match=r"temperature must be > 0, got -0\.5"):
        minimum_class_confusion(x, temperature=-0.5)
    with pytest.raises(TransferkitError, match="raise train.batch_size to 2 or more"):
        minimum_class_confusion(x[:1])


def test_covariance_of_a_single_row_is_zero_not_nan():
    # mutant: divide by len(x) - 1 without the max(., 1) (one row gives 0 / 0)
    c = covariance(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.equal(c, torch.zeros(3, 3))


def test_frozen_call_uses_the_modules_own_buffers():
    # mutant: the buffers passed as copies (a batch-norm layer in training mode then never updates its statistics)
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(2, momentum=0.5).train()
    x = torch.tensor([[1.0, 4.0], [3.0, 8.0]], requires_grad=True)
    out = frozen_call(bn, x)
    assert torch.allclose(bn.running_mean, torch.tensor([1.0, 3.0]))  # 0.5 * 0 + 0.5 * batch mean (2, 6)
    assert int(bn.num_batches_tracked) == 1
    (out * torch.tensor([1.0, 2.0])).sum().backward()
    assert bn.weight.grad is None and x.grad is not None
