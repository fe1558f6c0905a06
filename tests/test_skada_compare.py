import helpers
import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.bench.skada_compare import (
    dead_domain_classifier,
    run_skada,
    sigmoid_domain_classifier,
    steps_per_epoch,
)
from transferkit.domain import Domain


def test_steps_per_epoch_matches_skada_balanced_sampler():
    assert steps_per_epoch(7200, 3000, 64) == 7168 // 64
    assert steps_per_epoch(100, 300, 32) == 9


@pytest.mark.parametrize("name", ["DANN", "DANN-sigmoid", "DAN", "DeepCoral", "MCC-T2.5"])
def test_skada_runs_on_a_transferkit_unitnet(name):
    helpers.skada_or_skip("skada.deep")
    g = torch.Generator().manual_seed(0)
    dom = lambda n: Domain("d", torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10,  # noqa: E731
                           [str(i) for i in range(10)])
    net = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = run_skada(name, net, dom(32), dom(32), dom(20), epochs=1, batch_size=16, lr=1e-3, seed=0)
    assert 0.0 <= res["accuracy"] <= 1.0 and res["wall_s"] > 0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # SKADA trains a copy


def test_skada_estimators_take_the_named_settings():
    helpers.skada_or_skip("skada.deep")
    from transferkit.bench.skada_compare import SKADA_METHODS, skada_estimator

    net = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    est = {name: skada_estimator(name, net, epochs=1, batch_size=16, lr=1e-3) for name in SKADA_METHODS}
    est["MCC"].initialize(), est["MCC-T2.5"].initialize(), est["DAN"].initialize()
    assert est["MCC"].criterion_.adapt_criterion.T == 1 and est["MCC-T2.5"].criterion_.adapt_criterion.T == 2.5
    assert type(est["DAN"].criterion_.adapt_criterion).__name__ == "DANLoss"
    with pytest.raises(ValueError, match="unknown SKADA method"):
        skada_estimator("DDC", net, epochs=1, batch_size=16, lr=1e-3)


def test_skada_default_domain_classifier_is_dead_and_the_sigmoid_one_is_not():
    skada = pytest.importorskip("skada")
    helpers.skada_or_skip("skada.deep")
    assert dead_domain_classifier() == (skada.__version__ == "0.6.0")  # Softmax over one output: constant 1
    torch.manual_seed(0)
    x = torch.randn(8, 16, requires_grad=True)
    out = sigmoid_domain_classifier(16)(x)
    out.log().sum().backward()
    assert ((out > 0) & (out < 1)).all() and x.grad.abs().max() > 0


def test_dann_timing_alternates_both_libraries_and_the_small_discriminator():
    helpers.skada_or_skip("skada.deep")
    from transferkit.bench.skada_compare import dann_timing

    res = dann_timing("digits", "digits+noise", epochs=1, repeats=2, pretrain_steps=2)
    assert set(res["times"]) == {"transferkit dann", "transferkit dann, 100-unit discriminator", "skada DANN",
                                 "skada DANN, channels-last module"}
    assert all(len(t) == 2 and min(t) > 0 for t in res["times"].values())
    assert res["steps"] > 0 and set(res["median"]) == set(res["times"])


def test_run_skada_accuracy_is_an_exact_fraction(monkeypatch):
    import numpy as np

    from transferkit.bench import skada_compare

    class Fake:
        def fit(self, x, y, sample_domain):
            pass

        def predict(self, x, sample_domain):
            return np.zeros(len(x), dtype=np.int64)

    monkeypatch.setattr(skada_compare, "skada_estimator", lambda *a: Fake())
    dom = lambda n: Domain("d", torch.zeros(n, 1, 28, 28), torch.arange(n) % 3, ["a", "b", "c"])  # noqa: E731
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    res = run_skada("DANN", net, dom(6), dom(6), dom(3), epochs=1, batch_size=2, lr=1e-3, seed=0)
    assert res["accuracy"] == 1 / 3  # a float32 mean gives 0.3333333432674408
