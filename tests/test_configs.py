"""The shipped YAML configs load and name only known domains and methods."""

from pathlib import Path

import pytest

from transferkit.config import load_config
from transferkit.data import BUILTINS, parse_spec
from transferkit.methods import get_method
from transferkit.shifts import get_shift

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    for m in cfg.methods:
        get_method(m)
    for spec in (cfg.source, cfg.target):
        base, shifts = parse_spec(spec)
        assert base in BUILTINS
        for shift in shifts:
            get_shift(shift)


def test_demo_yaml_matches_demo_command():
    from transferkit.bench.demo import demo_config
    assert load_config(CONFIGS[0].parent / "demo.yaml") == demo_config()
