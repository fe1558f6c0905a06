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
