"""Session 80 (h_old): older open items. An absurd learning rate or weight decay is refused up front (not a raw
float32 overflow inside the optimiser), and a group's lr x lr_mult that overflows names the learning rate."""

import helpers
import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method


def _fit(method="finetune", train=None, **options):
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=4, in_channels=1)
    d = helpers.toy_domain(16)
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False, **(train or {}))
    return Engine(cfg).fit(get_method(method)(net, **options), target=d, val=d)


@pytest.mark.parametrize("field, value", [("lr", 1e38), ("lr", 1e300), ("weight_decay", 1e300)])
def test_an_absurd_learning_rate_or_weight_decay_is_refused_up_front(field, value):
    with pytest.raises(TransferkitError, match=f"{field} must be at most 2\\*\\*64"):
        TrainConfig(**{field: value})
    cfg = TrainConfig()
    setattr(cfg, field, value)  # changed in place: refused when the training starts, before any step
    with pytest.raises(TransferkitError, match=f"{field} must be at most 2\\*\\*64"):
        cfg.check()
    TrainConfig(**{field: 2.0 ** 64})  # the bound itself is taken


def test_a_group_learning_rate_past_float32_is_named_not_a_raw_overflow():
    with pytest.raises(TransferkitError, match=r"step at step 0 overflowed float32 .*lr 1e\+19 x its multiplier.*"
                                               r"lower the learning rate, or .*backbone_lr_mult=1e\+30"):
        _fit("ft_slow", train={"lr": 1e19}, backbone_lr_mult=1e30)
