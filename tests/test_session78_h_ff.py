"""Session 78 (h_ff): ft_unit names the network's units for a unit given as a number."""

import re

import pytest


@pytest.mark.parametrize("unit", [[3], ["conv1", 3], [[3]]])
def test_ft_unit_names_the_networks_units_for_a_unit_given_as_a_number(unit):
    from helpers import seeded_lenet

    from transferkit.errors import TransferkitError
    from transferkit.methods.base import METHODS

    net = seeded_lenet()
    with pytest.raises(TransferkitError, match=re.escape(f"unknown unit {unit[-1]!r}; known: ")) as e:
        METHODS["ft_unit"](net, unit=unit)
    assert all(u in str(e.value) for u in net.unit_names)


def test_ft_unit_given_one_number_names_the_networks_units():
    from helpers import seeded_lenet

    from transferkit.errors import TransferkitError
    from transferkit.methods.base import METHODS

    net = seeded_lenet()
    with pytest.raises(TransferkitError, match="ft_unit: option unit must be text or a list of texts or null, got 3; "
                                               "units are ") as e:
        METHODS["ft_unit"](net, unit=3)
    assert all(u in str(e.value) for u in net.unit_names)
