"""Plugins: methods and backbones registered from outside the package (``$TRANSFERKIT_PLUGINS``)."""

import importlib

import pytest

from transferkit.backbones import BACKBONES, lenet
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.methods.base import METHODS, Method, register


def test_a_plugin_cannot_take_the_name_of_a_built_in_method_or_backbone(plugin):
    plugin("clashing_method", "from transferkit.methods.base import Method, register\n\n\n"
                              "@register\nclass MyDann(Method):\n    name = 'dann'\n")
    with pytest.raises(TransferkitError, match=r"method name 'dann' is taken by transferkit\.methods\.adversarial"
                                               r"\.DANN; clashing_method\.MyDann cannot .*choose another `name`"):
        importlib.import_module("clashing_method")
    assert get_method("dann").__module__ == "transferkit.methods.adversarial"
    with pytest.raises(TransferkitError, match=r"backbone name 'lenet' is taken by transferkit\.backbones\.lenet"):
        BACKBONES["lenet"] = lambda num_classes, **kw: None
    assert BACKBONES["lenet"] is lenet


def test_a_plugin_module_imported_again_registers_its_classes_again(plugin):
    plugin("reloaded_plugin", "from transferkit.backbones import BACKBONES, lenet\n"
                              "from transferkit.methods.base import Method, register\n\n\n"
                              "@register\nclass Mine(Method):\n    name = 'mine_reloaded'\n\n\n"
                              "def my_net(num_classes, in_channels=1, image_size=28):\n"
                              "    return lenet(num_classes, in_channels, image_size)\n\n\n"
                              "BACKBONES['my_net_reloaded'] = my_net\n")
    first = importlib.import_module("reloaded_plugin")
    second = importlib.reload(first)
    assert get_method("mine_reloaded") is second.Mine and BACKBONES["my_net_reloaded"] is second.my_net
    register(second.Mine)  # the same class again


def test_another_class_with_a_taken_name_is_refused_in_the_same_module():
    class Twin(Method):
        name = "finetune"
    with pytest.raises(TransferkitError, match="is taken by transferkit.methods.finetune"):
        register(Twin)


@pytest.mark.parametrize("text, error", [("x = undefined_name + 1\n", "NameError: name 'undefined_name'"),
                                         ("import not_a_real_package_xyz\n",
                                          "ModuleNotFoundError: No module named 'not_a_real_package_xyz'")])
def test_a_plugin_that_fails_on_import_is_named_with_its_error(plugin, monkeypatch, text, error):
    plugin("failing_plugin", text)
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "failing_plugin")
    with pytest.raises(TransferkitError) as e:
        get_method("no_such_method_here")
    assert str(e.value).startswith("importing plugin module 'failing_plugin' (TRANSFERKIT_PLUGINS) failed: " + error)
    assert "python -c 'import failing_plugin'" in str(e.value) and "PYTHONPATH" not in str(e.value)
    assert e.value.__cause__ is not None


def test_a_plugin_module_not_on_the_path_is_named_with_the_hint(monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "not_on_the_path_at_all")
    with pytest.raises(TransferkitError, match=r"names module 'not_on_the_path_at_all', which cannot be imported: "
                                               r".*\(is its folder on PYTHONPATH\?\)"):
        get_method("no_such_method_here")


def test_an_unknown_method_or_backbone_says_a_plugin_module_may_be_missing(tmp_path, monkeypatch):
    from transferkit.backbones import check_backbone
    from transferkit.config import load_config
    from transferkit.errors import UnknownNameError
    from transferkit.preflight import check_names
    from transferkit.runtime import kernel_environment

    monkeypatch.delenv("TRANSFERKIT_PLUGINS", raising=False)
    with pytest.raises(UnknownNameError, match=r"a plugin's method\? name its module in TRANSFERKIT_PLUGINS, "
                                               r"which is unset here\)$"):
        get_method("bnm_not_here")
    with pytest.raises(UnknownNameError, match=r"a plugin's backbone\? .* unset here"):
        check_backbone("tinynet_not_here")
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "json")  # a module that registers nothing
    assert kernel_environment()["plugins"] == ["json"]
    (tmp_path / "results.json").write_text('{"environment": {"plugins": ["my_plugin"]}}')
    cfg = load_config(None, ["methods=[bnm_not_here]"])
    with pytest.raises(UnknownNameError, match=r"which names only json here; the run was made with "
                                               r"TRANSFERKIT_PLUGINS=my_plugin\)$") as e:
        check_names(cfg, tmp_path)
    assert e.value.name == "bnm_not_here"


class Typed(Method):
    name = "typed_options_unregistered"

    def __init__(self, net, temp_scale: float = 1.0, mode: str = "a", steps: "int | None" = None,
                 flag: bool = False, anything=None, units: "list[str] | None" = None):
        super().__init__(net)


@pytest.mark.parametrize("options, message", [
    ({"temp_scale": "abc"}, "option temp_scale must be a number, got 'abc'"),
    ({"temp_scale": True}, "option temp_scale must be a number, got True"),
    ({"mode": 3}, "option mode must be text, got 3"),
    ({"steps": 2.5}, "option steps must be a whole number or null, got 2.5"),
    ({"flag": 1}, "option flag must be true or false, got 1")])
def test_a_plugin_option_that_does_not_fit_its_annotation_is_refused(options, message):
    from helpers import seeded_lenet

    from transferkit.fitting import method_error
    with pytest.raises(TransferkitError) as e:
        Typed(seeded_lenet(), **options)
    assert str(e.value) == f"typed_options_unregistered: {message}"
    assert str(method_error(Typed, options, e.value)).endswith(f"{options}: {message}")


def test_options_that_fit_their_annotations_are_accepted():
    from helpers import seeded_lenet

    Typed(seeded_lenet(), temp_scale=2, mode="b", steps=None, flag=True, anything=object(), units=["conv1"])
    Typed(seeded_lenet(), temp_scale="1e-3", steps="3")  # numbers as text, as PyYAML reads 1e-3
    assert Typed(seeded_lenet(), steps=2.0).init_options == {"steps": 2}  # a whole float, as train.steps: 2.0


def test_a_method_family_class_is_accepted_as_itself():
    cls = get_method("ft_unit:conv2")
    assert get_method(cls) is cls

    class Lookalike(Method):  # the family's name, not its class
        name = "ft_unit:conv2"
    with pytest.raises(TransferkitError, match="is not registered under its name 'ft_unit:conv2'"):
        get_method(Lookalike)


def test_a_method_class_is_accepted_when_registered_and_its_doc_is_its_own(capsys):
    from transferkit import Transfer
    from transferkit.cli import main
    from transferkit.methods.base import method_doc

    class Unregistered(Method):
        name = "unregistered_here"
    with pytest.raises(TransferkitError, match=r"method class .*Unregistered is not registered under its name "
                                               r"'unregistered_here': decorate it with @register"):
        Transfer(Unregistered)
    with pytest.raises(TransferkitError, match=r"unknown method 'unregistered_here'.*class .*Unregistered has that "
                                               r"name but is not registered: decorate it with @register"):
        get_method("unregistered_here")
    assert Transfer(get_method("dann")).method_cls is get_method("dann")
    assert method_doc(Unregistered) == "" and "nn.Module" not in method_doc(Unregistered)
    assert method_doc(get_method("dann")).startswith(get_method("dann").__doc__.strip()[:20])
    try:
        register(Unregistered)
        assert main(["methods", "unregistered_here"]) == 0
    finally:
        del METHODS["unregistered_here"]
    out = capsys.readouterr().out
    assert out.startswith("unregistered_here: (no description)") and "Base class for all neural" not in out


def test_an_unknown_name_close_to_a_known_one_suggests_it_instead_of_the_plugin_hint():
    from transferkit.errors import UnknownNameError
    from transferkit.methods import get_method
    with pytest.raises(UnknownNameError, match=r"\(did you mean 'dann'\?\)$"):
        get_method("dan")
    with pytest.raises(UnknownNameError, match=r"\(a plugin's method\? name its module in TRANSFERKIT_PLUGINS"):
        get_method("bnm")  # nothing close: it may be a plugin's
    assert str(UnknownNameError("shift", "blurr", ["blur", "rotation"])).endswith("(did you mean 'blur'?)")
    assert str(UnknownNameError("shift", "zzz", ["blur"])) == "unknown shift 'zzz'; known: blur"


@pytest.mark.parametrize("assign", ["item", "update", "ior", "setdefault"])
def test_every_assignment_to_a_registry_refuses_a_taken_name(assign):
    from transferkit.registry import Registry
    reg = Registry("backbone", "choose another name", lenet=lenet)
    do = {"item": lambda: reg.__setitem__("lenet", print), "update": lambda: reg.update({"lenet": print}),
          "ior": lambda: reg.__ior__({"lenet": print}), "setdefault": lambda: reg.setdefault("lenet", print)}[assign]
    if assign == "setdefault":
        assert do() is lenet  # the name is held: setdefault keeps it
    else:
        with pytest.raises(TransferkitError, match="backbone name 'lenet' is taken by"):
            do()
    reg |= {"tiny": print}
    assert type(reg) is Registry and reg["lenet"] is lenet and reg["tiny"] is print


def test_a_builder_that_ignores_its_arguments_is_named_when_the_backbone_is_built(monkeypatch):
    """A plugin's builder that always returns 10 outputs (or 1 channel) was caught only after
    pre-training, as 'the network has 10 outputs for 5 source classes', without naming it (a trial)."""
    import torch.nn as nn

    from transferkit.backbones import UnitNet, build_backbone
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment

    monkeypatch.setitem(BACKBONES, "sloppy", lambda num_classes, in_channels=1, image_size=28: lenet(10, 1, 28))
    monkeypatch.setitem(BACKBONES, "not_a_unitnet", lambda num_classes, in_channels=1, image_size=28: lenet(10).head)
    with pytest.raises(TransferkitError, match=r"backbone builder 'sloppy' returned a network with 10 outputs for "
                                               r"num_classes=5: give its head num_classes outputs"):
        build_backbone("sloppy", 5)
    with pytest.raises(TransferkitError, match=r"builder 'sloppy' returned a network for images of 1 channel\(s\) "
                                               r"\(its input_shape \(1, 28, 28\)\) for in_channels=3"):
        build_backbone("sloppy", 10, in_channels=3)
    with pytest.raises(TransferkitError, match="'not_a_unitnet' returned a LinearHead, not a transferkit UnitNet"):
        build_backbone("not_a_unitnet", 10)
    assert build_backbone("sloppy", 10, image_size=32).input_shape == (1, 28, 28)  # the engine checks sizes
    mlp = lambda num_classes, in_channels=1, image_size=28: UnitNet(  # noqa: E731
        {"body": nn.Flatten()}, nn.Sequential(nn.Linear(image_size ** 2, 8), nn.ReLU(), nn.Linear(8, num_classes)))
    monkeypatch.setitem(BACKBONES, "mlp_head", mlp)
    assert build_backbone("mlp_head", 5).input_shape is None  # outputs unknown without an input shape: not refused
    for methods in (["source_only", "finetune"], ["source_only"]):
        cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-4", backbone="sloppy", k=2,
                               repeats=1, methods=methods, pretrain=TrainConfig(steps=2), train=TrainConfig(steps=2))
        logged = []
        with pytest.raises(TransferkitError, match=r"^backbone builder 'sloppy' returned a network with 10 outputs"):
            run_experiment(cfg, log=logged.append)
        assert not any("pre-training" in line for line in logged)


def test_a_builder_s_network_that_fails_on_the_images_it_declares_is_refused_when_built(monkeypatch):
    import torch
    import torch.nn as nn

    from transferkit.backbones import build_backbone, from_sequential

    def fixed_fc(num_classes, in_channels=1, image_size=28):  # its fc is sized for 28-pixel images whatever it is given
        seq = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(4 * 14 * 14, 8), nn.ReLU(), nn.Linear(8, num_classes))
        return from_sequential(seq, units={"block": [0, 1, 2], "fc": [3, 4, 5]},
                               input_shape=(in_channels, image_size, image_size))
    monkeypatch.setitem(BACKBONES, "fixed_fc_net", fixed_fc)
    assert build_backbone("fixed_fc_net", 3, 1, image_size=28).num_classes == 3
    with pytest.warns(Warning, match="could not check the cut"), \
            pytest.raises(TransferkitError, match=r"backbone builder 'fixed_fc_net' returned a network that fails on "
                                                  r"the images it declares \(input_shape \(1, 32, 32\); the builder "
                                                  r"was given image_size=32\): RuntimeError: mat1 and mat2 .* set "
                                                  r"image_size to the size it takes"):
        build_backbone("fixed_fc_net", 3, 1, image_size=32)
    torch.manual_seed(0)
    fixed_fc(3, 1, 28)
    after_builder = torch.random.get_rng_state()
    torch.manual_seed(0)
    build_backbone("fixed_fc_net", 3, 1, image_size=28)
    assert torch.equal(torch.random.get_rng_state(), after_builder)  # the check's forward draws nothing


def test_a_builder_s_network_of_a_guessed_input_shape_is_not_run_on_the_guess(monkeypatch):
    import torch.nn as nn

    from transferkit.backbones import build_backbone, from_modules

    class Small(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
            self.fc = nn.Linear(4 * 14 * 14, num_classes)  # 28-pixel images

        def forward(self, x):
            return self.fc(self.conv(x))

    def small(num_classes, in_channels=1, image_size=28):  # no input_shape: from_modules guesses 224 x 224
        return from_modules(Small(num_classes), units=["conv"], head="fc", verify=False)
    monkeypatch.setitem(BACKBONES, "guessed_small_net", small)
    net = build_backbone("guessed_small_net", 3, 1, image_size=28)
    assert net.input_shape_guessed and net.num_classes == 3
