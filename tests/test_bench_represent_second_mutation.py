"""Tests from a second mutation pass over the represent benchmark (``bench/represent.py``). The first passes
(``test_bench_other_mutation``, ``test_represent_tap_second_mutation``) pinned the plan's checks, the tables'
order and cells, the transfer and episodic rows and the suite's loops; these kill what they let through: the
fields a resumed run may change (``selects``), the full and quick plans' defaults, the experiment config's
source and target and batch sizes, the distilled student's seeded start and its own step budget, the CAT
heads' seed, the job file names (one per representation, method, size and seed) and their order, the note on
small classes counting only the classes the target has, the plan's header in ``represent.md``, the order of
unknown representations and methods, the episodes' protocol (5-way, 15 queries, seed 0, the test groups), the
transfer's engine seed and its extra results, and the tables' quick header and episodic table. No benchmark
is run: the heavy parts are monkeypatched, and the rows are written by hand.

Judged equivalent, so not tested: ``as_list(cats, minimum=2)`` -> ``minimum=1`` (the ``2 <= n`` check refuses
1 next, with a message that names cats too); ``Engine(config or train)`` -> ``Engine(train)`` in
``_distilled`` (``distill_network`` never passes a config); ``(bench_dir / "nets").mkdir(...)`` and
``jobs.mkdir(...)`` dropped in ``represent_suite`` (every writer, ``atomic_path``, makes the parent folders).

Left surviving: none of the mutants tried."""

import json
from types import SimpleNamespace

import pytest
import torch
from helpers import fit_result, store_plan, tiny_net, toy_domain

from transferkit.domain import Domain
from transferkit.errors import TransferkitError

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(train=None):
    return SimpleNamespace(source=SimpleNamespace(train=toy_domain(16), val=toy_domain(8, seed=3)), channels=1,
                           target=SimpleNamespace(train=train or toy_domain(16), val=toy_domain(8, seed=1),
                                                  test=toy_domain(8, seed=2)))


# --- the plan -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ["pairs=mnist:digits", "cats=2", "sizes=5", "seeds=0,7"])
def test_a_resumed_run_may_change_what_it_selects(bench_sandbox, tmp_path, assignment):
    # kills: a field dropped from RepresentPlan.selects (a resume with other pairs/cats/sizes/seeds refused)
    store_plan(tmp_path / "run", bench_sandbox.make_plan("represent"), owner="represent")
    plan = bench_sandbox.resumed_plan("represent", False, [assignment], run_dir=tmp_path / "run")
    key = assignment.split("=")[0]
    assert getattr(plan, key) == getattr(bench_sandbox.make_plan("represent", False, [assignment]), key)


def test_a_resumed_run_may_not_change_a_budget(bench_sandbox, tmp_path):
    # kills: a budget field added to RepresentPlan.selects
    store_plan(tmp_path / "run", bench_sandbox.make_plan("represent"), owner="represent")
    for assignment in ("train=50", "distill=50", "episodes=50", "n_max=5", "pretrain=50"):
        with pytest.raises(TransferkitError, match=assignment.split("=")[0]):
            bench_sandbox.resumed_plan("represent", False, [assignment], run_dir=tmp_path / "run")


def test_the_full_and_quick_plans_run_the_documented_budgets():
    from transferkit.bench.represent import PAIRS, RepresentPlan, represent_plan
    full = RepresentPlan()
    # kills: a default of n_max, cats, sizes, seeds or a budget changed (the docs' tables are of this plan)
    assert (full.pairs, full.n_max, full.cats, full.sizes, full.seeds) == (
        (("mnist", "digits"), ("syndigits", "mnist"), ("mnist", "mnistm")), 4, [2, 4], [2, 5, 20], [0, 1, 2])
    assert (full.pretrain, full.distill, full.train, full.episodes, full.quick) == (400, 400, 100, 600, False)
    assert represent_plan(False) == full
    quick = represent_plan(True)
    # kills: the quick plan's pair, n_max, distillation budget (or any other field) changed
    assert (quick.pairs, quick.n_max, quick.cats, quick.sizes, quick.seeds) == (PAIRS[:1], 2, [2], [5], [0])
    assert (quick.pretrain, quick.distill, quick.train, quick.episodes, quick.quick) == (200, 200, 100, 100, True)


def test_the_experiment_config_goes_from_the_source_to_the_target_in_the_plans_batches():
    from transferkit.bench.represent import _config, represent_plan
    cfg = _config("syndigits", "mnist", represent_plan(True))
    # kills: source and target swapped; the transfer batch 32 or the pre-training's eval_every 100 changed
    assert (cfg.source, cfg.target) == ("syndigits", "mnist")
    assert (cfg.pretrain.batch_size, cfg.pretrain.eval_every, cfg.train.batch_size) == (64, 100, 32)


# --- the networks ---------------------------------------------------------------------------------------------


def test_the_distilled_student_starts_from_the_config_seed_and_trains_the_distillation_budget(tmp_path, monkeypatch):
    from transferkit.bench import represent as bench
    seen = []

    def fake_distill(members, make_net, make_engine, source, val):
        net = make_net()
        seen.append(([v.clone() for v in net.state_dict().values()], make_engine("distill").cfg.steps,
                     net.num_classes))
        return net, fit_result()
    monkeypatch.setattr(bench, "distill_network", fake_distill)
    cfg = SimpleNamespace(seed=0, backbone="lenet", image_size=28)
    s = SimpleNamespace(distill=3, pretrain=7)
    data = _data()
    data.source.train = toy_domain(12, classes=6)  # the members' 6 source classes; the target has 4
    for state, name in ((1, "a"), (2, "b")):  # the global random state left by the jobs before
        torch.manual_seed(state)
        bench._distilled(cfg, data, [tiny_net(6)], s, tmp_path / f"{name}.safetensors", lambda *a: None)
    # kills: torch.manual_seed(cfg.seed) dropped (the student's start depends on the jobs before)
    assert all(torch.equal(a, b) for a, b in zip(seen[0][0], seen[1][0]))
    assert seen[0][1] == 3  # kills: the distillation trained for s.pretrain (or another budget) steps
    assert seen[0][2] == 6  # kills: the student built with the target's class count (it learns the source's)


def test_cat_heads_are_seeded_by_the_given_seed():
    from transferkit.bench.represent import _representations
    members = [tiny_net(4), tiny_net(4)]
    torch.manual_seed(5)
    a = _representations(members, [2], seed=0)["cat2"].head.weight
    torch.manual_seed(6)
    b = _representations(members, [2], seed=0)["cat2"].head.weight
    c = _representations(members, [2], seed=1)["cat2"].head.weight
    # kills: cat_network(..., seed=seed) -> no seed (rows would depend on whether the members were cached)
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- the suite ------------------------------------------------------------------------------------------------


def _fake_suite(monkeypatch, train=None, seen=None):
    """represent_suite's heavy parts replaced; ``seen`` records what they were given."""
    from transferkit.bench import represent as bench
    seen = {} if seen is None else seen

    def members(cfg, data, n, log, pin_dir):
        seen.setdefault("pins", []).append(pin_dir)
        seen.setdefault("members", []).append(n)
        return [tiny_net(4) for _ in range(n)]

    def distilled(cfg, data, members, s, path, log):
        seen.setdefault("nets", []).append(path)
        seen.setdefault("distilled", []).append(len(members))
        return tiny_net(4)
    monkeypatch.setattr(bench, "prepare_domains",
                        lambda cfg: seen.setdefault("configs", []).append((cfg.source, cfg.target)) or _data(train))
    monkeypatch.setattr(bench, "source_members", members)
    monkeypatch.setattr(bench, "_distilled", distilled)
    monkeypatch.setattr(bench, "_fewshot_rows", lambda rep, net, data, s, base: [
        {**base, "method": f"{rep}/fewshot_linear", "setting": "5-way 1-shot", "seed": 0, "accuracy": 0.5,
         "ci95": 0.025}])

    def fake_row(rep, net, method_name, n, seed, labeled, data, cfg, base):
        seen.setdefault("labeled", {})[(n, seed)] = labeled
        return {**base, "method": f"{rep}/{method_name}", "setting": f"{n}/class", "seed": seed, "accuracy": 0.5,
                "wall_s": 3.0}
    monkeypatch.setattr(bench, "_transfer_row", fake_row)
    return bench


def test_the_suite_writes_one_job_per_representation_method_size_and_seed_in_order(tmp_path, monkeypatch):
    bench = _fake_suite(monkeypatch)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3, 4], seeds=[0, 1])
    rows = bench.represent_suite(plan, tmp_path, lambda *a: None)
    # kills: the seed, the size, the method or the representation left out of a job's name (two jobs share a
    # file: the second returns the first's row)
    transfer = [(r["method"], r["setting"], r["seed"]) for r in rows if "fewshot" not in r["method"]]
    assert transfer == [(f"{rep}/{m}", f"{n}/class", seed) for n in (3, 4) for seed in (0, 1)
                        for rep in ("erm", "cat2", "distill") for m in ("linear_probe", "finetune", "two_stage")]
    assert [r["method"] for r in rows[:3]] == ["erm/fewshot_linear", "cat2/fewshot_linear", "distill/fewshot_linear"]
    assert {(r["source"], r["target"]) for r in rows} == {("mnist", "digits")}  # kills: source and target swapped
    names = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    assert len(names) == 3 + 36 and "fewshot-cat2-mnist-digits.json" in names
    assert "distill-two_stage-mnist-digits-n4-s1.json" in names


def test_the_small_class_note_counts_only_the_classes_the_target_has(tmp_path, monkeypatch):
    # three images in each of classes 0-2, none of class 3 (a class the target split lacks)
    train = Domain("t", torch.rand(9, 1, 28, 28), torch.arange(9) % 3, ["0", "1", "2", "3"])
    bench = _fake_suite(monkeypatch, train)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3], seeds=[0])
    lines = []
    bench.represent_suite(plan, tmp_path, lines.append)
    assert not [line for line in lines if line.startswith("note:")]  # kills: counts.min() (the empty class: 0)


def test_the_suites_markdown_names_the_plan_it_ran(tmp_path, monkeypatch):
    bench = _fake_suite(monkeypatch)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3], seeds=[0], quick=True)
    bench.represent_suite(plan, tmp_path, lambda *a: None)
    text = (tmp_path / "represent.md").read_text()
    # kills: represent_tables(rows) without the plan (no header, no budget)
    assert text.startswith("# represent benchmark (quick)\n\nQuick run (--quick): 2 source networks")


# --- the rows -------------------------------------------------------------------------------------------------


def test_episodes_are_5_way_with_15_queries_on_the_test_labels_and_groups(monkeypatch):
    from transferkit.bench import represent as bench
    calls = []

    def fake_episodes(feats, labels, head, **kw):
        calls.append((labels, head, kw))
        return {head: {"mean": 0.5, "ci95": 0.1, "episodes": kw["episodes"]}}
    monkeypatch.setattr(bench, "evaluate_episodes", fake_episodes)
    test = Domain("t", torch.rand(10, 1, 28, 28), torch.arange(10) % 5, [str(i) for i in range(5)])
    test.groups = torch.arange(10) % 2
    rows = bench._fewshot_rows("erm", tiny_net(5), SimpleNamespace(target=SimpleNamespace(test=test)),
                               SimpleNamespace(episodes=2), {})
    # kills: n_way, n_query or the episodes' seed changed (another k or head gets other episodes); the test
    # groups not passed
    assert [(c[2]["n_way"], c[2]["n_query"], c[2]["seed"], c[2]["k_shot"]) for c in calls] == [
        (5, 15, 0, k) for k in (1, 5) for _ in range(3)]
    assert all(c[0] is test.labels and c[2]["groups"] is test.groups for c in calls)
    assert {r["feature_dim"] for r in rows} == {16}  # kills: feats.shape[0] (the number of images, 10)
    assert {(r["ci95"], r["seed"]) for r in rows} == {(0.1, 0)}  # kills: the interval or the row's seed 0 replaced


def test_a_transfer_trains_with_the_rows_seed_and_reports_the_methods_extra_results(monkeypatch):
    from transferkit.bench import represent as bench
    from transferkit.engine import FitResult, TrainConfig
    from transferkit.represent import CatTwoStage, cat_network
    engines = []

    def fake_fit(self, make_engine, target=None, val=None):
        engines.append(make_engine("probe"))
        self._extra = {"member_val_accuracy": [0.25, 0.5]}
        return FitResult(steps=0, best_step=0, best_val_accuracy=0.75, stopped_early=False, wall_s=0.0,
                         val_accuracy=0.5)
    monkeypatch.setattr(CatTwoStage, "fit_transfer", fake_fit)
    monkeypatch.setattr(bench, "evaluate_on", lambda method, test: {"accuracy": 0.125})
    cfg = SimpleNamespace(train=TrainConfig(steps=1, progress=False))
    row = bench._transfer_row("cat2", cat_network([tiny_net(4), tiny_net(4)], seed=0), "two_stage", 2, 3,
                              toy_domain(8), _data(), cfg, {})
    assert engines[0].seed == 3  # kills: Engine(..., seed=seed) dropped (every seed trains on one batch order)
    assert row["member_val_accuracy"] == [0.25, 0.5]  # kills: **method.extra_results() left out of the row
    assert row["val_accuracy"] == 0.5  # kills: the row's val_accuracy taken from best_val_accuracy
    assert row["accuracy"] == 0.125  # kills: the row's accuracy taken from the fit (validation) not the test


# --- the tables -----------------------------------------------------------------------------------------------


def _row(method, setting, accuracy, source="mnist", target="digits", **more):
    return {"source": source, "target": target, "method": method, "setting": setting, "seed": 0,
            "accuracy": accuracy, **more}


def test_unknown_representations_and_methods_are_ordered_by_name():
    from transferkit.bench.represent import represent_tables
    rows = [_row("zzz/linear_probe", "5/class", 0.1), _row("aaa/finetune", "5/class", 0.2),
            *[_row(f"erm/{m}", "5/class", 0.3) for m in ("zeta", "alpha", "mu", "beta", "kappa")],
            _row("distill/finetune", "5/class", 0.5), _row("cat4/finetune", "5/class", 0.5),
            _row("erm/two_stage", "5/class", 0.5)]
    lines = [line.split(" | ")[0] for line in represent_tables(rows).splitlines() if line.startswith("| ")]
    # kills: the representation's name left out of _order (zzz/linear_probe before aaa/finetune); the method's
    # name left out (erm's unknown methods in the order of a set); cat4 or two_stage left out of the known
    # orders (cat4 after distill, two_stage after erm's unknown methods)
    assert lines[1:] == ["| erm/two_stage", "| erm/alpha", "| erm/beta", "| erm/kappa", "| erm/mu", "| erm/zeta",
                         "| cat4/finetune", "| distill/finetune", "| aaa/finetune", "| zzz/linear_probe"]


def test_a_full_runs_tables_are_not_called_quick_and_transfer_rows_alone_have_no_episodic_table():
    from transferkit.bench.represent import RepresentPlan, represent_plan, represent_tables
    text = represent_tables([_row("erm/finetune", "5/class", 0.5)], RepresentPlan())
    # kills: the "(quick)" header for any plan; the episodic table's header over no episodic rows (if fs -> always)
    assert text.startswith("# represent benchmark\n\nBudget: 4 source networks") and "5-way" not in text
    quick = represent_tables([], represent_plan(True))
    assert "full run (4 source networks of up to 400 pre-training steps" in quick  # kills: budget_line(plan, plan)


def test_pairs_tables_follow_in_sorted_order():
    from transferkit.bench.represent import represent_tables
    pairs = [("syndigits", "mnist"), ("mnist", "mnistm"), ("mnist", "digits"), ("a", "b"), ("z", "y")]
    text = represent_tables([_row("erm/finetune", "5/class", 0.5, source=s, target=t) for s, t in pairs])
    heads = [line.split(" (")[0] for line in text.splitlines() if line.startswith("### ")]
    # kills: sorted() of the pairs dropped (their tables in the order of a set)
    assert heads == ["### a -> b", "### mnist -> digits", "### mnist -> mnistm", "### syndigits -> mnist",
                     "### z -> y"]


def test_a_job_file_holds_its_row_as_json(tmp_path, monkeypatch):
    bench = _fake_suite(monkeypatch)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3], seeds=[0])
    bench.represent_suite(plan, tmp_path, lambda *a: None)
    # kills: the method left out of a transfer job's name (the file of cat2's last method holds every one's row)
    row = json.loads((tmp_path / "jobs" / "cat2-finetune-mnist-digits-n3-s0.json").read_text())
    assert (row["method"], row["setting"], row["seed"]) == ("cat2/finetune", "3/class", 0)


def test_each_pair_pins_its_own_networks_and_each_seed_draws_its_own_labelled_images(tmp_path, monkeypatch):
    from transferkit.splits import subsample_per_class
    seen = {}
    bench = _fake_suite(monkeypatch, seen=seen)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits"), ("syndigits", "mnist")], n_max=2, cats=[2], sizes=[2],
                               seeds=[0, 1])
    bench.represent_suite(plan, tmp_path, lambda *a: None)
    # kills: the pairs' source members pinned in one folder, or their distilled networks in one file (the second
    # pair would read the first's networks back)
    assert seen["pins"] == [tmp_path / "nets" / "mnist-digits", tmp_path / "nets" / "syndigits-mnist"]
    assert [p.name for p in seen["nets"]] == ["distill-mnist-digits.safetensors", "distill-syndigits-mnist.safetensors"]
    # kills: the labelled subset drawn with a fixed seed (every seed's row on the same images)
    for seed in (0, 1):
        assert torch.equal(seen["labeled"][(2, seed)].images, subsample_per_class(_data().target.train, 2, seed).images)
    assert not torch.equal(seen["labeled"][(2, 0)].images, seen["labeled"][(2, 1)].images)

