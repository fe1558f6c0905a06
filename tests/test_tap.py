"""Layer tapping (seed 001): the refusals of ``tap`` and ``fit_linear``."""

import pytest
import torch
from helpers import tiny_net, toy_domain

from transferkit.backbones import build_backbone
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.methods.tap import Tap, fit_linear, tap


def test_tap_takes_one_unit_as_a_string():
    rows = tap(tiny_net(4), toy_domain(32), toy_domain(16, seed=1), units="unit2")
    assert [r["unit"] for r in rows] == ["unit2"]
    with pytest.raises(TransferkitError, match="unknown unit 'fc9'"):
        tap(tiny_net(4), toy_domain(32), toy_domain(16, seed=1), units="fc9")


def test_tap_refuses_an_empty_test_domain():
    empty = Domain("empty", torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), [str(c) for c in range(4)])
    with pytest.raises(TransferkitError, match="test domain is empty"):
        tap(tiny_net(4), toy_domain(32), empty)


def test_tap_names_the_unit_with_non_finite_features():
    net = tiny_net(4)
    with torch.no_grad():
        net.unit("unit2")[1].bias[0] = float("nan")  # unit1 stays finite
    with pytest.raises(TransferkitError, match="features of unit 'unit2' hold NaN"):
        tap(net, toy_domain(32), toy_domain(16, seed=1))
    with pytest.raises(TransferkitError, match="features of unit 'unit2' hold NaN"):
        Tap(net, units=["unit2"]).fit_transfer(None, target=toy_domain(32), val=toy_domain(16, seed=1))
    with pytest.raises(TransferkitError, match="finite features"):
        fit_linear("svm", torch.full((8, 3), float("nan")), torch.arange(8) % 2, 2)


@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_fit_linear_refuses_labels_outside_num_classes(kind):
    x, y = torch.randn(12, 3), torch.arange(12) % 4
    with pytest.raises(TransferkitError, match=r"labels in \[0, 2\], got labels from 0 to 3"):
        fit_linear(kind, x, y, num_classes=3)


def test_two_class_softmax_gives_the_models_probabilities_and_tap_restores_the_mode():
    from sklearn.linear_model import LogisticRegression

    from transferkit.methods.tap import fit_linear, unit_features

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 4, generator=g) - 0.5, torch.randn(30, 4, generator=g) + 0.5])
    y = torch.tensor([0] * 30 + [1] * 30)
    lin = fit_linear("softmax", x, y, num_classes=2)
    mean, std = x.mean(0), x.std(0)
    ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(((x - mean) / std).double().numpy(), y.numpy())
    with torch.no_grad():
        ours = torch.softmax(lin(x), 1)[:, 1].double()
    want = torch.from_numpy(ref.predict_proba(((x - mean) / std).double().numpy())[:, 1])
    assert torch.allclose(ours, want, atol=1e-4)  # sigmoid(z), not sigmoid(2z)
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    net.train()
    unit_features(net, torch.rand(3, 1, 28, 28), ["conv1"])
    assert net.training


def test_tap_predictions_reuse_the_tapped_activations_bit_identically():
    import copy
    import warnings

    from transferkit.evaluate import predict_logits
    from transferkit.frozen import MEMO

    torch.manual_seed(0)
    net, test = build_backbone("lenet", 4), toy_domain(64, 3)
    MEMO.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no validation set
        for s in range(2):  # two label subsets score one test split through one fixed network
            m = Tap(copy.deepcopy(net), units=["conv2"])
            m.fit_transfer(None, target=toy_domain(40, s + 10))
            assert torch.equal(m.logits(test.images), predict_logits(m, test.images))
    assert MEMO.hits == 1  # the second subset read the first one's conv2 activations (it recomputed them)


def test_tap_names_a_network_that_is_no_unitnet():
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 3))
    domain = toy_domain(12)
    for run in (lambda: tap(plain, domain, domain), lambda: Tap(plain)):
        with pytest.raises(TransferkitError, match=r"tap: net must be a transferkit UnitNet .*from_modules.*got "
                                                   r"Sequential"):
            run()


def test_tap_counts_its_fits_with_a_progress_bar_when_asked(capsys):
    from transferkit.engine import Engine, TrainConfig
    net, train, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    quiet = tap(net, train, test, progress=False)
    assert capsys.readouterr().err == ""
    assert tap(net, train, test, progress=True) == quiet  # the bar changes no result
    err = capsys.readouterr().err
    assert "tap: linear fits" in err and "0/4" in err  # 2 units x 2 classifiers
    for progress, shown in ((True, True), (False, False)):
        make_engine = lambda tag, config=None, p=progress: Engine(TrainConfig(progress=p))  # noqa: E731
        Tap(tiny_net(4)).fit_transfer(make_engine, target=train, val=test)
        assert ("tap: linear fits" in capsys.readouterr().err) is shown  # the stage config's progress


def _mislabelled(n, wrong, seed=1):
    dom = toy_domain(n, seed=seed)
    labels = dom.labels.clone()
    labels[:wrong] = (labels[:wrong] + 1) % 4
    return Domain(dom.name, dom.images, labels, dom.class_names)


def test_tap_accuracies_are_exact_fractions():
    test = _mislabelled(15, 5)  # a float32 mean of 10 of 15 is 0.6666666865348816
    rows = tap(tiny_net(4), toy_domain(32), test)
    accs = [r[f"{k}_accuracy"] for r in rows for k in ("svm", "softmax")]
    assert any(0 < a < 1 and a != 0.5 for a in accs)
    assert all(a == round(a * 15) / 15 for a in accs)
    m = Tap(tiny_net(4))
    fit = m.fit_transfer(None, target=toy_domain(32), val=test)
    scores = [s for per_unit in m._extra["tap_val_accuracy"].values() for s in per_unit.values()]
    assert all(s == round(s * 15) / 15 for s in scores) and fit.best_val_accuracy == max(scores)
    assert fit.best_val_accuracy == round(fit.best_val_accuracy * 15) / 15
