"""Tests from a fourth mutation pass over ``bench/fewshot.py``, ``bench/zeroshot.py`` and the SKADA-free parts of
``bench/skada_compare.py``, after ``test_bench_other_mutation``, ``test_bench_plans_mutation``,
``test_bench_tables_mutation``, ``test_bench_fewshot_zeroshot_second_mutation`` and
``test_bench_fewshot_zeroshot_third_mutation``. Covered: where ``fewshot_suite`` draws its accuracy-vs-k plots and
``tsne_figure`` its figure (``bench_dir/img``); the t-SNE cache shared by runs with other ``workers`` or ``repeats``;
the t-SNE embeddings taken in eval mode; a zero-shot job's row seeds, wall seconds, the embed_text row's text
encoder, a CLIP job trained on its captioned domain (caption ids, not digit labels) and the retrieval rows'
accuracy (R@1); ``zeroshot_suite``'s note that the hashing encoder stands in; ``zeroshot_tables``' retrieval table
(a table of its own, after a blank line, its rows in order); and, with a stand-in ``skada.deep`` module (the real
one needs skorch, not installed here), ``skada_estimator``'s classes, layer, epochs, optimiser, split, device,
``num_features``, ``T=2.5`` and the sigmoid domain classifier's width, ``sigmoid_domain_classifier``,
``dead_domain_classifier``, ``available`` with ``skada`` but no ``skada.deep``, ``SkadaModule``'s optional
``sample_weight`` and what ``run_skada`` hands SKADA (a seeded torch, a copy of the network in training mode,
channels-last only when asked, the source images first). No benchmark runs: the heavy calls are monkeypatched
and the data are ``helpers.toy_domain`` and ``tiny_net``.

Judged equivalent, so not tested: ``_subsample``'s seed 0 -> 1 (another random 1000 test images: a different
sample, not a wrong one); ``_cached_panels`` also refusing an empty dict (an empty cache is never written: the
panels always hold the source network's). Left surviving: ``tsne_figure``'s ``pretrain=keyed_fields(...)`` dropped
(the key then holds ``to_dict``'s pretrain fields, which differ only in fields added later at their defaults: only
a cache written by an older version tells them apart, and no test can build one without pinning a hash)."""

import sys
import types
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_net, toy_domain
from test_bench_fewshot_zeroshot_second_mutation import _fake_suite, _fake_tsne, _fake_zeroshot_suite
from test_bench_fewshot_zeroshot_third_mutation import _Model

# --- bench/fewshot.py -------------------------------------------------------------------------------------------


def test_fewshot_suite_draws_its_accuracy_plots_in_the_img_folder(monkeypatch, tmp_path):
    from transferkit import plots
    from transferkit.bench.fewshot import FewshotPlan, fewshot_suite
    _fake_suite(monkeypatch)
    paths = []
    monkeypatch.setattr(plots, "accuracy_vs_k_plot", lambda rows, path, title="": paths.append(path))
    fewshot_suite(FewshotPlan(ks=[2], repeats=1, parts=["main"]), tmp_path, lambda *a: None)
    # kills: plot_dir = bench_dir / "img" -> bench_dir (the plots beside the tables, where the report does not look)
    assert paths == [tmp_path / "img" / "accuracy_vs_k_main.png"]


def test_tsne_figure_is_drawn_in_the_img_folder(monkeypatch, tmp_path):
    from transferkit import plots
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    _fake_tsne(monkeypatch)
    paths = []
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: paths.append(path) or path)
    out = tsne_figure(fewshot_config("tsne", "syndigits", "mnist", 2, True, 1, ["lext"]), tmp_path, lambda *a: None,
                      n=8)
    # kills: bench_dir / "img" / "tsne.png" -> bench_dir / "tsne.png"
    assert paths == [tmp_path / "img" / "tsne.png"] and out == paths[0]


def test_tsne_cache_is_shared_by_runs_with_other_workers_or_repeats(monkeypatch, tmp_path):
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    seen = _fake_tsne(monkeypatch)[0]
    for workers, repeats in ((1, 1), (4, 1), (1, 3)):
        cfg = fewshot_config("tsne", "syndigits", "mnist", 2, True, repeats, ["lext"])
        cfg.workers = workers
        tsne_figure(cfg, tmp_path, lambda *a: None, n=8)
    # kills: "workers" kept in the cache key; "repeats" kept in it (the embeddings depend on neither: one subset, seed)
    assert seen["trained"] == ["lext"] and len(list((tmp_path / "tsne").glob("embeddings-*.pt"))) == 1


def test_tsne_embeds_with_the_networks_in_eval_mode(monkeypatch, tmp_path):
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    _, _, _, pretrained, trained = _fake_tsne(monkeypatch)
    pretrained.train(), trained.train()
    tsne_figure(fewshot_config("tsne", "syndigits", "mnist", 2, True, 1, ["lext"]), tmp_path, lambda *a: None, n=8)
    # kills: net.eval() dropped from the embedding (dropout on, batch norm on the batch's statistics)
    assert not pretrained.training and not trained.training


# --- bench/zeroshot.py ------------------------------------------------------------------------------------------


def _job(monkeypatch, mname, seed):
    """One zero-shot job with a recorded engine, a fixed-score model and a fixed retrieval report."""
    from transferkit.bench import zeroshot
    fits = []

    class Engine:
        def __init__(self, cfg, seed):
            pass

        def fit(self, method, source, val):
            fits.append(source)
            return SimpleNamespace(steps=5, best_val_accuracy=0.75)
    monkeypatch.setattr(zeroshot, "Engine", Engine)
    monkeypatch.setattr(zeroshot, "retrieval_report", lambda *a, **kw: {
        "i2t_R@1": 0.1, "i2t_R@5": 0.5, "i2t_R@10": 0.9, "t2i_R@1": 0.2, "t2i_R@5": 0.6, "t2i_R@10": 0.8})
    test = toy_domain(20, classes=10, name="mnist/test")
    data = {"mnist": {"test": (test, [f"digit {c}" for c in test.labels.tolist()])}}
    train = toy_domain(14, classes=7, name="mnist/train")
    caps = [f"a {c} drawn" for c in train.labels.tolist()]
    rows = zeroshot._zeroshot_rows(mname, lambda net, cap: _Model(), "mnist", seed, (train, caps, train, test), data,
                                   SimpleNamespace(), "some-encoder", lambda *a: None)
    return rows, fits, train


def test_a_zeroshot_jobs_rows_carry_its_seed_and_wall_seconds(monkeypatch):
    rows, fits, train = _job(monkeypatch, "attr_zones", seed=4)
    # kills: "seed": seed -> 0 (every seed's rows one seed: the tables' seeds column and means wrong);
    # "wall_s" -> 0.0
    assert {r["seed"] for r in rows} == {4} and all(r["wall_s"] > 0 for r in rows)
    assert fits == [train]  # a method that reads no captions trains on the digit labels


def test_an_embed_text_row_names_its_text_encoder(monkeypatch):
    rows, _, _ = _job(monkeypatch, "embed_text", seed=0)
    # kills: text_encoder set on CLIP rows only (embed_text reads the text encoder too)
    assert {r["text_encoder"] for r in rows} == {"some-encoder"}


def test_a_clip_job_trains_on_its_captions_and_its_retrieval_accuracy_is_recall_at_1(monkeypatch):
    rows, fits, train = _job(monkeypatch, "clip_infonce", seed=0)
    (source,) = fits
    # kills: the CLIP model fitted on the digit-labelled images (not the captioned domain: labels = caption ids)
    assert source.class_names == sorted(set(f"a {c} drawn" for c in train.labels.tolist()))
    assert len(source) == len(train)
    # kills: a retrieval row's accuracy taken from R@5 (not R@1)
    assert [r["accuracy"] for r in rows[3:]] == [0.1, 0.2]


def test_zeroshot_suite_notes_the_hashing_encoder_with_the_install_command(monkeypatch, tmp_path):
    from transferkit.bench.zeroshot import ZeroshotPlan, zeroshot_suite
    _fake_zeroshot_suite(monkeypatch, text_extra=False)
    logged = []
    zeroshot_suite(ZeroshotPlan(steps=1, seeds=[0]), tmp_path, logged.append)
    # kills: the note when the text extra is absent dropped (`if text == "hashing"` -> never)
    (note,) = [m for m in logged if "hashing" in str(m)]
    assert "transferkit[text]" in note and "embed_text is skipped" in note
    _fake_zeroshot_suite(monkeypatch, text_extra=True)
    logged.clear()
    zeroshot_suite(ZeroshotPlan(steps=1, seeds=[0]), tmp_path / "with-text", logged.append)
    assert not any("hashing" in str(m) for m in logged)  # and no note when MiniLM runs


def test_zeroshot_retrieval_table_is_its_own_table_with_its_rows_in_order():
    from transferkit.bench.zeroshot import zeroshot_tables
    base = {"source": "mnist[0-6]", "target": "mnist test", "recall_at_1": 0.5, "recall_at_5": 0.6,
            "recall_at_10": 0.7, "accuracy": 0.5}
    rows = [{**base, "method": m, "setting": s} for m in ("clip_triplet", "clip_infonce")
            for s in ("t2i (mnist captions)", "i2t (mnist captions)")]
    lines = zeroshot_tables(rows).splitlines()
    start = lines.index("| method | images | setting | R@1 (%) | R@5 (%) | R@10 (%) |")
    # kills: the blank line before the retrieval table dropped (markdown would read its header as rows of the
    # zero-shot table above)
    assert lines[start - 1] == "" and lines[start - 2].startswith("| clip_triplet | mnist[0-6] |")
    # kills: the retrieval rows in reverse order (by method, then setting)
    assert [tuple(c.strip() for c in line.split("|")[1:4]) for line in lines[start + 2:]] == [
        ("clip_infonce", "mnist test", "i2t (mnist captions)"), ("clip_infonce", "mnist test", "t2i (mnist captions)"),
        ("clip_triplet", "mnist test", "i2t (mnist captions)"), ("clip_triplet", "mnist test", "t2i (mnist captions)")]


# --- bench/skada_compare.py with a stand-in SKADA ---------------------------------------------------------------


class _Estimator:
    def __init__(self, module, layer=None, **kw):
        self.module, self.layer, self.kw = module, layer, kw


class _DomainClassifier(torch.nn.Module):
    """SKADA's DomainClassifier as far as the code reads it: ``classifier`` ending in ``Softmax``."""
    forward_fn = None

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features
        self.classifier = torch.nn.Sequential(torch.nn.Linear(num_features, 1), torch.nn.Softmax(dim=1))

    def forward(self, x):
        return type(self).forward_fn(x)


@pytest.fixture
def fake_skada(monkeypatch):
    """A stand-in ``skada`` / ``skada.deep`` / ``skada.deep.modules``: each estimator class records its arguments."""
    skada, deep, modules = (types.ModuleType(n) for n in ("skada", "skada.deep", "skada.deep.modules"))
    for name in ("SourceOnly", "DANN", "DAN", "DeepCoral", "MCC"):
        setattr(deep, name, type(name, (_Estimator,), {}))
    modules.DomainClassifier = _DomainClassifier
    skada.deep, deep.modules = deep, modules
    for name, mod in (("skada", skada), ("skada.deep", deep), ("skada.deep.modules", modules)):
        monkeypatch.setitem(sys.modules, name, mod)
    return deep


def test_skada_estimators_are_skadas_methods_with_the_shared_settings(fake_skada):
    from transferkit.bench.skada_compare import SKADA_METHODS, skada_estimator
    net = tiny_net(4)  # feature units unit1, unit2; embed_dim 16
    est = {name: skada_estimator(name, net, epochs=3, batch_size=8, lr=0.01) for name in SKADA_METHODS}
    # kills: a method built as another SKADA class (DAN as DeepCoral, ...)
    assert {n: type(e).__name__ for n, e in est.items()} == {
        "SourceOnly": "SourceOnly", "DANN": "DANN", "DANN-sigmoid": "DANN", "DAN": "DAN", "DeepCoral": "DeepCoral",
        "MCC": "MCC", "MCC-T2.5": "MCC"}
    # kills: the feature layer the first unit (not the last, the embedding); max_epochs fixed; SGD for Adam;
    # a validation split taken from the training data; the device left to SKADA's default
    for name, e in est.items():
        assert e.kw["batch_size"] == 8 and e.kw["max_epochs"] == 3 and e.kw["lr"] == 0.01
        assert e.kw["optimizer"] is torch.optim.Adam and e.kw["train_split"] is None and e.kw["device"] == "cpu"
        assert e.module.net is net and (name == "SourceOnly" or e.layer == "net.units.unit2")
        assert name == "SourceOnly" or e.kw["reg"] == 1
    # kills: DANN's num_features dropped; MCC-T2.5 at SKADA's T = 1; plain MCC given T = 2.5
    assert est["DANN"].kw["num_features"] == 16 and est["MCC-T2.5"].kw["T"] == 2.5 and "T" not in est["MCC"].kw
    # kills: the sigmoid domain classifier of another width than the embedding's
    clf = est["DANN-sigmoid"].kw["domain_classifier"]
    assert clf.num_features == 16 and isinstance(clf.classifier[-1], torch.nn.Sigmoid)


def test_sigmoid_domain_classifier_replaces_the_softmax(fake_skada):
    from transferkit.bench.skada_compare import sigmoid_domain_classifier
    d = sigmoid_domain_classifier(5)
    # kills: the Sigmoid appended after the Softmax (the output would still be the constant 1, then sigmoid(1))
    assert len(d.classifier) == 2 and isinstance(d.classifier[-1], torch.nn.Sigmoid) and d.num_features == 5


@pytest.mark.parametrize("forward, dead", [
    (lambda x: torch.ones(len(x), 1) + 0 * x.sum(), True),  # SKADA 0.6: the constant 1, no gradient
    (lambda x: x[:, :1] - x[:, :1].detach() + 1, False),  # the value 1 everywhere but a gradient to the input
    (lambda x: torch.tensor([[1.0]] * 4 + [[0.5]] * 4) + 0 * x.sum(), False),  # not 1 for every sample
])
def test_dead_domain_classifier_needs_a_constant_one_and_no_gradient(fake_skada, monkeypatch, forward, dead):
    from transferkit.bench.skada_compare import dead_domain_classifier
    monkeypatch.setattr(_DomainClassifier, "forward_fn", staticmethod(forward))
    # kills: the gradient test dropped; torch.all(out == 1) -> torch.any
    assert dead_domain_classifier(num_features=3, n=8) is dead


def test_skada_counts_as_absent_when_only_skada_deep_cannot_be_imported(monkeypatch):
    from transferkit.bench import skada_compare
    monkeypatch.setitem(sys.modules, "skada", types.ModuleType("skada"))  # skada there, skada.deep not (no skorch)
    monkeypatch.setitem(sys.modules, "skada.deep", None)
    # kills: `import skada.deep` -> `import skada` (the benchmark would run SKADA's rows and crash in them)
    assert skada_compare.available() is False


def test_skada_module_calls_the_network_with_or_without_sample_weights():
    from transferkit.bench.skada_compare import SkadaModule
    net, x = tiny_net(3), torch.randn(2, 1, 28, 28)
    # kills: sample_weight made a required argument (SKADA calls the module both ways)
    assert torch.equal(SkadaModule(net)(x), net(x)) and torch.equal(SkadaModule(net)(x, sample_weight=None), net(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_run_skada_adapts_a_training_copy_in_the_layout_asked_with_the_source_first(monkeypatch, channels_last):
    import numpy as np

    from transferkit.bench import skada_compare
    from transferkit.domain import Domain
    seen = {}

    class Fake:
        def fit(self, x, y, sample_domain):
            seen["x"] = x

        def predict(self, x, sample_domain):
            return np.zeros(len(x), dtype=np.int64)

    def estimator(name, net, epochs, batch_size, lr):
        seen.update(net=net, training=net.training, weight=net.units["unit1"][0].weight)
        return Fake()
    monkeypatch.setattr(skada_compare, "skada_estimator", estimator)
    dom = lambda value, n: Domain("d", torch.full((n, 3, 28, 28), value), torch.zeros(n, dtype=torch.long),  # noqa: E731
                                  ["a", "b"])
    pretrained = tiny_net(2, channels=3).eval()  # 3 input channels: the layouts differ
    skada_compare.run_skada("DANN", pretrained, dom(0.25, 2), dom(0.75, 3), dom(0.0, 3), epochs=1, batch_size=2,
                            lr=1e-3, seed=0, channels_last=channels_last)
    # kills: the pre-trained network itself handed to SKADA (not a copy); .train() dropped (SKADA would train it
    # in eval mode, batch norm and dropout off)
    assert seen["net"] is not pretrained and not pretrained.training and seen["training"]
    # kills: `if channels_last` inverted (the benchmark's SKADA rows in the layout only dann_timing asks for)
    assert seen["weight"].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert seen["weight"].is_contiguous() != channels_last
    # kills: the target images before the source ones (the labels and domain ids would not match the images)
    assert seen["x"][:, 0, 0, 0].tolist() == [0.25, 0.25, 0.75, 0.75, 0.75]


def test_run_skada_seeds_torch_before_skada_builds_its_layers(monkeypatch):
    import numpy as np

    from transferkit.bench import skada_compare
    from transferkit.domain import Domain
    draws = []

    class Fake:
        def fit(self, x, y, sample_domain):
            draws.append(torch.rand(1).item())  # as SKADA's new layers and its shuffling draw from torch

        def predict(self, x, sample_domain):
            return np.zeros(len(x), dtype=np.int64)
    monkeypatch.setattr(skada_compare, "skada_estimator", lambda *a: Fake())
    dom = Domain("d", torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), ["a", "b"])
    for state in (1, 2):
        torch.manual_seed(state)  # another torch state before each call: the seed must set it
        skada_compare.run_skada("DANN", tiny_net(2), dom, dom, dom, epochs=1, batch_size=2, lr=1e-3, seed=5)
    # kills: torch.manual_seed(seed) dropped from run_skada (SKADA's rows would change from run to run)
    assert draws[0] == draws[1]
