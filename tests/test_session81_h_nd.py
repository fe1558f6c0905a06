"""Session 81 (helper h_nd): one form of each rule, public names."""

import warnings

import numpy as np
import pytest
from PIL import Image

from transferkit import errors, report, tables
from transferkit.errors import TransferkitError, first_named
from transferkit.userdata import load_image_folder


def _image(path):
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(path)


# item 2: the "first five" listing has one public home, errors.first_named

def test_first_named_elides_or_counts_past_five():
    assert first_named([]) == ""
    assert first_named(list("abcde")) == "a, b, c, d, e"
    assert first_named(list("abcdef")) == "a, b, c, d, e, ..."
    assert first_named(iter("abcdefg"), "classes") == "a, b, c, d, e and 2 more classes"
    assert first_named(list("abcdef"), "cells", "; ") == "a; b; c; d; e and 1 more cell"


def test_tables_and_report_use_the_one_listing():
    assert not hasattr(tables, "_first_named")
    assert report.first_named is tables.first_named is errors.first_named


def test_image_folder_skipped_files_are_listed_five_then_elided(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        _image(tmp_path / c / "0.png")
    for i in range(7):
        (tmp_path / "a" / f"note{i}.txt").write_text("x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image_folder(tmp_path)
    said = [str(w.message) for w in caught if "skipped 7 file(s)" in str(w.message)]
    assert len(said) == 1
    assert "('a/note0.txt', 'a/note1.txt', 'a/note2.txt', 'a/note3.txt', 'a/note4.txt', ...)" in said[0]


def test_image_folder_empty_class_lists_its_other_files_five_then_elided(tmp_path):
    (tmp_path / "a").mkdir()
    _image(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    for i in range(6):
        (tmp_path / "b" / f"n{i}.txt").write_text("x")
    with pytest.raises(TransferkitError, match=r"it holds 6 file\(s\) of other kinds: 'b/n0.txt', 'b/n1.txt', "
                                               r"'b/n2.txt', 'b/n3.txt', 'b/n4.txt', \.\.\.; add images"):
        load_image_folder(tmp_path)


# item 3: load_job_network refuses a missing network file in one form, with the reason why it is missing

@pytest.fixture(scope="module")
def pickled_run(tmp_path_factory):
    from transferkit.config import ExperimentConfig, TrainConfig
    from transferkit.experiment import run_experiment
    out = tmp_path_factory.mktemp("h_nd_runs")
    cfg = ExperimentConfig(name="r", source="digits", target="digits", source_classes="0-4", target_classes="0-4",
                           methods=["linear_probe", "ft_ss"], k=2, repeats=1, select_on="none", out_dir=str(out),
                           pretrain=TrainConfig(steps=1, eval_every=1), train=TrainConfig(steps=1, eval_every=1))
    run_experiment(cfg, run_dir=out / "r", log=lambda *a: None)
    for f in (out / "r" / "models").glob("*.safetensors"):
        f.unlink()  # as a run from before network files
    return out / "r"


@pytest.mark.parametrize("method, why", [
    ("linear_probe", "a run from before 2026-12-07 saved only pickled models"),
    ("ft_ss", "ft_ss writes no network file, as it adds a scale-and-shift module")])
def test_a_missing_network_file_is_refused_in_one_form(pickled_run, method, why):
    from transferkit.errors import UntrustedPickle
    from transferkit.experiment import load_job_network
    with pytest.raises(UntrustedPickle) as got:
        load_job_network(pickled_run, method)
    said = str(got.value)
    assert why in said
    assert f"job {method} seed 0 (k=2) is only its pickled model {method}-k=2-s0.pt" in said
    assert f"load_model(run_dir, '{method}', seed=0).net, or trust_pickles=True here (--trust-pickles)" in said
    assert "unpickling a file runs whatever code it names" in said
    assert load_job_network(pickled_run, method, trust_pickles=True) is not None


# item 4: lr and weight_decay are refused by one rule, check_rate, in one form

def _refusal(**field):
    from transferkit.engine import TrainConfig
    with pytest.raises(TransferkitError) as got:
        TrainConfig(**field)
    return str(got.value)


def test_lr_and_weight_decay_are_refused_in_one_form():
    from transferkit.engine import TrainConfig, check_rate
    assert _refusal(lr=1e300).replace("lr", "X") == _refusal(weight_decay=1e300).replace("weight_decay", "X")
    assert _refusal(weight_decay=-0.25) == "weight_decay must be a finite number >= 0, got -0.25"
    assert _refusal(weight_decay=float("nan")) == "weight_decay must be a finite number >= 0, got nan"
    assert _refusal(lr=0.0) == "lr must be a finite number > 0, got 0.0"
    assert _refusal(momentum=-0.1) == "momentum must be a finite number >= 0, got -0.1"
    assert TrainConfig(weight_decay=0.0).weight_decay == 0.0
    check_rate(0.0, "weight_decay", zero_ok=True)
    with pytest.raises(TransferkitError, match="c must be a finite number > 0, got 0"):
        check_rate(0, "c")


# item 5: a flag wins over a --set of its key in one form (cli._flag_sets); a seed's range is one rule

def test_device_over_stage_devices_warns_once_in_the_flags_form():
    from transferkit import cli
    from transferkit.config import ExperimentConfig
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cli._stage_devices(["train.device=cpu", "pretrain.device=cpu", "steps=1", "train.device=cuda"],
                                 "cuda", ExperimentConfig)
    assert out == ["train.device=cuda", "pretrain.device=cuda", "steps=1", "train.device=cuda"]
    assert [str(w.message) for w in caught] == [
        "--device cuda wins over --set train.device=cpu, --set pretrain.device=cpu"]


def test_a_seed_out_of_numpys_range_is_refused_by_one_rule(capsys):
    from transferkit import cli
    from transferkit.config import ExperimentConfig
    from transferkit.errors import check_seed_range
    assert not hasattr(cli, "_check_seed")
    check_seed_range(2**32 - 1, "--seed")
    check_seed_range(2**32 - 3, repeats=3)
    with pytest.raises(TransferkitError, match=r"^--seed must be in 0..2\*\*32 - 1 \(as numpy's seeds\), got -1$"):
        check_seed_range(-1, "--seed")
    with pytest.raises(TransferkitError, match=r"^seed must be in 0..2\*\*32 - repeats \(as numpy's seeds\), got "
                                               r"4294967294$"):
        ExperimentConfig(seed=2**32 - 2, repeats=3)
    assert cli.main(["show", "digits", "--seed", str(2**32)]) == 2
    assert "--seed must be in 0..2**32 - 1 (as numpy's seeds), got 4294967296" in capsys.readouterr().err


# item 6: run_benchmark logs the table unless told not to (log_table), not by which callback it was given

def test_run_benchmark_logs_its_table_by_an_explicit_flag(tmp_path, monkeypatch, capsys):
    import transferkit.bench as bench
    from transferkit.errors import progress
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    monkeypatch.setitem(bench.BENCHMARKS, "table_toy", (lambda plan, bench_dir, log: [row], "toy", bench.Plan))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    bench.run_benchmark("table_toy", out_dir=str(tmp_path / "a"), log=progress)  # a Python caller's stderr log
    assert "| m " in capsys.readouterr().err
    lines = []
    bench.run_benchmark("table_toy", out_dir=str(tmp_path / "b"), log=lines.append, log_table=False)
    assert lines and not any("| m " in line for line in lines)


# item 7: an unknown suite is called what the CLI's help calls it ("the suite to run")

def test_an_unknown_bench_name_is_an_unknown_suite(capsys):
    from transferkit.bench import make_plan
    from transferkit.cli import main
    with pytest.raises(TransferkitError, match=r"^unknown suite 'fleks'; known: demo, fewshot, flex, "):
        make_plan("fleks")
    assert main(["bench", "fleks"]) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'fleks'" in err and "benchmark 'fleks'" not in err


# item 8: sample_k_shot takes k_shot= as the few-shot functions name it (k= kept)

def test_sample_k_shot_takes_k_shot_as_another_name_of_k():
    import torch

    from transferkit.domain import Domain
    from transferkit.splits import sample_k_shot
    d = Domain("d", torch.rand(30, 1, 4, 4), torch.arange(30) % 3, ["a", "b", "c"])
    by_k, rest_k = sample_k_shot(d, k=2, seed=1)
    by_shot, rest_shot = sample_k_shot(d, k_shot=2, seed=1)
    assert torch.equal(by_k.images, by_shot.images) and torch.equal(rest_k.labels, rest_shot.labels)
    assert len(sample_k_shot(d, 2, 1)[0]) == 6  # positional, as before
    with pytest.raises(TransferkitError, match=r"give k or k_shot \(two names of one number\), not both"):
        sample_k_shot(d, k=2, k_shot=2, seed=1)
    with pytest.raises(TransferkitError, match=r"needs k \(or k_shot\), the labelled samples per class"):
        sample_k_shot(d, seed=1)
    with pytest.raises(TransferkitError,
                       match=r"^sample_k_shot needs a seed, e.g. sample_k_shot\(domain, k=5, seed=0\)$"):
        sample_k_shot(d, k_shot=2)
    with pytest.raises(TransferkitError, match=r"^k_shot must be an integer >= 1, got 0$"):
        sample_k_shot(d, k_shot=0, seed=1)


# item 9: UnitNet.reset_classifier takes timm's global_pool keyword (None honoured, others refused by name)

def test_reset_classifier_takes_timms_global_pool_keyword():
    import torch

    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", num_classes=4, in_channels=1)
    x = torch.rand(2, 1, 28, 28)
    embedding = net.forward_features(x)
    head = net.reset_classifier(7, global_pool=None)  # a timm-style call: the network's pooling kept
    assert net.num_classes == 7 and net.head is head and net(x).shape == (2, 7)
    assert torch.equal(net.forward_features(x), embedding)
    net.reset_classifier(0, global_pool=None)
    assert torch.equal(net(x), embedding)
    net.reset_classifier(3, "cosine")  # the head kind, positional, as before
    assert net(x).shape == (2, 3)
    for pool in ("avg", ""):
        with pytest.raises(TransferkitError, match=rf"reset_classifier\(global_pool={pool!r}\): a UnitNet keeps the "
                                                   rf"pooling it was built with"):
            net.reset_classifier(5, global_pool=pool)
    with pytest.raises(TransferkitError, match=r"the second argument of UnitNet.reset_classifier is the head kind "
                                               r"\(linear, cosine, prototype\), not timm's global_pool"):
        net.reset_classifier(5, "avg")
    assert net(x).shape == (2, 3)  # a refused call changes nothing
