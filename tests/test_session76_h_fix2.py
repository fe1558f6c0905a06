"""Fuzzing-audit leftovers: huge or complex sample weights, a checkpoint folder that cannot be made, byte-string
class names, wrong argument types, a huge class range, empty images and messages that named the wrong thing."""

import helpers
import pytest

from transferkit.api import Transfer
from transferkit.engine import TrainConfig

TINY = TrainConfig(steps=2, batch_size=8)


@pytest.fixture(scope="module")
def fitted():
    d = helpers.toy_domain(6)
    return Transfer("target_only", backbone="lenet", train=TINY).fit(target=d), d


def test_huge_sample_weights_score_as_equal_ones(fitted):
    model, d = fitted
    assert model.score(d, sample_weight=[1e308] * 6) == pytest.approx(model.score(d))
    assert model.score(d, sample_weight=[1e308, 1e308, 0, 0, 0, 0]) == \
        pytest.approx(model.score(d, sample_weight=[1, 1, 0, 0, 0, 0]))
