"""Session 79 (mine): a method of several stages passes on whether the stage its weights come from diverged."""

import copy

import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.engine import FitResult
from transferkit.methods import get_method


def _fit(diverged: bool, acc: float = 0.5, n_val: int = 4) -> FitResult:
    return FitResult(steps=3, best_step=3, best_val_accuracy=acc, stopped_early=False, wall_s=0.0,
                     val_accuracy=acc, val_correct=torch.ones(n_val, dtype=torch.bool), val_loss=1.0 - acc,
                     diverged=diverged)


class _Engine:
    def __init__(self, fits: dict, tag: str):
        self.fits, self.tag, self.seed = fits, tag, 0

    def fit(self, method, **kw):
        return self.fits[self.tag]


@pytest.mark.parametrize("first, second", [(True, False), (False, True), (False, False)])
def test_two_stage_is_diverged_when_either_stage_is(first, second):
    net = build_backbone("lenet", num_classes=3)
    fits = {"finetune": _fit(first), "probe": _fit(second)}
    fit = get_method("two_stage")(net).fit_transfer(lambda tag, config=None: _Engine(fits, tag))
    assert fit.diverged is (first or second)


@pytest.mark.parametrize("picked_diverged", [False, True])
def test_flex_is_diverged_only_when_the_picked_candidate_is(monkeypatch, picked_diverged):
    import transferkit.methods.flex as flex

    net = build_backbone("lenet", num_classes=3)
    method = get_method("flex")(net)
    best = method.candidates()[-1]

    def trained(jobs, workers):  # every candidate but the best diverged, at a lower validation accuracy
        return [(copy.deepcopy(net), _fit(c != best or picked_diverged, 0.9 if c == best else 0.1))
                for c in method.candidates()]

    monkeypatch.setattr(flex, "train_candidates", trained)
    monkeypatch.setattr(flex, "candidate_method", lambda *a: None)
    fit = method.fit_transfer(lambda tag, config=None: _Engine({}, tag), val=object.__new__(_Val))
    assert method.picked == best and fit.diverged is picked_diverged


class _Val:
    def __len__(self):
        return 4
