"""Older run directories read by the session-81 code (helper h_compat): files written by commit 7609309's
code, hand-written here in their form, read as the new code's own. Each test fails on the code before its fix."""
import json

from helpers import run_cli

PLAN = {"n_way": 3, "k_shot": [1], "n_query": 5, "episodes": 20, "seed": 0, "heads": ["prototype"]}


def _episodes_file(folder, device):
    """An ``episodes.json`` of one row; ``device`` None: an older file's, whose plan and row name none."""
    plan = PLAN if device is None else {**PLAN, "device": device}
    row = {"method": "finetune/prototype", "source": "syndigits", "target": "mnist", "setting": "3-way 1-shot (k=2)",
           "seed": 0, "accuracy": 0.8, "ci95": 0.05, "episodes": 20, "n_labeled": 6, "wall_s": 0.5,
           **({} if device is None else {"device": device})}
    folder.mkdir(parents=True)
    config = {"name": "toy", "source": "syndigits", "target": "mnist", "backbone": "lenet", "methods": ["finetune"],
              "k": 2, "seed": 0, "episodes": plan}
    (folder / "episodes.json").write_text(json.dumps({"name": "toy episodes", "config": config, "rows": [row]}))
    return str(folder / "episodes.json")


def test_an_older_episodes_file_compares_as_scored_on_the_cpu(tmp_path, capsys):
    old, new = _episodes_file(tmp_path / "old", None), _episodes_file(tmp_path / "new", "cpu")
    code, out, err = run_cli(capsys, "summary", old, new)
    assert code == 0 and "finetune/prototype" in out
    assert "episodes.device" not in out + err  # both on the CPU: no config difference to name
    gpu = _episodes_file(tmp_path / "gpu", "cuda")
    code, out, err = run_cli(capsys, "summary", old, gpu)
    assert code == 0 and "differ in episodes.device: cpu in old; cuda in gpu" in out + err
