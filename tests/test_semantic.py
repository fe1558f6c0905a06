"""Seed 000 full model (eq. 5-8), its few-shot baselines and the grouped offline domain."""

import math

import numpy as np
import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.config import ExperimentConfig
from transferkit.data import load_domain
from transferkit.discriminators import discriminator_loss
from transferkit.domain import Domain
from transferkit.engine import Batch, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.experiment import run_experiment
from transferkit.grouped import grouped_views, sample_k_groups
from transferkit.methods.semantic import (
    SemanticTransfer,
    matching_log_probs,
    metric_cross_entropy,
    similarity,
    similarity_entropy,
)
from transferkit.splits import split_domain

TINY_PRE = TrainConfig(steps=20, eval_every=10)
TINY = TrainConfig(steps=6, eval_every=3, batch_size=16)


def test_source_entropy_decreases_toward_one_prototype():
    prototypes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    start, goal = torch.tensor([0.5, 0.5, 0.5]), 4 * torch.tensor([1.0, 0.0, 0.0])
    entropies = [float(similarity_entropy(((1 - a) * start + a * goal)[None], prototypes, tau=2.0))
                 for a in torch.linspace(0, 1, 6)]
    assert all(later < earlier for earlier, later in zip(entropies, entropies[1:]))
    assert entropies[0] == pytest.approx(math.log(3), abs=1e-6)  # equal similarity to all three


def test_similarity_normalises_support_only():
    q, s = torch.tensor([[3.0, 4.0]]), torch.tensor([[10.0, 0.0], [0.0, 0.5]])
    assert similarity(q, s).tolist() == [[3.0, 4.0]]
    # query_scale: s * cos, so growing the query norm no longer sharpens eq. 5 / 7
    assert similarity(q, s, query_scale=10.0)[0].tolist() == pytest.approx([6.0, 8.0])
    h = [float(similarity_entropy(m * q, s, tau=1.0, query_scale=10.0)) for m in (1.0, 100.0)]
    assert h[0] == pytest.approx(h[1])
    assert float(similarity_entropy(100 * q, s, tau=1.0)) < float(similarity_entropy(q, s, tau=1.0))


def test_metric_cross_entropy_matches_hand_computation():
    f = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    c0, c1 = (f[0] + f[3]) / 2, (f[1] + f[2]) / 2  # (2.5, 0.5), (0.5, 1.0)
    n0, n1 = c0 / c0.norm(), c1 / c1.norm()
    total = 0.0
    for x, label in zip(f, y.tolist()):
        s = [float(x @ n0), float(x @ n1)]
        total += -(s[label] - math.log(math.exp(s[0]) + math.exp(s[1])))
    assert float(metric_cross_entropy(f, y)) == pytest.approx(total / 4, rel=1e-6)


def test_semantic_losses_refuse_bad_input_by_name():
    f, s = torch.rand(6, 4), torch.rand(3, 4)
    for call, words in [(lambda: similarity(f, torch.rand(3, 5)), "S x D support"),
                        (lambda: similarity(f, torch.rand(4)), "S x D support"),
                        (lambda: similarity(f, torch.rand(0, 4)), "at least one support"),
                        (lambda: similarity_entropy(f, s, tau=0.0), "tau must be positive"),
                        (lambda: similarity_entropy(f, s, tau=-1.0), "tau must be positive"),
                        (lambda: similarity_entropy(torch.rand(0, 4), s, tau=1.0), "at least one query"),
                        (lambda: metric_cross_entropy(f, torch.tensor([0, 0, 1, 1, 2, -1])), "class ids >= 0"),
                        (lambda: metric_cross_entropy(f, torch.tensor([0.5, 0, 1, 1, 2, 2])), "whole class ids"),
                        (lambda: metric_cross_entropy(f, torch.tensor([0, 1, 2])), "one label per feature row"),
                        (lambda: metric_cross_entropy(torch.rand(0, 4), torch.zeros(0, dtype=torch.long)),
                         "one label per feature row")]:
        with pytest.raises(TransferkitError, match=words):
            call()


def test_lower_temperature_sharpens_and_spreads_entropies():
    """Seed 000 Figure 2: a lower temperature gives lower, more varied entropies across points."""
    g = torch.Generator().manual_seed(0)
    support, queries = torch.randn(4, 16, generator=g), torch.randn(200, 16, generator=g)
    per_point = {}
    for tau in (1.0, 4.0):
        logp = torch.log_softmax(similarity(queries, support) / tau, 1)
        per_point[tau] = -(logp.exp() * logp).sum(1)
        assert float(similarity_entropy(queries, support, tau)) == pytest.approx(float(per_point[tau].mean()))
    assert per_point[1.0].mean() < per_point[4.0].mean()
    assert per_point[1.0].var() > per_point[4.0].var()


def test_matching_networks_hand_example():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.2], [0.1, 1.0]])
    logp = matching_log_probs(query, support, labels, num_classes=2, scale=1.0)
    cos = torch.nn.functional.normalize(query, dim=1) @ torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    att = torch.softmax(cos, 1)
    expected = torch.stack([att[:, 0], att[:, 1] + att[:, 2]], 1)
    assert torch.allclose(logp.exp(), expected, atol=1e-6)
    assert logp.argmax(1).tolist() == [0, 1]


def test_nearest_support_rule_can_disagree_with_attention():
    from transferkit.methods.semantic import nearest_support_scores
    # one class-0 example at cosine 0.90, three class-1 examples at 0.85: attention votes 1, the nearest is 0
    q = torch.tensor([[1.0, 0.0, 0.0]])
    s0 = torch.tensor([[0.90, (1 - 0.90 ** 2) ** 0.5, 0.0]])
    s1 = torch.tensor([[0.85, 0.0, (1 - 0.85 ** 2) ** 0.5]]).repeat(3, 1)
    support, labels = torch.cat([s0, s1]), torch.tensor([0, 1, 1, 1])
    assert matching_log_probs(q, support, labels, 3, scale=10.0).argmax(1).item() == 1
    scores = nearest_support_scores(q, support, labels, 3)
    assert scores.argmax(1).item() == 0 and torch.allclose(scores[0, :2], torch.tensor([0.90, 0.85]))
    assert scores[0, 2] == -2.0  # a class without support


def test_lext_after_a_bare_engine_fit_predicts_as_its_early_stopping_scored():
    from transferkit.engine import Engine
    from transferkit.methods.flex import val_accuracy

    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "01234", seed=1)
    val = _tiny_domain(40, "01234", seed=2)
    method = SemanticTransfer(net)  # predict="centroids"; fit_transfer would store the centroids
    cfg = TrainConfig(steps=6, eval_every=2, batch_size=8, patience=None, progress=False)
    fit = Engine(cfg, seed=0).fit(method, source=src, target=tgt, unlabeled=tgt, val=val)
    assert len(method.target_centroids) == 0  # only fit_transfer stores them
    assert val_accuracy(method, val) == pytest.approx(fit.best_val_accuracy)
    method.eval()
    with torch.no_grad():
        assert torch.equal(method(val.images), method.forward_from_input(val.images))
        assert not torch.equal(method(val.images), net(val.images))  # not the linear head


def _tiny_domain(n, classes, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Domain("tiny", torch.rand(n, channels, 28, 28, generator=g), torch.arange(n) % len(classes),
                  list(classes))


def test_adversarial_players_get_only_their_own_gradients():
    net = build_backbone("convnet4", num_classes=5, in_channels=1, image_size=28)
    method = SemanticTransfer(net)
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "56789", seed=1)
    method.prepare({"source": src, "target": tgt, "unlabeled": tgt})
    assert method.layers == ["conv4", "fc1", "head"] and method.source_prototypes.shape == (5, 64)
    # different labels but as many classes: the logits too, as seed 000 Table 5 and its implementation details
    fewer = SemanticTransfer(build_backbone("convnet4", num_classes=5, in_channels=1, image_size=28))
    fewer.prepare({"source": src, "target": _tiny_domain(10, "5678", seed=1), "unlabeled": tgt})
    assert fewer.layers == ["conv4", "fc1"]  # 5 source classes, 4 target classes: the second and third last
    batch = Batch(step=0, progress=0.0, source=(src.images, src.labels), target=(tgt.images, tgt.labels),
                  unlabeled=tgt.images)
    method.train_mode()
    assert not method.source_net.training
    terms = method.losses(batch)
    assert set(terms) == {"ce_target", "dt_disc", "dt_encoder", "st_source_entropy", "st_metric_ce",
                          "st_target_entropy"}
    with torch.no_grad():  # eq. 3 by hand: the discriminator on the source, then the unlabelled target
        src_act = [method.source_features(src.images)[n] for n in method.layers]
        tgt_act = net.forward_features(torch.cat([tgt.images, tgt.images]), method.layers)  # as losses: BN on both
        d_s, d_t = method.discriminator(src_act, [tgt_act[n][len(tgt):] for n in method.layers])
    assert float(terms["dt_disc"]) == pytest.approx(float(discriminator_loss(d_s, d_t)), rel=1e-5)
    assert float(terms["dt_disc"]) != pytest.approx(float(discriminator_loss(d_t, d_s)), rel=1e-3)
    terms["dt_disc"].backward(retain_graph=True)
    assert all(p.grad is None for p in net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.discriminator.parameters())
    method.discriminator.zero_grad(set_to_none=True)
    terms["dt_encoder"].backward()
    assert all(p.grad is None for p in method.discriminator.parameters())
    assert net.unit("conv1")[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.source_net.parameters())


def test_disjoint_label_sets_end_to_end(tmp_path):
    methods = ["lext", "finetune_adv", "matching_net", "matching_ft", "finetune_proto", "finetune_cosine"]
    cfg = ExperimentConfig(name="fewshot", source="mnist", target="digits", source_classes="0-4",
                           target_classes="5-9", methods=methods, k=2, repeats=1, select_on="none",
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path),
                           options={"lext": {"source_support": "examples"}})
    _, rows = run_experiment(cfg, log=lambda *a: None)
    assert [r["method"] for r in rows] == methods
    assert all(len(r["per_class_accuracy"]) == 5 and r["n_labeled"] == 10 for r in rows)
    for r in rows:  # the accuracy is the one its confusion matrix holds
        confusion = torch.tensor(r["confusion"])
        assert r["accuracy"] == pytest.approx(float(confusion.diag().sum() / confusion.sum()))
    assert rows[2]["steps"] == 0 and rows[0]["steps"] == TINY.steps


def test_grouped_views_groups_splits_and_k_groups():
    base = load_domain("digits").subset(torch.arange(60))
    dom = grouped_views(base, views=3, seed=1)
    assert len(dom) == 180 and dom.groups.tolist()[:6] == [0, 0, 0, 1, 1, 1]
    assert torch.equal(dom.labels, base.labels.repeat_interleave(3))
    views = dom.images.view(60, 3, -1)
    assert (views[:, 0] - views[:, 1]).abs().amax(1).min() > 0  # every view is its own draw
    split = split_domain(dom)
    owners = [set(part.groups.tolist()) for part in (split.train, split.val, split.test)]
    assert sum(len(o) for o in owners) == 60 and not (owners[0] & owners[1] or owners[0] & owners[2])
    labeled, unlabeled = sample_k_groups(split.train, 2, seed=0)
    for bad in (0, 1.5, -2):
        with pytest.raises(TransferkitError, match="k must be an integer >= 1"):
            sample_k_groups(split.train, bad, seed=0)
    assert torch.equal(sample_k_groups(split.train, np.int64(2), seed=0)[0].images, labeled.images)
    with pytest.raises(TransferkitError, match="is empty: no group to label"):
        sample_k_groups(split.train.subset(torch.zeros(len(split.train), dtype=torch.bool)), 1, seed=0)
    assert len(labeled) == 2 * 3 * 10 and len(set(labeled.groups.tolist())) == 20
    assert not set(labeled.groups.tolist()) & set(unlabeled.groups.tolist())
    spec = load_domain("digits@grouped2", seed=0)
    assert len(spec) == 2 * 1797 and spec.groups is not None and spec.name == "digits@grouped2"


def test_grouped_target_experiment_reports_group_accuracy(tmp_path):
    cfg = ExperimentConfig(name="grouped", source="mnist", target="digits@grouped2", source_classes="0-4",
                           target_classes="5-9", methods=["finetune", "lext"], k=1, repeats=1, select_on="none",
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert all(r["n_labeled"] == 2 * 5 and 0 <= r["group_accuracy"] <= 1 for r in rows)
    from transferkit.report import write_report
    _, md = write_report(run_dir)
    for table in ((run_dir / "results.md").read_text(), md.read_text()):  # the per-video accuracy is tabled too
        assert "grouped accuracy (%)" in table and f"{100 * rows[0]['group_accuracy']:.1f}" in table


def test_fewshot_tables_in_table1_and_table2_form():
    from transferkit.bench.fewshot import fewshot_report

    base = {"finetune": 0.6, "lext": 0.8}
    rows = [{"part": part, "method": m, "setting": f"k={k}", "seed": s, "accuracy": base[m] + 0.02 * s,
             "group_accuracy": base[m] + 0.1 + 0.02 * s}
            for part in ("main", "grouped") for m in base for k in (2, 5) for s in (0, 1)]
    text = fewshot_report(rows)
    assert "| method | k=2 | k=5 |" in text
    assert "| lext | 0.810 ± 0.010 (n=2) | 0.810 ± 0.010 (n=2) |" in text
    assert "| lext (sample) |" in text and "| lext (group) | 0.910 ± 0.010 (n=2)" in text


@pytest.mark.parametrize("predict", ["centroids", "head"])
def test_lext_early_stopping_scores_the_classifier_it_predicts_with(predict):
    from transferkit.engine import Engine
    from transferkit.methods.flex import val_accuracy

    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "01234", seed=1)
    val = _tiny_domain(15, "01234", seed=2)
    method = SemanticTransfer(net, predict=predict)
    cfg = TrainConfig(steps=6, eval_every=2, batch_size=8, patience=None, progress=False)
    fit = method.fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=0), source=src, target=tgt,
                              unlabeled=tgt, val=val)
    assert val_accuracy(method, val) == pytest.approx(fit.best_val_accuracy)  # forward == what was selected
    if predict == "centroids":  # the centroids are computed once per evaluation and never kept stale
        from transferkit.evaluate import predict_logits
        method.eval()
        with torch.no_grad():  # ψ by hand: queries against the normalised labelled target class means
            f_t, q = net.forward_features(tgt.images), net.forward_features(val.images)
            means = torch.nn.functional.normalize(torch.stack([f_t[tgt.labels == c].mean(0) for c in range(5)]), dim=1)
            q = q if method.query_scale is None else method.query_scale * torch.nn.functional.normalize(q, dim=1)
            assert torch.allclose(method(val.images), q @ means.t(), atol=1e-4)
        method._labeled = tgt  # as while it trains (a fitted lext keeps no domain)
        calls = []
        compute = method._labelled_centroids
        method._labelled_centroids = lambda: calls.append(1) or compute()
        x = torch.rand(2100, 1, 28, 28)
        method.eval()
        first = predict_logits(method.forward_from_input, x, batch_size=1000)
        assert len(calls) == 1
        method.train()
        with torch.no_grad():
            net.unit("conv1")[0].weight.mul_(0.5)
        method.eval()
        second = predict_logits(method.forward_from_input, x[:10])
        assert len(calls) == 2 and not torch.allclose(first[:10], second)


def test_matching_ft_queries_only_classes_with_support_and_needs_k2():
    from transferkit.errors import TransferkitError
    from transferkit.methods.semantic import FinetunedMatchingNet

    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    method = FinetunedMatchingNet(net)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 1, 2])  # classes 1 and 2 alone: no query from them
    method.train_mode()
    loss = method.losses(Batch(step=0, progress=0.0, target=(x, y)))["episode_ce"]
    assert loss < 10 and loss.item() > 0  # a real episode (a query without support gave -log 1e-8 = 18.4)
    loss.backward()
    assert net.unit("conv1")[0].weight.grad.abs().sum() > 0
    lone = method.losses(Batch(step=0, progress=0.0, target=(x[1:], y[1:])))["episode_ce"]
    assert lone.item() == 0.0
    with pytest.raises(TransferkitError, match="at least 2 labelled examples per class"):
        method.fit_transfer(None, target=_tiny_domain(3, "012"))


def test_lext_reads_the_logits_when_source_and_target_have_as_many_classes(tmp_path):
    """Seed 000 Table 5 (SVHN 0-4 -> MNIST 5-9): the discriminator reads conv4, fc1 and the 5
    logits, source logits from the pre-trained source classifier."""
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    from transferkit.fitting import retarget_head

    net = build_backbone("convnet4", num_classes=5, in_channels=1, image_size=28)
    source_head = net.get_classifier().weight.detach().clone()
    method = SemanticTransfer(net, layers=["conv4", "fc1", "head"])  # built first, as run_job does
    retarget_head(net, list("01234"), list("56789"))
    src, tgt = _tiny_domain(10, "01234"), _tiny_domain(10, "56789", seed=1)
    method.prepare({"source": src, "target": tgt, "unlabeled": tgt})
    assert torch.equal(method.source_net.get_classifier().weight, source_head)
    assert not torch.equal(net.get_classifier().weight, source_head)
    assert method.discriminator.in_sizes == [64, 64, 5]
    for wrong in (["head", "fc1"], ["fc1", "fc1"]):  # eq. 2 chains the layers in the network's order: refused at once
        with pytest.raises(TransferkitError, match="layers must follow the network's order|more than once"):
            SemanticTransfer(build_backbone("convnet4", 5, 1, 28), layers=wrong)
    with pytest.raises(TransferkitError, match="as many classes"):
        SemanticTransfer(build_backbone("convnet4", 5, 1, 28), layers=["fc1", "head"]).prepare(
            {"source": src, "target": _tiny_domain(12, "567890"), "unlabeled": tgt})
    cfg = ExperimentConfig(name="t5", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           k=2, repeats=1, methods=["lext"], options={"lext": {"layers": ["conv4", "fc1", "head"]}},
                           pretrain=TrainConfig(steps=10, eval_every=5), train=TrainConfig(steps=4, eval_every=2),
                           out_dir=str(tmp_path))
    assert run_experiment(cfg, log=lambda *a: None)[1][0]["accuracy"] >= 0


@pytest.mark.parametrize("name", ["lext", "finetune_adv"])
def test_lext_computes_the_fixed_source_networks_activations_once_per_fit(name):
    from helpers import check_frozen_features_cached

    from transferkit.engine import Engine
    from transferkit.methods import get_method
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    method = get_method(name)(net, **({"source_support": "examples"} if name == "lext" else {}))
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "56789", seed=1)
    cfg = TrainConfig(steps=5, eval_every=5, batch_size=8, progress=False)
    idx = torch.tensor([7, 2, 11, 0, 19])
    batch = Batch(step=0, progress=0.5, source=(src.images[idx], src.labels[idx]),
                  target=(tgt.images[:4], tgt.labels[:4]), unlabeled=tgt.images[4:],
                  indices={"source": idx, "target": torch.arange(4), "unlabeled": torch.arange(4, 10)})
    check_frozen_features_cached(
        method, method.source_net.unit("conv1"),
        lambda: Engine(cfg, seed=0).fit(method, source=src, target=tgt, unlabeled=tgt), batch,
        {"source": src.images, "target": tgt.images, "unlabeled": tgt.images})


def _lext_on_tiny_domains(scale=1.0, **options):
    """lext (lenet: no dropout or BatchNorm, so train mode is deterministic) prepared on tiny
    disjoint-label domains, and one batch; ``scale`` multiplies every network parameter
    (at initialisation, lenet's embeddings give near-uniform similarities)."""
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    method = SemanticTransfer(net, **options)
    src, tgt, unl = _tiny_domain(20, "01234"), _tiny_domain(10, "56789", seed=1), _tiny_domain(6, "56789", seed=2)
    method.prepare({"source": src, "target": tgt, "unlabeled": unl})
    method.train_mode()
    batch = Batch(step=0, progress=0.3, source=(src.images[:8], src.labels[:8]), target=(tgt.images, tgt.labels),
                  unlabeled=unl.images)
    return method, src, tgt, unl, batch


def test_lext_encoder_term_pushes_target_logits_toward_source():
    method, *_, batch = _lext_on_tiny_domains(alpha=0.3)
    outs = []

    def keep(_module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.requires_grad:  # not the (source, target) pair of a joint call
            out.retain_grad()
            outs.append(out)
    handle = method.discriminator.register_forward_hook(keep)
    try:
        terms = method.losses(batch)
    finally:
        handle.remove()
    terms["dt_encoder"].backward()
    graded = [o for o in outs if o.grad is not None]
    assert len(graded) == 1  # the frozen pass on the target activations; d_s enters detached
    logit, grad = graded[0].detach(), graded[0].grad
    assert len(logit) == 6 and (grad < 0).all()  # eq. 4: target pushed toward "source" (label 1)
    assert torch.allclose(grad, 0.3 * (torch.sigmoid(logit) - 1) / len(logit))


def test_lext_semantic_entropies_use_their_own_support_and_temperature():
    method, src, tgt, unl, batch = _lext_on_tiny_domains(scale=4.0, beta=0.2, tau_source=3.0, tau_target=0.5)
    terms = method.losses(batch)
    with torch.no_grad():
        f_src = method.source_net.forward_features(src.images)
        prototypes = torch.stack([f_src[src.labels == c].mean(0) for c in range(5)])
        f_t, f_u = method.net.forward_features(tgt.images), method.net.forward_features(unl.images)
        centroids = torch.stack([f_t[tgt.labels == c].mean(0) for c in range(5)])
        source_h = 0.2 * similarity_entropy(f_u, prototypes, 3.0)
        target_h = 0.2 * similarity_entropy(f_u, centroids, 0.5)
        # the batch tells the temperatures apart
        assert abs(float(source_h - 0.2 * similarity_entropy(f_u, prototypes, 0.5))) > 1e-3
        assert abs(float(target_h - 0.2 * similarity_entropy(f_u, centroids, 3.0))) > 1e-3
    assert torch.allclose(method.source_prototypes, prototypes, rtol=1e-4, atol=1e-5)
    assert terms["st_source_entropy"].item() == pytest.approx(float(source_h), rel=1e-5)
    assert terms["st_target_entropy"].item() == pytest.approx(float(target_h), rel=1e-5)


def test_lext_without_the_adversarial_term_caches_only_the_source_embedding():
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    src = _tiny_domain(20, "01234")
    method = SemanticTransfer(net, alpha=0.0, source_support="examples")
    method.prepare({"source": src, "target": src, "unlabeled": src})
    assert list(method.cache_inputs({"source": src.images})["source_features"]) == ["embedding"]
    assert method.cache_inputs({}) == {}  # a source stream the fit does not draw in full is not cached


def test_lext_fit_runs_the_source_network_over_the_source_once():
    from transferkit.engine import Engine
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "56789", seed=1)
    method = SemanticTransfer(net, alpha=0.1)
    seen = []
    forward = method.source_net.forward_features
    method.source_net.forward_features = lambda x, *a, **k: seen.append(len(x)) or forward(x, *a, **k)
    Engine(TrainConfig(steps=3, batch_size=8, eval_every=3), seed=0).fit(method, source=src, target=tgt,
                                                                        unlabeled=tgt)
    assert sum(seen) == len(src)  # the discriminator's cache; the prototypes are its class means
    with torch.no_grad():
        f_src = forward(src.images)
    means = torch.stack([f_src[src.labels == c].mean(0) for c in range(5)])
    assert torch.allclose(method.source_prototypes, means, atol=1e-5) and method._prototype_source is None


def test_lext_source_examples_and_metric_cross_entropy_terms():
    method, src, tgt, unl, batch = _lext_on_tiny_domains(scale=4.0, beta=0.2, tau_source=3.0,
                                                         source_support="examples")
    terms = method.losses(batch)
    with torch.no_grad():
        f_s = method.source_net.forward_features(batch.source[0])
        f_t, f_u = method.net.forward_features(tgt.images), method.net.forward_features(unl.images)
        entropy = 0.2 * float(similarity_entropy(f_u, f_s, 3.0))
        metric = 0.2 * float(metric_cross_entropy(f_t, tgt.labels))
    assert terms["st_source_entropy"].item() == pytest.approx(entropy, rel=1e-5)
    assert terms["st_metric_ce"].item() == pytest.approx(metric, rel=1e-5)


def test_lext_discriminator_learning_rate_multiplier_reaches_the_optimizer():
    from transferkit.engine import Engine
    method, *_ = _lext_on_tiny_domains(alpha=0.1, disc_lr_mult=0.5)
    groups = Engine(TrainConfig(lr=1e-3))._optimizer(method).param_groups
    disc = {id(p) for p in method.discriminator.parameters()}
    assert [g["lr"] for g in groups if {id(p) for p in g["params"]} <= disc] == [pytest.approx(5e-4)]


def test_matching_net_nearest_predicts_the_label_of_the_most_similar_support_example():
    from transferkit.methods.semantic import MatchingNet
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    support, queries = _tiny_domain(10, "01234"), _tiny_domain(12, "01234", seed=3)
    method = MatchingNet(net, predict="nearest")
    method.set_support(support)
    with torch.no_grad():
        fq, fs = net.forward_features(queries.images), net.forward_features(support.images)
        cos = torch.nn.functional.normalize(fq, dim=1) @ torch.nn.functional.normalize(fs, dim=1).t()
        expected = support.labels[cos.argmax(1)]
        assert torch.equal(method(queries.images).argmax(1), expected)
        attention = MatchingNet(net)  # the default rule weighs every support example
        attention.set_support(support)
        assert not torch.equal(attention(queries.images), method(queries.images))
        weights = torch.softmax(attention.scale * cos, dim=1)  # Vinyals et al.: Σ_i a(x, x_i) onehot(y_i)
        votes = torch.stack([weights[:, support.labels == c].sum(1) for c in range(5)], 1)
        assert torch.allclose(attention(queries.images).exp(), votes.clamp_min(1e-8), atol=1e-6)


def test_finetune_proto_cosine_metric_classifies_by_cosine_to_the_class_means():
    from transferkit.engine import Engine
    from transferkit.methods.semantic import FinetunePrototype
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    target, queries = _tiny_domain(10, "01234"), _tiny_domain(12, "01234", seed=3)
    method = FinetunePrototype(net, metric="cosine")
    method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=3, eval_every=3)), target=target)
    with torch.no_grad():
        f = net.forward_features(target.images)
        means = torch.stack([f[target.labels == c].mean(0) for c in range(5)])
        fq = net.forward_features(queries.images)
        cos = torch.nn.functional.normalize(fq, dim=1) @ torch.nn.functional.normalize(means, dim=1).t()
        assert torch.allclose(method(queries.images), 10.0 * cos, atol=1e-5)  # the head's scale times cos


def test_matching_ft_at_one_label_per_class_fails_before_pre_training(tmp_path):
    cfg = ExperimentConfig(name="k1", source="mnist", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["matching_net", "matching_ft"], k=1, repeats=1, pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match="matching_ft.*at least 2 labelled target images per class.*has 1"):
        run_experiment(cfg, log=lambda *a: pytest.fail("started"))  # it failed after the jobs before it


def test_lext_restored_from_a_checkpoint_keeps_no_source_domain():
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "56789", seed=1)
    method = SemanticTransfer(net, alpha=0.1)
    method.prepare({"source": src, "target": tgt, "unlabeled": tgt})
    assert method._prototype_source is src  # computed when training starts (cache_inputs)
    method.load_state_dict(method.state_dict())  # a resumed fit: the checkpoint holds them
    assert method._prototype_source is None


def test_lext_with_the_convolutional_discriminator_keeps_the_two_players_apart():
    from transferkit.discriminators import ConvMultiLayerDiscriminator
    method, *_, batch = _lext_on_tiny_domains(alpha=0.3, discriminator="conv")
    assert isinstance(method.discriminator, ConvMultiLayerDiscriminator)
    with pytest.raises(TransferkitError, match="lext: option discriminator must be one of auto, fc, conv"):
        SemanticTransfer(build_backbone("lenet", num_classes=5, in_channels=1, image_size=28), discriminator="cnn")
    for term, owner in (("dt_disc", method.discriminator), ("dt_encoder", method.net)):
        method.zero_grad(set_to_none=True)
        method.losses(batch)[term].backward()
        graded = {id(p) for p in method.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert graded and graded <= {id(p) for p in owner.parameters()}, term


def test_finetune_proto_early_stops_on_the_prototype_classifier_it_returns():
    from transferkit.engine import Engine
    from transferkit.methods.semantic import FinetunePrototype
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    target, val = _tiny_domain(10, "01234"), _tiny_domain(40, "01234", seed=3)
    method = FinetunePrototype(net)
    fit = method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=6, eval_every=2)), target=target,
                              val=val)
    returned = float((method(val.images).argmax(1) == val.labels).float().mean())
    assert fit.val_accuracy == pytest.approx(returned)  # the prototype head's, not the linear head's
    assert method._labeled is None  # the fitted model keeps no domain


@pytest.mark.parametrize("name", ["lext", "finetune_proto"])
def test_class_mean_methods_refuse_a_target_class_without_labels_before_training(name):
    from helpers import tiny_net, toy_domain

    from transferkit import Transfer
    src, t0 = toy_domain(32, seed=1, classes=4, name="src"), toy_domain(32, seed=2, classes=4, name="tgt")
    target = Domain("tgt", t0.images, t0.labels, ["a", "b", "c", "d", "e"])  # class "e" has no image
    with pytest.raises(TransferkitError, match=r"has none of class\(es\) \['e'\]"):
        Transfer(name, train=TrainConfig(steps=100, batch_size=8)).fit(target=target, source=src, unlabeled=t0,
                                                                       net=tiny_net(4))


def test_finetune_adv_accepts_a_target_class_without_labels_that_lext_refuses():
    from transferkit.engine import Engine
    from transferkit.methods.semantic import FinetuneAdversarial
    t0 = _tiny_domain(8, "5678", seed=1)
    target = Domain("tgt", t0.images, t0.labels, list("56789"))  # class "9" has no labelled image
    FinetuneAdversarial.check_data(target)  # β = 0, linear head: no class centroid
    with pytest.raises(TransferkitError, match=r"has none of class\(es\) \['9'\]"):
        SemanticTransfer.check_data(target)
    torch.manual_seed(0)
    method = FinetuneAdversarial(build_backbone("lenet", num_classes=5, in_channels=1, image_size=28))
    fit = Engine(TrainConfig(steps=2, batch_size=8, progress=False), seed=0).fit(
        method, source=_tiny_domain(10, "01234"), target=target, unlabeled=t0)
    assert fit.steps == 2


def test_lext_names_a_source_class_without_images_before_training():
    from transferkit.engine import Engine
    s0, tgt = _tiny_domain(12, "0123"), _tiny_domain(10, "56789", seed=1)
    src = Domain("src", s0.images, s0.labels, list("01234"))  # class "4" has no image: no eq. 5 prototype
    method = SemanticTransfer(build_backbone("lenet", num_classes=5, in_channels=1, image_size=28))
    method.losses = lambda batch: pytest.fail("trained")
    with pytest.raises(TransferkitError, match=r"source domain 'src' has no image of class\(es\) \['4'\]; leave "
                                               r"them out of the source \(source_classes\) or set source_support"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False), seed=0).fit(method, source=src, target=tgt,
                                                                              unlabeled=tgt)
    examples = SemanticTransfer(build_backbone("lenet", num_classes=5, in_channels=1, image_size=28),
                                source_support="examples")
    examples.prepare({"source": src, "target": tgt, "unlabeled": tgt})  # no prototype needed


def test_fitted_lext_keeps_no_labelled_domain_and_predicts_alike_from_both_entry_points():
    import pickle

    from transferkit.engine import Engine
    torch.manual_seed(0)
    src, tgt = _tiny_domain(20, "01234"), _tiny_domain(10, "56789", seed=1)
    method = SemanticTransfer(build_backbone("lenet", num_classes=5, in_channels=1, image_size=28))
    method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=2, batch_size=8, progress=False), seed=0),
                        source=src, target=tgt, unlabeled=tgt)
    assert method._labeled is None and method._prototype_source is None
    assert not any(isinstance(v, Domain) for v in pickle.loads(pickle.dumps(method)).__dict__.values())
    method.eval()
    with torch.no_grad():
        assert torch.allclose(method.forward_from_input(tgt.images), method(tgt.images))


def test_grouped_sizes_and_seeds_take_numpy_integers_and_refuse_the_rest():
    base = load_domain("digits").subset(torch.arange(20))
    two = grouped_views(base, views=2, seed=1)
    assert torch.equal(grouped_views(base, views=np.int64(2), seed=np.int64(1)).images, two.images)
    for bad in (True, 2.0, "2"):
        with pytest.raises(TransferkitError, match="views must be an integer >= 1"):
            grouped_views(base, views=bad)
    for bad in (None, 1.5, False):
        with pytest.raises(TransferkitError, match="seed must be an integer"):
            grouped_views(base, views=2, seed=bad)
        with pytest.raises(TransferkitError, match="seed must be a whole number"):
            sample_k_groups(two, 1, bad)
    assert torch.equal(sample_k_groups(two, 1, np.int64(3))[0].images, sample_k_groups(two, 1, 3)[0].images)
    with pytest.raises(TransferkitError, match=r"seed must be a whole number in \[-2\*\*63"):
        sample_k_groups(two, 1, 2**70)  # was torch's raw overflow ValueError


def test_grouped_k_too_large_names_the_smallest_class():
    videos = Domain("vids", torch.rand(5, 1, 4, 4), torch.tensor([0, 0, 0, 1, 1]), ["walk", "jump"],
                    groups=torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(TransferkitError, match=r"groups \(videos\) of class jump \(2\)"):
        sample_k_groups(videos, 3, 0)


def test_fewshot_tsne_trains_its_methods_as_benchmark_jobs(one_thread):
    from transferkit.bench.fewshot import _train, fewshot_config
    from transferkit.rundata import label_subset, prepare_domains
    from transferkit.source import pretrain_source
    cfg = fewshot_config("tsne", "digits", "digits+noise", 2, True, 1, ["lext"],
                         {"lext": {"layers": ["conv4", "fc1", "head"]}})
    cfg.pretrain, cfg.train = TrainConfig(steps=2, eval_every=2), TrainConfig(steps=2, eval_every=2)
    data = prepare_domains(cfg)
    pretrained, _ = pretrain_source(cfg, data, lambda *a: None)
    labeled, unlabeled = label_subset(cfg, data.target, cfg.seed)
    method = _train("lext", cfg, data, pretrained, labeled, unlabeled)
    # built before the head is given the target classes: the source copy keeps the pre-trained source head
    assert torch.equal(method.source_net.get_classifier().weight, pretrained.get_classifier().weight)
    with pytest.raises(TransferkitError, match=r"has none of class\(es\) \['5'\]"):  # check_data, before training
        _train("lext", cfg, data, pretrained, labeled.subset(labeled.labels != 0), unlabeled)


def test_matching_ft_counts_an_image_drawn_twice_once():
    """A batch that crosses an epoch holds some images twice: the copy must not be the
    query's support (cos = 1 would make the episode trivially right)."""
    from transferkit.methods.semantic import FinetunedMatchingNet, first_occurrences

    assert first_occurrences(torch.tensor([4, 2, 4, 7, 2])).tolist() == [True, True, False, True, False]
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    method = FinetunedMatchingNet(net)
    method.num_target_classes = 3
    method.train_mode()
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2])
    idx = torch.arange(5)
    clean = method.losses(Batch(step=0, progress=0.0, target=(x, y), indices={"target": idx}))["episode_ce"]
    # image 4 (class 2, alone) drawn again, and image 0 again: without the fix class 2 gets a query
    # whose only support is itself, and the loss changes
    dup = torch.tensor([0, 1, 2, 3, 4, 4, 0])
    twice = method.losses(Batch(step=0, progress=0.0, target=(x[dup], y[dup]), indices={"target": dup}))
    assert torch.allclose(twice["episode_ce"], clean)


def test_metric_cross_entropy_with_a_query_scale_known_value():
    from transferkit.methods.semantic import metric_cross_entropy
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    y = torch.tensor([0, 1, 0])
    cent = torch.nn.functional.normalize(torch.stack([f[[0, 2]].mean(0), f[1]]), dim=1)
    logits = 10 * torch.nn.functional.normalize(f, dim=1) @ cent.t()  # s · cos against the class means
    assert float(metric_cross_entropy(f, y, query_scale=10)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)


def test_matching_loss_keeps_its_gradient_when_the_true_class_is_far():
    import torch.nn.functional as F

    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    s, lab = torch.tensor([[0.5, 0.866], [0.9, 0.436]]), torch.tensor([0, 1])
    out = matching_log_probs(q, s, lab, 3, scale=50.0)  # class 2 has no support
    logits = 50.0 * F.normalize(q, dim=1) @ F.normalize(s, dim=1).t()
    assert float(out[0, 0]) == pytest.approx(float(torch.log_softmax(logits, 1)[0, 0]), rel=1e-5)  # was clamped
    assert float(out[0, 2]) == pytest.approx(math.log(1e-8))
    (-out[0, 0]).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0  # was exactly 0


def test_matching_refuses_support_labels_of_another_length():
    from transferkit.methods.semantic import nearest_support_scores

    q, s = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for fn in (matching_log_probs, nearest_support_scores):  # nearest silently ignored the second support
        with pytest.raises(TransferkitError, match="support labels must be one per support example"):
            fn(q, s, torch.tensor([0]), 2)
    with pytest.raises(TransferkitError, match="N x D and S x D"):
        matching_log_probs(q, torch.ones(2, 3), torch.tensor([0, 1]), 2)


def test_finetune_adv_takes_the_discriminator_option_of_lext():
    from transferkit.methods.semantic import FinetuneAdversarial

    m = FinetuneAdversarial(build_backbone("lenet", num_classes=5), discriminator="fc")
    assert m.beta == 0.0 and m.discriminator_kind == "fc"


def test_lext_options_are_checked_before_pre_training_warned_when_their_term_is_off_and_recorded(tmp_path,
                                                                                                 monkeypatch):
    from transferkit.api import Transfer
    from transferkit.errors import TransferkitWarning
    with pytest.raises(TransferkitError, match=r"lext: option gamma must be a number in \(0, 1\], got 0"):
        Transfer("lext", gamma=0)  # the decay of eq. 2: 0 passed the old ">= 0" check, then failed in the job
    from transferkit import source
    real = source.pretrain_source
    monkeypatch.setattr("transferkit.source.pretrain_source", lambda *a, **k: pytest.fail("pre-trained first"))
    cfg = ExperimentConfig(name="g", source="digits", source_classes="0-4", target="mnist", target_classes="5-9",
                           methods=["lext"], k=2, repeats=1, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path),
                           options={"lext": {"gamma": 5}})
    with pytest.raises(TransferkitError, match=r"gamma must be a number in \(0, 1\], got 5"):
        run_experiment(cfg, log=lambda *a: None)
    net = build_backbone("lenet", num_classes=5)
    with pytest.warns(TransferkitWarning, match="lext: alpha=0 turns off the term that gamma, combine configure"):
        SemanticTransfer(net, alpha=0, gamma=0.9, combine="concat")
    with pytest.warns(TransferkitWarning, match="lext: beta=0 turns off the term that tau_source configures"):
        SemanticTransfer(net, beta=0, tau_source=0.5)
    monkeypatch.setattr("transferkit.source.pretrain_source", real)
    _, rows = run_experiment(ExperimentConfig(**{**cfg.__dict__, "options": {"lext": {"alpha": "0.2"}}}),
                             log=lambda *a: None)
    assert rows[0]["method_options"]["alpha"] == 0.2 and rows[0]["method_options"]["gamma"] == 0.1
    assert rows[0]["layers"] == ["conv4", "fc1", "head"]  # as many classes (5, 5): the last three, as Table 5
