"""Tests from a second mutation pass over config.py, fields.py and registry.py.

Each test kills at least one mutant that survived the existing tests (tests/test_configs.py,
test_data_config_mutation.py, test_plugins.py, test_domain_registry.py, the registry tests of
test_adapters_mutation.py and the config tests of test_experiment.py, test_cli.py,
test_rundir_rundata_mutation.py and test_methods_base_mutation.py): a stage device of ``cpu``
under another environment default, the bounds of ``repeats`` and a ``val_fraction`` of 0, a run
name with a backslash, a worker count of 0, methods given as text or as an empty list, options
of a method that are no mapping, the ``all`` setting, ``k`` as a tuple, ``~`` and unlike quotes
in ``--set``, ``--set`` below a key that holds a value, exponents with and without a dot,
config.yaml's key order and its ``test_fraction`` beside a test set, sets of class ids, and
from_dict's refusals (no mapping, a section key at the top, a dataclass it cannot build, which
errors it prefixes). They build configs only: no data, no training.

Judged equivalent, so not tested: val_fraction ``< 1`` -> ``<= 1`` (test_fraction > 0 and the
sum check already refuse a val_fraction of 1); ``settings()`` looking at ratio before k (k and
ratio are never both set); Registry's ``held is not value`` dropped (one object has one
``defined_at``); Registry's ``__init__`` filling the dict directly (one mapping holds no name
twice, so there is nothing to refuse).

Left surviving: ``plain`` turning tuples into lists (a tuple-valued field such as
``source_classes=(0, 1)`` dumps and digests as a list either way; only the Python object's type
differs); ``qualified_name``'s ``'?'`` for an object without ``__module__`` -> ``''`` (no
registered class, function or domain record lacks one).
"""

import dataclasses

import pytest

from transferkit.config import ExperimentConfig, load_config
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError


# ---- ExperimentConfig.__post_init__ ---------------------------------------------------------------
def test_a_stage_device_of_cpu_follows_device_when_the_environment_default_is_another(monkeypatch):
    # kills: the stage device check's "cpu" dropped (a config.yaml begun on cpu refused under TRANSFERKIT_DEVICE=auto)
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "auto")
    cfg = load_config(None, ["train.device=cpu", "pretrain.device=cpu", "device=auto"])
    assert (cfg.device, cfg.pretrain.device, cfg.train.device) == ("auto", "auto", "auto")
    cfg = ExperimentConfig(device="auto", train=TrainConfig(device="cpu"))
    assert cfg.train.device == "auto"


def test_repeats_run_from_one_to_ten_thousand():
    # kills: repeats `1 <=` -> `0 <=`; `<= MAX_REPEATS` -> `<`; MAX_REPEATS 10_000 -> 100_000
    assert ExperimentConfig(repeats=1).repeats == 1 and ExperimentConfig(repeats=10_000).repeats == 10_000
    for repeats in (0, 10_001):
        with pytest.raises(TransferkitError, match=rf"repeats must be in 1\.\.10000 .*got {repeats}"):
            ExperimentConfig(repeats=repeats)


def test_a_val_fraction_of_zero_is_no_validation_split_and_is_accepted():
    # kills: val_fraction `0 <=` -> `0 <`
    assert ExperimentConfig(val_fraction=0.0).val_fraction == 0.0
    with pytest.raises(TransferkitError, match=r"val_fraction \(-0.01\) and test_fraction"):
        ExperimentConfig(val_fraction=-0.01)


def test_a_run_name_with_a_backslash_is_refused():
    # kills: the name check's "\\" dropped (a Windows path as the run's name)
    with pytest.raises(TransferkitError, match=r"name 'a\\\\b' names the run's folder under out_dir"):
        ExperimentConfig(name="a\\b")


def test_workers_below_one_are_refused():
    # kills: workers `>= 1` -> `>= 0`
    with pytest.raises(TransferkitError, match="workers must be >= 1, got 0"):
        ExperimentConfig(workers=0)


def test_methods_given_as_text_are_split_at_commas_and_stripped():
    # kills: the text split's strip and empty-name filter dropped
    assert ExperimentConfig(methods="finetune, linear_probe,").methods == ["finetune", "linear_probe"]
    assert load_config(None, ["methods= finetune ,, target_only"]).methods == ["finetune", "target_only"]


def test_an_empty_list_of_methods_is_refused():
    # kills: the "no method given" check dropped
    for make in (lambda: ExperimentConfig(methods=[]), lambda: load_config(None, ["methods=[]"]),
                 lambda: ExperimentConfig(methods=" , ")):
        with pytest.raises(TransferkitError, match="no method given"):
            make()


def test_options_of_a_method_must_be_a_mapping():
    # kills: the options check's `all(isinstance(v, dict) ...)` dropped
    for options in ({"dann": 5}, {"dann": [0.3]}):
        with pytest.raises(TransferkitError, match=r"options must map a method name to its keyword arguments, e\.g\."):
            ExperimentConfig(methods=["dann"], options=options)


def test_neither_k_nor_ratio_is_the_all_setting():
    # kills: setting's "all" branch dropped (ratio=None)
    cfg = load_config(None, ["k=null"])
    assert (cfg.k, cfg.ratio, cfg.setting) == (None, None, "all") and cfg.settings() == [cfg]


def test_k_given_as_a_tuple_is_a_list_of_settings():
    # kills: _budget taking lists only (a tuple compared with >= 1)
    cfg = ExperimentConfig(k=(1, 5))
    assert cfg.k == [1, 5] and [c.setting for c in cfg.settings()] == ["k=1", "k=5"]
    assert ExperimentConfig(k=None, ratio=(30,)).ratio == 30


# ---- set_dotted ------------------------------------------------------------------------------------
def test_set_tilde_is_null_for_a_text_field():
    # kills: "~" dropped from the nulls of a text field (`--set unlabeled=~` the folder "~")
    assert load_config(None, ["unlabeled=~"]).unlabeled is None
    assert load_config(None, ["unlabeled=null"]).unlabeled is None


def test_set_text_between_unlike_quotes_is_kept_as_written():
    # kills: the quote check's `text[0] == text[-1]` dropped ('a" lost both quotes)
    assert load_config(None, ["name='a\""]).name == "'a\""
    assert load_config(None, ["name=\"a b\""]).name == "a b"


def test_set_below_a_key_that_holds_a_value_names_it_as_no_section(tmp_path):
    # kills: set_dotted's "is not a section" check dropped (an AttributeError instead)
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\n")
    with pytest.raises(TransferkitError, match=r"--set name\.x: 'name' is not a section"):
        load_config(path, ["name.x=1"])


def test_an_exponent_with_a_dot_is_a_float_and_one_without_a_whole_number_an_int():
    # kills: _exponent's `"." not in node.value` dropped (1.0e2 read as the int 100)
    options = load_config(None, ["methods=[dann]", "options.dann.weight=1.0e2", "options.dann.hidden=1e2"]).options
    assert options["dann"]["weight"] == 100.0 and type(options["dann"]["weight"]) is float
    assert options["dann"]["hidden"] == 100 and type(options["dann"]["hidden"]) is int


# ---- dump_config ---------------------------------------------------------------------------------
def test_a_dumped_config_keeps_the_field_order_and_drops_test_fraction_beside_a_test_set(tmp_path):
    # kills: dump_config's `test_fraction` pop dropped; sort_keys=False dropped (config.yaml in alphabetical order)
    import dataclasses

    import yaml

    from transferkit.config import dump_config
    cfg = ExperimentConfig(test="digits", methods=["finetune"])
    text = dump_config(cfg)
    assert "test_fraction" not in text and "test: digits" in text
    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    assert list(yaml.safe_load(text)) == [name for name in fields if name != "test_fraction"]
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml") == cfg


# ---- fields.py -----------------------------------------------------------------------------------
def test_a_set_of_class_ids_is_stored_in_order_as_python_ints():
    # kills: plain's sorted(int(v) ...) -> list(value) (a set's hash order, numpy ints kept)
    import numpy as np

    cfg = ExperimentConfig(target_classes={33, 10, 2}, source_classes=frozenset({np.int64(7), np.int64(1)}))
    assert cfg.target_classes == [2, 10, 33]
    assert cfg.source_classes == [1, 7] and all(type(c) is int for c in cfg.source_classes)


def test_from_dict_of_no_mapping_is_a_transferkit_error():
    # kills: from_dict's not-a-mapping refusal raised as another error type
    from transferkit.fields import from_dict
    with pytest.raises(TransferkitError, match="must be a mapping, got list"):
        from_dict(TrainConfig, [1])


def test_a_section_key_given_at_the_top_names_its_section_and_where_to_write_it():
    # kills: from_dict's section hint dropped; its plural "sections" dropped
    with pytest.raises(TransferkitError, match=r"unknown config key 'sampler'.*sampler belongs to the pretrain and "
                                               r"train sections: write pretrain\.sampler or train\.sampler, in YAML "
                                               r"under pretrain: / train:"):
        load_config(None, ["sampler=balanced"])
    from transferkit.fields import from_dict
    with pytest.raises(TransferkitError, match=r"x belongs to the inner section: write inner\.x, in YAML under inner:"):
        from_dict(_Outer, {"x": 1})


@dataclasses.dataclass
class _Inner:
    x: int = 1


@dataclasses.dataclass
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    y: int = 2


@dataclasses.dataclass
class _Required:
    x: int


def test_a_dataclass_that_cannot_be_built_is_a_named_bad_config():
    # kills: from_dict's TypeError -> TransferkitError wrapping dropped
    from transferkit.fields import from_dict
    with pytest.raises(TransferkitError, match=r"^bad config: .*missing .*'x'"):
        from_dict(_Required, {})
    with pytest.raises(TransferkitError, match=r"^bad config inner: .*missing .*'x'"):
        from_dict(_Required, {}, "inner.")


def test_a_top_level_check_is_not_prefixed_and_a_section_s_names_its_section():
    # kills: from_dict's `if not where: raise` dropped (top-level errors read "config : ...")
    with pytest.raises(TransferkitError) as e:
        load_config(None, ["k=0"])
    assert str(e.value).startswith("k must be >= 1")
    with pytest.raises(TransferkitError, match=r"^config train: steps must be >= 1"):
        load_config(None, ["train.steps=0"])


def test_text_for_a_number_names_the_fix_by_the_field_s_type():
    # kills: _typed's example "0.5" for a float field -> "5"; "one number, not a list" for text with commas dropped
    with pytest.raises(TransferkitError, match=r"config train\.lr must be float, got the text 'fast': write a number, "
                                               r"e\.g\. lr: 0\.5"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(TransferkitError, match=r"config seed must be int, got the text '1,2': write one number, not a "
                                               r"list, e\.g\. seed: 5"):
        load_config(None, ["seed=1,2"])
