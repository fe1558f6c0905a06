"""Session 77 (h_fa): leftovers found by fuzzing."""

import pytest
from helpers import toy_domain

from transferkit.errors import TransferkitError


def named_toy():
    d = toy_domain(16)
    d.class_names = ["cat", "dog", "owl", "yak"]
    return d


@pytest.mark.parametrize("kind", [set, frozenset])
def test_select_classes_refuses_a_set_when_relabelling(kind):
    with pytest.raises(TransferkitError, match="give a list in the wanted order"):
        named_toy().select_classes(kind(["owl", "cat"]))


def test_select_classes_takes_a_set_without_relabelling_and_a_dict_in_key_order():
    d = named_toy()
    assert d.select_classes({"owl", "cat"}, relabel=False).class_names == d.class_names
    assert d.select_classes({"owl": 1, "cat": 2}).class_names == ["owl", "cat"]
    assert d.select_classes({"owl"}).class_names == ["owl"]


@pytest.mark.parametrize("units", [[3], ["conv1", 3]])
def test_tap_names_the_networks_units_for_a_unit_given_as_a_number(units):
    from helpers import seeded_lenet

    from transferkit.methods.base import METHODS

    net = seeded_lenet()
    with pytest.raises(TransferkitError, match="tap: unknown unit 3; units are") as e:
        METHODS["tap"](net, units=units)
    assert all(repr(u) in str(e.value) for u in net.feature_names)


@pytest.mark.parametrize("value, reason", [("0x_", "as a hexadecimal number .*it has no digits"),
                                           ("-0b__", "as a binary number .*it has no digits"),
                                           ("[1, 0x_]", "as a hexadecimal number")])
def test_a_set_value_yaml_cannot_read_is_named_with_its_reason_not_as_a_date(value, reason):
    from transferkit.config import load_config

    with pytest.raises(TransferkitError, match=f"--set seed: YAML reads '{value.strip('[1, ]')}' {reason}") as e:
        load_config(None, [f"seed={value}"])
    assert "date" not in str(e.value)


def test_a_config_file_value_yaml_cannot_read_is_named(tmp_path):
    from transferkit.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("seed: 2001-01-01 25:00:00\n")
    with pytest.raises(TransferkitError, match=r"c\.yaml: YAML reads '2001-01-01 25:00:00' as a date, and hour must"):
        load_config(path)


@pytest.mark.parametrize("method", ["adain", "unit_gan"])
def test_translation_methods_refuse_images_of_another_size_before_the_pretraining(method, monkeypatch):
    import torch

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig

    def rect(n, seed):  # 28x36: resnet18 (global pooling) takes them, the translator's modules do not
        g = torch.Generator().manual_seed(seed)
        return Domain("rect", torch.rand(n, 1, 28, 36, generator=g), torch.arange(n) % 2, ["a", "b"])

    pretrained = []
    monkeypatch.setattr(Transfer, "_pretrain", lambda self, *a, **k: pretrained.append(1))
    model = Transfer(method, backbone="resnet18", train=TrainConfig(steps=1, batch_size=2),
                     pretrain=TrainConfig(steps=1, batch_size=2))
    with pytest.raises(TransferkitError, match=f"method '{method}': the source domain 'rect' has images of 28x36"):
        model.fit(source=rect(4, 0), target=rect(2, 1), unlabeled=rect(4, 2))
    assert pretrained == []


@pytest.mark.parametrize("method, option, value", [("dsn", "hidden", 2000), ("embedding_zsl", "dim", 20000),
                                                   ("clip", "dim", 20000), ("adain", "width", 400),
                                                   ("cyclegan", "disc_width", 400), ("unit_gan", "width", 200)])
def test_size_options_are_checked_against_the_machines_memory_before_building(method, option, value, monkeypatch):
    import transferkit.clip  # noqa: F401  registers clip
    import transferkit.domain
    import transferkit.zeroshot  # noqa: F401  registers embedding_zsl
    from transferkit.backbones import build_backbone
    from transferkit.methods.base import METHODS

    net = build_backbone("convnet4", 10)
    monkeypatch.setattr(transferkit.domain, "memory_bytes", lambda: 2**20)  # a 1 MiB machine: the modules are MiBs
    with pytest.raises(TransferkitError, match=f"{method}: the modules sized by .*{option}={value}\\b.*more than this "
                                               f"machine's 0.0 GiB of memory: choose a smaller .*{option}"):
        METHODS[method](net, **{option: value})



def laughs(levels):
    """Anchors a0..a{levels}, each a list of ten aliases of the one before: 10^(levels + 1) values expanded."""
    return [f"a0: &a0 [{', '.join(['x'] * 10)}]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]"
                                                      for i in range(1, levels + 1)]


def test_a_billion_laughs_config_is_refused_after_parsing_before_anything_walks_it(tmp_path, monkeypatch):
    from transferkit import config

    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(laughs(5)) + "\n")  # 1.2 M values (laughs(8): 1.3 G)
    walked = []
    monkeypatch.setattr(config, "from_dict", lambda *a, **k: walked.append(1))
    with pytest.raises(TransferkitError, match=r"laughs\.yaml: its anchors and aliases expand to [0-9,]+ values, "
                                               r"more than 1,000,000"):
        config.load_config(path)
    with pytest.raises(TransferkitError, match="--set options: its anchors and aliases expand to"):
        config.load_config(None, [f"options={{{', '.join(laughs(5))}}}"])
    assert walked == []
    config.load_config(None, [f"options={{{', '.join(laughs(3))}}}"])  # 10^4 values: taken
    assert walked == [1]


def test_a_billion_laughs_given_twice_with_set_is_refused_without_writing_it_out(monkeypatch):
    from transferkit import config

    laughing = f"{{{', '.join(laughs(5))}}}"
    assert config._parsed(laughing) == laughing  # the text, not the expanded value written out
    with pytest.raises(TransferkitError, match="--set options: its anchors and aliases expand to"):
        config.load_config(None, ["options={}", f"options={laughing}"])
    parsed = []
    monkeypatch.setattr(config, "_parsed", lambda raw: parsed.append(raw) or raw)
    config.load_config(None, ["seed=1", "name=a"])  # each given once: nothing to compare
    assert parsed == []


def test_the_discriminator_size_warning_is_shown_once_per_fit(monkeypatch):
    import warnings

    from helpers import toy_domain

    import transferkit.discriminators
    from transferkit.api import Transfer
    from transferkit.engine import TrainConfig

    monkeypatch.setattr(transferkit.discriminators, "LARGE_DISCRIMINATOR", 1000)  # lenet's layers pass it
    model = Transfer("multilayer_adv", backbone="lenet", discriminator="fc", train=TrainConfig(steps=1, batch_size=4),
                     pretrain=TrainConfig(steps=1, batch_size=4))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        model.fit(source=toy_domain(16), target=toy_domain(8, seed=1), unlabeled=toy_domain(8, seed=2))
    assert sum("the multi-layer discriminator on" in str(w.message) for w in shown) == 1


def test_within_memory_builds_for_real_once_warning_once():
    import warnings

    import torch.nn as nn

    from transferkit.methods.base import within_memory

    def build():
        warnings.warn("built", UserWarning, stacklevel=2)
        return nn.Linear(3, 4)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        layer = within_memory("m", build, dim=4)
    assert [str(w.message) for w in shown] == ["built"] and layer.weight.device.type == "cpu"
