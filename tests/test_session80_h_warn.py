"""Tests of session 80's fix of a warning repeated at every fit of a loop (h_warn): ``quiet()`` and the other
silencing of the library (``within_memory``'s meta build) no longer make Python forget which warnings it has
shown; a plugin's own ``warnings.warn`` inside ``quiet()`` stays silent, under ``-W error`` too, and ``-W error``
still stops a command on a warning outside it."""
import warnings

from helpers import toy_domain

from transferkit import TrainConfig, Transfer
from transferkit.errors import TransferkitWarning, ignored, quiet, warn


def _shown(between):
    """The warnings shown of one location's, issued three times with ``between()`` run after each."""
    registry = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            warnings.warn_explicit("at the user's line", TransferkitWarning, "user.py", 7, registry=registry)
            between()
    return [str(w.message) for w in caught]


def _silenced(context):
    with context():
        warn("a repeat of a check's")
        warnings.warn("a plugin's own", TransferkitWarning, stacklevel=1)


def test_quiet_leaves_python_s_record_of_shown_warnings_as_it_is():
    assert _shown(lambda: _silenced(quiet)) == ["at the user's line"]


def test_ignored_leaves_python_s_record_of_shown_warnings_as_it_is():
    assert _shown(lambda: _silenced(ignored)) == ["at the user's line"]


def test_the_meta_build_of_within_memory_leaves_python_s_record_as_it_is():
    import torch

    from transferkit.methods.base import within_memory
    assert _shown(lambda: within_memory("m", lambda: torch.nn.Linear(2, 2), hidden=2)) == ["at the user's line"]


def test_a_loop_of_fits_shows_its_warning_once(tmp_path, monkeypatch):
    import torch._dynamo  # noqa: F401  torch's first optimizer imports it, whose sympy adds a filter (once)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    target = toy_domain(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):  # pretrain= is not used by target_only: one warning per fit, at this line
            Transfer("target_only", train=TrainConfig(steps=1, eval_every=1, batch_size=8),
                     pretrain=TrainConfig(steps=3)).fit(target=target)
    assert [str(w.message).split(":")[1] for w in caught] == [" pretrain= is not used"]


def test_a_plugin_s_own_warning_inside_quiet_stays_silent_under_error_filters():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what python -W error sets
        with quiet():
            warnings.warn("a plugin's", TransferkitWarning, stacklevel=1)
            warn("ours")
        try:
            warn("outside")
        except TransferkitWarning as e:
            assert str(e) == "outside"
        else:
            raise AssertionError("-W error let a warning outside quiet() pass")


class _Mine(UserWarning):
    pass


def test_filters_added_inside_are_kept_and_an_equal_one_is_not_taken_out():
    with warnings.catch_warnings():
        before = list(warnings.filters)
        with quiet():
            warnings.simplefilter("ignore", TransferkitWarning)  # equal to quiet's own filter, which it replaces
            warnings.simplefilter("ignore", _Mine)
        assert warnings.filters == [("ignore", None, _Mine, None, 0),
                                    ("ignore", None, TransferkitWarning, None, 0), *before]
    with warnings.catch_warnings():
        with quiet():
            warnings.resetwarnings()  # quiet's filter gone: nothing to take out
        assert warnings.filters == []


def test_two_threads_quiet_in_turns_leave_the_filters_as_they_were():
    with warnings.catch_warnings():
        before = list(warnings.filters)
        first, second = quiet(), quiet()  # entered by one thread, then another; left in the same order
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        assert warnings.filters == before  # catch_warnings had left the first one's filter for good


def test_python_w_error_stops_a_command_on_a_warning_in_one_line(tmp_path, monkeypatch, capsys):
    import numpy as np

    from transferkit import cli
    masks = np.zeros((8, 28, 28), np.uint8)
    masks[:, 10:18, 10:18] = 1  # 0/1 masks: the 'almost black' warning
    np.savez(tmp_path / "m.npz", x=masks, y=np.arange(8) % 2)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what python -W error sets
        code = cli.main(["show", f"npz:{tmp_path / 'm.npz'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("transferkit: error: npz file"), err
