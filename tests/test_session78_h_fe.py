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
