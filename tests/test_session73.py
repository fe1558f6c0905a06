"""Session 73: the items the stop 72 note left, each with a test that fails on the code before it."""

import shutil

import pytest

from transferkit.bench import make_plan
from transferkit.config import ExperimentConfig
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.experiment import run_experiment

TINY_PRE = TrainConfig(steps=20, eval_every=10)
TINY = TrainConfig(steps=10, eval_every=5, batch_size=16)


@pytest.mark.parametrize("field, text", [("ks", '"[5,10]"'), ("pairs", "'[mnist:digits, digits:mnist]'")])
def test_a_list_in_quotes_is_told_the_set_forms_that_work(field, text):
    suite = "fewshot" if field == "ks" else "uda"
    with pytest.raises(TransferkitError, match=rf"{field}: got the text .*a YAML list in quotes") as caught:
        make_plan(suite, True, [f"{field}={text}"])
    for advice in str(caught.value).split("--set ")[1:]:  # each form the message gives is taken
        make_plan(suite, True, [advice.split(", or")[0].strip().strip("'")])


def test_a_damaged_pinned_copy_of_a_pretrained_file_is_told_to_copy_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    base = ExperimentConfig(name="pre", source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                            pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    first_dir, _ = run_experiment(base, log=lambda *a: None)
    shutil.copyfile(first_dir / "source.safetensors", tmp_path / "net.safetensors")
    cfg = ExperimentConfig(**{**base.__dict__, "name": "from-file", "pretrained": str(tmp_path / "net.safetensors"),
                              "methods": ["source_only", "finetune"]})
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    pinned = run_dir / "source.safetensors"
    pinned.write_bytes(b"\xff" * 64)
    (run_dir / "jobs" / "finetune-k=2-s0.json").unlink()
    with pytest.raises(TransferkitError, match=r"source.safetensors is unreadable .*: delete it and resume to copy "
                                               r"the pretrained: file .*net.safetensors again"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    pinned.unlink()
    resumed = run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1]
    assert [r["per_class_accuracy"] for r in resumed] == [r["per_class_accuracy"] for r in rows]


def test_a_resume_with_no_job_left_does_not_pay_for_torchs_lazy_imports(tmp_path, monkeypatch):
    import transferkit.experiment as experiment
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(experiment, "preload_lazy_imports", lambda: calls.append(1))
    cfg = ExperimentConfig(name="done", source="digits", target="digits", k=2, repeats=1, methods=["source_only"],
                           pretrain=TINY_PRE, train=TINY, out_dir=str(tmp_path / "runs"))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    assert calls == [1]
    assert run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)[1] == rows and calls == [1]
