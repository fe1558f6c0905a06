import copy
import json

import helpers
import pytest
import torch
import torch.nn.functional as F
from helpers import Interrupt, crash_at, edit_checkpoint, scripted_accuracies

from transferkit.backbones import build_backbone
from transferkit.engine import SCHEDULES, Engine, Stream, TrainConfig
from transferkit.errors import JobsFailed, TransferkitError
from transferkit.io import atomic_write, directory_lock, read_jsonl, write_json
from transferkit.jobs import job_result, run_jobs
from transferkit.methods import get_method


def toy_domain(n=96, seed=0, classes=4):
    return helpers.toy_domain(n, seed, classes)


def make(method="finetune", seed=0):
    torch.manual_seed(seed)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    return get_method(method)(net)


weights = helpers.state_copy


def test_training_learns_and_is_deterministic():
    d, val = toy_domain(), toy_domain(seed=1)
    cfg = TrainConfig(steps=40, batch_size=16, eval_every=10, patience=None)
    runs = []
    for _ in range(2):
        m = make()
        res = Engine(cfg, seed=3).fit(m, target=d, val=val)
        runs.append((weights(m), res))
    (w1, r1), (w2, r2) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert r1.best_val_accuracy > 0.5
    m3 = make()
    Engine(cfg, seed=4).fit(m3, target=d, val=val)
    assert any(not torch.equal(w1[k], v) for k, v in weights(m3).items())
    unselected = Engine(cfg, seed=3).fit(make(), target=d)  # no validation: the last step's weights, and its step
    assert unselected.best_step == unselected.steps == 40 and unselected.best_val_accuracy is None


def test_the_logged_loss_is_the_mean_over_the_steps_since_the_last_evaluation_and_survives_a_stop(tmp_path):
    from transferkit.methods.base import Method

    class StepLoss(Method):  # its loss is the step number: the mean of a window is known
        name = "step_loss"

        def trainable_units(self):
            return self.net.unit_names

        def losses(self, batch):
            x, y = batch.target
            ce = F.cross_entropy(self.forward_from_input(x), y)
            return {"ce": ce, "at": ce * 0 + float(batch.step)}

    def method():
        torch.manual_seed(0)
        return StepLoss(build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28))
    cfg = TrainConfig(steps=30, batch_size=16, eval_every=10, checkpoint_every=15, patience=None)
    full = Engine(cfg, seed=0).fit(method(), target=toy_domain())
    assert [r["at"] for r in full.history] == [4.5, 14.5, 24.5]  # the means of steps 0-9, 10-19, 20-29
    assert full.history[0]["loss"] == pytest.approx(full.history[0]["ce"] + 4.5, rel=1e-5)

    with pytest.raises(Interrupt):  # checkpointed at step 15, in the middle of the second window
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(17),)).fit(method(), target=toy_domain())
    resumed = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(method(), target=toy_domain())
    assert resumed.history == full.history


def test_validation_scores_accuracy_or_the_mean_per_class_accuracy_and_checkpoints_keep_which(tmp_path):
    class Fixed(torch.nn.Module):  # predicts class 0 for the first 9 images, class 1 for the last
        name = "fixed"

        def forward_from_input(self, x):
            return torch.stack([x.flatten(1)[:, 0], 1 - x.flatten(1)[:, 0]], 1)
    x = torch.ones(10, 1, 2, 2)
    x[9] = 0
    y = torch.tensor([0] * 8 + [1, 1])  # 8 of class 0, right; 2 of class 1, one right
    acc, (correct, loss) = Engine()._accuracy(Fixed(), x, y)
    assert acc == 0.9 and correct.tolist() == [True] * 8 + [False, True]  # and the per-image details
    logits = Fixed().forward_from_input(x)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    assert Engine(select_metric="balanced_accuracy")._accuracy(Fixed(), x, y)[0] == (1.0 + 0.5) / 2
    with pytest.raises(TransferkitError, match="select_metric must be accuracy or balanced_accuracy .*, got 'f1'"):
        Engine(select_metric="f1")
    d = toy_domain()
    m = make()
    plain = Engine(checkpoint_dir=tmp_path)._signature(m, {"target": d}, d)
    assert Engine(checkpoint_dir=tmp_path, select_metric="accuracy")._signature(m, {"target": d}, d) == plain
    assert Engine(checkpoint_dir=tmp_path, select_metric="balanced_accuracy")._signature(m, {"target": d}, d) != plain


def test_frozen_units_bit_identical_and_prefix_cached():
    d = toy_domain()
    m = make("linear_probe")
    before = weights(m)
    seen = []
    Engine(TrainConfig(steps=30, batch_size=16, eval_every=10), seed=0,
           hooks=(lambda step, state: seen.append(m.input_unit),)).fit(m, target=d, val=d)
    after = weights(m)
    assert set(seen) == {"embedding"}  # trained from the cached embedding
    for k in before:
        if k.startswith("head") or k.startswith("net.head"):
            continue
        assert torch.equal(before[k], after[k]), k  # BatchNorm running stats included
    assert any(not torch.equal(before[k], after[k]) for k in before if "head" in k)


def test_cached_prefix_matches_uncached_training():
    d = toy_domain()
    results = []
    for cache in (True, False):
        m = make("linear_probe")
        Engine(TrainConfig(steps=20, batch_size=16, cache_frozen=cache, patience=None), seed=0).fit(m, target=d)
        results.append(weights(m))
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-5), k


def test_conv_nets_train_channels_last_on_cpu_and_come_back_in_the_default_layout():
    d, val = toy_domain(), toy_domain(seed=1)
    results = []
    for channels_last in (True, False):
        m = make()
        conv2 = m.net.units.conv2[0].weight
        seen = []
        cfg = TrainConfig(steps=10, batch_size=16, eval_every=5, patience=None, optimizer="sgd", lr=0.05,
                          channels_last=channels_last)
        Engine(cfg, seed=0, hooks=(lambda step, state, w=conv2, seen=seen: seen.append(
            w.is_contiguous(memory_format=torch.channels_last)),)).fit(m, target=d, val=val)
        assert set(seen) == {channels_last}
        assert conv2.is_contiguous()  # the default layout again after fit
        results.append(weights(m))
    # the same training up to rounding (SGD: Adam's step amplifies rounding of ~0 gradients); the
    # kernels differ per thread count, and 10 steps grow their rounding to ~2e-4 on one thread
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-3), k


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_multi_tensor_optimizer_step_is_bit_identical_to_the_per_tensor_loop(monkeypatch, optimizer):
    """The engine's ``foreach=True`` update gives exactly PyTorch's CPU default results."""
    d, cfg = toy_domain(), TrainConfig(steps=15, batch_size=16, optimizer=optimizer, weight_decay=1e-3,
                                       schedule="cosine", patience=None)
    results = []
    for forced in (None, False):
        cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer]
        if forced is not None:
            monkeypatch.setattr(torch.optim, cls.__name__,
                                lambda *a, _cls=cls, _fe=forced, **kw: _cls(*a, **{**kw, "foreach": _fe}))
        m = make("finetune")
        opt = Engine(cfg, seed=0)._optimizer(m)
        assert opt.defaults["foreach"] is (True if forced is None else forced)
        Engine(cfg, seed=0).fit(m, target=d)
        results.append(weights(m))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    d, val = toy_domain(), toy_domain(seed=1)
    cfg = TrainConfig(steps=50, batch_size=16, eval_every=10, checkpoint_every=10, patience=None)
    full = make()
    Engine(cfg, seed=0).fit(full, target=d, val=val)

    first = make()
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(27),)).fit(first, target=d, val=val)
    resumed = make(seed=99)  # different init: everything must come from the checkpoint
    res = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, target=d, val=val)
    assert res.steps == 50
    wf, wr = weights(full), weights(resumed)
    for k in wf:
        assert torch.equal(wf[k], wr[k]), k


@pytest.mark.parametrize("crash_at", [12, None])  # mid-training, or a training that had finished (flex's candidates)
def test_a_resumed_fit_keeps_the_validation_details_of_an_uninterrupted_one(tmp_path, crash_at):
    d, val = toy_domain(), toy_domain(seed=1)
    for restore_best in (True, False):
        cfg = TrainConfig(steps=20, batch_size=16, eval_every=5, checkpoint_every=5, patience=None,
                          restore_best=restore_best)
        full = Engine(cfg, seed=0).fit(make(), target=d, val=val)
        ckpt = tmp_path / str(restore_best)
        first = Engine(cfg, seed=0, checkpoint_dir=ckpt, hooks=(helpers.crash_at(crash_at),))
        if crash_at is None:
            first.fit(make(), target=d, val=val)  # its checkpoint of step 20 stays: read back below
        else:
            with pytest.raises(Interrupt):
                first.fit(make(), target=d, val=val)
        resumed = Engine(cfg, seed=0, checkpoint_dir=ckpt).fit(make(seed=99), target=d, val=val)
        assert torch.equal(resumed.val_correct, full.val_correct) and resumed.val_loss == full.val_loss


def test_resumed_history_holds_only_this_trainings_records_once(tmp_path):
    d, val = toy_domain(), toy_domain(seed=1)
    cfg = TrainConfig(steps=25, batch_size=16, eval_every=5, checkpoint_every=10, patience=None)
    metrics = tmp_path / "metrics.jsonl"  # shared by the jobs of one run, as in experiment.run_job
    Engine(cfg, seed=0, metrics_path=metrics, run_name="job-a/main").fit(make(), target=d, val=val)
    full = Engine(cfg, seed=0).fit(make(), target=d, val=val)

    mine = {"checkpoint_dir": tmp_path / "ck", "metrics_path": metrics, "run_name": "job-b/main"}
    with pytest.raises(Interrupt):  # after the record of step 15, before the checkpoint of step 20
        Engine(cfg, seed=0, hooks=(crash_at(17),), **mine).fit(make(), target=d, val=val)
    with pytest.raises(Interrupt):  # resumed from step 10, it logs step 15 again, then checkpoints at 20
        Engine(cfg, seed=0, hooks=(crash_at(22),), **mine).fit(make(seed=98), target=d, val=val)
    res = Engine(cfg, seed=0, **mine).fit(make(seed=99), target=d, val=val)
    assert res.history == full.history and [r["step"] for r in res.history] == [5, 10, 15, 20, 25]
    from transferkit.report import training_curves
    only_b = tmp_path / "b.jsonl"  # the report draws one run per method: job-b's alone, with its repeated step
    only_b.write_text("".join(line for line in metrics.read_text().splitlines(True) if '"job-b/main"' in line))
    assert [r["step"] for r in read_jsonl(only_b)] == [5, 10, 15, 15, 20, 25]
    assert [r["step"] for r in training_curves(only_b)["finetune"]] == [5, 10, 15, 20, 25]


def test_resume_reads_the_state_saved_with_the_weights(tmp_path):
    d = toy_domain()
    cfg = TrainConfig(steps=30, batch_size=16, checkpoint_every=10, patience=None)
    full = make()
    Engine(cfg, seed=0).fit(full, target=d)
    saved = {}

    def stale_json_then_crash(step, state):  # hooks run before that step's checkpoint
        if step == 11:
            saved["step10"] = (tmp_path / "last.json").read_text()
        if step == 25:  # as if killed between the weights and the json of the step-20 save
            (tmp_path / "last.json").write_text(saved["step10"])
            raise Interrupt

    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(stale_json_then_crash,)).fit(make(), target=d)
    resumed = make(seed=99)
    assert Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, target=d).steps == 30
    assert all(torch.equal(v, weights(resumed)[k]) for k, v in weights(full).items())


def test_a_checkpoint_keeps_the_rng_of_the_gpu_it_trains_on(tmp_path, monkeypatch):
    method = make()
    opt = torch.optim.Adam(method.parameters())
    gpu = torch.device("cuda", 1)  # a one-process run on the second GPU
    stored, restored = torch.arange(16, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": stored if device == gpu else None)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    engine = Engine(TrainConfig(steps=1), seed=0, checkpoint_dir=tmp_path)
    engine._save(method, opt, {"step": 1}, None, "sig", [], gpu)
    engine._load(method, opt, "sig", gpu)
    assert len(restored) == 1 and torch.equal(restored[0][0], stored) and restored[0][1] == gpu
    restored.clear()
    engine._load(method, opt, "sig", torch.device("cpu"))
    assert not restored
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    path = tmp_path / "last.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    old = {("rng_cuda.1" if k == "rng_cuda" else k): v for k, v in load_file(str(path)).items()}
    import json
    meta = {"transferkit": json.dumps({k: v for k, v in json.loads(meta["transferkit"]).items()
                                       if k != "world_size"})}  # recorded since 2026-12-07
    save_file(old, str(path), metadata=meta)  # a checkpoint of before 2026-12-01: every GPU's state by index
    engine._load(method, opt, "sig", gpu)
    assert len(restored) == 1 and torch.equal(restored[0][0], stored) and restored[0][1] == gpu
    import transferkit.engine as engine_module
    monkeypatch.setattr(engine_module, "world_size", lambda: 2)  # rank 1 of two: every rank drew on cuda:0 then
    restored.clear()
    engine._load(method, opt, "sig", gpu)
    assert not restored  # rng_cuda.0 is not in this file: rank 0's view of GPU 1 is not restored


def test_resume_refuses_foreign_checkpoint(tmp_path):
    d = toy_domain()
    cfg = TrainConfig(steps=10, batch_size=16, checkpoint_every=5)
    Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(make(), target=d)
    with pytest.raises(TransferkitError, match=r"different training \(train.steps: 10 there, 12 now\); delete it"):
        Engine(TrainConfig(steps=12, batch_size=16), seed=0, checkpoint_dir=tmp_path).fit(make(), target=d)
    with pytest.raises(TransferkitError, match=r"sampler: 'shuffle' there, 'balanced' now; train.steps: 10 there"):
        Engine(TrainConfig(steps=12, batch_size=16, sampler="balanced"), seed=0,
               checkpoint_dir=tmp_path).fit(make(), target=d)
    edited = toy_domain()
    edited.images[64:66] = 1 - edited.images[64:66]  # the signature once summed only the first 64 images
    edited.labels[[63, 64]] = edited.labels[[64, 63]]  # and the labels
    for data in (edited, toy_domain(seed=1)):
        with pytest.raises(TransferkitError, match=r"different training \(target images: '96 \(.{8}\)' there, "
                                                   r"'96 \(.{8}\)' now\)"):
            Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(make(), target=data)


def test_early_stopping_stops_when_validation_stalls():
    d = toy_domain()
    cfg = TrainConfig(steps=200, batch_size=16, lr=1e-12, eval_every=1, patience=2)
    res = Engine(cfg, seed=0).fit(make(), target=d, val=d)
    assert res.stopped_early and res.steps == 3 and res.best_step == 1


def test_validation_labels_the_head_cannot_score_are_a_clear_error():
    d = toy_domain()  # 4 classes
    val = toy_domain(n=16, classes=6, seed=1)
    with pytest.raises(TransferkitError, match="validation labels go up to 5 but .* scores 4 classes"):
        Engine(TrainConfig(steps=2, eval_every=1), seed=0).fit(make(), target=d, val=val)


def test_missing_stream_is_a_clear_error():
    with pytest.raises(TransferkitError, match="needs a non-empty target"):
        Engine(TrainConfig(steps=2)).fit(make(), source=toy_domain())


def test_stream_batches_cover_each_epoch_and_are_reproducible():
    x = torch.arange(10).float()
    s = Stream("source", x, None, batch_size=5, seed=1)
    first_epoch = torch.cat([s.indices(0), s.indices(1)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert torch.equal(Stream("source", x, None, 5, 1).indices(7), s.indices(7))
    assert not torch.equal(Stream("target", x, None, 5, 1).indices(0), s.indices(0))
    assert Stream("t", x, None, batch_size=64, seed=0).batch_size == 10
    for b in (3, 5, 7, 10):  # the within-epoch slice equals the position-by-position definition
        s = Stream("source", x, None, batch_size=b, seed=1)
        for step in range(12):
            pos = torch.arange(step * b, (step + 1) * b)
            expected = torch.stack([s._perm(int(p) // 10)[int(p) % 10] for p in pos])
            assert torch.equal(s.indices(step), expected), (b, step)


def test_a_balanced_stream_draws_each_class_equally_often_and_each_image_of_a_class_alike():
    y = torch.tensor([0] * 90 + [1] * 9 + [2])
    x = torch.arange(100)
    s = Stream("source", x, y, batch_size=50, seed=1, balanced=True)
    drawn = torch.cat([s.indices(t) for t in range(300)])  # 15,000 draws
    share = torch.bincount(y[drawn], minlength=3) / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.02), share
    assert (drawn == 99).float().mean() == pytest.approx(1 / 3, abs=0.02)  # class 2's one image
    per_image = torch.bincount(drawn[y[drawn] == 0], minlength=90)[:90]  # ~56 draws for each of class 0's images
    assert per_image.min() > 25 and per_image.max() < 95, per_image
    assert torch.equal(Stream("source", x, y, 50, 1, balanced=True).indices(7), s.indices(7))  # (seed, name, step)
    assert not torch.equal(Stream("target", x, y, 50, 1, balanced=True).indices(7), s.indices(7))
    assert not torch.equal(s.indices(8), s.indices(7))
    shuffled = torch.cat([Stream("source", x, y, 50, 1).indices(t) for t in range(300)])
    assert (y[shuffled] == 2).float().mean() == pytest.approx(0.01)  # the default: every image once an epoch
    assert torch.equal(Stream("u", x, None, 50, 1, balanced=True).indices(3), Stream("u", x, None, 50, 1).indices(3))
    k_shot = torch.arange(4).repeat_interleave(5)  # equal classes: the shuffled epochs, each image once
    assert torch.equal(Stream("t", x[:20], k_shot, 32, 1, balanced=True).indices(3), Stream("t", x[:20], k_shot, 32,
                                                                                            1).indices(3))
    sharded = [Stream("source", x, y, 50, 1, rank=r, world=2, balanced=True).batch(5)[1] for r in (0, 1)]
    assert torch.equal(torch.cat(sharded).sort().values, s.indices(5).sort().values)  # one global batch, split


def _rare_class_domain():
    """150 toy images of classes 0-2 and 4 of class 3."""
    d = toy_domain(n=200)
    return d.subset(torch.cat([torch.nonzero(d.labels != 3).flatten(), torch.nonzero(d.labels == 3).flatten()[:4]]))


def _recording(record):
    """A method training every unit on the target's cross-entropy that calls ``record(method, batch)`` each step."""
    from transferkit.methods.base import Method

    class Record(Method):
        name = "record"

        def trainable_units(self):
            return self.net.unit_names

        def losses(self, batch):
            record(self, batch)
            return {"ce": self.supervised(batch.target)}
    return Record(make().net)


def test_the_sampler_reaches_the_training_batches_and_keys_checkpoints_only_when_not_the_default(tmp_path):
    from transferkit.engine import keyed_fields
    seen = []
    d = _rare_class_domain()
    for sampler, share in (("shuffle", 4 / 154), ("balanced", 0.25)):
        seen.clear()
        torch.manual_seed(0)
        Engine(TrainConfig(steps=40, batch_size=32, sampler=sampler), seed=0).fit(
            _recording(lambda m, batch: seen.append(batch.target[1])), target=d)
        assert (torch.cat(seen) == 3).float().mean() == pytest.approx(share, abs=0.05), sampler
    with pytest.raises(TransferkitError, match="unknown sampler 'weighted': shuffle .* or balanced"):
        TrainConfig(sampler="weighted")
    assert "sampler" not in keyed_fields(TrainConfig()) and keyed_fields(TrainConfig(sampler="balanced"))["sampler"]
    m = make()
    plain = Engine(TrainConfig(), checkpoint_dir=tmp_path)._signature(m, {"target": d}, d)
    assert Engine(TrainConfig(sampler="balanced"), checkpoint_dir=tmp_path)._signature(m, {"target": d}, d) != plain


def test_balanced_class_weights_and_the_weighted_cross_entropy_the_methods_train_with(tmp_path):
    from transferkit.engine import balanced_class_weights, keyed_fields
    assert balanced_class_weights(torch.tensor([0, 0, 0, 1])).tolist() == pytest.approx([4 / 6, 2.0])
    assert balanced_class_weights(torch.tensor([0, 2, 2])).tolist() == pytest.approx([1.5, 1.0, 0.75])  # 1: absent
    m = make()
    logits, y = torch.randn(5, 4), torch.tensor([0, 0, 0, 1, 1])
    assert torch.equal(m.cross_entropy(logits, y), F.cross_entropy(logits, y))  # no fit's weights: unweighted
    m.class_weights = {"target": torch.tensor([0.5, 3.0])}  # two ids weighed, the other logits' classes 1
    assert m.cross_entropy(logits, y) == pytest.approx(
        float(F.cross_entropy(logits, y, weight=torch.tensor([0.5, 3.0, 1.0, 1.0]))))
    assert m.cross_entropy(logits, y, "source") == pytest.approx(float(F.cross_entropy(logits, y)))
    seen = []
    d = _rare_class_domain()
    record = lambda m, batch: seen.append(dict(m.class_weights))  # noqa: E731
    Engine(TrainConfig(steps=2, batch_size=16, class_weight="balanced"), seed=0).fit(_recording(record), target=d)
    assert seen[0]["target"].tolist() == pytest.approx([154 / (4 * 50)] * 3 + [154 / 16])
    seen.clear()
    Engine(TrainConfig(steps=2, batch_size=16), seed=0).fit(_recording(record), target=d)
    assert seen[0] == {}
    with pytest.raises(TransferkitError, match="unknown class_weight 'inverse': null .* or balanced"):
        TrainConfig(class_weight="inverse")
    assert "class_weight" not in keyed_fields(TrainConfig())
    plain = Engine(TrainConfig(), checkpoint_dir=tmp_path)._signature(m, {"target": d}, d)
    assert Engine(TrainConfig(class_weight="balanced"), checkpoint_dir=tmp_path)._signature(m, {"target": d}, d) \
        != plain


def test_a_train_configs_text_at_the_new_fields_defaults_is_the_text_it_had_before_them():
    from transferkit.engine import content_text
    # the repr of 89759cd (before sampler and class_weight), which keys benchmark jobs (bench uda_tune)
    before = ("TrainConfig(steps=10, batch_size=64, lr=0.001, optimizer='adam', momentum=0.9, weight_decay=0.0, "
              "schedule='constant', eval_every=50, patience=4, restore_best=True, checkpoint_every=100, "
              "cache_frozen=True, cache_limit_mb=2048, progress=None, device='cpu', amp=False, channels_last=True)")
    assert repr(TrainConfig(steps=10)) == before and content_text({"train": TrainConfig(steps=10)}) == \
        "{'train':" + before + "}"
    assert repr(TrainConfig(steps=10, class_weight="balanced")).endswith("channels_last=True, class_weight='balanced')")


def test_dann_schedule_values():
    assert SCHEDULES["dann"](0.0) == 1.0
    assert SCHEDULES["dann"](1.0) == pytest.approx(11 ** -0.75)
    assert SCHEDULES["cosine"](1.0) == pytest.approx(0.0)


def test_config_validation():
    with pytest.raises(TransferkitError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(TransferkitError, match="steps"):
        TrainConfig(steps=0)


def test_a_torn_metrics_line_costs_only_itself_and_arrays_are_written_as_lists(tmp_path):
    import numpy as np

    from transferkit.io import append_jsonl
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 10})
    with open(path, "a") as f:
        f.write('{"step": 2')  # killed in the middle of a line
    append_jsonl(path, {"step": 20, "acc": torch.tensor([0.5, 0.25]), "n": np.array([1, 2]), "x": np.float32(1.5)})
    assert read_jsonl(path) == [{"step": 10}, {"step": 20, "acc": [0.5, 0.25], "n": [1, 2], "x": 1.5}]
    write_json(tmp_path / "row.json", {"a": torch.tensor(2.0), "b": torch.zeros(2)})


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"a": 1})

    def broken(p):
        p.write_text('{"a": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_job_result_computes_once_and_reads_the_finished_job_back(tmp_path):
    calls, logged = [], []

    def compute():
        calls.append(1)
        return {"accuracy": 0.5, "seed": len(calls)}
    path = tmp_path / "jobs" / "a.json"
    first = job_result(path, compute, logged.append)
    second = job_result(path, compute, logged.append)
    assert first == second == {"accuracy": 0.5, "seed": 1}
    assert len(calls) == 1 and logged == [first]  # logged when computed, not when read back


def test_run_jobs_in_two_processes_keeps_order_and_skips_finished_jobs(tmp_path):
    import operator
    from functools import partial

    paths = [tmp_path / "jobs" / f"{i}.json" for i in range(4)]
    write_json(paths[1], {"value": -1})  # finished by an earlier, interrupted run
    logged = []
    jobs = [(p, partial(dict, value=i * i)) for i, p in enumerate(paths)]
    assert run_jobs(jobs, workers=2, log=logged.append) == [{"value": 0}, {"value": -1}, {"value": 4}, {"value": 9}]
    assert sorted(r["value"] for r in logged) == [0, 4, 9]  # only the computed jobs
    assert all(p.exists() for p in paths)
    assert run_jobs([(paths[2], partial(operator.truediv, 1, 0))], workers=2) == [{"value": 4}]  # never computed


def test_a_failing_job_does_not_lose_the_results_of_jobs_running_beside_it(tmp_path):
    import operator
    from functools import partial

    from helpers import slow_dict
    paths = [tmp_path / f"{i}.json" for i in range(2)]
    jobs = [(paths[0], partial(operator.truediv, 1, 0)), (paths[1], partial(slow_dict, 2.0, value=1))]
    with pytest.raises(JobsFailed, match=r"1 of 2 job\(s\) failed: 0 \(ZeroDivisionError: division by zero\)"):
        run_jobs(jobs, workers=2)
    assert not paths[0].exists() and json.loads(paths[1].read_text()) == {"value": 1}


def test_a_broken_job_file_is_named_and_the_finished_ones_are_kept(tmp_path):
    from transferkit.io import read_job
    good, torn = tmp_path / "a.json", tmp_path / "b.json"
    write_json(good, {"value": 1})
    torn.write_text('{"value": ')  # as a full disk leaves it
    with pytest.raises(TransferkitError, match=r"job result .*b.json is unreadable .*delete it to run that job again"):
        run_jobs([(good, lambda: {"value": 2}), (torn, lambda: {"value": 3})])
    assert json.loads(good.read_text()) == {"value": 1}
    with pytest.raises(TransferkitError, match=r"a.json is not a result row \(it lacks \['seed'\]\)"):
        read_job(good, ("value", "seed"))


def test_prefix_cache_falls_back_to_images_when_over_the_memory_limit():
    d = toy_domain()
    seen = []
    m = make("linear_probe")
    cfg = TrainConfig(steps=4, batch_size=16, eval_every=2, cache_limit_mb=0)
    Engine(cfg, seed=0, hooks=(lambda step, state: seen.append(m.input_unit),)).fit(m, target=d, val=d)
    assert set(seen) == {"conv1"}  # every stream and the validation set start from the images


def test_atomic_write_removes_temporary_files_of_killed_writers(tmp_path):
    import os
    import time
    path = tmp_path / "cache.npz"
    old, fresh = tmp_path / ".cache.npz.abc.tmp", tmp_path / ".cache.npz.def.tmp"
    old.write_text("killed an hour ago")
    fresh.write_text("another writer, now")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    atomic_write(path, lambda p: p.write_text("done"))
    assert path.read_text() == "done" and not old.exists() and fresh.exists()


def test_cache_inputs_sees_whole_streams_and_batch_indices_address_their_rows():
    seen = {}

    class Recorder(get_method("finetune")):
        def cache_inputs(self, inputs):
            seen["inputs"] = {k: v.clone() for k, v in inputs.items()}
            return {"row_ids": torch.arange(len(inputs["target"]))} if inputs else {}

        def losses(self, batch):
            x, _ = batch.target
            assert torch.equal(seen["inputs"]["target"][batch.indices["target"]], x)
            assert torch.equal(self.cached_rows("row_ids", batch.indices["target"], None), batch.indices["target"])
            seen["steps"] = seen.get("steps", 0) + 1
            return super().losses(batch)

    method = Recorder(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    Engine(TrainConfig(steps=4, batch_size=10, eval_every=4, progress=False)).fit(method, target=toy_domain(25))
    assert seen["steps"] == 4 and len(seen["inputs"]["target"]) == 25 and method.input_cache == {}
    seen.clear()  # 2 steps of 10 draw fewer than the 25 images: caching would cost more than it saves

    class NotCached(Recorder):
        def losses(self, batch):
            assert self.input_cache == {}
            return get_method("finetune").losses(self, batch)

    Engine(TrainConfig(steps=2, batch_size=10, eval_every=2, progress=False)).fit(NotCached(method.net),
                                                                                  target=toy_domain(25))
    assert seen["inputs"] == {}


def test_cache_inputs_reading_a_stream_that_is_not_cached_gets_an_error_saying_why():
    class Reads(get_method("finetune")):
        stream = "target"

        def cache_inputs(self, inputs):
            return {"x": inputs[self.stream]}

    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    short = TrainConfig(steps=2, batch_size=10, eval_every=2, progress=False)
    with pytest.raises(TransferkitError, match="'target' is not cached: the budget of 2 steps does not draw"):
        Engine(short).fit(Reads(net), target=toy_domain(25))
    Reads.stream = "source"
    with pytest.raises(TransferkitError, match="no 'source' stream \\(streams: target\\)"):
        Engine(short).fit(Reads(net), target=toy_domain(25))
    Reads.stream = "target"
    method = Reads(net)
    Engine(TrainConfig(steps=3, batch_size=10, eval_every=3, progress=False)).fit(method, target=toy_domain(25))
    assert method.input_cache == {}  # cached during the fit, dropped at its end


def test_resume_refuses_a_checkpoint_of_other_method_options_but_not_of_other_worker_counts(tmp_path):
    d = toy_domain()
    cfg = TrainConfig(steps=10, batch_size=16, checkpoint_every=5, progress=False)
    net = lambda: build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)  # noqa: E731
    Engine(cfg, seed=0, checkpoint_dir=tmp_path / "a").fit(get_method("ft_fc")(net(), n=1), target=d)
    with pytest.raises(TransferkitError, match="different training"):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path / "a").fit(get_method("ft_fc")(net(), n=2), target=d)
    Engine(cfg, seed=0, checkpoint_dir=tmp_path / "a").fit(get_method("ft_fc")(net(), n=1), target=d)
    flex = get_method("flex")
    sig = [Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(flex(net(), **o), {"target": d}, None)
           for o in ({"workers": 1}, {"workers": 2, "keep_candidates": True}, {"image_units": ["stn"]})]
    assert sig[0] == sig[1] != sig[2]
    signature = lambda m: Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(m, {"target": d}, None)  # noqa: E731
    assert signature(get_method("ft_fc")(net(), 2)) == signature(get_method("ft_fc")(net(), n=2))  # by name
    assert signature(get_method("adda")(net(), weight=2)) == signature(get_method("adda")(net(), weight=2.0))
    assert signature(get_method("adda_encoder")(net(), weight=1.0)) == signature(get_method("adda_encoder")(net()))
    ml = get_method("multilayer_adv")  # hidden: 500 was its default until 2026-11-29 (now None = 500 for fc)
    assert signature(ml(net(), hidden=500)) == signature(ml(net())) != signature(ml(net(), hidden=400))
    assert signature(ml(net(), hidden=500, discriminator="conv")) != signature(ml(net(), discriminator="conv"))
    default = Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(get_method("ft_fc")(net()), {"target": d}, None)
    assert default == Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(
        get_method("ft_fc")(net(), n=None), {"target": d}, None)  # a default written out changes nothing
    teacher = [net()]
    distill = get_method("distill")
    same = Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(distill(net(), teacher=teacher), {"source": d}, None)
    assert same == Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(
        distill(net(), teacher=[copy.deepcopy(teacher[0])]), {"source": d}, None)
    with torch.no_grad():
        teacher[0].head.weight.add_(1)
    assert same != Engine(cfg, seed=0, checkpoint_dir=tmp_path)._signature(
        distill(net(), teacher=teacher), {"source": d}, None)


def test_a_directory_lock_refuses_a_second_live_process_and_takes_over_a_dead_ones(tmp_path):
    import os
    import subprocess
    import sys

    hold = ("import sys, time; from transferkit.io import directory_lock\n"
            "with directory_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TransferkitError, match=f"in use by another transferkit process \\(pid {holder.pid}\\)"):
            with directory_lock(tmp_path):
                pass
    finally:
        holder.kill()  # killed before it could remove its lock
        holder.wait()
    assert (tmp_path / ".lock").read_text() == str(holder.pid)
    with directory_lock(tmp_path) as lock:
        assert lock.read_text() == str(os.getpid())
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no temporary file left
    assert not (tmp_path / ".lock").exists()


def test_a_waiting_lock_waits_for_its_holder_and_is_freed_when_the_holder_dies(tmp_path):
    import subprocess
    import sys
    import threading
    import time

    from transferkit.io import waiting_lock
    hold = ("import sys, time; from transferkit.io import waiting_lock\n"
            "with waiting_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "x.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        killer = threading.Timer(1.0, holder.kill)  # the holder dies while we wait
        killer.start()
        t0 = time.perf_counter()
        with waiting_lock(tmp_path / "x.lock"):
            waited = time.perf_counter() - t0
        killer.join()
        assert waited >= 0.9
    finally:
        holder.kill()
        holder.wait()
    t0 = time.perf_counter()
    with waiting_lock(tmp_path / "x.lock"):  # free: taken at once
        assert time.perf_counter() - t0 < 0.5


def test_a_file_system_without_flock_falls_back_to_the_pid_file_lock(tmp_path, monkeypatch):
    import errno
    import os

    from transferkit import io

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(io.fcntl, "flock", no_flock)
    before = len(os.listdir("/proc/self/fd"))
    with directory_lock(tmp_path) as lock:
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists() and len(os.listdir("/proc/self/fd")) == before  # no descriptor left open


def test_a_held_lock_is_refused_even_when_its_file_names_a_dead_process(tmp_path):
    """Two processes that found the same stale lock could both take it over when the file's
    process id decided: the second removed the lock the first had just created. The
    kernel's lock decides now, whatever id a process read from the file."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hold = ("import sys, time; from pathlib import Path; from transferkit.io import directory_lock\n"
            "with directory_lock(sys.argv[1]) as lock:\n"
            "    lock.write_text(sys.argv[2]); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path), str(dead.pid)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TransferkitError, match="in use by another transferkit process"):
            with directory_lock(tmp_path):
                pass
        assert (tmp_path / ".lock").exists()  # the holder's lock stays in place
    finally:
        holder.kill()
        holder.wait()


def test_restore_best_gives_the_weights_of_the_best_evaluation(monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.9, 0.3, 0.2])
    snaps = {}
    torch.manual_seed(0)
    m = get_method("finetune")(build_backbone("lenet", 4))
    fit = Engine(TrainConfig(steps=8, eval_every=2, batch_size=16, patience=None),
                 hooks=(lambda step, state: snaps.__setitem__(step, helpers.state_copy(m)),)
                 ).fit(m, target=helpers.toy_domain(), val=helpers.toy_domain(seed=1))
    assert fit.best_step == 4
    assert fit.val_loss == 2.0 and bool(fit.val_correct.all())  # the scoring of the kept (step 4) weights
    final = helpers.state_copy(m)
    assert all(torch.equal(final[k], snaps[4][k]) for k in final)
    assert any(not torch.equal(final[k], snaps[8][k]) for k in final)


def test_a_resumed_fit_keeps_the_best_weights_of_before_the_crash(tmp_path, monkeypatch):
    state = scripted_accuracies(monkeypatch, [0.5, 0.9, 0.3, 0.2, 0.0])
    cfg = TrainConfig(steps=8, eval_every=2, checkpoint_every=2, batch_size=16, patience=None)
    data = dict(target=helpers.toy_domain(), val=helpers.toy_domain(seed=1))
    torch.manual_seed(0)
    full = get_method("finetune")(build_backbone("lenet", 4))
    Engine(cfg, seed=0).fit(full, **data)

    class Crash(Exception):
        pass

    def crash(step, st):
        if step == 5:
            raise Crash
    state["i"] = 0
    torch.manual_seed(0)
    with pytest.raises(Crash):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash,)).fit(
            get_method("finetune")(build_backbone("lenet", 4)), **data)
    resumed = get_method("finetune")(build_backbone("lenet", 4))  # the best (step 4) is before the crash
    fit = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, **data)
    assert fit.val_loss == 5.0 and state["i"] == 5  # that evaluation's details, not checkpointed: scored again
    a, b = helpers.state_copy(full), helpers.state_copy(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoints_float32_best_accuracy_is_read_as_its_counts_exact_fraction(tmp_path, monkeypatch):
    import numpy as np
    exact = 17 / 60  # float32 rounds it down: an evaluation of the same count would look better
    assert float(np.float32(exact)) < exact
    scripted_accuracies(monkeypatch, [0.1, exact, exact, 0.05, 0.0])  # the last: the best weights scored again
    cfg = TrainConfig(steps=8, eval_every=2, checkpoint_every=2, batch_size=16, patience=None)
    data = dict(target=helpers.toy_domain(), val=helpers.toy_domain(n=60, seed=1))
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(5),)).fit(make(), **data)

    def float32_best(meta):
        assert meta["state"]["best_acc"] == exact and meta["state"]["best_step"] == 4
        meta["state"]["best_acc"] = float(np.float32(exact))  # as written before accuracies were exact
    edit_checkpoint(tmp_path, float32_best)
    fit = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(make(), **data)
    assert fit.best_step == 4 and fit.best_val_accuracy == exact  # the same count at step 6 is no improvement


def test_logged_learning_rate_is_the_scheduled_rate_not_a_slowed_groups():
    cfg = TrainConfig(steps=4, batch_size=16, eval_every=2, lr=1e-3, schedule="cosine", progress=False)
    method = get_method("ft_slow")(build_backbone("lenet", 4), backbone_lr_mult=0.1)  # the backbone group is first
    fit = Engine(cfg, seed=0).fit(method, target=toy_domain(32))
    assert [r["lr"] for r in fit.history] == pytest.approx([1e-3 * SCHEDULES["cosine"](p) for p in (0.25, 0.75)])
    slowed = get_method("ft_slow")(build_backbone("lenet", 4), backbone_lr_mult=0.1)
    slowed.param_groups = lambda: [dict(g, lr_mult=0.2 * g.get("lr_mult", 1.0)) for g in  # every group slowed
                                   type(slowed).param_groups(slowed)]
    fit = Engine(cfg, seed=0).fit(slowed, target=toy_domain(32))
    assert [r["lr"] for r in fit.history] == pytest.approx([1e-3 * SCHEDULES["cosine"](p) for p in (0.25, 0.75)])


def test_learning_rate_multipliers_and_optimizer_settings_reach_the_optimizer():
    opt = Engine(TrainConfig(lr=1e-3))._optimizer(get_method("ft_slow")(build_backbone("lenet", 4),
                                                                         backbone_lr_mult=0.1))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])
    opt = Engine(TrainConfig(lr=1e-3))._optimizer(get_method("adda")(build_backbone("lenet", 4)))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-4, 2e-4])  # ADDA's lower rate
    assert [g["betas"] for g in opt.param_groups] == [(0.5, 0.999)] * 2  # and ADDA's Adam beta1 (its code)
    assert "beta1" not in opt.param_groups[0]
    sgd = Engine(TrainConfig(optimizer="sgd"))._optimizer(get_method("adda")(build_backbone("lenet", 4)))
    assert "betas" not in sgd.param_groups[0] and "beta1" not in sgd.param_groups[0]  # SGD has no beta1
    net = build_backbone("lenet", 4)
    sgd = Engine(TrainConfig(optimizer="sgd", momentum=0.9, weight_decay=1e-3))._optimizer(get_method("finetune")(net))
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-3
    for momentum in (1.0, 2.0):  # 2 ran, its loss to 5e6 (a trial)
        with pytest.raises(TransferkitError, match=f"momentum must be below 1 .*got {momentum}"):
            TrainConfig(optimizer="sgd", momentum=momentum)
    adam = Engine(TrainConfig(weight_decay=1e-3))._optimizer(get_method("finetune")(net))
    assert adam.param_groups[0]["weight_decay"] == 1e-3 and adam.param_groups[0]["betas"] == (0.9, 0.999)


def test_fit_reports_the_validation_accuracy_of_the_weights_it_returns():
    from helpers import toy_domain

    from transferkit.backbones import build_backbone
    from transferkit.methods import get_method
    from transferkit.methods.flex import val_accuracy
    for restore in (True, False):
        torch.manual_seed(0)
        method = get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
        cfg = TrainConfig(steps=8, batch_size=16, eval_every=2, patience=None, progress=False, restore_best=restore,
                          lr=3e-2)
        fit = Engine(cfg, seed=0).fit(method, target=toy_domain(), val=toy_domain(seed=1))
        accs = [r["val_accuracy"] for r in fit.history]
        assert fit.best_val_accuracy == max(accs)
        assert fit.val_accuracy == (max(accs) if restore else accs[-1])
        assert val_accuracy(method.net, toy_domain(seed=1)) == pytest.approx(fit.val_accuracy)
        assert float(fit.val_correct.double().mean()) == pytest.approx(fit.val_accuracy)


def test_an_interrupt_stops_the_worker_pool_at_once_and_keeps_the_results_back(tmp_path):
    from transferkit.jobs import map_jobs
    done = []

    def on_done(i, result):
        done.append(i)
        if len(done) == 1:
            raise KeyboardInterrupt  # as Ctrl-C while the first result is written
    jobs = [(1.5, str(tmp_path / f"started{i}")) for i in range(8)]
    from helpers import slow_marked
    with pytest.raises(KeyboardInterrupt):
        map_jobs(slow_marked, jobs, 2, on_done)
    started = len(list(tmp_path.glob("started*")))
    assert done and started <= 4, (done, started)  # not all 8 queued jobs run before the interrupt is raised


def test_a_worker_killed_by_the_system_is_named_and_the_results_that_came_back_are_kept():
    from helpers import killed_after

    from transferkit.errors import WorkerDied
    from transferkit.jobs import map_jobs
    done = {}
    with pytest.raises(WorkerDied, match=r"a worker process died before its job ended \(killed by the system, e\.g\. "
                                         r"for memory.*the jobs that had finished are kept: resume"):
        map_jobs(killed_after, [(0.0, "first"), (3.0, None), (30.0, "never")], 2, done.__setitem__)
    assert done == {0: "first"}


def _failing_init(threads, parent):
    raise RuntimeError("no worker")


def test_a_worker_that_fails_to_start_is_not_reported_as_killed(monkeypatch):
    from transferkit import jobs
    from transferkit.errors import WorkerDied
    monkeypatch.setattr(jobs, "_worker_init", _failing_init)
    with pytest.raises(WorkerDied, match="a worker process failed to start or exited") as info:
        jobs.map_jobs(max, [(1, 2), (3, 4)], 2, lambda i, r: None)
    assert "killed" not in str(info.value)


def test_worker_died_keeps_its_message_through_a_pickle_round_trip():
    import pickle

    from transferkit.errors import WorkerDied
    e = WorkerDied("a worker process died")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is WorkerDied and back.reason == e.reason and str(back) == str(e)


@pytest.mark.parametrize("method", ["ft_fc1", "linear_probe"])
def test_a_resumed_fit_caches_the_frozen_prefix_of_the_checkpoints_weights(tmp_path, method):
    d, val = toy_domain(96), toy_domain(96, seed=1)
    cfg = TrainConfig(steps=30, batch_size=16, eval_every=10, checkpoint_every=10, patience=None, restore_best=False,
                      lr=1e-2)
    full = make(method)
    uninterrupted = Engine(cfg, seed=0).fit(full, target=d, val=val)

    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(15),)).fit(make(method), target=d, val=val)
    resumed = make(method, seed=99)  # other frozen units: they must come from the checkpoint before caching
    res = Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, target=d, val=val)
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    # no metrics log: the history and the kept weights' accuracy travel in the checkpoint
    assert res.history == uninterrupted.history and res.val_accuracy == uninterrupted.val_accuracy


def test_engine_fit_names_images_of_the_wrong_channels_before_training():
    d = toy_domain()
    with pytest.raises(TransferkitError, match=r"the target domain 'toy' has images of 3 channel\(s\), the "
                                               r"network takes 1"):
        Engine(TrainConfig(steps=2)).fit(make(), target=d.to_format(channels=3))
    with pytest.raises(TransferkitError, match=r"the val domain 'toy' has images of 3 channel\(s\)"):
        Engine(TrainConfig(steps=2)).fit(make(), target=d, val=d.to_format(channels=3))
    torch.manual_seed(0)  # another image size is the network's business (a ResNet pools globally)
    resnet = get_method("finetune")(build_backbone("resnet18", num_classes=4, in_channels=1, image_size=32))
    assert Engine(TrainConfig(steps=1, batch_size=4)).fit(resnet, target=d).steps == 1


def test_a_failed_fit_leaves_the_method_reading_images_in_the_default_layout():
    method = make("ft_fc1")

    def crash(step, state):
        assert method.input_unit != method.net.unit_names[0]  # training on the cached prefix
        raise Interrupt
    with pytest.raises(Interrupt):
        Engine(TrainConfig(steps=5, batch_size=8), seed=0, hooks=(crash,)).fit(method, target=toy_domain())
    assert method.input_unit == method.net.unit_names[0]
    assert all(p.is_contiguous() for p in method.parameters())
    assert method(toy_domain(4).images).shape == (4, 4)


def test_images_of_another_size_than_the_network_was_built_for_are_named():
    d = toy_domain(16)
    big = d.to_format(size=32)
    with pytest.raises(TransferkitError, match=r"the target domain 'toy' has images of 32x32 pixels, the network "
                                               r"was built for 28x28 and cannot take them .*Domain.to_format"):
        Engine(TrainConfig(steps=2)).fit(make("ft_fc1"), target=big)  # before its prefix is cached
    from transferkit.domain import Domain
    wide = Domain("wide", torch.nn.functional.pad(d.images, (0, 8)), d.labels, d.class_names)  # 28x36
    with pytest.raises(TransferkitError, match=r"28x36 pixels.*cannot take them .*: resize them to square images "
                                               r"\(Domain.to_format\(size=...\)\): the built-in backbones take N x N"):
        Engine(TrainConfig(steps=2)).fit(make("ft_fc1"), target=wide)
    torch.manual_seed(0)  # a ResNet takes them, DSN's private encoders (sized for 28x28) do not
    resnet = build_backbone("resnet18", num_classes=4, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match=r"method 'dsn': the source domain 'toy' has images of 32x32 pixels.*"
                                               r"its own modules were sized for that"):
        Engine(TrainConfig(steps=1, batch_size=4)).fit(get_method("dsn")(resnet), source=big, unlabeled=big)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # other errors are not renamed
        bad = get_method("dsn")(build_backbone("resnet18", num_classes=4, in_channels=1, image_size=28))
        bad.decoder.net[0] = torch.nn.Linear(3, 3)  # a bug of the method at its first step, right size
        Engine(TrainConfig(steps=1, batch_size=4)).fit(bad, source=d, unlabeled=d)


def test_the_first_optimizer_of_a_process_imports_nothing_after_preload_lazy_imports():
    # torch imports torch._dynamo (1.5-2 s) on a process's first optimizer: a benchmark's first timed
    # job would pay for it, unless the import is done before the clock starts
    import subprocess
    import sys
    code = ("import sys, torch\nfrom transferkit.runtime import preload_lazy_imports\n"
            "cold = 'torch._dynamo' in sys.modules\npreload_lazy_imports()\nbefore = set(sys.modules)\n"
            "torch.optim.Adam([torch.zeros(1, requires_grad=True)], foreach=True)\n"
            "print(cold, sorted(m for m in set(sys.modules) - before if m.startswith('torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split(None, 1) == ["False", "[]\n"], out.stdout + out.stderr


def test_worker_processes_have_the_lazy_imports_before_their_first_job():
    from helpers import module_loaded

    from transferkit.jobs import map_jobs
    seen = {}
    map_jobs(module_loaded, [("torch._dynamo",), ("torch._dynamo",)], 2, seen.__setitem__)
    assert seen == {0: True, 1: True}


def test_atomic_write_flushes_the_directory_after_the_rename(tmp_path, monkeypatch):
    from transferkit import io
    flushed = []
    monkeypatch.setattr(io, "_fsync_dir", lambda d: flushed.append((d, (d / "r.json").read_text())))
    io.atomic_write(tmp_path / "r.json", lambda p: p.write_text("new"))
    assert flushed == [(tmp_path, "new")]  # the directory entry is flushed once the new file is in place


def _contract_method(losses=None, groups=None, streams=("target",)):
    import torch.nn.functional as F

    from transferkit.methods.base import Method

    class Custom(Method):
        name = "custom"

        def losses(self, batch):
            x, y = batch.target
            return losses(self, x, y) if losses else {"ce": F.cross_entropy(self.forward_from_input(x), y)}

        def param_groups(self):
            return groups(self) if groups else super().param_groups()

    Custom.streams = streams
    return Custom(helpers.tiny_net(4))


def test_the_method_contract_is_checked_by_name():
    import torch.nn.functional as F
    d, cfg = helpers.toy_domain(32), TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False)
    bad = [(dict(losses=lambda m, x, y: {"ce": F.cross_entropy(m.forward_from_input(x), y), "off": 0.0}),
            "loss term 'off' must be a scalar floating-point tensor, got float"),
           (dict(losses=lambda m, x, y: {"ce": F.cross_entropy(m.forward_from_input(x), y, reduction="none")}),
            "must be a scalar"),
           (dict(losses=lambda m, x, y: {"loss": F.cross_entropy(m.forward_from_input(x), y)}),
            "may not be named 'loss'"),
           (dict(losses=lambda m, x, y: {"ce": F.cross_entropy(m.forward_from_input(x), y).detach()}),
            "no loss term has a gradient"),
           (dict(groups=lambda m: [{"params": m.net.parameters()}, {"params": [m.net.head.weight]}]),
            r"param groups 0 and 1"),
           (dict(streams=()), "must declare its streams")]
    for options, words in bad:
        with pytest.raises(TransferkitError, match=words):
            Engine(cfg).fit(_contract_method(**options), target=d)


def test_a_parameter_listed_twice_steps_once_and_lr_mult_survives_a_second_fit():
    d, cfg = helpers.toy_domain(32), TrainConfig(steps=3, batch_size=8, optimizer="sgd", lr=0.1, progress=False)
    stored = []

    def once(m):
        if not stored:
            stored.append({"params": [m.net.head.weight, m.net.head.weight], "lr_mult": 0.5})
        return stored

    method = _contract_method(groups=once)
    twice = copy.deepcopy(method)
    torch.manual_seed(0)
    Engine(cfg, seed=0).fit(method, target=d)
    assert stored[0]["lr_mult"] == 0.5  # the method's own group is left as it was
    reference = _contract_method(groups=lambda m: [{"params": [m.net.head.weight], "lr_mult": 0.5}])
    reference.load_state_dict(twice.state_dict())
    torch.manual_seed(0)
    Engine(cfg, seed=0).fit(reference, target=d)
    assert torch.equal(method.net.head.weight, reference.net.head.weight)


def test_a_fit_refused_before_training_hands_the_method_back_as_it_was(tmp_path):
    d = helpers.toy_domain(32)
    method = get_method("ft_unit")(helpers.seeded_lenet(), unit="fc1")
    ckpt = tmp_path / "ck"
    Engine(TrainConfig(steps=2, batch_size=8, progress=False), checkpoint_dir=ckpt).fit(method, target=d)
    other = get_method("ft_unit")(helpers.seeded_lenet(), unit="fc1")
    with pytest.raises(TransferkitError, match="belongs to a different training"):
        Engine(TrainConfig(steps=3, batch_size=8, progress=False), checkpoint_dir=ckpt).fit(other, target=d)
    assert other.input_unit == other.net.unit_names[0]
    assert all(p.is_contiguous() for p in other.parameters())
    (tmp_path / "file").write_text("x")
    pytest.importorskip("torch.utils.tensorboard", reason="the tensorboard extra: without it no logs are written")
    with pytest.raises(TransferkitError, match="cannot write TensorBoard logs"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False),
               tensorboard_dir=tmp_path / "file" / "tb").fit(get_method("finetune")(helpers.seeded_lenet()), target=d)


def test_a_fixed_network_beside_net_stays_in_eval_mode_while_training():
    import torch.nn.functional as F

    def kd(m, x, y):
        with torch.no_grad():
            t = m.teacher(x)
        return {"kd": F.kl_div(F.log_softmax(m.forward_from_input(x), 1), F.softmax(t, 1), reduction="batchmean")}

    method = _contract_method(losses=kd)
    method.teacher = copy.deepcopy(method.net).requires_grad_(False)
    seen = []
    Engine(TrainConfig(steps=2, batch_size=8, progress=False, cache_frozen=False),
           hooks=(lambda step, state: seen.append(method.teacher.training),)).fit(method, target=helpers.toy_domain(32))
    assert seen == [False, False]


def test_a_streams_global_batch_is_a_multiple_of_the_process_count():
    x = torch.arange(15).float()
    assert Stream("t", x, None, 32, 0, rank=0, world=2).batch_size == 16  # 15 images: 8 per rank, not 8 and 7
    assert Stream("t", x, None, 5, 0, rank=1, world=2).batch_size == 6
    assert Stream("t", x, None, 5, 0).batch_size == 5
    a, b = (Stream("t", x, None, 5, 0, rank=r, world=2).batch(3)[1] for r in (0, 1))
    assert len(a) == len(b) == 3 and torch.equal(torch.cat([a, b]).sort().values,
                                                 Stream("t", x, None, 6, 0).indices(3).sort().values)


def test_the_frozen_prefix_cache_is_sized_by_the_images_it_holds_not_the_size_the_net_was_built_for():
    import math

    import torch.nn.functional as F

    from transferkit.domain import Domain
    torch.manual_seed(0)
    net = build_backbone("resnet18", num_classes=4, in_channels=1, image_size=28)  # global pooling: any size
    method = get_method("ft_unit")(net, unit="layer2")  # the cache holds layer1's output
    d = helpers.toy_domain(64)
    big = Domain("big", F.interpolate(d.images, size=112), d.labels, d.class_names)
    declared = len(big) * math.prod(net.unit_output_shapes()["layer1"]) * 4 / 2**20  # 12.25 MB at 28 px
    engine = Engine(TrainConfig(steps=1, batch_size=8, cache_limit_mb=math.ceil(2 * declared), progress=False))
    sample = big.images[:1]
    assert engine._cacheable_start(method, len(big), sample) == "layer2"  # sized at 28 px: cached
    assert engine._cacheable_start(method, len(big), sample, other_size="112 px") == "stem"  # 16x that: not cached


def test_infinite_rates_are_refused_and_a_diverged_loss_names_its_terms(recwarn):
    for field in ("lr", "momentum", "weight_decay"):
        with pytest.raises(TransferkitError, match=f"{field} must be a finite number"):
            TrainConfig(**{field: float("inf")})
    with pytest.raises(TransferkitError, match=r"loss became (inf|nan) at step 1 \(terms \{'ce_target': (inf|nan)\}\); "
                                               r"lower"):
        Engine(TrainConfig(steps=3, batch_size=8, lr=1e15, optimizer="sgd")).fit(make(), target=toy_domain())
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]  # float(loss) warned of a tensor with grad


def test_a_network_diverged_by_its_last_update_is_named_not_scored_as_class_0():
    d = toy_domain()  # a finite loss at step 1; its update makes every output NaN: argmax would read class 0
    class_0 = d.subset(torch.nonzero(d.labels == 0).flatten())  # every NaN row counted as class 0: accuracy 1
    with pytest.raises(TransferkitError, match=r"method 'coral': its outputs on the validation images are not "
                                               r"finite \(NaN or infinite\): the training diverged"):
        Engine(TrainConfig(steps=1, batch_size=16, lr=1e6, eval_every=1)).fit(
            make("coral"), source=d, unlabeled=d, val=class_0)


def test_training_labels_beyond_the_head_and_float64_networks_are_named():
    d = toy_domain(classes=4)
    for name in ("finetune", "dann"):
        method = get_method(name)(build_backbone("convnet4", num_classes=2, in_channels=1, image_size=28))
        with pytest.raises(TransferkitError, match=rf"method '{name}': a training label is beyond the classes its "
                                                   rf"loss scores \(Target \d is out of bounds.*the (target|source) "
                                                   rf"domain's go up to 3, the network head scores 2"):
            Engine(TrainConfig(steps=1, batch_size=8)).fit(method, source=d, target=d, unlabeled=d)
    method = make("mmd").double()
    with pytest.raises(TransferkitError, match=r"method 'mmd': its network's parameters are float64; training takes "
                                               r"float32 parameters"):
        Engine(TrainConfig(steps=1, batch_size=8)).fit(method, source=d, unlabeled=d)


def _ungrouped_warnings(fit) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return [str(w.message) for w in caught if "no param group holds" in str(w.message)]


def test_a_module_left_out_of_param_groups_is_named_once_per_fit():
    import torch.nn as nn

    from transferkit.methods.base import Method

    class Forgets(Method):  # a discriminator that param_groups (the default: the net's units) leaves out
        name = "forgets"
        streams = ("target",)

        def __init__(self, net):
            super().__init__(net)
            self.disc = nn.Linear(net.embed_dim, 1)

        def losses(self, batch):
            x, y = batch.target
            f = self.net.forward_features(x)
            return {"ce": F.cross_entropy(self.net.head(f), y), "d": self.disc(f).mean()}

    method = Forgets(helpers.tiny_net(4))
    said = _ungrouped_warnings(lambda: Engine(TrainConfig(steps=3, eval_every=1, batch_size=8)).fit(
        method, target=toy_domain(16), val=toy_domain(8, seed=1)))
    assert said == ["method 'forgets': disc has parameters with requires_grad that no param group holds, so they "
                    "are never trained: list them in param_groups(), or, if they are fixed, set "
                    "requires_grad_(False) on them"]
    method.frozen_children = ("disc",)  # declared fixed (AdaptationMethod's contract): left out on purpose
    assert _ungrouped_warnings(lambda: Engine(TrainConfig(steps=1, eval_every=1, batch_size=8)).fit(
        method, target=toy_domain(16))) == []


def test_no_built_in_method_leaves_a_trainable_parameter_out_of_its_param_groups():
    """Every built-in method either trains a module or sets its parameters requires_grad=False
    (a fixed source encoder, a teacher): the warning above never fires for them."""
    from transferkit.api import Transfer
    from transferkit.clip import CaptionedDomain
    from transferkit.methods.base import METHODS, load_outside_families
    from transferkit.represent import CatTwoStage, Distill, cat_network

    load_outside_families()
    options = {"attribute_zsl": {"attributes": torch.eye(4)}}
    own = {"cat_two_stage", "distill", "clip", "ft_unit"}
    tiny = TrainConfig(steps=2, eval_every=2, batch_size=8, progress=False)
    toy, net = helpers.toy_domain, helpers.tiny_net
    src, tgt, val = toy(32, 0, name="src"), toy(32, 1, name="tgt"), toy(16, 2, name="val")
    for name in sorted(set(METHODS) - own) + ["ft_unit:conv1"]:
        model = Transfer(name, backbone="lenet", train=tiny, pretrain=tiny, **options.get(name, {}))
        said = _ungrouped_warnings(lambda m=model: m.fit(target=tgt, source=src, unlabeled=tgt, val=val))
        assert not said, (name, said)
    captioned = CaptionedDomain(src, [f"a {src.class_names[y]}" for y in src.labels.tolist()])
    assert not _ungrouped_warnings(lambda: Transfer("clip", backbone="lenet", captions=captioned.captions,
                                                    text_encoder="hashing", train=tiny, pretrain=tiny).fit(
        source=captioned.domain))
    engine = lambda tag, config=None: Engine(tiny)  # noqa: E731
    assert not _ungrouped_warnings(lambda: CatTwoStage(cat_network([net(4), net(4)])).fit_transfer(
        engine, target=toy(16), val=toy(8, seed=1)))
    assert not _ungrouped_warnings(lambda: Distill(net(4), teacher=[net(4), net(4)]).fit_transfer(
        engine, source=toy(16), val=toy(8, seed=1)))


def test_a_job_s_error_is_its_own_but_a_full_disk_or_memory_stops_every_job():
    import errno

    from transferkit.jobs import JobFailure, guarded

    def raising(e):
        raise e
    failure = guarded(raising, ValueError("a plugin's bug"))
    assert isinstance(failure, JobFailure) and failure.error == "ValueError: a plugin's bug"
    assert "Traceback" in failure.traceback
    for e in (OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EROFS, "Read-only file system"),
              MemoryError(), BrokenPipeError()):  # every later job would meet it too
        with pytest.raises(type(e)):
            guarded(raising, e)
    assert isinstance(guarded(raising, OSError(errno.ENOENT, "a plugin's missing file")), JobFailure)


def test_json_files_hold_null_for_nan_and_infinity_so_strict_parsers_read_them(tmp_path):
    import numpy as np
    path = write_json(tmp_path / "e.json", {"ci95": float("nan"), "rows": [{"a": float("inf"), "b": 0.5}],
                                            "np": np.float64("nan"), "t": torch.tensor([1.0, float("nan")])})
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert strict == {"ci95": None, "rows": [{"a": None, "b": 0.5}], "np": None, "t": [1.0, None]}
