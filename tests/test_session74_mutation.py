"""Tests from the mutation pass over stop 74's change (83 mutants, 34 survivors: 27 gaps, killed here; 7
judged equivalent: a copy in FrozenMemo.put, the finiteness check's shortcut, the lock's polling interval,
``"method" in params`` in set_params, unfinished_run's own results.json test, refused-form ``same and older``, a
dry run of image candidates). Each test fails on its mutant (named in its comment) and passes on the library."""
import json
import os
import re
import warnings

import numpy as np
import torch
from PIL import Image


# ---- frozen --------------------------------------------------------------------------------------------------------
def test_chunks_laid_out_otherwise_than_the_first_are_not_memoised(monkeypatch):
    # F4: a unit whose output layout depends on the chunk (here: the short last chunk contiguous)
    from transferkit import evaluate, frozen
    from transferkit.backbones import build_backbone
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 7 * 28 * 28)
    net = build_backbone("lenet", 10, in_channels=1, image_size=28).eval()
    real = type(net).forward_units

    def fu(self, x, *a):
        h = real(self, x, *a)
        return h.contiguous(memory_format=torch.channels_last) if len(x) == 7 else h.contiguous()
    monkeypatch.setattr(type(net), "forward_units", fu)
    x = torch.rand(17, 1, 28, 28)
    frozen.MEMO.clear()
    seen = []
    then = lambda h: seen.append(h.stride()) or h.flatten(1)  # noqa: E731
    frozen.frozen_activations(net, x, "conv2", then=then)
    frozen.frozen_activations(net, x, "conv2", then=then)
    assert seen[:3] == seen[3:]  # a second call feeds then the layouts the first did
    frozen.MEMO.clear()
    frozen.frozen_activations(net, x, "conv2")
    assert len(frozen.MEMO) == 0
    frozen.MEMO.clear()


def test_activations_exactly_at_the_memo_limit_are_kept_when_scoring(monkeypatch):
    # F2: the limit is inclusive (as FrozenMemo.put's)
    from transferkit import frozen
    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", 10, in_channels=1, image_size=28).eval()
    x = torch.rand(16, 1, 28, 28)
    h = net.forward_units(x, 0, "conv2")
    frozen.MEMO.clear()
    monkeypatch.setattr(frozen.MEMO, "_limit_mb", h.numel() * h.element_size() / 2**20)
    frozen.frozen_activations(net, x, "conv2", then=lambda a: a.flatten(1))
    assert len(frozen.MEMO) == 1
    frozen.MEMO.clear()


def test_rows_of_dense_chunks_with_gaps_or_repeats_between_rows_are_laid_out_contiguously():
    # F10: a chunk whose rows are dense but not packed (a slice of wider rows, a broadcast row)
    from transferkit.frozen import _rows_like
    assert _rows_like(torch.rand(4, 6)[:, :3], 9).is_contiguous()
    out = _rows_like(torch.rand(1, 5).expand(4, 5), 9)
    out.copy_(torch.arange(45.0).view(9, 5))
    assert torch.equal(out, torch.arange(45.0).view(9, 5))  # no two rows share memory


def test_rows_with_gaps_inside_are_laid_out_contiguously_even_where_the_row_stride_matches():
    # F11: a row not dense whose row stride still equals its size (its elements overlap the next row's)
    from transferkit.frozen import _rows_like
    h = torch.rand(32).as_strided((4, 2, 2), (4, 3, 1))
    assert _rows_like(h, 9).is_contiguous()


def test_a_size_one_dimension_s_stride_does_not_make_rows_look_sparse():
    # F12: strides of size-1 dimensions are arbitrary; the layout is kept (so the chunks are alike and memoised)
    from transferkit.frozen import _rows_like
    h = torch.rand(12).as_strided((4, 1, 3), (3, 100, 1))
    assert _rows_like(h, 9).stride() == h.stride()


# ---- engine --------------------------------------------------------------------------------------------------------
def test_cache_inputs_gets_its_streams_in_the_training_layout():
    # E6: a conv method on CPU trains channels-last; cache_inputs is documented to get that layout
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.finetune import FtAll
    seen = []

    class Rec(FtAll):
        def cache_inputs(self, inputs):
            seen.extend(x.is_contiguous(memory_format=torch.channels_last) for x in inputs.values())
            return {}
    torch.manual_seed(0)
    dom = Domain("toy", torch.rand(12, 3, 28, 28), torch.arange(12) % 3, ["a", "b", "c"])
    Engine(TrainConfig(steps=3, batch_size=8, progress=False)).fit(
        Rec(build_backbone("lenet", 3, in_channels=3, image_size=28)), target=dom)
    assert seen == [True]


def test_batches_and_validation_chunks_are_scored_in_the_training_layout():
    # E8/E11/E12: each batch and each validation chunk is laid out channels-last (conv method on CPU)
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.finetune import FtAll
    seen = {True: [], False: []}

    class Rec(FtAll):
        def forward_from_input(self, x):
            if x.dim() == 4:
                seen[self.training].append(x.is_contiguous(memory_format=torch.channels_last))
            return super().forward_from_input(x)
    torch.manual_seed(0)
    dom = Domain("toy", torch.rand(12, 3, 28, 28), torch.arange(12) % 3, ["a", "b", "c"])
    Engine(TrainConfig(steps=2, batch_size=4, eval_every=1, progress=False)).fit(
        Rec(build_backbone("lenet", 3, in_channels=3, image_size=28)), target=dom, val=dom)
    assert seen[False] and all(seen[False])


# ---- api -----------------------------------------------------------------------------------------------------------
def test_set_params_naming_the_same_method_again_does_not_warn():
    # A7: the options stay with the method they were set for: nothing to say
    from transferkit.api import Transfer
    from transferkit.errors import TransferkitWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        assert Transfer("dann", weight=0.5).set_params(method="dann").options == {"weight": 0.5}


def test_score_divides_by_the_sum_of_the_weights_not_their_count():
    # A5: test_score_takes_sample_weights's weights (linspace(0, 2, 40)) sum to 40 = their count
    import numpy as np
    import pytest

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    x = np.random.default_rng(0).random((40, 1, 28, 28)).astype(np.float32)
    y = np.arange(40) % 4
    model = Transfer("target_only", train=TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False))
    model.fit(target=Domain("toy", x, y, list("abcd")))
    right = (model.predict(x).numpy() == y).astype(float)
    w = np.linspace(0.0, 1.0, 40)
    assert model.score(x, y, sample_weight=w) == pytest.approx((w * right).sum() / w.sum())
    assert model.score(x, y, sample_weight=np.full(40, 3.0)) == pytest.approx(right.mean())


def test_an_unfitted_model_is_not_fitted_to_scikit_learn():
    # A10
    import pytest
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from transferkit.api import Transfer
    from transferkit.errors import TransferkitError
    with pytest.raises(NotFittedError) as raised:  # scikit-learn's type, and transferkit's
        check_is_fitted(Transfer("target_only"))
    assert isinstance(raised.value, TransferkitError)
    assert Transfer("target_only").__sklearn_is_fitted__() is False


# ---- io ------------------------------------------------------------------------------------------------------------
def test_a_lock_holder_replaces_a_longer_text_of_an_earlier_holder(tmp_path):
    # I6: a waiter reads the holder's text alone, not the tail of an earlier holder's longer one
    from transferkit.io import waiting_lock
    lock = tmp_path / "x.lock"
    lock.write_text("pid 1234567890123 since 00:00:00, an earlier and longer text")
    with waiting_lock(lock):
        assert re.fullmatch(rf"pid {os.getpid()} since \d\d:\d\d:\d\d", lock.read_text())


def test_a_lock_file_of_other_content_names_another_process(tmp_path):
    # I7: only the text a holder writes names it
    from transferkit.io import _lock_holder
    (tmp_path / "x.lock").write_text("12345")
    fd = os.open(tmp_path / "x.lock", os.O_RDONLY)
    try:
        assert _lock_holder(fd) == "another process"
    finally:
        os.close(fd)


# ---- misc ----------------------------------------------------------------------------------------------------------
def test_the_text_cache_is_merged_and_written_under_its_lock(tmp_path, monkeypatch):
    # T2: the read-merge-write of the embeddings file holds TEXT.lock (another process waits)
    import fcntl

    from test_session74 import stub_sentence_model
    text = stub_sentence_model(monkeypatch, tmp_path)
    held, real = [], text.atomic_write

    def write(path, fn):
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        return real(path, fn)
    monkeypatch.setattr(text, "atomic_write", write)
    text.SentenceEncoder("stub").encode(["a cat"])
    assert held == [True]


def test_frozen_activations_of_no_images_are_empty():
    # V4: chunk_rows of no images (an empty domain's) is defined
    from transferkit import frozen
    from transferkit.backbones import build_backbone
    from transferkit.evaluate import chunk_rows
    net = build_backbone("lenet", 10, in_channels=1, image_size=28).eval()
    assert chunk_rows(torch.zeros(0, 1, 28, 28)) == 1024
    assert len(frozen.frozen_activations(net, torch.zeros(0, 1, 28, 28), "conv2")) == 0


# ---- compare -------------------------------------------------------------------------------------------------------
def test_combined_unfinished_line_names_each_run_once_without_a_doubled_colon(tmp_path, monkeypatch):
    # C1: each run's unfinished hint starts with ": "; the combined one has one
    from test_session74 import two_unfinished_runs

    from transferkit.compare import combine_runs
    two_unfinished_runs(tmp_path, monkeypatch)
    data = combine_runs([tmp_path / "r1", tmp_path / "r2"])
    assert data["unfinished"].startswith(f": {tmp_path / 'r1'} holds 2") and ": :" not in data["unfinished"]
    assert f"; {tmp_path / 'r2'} holds 1" in data["unfinished"]


# ---- userdata ------------------------------------------------------------------------------------------------------
def test_a_folder_cache_entry_of_other_pixels_than_bytes_is_decoded_again(tmp_path, monkeypatch):
    # U5: a foreign entry (float pixels) is not read as bytes
    import transferkit.userdata as userdata
    from transferkit.data import load_domain
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "d" / c / f"{i}.png")
    first = load_domain(f"folder:{tmp_path / 'd'}").images
    entry = next((tmp_path / "cache" / "folders").glob("*.npz"))
    with np.load(entry) as z:
        x, s, g = z["x"], z["stretched"], z["grey"]
    with open(entry, "wb") as f:
        np.savez(f, x=x.astype(np.float32) / 255, stretched=s, grey=g)  # e.g. pixels in [0, 1]
    assert torch.equal(load_domain(f"folder:{tmp_path / 'd'}").images, first)


# ---- rundir --------------------------------------------------------------------------------------------------------
def test_changed_since_names_a_folder_split_rule_changed_since_the_run(tmp_path, monkeypatch):
    # R1: a folder run recorded before folder_label_draws existed (or with another version) is split otherwise now
    from transferkit import rundir
    now = {"format": rundir.DATA_FORMAT, "target.test": "a", "source.train": "b", "folder_label_draws": 2}
    monkeypatch.setattr(rundir, "data_digests", lambda data: dict(now))
    (tmp_path / "data.json").write_text(json.dumps({"format": rundir.DATA_FORMAT, "target.test": "a",
                                                    "source.train": "c"}))
    assert rundir.changed_since(tmp_path, None, ("target.test",)) == ["folder_label_draws"]


def test_changed_since_compares_no_digests_of_another_format(tmp_path, monkeypatch):
    # R2: digests of another format are computed otherwise: no spurious "changed" split
    from transferkit import rundir
    monkeypatch.setattr(rundir, "data_digests", lambda data: {"format": rundir.DATA_FORMAT, "target.test": "a"})
    (tmp_path / "data.json").write_text(json.dumps({"format": rundir.DATA_FORMAT + 1, "target.test": "other"}))
    assert rundir.changed_since(tmp_path, None, ("target.test",)) == []


def test_a_job_of_an_older_method_revision_is_refused_once_with_its_reason(tmp_path):
    # R6: one job file of dsn's revision 0: one refusal, which names the older form
    import pytest

    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    from transferkit.rundir import finished_rows, job_path, row_digests
    cfg = ExperimentConfig(methods=["dsn"])
    cls = get_method("dsn")
    job = job_path(tmp_path, cfg, "dsn", 0)
    job.parent.mkdir(parents=True)
    job.write_text(json.dumps({"method": "dsn", "source": "s", "target": "t", "setting": cfg.setting, "seed": 0,
                               "accuracy": 0.5, "wall_s": 1.0,
                               "config_digest": sorted(row_digests(cfg, "dsn", 0))[0]}))
    with pytest.raises(TransferkitError) as e:
        finished_rows(cfg, tmp_path, [(cls, 0)], None)
    assert "older form of dsn" in str(e.value) and "cannot be resumed" not in str(e.value)


# ---- tap -----------------------------------------------------------------------------------------------------------
def test_unit_features_runs_chunks_of_the_batch_size_given(monkeypatch):
    # P1: batch_size= is honoured
    from transferkit.backbones import build_backbone
    from transferkit.methods import tap
    net = build_backbone("lenet", 3, in_channels=1, image_size=28)
    seen, real = [], net.forward_features
    monkeypatch.setattr(net, "forward_features", lambda x, units: seen.append(len(x)) or real(x, units))
    feats = tap.unit_features(net, torch.rand(30, 1, 28, 28), ["conv2"], batch_size=7)
    assert seen == [7, 7, 7, 7, 2] and feats["conv2"].shape == (30, 800)


def test_features_of_exactly_the_limit_do_not_warn(monkeypatch):
    # P3: the limit is the most that passes quietly
    import warnings

    from transferkit.backbones import build_backbone
    from transferkit.errors import TransferkitWarning
    from transferkit.methods import tap
    net = build_backbone("lenet", 3, in_channels=1, image_size=28)
    monkeypatch.setattr(tap, "LARGE_FEATURES_MB", 30 * 800 * 4 / 2**20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        tap.unit_features(net, torch.rand(30, 1, 28, 28), ["conv2"])


def test_every_row_is_standardised_also_a_last_chunk_of_one_row(monkeypatch):
    # P5: chunks of 2**22 // D rows; 5 rows of 2**20 values: chunks of 4, and a last one of 1 row
    import numpy as np

    from transferkit.methods import tap
    seen = []

    class Fake:
        def __init__(self, **kw):
            pass

        def fit(self, X, y):
            seen.append(X.copy())
            self.classes_ = np.unique(y)
            self.coef_, self.intercept_ = np.zeros((len(self.classes_), X.shape[1])), np.zeros(len(self.classes_))
            return self
    import sklearn.svm
    monkeypatch.setattr(sklearn.svm, "LinearSVC", Fake)
    torch.manual_seed(0)
    x = torch.rand(5, 2**20)
    tap._fit_linear("svm", x, torch.tensor([0, 1, 2, 0, 1]), 3)
    expected = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6)).double().numpy()
    assert np.allclose(seen[0], expected)


# ---- flex ----------------------------------------------------------------------------------------------------------
def test_proxy_accuracies_score_in_chunks_of_the_batch_size_given(monkeypatch):
    # X5: batch_size= is honoured
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.methods import flex
    net = build_backbone("lenet", 3, in_channels=1, image_size=28)
    d = Domain("toy", torch.rand(12, 1, 28, 28), torch.arange(12) % 3, ["a", "b", "c"])
    seen, real = [], flex._as_layout
    monkeypatch.setattr(flex, "_as_layout", lambda x, layout: seen.append(len(x)) or real(x, layout))
    flex.proxy_accuracies(net, net, ["conv1"], d, batch_size=5)
    assert seen == [5, 5, 2]
