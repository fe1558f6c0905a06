"""Tests from a third mutation pass over config.py, fields.py and registry.py.

Each test kills at least one mutant that survived the existing tests (tests/test_configs.py,
test_data_config_mutation.py, test_config_registry_second_mutation.py, test_plugins.py,
test_domain_registry.py and the config tests of test_experiment.py, test_userdata.py, test_cli.py,
test_api_usability.py and the bench plan tests): a stage's device written onto the caller's own
TrainConfig, select_on's values, an empty method name, flat_config's stage prefixes and its
``options``, ``--set`` without ``=``, with spaces around the key, with an empty text value or a
lone quote, a missing config file, the byte named for a file that is not UTF-8, the YAML 1.1 base
named for hexadecimal, config.yaml quoting text that reads as an exponent, negative exponents,
torch tensors and lists of NumPy numbers made plain, a section's unknown key named among its
section's keys, the fix named for a quoted list or empty text given to a number field, a list of
ratios as one setting, and registered classes of one name defined in different places. They
build configs only: no data, no training.

Judged equivalent, so not tested: test_fraction ``< 1`` -> ``<= 1`` (val_fraction >= 0 and the
sum check already refuse a test_fraction of 1); _budget's ``int(v)`` dropped (is_whole takes
integers only, and check_fields has already made NumPy integers Python ints);
Registry.setdefault calling dict's own setdefault (it only stores a name not yet held, which
__setitem__ never refuses); check_fields' messages without ``where`` (every caller passes "").

Left surviving: none of those tried. Mutants killed only by slower tests elsewhere are not
tested here: the val + test fraction sum ``< 1`` -> ``<= 1``, ADDED_FIELDS' val_fraction default,
source: null with source_classes and source_label (test_experiment.py); the select_metric check
(test_api_usability.py); out_dir's ``$VAR`` check and the UTF-16 byte-order mark
(test_userdata.py); YAML keys given twice and merge keys (test_cli.py); override() starting from
an empty mapping (the bench plan tests).
"""

import numpy as np
import pytest
import torch
import yaml

from transferkit.config import ExperimentConfig, dump_config, flat_config, load_config, set_dotted
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError


# ---- ExperimentConfig.__post_init__ ---------------------------------------------------------------
def test_a_stage_device_that_follows_device_leaves_the_caller_s_train_config_alone():
    # kills: the stage device stored by setting it on the given TrainConfig instead of a replaced copy
    train, pretrain = TrainConfig(steps=5), TrainConfig(steps=6)
    cfg = ExperimentConfig(device="auto", train=train, pretrain=pretrain)
    assert (cfg.train.device, cfg.pretrain.device) == ("auto", "auto")
    assert (train.device, pretrain.device) == ("cpu", "cpu") and cfg.train.steps == 5


def test_select_on_takes_only_its_three_values():
    # kills: the select_on check dropped
    for value in ("target_val", "source_val", "none"):
        assert ExperimentConfig(select_on=value).select_on == value
    with pytest.raises(TransferkitError, match="select_on must be target_val, source_val or none, got 'target'"):
        load_config(None, ["select_on=target"])


def test_an_empty_method_name_in_a_list_is_refused():
    # kills: the methods check's `and m` dropped (an empty name accepted)
    with pytest.raises(TransferkitError, match="methods must be a list of method names"):
        ExperimentConfig(methods=["finetune", ""])


# ---- flat_config ---------------------------------------------------------------------------------
def test_flat_config_prefixes_the_stage_keys_and_keeps_options_a_mapping():
    # kills: flat_config's prefix dropped; flat_config flattening every mapping (options too)
    cfg = ExperimentConfig(methods=["dann"], options={"dann": {"weight": 0.3}}, train=TrainConfig(steps=7))
    flat = flat_config(cfg.to_dict())
    assert flat["train.steps"] == 7 and flat["pretrain.steps"] == 600 and "steps" not in flat
    assert flat["options"] == {"dann": {"weight": 0.3}} and "options.dann" not in flat
    assert "train" not in flat and flat["k"] == 5


# ---- set_dotted / load_config ----------------------------------------------------------------------
def test_set_without_an_equals_sign_is_named():
    # kills: set_dotted's "key=value" check dropped (a ValueError from unpacking instead)
    with pytest.raises(TransferkitError, match="--set expects key=value, got 'k5'"):
        load_config(None, ["k5"])


def test_set_strips_spaces_around_the_key():
    # kills: set_dotted's key.strip() dropped (" k " an unknown key)
    cfg = load_config(None, [" k =3", " train.steps = 4"])
    assert cfg.k == 3 and cfg.train.steps == 4


def test_set_of_an_empty_text_value_is_null_and_a_lone_quote_is_text():
    # kills: "" dropped from a text field's nulls (`unlabeled=` the domain ""); a quote of length 1 unquoted
    # (load_config refuses an empty --set value since session 76: set_dotted, as a benchmark's --set, reads null)
    data = {}
    set_dotted(data, "unlabeled=", ExperimentConfig)
    set_dotted(data, "test= ", ExperimentConfig)
    assert data == {"unlabeled": None, "test": None}
    assert load_config(None, ["name='"]).name == "'"


def test_a_missing_config_file_or_a_folder_is_named(tmp_path):
    # kills: load_config's is_file check dropped (FileNotFoundError / IsADirectoryError instead)
    for path in (tmp_path / "missing.yaml", tmp_path):  # a missing one as the CLI says it, with the shipped configs
        with pytest.raises(TransferkitError, match="does not exist( or is not a file|; the configs that ship)"):
            load_config(path)


def test_a_config_file_that_is_not_utf8_names_the_byte_and_where(tmp_path):
    # kills: the not-UTF-8 message's byte value dropped
    (tmp_path / "ansi.yaml").write_bytes("name: caf\u00e9\n".encode("cp1252"))
    with pytest.raises(TransferkitError, match=r"not UTF-8 text \(byte 0xe9 at position 9"):
        load_config(tmp_path / "ansi.yaml")


def test_a_hexadecimal_number_names_its_base():
    # kills: _plain_int's "hexadecimal, binary or base 60" message cut down
    with pytest.raises(TransferkitError, match=r"'0x10' is the number 16 in YAML 1\.1 "
                                               r"\(hexadecimal, binary or base 60"):
        load_config(None, ["k=0x10"])


def test_text_that_reads_as_an_exponent_is_quoted_in_config_yaml(tmp_path):
    # kills: the _Dumper's exponent resolver dropped (`name: 1e3` written bare, read back as 1000 and refused)
    cfg = ExperimentConfig(name="1e3", out_dir="-2.5e-3")
    text = dump_config(cfg)
    assert "name: '1e3'" in text or 'name: "1e3"' in text
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml") == cfg


def test_a_negative_exponent_is_a_number():
    # kills: the exponent form's leading sign dropped (-1e-1 read as text)
    options = load_config(None, ["methods=[dann]", "options.dann.weight=-1e-1", "options.dann.hidden=+2e2"]).options
    assert options["dann"] == {"weight": -0.1, "hidden": 200} and type(options["dann"]["hidden"]) is int


# ---- fields.py -----------------------------------------------------------------------------------
def test_torch_tensors_and_lists_of_numpy_numbers_are_stored_as_python_values():
    # kills: plain leaving torch tensors; plain leaving lists unconverted (numpy ints that YAML cannot write)
    cfg = ExperimentConfig(source_classes=torch.tensor([0, 2]), target_classes=[np.int64(3), np.int64(1)])
    assert cfg.source_classes == [0, 2] and type(cfg.source_classes) is list
    assert all(type(c) is int for c in cfg.source_classes + cfg.target_classes)
    assert yaml.safe_load(dump_config(cfg))["target_classes"] == [3, 1]


def test_an_unknown_section_key_is_named_with_its_section_and_the_known_keys():
    # kills: from_dict listing a section's known keys without the section's prefix
    with pytest.raises(TransferkitError, match=r"unknown config key 'train\.stesp'; known: .*train\.lr.*"
                                               r"did you mean 'train\.steps'"):
        load_config(None, ["train.stesp=3"])


def test_a_quoted_list_for_a_number_field_asks_for_one_number():
    # kills: _typed's `bracketed` no longer requiring a list field ("write the list without quotes" for seed)
    with pytest.raises(TransferkitError, match=r"config seed must be int, got the text '\[1, 2\]': write one number, "
                                               r"not a list, e\.g\. seed: 5"):
        load_config(None, ["seed=\"[1, 2]\""])



def test_a_list_of_ratios_has_no_one_setting():
    # kills: setting's check for a list of ratios dropped ("ratio=[10, 20]" as one setting)
    cfg = ExperimentConfig(k=None, ratio=[10, 20])
    with pytest.raises(TransferkitError, match=r"has no one setting: use config\.settings\(\)"):
        _ = cfg.setting
    assert [c.setting for c in cfg.settings()] == ["ratio=10", "ratio=20"]



def test_an_empty_quoted_number_gets_a_number_as_its_example():
    # kills: _typed's `text != ""` dropped from `number` (the example left empty: "e.g. k: ")
    with pytest.raises(TransferkitError, match=r"got the text '': write a number without quotes, e\.g\. k: 5$"):
        load_config(None, ["k=''"])


# ---- registry.py ---------------------------------------------------------------------------------
class _First:
    class Method:
        pass


class _Second:
    class Method:
        pass


def test_a_registry_tells_apart_classes_of_one_name_defined_in_different_places():
    # kills: qualified_name using __name__ for __qualname__ (_Second.Method silently replacing _First.Method)
    from transferkit.registry import Registry
    reg = Registry("method", "choose another name")
    reg["m"] = _First.Method
    reg["m"] = _First.Method  # the same one again is fine
    with pytest.raises(TransferkitError, match=r"method name 'm' is taken by .*_First\.Method; .*_Second\.Method "
                                               r"cannot register under it: choose another name"):
        reg["m"] = _Second.Method
    assert reg["m"] is _First.Method
