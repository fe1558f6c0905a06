"""Session 76, helper h_fix1: findings of a fuzzing audit of the configuration surface."""

import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.errors import TransferkitError
from transferkit.methods.base import METHODS


@pytest.mark.parametrize("method, option", [("dann", "depth"), ("multilayer_adda", "tail_depth"),
                                            ("multilayer_adv", "tail_depth"), ("dann", "hidden"),
                                            ("multilayer_adv", "hidden")])
def test_huge_discriminator_refused_before_building(method, option, monkeypatch):
    net = build_backbone("convnet4", 3)
    real, built = torch.nn.Linear, []

    def linear(d_in, d_out, *args, **kw):  # stands in for the layers, stops a build that would not end
        built.append((d_in, d_out))
        if len(built) > 2000 or d_in * d_out > 2**31:
            raise RuntimeError(f"built {len(built)} layers, the last {d_in}x{d_out}")
        return real(1, 1)

    monkeypatch.setattr(torch.nn, "Linear", linear)
    with pytest.raises(TransferkitError, match=f"{option}=100000000"):
        METHODS[method](net, **{option: 100_000_000})


def test_usual_discriminator_sizes_still_build():
    net = build_backbone("convnet4", 3)
    METHODS["dann"](net, depth=2, hidden=500)
    METHODS["multilayer_adv"](net, tail_depth=2, hidden=500)


def test_too_many_episodes_refused_before_drawing(monkeypatch):
    from transferkit import fewshot_eval

    features, labels = torch.randn(40, 8), torch.arange(40) % 4
    drawn = []
    monkeypatch.setattr(fewshot_eval, "_drawn", lambda *a: drawn.append(a) or pytest.fail("drew the episodes"))
    for episodes in (10_000_000_000, 10**20):
        with pytest.raises(TransferkitError, match=rf"{episodes} episodes \(their features\) need .* GiB, more than"):
            fewshot_eval.episode_accuracies(features, labels, n_way=2, k_shot=1, n_query=2, episodes=episodes)
    with pytest.raises(TransferkitError, match="their draw"):
        fewshot_eval.sample_episodes(labels, 2, 1, 2, 10**20, torch.Generator())
    assert drawn == []
    monkeypatch.undo()
    accs = fewshot_eval.episode_accuracies(features, labels, n_way=2, k_shot=1, n_query=2, episodes=7)
    assert accs.shape == (7,)


def test_episodes_seed_out_of_torch_range_is_named():
    from transferkit.fewshot_eval import episode_accuracies

    with pytest.raises(TransferkitError, match="seed must be a whole number in"):
        episode_accuracies(torch.randn(40, 8), torch.arange(40) % 4, n_way=2, episodes=3, k_shot=1, n_query=2,
                           seed=1180591620717411303424)


def test_self_referencing_yaml_is_named(tmp_path):
    from transferkit.config import load_config

    with pytest.raises(TransferkitError, match="k refers to itself"):
        load_config(None, ["k=&a [*a]"])
    path = tmp_path / "c.yaml"
    path.write_text("source_classes: &a [*a]\n")
    with pytest.raises(TransferkitError, match="source_classes refers to itself"):
        load_config(path)
    path.write_text("source_classes: &a [0, 1]\ntarget_classes: *a\n")  # shared, not self-referencing
    assert load_config(path).target_classes == load_config(path).source_classes


def test_number_beyond_float_range_is_named(tmp_path):
    from transferkit.config import ExperimentConfig, load_config

    huge = "1" + "0" * 400
    with pytest.raises(TransferkitError, match="train.lr must be a number within float's range"):
        load_config(None, [f"train.lr={huge}"])
    path = tmp_path / "c.yaml"
    path.write_text(f"val_fraction: {huge}\n")
    with pytest.raises(TransferkitError, match="val_fraction must be a number within float's range"):
        load_config(path)
    with pytest.raises(TransferkitError, match="test_fraction .*401 digits"):
        ExperimentConfig(test_fraction=10**400)


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_pretrained_refused(value):
    from transferkit.config import ExperimentConfig

    with pytest.raises(TransferkitError, match="pretrained .* names no file"):
        ExperimentConfig(pretrained=value)
    with pytest.raises(TransferkitError, match="pretrained .* names no file"):
        ExperimentConfig(pretrained=value, source=None)


@pytest.mark.parametrize("assignment", ["k=", "train.patience=", "val_per_class= ", "unlabeled="])
def test_empty_set_value_refused_with_advice(assignment):
    from transferkit.config import load_config

    key = assignment.split("=")[0]
    with pytest.raises(TransferkitError, match=f"gives no value.*--set {key}=null"):
        load_config(None, [assignment])
    assert load_config(None, [f"{key}=null"]) is not None


def test_empty_device_refused(capsys):
    from transferkit import cli

    assert cli.main(["run", "--device", "", "--print-config"]) != 0
    assert "--device '' names no device" in capsys.readouterr().err


def test_summary_of_results_with_a_list_config_reads_it_as_none(tmp_path, capsys):
    import json

    from transferkit import cli

    row = {"method": "finetune", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5,
           "wall_s": 1.0}
    path = tmp_path / "results.json"
    tables = []
    for config in ([1, "a"], None):  # a list is no config: read as none, as a report and combine_runs read it
        path.write_text(json.dumps({"name": "x", "config": config, "rows": [row]}))
        assert cli.main(["summary", str(path)]) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and "finetune" in tables[0]


@pytest.mark.parametrize("method, options, message", [
    ("ft_unit", {"unit": 0}, "option unit must be text or a list of texts or null, got 0"),
    ("ft_unit", {"unit": [[1]]}, r"unknown unit \[1\]; known: "),  # a list entry that is no name (session 78)
    ("tap", {"units": 1.5}, "option units must be text or a list of texts or null, got 1.5"),
    ("flex", {"units": 1.5}, "units must be a unit name or a list of them, got 1.5"),
    ("clip", {"captions": False}, "clip: captions must be a list of texts .*got False"),
    ("clip", {"text_encoder": 5}, "clip: text_encoder must be a text encoder's name .*got 5"),
])
def test_wrongly_typed_options_name_the_expected_type(method, options, message):
    net = build_backbone("convnet4", 3)
    with pytest.raises(TransferkitError, match=message):
        METHODS[method](net, **options)


def test_text_encoder_of_another_type_is_named():
    from transferkit.text import get_text_encoder

    with pytest.raises(TransferkitError, match="a text encoder is named by text .*got 5"):
        get_text_encoder(5)


def test_unit_options_still_take_a_name_or_a_list():
    net = build_backbone("convnet4", 3)
    assert METHODS["ft_unit"](net, unit="conv2").units == ["conv2"]
    assert METHODS["ft_unit"](net, unit=("conv2", "conv3")).units == ["conv2", "conv3"]
    METHODS["tap"](net, units="conv2")
    METHODS["tap"](net, units=["conv2", "conv3"])
