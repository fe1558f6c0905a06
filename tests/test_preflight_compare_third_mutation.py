"""Tests from a third mutation pass over preflight.py and compare.py, for what the first two passes
(tests/test_preflight_compare_mutation.py, tests/test_preflight_shifts_second_mutation.py,
tests/test_report_compare_second_mutation.py) and the other tests let through. In preflight: the options
of a method not in methods checked all the same, how several settings are checked (a refusal when every
setting refuses, the settings said to pass, the warnings of the refused setting and of those tried
beside it, their category), the hint of an empty val split, source_only's hint without a source, any
error of a method's checks named with it, warnings check_jobs must not give (unlabelled images not
given, the budget of methods when nothing selects, select_metric at its default or beside a method
selecting on it), the ratio warning of several seeds given once, balancing's pretrain note, a class with
no train images beside k, and the plural texts of methods on the unlabelled rest, of several methods
that select on more labels and of several that read no target label. In compare: the versions a combined
table names (torch, Pillow) and its kernels, run configs read at the defaults of added keys, a plan's
uncompared keys, a method's options among the runs that ran it, options compared whatever their order,
data records two levels down and an unreadable data.json, the config keys that make runs read other
data, the splits named as differing, and the same run given by two spellings.

Judged equivalent, so not tested: compare's rows `{**r, "run": label}` -> `{"run": label, **r}` (a
run's own rows hold no "run" key). Several mutants killed here are also killed by slower tests of
tests/test_experiment.py / tests/test_experiment_mutation.py / tests/test_report.py (the options of a
method not run, the method_error of an option value, the empty val split's hint, the ratio warning of
several seeds, the unused-unlabelled and misspelt-stream checks, compare's Pillow key and kernels):
these are their fast, direct checks. Left surviving: none of those tried (check_jobs'
`check_streams(cls)` dropped is killed by test_experiment.py's misspelt-stream test, so not repeated here)."""

import warnings
from dataclasses import replace

import helpers
import pytest
import torch
from test_preflight_compare_mutation import _counted, _data, _differ, _results, _run, _warned

from transferkit import compare, preflight
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError, TransferkitWarning, check, warn
from transferkit.methods import get_method
from transferkit.rundata import Prepared
from transferkit.splits import Split


# ---- preflight: names --------------------------------------------------------------------------
def test_a_misspelt_option_of_a_method_not_run_is_refused_naming_how_to_drop_it():
    # kills: `unused` -> [] (options of methods not run left unchecked); `if not kept: raise` -> always bare raise
    cfg = ExperimentConfig(methods=["finetune"], options={"dann": {"wieght": 0.3}})
    with pytest.raises(TransferkitError, match=r"wieght.*dann is not in methods.*--set options\.dann=null"):
        preflight.check_names(cfg)


def test_an_option_value_refused_is_named_with_the_method():
    # kills: check_option_values' refusal raised without method_error's "method NAME with options ..."
    cfg = ExperimentConfig(methods=["dann"], options={"dann": {"weight": -1.0}})
    with pytest.raises(TransferkitError, match=r"^method dann with options \{'weight': -1\.0\}: "):
        preflight.check_names(cfg)


# ---- preflight: several settings ---------------------------------------------------------------
def _refusing(monkeypatch, refused, said=lambda k: None):
    """check_jobs refusing the settings k in ``refused`` (after warning ``said(k)``, where not None)."""
    def check_jobs(cfg, data, methods):
        if said(cfg.k) is not None:
            warn(said(cfg.k))
        check(cfg.k not in refused, f"k={cfg.k} is refused")
    monkeypatch.setattr(preflight, "check_jobs", check_jobs)


def test_when_every_setting_is_refused_the_first_refusal_is_given_as_it_is(monkeypatch):
    # kills: `if not passing: raise` dropped (" of this run's settings pass" with no setting named)
    _refusing(monkeypatch, {1, 2})
    with pytest.raises(TransferkitError) as e:
        preflight.check_settings(ExperimentConfig(k=[1, 2]).settings(), None, [])
    assert str(e.value) == "k=1 is refused"


def test_only_the_settings_that_pass_are_named_beside_a_refused_one(monkeypatch):
    # kills: _passes' `return False` -> `return True` (a refused setting named as passing)
    _refusing(monkeypatch, {2, 3})
    with pytest.raises(TransferkitError, match=r"^k=2 is refused \(at k=2; k=1 of this run's settings pass: leave k=2 "
                                               r"out of k"):
        preflight.check_settings(ExperimentConfig(k=[1, 2, 3]).settings(), None, [])


def test_warnings_of_the_settings_tried_beside_a_refused_one_are_not_given_again(monkeypatch):
    # kills: _passes' simplefilter("ignore") dropped (k=1's warning, met again while k=2 is refused, said
    # "alike at k=2")
    _refusing(monkeypatch, {2}, lambda k: f"note of k={k}" if k == 1 else None)
    said = []
    with pytest.raises(TransferkitError):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                preflight.check_settings(ExperimentConfig(k=[1, 2]).settings(), None, [])
            finally:
                said = [str(w.message) for w in caught]
    assert said == ["note of k=1"]


def test_a_refused_settings_own_warnings_are_still_given_and_are_transferkit_warnings(monkeypatch):
    # kills: the inner `finally` -> `else` (the refused setting's warnings lost); the outer `finally` -> given only
    # when no setting refuses; warn_explicit's category replaced by UserWarning
    _refusing(monkeypatch, {2}, lambda k: f"k={k}: class 3 is small")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TransferkitError, match="^k=2 is refused"):
            preflight.check_settings(ExperimentConfig(k=[1, 2]).settings(), None, [])
    assert [str(w.message) for w in caught] == ["k=1: class 3 is small (alike at k=2)"]
    assert caught[0].category is TransferkitWarning


# ---- preflight: check_jobs on tiny data --------------------------------------------------------
def _jobs_warnings(cfg, data, names) -> list[str]:
    return _warned(preflight.check_jobs, cfg, data, [get_method(m) for m in names])


def test_an_empty_val_split_selected_on_is_refused_with_the_other_select_on_values(one_thread):
    # kills: the val part checked never (only "test"); the "(or select_on: source_val / none)" hint dropped
    data = _data()
    data.target.val = data.target.val.subset(torch.zeros(len(data.target.val), dtype=torch.bool))
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, methods=["finetune"])
    with pytest.raises(TransferkitError, match=r"^target mnist has no val images .*\(or select_on: source_val / "
                                               r"none\)$"):
        preflight.check_jobs(cfg, data, [get_method("finetune")])


def test_no_unlabelled_images_given_gives_no_warning_of_them(one_thread):
    # kills: `data.unlabeled is not None` dropped from the unused-unlabelled warning ("unlabeled None: ...")
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", methods=["finetune"])
    assert not [m for m in _jobs_warnings(cfg, _data(), ["finetune"]) if "unlabel" in m]


def test_a_method_reading_target_labels_is_not_said_to_train_its_whole_budget_when_nothing_selects(one_thread):
    # kills: `cfg.select_on == "target_val"` dropped from the unselected methods (finetune named under select_on: none)
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", methods=["finetune"])
    assert not [m for m in _jobs_warnings(cfg, _data(), ["finetune"]) if "whole" in m]


def test_several_methods_reading_no_target_label_are_named_in_the_plural(one_thread):
    # kills: the unselected warning's "read" / "they do" / "train their" plural words made singular
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, methods=["dann", "coral"])
    said = [m for m in _jobs_warnings(cfg, _data(), cfg.methods) if "whole" in m]
    assert said == ["dann, coral read no target label, so they do not select on the target's validation labels "
                    "(select_on: target_val) and train their whole budget (set select_on: none or source_val to say "
                    "so)"]


def test_a_ratio_above_a_class_is_warned_about_once_whatever_the_repeats(one_thread):
    # kills: the other seeds' label subsets drawn without simplefilter("ignore", TransferkitWarning) (one per seed)
    cfg = ExperimentConfig(backbone="lenet", k=None, ratio=100, repeats=3, select_on="none", methods=["finetune"])
    said = [m for m in _jobs_warnings(cfg, _data(), ["finetune"]) if m.startswith("ratio 100")]
    assert len(said) == 1


def test_check_jobs_gives_the_balancing_and_selection_warnings(one_thread):
    # kills: the _warn_balancing / _warn_selection_settings_unused / _warn_more_validation_labels calls dropped
    base = ExperimentConfig(backbone="lenet", k=1, repeats=1, methods=["finetune", "dann"], val_per_class=3)
    cfg = replace(base, train=replace(base.train, sampler="balanced"))
    said = _jobs_warnings(cfg, _data(), cfg.methods)
    assert [m for m in said if m.startswith("train.sampler: balanced balances") and "dann reads no" in m]
    assert [m for m in said if m.startswith("finetune trains on 4 labelled target images (k=1) but selects")]
    said = _jobs_warnings(replace(base, select_on="none"), _data(), base.methods)
    assert [m for m in said if m.startswith("val_per_class: 3 caps")]


def test_source_only_without_a_source_domain_is_told_to_train_on_target_labels(one_thread):
    # kills: source_head_rows' `network_only=cfg.source is None` -> False (the hint of a run with source images)
    data = Prepared(source=helpers.toy_split(0, names=["a", "b", "c", "d"]), target=helpers.toy_split(10), channels=1)
    cfg = ExperimentConfig(source=None, pretrained="net.safetensors", backbone="lenet", k=2, repeats=1,
                           select_on="none", methods=["source_only"])
    with pytest.raises(TransferkitError, match=r"^method source_only: it predicts with the network's classifier, "
                                               r"whose classes .*lack the target classes .*: train on a few target "
                                               r"labels \(finetune"):
        preflight.check_jobs(cfg, data, [get_method("source_only")])


def test_any_error_a_methods_checks_raise_is_named_with_the_method(one_thread, monkeypatch):
    # kills: check_jobs' `except Exception` -> `except TransferkitError` (a ValueError raised unnamed)
    finetune = get_method("finetune")

    def check_data(labeled, val):
        raise ValueError("boom")
    monkeypatch.setattr(finetune, "check_data", check_data)
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", methods=["finetune"])
    with pytest.raises(TransferkitError, match="^method finetune: boom$"):
        preflight.check_jobs(cfg, _data(), [finetune])


def test_select_metric_at_its_default_is_not_said_unused():
    # kills: `cfg.select_metric != "accuracy"` dropped (select_metric: accuracy said to change nothing)
    said = _warned(preflight._warn_selection_settings_unused, ExperimentConfig(select_on="none"), _data(),
                   [get_method("finetune")])
    assert said == []


def test_select_metric_is_not_said_unused_where_a_method_selects_on_it():
    # kills: `not selecting` dropped (select_metric said unused beside finetune selecting on the target's val split)
    cfg = ExperimentConfig(select_on="target_val", select_metric="balanced_accuracy")
    assert _warned(preflight._warn_selection_settings_unused, cfg, _data(), [get_method("finetune")]) == []


def test_source_only_is_told_of_pretrain_when_any_balancing_setting_differs_there():
    # kills: `any(getattr(cfg.pretrain, k) != v ...)` -> `all(...)` (one of two settings set in pretrain silences it)
    base = ExperimentConfig()
    cfg = replace(base, train=replace(base.train, sampler="balanced", class_weight="balanced"),
                  pretrain=replace(base.pretrain, sampler="balanced"))
    said = _warned(preflight._warn_balancing, cfg, [get_method("source_only")])
    assert len(said) == 1 and said[0].startswith("source_only's row is the source network, which pretrain trains ("
                                                 "pretrain.sampler: balanced, pretrain.class_weight: ")


def test_k_leaves_out_a_class_without_train_images():
    # kills: _check_k_fits' small / keep over every class name rather than the present classes
    preflight._check_k_fits(ExperimentConfig(k=3), _counted([0, 5, 4]))
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(ExperimentConfig(k=3), _counted([0, 5, 2]))
    assert "fewer than 3 training images: c2 (2);" in str(e.value) and "c0" not in str(e.value)
    assert "(the classes to keep: ['c1'])" in str(e.value) and str(e.value).endswith("or lower k to 2")


def test_several_methods_on_the_unlabelled_rest_are_named_in_the_plural_and_absent_classes_not_at_all():
    # kills: the "trains" / "train" choice made singular; the class list over every class name, absent ones too
    train = _counted([0, 1, 1])
    data = Prepared(source=helpers.toy_split(0), target=Split(train, _counted([0, 1, 1]), _counted([0, 1, 1])),
                    channels=1)
    with pytest.raises(TransferkitError) as e:
        preflight._check_unlabelled_left(ExperimentConfig(k=1), data, [get_method("dann"), get_method("coral")],
                                         [_counted([])])
    assert str(e.value) == ("k=1 takes every train image of each target class (c1, c2: 1 each), so nothing is left "
                            "unlabeled for dann, coral, which train on the unlabelled target: lower k (at most 0), "
                            "or leave them out of methods")


def test_more_validation_labels_name_several_methods_in_the_plural_and_none_for_methods_that_do_not_select():
    # kills: `not few` dropped (a warning naming no method); the "train" / "select" / "their" plural made singular
    data = _data()
    cfg = ExperimentConfig(k=1)
    few = [_counted([1] * 4)]
    assert _warned(preflight._warn_more_validation_labels, cfg, data, [get_method("dann")], few) == []
    said = _warned(preflight._warn_more_validation_labels, cfg, data,
                   [get_method("finetune"), get_method("linear_probe")], few)
    assert said[0].startswith("finetune, linear_probe train on 4 labelled target images (k=1) but select (early "
                              "stopping, select_on: target_val) on the 8 labels of the target's validation split, "
                              "which their rows'")


def test_a_class_without_test_images_says_over_how_many_other_classes_accuracy_is():
    # kills: `int(trained.sum()) - len(ids)` -> `int(trained.sum())` in the target's own test split text
    full = Split(_counted([3, 3, 3]), _counted([1, 1, 1]), _counted([1, 0, 1]))
    from transferkit.splits import split_units
    counts, unit = split_units(full)
    said = _warned(preflight._warn_unscored_classes, ExperimentConfig(select_on="none"),
                   Prepared(source=full, target=full, channels=1), counts, unit)
    assert len(said) == 1 and "accuracy is over the other 2 classes" in said[0]


# ---- compare: environments, configs ------------------------------------------------------------
def test_a_combined_table_names_differing_torch_and_pillow_versions(tmp_path):
    # kills: combine_runs' environment_differ_lines dropped from its notes; "torch" left out of VERSIONED;
    # "packages.pillow" read as "pillow"
    a = _results(tmp_path / "a" / "results.json", environment={"torch": "2.4", "packages": {"pillow": "10"}})
    b = _results(tmp_path / "b" / "results.json", environment={"torch": "2.5", "packages": {"pillow": "11"}})
    assert compare.combine_runs([a, b])["notes"] == [
        "The runs were made with other versions: torch 2.4 in a; 2.5 in b / Pillow 10 in a; 11 in b; their rows may "
        "differ for that alone (docs/scale.md)."]


def test_only_the_kernels_that_differ_are_named():
    # kills: the fingerprint's `len({...}) > 1` -> `>= 1` (every operation named)
    envs = [("a", {"kernel_fingerprint": {"conv": "1", "matmul": "2"}}),
            ("b", {"kernel_fingerprint": {"conv": "1", "matmul": "3"}})]
    (line,) = compare.environment_differ_lines(envs)
    assert "compute matmul differently (kernel_fingerprint: a, b)" in line


def _config(**keys) -> dict:
    return {"backbone": "lenet", "methods": ["finetune"], **keys}


def test_run_configs_are_read_at_the_default_of_an_added_key_only_where_they_lack_it():
    # kills: `{**ADDED_FIELDS, **f}` -> `{**f, **ADDED_FIELDS}` (a run's own val_fraction replaced by the default)
    assert compare.config_differ_lines([("a", _config()), ("b", _config(val_fraction=0.15))]) == []
    (line,) = compare.config_differ_lines([("a", _config(val_fraction=0.1)), ("b", _config())])
    assert "val_fraction: 0.1 in a; 0.15 in b" in line


def test_a_plans_uncompared_keys_are_not_named_and_identical_configs_give_no_line():
    # kills: `{f"plan.{k}" for k in UNCOMPARED}` not subtracted; `if not parts: return []` dropped
    plans = [(label, {"benchmark": "b", "plan": {"out_dir": f"runs/{label}", "workers": n, "k": 1}})
             for label, n in (("a", 1), ("b", 4))]
    assert compare.config_differ_lines(plans) == []
    assert compare.config_differ_lines([("a", _config()), ("b", _config())]) == []


def test_a_combined_table_names_the_config_keys_its_runs_differ_in(tmp_path):
    # kills: combine_runs' config_differ left empty
    a = _results(tmp_path / "a" / "results.json", config=_config(methods=["finetune", "dann"]))
    b = _results(tmp_path / "b" / "results.json", config=_config(seed=1))
    (line,) = compare.combine_runs([a, b])["config_differ"]
    assert line.startswith("The runs' configs differ in seed: null in a; 1 in b (config.yaml)")


def test_options_of_a_method_one_run_left_out_are_not_compared():
    # kills: the `key in f` filter of "options." keys dropped (a run without dann said to run it at null)
    configs = [("a", _config(methods=["finetune", "dann"], options={})), ("b", _config(options={}))]
    assert compare.config_differ_lines(configs) == []


def test_options_written_in_another_order_are_the_same_options():
    # kills: json.dumps without sort_keys (a plugin method's {a, b} and {b, a} said to differ)
    configs = [(label, _config(methods=["not_a_method_here"], options={"not_a_method_here": opts}))
               for label, opts in (("a", {"x": 1, "y": 2}), ("b", {"y": 2, "x": 1}))]
    assert compare.config_differ_lines(configs) == []


# ---- compare: data records ---------------------------------------------------------------------
def test_data_records_are_read_two_levels_below_a_benchmark_and_an_unreadable_data_json_is_skipped(tmp_path):
    # kills: "*/*/" dropped from the depths searched; TransferkitError (read_json's refusal) no longer caught
    bench = tmp_path / "bench"
    _run(bench / "pair" / "s0", "npz:/abs/t.npz", {"target.train": "t1"})
    _run(bench / "broken", "npz:/abs/t.npz", {"target.train": "t9"})
    (bench / "broken" / "data.json").write_text("{not json")
    assert [data["target.train"] for _, data in compare._data_records(bench)] == ["t1"]


def test_a_run_from_before_a_split_key_was_added_reads_it_at_its_default(tmp_path):
    # kills: _domain_digests' `{**ADDED_FIELDS, **config}` -> config (an old run's missing val_fraction read as
    # None: never compared with a run that gives the default)
    a = _run(tmp_path / "a", "npz:/abs/t.npz", {"target.train": "t1"})
    b = _run(tmp_path / "b", "npz:/abs/t.npz", {"target.train": "t2"}, val_fraction=0.15, test_fraction=0.25)
    (line,) = _differ(("a", a), ("b", b))
    assert line.startswith("The target npz:/abs/t.npz is not the same data in run a as in run b (target.train")


@pytest.mark.parametrize("key, value", [("image_size", 32), ("channels", 3), ("target_classes", [0, 1]),
                                        ("val_per_class", 2), ("val_fraction", 0.1), ("test_fraction", 0.1)])
def test_runs_that_read_the_target_under_another_setting_are_not_compared_on_it(tmp_path, key, value):
    # kills: each of image_size, channels, target_classes, val_per_class, val_fraction, test_fraction dropped from
    # the target's DATA_KEYS (another setting's digests said to be other data)
    a = _run(tmp_path / "a", "npz:/abs/t.npz", {"target.train": "t1"})
    b = _run(tmp_path / "b", "npz:/abs/t.npz", {"target.train": "t2"}, **{key: value})
    assert _differ(("a", a), ("b", b)) == []


@pytest.mark.parametrize("key", ["val_fraction", "test_fraction"])
def test_runs_that_split_the_source_otherwise_are_not_compared_on_it(tmp_path, key):
    # kills: val_fraction / test_fraction dropped from the source's DATA_KEYS
    a = _run(tmp_path / "a", "npz:/abs/t.npz", {"source.train": "s1"})
    b = _run(tmp_path / "b", "npz:/abs/t.npz", {"source.train": "s2"}, **{key: 0.1})
    runs = [("a", a), ("b", b)]
    rows = [{"run": label, "source": "digits", "target": "npz:/abs/t.npz"} for label, _ in runs]
    assert compare.data_differ_lines(runs, rows) == []


def test_two_groups_name_a_group_of_several_runs_in_the_plural_and_only_the_splits_that_differ(tmp_path):
    # kills: _runs_apart's "runs" of a group of several dropped; the splits' `len({...}) > 1` -> `>= 1`
    runs = [(label, _run(tmp_path / label, "npz:/abs/t.npz", {"target.train": "t1", "target.test": test}))
            for label, test in (("a", "x1"), ("b", "x2"), ("c", "x1"))]
    assert _differ(*runs) == ["The target npz:/abs/t.npz is not the same data in runs a, c as in run b (target.test "
                              "differ in their data.json): their rows are not on the same data."]


def test_a_run_given_as_its_folder_and_as_its_file_is_refused(tmp_path):
    # kills: the "given twice" check comparing the paths as given rather than resolved
    path = _results(tmp_path / "a" / "results.json")
    with pytest.raises(TransferkitError, match="given twice"):
        compare.combine_runs([tmp_path / "a" / ".." / "a", path])
