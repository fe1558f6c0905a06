"""Tests from a second mutation pass over layer tapping (``methods/tap.py``), CAT and distillation
(``represent.py``) and the represent benchmark (``bench/represent.py``). The first passes
(``test_represent_mutation``, ``test_finetune_flex_mutation``, ``test_bench_other_mutation``) pinned
the documented equations, the tie rules and the tables; these kill what they let through: tap's
argument checks (no units, ``c=True``, unlabelled or empty domains, one class, negative labels), the
solvers' settings handed to scikit-learn, the warning given only when a fit did not converge, test
classes named but without images, the stage config's tag, the progress bar's terminal default,
``from_modules``' guessed input shape, a fitted tap's output and input sizes and its calls before a
fit; CAT's members without an input shape, its class count and name; the distillation's default
temperature, CatTwoStage's result taken from its probe, the source members' seeds; the benchmark's
distilled network read back from disk, its transfer rows (on a copy, seeded, CAT members given the
target rows of their heads, the labelled images counted), its episodic rows and the suite's loops and
note on small classes (the heavy parts monkeypatched). Each test names the mutants it kills.

Judged equivalent, so not tested: in ``tap``, ``train.num_classes`` -> ``max(train.labels) + 1`` for
the classifiers (absent classes never win: the accuracies are the same); the absent classes' bias
``-1e9`` -> ``-1e3`` (standardised features score far below 1e3); ``isinstance(u, str)`` dropped in
``tap_units`` (a non-string is no feature name either); in ``_transfer_row``, ``copy_net.embed_dim`` ->
``net.embed_dim`` (retargeting changes the head only).

Left surviving: ``tqdm(..., leave=False)`` -> ``True`` (a cosmetic trace on the terminal)."""

import io
import sys
import warnings

import pytest
import torch
from helpers import tiny_net, toy_domain

from transferkit.domain import Domain
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.methods import tap as tap_module
from transferkit.methods.tap import Tap, fit_linear, tap, unit_features

pytestmark = pytest.mark.usefixtures("one_thread")


def _fitted(units="unit2", target=None, val=None):
    m = Tap(tiny_net(4), units=units)
    m.fit_transfer(None, target=toy_domain(32) if target is None else target,
                   val=toy_domain(16, seed=1) if val is None else val)
    return m


# ---- tap: argument checks -------------------------------------------------------------------------------------


def test_tap_refuses_an_empty_unit_list_and_a_boolean_c():
    net, train, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    for run in (lambda: tap(net, train, test, units=[]), lambda: Tap(net, units=[])):  # kills: len(units) > 0 check
        with pytest.raises(TransferkitError, match="at least one unit"):
            run()
    with pytest.raises(TransferkitError, match="c must be a finite number > 0, got True"):  # kills: bool not refused
        tap(net, train, test, c=True)


def test_tap_refuses_unlabelled_training_and_test_domains():
    net, labelled = tiny_net(4), toy_domain(16)
    images = Domain.unlabeled("u", labelled.images)
    # kills: check_labeled(train) dropped; check_labeled(test) dropped
    with pytest.raises(TransferkitError, match="training domain 'u' has no labels"):
        tap(net, images, labelled)
    with pytest.raises(TransferkitError, match="test domain 'u' has no labels"):
        tap(net, labelled, images)


def test_fit_linear_refuses_one_class_and_negative_labels():
    x = torch.randn(12, 3)
    with pytest.raises(TransferkitError, match="at least 2 classes.*got 1"):  # kills: present >= 2 -> >= 1
        fit_linear("softmax", x, torch.zeros(12, dtype=torch.long), 3)
    # kills: y.min() >= 0 dropped
    with pytest.raises(TransferkitError, match=r"labels in \[0, 2\], got labels from -1"):
        fit_linear("softmax", x, torch.arange(12) % 3 - 1, 3)


def test_tap_method_needs_two_target_classes_and_target_images():
    one = toy_domain(8, classes=1)
    with pytest.raises(TransferkitError, match="at least 2 classes"):  # kills: min_classes = 2 -> 1
        Tap.check_data(target=one)
    empty = toy_domain(16).select_classes(["0"])
    empty = Domain("e", empty.images[:0], empty.labels[:0], empty.class_names)
    with pytest.raises(TransferkitError, match="tap needs labelled target examples"):  # kills: len(target) > 0 dropped
        Tap(tiny_net(4)).fit_transfer(None, target=empty, val=toy_domain(8))


def test_tap_and_its_method_before_a_fit_say_to_fit_first():
    m = Tap(tiny_net(4))
    x = torch.rand(2, 1, 28, 28)
    for run in (lambda: m(x), lambda: m.classifier_input(x), lambda: m.classifier_input_dim):
        with pytest.raises(TransferkitError, match="call fit_transfer first"):  # kills: forward / classifier_input
            run()  # checks dropped


# ---- the solvers ----------------------------------------------------------------------------------------------


def test_each_solver_gets_c_and_its_iterations(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    seen = {}
    for cls in (LinearSVC, LogisticRegression):
        real = cls.fit

        def recording(self, *a, real=real, **k):
            seen[type(self).__name__] = (self.C, self.max_iter)
            return real(self, *a, **k)
        monkeypatch.setattr(cls, "fit", recording)
    x, y = torch.randn(20, 3), torch.arange(20) % 2
    fit_linear("svm", x, y, 2, c=0.3)
    fit_linear("softmax", x, y, 2, c=0.3)
    # kills: LinearSVC's max_iter left at its default 1000; C=1.0 for either classifier
    assert seen == {"LinearSVC": (0.3, 5000), "LogisticRegression": (0.3, 1000)}


def test_tap_warns_only_when_a_fit_did_not_converge(monkeypatch):
    real = tap_module._fit_linear
    monkeypatch.setattr(tap_module, "_fit_linear", lambda *a, **k: (real(*a, **k)[0], True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tap(tiny_net(4), toy_domain(32), toy_domain(16, seed=1), units="unit2", progress=False)
    assert not [w for w in caught if w.category is TransferkitWarning]  # kills: `if named:` -> always warn


# ---- tap: data ------------------------------------------------------------------------------------------------


def test_tap_accepts_test_class_names_without_images_that_training_does_not_name():
    net, train, test = tiny_net(4), toy_domain(32), toy_domain(16, seed=1)
    more = Domain("m", test.images, test.labels, test.class_names + ["extra"])  # a named class with no image
    # kills: the unknown classes taken from every named class, not those with images (present_classes)
    assert tap(net, train, more, units="unit2") == tap(net, train, test, units="unit2")


def test_unit_features_do_not_bind_from_modules_guessed_input_shape():
    net = tiny_net(4)
    net.input_shape_guessed = True  # as from_modules marks its 224 x 224 guess
    feats = unit_features(net, torch.rand(3, 1, 32, 32), ["unit1"])  # kills: the shape checked whatever the guess
    assert feats["unit1"].shape == (3, 4 * 15 * 15)


def test_the_progress_bar_shows_by_default_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not tap_module._fit_pairs(["unit1"], None).disable  # kills: None read as False (never shown)
    assert tap_module._fit_pairs(["unit1"], False).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert tap_module._fit_pairs(["unit1"], None).disable and not tap_module._fit_pairs(["unit1"], True).disable


# ---- the Tap method -------------------------------------------------------------------------------------------


def test_tap_asks_for_its_stage_config_by_the_tag_tap():
    from transferkit.engine import Engine, TrainConfig
    tags = []

    def make_engine(tag, config=None):
        tags.append(tag)
        return Engine(TrainConfig(progress=False))
    Tap(tiny_net(4), units="unit2").fit_transfer(make_engine, target=toy_domain(32), val=toy_domain(16, seed=1))
    assert tags == ["tap"]  # kills: another tag (the run config's options of stage tap would not apply)


def test_tap_with_an_empty_validation_set_picks_on_training_accuracy():
    val = toy_domain(16, seed=1)
    empty = Domain("v", val.images[:0], val.labels[:0], val.class_names)
    with pytest.warns(TransferkitWarning, match="no validation set"):  # kills: on_val without len(val) > 0
        m = _fitted(val=empty)
    assert "tap_train_accuracy" in m.extra_results() and m.tap_unit == "unit2"


def test_tap_test_results_of_an_empty_test_split_are_empty():
    m = _fitted()
    test = toy_domain(8)
    # kills: len(test) == 0 not checked (an empty split's features cannot be concatenated)
    assert m.test_results(Domain("t", test.images[:0], test.labels[:0], test.class_names)) == {}


def test_tap_predicts_every_network_class_when_the_target_lacks_one():
    target = toy_domain(30, classes=3)  # images of classes 0-2; the network has 4 outputs
    target = Domain("t", target.images, target.labels, [str(c) for c in range(4)])
    m = _fitted(target=target, val=target)
    # kills: the classifiers sized by the labels present (max + 1) rather than net.num_classes
    assert m(target.images[:2]).shape == (2, 4) and m.tap_head.out_features == 4


def test_a_fitted_tap_reads_its_units_features_and_follows_a_float64_network():
    m = _fitted(units="unit1")
    assert m.classifier_input_dim == 4 * 13 * 13  # kills: in_features -> out_features
    m.net.double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    out = m(x)  # kills: forward_head not casting the classifier to the features' dtype
    assert out.dtype == torch.float64 and out.shape == (2, 4)


# ---- represent.py ---------------------------------------------------------------------------------------------


def test_cat_takes_a_member_without_an_input_shape_and_its_first_members_classes_and_name():
    from transferkit.represent import cat_network
    free = tiny_net(5)
    free.input_shape = None  # a network that binds no image shape
    cat = cat_network([tiny_net(3), free])  # kills: None counted as a shape of its own (members refused)
    assert tuple(cat.input_shape) == (1, 28, 28)
    assert cat.num_classes == 3  # kills: the class count taken from the last member
    assert cat.name == "cat2" and cat_network([tiny_net(3)], name="mine").name == "mine"  # kills: name "cat"


def test_source_members_are_seeded_one_apart_and_one_pretrained_network_is_allowed(monkeypatch):
    import dataclasses

    from transferkit.config import ExperimentConfig
    from transferkit.represent import source_members
    seeds = []

    def fake_pretrain(cfg, data, log):
        seeds.append(cfg.seed)
        return tiny_net(4), None
    monkeypatch.setattr("transferkit.source.pretrain_source", fake_pretrain)
    cfg = ExperimentConfig(seed=5)
    assert len(source_members(cfg, None, 3, log=lambda *a: None)) == 3
    assert seeds == [5, 6, 7]  # kills: seed + i -> another offset
    pinned = dataclasses.replace(cfg, pretrained="net.safetensors")
    assert len(source_members(pinned, None, 1, log=lambda *a: None)) == 1  # kills: `n == 1 or` dropped


def test_cat_two_stage_reports_the_probes_fit(monkeypatch):
    from transferkit.engine import Engine, FitResult
    from transferkit.methods.finetune import Finetune
    from transferkit.represent import CatTwoStage, cat_network
    member_fit = FitResult(steps=1, best_step=1, best_val_accuracy=0.1, stopped_early=False, wall_s=0.0,
                           val_accuracy=0.1)
    probe_fit = FitResult(steps=2, best_step=7, best_val_accuracy=0.8, stopped_early=True, wall_s=0.0,
                          val_accuracy=0.6)
    monkeypatch.setattr(Finetune, "fit_transfer", lambda self, make_engine, **kw: member_fit)
    monkeypatch.setattr(Engine, "fit", lambda self, method, **kw: probe_fit)
    fit = CatTwoStage(cat_network([tiny_net(4), tiny_net(4)])).fit_transfer(
        lambda tag, config=None: Engine(), target=toy_domain(8), val=toy_domain(8))
    # kills: best_step, stopped_early or val_accuracy not the probe's
    assert (fit.best_step, fit.stopped_early, fit.val_accuracy, fit.best_val_accuracy) == (7, True, 0.6, 0.8)


def test_distill_temperature_defaults_to_two():
    from transferkit.engine import Batch
    from transferkit.represent import Distill
    torch.manual_seed(0)
    student, teacher = tiny_net(4), [tiny_net(4)]
    batch = Batch(step=0, progress=0.0, source=(torch.rand(6, 1, 28, 28), torch.arange(6) % 4))
    def kd(**options):
        torch.manual_seed(1)  # the same student heads
        return float(Distill(student, teacher=teacher, **options).losses(batch)["kd"].detach())
    assert kd() == pytest.approx(kd(temperature=2.0)) and kd() != pytest.approx(kd(temperature=1.0))  # kills: T=1


# ---- bench/represent.py ---------------------------------------------------------------------------------------


def _data(train=None):
    from types import SimpleNamespace
    return SimpleNamespace(source=SimpleNamespace(train=toy_domain(16), val=toy_domain(8, seed=3)), channels=1,
                           target=SimpleNamespace(train=train or toy_domain(16), val=toy_domain(8, seed=1),
                                                  test=toy_domain(8, seed=2)))


def test_a_distilled_network_on_disk_is_read_back_not_distilled_again(tmp_path):
    from types import SimpleNamespace

    from helpers import state_copy

    from transferkit.bench.represent import _distilled
    cfg = SimpleNamespace(seed=0, backbone="lenet", image_size=28)
    path, logged = tmp_path / "distill.safetensors", []
    first = _distilled(cfg, _data(), [tiny_net(4), tiny_net(4)], SimpleNamespace(distill=1), path, logged.append)
    assert path.exists() and len(logged) == 1
    again = _distilled(cfg, _data(), [tiny_net(4), tiny_net(4)], SimpleNamespace(distill=1), path, logged.append)
    assert len(logged) == 1  # kills: the file's network not returned (distilled again)
    assert all(torch.equal(v, state_copy(again)[k]) for k, v in state_copy(first).items())


def test_a_transfer_row_works_on_a_copy_and_counts_the_labelled_images():
    from types import SimpleNamespace

    from helpers import state_copy

    from transferkit.bench.represent import _transfer_row
    from transferkit.engine import TrainConfig
    net, labeled = tiny_net(4), toy_domain(12)
    before = state_copy(net)
    cfg = SimpleNamespace(train=TrainConfig(steps=2, eval_every=2, batch_size=8, progress=False))
    row = _transfer_row("erm", net, "finetune", 2, 0, labeled, _data(), cfg, {"source": "s", "target": "t"})
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # kills: no deepcopy of the net
    assert (row["method"], row["setting"], row["n_labeled"], row["feature_dim"]) == ("erm/finetune", "2/class", 12, 16)
    assert row["val_accuracy"] is not None  # kills: no validation split given to the fit


def test_episodic_rows_run_the_plans_episodes_at_one_and_five_shots():
    from types import SimpleNamespace

    from transferkit.bench.represent import _fewshot_rows
    test = Domain("t", torch.rand(150, 1, 28, 28), torch.arange(150) % 5, [str(i) for i in range(5)])
    rows = _fewshot_rows("cat2", tiny_net(5), SimpleNamespace(target=SimpleNamespace(test=test)),
                         SimpleNamespace(episodes=3), {"source": "s"})
    assert {r["episodes"] for r in rows} == {3}  # kills: a fixed number of episodes
    assert [(r["method"], r["setting"]) for r in rows] == [
        (f"cat2/fewshot_{h}", f"5-way {k}-shot") for k in (1, 5) for h in ("linear", "cosine", "prototype")]


def test_the_suite_runs_every_representation_method_size_and_seed_and_notes_small_classes(tmp_path, monkeypatch):
    from transferkit.bench import represent as bench
    small = toy_domain(12)  # 3 images per class
    monkeypatch.setattr(bench, "prepare_domains", lambda cfg: _data(small))
    monkeypatch.setattr(bench, "source_members", lambda cfg, data, n, log, pin_dir: [tiny_net(4) for _ in range(n)])
    monkeypatch.setattr(bench, "_distilled", lambda *a: tiny_net(4))
    monkeypatch.setattr(bench, "_fewshot_rows", lambda *a: [])

    def fake_row(rep, net, method_name, n, seed, labeled, data, cfg, base):
        return {**base, "method": f"{rep}/{method_name}", "setting": f"{n}/class", "seed": seed, "accuracy": 0.5,
                "wall_s": 0.0}
    monkeypatch.setattr(bench, "_transfer_row", fake_row)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3, 4], seeds=[0, 1])
    lines = []
    rows = bench.represent_suite(plan, tmp_path, lines.append)
    # kills: the distilled (last) representation left out of the transfer rows
    assert {r["method"].split("/")[0] for r in rows} == {"erm", "cat2", "distill"} and len(rows) == 3 * 3 * 2 * 2
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 1 and "'4/class'" in notes[0]  # kills: a size equal to the smallest class noted
    assert (tmp_path / "represent.md").exists()


def test_a_transfer_row_is_seeded_and_gives_cat_members_the_target_rows_of_their_heads(monkeypatch):
    from types import SimpleNamespace

    from transferkit.bench import represent as bench
    from transferkit.engine import FitResult, TrainConfig
    from transferkit.represent import CatTwoStage, cat_network
    heads = []

    def fake_fit(self, make_engine, target=None, val=None):
        heads.append([m.num_classes for m in self.net.unit("cat").members])
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    monkeypatch.setattr(CatTwoStage, "fit_transfer", fake_fit)
    monkeypatch.setattr(bench, "evaluate_on",  # the head itself as the "accuracy": its initial rows are compared
                        lambda method, test: {"accuracy": float(method.net.head.weight.detach().sum())})
    source = toy_domain(12, classes=6)  # the members' 6 source classes; the target has 4 of them
    data = _data()
    data.source.train = source
    cfg = SimpleNamespace(train=TrainConfig(steps=1, progress=False))
    cat = cat_network([tiny_net(6), tiny_net(6)], seed=0)
    bench._transfer_row("cat2", cat, "two_stage", 2, 0, toy_domain(8), data, cfg, {})
    assert heads == [[4, 4]]  # kills: the members not retargeted (each fine-tuned from a new head, not its own)
    names = Domain("t", data.target.train.images, data.target.train.labels, list("abcd"))  # no class shared: new rows
    data.target.train = names
    rows, erm = [], tiny_net(6)
    for state in (1, 2):  # the global random state left by the jobs before
        torch.manual_seed(state)
        rows.append(bench._transfer_row("erm", erm, "linear_probe", 2, 0, toy_domain(8), data, cfg, {}))
    assert rows[0]["accuracy"] == rows[1]["accuracy"]  # kills: torch.manual_seed(seed) dropped (new rows unseeded)
