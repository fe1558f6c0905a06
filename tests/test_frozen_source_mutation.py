"""Tests from a mutation pass over frozen.py and source.py: what the memo of frozen activations
keys (dtypes, module names, attribute names, the thread count, the matmul precision, global hooks,
transferkit's own module classes), how it runs on from a stored shorter prefix, how its least
recently used entries go at its bound; what the pre-training cache keys and accepts, and what a
run's pinned source network records. Each test fails when the code it names is changed in the
way its comment says."""

import copy
import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import helpers
import pytest
import torch
from torch import nn

from transferkit import source
from transferkit.backbones import BasicBlock, build_backbone
from transferkit.config import ExperimentConfig
from transferkit.engine import Engine, TrainConfig
from transferkit.evaluate import predict_logits
from transferkit.frozen import MEMO, frozen_activations
from transferkit.io import waiting_lock
from transferkit.methods.supervised import SourceOnly
from transferkit.rundata import Prepared
from transferkit.splits import Split
from transferkit.unitnet import add_input_norm

PRE = TrainConfig(steps=2, eval_every=1, batch_size=8)
CFG = ExperimentConfig(source="toy", target="toy", backbone="lenet", k=2, pretrain=PRE, train=PRE)
QUIET = {"log": lambda *a: None}


def _units(net, x, stop):
    """``net``'s units up to ``stop`` run without the memo."""
    net.eval()
    with torch.no_grad():
        return predict_logits(lambda b: net.forward_units(b, 0, stop), x)


def _memo_mb(*tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


# ---- frozen: what the key holds ------------------------------------------------------------------
def test_a_buffer_of_the_same_bytes_in_another_dtype_is_another_key():
    # kills: the tensor's dtype left out of the key (f"T{shape}{stride}{dtype}{device}" without {dtype})
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    add_input_norm(net, [0.0], [1.0])  # (x - 0) / 1: the images as they are
    reinterpreted = copy.deepcopy(net)
    norm = reinterpreted.unit("conv1").norm
    norm.std = norm.std.view(torch.int32)  # the bytes of 1.0f read as the integer 1065353216
    plain = frozen_activations(net.eval(), x, "conv2")
    divided = frozen_activations(reinterpreted.eval(), x, "conv2")
    assert torch.equal(divided, _units(reinterpreted, x, "conv2")) and not torch.equal(divided, plain)
    assert MEMO.misses == 2 and MEMO.hits == 0


def test_modules_nested_otherwise_in_the_same_order_are_another_key():
    # kills: the module's name (its place in the tree) left out of the key; both prefixes list
    # Sequential, BasicBlock, conv1, bn1, relu, conv2, bn2, Sequential, Conv2d, BatchNorm2d, Tanh
    from transferkit.backbones import from_sequential

    def block(tanh_in_shortcut: bool):
        torch.manual_seed(0)
        shortcut = [nn.Conv2d(1, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4)]
        return BasicBlock(1, 4, stride=2, downsample=nn.Sequential(*shortcut, *[nn.Tanh()] * tanh_in_shortcut))

    after = from_sequential(nn.Sequential(nn.Sequential(block(False), nn.Tanh()), nn.Flatten(),
                                          nn.Linear(4 * 14 * 14, 3)), units=[1, 1])  # tanh(block(x))
    inside = from_sequential(nn.Sequential(nn.Sequential(block(True)), nn.Flatten(),
                                           nn.Linear(4 * 14 * 14, 3)), units=[1, 1])  # tanh on the shortcut only
    x = torch.rand(6, 1, 28, 28)
    first = frozen_activations(after.eval(), x, "unit2")
    second = frozen_activations(inside.eval(), x, "unit2")
    assert torch.equal(first, _units(after, x, "unit2")) and torch.equal(second, _units(inside, x, "unit2"))
    assert not torch.equal(first, second) and MEMO.misses == 2


def test_attributes_whose_values_line_up_under_other_names_are_another_key():
    # kills: the attribute's name left out of the key (h.update(f"@{k}") dropped): sorted by name,
    # both slopes' attributes read False, 0.1, 0.5
    net, x = helpers.tiny_net(4), torch.rand(6, 1, 28, 28)
    steep = nn.LeakyReLU(0.5)
    steep.m = 0.1  # between inplace and negative_slope
    shallow = nn.LeakyReLU(0.1)
    shallow.zz = 0.5  # after negative_slope
    other = copy.deepcopy(net)
    net.unit("unit1")[1], other.unit("unit1")[1] = steep, shallow
    first = frozen_activations(net.eval(), x, "unit2")
    second = frozen_activations(other.eval(), x, "unit2")
    assert torch.equal(second, _units(other, x, "unit2")) and not torch.equal(first, second)


def test_another_thread_count_is_another_key(one_thread):
    # kills: the thread count left out of the key (_backend without threads=)
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    frozen_activations(net.eval(), x, "conv2")
    torch.set_num_threads(2)  # restored by one_thread
    frozen_activations(net, x, "conv2")
    assert (MEMO.misses, MEMO.hits) == (2, 0)
    frozen_activations(net, x, "conv2")
    assert MEMO.hits == 1


def test_another_float32_matmul_precision_is_another_key():
    # kills: the float32 matmul precision left out of the key (_backend without matmul=)
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    frozen_activations(net.eval(), x, "conv2")
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium" if precision != "medium" else "high")
        frozen_activations(net, x, "conv2")
    finally:
        torch.set_float32_matmul_precision(precision)
    assert (MEMO.misses, MEMO.hits) == (2, 0)


@pytest.mark.parametrize("register", [nn.modules.module.register_module_forward_hook,
                                      nn.modules.module.register_module_forward_pre_hook])
def test_a_global_forward_hook_runs_at_every_call_and_nothing_is_memoised(register):
    # kills: _memoisable without `not _global_hooks()`, and _global_hooks without _global_forward_pre_hooks (third
    # pass): the second call read the memo and the hook (here: one call per module of the prefix) did not run
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    calls = []
    handle = register(lambda m, *args: calls.append(type(m).__name__))
    try:
        frozen_activations(net.eval(), x, "conv2")
        once = len(calls)
        frozen_activations(net, x, "conv2")
    finally:
        handle.remove()
    assert once > 0 and len(calls) == 2 * once and len(MEMO) == 0


def test_a_prefix_with_a_module_class_of_transferkit_is_memoised():
    # kills: _OWN_CLASSES without "transferkit." (an InputNorm first in the first unit ran again)
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    add_input_norm(net, [0.5], [0.25])
    assert type(net.unit("conv1").norm).__module__.startswith("transferkit.")
    first = frozen_activations(net.eval(), x, "conv2")
    assert torch.equal(frozen_activations(net, x, "conv2"), first)
    assert (len(MEMO), MEMO.misses, MEMO.hits) == (1, 1, 1)


# ---- frozen: running on from a stored shorter prefix -----------------------------------------------
def test_the_embedding_after_the_stored_whole_units_runs_from_the_images():
    # kills: longest_stored's bound min(len(keys) - 1, len(feature_names)) (feature_names - 1 dropped):
    # the prefix of every unit ("head") was taken as one to run on from, after the last feature unit
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    frozen_activations(net.eval(), x, "head")
    assert torch.equal(frozen_activations(net, x, "embedding"), _units(net, x, "embedding"))
    assert MEMO.extended == 0  # no stored prefix of feature units: the images ran through all of them


def test_a_longer_prefix_runs_on_from_the_longest_stored_one(monkeypatch):
    # kills: longest_stored searching from the shortest prefix up (conv1 alone found first)
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    expected = _units(net, x, "embedding")
    frozen_activations(net, x, "conv2")  # conv1's activations stored
    frozen_activations(net, x, "fc1")  # conv1-conv2's, run on from conv1's
    starts, units = [], net.forward_units
    monkeypatch.setattr(net, "forward_units", lambda h, start=0, stop=None: starts.append(start) or
                        units(h, start, stop))
    assert torch.equal(frozen_activations(net, x, "embedding"), expected)
    assert starts == ["fc1"] and MEMO.extended == 2  # only fc1 (and the pool) ran


def test_a_then_that_changes_its_input_in_place_leaves_the_stored_activations_as_computed():
    # kills: then(chunks[-1]) without the clone: the doubled activations were stored, and the next
    # call doubled them again
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    expected = 2 * _units(net, x, "conv2")
    assert torch.equal(frozen_activations(net, x, "conv2", then=lambda h: h.mul_(2)), expected)
    assert torch.equal(frozen_activations(net, x, "conv2", then=lambda h: h.mul_(2)), expected)
    assert torch.equal(frozen_activations(net, x, "conv2"), expected / 2) and MEMO.hits == 2


# ---- frozen: the least recently used entries go at the bound -------------------------------------
def test_a_hit_makes_an_entry_the_most_recently_used(monkeypatch):
    # kills: get without move_to_end: the entry just read was the first to go
    net, xs = helpers.seeded_lenet().eval(), [torch.rand(10, 1, 28, 28) for _ in range(3)]
    monkeypatch.setattr(MEMO, "limit_mb", 2.5 * _memo_mb(torch.zeros(10, 500)))  # two embeddings fit
    frozen_activations(net, xs[0], "embedding")
    frozen_activations(net, xs[1], "embedding")
    frozen_activations(net, xs[0], "embedding")  # a hit: xs[1]'s is the least recently used now
    frozen_activations(net, xs[2], "embedding")  # drops xs[1]'s
    assert (len(MEMO), MEMO.misses, MEMO.hits) == (2, 3, 1)
    frozen_activations(net, xs[0], "embedding")
    assert (MEMO.misses, MEMO.hits) == (3, 2)


def test_running_on_from_a_stored_prefix_makes_it_the_most_recently_used(monkeypatch):
    # kills: longest_stored without move_to_end: the prefix just run on from was the first to go
    net, x, y = helpers.seeded_lenet().eval(), torch.rand(10, 1, 28, 28), torch.rand(10, 1, 28, 28)
    conv1, conv2 = torch.zeros(10, 20, 12, 12), torch.zeros(10, 50, 4, 4)  # the sizes of the two prefixes
    monkeypatch.setattr(MEMO, "limit_mb", _memo_mb(conv1, conv1, conv2) - _memo_mb(conv2) / 2)
    frozen_activations(net, x, "conv2")
    frozen_activations(net, y, "conv2")
    frozen_activations(net, x, "fc1")  # runs on from x's conv1 activations; y's go to make room
    assert (len(MEMO), MEMO.extended) == (2, 1)
    frozen_activations(net, x, "conv2")
    assert (MEMO.misses, MEMO.hits) == (3, 1)


def test_an_entry_of_exactly_the_limit_is_stored_and_kept(monkeypatch):
    # kills: put's fit check `< limit_mb` and the eviction loop's `>= limit_mb` (either leaves it out)
    net, x = helpers.seeded_lenet().eval(), torch.rand(10, 1, 28, 28)
    monkeypatch.setattr(MEMO, "limit_mb", _memo_mb(torch.zeros(10, 500)))
    frozen_activations(net, x, "embedding")
    assert len(MEMO) == 1 and MEMO.megabytes() == MEMO.limit_mb
    frozen_activations(net, x, "embedding")
    assert MEMO.hits == 1


def test_activations_beyond_the_limit_are_not_stored_and_the_others_stay(monkeypatch):
    # kills: put without its fit check: the oversized entry was stored, then the eviction loop dropped
    # every entry, the older ones first
    net, x, y = helpers.seeded_lenet().eval(), torch.rand(10, 1, 28, 28), torch.rand(10, 1, 28, 28)
    monkeypatch.setattr(MEMO, "limit_mb", 1.5 * _memo_mb(torch.zeros(10, 500)))
    frozen_activations(net, x, "embedding")
    frozen_activations(net, y, "conv2")  # 10 x 2,880 values: over the limit alone
    assert len(MEMO) == 1
    frozen_activations(net, x, "embedding")
    assert MEMO.hits == 1


def test_an_entry_that_needs_two_evictions_gets_them(monkeypatch):
    # kills: the eviction `while` made an `if`: one entry dropped, the memo left over its limit
    net, xs = helpers.seeded_lenet().eval(), [torch.rand(10, 1, 28, 28) for _ in range(2)]
    monkeypatch.setattr(MEMO, "limit_mb", 2.5 * _memo_mb(torch.zeros(10, 500)))
    for x in xs:
        frozen_activations(net, x, "embedding")
    frozen_activations(net, torch.rand(22, 1, 28, 28), "embedding")  # 2.2 of the others: both go
    assert len(MEMO) == 1 and MEMO.megabytes() <= MEMO.limit_mb


# ---- source: the pre-training cache --------------------------------------------------------------
def _data(names=None) -> Prepared:
    """Toy source and target splits (4 classes, 28 px); ``names``: the source's class names."""
    def split(seed, names=None):
        parts = [helpers.toy_domain(n, seed=seed + i) for i, n in enumerate((32, 12, 12))]
        return Split(*(parts if names is None else [replace(d, class_names=list(names)) for d in parts]))
    return Prepared(source=split(0, names), target=split(10), channels=1)


def test_a_source_network_file_gives_back_its_prototype_head_s_metric_and_scale(tmp_path):
    # kills: read_source_file without restore_head (the defaults, sqeuclidean and 10, came back)
    from transferkit.heads import PrototypeHead
    from transferkit.networks import save_network
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=4, head="prototype")
    net.head.metric, net.head.scale = "cosine", 7.0
    path = save_network(net, tmp_path / "proto.safetensors", class_names=list("0123"))
    read = source.read_source_file(CFG, _data(), path)
    assert isinstance(read.head, PrototypeHead) and (read.head.metric, read.head.scale) == ("cosine", 7.0)


def test_a_source_with_other_class_names_is_pre_trained_again(tmp_path, monkeypatch):
    # kills: the class names left out of the cache key (Domain.digest hashes images and labels only):
    # the network stored with the names 0-3 was read for a source that names its classes a-d
    from transferkit.networks import read_network_file, stored_classes
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    first = source.pretrain_source(CFG, _data(), **QUIET)[1]
    renamed = source.pretrain_source(CFG, _data(names="abcd"), **QUIET)[1]
    assert not renamed["cached"] and renamed["path"] != first["path"]
    path = Path(renamed["path"])
    assert stored_classes(path, read_network_file(path)[1]) == list("abcd")


def test_a_cached_network_whose_record_is_gone_or_no_object_is_trained_again(tmp_path, monkeypatch):
    # kills: the except without OSError (a missing record's FileNotFoundError escaped) and the
    # record's `isinstance(meta, dict)` check dropped (an AttributeError on [1].get escaped)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data, logs = _data(), []
    info = source.pretrain_source(CFG, data, **QUIET)[1]
    record = Path(info["path"]).with_suffix(".json")
    for damage in (record.unlink, lambda: record.write_text("[1]")):
        damage()
        logs.clear()
        again = source.pretrain_source(CFG, data, log=logs.append)[1]
        assert not again["cached"] and again["digest"] == info["digest"]  # the same network, trained again
        assert any("unreadable or changed" in line for line in logs) and record.exists()


def test_a_cached_network_with_a_record_from_before_digests_is_read_back(tmp_path, monkeypatch):
    # kills: meta.get("digest") == digest without the default (a record without a digest, as
    # pre-trainings wrote them before, was taken for a changed network and trained again)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data, logs = _data(), []
    info = source.pretrain_source(CFG, data, **QUIET)[1]
    record = Path(info["path"]).with_suffix(".json")
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "digest"}))
    again = source.pretrain_source(CFG, data, log=logs.append)[1]
    assert again["cached"] and again["digest"] == info["digest"] and not logs


def test_the_pre_training_draws_its_batches_from_the_config_s_seed(tmp_path, monkeypatch):
    # kills: Engine(train, seed=0, ...) in pretrain_source: the seed chose the initial weights only
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data, cfg = _data(), replace(CFG, seed=3)
    net = source.pretrain_source(cfg, data, **QUIET)[0]
    torch.manual_seed(3)  # the initial weights of seed 3, as _initial_source_net draws them
    expected = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    Engine(PRE, seed=3).fit(SourceOnly(expected), source=data.source.train, val=data.source.val)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in net.state_dict().items())


def test_a_pre_training_waits_while_another_holds_its_network_s_lock(tmp_path, monkeypatch):
    # kills: the lock taken only under several data-parallel processes (world_size() != 1): a second
    # run started the same pre-training beside the first
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data = _data()
    path = Path(source.pretrain_source(CFG, data, **QUIET)[1]["path"])
    path.unlink()  # to be trained again, by the thread below
    started, result, lines = threading.Event(), {}, []

    def log(line):
        lines.append(line)
        if line.startswith("pre-training"):
            started.set()
    thread = threading.Thread(target=lambda: result.update(source.pretrain_source(CFG, data, log=log)[1]))
    with waiting_lock(path.with_suffix(".lock")):  # another process pre-training this network
        thread.start()
        assert not started.wait(1.0)  # it waits: no "pre-training ..." while the lock is held
        assert lines[-1].startswith("waiting for another process that pre-trains the same network")
    thread.join(30)
    assert started.is_set() and not result["cached"] and path.exists()


# ---- source: the run's pinned network ------------------------------------------------------------
def test_pinning_records_the_pre_training_and_a_resume_reads_the_record_back(tmp_path, monkeypatch):
    # kills: the record without "steps"; the returned path left at the cache's file (the jobs read the
    # network from there, not from the run's pinned copy); a resume's wall_s overwritten with 0.0
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data, run_dir = _data(), tmp_path / "run"
    run_dir.mkdir()
    _, info = source.run_source_network(CFG, data, run_dir, **QUIET)
    assert info["path"] == str(run_dir / "source.safetensors") and not info["cached"]
    record = json.loads((run_dir / "source.json").read_text())
    assert record == {k: info[k] for k in ("val_accuracy", "steps", "wall_s", "digest")} and record["steps"] == 2
    _, resumed = source.run_source_network(CFG, data, run_dir, **QUIET)
    assert resumed["cached"] and resumed["path"] == info["path"]
    assert {k: resumed[k] for k in record} == record and record["wall_s"] > 0  # the seconds it took, not 0.0


def test_a_pinned_network_without_its_record_is_read_back(tmp_path, monkeypatch):
    # kills: read_json of a record that does not exist (a run pinned before records: "unreadable")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    data, run_dir = _data(), tmp_path / "run"
    run_dir.mkdir()
    _, info = source.run_source_network(CFG, data, run_dir, **QUIET)
    (run_dir / "source.json").unlink()
    _, resumed = source.run_source_network(CFG, data, run_dir, **QUIET)
    assert resumed["digest"] == info["digest"] and resumed["wall_s"] == 0.0 and "steps" not in resumed


def test_pinning_a_network_drops_the_checkpoints_grown_from_the_one_pinned_before(tmp_path, monkeypatch):
    # kills: run_source_network without _drop_checkpoints_of_another_source (the unfinished job
    # would resume from weights grown from another source network)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    run_dir, logs = tmp_path / "run", []
    (run_dir / "checkpoints" / "finetune-k=2-s0").mkdir(parents=True)
    (run_dir / "source.json").write_text(json.dumps({"digest": "0" * 16}))  # source.safetensors deleted
    _, info = source.run_source_network(CFG, _data(), run_dir, log=logs.append)
    assert not (run_dir / "checkpoints").exists()
    assert any(f"({'0' * 16}), not from this one ({info['digest']})" in line for line in logs)


def test_an_empty_checkpoints_folder_or_a_record_that_is_no_object_is_no_error_when_pinning(tmp_path):
    # kills: _drop_checkpoints_of_another_source without the emptiness check (no checkpoint, yet it
    # said the jobs start again) and without AttributeError caught (a record [1] raised)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "source.json").write_text(json.dumps({"digest": "bbbb"}))
    logged = []
    source._drop_checkpoints_of_another_source(tmp_path, "aaaa", logged.append)
    assert (tmp_path / "checkpoints").is_dir() and not logged
    (tmp_path / "checkpoints" / "finetune-k=2-s0").mkdir()
    (tmp_path / "source.json").write_text("[1]")
    source._drop_checkpoints_of_another_source(tmp_path, "aaaa", logged.append)
    assert not (tmp_path / "checkpoints").exists() and "(not recorded)" in logged[0]


def test_a_pin_by_link_is_the_cached_file_itself_and_a_pin_by_copy_is_another_file(tmp_path):
    # kills: _pin without the return after the link: the hard link was replaced by a copy
    cached = tmp_path / "cached.safetensors"
    cached.write_bytes(b"a network")
    source._pin(cached, tmp_path / "linked", link=True)
    source._pin(cached, tmp_path / "copied", link=False)
    assert os.stat(tmp_path / "linked").st_ino == cached.stat().st_ino and cached.stat().st_nlink == 2
    assert (tmp_path / "copied").read_bytes() == b"a network"
    assert os.stat(tmp_path / "copied").st_ino != cached.stat().st_ino
