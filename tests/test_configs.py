"""The shipped YAML configs load and name only known domains and methods."""

import re
from pathlib import Path

import pytest

from transferkit.config import load_config
from transferkit.data import BUILTINS, parse_spec
from transferkit.methods import get_method
from transferkit.shifts import get_shift

CONFIGS = sorted((Path(__file__).parent.parent / "transferkit" / "configs").glob("*.yaml"))


def test_the_configs_are_there():  # a source distribution without the configs skipped every check below
    assert len(CONFIGS) >= 3, CONFIGS


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
    assert load_config(CONFIGS[[p.stem for p in CONFIGS].index("demo")]) == demo_config()


def test_set_values_errors_and_quotes():
    from transferkit.errors import TransferkitError
    assert load_config(None, ['name="my run"', "source='mnist'"]).name == "my run"
    assert load_config(None, ["source='mnist'"]).source == "mnist" and load_config(None, ["name=1.10"]).name == "1.10"
    with pytest.raises(TransferkitError, match="val_per_class must be >= 1"):
        load_config(None, ["val_per_class=0"])
    with pytest.raises(TransferkitError) as e:
        load_config(None, ["methods=[finetune"])
    assert "\n" not in str(e.value) and "expected ',' or ']'" in str(e.value)


def test_k_and_ratio_take_lists_of_distinct_whole_numbers_and_a_list_of_one_is_that_number():
    from transferkit.errors import TransferkitError
    assert [c.setting for c in load_config(None, ["k=[1, 5, 10]"]).settings()] == ["k=1", "k=5", "k=10"]
    assert [c.setting for c in load_config(None, ["k=null", "ratio=[20, 10]"]).settings()] == ["ratio=20", "ratio=10"]
    assert load_config(None, ["k=[5]"]).k == 5 and load_config(None, ["k=5"]).settings()[0].setting == "k=5"
    for value, message in (("[]", "k is an empty list"), ("[1, 1]", "k lists 1 more than once"),
                           ("[0, 2]", r"k: each value must be a whole number >= 1, got 0 in \[0, 2\]"),
                           ("[1.5]", "got 1.5"), ("1,5", r"got the text '1,5': write a list in brackets, e.g. "
                                                         r"k: \[1, 5\]"),
                           ('"[1, 5]"', r"got the text '\[1, 5\]': write the list without quotes, e.g. k: \[1, 5\]")):
        with pytest.raises(TransferkitError, match=message):
            load_config(None, [f"k={value}"])
    with pytest.raises(TransferkitError, match=r"has no one setting: use config.settings\(\)"):
        _ = load_config(None, ["k=[1, 2]"]).setting


def test_a_quoted_set_text_value_is_taken_as_written():
    assert load_config(None, [r'out_dir="C:\new\runs"']).out_dir == r"C:\new\runs"
    assert load_config(None, ["name='it's'"]).name == "it's"


@pytest.mark.parametrize("text", ["- a\n- b\n", "hello\n", "[]\n", "false\n", "0\n"])
def test_a_config_file_that_is_not_a_mapping_is_refused_with_or_without_set(tmp_path, text):
    from transferkit.errors import TransferkitError
    path = tmp_path / "c.yaml"
    path.write_text(text)
    for overrides in ([], ["train.steps=3"]):
        with pytest.raises(TransferkitError, match="must be a mapping of keys"):
            load_config(path, overrides)


@pytest.mark.parametrize("text", ["", "# nothing\n", "null\n"])
def test_an_empty_config_file_is_refused_and_no_file_is_the_defaults(tmp_path, text):
    from transferkit.errors import TransferkitError
    (tmp_path / "empty.yaml").write_text(text)
    for overrides in ([], ["train.steps=3"]):  # not silently the whole default experiment
        with pytest.raises(TransferkitError, match="empty.yaml is empty .*leave out the config file to run the def"):
            load_config(tmp_path / "empty.yaml", overrides)


def test_an_explicit_empty_mapping_is_the_defaults_and_methods_must_be_a_list(tmp_path):
    from transferkit.errors import TransferkitError
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert load_config(tmp_path / "empty.yaml") == load_config(None)
    with pytest.raises(TransferkitError, match="methods must be a list of method names"):
        load_config(None, ["methods={finetune: 1}"])


def test_out_dir_and_pretrained_expand_the_home_directory(tmp_path, monkeypatch):
    from transferkit.experiment import new_run_dir
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, ["out_dir=~/runs"])
    assert str(new_run_dir(cfg)).startswith(str(tmp_path / "runs"))


@pytest.mark.parametrize("text, number", [("010", 8), ("0x10", 16), ("0b11", 3), ("1:30", 90)])
def test_yaml_1_1_numbers_that_are_not_decimal_are_refused_in_files_and_set(tmp_path, text, number):
    from transferkit.errors import TransferkitError
    path = tmp_path / "c.yaml"
    path.write_text(f"target: folder:{tmp_path}\ntarget_classes: [{text}, 11]\n")
    meant = str(int(text)) if text.isdigit() else str(number)
    with pytest.raises(TransferkitError, match=f"c.yaml: '{text}' is the number {number} in YAML 1.1 .*write {meant} "
                                               f"for the number, or quote it \\('{text}'\\) for a name"):
        load_config(path)
    with pytest.raises(TransferkitError, match=f"--set k: '{text}' is the number {number}"):
        load_config(None, [f"k={text}"])
    assert load_config(None, ["k=10", "train.steps=1_000", "repeats=+2"]).k == 10
    with pytest.raises(TransferkitError, match=r"'-010' is the number -8 in YAML 1.1 \(octal, not -10\): write -10"):
        load_config(None, ["seed=-010"])
    path.write_text(f"target: folder:{tmp_path}\ntarget_classes: ['{text}', 0]\n")
    assert load_config(path).target_classes == [text, 0]


def test_channels_auto_is_the_default_in_files_set_and_python(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    path = tmp_path / "c.yaml"
    path.write_text("channels: auto\n")
    assert load_config(path).channels is None and load_config(None, ["channels=auto"]).channels is None
    assert ExperimentConfig(channels="auto").channels is None and load_config(None, ["channels=3"]).channels == 3
    with pytest.raises(TransferkitError, match="channels must be 1, 3 or auto"):
        load_config(None, ["channels=rgb"])


def test_messages_name_the_yaml_file_a_spaced_method_and_a_close_option(tmp_path):
    from transferkit.errors import TransferkitError
    path = tmp_path / "c.yaml"
    path.write_text("methods: [finetune\n")
    with pytest.raises(TransferkitError, match=f'in {re.escape(str(path))}, line 2') as e:
        load_config(path)
    assert "<unicode string>" not in str(e.value)
    path.write_text("methods: [ft_unit: conv2]\n")
    with pytest.raises(TransferkitError, match="write ft_unit:conv2 without a space after the colon"):
        load_config(path)
    with pytest.raises(TransferkitError, match="^--set k: .*in the value, line 1"):
        load_config(None, ["k=[1"])


def test_a_wrong_transferkit_device_is_named_when_used_not_when_transferkit_is_imported(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "TRANSFERKIT_DEVICE": "gpu"}
    code = ("import transferkit\nfrom transferkit.api import Transfer\ntry:\n    Transfer('finetune')\n"
            "except transferkit.TransferkitError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "unknown device 'gpu' (from $TRANSFERKIT_DEVICE); choose one of cpu" in out.stdout
    cli = subprocess.run([sys.executable, "-m", "transferkit", "run", "configs/demo.yaml", "--print-config"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert cli.returncode == 2 and "unknown device 'gpu' (from $TRANSFERKIT_DEVICE)" in cli.stderr
    ok = subprocess.run([sys.executable, "-m", "transferkit", "run", "configs/demo.yaml", "--print-config", "--device",
                         "cpu"], env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert ok.returncode == 0 and "device: cpu" in ok.stdout


def test_clip_triplet_warmup_is_a_fraction_of_training():
    from transferkit.backbones import build_backbone
    from transferkit.errors import TransferkitError
    net = build_backbone("lenet", num_classes=2)
    with pytest.raises(TransferkitError, match=r"triplet_warmup is the fraction of training .* in \[0, 1\], got 1.5"):
        get_method("clip")(net, captions=["a", "b"], text_encoder="hashing", triplet_warmup=1.5)
