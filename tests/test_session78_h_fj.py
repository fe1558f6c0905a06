"""Session 78 (h_fj): half-precision losses, exact mean/se, prototype scale refusal, NaN advice, AP@k."""

import math
import re

import pytest
import torch

from transferkit import losses
from transferkit.clip import hard_negative_triplet, info_nce, similarity


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_take_half_precision_inputs_outside_autocast_in_float32(dtype):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(5, 4, generator=g)
    sh, th, big = s.to(dtype), t.to(dtype), (s * 300).to(dtype)  # coral of big: inf in float16 before
    pairs = {"mmd2": (losses.mmd2, (sh, th), (sh.float(), th.float())),
             "coral": (losses.coral, (big, sh), (big.float(), sh.float())),
             "mcc": (losses.minimum_class_confusion, (sh,), (sh.float(),)),
             "difference": (losses.difference_loss, (sh, th[:, :2].repeat(2, 1)[:6]),
                            (sh.float(), th[:, :2].repeat(2, 1)[:6].float())),
             "recon": (losses.scale_invariant_mse, (sh, sh.flip(0)), (sh.float(), sh.flip(0).float())),
             "similarity": (similarity, (sh, sh), (sh.float(), sh.float()))}
    for name, (fn, low, exact) in pairs.items():
        got, want = fn(*low), fn(*exact)
        assert got.dtype == torch.float32, name
        assert torch.isfinite(got).all(), name
        assert torch.allclose(got, want), name
    sim = similarity(sh, sh)
    assert info_nce(sim.to(dtype), 100.0).dtype == torch.float32
    assert hard_negative_triplet(sim.to(dtype)).dtype == torch.float32


def test_losses_keep_float64_and_float32_outside_autocast():
    x = torch.randn(5, 3, dtype=torch.float64)
    assert losses.mmd2(x, x.flip(0)).dtype == torch.float64
    assert losses.coral(x.float(), x.flip(0).float()).dtype == torch.float32


def test_mean_se_of_equal_values_is_the_value_with_no_spread_and_sums_exactly():
    from transferkit.evaluate import mean_se, mean_se_text
    from transferkit.results import summarize
    assert mean_se([0.7, 0.7, 0.7]) == (0.7, 0.0)
    assert mean_se([0.1] * 7) == (0.1, 0.0)
    m, se = mean_se([1e16, 1.0, -1e16])  # a naive sum loses the 1.0
    assert m == pytest.approx(1 / 3)
    assert math.isnan(mean_se([0.5, math.inf])[1]) and math.isnan(mean_se([math.inf, math.inf])[1])
    assert math.isnan(mean_se([math.inf, -math.inf])[0])
    rows = [{"method": "m", "source": "s", "target": "t", "setting": "k=5", "seed": i, "accuracy": 0.7}
            for i in range(3)]
    (s,) = summarize(rows)
    assert (s["accuracy_mean"], s["accuracy_se"]) == (0.7, 0.0)
    assert mean_se_text([0.7] * 3, scale=1, digits=17) == f"{0.7:.17f} ± {0.0:.17f}"


@pytest.mark.parametrize("scale", [0, -1.0, float("inf")])
def test_a_sqeuclidean_prototype_head_refusing_its_scale_names_its_metric_not_a_cosine_head(scale):
    from transferkit.errors import TransferkitError
    from transferkit.heads import PrototypeHead, make_head
    with pytest.raises(TransferkitError) as e:
        PrototypeHead(16, 3, metric="sqeuclidean", scale=scale)
    assert "cosine head" not in str(e.value) and "'sqeuclidean' does not use it" in str(e.value)
    assert "a sqeuclidean prototype head needs a finite scale > 0" in str(e.value) and repr(scale) in str(e.value)
    with pytest.raises(TransferkitError, match=r"a cosine head needs a finite scale > 0 \(logits = scale \* cos\)"):
        PrototypeHead(16, 3, metric="cosine", scale=scale)
    with pytest.raises(TransferkitError, match=r"a cosine head needs a finite scale > 0 \(logits = scale \* cos\)"):
        make_head("cosine", 16, 3, scale=scale)


@pytest.mark.parametrize("method, options, named", [("ft_slow", {"backbone_lr_mult": 1e30}, "backbone_lr_mult=1e+30"),
                                                     ("finetune_adv", {"disc_lr_mult": 1e30}, "disc_lr_mult=1e+30")])
def test_a_loss_that_diverged_names_the_methods_lr_multiplier_above_1(method, options, named):
    import helpers

    from transferkit.backbones import build_backbone
    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    d = helpers.toy_domain(32, 0, 4)
    kwargs = {"source": d, "unlabeled": d, "target": d} if method == "finetune_adv" else {"target": d}
    advice = r"; lower the learning rate, or the method's learning-rate multiplier option above 1 \("
    with pytest.raises(TransferkitError, match=r"loss became .* at step 1 .*" + advice + re.escape(named)):
        Engine(TrainConfig(steps=3, batch_size=8, optimizer="sgd", progress=False)).fit(
            get_method(method)(net, **options), **kwargs)


def test_a_loss_that_diverged_without_a_multiplier_above_1_advises_the_learning_rate_alone():
    import helpers

    from transferkit.backbones import build_backbone
    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match=r"at step 1 .*; lower the learning rate$"):
        Engine(TrainConfig(steps=3, batch_size=8, lr=1e15, optimizer="sgd", progress=False)).fit(
            get_method("ft_slow")(net, backbone_lr_mult=0.5), target=helpers.toy_domain(32, 0, 4))


def test_queries_with_no_relevant_gallery_item_score_0_in_the_mean_and_one_warning_counts_them():
    import warnings

    from transferkit.retrieval import average_precision_at_k, map_at_k
    gallery, g_labels = torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1])
    queries, q_labels = torch.tensor([[0.1], [2.1], [5.0], [6.0], [7.0]]), torch.tensor([0, 1, 2, 2, 3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ap = average_precision_at_k(queries, q_labels, gallery, g_labels, k=2)
        mean = map_at_k(queries, q_labels, gallery, g_labels, k=2)
    none = [str(w.message) for w in caught if "no relevant gallery item" in str(w.message)]
    assert len(none) == 2 and all(m.startswith("retrieval: 3 of 5 queries have no relevant") for m in none)  # 1 a call
    assert ap[2:].tolist() == [0.0, 0.0, 0.0] and mean == pytest.approx(float(ap.sum()) / 5)
    with warnings.catch_warnings(record=True) as caught:  # within one set: a class of one item has none besides it
        warnings.simplefilter("always")
        average_precision_at_k(queries, q_labels, k=2)
    assert [str(w.message) for w in caught if "no relevant" in str(w.message)] == [
        "retrieval: 3 of 5 queries have no relevant gallery item (none of their class besides themselves); each "
        "scores AP@2 0, which counts in the mean (map_at_k)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        average_precision_at_k(queries[:2], q_labels[:2], gallery, g_labels, k=2)
    assert not [w for w in caught if "no relevant" in str(w.message)]
