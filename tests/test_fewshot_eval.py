"""Episodic N-way K-shot evaluation with Baseline, Baseline++ and prototype heads."""

import warnings

import pytest
import torch

from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.fewshot_eval import episode_accuracies, evaluate_episodes, mean_ci95, sample_episodes


def test_sample_episodes_shapes_and_no_repeats():
    labels = torch.arange(6).repeat_interleave(torch.tensor([10, 12, 8, 30, 9, 3]))
    sup, qry, classes = sample_episodes(labels, n_way=3, k_shot=2, n_query=5, episodes=50,
                                        generator=torch.Generator().manual_seed(0))
    assert sup.shape == (50, 3, 2) and qry.shape == (50, 3, 5) and classes.shape == (50, 3)
    assert not bool((classes == 5).any())  # class 5 has only 3 < 7 samples
    both = torch.cat([sup, qry], 2)
    assert bool((labels[both] == classes[..., None]).all())
    flat = both.reshape(50, -1)
    assert all(len(set(row.tolist())) == flat.shape[1] for row in flat)


def test_episodes_hand_case():
    # class c sits at 10 * e_c (exactly separable): every head is perfect, interval 0
    labels = torch.arange(5).repeat_interleave(20)
    feats = 10.0 * torch.eye(8)[labels] + 0.01 * torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    out = evaluate_episodes(feats, labels, n_way=5, k_shot=1, n_query=5, episodes=20, steps=50, lr=0.1)
    for head in ("linear", "cosine", "prototype"):
        assert out[head]["mean"] == 1.0 and out[head]["ci95"] == 0.0 and out[head]["episodes"] == 20
    # two classes at the same point: the prototype head cannot tell them apart
    feats2 = feats.clone()
    feats2[labels == 1] = feats2[labels == 0][: (labels == 1).sum()]
    accs = episode_accuracies(feats2, labels, "prototype", n_way=5, k_shot=1, n_query=5, episodes=20)
    assert float(accs.mean()) < 1.0


def test_mean_ci95():
    m, ci = mean_ci95(torch.tensor([0.5, 1.0, 0.5, 1.0]))
    assert m == 0.75 and ci == pytest.approx(1.96 * 0.288675 / 2, rel=1e-4)
    from transferkit.errors import TransferkitError
    for bad in (torch.zeros(0), torch.tensor([0.5, float("nan")])):
        with pytest.raises(TransferkitError, match="one or more finite accuracies"):
            mean_ci95(bad)


@pytest.mark.parametrize("options", [{"k_shot": 0}, {"n_query": 0}, {"n_way": 1}, {"episodes": 0}])
def test_degenerate_episodes_are_errors(options):
    from transferkit.errors import TransferkitError
    feats, labels = torch.randn(60, 4), torch.arange(60) % 6
    with pytest.raises(TransferkitError, match="episodes need"):
        episode_accuracies(feats, labels, **{"n_way": 5, "k_shot": 1, "n_query": 2, **options})


def test_nan_features_are_named():
    from transferkit.errors import TransferkitError
    feats, labels = torch.randn(60, 4), torch.arange(60) % 6
    feats[7, 2] = float("nan")
    with pytest.raises(TransferkitError, match="features contain NaN"):
        evaluate_episodes(feats, labels, episodes=2)
    with pytest.raises(TransferkitError, match="needs heads: a head name or a non-empty list"):
        evaluate_episodes(torch.randn(60, 4), labels, heads=[], episodes=2)  # returned {} before


def test_multi_shot_prototypes_match_a_reference_and_the_linear_head_separates():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(20)
    feats = torch.randn(100, 8, generator=g) + 0.7 * torch.eye(8)[labels]
    sup, qry, _ = sample_episodes(labels, 5, 3, 4, 30, torch.Generator().manual_seed(1))
    d = torch.cdist(feats[qry].reshape(30, 20, 8), feats[sup].mean(2))  # every shot in the prototype
    ref = (d.argmin(-1) == torch.arange(5).repeat_interleave(4)).double().mean(1)
    got = episode_accuracies(feats, labels, "prototype", n_way=5, k_shot=3, n_query=4, episodes=30, seed=1)
    assert torch.allclose(got, ref) and 0.2 < float(ref.mean()) < 1.0
    sep = 10.0 * torch.eye(8)[labels] + 0.01 * torch.randn(100, 8, generator=g)
    out = evaluate_episodes(sep, labels, heads="linear", k_shot=3, n_query=5, episodes=20, steps=50, lr=0.1)
    assert out["linear"]["mean"] == 1.0


def test_cosine_episode_logits_are_scaled_cosines():
    from transferkit.fewshot_eval import _head_logits
    w = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])  # classes along e1 and e2, bias column last
    x = torch.tensor([[[3.0, 4.0]]])
    assert torch.allclose(_head_logits("cosine", w, x, 10.0), torch.tensor([[[6.0, 8.0]]]))


def test_fewshot_tsne_cache_is_keyed_by_what_the_embeddings_depend_on(tmp_path, one_thread):
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    from transferkit.engine import TrainConfig
    logged = []
    for k in (1, 2):
        cfg = fewshot_config("tsne", "digits", "digits+noise", k, True, 1, ["finetune"])
        cfg.pretrain, cfg.train = TrainConfig(steps=2, eval_every=2), TrainConfig(steps=2, eval_every=2)
        tsne_figure(cfg, tmp_path, logged.append, n=40)
    assert len(list((tmp_path / "tsne").glob("embeddings-*.pt"))) == 2  # k=2 does not read k=1's embeddings
    tsne_figure(cfg, tmp_path, logged.append, n=40)
    assert sum("t-SNE: training" in str(m) for m in logged) == 2  # the same config reads its cache


@pytest.mark.parametrize("options, message", [
    ({"n_way": 2.5}, r"ints n_way .* got n_way=2.5"),
    ({"k_shot": True}, r"ints n_way .* got k_shot=True"),
    ({"n_query": 1.0, "episodes": "3"}, r"got n_query=1.0, episodes='3'"),
    ({"head": "linear", "steps": 0}, "needs a whole number of steps >= 1, got 0"),
    ({"head": "cosine", "steps": 2.5}, "needs a whole number of steps >= 1, got 2.5"),
    ({"head": "linear", "lr": -1}, "learning rate lr > 0, got -1"),
    ({"head": "cosine", "lr": float("nan")}, "learning rate lr > 0, got nan"),
    ({"seed": None}, "whole-number seed, got None"),
])
def test_bad_episode_settings_are_named(options, message):
    from transferkit.errors import TransferkitError
    feats, labels = torch.randn(60, 4), torch.arange(60) % 6
    with pytest.raises(TransferkitError, match=message):
        episode_accuracies(feats, labels, **{"n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 2, **options})


def test_labels_must_be_one_dimensional_whole_class_ids():
    from transferkit.errors import TransferkitError
    feats, labels = torch.randn(60, 4), torch.arange(60) % 6
    for bad in (labels[:, None], labels + 0.5, labels.float().masked_fill(labels == 0, float("inf"))):
        with pytest.raises(TransferkitError, match="1-D tensor of whole class ids"):
            episode_accuracies(feats, bad, n_way=3, k_shot=1, n_query=2, episodes=2)
    with pytest.raises(TransferkitError, match="1-D tensor of whole class ids"):
        sample_episodes(labels[:, None], 3, 1, 2, 2, torch.Generator())
    same = episode_accuracies(feats, labels.float(), n_way=3, k_shot=1, n_query=2, episodes=4)  # whole floats
    assert torch.equal(same, episode_accuracies(feats, labels.tolist(), n_way=3, k_shot=1, n_query=2, episodes=4))
    assert torch.equal(same, episode_accuracies(feats, labels, n_way=3, k_shot=1, n_query=2, episodes=4, steps=0))


def test_heads_are_a_name_or_a_list_of_known_names():
    from transferkit.errors import TransferkitError, UnknownNameError
    feats, labels = torch.randn(60, 4), torch.arange(60) % 6
    for bad in (None, 3, [None]):
        with pytest.raises(TransferkitError, match="needs heads: a head name or a non-empty list of them"):
            evaluate_episodes(feats, labels, heads=bad, episodes=2, n_query=2)
    with pytest.raises(UnknownNameError, match="unknown few-shot head 'knn'"):
        evaluate_episodes(feats, labels, heads=["prototype", "knn"], episodes=2, n_query=2)
    assert list(evaluate_episodes(feats, labels, heads=("prototype",), episodes=2, n_query=2)) == ["prototype"]


def test_mean_ci95_takes_a_list():
    from transferkit.errors import TransferkitError
    assert mean_ci95([0.5, 1.0]) == mean_ci95(torch.tensor([0.5, 1.0]))
    assert mean_ci95([1, 0])[0] == 0.5
    with pytest.raises(TransferkitError, match="1-D sequence of one or more finite accuracies"):
        mean_ci95(torch.ones(2, 2))


def test_trained_episode_heads_run_under_inference_mode():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    y = torch.arange(100) % 5
    x = torch.randn(100, 8, generator=g) + 3 * F.one_hot(y, 8).float()
    plain = evaluate_episodes(x, y, ["linear", "cosine"], episodes=5, steps=3)
    with torch.inference_mode():  # enable_grad alone does not leave it: autograd error before
        assert evaluate_episodes(x, y, ["linear", "cosine"], episodes=5, steps=3) == plain


def test_a_torn_tsne_cache_of_the_fewshot_benchmark_is_computed_again(tmp_path):
    from transferkit.bench.fewshot import _cached_panels
    cache, lines = tmp_path / "embeddings-x.pt", []
    assert _cached_panels(cache, lines.append) is None  # none yet
    torch.save({"source network": (torch.zeros(2, 3), torch.ones(2, 3))}, cache)
    assert torch.equal(_cached_panels(cache, lines.append)["source network"][1], torch.ones(2, 3))
    cache.write_bytes(cache.read_bytes()[:50])  # torn by a full disk
    assert _cached_panels(cache, lines.append) is None and "embeddings-x.pt is unreadable" in lines[-1]


def test_episode_labels_may_be_names():
    feats, labels = torch.randn(60, 8, generator=torch.Generator().manual_seed(0)), torch.arange(60) % 6
    kw = dict(heads="prototype", episodes=5, n_way=3, k_shot=1, n_query=2)
    names = [f"class{i}" for i in labels.tolist()]  # sorted as class0 ... class5: the same ids
    assert evaluate_episodes(feats, names, **kw) == evaluate_episodes(feats, labels, **kw)


def test_extract_features_names_images_of_another_shape():
    from helpers import tiny_net

    from transferkit.errors import TransferkitError
    from transferkit.fewshot_eval import extract_features
    with pytest.raises(TransferkitError, match=r"extract_features: images of shape \(3, 28, 28\), the network takes "
                                               r"\(1, 28, 28\)"):
        extract_features(tiny_net(3), torch.rand(2, 3, 28, 28))


def test_one_episode_reports_no_interval():
    import math
    result = evaluate_episodes(torch.randn(30, 4), torch.arange(30) % 3, heads="prototype", n_way=3, k_shot=1,
                               n_query=2, episodes=1)["prototype"]
    assert math.isnan(result["ci95"]) and "one episode: no interval" in result["note"] and result["episodes"] == 1


def test_episodes_name_the_classes_too_small_to_be_drawn_and_count_those_they_draw_from():
    labels = torch.tensor([0] * 8 + [1] * 5 + [2] * 4 + [3] * 8 + [4] * 2 + [5] * 6)
    with pytest.warns(Warning, match=r"at least k_shot \+ n_query = 4 samples, so class\(es\) star \(2\) .* never "
                                     r"drawn: the accuracy is over the other 5 classes"):
        out = evaluate_episodes(torch.randn(33, 8), labels, heads="prototype", n_way=3, k_shot=1, n_query=3,
                                episodes=10, class_names=["a", "b", "c", "d", "star", "f"])
    assert out["prototype"]["classes"] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evaluate_episodes(torch.randn(33, 8), labels, heads="prototype", n_way=3, k_shot=1, n_query=1,
                                 episodes=10)["prototype"]["classes"] == 6  # every class drawn: no warning
    with pytest.raises(TransferkitError, match=r"episodes need ints n_way >= 2.*got n_way=2.0"):
        evaluate_episodes(torch.randn(33, 8), labels, heads="prototype", n_way=2.0, episodes=2, n_query=1)


def test_k_given_to_a_method_says_it_is_a_run_setting_and_how_to_draw_k_labels_in_python():
    from transferkit.api import Transfer
    with pytest.raises(TransferkitError, match=r"'finetune': k is no method option but a setting of a run's config .* "
                                               r"sample_k_shot\(domain, k, seed\)"):
        Transfer("finetune", k=5)


def test_transferkit_episodes_scores_each_jobs_embedding_on_the_same_target_episodes(tmp_path, capsys):
    import json

    from transferkit.cli import main
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import load_model, run_experiment
    from transferkit.fewshot_eval import extract_features
    from transferkit.rundata import prepare_domains

    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["finetune", "linear_probe"], k=2, repeats=2, select_on="none",
                           out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=10, eval_every=10), train=TrainConfig(steps=4, eval_every=4))
    run = tmp_path / "fs"
    run_experiment(cfg, run_dir=run, log=lambda *a: None)
    assert main(["episodes", str(run), "--episodes", "20", "--n-query", "5", "--k-shot", "1", "3",
                 "--heads", "prototype,linear"]) == 0
    out = capsys.readouterr().out
    assert "Classes: source classes 0-4; target classes 5-9." in out
    assert "| finetune/prototype | digits | digits | 5-way 1-shot (k=2) |" in out and "| 2 |" in out
    assert "Episodes: N-way K-shot on the target test split (20 episodes per row" in out
    rows = json.loads((run / "episodes.json").read_text())["rows"]
    assert len([r for r in rows if r["method"].startswith("finetune/")]) == 2 * 2 * 2  # seeds x heads x shots
    assert {r["seed"] for r in rows if r["method"].startswith("linear_probe/")} == {0}  # one embedding (the head
    # is what it trains): counted once
    assert {r["n_labeled"] for r in rows} == {10}  # the job's: what ± means under the table (a zero-shot run's jobs
    assert "Mean ± standard error over n seeds (label subsets)" in out  # read none, and said label subsets)
    test = prepare_domains(cfg).target.test
    for seed in (0, 1):  # by hand: the job's model, its embedding, the same episodes
        feats = extract_features(load_model(run, "finetune", seed).net, test.images)
        want = evaluate_episodes(feats, test.labels, "prototype", n_way=5, k_shot=3, n_query=5, episodes=20)
        row = next(r for r in rows if r["seed"] == seed and r["method"] == "finetune/prototype"
                   and r["setting"] == "5-way 3-shot (k=2)")
        assert row["accuracy"] == want["prototype"]["mean"] and row["ci95"] == want["prototype"]["ci95"]
        assert row["classes"] == 5 and row["episodes"] == 20
    assert main(["summary", str(run / "episodes.json")]) == 0
    out = capsys.readouterr().out
    assert "| finetune/linear | digits | digits | 5-way 3-shot (k=2) |" in out
    assert "Episodes: N-way K-shot on the target test split (20 episodes per row" in out  # the file's own note
    assert main(["summary", str(run), str(run / "episodes.json")]) == 0
    assert "are N-way K-shot episode accuracies (transferkit episodes), those of" in capsys.readouterr().out
    assert main(["episodes", str(run), "--k-shot", "1", "40"]) == 2  # refused before any job is scored
    err = capsys.readouterr().err
    assert "5-way 40-shot with 15 queries needs 5 classes of at least 55 images in the target test split" in err
    assert "holds 5 (46), 6 (45), 7 (45), 8 (44), 9 (45) (images per class): --n-query 4 fits it" in err
    assert main(["episodes", str(run), "--methods", "dann"]) == 2
    assert "has no finished job of ['dann']; its methods: ['finetune', 'linear_probe']" in capsys.readouterr().err
    for flags, message in ((["--n-way", "1"], "--n-way must be >= 2, got 1"),  # the flags, not n_way=1
                           (["--k-shot", "1", "0"], "--k-shot must be >= 1, got 1 0"),
                           (["--n-query", "0"], "--n-query must be >= 1, got 0"),
                           (["--episodes", "0"], "--episodes must be >= 1, got 0")):
        assert main(["episodes", str(run), *flags]) == 2
        assert f"transferkit: error: {message}\n" in capsys.readouterr().err


def test_an_episode_accuracy_is_its_exact_fraction():
    labels = torch.arange(3).repeat_interleave(6)
    accs = episode_accuracies(torch.randn(18, 4), labels, "prototype", n_way=3, k_shot=1, n_query=5, episodes=4)
    assert accs.dtype == torch.float64
    assert all(float(a) * 15 == pytest.approx(round(float(a) * 15), abs=1e-12) for a in accs)  # k / 15 exactly


def test_episodes_of_a_grouped_target_draw_each_image_from_a_video_of_its_own():
    """On videos a query drawn as an image may have a near-copy (a frame of the same video) among
    the support images (a trial): K + Q groups per class, one frame of each."""
    from transferkit.fewshot_eval import episodes_note
    row = {"episodes": 20, "classes": 5, "setting": "5-way 1-shot (k=2)"}
    assert "grouped" not in episodes_note([row])
    assert "the target is grouped (videos): each support and query image of an episode is one frame of a video of " \
           "its own" in episodes_note([{**row, "grouped_test": True}])
    sizes = torch.tensor([3, 1, 4, 2] * 12)  # 48 videos of 1-4 frames, 4 classes of 12 videos
    group_label = torch.arange(4).repeat_interleave(12)
    groups = torch.arange(48).repeat_interleave(sizes) * 7  # ids need not be 0..G-1
    labels = group_label.repeat_interleave(sizes)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # frames in any order
    groups, labels = groups[perm], labels[perm]
    sup, qry, classes = sample_episodes(labels, 3, 2, 9, 200, torch.Generator().manual_seed(1), groups=groups)
    assert sup.shape == (200, 3, 2) and qry.shape == (200, 3, 9)
    both = torch.cat([sup, qry], 2)
    assert bool((labels[both] == classes[..., None]).all())
    drawn = groups[both].reshape(200, -1)
    assert all(len(set(row.tolist())) == 33 for row in drawn)  # 33 images, 33 videos: no two share one
    assert len(set(both.flatten().tolist())) > 48  # frames of a video vary, not only its first one
    with pytest.raises(TransferkitError, match="needs 3 classes with >= 13 groups; only 0 have them"):
        sample_episodes(labels, 3, 2, 11, 5, torch.Generator(), groups=groups)  # 108 frames, but 12 videos a class
    feats = torch.eye(4)[labels] + 0.01 * torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(2))
    out = evaluate_episodes(feats, labels, ["prototype"], n_way=3, k_shot=1, n_query=10, episodes=5, groups=groups)
    assert out["prototype"]["mean"] == 1.0 and out["prototype"]["classes"] == 4
    with pytest.warns(TransferkitWarning, match=r"k_shot \+ n_query = 11 groups, so class\(es\) 3 \(6\) \(groups\)"):
        keep = ~((labels == 3) & (groups % 2 == 1))  # class 3 keeps 6 of its 12 videos (all frames of 6)
        out = evaluate_episodes(feats[keep], labels[keep], ["prototype"], n_way=3, k_shot=1, n_query=10, episodes=5,
                                groups=groups[keep])
    assert out["prototype"]["classes"] == 3
    from transferkit.domain import Domain
    from transferkit.fewshot_eval import _check_episodes_fit
    test = Domain("videos/test", torch.zeros(len(labels), 1, 8, 8), labels, ["a", "b", "c", "d"], groups)
    _check_episodes_fit(test, 3, [1, 2], 10)  # 12 videos a class: 2 + 10 fit
    with pytest.raises(TransferkitError, match=r"at least 14 videos in the target test split 'videos/test', which "
                                               r"holds a \(12\), b \(12\), c \(12\), d \(12\) \(videos per class\): "
                                               r"--n-query 9 fits it"):
        _check_episodes_fit(test, 3, [1, 3], 11)  # 27 frames a class, but 12 videos


def test_every_head_reads_one_draw_of_episodes_per_labels_sizes_and_seed(monkeypatch):
    import transferkit.fewshot_eval as fe
    torch.manual_seed(0)
    labels = torch.arange(6).repeat_interleave(20)
    features = torch.randn(len(labels), 8) + labels[:, None].float()
    calls = []
    real = fe.sample_episodes
    monkeypatch.setattr(fe, "sample_episodes", lambda *a, **k: calls.append(a[1:5]) or real(*a, **k))
    monkeypatch.setattr(fe, "_DRAWN", {})
    first = evaluate_episodes(features, labels, n_way=3, k_shot=2, n_query=4, episodes=30, seed=5, steps=5)
    assert len(calls) == 1  # three heads, one draw
    again = evaluate_episodes(features * 2, labels.clone(), n_way=3, k_shot=2, n_query=4, episodes=30, seed=5, steps=5)
    assert len(calls) == 1  # another model's features on the same labels: the same episodes
    evaluate_episodes(features, labels, heads="prototype", n_way=3, k_shot=2, n_query=4, episodes=30, seed=6)
    evaluate_episodes(features, labels, heads="prototype", n_way=3, k_shot=3, n_query=4, episodes=30, seed=5)
    assert len(calls) == 3  # another seed, another k: drawn anew
    monkeypatch.setattr(fe, "_DRAWN", {})  # drawn afresh, the same episodes: the same accuracies
    assert evaluate_episodes(features, labels, n_way=3, k_shot=2, n_query=4, episodes=30, seed=5, steps=5) == first
    assert again["prototype"] == first["prototype"]  # prototypes are scale-free in their ranking: doubled features
