"""Known values and named errors of the evaluation modules (evaluate, splits, grouped, retrieval,
fewshot_eval) that a mutation-testing pass found unpinned: each test fails when the code it
names is changed in the way its comment says."""

import math

import pytest
import torch

from transferkit.domain import Domain
from transferkit.errors import TransferkitError


def _domain(labels, groups=None, names=None, seed=0):
    labels = torch.as_tensor(labels)
    names = names or [f"c{i}" for i in range(int(labels.max()) + 1)]
    images = torch.rand(len(labels), 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return Domain("toy", images, labels, names, groups)


def _rank_in_class(labels, perm):
    """The rank of every item among those of its class, in ``perm`` order (a plain loop)."""
    seen, ranks = {}, torch.empty(len(labels), dtype=torch.long)
    for i in perm.tolist():
        c = int(labels[i])
        ranks[i] = seen.get(c, 0)
        seen[c] = int(ranks[i]) + 1
    return ranks


# ---- evaluate --------------------------------------------------------------------------------
def test_per_class_accuracy_keeps_six_decimals():
    from transferkit.evaluate import classification_report
    rep = classification_report(torch.eye(2)[[0, 1, 1, 1]], torch.tensor([0, 0, 0, 1]))
    assert rep["per_class_accuracy"] == [0.333333, 1.0] and rep["accuracy"] == 0.5  # not round(1/3, 2)


def test_group_accuracy_counts_each_group_once_whatever_its_size():
    from transferkit.evaluate import classification_report, grouped_accuracy
    logits = torch.tensor([[5.0, 0.0]] * 4)  # every frame predicts class 0
    labels = torch.tensor([0, 0, 0, 1])
    groups = torch.tensor([0, 0, 0, 1])  # a right group of 3 frames, a wrong group of 1
    assert grouped_accuracy(logits, labels, groups) == 0.5  # 1 of 2 groups, not 3 of 4 frames
    assert classification_report(logits, labels, groups=groups)["group_accuracy"] == 0.5


def test_classification_report_names_a_length_mismatch():
    from transferkit.evaluate import classification_report
    with pytest.raises(TransferkitError, match="4 predictions for 5 labels"):
        classification_report(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


# ---- splits ----------------------------------------------------------------------------------
def test_class_ranks_follow_the_seeded_permutation_within_each_class():
    from transferkit.splits import class_ranks
    labels = torch.arange(1000) % 7  # the module's documented recipe: randperm, then a *stable* sort by class
    ranks = class_ranks(labels, torch.Generator().manual_seed(5))
    assert torch.equal(ranks, _rank_in_class(labels, torch.randperm(1000, generator=torch.Generator().manual_seed(5))))


def test_grouped_subsampling_keeps_groups_that_fit_exactly():
    from transferkit.splits import subsample_per_class
    d = _domain(torch.arange(24) // 12, groups=torch.arange(24) // 3)  # 4 groups of 3 frames per class
    assert subsample_per_class(d, 6, seed=0).class_counts().tolist() == [6, 6]  # two whole groups fill n = 6


def test_subsample_refuses_zero_per_class():
    from transferkit.splits import subsample_per_class
    with pytest.raises(TransferkitError, match="n must be an integer >= 1"):
        subsample_per_class(_domain(torch.arange(8) % 2), 0, seed=0)


def test_class_ranges_of_one_class_and_the_last_id():
    from transferkit.splits import parse_classes
    d = _domain(torch.arange(10))
    assert parse_classes("3-3", d) == [3] and parse_classes("9", d) == [9]
    for bad in ("10", [10], "8-10"):
        with pytest.raises(TransferkitError, match=r"class id 10 out of range \[0, 9\]"):
            parse_classes(bad, d)


def test_dataset_name_keeps_a_domain_named_like_a_part():
    from transferkit.splits import dataset_name
    assert dataset_name("test") == "test" and dataset_name("val") == "val"
    assert dataset_name("test/train") == "test"


# ---- grouped ---------------------------------------------------------------------------------
def test_grouped_views_are_consecutive_copies_of_their_image_and_seeded():
    from transferkit.grouped import grouped_views
    base = _domain(torch.arange(4) % 2)
    plain = grouped_views(base, 3, shifts=())
    assert torch.equal(plain.images, base.images.repeat_interleave(3, 0))
    assert plain.groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert torch.equal(grouped_views(base, 2, seed=1).images, grouped_views(base, 2, seed=1).images)
    assert not torch.equal(grouped_views(base, 2, seed=0).images, grouped_views(base, 2, seed=1).images)
    with pytest.raises(TransferkitError, match="views must be an integer >= 1"):
        grouped_views(base, 0)


def test_parse_grouped_ignores_surrounding_spaces():
    from transferkit.grouped import parse_grouped
    assert parse_grouped(" digits+blur@grouped5 ") == ("digits+blur", 5)


def test_k_groups_follow_the_seeded_permutation_within_each_class():
    from transferkit.grouped import sample_k_groups
    group_label = torch.arange(300) % 3
    d = _domain(group_label.repeat_interleave(2), groups=torch.arange(600) // 2)  # 300 groups of 2 frames
    for seed in (4, 9):
        labeled, unlabeled = sample_k_groups(d, 7, seed)
        rank = _rank_in_class(group_label, torch.randperm(300, generator=torch.Generator().manual_seed(seed)))
        assert set(labeled.groups.tolist()) == set(torch.nonzero(rank < 7).flatten().tolist())
        assert len(unlabeled) == 600 - 2 * 21


def test_a_k_larger_than_the_groups_of_a_class_counts_them_in_good_grammar():
    from transferkit.grouped import sample_k_groups
    d = _domain(torch.tensor([0, 0, 1, 1, 1, 1]), groups=torch.tensor([0, 0, 1, 1, 2, 2]), names=["a", "b"])
    with pytest.raises(TransferkitError, match=r"groups \(videos\) of class a \(1\) in domain"):
        sample_k_groups(d, 2, 0)


def test_k_groups_skip_a_class_without_groups():
    from transferkit.grouped import sample_k_groups
    labels = torch.tensor([0, 0, 2, 2, 0, 0, 2, 2])  # class 1 has no sample
    d = _domain(labels, groups=torch.arange(8) // 2, names=["a", "b", "c"])
    labeled, _ = sample_k_groups(d, 1, 0)
    assert labeled.class_counts().tolist() == [2, 0, 2]


# ---- retrieval -------------------------------------------------------------------------------
def test_retrieval_map_names_embeddings_that_do_not_match_the_images():
    from transferkit.retrieval import retrieval_map
    gallery, queries = _domain(torch.tensor([0, 1, 0, 1])), _domain(torch.tensor([0, 1, 1, 0, 1]))
    with pytest.raises(TransferkitError, match="gallery has 3 embeddings for 4 images"):
        retrieval_map(None, None, gallery, queries, gallery=torch.randn(3, 2), queries=torch.randn(5, 2))
    with pytest.raises(TransferkitError, match="2 query embeddings for 5 images"):
        retrieval_map(None, None, gallery, queries, gallery=torch.randn(4, 2), queries=torch.randn(2, 2))


def test_retrieval_ranks_near_duplicates_exactly_whatever_the_gallery_order():
    from transferkit.retrieval import map_at_k
    torch.manual_seed(0)
    base = 300 + torch.randn(1, 64)  # |x|^2 ~ 6e6: float32 x.x - 2 x.y + y.y cannot see 1e-2 apart
    gallery = torch.cat([base + 1e-2, 300 + torch.randn(28, 64), base])  # the exact match is last
    labels = torch.tensor([1] * 29 + [0])
    assert map_at_k(base.repeat(30, 1), torch.zeros(30, dtype=torch.long), gallery, labels, k=1) == 1.0


def test_embed_leaves_an_eval_network_in_eval_mode():
    from transferkit.backbones import from_sequential
    from transferkit.retrieval import embed
    net = from_sequential(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)))
    net.eval()
    embed(net, torch.rand(2, 1, 4, 4))
    assert not net.training and not any(m.training for m in net.modules())


def test_retrieval_refuses_k_zero():
    from transferkit.retrieval import map_at_k
    with pytest.raises(TransferkitError, match="integer k >= 1"):
        map_at_k(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(3, 3), torch.tensor([0, 1, 1]), k=0)


# ---- fewshot_eval ----------------------------------------------------------------------------
def test_mean_ci95_of_one_episode_has_no_interval():
    from transferkit.fewshot_eval import mean_ci95
    mean, ci = mean_ci95([0.5])
    assert mean == 0.5 and math.isnan(ci)  # unknown spread, not none


def test_classes_of_exactly_k_plus_q_samples_are_drawn_whole():
    from transferkit.fewshot_eval import sample_episodes
    labels = torch.arange(3).repeat_interleave(torch.tensor([3, 3, 5]))  # classes 0 and 1: exactly K + Q = 3
    sup, qry, classes = sample_episodes(labels, 3, 1, 2, 20, torch.Generator().manual_seed(0))
    both = torch.cat([sup, qry], 2)
    assert bool((labels[both] == classes[..., None]).all())
    for e in range(20):
        for j, c in enumerate(classes[e].tolist()):
            if c < 2:  # every sample of a class that has just enough
                assert sorted(both[e, j].tolist()) == torch.nonzero(labels == c).flatten().tolist()


def test_episodes_draw_their_classes_at_random():
    from transferkit.fewshot_eval import sample_episodes
    labels = torch.arange(6).repeat_interleave(10)
    _, _, classes = sample_episodes(labels, 2, 1, 2, 200, torch.Generator().manual_seed(0))
    assert set(classes.flatten().tolist()) == set(range(6))
    assert len({tuple(sorted(c)) for c in classes.tolist()}) == 15  # all 6-choose-2 pairs in 200 episodes


def test_negative_episode_labels_are_named():
    from transferkit.fewshot_eval import sample_episodes
    with pytest.raises(TransferkitError, match="class ids >= 0"):
        sample_episodes(torch.tensor([-1, 0, 0, 0, 1, 1, 1]), 2, 1, 1, 2, torch.Generator().manual_seed(0))


def test_the_linear_head_takes_exactly_steps_adam_steps():
    from transferkit.fewshot_eval import episode_accuracies
    labels = torch.arange(5).repeat_interleave(20)
    feats = 10.0 * torch.eye(8)[labels] + 0.01 * torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    # from zero weights one Adam step moves W_c by +lr on its class's axis: every query right;
    # no step leaves all logits 0 (argmax 0: accuracy 1/5)
    accs = episode_accuracies(feats, labels, "linear", n_way=5, k_shot=1, n_query=5, episodes=10, steps=1, lr=0.1)
    assert float(accs.mean()) == 1.0


def test_the_cosine_head_sees_only_feature_directions():
    from transferkit.fewshot_eval import episode_accuracies
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(12)
    feats = torch.randn(60, 6, generator=g) + 1.5 * torch.eye(6)[labels]
    scaled = feats * torch.exp(2 * torch.randn(60, 1, generator=g))  # each sample rescaled, directions kept
    kw = {"n_way": 5, "k_shot": 2, "n_query": 4, "episodes": 20, "steps": 30, "lr": 0.05}
    accs = episode_accuracies(feats, labels, "cosine", **kw)
    flipped = float(((accs - episode_accuracies(scaled, labels, "cosine", **kw)).abs() * 20).sum())  # 20 queries each
    assert flipped <= 2  # 0 here; a head fit on unnormalised support features flips 33 of the 400 queries


def test_labels_a_cast_would_change_are_refused_by_name():
    from transferkit.evaluate import grouped_accuracy
    from transferkit.heads import PrototypeHead, class_means, prototype_logits
    from transferkit.retrieval import map_at_k
    logits, f = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 5.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0], [10.0, 10.0]])
    g, gl, q = torch.tensor([[0.0], [1.0], [10.0], [11.0]]), torch.tensor([0, 1, 1, 0]), torch.tensor([[0.0], [10.0]])
    for call, words in [(lambda: grouped_accuracy(logits, torch.tensor([0.0, 1.0, 0.9]), torch.arange(3)),
                         "whole class ids"),
                        (lambda: grouped_accuracy(logits, torch.tensor([0, 1, 1]), torch.arange(3)[:, None]),
                         "group ids must be a 1-D"),
                        (lambda: class_means(f, torch.tensor([0.0, 0.5, 1.0]), 2), "whole class ids"),
                        (lambda: PrototypeHead(2, 2).fit(f, torch.tensor([0.0, 0.5, 1.0])), "whole class ids"),
                        (lambda: prototype_logits(torch.randn(2, 3), torch.randn(4, 5)), "N x D features and C x D"),
                        (lambda: map_at_k(q, torch.tensor([0, 1])[:, None], g, gl, k=2), "query labels must be a 1-D"),
                        (lambda: map_at_k(q, torch.tensor([0.6, 1.0]), g, gl, k=1), "whole class ids"),
                        (lambda: map_at_k(q, torch.tensor([0, 1]), g, gl.float() + 0.5, k=1), "gallery labels")]:
        with pytest.raises(TransferkitError, match=words):
            call()
    import numpy as np
    assert map_at_k(q, torch.tensor([0, 1]), g, gl, k=np.int64(2)) == map_at_k(q, torch.tensor([0, 1]), g, gl, k=2)
    assert torch.equal(class_means(f, torch.tensor([0.0, 0.0, 1.0]), 2), class_means(f, torch.tensor([0, 0, 1]), 2))


@pytest.mark.parametrize("seed", [1.0, 1.5, "1", None, True, 2**64, -2**63 - 1])
def test_the_engine_and_transfer_refuse_a_seed_that_is_not_a_whole_number_torch_takes(seed):
    from transferkit.api import Transfer
    from transferkit.engine import Engine
    for make in (lambda: Engine(seed=seed), lambda: Transfer("finetune", seed=seed)):
        with pytest.raises(TransferkitError, match="whole number in"):
            make()
    assert Engine(seed=2**64 - 1).seed == 2**64 - 1 and Engine(seed=-2**63).seed == -2**63


def test_a_domain_refuses_empty_class_names_and_images_without_pixels():
    with pytest.raises(TransferkitError, match="a class name is empty"):
        Domain("d", torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), ["a", " "])
    with pytest.raises(TransferkitError, match="must have channels and pixels"):
        Domain("d", torch.rand(2, 1, 0, 0), torch.tensor([0, 1]), ["a", "b"])


def test_grouped_views_beyond_the_machines_memory_are_refused_before_allocating(monkeypatch):
    import transferkit.domain as domain_module
    import transferkit.grouped as grouped
    d = Domain("d", torch.rand(10, 1, 8, 8), torch.arange(10) % 2, ["a", "b"])
    monkeypatch.setattr(domain_module, "memory_bytes", lambda: 10 * 64 * 4 * 100)  # room for 99 views
    assert len(grouped.grouped_views(d, views=99)) == 990
    with pytest.raises(TransferkitError, match=r"d@grouped100: 10 images x 100 views need 0\.0 GiB, more than this "
                                               r"machine's 0\.0 GiB of memory: use fewer views"):
        grouped.grouped_views(d, views=100)


def test_fit_names_images_that_are_not_square_when_the_backbone_cannot_take_them():
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    d = Domain("wide", torch.rand(8, 1, 14, 28), torch.arange(8) % 2, ["a", "b"])
    with pytest.raises(TransferkitError, match=r"'wide' are 14 x 28 \(H x W\); convnet4 built for their height "
                                               r"fails \(.*too small.*\): resize them"):  # spoke of a 14 x 14 input
        Transfer("target_only", backbone="convnet4").fit(target=d)
    wide = Domain("wide", torch.rand(8, 1, 28, 20), torch.arange(8) % 2, ["a", "b"])  # convnet4 pools globally
    Transfer("target_only", backbone="convnet4", train=TrainConfig(steps=1, batch_size=4)).fit(target=wide)


def test_small_input_slips_get_named_errors(tmp_path):
    import numpy as np

    from transferkit.config import ExperimentConfig
    from transferkit.data import load_domain
    from transferkit.splits import parse_classes
    from transferkit.userdata import load_npz
    with pytest.raises(TransferkitError, match=r"classes \{0: 1\} are a mapping"):
        parse_classes({0: 1})
    with pytest.raises(TransferkitError, match="repeats must be in 1..10000"):
        ExperimentConfig(repeats=10**9)
    assert load_domain("digits@Grouped2").name == "digits@grouped2"
    with pytest.raises(TransferkitError, match="@groupedV comes last, after the shifts: digits\\+blur@grouped3"):
        load_domain("digits@grouped3+blur")
    np.savez(tmp_path / "u.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 2**64 - 1], np.uint64))
    with pytest.raises(TransferkitError, match="'y' holds 18446744073709551615, beyond int64"):
        load_npz(tmp_path / "u.npz")


def test_the_python_api_names_misspelt_options_and_wrong_nets_and_takes_domains_and_x_y():
    import transferkit
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    from transferkit.errors import UnknownNameError
    from transferkit.splits import split_domain
    with pytest.raises(UnknownNameError, match="^method 'mcc' has no option 'temprature'; did you mean 'temperature'"):
        Transfer("mcc", temprature=2)  # was accepted, then a TypeError at fit
    with pytest.raises(TransferkitError, match="method 'finetune' takes no options, got \\['lrr'\\]"):
        Transfer("finetune", lrr=0.1)
    assert "mcc" in transferkit.list_methods() and "temperature" in transferkit.method_options(
        transferkit.methods.get_method("mcc"))
    d = Domain("toy", torch.rand(40, 1, 28, 28), torch.arange(40) % 2, ["a", "b"])
    with pytest.raises(TransferkitError, match="net must be a transferkit UnitNet .* got str"):
        Transfer("target_only").fit(target=d, net="convnet4")
    train, val, test = split_domain(d)  # a Split unpacks
    model = Transfer("target_only", train=TrainConfig(steps=2, batch_size=8)).fit(target=train)
    assert torch.equal(model.predict(test), model.predict(test.images))
    assert model.score(test.images, test.labels) == model.score(test)
    with pytest.raises(TransferkitError, match=r"score: got one tuple; give the images and labels as two arguments, "
                                               r"score\(images, labels\), or a Domain"):
        model.score((test.images, test.labels))  # sklearn's score(X, y) takes two arguments
    with pytest.raises(TransferkitError, match=r"report: got one list; give the images and labels as a Domain"):
        model.report([test.images, test.labels])
    assert repr(model).startswith("Transfer('target_only', backbone='convnet4', seed=0, train=TrainConfig(steps=2, "
                                  "batch_size=8)), fitted on 2 classes")
    assert repr(test) == "Domain('toy/test', %d images of 1 x 28 x 28, 2 classes)" % len(test)
    assert test != val and test == test and len({test, val}) == 2  # identity, hashable (tensors have no truth)


def test_transfer_follows_the_estimator_protocol_so_sklearn_clone_copies_it_unfitted():
    from sklearn.base import clone

    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    from transferkit.errors import UnknownNameError
    train = TrainConfig(steps=2, batch_size=8)
    model = Transfer("mcc", backbone="lenet", train=train, seed=3, temperature=2.0)
    assert model.get_params() == {"method": "mcc", "backbone": "lenet", "train": train,
                                  "pretrain": TrainConfig(steps=600), "seed": 3, "select_metric": "accuracy",
                                  "hooks": (), "temperature": 2.0}
    older = clone(model)
    del older.select_metric  # pickled before select_metric was a parameter: it selected on accuracy
    assert older.get_params()["select_metric"] == "accuracy" and "select_metric" not in repr(older)
    model.seed = 4  # the attributes fit reads are what the parameters say (and an older pickle has no other)
    assert model.get_params()["seed"] == 4 and clone(model).seed == 4
    model.seed = 3
    d = Domain("toy", torch.rand(40, 1, 28, 28), torch.arange(40) % 2, ["a", "b"])
    fitted = Transfer("target_only", backbone="lenet", train=train).fit(target=d)
    copy = clone(fitted)  # sklearn checks that the copy's parameters are the objects it passed
    assert not hasattr(copy, "net_") and copy.get_params()["train"] == train and copy.get_params()["train"] is not train
    assert repr(copy) == "Transfer('target_only', backbone='lenet', seed=0, train=TrainConfig(steps=2, batch_size=8))"
    assert fitted.set_params(seed=5, backbone="convnet4") is fitted and not hasattr(fitted, "net_")  # refit
    assert (fitted.seed, fitted.backbone, fitted.train_cfg) == (5, "convnet4", train)
    with pytest.raises(UnknownNameError, match="method 'mcc' has no option 'temprature'"):
        model.set_params(temprature=1.0)
    assert model.get_params()["temperature"] == 2.0  # a refused change leaves the model as it was
    with pytest.raises(TransferkitError, match="method 'finetune' takes no options, got \\['temperature'\\]"):
        model.set_params(method="finetune")  # the other method's options stay: a new Transfer is clearer


def _recorded_engine_fits(monkeypatch) -> list:
    """Every ``Engine.fit`` that ``transferkit.api`` makes from now on, as (method name, streams)."""
    import transferkit.api as api
    from transferkit.engine import Engine
    fits = []

    class Spy(Engine):
        def fit(self, method, **streams):
            fits.append((method.name, streams))
            return super().fit(method, **streams)
    monkeypatch.setattr(api, "Engine", Spy)
    return fits


def test_transfer_fit_reuses_its_last_pretraining_on_the_same_source_with_the_same_result(monkeypatch):
    import pickle

    import transferkit.api as api
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    fits, modes, build = _recorded_engine_fits(monkeypatch), [], api.build_method

    def recording_mode(cls, net, *args):  # what a method sees when it is built on the source network
        modes.append(net.training)
        return build(cls, net, *args)
    monkeypatch.setattr(api, "build_method", recording_mode)

    def pretrained_on():
        return [streams["source"].name for name, streams in fits if name == "source_only"]
    g = torch.Generator().manual_seed(0)
    src = Domain("src", torch.rand(48, 1, 28, 28, generator=g), torch.arange(48) % 3, ["a", "b", "c"])
    t1 = Domain("t1", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 3, ["a", "b", "c"])
    t2 = Domain("t2", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 3, ["a", "b", "new"])
    tiny = TrainConfig(steps=3, batch_size=8)
    model = Transfer("finetune", backbone="lenet", train=tiny, pretrain=tiny).fit(target=t1, source=src)
    model.fit(target=t2, source=src)  # the class 'new' gets a head row drawn from the random state
    assert pretrained_on() == ["src"] and modes[1::2] == [False, False]  # in eval mode, as pre-training leaves it
    again = Transfer("finetune", backbone="lenet", train=tiny, pretrain=tiny).fit(target=t2, source=src)
    assert pretrained_on() == ["src"]  # another model of the process: the same pre-training, kept by the process
    api.PRETRAINED.clear()
    fresh = Transfer("finetune", backbone="lenet", train=tiny, pretrain=tiny).fit(target=t2, source=src)
    assert torch.equal(model.predict_logits(t2), fresh.predict_logits(t2))
    assert torch.equal(again.predict_logits(t2), fresh.predict_logits(t2))
    model.set_params(train=TrainConfig(steps=4, batch_size=8)).fit(target=t2, source=src)
    assert pretrained_on() == ["src"] * 2  # the fresh model's own; set_params kept this one's
    model.set_params(seed=1).fit(target=t2, source=src)
    relabelled = Domain("src", src.images, src.labels.roll(1), src.class_names)
    model.fit(target=t2, source=relabelled)
    model.fit(target=t2, source=src, source_val=t1)
    assert pretrained_on() == ["src"] * 5
    assert "_pretrained" not in pickle.loads(pickle.dumps(model)).__dict__ and hasattr(model, "_pretrained")


def test_transfer_fit_pretrains_with_early_stopping_on_a_given_source_validation_split(monkeypatch):
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    fits = _recorded_engine_fits(monkeypatch)
    g = torch.Generator().manual_seed(0)
    src = Domain("src", torch.rand(48, 1, 28, 28, generator=g), torch.arange(48) % 3, ["a", "b", "c"])
    src_val = Domain("src_val", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 3, ["a", "b", "c"])
    tgt = Domain("tgt", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 3, ["a", "b", "c"])
    tiny = TrainConfig(steps=2, batch_size=8, eval_every=1)
    model = Transfer("finetune", backbone="lenet", train=tiny, pretrain=tiny)
    model.fit(target=tgt, source=src, source_val=src_val)
    assert fits[0][0] == "source_only" and fits[0][1]["val"] is src_val  # pre-training selects on it
    assert fits[1][0] == "finetune"
    with pytest.raises(TransferkitError, match="source_val is the validation split of the source pre-training, but "
                                               "net= is given"):
        model.fit(target=tgt, source=src, source_val=src_val, net=model.net_)
    with pytest.raises(TransferkitError, match="method 'target_only' does not pre-train"):
        Transfer("target_only", backbone="lenet", train=tiny).fit(target=tgt, source_val=src_val)
    other = Domain("v", src_val.images, src_val.labels, ["a", "b", "z"])
    with pytest.raises(TransferkitError, match=r"source_val 'v' must have the source's classes \['a', 'b', 'c'\]"):
        model.fit(target=tgt, source=src, source_val=other)
    with pytest.raises(TransferkitError, match="images must share one shape"):
        model.fit(target=tgt, source=src, source_val=Domain("w", torch.rand(3, 1, 20, 20), torch.arange(3), ["a", "b",
                                                                                                            "c"]))
