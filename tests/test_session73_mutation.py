"""Two mutation passes over this session's library changes (tests/test_session73.py holds their tests): the
first, 64 mutants, 33 killed by the tests before this file; the second, over the changes after it, 52 mutants, 37
killed before. Each test here kills a survivor (named in its comment).

Judged equivalent, so not tested: the launcher's ``folder.is_dir()`` (rmtree with ignore_errors of a file does
nothing), its glob ``*-*`` (the pid filter skips other names), ``_resized``'s default chunk (bit-identical; only
memory changes), ``"loss" not in record`` (every record has it). Not tested (text only): episodes' "(table:
episodes.md)", the bench / demo parser descriptions. Second pass: flex's ``counts[counts > 0]`` (every class of
the built-in targets has training images) judged equivalent; ``run_job``'s quieted ``job_method`` is killed by
the last test here.
"""
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_bench_core_flex_second_mutation import toy  # noqa: F401, F811 (a fixture)

from transferkit.bench import make_plan
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning


def test_api_pretraining_is_named(monkeypatch):  # api2
    import helpers

    import transferkit.api as api
    import transferkit.engine as engine
    from transferkit import Transfer
    monkeypatch.setattr(api, "PRETRAINED", api.OrderedDict())
    names, real = [], engine.Engine.__init__
    monkeypatch.setattr(engine.Engine, "__init__", lambda self, *a, **kw: names.append(kw.get("run_name")) or
                        real(self, *a, **kw))
    Transfer("finetune", backbone="lenet", pretrain=TrainConfig(steps=2, batch_size=8, progress=False),
             train=TrainConfig(steps=1, batch_size=8, progress=False)).fit(
        source=helpers.toy_domain(16, name="s"), target=helpers.toy_domain(8, seed=1, name="t"))
    assert names[0] == "pre-training"


def test_predict_refuses_one_infinite_output(): # api3
    import helpers

    from transferkit import Transfer
    d = helpers.toy_domain(16)
    model = Transfer("source_only", train=TrainConfig(steps=1, batch_size=8, progress=False),
                     backbone="convnet4").fit(source=d)
    with torch.no_grad():
        model.net_.head.bias[0] = float("inf")
    with pytest.raises(TransferkitError, match="NaN or infinite"):
        model.predict(d.images[:4])


def test_list_advice_is_shell_safe():  # bench2, bench4
    with pytest.raises(TransferkitError) as caught:
        make_plan("uda", True, ["pairs='[mnist:digits, digits:mnist]'"])
    assert "--set 'pairs=[mnist:digits, digits:mnist]'" in str(caught.value)
    assert "--set pairs=mnist:digits,digits:mnist" in str(caught.value)


def test_list_in_quotes_with_spaces_around():  # bench3
    with pytest.raises(TransferkitError, match="YAML list in quotes"):
        make_plan("fewshot", True, ["ks=' [5,10] '"])


def test_half_a_list_is_not_called_a_list():  # bench1
    with pytest.raises(TransferkitError) as caught:
        make_plan("fewshot", True, ["ks='[5,10'"])
    assert "YAML list in quotes" not in str(caught.value)


def _launch(monkeypatch, tmp_path):
    import tempfile

    import transferkit.cli as cli
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, *a, **k: seen.append(cmd) or
                        (_ for _ in ()).throw(RuntimeError("no torchrun here")))
    with pytest.raises(RuntimeError):
        cli._relaunch_with_torchrun(2, ["run", "x.yaml"])
    return seen


def test_launcher_folder_names_its_pid(tmp_path, monkeypatch):  # cli2
    seen = _launch(monkeypatch, tmp_path)
    log = next(c for c in seen[0] if str(c).startswith("--log-dir="))
    assert Path(log.split("=", 1)[1]).parent.name.startswith(f"transferkit-nproc-{os.getpid()}-")


def test_a_folder_not_named_by_a_pid_is_left(tmp_path, monkeypatch):  # cli3
    (tmp_path / "transferkit-nproc-mine-notes").mkdir()
    _launch(monkeypatch, tmp_path)
    assert (tmp_path / "transferkit-nproc-mine-notes").exists()


def test_domain_resize_with_a_tiny_chunk_and_clamp():  # dom1, dom2
    import torch.nn.functional as F

    from transferkit.domain import _resized
    x = torch.ones(3, 1, 32, 32)
    out = _resized(x, 28, chunk_mb=1e-9)
    assert out.shape == (3, 1, 28, 28) and float(out.max()) <= 1.0
    assert float(F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True).max()) > 1.0  # why the clamp


def test_resize_keeps_dtype():  # dom5
    from transferkit.domain import _resized
    assert _resized(torch.rand(2, 1, 8, 8, dtype=torch.float64), 4).dtype == torch.float64


def test_no_bar_on_other_ranks(monkeypatch):  # eng1
    import helpers
    from test_engine_mutation import custom

    import transferkit.engine as engine
    bars = []
    from tqdm import tqdm
    monkeypatch.setattr(engine, "tqdm", lambda **kw: bars.append(kw) or tqdm(disable=True))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(engine, "is_main_process", lambda: False)
    engine.Engine(TrainConfig(steps=2, batch_size=8)).fit(custom(None), target=helpers.toy_domain(16))
    assert bars == []  # none made: none shows


def test_a_small_first_loss_growing_to_one_is_no_divergence():  # eng7
    import helpers
    from test_engine_mutation import custom

    def small_then_normal(method, batch):
        return {"ce": method.supervised(batch.target) * (1e-4 if batch.step < 2 else 1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        Engine(TrainConfig(steps=4, batch_size=8, eval_every=2, lr=1e-9, progress=False)).fit(
            custom(small_then_normal), target=helpers.toy_domain(16))


def test_nan_weights_of_the_last_step_are_refused_without_checkpoints():  # eng11
    import helpers
    from test_engine_mutation import custom

    def poisoned(method, batch):
        if batch.step == 3:
            with torch.no_grad():
                method.net.head.weight[0, 0] = float("nan")  # one weight
            return {"ce": method.supervised(batch.target).nan_to_num(0.0)}
        return {"ce": method.supervised(batch.target)}
    with pytest.raises(TransferkitError, match="became NaN or infinite by step 4"):
        Engine(TrainConfig(steps=4, batch_size=8, progress=False)).fit(custom(poisoned), target=helpers.toy_domain(16))


def test_entropy_of_one_dimensional_logits_is_refused():  # loss1
    from transferkit.losses import entropy
    with pytest.raises(TransferkitError, match="N x C logits"):
        entropy(torch.zeros(4))


def test_tap_refuses_an_infinite_c():  # tap1
    import helpers

    from transferkit.methods.tap import tap
    d = helpers.toy_domain(8)
    with pytest.raises(TransferkitError, match="finite number > 0"):
        tap(helpers.tiny_net(4), d, d, c=math.inf)


def test_a_stale_marker_of_a_lock_with_brackets_goes(tmp_path, monkeypatch):  # src3
    import transferkit.source as source
    lock = tmp_path / "n[1].lock"
    (tmp_path / "n[1].held-old").touch()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "new")
    monkeypatch.setattr(source, "world_size", lambda: 2)
    monkeypatch.setattr(source, "is_main_process", lambda: True)
    monkeypatch.setattr(source, "barrier", lambda: None)
    with source.pretraining_lock(lock):
        pass
    assert not (tmp_path / "n[1].held-old").exists()


def test_gzsl_prediction_never_picks_a_class_outside_seen_and_unseen():  # zs2
    from transferkit.zeroshot import zero_shot_report
    scores = torch.tensor([[-2e9, -3e9, -5e9], [-3e9, -2e9, -5e9]])
    report = zero_shot_report(scores, torch.tensor([0, 1]), seen=[0], unseen=[1])
    assert report["seen"] == 1.0 and report["unseen"] == 1.0


def test_repeated_keys_compare_stripped():  # cfg5, cfg6
    from transferkit.config import load_config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, ["k=3", "k= 3"])
    with pytest.warns(TransferkitWarning, match="k is given 2 times"):
        load_config(None, ["k =3", "k=4"])


def test_warnings_of_a_refused_block_are_still_given(tmp_path, monkeypatch):  # exp3
    import transferkit.experiment as experiment
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(experiment, "finished_rows", lambda *a: (_ for _ in ()).throw(TransferkitError("boom")))
    cfg = ExperimentConfig(name="w", source="digits", target="digits", k=2, repeats=1, methods=["finetune"],
                           pretrain=TrainConfig(steps=20, eval_every=10), train=TrainConfig(steps=10, eval_every=5,
                                                                                           batch_size=16),
                           out_dir=str(tmp_path / "runs"))
    with pytest.warns(TransferkitWarning, match="selects .* on the 269 labels"):
        with pytest.raises(TransferkitError, match="boom"):
            run_experiment(cfg, log=lambda *a: None)


def test_a_loss_500_times_the_first_is_no_divergence():  # eng6
    import helpers
    from test_engine_mutation import custom

    def grows(method, batch):
        return {"ce": method.supervised(batch.target) * (1.0 if batch.step < 2 else 500.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        Engine(TrainConfig(steps=4, batch_size=8, eval_every=2, lr=1e-9, progress=False)).fit(
            custom(grows), target=helpers.toy_domain(16))


def test_a_cached_source_network_is_said_to_be_read_back(tmp_path, monkeypatch):  # exp6
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    base = dict(source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                pretrain=TrainConfig(steps=20, eval_every=10), train=TrainConfig(steps=10, eval_every=5, batch_size=16),
                out_dir=str(tmp_path / "runs"))
    run_experiment(ExperimentConfig(name="a", **base), log=lambda *a: None)
    lines = []
    run_experiment(ExperimentConfig(name="b", **base), log=lambda *a: lines.append(" ".join(map(str, a))))
    assert any(l.startswith("source network:") and "read back (pre-trained earlier in" in l for l in lines), lines


def test_a_zero_weight_is_taken():  # base3
    from transferkit import Transfer
    Transfer("dann", weight=0.0)


def test_one_nan_weight_is_refused():  # eng12
    import helpers
    from test_engine_mutation import custom
    method = custom(None)

    def hook(step, state):
        if step == 4:
            with torch.no_grad():
                method.net.head.weight[0, 0] = float("nan")  # after the last update: one weight of many
    with pytest.raises(TransferkitError, match=r"net\.head\.weight became NaN or infinite by step 4"):
        Engine(TrainConfig(steps=4, batch_size=8, progress=False), hooks=hook).fit(method,
                                                                                target=helpers.toy_domain(16))


# ---- the second pass -----------------------------------------------------------------------------------------
def test_resume_refuses_set_quick(tmp_path, toy):  # noqa: F811  # kills: _check_overrides dropped from _resumed_selection
    from helpers import store_plan
    from test_bench_core_flex_second_mutation import sec_plan

    from transferkit.bench import resumed_plan
    store_plan(tmp_path, sec_plan(True))
    with pytest.raises(TransferkitError, match="use --quick, not --set quick"):
        resumed_plan("toy", False, ["quick=true"], tmp_path)


def test_flex_ratio_equal_to_the_smallest_class_has_no_note(tmp_path, monkeypatch):  # kills: `r > smallest` -> `>=`
    import re

    from test_session73 import _flex_notes
    note, = _flex_notes(tmp_path / "a", monkeypatch, "300")
    smallest = int(re.search(r"\((\d+) in its smallest", note).group(1))
    assert _flex_notes(tmp_path / "b", monkeypatch, str(smallest)) == []
    assert len(_flex_notes(tmp_path / "c", monkeypatch, str(smallest + 1))) == 1


def test_other_outputs_lists_six_figures_then_a_count_and_skips_jobs(tmp_path):
    # kills: figures[:6] -> [:5]; `> 6` -> `> 7`; the "jobs" exclusion dropped
    from transferkit.cli import _other_outputs
    (tmp_path / "img").mkdir()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "x.png").write_bytes(b"")
    for i in range(7):
        (tmp_path / "img" / f"f{i}.png").write_bytes(b"")
    said = _other_outputs(tmp_path)
    assert said == (f"figures {', '.join(f'img/f{i}.png' for i in range(6))} and 1 more: in {tmp_path}")
    (tmp_path / "img" / "f6.png").unlink()
    assert _other_outputs(tmp_path) == f"figures {', '.join(f'img/f{i}.png' for i in range(6))}: in {tmp_path}"


def test_machine_error_and_full_or_denied_take_every_named_errno():
    # kills: EPERM dropped from jobs._machine_error; EFBIG / EACCES / EPERM dropped from cli._is_full_or_denied
    import errno

    from transferkit import cli
    from transferkit.jobs import _machine_error
    assert _machine_error(PermissionError(errno.EPERM, "Operation not permitted while writing", "/r/jobs/a.json"))
    assert not _machine_error(OSError(errno.ENOENT, "No such file while writing", "/r/jobs/a.json"))
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM):
        assert cli._is_full_or_denied(OSError(code, "x"))
    assert not cli._is_full_or_denied(OSError(errno.ENOENT, "x"))


def test_atomic_path_leaves_named_or_errno_less_errors_alone(tmp_path):
    # kills: either operand of `e.filename is not None or e.errno is None` dropped in io.atomic_path
    import errno

    from transferkit.io import atomic_path
    with pytest.raises(FileNotFoundError) as info:
        with atomic_path(tmp_path / "a.json"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "other"))
    assert info.value.filename == str(tmp_path / "other") and "writing" not in str(info.value)
    with pytest.raises(OSError) as info:
        with atomic_path(tmp_path / "a.json"):
            raise OSError("a plugin's own message")
    assert str(info.value) == "a plugin's own message"
    with pytest.raises(OSError, match=r"No space left on device while writing: .*a\.json'$") as info:
        with atomic_path(tmp_path / "a.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "a.json") and not list(tmp_path.iterdir())


def test_an_oserror_other_than_full_or_denied_gets_no_resume_hint(tmp_path, monkeypatch, capsys):
    # kills: `if _is_full_or_denied(e)` dropped from cli.main's OSError branch (a run with a directory kept, so that
    # only that test stands between the error and the advice)
    import errno

    import transferkit.runtime as runtime
    from transferkit import cli
    monkeypatch.setattr(runtime, "_WORK_DIR", [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("k: 2\n")

    def fails(args, argv):
        runtime.note_work_dir(run_dir)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x.yaml")
    monkeypatch.setattr(cli, "_dispatch", fails)
    assert cli.main(["run", "--set", "k=2"]) != 0
    err = capsys.readouterr().err
    assert "No such file or directory" in err and "kept" not in err and "--resume" not in err


def test_a_resumed_fit_measures_divergence_from_the_loss_before_any_update(tmp_path):
    # kills: `if step == 0` -> `if step == first_step` (a resume re-measured from its first, already diverged, step)
    import helpers
    from helpers import Interrupt
    from test_session73 import _custom

    from transferkit.config import TrainConfig
    from transferkit.engine import Engine
    from transferkit.errors import TransferkitWarning

    def late(method, batch):
        return {"ce": method.supervised(batch.target) * (1.0 if batch.step < 4 else 1e14)}
    cfg = TrainConfig(steps=8, batch_size=8, eval_every=2, checkpoint_every=2, lr=1e-9, progress=False)
    with pytest.raises(Interrupt):
        Engine(cfg, checkpoint_dir=tmp_path, hooks=(helpers.crash_at(5),)).fit(_custom(late),
                                                                                target=helpers.toy_domain(16))
    with pytest.warns(TransferkitWarning, match=r"\(before any update\) to .* by step 6: the training diverged"):
        Engine(cfg, checkpoint_dir=tmp_path).fit(_custom(late), target=helpers.toy_domain(16))


def test_quiet_leaves_out_transferkit_s_warnings_only():  # kills: quiet ignoring UserWarning (torch's, a plugin's)
    import warnings

    from transferkit.errors import TransferkitWarning, quiet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet():
            warnings.warn("ours", TransferkitWarning, stacklevel=1)
            warnings.warn("a plugin's", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a plugin's"]


def test_a_job_builds_its_method_without_repeating_the_warnings_the_checks_gave(tmp_path, monkeypatch):
    # kills: run_job's `with _quiet()` around job_method dropped (each job repeated what check_jobs had said once)
    import transferkit.experiment as experiment
    from transferkit.config import ExperimentConfig
    from transferkit.errors import warn
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    real = experiment.job_method
    monkeypatch.setattr(experiment, "job_method", lambda *a, **k: (warn("built in a job"), real(*a, **k))[1])
    cfg = ExperimentConfig(name="q", source="digits", target="digits", k=2, repeats=2, methods=["finetune"],
                           select_on="none", pretrain=TrainConfig(steps=20, eval_every=10),
                           train=TrainConfig(steps=4, eval_every=2, batch_size=16), out_dir=str(tmp_path / "runs"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment.run_experiment(cfg, log=lambda *a: None)
    assert not [w for w in caught if "built in a job" in str(w.message)]
