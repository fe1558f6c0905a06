"""Evaluation honesty: no test image reaches training or selection, and the reported statistics
match their definitions and independent references (scipy, scikit-learn, hand computations)."""

import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferkit.config import ExperimentConfig
from transferkit.data import load_domain
from transferkit.engine import TrainConfig
from transferkit.evaluate import grouped_accuracy, mean_se
from transferkit.experiment import run_experiment
from transferkit.fewshot_eval import mean_ci95, sample_episodes
from transferkit.grouped import sample_k_groups
from transferkit.retrieval import average_precision_at_k
from transferkit.rundata import label_subset, prepare_domains, shared_images
from transferkit.splits import sample_k_shot, split_domain, split_parts, subsample_per_class

TINY_PRE = TrainConfig(steps=20, eval_every=10)
TINY = TrainConfig(steps=10, eval_every=5, batch_size=16)


# ---- leakage --------------------------------------------------------------------------------

def _saved_networks(run_dir) -> dict:
    return {p.name: load_file(str(p)) for p in sorted((run_dir / "models").glob("*.safetensors"))}


def test_changing_the_test_splits_pixels_changes_no_trained_weight_nor_selection(tmp_path, monkeypatch):
    """Two runs whose targets differ only in the pixels of the test split: every trained network,
    validation accuracy, step count and flex pick is the same bit for bit (the test images reach
    neither training, early stopping, flex's unit choice nor the unlabelled images dann adapts on)."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    x, y = rng.random((90, 8, 8)).astype("float32"), np.repeat(np.arange(3), 30)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    test = (split_parts(load_domain(f"npz:{tmp_path / 'a.npz'}")) == 2).numpy()
    assert 0 < test.sum() < len(x)
    x2 = x.copy()
    x2[test] = rng.random((int(test.sum()), 8, 8)).astype("float32")
    np.savez(tmp_path / "b.npz", x=x2, y=y)
    out = {}
    for name in ("a", "b"):
        cfg = ExperimentConfig(name=name, source="digits", source_classes="0-2", target=f"npz:{tmp_path / name}.npz",
                               k=3, repeats=1, methods=["finetune", "dann", "flex"], pretrain=TINY_PRE, train=TINY,
                               out_dir=str(tmp_path / "runs"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_dir, rows = run_experiment(cfg, log=lambda *a: None)
        out[name] = (_saved_networks(run_dir), rows)
    (nets_a, rows_a), (nets_b, rows_b) = out["a"], out["b"]
    assert nets_a.keys() == nets_b.keys() and len(nets_a) == 3
    for job in nets_a:
        assert nets_a[job].keys() == nets_b[job].keys()
        assert all(torch.equal(v, nets_b[job][k]) for k, v in nets_a[job].items()), job
    for a, b in zip(sorted(rows_a, key=lambda r: r["method"]), sorted(rows_b, key=lambda r: r["method"])):
        assert (a["method"], a["val_accuracy"], a["steps"], a.get("picked")) == \
            (b["method"], b["val_accuracy"], b["steps"], b.get("picked"))
    assert [r["confusion"] for r in rows_a] != [r["confusion"] for r in rows_b]  # the test pixels were read


def test_a_target_image_copied_into_its_test_split_is_warned_of(tmp_path):
    """A user's target with every image saved twice (and a source holding the same images): the
    split is by file, so copies land on both sides; the run warns, counting them."""
    rng = np.random.default_rng(0)
    x, y = rng.random((30, 8, 8)).astype("float32"), np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "twice.npz", x=np.concatenate([x, x]), y=np.concatenate([y, y]))
    np.savez(tmp_path / "src.npz", x=x, y=y)
    with pytest.warns(UserWarning, match=r"of its 15 test images, 10 are target train images, 3 are target val "
                                         r"images, 10 are source train images, 1 is a source val image \(pixel"):
        data = prepare_domains(ExperimentConfig(source=f"npz:{tmp_path / 'src.npz'}",
                                                target=f"npz:{tmp_path / 'twice.npz'}", k=1))
    assert shared_images(data.target.train, data.target.test) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distinct images: no warning of copies
        np.savez(tmp_path / "once.npz", x=x, y=y)
        prepare_domains(ExperimentConfig(source="digits", source_classes="0-2", target=f"npz:{tmp_path / 'once.npz'}",
                                         k=1))


@pytest.mark.parametrize("source, target", [("mnist", "mnistm"), ("mnist", "mnist+rotation"),
                                            ("digits", "digits+noise@grouped5"), ("mnist", "mnist")])
def test_a_source_and_target_cut_from_one_pool_share_its_split(source, target):
    """The source's train / val images and the target's test images are disjoint also when both are
    drawn from one pool (mnistm is mnist's digits; digits@grouped5 holds 5 views of each UCI digit):
    by the base image's index, not only pixel for pixel."""
    data = prepare_domains(ExperimentConfig(source=source, target=target, k=1))
    src, tgt = load_domain(source), load_domain(target)
    parts_s, parts_t = split_parts(src), split_parts(tgt)
    base_t = tgt.groups if tgt.groups is not None else torch.arange(len(tgt))  # the base image of each sample
    test_bases = set(base_t[parts_t == 2].tolist())
    assert test_bases and not test_bases & set(torch.nonzero(parts_s < 2).flatten().tolist())
    assert shared_images(data.source.train, data.target.test) == 0


def test_label_subsets_come_from_the_train_split_only():
    """k-shot, ratio and grouped label subsets (and the unlabelled rest) hold train images only."""
    split = split_domain(load_domain("digits"))
    for labeled, rest in (sample_k_shot(split.train, 5, seed=3), (subsample_per_class(split.train, 7, 1), None)):
        for part in (labeled, rest):
            if part is not None:
                assert shared_images(split.train, part) == len(part)
                assert shared_images(part, split.test) == shared_images(part, split.val) == 0
    g = split_domain(load_domain("digits@grouped3"))
    labeled, rest = sample_k_groups(g.train, 2, seed=1)
    assert set(labeled.groups.tolist()) <= set(g.train.groups.tolist())
    assert not set(labeled.groups.tolist()) & set(rest.groups.tolist())
    assert not set(g.train.groups.tolist()) & set(g.test.groups.tolist())
    cfg = ExperimentConfig(source="mnist", target="digits", k=4, source_classes="0-4", target_classes="5-9")
    data = prepare_domains(cfg)
    labeled, unlabeled = label_subset(cfg, data.target, seed=2)
    assert shared_images(labeled, data.target.test) == shared_images(unlabeled, data.target.test) == 0


def test_episode_support_and_query_are_disjoint_and_of_the_drawn_classes():
    labels = torch.arange(6).repeat_interleave(torch.tensor([20, 20, 20, 20, 20, 4]))  # class 5 too small
    sup, qry, classes = sample_episodes(labels, n_way=4, k_shot=3, n_query=5, episodes=50,
                                        generator=torch.Generator().manual_seed(0))
    both = torch.cat([sup, qry], 2).flatten(1)
    assert all(len(set(e.tolist())) == e.numel() for e in both)  # no image twice in an episode
    assert torch.equal(labels[sup], classes[..., None].expand_as(sup))
    assert torch.equal(labels[qry], classes[..., None].expand_as(qry))
    assert not (classes == 5).any()


# ---- statistics ---------------------------------------------------------------------------

def test_mean_se_is_scipys_standard_error_with_n_minus_one():
    from scipy import stats

    values = [0.71, 0.74, 0.69, 0.80, 0.77]
    m, se = mean_se(values)
    assert m == pytest.approx(np.mean(values), abs=1e-15)
    assert se == pytest.approx(stats.sem(values, ddof=1), rel=1e-12)
    assert se == pytest.approx(np.std(values, ddof=1) / math.sqrt(5), rel=1e-12)


def test_episode_interval_is_196_standard_errors_with_n_minus_one():
    from scipy import stats

    accs = torch.tensor([0.6, 0.8, 0.4, 1.0, 0.6, 0.7], dtype=torch.float64)
    m, ci = mean_ci95(accs)
    assert m == pytest.approx(float(accs.mean()))
    assert ci == pytest.approx(1.96 * stats.sem(accs.numpy(), ddof=1), rel=1e-12)


def test_ap_at_k_over_the_whole_gallery_is_sklearns_average_precision():
    """With k = G (every gallery item ranked) and no equal distances, AP@k is scikit-learn's
    average_precision_score of the query's relevance against its negative distances."""
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randn(40, 5, generator=g, dtype=torch.float64)
    ql, gl = torch.randint(3, (12,), generator=g), torch.randint(3, (40,), generator=g)
    ap = average_precision_at_k(q, ql, gal, gl, k=40, exclude_self=False)
    dist = torch.cdist(q, gal)
    want = [average_precision_score((gl == ql[i]).numpy(), -dist[i].numpy()) for i in range(12)]
    assert ap.numpy() == pytest.approx(np.array(want), rel=1e-6)  # AP is summed in float32


def test_ap_at_k_truncated_is_the_hand_computation_with_min_k_r():
    """AP@k = 1/min(k, R) * sum_{i<=k} P@i rel_i (retrieval.py's docstring, seed 002 §5.3), by hand."""
    q = torch.tensor([[0.0]])
    gallery = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])  # ranked in this order
    labels = torch.tensor([0, 1, 0, 1, 1, 0])  # relevant at ranks 1, 3, 6: R = 3
    got = average_precision_at_k(q, torch.tensor([0]), gallery, labels, k=4, exclude_self=False)
    assert float(got) == pytest.approx((1 / 1 + 2 / 3) / min(4, 3))
    got = average_precision_at_k(q, torch.tensor([0]), gallery, labels, k=2, exclude_self=False)
    assert float(got) == pytest.approx((1 / 1) / min(2, 3))


def test_grouped_accuracy_is_the_argmax_of_the_mean_softmax_by_hand():
    logits = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 5.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    groups = torch.tensor([7, 7, 7, 9, 9])
    # group 7: mean softmax of class 0 is (0.953 + 0.269 + 0.269) / 3 = 0.497 < 0.5, so class 1 (wrong), though
    # its mean logits (1.0 vs 0.67) and its majority vote would say class 0; group 9: class 1 (right)
    probs = torch.softmax(logits, 1)
    want = [int(probs[groups == g].mean(0).argmax()) == int(labels[groups == g][0]) for g in (7, 9)]
    assert want == [False, True]
    assert grouped_accuracy(logits, labels, groups) == 0.5


def test_bench_flex_targets_of_the_source_pool_come_from_its_other_half():
    """bench flex pre-trains on half of mnist; a target cut from mnist (here plain, so that pixels
    compare) holds none of that half's images in any of its splits."""
    from transferkit.bench.flex import mnist_halves, target_splits

    src_half, tgt_half = mnist_halves("mnist")
    assert not set(src_half.tolist()) & set(tgt_half.tolist())
    mnist = load_domain("mnist", size=28, channels=3)
    source = mnist.subset(src_half)
    split = target_splits("mnist", tgt_half)
    assert all(shared_images(source, part) == 0 for part in split)
    assert shared_images(mnist.subset(tgt_half), split.test) == len(split.test) > 0
