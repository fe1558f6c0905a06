"""The Python API as a newcomer with scikit-learn habits meets it: unused configs warn, the
estimator protocol's limits are named, labels and images are read alike everywhere,
``transform`` gives embeddings, and a fitted model saves and loads."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import toy_domain

from transferkit.api import Transfer
from transferkit.domain import Domain
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning

TINY = TrainConfig(steps=2, batch_size=8)


def _no_warning(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        return fit()


def test_a_pretrain_config_that_is_not_used_warns_and_names_the_config_that_trains(one_thread):
    src, few = toy_domain(32, 0, 2), toy_domain(16, 1, 2)
    with pytest.warns(TransferkitWarning, match=r"fit: pretrain= is not used: method 'source_only' does not "
                                                r"pre-train; it trains with train= only \(2 steps\)") as caught:
        Transfer("source_only", train=TINY, pretrain=TrainConfig(steps=5)).fit(source=src, target=few)
    assert len(caught) == 1 and caught[0].filename == __file__
    net = _no_warning(lambda: Transfer("source_only", train=TINY).fit(source=src, target=few)).net_  # default: quiet
    with pytest.warns(TransferkitWarning, match=r"pretrain= is not used: net= is given and is used as it is, never "
                                                r"pre-trained; it trains with train= only \(2 steps\)"):
        Transfer("finetune", train=TINY, pretrain=TrainConfig(steps=5)).fit(source=src, target=few, net=net)
    _no_warning(lambda: Transfer("finetune", train=TINY, pretrain=TINY).fit(source=src, target=few))  # it is used
    _no_warning(lambda: Transfer("finetune", train=TINY).fit(source=src, target=few, net=net))


def test_sklearn_model_selection_and_nested_parameters_are_refused_with_what_to_do_instead():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    d = toy_domain(16, 0, 2)
    domain_objects = r"Transfer.fit takes Domain objects .* not scikit-learn's \(X, y\), so GridSearchCV, " \
                     r"cross_val_score and Pipeline cannot fit it: loop over the settings with clone\(model\)"
    with pytest.raises(TransferkitError, match=domain_objects):
        GridSearchCV(Transfer("target_only"), {"seed": [0, 1]}, cv=2).fit(d.images, d.labels)
    with pytest.raises(TransferkitError, match=domain_objects):
        cross_val_score(Transfer("target_only"), d.images, d.labels, cv=2)
    assert clone(Transfer("target_only", seed=1)).seed == 1  # what the message recommends works
    model = Transfer("finetune", train=TINY)
    nested = r"'train__steps' is no parameter: train and pretrain are TrainConfig objects.*set_params\(train=" \
             r"TrainConfig\(steps=10\)\)"
    with pytest.raises(TransferkitError, match=nested):
        model.set_params(train__steps=10)
    with pytest.raises(TransferkitError, match="'pretrain__lr' is no parameter"):
        Transfer("finetune", pretrain__lr=0.1)
    assert model.get_params()["train"] == TINY  # a refused change leaves the model as it was
    import dataclasses
    assert model.set_params(train=dataclasses.replace(model.train_cfg, steps=10)).train_cfg.batch_size == 8


def test_a_fitted_model_saved_with_torch_save_loads_in_a_fresh_process(tmp_path, one_thread):
    d = toy_domain(16, 0, 2)
    model = Transfer("target_only", backbone="lenet", train=TINY).fit(target=d)
    torch.save(model, tmp_path / "model.pt")
    torch.save(d.images, tmp_path / "x.pt")
    child = ("import torch; m = torch.load('model.pt', weights_only=False); "
             "print(m.predict(torch.load('x.pt')).tolist(), m.classes_)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{model.predict(d.images).tolist()} {model.classes_}"


def test_transform_gives_the_embedding_the_head_reads_without_gradients_in_eval_mode(one_thread):
    d = toy_domain(20, 0, 2)
    model = Transfer("target_only", backbone="lenet", train=TINY).fit(target=d)
    model.net_.train()  # transform puts the model in eval mode, as predict does
    with torch.enable_grad():
        emb = model.transform(d.images.clone().requires_grad_(True))
    assert emb.shape == (20, model.net_.embed_dim) and not emb.requires_grad and not model.net_.training
    assert torch.equal(emb, model.transform(d)) and torch.equal(emb, model.transform(d.images.numpy()))
    with torch.no_grad():
        assert torch.allclose(model.net_.get_classifier()(emb), model.predict_logits(d), atol=1e-5)
    assert model.transform(d.images[:0]).shape == (0, model.net_.embed_dim)
    with pytest.raises(TransferkitError, match=r"transform: expected an N x 1 x 28 x 28 image tensor \(the shape fit "
                                               r"saw\), got \(2, 3, 28, 28\)"):
        model.transform(torch.rand(2, 3, 28, 28))
    with pytest.raises(TransferkitError, match="call fit before transform"):
        Transfer("target_only").transform(d)
    with pytest.raises(TransferkitError, match="call fit before report"):
        Transfer("target_only").report(d)
    colour = d.to_format(channels=3)
    for call in (model.score, model.report):  # the errors name the call made, not the predict it makes
        with pytest.raises(TransferkitError, match=rf"^{call.__name__}: expected an N x 1 x 28 x 28 image tensor"):
            call(colour)


def test_domain_reads_grey_n_h_w_warns_of_ambiguous_channels_refuses_booleans_and_keeps_no_grad(one_thread):
    x, y = torch.rand(4, 28, 28), torch.tensor([0, 1, 0, 1])
    grey = Domain("g", x, y, ["a", "b"])
    assert grey.image_shape == (1, 28, 28) and torch.equal(grey.images[:, 0], x)  # as the npz loader reads it
    with pytest.warns(TransferkitWarning, match=r"domain 'c': images of shape \(4, 28, 28, 28\) are read as 28 "
                                                r"channels .*images.permute\(0, 3, 1, 2\)"):
        Domain("c", torch.rand(4, 28, 28, 28), y, ["a", "b"])
    with pytest.raises(TransferkitError, match=r"looks like N x H x W x C .* images.permute\(0, 3, 1, 2\)"):
        Domain("c", torch.rand(4, 28, 28, 3), y, ["a", "b"])
    leaf = torch.rand(4, 1, 28, 28, requires_grad=True)
    assert not Domain("g", leaf, y.float().requires_grad_(True), ["a", "b"]).images.requires_grad
    with pytest.raises(TransferkitError, match=r"domain 'b': labels must be integer class ids \(positions in "
                                               r"class_names\), got booleans"):
        Domain("b", x, y.bool(), ["a", "b"])
    assert torch.equal(Domain("f", x, y.double(), ["a", "b"]).labels, y)  # whole-number floats, as score reads them
    with pytest.raises(TransferkitError, match="labels must be integer class ids .* got non-integral"):
        Domain("f", x, y + 0.5, ["a", "b", "c"])
    model = Transfer("target_only", backbone="lenet", train=TINY).fit(target=grey)
    with pytest.warns(TransferkitWarning, match="read as 4 grey images"):  # or one RGBA image: said
        assert torch.equal(model.predict(x), model.predict(grey))  # predict reads N x H x W grey too
        assert model.score(x, y.float()) == model.score(grey)
    assert model.predict(torch.rand(5, 28, 28)).shape == (5,)


def test_read_images_given_a_folder_names_load_domain_and_glob(tmp_path):
    from transferkit import read_images
    with pytest.raises(TransferkitError, match=r"read_images takes image file paths, not a folder .*"
                                               r"load_domain\('folder:.*glob.glob"):
        read_images(tmp_path)


def test_one_channels_last_grey_image_is_named_as_the_shape_given(one_thread):
    from transferkit.domain import image_batch
    with pytest.raises(TransferkitError, match=r"got \(28, 28, 1\); one channels-last image \(H x W x C\): "
                                               r"images\.permute\(2, 0, 1\)\[None\]"):
        image_batch(torch.rand(28, 28, 1), "predict", shape=(1, 28, 28))  # was reshaped to (28, 1, 28, 1)
    assert image_batch(torch.rand(5, 28, 28), "predict", shape=(1, 28, 28)).shape == (5, 1, 28, 28)
    with pytest.warns(TransferkitWarning, match=r"predict: images of shape \(3, 28, 28\) are read as 3 grey images "
                                                r"\(N x H x W\) for this grey model; one colour image .*mean\(0, "):
        assert image_batch(torch.rand(3, 28, 28), "predict", shape=(1, 28, 28)).shape == (3, 1, 28, 28)


def test_select_metric_is_a_parameter_that_clone_keeps_and_the_run_config_takes(tmp_path):
    from sklearn.base import clone

    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    model = Transfer("finetune", select_metric="balanced_accuracy", train=TINY)
    assert clone(model).select_metric == "balanced_accuracy" and "select_metric='balanced_accuracy'" in repr(model)
    assert "select_metric" not in repr(Transfer("finetune"))
    with pytest.raises(TransferkitError, match="select_metric must be accuracy or balanced_accuracy"):
        Transfer("finetune", select_metric="balanced")
    with pytest.raises(TransferkitError, match="select_metric must be accuracy or balanced_accuracy"):
        ExperimentConfig(select_metric="recall")
    cfg = ExperimentConfig(name="sel", source="digits", target="digits", k=2, repeats=1, methods=["target_only"],
                           select_metric="balanced_accuracy", pretrain=TINY, train=TINY, out_dir=str(tmp_path))
    run_dir, (row,) = run_experiment(cfg, log=lambda *a: None)
    assert row["select_metric"] == "balanced_accuracy" and 0 <= row["val_accuracy"] <= 1
    assert Transfer.from_run(run_dir, "target_only").get_params()["select_metric"] == "balanced_accuracy"


def test_each_model_has_its_own_default_pretrain_config_and_repr_names_changed_budgets():
    a, b = Transfer("finetune"), Transfer("dann")
    a.pretrain_cfg.steps = 5  # a notebook cell changes one model's pre-training
    assert b.pretrain_cfg.steps == 600 == Transfer("finetune").pretrain_cfg.steps
    assert "pretrain=TrainConfig(steps=5)" in repr(a) and "TrainConfig" not in repr(b)
    assert repr(Transfer("finetune", train=TrainConfig(steps=40, lr=0.01))) == \
        "Transfer('finetune', backbone='convnet4', seed=0, train=TrainConfig(steps=40, lr=0.01))"


def test_a_train_config_changed_in_place_is_checked_when_training_starts(one_thread):
    d = toy_domain(n=16)
    for field, value, message in (("optimizer", "adamw", "unknown optimizer 'adamw'"),
                                  ("steps", 0, "steps must be >= 1"), ("schedule", "cos", "unknown schedule 'cos'"),
                                  ("lr", -1.0, "lr must be a finite number > 0")):
        model = Transfer("target_only", backbone="lenet", train=TrainConfig(steps=2, batch_size=8))
        setattr(model.train_cfg, field, value)
        with pytest.raises(TransferkitError, match=message):
            model.fit(target=d)


def test_fit_given_arrays_or_a_name_says_how_to_make_a_domain():
    with pytest.raises(TransferkitError, match=r"got Tensor: wrap images and labels as Domain\(name, images, "):
        Transfer("target_only").fit(torch.rand(4, 1, 28, 28), torch.arange(4))
    with pytest.raises(TransferkitError, match=r"got str: load it first: load_domain\(name\)"):
        Transfer("target_only").fit("mnist")


def test_run_experiment_leaves_the_callers_random_state_as_it_was(tmp_path, one_thread):
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    cfg = ExperimentConfig(name="rng", source="digits", target="digits", methods=["target_only"], k=None, repeats=1,
                           backbone="lenet", train=TrainConfig(steps=2, batch_size=8), out_dir=str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_experiment(cfg, log=lambda *a, **k: None)
    assert torch.equal(torch.rand(3), expected)


def test_a_domain_slices_into_sub_domains_and_is_not_iterable():
    d = toy_domain(n=12)
    assert torch.equal(d[:5].images, d.images[:5]) and d[:5].class_names == d.class_names and d[:5].name == d.name
    assert torch.equal(d[[3, 1]].labels, d.labels[[3, 1]]) and len(d[d.labels == 0]) == 3
    assert torch.equal(d[torch.tensor([-1])].images, d.images[-1:])
    for index in (0, torch.tensor(2), (0, 1)):
        with pytest.raises(TransferkitError, match=r"indexing gives a sub-domain: use a slice"):
            d[index]
    with pytest.raises(TypeError, match="not iterable"):
        iter(d)


def test_a_fit_interrupted_goes_on_from_its_checkpoint_dir_to_the_uninterrupted_weights(tmp_path, monkeypatch,
                                                                                         one_thread):
    from transferkit.api import PRETRAINED
    from transferkit.engine import Engine
    src, target = toy_domain(n=48, seed=1), toy_domain(n=16, seed=2)
    configs = dict(backbone="lenet", train=TrainConfig(steps=6, batch_size=8, checkpoint_every=2),
                   pretrain=TrainConfig(steps=8, batch_size=8, checkpoint_every=2))
    expected = Transfer("finetune", **configs).fit(source=src, target=target).net_.state_dict()
    PRETRAINED.clear()  # the fit below pre-trains (and checkpoints) again, not the process's copy of the one above
    save, saved = Engine._save, []

    def interrupt_after_three(self, *args):  # Ctrl-C after the 3rd checkpoint: at step 6 of the pre-training
        save(self, *args)
        saved.append(self.ckpt.name)
        if len(saved) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "_save", interrupt_after_three)
    model = Transfer("finetune", **configs)
    with pytest.raises(KeyboardInterrupt):
        model.fit(source=src, target=target, checkpoint_dir=tmp_path / "ckpt")
    assert saved == ["pretrain"] * 3 and (tmp_path / "ckpt" / "pretrain" / "last.json").exists()
    model.fit(source=src, target=target, checkpoint_dir=tmp_path / "ckpt")  # goes on from step 6
    assert saved[3] == "pretrain" and len(saved) == 4 + 3  # steps 8 (pre-training), 2, 4, 6 (transfer)
    assert all(torch.equal(v, expected[k]) for k, v in model.net_.state_dict().items())
    assert list((tmp_path / "ckpt").iterdir()) == []  # a fit that ends removes its checkpoints


def test_a_students_usual_slips_are_named_with_the_fix():
    import transferkit
    from transferkit.splits import Split, sample_k_shot, subsample_per_class
    d = toy_domain(12, classes=3)
    for fn in (lambda: sample_k_shot(Split(d, d, d), 1, 0), lambda: subsample_per_class(Split(d, d, d), 1, 0)):
        with pytest.raises(TransferkitError, match=r"takes one Domain, got a Split .*split\.train"):
            fn()
    for labels in (["a", "b"] * 6, __import__("numpy").array(["a", "b"] * 6)):
        with pytest.raises(TransferkitError, match=r"labels are class names \('a', \.\.\.\); give class ids.*index"):
            Domain("d", d.images, labels, ["a", "b"])
    with pytest.raises(TransferkitError, match=r"steps is a training setting, not a method option: in Python "
                                               r"Transfer\(\.\.\., train=TrainConfig\(steps=\.\.\.\)\)"):
        Transfer("finetune", steps=10)
    from transferkit.methods import get_method
    assert list(transferkit.method_options("dann")) == list(transferkit.method_options(get_method("dann")))
    for name, meant in ((lambda: Transfer("DANN"), "dann"), (lambda: transferkit.load_domain("mnsit"), "mnist")):
        with pytest.raises(TransferkitError, match=f"did you mean '{meant}'"):
            name()
    with pytest.raises(TransferkitError, match=r"must share one shape .*domain\.to_format\(size=28, channels=3\)"):
        Transfer("finetune", backbone="lenet").fit(target=d, source=toy_domain(12, classes=3).to_format(channels=3))
    with pytest.raises(TransferkitError, match=r"must share one shape .*to_format\(size=(28|32), channels=1\)"):
        Transfer("finetune", backbone="lenet").fit(target=d, source=toy_domain(12, classes=3).to_format(size=32))


def test_a_table_of_hand_made_rows_needs_method_seed_and_accuracy_only():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    rows = [{"method": "finetune", "seed": s, "accuracy": a} for s, a in ((0, 0.8), (1, 0.82))]
    table = markdown_table(summarize(rows), rows)
    assert "| finetune |  |  |  | 81.0 ± 1.0 | 2 | – |" in table
    with pytest.raises(TransferkitError, match="rows\\[0\\] has no seed: a row needs method, seed and accuracy"):
        summarize([{"method": "finetune", "accuracy": 0.8}])


def test_save_network_of_a_fitted_model_keeps_its_classes_and_refuses_a_network_that_does_not_predict(tmp_path):
    import transferkit
    from transferkit.io import load_safetensors
    src, tgt = toy_domain(40, classes=4, name="src"), toy_domain(24, seed=1, classes=4, name="tgt")
    tiny = TrainConfig(steps=2, eval_every=2, batch_size=8)
    model = Transfer("finetune", backbone="lenet", pretrain=tiny, train=tiny).fit(target=tgt, source=src)
    _, meta = load_safetensors(transferkit.save_network(model, tmp_path / "ft.safetensors"), "network")
    assert meta["class_names"] == '["0", "1", "2", "3"]' and model.method_.predicts_with_net
    lext = Transfer("lext", backbone="lenet", pretrain=tiny, train=tiny).fit(target=tgt, source=src, unlabeled=tgt)
    assert not lext.method_.predicts_with_net  # psi against the labelled centroids
    with pytest.raises(TransferkitError, match=r"save_network: lext does not predict with its network alone .*"
                                               r"target_centroids.*torch\.jit\.trace"):
        transferkit.save_network(lext, tmp_path / "lext.safetensors")
    with pytest.raises(TransferkitError, match=r"got list; image files become one with transferkit.read_images"):
        model.predict(["a.png"])


def test_score_and_report_take_a_test_set_holding_some_of_the_fitted_classes():
    src, tgt = toy_domain(40, classes=4, name="src"), toy_domain(24, seed=1, classes=4, name="tgt")
    tiny = TrainConfig(steps=2, eval_every=2, batch_size=8)
    model = Transfer("finetune", backbone="lenet", pretrain=tiny, train=tiny).fit(target=tgt, source=src)
    test = toy_domain(20, seed=2, classes=4, name="test")
    some = test.select_classes(["3", "1"])  # labels 0, 1 for classes 3, 1: read by name
    keep = (test.labels == 3) | (test.labels == 1)
    assert model.score(some) == pytest.approx(float((model.predict(test.images[keep]) == test.labels[keep]).float()
                                                    .mean()))
    report = model.report(some)
    assert report["per_class_accuracy"][0] is None and report["per_class_accuracy"][1] is not None  # class 0: none
    assert report["class_names"] == ["0", "1", "2", "3"] != some.class_names  # the order of the lists: classes_
    assert report["support"] == [0, int((test.labels == 1).sum()), 0, int((test.labels == 3).sum())]
    recalls = [a for a in report["per_class_accuracy"] if a is not None]
    assert report["balanced_accuracy"] == pytest.approx(sum(recalls) / 2, abs=1e-6)
    with pytest.raises(TransferkitError, match="score on those classes"):  # a class the model does not predict
        model.score(Domain("five", test.images, test.labels, ["0", "1", "2", "3", "4"]))


def test_transfer_hooks_see_each_evaluation_and_may_stop_the_transfer_stage_only():
    import copy
    import pickle

    from sklearn.base import clone
    calls, records = [], []

    def hook(step, state):
        calls.append(step)
        if state["record"] is not None and (not records or records[-1] is not state["record"]):
            records.append(state["record"])
        state["stopped"] = step >= 6
    target, val = toy_domain(n=40, seed=1), toy_domain(n=20, seed=2)
    model = Transfer("finetune", backbone="lenet", train=TrainConfig(steps=20, eval_every=2, progress=False),
                     pretrain=TrainConfig(steps=3, progress=False), hooks=hook)
    model.fit(target=target, source=toy_domain(n=40, seed=3), val=val)
    assert calls == [1, 2, 3, 4, 5, 6]  # the transfer's steps, not the 3 of pre-training; stopped after step 6
    assert model.fit_result_.steps == 6
    assert [r["step"] for r in records] == [2, 4, 6] and all(0 <= r["val_accuracy"] <= 1 for r in records)
    assert {"loss", "lr"} <= set(records[0])
    assert clone(model).get_params()["hooks"] == (hook,)
    assert pickle.loads(pickle.dumps(model)).hooks == ()  # a session's functions are not pickled
    assert copy.copy(model).hooks == copy.deepcopy(model).hooks == (hook,)  # a copy in the session keeps them
    deep = copy.deepcopy(model)
    assert deep.net_ is not model.net_ and torch.equal(deep.predict_logits(target), model.predict_logits(target))
    with pytest.raises(TransferkitError, match="hooks must be a function hook"):
        Transfer("finetune", hooks=[1])


def test_notebook_habits_numpy_domains_numbered_names_rgba_hooks_and_classes_without_images():
    import numpy as np

    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    x, y = np.random.default_rng(0).random((12, 1, 8, 8)).astype(np.float32), np.arange(12) % 3
    d = Domain("np", x, y, ["1990", "2000", "2010"])  # NumPy arrays, as the README's "your own arrays"
    assert isinstance(d.images, torch.Tensor) and d.labels.tolist() == y.tolist()
    assert d.select_classes(["2000"]).class_names == ["2000"] and d.select_classes([1]).class_names == ["2000"]
    with pytest.raises(TransferkitError, match=r"unknown class '1'; .* \(named by numbers: a text is read as a name"):
        d.select_classes(["1"])  # was class id 1, '2000', silently
    rgba = Domain("rgba", torch.rand(4, 4, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    assert torch.equal(rgba.to_format(channels=3).images, rgba.images[:, :3])
    assert Engine(hooks=lambda step, state: None).hooks[0] is not None  # one function is a tuple of one
    with pytest.raises(TransferkitError, match="hooks must be a function hook"):
        Engine(hooks=[1])
    gap = Domain("gap", torch.rand(8, 1, 28, 28), torch.tensor([0, 2] * 4), ["a", "b", "c"])
    with pytest.warns(Warning, match=r"fit: the target domain 'gap' names 3 classes but has no image of 1 \(\['b'\]\)"):
        Transfer("target_only", train=TrainConfig(steps=1)).fit(target=gap)
    with pytest.raises(TransferkitError, match=r"unlabeled must be a Domain, got Tensor: wrap the images as "
                                               r"Domain.unlabeled\(name, images\)"):
        Transfer("dann").fit(source=gap, unlabeled=gap.images)


def test_a_network_loaded_with_its_class_names_keeps_its_head_rows_by_name(tmp_path):
    from transferkit import load_network, save_network
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitError
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    save_network(net, tmp_path / "n.safetensors", class_names=["b", "a", "c"])  # rows in the order b, a, c
    loaded = load_network(tmp_path / "n.safetensors", "lenet")
    assert loaded.class_names == ["b", "a", "c"]
    assert all(torch.equal(x, y) for x, y in zip(net.state_dict().values(), loaded.state_dict().values()))
    target = Domain("t", torch.rand(9, 1, 28, 28), torch.arange(9) % 3, ["a", "b", "c"])
    t = Transfer("ft_unit:conv2", train=TrainConfig(steps=1, lr=1e-12)).fit(target=target, net=loaded)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        want = net.eval()(x)[:, [1, 0, 2]]  # the target's a, b, c are the file's rows 1, 0, 2
    assert torch.allclose(t.predict_logits(x), want, atol=1e-4)
    ss = Transfer("ft_ss", train=TrainConfig(steps=1)).fit(target=target, net=loaded)
    with pytest.raises(TransferkitError, match=r"holds parameters its backbone 'lenet' does not have \(units.conv1.0."
                                               r"scale_shift.scale, .* save the whole model"):
        save_network(ss, tmp_path / "ss.safetensors")


def test_load_network_round_trips_names_and_head_kinds_and_a_refit_net_names_its_new_rows(tmp_path):
    import numpy as np

    from transferkit import load_network, save_network
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    save_network(net, tmp_path / "n.safetensors", class_names=["b", "a", "c"])
    loaded = load_network(tmp_path / "n.safetensors", "lenet")
    save_network(loaded, tmp_path / "again.safetensors")  # its names travel with it
    assert load_network(tmp_path / "again.safetensors", "lenet").class_names == ["b", "a", "c"]
    target = Domain("t", torch.rand(9, 1, 28, 28), torch.arange(9) % 3, ["a", "b", "c"])
    t = Transfer("ft_unit:conv2", train=TrainConfig(steps=1, lr=1e-12)).fit(target=target, net=loaded)
    assert t.net_.class_names == ["a", "b", "c"] and loaded.class_names == ["b", "a", "c"]  # its head's rows now
    with pytest.warns(UserWarning, match=r"names no classes for its head's 3 rows, as many as the target's: they are "
                                         r"kept by position, row i as target class i \(\['a', 'b', 'c'\]\); set "
                                         r"net.class_names"):  # silent (a trial)
        Transfer("ft_unit:conv2", train=TrainConfig(steps=1, lr=1e-12)).fit(target=target, net=net)
    import warnings
    with warnings.catch_warnings():  # a new head, or none used: nothing kept by position (a review)
        warnings.simplefilter("error")
        for name in ("linear_probe", "matching_net", "target_only"):
            Transfer(name, train=TrainConfig(steps=1)).fit(target=target, net=net)
    other = Domain("t2", target.images, target.labels, ["a", "b", "d"])
    with pytest.raises(TransferkitError, match=r"whose classes \(\['b', 'a', 'c'\]\) lack the target classes "
                                               r"\['d'\]: train on a few target labels"):  # not finetune_adv or lext
        Transfer("source_only").fit(target=other, net=loaded)
    two = Domain("t3", target.images[:6], target.labels[:6] % 2, ["a", "b"])
    with pytest.raises(TransferkitError, match=r"cannot be matched to the 2 target classes: set net.class_names"):
        Transfer("source_only").fit(target=two, net=net)
    with pytest.warns(UserWarning, match=r"val= and train= are not used: source_only with net= and without source= "
                                         r"trains nothing"):
        Transfer("source_only", train=TrainConfig(steps=50)).fit(target=target, val=target, net=loaded)
    colour = build_backbone("lenet", num_classes=3, in_channels=3, image_size=28)
    save_network(colour, tmp_path / "rgb.safetensors")
    assert load_network(tmp_path / "rgb.safetensors", "lenet").input_shape == (3, 28, 28)  # the file's channels
    cos = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28, head="cosine")
    save_network(cos, tmp_path / "cos.safetensors")
    assert load_network(tmp_path / "cos.safetensors", "lenet").head.state_dict().keys() == cos.head.state_dict().keys()
    proto = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28, head="prototype")
    proto.head.metric, proto.head.scale = "cosine", 5.0  # finetune_proto(metric="cosine") reloaded as sqeuclidean
    proto.head.fit(proto.forward_features(target.images).detach(), target.labels)  # (a review)
    save_network(proto, tmp_path / "proto.safetensors")
    back = load_network(tmp_path / "proto.safetensors", "lenet")
    assert (back.head.metric, back.head.scale) == ("cosine", 5.0)
    assert torch.allclose(back.eval()(target.images), proto.eval()(target.images))
    image_unit = Transfer("image_unit", train=TrainConfig(steps=1)).fit(target=target, net=loaded)
    with pytest.raises(TransferkitError, match="holds parameters its backbone 'lenet' does not have"):
        save_network(image_unit, tmp_path / "iu.safetensors")
    big_endian = np.random.default_rng(0).random((4, 1, 8, 8)).astype(">f4")
    assert torch.allclose(Domain("be", big_endian, [0, 1, 0, 1], ["x", "y"]).images,
                          torch.from_numpy(big_endian.astype("<f4")))
    assert Engine(hooks=None).hooks == ()
