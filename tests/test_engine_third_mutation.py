"""A third mutation pass over ``transferkit/engine.py``: behaviour the engine tests and the first two
passes (tests/test_engine_mutation.py, tests/test_engine_second_mutation.py) let through.

Covered here: a patience of one evaluation; every field of the records a loss term may not be named
(not only ``loss``); the progress bar (on, off, and by default on a terminal only; a resumed fit's bar
starting at the checkpoint's step; closed); ``Method.after_step`` called once per step; the thread
counts of each run kept in a resumed checkpoint; a checkpoint whose state is only in last.json (older
versions); IndexErrors of a method's own code not renamed as label errors; content texts of objects
with a default repr, of modules of other types, of domains and of lists; modules left out of the param
groups named by their unit, five at most then " ..."; a foreign checkpoint without its settings; a
checkpoint of another optimiser layout; square images of another size told to build the network for
their size; ``Method.prepare`` given the fit's domains; the last record of a step logged twice read back
from the metrics log. Each test fails when the code its comment names is changed that way.

Judged equivalent, so not tested: ``_optimizer`` keeping empty param groups (torch takes an empty group
and steps nothing in it); ``_accuracy``'s ``if len(y) else -1`` (an empty validation set is never
scored; only an empty shard under torchrun reaches it); the resumed ``best_acc`` rounding without
``and len(val)`` (a best accuracy needs a scored, non-empty validation set, and the signature ties the
checkpoint to it); ``fit`` not resetting ``input_cache`` on a failure (``_train``'s ``finally`` does,
and nothing sets it before that block); ``StreamInputs``' ``or 'none'`` (a fit always has a stream).
Left surviving: none of those tried; the GPU and torchrun branches named in the second pass remain
untested here.
"""

import json
import sys

import helpers
import pytest
import torch
from helpers import Interrupt, crash_at, edit_checkpoint, scripted_accuracies
from test_engine_mutation import custom, steps_run
from test_engine_second_mutation import cfg

import transferkit.engine as engine_module
from transferkit.domain import Domain
from transferkit.engine import Engine, content_text, ungrouped_modules
from transferkit.errors import TransferkitError, TransferkitWarning

pytestmark = pytest.mark.usefixtures("one_thread")


class Bar:
    """A stand-in for tqdm that records how the engine made, advanced and closed its bar."""

    made: list = []

    def __init__(self, **kw):
        self.kw, self.n, self.closed = kw, kw.get("initial", 0), False
        Bar.made.append(self)

    def update(self, k):
        self.n += k

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    Bar.made = []
    monkeypatch.setattr(engine_module, "tqdm", Bar)
    return Bar.made


# kills TrainConfig.check: patience >= 1 -> >= 2 (a patience of one evaluation refused)
def test_a_patience_of_one_evaluation_stops_at_the_first_evaluation_without_improvement(monkeypatch):
    scripted_accuracies(monkeypatch, [0.5, 0.25, 0.75])
    fit = Engine(cfg(steps=3, eval_every=1, patience=1)).fit(custom(), target=helpers.toy_domain(16),
                                                            val=helpers.toy_domain(8, seed=1))
    assert fit.steps == 2 and fit.stopped_early and fit.best_step == 1


# kills RECORD_FIELDS: any one of the record's own fields left out (a loss term overwriting it in the records)
@pytest.mark.parametrize("name", ["step", "lr", "val_accuracy", "run", "method"])
def test_a_loss_term_named_as_a_field_of_the_records_is_refused(name):
    with pytest.raises(TransferkitError, match=f"a loss term may not be named '{name}'"):
        Engine(cfg()).fit(custom(lambda m, b: {name: m.supervised(b.target)}), target=helpers.toy_domain(16))


# kills Engine._train: `show` ignoring progress (None read as off, True and False swapped)
def test_the_progress_bar_follows_the_setting_and_by_default_a_terminal(bars, monkeypatch):
    d = helpers.toy_domain(16)
    for progress in (True, False):
        Engine(cfg(progress=progress)).fit(custom(), target=d)
    for tty in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty, raising=False)
        Engine(cfg(progress=None)).fit(custom(), target=d)
    assert len(bars) == 2  # progress True, and a terminal: a bar each; none is made where none shows
    assert all(b.kw["total"] == 2 and b.kw["desc"] == "custom" and b.n == 2 and b.closed for b in bars)


# kills Engine._train: the bar of a resumed fit starting at 0 (not at the checkpoint's step)
def test_the_progress_bar_of_a_resumed_fit_starts_at_the_checkpoints_step(bars, tmp_path):
    d = helpers.toy_domain(16)
    c = cfg(steps=4, checkpoint_every=2, progress=True)
    with pytest.raises(Interrupt):
        Engine(c, checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(custom(), target=d)
    Engine(c, checkpoint_dir=tmp_path).fit(custom(), target=d)
    assert bars[0].closed and bars[1].kw["initial"] == 2 and bars[1].n == 4


# kills Engine._train: method.after_step never called (EMA teachers, CLIP's logit-scale clamp)
def test_after_step_sees_each_steps_batch_once():
    seen = []
    method = custom()

    def after(batch):
        seen.append((batch.step, batch.target[0].shape[0]))
    method.after_step = after
    Engine(cfg(steps=3)).fit(method, target=helpers.toy_domain(16))
    assert seen == [(0, 8), (1, 8), (2, 8)]


# kills Engine._train: the thread counts of the runs before a resume dropped from the checkpoint
def test_a_resumed_checkpoint_keeps_the_thread_counts_of_each_run(tmp_path):
    d = helpers.toy_domain(16)
    c = cfg(steps=4, checkpoint_every=2)
    with pytest.raises(Interrupt):
        Engine(c, checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(custom(), target=d)
    edit_checkpoint(tmp_path, lambda meta: meta["state"].update(threads=[99]))
    Engine(c, checkpoint_dir=tmp_path).fit(custom(), target=d)
    assert json.loads((tmp_path / "last.json").read_text())["state"]["threads"] == sorted({99, torch.get_num_threads()})


# kills Engine._load: a checkpoint without the state in its metadata (older versions) not read from last.json
def test_a_checkpoint_whose_state_is_only_in_last_json_resumes(tmp_path):
    from safetensors.torch import load_file, save_file
    d = helpers.toy_domain(16)
    c = cfg(steps=4, checkpoint_every=2)
    with pytest.raises(Interrupt):
        Engine(c, checkpoint_dir=tmp_path, hooks=crash_at(3)).fit(custom(), target=d)
    path = tmp_path / "last.safetensors"
    save_file(load_file(str(path)), str(path))  # as written before the state travelled in the metadata
    seen, res = steps_run({"checkpoint_dir": tmp_path}, c, custom(), target=d)
    assert seen == [3, 4] and res.steps == 4


# kills _labels_named: every IndexError renamed as a training label beyond the head's classes, or one
# starting "Target " without "out of bounds"
@pytest.mark.parametrize("message", ["index 9 is out of bounds for dimension 0 with size 8", "Target list is empty"])
def test_an_index_error_of_a_methods_own_code_is_not_renamed_as_a_label_error(message):
    def terms(m, b):
        raise IndexError(message)
    with pytest.raises(IndexError, match=message) as err:
        Engine(cfg()).fit(custom(terms), target=helpers.toy_domain(16))
    assert not isinstance(err.value, TransferkitError)


# kills content_text: memory addresses kept in a repr, a module's type left out
def test_content_text_is_stable_across_instances_and_names_a_modules_type():
    class Options:
        pass
    assert content_text(Options()) == content_text(Options()) and " at 0x" not in content_text(Options())
    assert content_text(torch.nn.ReLU()) != content_text(torch.nn.Tanh())


# kills content_text: a domain keyed by its size alone, a list's items sorted (a list is keyed in its order)
def test_content_text_keys_domains_by_their_images_and_lists_in_their_order():
    assert content_text(helpers.toy_domain(8, seed=0)) != content_text(helpers.toy_domain(8, seed=1))
    assert content_text([1, 2]) != content_text([2, 1])


# kills ungrouped_modules: a UnitNet's parameters named "net.units" instead of by their unit
def test_modules_left_out_of_the_param_groups_are_named_by_their_unit():
    method = custom()
    held = {id(p) for p in method.net.head.parameters()}
    assert ungrouped_modules(method, held) == ["net.unit1", "net.unit2"]


# kills Engine._load: no "what differs" for a foreign checkpoint that does not list its settings
def test_a_foreign_checkpoint_without_its_settings_says_what_may_differ(tmp_path):
    d = helpers.toy_domain(16)
    Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)
    edit_checkpoint(tmp_path, lambda meta: meta.update(signature="0" * 16, signed=None))
    with pytest.raises(TransferkitError, match=r"different training \(method, data or config changed\); delete it"):
        Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)


# kills Engine._load: the ValueError of another optimiser layout not turned into a named error
def test_a_checkpoint_of_another_optimiser_layout_is_named(tmp_path):
    d = helpers.toy_domain(16)
    Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)
    edit_checkpoint(tmp_path, lambda meta: meta.update(optim_groups=meta["optim_groups"] * 2))
    with pytest.raises(TransferkitError, match="holds another optimiser layout than this method builds .*new run dir"):
        Engine(cfg(), checkpoint_dir=tmp_path).fit(custom(), target=d)


# kills other_size_of: square images of another size told to be made square (not to build the net for their size)
def test_square_images_of_another_size_are_told_to_build_the_network_for_their_size():
    d = helpers.toy_domain(8)
    big = Domain("big", torch.nn.functional.interpolate(d.images, size=(32, 32)), d.labels, d.class_names)
    with pytest.raises(TransferkitError, match=r"32x32 pixels.*build the backbone for their size") as err:
        Engine(cfg()).fit(custom(), target=big)
    assert "square images" not in str(err.value)


# kills Engine._optimizer: the " ..." after the first five modules left out of the param groups dropped
def test_more_than_five_modules_left_out_of_the_param_groups_are_named_five_and_an_ellipsis():
    method = custom()
    for i in range(6):
        setattr(method, f"extra{i}", torch.nn.Linear(1, 1))
    with pytest.warns(TransferkitWarning, match=r"extra0, extra1, extra2, extra3, extra4, \.\.\. have parameters") as w:
        Engine(cfg())._optimizer(method)
    assert "extra5" not in str(w[0].message)


# kills Engine.fit: method.prepare(given) not called (a method sizing its modules from the domains)
def test_a_fit_prepares_the_method_with_its_domains_before_the_first_step():
    seen = []
    method = custom()
    method.prepare = lambda domains: seen.append(sorted((k, None if d is None else len(d)) for k, d in domains.items()))
    Engine(cfg(), hooks=lambda step, state: seen.append(step)).fit(method, target=helpers.toy_domain(16))
    assert seen == [[("source", None), ("target", 16), ("unlabeled", None)], 1, 2]


# kills Engine._logged_history: the first record of a step logged twice counting (not the last, after a kill)
def test_a_checkpoint_without_history_takes_the_last_record_of_a_step_logged_twice(tmp_path):
    d, val = helpers.toy_domain(16), helpers.toy_domain(8, seed=1)
    c = cfg(steps=4, eval_every=2, checkpoint_every=2, patience=None)
    where = {"checkpoint_dir": tmp_path / "ck", "metrics_path": tmp_path / "m.jsonl"}
    with pytest.raises(Interrupt):
        Engine(c, hooks=crash_at(3), **where).fit(custom(), target=d, val=val)
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    with open(tmp_path / "m.jsonl", "a") as f:  # step 2 logged again by a run killed before its checkpoint
        f.write(json.dumps({**first, "loss": 123.0}) + "\n")
    edit_checkpoint(tmp_path / "ck", lambda meta: meta.pop("history"))
    res = Engine(c, **where).fit(custom(), target=d, val=val)
    assert [r["step"] for r in res.history] == [2, 4] and res.history[0]["loss"] == 123.0
