"""Tests from a third mutation pass over the benchmark runner (``bench/__init__.py``), the flex benchmark
(``bench/flex.py``) and the demo benchmark (``bench/demo.py``), after ``test_bench_core_mutation``,
``test_bench_core_flex_second_mutation``, ``test_bench_tables_mutation`` and ``test_bench_plans_mutation``: flex's
source network (fixed initial weights whatever the random state, its record naming the source), ``run_job`` (seeded
by its seed, faster_flex's one-epoch surgery config reaching the engine), ``target_splits``' test cap,
``check_validation_split`` of a target whose name holds glob brackets, ``flex_suite``'s source log line, its
validation-split check and a syndigits source's label, the per-unit figure of a file target, the flex tables on
cells that lack rows (``table3`` at a ratio a target did not run, ``selection_table`` without baselines on flex's
seeds, ``image_table`` of a target without ``flex+img``); ``path_part``'s hash length, ``as_pairs`` of a string with
blanks, ``_clear_start_files`` on a missing directory, a stored plan value of another form named as the directory's
other plan, the work directory recorded before the lazy imports; and the quick demo's evaluation intervals. Data,
networks and job work are faked (the fixtures of ``test_bench_core_flex_second_mutation``) except two-step fits on
toy images. Each test fails when the code its comment names is changed in the way the comment says.

Judged equivalent, so not tested: ``flex_suite``'s ``pretrained.eval()`` before the base accuracy dropped (lenet has
no dropout or batch norm: train and eval mode compute the same); ``table3``'s bold rule ``>= best - TIE`` -> ``>
best - TIE`` (differs only for a mean exactly ``TIE`` below the best); ``earlier_tie_accuracy``'s ``next(... ==
max)`` -> ``max(accs, key=accs.get)`` (both take the first maximal candidate); ``config_budget``'s ``k = {cfg.k}``
-> ``k = 5`` (the demo is its only caller, and its k is 5); ``flex_suite``'s shared AP@10 ``gallery`` -> ``None``
(``retrieval_map`` then embeds the same source validation images itself: the same numbers, only slower). Killed
elsewhere, so not tested here: ``_check_bench_dir``'s ``.lock`` allowance (``tests/test_cli.py``), ``_pair``'s
``npz`` prefix (``tests/test_bench_uda.py``), ``make_plan``'s unknown name (``tests/test_cli.py``). Not tried: the
``torchrun`` branches of ``run_benchmark`` (``world_size() > 1``, a rank other than 0).

Left surviving: none of the mutants tried."""

import hashlib
import json

import pytest
import torch
from helpers import seeded_lenet, store_plan, toy_split
from test_bench_core_flex_second_mutation import _rows, fake_flex, sec_plan, toy  # noqa: F401 (fake_flex, toy: fixtures)

import transferkit.bench as bench
import transferkit.bench.flex as flex
from transferkit.bench import make_plan, path_part, run_benchmark
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError

# --- flex: the source network and run_job -------------------------------------------------------------------------


def _colour_source():
    """A 3-channel toy source split (flex's networks take colour images) of 60 images in 10 classes."""
    from transferkit.domain import Domain
    from transferkit.splits import split_domain
    g = torch.Generator().manual_seed(0)
    d = Domain("toy3", torch.rand(60, 3, 28, 28, generator=g), torch.arange(60) % 10, [str(i) for i in range(10)])
    return split_domain(d)


def test_the_source_network_starts_from_fixed_weights_and_its_record_names_its_source(tmp_path):
    # kills: source_network's `torch.manual_seed(0)` dropped (the network's initial weights, hence every job's
    # numbers, depended on the process's random state); the `"source": label` of the record dropped (a resume could
    # not tell which source the stored network was trained on)
    source, cfg = _colour_source(), TrainConfig(steps=2, batch_size=8, progress=False)
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # another random state before each pre-training
        net, info = flex.source_network(tmp_path / str(seed), source, cfg, lambda *a: None, label="syndigits/half")
        nets.append(net)
        assert info["source"] == "syndigits/half" and info["steps"] == 2
        assert json.loads((tmp_path / str(seed) / "source.json").read_text())["source"] == "syndigits/half"
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))


def test_run_job_is_seeded_by_its_seed_and_gives_faster_flex_its_one_epoch_surgery():
    # kills: run_job's `torch.manual_seed(seed)` dropped (linear_probe's new head, drawn when the method is made,
    # depended on the process's random state: a job's numbers on resume or in a worker differed); the engine factory
    # ignoring a stage's own config (`Engine(config or cfg)` -> `Engine(cfg)`: faster_flex's one-epoch surgery ran the
    # whole budget)
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=1, progress=False)
    split, gallery_domain = toy_split(0, sizes=(26, 8, 12)), toy_split(5, sizes=(8, 1, 1)).train
    net, rows = seeded_lenet(), []  # (seeded_lenet sets the random state itself)
    for state in (1, 2):
        torch.manual_seed(state)
        rows.append(flex.run_job("linear_probe", net, split, gallery_domain, 2, 0, cfg, {}))
    assert [(r["accuracy"], r["val_accuracy"], r["ap10"]) for r in rows] == \
        [(r["accuracy"], r["val_accuracy"], r["ap10"]) for r in rows[::-1]]
    row = flex.run_job("faster_flex", net, split, gallery_domain, 2, 0, cfg, {})
    assert row["n_labeled"] == 8 and row["surgery_steps"] == 2  # one epoch: 8 labelled images in batches of 4


def test_target_splits_cap_the_test_split_per_class(monkeypatch):
    # kills: target_splits' subsample of the test split to TEST_PER_CLASS dropped (every target's test split grew
    # with its domain, and the tables' test sets were not the documented ones)
    from helpers import toy_domain
    monkeypatch.setattr(flex, "load_domain", lambda *a, **k: toy_domain(3600, seed=0))
    s = flex.target_splits("digits", torch.arange(10))
    assert len(s.test) == 4 * flex.TEST_PER_CLASS and s.test.class_counts().tolist() == [flex.TEST_PER_CLASS] * 4


def test_the_validation_split_check_finds_the_jobs_of_a_target_whose_name_has_glob_brackets(tmp_path):
    # kills: check_validation_split's glob.escape dropped (a folder target named `[x]` matched no job file of its
    # own, so a resume with another validation split was not refused)
    target = "folder:d/[x]"
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / f"{path_part(target)}-r30-s0-flex.json").write_text(json.dumps({"n_val": 5}))
    with pytest.raises(TransferkitError, match="validated on 5 images"):
        flex.check_validation_split(tmp_path, target, 3)


def test_the_per_unit_figure_of_a_file_target_is_named_by_path_part(tmp_path, monkeypatch):
    # kills: write_reports' `per_unit_{path_part(t)}.png` -> `per_unit_{t}.png` (the `/` of an npz target's path
    # made the figure's path a folder that does not exist)
    import transferkit.plots as plots
    seen = []
    monkeypatch.setattr(plots, "per_unit_accuracy_plot", lambda rows, path, title: seen.append(path))
    monkeypatch.setattr(plots, "units_picked_plot", lambda rows, targets, path: None)
    t = "npz:a/x.npz"
    rows = _rows(target=t, source="mnist/half", ap10=0.4, picked="fc1",
                 candidate_val_accuracy={"*": {"fc1": 0.9}}, candidate_test_accuracy={"*": {"fc1": 0.5}})
    flex.write_reports(tmp_path, rows, {t: 0.5})
    assert seen == [tmp_path / f"per_unit_{path_part(t)}.png"]


# --- flex_suite, with its data, source network and job work faked (fake_flex) -------------------------------------


def test_flex_suite_logs_its_source_network_and_refuses_jobs_of_another_validation_split(
        tmp_path, fake_flex):  # noqa: F811
    # kills: the log line of the source network's validation accuracy dropped; flex_suite's check_validation_split
    # call dropped (a resume with another val_fraction mixed jobs selected on two validation splits of one target)
    lines = []
    flex.flex_suite(make_plan("flex", True, ["targets=mnistm"]), tmp_path / "ok", lines.append)
    assert "source network: val accuracy 90.0% on mnist/half" in lines
    fake_flex["jobs"].clear()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "mnistm-r30-s0-flex.json").write_text(json.dumps({"n_val": 5}))
    with pytest.raises(TransferkitError, match="validated on 5 images.*mnistm validation split has 3"):
        flex.flex_suite(make_plan("flex", True, ["targets=mnistm"]), tmp_path, lambda *a: None)
    assert fake_flex["jobs"] == []


def test_flex_suite_labels_the_rows_of_a_syndigits_source_with_that_source(tmp_path, fake_flex):  # noqa: F811
    # kills: flex_suite's `label = f"{p.source}/half"` fixed to "mnist/half" (a syndigits directory's rows and
    # source network were recorded as mnist's)
    lines = []
    flex.flex_suite(make_plan("flex", True, ["source=syndigits", "targets=mnist"]), tmp_path, lines.append)
    row = json.loads((tmp_path / "jobs" / "mnist-r30-s0-flex.json").read_text())
    assert row["source"] == "syndigits/half" and "source network: val accuracy 90.0% on syndigits/half" in lines


# --- flex's tables, on hand-made rows (_rows) -----------------------------------------------------------------------


def test_table3_of_a_ratio_leaves_out_a_target_that_has_rows_at_other_ratios_only():
    # kills: table3's targets taken as every target of `base` (a target run at ratio 3 only crashed the ratio-30
    # table: no method's mean to take the best of)
    rows = _rows(target="t", ratio=30) + _rows(target="u", ratio=3)
    text = flex.table3(rows, {"t": 0.5, "u": 0.25}, 30)
    assert "| t (50.0) |" in text and "| u " not in text


def test_selection_table_has_no_line_for_flex_rows_without_any_baseline_on_their_seeds():
    # kills: selection_table's `or not refs` skip dropped (flex rows of a cell where no ft_fc1, ft_fc2 or ft_all job
    # ran on flex's seeds crashed on the max of no baseline)
    rows = [{**r, "picked": "fc1", "selection": {"margin": 0.02, "se": 0.01}} for r in _rows(methods=("flex",))]
    rows += _rows(seeds=(2,), methods=("ft_fc1", "ft_fc2", "ft_all"))  # baselines of another label subset only
    text = flex.selection_table(rows, {"t": 0.5}, [30])
    assert text.rstrip().endswith("|---|---|---|---|---|---|")


def test_image_table_has_no_line_for_a_target_that_did_not_run_flex_img():
    # kills: image_table's `if not img: continue` skip dropped (a target outside image_targets got a line of
    # empty cells, or crashed, in image_units.md)
    cand = {"candidate_test_accuracy": {k: 0.5 for k in ("image:colour", "image:stn", "image:unet")}}
    rows = _rows(methods=("flex", "flex+img"), picked="image:stn", **{k: {"*": v} for k, v in cand.items()})
    rows += _rows(target="u", methods=("flex",))
    text = flex.image_table(rows, {"t": 0.5, "u": 0.5}, [30])
    assert "| t | 30 |" in text and "image:stn x2" in text and "| u |" not in text


# --- bench/__init__.py ------------------------------------------------------------------------------------------------


def test_a_spec_that_is_no_name_gets_the_first_eight_hex_digits_of_its_hash():
    # kills: the hash of path_part cut to another length (the job folders of a benchmark directory made before
    # were not found again on resume)
    text = "mnist-npz:a/x.npz"
    assert path_part("mnist", "npz:a/x.npz") == "mnist-npz_a_x.npz-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def test_as_pairs_of_a_comma_separated_string_skips_blanks_around_its_items():
    # kills: as_pairs splitting a string on commas itself instead of as_list (a space after a comma became part of
    # the source's name, and a trailing comma an empty pair)
    assert bench.as_pairs("mnist:digits, digits:mnist,") == (("mnist", "digits"), ("digits", "mnist"))


def test_clear_start_files_never_raises_even_when_the_directory_is_gone(tmp_path):
    # kills: `except OSError` -> another exception (an error while clearing hid the error that stopped the run)
    assert bench._clear_start_files(tmp_path / "gone", set()) is False


def test_a_benchmark_stopped_while_it_loads_its_imports_names_its_directory(tmp_path, toy, monkeypatch):  # noqa: F811
    # kills: run_benchmark's note_work_dir(bench_dir) dropped (a resumed benchmark stopped during the seconds of
    # preload_lazy_imports, before holding_work_dir, named no directory to --resume)
    from transferkit import runtime

    def stopped():
        raise KeyboardInterrupt
    store_plan(tmp_path, sec_plan(True))
    monkeypatch.setattr(bench, "preload_lazy_imports", stopped)
    runtime.note_work_dir(None)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("toy", run_dir=tmp_path, log=lambda *a: None)
    assert runtime.work_dir() == tmp_path


def test_a_stored_plan_value_of_another_form_is_named_as_the_directory_s_other_plan(tmp_path, toy):  # noqa: F811
    # kills: _resumed_selection's fallback narrowed to `except TypeError` (a plan.json holding `steps: "x"` gave a
    # bare "config steps must be int" that named neither the directory nor that its plan differs)
    store_plan(tmp_path, sec_plan(True))
    stored = json.loads((tmp_path / "plan.json").read_text())
    (tmp_path / "plan.json").write_text(json.dumps({**stored, "steps": "x"}))
    with pytest.raises(TransferkitError, match=r"was run with another plan: .*steps: 'x' there, 9 now"):
        bench.resumed_plan("toy", False, [], tmp_path)


# --- bench/demo.py ----------------------------------------------------------------------------------------------


def test_the_quick_demo_evaluates_more_often_than_the_full_one():
    # kills: demo_config's quick eval_every of pre-training (50) or training (20) replaced by the full run's
    from transferkit.bench.demo import demo_config
    quick, full = demo_config(True), demo_config(False)
    assert (quick.pretrain.eval_every, quick.train.eval_every) == (50, 20)
    assert (full.pretrain.eval_every, full.train.eval_every) == (100, 25)
