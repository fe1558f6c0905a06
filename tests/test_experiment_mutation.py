"""Tests from a mutation pass over experiment.py, api.py and cli.py: each kills a plausible bug
that the existing tests let through (a job digest blind to a seed or option, label subsets not
drawn with the job's seed, model selection on the wrong split, head rows matched to the wrong
classes, the scikit-learn-like surface training or scoring with the wrong settings, CLI exit
codes and flags). Invariants, hand-made tiny domains and named errors; no snapshots."""

import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import toy_domain

from transferkit import cli, fitting, preflight, rundata, rundir, source
from transferkit import experiment as ex
from transferkit.backbones import build_backbone
from transferkit.config import ExperimentConfig
from transferkit.domain import Domain
from transferkit.engine import FitResult, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.splits import Split

TINY = TrainConfig(steps=3, eval_every=3, batch_size=8)


def _named(domain: Domain, name: str, classes=None) -> Domain:
    return Domain(name, domain.images, domain.labels, list(classes or domain.class_names))


def _prepared(classes=4, target_names=None) -> ex.Prepared:
    """Six distinct tiny splits (each its own size, so a swapped split shows)."""
    def split(side, seed, names=None):
        return Split(*(_named(toy_domain(n, seed=seed + i, classes=classes), f"{side}.{part}", names)
                       for i, (part, n) in enumerate((("train", 48), ("val", 12), ("test", 20)))))
    return ex.Prepared(source=split("source", 0), target=split("target", 10, target_names), channels=1)


# -- job digest --------------------------------------------------------------------------------

def test_the_job_digest_changes_with_each_result_setting_and_not_with_where_or_which_jobs_run():
    cfg = ExperimentConfig(methods=["dann", "linear_probe"], k=2, train=TINY, pretrain=TINY)
    d = rundir.job_digest(cfg, "dann")
    changed = {"seed": replace(cfg, seed=1), "k": replace(cfg, k=3), "select_on": replace(cfg, select_on="none"),
               "source": replace(cfg, source="digits"), "train.steps": replace(cfg, train=replace(TINY, steps=4)),
               "pretrain.lr": replace(cfg, pretrain=replace(TINY, lr=0.5)),
               "options": replace(cfg, options={"dann": {"weight": 0.5}}),
               "unlabeled": replace(cfg, unlabeled="folder:/data/raw"),
               "train.sampler": replace(cfg, train=replace(TINY, sampler="balanced")),
               "pretrain.sampler": replace(cfg, pretrain=replace(TINY, sampler="balanced")),
               "train.class_weight": replace(cfg, train=replace(TINY, class_weight="balanced"))}
    for key, other in changed.items():
        assert rundir.job_digest(other, "dann") != d, key
    same = [replace(cfg, workers=3), replace(cfg, out_dir="elsewhere"), replace(cfg, name="other"),
            replace(cfg, methods=["dann"], repeats=7), replace(cfg, train=replace(TINY, progress=False)),
            replace(cfg, options={"linear_probe": {"reset_head": False}}),  # another method's options
            replace(cfg, options={"dann": {"weight": 0.1}})]  # an option spelled at its default
    for other in same:
        assert rundir.job_digest(other, "dann") == d
    assert rundir.job_digest(replace(cfg), "dann") == d  # an identical config
    # rows written before the config had `unlabeled` (2026-12-02) keep their digest: these are 89759cd's values
    assert rundir.job_digest(ExperimentConfig(), "finetune") == "07a71cb1f59158c6"
    assert rundir.job_digest(ExperimentConfig(k=None), "dann") == "9007b3fde4a2ba13"
    flex = ExperimentConfig(methods=["flex"])
    assert rundir.job_digest(replace(flex, options={"flex": {"workers": 4}}), "flex") == rundir.job_digest(flex, "flex")


def _one_job_dir(tmp_path, method: str):
    """A config of one ``method`` job, its job list and path, and a result row for it."""
    cfg = ExperimentConfig(methods=[method], k=2, train=TINY, pretrain=TINY)
    job = rundir.job_path(tmp_path, cfg, method, 0)
    job.parent.mkdir()
    row = {"method": method, "source": "mnist", "target": "mnist", "setting": "k=2", "seed": 0, "accuracy": 0.5,
           "wall_s": 1.0}
    return cfg, ex._jobs_of(cfg, [get_method(method)]), job, row


def test_a_row_of_another_method_s_options_or_seed_is_refused_on_resume(tmp_path):
    cfg, jobs, job, row = _one_job_dir(tmp_path, "finetune")
    ex.write_json(job, {**row, "config_digest": rundir.job_digest(cfg, "finetune")})
    assert rundir.finished_rows(cfg, tmp_path, jobs, None)[("finetune", 0)]["accuracy"] == 0.5
    other = replace(cfg, seed=1)
    with pytest.raises(TransferkitError, match="was run with another configuration"):
        rundir.finished_rows(other, tmp_path, jobs, None)  # the (finetune, 0) job of a run seeded 1
    ex.write_json(job, row)  # a row from before digests: checked by the stored config's options
    stored = {"options": {"finetune": {"unknown": 0.5}}}
    with pytest.raises(TransferkitError, match=r"options of finetune: \{'unknown': 0.5\} there, \{\} now"):
        rundir.finished_rows(cfg, tmp_path, jobs, stored)
    with pytest.raises(TransferkitError, match="was run with another configuration"):
        rundir.finished_rows(cfg, tmp_path, jobs, None)  # no stored config: nothing vouches for it
    assert rundir.finished_rows(cfg, tmp_path, jobs, {"options": {}})[("finetune", 0)] == row


def test_a_row_or_checkpoint_of_an_older_revision_of_a_method_is_refused_on_resume(tmp_path, monkeypatch):
    """ADDA's beta1 changed its default (0.9 -> 0.5, revision 1): a row digested without the
    revision, as the older code wrote it, is named as an older form, not mixed in."""
    from transferkit.engine import Engine
    cfg, jobs, job, row = _one_job_dir(tmp_path, "adda")
    assert rundir.job_digest(cfg, "adda") != rundir.job_digest(cfg, "adda", revision=0)
    assert rundir.job_digest(cfg, "finetune") == rundir.job_digest(cfg, "finetune", revision=0)  # revision 0: as before
    assert rundir.job_digest(cfg, "clip") != rundir.job_digest(cfg, "clip", revision=0)  # its prompts' default changed
    ex.write_json(job, {**row, "config_digest": rundir.job_digest(cfg, "adda")})
    assert rundir.finished_rows(cfg, tmp_path, jobs, None)[("adda", 0)]["accuracy"] == 0.5
    ex.write_json(job, {**row, "config_digest": rundir.job_digest(cfg, "adda", revision=0)})  # the older code's row
    with pytest.raises(TransferkitError, match=r"adda-k=2-s0.json was trained by an older form of adda \(Adam's "
                                               r"beta1 0.9 until 2026-12-01, ADDA's 0.5 since\); delete the job"):
        rundir.finished_rows(cfg, tmp_path, jobs, None)
    net = build_backbone("lenet", 4)
    method = get_method("adda")(net)
    new = Engine(TINY, seed=0)._signature(method, {}, None)
    monkeypatch.setattr(type(method), "revision", 0)  # the signature the older code computed
    assert Engine(TINY, seed=0)._signature(method, {}, None) != new
    monkeypatch.undo()
    assert get_method("adda_encoder").revision == get_method("multilayer_adda").revision == 1
    assert get_method("multilayer_adv").revision == get_method("dann").revision == 0


# -- label subsets -----------------------------------------------------------------------------

def _ids(domain):
    return sorted(map(tuple, domain.images.flatten(1)[:, :8].tolist()))


@pytest.mark.parametrize("how", [{"k": 2}, {"k": None, "ratio": 3}, {"k": 2, "groups": True}])
def test_label_subsets_are_drawn_with_the_job_seed_not_the_config_seed(how):
    how = dict(how)
    grouped = how.pop("groups", False)
    data = _prepared()
    if grouped:
        train = data.target.train
        data.target.train = Domain(train.name, train.images, train.labels, train.class_names,
                                   groups=torch.arange(len(train)))
    cfg = ExperimentConfig(methods=["finetune"], **how)
    a0, _ = ex.label_subset(cfg, data.target, 0)
    again, _ = ex.label_subset(replace(cfg, seed=5), data.target, 0)
    a1, _ = ex.label_subset(cfg, data.target, 1)
    assert _ids(a0) == _ids(again)  # the config's own seed does not choose it
    assert _ids(a0) != _ids(a1)
    assert a0.class_counts().tolist() == [how["k"] or 3] * 4
    if how["k"] and not grouped:  # k: the unlabelled part is the rest of the train split
        _, rest = ex.label_subset(cfg, data.target, 0)
        assert len(rest) == len(data.target.train) - len(a0)


# -- model selection ---------------------------------------------------------------------------

def test_selection_follows_select_on_and_never_reaches_the_test_split():
    data = _prepared()
    finetune, dann = get_method("finetune"), get_method("dann")
    picks = {s: ex.selection_domain(ExperimentConfig(select_on=s), data, finetune)
             for s in ("target_val", "source_val", "none")}
    assert picks == {"target_val": data.target.val, "source_val": data.source.val, "none": None}
    assert ex.selection_domain(ExperimentConfig(select_on="target_val"), data, dann) is None  # reads no target label
    assert ex.selection_domain(ExperimentConfig(select_on="source_val"), data, dann) is data.source.val
    assert not fitting.reads_no_target_label(finetune) and fitting.reads_no_target_label(dann)
    assert not fitting.reads_no_target_label(get_method("target_only"))
    assert not fitting.reads_no_target_label(get_method("clip"))  # no target stream, but it predicts no source head
    clip_val = ex.selection_domain(ExperimentConfig(select_on="target_val"), data, get_method("clip"))
    assert clip_val is data.target.val


def test_jobs_run_seeds_from_the_config_seed_and_source_only_once():
    methods = [get_method("source_only"), get_method("finetune")]
    jobs = ex._jobs_of(ExperimentConfig(seed=5, repeats=3), methods)
    assert [(cls.name, seed) for cls, seed in jobs] == [("source_only", 5), ("finetune", 5), ("finetune", 6),
                                                        ("finetune", 7)]


def test_an_empty_target_validation_split_is_refused_only_when_selecting_on_it():
    data = _prepared()
    data.target.val = data.target.val.subset([])
    cfg = ExperimentConfig(methods=["finetune"], k=2, select_on="target_val")
    with pytest.raises(TransferkitError, match="has no val images .*select_on: source_val / none"):
        preflight.check_jobs(cfg, data, [get_method("finetune")])


def _grouped(d: Domain, per_group: int) -> Domain:
    """``d`` with a group (video) id per run of ``per_group`` images of one class."""
    order = torch.argsort(d.labels, stable=True)
    groups = torch.empty(len(d), dtype=torch.long)
    groups[order] = torch.arange(len(d)) // per_group + 1000 * d.labels[order]
    return Domain(d.name, d.images, d.labels, d.class_names, groups)


def test_a_grouped_target_without_test_images_counts_groups_not_images():
    data = _prepared()
    data.target = Split(*(_grouped(p, 6) for p in (data.target.train, data.target.val, data.target.test)))
    data.target.test = data.target.test.subset([])
    with pytest.raises(TransferkitError, match=r"has no test images \(48 train\): a class needs at least 3 groups "
                                               r"\(videos\) to give one to the test split \(the most any class has "
                                               r"is 3\)"):  # 2 + 1 groups per class were left
        preflight.check_jobs(ExperimentConfig(methods=["finetune"], k=2, select_on="none"), data,
                             [get_method("finetune")])


def test_classes_without_test_or_val_images_are_named_once_in_a_warning(recwarn):
    data = _prepared()  # classes '0'..'3', each in every part
    data.target.test = data.target.test.subset(data.target.test.labels < 2)
    data.target.val = data.target.val.subset(data.target.val.labels != 1)
    cfg = ExperimentConfig(methods=["finetune"], k=2, repeats=3, select_on="target_val")
    preflight.check_jobs(cfg, data, [get_method("finetune")])
    said = [str(w.message) for w in recwarn if "have no" in str(w.message)]
    assert len(said) == 2, said  # one per part, not one per job or seed
    assert re.search(r"2 class\(es\) have no test images: '2' \(15 images\), '3' \(15 images\) \(a "
                     r"class needs at least 3 images .*accuracy is over the other 2 classes and their "
                     r"per_class_accuracy is null",
                     said[0]), said[0]
    assert re.search(r"1 class\(es\) have no val images: '1' \(17 images\).*selection .* does not see them", said[1])
    recwarn.clear()
    preflight.check_jobs(replace(cfg, select_on="none"), data, [get_method("finetune")])
    assert [str(w.message) for w in recwarn if "have no" in str(w.message)] == [said[0]]


def test_a_resume_refused_for_changed_group_ids_names_them(tmp_path):
    data = _prepared()
    rundir.check_same_data(tmp_path, data, True)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "finetune-k=2-s0.json").write_text("{}")
    data.target.test = _grouped(data.target.test, 2)  # only the group ids differ
    with pytest.raises(TransferkitError, match="images, labels, class names or group ids of target.test changed"):
        rundir.check_same_data(tmp_path, data, True)


def test_a_larger_k_than_a_class_has_is_refused_before_any_job():
    data = _prepared()
    cfg = ExperimentConfig(methods=["dann"], k=13, select_on="none")  # 12 train images per class
    with pytest.raises(TransferkitError, match="k=13 is larger than the smallest class"):
        preflight.check_jobs(cfg, data, [get_method("dann")])


def _job(tmp_path, cfg, data, method, seed):
    torch.manual_seed(0)
    source = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    return ex.run_job(cfg, data, lambda: _copy(source), tmp_path, get_method(method), seed)


def _copy(net):
    import copy
    return copy.deepcopy(net)


@pytest.mark.parametrize("select_on, method, expected", [
    ("target_val", "finetune", "target.val"), ("source_val", "finetune", "source.val"), ("none", "finetune", None),
    ("target_val", "dann", None)])
def test_a_job_selects_on_the_chosen_split_and_is_scored_on_the_test_split(tmp_path, monkeypatch, select_on, method,
                                                                          expected):
    data = _prepared()
    seen = {}
    real_fit, real_eval = ex.fit_for_target, ex.evaluate_on

    def fit(*args, **domains):
        seen["val"] = domains["val"] and domains["val"].name
        return real_fit(*args, **domains)

    def evaluate(forward, domain):
        seen["scored"] = domain.name
        return real_eval(forward, domain)
    monkeypatch.setattr(ex, "fit_for_target", fit)
    monkeypatch.setattr(ex, "evaluate_on", evaluate)
    cfg = ExperimentConfig(methods=[method], k=2, select_on=select_on, train=TINY)
    row = _job(tmp_path, cfg, data, method, 0)
    assert seen == {"val": expected, "scored": "target.test"}
    assert sum(map(sum, row["confusion"])) == len(data.target.test)
    assert row["n_labeled"] == (8 if method == "finetune" else 0)


@pytest.mark.parametrize("method", ["finetune", "target_only"])
def test_a_job_s_row_depends_on_its_seed_only_not_on_the_config_seed(tmp_path, method):
    data = _prepared()
    cfg = ExperimentConfig(methods=[method], k=3, select_on="none", train=TINY)  # 12 labels, batches of 8
    a = _job(tmp_path / "a", cfg, data, method, 1)
    b = _job(tmp_path / "b", replace(cfg, seed=1), data, method, 1)
    assert a["seed"] == b["seed"] == 1
    assert a["confusion"] == b["confusion"] and a["accuracy"] == b["accuracy"]
    nets = [torch.load(rundir.model_path(tmp_path / d, cfg, method, 1), weights_only=False).net.state_dict()
            for d in ("a", "b")]
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    c = _job(tmp_path / "c", cfg, data, method, 0)
    assert c["seed"] == 0


# -- heads -------------------------------------------------------------------------------------

def test_retarget_head_copies_weight_and_bias_rows_by_name():
    net = build_backbone("convnet4", num_classes=3, in_channels=1, image_size=28)
    with torch.no_grad():
        net.get_classifier().bias.copy_(torch.tensor([10.0, 11.0, 12.0]))
    old = net.get_classifier().weight.detach().clone()
    fitting.retarget_head(net, ["a", "b", "c"], ["c", "a", "z"])
    head = net.get_classifier()
    assert head.bias[:2].tolist() == [12.0, 10.0]
    assert torch.equal(head.weight[0], old[2]) and torch.equal(head.weight[1], old[0])


def test_a_head_of_unknown_classes_is_replaced_only_when_the_counts_differ():
    net = build_backbone("convnet4", num_classes=3, in_channels=1, image_size=28)
    kept = net.get_classifier()
    fitting.retarget_head(net, None, ["x", "y", "z"])
    assert net.get_classifier() is kept
    fitting.retarget_head(net, None, ["x", "y"])
    assert net.num_classes == 2 and net.get_classifier().weight.shape[0] == 2


def test_source_only_reads_the_source_logits_of_the_target_classes_by_name():
    data = SimpleNamespace(source=SimpleNamespace(train=SimpleNamespace(class_names=["a", "b", "c"])),
                           target=SimpleNamespace(train=SimpleNamespace(class_names=["c", "a"])))
    net = build_backbone("convnet4", num_classes=3, in_channels=1, image_size=28).train()
    model = source.source_only_model(net, data)
    x = torch.rand(4, 1, 28, 28)
    assert not model.training and net.training and model.net is not net  # a copy, in eval mode
    assert model.net.num_classes == 2 and torch.allclose(model(x), net.eval()(x)[:, [2, 0]])
    data.target.train.class_names = ["a", "q"]
    with pytest.raises(TransferkitError, match=r"absent from the source: \['q'\]"):
        source.source_only_model(net, data)


def test_a_method_predicting_with_the_source_head_refuses_a_class_the_source_lacks():
    dann = get_method("dann")
    assert fitting.source_head_rows(dann, ["a", "b", "c"], 3, ["c", "a"]) == [2, 0]
    with pytest.raises(TransferkitError, match=r"cannot predict target classes absent from the source: \['d'\]"):
        fitting.source_head_rows(dann, ["a", "b", "c"], 3, ["a", "d"])


def test_a_method_keeping_the_head_fixed_refuses_new_target_classes():
    net = build_backbone("convnet4", num_classes=3, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match=r"keeps the head fixed, but the target classes \['d'\]"):
        fitting.build_method(get_method("ft_unit:conv1"), net, {}, ["a", "b", "c"], ["a", "d"])


def test_early_stopping_scores_a_source_head_method_on_the_target_rows(monkeypatch):
    net = build_backbone("convnet4", num_classes=3, in_channels=1, image_size=28)
    method = get_method("dann")(net)
    val = _named(toy_domain(8, classes=2), "val", ["c", "a"])
    seen = []

    def fit_transfer(make_engine, **domains):
        seen.append(method.eval_rows)
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
    monkeypatch.setattr(method, "fit_transfer", fit_transfer)
    ex.fit_for_target(method, None, ["a", "b", "c"], ["c", "a"], source=None, target=None, val=val)
    assert seen == [[2, 0]] and method.eval_rows is None
    assert net.num_classes == 2


def test_a_clip_style_method_scores_the_target_classes_by_default():
    clip = get_method("clip")
    assert fitting.zero_shot_options(clip, {}, ["a", "b"], ["b", "c"]) == {"class_names": ["b", "c"]}
    assert fitting.zero_shot_options(clip, {"class_names": ["z"]}, ["a"], None) == {"class_names": ["z"]}  # no target


# -- the scikit-learn-like API -----------------------------------------------------------------

def _recording_engine(monkeypatch):
    import transferkit.api as api
    made = []

    class Recording(api.Engine):
        def __init__(self, config, seed=0, **kw):
            made.append((config, seed))
            super().__init__(config, seed=seed, **kw)
    monkeypatch.setattr(api, "Engine", Recording)
    return made


def test_fit_pretrains_with_its_pretrain_config_then_transfers_with_train_both_seeded(monkeypatch):
    from transferkit.api import Transfer
    made = _recording_engine(monkeypatch)
    src, tgt = toy_domain(32, seed=0), toy_domain(16, seed=1)
    pre, train = TrainConfig(steps=2, eval_every=2, batch_size=8), TrainConfig(steps=3, eval_every=3, batch_size=8)
    Transfer("finetune", pretrain=pre, train=train, seed=7).fit(target=tgt, source=src)
    assert made == [(pre, 7), (train, 7)]
    made.clear()
    Transfer("finetune", pretrain=pre, train=train, seed=7).fit(target=tgt, source=src,
                                                                 net=build_backbone("convnet4", num_classes=4))
    assert made == [(train, 7)]  # a given network is not pre-trained again


def test_fit_selects_on_the_given_validation_domain(monkeypatch):
    import transferkit.api as api
    seen = {}
    real = api.fit_for_target

    def fit(*args, **domains):
        seen.update(domains)
        return real(*args, **domains)
    monkeypatch.setattr(api, "fit_for_target", fit)
    tgt, val = toy_domain(16, seed=1, name="t"), toy_domain(8, seed=2, name="v")
    api.Transfer("target_only", train=TINY).fit(target=tgt, val=val)
    assert seen["val"] is val and seen["target"] is tgt


def test_fit_is_seeded_by_its_seed_whatever_the_global_random_state():
    from transferkit.api import Transfer
    tgt, x = toy_domain(16, seed=1), toy_domain(8, seed=3).images
    out = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        out.append(Transfer("target_only", train=TINY, seed=4).fit(target=tgt).predict_logits(x))
    assert torch.equal(out[0], out[1])


def test_score_is_the_fraction_of_correct_predictions_and_train_takes_a_mapping():
    from transferkit.api import Transfer
    tgt = toy_domain(16, seed=1)
    model = Transfer("target_only", train={"steps": 2, "eval_every": 2, "batch_size": 8})
    assert (model.train_cfg.steps, model.train_cfg.batch_size) == (2, 8)
    model.fit(target=tgt)
    test = toy_domain(10, seed=5)  # 10 images, 4 classes
    hits = (model.predict_logits(test.images).argmax(1) == test.labels).float()
    assert model.score(test) == pytest.approx(float(hits.mean()))
    assert model.predict(test.images).tolist() == model.predict_logits(test.images).argmax(1).tolist()


# -- the command line --------------------------------------------------------------------------

def test_an_interrupted_command_exits_130_and_a_bad_worker_count_2(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_domains", interrupted)
    assert cli.main(["domains"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert cli.main(["run", "--workers", "0"]) == 2
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["run", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1, got 0" in capsys.readouterr().err


def test_sigterm_stops_a_command_as_ctrl_c_does_and_the_handler_is_restored(monkeypatch, capsys):
    import os
    import signal
    import time
    before = signal.getsignal(signal.SIGTERM)

    def killed(args):  # kill, timeout, docker and Slurm send SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the command")
    monkeypatch.setattr(cli, "_domains", killed)
    assert cli.main(["domains"]) == 143
    assert capsys.readouterr().err == "transferkit: terminated (SIGTERM)\n"  # domains keeps no run
    assert signal.getsignal(signal.SIGTERM) == before


def test_sighup_stops_a_command_as_sigterm_does_unless_nohup_ignores_it(monkeypatch, capsys):
    import os
    import signal
    import time
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a terminal's default: the process dies, no line

    def hung_up(args):  # a closed terminal or SSH session
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)
        pytest.fail("SIGHUP did not stop the command")
    try:
        monkeypatch.setattr(cli, "_domains", hung_up)
        assert cli.main(["domains"]) == 129
        assert capsys.readouterr().err == "transferkit: terminated (SIGHUP)\n"  # domains keeps no run
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup: the signal stays ignored, the command goes on
        monkeypatch.setattr(cli, "_domains", lambda args: os.kill(os.getpid(), signal.SIGHUP))
        assert cli.main(["domains"]) == 0 and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_sigterm_during_nproc_passes_on_to_torchrun_and_waits_for_its_ranks(monkeypatch):
    import subprocess
    calls = []

    class FakeTorchrun:
        def __init__(self, cmd, env=None):
            calls.append(("start", cmd[2]))

        def wait(self, timeout=None):
            calls.append(("wait", timeout))
            if len(calls) == 2:
                raise cli.Terminated()  # SIGTERM arrives while the ranks train

        def terminate(self):
            calls.append(("terminate", None))

        def kill(self):
            calls.append(("kill", None))
    monkeypatch.setattr(subprocess, "Popen", FakeTorchrun)
    with pytest.raises(cli.Terminated):
        cli._relaunch_with_torchrun(2, ["run", "x.yaml", "--nproc", "2"])
    assert calls == [("start", cli._TORCHRUN), ("wait", None), ("terminate", None), ("wait", 60)]


def test_a_rank_s_error_under_nproc_is_printed_once_by_the_launcher_with_its_status(monkeypatch, capsys, tmp_path):
    """Each rank printed the same error, torchrun added its traceback, and the status was
    torchrun's 1: now the ranks leave their errors, the launcher prints each once, status 2."""
    import subprocess
    from pathlib import Path

    from transferkit.distributed import EXIT_DIR_ENV

    class FailingTorchrun:
        def __init__(self, cmd, env=None):
            for rank, text in ((0, "bad data"), (1, "bad data"), (2, "other")):
                (Path(env[EXIT_DIR_ENV]) / f"rank-{rank}.json").write_text(json.dumps({"code": 2, "error": text}))

        def wait(self, timeout=None):
            return 1
    monkeypatch.setattr(subprocess, "Popen", FailingTorchrun)
    assert cli._relaunch_with_torchrun(3, ["run", "--nproc", "3"]) == 2
    assert capsys.readouterr().err == "transferkit: error: bad data\ntransferkit: error: other\n"
    monkeypatch.setenv(EXIT_DIR_ENV, str(tmp_path))  # a rank: its error is left for the launcher, not printed
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["run", "--set", "methods=[nosuch]"]) == 2 and capsys.readouterr().err == ""
    left = json.loads((tmp_path / "rank-1.json").read_text())
    assert left["code"] == 2 and "unknown method 'nosuch'" in left["error"]


def test_a_user_error_under_nproc_exits_2_with_one_line_and_no_torchrun_traceback(tmp_path):
    import subprocess
    bad = tmp_path / "bad"
    for name in ("a", "b"):
        (bad / name).mkdir(parents=True)
        (bad / name / "1.png").write_text("not an image")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "yaml.py").write_text("raise ImportError('yaml.py of the working directory')")
    command = Path(sys.executable).with_name("transferkit")  # its processes import what it imports, as it does
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run([str(command), "run", "--nproc", "2", "--set", f"target=folder:{bad}", "--set",
                           f"out_dir={tmp_path / 'runs'}"], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("transferkit: error: 2 of the 2 image files") == 1, done.stderr
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr, done.stderr
    left = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith(("transferkit-", "torchelastic_"))]
    assert not left  # the ranks' errors and torchrun's logs went with the launcher's temporary folder


_ONE_RANK_FAILS = """
import os
from transferkit.methods.base import register
from transferkit.methods.finetune import Finetune


@register
class Boom(Finetune):
    name = "boom"

    def fit_transfer(self, *args, **kwargs):
        if os.environ.get("RANK") == "1":
            raise ValueError("boom on rank 1")
        return super().fit_transfer(*args, **kwargs)
"""


def test_a_job_that_fails_on_one_rank_under_nproc_is_named_once_with_its_traceback_and_resume(tmp_path):
    """Seen 2026-12-05: both ranks' tracebacks (the other rank's a gloo "Connection closed by
    peer"), torchrun's report, exit 1, no failed/ file and no resume command."""
    import subprocess
    (tmp_path / "rank_plugin.py").write_text(_ONE_RANK_FAILS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERKIT_PLUGINS": "rank_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "transferkit.cli", "run", "--nproc", "2", "--set", "methods=[boom]",
                           "--set", "repeats=1", "--set", "pretrain.steps=5", "--set", "pretrain.eval_every=5",
                           "--set", "train.steps=4", "--set", "train.eval_every=2",
                           "--set", f"out_dir={tmp_path / 'runs'}"], capture_output=True, text=True, env=env,
                          timeout=300)
    err = done.stderr
    assert done.returncode == 2, err
    assert err.count("transferkit: error: 1 of 1 job(s) failed: boom seed 0 (ValueError: boom on rank 1)") == 1, err
    assert "--nproc 2 --resume" in err and "Traceback" not in err and "Connection closed" not in err, err
    assert "terminated" not in err, err  # rank 0, stopped by torchrun, does not offer a resume of its own
    failed = list((tmp_path / "runs").glob("*/*/failed/boom-*.txt"))
    assert len(failed) == 1 and "ValueError: boom on rank 1" in failed[0].read_text()


def test_a_rank_stopped_by_another_rank_s_failure_stays_quiet(monkeypatch, capsys, tmp_path):
    import json

    from transferkit.distributed import EXIT_DIR_ENV, peer_failed
    from transferkit.jobs import guarded
    monkeypatch.setenv(EXIT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "0")
    (tmp_path / "rank-0.json").write_text(json.dumps({"code": 2, "error": "mine"}))
    assert not peer_failed()  # its own error is no peer's

    def closed():
        raise RuntimeError("Connection closed by peer")
    assert guarded(closed).error == "RuntimeError: Connection closed by peer"  # a job failure of its own
    (tmp_path / "rank-1.json").write_text(json.dumps({"code": 2, "error": "theirs"}))
    assert peer_failed()
    with pytest.raises(RuntimeError):  # not a failure of this rank's job: rank 1 names its own
        guarded(closed)
    monkeypatch.setattr(cli, "_domains", lambda args: closed())
    assert cli.main(["domains"]) == 1 and capsys.readouterr().err == ""  # no traceback, no second error


def test_the_nproc_launcher_passes_a_sigint_of_its_own_on_and_torchrun_s_signal_is_an_exit_status(monkeypatch):
    import signal
    import subprocess

    from torch.distributed.elastic.multiprocessing.api import SignalException
    calls = []

    class Torchrun:  # a SIGINT sent to the launcher alone (kill -INT, a supervisor): torchrun did not get it
        def wait(self, timeout=None):
            calls.append(("wait", timeout))
            if timeout is None:
                raise KeyboardInterrupt
            if timeout == 5:
                raise subprocess.TimeoutExpired("torchrun", 5)
            return 130

        def poll(self):
            return None

        def send_signal(self, sig):
            calls.append(("signal", sig))
    with pytest.raises(KeyboardInterrupt):
        cli._wait_for_torchrun(Torchrun())
    assert calls == [("wait", None), ("wait", 5), ("signal", signal.SIGINT), ("wait", 60)]

    def stopped(args):
        raise SignalException("Process 1 got signal: 15", signal.SIGTERM)
    import torch.distributed.run as torchrun
    monkeypatch.setattr(torchrun, "run", stopped)
    assert cli._torchrun(["--standalone", "-m", "transferkit.cli", "domains"]) == 143  # no traceback of torchrun's


def test_nproc_s_processes_take_the_working_directory_off_their_path_unless_the_launcher_has_it(tmp_path,
                                                                                                   monkeypatch):
    import subprocess
    (tmp_path / "yaml.py").write_text("raise ImportError('yaml.py of the working directory')")
    monkeypatch.chdir(tmp_path)
    path = [p for p in sys.path if os.path.abspath(p) != str(tmp_path)]
    monkeypatch.setattr(sys, "path", path)  # the transferkit command: its own folder first
    done = subprocess.run(cli._python_c("import yaml; print(yaml.__file__)", "-u"), capture_output=True, text=True)
    assert done.returncode == 0 and str(tmp_path) not in done.stdout, done.stderr
    monkeypatch.setattr(sys, "path", ["", *path])  # python -m transferkit.cli: the working directory first
    done = subprocess.run(cli._python_c("import yaml"), capture_output=True, text=True)
    assert "yaml.py of the working directory" in done.stderr


def test_ranks_that_end_with_a_killed_launcher_get_one_line_not_torchrun_s_report(monkeypatch, tmp_path, capsys):
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from transferkit.distributed import EXIT_DIR_ENV, LAUNCHER_ENV

    def failed(args):
        raise ChildFailedError("transferkit.cli", {0: ProcessFailure(0, 123, 1, "<N/A>")})
    monkeypatch.setattr(torchrun, "run", failed)
    monkeypatch.setenv(EXIT_DIR_ENV, str(tmp_path))  # no rank left its error
    monkeypatch.setenv(LAUNCHER_ENV, str(os.getppid()))  # the launcher lives: a crash, torchrun's report
    assert cli._torchrun(["--standalone", "-m", "transferkit.cli", "domains"]) == 1
    assert "a process of --nproc failed" in capsys.readouterr().err
    monkeypatch.setenv(LAUNCHER_ENV, "999999999")  # not this process's parent: the launcher was killed
    assert cli._torchrun(["--standalone", "-m", "transferkit.cli", "domains"]) == 1
    err = capsys.readouterr().err
    assert err == ("transferkit: error: the transferkit --nproc process (pid 999999999) was killed, and its processes "
                   "stopped with it; the run directory keeps the finished jobs (`--resume RUN_DIR` goes on)\n")


def test_workers_and_device_flags_win_over_the_config_s_keys():
    args = cli.build_parser().parse_args(["run", "--set", "workers=1", "--set", "device=cpu", "--workers", "3"])
    assert cli._run_config(args).workers == 3


def test_nproc_relaunches_the_same_command_without_the_nproc_flag(monkeypatch):
    import subprocess
    calls = []

    class Torchrun:
        def __init__(self, cmd, env=None):
            calls.append(cmd)
            assert env[LAUNCHER_ENV] == str(os.getpid())  # the ranks end with this process

        def wait(self, timeout=None):
            return 0
    from transferkit.distributed import LAUNCHER_ENV
    monkeypatch.setattr(subprocess, "Popen", Torchrun)
    assert cli._relaunch_with_torchrun(2, ["run", "--nproc", "2", "--set", "k=1", "--nproc=2"]) == 0
    assert calls[0][-3:] == ["run", "--set", "k=1"] and "--nproc_per_node=2" in calls[0]


def test_an_unknown_method_exits_2_naming_it(tmp_path, capsys):
    assert cli.main(["run", "--set", "methods=[finetune, nosuchmethod]", "--set", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "nosuchmethod" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_the_pretrained_cache_key_holds_the_seed_and_training_but_not_the_progress_bar(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    data = _prepared()
    cfg = ExperimentConfig(source="toy", pretrain=TrainConfig(steps=2, eval_every=2, batch_size=8))
    quiet = {"log": lambda *a: None}
    torch.manual_seed(1)
    first, info = source.pretrain_source(cfg, data, **quiet)
    assert not info["cached"]
    torch.manual_seed(2)  # the initial weights come from the config's seed
    again, info = source.pretrain_source(replace(cfg, pretrain=replace(cfg.pretrain, progress=False)), data, **quiet)
    assert info["cached"]
    assert source.pretrain_source(replace(cfg, seed=1), data, **quiet)[1]["cached"] is False
    assert source.pretrain_source(replace(cfg, pretrain=replace(cfg.pretrain, lr=0.5)), data,
                                  **quiet)[1]["cached"] is False
    balanced = replace(cfg, pretrain=replace(cfg.pretrain, sampler="balanced"))
    assert source.pretrain_source(balanced, data, **quiet)[1]["cached"] is False
    assert source.pretrain_source(replace(cfg, pretrain=replace(cfg.pretrain, sampler="shuffle")), data,
                                  **quiet)[1]["cached"]  # the default, named: the key of before the sampler existed
    with monkeypatch.context() as m:  # the same config run by other code: trained again
        m.setattr(source, "code_digest", lambda: "0" * 16)
        assert source.pretrain_source(cfg, data, **quiet)[1]["cached"] is False
    assert source.pretrain_source(cfg, data, **quiet)[1]["cached"]
    for path in tmp_path.rglob("*.safetensors"):
        path.unlink()
    torch.manual_seed(3)
    retrained, info = source.pretrain_source(cfg, data, **quiet)
    assert not info["cached"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), retrained.state_dict().values()))


# -- second pass: survivors of the first ---------------------------------------------------------

def test_a_run_preloads_torch_s_lazy_imports_after_its_checks_and_before_the_source_network(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ex, "prepare_domains", lambda cfg, **kw: _prepared())
    monkeypatch.setattr(ex, "preload_lazy_imports", lambda: calls.append("preload"))
    with pytest.raises(TransferkitError, match="k=40"):  # refused by the checks: no seconds spent on imports
        ex.run_experiment(ExperimentConfig(methods=["finetune"], k=40, train=TINY, pretrain=TINY),
                          run_dir=tmp_path / "refused", log=lambda *a: None)
    assert calls == []

    def source_network(*args, **kwargs):
        calls.append("source")
        raise TransferkitError("stop here")
    monkeypatch.setattr(ex, "run_source_network", source_network)
    with pytest.raises(TransferkitError, match="stop here"):  # before the pre-training's (timed) optimizer
        ex.run_experiment(ExperimentConfig(methods=["finetune"], k=2, train=TINY, pretrain=TINY, select_on="none"),
                          run_dir=tmp_path / "run", log=lambda *a: None)
    assert calls == ["preload", "source"]


def test_source_only_is_the_source_network_s_accuracy_on_the_target_test_split(tmp_path, monkeypatch):
    data = _prepared(target_names=["2", "0", "3", "1"])  # the target's classes in another order
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    monkeypatch.setattr(ex, "prepare_domains", lambda cfg, **kw: data)
    monkeypatch.setattr(ex, "preload_lazy_imports", lambda: None)  # seconds of imports no job here needs
    monkeypatch.setattr(ex, "run_source_network", lambda cfg, data, run_dir, log, check=None: (
        net, {"wall_s": 0.0, "cached": True, "path": None}))
    _, (row,) = ex.run_experiment(ExperimentConfig(methods=["source_only"], k=2, train=TINY, pretrain=TINY),
                                  run_dir=tmp_path / "run", log=lambda *a: None)
    test = data.target.test
    net.eval()
    with torch.no_grad():  # by hand: the source logits of each target class, found by name
        picked = net(test.images)[:, torch.tensor([2, 0, 3, 1])].argmax(1)
    assert row["accuracy"] == pytest.approx(float((picked == test.labels).float().mean()))
    assert sum(map(sum, row["confusion"])) == len(test)  # 20 test images, not the 12 of val


def _loaded(monkeypatch, n=400):
    """prepare_domains on a hand-made 4-class domain instead of a named one."""
    monkeypatch.setattr(rundata, "load_domain", lambda spec, **kw: toy_domain(n, seed=0 if spec == "src" else 1,
                                                                             name=spec))
    monkeypatch.setattr(rundata, "has_colour_shift", lambda spec: False)


def test_val_per_class_cuts_the_target_validation_split_and_leaves_the_test_split_whole(monkeypatch):
    _loaded(monkeypatch)
    cfg = ExperimentConfig(source="src", target="tgt", image_size=28)
    whole = ex.prepare_domains(cfg)
    cut = ex.prepare_domains(replace(cfg, val_per_class=2))
    assert cut.target.val.class_counts().tolist() == [2] * 4
    assert len(whole.target.val) > 8
    assert torch.equal(cut.target.test.images, whole.target.test.images)
    assert torch.equal(cut.target.test.labels, whole.target.test.labels)
    assert torch.equal(cut.source.val.labels, whole.source.val.labels)  # only the target's val


def test_source_and_target_are_each_narrowed_to_their_own_classes(monkeypatch):
    _loaded(monkeypatch)
    data = ex.prepare_domains(ExperimentConfig(source="src", target="tgt", image_size=28,
                                               source_classes="0,1", target_classes="2,3"))
    for part in ("train", "val", "test"):
        assert getattr(data.source, part).class_names == ["0", "1"]
        assert getattr(data.target, part).class_names == ["2", "3"]


def test_predict_proba_is_a_distribution_over_the_classes_for_each_image():
    from transferkit.api import Transfer
    model = Transfer("target_only", train=TINY).fit(target=toy_domain(16, seed=1))
    x = toy_domain(6, seed=3).images  # 6 images, 4 classes: a softmax over images shows
    proba = model.predict_proba(x)
    assert proba.shape == (6, 4)
    assert torch.allclose(proba.sum(1), torch.ones(6))
    assert proba.argmax(1).tolist() == model.predict(x).tolist()


def test_a_given_network_s_head_is_taken_as_the_source_s_and_mapped_to_the_target_by_name():
    from transferkit.api import Transfer
    src = toy_domain(16, seed=0, name="src")  # classes 0 1 2 3
    t = toy_domain(16, seed=1)
    tgt = Domain("tgt", t.images, t.labels, ["3", "0", "1", "2"])  # as many classes, in another order
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    old = net.get_classifier().weight.detach().clone()
    train = TrainConfig(steps=1, eval_every=1, batch_size=8, lr=1e-12)  # the head barely moves
    model = Transfer("finetune", train=train).fit(target=tgt, source=src, net=net)
    new = model.net_.get_classifier().weight.detach()
    assert torch.allclose(new, old[[3, 0, 1, 2]], atol=1e-6)


def test_a_file_system_error_exits_2_and_a_closed_pipe_141(tmp_path, monkeypatch, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["run", "--set", f"out_dir={blocker}", "--set", "methods=[finetune]"]) == 2
    err = capfd.readouterr().err
    assert "transferkit: error: out_dir" in err and "is a file, not a directory" in err and "Traceback" not in err

    def closed(args):
        print("a table")
        raise BrokenPipeError
    monkeypatch.setattr(cli, "_summary", closed)
    fd = sys.stdout.fileno()
    where = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None
    assert cli.main(["summary", str(tmp_path)]) == 141
    assert capfd.readouterr().err == ""
    # in-process, main leaves the descriptors alone (only the console script's entry points stdout at /dev/null)
    assert where is None or os.readlink(f"/proc/self/fd/{fd}") == where


def test_resume_with_a_config_refuses_an_existing_folder_that_is_not_a_run_directory(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("methods: [finetune]\nk: 1\n")
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("someone's files")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for there in (stray, a_file):
        args = cli.build_parser().parse_args(["run", str(config), "--resume", str(there)])
        with pytest.raises(TransferkitError, match=f"--resume {there}: not a run directory"):
            cli._run_config(args)
    for there in (tmp_path / "new", tmp_path / "empty"):  # a new or empty folder starts a run there
        if there.name == "empty":
            there.mkdir()
        assert cli._run_config(cli.build_parser().parse_args(["run", str(config), "--resume", str(there)])).k == 1


def test_report_of_a_results_json_reports_its_run_directory(tmp_path, monkeypatch, capsys):
    import transferkit.report as report
    run = tmp_path / "run1"
    run.mkdir()
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    (run / "results.json").write_text(json.dumps({"rows": [row]}))
    seen = []
    monkeypatch.setattr(report, "write_report", lambda run_dir, out=None: seen.append(str(run_dir)) or ("h", "m"))
    assert cli.main(["report", str(run / "results.json")]) == 0
    assert seen == [str(run)]


def test_a_bad_worker_count_or_method_is_refused_before_any_data_is_read(tmp_path, monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the run read its data before refusing")
    monkeypatch.setattr(ex, "prepare_domains", reached)  # a mutant that lets either through fails at once
    with pytest.raises(TransferkitError, match="--workers must be >= 1, got 0"):
        cli._runtime_flag_checks(SimpleNamespace(workers=0, device=None))
    with pytest.raises(TransferkitError, match="nosuchmethod"):
        ex.run_experiment(ExperimentConfig(methods=["finetune", "nosuchmethod"], out_dir=str(tmp_path)),
                          log=lambda *a: None)
    assert not any(tmp_path.iterdir())


def test_a_lost_config_yaml_is_restored_from_results_json_as_the_error_says(tmp_path, monkeypatch, capsys):
    import json

    import yaml
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cfg = ExperimentConfig(name="lost", source="digits", target="digits", k=2, repeats=1, backbone="lenet",
                           methods=["target_only"], pretrain=TrainConfig(steps=2, batch_size=8), train=TINY,
                           out_dir=str(tmp_path))
    run_dir, rows = ex.run_experiment(cfg, log=lambda *a: None)
    (run_dir / "config.yaml").unlink()
    assert cli.main(["run", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "no config.yaml; its results.json keeps a copy of the config under \"config\"" in err
    (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads((run_dir / "results.json").read_text())["config"]))
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "results.json").read_text())["rows"][0]["accuracy"] == rows[0]["accuracy"]
    (run_dir / "config.yaml").unlink()  # lost in an interrupted run, which has no results.json yet
    (run_dir / "results.json").unlink()
    assert cli.main(["run", "--resume", str(run_dir)]) == 2
    assert "or to resume one whose config.yaml was lost, give its config" in capsys.readouterr().err
    given = tmp_path / "given.yaml"
    given.write_text(ex.dump_config(cfg))
    assert cli.main(["run", str(given), "--resume", str(run_dir)]) == 0  # its finished job checked against it
    assert json.loads((run_dir / "results.json").read_text())["rows"][0]["accuracy"] == rows[0]["accuracy"]
    (run_dir / "config.yaml").unlink()
    assert cli.main(["run", str(given), "--set", "train.lr=0.5", "--resume", str(run_dir)]) == 2
    assert "target_only-k=2-s0.json was run with another configuration" in capsys.readouterr().err
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "results.json").write_text(json.dumps({"config": {"benchmark": "flex", "quick": True, "plan": {}}}))
    assert cli.main(["run", "--resume", str(bench)]) == 2
    assert f"it is a directory of benchmark 'flex', which `transferkit bench flex --resume {bench}`" in \
        capsys.readouterr().err


def test_a_matrix_file_option_enters_the_job_digest_by_its_contents(tmp_path, monkeypatch):
    import numpy as np
    monkeypatch.chdir(tmp_path)
    np.save("attrs.npy", np.eye(10, 4))
    cfg = ExperimentConfig(methods=["attribute_zsl"], options={"attribute_zsl": {"attributes": "attrs.npy"}})
    before, other = rundir.job_digest(cfg, "attribute_zsl"), rundir.job_digest(cfg, "finetune")
    np.save("attrs.npy", np.eye(10, 4)[::-1].copy())  # the same name, other rows: a resume must not reuse rows
    assert rundir.job_digest(cfg, "attribute_zsl") != before
    assert rundir.job_digest(cfg, "finetune") == other  # a method that reads no such file keeps its rows


def _on_prepared_data(monkeypatch) -> None:
    """Runs read :func:`_prepared`'s domains and a seeded convnet4 as their source network."""
    data = _prepared()
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    monkeypatch.setattr(ex, "prepare_domains", lambda cfg, **kw: data)
    monkeypatch.setattr(ex, "preload_lazy_imports", lambda: None)
    monkeypatch.setattr(ex, "run_source_network", lambda cfg, data, run_dir, log, check=None: (
        net, {"wall_s": 0.0, "cached": True, "path": None}))


def test_balanced_rows_record_their_sampler_and_the_run_says_where_it_does_not_reach(tmp_path, monkeypatch):
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    _on_prepared_data(monkeypatch)
    cfg = ExperimentConfig(methods=["source_only", "target_only", "dann"], k=2, repeats=1, select_on="none",
                           train=replace(TINY, sampler="balanced"), pretrain=TINY)
    with pytest.warns(Warning) as caught:
        _, rows = ex.run_experiment(cfg, run_dir=tmp_path / "run", log=lambda *a: None)
    said = [str(w.message) for w in caught]
    assert any("dann reads no target label: only its labelled source images are balanced (their unlabelled target "
               "images are not balanced" in m for m in said), said
    assert any("source_only's row is the source network, which pretrain trains (pretrain.sampler: shuffle), not "
               "train.sampler: balanced" in m for m in said)
    assert {r["method"]: r.get("sampler") for r in rows} == {"source_only": None, "target_only": "balanced",
                                                             "dann": "balanced"}
    assert ("Trained with sampler balanced (each class equally often in the labelled training batches): "
            "target_only, dann.") in markdown_table(summarize(rows), rows)
    assert "Trained with sampler" not in markdown_table(summarize(rows[:1]), rows[:1])
    weighted = replace(cfg, methods=["tap", "target_only"], train=replace(TINY, class_weight="balanced"), name="w")
    _, rows = ex.run_experiment(weighted, run_dir=tmp_path / "w", log=lambda *a: None)
    assert {r["method"]: r.get("class_weight") for r in rows} == {"tap": None, "target_only": "balanced"}  # tap
    # fits scikit-learn classifiers: no batches, no cross-entropy of the engine


def test_rows_count_the_validation_labels_they_selected_on_and_the_table_names_them(tmp_path, monkeypatch):
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    _on_prepared_data(monkeypatch)
    cfg = ExperimentConfig(methods=["source_only", "target_only", "dann"], k=1, repeats=1, train=TINY, pretrain=TINY)
    with pytest.warns(Warning):
        _, rows = ex.run_experiment(cfg, run_dir=tmp_path / "run", log=lambda *a: None)
    assert {r["method"]: r.get("n_val_labeled") for r in rows} == {"source_only": None, "target_only": 12,
                                                                   "dann": None}  # dann selects on none
    line = ("Selected on target validation labels: target_only (k=1) chose their weights (early stopping, select_on: "
            "target_val) on 12 labelled target validation images (n_val_labeled), more than the labels they trained "
            "on (n_labeled), which the setting counts; val_per_class caps them, select_on: none uses none.")
    assert line in markdown_table(summarize(rows), rows)
    _, rows = ex.run_experiment(replace(cfg, select_on="none", name="none"), run_dir=tmp_path / "none",
                                log=lambda *a: None)
    assert "Selected on" not in markdown_table(summarize(rows), rows)


def test_rows_that_selected_on_the_source_validation_split_say_so(tmp_path, monkeypatch):
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    _on_prepared_data(monkeypatch)
    cfg = ExperimentConfig(methods=["finetune"], k=1, repeats=1, select_on="source_val", train=TINY, pretrain=TINY)
    _, rows = ex.run_experiment(cfg, run_dir=tmp_path / "run", log=lambda *a: None)
    assert rows[0]["select_on"] == "source_val" and "n_val_labeled" not in rows[0]
    assert ("Selected on the source's validation split (select_on: source_val): finetune; their val_accuracy (and a "
            "flex candidate's) is the source's.") in markdown_table(summarize(rows), rows)
    _, rows = ex.run_experiment(replace(cfg, select_on="target_val", name="t"), run_dir=tmp_path / "t",
                                log=lambda *a: None)
    assert "select_on" not in rows[0] and "source's validation" not in markdown_table(summarize(rows), rows)


def test_the_code_digest_covers_the_training_modules_and_not_the_presentation(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import transferkit
    package = Path(transferkit.__file__).resolve().parent
    copy = tmp_path / "transferkit"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))

    def digest_of_copy():
        monkeypatch.setattr(source, "__file__", str(copy / "experiment.py"))
        source.code_digest.cache_clear()
        return source.code_digest()
    try:
        before = digest_of_copy()
        (copy / "tables.py").write_text((copy / "tables.py").read_text() + "\n# a table's wording\n")
        (copy / "bench" / "uda.py").write_text((copy / "bench" / "uda.py").read_text() + "\n")
        assert digest_of_copy() == before
        (copy / "losses.py").write_text((copy / "losses.py").read_text() + "\n")
        assert digest_of_copy() != before
    finally:
        monkeypatch.undo()
        source.code_digest.cache_clear()
