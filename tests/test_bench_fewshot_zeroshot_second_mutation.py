"""Tests from a second mutation pass over ``bench/fewshot.py``, ``bench/zeroshot.py``, ``bench/skada_compare.py``
(its SKADA-free parts) and ``bench/uda_tune.py``, after ``test_bench_other_mutation``, ``test_bench_plans_mutation``
and ``test_bench_tables_mutation``. Covered: the jobs each suite body plans, with the job runner replaced by a
recorder (``fewshot_suite``: its parts, the lext α=0 variant, the ablations at ``ks[0]``, one directory per run,
the grouped target, the t-SNE and the accuracy-vs-k plots, ``fewshot.md`` with its budget line; ``zeroshot_suite``:
the seeds, the plan's steps, training on the seen classes only, early stopping on the *validation* split and
testing on every class, the text encoder; ``uda_tune_suite``: job names and digests per seed and setting, the
source_only row and every job scored on validation, the SKADA-epoch budget, ``selected.json`` and the choice
table); the default full ``FewshotPlan``; ``fewshot_config``'s batch sizes, repeats and options; ``tsne_figure``'s
panels, title and cache key, ``_cached_panels`` on an absent file and on a file without panels; a zero-shot job's
rows (``_zeroshot_rows`` with a fake engine and model: the prior-calibrated GZSL row, the text encoder, the CLIP
temperature, ``_retrieval_rows``' captions, image count and recalls); ``_split_with_styles``' syndigits styles;
``job_name`` of ``clip_triplet``; ``choice_table``'s dash, ``per_pair_choice``'s reported mean on a tie and
``grid_table``'s seeds; ``skada_compare.available`` on a broken install, ``version``, ``run_skada``'s labels,
domain ids and numpy seed, the unknown-method message and ``steps_per_epoch`` of a batch larger than both sets.
No benchmark runs: the heavy calls are monkeypatched and the data are ``helpers.toy_domain`` and ``tiny_net``.

Judged equivalent, so not tested: ``zeroshot_suite``'s ``jobs.mkdir(...)`` dropped (``run_jobs`` makes a job's
folder before it writes). Left surviving: none of the mutants tried; not tried: ``_train`` and the real training
paths of ``tsne_figure`` (``test_semantic`` and ``test_fewshot_eval`` run them), ``dann_timing``,
``skada_estimator``'s SKADA-side settings and ``sigmoid_domain_classifier`` / ``dead_domain_classifier`` (they
need SKADA's deep module with skorch, skipped here; ``test_skada_compare`` covers them where it is installed)."""

from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_net, toy_domain

# --- bench/fewshot.py: the plan, the jobs a suite runs and the files it writes ---------------------------------


def test_fewshot_full_plan_runs_k_2_to_5_and_every_part():
    from transferkit.bench.fewshot import PARTS, FewshotPlan
    # kills: the default ks one short ([2, 3, 4]); the default parts without the t-SNE figure
    plan = FewshotPlan()
    assert plan.ks == [2, 3, 4, 5] and plan.parts == list(PARTS) and "tsne" in plan.parts and plan.repeats == 10


def test_fewshot_config_pretrains_in_batches_of_64_and_trains_in_batches_of_32():
    from transferkit.bench.fewshot import fewshot_config
    # kills: the pre-training batch 64 -> 32; the label subsets per k (repeats) not passed on; an option dropped
    cfg = fewshot_config("main-k3", "syndigits", "mnist", 3, False, 7, ["lext"], {"lext": {"alpha": 0.0}})
    assert (cfg.pretrain.batch_size, cfg.train.batch_size, cfg.pretrain.eval_every) == (64, 32, 100)
    assert (cfg.source, cfg.target, cfg.k, cfg.repeats, cfg.seed) == ("syndigits", "mnist", 3, 7, 0)
    assert cfg.options == {"lext": {"alpha": 0.0}} and cfg.methods == ["lext"]


def _fake_suite(monkeypatch):
    """fewshot_suite with run_experiment, tsne_figure and the plot replaced by recorders: no training."""
    from transferkit import plots
    from transferkit.bench import fewshot
    seen = {"runs": [], "tsne": [], "plots": []}

    def run_experiment(cfg, run_dir, log):
        seen["runs"].append((cfg, run_dir))
        return None, [{"method": m, "setting": f"k={cfg.k}", "seed": 0, "accuracy": 0.5, "group_accuracy": 0.25,
                       "target": cfg.target, "n_test": 2000, "n_test_groups": 400} for m in cfg.methods]
    monkeypatch.setattr(fewshot, "run_experiment", run_experiment)
    monkeypatch.setattr(fewshot, "tsne_figure", lambda cfg, bench_dir, log: seen["tsne"].append(cfg))
    monkeypatch.setattr(plots, "accuracy_vs_k_plot", lambda rows, path, title="": seen["plots"].append(
        (path.name, {r["part"] for r in rows}, title)))
    return seen


def test_fewshot_suite_runs_each_part_with_its_variants_and_ablations(monkeypatch, tmp_path):
    from transferkit.bench.fewshot import ABLATIONS, METHODS, FewshotPlan, fewshot_suite
    seen = _fake_suite(monkeypatch)
    plan = FewshotPlan(ks=[3, 2], repeats=3)  # every part; ks not sorted: ks[0] is 3
    rows = fewshot_suite(plan, tmp_path, lambda *a: None)
    cfgs = {cfg.name: cfg for cfg, _ in seen["runs"]}
    # kills: the second pair left out; the lext α=0 variant rows not run; the ablation at ks[-1]
    assert list(cfgs)[:8] == ["main-k3", "main-variant0-k3", "main-k2", "main-variant0-k2", "second-k3",
                              "second-variant0-k3", "second-k2", "second-variant0-k2"]
    assert [n for n in cfgs if n.startswith("ablation")] == [f"ablation_{tag}-k3" for tag, _ in ABLATIONS.values()]
    assert all(cfgs[f"ablation_{tag}-k3"].k == 3 for tag, _ in ABLATIONS.values())
    # kills: every run in one directory (bench_dir, not bench_dir / name); repeats not passed on
    assert [d for _, d in seen["runs"]] == [tmp_path / cfg.name for cfg, _ in seen["runs"]]
    assert {cfg.repeats for cfg in cfgs.values()} == {3}
    assert cfgs["main-k2"].methods == METHODS and (cfgs["second-k2"].source, cfgs["second-k2"].target) == (
        "mnist", "digits")
    # kills: the variant's options dropped (options or {} -> {}); its rows not relabelled
    assert cfgs["main-variant0-k2"].options == {"lext": {"alpha": 0.0}}
    assert cfgs["ablation_no_eq5-k3"].options == {"lext": {"source_entropy": 0.0}}
    labels = {r["method"] for r in rows if r["part"] == "ablation"}
    assert labels == set(ABLATIONS)
    assert {r["method"] for r in rows if r["part"] == "main"} == {*METHODS, "lext α=0"}
    # kills: the grouped part on plain digits or without target_only
    assert (cfgs["grouped-k2"].target, cfgs["grouped-k2"].methods) == ("digits@grouped5",
                                                                       ["target_only", "finetune", "lext"])
    # kills: fewshot.md without the plan's budget line
    text = (tmp_path / "fewshot.md").read_text()
    assert text.startswith("# fewshot benchmark\nBudget: ") and "3 label subsets per k" in text
    # kills: the t-SNE at ks[-1], with the plan's repeats or other methods
    assert [(c.k, c.repeats, c.methods) for c in seen["tsne"]] == [(3, 1, ["finetune", "lext"])]
    assert [name for name, _, _ in seen["plots"]] == ["accuracy_vs_k_main.png", "accuracy_vs_k_second.png"]


def test_fewshot_suite_draws_no_tsne_and_no_accuracy_plot_of_parts_it_did_not_run(monkeypatch, tmp_path):
    from transferkit.bench.fewshot import FewshotPlan, fewshot_suite
    seen = _fake_suite(monkeypatch)
    # kills: `if "tsne" in parts` -> always; a plot per pair whenever there are rows (the grouped ones)
    fewshot_suite(FewshotPlan(ks=[2], repeats=1, parts=["grouped"]), tmp_path, lambda *a: None)
    assert seen["tsne"] == [] and seen["plots"] == [] and [c.name for c, _ in seen["runs"]] == ["grouped-k2"]


def test_a_tsne_cache_that_holds_no_dict_is_computed_again(tmp_path):
    from transferkit.bench.fewshot import _cached_panels
    cache = tmp_path / "embeddings-x.pt"
    torch.save([torch.ones(2, 3)], cache)  # a torch file, but no panels
    # kills: `isinstance(panels, dict)` dropped (a list handed on as the panels)
    assert _cached_panels(cache, print) is None


def test_an_absent_tsne_cache_is_no_unreadable_one(tmp_path):
    from transferkit.bench.fewshot import _cached_panels
    logged = []
    # kills: the `cache.exists()` test dropped (a first run logs that its cache "is unreadable")
    assert _cached_panels(tmp_path / "embeddings-none.pt", logged.append) is None and logged == []


def _fake_tsne(monkeypatch, n_test=8):
    from transferkit import plots
    from transferkit.bench import fewshot
    data = SimpleNamespace(source=SimpleNamespace(test=toy_domain(n_test, seed=0)),
                           target=SimpleNamespace(test=toy_domain(n_test, seed=1)))
    torch.manual_seed(0)
    pretrained, trained = tiny_net(4), tiny_net(4)
    seen = {"trained": [], "drawn": []}

    def train(name, cfg, data, pretrained, labeled, unlabeled):
        seen["trained"].append(name)
        return SimpleNamespace(net=trained)
    monkeypatch.setattr(fewshot, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(fewshot, "pretrain_source", lambda cfg, data, log: (pretrained, {}))
    monkeypatch.setattr(fewshot, "label_subset", lambda cfg, target, seed: (None, None))
    monkeypatch.setattr(fewshot, "_train", train)
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: seen["drawn"].append((panels, kw)))
    feats = lambda net, dom: net.eval().forward_features(dom.images).detach()  # noqa: E731
    return seen, feats, data, pretrained, trained


def test_tsne_panels_embed_the_target_test_images_under_each_network(monkeypatch, tmp_path):
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    seen, feats, data, pretrained, trained = _fake_tsne(monkeypatch)
    cfg = fewshot_config("tsne", "syndigits", "mnist", 2, True, 1, ["lext"], {"lext": {"alpha": 0.0}})
    tsne_figure(cfg, tmp_path, lambda *a: None, n=8)
    panels, kw = seen["drawn"][0]
    g = torch.Generator().manual_seed(0)
    order, xt_order = torch.randperm(8, generator=g), torch.randperm(8, generator=g)  # source draw, then target
    src, tgt = panels["source network"]
    # kills: the target panel drawn from the source test split; a method's panel under the source network
    assert torch.allclose(src, feats(pretrained, data.source.test)[order], atol=1e-6)
    assert torch.allclose(tgt, feats(pretrained, data.target.test)[xt_order], atol=1e-6)
    assert torch.allclose(panels["lext"][1], feats(trained, data.target.test)[xt_order], atol=1e-6)
    # kills: the options left out of the title
    assert "k=2" in kw["title"] and "lext {'alpha': 0.0}" in kw["title"]


def test_tsne_cache_key_holds_the_methods_options(monkeypatch, tmp_path):
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    seen, *_ = _fake_tsne(monkeypatch)
    for alpha in (0.0, 0.5, 0.5):
        cfg = fewshot_config("tsne", "syndigits", "mnist", 2, True, 1, ["lext"], {"lext": {"alpha": alpha}})
        tsne_figure(cfg, tmp_path, lambda *a: None, n=8)
    # kills: "options" left out of the cache key (alpha 0.5 would read alpha 0's embeddings)
    assert seen["trained"] == ["lext", "lext"] and len(list((tmp_path / "tsne").glob("embeddings-*.pt"))) == 2


# --- bench/zeroshot.py: the jobs a suite runs, the rows a job gives --------------------------------------------


def _ten_class_parts(name):
    """A domain's train / val / test parts, each of the ten digit classes, told apart by their names."""
    parts = {}
    for i, part in enumerate(("train", "val", "test")):
        d = toy_domain(20, seed=i, classes=10, name=f"{name}/{part}")
        parts[part] = (d, [f"{name} {part} caption {j}" for j in range(20)])
    return parts


def _fake_zeroshot_suite(monkeypatch, text_extra):
    from transferkit.bench import zeroshot
    jobs = []

    def job_result(path, compute, log_rows):
        jobs.append((path, compute.args))
        return []
    monkeypatch.setattr(zeroshot, "_split_with_styles", _ten_class_parts)
    monkeypatch.setattr(zeroshot, "text_available", lambda: text_extra)
    monkeypatch.setattr(zeroshot, "job_result", job_result)
    return jobs


def test_zeroshot_suite_trains_on_the_seen_classes_selects_on_validation_and_tests_on_every_class(monkeypatch,
                                                                                                 tmp_path):
    from transferkit.bench.zeroshot import DOMAINS, ZeroshotPlan, _methods, job_name, zeroshot_suite
    jobs = _fake_zeroshot_suite(monkeypatch, text_extra=False)
    zeroshot_suite(ZeroshotPlan(steps=7, seeds=[0, 3]), tmp_path, lambda *a: None)
    # kills: only the first seed run; the plan's steps ignored (a fixed 300)
    assert [p.name for p, _ in jobs] == [job_name(m, d, s, "hashing") for s in (0, 3) for d in DOMAINS
                                         for m in _methods("hashing")]
    assert all(p.parent == tmp_path / "jobs" for p, _ in jobs)
    # kills: embed_text run with the hashing encoder (`if text != "hashing"` -> always): the log says it is skipped
    assert not any(p.name.startswith("embed_text") for p, _ in jobs) and len(jobs) == 2 * 2 * 6
    for _, (_, _, name, _, (train, caps, val, test), _, cfg, text, _) in jobs:
        assert cfg.steps == 7 and text == "hashing"
        # kills: the unseen classes trained on (train not cut to 0-6); early stopping on the test split
        assert train.name == f"{name}/train" and set(train.labels.tolist()) == set(range(7)) and len(caps) == 14
        assert val.name == f"{name}/val" and set(val.labels.tolist()) == set(range(7))
        assert test.name == f"{name}/test" and set(test.labels.tolist()) == set(range(10))
    # kills: zeroshot.md written without its plan (no budget line)
    assert (tmp_path / "zeroshot.md").read_text().startswith("# zeroshot benchmark\n\nBudget: up to 7 training steps")


def test_every_clip_job_names_a_text_encoder_other_than_minilm():
    from transferkit.bench.zeroshot import job_name
    # kills: reads_text keyed on "clip_infonce" only (clip_triplet with and without the text extra would share a job)
    assert job_name("clip_triplet", "mnist", 0, "hashing") == "clip_triplet-hashing-mnist-s0.json"
    assert job_name("clip_triplet", "mnist", 0, "all-MiniLM-L6-v2") == "clip_triplet-mnist-s0.json"


def test_zeroshot_suite_uses_minilm_when_the_text_extra_is_installed(monkeypatch, tmp_path):
    from transferkit.bench.zeroshot import ZeroshotPlan, zeroshot_suite
    jobs = _fake_zeroshot_suite(monkeypatch, text_extra=True)
    zeroshot_suite(ZeroshotPlan(steps=1, seeds=[0]), tmp_path, lambda *a: None)
    # kills: the text encoder always the hashing one (embed_text never run, clip jobs named -hashing)
    names = {p.name for p, _ in jobs}
    assert {"embed_text-mnist-s0.json", "clip_infonce-mnist-s0.json"} <= names
    assert {args[7] for _, args in jobs} == {"all-MiniLM-L6-v2"}


class _FakeZeroShot:
    """A zero-shot model that returns fixed scores (and, as a CLIP model, a temperature and image embeddings)."""

    def __init__(self, scores):
        self._scores, self.temperature = scores, SimpleNamespace(temperature=0.07)

    def scores(self, images):
        return self._scores

    def encode_images(self, images):
        return images.flatten(1)[:, :4]


def _zeroshot_job(monkeypatch, mname):
    from transferkit.bench import zeroshot
    fits, retrievals = [], []

    class Engine:
        def __init__(self, cfg, seed):
            pass

        def fit(self, method, source, val):
            fits.append((source, val))
            return SimpleNamespace(steps=5, best_val_accuracy=0.75)

    def retrieval_report(method, _, labels, captions, classes, image_embeddings):
        retrievals.append((len(labels), len(image_embeddings), captions))
        return {"i2t_R@1": 0.1, "i2t_R@5": 0.5, "i2t_R@10": 0.9, "t2i_R@1": 0.2, "t2i_R@5": 0.6, "t2i_R@10": 0.8}
    monkeypatch.setattr(zeroshot, "Engine", Engine)
    monkeypatch.setattr(zeroshot, "retrieval_report", retrieval_report)
    test = toy_domain(1001, classes=10, name="mnist/test")  # more than the 1000 images retrieval keeps
    data = {d: {"test": (test, [f"{d} digit {c}" for c in test.labels.tolist()])} for d in ("mnist", "syndigits")}
    scores = torch.randn(1001, 10, generator=torch.Generator().manual_seed(0))
    scores[:, :7] += 1.0  # biased to the seen classes: the prior-matched gamma moves many predictions
    train = toy_domain(14, classes=7, name="mnist/train")
    splits = (train, [f"c{i}" for i in range(14)], toy_domain(7, classes=7, name="mnist/val"), test)
    rows = zeroshot._zeroshot_rows(mname, lambda net, caps: _FakeZeroShot(scores), "mnist", 0, splits, data,
                                   SimpleNamespace(), "hashing", lambda *a: None)
    return rows, scores, test, fits, retrievals


def test_zeroshot_job_rows_calibrate_gzsl_with_the_prior_matched_gamma(monkeypatch):
    from transferkit.bench.zeroshot import SEEN, UNSEEN
    from transferkit.zeroshot import prior_matched_gamma, zero_shot_report
    rows, scores, test, fits, _ = _zeroshot_job(monkeypatch, "attr_zones")
    gamma = prior_matched_gamma(scores, SEEN, UNSEEN)
    cal, plain = zero_shot_report(scores, test.labels, SEEN, UNSEEN, gamma), zero_shot_report(scores, test.labels,
                                                                                                SEEN, UNSEEN)
    assert gamma != 0 and cal["seen"] != plain["seen"]  # the calibration moves the seen accuracy
    zsl, gzsl, prior = rows
    # kills: the calibrated report computed without gamma; its seen accuracy taken from the plain report
    assert (prior["accuracy"], prior["seen"], prior["unseen"], prior["gamma"]) == (cal["h"], cal["seen"],
                                                                                   cal["unseen"], gamma)
    assert (gzsl["accuracy"], gzsl["seen"], zsl["accuracy"]) == (plain["h"], plain["seen"], plain["zsl"])
    # kills: a text encoder named on a row of a method that reads no text
    assert zsl["text_encoder"] is None and "temperature" not in zsl and len(rows) == 3
    assert fits[0][1].name == "mnist/val" and (zsl["steps"], zsl["seen_val_accuracy"]) == (5, 0.75)


def test_a_clip_jobs_retrieval_rows_name_their_captions_images_and_recalls(monkeypatch):
    rows, _, _, fits, retrievals = _zeroshot_job(monkeypatch, "clip_infonce")
    zsl, ret = rows[0], rows[3:]
    # kills: the temperature not recorded; the text encoder not named on a CLIP row
    assert zsl["temperature"] == 0.07 and zsl["text_encoder"] == "hashing"
    # kills: 1000 test images -> 100; n_captions counting every image's caption, not the distinct ones
    assert [(n, e) for n, e, _ in retrievals] == [(1000, 1000)] * 2 and [len(c) for *_, c in retrievals] == [10, 10]
    assert [(r["setting"], r["n_images"], r["n_captions"]) for r in ret] == [
        ("i2t (mnist captions)", 1000, 10), ("t2i (mnist captions)", 1000, 10),
        ("i2t (syndigits captions)", 1000, 10), ("t2i (syndigits captions)", 1000, 10)]
    # kills: R@5 and R@10 swapped; the retrieval rows' target left as the zero-shot one (mnist[7-9])
    assert [(r["recall_at_1"], r["recall_at_5"], r["recall_at_10"]) for r in ret[:2]] == [(0.1, 0.5, 0.9),
                                                                                           (0.2, 0.6, 0.8)]
    assert {r["target"] for r in ret} == {"mnist test"} and {r["captions"] for r in ret} == {"mnist", "syndigits"}


def test_syndigits_captions_read_the_styles_of_each_parts_own_images(monkeypatch):
    from transferkit.bench import zeroshot
    dom = toy_domain(6, classes=3)
    parts = torch.tensor([2, 0, 1, 0, 2, 1])  # test, train, val, train, test, val
    split = SimpleNamespace(**{p: dom.subset(parts == code) for code, p in enumerate(("train", "val", "test"))})
    made = []
    monkeypatch.setattr(zeroshot, "load_domain", lambda name, size, channels: dom)
    monkeypatch.setattr(zeroshot, "split_domain", lambda d: split)
    monkeypatch.setattr(zeroshot, "split_parts", lambda d: parts)
    monkeypatch.setattr(zeroshot, "syndigits_styles", lambda: {"font": torch.arange(6) * 10})
    monkeypatch.setattr(zeroshot, "make_captions", lambda d, kind, styles: made.append((kind, styles)) or ["c"])
    out = zeroshot._split_with_styles("syndigits")
    # kills: the styles not handed to the captions (styles=None), or not cut to the part's own images
    assert [(k, s["font"].tolist()) for k, s in made] == [("syndigits", [10, 30]), ("syndigits", [20, 50]),
                                                          ("syndigits", [0, 40])]
    assert out["val"][0].provenance["base"] == "syndigits"
    made.clear()
    zeroshot._split_with_styles("mnist")
    assert [s for _, s in made] == [None, None, None]  # mnist has no styles


# --- bench/uda_tune.py: the grid's jobs, what they are scored on, the files ------------------------------------


def test_uda_tune_jobs_are_named_and_digested_per_seed_and_setting_and_scored_on_validation(monkeypatch, tmp_path):
    import json
    from dataclasses import replace

    import transferkit.bench.uda_tune as tune
    net = tiny_net(4)
    data = SimpleNamespace(source=SimpleNamespace(train=toy_domain(8)),
                           target=SimpleNamespace(train=toy_domain(8, seed=1), val=toy_domain(8, seed=2, name="t/val"),
                                                  test=toy_domain(8, seed=3, name="t/test")))
    scored, ran = [], {}

    def run_jobs(jobs, workers, log, digests, stale):
        ran.update(jobs=jobs, digests=digests)
        return [{**job.args[3], "accuracy": 0.5 + 0.01 * i, "wall_s": 1.0} for i, (_, job) in enumerate(jobs)]
    monkeypatch.setattr(tune, "prepare_domains", lambda cfg: data)
    monkeypatch.setattr(tune, "adaptation_epochs", lambda data, b: (1, 7))
    monkeypatch.setattr(tune, "pretrain_source", lambda cfg, data, log: (net, {"path": "source.pt"}))
    monkeypatch.setattr(tune, "source_only_model", lambda net, data: net)
    monkeypatch.setattr(tune, "evaluate_on", lambda model, domain: scored.append(domain.name) or {"accuracy": 0.4})
    monkeypatch.setattr(tune, "run_jobs", run_jobs)
    b = replace(tune.tune_budget(True), seeds=(0, 1), pairs=(("digits", "digits+noise"),))
    rows = tune.uda_tune_suite(b, tmp_path, lambda *a: None)
    names = [p.name for p, _ in ran["jobs"]]
    # kills: the seed left out of a job's file name (seed 1 would read seed 0's results)
    assert len(set(names)) == len(names) == 2 * len(tune.settings(True))
    assert names[0].startswith("digits-digits+noise-s0-dann-") and names[6].startswith("digits-digits+noise-s1-dann-")
    # kills: the seed or the options left out of a job's digest (a stale row of another seed or setting accepted)
    assert len(set(ran["digests"])) == len(names)
    # kills: the source_only row or a job's head on another split than validation
    assert scored == ["t/val", "t/val"] and {r["split"] for r in rows} == {"val"}
    # kills: the jobs' budget left at the plan's adapt_steps, not the whole SKADA epochs' steps
    assert {job.args[0].train.steps for _, job in ran["jobs"]} == {7} and b.adapt_steps != 7
    assert {job.args[0].pretrained for _, job in ran["jobs"]} == {"source.pt"}
    # kills: selected.json not written; the per-pair choice table left out of uda_tune.md
    chosen = json.loads((tmp_path / "selected.json").read_text())["digits:digits+noise"]
    assert chosen["mcc"]["options"] == tune.MCC_GRID[1]  # the later job of each seed scores 0.01 more
    table = (tmp_path / "uda_tune.md").read_text()
    assert "| digits → digits+noise | mcc | detach_weights=False |" in table
    assert table.startswith("Target **validation** accuracy, seeds [0, 1], 200 pre-training steps")  # every seed named


def test_choice_table_shows_a_dash_where_no_source_only_row_ran():
    from transferkit.bench.uda_tune import choice_table
    # kills: the "-" for a missing source_only mean dropped (a number or an error in its place)
    chosen = {"x:y": {"dann": {"setting": "weight=1.0", "val_accuracy": 0.5, "source_only": None}}}
    assert choice_table(chosen).splitlines()[-1] == "| x → y | dann | weight=1.0 | 0.500 | - |"


def test_per_pair_choice_reports_the_chosen_settings_own_mean_on_a_tie():
    from transferkit.bench.uda_tune import DANN_GRID, describe, per_pair_choice
    a, b = DANN_GRID[:2]
    rows = [{"source": "x", "target": "y", "method": "dann", "setting": describe(o), "accuracy": acc}
            for o, accs in ((a, (0.4, 0.4)), (b, (0.3, 0.5 + 1e-7))) for acc in accs]
    chosen = per_pair_choice(rows, (("x", "y"),))["x:y"]["dann"]
    # kills: val_accuracy the best mean (b's) rather than the mean of the setting chosen on the tie (a's)
    assert chosen["options"] == a and chosen["val_accuracy"] == pytest.approx(0.4, abs=1e-9)


# --- bench/skada_compare.py: the SKADA-free parts --------------------------------------------------------------


def test_skada_counts_as_absent_when_its_import_fails_with_a_plain_import_error(monkeypatch):
    import importlib.abc
    import sys

    from transferkit.bench import skada_compare

    class Broken(importlib.abc.MetaPathFinder):  # skada installed, but one of its imports fails (a broken install)
        def find_spec(self, name, path=None, target=None):
            if name == "skada" or name.startswith("skada."):
                raise ImportError("cannot import name 'x' from 'torch'")
            return None
    for name in [n for n in sys.modules if n == "skada" or n.startswith("skada.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    # kills: `except ImportError` narrowed to ModuleNotFoundError (the benchmark would crash, not skip SKADA)
    assert skada_compare.available() is False


def test_skada_version_is_the_installed_packages():
    from importlib.metadata import PackageNotFoundError, version

    from transferkit.bench.skada_compare import version as skada_version
    try:
        installed = version("skada")
    except PackageNotFoundError:
        installed = None
    # kills: version() -> None (the uda jobs' digest would not change with SKADA's version)
    assert skada_version() == installed


def test_run_skada_hands_skada_source_labels_target_domains_and_a_seeded_numpy(monkeypatch):
    import numpy as np

    from transferkit.bench import skada_compare
    from transferkit.domain import Domain
    seen = []

    class Fake:
        def fit(self, x, y, sample_domain):
            seen.append(("fit", x.shape[0], y.tolist(), sample_domain.tolist(), np.random.rand()))

        def predict(self, x, sample_domain):
            seen.append(("predict", x.shape[0], sample_domain.tolist()))
            return np.array([0, 1, 1])
    monkeypatch.setattr(skada_compare, "skada_estimator", lambda *a: Fake())
    dom = lambda labels: Domain("d", torch.zeros(len(labels), 1, 28, 28), torch.tensor(labels), ["a", "b"])  # noqa: E731
    net = tiny_net(2)
    for _ in range(2):
        np.random.seed(99)  # another state before each call: the seed must set it
        res = skada_compare.run_skada("DANN", net, dom([0, 1]), dom([1, 1, 0]), dom([0, 1, 0]), epochs=1,
                                      batch_size=2, lr=1e-3, seed=3)
    # kills: the target's labels handed to SKADA (not -1); the target's domain id -2 -> -1 in fit or predict
    assert seen[0][:4] == ("fit", 5, [0, 1, -1, -1, -1], [1, 1, -2, -2, -2]) and seen[1] == ("predict", 3, [-2] * 3)
    # kills: numpy's seed dropped (SKADA's samplers draw from numpy: the second call would differ)
    np.random.seed(3)
    assert seen[0][4] == seen[2][4] == np.random.rand()
    assert res["accuracy"] == pytest.approx(2 / 3)


def test_an_unknown_skada_method_is_named_with_the_known_ones(monkeypatch):
    import sys
    import types

    from transferkit.bench.skada_compare import SKADA_METHODS, skada_estimator, steps_per_epoch
    fake = types.ModuleType("skada.deep")  # SKADA's deep module stood in for: the name check comes after the import
    monkeypatch.setitem(sys.modules, "skada", types.ModuleType("skada"))
    monkeypatch.setitem(sys.modules, "skada.deep", fake)
    sys.modules["skada"].deep = fake
    # kills: the known methods left out of the message (the user cannot see what to write instead)
    with pytest.raises(ValueError, match=r"unknown SKADA method 'DDC'.*'DANN-sigmoid'.*'MCC-T2.5'"):
        skada_estimator("DDC", tiny_net(2), epochs=1, batch_size=2, lr=1e-3)
    assert "SourceOnly" in SKADA_METHODS
    # kills: at least one step an epoch (`or 1`): a batch larger than both sets must give 0 for uda to refuse it
    assert steps_per_epoch(10, 20, 32) == 0 and steps_per_epoch(64, 20, 32) == 2
