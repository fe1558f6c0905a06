"""Tests from a fourth mutation pass over ``bench/uda.py`` and ``bench/uda_tune.py``, after
``test_bench_plans_mutation``, ``test_bench_tables_mutation``, ``test_bench_uda_second_mutation`` and
``test_bench_uda_third_mutation``. Covered: ``uda_suite`` writing and logging every pair's table and asking for no
SKADA row when SKADA is not installed; ``skada_rows`` starting from the seed's run directory and naming the run's
setting; ``skada_digest`` over the starting network's weights; ``issue_checks``' "(mixed)" wall-time note only when
both timed methods ran, judged on the timed rows' invocations alone; ``table3``'s side-by-side ``mmd``, ``coral`` and
``entmin`` rows; ``_adapted``'s checkpoint fallback reading the seed's checkpoint and leaving the pre-trained network
untouched; ``tsne_figure``'s log line; ``uda_tune_suite``'s rows' seeds, every pair planned, the job files (one per
seed, under ``jobs/``), ``uda_tune.md`` with both tables and the tables logged; ``per_pair_choice``'s accuracy of the
setting chosen on a tie and no source_only accuracy when none was run. No benchmark runs: the heavy calls are
monkeypatched (the fakes of the earlier passes) and the data are ``helpers.toy_domain``, ``tiny_net`` and
``seeded_lenet``.

Killed elsewhere too (``test_bench_uda``'s slower tests, the fewshot/zeroshot passes; the test here kills them
as well): the tune rows' seed, the job files' seed and folder, ``uda_tune.md``'s name, choice table and log line,
the choice's tie accuracy and missing source_only.

Judged equivalent, so not tested: ``tsne_figure``'s config built for ``TSNE_METHODS`` instead of every adaptation
method (the tuned options, the setting and the run directory ``_adapted`` reads are the same); ``table3``'s SKADA rows
picked by a "skada:" method prefix instead of ``library == "skada"`` (every SKADA row has both); ``uda_suite``'s
``{**extra, **row}`` for ``{**row, **extra}`` (``run_experiment``'s rows carry no ``library`` or ``epochs``);
``grid_table``'s missing-cell default (as the second pass). Left surviving: ``skada_rows``' digest cut to 4 hex digits
(still a digest; only a collision would tell); ``skada_rows`` handing ``job_result`` no digest (a stale SKADA row of
other settings read back; needs ``job_result``'s file format: not tried)."""

import torch
from helpers import seeded_lenet, tiny_net
from test_bench_uda_second_mutation import _fake_suite, _fake_tsne, _plan
from test_bench_uda_third_mutation import _data, _fake_tune

import transferkit.bench.uda as uda
import transferkit.bench.uda_tune as tune

# --- uda.py: uda_suite -----------------------------------------------------------------------------------------


# kills: uda_tables.md holding the last pair's table only; the tables not logged
def test_uda_suite_writes_and_logs_every_pairs_table(tmp_path, monkeypatch):
    _fake_suite(monkeypatch)
    logged = []
    uda.uda_suite(_plan(), tmp_path, logged.append)
    text = (tmp_path / "uda_tables.md").read_text()
    assert "### mnist → mnistm" in text and "### mnist → digits" in text
    assert any("### mnist → mnistm" in str(m) and "### mnist → digits" in str(m) for m in logged)


# kills: SKADA rows asked for although SKADA is not installed (the `skada_compare.available()` of the row check dropped)
def test_uda_suite_asks_for_no_skada_row_when_skada_is_not_installed(tmp_path, monkeypatch):
    _, skada, _ = _fake_suite(monkeypatch, available=False)
    uda.uda_suite(_plan(), tmp_path, lambda *a: None)
    assert skada == []


# --- uda.py: skada_rows and skada_digest -----------------------------------------------------------------------


# kills: skada_rows' source network looked up in the benchmark's directory, not the seed's run directory; a row's
# setting written as "-" instead of the run's
def test_skada_rows_start_from_the_seeds_run_directory_and_name_its_setting(tmp_path, monkeypatch):
    data, dirs = _data(), []
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(uda, "run_source_network", lambda cfg, data, run_dir, log: dirs.append(run_dir) or
                        (tiny_net(4), {}))
    monkeypatch.setattr(uda.skada_compare, "version", lambda: "0.6")
    monkeypatch.setattr(uda.skada_compare, "run_skada", lambda *a: {"accuracy": 0.5, "wall_s": 1.0})
    b = uda.UdaPlan(seeds=(0,), pairs="mnist:digits", skada="DANN")
    cfg = uda.pair_config("mnist", "digits", 0, b, ["source_only"], 1)
    run_dir = tmp_path / "mnist-digits" / "s0"
    row, = uda.skada_rows(cfg, 1, b, tmp_path, lambda *a: None, run_dir=run_dir)
    assert dirs == [run_dir]
    assert row["setting"] == cfg.setting != "-"


# kills: the starting network's weights left out of a SKADA row's digest (a row of another source network read back)
def test_skada_digest_changes_with_the_starting_network(monkeypatch):
    monkeypatch.setattr(uda.skada_compare, "version", lambda: "0.6")
    data = _data()
    assert (uda.skada_digest("DANN", seeded_lenet(seed=0), data, 2, uda.Budget(), 0)
            != uda.skada_digest("DANN", seeded_lenet(seed=1), data, 2, uda.Budget(), 0))


# --- uda.py: issue_checks and table3 ---------------------------------------------------------------------------


def _row(method, seed, acc, invocation, library="transferkit"):
    return {"method": method, "seed": seed, "accuracy": acc, "wall_s": 1.0, "library": library,
            "invocation": invocation}


# kills: the "(mixed)" note written when dann's rows span two invocations but no SKADA DANN row was timed
# (`mixed = len(runs) > 1`)
def test_issue_checks_note_no_mixed_timing_without_both_timed_methods():
    rows = [_row("source_only", 0, 0.5, "a"), _row("source_only", 1, 0.5, "b"),
            _row("dann", 0, 0.6, "a"), _row("dann", 1, 0.7, "b")]
    lines = uda.issue_checks(rows)
    assert any("dann − source_only" in line for line in lines)
    assert not any("(mixed)" in line for line in lines)


# kills: the invocations counted over every row (a source_only row of a resumed run marking dann vs SKADA DANN, both
# timed in one invocation, "(mixed)")
def test_issue_checks_judge_mixed_timing_on_the_timed_rows_only():
    rows = [_row("source_only", 0, 0.5, "b"), _row("dann", 0, 0.6, "a"), _row("skada:DANN", 0, 0.4, "a", "skada")]
    lines = uda.issue_checks(rows)
    timing, = [line for line in lines if "training seconds" in line]
    assert "(mixed)" not in timing and not any(line.startswith("(mixed)") for line in lines)


# kills: mmd, coral or entmin left out of the side-by-side table
def test_table3_lists_mmd_coral_and_entmin_beside_skada():
    rows = [{"method": m, "seed": 0, "accuracy": 0.5, "wall_s": 1.0, "library": lib}
            for m, lib in (("mmd", "transferkit"), ("coral", "transferkit"), ("entmin", "transferkit"),
                           ("skada:DAN", "skada"))]
    text = uda.table3("mnist", "digits", rows, uda.UdaPlan(seeds=(0,), pairs="mnist:digits"), 1, 5)
    for method in ("mmd", "coral", "entmin"):
        assert f"| transferkit | {method} | 0.500 | 1 | 1.0 |" in text


# --- uda.py: _adapted and tsne_figure --------------------------------------------------------------------------


# kills: _adapted's fallback loading the checkpoint into the pre-trained network itself (no deepcopy: the "before"
# panel drawn with the adapted weights); the checkpoint of seed 0 read whatever the seed
def test_adapted_fallback_reads_the_seeds_checkpoint_and_leaves_the_pretrained_network_alone(tmp_path):
    from safetensors.torch import save_file

    from transferkit.methods import get_method
    cfg = uda.pair_config("mnist", "digits", 2, uda.Budget(), ["mmd"], 1)
    trained = get_method("mmd")(seeded_lenet(seed=1))
    ckpt = tmp_path / "checkpoints" / f"mmd-{cfg.setting}-s2" / "main"
    ckpt.mkdir(parents=True)
    save_file({f"model.{k}": v.contiguous() for k, v in trained.state_dict().items()}, str(ckpt / "last.safetensors"))
    pretrained = seeded_lenet(seed=0)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    net = uda._adapted(cfg, tmp_path, "mmd", pretrained)
    assert all(torch.equal(v, trained.net.state_dict()[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in pretrained.state_dict().items())


# kills: tsne_figure's "t-SNE figure: <path>" log line dropped
def test_tsne_figure_logs_the_figures_path(tmp_path, monkeypatch):
    _fake_tsne(monkeypatch, tmp_path)
    logged = []
    path = uda.tsne_figure(tmp_path, "mnist", "digits", uda.UdaPlan(seeds=(0,), pairs="mnist:digits",
                                                                    methods="source_only", tsne_points=4),
                           logged.append)
    assert any("t-SNE figure" in str(m) and str(path) in str(m) for m in logged)


# --- uda_tune.py: uda_tune_suite -------------------------------------------------------------------------------


# kills: the rows' seed -> 0; the jobs planned on the first pair only; a job file without its seed (two seeds' jobs
# sharing one file) or outside jobs/; uda_tune.md renamed or without the per-pair choice table; the tables not logged
def test_uda_tune_plans_every_pair_and_seed_in_its_own_job_file_and_writes_and_logs_both_tables(tmp_path,
                                                                                               monkeypatch):
    b, jobs, _, _ = _fake_tune(monkeypatch, _data(), tiny_net(4), pairs=(("mnist", "digits"), ("mnist", "mnistm")))
    b.seeds = (0, 1)
    logged = []
    rows = tune.uda_tune_suite(b, tmp_path, logged.append)
    n = len(tune.settings(True))
    assert {(r["target"], r["seed"]) for r in rows} == {(t, s) for t in ("digits", "mnistm") for s in (0, 1)}
    paths = [path for path, _ in jobs[0]]
    assert len(paths) == len(set(paths)) == 2 * 2 * n and all(p.parent == tmp_path / "jobs" for p in paths)
    text = (tmp_path / "uda_tune.md").read_text()
    assert "Target **validation** accuracy" in text and "Per pair: the setting" in text
    assert any("Per pair: the setting" in str(m) for m in logged)


# --- uda_tune.py: per_pair_choice ------------------------------------------------------------------------------


# kills: a tie's chosen setting reported with the best mean (not its own); a pair without source_only rows given a
# source_only accuracy of 0.0 (the choice table's "-" lost)
def test_per_pair_choice_reports_the_chosen_settings_own_accuracy_and_no_missing_source_only():
    rows = [{"source": "x", "target": "y", "method": "dann", "setting": tune.describe(o), "accuracy": a}
            for o, a in ((tune.DANN_GRID[0], 0.5), (tune.DANN_GRID[1], 0.5000005))]
    chosen = tune.per_pair_choice(rows, (("x", "y"),))
    pick = chosen["x:y"]["dann"]
    assert pick["options"] == tune.DANN_GRID[0] and pick["val_accuracy"] == 0.5  # within 1e-6: the first setting
    assert pick["source_only"] is None
    assert tune.choice_table(chosen).splitlines()[-1].endswith("| 0.500 | - |")
