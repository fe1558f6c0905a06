"""Tests from a mutation pass over the benchmark table code: ``bench/uda.py`` (``table3``,
``issue_checks``), ``bench/flex.py`` (``table3``, ``wins``, ``selection_table``, ``wall_table``,
``per_target_wall``, ``retrieval_table``, ``image_table``) and ``bench/uda_tune.py``
(``per_pair_choice``, ``grid_table``, ``choice_table``), then ``report._table_rows``. Each test kills mutations that the
existing tests let through (a flipped pairing, the best picked from the wrong set, a ratio or a
column of the wrong quantity, a tie rule off by its tolerance), on small hand-made rows whose
expected values are worked out by hand in the comments."""

from types import SimpleNamespace

import pytest

from transferkit.bench.flex import METHODS


def _uda_rows():
    rows = []
    for method, library, accs in (
            ("source_only", "transferkit", (0.50, 0.60)),
            ("dann", "transferkit", (0.60, 0.80)),
            ("multilayer_adv", "transferkit", (0.75, 0.85)),
            ("target_only", "transferkit", (0.99, 0.99)),  # the ceiling: never "best transferkit"
            ("skada:DANN", "skada", (0.50, 0.70, 0.60)),  # three seeds: its n differs from dann's
            ("skada:DAN", "skada", (0.65, 0.75))):
        for seed, acc in enumerate(accs):
            row = {"method": method, "seed": seed, "accuracy": acc, "library": library, "wall_s": 3.0 if
                   library == "skada" else 10.0}
            if method == "dann":
                row["fit_wall_s"] = (4.0, 6.0)[seed]  # training alone: mean 5.0, not the row's 10.0
            rows.append(row)
    return rows


def test_uda_checks_pair_the_named_methods_pick_each_librarys_best_and_time_training_alone():
    from transferkit.bench.uda import Budget, table3
    text = table3("mnist", "digits", _uda_rows(), Budget(seeds=(0, 1), pretrain_steps=10, adapt_steps=5), 1, 5)
    # multilayer_adv − dann per seed: 0.75 − 0.60 = +0.15, 0.85 − 0.80 = +0.05: mean +10.0, SE 5.0
    assert "| multilayer_adv − dann (paired, points) | +10.0 ± 5.0 | 2 |" in text
    assert "| dann − multilayer_adv" not in text
    # best transferkit: multilayer_adv 0.800 of source_only, dann, multilayer_adv (target_only left out);
    # best SKADA: DAN 0.700 (DANN's mean is 0.600); paired: +0.10 on both seeds
    assert ("| best transferkit − best SKADA (means; best of 3 and of 2 by test mean) | multilayer_adv 0.800 − "
            "DAN 0.700 = +10.0 points | |") in text
    assert "| multilayer_adv − SKADA DAN (paired, points) | +10.0 ± 0.0 | 2 |" in text
    # dann's training seconds are fit_wall_s (4 and 6: 5.0), SKADA DANN's wall_s (3.0) on 3 seeds
    assert "| 5.0 / 3.0 s | 2 / 3 |" in text
    assert "| Gradient reversal (dann) | 0.700 ± 0.100 | 2 | 5.0 |" in text


def _flex_rows(accs, target="t", ratio=30, seeds=(0, 1), old=None, default=0.5, **fields):
    """One row per method of METHODS and seed: ``accs[method]`` per seed, ``default`` otherwise;
    flex's rows carry a validation tie between ``conv1`` (test accuracy ``old``) and ``all`` (its own)."""
    rows = []
    for i, seed in enumerate(seeds):
        for m in METHODS:
            acc = accs.get(m, (default,) * len(seeds))[i]
            row = {"target": target, "ratio": ratio, "seed": seed, "method": m, "accuracy": acc, "steps": 10,
                   "wall_s": 1.0, **{k: v.get(m, v.get("*"))[i] if isinstance(v, dict) else v
                                     for k, v in fields.items()}}
            if m == "flex":
                row.update(candidate_val_accuracy={"conv1": 0.9, "all": 0.9},
                           candidate_test_accuracy={"conv1": acc if old is None else old[i], "all": acc})
            rows.append(row)
    return rows


def test_flex_table3_bolds_every_tied_best_of_its_own_target_and_ratio():
    from transferkit.bench.flex import table3
    # flex (0.1, 0.2) and ft_all (0.15, 0.15) tie: means 0.15000000000000002 and 0.15, 3e-17 apart
    rows = _flex_rows({"flex": (0.1, 0.2), "ft_all": (0.15, 0.15)}, default=0.1)
    rows += _flex_rows({}, ratio=3, default=0.9) + _flex_rows({}, target="u", default=0.9)  # other cells
    text = table3(rows, {"t": 0.5, "u": 0.6}, 30)
    assert ("| t (50.0) | **15.0 ± 5.0** | 10.0 ± 0.0 | 10.0 ± 0.0 | 10.0 ± 0.0 | 10.0 ± 0.0 | 10.0 ± 0.0 | "
            "**15.0 ± 0.0** | 10.0 ± 0.0 |") in text


def _wins_line(rows, which):
    from transferkit.bench.flex import wins
    text = wins(rows, {"t": 0.5}, [30])
    return next(line for line in text.splitlines() if line.startswith(which))


def test_wins_compares_flex_with_the_best_of_all_three_baselines():
    # ft_fc2 (0.90) is the best baseline; flex 0.85 beats ft_fc1 and ft_all (0.80) but not it
    rows = _flex_rows({"flex": (0.85, 0.85), "ft_fc1": (0.8, 0.8), "ft_fc2": (0.9, 0.9), "ft_all": (0.8, 0.8)})
    assert _wins_line(rows, "flex >= max").endswith("0 / 1")


def test_within_one_paired_standard_error_is_one_sided_paired_and_keeps_its_tolerance():
    within = "flex within one paired standard error"
    # flex far above ft_all (+0.10 on both seeds): within, whatever the SE
    assert _wins_line(_flex_rows({"flex": (0.95, 0.95), "ft_all": (0.85, 0.85)}), within).endswith("1 / 1")
    # flex − ft_all is −0.02 on both seeds: paired SE 0, so not within, although flex's own SE is 0.1
    rows = _flex_rows({"flex": (0.88, 0.68), "ft_all": (0.90, 0.70)})
    assert _wins_line(rows, within).endswith("0 / 1")
    # per seed −0.1 and 0.3 − (0.1 + 0.2) = −6e-17: mean −0.05 and SE 0.05, apart by float noise only
    rows = _flex_rows({"flex": (0.8, 0.3), "ft_all": (0.9, 0.1 + 0.2)}, default=0.1)
    assert _wins_line(rows, within).endswith("1 / 1")


def test_the_earlier_tie_rule_is_compared_with_the_baseline_not_with_flex():
    # flex 0.95 (ties to `all`); the earlier rule would have taken conv1 at 0.90, the best baseline's mean
    rows = _flex_rows({"flex": (0.95, 0.95), "ft_all": (0.9, 0.9)}, old=(0.9, 0.9))
    assert _wins_line(rows, "flex with accuracy ties to the earlier candidate").endswith("1 / 1")


def test_selection_table_margin_must_exceed_the_se_and_the_gap_is_to_the_best_ft_fc_or_ft_all():
    from transferkit.bench.flex import selection_table
    rows = _flex_rows({"flex": (0.9, 0.7), "ft_fc1": (0.6, 0.6), "ft_fc2": (0.7, 0.7), "ft_all": (0.5, 0.5),
                       "ft_ss": (0.99, 0.99)})  # ft_ss is not among the references
    flex = [r for r in rows if r["method"] == "flex"]
    flex[0].update(picked="all", selection={"margin": 0.01, "se": 0.01})  # margin = SE: not clear
    flex[1].update(picked="all", selection={"margin": 0.03, "se": 0.01})  # clear
    # margins 1 and 3 points: 2.0 ± 1.0; gap: flex mean 0.8 − ft_fc2 0.7 = +10.0
    assert "| 30 | t | all×2 | 1 / 2 | 2.0 ± 1.0 | +10.0 |" in selection_table(rows, {"t": 0.5}, [30])


def test_wall_table_means_and_ratios_of_wall_seconds_and_of_steps():
    from transferkit.bench.flex import wall_table
    rows = _flex_rows({}, wall_s={"faster_flex": (3.0, 5.0), "ft_fc1": (2.0, 2.0), "ft_fc2": (8.0, 8.0),
                                  "*": (1.0, 1.0)},
                      steps={"faster_flex": (30, 30), "ft_fc2": (60, 60), "*": (10, 10)})
    text = wall_table(rows, [30])
    # means: faster_flex 4.00, ft_fc1 2.00, ft_fc2 8.00; wall 4/2 = 2.00, 4/8 = 0.50; steps 30/10, 30/60
    assert ("| 30 | 1.00 | 1.00 | 4.00 | 2.00 | 8.00 | 1.00 | 1.00 | 1.00 | 2.00 | 0.50 | 3.00 | 0.50 |"
            in text)
    assert "| 30 | t | 2.00 | 0.50 |" in text
    assert "| 30 | **targets below 2x** | 0 / 1 | 1 / 1 |" in text  # exactly 2x is not below 2x


def test_retrieval_and_image_tables_report_their_own_quantities():
    from transferkit.bench.flex import image_table, retrieval_table
    rows = _flex_rows({}, default=0.9, ap10=0.4)
    assert "| t | 30 | 40.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 0.0 |" in retrieval_table(rows, {"t": 0.5}, [30])
    for seed, picked in ((0, "image:colour"), (1, "conv1")):
        rows.append({"target": "t", "ratio": 30, "seed": seed, "method": "flex+img", "accuracy": 0.8,
                     "picked": picked,
                     "candidate_test_accuracy": {"image:colour": 0.6, "image:stn": 0.5, "image:unet": 0.4},
                     "candidate_val_accuracy": {"image:colour": 0.99, "image:stn": 0.99, "image:unet": 0.99}})
    assert ("| t | 30 | 90.0 ± 0.0 | 80.0 ± 0.0 | 60.0 ± 0.0 | 50.0 ± 0.0 | 40.0 ± 0.0 | conv1 x1, image:colour x1 |"
            in image_table(rows, {"t": 0.5}, [30]))


def _tune_rows(pair, method, setting, accs):
    return [{"source": pair[0], "target": pair[1], "method": method, "setting": setting, "accuracy": a} for a in accs]


def test_per_pair_choice_tells_one_image_apart_and_averages_source_only_over_seeds():
    from transferkit.bench.uda_tune import DANN_GRID, choice_table, describe, per_pair_choice
    a, b = DANN_GRID[:2]
    rows = (_tune_rows(("x", "y"), "dann", describe(a), (0.500, 0.500))
            + _tune_rows(("x", "y"), "dann", describe(b), (0.501, 0.501))  # 1e-3 better: no tie
            + _tune_rows(("x", "y"), "source_only", "-", (0.5, 0.7)))
    chosen = per_pair_choice(rows, (("x", "y"),))
    assert chosen["x:y"]["dann"]["options"] == b and chosen["x:y"]["dann"]["source_only"] == pytest.approx(0.6)
    assert f"| x → y | dann | {describe(b)} | 0.501 | 0.600 |" in choice_table(chosen)


def test_grid_table_ranks_settings_by_their_mean_over_the_pairs():
    from transferkit.bench.uda_tune import DANN_GRID, describe, grid_table
    a, b = describe(DANN_GRID[0]), describe(DANN_GRID[1])
    pairs = (("x", "y"), ("u", "v"))
    rows = []
    for pair, acc_a, acc_b in ((pairs[0], 0.6, 0.9), (pairs[1], 0.8, 0.9)):
        rows += _tune_rows(pair, "source_only", "-", (0.5,) * 3)
        rows += _tune_rows(pair, "dann", a, (acc_a,) * 3) + _tune_rows(pair, "dann", b, (acc_b,) * 3)
    plan = SimpleNamespace(pairs=pairs, seeds=(0, 1, 2), pretrain_steps=1, adapt_steps=1, batch_size=8)
    lines = [line for line in grid_table(rows, plan).splitlines() if line.startswith("| source_only |")
             or line.startswith("| dann |")]
    # b: (0.9 + 0.9) / 2 = 0.900 first; a: (0.6 + 0.8) / 2 = 0.700; source_only above both
    assert lines == ["| source_only | - | 0.500 | 0.500 | 0.500 |", f"| dann | {b} | 0.900 | 0.900 | 0.900 |",
                     f"| dann | {a} | 0.600 | 0.800 | 0.700 |"]


def test_report_table_rows_keep_each_cells_largest_memory_and_its_grouped_column():
    from transferkit.report import _table_rows
    cell = {"source": "s", "target": "t", "setting": "k=5"}
    summary = [{"method": "a", **cell, "accuracy_mean": 0.7, "accuracy_se": 0.1, "n": 2, "wall_s": 1.0,
                "group_accuracy_mean": 0.6, "group_accuracy_se": 0.05, "group_n": 2},
               {"method": "b", **cell, "accuracy_mean": 0.5, "accuracy_se": 0.0, "n": 1, "wall_s": 2.0}]
    rows = [{"method": "a", **cell, "peak_rss_mb": 100.0}, {"method": "a", **cell, "peak_rss_mb": 300.0},
            {"method": "b", **cell, "peak_rss_mb": None}]  # b measured nothing: no figure borrowed from a
    header, table = _table_rows(summary, rows)
    assert header == ["method", "source", "target", "setting", "target accuracy (%)", "grouped accuracy (%)", "n",
                      "wall s", "peak MiB"]
    assert table == [["a", "s", "t", "k=5", "70.0 ± 10.0", "60.0 ± 5.0", "2", "1.0", "300"],
                     ["b", "s", "t", "k=5", "50.0", "–", "1", "2.0", "–"]]


def test_tables_add_balanced_accuracy_where_the_test_classes_are_imbalanced_and_say_why():
    from transferkit.report import _table_rows
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    def row(method, seed, confusion):
        right = sum(c[i] for i, c in enumerate(confusion))
        recalls = [c[i] / sum(c) for i, c in enumerate(confusion)]
        return {"method": method, "seed": seed, "source": "s", "target": "t", "setting": "k=2", "wall_s": 1.0,
                "accuracy": right / sum(map(sum, confusion)), "balanced_accuracy": sum(recalls) / len(recalls),
                "confusion": confusion}
    rare = [row("a", 0, [[18, 0], [2, 0]]), row("a", 1, [[17, 1], [1, 1]])]  # 18 and 2 test images: 9x
    table = markdown_table(summarize(rare), rare)
    assert "| target accuracy (%) | balanced accuracy (%) | n |" in table
    assert "| 90.0 ± 0.0 | 61.1 ± 11.1 | 2 |" in table  # (18/18 + 0/2) / 2 = 50 %, (17/18 + 1/2) / 2 = 72.2 %
    assert "differ by up to 9.0x" in table and "balanced_accuracy_score" in table
    header, cells = _table_rows(summarize(rare), rare)
    assert header[4:6] == ["target accuracy (%)", "balanced accuracy (%)"] and cells[0][4:6] == ["90.0 ± 0.0",
                                                                                                 "61.1 ± 11.1"]
    even = [row("a", 0, [[9, 1], [2, 8]]), row("a", 1, [[8, 2], [2, 9]])]  # 10 and 11: no column
    assert "balanced" not in markdown_table(summarize(even), even)
    assert "balanced" not in _table_rows(summarize(even), even)[0]
    hand = [{k: v for k, v in r.items() if k != "confusion"} for r in even]  # given by hand: shown
    assert "| balanced accuracy (%) |" in markdown_table(summarize(hand), hand)


def test_a_small_test_split_is_named_with_how_well_one_accuracy_is_known():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table, small_test_line
    rows = [{"method": "a", "seed": s, "source": "s", "target": "scans", "setting": "k=2", "accuracy": 0.9,
             "wall_s": 1.0, "n_test": 65} for s in (0, 1)]
    line = "Small test split: scans 65 images (± 12.2): one accuracy measured on it is known to within that many points"
    assert line in markdown_table(summarize(rows), rows)
    big = [{**r, "n_test": 1250} for r in rows]
    assert small_test_line(big) == [] and "Small test split" not in markdown_table(summarize(big), big)
    runs = [{**rows[0], "run": "x", "n_test": 100}, {**rows[0], "run": "y", "n_test": 400}]
    assert small_test_line(runs)[0].startswith("Small test split: scans (run x) 100 images (± 9.8); scans (run y) "
                                               "400 images (± 4.9)")
    videos = [{**r, "target": "digits@grouped5", "n_test": 2250, "n_test_groups": 450} for r in rows]
    assert small_test_line(videos)[0].startswith("Small test split: digits@grouped5 450 groups (grouped accuracy) "
                                                 "(± 4.6): ")
    own = small_test_line([{**r, "test": "folder:data/tgt_test", "n_test": 444} for r in rows])[0]  # a trial: it
    assert own.startswith("Small test split: test folder:data/tgt_test 444 images (± 4.7): ")  # named the target
    assert own.endswith("(a larger test set scores more images).") and "test_fraction" not in own  # refused with test


def test_lines_under_the_table_list_settings_by_their_number():
    from transferkit.tables import unlabelled_line
    rows = [{"method": "dann", "n_labeled": 0, "setting": s, "source": "a", "target": "b", "seed": 0}
            for s in ("k=1", "k=10", "k=2")] + [{"method": "ft", "n_labeled": 5, "setting": "k=1", "seed": 0}]
    assert "the setting of its rows (k=1, k=2, k=10) names" in unlabelled_line(rows)[0]
