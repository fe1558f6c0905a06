"""Tests from a fourth mutation pass over experiment.py: each kills a plausible bug that the
existing tests (test_experiment.py, test_experiment_mutation.py, test_experiment_second_mutation.py,
test_experiment_third_mutation.py) let through. Covered: load_model's handling of a torn model file
that carries only one of torch's two marks; source_only's row (the config's seed, not 0; the source
network's seconds) and the classes_ in its saved model file; the
selection metric recorded in a row; no pre-training fields in the row of a run from a pretrained
file; a resume whose source network is refused leaves the run's config.yaml as it was. Tiny runs
(npz data, 2-step jobs) and unit calls.

Killed by older tests elsewhere (so not tested here): load_model's whole-number seed check, its
"runs once" and "older versions" reasons, source_only's model without a setting, a setting with
spaces, UnpicklingError and OSError handling; n_labeled, threads, source_digest, method_options,
config_digest, pretrain_cached and source_val_accuracy of the rows; the added training fields of a
job of no steps; results files removed while a resume's jobs run.

Judged equivalent, so not tested: ``if main:`` around writing config.yaml (one process: always the
main one).

Left surviving: ``run_job``'s ``train.device`` replaced by the config's device (needs a second
device: on CPU both are ``cpu``)."""

from dataclasses import replace

import pytest
import torch
from test_experiment_second_mutation import TWO
from test_experiment_third_mutation import _cfg, _fake_run, _quiet

from transferkit import experiment as ex
from transferkit.errors import TransferkitError

# -- load_model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("message", ["PytorchStreamReader failed locating file data.pkl: file not found",
                                     "not a zip archive"])
# kills: load_model: the RuntimeError filter reduced to one of its two marks ("zip archive", "PytorchStreamReader")
def test_a_torn_model_file_of_either_mark_says_run_the_job_again(tmp_path, monkeypatch, message):
    run = _fake_run(tmp_path)

    def load(*args, **kwargs):
        raise RuntimeError(message)
    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(TransferkitError,
                       match=r"is unreadable.*delete its job file .*finetune-k=2-s0\.json and resume"):
        ex.load_model(run, "finetune")


# -- rows -------------------------------------------------------------------------------------------

# kills: _run_jobs_of: source_only's row with seed 0 instead of the config's; its wall_s not the source network's;
# its saved model without classes_ (its thread count, source_val_accuracy, source_digest and method_options are
# also checked by test_experiment.py)
def test_source_only_and_job_rows_record_what_they_ran_from(tmp_path):
    cfg = _cfg(tmp_path, methods=["source_only", "target_only", "dann"], seed=3)
    run_dir, rows = ex.run_experiment(cfg, log=_quiet)
    by = {r["method"]: r for r in rows}
    so = by["source_only"]
    assert so["seed"] == 3 and "threads" not in so and "source_digest" in so and so["wall_s"] > 0
    assert so["source_val_accuracy"] is not None and so["n_labeled"] == 0
    saved = torch.load(run_dir / "models" / "source_only-k=1-s3.pt", weights_only=False)
    assert saved.classes_ == so["class_names"]
    assert "source_digest" not in by["target_only"] and by["dann"]["source_digest"] == so["source_digest"]
    assert by["dann"]["method_options"]["weight"] == 0.1 and by["target_only"]["threads"] >= 1


# kills: run_job: select_metric not recorded in a row that selected on balanced_accuracy
def test_a_row_records_a_selection_metric_other_than_accuracy(tmp_path):
    with pytest.warns(UserWarning, match="select_metric: balanced_accuracy"):  # select_on: none selects nothing
        row = ex.run_experiment(_cfg(tmp_path, select_metric="balanced_accuracy"), log=_quiet)[1][0]
    assert row["select_metric"] == "balanced_accuracy"
    assert "select_metric" not in ex.run_experiment(_cfg(tmp_path, name="u"), log=_quiet)[1][0]


# kills: _run_jobs_of: source_only's row from a pretrained file with the pre-training fields (sampler) of a
# pre-training that did not run (its pretrain_cached flag is also checked by test_experiment.py)
def test_source_only_from_a_pretrained_file_records_no_pre_training(tmp_path, recwarn):
    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source
    cfg = _cfg(tmp_path, methods=["source_only"], pretrain=replace(TWO, sampler="balanced"))
    _, info = pretrain_source(cfg, prepare_domains(cfg), log=_quiet)
    (row,) = ex.run_experiment(replace(cfg, pretrained=info["path"]), log=_quiet)[1]
    assert row["pretrain_cached"] is None and "sampler" not in row
    (trained,) = ex.run_experiment(replace(cfg, name="u"), log=_quiet)[1]
    assert trained["pretrain_cached"] is not None and trained["sampler"] == "balanced"


# -- resume ---------------------------------------------------------------------------------------

# kills: _run_jobs_of: the run's config.yaml not put back when the source network is refused
def test_a_resume_whose_source_network_is_refused_keeps_the_run_s_config(tmp_path, monkeypatch):
    run_dir, _ = ex.run_experiment(_cfg(tmp_path), log=_quiet)
    before = (run_dir / "config.yaml").read_text()

    def refuse(*args, **kwargs):
        raise TransferkitError("the source network is refused")
    monkeypatch.setattr(ex, "run_source_network", refuse)
    with pytest.raises(TransferkitError, match="refused"):
        ex.run_experiment(_cfg(tmp_path, methods=["target_only", "finetune"]), run_dir=run_dir, log=_quiet)
    assert (run_dir / "config.yaml").read_text() == before
