"""Tests from a fourth mutation pass over api.py (the scikit-learn-like ``Transfer``); the earlier passes are in
test_experiment_mutation.py, test_api_mutation.py, test_api_third_mutation.py and test_cli_api_third_mutation.py.
Covered: a deep copy sharing a hook that is a callable object (not only a function); an unknown backbone and a seed
that is not a whole number refused when the model is made; fit warning of the target's last class without images;
the rows-by-position warning's "..." only past five target classes; Domain.unlabeled images taken without a warning
of their placeholder class; the pre-training memo re-done under another torch thread count; the one-epoch config
faster_flex asks its engine for; a method needing a validation split, and a validation split of other classes,
refused before any pre-training; a fresh backbone built for colour images' channels; from_run's model without a
fit result; source_only on a given net without a source warning of an unused val=, and with a checkpoint_dir it
never makes; score (not report) given one tuple offering a Domain; ``_option_text`` keeping a long repr of a
non-container whole; ``classes_`` a copy of the target domain's class names (the pass found fit kept the domain's
own list, so renaming a class of the domain in place afterwards renamed the fitted model's class; fixed). Each
test fails when the code its comment names is changed in the way it says.

Judged equivalent, so not tested: report's
``gzsl_gamma == 0`` made ``not gzsl_gamma`` (differs only for ``gzsl_gamma=None``, which no caller passes);
``_warn_rows_by_position`` without ``target is None`` (its only caller has a target: fit needs a target or a source,
and it is called without a source).

Left surviving: ``net.class_names`` set to classes_ whatever the head's number of outputs (as the earlier passes
found, no method keeps a named head of another size); head_classes taken as the source's for a given net whose head
is not the source's size (finetune retargets the head to the target either way; only which rows of the given head are
kept for shared class names could tell, not pinned down in the time). Killed by older tests elsewhere (not
repeated here): report's ``partial=True`` made ``False`` (test_zeroshot.py), the memo's key without
``source.digest()`` (test_eval_edges.py), clip's set_classes check in ``_logits`` and its captioned-source
check in fit (test_clip.py)."""

import copy
import warnings

import pytest
import torch
from helpers import tiny_net, toy_domain
from test_api_mutation import ONE

from transferkit.api import Transfer
from transferkit.domain import Domain
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning


class _Recorder:
    """A hook that is a callable object with state of its own."""

    def __init__(self):
        self.steps = []

    def __call__(self, step, state):
        self.steps.append(step)


def test_a_deep_copy_shares_a_hook_that_is_a_callable_object():
    # kills: __deepcopy__ deep-copying the hooks as well (a copy's hook would record into a list of its own)
    hook = _Recorder()
    model = Transfer("target_only", backbone="lenet", hooks=hook)
    assert copy.deepcopy(model).hooks[0] is hook
    assert copy.copy(model).hooks[0] is hook


def test_an_unknown_backbone_is_refused_when_the_model_is_made():
    # kills: `check_backbone(backbone)` dropped from __init__ (refused only when fit builds it)
    with pytest.raises(TransferkitError, match="lenett"):
        Transfer("finetune", backbone="lenett")


def test_fit_warns_of_a_target_class_without_images_even_the_last_one():
    # kills: the classes-without-images scan over `range(d.num_classes - 1)` (the last class never named)
    d = toy_domain(12, classes=3)
    gappy = Domain("gappy", d.images, d.labels, ["0", "1", "2", "last"])
    with pytest.warns(TransferkitWarning, match=r"fit: the target domain 'gappy' names 4 classes but has no image of "
                                                r"1 \(\['last'\]\)"):
        with pytest.raises(TransferkitError, match="val"):  # refused before any training
            Transfer("target_only", backbone="lenet").fit(target=gappy, val=Domain.unlabeled("v", d.images))


@pytest.mark.parametrize("classes, more", [(5, False), (6, True)])
def test_the_rows_by_position_warning_lists_five_classes_and_says_there_are_more_only_past_five(classes, more,
                                                                                                one_thread):
    # kills: ", ..." after exactly five classes (first_named lists five, then ", ...")
    names = ", ".join(f"'{c}'" for c in range(5))
    with pytest.warns(TransferkitWarning, match=rf"row i as target class i \(\[{names}"
                                                rf"{', ...' if more else ''}\]\); set net.class_names"):
        Transfer("finetune", train=ONE).fit(target=toy_domain(2 * classes, classes=classes), net=tiny_net(classes))


def test_unlabeled_images_without_a_target_are_taken_without_a_warning_of_their_placeholder_class(one_thread):
    # kills: the unseen-classes warning without `unlabeled.labeled` (Domain.unlabeled's "(unlabeled)" named unseen)
    src = toy_domain(16, classes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        model = Transfer("dann", backbone="lenet", train=ONE, pretrain=ONE).fit(
            source=src, unlabeled=Domain.unlabeled("u", toy_domain(8, seed=1, classes=2).images))
    assert model.classes_ == ["0", "1"]


def test_a_refit_under_another_torch_thread_count_pretrains_again(one_thread):
    # kills: the pre-training memo's key without `torch.get_num_threads()` (CPU sums differ with the thread count)
    model = Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE)
    tgt, src = toy_domain(8, seed=1), toy_domain(16)
    model.fit(target=tgt, source=src)
    memo = model._pretrained
    model.fit(target=tgt, source=src)
    assert model._pretrained is memo  # the same threads: reused
    torch.set_num_threads(2)  # the one_thread fixture restores the count
    model.fit(target=tgt, source=src)
    assert model._pretrained is not memo and model._pretrained[0] != memo[0]


def test_faster_flex_trains_its_donor_for_the_one_epoch_config_it_asks_the_engine_for(one_thread):
    # kills: fit's engine factory ignoring the `config` a method passes (`Engine(self.train_cfg, ...)` always)
    model = Transfer("faster_flex", backbone="lenet", train=TrainConfig(steps=5, batch_size=8), pretrain=ONE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferkitWarning)  # its proxies may tie after so short a donor
        model.fit(target=toy_domain(16, seed=1), source=toy_domain(16), val=toy_domain(8, seed=2))
    assert model.method_.extra_results()["surgery_steps"] == 2  # ceil(16 images / batch_size 8), not 5


def test_a_seed_that_is_not_a_whole_number_is_refused_when_the_model_is_made():
    # kills: __init__'s `torch_seed(seed)` dropped (a text or fractional seed taken as it is)
    for seed in ("1", 1.5, 1.0):
        with pytest.raises(TransferkitError, match="the seed must be a whole number"):
            Transfer("finetune", seed=seed)


def test_a_method_needing_a_validation_split_is_refused_before_any_pretraining():
    # kills: fit without `cls.check_data(target, val)` (flex pre-trained first, then refused)
    model = Transfer("flex", backbone="lenet", train=ONE, pretrain=ONE)
    with pytest.raises(TransferkitError, match="validation"):
        model.fit(target=toy_domain(8, seed=1), source=toy_domain(16))
    assert "_pretrained" not in model.__dict__


def test_a_validation_split_of_other_classes_is_refused_before_any_pretraining():
    # kills: fit without `check_selection_classes(cls, val, head_classes, target_classes)` (pre-trained first)
    other = toy_domain(8, seed=2)
    val = Domain("v", other.images, other.labels, ["a", "b", "c", "d"])
    model = Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE)
    with pytest.raises(TransferkitError, match=r"the validation domain 'v' has classes \['a', 'b', 'c', 'd'\]"):
        model.fit(target=toy_domain(8, seed=1), source=toy_domain(16), val=val)
    assert "_pretrained" not in model.__dict__


def test_a_fresh_backbone_is_built_for_the_channels_of_colour_images(one_thread):
    # kills: `_net` building the backbone with `in_channels=1` whatever the images' channels
    d = toy_domain(8, seed=1)
    rgb = Domain("rgb", d.images.expand(-1, 3, -1, -1).clone(), d.labels, d.class_names)
    model = Transfer("target_only", backbone="lenet", train=ONE).fit(target=rgb)
    assert model.input_shape_ == (3, 28, 28) and model.predict(rgb).shape == (8,)


def test_from_run_gives_a_model_without_a_fit_result(fitted, monkeypatch):
    # kills: from_run without `self.fit_result_ = None` (the loaded model had no fit_result_ at all)
    import transferkit.api as api
    from transferkit.config import ExperimentConfig
    saved = copy.deepcopy(fitted.method_)
    saved.classes_ = list(fitted.classes_)  # as load_model gives a job's model
    monkeypatch.setattr(api, "load_model", lambda *args: saved)
    monkeypatch.setattr(api, "load_config", lambda path: ExperimentConfig(
        name="fr", source="digits", target="digits", methods=["target_only"], backbone="lenet"))
    model = Transfer.from_run("run", "target_only")
    assert model.fit_result_ is None and model.classes_ == list(fitted.classes_)


def test_source_only_on_a_given_net_without_a_source_warns_of_a_val_it_does_not_use(one_thread):
    # kills: the network-only warning without `val is not None or` (a val= alone, under the default train=, unsaid)
    d = toy_domain(8, seed=1, classes=2)
    with pytest.warns(TransferkitWarning, match=r"val= and train= are not used: source_only with net= and without "
                                                r"source= trains nothing"):
        model = Transfer("source_only").fit(target=d, val=toy_domain(8, seed=2, classes=2), net=tiny_net(2))
    assert model.fit_result_.steps == 0


def test_option_text_keeps_a_long_repr_of_what_is_not_a_container_whole():
    # kills: `_option_text` cutting any long repr at the limit (a long text option shown cut in repr(model))
    from transferkit.api import _option_text
    text = "a prompt " * 12
    assert _option_text(text) == repr(text)


def test_classes_are_not_changed_by_a_later_in_place_change_of_the_target_domain(fitted):
    # found as a bug by this pass: fit kept the target domain's own class_names list as classes_ (now a copy)
    d = toy_domain(8)
    model = copy.copy(fitted).fit(target=d)
    d.class_names[0] = "renamed"
    assert model.classes_ == ["0", "1", "2", "3"]


def test_a_fit_that_trains_nothing_with_a_checkpoint_dir_leaves_it_unmade(tmp_path, one_thread):
    # kills: fit's clean-up without `if ckpt.is_dir()` (iterdir of a folder no training made)
    d = toy_domain(8, seed=1, classes=2)
    model = Transfer("source_only").fit(target=d, net=tiny_net(2), checkpoint_dir=tmp_path / "ck")
    assert model.fit_result_.steps == 0 and not (tmp_path / "ck").exists()


def test_score_given_one_tuple_offers_a_domain_and_report_does_not(fitted):
    # kills: `_check_classes`' " or a Domain" given to report instead of score
    d = toy_domain(8)
    with pytest.raises(TransferkitError, match=r"score\(images, labels\), or a Domain"):
        fitted.score((d.images, d.labels))
    with pytest.raises(TransferkitError, match=r"report\(Domain\(\"test\", images, labels, model.classes_\)\)$"):
        fitted.report((d.images, d.labels))
