"""Tests from a fourth mutation pass over config.py, fields.py and registry.py.

Each test kills at least one mutant that survived the existing tests (tests/test_configs.py,
test_data_config_mutation.py, test_config_registry_second_mutation.py,
test_config_registry_third_mutation.py, test_plugins.py, test_domain_registry.py and the config
tests of test_experiment.py, test_cli.py, test_userdata.py, test_api_usability.py and the
methods_base, rundir_rundata and adapters mutation files): the defaults a run without a config
file gets and ADDED_FIELDS' agreement with them, options keyed by a prefixed name beside a method
without a prefix, ``--set`` of the spelled-out nulls ``Null`` / ``NULL``, int fields storing ints
and float fields floats, and exponents with a leading dot. They build configs only: no data, no
training.

Judged equivalent, so not tested: set_dotted's ``len(parts) > 1`` before a null removes a key ->
``> 0`` (with one part the hint of no parts is the config class, never ``dict``); set_dotted's
``if raw.strip() else None`` dropped (YAML reads empty or blank text as null too); _typed's list
branch returning early only for ``int`` / ``float`` kinds -> always (every ``list``-typed config
field is ``int | list | None``; the difference is for bench plan fields, outside these modules).

Left surviving: ``qualified_name``'s ``'?'`` -> ``''`` (as in the second pass). Not tried against
rundir.py's own tests, so not tested here: NOT_RESULTS without ``workers``, CHOOSES_JOBS without
``repeats``, CHOOSES_SETTINGS without ``ratio`` (constants that only rundir.py / compare.py read).
Mutants killed only by slower tests elsewhere are not tested here: methods given as a tuple, a test
set beside test_fraction, a run name of dots, source: null without pretrained, with select_on
source_val, and source_label's file name, a method listed twice, an unknown method named before
stray options, options of a misspelt method or without the prefix argument, a null removing a
method's options, ``--set`` keeping the text of an optional text field, ``--set`` of a section
merged into the file's, override() keeping text fields, a stage device left at the environment's
default beside another ``device``, the stage devices following ``--set device`` (and only those
that were the file's device), a section given in part keeping its defaults, a section that is no
mapping, a null for a field that may not be null, int fields taking whole numbers only
(test_experiment.py); Registry.__reduce__ rebuilding a plain dict (test_adapters_mutation.py).
"""

import pytest

from transferkit.config import ADDED_FIELDS, ExperimentConfig, load_config
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError


# ---- ExperimentConfig defaults -------------------------------------------------------------------
def test_the_defaults_run_without_a_config_file_and_match_the_keys_added_later():
    # kills: the defaults of repeats, image_size, methods, out_dir and the stages' eval_every changed;
    # ADDED_FIELDS' defaults differing from the fields' own (an old run read at another value than it ran)
    cfg = load_config(None, [])
    assert (cfg.k, cfg.ratio, cfg.repeats, cfg.seed, cfg.image_size, cfg.out_dir) == (5, None, 3, 0, 28, "runs")
    assert cfg.methods == ["source_only", "target_only", "linear_probe", "finetune"]
    assert (cfg.pretrain.steps, cfg.pretrain.eval_every, cfg.train.steps, cfg.train.eval_every) == (600, 100, 300, 25)
    assert (cfg.select_on, cfg.source, cfg.target) == ("target_val", "syndigits", "mnist")
    for key in ("unlabeled", "test", "val_fraction", "test_fraction", "select_metric"):
        assert getattr(cfg, key) == ADDED_FIELDS[key], key
    for key, default in ADDED_FIELDS.items():
        if "." in key:
            name = key.split(".")[1]
            assert getattr(TrainConfig(), name) == default, key


# ---- ExperimentConfig.__post_init__: options -------------------------------------------------------
def test_options_keyed_by_a_prefixed_name_beside_a_method_without_a_prefix_name_no_method():
    # kills: the near-name check's `":" in n` dropped (dann:x blamed on the full name "dann")
    with pytest.raises(TransferkitError, match="options for dann:x, which names no method"):
        ExperimentConfig(methods=["dann"], options={"dann:x": {}})


# ---- set_dotted ------------------------------------------------------------------------------------
def test_set_of_an_optional_text_field_takes_the_spelled_out_nulls_and_keeps_other_text():
    # kills: "Null" / "NULL" dropped from a text field's nulls (`--set unlabeled=NULL` the domain "NULL")
    assert load_config(None, ["unlabeled=1.10"]).unlabeled == "1.10"
    for null in ("Null", "NULL", "null", "~"):
        assert load_config(None, ["unlabeled=x", f"unlabeled={null}"]).unlabeled is None


# ---- fields: _typed and check_fields ---------------------------------------------------------------
def test_an_int_field_given_a_whole_float_stores_an_int():
    # kills: _typed's `t(value)` -> value (seed=5.0 kept a float, dumped as `seed: 5.0`)
    cfg = ExperimentConfig(seed=5.0, image_size=32.0)
    assert (cfg.seed, cfg.image_size) == (5, 32) and type(cfg.seed) is int and type(cfg.image_size) is int


def test_a_float_field_given_a_whole_number_stores_a_float():
    # kills: _typed's `t(value)` -> value (train.lr=1 kept the int 1, dumped as `lr: 1`)
    cfg = load_config(None, ["train.lr=1"])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert type(TrainConfig(lr=2).lr) is float


# ---- YAML exponents --------------------------------------------------------------------------------
def test_an_exponent_with_a_leading_dot_is_a_number():
    # kills: the exponent form's `\.[0-9_]+` alternative dropped (.5e1 read as text)
    assert load_config(None, ["train.lr=.5e1"]).train.lr == 5.0
