"""A second mutation pass over ``transferkit/engine.py``: behaviour the engine tests and the first
pass (tests/test_engine_mutation.py) let through. Covered here: the checks users meet (a method's
unknown stream, a learning rate of 0, SGD without momentum and a negative momentum or weight decay,
unknown samplers and class weights, hooks that are not functions, an empty stream or domain, an
unlabelled or empty validation set); the loss terms a method may return (none, an integer one, a
constant beside a trained one); what a hook sees (the last evaluation's record after a resume, train
mode again after a hook put the method in eval mode); a tie in validation accuracy keeping the earlier
weights; the best step without validation; ``cache_frozen`` and ``channels_last`` off; the size of
the frozen-prefix cache (validation images included); resume: a finished training not caching its
inputs again, another progress setting taken, other method options, another revision of a method or
a network of other classes refused by name, each differing setting named, another run's records in a shared metrics
log left out, tied weights checkpointed, a balanced accuracy kept as checkpointed, the validation
details of the last weights, the seconds of a resumed fit not counted by the engine's next fit;
streams (fewer images than a batch, an empty one, names in the seed, the balanced sampler beside an
unlabelled stream); per-image details withheld for a head scored on other rows; label ranges naming
the labelled streams only; a fit failing before its first step handing the method back reading
images; only the first step's errors renamed as of the image size; the class
weight of an absent class id; content texts of bools, sets and tensors; the scalars written to
TensorBoard. Each test fails when the code its comment names is changed that way.

Judged equivalent, so not tested: ``Stream.indices``' ``start // n == (start + b - 1) // n`` ->
``(start + b) // n`` (the batch that ends an epoch is gathered by the per-epoch path, same indices);
``torch.minimum(within, count - 1)`` dropped (a float64 ``rand`` below 1 times a count never rounds up
to it); ``batch``'s ``[rank::world]`` and ``_cache_inputs``' ``ceil(batch_size / world)`` with one
process; ``_perm``'s cache size; ``_save`` keeping ``state["record"]`` (a resume sets it again from
the history); ``_rescored`` scoring the best weights without ``restore_best`` (``best_eval`` is read
only under it); ``kept_acc`` from ``history[-1]`` (with validation every record has an accuracy).
Left surviving: the ``rng_cuda`` / ``rng_mps`` branches of ``_save`` and ``_load`` (no GPU here:
tests/test_cuda.py covers them on one), the ``world_size() > 1`` branches (torchrun only), the
``device.type`` checks of ``_train_layout`` and of the hand-back to the CPU.
"""

import json

import helpers
import pytest
import torch
from helpers import Interrupt, crash_at, edit_checkpoint, scripted_accuracies
from test_engine_mutation import custom, steps_run

from transferkit.backbones import build_backbone
from transferkit.domain import Domain
from transferkit.engine import Engine, FitResult, Stream, TrainConfig, balanced_class_weights, content_text
from transferkit.errors import TransferkitError
from transferkit.methods import get_method

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw):
    return TrainConfig(**{"steps": 2, "batch_size": 8, "progress": False, **kw})


def linear_probe():
    torch.manual_seed(0)
    return get_method("linear_probe")(build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28))


# kills check_streams: the unknown-stream check dropped
def test_a_method_declaring_an_unknown_stream_is_refused_with_the_known_ones():
    with pytest.raises(TransferkitError, match=r"unknown stream\(s\) \['labelled'\].*source, target, unlabeled"):
        Engine(cfg()).fit(custom(streams=("target", "labelled")), target=helpers.toy_domain(16))


# kills TrainConfig.check: lr > 0 -> lr >= 0
def test_a_learning_rate_of_zero_is_refused():
    with pytest.raises(TransferkitError, match="lr must be a finite number > 0, got 0"):
        TrainConfig(lr=0.0)


# kills TrainConfig.check: momentum/weight_decay >= 0 -> momentum > 0, and the >= 0 check dropped
def test_sgd_without_momentum_is_taken_but_a_negative_momentum_or_weight_decay_is_refused():
    assert TrainConfig(optimizer="sgd", momentum=0.0).momentum == 0.0
    for field in ("momentum", "weight_decay"):
        with pytest.raises(TransferkitError, match=f"{field} must be a finite number >= 0, got -0.1"):
            TrainConfig(**{field: -0.1})


# kills TrainConfig.check: the sampler check and the class_weight check dropped
def test_an_unknown_sampler_or_class_weight_is_refused_with_the_known_ones():
    with pytest.raises(TransferkitError, match="unknown sampler 'random': shuffle .* or balanced"):
        TrainConfig(sampler="random")
    with pytest.raises(TransferkitError, match="unknown class_weight 'auto': null .* or balanced"):
        TrainConfig(class_weight="auto")


# kills Stream.__init__: min(batch_size, len(x)) dropped (a batch repeating images of the next epoch)
def test_a_stream_of_fewer_images_than_a_batch_draws_each_image_once_per_batch():
    s = Stream("target", torch.arange(5).float(), None, batch_size=8, seed=0)
    assert s.batch_size == 5
    for step in range(3):
        assert sorted(s.indices(step).tolist()) == list(range(5))


# kills Stream.__init__: the empty-stream check dropped
def test_an_empty_stream_is_named():
    with pytest.raises(TransferkitError, match="the unlabeled stream is empty"):
        Stream("unlabeled", torch.empty(0, 1, 28, 28), None, batch_size=8, seed=0)


# kills balanced_class_weights: ones_like -> zeros_like (an absent class id weighs 0)
def test_a_class_id_absent_from_the_labels_weighs_one():
    assert balanced_class_weights(torch.tensor([0, 0, 2])).tolist() == pytest.approx([0.75, 1.0, 1.5])


# kills content_text: `not isinstance(value, bool)` dropped (True keyed as 1.0)
def test_content_text_tells_a_bool_from_a_number():
    assert content_text(True) != content_text(1) and content_text(1) == content_text(1.0)


# kills _check_terms: the is_floating_point check dropped
def test_an_integer_loss_term_is_refused_by_name():
    def terms(m, b):
        return {"ce": m.supervised(b.target), "count": torch.tensor(3)}
    with pytest.raises(TransferkitError, match="loss term 'count' must be a scalar floating-point tensor, got a "
                                               "tensor of shape \\(\\), torch.int64"):
        Engine(cfg()).fit(custom(terms), target=helpers.toy_domain(16))


# kills _check_terms: len(terms) > 0 dropped
def test_a_method_returning_no_loss_term_is_named():
    with pytest.raises(TransferkitError, match="method 'custom' returned no loss term"):
        Engine(cfg()).fit(custom(lambda m, b: {}), target=helpers.toy_domain(16))


# kills _check_terms: any(requires_grad) -> all(requires_grad)
def test_a_constant_loss_term_beside_a_trained_one_is_taken():
    def terms(m, b):
        return {"ce": m.supervised(b.target), "prior": torch.tensor(0.5)}
    fit = Engine(cfg(eval_every=2)).fit(custom(terms), target=helpers.toy_domain(16))
    assert fit.history[0]["prior"] == pytest.approx(0.5)


# kills engine_hooks: the callable check dropped
def test_hooks_that_are_not_functions_are_refused_and_none_is_no_hook():
    with pytest.raises(TransferkitError, match="hooks must be a function hook\\(step, state\\) or a tuple"):
        Engine(hooks=[print, 3])
    assert Engine(hooks=None).hooks == ()


# kills Engine.fit: the len(...) > 0 check of a method's streams dropped
def test_an_empty_domain_of_a_stream_is_named_before_training():
    d = helpers.toy_domain(16)
    with pytest.raises(TransferkitError, match="method 'custom' needs a non-empty target domain"):
        Engine(cfg()).fit(custom(), target=d.subset(torch.tensor([], dtype=torch.long)))


# kills Engine.fit: ("val", val) left out of the labelled-domain checks
def test_an_unlabelled_validation_set_is_refused():
    val = Domain.unlabeled("mine", helpers.toy_domain(8, seed=1).images)
    with pytest.raises(TransferkitError, match="its val domain 'mine' has no labels"):
        Engine(cfg()).fit(custom(), target=helpers.toy_domain(16), val=val)


# kills Engine._train: `and len(val)` dropped (an empty validation set scored)
def test_an_empty_validation_set_is_not_scored():
    val = helpers.toy_domain(8, seed=1)
    fit = Engine(cfg(eval_every=1)).fit(custom(), target=helpers.toy_domain(16),
                                        val=val.subset(torch.tensor([], dtype=torch.long)))
    assert fit.best_val_accuracy is None and all("val_accuracy" not in r for r in fit.history)


# kills Engine._train: best_step = state["best_step"] without validation (0 instead of the last step)
def test_without_validation_the_best_step_is_the_last():
    fit = Engine(cfg(steps=3)).fit(custom(), target=helpers.toy_domain(16))
    assert fit.best_step == 3 and fit.best_val_accuracy is None and fit.val_accuracy is None


# kills Engine._train: acc > best_acc -> >= (a tie would take the later weights)
def test_a_tie_in_validation_accuracy_keeps_the_earlier_weights(monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.5, 0.25])
    fit = Engine(cfg(steps=3, eval_every=1, patience=None)).fit(custom(), target=helpers.toy_domain(16),
                                                                 val=helpers.toy_domain(8, seed=1))
    assert fit.best_step == 1 and fit.val_loss == 1.0


# kills Engine._train: modes_stale not set after a hook (a hook's method.eval() kept for the next steps)
def test_training_steps_run_in_train_mode_after_a_hook_that_put_the_method_in_eval_mode():
    modes = []

    def terms(m, b):
        modes.append(m.training)
        return {"ce": m.supervised(b.target)}
    method = custom(terms)
    Engine(cfg(steps=3), hooks=lambda step, state: method.eval()).fit(method, target=helpers.toy_domain(16))
    assert modes == [True, True, True]


# kills Engine._train: state["record"] = None on resume (a hook saw no evaluation before the next one)
def test_a_hook_of_a_resumed_fit_sees_the_last_evaluation_before_the_stop(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    c = cfg(steps=4, eval_every=2, checkpoint_every=2, patience=None)
    with pytest.raises(Interrupt):
        Engine(c, checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(custom(), target=d, val=val)
    seen = []
    Engine(c, checkpoint_dir=tmp_path, hooks=lambda step, state: seen.append((step, state["record"]))).fit(
        custom(), target=d, val=val)
    assert seen[0][0] == 3 and seen[0][1] is not None and seen[0][1]["step"] == 2


# kills Engine.fit: self.resumed_s not reset (a later fit of the same engine counted a resumed one's seconds)
def test_a_fit_from_the_start_does_not_count_the_seconds_of_the_engines_resumed_fit(tmp_path):
    d = helpers.toy_domain(16)
    c = cfg(steps=4, checkpoint_every=2)
    with pytest.raises(Interrupt):
        Engine(c, checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(custom(), target=d)
    edit_checkpoint(tmp_path, lambda meta: meta["state"].update(trained_s=1000.0))
    engine = Engine(c, checkpoint_dir=tmp_path)
    assert engine.fit(custom(), target=d).wall_s >= 1000.0
    assert engine.fit(custom(), target=d, resume=False).wall_s < 1000.0


# kills Engine._train: cache_inputs called for a resumed training that has no step left
def test_a_finished_training_resumed_does_not_cache_its_inputs_again(tmp_path):
    calls = []
    d = helpers.toy_domain(16)
    method = custom()
    method.cache_inputs = lambda inputs: calls.append(sorted(inputs)) or {}
    Engine(cfg(), checkpoint_dir=tmp_path).fit(method, target=d)
    assert calls == [["target"]]
    Engine(cfg(), checkpoint_dir=tmp_path).fit(method, target=d)
    assert calls == [["target"]]


# kills Engine._cacheable_start: cache_frozen ignored
def test_without_cache_frozen_a_linear_probe_trains_from_the_images():
    method = linear_probe()
    seen = []
    Engine(cfg(cache_frozen=False), hooks=lambda step, state: seen.append(method.input_unit)).fit(
        method, target=helpers.toy_domain(16))
    assert seen == [method.net.unit_names[0]] * 2


# kills _train_layout: the channels_last flag ignored
def test_channels_last_false_trains_conv_nets_in_the_default_layout():
    method = get_method("finetune")(helpers.seeded_lenet())
    conv = next(p for p in method.parameters() if p.dim() == 4 and p.shape[1] > 1)
    seen = []
    Engine(cfg(channels_last=False), hooks=lambda step, state: seen.append(conv.is_contiguous())).fit(
        method, target=helpers.toy_domain(16))
    assert seen == [True, True]
    Engine(cfg(), hooks=lambda step, state: seen.append(conv.is_contiguous())).fit(method,
                                                                                  target=helpers.toy_domain(16))
    assert seen[2:] == [False, False]  # the default: channels-last on CPU


# kills Engine._signature: "progress" keyed in the hash (a resume refused after the bar was switched)
def test_a_resume_takes_another_progress_setting(tmp_path):
    d = helpers.toy_domain(16)
    with pytest.raises(Interrupt):
        Engine(cfg(steps=4, checkpoint_every=2), checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(custom(), target=d)
    seen, res = steps_run({"checkpoint_dir": tmp_path}, cfg(steps=4, checkpoint_every=2, progress=None),
                          custom(), target=d)
    assert seen == [3, 4] and res.steps == 4


# kills Engine._signature: the method's revision left out
def test_a_checkpoint_of_another_revision_of_a_method_is_refused(tmp_path):
    d = helpers.toy_domain(16)
    Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)
    newer = custom()
    newer.revision = 2
    with pytest.raises(TransferkitError, match="belongs to a different training \\(revision: None there, 2 now\\)"):
        Engine(cfg(), checkpoint_dir=tmp_path).fit(newer, target=d)


# kills Engine._load: the RuntimeError of load_state_dict not turned into a named error
def test_a_checkpoint_of_a_network_with_other_classes_is_named(tmp_path):
    d = helpers.toy_domain(16)
    Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)
    other = custom()
    other.net = helpers.tiny_net(5)
    with pytest.raises(TransferkitError, match="holds other modules than this method builds .*use a new run dir"):
        Engine(cfg(), checkpoint_dir=tmp_path).fit(other, target=d)


# kills Engine._logged_history: the run filter dropped (another run's records in a shared metrics file)
def test_a_checkpoint_without_history_resumes_with_this_runs_records_only(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    c = cfg(steps=4, eval_every=2, checkpoint_every=2, patience=None)
    mine = {"checkpoint_dir": tmp_path / "ck", "metrics_path": tmp_path / "m.jsonl", "run_name": "r"}
    Engine(cfg(steps=2, eval_every=1), metrics_path=tmp_path / "m.jsonl", run_name="other").fit(  # a record at step 1
        custom(), target=d, val=val)
    with pytest.raises(Interrupt):
        Engine(c, hooks=crash_at(3), **mine).fit(custom(), target=d, val=val)
    edit_checkpoint(tmp_path / "ck", lambda meta: meta.pop("history"))
    res = Engine(c, **mine).fit(custom(), target=d, val=val)
    full = Engine(c).fit(custom(), target=d, val=val)
    assert res.history == full.history


# kills _unshare: shared storages never cloned (safetensors refuses a checkpoint of tied weights)
def test_a_method_with_tied_weights_is_checkpointed_and_resumed(tmp_path):
    d = helpers.toy_domain(16)

    def tied():
        method = custom()
        method.alias = method.net.head  # the same parameters under two names in the state dict
        return method
    with pytest.raises(Interrupt):
        Engine(cfg(steps=4, checkpoint_every=2), checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(tied(), target=d)
    seen, res = steps_run({"checkpoint_dir": tmp_path}, cfg(steps=4, checkpoint_every=2), tied(), target=d)
    assert seen == [3, 4] and json.loads((tmp_path / "last.json").read_text())["state"]["step"] == 4


# kills FitResult.__post_init__: val_accuracy not defaulting to best_val_accuracy
def test_a_fit_results_accuracy_defaults_to_the_best_one():
    assert FitResult(steps=1, best_step=1, best_val_accuracy=0.5, stopped_early=False, wall_s=0.0).val_accuracy == 0.5


# kills Engine._train: the "step" key written to TensorBoard, and the writer left open
def test_tensorboard_gets_each_records_values_but_the_step_and_is_closed(tmp_path, monkeypatch):
    import torch.utils.tensorboard as tb
    scalars, closed = [], []

    class Writer:
        def __init__(self, log_dir):
            assert log_dir == str(tmp_path)

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            closed.append(True)
    monkeypatch.setattr(tb, "SummaryWriter", Writer)
    Engine(cfg(eval_every=2), tensorboard_dir=tmp_path).fit(custom(), target=helpers.toy_domain(16),
                                                            val=helpers.toy_domain(8, seed=1))
    assert sorted(scalars) == [("custom/ce", 2), ("custom/loss", 2), ("custom/lr", 2), ("custom/val_accuracy", 2)]
    assert closed == [True]


# kills Stream.__init__: the stream's name left out of its seed (source and target drawn in the same order)
def test_streams_of_one_seed_but_other_names_draw_other_orders():
    x = torch.arange(20).float()
    source, target = Stream("source", x, None, 20, seed=0), Stream("target", x, None, 20, seed=0)
    assert not torch.equal(source.indices(0), target.indices(0))


# kills Stream.__init__: `and y is not None` dropped (a balanced sampler reading the labels of unlabelled images)
def test_the_balanced_sampler_leaves_an_unlabeled_stream_shuffled():
    d = helpers.toy_domain(16)
    d = d.subset(torch.nonzero(d.labels != 3).flatten()[:10])  # classes of 4, 3 and 3 images
    unlabeled = Domain.unlabeled("u", helpers.toy_domain(12, seed=1).images)
    fit = Engine(cfg(sampler="balanced", eval_every=2)).fit(custom(streams=("target", "unlabeled")), target=d,
                                                            unlabeled=unlabeled)
    assert fit.steps == 2


# kills Engine._load: differ[:5] -> differ[:1] (a refused resume named one difference of several)
def test_a_refused_resume_names_each_setting_that_differs(tmp_path):
    d = helpers.toy_domain(16)
    Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)
    with pytest.raises(TransferkitError, match="train.lr: 0.001 there, 0.01 now; train.steps: 2 there, 3 now"):
        Engine(cfg(lr=0.01, steps=3), checkpoint_dir=tmp_path).fit(custom(), target=d)


# kills Engine._accuracy: `and rows is None` dropped (per-image details of a head scored on other rows)
def test_a_head_scored_on_other_rows_reports_no_per_image_details():
    method = custom()
    method.eval_rows = [0, 1, 2, 3]
    fit = Engine(cfg(eval_every=2)).fit(method, target=helpers.toy_domain(16), val=helpers.toy_domain(8, seed=1))
    assert fit.val_accuracy is not None and fit.val_correct is None and fit.val_loss is None


# kills _labels_named: the unlabeled stream's placeholder labels named among the label ranges
def test_a_training_label_beyond_the_head_names_the_labelled_streams_only():
    unlabeled = Domain.unlabeled("u", helpers.toy_domain(12, seed=1).images)
    with pytest.raises(TransferkitError, match="beyond the classes") as err:
        Engine(cfg()).fit(custom(streams=("target", "unlabeled")), target=helpers.toy_domain(16, classes=5),
                          unlabeled=unlabeled)
    assert "the target domain's go up to 4" in str(err.value) and "unlabeled domain" not in str(err.value)


# kills content_text: a set's items not sorted, a tensor's dtype or shape left out
def test_content_text_keys_sets_by_their_items_and_tensors_by_shape_and_dtype():
    assert content_text({1, 9}) == content_text({9, 1})
    zeros = torch.zeros(4)
    assert content_text(zeros) != content_text(zeros.view(2, 2))
    assert content_text(zeros) != content_text(torch.zeros(4, dtype=torch.int32))


# kills Engine._train: the validation images left out of the size of the frozen-prefix cache
def test_the_frozen_prefix_cache_is_sized_for_the_streams_and_the_validation_images(monkeypatch):
    sizes = []
    sized = Engine._cacheable_start
    monkeypatch.setattr(Engine, "_cacheable_start", lambda self, m, n, *a: sizes.append(n) or sized(self, m, n, *a))
    Engine(cfg()).fit(linear_probe(), target=helpers.toy_domain(16), val=helpers.toy_domain(8, seed=1))
    assert sizes == [24]


# kills size_named: `first and` dropped (an error at a later step renamed as one of the image size)
def test_only_the_first_step_on_images_of_another_size_renames_an_error():
    from transferkit.backbones import from_sequential
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 4))
    pooled = from_sequential(seq, units=[2, 2], input_shape=(1, 28, 28))  # takes any size

    def terms(m, b):
        if b.step == 1:
            raise RuntimeError("a bug of the method at its second step")
        return {"ce": m.supervised(b.target)}
    method = custom(terms)
    method.net = pooled
    with pytest.raises(RuntimeError, match="a bug of the method at its second step") as err:
        Engine(cfg()).fit(method, target=helpers.toy_domain(16).to_format(size=32))
    assert err.type is RuntimeError  # not renamed as an error of the image size


# kills Engine._train: a balanced accuracy read back from a checkpoint rounded as a count's fraction
def test_a_resumed_best_balanced_accuracy_is_kept_as_checkpointed(tmp_path, monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.1, 0.1, 0.1])
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    c = cfg(steps=4, eval_every=2, checkpoint_every=2, patience=None)
    kw = {"checkpoint_dir": tmp_path, "select_metric": "balanced_accuracy"}
    with pytest.raises(Interrupt):
        Engine(c, hooks=crash_at(3), **kw).fit(custom(), target=d, val=val)
    edit_checkpoint(tmp_path, lambda meta: meta["state"].update(best_acc=0.6))  # a mean of recalls, not k / 8
    assert Engine(c, **kw).fit(custom(), target=d, val=val).best_val_accuracy == 0.6


# kills Engine._rescored: the last weights not scored again after a resume (restore_best off)
def test_a_finished_training_resumed_without_restore_best_reports_its_validation_details(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    c = cfg(eval_every=2, restore_best=False)
    first = Engine(c, checkpoint_dir=tmp_path).fit(custom(), target=d, val=val)
    again = Engine(c, checkpoint_dir=tmp_path).fit(custom(), target=d, val=val)
    assert again.val_correct is not None and torch.equal(again.val_correct, first.val_correct)
    assert again.val_loss == pytest.approx(first.val_loss)


# kills Engine._signature: the method's options left out (a checkpoint of other options resumed)
def test_a_checkpoint_of_other_method_options_is_refused_naming_them(tmp_path):
    d = helpers.toy_domain(16)
    Engine(cfg(), checkpoint_dir=tmp_path).fit(get_method("ft_fc")(helpers.seeded_lenet(), n=1), target=d)
    with pytest.raises(TransferkitError, match=r"different training \(options: "):
        Engine(cfg(), checkpoint_dir=tmp_path).fit(get_method("ft_fc")(helpers.seeded_lenet(), n=2), target=d)


# kills Engine.fit: input_unit not reset when a fit fails after the frozen prefix was chosen
def test_a_fit_failing_before_its_first_step_hands_the_method_back_reading_images(tmp_path):
    (tmp_path / "file").write_text("x")
    method = linear_probe()
    with pytest.raises(TransferkitError, match="cannot write TensorBoard logs"):
        Engine(cfg(), tensorboard_dir=tmp_path / "file" / "tb").fit(method, target=helpers.toy_domain(16))
    assert method.input_unit == method.net.unit_names[0]
