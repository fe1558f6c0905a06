"""Advice a user can follow: a benchmark's selection warning, a mistyped episodes head named before any
data is read, and a benchmark plan's field errors that name the plan, not a config."""

import pytest
from helpers import run_cli

from transferkit import runtime
from transferkit.bench.demo import demo_config
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.fewshot_eval import run_episodes
from transferkit.preflight import check_jobs, check_names
from transferkit.rundata import prepare_domains
from transferkit.tables import selection_labels_line


def _selection_warnings(recwarn, cfg, data) -> list[str]:
    recwarn.clear()
    check_jobs(cfg, data, check_names(cfg))
    return [str(w.message) for w in recwarn.list if "validation split, which" in str(w.message)]


def test_inside_a_benchmark_the_selection_warning_points_to_the_table_note_not_to_keys_set_refuses(recwarn,
                                                                                                    tmp_path):
    # before: bench demo (transferkit demo) advised "set val_per_class to cap them, or select_on: none", which
    # its plan refuses to --set
    cfg = ExperimentConfig(source="digits", target="digits", k=2, repeats=1, methods=["finetune"])
    data = prepare_domains(cfg)
    runtime.note_work_dir(None)
    with runtime.holding_work_dir(tmp_path):
        inside = _selection_warnings(recwarn, cfg, data)
    outside = _selection_warnings(recwarn, cfg, data)  # transferkit run: --set works, the advice stays
    assert len(inside) == 1 and "val_per_class" not in inside[0] and "select_on: none" not in inside[0]
    assert inside[0].endswith("rows' n_labeled does not count: the benchmark's protocol selects on them, and the "
                              "note under its table says so")
    assert len(outside) == 1 and outside[0].endswith("set val_per_class to cap them, or select_on: none for a "
                                                     "fixed budget")
    # the demo's protocol does select on the whole target validation split, and its table's note says so
    demo = demo_config(quick=True)
    assert (demo.select_on, demo.val_per_class) == ("target_val", None)
    note = selection_labels_line([{"method": "finetune", "setting": "k=5", "n_labeled": 50, "n_val_labeled": 750}])
    assert note and note[0].startswith("Selected on target validation labels: finetune (k=5)")


def test_a_mistyped_episodes_head_is_named_before_the_run_s_data_is_read(tmp_path, monkeypatch, capsys):
    # before: the head was checked only when scoring, after the run's domains were read and the episodes fitted
    import transferkit.rundata as rundata
    monkeypatch.setattr(rundata, "prepare_domains", lambda *a, **k: pytest.fail("read the run's data"))
    (tmp_path / "config.yaml").write_text("source: digits\ntarget: digits\n")
    with pytest.raises(UnknownNameError, match=r"unknown few-shot head 'protoype'.*prototype"):
        run_episodes(tmp_path, heads=["protoype"], log=lambda *a: None)
    code, _, err = run_cli(capsys, "episodes", str(tmp_path), "--heads", "protoype")
    assert code == 2 and "unknown few-shot head 'protoype'" in err
    with pytest.raises(TransferkitError, match=r"got n_query=0, k_shots=\[\]$"):
        run_episodes(tmp_path, k_shots=[], n_query=0, log=lambda *a: None)


@pytest.mark.parametrize("assignment, message", [
    ("seeds=0,1", "bench flex plan seeds must be int, got the text '0,1'"),
    ("seedz=2", "unknown bench flex plan key 'seedz'"),
])
def test_a_benchmark_plan_field_s_error_names_the_plan_not_a_config(assignment, message, capsys):
    # before: "config seeds must be int ...", "unknown config key 'seedz'": a config the command has none of
    code, _, err = run_cli(capsys, "bench", "flex", "--set", assignment, "--print-plan")
    assert code == 2 and message in err and "config" not in err
    code, _, err = run_cli(capsys, "run", "--set", "seed=0,1", "--print-config")  # a config's message is kept
    assert code == 2 and "config seed must be int, got the text '0,1'" in err
