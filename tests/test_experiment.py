"""Experiment runner: class handling across source and target, the Python API."""

import json
import os
import re
import shutil
import warnings
from dataclasses import replace

import pytest
import torch

from transferkit.api import Transfer
from transferkit.backbones import build_backbone
from transferkit.config import ExperimentConfig, load_config
from transferkit.domain import Domain, head_mapping
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.experiment import run_experiment
from transferkit.fitting import retarget_head
from transferkit.preflight import check_names
from transferkit.rundata import prepare_domains
from transferkit.splits import sample_k_shot, split_domain

TINY_PRE = TrainConfig(steps=20, eval_every=10)
TINY = TrainConfig(steps=10, eval_every=5, batch_size=16)


def test_head_mapping_and_retarget_copy_shared_rows():
    net = build_backbone("convnet4", num_classes=5, in_channels=1, image_size=28)
    old = net.get_classifier().weight.detach().clone()
    assert head_mapping(list("01234"), list("3456")) == [3, 4, None, None]
    retarget_head(net, list("01234"), list("3456"))
    new = net.get_classifier().weight
    assert new.shape[0] == 4
    assert torch.equal(new[0], old[3]) and torch.equal(new[1], old[4])


def test_head_mapping_warns_of_names_that_differ_only_in_case_or_spaces(recwarn):
    with pytest.warns(UserWarning, match=r"\['Cat', 'dog '\] differ from the source's \['cat', 'dog'\] only in case"):
        assert head_mapping(["cat", "dog", "cow"], ["Cat", "dog ", "cow", "eel"]) == [None, None, 2, None]
    recwarn.clear()
    assert head_mapping(["cat", "dog"], ["dog", "eel"]) == [1, None]
    assert not recwarn.list


def test_disjoint_label_sets_finetune(tmp_path):
    cfg = ExperimentConfig(name="cross", source="mnist", target="digits", source_classes="0-4",
                           target_classes="5-9", methods=["finetune", "linear_probe"], k=2, repeats=1,
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    _, rows = run_experiment(cfg, log=lambda *a: None)
    assert {r["method"] for r in rows} == {"finetune", "linear_probe"}
    assert all(len(r["per_class_accuracy"]) == 5 and r["n_labeled"] == 10 for r in rows)


def test_source_only_refuses_new_classes(tmp_path):
    cfg = ExperimentConfig(name="x", source="mnist", target="digits", source_classes="0-4",
                           target_classes="5-9", methods=["source_only"], k=2, repeats=1,
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match="absent from the source"):
        run_experiment(cfg, log=lambda *a: None)


def test_adaptation_methods_predict_the_target_classes_by_name(tmp_path):
    """A method that never sees target labels classifies with the source head: its outputs
    become the target classes (matched by name) after training, and a target class the
    source lacks is refused before pre-training."""
    cfg = ExperimentConfig(name="sub", source="digits", target="mnist", target_classes="7,2,9",
                           methods=["dann", "source_only"], k=2, repeats=1, pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path))
    _, rows = run_experiment(cfg, log=lambda *a: None)
    assert sorted(row["method"] for row in rows) == ["dann", "source_only"]
    for row in rows:
        assert len(row["confusion"]) == 3 and all(len(r) == 3 for r in row["confusion"])
        assert row["class_names"] == ["7", "2", "9"]  # the order of the per-class accuracies
    with pytest.raises(TransferkitError, match=r"method dann: it never sees target labels.*\['5'"):
        run_experiment(ExperimentConfig(name="new", source="digits", source_classes="0-4", target="mnist",
                                        target_classes="3-6", methods=["dann"], pretrain=TINY_PRE, train=TINY,
                                        out_dir=str(tmp_path)), log=lambda *a: pytest.fail("pre-trained"))


def test_partial_da_rows_also_score_the_argmax_over_every_source_class_and_the_tables_say_so(tmp_path):
    """A target whose classes are a strict subset of the source's: source_only and dann predict
    among the target's classes only; their rows also record the accuracy of the argmax over all
    source classes (the partial-DA protocol), and a line under the tables names both."""
    from transferkit.io import load_safetensors
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    cfg = ExperimentConfig(name="partial", source="digits", target="mnist", target_classes="7,2,9",
                           methods=["source_only", "dann", "finetune"], k=2, repeats=1, select_on="none",
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    by = {r["method"]: r for r in rows}
    assert "accuracy_all_source_classes" not in by["finetune"]  # a head over the target classes
    for name in ("source_only", "dann"):
        assert by[name]["n_source_classes"] == 10
        assert by[name]["accuracy_all_source_classes"] <= by[name]["accuracy"]  # more classes to confuse with
    state, _ = load_safetensors(run_dir / "source.safetensors", "source")
    net = build_backbone("convnet4", num_classes=10, in_channels=1, image_size=28)
    net.load_state_dict(state)
    test = prepare_domains(cfg).target.test
    with torch.no_grad():
        pred = net.eval()(test.images).argmax(1)
    truth = torch.tensor([7, 2, 9])[test.labels]
    assert by["source_only"]["accuracy_all_source_classes"] == int((pred == truth).sum()) / len(test)
    text = (run_dir / "results.md").read_text()
    line = ("source_only, dann predict with the source classifier among the target's 3 classes only (closed to "
            "them); the partial-DA protocol predicts among all 10 source classes, which gives accuracy (%, mean "
            f"over seeds, accuracy_all_source_classes): source_only "
            f"{100 * by['source_only']['accuracy_all_source_classes']:.1f}; dann")
    assert line in text and line in markdown_table(summarize(rows), rows)
    summary = {s["method"]: s for s in json.loads((run_dir / "results.json").read_text())["summary"]}
    assert summary["dann"]["accuracy_all_source_classes_mean"] == by["dann"]["accuracy_all_source_classes"]


def test_transfer_maps_the_source_head_of_an_adaptation_method_to_the_target_classes():
    from helpers import toy_domain

    from transferkit.domain import Domain
    src = toy_domain(40, classes=5, name="src")
    t = toy_domain(20, seed=1, classes=3)
    tgt = Domain("tgt", t.images, t.labels, ["4", "0", "2"])
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    model = Transfer("dann", backbone="lenet", train=TrainConfig(steps=2, eval_every=2)).fit(
        target=tgt, source=src, unlabeled=tgt, net=net)
    trained = model.method_.net
    assert trained.num_classes == 3 and model.predict(t.images).max() <= 2
    train = TrainConfig(steps=30, eval_every=10, batch_size=16)  # early stopping sees the target val by name
    fitted = Transfer("source_only", backbone="lenet", train=train).fit(source=src, target=tgt, val=tgt)
    assert fitted.fit_result_.best_val_accuracy == fitted.score(tgt)
    seen = Domain("seen", src.images, src.labels, ["0", "1", "2", "3", "4"])
    first = Domain("first", t.images, t.labels, ["0", "1", "2"])  # ids mean the same digits as in `seen`
    zsl = Transfer("attribute_zsl", backbone="lenet", train=TrainConfig(steps=1, eval_every=1)).fit(
        source=seen, target=first)  # it does not pre-train: a pretrain= config would warn that it is unused
    assert zsl.predict_logits(t.images[:2]).shape == (2, 3)  # the target's classes, matched to digit rows
    renumbered = Transfer("attribute_zsl", backbone="lenet", train=TrainConfig(steps=1, eval_every=1)).fit(
        source=seen, target=Domain("r", t.images, t.labels, ["0", "7", "9"]))
    assert renumbered.method_.output_rows == [0, 7, 9]  # label 1 is digit 7's row, not digit 1's
    for name in ("source_only", "dann"):
        with pytest.raises(TransferkitError, match=f"method {name}: it never sees target labels.*'9'"):
            Transfer(name, backbone="lenet", pretrain=TrainConfig(steps=1000)).fit(
                target=Domain("new", t.images, t.labels, ["1", "9", "2"]), source=src)
    with pytest.raises(TransferkitError, match="^method 'dann' has no option 'foo'; it takes depth"):
        Transfer("dann", backbone="lenet", pretrain=TrainConfig(steps=1000), foo=1)  # before fit and pre-training


def test_transfer_takes_images_without_labels_as_the_unlabeled_domain_only():
    from helpers import toy_domain
    src, t = toy_domain(40, classes=4, name="src"), toy_domain(20, seed=1, classes=4)
    bare = Domain.unlabeled("mine", t.images)
    tiny = TrainConfig(steps=2, eval_every=2)
    model = Transfer("dann", backbone="lenet", pretrain=tiny, train=tiny).fit(source=src, target=t, unlabeled=bare)
    assert model.classes_ == t.class_names
    with pytest.raises(TransferkitError, match="the domain 'mine' has no labels"):
        model.score(bare)
    for given in ({"target": bare}, {"target": t, "val": bare}):
        with pytest.raises(TransferkitError, match=f"fit: the {list(given)[-1]} domain 'mine' has no labels .*"
                                                   f"fit\\(unlabeled=...\\)"):
            Transfer("finetune", backbone="lenet", pretrain=TrainConfig(steps=1000)).fit(source=src, **given)


def test_a_config_s_unlabeled_images_are_what_the_methods_on_unlabelled_images_read(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import transferkit.experiment as experiment
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):  # flat, colour and larger than the run's images: read at its size and channels
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(raw / f"{i}.jpg")
    seen, fit = {}, experiment.fit_for_target
    monkeypatch.setattr(experiment, "fit_for_target", lambda method, *a, **domains: (
        seen.setdefault(type(method).name, (domains["unlabeled"], domains["target"])), fit(method, *a, **domains))[1])
    cfg = ExperimentConfig(name="raw", source="digits", target="mnist", unlabeled=f"folder:{raw}", k=2, repeats=1,
                           methods=["dann", "finetune"], pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    unlabeled, labeled = seen["dann"]
    assert not unlabeled.labeled and len(unlabeled) == 7 and unlabeled.images.shape[1:] == (1, 28, 28)
    assert len(labeled) == 20 and labeled.labeled  # k=2 of the target's 10 classes
    by = {r["method"]: r for r in rows}
    assert (by["dann"]["unlabeled"], by["dann"]["n_unlabeled"]) == (f"folder:{raw}", 7)
    assert "unlabeled" not in by["finetune"]
    assert f"Unlabelled target images of dann: folder:{raw}, 7 images (instead" in (run_dir / "results.md").read_text()
    assert by["dann"]["unlabeled_in_test"] == 0
    saved = torch.load(next((run_dir / "models").glob("dann-*.pt")), weights_only=False)
    assert saved.classes_ == [str(i) for i in range(10)]  # a model file copied out of the run knows its classes
    assert "unlabeled" in json.loads((run_dir / "data.json").read_text())
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(raw / "7.jpg")
    with pytest.raises(TransferkitError, match=r"results computed on other data.* of unlabeled changed since "
                                               r"\(unlabeled: 7 images there, 8 now\); restore them"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    with pytest.warns(TransferkitWarning, match=r"none of the methods \(finetune\) trains on unlabelled target"):
        unused_dir, unused_rows = run_experiment(replace(cfg, name="unused", methods=["finetune"]), log=lambda *a: None)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(raw / "8.jpg")
    with warnings.catch_warnings(record=True) as said:  # no finished row read them: kept
        warnings.simplefilter("always")
        assert run_experiment(replace(cfg, name="unused", methods=["finetune"]), run_dir=unused_dir,
                              log=lambda *a: None)[1] == unused_rows
    assert not any("trains on unlabelled target" in str(w.message) for w in said)  # no job left to warn about
    assert json.loads((unused_dir / "data.json").read_text())["sizes"]["unlabeled"] == 9


def test_unlabelled_images_that_are_target_test_images_are_named_and_counted(tmp_path, recwarn):
    cfg = ExperimentConfig(name="leak", source="mnist", target="digits", unlabeled="digits", k=None, repeats=1,
                           methods=["dann"], select_on="none", pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path),
                           channels=3)
    data = prepare_domains(cfg)  # the whole of digits, a grey domain, read as the colour run's images
    assert data.unlabeled.images.shape[1] == 3
    assert data.unlabeled_overlap == {"val": len(data.target.val), "test": len(data.target.test)}
    said = [str(w.message) for w in recwarn]
    assert any(f"{len(data.target.val)} of its images are target val images and {len(data.target.test)} of its "
               f"images are target test images" in m and "transductive" in m for m in said)
    assert any("1 channel(s) and are converted to the run's 3 (the config's `channels`)" in m for m in said)
    from transferkit.tables import unlabeled_images_line
    rows = [{"method": "dann", "unlabeled": "digits", "n_unlabeled": 1797, "unlabeled_in_test": 450,
             "unlabeled_in_val": 269}]
    assert "450 of them are target test images and 269 of them are target val images (transductive)" in \
        unlabeled_images_line(rows)[0]


def test_configs_made_in_python_are_checked_as_yaml_ones():
    assert TrainConfig(steps=3.0).steps == 3 and ExperimentConfig(k=5).k == 5
    with pytest.raises(TransferkitError, match="config k must be int or a list of ints or null, got the text '5'"):
        ExperimentConfig(k="5")  # text is no number, as in a YAML file
    assert ExperimentConfig(train={"lr": 0.1}).train == TrainConfig(steps=300, eval_every=25, lr=0.1)
    assert ExperimentConfig(methods=("finetune",)).methods == ["finetune"]
    assert Transfer("finetune", train={"steps": 7}).train_cfg == TrainConfig(steps=7)
    for make, message in ((lambda: TrainConfig(steps=2.5), "steps must be int, got 2.5"),
                          (lambda: TrainConfig(progress="yes"), "progress must be bool or null"),
                          (lambda: ExperimentConfig(name=None), "name may not be null"),
                          (lambda: ExperimentConfig(repeats=1.5), "repeats must be int"),
                          (lambda: ExperimentConfig(train=3), "train must be a TrainConfig or a mapping"),
                          (lambda: ExperimentConfig(train={"stesp": 3}), "unknown config key 'train.stesp'"),
                          (lambda: Transfer("finetune", pretrain=[1]), "pretrain must be a TrainConfig"),
                          (lambda: ExperimentConfig(methods=["ft_unit:conv1"], options={"ft_unit": {"unit": "x"}}),
                           "keyed by the method's full name")):
        with pytest.raises(TransferkitError, match=message):
            make()


def test_config_overrides_and_defaults():
    cfg = load_config(None, ["train.steps=7", "methods=finetune,linear_probe", "k=3"])
    assert cfg.train.steps == 7 and cfg.methods == ["finetune", "linear_probe"] and cfg.setting == "k=3"
    assert cfg.pretrain.steps == ExperimentConfig().pretrain.steps
    with pytest.raises(TransferkitError, match="k or ratio"):
        load_config(None, ["ratio=30"])


def test_a_section_given_in_part_keeps_its_own_defaults_and_values_are_typed():
    cfg = load_config(None, ["pretrain.batch_size=32", "train.lr=1e-4", "train.steps=1e3"])
    default = ExperimentConfig()
    assert (cfg.pretrain.steps, cfg.pretrain.eval_every, cfg.pretrain.batch_size) == (
        default.pretrain.steps, default.pretrain.eval_every, 32)  # not TrainConfig's own 300 / 50
    assert cfg.train.eval_every == default.train.eval_every
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float) and cfg.train.steps == 1000
    assert load_config(None, ["train.steps=9007199254740993"]).train.steps == 9007199254740993  # not via float


def test_set_keeps_the_text_of_string_fields_and_merges_sections():
    from transferkit.bench import make_plan
    cfg = load_config(None, ["name=1.10", "pretrained=007", "train.lr=1e-4", "k=3"])
    assert (cfg.name, cfg.pretrained, cfg.train.lr, cfg.k) == ("1.10", "007", 1e-4, 3)
    quick = make_plan("flex", True)
    merged = make_plan("flex", True, ["train={steps: 100}"]).train  # the quick plan's other values stay
    assert merged.steps == 100
    assert (merged.eval_every, merged.patience) == (quick.train.eval_every, quick.train.patience)
    with pytest.raises(TransferkitError, match="--set k: the value is not valid YAML"):
        load_config(None, ["k=[1"])
    both = ["methods=[dann, coral]", "options={dann: {weight: 0.3}, coral: {weight: 2}}"]
    assert load_config(None, both + ["methods=[dann]", "options.coral=null"]).options == {"dann": {"weight": 0.3}}
    kept = {"dann": {"weight": 0.3}, "coral": {"weight": 2}}  # coral's options stay for a run that includes it
    for narrowed in ("methods=[dann]", "methods=[mmd]"):
        assert load_config(None, both + [narrowed]).options == kept
    with pytest.raises(TransferkitError, match=r"options for ft_unit:cnv1, which is not in methods .*: options are "
                                               r"keyed by the method's full name \(ft_unit:conv1\)"):
        load_config(None, ["methods=[ft_unit:conv1]", "options={ft_unit:cnv1: {lr_mult: 2}}"])
    with pytest.raises(TransferkitError, match="unknown method 'mcd'"):  # not "options for dann, which is not in"
        load_config(None, both + ["methods=[source_only, mcd]"])
    assert load_config(None, both + ["options={dann: {weight: 1}}"]).options == {"dann": {"weight": 1}}


def test_set_null_below_a_method_name_is_a_value_not_a_dropped_key(tmp_path):
    constant = load_config(None, ["methods=[dann]", "options.dann.lr_schedule=null"])
    assert constant.options == {"dann": {"lr_schedule": None}}  # dann's own default is "dann" (decaying)
    path = tmp_path / "uda.yaml"
    path.write_text("methods: [dann]\noptions: {dann: {lr_schedule: dann, weight: 0.3}}\n")
    nulled = load_config(path, ["options.dann.lr_schedule=null"]).options
    assert nulled == {"dann": {"lr_schedule": None, "weight": 0.3}}
    assert load_config(path, ["options.dann=null"]).options == {}


@pytest.mark.parametrize("assignment, message", [
    ("train=5", "config train must be a mapping"),
    ("repeats=2.5", "config repeats must be int, got 2.5"),
    ("seed=abc", "config seed must be int"),
    ("k=abc", "config k must be int or a list of ints or null"),
    ("train.steps=10.5", "config train.steps must be int"),
    ("train.momentum=abc", "config train.momentum must be float"),
    ("train.amp=3", "config train.amp must be bool"),
    ("image_size=null", "config image_size may not be null"),
    ("train.checkpoint_every=0", "config train: checkpoint_every must be >= 1"),
    ("train.patience=-1", "config train: patience must be >= 1 or None"),
    ("train.cache_limit_mb=-1", "config train: cache_limit_mb must be >= 0 (0 caches nothing), got -1"),
    ("pretrain.steps=0", "config pretrain: steps must be >= 1, got 0"),
    ("methods=[finetune,finetune]", "methods lists finetune more than once"),
    ("options=5", "options must map a method name"),
    ("options.finetun.lr=1", "options for finetun, which names no method: unknown method 'finetun'"),
    ("name=../../elsewhere", "name '../../elsewhere' names the run's folder under out_dir"),
    ("name=..", "no '/'"),
    ("methods=[1]", "methods must be a list of method names"),
    ("methods=[finetune, null]", "methods must be a list of method names"),
    ("train.device=cuda", "train.device is 'cuda' but device is 'cpu'"),
    ("device=tpu", "unknown device 'tpu'"),
    ("seed=1e20", "seed must be in 0..2**32 - repeats"),
    ("seed=-1", "seed must be in 0..2**32 - repeats"),
])
def test_bad_config_values_are_named(assignment, message):
    with pytest.raises(TransferkitError, match=re.escape(message)):
        load_config(None, [assignment])


def test_the_config_device_wins_over_the_environment_and_numpy_values_write_as_plain_yaml(monkeypatch):
    import numpy as np
    import yaml

    from transferkit.config import dump_config
    from transferkit.rundir import job_digest
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "auto")  # the stages' defaults: nobody set them
    cfg = load_config(None, ["device=cpu"])
    assert (cfg.device, cfg.pretrain.device, cfg.train.device) == ("cpu", "cpu", "cpu")  # they follow `device`
    stored = dump_config(cfg)
    monkeypatch.delenv("TRANSFERKIT_DEVICE")
    assert yaml.safe_load(stored)["train"]["device"] == "cpu"  # config.yaml loads without the variable too
    sweep = ExperimentConfig(methods=["dann"], options={"dann": {"weight": np.float64(0.3), "depth": np.int64(2)}},
                             source_classes=np.arange(3), seed=np.int64(1))
    read = yaml.safe_load(dump_config(sweep))
    assert read["options"] == {"dann": {"weight": 0.3, "depth": 2}} and read["source_classes"] == [0, 1, 2]
    typed = ExperimentConfig(methods=["dann"], options={"dann": {"weight": 0.3, "depth": 2}}, source_classes=[0, 1, 2],
                             seed=1)
    assert job_digest(sweep, "dann") == job_digest(typed, "dann")
    assert yaml.safe_load(dump_config(ExperimentConfig(target_classes=frozenset({3, 2}))))["target_classes"] == [2, 3]
    assert ExperimentConfig(target_classes={True, 2}).target_classes == {True, 2}  # not ids: parse_classes names it


def test_a_saved_config_of_another_device_runs_with_device_given(tmp_path):
    """A config.yaml stores its device in each stage too; --device (an override of `device`)
    wins over the file, and those stored copies follow it."""
    from transferkit.config import dump_config
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(load_config(None, ["device=auto"])))
    cfg = load_config(saved, ["device=cpu"])
    assert (cfg.device, cfg.pretrain.device, cfg.train.device) == ("cpu", "cpu", "cpu")
    with pytest.raises(TransferkitError, match=re.escape("train.device is 'cuda' but device is 'cpu'")):
        load_config(saved, ["train.device=cuda", "device=cpu"])  # a stage set on purpose is not a stored copy


def test_unknown_method_option_fails_before_any_work(tmp_path):
    cfg = load_config(None, ["methods=[finetune]", "options.finetune.foo=1", f"out_dir={tmp_path}"])
    with pytest.raises(TransferkitError, match=r"method 'finetune' takes no options, got \['foo'\]"):
        run_experiment(cfg, log=lambda *a: None)
    cfg = load_config(None, ["methods=[dann]", "options.dann.wieght=1", f"out_dir={tmp_path}"])
    with pytest.raises(TransferkitError, match="^method 'dann' has no option 'wieght'; did you mean 'weight'\\?$"):
        run_experiment(cfg, log=lambda *a: None)  # the known options listed, as Transfer(...) lists them
    assert not any(tmp_path.iterdir())  # failed before the run directory, let alone pre-training


@pytest.mark.parametrize("method, option, message", [
    ("ft_fc1", "n=2", r"ft_fc1 tunes the last 1 unit\(s\); for n=2 use ft_fc with options {n: 2}"),
    ("ft_fc2", "n='1'", r"ft_fc2 tunes the last 2 unit\(s\); for n=1 use ft_fc"),  # text read as a number first
    ("ft_unit:conv2", "unit=fc1", "ft_unit:conv2 tunes unit conv2; for unit=fc1 use ft_unit:fc1"),
    ("adda_encoder", "variant=full", "adda_encoder is ADDA's encoder_only variant; for variant='full' use adda"),
    ("multilayer_adda", "untied=false", "multilayer_adda is multilayer_adv's untied form; for untied=False use"),
])
def test_an_option_the_method_name_fixes_is_refused_before_any_work(tmp_path, method, option, message):
    cfg = load_config(None, [f"methods=[{method}]", f"options.{method}.{option}", f"out_dir={tmp_path}"])
    with pytest.raises(TransferkitError, match=message):
        check_names(cfg)
    with pytest.raises(TransferkitError, match=message):
        run_experiment(cfg, log=lambda *a: None)
    assert not any(tmp_path.iterdir())  # before the run directory, the data and pre-training
    default = {"ft_fc1": "n=1", "ft_fc2": "n=2", "ft_unit:conv2": "unit=conv2", "adda_encoder": "variant=encoder_only",
               "multilayer_adda": "untied=true"}[method]
    check_names(load_config(None, [f"methods=[{method}]", f"options.{method}.{default}"]))  # the fixed value is fine


@pytest.mark.parametrize("option, message", [
    ("options.dann.wieght=1", r"'wieght'.*dann is not in methods, but its options are kept .*--set options.dann=null"),
    ("options.dann.weight=abc", r"method dann with options {'weight': 'abc'}: option weight must be a finite number "
                                r">= 0"),
    ("options.dann.lr_schedule=cosin", "option lr_schedule must be one of constant"),
    ("options.finetune_proto.metric=3", "option metric must be text, got 3"),
])
def test_options_of_a_method_not_run_are_kept_but_must_be_valid(tmp_path, option, message):
    base = ["methods=[finetune]", f"out_dir={tmp_path}"]
    cfg = load_config(None, base + [option])  # kept: a name of a method, so --set methods=... may narrow a config
    with pytest.raises(TransferkitError, match=message):
        check_names(cfg)
    with pytest.raises(TransferkitError, match=message):
        run_experiment(cfg, log=lambda *a: None)
    assert not any(tmp_path.iterdir())
    check_names(load_config(None, base + ["options.dann.weight=0.3", "options.dann.lr_schedule=null"]))


@pytest.mark.parametrize("assignments, message", [
    (["methods=[finetune]", "k=400"], "k=400 is larger than the smallest class"),
    (["methods=[source_only, ft_unit:conv9]"], "ft_unit:conv9.*unknown unit 'conv9'"),
    (["methods=[finetune]", "target=npz:{npz}"], "has no test images"),
    (["methods=[dann]", "options={{dann: {{lr_schedule: cosin}}}}"], "option lr_schedule must be one of constant"),
    (["methods=[dann]", "options={{dann: {{weight: -1}}}}"],
     "^method dann with options {'weight': -1}: option weight must be a finite number >= 0, got -1$"),
    (["methods=[dann]", "options={{dann: {{hidden: 0}}}}"], "option hidden must be a whole number >= 1"),
    (["methods=[flex]", "options={{flex: {{image_units: [stnn]}}}}"], "unknown image unit kind 'stnn'"),
    (["methods=[lext]", "options={{lext: {{layers: [fc1, bogus]}}}}"], "unknown layer 'bogus'"),
    (["methods=[tap]", "options={{tap: {{units: [conv1, fc9]}}}}"], "unknown unit 'fc9'"),
    (["methods=[mmd]", "options={{mmd: {{scales: []}}}}"], "scales must be a non-empty list"),
    (["methods=[finetune_proto]", "options={{finetune_proto: {{metric: cosin}}}}"], "metric must be sqeuclidean"),
    (["methods=[finetune_proto]", "options={{finetune_proto: {{metric: 3}}}}"], "option metric must be text, got 3$"),
    (["methods=[clip]", "options={{clip: {{captions: a digit}}}}"], "captions must be a list of texts"),
    (["methods=[finetune]", "target=npz:{npz}", "select_on=none"], "has no test images"),
])
def test_job_errors_surface_before_pre_training(tmp_path, monkeypatch, assignments, message):
    import numpy as np

    npz = tmp_path / "tiny.npz"  # 2 images per class: none for the test split
    np.savez(npz, x=np.random.rand(20, 8, 8).astype("float32"), y=np.repeat(np.arange(10), 2))
    monkeypatch.setattr("transferkit.source.pretrain_source", lambda *a, **k: pytest.fail("pre-trained first"))
    cfg = load_config(None, [a.format(npz=npz) for a in assignments] + ["source=digits", f"out_dir={tmp_path}"])
    with pytest.raises(TransferkitError, match=message):
        run_experiment(cfg, log=lambda *a: None)


def test_k_that_labels_every_train_image_is_refused_before_pre_training_for_methods_on_unlabelled_images(
        tmp_path, monkeypatch):
    import numpy as np

    npz = tmp_path / "even.npz"  # 20 images per class: 12 train, 3 val, 5 test
    np.savez(npz, x=np.random.rand(100, 8, 8).astype("float32"), y=np.repeat(np.arange(5), 20))
    monkeypatch.setattr("transferkit.source.pretrain_source", lambda *a, **k: pytest.fail("pre-trained first"))
    cfg = load_config(None, [f"target=npz:{npz}", "source=digits", "source_classes=0-4", "k=12", "repeats=1",
                             "methods=[finetune, lext, dann]", f"out_dir={tmp_path}"])
    with pytest.raises(TransferkitError, match=r"^k=12 takes every train image of each target class \(0, 1, 2, 3, "
                                               r"4: 12 each\), so nothing is left unlabeled for lext, dann, which "
                                               r"train on the unlabelled target: lower k \(at most 11\)"):
        run_experiment(cfg, log=lambda *a: None)


def test_a_uda_method_refused_for_new_target_classes_names_the_few_shot_methods_to_use(tmp_path):
    cfg = ExperimentConfig(name="disjoint", source="digits", source_classes="0-4", target="mnist",
                           target_classes="5-9", methods=["multilayer_adv"], k=None, select_on="none",
                           options={"multilayer_adv": {"same_label_space": False}}, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match=r"absent from the source: \['5'.*train on a few target labels: "
                                               r"finetune_adv or lext \(seed 000's setting: k labelled target"):
        run_experiment(cfg, log=lambda *a: pytest.fail("pre-trained"))


def test_few_label_methods_that_select_on_a_larger_target_validation_split_warn_once(recwarn):
    from dataclasses import replace

    from transferkit.preflight import check_jobs
    cfg = ExperimentConfig(source="digits", target="digits", k=2, repeats=2,
                           methods=["finetune", "target_only", "dann", "matching_ft"])
    data = prepare_domains(cfg)
    check_jobs(cfg, data, check_names(cfg))
    warned = [str(w.message) for w in recwarn.list if "validation split, which" in str(w.message)]
    assert warned == [f"finetune, target_only train on 20 labelled target images (k=2) but select (early stopping, "
                      f"select_on: target_val) on the {len(data.target.val)} labels of the target's validation split, "
                      f"which their rows' n_labeled does not count: set val_per_class to cap them, or select_on: none "
                      f"for a fixed budget"]
    for other in (replace(cfg, select_on="none"), replace(cfg, k=None)):  # no selection; every train label
        recwarn.clear()
        check_jobs(other, prepare_domains(other), check_names(other))
        assert not [w for w in recwarn.list if "validation split, which" in str(w.message)]


def test_selection_settings_that_no_method_reads_are_named(recwarn):
    from transferkit.preflight import check_jobs
    cfg = ExperimentConfig(source="digits", target="digits", k=2, repeats=1, methods=["finetune", "dann"],
                           val_per_class=3, select_metric="balanced_accuracy")
    data = prepare_domains(cfg)

    def unused(c):
        recwarn.clear()
        check_jobs(c, data, check_names(c))
        return sorted(str(w.message).split(":")[0] for w in recwarn.list if "changes nothing" in str(w.message))
    assert unused(cfg) == []  # finetune selects on the capped target validation split, by balanced accuracy
    assert unused(replace(cfg, select_on="none")) == ["select_metric", "val_per_class"]
    assert unused(replace(cfg, select_on="source_val", methods=["dann"])) == ["val_per_class"]  # dann: the source's
    assert unused(replace(cfg, methods=["dann", "source_only"])) == ["select_metric", "val_per_class"]
    assert any("dann, source_only select on no labels" in str(w.message) for w in recwarn.list)
    assert unused(replace(cfg, select_on="none", val_per_class=None, select_metric="accuracy")) == []


def test_sklearn_like_api():
    from transferkit.data import load_domain
    digits = split_domain(load_domain("digits"))
    labeled, _ = sample_k_shot(digits.train, 5, seed=0)
    model = Transfer("target_only", train=TrainConfig(steps=60, eval_every=20, batch_size=32)).fit(target=labeled)
    acc = model.score(digits.test)
    assert 0.2 < acc <= 1.0  # well above chance (0.1) after 60 steps on 50 labels
    assert model.predict(digits.test.images[:5]).shape == (5,)
    assert torch.allclose(model.predict_proba(digits.test.images[:5]).sum(1), torch.ones(5))
    with pytest.raises(TransferkitError, match=r"expected an N x 1 x 28 x 28 image tensor.*\(5, 3, 28, 28\)"):
        model.predict(digits.test.images[:5].expand(5, 3, 28, 28))
    with pytest.raises(TransferkitError, match=r"image files: transferkit.read_images\(paths, size=28, channels=1\)"):
        model.predict(digits.test.images[:5, :, :20, :20])
    with pytest.raises(TransferkitError, match=r"look channels-last.*permute\(0, 3, 1, 2\)"):
        model.predict(digits.test.images[:5].permute(0, 2, 3, 1))
    with pytest.raises(TransferkitError, match=r"look channels-last.*use images.transpose\(0, 3, 1, 2\)"):
        model.predict(digits.test.images[:5].permute(0, 2, 3, 1).numpy())  # NumPy has no permute
    with pytest.raises(TransferkitError, match="the model predicts the classes it was fitted on: score on a domain "
                                               "with these class names"):
        model.score(Domain("renamed", digits.test.images, digits.test.labels, [f"d{i}" for i in range(10)]))
    assert 0 <= model.score(digits.test.select_classes([0, 1])) <= 1  # some of the fitted classes, by name
    small = Transfer("target_only", train=TrainConfig(steps=2, batch_size=8)).fit(
        target=labeled.select_classes(["3", "1"]))
    with pytest.raises(TransferkitError, match=r"in this order: domain.select_classes\(\['3', '1'\]\)"):
        small.score(digits.test)  # more classes
    assert 0 <= small.score(digits.test.select_classes(["3", "1"])) <= 1  # the fix the message names
    reordered = digits.test.select_classes(["1", "3"])  # the same classes in another order: read by name
    assert small.score(reordered) == small.score(digits.test.select_classes(["3", "1"]))
    assert small.report(reordered)["confusion"] == small.report(digits.test.select_classes(["3", "1"]))["confusion"]
    x = digits.test.images[:5]
    as_bytes = (x * 255).round().to(torch.uint8)
    assert torch.equal(model.predict(as_bytes), model.predict(as_bytes.float() / 255))
    assert torch.equal(model.predict(x.double()), model.predict(x))
    assert model.predict(x[:0]).shape == (0,) and model.predict_proba(x[:0]).shape == (0, 10)
    with pytest.raises(TransferkitError, match=r"predict: image values must lie in \[0, 1\]"):
        model.predict(x * 255)
    assert torch.equal(model.predict(x.numpy()), model.predict(x))  # a numpy array is taken as is
    import numpy as np
    flipped = np.flip(torch.flip(x, [3]).numpy(), 3)  # x's values, in a view with negative strides
    assert flipped.strides[3] < 0
    assert torch.equal(model.predict(flipped), model.predict(x))
    assert torch.equal(model.predict(x.numpy().astype(">f4")), model.predict(x))  # big-endian
    with pytest.raises(TransferkitError, match="predict: images must be numbers, got a numpy array of dtype object"):
        model.predict(x.numpy().astype(object))
    with pytest.raises(TransferkitError, match=r"image tensor \(or numpy array\), got list"):
        model.predict([1, 2])


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs a target or a source"),
    ({"target": "rgb"}, "must share one shape"),
    ({"target": "empty"}, "target domain .* is empty"),
    ({"target": "labeled", "val": []}, "val must be a Domain"),
])
def test_sklearn_like_api_names_bad_input(kwargs, message):
    from transferkit.data import load_domain
    labeled = load_domain("digits").subset(torch.arange(50))
    domains = {"labeled": labeled, "rgb": labeled.to_format(channels=3), "empty": labeled.subset([])}
    given = {k: domains.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    if kwargs.get("target") == "rgb":
        given["source"] = labeled
    with pytest.raises(TransferkitError, match=message):
        Transfer("target_only").fit(**given)


def test_cached_source_network_gives_the_same_source_only_result(tmp_path, monkeypatch):
    """The second run loads the source network from the cache; BatchNorm must be in eval
    mode there too (train-mode statistics would silently adapt to the target)."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))  # not one another test filled
    cfg = dict(name="cache", source="digits", target="digits+inversion", methods=["source_only"], k=2,
               repeats=1, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    _, first = run_experiment(ExperimentConfig(**cfg), log=lambda *a: None)
    _, second = run_experiment(ExperimentConfig(**cfg), log=lambda *a: None)
    assert second[0]["pretrain_cached"] and not first[0]["pretrain_cached"]
    assert first[0]["accuracy"] == second[0]["accuracy"]
    assert 0 < first[0]["source_val_accuracy"] == second[0]["source_val_accuracy"] <= 1  # recorded in the cache


def test_pretrained_source_network_does_not_depend_on_the_global_random_state(tmp_path, monkeypatch):
    """PyTorch 2.13 seeds every process at random: the initial weights must come from cfg.seed."""
    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source

    cfg = ExperimentConfig(name="det", source="digits", target="digits+inversion", k=2, pretrain=TINY_PRE,
                           train=TINY, out_dir=str(tmp_path))
    data = prepare_domains(cfg)
    nets = []
    for state in (1, 2):
        monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / f"cache{state}"))
        torch.manual_seed(state)
        net, info = pretrain_source(cfg, data, log=lambda *a: None)
        assert not info["cached"]
        nets.append(net.state_dict())
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])


def test_pretrained_cache_is_keyed_on_every_source_image_and_the_source_val_split(tmp_path, monkeypatch):
    from dataclasses import replace

    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    two_steps = TrainConfig(steps=2, eval_every=1, batch_size=16)  # seven pre-trainings: what is keyed, not learnt
    cfg = ExperimentConfig(name="key", source="digits", target="digits", k=2, pretrain=two_steps, train=TINY,
                           out_dir=str(tmp_path))
    data = prepare_domains(cfg)
    quiet = {"log": lambda *a: None}
    first = pretrain_source(cfg, data, **quiet)[1]
    assert pretrain_source(cfg, data, **quiet)[1]["cached"]
    for part in ("train", "val"):  # image 1: not one of every 7th image that the key used to hash
        domain = getattr(data.source, part)
        edited = replace(domain, images=domain.images.clone().index_fill_(0, torch.tensor([1]), 0.5))
        changed = replace(data.source, **{part: edited})
        info = pretrain_source(cfg, replace(data, source=changed), **quiet)[1]
        assert not info["cached"] and info["path"] != first["path"]
    threads = torch.get_num_threads()  # results depend on the thread count: a network of 2 threads is not
    try:                                # reused by a run with 1 (which could not reproduce it)
        torch.set_num_threads(threads + 1)
        info = pretrain_source(cfg, data, **quiet)[1]
        assert not info["cached"] and info["path"] != first["path"]
    finally:
        torch.set_num_threads(threads)
    mkl = os.environ.get("MKL_CBWR")  # other kernels (--portable-kernels sets MKL_CBWR): not reused either
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    info = pretrain_source(cfg, data, **quiet)[1]
    assert not info["cached"] and info["path"] != first["path"]
    if mkl is None:
        monkeypatch.delenv("MKL_CBWR")
    else:
        monkeypatch.setenv("MKL_CBWR", mkl)
    assert pretrain_source(cfg, data, **quiet)[1]["path"] == first["path"]
    real = torch.__version__
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch: not reused
    info = pretrain_source(cfg, data, **quiet)[1]
    assert not info["cached"] and info["path"] != first["path"]
    monkeypatch.setattr(torch, "__version__", real)
    neutral = replace(cfg, pretrain=replace(cfg.pretrain, progress=False, checkpoint_every=7))  # NOT_RESULTS
    assert pretrain_source(neutral, data, **quiet)[1]["cached"]



def test_pretrained_cache_of_a_plugin_backbone_is_keyed_on_its_definition(tmp_path, monkeypatch):
    """A plugin's builder changed in place under the same name (another activation, same shapes;
    other shapes) is pre-trained again, not read from the old cache; built-in backbones keep
    their keys (no definition in them)."""
    import torch.nn as nn

    from transferkit import backbones
    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source

    def builder(act, width=8):
        def build(num_classes, in_channels=1, image_size=28):
            seq = nn.Sequential(nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2), act(), nn.Flatten()),
                                nn.Linear(width * 13 * 13, num_classes))
            return backbones.from_sequential(seq, input_shape=(in_channels, image_size, image_size))
        return build

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(backbones.BACKBONES, "plugnet", builder(nn.ReLU))
    cfg = ExperimentConfig(name="key", source="digits", target="digits", k=2, backbone="plugnet",
                           pretrain=TrainConfig(steps=2, batch_size=8), train=TINY, out_dir=str(tmp_path))
    data = prepare_domains(cfg)
    logged = []
    first = pretrain_source(cfg, data, log=logged.append)[1]
    assert pretrain_source(cfg, data, log=logged.append)[1]["cached"]
    for changed in (builder(nn.Tanh), builder(nn.ReLU, width=4)):
        monkeypatch.setitem(backbones.BACKBONES, "plugnet", changed)
        info = pretrain_source(cfg, data, log=logged.append)[1]
        assert not info["cached"] and info["path"] != first["path"]
    assert not [m for m in logged if "unreadable" in m]
    assert backbones.is_built_in("lenet") and not backbones.is_built_in("plugnet")
    with pytest.raises(TransferkitError, match="backbone name 'lenet' is taken"):  # no plugin replaces a built-in
        backbones.BACKBONES["lenet"] = builder(nn.ReLU)


def test_pretrained_cache_of_a_plugin_backbone_is_keyed_on_the_weights_it_starts_from(tmp_path, monkeypatch):
    """A plugin's builder that loads starting weights of its own (an init.pt) pre-trains again
    when that file changes, in a run's cache and in Transfer's memo: the network trained from the
    old file was reused (a trial)."""
    import torch.nn as nn

    from transferkit import backbones
    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source

    init = tmp_path / "init.pt"

    def fresh(num_classes, in_channels=1, image_size=28):
        seq = nn.Sequential(nn.Sequential(nn.Conv2d(in_channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten()),
                            nn.Linear(4 * 13 * 13, num_classes))
        return backbones.from_sequential(seq, input_shape=(in_channels, image_size, image_size))

    def build(num_classes, in_channels=1, image_size=28):
        net = fresh(num_classes, in_channels, image_size)
        net.load_state_dict(torch.load(init))
        return net

    def write_init(seed):
        torch.manual_seed(seed)
        torch.save(fresh(10).state_dict(), init)

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(backbones.BACKBONES, "initnet", build)
    cfg = ExperimentConfig(name="key", source="digits", target="digits", k=2, backbone="initnet",
                           pretrain=TrainConfig(steps=2, batch_size=8), train=TINY, out_dir=str(tmp_path))
    data = prepare_domains(cfg)
    quiet = {"log": lambda *a: None}
    write_init(0)
    first = pretrain_source(cfg, data, **quiet)[1]
    assert not first["cached"] and pretrain_source(cfg, data, **quiet)[1]["cached"]
    write_init(1)
    changed = pretrain_source(cfg, data, **quiet)[1]
    assert not changed["cached"] and changed["path"] != first["path"] and changed["digest"] != first["digest"]
    write_init(0)
    assert pretrain_source(cfg, data, **quiet)[1]["path"] == first["path"]  # the first file's network again
    tiny = TrainConfig(steps=2, batch_size=8)
    model = Transfer("finetune", backbone="initnet", train=tiny, pretrain=tiny)
    model.fit(target=data.target.train, source=data.source.train)
    before = model._pretrained[1]
    write_init(1)
    model.fit(target=data.target.train, source=data.source.train)
    assert not all(torch.equal(before[k], model._pretrained[1][k]) for k in before)


def test_a_killed_pre_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from dataclasses import replace

    import transferkit.experiment as experiment
    from transferkit import source
    from transferkit.engine import Engine

    class Killed(Exception):
        pass

    steps_run = []

    def engine_with(kill_at):
        def hook(step, state):
            steps_run.append(step)
            if step == kill_at:
                raise Killed
        return lambda *a, **k: Engine(*a, **k, hooks=(hook,))

    pre = replace(TINY_PRE, checkpoint_every=5)
    quiet = {"log": lambda *a: None}
    results = []
    for cache, kills in (("whole", [None]), ("killed", [12, None])):
        monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / cache))
        cfg = ExperimentConfig(name="pre", source="digits", target="digits", k=2, pretrain=pre, train=TINY,
                               out_dir=str(tmp_path))
        data = experiment.prepare_domains(cfg)
        for kill_at in kills:
            steps_run.clear()
            monkeypatch.setattr(source, "Engine", engine_with(kill_at))
            try:
                net, info = source.pretrain_source(cfg, data, **quiet)
            except Killed:
                assert list((tmp_path / cache / "pretrained").glob("*.ckpt"))  # the checkpoint of step 10
        assert steps_run[0] == 11 if cache == "killed" else steps_run[0] == 1  # resumed after step 10
        assert not list((tmp_path / cache / "pretrained").glob("*.ckpt"))  # removed once the network is saved
        results.append(net.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_resume_accepts_settings_that_do_not_change_rows_and_names_those_that_do(tmp_path):
    from dataclasses import replace
    cfg = ExperimentConfig(name="r", source="digits", target="digits", k=2, repeats=1, methods=["finetune"],
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    quiet = {"log": lambda *a: None}
    run_dir, rows = run_experiment(cfg, **quiet)
    same = replace(cfg, name="renamed", out_dir=str(tmp_path / "elsewhere"), workers=2,
                   train=replace(TINY, progress=False, checkpoint_every=3))
    assert run_experiment(same, run_dir=run_dir, **quiet)[1] == rows
    kept = load_config(run_dir / "config.yaml")
    assert (kept.name, kept.out_dir, kept.workers) == ("r", str(tmp_path), 2)  # where the run was made stays
    more = replace(cfg, methods=["finetune", "linear_probe"], repeats=2)  # jobs added to the run
    grown = run_experiment(more, run_dir=run_dir, **quiet)[1]
    assert [(r["method"], r["seed"]) for r in grown] == [("finetune", 0), ("linear_probe", 0), ("finetune", 1),
                                                          ("linear_probe", 1)]
    assert grown[0] == rows[0]  # read back, not run again
    with pytest.raises(TransferkitError, match="linear_probe-k=2-s0.json was run with another configuration"):
        run_experiment(replace(more, options={"linear_probe": {"reset_head": False}}), run_dir=run_dir, **quiet)
    with pytest.raises(TransferkitError, match=r"another config \(train.eval_every: 5 there, 4 now; "
                                               r"train.steps: 10 there, 11 now\)"):
        run_experiment(replace(cfg, train=replace(TINY, steps=11, eval_every=4)), run_dir=run_dir, **quiet)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("")
    with pytest.raises(TransferkitError, match="not a run config"):
        run_experiment(cfg, run_dir=tmp_path / "broken", **quiet)
    assert not (tmp_path / "broken" / "jobs").exists()


def test_a_list_of_k_runs_every_job_at_each_k_in_one_run_and_a_resume_adds_a_k(tmp_path, monkeypatch):
    from transferkit import experiment
    from transferkit.api import Transfer
    from transferkit.experiment import load_model
    lines, trained = [], []
    real = experiment.run_job
    monkeypatch.setattr(experiment, "run_job", lambda cfg, *a: trained.append(cfg.setting) or real(cfg, *a))
    cfg = ExperimentConfig(name="curve", source="digits", target="digits", k=[1, 2], repeats=2, select_on="none",
                           methods=["source_only", "target_only"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lines.append)
    assert [(r["setting"], r["method"], r["seed"]) for r in rows] == [
        ("k=1", "source_only", 0), ("k=1", "target_only", 0), ("k=1", "target_only", 1),
        ("k=2", "source_only", 0), ("k=2", "target_only", 0), ("k=2", "target_only", 1)]
    assert [r["n_labeled"] for r in rows if r["method"] == "target_only"] == [10, 10, 20, 20]
    assert trained == ["k=1", "k=1", "k=2", "k=2"] and any(" k=2 seed 1: accuracy" in line for line in lines)
    alone = run_experiment(replace(cfg, k=2, name="alone"), log=lambda *a: None)[1]  # the same jobs as one k
    assert [r["accuracy"] for r in alone] == [r["accuracy"] for r in rows[3:]]
    assert json.loads((run_dir / "results.json").read_text())["config"]["k"] == [1, 2]
    assert "| target_only | digits | digits | k=2 |" in (run_dir / "results.md").read_text()
    trained.clear()
    grown = run_experiment(replace(cfg, k=[1, 2, 3]), run_dir=run_dir, log=lambda *a: None)[1]
    assert trained == ["k=3", "k=3"] and grown[:6] == rows  # the finished settings are read back
    assert load_config(run_dir / "config.yaml").k == [1, 2, 3]
    with pytest.raises(TransferkitError, match=r"ran the settings k=1, k=2, k=3: say which, e.g. setting='k=1'"):
        load_model(run_dir, "target_only")
    assert load_model(run_dir, "source_only").classes_ == rows[0]["class_names"]  # one network in every setting
    with pytest.raises(TransferkitError, match=r"has no setting 'k=5': it ran k=1, k=2, k=3"):
        Transfer.from_run(run_dir, "target_only", setting="k=5")
    model = Transfer.from_run(run_dir, "target_only", seed=1, setting="k = 2")
    test = prepare_domains(cfg).target.test
    assert model.score(test) == rows[5]["accuracy"]
    run_experiment(replace(cfg, k=[2, 3]), run_dir=run_dir, log=lambda *a: None)  # k=1 left out: its models stay
    assert load_model(run_dir, "target_only", 1, "k=1").classes_ == rows[2]["class_names"]


def test_the_target_split_fractions_are_config_keys_and_runs_from_before_them_resume(tmp_path):
    import yaml
    cfg = ExperimentConfig(name="frac", source="digits", target="digits", k=2, repeats=1, methods=["target_only"],
                           val_fraction=0.1, test_fraction=0.4, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    target = prepare_domains(cfg).target
    whole = torch.bincount(torch.cat([target.train.labels, target.val.labels, target.test.labels]))
    assert torch.equal(torch.bincount(target.test.labels), (whole * 0.4).round().long())
    assert torch.equal(torch.bincount(target.val.labels), (whole * 0.1).round().long())
    for bad in ({"val_fraction": 0.5, "test_fraction": 0.5}, {"test_fraction": 0.0}, {"val_fraction": -0.1}):
        with pytest.raises(TransferkitError, match="shares of each class in its val and test splits"):
            ExperimentConfig(**bad)
    with pytest.raises(TransferkitError, match="test_fraction 0.3 cuts a test split .* leave test_fraction out"):
        ExperimentConfig(test="digits", test_fraction=0.3)
    old = replace(cfg, val_fraction=0.15, test_fraction=0.25, name="old")
    run_dir, rows = run_experiment(old, log=lambda *a: None)
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    stored.pop("val_fraction"), stored.pop("test_fraction")  # as a run made before the keys were
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert run_experiment(old, run_dir=run_dir, log=lambda *a: None)[1] == rows  # read back: the same digests
    with pytest.raises(TransferkitError, match=r"another config \(test_fraction: 0.25 there, 0.4 now"):
        run_experiment(replace(old, test_fraction=0.4), run_dir=run_dir, log=lambda *a: None)


def test_an_empty_split_names_the_fraction_that_emptied_it(tmp_path):
    from transferkit.splits import fewest_for
    assert (fewest_for("test"), fewest_for("val")) == (3, 4) and fewest_for("val", 0.0, 0.25) is None
    assert fewest_for("val", 0.001, 0.25) == 501  # round(0.5) is 0
    cfg = ExperimentConfig(name="f", source="digits", target="digits", k=2, repeats=1, methods=["target_only"],
                           val_fraction=0.001, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match=r"has no val images .*: a class needs at least 501 images to give one "
                                               r"to the val split at val_fraction 0.001, or a larger val_fraction"):
        run_experiment(cfg, log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"no val images .*: val_fraction 0.0 gives no class a val image"):
        run_experiment(replace(cfg, val_fraction=0.0), log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"or lower k to 26; or give the train split more of each class: a "
                                               r"smaller test_fraction / val_fraction \(now 0.7 / 0.15\)"):
        run_experiment(replace(cfg, val_fraction=0.15, test_fraction=0.7, k=60), log=lambda *a: None)


def test_the_checks_of_several_settings_give_a_warning_they_share_once(monkeypatch):
    from transferkit import preflight
    from transferkit.errors import check, warn

    def check_jobs(cfg, data, methods):
        warn("class '7' has no test images")
        warn(f"k={cfg.k}: more validation labels")
    monkeypatch.setattr(preflight, "check_jobs", check_jobs)
    with pytest.warns(TransferkitWarning) as caught:
        preflight.check_settings(ExperimentConfig(k=[1, 2]).settings(), None, [])
    assert [str(w.message) for w in caught] == ["class '7' has no test images",
                                                "k=1: more validation labels (alike at k=2)"]
    with pytest.warns(TransferkitWarning, match="class '7' has no test images"):  # given before a refusal too
        with pytest.raises(TransferkitError, match=r"k=3 is refused \(at k=3; k=1 of this run's settings pass: "
                                                   r"leave k=3 out of k, or run what refuses it in a run of its own"):
            monkeypatch.setattr(preflight, "check_jobs", lambda cfg, data, methods: (
                warn("class '7' has no test images"), check(cfg.k < 3, f"k={cfg.k} is refused")))
            preflight.check_settings(ExperimentConfig(k=[1, 3]).settings(), None, [])
    monkeypatch.setattr(preflight, "check_jobs", lambda cfg, data, methods: check(False, "no val images"))
    with pytest.raises(TransferkitError, match=r"^no val images$"):  # every setting refused: no hint to drop one
        preflight.check_settings(ExperimentConfig(k=[1, 3]).settings(), None, [])


def test_transfer_gives_new_classes_a_new_head_as_run_job_does():
    from helpers import toy_domain
    src = toy_domain(40, classes=5, name="src")
    from transferkit.domain import Domain
    t = toy_domain(20, seed=1, classes=5)
    tgt = Domain("tgt", t.images, t.labels, ["3", "4", "5", "6", "7"])  # as many classes, two shared
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    still = TrainConfig(steps=1, eval_every=1, lr=1e-12)  # the head trains, but moves by about 1e-12
    model = Transfer("ft_fc1", backbone="lenet", train=still).fit(target=tgt, source=src, net=net)
    old, new = net.get_classifier().weight, model.net_.get_classifier().weight
    assert torch.allclose(new[:2], old[3:5], atol=1e-9)  # shared classes keep their source rows
    assert not torch.allclose(new[2:], old[2:], atol=1e-3)  # new classes get a new classifier
    same = Transfer("ft_fc1", backbone="lenet", train=still).fit(target=toy_domain(20, seed=1, classes=5),
                                                                  source=src, net=net)
    assert torch.allclose(same.net_.get_classifier().weight, old, atol=1e-9)


def test_a_resumed_run_lists_its_rows_in_job_order(tmp_path):
    cfg = ExperimentConfig(name="order", source="digits", target="digits+blur", k=2, repeats=2,
                           methods=["source_only", "target_only", "linear_probe"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path))
    run_dir, first = run_experiment(cfg, log=lambda *a: None)
    (run_dir / "jobs" / "target_only-k=2-s0.json").unlink()  # as if killed before this job finished
    _, again = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    assert [(r["method"], r["seed"]) for r in again] == [(r["method"], r["seed"]) for r in first]
    assert [(r["method"], r["seed"]) for r in first][:3] == [("source_only", 0), ("target_only", 0),
                                                              ("linear_probe", 0)]
    (run_dir / "jobs" / "target_only-k=2-s0.json").write_text('{"method": "target_only", "seed": 0, "accuracy": 0.5}')
    with pytest.raises(TransferkitError, match=r"target_only-k=2-s0.json is not a result row \(it lacks "
                                               r"\['source', 'target', 'setting', 'wall_s'\]\)"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)  # a hand-edited row: a KeyError later on


def test_a_finished_job_keeps_its_evaluated_model_and_drops_its_checkpoints(tmp_path):
    from transferkit.api import Transfer
    from transferkit.experiment import load_model
    from transferkit.fitting import evaluate_on
    from transferkit.rundata import prepare_domains
    cfg = ExperimentConfig(name="models", source="digits", target="digits+blur", target_classes="7,2,9", k=3,
                           repeats=1, methods=["finetune", "dann", "tap", "source_only"], pretrain=TINY_PRE,
                           train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    test = prepare_domains(cfg).target.test
    assert next(r for r in rows if r["method"] == "source_only")["n_labeled"] == 0  # it reads no target label
    for row in rows:  # source_only too: its source network with the head's rows of 7, 2, 9
        model = load_model(run_dir, row["method"], row["seed"])
        assert not model.training and model.classes_ == ["7", "2", "9"] == test.class_names  # its logit columns
        assert evaluate_on(model, test)["accuracy"] == row["accuracy"]  # dann: narrowed head; tap: picked unit
        fitted = Transfer.from_run(run_dir, row["method"], row["seed"])  # the Python API's surface
        assert fitted.classes_ == test.class_names and fitted.score(test) == pytest.approx(row["accuracy"])
        assert fitted.get_params()["backbone"] == cfg.backbone and fitted.method_cls.name == row["method"]
    for name in ("finetune", "tap"):  # tap scores through its own logits
        model = load_model(run_dir, name)
        as_bytes = (test.images[:4] * 255).round().to(torch.uint8)
        assert torch.allclose(model.logits(as_bytes), model.logits(as_bytes.float() / 255))
        assert torch.equal(model.logits(test.images[:4].numpy()), model.logits(test.images[:4]))
        for bad, message in ((test.images[:2] * 255, r"values must lie in \[0, 1\], found .*full range: 255"),
                             (test.images[:2].repeat(1, 3, 1, 1), r"the channels the network was built for\), got"),
                             (test.images[:2].permute(0, 2, 3, 1), "look channels-last")):
            with pytest.raises(TransferkitError, match=message):
                model.logits(bad)
    assert load_model(run_dir, "finetune").logits(test.images[:2, :, :20, :20]).shape == (2, 3)  # convnet4 pools
    # globally: any size
    from transferkit.methods import get_method
    lenet = get_method("finetune")(build_backbone("lenet", num_classes=3, in_channels=1, image_size=28))
    with pytest.raises(TransferkitError, match=r"built for \(1, 28, 28\) images and fails on \(1, 20, 20\)"):
        lenet.logits(test.images[:2, :, :20, :20])  # its fc1 takes the flattened 28 x 28 map
    (run_dir / "jobs" / "tap-k=3-s0.json").unlink()  # stopped between the model and its row
    with pytest.warns(UserWarning, match="tap-k=3-s0.json does not exist.*so the job did not finish"):
        assert load_model(run_dir, "tap").classes_ == test.class_names  # the model file holds them
    with pytest.raises(TransferkitError, match="did not finish .*; Transfer.from_run needs a finished job"):
        Transfer.from_run(run_dir, "tap")
    assert not any((run_dir / "checkpoints").rglob("*.safetensors"))  # only resuming an unfinished job reads them
    (run_dir / "models" / "source_only-k=3-s0.pt").unlink()  # as an older run left it
    with pytest.raises(TransferkitError, match="no finished source_only job .*older versions of transferkit saved no "
                                               "source_only model, .*delete its job file and resume"):
        load_model(run_dir, "source_only")
    with pytest.raises(TransferkitError, match=r"of seed 1 .*\(source_only runs once, as seed 0: its row does not "
                                               r"depend on the label subset\)"):
        load_model(run_dir, "source_only", 1)
    (run_dir / "jobs" / "source_only-k=3-s0.json").unlink()
    again = {r["method"]: r for r in run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]}
    assert again["source_only"]["accuracy"] == next(r for r in rows if r["method"] == "source_only")["accuracy"]
    assert evaluate_on(load_model(run_dir, "source_only"), test)["accuracy"] == again["source_only"]["accuracy"]
    with pytest.raises(TransferkitError, match="no finished finetune job of seed 7 with a saved model; its saved "
                                               "models .*: dann-k=3-s0, finetune-k=3-s0, "):
        load_model(run_dir, "finetune", 7)
    with pytest.raises(TransferkitError, match="seed must be a whole number .* got 0.5"):
        load_model(run_dir, "finetune", 0.5)  # was seed 0
    whole = (run_dir / "models" / "finetune-k=3-s0.pt").read_bytes()
    (run_dir / "models" / "finetune-k=3-s0.pt").write_bytes(whole[:len(whole) // 2])  # a cut zip archive
    (run_dir / "models" / "tap-k=3-s0.pt").write_bytes(b"torn")
    (run_dir / "models" / "dann-k=3-s0.pt").write_bytes(bytes(len(whole)))  # zero-filled (a lost write)
    for method in ("tap", "finetune", "dann"):
        with pytest.raises(TransferkitError, match="is unreadable.*run the job again"):
            load_model(run_dir, method)


def test_a_model_that_cannot_be_saved_costs_a_warning_not_the_result(tmp_path, monkeypatch):
    import transferkit.experiment as experiment

    def refuse(method):
        raise TypeError("cannot pickle 'generator' object")
    monkeypatch.setattr(experiment, "_model_bytes", refuse)
    cfg = ExperimentConfig(name="nosave", source="digits", target="digits", methods=["source_only", "finetune"], k=2,
                           repeats=1, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="the trained model is not saved.*cannot pickle") as caught:
        run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert sorted(str(w.message).split(":")[0] for w in caught if "not saved" in str(w.message)) == [
        "finetune-k=2-s0", "source_only-k=2-s0"]
    assert (run_dir / "jobs" / "finetune-k=2-s0.json").exists() and not (run_dir / "models").exists()
    assert (run_dir / "jobs" / "source_only-k=2-s0.json").exists()


def test_a_full_disk_while_saving_a_model_stops_the_run_and_the_job_runs_again(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import transferkit.experiment as experiment
    write = experiment.atomic_write

    def full(path, writer):  # a trial: torch.save's RuntimeError on a full disk was taken for a pickling failure
        if Path(path).parent.name == "models" and "finetune" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, writer)
    monkeypatch.setattr(experiment, "atomic_write", full)
    cfg = ExperimentConfig(name="full", source="digits", target="digits", methods=["source_only", "finetune"], k=2,
                           repeats=1, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    with pytest.raises(OSError, match="No space left on device"):
        run_experiment(cfg, log=lambda *a: None)
    run_dir = next((tmp_path / "full").iterdir())
    assert not (run_dir / "jobs" / "finetune-k=2-s0.json").exists()  # no row without its model: it runs again
    monkeypatch.setattr(experiment, "atomic_write", write)
    rows = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]
    assert [r["method"] for r in rows] == ["source_only", "finetune"]
    assert (run_dir / "models" / "finetune-k=2-s0.pt").exists()


def test_a_resume_that_adds_jobs_reads_as_unfinished_until_they_end(tmp_path, monkeypatch):
    import transferkit.experiment as experiment
    from transferkit.experiment import load_model
    from transferkit.results import unfinished_run
    cfg = ExperimentConfig(name="grow", source="digits", target="digits", methods=["linear_probe"], k=2, repeats=1,
                           select_on="none", pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    model = run_dir / "models" / "linear_probe-k=2-s0.pt"
    job = experiment.run_job

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "run_job", stop)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(replace(cfg, repeats=2), run_dir=run_dir, log=lambda *a: None)
    assert not (run_dir / "results.json").exists() and not (run_dir / "results.md").exists()  # a trial: the old
    stopped = unfinished_run(run_dir)  # results.json (1 row) called the stopped resume finished
    assert [r["seed"] for r in stopped["rows"]] == [0] and "--resume" in stopped["unfinished"]
    monkeypatch.setattr(experiment, "run_job", job)
    assert [r["seed"] for r in run_experiment(replace(cfg, repeats=2), run_dir=run_dir, log=lambda *a: None)[1]] \
        == [0, 1]
    assert (run_dir / "results.json").exists()
    jobs = run_dir / "jobs"
    (jobs / "linear_probe-k=2-s1.json").write_text((jobs / "linear_probe-k=2-s0.json").read_text())  # by hand
    for read in (lambda: run_experiment(replace(cfg, repeats=2), run_dir=run_dir, log=lambda *a: None),
                 lambda: ((run_dir / "results.json").unlink(missing_ok=True), unfinished_run(run_dir))):
        with pytest.raises(TransferkitError, match=r"linear_probe-k=2-s1.json holds the row of linear_probe seed 0 "
                                                   r"\(k=2\), whose file is linear_probe-k=2-s0.json: copied or "
                                                   r"renamed by hand\? delete it"):
            read()  # a trial: 'repeat seed 0 (runs merged twice?)' without the file

    def unreadable(*args, **kwargs):  # a file cut short inside its zip reads as [Errno 22]
        raise OSError(22, "Invalid argument")
    monkeypatch.setattr(torch, "load", unreadable)
    with pytest.raises(TransferkitError, match=rf"model {re.escape(str(model))} cannot be read \(\[Errno 22\] "
                                               r"Invalid argument\): if it is cut short or damaged, run the job again"):
        load_model(run_dir, "linear_probe")


def test_a_refused_resume_keeps_the_run_config_and_old_rows_are_checked_by_their_options(tmp_path):
    import json
    from dataclasses import replace
    quiet = {"log": lambda *a: None}
    cfg = ExperimentConfig(name="r", source="digits", target="digits", k=2, repeats=1, methods=["linear_probe"],
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, **quiet)
    before = (run_dir / "config.yaml").read_text()
    for bad, message in (({"options": {"linear_probe": {"reset_head": False}}}, "another configuration"),
                         ({"methods": ["linear_probe", "ft_unit:bogus"]}, "unknown unit")):
        with pytest.raises(TransferkitError, match=message):
            run_experiment(replace(cfg, **bad), run_dir=run_dir, **quiet)
        assert (run_dir / "config.yaml").read_text() == before  # it was overwritten: no plain resume after
    assert run_experiment(cfg, run_dir=run_dir, **quiet)[1] == rows
    job = run_dir / "jobs" / "linear_probe-k=2-s0.json"  # a row from before config digests
    job.write_text(json.dumps({k: v for k, v in json.loads(job.read_text()).items() if k != "config_digest"}))
    with pytest.raises(TransferkitError, match="another configuration"):
        run_experiment(replace(cfg, options={"linear_probe": {"reset_head": False}}), run_dir=run_dir, **quiet)
    assert run_experiment(cfg, run_dir=run_dir, **quiet)[1][0]["accuracy"] == rows[0]["accuracy"]


def test_data_a_method_cannot_fit_is_refused_before_pre_training(tmp_path):
    quiet = {"log": lambda *a: pytest.fail("started")}
    base = dict(source="mnist", target="digits", k=2, repeats=1, pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    cases = [(dict(methods=["finetune", "flex"], select_on="none"),
              "method flex: it selects on a labelled validation set and none is given"),
             (dict(methods=["tap"], source_classes="0-4", target_classes="5"),
              r"the target 'digits' has one class \(\['5'\], target_classes '5'\)"),  # for every method
             (dict(methods=["dann", "ft_all"], source_classes="0-9", target_classes="5-9", select_on="source_val"),
              r"method ft_all: the validation domain .* has classes \['0', .*'9'\], but ft_all is scored on "
              r"\['5', '6', '7', '8', '9'\] while it trains; select_on: source_val suits")]
    for i, (fields, message) in enumerate(cases):
        with pytest.raises(TransferkitError, match=message):
            run_experiment(ExperimentConfig(name=f"c{i}", **base, **fields), **quiet)


def test_transfer_refuses_a_validation_domain_of_other_classes_before_pre_training(monkeypatch):
    import transferkit.api as api
    from transferkit.data import load_domain
    from transferkit.domain import Domain
    digits = load_domain("digits", size=28)
    few = sample_k_shot(digits, 2, seed=0)[0]
    other = Domain("renamed", digits.images[:40], digits.labels[:40], [f"c{i}" for i in range(10)])
    monkeypatch.setattr(api, "Engine", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TransferkitError, match="method flex: it selects on a labelled validation set"):
        Transfer("flex").fit(target=few, source=digits)
    with pytest.raises(TransferkitError, match=r"method ft_all: the validation domain 'renamed' has classes \['c0'"):
        Transfer("ft_all").fit(target=few, source=digits, val=other)


def test_resume_may_change_options_that_do_not_change_training(tmp_path):
    from dataclasses import replace
    cfg = ExperimentConfig(name="w", source="digits", target="digits", k=2, repeats=1, methods=["flex"],
                           pretrain=TINY_PRE, train=TrainConfig(steps=2, eval_every=2, batch_size=8),
                           out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    again = replace(cfg, options={"flex": {"workers": 2, "keep_candidates": True}})
    assert run_experiment(again, run_dir=run_dir, log=lambda *a: None)[1] == rows  # read back, not refused
    spelled = replace(cfg, options={"flex": {"image_lr_mult": 1.0, "image_units": []}})  # its defaults, spelled out
    assert run_experiment(spelled, run_dir=run_dir, log=lambda *a: None)[1] == rows
    other = replace(cfg, options={"flex": {"image_lr_mult": 2.0}})
    with pytest.raises(TransferkitError, match=r"options of flex: \{'image_lr_mult': 1.0, 'image_units': \[\]\} "
                                               r"there, \{'image_lr_mult': 2.0\} now"):
        run_experiment(other, run_dir=run_dir, log=lambda *a: None)


def test_transfer_names_a_missing_stream_and_a_head_of_other_classes_before_training(monkeypatch):
    import transferkit.api as api
    from transferkit.data import load_domain
    digits = load_domain("digits", size=28)
    monkeypatch.setattr(api, "Engine", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TransferkitError, match="method 'dann' needs a non-empty unlabeled domain: fit"):
        Transfer("dann").fit(source=digits)
    five = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    for name in ("dann", "adda"):
        with pytest.raises(TransferkitError, match=f"method '{name}' trains and predicts with the network's head on "
                                                   f"the source classes, but the network has 5 outputs and the "
                                                   f"source domain 'digits' 10 classes"):
            Transfer(name).fit(source=digits, unlabeled=digits, net=five)
    five.reset_classifier(0)
    with pytest.raises(TransferkitError, match=r"the network has 0 outputs .* \(it has no classifier, as after "
                                               r"reset_classifier\(0\): this method needs one trained on the source"):
        Transfer("dann").fit(source=digits, unlabeled=digits, net=five)
    for name in ("image_unit", "ft_unit:conv2"):  # a fresh head they never train: refused, not a chance-level model
        with pytest.raises(TransferkitError, match="keeps the network's classifier fixed, but the network has none"):
            Transfer(name).fit(target=digits, net=five)
    monkeypatch.undo()  # lext checks its source copy's head when it is given the domains (before any step)
    with pytest.raises(TransferkitError, match=r"the network has no classifier \(as after reset_classifier\(0\)\)"):
        Transfer("lext").fit(source=digits, target=digits, unlabeled=digits, net=five)


def test_class_subsets_keep_the_whole_domains_split_so_no_test_image_trains_the_source():
    from transferkit.rundata import prepare_domains
    full = prepare_domains(ExperimentConfig(source="mnist", target="mnist+inversion", methods=["finetune"]))
    cut = prepare_domains(ExperimentConfig(source="mnist", target="mnist+inversion", target_classes="5-9",
                                           methods=["finetune"]))
    key = lambda x: (x * 255).round().byte().numpy().tobytes()  # noqa: E731
    seen = {key(x) for part in (cut.source.train, cut.source.val) for x in part.images}
    assert not any(key(1 - x) in seen for x in cut.target.test.images)  # inversion undone: a source image?
    wanted = full.target.test.labels >= 5  # the narrowed split is the whole one's, relabelled
    assert torch.equal(cut.target.test.images, full.target.test.images[wanted])
    assert torch.equal(cut.target.test.labels, full.target.test.labels[wanted] - 5)
    assert cut.target.test.class_names == list("56789")


def test_transfer_fits_a_given_network_without_a_source_domain():
    from transferkit.data import load_domain
    split = split_domain(load_domain("digits", size=28))
    few = sample_k_shot(split.train, 2, seed=0)[0]
    net = build_backbone("lenet", num_classes=7, in_channels=1, image_size=28)
    model = Transfer("finetune", train=TrainConfig(steps=2, eval_every=2, batch_size=8)).fit(target=few, val=split.val,
                                                                                           net=net)
    assert model.predict_logits(split.test.images[:3]).shape == (3, 10)


def test_narrowing_keeps_parts_left_without_an_image_of_the_classes():
    from transferkit.domain import Domain
    from transferkit.rundata import narrowed
    from transferkit.splits import Split
    train = Domain("d/train", torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 2]), ["a", "b", "c"])
    val = Domain("d/val", torch.rand(2, 1, 8, 8), torch.tensor([2, 2]), ["a", "b", "c"])
    cut = narrowed(Split(train, val, val), "a,b")  # small classes a and b gave no image to val or test
    assert len(cut.train) == 2 and len(cut.val) == 0 and cut.val.class_names == ["a", "b"]


def test_a_refused_run_leaves_folders_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    cfg = ExperimentConfig(name="r", source="digits", target="digits", k=2, repeats=1, methods=["flex"],
                           select_on="none", pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match="selects on a labelled validation set"):
        run_experiment(cfg, run_dir=mine / "run1", log=lambda *a: None)
    assert mine.is_dir() and not (mine / "run1").exists()


def test_a_resume_starts_from_the_run_s_own_source_network_and_refuses_changed_data(tmp_path, monkeypatch):
    import shutil
    from dataclasses import replace

    import numpy as np
    from safetensors.torch import load_file

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    x, y = np.random.default_rng(0).random((60, 8, 8)).astype("float32"), np.repeat(np.arange(3), 20)
    npz = tmp_path / "t.npz"
    np.savez(npz, x=x, y=y)
    cfg = ExperimentConfig(name="pin", source="digits", target=f"npz:{npz}", source_classes="0-2", k=2, repeats=1,
                           methods=["source_only", "finetune"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path / "runs"))
    logs: list = []
    run_dir, rows = run_experiment(cfg, log=logs.append)
    cached = next((tmp_path / "cache" / "pretrained").glob("*.safetensors"))
    pinned = load_file(str(run_dir / "source.safetensors"))
    assert pinned.keys() == load_file(str(cached)).keys()
    assert all(torch.equal(v, load_file(str(cached))[k]) for k, v in pinned.items())
    assert (run_dir / "data.json").exists()
    shutil.rmtree(tmp_path / "cache")  # a cleared cache, or another machine
    logs.clear()
    assert run_experiment(cfg, run_dir=run_dir, log=logs.append)[1] == rows
    assert not any("pre-training" in line for line in logs)  # every job that needs the network had finished

    def another_network(*a, **k):
        raise AssertionError("a resume pre-trained (another thread count would give another network)")
    monkeypatch.setattr("transferkit.source.pretrain_source", another_network)
    grown = run_experiment(replace(cfg, repeats=2), run_dir=run_dir, log=logs.append)[1]
    assert len(grown) == 3 and grown[:2] == rows  # the added job started from source.safetensors
    np.savez(npz, x=x[::-1].copy(), y=y)  # the same config, other images
    for other in (replace(cfg, repeats=3), replace(cfg, methods=["linear_probe"])):  # also when no row is selected
        with pytest.raises(TransferkitError, match="computed on other data: the images, labels, class names or group "
                                                   "ids of target.test, target.train, target.val changed"):
            run_experiment(other, run_dir=run_dir, log=logs.append)


def _refused_until_the_pinned_network_is_deleted(cfg, run_dir, hint: str) -> list[str]:
    """Corrupt a run's pinned source network (in place), take a job's row away: the resume is refused
    with ``hint``; deleted as told, the run resumes. Returns the resume's log."""
    pinned = run_dir / "source.safetensors"
    with open(pinned, "r+b") as f:  # in place: a cache file it is linked to as well
        f.write(b"\xff" * 8)
    (run_dir / "jobs" / "finetune-k=2-s0.json").unlink()
    with pytest.raises(TransferkitError, match=r"source.safetensors is unreadable .*: delete it and resume to " + hint):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    pinned.unlink()
    logs: list = []
    run_experiment(cfg, run_dir=run_dir, log=logs.append)
    return logs


def test_a_corrupted_pinned_network_says_what_to_do_and_doing_it_gives_the_same_network(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cfg = ExperimentConfig(name="bad", source="digits", target="digits", k=2, repeats=1,
                           methods=["source_only", "finetune"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path / "runs"))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    first = load_file(str(run_dir / "source.safetensors"))
    logs = _refused_until_the_pinned_network_is_deleted(cfg, run_dir, r"pin the source network again: .*pre-trained "
                                                                      r"again")
    resumed = json.loads((run_dir / "results.json").read_text())["rows"]
    assert [r["per_class_accuracy"] for r in resumed] == [r["per_class_accuracy"] for r in rows]
    assert any("pre-training" in line for line in logs)
    again = load_file(str(run_dir / "source.safetensors"))
    assert again.keys() == first.keys() and all(torch.equal(v, again[k]) for k, v in first.items())


def test_a_damaged_pinned_copy_of_a_pretrained_file_is_told_to_copy_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    base = ExperimentConfig(name="pre", source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                            pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    shutil.copyfile(run_experiment(base, log=lambda *a: None)[0] / "source.safetensors", tmp_path / "net.safetensors")
    cfg = replace(base, name="from-file", pretrained=str(tmp_path / "net.safetensors"),
                  methods=["source_only", "finetune"])
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    _refused_until_the_pinned_network_is_deleted(cfg, run_dir, r"copy the pretrained: file .*net.safetensors again")
    resumed = json.loads((run_dir / "results.json").read_text())["rows"]
    assert [r["per_class_accuracy"] for r in resumed] == [r["per_class_accuracy"] for r in rows]


def test_rows_record_their_data_parallel_processes_and_a_resume_with_another_count_is_refused(tmp_path, monkeypatch):
    cfg = ExperimentConfig(name="w", source="digits", target="digits", k=2, repeats=1,
                           methods=["source_only", "finetune"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path / "runs"))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert [r["world_size"] for r in rows] == [1, 1]
    assert json.loads((run_dir / "results.json").read_text())["environment"]["world_size"] == 1
    job = run_dir / "jobs" / "finetune-k=2-s0.json"
    row = json.loads(job.read_text())
    job.write_text(json.dumps({**row, "world_size": 2}))  # as --nproc 2 wrote it
    with pytest.raises(TransferkitError, match=r"1 finished job\(s\) \(jobs/finetune-k=2-s0.json\) ran in 2 "
                                               r"data-parallel process\(es\) and this resume runs 1: .*resume with "
                                               r"--nproc 2, or use a new run directory"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    job.write_text(json.dumps({k: v for k, v in row.items() if k != "world_size"}))  # before it was recorded
    assert [r["accuracy"] for r in run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]] == \
        [r["accuracy"] for r in rows]
    from transferkit import rundir
    monkeypatch.setattr(rundir, "world_size", lambda: 2)  # an old --nproc 2 run (no count) resumed with 2
    rundir.check_same_world(cfg, run_dir, {("finetune", 0): {}, ("source_only", 0): {"world_size": 2}})
    with pytest.raises(TransferkitError, match=r"2 finished job\(s\) \(jobs/finetune-k=2-s0.json, "
                                               r"jobs/source_only-k=2-s0.json\) ran in 1 "):
        rundir.check_same_world(cfg, run_dir, {("finetune", 0): {"world_size": 1},
                                                    ("source_only", 0): {"world_size": 1}})


def test_an_out_dir_that_cannot_hold_a_run_is_named(tmp_path):
    from dataclasses import replace
    (tmp_path / "afile").write_text("")
    cfg = ExperimentConfig(name="o", source="digits", target="digits", k=2, repeats=1, methods=["finetune"],
                           out_dir=str(tmp_path / "afile" / "sub"))
    with pytest.raises(TransferkitError, match=r"out_dir '.*afile/sub': cannot make the run directory .*afile/sub/o/"
                                               r".* \(.*afile is a file, not a directory\); set out_dir to a "
                                               r"directory you can write to"):
        run_experiment(cfg, log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"out_dir '/proc/nosuch': cannot make the run directory "
                                               r"/proc/nosuch/o/.* \(No such file or directory"):
        run_experiment(replace(cfg, out_dir="/proc/nosuch"), log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"^cannot make the run directory .*afile/run \(.*afile is a file"):
        run_experiment(cfg, run_dir=tmp_path / "afile" / "run", log=lambda *a: None)


def test_a_resume_after_editing_the_run_s_config_yaml_names_the_changed_key(tmp_path):
    from dataclasses import replace
    cfg = ExperimentConfig(name="e", source="digits", target="digits", k=2, repeats=1, methods=["finetune"],
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    run_dir, _ = run_experiment(cfg, log=lambda *a: None)
    from transferkit.config import dump_config
    edited = replace(cfg, train=replace(TINY, steps=12))
    (run_dir / "config.yaml").write_text(dump_config(edited))  # edited in the run directory
    with pytest.raises(TransferkitError, match=r"finetune-k=2-s0.json was run with another configuration than .* "
                                               r"\(changed since the job ran, by the config its results.json keeps: "
                                               r"train.steps: 10 there, 12 now\); restore"):
        run_experiment(edited, run_dir=run_dir, log=lambda *a: None)
    (run_dir / "results.json").unlink()  # no record of the config the row was made with: no key is guessed
    with pytest.raises(TransferkitError, match=r"gives now; restore that config"):
        run_experiment(edited, run_dir=run_dir, log=lambda *a: None)


def test_a_pretrained_file_is_pinned_by_a_copy_and_left_untouched(tmp_path, monkeypatch):
    import os
    from dataclasses import replace

    from safetensors.torch import load_file, save, save_file
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    given = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(given))
    given.chmod(0o444)
    monkeypatch.setenv("HOME", str(tmp_path))  # '~' in pretrained and out_dir is the home directory
    cfg = ExperimentConfig(name="given", source="digits", target="digits", backbone="lenet", k=2, repeats=1,
                           methods=["finetune"], pretrained="~/mine.safetensors", train=TINY, out_dir="~/runs")
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    pinned = run_dir / "source.safetensors"
    assert oct(given.stat().st_mode & 0o777) == "0o444" and given.stat().st_nlink == 1
    assert os.stat(pinned).st_ino != given.stat().st_ino
    given.chmod(0o644)
    with torch.no_grad():
        net.head.weight.add_(1)
    inode = given.stat().st_ino
    with open(given, "wb") as f:  # overwritten in place (same inode)
        f.write(save({k: v.contiguous() for k, v in net.state_dict().items()}))
    assert given.stat().st_ino == inode
    assert not torch.equal(load_file(str(pinned))["head.weight"], load_file(str(given))["head.weight"])
    monkeypatch.setattr("transferkit.source.pretrain_source", lambda *a, **k: pytest.fail("read the overwritten file"))
    grown = run_experiment(replace(cfg, repeats=2), run_dir=run_dir, log=lambda *a: None)[1]
    assert grown[0] == rows[0] and len(grown) == 2


def test_changed_data_without_rows_drops_the_pinned_source_network(tmp_path):
    from transferkit.rundata import Prepared
    from transferkit.rundir import check_same_data, data_digests
    from transferkit.splits import Split
    def split(seed):
        from helpers import toy_domain
        d = toy_domain(12, seed=seed)
        return Split(d, d, d)
    data = Prepared(source=split(0), target=split(1), channels=1)
    check_same_data(tmp_path, data, True)
    sizes = {f"{s}.{p}": 12 for s in ("source", "target") for p in ("train", "val", "test")}
    assert json.loads((tmp_path / "data.json").read_text()) == {**data_digests(data), "sizes": sizes}
    (tmp_path / "source.safetensors").write_text("trained on the old data")
    (tmp_path / "checkpoints" / "finetune-k=2-s0").mkdir(parents=True)
    other = Prepared(source=split(2), target=split(1), channels=1)
    check_same_data(tmp_path, other, True)  # no job row depends on them: re-pinned and retrained on the new data
    assert not (tmp_path / "source.safetensors").exists() and not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "data.json").read_text()) == {**data_digests(other), "sizes": sizes}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "finetune-k=2-s0.json").write_text("{}")
    with pytest.raises(TransferkitError, match="other data: .* of source.test, source.train, source.val changed"):
        check_same_data(tmp_path, data, True)
    first = {f"{s}.{p}": getattr(getattr(other, s), p).digest() for s in ("source", "target")
             for p in ("train", "val", "test")}
    (tmp_path / "data.json").write_text(json.dumps(first))  # written by the first version (no format)
    check_same_data(tmp_path, other, True)  # the same data: accepted, rewritten in today's format
    assert json.loads((tmp_path / "data.json").read_text()) == {**data_digests(other), "sizes": sizes}
    for part in ("train", "val", "test"):  # a folder's: its label draws' version is recorded
        getattr(other.target, part).provenance["origin"] = "folder:/data/scans"
    before = {k: v for k, v in data_digests(other).items() if k != "folder_label_draws"}
    assert data_digests(other)["folder_label_draws"] == 2
    (tmp_path / "data.json").write_text(json.dumps(before))  # a folder run of this morning
    with pytest.raises(TransferkitError, match=r"was made before 2026-12-02 10:00 UTC, since when a target folder's "
                                               r"label subsets \(k, ratio\) are drawn otherwise"):
        check_same_data(tmp_path, other, True)
    for part in ("train", "val", "test"):  # a source folder and a built-in target: no label drawn from a folder
        getattr(other.target, part).provenance["origin"] = "mnist"
        getattr(other.source, part).provenance["origin"] = "folder:/data/photos"
    assert "folder_label_draws" not in data_digests(other)


def test_an_interrupted_start_leaves_no_directory_and_tuple_configs_resume(tmp_path, monkeypatch):
    from transferkit import experiment
    cfg = ExperimentConfig(name="tup", source="digits", target="digits", source_classes=(0, 1, 2),
                           target_classes=(0, 1, 2), k=2, repeats=1, methods=["target_only"], pretrain=TINY_PRE,
                           train=TINY, out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1] == rows  # lists there, tuples here

    def interrupted(cfg, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "prepare_domains", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentConfig(name="stopped", out_dir=str(tmp_path)), log=lambda *a: None)
    assert not (tmp_path / "stopped").exists()  # nothing a resume could mistake for a run


def test_yaml_exponents_are_numbers_for_numeric_options_and_text_stays_text(tmp_path):
    from transferkit.methods import get_method
    cfg = load_config(None, ["methods=[dann, ft_slow, multilayer_adv]", "options.dann.weight=1e-3",
                             "options.multilayer_adv.hidden=1e2", "train.lr=2E-4", "name=2e3", "train.steps=1e3"])
    assert cfg.train.lr == 0.0002 and cfg.name == "2e3" and cfg.train.steps == 1000
    net = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    dann = get_method("dann")(net, **cfg.options["dann"])  # PyYAML (YAML 1.1) read "1e-3" as text
    assert dann.weight == 0.001 and dann.init_options == {"weight": 0.001}
    assert get_method("multilayer_adv")(net, **cfg.options["multilayer_adv"]).init_options["hidden"] == 100
    path = tmp_path / "c.yaml"
    path.write_text("methods: [ft_slow]\noptions: {ft_slow: {backbone_lr_mult: 1e-2}}\nname: '2e3'\n")
    cfg = load_config(path)
    assert get_method("ft_slow")(net, **cfg.options["ft_slow"]).backbone_lr_mult == 0.01 and cfg.name == "2e3"
    from transferkit.config import dump_config
    path.write_text(dump_config(cfg))  # a run's config.yaml: name 2e3 unquoted was read back as 2000 (a trial)
    assert "name: '2e3'" in path.read_text() and load_config(path).name == "2e3"
    for text in ("heavy", "1__0"):  # "1__0" looks like a number to the pattern, not to float()
        with pytest.raises(TransferkitError, match=f"must be a finite number >= 0, got '{text}'"):
            get_method("dann")(net, weight=text)


def test_an_unknown_backbone_is_named_as_the_config_s(tmp_path):
    with pytest.raises(TransferkitError, match="^unknown backbone 'foo'"):
        run_experiment(ExperimentConfig(backbone="foo", out_dir=str(tmp_path)), log=lambda *a: None)
    assert not any(tmp_path.iterdir())


def test_a_resume_refused_for_stale_checkpoints_keeps_the_config_and_the_source_record_comes_first(tmp_path,
                                                                                                   monkeypatch):
    """A resume that gives an unfinished job's method other options is refused before config.yaml is
    rewritten (the engine would refuse its checkpoints only later); the pinned source network's record
    is written before the network, and a torn record is a named error."""
    from dataclasses import replace

    import yaml

    import transferkit.experiment as experiment

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cfg = ExperimentConfig(name="stale", source="digits", target="digits", k=2, repeats=1, backbone="lenet",
                           methods=["source_only", "ft_slow"], pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))

    def killed(src, dst, link):
        raise KeyboardInterrupt  # killed between the two writes
    monkeypatch.setattr("transferkit.source._pin", killed)
    monkeypatch.setattr(experiment, "_remove_if_unused", lambda *a, **k: None)  # kill -9: no clean-up runs
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, log=lambda *a: None)
    run_dir = next((tmp_path / "stale").iterdir())
    assert (run_dir / "source.json").exists() and not (run_dir / "source.safetensors").exists()
    monkeypatch.undo()
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    _, rows = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    assert rows[0]["source_val_accuracy"] is not None
    (run_dir / "checkpoints" / "ft_slow-k=2-s0").mkdir(parents=True)  # as if killed mid-training
    (run_dir / "jobs" / "ft_slow-k=2-s0.json").unlink()
    config = (run_dir / "config.yaml").read_text()
    other = replace(cfg, options={"ft_slow": {"backbone_lr_mult": 0.5}})
    with pytest.raises(TransferkitError, match=r"unfinished job\(s\) ft_slow-k=2-s0 have checkpoints trained with "
                                               r"other options"):
        run_experiment(other, run_dir=run_dir, log=lambda *a: None)
    assert (run_dir / "config.yaml").read_text() == config
    from transferkit.experiment import _jobs_of
    from transferkit.methods import get_method
    from transferkit.rundir import check_unfinished_checkpoints
    at_default = replace(cfg, options={"ft_slow": {"backbone_lr_mult": 0.1}})  # what the checkpoint was trained with
    stored = yaml.safe_load(config)
    classes = [get_method(m) for m in at_default.methods]
    check_unfinished_checkpoints(at_default, run_dir, _jobs_of(at_default, classes), {}, stored)
    as_tuple = replace(cfg, methods=["dann"], options={"dann": {"layers": ("embedding",)}})
    (run_dir / "checkpoints" / "dann-k=2-s0").mkdir()
    stored = yaml.safe_load(experiment.dump_config(as_tuple))  # the tuple reads back as a list
    check_unfinished_checkpoints(as_tuple, run_dir, _jobs_of(as_tuple, [get_method("dann")]), {}, stored)
    (run_dir / "checkpoints" / "dann-k=2-s0").rmdir()
    (run_dir / "source.json").write_text('{"val_accuracy": 0.9')  # torn
    with pytest.raises(TransferkitError, match="source network record .*source.json is unreadable"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    (run_dir / "source.json").write_text('[1]')  # JSON, but no record
    with pytest.raises(TransferkitError, match="source.json is not a source network record"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)


def test_a_ratio_above_a_class_size_warns_that_the_class_keeps_all_its_images():
    from transferkit.rundata import label_subset, prepare_domains
    cfg = ExperimentConfig(name="r", source="digits", target="digits", k=None, ratio=1000, repeats=1,
                           methods=["finetune"])
    data = prepare_domains(cfg)
    with pytest.warns(UserWarning, match="ratio 1000: the smallest class .* keep all of theirs"):
        labeled, _ = label_subset(cfg, data.target, 0)
    assert len(labeled) == len(data.target.train)


def test_the_unlabelled_target_is_the_rest_with_k_and_the_whole_train_split_with_ratio():
    from dataclasses import replace

    from transferkit.rundata import label_subset, prepare_domains
    cfg = ExperimentConfig(source="digits", target="digits", k=3, methods=["finetune"])
    data = prepare_domains(cfg)
    train = data.target.train
    labeled, unlabeled = label_subset(cfg, data.target, 0)
    assert len(labeled) == 30 and len(unlabeled) == len(train) - 30  # k: the rest
    labeled, unlabeled = label_subset(replace(cfg, k=None, ratio=3), data.target, 0)
    assert len(labeled) == 30 and unlabeled is train  # ratio: the whole train split (documented)


def test_a_pretrained_file_whose_head_names_other_classes_in_order_is_refused():
    from dataclasses import replace

    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source

    cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-4", backbone="lenet",
                           pretrain=TrainConfig(steps=2, eval_every=2, batch_size=8))
    _, info = pretrain_source(cfg, prepare_domains(cfg), log=lambda *a: None)
    same = replace(cfg, pretrained=info["path"])
    pretrain_source(same, prepare_domains(same), log=lambda *a: None)  # the same classes in the same order
    reordered = replace(same, source_classes="4,3,2,1,0")
    with pytest.raises(TransferkitError, match=r"trained on the classes \['0', '1', '2', '3', '4'\].*the source has "
                                               r"\['4', '3', '2', '1', '0'\]"):
        pretrain_source(reordered, prepare_domains(reordered), log=lambda *a: None)  # scored 0 % silently



def test_a_pretrained_torch_file_is_refused_saying_what_to_give_and_save_network_writes_one(tmp_path):
    """pretrained: a torch.save'd state_dict said only 'unreadable (Error while deserializing header:
    header too large)' (a trial); save_network writes the file, with the class names it is checked on."""
    from dataclasses import replace

    from safetensors.torch import save_file

    from transferkit.networks import save_network
    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source
    cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-4", backbone="lenet",
                           pretrain=TrainConfig(steps=2, eval_every=2, batch_size=8))
    data = prepare_domains(cfg)
    net = build_backbone("lenet", num_classes=5)
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    torch.save(net.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("mine.pt", "legacy.pt"):  # in UnitNet keys or not: a pickle is not read
        with pytest.raises(TransferkitError, match=r"is a PyTorch file \(torch.save\), not a safetensors file: "
                                                   r"pretrained: takes a safetensors file .* \(keys units\.<unit>\.… "
                                                   r"and head\.…\).*transferkit\.save_network\(net, path, "
                                                   r"class_names=\[\.\.\.\]\) writes one"):
            pretrain_source(replace(cfg, pretrained=str(tmp_path / name)), data, log=lambda *a: None)
    (tmp_path / "junk.safetensors").write_bytes(b"not a network at all")
    with pytest.raises(TransferkitError, match=r"junk.safetensors is unreadable \(.*\): pretrained: takes a "
                                               r"safetensors file"):
        pretrain_source(replace(cfg, pretrained=str(tmp_path / "junk.safetensors")), data, log=lambda *a: None)
    path = save_network(net, tmp_path / "mine.safetensors", class_names=data.source.train.class_names)
    loaded, _ = pretrain_source(replace(cfg, pretrained=str(path)), data, log=lambda *a: None)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    reordered = replace(cfg, pretrained=str(path), source_classes="4,3,2,1,0")
    with pytest.raises(TransferkitError, match=r"trained on the classes \['0', '1', '2', '3', '4'\]"):
        pretrain_source(reordered, prepare_domains(reordered), log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"class_names must name the 5 rows of the head, in order, as text"):
        save_network(net, tmp_path / "other.safetensors", class_names=range(5))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"class_names": "0-4"})
    with pytest.raises(TransferkitError, match=r"its metadata class_names must be a JSON list of class names, "
                                               r"got '0-4'"):
        pretrain_source(replace(cfg, pretrained=str(path)), data, log=lambda *a: None)


def test_a_run_from_a_pretrained_file_says_so(tmp_path):
    from dataclasses import replace

    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source
    cfg = ExperimentConfig(source="digits", target="digits", backbone="lenet", methods=["finetune"], k=2, repeats=1,
                           pretrain=TrainConfig(steps=2, eval_every=2, batch_size=8), train=TrainConfig(steps=2),
                           out_dir=str(tmp_path))
    _, info = pretrain_source(cfg, prepare_domains(cfg), log=lambda *a: None)
    lines = []
    run_experiment(replace(cfg, pretrained=info["path"]), log=lines.append)
    assert f"source network: from the pretrained file {info['path']}" in lines, lines  # not "n/a, 0.0s (cached)"


def test_a_run_without_source_images_transfers_the_pretrained_network_alone(tmp_path):
    """source: null: a user with a network file and no source images; the classes come from the
    file, and every job is the one it is in a run that names the source the network came from."""
    from transferkit.networks import save_network
    from transferkit.source import pretrain_source
    cfg = ExperimentConfig(source="digits", target="digits", backbone="lenet", k=2, repeats=1,
                           methods=["source_only", "finetune", "linear_probe"], select_on="none",
                           pretrain=TrainConfig(steps=4, eval_every=2, batch_size=8), train=TrainConfig(steps=4),
                           out_dir=str(tmp_path))
    net, _ = pretrain_source(cfg, prepare_domains(cfg), log=lambda *a: None)
    path = save_network(net, tmp_path / "mine.safetensors", class_names=[str(i) for i in range(10)])
    _, with_source = run_experiment(replace(cfg, pretrained=str(path), name="with"), log=lambda *a: None)
    alone = replace(cfg, source=None, pretrained=str(path), name="alone")
    lines = []
    run, rows = run_experiment(alone, log=lines.append)
    assert [(r["method"], r["accuracy"]) for r in rows] == [(r["method"], r["accuracy"]) for r in with_source]
    (run / "jobs" / "finetune-k=2-s0.json").unlink()  # a job to run again, from the run's pinned copy of the
    moved = path.rename(tmp_path / "moved.safetensors")  # network: the original is gone, as with a source
    again = run_experiment(alone, run_dir=run, log=lambda *a: None)[1]
    assert [(r["method"], r["accuracy"]) for r in again] == [(r["method"], r["accuracy"]) for r in rows]
    moved.rename(path)
    assert {r["source"] for r in rows} == {"mine.safetensors"}
    assert rows[0]["method"] == "source_only" and rows[0]["pretrain_cached"] is None  # nothing was pre-trained
    assert any(line.startswith(f"source: the network of {path} alone (10 classes); target digits") for line in lines)
    data = prepare_domains(alone)
    assert len(data.source.train) == 0 and data.source.train.class_names == [str(i) for i in range(10)]
    from transferkit import load_network
    python = Transfer("source_only", backbone="lenet").fit(target=data.target.train, net=load_network(path, "lenet"))
    assert python.score(data.target.test) == rows[0]["accuracy"]  # as the run's (a trial: it needed a source)
    for kwargs, refusal in [({"pretrained": None}, r"source: null \(no source images\) needs `pretrained`"),
                            ({"select_on": "source_val"}, r"source_val .* source: null gives none"),
                            ({"source_classes": "0-4"}, r"source_classes '0-4' chooses source images")]:
        with pytest.raises(TransferkitError, match=refusal):
            replace(alone, **kwargs)
    with pytest.raises(TransferkitError, match=r"^dann, coral train on labelled source images, and source: null "):
        check_names(replace(alone, methods=["dann", "finetune", "coral", "source_only"]))
    colour = build_backbone("lenet", num_classes=3, in_channels=3)
    save_network(colour, tmp_path / "colour.safetensors", class_names=["0", "1", "2"])
    data = prepare_domains(replace(alone, pretrained=str(tmp_path / "colour.safetensors")))
    assert data.channels == 3 and data.target.train.images.shape[1] == 3  # the channels the file's network takes
    cosine = build_backbone("lenet", num_classes=10, head="cosine")  # finetune_cosine's head (a trial: refused)
    save_network(cosine, tmp_path / "cosine.safetensors", class_names=[str(i) for i in range(10)])
    for source in (None, "digits"):
        _, rows = run_experiment(replace(alone, source=source, pretrained=str(tmp_path / "cosine.safetensors"),
                                         name=f"cosine-{source}", methods=["source_only", "linear_probe"]),
                                 log=lambda *a: None)
        assert [r["method"] for r in rows] == ["source_only", "linear_probe"]
    with pytest.warns(TransferkitWarning, match=r"pretrain.steps: 4, pretrain.batch_size: 8, pretrain.eval_every: 2 "
                                                r"are not used: pretrained: .*mine.safetensors is the source network"):
        run_experiment(alone, run_dir=run, log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"it predicts with the network's classifier, whose classes \(\['0', "
                                               r"'1', '2'\]\) lack the target classes \['3', .*name the target's "
                                               r"classes as the network's"):
        run_experiment(replace(alone, pretrained=str(tmp_path / "colour.safetensors"), name="few", channels=1,
                               methods=["source_only"]), log=lambda *a: None)  # it named finetune_adv and lext
    with pytest.warns(TransferkitWarning, match=r"target 'mnistm': its colour images are converted to grey, the "
                                                r"channels the network of .*mine.safetensors takes"):
        prepare_domains(replace(alone, target="mnistm"))
    save_network(colour, tmp_path / "nameless.safetensors")
    with pytest.raises(TransferkitError, match=r"nameless.safetensors names none .*write it again with its class "
                                               r"names \(transferkit.save_network"):
        prepare_domains(replace(alone, pretrained=str(tmp_path / "nameless.safetensors")))


def test_a_target_of_one_class_is_refused_in_a_run_and_in_fit(tmp_path):
    import numpy as np

    from transferkit.api import Transfer
    from transferkit.data import load_domain
    from transferkit.rundata import prepare_domains
    with pytest.raises(TransferkitError, match=r"the target 'digits' has one class \(\['3'\], target_classes 3\): "
                                               r"every model would score 100 %.*the first three are 0-2"):
        prepare_domains(ExperimentConfig(source="digits", target="digits", target_classes=3))
    digits = load_domain("digits")
    keep = digits.labels < 3  # three classes named 1, 10 and 2, as numbered folders: numbers name classes
    np.savez(tmp_path / "named.npz", x=(digits.images[keep] * 255).round().byte().numpy(),
             y=digits.labels[keep].numpy(), class_names=np.array(["1", "10", "2"]))
    with pytest.raises(TransferkitError, match=r"has one class \(\['10'\], target_classes 10\).*classes are named "
                                               r"by numbers, so a number is one class name: e.g. \[1, 2, 10\]"):
        prepare_domains(ExperimentConfig(source="digits", target=f"npz:{tmp_path / 'named.npz'}", target_classes=10))
    spec = f"npz:{tmp_path / 'named.npz'}"  # the spec given, not its train split's path-like name '.../train'
    with pytest.raises(TransferkitError, match=rf"unknown class 'nine' in domain '{re.escape(spec)}'; classes are"):
        prepare_domains(ExperimentConfig(source="digits", target=spec, target_classes=["1", "nine"]))
    one = digits.select_classes([3])
    with pytest.raises(TransferkitError, match="fit: the target domain .* has one class"):
        Transfer("target_only").fit(target=one)
    # a source of one class: the pre-training's cross entropy is 0 whatever the weights (it learns nothing)
    with pytest.raises(TransferkitError, match=r"the source 'digits' has one class \(\['4'\], source_classes 4\): a "
                                               r"network trained to tell one class from none learns nothing"):
        prepare_domains(ExperimentConfig(source="digits", source_classes=4, target="mnist", target_classes="0-1"))
    with pytest.raises(TransferkitError, match="fit: the source domain .* has one class"):
        Transfer("finetune").fit(source=one, target=digits.select_classes([1, 2]))


def test_transfer_refuses_impossible_labels_a_changed_head_and_names_what_it_cannot_see():
    from transferkit.data import load_domain
    from transferkit.domain import Domain
    digits = load_domain("digits", size=28)
    src, tgt = digits.select_classes(range(8)), digits.select_classes([6, 7, 8, 9])
    tiny = {"steps": 2, "eval_every": 1}
    with pytest.warns(TransferkitWarning, match=r"unlabeled domain .* names classes the source has no image of "
                                                r"\(\['8', '9'\]\)") as caught:
        model = Transfer("mcc", train=tiny, pretrain=tiny).fit(source=src, unlabeled=tgt)
    assert {w.filename for w in caught} == {__file__}  # the user's line, not the library's
    x = src.images[:6]
    for bad, message in ((torch.full((6,), -1), r"labels out of range \[0, 7\] \(found -1..-1\): they are positions"),
                         (torch.full((6,), 8), r"out of range \[0, 7\] \(found 8..8\)"),
                         (torch.full((6,), 0.5), r"score: labels must be integer class ids \(positions in "
                                                 r"model.classes_\), got non-integral values of dtype torch.float32"),
                         (["0"] * 6, r"got list \['0', .*; map class names to ids: \[model.classes_.index\(c\)"),
                         (torch.ones(6, dtype=torch.bool), "got booleans")):
        with pytest.raises(TransferkitError, match=message):
            model.score(x, bad)
    assert 0.0 <= model.score(x, src.labels[:6]) <= 1.0
    assert model.score(x, src.labels[:6].double()) == model.score(x, src.labels[:6])  # whole floats, as Domain reads
    other = Domain("mine", src.images[:50].clone(), src.labels[:50].clone(), src.class_names)  # not from the source
    with pytest.warns(TransferkitWarning, match="early stopping selects on the labels of val 'mine', which is not "
                                                "recognisably a split of the source") as caught:
        Transfer("mcc", train=tiny, pretrain=tiny).fit(source=src, unlabeled=tgt, val=other)
    assert {w.filename for w in caught} == {__file__}
    import warnings

    from transferkit.splits import split_domain
    with warnings.catch_warnings():  # a split of the source is the source's validation: no warning
        warnings.simplefilter("error", TransferkitWarning)
        for source in (src, Domain("mine", src.images.clone(), src.labels.clone(), src.class_names)):
            parts = split_domain(source)
            Transfer("mcc", train=tiny, pretrain=tiny).fit(source=parts.train, unlabeled=digits.select_classes([6, 7]),
                                                           val=parts.val)
    model.net_.reset_classifier(0)  # the fitted network changed under the model
    with pytest.raises(TransferkitError, match="the model gives 64 outputs for its 8 classes: its head was changed"):
        model.predict(x)
    with pytest.raises(TransferkitError, match=r"labels out of range \[0, 4\] \(found 0..7\): 5 class_names for labels "
                                               r"up to 7"):
        Domain("few", src.images[:40], src.labels[:40], src.class_names[:5])
    with pytest.raises(TransferkitError, match=r"\(found 1..8\): they look 1-based; class ids start at 0, subtract 1"):
        Domain("one-based", src.images[:40], src.labels[:40].clamp(0, 7) + 1, src.class_names)


def test_transfer_names_a_backbone_that_is_no_name_an_ignored_source_and_classes_matched_by_number(tmp_path):
    import warnings

    import numpy as np

    from transferkit.data import load_domain
    for bad, message in ((build_backbone("lenet", 3), r"backbone must be the name of a registered backbone .*got a "
                                                      r"UnitNet; give your own network to fit\(net=...\)"),
                         ("lenett", "unknown backbone 'lenett'; known: convnet4, convnet7, lenet, resnet18")):
        with pytest.raises(TransferkitError, match=message):
            Transfer("finetune", backbone=bad)  # was: at fit, with the module's whole repr
    digits = load_domain("digits", size=28)
    tiny = {"steps": 2, "eval_every": 1}
    x = (digits.images * 255).round().to(torch.uint8).numpy()
    y = digits.labels.numpy()
    np.savez(tmp_path / "s.npz", x=x[y < 5], y=y[y < 5])
    np.savez(tmp_path / "t.npz", x=x[y >= 5], y=y[y >= 5] - 5)  # digits 5-9 numbered 0-4
    np.savez(tmp_path / "tn.npz", x=x[y >= 5], y=y[y >= 5] - 5, class_names=np.array(list("56789")))
    s, t = load_domain(f"npz:{tmp_path / 's.npz'}"), load_domain(f"npz:{tmp_path / 't.npz'}")
    with pytest.warns(TransferkitWarning, match=r"the source '.*s.npz' and the target '.*t.npz' both number their "
                                                r"classes \(no class_names\), so target class\(es\) \['0', '1', '2', "
                                                r"'3', '4'\] are taken to be the source's"):
        Transfer("finetune", train=tiny, pretrain=tiny).fit(target=t, source=s)
    with pytest.warns(TransferkitWarning, match="both number their classes"):
        prepare_domains(ExperimentConfig(source=f"npz:{tmp_path / 's.npz'}", target=f"npz:{tmp_path / 't.npz'}"))
    (tmp_path / "link.npz").symlink_to(tmp_path / "s.npz")
    with warnings.catch_warnings():  # named classes, or one file (by any path) cut into source and target: no warning
        warnings.simplefilter("error", TransferkitWarning)
        prepare_domains(ExperimentConfig(source=f"npz:{tmp_path / 's.npz'}", target=f"npz:{tmp_path / 'link.npz'}",
                                         source_classes="0-2", target_classes="3-4"))
        Transfer("finetune", train=tiny, pretrain=tiny).fit(target=load_domain(f"npz:{tmp_path / 'tn.npz'}"),
                                                            source=s)
        prepare_domains(ExperimentConfig(source=f"npz:{tmp_path / 's.npz'}", target=f"npz:{tmp_path / 's.npz'}",
                                         source_classes="0-2", target_classes="3-4"))
    with pytest.warns(TransferkitWarning, match=r"domain 'raw': the uint8 images go up to 16 of 255, so they load "
                                                r"almost black .*images.float\(\) / 16"):
        Domain("raw", torch.full((4, 1, 8, 8), 16, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.warns(TransferkitWarning, match="domain 'zeros': every pixel of the uint8 images is 0"):
        Domain("zeros", torch.zeros((4, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(TransferkitError, match=r"found 0..16 \(divide by their full range: 255 for 8-bit pixels, 16 "
                                               r"if that is their maximum"):
        Domain("float16", torch.linspace(0, 16, 256).view(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"])


def test_a_target_of_seen_and_new_classes_reports_seen_unseen_and_their_harmonic_mean(tmp_path):
    from transferkit.fitting import seen_unseen_accuracy
    got = seen_unseen_accuracy([1.0, 0.5, None, 0.0], ["a", "b", "c", "d"], ["a", "c"])
    assert got == {"seen_accuracy": 1.0, "unseen_accuracy": 0.25, "h_accuracy": pytest.approx(0.4)}
    assert seen_unseen_accuracy([1.0, 0.5], ["a", "b"], ["a", "b"]) == {}  # no new class: nothing to split
    cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-6", k=2, repeats=2,
                           methods=["linear_probe", "finetune"], pretrain=TINY_PRE,
                           train=TrainConfig(steps=4, eval_every=2), out_dir=str(tmp_path))
    run_dir, rows = run_experiment(cfg, log=lambda *a, **k: None)
    for r in rows:
        accs = dict(zip(r["class_names"], (row[i] / sum(row) for i, row in enumerate(r["confusion"]))))  # exact
        assert r["per_class_accuracy"] == pytest.approx(list(accs.values()), abs=5e-7)  # rounded to 6 decimals
        seen = [accs[c] for c in "0123456"]
        unseen = [accs[c] for c in "789"]
        assert r["seen_accuracy"] == pytest.approx(sum(seen) / 7) and r["unseen_accuracy"] == pytest.approx(
            sum(unseen) / 3)
        s, u = r["seen_accuracy"], r["unseen_accuracy"]
        assert r["h_accuracy"] == pytest.approx(0.0 if s + u == 0 else 2 * s * u / (s + u))
    assert len(rows) == 4
    table = (run_dir / "results.md").read_text()
    assert "| seen / unseen classes: H (%) |" in table and "Classes: source classes 0-6." in table
    summary = json.loads((run_dir / "results.json").read_text())["summary"]
    tuned = next(s for s in summary if s["method"] == "finetune")
    assert tuned["h_accuracy_mean"] == pytest.approx(sum(r["h_accuracy"] for r in rows if r["method"] == "finetune")
                                                     / 2)


def test_a_pretrained_file_of_another_backbone_is_refused_in_one_line_naming_the_backbone(tmp_path):
    from safetensors.torch import save_file

    from transferkit.networks import load_network_file
    lenet = build_backbone("lenet", num_classes=10, in_channels=1, image_size=28)
    path = tmp_path / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in lenet.state_dict().items()}, str(path))
    convnet = build_backbone("convnet4", num_classes=10, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match=r"does not fit backbone 'convnet4': \d+ tensor\(s\) missing \(first "
                                               r"'units\.") as e:
        load_network_file(convnet, path)
    assert "\n" not in str(e.value) and "of another shape (first 'units.conv1.0.weight'" in str(e.value)
    wider = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match=r"backbone 'lenet': 2 of another shape \(first 'head.weight': "
                                               r"\(10, 500\) in the file, \(5, 500\) here\)"):
        load_network_file(wider, path)
    load_network_file(build_backbone("lenet", num_classes=10, in_channels=1, image_size=28), path)  # it fits its own
    save_file({"extra": torch.zeros(1), **{k: v.contiguous() for k, v in lenet.state_dict().items()}}, str(path))
    with pytest.raises(TransferkitError, match=r"backbone 'lenet': 1 unexpected \(first 'extra'\)\. It was saved"):
        load_network_file(build_backbone("lenet", num_classes=10, in_channels=1, image_size=28), path)


def test_methods_that_pick_a_unit_warn_that_source_val_picks_it_on_the_source():
    import warnings
    from dataclasses import replace

    from transferkit.methods import get_method
    from transferkit.preflight import check_jobs
    from transferkit.rundata import prepare_domains
    cfg = ExperimentConfig(source="digits", target="digits", backbone="lenet", k=2, repeats=1,
                           methods=["flex", "fast_flex", "tap", "finetune"], select_on="source_val")
    data, methods = prepare_domains(cfg), [get_method(m) for m in cfg.methods]
    with pytest.warns(UserWarning, match=r"^flex, fast_flex, tap pick their unit on the validation split, which "
                                         r"select_on: source_val makes the source's images") as seen:
        check_jobs(cfg, data, methods)
    assert "finetune" not in str(seen[0].message)
    with warnings.catch_warnings(record=True) as seen:  # seed 002's protocol: no word of the unit picks
        warnings.simplefilter("always")
        check_jobs(replace(cfg, select_on="target_val"), data, methods)
    assert [str(w.message).split(" on ")[0] for w in seen] == ["flex, fast_flex, tap, finetune train"]  # k=2


def test_a_misspelt_stream_is_refused_before_pre_training(tmp_path, monkeypatch):
    from helpers import toy_domain

    from transferkit.methods.base import Method
    from transferkit.preflight import check_jobs
    from transferkit.rundata import prepare_domains

    class Misspelt(Method):
        name = "misspelt"
        streams = ("source", "unlabelled")
        needs_pretrained = True

        def losses(self, batch):
            raise AssertionError("never trained")

    said = r"unknown stream\(s\) \['unlabelled'\] .*the streams are source, target, unlabeled"
    model = Transfer("coral", backbone="lenet")
    model.method_cls = Misspelt  # unregistered: no other test lists it
    monkeypatch.setattr(Transfer, "_pretrain", lambda *a: pytest.fail("pre-trained first"))
    with pytest.raises(TransferkitError, match=said):
        model.fit(source=toy_domain(16), unlabeled=toy_domain(16, seed=1))
    cfg = ExperimentConfig(name="streams", source="digits", target="digits", k=2, pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match="method 'misspelt' declares " + said):
        check_jobs(cfg, prepare_domains(cfg), [Misspelt])


def test_rows_record_threads_kernels_and_source_network_and_a_resume_from_another_network_is_refused(tmp_path):
    from dataclasses import replace
    cfg = ExperimentConfig(name="e", source="digits", target="digits", k=2, repeats=2,
                           methods=["source_only", "finetune", "target_only"], pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path / "runs"))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    by = {(r["method"], r["seed"]): r for r in rows}
    digest = by["source_only", 0]["source_digest"]
    assert by["finetune", 0]["source_digest"] == by["finetune", 1]["source_digest"] == digest
    assert "source_digest" not in by["target_only", 0]  # it starts from no source network
    assert all(r["threads"] == torch.get_num_threads() for r in rows if r["method"] != "source_only")
    assert "threads" not in by["source_only", 0]  # it trains nothing: the main process evaluates the network
    assert all(r["kernels"].startswith(torch.backends.cpu.get_cpu_capability()) for r in rows)
    (run_dir / "jobs" / "finetune-k=2-s1.json").unlink()  # a job left to run from the source network
    job = run_dir / "jobs" / "finetune-k=2-s0.json"
    row = json.loads(job.read_text())
    job.write_text(json.dumps({**row, "source_digest": "0" * 16}))  # as if pinned again under other threads
    config = (run_dir / "config.yaml").read_text()
    for pinned in (True, False):  # read back, or pre-trained again (source.safetensors deleted)
        if not pinned:
            (run_dir / "source.safetensors").unlink()
        with pytest.raises(TransferkitError, match=r"1 finished job\(s\) \(finetune seed 0\) started from another "
                                                   rf"source network than this resume has \({digest};"):
            run_experiment(replace(cfg, repeats=3), run_dir=run_dir, log=lambda *a: None)
        assert (run_dir / "source.safetensors").exists() == pinned  # a refused network is not pinned
        assert (run_dir / "config.yaml").read_text() == config  # nor the refused resume's config kept
    job.write_text(json.dumps({k: v for k, v in row.items() if k != "source_digest"}))  # before it was recorded
    again = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]


def test_a_cached_network_changed_since_it_was_saved_is_trained_again(tmp_path, monkeypatch):
    import json as json_module
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from transferkit.networks import network_digest
    from transferkit.source import pretrain_source
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cfg = ExperimentConfig(source="digits", target="digits", backbone="lenet", pretrain=TINY_PRE)
    data = prepare_domains(cfg)
    net, info = pretrain_source(cfg, data, log=lambda *a: None)
    record = json_module.loads((tmp_path / "cache" / "pretrained" / f"{Path(info['path']).stem}.json").read_text())
    assert record["digest"] == network_digest(net)
    logs: list = []
    assert pretrain_source(cfg, data, log=logs.append)[1]["cached"] and not logs  # read back, digest checked
    state = load_file(info["path"])
    key = next(iter(state))
    state[key].view(-1)[0] += 1e-3  # one weight changed in place (a flipped byte): same shapes, still loads
    save_file(state, info["path"])
    again, info = pretrain_source(cfg, data, log=logs.append)
    assert not info["cached"] and any("unreadable or changed (" in line and "is not the network its record "
                                      "describes" in line and "); training again" in line for line in logs)
    assert network_digest(again) == network_digest(net)  # trained again: the network the record describes
    record_file = Path(info["path"]).with_suffix(".json")
    record_file.write_text(record_file.read_text()[:20])  # a torn record: its own file is named (a trial)
    logs.clear()
    assert not pretrain_source(cfg, data, log=logs.append)[1]["cached"]
    assert any(f"{Path(info['path']).with_suffix('.*')} unreadable or changed (" in line for line in logs), logs


def test_a_job_resumed_midway_counts_the_seconds_trained_before_the_stop(tmp_path, monkeypatch):
    from transferkit.engine import Engine
    cfg = ExperimentConfig(name="mid", source="digits", target="digits", k=2, repeats=1, methods=["finetune"],
                           select_on="none",
                           pretrain=TINY_PRE, train=TrainConfig(steps=8, batch_size=8, checkpoint_every=2),
                           out_dir=str(tmp_path))
    save, saves = Engine._save, []

    def stop_after_two(self, *args):
        save(self, *args)
        saves.extend([self.ckpt] if "finetune" in str(self.ckpt) else [])  # not the pre-training's
        if len(saves) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(Engine, "_save", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, log=lambda *a: None)
    run_dir = next((tmp_path / "mid").iterdir())
    (last,) = (run_dir / "checkpoints").glob("*/*/last.json")
    meta = json.loads(last.read_text())
    assert meta["state"]["step"] == 4 and meta["state"]["trained_s"] > 0
    assert meta["state"]["threads"] == [torch.get_num_threads()]
    meta["state"]["trained_s"] = 1000.0  # what the job trained before its stop, as its checkpoint records it
    meta["state"]["threads"] = [torch.get_num_threads() + 1]  # and under another thread count
    last.write_text(json.dumps(meta))
    monkeypatch.setattr(Engine, "_save", save)
    run_dir_, rows = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    (row,) = rows
    assert row["wall_s"] >= 1000.0 and row["steps"] == 8
    n = torch.get_num_threads()
    assert row["threads"] == n and row["threads_before_resume"] == [n + 1]
    assert f"Rows made under changing torch threads per process ({n + 1} then {n}: finetune seed 0)" in (
        run_dir / "results.md").read_text()


def _unbalanced_npz(tmp_path):
    """Classes of 20, 20, 4 and 5 images: 2 and 3 of the last two are in the training split."""
    import numpy as np
    counts = (20, 20, 4, 5)
    y = np.repeat(np.arange(4), counts)
    x = np.random.default_rng(0).integers(0, 256, (len(y), 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "unbalanced.npz", x=x, y=y, class_names=np.array(["c0", "c1", "c2", "c3"]))
    return f"npz:{tmp_path / 'unbalanced.npz'}"


def test_k_above_several_classes_names_every_one_at_once_with_the_settings_that_fit(tmp_path):
    spec = _unbalanced_npz(tmp_path)
    cfg = ExperimentConfig(name="k", source=spec, target=spec, methods=["target_only"], k=5, repeats=1,
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    message = (r"k=5 is larger than the smallest class: 2 target class\(es\) have fewer than 5 training images: "
               r"c2 \(2\), c3 \(3\); label at most 5 images per class with `k: null` and `ratio: 5` .* target_classes "
               r"\(the classes to keep: \['c0', 'c1'\]\), or lower k to 2")
    with pytest.raises(TransferkitError, match=message):
        run_experiment(cfg, log=lambda *a: None)
    with pytest.raises(TransferkitError, match=r"\(class c2 has 2 samples\) .*; 2 classes have fewer than 5: c2 \(2\), "
                                               r"c3 \(3\); lower k, or leave those classes out"):
        sample_k_shot(prepare_domains(cfg).target.train, 5, seed=0)


def test_a_run_warns_of_a_ratio_above_a_class_once_and_leaves_no_empty_checkpoints(tmp_path):
    import warnings
    spec = _unbalanced_npz(tmp_path)
    cfg = ExperimentConfig(name="r", source=spec, target=spec, methods=["target_only"], k=None, ratio=5, repeats=2,
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # each warning as often as it is issued
        run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert len(rows) == 2
    assert [str(w.message) for w in caught].count(  # was once up front per seed and once in each job
        f"ratio 5: the smallest class of '{spec}/train' has 2 training images; those classes keep all of theirs "
        f"(the rows' n_labeled says how many were used)") == 1
    assert (run_dir / "models").is_dir() and not (run_dir / "checkpoints").exists()


def test_a_test_set_of_its_own_is_the_test_split_and_the_target_is_cut_into_train_and_val(tmp_path, recwarn):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(1)
    test = tmp_path / "test"
    for c in ("3", "4", "x"):  # x is no target class: left out, with a warning
        (test / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(test / c / f"{i}.png")
    cfg = ExperimentConfig(name="own-test", source="digits", target="mnist", test=f"folder:{test}", k=2, repeats=1,
                           methods=["source_only", "finetune"], pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    data = prepare_domains(cfg)
    assert len(data.target.test) == 8 and data.target.test.class_names == data.target.train.class_names
    assert sorted(data.target.test.labels.tolist()) == [3] * 4 + [4] * 4  # mnist's ids of classes 3 and 4
    assert len(data.target.train) + len(data.target.val) == 5000  # all of mnist: no test part cut from it
    assert any("class(es) ['x'] are not target classes" in str(w.message) for w in recwarn)
    from transferkit.preflight import check_jobs, check_names
    check_jobs(cfg, data, check_names(cfg))
    assert any(f"test 'folder:{test}' has no image of 8 target class(es): '0', '1', '2', '5'" in str(w.message)
               for w in recwarn)
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert all(r["n_test"] == 8 and r["test"] == f"folder:{test}" and r["test_in_target"] == 0 for r in rows)
    assert f"Test images: folder:{test}, 8 images of 2 of the 10 target classes (a test set of its own" in (
        run_dir / "results.md").read_text()
    import yaml
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "test_fraction" not in stored and stored["test"] == f"folder:{test}"  # the key `test` makes unused
    assert run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1] == rows
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**stored, "test_fraction": 0.25}))  # as stored before
    assert run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1] == rows
    again = ExperimentConfig(name="same", source="digits", target="digits", test="digits", k=2, repeats=1,
                             methods=["finetune"], pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    with pytest.warns(TransferkitWarning, match=r"test 'digits': \d+ of its 1797 images are target train images "
                                                r"and \d+ .* are target val images"):
        prepare_domains(again)
    inverted = replace(again, target="digits+inversion")  # the source's own images as the test set
    with pytest.warns(TransferkitWarning, match=r"test 'digits': \d+ of its 1797 images are source train images and "
                                                r"\d+ .* are source val images .*the source network trained or "
                                                r"selected on images the methods are scored on"):
        data = prepare_domains(inverted)
    assert data.test_overlap == {"train": 0, "val": 0} and sum(data.test_in_source.values()) > 1000
    from transferkit.rundata import test_fields
    from transferkit.tables import test_images_line
    fields = test_fields(inverted, data)
    assert fields["test_in_target"] == 0 and fields["test_in_source"] == sum(data.test_in_source.values())
    (line,) = test_images_line([fields])
    assert line.endswith(f"(a test set of its own, not a split of the target); {fields['test_in_source']} of them "
                         f"are also source train or val images.")


def test_source_and_target_of_the_same_images_share_none_across_splits_at_any_fractions():
    from transferkit.rundata import shared_images
    data = prepare_domains(ExperimentConfig(source="digits", target="digits", val_fraction=0.3, test_fraction=0.5))
    assert len(data.target.test) > 0
    assert shared_images(data.source.train, data.target.test) == shared_images(data.source.train, data.target.val) == 0


def test_a_refusal_names_the_options_a_job_ran_with_when_the_run_s_config_no_longer_holds_them(tmp_path):
    """A narrowing resume rewrote config.yaml with a new option; the next resume's refusal named
    nothing (a trial): it names the job's own method_options now."""
    cfg = ExperimentConfig(source="digits", target="digits", backbone="lenet", k=2, repeats=1, select_on="none",
                           methods=["finetune", "linear_probe"], pretrain=TrainConfig(steps=4, eval_every=2,
                                                                                     batch_size=8),
                           train=TrainConfig(steps=2), out_dir=str(tmp_path))
    run, _ = run_experiment(cfg, log=lambda *a: None)
    narrowed = replace(cfg, methods=["finetune"], options={"linear_probe": {"reset_head": False}})
    run_experiment(narrowed, run_dir=run, log=lambda *a: None)  # accepted: linear_probe does not run
    with pytest.raises(TransferkitError, match=r"options of linear_probe: reset_head: True then, False now; --set "
                                               r"options.linear_probe.<option>=<then> restores one"):
        run_experiment(replace(narrowed, methods=["finetune", "linear_probe"]), run_dir=run, log=lambda *a: None)
    with pytest.warns(TransferkitWarning, match=r"name: 'other' not used: a resumed run stays in .*its config keeps "
                                                r"name: 'experiment'"):  # dropped without a word (a trial)
        run_experiment(replace(narrowed, name="other"), run_dir=run, log=lambda *a: None)
    assert "name: experiment" in (run / "config.yaml").read_text()
    moved = tmp_path / "moved"
    shutil.copytree(run.parent, moved / run.parent.name)  # a benchmark moved: its runs' out_dir is the new place
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        run_experiment(replace(narrowed, out_dir=str(moved)), run_dir=moved / run.parent.name / run.name,
                       log=lambda *a: None)


def test_stages_run_on_device_and_a_run_whose_config_yaml_kept_them_at_cpu_resumes(tmp_path):
    import yaml

    from transferkit.rundir import job_digest, job_path
    assert load_config(None, ["device=auto"]).train.device == "auto"  # --print-config and config.yaml say so
    cfg = ExperimentConfig(name="dev", source="digits", target="digits", k=2, repeats=1, methods=["target_only"],
                           device="auto", pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path))
    assert (cfg.pretrain.device, cfg.train.device) == ("auto", "auto")
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["train"]["device"] == stored["pretrain"]["device"] == "auto"
    stored["train"]["device"] = stored["pretrain"]["device"] = "cpu"  # as `device` from --set was stored before
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    job = job_path(run_dir, cfg, "target_only", cfg.seed)
    row = json.loads(job.read_text())
    old = job_digest(cfg, "target_only", stages="cpu")
    assert old != row["config_digest"]
    job.write_text(json.dumps({**row, "config_digest": old}))
    again = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    assert json.loads(job.read_text())["config_digest"] == old  # read back, not trained again


def test_a_source_network_pinned_again_drops_checkpoints_that_grew_from_another(tmp_path):
    from transferkit.source import _drop_checkpoints_of_another_source
    logged = []
    job = tmp_path / "checkpoints" / "finetune-k=2-s0"

    def state(record):
        job.mkdir(parents=True, exist_ok=True)
        (job / "step.safetensors").write_text("x")
        record_file = tmp_path / "source.json"
        record_file.unlink(missing_ok=True)
        if record is not None:
            record_file.write_text(json.dumps(record))

    state({"val_accuracy": 0.9, "digest": "aaaa"})
    _drop_checkpoints_of_another_source(tmp_path, "aaaa", logged.append)  # the same network: kept
    assert job.is_dir() and not logged
    for record in ({"val_accuracy": 0.9, "digest": "bbbb"}, {"val_accuracy": 0.9}, None):  # another, or unknown
        state(record)
        _drop_checkpoints_of_another_source(tmp_path, "aaaa", logged.append)
        assert not (tmp_path / "checkpoints").exists()
    assert len(logged) == 3 and "grew from the source network pinned before (bbbb), not from this one (aaaa)" in \
        logged[0]


def test_a_worker_refuses_data_that_changed_since_the_run_recorded_it(tmp_path):
    from transferkit.experiment import _worker_job
    from transferkit.io import write_json
    from transferkit.rundir import check_worker_data, data_digests
    cfg = ExperimentConfig(source="digits", target="digits+inversion", k=2, repeats=1, pretrain=TINY_PRE, train=TINY,
                           out_dir=str(tmp_path))
    data = prepare_domains(cfg)
    write_json(tmp_path / "data.json", {**data_digests(data), "sizes": {}})
    check_worker_data(tmp_path, data)  # the data the run recorded: no word
    changed = {**data_digests(data), "target.train": "0" * 16}  # as if a target file was rewritten in between
    write_json(tmp_path / "data.json", changed)
    with pytest.raises(TransferkitError, match=r"the data changed while the run ran: this worker process read other "
                                               r"images, labels or class names of target.train than the run recorded"):
        _worker_job(cfg.to_dict(), str(tmp_path), "target_only", 0, None)
    write_json(tmp_path / "data.json", {k: v for k, v in changed.items() if k != "format"})  # format 1: not compared
    check_worker_data(tmp_path, data)
