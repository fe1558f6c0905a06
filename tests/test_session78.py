"""Session 78 (mine): mends of the merged helpers' changes."""

import warnings

import torch
from helpers import toy_domain


def test_retrieval_map_scores_a_class_the_source_lacks_0_without_the_per_call_warning():
    from transferkit.domain import Domain
    from transferkit.retrieval import retrieval_map
    source_val = toy_domain(12, 0, 3)  # classes 0, 1, 2
    target = Domain("t", torch.zeros(8, 1, 28, 28), torch.arange(8) % 4, ["0", "1", "2", "9"])
    gallery, queries = torch.arange(12.0)[:, None] % 3, torch.arange(8.0)[:, None] % 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = retrieval_map(None, None, source_val, target, k=2, gallery=gallery, queries=queries)
    assert not [w for w in caught if "no relevant gallery item" in str(w.message)]
    assert 0 < score <= 0.75  # the two queries of class "9" count as 0 in the mean of 8


def test_the_lazy_package_still_gives_its_modules_as_attributes_after_import_transferkit():
    import subprocess
    import sys
    code = ("import sys, transferkit; assert 'torch' not in sys.modules; print(transferkit.data.__name__, "
            "transferkit.backbones.__name__); assert not hasattr(transferkit, 'a.b'); "
            "getattr(transferkit, 'no_such_module')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["transferkit.data", "transferkit.backbones"], done.stderr
    assert "has no attribute 'no_such_module'" in done.stderr


_SIGNAL_WHILE_LOADING = """
import importlib.abc, os, signal, sys, time

SIGNAL = getattr(signal, sys.argv[1])

class Stop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            os.kill(os.getpid(), SIGNAL)
            time.sleep(0.05)
            print("the import went on", file=sys.stderr)  # a raising handler would have cut it here

sys.meta_path.insert(0, Stop())
sys.argv = ["transferkit", *sys.argv[2:]]
from transferkit.cli import entry
entry()
"""


def test_a_signal_while_torch_loads_is_held_until_it_has_loaded_then_stops_the_command():
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    for name, code, line in (("SIGTERM", 143, "transferkit: terminated (SIGTERM)"),
                             ("SIGINT", 130, "transferkit: interrupted")):
        done = subprocess.run([sys.executable, "-c", _SIGNAL_WHILE_LOADING, name, "methods"], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == code, done.stderr
        assert done.stderr == f"the import went on\n{line}\n" and done.stdout == ""  # methods never listed


def test_a_buffer_that_holds_infinities_on_purpose_is_not_refused_but_a_nan_running_variance_is():
    import pytest

    from transferkit.backbones import build_backbone
    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    net.register_buffer("causal_mask", torch.full((4, 4), float("-inf")).triu(1))  # as text transformers keep
    target, engine = toy_domain(32, 0, 4), Engine(TrainConfig(steps=2, batch_size=8, progress=False))
    engine.fit(get_method("target_only")(net), target=target)
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = float("nan")
    with pytest.raises(TransferkitError, match=r"running_var \(a buffer\)"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False)).fit(get_method("target_only")(net), target=target)


def test_a_new_run_refused_while_it_reads_its_data_gets_that_refusal_not_another_config(tmp_path, monkeypatch,
                                                                                          capsys):
    from helpers import run_cli, toy_named_domains
    toy_named_domains(monkeypatch)
    config = tmp_path / "c.yaml"  # NaN != NaN: compared with the config.yaml it had just written, "another config"
    config.write_text(f"name: r\nsource: digits\ntarget: mnist\nout_dir: {tmp_path / 'runs'}\nmethods: [target_only]\n"
                      "k: 2\nrepeats: 1\nsource_classes: .nan\n")
    code, _, err = run_cli(capsys, "run", str(config))
    assert code == 2 and "cannot read classes from nan" in err and "another config" not in err, err
    assert not list((tmp_path / "runs").glob("r*"))  # no run directory is left


def test_flex_workers_take_a_top_level_classes_nested_class_and_a_class_made_by_type(tmp_path, monkeypatch):
    import sys
    import types

    from torch import nn

    from transferkit.backbones import from_sequential
    from transferkit.methods import get_method
    from transferkit.preflight import check_method_workers, main_only
    script = tmp_path / "script.py"
    script.write_text("from torch import nn\n\n\nclass Units:\n    class Scale(nn.Module):\n"
                      "        def forward(self, x):\n            return x\n\n\n"
                      "Shift = type('Shift', (nn.Module,), {'forward': lambda self, x: x})\n\n"
                      "if __name__ == '__main__':\n"
                      "    Lost = type('Lost', (nn.Module,), {'forward': lambda self, x: x})\n")
    space = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), space)  # as `python script.py` makes them
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    for cls in (space["Units"].Scale, space["Shift"]):  # both pickle by name in a spawned worker
        net = from_sequential(nn.Sequential(nn.Conv2d(1, 2, 3), cls(), nn.Flatten(), nn.Linear(2 * 26 * 26, 2)),
                              input_shape=(1, 28, 28))
        check_method_workers(get_method("flex")(net, workers=2))
    assert main_only(space["Lost"]) and not main_only(space["Shift"]) and not main_only(space["Units"].Scale)


def test_a_cache_of_another_owner_is_advised_chown_and_the_default_cache_is_not_called_the_variable(tmp_path,
                                                                                                    monkeypatch):
    import os

    import pytest

    from transferkit import io
    from transferkit.errors import TransferkitWarning
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    monkeypatch.setattr(io, "_CACHES_CHECKED", set())
    monkeypatch.setattr(os, "getuid", lambda: os.stat(cache).st_uid + 1)  # root on a volume of uid 1000, say
    monkeypatch.delenv("TRANSFERKIT_CACHE", raising=False)  # the default cache: no variable to name
    with pytest.warns(TransferkitWarning) as caught:
        io._warn_if_others_write(cache)
    message = str(caught[0].message)
    assert "belongs to another user" in message and "chown it, or set TRANSFERKIT_CACHE" in message
    assert "chmod" not in message  # which cannot make another's folder the user's
    assert "$TRANSFERKIT_CACHE" not in message


def test_the_apis_pre_training_that_diverged_is_named_with_its_learning_rate_setting():
    import pytest

    from transferkit import Transfer
    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitError, TransferkitWarning
    source, target = toy_domain(64, 0, 4), toy_domain(32, 1, 4)
    quick = dict(steps=12, batch_size=16, eval_every=4, progress=False)
    with pytest.warns(TransferkitWarning, match=r"^the pre-training of the source network \(method 'source_only'\): "
                                                r"the training loss grew .*\(pretrain\.lr 3\)"):
        Transfer("finetune", pretrain=TrainConfig(lr=3, optimizer="sgd", **quick), train=TrainConfig(**quick)).fit(
            target, source=source)
    with pytest.raises(TransferkitError, match=r"^the pre-training of the source network \(method 'source_only'\): "
                                               r"loss became nan"):
        Transfer("finetune", pretrain=TrainConfig(lr=30, optimizer="sgd", **quick), train=TrainConfig(**quick)).fit(
            target, source=source)


def test_a_nan_buffer_other_than_running_statistics_is_named_and_a_local_class_is_main_only(tmp_path, monkeypatch):
    import sys
    import types

    import pytest

    from transferkit.backbones import build_backbone
    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    from transferkit.preflight import main_only
    torch.manual_seed(0)
    net = build_backbone("convnet4", num_classes=4, in_channels=1, image_size=28)
    net.register_buffer("input_std", torch.tensor([float("nan")]))  # an input normalisation's, say
    with pytest.raises(TransferkitError, match=r"starting weights hold NaN .*input_std \(a buffer\)"):
        Engine(TrainConfig(steps=2, batch_size=8, progress=False)).fit(get_method("target_only")(net),
                                                                      target=toy_domain(32, 0, 4))
    script = tmp_path / "script.py"  # a class a top-level class's method makes, or a placeholder's name
    script.write_text("class Builder:\n    def head(self):\n        class Head:\n            pass\n"
                      "        return Head\n\n\nSpare = None\n\n"
                      "if __name__ == '__main__':\n    class Spare:\n        pass\n")
    space = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), space)
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    assert main_only(space["Builder"]().head()) and main_only(space["Spare"])


def test_an_unfinished_runs_resume_command_quotes_a_directory_with_a_space(tmp_path):
    import shlex

    from transferkit.results import unfinished_hint
    run = tmp_path / "my run"
    (run / "jobs").mkdir(parents=True)
    (run / "jobs" / "finetune-k=5-s0.json").write_text("{}")  # no config.yaml: run or bench, both named
    hint = unfinished_hint(run)
    assert f"transferkit run --resume {shlex.quote(str(run))}`" in hint and "--resume '" in hint, hint
