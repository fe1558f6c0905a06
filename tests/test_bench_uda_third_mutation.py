"""Tests from a third mutation pass over ``bench/uda.py`` and ``bench/uda_tune.py``, after
``test_bench_plans_mutation``, ``test_bench_tables_mutation`` and ``test_bench_uda_second_mutation``. Covered:
``_own_method``'s reason for a method that reads target labels; ``adaptation_epochs`` rounding to the nearest epoch
below a half; ``pair_config``'s one repeat and the pre-training's ``eval_every``; ``uda_suite``'s ceiling run only when
``target_only`` is chosen, the ceiling's rows marked as transferkit's with the pair's epochs, and no "skada is not
installed" note when no SKADA row was asked for; ``skada_rows``' source, target and invocation; ``skada_digest`` over
SKADA's version, the method, the batch size and the source training images; ``table3``'s side-by-side ``mcc`` row and
one's own method's row; ``tsne_figure``'s target points (one generator for both domains), an ``OSError`` or
``RuntimeError`` of a missing network logged, a source's "+" in the file name; ``uda_tune_suite``'s jobs loading the
pre-trained file, its source_only row (the classifier ``source_only_model`` builds), the rows' split and options,
``selected.json``, the choice over the plan's own pairs, the source_only rows returned, and the digests over the seed,
the network and the source training images; each grid's default first; ``grid_table``'s separator row;
``choice_table``'s source_only accuracy of 0. No benchmark runs: the heavy calls are monkeypatched and the data are
``helpers.toy_domain``, ``tiny_net`` and ``seeded_lenet``.

Killed elsewhere, so not needed here (the tests here kill them too): ``_own_method``'s reason keyed on "unlabeled"
(the plugin test), the ceiling run whatever the methods, ``table3`` listing the built-in methods only, and
``uda_tune_suite``'s rows without their split or options, ``selected.json`` not written, the choice over the SKADA
pairs, the source_only rows dropped (``test_bench_uda``'s slower tests).

Judged equivalent, so not tested: ``uda_suite``'s pair data (for the SKADA epochs) prepared with the plan's last seed
instead of seed 0 (the split sizes, all the epochs read, do not depend on the seed); ``issue_checks``' ``means``
counting a row without ``library`` as transferkit's (every row ``uda_suite`` and ``skada_rows`` write names its
library); ``uda_tune_suite``'s digest without the method's name (reasoned, not run: the grids' option sets differ
between the methods, so the digests stay distinct). Left surviving: none of the mutants tried."""

import json
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_net, toy_domain
from test_bench_uda_second_mutation import _fake_tsne

import transferkit.bench.uda as uda
import transferkit.bench.uda_tune as tune


def _data():
    return SimpleNamespace(source=SimpleNamespace(train=toy_domain(8), test=toy_domain(12, seed=6)),
                           target=SimpleNamespace(train=toy_domain(8, seed=1), val=toy_domain(8, seed=2),
                                                  test=toy_domain(12, seed=3)))


# --- uda.py: plans and configs ---------------------------------------------------------------------------------


# kills: _own_method's reason keyed on "unlabeled" (a label-reading method told it reads no unlabelled image)
def test_an_own_method_that_reads_target_labels_is_refused_for_that_reason(monkeypatch):
    monkeypatch.setattr(uda, "get_method", lambda name: SimpleNamespace(streams=("source", "target")))
    with pytest.raises(Exception, match="mine reads target labels.*transferkit run"):
        uda.UdaPlan(methods="dann,mine")


# kills: adaptation_epochs rounding the epochs up (`math.ceil`) instead of to the nearest: 12 steps of 5-step epochs
# are 2 epochs, not 3
def test_adaptation_epochs_round_down_below_a_half_epoch():
    data = SimpleNamespace(source=SimpleNamespace(train=range(50)), target=SimpleNamespace(train=range(30)))
    assert uda.adaptation_epochs(data, uda.Budget(batch_size=10, adapt_steps=12)) == (2, 10)


# kills: pair_config's repeats 1 -> 2 (each seed run twice); the pre-training's eval_every 100 -> the adaptation steps
def test_pair_config_runs_one_repeat_and_evaluates_pretraining_every_100_steps():
    cfg = uda.pair_config("mnist", "digits", 1, uda.Budget(pretrain_steps=500), ["source_only"], 7)
    assert cfg.repeats == 1 and cfg.pretrain.eval_every == 100 and cfg.train.eval_every == 7


# --- uda.py: uda_suite -----------------------------------------------------------------------------------------


def _fake_suite(monkeypatch, available=True):
    ran = []

    def run_experiment(cfg, run_dir, log):
        ran.append(cfg)
        return None, [{"method": m, "seed": cfg.seed, "accuracy": 0.5, "wall_s": 1.0} for m in cfg.methods]
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: "data")
    monkeypatch.setattr(uda, "adaptation_epochs", lambda data, b: (2, 6))
    monkeypatch.setattr(uda, "run_experiment", run_experiment)
    monkeypatch.setattr(uda, "skada_rows", lambda *a, **kw: [])
    monkeypatch.setattr(uda.skada_compare, "available", lambda: available)
    monkeypatch.setattr(uda, "tsne_figure", lambda *a: None)
    return ran


def _plan(**changes):
    return uda.UdaPlan(**{"quick": True, "seeds": (0,), "pairs": "mnist:digits", "pretrain_steps": 9,
                          "adapt_steps": 5, "methods": "dann", "skada": "", **changes})


# kills: the ceiling run whatever the methods (`if True:`); the "skada is not installed" note written although no
# SKADA row was chosen (the `b.skada` of its check dropped)
def test_uda_suite_runs_no_ceiling_and_notes_no_missing_skada_when_neither_was_chosen(tmp_path, monkeypatch):
    ran, logged = _fake_suite(monkeypatch, available=False), []
    rows = uda.uda_suite(_plan(), tmp_path, logged.append)
    assert [cfg.methods for cfg in ran] == [["source_only", "dann"]]
    assert "target_only" not in {r["method"] for r in rows}
    assert not any("skada's deep methods cannot be imported" in str(m) for m in logged)


# kills: the ceiling's rows left without the pair's library and epochs (`[... for row in r] + c`)
def test_uda_suite_marks_the_ceilings_rows_as_transferkits_with_the_epochs(tmp_path, monkeypatch):
    _fake_suite(monkeypatch)
    rows = uda.uda_suite(_plan(methods="dann,target_only"), tmp_path, lambda *a: None)
    ceiling, = [r for r in rows if r["method"] == "target_only"]
    assert ceiling["library"] == "transferkit" and ceiling["epochs"] == 2


# --- uda.py: skada_rows and skada_digest -----------------------------------------------------------------------


# kills: a SKADA row's source and target swapped; its invocation left out (every SKADA row "unrecorded": the
# wall-time check always "(mixed)")
def test_skada_rows_name_the_pairs_source_and_target(tmp_path, monkeypatch):
    data = _data()
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(uda, "run_source_network", lambda cfg, data, run_dir, log: (tiny_net(4), {}))
    monkeypatch.setattr(uda.skada_compare, "version", lambda: "0.6")
    monkeypatch.setattr(uda.skada_compare, "run_skada", lambda *a: {"accuracy": 0.5, "wall_s": 1.0})
    b = uda.UdaPlan(seeds=(0,), pairs="syndigits:mnist", skada="DANN")
    cfg = uda.pair_config("syndigits", "mnist", 0, b, ["source_only"], 1)
    row, = uda.skada_rows(cfg, 1, b, tmp_path, lambda *a: None, run_dir=tmp_path)
    assert (row["source"], row["target"], row["method"], row["library"]) == ("syndigits", "mnist", "skada:DANN",
                                                                             "skada")
    assert row["invocation"] == uda.invocation()  # the wall-time check's one-invocation test reads it


# kills: SKADA's version, the method, the batch size or the source training images left out of a SKADA row's digest
# (a row of another SKADA version, method, batch or source read back)
def test_skada_digest_changes_with_the_version_method_batch_and_source_images(monkeypatch):
    version = ["0.6"]
    monkeypatch.setattr(uda.skada_compare, "version", lambda: version[0])
    torch.manual_seed(0)
    data, net = _data(), tiny_net(4)
    digest = uda.skada_digest("DANN", net, data, 2, uda.Budget(), 0)
    assert uda.skada_digest("DAN", net, data, 2, uda.Budget(), 0) != digest
    assert uda.skada_digest("DANN", net, data, 2, uda.Budget(batch_size=32), 0) != digest
    version[0] = "0.7"
    assert uda.skada_digest("DANN", net, data, 2, uda.Budget(), 0) != digest
    version[0] = "0.6"
    data.source.train = toy_domain(8, seed=9)
    assert uda.skada_digest("DANN", net, data, 2, uda.Budget(), 0) != digest


# --- uda.py: table3 --------------------------------------------------------------------------------------------


# kills: mcc left out of the side-by-side table
def test_table3_lists_mcc_beside_skada():
    rows = [{"method": m, "seed": 0, "accuracy": a, "wall_s": 1.0, "library": lib}
            for m, a, lib in (("source_only", 0.5, "transferkit"), ("mcc", 0.7, "transferkit"),
                              ("skada:MCC", 0.6, "skada"))]
    text = uda.table3("mnist", "digits", rows, uda.UdaPlan(seeds=(0,), pairs="mnist:digits"), 1, 5)
    assert "| transferkit | mcc | 0.700 | 1 | 1.0 |" in text


# kills: table3 listing the built-in adaptation methods only (`ADAPTATION`, not `adapting(b)`): one's own method's
# row left out
def test_table3_lists_ones_own_methods_row():
    rows = [{"method": m, "seed": 0, "accuracy": 0.5, "wall_s": 1.0, "library": "transferkit"}
            for m in ("source_only", "mine")]
    plan = SimpleNamespace(methods=("source_only", "mine"), batch_size=64, pretrain_steps=10)
    assert "| mine | 0.500 | 1 | 1.0 |" in uda.table3("mnist", "digits", rows, plan, 1, 5)


# --- uda.py: tsne_figure ---------------------------------------------------------------------------------------


# kills: the target's points drawn with a generator seeded afresh (the same positions as the source's), not the one
# generator that drew the source's
def test_tsne_figure_draws_the_target_points_after_the_source_points_from_one_generator(tmp_path, monkeypatch):
    net, drawn, _ = _fake_tsne(monkeypatch, tmp_path)
    uda.tsne_figure(tmp_path, "mnist", "digits", uda.UdaPlan(seeds=(2,), pairs="mnist:digits", methods="dann",
                                                             tsne_points=6), lambda *a: None)
    g = torch.Generator().manual_seed(2)
    torch.randperm(40, generator=g)
    xt = toy_domain(40, 1).images[torch.randperm(40, generator=g)[:6]]
    assert torch.equal(drawn[0][0]["source only (before)"][1], net.eval().forward_features(xt))


# kills: an OSError (a checkpoint file not there) or a RuntimeError (a checkpoint of other shapes) of a missing adapted
# network raised instead of logged
@pytest.mark.parametrize("error", [FileNotFoundError("no last.safetensors"), RuntimeError("size mismatch")])
def test_tsne_figure_logs_an_unreadable_adapted_network(tmp_path, monkeypatch, error):
    _, drawn, _ = _fake_tsne(monkeypatch, tmp_path, adapted=error)
    logged = []
    uda.tsne_figure(tmp_path, "mnist", "digits", uda.UdaPlan(seeds=(0,), pairs="mnist:digits", methods="dann",
                                                             tsne_points=4), logged.append)
    assert any("no adapted dann" in str(m) for m in logged) and list(drawn[0][0]) == ["source only (before)"]


# kills: the figure's file name keeping a "+" of the source domain
def test_tsne_figure_file_name_replaces_a_plus_in_the_source(tmp_path, monkeypatch):
    _fake_tsne(monkeypatch, tmp_path)
    plan = uda.UdaPlan(seeds=(0,), pairs="mnist+inversion:mnist", methods="source_only", tsne_points=4)
    path = uda.tsne_figure(tmp_path, "mnist+inversion", "mnist", plan, lambda *a: None)
    assert path.name == "tsne_mnist_inversion_mnist.png"


# --- uda_tune.py: uda_tune_suite -------------------------------------------------------------------------------


def _fake_tune(monkeypatch, data, net, pairs=(("mnist", "digits"),)):
    """``uda_tune_suite``'s heavy calls faked; returns (jobs of each run, digests of each run, evaluated models)."""
    jobs, digests, evaluated = [], [], []
    monkeypatch.setattr(tune, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(tune, "adaptation_epochs", lambda data, b: (1, 7))
    monkeypatch.setattr(tune, "pretrain_source", lambda cfg, data, log: (net, {"path": "source.safetensors"}))
    monkeypatch.setattr(tune, "source_only_model", lambda net, data: ("classifier of", net))
    monkeypatch.setattr(tune, "evaluate_on", lambda model, domain: evaluated.append(model) or {"accuracy": 0.4})

    def run_jobs(js, workers, log, d, stale):
        jobs.append(js)
        digests.append(d)
        return [{**job.args[3], "accuracy": 0.5 + 0.01 * i, "wall_s": 1.0} for i, (_, job) in enumerate(js)]
    monkeypatch.setattr(tune, "run_jobs", run_jobs)
    b = tune.tune_budget(True)
    b.pairs = pairs
    return b, jobs, digests, evaluated


# kills: the jobs not given the pre-trained file (each would pre-train again); the source_only row scoring the bare
# network instead of source_only_model's classifier; the rows without "split": "val" or their options; the
# source_only rows dropped from the returned rows (`rows = run_jobs(...)`)
def test_uda_tune_jobs_load_the_pretrained_file_and_the_rows_name_split_and_options(tmp_path, monkeypatch):
    net = tiny_net(4)
    b, jobs, _, evaluated = _fake_tune(monkeypatch, _data(), net)
    rows = tune.uda_tune_suite(b, tmp_path, lambda *a: None)
    assert {job.args[0].pretrained for _, job in jobs[0]} == {"source.safetensors"}
    assert evaluated == [("classifier of", net)]
    assert [r["method"] for r in rows].count("source_only") == 1
    assert all(r["split"] == "val" for r in rows)
    assert [r["options"] for r in rows if r["method"] != "source_only"] == [o for _, o in tune.settings(True)]


# kills: selected.json not written; the choice made over the SKADA pairs whatever the plan's pairs
def test_uda_tune_writes_the_choice_of_the_plans_own_pairs(tmp_path, monkeypatch):
    b, *_ = _fake_tune(monkeypatch, _data(), tiny_net(4), pairs=(("mnist", "mnistm"),))
    tune.uda_tune_suite(b, tmp_path, lambda *a: None)
    chosen = json.loads((tmp_path / "selected.json").read_text())
    assert list(chosen) == ["mnist:mnistm"]
    # each method's second quick setting scored 0.01 higher than its first
    assert chosen["mnist:mnistm"]["dann"]["options"] == tune.DANN_GRID[1]


# kills: the seed, the network or the source training images left out of the tune jobs' digests (a stale row of
# another seed, source network or source data read back)
def test_uda_tune_digests_change_with_the_seed_the_network_and_the_source_images(tmp_path, monkeypatch):
    torch.manual_seed(0)
    data, nets = _data(), [tiny_net(4), tiny_net(4)]
    b, _, digests, _ = _fake_tune(monkeypatch, data, nets[0])
    b.seeds = (0, 1)
    tune.uda_tune_suite(b, tmp_path / "a", lambda *a: None)
    n = len(tune.settings(True))
    assert set(digests[0][:n]).isdisjoint(digests[0][n:])  # seed 0's jobs and seed 1's
    monkeypatch.setattr(tune, "pretrain_source", lambda cfg, data, log: (nets[1], {"path": "source.safetensors"}))
    tune.uda_tune_suite(b, tmp_path / "b", lambda *a: None)
    data.source.train = toy_domain(8, seed=9)
    tune.uda_tune_suite(b, tmp_path / "c", lambda *a: None)
    assert len({d for run in digests for d in run}) == 3 * 2 * n


# kills: a grid reordered so that its first setting is not the method's default (ties go to the first setting: the
# docs say the default), e.g. MCC_GRID with SKADA's form first, or DANN_GRID's weights from 1.0 down
def test_each_grid_lists_the_methods_default_first():
    import inspect

    from transferkit.methods import get_method
    for method, grid in tune.GRID.items():
        params = inspect.signature(get_method(method).__init__).parameters
        defaults = {k: params[k].default for k in grid[0] if params[k].default is not None}
        assert defaults and all(grid[0][k] == v for k, v in defaults.items()), method


# --- uda_tune.py: grid_table and choice_table ------------------------------------------------------------------


# kills: grid_table's separator row one column short (the mean column's "---|" left out)
def test_grid_table_separator_has_a_column_per_header_cell():
    rows = [{"source": s, "target": t, "method": "source_only", "setting": "-", "accuracy": 0.5}
            for s, t in (("x", "y"), ("y", "x"))]
    plan = SimpleNamespace(pairs=(("x", "y"), ("y", "x")), seeds=(0,), pretrain_steps=1, adapt_steps=1, batch_size=8)
    lines = tune.grid_table(rows, plan).splitlines()
    header, sep = lines[2], lines[3]
    assert header.count("|") == sep.count("|") == 6 and set(sep) == {"|", "-"}


# kills: choice_table writing a source_only accuracy of 0 as "-" (as if there were none)
def test_choice_table_writes_a_source_only_accuracy_of_zero():
    chosen = {"x:y": {"mcc": {"setting": "detach_weights=True", "val_accuracy": 0.25, "source_only": 0.0}}}
    assert "| x → y | mcc | detach_weights=True | 0.250 | 0.000 |" in tune.choice_table(chosen)
