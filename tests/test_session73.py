"""Session 73: the items the stop 72 note left, and the findings of this session's audits (numerical robustness
n1, memory m1, terminal output o1, GPU code paths g1, the mutation pass), each with a test that fails on the code
before it."""

import math

import pytest
import torch

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


# ---- numerical robustness (audit n1) ----------------------------------------------------------------------------
def _custom(losses):
    from test_engine_mutation import custom
    return custom(losses)


def test_a_training_whose_loss_explodes_without_nan_warns_once_that_it_diverged():
    # before: lr 1e6 with Adam gave losses of 1e16-1e20 and rows at chance level, recorded without a word
    import warnings

    import helpers

    from transferkit.engine import Engine
    from transferkit.errors import TransferkitWarning

    def exploding(method, batch):  # finite, but 1e4 times larger every window
        return {"ce": method.supervised(batch.target) * 10.0 ** (4 * (batch.step // 2))}
    with pytest.warns(TransferkitWarning, match=r"'custom': the training loss grew from .* \(before any update\) to "
                                               r".* by step 4: the training diverged.*lower the learning rate") as w:
        Engine(TrainConfig(steps=8, batch_size=8, eval_every=2, lr=1e-9, progress=False)).fit(
            _custom(exploding), target=helpers.toy_domain(16))
    assert sum("diverged" in str(m.message) for m in w) == 1  # once, at the first window past the limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Engine(TrainConfig(steps=8, batch_size=8, eval_every=2, progress=False)).fit(
            _custom(None), target=helpers.toy_domain(16))  # an ordinary training says nothing


def test_weights_that_became_nan_under_a_finite_loss_are_refused_before_a_checkpoint_keeps_them(tmp_path):
    # before: an update left NaN weights while its loss was finite; the checkpoint saved them, the next step's loss
    # was NaN, and every resume failed again at that step
    import helpers

    from transferkit.engine import Engine

    def poisoned(method, batch):
        if batch.step == 3:
            with torch.no_grad():
                method.net.head.weight.fill_(float("nan"))
            return {"ce": method.supervised(batch.target).nan_to_num(0.0)}
        return {"ce": method.supervised(batch.target)}
    engine = Engine(TrainConfig(steps=10, batch_size=8, eval_every=5, checkpoint_every=1, progress=False),
                    checkpoint_dir=tmp_path / "ck")
    with pytest.raises(TransferkitError, match=r"'custom': parameters net\.units\.unit1\.0\.weight, .* became NaN "
                                               r"or infinite by step 4 \(the loss was still finite\): lower the "
                                               r"learning rate"):
        engine.fit(_custom(poisoned), target=helpers.toy_domain(16))
    from safetensors.torch import load_file
    saved = load_file(str(next((tmp_path / "ck").glob("last*.safetensors"))))
    assert all(bool(torch.isfinite(v).all()) for v in saved.values() if v.is_floating_point())


def test_a_loss_not_finite_before_any_update_does_not_blame_the_learning_rate():
    import helpers

    from transferkit.engine import Engine
    with pytest.raises(TransferkitError, match=r"at step 0 .*no update has run yet, so the learning rate is not the "
                                               r"cause: the method's options"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False)).fit(
            _custom(lambda m, b: {"ce": m.supervised(b.target) * float("inf")}), target=helpers.toy_domain(16))


@pytest.mark.parametrize("method, options", [("dann", {"weight": float("inf")}), ("lext", {"tau_target": math.inf}),
                                             ("matching_net", {"scale": float("inf")})])
def test_infinite_option_values_are_refused(method, options):
    from transferkit import Transfer
    name = next(iter(options))
    with pytest.raises(TransferkitError, match=rf"option {name} must be a finite number"):
        Transfer(method, **options)


def test_predict_and_score_refuse_outputs_that_are_not_finite():
    # before: NaN logits gave class 0 for every image (score: the share of class 0)
    import helpers

    from transferkit import Transfer
    d = helpers.toy_domain(16)
    model = Transfer("source_only", train=TrainConfig(steps=1, batch_size=8, progress=False),
                     backbone="convnet4").fit(source=d)
    with torch.no_grad():
        model.net_.head.weight.fill_(float("nan"))
    for call, images in ((model.predict, d.images[:4]), (model.score, d)):
        with pytest.raises(TransferkitError, match=r"outputs for these images hold NaN or infinite values"):
            call(images)


def test_a_prototype_head_scores_the_dtype_it_was_fitted_in():
    from transferkit.heads import PrototypeHead
    head = PrototypeHead(4, 2).fit(torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 1, 0, 1]))
    assert head(torch.randn(3, 4, dtype=torch.float64)).shape == (3, 2)  # before: torch's dtype error


def test_the_gzsl_report_masks_below_any_score():
    # before: seen classes were masked with -1e9, above scores of -2e9, so the ZSL accuracy counted them
    from transferkit.zeroshot import zero_shot_report
    scores = torch.tensor([[0.0, -2e9, -3e9], [0.0, -3e9, -2e9], [5.0, 0.0, 0.0]])
    report = zero_shot_report(scores, torch.tensor([1, 2, 0]), seen=[0], unseen=[1, 2])
    assert report["zsl"] == 1.0


def test_entropy_and_coral_name_what_is_missing():
    from transferkit.losses import coral, entropy
    with pytest.raises(TransferkitError, match=r"entropy needs N x C logits of one sample or more, got shape \(0, 4\)"):
        entropy(torch.zeros(0, 4))
    with pytest.raises(TransferkitError, match=r"raise train.batch_size"):
        coral(torch.randn(1, 3), torch.randn(4, 3))


def test_models_pre_trained_alike_share_one_copy_of_the_pre_trained_weights(monkeypatch):
    # before (audit m1): each later Transfer kept its own copy of the process memo's weights (twice the weights
    # per model held in memory); load_state_dict copies them into the network anyway
    import helpers

    import transferkit.api as api
    from transferkit import Transfer
    monkeypatch.setattr(api, "PRETRAINED", api.OrderedDict())
    tiny = TrainConfig(steps=2, batch_size=8, progress=False)
    models = [Transfer(name, backbone="lenet", pretrain=tiny, train=TrainConfig(steps=1, batch_size=8, progress=False))
              .fit(source=helpers.toy_domain(16, name="s"), target=helpers.toy_domain(8, seed=1, name="t"))
              for name in ("finetune", "ft_fc", "linear_probe")]
    pointers = [{k: v.data_ptr() for k, v in m._pretrained[1].items()} for m in models]
    assert pointers[0] == pointers[1] == pointers[2]
    assert all(v.data_ptr() != pointers[0][k] for k, v in models[0].net_.state_dict().items())  # the nets' own


def test_a_domain_is_resized_in_chunks_into_one_tensor_with_the_same_pixels(monkeypatch):
    # before (audit m1): the whole set was resized at once, 3.5x the result at the peak (12,000 syndigits 377 MB)
    import torch.nn.functional as F

    import transferkit.domain as domain
    from transferkit.domain import Domain
    x = torch.rand(50, 3, 32, 32)
    whole = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    sizes, real = [], F.interpolate
    monkeypatch.setattr(domain.F, "interpolate", lambda t, **kw: sizes.append(len(t)) or real(t, **kw))
    chunked = domain._resized
    monkeypatch.setattr(domain, "_resized", lambda t, size: chunked(t, size, chunk_mb=0.1))
    d = Domain("d", x, torch.arange(50) % 5, list("abcde"))
    assert torch.equal(d.to_format(28).images, whole)
    assert sizes == [8] * 6 + [2]  # 0.1 MB of 12 KB images: 8 at a time


# ---- what a user sees (audit o1) --------------------------------------------------------------------------------
def test_training_bars_are_off_in_pool_workers_and_named_by_the_job(monkeypatch):
    # before: each worker of --workers 2 drew its bar on the parent's line (garbled), every bar named by the method
    # only (two seeds alike), and the pre-training's bar was called source_only
    import sys

    import helpers

    import transferkit.engine as engine
    from transferkit.jobs import _worker_init
    bars = []
    monkeypatch.setattr(engine, "tqdm", lambda **kw: bars.append(kw) or helpers_bar())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    def helpers_bar():
        from tqdm import tqdm
        return tqdm(disable=True)
    fit = TrainConfig(steps=2, batch_size=8)
    engine.Engine(fit, run_name="finetune-k=5-s1/train").fit(_custom(None), target=helpers.toy_domain(16))
    assert bars[-1]["desc"] == "finetune-k=5-s1/train" and len(bars) == 1
    import signal

    import transferkit.jobs as jobs
    monkeypatch.setattr(engine, "BARS", True)  # _worker_init sets it off for the rest of this process: undone after
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "1")
    for name in ("one_line_warnings", "keep_freed_memory", "preload_lazy_imports"):  # a worker's, not pytest's
        monkeypatch.setattr(jobs, name, lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    monkeypatch.setattr(jobs.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(jobs.threading.Thread, "start", lambda self: None)  # not the watch of a parent process
    monkeypatch.setattr("tqdm.tqdm.set_lock", lambda lock: None)
    _worker_init(1, 0)
    engine.Engine(fit).fit(_custom(None), target=helpers.toy_domain(16))
    assert len(bars) == 1  # a worker's fit shows no bar: none is made


def test_the_pre_training_bar_says_pre_training(tmp_path, monkeypatch):
    import transferkit.engine as engine
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    names = []
    real = engine.Engine.__init__
    monkeypatch.setattr(engine.Engine, "__init__", lambda self, *a, **kw: names.append(kw.get("run_name")) or
                        real(self, *a, **kw))
    cfg = ExperimentConfig(name="bar", source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    logs: list = []
    run_experiment(cfg, log=logs.append)
    assert names == ["pre-training"]
    assert any(line.startswith("pre-training") and line.endswith("20 steps, seed 0)") for line in logs), logs


def test_a_resume_with_no_job_left_gives_no_warning_about_the_jobs(tmp_path, monkeypatch):
    # before: "finetune trains on 20 labelled target images ... selects on the 269 labels" on a resume that trains
    # nothing; a resume with a job left still says it, and so does a run
    import warnings

    from transferkit.errors import TransferkitWarning
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cfg = ExperimentConfig(name="quiet", source="digits", target="digits", k=2, repeats=1,
                           methods=["source_only", "finetune"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path / "runs"))
    with pytest.warns(TransferkitWarning, match="selects .* on the 269 labels"):
        run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1] == rows
    (run_dir / "jobs" / "finetune-k=2-s0.json").unlink()
    with pytest.warns(TransferkitWarning, match="selects .* on the 269 labels"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)


# ---- GPU code paths, shown on the CPU (audit g1) ------------------------------------------------------------------
def test_a_domain_holds_its_tensors_on_the_cpu(monkeypatch):
    # before: a Domain kept GPU tensors, and its class lookups (select_classes, split_domain, score of other class
    # names) indexed CPU tables with them: torch's "indices should be either on cpu or on the same device"
    import helpers

    from transferkit.domain import Domain
    toy = helpers.toy_domain(8)
    moved = []

    class OnDevice(torch.Tensor):  # a tensor that says when it is taken off its (pretend) device
        def cpu(self, *a, **kw):
            moved.append(self.shape)
            return torch.Tensor.cpu(torch.Tensor(self))
    groups = torch.arange(8).as_subclass(OnDevice)
    d = Domain("g", toy.images.as_subclass(OnDevice), toy.labels.as_subclass(OnDevice), toy.class_names,
               groups=groups, keys=torch.arange(8).as_subclass(OnDevice))
    assert len(moved) == 4 and all(type(t) is torch.Tensor for t in (d.images, d.labels, d.groups, d.keys))


def test_retrieval_group_ids_on_two_devices_are_compared_on_the_cpu():
    from transferkit import retrieval
    calls = []

    class OnDevice(torch.Tensor):
        def cpu(self, *a, **kw):
            calls.append(1)
            return torch.Tensor.cpu(torch.Tensor(self))
    ids = retrieval._group_ids(torch.tensor([3, 4]).as_subclass(OnDevice), torch.tensor([4, 3, 3]), 2, 3, False)
    assert calls == [1] and [t.tolist() for t in ids] == [[0, 1], [1, 0, 0]]


# ---- found by the mutation pass (tests/test_session73_mutation.py) -------------------------------------------------
def test_a_training_that_blows_up_in_its_first_window_warns_too():
    # before: measured against the first window's mean, a training already at 1e14 there never warned
    import helpers

    from transferkit.engine import Engine
    from transferkit.errors import TransferkitWarning

    def blows_up_at_once(method, batch):
        return {"ce": method.supervised(batch.target) * (1.0 if batch.step == 0 else 1e14)}
    with pytest.warns(TransferkitWarning, match=r"loss grew from .* \(before any update\) to .* by step 2: the "
                                               r"training diverged"):
        Engine(TrainConfig(steps=6, batch_size=8, eval_every=2, lr=1e-9, progress=False)).fit(
            _custom(blows_up_at_once), target=helpers.toy_domain(16))


def test_a_key_given_twice_with_one_value_written_two_ways_is_not_a_repeat():
    import warnings

    from transferkit.config import load_config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(None, ["train.lr=1e-3", "train.lr=0.001"]).train.lr == 0.001


def test_demo_s_set_says_it_has_no_field_to_set():
    # before: "unknown config key 'seeds'; known: quick", and --set quick=... was then refused as "use --quick"
    with pytest.raises(TransferkitError, match=r"benchmark demo has no plan field that --set could change"):
        make_plan("demo", True, ["seeds=1"])


# ---- results under write failures (audit w1) ----------------------------------------------------------------------
def test_a_directory_made_read_only_keeps_the_real_error_and_frees_the_lock(tmp_path, monkeypatch):
    # before: the lock file's unlink raised PermissionError in place of the error that ended the work, and the
    # descriptor was never closed: the same process then found its own directory "in use by another process"
    import errno
    from pathlib import Path

    from transferkit import io
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", str(self))) if self.name == ".lock" else
        real_unlink(self, missing_ok))
    with pytest.raises(OSError, match=r"No space left on device while writing"):
        with io.directory_lock(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device while writing",
                          str(tmp_path / 'results.json'))
    with io.directory_lock(tmp_path):  # free again in this process
        pass


def test_a_writer_s_error_names_the_file_it_was_writing(tmp_path):
    # before: `[Errno 27] File too large` or `[Errno 28] No space left on device`, with no file named
    import errno

    from transferkit.io import atomic_path
    target = tmp_path / "results.md"
    target.write_text("the old table")
    with pytest.raises(OSError, match=r"No space left on device while writing: '.*results\.md'$") as caught:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")  # as Path.write_text raises it: no file name
    assert caught.value.filename == str(target) and target.read_text() == "the old table"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]  # no temporary file left


def test_write_failures_that_every_later_job_would_meet_stop_the_jobs():
    import errno

    from transferkit.jobs import _machine_error
    assert _machine_error(OSError(errno.EFBIG, "File too large"))
    assert _machine_error(PermissionError(errno.EACCES, "Permission denied while writing", "/r/jobs/a.json"))
    assert not _machine_error(PermissionError(errno.EACCES, "Permission denied"))  # a plugin's own file, say


def test_a_command_stopped_by_a_full_disk_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    import errno

    import transferkit.cli as cli
    import transferkit.runtime as runtime
    from transferkit.runtime import note_work_dir
    monkeypatch.setattr(runtime, "_WORK_DIR", [])  # this test's directory is not left to the next ones
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("k: 2\n")

    def stopped(args, argv):
        note_work_dir(run_dir)
        raise OSError(errno.ENOSPC, "No space left on device while writing", str(run_dir / 'results.json'))
    monkeypatch.setattr(cli, "_dispatch", stopped)
    assert cli.main(["run", "--set", "k=2"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"go on with: transferkit run --set k=2 --resume {run_dir}" in err


# ---- what a user sees, part 2 (audit o2) ----------------------------------------------------------------------------
def test_a_benchmark_s_last_lines_name_its_own_tables_and_figures(tmp_path, capsys, monkeypatch):
    # before: only `results: .../results.json`, never fewshot.md, uda_tables.md, flex's tables or the figures
    from helpers import run_cli

    import transferkit.bench as bench
    out_dir = tmp_path / "b"
    (out_dir / "img").mkdir(parents=True)
    for name in ("results.md", "fewshot.md", "img/accuracy_vs_k_main.png", "img/tsne.png"):
        (out_dir / name).write_text("x")
    (out_dir / "jobs" / "r1" / "img").mkdir(parents=True)
    (out_dir / "jobs" / "r1" / "img" / "a.png").write_text("x")  # a job's own: not the suite's
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **kw: (out_dir, []))
    code, out, err = run_cli(capsys, "bench", "fewshot", "--quick")
    assert code == 0, err
    assert out.strip().splitlines()[-2:] == [
        f"tables fewshot.md; figures img/accuracy_vs_k_main.png, img/tsne.png: in {out_dir}",
        f"results: {out_dir / 'results.json'}"]


def test_the_report_s_cost_figure_is_named_by_what_it_draws():
    from transferkit.report import cost_figure
    rows = [{"method": "a", "wall_s": 1.0}, {"method": "b", "wall_s": 2.0}]
    assert cost_figure([], rows)[0][0] == "Wall time per method"  # before: "... and peak memory", none drawn
    assert cost_figure([], [{**r, "peak_rss_mb": 10.0} for r in rows])[0][0] == "Wall time and peak memory per method"


def _flex_notes(tmp_path, monkeypatch, ratios: str) -> list[str]:
    """The note lines of flex_suite on mnist+blur at ``ratios``, with no network trained and no job run."""
    import helpers

    import transferkit.bench.flex as flex
    monkeypatch.setattr(flex, "source_network", lambda *a, **k: (helpers.tiny_net(10), {"val_accuracy": 0.5}))
    monkeypatch.setattr(flex, "embed", lambda net, images: torch.zeros(len(images), 4))
    monkeypatch.setattr(flex, "accuracy", lambda net, domain: 0.5)
    monkeypatch.setattr(flex, "run_jobs", lambda jobs, *a, **k: [])
    monkeypatch.setattr(flex, "directory_reports", lambda *a, **k: [])
    lines: list = []
    flex.flex_suite(make_plan("flex", True, [f"ratios={ratios}", "targets=mnist+blur"]), tmp_path, lines.append)
    return [line for line in lines if line.startswith("note:")]


def test_flex_says_when_a_ratio_takes_every_image_of_a_class(tmp_path, monkeypatch):
    # before: "r=300" rows trained on the whole train split (about 150 per class) with no note (represent has one)
    notes = _flex_notes(tmp_path, monkeypatch, "3,300")
    assert len(notes) == 1 and notes[0].startswith("note: mnist+blur: ratio 300 takes every training image of a "
                                                   "class with fewer (")


def test_latex_tables_write_the_method_labels_of_the_benchmarks_in_ascii():
    # before: `summary --format latex` wrote `lext α=0` as it is, which pdflatex rejects
    from transferkit.bench.fewshot import ABLATIONS, VARIANTS
    from transferkit.tables import latex_text
    for label in [*ABLATIONS, *VARIANTS, "mnist → digits", "≈300 steps"]:
        assert latex_text(label).isascii(), label
    assert latex_text("lext α=0") == r"lext $\alpha$=0"


def test_a_permission_error_before_any_work_gives_no_resume_advice(tmp_path, monkeypatch, capsys):
    import errno

    import transferkit.cli as cli
    import transferkit.runtime as runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])
    monkeypatch.setattr(cli, "_dispatch", lambda args, argv: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "my.yaml"))))
    assert cli.main(["run", str(tmp_path / "my.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and "resume" not in err and "kept" not in err


def test_a_value_yaml_reads_as_a_date_that_does_not_exist_is_named(tmp_path):
    # before: PyYAML's ValueError ("month must be in 1..12") as a raw traceback, from --set and from a config file
    from transferkit.config import load_config
    with pytest.raises(TransferkitError, match=r"--set seed: YAML reads '2001-13-45' as a date, and month must be "
                                               r"in 1\.\.12 \(quoted, it is text\)"):
        load_config(None, ["seed=1", "seed=2001-13-45"])
    path = tmp_path / "c.yaml"
    path.write_text("seed: 2001-13-45\n")
    with pytest.raises(TransferkitError, match=r"c\.yaml: YAML reads '2001-13-45' as a date, and month must be"):
        load_config(path)


def test_a_full_disk_in_a_command_without_resume_gives_no_resume_advice(tmp_path, monkeypatch, capsys):
    # before: `transferkit show ... --out` past a file-size limit was told to --resume, which show does not take
    import errno

    import transferkit.cli as cli
    import transferkit.runtime as runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])

    def full(args, argv):
        runtime.note_work_dir(tmp_path)  # even with a directory noted
        raise OSError(errno.EFBIG, "File too large while writing", "g.png")
    monkeypatch.setattr(cli, "_dispatch", full)
    assert cli.main(["show", "mnist", "--out", str(tmp_path / "g.png")]) == 2
    assert "resume" not in capsys.readouterr().err


# ---- the code review (audit r1) ------------------------------------------------------------------------------------
def test_a_loss_not_finite_from_nan_starting_weights_names_the_weights():
    # before: "the method's options ... or the data give it" for a network that began with NaN weights
    import helpers

    from transferkit.engine import Engine
    method = _custom(None)
    with torch.no_grad():
        method.net.head.weight.fill_(float("nan"))
    with pytest.raises(TransferkitError, match=r"at step 0 .*the starting weights hold NaN or infinite values "
                                               r"\(net\.head\.weight\)"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False)).fit(method, target=helpers.toy_domain(16))


def test_a_loss_that_grows_toward_minus_infinity_warns_too():
    import helpers

    from transferkit.engine import Engine
    from transferkit.errors import TransferkitWarning

    def maximised(method, batch):  # a plugin's term that the training maximises, run away
        return {"gain": -method.supervised(batch.target) * 10.0 ** (4 * (batch.step // 2))}
    with pytest.warns(TransferkitWarning, match=r"the training diverged"):
        Engine(TrainConfig(steps=6, batch_size=8, eval_every=2, lr=1e-9, progress=False)).fit(
            _custom(maximised), target=helpers.toy_domain(16))


def test_a_flag_given_with_a_set_of_its_key_says_which_wins(capsys):
    # before: "workers is given 2 times ('1', '2'): the last, '2', is used" for --workers 2 --set workers=1 (the flag
    # won, not the last written)
    import warnings

    from helpers import run_cli
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, "run", "--workers", "2", "--set", "workers=1", "--print-config")
    assert code == 0 and "workers: 2" in out, err
    assert [str(w.message) for w in said] == ["--workers 2 wins over --set workers=1"]


def test_warnings_of_the_checks_before_nproc_starts_processes_are_left_to_rank_0(monkeypatch, capsys):
    # before: `run --nproc 2 --set seed=1 --set seed=2` printed the repeated-key warning twice (launcher and rank 0)
    import warnings

    from helpers import run_cli

    import transferkit.cli as cli
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(cli, "_relaunch_with_torchrun", lambda nproc, argv: 0)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        code, _, err = run_cli(capsys, "run", "--nproc", "2", "--set", "seed=1", "--set", "seed=2")
    assert code == 0, err
    assert not [w for w in said if "given 2 times" in str(w.message)]
