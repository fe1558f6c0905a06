"""Tests from a third mutation pass over experiment.py: each kills a plausible bug that the
existing tests (test_experiment.py, test_experiment_mutation.py, test_experiment_second_mutation.py,
test_cli.py, test_report.py) let through. Covered: load_model's default seed (the config's, not 0),
a method given by its class or an unknown name, a folder without config.yaml, and a missing model's
list narrowed to its setting; the caller's random state kept by a run and a fresh network seeded by
its job, and a method's network taken from the source network only when it needs one; a
refused run that removes only the directories it made; a failed job's line not printed
twice when the log is ``print``; the unlabelled-image fields only in rows of methods that read them
(and their test / val overlap not swapped); select_on only in rows that selected; the threads of a
job resumed midway; a full resume that leaves the source network alone; the only job of a run of
workers run with a worker's thread count. Unit calls and tiny runs (npz data, 2-step jobs).

Judged equivalent, so not tested: n_val_labeled without ``cls.selects_on_validation`` (a method
that selects on no validation split, matching_net, has no best validation accuracy, so ``selected``
is already false); running a single remaining job in a worker process (``len(todo) >= 1``: the
worker runs with the thread count worker_threads gives here, and writes the same row).

Left surviving: none of those tried; the ``world_size() > 1`` branches need torchrun (see the
second pass)."""

import json
from dataclasses import replace

import pytest
import torch
from test_experiment_second_mutation import TWO, _npz

from transferkit import experiment as ex
from transferkit.config import ExperimentConfig, dump_config
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.jobs import JobFailure
from transferkit.methods import get_method


def _quiet(*args, **kwargs):
    pass


def _cfg(tmp_path, **changes) -> ExperimentConfig:
    data = _npz(tmp_path)
    cfg = ExperimentConfig(name="t", source=f"npz:{data}", target=f"npz:{data}", methods=["target_only"], k=1,
                           repeats=1, select_on="none", pretrain=TWO, train=TWO, out_dir=str(tmp_path / "runs"))
    return replace(cfg, **changes)


# -- load_model -----------------------------------------------------------------------------------

def _fake_run(tmp_path, seed: int = 0, method: str = "finetune", k: int = 2, models=None, rows=None):
    """A run directory of ``method`` jobs (config seed ``seed``): the named model files and job rows, by default
    the one job of ``seed``."""
    (tmp_path / "config.yaml").write_text(dump_config(ExperimentConfig(methods=[method], k=k, seed=seed)))
    job = f"{method}-k={k}-s{seed}"
    for folder, names, text in (("models", [f"{job}.pt"] if models is None else models, "model"),
                                ("jobs", [f"{job}.json"] if rows is None else rows,
                                 json.dumps({"class_names": ["a", "b"]}))):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name in names:
            (tmp_path / folder / name).write_text(text)
    return tmp_path


# kills: load_model: the default seed 0 instead of the config's `seed`
def test_a_model_s_seed_defaults_to_the_config_s_first_seed(tmp_path, monkeypatch):
    run = _fake_run(tmp_path, seed=3)
    loaded = []
    monkeypatch.setattr(torch, "load", lambda path, **kwargs: loaded.append(path.name) or torch.nn.Linear(1, 1))
    assert ex.load_model(run, "finetune").classes_ == ["a", "b"]
    assert loaded == ["finetune-k=2-s3.pt"]


# kills: load_model: the method's name taken as given (no get_method: a class or an unknown name not resolved)
def test_a_model_is_named_by_its_method_class_or_refused_as_an_unknown_method(tmp_path, monkeypatch):
    run = _fake_run(tmp_path, seed=0)
    monkeypatch.setattr(torch, "load", lambda path, **kwargs: torch.nn.Linear(1, 1))
    assert ex.load_model(run, get_method("finetune")).classes_ == ["a", "b"]
    with pytest.raises(UnknownNameError, match="finetunne"):
        ex.load_model(run, "finetunne")


# -- a run's surroundings -------------------------------------------------------------------------

# kills: run_experiment: the caller's CPU random state not restored (fork_rng dropped)
def test_a_run_leaves_the_caller_s_random_state_as_it_was(tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ex.run_experiment(_cfg(tmp_path), log=_quiet)
    assert torch.equal(torch.get_rng_state(), before)


# kills: run_experiment: a refused run's directory removed although the run did not make it (`if fresh` -> always);
# the parent of a fresh run removed although it was there before (`parent_fresh` -> True)
def test_a_refused_run_removes_only_the_directories_it_made(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)

    def refuse(*args, **kwargs):
        raise TransferkitError("the data is refused")
    monkeypatch.setattr(ex, "prepare_domains", refuse)
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(TransferkitError):
        ex.run_experiment(cfg, run_dir=given, log=_quiet)
    assert given.is_dir()  # the caller's own (empty) folder
    parent = tmp_path / "parent"
    parent.mkdir()
    with pytest.raises(TransferkitError):
        ex.run_experiment(cfg, run_dir=parent / "run", log=_quiet)
    assert not (parent / "run").exists() and parent.is_dir()
    with pytest.raises(TransferkitError):  # a fresh run's directory and the out_dir/NAME folder it made
        ex.run_experiment(cfg, log=_quiet)
    assert not (tmp_path / "runs" / "t").exists() and (tmp_path / "runs").is_dir()


# kills: _job_done: a failed job's line given to `print` as the log too (printed on stdout besides stderr)
def test_a_failed_job_s_line_goes_to_stderr_once_when_the_log_is_print(tmp_path, capsys):
    cfg = ExperimentConfig(methods=["finetune"], k=2)
    failures = []
    failure = JobFailure("ValueError: boom", "Traceback ...")
    assert ex._job_done(cfg, tmp_path, "finetune", 0, failure, failures, print) == []
    out, err = capsys.readouterr()
    assert "finetune seed 0 failed" in err and "failed" not in out
    lines = []
    ex._job_done(cfg, tmp_path, "finetune", 1, JobFailure("ValueError: boom", "Traceback ..."), failures,
                 lines.append)
    assert len(lines) == 1 and "finetune seed 1 failed" in lines[0]


# -- rows -------------------------------------------------------------------------------------------

# kills: run_job: n_unlabeled recorded for a method that reads no unlabelled images; unlabeled_in_test and
# unlabeled_in_val swapped
def test_only_a_method_on_unlabelled_images_records_them_and_their_overlap_with_test_and_val(tmp_path):
    cfg = _cfg(tmp_path, methods=["dann", "target_only"], val_fraction=0.1, test_fraction=0.3)
    with pytest.warns(UserWarning, match="unlabeled_in_test"):
        _, rows = ex.run_experiment(replace(cfg, unlabeled=cfg.target), log=_quiet)
    by = {r["method"]: r for r in rows}
    assert "n_unlabeled" not in by["target_only"] and "unlabeled_in_test" not in by["target_only"]
    dann = by["dann"]
    assert dann["n_unlabeled"] == 40 and dann["n_labeled"] == 0
    assert dann["unlabeled_in_test"] == dann["n_test"] == 12 and dann["unlabeled_in_val"] == 4


# kills: run_job: threads_before_resume recorded when the job resumed with the same thread count; the seconds
# trained before the stop not counted in wall_s (also killed by test_experiment.py)
def test_a_job_resumed_with_the_same_threads_records_no_earlier_threads_and_counts_its_earlier_seconds(
        tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "trained_before", lambda path: (50.0, {torch.get_num_threads()}))
    (row,) = ex.run_experiment(_cfg(tmp_path), log=_quiet)[1]
    assert "threads_before_resume" not in row and row["wall_s"] >= 50.0
    monkeypatch.setattr(ex, "trained_before", lambda path: (0.0, {torch.get_num_threads() + 1}))
    (row,) = ex.run_experiment(_cfg(tmp_path), log=_quiet)[1]
    assert row["threads_before_resume"] == [torch.get_num_threads() + 1] and row["wall_s"] < 50.0


# kills: _run_jobs_of: the source network read (or pre-trained) again when every job that needs it has finished
def test_a_resume_of_a_finished_run_does_not_touch_the_source_network(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, methods=["finetune", "source_only"])
    run_dir, rows = ex.run_experiment(cfg, log=_quiet)

    def refuse(*args, **kwargs):
        raise AssertionError("the source network is not needed")
    monkeypatch.setattr(ex, "run_source_network", refuse)
    assert ex.run_experiment(cfg, run_dir=run_dir, log=_quiet)[1] == rows


# kills: _run_jobs_of: the one job left to run in this process not given a worker's thread count (workers > 1)
def test_the_only_job_of_a_run_of_workers_runs_with_a_worker_s_thread_count(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    (row,) = ex.run_experiment(_cfg(tmp_path, workers=2), log=_quiet)[1]
    assert row["threads"] == 2 and torch.get_num_threads() == 1


# kills: load_model: a missing model's list of saved models not narrowed to its setting
def test_a_missing_model_lists_the_saved_models_of_its_own_setting_only(tmp_path):
    (tmp_path / "config.yaml").write_text(dump_config(ExperimentConfig(methods=["finetune"], k=[1, 2])))
    (tmp_path / "models").mkdir()
    for name in ("finetune-k=1-s0", "finetune-k=2-s0", "finetune-k=2-s1"):
        (tmp_path / "models" / f"{name}.pt").write_bytes(b"model")
    with pytest.raises(TransferkitError, match=r"seed 5 .*saved models \(method-setting-seed\): "
                                               r"finetune-k=2-s0, finetune-k=2-s1$"):
        ex.load_model(tmp_path, "finetune", 5, setting="k=2")



# kills: run_job: select_on recorded in a row that selected on nothing (select_on: none)
def test_a_row_of_a_fixed_budget_records_no_selection_split(tmp_path):
    (row,) = ex.run_experiment(_cfg(tmp_path), log=_quiet)[1]
    assert "select_on" not in row and "n_val_labeled" not in row and row["val_accuracy"] is None


# kills: load_model: a folder without config.yaml not named as no run directory
def test_a_folder_without_a_config_is_named_as_no_run_directory(tmp_path):
    with pytest.raises(TransferkitError, match="is not a run directory"):
        ex.load_model(tmp_path, "finetune")


# kills: run_job: the network of a method that starts from no source network not seeded by the job's seed
def test_a_job_s_fresh_network_does_not_depend_on_the_caller_s_random_state(tmp_path):
    weights = []
    for state, name in ((1, "a"), (2, "b")):
        torch.manual_seed(state)
        run_dir, _ = ex.run_experiment(_cfg(tmp_path, name=name), log=_quiet)
        weights.append(ex.load_model(run_dir, "target_only").net.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


# kills: run_job: a method that transfers a source network given a fresh one (`source_net()` not called)
def test_a_job_starts_from_the_source_network_only_for_a_method_that_needs_it(tmp_path):
    from transferkit.backbones import build_backbone
    from transferkit.rundata import prepare_domains
    cfg = _cfg(tmp_path)
    data = prepare_domains(cfg)
    calls = []

    def source_net():
        calls.append(1)
        return build_backbone(cfg.backbone, num_classes=data.source.train.num_classes, in_channels=data.channels,
                              image_size=cfg.image_size)
    (tmp_path / "run" / "jobs").mkdir(parents=True)
    for name, expected in (("target_only", []), ("finetune", [1])):
        calls.clear()
        row = ex.run_job(replace(cfg, methods=[name]), data, source_net, tmp_path / "run", get_method(name), 0)
        assert calls == expected and row["method"] == name
