"""Tests of session 79's notebook-audit fixes (h_fp); each fails on the library before its fix."""
import json

import pytest

from transferkit import ExperimentConfig, TrainConfig, Transfer
from transferkit.errors import TransferkitError


def test_read_results_of_a_run_directory_reads_its_results_file(tmp_path):
    from transferkit.results import read_results
    row = {"method": "finetune", "source": "mnist", "target": "digits", "setting": "k=2", "seed": 0,
           "accuracy": 0.5, "wall_s": 1.0}
    (tmp_path / "results.json").write_text(json.dumps({"rows": [row]}))
    assert read_results(tmp_path)["rows"] == [row]
    assert read_results(tmp_path / "results.json")["rows"] == [row]


def test_run_experiment_takes_a_mapping_refuses_a_name_and_log_none_is_silent(monkeypatch):
    from transferkit import experiment
    seen = []

    def fake(cfg, run_dir, log):
        seen.append(cfg)
        log("a progress line")
        return None, []

    monkeypatch.setattr(experiment, "_run_experiment", fake)
    experiment.run_experiment({"name": "mine", "methods": ["finetune"]}, log=None)
    assert isinstance(seen[-1], ExperimentConfig) and seen[-1].name == "mine" and seen[-1].methods == ["finetune"]
    with pytest.raises(TransferkitError, match=r"load_config\('demo'\)"):
        experiment.run_experiment("demo")
    assert len(seen) == 1


def test_load_config_reads_a_shipped_config_by_name(tmp_path, monkeypatch):
    from transferkit.config import BUNDLED_CONFIGS, load_config
    monkeypatch.chdir(tmp_path)
    assert load_config("demo") == load_config(BUNDLED_CONFIGS / "demo.yaml")
    with pytest.raises(TransferkitError, match="the configs that ship with transferkit are"):
        load_config("no_such_config")


def test_a_train_config_given_is_copied_and_sklearn_clone_still_works():
    from sklearn.base import clone
    cfg = TrainConfig(steps=3)
    model = Transfer("finetune", train=cfg)
    cfg.steps = 6
    assert model.train_cfg.steps == 3 and model.get_params()["train"].steps == 3
    assert clone(model).train_cfg.steps == 3
    fresh = TrainConfig(steps=4)
    assert clone(Transfer("finetune", train=fresh)).train_cfg == fresh


def test_long_reprs_are_short():
    import numpy as np
    import torch

    from transferkit.engine import FitResult
    text = repr(Transfer("attribute_zsl", attributes=np.random.rand(10, 85)))
    assert len(text) < 200 and "ndarray 10x85 float64" in text
    result = FitResult(steps=3, best_step=2, best_val_accuracy=0.5, stopped_early=False, wall_s=0.1,
                       history=[{"step": i, "loss": 1.0} for i in range(300)], val_correct=torch.ones(750, dtype=bool))
    text = repr(result)
    assert len(text) < 300 and "history=<300 entries>" in text and "best_step=2" in text


def test_quiet_still_silences_transferkit_warnings_only():
    """A guard of the reworked quiet (it passes before too)."""
    import warnings

    from transferkit.errors import quiet, warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet():
            warn("a repeat")
            warnings.warn("another library's", UserWarning, stacklevel=1)
        warn("after")
    assert [str(w.message) for w in caught] == ["another library's", "after"]


def test_an_older_class_of_a_rerun_cell_is_named_so():
    from transferkit.methods.base import METHODS, get_method, register
    from transferkit.methods.finetune import Finetune

    def define():
        class Mine(Finetune):
            name = "session79_mine"
        return register(Mine)
    try:
        old, new = define(), define()
        assert get_method(new) is new
        with pytest.raises(TransferkitError, match="a newer class named 'session79_mine' was registered since"):
            get_method(old)
    finally:
        METHODS.pop("session79_mine", None)


def test_a_taken_domain_name_says_how_to_drop_the_old_entry():
    import numpy as np

    from transferkit.data import BUILTINS, register_domain
    given = dict(channels=1, size=4, class_names=["a", "b"], description="a test domain")
    try:
        register_domain("session79_dom", lambda: (np.zeros((2, 4, 4), np.uint8), np.array([0, 1])), **given)
        with pytest.raises(TransferkitError, match=r"del BUILTINS\['session79_dom'\]"):
            register_domain("session79_dom", lambda: (np.ones((2, 4, 4), np.uint8), np.array([0, 1])), **given)
        del BUILTINS["session79_dom"]
        register_domain("session79_dom", lambda: (np.ones((2, 4, 4), np.uint8), np.array([0, 1])), **given)
    finally:
        BUILTINS.pop("session79_dom", None)
    with pytest.raises(TransferkitError) as shipped:
        register_domain("mnist", lambda: None, **given)
    assert "del " not in str(shipped.value)


def _notebook():
    """A module without a source file whose cells' code linecache holds, as a notebook kernel's."""
    import linecache
    import types
    space = types.ModuleType("session79_notebook").__dict__
    cells = []

    def run(src):
        name = f"/tmp/session79_kernel/cell{len(cells)}.py"
        cells.append(name)
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), space)
    return space, run


def test_a_notebook_builder_s_digest_follows_its_helpers_and_constants():
    from transferkit.data import builder_digest
    space, run = _notebook()
    settings = {"channels": 1, "size": 4}
    builder = "def build():\n    return helper(SIDE), [0, 1]\n"
    digests = []
    for helper, side in (("x", 4), ("255 - x", 4), ("255 - x", 5)):
        run(f"SIDE = {side}\ndef inner(x):\n    return {helper}\ndef helper(x):\n    return inner(x)\n")
        run(builder)
        digests.append(builder_digest(space["build"], settings))
    assert len(set(digests)) == 3  # the helper's helper edited, then a constant
    run("import os\nSIDE = 4\ndef inner(x):\n    return 255 - x\n")
    run(builder)
    assert builder_digest(space["build"], settings) == digests[1]  # the same code again: the same digest


def test_a_builder_from_a_file_keeps_its_digest():
    """A guard (it passes before too): cached domains of builders in files are still found."""
    import hashlib
    import inspect

    import helpers

    from transferkit.data import builder_digest
    settings = {"channels": 1, "size": 4}
    text = json.dumps([inspect.getsource(helpers), settings], sort_keys=True)
    assert builder_digest(helpers.toy_domain, settings) == hashlib.sha256(text.encode()).hexdigest()[:12]
