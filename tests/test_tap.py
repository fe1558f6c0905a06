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


def _quiet_tap(net, units=None, **fit):
    """A ``Tap`` fitted without its no-validation warning."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = Tap(net, units=units)
        m.fit_transfer(None, **fit)
    return m


def test_transform_of_a_fitted_tap_gives_the_tapped_units_features_its_classifier_reads(one_thread):
    from transferkit import Transfer
    net, train, val = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    model = Transfer("tap", units="unit1").fit(target=train, net=net, val=val)
    emb = model.transform(val)
    assert model.method_.tap_unit == "unit1" and emb.shape == (16, 4 * 13 * 13)  # not the 16-d embedding
    with torch.no_grad():
        want = net.forward_features(val.images, ["unit1"])["unit1"].flatten(1)
        assert torch.allclose(emb, want) and torch.allclose(model.method_.tap_head(emb), model.predict_logits(val))
    assert model.transform(val.images[:0]).shape == (0, 4 * 13 * 13)


def test_tap_matches_test_classes_to_training_classes_by_name():
    net, train, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    base = tap(net, train, test, progress=False)
    order = [3, 1, 0, 2]  # the same images, their classes listed in another order
    renamed = Domain("t", test.images, torch.tensor([order.index(int(y)) for y in test.labels]),
                     [test.class_names[i] for i in order])
    assert tap(net, train, renamed, progress=False) == base
    two = test.select_classes(["2", "3"])  # relabelled 0, 1: still classes "2" and "3" of training
    subset = test.select_classes(["2", "3"], relabel=False)
    assert two.class_names == ["2", "3"] and tap(net, train, two) == tap(net, train, subset)
    named = Domain("c", test.images, test.labels, [f"c{i}" for i in range(4)])
    with pytest.raises(TransferkitError, match=r"test domain 'c' has images of classes \['c0', 'c1', 'c2', 'c3'\] "
                                               r"that the training domain 'toy' does not name"):
        tap(net, train, named)
    other = Domain("o", test.images, test.labels, ["0", "1", "2", "9"])
    with pytest.raises(TransferkitError, match=r"classes \['9'\]"):
        tap(net, train, other)


def test_tap_refuses_images_of_another_size_than_the_network_takes():
    net, big = tiny_net(4), toy_domain(32).to_format(size=32)
    with pytest.raises(TransferkitError, match=r"tap: the training domain 'toy': images of shape \(1, 32, 32\), the "
                                               r"network takes \(1, 28, 28\)"):
        tap(net, big, toy_domain(16, seed=1), units="unit1")  # a convolution alone would take them
    with pytest.raises(TransferkitError, match=r"tap: the test domain 'toy': images of shape \(1, 32, 32\)"):
        tap(net, toy_domain(32), big, units="unit1")
    with pytest.raises(TransferkitError, match=r"tap: the target domain 'toy': images of shape \(1, 32, 32\)"):
        Tap(net, units="unit1").fit_transfer(None, target=big, val=big)


class _Pair(torch.nn.Module):
    def forward(self, x):
        return x, x


class _First(torch.nn.Module):
    def forward(self, pair):
        return pair[0]


def test_tap_names_a_unit_whose_output_is_no_tensor():
    from transferkit.backbones import from_sequential
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2), _Pair(), _First(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 13 * 13, 4))
    net = from_sequential(seq, input_shape=(1, 28, 28))
    train, test = toy_domain(32), toy_domain(16, seed=1)
    for run in (lambda: tap(net, train, test, units=["unit2"]),
                lambda: Tap(net).fit_transfer(None, target=train, val=test)):
        with pytest.raises(TransferkitError, match="tap: unit 'unit2' gives a tuple, not a tensor.*units="):
            run()
    assert [r["unit"] for r in tap(net, train, test, units=["unit1", "unit3"])] == ["unit1", "unit3"]


def test_tap_refuses_a_unit_listed_twice_and_breaks_ties_in_network_order(monkeypatch):
    from transferkit import Transfer
    from transferkit.methods import tap as tap_module
    net, train, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    for run in (lambda: tap(net, train, test, units=["unit2", "unit2"]), lambda: Tap(net, units=["unit2", "unit2"]),
                lambda: Transfer("tap", units=["unit2", "unit2"]).fit(target=train, net=net, val=test)):
        with pytest.raises(TransferkitError, match="units lists 'unit2' more than once"):
            run()
    assert [r["unit"] for r in tap(net, train, test, units=["unit2", "unit1"])] == ["unit1", "unit2"]
    monkeypatch.setattr(tap_module, "fraction_correct", lambda pred, labels: 0.5)  # every pair ties
    m = _quiet_tap(net, units=["unit2", "unit1"], target=train, val=test)
    assert m.units == ["unit1", "unit2"] and (m.tap_unit, m.extra_results()["tap_classifier"]) == ("unit1", "svm")


def test_tap_rows_record_the_pick_and_the_summary_prints_it():
    from transferkit.tables import picked_lines
    m = _quiet_tap(tiny_net(4), target=toy_domain(32), val=toy_domain(16, seed=1))
    extra = m.extra_results()
    assert extra["picked"] == f"{extra['tap_unit']}/{extra['tap_classifier']}"
    cell = {"source": "s", "target": "t", "setting": "k=5"}
    rows = [{**cell, "method": "tap", "seed": 0, **extra},
            {**cell, "method": "tap", "seed": 1, "tap_unit": "unit1", "tap_classifier": "softmax"},  # an old row
            {**cell, "method": "flex", "seed": 0, "picked": "fc1"}, {**cell, "method": "ft_all", "seed": 0}]
    lines = picked_lines(rows, markdown=False)
    assert "flex picked: fc1 ×1" in lines and len(lines) == 2
    tap_line = next(line for line in lines if line.startswith("tap picked: "))
    assert f"{extra['picked']} ×" in tap_line and "unit1/softmax ×" in tap_line


def test_tap_warns_once_naming_the_units_whose_classifier_did_not_converge(monkeypatch):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    from transferkit.errors import TransferkitWarning
    fit = LinearSVC.fit

    def unconverged(self, *args, **kwargs):
        warnings.warn("Liblinear failed to converge,\nincrease the number of iterations.", ConvergenceWarning,
                      stacklevel=2)
        warnings.warn("another warning of the fit", UserWarning, stacklevel=2)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LinearSVC, "fit", unconverged)
    net, train, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = tap(net, train, test, progress=False)
    ours = [str(w.message) for w in caught if w.category is TransferkitWarning]
    assert len(ours) == 1 and "svm at unit(s) 'unit1', 'unit2' (in 5,000 iterations)" in ours[0]
    assert "softmax" not in ours[0].split(";")[0] and "smaller c" in ours[0]
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert [str(w.message) for w in caught if w.category is UserWarning] == ["another warning of the fit"] * 2
    assert len(rows) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Tap(net, units="unit2").fit_transfer(None, target=train, val=test)
    ours = [str(w.message) for w in caught if w.category is TransferkitWarning]
    assert len(ours) == 1 and "svm at unit(s) 'unit2'" in ours[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_linear("svm", torch.randn(12, 3), torch.arange(12) % 2, 2)
    ours = [str(w.message) for w in caught if w.category is TransferkitWarning]
    assert len(ours) == 1 and ours[0].startswith("fit_linear: the svm classifier did not converge in 5,000")


def test_tap_scores_every_unit_and_classifier_on_the_test_split_then_drops_their_heads():
    from transferkit.methods.tap import tap
    net, target, val, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1), toy_domain(24, seed=2)
    m = _quiet_tap(net, target=target, val=val)
    got = m.test_results(test)["tap_test_accuracy"]
    by_hand = {r["unit"]: {"svm": r["svm_accuracy"], "softmax": r["softmax_accuracy"]}
               for r in tap(net, target, test)}  # the same classifiers, fit on the same images
    assert got == by_hand
    assert m.test_results(test) == {}  # dropped: the saved model holds the picked classifier only
    assert m(test.images[:2]).shape == (2, 4)  # the picked classifier still predicts
