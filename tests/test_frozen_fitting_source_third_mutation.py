"""Tests from a third mutation pass over frozen.py, fitting.py and source.py: what else the memo of frozen
activations keys (a blank memo limit, list and dict lengths, dicts by content whatever their order; global
forward pre-hooks: a case added to test_frozen_source_mutation's global-hook test); fitting's source-head rows
without target classes and the hint of a head of unknown classes, the validation classes of a method that trains
a target head, which validation split a zero-shot method keeps (_without_unseen_validation), its candidate
classes after a fit, method_error and _short (an unexpected error's type, a ragged list), zero_shot_options
(clip's class_names that are no list, class names given to a text-embedding method), unsupervised_validation's
spec / origin / name order; the pre-training key's transferkit version. Each test fails when the code it names is
changed in the way its comment says.

Judged equivalent, so not tested: _feed's list header without the type name (a list and a tuple of the
same items keyed alike: a module behaves the same with either); longest_stored returning the stored
tensor without .clone() (predict_logits copies each chunk before the units run on it, so an in-place
first unit cannot reach the entry); pretrain_source always using cfg.pretrain unchanged (ExperimentConfig
already sets each stage's device to `device`).

Killed by slower tests elsewhere, so not tested here: the pinned pretrained: file linked, the finished
pre-training's checkpoint kept, a resumed record that is no object, the repin hints (tests/test_experiment.py),
source_only_model without its copy, the key's seed and training settings (tests/test_experiment_mutation.py);
seen_unseen_accuracy's `partial and v`, its warning about absent classes and report_seen_unseen scoring them
as 0 (tests/test_experiment.py, tests/test_zeroshot.py); method_error without removeprefix (tests/test_plugins.py)
or without _short (tests/test_zeroshot.py); all_source_classes_fields' truth rows (tests/test_experiment.py).

Left surviving: none of the mutants tried. Not tried: the GPU branches (images or activations off the
CPU, the CUDA device name in the pre-training key) and _pin's fallback copy (needs a file system
without hard links)."""

import helpers
import pytest
import torch
from test_frozen_fitting_second_mutation import _key_with
from test_frozen_source_mutation import CFG, QUIET

from transferkit import fitting, source
from transferkit.errors import TransferkitError
from transferkit.frozen import LIMIT_ENV, FrozenMemo
from transferkit.methods import get_method
from transferkit.methods.supervised import SourceOnly


# ---- frozen ----------------------------------------------------------------------------------------
def test_a_blank_memo_limit_in_the_environment_is_the_default(monkeypatch):
    # kills: limit_from_env without .strip() (a blank "  " was refused as no number)
    monkeypatch.setenv(LIMIT_ENV, "  ")
    assert FrozenMemo().limit_mb == 1024


def test_nested_lists_or_dicts_split_otherwise_are_another_key():
    # kills: _feed's list header without len(value) and its dict header without len(value)
    assert _key_with([[1, 2]]) != _key_with([[1], 2])
    assert _key_with({"a": {"b": 1}}) != _key_with({"a": {}, "b": 1})


def test_a_dict_attribute_is_keyed_by_content_whatever_its_insertion_order():
    # kills: _feed's dict branch iterating the dict in insertion order (not sorted): a lost hit
    assert _key_with({"a": 1, "b": 2}) == _key_with({"b": 2, "a": 1})


# ---- fitting ---------------------------------------------------------------------------------------
def test_a_source_head_method_without_target_classes_keeps_every_row():
    # kills: source_head_rows without `or target_classes is None` (Transfer.fit without a target: a TypeError)
    assert fitting.source_head_rows(SourceOnly, ["a", "b"], 2, None) is None
    assert fitting.source_head_rows(SourceOnly, None, 3, None) is None


def test_a_head_of_unknown_classes_of_another_count_names_the_fix_of_the_run_s_kind():
    # kills: source_head_rows' hint chosen by `not network_only` (a run without source images told to give it)
    with pytest.raises(TransferkitError, match="3 outputs.*2 target classes.*give the source domain as well"):
        fitting.source_head_rows(SourceOnly, None, 3, ["a", "b"])
    with pytest.raises(TransferkitError, match="set net.class_names") as e:
        fitting.source_head_rows(SourceOnly, None, 3, ["a", "b"], network_only=True)
    assert "source domain" not in str(e.value)


def test_a_method_that_trains_a_target_head_refuses_a_validation_split_of_the_source_classes():
    # kills: check_selection_classes allowing the source head's classes for every method (not only source-head ones)
    val = helpers.toy_domain(8)
    val.class_names = list("abcd")
    with pytest.raises(TransferkitError, match=r"has classes \['a', 'b', 'c', 'd'\].*finetune is scored on"):
        fitting.check_selection_classes(get_method("finetune"), val, list("abcd"), list("wxyz"))
    fitting.check_selection_classes(SourceOnly, val, list("abcd"), list("wxyz"))  # its source head's classes



class _ZeroShot:
    """What _without_unseen_validation reads of a method: its name and whether it scores class descriptions."""
    name, source_head = "zsl", False


def test_a_zero_shot_validation_split_of_exactly_the_source_s_classes_is_kept():
    # kills: _without_unseen_validation's `present(val) <= seen` made `<` (a split of every seen class dropped)
    source, val = helpers.toy_domain(8), helpers.toy_domain(8, seed=1)
    assert fitting._without_unseen_validation(_ZeroShot(), {"source": source, "val": val})["val"] is val


def test_a_validation_split_of_unseen_classes_is_dropped_only_for_a_zero_shot_method():
    # kills: _without_unseen_validation without its `source_head is not False` guard (a source-head method lost its val)
    source, val = helpers.toy_domain(8, classes=2), helpers.toy_domain(8)  # classes 0, 1 and 0-3
    assert fitting._without_unseen_validation(SourceOnly(helpers.tiny_net(2)), {"source": source, "val": val})["val"] \
        is val
    with pytest.warns(UserWarning, match="zsl: the validation split holds classes the source lacks"):
        assert fitting._without_unseen_validation(_ZeroShot(), {"source": source, "val": val})["val"] is None


def test_a_caption_source_without_its_classes_keeps_the_validation_split():
    # kills: _without_unseen_validation's `"classes" not in provenance: return` dropped (a KeyError)
    source, val = helpers.toy_domain(8, classes=2), helpers.toy_domain(8)
    source.provenance["captions"] = "caps.jsonl"
    assert fitting._without_unseen_validation(_ZeroShot(), {"source": source, "val": val})["val"] is val
    source.provenance["classes"] = ["0", "1"]
    with pytest.warns(UserWarning, match="unseen"):
        assert fitting._without_unseen_validation(_ZeroShot(), {"source": source, "val": val})["val"] is None



def test_method_error_names_the_type_of_an_unexpected_error():
    # kills: method_error without the error's type for errors other than TransferkitError, TypeError and ValueError
    dann = get_method("dann")
    assert str(fitting.method_error(dann, {}, RuntimeError("boom"))) == "method dann: RuntimeError: boom"
    assert str(fitting.method_error(dann, {}, ValueError("bad"))) == "method dann: bad"



def test_method_error_shortens_a_long_option_and_a_ragged_list_is_shown_by_its_length():
    # kills: _short's `len(rows) == 1` dropped (a ragged list's first row taken for every row's length)
    said = str(fitting.method_error(get_method("dann"), {"weights": list(range(100))}, ValueError("bad")))
    assert said == "method dann with options {'weights': <list of 100>}: bad"
    assert repr(fitting._short([[1, 2], [3]] * 20)) == "<list of 40>"
    assert repr(fitting._short([[1, 2]] * 20)) == "<list of 20 × 2>"



def test_a_clip_class_names_option_that_is_no_list_of_names_is_left_to_the_method():
    # kills: zero_shot_options without its "not a sequence of names" return (a string read as letters, a number raised)
    clip = get_method("clip")
    assert fitting.zero_shot_options(clip, {"class_names": "ab"}, None, ["a", "b"]) == {"class_names": "ab"}
    assert fitting.zero_shot_options(clip, {"class_names": 5}, None, ["a", "b"]) == {"class_names": 5}



def test_class_names_given_to_a_text_embedding_method_are_kept():
    # kills: zero_shot_options without `and options.get("class_names") is None` (the given names replaced by
    # the source's and target's, in another order)
    given = {"class_embeddings": "text:hashing", "class_names": ["dog", "cow", "cat"]}
    options = fitting.zero_shot_options(get_method("embedding_zsl"), given, ["cat", "dog"], ["cow", "cat"])
    assert options["class_names"] == ["dog", "cow", "cat"]



class _Candidates:
    """A zero-shot method of unnamed description rows, as fit_for_target reads one."""
    name, source_head, streams, candidates = "zsl", False, ("source",), None
    net = helpers.tiny_net(4)

    @classmethod
    def predicts_with_source_head(cls):
        return False

    def fit_transfer(self, make_engine, **domains):
        return "fitted"

    def set_candidates(self, classes):
        self.candidates = classes


def test_a_zero_shot_method_predicts_among_the_classes_present_in_the_target():
    # kills: fit_for_target without its set_candidates(target.present_classes()) (every class stayed a candidate)
    target = helpers.toy_domain(8)
    target.labels = torch.tensor([1, 3] * 4)
    method = _Candidates()
    assert fitting.fit_for_target(method, None, None, None, source=None, target=target, val=None) == "fitted"
    assert method.candidates == [1, 3]


def _named(name: str, **provenance):
    d = helpers.toy_domain(4)
    d.name, d.provenance = name, provenance
    return d


def test_unsupervised_validation_tells_splits_apart_by_spec_then_by_a_file_origin_then_by_name():
    # kills: unsupervised_validation's base() reading origin before spec, taking any origin (not only folder:/npz:)
    # and ignoring val whenever it matches the unlabelled target, even when the source is that same data set
    src, tgt, val = (_named("svhn/train", spec="svhn", origin="folder:/a"),
                     _named("x/train/unlabeled", spec="mnist", origin="folder:/b"),
                     _named("y/val", spec="mnist", origin="folder:/c"))
    with pytest.warns(UserWarning, match="ignoring the labelled target validation split"):
        assert fitting.unsupervised_validation("dann", src, tgt, val) is None  # the same spec as the target's
    src, tgt, val = (_named("svhn/train", origin="memory"), _named("mnist/train/unlabeled", origin="memory"),
                     _named("mnist/val", origin="memory"))
    with pytest.warns(UserWarning, match="ignoring the labelled target validation split"):
        assert fitting.unsupervised_validation("dann", src, tgt, val) is None  # told apart by name
    same = _named("mnist/val", spec="mnist")
    assert fitting.unsupervised_validation("dann", same, same, same) is same  # the source's own split


# ---- source ----------------------------------------------------------------------------------------
def test_another_transferkit_version_pre_trains_again(tmp_path, monkeypatch):
    # kills: the pre-training cache key without transferkit's __version__ (a network trained by another release reused)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    data = helpers.one_domain_data()
    first = source.pretrain_source(CFG, data, **QUIET)[1]
    assert source.pretrain_source(CFG, data, **QUIET)[1]["cached"]
    monkeypatch.setattr(source, "__version__", "0.0.0+other")
    again = source.pretrain_source(CFG, data, **QUIET)[1]
    assert not again["cached"] and again["path"] != first["path"]
