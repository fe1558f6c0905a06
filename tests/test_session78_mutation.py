"""Session 78 mutation pass (h_mut) over the session's library change (``git diff 8f2ee24..HEAD -- transferkit``).

115 hand-made mutants, each applied alone and reverted; "before" = failed by tests/test_session78*.py (the h_* files
and test_session78.py; five by older files: io_append_torn by tests/test_engine.py, hd_gt0 by tests/test_heads.py,
three cli ones by tests/test_cli.py and tests/test_cli_fifth_mutation.py). The survivors were then run against the
related older files (-k selections of test_cli*, test_engine*, test_io_*, test_evaluate*, test_retrieval,
test_heads, test_config*, test_report). Counts: 115 tried, 55 killed before, 55 killed by the tests below, 4
equivalent, 1 left.

Killed before (55): __init__ __dir__ without __all__; cli _stopped_early re-raising SystemExit, _not_a_run without
the lock-only branch, _loaded keyed by the bare name, _resume_hint ignoring the loaded runtime, _stopped printing
when a peer failed (the last three also by the tests below); only_its_lock as ".lock in names", unfinished_hint
without its lock-only line; the early config.yaml write dropped; load_model's type check dropped; load_job_network
without the trust_pickles refusal; run_episodes' refused-only raise dropped; open_regular's errno list cut to ELOOP,
O_NOFOLLOW dropped (the h_fh run hangs), _not_regular always "not a regular file"; append_jsonl's torn check
dropped; _json_line with allow_nan; removable always inside, naming ``path`` not the link; cache_dir checking every
call, not recording a checked cache; run names with c < " " dropped, < NAME_BYTES, len in characters; report _inside
keeping all, without its note, config.yaml files not filtered; DIVERGED_FLOOR 1.0; _has_diverged at 10x the limit,
FitResult.diverged False; the warning's label / lr_key dropped; buffers not checked, non-float buffers only,
_nonfinite_start check dropped; the float32 window; source's .diverged path, "diverged" not kept in the pinned
record, the pinned-run warning dropped, lr_key dropped; in_float32 casting float64 down, not casting half floats;
retrieval_map's filter dropped; PrototypeHead scale >= 0; prototype metadata: dict check as "not None", metric as
any str, an overflowing integer as 1.0, scale > 0 or finite dropped; Flex.spawned_workers 1, Method.spawned_workers
2; check_workers_reach without shifts, without the network's classes, naming --workers for flex's option; check_jobs
and Transfer without check_method_workers.

Killed by the tests below (55): __init__.__getattr__ for dunder names (transferkit.__main__), no caching in
globals(); cli._stopped returning 130 for SIGTERM, _not_a_run's holder test flipped; unfinished_hint not asking the
holder of a lock-only directory; load_job_network without fork_rng, _saved_model ignoring the network file,
_save_job_network not removing a stale file, swallowing OSError, _save_evaluated keeping a stale network file;
run_episodes' refused warning dropped, "N jobs" prefix for one; open_regular's S_ISREG check dropped, _flock's lstat
as stat, directory_holder following links; append_jsonl always ending the last line, reading byte end-2;
_json_line's fallback without _finite; the cache warning's uid branch dropped, 0o002 as 0o004, the own-group test
dropped, 0o020 as 0o040, _own_group ignoring other members; run names allowing NUL, refusing spaces or DEL; report_files
link check reduced to resolve; _divergence_limit without abs, taking a null loss, without the None return;
_has_diverged without abs; _lower_the_rate with >= 1, "_mult" suffix, plural at one, not called after an update;
read_source_file's restore_head without its path; _float32_if_low casting integer tensors; mean_se without the
equal-values shortcut, sum for fsum, the shortcut for infinities, fsum for non-finite values; the no-relevant
warning dropped, at counts <= 1, counting every query, without "outside their group", "besides themselves" with
groups; _check_scale without the metric; metadata scale true taken, json.loads' TypeError not caught, a non-text
stored value as {}; TwoStageTranslation.training_stages (2,) and (2, 1); ft_unit's Mapping/bytes exclusion and
iterable check dropped, its number check dropped (repeats then fail unsortably); uda._adapted reading only a .pt.

Equivalent (4): _flock comparing st_ino alone (the path and the descriptor are one directory's: a device differs
only through a mount swapped under the lock file); write_report's report_files check without its resolve part, the
is_symlink part alone (a non-link ``out/report_files`` always resolves inside ``out``); _warn_if_diverged skipping
null losses instead of reading them as 0 (both never exceed the limit); _lower_the_rate without its bool exclusion
(True > 1 is False).

Left (1): Engine.fit checking the starting weights on a resume as well (``if True``): a checkpoint this version
writes is checked finite (parameters and buffers) before it is saved, so only an older checkpoint with NaN BatchNorm
statistics would tell, and building one needs the previous version.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_session78_h_fg import _prototype_file, finished_run  # noqa: F401 (a module-scoped fixture)
from test_session78_h_fh import ROW

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


# ---------------------------------------------------------------- the lazy package (__init__.__getattr__)

def test_the_lazy_package_offers_no_dunder_module_and_keeps_a_loaded_name():
    code = ("import transferkit\n"
            "print(hasattr(transferkit, '__main__'), 'Engine' in vars(transferkit))\n"
            "e = transferkit.Engine\n"
            "print('Engine' in vars(transferkit), vars(transferkit).get('Engine') is e)\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True", "True"]


# ---------------------------------------------------------------- cli._stopped / _loaded

def _stopped_run(tmp_path, monkeypatch, capsys, e):
    from transferkit import cli, runtime
    run = tmp_path / "run"
    (run / "jobs").mkdir(parents=True, exist_ok=True)
    (run / "jobs" / "finetune-k=1-s0.json").write_text("{}")
    monkeypatch.setattr(runtime, "_WORK_DIR", [run])
    argv = ["run", "--set", "k=1"]
    code = cli._stopped(cli.build_parser().parse_args(argv), argv, e)
    return run, code, capsys.readouterr().err


def test_a_stopped_command_names_the_directory_its_loaded_runtime_recorded_and_the_signal_s_status(
        tmp_path, monkeypatch, capsys):
    from transferkit import cli
    run, code, err = _stopped_run(tmp_path, monkeypatch, capsys, cli.Terminated(signal.SIGTERM))
    assert code == 128 + signal.SIGTERM
    assert err.startswith("transferkit: terminated (SIGTERM); finished jobs are kept in ")
    assert str(run) in err
    _, code, err = _stopped_run(tmp_path, monkeypatch, capsys, KeyboardInterrupt())
    assert code == 130 and err.startswith("transferkit: interrupted; finished jobs")


def test_a_stopped_rank_whose_peer_failed_prints_nothing(tmp_path, monkeypatch, capsys):
    from transferkit import distributed
    monkeypatch.setattr(distributed, "peer_failed", lambda: True)
    _, code, err = _stopped_run(tmp_path, monkeypatch, capsys, KeyboardInterrupt())
    assert code == 130 and err == ""


# ---------------------------------------------------------------- a directory holding only a lock

def test_resume_of_a_lock_only_directory_offers_its_config_unless_a_process_works_there(tmp_path):
    from transferkit import cli
    from transferkit.io import directory_lock
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".lock").write_text("")
    why = cli._not_a_run(killed, False)
    assert "holds only the lock" in why and f"(or give its config: transferkit run CONFIG --resume {killed}" in why
    with directory_lock(killed):  # one working there now: the hint names it, and no config is offered
        why = cli._not_a_run(killed, False)
    assert "is working in it now" in why and "or give its config" not in why


# ---------------------------------------------------------------- cache_dir's warning of a cache others may write

def _cache_warnings(tmp_path, monkeypatch, mode, name="cache") -> list[str]:
    import warnings

    from transferkit import io
    cache = tmp_path / name
    cache.mkdir()
    cache.chmod(mode)
    monkeypatch.setattr(io, "_CACHES_CHECKED", set())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(cache))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert io.cache_dir() == cache
    return [str(w.message) for w in caught if "is not yours alone" in str(w.message)]


@pytest.mark.skipif(os.name == "nt", reason="POSIX mode bits")
def test_a_cache_of_another_owner_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    said = _cache_warnings(tmp_path, monkeypatch, 0o700)
    assert len(said) == 1 and f"it belongs to another user (uid {os.stat(tmp_path).st_uid})" in said[0]


@pytest.mark.skipif(os.name == "nt", reason="POSIX mode bits")
def test_a_group_writable_cache_is_named_unless_the_group_is_the_user_s_own(tmp_path, monkeypatch):
    from transferkit import io
    assert _cache_warnings(tmp_path, monkeypatch, 0o755, "readable") == []  # others read it, nobody else writes
    monkeypatch.setattr(io, "_own_group", lambda gid: False)
    said = _cache_warnings(tmp_path, monkeypatch, 0o730, "shared")  # group write without group read
    assert len(said) == 1 and "its group (gid" in said[0]
    monkeypatch.setattr(io, "_own_group", lambda gid: True)
    assert _cache_warnings(tmp_path, monkeypatch, 0o770, "private") == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX groups")
def test_a_group_named_as_the_user_with_other_members_is_not_the_user_s_own(monkeypatch):
    import grp
    import pwd
    from types import SimpleNamespace

    from transferkit import io
    me = pwd.getpwuid(os.getuid()).pw_name
    members = []
    monkeypatch.setattr(grp, "getgrgid", lambda gid: SimpleNamespace(gr_name=me, gr_mem=members))
    assert io._own_group(12345)
    members[:] = [me]
    assert io._own_group(12345)
    members[:] = [me, "someone_else"]
    assert not io._own_group(12345)


# ---------------------------------------------------------------- append_jsonl / _json_line

def test_metrics_lines_are_whole_lines_without_blank_ones_and_a_torn_one_is_ended_once(tmp_path):
    from transferkit.io import append_jsonl
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    with open(path, "ab") as f:
        f.write(b'{"st')  # killed mid-line
    append_jsonl(path, {"step": 3})
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n{"st\n{"step": 3}\n'


def test_a_metrics_line_writes_non_finite_values_of_a_tensor_as_null(tmp_path):
    import json

    import torch

    from transferkit.io import append_jsonl
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"loss": float("nan"), "per_class": torch.tensor([0.5, float("inf")])})
    line = path.read_text()
    assert json.loads(line) == {"loss": None, "per_class": [0.5, None]} and "NaN" not in line and "Infinity" not in line


# ---------------------------------------------------------------- engine: the divergence limit and the advice

def test_the_divergence_limit_measures_from_the_first_loss_in_size_or_the_floor():
    from transferkit.engine import DIVERGED_FACTOR, DIVERGED_FLOOR, TrainConfig, _divergence_limit
    cfg = TrainConfig(eval_every=5)
    assert _divergence_limit([], cfg, None) is None  # no loss yet
    assert _divergence_limit([{"loss": None}], cfg, None) is None  # a metrics line's null is no loss
    assert _divergence_limit([], cfg, -4.0) == (-4.0, "before any update", DIVERGED_FACTOR * 4.0)
    assert _divergence_limit([], cfg, 1e-4)[2] == DIVERGED_FACTOR * DIVERGED_FLOOR
    # a checkpoint without the first loss: the first window's mean that is not null
    assert _divergence_limit([{"step": 5, "loss": None}, {"step": 10, "loss": 2.0}], cfg, None) == (
        2.0, "the first 5 steps", DIVERGED_FACTOR * 2.0)


def test_has_diverged_takes_any_window_past_the_limit_in_size():
    from transferkit.engine import DIVERGED_FACTOR, TrainConfig, _has_diverged
    cfg = TrainConfig()
    limit = DIVERGED_FACTOR * 1.0
    assert not _has_diverged([{"loss": 1.0}, {"loss": limit}], cfg, 1.0)
    assert _has_diverged([{"loss": 1.0}, {"loss": limit * 1.5}, {"loss": 1.0}], cfg, 1.0)
    assert _has_diverged([{"loss": -limit * 1.5}], cfg, 1.0)  # a plugin's maximised terms: in size
    assert not _has_diverged([{"loss": None}, {"step": 2}], cfg, None)


def _with_options(**values):
    from transferkit.methods.base import Method

    class _Mults(Method):  # not registered: only its options are read
        def __init__(self, net, disc_lr_mult: float = 1.0, head_lr_mult: float = 1.0, flag_lr_mult: bool = False,
                     weight_mult: float = 1.0):
            super().__init__(net)

    method = _Mults.__new__(_Mults)
    method.__dict__.update({"disc_lr_mult": 1.0, "head_lr_mult": 1.0, "flag_lr_mult": False, "weight_mult": 1.0,
                            **values})
    return method


def test_the_advice_after_an_update_names_only_learning_rate_multipliers_above_1():
    from transferkit.engine import _lower_the_rate
    plain = "lower the learning rate"
    assert _lower_the_rate(_with_options()) == plain
    assert _lower_the_rate(_with_options(flag_lr_mult=True, weight_mult=50.0)) == plain  # a bool, not an lr_mult
    one = _lower_the_rate(_with_options(disc_lr_mult=5.0))
    assert one.startswith(f"{plain}, or the method's learning-rate multiplier option above 1 (disc_lr_mult=5;")
    two = _lower_the_rate(_with_options(disc_lr_mult=5.0, head_lr_mult=2))
    assert "multiplier options above 1 (disc_lr_mult=5, head_lr_mult=2;" in two


# ---------------------------------------------------------------- a job's network file (load_job_network)


def test_reading_a_job_s_network_leaves_the_caller_s_random_state(finished_run):  # noqa: F811
    import torch

    from transferkit.experiment import load_job_network
    torch.manual_seed(3)
    before = torch.get_rng_state()
    load_job_network(finished_run, "finetune", in_channels=1)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------- mean_se: exact sums, equal values

def test_mean_se_sums_exactly_and_gives_equal_values_no_spread_only_when_finite():
    import math

    from transferkit.evaluate import mean_se
    m, se = mean_se([1e16, 1.0, -1e16])  # a float sum in order loses the 1.0
    assert m == pytest.approx(1 / 3, rel=1e-12) and se > 0
    assert mean_se([0.7, 0.7, 0.7]) == (0.7, 0.0)
    m, se = mean_se([math.inf, math.inf])  # not finite: no shortcut, a NaN spread as documented
    assert m == math.inf and math.isnan(se)
    m, se = mean_se([math.inf, -math.inf])  # math.fsum would raise here
    assert math.isnan(m) and math.isnan(se)


# ---------------------------------------------------------------- retrieval: queries without a relevant item

def _no_relevant_warnings(*args, **kwargs) -> list[str]:
    import warnings

    from transferkit.retrieval import average_precision_at_k
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        average_precision_at_k(*args, **kwargs)
    return [str(w.message) for w in caught if "no relevant gallery item" in str(w.message)]


def test_the_no_relevant_warning_counts_only_queries_of_none_and_says_what_was_left_out():
    import torch
    queries, gallery = torch.arange(4.0)[:, None], torch.arange(4.0)[:, None] + 0.5
    # one relevant item each (class 1 once, class 3 once): no warning
    assert _no_relevant_warnings(queries, torch.tensor([0, 0, 1, 3]), gallery, torch.tensor([0, 0, 1, 3]), k=2) == []
    said = _no_relevant_warnings(queries, torch.tensor([0, 0, 1, 2]), gallery, torch.tensor([0, 0, 1, 3]), k=2)
    assert len(said) == 1 and said[0].startswith("retrieval: 1 of 4 queries have no relevant gallery item (none of "
                                                 "their class); each scores AP@2 0")
    labels = torch.tensor([0, 0, 1, 2])  # within one set: classes 1 and 2 have only the query itself
    said = _no_relevant_warnings(queries, labels, k=2)
    assert len(said) == 1 and "2 of 4 queries" in said[0] and "(none of their class besides themselves)" in said[0]
    said = _no_relevant_warnings(queries, labels, k=2, groups=torch.tensor([0, 0, 1, 2]))
    assert len(said) == 1 and "4 of 4 queries" in said[0] and "(none of their class outside their group)" in said[0]


# ---------------------------------------------------------------- the run name: control characters

def test_a_run_name_refuses_nul_alone_and_takes_other_characters_a_folder_name_may_hold():
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="no '/', '.' or NUL character"):
        ExperimentConfig(name="a\0b")
    for name in ("a\x7fb", "a\x1fb", "my run ~1"):  # after the review: only NUL is refused (session 78)
        assert ExperimentConfig(name=name).name == name


def test_a_job_with_only_its_network_file_is_read_without_its_pickle(finished_run, tmp_path):  # noqa: F811
    import shutil

    from transferkit.backbones import UnitNet
    from transferkit.experiment import load_job_network
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "models" / "finetune-k=2-s0.pt").unlink()
    assert isinstance(load_job_network(run, "finetune", in_channels=1), UnitNet)


def test_a_network_that_does_not_save_leaves_no_stale_network_file_and_a_full_disk_is_not_excused(tmp_path,
                                                                                                  monkeypatch):
    import errno

    from transferkit import experiment
    stale = tmp_path / "models" / "m-k=1-s0.safetensors"
    stale.parent.mkdir()
    stale.write_bytes(b"an older run's")
    experiment._save_job_network(stale, object())  # no network: save_network refuses it
    assert not stale.exists()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(experiment, "save_network", full)
    with pytest.raises(OSError, match="No space left"):
        experiment._save_job_network(stale, object())


def test_a_model_that_does_not_pickle_removes_the_older_model_and_network_files(tmp_path):
    import torch

    from transferkit import experiment
    from transferkit.errors import TransferkitWarning
    model = tmp_path / "run" / "models" / "m-k=1-s0.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"older")
    network = model.with_suffix(".safetensors")
    network.write_bytes(b"older")
    unpicklable = torch.nn.Module()
    unpicklable.fn = lambda x: x
    with pytest.warns(TransferkitWarning, match="the trained model is not saved"):
        experiment._save_evaluated(model, unpicklable, "m-k=1-s0")
    assert not model.exists() and not network.exists()


def test_episodes_leave_out_a_pickle_only_job_with_a_warning_and_refuse_a_run_of_one_such_job_plainly(
        finished_run, tmp_path):  # noqa: F811
    import shutil
    import warnings

    from transferkit.errors import UntrustedPickle
    from transferkit.fewshot_eval import run_episodes
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "models" / "linear_probe-k=2-s0.safetensors").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, _ = run_episodes(run, None, ["prototype"], 5, [1], 5, 3, 0, lambda *a: None)
    assert {r["method"] for r in rows} == {"finetune/prototype"}
    said = [str(w.message) for w in caught if "with only a pickled model are left out" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("episodes: 1 job(s) with only a pickled model")
    for name in ("finetune-k=2-s0.pt", "finetune-k=2-s0.safetensors"):
        (run / "models" / name).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UntrustedPickle) as refused:
            run_episodes(run, None, ["prototype"], 5, [1], 5, 3, 0, lambda *a: None)
    assert str(refused.value).startswith(f"episodes: {run} is not read: ")
    assert "jobs have only pickled models" not in str(refused.value)


# ---------------------------------------------------------------- io: regular lock files, not links

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX fifos")
def test_a_lock_path_that_is_a_fifo_is_refused_as_not_a_regular_file(tmp_path):
    from transferkit.errors import TransferkitError
    from transferkit.io import directory_lock
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(TransferkitError, match=r"\.lock is not a regular file"):
        with directory_lock(tmp_path):
            pass


@pytest.mark.skipif(os.name == "nt", reason="flock")
def test_the_holder_of_a_directory_is_not_read_through_a_linked_lock(tmp_path):
    from transferkit.io import directory_holder, directory_lock
    other, run = tmp_path / "other", tmp_path / "run"
    other.mkdir()
    run.mkdir()
    with directory_lock(other):
        (run / ".lock").symlink_to(other / ".lock")
        assert directory_holder(other) == f"pid {os.getpid()}"
        assert directory_holder(run) is None


@pytest.mark.skipif(os.name == "nt", reason="flock")
def test_a_lock_file_swapped_for_a_link_after_opening_is_not_taken(tmp_path, monkeypatch):
    from transferkit import io
    from transferkit.errors import TransferkitError
    flock, swapped = io.fcntl.flock, []

    def swap_then_lock(fd, op):
        lock = tmp_path / ".lock"
        if not swapped:  # between opening and locking, the path becomes a link to the opened file
            os.rename(lock, tmp_path / "real.lock")
            lock.symlink_to(tmp_path / "real.lock")
            swapped.append(True)
        return flock(fd, op)
    monkeypatch.setattr(io.fcntl, "flock", swap_then_lock)
    with pytest.raises(TransferkitError, match=r"\.lock is a symbolic link"):
        with io.directory_lock(tmp_path):
            pass


# ---------------------------------------------------------------- the report: a linked report_files

def test_a_report_files_link_inside_the_run_is_refused_too(tmp_path):
    import json

    from transferkit.errors import TransferkitError
    from transferkit.report import write_report
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": [ROW]}))
    (run / "figures").mkdir()
    (run / "figures" / "own.png").write_bytes(b"the run's own")
    (run / "report_files").symlink_to(run / "figures")  # the report would remove older figures there
    with pytest.raises(TransferkitError, match="report_files is a symbolic link"):
        write_report(run)
    assert (run / "figures" / "own.png").read_bytes() == b"the run's own"


def test_a_loss_that_becomes_nan_after_an_update_names_the_method_s_multiplier_above_1():
    import helpers
    import torch

    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods.base import Method

    class _Fast(Method):  # not registered
        name = "fast_probe"
        streams = ("target",)

        def __init__(self, net, head_lr_mult: float = 1.0):
            super().__init__(net)
            self.head_lr_mult = head_lr_mult

        def losses(self, batch):
            ce = self.supervised(batch.target)
            return {"ce": ce * float("nan") if batch.step == 1 else ce}

    torch.manual_seed(0)
    cfg = TrainConfig(steps=3, batch_size=8, eval_every=3, lr=1e-3, progress=False)
    with pytest.raises(TransferkitError, match=r"loss became nan at step 1 .*learning-rate multiplier option above 1 "
                                               r"\(head_lr_mult=4;"):
        Engine(cfg).fit(_Fast(helpers.tiny_net(4), head_lr_mult=4.0), target=helpers.toy_domain(16))


# ---------------------------------------------------------------- in_float32 outside autocast

def test_in_float32_outside_autocast_casts_only_half_precision_floats():
    import torch

    from transferkit.runtime import in_float32
    dtypes = in_float32(lambda *args: tuple(a.dtype if isinstance(a, torch.Tensor) else a for a in args))
    given = (torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.long),
             torch.ones(2, dtype=torch.bool), 3)
    assert dtypes(*given) == (torch.float32, torch.float64, torch.long, torch.bool, 3)


# ---------------------------------------------------------------- heads and a network file's prototype metadata

def test_a_prototype_head_refuses_a_scale_of_0_and_names_its_metric():
    from transferkit.errors import TransferkitError
    from transferkit.heads import PrototypeHead
    with pytest.raises(TransferkitError, match=r"a cosine head needs a finite scale > 0 \(logits = scale \* cos\), "
                                               r"got 0"):
        PrototypeHead(4, 2, metric="cosine", scale=0)
    with pytest.raises(TransferkitError, match="a sqeuclidean prototype head needs a finite scale > 0 "
                                               r"\(metric 'sqeuclidean' does not use it"):
        PrototypeHead(4, 2, scale=0.0)


def _prototype_net():
    from transferkit.backbones import build_backbone
    return build_backbone("lenet", 3, in_channels=1, image_size=28, head="prototype")


@pytest.mark.parametrize("stored, field", [
    (5, "must be a JSON object"),  # not text at all
    ('{"metric": "cosine", "scale": true}', "its scale must be a finite number > 0, got 'True'"),
    ('{"metric": "cosine", "scale": Infinity}', "its scale must be a finite number > 0, got 'inf'"),
])
def test_prototype_metadata_that_is_no_text_or_a_bool_or_infinite_scale_is_refused(stored, field):
    from transferkit.errors import TransferkitError
    from transferkit.networks import restore_head
    with pytest.raises(TransferkitError) as caught:
        restore_head(_prototype_net(), {"prototype_head": stored}, "net.safetensors")
    assert "network file net.safetensors: its metadata prototype_head" in str(caught.value)
    assert field in str(caught.value)


def test_a_pretrained_file_s_bad_prototype_metadata_names_the_file(tmp_path, monkeypatch):
    from transferkit import source
    from transferkit.errors import TransferkitError
    path = _prototype_file(tmp_path / "given.safetensors", '{"metric": "cosine", "scale": -2}')
    monkeypatch.setattr(source, "_initial_source_net", lambda cfg, data, head="linear": _prototype_net())
    with pytest.raises(TransferkitError, match=rf"network file {path}: its metadata prototype_head: its scale"):
        source.read_source_file(None, None, path)


# ---------------------------------------------------------------- ft_unit's unit option

@pytest.mark.parametrize("unit", [{"conv1": 1}, b"conv1", 3])
def test_ft_unit_refuses_a_unit_option_that_is_no_text_or_list_of_texts(unit):
    from transferkit.errors import TransferkitError
    from transferkit.methods.finetune import FtUnit
    with pytest.raises(TransferkitError, match="ft_unit: option unit must be text or a list of texts or null, got "
                                               ".*; units are conv1, conv2, fc1, head"):
        FtUnit(_prototype_net(), unit=unit)


def test_ft_unit_names_a_unit_that_is_a_number_as_unknown():
    from transferkit.errors import UnknownNameError
    from transferkit.methods.finetune import FtUnit
    with pytest.raises(UnknownNameError, match="unit"):
        FtUnit(_prototype_net(), unit=["conv1", 3])
    with pytest.raises(UnknownNameError, match="unit"):  # before the check of repeats (a number and a text: unsortable)
        FtUnit(_prototype_net(), unit=[3, 3, "conv1", "conv1"])


def test_the_uda_bench_t_sne_reads_a_job_s_network_file_without_its_pickle(finished_run, tmp_path):  # noqa: F811
    import shutil

    from transferkit.backbones import UnitNet
    from transferkit.bench import uda
    from transferkit.config import load_config
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "models" / "linear_probe-k=2-s0.pt").unlink()
    net = uda._adapted(load_config(run / "config.yaml"), run, "linear_probe", None)
    assert isinstance(net, UnitNet) and not net.training


# ---------------------------------------------------------------- a two-stage translation's declared stages

def test_a_two_stage_translation_is_probed_translator_stage_first_then_the_task_stage():
    import torch

    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.methods.pixel import TwoStageTranslation
    from transferkit.preflight import check_own_modules_take
    seen = []

    class _Probe(TwoStageTranslation):  # not registered: the stages its base declares
        name = "h_mut_two_stage_probe"

        def losses(self, batch):
            seen.append(self.stage)
            return {}

    method = _Probe(build_backbone("resnet18", num_classes=2), 1.0, 0.0, 0.0, None, "steps")
    rect = Domain("rect", torch.rand(4, 1, 28, 36), torch.arange(4) % 2, ["a", "b"])
    check_own_modules_take(method, {name: rect for name in method.streams}, 2)
    assert seen == [1, 2]
