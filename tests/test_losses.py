import math

import helpers
import pytest
import torch

from transferkit.errors import TransferkitError
from transferkit.losses import (
    coral,
    covariance,
    dann_lambda,
    difference_loss,
    entropy,
    frozen_call,
    grad_reverse,
    minimum_class_confusion,
    mmd2,
    scale_invariant_mse,
)


def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.5 * torch.arange(3.0).expand(4, 3))


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)


def test_mmd_zero_for_identical_samples_and_grows_with_mean_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8, generator=g)
    assert abs(float(mmd2(a, a.clone()))) < 1e-6
    b = torch.randn(64, 8, generator=g)
    values = [float(mmd2(a, b + shift, bandwidth=4.0)) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 10 * max(values[0], 1e-4)


def test_coral_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]])
    assert torch.allclose(covariance(s), torch.cov(s.T))
    # C_s = [[1, -1], [-1, 4]], C_t = [[1, 0.5], [0.5, 1]]: ||C_s - C_t||² = 0 + 2.25 + 2.25 + 9
    assert float(coral(s, t)) == pytest.approx(13.5 / 16)


def test_entropy_known_values():
    assert float(entropy(torch.zeros(3, 4))) == pytest.approx(math.log(4))
    assert float(entropy(torch.tensor([[100.0, 0.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([0.25, 0.75])
    assert float(entropy(p.log()[None])) == pytest.approx(-(p * p.log()).sum().item(), rel=1e-6)


def test_entropy_of_a_masked_class_counts_zero_log_zero_as_zero():
    logits = torch.tensor([[0.0, 0.0, float("-inf")]], requires_grad=True)
    value = entropy(logits)
    assert float(value) == pytest.approx(math.log(2))
    value.backward()
    assert bool(torch.isfinite(logits.grad).all()) and float(logits.grad[0, 2]) == 0.0


def test_minimum_class_confusion_known_values_and_gradient():
    k = 4
    # uniform predictions: every normalised row is 1/K, so the off-diagonal mass is (K - 1) / K
    assert float(minimum_class_confusion(torch.zeros(6, k))) == pytest.approx((k - 1) / k)
    # confident predictions of distinct classes: no confusion
    assert float(minimum_class_confusion(100 * torch.eye(k), temperature=1.0)) == pytest.approx(0.0, abs=1e-6)
    # hand computation, two samples, two classes, T = 1, equal entropies -> weights 1
    y = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    c = y.t() @ y  # [[0.68, 0.32], [0.32, 0.68]], rows sum to 1
    assert float(minimum_class_confusion(y.log(), temperature=1.0)) == pytest.approx(float(c[0, 1] + c[1, 0]) / 2)
    # gradient descent on the loss makes the predictions less confused
    logits = torch.randn(8, k, generator=torch.Generator().manual_seed(0), requires_grad=True)
    before = float(minimum_class_confusion(logits).detach())
    minimum_class_confusion(logits).backward()
    assert float(minimum_class_confusion(logits.detach() - 1.0 * logits.grad)) < before
    with pytest.raises(TransferkitError, match=r"mcc needs 2 target samples or more per batch"):
        minimum_class_confusion(torch.randn(1, k))  # (K - 1) / K whatever it predicts: a term that trains nothing


def test_minimum_class_confusion_matches_skada():
    losses = helpers.skada_or_skip("skada.deep.losses")
    logits = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    ours = minimum_class_confusion(logits, temperature=1.0)
    assert float(ours) == pytest.approx(float(losses.mcc_loss(logits, T=1)), rel=1e-4)


def test_minimum_class_confusion_weights_carry_a_gradient_only_when_asked():
    logits = 5 * torch.randn(16, 5, generator=torch.Generator().manual_seed(2))  # confident: W varies

    def grad(fn):
        x = logits.clone().requires_grad_(True)
        fn(x).backward()
        return x.grad

    def by_hand(x, t=2.5):  # the paper's formula with W differentiated
        y = torch.softmax(x / t, 1)
        w = 1 + torch.exp((y * y.log()).sum(1))
        c = (y * (len(y) * w / w.sum())[:, None]).t() @ y
        c = c / c.sum(1, keepdim=True)
        return (c.sum() - c.trace()) / y.shape[1]

    detached, through = (grad(lambda x, d=d: minimum_class_confusion(x, detach_weights=d)) for d in (True, False))
    assert float(minimum_class_confusion(logits, detach_weights=False)) == pytest.approx(
        float(minimum_class_confusion(logits)))
    assert torch.allclose(through, grad(by_hand), atol=1e-6)
    assert (detached - through).abs().max() > 0.05 * through.abs().max()
    losses = helpers.skada_or_skip("skada.deep.losses")
    assert torch.allclose(through, grad(lambda x: losses.mcc_loss(x, T=2.5, eps=0.0)), atol=1e-6)  # SKADA's gradient


def test_difference_and_reconstruction_losses():
    h = torch.randn(16, 6)
    assert float(difference_loss(h, torch.zeros(16, 6))) == 0.0
    assert float(difference_loss(h, h)) > float(difference_loss(h, torch.randn(16, 6)))
    x = torch.rand(2, 1, 4, 4)
    assert float(scale_invariant_mse(x, x + 0.3)) == pytest.approx(0.0, abs=1e-6)  # shift invariant
    assert float(scale_invariant_mse(x, torch.zeros_like(x))) > 0


def test_frozen_call_gives_gradient_to_inputs_only():
    lin = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3, requires_grad=True)
    frozen_call(lin, x).sum().backward()
    assert lin.weight.grad is None and x.grad is not None
    assert torch.allclose(x.grad, lin.weight.detach().expand(5, 3))


def test_mmd_known_values_with_given_and_pooled_bandwidth():
    s, t = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # k(s, s) = k(t, t) = 1, k(s, t) = exp(-1 / (c σ²)): MMD² = 2 - 2 exp(-1 / (c σ²))
    assert float(mmd2(s, t, scales=(1.0,), bandwidth=1.0)) == pytest.approx(2 - 2 * math.exp(-1))
    assert float(mmd2(s, t, scales=(2.0,), bandwidth=1.0)) == pytest.approx(2 - 2 * math.exp(-0.5))
    # pooled σ² = mean over the 4 ordered pairs (self-pairs included) of 0, 1, 1, 0 = 0.5
    assert float(mmd2(s, t, scales=(1.0,))) == pytest.approx(2 - 2 * math.exp(-2))
    assert float(mmd2(s, t, scales=(1.0, 2.0))) == pytest.approx(2 * (2 - math.exp(-2) - math.exp(-1)))


def test_difference_loss_centres_normalises_and_averages_the_correlation_entries():
    shared = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    aligned = torch.cat([shared, torch.zeros(4, 1)], 1)  # private codes along the shared ones (d_p = 3)
    orthogonal = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    # centred and normalised rows are (±1, 0) and (±1, 0, 0): H_cᵀ H_p (2 x 3) has one entry 4, 16 / 6
    assert float(difference_loss(shared + 5, 3 * aligned - 3)) == pytest.approx(16 / 6)
    assert float(difference_loss(shared, orthogonal)) == pytest.approx(0.0)  # orthogonal over the batch
    # the entries are sums over the batch, as in the authors' code: the same codes twice over give 4x
    assert float(difference_loss(torch.cat([shared] * 2), torch.cat([aligned] * 2))) == pytest.approx(64 / 6)


def test_scale_invariant_mse_is_the_per_sample_variance_of_the_error():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = x.flatten(1).var(1, unbiased=False).mean()  # (1/k)Σd² - (1/k²)(Σd)² with d = x
    assert float(scale_invariant_mse(x, torch.zeros_like(x))) == pytest.approx(float(expected), rel=1e-5)


def test_mmd_bandwidth_carries_no_gradient():
    s = torch.tensor([[0.0]], requires_grad=True)
    mmd2(s, torch.tensor([[1.0]]), scales=(1.0,)).backward()
    # sigma^2 = 0.5 held fixed: d/ds [2 - 2 exp(-(1 - s)^2 / sigma^2)] at s = 0 is -8 e^-2
    assert s.grad.item() == pytest.approx(-8 * math.exp(-2), rel=1e-5)


def test_minimum_class_confusion_weights_carry_no_gradient_as_in_the_authors_code():
    torch.manual_seed(0)
    logits = torch.randn(16, 5, requires_grad=True)
    minimum_class_confusion(logits).backward()
    y = torch.softmax(logits.detach() / 2.5, 1)
    w = 1 + torch.exp((y * y.log()).sum(1))
    w = (len(y) * w / w.sum()).detach()
    ref = logits.detach().clone().requires_grad_(True)
    p = torch.softmax(ref / 2.5, 1)
    c = (p * w[:, None]).t() @ p
    c = c / c.sum(1, keepdim=True)
    ((c.sum() - c.trace()) / 5).backward()
    assert torch.allclose(logits.grad, ref.grad, atol=1e-7)


def test_coral_of_wide_features_uses_gram_matrices_with_the_same_value():
    from transferkit.losses import CORAL_GRAM_WIDTH, covariance
    torch.manual_seed(0)
    s = torch.randn(12, CORAL_GRAM_WIDTH + 1, dtype=torch.float64)
    t = torch.randn(9, CORAL_GRAM_WIDTH + 1, dtype=torch.float64) * 1.5 + 0.2
    d = s.shape[1]
    s.requires_grad_(True)
    direct = (covariance(s) - covariance(t)).pow(2).sum() / (4 * d * d)
    gram = coral(s, t)
    assert torch.allclose(gram, direct, rtol=1e-10)
    (g_gram,), (g_direct,) = torch.autograd.grad(gram, s), torch.autograd.grad(direct, s)
    assert torch.allclose(g_gram, g_direct, rtol=1e-8, atol=1e-14) and g_direct.abs().max() > 0
    wide = torch.randn(4, 64, 80, 80, requires_grad=True)  # 409,600 wide: d x d would be 625 GiB
    coral(wide, torch.randn(4, 64, 80, 80)).backward()
    assert wide.grad.shape == wide.shape


def test_known_values_of_mmd_with_unequal_sizes_and_mcc_on_one_hot_predictions():
    from transferkit.losses import minimum_class_confusion, mmd2
    # k = exp(-d^2 / 1): source {0}, target {1, 1}: 1 + 1 - 2 e^-1
    assert float(mmd2(torch.zeros(1, 1), torch.ones(2, 1), scales=(1,), bandwidth=1)) == pytest.approx(
        2 - 2 * math.exp(-1), rel=1e-5)
    assert float(minimum_class_confusion(1000 * torch.eye(3), temperature=1)) == 0.0  # no NaN at zero entropy


def test_minimum_class_confusion_of_a_class_no_sample_scores_is_finite():
    logits = torch.tensor([[300.0, 0.0, 0.0], [280.0, 0.0, 5.0]], requires_grad=True)  # softmax underflows to 0
    loss = minimum_class_confusion(logits)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert float(minimum_class_confusion(torch.tensor([[120.0, 0.0], [110.0, 3.0]]), temperature=1.0)) == 0.0


def test_adaptation_layers_may_not_repeat_a_unit():
    from helpers import seeded_lenet

    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    for name in ("mmd", "coral", "dann"):
        with pytest.raises(TransferkitError, match="more than once"):
            get_method(name)(seeded_lenet(), layers=["fc1", "fc1"])


def test_loss_functions_refuse_settings_that_give_nan_or_a_wrong_value():
    from transferkit.errors import TransferkitError

    x, y = torch.randn(6, 3), torch.randn(6, 3)
    for kw in ({"scales": ()}, {"scales": (0.0,)}, {"bandwidth": 0.0}):
        with pytest.raises(TransferkitError, match="mmd2: (scales|bandwidth)"):
            mmd2(x, y, **kw)  # NaN, or a TypeError for ()
    for t in (0.0, -1.0):
        with pytest.raises(TransferkitError, match="temperature must be > 0"):
            minimum_class_confusion(x, temperature=t)  # -1 gave a plausible 0.509
    with pytest.raises(TransferkitError, match="coral needs 2 samples or more per domain"):
        coral(x[:1], y)  # the one-sample covariance was 0: the loss pulled the other domain's toward 0
    for loss in (mmd2, coral):  # torch's bare shape error before
        with pytest.raises(TransferkitError, match=r"must have the same width, got 3 source and 5 target"):
            loss(x, torch.randn(6, 5))
    assert float(coral(torch.randn(6, 2, 2), torch.randn(6, 4))) >= 0  # feature maps are flattened first
    for s, t in ((x[:0], y), (x, y[:0])):  # NaN before
        with pytest.raises(TransferkitError, match=rf"mmd2 needs a sample or more per domain, got {len(s)} source"):
            mmd2(s, t)


def test_losses_keep_their_float32_value_under_bfloat16_autocast():
    from transferkit.clip import info_nce, similarity
    from transferkit.losses import coral, minimum_class_confusion, mmd2
    g = torch.Generator().manual_seed(0)
    s = torch.randn(64, 3000, generator=g)  # wide: coral's Gram form, whose terms cancel
    t = s + 1e-3 * torch.randn(64, 3000, generator=g)
    img = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 0.3 * torch.randn(16, 32, generator=g), dim=1)
    logits = 3 * torch.randn(32, 5, generator=g)
    exact = {"coral": coral(s, t), "mmd": mmd2(s[:, :20], t[:, :20] + 0.1), "mcc": minimum_class_confusion(logits),
             "infonce": info_nce(similarity(img, txt), 100.0)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (s @ t.T).dtype == torch.bfloat16  # the ops these losses use do run in bfloat16 here
        mixed = {"coral": coral(s, t), "mmd": mmd2(s[:, :20], t[:, :20] + 0.1), "mcc": minimum_class_confusion(logits),
                 "infonce": info_nce(similarity(img, txt), 100.0)}
    for k, v in exact.items():  # without in_float32: coral 0 (clamped) for 6e-9, infonce off by 0.5 %
        assert mixed[k].dtype == torch.float32 and torch.allclose(mixed[k], v, rtol=1e-5, atol=0), k
    assert float(exact["coral"]) > 0
