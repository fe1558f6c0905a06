"""Tests from a fourth mutation pass over rundir.py and rundata.py (the earlier ones: test_rundir_rundata_mutation.py,
test_rundir_rundata_second_mutation.py and test_rundir_rundata_third_mutation.py): a finished job file holding another
job's row or a row of another ``--nproc``, refused by ``finished_rows`` itself; the hint of a refused row when the
config results.json keeps names the change and the row also records its options or reads an option file; the options
of an unfinished job's checkpoints compared as config.yaml stores them (tuples as lists); and of a run's data, the
unlabelled images in the run's channels (no warning), a test set of target classes only (no warning) and one whose
other classes a ``target_classes`` list left out, an ``all`` class list in any case and spacing, a class with a single
training image, and a process's data prepared without a progress bar. Each test fails when the code it names is
changed in the way its comment says.

Judged equivalent, so not tested: rundir's `cls.revision and` dropped before the older-revision check (`range(0)` is
empty, so a revision-0 method finds no older digest either way); `(run_dir / "jobs").is_dir() and` dropped (as the
second pass judged); check_same_data's `then == now` as `not changed - {"format"}` (they differ only for a record
of the current digests under another `format` value, which no version wrote: format 1 records have no `format`).

Left surviving: none of those tried. Killed by older tests, so not repeated: check_worker_data's `"format" not in
then` return dropped and `- {"sizes"}` dropped (test_experiment's worker test); `stored is not None` dropped from a
digest-less row's check and the `"config_digest" in row` guard of `_changed_since` (test_experiment_mutation); the
folder-label-draws refusal dropped (test_experiment); `ADDED_FIELDS` left out of the current config in
`_config_changes` (test_experiment's test-set run); `sort_keys` dropped from `job_digest` (test_experiment_mutation)."""

import warnings
from dataclasses import replace

import pytest
import torch
from helpers import toy_domain, toy_named_domains
from test_rundir_rundata_mutation import _row_of
from test_rundir_rundata_second_mutation import TINY

from transferkit import rundata, rundir
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError
from transferkit.experiment import _jobs_of
from transferkit.io import read_json, write_json
from transferkit.methods import get_method
from transferkit.methods.base import resolved_options
from transferkit.splits import Split


# ---- finished_rows --------------------------------------------------------------------------------------------
def test_a_job_file_holding_another_job_s_row_is_refused_as_copied(tmp_path):
    # kills: `check_job_name(job, row)` dropped from finished_rows (a copied job file counted as another job)
    cfg = ExperimentConfig(methods=["finetune"], k=2, train=TINY, pretrain=TINY)
    jobs, job = _row_of(cfg, tmp_path, "finetune")
    write_json(job, {**read_json(job), "seed": jobs[0][1] + 1})
    with pytest.raises(TransferkitError, match=r"copied or renamed by hand"):
        rundir.finished_rows(cfg, tmp_path, jobs, None)


def test_a_finished_row_of_another_nproc_is_refused_by_finished_rows(tmp_path, monkeypatch):
    # kills: `check_same_world(cfg, run_dir, out)` dropped from finished_rows
    monkeypatch.setattr(rundir, "world_size", lambda: 1)
    cfg = ExperimentConfig(methods=["finetune"], k=2, train=TINY, pretrain=TINY)
    jobs, job = _row_of(cfg, tmp_path, "finetune")
    assert list(rundir.finished_rows(cfg, tmp_path, jobs, None)) == [("finetune", jobs[0][1])]
    write_json(job, {**read_json(job), "world_size": 2})
    with pytest.raises(TransferkitError, match=r"ran in 2 data-parallel process\(es\) .* --nproc 2"):
        rundir.finished_rows(cfg, tmp_path, jobs, None)


def test_a_refused_row_keeps_the_change_results_json_names_over_its_options_and_option_files(tmp_path):
    # kills: `not hint` dropped before the row's method_options hint, or before the option-files hint (either
    # overwrote the change that results.json names: val_fraction)
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"file_name": "a/0.png", "text": "a circle"}\n')
    cfg = ExperimentConfig(methods=["clip"], k=2, options={"clip": {"captions_file": str(captions)}})
    jobs, job = _row_of(cfg, tmp_path, "clip")
    ran = resolved_options(get_method("clip"), cfg.options["clip"])
    write_json(job, {**read_json(job), "method_options": ran})
    write_json(tmp_path / "results.json", {"config": cfg.to_dict()})
    with pytest.raises(TransferkitError, match=r"changed since the job ran, by the config its results.json keeps: "
                                               r"val_fraction: 0.15 there, 0.2 now") as e:
        rundir.finished_rows(replace(cfg, val_fraction=0.2), tmp_path, jobs, None)
    assert "edited since" not in str(e.value)


# ---- check_unfinished_checkpoints ------------------------------------------------------------------------------
def test_unfinished_checkpoints_compare_options_as_config_yaml_stores_them(tmp_path):
    # kills: the options now taken from `cfg.options` rather than as config.yaml reads back (a tuple there is a
    # list: the same options refused as other ones)
    cfg = ExperimentConfig(methods=["linear_probe"], k=2, train=TINY, pretrain=TINY,
                           options={"linear_probe": {"layers": (1, 2)}})
    stored = {"options": {"linear_probe": {"layers": [1, 2]}}}
    jobs = _jobs_of(cfg, [get_method("linear_probe")])
    (tmp_path / "checkpoints" / rundir.job_path(tmp_path, cfg, "linear_probe", jobs[0][1]).stem).mkdir(parents=True)
    rundir.check_unfinished_checkpoints(cfg, tmp_path, jobs, {}, stored)


# ---- rundata -------------------------------------------------------------------------------------------------
def test_unlabelled_images_in_the_run_s_channels_are_not_warned_of(monkeypatch):
    # kills: the channel-conversion warning of unlabelled images given whatever their channels
    toy_named_domains(monkeypatch)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", unlabeled="extra", image_size=28),
                                       progress=False)
    assert data.unlabeled.images.shape[1] == 1
    assert not [w for w in seen if "channel" in str(w.message)]


def test_a_test_set_of_target_classes_only_is_not_warned_of_and_a_class_list_is_named():
    # kills: `len(shared) < len(present)` as `<=` (every test set warned of); the `(target_classes)` hint dropped
    train = toy_domain(8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = rundata.as_target_test(ExperimentConfig(test="tst"), toy_domain(8, seed=1, name="tst"), train, 1)
    assert len(got) == 8
    narrow = Split(*(d.select_classes([0, 1]) for d in (train, train, train))).train
    with pytest.warns(Warning, match=r"class\(es\) \['2', '3'\] are not target classes \(target_classes\)"):
        rundata.as_target_test(ExperimentConfig(test="tst", target_classes="0,1"), toy_domain(8, seed=1, name="tst"),
                               narrow, 1)


def test_an_all_class_list_in_any_case_keeps_a_class_without_training_images():
    # kills: `classes.strip().lower() == "all"` as `classes == "all"` (" ALL " refused for the empty class)
    d = toy_domain(12, seed=0)
    split = Split(d.subset(d.labels != 3), d, d)
    assert rundata.narrowed(split, " ALL ").val.class_names == ["0", "1", "2", "3"]


def test_a_class_with_one_training_image_may_be_named():
    # kills: `int(counts[i]) == 0` as `<= 1` (a class of a single training image refused as empty)
    d = toy_domain(12, seed=0)
    keep = (d.labels != 3) | (torch.arange(len(d)) == 3)
    split = Split(d.subset(keep), d, d)
    assert int(split.train.class_counts()[3]) == 1
    assert rundata.narrowed(split, "0,3").train.class_names == ["0", "3"]


def test_a_process_prepares_its_data_without_a_progress_bar(monkeypatch):
    # kills: process_domains' `progress=False` as `progress=None` (each worker's bar shown on a terminal)
    asked = []
    monkeypatch.setattr(rundata, "_PROCESS_DATA", {})
    monkeypatch.setattr(rundata, "prepare_domains", lambda cfg, progress=None, run_dir=None: asked.append(progress))
    rundata.process_domains(ExperimentConfig(train=replace(TINY, progress=True)))
    assert asked == [False]

