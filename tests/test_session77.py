"""Session 77: a fit's checkpoint clean-up removes only the stage folders it wrote; the configs ship in the
package (``transferkit run demo`` from any folder)."""
from pathlib import Path

import pytest
from helpers import toy_domain
from test_api_mutation import ONE

from transferkit import Transfer
from transferkit.errors import TransferkitError


def test_fit_keeps_a_users_checkpoint_folder_beside_its_own_stages(tmp_path, one_thread):
    root = tmp_path / "ckpt"
    other = root / "other-run"  # another fit's (or the user's) resumable checkpoint in the same folder
    other.mkdir(parents=True)
    (other / "last.json").write_text("{}")
    Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE).fit(
        target=toy_domain(8), source=toy_domain(16, classes=4), checkpoint_dir=root)
    assert (other / "last.json").read_text() == "{}"
    assert sorted(p.name for p in root.iterdir()) == ["other-run"]  # the fit's own stages are gone


def test_run_finds_a_shipped_config_by_name_from_any_folder(tmp_path, monkeypatch):
    from transferkit.config import BUNDLED_CONFIGS, bundled_config_names, config_file
    monkeypatch.chdir(tmp_path)  # no configs/ here: a wheel's user
    demo = BUNDLED_CONFIGS / "demo.yaml"
    assert config_file("demo") == config_file("demo.yaml") == config_file("configs/demo.yaml") == demo
    (tmp_path / "demo.yaml").write_text("k: 3\n")
    assert config_file("demo.yaml") == Path("demo.yaml")  # a file of the user's wins
    with pytest.raises(TransferkitError, match=r"config file other/demo.yaml does not exist; the configs that ship "
                                               r"with transferkit are cross_task, demo, label_efficiency"):
        config_file("other/demo.yaml")
    assert {"cross_task", "demo", "label_efficiency"} <= set(bundled_config_names())


def test_run_help_names_the_shipped_configs(capsys):
    from transferkit.cli import main
    from transferkit.config import bundled_config_names
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"ships with transferkit ({', '.join(sorted(bundled_config_names()))})" in help_text


def test_print_config_of_a_shipped_config_by_name(tmp_path, monkeypatch, capsys):
    from transferkit.cli import main
    from transferkit.config import load_config
    monkeypatch.chdir(tmp_path)
    main(["run", "cross_task", "--print-config"])
    (tmp_path / "my.yaml").write_text(capsys.readouterr().out)
    from transferkit.config import BUNDLED_CONFIGS
    assert load_config(tmp_path / "my.yaml") == load_config(BUNDLED_CONFIGS / "cross_task.yaml")


def test_a_stopped_command_that_keeps_no_run_gets_no_resume_advice(monkeypatch, tmp_path):
    import argparse

    from transferkit import cli, runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])
    episodes = cli.build_parser().parse_args(["episodes", "runs/x"])
    assert cli._resume_hint(episodes, ["episodes", "runs/x"]) == ""  # no --resume: nothing to go on from
    new = cli.build_parser().parse_args(["run", "--set", "k=1"])
    assert cli._resume_hint(new, ["run", "--set", "k=1"]) == ("it stopped before its first job, and nothing was "
                                                              "kept: start it again")
    old = tmp_path / "old"  # a run resumed, stopped before it noted its directory: the one given
    (old / "jobs").mkdir(parents=True)
    hint = cli._resume_hint(argparse.Namespace(resume=str(old)), ["run", "--resume", str(old)])
    assert hint == (f"no job had finished nor written a checkpoint; {old} keeps the run's config; go on with: "
                    f"transferkit run --resume {old}")


def test_a_stopped_episodes_command_says_only_that_it_was_interrupted(monkeypatch, capsys):
    from transferkit import cli, runtime
    monkeypatch.setattr(runtime, "_WORK_DIR", [])

    def stop(args, argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_dispatch", stop)
    assert cli.main(["episodes", "runs/x"]) == 130
    assert capsys.readouterr().err.strip() == "transferkit: interrupted"


def test_a_file_size_limit_is_named_as_the_process_limit(tmp_path):
    import errno

    from transferkit import cli
    error = OSError(errno.EFBIG, "File too large", str(tmp_path / "x.safetensors"))
    assert "raise the file-size limit, e.g. ulimit -f unlimited" in cli._cache_hint(error)


def test_a_failed_jobs_error_is_told_when_its_traceback_cannot_be_written(tmp_path, monkeypatch, capsys):
    from transferkit import jobs
    from transferkit.jobs import JobFailure, failures_message, save_failure

    def denied(path, text):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(jobs, "write_text", denied)
    failure = save_failure(tmp_path / "failed" / "a.txt", JobFailure("ValueError: bad", "Traceback ...", None), "a")
    err = capsys.readouterr().err
    assert failure.path == "" and "Traceback ..." in err
    assert "job a failed: ValueError: bad (its traceback could not be written to" in err
    assert "tracebacks above (they could not be written)" in failures_message([failure], 1, "kept", "again")


NET_WITH_A_SET = '''
import torch
from torch import nn
from transferkit.backbones import definition_digest, from_sequential


class Act(nn.Module):
    def forward(self, x, mode="relu"):
        return torch.relu(x) if mode in {"relu", "gelu", "silu", "tanh", "elu", "selu"} else x


net = from_sequential(nn.Sequential(nn.Conv2d(1, 2, 3), Act(), nn.Flatten(), nn.Linear(72, 3)), input_shape=(1, 8, 8))
print(definition_digest(net))
'''


def test_definition_digest_is_the_same_in_every_process(tmp_path):
    # a set literal compiles to a frozenset constant, whose order follows the process's string hash seed
    import os
    import subprocess
    import sys
    script = tmp_path / "hashnet.py"
    script.write_text(NET_WITH_A_SET)
    digests = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout
               for seed in (1, 2, 3, 4)}
    assert len(digests) == 1, digests


SCRIPT = '''
import sys
BACKBONES["lam"] = lambda num_classes, in_channels=1, image_size=28: None
if sys.version_info >= (3,):
    def in_if(num_classes, in_channels=1, image_size=28):
        pass
    BACKBONES["in_if"] = in_if
    class InIf:
        pass
try:
    BACKBONES["in_try"] = in_if
except ImportError:
    pass
if __name__ == "__main__":
    BACKBONES["guarded"] = in_if
'''


def test_workers_reach_builders_and_classes_made_anywhere_at_the_scripts_top_level(tmp_path, monkeypatch):
    import sys
    import types

    from transferkit.preflight import main_only
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))

    def made(qualname, cls=False):
        obj = type(qualname, (), {}) if cls else (lambda: None)
        obj.__module__, obj.__qualname__ = "__main__", qualname
        return obj
    assert not main_only(made("<lambda>"), "lam")  # a lambda registered at the top level
    assert not main_only(made("in_if"), "in_if") and not main_only(made("in_if"), "in_try")
    assert not main_only(made("InIf", cls=True))  # a class statement in a top-level if block
    assert main_only(made("in_if"), "guarded")  # registered only in the main block
    assert main_only(made("f.<locals>.Made", cls=True))


def test_a_yaml_pairs_billion_laughs_is_refused_by_the_size_cap(tmp_path):
    from transferkit.config import load_config
    lines = ["a0: &a0 !!pairs [{k: 1}, {k: 1}, {k: 1}, {k: 1}, {k: 1}, {k: 1}, {k: 1}, {k: 1}, {k: 1}, {k: 1}]"]
    for level in range(1, 7):
        lines.append(f"a{level}: &a{level} !!pairs [" + ", ".join([f"{{k: *a{level - 1}}}"] * 10) + "]")
    lines.append("k: *a6")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TransferkitError, match=r"anchors and aliases expand to [\d,]+ values, more than 1,000,000"):
        load_config(path)


def test_a_folder_named_like_a_shipped_config_does_not_hide_it(tmp_path, monkeypatch):
    from transferkit.config import BUNDLED_CONFIGS, config_file
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert config_file("demo") == BUNDLED_CONFIGS / "demo.yaml"
    (tmp_path / "mine").mkdir()
    assert config_file("mine") == Path("mine")  # a folder of another name: load_config says it is no file


def test_a_sentence_encoder_reads_its_disk_cache_for_a_new_text_only_after_an_eviction(tmp_path, monkeypatch):
    import torch

    from transferkit import text

    class Model(torch.nn.Module):
        def encode(self, texts, batch_size, **kw):
            return torch.tensor([[1.0, float(len(t))] for t in texts])

        def get_sentence_embedding_dimension(self):
            return 2

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: Model())
    enc = text.SentenceEncoder("fake")
    reads = []
    on_disk = enc._on_disk
    monkeypatch.setattr(enc, "_on_disk", lambda: reads.append(1) or on_disk())
    enc.encode(["a"])
    enc.encode(["bb"])
    assert len(reads) == 2  # the merge before each write, not a look-up before encoding


def _make(seed=0):
    return seed


def test_a_partial_builder_is_keyed_by_its_function_and_arguments():
    from functools import partial

    from transferkit.data import builder_digest
    one = builder_digest(partial(_make, seed=1), {})
    assert one == builder_digest(partial(_make, seed=1), {})
    assert one != builder_digest(partial(_make, seed=2), {})  # other arguments: other pixels
    assert one != builder_digest(partial(len, seed=1), {})  # another function


PARTIAL_OF_A_SET = '''
from functools import partial
from transferkit.data import builder_digest


def make(classes=()):
    return classes


print(builder_digest(partial(make, classes={"cat", "dog", "emu", "fox", "gnu", "hen"}), {}))
'''


def test_a_partial_builders_key_is_the_same_in_every_process(tmp_path):
    # its arguments' text: a set of names printed in the process's string hash order gave another key
    import os
    import subprocess
    import sys
    script = tmp_path / "partial_set.py"
    script.write_text(PARTIAL_OF_A_SET)
    keys = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout for seed in (1, 2, 3, 4)}
    assert len(keys) == 1, keys
