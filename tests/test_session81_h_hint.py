"""Actionable hints: each message that tells the user what to do names flags, keys and functions that exist,
and following it literally resolves the problem."""

import ast
import dataclasses
import inspect
import re
import shlex
from pathlib import Path

import pytest
import torch

from transferkit.cli import build_parser
from transferkit.domain import Domain
from transferkit.errors import TransferkitError


def _subparser(command: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and command in a.choices)
    return action.choices[command]


def _split(counts):
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return Domain("t", torch.rand(len(labels), 1, 4, 4), labels, [f"c{i}" for i in range(len(counts))])


@pytest.mark.parametrize("counts, n_way, k_shot, n_query", [
    ([2, 8, 5], 5, 1, 15),  # fewer classes than --n-way: fewer shots alone never fit, the queries must drop too
    ([10, 8, 3], 3, 5, 15),  # the third class holds fewer images than the shots
    ([9, 9], 3, 1, 2),
])
def test_episodes_fit_hint_gives_flags_that_fit(counts, n_way, k_shot, n_query):
    from transferkit.fewshot_eval import _check_episodes_fit
    test = _split(counts)
    with pytest.raises(TransferkitError, match="e.g. --n-way") as e:
        _check_episodes_fit(test, n_way, [k_shot], n_query)
    flags = re.search(r"e\.g\. (--n-way \d+ --k-shot \d+ --n-query \d+)", str(e.value)).group(1)
    args = _subparser("episodes").parse_args(["RUN_DIR", *shlex.split(flags)])
    _check_episodes_fit(test, args.n_way, args.k_shot, args.n_query)  # followed: it fits


def test_episodes_fit_says_when_no_episode_fits():
    from transferkit.fewshot_eval import _check_episodes_fit
    with pytest.raises(TransferkitError, match="no episode fits: it needs 2 classes of at least 2 images"):
        _check_episodes_fit(_split([1, 1, 9]), 2, [1], 5)


def test_colour_shift_on_grey_tensor_names_the_python_way_to_three_channels():
    from transferkit import load_domain
    from transferkit.shifts import yuv
    with pytest.raises(TransferkitError, match=r"load_domain\(spec, channels=3\)") as e:
        yuv(torch.rand(2, 1, 8, 8))
    assert "channels" in inspect.signature(load_domain).parameters
    assert "--channels 3 for `transferkit show`" in str(e.value)
    assert _subparser("show").parse_args(["mnist", "--channels", "3"]).channels == 3
    yuv(Domain("g", torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), ["a", "b"]).to_format(channels=3).images)


def test_summary_of_the_out_folder_names_the_runs_two_levels_down_and_the_named_one_is_read(tmp_path):
    # `transferkit run --out DIR` writes DIR/NAME/<timestamp>/: summary DIR named no run to give (only runs/NAME did)
    from transferkit.results import check_run_dir
    run = tmp_path / "demo" / "20261201-101500-000001"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: demo\n")
    bench = tmp_path / "bench-demo" / "20261201-111500-000002"
    (bench / "demo" / "jobs").mkdir(parents=True)
    (bench / "plan.json").write_text("{}")
    (bench / "demo" / "config.yaml").write_text("name: demo\n")
    with pytest.raises(TransferkitError, match=r"holds runs, one directory each "
                                               r"\(demo/20261201-101500-000001, bench-demo/20261201-111500-000002\): "
                                               r"give one, e.g. ") as e:  # by timestamp, the newest last
        check_run_dir(tmp_path)
    given = str(e.value).rsplit("e.g. ", 1)[1]
    assert given == str(bench) and (tmp_path / given).is_dir()
    with pytest.raises(TransferkitError, match="is a benchmark directory that is not finished"):  # followed
        check_run_dir(given)
    with pytest.raises(TransferkitError, match="is a run that has finished no job yet"):
        check_run_dir(run)


# ---- static: the names the library's messages quote exist ---------------------------------------------------------
_PACKAGE = Path(__file__).resolve().parent.parent / "transferkit"
#: flags of other programs a message or command line names: torchrun's (cli's launcher) and git's (source_revision)
_OTHER_PROGRAMS = {"--standalone", "--nproc_per_node", "--log-dir", "--no-python", "--porcelain", "--untracked-files",
                   "--short"}
_COMMANDS = "domains|show|methods|run|bench|demo|report|episodes|summary"


def _library_strings():
    """Every string constant of the package but docstrings (f-strings' literal parts included), with its place."""
    for file in sorted(_PACKAGE.rglob("*.py")):
        tree = ast.parse(file.read_text())
        docs = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                yield f"{file.relative_to(_PACKAGE.parent)}:{node.lineno}", node.value


def _options(parser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def test_every_flag_a_message_names_is_a_flag_of_transferkit_and_of_the_command_it_is_given_with():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.choices).choices
    known = _options(parser).union(*(_options(s) for s in commands.values())) | _OTHER_PROGRAMS
    flags = [(where, flag) for where, text in _library_strings()
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text)]
    assert len(flags) >= 100  # the pattern still finds them
    assert not [f"{where}: {flag}" for where, flag in flags if flag not in known]
    pairs = [(where, command, flag) for where, text in _library_strings()
             for command, rest in re.findall(rf"transferkit ({_COMMANDS})([^`;,)]*)", text)
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)]
    assert len(pairs) >= 10  # the pattern still finds them
    assert not [f"{where}: transferkit {command} ... {flag}" for where, command, flag in pairs
                if flag not in _options(commands[command])]


def test_every_set_key_a_message_names_is_a_config_key_or_a_benchmark_plan_field():
    from transferkit.bench import load_suites
    from transferkit.config import ExperimentConfig, TrainConfig
    stages = {f.name for f in dataclasses.fields(TrainConfig)}
    keys = {f.name for f in dataclasses.fields(ExperimentConfig)}
    keys |= {f"{stage}.{k}" for stage in ("pretrain", "train") for k in stages}
    plans = {f.name for _, _, plan in load_suites().values() for f in dataclasses.fields(plan(False))}
    named = {(where, key) for where, text in _library_strings()
             for key in re.findall(r"--set ['\"]?([a-z_][\w.]*)=", text)}
    assert len(named) >= 8  # the pattern still finds them
    assert not [f"{where}: --set {key}=" for where, key in named
                if key not in keys | plans and not key.startswith("options.")]


def test_every_transferkit_name_and_extra_a_message_names_exists():
    import importlib
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    missing, found = [], 0
    for where, text in _library_strings():
        for dotted in re.findall(r"transferkit(?:\.[A-Za-z_]\w*)+", text):
            found += 1
            parts, obj = dotted.split("."), None
            for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                    break
                except ImportError:
                    continue
            for part in parts[i:]:
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"{where}: {dotted}")
    assert found >= 20 and not missing  # the pattern still finds them
    extras = tomllib.loads((_PACKAGE.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = [(where, extra) for where, text in _library_strings()
             for extra in re.findall(r"transferkit\[(\w+)\]", text)]
    assert named and not [f"{where}: transferkit[{extra}]" for where, extra in named if extra not in extras]


@pytest.mark.parametrize("error", [RuntimeError("not a zip archive"), OSError(22, "Invalid argument")])
def test_a_torn_model_file_names_the_job_file_to_delete(tmp_path, monkeypatch, error):
    # "delete its job file and resume" left the user to find which of jobs/ it is
    import json

    from transferkit import load_model
    from transferkit.config import ExperimentConfig, dump_config
    (tmp_path / "config.yaml").write_text(dump_config(ExperimentConfig(methods=["finetune"], k=2, seed=0)))
    for folder, name in (("models", "finetune-k=2-s0.pt"), ("jobs", "finetune-k=2-s0.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(json.dumps({"class_names": ["a", "b"]}))

    def torn(*args, **kwargs):
        raise error
    monkeypatch.setattr(torch, "load", torn)
    with pytest.raises(TransferkitError, match="delete its job file") as e:
        load_model(tmp_path, "finetune")
    named = Path(re.search(r"delete its job file (\S+) and resume", str(e.value)).group(1))
    assert named == tmp_path / "jobs" / "finetune-k=2-s0.json" and named.is_file()


@pytest.mark.parametrize("written", ["0..4", "0...4", "0 to 4"])
def test_a_class_range_in_another_notation_names_the_one_that_reads(written):
    from transferkit.splits import parse_classes
    domain = _split([2] * 10)
    with pytest.raises(TransferkitError, match=f"unknown class '{written}'.*a range of ids is written '0-4'") as e:
        parse_classes(written, domain)
    assert parse_classes(re.search(r"written '(.+)'$", str(e.value)).group(1), domain) == [0, 1, 2, 3, 4]


def test_an_unknown_class_name_gets_no_range_hint():
    from transferkit.splits import parse_classes
    with pytest.raises(TransferkitError, match=r"unknown class 'c11'.*\]$"):
        parse_classes("c11", _split([2] * 10))


def test_every_document_a_message_points_to_exists():
    named = {(where, doc) for where, text in _library_strings() for doc in re.findall(r"docs/\w+\.md", text)}
    assert named and not [f"{where}: {doc}" for where, doc in named if not (_PACKAGE.parent / doc).is_file()]


def test_a_resume_with_another_config_names_the_command_that_reads_the_run_s_own(tmp_path):
    from transferkit.config import ExperimentConfig, dump_config, load_config
    from transferkit.rundir import check_same_config
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(ExperimentConfig(methods=["finetune"], val_per_class=2)))
    with pytest.raises(TransferkitError, match="val_per_class: 2 there") as e:
        check_same_config(run / "config.yaml", ExperimentConfig(methods=["finetune"]))
    command = shlex.split(re.search(r"\(`(transferkit run [^`]+)` alone reads its config.yaml\)", str(e.value))[1])
    args = build_parser().parse_args(command[1:])
    assert args.config is None and args.set == [] and args.resume == str(run)
    check_same_config(run / "config.yaml", load_config(run / "config.yaml"))  # followed: the same config
    (tmp_path / "plan.json").write_text("{}")  # a benchmark's run is resumed by `transferkit bench`, not run
    with pytest.raises(TransferkitError, match=r"resume it with the same config$"):
        check_same_config(run / "config.yaml", ExperimentConfig(methods=["finetune"]))
