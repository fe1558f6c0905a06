"""CLI and config leftovers (audit h_fo): bench uda's skada on pairs with no SKADA rows, the CLI seeds' range,
--device over a stage's device, pre-training's key without cache_frozen, keep_candidates in a run config, and
plan checks that name the field at fault."""
import warnings

import helpers
import pytest
import yaml

from transferkit import engine, experiment, source
from transferkit.bench import make_plan, uda
from transferkit.cli import main
from transferkit.config import ExperimentConfig
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.methods.supervised import SourceOnly
from transferkit.rundata import Prepared
from transferkit.splits import Split


# ---- 1. bench uda: skada on pairs that are not SKADA pairs ----------------------------------------------------------
def test_a_set_skada_with_no_skada_pair_is_refused_naming_the_skada_pairs():
    # before: accepted, and the run gave no SKADA row and no word
    with pytest.raises(TransferkitError, match=r"SKADA pairs only \(mnist:digits, syndigits:mnist\)"):
        make_plan("uda", True, ["pairs=digits:mnist", "skada=SourceOnly"])
    assert make_plan("uda", True, ["pairs=digits:mnist", "skada="]).skada == ()
    assert make_plan("uda", True, ["pairs=digits:mnist"]).pairs == (("digits", "mnist"),)  # skada not named
    assert make_plan("uda", True, ["pairs=digits:mnist,mnist:digits", "skada=DANN"]).skada == ("DANN",)


def test_the_run_log_names_the_pairs_that_get_no_skada_rows(monkeypatch, tmp_path):
    monkeypatch.setattr(uda, "prepare_domains", lambda cfg: None)
    monkeypatch.setattr(uda, "adaptation_epochs", lambda data, b: (1, 1))
    monkeypatch.setattr(uda, "run_experiment", lambda cfg, run_dir, log: (None, []))
    monkeypatch.setattr(uda, "skada_rows", lambda *a, **k: [])
    monkeypatch.setattr(uda, "tsne_figure", lambda *a: None)
    lines = []
    plan = make_plan("uda", True, ["pairs=digits:mnist,mnist:digits", "skada=DANN", "methods=source_only"])
    uda._uda_suite(plan, tmp_path, lines.append)
    said = [line for line in lines if "no side-by-side SKADA rows" in line]
    assert len(said) == 1 and "digits:mnist" in said[0] and "syndigits:mnist" in said[0]
    lines.clear()
    uda._uda_suite(make_plan("uda", True, ["pairs=mnist:digits", "methods=source_only"]), tmp_path, lines.append)
    assert not [line for line in lines if "no side-by-side SKADA rows" in line]


# ---- 2. the CLI's --seed of show and episodes ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["4294967301", "-5"])
def test_show_and_episodes_refuse_a_seed_outside_what_a_config_takes(seed, tmp_path, capsys):
    # before: 4294967301 drew what 5 draws, -5 what 4294967291 draws
    assert main(["show", "digits", "--seed", seed, "--out", str(tmp_path / "g.png")]) == 2
    assert main(["episodes", str(tmp_path), "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert err.count(f"--seed must be in 0..2**32 - 1 (as numpy's seeds), got {seed}") == 2
    assert not (tmp_path / "g.png").exists()
    assert main(["episodes", str(tmp_path), "--seed", str(2**32 - 1)]) == 2  # in range: the run dir is at fault
    assert "--seed" not in capsys.readouterr().err


# ---- 3. --device over a stage's --set STAGE.device ---------------------------------------------------------------
@pytest.mark.parametrize("argv", [["run", "demo", "--print-config"], ["bench", "flex", "--quick", "--print-plan"]])
def test_device_wins_over_a_stage_device_with_a_warning(argv, capsys):
    # before: run turned train.device=cpu into cuda without a word; bench flex kept train.device cpu
    with pytest.warns(TransferkitWarning, match=r"--device cuda wins over --set train\.device=cpu"):
        assert main([*argv, "--device", "cuda", "--set", "train.device=cpu", "--set", "pretrain.device=cuda"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["device"] == printed["pretrain"]["device"] == "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # without --device a stage's key is the plan's as before, with no warning
        assert main([*argv, "--set", "train.device=cpu"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["device"] == "cpu"


# ---- 4. pre-training's cache key without cache_frozen -------------------------------------------------------------
def _pretraining_key(monkeypatch, tmp_path, **pretrain) -> tuple[str, TrainConfig, TrainConfig]:
    """The cached network's file name a pre-training of ``pretrain`` would write, the TrainConfig its key holds
    and the config's own."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    keyed = []
    monkeypatch.setattr(source, "keyed_fields", lambda train: keyed.append(train) or engine.keyed_fields(train))

    class Stop(Exception):
        pass

    def engine_at(train, checkpoint_dir, **_):
        raise Stop(checkpoint_dir.stem)
    monkeypatch.setattr(source, "Engine", engine_at)
    parts = [helpers.toy_domain(n, seed=i) for i, n in enumerate((32, 12, 12))]
    data = Prepared(source=Split(*parts), target=Split(*parts), channels=1)
    cfg = ExperimentConfig(source="toy", target="toy", backbone="lenet", k=2,
                           pretrain=TrainConfig(steps=4, batch_size=8, **pretrain))
    with pytest.raises(Stop) as stop:
        source.pretrain_source(cfg, data, log=lambda *a: None)
    return str(stop.value), keyed[-1], cfg.pretrain


def test_cache_frozen_leaves_the_pretrained_network_key_as_it_is(monkeypatch, tmp_path):
    # before: pretrain.cache_frozen=false keyed (and trained) another source network
    default, keyed, pretrain = _pretraining_key(monkeypatch, tmp_path)
    assert keyed == pretrain  # the default's key holds the config's fields as before: existing caches are found
    assert _pretraining_key(monkeypatch, tmp_path, cache_frozen=False)[0] == default
    assert _pretraining_key(monkeypatch, tmp_path, cache_limit_mb=0)[0] == default
    assert _pretraining_key(monkeypatch, tmp_path, lr=0.01)[0] != default  # the key still reads the stage
    assert SourceOnly(helpers.seeded_lenet()).frozen_prefix_end() is None  # pre-training trains every unit


# ---- 5. keep_candidates in a run config ----------------------------------------------------------------------------
def test_keep_candidates_in_a_run_config_warns_once_and_the_methods_say_it_is_for_the_api(monkeypatch, tmp_path,
                                                                                             capsys):
    # before: accepted without a word, and `transferkit methods flex` did not say what it is for
    monkeypatch.setattr(experiment, "_run_jobs_of", lambda *a: [])
    cfg = ExperimentConfig(source="digits", target="digits", methods=["flex", "fast_flex"], k=2, out_dir=str(tmp_path),
                           options={"flex": {"keep_candidates": True}, "fast_flex": {"keep_candidates": False}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment.run_experiment(cfg, run_dir=tmp_path / "run", log=lambda *a: None)
    said = [str(w.message) for w in caught if "keep_candidates" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("options.flex.keep_candidates: True has no effect in a run")
    assert main(["methods", "flex", "fast_flex", "faster_flex"]) == 0
    assert capsys.readouterr().out.count("Python API: a run's rows and") == 3


# ---- 6. plan checks and refusals that name what is at fault --------------------------------------------------------
def test_represent_refuses_n_max_itself_before_cats():
    # before: "cats must be between 2 and n_max=0", blaming cats
    with pytest.raises(TransferkitError, match=r"^n_max must be a whole number >= 2 .*got 0$"):
        make_plan("represent", True, ["n_max=0"])
    with pytest.raises(TransferkitError, match=r"cats must be between 2 and n_max=3"):
        make_plan("represent", False, ["n_max=3"])  # the default cats [2, 4]: cats is at fault


def test_episodes_of_a_benchmark_directory_names_run_directories_inside(tmp_path, capsys):
    # before: "not a run directory (no config.yaml)" and nothing about the runs it holds
    for run in ("digits-mnist/s0", "digits-mnist/s1", "digits-mnist/s2", "mnist-digits/s0", "mnist-digits/s1",
                "mnist-digits/s2"):
        (tmp_path / run / "jobs").mkdir(parents=True)
        (tmp_path / run / "config.yaml").write_text("methods: [source_only]\n")
    (tmp_path / "docs").mkdir()  # a config.yaml of something else (no jobs/ beside it): not named
    (tmp_path / "docs" / "config.yaml").write_text("b: 1\n")
    assert main(["episodes", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert ("it holds runs, one directory each (mnist-digits/s0, digits-mnist/s1, mnist-digits/s1, digits-mnist/s2, "
            f"mnist-digits/s2 and 1 more): give one, e.g. {tmp_path / 'mnist-digits' / 's2'}") in err
    assert main(["episodes", str(tmp_path / "empty")]) == 2
    assert "holds runs" not in capsys.readouterr().err
