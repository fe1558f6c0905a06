"""The process memo of frozen-prefix activations (transferkit.frozen): keyed by content,
bit-identical to running the units, bounded, and shared by the fits and evaluations of
linear probes on one network."""

import copy

import helpers
import pytest
import torch

from transferkit.engine import Engine, TrainConfig
from transferkit.evaluate import predict_logits
from transferkit.experiment import evaluate_on
from transferkit.fewshot_eval import extract_features
from transferkit.frozen import MEMO, frozen_activations
from transferkit.methods import get_method


def _embedding(net, x):
    net.eval()
    return predict_logits(lambda b: net.forward_units(b, 0, "embedding"), x)


def _counted(net, x, calls):
    return frozen_activations(net, x, "embedding", lambda: calls.append(1) or _embedding(net, x))


def test_a_hit_is_bit_identical_and_the_key_is_content_not_object():
    net, x = helpers.seeded_lenet(), torch.rand(40, 1, 28, 28)
    calls = []
    first = _counted(net, x, calls)
    assert torch.equal(first, _embedding(net, x))
    again = _counted(copy.deepcopy(net), x.clone(), calls)  # other objects, same content
    assert calls == [1] and torch.equal(again, first) and MEMO.hits == 1
    _counted(net, x[:39], calls)  # other images
    assert len(calls) == 2
    with torch.no_grad():
        net.units["conv2"][0].weight[0, 0, 0, 0] += 1e-3  # a changed weight of the prefix
    changed = _counted(net, x, calls)
    assert len(calls) == 3 and not torch.equal(changed, first)
    net.head.weight.data.add_(1.0)  # the head is not part of the embedding's prefix
    _counted(net, x, calls)
    assert len(calls) == 3


def test_a_setting_that_the_repr_leaves_out_is_part_of_the_key():
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    calls = []
    _counted(net, x, calls)
    net.units["conv1"].scale = 2.0  # a plain attribute a custom unit's forward could read
    _counted(net, x, calls)
    assert len(calls) == 2


def test_a_network_with_its_own_forward_units_is_not_memoised():
    class Shifted(type(helpers.seeded_lenet())):
        def forward_units(self, h, start=0, stop=None):
            return super().forward_units(h, start, stop) + 1

    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    net.__class__ = Shifted
    calls = []
    _counted(net, x, calls)
    _counted(net, x, calls)
    assert len(calls) == 2 and len(MEMO) == 0


def test_the_weights_memory_layout_is_part_of_the_key():
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    calls = []
    _counted(net, x, calls)
    _counted(net.to(memory_format=torch.channels_last), x, calls)
    assert len(calls) == 2


def test_the_caller_owns_the_returned_tensor():
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    calls = []
    _counted(net, x, calls).zero_()  # the computed tensor
    _counted(net, x, calls).zero_()  # a hit
    assert torch.equal(_counted(net, x, calls), _embedding(net, x)) and calls == [1]


def test_least_recently_used_entries_go_beyond_the_limit_and_zero_turns_it_off(monkeypatch):
    net = helpers.seeded_lenet()
    xs = [torch.rand(100, 1, 28, 28) for _ in range(3)]  # 100 x 500 floats: 0.19 MB each
    monkeypatch.setattr(MEMO, "limit_mb", 0.4)
    calls = []
    for x in xs:
        _counted(net, x, calls)
    assert len(MEMO) == 2 and MEMO.megabytes() <= 0.4
    _counted(net, xs[2], calls)  # the newest is kept
    assert len(calls) == 3
    _counted(net, xs[0], calls)  # the oldest was dropped
    assert len(calls) == 4
    monkeypatch.setattr(MEMO, "limit_mb", 0)
    MEMO.clear()
    _counted(net, xs[1], calls)
    _counted(net, xs[1], calls)
    assert len(calls) == 6 and len(MEMO) == 0


@pytest.mark.parametrize("method", ["linear_probe", "ft_unit:conv2", "finetune"])
def test_method_logits_equal_its_forward_bit_for_bit(method):
    m = get_method(method)(helpers.seeded_lenet())
    x = torch.rand(1100, 1, 28, 28)  # two chunks of predict_logits
    m.eval()
    expected = predict_logits(m, x)
    assert torch.equal(m.logits(x), expected)
    assert torch.equal(m.logits(x), expected)  # from the memo where the method has a frozen prefix
    assert len(MEMO) == (0 if method == "finetune" else 1)


def test_episode_features_and_a_linear_probe_share_the_test_embeddings():
    net, x = helpers.seeded_lenet(), torch.rand(50, 1, 28, 28)
    feats = extract_features(net, x)
    assert torch.equal(feats, _embedding(net, x)) and len(MEMO) == 1
    m = get_method("linear_probe")(copy.deepcopy(net))
    m.eval()
    expected = predict_logits(m, x)
    assert torch.equal(m.logits(x), expected) and MEMO.hits == 1 and len(MEMO) == 1


def test_linear_probes_on_copies_of_one_network_run_its_units_once_per_image_set(monkeypatch):
    """The fits and test evaluations of three label subsets, as a benchmark runs them: the
    validation and test images go through the frozen units once, and every weight and test
    prediction is the same as without the memo."""
    source = helpers.seeded_lenet()
    val, test = helpers.toy_domain(60, seed=1, classes=10), helpers.toy_domain(80, seed=2, classes=10)
    subsets = [helpers.toy_domain(30, seed=10 + s, classes=10) for s in range(3)]
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=3, patience=None)

    def run():
        torch.manual_seed(0)  # what the fits draw (dropout) from torch's generator
        seen, out = [], []
        for s, labeled in enumerate(subsets):
            m = get_method("linear_probe")(copy.deepcopy(source))
            hook = m.net.units["conv1"].register_forward_hook(lambda mod, inp, o: seen.append(len(inp[0])))
            Engine(cfg, seed=s).fit(m, target=labeled, val=val)
            report = evaluate_on(m, test)
            hook.remove()
            out.append((helpers.state_copy(m), m.logits(test.images), report["accuracy"]))
        return seen, out

    seen, memo = run()
    assert sorted(seen) == sorted([30, 60, 80] + [30, 30])  # each subset once; val and test once
    monkeypatch.setattr(MEMO, "limit_mb", 0)
    seen_off, plain = run()
    assert sorted(seen_off) == sorted([30, 60, 80] * 3)
    for (w1, l1, a1), (w2, l2, a2) in zip(memo, plain):
        assert all(torch.equal(w1[k], w2[k]) for k in w1)
        assert torch.equal(l1, l2) and a1 == a2


def test_steps_before_are_what_forward_units_runs():
    net = helpers.seeded_lenet()
    names = net.feature_names
    assert net.steps_before(names[1]) == [net.unit(names[0])]
    assert net.steps_before("embedding") == [net.unit(n) for n in names] + [net.pool]
    assert net.steps_before("head") == [net.unit(n) for n in names]  # the last map, not pooled


def test_a_method_with_its_own_forward_is_scored_by_it():
    class Doubled(get_method("linear_probe")):
        def forward(self, images):
            return 2 * self.net(images)

    m, x = Doubled(helpers.seeded_lenet()), torch.rand(20, 1, 28, 28)
    m.eval()
    assert torch.equal(m.logits(x), 2 * m.net(x))


def test_a_module_extra_state_is_part_of_the_key():
    class Tagged(torch.nn.Identity):
        _tag = "a"  # private: only the extra state shows it

        def get_extra_state(self):
            return {"tag": self._tag}

        def set_extra_state(self, state):
            self._tag = state["tag"]

    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    net.units["conv1"].append(Tagged())
    calls = []
    _counted(net, x, calls)
    net.units["conv1"][-1]._tag = "b"
    _counted(net, x, calls)
    _counted(net, x, calls)
    assert len(calls) == 2


def test_extract_features_of_a_network_with_its_own_forward_features_is_not_memoised():
    class Halved(type(helpers.seeded_lenet())):
        def forward_features(self, x, layers=None):
            return super().forward_features(x, layers) / 2

    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    net.__class__ = Halved
    assert torch.equal(extract_features(net, x), _embedding(net, x) / 2) and len(MEMO) == 0
