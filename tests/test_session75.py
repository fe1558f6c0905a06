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
