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
