"""Tests from a mutation pass over the benchmark runner, ``bench/__init__.py`` (with ``bench/demo.py`` and the
SKADA-free parts of ``bench/skada_compare.py``, whose mutants the existing tests already kill): how ``as_list`` reads
a plan field (blank items of a comma-separated string, a value that is no number at all, ``True`` or ``1.5`` as an
int), a backslash in ``path_part``, what ``as_pairs`` refuses (three names, an empty name, a repeated pair),
``--set ' quick = true'``, ``plan_yaml`` of a plan without a budget and of one whose budget is its fields, how
``_stored_plan`` reads a directory (an older ``results.json`` without a plan or with a list for its config, its
benchmark named there only, a `transferkit run` directory), whom ``_check_same_plan`` checks and names (no name given,
no owner stored, a plan of no benchmark's fields), what a resume keeps (``--quick`` on a full run's directory, a
``--set`` key of a plain dict field, another benchmark's directory of the same plan type), ``_entries``' lock files,
``_clear_start_files``' temporary files, and ``run_benchmark``'s directories (the ``-quick`` folder, the logged budget
and overrides, the owner in ``plan.json``, a ``--resume`` path that cannot be made, a resumed quick run, stale
results, a new folder noted and removed, folders it did not make kept, a resume's kernels record kept). Suites are
tiny fakes registered with :func:`benchmark` into a copy of the registry, so nothing trains. Each test fails when the
code its comment names is changed in the way the comment says. The pass found a bug, fixed since: a ``plan.json``
that held valid JSON but no object was taken for no plan at all.

Judged equivalent, so not tested: ``steps_per_epoch``'s ``n - n % batch_size`` before ``// batch_size`` dropped (the
floor division rounds down alike); ``_resumed_selection`` raising ``_stored_plan``'s error instead of returning the
plan (``resumed_plan`` calls ``_check_same_plan`` right after, which raises the very same error). Note: the
``config.yaml`` refusal of ``_stored_plan`` is tested on ``_stored_plan`` itself; through ``resumed_plan`` the
``_check_bench_dir`` check refuses such a folder first, with its own message. Left surviving: the ``select_groups``
test on dotted ``--set`` keys (``(given | set(dotted)) & group`` -> ``given & group``), which no suite reaches (no
group holds a section field). ``sigmoid_domain_classifier`` and ``dead_domain_classifier`` need SKADA with skorch,
not installed here (``tests/test_skada_compare.py`` covers them where they are)."""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from helpers import store_plan

import transferkit.bench as bench
from transferkit.bench import (
    Plan,
    _check_same_plan,
    _clear_start_files,
    _entries,
    _resumed_selection,
    _stored_plan,
    as_list,
    as_pairs,
    make_plan,
    path_part,
    plan_yaml,
    resumed_plan,
    run_benchmark,
)
from transferkit.errors import TransferkitError

ROW = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


@dataclass
class ToyPlan(Plan):
    """A plan with a selection field (``seeds``), a budget (``steps``) and a plain dict field (``opts``)."""

    selects: ClassVar[tuple[str, ...]] = ("seeds",)
    seeds: list = field(default_factory=lambda: [0])
    steps: int = 5
    opts: dict = field(default_factory=dict)

    def budget(self) -> str:
        return f"{self.steps} steps"


def toy_plan(quick: bool) -> ToyPlan:
    return ToyPlan(quick=quick, steps=2 if quick else 9)


@pytest.fixture
def toy(bench_sandbox):
    """Benchmarks ``toy`` and ``toy2`` (one plan type, as uda and uda_tune) in a copy of the registry; the suite
    records the plan and the directory's entries it found, then raises ``state["raise"]`` or returns one row."""
    state = {"seen": [], "raise": None}

    def suite(plan, bench_dir, log):
        state["seen"].append((plan, _entries(bench_dir)))
        if state["raise"] is not None:
            raise state["raise"]
        return [dict(ROW)]
    bench.benchmark("toy", "a toy suite", plan=toy_plan)(suite)
    bench.benchmark("toy2", "another toy suite of the same plan type", plan=toy_plan)(suite)
    return state


# --- as_list, _strict_int, path_part, as_pairs ------------------------------------------------------------------


def test_as_list_skips_blank_items_of_a_comma_separated_string():
    # kills: the `if v.strip()` filter dropped (a trailing comma or ", ," became a bad value '')
    assert as_list("3, ,4,", int, "seeds") == [3, 4]
    assert as_list(" a , b ", str, "targets") == ["a", "b"]


def test_as_list_names_a_value_that_is_no_number_at_all():
    # kills: `except (TypeError, ValueError)` -> `except ValueError` (int([1]) raised a bare TypeError)
    with pytest.raises(TransferkitError, match=r"seeds: bad value \[\[1\]\]"):
        as_list([[1]], int, "seeds")


@pytest.mark.parametrize("value", [True, 1.5])
def test_as_list_of_ints_refuses_a_bool_or_a_fraction_and_takes_a_whole_float(value):
    # kills: _strict_int's bool check dropped (True was seed 1); its float check dropped (1.5 was seed 1)
    with pytest.raises(TransferkitError, match="not a whole number"):
        as_list([value], int, "seeds")
    assert as_list([2.0, 3], int, "seeds") == [2, 3]


def test_a_backslash_of_a_spec_becomes_an_underscore_and_a_hash():
    # kills: the backslash dropped from _NAME_CHARS (a Windows path's separator kept in a folder name)
    name = path_part("mnist", "npz:a\\x.npz")
    assert "\\" not in name and name.startswith("mnist-npz_a_x.npz-")
    assert path_part("a\\b") != "a\\b" and path_part("a\\b").startswith("a_b-")


@pytest.mark.parametrize("value, words", [
    ([("mnist", "digits", "mnist+blur")], "pairs must be source:target items"),  # kills: len(p) == 2 -> >= 2
    ([("mnist", "")], "pairs must be source:target items"),  # kills: the `and n` (empty name) check dropped
    ([("mnist", "digits"), ("mnist", "digits")], "a pair is given more than once"),  # kills: repeat check dropped
])
def test_as_pairs_refuses_three_names_an_empty_name_and_a_repeated_pair(value, words):
    with pytest.raises(TransferkitError, match=words):
        as_pairs(value)


# --- make_plan, plan_yaml ----------------------------------------------------------------------------------------


def test_set_quick_is_refused_even_written_with_spaces(toy):
    # kills: the `.strip()` of the key dropped (`--set ' quick = true'` turned a full run into a quick one)
    with pytest.raises(TransferkitError, match="use --quick, not --set quick"):
        make_plan("toy", False, [" quick = true"])
    assert make_plan("toy", False, ["steps=3"]).steps == 3


def test_plan_yaml_adds_a_budget_comment_only_for_a_plan_that_has_one_and_a_read_only_note_only_where_fixed():
    # kills: the `if not plan.budget(): return text` branch dropped; `"" if plan.budget_fields` inverted
    assert plan_yaml(Plan()) == "quick: false\n"
    text = plan_yaml(toy_plan(True))
    assert text.endswith("steps: 2\nopts: {}\n# budget: 2 steps\n") and "--quick" not in text


# --- _stored_plan, _check_same_plan ------------------------------------------------------------------------------


@pytest.mark.parametrize("results", [{"config": [1]}, {"config": {"benchmark": "toy"}}, {"rows": []}])
def test_results_without_a_plan_are_no_benchmark_directory(tmp_path, results):
    # kills: results_config's `isinstance(config, dict)` -> `config or {}` (a list config crashed with an
    # AttributeError); the "holds results but no benchmark plan" check dropped
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(TransferkitError, match="holds results but no benchmark plan"):
        _stored_plan(tmp_path)


def test_a_run_directory_without_results_is_no_benchmark_directory(tmp_path):
    # kills: the config.yaml check dropped (a `transferkit run` directory was taken for a new benchmark)
    assert _stored_plan(tmp_path) == (None, None)
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(TransferkitError, match="is a `transferkit run` directory, not a benchmark directory"):
        _stored_plan(tmp_path)


def test_a_plan_json_that_holds_no_object_is_refused_like_an_unreadable_one(tmp_path, toy):
    # a real bug the pass found (fixed): _stored_plan took a non-dict plan.json for no plan, as in a new directory
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "a.json").write_text(json.dumps(ROW))
    for text in ("[]", "null", '"plan"'):
        (tmp_path / "plan.json").write_text(text)
        with pytest.raises(TransferkitError, match=r"plan\.json is not a benchmark plan \(not a mapping\): write "
                                                   r"plan\.json back"):
            resumed_plan("toy", True, [], tmp_path)


def test_the_owner_of_a_plan_json_without_one_comes_from_results_json(tmp_path, toy):
    # kills: the owner read from `{}` instead of results_config() when plan.json names none
    store_plan(tmp_path, toy_plan(True), owner=None)
    (tmp_path / "results.json").write_text(json.dumps({"config": {"benchmark": "toy2"}}))
    stored, owner = _stored_plan(tmp_path)
    assert owner == "toy2" and stored == dataclasses.asdict(toy_plan(True))
    with pytest.raises(TransferkitError, match="holds a run of the toy2 benchmark, not of toy"):
        _check_same_plan(tmp_path, toy_plan(True), "toy")


def test_the_benchmark_name_is_checked_only_where_both_are_known(tmp_path, toy):
    # kills: `name is None or` dropped (an owned directory checked without a name was refused); `owner is None or`
    # dropped (a directory whose plan names no benchmark was refused for every name)
    store_plan(tmp_path / "owned", toy_plan(True))
    _check_same_plan(tmp_path / "owned", toy_plan(True))
    store_plan(tmp_path / "unowned", toy_plan(True), owner=None)
    _check_same_plan(tmp_path / "unowned", toy_plan(True), "toy")
    assert resumed_plan("toy", False, [], tmp_path / "unowned") == toy_plan(True)


def test_an_unowned_plan_of_no_benchmark_s_fields_names_no_benchmark(tmp_path, toy):
    # kills: the owner search's field match `==` -> `>=` (a plan of a subset of toy's fields was said to be toy's)
    (tmp_path / "plan.json").write_text(json.dumps({"quick": True, "steps": 2}))
    with pytest.raises(TransferkitError, match=r"holds a run of another benchmark \(or an older version of this "
                                               r"one\): its plan has the fields quick, steps"):
        _check_same_plan(tmp_path, toy_plan(True))


# --- _resumed_selection ------------------------------------------------------------------------------------------


def test_quick_on_the_resume_of_a_full_run_is_refused_not_dropped(tmp_path, toy):
    # kills: `given = {"quick"} if plan.quick` -> `set()` (--quick on a full run's resume silently ran it in full)
    store_plan(tmp_path, toy_plan(False))
    with pytest.raises(TransferkitError, match="quick: False there, True now"):
        resumed_plan("toy", True, [], tmp_path)
    assert not resumed_plan("toy", False, [], tmp_path).quick


def test_a_set_key_of_a_plain_dict_field_is_the_given_one_and_then_compared(tmp_path, toy):
    # kills: `keep.pop(top, None)` dropped for a dotted --set of a field that is no dataclass (the stored dict was
    # kept and the changed budget ran unnoticed)
    store_plan(tmp_path, toy_plan(True))
    with pytest.raises(TransferkitError, match=r"opts.lr: None there, 0.5 now"):
        resumed_plan("toy", False, ["opts.lr=0.5"], tmp_path)


def test_another_benchmark_s_directory_of_the_same_plan_type_is_not_taken_as_this_one_s(tmp_path, toy):
    # kills: `owner not in (None, name)` dropped from _resumed_selection (toy2's plan was resumed as toy's)
    store_plan(tmp_path, toy_plan(True), owner="toy2")
    assert _resumed_selection("toy", False, tmp_path, []) == toy_plan(False)
    with pytest.raises(TransferkitError, match="holds a run of the toy2 benchmark, not of toy"):
        resumed_plan("toy", False, [], tmp_path)


# --- _entries, _clear_start_files --------------------------------------------------------------------------------


def test_entries_name_a_lock_s_temporary_file_as_the_lock(tmp_path):
    # kills: the `.lock.` -> `.lock` mapping dropped
    assert _entries(tmp_path / "missing") == set()
    (tmp_path / ".lock.99").write_text("")
    (tmp_path / "jobs").mkdir()
    assert _entries(tmp_path) == {".lock", "jobs"}


def test_clear_start_files_removes_only_its_own_files_and_empty_new_folders(tmp_path):
    # kills: `p.name.endswith(".tmp")` dropped; the `not in before` filter dropped
    (tmp_path / "kept.txt").write_text("")
    before = _entries(tmp_path)
    for name in ("plan.json", "kernels.json", ".plan.json.x1.tmp"):
        (tmp_path / name).write_text("")
    (tmp_path / "jobs").mkdir()
    assert _clear_start_files(tmp_path, before) and _entries(tmp_path) == {"kept.txt"}  # what was there stays
    (tmp_path / ".plan.json.notes").write_text("")  # another file, though named alike: work kept
    assert not _clear_start_files(tmp_path, before) and (tmp_path / ".plan.json.notes").exists()


# --- run_benchmark ---------------------------------------------------------------------------------------------


def test_a_quick_run_gets_a_quick_folder_and_logs_the_full_run_s_budget_and_its_overrides(tmp_path, toy):
    # kills: the `-quick` of the folder tag dropped; the budget line given the quick plan as the full one; the
    # "plan: ..." line of the --set overrides dropped; plan.json written without the benchmark's name
    lines = []
    bench_dir, rows = run_benchmark("toy", quick=True, out_dir=str(tmp_path), log=lines.append, overrides=["steps=3"])
    assert bench_dir.parent == tmp_path / "bench-toy-quick" and rows == [ROW]
    assert any("Quick run (--quick): 3 steps. The docs' tables are of the full run (9 steps)" in str(x) for x in lines)
    assert "plan: steps=3" in lines
    assert json.loads((bench_dir / "results.json").read_text())["config"]["quick"] is True
    assert json.loads((bench_dir / "plan.json").read_text()) == {"benchmark": "toy", "quick": True, "seeds": [0],
                                                                 "steps": 3, "opts": {}}


def test_a_run_directory_that_cannot_be_made_is_named_as_the_resume_given(tmp_path, toy):
    # kills: the error's `--resume DIR` prefix replaced by `--out OUT` whatever was given
    (tmp_path / "file").write_text("x")
    with pytest.raises(TransferkitError, match=r"^--resume .*sub: cannot make the run directory .*file is a file"):
        run_benchmark("toy", run_dir=tmp_path / "file" / "sub", log=lambda *a: None)
    assert toy["seen"] == []


def test_a_resumed_quick_run_stays_quick_and_its_stale_results_are_removed_first(tmp_path, toy):
    # kills: `quick = plan.quick` dropped (a resumed quick run was recorded and logged as a full one); the stale
    # results files left in place (or results.json alone removed) while the suite runs
    store_plan(tmp_path, toy_plan(True))
    (tmp_path / "results.json").write_text(json.dumps({"config": {"benchmark": "toy"}}))
    (tmp_path / "results.md").write_text("old")
    lines = []
    run_benchmark("toy", run_dir=tmp_path, log=lines.append)
    plan, entries = toy["seen"][0]
    assert plan.quick and not entries & {"results.json", "results.md"}
    assert json.loads((tmp_path / "results.json").read_text())["config"]["quick"] is True
    assert any(str(x).startswith("benchmark toy (quick): a toy suite") for x in lines)


def test_a_new_run_directory_is_named_and_removed_when_the_run_stops_before_any_work(tmp_path, toy):
    # kills: the "does not exist; starting a new benchmark there" note dropped; kernels.json left out of the start
    # files; `fresh` computed without discounting the lock (start files kept, so the folder stayed)
    toy["raise"] = KeyboardInterrupt()
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("toy", run_dir=tmp_path / "new", log=lines.append)
    assert any(f"note: {tmp_path / 'new'} does not exist; starting a new benchmark there" in str(x) for x in lines)
    assert toy["seen"][0][1] >= {"plan.json", "kernels.json"} and not (tmp_path / "new").exists()


def test_a_stopped_run_keeps_a_folder_it_did_not_make_and_the_records_of_a_resumed_one(tmp_path, toy):
    # kills: `if is_main_process() and not existed` -> `if is_main_process()` (an empty folder the user made was
    # removed); `if not parent_existed` dropped (an empty out_dir/bench-NAME of before was removed); `if fresh` ->
    # `if True` (a stopped resume removed the kernels record it wrote)
    toy["raise"] = KeyboardInterrupt()
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("toy", run_dir=given, log=lambda *a: None)
    assert given.is_dir() and _entries(given) == set()  # kept, and empty again
    (tmp_path / "out" / "bench-toy").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("toy", out_dir=str(tmp_path / "out"), log=lambda *a: None)
    assert (tmp_path / "out" / "bench-toy").is_dir() and not any((tmp_path / "out" / "bench-toy").iterdir())
    resumed = tmp_path / "resumed"
    store_plan(resumed, toy_plan(False))
    (resumed / "jobs").mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("toy", run_dir=resumed, log=lambda *a: None)
    assert _entries(resumed) == {"plan.json", "jobs", "kernels.json"}
