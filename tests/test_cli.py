"""The command line end to end, on embedded data with tiny budgets, and its errors."""

import argparse
import json
import os
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli

from transferkit import cli
from transferkit.cli import main

TINY = ["--set", "pretrain.steps=20", "--set", "pretrain.eval_every=10", "--set", "train.steps=10",
        "--set", "train.eval_every=5", "--set", "repeats=2", "--set", "k=2"]


def write_config(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_a_set_value_the_shell_split_at_a_space_is_named_with_the_quotes_it_needs(capsys):
    code, _, err = run_cli(capsys, "run", "--set", "k=[1,", "5]")
    assert code == 2 and err == ("transferkit: error: --set k=[1, was cut at a space by the shell (the rest came as "
                                 "other words): quote the whole value, e.g. --set 'k=[1, 5, 10]'\n")
    code, _, err = run_cli(capsys, "bench", "uda", "--set", "pairs=[[mnist,", "digits]]", "--print-plan")
    assert code == 2 and "--set pairs=[[mnist, was cut at a space" in err


def test_domains_lists_builtins_and_shifts(capsys):
    code, out, _ = run_cli(capsys, "domains")
    assert code == 0
    for name in ("mnist", "digits", "mnistm", "syndigits", "blur", "affine_fixed", "inversion"):
        assert name in out


def test_a_stopped_run_prints_the_command_that_goes_on_and_that_command_finishes(tmp_path, monkeypatch, capsys):
    from transferkit import experiment
    real, calls = experiment.run_job, []

    def second_job_stopped(*args):  # run_job(cfg, data, source_net, run_dir, cls, seed, source_digest)
        calls.append(args[4].name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(experiment, "run_job", second_job_stopped)
    argv = ["run", "--set", "source=digits", "--set", "target=digits", "--set", "methods=[target_only, finetune]",
            "--set", f"out_dir={tmp_path}", *TINY[:-4], "--set", "repeats=1", "--set", "k=2"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 130 and calls == ["target_only", "finetune"]
    command = err.split("go on with: ")[1].strip()
    run_dir = next(tmp_path.glob("*/*"))
    assert f"finished jobs are kept in {run_dir}" in err  # no checkpoint: the stop came as a job began
    assert shlex.split(command) == ["transferkit", *argv, "--resume", str(run_dir)]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # what a rank of --nproc 2 prints keeps the --nproc its argv lost
    assert cli._resume_hint(argparse.Namespace(resume=None), argv).endswith(f"--nproc 2 --resume {run_dir}")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    for given in (["--res", "old"], ["--resume=old"], ["--r", "old"]):  # argparse's abbreviations are replaced
        hint = cli._resume_hint(argparse.Namespace(resume="old"), ["run", *given, "c.yaml"])
        assert hint.endswith(f"go on with: transferkit run c.yaml --resume {run_dir}"), hint
    from transferkit.errors import WorkerDied
    monkeypatch.setattr(experiment, "run_job", lambda *a: (_ for _ in ()).throw(WorkerDied("a worker process died")))
    code, _, err = run_cli(capsys, *shlex.split(command)[1:])  # a killed worker: one line, as an interruption
    err = "".join(line for line in err.splitlines(keepends=True)  # (warnings reach stderr under -p no:warnings;
                  if line.startswith("transferkit:") and not line.startswith("transferkit: warning:"))  # progress too)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("transferkit: error: a worker process died; finished jobs are kept in ")
    assert err.split("go on with: ")[1].strip() == command
    monkeypatch.setattr(experiment, "run_job", second_job_stopped)
    code, out, _ = run_cli(capsys, *shlex.split(command)[1:])  # the printed command, as a shell reads it
    assert code == 0 and calls == ["target_only", "finetune", "finetune"]  # only the stopped job ran again
    monkeypatch.setattr(experiment, "run_job", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    code, _, err = run_cli(capsys, *argv[:5], "--set", "methods=[target_only]", "--set", f"out_dir={tmp_path / 'b'}",
                           *argv[9:])
    assert code == 130 and "nothing was kept in" in err and "(no job had finished): start it again" in err


def test_a_stopped_benchmark_names_its_benchmark_directory_not_the_run_its_job_was_in(tmp_path, monkeypatch, capsys):
    from transferkit import experiment
    from transferkit.bench import demo
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    real, calls = experiment.run_job, []

    def second_job_stopped(*args):
        calls.append(args[4].name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(experiment, "run_job", second_job_stopped)
    monkeypatch.setattr(demo, "demo_config", lambda quick=False: ExperimentConfig(
        name="demo", source="digits", target="digits", k=2, repeats=1, methods=["target_only", "finetune"],
        pretrain=TrainConfig(steps=20, eval_every=10), train=TrainConfig(steps=10, eval_every=5)))
    argv = ["bench", "demo", "--quick", "--out", str(tmp_path)]
    code, _, err = run_cli(capsys, *argv)
    bench_dir = next(tmp_path.glob("bench-demo-quick/*"))
    assert code == 130 and (bench_dir / "plan.json").is_file() and (bench_dir / "demo").is_dir()
    assert f"finished jobs are kept in {bench_dir};" in err, err  # not bench_dir/demo
    command = err.split("go on with: ")[1].strip()
    assert shlex.split(command) == ["transferkit", *argv, "--resume", str(bench_dir)]
    code, out, err = run_cli(capsys, *shlex.split(command)[1:])
    assert code == 0 and calls == ["target_only", "finetune", "finetune"], err
    assert (bench_dir / "results.json").is_file()


def test_a_failed_job_of_a_benchmark_names_the_benchmark_resume_not_its_inner_run(tmp_path, monkeypatch, capsys):
    from transferkit import experiment
    from transferkit.bench import demo
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    real = experiment.run_job

    def finetune_fails(*args):
        if args[4].name == "finetune":
            raise ValueError("boom")
        return real(*args)
    monkeypatch.setattr(experiment, "run_job", finetune_fails)
    monkeypatch.setattr(demo, "demo_config", lambda quick=False: ExperimentConfig(
        name="demo", source="digits", target="digits", k=2, repeats=1, methods=["target_only", "finetune"],
        pretrain=TrainConfig(steps=20, eval_every=10), train=TrainConfig(steps=10, eval_every=5)))
    code, _, err = run_cli(capsys, "bench", "demo", "--quick", "--out", str(tmp_path))
    bench_dir = next(tmp_path.glob("bench-demo-quick/*"))
    assert code == 2 and f"the same transferkit bench command with --resume {bench_dir} runs only" in err, err
    assert "transferkit run --resume" not in err


def test_methods_lists_the_four_base_methods(capsys):
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    for name in ("source_only", "target_only", "finetune", "linear_probe"):
        assert name in out
    assert "transferkit methods NAME" in out


def test_methods_describes_named_methods_with_their_options_and_defaults(capsys):
    code, out, _ = run_cli(capsys, "methods", "mcc", "multilayer_adda")
    assert code == 0
    mcc, _, adda = out.partition("\nmultilayer_adda: ")
    assert "streams: source, unlabeled" in mcc and "detach_weights: true" in mcc and "temperature: 2.5" in mcc
    assert "Minimum class confusion" in mcc  # the docstring
    # options passed on to multilayer_adv with **options are listed, its own defaults first
    assert "untied: true" in adda and "weight: 0.1" in adda and "combine: \"sum\"" in adda
    assert "untied: false" not in adda and "untied: true  (fixed by the name multilayer_adda)" in adda
    assert 'lr_schedule: "constant"  (one of "constant", "cosine", "dann", null)' in adda  # the names it takes
    code, _, err = run_cli(capsys, "methods", "mccc")
    assert code != 0 and "unknown method 'mccc'" in err


def test_method_options_follow_options_passed_on_to_parents():
    from transferkit.methods import get_method
    from transferkit.methods.base import method_options

    assert method_options(get_method("finetune")) == {}
    assert method_options(get_method("mcc")) == {"weight": 1.0, "temperature": 2.5, "entmin_weight": 0.0,
                                                 "detach_weights": True}
    adda = method_options(get_method("adda_encoder"))
    assert adda["variant"] == "encoder_only" and adda["weight"] == 1.0  # its own default, then adda's options
    assert list(method_options(get_method("multilayer_adda")))[:3] == ["untied", "lr_mult", "lr_schedule"]


def test_show_writes_png(tmp_path, capsys):
    out_png = tmp_path / "grid.png"
    code, out, _ = run_cli(capsys, "show", "digits", "--out", str(out_png), "--per-class", "3")
    assert code == 0 and out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "digits: 1797 images, 10 classes (0 178, 1 182, 2 177," in out  # the count of each class


def test_show_of_a_folder_with_one_class_says_where_the_classes_may_be(tmp_path, capsys):
    from PIL import Image
    (tmp_path / "outer" / "Photos").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / "outer" / "Photos" / f"{i}.png")
    code, out, _ = run_cli(capsys, "show", f"folder:{tmp_path / 'outer'}", "--out", str(tmp_path / "g.png"))
    assert code == 0 and "3 images, 1 class (Photos 3)" in out and "one level above the class folders" in out


def test_show_of_a_folder_of_12_bit_images_in_16_bit_files_warns_that_they_look_black(tmp_path, capsys):
    from PIL import Image

    from transferkit.errors import TransferkitWarning
    for name in ("a", "b"):
        (tmp_path / "scans" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 1000 + 1000 * i, np.uint16)).save(tmp_path / "scans" / name / f"{i}.png")
    with pytest.warns(TransferkitWarning, match=r"'.*scans' \(the 4 images drawn\): no pixel of any image is "
                                                r"brighter than 8 of 255.*12- or 10-bit images"):
        code, _, _ = run_cli(capsys, "show", f"folder:{tmp_path / 'scans'}", "--out", str(tmp_path / "g.png"))
    assert code == 0


def test_show_loads_a_colour_shift_of_a_grey_domain_in_colour_as_run_does(tmp_path, capsys):
    code, out, err = run_cli(capsys, "show", "digits+yuv", "--out", str(tmp_path / "a.png"))
    assert code == 0 and (tmp_path / "a.png").is_file(), err  # was refused, asking for --channels 3
    code, _, err = run_cli(capsys, "show", "digits+yuv", "--channels", "3", "--out", str(tmp_path / "b.png"))
    assert code == 0 and (tmp_path / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes(), err
    code, _, err = run_cli(capsys, "show", "digits+yuv", "--channels", "1", "--out", str(tmp_path / "c.png"))
    assert code == 2 and "3 channels" in err


def test_help_texts_name_defaults_and_what_a_command_writes(capsys):
    for argv, texts in ((["show", "--help"], ["(default: grid.png)", "(default: 8)", "(default: 28)"]),
                        (["run", "--help"], ["OUT_DIR/NAME/<timestamp>/", "--print-config", "example: transferkit run",
                                             "BatchNorm statistics are per process"]),
                        (["domains", "--help"], ["folder:PATH", "npz:FILE"])):
        with pytest.raises(SystemExit):
            main(argv)
        out = " ".join(capsys.readouterr().out.split())
        assert all(t in out for t in texts), (argv, out)


def test_nproc_refuses_workers_and_a_missing_gpu_before_starting_processes(capsys, monkeypatch):
    import subprocess
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("torchrun was started"))
    code, _, err = run_cli(capsys, "run", "--nproc", "2", "--workers", "2", "--set", "methods=[finetune]")
    assert code == 2 and "--workers 2 and --nproc 2 do not combine" in err, err
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "run", "--nproc", "2", "--device", "cuda", "--set", "methods=[finetune]")
        assert code == 2 and "device cuda requested but CUDA is not available" in err, err


def test_nproc_on_cuda_refuses_more_processes_than_gpus_before_starting_them(capsys, monkeypatch):
    """Seen on a one-GPU H200 (2026-12-04): --nproc 2 --device cuda started torchrun, whose rank 1
    failed and printed torchrun's traceback."""
    import subprocess

    import transferkit.runtime as runtime
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("torchrun was started"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(runtime, "deterministic_cuda", lambda: None)
    for device in ("cuda", "auto"):
        code, _, err = run_cli(capsys, "run", "--nproc", "2", "--device", device, "--set", "methods=[finetune]")
        assert code == 2 and f"--nproc 2 on device {device} needs one GPU per process, and there are 1" in err, err
    code, _, err = run_cli(capsys, "run", "--nproc", "2", "--device", "cuda:0", "--set", "methods=[finetune]")
    assert code == 2 and "device cuda:0 puts every process on one GPU" in err, err
    code, _, err = run_cli(capsys, "bench", "flex", "--quick", "--nproc", "3", "--device", "cuda")
    assert code == 2 and "--nproc 3 on device cuda needs one GPU per process" in err, err


def test_ctrl_c_under_nproc_is_told_once_by_rank_0_not_by_the_launcher_nor_other_ranks(capsys, monkeypatch):
    import transferkit.cli as cli
    import transferkit.experiment as experiment

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_relaunch_with_torchrun", interrupted)
    code, out, err = run_cli(capsys, "run", "--nproc", "2", "--set", "methods=[finetune]")
    assert code == 130 and err == "", err  # the launcher: its ranks say what was kept
    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    monkeypatch.setattr("transferkit.distributed.init_distributed", lambda *a: None)
    monkeypatch.setenv("RANK", "1")
    with warnings.catch_warnings():  # rank 1 leaves warnings to rank 0 (a filter of this process)
        code, out, err = run_cli(capsys, "run", "--set", "methods=[finetune]")
    assert code == 130 and "interrupted" not in err, err
    monkeypatch.setenv("RANK", "0")
    code, out, err = run_cli(capsys, "run", "--set", "methods=[finetune]")
    assert code == 130 and err.count("transferkit: interrupted;") == 1, err


def test_ranks_of_nproc_other_than_0_leave_the_warnings_to_rank_0(capsys, monkeypatch):
    import warnings

    from transferkit.errors import TransferkitWarning
    with warnings.catch_warnings():
        monkeypatch.setenv("RANK", "1")
        assert run_cli(capsys, "domains")[0] == 0
        assert ("ignore", None, TransferkitWarning) == warnings.filters[0][:3]


def test_the_table_a_run_prints_names_its_class_subset(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                             "methods=[target_only]", "--set", "target_classes=0-4", "--set", f"out_dir={tmp_path}",
                             *TINY[:-4], "--set", "repeats=1", "--set", "k=2")
    assert code == 0, err
    assert "Classes: target classes 0-4.\n\n| method |" in out


def test_run_end_to_end_writes_results_and_resumes(tmp_path, capsys):
    cfg = write_config(tmp_path, f"name: e2e\nsource: mnist\ntarget: digits\nout_dir: {tmp_path / 'runs'}\n"
                                 "methods: [source_only, target_only, linear_probe, finetune]\n")
    code, out, err = run_cli(capsys, "run", cfg, *TINY)
    assert code == 0, err
    results_path = out.strip().splitlines()[-1].split("results: ")[1]
    data = json.loads(open(results_path).read())
    assert data["name"] == "e2e" and data["config"]["target"] == "digits"
    rows = data["rows"]
    assert {r["method"] for r in rows} == {"source_only", "target_only", "linear_probe", "finetune"}
    assert len([r for r in rows if r["method"] == "finetune"]) == 2
    for r in rows:
        assert {"method", "source", "target", "setting", "seed", "accuracy", "wall_s"} <= set(r)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["setting"] == "k=2"
        confusion = torch.tensor(r["confusion"])  # the accuracy is the one the confusion matrix holds
        assert confusion.sum() == 450 and r["accuracy"] == pytest.approx(float(confusion.diag().sum() / 450))
    env = data["environment"]  # what the numbers depend on besides code, config and seed
    assert env["torch"] == torch.__version__ and env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert {"cpu", "mkl_cbwr", "onednn_max_cpu_isa", "threads_per_process", "portable_kernels"} <= set(env)
    run_dir = results_path.rsplit("/", 1)[0]
    assert "| finetune |" in open(f"{run_dir}/results.md").read()
    # resuming a finished run re-runs nothing and reproduces the same rows
    code, out2, err = run_cli(capsys, "run", cfg, *TINY, "--resume", run_dir)
    assert code == 0, err
    assert json.loads(open(results_path).read())["rows"] == rows
    assert not re.search(r"seed \d+: accuracy", out2)  # no job trained again
    code, out3, err = run_cli(capsys, "run", "--resume", run_dir, "--workers", "2")  # its own config.yaml
    assert code == 0 and not re.search(r"seed \d+: accuracy", out3), err
    assert "workers: 2" in open(f"{run_dir}/config.yaml").read()  # the flag wins over the file's `workers: 1`
    code, _, err = run_cli(capsys, "run", f"{run_dir}/config.yaml", "--resume", run_dir, "--workers", "1")
    assert code == 0 and "workers: 1" in open(f"{run_dir}/config.yaml").read(), err
    assert json.loads(open(results_path).read())["rows"] == rows
    code, _, err = run_cli(capsys, "bench", "demo", "--quick", "--resume", run_dir)
    assert code == 2 and "not a benchmark directory" in err
    edited = open(f"{run_dir}/config.yaml").read().replace("steps: 10", "steps: 11")
    assert edited != open(f"{run_dir}/config.yaml").read()
    open(f"{run_dir}/config.yaml", "w").write(edited)  # finished jobs of the old config are not passed off as new
    code, _, err = run_cli(capsys, "run", "--resume", run_dir)
    assert code == 2 and "was run with another configuration than" in err


@pytest.mark.parametrize("argv, message", [
    (["run", "--set", "target=nosuchdomain"], "unknown domain 'nosuchdomain'"),
    (["run", "--set", "methods=[magic]"], "unknown method 'magic'"),
    (["run", "--set", "backbone=vgg99", "--set", "source=digits", "--set", "target=digits"],
     "unknown backbone 'vgg99'"),
    (["run", "--set", "source=digits", "--set", "target=digits", "--set", "k=1000",
      "--set", "methods=[target_only]"], "k=1000 is larger than the smallest class"),
    (["run", "--set", "target=mnist+nosuchshift"], "unknown shift 'nosuchshift'"),
    (["run", "--set", "target_classes=[]", "--set", "target=digits"], "empty class subset"),
    (["run", "--set", "trian.steps=3"], "unknown config key 'trian'"),
    (["run", "--set", "train.stpes=3"], "unknown config key 'train.stpes'"),
    (["run", "--set", "sampler=balanced"], "(sampler belongs to the pretrain and train sections: write "
                                           "pretrain.sampler or train.sampler, in YAML under pretrain: / train:)"),
    (["bench", "nosuchbench"], "unknown suite 'nosuchbench'"),
    (["bench", "flex", "--set", "ratioz=3", "--print-plan"], "unknown bench flex plan key 'ratioz'"),
    (["bench", "uda", "--set", "pairs=mnist", "--print-plan"], "pairs must be source:target items"),
    (["show", "npz:/nonexistent/file.npz"], "/nonexistent/file.npz"),
    (["run", "--workers", "0"], "--workers must be >= 1"),
    (["run", "--nproc", "0"], "--nproc must be >= 1, got 0"),
    (["show", "digits", "--out", "grid.jpg"], "the sample grid is a PNG image: name it *.png"),
    (["run", "--set", "methods=[finetune"], "is not valid YAML: while parsing a flow sequence"),
    (["summary", "/nonexistent/results.json"], "does not exist"),
    (["report", "x/a", "y/a", "--out", "o"], "these repeat: ['a', 'a']"),
    (["run", "--set", "source=digits", "--set", "target=digits", "--set", "image_size=100000"],
     "of memory: use a smaller image size"),
])
def test_user_mistakes_exit_2_with_named_problem(argv, message, capsys, tmp_path):
    code, out, err = run_cli(capsys, *argv, *(["--set", f"out_dir={tmp_path}"] if argv[0] == "run" else []))
    assert code == 2
    assert message in err
    assert "reading" not in err or "unknown method" not in message, "a misspelt method is named before data is read"
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("config.yaml")), "a refused run left its run directory behind"
    assert not list(tmp_path.iterdir()) or argv[0] != "run", "a refused run left out_dir/NAME behind"
    said = [line for line in err.splitlines()  # run's first line of progress; a wait for another test process's
            if not line.startswith(("reading ", "transferkit: waiting for another process"))]  # domain build
    assert len(said) == 1, "a user mistake takes one line"


def test_a_folder_that_cannot_be_made_is_named_without_a_traceback(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the run folder would go")
    code, _, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits",
                           "--set", f"out_dir={tmp_path / 'taken'}")
    assert code == 2 and str(tmp_path / "taken") in err and "Traceback" not in err


def test_show_draws_no_more_columns_than_the_largest_class_has(tmp_path, capsys):
    code, _, err = run_cli(capsys, "show", "digits", "--out", str(tmp_path / "g.png"), "--per-class", "100000")
    assert code == 0 and (tmp_path / "g.png").stat().st_size < 5 * 2**20, err


def test_resume_refuses_a_path_that_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "file.json").write_text("{}")
    (tmp_path / "other" / "x").mkdir(parents=True)
    for path in (tmp_path / "file.json", tmp_path / "other"):
        code, _, err = run_cli(capsys, "run", "--resume", str(path))
        assert code == 2 and "not a run directory" in err and "Traceback" not in err
        # a file, or a folder holding other things: no advice that would be refused
        assert "give its config: transferkit run CONFIG --resume" not in err
    assert "a new run needs a new or empty directory" in err
    code, _, err = run_cli(capsys, "run", "--resume", str(tmp_path / "typo"))  # it started a default run there
    assert code == 2 and "no such run directory" in err and not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()  # e.g. left by a run stopped before it wrote its config: no default run there
    code, _, err = run_cli(capsys, "run", "--resume", str(tmp_path / "empty"))
    assert code == 2 and "not a run directory (no config.yaml)" in err and "transferkit run CONFIG --resume" in err


def test_config_files_and_environment_that_are_not_usable_are_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00binary")
    for path, message in ((tmp_path, "is not a file"), (tmp_path / "bin.yaml", "is not valid YAML")):
        code, _, err = run_cli(capsys, "run", str(path))
        assert code == 2 and message in err and "Traceback" not in err
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "two")
    code, _, err = run_cli(capsys, "run", "--set", "k=2")
    assert code == 2 and "TRANSFERKIT_WORKERS must be a whole number" in err


def test_summary_and_report_of_a_file_that_is_not_results(tmp_path, capsys):
    row = {"method": "m", "source": "s", "target": "t", "setting": "x", "seed": 0, "accuracy": 0.5, "wall_s": 1}
    cases = {"bad": ("{not json", "results.json is unreadable"), "list": ("[1, 2]", "not a transferkit results file"),
             "rows": ('{"rows": [{"method": "m"}]}', "rows[0] lacks source, target, setting, seed, accuracy"),
             "acc": (json.dumps({"rows": [{**row, "accuracy": "high"}]}), "rows[0] has a non-numeric accuracy"),
             "pct": (json.dumps({"rows": [{**row, "accuracy": 85.0}]}), "accuracies are fractions in [0, 1]"),
             "seed": (json.dumps({"rows": [{**row, "seed": None}, row]}), "rows[0] has seed None; seeds are whole"),
             "inf": (json.dumps({"rows": [{**row, "wall_s": float("inf")}]}), "rows[0] has a non-numeric accuracy or"),
             "good": (json.dumps({"rows": [row]}), None)}
    for name, (text, message) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
        for command in ("summary", "report"):
            arg = tmp_path / name / "results.json" if command == "summary" else tmp_path / name
            code, out, err = run_cli(capsys, command, str(arg))
            assert "Traceback" not in err
            assert (code, message is None or message in err) == (0 if message is None else 2, True), (name, err)


def test_unknown_name_errors_survive_a_worker_process():
    import pickle

    from transferkit.errors import UnknownNameError
    err = pickle.loads(pickle.dumps(UnknownNameError("unit", "conv9", ["conv1", "head"])))
    assert isinstance(err, UnknownNameError) and str(err) == "unknown unit 'conv9'; known: conv1, head"


def test_bench_print_plan_shows_the_budgets_and_a_directory_of_before_still_resumes(tmp_path, capsys):
    import yaml

    from transferkit.bench import _check_same_plan, make_plan, resumed_plan
    code, out, _ = run_cli(capsys, "demo", "--quick", "--print-plan")
    assert code == 0 and yaml.safe_load(out) == {"quick": True}  # the budget is a comment: the plan is as it was
    assert out.endswith("# budget (its steps are set by --quick, not plan fields: --set does not change them): "
                        "pre-training up to 150 steps, training up to 60 steps per job, 3 label subsets of k = 5\n")
    code, out, _ = run_cli(capsys, "bench", "fewshot", "--quick", "--print-plan")
    assert code == 0 and set(yaml.safe_load(out)) == {"quick", "ks", "repeats", "parts"}
    assert "# budget (its steps are set by --quick, not plan fields: --set does not change them): pre-training up " \
           "to 200 steps, training 30 steps per label subset, 2 label subsets per k\n" in out
    code, out, _ = run_cli(capsys, "bench", "zeroshot", "--quick", "--print-plan")
    assert code == 0 and "\n# budget: up to 150 training steps per job" in out
    for name, stored in (("demo", {"quick": True}), ("fewshot", {"quick": True, "ks": [2, 5], "repeats": 2,
                                                                 "parts": ["main", "grouped", "tsne"]})):
        old = tmp_path / name  # plan.json as this version's predecessors wrote it
        old.mkdir()
        (old / "plan.json").write_text(json.dumps({"benchmark": name, **stored}))
        _check_same_plan(old, resumed_plan(name, False, [], old), name)
        assert resumed_plan(name, False, [], old) == make_plan(name, True)
    more = resumed_plan("fewshot", False, ["repeats=5"], tmp_path / "fewshot")  # more label subsets (a trial:
    _check_same_plan(tmp_path / "fewshot", more, "fewshot")  # refused, as if a budget had changed)
    assert more.repeats == 5
    from transferkit.bench.fewshot import FewshotPlan
    from transferkit.errors import TransferkitError
    assert FewshotPlan(ks=[1], parts=["grouped", "ablation"]).ks == [1]  # no matching_ft there
    with pytest.raises(TransferkitError, match=r"ks must be >= 2 where the parts main or second run matching_ft"):
        FewshotPlan(ks=[1, 2], parts=["grouped", "main"])


def test_bench_print_plan_shows_the_overridden_plan(capsys):
    code, out, _ = run_cli(capsys, "bench", "uda", "--quick", "--set", "seeds=0,1", "--print-plan")
    assert code == 0
    assert "quick: true" in out and "seeds:\n- 0\n- 1\n" in out and "pretrain_steps: 200" in out


def test_bench_cli_runs_a_tiny_plan_records_it_and_resumes(tmp_path, capsys, one_thread):
    bench_dir = tmp_path / "flex"
    bench_dir.mkdir()  # an empty directory named for it: a new benchmark starts there
    argv = ["bench", "flex", "--resume", str(bench_dir), "--set", "targets=mnist+blur", "--set", "ratios=3",
            "--set", "seeds_ratio3=1", "--set", "pretrain.steps=20", "--set", "train.steps=4",
            "--set", "train.eval_every=2"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    result = json.loads((bench_dir / "results.json").read_text())
    plan = result["config"]["plan"]
    assert plan["ratios"] == [3] and plan["targets"] == ["mnist+blur"] and plan["train"]["steps"] == 4
    assert sorted(r["method"] for r in result["rows"]) == sorted(
        ["flex", "fast_flex", "faster_flex", "ft_fc1", "ft_fc2", "ft_ss", "ft_all", "linear_probe"])
    assert all(r["steps"] <= 4 for r in result["rows"] if r["method"] in ("ft_fc1", "ft_all"))
    jobs = sorted((bench_dir / "jobs").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in jobs]
    code, out, _ = run_cli(capsys, *argv)  # every job is read back, none is run again
    assert code == 0 and [p.stat().st_mtime_ns for p in jobs] == stamps
    assert json.loads((bench_dir / "results.json").read_text())["rows"] == result["rows"]
    budgets = [a for a in argv[4:] if a.startswith(("pretrain.", "train."))]
    code, out, err = run_cli(capsys, "bench", "flex", "--resume", str(bench_dir),
                             *[x for b in budgets for x in ("--set", b)])  # no selection given: the directory's
    assert code == 0 and [p.stat().st_mtime_ns for p in jobs] == stamps, err  # not every default target and ratio
    assert json.loads((bench_dir / "results.json").read_text())["config"]["plan"]["targets"] == ["mnist+blur"]
    code, out, err = run_cli(capsys, "bench", "flex", "--resume", str(bench_dir))  # the stored plan, budgets too
    assert code == 0 and [p.stat().st_mtime_ns for p in jobs] == stamps, err
    assert "benchmark directory: " + str(bench_dir) in err  # progress: on stderr
    ft_fc1 = next(p for p in jobs if "ft_fc1" in p.name)
    ft_fc1.unlink()  # an interrupted run: one job left to train under the stored budgets
    code, out, err = run_cli(capsys, "bench", "flex", "--resume", str(bench_dir))
    assert code == 0, err
    assert json.loads(ft_fc1.read_text())["steps"] <= 4  # train.steps=4 of the stored plan, not the default 300


def test_a_refused_second_bench_process_changes_nothing_and_a_failed_new_one_leaves_nothing(tmp_path, capsys):
    import dataclasses

    from transferkit.bench import make_plan
    from transferkit.io import directory_lock, write_json
    bench_dir = tmp_path / "b"
    write_json(bench_dir / "plan.json", {"benchmark": "flex", **dataclasses.asdict(make_plan("flex", True))})
    before = (bench_dir / "plan.json").read_text()
    with directory_lock(bench_dir):  # another process works there
        code, _, err = run_cli(capsys, "bench", "flex", "--quick", "--resume", str(bench_dir),
                               "--set", "targets=mnist+blur")
    assert code == 2 and "in use by another transferkit process" in err
    assert (bench_dir / "plan.json").read_text() == before and not (bench_dir / "kernels.json").exists()
    with directory_lock(bench_dir):  # summary of a directory being worked in: not the resume that would be refused
        code, _, err = run_cli(capsys, "summary", str(bench_dir))
    assert code == 2 and f"{bench_dir} is not finished: a transferkit process (pid {os.getpid()}) is working in it " \
                         f"now and writes the results when it ends" in err, err
    code, _, err = run_cli(capsys, "summary", str(bench_dir))
    assert code == 2 and "is a benchmark directory that is not finished" in err and "--resume" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with directory_lock(empty):  # another process took a new directory first: nothing of it is removed
        code, _, err = run_cli(capsys, "bench", "flex", "--quick", "--resume", str(empty))
        assert code == 2 and "in use by another transferkit process" in err
        assert [p.name for p in empty.iterdir()] == [".lock"]
    for i, mine in enumerate(("notes.txt", "data", ".notes.tmp", "kernels.json")):  # the user's: never written
        other = tmp_path / f"mine{i}"
        other.mkdir()
        if mine == "data":
            (other / mine).mkdir()  # an empty folder of theirs
        else:
            (other / mine).write_text("mine")
        for plan in ((), ("--print-plan",)):  # --print-plan printed the default plan for such a folder
            code, _, err = run_cli(capsys, "bench", "flex", "--quick", "--resume", str(other), *plan)
            assert code == 2 and "not a benchmark directory (neither plan.json nor results.json) and not empty" in err
        assert [p.name for p in other.iterdir()] == [mine]
    new = tmp_path / "out" / "new"
    new.mkdir(parents=True)
    code, _, err = run_cli(capsys, "bench", "uda", "--quick", "--resume", str(new), "--set", "seeds=99999999999")
    assert code == 2 and not any(new.iterdir())  # failed before any work: nothing to resume or report
    code, _, err = run_cli(capsys, "bench", "uda", "--quick", "--out", str(tmp_path / "out2"),
                           "--set", "seeds=99999999999")
    assert code == 2 and not (tmp_path / "out2" / "bench-uda-quick").exists()


def test_print_plan_of_a_resume_refuses_what_the_resume_refuses(tmp_path, capsys):
    """--print-plan --resume DIR printed a plan for a `transferkit run` directory, or another
    benchmark's, which the resume itself refuses."""
    import dataclasses
    import json

    from transferkit.bench import PLAN_OWNER, make_plan
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("methods: [finetune]\n")
    (run_dir / "results.json").write_text(json.dumps({"config": {"methods": ["finetune"]}}))
    uda_dir = tmp_path / "uda"
    uda_dir.mkdir()
    plan = json.loads(json.dumps(dataclasses.asdict(make_plan("uda", True))))
    (uda_dir / "plan.json").write_text(json.dumps({**plan, PLAN_OWNER: "uda"}))
    for folder, message in ((run_dir, "holds results but no benchmark plan"),
                            (uda_dir, "holds a run of the uda benchmark, not of flex")):
        for printed in ((), ("--print-plan",)):
            code, out, err = run_cli(capsys, "bench", "flex", "--quick", "--resume", str(folder), *printed)
            assert code == 2 and message in err and not out.strip(), (printed, err)
    code, out, _ = run_cli(capsys, "bench", "uda", "--quick", "--resume", str(uda_dir), "--print-plan")
    assert code == 0 and "pairs" in out


def test_bench_resume_refuses_a_missing_directory(tmp_path, capsys, monkeypatch):
    import transferkit.bench as bench
    import transferkit.cli as cli
    monkeypatch.setattr(cli, "_relaunch_with_torchrun", lambda *a: pytest.fail("relaunched"))
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("a new benchmark started"))
    typo = tmp_path / "nosuch"
    for argv in (["bench", "flex"], ["bench", "flex", "--print-plan"], ["demo", "--quick"],
                 ["bench", "flex", "--nproc", "2"], ["demo", "--quick", "--nproc", "2"]):
        code, out, err = run_cli(capsys, *argv, "--resume", str(typo))
        assert code == 2 and f"--resume {typo}: no such benchmark directory" in err, err
        assert "leave out --resume" in err and "--out" in err and "benchmark flex" not in out
    assert not typo.exists()


def test_nproc_checks_the_command_before_starting_processes_and_a_bad_worker_count_is_named(capsys, monkeypatch,
                                                                                          tmp_path):
    import transferkit.cli as cli
    monkeypatch.setattr(cli, "_relaunch_with_torchrun", lambda *a: pytest.fail("relaunched"))
    code, _, err = run_cli(capsys, "run", "--nproc", "2", "--set", "nosuch=1")
    assert code == 2 and err.count("transferkit: error:") == 1 and "nosuch" in err
    for name, message in (("methods=[dan]", "unknown method 'dan'"), ("target=mnistx", "unknown domain 'mnistx'"),
                          ("backbone=lenett", "unknown backbone 'lenett'"),
                          ("options.finetune.weigth=1", "weigth")):  # names, checked before the processes
        code, _, err = run_cli(capsys, "run", "--nproc", "2", "--set", name)
        assert code == 2 and err.count("transferkit: error:") == 1 and message in err, err
    code, _, err = run_cli(capsys, "bench", "nosuch", "--nproc", "2")
    assert code == 2 and "unknown suite 'nosuch'" in err
    code, out, _ = run_cli(capsys, "bench", "list", "--nproc", "2")
    assert code == 0 and out.count("flex ") == 1
    monkeypatch.setenv("TRANSFERKIT_WORKERS", "abc")
    code, _, err = run_cli(capsys, "bench", "flex", "--quick", "--resume", str(tmp_path))  # empty: a new benchmark
    assert not any(tmp_path.iterdir())
    assert code == 2 and "environment variable TRANSFERKIT_WORKERS must be a whole number >= 1, got 'abc'" in err


def test_a_yaml_key_given_twice_is_named(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("k: 5\ntrain: {steps: 3}\nk: 6\n")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "c.yaml"))
    assert code == 2 and "key k given twice in one mapping" in err and "line 1" in err
    (tmp_path / "m.yaml").write_text("pretrain: &b {steps: 20, batch_size: 8}\ntrain:\n  <<: *b\n  steps: 5\n")
    from transferkit.config import load_config
    cfg = load_config(tmp_path / "m.yaml")  # a merge key's values may be overridden
    assert (cfg.train.steps, cfg.train.batch_size) == (5, 8)


def test_bad_yaml_key_in_file(tmp_path, capsys):
    cfg = write_config(tmp_path, "name: x\nsorce: mnist\n")
    code, _, err = run_cli(capsys, "run", cfg)
    assert code == 2 and "unknown config key 'sorce'" in err


def test_labels_out_of_range_and_mismatched_shapes(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, -1, 0]))
    code, _, err = run_cli(capsys, "show", f"npz:{bad}")
    assert code == 2 and "label" in err
    short = tmp_path / "short.npz"
    np.savez(short, x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 1]))
    code, _, err = run_cli(capsys, "show", f"npz:{short}")
    assert code == 2 and ("4" in err and "3" in err)


def test_unreadable_image_file(tmp_path, capsys):
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / c / "ok.png")
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"not a png at all")
    code, _, err = run_cli(capsys, "show", f"folder:{tmp_path / 'imgs'}")
    assert code == 2 and "broken.png" in err


def test_a_method_from_outside_the_package_runs_from_the_cli(tmp_path, capsys, monkeypatch):
    (tmp_path / "outside_methods.py").write_text(
        "import torch.nn.functional as F\n"
        "from transferkit.methods.base import Method, register\n\n\n"
        "@register\nclass Outside(Method):\n    name = 'outside_ce'\n    description = 'plugin'\n\n"
        "    def trainable_units(self):\n        return self.net.unit_names\n\n"
        "    def losses(self, batch):\n        x, y = batch.target\n"
        "        return {'ce': F.cross_entropy(self.forward_from_input(x), y)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "outside_methods")
    code, out, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                             "methods=[outside_ce]", "--set", f"out_dir={tmp_path / 'runs'}", *TINY)
    assert code == 0 and "| outside_ce |" in out, err
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "no_such_module_here")
    code, _, err = run_cli(capsys, "run", "--set", "methods=[not_registered]")
    assert code == 2 and "TRANSFERKIT_PLUGINS names module 'no_such_module_here'" in err


def test_a_backbone_from_outside_the_package_runs_with_built_in_methods(tmp_path, capsys, monkeypatch):
    (tmp_path / "outside_backbones.py").write_text(
        "from transferkit.backbones import BACKBONES, lenet\n\n"
        "BACKBONES['my_lenet'] = lenet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("transferkit.backbones.BACKBONES", dict(__import__("transferkit").backbones.BACKBONES))
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "outside_backbones")
    code, out, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                             "methods=[finetune]", "--set", "backbone=my_lenet", "--set",
                             f"out_dir={tmp_path / 'runs'}", *TINY)
    assert code == 0 and "| finetune |" in out, err  # was: unknown backbone (plugins loaded for methods only)


def test_methods_a_config_cannot_feed_say_what_they_need(tmp_path, capsys):
    for method, message in (("clip", "one caption per source class"), ("distill", "a config cannot give them"),
                            ("cat_two_stage", "a config cannot give one")):
        code, _, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                               f"methods=[{method}]", "--set", f"out_dir={tmp_path}", *TINY)
        assert code == 2 and message in err and "Traceback" not in err, (method, err)


def test_a_closed_pipe_is_not_an_error(tmp_path):
    import subprocess
    import sys
    rows = [{"method": f"m{i}", "source": "s", "target": "t", "setting": "x", "seed": 0, "accuracy": 0.5,
             "wall_s": 1} for i in range(3000)]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as usual
    commands = [f"{sys.executable} -m transferkit.cli"]
    script = Path(sys.executable).parent / "transferkit"  # the console script, where it is installed beside
    if script.exists():
        commands.append(str(script))
    for command in commands:
        p = subprocess.run(["bash", "-c", f"{command} summary {tmp_path} | head -1; exit ${{PIPESTATUS[0]}}"],
                           capture_output=True, text=True, env=buffered)
        assert "Broken pipe" not in p.stderr and "Traceback" not in p.stderr, (command, p.stderr)
        assert p.returncode == 141 and len(p.stdout.splitlines()) == 1, (command, p.returncode, p.stdout[:200])
    # output still buffered when the pipe closes: the entry point's last flush must not fail
    child = ("import sys\nfrom transferkit import cli\ndef closed(args):\n    print('a table')\n"
             "    raise BrokenPipeError\ncli._summary = closed\nsys.argv = ['transferkit', 'summary', 'x']\n"
             "cli.entry()\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the child writes: every write fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-c", child], stdout=write_end, stderr=subprocess.PIPE, text=True,
                           env=buffered)
    finally:
        os.close(write_end)
    assert p.returncode == 141 and p.stderr == "", p.stderr


def test_every_bench_and_demo_option_has_help_and_out_names_the_folder_layout():
    from transferkit.cli import build_parser
    subparsers = next(a for a in build_parser()._actions if a.choices and "bench" in a.choices).choices
    for name in ("bench", "demo"):
        actions = {a.dest: a for a in subparsers[name]._actions if a.option_strings}
        assert [dest for dest, a in actions.items() if not a.help] == [], name
        assert "OUT/bench-NAME[-quick]/<timestamp>/" in actions["out"].help


def test_python_dash_m_transferkit_is_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "transferkit", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage: transferkit" in out.stdout, out.stderr


def test_a_refused_config_prints_one_line_and_transferkit_warnings_print_as_one_line(tmp_path):
    import subprocess
    import sys
    import warnings

    from transferkit import cli
    env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "transferkit.cli", "run", "--set", "source=digits", "--set",
                        "target=digits", "--set", "methods=[dann]", "--set", "options.dann.weight=-1", "--set",
                        f"out_dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr  # the select_on warning came first, 3 lines
    assert p.stderr.startswith("transferkit: error: method dann with options {'weight': -1}")
    from transferkit.errors import TransferkitWarning
    from transferkit.runtime import one_line_warnings
    default = one_line_warnings()
    try:
        ours = warnings.formatwarning(TransferkitWarning("no target label"), TransferkitWarning, cli.__file__, 1)
        theirs = warnings.formatwarning(UserWarning("copy construct"), UserWarning, cli.__file__, 7, "x")
    finally:
        warnings.formatwarning = default
    assert ours == "transferkit: warning: no target label\n"
    assert "cli.py:7: UserWarning: copy construct" in theirs  # torch's, raised from a transferkit line


def test_a_run_on_imbalanced_classes_records_and_tabulates_balanced_accuracy(tmp_path, capsys):
    g = np.random.default_rng(0)
    x = g.integers(0, 120, (72, 28, 28), dtype=np.uint8)
    y = np.array([0] * 60 + [1] * 12)  # 5 times more images of class 0
    x[y == 1, 8:20, 8:20] = 250
    np.savez(tmp_path / "scans.npz", x=x, y=y)
    code, out, err = run_cli(capsys, "run", "--set", f"source=npz:{tmp_path / 'scans.npz'}", "--set",
                             f"target=npz:{tmp_path / 'scans.npz'}", "--set", "methods=[target_only]", *TINY,
                             "--set", "select_on=none", "--set", f"out_dir={tmp_path}")
    assert code == 0, err
    results = json.loads(next(tmp_path.glob("*/*/results.json")).read_text())
    assert len(results["rows"]) == 2  # repeats=2
    for row in results["rows"]:
        recalls = [c[i] / sum(c) for i, c in enumerate(row["confusion"])]
        assert [sum(c) for c in row["confusion"]] == [15, 3]  # the test split keeps the imbalance
        assert row["balanced_accuracy"] == pytest.approx(sum(recalls) / 2)
        assert row["per_class_accuracy"] == [round(r, 6) for r in recalls]
    assert "| target accuracy (%) | balanced accuracy (%) | n | wall s |" in out
    assert "the test images per class differ by up to 5.0x" in out


def test_worker_processes_do_not_repeat_the_data_warnings_of_the_run(tmp_path):
    import subprocess
    import sys
    masks = np.zeros((40, 28, 28), np.uint8)
    masks[:, 10:18, 10:18] = 1  # 0/1 masks: the 'almost black' warning
    np.savez(tmp_path / "m.npz", x=masks, y=np.arange(40) % 2)
    env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "transferkit.cli", "run", "--workers", "2", "--set",
                        f"source=npz:{tmp_path / 'm.npz'}", "--set", f"target=npz:{tmp_path / 'm.npz'}", "--set",
                        "methods=[target_only]", "--set", "repeats=2", "--set", "k=2", "--set", "train.steps=2",
                        "--set", "pretrain.steps=2", "--set", "select_on=none", "--set", f"out_dir={tmp_path}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("almost black") == 1, p.stderr  # once (one file for both sides), by the main process
    assert "transferkit: warning: npz file" in p.stderr and "UserWarning" not in p.stderr


FAILING_PLUGIN = ("import torch.nn.functional as F\n"
                  "from transferkit.methods.base import Method, register\n\n\n"
                  "@register\nclass Boom(Method):\n    name = 'boom_after'\n    calls = 0\n\n"
                  "    def trainable_units(self):\n        return self.net.unit_names\n\n"
                  "    def losses(self, batch):\n        Boom.calls += 1\n"
                  "        if Boom.calls > 3:\n            raise ValueError('boom after 3 steps')\n"
                  "        x, y = batch.target\n"
                  "        return {'ce': F.cross_entropy(self.forward_from_input(x), y)}\n")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_job_that_raises_is_named_and_the_other_jobs_still_run(tmp_path, capsys, monkeypatch, workers, plugin):
    plugin("failing_methods", FAILING_PLUGIN)  # forgotten afterwards: later tests iterate over every method
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # worker processes import the plugin too
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "failing_methods")
    code, out, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                             "methods=[target_only,boom_after,finetune]", "--set", f"out_dir={tmp_path / 'runs'}",
                             "--workers", workers, *TINY[:-4], "--set", "k=2", "--set", "repeats=1")
    (run_dir,) = (tmp_path / "runs" / "experiment").iterdir()
    assert code == 2 and "job boom_after seed 0 failed: ValueError: boom after 3 steps" in err, (out, err)
    assert "failed: ValueError" not in out  # an error, on stderr: not mixed into the table's stream
    assert "1 of 3 job(s) failed: boom_after seed 0 (ValueError: boom after 3 steps)" in err
    assert f"--resume {run_dir} --set 'methods=[target_only,finetune]'" in err and "Traceback" not in err
    assert "| finetune |" in out  # the finished rows' table
    assert "Traceback" in (run_dir / "failed" / "boom_after-k=2-s0.txt").read_text()
    data = json.loads((run_dir / "results.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["target_only", "finetune"]
    assert data["failed"][0]["job"] == "boom_after seed 0"
    code, out, err = run_cli(capsys, "summary", str(run_dir))  # the table, and the failed jobs named: exit 2
    assert code == 2 and "| finetune |" in out and "boom_after" not in out, (out, err)
    assert "1 job(s) of this run or benchmark failed: job boom_after seed 0: ValueError" in err, err
    code, _, err = run_cli(capsys, "report", str(run_dir))
    assert code == 2 and "the report shows the finished rows only; 1 job(s) failed: job boom_after seed 0" in err, err
    code, out, err = run_cli(capsys, "run", "--resume", str(run_dir), "--set", "methods=[target_only,finetune]")
    assert code == 0 and "| finetune |" in out, err
    assert run_cli(capsys, "summary", str(run_dir / "results.json"))[0] == 0
    code, _, err = run_cli(capsys, "report", str(run_dir))
    assert code == 0, err


def test_summary_of_a_results_file_without_rows_says_so(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"rows": [], "failed": [{"job": "boom seed 0"}]}))
    code, out, err = run_cli(capsys, "summary", str(tmp_path))
    assert code == 2 and "has no rows: no job of that run or benchmark finished; 1 job(s) failed" in err and not out
    code, out, err = run_cli(capsys, "report", str(tmp_path))  # written, then exit 2 as summary
    assert code == 2 and "no job finished: the report has no table; 1 job(s) failed: job boom seed 0" in err, err
    assert (tmp_path / "report.html").is_file()


def test_run_print_config_prints_the_resolved_yaml_and_runs_nothing(tmp_path, capsys):
    import yaml
    path = write_config(tmp_path, "methods: [dann]\noptions: {dann: {lr_schedule: dann}}\n")
    code, out, err = run_cli(capsys, "run", path, "--set", "options.dann.lr_schedule=null", "--set", "k=7",
                             "--set", f"out_dir={tmp_path / 'runs'}", "--workers", "2", "--print-config")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["options"] == {"dann": {"lr_schedule": None}} and printed["k"] == 7 and printed["workers"] == 2
    assert not (tmp_path / "runs").exists()
    code, out, err = run_cli(capsys, "run", path, "--set", "options.dann.wieght=1", "--print-config")
    assert code == 2 and "wieght" in err and not out


def test_run_on_a_device_that_is_not_there_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                             f"out_dir={tmp_path / 'runs'}", "--device", "cuda", *TINY)
    assert code == 2 and "device cuda requested but CUDA is not available" in err and "use --device cpu" in err
    assert "run directory" not in err and not (tmp_path / "runs").exists(), err


def test_a_cache_that_cannot_be_made_names_the_variable(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "file" / "cache"))  # below a file: cannot be made
    code, _, err = run_cli(capsys, "run", "--set", "source=digits", "--set", "target=digits", "--set",
                           "methods=[finetune]", "--set", f"out_dir={tmp_path / 'runs'}", *TINY[:-4], "--set",
                           "repeats=1")
    assert code == 2 and f"TRANSFERKIT_CACHE={tmp_path / 'file' / 'cache'}; set TRANSFERKIT_CACHE to a directory" in err


def test_summary_on_an_ascii_terminal_replaces_what_it_cannot_write(tmp_path):
    import subprocess
    import sys
    rows = [{"method": "finetune", "source": "digits", "target": "digits", "setting": "k=2", "seed": s,
             "accuracy": a, "wall_s": 1.0} for s, a in ((0, 0.5), (1, 0.7))]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "transferkit", "summary", str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0 and "UnicodeEncodeError" not in p.stderr, p.stderr
    assert "| finetune |" in p.stdout and "?" in p.stdout


def test_version_and_help_name_cuda_n_and_the_summary_argument(capsys):
    from transferkit import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"transferkit {__version__}")
    for command, text in (("run", "cuda:N"), ("summary", "a results.json, or a run or benchmark directory")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert text in " ".join(capsys.readouterr().out.split())


def test_show_of_a_plain_folder_decodes_only_the_images_it_draws(tmp_path, capsys, monkeypatch):
    from PIL import Image

    import transferkit.userdata as ud
    from transferkit.data import load_domain
    from transferkit.plots import sample_grid
    rng = np.random.default_rng(0)
    for c, n in (("a", 10), ("b", 7), ("c", 2)):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    spec = f"folder:{tmp_path / 'f'}"
    sample_grid(load_domain(spec, size=28, seed=3), tmp_path / "whole.png", per_class=3, seed=3)
    decoded, decode = [], ud._decode_image
    monkeypatch.setattr(ud, "_decode_image", lambda path, *a: decoded.append(path) or decode(path, *a))
    code, out, err = run_cli(capsys, "show", spec, "--out", str(tmp_path / "g.png"), "--per-class", "3",
                             "--seed", "3")
    assert code == 0 and len(decoded) == 3 + 3 + 2, err
    assert f"{spec}: 19 images, 3 classes (a 10, b 7, c 2) -> " in out
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "whole.png").read_bytes()  # the same grid
    decoded.clear()
    code, _, err = run_cli(capsys, "show", f"{spec}+blur", "--out", str(tmp_path / "s.png"), "--per-class", "3")
    assert code == 0 and len(decoded) == 19, err  # a shift: the whole folder, as `run` reads it


def test_run_says_what_it_reads_before_it_decodes_the_data(tmp_path, capsys):
    path = write_config(tmp_path, "source: digits\ntarget: digits\nmethods: [target_only]\nk: 500\n")
    code, out, err = run_cli(capsys, "run", path, "--set", f"out_dir={tmp_path / 'runs'}")
    assert code == 2 and "k=500 is larger than the smallest class: 10 target class(es)" in err
    assert err.splitlines()[0] == "reading source digits and target digits ..."  # the first line, before the data


def _run_with_data(run_dir, target, digests, rows=None, **config):
    """A finished run directory as experiment writes one: results.json, config.yaml and data.json."""
    from transferkit.results import write_results
    row = {"method": "dann", "source": "digits", "target": target, "setting": "k=5", "seed": 0, "accuracy": 0.8,
           "wall_s": 1.0}
    write_results(run_dir, "trial", {}, rows or [row])
    (run_dir / "config.yaml").write_text(json.dumps({"source": "digits", "target": target, "image_size": 28,
                                                     "seed": 0, **config}))
    (run_dir / "data.json").write_text(json.dumps({"format": 2, "source.train": "s1", "source.val": "s2",
                                                   "source.test": "s3", **digests}))


def test_summary_warns_when_two_runs_read_one_domain_spec_into_other_data(tmp_path, capsys):
    from transferkit.errors import TransferkitWarning
    same = {"target.train": "t1", "target.val": "t2", "target.test": "t3"}
    _run_with_data(tmp_path / "a", "npz:thickflip.npz", same)
    _run_with_data(tmp_path / "b", "npz:thickflip.npz", {**same, "target.train": "x1", "target.test": "x3"})
    line = ("The target npz:thickflip.npz is not the same data in run a as in run b (target.test, target.train "
            "differ in their data.json): their rows are not on the same data; a relative path is read from the "
            "directory each run started in.")
    with pytest.warns(TransferkitWarning) as caught:
        assert main(["summary", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert [str(w.message) for w in caught] == [line]
    assert line in capsys.readouterr().out  # a line under the table too
    bench = tmp_path / "bench"  # a benchmark keeps one data.json per run below it
    _run_with_data(bench / "digits-thick" / "s0", "npz:thickflip.npz", same)
    from transferkit.results import write_results
    write_results(bench, "bench", {}, read_rows(tmp_path / "a"))
    with pytest.warns(TransferkitWarning, match=r"not the same data in runs a, bench as in run b \(target.test, "):
        main(["summary", str(tmp_path / "a"), str(tmp_path / "b"), str(bench)])
    capsys.readouterr()
    quiet = [["summary", str(tmp_path / "a"), str(bench)]]  # the same digests
    _run_with_data(tmp_path / "c", "npz:thickflip.npz", {**same, "target.train": "y1"}, target_classes=[0, 1])
    quiet.append(["summary", str(tmp_path / "a"), str(tmp_path / "c")])  # another class subset: other data, said so
    _run_with_data(tmp_path / "d", "npz:thickflip.npz", {**same, "target.train": "y1"})
    (tmp_path / "d" / "data.json").unlink()  # a run from before data.json: nothing to compare
    quiet.append(["summary", str(tmp_path / "a"), str(tmp_path / "d")])
    _run_with_data(tmp_path / "e", "digits+noise", same)
    _run_with_data(tmp_path / "f", "digits+noise", {**same, "target.val": "z2"}, seed=1)
    quiet.append(["summary", str(tmp_path / "e"), str(tmp_path / "f")])  # a shift draws other noise per seed
    _run_with_data(tmp_path / "g", "digits+noise", {**same, "target.val": "z2"})
    with pytest.warns(TransferkitWarning, match=r"^The target digits\+noise is not the same data in run e as in run "
                                                r"g \(target.val differ in their data.json\): their rows are not on "
                                                r"the same data\.$"):  # no path: no word on working directories
        main(["summary", str(tmp_path / "e"), str(tmp_path / "g")])
    _run_with_data(tmp_path / "h", "npz:thickflip.npz", {**same, "target.train": "x1"}, val_fraction=0.15,
                   test_fraction=0.25)  # a run of today, which writes the split fractions, beside an older one
    with pytest.warns(TransferkitWarning, match=r"not the same data in run a as in run h \(target.train differ"):
        main(["summary", str(tmp_path / "a"), str(tmp_path / "h")])
    capsys.readouterr()
    for argv in quiet:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(argv) == 0
        assert not [w for w in caught if "not the same data" in str(w.message)], argv
        assert "not the same data" not in capsys.readouterr().out


def read_rows(run_dir):
    return json.loads((run_dir / "results.json").read_text())["rows"]
