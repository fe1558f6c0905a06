"""Attribute- and embedding-based zero-shot learning."""

import math

import pytest
import torch
from helpers import tiny_net

from transferkit.domain import Domain
from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.zeroshot import (
    DIGIT_ATTRIBUTE_NAMES,
    DIGIT_ATTRIBUTES,
    AttributeZeroShot,
    EmbeddingZeroShot,
    attribute_matrix,
    attribute_scores,
    evaluate_zero_shot,
    harmonic_mean,
    prior_matched_gamma,
    zero_shot_report,
)


def test_builtin_digit_attributes_are_distinct():
    a = DIGIT_ATTRIBUTES
    assert a.shape == (10, len(DIGIT_ATTRIBUTE_NAMES))
    assert torch.cdist(a, a).add(torch.eye(10)).min() > 0  # every class has its own vector
    assert bool(a[:7].max(0).values.gt(0).all())  # every attribute occurs among the seen classes 0-6


@pytest.mark.parametrize("metric", ["dap", "kl", "euclidean"])
def test_exact_attribute_vector_maps_to_its_class(metric):
    a = attribute_matrix([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]])
    logits = torch.logit(a.clamp(1e-4, 1 - 1e-4))  # predicted attributes exactly equal to each class vector
    assert attribute_scores(logits, a, metric).argmax(1).tolist() == [0, 1, 2, 3]
    # restricted to "unseen" classes 2, 3, the vector of class 3 still goes to 3
    assert attribute_scores(logits, a[2:], metric).argmax(1)[3] == 1


def test_attribute_matrix_checks():
    with pytest.raises(TransferkitError):
        attribute_matrix([[0.0, 2.0], [1.0, 0.0]])
    with pytest.raises(TransferkitError):
        attribute_matrix(DIGIT_ATTRIBUTES, num_classes=5)


def test_zero_shot_report_and_harmonic_mean():
    scores = torch.tensor([[5.0, 0, 0, 1], [0, 5.0, 0, 0], [0, 0, 1, 2.0], [3.0, 0, 2.0, 0]])
    labels = torch.tensor([0, 1, 2, 3])
    r = zero_shot_report(scores, labels, seen=[0, 1], unseen=[2, 3])
    # zsl among {2, 3}: sample 2 -> 3 (wrong), sample 3 -> 2 (wrong)
    assert r["zsl"] == 0.0
    assert r["seen"] == 1.0 and r["unseen"] == 0.0 and r["h"] == 0.0
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    # per-class means, zsl among the unseen candidates only (a sample mean gives 2/3, no mask 0.25)
    scores = torch.tensor([[5.0, 0, 2, 1], [0, 0, 1, 3], [0, 0, 2, 1], [4, 0, 0, 0], [0, 1, 3, 0]])
    r = zero_shot_report(scores, torch.tensor([2, 3, 3, 0, 1]), seen=[0, 1], unseen=[2, 3])
    assert (r["zsl"], r["seen"], r["unseen"]) == (0.75, 0.5, 0.25) and r["h"] == pytest.approx(1 / 3)


def test_attribute_scores_known_values():
    logits, a = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    ls = torch.nn.functional.logsigmoid
    # dap: sum_k a_ck log p_k + (1 - a_ck) log(1 - p_k), with log(1 - p) = logsigmoid(-logit)
    dap = [ls(logits[0, 0]) + ls(-logits[0, 1]),
           0.5 * ls(logits[0, 0]) + 0.5 * ls(-logits[0, 0]) + ls(logits[0, 1])]
    assert torch.allclose(attribute_scores(logits, a, "dap"), torch.stack(dap)[None])
    expected = -(torch.sigmoid(logits) - a).pow(2).sum(1)[None]
    assert torch.allclose(attribute_scores(logits, a, "euclidean"), expected, atol=1e-6)
    # kl = dap + H(a_c): class 1's attribute 0.5 adds log 2, class 0's 0/1 values nothing
    kl = torch.stack(dap)[None] + torch.tensor([[0.0, math.log(2)]])
    assert torch.allclose(attribute_scores(logits, a, "kl"), kl)


def test_continuous_attributes_pick_the_class_whose_row_is_predicted_with_kl_and_dap_is_warned():
    a = torch.tensor([[0.9, 0.9, 0.1], [0.6, 0.5, 0.4], [0.2, 0.7, 0.5], [1.0, 0.0, 1.0]])
    logits = torch.logit(a.clamp(1e-4, 1 - 1e-4))  # predicted attributes equal to each row
    assert attribute_scores(logits, a, "dap").argmax(1).tolist() != [0, 1, 2, 3]  # near-0/1 rows win
    assert attribute_scores(logits, a, "kl").argmax(1).tolist() == [0, 1, 2, 3]
    from transferkit.backbones import build_backbone
    with pytest.warns(TransferkitWarning, match=r"attribute_zsl: 9 of the 12 attribute values lie strictly between "
                                                r"0 and 1; metric dap .*metric: kl scores -KL"):
        AttributeZeroShot(build_backbone("lenet", 4), attributes=a.tolist())
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        AttributeZeroShot(build_backbone("lenet", 4), attributes=a.tolist(), metric="kl")
        AttributeZeroShot(build_backbone("lenet", 10), attributes="zones")  # the benchmark's sets: no warning


def test_prior_matched_gamma_moves_the_seen_bias_to_the_unseen_prior():
    # margins max_seen - max_unseen: 4, 5, -2, 1; half of the classes are unseen -> half of
    # the samples must go unseen: gamma just above the median margin (1 .. 4 -> 2.5)
    scores = torch.tensor([[5.0, 0, 0, 1], [0, 5.0, 0, 0], [0, 0, 1, 2.0], [3.0, 0, 2.0, 0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert zero_shot_report(scores, labels, seen=[0, 1], unseen=[2, 3])["unseen"] == 0.0
    gamma = prior_matched_gamma(scores, seen=[0, 1], unseen=[2, 3])
    assert gamma == pytest.approx(2.5, abs=1e-5)
    r = zero_shot_report(scores, labels, seen=[0, 1], unseen=[2, 3], gamma=gamma)
    assert r["seen"] == 1.0 and r["unseen"] == 0.5  # the last sample (margin 1) now goes to class 2
    assert prior_matched_gamma(scores, [0, 1], [2, 3], unseen_fraction=0.25) < gamma
    with pytest.raises(TransferkitError, match="unseen_fraction"):
        prior_matched_gamma(scores, [0, 1], [2, 3], unseen_fraction=1.0)


def _toy_domain():
    """Images whose bright columns encode the attributes of their class (attribute k lit <-> column band k)."""
    a = attribute_matrix([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]])
    labels = torch.arange(5).repeat(24)
    images = 0.05 * torch.rand(len(labels), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for k in range(3):
        images[:, 0, :, 9 * k:9 * k + 9] += a[labels, k].view(-1, 1, 1)
    return a, Domain("toy", images.clamp(0, 1), labels, [f"c{i}" for i in range(5)])


def test_attribute_zero_shot_recognises_unseen_classes_through_the_engine():
    torch.manual_seed(0)
    a, dom = _toy_domain()
    seen = dom.subset(dom.labels < 3)
    method = AttributeZeroShot(tiny_net(3), attributes=a)
    Engine(TrainConfig(steps=50, batch_size=30, eval_every=50, lr=3e-3)).fit(method, source=seen, val=seen)
    assert method.candidates.tolist() == [True, True, True, False, False]  # trained on the seen classes
    report = zero_shot_report(method.scores(dom.images), dom.labels, seen=[0, 1, 2], unseen=[3, 4])
    assert report["zsl"] > 0.9
    calibrated = evaluate_zero_shot(method, dom, seen=[0, 1, 2], unseen=[3, 4], gamma="prior")
    assert calibrated["gamma"] == pytest.approx(prior_matched_gamma(method.scores(dom.images), [0, 1, 2], [3, 4]))
    assert calibrated["zsl"] == report["zsl"]  # calibration only moves the seen-vs-unseen decision
    with pytest.raises(TransferkitError, match="gamma must be a number or 'prior', got 'prio'"):
        evaluate_zero_shot(method, dom, seen=[0, 1, 2], unseen=[3, 4], gamma="prio")
    with pytest.raises(TransferkitError, match=r"images of shape \(3, 28, 28\), the network takes \(1, 28, 28\)"):
        evaluate_zero_shot(method, dom.to_format(channels=3), seen=[0, 1, 2], unseen=[3, 4])
    with pytest.raises(TransferkitError, match="embedding_zsl: option dim must be a whole number >= 1, got 0"):
        EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=0)


def test_embedding_zero_shot_trains_and_masks_candidates():
    torch.manual_seed(0)
    a, dom = _toy_domain()
    method = EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=8)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    seen = dom.subset(dom.labels < 3)
    loss0 = float(method.losses(Batch(step=0, progress=0.0, source=(seen.images, seen.labels)))["ce_source"])
    fit = Engine(TrainConfig(steps=5, batch_size=30, eval_every=5)).fit(method, source=seen)
    after = method.state_dict()
    for part in ("image_proj.", "class_proj.", "net."):  # both projections and the image tower train
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part
    assert fit.history[-1]["loss"] < loss0
    method.set_candidates([3, 4])
    pred = method(dom.images[:10]).argmax(1)
    assert set(pred.tolist()) <= {3, 4}


def test_candidate_and_seen_unseen_ids_are_checked():
    a, dom = _toy_domain()
    method = EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=8)
    for bad, message in (([-1], r"class ids >= 0"), ([5], r"ids must lie in \[0, 4\]"), ([], "empty list"),
                         ([1, 1], "repeated ids"), ([0.5, 2.7], "whole class ids"), ([False, True], "whole class ids"),
                         ([[0], [1]], "1-D tensor")):
        with pytest.raises(TransferkitError, match=message):
            method.set_candidates(bad)
    scores = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 4])
    with pytest.raises(TransferkitError, match=r"overlap: \[2\]"):
        zero_shot_report(scores, labels, [0, 1, 2], [2, 3, 4])
    with pytest.raises(TransferkitError, match="unseen classes: ids must lie"):
        zero_shot_report(scores, labels, [0, 1, 2], [3, 7])
    with pytest.raises(TransferkitError, match="scores have NaN"):
        zero_shot_report(scores.masked_fill(torch.eye(6, 5, dtype=torch.bool), float("nan")), labels, [0, 1], [3, 4])
    wide = Domain("wide", dom.images, dom.labels, [f"c{i}" for i in range(6)])  # 6 classes, 5 rows
    with pytest.raises(TransferkitError, match="source domain has 6 classes but the method describes 5"):
        method.prepare({"source": wide})


def test_embedding_zsl_scores_are_scaled_cosines_of_the_two_projections():
    import torch.nn.functional as F
    torch.manual_seed(0)
    a = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [5.0, 5.0, 0]])  # one long class vector
    m = EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=8, scale=10.0)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        f = m.image_proj(m.net.forward_features(x))
        g = m.class_proj(a)
        expected = 10.0 * F.cosine_similarity(f[:, None, :], g[None, :, :], dim=-1)
    assert torch.allclose(m.scores(x), expected, atol=1e-5)


def test_zero_shot_through_transfer_matches_classes_to_description_rows_by_name():
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    g = torch.Generator().manual_seed(0)
    dom = Domain("d", torch.rand(80, 1, 28, 28, generator=g), torch.arange(80) % 10, [str(i) for i in range(10)])
    seen, unseen = dom.subset(dom.labels < 7), dom.subset(dom.labels >= 7)  # ids kept
    model = Transfer("attribute_zsl", backbone="lenet", train=TrainConfig(steps=4, eval_every=2)).fit(
        source=seen, target=unseen)
    assert set(model.predict(unseen.images).tolist()) <= {7, 8, 9}  # it predicted seen classes only
    renumbered = dom.select_classes([7, 8, 9])  # ids 0, 1, 2 for digits 7, 8, 9
    model = Transfer("attribute_zsl", backbone="lenet", train=TrainConfig(steps=4, eval_every=2)).fit(
        source=dom.select_classes(list(range(7))), target=renumbered)
    assert model.predict_logits(renumbered.images).shape == (len(renumbered), 3)
    with torch.no_grad():  # the columns are the digit rows 7, 8, 9 of the unmasked scores
        model.method_.eval()
        assert torch.equal(model.predict_logits(renumbered.images), model.method_.scores(renumbered.images)[:, 7:])
    own = [[1, 0], [0, 1], [1, 1], [0, 0]]  # rows without names are class ids: renumbered sets are refused
    with pytest.raises(TransferkitError, match="rows without class names.*class_names"):
        Transfer("attribute_zsl", backbone="lenet", attributes=own).fit(
            source=dom.select_classes([0, 1]), target=dom.select_classes([2, 3]))
    named = Transfer("attribute_zsl", backbone="lenet", attributes=own, class_names=["0", "1", "2", "3"],
                     train=TrainConfig(steps=2, eval_every=2)).fit(source=dom.select_classes([0, 1]),
                                                                   target=dom.select_classes([2, 3]))
    assert named.method_.output_rows == [2, 3]


def test_clip_in_a_run_scores_the_target_classes_by_name(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import load_model, run_experiment
    cfg = ExperimentConfig(name="zs", source="digits", target="digits", source_classes="0-6", target_classes="7-9",
                           k=2, repeats=1, backbone="lenet", methods=["clip"], select_on="none",
                           options={"clip": {"captions": [f"a photo of the digit {i}" for i in range(7)],
                                             "text_encoder": "hashing"}},
                           pretrain=TrainConfig(steps=4, eval_every=2), train=TrainConfig(steps=4, eval_every=2),
                           out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert len(rows[0]["confusion"][0]) == 3 and rows[0]["class_names"] == ["7", "8", "9"]
    assert load_model(run_dir, "clip").class_names == ["7", "8", "9"]  # it scored 10 digit classes before


def test_a_run_shows_a_method_options_warning_once(tmp_path):
    import warnings

    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    names = [str(i) for i in range(10)]
    cfg = ExperimentConfig(name="zs", source="digits", target="digits", source_classes="0-6", target_classes="7-9",
                           k=2, repeats=2, backbone="lenet", methods=["attribute_zsl"], select_on="none",
                           options={"attribute_zsl": {"attributes": [[0.05 + i / 11, 0.6] for i in range(10)],
                                                      "class_names": names}},
                           pretrain=TrainConfig(steps=2, eval_every=1), train=TrainConfig(steps=2, eval_every=1),
                           out_dir=str(tmp_path))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # a repeat from another line would show, as in a worker process
        run_experiment(cfg, log=lambda *a: None)
    assert sum("strictly between 0 and 1" in str(w.message) for w in seen) == 1  # check build only, not each job


def test_zero_shot_methods_never_select_on_labelled_images_of_unseen_classes():
    from transferkit.clip import ClipMethod
    from transferkit.fitting import fit_for_target
    from transferkit.text import HashingEncoder
    g = torch.Generator().manual_seed(0)

    def domain(names, n=14):
        return Domain("d", torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % len(names), names)
    seen, unseen = [str(i) for i in range(7)], ["7", "8", "9"]
    make_engine = lambda tag, config=None: Engine(TrainConfig(steps=2, eval_every=1, progress=False))  # noqa: E731
    for method in (ClipMethod(tiny_net(10), captions=[f"digit {c}" for c in seen], class_names=unseen,
                              text_encoder=HashingEncoder(16)), AttributeZeroShot(tiny_net(10), "strokes")):
        with pytest.warns(UserWarning, match="holds classes the source lacks"):
            fit = fit_for_target(method, make_engine, seen, unseen, source=domain(seen), target=domain(unseen),
                                 val=domain(unseen))
        assert fit.best_val_accuracy is None  # no evaluation: the whole budget, nothing selected
    fit = fit_for_target(AttributeZeroShot(tiny_net(10), "strokes"), make_engine, seen, unseen,
                         source=domain(seen), target=domain(unseen), val=domain(seen))  # seen classes: used
    assert fit.best_val_accuracy is not None


def test_built_in_digit_attributes_refuse_classes_that_are_not_the_digits():
    from transferkit.engine import Engine, TrainConfig
    g = torch.Generator().manual_seed(0)
    shapes = Domain("shapes", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 3, ["circle", "square", "x"])
    for method in (AttributeZeroShot(tiny_net(3)), EmbeddingZeroShot(tiny_net(3))):
        with pytest.raises(TransferkitError, match=r"describe the digits 0-9.*\['circle', 'square', 'x'\]"):
            Engine(TrainConfig(steps=1)).fit(method, source=shapes)  # it trained on the digit rows silently
    own = AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1]])
    Engine(TrainConfig(steps=1)).fit(own, source=shapes)


def test_evaluate_zero_shot_scores_test_classes_against_their_own_description_rows():
    from helpers import tiny_net
    torch.manual_seed(0)
    method = AttributeZeroShot(tiny_net(10), "strokes").eval()  # built-in rows name the digits "0".."9"
    x, y = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
    full = Domain("d", x, y, [str(i) for i in range(10)])
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    reordered = Domain("d", x, torch.tensor([order.index(int(v)) for v in y]), [str(i) for i in order])
    expected = evaluate_zero_shot(method, full, list(range(7)), [7, 8, 9])
    assert evaluate_zero_shot(method, reordered, list(range(7)), [7, 8, 9]) == expected
    by_name = evaluate_zero_shot(method, full, [str(i) for i in range(7)], ["7", "8", "9"])
    assert by_name == expected
    part = full.subset(y >= 7)
    only_unseen = Domain("d79", part.images, part.labels - 7, ["7", "8", "9"])  # as `target_classes: 7-9` builds it
    with pytest.raises(TransferkitError, match=r"no test image of the seen classes \[0, 1, 2, 3, 4, 5, 6\]"):
        evaluate_zero_shot(method, only_unseen, list(range(7)), [7, 8, 9])  # its labels 0-2 are rows 7-9
    with pytest.raises(TransferkitError, match=r"unseen classes: \['x'\] are not described classes"):
        evaluate_zero_shot(method, full, list(range(7)), ["x"])


def test_zeroshot_bench_jobs_name_a_non_default_text_encoder_and_refuse_zero_steps():
    from transferkit.bench import make_plan
    from transferkit.bench.zeroshot import job_name
    assert job_name("clip_infonce", "mnist", 0, "all-MiniLM-L6-v2") == "clip_infonce-mnist-s0.json"
    assert job_name("clip_infonce", "mnist", 0, "hashing") == "clip_infonce-hashing-mnist-s0.json"
    assert job_name("attr_zones", "mnist", 1, "hashing") == "attr_zones-mnist-s1.json"  # reads no text
    with pytest.raises(TransferkitError, match="steps must be a whole number >= 1, got 0"):
        make_plan("zeroshot", True, ["steps=0"])


def test_domains_out_of_the_description_rows_order_and_bad_matrices_are_named():
    a, dom = _toy_domain()
    names = [f"c{i}" for i in range(5)]
    seen = dom.subset(dom.labels < 3).select_classes([2, 0, 1])  # classes c2, c0, c1: ids are not rows
    cfg = TrainConfig(steps=1, batch_size=8, eval_every=1, progress=False)
    method = AttributeZeroShot(tiny_net(5), attributes=a, class_names=names)
    with pytest.raises(TransferkitError, match=r"are not the description rows .* method.to_rows\(domain\)"):
        Engine(cfg, seed=0).fit(method, source=seen)
    Engine(cfg, seed=0).fit(method, source=method.to_rows(seen))  # mapped by name: accepted
    for bad, message in (([[1, 0], [1]], "classes x features matrix of numbers"),
                         (["cat", "dog"], "embed them: class_text_embeddings"),
                         ([[float("nan"), 1.0], [0.0, 1.0]], "NaN or infinite"), ([[1.0, 2.0]], "at least 2 classes")):
        with pytest.raises(TransferkitError, match=message):
            EmbeddingZeroShot(tiny_net(5), class_embeddings=bad)
    with pytest.raises(TransferkitError, match=r"names \['a'\] more than once"):
        AttributeZeroShot(tiny_net(5), attributes=a, class_names=["a", "a", "b", "c", "d"])
    import numpy as np
    assert AttributeZeroShot(tiny_net(5), attributes=a, class_names=np.array(names)).row_names == names


def test_a_second_fit_trains_on_the_seen_classes_and_keeps_the_prediction_candidates():
    """Candidates set for zero-shot predictions (the unseen classes) must not mask the seen
    labels of a later fit (a cross entropy of 1e9) nor let it train against unseen classes."""
    torch.manual_seed(0)
    a, dom = _toy_domain()
    method = EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=8)
    seen = dom.subset(dom.labels < 3)
    cfg = TrainConfig(steps=3, batch_size=30, eval_every=3)
    Engine(cfg).fit(method, source=seen)
    method.set_candidates([3, 4])
    fit = Engine(cfg).fit(method, source=seen)
    assert fit.history[-1]["loss"] < 100 and method.candidates.tolist() == [True, True, True, False, False]
    method.set_candidates([3, 4])
    method.fit_transfer(lambda tag, config=None: Engine(config or cfg), source=seen)
    assert method.candidates.tolist() == [False, False, False, True, True]  # the user's, for predictions


def test_prompts_and_recall_refuse_empty_templates_and_k_below_one():
    from transferkit.clip import recall_at_k
    from transferkit.text import prompt_texts

    with pytest.raises(TransferkitError, match="prompt templates: none given"):
        prompt_texts(["7"], ())
    with pytest.raises(TransferkitError, match="at least one class name"):
        prompt_texts([], ("a {}",))
    with pytest.raises(TransferkitError, match="every k must be a whole number >= 1"):
        recall_at_k(torch.randn(3, 4), torch.eye(3, 4, dtype=torch.bool), (0,))


def test_recall_counts_a_query_without_relevant_items_as_a_miss_and_ranks_ties_in_gallery_order():
    from transferkit.clip import recall_at_k

    sim = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3], [0.1, 0.2, 0.3], [0.4, 0.6, 0.5]])
    relevant = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)  # query 3: none
    r = recall_at_k(sim, relevant, (1, 3, 5, 10))
    assert r == {"R@1": 0.75, "R@3": 0.75, "R@5": 0.75, "R@10": 0.75}
    flat = torch.zeros(2, 40)  # a collapsed embedding: every similarity ties
    rel = torch.zeros(2, 40, dtype=torch.bool)
    rel[0, 0], rel[1, 39] = True, True
    assert recall_at_k(flat, rel, (1, 39, 40)) == {"R@1": 0.5, "R@39": 0.5, "R@40": 1.0}


def test_zeroshot_bench_rows_name_what_they_score():
    from transferkit.bench.zeroshot import _methods, _seen, _split_with_styles, _zeroshot_rows
    data = {"mnist": _split_with_styles("mnist")}
    train, caps = _seen(*data["mnist"]["train"])
    val, _ = _seen(*data["mnist"]["val"])
    test = data["mnist"]["test"][0]
    cfg = TrainConfig(steps=2, batch_size=16, eval_every=2, progress=False)
    rows = _zeroshot_rows("attr_zones", _methods("hashing")["attr_zones"], "mnist", 0, (train, caps, val, test),
                          data, cfg, "hashing", lambda *a: None)
    assert {r["setting"]: r["target"] for r in rows} == {"zsl": "mnist[7-9]", "gzsl": "mnist[0-9]",
                                                         "gzsl_prior": "mnist[0-9]"}
    assert sorted(set(train.labels.tolist())) == list(range(7))  # the unseen classes never train


def test_zero_shot_report_and_prior_gamma_known_values():
    from transferkit.zeroshot import prior_matched_gamma, zero_shot_report
    scores = torch.tensor([[1.0, 0, 0, 0, 9], [0, 0, 1.0, 0, 9]])  # class 4 is no candidate: masked out
    rep = zero_shot_report(scores, torch.tensor([0, 2]), [0, 1], [2, 3])
    assert (rep["seen"], rep["unseen"], rep["h"]) == (1.0, 1.0, 1.0)
    margins = torch.tensor([[float(m), 0.0, 0.0] for m in range(4)])  # max seen - max unseen = 0, 1, 2, 3
    gamma = prior_matched_gamma(margins, [0], [1, 2])  # 2 of 3 classes unseen: send 2/3 of the pool there
    assert gamma == pytest.approx(2.0, abs=1e-5)
    assert float((margins[:, 0] < gamma).float().mean()) == 0.75
    labels = torch.tensor([0, 2])
    for bad, message in ((dict(gamma=float("nan")), "gamma must be a number, got nan"),
                         (dict(gamma="0.5"), "gamma must be a number, got '0.5'"),
                         (dict(seen="01"), "seen must be class ids .* got the string '01'"),
                         (dict(scores=scores.long()), "scores must be an N x C float tensor, got Tensor torch.int64")):
        args = {"scores": scores, "labels": labels, "seen": [0, 1], "unseen": [2, 3], **bad}
        with pytest.raises(TransferkitError, match=message):
            zero_shot_report(**args)
    with pytest.raises(TransferkitError, match="infinite values: the calibration margins would be NaN"):
        prior_matched_gamma(torch.tensor([[float("inf"), 0.0, 0.0]] * 3), [0], [1, 2])


def test_scores_keep_every_modules_mode_and_descriptions_must_tell_classes_apart():
    from transferkit.clip import ClipMethod
    from transferkit.retrieval import embed
    from transferkit.text import HashingEncoder
    a, dom = _toy_domain()
    method = AttributeZeroShot(tiny_net(3), attributes=a)
    method.train()
    frozen = next(m for m in method.modules() if m is not method)
    frozen.eval()  # a submodule a method keeps in eval mode
    modes = {m: m.training for m in method.modules()}
    scores = method.scores(dom.images[:4])
    assert scores.shape == (4, 5) and not scores.requires_grad
    assert {m: m.training for m in method.modules()} == modes
    embed(method.net, dom.images[:4])
    assert {m: m.training for m in method.modules()} == modes
    for make in (lambda: AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [1, 0], [0, 1]]),
                 lambda: EmbeddingZeroShot(tiny_net(3), class_embeddings=[[1.0, 0.0], [0.5, 2.0], [1.0, 0.0]])):
        with pytest.raises(TransferkitError, match=r"rows \[0, 2\]|rows \[0, 1\]"):
            make()
    with pytest.raises(TransferkitError, match="more than once"):
        ClipMethod(tiny_net(10), captions=["a"], class_names=["7", "7"], text_encoder=HashingEncoder(16))


def test_contrastive_losses_and_recall_name_bad_arguments():
    import numpy as np

    from transferkit.clip import hard_negative_triplet, info_nce, recall_at_k
    rel = torch.tensor([[False, True]])
    for call, words in [(lambda: info_nce(torch.rand(3, 4), 10.0), "N x N"),
                        (lambda: hard_negative_triplet(torch.rand(3, 4)), "N x N"),
                        (lambda: info_nce(torch.rand(3, 3), 10.0, ids=torch.tensor([0, 1])), "one caption id per pair"),
                        (lambda: recall_at_k(torch.rand(1, 2), torch.tensor([[0.2, 0.9]])), "bool matrix"),
                        (lambda: recall_at_k(torch.rand(1, 2), rel[:, [1, 0]], ks=True), "whole number")]:
        with pytest.raises(TransferkitError, match=words):
            call()
    assert recall_at_k(torch.tensor([[0.9, 0.1]]), rel, ks=np.int64(2)) == {"R@2": 1.0}


def test_zero_shot_fitted_without_a_target_predicts_ids_of_its_source_classes():
    from transferkit.api import Transfer

    g = torch.Generator().manual_seed(0)
    dom = Domain("d", torch.rand(60, 1, 28, 28, generator=g), torch.arange(60) % 10, [str(i) for i in range(10)])
    src = dom.select_classes([3, 5, 7])  # ids 0, 1, 2 for digits 3, 5, 7
    train = TrainConfig(steps=2, eval_every=2)
    alone = Transfer("attribute_zsl", backbone="lenet", train=train).fit(source=src)
    assert alone.classes_ == ["3", "5", "7"]
    assert alone.predict_logits(src.images).shape == (len(src), 3)  # was 10 columns, ids of description rows
    assert int(alone.predict(src.images).max()) < 3
    both = Transfer("attribute_zsl", backbone="lenet", train=train).fit(source=src, target=src)
    assert alone.score(src) == both.score(src)


def test_a_run_refuses_clip_class_names_other_than_the_targets_before_training(tmp_path, monkeypatch):
    from transferkit import experiment, fitting
    from transferkit.config import ExperimentConfig
    from transferkit.methods import get_method
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: pytest.fail("a job ran"))
    clip = get_method("clip")
    target = ["7", "8", "9"]
    assert fitting.zero_shot_options(clip, {"class_names": [7, 8, 9]}, None, target)["class_names"] == target
    import numpy as np
    for given in (np.array(["9", "8", "7"]), ("9", "8", "7")):  # an array was passed through unchecked
        with pytest.raises(TransferkitError, match="is not the target's classes"):
            fitting.zero_shot_options(clip, {"class_names": given}, ["0", "1"], target)
    named = {"attributes": [[1, 0], [0, 1]], "class_names": np.array(["cat", "dog"])}
    assert AttributeZeroShot.option_row_names(named) == ["cat", "dog"]  # an array names the rows as a list does
    for names in (["9", "8", "7"], ["7", "8"], ["7", "8", "9", "0"]):  # reordered, fewer, more: columns != labels
        cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-6", target_classes="7-9",
                               methods=["clip"], select_on="none", backbone="lenet", out_dir=str(tmp_path),
                               options={"clip": {"captions": [f"digit {i}" for i in range(7)],
                                                 "text_encoder": "hashing", "class_names": names}})
        with pytest.raises(TransferkitError, match=r"method clip.*class_names .* is not the target's classes "
                                                   r"\['7', '8', '9'\].*leave class_names out"):
            experiment.run_experiment(cfg, log=lambda *a: None)


def test_a_run_refuses_classes_without_a_description_before_its_first_job(tmp_path, monkeypatch):
    import numpy as np

    from transferkit import experiment
    from transferkit.config import ExperimentConfig
    names = ["zero", "one", "two", "seven", "eight"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "words.npz", x=rng.integers(0, 255, (50, 8, 8), dtype=np.uint8), y=np.arange(50) % 5,
             class_names=np.array(names))
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: pytest.fail("a job ran"))
    own = [[1, 0], [0, 1], [1, 1]]
    for options, match in (({}, r"\['zero', 'one', 'two', 'seven', 'eight'\] have no description.*built-in digit"),
                           ({"class_embeddings": own, "class_names": names[:3]}, r"\['seven', 'eight'\] have no")):
        cfg = ExperimentConfig(source=f"npz:{tmp_path / 'words.npz'}", target=f"npz:{tmp_path / 'words.npz'}",
                               source_classes=names[:3], target_classes=names[3:], image_size=16,
                               methods=["clip", "embedding_zsl"], select_on="none", backbone="lenet",
                               out_dir=str(tmp_path / "runs"),
                               options={"clip": {"captions": ["a", "b", "c"], "text_encoder": "hashing"},
                                        "embedding_zsl": options})
        with pytest.raises(TransferkitError, match=f"method embedding_zsl.*{match}"):
            experiment.run_experiment(cfg, log=lambda *a: None)


def test_a_bad_zero_shot_option_names_a_long_matrix_by_its_shape_not_its_values():
    from transferkit import Transfer
    from transferkit.fitting import method_error
    a = torch.rand(10, 9).mul(0.8).add(0.1).tolist()
    dom = Domain("d", torch.rand(20, 1, 28, 28), torch.arange(20) % 10, [str(i) for i in range(10)])
    with pytest.raises(TransferkitError) as caught:
        Transfer("attribute_zsl", backbone="lenet", attributes=a, metric="cosine").fit(source=dom)
    message = str(caught.value)
    assert "with options {'attributes': <list of 10 × 9>, 'metric': 'cosine'}: unknown attribute metric" in message
    assert str(a[0][0]) not in message
    e = method_error(type("M", (), {"name": "m"}), {"class_embeddings": torch.zeros(200, 384), "dim": 8,
                                                     "class_names": ["a", "b"]}, ValueError("bad"))
    assert str(e) == "method m with options {'class_embeddings': <Tensor of 200 × 384>, 'dim': 8, " \
                     "'class_names': ['a', 'b']}: bad"


def test_description_matrices_load_from_files_and_class_names_embed_from_a_config(tmp_path, monkeypatch):
    import numpy as np

    from transferkit.fitting import zero_shot_options
    from transferkit.text import class_text_embeddings
    a = np.array([[0.2, 0.9, 0.0], [0.7, 0.1, 0.5], [1.0, 0.4, 0.3]])
    np.save(tmp_path / "attrs.npy", a)
    np.savetxt(tmp_path / "attrs.csv", a, delimiter=",")
    np.savetxt(tmp_path / "attrs.txt", a)
    monkeypatch.chdir(tmp_path)  # a relative path is read from the current directory, as npz: domains
    for name in ("attrs.npy", "attrs.csv", str(tmp_path / "attrs.txt")):
        m = AttributeZeroShot(tiny_net(3), attributes=name, class_names=["a", "b", "c"])
        assert torch.allclose(m.class_attributes, torch.tensor(a, dtype=torch.float32))
        e = EmbeddingZeroShot(tiny_net(3), class_embeddings=name, class_names=["a", "b", "c"])
        assert torch.allclose(e.class_embeddings, torch.tensor(a, dtype=torch.float32))
    np.save(tmp_path / "row.npy", a[0])
    np.savetxt(tmp_path / "big.csv", a * 2, delimiter=",")
    (tmp_path / "words.csv").write_text("a,b\n")
    for name, match in (("missing.npy", r"attribute matrix file 'missing.npy' does not exist \(a relative path"),
                        ("row.npy", r"'row.npy' holds an array of shape \(3,\): it must be classes x features"),
                        ("big.csv", r"attribute matrix 'big.csv': attribute values must lie in \[0, 1\]"),
                        ("words.csv", r"'words.csv': row 1, column 1 holds 'a', not a number \(a header row\?\): "
                                      r"the file must hold numbers only"),
                        ("attrs.np", r"unknown digit attribute set .*'attrs.np'; known: strokes, strokes\+zones, "
                                     r"zones")):
        with pytest.raises(TransferkitError, match=match):
            AttributeZeroShot(tiny_net(3), attributes=name)
    with pytest.raises(TransferkitError, match="embeds the class names: give class_names"):
        EmbeddingZeroShot(tiny_net(3), class_embeddings="text:hashing")
    with pytest.raises(TransferkitError, match="class_embeddings 'txet': give a matrix, a .npy"):
        EmbeddingZeroShot(tiny_net(3), class_embeddings="txet")
    from transferkit.methods import get_method
    options = zero_shot_options(get_method("embedding_zsl"), {"class_embeddings": "text:hashing"}, ["cat", "dog"],
                                ["cow", "cat"])
    assert options["class_names"] == ["cat", "dog", "cow"]
    m = EmbeddingZeroShot(tiny_net(3), **options)
    assert torch.equal(m.class_embeddings, class_text_embeddings(["cat", "dog", "cow"], "hashing"))
    assert m.row_names == ["cat", "dog", "cow"]


def test_evaluate_zero_shot_scores_clip_and_refuses_seen_classes_other_than_the_trained_ones():
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    g = torch.Generator().manual_seed(0)
    dom = Domain("d", torch.rand(80, 1, 28, 28, generator=g), torch.arange(80) % 10, [str(i) for i in range(10)])
    source = dom.select_classes(list(range(7)))
    clip = Transfer("clip", backbone="lenet", captions=[f"the digit {i}" for i in range(7)], text_encoder="hashing",
                    train=TrainConfig(steps=2, eval_every=2)).fit(source=source, target=dom).method_
    r = evaluate_zero_shot(clip, dom, range(7), [7, 8, 9], gamma="prior")  # AttributeError: no row_names before
    assert r["gamma"] == pytest.approx(prior_matched_gamma(clip.scores(dom.images), list(range(7)), [7, 8, 9]))
    reordered = dom.select_classes([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])  # mapped to clip's classes by name
    assert evaluate_zero_shot(clip, reordered, range(7), [7, 8, 9]) == evaluate_zero_shot(clip, dom, range(7),
                                                                                           [7, 8, 9])
    zsl = Transfer("attribute_zsl", backbone="lenet", train=TrainConfig(steps=2, eval_every=2)).fit(
        source=source, target=dom).method_
    for method in (clip, zsl):
        with pytest.raises(TransferkitError, match=r"unseen classes \['6'\] are classes the model was trained on"):
            evaluate_zero_shot(method, dom, [0, 1, 2, 3, 4, 5, 7], [6, 8, 9])  # numbers, with 6 counted as unseen
        with pytest.raises(TransferkitError, match=r"seen classes \['7'\] are classes the model was not trained"):
            evaluate_zero_shot(method, dom, list(range(8)), [8, 9])
        with pytest.warns(UserWarning, match=r"classes \['6'\] the model was trained on are neither seen nor unseen"):
            evaluate_zero_shot(method, dom.select_classes([0, 1, 2, 3, 4, 5, 7, 8, 9]), range(6), [7, 8, 9])
    with pytest.raises(TransferkitError, match=r"takes a zero-shot method \(attribute_zsl, embedding_zsl, clip\), got"):
        evaluate_zero_shot(tiny_net(10), dom, range(7), [7, 8, 9])


def test_seen_unseen_accuracies_take_numpy_labels_are_unrounded_and_name_classes_without_test_images():
    from transferkit.evaluate import classification_report
    from transferkit.fitting import report_seen_unseen
    scores = torch.eye(4)[[0, 1, 1, 2, 3, 3, 0]]
    labels = torch.tensor([0, 1, 0, 2, 3, 3, 0])
    assert zero_shot_report(scores, labels.numpy(), [0, 1], [2, 3]) == zero_shot_report(scores, labels, [0, 1], [2, 3])
    with pytest.warns(UserWarning, match=r"the classes \[3, 4\] have no test image"):
        zero_shot_report(torch.eye(5)[[0, 1, 2]], torch.tensor([0, 1, 2]), [0, 1], [2, 3, 4])
    report = classification_report(scores, labels, 4)
    assert report["per_class_accuracy"][0] == 0.666667
    r = report_seen_unseen(report, ["a", "b", "c", "d"], ["a", "b"])
    assert r["seen_accuracy"] == (2 / 3 + 1) / 2  # from the unrounded 2/3
    with pytest.warns(UserWarning, match=r"target classes \['e'\] have no test image"):
        report_seen_unseen(classification_report(scores, labels, 5), ["a", "b", "c", "d", "e"], ["a", "b"])


def test_transfer_report_gives_seen_unseen_and_h_of_a_zero_shot_model_calibrated_by_gzsl_gamma():
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig
    from transferkit.evaluate import classification_report
    from transferkit.fitting import report_seen_unseen
    g = torch.Generator().manual_seed(0)
    dom = Domain("d", torch.rand(80, 1, 28, 28, generator=g), torch.arange(80) % 10, [str(i) for i in range(10)])
    for name, options in (("attribute_zsl", {}), ("clip", {"captions": [f"the digit {i}" for i in range(7)],
                                                           "text_encoder": "hashing"})):
        model = Transfer(name, backbone="lenet", train=TrainConfig(steps=2, eval_every=2), **options).fit(
            source=dom.select_classes(list(range(7))), target=dom)
        r = model.report(dom)
        assert r["gzsl_gamma"] == 0.0 and r["accuracy"] == model.score(dom)
        assert r["h_accuracy"] == report_seen_unseen(r, dom.class_names, [str(i) for i in range(7)])["h_accuracy"]
        prior = model.report(dom, gzsl_gamma="prior")
        logits = model.predict_logits(dom)
        logits[:, :7] -= prior["gzsl_gamma"]
        assert prior["confusion"] == classification_report(logits, dom.labels)["confusion"]
        same = evaluate_zero_shot(model.method_, dom, range(7), [7, 8, 9], "prior")  # the same scores and gamma
        assert (prior["gzsl_gamma"], prior["h_accuracy"]) == pytest.approx((same["gamma"], same["h"]))
    unseen, seen = model.report(dom.select_classes([7, 8, 9])), model.report(dom.select_classes([0, 1]))
    full = model.report(dom)  # one kind of class only (a ZSL test split): that kind's mean, no h
    assert unseen["unseen_accuracy"] == pytest.approx(full["unseen_accuracy"]) and "h_accuracy" not in unseen
    assert seen["seen_accuracy"] == pytest.approx(sum(full["per_class_accuracy"][:2]) / 2, abs=1e-6)
    assert "unseen_accuracy" not in seen
    del model.method_.trained_classes  # as a model saved before 2026-12-02
    assert "h_accuracy" not in model.report(dom)
    with pytest.raises(TransferkitError, match="gzsl_gamma calibrates .* this clip model, trained before 2026-12-02"):
        model.report(dom, 1.0)
    plain = Transfer("target_only", backbone="lenet", train=TrainConfig(steps=2, eval_every=2)).fit(target=dom)
    with pytest.raises(TransferkitError, match=r"of a zero-shot model \(attribute_zsl, .*\), not of target_only$"):
        plain.report(dom, 1.0)


def test_zeroshot_bench_logs_a_clip_models_retrieval_under_its_own_line():
    from transferkit.bench.zeroshot import _log_rows
    base = {"method": "clip_infonce", "source": "mnist[0-6]", "seed": 0, "wall_s": 1.0}
    rows = [{**base, "accuracy": 0.5}, {**base, "accuracy": 0.4, "seen": 0.6, "unseen": 0.3},
            {**base, "accuracy": 0.45}]
    rows += [{**base, "setting": f"{d} (syndigits captions)", "target": "mnist test", "recall_at_1": r,
              "n_captions": 40, "images": "mnist", "captions": "syndigits"} for d, r in (("i2t", 0.25), ("t2i", 0.5))]
    lines = []
    _log_rows(lines.append, rows)
    assert lines[0].lstrip().startswith("clip_infonce")  # the retrieval lines were printed before it (in training)
    assert lines[1] == "    retrieval mnist images / syndigits captions: i2t R@1 25.0%, t2i R@1 50.0% (40 captions)"


def test_attribute_zsl_warns_of_an_attribute_constant_over_the_seen_classes():
    import warnings
    seen = Domain("s", torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2]), ["0", "1", "2"])
    method = AttributeZeroShot(tiny_net(4), attributes=[[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]])
    with pytest.warns(UserWarning, match=r"attributes \[2\] \(columns\) have one value over every seen class"):
        method.prepare({"source": seen})  # column 2 is 1 for a, b, c: only the unseen d differs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AttributeZeroShot(tiny_net(4), attributes=[[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]]).prepare(
            {"source": seen})


def test_class_names_of_another_length_than_the_matrix_rows_name_the_rows_and_the_file(tmp_path):
    import numpy as np
    names = [str(i) for i in range(10)]
    with pytest.raises(TransferkitError, match=r"the attributes matrix has 9 rows while class_names lists 10 classes: "
                                               r"give one row per class of class_names"):  # it blamed class_names
        AttributeZeroShot(tiny_net(9), attributes=torch.eye(9), class_names=names)
    np.savetxt(tmp_path / "nine.csv", np.eye(9), delimiter=",")
    for method, option in ((AttributeZeroShot, "attributes"), (EmbeddingZeroShot, "class_embeddings")):
        with pytest.raises(TransferkitError, match=f"the {option} file '.*nine.csv' has 9 rows while class_names "
                                                   f"lists 10 classes"):  # the file went unnamed
            method(tiny_net(9), **{option: str(tmp_path / "nine.csv"), "class_names": names})
    with pytest.raises(TransferkitError, match=r"class_names names \['8'\] more than once"):  # before the length
        AttributeZeroShot(tiny_net(9), attributes=torch.eye(9), class_names=names[:9] + ["8", "8"])


def test_unnamed_description_rows_warn_of_classes_that_are_not_the_numbers_of_the_rows():
    import warnings
    shapes = Domain("shapes", torch.rand(6, 1, 28, 28), torch.arange(6) % 3, ["circle", "square", "x"])
    with pytest.warns(UserWarning, match=r"attributes matrix have no class names.*\[.circle.*give class_names"):
        AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1]]).prepare({"source": shapes})
    numbered = Domain("n", shapes.images, shapes.labels, ["0", "1", "2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1]]).prepare({"source": numbered})
        named = AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1]], class_names=["x", "circle", "y"])
        named.prepare({"source": named.to_rows(shapes.select_classes(["circle", "x"]))})


def test_a_run_refuses_a_captions_list_of_another_length_or_an_empty_caption_before_its_first_job(tmp_path,
                                                                                                  monkeypatch):
    from transferkit import experiment
    from transferkit.config import ExperimentConfig
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: pytest.fail("a job ran"))
    for captions, match in ((["a zero", "a one"], r"captions is a list of 2 for 3 source classes \['0', '1', '2'\]"),
                            ([f"digit {i}" for i in range(4)], "a list of 4 for 3 source classes"),
                            ({0: "a zero", 1: "", 2: "a two"}, r"captions of the source classes \['1'\] are empty"),
                            (["a zero", "a one", "   "], r"captions of the source classes \['2'\] are empty"),
                            ({0: "a zero", 1: ["a one", ""], 2: "a two"}, r"source classes \['1'\] are empty")):
        cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-2", target_classes="7-9",
                               methods=["clip"], select_on="none", backbone="lenet", out_dir=str(tmp_path),
                               options={"clip": {"captions": captions, "text_encoder": "hashing"}})
        with pytest.raises(TransferkitError, match=f"method clip.*{match}"):
            experiment.run_experiment(cfg, log=lambda *a: None)


def test_a_text_model_is_read_from_disk_first_and_a_download_is_announced(monkeypatch, capsys):
    """An uncached text:MODEL offline retried for 80 s before its error, silently (a trial)."""
    import sys
    import types

    from transferkit.errors import TransferkitError
    from transferkit.text import _load_sentence_model
    calls = []

    class Fake:
        def __init__(self, path, device="cpu", local_files_only=False):
            calls.append(local_files_only)
            if local_files_only:
                raise OSError("not in the cache")  # as sentence-transformers says it

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=Fake))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert isinstance(_load_sentence_model("someone/model", "cpu"), Fake) and calls == [True, False]
    assert "not on disk: downloading it from the Hugging Face Hub" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "no")  # false, as huggingface_hub reads it
    _load_sentence_model("someone/model", "cpu")
    assert "downloading" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TransferkitError, match=r"TRANSFORMERS_OFFLINE is set, so only local files are read\): not "):
        _load_sentence_model("someone/model", "cpu")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")  # huggingface_hub's other switch (a review)
    with pytest.raises(TransferkitError, match=r"only local files are read"):
        _load_sentence_model("someone/model", "cpu")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    assert calls == [True, False, True, False, True, True]

    class Broken:  # found, but it does not load: no download announced, nor tried
        def __init__(self, path, device="cpu", local_files_only=False):
            calls.append(local_files_only)
            raise RuntimeError("Torch not compiled with CUDA enabled")

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=Broken))
    with pytest.raises(TransferkitError, match=r"cannot load sentence-transformers model 'someone/model': Torch not"):
        _load_sentence_model("someone/model", "cuda:7")
    assert calls[-1] is True and "downloading" not in capsys.readouterr().err


def test_matrix_files_name_a_header_a_name_column_a_short_row_and_read_past_a_byte_order_mark(tmp_path):
    from transferkit.zeroshot import matrix_file
    rows = ["1,0,1", "0,1,1", "1,1,0"]
    files = {"bom.csv": "\ufeff" + "\n".join(rows), "comments.csv": "# attributes\n" + "\r\n".join(rows) + "\n\n",
             "header.csv": "digit,a,b,c\n" + "\n".join(f"{i},{r}" for i, r in enumerate(rows)),
             "names.csv": "\n".join(f"c{i},{r}" for i, r in enumerate(rows)),
             "short.csv": "\n".join(rows[:2] + ["1,1"]), "semicolons.csv": "1;0\n0;1\n",
             "trailing.csv": "\n".join(r + "," for r in rows), "empty.csv": "# nothing\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    expected = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    assert matrix_file(tmp_path / "bom.csv", "attribute matrix").tolist() == expected  # Excel's CSV UTF-8
    assert matrix_file(tmp_path / "comments.csv", "attribute matrix").tolist() == expected
    layout = "the file must hold numbers only, one row per class in the order of class_names"
    for name, match in (("header.csv", f"row 1, column 1 holds 'digit', not a number \\(a header row\\?\\): {layout}"),
                        ("names.csv", "row 1, column 1 holds 'c0', not a number \\(a class-name column\\?\\)"),
                        ("short.csv", "row 3 has 2 values where the other rows have 3: every row needs one value per "
                                      "feature"),  # numpy's advice was to "use usecols"
                        ("semicolons.csv", "a .csv separates values by commas"),
                        ("trailing.csv", "row 1, column 4 holds '', not a number \\(an empty value"),
                        ("empty.csv", "holds no numbers")):
        with pytest.raises(TransferkitError, match=f"the attribute matrix file '.*{name}'.*{match}"):
            matrix_file(tmp_path / name, "attribute matrix")
    import numpy as np
    np.savetxt(tmp_path / "spaces.csv", np.eye(3))  # numpy's own default separator, a space (a review)
    np.savetxt(tmp_path / "commas.txt", np.eye(3), delimiter=",")
    for name, match in (("spaces.csv", r"column 1 holds '1.0+e\+00 0.0+e\+00.*', not a number \(values separated by "
                                       r"spaces: a .csv file separates them by commas; name it .txt\)"),
                        ("commas.txt", r"\(values separated by commas: a .txt file separates them by spaces; name it "
                                       r".csv\)")):
        with pytest.raises(TransferkitError, match=match):
            matrix_file(tmp_path / name, "attribute matrix")
    (tmp_path / "lines.txt").write_text("# a comment\n1 0\n\n0 1 1\n")
    with pytest.raises(TransferkitError, match=r"row 2 \(line 4\) has 3 values where the other rows have 2"):
        matrix_file(tmp_path / "lines.txt", "class_embeddings")


def test_a_class_id_past_the_rows_of_an_unnamed_matrix_is_refused_before_training(tmp_path, monkeypatch):
    import numpy as np

    from transferkit import experiment
    from transferkit.api import Transfer
    from transferkit.config import ExperimentConfig
    from transferkit.engine import Engine
    np.savetxt(tmp_path / "nine.csv", np.eye(9), delimiter=",")
    np.save(tmp_path / "nine.npy", np.random.default_rng(0).random((9, 4)))
    monkeypatch.setattr(Engine, "fit", lambda *a, **k: pytest.fail("it trained"))
    g = torch.Generator().manual_seed(0)
    dom = Domain("d", torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 10, [str(i) for i in range(10)])
    for name, option, file in (("attribute_zsl", "attributes", "nine.csv"),
                               ("embedding_zsl", "class_embeddings", "nine.npy")):
        with pytest.raises(TransferkitError, match=f"{name}.*the {option} file '.*{file}' has 9 rows, read as the "
                                                   f"class ids 0-8 .*the target classes \\['9'\\] have no row"):
            Transfer(name, backbone="lenet", **{option: str(tmp_path / file)}).fit(
                source=dom.select_classes(list(range(5))), target=dom)  # it failed after training, on candidates
        with pytest.raises(TransferkitError, match=r"the source classes \['9'\] have no row"):
            Transfer(name, backbone="lenet", **{option: str(tmp_path / file)}).fit(source=dom)
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: pytest.fail("a job ran"))
    cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-4", methods=["attribute_zsl"],
                           select_on="none", backbone="lenet", out_dir=str(tmp_path / "runs"),
                           options={"attribute_zsl": {"attributes": str(tmp_path / "nine.csv")}})
    with pytest.raises(TransferkitError, match=r"method attribute_zsl.*'.*nine.csv' has 9 rows.*target classes "
                                               r"\['9'\] have no row"):
        experiment.run_experiment(cfg, log=lambda *a: None)
    fits = AttributeZeroShot(tiny_net(9), attributes=str(tmp_path / "nine.csv"))
    fits.check_classes([str(i) for i in range(5)], [str(i) for i in range(9)])  # a row for every class id: accepted


def test_a_class_name_listed_twice_is_named_before_classes_without_rows_and_a_dict_names_its_rows(tmp_path,
                                                                                                 monkeypatch):
    from transferkit import experiment
    from transferkit.api import Transfer
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: pytest.fail("a job ran"))
    rows = (DIGIT_ATTRIBUTES * 0.8 + 0.1).tolist()
    twice = [str(i) for i in range(9)] + ["8"]
    cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-4", methods=["attribute_zsl"],
                           select_on="none", backbone="lenet", out_dir=str(tmp_path),
                           options={"attribute_zsl": {"attributes": rows, "class_names": twice}})
    with pytest.raises(TransferkitError, match=r"class_names names \['8'\] more than once"):  # "['9'] have no ..."
        experiment.run_experiment(cfg, log=lambda *a: None)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    g = torch.Generator().manual_seed(0)
    dom = Domain("d", torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 10, words)
    by_class = dict(zip(reversed(words), reversed(rows)))  # keys name the rows: any order
    for name, option in (("attribute_zsl", "attributes"), ("embedding_zsl", "class_embeddings")):
        model = Transfer(name, backbone="lenet", train=TrainConfig(steps=2, eval_every=2), **{option: by_class}).fit(
            source=dom.select_classes(words[:5]), target=dom.select_classes(words[5:]))  # refused: "without names"
        assert model.method_.row_names == list(reversed(words)) and model.method_.output_rows == [4, 3, 2, 1, 0]
    with pytest.raises(TransferkitError, match=r"the classes \['nine'\] have no description"):
        Transfer("attribute_zsl", backbone="lenet", attributes={w: r for w, r in zip(words[:9], rows)}).fit(
            source=dom.select_classes(words[:5]), target=dom)
    with pytest.raises(TransferkitError, match=r"attributes is a dict \{class: row\}, which names the class of each "
                                               r"row: leave class_names out"):
        AttributeZeroShot(tiny_net(10), attributes=by_class, class_names=words)
