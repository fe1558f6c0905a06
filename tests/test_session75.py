"""Session 75: fixes found by this session's audits and leftovers, each with a test that fails on the
code before it."""

from __future__ import annotations

import dataclasses
import json

from transferkit import compare
from transferkit.bench import make_plan


def _plan_config(name: str, quick: bool = True, **changes) -> dict:
    plan = json.loads(json.dumps(dataclasses.asdict(make_plan(name, quick))))
    return {"benchmark": name, "quick": quick, "plan": {**plan, **changes}}


def test_benchmark_runs_side_by_side_do_not_differ_in_fields_added_since_or_in_what_only_chooses_jobs():
    old = _plan_config("uda")
    del old["plan"]["skada"], old["plan"]["methods"]  # a uda directory of before both were plan fields
    new = _plan_config("uda", seeds=[0, 1, 2], pairs=[["mnist", "digits"]])  # other jobs: the rows name them
    assert compare.config_differ_lines([("old", old), ("new", new)]) == []
    flex_old = _plan_config("flex")
    for section in ("pretrain", "train"):
        del flex_old["plan"][section]["sampler"]  # a stage field added since: at its default
    assert compare.config_differ_lines([("old", flex_old), ("new", _plan_config("flex"))]) == []
    (line,) = compare.config_differ_lines([("old", old), ("new", _plan_config("uda", adapt_steps=60))])
    assert line.startswith("The runs' configs differ in plan.adapt_steps: 50 in old; 60 in new (results.json's")


def test_progress_bars_show_by_default_in_a_jupyter_kernel_whose_stderr_is_no_terminal(monkeypatch):
    import io as stdio
    import sys
    import types

    from helpers import toy_domain
    from test_engine_mutation import custom

    from transferkit.engine import Engine, TrainConfig
    from transferkit.io import shows_progress
    from transferkit.methods.tap import _fit_pairs

    monkeypatch.setattr(sys, "stderr", stdio.StringIO())
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not shows_progress() and _fit_pairs(["unit1"], None).disable  # a script's pipe: none

    class ZMQInteractiveShell:  # the class name ipykernel's shell has
        pass
    for shell, shown in ((ZMQInteractiveShell(), True), (None, False), (object(), False)):  # kernel, none, terminal
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda shell=shell: shell))
        assert shows_progress() is shown and _fit_pairs(["unit1"], None).disable is not shown
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    Engine(TrainConfig(steps=3, eval_every=3)).fit(custom(), target=toy_domain(16))
    assert "3/3" in sys.stderr.getvalue()  # the engine's bar drew into the kernel's stderr
