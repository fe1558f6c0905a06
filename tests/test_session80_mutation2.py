"""Session 80 second mutation pass (tests only): hand-made mutants of the library changes 1e30d3c..ac3be20
(metrics streams, errors.ignored's lock, loss modules' options, unset stage devices, the failed-jobs line,
load_job_network's hint, image_batch's size warning, check_data's message, bench's Plan.settings and uda /
zeroshot tables, runtime.source_revision, cli._show's early PNG check). Each mutant was applied alone in a clone
and run with -x against every tests/test_session80*.py file and the module's own test file(s); a survivor that
is not equivalent is killed by a test below (checked: it fails with the mutant, passes without).

45 mutants: 31 killed by the tests before, 13 survived and are killed by a test here, 1 equivalent.

A01 io.py:is_stream: an own stream's name is always a stream (closed fd too): killed-by-new-test
A02 io.py:is_stream: mode is not None and exists: killed-before (session80_h_fix2)
A03 io.py:is_stream: a FIFO is a stream again: killed-by-new-test
A04 io.py:check_stream: closed-descriptor check dropped: killed-before (session80_h_fix2)
A05 io.py:check_stream: named-pipe check dropped: killed-before (session80_h_fix2)
A06 io.py:check_stream: an own stream that is a pipe refused: killed-before (session80_h_fix2)
A07 io.py:append_jsonl: no check_stream: killed-before (session80_h_fix2)
A08 io.py:append_jsonl: BrokenPipeError not suppressed: killed-before (session80_h_fix2)
A09 io.py:append_jsonl: opened descriptor's is_stream check -> True: killed-by-new-test
A10 engine.py:Engine.fit: no check_stream before the first step: killed-by-new-test
A11 errors.py:ignored: no lock around the insert: killed-before (session80_h_fix2)
A12 errors.py:ignored: no lock around find-and-delete: killed-before (session80_h_fix2)
A13 losses.py:_LossModule: known = params without a default: killed-before (session80_h_fix2)
A14 losses.py:_LossModule: known = every parameter: killed-before (session80_h_fix2)
A15 losses.py:_LossModule: unknown option not refused: killed-before (session80_h_fix2)
A16 losses.py:_LossModule: no 'none' for an empty list: killed-before (session80_h_fix2)
A17 config.py:unset_stage_device: cpu left out: killed-before (session80_h_fix2)
A18 config.py:unset_stage_device: $TRANSFERKIT_DEVICE left out: killed-by-new-test
A19 config.py:__post_init__: `or d == self.device` dropped: killed-by-new-test
A20 cli.py:_stage_devices: no unset_stage_device: killed-before (session80_h_fix2)
A21 cli.py:_stage_devices: the file's device not followed: killed-before (session80_h_nd)
A22 cli.py:_show: no early check_png: killed-by-new-test
A23 report.py:_failed_status: every name joined: killed-before (session80_h_fix2)
A24 experiment.py:load_job_network: setting condition inverted: killed-before (session80_h_fix2, h_old)
A25 experiment.py:load_job_network: no setting= in the hint: killed-before (session80_h_fix2)
A26 domain.py:image_batch: `not exact` dropped from the warning: equivalent (exact=True passes `fits` only
    with the exact shape, so the sizes are equal wherever the warning is reached)
A27 domain.py:image_batch: width alone compared: killed-by-new-test
A28 domain.py:image_batch: no size warning: killed-before (session80_h_prac)
A29 domain.py:image_batch: read_images hint only when exact: killed-before (session80_h_prac)
A30 methods/base.py:check_data: no split_domain hint: killed-before (session80_h_prac)
A31 bench/__init__.py:plan_yaml: no settings without a budget: killed-by-new-test
A32 bench/__init__.py:plan_yaml: no settings after the budget: killed-before (session80_h_repro)
A33 bench/uda.py:UdaPlan.settings: methods not filtered: killed-before (session80_h_repro)
A34 bench/uda.py:table3: 's' if epochs != 0: killed-before (session80_h_repro)
A35 bench/zeroshot.py:_encoder_note: None counted as another encoder: killed-before (session80_h_repro)
A36 bench/zeroshot.py:_encoder_note: a note with no other encoder: killed-before (session80_h_repro)
A37 bench/zeroshot.py:zeroshot_tables: no note: killed-before (session80_h_repro)
A38 bench/zeroshot.py:TEXT_ENCODER another name: killed-before (session80_h_repro)
A39 runtime.py:source_revision: never +dirty: killed-by-new-test
A40 runtime.py:source_revision: no .git check (a parent checkout's commit): killed-by-new-test
A41 runtime.py:source_revision: untracked files make it dirty: killed-by-new-test
A42 runtime.py:source_revision: changes outside transferkit/ make it dirty: killed-by-new-test
A43 runtime.py:kernel_environment: no revision: killed-before (session80_h_repro)
A44 compare.py:VERSIONED: no revision: killed-before (session80_h_repro)
A45 runtime.py:source_revision: HEAD~1: killed-before (session80_h_repro)
"""

import os
import subprocess
import warnings

import helpers
import pytest
import torch

from transferkit.errors import TransferkitError, TransferkitWarning


# ---- io.is_stream: one of the process's own streams is one only while open -------------------------------------
def test_a_closed_descriptor_s_path_is_no_stream():
    from transferkit.io import is_stream
    r, w = os.pipe()
    os.close(r)
    assert is_stream(f"/dev/fd/{w}")
    os.close(w)
    assert not is_stream(f"/dev/fd/{w}") and not is_stream(f"/proc/self/fd/{w}")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
def test_a_named_pipe_is_no_stream(tmp_path):
    from transferkit.io import is_stream
    os.mkfifo(tmp_path / "p")
    assert not is_stream(tmp_path / "p") and is_stream("/dev/null")


# ---- io.append_jsonl: a stream that is no longer one once opened is refused -------------------------------------
def test_a_metrics_stream_that_is_a_regular_file_once_opened_is_refused(tmp_path, monkeypatch):
    from transferkit import io
    path = tmp_path / "m.jsonl"
    path.write_text("")
    # the path said a stream (check_stream's one stat), the descriptor opened is a regular file (replaced in between)
    monkeypatch.setattr(io, "check_stream", lambda p, what="metrics file": True)
    with pytest.raises(TransferkitError, match="changed while it was opened: it is no longer a character device"):
        io.append_jsonl(path, {"step": 1})
    assert path.read_text() == ""


# ---- Engine.fit: a refused metrics path stops the fit before its first step -------------------------------------
def test_a_closed_descriptor_as_metrics_path_is_refused_before_any_step():
    from transferkit.backbones import build_backbone
    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods import get_method
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    method = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1))
    before = {k: v.clone() for k, v in method.state_dict().items()}
    with pytest.raises(TransferkitError, match="names no open output stream"):
        Engine(TrainConfig(steps=1, batch_size=8, progress=False), metrics_path=f"/dev/fd/{w}").fit(
            method, target=helpers.toy_domain(8))
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())


# ---- config.unset_stage_device: cpu and $TRANSFERKIT_DEVICE's both -------------------------------------------------
def test_a_stage_device_nobody_set_is_cpu_or_the_environment_s(monkeypatch):
    from transferkit.config import unset_stage_device
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "cuda:3")
    assert unset_stage_device("cpu") and unset_stage_device("cuda:3")
    assert not unset_stage_device("cuda:2")
    monkeypatch.delenv("TRANSFERKIT_DEVICE")
    assert unset_stage_device("cpu") and not unset_stage_device("cuda:3")


# ---- domain.image_batch: a height alone that differs warns too ------------------------------------------------------
def test_images_of_another_height_alone_warn():
    from transferkit.domain import image_batch
    with pytest.warns(TransferkitWarning, match="images of 16 x 28 pixels for a network built for 28 x 28"):
        image_batch(torch.rand(2, 3, 16, 28), "logits", (3, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        image_batch(torch.rand(2, 3, 28, 28), "logits", (3, 28, 28))


# ---- bench.plan_yaml: a plan's settings are shown without a budget too ---------------------------------------------
def test_print_plan_shows_the_settings_of_a_plan_without_a_budget():
    import dataclasses

    from transferkit.bench import Plan, plan_yaml

    @dataclasses.dataclass
    class Tuned(Plan):
        def settings(self):
            return ["a → b: `m`: weight=2"]

    assert plan_yaml(Tuned()) == "quick: false\n# a → b: `m`: weight=2\n"


# ---- runtime.source_revision: the commit, +dirty for tracked changes under transferkit/ alone --------------------
def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def _revision(monkeypatch, root):
    from transferkit import runtime
    monkeypatch.setattr(runtime, "__file__", str(root / "transferkit" / "runtime.py"))
    return runtime.source_revision.__wrapped__()


def test_source_revision_is_the_commit_dirty_only_for_tracked_changes_of_the_package(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    (root / "transferkit").mkdir(parents=True)
    (root / "transferkit" / "runtime.py").write_text("x = 1\n")
    (root / "README.md").write_text("r\n")
    _git(root, "init", "-q")
    _git(root, "add", "transferkit/runtime.py", "README.md")
    _git(root, "commit", "-q", "-m", "one")
    _git(root, "commit", "-q", "--allow-empty", "-m", "two")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert _revision(monkeypatch, root) == head
    (root / "README.md").write_text("changed\n")  # outside transferkit/
    (root / "transferkit" / "new.py").write_text("")  # untracked
    assert _revision(monkeypatch, root) == head
    (root / "transferkit" / "runtime.py").write_text("x = 2\n")
    assert _revision(monkeypatch, root) == f"{head}+dirty"


def test_source_revision_of_a_package_inside_another_checkout_is_none(tmp_path, monkeypatch):
    # site-packages of a virtual environment kept in a project's git checkout: not transferkit's commit
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "commit", "-q", "--allow-empty", "-m", "project")
    root = tmp_path / "venv" / "site-packages"
    (root / "transferkit").mkdir(parents=True)
    assert _revision(monkeypatch, root) is None


# ---- ExperimentConfig: a stage device equal to `device` is kept ------------------------------------------------------
def test_a_stage_device_equal_to_the_experiment_s_is_accepted(monkeypatch):
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    cfg = ExperimentConfig(name="d", methods=["finetune"], device="cuda:1", train=TrainConfig(device="cuda:1"),
                           pretrain=TrainConfig(device="cpu"))
    assert cfg.train.device == cfg.pretrain.device == "cuda:1"
    with pytest.raises(TransferkitError, match="train.device is 'cuda:2' but device is 'cuda:1'"):
        ExperimentConfig(name="d", methods=["finetune"], device="cuda:1", train=TrainConfig(device="cuda:2"))


# ---- cli show: a grid name that is not *.png is refused before the domain is read ----------------------------------
def test_show_refuses_a_grid_name_before_reading_the_domain(monkeypatch, capsys):
    import transferkit.data as data
    from transferkit.cli import main
    monkeypatch.setattr(data, "load_domain", lambda *a, **k: pytest.fail("the domain was read"))
    assert main(["show", "digits", "--out", "grid.jpg"]) != 0
    assert "the sample grid is a PNG image: name it *.png, got 'grid.jpg'" in capsys.readouterr().err
