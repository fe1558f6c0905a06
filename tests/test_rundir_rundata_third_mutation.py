"""Tests from a third mutation pass over rundir.py and rundata.py (the earlier ones: test_rundir_rundata_mutation.py
and test_rundir_rundata_second_mutation.py): the group ids in ``data.json``'s digests, a first-format record's
refusal, unlabelled images dropped under rows that never read them, the options ``_options_since`` names, a row
digested with the stages at cpu, fields added to the config since a row, a stored config without ``device``; and of a
run's data, how domains are loaded (progress bar, colour, unlabelled), the channels and class lists chosen, a source
of one class, numbered classes on both sides, a test set cut from the source images, the overlaps of unlabelled
images, a ``source: null`` run's channels and provenance, an empty pool in ``shared_images``, a row's test classes,
a grouped test set, class lists over val and test parts without those classes, the label subsets with a config's
unlabelled images or a ratio, and the one-class hint on numbered classes. Each test fails when the code it names is
changed in the way its comment says.

Judged equivalent, so not tested: rundir's `trained_before` globbing `*/*.json` (a checkpoint folder holds no other
json record); rundata's `len(other) == 0` guard in shared_images dropped (an empty `other` prints nothing and counts
0 anyway); `_label_subset`'s k branch taken only without a ratio (a config refuses k and ratio together).

Left surviving: shared_images' pixel comparison replaced by the fingerprint hits (differs only on colliding int64
fingerprints, which no small test can build). Killed by older tests, so not repeated: `zero_shot_options` given the
source and target class names swapped in `job_method` (test_clip), the method's revision left out of `job_digest`
(test_experiment_mutation)."""

import json
import warnings
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
import yaml
from helpers import one_domain_data, seeded_lenet, toy_domain, toy_named_domains
from test_rundir_rundata_mutation import _with_row
from test_rundir_rundata_second_mutation import TINY

from transferkit import rundata, rundir
from transferkit.config import ExperimentConfig, dump_config
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.io import write_json
from transferkit.methods import get_method
from transferkit.networks import save_network
from transferkit.splits import Split


# ---- data.json -----------------------------------------------------------------------------------------------
def test_other_group_ids_are_other_data():
    # kills: a split's groups left out of its data.json digest (videos regrouped resumed as the same data)
    data = one_domain_data()
    d = data.target.train
    data.target.train = replace(d, groups=torch.arange(len(d)))
    one = rundir.data_digests(data)["target.train"]
    data.target.train = replace(d, groups=torch.arange(len(d)) + 100)
    assert rundir.data_digests(data)["target.train"] != one


def test_a_first_format_record_of_other_data_names_the_splits_not_the_format(tmp_path):
    # kills: `changed - {"format"}` as `changed` (a refusal naming "format" among the changed splits)
    old = one_domain_data()
    write_json(tmp_path / "data.json", {key: d.digest() for key, d in rundir._splits(old).items()})
    _with_row(tmp_path)
    with pytest.raises(TransferkitError, match=r"group ids of source\.test, .*, target\.val changed since") as e:
        rundir.check_same_data(tmp_path, one_domain_data(source_seed=5), True)
    assert "format" not in str(e.value).split("group ids of")[1].split("changed since")[0]


def test_unlabelled_images_dropped_under_rows_that_never_read_them_keep_the_rows(tmp_path):
    # kills: `_changed_keys` over the new record's keys only (an `unlabeled` left out now not seen as the one change)
    rundir.check_same_data(tmp_path, one_domain_data(unlabeled=toy_domain(6, seed=8)), True)
    _with_row(tmp_path, "finetune")
    (tmp_path / "source.safetensors").write_text("pinned")
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    assert (tmp_path / "source.safetensors").exists()
    assert "unlabeled" not in json.loads((tmp_path / "data.json").read_text())


# ---- a refusal's options hint----------------------------------------------------------------------------------------
def test_the_options_hint_names_only_options_given_otherwise_and_nothing_when_they_agree():
    # kills: `given.get(k) != ran[k]` as `k not in given` (nothing named); the `if not changed: return ""` dropped
    cls = get_method("linear_probe")
    hint = rundir._options_since(cls, {"reset_head": True}, {"reset_head": False})
    assert "reset_head: True then, False now" in hint and "--set options.linear_probe.<option>=<then>" in hint
    assert rundir._options_since(cls, {"reset_head": True}, {}) == ""


# ---- digests and stored configs ---------------------------------------------------------------------------------
def test_a_row_digested_with_both_stages_at_cpu_is_found_on_another_device():
    # kills: `stages` setting only `train.device` (pretrain.device kept); row_digests without the stages at cpu
    cfg = ExperimentConfig(methods=["finetune"], device="cuda")
    old = ExperimentConfig(methods=["finetune"], device="cuda")
    old.pretrain, old.train = replace(old.pretrain, device="cpu"), replace(old.train, device="cpu")  # as stored then
    assert rundir.job_digest(old, "finetune") != rundir.job_digest(cfg, "finetune")
    assert rundir.job_digest(old, "finetune") in rundir.row_digests(cfg, "finetune")


def test_a_config_from_before_an_added_field_keeps_its_digest(monkeypatch):
    # kills: the ADDED_FIELDS at their default left in the digest (every row of before the field refused)
    cfg = ExperimentConfig(methods=["finetune"], k=2)
    now = rundir.job_digest(cfg, "finetune")
    flat = rundir.flat_config
    monkeypatch.setattr(rundir, "flat_config", lambda d: {k: v for k, v in flat(d).items()
                                                          if k not in rundir.ADDED_FIELDS})  # as before the fields
    assert rundir.job_digest(cfg, "finetune") == now


def test_a_stored_config_without_device_names_only_the_device():
    # kills: a stage stored at cpu read as `then.get("device")` (None) instead of the default cpu
    cfg = ExperimentConfig()
    stored = yaml.safe_load(dump_config(cfg))
    del stored["device"]
    assert rundir._config_changes(stored, cfg) == ["device: None there, 'cpu' now"]


# ---- rundata: how the domains are loaded ------------------------------------------------------------------------
def _recording_loads(monkeypatch, colour_shift=False):
    calls = []

    def load(spec, **kw):
        calls.append((spec, kw))
        return toy_domain(80, seed=sum(map(ord, spec)), name=spec)
    monkeypatch.setattr(rundata, "load_domain", load)
    monkeypatch.setattr(rundata, "has_colour_shift", lambda spec: colour_shift)
    return calls


def test_a_colour_shift_loads_in_colour_unless_one_channel_is_asked_and_unlabelled_images_are_unlabelled(monkeypatch):
    # kills: `cfg.channels != 1 and` dropped (a grey run loaded a colour-shifted domain in colour); the unlabelled
    # images loaded with `labeled=True`
    calls = _recording_loads(monkeypatch, colour_shift=True)
    rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", unlabeled="extra", image_size=28,
                                             channels=1), progress=False)
    assert [kw["channels"] for _, kw in calls] == [None, None, None]
    assert [kw["labeled"] for _, kw in calls] == [True, True, False]
    calls.clear()
    rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28), progress=False)
    assert [kw["channels"] for _, kw in calls] == [3, 3]


def test_a_progress_given_wins_over_the_config_s(monkeypatch):
    # kills: `progress` always taken from `cfg.train.progress`
    _recording_loads(monkeypatch)
    shown = []

    @contextmanager
    def bar(progress):
        shown.append(progress)
        yield
    monkeypatch.setattr(rundata, "reading_progress", bar)
    cfg = ExperimentConfig(source="src", target="tgt", image_size=28, train=replace(TINY, progress=True))
    rundata.prepare_domains(cfg, progress=False)
    rundata.prepare_domains(cfg)
    assert shown == [False, True]


def test_the_config_s_channels_win_over_grey_domains(monkeypatch):
    # kills: `cfg.channels or` dropped (grey source and target ran grey although the config asked for colour)
    toy_named_domains(monkeypatch)
    data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28, channels=3),
                                   progress=False)
    assert data.channels == 3 and data.source.train.images.shape[1] == data.target.train.images.shape[1] == 3


def test_source_classes_narrow_the_source_and_target_classes_the_target(monkeypatch):
    # kills: the source narrowed by `target_classes`
    toy_named_domains(monkeypatch)
    data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28, source_classes="0-2",
                                                    target_classes="1,3"), progress=False)
    assert data.source.train.class_names == ["0", "1", "2"] and data.target.train.class_names == ["1", "3"]


def test_a_source_of_one_class_is_refused_by_name(monkeypatch):
    # kills: the source's two-class check dropped
    toy_named_domains(monkeypatch)
    with pytest.raises(TransferkitError, match=r"the source 'src' has one class \(\['2'\], source_classes '2'\): a "
                                               r"network trained to tell one class from none learns nothing"):
        rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28, source_classes="2"),
                                progress=False)


def test_source_and_target_that_both_number_their_classes_are_warned_of(monkeypatch):
    # kills: `warn_numbered_match` dropped from prepare_domains
    def load(spec, **kw):
        d = toy_domain(80, seed=sum(map(ord, spec)), name=spec)
        d.provenance.update(origin=f"npz:/data/{spec}.npz", numbered_classes=True)
        return d
    monkeypatch.setattr(rundata, "load_domain", load)
    monkeypatch.setattr(rundata, "has_colour_shift", lambda spec: False)
    with pytest.warns(TransferkitWarning, match=r"both number their classes"):
        rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28), progress=False)


def test_a_test_set_of_the_source_s_images_counts_as_in_the_source_not_the_target(monkeypatch):
    # kills: `test_in_source` measured against the target's splits
    toy_named_domains(monkeypatch)
    with pytest.warns(TransferkitWarning, match=r"are source train images"):
        data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", test="src", image_size=28),
                                       progress=False)
    assert sum(data.test_in_source.values()) == len(data.source.train) + len(data.source.val)
    assert sum(data.test_overlap.values()) == 0
    fields = rundata.test_fields(ExperimentConfig(test="src"), data)
    assert fields["test_in_source"] > 0 and fields["test_in_target"] == 0


# ---- rundata: a source: null run -------------------------------------------------------------------------------
def test_a_source_null_run_that_asks_for_grey_is_not_warned_about_its_colour_target(monkeypatch, tmp_path):
    # kills: `and cfg.channels is None` dropped from the grey-conversion warning (a conversion asked for, warned of)
    toy_named_domains(monkeypatch, colour=("tgt",))
    save_network(seeded_lenet(), tmp_path / "net.safetensors", class_names=[str(i) for i in range(10)])
    cfg = ExperimentConfig(source=None, target="tgt", pretrained=str(tmp_path / "net.safetensors"), backbone="lenet",
                           image_size=28, channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        data = rundata.prepare_domains(cfg, progress=False)
    assert data.channels == 1


def test_a_source_null_run_s_channels_come_from_the_config_then_the_file_then_the_target(monkeypatch, tmp_path):
    # kills: `cfg.channels or` dropped; the target's channels as the last resort replaced by 1; the empty source's
    # `pretrained:` origin dropped
    save_network(seeded_lenet(), tmp_path / "net.safetensors", class_names=[str(i) for i in range(10)])
    cfg = ExperimentConfig(source=None, pretrained=str(tmp_path / "net.safetensors"), backbone="lenet", image_size=28)
    colour = toy_domain(8).to_format(channels=3)
    split, channels = rundata.network_source(replace(cfg, channels=3), toy_domain(8))
    assert channels == 3 and split.train.images.shape[1] == 3
    assert split.val.provenance["origin"] == f"pretrained:{tmp_path / 'net.safetensors'}"
    monkeypatch.setattr(rundata, "file_channels", lambda *a: None)  # a file that does not tell
    assert rundata.network_source(cfg, colour)[1] == 3


# ---- rundata: overlaps ----------------------------------------------------------------------------------------
def test_shared_images_of_or_with_an_empty_domain_are_none():
    # kills: the `len(pool) == 0` guard dropped (an IndexError on an empty pool); the `len(other) == 0` guard dropped
    d = toy_domain(8)
    empty = d.subset(torch.zeros(8, dtype=torch.bool))
    assert rundata.shared_images(empty, d) == 0 and rundata.shared_images(d, empty) == 0


def test_unlabelled_images_that_are_target_test_images_alone_are_counted_and_warned_of():
    # kills: the test part left out of `_unlabeled_overlap`; `any(found.values())` as `all(...)`
    train, val, test = toy_domain(8, seed=0), toy_domain(8, seed=1), toy_domain(8, seed=2)
    with pytest.warns(TransferkitWarning, match=r"unlabeled 'extra': 3 of its images are target test images"):
        found = rundata._unlabeled_overlap(ExperimentConfig(unlabeled="extra"), test.subset([0, 1, 2]),
                                           Split(train, val, test))
    assert found == {"val": 0, "test": 3}


def test_unlabelled_images_of_the_target_are_measured_in_prepare_domains(monkeypatch):
    # kills: `overlap = {}` for a config's unlabelled images (rows' unlabeled_in_test always 0)
    toy_named_domains(monkeypatch)
    with pytest.warns(TransferkitWarning, match=r"unlabeled 'tgt': .* target val images"):
        data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", unlabeled="tgt", image_size=28),
                                       progress=False)
    assert data.unlabeled_overlap == {"val": len(data.target.val), "test": len(data.target.test)}


# ---- rundata: a row's test fields, a test set of its own, class lists, label subsets ---------------------------------
def test_a_row_counts_the_test_classes_it_holds_images_of():
    # kills: `n_test_classes` as the test split's number of class names (a class without an image counted)
    data = one_domain_data()
    d = data.target.test
    data.target.test = d.subset(d.labels < 2)
    fields = rundata.test_fields(ExperimentConfig(test="tst"), data)
    assert fields["n_test_classes"] == 2 and fields["n_target_classes"] == 4


def test_a_grouped_test_set_keeps_its_groups_and_is_named_a_test_split():
    # kills: the test set's groups dropped (grouped accuracy lost); its name kept instead of `<dataset>/test`
    train = toy_domain(8, seed=0)
    test = replace(toy_domain(8, seed=0, name="tst"), groups=torch.arange(8) % 4)  # two images a group
    got = rundata.as_target_test(ExperimentConfig(test="tst"), test, train, 1)
    assert torch.equal(got.groups, torch.arange(8) % 4) and got.name == "tst/test"


def test_a_class_list_keeps_a_class_the_val_or_test_part_has_no_image_of():
    # kills: `allow_empty=True` dropped for the val and test parts (a small class refused there)
    d = toy_domain(12, seed=0)
    split = Split(d, d.subset(d.labels < 2), d.subset(d.labels != 3))
    got = rundata.narrowed(split, "2,3")
    assert got.val.class_names == ["2", "3"] and len(got.val) == 0 and len(got.test) == 3


def test_a_config_s_unlabelled_images_replace_the_rest_and_a_ratio_s_rest_is_the_whole_train_split():
    # kills: `unlabeled` not returned by label_subset; the ratio's unlabelled images as its labelled subset
    d = toy_domain(16, seed=0)
    target, extra = Split(d, d, d), toy_domain(6, seed=9)
    assert rundata.label_subset(ExperimentConfig(k=2), target, 0, extra)[1] is extra
    labeled, rest = rundata.label_subset(ExperimentConfig(k=None, ratio=2), target, 0)
    assert len(labeled) == 8 and rest is d


def test_a_one_class_hint_names_the_first_three_numbers_of_numbered_classes():
    # kills: the numbered classes' example cut to two (`sorted(numbered)[:2]`)
    d = replace(toy_domain(8), class_names=["1", "10", "2", "3"])
    assert rundata._one_class_hint("10", d).endswith("a number is one class name: e.g. [1, 2, 3])")
