"""Tests from a second mutation pass over api.py (the scikit-learn-like ``Transfer``); the first pass
is in test_experiment_mutation.py. Covered: option values refused when a model is made and training
configs given as mappings (their section named) or of a wrong type; fit leaving the caller's random
state as it was, refusing an empty domain, a target or source of one class, a given net whose head
does not fit the source and a method without a stream it reads (before any pre-training), warning of a
source class without images, of a given head naming other classes, of unlabeled images of classes the
source has no image of (only without a target) and of a train config source_only on a given net does
not use; a CaptionedDomain taken as clip's source, Domain.unlabeled as unlabeled images,
target_only re-initialising a given net, source_only training on a given source, the transfer stage
selecting on the model's metric, a source_val of the source's classes in their order, a guessed input
shape bound to the images after fit; the pre-training memo re-done when source_val or the pretrain
config changes, kept by a shallow copy and left out of a deep one; from_run's seed, options, input
shape and unfinished jobs; predict / predict_proba / score / report on no images, images of another
size, a head changed after fit, labels out of range or of another length, both forms at once, an
unfitted model and gzsl_gamma of a model that is not zero-shot; ``_option_text``'s cut of long
containers; a given net naming fewer classes than its head's rows kept by position. Each test fails when the
code its comment names is changed in the way it says.

Judged equivalent, so not tested: fit without `torch.enable_grad()` (`torch.inference_mode(False)` already turns
grad mode on, so a fit inside a no_grad block trains alike); `getattr(cls, "selects_on_validation", True)` made
`False` (every method inherits the attribute from Method); `self._pretrained = None` before a pre-training
dropped (the memo is a copy of the weights under the key of what they were trained on: a pre-training that
fails under another key cannot make it stale); the memo's key without the source's class names (names do not
change what a pre-training learns; another number of classes changes the network digest); a fresh net's head
built on `(source or target)` for a method that trains on the target (the head is retargeted to the target's
classes; only the random draw of its rows differs); `_train_config` returning the default itself, not a copy
(both callers make a default for the call); transform's `forward_features` check dropped (every UnitNet has
one, and fit and from_run take UnitNets only). Left surviving: the memo's key without the seed (a built-in
backbone's initial weights, which the key digests, change with the seed; only a plugin backbone whose initial
weights ignore the seed would tell, through the pre-training's batches); `net.class_names` set to classes_
whatever the head's number of outputs (no method found whose fitted network keeps a named head of another
size: lext, matching_net and source_only retarget it). Killed by older tests outside the two API files (not
repeated here): a guessed input shape checked as a given one (test_user_networks.py)."""

import copy
import pickle
import warnings

import pytest
import torch
from helpers import toy_domain

from transferkit.api import Transfer, _option_text
from transferkit.domain import Domain
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning

ONE = TrainConfig(steps=1, batch_size=8)


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        return fn()


# -- construction ------------------------------------------------------------------------------

def test_an_option_value_outside_its_domain_is_refused_when_the_model_is_made():
    # kills: `check_option_values(self.method_cls, options)` dropped from __init__ (refused only at fit)
    with pytest.raises(TransferkitError, match="weight must be a finite number >= 0"):
        Transfer("dann", weight=-1.0)


def test_train_configs_given_as_mappings_name_their_section_and_other_types_are_refused():
    # kills: `updated(default, value, f"{name}.")` made `updated(default, value, "")`;
    # `check(isinstance(value, TrainConfig), ...)` dropped from _train_config
    assert Transfer("finetune", train={"steps": 3}).train_cfg == TrainConfig(steps=3)
    assert Transfer("finetune", pretrain={"lr": 0.5}).pretrain_cfg.steps == 600  # the rest from pretrain's default
    with pytest.raises(TransferkitError, match=r"pretrain\.stepz"):
        Transfer("finetune", pretrain={"stepz": 3})
    with pytest.raises(TransferkitError, match="train must be a TrainConfig or a mapping of its fields, got int"):
        Transfer("finetune", train=5)


# -- fit: what is refused or warned before any training ----------------------------------------

def test_fit_leaves_the_callers_random_state_and_trains_inside_a_no_grad_block(one_thread):
    # kills: `torch.random.fork_rng()` dropped from fit; `torch.enable_grad()` dropped from fit
    d = toy_domain(16, classes=2)
    reference = Transfer("target_only", backbone="lenet", train=ONE).fit(target=d).net_.state_dict()
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    with torch.no_grad():
        model = Transfer("target_only", backbone="lenet", train=ONE).fit(target=d)
    assert torch.equal(torch.rand(3), want)
    assert all(torch.equal(v, reference[k]) for k, v in model.net_.state_dict().items())


def test_fit_refuses_an_empty_domain_and_a_target_or_source_of_one_class():
    # kills: `len(d) > 0` made `>= 0`; `len(classes) >= 2` made `>= 1`; `source.num_classes >= 2` made `>= 1`
    d = toy_domain(16, classes=2, name="two")
    with pytest.raises(TransferkitError, match="the target domain 'two' is empty"):
        Transfer("target_only", train=ONE).fit(target=d[:0])
    one = Domain("one", d.images, torch.zeros(16, dtype=torch.long), ["a"])
    with pytest.raises(TransferkitError, match=r"the target domain 'one' has one class \(\['a'\]\)"):
        Transfer("target_only", train=ONE).fit(target=one)
    with pytest.raises(TransferkitError, match=r"the source domain 'one' has one class"):
        Transfer("finetune", train=ONE, pretrain=ONE).fit(target=d, source=one)


def test_a_source_naming_a_class_without_images_warns():
    # kills: the empty-class warning made `k in ("target",)` (a source's gaps said nothing)
    gap = Domain("gap", torch.rand(8, 1, 28, 28), torch.tensor([0, 2] * 4), ["a", "b", "c"])
    with pytest.warns(TransferkitWarning, match=r"the source domain 'gap' names 3 classes but has no image of 1"):
        Transfer("source_only", backbone="lenet", train=ONE).fit(source=gap)


# -- copies ------------------------------------------------------------------------------------

def test_a_shallow_copy_keeps_the_pretraining_memo_and_a_deep_copy_leaves_it_out(one_thread):
    # kills: __copy__ dropping `_pretrained`; __deepcopy__ keeping it
    model = Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE)
    model.fit(target=toy_domain(16, seed=1, classes=2), source=toy_domain(16, classes=2))
    assert model._pretrained is not None and copy.copy(model)._pretrained is model._pretrained
    assert "_pretrained" not in copy.deepcopy(model).__dict__
    assert "_pretrained" not in pickle.loads(pickle.dumps(model)).__dict__


# -- predicting and scoring --------------------------------------------------------------------

def test_no_images_give_no_rows_over_every_class_and_probabilities_sum_to_one_per_image(fitted):
    # kills: `_logits`' empty answer `zeros(0, len(classes_))` made `zeros(0, 0)`; softmax over dim 0
    x = toy_domain(6, seed=3, classes=4).images
    assert fitted.predict_logits(x[:0]).shape == (0, 4) and fitted.predict_proba(x[:0]).shape == (0, 4)
    proba = fitted.predict_proba(x)
    assert proba.shape == (6, 4) and torch.allclose(proba.sum(1), torch.ones(6))


def test_option_text_keeps_short_reprs_and_shortens_long_containers():
    # kills: `len(text) <= limit` made `<`; the first entry cut at `limit` instead of `limit // 2`; the size left out
    exactly = ["a" * 76]
    assert len(repr(exactly)) == 80 and _option_text(exactly) == repr(exactly)
    text = _option_text(["x" * 100, "y"])
    assert text.startswith("<list of 2: 'xxx") and len(text) < 80 and "y" not in text
    assert _option_text({"k": "v" * 100}).startswith("<dict of 1: 'k': 'vvv")


def test_score_of_images_and_labels_refuses_labels_out_of_range_wrong_lengths_no_images_and_both_forms(fitted):
    # kills: `hi < len(classes_)` made `<=`; `lo >= 0` made `> -2`; the labels' shape check dropped; the
    # "no images" check dropped; the "not both" check dropped; the "call fit before score" check dropped
    d = toy_domain(8, seed=3, classes=4)
    assert 0 <= fitted.score(d.images, d.labels) <= 1
    for wrong, found in ((4, r"0\.\.4"), (-1, r"-1\.\.3")):
        labels = d.labels.clone()
        labels[0] = wrong
        with pytest.raises(TransferkitError, match=rf"labels out of range \[0, 3\] \(found {found}\)"):
            fitted.score(d.images, labels)
    with pytest.raises(TransferkitError, match=r"8 images but labels of shape \(7,\)"):
        fitted.score(d.images, d.labels[:7])
    with pytest.raises(TransferkitError, match="score: no images"):
        fitted.score(d.images[:0], d.labels[:0])
    with pytest.raises(TransferkitError, match="not both"):
        fitted.score(d, d.labels)
    with pytest.raises(TransferkitError, match="call fit before score"):
        Transfer("target_only").score(d.images, d.labels)


def test_score_and_report_of_a_domain_refuse_an_empty_one_an_unfitted_model_and_a_gamma_of_a_non_zsl_model(fitted):
    # kills: `len(domain) > 0` dropped from score; `check(hasattr(self, "classes_"), ...)` dropped from
    # _check_classes; `seen is not None or gzsl_gamma == 0` dropped from report
    d = toy_domain(8, seed=3, classes=4, name="test")
    with pytest.raises(TransferkitError, match="score: domain 'test' is empty"):
        fitted.score(d[:0])
    for call in ("score", "report"):
        with pytest.raises(TransferkitError, match=f"call fit before {call}"):
            getattr(Transfer("target_only"), call)(d)
    with pytest.raises(TransferkitError, match="gzsl_gamma calibrates .* not of target_only"):
        fitted.report(d, gzsl_gamma=0.5)
    assert fitted.report(d, gzsl_gamma=0)["class_names"] == ["0", "1", "2", "3"]


def test_predict_refuses_images_of_another_size_and_a_head_changed_after_fit(fitted):
    # kills: `image_batch(..., exact=True)` made `exact=False`; the logits' width check dropped
    with pytest.raises(TransferkitError, match=r"predict: expected an N x 1 x 28 x 28 image tensor"):
        fitted.predict(torch.rand(2, 1, 32, 32))
    changed = copy.deepcopy(fitted)
    changed.net_.reset_classifier(3)
    with pytest.raises(TransferkitError, match="gives 3 outputs for its 4 classes: its head was changed after fit"):
        changed.predict(torch.rand(2, 1, 28, 28))


def test_a_source_validation_split_must_have_the_source_classes_in_their_order():
    # kills: the source_val class check made `set(source_val.class_names) <= set(source.class_names)`
    src = toy_domain(16, classes=3, name="src")
    for names in (["2", "1", "0"], ["0", "1"]):
        other = Domain("v", src.images[:6], src.labels[:6] % len(names), names)
        with pytest.raises(TransferkitError, match=r"source_val 'v' must have the source's classes \['0', '1', '2'\]"):
            Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE).fit(target=src, source=src,
                                                                               source_val=other)


def test_source_only_on_a_given_net_without_a_source_warns_of_a_train_config_it_does_not_use():
    # kills: the network-only warning made `network_only and val is not None` (a changed train= said nothing)
    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", num_classes=2, in_channels=1, image_size=28)
    net.class_names = ["0", "1"]
    target = toy_domain(8, classes=2)
    with pytest.warns(TransferkitWarning, match=r"train= is not used: source_only with net= and without source="):
        Transfer("source_only", train=TrainConfig(steps=5)).fit(target=target, net=net)
    assert _quiet(lambda: Transfer("source_only").fit(target=target, net=net)).fit_result_.steps == 0


def test_unlabeled_images_of_classes_the_source_has_no_image_of_warn_only_without_a_target():
    # kills: `seen` made every source class name (not those with images); the warning given with target= too
    src = Domain("src", torch.rand(8, 1, 28, 28), torch.tensor([0, 1] * 4), ["a", "b", "c"])
    unlabeled = Domain("u", torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2] * 2), ["a", "b", "c"])
    with pytest.warns(TransferkitWarning, match=r"the unlabeled domain 'u' names classes the source has no image of "
                                                r"\(\['c'\]\)"):
        Transfer("dann", backbone="lenet", train=ONE, pretrain=ONE).fit(source=src, unlabeled=unlabeled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Transfer("dann", backbone="lenet", train=ONE, pretrain=ONE).fit(target=unlabeled, source=src,
                                                                        unlabeled=unlabeled)
    assert not [w for w in caught if "has no image of" in str(w.message) and "unlabeled" in str(w.message)]


def test_a_method_is_refused_before_pretraining_without_a_stream_it_reads(monkeypatch):
    # kills: the `for name in cls.streams` check of fit dropped
    made, d = _engines(monkeypatch), toy_domain(16, classes=2)
    with pytest.raises(TransferkitError, match=r"method 'dann' needs a non-empty unlabeled domain: fit\(unlabeled="):
        Transfer("dann", backbone="lenet", train=ONE, pretrain=ONE).fit(target=d, source=d)
    assert made == []


def _engines(monkeypatch) -> list:
    """Every Engine that ``transferkit.api`` makes from now on, as (seed, select_metric)."""
    import transferkit.api as api
    from transferkit.engine import Engine
    made = []

    class Spy(Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self.seed, self.select_metric))
    monkeypatch.setattr(api, "Engine", Spy)
    return made


def test_the_transfer_stage_selects_on_the_models_metric_and_the_pretraining_on_accuracy(monkeypatch, one_thread):
    # kills: fit's Engine given `select_metric="accuracy"` instead of the model's
    made = _engines(monkeypatch)
    d = toy_domain(16, classes=2)
    Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE, seed=3,
             select_metric="balanced_accuracy").fit(target=d, source=d, val=d)
    assert made == [(3, "accuracy"), (3, "balanced_accuracy")]


def test_clip_fits_on_a_captioned_domain_itself_as_on_its_domain():
    # kills: fit's `source = source.domain` for a CaptionedDomain dropped (refused as no Domain)
    from transferkit.clip import CaptionedDomain
    g = torch.Generator().manual_seed(0)
    shapes = Domain("shapes", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 2, ["vertical bar", "blob"])
    captioned = CaptionedDomain(shapes, [f"a {shapes.class_names[y]}" for y in shapes.labels.tolist()])
    model = Transfer("clip", backbone="lenet", captions=captioned.captions, text_encoder="hashing", train=ONE,
                     pretrain=ONE).fit(source=captioned)
    assert model.classes_ == ["vertical bar", "blob"]


def test_unlabeled_images_without_labels_are_taken():
    # kills: `if k != "unlabeled"` dropped (Domain.unlabeled refused as unlabelled)
    src = toy_domain(16, classes=2)
    model = Transfer("dann", backbone="lenet", train=ONE, pretrain=ONE).fit(
        source=src, unlabeled=Domain.unlabeled("u", toy_domain(8, seed=1, classes=2).images))
    assert model.classes_ == ["0", "1"]


def _lenet(classes, names=None):
    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", num_classes=classes, in_channels=1, image_size=28)
    net.class_names = names
    return net


def test_a_given_net_whose_head_does_not_fit_the_source_is_refused_and_one_naming_other_classes_warns():
    # kills: the head-size refusal of source-head methods made never true; the warning of a head naming
    # classes other than the source's made `==`
    src = toy_domain(12, classes=3, name="s")
    with pytest.raises(TransferkitError, match=r"the network has 4 outputs and the source domain 's' 3 classes"):
        Transfer("source_only", train=ONE).fit(source=src, net=_lenet(4))
    with pytest.warns(TransferkitWarning, match=r"the network's head names the classes \['2', '1', '0'\] but the "
                                                r"source 's' has \['0', '1', '2'\]"):
        Transfer("finetune", train=ONE).fit(target=src, source=src, net=_lenet(3, ["2", "1", "0"]))


def test_a_given_net_whose_class_names_miscount_its_rows_is_said_to_have_them_unused():
    # the pass's wording slip (fixed): two names for three rows were said to be "no classes"
    with pytest.warns(UserWarning, match=r"fit: the network's class_names lists 2 names for its head's 3 rows \(not "
                                         r"used\), as many as the target's: they are kept by position"):
        Transfer("ft_unit:conv2", train=ONE).fit(target=toy_domain(9, classes=3), net=_lenet(3, ["0", "1"]))


def test_target_only_reinitialises_a_given_net():
    # kills: target_only's `reinitialise(net)` dropped
    torch.manual_seed(1)  # not the model's seed, which fit initialises with
    net, tgt = _lenet(4), toy_domain(8, seed=1, classes=2)
    tiny = TrainConfig(steps=1, batch_size=8, lr=1e-12)
    model = Transfer("target_only", train=tiny).fit(target=tgt, net=net)
    given, fitted = net.state_dict(), model.net_.state_dict()
    assert not torch.allclose(fitted["units.conv1.0.weight"], given["units.conv1.0.weight"], atol=1e-3)


def test_source_only_on_a_given_net_with_a_source_trains_on_it():
    # kills: `network_only` made true with a source given (nothing trained)
    src = toy_domain(16, classes=2)
    model = Transfer("source_only", train=ONE).fit(target=src, source=src, net=_lenet(2))
    assert model.fit_result_.steps == 1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run of two seeds of target_only and matching_net (scale=5) on digits."""
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    tiny = TrainConfig(steps=2, batch_size=8)
    cfg = ExperimentConfig(name="fr", source="digits", target="digits", k=2, repeats=2, seed=0,
                           methods=["target_only", "matching_net"], options={"matching_net": {"scale": 5.0}},
                           backbone="lenet", pretrain=tiny, train=tiny, out_dir=str(tmp_path_factory.mktemp("runs")))
    return run_experiment(cfg, log=lambda *a: None)[0]


def test_from_run_takes_the_seed_asked_the_runs_options_and_the_networks_input_shape(run_dir):
    # kills: from_run's `seed=cfg.seed if seed is None else seed` made `seed=cfg.seed`; the run's options of the
    # method left out; `input_shape_` left None (images of another size not refused)
    model = Transfer.from_run(run_dir, "matching_net", seed=1)
    assert model.get_params()["seed"] == 1 and model.get_params()["scale"] == 5.0
    plain = Transfer.from_run(run_dir, "target_only")
    assert plain.seed == 0 and plain.input_shape_ == (1, 28, 28)
    with pytest.raises(TransferkitError, match=r"predict: expected an N x 1 x 28 x 28 image tensor"):
        plain.predict(torch.rand(2, 1, 32, 32))


def test_a_refit_pretrains_again_when_a_source_validation_split_is_added_or_the_pretrain_config_changed(
        monkeypatch, one_thread):
    # kills: the pre-training memo's key left without the source_val digest (a pre-training without early
    # stopping reused for one with it); the key left without `repr(self.pretrain_cfg)`
    made = _engines(monkeypatch)
    src, tgt = toy_domain(24, classes=2), toy_domain(8, seed=1, classes=2)
    model = Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE)
    model.fit(target=tgt, source=src)
    model.fit(target=tgt, source=src)
    assert len(made) == 3  # the second fit reused the pre-training
    val = toy_domain(8, seed=2, classes=2)
    model.fit(target=tgt, source=src, source_val=val)
    assert len(made) == 5
    model.set_params(pretrain=TrainConfig(steps=2, batch_size=8)).fit(target=tgt, source=src, source_val=val)
    assert len(made) == 7


def test_from_run_of_a_job_saved_without_its_result_row_is_an_error(run_dir, tmp_path):
    # kills: from_run's `warnings.simplefilter("error", TransferkitWarning)` made "default" (a model of an unfinished
    # job returned with a warning)
    import shutil
    copied = shutil.copytree(run_dir, tmp_path / "run")
    (rows,) = [p for p in (copied / "jobs").glob("target_only-*-s1.json")]
    rows.unlink()
    with pytest.raises(TransferkitError, match="Transfer.from_run needs a finished job"):
        Transfer.from_run(copied, "target_only", seed=1)


def test_a_guessed_input_shape_becomes_the_images_shape_which_then_binds_the_fitted_network():
    # kills: _take_image_shape leaving `input_shape_guessed` True (a later fit on images of another size not refused)
    from torch import nn

    from transferkit.adapters import from_modules

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
            self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.block2(self.block1(x)))

    net = from_modules(Pooled(), units=["block1", "block2"], head="fc")
    assert net.input_shape_guessed
    d = toy_domain(16, classes=2)
    model = Transfer("ft_all", train=ONE).fit(target=d, net=net)
    assert model.net_.input_shape == (1, 28, 28) and not model.net_.input_shape_guessed
    small = Domain("small", d.images[:, :, :20, :20], d.labels, d.class_names)
    with pytest.raises(TransferkitError, match=r"the images are \(1, 20, 20\) \(C, H, W\) and the network was built "
                                               r"for \(1, 28, 28\)"):
        Transfer("ft_all", train=ONE).fit(target=small, net=model.net_)


def test_a_given_net_naming_fewer_classes_than_its_head_rows_keeps_them_by_position_with_a_warning():
    # kills: head_classes taken from `net.class_names` without `len(named) == net.num_classes` (silently by name)
    with pytest.warns(TransferkitWarning, match=r"they are kept by position, row i as target class i"):
        Transfer("finetune", train=ONE).fit(target=toy_domain(9, classes=3), net=_lenet(3, ["0", "1"]))
