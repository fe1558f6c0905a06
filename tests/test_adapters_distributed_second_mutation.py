"""Tests from a second mutation pass over adapters.py, errors.py and distributed.py (the first passes:
tests/test_adapters_mutation.py, tests/test_report_distributed_mutation.py): how from_sequential names a
group of named children, refuses a unit size of 0, a head index past the last child and a numbered unit
that takes a child's name, and when it checks the cut (not with a pool of one's own, nor with
verify=False); how from_modules names a unit that raises a ValueError, refuses a left-out module whose
tuple output acts in training (with the verify=False fix), warns of the left-out modules that act in
training when a given shape fails, leaves a lazy model unsized, keeps a container whose children are all
listed, and gives a bfloat16 model a half-precision tolerance; near names in another case, close options,
UnknownNameError as an unquoted KeyError, whole numbers, infinite and 2-d labels, JobsFailed's rows,
WorkerDied's message; init_distributed with gloo (also for "auto" without CUDA), its atexit leave, a group
already joined, LOCAL_RANK's default and LOCAL_WORLD_SIZE in the refusal (CUDA faked: nothing runs on a
GPU), leaving only a joined group, gathered's order along the batch, a rank error with an unreadable RANK.
Each test fails when the code its comment names is changed in the way it says.

Judged equivalent, so not tested: the `torch.manual_seed(0)` of `_check_same_function`'s `seeded`
(fork_rng restores the state after each run, so model and UnitNet draw alike without it); `is_main_process`'s
`rank() == 0` -> `<= 0` (ranks are never negative); `whole_valued`'s `not t.is_floating_point() or` dropped
(integer values are finite and whole); from_sequential's `if m is not None` filter of children dropped (a
Sequential with a None child cannot run its own forward); `_left_out`'s outermost filter by the parent's name
-> by the first path component (a left-out module's descendants are all left out, unless one is shared with
a used module).

Left surviving: `_failing_step`'s `failed is None` branch (reached only when a step fails in the whole net
but not alone: modules that change between calls), as in the first pass. Not tried: the CUDA and spawned
multi-process branches of distributed.py beyond faked calls, `warn`'s `frame is None` stack level (reached
only when every frame is transferkit's)."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import transferkit.distributed as distributed
from transferkit.adapters import from_modules, from_sequential
from transferkit.errors import (
    JobsFailed,
    TransferkitError,
    TransferkitWarning,
    UnknownNameError,
    UnknownOptionError,
    WorkerDied,
    class_ids,
    is_whole,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _named_seq():
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(32, 3)))


class Counter(nn.Module):
    """Adds how many times it ran before: each call computes another function."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x + self.calls


class Twice(nn.Module):
    def forward(self, x):
        return 2 * x


class Picky(nn.Module):
    """A unit that takes only flattened features, and says so with a ValueError."""

    def forward(self, x):
        if x.dim() != 2:
            raise ValueError(f"Picky takes (N, F), got {x.dim()} dims")
        return x


class Flattening(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.picky, self.fc = nn.Conv2d(1, 2, 3), Picky(), nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(self.picky(torch.flatten(self.conv(x), 1)))


# ---- from_sequential ---------------------------------------------------------------------------------
def test_a_group_of_named_children_is_numbered_not_named_after_its_first():
    # kills: `_auto_name`'s `len(group) == 1` dropped (the group conv+act called 'conv')
    net = from_sequential(_named_seq(), units=[2, 1], input_shape=(1, 6, 6))
    assert net.feature_names == ["unit1", "flat"]


def test_a_unit_size_of_zero_is_refused():
    # kills: `all(u > 0 for u in units)` dropped (an empty unit between two others)
    with pytest.raises(TransferkitError, match=r"unit sizes \[2, 0, 1\] must be positive"):
        from_sequential(_named_seq(), units=[2, 0, 1])


def test_a_numbered_unit_that_takes_a_childs_name_is_refused_not_merged():
    # kills: from_sequential's duplicate unit names check dropped (unit2 and the child unit2 merged into one)
    seq = nn.Sequential(OrderedDict(unit2=nn.Conv2d(1, 2, 3), a=nn.ReLU(), b=nn.Flatten(), fc=nn.Linear(32, 3)))
    with pytest.raises(TransferkitError, match=r"duplicate unit names \['unit2', 'unit2'\]"):
        from_sequential(seq, units=[1, 2])


def test_a_pool_of_ones_own_is_not_checked_and_verify_false_skips_the_check():
    # kills: `if pool is None and verify` made `if verify` (a pool of one's own refused); or `if pool is None`
    seq = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net = from_sequential(seq, pool=Twice(), input_shape=(4,))
    assert isinstance(net.pool, Twice)
    counting = nn.Sequential(nn.Linear(4, 4), Counter(), nn.Linear(4, 2))
    with pytest.raises(TransferkitError, match="the units compute another function"):
        from_sequential(counting, input_shape=(4,))
    assert from_sequential(counting, input_shape=(4,), verify=False).feature_names == ["unit1", "unit2"]


def test_a_head_index_past_the_last_child_is_refused():
    # kills: the upper bound of `0 <= h < len(children)` made `<=` (an empty head cut silently)
    with pytest.raises(TransferkitError, match="head_index 4 out of range for 4 children"):
        from_sequential(_named_seq(), head_index=4)


# ---- from_modules: the check -------------------------------------------------------------------------
def test_a_unit_raising_a_value_error_is_named_as_the_failing_step():
    # kills: ValueError dropped from the errors of the units that are named (the user's error escaped raw)
    with pytest.raises(TransferkitError, match=r"unit 'picky' fails on the output of unit 'conv'.*ValueError") as e:
        from_modules(Flattening(), units=["conv", "picky"], head="fc", input_shape=(1, 6, 6))
    assert isinstance(e.value.__cause__, ValueError)


class TupleDrop(nn.Module):
    """A left-out module returning a tuple whose first part is dropped out in training."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout()

    def forward(self, x):
        return self.drop(x), x


class Aux(nn.Module):
    """A conv unit and a head; ``extra`` runs on the features, its output unused."""

    def __init__(self, extra):
        super().__init__()
        self.conv, self.extra, self.fc = nn.Conv2d(1, 2, 3), extra, nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = self.conv(x)
        self.extra(h)
        return self.fc(torch.flatten(h, 1))


def test_a_left_out_module_whose_tuple_output_acts_in_training_is_refused():
    # kills: `_acts_in_training`'s `any(differ(p, q) ...)` of tuple outputs made `all` (the unchanged part hid it);
    # the refusal's fix `pass verify=False` dropped
    with pytest.raises(TransferkitError, match=r"than in eval mode: 'extra' \(TupleDrop") as e:
        from_modules(Aux(TupleDrop()), units=["conv"], head="fc", input_shape=(1, 6, 6))
    assert "verify=False" in str(e.value)


def test_a_given_shape_the_model_does_not_take_warns_of_the_left_out_modules_that_act_in_training():
    # kills: `{also}` dropped from the warning for a given input shape (the left-out batch norm unsaid)
    with pytest.warns(TransferkitWarning, match=r"could not check the cut: model\(x\) fails on a random input of shape "
                                                r"\(2, 1, 8, 8\).*may act in training \('extra' \(BatchNorm2d\)\)"):
        from_modules(Aux(nn.BatchNorm2d(2)), units=["conv"], head="fc", input_shape=(1, 8, 8))


def test_a_lazy_model_is_not_run_to_check_the_cut():
    # kills: the `is_lazy` skip dropped (the check's random batch sized the user's lazy layer)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    net = from_modules(model, units=["0", "1"], head="2", input_shape=(1, 6, 6))
    assert nn.parameter.is_lazy(model[2].weight) and net.input_shape == (1, 6, 6)


# ---- distributed.py ----------------------------------------------------------------------------------
@pytest.fixture
def joined(monkeypatch):
    """init_distributed under WORLD_SIZE=2 with the process group, atexit and the launcher watch faked."""
    calls = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(distributed.atexit, "register", lambda f: calls.append(("atexit", f)))
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv(distributed.LAUNCHER_ENV, raising=False)
    return calls


def test_init_distributed_joins_with_gloo_once_and_leaves_at_exit(joined, monkeypatch):
    # kills: the atexit registration dropped; `device == "auto" and torch.cuda.is_available()` made `device == "auto"`
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    assert distributed.init_distributed("auto") is True
    assert joined == [("init", {"backend": "gloo"}), ("atexit", distributed._leave_process_group)]


def test_init_distributed_in_a_joined_group_joins_no_other(joined, monkeypatch):
    # kills: `or dist.is_initialized()` dropped (a second init_process_group); its `world_size() > 1` made False
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    assert distributed.init_distributed("cpu") is True and joined == []


def test_leaving_destroys_only_a_joined_group(monkeypatch):
    # kills: `_leave_process_group`'s `dist.is_initialized()` test dropped (destroying no group raises)
    destroyed = []
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: destroyed.append(True))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    distributed._leave_process_group()
    assert destroyed == []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    distributed._leave_process_group()
    assert destroyed == [True]


def test_gathered_concatenates_the_ranks_along_the_batch_in_rank_order(monkeypatch):
    # kills: `torch.cat(all_gather(...))` along dim 1 or in reversed order; the one-process shortcut taken always
    import torch.distributed.nn.functional as functional
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(functional, "all_gather", lambda t: (t, t + 10))  # rank 0 holds x, rank 1 x + 10
    out = distributed.gathered(torch.tensor([[1.0, 2.0]]))
    assert out.tolist() == [[1.0, 2.0], [11.0, 12.0]]


def test_a_rank_error_with_an_unreadable_rank_is_left_to_the_caller(monkeypatch, tmp_path):
    # kills: ValueError dropped from record_rank_error's refusals (RANK=x raised instead of returning False)
    monkeypatch.setenv(distributed.EXIT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "x")
    assert distributed.record_rank_error(1, "boom") is False and list(tmp_path.iterdir()) == []


def test_a_process_with_no_local_rank_takes_gpu_0(joined, monkeypatch):
    # kills: LOCAL_RANK's default 0 changed (a single-GPU node refused); LOCAL_WORLD_SIZE read as WORLD_SIZE
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda d: joined.append(("device", d)))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.init_distributed("cuda") is True and joined[0] == ("device", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(TransferkitError, match=r"local rank 1 has no GPU: 1 CUDA device\(s\) for 3 processes"):
        distributed.init_distributed("cuda")


class Mean(nn.Module):
    """Two conv units; the forward averages over space before the linear head and adds ``offset``."""

    def __init__(self, offset=0.0):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)
        self.offset = offset

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3))) + self.offset


def test_a_bfloat16_model_gets_a_half_precision_tolerance():
    # kills: the tolerance's `1e-2 if element_size() < 4` made 1e-4 (a bfloat16 rounding step refused)
    torch.manual_seed(0)
    model = Mean(3e-3).to(torch.bfloat16)  # one bfloat16 step (0.004) at outputs near 0.4
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = from_modules(model, units=["a", "b"], head="fc", pool=pool, input_shape=(1, 6, 6))
    assert net.feature_names == ["a", "b"]
    with pytest.raises(TransferkitError, match="the units compute another function"):
        from_modules(Mean(3e-3).double(), units=["a", "b"], head="fc", pool=pool, input_shape=(1, 6, 6))


# ---- errors.py ---------------------------------------------------------------------------------------
def test_a_name_in_another_case_is_preferred_to_an_anagram():
    # kills: near_name's case-insensitive match made case-sensitive (the anagram 'adnn', sorted first, suggested)
    assert str(UnknownNameError("method", "DANN", ["dann", "adnn"])).endswith("(did you mean 'dann'?)")
    assert str(UnknownNameError("domain", "mnsit", ["mnist", "usps"])).endswith("(did you mean 'mnist'?)")


def test_a_close_option_is_suggested():
    # kills: UnknownOptionError's close match dropped (only the list of options given)
    assert str(UnknownOptionError("mcc", "epsilom", ["lr", "epsilon"])) == \
        "method 'mcc' has no option 'epsilom'; did you mean 'epsilon'?"


def test_an_unknown_name_is_a_key_error_with_an_unquoted_message():
    # kills: UnknownNameError's `__str__` dropped (KeyError quotes its message)
    with pytest.raises(KeyError) as e:
        raise UnknownNameError("shift", "x", ["blur"])
    assert str(e.value) == "unknown shift 'x'; known: blur"


def test_whole_numbers_are_ints_not_bools_and_the_minimum_is_allowed():
    # kills: is_whole's `not isinstance(value, bool)` dropped; `value >= minimum` made `>`
    assert not is_whole(True) and not is_whole(False, 0) and not is_whole(2.0)
    assert is_whole(np.int64(3), 3) and is_whole(0, 0) and not is_whole(2, 3)


def test_infinite_and_two_dimensional_labels_are_refused():
    # kills: `torch.isfinite` dropped from whole_valued (int(inf) raised OverflowError); `labels.dim() == 1` dropped
    with pytest.raises(TransferkitError, match="with values that are not whole numbers"):
        class_ids(torch.tensor([0.0, float("inf")]))
    with pytest.raises(TransferkitError, match=r"1-D tensor of whole class ids, got shape \(2, 1\)"):
        class_ids(torch.tensor([[0], [1]]))


def test_jobs_failed_keeps_its_failures_and_rows():
    # kills: JobsFailed dropping the finished rows
    err = JobsFailed("2 jobs failed", ["f1", "f2"], rows=[{"accuracy": 0.5}])
    assert str(err) == "2 jobs failed" and err.failures == ["f1", "f2"] and err.rows == [{"accuracy": 0.5}]
    assert isinstance(err, TransferkitError)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.fc = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.block(x), 1))


def test_a_container_whose_children_are_all_listed_is_not_left_out():
    # kills: `_left_out`'s `n not in holders` dropped (the block of the listed block.0 and block.1 refused)
    net = from_modules(Block(), units=["block.0", "block.1"], head="fc", input_shape=(1, 6, 6))
    assert net.feature_names == ["block_0", "block_1"]


def test_a_dead_worker_says_the_finished_jobs_are_kept_and_how_to_run_the_others():
    # kills: WorkerDied's message cut to its reason (no word of the kept jobs and the resume)
    err = WorkerDied("a worker process died")
    assert err.reason == "a worker process died"
    assert str(err).startswith("a worker process died; ") and "kept" in str(err) and "resume" in str(err)
