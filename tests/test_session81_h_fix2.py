"""Advice a user can follow: a benchmark's selection warning, a mistyped episodes head named before any
data is read, and a benchmark plan's field errors that name the plan, not a config."""

from transferkit import runtime
from transferkit.bench.demo import demo_config
from transferkit.config import ExperimentConfig
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
