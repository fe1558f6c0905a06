"""Tests from a mutation pass over rundir.py and rundata.py: what a run directory's checkpoints
say a job trained before (seconds, threads, unreadable records skipped), what ``data.json``
digests and records (class names, a target folder's label draws, sizes, only in the main
process), when a resume with changed data is refused or accepted (rows, job files, only the
unlabelled images changed and no finished job read them) and what its refusal names, which
unfinished checkpoints a resume with other options refuses, how a refusal for another
``--nproc`` lists the jobs, what a job's digest counts (option files, forms, the stages' devices)
and what a stored config's comparison skips; and of a run's data, the channels, class lists,
test sets and label subsets it is cut with. Each test fails when the code it names is changed
in the way its comment says.

Judged equivalent, so not tested: rundir's `if checkpoints.is_dir() else ()` (a missing folder globs
nothing), `stored != {...}` before the data.json write (only the file's time differs), `range(cls.revision
+ 1)`; rundata's `.all(1)` -> `.any(1)` in shared_images (differs only on colliding fingerprints), the
`src is not None` guard before test_in_source (empty source splits sum alike). Not tried: network_source's
preference for the pinned file, the grey-conversion warning, the exception path of `_options_since`."""

import json
import warnings
from dataclasses import replace

import pytest
import torch
import yaml
from helpers import one_domain_data, toy_domain, toy_named_domains

from transferkit import rundata, rundir
from transferkit.config import ExperimentConfig, dump_config
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.experiment import _jobs_of
from transferkit.io import write_json
from transferkit.methods import get_method
from transferkit.splits import Split

TINY = TrainConfig(steps=2, eval_every=2, batch_size=8)


def _with_row(run_dir, method: str = "finetune") -> None:
    (run_dir / "jobs").mkdir(exist_ok=True)
    write_json(run_dir / "jobs" / f"{method}-k=2-s0.json", {"method": method, "setting": "k=2", "seed": 0})


# ---- trained_before: what the checkpoints say -----------------------------------------------------
def test_the_seconds_and_threads_of_every_stage_s_checkpoint_are_added_up(tmp_path):
    # kills: `total += float(...)` as `total = ...`, and `threads |= ...` as `threads = ...` (the last stage's only)
    for stage, seconds, threads in (("a", 2.5, [1]), ("b", 1.5, [4])):
        write_json(tmp_path / stage / "last.json", {"state": {"trained_s": seconds, "threads": threads}})
    assert rundir.trained_before(tmp_path) == (4.0, {1, 4})


def test_a_checkpoint_record_whose_seconds_are_no_number_is_skipped(tmp_path):
    # kills: TypeError / ValueError left out of the records skipped (a resume crashes on a hand-edited record)
    write_json(tmp_path / "a" / "last.json", {"state": {"trained_s": 3.0, "threads": [2]}})
    write_json(tmp_path / "b" / "last.json", {"state": {"trained_s": "soon"}})  # ValueError
    write_json(tmp_path / "c" / "last.json", {"state": {"trained_s": [1]}})  # TypeError
    write_json(tmp_path / "d" / "last.json", {"state": {"threads": [None]}})  # TypeError
    assert rundir.trained_before(tmp_path) == (3.0, {2})


# ---- data.json: what it digests and records -------------------------------------------------------
def test_renamed_classes_are_other_data():
    # kills: the class names left out of a split's digest in data.json
    data = one_domain_data()
    before = rundir.data_digests(data)
    data.target.train = replace(data.target.train, class_names=["a", "b", "c", "d"])
    after = rundir.data_digests(data)
    assert after["target.train"] != before["target.train"] and after["source.train"] == before["source.train"]


def test_only_a_target_folder_records_its_label_draws():
    # kills: `key.startswith("target.")` dropped (a source folder, whose labels are not drawn, recorded them too)
    assert "folder_label_draws" not in rundir.data_digests(one_domain_data(origin="folder:/data/src"))
    data = one_domain_data()
    data.target.val.provenance["origin"] = "folder:/data/tgt"
    assert rundir.data_digests(data)["folder_label_draws"] == rundir.FOLDER_LABEL_DRAWS


def test_a_data_json_that_is_no_mapping_is_refused_by_name(tmp_path):
    # kills: the `isinstance(then, dict)` check removed (an AttributeError instead of what to do)
    (tmp_path / "data.json").write_text("[1, 2]")
    with pytest.raises(TransferkitError, match=r"data.json is not a data record \(not a mapping\): restore it"):
        rundir.check_same_data(tmp_path, one_domain_data(), True)


def test_a_worker_process_records_no_data_json(tmp_path):
    # kills: `main and` dropped from the first record (every worker process rewrote data.json)
    rundir.check_same_data(tmp_path, one_domain_data(), False)
    assert not (tmp_path / "data.json").exists()
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    assert (tmp_path / "data.json").exists()


def test_a_worker_process_leaves_the_pinned_network_and_record_of_changed_data(tmp_path):
    # kills: `if main:` dropped before the pinned network and checkpoints are removed (a worker deleted them)
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    record = (tmp_path / "data.json").read_text()
    (tmp_path / "source.safetensors").write_text("pinned")
    (tmp_path / "checkpoints" / "x").mkdir(parents=True)
    rundir.check_same_data(tmp_path, one_domain_data(source_seed=5), False)
    assert (tmp_path / "source.safetensors").exists() and (tmp_path / "checkpoints" / "x").is_dir()
    assert (tmp_path / "data.json").read_text() == record


def test_a_jobs_folder_without_a_job_file_holds_no_rows(tmp_path):
    # kills: the job files looked for as `*` instead of `*.json` (a torn write's temporary file refused new data)
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "finetune-k=2-s0.json.tmp").write_text("{")
    rundir.check_same_data(tmp_path, one_domain_data(source_seed=5), True)
    sizes = {k: 12 for k in rundir._splits(one_domain_data())}
    assert json.loads((tmp_path / "data.json").read_text()) == {**rundir.data_digests(one_domain_data(source_seed=5)),
                                                                "sizes": sizes}


def test_unlabelled_images_added_under_rows_that_never_read_them_keep_the_rows_and_source_network(tmp_path):
    # kills: `not _rows_read_unlabelled` inverted; the changed keys taken from the old record only (an added
    # `unlabeled` not seen as the one change); the source network dropped when only unlabelled images changed
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    _with_row(tmp_path, "finetune")  # finetune reads no unlabelled image
    (tmp_path / "source.safetensors").write_text("pinned")
    (tmp_path / "checkpoints" / "dann-k=2-s0").mkdir(parents=True)
    more = one_domain_data(unlabeled=toy_domain(6, seed=9))
    rundir.check_same_data(tmp_path, more, True)
    assert (tmp_path / "source.safetensors").exists() and not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "data.json").read_text())["unlabeled"] == rundir.data_digests(more)["unlabeled"]


def test_unlabelled_images_changed_under_a_row_that_read_them_are_refused(tmp_path):
    # kills: `not _rows_read_unlabelled` inverted (dann's row, trained on the old unlabelled images, kept)
    rundir.check_same_data(tmp_path, one_domain_data(unlabeled=toy_domain(6, seed=8)), True)
    _with_row(tmp_path, "dann")
    with pytest.raises(TransferkitError, match="other data: .* of unlabeled changed since; restore them"):
        rundir.check_same_data(tmp_path, one_domain_data(unlabeled=toy_domain(6, seed=9)), True)


def test_an_unreadable_job_file_counts_as_a_row_that_read_the_unlabelled_images(tmp_path):
    # kills: `return True` as `return False` for a job file that cannot say its method
    rundir.check_same_data(tmp_path, one_domain_data(unlabeled=toy_domain(6, seed=8)), True)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "x-k=2-s0.json").write_text("{")
    with pytest.raises(TransferkitError, match="of unlabeled changed"):
        rundir.check_same_data(tmp_path, one_domain_data(unlabeled=toy_domain(6, seed=9)), True)


def test_a_refusal_names_the_sizes_only_of_splits_whose_size_changed(tmp_path):
    # kills: `old_sizes[k] != sizes[k]` as `==` (sizes named for splits of the same size, none for those that grew)
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    _with_row(tmp_path)
    grown = one_domain_data()
    grown.source.train = toy_domain(16, seed=0)
    grown.target.val = toy_domain(12, seed=7)  # other images, as many
    with pytest.raises(TransferkitError) as e:
        rundir.check_same_data(tmp_path, grown, True)
    assert "(source.train: 12 images there, 16 now); restore" in str(e.value)
    assert "target.val: 12" not in str(e.value)


def test_a_refusal_for_changed_npz_files_gives_neither_the_built_in_nor_the_folder_hint(tmp_path):
    # kills: `npz:` left out of the origins that are not built-in; `npz:` counted as a folder for its hint
    rundir.check_same_data(tmp_path, one_domain_data(), True)
    _with_row(tmp_path)
    with pytest.raises(TransferkitError) as e:
        rundir.check_same_data(tmp_path, one_domain_data(source_seed=5, origin="npz:/data/src.npz"), True)
    assert "built-in domains" not in str(e.value) and "a folder's split" not in str(e.value)
    with pytest.raises(TransferkitError, match=r"a folder's split and label subsets place each file") as e:
        rundir.check_same_data(tmp_path, one_domain_data(source_seed=5, origin="folder:/data/src"), True)
    assert "built-in domains" not in str(e.value)
    with pytest.raises(TransferkitError, match="built-in domains are rendered under the CPU kernels") as e:
        rundir.check_same_data(tmp_path, one_domain_data(source_seed=5), True)
    assert "a folder's split" not in str(e.value)


# ---- unfinished checkpoints and --nproc --------------------------------------------------------------
def test_a_finished_job_s_leftover_checkpoints_do_not_refuse_other_options(tmp_path):
    # kills: `(cls.name, seed) not in finished` dropped (a finished job's checkpoints refused a resume); the
    # `stored is None` return dropped; the checkpoint folder's `is_dir()` dropped (a job without one refused)
    cfg = ExperimentConfig(methods=["linear_probe"], k=2, train=TINY, pretrain=TINY)
    stored = yaml.safe_load(dump_config(cfg))
    other = replace(cfg, options={"linear_probe": {"reset_head": False}})
    jobs = _jobs_of(other, [get_method("linear_probe")])
    (tmp_path / "checkpoints" / rundir.job_path(tmp_path, cfg, "linear_probe", cfg.seed).stem).mkdir(parents=True)
    rundir.check_unfinished_checkpoints(other, tmp_path, jobs, {("linear_probe", cfg.seed): {}}, stored)
    rundir.check_unfinished_checkpoints(other, tmp_path, jobs, {}, None)  # no stored config: nothing to compare
    with pytest.raises(TransferkitError, match=r"unfinished job\(s\) linear_probe-k=2-s\d+ have checkpoints"):
        rundir.check_unfinished_checkpoints(other, tmp_path, jobs, {}, stored)
    (tmp_path / "checkpoints" / rundir.job_path(tmp_path, cfg, "linear_probe", cfg.seed).stem).rmdir()
    rundir.check_unfinished_checkpoints(other, tmp_path, jobs, {}, stored)  # nothing trained yet: nothing stale


def test_a_refusal_for_another_nproc_elides_only_past_five_jobs(tmp_path, monkeypatch):
    # kills: `len(other) > 5` as `>= 5` (five jobs named in full and followed by ", ..."); `then[0]` as `then[-1]`
    monkeypatch.setattr(rundir, "world_size", lambda: 1)
    cfg = ExperimentConfig(methods=["finetune"], k=2)
    five = {("finetune", s): {"world_size": 2} for s in range(5)}
    with pytest.raises(TransferkitError, match=r"5 finished job\(s\) \(jobs/finetune-k=2-s0.json, .*s4.json\) ran in 2 "
                                               r"data-parallel process\(es\) and this resume runs 1: .*--nproc 2"):
        rundir.check_same_world(cfg, tmp_path, five)
    with pytest.raises(TransferkitError, match=r"\(jobs/finetune-k=2-s0.json, .*s4.json, \.\.\.\) ran in 2 and 4 .*"
                                               r"resume with --nproc 2,"):  # the first count of those there
        rundir.check_same_world(cfg, tmp_path, {**five, ("finetune", 5): {"world_size": 4}})


def test_a_refusal_for_another_source_network_names_five_jobs_at_most(tmp_path):
    # kills: `other[:5]` as `other` (a run of hundreds of rows named every one); rows without a digest counted
    finished = {("finetune", s): {"source_digest": "old"} for s in range(7)}
    finished["dann", 0] = {}  # written before source_digest was recorded: not checked
    with pytest.raises(TransferkitError, match=r": 7 finished job\(s\) \(finetune seed 0, finetune seed 1, finetune "
                                               r"seed 2, finetune seed 3, finetune seed 4, \.\.\.\) started from "
                                               r"another source network than this resume has \(new;"):
        rundir.check_same_source(tmp_path, finished, "new")
    rundir.check_same_source(tmp_path, {("dann", 0): {}, ("finetune", 0): {"source_digest": "new"}}, "new")


# ---- job digests -----------------------------------------------------------------------------------
def test_a_digest_form_not_known_is_refused():
    # kills: the check of `form` against DIGEST_FORMS removed (a typo counted the options as "given")
    with pytest.raises(TransferkitError, match=r"digest form must be one of .*, got 'typed'"):
        rundir.job_digest(ExperimentConfig(), "finetune", form="typed")


def test_the_untyped_form_counts_a_float_option_s_numbers_as_written():
    # kills: `typed=form == "trained"` as `typed=True`; row_digests without the spellings of the earlier forms
    # (a row of before 2026-12-05 that wrote 1 where the config now says 1.0 not found again)
    one, one_f = (ExperimentConfig(methods=["dann"], options={"dann": {"weight": w}}) for w in (1, 1.0))
    assert rundir.job_digest(one, "dann") == rundir.job_digest(one_f, "dann")
    assert rundir.job_digest(one, "dann", "untyped") != rundir.job_digest(one_f, "dann", "untyped")
    assert rundir.job_digest(one, "dann", "untyped") in rundir.row_digests(one_f, "dann")  # a row that wrote 1


def test_only_the_every_form_counts_options_that_change_nothing_trained():
    # kills: the "given" and "every" forms' skips swapped or both kept (flex's `workers` counted in "given")
    flex = ExperimentConfig(methods=["flex"])
    workers = replace(flex, options={"flex": {"workers": 4}})
    assert rundir.job_digest(workers, "flex", "given") == rundir.job_digest(flex, "flex", "given")
    assert rundir.job_digest(workers, "flex", "every") != rundir.job_digest(flex, "flex", "every")


def test_matrix_files_are_found_whatever_the_case_of_their_suffix_and_only_when_files(tmp_path):
    # kills: `v.lower().endswith(...)` as `v.endswith(...)`; `path.is_file()` as `path.exists()` (a folder hashed)
    (tmp_path / "M.NPY").write_bytes(b"x")
    (tmp_path / "d.csv").mkdir()
    cls = get_method("finetune")
    assert rundir.option_files(cls, {"a": str(tmp_path / "M.NPY"), "b": str(tmp_path / "d.csv"), "c": 3}) == {
        "a": tmp_path / "M.NPY"}


# ---- a stored config ---------------------------------------------------------------------------------
def test_an_unreadable_or_non_mapping_config_yaml_is_named(tmp_path):
    # kills: the YAML error not turned into a named refusal; the mapping check removed
    path = tmp_path / "config.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(TransferkitError, match=r"config.yaml is unreadable: "):
        rundir.check_same_config(path, ExperimentConfig())
    path.write_text("- 1\n- 2\n")
    with pytest.raises(TransferkitError, match=r"config.yaml is not a run config \(not a mapping\)"):
        rundir.check_same_config(path, ExperimentConfig())


def test_a_stored_config_from_before_an_added_field_resumes_and_k_ratio_and_options_only_choose(tmp_path):
    # kills: ADDED_FIELDS' defaults not read into the stored config; CHOOSES_SETTINGS / CHOOSES_JOBS compared
    cfg = ExperimentConfig(methods=["finetune"], k=2)
    stored = yaml.safe_load(dump_config(cfg))
    for key in ("unlabeled", "test", "val_fraction", "test_fraction", "select_metric"):
        stored.pop(key, None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(stored))
    assert rundir.check_same_config(path, cfg) == stored
    rundir.check_same_config(path, replace(cfg, k=5, methods=["dann"], options={"dann": {"weight": 1.0}}))
    with pytest.raises(TransferkitError, match=r"another config \(val_fraction: 0.15 there, 0.2 now\)"):
        rundir.check_same_config(path, replace(cfg, val_fraction=0.2))


def test_a_stored_stage_device_of_cpu_reads_as_the_run_s_device(tmp_path):
    # kills: the stages' stored `cpu` not read as `device` (a run stored so before 2026-12-04 refused)
    cfg = ExperimentConfig(device="auto")
    stored = yaml.safe_load(dump_config(cfg))
    stored["train"]["device"] = stored["pretrain"]["device"] = "cpu"
    assert rundir._config_changes(stored, cfg) == []
    stored["device"] = "cpu"
    assert rundir._config_changes(stored, cfg) == ["device: 'cpu' there, 'auto' now",
                                                   "pretrain.device: 'cpu' there, 'auto' now",
                                                   "train.device: 'cpu' there, 'auto' now"]


# ---- rundata: the run's data --------------------------------------------------------------------------
def test_a_grey_source_and_a_colour_target_run_in_colour(monkeypatch):
    # kills: the run's channels taken from the source alone (`3 in (src.images.shape[1],)`)
    toy_named_domains(monkeypatch, colour=("tgt",))
    data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28), progress=False)
    assert data.channels == 3 and data.source.train.images.shape[1] == data.target.train.images.shape[1] == 3


def test_a_test_set_of_its_own_leaves_the_whole_target_to_train_and_val(monkeypatch):
    # kills: the target cut at `test_fraction` although the config's test replaces its test split
    toy_named_domains(monkeypatch)
    data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", test="tst", image_size=28),
                                   progress=False)
    assert len(data.target.train) + len(data.target.val) == 80 and len(data.target.test) == 80


def test_unlabelled_grey_images_are_converted_to_a_colour_run_s_channels_naming_what_set_them(monkeypatch):
    # kills: the unlabelled images left in their own channels; `_channels_origin`'s branches swapped
    toy_named_domains(monkeypatch, colour=("tgt",))
    with pytest.warns(Warning, match=r"unlabeled 'extra': its images have 1 channel\(s\) and are converted to the "
                                     r"run's 3 \(set by source and target: `channels` in the config sets them\)"):
        data = rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", unlabeled="extra", image_size=28),
                                       progress=False)
    assert data.unlabeled.images.shape[1] == 3
    assert rundata._channels_origin(ExperimentConfig(channels=3)) == "the config's `channels`"


def test_a_one_class_target_names_its_class_list_and_how_numbers_name_classes(monkeypatch):
    # kills: the class list left out of the refusal, or its hint dropped
    toy_named_domains(monkeypatch)
    with pytest.raises(TransferkitError, match=r"the target 'tgt' has one class \(\['1'\], target_classes '1'\): every "
                                               r"model would score 100 %; give two classes or more \(a number is one "
                                               r"class id: the first three are 0-2\)"):
        rundata.prepare_domains(ExperimentConfig(source="src", target="tgt", target_classes="1", image_size=28),
                                progress=False)


def test_shared_images_counts_a_pool_of_one_and_other_shapes_share_none():
    # kills: the search position not clamped (an image printed past the pool's last one indexes out of range);
    # the shape check dropped
    pool = toy_domain(8, seed=3)
    one = pool.subset([5])
    assert rundata.shared_images(one, pool) == 1 and rundata.shared_images(pool, one) == 1
    assert rundata.shared_images(pool.subset([0, 1]), pool) == 2
    assert rundata.shared_images(pool, pool.to_format(channels=3)) == 0


def test_a_test_set_s_classes_are_labelled_as_the_target_names_them():
    # kills: the test labels kept as the test set numbers its classes (not matched by name)
    train = toy_domain(8, seed=0)
    test = toy_domain(8, seed=0, name="tst")
    test = replace(test, class_names=list(reversed(test.class_names)))  # class '3' is its label 0
    got = rundata.as_target_test(ExperimentConfig(test="tst"), test, train, 1)
    assert [got.class_names[i] for i in got.labels] == [test.class_names[i] for i in test.labels]


def test_a_test_set_with_classes_outside_the_target_warns_and_one_without_any_is_refused():
    # kills: the `len(shared) < len(present)` warning dropped; the no-shared-class check removed
    train = toy_domain(8, seed=0)
    test = replace(toy_domain(8, seed=0, name="tst"), class_names=["0", "1", "x", "y"])
    with pytest.warns(Warning, match=r"test 'tst': its class\(es\) \['x', 'y'\] are not target classes; their images"):
        got = rundata.as_target_test(ExperimentConfig(test="tst"), test, train, 1)
    assert len(got) == 4
    with pytest.raises(TransferkitError, match=r"test 'tst' has no image of a target class: its classes \['a', 'b', "):
        rundata.as_target_test(ExperimentConfig(test="tst"), replace(test, class_names=list("abcd")), train, 1)


def test_all_classes_keep_a_class_without_training_images_and_a_list_naming_one_is_refused():
    # kills: the "all" class list checked for classes without a training image; the emptiness test inverted
    d = toy_domain(12, seed=0)
    split = Split(d.subset(d.labels != 3), d, d)
    assert rundata.narrowed(split, "all").val.class_names == ["0", "1", "2", "3"]
    assert rundata.narrowed(split, "0,2").train.class_names == ["0", "2"]
    with pytest.raises(TransferkitError, match=r"has no training image of class\(es\) \['3'\] named in the class "
                                               r"list '0,3'"):
        rundata.narrowed(split, "0,3")


def test_the_ratio_warning_counts_only_classes_with_images_and_not_at_the_class_size():
    # kills: the smallest class taken over empty classes too; `smallest < ratio` as `<=`
    d = toy_domain(12, seed=0)  # 3 images per class
    target = Split(replace(d, labels=d.labels, class_names=d.class_names + ["4"]), d, d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labeled, _ = rundata.label_subset(ExperimentConfig(k=None, ratio=3), target, 0)
    assert len(labeled) == 12
    with pytest.warns(Warning, match=r"ratio 4: the smallest class of 'toy' has 3 training images"):
        rundata.label_subset(ExperimentConfig(k=None, ratio=4), target, 0)


def test_a_method_that_reads_no_target_label_selects_on_nothing_of_the_target():
    # kills: the unsupervised-method exception dropped (dann early-stopped on target labels)
    data = one_domain_data()
    cfg = ExperimentConfig(select_on="target_val")
    assert rundata.selection_domain(cfg, data, get_method("dann")) is None
    assert rundata.selection_domain(cfg, data, get_method("finetune")) is data.target.val
    assert rundata.selection_domain(replace(cfg, select_on="source_val"), data, get_method("dann")) is data.source.val


def test_a_process_prepares_each_config_once_and_keeps_only_the_last(monkeypatch):
    # kills: the cache keyed without the config (another config's data), or never cleared
    made = []
    monkeypatch.setattr(rundata, "prepare_domains", lambda cfg, **kw: made.append(cfg.seed) or cfg.seed)
    monkeypatch.setattr(rundata, "_PROCESS_DATA", {})
    a, b = ExperimentConfig(seed=1), ExperimentConfig(seed=2)
    assert [rundata.process_domains(c) for c in (a, a, b, b, a)] == [1, 1, 2, 2, 1]
    assert made == [1, 2, 1] and len(rundata._PROCESS_DATA) == 1


def test_a_row_s_class_and_training_fields_name_only_what_the_config_chose():
    # kills: a tuple class list kept as a tuple, an unset one written as null; default training fields written
    assert rundata.class_fields(ExperimentConfig(target_classes=("a", "b"))) == {"target_classes": ["a", "b"]}
    assert rundata.training_fields(TrainConfig()) == {}
    assert rundata.training_fields(TrainConfig(sampler="balanced")) == {"sampler": "balanced"}


def test_a_row_counts_test_groups_only_of_a_grouped_test_split_and_test_fields_only_of_a_config_s_test():
    # kills: `n_test_groups` written without groups; the `cfg.test` fields written without a test of its own
    data = one_domain_data()
    assert rundata.test_fields(ExperimentConfig(), data) == {"n_test": 12}
    data.target.test = replace(data.target.test, groups=torch.arange(12) % 8)
    assert rundata.test_fields(ExperimentConfig(), data) == {"n_test": 12, "n_test_groups": 8}


# ---- finished rows: what a refusal names -------------------------------------------------------------
def _row_of(cfg, run_dir, method: str) -> tuple[list, object]:
    """The job list of ``cfg``'s one ``method`` and the path of its first job, holding a row of ``cfg``."""
    jobs = _jobs_of(cfg, [get_method(method)])
    job = rundir.job_path(run_dir, cfg, method, jobs[0][1])
    write_json(job, {"method": method, "source": "mnist", "target": "mnist", "setting": cfg.setting,
                     "seed": jobs[0][1], "accuracy": 0.5, "wall_s": 1.0,
                     "config_digest": rundir.job_digest(cfg, method)})
    return jobs, job


def test_a_row_refused_after_its_option_file_was_edited_says_so(tmp_path):
    # kills: the hint naming the option files whose contents the digest holds dropped
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"file_name": "a/0.png", "text": "a circle"}\n')
    cfg = ExperimentConfig(methods=["clip"], k=2, options={"clip": {"captions_file": str(captions)}})
    jobs, _ = _row_of(cfg, tmp_path, "clip")
    assert list(rundir.finished_rows(cfg, tmp_path, jobs, None)) == [("clip", jobs[0][1])]
    captions.write_text('{"file_name": "a/0.png", "text": "a disc"}\n')
    with pytest.raises(TransferkitError, match=rf"another configuration than .* gives now \(the options of clip read "
                                               rf"captions_file {captions}, whose contents the job's digest holds: "
                                               rf"edited since the job ran\?\); restore that config"):
        rundir.finished_rows(cfg, tmp_path, jobs, None)


def test_a_results_json_of_another_config_than_the_row_s_names_no_change(tmp_path):
    # kills: the check that results.json's config gives the row's digest dropped (changes of another config named)
    cfg = ExperimentConfig(methods=["finetune"], k=2, train=TINY, pretrain=TINY)
    jobs, job = _row_of(cfg, tmp_path, "finetune")
    write_json(tmp_path / "results.json", {"config": replace(cfg, seed=7).to_dict()})  # not the row's config
    with pytest.raises(TransferkitError) as e:
        rundir.finished_rows(replace(cfg, val_fraction=0.2), tmp_path, jobs, None)
    assert "changed since the job ran" not in str(e.value)
    assert f"{job} was run with another configuration" in str(e.value)
    write_json(tmp_path / "results.json", {"config": cfg.to_dict()})
    with pytest.raises(TransferkitError, match=r"\(changed since the job ran, by the config its results.json keeps: "
                                               r"val_fraction: 0.15 there, 0.2 now\)"):
        rundir.finished_rows(replace(cfg, val_fraction=0.2), tmp_path, jobs, None)


def test_a_key_only_the_stored_config_has_is_named(tmp_path):
    # kills: the keys compared taken from the config now only (`set(now)`), so a key it no longer has passes
    stored = yaml.safe_load(dump_config(ExperimentConfig()))
    stored["train"]["warmup"] = 5  # a key of a version that had one
    assert rundir._config_changes(stored, ExperimentConfig()) == ["train.warmup: 5 there, None now"]


def test_a_data_json_whose_sizes_are_no_mapping_still_gets_the_refusal(tmp_path):
    # kills: the `isinstance(..., dict)` guard on the recorded sizes dropped (an AttributeError instead)
    write_json(tmp_path / "data.json", {**rundir.data_digests(one_domain_data()), "sizes": [12]})
    _with_row(tmp_path)
    with pytest.raises(TransferkitError, match=r"other data: .* of source.test, source.train, source.val changed "
                                               r"since; restore them"):
        rundir.check_same_data(tmp_path, one_domain_data(source_seed=5), True)
