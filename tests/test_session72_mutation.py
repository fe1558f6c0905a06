"""Tests from a mutation pass over stop 72's changes (the code changed since dfe4c5c): the engine's
check of the network a checkpoint began from (only where the checkpoint and the caller both know it;
the pre-training stage's too) and how a method's losses that read an absent stream are named (an
AttributeError too; not a TypeError of the method's own code, nor one at a later step); the
process's pre-training memo (the last used kept, the oldest dropped, one per thread count);
set_params' advice (not for an option the call gives; a method class named by its name); the
float32 check of predict (float16 too); a benchmark resume (a section's other stored keys kept,
``--set quick=`` refused, a stored stage device compared with this invocation's, ``--nproc`` checks
``--set`` against the directory's plan), the files a resume refused before a job puts back (an
unfinished directory's plan, an older directory without plan.json, a job under a pair's folder
seen) and uda_tune's world_size; figures (a file several folders up, rows of two sources or runs,
domain_names as a list and never three, a label pair checked per set, flex rows without a ratio);
summarize's accuracies (a bool, 0 and 1, no percentage hint far above 100 or below 0) and wall_s
missing in some rows; tables of entries without ``n`` or of no rows; the pre-training locks (a free
lock taken without a wait line, a torchrun group's own marker); source prototypes of a network with
its own forward_features; 3-D images of no known layout; load_network_file of ``~``; unit names
repeated in list pairs; from_modules of a lazy model. Each test fails when the code it names is
changed in the way its comment says.

Judged equivalent, so not tested: ``_resumed_device`` without ``isinstance(then, str)``
(resolve_device refuses a non-string with a TransferkitError, which is suppressed) and without
``"auto" in (device, then)`` (on a machine without a GPU two non-auto names resolve alike only when
they are the same name); ``_set_prototypes`` without ``not hooked(net)`` (forward_features calls
forward_units, so hooks on the net itself never ran; the memo checks the units' hooks) and without
its ``net.eval()`` (the source network is a frozen copy already in eval mode); ``_point_labels``
without ``not isinstance(v, str)`` (two names as a pair are the labels of a one-and-one panel, which
t-SNE refuses for its size first); ``_resumed_selection`` without its field-set test (a plan of
another version is refused by ``_check_same_plan`` either way); PRETRAINED's ``.cpu()`` (no one
writes to the stored tensors; the CPU is the only device here).
Killed by older tests, so not tested here: ``_damaged_config``'s dict test, ``_resumed_device``
returning ``device``, the checkpoint's ``start`` not stored, the streams of the message, PRETRAINED's
size and restored random state, ``accuracy_vs_k_plot``'s repeated-seed key, NaN labels, the
``.held`` marker's unlink and a rank going on without it, one process's lock without ``on_wait``,
``_resumed_selection``'s ``owner not in (None, name)``, the restore of job files, the damage check of a run without
config.yaml. Left surviving: ``accuracy_vs_k_plot`` reading ``r.get(key)`` of rows without the
key (rows of which only some name a run or source would be refused: stricter, not clearly wrong);
``load_network``'s ``e.kind != "backbone"`` (no other unknown name reaches it from a file
transferkit writes); ``pretraining_lock``'s wait line in ``pretrain_source`` (a log call, reached
only with another process pre-training)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import crash_at, edit_checkpoint, toy_domain

from transferkit import TrainConfig, Transfer
from transferkit.errors import TransferkitError

TINY = TrainConfig(steps=2, batch_size=8, progress=False)


# -- the engine: a checkpoint's start, streams a method reads ----------------------------------------

def _engine_fit(tmp_path, start, hooks=()):
    from helpers import tiny_net

    from transferkit.engine import Engine
    from transferkit.methods import get_method
    torch.manual_seed(0)
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=1, progress=False)
    return Engine(cfg, checkpoint_dir=tmp_path, start=start, hooks=hooks).fit(
        get_method("target_only")(tiny_net(4)), target=toy_domain(16))


@pytest.mark.parametrize("then, now", [("digest-a", None), (None, "digest-b")])
def test_a_checkpoint_start_is_checked_only_where_both_are_known(tmp_path, then, now):
    # kills Engine._load: `None in (then, self.start)` -> `then is None` (a caller without start refused) and
    # -> `self.start is None` (a checkpoint of an older version, without start, refused)
    from helpers import Interrupt
    with pytest.raises(Interrupt):
        _engine_fit(tmp_path, "digest-a", hooks=crash_at(2))
    if then is None:
        edit_checkpoint(tmp_path, lambda meta: meta.pop("start"))
    assert _engine_fit(tmp_path, now).steps == 3
    with pytest.raises(Interrupt):
        _engine_fit(tmp_path / "again", "digest-a", hooks=crash_at(2))
    with pytest.raises(TransferkitError, match="began from other weights"):
        _engine_fit(tmp_path / "again", "digest-b")


def test_a_pre_training_checkpoint_begun_from_another_network_is_refused(tmp_path, monkeypatch):
    # kills Transfer._fit: `self._pretrain(..., ckpt, start)` -> without start (the pre-training resumed another
    # network's checkpoint; only the transfer stage's was refused)
    from helpers import Interrupt

    import transferkit.api as api
    source, target = toy_domain(16, name="s"), toy_domain(16, seed=1, name="t")
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=1, progress=False)
    monkeypatch.setattr(api, "network_digest", lambda net: "weights-a")  # the backbone's initial weights
    with pytest.raises(Interrupt):
        Transfer("finetune", pretrain=cfg, train=cfg, hooks=crash_at(2)).fit(source=source, target=target,
                                                                             checkpoint_dir=tmp_path)
    assert (tmp_path / "pretrain").is_dir()
    monkeypatch.setattr(api, "network_digest", lambda net: "weights-b")  # e.g. a plugin's builder read a new file
    with pytest.raises(TransferkitError, match=r"checkpoint in \S*pretrain began from other weights"):
        Transfer("finetune", pretrain=cfg, train=cfg).fit(source=source, target=target, checkpoint_dir=tmp_path)


def _stream_method(losses):
    from transferkit.methods.base import Method

    class TargetOnly(Method):
        name = "reads_streams"
        streams = ("target",)
        needs_pretrained = False
    TargetOnly.losses = losses
    model = Transfer("target_only", backbone="lenet", train=TrainConfig(steps=3, batch_size=8, progress=False))
    model.method_cls = TargetOnly
    return model


def _target_ce(self, batch):
    x, y = batch.target
    return {"ce": F.cross_entropy(self.forward_from_input(x), y)}


def test_a_method_reading_an_absent_stream_by_attribute_is_told_which():
    # kills _streams_named: `except (TypeError, AttributeError)` -> `except TypeError` ('NoneType' object has no
    # attribute 'shape' left raw)
    def losses(self, batch):
        return {"ce": _target_ce(self, batch)["ce"] * batch.unlabeled.shape[0]}
    with pytest.raises(TransferkitError, match=r"its losses read a stream this batch does not have"):
        _stream_method(losses).fit(target=toy_domain(16))


def test_other_errors_of_a_method_s_losses_are_not_blamed_on_streams():
    # kills _streams_named: dropping `"NoneType" in str(e)` (a TypeError of the method's own code called a stream's)
    # and dropping `first` (a None read at a later step, from the method's own state, called a stream's)
    def own_error(self, batch):
        raise TypeError("unsupported operand types: list and dict")
    with pytest.raises(TypeError, match="list and dict"):
        _stream_method(own_error).fit(target=toy_domain(16))

    def later_none(self, batch):
        if batch.step == 1:
            a, b = None
        return _target_ce(self, batch)
    with pytest.raises(TypeError, match="NoneType"):
        _stream_method(later_none).fit(target=toy_domain(16))


# -- the API: the process's pre-training memo, set_params, float32 --------------------------------------

@pytest.fixture
def pretrainings(monkeypatch):
    """The pre-trainings Transfer runs (one entry each), with an empty memo."""
    import transferkit.api as api
    from transferkit.methods.supervised import SourceOnly
    monkeypatch.setattr(api, "PRETRAINED", api.OrderedDict())
    runs = []
    real_fit = api.Engine.fit

    def counted(engine, method, **kw):
        if type(method) is SourceOnly:
            runs.append(1)
        return real_fit(engine, method, **kw)
    monkeypatch.setattr(api.Engine, "fit", counted)
    return runs


def _fit_seed(seed):
    return Transfer("finetune", backbone="lenet", pretrain=TINY, train=TrainConfig(steps=1, batch_size=8,
                                                                                   progress=False),
                    seed=seed).fit(source=toy_domain(16, name="s"), target=toy_domain(8, seed=1, name="t"))


def test_the_pre_training_memo_keeps_the_last_used(pretrainings):
    # kills Transfer._pretrain: dropping `PRETRAINED.move_to_end(key)` (the memo forgot the one just reused) and
    # `popitem(last=False)` -> `popitem()` (the new pre-training was dropped instead of the oldest)
    for seed, runs in ((0, 1), (1, 2), (0, 2), (2, 3), (0, 3), (2, 3)):
        _fit_seed(seed)
        assert len(pretrainings) == runs, seed


def test_the_pre_training_memo_is_of_one_thread_count(pretrainings):
    # kills Transfer._pretrain's key without torch.get_num_threads() (CPU sums of another thread count differ)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _fit_seed(0)
        torch.set_num_threads(2)
        _fit_seed(0)
    finally:
        torch.set_num_threads(threads)
    assert len(pretrainings) == 2


def test_set_params_of_another_method_with_the_option_given_raises_the_plain_error():
    # kills set_params: dropping `e.name in params` (an option the call gives was said to be set for the method
    # before)
    from transferkit.errors import UnknownOptionError
    with pytest.raises(UnknownOptionError, match="method 'tap' has no option 'weight'") as refused:
        Transfer("mmd", weight=2.0).set_params(method="tap", weight=3.0)
    assert "the method before" not in str(refused.value)


def test_set_params_to_a_method_class_names_it_in_the_advice():
    # kills set_params: `getattr(params["method"], "name", ...)` -> `params["method"]` (the class's repr)
    from transferkit.methods import get_method
    with pytest.raises(TransferkitError, match=r"build a new model, Transfer\('tap', \.\.\.\)"):
        Transfer("mmd", weight=2.0).set_params(method=get_method("tap"))


def test_a_fitted_network_moved_to_float16_is_named_at_predict(fitted):
    # kills Transfer._images: the float32 check widened to other float dtypes (float16 from net_.half())
    model = copy.deepcopy(fitted)
    model.net_.half()
    with pytest.raises(TransferkitError, match=r"parameters are float16 \(changed after fit\)"):
        model.predict(toy_domain(4).images)


# -- benchmarks: the resumed plan, the finished files a refused resume keeps ---------------------------

def _stored_plan(path, name, overrides, owner="same"):
    from helpers import store_plan

    from transferkit.bench import make_plan
    store_plan(path, make_plan(name, False, overrides), owner=name if owner == "same" else owner)


def test_a_resume_setting_one_key_of_a_section_keeps_its_other_stored_keys(tmp_path):
    # kills _resumed_selection: `(dotted if rest else given).add(top)` -> `given.add(top)` (--set train.steps=... took
    # the default train section, and the stored train.lr was refused as another plan)
    from transferkit.bench import resumed_plan
    _stored_plan(tmp_path, "flex", ["targets=mnistm", "train.steps=7", "train.lr=0.5"])
    plan = resumed_plan("flex", False, ["train.steps=7"], tmp_path)
    assert (plan.train.steps, plan.train.lr, plan.targets) == (7, 0.5, ["mnistm"])


def test_a_resume_refuses_set_quick(tmp_path):
    # kills _resumed_selection: dropping its "use --quick, not --set quick=..." check (make_plan's is not reached)
    from transferkit.bench import resumed_plan
    _stored_plan(tmp_path, "flex", ["targets=mnistm"])
    with pytest.raises(TransferkitError, match="use --quick, not --set quick="):
        resumed_plan("flex", False, ["quick=true"], tmp_path)


def test_nproc_checks_set_values_against_the_resumed_directory_s_plan(tmp_path):
    # kills _checked_for_torchrun: resumed_plan -> make_plan (a --nproc resume with --set cats=6 of a directory made
    # with n_max=6 was refused against the default n_max)
    from transferkit import cli
    _stored_plan(tmp_path, "represent", ["n_max=6", "cats=2,6"])
    args = cli.build_parser().parse_args(["bench", "represent", "--nproc", "2", "--resume", str(tmp_path),
                                          "--set", "cats=6"])
    assert cli._checked_for_torchrun(args) is True


@pytest.fixture
def failing_toy(bench_sandbox):
    """Benchmark ``toyr`` whose suite fails before its first job (a new pair's data unreadable)."""
    from test_bench_core_mutation import toy_plan

    def suite(plan, bench_dir, log):
        raise TransferkitError("2 class folders contain no images")
    bench_sandbox.benchmark("toyr", "a toy suite", plan=toy_plan)(suite)
    return bench_sandbox


@pytest.mark.parametrize("results", [False, True])
def test_a_resume_refused_before_a_job_leaves_an_unfinished_or_older_directory_as_it_was(tmp_path, failing_toy,
                                                                                          results):
    # kills _finished_files: `any(v is not None ...)` -> `all(...)` (an unfinished directory, plan.json without
    # results, got the refused plan) and _restore_finished_files: dropping the unlink of a file that was not there
    # (an older directory, results.json without plan.json, kept the refused plan.json)
    from helpers import store_plan
    from test_bench_core_mutation import toy_plan
    bench_dir = tmp_path / "b"
    store_plan(bench_dir, toy_plan(False), owner="toyr", results=results)
    names = ("plan.json", "results.json", "results.md")
    before = {n: (bench_dir / n).read_bytes() for n in names if (bench_dir / n).exists()}
    with pytest.raises(TransferkitError, match="contain no images"):
        failing_toy.run_benchmark("toyr", run_dir=bench_dir, overrides=["seeds=[0, 1]"], log=lambda *a: None)
    assert {n: (bench_dir / n).read_bytes() for n in names if (bench_dir / n).exists()} == before


def test_a_resume_that_wrote_a_job_in_a_pair_s_folder_is_not_put_back(tmp_path, bench_sandbox):
    # kills _job_files: `**/jobs/**/*` -> `jobs/*` (a job written under a pair's folder went unseen, and the refused
    # resume's directory was put back as finished)
    from test_bench_core_mutation import ROW, toy_plan

    from transferkit.io import write_json
    state = {"fail": False}

    def suite(plan, bench_dir, log):
        for seed in plan.seeds:
            write_json(bench_dir / "mnist-usps" / "jobs" / f"s{seed}.json", {**ROW, "seed": seed})
        if state["fail"]:
            raise TransferkitError("the last job failed")
        return [{**ROW, "seed": s} for s in plan.seeds]
    bench_sandbox.benchmark("toyr", "a toy suite", plan=toy_plan)(suite)
    bench_dir = tmp_path / "b"
    bench_sandbox.run_benchmark("toyr", run_dir=bench_dir, log=lambda *a: None)
    assert (bench_dir / "results.json").is_file()
    state["fail"] = True
    with pytest.raises(TransferkitError, match="the last job failed"):
        bench_sandbox.run_benchmark("toyr", run_dir=bench_dir, overrides=["seeds=[0, 1]"], log=lambda *a: None)
    assert not (bench_dir / "results.json").exists() and "1" in (bench_dir / "plan.json").read_text()


def test_a_resume_compares_the_device_of_a_stored_section_with_this_invocation_s(tmp_path):
    # kills _resumed_selection: keeping the stored section's device (a flex directory trained on cuda resumed as a
    # cuda plan here, instead of being refused with the --device advice)
    from transferkit.bench import resumed_plan
    _stored_plan(tmp_path, "flex", ["targets=mnistm", "train.device=cuda"])
    with pytest.raises(TransferkitError, match=r"train\.device: 'cuda' there, 'cpu' now.*--device"):
        resumed_plan("flex", False, [], tmp_path)


def test_uda_tune_rows_record_their_process_count(tmp_path, monkeypatch):
    # kills uda_tune_suite: the rows' head without world_size (a tuning stopped under --nproc 2 resumed in one
    # process without a word)
    from helpers import tiny_net
    from test_bench_uda_third_mutation import _data, _fake_tune

    import transferkit.bench.uda_tune as tune
    b, _, _, _ = _fake_tune(monkeypatch, _data(), tiny_net(4))
    monkeypatch.setattr(tune, "world_size", lambda: 2)
    rows = tune.uda_tune_suite(b, tmp_path, lambda *a: None)
    assert rows and {r["world_size"] for r in rows} == {2}


# -- figures ---------------------------------------------------------------------------------------

def test_a_figure_under_a_file_some_folders_up_is_named(tmp_path):
    # kills check_png: only the nearest parent checked (a file two folders up went on to makedirs' FileExistsError)
    from transferkit.plots import check_png
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(TransferkitError, match=r"results\.json' is a file, not a folder"):
        check_png(tmp_path / "results.json" / "figures" / "tsne.png", "t-SNE figure")
    check_png(tmp_path / "new" / "figures" / "tsne.png", "t-SNE figure")


@pytest.mark.parametrize("key", ["source", "run"])
def test_accuracy_vs_k_plot_refuses_rows_of_two_sources_or_runs(key):
    # kills accuracy_vs_k_plot: the mixed-rows check of ("target",) only (sources and runs averaged into one curve)
    from transferkit.plots import accuracy_vs_k_plot
    rows = [{"method": "finetune", "source": "syndigits", "target": "mnist", "run": "r", "setting": "k=5",
             "seed": seed, "accuracy": 0.5} for seed in (0, 1)]
    rows[1][key] = "other"
    with pytest.raises(TransferkitError, match=rf"the rows mix {key}s"):
        accuracy_vs_k_plot(rows, None)


def _pair_panel(n_source=20, n_target=15):
    g = torch.Generator().manual_seed(0)
    return {"after": (torch.randn(n_source, 8, generator=g), torch.randn(n_target, 8, generator=g))}


def test_tsne_takes_domain_names_as_a_list_and_refuses_three(fake_tsne):
    # kills tsne_embeddings: the domain_names check of tuples only (a list refused) and `len(...) == 2` -> `>= 2`
    from transferkit.plots import tsne_embeddings
    fig = tsne_embeddings(_pair_panel(), None, domain_names=["mnist", "usps"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["mnist", "usps"]
    with pytest.raises(TransferkitError, match="domain_names must be two names"):
        tsne_embeddings(_pair_panel(), None, domain_names=("mnist", "usps", "svhn"))


def test_tsne_labels_as_a_pair_are_counted_per_set(fake_tsne):
    # kills _point_labels: the pair's lengths compared in sum (source and target labels swapped were drawn)
    from transferkit.plots import tsne_embeddings
    with pytest.raises(TransferkitError, match="has 20 source and 15 target points but 15 and 20 labels"):
        tsne_embeddings(_pair_panel(), None, labels=(torch.arange(15) % 3, torch.arange(20) % 3))


def test_units_picked_plot_refuses_flex_rows_without_a_ratio():
    # kills units_picked_plot: the check of candidate_test_accuracy only (a KeyError 'ratio' later)
    from transferkit.plots import units_picked_plot
    rows = [{"method": "flex", "target": "mnist", "seed": 0, "candidate_test_accuracy": {"conv1": 0.5},
             "picked": "conv1"}]
    with pytest.raises(TransferkitError, match="candidate_test_accuracy and ratio"):
        units_picked_plot(rows, ["mnist"], None)


# -- summaries and tables -----------------------------------------------------------------------------

def _rows(accuracies, **extra):
    return [{"method": "ft", "seed": s, "accuracy": a, **extra} for s, a in enumerate(accuracies)]


@pytest.mark.parametrize("accuracy", [True, 150.0, -0.5])
def test_summarize_refuses_a_bool_and_does_not_call_far_values_percentages(accuracy):
    # kills summarize: dropping `not isinstance(a, bool)` (True counted as 100 %) and the hint's `a <= 100.0`
    from transferkit.results import summarize
    with pytest.raises(TransferkitError, match=r"rows\[0\] has accuracy .*finite fractions in \[0, 1\]") as refused:
        summarize(_rows([accuracy]))
    assert "percentage" not in str(refused.value)


def test_summarize_takes_accuracies_at_the_ends_and_wall_s_missing_in_some_rows():
    # kills summarize: `0.0 <= a` -> `0.0 < a` (a run that scored nothing refused) and the wall_s `all` -> `any`
    # (a TypeError adding None)
    from transferkit.results import summarize
    rows = _rows([0.0, 1.0])
    rows[0]["wall_s"], rows[1]["wall_s"] = 3.0, None
    summary = summarize(rows)
    assert summary[0]["accuracy_mean"] == pytest.approx(0.5) and summary[0]["wall_s"] is None


def test_tables_refuse_entries_without_their_count():
    # kills check_summary: the entry test without `"n" in s` (a KeyError 'n' later)
    from transferkit.tables import csv_table, markdown_table
    entry = {"method": "ft", "setting": "k=5", "accuracy_mean": 0.8}
    for table in (markdown_table, csv_table):
        with pytest.raises(TransferkitError, match=rf"{table.__name__} takes summarize\(rows\)'s entries"):
            table([entry])


# -- locks: waiting for another process's pre-training -------------------------------------------------

def test_a_free_lock_is_taken_without_saying_it_waits(tmp_path):
    # kills waiting_lock: on_wait() called before trying the lock (every run said it waited)
    from transferkit.io import waiting_lock
    waited = []
    with waiting_lock(tmp_path / "x.lock", lambda holder: waited.append(1)):
        pass
    assert waited == []


def test_a_torchrun_rank_waits_for_its_own_group_s_marker(tmp_path, monkeypatch):
    # kills pretraining_lock: the marker without MASTER_PORT (another group's marker let this group's ranks on)
    import threading

    import transferkit.source as source
    events, lock = [], tmp_path / "lenet.lock"
    monkeypatch.setenv("MASTER_PORT", "29511")
    monkeypatch.setattr(source, "world_size", lambda: 2)
    monkeypatch.setattr(source, "is_main_process", lambda: False)
    monkeypatch.setattr(source, "barrier", lambda: events.append("barrier"))
    (tmp_path / "lenet.held-29512").touch()  # another torchrun group's rank 0 holds the lock
    (tmp_path / "lenet.held-0").touch()

    def rank1():
        with source.pretraining_lock(lock, poll_s=0.01):
            events.append("in")
    thread = threading.Thread(target=rank1, daemon=True)
    thread.start()
    thread.join(timeout=0.3)
    assert events == []
    (tmp_path / "lenet.held-29511").touch()  # this group's rank 0 took the lock
    thread.join(timeout=10)
    assert events == ["barrier", "in"]


# -- networks, units, images ------------------------------------------------------------------------

def test_source_prototypes_of_a_network_with_its_own_forward_features_use_it():
    # kills _set_prototypes: dropping `type(net).forward_features is UnitNet.forward_features` (the memo's plain
    # embedding replaced the subclass's own)
    from transferkit.backbones import build_backbone
    from transferkit.methods import get_method
    source, target = toy_domain(24, classes=4, name="s"), toy_domain(8, seed=1, classes=4, name="t")
    net = build_backbone("lenet", num_classes=4)
    plain = type(net)

    def doubled(self, x, layers=None):
        out = plain.forward_features(self, x, layers)
        return 2 * out if layers is None else out
    net.__class__ = type("Doubled", (plain,), {"forward_features": doubled})
    method = get_method("lext")(net)
    method.prepare({"source": source, "target": target, "unlabeled": target})
    method._set_prototypes()
    with torch.no_grad():
        feats = 2 * plain.forward_features(net.eval(), source.images)
    by_hand = torch.stack([feats[source.labels == c].mean(0) for c in range(4)])
    assert torch.allclose(method.source_prototypes, by_hand, atol=1e-5)


def test_three_dimensional_images_of_no_known_layout_get_no_one_image_hint():
    # kills _three_dim_hint: its last `return ""` -> the old "one image: images[None]" (which gave 1 x 5 x 7 x 7)
    from transferkit.domain import image_batch
    with pytest.raises(TransferkitError) as refused:
        image_batch(torch.rand(5, 7, 7), "predict", (3, 28, 28), exact=True)
    assert "images[None]" not in str(refused.value) and "grey" not in str(refused.value)


def test_load_network_file_takes_a_path_under_home(tmp_path, monkeypatch):
    # kills load_network_file: dropping `.expanduser()` ("~/..." not found)
    from helpers import tiny_net

    from transferkit import save_network
    from transferkit.networks import load_network_file
    monkeypatch.setenv("HOME", str(tmp_path))
    saved = tiny_net(2)
    save_network(saved, tmp_path / "mine.safetensors", class_names=["a", "b"])
    loaded = tiny_net(2)
    load_network_file(loaded, "~/mine.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))


def test_a_unit_name_given_twice_in_list_pairs_is_refused():
    # kills UnitNet: the name of a pair read from tuples only (list pairs [name, module] kept only the last)
    from torch import nn

    from transferkit.unitnet import UnitNet
    pairs = [["block", nn.Conv2d(3, 8, 3)], ["block", nn.Conv2d(8, 8, 3)]]
    with pytest.raises(TransferkitError, match=r"unit name 'block' is given twice \(units 1 and 2\)"):
        UnitNet(pairs, nn.Linear(8, 2))


def test_from_modules_of_a_lazy_model_does_not_warn_it_is_unchecked():
    # kills from_modules: dropping the lazy-parameter test of its no-convolution warning
    import warnings

    from torch import nn

    from transferkit.adapters import from_modules

    class LazyMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.flat, self.fc1, self.fc2 = nn.Flatten(), nn.LazyLinear(8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(self.fc1(self.flat(x)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = from_modules(LazyMLP(), units=["flat", "fc1"], head="fc2")
    assert net.unit_names == ["flat", "fc1", "head"]


def test_tables_of_other_entries_show_the_entry_not_rows_advice():
    # kills check_summary: `rows = isinstance(entry, dict) and "accuracy" in entry` -> True (a list of names was
    # told it looked like result rows)
    from transferkit.tables import markdown_table
    with pytest.raises(TransferkitError, match="got finetune") as refused:
        markdown_table(["finetune"])
    assert "result rows" not in str(refused.value)
