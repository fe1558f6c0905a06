"""The flex benchmark's plan (sources, targets, seeds; ``--set`` overrides) and reports."""

import json

import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.bench import flex, make_plan
from transferkit.bench.flex import SYN_TARGETS, TARGETS, plan
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.retrieval import embed


def test_plan_defaults_follow_seed_002_and_set_overrides_them():
    p = plan(quick=False)
    assert p.source == "mnist" and p.target_names() == TARGETS
    assert {r: p.n_seeds(r) for r in p.ratios} == {3: 20, 30: 3, 300: 3}  # 20 repeats at the smallest ratio
    assert (p.val_fraction, p.val_per_class) == (0.15, 50)
    p = make_plan("flex", False, ["val_fraction=0.35", "val_per_class=100", "ratios=30", "seeds=5",
                                  "train.steps=40", "targets=mnistm,digits"])
    assert (p.val_fraction, p.val_per_class, p.ratios, p.n_seeds(30), p.train.steps) == (0.35, 100, [30], 5, 40)
    assert p.target_names() == ["mnistm", "digits"] and p.train.batch_size == 32  # the rest is kept
    with pytest.raises(TransferkitError, match="ratioz.*known: .*ratios"):
        make_plan("flex", False, ["ratioz=3"])
    with pytest.raises(TransferkitError, match="ratios"):
        make_plan("flex", False, ["ratios=3,thirty"])
    with pytest.raises(TransferkitError, match="targets: none given; use targets=all"):  # not "every target"
        make_plan("flex", False, ["targets="])
    assert make_plan("flex", False, ["targets=all"]).target_names() == TARGETS


def test_larger_validation_split_takes_images_from_train_and_keeps_test():
    from transferkit.bench.flex import mnist_halves, target_splits

    _, half = mnist_halves()
    small, large = target_splits("mnist+blur", half), target_splits("mnist+blur", half, val_fraction=0.35,
                                                                     val_per_class=100)
    assert torch.equal(small.test.images, large.test.images) and torch.equal(small.test.labels, large.test.labels)
    assert len(large.val) > 2 * len(small.val)
    assert len(large.train) + len(large.val) == len(small.train) + len(small.val)
    rows = {tuple(r.tolist()) for r in large.val.images.flatten(1)[:, ::7]}
    assert all(tuple(r.tolist()) in rows for r in small.val.images.flatten(1)[:, ::7])  # the old val is kept


def test_a_target_spelt_otherwise_still_leaves_out_the_source_half():
    from transferkit.bench.flex import mnist_halves, target_splits

    _, half = mnist_halves()
    a, b = target_splits("mnist+blur", half), target_splits("MNIST +blur", half)
    assert torch.equal(a.test.images, b.test.images) and len(a.train) == len(b.train)
    with pytest.raises(TransferkitError, match="single images, not @grouped"):
        target_splits("mnist+blur@grouped2", half)


def test_plan_second_source_and_bad_source():
    p = make_plan("flex", False, ["source=syndigits"])
    assert p.source == "syndigits" and p.target_names() == SYN_TARGETS
    assert not any(t.startswith("mnist+") for t in p.target_names())
    with pytest.raises(TransferkitError, match="flex source must be one of"):
        make_plan("flex", False, ["source=svhn"])


def _rows():
    from transferkit.bench.flex import METHODS

    rows = []
    for seed in (0, 1):
        for m in METHODS:
            row = {"source": "s", "target": "t", "setting": "ratio=30", "ratio": 30, "seed": seed, "method": m,
                   "steps": 10,
                   "accuracy": {"ft_all": 0.95, "flex": 0.95}.get(m, 0.9),
                   "wall_s": {"faster_flex": 3.0, "ft_fc1": 1.0, "ft_fc2": 2.0}.get(m, 5.0)}
            if m == "flex":  # a tie on validation, broken by the loss towards `all`
                row.update(candidate_val_accuracy={"conv1": 0.9, "all": 0.9},
                           candidate_test_accuracy={"conv1": 0.8, "all": 0.95})
            rows.append(row)
    return rows


def test_wins_counts_flex_against_the_baselines_under_both_tie_rules():
    from transferkit.bench.flex import wins

    text = wins(_rows(), {"t": 0.5}, [30])
    assert "flex >= max(ft_fc1, ft_fc2, ft_all) (means): 1 / 1" in text
    assert "earlier candidate instead of the lower validation loss (means): 0 / 1" in text
    # within one *paired* standard error: flex - ft_all per seed is -0.02 and +0.00 (mean -0.01, SE 0.01)
    rows = _rows()
    for r in rows:
        if r["method"] == "flex":
            r["accuracy"] = {0: 0.93, 1: 0.95}[r["seed"]]
    assert "of max(ft_fc1, ft_fc2, ft_all): 1 / 1" in wins(rows, {"t": 0.5}, [30])
    for r in rows:
        if r["method"] == "ft_all":
            r["accuracy"] = {0: 0.96, 1: 0.96}[r["seed"]]  # -0.03 and -0.01: mean -0.02, SE 0.01
    assert "of max(ft_fc1, ft_fc2, ft_all): 0 / 1" in wins(rows, {"t": 0.5}, [30])


def test_wins_counts_an_old_float32_row_as_a_tie_with_an_exact_row_of_the_same_count():
    from transferkit.bench.flex import wins

    rows = _rows()  # flex ties ft_all at 95 of 100: flex's rows are old (float32 means), ft_all's exact
    for r in rows:
        if r["method"] == "flex":
            r["accuracy"] = 0.949999988079071  # below 0.95, within the 1e-6 tie tolerance
    text = wins(rows, {"t": 0.5}, [30])
    assert "flex >= max(ft_fc1, ft_fc2, ft_all) (means): 1 / 1" in text
    assert "of max(ft_fc1, ft_fc2, ft_all): 1 / 1" in text
    assert "| flex | 1 |" in text and "| ft_all | 1 |" in text


def test_wall_table_reports_faster_flex_over_ft_fc_per_target():
    from transferkit.bench.flex import wall_table

    text = wall_table(_rows(), [30])
    assert "| 30 | t | 3.00 | 1.50 |" in text
    assert "| 30 | **targets below 2x** | 0 / 1 | 1 / 1 |" in text


def test_selection_table_counts_clear_picks_and_skips_rows_without_the_record():
    from transferkit.bench.flex import selection_table

    rows = _rows()
    flex = [r for r in rows if r["method"] == "flex"]
    flex[0].update(picked="all", selection={"runner_up": "conv1", "margin": 0.02, "se": 0.01})  # clear
    flex[1].update(picked="conv1", selection={"runner_up": "all", "margin": 0.0, "se": 0.005})  # a tie
    text = selection_table(rows, {"t": 0.5}, [30])
    assert "| 30 | t | all×1, conv1×1 | 1 / 2 | 1.0 ± 1.0 | +0.0 |" in text
    del flex[1]["selection"]  # a seed from before the record, 20 points lower: left out of the gap too
    flex[1]["accuracy"] = 0.75
    assert "| 30 | t | all×1 | 1 / 1 | 2.0 | +0.0 |" in selection_table(rows, {"t": 0.5}, [30])
    del flex[0]["selection"]
    assert "| 30 | t |" not in selection_table(rows, {"t": 0.5}, [30])


def test_equal_counts_of_correct_images_tie_despite_float32_rounding():
    import torch

    from transferkit.bench.flex import wins
    rows = _rows()
    n = 626  # accuracies are stored as float32 fractions: 2979 / 3130 by two routes differs by ~1e-8
    a = [float(torch.tensor(c / n, dtype=torch.float32)) for c in (601, 592, 597, 594, 595)]
    b = [float(torch.tensor(c / n, dtype=torch.float32)) for c in (596, 597, 594, 597, 595)]
    assert sum(a) != sum(b) and abs(sum(a) - sum(b)) < 1e-6 and sum(round(x * n) for x in a) == 2979
    rows = [r for r in rows if r["seed"] == 0]
    cells = []
    for m, accs in (("flex", a), ("fast_flex", b)):
        proto = next(r for r in rows if r["method"] == m)
        cells += [{**proto, "seed": s, "accuracy": acc} for s, acc in enumerate(accs)]
    rows = [r for r in rows if r["method"] not in ("flex", "fast_flex")] + cells
    text = wins(rows, {"t": 0.5}, [30])
    assert "| flex | 1 |" in text and "| fast_flex | 1 |" in text


def test_a_benchmark_directory_resumes_only_with_the_same_budgets(tmp_path):
    import dataclasses

    from transferkit.bench import _check_same_plan, make_plan, run_benchmark
    from transferkit.io import write_json
    write_json(tmp_path / "plan.json", dataclasses.asdict(make_plan("flex", True)))
    _check_same_plan(tmp_path, make_plan("flex", True, ["ratios=3", "seeds=2", "targets=mnist+blur"]))
    for changed, message in ((make_plan("flex", True, ["train.steps=40"]), "train.steps: 150 there, 40 now"),
                          (make_plan("flex", False), "quick: True there, False"),
                          (make_plan("flex", True, ["val_fraction=0.3"]), "val_fraction: 0.15 there, 0.3 now")):
        with pytest.raises(TransferkitError, match=message + ".*Only targets, ratios, seeds"):
            _check_same_plan(tmp_path, changed)
    with pytest.raises(TransferkitError, match="holds a run of the flex benchmark: its plan has the fields"):
        _check_same_plan(tmp_path, make_plan("uda", True))
    uda = tmp_path / "uda"  # uda and uda_tune share their plan type: plan.json names its benchmark
    write_json(uda / "plan.json", {"benchmark": "uda", **dataclasses.asdict(make_plan("uda", True))})
    _check_same_plan(uda, make_plan("uda", True), "uda")
    with pytest.raises(TransferkitError, match="holds a run of the uda benchmark, not of uda_tune"):
        _check_same_plan(uda, make_plan("uda_tune", True), "uda_tune")
    (uda / "plan.json").unlink()  # an older directory: the benchmark named in results.json
    uda_plan = dataclasses.asdict(make_plan("uda", True))
    write_json(uda / "results.json", {"config": {"benchmark": "uda", "plan": uda_plan}})
    with pytest.raises(TransferkitError, match="holds a run of the uda benchmark, not of uda_tune"):
        _check_same_plan(uda, make_plan("uda_tune", True), "uda_tune")
    (tmp_path / "plan.json").write_text('{"quick": tr')
    with pytest.raises(TransferkitError, match=r"benchmark plan .*plan.json is unreadable .*write plan\.json back"):
        _check_same_plan(tmp_path, make_plan("flex", True))
    with pytest.raises(TransferkitError, match="seeds: the list is empty, so no job would run"):
        make_plan("zeroshot", True, ["seeds="])
    (tmp_path / "file").write_text("x")
    with pytest.raises(TransferkitError, match="a file, not a benchmark directory"):
        run_benchmark("demo", run_dir=tmp_path / "file")
    with pytest.raises(TransferkitError, match=r"--out .*file: cannot make the run directory .*file is a file, not a "
                                               r"directory"):
        run_benchmark("demo", out_dir=str(tmp_path / "file"))


def test_a_misspelt_flex_target_fails_before_pre_training(tmp_path, monkeypatch):
    import transferkit.bench.flex as flex
    from transferkit.bench import run_benchmark
    monkeypatch.setattr(flex, "source_network", lambda *a, **k: pytest.fail("pre-trained first"))
    with pytest.raises(TransferkitError, match="unknown domain 'nosuch'"):
        make_plan("flex", True, ["targets=nosuch"])  # the plan itself (--print-plan) names it
    with pytest.raises(TransferkitError, match="unknown shift 'blurr'"):
        run_benchmark("flex", quick=True, run_dir=tmp_path / "b", log=lambda *a: None,
                      overrides=["targets=mnist+blurr"])
    with pytest.raises(TransferkitError, match="single images, not @grouped"):
        run_benchmark("flex", quick=True, run_dir=tmp_path / "c", log=lambda *a: None,
                      overrides=["targets=mnist+blur@grouped2"])


def test_reports_keep_only_label_subsets_every_method_finished_and_flag_mixed_invocations(tmp_path):
    import json

    from transferkit.bench.flex import complete_subsets, directory_reports, wall_table
    rows = _rows()
    partial_subset = [{**r, "seed": 2, "accuracy": 0.1} for r in rows if r["seed"] == 0 and r["method"] != "ft_all"]
    kept, left_out = complete_subsets(rows + partial_subset)
    assert kept == rows and left_out == 1  # seed 2 lacks ft_all: not in any cell
    image = [{**rows[0], "method": "flex+img"}]  # image flex finished on seed 0 only
    kept, left_out = complete_subsets(rows + image)
    assert {r["seed"] for r in kept} == {0} and left_out == 1
    other_ratio = [{**r, "ratio": 3} for r in rows]  # image flex never ran at ratio 3: those subsets stay
    kept, left_out = complete_subsets(rows + image + other_ratio)
    assert sum(r["ratio"] == 3 for r in kept) == len(other_ratio) and left_out == 1
    assert "several invocations" not in wall_table(rows, [30])
    mixed = [{**r, "invocation": f"run{r['seed']}", "workers": 2} for r in rows]
    assert "ratio 30: 2 invocations (run0, 2 worker(s), run1, 2 worker(s))" in wall_table(mixed, [30])
    assert "| 30 | t (mixed) |" in wall_table(mixed, [30]) and "(mixed) |" not in wall_table(rows, [30])
    (tmp_path / "jobs").mkdir()
    for i, r in enumerate(partial_subset):
        (tmp_path / "jobs" / f"{i}.json").write_text(json.dumps(r))
    logged = []
    with pytest.raises(TransferkitError, match="holds no label subset that every method finished"):
        directory_reports(tmp_path, logged.append)
    assert "1 label subset(s)" in logged[0]


def test_a_target_outside_the_built_in_lists_still_gets_its_table_rows(tmp_path):
    import json

    from transferkit.bench.flex import directory_reports
    (tmp_path / "jobs").mkdir()
    for i, r in enumerate(_rows()):  # target "t" is in no built-in list
        row = {**r, "source": "mnist/half", "base_accuracy": 0.5, "ap10": 0.5}
        (tmp_path / "jobs" / f"{i}.json").write_text(json.dumps(row))
    directory_reports(tmp_path, lambda *a: None)
    assert "| t (50.0) |" in (tmp_path / "table_ratio30.md").read_text()


def test_quick_suite_tables_say_they_are_quick_and_name_their_budget(tmp_path):
    import json

    from transferkit.bench.fewshot import fewshot_report
    from transferkit.bench.flex import directory_reports
    from transferkit.bench.represent import represent_tables
    from transferkit.bench.zeroshot import zeroshot_tables
    (tmp_path / "jobs").mkdir()
    for i, r in enumerate(_rows()):
        (tmp_path / "jobs" / f"{i}.json").write_text(json.dumps({**r, "source": "mnist/half", "base_accuracy": 0.5,
                                                                 "ap10": 0.5}))
    directory_reports(tmp_path, lambda *a: None, make_plan("flex", True))
    for name in ("table_ratio30.md", "wins.md", "wall.md", "retrieval.md"):
        assert (tmp_path / name).read_text().startswith(
            "Quick run (--quick): source pre-training up to 300 steps, each training up to 150 steps (early stopping, "
            "patience 3 evaluations every 15 steps; flex trains one per candidate (every unit and ft_all), fast_flex "
            "and faster_flex two (ft_all, faster_flex one epoch of it, then the picked unit)). The "
            "docs' tables are of the full run (source pre-training up to 1500 steps, each training up to 300 steps "
            "(early stopping, patience 4 evaluations every 20 steps; flex trains one per candidate (every unit and "
            "ft_all), fast_flex and faster_flex two (ft_all, faster_flex one epoch of it, then the picked unit))): "
            "these numbers are not comparable with them.\n\n"), name
    directory_reports(tmp_path, lambda *a: None, make_plan("flex", False))
    assert (tmp_path / "wall.md").read_text().startswith("Budget: source pre-training up to 1500 steps")
    fewshot = fewshot_report([], make_plan("fewshot", True))
    assert fewshot.startswith("# fewshot benchmark (quick)\nQuick run (--quick): pre-training up to 200 steps, "
                              "training 30 steps per label subset, 2 label subsets per k. The docs' tables are of the "
                              "full run (pre-training up to 800 steps, training 100 steps per label subset, 10 label "
                              "subsets per k)")
    assert fewshot_report([], make_plan("fewshot", False)).startswith("# fewshot benchmark\nBudget: pre-training up")
    zeroshot = zeroshot_tables([], make_plan("zeroshot", True)).splitlines()
    assert zeroshot[:3] == ["# zeroshot benchmark (quick)", "", "Quick run (--quick): up to 150 training steps per job "
                            "(early stopping on the seen classes' validation split), seeds 0. The docs' tables are of "
                            "the full run (up to 300 training steps per job (early stopping on the seen classes' "
                            "validation split), seeds 0, 1, 2): these numbers are not comparable with them."]
    represent = represent_tables([], make_plan("represent", True)).splitlines()
    assert represent[0] == "# represent benchmark (quick)" and "100 episodes per few-shot evaluation, seeds 0." in \
        represent[2] and "600 episodes" in represent[2]


def test_every_benchmark_method_predicts_with_its_net_so_one_test_pass_serves_accuracy_and_ap10():
    """run_job takes the test accuracy from the AP@10 embeddings (head of the embedding):
    true only for methods that predict with ``net`` (Method.forward), bit for bit."""
    from transferkit.methods.base import Method

    torch.manual_seed(0)
    x = torch.rand(40, flex.CHANNELS, 28, 28)
    for m in flex.METHODS + [flex.IMAGE_FLEX]:
        name, options = flex.VARIANTS.get(m, (m, {}))
        net = build_backbone(flex.BACKBONE, num_classes=10, in_channels=flex.CHANNELS, image_size=28)
        method = get_method(name)(net, **options)
        assert type(method).forward is Method.forward, m
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))  # ft_ss: scale and shift away from the identity
        method.eval()
        assert torch.equal(net.forward_units(embed(net, x), "embedding"), method(x)), m


def test_a_resume_keeps_the_directory_s_selection_with_its_groups_and_ignores_other_benchmarks(tmp_path):
    import dataclasses
    import json

    from transferkit.bench import _resumed_selection
    stored = {"benchmark": "flex", **dataclasses.asdict(
        make_plan("flex", False, ["targets=mnist+blur,mnistm", "image_targets=mnistm", "ratios=30"]))}
    (tmp_path / "plan.json").write_text(json.dumps(stored))
    default = make_plan("flex", False, [])
    kept = _resumed_selection("flex", False, tmp_path, [])
    assert (kept.targets, kept.image_targets, kept.ratios) == (["mnist+blur", "mnistm"], ["mnistm"], [30])
    other = _resumed_selection("flex", False, tmp_path, ["targets=digits"])
    assert (other.targets, other.image_targets, other.ratios) == (["digits"], [], [30])  # image_targets go along
    (tmp_path / "plan.json").write_text(json.dumps({"benchmark": "uda", "seeds": [0, 1], "pairs": [["a", "b"]]}))
    assert _resumed_selection("flex", False, tmp_path, []) == default  # refused later, by name
    (tmp_path / "plan.json").unlink()
    (tmp_path / "results.json").write_text(json.dumps({"config": {"benchmark": "flex", "plan": stored}}))
    assert _resumed_selection("flex", False, tmp_path, []).targets == ["mnist+blur", "mnistm"]  # older directory


def test_a_resumed_benchmark_keeps_its_budgets_but_runs_where_this_invocation_runs(tmp_path, monkeypatch):
    import dataclasses
    import json

    from transferkit.bench import _check_same_plan, _resumed_selection
    from transferkit.engine import TrainConfig
    stored = {"benchmark": "flex", **dataclasses.asdict(make_plan("flex", True, ["train.steps=7"]))}
    (tmp_path / "plan.json").write_text(json.dumps(stored))
    resumed = _resumed_selection("flex", False, tmp_path, [])
    assert isinstance(resumed.train, TrainConfig) and resumed.train.steps == 7 and resumed.quick
    _check_same_plan(tmp_path, resumed, "flex")
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "cuda")  # --device cuda on a run that trained on the CPU
    on_gpu = _resumed_selection("flex", False, tmp_path, [])
    assert on_gpu.train.device == "cuda"  # not silently the stored cpu: the plan check names the change
    with pytest.raises(TransferkitError, match=r"pretrain.device: 'cpu' there, 'cuda' now; train.device: 'cpu' "
                                               r"there, 'cuda' now \(a stage's device is where this invocation runs"):
        _check_same_plan(tmp_path, on_gpu, "flex")


def test_a_resume_that_sets_one_key_of_a_section_keeps_the_rest_and_print_plan_shows_the_resumed_plan(
        tmp_path, capsys):
    import dataclasses
    import json

    from transferkit.bench import _check_same_plan, resumed_plan
    from transferkit.cli import main
    quick = make_plan("flex", True, ["targets=mnistm", "ratios=30"])
    (tmp_path / "plan.json").write_text(json.dumps({"benchmark": "flex", **dataclasses.asdict(quick)}))
    same = [f"train.steps={quick.train.steps}"]  # its own value: the quick eval_every and patience stay
    resumed = resumed_plan("flex", False, same, tmp_path)
    assert resumed == quick
    _check_same_plan(tmp_path, resumed, "flex")
    with pytest.raises(TransferkitError, match=rf"train.steps: {quick.train.steps} there, {quick.train.steps + 1} "
                                               rf"now"):  # the resumed plan, as --print-plan shows it, is checked
        resumed_plan("flex", False, [f"train.steps={quick.train.steps + 1}"], tmp_path)
    assert main(["bench", "flex", "--resume", str(tmp_path), "--print-plan"]) == 0
    shown = capsys.readouterr().out
    assert "quick: true" in shown and "- mnistm" in shown and "- 30" in shown  # was the full default plan


def test_a_benchmark_that_runs_in_one_process_says_that_workers_does_not_apply(tmp_path, monkeypatch):
    from transferkit.bench import BENCHMARKS, ONE_PROCESS, load_suites, run_benchmark
    load_suites()
    assert ONE_PROCESS == {"represent", "zeroshot"}  # the others spread their jobs over --workers processes
    _, description, plan = BENCHMARKS["represent"]
    monkeypatch.setitem(BENCHMARKS, "represent", (lambda p, d, log: [], description, plan))
    for workers, noted in (("2", True), ("1", False)):
        monkeypatch.setenv("TRANSFERKIT_WORKERS", workers)
        lines = []
        run_benchmark("represent", quick=True, run_dir=tmp_path / workers, log=lines.append)
        assert any("runs its jobs in one process; --workers 2 does not apply" in str(x) for x in lines) == noted


def test_a_scenario_of_one_label_subset_is_not_counted_in_the_standard_error_count():
    from transferkit.bench.flex import wins
    from transferkit.bench.uda import _paired_text
    one = [r for r in _rows() if r["seed"] == 0]
    text = wins(one, {"t": 0.5}, [30])
    assert ("of max(ft_fc1, ft_fc2, ft_all): 0 / 0 (1 scenario(s) have one label subset only: no standard error, "
            "not counted)\n") in text and "left out" not in text
    assert _paired_text((0.1, 0.0, 1)) == "+10.0 (one seed: no spread)"
    assert _paired_text((0.1, 0.02, 2)) == "+10.0 ± 2.0"


def test_bench_plans_refuse_a_domain_spelt_otherwise_than_it_is_read():
    from transferkit.errors import TransferkitError
    cases = (("flex", "targets=mnist+blur,mnist + blur", r"write 'mnist \+ blur' as 'mnist\+blur'"),
             ("uda", "pairs=mnist:digits,MNIST:digits", "write 'MNIST' as 'mnist'"))
    for name, override, words in cases:
        with pytest.raises(TransferkitError, match=words):
            make_plan(name, False, [override])
    assert make_plan("flex", False, ["targets=mnist+blur,mnistm"]).targets == ["mnist+blur", "mnistm"]


def test_two_benchmarks_started_in_one_second_get_two_directories(tmp_path, monkeypatch):
    import datetime as dt

    import transferkit.bench as bench
    seen, ticks = [], iter(range(1, 10))

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 12, 1, 12, 0, 0, next(ticks))  # the same second, other microseconds

    def suite(plan, bench_dir, log):
        seen.append(bench_dir)
        raise KeyboardInterrupt  # stop here; the fresh directory is removed

    monkeypatch.setattr(bench, "datetime", Clock)
    monkeypatch.setitem(bench.BENCHMARKS, "stamp_toy", (suite, "toy", bench.Plan))
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            bench.run_benchmark("stamp_toy", out_dir=str(tmp_path), log=lambda *a: None)
    assert len(set(seen)) == 2 and seen[0].name == "20261201-120000-000001"


def test_a_benchmark_with_more_than_one_torch_thread_per_job_says_the_tables_used_one(tmp_path, monkeypatch):
    import transferkit.bench as bench
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    monkeypatch.setitem(bench.BENCHMARKS, "thread_toy", (lambda plan, bench_dir, log: [row], "toy", bench.Plan))
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "2")
    for threads, noted in (("2", True), ("1", False)):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)  # what each worker process gets
        lines = []
        bench.run_benchmark("thread_toy", out_dir=str(tmp_path / threads), log=lines.append)
        note = [line for line in lines if "torch threads per process" in line]
        assert note == (["note: jobs run with 2 torch threads per process; the documented tables were made with "
                         "OMP_NUM_THREADS=1, so numbers may differ (set it to match them)"] if noted else []), lines


def test_the_flex_source_network_record_comes_first_and_broken_files_are_named(tmp_path, monkeypatch):
    import transferkit.bench.flex as flex
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    from transferkit.splits import split_domain
    g = torch.Generator().manual_seed(0)
    d = Domain("toy3", torch.rand(60, 3, 28, 28, generator=g), torch.arange(60) % 10, [str(i) for i in range(10)])
    source, cfg = split_domain(d), TrainConfig(steps=2, batch_size=8, progress=False)

    def killed(path, tensors, metadata=None):
        raise KeyboardInterrupt  # killed between the record and the network
    monkeypatch.setattr(flex, "save_safetensors", killed)
    with pytest.raises(KeyboardInterrupt):
        flex.source_network(tmp_path, source, cfg, log=lambda *a: None)
    assert (tmp_path / "source.json").exists() and not (tmp_path / "source.safetensors").exists()
    monkeypatch.undo()
    net, info = flex.source_network(tmp_path, source, cfg, log=lambda *a: None)  # pre-trains again, stores both
    again, _ = flex.source_network(tmp_path, source, cfg, log=lambda *a: pytest.fail("pre-trained twice"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    (tmp_path / "source.json").write_text('{"val_accuracy": 0.')  # torn
    with pytest.raises(TransferkitError, match=r"source network record .*source.json is unreadable .*delete "
                                               r"source.safetensors and source.json to pre-train it again"):
        flex.source_network(tmp_path, source, cfg, log=lambda *a: None)
    for text in ("[]", '{"source": "mnist/half"}'):  # JSON, but no record: named, not an AttributeError or KeyError
        (tmp_path / "source.json").write_text(text)
        with pytest.raises(TransferkitError, match=r"source.json is not a source network record .*delete "
                                                   r"source.safetensors and source.json"):
            flex.source_network(tmp_path, source, cfg, log=lambda *a: None)
    (tmp_path / "source.json").write_text(json.dumps(info))
    path = tmp_path / "source.safetensors"
    path.write_bytes(path.read_bytes()[:64])
    with pytest.raises(TransferkitError, match=r"source network .*source.safetensors is unreadable"):
        flex.source_network(tmp_path, source, cfg, log=lambda *a: None)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "mnistm-r30-s0-flex.json").write_text('{"n_val": 3')  # torn
    with pytest.raises(TransferkitError, match=r"job result .*mnistm-r30-s0-flex.json is unreadable .*delete it"):
        flex.check_validation_split(tmp_path, "mnistm", 3)
    with pytest.raises(TransferkitError, match=r"mnistm-r30-s0-flex.json is unreadable"):
        flex.directory_reports(tmp_path, log=lambda *a: None)


def test_a_benchmark_directory_of_a_plan_stored_before_the_sampler_and_class_weight_resumes(tmp_path):
    import dataclasses

    from transferkit.bench import _check_same_plan, resumed_plan
    stored = dataclasses.asdict(make_plan("flex", True, []))
    for section in ("train", "pretrain"):  # as plan.json was written before the fields existed
        for key in ("sampler", "class_weight"):
            stored[section].pop(key)
    (tmp_path / "plan.json").write_text(json.dumps({"benchmark": "flex", **stored}))
    _check_same_plan(tmp_path, resumed_plan("flex", True, run_dir=tmp_path), "flex")  # refused before
    with pytest.raises(TransferkitError, match=r"train.sampler: 'shuffle' there, 'balanced' now"):
        resumed_plan("flex", True, ["train.sampler=balanced"], tmp_path)


def test_candidate_test_accuracies_share_the_source_units_and_equal_a_whole_forward_bit_for_bit():
    from helpers import toy_domain

    from transferkit.bench.flex import accuracy, candidate_accuracy
    from transferkit.engine import Engine, TrainConfig
    from transferkit.frozen import MEMO
    torch.manual_seed(0)
    target, test = toy_domain(n=40), toy_domain(n=1100, seed=3)  # two chunks of the test pass
    method = get_method("flex")(build_backbone("lenet", 4), keep_candidates=True)
    method.fit_transfer(lambda tag, config=None: Engine(config or TrainConfig(steps=3, batch_size=8), seed=0),
                        target=target, val=toy_domain(n=20, seed=1))
    whole = {c: accuracy(n.eval(), test) for c, n in method.candidate_nets.items()}
    MEMO.clear()
    shared = {c: candidate_accuracy(n, c, test) for c, n in method.candidate_nets.items()}
    assert shared == whole and len(set(whole.values())) > 1
    assert MEMO.extended == 2  # fc1's candidate ran on from conv2's stored conv1 activations, head's from fc1's
