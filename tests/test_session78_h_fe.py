"""Session 78 (h_fe): the ``workers`` pre-check's shifts and flex's own workers, a method's declared training
stages in the own-modules pre-flight, and a run refused for a target domain registered only in the main block."""
import torch

from transferkit.backbones import build_backbone
from transferkit.domain import Domain
from transferkit.methods.base import Method

# ---- check_own_modules_take runs the losses of each stage a method declares (training_stages) -------------------


def test_own_modules_are_probed_in_each_declared_training_stage():
    from transferkit.preflight import check_own_modules_take
    seen = []

    class TwoStages(Method):
        name = "h_fe_two_stages"
        training_stages = ("first", "second")
        stage = "second"

        def losses(self, batch):
            seen.append(self.stage)
            return {}

    method = TwoStages(build_backbone("resnet18", num_classes=2))
    rect = Domain("rect", torch.rand(4, 1, 28, 36), torch.arange(4) % 2, ["a", "b"])  # another size than 28 x 28
    check_own_modules_take(method, {"target": rect}, 2)
    assert seen == ["first", "second"] and method.stage == "second"
    seen.clear()
    TwoStages.training_stages = Method.training_stages  # the default: one stage, stage left as it is
    check_own_modules_take(method, {"target": rect}, 2)
    assert seen == ["second"]


# ---- check_workers_reach: shifts registered only in the main block ------------------------------------------------

SCRIPT = '''
import torch
from torch import nn


def darken(images, generator=None):
    return images * 0.5


def lighten(images, generator=None):
    return images * 0.5 + 0.5


class TopUnit(nn.Module):
    def forward(self, x):
        return x


SHIFTS["h_fe_top"] = (darken, "darker", False)

if __name__ == "__main__":
    class MainUnit(nn.Module):
        def forward(self, x):
            return x

    SHIFTS["h_fe_main"] = (lighten, "lighter", False)
    register_domain("h_fe_dom", make_domain)
'''


def _main_script(tmp_path, monkeypatch):
    """The script's top-level definitions, made as ``python script.py`` makes them (module ``__main__``),
    with ``sys.modules["__main__"]`` the script; the main block's class too (defined, not reachable)."""
    import sys
    import types
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    space = {"__name__": "__main__"}
    exec(compile(SCRIPT.split("SHIFTS[")[0], str(script), "exec"), space)
    exec("class MainUnit(nn.Module):\n    def forward(self, x):\n        return x\n", space)
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    return space


def test_workers_refuse_a_shift_registered_only_in_the_main_block(tmp_path, monkeypatch):
    import pytest

    from transferkit.errors import TransferkitError
    from transferkit.preflight import check_workers_reach
    from transferkit.shifts import SHIFTS

    space = _main_script(tmp_path, monkeypatch)
    monkeypatch.setitem(SHIFTS, "h_fe_top", (space["darken"], "darker", False))
    monkeypatch.setitem(SHIFTS, "h_fe_main", (space["lighten"], "lighter", False))
    check_workers_reach([], 2, "convnet4", ["digits+h_fe_top", "digits+blur+h_fe_top", None])
    with pytest.raises(TransferkitError, match=r"^shift 'h_fe_main' is not defined and registered at the top level.*"
                                               r"module they can import.*--workers 1$"):
        check_workers_reach([], 2, "convnet4", ["digits+blur", "mnist+h_fe_top+h_fe_main"])
    with pytest.raises(TransferkitError, match=r"^shift 'h_fe_main' is not"):  # one name, however often used
        check_workers_reach([], 2, "convnet4", ["digits+h_fe_main", "digits+h_fe_main+h_fe_main@grouped3"])
    check_workers_reach([], 1, "convnet4", ["digits+h_fe_main"])  # one process runs the jobs


# ---- flex's workers option: its network's module classes made in the main block ---------------------------------

class Sentinel(Exception):
    """Raised where the work after the pre-flight checks begins: the refusal must come before."""


def _net(unit, num_classes=2):
    from torch import nn

    from transferkit.backbones import from_sequential
    return from_sequential(nn.Sequential(nn.Conv2d(1, 2, 3), unit(), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(2 * 26 * 26, num_classes)), input_shape=(1, 28, 28))


def test_flex_workers_refuse_a_module_class_of_the_main_block(tmp_path, monkeypatch):
    import pytest

    from transferkit.errors import TransferkitError
    from transferkit.methods import get_method
    from transferkit.preflight import check_method_workers

    space = _main_script(tmp_path, monkeypatch)
    flex, fast = get_method("flex"), get_method("fast_flex")
    with pytest.raises(TransferkitError, match=r"^the network's module class 'MainUnit' is not defined.*2 worker "
                                               r"processes \(flex's option workers: 2\).*set flex's option workers "
                                               r"to 1$"):
        check_method_workers(flex(_net(space["MainUnit"]), workers=2))
    check_method_workers(flex(_net(space["TopUnit"]), workers=2))  # a class the script's top level makes
    check_method_workers(flex(_net(space["MainUnit"]), workers=1))
    check_method_workers(fast(_net(space["MainUnit"]), workers=2))  # it trains its candidates in this process


def test_transfer_and_run_refuse_flex_workers_for_a_main_block_module_class(tmp_path, monkeypatch):
    import pytest

    from transferkit import Transfer, experiment
    from transferkit.backbones import BACKBONES
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    from transferkit.methods import flex

    space = _main_script(tmp_path, monkeypatch)
    monkeypatch.setattr(flex, "train_candidates", lambda *a, **k: (_ for _ in ()).throw(Sentinel()))
    few = Domain("few", torch.rand(8, 1, 28, 28), torch.arange(8) % 2, ["a", "b"])
    main_net, top_net = _net(space["MainUnit"]), _net(space["TopUnit"])
    main_net.class_names = top_net.class_names = few.class_names
    refused = r"method flex with options \{'workers': 2\}: the network's module class 'MainUnit' is not defined"
    with pytest.raises(TransferkitError, match=refused):
        Transfer("flex", workers=2).fit(target=few, val=few, net=main_net)
    with pytest.raises(Sentinel):
        Transfer("flex", workers=2).fit(target=few, val=few, net=top_net)

    monkeypatch.setitem(BACKBONES, "h_fe_net", lambda num_classes, **_: _net(space["MainUnit"], num_classes))
    monkeypatch.setattr(experiment, "check_same_data", lambda *a, **k: (_ for _ in ()).throw(Sentinel()))
    cfg = ExperimentConfig(name="f", source="digits", target="digits", methods=["flex"], backbone="h_fe_net", k=2,
                           repeats=1, options={"flex": {"workers": 2}}, workers=1, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match=refused):
        experiment.run_experiment(cfg, log=lambda *a: None)


# ---- a run with workers: 2 checks its target domain too (session 77's mutant ew1: only cfg.source checked) --------

def test_a_run_with_workers_refuses_a_target_domain_registered_only_in_the_main_block(tmp_path, monkeypatch):
    import pytest

    from transferkit import data, experiment
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitError

    space = _main_script(tmp_path, monkeypatch)
    exec("import numpy as np\n\ndef make_domain():\n    rng = np.random.default_rng(0)\n"
         "    return rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), np.arange(60) % 2\n", space)
    data.register_domain("h_fe_dom", space["make_domain"], channels=1, size=28, class_names=["0", "1"],
                         description="noise in two classes")
    monkeypatch.setitem(data.BUILTINS, "h_fe_dom", data.BUILTINS.pop("h_fe_dom"))  # removed after the test
    monkeypatch.setattr(experiment, "check_same_data", lambda *a, **k: (_ for _ in ()).throw(Sentinel()))
    tiny = TrainConfig(steps=1, eval_every=1)
    cfg = ExperimentConfig(name="t", source="digits", target="h_fe_dom", methods=["target_only", "finetune"], k=2,
                           repeats=1, workers=2, val_per_class=2, pretrain=tiny, train=tiny, out_dir=str(tmp_path))
    with pytest.raises(TransferkitError, match=r"^domain 'h_fe_dom' is not defined and registered at the top level.*"
                                               r"2 worker processes.*--workers 1$"):
        experiment.run_experiment(cfg, log=lambda *a: None)
    with pytest.raises(Sentinel):  # one process runs the jobs: it gets past the check, to where the work starts
        experiment.run_experiment(ExperimentConfig(**{**cfg.to_dict(), "workers": 1}), log=lambda *a: None)
