"""Session 77 (h_fb): leftovers of the method registry, the text cache, resumes and the file lock."""

import gc
import os
import pickle

import torch

from transferkit.methods import finetune
from transferkit.methods.base import get_method


def test_ft_unit_classes_of_names_looked_up_and_dropped_are_not_kept():
    held = get_method("ft_unit:conv1")
    gc.collect()  # classes that earlier tests of this process dropped, not yet collected, are not counted
    before = len(finetune.FtUnit.__subclasses__())
    for i in range(50):
        get_method(f"ft_unit:no_such_unit_{i}")
    gc.collect()
    assert len(finetune.FtUnit.__subclasses__()) == before
    assert get_method("ft_unit:conv1") is held and pickle.loads(pickle.dumps(held)) is held


def test_the_text_cache_keeps_the_strings_used_last_and_gives_the_same_rows(monkeypatch):
    from transferkit.text import HashingEncoder
    enc, fresh = HashingEncoder(16), HashingEncoder(16)
    monkeypatch.setattr(enc, "cache_mb", 3 * 16 * 4 / 2**20)  # 3 rows of 16 float32
    encoded = []
    inner = enc._encode
    monkeypatch.setattr(enc, "_encode", lambda texts: (encoded.extend(texts), inner(texts))[1])
    texts = [f"text {i}" for i in range(6)]
    rows = enc.encode(texts)
    assert len(enc._cache) == 3 and torch.equal(rows, fresh.encode(texts))
    enc.encode(["text 4"])  # a hit: used last again
    enc.encode(["text 0"])  # evicted, encoded anew: evicts "text 3", the one used longest ago
    assert encoded == texts + ["text 0"] and list(enc._cache) == ["text 5", "text 4", "text 0"]
    assert torch.equal(enc.encode(texts), rows)


def test_a_sentence_encoder_reads_a_text_evicted_from_memory_back_from_its_disk_cache(tmp_path, monkeypatch):
    from transferkit import text
    encoded = []

    class Model(torch.nn.Module):
        def encode(self, texts, batch_size, **kw):
            encoded.extend(texts)
            return torch.tensor([[1.0, float(len(t))] for t in texts])

        def get_sentence_embedding_dimension(self):
            return 2

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: Model())
    monkeypatch.setattr(text.TextEncoder, "cache_mb", 2 * 4 / 2**20)  # 1 row of 2 float32
    enc = text.SentenceEncoder("fake")
    first = enc.encode(["a", "bb"])
    assert list(enc._cache) == ["bb"]
    assert torch.equal(enc.encode(["a", "bb"]), first) and encoded == ["a", "bb"]
    assert len(text.SentenceEncoder("fake")._cache) == 1


class _FakeMsvcrt:
    """msvcrt.locking as Windows answers it: ``busy`` tries find the byte locked by another process."""
    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self, busy):
        self.busy, self.calls = busy, []

    def locking(self, fd, mode, nbytes):
        self.calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes))
        if mode == self.LK_NBLCK and self.busy:
            self.busy -= 1
            raise PermissionError(13, "Permission denied")


def test_without_fcntl_the_waiting_lock_locks_a_byte_with_msvcrt_waits_while_held_and_unlocks(tmp_path, monkeypatch):
    from transferkit import io
    fake = _FakeMsvcrt(busy=2)
    monkeypatch.setattr(io, "fcntl", None)
    monkeypatch.setattr(io, "msvcrt", fake, raising=False)
    path = tmp_path / "x.lock"
    path.write_text("pid 4242 since 10:00:00")
    said = []
    with io.waiting_lock(path, said.append, poll_s=0):
        assert path.read_text().startswith(f"pid {os.getpid()} since ")
        tries = list(fake.calls)
    assert said == ["pid 4242 since 10:00:00"]  # read while the other process held the lock
    locked = [(fake.LK_NBLCK, tries[0][1], 1)]
    assert tries == locked * 3 and tries[0][1] >= len("pid 4242 since 10:00:00")  # past the holder's text
    assert fake.calls == tries + [(fake.LK_UNLCK, tries[0][1], 1)]


def test_run_experiment_under_a_callers_float64_default_gives_the_float32_run_bit_for_bit(tmp_path, monkeypatch):
    # linear_probe builds a new head (outside build_backbone): without run_experiment's float32 default it
    # trained a float64 head, a run that succeeds with other numbers
    from transferkit import source
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import load_model, run_experiment
    from transferkit.networks import network_digest

    def run(name, dtype):
        monkeypatch.setattr(source, "cache_dir", lambda: tmp_path / name)  # each pre-trains its own network
        cfg = ExperimentConfig(source="digits", target="digits", target_classes="0-4", k=1, repeats=1, image_size=16,
                               methods=["linear_probe"], out_dir=str(tmp_path), name=name, select_on="none")
        cfg.train.steps = cfg.pretrain.steps = 2
        before = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            run_dir, (row,) = run_experiment(cfg, log=lambda *a: None)
        finally:
            torch.set_default_dtype(before)
        model = load_model(run_dir, "linear_probe")
        return row, network_digest(model.net), {k: v.dtype for k, v in model.state_dict().items()}

    plain, wide = run("f32", torch.float32), run("f64", torch.float64)
    assert all(len(list((tmp_path / name / "pretrained").glob("*.safetensors"))) == 1 for name in ("f32", "f64"))
    assert wide[1] == plain[1] and wide[2] == plain[2]
    assert wide[0]["source_digest"] == plain[0]["source_digest"] and wide[0]["accuracy"] == plain[0]["accuracy"]
