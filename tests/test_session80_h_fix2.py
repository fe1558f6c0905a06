"""Session 80 (h_fix2): a review's findings on this session's change. A metrics file that is a named pipe,
or a closed descriptor's /dev/fd/N, is refused before training (not a hang or a raw error mid-training), and a
line to the process's own stream whose reader has gone is dropped; quiet() under threads leaves no ignore
rule behind and takes out no other filter; a loss module without options refuses a misspelt one at
construction; --device does not warn of a config file's stage device that follows `device` anyway; the
failed-jobs line of a report names five jobs and counts the rest; load_job_network's hint for a method that
adds to its network names the setting of a run of several."""

import os
import sys
import threading
import warnings

import helpers
import pytest
import yaml

from transferkit.backbones import build_backbone
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.io import append_jsonl
from transferkit.methods import get_method

fifos = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")


# ---- 1. metrics streams -----------------------------------------------------------------------------------------
@fifos
def test_a_named_pipe_as_metrics_file_is_refused_before_training_saying_what_to_give(tmp_path):
    # before: each record reopened the pipe: a one-shot reader's exit, or none at all, blocked training for good
    fifo = tmp_path / "lines"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader there: the old code wrote (and took) the line
    try:
        with pytest.raises(TransferkitError, match=r"lines is a named pipe, which transferkit does not write.*"
                                                   r"give a regular file .*/dev/null, /dev/stdout"):
            append_jsonl(fifo, {"step": 1})
        net = build_backbone("lenet", num_classes=4, in_channels=1)
        with pytest.raises(TransferkitError, match="is a named pipe"):
            Engine(TrainConfig(steps=1, batch_size=8, progress=False), metrics_path=fifo).fit(
                get_method("finetune")(net), target=helpers.toy_domain(8))
        assert os.read(reader, 100) == b""
    finally:
        os.close(reader)


def test_a_closed_descriptor_s_path_is_refused_clearly_not_a_raw_file_not_found():
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # fd w is closed now: /dev/fd/w names nothing
    for path in (f"/dev/fd/{w}", f"/proc/self/fd/{w}"):
        with pytest.raises(TransferkitError, match=rf"{path} names no open output stream of this process"):
            append_jsonl(path, {"step": 1})


@pytest.mark.skipif(not os.path.exists("/dev/fd"), reason="no /dev/fd")
def test_a_line_to_the_process_s_own_stream_whose_reader_has_gone_is_dropped():
    # before: a raw BrokenPipeError (stdout closed by `| head`) stopped training
    r, w = os.pipe()
    os.close(r)  # the reader has gone
    try:
        append_jsonl(f"/dev/fd/{w}", {"step": 1})
    finally:
        os.close(w)


# ---- 2. quiet() under threads -----------------------------------------------------------------------------------
def test_quiet_under_threads_leaves_no_rule_behind_and_keeps_the_user_s_filter():
    # before: the exit found its rule, then deleted by index: another thread's insert between deleted that
    # thread's rule (or the user's filter) instead, and left its own behind for good
    from transferkit.errors import quiet
    deleting, b_inserted = threading.Event(), threading.Event()

    class Paused(list):  # a's delete waits for b's insert (50 ms at most): the thread switch the race needs
        def insert(self, index, item):
            super().insert(index, item)
            if threading.current_thread().name == "b":
                b_inserted.set()

        def __delitem__(self, index):
            if threading.current_thread().name == "a":
                deleting.set()
                b_inserted.wait(0.05)
            super().__delitem__(index)

    def a():
        with quiet():
            pass

    def b():  # in quiet() while a takes its rule out
        deleting.wait(1)
        with quiet():
            threads[0].join(1)

    def loop():
        for _ in range(3000):
            with quiet():
                pass

    interval = sys.getswitchinterval()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the user's")
        before = list(warnings.filters)
        warnings.filters = Paused(before)
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=a, name="a"), threading.Thread(target=b, name="b")]
            threads += [threading.Thread(target=loop) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        assert deleting.is_set() and warnings.filters == before


# ---- 3. loss modules' options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["CoralLoss", "EntropyLoss", "DifferenceLoss", "ScaleInvariantMSELoss"])
def test_a_loss_module_without_options_refuses_one_at_construction(name):
    # before: CoralLoss(wieght=2.0) was built and failed at forward with a raw TypeError of the function
    from transferkit import losses
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'wieght'; it takes none$"):
        getattr(losses, name)(wieght=2.0)
    assert getattr(losses, name)().options == {}


def test_a_loss_module_s_options_are_checked_against_its_function():
    from transferkit import losses

    class Reversal(losses._LossModule):
        loss = staticmethod(losses.grad_reverse)

    assert Reversal(coeff=0.5).options == {"coeff": 0.5}
    with pytest.raises(TypeError, match=r"^Reversal\(\) got an unexpected keyword argument 'cof'; it takes coeff$"):
        Reversal(cof=0.5)


# ---- 4. --device over a config file's stage device that follows `device` anyway ---------------------------------
def test_device_does_not_warn_of_a_stage_device_that_follows_device_anyway(tmp_path, capsys, monkeypatch):
    # before: "--device cuda:0 wins over train.device=cpu of config file ...", though cpu is the unset default
    from transferkit.cli import main
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("methods: [finetune]\ndevice: cuda:1\ntrain: {device: cpu}\npretrain: {device: cuda:2}\n")
    with pytest.warns(TransferkitWarning) as said:
        assert main(["run", str(path), "--device", "cuda:0", "--print-config"]) == 0
    assert [str(w.message) for w in said] == [f"--device cuda:0 wins over pretrain.device=cuda:2 of config file "
                                              f"{path}"]
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["device"] == printed["train"]["device"] == printed["pretrain"]["device"] == "cuda:0"


# ---- 5. a report's failed-jobs line ----------------------------------------------------------------------------
def test_the_failed_jobs_line_of_a_report_names_five_and_counts_the_rest():
    # before: it named every failed job, however many
    from transferkit.report import _failed_status
    failed = [{"job": f"j{i}", "error": "E"} for i in range(8)]
    assert _failed_status(failed) == ["8 job(s) failed and have no row in the table: j0, j1, j2, j3, j4 and 3 more "
                                      "jobs (their errors are under the table)."]
    assert _failed_status(failed[:5])[0].startswith("5 job(s) failed and have no row in the table: j0, j1, j2, j3, "
                                                    "j4 (their")


# ---- 6. load_job_network's hint names the setting of a run of several -------------------------------------------
def test_the_hint_for_a_method_that_adds_to_its_network_names_the_setting_of_a_run_of_several(tmp_path):
    # before: it said load_model(run_dir, 'ft_ss', seed=0).net, which such a run refuses without setting=
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import load_job_network, load_model, run_experiment
    cfg = ExperimentConfig(name="ss", source="digits", target="digits", source_classes="0-4", target_classes="0-4",
                           methods=["ft_ss"], k=[1, 2], repeats=1, select_on="none", out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=1, eval_every=1), train=TrainConfig(steps=1, eval_every=1))
    run = tmp_path / "ss"
    run_experiment(cfg, run_dir=run, log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"load_model\(run_dir, 'ft_ss', seed=0, setting='k=2'\)\.net, or"):
        load_job_network(run, "ft_ss", setting="k = 2")
    with pytest.raises(TransferkitError, match="ran the settings k=1, k=2: say which"):
        load_model(run, "ft_ss", seed=0)
    assert load_model(run, "ft_ss", seed=0, setting="k=2").net is not None  # the hint's call reads it
