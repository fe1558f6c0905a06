"""Tests from a mutation pass over preflight.py and compare.py: how runs side by side are named
(folders, timestamped folders, files of one folder), what their notes, failed jobs and episode
measures say, which config keys and values the differ line names and how it shortens them, when
two runs' data.json digests are said to differ (seeded specs, three groups, relative paths); and
what the checks before any work refuse or warn about (a source-reading method without a source,
k at a class's size, the unlabelled rest, classes without test images, balancing, selection
settings, the hint of a refused setting). Each test fails when the code it names is changed in
the way its comment says.

Judged equivalent, so not tested: preflight's `e.kind` filter (only get_method and check_backbone
raise there), `s is not sub` (the refused setting never passes), the one-setting shortcut, the range of
seeds checked (every subset has the same counts per class), the val domain for `target_val`; compare's
`< 2` -> `< 1`, `"options" in c` always, `options` kept in UNCOMPARED, `.split("+")[0]` dropped,
`startswith(f"{side}.")` -> `startswith(side)`. Left alive: preflight's
`chosen` / "all" argument of warn_unshared_classes, its bind_partial TypeError branch, its
check_validation guard, and compare's `all` -> `any` beside a benchmark plan (which is meant is open)."""

import json
import warnings
from dataclasses import replace

import helpers
import pytest

from transferkit import compare, preflight
from transferkit.config import ExperimentConfig
from transferkit.domain import Domain
from transferkit.errors import TransferkitError, check, warn
from transferkit.methods import get_method
from transferkit.rundata import Prepared
from transferkit.splits import Split

ROW = {"method": "finetune", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5,
       "wall_s": 1.0}


def _results(path, **data):
    """A results.json at ``path`` (a file, or a directory to hold one) with ``data`` beside one row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": [ROW], **data}))
    return path


def _warned(fn, *args) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args)
    return [str(w.message) for w in caught]


# ---- compare: naming runs, their notes and failed jobs ------------------------------------------
def test_two_results_files_of_one_folder_are_named_by_their_file(tmp_path):
    # kills: the second disambiguation dropped (labels.count(label) == 1 -> True): both named by the folder
    first, second = _results(tmp_path / "a" / "results.json"), _results(tmp_path / "a" / "old.json")
    runs = [r["run"] for r in compare.combine_runs([first, second])["rows"]]
    assert runs == [str(first), str(second)]


def test_a_runs_notes_are_prefixed_with_its_name_and_only_text_notes_are_kept(tmp_path):
    # kills: the "Run {label}: " prefix dropped; the isinstance(n, str) filter dropped
    notes = compare.combine_runs([_results(tmp_path / "a" / "results.json", notes=["trained on 2 cores", 3])])["notes"]
    assert notes == ["Run a: trained on 2 cores"]


def test_a_failed_job_given_as_text_is_named_by_its_run(tmp_path):
    # kills: f"{label}: {x}" -> x for a failed entry that is not a mapping
    failed = compare.combine_runs([_results(tmp_path / "a" / "results.json", failed=["mmd seed 0: boom"]),
                                   _results(tmp_path / "b" / "results.json", failed=[{"job": "dann", "error": "e"}])])
    assert failed["failed"] == ["a: mmd seed 0: boom", {"job": "b/dann", "error": "e"}]


def test_an_environment_or_config_that_is_not_a_mapping_is_read_as_none(tmp_path):
    # kills: the isinstance(..., dict) checks of a run's environment / config in combine_runs dropped
    odd = _results(tmp_path / "a" / "results.json", environment=["torch 2"], config=["episodes"])
    other = _results(tmp_path / "b" / "results.json", environment={"torch": "2"}, config={"k": 1})
    combined = compare.combine_runs([odd, other])
    assert combined["config"] == [("a", None), ("b", {"k": 1})] and combined["notes"] == []


def test_episode_runs_beside_test_split_runs_are_named_as_other_measures_and_alone_are_not(tmp_path):
    # kills: `if episodes and others` -> `if episodes` (a note with no other runs); the groups swapped
    ep = _results(tmp_path / "ep" / "results.json", config={"episodes": 100})
    ep2 = _results(tmp_path / "ep2" / "results.json", config={"episodes": 50})
    split = _results(tmp_path / "sp" / "results.json", config={"k": 1})
    assert compare.combine_runs([ep, split])["notes"] == [
        "The rows of ep are N-way K-shot episode accuracies (transferkit episodes), those of sp accuracies on a test "
        "split: not one measure."]
    assert compare.combine_runs([ep, ep2])["notes"] == []


def test_a_timestamped_folder_is_named_with_the_folder_above_it_only_when_the_whole_name_is_a_stamp(tmp_path):
    # kills: RUN_STAMP.fullmatch -> RUN_STAMP.match; the (-\d+)? suffix made required
    assert compare._run_label(tmp_path / "cli1" / "20261202-101500") == "cli1/20261202-101500"
    assert compare._run_label(tmp_path / "cli1" / "20261202-101500-000001") == "cli1/20261202-101500-000001"
    assert compare._run_label(tmp_path / "cli1" / "20261202-101500-copy") == "20261202-101500-copy"
    assert compare._run_label(tmp_path / "cli1" / "x20261202-101500") == "x20261202-101500"


def test_the_versions_line_names_cuda_and_numpy_as_a_table_does_and_skips_runs_without_the_key():
    # kills: VERSIONED's display names of cuda and packages.numpy (CUDA, NumPy) changed
    envs = [("a", {"cuda": "12.1", "packages": {"numpy": "2.0"}}),
            ("b", {"cuda": "12.4", "packages": {"numpy": "2.1"}}), ("c", {"packages": {"numpy": "2.0"}})]
    assert compare.environment_differ_lines(envs) == [
        "The runs were made with other versions: CUDA 12.1 in a; 12.4 in b / NumPy 2.0 in a, c; 2.1 in b; their rows "
        "may differ for that alone (docs/scale.md)."]



def test_a_kernel_fingerprint_that_is_not_a_mapping_is_left_out():
    # kills: the isinstance(env.get("kernel_fingerprint"), dict) filter dropped (text read as a mapping)
    fingerprint = {"matmul": "9c48753c25"}
    envs = [("a", {"kernel_fingerprint": fingerprint}), ("b", {"kernel_fingerprint": "9c48753c25"}),
            ("c", {"kernel_fingerprint": {"matmul": "52"}})]
    assert compare.environment_differ_lines(envs) == [
        "The runs' CPU kernels compute matmul differently (kernel_fingerprint: a, c): rows that pass through them may "
        "differ for that alone (docs/scale.md)."]

# ---- compare: the config differ line ------------------------------------------------------------
def _configs(n_keys: int) -> list:
    return [(label, {"benchmark": "b", **{f"key{i}": f"{label}{i}" for i in range(n_keys)}}) for label in "xy"]


def test_the_config_line_names_six_keys_and_counts_the_rest():
    # kills: DIFFER_KEYS changed; parts[:DIFFER_KEYS] -> parts; `len(parts) > DIFFER_KEYS` -> `>=`
    (seven,) = compare.config_differ_lines(_configs(7))
    assert "key5: x5 in x; y5 in y; and 1 more key(s) (results.json's config)" in seven and "key6" not in seven
    (six,) = compare.config_differ_lines(_configs(6))
    assert "key5: x5 in x; y5 in y (results.json's config)" in six and "more key" not in six


def test_values_are_shortened_past_forty_characters_and_none_reads_null():
    # kills: _short's width or its `<=` changed; text[:width - 3] changed; None shown as "None"
    assert compare._short("a" * 40) == "a" * 40
    assert compare._short("a" * 41) == "a" * 37 + "..."
    assert compare._short(None) == "null"
    (line,) = compare.config_differ_lines([("x", {"benchmark": "b", "key": None}), ("y", {"benchmark": "b", "key": 1})])
    assert "key: null in x; 1 in y" in line


def test_an_empty_mapping_is_a_value_of_its_own():
    # kills: _flat_all's `isinstance(v, dict) and v` -> `isinstance(v, dict)` (an empty mapping vanishes)
    assert compare._flat_all({"plan": {"train": {}, "k": 1}}) == {"plan.train": {}, "plan.k": 1}


def test_options_of_a_method_not_known_here_are_compared_as_written():
    # kills: _run_options' fallback for an unknown (plugin) method -> None
    config = {"methods": ["finetune", "plugin_method_not_here"], "options": {"plugin_method_not_here": {"w": 2}}}
    out = compare._run_options(config)
    assert out["plugin_method_not_here"] == {"w": 2} and isinstance(out["finetune"], dict)
    assert compare._run_options({"methods": "finetune", "options": {"a": 1}}) == {"a": 1}  # not a list: as written


# ---- compare: runs that read a domain spec into other data --------------------------------------
def _run(run_dir, target, digests, **config):
    """A run directory with the config.yaml and data.json (digests of its splits) a run writes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(json.dumps({"source": "digits", "target": target, "seed": 0, **config}))
    (run_dir / "data.json").write_text(json.dumps({"format": 2, "source.train": "s1", **digests}))
    return run_dir


def _differ(*runs, target=None) -> list[str]:
    """data_differ_lines of ``(label, directory)`` runs whose rows name their config's target (or ``target``)."""
    rows = []
    for label, run_dir in runs:
        spec = target or json.loads((run_dir / "config.yaml").read_text())["target"]
        rows.append({"run": label, "source": "digits", "target": spec})
    return compare.data_differ_lines(list(runs), rows)


def test_a_spec_of_grouped_views_reads_data_by_seed(tmp_path):
    # kills: `"+" in spec or "@" in spec` -> `"+" in spec` (another seed's views said to be other data)
    a = _run(tmp_path / "a", "digits@grouped5", {"target.train": "t1"})
    b = _run(tmp_path / "b", "digits@grouped5", {"target.train": "t2"}, seed=1)
    assert _differ(("a", a), ("b", b)) == []
    c = _run(tmp_path / "c", "digits@grouped5", {"target.train": "t2"})
    assert _differ(("a", a), ("c", c)) == ["The target digits@grouped5 is not the same data in run a as in run c "
                                           "(target.train differ in their data.json): their rows are not on the "
                                           "same data."]


def test_three_groups_of_runs_are_named_apart_with_slashes(tmp_path):
    # kills: _runs_apart's `len(groups) == 2` -> `>= 2` ("run a as in run b" of three groups)
    runs = [(label, _run(tmp_path / label, "npz:/abs/t.npz", {"target.train": digest}))
            for label, digest in (("a", "t1"), ("b", "t2"), ("c", "t1"), ("d", "t3"))]
    (line,) = _differ(*runs)
    assert line == ("The target npz:/abs/t.npz is not the same data in runs a, c / b / d (target.train differ in "
                    "their data.json): their rows are not on the same data.")


def test_only_a_relative_npz_or_folder_path_gets_the_working_directory_note(tmp_path):
    # kills: startswith(("npz:", "folder:")) -> "npz:" only; `not ...is_absolute()` dropped; expanduser() dropped
    note = "; a relative path is read from the directory each run started in."
    for spec, noted in (("folder:imgs", True), ("npz:/abs/t.npz", False), ("npz:~/t.npz", False),
                        ("npz:t.npz+noise", True)):
        a = _run(tmp_path / spec / "a", spec, {"target.train": "t1"})
        b = _run(tmp_path / spec / "b", spec, {"target.train": "t2"})
        (line,) = _differ(("a", a), ("b", b))
        assert line.endswith(note) == noted, (spec, line)


def test_only_the_specs_a_runs_rows_name_are_compared(tmp_path):
    # kills: the `(label, side, spec) in named` filter dropped (a spec no row of the run names)
    a = _run(tmp_path / "a", "npz:/abs/t.npz", {"target.train": "t1"})
    b = _run(tmp_path / "b", "npz:/abs/t.npz", {"target.train": "t2"})
    assert _differ(("a", a), ("b", b), target="mnist") == []


def test_data_records_are_read_one_level_below_a_benchmark_and_a_broken_record_is_skipped(tmp_path):
    # kills: "*/" dropped from the depths searched; OSError or the isinstance(config, dict) check dropped
    bench = tmp_path / "bench"
    _run(bench / "pair", "npz:/abs/t.npz", {"target.train": "t1"})
    _run(bench / "no_config", "npz:/abs/t.npz", {"target.train": "t9"})
    (bench / "no_config" / "config.yaml").unlink()
    _run(bench / "a_list", "npz:/abs/t.npz", {"target.train": "t8"})
    (bench / "a_list" / "config.yaml").write_text("[1, 2]\n")
    records = compare._data_records(bench)
    assert [data["target.train"] for _, data in records] == ["t1"]


# ---- preflight: names and settings, nothing loaded ----------------------------------------------
def _data(**target) -> Prepared:
    """Tiny source and target splits of the toy domain (``target``: its sizes, classes)."""
    return Prepared(source=helpers.toy_split(0), target=helpers.toy_split(10, **target), channels=1)


def test_methods_that_train_on_source_images_are_refused_without_a_source_and_source_only_is_not():
    # kills: `cls is not SourceOnly` dropped from `reading`; the singular / plural words swapped
    alone = ExperimentConfig(source=None, pretrained="net.safetensors", methods=["source_only", "finetune"])
    preflight.check_names(alone)
    with pytest.raises(TransferkitError, match=r"^dann trains on labelled source images, and source: null gives "
                                               r"none .*: give the source domain, or leave it out \("):
        preflight.check_names(replace(alone, methods=["source_only", "dann"]))
    with pytest.raises(TransferkitError, match=r"^dann, coral train on labelled source .*or leave them out \("):
        preflight.check_names(replace(alone, methods=["dann", "coral"]))


def test_the_recorded_plugins_are_a_list_of_names_or_none(tmp_path):
    # kills: _recorded_plugins' isinstance(plugins, list) / isinstance(env, dict) checks dropped; str() dropped
    def recorded(text):
        (tmp_path / "results.json").write_text(text)
        return preflight._recorded_plugins(tmp_path)
    assert recorded('{"environment": {"plugins": ["mine", 3]}}') == ["mine", "3"]
    assert recorded('{"environment": {"plugins": "mine"}}') == []
    assert recorded('{"environment": ["mine"]}') == []
    assert recorded('["not", "a", "mapping"]') == []
    assert preflight._recorded_plugins(None) == []


def test_pretrain_settings_beside_a_pretrained_network_are_named_and_the_device_is_not():
    # kills: `k != "device"` dropped; the is / are choice swapped; the pretrained path left out
    cfg = ExperimentConfig(pretrained="net.safetensors")
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, lr=0.5))
    assert _warned(preflight.warn_pretrain_unused, cfg) == [
        "pretrain.lr: 0.5 is not used: pretrained: net.safetensors is the source network, nothing is pre-trained"]
    two = replace(cfg, pretrain=replace(cfg.pretrain, steps=7))
    assert _warned(preflight.warn_pretrain_unused, two) == [
        "pretrain.steps: 7, pretrain.lr: 0.5 are not used: pretrained: net.safetensors is the source network, "
        "nothing is pre-trained"]
    on_gpu = ExperimentConfig(pretrained="net.safetensors", device="cuda:0")  # pretrain.device follows: not named
    assert on_gpu.pretrain.device == "cuda:0" and _warned(preflight.warn_pretrain_unused, on_gpu) == []


def test_a_setting_refused_among_ratios_is_named_with_ratio_as_its_key(monkeypatch):
    # kills: the refusal's key `"k" if sub.k is not None else "ratio"` -> always "k"
    monkeypatch.setattr(preflight, "check_jobs", lambda cfg, data, methods: check(cfg.ratio < 5, "too many"))
    with pytest.raises(TransferkitError, match=r"^too many \(at ratio=8; ratio=2 of this run's settings pass: "
                                               r"leave ratio=8 out of ratio, or"):
        preflight.check_settings(ExperimentConfig(k=None, ratio=[2, 8]).settings(), None, [])


def test_a_warning_differing_only_in_a_decimal_number_is_given_once(monkeypatch):
    # kills: the blanking regex `\d+(\.\d+)?` -> `\d+` ("1.5" blanked "#.#", "1" blanked "#": not alike)
    monkeypatch.setattr(preflight, "check_jobs", lambda cfg, data, methods: warn(f"k={cfg.k}: {cfg.k / 2:g} a class"))
    said = _warned(preflight.check_settings, ExperimentConfig(k=[2, 3]).settings(), None, [])
    assert said == ["k=2: 1 a class (alike at k=3)"]


# ---- preflight: what the data allows ------------------------------------------------------------
def _counted(counts, groups=False) -> Domain:
    """A domain of ``counts[c]`` tiny images of class c (a group per image where ``groups``)."""
    import torch
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    return Domain("t", torch.zeros(len(labels), 1, 4, 4), labels, [f"c{c}" for c in range(len(counts))],
                  torch.arange(len(labels)) if groups else None)


def test_k_equal_to_the_smallest_class_fits_and_a_larger_one_names_the_classes_to_keep_and_the_fewest():
    # kills: `int(counts[c]) < cfg.k` -> `<=`; min(...) -> max(...) in "lower k to"; the kept classes left out
    preflight._check_k_fits(ExperimentConfig(k=3), _counted([3, 5, 4]))
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(ExperimentConfig(k=4), _counted([1, 3, 5, 4]))
    assert str(e.value) == (
        "k=4 is larger than the smallest class: 2 target class(es) have fewer than 4 training images: c0 (1), c1 (3); "
        "label at most 4 images per class with `k: null` and `ratio: 4` (a smaller class labels all of its), leave "
        "them out with target_classes (the classes to keep: ['c2', 'c3']), or lower k to 1")


def test_k_above_every_class_lists_no_classes_to_keep_and_cuts_a_long_list():
    # kills: `0 < len(keep)` dropped (": []" listed); `small[:30]` / `len(small) > 30` changed
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(ExperimentConfig(k=9), _counted([2] * 31))
    said = str(e.value)
    assert "c29 (2), ..." in said and "c30" not in said and "(the classes to keep)" in said
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(ExperimentConfig(k=9), _counted([2] * 30))
    assert "c29 (2); label at most 9" in str(e.value)


def test_an_empty_test_split_names_the_most_images_any_class_has():
    # kills: int(counts.max()) -> int(counts.min()) in the refusal of an empty test split
    target = Split(_counted([5, 2]), _counted([1, 1]), _counted([0, 0]))
    with pytest.raises(TransferkitError, match=r"^target mnist has no test images \(7 train\): a class needs at "
                                               r"least 3 images to give one to the test split \(the most any class "
                                               r"has is 6\)$"):
        preflight.check_jobs(ExperimentConfig(select_on="none"), Prepared(source=target, target=target, channels=1), [])


def test_the_unlabelled_rest_is_refused_when_any_seeds_subset_leaves_none_and_names_groups():
    # kills: all(len(u) > 0 ...) -> any(...); "group (video)" for a grouped target; names[:10] / ", ..." changed
    data = Prepared(source=helpers.toy_split(0), target=Split(_counted([1] * 11, groups=True), _counted([1] * 11),
                                                   _counted([1] * 11)), channels=1)
    dann = get_method("dann")
    preflight._check_unlabelled_left(ExperimentConfig(k=1), data, [get_method("finetune")], [_counted([])])
    with pytest.raises(TransferkitError) as e:
        preflight._check_unlabelled_left(ExperimentConfig(k=1), data, [dann], [_counted([1]), _counted([])])
    assert str(e.value) == ("k=1 takes every train group (video) of each target class (c0, c1, c2, c3, c4, c5, c6, "
                            "c7, c8, c9, ...: 1 each), so nothing is left unlabeled for dann, which trains on the "
                            "unlabelled target: lower k (at most 0), or leave it out of methods")


def _unscored(cfg, data) -> list[str]:
    from transferkit.splits import split_units
    counts, unit = split_units(data.target)
    return _warned(preflight._warn_unscored_classes, cfg, data, counts, unit)


def test_a_test_set_of_its_own_without_a_class_says_so_and_counts_the_targets_own_images():
    # kills: the `own` branch dropped (the target's split text); the count of train + val images replaced by
    # one that includes the config's test set
    data = _data()
    data.target.test = data.target.test.subset(data.target.test.labels != 3)
    data.target.val = data.target.val.subset(data.target.val.labels != 2)
    cfg = ExperimentConfig(test="npz:own.npz", select_on="target_val")
    said = _unscored(cfg, data)
    assert said[0] == ("test 'npz:own.npz' has no image of 1 target class(es): '3'; they are trained on but not "
                       "scored: accuracy is over the other 3 classes and their per_class_accuracy is null. Add test "
                       "images of them, or leave them out with target_classes")
    assert said[1].startswith("target mnist: 1 class(es) have no val images: '2' (6 images) (a class needs")


def _grouped_data(train, val, test) -> Prepared:
    """A target of classes c0, c1 in groups (videos) of 3 frames, its train / val / test splits of
    these frame labels (groups numbered apart per split), as source and target."""
    import torch

    def grouped(labels, first_group):
        labels = torch.tensor(labels)
        return Domain("t", torch.zeros(len(labels), 1, 28, 28), labels, ["c0", "c1"],
                      torch.arange(len(labels)) // 3 + first_group)
    target = Split(grouped(train, 0), grouped(val, 10), grouped(test, 20))
    return Prepared(source=target, target=target, channels=1)


def test_beside_a_test_set_of_its_own_a_grouped_target_s_classes_are_counted_in_groups():
    # found by the pass (fixed): with `test:` given, the count of a class without val groups was of train + val
    # images, named "groups" ('c1' (6 groups) for 2 groups of 3 frames)
    data = _grouped_data([0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0], [0, 0, 0, 1, 1, 1])
    for test in ("npz:own.npz", None):
        said = _unscored(ExperimentConfig(select_on="target_val", test=test), data)
        assert len(said) == 1 and "1 class(es) have no val" in said[0], said
        assert "'c1' (2 groups)" in said[0] if test else "'c1' (3 groups)" in said[0], said


def test_a_class_with_one_image_is_counted_as_one_image_and_more_than_ten_are_cut():
    # kills: `word[:-1] if int(counts[i]) == 1` dropped ("1 images"); ids[:10] / `len(ids) > 10` changed
    one = Split(_counted([1, 2]), _counted([0, 0]), _counted([0, 2]))
    said = _unscored(ExperimentConfig(select_on="none"), Prepared(source=one, target=one, channels=1))
    assert said[0].startswith("target mnist: 1 class(es) have no test images: 'c0' (1 image) (")
    many = Split(_counted([3] * 12), _counted([0] * 12), _counted([0] * 12))
    said = _unscored(ExperimentConfig(select_on="none"), Prepared(source=many, target=many, channels=1))
    assert "'c9' (3 images), ... (" in said[0] and "c10" not in said[0]


def test_a_class_without_val_images_is_named_when_the_test_split_has_every_class_and_untrained_ones_are_not():
    # kills: the test part's `continue` -> `break` (the val split left unchecked); `class_counts() > 0` -> `>= 0`
    full = Split(_counted([3, 3, 0]), _counted([1, 0, 0]), _counted([1, 1, 0]))
    said = _unscored(ExperimentConfig(select_on="target_val"), Prepared(source=full, target=full, channels=1))
    assert len(said) == 1 and said[0].startswith("target mnist: 1 class(es) have no val images: 'c1' (4 images) (")


def test_the_fewest_images_for_a_test_image_names_a_test_fraction_not_the_default():
    # kills: the test part reading val_fraction; the ", or a larger" tail dropped
    from transferkit.splits import fewest_for
    text = preflight._fewest_text(ExperimentConfig(test_fraction=0.1), "test", "images")
    assert text == (f"a class needs at least {fewest_for('test', 0.15, 0.1)} images to give one to the test split "
                    f"at test_fraction 0.1, or a larger test_fraction")
    assert preflight._fewest_text(ExperimentConfig(), "test", "images") == ("a class needs at least 3 images to give "
                                                                           "one to the test split")


# ---- preflight: warnings of settings that do not reach ------------------------------------------
def _balanced(**cfg) -> ExperimentConfig:
    base = ExperimentConfig(**cfg)
    return replace(base, train=replace(base.train, sampler="balanced"))


def test_balancing_names_methods_without_target_labels_in_the_plural_and_the_unlabelled_note_only_for_them():
    # kills: the plural words ("read", "their") swapped; the unlabelled note given to a method without that stream
    said = _warned(preflight._warn_balancing, _balanced(), [get_method("dann"), get_method("coral")])
    assert said == ["train.sampler: balanced balances the classes of labelled training images, but dann, coral read "
                    "no target label: only their labelled source images are balanced (their unlabelled target images "
                    "are not balanced: the target's imbalance is not addressed)"]
    said = _warned(preflight._warn_balancing, _balanced(), [get_method("attribute_zsl"), get_method("finetune")])
    assert said == ["train.sampler: balanced balances the classes of labelled training images, but attribute_zsl "
                    "reads no target label: only its labelled source images are balanced"]


def test_source_only_is_told_of_pretrain_only_when_it_pre_trains_otherwise():
    # kills: `not cfg.pretrained` dropped; `getattr(cfg.pretrain, k) != v` -> always true
    source_only = [get_method("source_only")]
    assert _warned(preflight._warn_balancing, _balanced(), source_only)[0].startswith(
        "source_only's row is the source network, which pretrain trains (pretrain.sampler: shuffle), not "
        "train.sampler: balanced: set them in pretrain")
    assert _warned(preflight._warn_balancing, _balanced(pretrained="net.safetensors"), source_only) == []
    both = _balanced()
    both = replace(both, pretrain=replace(both.pretrain, sampler="balanced"))
    assert _warned(preflight._warn_balancing, both, source_only) == []


def test_more_validation_labels_are_named_only_above_the_training_labels_with_the_ratio_or_all():
    # kills: `len(val) <= trained` -> `<`; the ratio / "all" subset texts; max(...) -> min(...) of the subsets
    data, finetune = _data(), [get_method("finetune")]
    val = len(data.target.val)  # 8
    equal = [_counted([2] * 4), _counted([1] * 4)]
    assert _warned(preflight._warn_more_validation_labels, ExperimentConfig(k=2), data, finetune, equal) == []
    fewer = [_counted([1] * 4), _counted([1, 1, 1, 2])]
    said = _warned(preflight._warn_more_validation_labels, ExperimentConfig(k=None, ratio=1), data, finetune, fewer)
    assert said[0].startswith(f"finetune trains on 5 labelled target images (ratio=1) but selects (early stopping, "
                              f"select_on: target_val) on the {val} labels of the target's validation split, which "
                              f"its rows'")
    said = _warned(preflight._warn_more_validation_labels, ExperimentConfig(k=None), data, finetune, fewer)
    assert said[0].startswith("finetune trains on 5 labelled target images (all) but")


def test_select_metric_unused_says_why_for_methods_that_select_on_no_labels():
    # kills: `cls is not SourceOnly` dropped from the selecting methods; the plural "select" / "selects" swapped
    data = _data()
    cfg = ExperimentConfig(select_metric="balanced_accuracy", select_on="target_val")
    said = _warned(preflight._warn_selection_settings_unused, cfg, data, [get_method("dann"), get_method("coral")])
    assert said == ["select_metric: balanced_accuracy scores model selection, which no method here does (select_on: "
                    "target_val, and dann, coral select on no labels): it changes nothing; leave it out"]
    source_only = replace(cfg, select_on="source_val")
    said = _warned(preflight._warn_selection_settings_unused, source_only, data, [get_method("source_only")])
    assert said == ["select_metric: balanced_accuracy scores model selection, which no method here does (select_on: "
                    "source_val, and source_only selects on no labels): it changes nothing; leave it out"]


def test_val_per_class_unused_says_why_select_on_none_or_the_source():
    # kills: the "select_on: none" reason or the plain "select_on: X" reason replaced by the no-labels one
    data, finetune = _data(), [get_method("finetune")]
    said = _warned(preflight._warn_selection_settings_unused, ExperimentConfig(select_on="none", val_per_class=3),
                   data, finetune)
    assert said == ["val_per_class: 3 caps the target's validation split, which no method here selects on (select_on: "
                    "none): it changes nothing; leave it out"]
    said = _warned(preflight._warn_selection_settings_unused,
                   ExperimentConfig(select_on="source_val", val_per_class=3), data, finetune)
    assert said == ["val_per_class: 3 caps the target's validation split, which no method here selects on (select_on: "
                    "source_val): it changes nothing; leave it out"]


def test_a_warning_given_twice_in_one_setting_is_given_once_and_one_of_a_single_setting_names_no_other(
        monkeypatch):
    # kills: the `sub.setting not in settings` check dropped ("alike at k=1, k=2, k=2"); `len(settings) > 1` -> `>= 1`
    def check_jobs(cfg, data, methods):
        warn(f"k={cfg.k}: class 3 is small")
        warn(f"k={cfg.k}: class 4 is small")
        if cfg.k == 1:
            warn("k=1: only here")
    monkeypatch.setattr(preflight, "check_jobs", check_jobs)
    said = _warned(preflight.check_settings, ExperimentConfig(k=[1, 2]).settings(), None, [])
    assert said == ["k=1: class 3 is small (alike at k=2)", "k=1: only here"]


def test_alike_settings_are_added_only_when_the_warning_names_its_own_setting(monkeypatch):
    # kills: the setting looked for as a substring ("k=1" found inside "k=10", so "(alike at k=3)" added to a warning
    # that names no setting of this run)
    def check_jobs(cfg, data, methods):
        warn("k=10 would need 10 images of class 3")
        warn(f"k={cfg.k}.5 is not a setting of this run")
        warn(f"class 3 has too few images at k={cfg.k}.")  # its setting at the end of a sentence: named
    monkeypatch.setattr(preflight, "check_jobs", check_jobs)
    said = _warned(preflight.check_settings, ExperimentConfig(k=[1, 3]).settings(), None, [])
    assert said == ["k=10 would need 10 images of class 3", "k=1.5 is not a setting of this run",
                    "class 3 has too few images at k=1. (alike at k=3)"]


# ---- preflight: check_jobs on tiny data ---------------------------------------------------------
def _jobs_warnings(cfg, data, names) -> list[str]:
    return _warned(preflight.check_jobs, cfg, data, [get_method(m) for m in names])


def test_a_method_reading_no_target_label_is_named_as_not_selecting_and_source_only_is_not(one_thread):
    # kills: `cls is not SourceOnly` dropped from the unselected methods (source_only named too)
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, methods=["source_only", "dann"])
    said = [m for m in _jobs_warnings(cfg, _data(), cfg.methods) if "select on the target's" in m]
    assert said == ["dann reads no target label, so it does not select on the target's validation labels (select_on: "
                    "target_val) and trains its whole budget (set select_on: none or source_val to say so)"]


def test_unlabelled_images_no_method_trains_on_are_named_and_not_when_one_does(one_thread):
    # kills: the unused-unlabelled warning's `not any(...)` -> `any(...)` or dropped
    data = replace(_data(), unlabeled=helpers.toy_domain(16, seed=5))
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", unlabeled="npz:u.npz",
                           methods=["finetune"])
    assert [m for m in _jobs_warnings(cfg, data, ["finetune"]) if m.startswith("unlabeled")] == [
        "unlabeled 'npz:u.npz': none of the methods (finetune) trains on unlabelled target images, so these images "
        "are not used (domain adaptation, finetune_adv and lext do)"]
    assert not [m for m in _jobs_warnings(cfg, data, ["finetune", "dann"]) if m.startswith("unlabeled")]


def test_one_method_picking_its_unit_on_the_source_is_named_in_the_singular(one_thread):
    # kills: "picks its" / "pick their" swapped
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="source_val", methods=["tap", "finetune"])
    said = [m for m in _jobs_warnings(cfg, _data(), cfg.methods) if "unit on the validation" in m]
    assert said == ["tap picks its unit on the validation split, which select_on: source_val makes the source's "
                    "images: the unit that keeps the source best, not the one that transfers (seed 002 picks on the "
                    "target's: select_on: target_val)"]



def test_a_run_whose_data_json_has_no_digests_of_a_side_is_not_compared_on_it(tmp_path):
    # kills: _domain_digests' `isinstance(spec, str) and digests` -> `isinstance(spec, str)` (no digests as other data)
    a = _run(tmp_path / "a", "npz:/abs/t.npz", {})
    b = _run(tmp_path / "b", "npz:/abs/t.npz", {"target.train": "t1"})
    assert _differ(("a", a), ("b", b)) == []


def test_k_above_a_grouped_class_is_counted_in_groups_not_frames():
    # kills: the `groups is None` guard before _check_k_fits dropped (k=7 named against c1's 6 frames, not 2 groups)
    data = _grouped_data([0] * 9 + [1] * 6, [0] * 3 + [1] * 3, [0] * 3 + [1] * 3)
    for k in (3, 7):
        with pytest.raises(TransferkitError, match=rf"^k={k} is larger than the number of groups \(videos\) of "
                                                   rf"class(es c0 \(3\),)? c1 \(2\) in domain"):
            preflight.check_jobs(ExperimentConfig(k=k), data, [get_method("finetune")])
