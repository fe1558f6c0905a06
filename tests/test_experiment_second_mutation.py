"""Tests from a second mutation pass over experiment.py: each kills a plausible bug that the
existing tests (test_experiment.py, test_experiment_mutation.py, test_rundir_rundata_mutation.py,
test_cli.py) let through. Covered: the error that ends a run with failed jobs (the methods left to
resume, the finished rows it counts), a job's end (its earlier traceback removed, a failure named
with its setting), the logged line of a row, what a row records of where it ran, a row's finishing
fields, the seen classes of a run without source images, a setting a resume left out (``ratio=``
too, typed), the clean-up of a refused fresh run, load_model's list of saved models and its
handling of unreadable files, rows and class names, a model that does not pickle replacing an
older one, a fresh run directory's name, a run moved with its out_dir (no "not used" warning),
and a failed job's record in results.json and its ``failed/`` folder after a resume that runs it
again. Unit calls and two tiny runs (npz data, 2-step jobs).

Judged equivalent, so not tested: ``rows.sort`` keyed on the job order (the rows are appended
in job order whenever every job runs in this process); unlinking results.json/results.md with no
job left to run (they are written again at once); ``model.eval()`` dropped for a model saved in
eval mode (every job saves its model after evaluating it; the test loads one in training mode).

Left surviving: the ``world_size() > 1`` branches (``--nproc``: ranks stop together, no
narrowing) and ``_run_in_workers``'s per-job ordering need torchrun or worker processes, which
the slower tests in test_scale.py and test_experiment_mutation.py cover end to end; the
``note: N workers`` log line (wording only)."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import npz_file, toy_domain

from transferkit import experiment as ex
from transferkit.config import ExperimentConfig, dump_config
from transferkit.domain import Domain
from transferkit.engine import TrainConfig
from transferkit.errors import JobsFailed, TransferkitError
from transferkit.jobs import JobFailure
from transferkit.splits import Split

TWO = TrainConfig(steps=2, eval_every=2, batch_size=8)


def _failure(tmp_path, job: str) -> JobFailure:
    return JobFailure("ValueError: boom", "Traceback ...", job=job, path=str(tmp_path / "failed" / "x.txt"))


# -- the error that ends a run with failed jobs -----------------------------------------------

# kills: _jobs_failed: `if others` -> always (an empty methods=[] advised); `len(rows)` -> total; split on " seed "
# dropped (the failed method offered again)
def test_a_run_with_failed_jobs_names_the_methods_left_and_counts_the_finished_rows(tmp_path):
    cfg = ExperimentConfig(methods=["finetune", "dann", "tap"])
    rows = [{"method": "finetune"}, {"method": "tap"}]
    e = ex._jobs_failed(cfg, tmp_path, [_failure(tmp_path, "dann seed 3")], rows, 6)
    assert isinstance(e, JobsFailed) and e.rows == rows and e.failures[0].job == "dann seed 3"
    text = str(e)
    assert "1 of 6 job(s) failed" in text and "hold the 2 finished row(s)" in text
    assert f"--resume {tmp_path} --set 'methods=[finetune,tap]'" in text
    every = ex._jobs_failed(cfg, tmp_path, [_failure(tmp_path, f"{m} seed 0") for m in cfg.methods], [], 3)
    assert f"--resume {tmp_path}" in str(every) and "methods=[" not in str(every)  # nothing to leave out


# kills: _job_done: the earlier try's failed/ traceback not removed; the failure named without its setting or not
# given to the caller's own log
def test_a_job_that_ends_drops_its_earlier_traceback_and_a_failure_names_its_setting(tmp_path, capsys):
    cfg = ExperimentConfig(k=2)
    old = tmp_path / "failed" / "finetune-k=2-s1.txt"
    old.parent.mkdir()
    old.write_text("Traceback of the first try")
    lines, failures = [], []
    row = {"method": "finetune", "setting": "k=2", "seed": 1, "accuracy": 0.5, "wall_s": 1.0}
    assert ex._job_done(cfg, tmp_path, "finetune", 1, row, failures, lines.append) == [row]
    assert not old.exists() and failures == [] and len(lines) == 1
    failure = JobFailure("ValueError: boom", "Traceback (most recent call last): boom")
    assert ex._job_done(cfg, tmp_path, "dann", 1, failure, failures, lines.append, several=True) == []
    assert [f.job for f in failures] == ["dann seed 1 (k=2)"] and "dann seed 1 (k=2) failed: ValueError" in lines[1]
    assert "boom" in (tmp_path / "failed" / "dann-k=2-s1.txt").read_text()
    capsys.readouterr()


# kills: _log_row: the setting always / never shown; a non-text `picked` shown; the accuracy not in percent
def test_a_row_s_line_names_its_setting_only_among_several_and_a_picked_unit():
    lines = []
    row = {"method": "tap", "setting": "k=5", "seed": 2, "accuracy": 0.25, "wall_s": 3.0, "picked": "conv2"}
    assert ex._log_row(lines.append, True, row) is row
    ex._log_row(lines.append, False, {**row, "picked": 3})
    assert "k=5 seed 2: accuracy 25.0%" in lines[0] and lines[0].endswith(", picked conv2")
    assert "k=5" not in lines[1] and "seed 2: accuracy 25.0%" in lines[1] and "picked" not in lines[1]


# kills: job_environment: threads recorded for source_only's row (trained=False); source_digest None recorded
def test_a_row_records_threads_only_when_it_trained_and_a_source_digest_only_when_given():
    trained, evaluated = ex.job_environment("abc"), ex.job_environment(None, trained=False)
    assert trained["threads"] == torch.get_num_threads() and trained["source_digest"] == "abc"
    assert "threads" not in evaluated and "source_digest" not in evaluated
    assert {"world_size", "kernels", "invocation"} <= set(evaluated)


# kills: _finish_row: measured_s kept; group_accuracy dropped or always set; the file not written
def test_a_finished_row_holds_the_report_s_fields_and_is_written(tmp_path):
    report = {"per_class_accuracy": [1.0, 0.5], "balanced_accuracy": 0.75, "confusion": [[2, 0], [1, 1]],
              "accuracy": 0.75}
    job = tmp_path / "j.json"
    row = ex._finish_row(job, {"method": "m", "measured_s": 1.5}, report, ["a", "b"], ["a"])
    assert "measured_s" not in row and "group_accuracy" not in row
    assert row["class_names"] == ["a", "b"] and row["balanced_accuracy"] == 0.75
    assert row["seen_accuracy"] == 1.0 and row["unseen_accuracy"] == 0.5 and row["confusion"] == [[2, 0], [1, 1]]
    assert json.loads(job.read_text()) == row
    grouped = ex._finish_row(tmp_path / "g.json", {}, {**report, "group_accuracy": 0.4}, ["a", "b"])
    assert grouped["group_accuracy"] == 0.4 and "seen_accuracy" not in grouped


# kills: _seen_classes: `len(train) == 0` -> `!= 0` (a source without images then has no seen class)
def test_the_seen_classes_are_the_source_s_present_ones_or_the_network_s_without_images():
    def split(domain):
        return Split(domain, domain, domain)
    some = toy_domain(8, classes=4)
    two = Domain("s", some.images[:4], torch.tensor([0, 2, 0, 2]), some.class_names)
    none = Domain("s", some.images[:0], some.labels[:0], ["x", "y"])
    target = split(toy_domain(8))
    assert ex._seen_classes(ex.Prepared(source=split(two), target=target, channels=1)) == ["0", "2"]
    assert ex._seen_classes(ex.Prepared(source=split(none), target=target, channels=1)) == ["x", "y"]


# -- the setting of a run's model -------------------------------------------------------------

# kills: _setting_of: the dropped-setting pattern only `k=`; its value kept as text; the models/ check dropped;
# `any_one` ignored
def test_a_setting_a_resume_left_out_is_found_by_its_models_for_k_and_ratio(tmp_path):
    cfg = ExperimentConfig(k=[1, 2])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "finetune-ratio=30-s0.pt").write_bytes(b"")
    (tmp_path / "models" / "finetune-k=7-s0.pt").write_bytes(b"")
    ratio = ex._setting_of(cfg, "ratio=30", tmp_path)
    assert ratio.ratio == 30 and ratio.k is None and ratio.setting == "ratio=30"
    seven = ex._setting_of(cfg, "k=7", tmp_path)
    assert seven.k == 7 and isinstance(seven.k, int) and seven.ratio is None
    with pytest.raises(TransferkitError, match=r"has no setting 'k=9': it ran k=1, k=2"):
        ex._setting_of(cfg, "k=9", tmp_path)  # no model of it
    assert ex._setting_of(cfg, "k=2", tmp_path).k == 2
    assert ex._setting_of(cfg, None, tmp_path, any_one=True).k == 1
    with pytest.raises(TransferkitError, match="say which"):
        ex._setting_of(cfg, None, tmp_path)


# -- a refused fresh run ------------------------------------------------------------------------

# kills: _remove_if_unused: a kept name dropped from the set (kernels.json, source.json, ...); `any(jobs...)`
# ignored; the parent removed without parent_too or when not empty
def test_a_refused_fresh_run_is_removed_unless_it_holds_a_row_or_another_file(tmp_path):
    def made(name, *files):
        run = tmp_path / name / "stamp"
        (run / "jobs").mkdir(parents=True)
        for f in files:
            (run / f).write_text("x")
        return run
    run = made("a", "config.yaml", "kernels.json", "data.json", "source.json", "source.safetensors")
    ex._remove_if_unused(run, parent_too=True)
    assert not (tmp_path / "a").exists()
    run = made("b", "config.yaml", "kernels.json")
    ex._remove_if_unused(run)
    assert not run.exists() and (tmp_path / "b").is_dir()  # its parent only with parent_too
    run = made("c", "config.yaml", "jobs/finetune-k=5-s0.json")
    ex._remove_if_unused(run, parent_too=True)
    assert (run / "jobs" / "finetune-k=5-s0.json").exists()
    run = made("d", "config.yaml", "results.json")
    ex._remove_if_unused(run, parent_too=True)
    assert (run / "results.json").exists()
    (tmp_path / "e" / "other").mkdir(parents=True)
    run = made("e", "config.yaml")
    ex._remove_if_unused(run, parent_too=True)
    assert not run.exists() and (tmp_path / "e" / "other").is_dir()


# kills: new_run_dir: `expanduser` dropped; the microseconds dropped from the stamp (two runs in a second collide)
def test_a_new_run_directory_is_out_dir_name_and_a_fresh_stamp(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = ExperimentConfig(name="n", out_dir="~/runs")
    first, second = ex.new_run_dir(cfg), ex.new_run_dir(cfg)
    assert first.parent == tmp_path / "runs" / "n" and first != second
    assert re.fullmatch(r"\d{8}-\d{6}-\d{6}", first.name)


# -- load_model -----------------------------------------------------------------------------------

def _run_dir(tmp_path, seeds=(0,), rows=(0,)):
    """A run directory of finetune jobs (k=2): its config, a model file per seed, a row per ``rows``."""
    cfg = ExperimentConfig(methods=["finetune"], k=2)
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    (tmp_path / "models").mkdir()
    (tmp_path / "jobs").mkdir()
    for s in seeds:
        (tmp_path / "models" / f"finetune-k=2-s{s}.pt").write_bytes(b"model")
    for s in rows:
        (tmp_path / "jobs" / f"finetune-k=2-s{s}.json").write_text(json.dumps({"class_names": ["x", "y"]}))
    return tmp_path


# kills: load_model: the saved-models list not cut at 12 or its "and N more" miscounted
def test_a_missing_model_lists_twelve_saved_ones_and_counts_the_rest(tmp_path):
    run = _run_dir(tmp_path, seeds=range(14))
    with pytest.raises(TransferkitError, match=r"no finished finetune job of seed 99 .* and 2 more$") as e:
        ex.load_model(run, "finetune", 99)
    assert str(e.value).split("its saved models")[1].count("finetune-k=2-s") == 12


class _Net(torch.nn.Module):
    pass


@pytest.mark.parametrize("error, expected", [
    (KeyError("storages"), "is unreadable"), (RuntimeError("PytorchStreamReader failed reading zip archive"),
                                              "is unreadable"),
    (EOFError("Ran out of input"), "is unreadable"), (ImportError("No module named 'myplugin'"),
                                                      "TRANSFERKIT_PLUGINS"),
    (AttributeError("Can't get attribute 'Mine'"), "TRANSFERKIT_PLUGINS"),
    (KeyError("weights"), None), (RuntimeError("CUDA error"), None)])
# kills: load_model: the KeyError / RuntimeError filters dropped or inverted (a method's own error hidden as a
# torn file); ImportError / AttributeError not named as missing code
def test_an_unreadable_model_says_run_the_job_again_and_other_errors_pass(tmp_path, monkeypatch, error, expected):
    run = _run_dir(tmp_path)

    def load(*args, **kwargs):
        raise error
    monkeypatch.setattr(torch, "load", load)
    if expected is None:
        with pytest.raises(type(error)) as e:
            ex.load_model(run, "finetune")
        assert not isinstance(e.value, TransferkitError)
    else:
        with pytest.raises(TransferkitError, match=expected):
            ex.load_model(run, "finetune")


# kills: load_model: classes_ not read from the job's row; the model not put in eval mode; the "not known" warning
# given when the model knows its classes (or the reverse)
def test_a_loaded_model_takes_its_row_s_classes_and_names_what_a_missing_row_leaves(tmp_path, monkeypatch):
    run = _run_dir(tmp_path, seeds=(0, 1), rows=(0,))
    nets = []

    def load(path, **kwargs):
        nets.append(_Net())
        return nets[-1]
    monkeypatch.setattr(torch, "load", load)
    model = ex.load_model(run, "finetune")
    assert model.classes_ == ["x", "y"] and not model.training
    with pytest.warns(UserWarning, match=r"s1.json does not exist.*so the model's classes_ are not known"):
        assert not hasattr(ex.load_model(run, "finetune", 1), "classes_")


# -- saving a model ------------------------------------------------------------------------------------

# kills: _save_evaluated: an older run's model file kept when the new model does not pickle; save_model not atomic
def test_a_model_that_does_not_pickle_removes_the_older_model_and_one_that_does_is_saved(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    path.write_bytes(b"an older run's model")

    def refuse(method):
        raise TypeError("cannot pickle 'generator' object")
    with monkeypatch.context() as m:
        m.setattr(ex, "_model_bytes", refuse)
        with pytest.warns(UserWarning, match="job-s0: the trained model is not saved .*TypeError"):
            ex._save_evaluated(path, object(), "job-s0")
    assert not path.exists()
    ex._save_evaluated(path, torch.nn.Linear(2, 3), "job-s0")
    assert torch.load(path, weights_only=False).out_features == 3
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def _npz(tmp_path):
    toy = toy_domain(40)
    return npz_file(tmp_path / "toy.npz", x=(toy.images * 255).to(torch.uint8).numpy(), y=toy.labels.numpy())


# kills: _run_jobs_of: `out_dir` named as not used when the resumed run lies inside the given out_dir (a moved one)
def test_a_run_moved_with_its_out_dir_resumes_there_without_a_not_used_warning(tmp_path, recwarn):
    data = _npz(tmp_path)
    cfg = ExperimentConfig(name="m", source=f"npz:{data}", target=f"npz:{data}", methods=["target_only"], k=1,
                           repeats=1, select_on="none", pretrain=TWO, train=TWO, out_dir=str(tmp_path / "a"))
    run_dir, rows = ex.run_experiment(cfg, log=lambda *a: None)
    (tmp_path / "a").rename(tmp_path / "b")
    moved = tmp_path / "b" / "m" / run_dir.name
    recwarn.clear()
    assert ex.run_experiment(replace(cfg, out_dir=str(tmp_path / "b")), run_dir=moved, log=lambda *a: None)[1] == rows
    assert not [w for w in recwarn if "not used" in str(w.message)]
    with pytest.warns(UserWarning, match=r"name: 'other' not used: a resumed run stays in"):
        ex.run_experiment(replace(cfg, out_dir=str(tmp_path / "b"), name="other"), run_dir=moved, log=lambda *a: None)


# -- a run with a failed job, resumed ------------------------------------------------------------

# kills: _run_jobs_of: results.json's failed traceback as an absolute path; "failed" dropped from the empty folders
# removed; _job_done's unlink of the earlier traceback (the folder then stays)
def run_failing_seed_1(tmp_path, monkeypatch) -> tuple[ExperimentConfig, Path, list, str]:
    """A tiny npz run of target_only over seeds 0 and 1 whose seed 1 raises: its config, run directory,
    results.json's ``failed`` and the JobsFailed message (``ex.run_job`` is left patched)."""
    real = ex.run_job

    def fail_seed_1(cfg, data, net, run_dir, cls, seed, *more):
        if seed == 1:
            raise ValueError("boom on seed 1")
        return real(cfg, data, net, run_dir, cls, seed, *more)
    monkeypatch.setattr(ex, "run_job", fail_seed_1)
    data = _npz(tmp_path)
    cfg = ExperimentConfig(name="f", source=f"npz:{data}", target=f"npz:{data}", methods=["target_only"], k=1,
                           repeats=2, select_on="none", pretrain=TWO, train=TWO, out_dir=str(tmp_path))
    with pytest.raises(JobsFailed) as caught:
        ex.run_experiment(cfg, log=lambda *a: None)
    (run_dir,) = (tmp_path / "f").iterdir()
    return cfg, run_dir, json.loads((run_dir / "results.json").read_text())["failed"], str(caught.value)


def test_a_failed_job_is_recorded_with_its_traceback_and_a_resume_that_runs_it_leaves_no_failed_folder(
        tmp_path, monkeypatch):
    real = ex.run_job
    cfg, run_dir, failed, message = run_failing_seed_1(tmp_path, monkeypatch)
    assert re.search("1 of 2 job", message)
    assert failed == [{"job": "target_only seed 1", "error": "ValueError: boom on seed 1",
                       "traceback": str(Path("failed") / "target_only-k=1-s1.txt")}]
    assert "boom on seed 1" in (run_dir / failed[0]["traceback"]).read_text()
    monkeypatch.setattr(ex, "run_job", real)
    _, rows = ex.run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    assert [r["seed"] for r in rows] == [0, 1]
    assert not (run_dir / "failed").exists() and not (run_dir / "checkpoints").exists()
    assert json.loads((run_dir / "results.json").read_text()).get("failed", []) == []
