"""Session 80 mutation pass (tests only): hand-made mutants of this session's library changes, each applied
alone and run against the session-80 test files and the module's own mutation tests; the survivors that are
not equivalent are killed by the tests below.

MUTANTS
"""

import warnings

import pytest
import torch

from transferkit.errors import TransferkitWarning, quiet


# ---- io.is_stream: only the streams' own names, whole -----------------------------------------------------------
@pytest.mark.parametrize("name", ["/dev/stdout.jsonl", "/dev/fd/1x", "/dev/stderr-log"])
def test_a_name_that_only_starts_as_a_stream_s_is_not_one(name):
    from transferkit.io import is_stream
    assert not is_stream(name)  # absent files: a metrics file that is written and read back
    assert is_stream("/dev/stdout") and is_stream("/dev/fd/1")


# ---- errors.quiet: transferkit's warnings only ------------------------------------------------------------------
def test_quiet_lets_other_warnings_pass():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet():
            warnings.warn("mine", TransferkitWarning, stacklevel=1)
            warnings.warn("other", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["other"]


# ---- text: the byte count of a cache -----------------------------------------------------------------------------
def test_an_encoder_pickled_before_the_byte_bound_counts_the_rows_it_holds():
    from transferkit.text import HashingEncoder
    enc = HashingEncoder(16)
    enc.encode(["a", "b"])
    del enc.__dict__["_bytes"]  # as an encoder pickled before the cache was bounded in bytes
    enc.encode(["c"])
    assert enc._bytes == sum(r.nbytes for r in enc._cache.values()) == 3 * 16 * 4


def test_a_pickled_sentence_encoder_counts_no_bytes_of_the_cache_it_leaves_out():
    from transferkit.text import SentenceEncoder
    enc = SentenceEncoder.__new__(SentenceEncoder)
    enc.__dict__.update(_cache={"a": torch.zeros(4)}, _bytes=16, _model=None, _evicted=False)
    state = enc.__getstate__()
    assert state["_cache"] == {} and state["_bytes"] == 0


def test_re_encoding_cached_texts_counts_each_row_once():
    from transferkit.text import HashingEncoder
    enc = HashingEncoder(16)
    for _ in range(3):
        enc.encode(["a", "b"])
    assert enc._bytes == 2 * 16 * 4


# ---- plots.legend_name: a name of the limit stays whole -----------------------------------------------------------
def test_a_legend_name_of_the_limit_is_kept_whole():
    from transferkit.plots import legend_name
    assert legend_name("x" * 28) == "x" * 28
    assert len(legend_name("x" * 29)) == 28


# ---- cli._option_entries: a default JSON cannot write ----------------------------------------------------------------
def test_an_option_whose_default_json_cannot_write_shows_its_repr(monkeypatch):
    import transferkit.methods.base as base
    from transferkit.cli import _option_entries
    monkeypatch.setattr(base, "method_options", lambda cls: {"fn": len})

    class Fake:
        fixed_options = {}

    assert _option_entries("fake", Fake) == {"fn": {"default": None, "repr": repr(len)}}


# ---- semantic.first_occurrences: the first position of each value, and no other ---------------------------------
@pytest.mark.parametrize("ids, first", [([2, 2, 1, 2, 1], [1, 0, 1, 0, 0]), ([0, 0, 0], [1, 0, 0]),
                                        ([3, 1, 3, 1], [1, 1, 0, 0]), ([], [])])
def test_first_occurrences_marks_each_value_s_first_position_alone(ids, first):
    from transferkit.methods.semantic import first_occurrences
    assert first_occurrences(torch.tensor(ids, dtype=torch.long)).tolist() == [bool(b) for b in first]


# ---- engine._logged_history: a metrics stream is never read back ----------------------------------------------------
def test_a_metrics_stream_is_not_read_back_as_the_history(capfd):
    from transferkit.engine import Engine, TrainConfig
    from transferkit.io import append_jsonl
    engine = Engine(TrainConfig(steps=2, progress=False), metrics_path="/dev/stdout", run_name="r")
    append_jsonl("/dev/stdout", {"method": "m", "run": "r", "step": 1, "loss": 0.5})  # pytest's fd 1: a regular file
    assert engine._logged_history(5) == []
    capfd.readouterr()


# ---- cli._stage_devices: only the stages' device keys and sections follow --device -----------------------------------
@pytest.mark.parametrize("given", ["source.device=cuda", "options={device: cuda}", "source={device: cuda}"])
def test_a_device_of_a_section_that_is_no_stage_is_left_as_given(given):
    from transferkit.cli import _stage_devices
    from transferkit.config import ExperimentConfig
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _stage_devices([given], "cpu", ExperimentConfig) == [given]
    with pytest.warns(TransferkitWarning, match="wins over"):
        assert _stage_devices(["train={device: cuda}"], "cpu", ExperimentConfig) == ["train={device: cuda}",
                                                                                     "train.device=cpu"]
