"""The flex benchmark's plan: sources, targets and seeds from the environment."""

import pytest

from transferkit.bench.flex import SYN_TARGETS, TARGETS, plan
from transferkit.errors import TransferkitError


def test_plan_defaults_follow_seed_002(monkeypatch):
    for key in ("TRANSFERKIT_FLEX_SOURCE", "TRANSFERKIT_FLEX_RATIOS", "TRANSFERKIT_FLEX_SEEDS",
                "TRANSFERKIT_FLEX_SEEDS_RATIO3", "TRANSFERKIT_FLEX_TARGETS"):
        monkeypatch.delenv(key, raising=False)
    p = plan(quick=False)
    assert p["source"] == "mnist" and p["targets"] == TARGETS
    assert p["seeds"] == {3: 20, 30: 3, 300: 3}  # 20 repeats at the smallest ratio


def test_plan_second_source_and_bad_source(monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_FLEX_SOURCE", "syndigits")
    p = plan(quick=False)
    assert p["source"] == "syndigits" and p["targets"] == SYN_TARGETS
    assert not any(t.startswith("mnist+") for t in p["targets"])
    monkeypatch.setenv("TRANSFERKIT_FLEX_SOURCE", "svhn")
    with pytest.raises(TransferkitError, match="TRANSFERKIT_FLEX_SOURCE"):
        plan(quick=False)
