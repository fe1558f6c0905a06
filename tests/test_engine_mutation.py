"""Engine behaviour the other tests left open, each test written against a mutation of
``transferkit/engine.py`` that they let pass (epochs, schedules, patience, checkpoints at the
end of a training, resume, signatures, caches)."""

import json
import math

import helpers
import pytest
import torch
import torch.nn.functional as F
from helpers import Interrupt, crash_at, edit_checkpoint, scripted_accuracies

from transferkit.backbones import build_backbone
from transferkit.engine import SCHEDULES, Engine, Stream, TrainConfig, content_text
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.methods.base import Method


def custom(losses=None, streams=("target",), name="custom"):
    """A method training every unit of a tiny net; ``losses(method, batch)`` (default: the
    target's cross-entropy)."""

    class Custom(Method):
        def losses(self, batch):
            if losses is not None:
                return losses(self, batch)
            return {"ce": self.supervised(batch.target)}
    Custom.name, Custom.streams = name, streams
    torch.manual_seed(0)
    return Custom(helpers.tiny_net(4))


def noisy(method, batch):
    """Cross-entropy of the target's images with noise drawn from torch's generator (as dropout draws)."""
    x, y = batch.target
    return {"ce": F.cross_entropy(method.forward_from_input(x + 0.3 * torch.randn_like(x)), y)}


def steps_run(engine_kwargs, cfg, method, **data):
    """The steps a fit runs (as its hooks see them) and its result."""
    seen = []
    hooks = (*engine_kwargs.pop("hooks", ()), lambda step, state: seen.append(step))
    res = Engine(cfg, seed=0, hooks=hooks, **engine_kwargs).fit(method, **data)
    return seen, res


def test_each_epoch_of_a_stream_is_its_own_permutation():
    x = torch.arange(10).float()
    s = Stream("source", x, None, batch_size=10, seed=1)
    epochs = [s.indices(e) for e in range(4)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(10))
    assert len({tuple(e.tolist()) for e in epochs}) == 4  # reshuffled every epoch, not the first order again


def test_class_weights_are_given_for_labelled_streams_only_beside_an_unlabeled_stream():
    seen = []

    def record(method, batch):
        seen.append(dict(method.class_weights))
        return {"ce": method.supervised(batch.target)}
    d = helpers.toy_domain(32, classes=4)
    d = d.subset(torch.nonzero(d.labels != 3).flatten()[:20])  # classes 0-2 only
    Engine(TrainConfig(steps=2, batch_size=8, class_weight="balanced", progress=False), seed=0).fit(
        custom(record, streams=("target", "unlabeled")), target=d, unlabeled=helpers.toy_domain(16, seed=1))
    counts = torch.bincount(d.labels).tolist()
    assert set(seen[0]) == {"target"} and counts == [7, 7, 6]
    assert seen[0]["target"].tolist() == pytest.approx([20 / (3 * c) for c in counts])


def test_every_param_group_trains_at_its_own_rate_times_the_schedule(monkeypatch):
    opts = []
    build = Engine._optimizer
    monkeypatch.setattr(Engine, "_optimizer", lambda self, m: opts.append(build(self, m)) or opts[-1])
    rates = []
    cfg = TrainConfig(steps=4, batch_size=16, lr=1e-3, schedule="cosine", progress=False)
    method = get_method("ft_slow")(build_backbone("lenet", 4), backbone_lr_mult=0.1)
    Engine(cfg, seed=0, hooks=(lambda step, state: rates.append([g["lr"] for g in opts[0].param_groups]),)).fit(
        method, target=helpers.toy_domain(32))
    # hooks run after the step: the rates that step trained at, step t at progress t / steps
    expected = [[1e-4 * SCHEDULES["cosine"](t / 4), 1e-3 * SCHEDULES["cosine"](t / 4)] for t in range(4)]
    assert rates == [pytest.approx(r) for r in expected]


def test_batch_progress_is_the_step_over_the_budget():
    seen = []

    def record(method, batch):
        seen.append((batch.step, batch.progress))
        return {"ce": method.supervised(batch.target)}
    Engine(TrainConfig(steps=4, batch_size=8, progress=False), seed=0).fit(custom(record),
                                                                           target=helpers.toy_domain(16))
    assert seen == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75)]


def test_a_method_whose_parameters_all_are_fixed_is_refused_by_name():
    method = custom()
    method.trainable_units = lambda: []  # prepare freezes every unit
    with pytest.raises(TransferkitError, match="method 'custom' has no trainable parameter"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False)).fit(method, target=helpers.toy_domain(16))


def test_a_resumed_fit_checks_the_loss_terms_at_its_first_step(tmp_path):
    d = helpers.toy_domain(32)
    cfg = TrainConfig(steps=6, batch_size=8, checkpoint_every=2, progress=False)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(3),)).fit(custom(), target=d)
    per_image = custom(lambda m, b: {"ce": F.cross_entropy(m.forward_from_input(b.target[0]), b.target[1],
                                                           reduction="none")})
    with pytest.raises(TransferkitError, match="loss term 'ce' must be a scalar"):  # resumed at step 2
        Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(per_image, target=d)


def test_the_last_step_is_evaluated_when_the_budget_is_not_a_multiple_of_eval_every():
    fit = Engine(TrainConfig(steps=5, batch_size=8, eval_every=2, patience=None, progress=False), seed=0).fit(
        custom(), target=helpers.toy_domain(16), val=helpers.toy_domain(8, seed=1))
    assert [r["step"] for r in fit.history] == [2, 4, 5] and all("val_accuracy" in r for r in fit.history)


def test_patience_counts_evaluations_since_the_last_improvement(monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.4, 0.6, 0.5, 0.7, 0.6, 0.5, 0.9, 0.9, 0.9])
    cfg = TrainConfig(steps=10, batch_size=8, eval_every=1, patience=2, progress=False)
    fit = Engine(cfg, seed=0).fit(custom(), target=helpers.toy_domain(16), val=helpers.toy_domain(8, seed=1))
    assert fit.steps == 7 and fit.best_step == 5 and fit.stopped_early  # one bad evaluation at a time was forgiven


def test_patience_running_out_at_the_last_step_is_no_early_stop(monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.4, 0.4])
    cfg = TrainConfig(steps=3, batch_size=8, eval_every=1, patience=2, progress=False)
    fit = Engine(cfg, seed=0).fit(custom(), target=helpers.toy_domain(16), val=helpers.toy_domain(8, seed=1))
    assert fit.steps == 3 and fit.best_step == 1 and not fit.stopped_early


def test_a_finished_or_early_stopped_training_is_checkpointed_at_its_end_and_resumes_without_a_step(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    finished = TrainConfig(steps=5, batch_size=8, checkpoint_every=2, eval_every=2, patience=None, progress=False)
    stalled = TrainConfig(steps=20, batch_size=8, lr=1e-12, eval_every=1, patience=2, checkpoint_every=2,
                          progress=False)
    for cfg, at in ((finished, 5), (stalled, 3)):
        ckpt = tmp_path / str(at)
        first, res = steps_run({"checkpoint_dir": ckpt}, cfg, custom(), target=d, val=val)
        assert first[-1] == at and res.steps == at
        assert json.loads((ckpt / "last.json").read_text())["state"]["step"] == at
        again, resumed = steps_run({"checkpoint_dir": ckpt}, cfg, custom(), target=d, val=val)
        assert again == [] and resumed.steps == at and resumed.stopped_early == res.stopped_early == (at == 3)


def test_a_resumed_fit_draws_the_random_numbers_an_uninterrupted_one_draws(tmp_path):
    d = helpers.toy_domain(32)
    cfg = TrainConfig(steps=6, batch_size=8, checkpoint_every=2, progress=False)
    full = custom(noisy)
    Engine(cfg, seed=0).fit(full, target=d)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(5),)).fit(custom(noisy), target=d)
    resumed = custom(noisy)
    Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, target=d)
    a, b = helpers.state_copy(full), helpers.state_copy(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_engine_seed_alone_fixes_the_random_numbers_a_training_draws():
    d = helpers.toy_domain(32)
    cfg = TrainConfig(steps=3, batch_size=8, progress=False)
    runs = []
    for before in (1, 2):  # the generator in another state when the fit starts
        method = custom(noisy)
        torch.manual_seed(before)
        Engine(cfg, seed=5).fit(method, target=d)
        runs.append(helpers.state_copy(method))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_a_checkpoint_without_history_resumes_with_the_logged_records_up_to_its_step(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    cfg = TrainConfig(steps=8, batch_size=8, eval_every=2, checkpoint_every=2, patience=None, progress=False)
    full = Engine(cfg, seed=0).fit(custom(), target=d, val=val)
    mine = {"checkpoint_dir": tmp_path / "ck", "metrics_path": tmp_path / "m.jsonl", "run_name": "r"}
    with pytest.raises(Interrupt):  # checkpointed at step 4, with the record of step 4
        Engine(cfg, seed=0, hooks=(crash_at(5),), **mine).fit(custom(), target=d, val=val)
    edit_checkpoint(tmp_path / "ck", lambda meta: meta.pop("history"))  # as written before it held the history
    res = Engine(cfg, seed=0, **mine).fit(custom(), target=d, val=val)
    assert [r["step"] for r in res.history] == [2, 4, 6, 8] and res.history == full.history


def test_a_resumed_fit_counts_the_seconds_trained_before_the_stop(tmp_path):
    d = helpers.toy_domain(16)
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2, progress=False)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(3),)).fit(custom(), target=d)
    # as if the first two steps had taken that long
    edit_checkpoint(tmp_path, lambda meta: meta["state"].update(trained_s=1000.0))
    res = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(custom(), target=d)
    assert res.wall_s >= 1000.0
    assert json.loads((tmp_path / "last.json").read_text())["state"]["trained_s"] >= 1000.0


def test_resume_takes_another_checkpoint_interval_but_refuses_another_validation_set(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    cfg = TrainConfig(steps=6, batch_size=8, checkpoint_every=2, progress=False)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(3),)).fit(custom(), target=d, val=val)
    other = TrainConfig(steps=6, batch_size=8, checkpoint_every=5, progress=False)
    with pytest.raises(TransferkitError, match=r"different training \(val images: "):
        Engine(other, seed=0, checkpoint_dir=tmp_path).fit(custom(), target=d, val=helpers.toy_domain(8, seed=2))
    seen, res = steps_run({"checkpoint_dir": tmp_path}, other, custom(), target=d, val=val)
    assert seen == [3, 4, 5, 6] and res.steps == 6  # resumed from step 2


def test_content_text_of_a_dict_does_not_depend_on_the_order_of_its_keys():
    assert content_text({"a": 1, "b": [2, 3]}) == content_text({"b": [2, 3], "a": 1})


def test_cache_inputs_gets_a_stream_the_budget_draws_exactly_once():
    seen = {}

    class Recorder(Method):
        name = "recorder"

        def cache_inputs(self, inputs):
            seen["streams"] = sorted(inputs)
            return {}

        def losses(self, batch):
            return {"ce": self.supervised(batch.target)}
    torch.manual_seed(0)
    Engine(TrainConfig(steps=5, batch_size=5, progress=False)).fit(Recorder(helpers.tiny_net(4)),
                                                                   target=helpers.toy_domain(25))
    assert seen["streams"] == ["target"]  # 5 steps of 5 images draw all 25


def test_the_frozen_prefix_cache_limit_counts_four_bytes_per_value():
    torch.manual_seed(0)
    method = get_method("linear_probe")(build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28))
    per_image = method.net.embed_dim * 4  # float32 embeddings
    n = math.ceil(2 * 2**20 / per_image)  # 2 MB of them
    engine = Engine(TrainConfig(steps=1, cache_limit_mb=1))
    sample = helpers.toy_domain(1).images
    assert engine._cacheable_start(method, n, sample) == method.net.unit_names[0]  # over 1 MB: from the images
    assert Engine(TrainConfig(steps=1, cache_limit_mb=3))._cacheable_start(method, n, sample) == "embedding"


def test_a_validation_label_one_past_the_heads_classes_is_named():
    val = helpers.toy_domain(16, classes=5, seed=1)  # labels 0-4, a head of 4 classes
    with pytest.raises(TransferkitError, match="validation labels go up to 4 but 'custom' scores 4 classes"):
        Engine(TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False)).fit(
            custom(), target=helpers.toy_domain(16), val=val)


def test_a_fit_hands_the_method_back_in_eval_mode_reading_images():
    torch.manual_seed(0)
    method = get_method("linear_probe")(build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28))
    seen = []
    Engine(TrainConfig(steps=2, batch_size=8, progress=False),
           hooks=(lambda step, state: seen.append((method.input_unit, method.training)),)).fit(
        method, target=helpers.toy_domain(16))
    assert seen[0] == ("embedding", True)  # trained from the cached embedding, in train mode
    assert method.input_unit == method.net.unit_names[0] and not method.training
    assert not any(m.training for m in method.modules())


def test_resume_false_trains_from_the_start_beside_a_checkpoint(tmp_path):
    d = helpers.toy_domain(16)
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2, progress=False)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(3),)).fit(custom(), target=d)
    seen = []
    Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(lambda step, state: seen.append(step),)).fit(
        custom(), target=d, resume=False)
    assert seen == [1, 2, 3, 4]


def test_eval_every_and_the_other_intervals_must_be_positive():
    for field in ("eval_every", "checkpoint_every", "batch_size", "steps"):
        with pytest.raises(TransferkitError, match=f"{field} must be >= 1, got 0"):
            TrainConfig(**{field: 0})
    with pytest.raises(TransferkitError, match="patience must be >= 1 or None, got 0"):
        TrainConfig(patience=0)


def test_a_resumed_fit_ends_with_the_last_weights_and_history_of_an_uninterrupted_one(tmp_path):
    # restore_best=False: the weights after the checkpoint count (a best evaluation before it would hide them)
    d, val = helpers.toy_domain(32), helpers.toy_domain(16, seed=1)
    cfg = TrainConfig(steps=8, batch_size=8, eval_every=2, checkpoint_every=4, patience=None, restore_best=False,
                      progress=False)
    full = custom()
    uninterrupted = Engine(cfg, seed=0).fit(full, target=d, val=val)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(6),)).fit(custom(), target=d, val=val)
    resumed = custom()
    with torch.no_grad():
        for p in resumed.parameters():  # other weights: everything must come from the checkpoint
            p.add_(1.0)
    res = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, target=d, val=val)
    a, b = helpers.state_copy(full), helpers.state_copy(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert res.history == uninterrupted.history and res.steps == 8


def test_without_restore_best_the_fit_reports_the_last_evaluations_accuracy(monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.9, 0.3])
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=2, patience=None, restore_best=False, progress=False)
    fit = Engine(cfg, seed=0).fit(custom(), target=helpers.toy_domain(16), val=helpers.toy_domain(8, seed=1))
    assert fit.val_accuracy == 0.3 and fit.best_val_accuracy == 0.9 and fit.best_step == 4
    assert fit.val_loss == 3.0  # the details of the last evaluation, whose weights the fit returns
