"""Tests from a second mutation pass over ``bench/uda.py`` and ``bench/uda_tune.py``, after
``test_bench_plans_mutation`` and ``test_bench_tables_mutation``. Covered: the jobs and files ``uda_suite`` plans,
with its data, runs, SKADA rows and figure faked (the rows' SKADA epochs, the ceiling's pre-training budget, name and
directory, SKADA rows on the SKADA pairs only, the note when SKADA is absent, the table's steps and epochs, a quick
run's header naming the full budget, the figure of the first pair); ``skada_rows`` (a row's seed, epochs and file per
seed, SKADA scored on the target test split) and ``skada_digest`` (the learning rate, the test split and the seed);
``issue_checks`` with nothing to compare and with ``multilayer_adv`` against ``source_only`` only; ``table3``'s seeds,
labels, ceiling row, side-by-side ``multilayer_adv`` row and pre-training steps; ``_adapted``'s checkpoint fallback
with the pair's options; ``tsne_figure``'s seed, point counts, method selection, domain order, eval mode and a missing
network logged; ``tune_job``'s streams, engine config and seed; ``uda_tune_suite``'s job digests over the validation
split and the training budget; ``grid_table``'s header. No benchmark runs: the heavy calls are monkeypatched and the
data are ``helpers.toy_domain`` and ``tiny_net`` / ``seeded_lenet``.

Killed elsewhere, so not tested for here (some tests here kill them too): the methods' labels in ``table3``,
SKADA's wall column, ``_adapted``'s saved-model branch, a ``TransferkitError`` of ``tsne_figure`` raised, its log line
dropped, ``dann``'s ``fit_wall_s`` and SKADA DANN's count in the checks, SKADA rows from the ceiling's directory
(``test_bench_uda``, ``test_bench_tables_mutation``); ``choice_table``'s arrow, the last grid setting never chosen,
``tune_budget``'s quick seeds, the source_only row's "-" setting (``test_bench_tables_mutation``,
``test_bench_fewshot_zeroshot_second_mutation``, ``test_bench_plans_mutation``, ``test_bench_uda``).

Judged equivalent, so not tested: ``grid_table``'s missing-cell default ``[]`` -> ``[0.0]`` (``uda_tune_suite`` plans
every setting on every pair and seed, so no cell is missing; the original's error on one is never reached). Left
surviving: ``uda_tune_suite``'s source_only row with ``wall_s`` 0.0 -> 1.0 (no table or choice shows that figure; only
``results.json`` holds it). Not tried: ``Budget.budget``'s wording and the log lines' formats."""

from types import SimpleNamespace

import pytest
import torch
from helpers import seeded_lenet, tiny_net, toy_domain

import transferkit.bench.uda as uda
from transferkit.errors import TransferkitError

# --- uda_suite: the jobs, rows and files it plans ------------------------------------------------------------


def _fake_suite(monkeypatch, available=True):
    """``uda_suite``'s data, runs, SKADA rows and figure replaced by recorders: (runs, skada calls, figures)."""
    ran, skada, drawn = [], [], []

    def run_experiment(cfg, run_dir, log):
        ran.append((cfg, run_dir))
        return None, [{"method": m, "seed": cfg.seed, "accuracy": 0.5, "wall_s": 1.0} for m in cfg.methods]

    def skada_rows(cfg, epochs, b, bench_dir, log, run_dir):
        skada.append(((cfg.source, cfg.target), cfg.seed, epochs, run_dir))
        return [{"method": "skada:DANN", "seed": cfg.seed, "accuracy": 0.4, "wall_s": 1.0, "library": "skada"}]
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: "data")
    monkeypatch.setattr(uda, "adaptation_epochs", lambda data, b: (2, 6))
    monkeypatch.setattr(uda, "run_experiment", run_experiment)
    monkeypatch.setattr(uda, "skada_rows", skada_rows)
    monkeypatch.setattr(uda.skada_compare, "available", lambda: available)
    monkeypatch.setattr(uda, "tsne_figure", lambda bench_dir, s, t, b, log: drawn.append((s, t)))
    return ran, skada, drawn


def _plan(**changes):
    return uda.UdaPlan(**{"quick": True, "seeds": (3,), "pairs": "mnist:mnistm,mnist:digits", "pretrain_steps": 9,
                          "adapt_steps": 5, "methods": "dann,target_only", "skada": "DANN", **changes})


# kills: the rows' epochs -> the steps; the ceiling's rows left out of the results; the ceiling trained for the
# adaptation steps (not pretrain_steps), its "-ceiling" name suffix dropped, its run in the seed's own directory; SKADA
# rows on every pair (the SKADA-pair check dropped), from the ceiling's directory; the t-SNE of the last pair
def test_uda_suite_runs_the_ceiling_with_the_pretraining_budget_and_skada_on_its_pairs_only(tmp_path, monkeypatch):
    ran, skada, drawn = _fake_suite(monkeypatch)
    rows = uda.uda_suite(_plan(), tmp_path, lambda *a: None)
    assert {r["epochs"] for r in rows if r.get("library") == "transferkit"} == {2}
    assert [r["method"] for r in rows].count("target_only") == 2
    ceilings = [(cfg, d) for cfg, d in ran if cfg.methods == ["target_only"]]
    assert len(ceilings) == 2 and {cfg.train.steps for cfg, _ in ceilings} == {9}
    assert all(cfg.name.endswith("-ceiling") and d.name == "ceiling-s3" for cfg, d in ceilings)
    assert {cfg.train.steps for cfg, _ in ran if cfg.methods != ["target_only"]} == {6}
    assert skada == [(("mnist", "digits"), 3, 2, tmp_path / "mnist-digits" / "s3")]
    assert drawn == [("mnist", "mnistm")]


# kills: the table given (steps, epochs) swapped; a quick run's header compared with the quick budget, not the full
# run's; the "skada is not installed" note dropped
def test_uda_suite_tables_name_the_steps_epochs_and_the_full_budget_and_a_missing_skada(tmp_path, monkeypatch):
    _fake_suite(monkeypatch, available=False)
    logged = []
    uda.uda_suite(_plan(), tmp_path, logged.append)
    text = (tmp_path / "uda_tables.md").read_text()
    assert "adaptation 6 steps = 2 epochs of batch 64+64" in text
    assert text.startswith("Quick run (--quick): pairs mnist → mnistm, mnist → digits; seeds 3;")
    assert "The docs' tables are of the full run (pairs syndigits → mnist, mnist → mnistm, mnist → digits" in text
    assert "seeds 0, 1, 2, 3, 4; pre-training up to 1000 steps" in text
    # mnist → digits only: a SKADA pair
    assert sum("skada's deep methods cannot be imported" in str(m) for m in logged) == 1


# --- skada_rows and skada_digest -------------------------------------------------------------------------------


def _skada_data():
    return SimpleNamespace(source=SimpleNamespace(train=toy_domain(8)),
                           target=SimpleNamespace(train=toy_domain(8, seed=1), val=toy_domain(8, seed=2),
                                                  test=toy_domain(8, seed=3)))


# kills: a row's seed -> 0, its epochs dropped, its file without the seed (seed 1 reading seed 0's row); SKADA scored
# on the validation split; the digest taken for seed 0 whatever the seed
def test_skada_rows_are_per_seed_and_scored_on_the_target_test_split(tmp_path, monkeypatch):
    data, net, seen = _skada_data(), tiny_net(4), []
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(uda, "run_source_network", lambda cfg, data, run_dir, log: (net, {}))
    monkeypatch.setattr(uda.skada_compare, "version", lambda: "0.6")

    def run_skada(name, net, source, target, test, epochs, batch, lr, seed):
        seen.append((test, seed))
        return {"accuracy": 0.25 * (1 + seed), "wall_s": 1.0}
    monkeypatch.setattr(uda.skada_compare, "run_skada", run_skada)
    b = uda.UdaPlan(seeds=(0, 1), pairs="mnist:digits", skada="DANN")
    rows = {}
    for seed in (0, 1):
        cfg = uda.pair_config("mnist", "digits", seed, b, ["source_only"], 1)
        rows[seed] = uda.skada_rows(cfg, 2, b, tmp_path, lambda *a: None, run_dir=tmp_path)[0]
    assert (rows[1]["seed"], rows[1]["accuracy"], rows[1]["epochs"]) == (1, 0.5, 2)
    assert rows[1]["config_digest"] == uda.skada_digest("DANN", net, data, 2, b, 1) != rows[0]["config_digest"]
    assert sorted(p.name for p in (tmp_path / "skada").iterdir()) == ["mnist-digits-DANN-s0.json",
                                                                      "mnist-digits-DANN-s1.json"]
    assert all(test is data.target.test for test, _ in seen)


# kills: the learning rate or the target test split left out of a SKADA row's digest (a row of another one read back)
def test_skada_digest_changes_with_the_learning_rate_and_the_test_split(monkeypatch):
    monkeypatch.setattr(uda.skada_compare, "version", lambda: "0.6")
    data, net = _skada_data(), tiny_net(4)
    digest = uda.skada_digest("DANN", net, data, 2, uda.Budget(), 0)
    assert uda.skada_digest("DANN", net, data, 2, uda.Budget(lr=2e-3), 0) != digest
    data.target.test = toy_domain(8, seed=4)
    assert uda.skada_digest("DANN", net, data, 2, uda.Budget(), 0) != digest


# --- issue_checks and table3 -----------------------------------------------------------------------------------


def _rows(method, accs, library="transferkit", wall=1.0, seeds=None):
    return [{"method": method, "seed": s, "accuracy": a, "wall_s": wall, "library": library}
            for s, a in zip(seeds or range(len(accs)), accs)]


# kills: the empty-checks early return dropped (a header with no comparison); multilayer_adv − source_only left out;
# the best-of comparison made without a SKADA row (`if ours:`: max() of nothing)
def test_issue_checks_say_nothing_without_a_comparison_and_compare_multilayer_with_source_only():
    assert uda.issue_checks([]) == [] and uda.issue_checks(_rows("coral", (0.5, 0.6))) == []
    rows = _rows("source_only", (0.5, 0.6)) + _rows("multilayer_adv", (0.7, 0.7))
    lines = uda.issue_checks(rows)
    assert "| multilayer_adv − source_only (paired, points) | +15.0 ± 5.0 | 2 |" in lines
    assert not any("best transferkit" in line for line in lines)  # no SKADA row: no best-of comparison


# kills: the seeds line from the plan (not the rows); the ceiling row dropped; the method's name in place of its label;
# the side-by-side multilayer_adv row dropped; pre-training written as the adaptation steps; SKADA's wall column
def test_table3_names_the_rows_seeds_labels_the_ceiling_and_lists_multilayer_beside_skada():
    rows = (_rows("source_only", (0.5, 0.6), seeds=(3, 4)) + _rows("multilayer_adv", (0.7, 0.8), seeds=(3, 4))
            + _rows("target_only", (0.9, 0.9), seeds=(3, 4), wall=4.0)
            + _rows("skada:DANN", (0.4, 0.4), library="skada", wall=3.0, seeds=(3, 4)))
    text = uda.table3("mnist", "digits", rows, uda.Budget(pretrain_steps=7, adapt_steps=5), 1, 5)
    assert "LeNet, seeds [3, 4], adaptation 5 steps = 1 epoch of" in text and "pre-training 7 steps" in text
    assert "| Target only (ceiling) | 0.900 ± 0.000 | 2 | 4.0 |" in text
    assert "| Ours: multi-layer (multilayer_adv) | 0.750 ± 0.050 | 2 | 1.0 |" in text
    assert "| transferkit | multilayer_adv | 0.750 ± 0.050 | 2 | 1.0 |" in text
    assert "| skada 0.6 | DANN | 0.400 ± 0.000 | 2 | 3.0 |" in text


# --- _adapted and tsne_figure ----------------------------------------------------------------------------------


# kills: _adapted's checkpoint fallback building the method without the run's options (a state of another shape),
# or loading a checkpoint that lacks a weight (strict=False: the network left half initialised)
def test_adapted_falls_back_to_the_last_checkpoint_built_with_the_runs_options(tmp_path):
    from safetensors.torch import save_file

    from transferkit.methods import get_method
    cfg = uda.pair_config("mnist", "digits", 0, uda.Budget(), ["dann"], 1)
    cfg.options["dann"] = {"depth": 1, "hidden": 100}
    trained = get_method("dann")(seeded_lenet(seed=1), **cfg.options["dann"])
    ckpt = tmp_path / "checkpoints" / f"dann-{cfg.setting}-s0" / "main"
    ckpt.mkdir(parents=True)
    save_file({f"model.{k}": v.contiguous() for k, v in trained.state_dict().items()}, str(ckpt / "last.safetensors"))
    net = uda._adapted(cfg, tmp_path, "dann", seeded_lenet(seed=0))
    assert not net.training
    assert all(torch.equal(v, trained.net.state_dict()[k]) for k, v in net.state_dict().items())
    state = {f"model.{k}": v.contiguous() for k, v in trained.state_dict().items() if k != "net.head.weight"}
    save_file(state, str(ckpt / "last.safetensors"))  # one weight short: refused, tsne_figure logs it
    with pytest.raises(RuntimeError, match="net.head.weight"):
        uda._adapted(cfg, tmp_path, "dann", seeded_lenet(seed=0))


# kills: _adapted building the network from the checkpoint although the run saved its model (the model-file branch
# dropped)
def test_adapted_loads_the_saved_model_of_a_finished_run(tmp_path, monkeypatch):
    cfg = uda.pair_config("mnist", "digits", 2, uda.Budget(), ["dann"], 1)
    saved, loaded = seeded_lenet(seed=1).train(), []
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(uda, "model_path", lambda run_dir, c, name, seed: tmp_path / "model.safetensors")
    monkeypatch.setattr(uda, "load_job_network", lambda run_dir, name, seed: loaded.append((name, seed)) or saved)
    assert uda._adapted(cfg, tmp_path, "dann", seeded_lenet()) is saved and not saved.training
    assert loaded == [("dann", 2)]


def _fake_tsne(monkeypatch, tmp_path, adapted=None):
    import transferkit.plots as plots
    data = SimpleNamespace(source=SimpleNamespace(test=toy_domain(40)), target=SimpleNamespace(test=toy_domain(40, 1)))
    net, drawn, asked = seeded_lenet().train(), [], []
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(uda, "run_source_network", lambda cfg, data, run_dir, log: (net, {"run_dir": run_dir}))

    def _adapted(cfg, run_dir, name, pretrained):
        asked.append((name, cfg.seed, run_dir, cfg.options.get(name)))
        if adapted is not None:
            raise adapted
        return net
    monkeypatch.setattr(uda, "_adapted", _adapted)
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: drawn.append((panels, kw)) or path)
    return net, drawn, asked


# kills: the figure's seed -> 0 (not the plan's first), its points drawn with generator seed 0; the pair's tuned
# options not handed to _adapted (its config built for source_only alone); the target's points not cut to tsne_points;
# the adapted networks of methods the plan did not run asked for, or their panels named without "(after)"; the domains'
# names swapped; the source network left in train mode
def test_tsne_figure_draws_the_plans_first_seed_and_its_own_methods_on_tsne_points_each(tmp_path, monkeypatch):
    net, drawn, asked = _fake_tsne(monkeypatch, tmp_path)
    b = uda.UdaPlan(seeds=(5, 6), pairs="mnist:digits", methods="dann", tsne_points=10)
    uda.tsne_figure(tmp_path, "mnist", "digits", b, lambda *a: None)
    assert asked == [("dann", 5, tmp_path / "mnist-digits" / "s5", uda.TUNED["mnist", "digits"]["dann"])]
    assert not net.training
    (panels, kw), = drawn
    g = torch.Generator().manual_seed(5)
    xs = toy_domain(40).images[torch.randperm(40, generator=g)[:10]]
    assert torch.equal(panels["source only (before)"][0], net.forward_features(xs))
    assert set(panels) == {"source only (before)", "dann (after)"}
    assert [tuple(len(x) for x in p) for p in panels.values()] == [(10, 10), (10, 10)]
    assert kw["domain_names"] == ("mnist", "digits") and kw["title"].endswith("seed 5")


# kills: a TransferkitError of a missing adapted network (an unreadable checkpoint) raised, not logged; the figure's
# file name keeping a domain's "+"
def test_tsne_figure_logs_a_missing_adapted_network_and_draws_the_others(tmp_path, monkeypatch):
    _, drawn, _ = _fake_tsne(monkeypatch, tmp_path, adapted=TransferkitError("checkpoint x is unreadable"))
    logged = []
    plan = uda.UdaPlan(seeds=(0,), pairs="mnist:mnist+inversion", tsne_points=4)
    path = uda.tsne_figure(tmp_path, "mnist", "mnist+inversion", plan, logged.append)
    assert path == tmp_path / "tsne_mnist_mnist_inversion.png"
    assert sum(str(m).startswith("t-SNE: no adapted") for m in logged) == 2
    assert list(drawn[0][0]) == ["source only (before)"]


# --- uda_tune: tune_job, the suite's digests, grid_table -------------------------------------------------------


# kills: tune_job adapting on the validation split (not the target's training images); a method's own stage config
# replaced by the plan's; the engine seeded 0 (not the run's seed)
def test_tune_job_adapts_on_the_target_training_images_with_each_stages_config_and_seed(monkeypatch):
    import transferkit.bench.uda_tune as tune
    data = _skada_data()
    seen = {}

    class Fake:
        def __init__(self, net, **options):
            seen["options"] = options

        def fit_transfer(self, make_engine, source, unlabeled):
            seen.update(source=source, unlabeled=unlabeled,
                        engines=[make_engine("main"), make_engine("stage2", "own config")])
            return SimpleNamespace(wall_s=2.0)
    monkeypatch.setattr(tune, "process_domains", lambda cfg: data)
    monkeypatch.setattr(tune, "pretrain_source", lambda cfg, data, log: (tiny_net(4), {}))
    monkeypatch.setattr(tune, "get_method", lambda name: Fake)
    monkeypatch.setattr(tune, "Engine", lambda config, seed: (config, seed))
    monkeypatch.setattr(tune, "evaluate_on", lambda model, domain: {"accuracy": 0.5 if domain is data.target.val
                                                                     else 0.0})
    cfg = uda.pair_config("mnist", "digits", 4, uda.Budget(), ["source_only"], 3)
    row = tune.tune_job(cfg, "dann", {"weight": 0.3}, {"seed": 4})
    assert row == {"seed": 4, "accuracy": 0.5, "wall_s": 2.0} and seen["options"] == {"weight": 0.3}
    assert seen["source"] is data.source.train and seen["unlabeled"] is data.target.train
    assert seen["engines"] == [(cfg.train, 4), ("own config", 4)]


# kills: the target validation split or the training budget left out of the tune jobs' digests (a stale row of
# another validation split or budget read back); a full run planning the quick grid (settings(True))
def test_uda_tune_digests_change_with_the_validation_split_and_the_budget(monkeypatch, tmp_path):
    import transferkit.bench.uda_tune as tune
    net, data, digests = tiny_net(4), _skada_data(), []
    steps = [7]
    monkeypatch.setattr(tune, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(tune, "adaptation_epochs", lambda data, b: (1, steps[0]))
    monkeypatch.setattr(tune, "pretrain_source", lambda cfg, data, log: (net, {"path": "source.pt"}))
    monkeypatch.setattr(tune, "source_only_model", lambda net, data: net)
    monkeypatch.setattr(tune, "evaluate_on", lambda model, domain: {"accuracy": 0.4})
    monkeypatch.setattr(tune, "run_jobs", lambda jobs, workers, log, d, stale: digests.append(d) or [
        {**job.args[3], "accuracy": 0.5, "wall_s": 1.0} for _, job in jobs])
    b = tune.tune_budget(True)
    b.pairs = (("mnist", "digits"),)
    tune.uda_tune_suite(b, tmp_path / "a", lambda *a: None)
    data.target.val = toy_domain(8, seed=5)
    tune.uda_tune_suite(b, tmp_path / "b", lambda *a: None)
    steps[0] = 8
    tune.uda_tune_suite(b, tmp_path / "c", lambda *a: None)
    assert len({tuple(d) for d in digests}) == 3 and all(len(set(d)) == len(d) for d in digests)
    full = tune.tune_budget(False)
    full.pairs = (("mnist", "digits"),)
    tune.uda_tune_suite(full, tmp_path / "d", lambda *a: None)
    assert len(digests[-1]) == 3 * len(tune.settings(False)) == 3 * 48


# kills: grid_table's header naming the pre-training steps as the adaptation steps
def test_grid_table_header_names_each_budget():
    from transferkit.bench.uda_tune import grid_table
    rows = [{"source": "x", "target": "y", "method": "source_only", "setting": "-", "accuracy": 0.5}]
    plan = SimpleNamespace(pairs=(("x", "y"),), seeds=(0,), pretrain_steps=11, adapt_steps=3, batch_size=8)
    assert grid_table(rows, plan).startswith("Target **validation** accuracy, seeds [0], 11 pre-training steps, "
                                             "adaptation 3 steps rounded to whole SKADA epochs of each pair (at "
                                             "least one), batch 8+8.")

