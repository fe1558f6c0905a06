"""Session 76 (h_rep): results and report leftovers: rows of an older revision of their method,
the selection note of rows without n_val_labeled, job lines sized to the longest method name, and
methods that --workers processes cannot import."""

import sys
import types

import pytest

from transferkit import experiment
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError
from transferkit.methods.base import METHODS, Method


class Sentinel(Exception):
    """Raised where a run would start loading data: the refusal must come before."""


def _main_method(name, qualname=None):
    cls = type(name.title(), (Method,), {"name": name, "streams": ("source",), "__module__": "__main__"})
    cls.__qualname__ = qualname or cls.__name__
    return cls


def test_workers_refuse_a_method_registered_only_in_main(tmp_path, monkeypatch):
    cls = _main_method("main_only_m", "f.<locals>.Main_Only_M")
    METHODS["main_only_m"] = cls
    try:
        monkeypatch.setattr(experiment, "prepare_domains", lambda *a, **k: (_ for _ in ()).throw(Sentinel()))
        cfg = ExperimentConfig(name="w", source="mnist", target="digits", methods=["main_only_m"], k=2, repeats=2,
                               workers=2, out_dir=str(tmp_path))
        with pytest.raises(TransferkitError, match=r"'main_only_m' is registered only in this script's __main__.*"
                                                   r"importable|'main_only_m'.*module they can import.*--workers 1"):
            experiment.run_experiment(cfg, log=lambda *a: None)
        with pytest.raises(Sentinel):  # one process: the method is there
            experiment.run_experiment(ExperimentConfig(**{**cfg.to_dict(), "workers": 1}), log=lambda *a: None)
    finally:
        del METHODS["main_only_m"]


def test_main_only_reads_the_script_top_level(tmp_path, monkeypatch):
    from transferkit.preflight import main_only
    script = tmp_path / "script.py"
    script.write_text("class Top:\n    pass\n\nif __name__ == '__main__':\n    class Guarded:\n        pass\n")
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    assert not main_only(_main_method("top", "Top"))
    assert main_only(_main_method("guarded", "Guarded"))
    assert not main_only(type("Guarded", (Method,), {"name": "g", "__module__": "my_methods"}))
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace())  # a notebook, python -c
    assert main_only(_main_method("top", "Top"))


def test_job_lines_keep_their_columns_for_long_method_names(tmp_path):
    from transferkit.engine import TrainConfig
    from transferkit.methods.finetune import LinearProbe

    class LongProbe(LinearProbe):
        name = "linear_probe_of_a_plugin_with_a_long_name"
    METHODS[LongProbe.name] = LongProbe
    try:
        lines = []
        cfg = ExperimentConfig(name="w", source="digits", target="digits", backbone="lenet",
                               methods=["linear_probe", LongProbe.name], k=[1, 10], repeats=1,
                               pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2),
                               out_dir=str(tmp_path))
        experiment.run_experiment(cfg, log=lines.append)
    finally:
        del METHODS[LongProbe.name]
    jobs = [line for line in lines if "accuracy" in line and " seed " in line]
    assert len(jobs) == 4 and len({line.index(" seed ") for line in jobs}) == 1, jobs
    assert all(line.split()[0] in ("linear_probe", LongProbe.name) for line in jobs)


def _row(method="finetune", seed=0, **fields):
    return {"method": method, "source": "mnist", "target": "digits", "setting": "k=2", "seed": seed,
            "accuracy": 0.5, "wall_s": 1.0, **fields}


def test_rows_without_n_val_labeled_say_their_selection_count_is_unknown():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    old = [_row(seed=s, val_accuracy=0.6, n_labeled=20) for s in (0, 1)] + [_row("dann", val_accuracy=0.4,
                                                                                n_labeled=0)]
    text = markdown_table(summarize(old), old)
    line = next((x for x in text.splitlines() if "how many unknown" in x), "")
    assert "finetune (k=2, trained on 20 labels)" in line and "dann (k=2, trained on 0 labels)" in line, text
    quiet = [_row(val_accuracy=0.6, n_labeled=20, n_val_labeled=10), _row("mine", val_accuracy=None, n_labeled=20),
             _row("src", val_accuracy=0.6, n_labeled=20, select_on="source_val")]
    assert "how many unknown" not in markdown_table(summarize(quiet), quiet)
    counted = [_row(val_accuracy=0.6, n_labeled=20, n_val_labeled=300)]
    assert "on 300 labelled target validation images" in markdown_table(summarize(counted), counted)
