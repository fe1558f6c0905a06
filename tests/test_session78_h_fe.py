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
