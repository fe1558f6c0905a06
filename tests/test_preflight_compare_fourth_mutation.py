"""Tests from a fourth mutation pass over preflight.py and compare.py, for what the first three passes
(tests/test_preflight_compare_mutation.py, tests/test_preflight_shifts_second_mutation.py,
tests/test_report_compare_second_mutation.py, tests/test_preflight_compare_third_mutation.py) and the other
tests let through. In preflight: check_jobs leaving the global random state as it found it (the networks it
builds draw from it), both balancing settings named together, and the count of classes k is above, and the
plugin hint of an unknown backbone in a resumed run. In compare: a results.json whose ``notes`` or ``failed``
is null, the runs' own notes before the versions line, a spec with shifts read by seed, a source spec whose
data differ between runs, a path with a colon in it, and the operations of the kernels line in order. Each
test fails when the code it names is changed in the way its comment says.

Judged equivalent, so not tested: check_jobs' `continue` after source_only dropped (job_method builds it, and
its check_source / check_classes are the base class's, which check nothing); compare's `envs if env` ->
`_flat_all(env or {})` and the kernels' `if env and ...` -> `(env or {})` (a missing environment flattens to
no keys), `str(name)` of a run's method names dropped (they are text in any results.json), `.split("@")[0]`
dropped from the relative-path note (what follows `@` does not make a path absolute), and the results path
found by `.suffix != ".json"` rather than `is_dir()` (only a folder named *.json or a results file named
otherwise tells them apart). Left surviving: none of those tried (check_names' plugin hint made unconditional,
and check_jobs' network built with the target's classes rather than the source's, are killed by
tests/test_plugins.py, so not repeated here)."""

import warnings
from dataclasses import replace

import pytest
import torch
from test_preflight_compare_mutation import _counted, _data, _differ, _results, _run, _warned

from transferkit import compare, preflight
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method


# ---- preflight ----------------------------------------------------------------------------------
def test_check_jobs_leaves_the_global_random_state_as_it_found_it(one_thread):
    # kills: `torch.random.fork_rng()` dropped (the networks built to check methods draw the run's random numbers)
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", methods=["finetune", "dann"])
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preflight.check_jobs(cfg, _data(), [get_method(m) for m in cfg.methods])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_both_balancing_settings_are_named_joined_by_and():
    # kills: the balancing settings joined by ", " instead of " and "
    base = ExperimentConfig()
    cfg = replace(base, train=replace(base.train, sampler="balanced", class_weight="balanced"))
    (said,) = _warned(preflight._warn_balancing, cfg, [get_method("dann")])
    assert said.startswith("train.sampler: balanced and train.class_weight: balanced balances the classes")


def test_k_above_some_classes_counts_those_classes_not_the_ones_kept():
    # kills: the count of classes below k taken from the classes kept (len(keep)) instead of len(small)
    with pytest.raises(TransferkitError, match=r"^k=3 is larger than the smallest class: 1 target class\(es\) have "
                                               r"fewer than 3 training images: c0 \(1\);"):
        preflight._check_k_fits(ExperimentConfig(k=3), _counted([1, 5, 5, 5]))


def test_an_unknown_backbone_of_a_resumed_run_is_hinted_as_a_plugins_backbone(tmp_path, monkeypatch):
    # kills: the resumed run's plugin hint made for kind "method" whatever the unknown name's kind
    monkeypatch.delenv("TRANSFERKIT_PLUGINS", raising=False)
    (tmp_path / "results.json").write_text('{"environment": {"plugins": ["my_plugin"]}}')
    cfg = ExperimentConfig(backbone="tinynet_not_here", methods=["finetune"])
    with pytest.raises(TransferkitError, match=r"a plugin's backbone\? .*the run was made with "
                                               r"TRANSFERKIT_PLUGINS=my_plugin"):
        preflight.check_names(cfg, tmp_path)


# ---- compare: a combined table's notes and failed jobs ------------------------------------------
def test_null_notes_and_failed_jobs_are_read_as_none(tmp_path):
    # kills: `data.get("notes") or []` -> `data.get("notes", [])` and the same of "failed" (a null one crashes)
    a = _results(tmp_path / "a" / "results.json", notes=None, failed=None)
    b = _results(tmp_path / "b" / "results.json", notes=["ok"])
    combined = compare.combine_runs([a, b])
    assert combined["notes"] == ["Run b: ok"] and combined["failed"] == []


def test_the_runs_own_notes_come_before_the_versions_line(tmp_path):
    # kills: the versions line put before the runs' own notes
    a = _results(tmp_path / "a" / "results.json", notes=["stopped early"], environment={"torch": "2.4"})
    b = _results(tmp_path / "b" / "results.json", environment={"torch": "2.5"})
    notes = compare.combine_runs([a, b])["notes"]
    assert len(notes) == 2 and notes[0] == "Run a: stopped early" and notes[1].startswith("The runs were made with")


def test_the_kernels_line_names_its_operations_in_order():
    # kills: `sorted` dropped from the operations named (a set's order, which changes from one process to the next)
    ops = ["softmax", "conv", "matmul", "bmm", "layer_norm", "gelu", "addmm", "baddbmm"]
    envs = [("a", {"kernel_fingerprint": {op: "1" for op in ops}}),
            ("b", {"kernel_fingerprint": {op: "2" for op in ops}})]
    (line,) = compare.environment_differ_lines(envs)
    assert f"compute {', '.join(sorted(ops))} differently" in line


# ---- compare: runs that read a domain spec into other data --------------------------------------
def test_a_spec_with_shifts_reads_data_by_seed(tmp_path):
    # kills: `"+" in spec` dropped from the specs read by seed (another seed's shifted images said to be other data)
    a = _run(tmp_path / "a", "digits+noise", {"target.train": "t1"})
    b = _run(tmp_path / "b", "digits+noise", {"target.train": "t2"}, seed=1)
    assert _differ(("a", a), ("b", b)) == []
    c = _run(tmp_path / "c", "digits+noise", {"target.train": "t2"})
    assert len(_differ(("a", a), ("c", c))) == 1


def test_a_source_read_into_other_data_is_named(tmp_path):
    # kills: the specs the rows name taken from their target for the source side too (the source never compared)
    a = _run(tmp_path / "a", "npz:/abs/t.npz", {"target.train": "t1"})
    b = _run(tmp_path / "b", "npz:/abs/t.npz", {"target.train": "t1", "source.train": "s2"})
    assert _differ(("a", a), ("b", b)) == ["The source digits is not the same data in run a as in run b (source.train "
                                           "differ in their data.json): their rows are not on the same data."]


def test_an_absolute_path_with_a_colon_in_it_gets_no_working_directory_note(tmp_path):
    # kills: the spec's path taken after its last ":" (split(":")[-1]) instead of its first
    a = _run(tmp_path / "a", "npz:/abs/v1:2/t.npz", {"target.train": "t1"})
    b = _run(tmp_path / "b", "npz:/abs/v1:2/t.npz", {"target.train": "t2"})
    (line,) = _differ(("a", a), ("b", b))
    assert line.endswith("their rows are not on the same data.") and "relative path" not in line
