import json
import re

import pytest
import torch
from safetensors.torch import load_file

from transferkit.bench import load_suites, make_plan
from transferkit.bench.uda import ADAPTATION, Budget, UdaPlan, budget, table3
from transferkit.errors import TransferkitError


def test_uda_suite_is_registered_and_quick_budget_is_small():
    assert "uda" in load_suites()
    quick, full = budget(True), budget(False)
    assert len(quick.seeds) == 1 and quick.adapt_steps < full.adapt_steps and len(full.seeds) == 5
    assert len(full.pairs) == 5 and {"dann", "adda", "dsn", "multilayer_adv"} <= set(ADAPTATION)
    b = make_plan("uda", False, ["seeds=0,1,2", "adapt_steps=7", "pairs=syndigits:mnist,mnist:mnist+inversion"])
    assert b.seeds == (0, 1, 2) and b.adapt_steps == 7 and b.pretrain_steps == 1000
    assert b.pairs == (("syndigits", "mnist"), ("mnist", "mnist+inversion"))
    assert make_plan("uda", False, ["pairs=[[mnist, digits]]"]).pairs == (("mnist", "digits"),)
    assert make_plan("uda_tune", False).seeds == (0, 1, 2)  # the grid's own defaults
    for bad, message in (("pairs=mnist", "source:target"), ("seeds=", "seeds: the list is empty"),
                         ("adapt_steps=0", ">= 1"), ("quick=true", "--quick"),
                         ("seeds=0,0", "seeds: 0 given more than once"),
                         ("seeds=-1", r"values must be >= 0, got \[-1\]"),
                         ("pairs=mnist:digits,mnist:bogus", "unknown domain 'bogus'"),
                         ("pairs=mnist:digits,mnist:digits", "pairs: mnist:digits given more than once"),
                         ("lr=-1", "lr must be a finite number > 0"),
                         ("lr=.inf", "lr must be a finite number > 0, got inf"),
                         ("seeds=1.5", "1.5 is not a whole number")):
        with pytest.raises(TransferkitError, match=message):
            make_plan("uda", False, [bad])


def test_table3_form_reports_mean_and_standard_error():
    rows = [{"method": m, "seed": s, "accuracy": a, "wall_s": 2.0, "library": lib}
            for m, lib, accs in (("source_only", "transferkit", (0.5, 0.7)), ("dann", "transferkit", (0.6, 0.8)),
                                 ("skada:DANN", "skada", (0.4, 0.4)))
            for s, a in enumerate(accs)]
    text = table3("mnist", "digits", rows, Budget(seeds=(0, 1), pretrain_steps=10, adapt_steps=5), 1, 5)
    assert "| Source only | 0.600 ± 0.100 | 2 | 2.0 |" in text
    assert "| Gradient reversal (dann) | 0.700 ± 0.100 | 2 | 2.0 |" in text
    assert "| skada 0.6 | DANN | 0.400 ± 0.000 | 2 | 2.0 |" in text
    # the checks: dann - source_only is +0.1 on both seeds (paired: SE 0), best 0.700 vs 0.400, walls
    assert "| dann − source_only (paired, points) | +10.0 ± 0.0 | 2 |" in text
    assert ("| best transferkit − best SKADA (means; best of 2 and of 1 by test mean) | dann 0.700 − DANN 0.400 = "
            "+30.0 points | |") in text
    assert "| dann − SKADA DANN (paired, points) | +30.0 ± 10.0 | 2 |" in text  # seeds: 0.6 − 0.4, 0.8 − 0.4
    assert ("| dann / SKADA DANN training seconds (means; transferkit trains channels-last, SKADA in the layout it is "
            "given, the default) | 2.0 / 2.0 s | 2 / 2 |") in text
    assert "multilayer_adv −" not in text  # not run: not compared


def test_the_wall_time_check_is_marked_mixed_when_its_rows_come_from_several_invocations(monkeypatch):
    from transferkit import runtime
    from transferkit.bench.uda import issue_checks
    from transferkit.experiment import job_environment
    from transferkit.jobs import map_jobs
    rows = [{"method": m, "seed": 0, "accuracy": 0.5, "wall_s": 2.0, "library": lib, "invocation": run}
            for m, lib, run in (("dann", "transferkit", "20261202-041511-1"),
                                ("skada:DANN", "skada", "20261202-041511-1"))]
    assert not any("mixed" in line for line in issue_checks(rows))  # one invocation
    rows[1]["invocation"] = "20261202-043000-2"  # SKADA's row timed after a resume
    lines = issue_checks(rows)
    assert any(line.startswith("| dann / SKADA DANN training seconds") and "(mixed) | 2.0 / 2.0 s" in line
               for line in lines), lines
    assert lines[-1] == ("(mixed): the seconds compared were timed in 2 invocations of the benchmark (a resumed run; "
                         "the machine's load may differ between them, so compare rows of one): 20261202-041511-1, "
                         "20261202-043000-2")
    monkeypatch.delenv(runtime.INVOCATION_VARIABLE, raising=False)  # rows record the command that made them
    first = job_environment(None)["invocation"]
    assert job_environment(None)["invocation"] == first and runtime.invocation() == first
    runtime.new_invocation()  # what the CLI does for each command
    seen = {}
    map_jobs(runtime.invocation, [(), ()], 2, seen.__setitem__)  # worker processes: this command's
    assert set(seen.values()) == {runtime.invocation()}
    runtime.new_invocation()
    monkeypatch.setattr(runtime.os, "getpid", lambda: -1)
    assert runtime.invocation() != first and re.search(r"--1(-\d+)?$", runtime.invocation())  # -N: the Nth here


def test_paired_differences_pair_rows_by_seed():
    from transferkit.evaluate import paired_difference
    rows = [{"method": "a", "seed": 0, "accuracy": 0.9}, {"method": "a", "seed": 1, "accuracy": 0.5},
            {"method": "b", "seed": 1, "accuracy": 0.4}, {"method": "b", "seed": 0, "accuracy": 0.7},
            {"method": "b", "seed": 2, "accuracy": 0.1}]  # seed 2 has no row of a: left out
    mean, se, n = paired_difference(rows, "a", "b")
    assert n == 2 and mean == pytest.approx(0.15) and se == pytest.approx(0.05)
    assert paired_difference(rows, "a", "c") is None


def test_uda_tune_scores_every_setting_on_target_validation_only(monkeypatch, tmp_path, one_thread):
    import transferkit.bench.uda_tune as tune
    from transferkit.fitting import evaluate_on

    assert "uda_tune" in load_suites()
    assert len(tune.DANN_GRID) == 23 and len(tune.MULTILAYER_GRID) == 23
    assert tune.MCC_GRID == [{"detach_weights": True}, {"detach_weights": False}]  # the default first
    assert {"hidden": 500, "depth": 2, "lr_schedule": "dann", "weight": 0.1} in tune.DANN_GRID  # the default
    scored = []

    def spy(forward, domain):
        scored.append(domain.name)
        return evaluate_on(forward, domain)
    monkeypatch.setattr(tune, "evaluate_on", spy)
    b = make_plan("uda_tune", True, ["pairs=digits:digits+noise", "pretrain_steps=4", "adapt_steps=2",
                                     "batch_size=16"])
    rows = tune.uda_tune_suite(b, tmp_path, log=lambda *a: None)
    assert len(rows) == 1 + len(tune.settings(True)) == 7
    assert scored and all(name.endswith("/val") for name in scored)
    assert all(r["split"] == "val" and 0 <= r["accuracy"] <= 1 for r in rows)
    table = (tmp_path / "uda_tune.md").read_text()
    assert table.count("| dann |") == 2 + 1 and "| source_only | - |" in table  # the grid, then the choice
    chosen = json.loads((tmp_path / "selected.json").read_text())["digits:digits+noise"]
    assert set(chosen) == {"dann", "multilayer_adv", "mcc"} and "| digits → digits+noise | dann |" in table
    best = max(tune.DANN_GRID[:2], key=lambda o: next(r["accuracy"] for r in rows if r.get("options") == o))
    assert chosen["dann"]["options"] == best
    again = tune.uda_tune_suite(b, tmp_path, log=lambda *a: None)  # finished jobs are read back
    assert sorted(r["accuracy"] for r in again) == sorted(r["accuracy"] for r in rows)
    job = sorted((tmp_path / "jobs").glob("*.json"))[0]
    stale = {**json.loads(job.read_text()), "config_digest": "0" * 16}  # from another source network
    job.write_text(json.dumps(stale))
    with pytest.raises(TransferkitError, match="was computed from another source network, data or budget"):
        tune.uda_tune_suite(b, tmp_path, log=lambda *a: None)
    job.write_text(json.dumps({k: v for k, v in stale.items() if k != "config_digest"}))  # a v3 row: read back
    assert len(tune.uda_tune_suite(b, tmp_path, log=lambda *a: None)) == len(rows)


def test_tsne_figure_draws_the_adapted_network_of_a_finished_run(tmp_path, one_thread):
    from transferkit.bench.uda import pair_config, tsne_figure
    from transferkit.experiment import run_experiment
    b = UdaPlan(seeds=(0,), pairs="digits:digits+noise", pretrain_steps=4, adapt_steps=2, tsne_points=30)
    cfg = pair_config("digits", "digits+noise", 0, b, ["dann"], 2)
    run_experiment(cfg, run_dir=tmp_path / "digits-digits+noise" / "s0", log=lambda *a: None)
    logged = []
    assert tsne_figure(tmp_path, "digits", "digits+noise", b, logged.append).exists()
    missing = [m for m in logged if m.startswith("t-SNE: no adapted")]
    assert len(missing) == 1 and "multilayer_adv" in missing[0], logged  # dann's saved model is found


def test_a_batch_larger_than_both_training_sets_is_named():
    from types import SimpleNamespace

    from transferkit.bench.uda import adaptation_epochs
    data = SimpleNamespace(source=SimpleNamespace(train=range(100)), target=SimpleNamespace(train=range(80)))
    assert adaptation_epochs(data, Budget(batch_size=32, adapt_steps=6)) == (2, 6)
    with pytest.raises(TransferkitError, match=r"batch_size 128 is larger than both training sets \(100 source"):
        adaptation_epochs(data, Budget(batch_size=128))


def test_per_pair_choice_takes_each_pairs_best_validation_setting_and_the_first_on_ties():
    from transferkit.bench.uda_tune import DANN_GRID, describe, per_pair_choice
    a, b, c = DANN_GRID[:3]
    rows = [{"source": s, "target": t, "method": "dann", "setting": describe(o), "accuracy": acc}
            for s, t, o, accs in (("x", "y", a, (0.5, 0.7)), ("x", "y", b, (0.7, 0.6)),
                                  ("x", "y", c, (0.6, 0.6)), ("u", "v", a, (0.4, 0.4)),
                                  ("u", "v", b, (0.3, 0.5 + 1e-8)), ("u", "v", c, (0.1, 0.1)))
            for acc in accs]
    rows += [{"source": "x", "target": "y", "method": "source_only", "setting": "-", "accuracy": 0.55}]
    chosen = per_pair_choice(rows, (("x", "y"), ("u", "v")))
    assert chosen["x:y"]["dann"]["options"] == b and chosen["x:y"]["dann"]["val_accuracy"] == pytest.approx(0.65)
    assert chosen["x:y"]["dann"]["source_only"] == 0.55 and "multilayer_adv" not in chosen["x:y"]
    assert chosen["u:v"]["dann"]["options"] == a and chosen["u:v"]["dann"]["source_only"] is None  # a tie: a first
    import numpy as np  # 556 of 807 correct both ways, as float32 accuracies: means 2e-8 apart that 6-decimal
    f32 = [[float(np.float32(k / 269)) for k in ks] for ks in ((150, 150, 256), (150, 152, 254))]  # rounding split
    rows = [{"source": "p", "target": "q", "method": "dann", "setting": describe(o), "accuracy": acc}
            for o, accs in ((a, f32[0]), (b, f32[1])) for acc in accs]
    assert per_pair_choice(rows, (("p", "q"),))["p:q"]["dann"]["options"] == a


def test_the_benchmark_runs_each_pairs_validation_choice_and_defaults_elsewhere():
    import inspect

    from transferkit.bench.uda import SKADA_PAIRS, TUNED, pair_config
    from transferkit.bench.uda_tune import GRID
    from transferkit.methods import get_method
    assert set(TUNED) == set(SKADA_PAIRS)
    for pair, methods in TUNED.items():
        assert set(methods) == set(GRID)
        for method, options in methods.items():
            assert options in GRID[method], (pair, method)  # chosen from the grid, nothing else
            inspect.signature(get_method(method).__init__).bind_partial(None, **options)
    b = Budget()
    cfg = pair_config("syndigits", "mnist", 0, b, ["source_only", "dann", "mmd", "mcc", "multilayer_adv"], 5)
    assert cfg.options == TUNED["syndigits", "mnist"]
    assert pair_config("syndigits", "mnist", 0, b, ["target_only"], 5).options == {}
    assert pair_config("mnist", "mnistm", 0, b, ["source_only", "dann"], 5).options == {}
    assert "chosen on target validation" not in table3("mnist", "digits", [], b, 1, 5)  # no tuned method ran
    head = table3("mnist", "digits", [{"method": "dann", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}], b, 1, 5)
    assert "`dann`: " in head and "(chosen on target validation)" in head
    assert "`mcc`: " not in head and "`multilayer_adv`: " not in head  # settings of methods without rows: not named


def test_skada_rows_start_from_the_pinned_network_and_refuse_a_row_of_other_settings(tmp_path, monkeypatch,
                                                                                     one_thread):
    import transferkit.bench.uda as uda
    from transferkit.experiment import run_experiment
    b = UdaPlan(seeds=(0,), pairs="digits:digits+noise", pretrain_steps=4, adapt_steps=2)
    cfg = uda.pair_config("digits", "digits+noise", 0, b, ["source_only"], 2)
    run_dir = tmp_path / "digits-digits+noise" / "s0"
    run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    started = []

    def fake_skada(name, net, *args):
        started.append(net.state_dict())
        return {"accuracy": 0.5, "wall_s": 1.0}
    monkeypatch.setattr(uda.skada_compare, "run_skada", fake_skada)
    rows = uda.skada_rows(cfg, 1, b, tmp_path, lambda *a: None, run_dir=run_dir)
    pinned = load_file(str(run_dir / "source.safetensors"))
    assert len(rows) == len(uda.skada_compare.SKADA_METHODS) and all(r["config_digest"] for r in rows)
    assert all(torch.equal(s[k], pinned[k]) for s in started for k in pinned)
    assert uda.skada_rows(cfg, 1, b, tmp_path, lambda *a: None, run_dir=run_dir) == rows  # read back
    with pytest.raises(TransferkitError, match="another SKADA version, network, data or budget"):
        uda.skada_rows(cfg, 2, b, tmp_path, lambda *a: None, run_dir=run_dir)  # other epochs


def test_paired_difference_refuses_two_rows_of_one_method_and_seed():
    from transferkit.errors import TransferkitError
    from transferkit.evaluate import paired_difference

    rows = [{"method": "a", "seed": 0, "accuracy": 0.5}, {"method": "a", "seed": 0, "accuracy": 0.9},
            {"method": "b", "seed": 0, "accuracy": 0.4}]
    with pytest.raises(TransferkitError, match="'a' has 2 rows for 1 seeds"):
        paired_difference(rows, "a", "b")


def test_uda_plan_chooses_methods_and_skada_rows_by_name():
    b = make_plan("uda", False, ["methods=mcc,dann", "skada="])
    assert b.methods == ("source_only", "dann", "mcc") and b.skada == ()  # the table's order; source_only always
    assert make_plan("uda", False).methods == ("source_only", *ADAPTATION, "target_only")
    for bad, message in (("methods=dann,bogus", "methods: unknown 'bogus'; known: source_only, dann"),
                         ("skada=MCC,mcc", r"skada: unknown 'mcc' \(did you mean 'MCC'\?\); known: SourceOnly"),
                         ("methods=dan,xyz", r"methods: unknown 'dan' \(did you mean 'dann'\?\), 'xyz'; known:"),
                         ("methods=", "methods: the list is empty"),
                         ("methods=dann,dann", "dann given more than once")):
        with pytest.raises(TransferkitError, match=message):
            make_plan("uda", False, [bad])


def test_uda_suite_runs_the_chosen_rows_and_a_row_does_not_depend_on_the_others(tmp_path, monkeypatch, one_thread):
    import transferkit.bench.uda as uda
    monkeypatch.setattr(uda.skada_compare, "available", lambda: True)
    monkeypatch.setattr(uda.skada_compare, "run_skada", lambda name, *a, **k: {"accuracy": 0.5, "wall_s": 1.0})
    suite = load_suites()["uda"][0]
    tiny = ["pairs=mnist:digits", "seeds=0", "pretrain_steps=4", "adapt_steps=2", "tsne_points=20", "batch_size=256"]

    def run(where, methods, skada):
        plan = make_plan("uda", False, [*tiny, f"methods={methods}", f"skada={skada}"])
        return {r["method"]: r for r in suite(plan, tmp_path / where, lambda *a: None)}
    first = run("a", "entmin", "MCC")
    assert set(first) == {"source_only", "entmin", "skada:MCC"}  # no ceiling, no other SKADA row
    assert (tmp_path / "a" / "uda_tables.md").read_text().startswith(
        "Budget: pairs mnist → digits; seeds 0; pre-training up to 4 steps, adaptation 2 steps rounded to whole SKADA "
        "epochs of each pair (at least one).\n\n### mnist → digits")
    assert not (tmp_path / "a" / "mnist-digits" / "ceiling-s0").exists()
    both = run("a", "entmin,coral", "")  # the same directory with another selection: entmin is read back
    assert set(both) == {"source_only", "entmin", "coral"}
    assert both["entmin"] == first["entmin"]
    assert run("b", "coral", "")["coral"]["accuracy"] == both["coral"]["accuracy"]  # alone, in a new directory


def test_uda_pairs_take_file_domains_whose_paths_become_safe_folder_names(tmp_path, one_thread):
    import numpy as np
    from sklearn.datasets import load_digits

    from transferkit.bench import _pair, path_part
    assert _pair("mnist:npz:a/x.npz") == ("mnist", "npz:a/x.npz") and _pair("folder:b:digits") == ("folder:b", "digits")
    assert path_part("mnist", "mnist+inversion") == "mnist-mnist+inversion"  # built-in names as they were
    assert path_part("mnist", "npz:a/x.npz").startswith("mnist-npz_a_x.npz-")
    assert path_part("mnist", "npz:a/x.npz") != path_part("mnist", "npz:a_x.npz")  # a hash keeps them apart
    (tmp_path / "data").mkdir()
    digits = load_digits()
    x = np.kron(digits.images[:400].astype(np.uint8) * 15, np.ones((4, 4), np.uint8))[:, 2:30, 2:30]
    np.savez(tmp_path / "data" / "thick.npz", x=255 - x, y=digits.target[:400])
    spec = f"npz:{tmp_path / 'data' / 'thick.npz'}"
    plan = make_plan("uda", False, [f"pairs=digits:{spec}", "seeds=0", "pretrain_steps=4", "adapt_steps=2",
                                    "tsne_points=20", "batch_size=256", "methods=dann", "skada="])
    rows = load_suites()["uda"][0](plan, tmp_path / "bench", lambda *a: None)
    assert {(r["method"], r["target"]) for r in rows} == {("source_only", spec), ("dann", spec)}
    assert (tmp_path / "bench" / path_part("digits", spec) / "s0" / "results.json").is_file()
    assert len(list((tmp_path / "bench").glob("tsne_digits_npz_*.png"))) == 1


MEAN_MATCH = ("import torch\n"
              "from transferkit.methods.adaptation import AdaptationMethod\n"
              "from transferkit.methods.base import register\n\n\n"
              "@register\nclass MeanMatch(AdaptationMethod):\n    name = 'meanmatch'\n\n"
              "    def losses(self, batch):\n"
              "        (x_s, y_s), x_t = batch.source, batch.unlabeled\n"
              "        f_s, f_t = self.taps(x_s, x_t, ['fc1'])\n"
              "        gap = (f_s['fc1'].mean(0) - f_t['fc1'].mean(0)).pow(2).sum()\n"
              "        return {**self.base_terms(f_s['head'], y_s, f_t['head']), 'mean': gap}\n")


def test_a_plugin_adaptation_method_joins_the_uda_table_and_a_label_reading_one_is_refused(tmp_path, plugin,
                                                                                        one_thread, monkeypatch):
    plugin("mean_match_plugin", MEAN_MATCH)
    import mean_match_plugin  # noqa: F401  (registers meanmatch)
    plan = make_plan("uda", False, ["pairs=mnist:digits", "seeds=0", "pretrain_steps=4", "adapt_steps=2",
                                    "tsne_points=20", "batch_size=256", "methods=meanmatch,dann", "skada="])
    assert plan.methods == ("source_only", "dann", "meanmatch")
    rows = load_suites()["uda"][0](plan, tmp_path, lambda *a: None)
    assert [r["method"] for r in rows] == ["source_only", "dann", "meanmatch"]
    table = (tmp_path / "uda_tables.md").read_text()
    assert table.index("| Gradient reversal (dann) |") < table.index("| meanmatch | ")
    with pytest.raises(TransferkitError, match="methods: finetune reads target labels"):
        make_plan("uda", False, ["methods=finetune"])
    plugin("broken_plugin", "raise ValueError('a typo in the plugin')\n")
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "broken_plugin")
    with pytest.raises(TransferkitError, match="importing plugin module 'broken_plugin' .* failed: ValueError"):
        make_plan("uda", False, ["methods=dann,my_method"])  # not "unknown 'my_method'"


def test_a_uda_directory_from_before_the_row_selection_resumes_with_every_row(tmp_path):
    import dataclasses

    from transferkit.bench import _check_same_plan, _resumed_selection
    from transferkit.bench.skada_compare import SKADA_METHODS
    from transferkit.io import write_json
    old = {k: v for k, v in dataclasses.asdict(make_plan("uda", True)).items() if k not in ("methods", "skada")}
    write_json(tmp_path / "plan.json", {"benchmark": "uda", **old})  # written before methods and skada existed
    plan = _resumed_selection("uda", False, tmp_path, [])
    assert plan.quick and plan.pretrain_steps == old["pretrain_steps"]  # the stored plan is kept ...
    assert plan.methods == make_plan("uda", False).methods and plan.skada == SKADA_METHODS  # ... with every row
    _check_same_plan(tmp_path, plan, "uda")
    chosen = _resumed_selection("uda", False, tmp_path, ["methods=dann"])
    assert chosen.quick and chosen.methods == ("source_only", "dann")
    _check_same_plan(tmp_path, chosen, "uda")
    write_json(tmp_path / "plan.json", {"benchmark": "uda", **old, "workers": 3})  # a field this version lacks
    with pytest.raises(TransferkitError, match="holds a run of the uda benchmark: its plan has the fields"):
        _check_same_plan(tmp_path, make_plan("uda", True), "uda")
