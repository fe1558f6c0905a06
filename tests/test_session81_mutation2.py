"""Session 81 mutation pass, part two: tests that kill the mutants of the actionable-hint audit and the review's
mends (``git diff e9f0f4a..HEAD -- transferkit/``) that the existing tests let live."""

import warnings

import numpy as np
import pytest
import torch

from transferkit.domain import Domain
from transferkit.errors import TransferkitError, TransferkitWarning


def _messages(caught) -> list[str]:
    return [str(w.message) for w in caught]


# ---- rundata._own_test_overlap: a test split of one image is searched too -------------------------------------

def test_a_test_split_of_one_copied_image_is_warned_of(tmp_path):
    # kills: `len(test) == 0` made `len(test) == 1` (a one-image test split skipped)
    from transferkit.config import ExperimentConfig
    from transferkit.rundata import _own_test_overlap
    from transferkit.splits import Split
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    for name in ("src", "tgt"):
        np.savez(tmp_path / f"{name}.npz", x=x.squeeze(1).numpy(), y=np.arange(4) % 2)
    cfg = ExperimentConfig(source=f"npz:{tmp_path / 'src.npz'}", target=f"npz:{tmp_path / 'tgt.npz'}", k=1)
    d = Domain("t", x, torch.tensor([0, 1, 0, 1]), ["a", "b"])
    target = Split(d.subset([0, 1]), d.subset([2]), d.subset([0]))  # its one test image is a train image
    source = Split(d.subset([3]), d.subset([3]), d.subset([3]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _own_test_overlap(cfg, source, target)
    said = [m for m in _messages(caught) if "pixel for pixel" in m]
    assert len(said) == 1 and "of its 1 test images, 1 is a target train image (" in said[0]


# ---- data.is_shipped: a grouped shipped domain, with or without a shift -----------------------------------------

def test_a_grouped_shipped_domain_without_a_shift_is_shipped():
    # kills: is_shipped reading the spec's base without parse_grouped ('mnist@grouped5' is no domain's name)
    from transferkit.data import is_shipped
    assert is_shipped("mnist@grouped5") and is_shipped("digits+noise@grouped5") and is_shipped("mnist")
    assert not is_shipped("npz:/nowhere/x.npz")


# ---- errors.is_quiet: only a filter that takes every transferkit warning decides -------------------------------

def test_an_ignore_filter_of_one_module_or_line_is_not_quiet():
    # kills: is_quiet's `module is None` dropped, and its `not lineno` dropped
    from transferkit.errors import is_quiet
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=TransferkitWarning, module="some_other_module")
        assert not is_quiet()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=TransferkitWarning, lineno=7)
        assert not is_quiet()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=TransferkitWarning)
        assert is_quiet()


def test_is_quiet_under_no_filter_and_under_a_filter_of_every_warning():
    # kills: is_quiet's fallback `return False` made True, and issubclass's arguments swapped
    from transferkit.errors import is_quiet

    class Narrower(TransferkitWarning):
        pass
    with warnings.catch_warnings():
        warnings.resetwarnings()  # no filter at all: a warning is shown
        assert not is_quiet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every warning, transferkit's among them
        assert is_quiet()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=Narrower)  # takes a narrower kind only: not every one
        assert not is_quiet()


# ---- io.links_warned_once: the outermost scope alone starts afresh -----------------------------------------------

def test_a_nested_links_warned_once_does_not_forget_the_links_warned_of(tmp_path):
    # kills: links_warned_once forgetting at every level (`if _LINK_SCOPES[0] == 0` made always true)
    from helpers import linked_img_folder

    from transferkit.io import links_warned_once
    top, elsewhere, warned = linked_img_folder(tmp_path)
    with links_warned_once():  # a benchmark
        assert warned() == 1
        with links_warned_once():  # one of its runs: told once already
            assert warned() == 0
        assert warned() == 0
    with links_warned_once():  # a later run of the process: told again
        assert warned() == 1
    assert (elsewhere / "a.png").read_text() == "keep me"


# ---- fewshot_eval._fewer_episodes: the flags it gives keep a query and a shot ------------------------------------

@pytest.mark.parametrize("counts, n_way, k, flags", [
    ([10, 8, 3], 3, 5, (3, 2, 1)),  # the smallest class of 3: 2 shots and 1 query, never 3 shots and 0 queries
    ([8, 2], 5, 1, (2, 1, 1)),
    ([6, 6, 4], 3, 4, (3, 3, 1)),
])
def test_the_fewer_episodes_hint_keeps_at_least_one_query(counts, n_way, k, flags):
    # kills: `shots = min(k, per_class[ways - 1] - 1)` without its `- 1` (--n-query 0, which episodes refuses)
    from transferkit.fewshot_eval import _fewer_episodes
    assert _fewer_episodes(sorted(counts, reverse=True), n_way, k, "images").endswith(
        "e.g. --n-way {} --k-shot {} --n-query {}".format(*flags))


# ---- results._directories_inside: a benchmark named, not the runs inside it; a benchmark one level down --------

def test_a_folder_of_a_benchmark_names_the_benchmark_not_its_runs(tmp_path):
    # kills: the `not any(q in p.parents ...)` filter dropped, and the "*/plan.json" pattern dropped
    from transferkit.results import check_run_dir
    bench = tmp_path / "bench-demo"
    (bench / "demo" / "jobs").mkdir(parents=True)
    (bench / "plan.json").write_text("{}")
    (bench / "demo" / "config.yaml").write_text("name: demo\n")
    with pytest.raises(TransferkitError, match=r"holds runs, one directory each \(bench-demo\): give one") as e:
        check_run_dir(tmp_path)
    assert str(e.value).rsplit("e.g. ", 1)[1] == str(bench)


# ---- engine: a method's many modules left out of its param groups are named five, then elided --------------------

def test_six_modules_left_out_of_param_groups_are_named_five_then_elided():
    # kills: engine's warning naming first_named(left[:1]) (or a slice of another length) for first_named(left)
    import torch.nn as nn
    import torch.nn.functional as F
    from helpers import tiny_net, toy_domain

    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.base import Method

    class Forgets(Method):
        name = "forgets"
        streams = ("target",)

        def __init__(self, net):
            super().__init__(net)
            for i in range(6):
                setattr(self, f"d{i}", nn.Linear(net.embed_dim, 1))

        def losses(self, batch):
            x, y = batch.target
            f = self.net.forward_features(x)
            extra = sum(getattr(self, f"d{i}")(f).mean() for i in range(6))
            return {"ce": F.cross_entropy(self.net.head(f), y), "d": extra}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Engine(TrainConfig(steps=1, eval_every=1, batch_size=8)).fit(Forgets(tiny_net(4)), target=toy_domain(16))
    said = [m for m in _messages(caught) if "no param group holds" in m]
    assert len(said) == 1 and said[0].startswith("method 'forgets': d0, d1, d2, d3, d4, ... have parameters")


# ---- splits: the range hint only for a whole item in another notation --------------------------------------------

@pytest.mark.parametrize("written", ["0..4x", "1:2b", "0 to 4 cars"])
def test_an_unknown_class_that_only_starts_like_a_range_gets_no_range_hint(written):
    # kills: `_OTHER_RANGE.fullmatch(item)` made `.match(item)` (a name that begins '0..4' read as a range)
    from transferkit.splits import parse_classes
    labels = torch.arange(10).repeat_interleave(2)
    domain = Domain("t", torch.zeros(20, 1, 4, 4), labels, [f"c{i}" for i in range(10)])
    with pytest.raises(TransferkitError, match=r"unknown class .*\]$") as e:
        parse_classes(written, domain)
    assert "a range of ids" not in str(e.value)
