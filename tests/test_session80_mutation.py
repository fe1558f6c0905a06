"""Session 80 mutation pass (tests only): 75 hand-made mutants of this session's library changes (id, file,
mutation, result below); 58 were killed by the tests before (M16 by an older test, found on the final read),
17 survived and are killed by the tests here.

Each mutant was applied alone in a clone and run against the session-80 test file(s) of its module (the
killer named; M01-M12 and M41-M42 also with the module's own mutation tests); every survivor was
non-equivalent and is killed by a test below (checked: it fails with the mutant, passes without).
M17-M21 and M25 were of matching_ft's sync-free step, reverted after the review (1e30d3c): M20, M21 and M25 no
longer apply; the tests of M17-M19 check first_occurrences' result, which the code before it gives too.

M01 tables.py: &(?=\\w+;): no #: killed-before (session80_h_html)
M02 tables.py: & never escaped: killed-before (session80_h_html)
M03 tables.py: & always: killed-before (session80_h_html)
M04 report.py: alt branch condition inverted: killed-before (session80_h_html)
M05 report.py: alt: md_cell(cap) alone: killed-before (session80_h_html)
M06 report.py: fence: max(3, longest run): killed-before (session80_h_html)
M07 report.py: _failed_status: if failed: return []: killed-before (session80_h_html)
M08 report.py: _failed_status: str(f) for dicts: killed-before (session80_h_html)
M09 report.py: notes: n, not md_cell(n): killed-before (session80_h_html)
M10 results.py: results.md title unescaped: killed-before (session80_h_html)
M11 report.py: html status lines unescaped: killed-before (session80_h_html)
M12 report.py: md status lines unescaped: killed-before (session80_h_html)
M13 errors.py: filter appended: killed-before (session80_h_warn)
M14 errors.py: removed by ==, not is: killed-before (session80_h_warn)
M15 errors.py: filter never removed: killed-before (session80_h_warn)
M16 errors.py: quiet ignores every Warning: killed-before (test_session73_mutation's test of quiet)
M17 methods/semantic.py: mask[1:]: killed-by-new-test
M18 methods/semantic.py: first_occurrences: an empty slot holds len(ids) - 1: killed-by-new-test
M19 methods/semantic.py: amax: killed-by-new-test
M20 methods/semantic.py: if not sync or not tiny: log space skipped without sync: no longer applies (reverted)
M21 methods/semantic.py: where() branches swapped: no longer applies (reverted)
M22 methods/semantic.py: bool labels not refused: killed-before (session80_h_left)
M23 methods/semantic.py: labels not .long(): killed-before (session80_h_left)
M24 methods/semantic.py: classes < num_target_classes: killed-before (session80_h_left)
M25 methods/semantic.py: sync=True in losses (same values): no longer applies (reverted)
M26 cli.py: given != device (copy of file's): killed-before (session80_h_nd)
M27 cli.py: config file's stage device: no override: killed-before (session80_h_nd)
M28 cli.py: any X.device rewritten: killed-by-new-test
M29 cli.py: section warn when equal: killed-before (session80_h_nd)
M30 cli.py: a whole --set section: no STAGE.device=: killed-before (session80_h_nd)
M31 cli.py: a non-stage section: killed-by-new-test
M32 config.py: sections without a device count: killed-by-new-test
M33 cli.py: out_dir not json.dumps'd: killed-by-new-test
M34 cli.py: --out_dir in the warning: killed-before (session80_h_cli)
M35 cli.py: _bench: no _check_list_format: killed-before (session80_h_cli)
M36 cli.py: no repr: killed-by-new-test
M37 cli.py: _option_entries: no fixed: True: killed-by-new-test
M38 cli.py: no choices: killed-before (session80_h_cli)
M39 cli.py: summary: no check_run_dir: killed-before (session80_h_cli)
M40 cli.py: summary json: no Classes line: killed-before (session80_h_cli)
M41 engine.py: lr < bound: killed-before (session80_h_old)
M42 engine.py: weight_decay < bound: killed-before (session80_h_old)
M43 engine.py: overflow test inverted: killed-before (session80_h_old)
M44 engine.py: _logged_history reads a stream: killed-by-new-test
M45 engine.py: LARGEST_RATE 2**63: killed-before (session80_h_old)
M46 engine.py: _who ignores the label: killed-before (session80_h_nd)
M47 io.py: FIFO not a stream: killed-before (session80_h_old)
M48 io.py: match, not fullmatch: killed-by-new-test
M49 io.py: append_jsonl: stream branch falls through: killed-before (session80_h_old)
M50 io.py: refusal without the devices' hint: killed-before (session80_h_old)
M51 text.py: old row's bytes not subtracted: killed-by-new-test
M52 text.py: rows kept as batch views: killed-before (session80_h_old)
M53 text.py: no cache_mb bound: killed-before (session80_h_old)
M54 text.py: no cache_entries bound: killed-before (session80)
M55 text.py: pickled encoder held = 0: killed-by-new-test
M56 text.py: __getstate__ keeps _bytes: killed-by-new-test
M57 bench/flex.py: table3: no diverged line: killed-before (session80_h_left)
M58 bench/flex.py: flex_suite: no diverged in the head: killed-before (session80_h_left)
M59 bench/represent.py: erm never diverged: killed-before (session80_h_left)
M60 bench/represent.py: catN from n-1 members: killed-before (session80_h_left)
M61 bench/represent.py: distill ignores members: killed-before (session80_h_left)
M62 bench/represent.py: _transfer_row: no diverged: killed-before (session80_h_nd)
M63 bench/represent.py: represent_tables: no few-shot diverged line: killed-before (session80_h_left)
M64 bench/flex.py: flex run_job: no diverged: killed-before (session80_h_nd)
M65 userdata.py: if head: (empty test inverted): killed-before (session80_h_img)
M66 userdata.py: no lstrip before '<': killed-by-new-test
M67 userdata.py: tRNS -> black: killed-before (session80_h_img)
M68 userdata.py: mode '1' not grey on white: killed-before (session80_h_img)
M69 userdata.py: no 'truncated' case: killed-before (session80_h_img)
M70 experiment.py: adds_to_network refused even with trust_pickles: killed-before (session80_h_old)
M71 unitnet.py: pre_logits ignored: killed-before (session80_h_api)
M72 losses.py: forward drops the options: killed-before (session80_h_api)
M73 losses.py: MinimumClassConfusionLoss drops detach_weights: killed-by-new-test
M74 plots.py: <= limit -> < limit: killed-by-new-test
M75 bench/__init__.py: key without TSNE_STYLE: killed-before (session80_h_left)
"""

import warnings

import pytest
import torch

from transferkit.errors import TransferkitWarning


# ---- io.is_stream: only the streams' own names, whole -----------------------------------------------------------
@pytest.mark.parametrize("name", ["/dev/stdout.jsonl", "/dev/fd/1x", "/dev/stderr-log"])
def test_a_name_that_only_starts_as_a_stream_s_is_not_one(name):
    from transferkit.io import is_stream
    assert not is_stream(name)  # absent files: a metrics file that is written and read back
    assert is_stream("/dev/stdout") and is_stream("/dev/fd/1")


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


# ---- userdata._why_unreadable: a web page is text after leading blank lines too ----------------------------------
def test_a_web_page_that_starts_with_blank_lines_is_named_as_text(tmp_path):
    from transferkit.userdata import _why_unreadable
    page = tmp_path / "cat.png"
    page.write_bytes(b"\n  \r\n<!DOCTYPE html><html></html>")
    assert _why_unreadable(page, OSError("cannot identify image file")).startswith("it holds text, not an image")


# ---- config.stage_sections: a section is a stage only with a device ---------------------------------------------
def test_a_dataclass_section_without_a_device_is_no_stage():
    import dataclasses

    from transferkit.config import ExperimentConfig, stage_sections
    from transferkit.engine import TrainConfig

    @dataclasses.dataclass
    class Plain:
        size: int = 1

    @dataclasses.dataclass
    class Plan:
        train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
        other: Plain = dataclasses.field(default_factory=Plain)

    assert stage_sections(Plan) == {"train"}
    assert stage_sections(ExperimentConfig) == {"train", "pretrain"}


# ---- cli: run --out is a path, never YAML's reading of it; a fixed option says so -------------------------------
@pytest.mark.parametrize("out", ["null", "~", "2026"])
def test_run_out_that_yaml_would_read_as_null_or_a_number_stays_a_path(out, capsys):
    import yaml

    from transferkit.cli import main
    assert main(["run", "demo", "--out", out, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == out


def test_an_option_fixed_by_the_method_s_name_is_marked_fixed():
    from transferkit.cli import _option_entries
    from transferkit.methods import get_method
    assert _option_entries("ft_fc1", get_method("ft_fc1"))["n"] == {"default": 1, "fixed": True}


# ---- losses: a loss module keeps every option it is given ---------------------------------------------------------
def test_minimum_class_confusion_loss_keeps_detach_weights():
    from transferkit.losses import MinimumClassConfusionLoss, minimum_class_confusion
    loss = MinimumClassConfusionLoss(temperature=1.5, detach_weights=False)
    assert loss.options == {"temperature": 1.5, "detach_weights": False}
    assert "detach_weights=False" in repr(loss)
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.grad(loss(logits), logits)[0].equal(
        torch.autograd.grad(minimum_class_confusion(logits, temperature=1.5, detach_weights=False), logits)[0])
