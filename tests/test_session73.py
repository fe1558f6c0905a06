"""Session 73: the items the stop 72 note left, each with a test that fails on the code before it."""

import shutil

import pytest

from transferkit.bench import make_plan
from transferkit.config import ExperimentConfig
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.experiment import run_experiment

TINY_PRE = TrainConfig(steps=20, eval_every=10)
TINY = TrainConfig(steps=10, eval_every=5, batch_size=16)


@pytest.mark.parametrize("field, text", [("ks", '"[5,10]"'), ("pairs", "'[mnist:digits, digits:mnist]'")])
def test_a_list_in_quotes_is_told_the_set_forms_that_work(field, text):
    suite = "fewshot" if field == "ks" else "uda"
    with pytest.raises(TransferkitError, match=rf"{field}: got the text .*a YAML list in quotes") as caught:
        make_plan(suite, True, [f"{field}={text}"])
    for advice in str(caught.value).split("--set ")[1:]:  # each form the message gives is taken
        make_plan(suite, True, [advice.split(", or")[0].strip().strip("'")])


def test_a_damaged_pinned_copy_of_a_pretrained_file_is_told_to_copy_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    base = ExperimentConfig(name="pre", source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                            pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    first_dir, _ = run_experiment(base, log=lambda *a: None)
    shutil.copyfile(first_dir / "source.safetensors", tmp_path / "net.safetensors")
    cfg = ExperimentConfig(**{**base.__dict__, "name": "from-file", "pretrained": str(tmp_path / "net.safetensors"),
                              "methods": ["source_only", "finetune"]})
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    pinned = run_dir / "source.safetensors"
    pinned.write_bytes(b"\xff" * 64)
    (run_dir / "jobs" / "finetune-k=2-s0.json").unlink()
    with pytest.raises(TransferkitError, match=r"source.safetensors is unreadable .*: delete it and resume to copy "
                                               r"the pretrained: file .*net.safetensors again"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    pinned.unlink()
    resumed = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]
    assert [r["per_class_accuracy"] for r in resumed] == [r["per_class_accuracy"] for r in rows]


def test_a_resume_with_no_job_left_does_not_pay_for_torchs_lazy_imports(tmp_path, monkeypatch):
    import transferkit.experiment as experiment
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(experiment, "preload_lazy_imports", lambda: calls.append(1))
    cfg = ExperimentConfig(name="done", source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert calls == [1]
    assert run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1] == rows and calls == [1]


def test_a_marker_left_by_a_killed_torchrun_group_neither_releases_the_next_group_nor_stays(tmp_path, monkeypatch):
    # before: the marker was named by MASTER_PORT only, so one left by a killed group of the same port let the next
    # group's other ranks pass (and meet rank 0 at a barrier that could time out) while another run pre-trained
    import threading
    import time

    import transferkit.source as source
    from transferkit.io import waiting_lock
    events, lock = [], tmp_path / "lenet-k.lock"
    (tmp_path / "lenet-k.held-29511").touch()  # a killed group's (the same port)
    monkeypatch.setenv("MASTER_PORT", "29511")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-2")
    monkeypatch.setattr(source, "world_size", lambda: 2)
    monkeypatch.setattr(source, "is_main_process", lambda: threading.current_thread().name == "rank0")
    gate = threading.Barrier(2, timeout=10)
    monkeypatch.setattr(source, "barrier", lambda: events.append(("barrier", threading.current_thread().name))
                        or gate.wait())

    def rank():
        with source.pretraining_lock(lock, poll_s=0.01):
            events.append(("in", threading.current_thread().name))

    with waiting_lock(lock):  # another run pre-training the same network
        ranks = [threading.Thread(target=rank, name=f"rank{r}", daemon=True) for r in (1, 0)]
        for r in ranks:
            r.start()
        time.sleep(0.3)
        assert events == []  # rank 1 waits for this launch's marker, not the killed group's
    for r in ranks:
        r.join(timeout=10)
    assert sorted(events) == [("barrier", "rank0"), ("barrier", "rank1"), ("in", "rank0"), ("in", "rank1")]
    assert not list(tmp_path.glob("lenet-k.held-*"))  # the stale marker went with this group's


def test_an_nproc_launcher_removes_the_temporary_folders_killed_launchers_left(tmp_path, monkeypatch):
    # before: a launcher killed with SIGKILL left its transferkit-nproc-* folder (torchrun's logs) in $TMPDIR for good
    import os
    import subprocess
    import sys
    import tempfile

    import transferkit.cli as cli
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed, live = tmp_path / f"transferkit-nproc-{dead.pid}-abc", tmp_path / f"transferkit-nproc-{os.getpid()}-xyz"
    for folder in (killed, live):
        (folder / "torchrun").mkdir(parents=True)
    other = tmp_path / "transferkit-nproc-notes"  # not a launcher's folder
    other.mkdir()
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no torchrun here")))
    with pytest.raises(RuntimeError, match="no torchrun here"):
        cli._relaunch_with_torchrun(2, ["run", "x.yaml"])
    assert not killed.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])  # its own went at its end


def test_a_key_set_twice_with_other_values_warns_that_the_last_is_used(tmp_path):
    # before: `--set seeds=1 --set seeds=2` (or --workers 2 with --set workers=1) kept the last without a word
    import warnings

    from transferkit.config import load_config
    from transferkit.errors import TransferkitWarning
    with pytest.warns(TransferkitWarning, match=r"seeds is given 2 times \('1', '2'\): the last, '2', is used"):
        assert make_plan("uda", True, ["seeds=1", "seeds=2"]).seeds == (2,)
    with pytest.warns(TransferkitWarning, match=r"workers is given 2 times \('1', '2'\)"):
        assert load_config(None, ["workers=1", "k=3", "workers=2"]).workers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, ["k=3", "k=3", "train.steps=5"])  # the same value twice, and other keys: nothing to say
