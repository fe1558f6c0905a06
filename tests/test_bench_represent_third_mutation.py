"""Tests from a third mutation pass over the represent benchmark (``bench/represent.py``). The first two passes
(``test_bench_other_mutation``, ``test_represent_tap_second_mutation``, ``test_bench_represent_second_mutation``)
pinned the plan's checks and defaults, the tables' order and cells, the job names, the transfer and episodic rows
and the suite's loops; these kill what they let through: the distillation's own batches and data (the source's
train and validation splits, never the target's), every one of the ``n_max`` source networks distilled whatever
``cats`` are selected, each pair's config from its source to its target and the pairs run in the plan's order,
each representation's jobs on its own network, the plan's pairs read from text and checked, the transfer started
from the retargeted head and from its seed's own new head, fitted on the row's labelled subset and the target's
validation split and scored on the test split, the episodic rows' accuracy and wall times (the shared feature
extraction counted in each), the episodic table ordered by the pair's source before its target, a pair's
transfer table holding its own rows alone, the budget line naming each budget, and what the suite's log lines
and note on small classes tell the user. No benchmark is run: the heavy parts are monkeypatched, and the rows are
written by hand.

Judged equivalent, so not tested: ``_representations(members, s.cats, cfg.seed)`` -> ``seed=0`` and
``Engine(..., seed=cfg.seed)`` -> the engine's default seed in ``_distilled`` (``_config`` never sets a seed:
``cfg.seed`` is always 0); ``Engine(config or cfg.train, ...)`` -> ``Engine(cfg.train, ...)`` in ``_transfer_row``
(none of linear_probe, finetune, two_stage, cat_two_stage hands a config to its engines); the row's
``"episodes": r["episodes"]`` -> ``s.episodes`` (``evaluate_episodes`` runs every episode asked for);
``extract_features`` on a copy of the net in training mode (it evaluates in eval mode on the same weights).

Left surviving: none of the mutants tried."""

from types import SimpleNamespace

import pytest
import torch
from helpers import fit_result, tiny_net, toy_domain
from test_bench_represent_second_mutation import _data, _fake_suite, _row

from transferkit.domain import Domain

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the networks ---------------------------------------------------------------------------------------------


def test_the_distillation_learns_from_the_source_splits_in_its_own_batches(tmp_path, monkeypatch):
    from transferkit.bench import represent as bench
    seen = {}

    def fake_distill(members, make_net, make_engine, source, val):
        seen.update(source=source, val=val, cfg=make_engine("distill").cfg)
        return make_net(), fit_result()
    monkeypatch.setattr(bench, "distill_network", fake_distill)
    data = _data()
    bench._distilled(SimpleNamespace(seed=0, backbone="lenet", image_size=28), data, [tiny_net(4)],
                     SimpleNamespace(distill=3), tmp_path / "d.safetensors", lambda *a: None)
    # kills: the distillation on the target's train or validation split (the student imitates the members on the
    # source's images; the target's labelled images are for the transfer)
    assert seen["source"] is data.source.train and seen["val"] is data.source.val
    # kills: the distillation's batch 64 or evaluation interval 100 changed
    assert (seen["cfg"].batch_size, seen["cfg"].eval_every) == (64, 100)


def test_every_source_network_is_distilled_whatever_cats_are_selected(tmp_path, monkeypatch):
    seen = {}
    bench = _fake_suite(monkeypatch, seen=seen)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=4, cats=[2], sizes=[3], seeds=[0])
    rows = bench.represent_suite(plan, tmp_path, lambda *a: None)
    # kills: source_members(..., s.n_max) -> max(s.cats) (distill is DISTILL_{n_max}: a resume with other cats would
    # otherwise distil other members into the same file)
    assert (seen["members"], seen["distilled"]) == ([4], [4])
    assert {r["method"].split("/")[0] for r in rows} == {"erm", "cat2", "distill"}


def test_each_representations_jobs_run_on_its_own_network(tmp_path, monkeypatch):
    seen, nets = {}, {}
    bench = _fake_suite(monkeypatch, seen=seen)
    fewshot, transfer = bench._fewshot_rows, bench._transfer_row

    def fewshot_rows(rep, net, data, s, base):
        nets.setdefault(("fewshot", rep), set()).add(net)
        return fewshot(rep, net, data, s, base)

    def transfer_row(rep, net, *more):
        nets.setdefault(("transfer", rep), set()).add(net)
        return transfer(rep, net, *more)
    monkeypatch.setattr(bench, "_fewshot_rows", fewshot_rows)
    monkeypatch.setattr(bench, "_transfer_row", transfer_row)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3], seeds=[0])
    bench.represent_suite(plan, tmp_path, lambda *a: None)
    # kills: the episodes or the transfers of every representation run on the first member (ERM's network)
    for job in ("fewshot", "transfer"):
        erm, cat2, distill = (nets[(job, rep)] for rep in ("erm", "cat2", "distill"))
        assert len(erm | cat2 | distill) == 3, job
        assert [len(n.unit("cat").members) for n in cat2] == [2], job


def test_the_suite_runs_the_pairs_in_the_plans_order_from_source_to_target(tmp_path, monkeypatch):
    seen = {}
    bench = _fake_suite(monkeypatch, seen=seen)
    plan = bench.RepresentPlan(pairs="syndigits:mnist,mnist:digits", n_max=2, cats=[2], sizes=[3], seeds=[0])
    rows = bench.represent_suite(plan, tmp_path, lambda *a: None)
    # kills: _config(target, source, s) (each pair's data prepared the other way round)
    assert seen["configs"] == [("syndigits", "mnist"), ("mnist", "digits")]
    # kills: the plan's pairs run in sorted order (mnist -> digits first, not as the user listed them)
    assert [r["source"] for r in rows][::len(rows) // 2] == ["syndigits", "mnist"]


# --- the plan -------------------------------------------------------------------------------------------------


def test_the_plan_reads_pairs_spelt_as_text_and_refuses_an_unknown_domain():
    from transferkit.bench.represent import RepresentPlan
    from transferkit.errors import TransferkitError
    # kills: as_pairs dropped from __post_init__ (a --set pairs=a:b string kept as it is; a misspelt domain
    # accepted until its data is prepared, after the other pairs' hours of training)
    assert RepresentPlan(pairs="syndigits:mnist").pairs == (("syndigits", "mnist"),)
    with pytest.raises(TransferkitError, match="mnist_typo"):
        RepresentPlan(pairs=[("mnist_typo", "digits")])


# --- the rows -------------------------------------------------------------------------------------------------


def test_a_transfer_is_scored_on_the_target_test_split(monkeypatch):
    from transferkit.bench import represent as bench
    from transferkit.engine import TrainConfig
    scored = []
    monkeypatch.setattr(bench, "evaluate_on", lambda method, test: scored.append(test) or {"accuracy": 0.25})
    data = _data()
    cfg = SimpleNamespace(train=TrainConfig(steps=1, eval_every=1, batch_size=8, progress=False))
    row = bench._transfer_row("erm", tiny_net(4), "linear_probe", 2, 0, toy_domain(8), data, cfg, {})
    # kills: evaluate_on(method, data.target.val) (the early-stopping split scored as the test accuracy)
    assert scored == [data.target.test] and row["accuracy"] == 0.25


def _finetune_heads(monkeypatch):
    """Finetune's fit replaced by a recorder of the head weights it starts from (returned), its score by 0.5."""
    from transferkit.bench import represent as bench
    from transferkit.engine import FitResult
    from transferkit.methods.finetune import Finetune
    heads = []

    def fake_fit(self, make_engine, target=None, val=None):
        heads.append(self.net.head.weight.detach().clone())
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    monkeypatch.setattr(Finetune, "fit_transfer", fake_fit)
    monkeypatch.setattr(bench, "evaluate_on", lambda method, test: {"accuracy": 0.5})
    return heads


def test_a_transfer_starts_from_the_source_heads_rows_of_the_target_classes(monkeypatch):
    from transferkit.bench import represent as bench
    heads = _finetune_heads(monkeypatch)
    data = _data()
    data.source.train = toy_domain(12, classes=6)  # the net's 6 source classes "0".."5"; the target has "0".."3"
    net = tiny_net(6)
    bench._transfer_row("erm", net, "finetune", 2, 0, toy_domain(8), data, SimpleNamespace(train=None), {})
    # kills: retarget_head(copy_net, ...) dropped (a fine-tune starts from the source's 6-way head, not
    # the rows of the 4 classes the target shares)
    assert torch.equal(heads[0], net.head.weight.detach()[:4])


def test_each_seed_starts_its_transfer_from_its_own_new_head_on_the_rows_splits(monkeypatch):
    from transferkit.bench import represent as bench
    from transferkit.engine import FitResult
    from transferkit.methods.finetune import LinearProbe
    heads, splits = [], []

    def fake_fit(self, make_engine, target=None, val=None):
        heads.append(self.net.head.weight.detach().clone())
        splits.append((target, val))
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    monkeypatch.setattr(LinearProbe, "fit_transfer", fake_fit)
    monkeypatch.setattr(bench, "evaluate_on", lambda method, test: {"accuracy": 0.5})
    net, data, labeled = tiny_net(4), _data(), toy_domain(8)
    for seed in (1, 2, 1):
        bench._transfer_row("erm", net, "linear_probe", 2, seed, labeled, data, SimpleNamespace(train=None), {})
    # kills: the fit given every target train image (not the row's labelled subset) or the source's validation split
    assert splits[0] == (labeled, data.target.val)
    # kills: torch.manual_seed(seed) -> a fixed seed (every seed's probe from the same new head: the seeds' spread
    # in the tables would leave out the head's initialisation)
    assert not torch.equal(heads[0], heads[1]) and torch.equal(heads[0], heads[2])


class _Clock:
    """time.perf_counter replaced: each call one second later than the one before."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_episodic_rows_report_the_mean_and_count_the_shared_feature_extraction_in_each_wall_time(monkeypatch):
    from transferkit.bench import represent as bench
    monkeypatch.setattr(bench, "evaluate_episodes", lambda feats, labels, head, **kw: {
        head: {"mean": 0.75, "ci95": 0.125, "episodes": kw["episodes"]}})
    monkeypatch.setattr(bench, "time", _Clock())
    test = Domain("t", torch.rand(10, 1, 28, 28), torch.arange(10) % 5, [str(i) for i in range(5)])
    rows = bench._fewshot_rows("erm", tiny_net(5), SimpleNamespace(target=SimpleNamespace(test=test)),
                               SimpleNamespace(episodes=2), {})
    assert {(r["accuracy"], r["ci95"]) for r in rows} == {(0.75, 0.125)}  # kills: the accuracy taken from another key
    # the clock reads 1 and 2 around the extraction (1 s), then 1 s per head's episodes
    assert {r["features_wall_s"] for r in rows} == {1.0}  # kills: features_wall_s not the extraction's time
    assert {r["wall_s"] for r in rows} == {2.0}  # kills: a row's wall_s without the extraction it shares


# --- the tables -----------------------------------------------------------------------------------------------


def test_episodic_rows_are_ordered_by_the_pairs_source_before_its_target():
    from transferkit.bench.represent import represent_tables
    rows = [_row("erm/fewshot_linear", "5-way 1-shot", 0.5, source="syndigits", target="mnist", ci95=0.0),
            _row("erm/fewshot_linear", "5-way 1-shot", 0.5, source="mnist", target="mnistm", ci95=0.0)]
    pairs = [line.split(" | ")[0] for line in represent_tables(rows).splitlines() if " -> " in line]
    # kills: the source left out of the episodic table's sort key (syndigits -> mnist before mnist -> mnistm)
    assert pairs == ["| mnist -> mnistm", "| syndigits -> mnist"]


def test_a_pairs_transfer_table_holds_its_own_rows_alone():
    from transferkit.bench.represent import represent_tables
    rows = [_row("erm/finetune", "5/class", 0.5), _row("erm/finetune", "5/class", 0.9, target="mnistm"),
            _row("erm/finetune", "20/class", 0.1, target="mnistm")]
    text = represent_tables(rows)
    digits = text[text.index("### mnist -> digits"):text.index("### mnist -> mnistm")]
    # kills: a pair's rows picked by their source alone (mnist -> mnistm's rows averaged into mnist -> digits')
    assert "| representation / transfer | 5/class |\n" in digits and "| erm/finetune | 50.0 |" in digits


def test_the_budget_line_names_each_of_the_plans_budgets():
    from transferkit.bench.represent import RepresentPlan
    text = RepresentPlan(n_max=3, cats=[2], pretrain=11, distill=22, train=33, episodes=44, seeds=[5, 6]).budget()
    # kills: the distillation's or the transfer's budget shown as another one (full and quick plans share them)
    assert "3 source networks of up to 11 pre-training steps" in text and "distillation up to 22 steps" in text
    assert "transfer up to 33 steps" in text and "44 episodes" in text and "seeds 5, 6" in text


# --- the suite's log -------------------------------------------------------------------------------------------


def test_the_suites_log_names_each_jobs_result(tmp_path, monkeypatch):
    bench = _fake_suite(monkeypatch)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3], seeds=[1])
    lines = []
    bench.represent_suite(plan, tmp_path, lines.append)
    # kills: the episodic log line without its accuracy and interval
    assert "  erm/fewshot_linear 5-way 1-shot 50.0±2.5" in lines
    transfer = [line for line in lines if "cat2/finetune" in line]
    # kills: the transfer log line without the setting, the seed, the accuracy or the time
    assert len(transfer) == 1 and all(w in transfer[0] for w in ("3/class", "seed 1", "50.0%", "(3s)"))


def test_the_small_class_note_names_the_column_and_the_smallest_class(tmp_path, monkeypatch):
    # classes of 3, 4, 5 and 6 images: sizes 4 and 5 take every image of the smallest class (3)
    labels = torch.tensor([0] * 3 + [1] * 4 + [2] * 5 + [3] * 6)
    train = Domain("t", torch.rand(18, 1, 28, 28), labels, ["0", "1", "2", "3"])
    bench = _fake_suite(monkeypatch, train)
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3, 5], seeds=[0])
    lines = []
    bench.represent_suite(plan, tmp_path, lines.append)
    notes = [line for line in lines if line.startswith("note:")]
    # kills: the largest class taken as the smallest (no note); the column's size shown as the smallest class's
    assert len(notes) == 1 and "'5/class'" in notes[0] and "(3 in its smallest class)" in notes[0]
