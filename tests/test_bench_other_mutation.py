"""Tests from a mutation pass over the other benchmark modules: ``bench/fewshot.py`` (``FewshotPlan``,
``k_table``, ``fewshot_report``), ``bench/zeroshot.py`` (``ZeroshotPlan``, ``job_name``, ``_mean``,
``zeroshot_tables``) and ``bench/represent.py`` (``RepresentPlan``, ``_with_interval``, ``_representations``,
``_transfer``, ``_order``, ``represent_tables``). Each test kills mutations that the existing tests let through
(a plan check loosened or dropped, a table's rows or columns in another order, a row filter dropped, a mean
over the wrong rows, the ± shown for one seed), on small hand-made rows whose expected cells are worked out by
hand in the comments; no benchmark is run.

Mutants judged equivalent (no test can tell them apart): in ``RepresentPlan.__post_init__``, ``2 <= n`` ->
``1 <= n`` in the cats check (``as_list(..., minimum=2)`` refuses 1 first); in ``zeroshot_tables``,
``"recall_at_1" in r`` -> ``"recall_at_5" in r`` (retrieval rows carry every recall, other rows none); in
``k_table``, ``sorted({_k(r) ...})`` -> ``sorted(..., key=int)`` (``_k`` returns ints already); in
``fewshot_report``, the grouped table's header taken from ``per_group[:2]`` rather than ``per_view[:2]`` (both
``k_table`` headers depend on the ks alone); in ``represent_tables``, ``(float("nan"), 0.0)`` -> any other pair
(the cell is ``-`` whenever ``acc`` is empty). Also left alone: the budget strings, ``steps``' numbers and the
quick plans, which ``test_bench_flex`` and ``test_cli`` already pin."""

import math

import pytest
import torch
from helpers import tiny_net, toy_domain

from transferkit.errors import TransferkitError

# --- bench/fewshot.py ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"ks": [0], "parts": ["grouped"]}, "ks"),  # kills: as_list(ks, minimum=1) -> minimum=0
    ({"parts": ["main", "tables"]}, r"parts must be among"),  # kills: the parts <= PARTS check dropped
    ({"ks": [1], "parts": ["second"]}, r"ks must be >= 2 where the parts main or second"),  # {"main", "second"}
    # -> {"main"}
    ({"repeats": 0}, r"repeats must be >= 1, got 0"),  # kills: repeats >= 1 -> repeats >= 0
])
def test_fewshot_plan_refuses_what_no_job_could_run(fields, message):
    from transferkit.bench.fewshot import FewshotPlan
    with pytest.raises(TransferkitError, match=message):
        FewshotPlan(**fields)


def test_fewshot_plan_takes_k2_for_the_second_pair_and_k1_without_it():
    from transferkit.bench.fewshot import FewshotPlan
    # kills: min(ks) >= 2 -> min(ks) > 2 (only where main/second are absent would k=2 pass)
    assert FewshotPlan(ks=[2], parts=["second"]).ks == [2]
    assert FewshotPlan(ks=[1], parts=["ablation"], repeats=1).repeats == 1


def test_fewshot_config_trains_a_fixed_budget_with_no_selection():
    from transferkit.bench.fewshot import fewshot_config
    quick = fewshot_config("main-k2", "syndigits", "mnist", 2, True, 3, ["lext"])
    full = fewshot_config("main-k2", "syndigits", "mnist", 2, False, 3, ["lext"])
    # kills: eval_every 30 if quick else 50 swapped; patience=None dropped (early stopping on a fixed budget);
    # select_on="none" -> "val" (target validation labels the protocol does not have)
    assert (quick.train.eval_every, full.train.eval_every) == (30, 50)
    assert quick.train.patience is None and full.train.patience is None and full.select_on == "none"
    assert (quick.pretrain.steps, quick.train.steps, full.pretrain.steps, full.train.steps) == (200, 30, 800, 100)
    assert (full.source_classes, full.target_classes, full.options) == ("0-4", "5-9", {})


def test_fewshot_rows_name_their_part_and_the_variant_they_ran(monkeypatch, tmp_path):
    from transferkit.bench import fewshot
    from transferkit.bench.fewshot import _run, fewshot_config
    monkeypatch.setattr(fewshot, "run_experiment", lambda cfg, run_dir, log: (None, [{"method": "lext"}]))
    # kills: the part cut at "-" only ("ablation_a0_no_eq5": the ablation table would lose its rows); the
    # method label of a variant ignored
    cfg = fewshot_config("ablation_a0_no_eq5-k2", "syndigits", "mnist", 2, True, 1, ["lext"])
    assert _run(cfg, tmp_path, print, "lext α=0 -eq5") == [{"method": "lext α=0 -eq5", "part": "ablation"}]
    cfg = fewshot_config("main-variant0-k2", "syndigits", "mnist", 2, True, 1, ["lext"])
    assert _run(cfg, tmp_path, print) == [{"method": "lext", "part": "main"}]


def _k_rows():
    # target_only first (at k=5 before k=2), finetune second with no k=5 row: appearance order, not sorted
    return [{"method": "target_only", "setting": "k=5", "accuracy": 0.9, "group_accuracy": 0.7},
            {"method": "target_only", "setting": "k=5", "accuracy": 0.8, "group_accuracy": 0.5},
            {"method": "target_only", "setting": "k=10", "accuracy": 0.95},  # no group_accuracy: skipped there
            {"method": "target_only", "setting": "k=2", "accuracy": 0.5, "group_accuracy": 0.25},
            {"method": "finetune", "setting": "k=2", "accuracy": 0.4, "group_accuracy": 0.2},
            {"method": "finetune", "setting": "k=2", "accuracy": 0.6, "group_accuracy": 0.4}]


def test_k_table_rows_in_order_of_appearance_columns_by_k_and_a_dash_for_no_rows():
    from transferkit.bench.fewshot import k_table
    # kills: methods sorted (finetune first); ks in order of appearance (5, 10, 2); separator one column short;
    # the method or k filter of a cell dropped; "-" for no rows -> mean of none (raises)
    # target_only k=5: 0.85 ± 0.05 (0.9, 0.8); finetune k=2: 0.5 ± 0.1 (0.4, 0.6)
    assert k_table(_k_rows()) == ("| method | k=2 | k=5 | k=10 |\n"
                                  "|---|---|---|---|\n"
                                  "| target_only | 0.500 (n=1) | 0.850 ± 0.050 (n=2) | 0.950 (n=1) |\n"
                                  "| finetune | 0.500 ± 0.100 (n=2) | - | - |\n")


def test_k_table_of_group_accuracy_skips_the_rows_without_it():
    from transferkit.bench.fewshot import k_table
    # kills: `and key in r` dropped (the k=10 row has no group_accuracy: KeyError)
    text = k_table(_k_rows(), "group_accuracy", lambda m: f"{m} (group)")
    assert "| target_only (group) | 0.250 (n=1) | 0.600 ± 0.100 (n=2) | - |" in text


def _report_rows():
    rows = []
    for part, acc in (("main", 0.1), ("second", 0.2), ("ablation", 0.3)):
        rows.append({"part": part, "method": "lext", "setting": "k=2", "seed": 0, "accuracy": acc})
    for m, acc, group in (("target_only", 0.5, 0.6), ("lext", 0.7, 0.8)):
        rows.append({"part": "grouped", "method": m, "setting": "k=2", "seed": 0, "accuracy": acc,
                     "group_accuracy": group, "target": "digits@grouped5", "n_test": 2000, "n_test_groups": 400})
    return rows


def test_fewshot_report_puts_each_part_under_its_own_title_and_pairs_sample_and_group_lines():
    from transferkit.bench.fewshot import fewshot_report
    text = fewshot_report(_report_rows())
    # kills: the main/second titles swapped or a part's row filter dropped (main 10 %, second 20 %, ablation 30 %)
    assert ("\n## syndigits 0-4 -> mnist 5-9 (Table 1 form)\n\n| method | k=2 |\n|---|---|\n| lext | 0.100 (n=1) |\n"
            "\n## mnist 0-4 -> digits 5-9 (Table 1 form)\n\n| method | k=2 |\n|---|---|\n"
            "| lext | 0.200 (n=1) |\n") in text
    # kills: the ablation section dropped or filtered on another part
    assert text.endswith("\n## Ablation of the full model (syndigits 0-4 -> mnist 5-9)\n\n| method | k=2 |\n|---|---|\n"
                         "| lext | 0.300 (n=1) |\n")
    # kills: per-group line before per-sample line (zip(per_group, per_view))
    assert ("| method | k=2 |\n|---|---|\n| target_only (sample) | 0.500 (n=1) |\n"
            "| target_only (group) | 0.600 (n=1) |\n| lext (sample) | 0.700 (n=1) |\n"
            "| lext (group) | 0.800 (n=1) |\n") in text
    # kills: the notes under the grouped table dropped (grouped_k_line, small_test_line: 400 groups, ± 4.9)
    assert "\nOn the grouped target digits@grouped5, k counts labelled groups" in text
    assert "\nSmall test split: digits@grouped5 400 groups (grouped accuracy) (± 4.9): " in text


def test_fewshot_report_leaves_out_the_parts_with_no_rows():
    from transferkit.bench.fewshot import fewshot_report
    # kills: `if sub:` / `if grouped:` / `if ablation:` -> always (k_table of no rows: an empty table)
    text = fewshot_report([r for r in _report_rows() if r["part"] == "second"])
    assert text.count("## ") == 1 and "## mnist 0-4 -> digits 5-9" in text


# --- bench/zeroshot.py -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"seeds": [-1]}, "seeds"),  # kills: as_list(seeds, minimum=0) -> no minimum
    ({"steps": True}, r"steps must be a whole number >= 1, got True"),  # kills: the `not isinstance(bool)` dropped
    ({"steps": 2.5}, r"steps must be a whole number >= 1, got 2.5"),  # kills: the isinstance(int) dropped
])
def test_zeroshot_plan_refuses_negative_seeds_and_steps_that_are_no_whole_number(fields, message):
    from transferkit.bench.zeroshot import ZeroshotPlan
    with pytest.raises(TransferkitError, match=message):
        ZeroshotPlan(**fields)


def test_zeroshot_job_names_name_the_encoder_of_embed_text_only():
    from transferkit.bench.zeroshot import job_name
    # kills: `or method == "embed_text"` dropped (or -> "embed_attr"): runs with and without the text extra share
    assert job_name("embed_text", "syndigits", 2, "hashing") == "embed_text-hashing-syndigits-s2.json"
    assert job_name("embed_attr", "syndigits", 2, "hashing") == "embed_attr-syndigits-s2.json"


def test_zeroshot_mean_skips_missing_values_and_is_a_percentage():
    from transferkit.bench.zeroshot import _mean
    # kills: the None filter dropped (TypeError); / len(vals) -> / (len(vals) - 1) (wrong mean); "-" for none
    assert _mean([0.25, None, 0.5]) == "37.5"
    assert _mean([None]) == "-" and _mean([]) == "-"


def test_zeroshot_subsample_keeps_a_small_domain_whole_and_draws_n_of_a_larger_one():
    from transferkit.bench.zeroshot import _subsample
    dom = toy_domain(20)
    # kills: len(domain) <= n -> < n (a domain of exactly n images shuffled); [:n] off by one; the draw from the
    # global random state (not its own seeded generator) or its seed ignored
    assert _subsample(dom, 20) is dom and _subsample(dom, 30) is dom
    first = _subsample(dom, 7).images
    torch.rand(3)  # the global random state moves on: the draw does not
    assert len(first) == 7 and first.equal(_subsample(dom, 7).images)
    assert not first.equal(_subsample(dom, 7, seed=1).images)


def test_zeroshot_seen_keeps_the_seen_classes_and_their_own_captions():
    from transferkit.bench.zeroshot import _seen
    dom = toy_domain(20, classes=10)  # labels 0..9, 0..9
    seen, caps = _seen(dom, [f"c{i}" for i in range(20)])
    # kills: the caption filter inverted or dropped (captions of the unseen 7-9 kept)
    assert seen.labels.tolist() == [0, 1, 2, 3, 4, 5, 6] * 2
    assert caps == [f"c{i}" for i in (0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16)]


def _zs(method, source, setting, seed, accuracy, **more):
    return {"method": method, "source": f"{source}[0-6]", "target": f"{source}[7-9]", "setting": setting,
            "seed": seed, "accuracy": accuracy, **more}


def _zeroshot_rows():
    rows = []
    for source in ("syndigits", "mnist"):  # syndigits first: the table sorts by domain, then method
        for method in ("clip_infonce", "attr_zones"):
            for seed in (0, 1):
                # attr_zones on mnist: ZSL 40, 60 (50.0 ± 10.0); GZSL seen 80, 90 / unseen 20, 30 / H 30, 40;
                # prior-calibrated: seen 70 / unseen 50 / H 60 (seed 1's seen missing: the mean of seed 0's)
                off = 0.0 if (source, method) == ("mnist", "attr_zones") else 0.05
                rows += [_zs(method, source, "zsl", seed, 0.4 + 0.2 * seed + off),
                         _zs(method, source, "gzsl", seed, 0.3 + 0.1 * seed + off, seen=0.8 + 0.1 * seed + off,
                             unseen=0.2 + 0.1 * seed + off),
                         _zs(method, source, "gzsl_prior", seed, 0.6 + off, seen=None if seed else 0.7 + off,
                             unseen=0.5 + off, gamma=0.1)]
    rows.append(_zs("attr_zones", "mnist", "zsl", 2, 0.5))  # a third ZSL seed: 3 seeds (mean 50.0 ± 5.8)
    for seed, (r1, r5, r10) in enumerate(((0.1, 0.5, 0.8), (0.3, 0.5, 1.0))):  # R@1 20, R@5 50, R@10 90
        for setting in ("i2t (mnist captions)", "t2i (mnist captions)"):
            rows.append({**_zs("clip_infonce", "mnist", setting, seed, r1), "target": "mnist test",
                         "recall_at_1": r1 if setting.startswith("i2t") else r1 / 2, "recall_at_5": r5,
                         "recall_at_10": r10})
    return rows


def test_zeroshot_table_sorts_by_domain_then_method_and_takes_each_setting_from_its_own_rows():
    from transferkit.bench.zeroshot import zeroshot_tables
    lines = zeroshot_tables(_zeroshot_rows()).splitlines()
    # kills: keys sorted by (method, source); the source filter of `pick` dropped
    assert [line.split(" | ")[:2] for line in lines[2:6]] == [["| attr_zones", "mnist[0-6]"],
                                                              ["| clip_infonce", "mnist[0-6]"],
                                                              ["| attr_zones", "syndigits[0-6]"],
                                                              ["| clip_infonce", "syndigits[0-6]"]]
    # kills: the zsl filter dropped (ZSL over every setting); gzsl and gzsl_prior swapped; seen / unseen / H in
    # another order; len(z) -> len(pick) for the seeds; the ZSL cell without its standard error
    assert lines[2] == "| attr_zones | mnist[0-6] | 50.0 ± 5.8 | 85.0 / 25.0 / 35.0 | 70.0 / 50.0 / 60.0 | 3 |"


def test_zeroshot_table_shows_a_dash_for_a_setting_with_no_rows():
    from transferkit.bench.zeroshot import zeroshot_tables
    # kills: gzsl() of no rows -> "- / - / -" (or a mean of none)
    rows = [_zs("attr_zones", "mnist", "zsl", 0, 0.5)]
    assert zeroshot_tables(rows).splitlines()[-1] == "| attr_zones | mnist[0-6] | 50.0 | - | - | 1 |"
    # found by the pass (fixed): GZSL rows without a ZSL row raised "mean of no values" instead of a dash
    gzsl_only = [_zs("attr_zones", "mnist", "gzsl", 0, 0.5, seen=0.6, unseen=0.4)]
    assert zeroshot_tables(gzsl_only).splitlines()[-1] == "| attr_zones | mnist[0-6] | - | 60.0 / 40.0 / 50.0 | - | 0 |"


def test_zeroshot_retrieval_table_keeps_directions_apart_and_recalls_in_order():
    from transferkit.bench.zeroshot import zeroshot_tables
    text = zeroshot_tables(_zeroshot_rows())
    # kills: R@5 and R@10 swapped; the setting (direction) left out of a retrieval row's key
    assert "| clip_infonce | mnist test | i2t (mnist captions) | 20.0 | 50.0 | 90.0 |" in text
    assert "| clip_infonce | mnist test | t2i (mnist captions) | 10.0 | 50.0 | 90.0 |" in text
    # kills: `if ret:` -> always (a retrieval header over no rows)
    no_retrieval = [r for r in _zeroshot_rows() if "recall_at_1" not in r]
    assert "R@1" not in zeroshot_tables(no_retrieval)


# --- bench/represent.py ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"cats": [2, 5]}, r"cats must be between 2 and n_max=4"),  # kills: `n <= self.n_max` dropped
    ({"sizes": [0]}, "sizes"),  # kills: as_list(sizes, minimum=1) -> minimum=0
    ({"seeds": [-1]}, "seeds"),  # kills: as_list(seeds, minimum=0) -> no minimum
    ({"pretrain": 0}, "pretrain, distill, train and episodes must be >= 1"),  # kills: >= 1 -> >= 0
    ({"distill": 0}, "pretrain, distill, train and episodes must be >= 1"),  # kills: distill left out of min()
    ({"train": 0}, "pretrain, distill, train and episodes must be >= 1"),  # kills: train left out of min()
    ({"episodes": 0}, "pretrain, distill, train and episodes must be >= 1"),  # kills: episodes left out of min()
])
def test_represent_plan_refuses_what_no_job_could_run(fields, message):
    from transferkit.bench.represent import RepresentPlan
    with pytest.raises(TransferkitError, match=message):
        RepresentPlan(**fields)


def test_represent_config_stops_transfer_early_on_its_own_budget():
    from transferkit.bench.represent import _config, represent_plan
    cfg = _config("syndigits", "mnist", represent_plan(True))
    # kills: the transfer's patience 2 / eval_every 25 changed; the pretrain and train budgets swapped; k set
    assert (cfg.train.steps, cfg.train.eval_every, cfg.train.patience, cfg.pretrain.steps) == (100, 25, 2, 200)
    assert cfg.k is None and cfg.backbone == "lenet" and cfg.name == "represent-syndigits-mnist"


def test_an_episodic_interval_is_in_points_and_absent_for_one_episode():
    from transferkit.bench.represent import _with_interval
    # kills: 100 * ci -> ci; the isnan test dropped ("nan" shown); the None test dropped (TypeError)
    assert _with_interval({"accuracy": 0.5, "ci95": 0.025}) == "50.0±2.5"
    assert _with_interval({"accuracy": 0.5, "ci95": 0.025}, " ± ") == "50.0 ± 2.5"
    assert _with_interval({"accuracy": 0.5, "ci95": math.nan}) == "50.0"
    assert _with_interval({"accuracy": 0.5}) == "50.0"


def test_representations_erm_is_the_first_member_and_cat_n_the_first_n():
    from transferkit.bench.represent import _representations
    members = [tiny_net(4) for _ in range(3)]
    reps = _representations(members, [2, 3], seed=0)
    # kills: erm = members[-1]; cat<n> of every member (members[:n] -> members)
    assert list(reps) == ["erm", "cat2", "cat3"] and reps["erm"] is members[0]
    assert [list(reps[f"cat{n}"].unit("cat").members) for n in (2, 3)] == [members[:2], members]


def test_transfer_picks_the_method_and_cat_two_stage_only_for_a_cat_representation():
    from transferkit.bench.represent import _representations, _transfer
    from transferkit.methods.finetune import Finetune, LinearProbe, TwoStage
    from transferkit.represent import CatTwoStage
    reps = _representations([tiny_net(4), tiny_net(4)], [2], seed=0)
    # kills: linear_probe and finetune swapped; is_cat inverted or read from another prefix
    assert type(_transfer("erm", reps["erm"], "linear_probe")) is LinearProbe
    assert type(_transfer("cat2", reps["cat2"], "finetune")) is Finetune
    assert type(_transfer("cat2", reps["cat2"], "two_stage")) is CatTwoStage
    assert type(_transfer("distill", reps["erm"], "two_stage")) is TwoStage


def _rp(method, setting, accuracy, seed=0, source="mnist", target="digits", **more):
    return {"source": source, "target": target, "method": method, "setting": setting, "seed": seed,
            "accuracy": accuracy, **more}


def _represent_rows():
    return [
        _rp("zzz/linear_probe", "5/class", 0.1),  # unknown representation: last
        _rp("distill/finetune", "20/class", 0.9),
        _rp("cat2/two_stage", "2/class", 0.3),
        _rp("erm/two_stage", "5/class", 0.45),
        _rp("erm/finetune", "5/class", 0.55),
        _rp("erm/linear_probe", "5/class", 0.5),
        _rp("erm/linear_probe", "5/class", 0.7, seed=1),  # 60.0 ± 10.0
        _rp("erm/linear_probe", "2/class", 0.4),  # one seed: no ±
        _rp("erm/fewshot_prototype", "5-way 1-shot", 0.61, ci95=0.01),  # episodic rows: not in the transfer table
        _rp("distill/fewshot_linear", "5-way 5-shot", 0.8, ci95=0.03),
        _rp("erm/fewshot_cosine", "5-way 5-shot", 0.7, ci95=math.nan),
        _rp("erm/fewshot_cosine", "5-way 1-shot", 0.5, ci95=0.02),
        _rp("erm/fewshot_linear", "5-way 1-shot", 0.4),  # no ci95 (an older row): no interval
        _rp("erm/fewshot_linear", "5-way 1-shot", 0.45, ci95=0.02, source="mnist", target="mnistm"),  # no transfer
        _rp("erm/finetune", "5/class", 0.2, source="syndigits", target="mnist"),
    ]


def test_represent_transfer_table_orders_representations_methods_and_sizes():
    from transferkit.bench.represent import represent_tables
    text = represent_tables(_represent_rows())
    # kills: sizes sorted as strings (20/class before 5/class); the separator one column short; rows not in
    # _order (erm, cat2, distill, then the unknown zzz: 99 -> -1); the method or size filter of a cell dropped;
    # the ± shown for one seed (len(acc) > 1 -> >= 1); "/class" filter dropped (episodic rows in it)
    assert ("### mnist -> digits (target test accuracy %; mean ± s.e. when several seeds)\n\n"
            "| representation / transfer | 2/class | 5/class | 20/class |\n|---|---|---|---|\n"
            "| erm/linear_probe | 40.0 | 60.0 ± 10.0 | - |\n"
            "| erm/finetune | - | 55.0 | - |\n"
            "| erm/two_stage | - | 45.0 | - |\n"
            "| cat2/two_stage | 30.0 | - | - |\n"
            "| distill/finetune | - | - | 90.0 |\n"
            "| zzz/linear_probe | - | 10.0 | - |\n\n") in text
    # kills: `if not pr: continue` dropped (a table for mnist -> mnistm, which has only episodic rows)
    assert "### mnist -> mnistm" not in text and "### syndigits -> mnist" in text
    assert text.index("### mnist -> digits") < text.index("### syndigits -> mnist")  # pairs in sorted order


def test_represent_episodic_table_orders_heads_and_shots():
    from transferkit.bench.represent import represent_tables
    lines = represent_tables(_represent_rows()).splitlines()
    start = lines.index("| pair | representation | head | 1-shot | 5-shot |")
    # kills: "fewshot_" left in the method's name for _order (heads sorted by name: cosine first); 1- and
    # 5-shot columns swapped; the " ± " separator; the pair left out of the key (mnistm's row merged)
    assert lines[start + 2:] == ["| mnist -> digits | erm | linear | 40.0 | - |",
                                 "| mnist -> digits | erm | cosine | 50.0 ± 2.0 | 70.0 |",
                                 "| mnist -> digits | erm | prototype | 61.0 ± 1.0 | - |",
                                 "| mnist -> digits | distill | linear | - | 80.0 ± 3.0 |",
                                 "| mnist -> mnistm | erm | linear | 45.0 ± 2.0 | - |"]
