"""Session 79 mutation pass (h_mut: 47 mutants of this session's library change run against the
tests/test_session79*.py files: 33 killed there; the 14 survivors below get a test here, but E4
(``errors._inside`` without ``is_dataclass``: a ``<string>`` frame whose ``self`` is a transferkit object
that is no dataclass, not reachable from the library), judged equivalent):
L1 ``_flat_pair`` checks only the source's dimensions; L3 ``_flat_pair`` without ``_check_pair``;
L7 / L8 ``difference_loss`` without its 2-D checks; L10 / L11 ``scale_invariant_mse`` without its N x ... check;
S4 ``high <= num_classes``; S7 the label range checked from two labels on; S10 the refusal without ``who``;
F2 ``NORMAL_CI_EPISODES = 29``; F6 ``<= NORMAL_CI_EPISODES`` in ``episodes_note``; E7 ``_WRAPPERS`` without
contextlib; C1 ``seed <= 2**32`` in ``_check_seed``."""

import contextlib
import warnings

import pytest
import torch

from transferkit.errors import TransferkitError, TransferkitWarning, warn
from transferkit.fewshot_eval import NORMAL_CI_EPISODES, episodes_note, evaluate_episodes
from transferkit.losses import coral, difference_loss, mmd2, scale_invariant_mse
from transferkit.methods.semantic import matching_log_probs, nearest_support_scores


def test_pair_losses_refuse_a_1d_target_and_features_of_two_widths():  # L1, L3
    with pytest.raises(TransferkitError, match="^coral needs N x D"):
        coral(torch.randn(4, 3), torch.randn(4))
    with pytest.raises(TransferkitError, match="^mmd2: source and target features must have the same width"):
        mmd2(torch.randn(4, 3), torch.randn(4, 4))


@pytest.mark.parametrize("shared, private", [(torch.randn(4), torch.randn(4)),
                                             (torch.randn(4, 3, 2), torch.randn(4, 3))])
def test_difference_loss_refuses_codes_that_are_not_b_x_d(shared, private):  # L7, L8
    with pytest.raises(TransferkitError, match="^difference_loss needs B x d_c"):
        difference_loss(shared, private)


def test_scale_invariant_mse_refuses_1d_inputs_of_one_shape():  # L10, L11
    with pytest.raises(TransferkitError, match="^scale_invariant_mse needs"):
        scale_invariant_mse(torch.randn(5), torch.randn(5))


@pytest.mark.parametrize("score", [matching_log_probs, nearest_support_scores])
def test_a_support_label_equal_to_num_classes_is_refused_even_alone(score):  # S4, S7
    q = torch.randn(2, 4)
    for support, labels in ((torch.randn(3, 4), torch.tensor([0, 1, 3])), (torch.randn(1, 4), torch.tensor([3]))):
        with pytest.raises(TransferkitError, match=f"^{score.__name__}: support labels must be class ids in"):
            score(q, support, labels, 3)


def test_the_width_refusal_names_the_function():  # S10
    with pytest.raises(TransferkitError, match="^matching_log_probs: queries and support"):
        matching_log_probs(torch.randn(2, 4), torch.randn(3, 5), torch.tensor([0, 1, 2]), 3)


def test_the_few_episodes_note_ends_at_the_constant():  # F2, F6
    feats, labels = torch.randn(60, 4, generator=torch.Generator().manual_seed(0)), torch.arange(60) % 3
    out = evaluate_episodes(feats, labels, heads="prototype", n_way=3, k_shot=1, n_query=2, episodes=29)["prototype"]
    assert NORMAL_CI_EPISODES == 30 and "29 episodes" in out["note"]
    row = {"episodes": NORMAL_CI_EPISODES, "classes": 3, "setting": "3-way 1-shot"}
    assert "too narrow" not in episodes_note([row]) and "too narrow" in episodes_note([{**row, "episodes": 29}])


class _Wrapped(contextlib.ContextDecorator):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_warning_from_inside_a_context_decorator_points_at_the_callers_line():  # E7
    import transferkit.errors as errors

    def library_function():
        warn("from inside")

    library_function.__code__ = library_function.__code__.replace(
        co_filename=errors._PACKAGE + "fake.py")  # as a transferkit function, then wrapped by contextlib
    wrapped = _Wrapped()(library_function)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TransferkitWarning)
        wrapped()
    assert caught and caught[0].filename == __file__


def test_show_refuses_a_seed_of_2_to_the_32(capsys, tmp_path):  # C1
    from transferkit.cli import main
    assert main(["show", "digits", "--out", str(tmp_path / "x.png"), "--seed", str(2**32)]) == 2
    assert "--seed must be in 0..2**32 - 1" in capsys.readouterr().err
