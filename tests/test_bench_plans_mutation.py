"""Tests from a mutation pass over the plans, budgets, configs and report files of ``bench/uda.py``
(``Budget``, ``budget``, ``UdaPlan``, ``uda_plan``, ``_own_method``, ``_chosen``, ``pair_config``,
``adapting``, ``adaptation_epochs``, ``describe``), ``bench/uda_tune.py`` (``tune_budget``,
``settings``, ``tune_job``) and ``bench/flex.py`` (``FlexPlan``, ``plan``, ``mnist_halves``,
``target_splits``, ``check_validation_split``, ``candidate_accuracy``, ``write_reports``,
``directory_reports``, ``rewrite_reports``, ``_stored_flex_plan``); the table functions are
``test_bench_tables_mutation``'s. Each test kills mutations that the existing tests let through
(a plan check loosened by one or dropped, a quick plan's field changed, a config field left at
its default, the SKADA epochs rounded down or to zero, a validation split read from another
target's job, a report file written when it has no rows, a stored plan lost on a rewrite), on
tiny hand-made inputs; no benchmark is run.

Judged equivalent, so not tested: ``pair_config``'s ``dict(tuned[m])`` -> ``tuned[m]`` (``ExperimentConfig``
builds its own copy of ``options``, so a run's options never alias :data:`~transferkit.bench.uda.TUNED`);
``tune_job``'s ``torch.manual_seed(cfg.seed)`` dropped (the grid's methods draw nothing from torch's RNG
before the seeded engine does: the adapted weights are bit for bit the same whatever the process's random
state). Left surviving: none of the mutants tried; not tried: the suite bodies (``uda_suite``,
``uda_tune_suite``, ``flex_suite``), ``skada_rows``, ``tsne_figure`` and ``run_job``, whose tests run a
benchmark."""

import json
from types import SimpleNamespace

import pytest
import torch

from transferkit.bench import flex, make_plan
from transferkit.bench.uda import (
    ADAPTATION,
    SKADA_PAIRS,
    TUNED,
    Budget,
    UdaPlan,
    adaptation_epochs,
    adapting,
    budget,
    describe,
    pair_config,
    uda_plan,
)
from transferkit.errors import TransferkitError

# ---- bench uda: Budget and UdaPlan ------------------------------------------------------

# kills: pretrain/adapt/batch check `>= 1` -> `>= 2`, pretrain_steps left out of it; tsne_points
# `>= 2` -> `>= 1` / `> 2`; lr `> 0` -> `>= 0`
def test_uda_budget_takes_each_smallest_value_and_refuses_one_below():
    small = Budget(pretrain_steps=1, adapt_steps=1, batch_size=1, tsne_points=2, lr=1e-9)
    assert (small.pretrain_steps, small.adapt_steps, small.batch_size, small.tsne_points) == (1, 1, 1, 2)
    for field in ("pretrain_steps", "adapt_steps", "batch_size"):
        with pytest.raises(TransferkitError, match="pretrain_steps, adapt_steps and batch_size must be >= 1"):
            Budget(**{field: 0})
    with pytest.raises(TransferkitError, match="tsne_points must be >= 2 .*got 1"):
        Budget(tsne_points=1)
    for lr in (0.0, float("nan")):
        with pytest.raises(TransferkitError, match="lr must be a finite number > 0"):
            Budget(lr=lr)


# kills: the quick budget's tsne_points 300 -> 500, its pairs -> other pairs, its pretrain_steps;
# the full budget's seeds; uda_plan built from the full budget whatever `quick`
def test_uda_quick_and_full_plans_are_the_documented_ones():
    quick = uda_plan(True)
    assert quick.quick and quick.seeds == (0,) and quick.pairs == SKADA_PAIRS
    assert (quick.pretrain_steps, quick.adapt_steps, quick.tsne_points) == (200, 50, 300)
    assert vars(budget(True)).items() <= vars(quick).items()
    full = uda_plan(False)
    assert not full.quick and full.seeds == (0, 1, 2, 3, 4) and full.tsne_points == 500
    assert (full.pretrain_steps, full.adapt_steps, full.batch_size, full.lr) == (1000, 300, 64, 1e-3)


# kills: tune_budget keeping the full budget's five pairs (not the two SKADA pairs)
def test_uda_tune_budget_runs_the_skada_pairs_with_three_seeds_or_one():
    from transferkit.bench.uda_tune import tune_budget
    full, quick = tune_budget(False), tune_budget(True)
    assert full.pairs == SKADA_PAIRS and full.seeds == (0, 1, 2) and full.pretrain_steps == 1000
    assert quick.pairs == SKADA_PAIRS and quick.seeds == (0,) and quick.quick and quick.pretrain_steps == 200


# kills: the grid settings of the full run leaving out a setting (grid[:-1]); quick: the first two
def test_uda_tune_settings_are_the_whole_grid_or_its_first_two_per_method():
    from transferkit.bench.uda_tune import GRID, settings
    assert settings(False) == [(m, o) for m, grid in GRID.items() for o in grid]
    assert settings(True) == [(m, o) for m, grid in GRID.items() for o in grid[:2]]


# kills: the unknown-method message without its TRANSFERKIT_PLUGINS hint
def test_an_unknown_uda_method_names_how_to_add_ones_own():
    with pytest.raises(TransferkitError, match="methods: unknown 'nosuch'.*TRANSFERKIT_PLUGINS"):
        UdaPlan(methods="dann,nosuch")


# kills: skada names taken as given (no check against SKADA's methods, not in their order)
def test_uda_plan_refuses_an_unknown_skada_method_and_orders_the_chosen_ones():
    assert UdaPlan(skada="MCC,DANN").skada == ("DANN", "MCC")
    with pytest.raises(TransferkitError, match="skada: unknown 'Dann' .*did you mean 'DANN'"):
        UdaPlan(skada="Dann")


# kills: _own_method's "unlabeled" in streams check dropped, and its message keyed on the wrong stream
def test_an_own_method_that_reads_no_unlabelled_target_image_is_refused_with_its_reason():
    with pytest.raises(TransferkitError, match="methods: clip reads no unlabelled target image: it does not adapt"):
        UdaPlan(methods="dann,clip")  # clip reads the labelled source only
    with pytest.raises(TransferkitError, match="methods: finetune_adv reads target labels"):
        UdaPlan(methods="finetune_adv")  # source, target and unlabeled


# ---- bench uda: the configs of one pair ---------------------------------------------------

# kills: pair_config's seed, name, learning rates, eval_every and patience left at other values
def test_pair_config_gives_each_seed_the_plans_budget_and_the_pairs_tuned_settings():
    b = Budget(pretrain_steps=7, batch_size=16, lr=3e-4)
    cfg = pair_config("mnist", "digits", 2, b, ["source_only", "dann", "coral"], 9)
    assert cfg.seed == 2 and cfg.name == "uda-mnist-digits" and cfg.k is None and cfg.select_on == "none"
    assert cfg.options == {"dann": TUNED["mnist", "digits"]["dann"]}
    assert (cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.lr) == (7, 16, 3e-4)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr) == (9, 16, 3e-4)
    assert cfg.train.eval_every == 9 and cfg.train.patience is None  # a fixed budget: no early stop


# kills: adapting's default (a Budget without methods) -> none, and one's own methods taken as those
# outside ADAPTATION (source_only and target_only joining them)
def test_adapting_lists_the_plans_adaptation_methods_only():
    assert adapting(Budget()) == list(ADAPTATION)
    assert adapting(UdaPlan(methods="target_only,mcc,dann")) == ["dann", "mcc"]


# kills: the SKADA epochs rounded down (`//`) instead of to the nearest, the at-least-one dropped,
# and a batch that fills exactly one epoch refused (`spe > 1`)
def test_adaptation_epochs_round_the_steps_to_the_nearest_whole_epoch_and_at_least_one():
    data = SimpleNamespace(source=SimpleNamespace(train=range(100)), target=SimpleNamespace(train=range(80)))
    assert adaptation_epochs(data, Budget(batch_size=32, adapt_steps=5)) == (2, 6)  # 3 steps an epoch: 5/3 -> 2
    assert adaptation_epochs(data, Budget(batch_size=32, adapt_steps=1)) == (1, 3)  # 1/3 -> 0 -> at least one
    assert adaptation_epochs(data, Budget(batch_size=100, adapt_steps=2)) == (2, 2)  # one batch an epoch


# kills: describe's options unsorted, and None written as "None" (the table's and the tune jobs' text)
def test_describe_sorts_the_options_and_writes_none():
    assert describe({"weight": 0.1, "depth": 2, "lr_schedule": None}) == "depth=2, lr_schedule=none, weight=0.1"


# kills: tune_job's row without its head (the pair, seed and setting) or with 0 for its fit's wall seconds
def test_tune_job_returns_its_head_with_the_accuracy_and_the_fits_wall_seconds(monkeypatch, one_thread):
    from helpers import seeded_lenet, toy_domain

    import transferkit.bench.uda_tune as tune
    data = SimpleNamespace(source=SimpleNamespace(train=toy_domain(n=32)),
                           target=SimpleNamespace(train=toy_domain(n=32, seed=1), val=toy_domain(n=16, seed=2)))
    monkeypatch.setattr(tune, "process_domains", lambda cfg: data)  # no domain to build, no source to train
    monkeypatch.setattr(tune, "pretrain_source", lambda cfg, data, log: (seeded_lenet(), {}))
    cfg = pair_config("digits", "digits+noise", 0, Budget(batch_size=16), ["source_only"], 2)
    row = tune.tune_job(cfg, "dann", {"weight": 1.0}, {"method": "dann", "seed": 0, "split": "val"})
    assert (row["method"], row["seed"], row["split"]) == ("dann", 0, "val")
    assert 0 <= row["accuracy"] <= 1 and row["wall_s"] > 0


# ---- bench flex: the plan ---------------------------------------------------------------

# kills: ratios `>= 1` -> `>= 0`; the seeds / seeds_ratio3 check of either dropped; val_fraction
# `< 0.75` -> `<= 0.75` and `0 <` -> `0 <=`; val_per_class `>= 1` -> `>= 0`; the image_targets checks
def test_flex_plan_refuses_each_value_one_past_its_bound():
    ok = flex.FlexPlan(ratios=[1], seeds=1, seeds_ratio3=1, val_fraction=0.74, val_per_class=1,
                       targets=["mnistm"], image_targets=["mnistm"])
    assert (ok.ratios, ok.image_targets) == ([1], ["mnistm"])
    for changes, words in (({"ratios": [0, 3]}, r"ratios must be >= 1, got \[0, 3\]"),
                           ({"seeds": 0}, "seeds and seeds_ratio3 must be >= 1"),
                           ({"seeds_ratio3": 0}, "seeds and seeds_ratio3 must be >= 1"),
                           ({"val_fraction": 0.75}, r"val_fraction must be in \(0, 0.75\), got 0.75"),
                           ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 0.75\)"),
                           ({"val_per_class": 0}, "val_per_class must be >= 1, got 0"),
                           ({"targets": ["mnistm"], "image_targets": ["digits"]},
                            r"image_targets \['digits'\] are not among the targets \['mnistm'\]"),
                           ({"image_targets": "mnistm,mnistm"}, "image_targets: mnistm given more than once"),
                           ({"targets": None}, "targets: none given")):
        with pytest.raises(TransferkitError, match=words):
            flex.FlexPlan(**changes)


# kills: the quick plan's seeds, ratios and targets
def test_flex_quick_plan_is_one_seed_of_ratio_30_on_three_targets():
    p = flex.plan(True)
    assert p.quick and p.ratios == [30] and p.seeds == 1 and p.n_seeds(30) == 1
    assert p.target_names() == flex.QUICK_TARGETS == ["mnist+blur", "mnist+inversion", "mnistm"]


# ---- bench flex: the target splits ------------------------------------------------------

# kills: mnist_halves' halves overlapping (perm[half - 1:]) and another generator seed
def test_the_halves_are_disjoint_cover_the_domain_and_are_fixed(monkeypatch):
    from helpers import toy_domain
    monkeypatch.setattr(flex, "load_domain", lambda name: toy_domain(n=101))
    a, b = flex.mnist_halves("toy")
    assert len(a) == 50 and len(b) == 51
    assert sorted(torch.cat([a, b]).tolist()) == list(range(101))  # disjoint: no index twice
    perm = torch.randperm(101, generator=torch.Generator().manual_seed(2002))  # every directory's halves
    assert torch.equal(torch.cat([a, b]), perm)


# kills: target_splits taking the target half for another source's domain (any mnistm), or not for
# mnist's mnistm; test_fraction 0.25 -> 0.2
def test_target_splits_use_the_target_half_of_the_source_domain_only(monkeypatch):
    from helpers import toy_domain
    monkeypatch.setattr(flex, "load_domain", lambda spec, **kw: toy_domain(n=800))  # as each domain, 800 images
    half = torch.arange(400)

    def total(spec, source):
        s = flex.target_splits(spec, half, source=source, val_per_class=1000)
        assert abs(len(s.test) - 0.25 * (len(s.train) + len(s.val) + len(s.test))) < 5  # a quarter is test
        return len(s.train) + len(s.val) + len(s.test)
    assert total("digits+noise", "digits") == 400  # the source domain with a shift: the target half
    assert total("mnistm", "mnist") == 400  # mnistm's digits are mnist's
    assert total("mnistm", "syndigits") == total("digits", "mnist") == 800  # other domains: every image


# ---- bench flex: a directory's validation split -------------------------------------------

# kills: check_validation_split reading another target's job (the glob without "-r"), a job without
# n_val refused, and a smaller split taken (`old >= n_val`)
def test_the_validation_split_is_checked_against_this_targets_own_jobs(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "mnistm-r30-s0-flex.json").write_text(json.dumps({"n_val": 300}))
    flex.check_validation_split(tmp_path, "mnist", 500)  # mnistm's job is not mnist's
    flex.check_validation_split(tmp_path, "mnistm", 300)
    for n in (299, 301):
        with pytest.raises(TransferkitError, match=rf"validated on 300 images, this plan's mnistm validation split "
                                                   rf"has {n}: use another directory"):
            flex.check_validation_split(tmp_path, "mnistm", n)
    (tmp_path / "jobs" / "digits-r3-s0-flex.json").write_text(json.dumps({"accuracy": 0.5}))  # before n_val
    flex.check_validation_split(tmp_path, "digits", 123)


# kills: candidate_accuracy's net.eval() dropped (a candidate net left in training mode scores with
# batch statistics)
def test_candidate_accuracy_scores_the_network_in_eval_mode():
    from helpers import tiny_net, toy_domain
    net = tiny_net(4).train()
    assert flex.candidate_accuracy(net, "all", toy_domain(n=16)) == flex.accuracy(net, toy_domain(n=16))
    assert not net.training


# ---- bench flex: the reports of a directory ----------------------------------------------

def _jobs(bench_dir, targets=("t",), source="mnist/half", ratio=30, seeds=(0, 1)):
    """One finished job file per method of flex.METHODS, target and seed (as run_job writes them)."""
    (bench_dir / "jobs").mkdir(exist_ok=True)
    for t in targets:
        for seed in seeds:
            for m in flex.METHODS:
                row = {"source": source, "target": t, "setting": f"ratio={ratio}", "ratio": ratio, "seed": seed,
                       "method": m, "accuracy": 0.5 + 0.1 * (m == "flex"), "wall_s": 1.0, "steps": 10,
                       "base_accuracy": 0.4, "ap10": 0.3}
                if m == "flex":
                    row.update(picked="fc1", candidate_val_accuracy={"fc1": 0.6, "all": 0.5},
                               candidate_test_accuracy={"fc1": 0.6, "all": 0.5})
                name = f"{flex.path_part(t)}-r{ratio}-s{seed}-{m}.json"
                (bench_dir / "jobs" / name).write_text(json.dumps(row))


# kills: selection.md and image_units.md written without rows of theirs, the per-target and
# units-picked figures left out, the header dropped from each table
def test_reports_write_a_file_only_for_rows_that_have_its_records_and_head_each_table(tmp_path):
    _jobs(tmp_path)
    flex.directory_reports(tmp_path, lambda *a: None, make_plan("flex", False))
    assert not (tmp_path / "selection.md").exists() and not (tmp_path / "image_units.md").exists()
    assert (tmp_path / "per_unit_t.png").is_file() and (tmp_path / "units_picked.png").is_file()
    for name in ("table_ratio30.md", "wins.md", "wall.md", "retrieval.md"):
        assert (tmp_path / name).read_text().startswith("Budget: source pre-training up to 1500 steps"), name


# kills: directory_reports ordering the targets by mnist's list whatever the source
def test_reports_of_a_syndigits_directory_list_its_targets_in_its_order(tmp_path):
    _jobs(tmp_path, targets=("digits", "syndigits+blur"), source="syndigits/half", seeds=(0,))
    flex.directory_reports(tmp_path, lambda *a: None)
    table = (tmp_path / "table_ratio30.md").read_text()
    assert table.index("| syndigits+blur (40.0) |") < table.index("| digits (40.0) |")  # SYN_TARGETS' order


# kills: rewrite_reports raising on a broken results.json, dropping the stored plan from the
# rewritten config, or not heading the tables with it; _stored_flex_plan ignoring the stored `quick`
def test_rewrite_reports_keeps_the_stored_plan_and_rewrites_a_broken_results_file(tmp_path):
    import dataclasses
    _jobs(tmp_path)
    stored = dataclasses.asdict(make_plan("flex", True, ["ratios=30"]))
    (tmp_path / "results.json").write_text(json.dumps({"config": {"benchmark": "flex", "plan": stored}}))
    flex.rewrite_reports(tmp_path)
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert config["rewritten_from_jobs"] and config["plan"]["quick"] and config["plan"]["ratios"] == [30]
    assert (tmp_path / "wall.md").read_text().startswith("Quick run (--quick): source pre-training up to 300")
    (tmp_path / "results.json").write_text('{"config": {"pla')  # torn: what a rewrite is for
    flex.rewrite_reports(tmp_path)
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert "plan" not in config and len(json.loads((tmp_path / "results.json").read_text())["rows"]) == 16
    assert (tmp_path / "wall.md").read_text().startswith("mean wall seconds")  # no plan: no header
    for broken in ('{"config": "x"}', '[1, 2]', '{"config": [1]}'):  # JSON, but no results file's shape
        (tmp_path / "results.json").write_text(broken)
        flex.rewrite_reports(tmp_path)
        assert "plan" not in json.loads((tmp_path / "results.json").read_text())["config"]


# kills: _stored_flex_plan letting a plan error through (only TypeError / ValueError caught), or
# reading `quick` as False
def test_a_stored_plan_that_is_no_flex_plan_is_none():
    assert flex._stored_flex_plan(None) is None and flex._stored_flex_plan([1]) is None
    assert flex._stored_flex_plan({"ratios": [0]}) is None  # refused by FlexPlan's checks
    quick = flex._stored_flex_plan({"quick": True})
    assert quick.quick and quick.train.steps == 150 and quick.targets == flex.QUICK_TARGETS
