"""Tests of stop 74's fixes; each fails on the library before its fix, but those marked as guards of
reworked code (they pass before too)."""
import torch
from helpers import tiny_net
from test_zeroshot import _toy_domain

from transferkit.zeroshot import MASKED, EmbeddingZeroShot


def test_non_candidate_classes_are_masked_below_scores_under_the_mask_value():
    """A candidate's score below -1e9 (an unbounded dot product) still wins over the masked classes."""
    a, dom = _toy_domain()
    method = EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=8).eval()
    method.set_candidates([3, 4])
    low = torch.full((4, 5), -5e9)
    low[:, 3] = -4e9
    method.class_scores = lambda x: low[:len(x)]
    out = method.forward_from_input(dom.images[:4])
    assert out.argmax(1).tolist() == [3, 3, 3, 3]
    assert bool(torch.isfinite(out).all())
    usual = torch.randn(4, 5)
    method.class_scores = lambda x: usual[:len(x)]
    out = method.forward_from_input(dom.images[:4])
    assert bool((out[:, [0, 1, 2]] == MASKED).all()) and torch.equal(out[:, 3:], usual[:, 3:])


def test_a_write_error_names_its_file_once(tmp_path, monkeypatch):
    # before: `[Errno 28] No space left on device (writing '.../r.json'): '.../r.json'`
    import errno

    import pytest

    from transferkit import io
    with pytest.raises(OSError) as info:
        with io.atomic_path(tmp_path / "r.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value).count("r.json") == 1 and io.failed_writing(info.value)
    assert str(info.value) == f"[Errno 28] No space left on device while writing: {str(tmp_path / 'r.json')!r}"

    def refuse(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".r.json.x.tmp"))
    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        io.write_text(tmp_path / "r.json", "x")
    assert str(info.value).count("r.json") == 1 and info.value.filename == str(tmp_path) and \
        io.failed_writing(info.value)


def test_scoring_chunks_hold_fewer_rows_of_large_images():
    # before: 1,024 rows per chunk whatever the image size (224-px colour images: GBs of activations a chunk)
    from transferkit.evaluate import CHUNK_VALUES, chunk_rows, predict_logits
    assert chunk_rows(torch.zeros(5, 3, 32, 32)) == 1024 and chunk_rows(torch.zeros(5, 1, 28, 28)) == 1024
    assert chunk_rows(torch.zeros(5, 3, 224, 224)) == CHUNK_VALUES // (3 * 224 * 224) == 20
    assert chunk_rows(torch.zeros(5, 3, 64, 64), most=256) == 256 and chunk_rows(torch.zeros(2, 3, 4096, 4096)) == 1
    seen = []
    out = predict_logits(lambda x: seen.append(len(x)) or x.flatten(1)[:, :2], torch.rand(45, 3, 224, 224))
    assert seen == [20, 20, 5] and out.shape == (45, 2)


def test_stored_activations_are_run_in_the_chunks_of_their_images(monkeypatch):
    # a pass over stored activations (larger per row than the images) keeps the images' chunk boundaries
    from transferkit import evaluate, frozen
    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", 10, in_channels=1, image_size=28).eval()
    images = torch.rand(50, 1, 28, 28)
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 20 * 28 * 28)  # 20 images a chunk; 20 x 12 x 12 per activation
    frozen.MEMO.clear()
    seen = []
    first = frozen.frozen_activations(net, images, "conv2", then=lambda h: seen.append(len(h)) or h.flatten(1))
    again = frozen.frozen_activations(net, images, "conv2", then=lambda h: seen.append(len(h)) or h.flatten(1))
    assert seen == [20, 20, 10, 20, 20, 10] and torch.equal(first, again)
    frozen.MEMO.clear()


def test_the_engine_scores_validation_activations_in_the_chunks_of_their_images(monkeypatch):
    from transferkit import engine, evaluate
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.finetune import FtFc
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 20 * 28 * 28)  # 20 images a chunk
    calls = []
    real = engine.predict_logits
    monkeypatch.setattr(engine, "predict_logits", lambda f, x, rows=None, **kw: calls.append((x.shape[1:], rows))
                        or real(f, x, rows, **kw))
    torch.manual_seed(0)
    dom = Domain("toy", torch.rand(60, 1, 28, 28), torch.arange(60) % 3, ["a", "b", "c"])
    Engine(TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False)).fit(
        FtFc(build_backbone("lenet", 3, in_channels=1, image_size=28)), target=dom, val=dom)
    assert calls and all(rows == 20 for _, rows in calls) and calls[0][0] != (1, 28, 28)  # activations, image rows


# ---- the scikit-learn surface (audit sk) -------------------------------------------------------------------------
def _fitted_toy():
    import numpy as np

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    x = np.random.default_rng(0).random((40, 1, 28, 28)).astype(np.float32)
    y = np.arange(40) % 4
    model = Transfer("target_only", train=TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False))
    return model.fit(target=Domain("toy", x, y, list("abcd"))), x, y


def test_scikit_learn_scores_and_checks_a_fitted_model(one_thread):
    # before: every scikit-learn helper (scorers, check_is_fitted, ConfusionMatrixDisplay, a predicting Pipeline)
    # stopped with "Transfer.fit takes Domain objects ... cannot fit it", fitted or not
    import numpy as np
    import pytest
    from sklearn.base import is_classifier
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils.validation import check_is_fitted

    from transferkit.api import Transfer
    from transferkit.errors import TransferkitError
    model, x, y = _fitted_toy()
    check_is_fitted(model)
    assert is_classifier(model)
    assert get_scorer("accuracy")(model, x, y) == model.score(x, y)
    pipe = make_pipeline(FunctionTransformer(lambda a: a.reshape(-1, 1, 28, 28)), model)
    assert np.array_equal(np.asarray(pipe.predict(x.reshape(40, -1))), model.predict(x).numpy())
    with pytest.raises(TransferkitError, match="cannot fit it"):  # fitting by scikit-learn is still refused
        cross_val_score(model, x, y, cv=2)
    with pytest.raises(TransferkitError, match="cannot fit it"):
        is_classifier(Transfer("target_only"))


def test_score_takes_sample_weights(one_thread):
    import numpy as np
    import pytest

    from transferkit.domain import Domain
    from transferkit.errors import TransferkitError
    model, x, y = _fitted_toy()
    right = (model.predict(x).numpy() == y).astype(float)
    w = np.linspace(0.0, 2.0, 40)
    assert model.score(x, y, sample_weight=w) == pytest.approx((w * right).sum() / w.sum())
    assert model.score(x, y, sample_weight=np.ones(40)) == pytest.approx(model.score(x, y))
    dom = Domain("toy", x, y, list("abcd"))
    assert model.score(dom, sample_weight=w) == pytest.approx((w * right).sum() / w.sum())
    for bad, message in ((np.ones(39), r"one weight per image \(40\)"), (-w, "non-negative"),
                         (np.zeros(40), "not all zero"), (np.full(40, np.inf), "finite")):
        with pytest.raises(TransferkitError, match=message):
            model.score(x, y, sample_weight=bad)


def test_set_params_of_nothing_keeps_the_fit_and_a_new_method_keeping_options_warns(one_thread):
    import pytest

    from transferkit.api import Transfer
    from transferkit.errors import TransferkitWarning
    model, x, _ = _fitted_toy()
    assert model.set_params() is model and hasattr(model, "net_")  # before: the fit was dropped
    with pytest.warns(TransferkitWarning, match=r"set_params: weight=0\.5, set for 'dann', the method before, now go "
                                                r"to 'mmd'"):
        changed = Transfer("dann", weight=0.5).set_params(method="mmd")
    assert changed.options == {"weight": 0.5}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        Transfer("dann", weight=0.5).set_params(method="mmd", weight=1.0)  # given again: said so
        Transfer("dann", weight=0.5).set_params(seed=3)


# ---- several processes sharing a cache or a run directory (audit conc) ------------------------------------------
def test_a_waiting_lock_names_its_holder_and_reminds_while_it_waits(tmp_path):
    # before: the waiter said once that it waits, naming no process (the lock file was empty), then blocked
    import re
    import threading
    import time

    from transferkit.io import waiting_lock
    lock, said = tmp_path / "x.lock", []
    with waiting_lock(lock):
        assert re.fullmatch(r"pid \d+ since \d\d:\d\d:\d\d", lock.read_text())
        thread = threading.Thread(target=lambda: waiting_lock(lock, said.append, remind_s=0.3, poll_s=0.05)
                                  .__enter__())
        thread.start()
        time.sleep(0.8)
        assert said and said[0] == lock.read_text() and len(said) >= 2 and said[1].endswith("waited 0 min")
    thread.join(5)
    assert not thread.is_alive()


def test_a_pre_training_waiter_says_which_process_holds_the_network(tmp_path, monkeypatch):
    import threading

    from transferkit import source
    from transferkit.io import waiting_lock
    lines = []
    with waiting_lock(tmp_path / "net.lock"):
        thread = threading.Thread(target=lambda: source.pretraining_lock(
            tmp_path / "net.lock", lambda holder: lines.append(holder)).__enter__(), daemon=True)
        thread.start()
        thread.join(0.5)
        assert lines and lines[0].startswith(f"pid {__import__('os').getpid()} since ")
    thread.join(5)


def test_processes_decoding_one_new_folder_decode_it_once(tmp_path, monkeypatch):
    # before: each process that missed the folder cache at once decoded the whole folder
    import threading

    import numpy as np
    from PIL import Image

    from transferkit import userdata
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 4)
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    real, decoded = userdata._decode_images, []

    def slow(*args):
        decoded.append(1)
        __import__("time").sleep(0.5)
        return real(*args)
    monkeypatch.setattr(userdata, "_decode_images", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(userdata.load_image_folder(tmp_path / "f", size=8)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(decoded) == 1 and len(results) == 2 and torch.equal(results[0].images, results[1].images)


def stub_sentence_model(monkeypatch, cache):
    """``transferkit.text`` with a 2-d stand-in for the sentence model (sentence-transformers is not
    installed here: the disk cache's own code runs), caching in ``cache``."""
    from transferkit import text

    class Stub:
        def encode(self, texts, **kw):
            return torch.stack([torch.tensor([float(len(t)), 1.0]) for t in texts])

        def get_sentence_embedding_dimension(self):
            return 2
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: Stub())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(cache))
    return text


def test_the_text_embedding_cache_keeps_what_other_processes_stored(tmp_path, monkeypatch):
    # before: a process wrote its own embeddings over the file, dropping those another process stored since
    text = stub_sentence_model(monkeypatch, tmp_path)
    a, b = text.SentenceEncoder("stub"), text.SentenceEncoder("stub")  # two processes, both from an empty cache
    a.encode(["a cat", "a dog"])
    b.encode(["a car"])
    assert sorted(text.SentenceEncoder("stub")._cache) == ["a car", "a cat", "a dog"]


def two_unfinished_runs(root, monkeypatch) -> None:
    """``root/r1`` (finetune seeds 0 and 1) and ``root/r2`` (seed 0): run directories with finished
    jobs and no results.json."""
    import json

    import transferkit.runtime as runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])  # these directories are not left to the next tests
    base = {"method": "finetune", "source": "s", "target": "t", "setting": "k=1", "wall_s": 1.0}
    for name, accs in (("r1", (0.5, 0.7)), ("r2", (0.9,))):
        (root / name / "jobs").mkdir(parents=True)
        (root / name / "config.yaml").write_text(f"name: {name}\n")
        for seed, acc in enumerate(accs):
            (root / name / "jobs" / f"finetune-k=1-s{seed}.json").write_text(
                json.dumps({**base, "seed": seed, "accuracy": acc}))


def test_summary_of_several_runs_shows_the_finished_jobs_of_one_not_finished(tmp_path, capsys, monkeypatch):
    # before: `summary r1 r2` with r2 still working (or stopped) showed no table, only r2's missing results.json
    from transferkit.cli import main
    two_unfinished_runs(tmp_path, monkeypatch)
    assert main(["summary", str(tmp_path / "r1"), str(tmp_path / "r2")]) == 2
    out, err = capsys.readouterr()
    assert "| r1 | finetune |" in out and "| r2 | finetune |" in out, out
    assert err.count("holds 2 finished job(s)") == 1 and err.count("holds 1 finished job(s)") == 1, err
    assert f"transferkit run --resume {tmp_path / 'r2'}" in err


def test_episodes_of_a_run_scored_again_with_more_methods_replace_the_earlier_file(tmp_path):
    # before: each `episodes` call during a run, seeing one more finished method, kept the last file aside
    import json

    from transferkit.cli import _keep_other_episodes
    plan = {"n_way": 5, "k_shot": [1], "n_query": 15, "episodes": 5, "seed": 0, "heads": ["prototype"],
            "device": "cpu"}  # the plan the command records (its device since session 81)
    rows = lambda *ms: [{"method": m} for m in ms]  # noqa: E731
    (tmp_path / "episodes.json").write_text(json.dumps({"config": {"episodes": plan}, "rows": rows("a")}))
    assert _keep_other_episodes(tmp_path, plan, rows("a", "b")) is None  # more methods: replaced
    assert _keep_other_episodes(tmp_path, plan, rows("b")) == "another plan or other methods, kept as episodes-1.json"


# ---- large images (audit big) -----------------------------------------------------------------------------------
def test_frozen_activations_fill_one_tensor_alike_on_a_miss_a_hit_and_beyond_the_memo_limit(monkeypatch):
    # a guard of the reworked loop (each chunk written into one tensor, not kept in a list)
    from transferkit import evaluate, frozen
    from transferkit.backbones import build_backbone
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 7 * 28 * 28)  # chunks of 7 images: 3 chunks, the last short
    net = build_backbone("lenet", 10, in_channels=1, image_size=28).eval()
    x = torch.rand(17, 1, 28, 28)
    computed = torch.cat([net.forward_units(x[i:i + 7], 0, "conv2") for i in range(0, 17, 7)])
    then = lambda h: net.forward_units(h.relu_(), "conv2")  # noqa: E731  (changes its input in place)
    scores = torch.cat([net.forward_units(c.clone().relu_(), "conv2") for c in computed.split(7)])
    frozen.MEMO.clear()
    monkeypatch.setattr(frozen.MEMO, "_limit_mb", 0.0001)  # activations of ~0.04 MB: never kept
    assert torch.equal(frozen.frozen_activations(net, x, "conv2", then=then), scores)
    assert torch.equal(frozen.frozen_activations(net, x, "conv2"), computed)
    assert (frozen.MEMO.misses, frozen.MEMO.hits, len(frozen.MEMO)) == (2, 0, 0)
    frozen.MEMO.clear()
    monkeypatch.setattr(frozen.MEMO, "_limit_mb", 1024)
    assert torch.equal(frozen.frozen_activations(net, x, "conv2", then=then), scores)  # a miss, stored unchanged
    hit = frozen.frozen_activations(net, x, "conv2")
    assert torch.equal(hit, computed) and hit.stride() == computed.stride()
    assert torch.equal(frozen.frozen_activations(net, x, "conv2", then=then), scores)  # then on the hit's chunks
    assert (frozen.MEMO.misses, frozen.MEMO.hits) == (1, 2)
    frozen.MEMO.clear()


def test_activations_laid_out_otherwise_are_kept_in_their_own_layout():
    from transferkit.frozen import _rows_like
    h = torch.rand(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    assert _rows_like(h, 10).stride() == h.stride() and _rows_like(h, 10).shape == (10, 3, 5, 5)
    view = torch.rand(4, 3, 5, 5).permute(0, 2, 3, 1)  # dense rows, outermost: kept as they are
    assert _rows_like(view, 9)[:4].stride() == view.stride()
    gaps = torch.rand(4, 6, 5)[:, ::2]  # not dense: contiguous
    assert _rows_like(gaps, 9).is_contiguous()


def test_tap_warns_when_its_features_are_large(monkeypatch):
    # before: no word of features of GBs (resnet18's early units at 224 px: ~800k values per image)
    import pytest

    from transferkit.backbones import build_backbone
    from transferkit.errors import TransferkitWarning
    from transferkit.methods import tap
    net = build_backbone("lenet", 3, in_channels=1, image_size=28)
    x = torch.rand(30, 1, 28, 28)
    monkeypatch.setattr(tap, "LARGE_FEATURES_MB", 0.1)  # conv1: 2,880 values per image, 0.33 MB for 30
    with pytest.warns(TransferkitWarning, match=r"tap: test: the features of its 2 unit\(s\) take 0 MB \(conv1: "
                                                r"2,880 values per image, conv2: 800 values per image\).*units="):
        feats = tap.unit_features(net, x, ["conv1", "conv2"], batch_size=7, what="tap: test")
    whole = net.eval().forward_features(x, ["conv1"])["conv1"].flatten(1)
    assert torch.allclose(feats["conv1"], whole, atol=1e-6) and feats["conv1"].shape == (30, 2880)


def test_streams_keep_their_images_and_lay_out_each_batch_for_training():
    # before: every stream (and the validation set) was copied whole into the channels-last layout before step 0
    from transferkit.engine import Stream, StreamInputs
    x = torch.rand(20, 3, 6, 6)
    s = Stream("source", x, torch.arange(20) % 2, batch_size=8, seed=0, layout=torch.channels_last)
    (xb, yb), idx = s.batch(3)
    assert s.x is x and xb.is_contiguous(memory_format=torch.channels_last) and torch.equal(xb, x[idx])
    whole = x.contiguous(memory_format=torch.channels_last)
    assert xb.stride() == whole[idx].stride() and torch.equal(yb, torch.arange(20)[idx] % 2)
    inputs = StreamInputs({"source": x}, given=["source"], steps=5, layout=torch.channels_last)
    for got in (inputs["source"], inputs.get("source"), *inputs.values(), *(v for _, v in inputs.items())):
        assert got.stride() == whole.stride() and torch.equal(got, x)
    assert inputs.get("target") is None and "target" not in inputs


# ---- portability (audit port) ------------------------------------------------------------------------------------
def test_memory_is_read_without_proc_on_macos_and_left_out_where_it_cannot_be(monkeypatch):
    # before: without /proc, `import resource` failed every job on Windows; macOS's bytes were read as KiB
    import sys
    import types

    from transferkit import runtime

    def no_proc(*args, **kwargs):
        raise OSError("no /proc")
    monkeypatch.setattr(runtime, "open", no_proc, raising=False)
    usage = types.SimpleNamespace(getrusage=lambda who: types.SimpleNamespace(ru_maxrss=5000), RUSAGE_SELF=0)
    monkeypatch.setitem(sys.modules, "resource", usage)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert runtime._rss_bytes() == 5000
    monkeypatch.setattr(sys, "platform", "linux")
    assert runtime._rss_bytes() == 5000 * 1024
    monkeypatch.setitem(sys.modules, "resource", None)  # Windows
    assert runtime._rss_bytes() is None
    with runtime.peak_memory(device="cpu") as memory:
        pass
    assert "peak_rss_mb" not in memory and memory["measured_s"] >= 0


def test_windows_job_files_name_no_colon_and_linux_ones_are_as_before(monkeypatch, tmp_path):
    # before: ft_unit:conv2's job, model, checkpoint and tensorboard names held a colon, which NTFS refuses
    from transferkit import io
    row = {"method": "ft_unit:conv2", "setting": "k=5", "seed": 0}
    assert io.job_stem("ft_unit:conv2", "k=5", 0) == "ft_unit:conv2-k=5-s0"  # Linux: existing runs resume
    monkeypatch.setattr(io, "WINDOWS", True)
    assert io.job_stem("ft_unit:conv2", "k=5", 0) == "ft_unit@conv2-k=5-s0"
    io.check_job_name(tmp_path / "ft_unit@conv2-k=5-s0.json", row)


def test_without_sigkill_a_failed_rank_is_not_read_as_killed(monkeypatch, tmp_path):
    # before: AttributeError (Windows' signal has no SIGKILL), hiding the rank's own error
    import signal
    import types

    from transferkit import cli
    monkeypatch.delattr(signal, "SIGKILL")
    failure = types.SimpleNamespace(exitcode=1, signal_name=lambda: "")
    cli._record_killed_ranks(str(tmp_path), {0: failure}, set())
    assert not list(tmp_path.iterdir())


def test_a_worker_on_windows_watches_its_parent_by_its_process(monkeypatch):
    # before: os.getppid() never changes there when the parent dies, so an orphan went on writing job files
    import pytest

    from transferkit import jobs
    monkeypatch.setattr(jobs, "WINDOWS", True)
    monkeypatch.setattr(jobs, "process_running", lambda pid: False)
    monkeypatch.setattr(jobs.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit):
        jobs._exit_with_parent(jobs.os.getppid(), interval_s=0.01)


def test_without_fcntl_a_directory_s_holder_is_named_and_a_lock_taken_over_is_not_removed(monkeypatch, tmp_path):
    # before: directory_holder said None without fcntl, so an unfinished run held by a live process was said to be
    # resumable; the pid-file lock's release removed whatever lock file was there
    import os

    from transferkit import io
    monkeypatch.setattr(io, "fcntl", None)
    with io.directory_lock(tmp_path):
        assert io.directory_holder(tmp_path) == f"pid {os.getpid()}"
        (tmp_path / ".lock").write_text("999999999")  # another process took it over meanwhile
    assert (tmp_path / ".lock").read_text() == "999999999" and io.directory_holder(tmp_path) is None


def test_a_pair_keeps_a_windows_drive_path_whole():
    # before: 'folder:C:\data\src:mnist' was read as three specs ('folder:C', '\data\src', 'mnist')
    from transferkit.bench import _pair
    assert _pair("folder:C:\\data\\src:mnist") == ("folder:C:\\data\\src", "mnist")
    assert _pair("digits:npz:D:/a.npz") == ("digits", "npz:D:/a.npz")
    assert _pair("mnist:npz:x.npz") == ("mnist", "npz:x.npz") and _pair("folder:a:b") == ("folder:a", "b")


# ---- older run directories and caches (audit compat) ------------------------------------------------------------
def test_a_folder_cache_entry_of_other_decoding_code_is_not_read(tmp_path, monkeypatch):
    # before: the key held no trace of the decoding rules (a 32-bit image refused since 2026-12-05 was still
    # served from an older entry)
    import numpy as np
    from PIL import Image

    from transferkit import userdata
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(userdata, "CACHED_FOLDER_FILES", 2)
    (tmp_path / "f" / "a").mkdir(parents=True)
    (tmp_path / "f" / "b").mkdir(parents=True)
    for c in ("a", "b"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "f" / c / "0.png")
    real, decoded = userdata._decode_images, []
    monkeypatch.setattr(userdata, "_decode_images", lambda *a: decoded.append(1) or real(*a))
    userdata.load_image_folder(tmp_path / "f", size=4)
    userdata.load_image_folder(tmp_path / "f", size=4)
    assert len(decoded) == 1
    monkeypatch.setattr(userdata, "_decoding_digest", lambda: "other code")
    userdata.load_image_folder(tmp_path / "f", size=4)
    assert len(decoded) == 2


def test_dsn_rows_of_before_its_revision_are_refused_on_resume():
    # before: dsn's difference loss changed on 2026-11-30 with revision 0: older rows were averaged with new ones
    from transferkit.config import ExperimentConfig
    from transferkit.methods import get_method
    from transferkit.rundir import row_digests
    cfg = ExperimentConfig(methods=["dsn"])
    assert get_method("dsn").revision == 1 and "B²" in get_method("dsn").revision_note
    assert not row_digests(cfg, "dsn") & row_digests(cfg, "dsn", 0)


def test_episodes_warn_when_the_target_split_made_now_differs_from_the_run_s_record(tmp_path):
    # before: episodes of a folder run made before 2026-12-02 drew on today's split, whose test images its jobs had
    # partly trained on, without a word
    import json

    import pytest

    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitWarning
    from transferkit.experiment import run_experiment
    from transferkit.fewshot_eval import run_episodes
    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["linear_probe"], k=2, repeats=1, select_on="none", out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=4, eval_every=4), train=TrainConfig(steps=2, eval_every=2))
    run = tmp_path / "fs"
    run_experiment(cfg, run_dir=run, log=lambda *a: None)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        run_episodes(run, None, ["prototype"], 5, [1], 5, 5, 0)  # the recorded data: quiet
    record = json.loads((run / "data.json").read_text())
    record["target.test"] = "0" * 16
    (run / "data.json").write_text(json.dumps(record))
    with pytest.warns(TransferkitWarning, match=r"episodes: the target's target\.test made now differ from the data "
                                                r"the run recorded"):
        run_episodes(run, None, ["prototype"], 5, [1], 5, 5, 0)


# ---- speed of the flex and represent families (audit flexperf) --------------------------------------------------
def test_the_finiteness_check_sums_first_and_checks_each_value_where_a_sum_is_not_finite():
    # a guard of the faster check (a sum per parameter first: resnet18 0.35-0.67 s -> a tenth of that)
    from transferkit.backbones import build_backbone
    from transferkit.engine import _nonfinite_parameters
    from transferkit.methods.finetune import FtAll
    method = FtAll(build_backbone("lenet", 3, in_channels=1, image_size=28))
    with torch.no_grad():
        method.net.units["conv1"][0].weight.fill_(3e38)  # finite values whose sum is not: not named
        assert _nonfinite_parameters(method) == ""
        method.net.units["conv1"][0].bias[0] = float("nan")
    assert _nonfinite_parameters(method).endswith("conv1.0.bias")


def test_proxy_scoring_runs_no_base_unit_after_the_last_candidate(monkeypatch):
    # before: base's units after the last candidate ran on every validation chunk, their output never read
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.methods.flex import proxy_accuracies
    base = build_backbone("lenet", 3, in_channels=1, image_size=28)
    donor = build_backbone("lenet", 3, in_channels=1, image_size=28)
    dom = Domain("v", torch.rand(12, 1, 28, 28), torch.arange(12) % 3, list("abc"))
    want = proxy_accuracies(base, donor, ["conv1"], dom)
    runs = []
    real = type(base).forward_units
    monkeypatch.setattr(type(base), "forward_units", lambda self, h, a, b=None: runs.append((self is base, a))
                        or real(self, h, a, b))
    assert proxy_accuracies(base, donor, ["conv1"], dom) == want
    assert [a for own, a in runs if own] == ["conv2"]  # the proxy's rest after donor's conv1; no base pass beyond


def test_flex_candidates_are_copied_with_the_shapes_of_their_units():
    from transferkit.backbones import build_backbone
    from transferkit.methods.flex import candidate_method
    net = build_backbone("lenet", 3, in_channels=1, image_size=28)
    assert candidate_method(net, "conv1").net._shapes is not None  # no dry run per copy in the engine


def test_a_resume_names_every_job_file_it_refuses_at_once(tmp_path):
    # before: one job file per try (a resume of an old benchmark took three tries to learn which files to delete)
    from dataclasses import replace

    import pytest

    from transferkit.config import ExperimentConfig, dump_config
    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.experiment import run_experiment
    tiny = TrainConfig(steps=2, batch_size=8, eval_every=2)
    cfg = ExperimentConfig(name="e", source="digits", target="digits", k=2, repeats=1,
                           methods=["finetune", "linear_probe"], pretrain=TrainConfig(steps=4, batch_size=8),
                           train=tiny, out_dir=str(tmp_path / "runs"))
    run_dir, _ = run_experiment(cfg, log=lambda *a: None)
    edited = replace(cfg, train=replace(tiny, steps=3))
    (run_dir / "config.yaml").write_text(dump_config(edited))
    with pytest.raises(TransferkitError, match=r"2 job files cannot be resumed as they are:\n  .*finetune-k=2-s0\.json "
                                               r"was run .*\n  .*linear_probe-k=2-s0\.json was run"):
        run_experiment(edited, run_dir=run_dir, log=lambda *a: None)


# ---- the code review (audit rev) --------------------------------------------------------------------------------
def test_review_edges_of_the_reworked_loops():
    import pytest

    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import StreamInputs
    from transferkit.methods.flex import proxy_accuracies
    from transferkit.methods.tap import unit_features
    net = build_backbone("lenet", 3, in_channels=1, image_size=28)
    dom = Domain("v", torch.rand(6, 1, 28, 28), torch.arange(6) % 3, list("abc"))
    assert proxy_accuracies(net, build_backbone("lenet", 3, in_channels=1, image_size=28), [], dom) == {}
    empty = unit_features(net, torch.zeros(0, 1, 28, 28), ["conv1", "conv2"])  # as before: (0, D) per unit
    assert {u: tuple(f.shape) for u, f in empty.items()} == {"conv1": (0, 2880), "conv2": (0, 800)}
    x = torch.rand(4, 3, 5, 5)
    inputs = StreamInputs({"source": x}, given=["source"], steps=1, layout=torch.channels_last)
    for got in (dict(inputs)["source"], {**inputs}["source"], inputs.copy()["source"], inputs.pop("source")):
        assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, x)
    assert "source" not in inputs and inputs.pop("source", None) is None
    with pytest.raises(Exception, match="not cached"):
        inputs.pop("source")


def test_score_names_sample_weights_that_are_not_numbers(one_thread):
    import pytest

    from transferkit.errors import TransferkitError
    model, x, y = _fitted_toy()
    with pytest.raises(TransferkitError, match=r"score: sample_weight must be numbers, one per image, got list"):
        model.score(x, y, sample_weight=["a"] * 40)


def test_episodes_compare_a_data_record_of_the_first_format_too(tmp_path, monkeypatch):
    # before (mutation pass): changed_since said nothing for a data.json of 2026-11-29 (no "format" key)
    import json
    import types

    from transferkit import rundir
    now = {"format": rundir.DATA_FORMAT, "target.test": "new", "folder_label_draws": 2}
    monkeypatch.setattr(rundir, "data_digests", lambda data: dict(now))
    split = types.SimpleNamespace(digest=lambda: "old-digest")
    monkeypatch.setattr(rundir, "_splits", lambda data: {"target.test": split})
    (tmp_path / "data.json").write_text(json.dumps({"target.test": "old-digest"}))  # format 1: the same images
    assert rundir.changed_since(tmp_path, None, ("target.test",)) == ["folder_label_draws"]
    (tmp_path / "data.json").write_text(json.dumps({"target.test": "other"}))
    assert rundir.changed_since(tmp_path, None, ("target.test",)) == ["folder_label_draws", "target.test"]


def test_a_missing_network_path_with_yaml_escapes_in_it_is_named_with_the_fix():
    # before: 'pre-trained network C:' / 'ets\x07.safetensors does not exist', printed raw over two lines
    from pathlib import Path

    import pytest

    from transferkit.errors import TransferkitError
    from transferkit.networks import read_network_file
    with pytest.raises(TransferkitError, match=r"pre-trained network 'C:\\nets\\x07\.safetensors' does not exist "
                                               r"\(the path holds a tab or line break \(or another control"):
        read_network_file(Path("C:\nets\a.safetensors"))
