"""The process memo of frozen-prefix activations (transferkit.frozen): keyed by content,
bit-identical to running the units, only for prefixes its key describes, bounded, and
shared by the fits and evaluations of linear probes on one network."""

import copy

import helpers
import pytest
import torch

from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.evaluate import predict_logits
from transferkit.fewshot_eval import extract_features
from transferkit.fitting import evaluate_on
from transferkit.frozen import LIMIT_ENV, MEMO, FrozenMemo, frozen_activations
from transferkit.methods import get_method


def _embedding(net, x):
    net.eval()
    return predict_logits(lambda b: net.forward_units(b, 0, "embedding"), x)


def _run(net, x, stop="embedding"):
    """The memo's answer, which must equal running the units."""
    net.eval()
    out = frozen_activations(net, x, stop)
    assert torch.equal(out, predict_logits(lambda b: net.forward_units(b, 0, stop), x))
    return out


def _misses_after(*changes):
    """Run a LeNet's first unit, then again after each change: the misses, one per distinct key."""
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    _run(net, x, "conv2")
    for change in changes:
        change(net)
        _run(net, x, "conv2")
    return MEMO.misses


def test_a_hit_is_bit_identical_and_the_key_is_content_not_object():
    net, x = helpers.seeded_lenet(), torch.rand(40, 1, 28, 28)
    first = _run(net, x)
    again = _run(copy.deepcopy(net), x.clone())  # other objects, same content
    assert (MEMO.misses, MEMO.hits) == (1, 1) and torch.equal(again, first)
    _run(net, x[:39])  # other images
    _run(net, x, stop="conv2")  # another prefix
    assert MEMO.misses == 3
    with torch.no_grad():
        net.units["conv2"][0].weight[0, 0, 0, 0] += 1e-3
    assert not torch.equal(_run(net, x), first) and MEMO.misses == 4
    net.head.weight.data.add_(1.0)  # not part of the embedding's prefix
    _run(net, x)
    assert MEMO.misses == 4


def test_a_longer_prefix_runs_on_from_a_stored_shorter_one_bit_for_bit():
    net, x = helpers.seeded_lenet(), torch.rand(1100, 1, 28, 28)  # two chunks
    fresh = {stop: _embedding_free(net, x, stop) for stop in ("fc1", "embedding")}
    MEMO.clear()
    _run(net, x, "conv2")  # conv1's activations stored
    assert torch.equal(_run(copy.deepcopy(net), x.clone(), "fc1"), fresh["fc1"])  # conv2 alone ran on them
    assert MEMO.extended == 1 and MEMO.hits == 0
    assert torch.equal(_run(net, x, "embedding"), fresh["embedding"])  # on from conv1-conv2 (fc1's input)
    assert MEMO.extended == 2
    with torch.no_grad():
        net.units["conv1"][0].weight[0, 0, 0, 0] += 1e-3  # the stored prefixes are of other weights now
    assert not torch.equal(_run(net, x, "fc1"), fresh["fc1"]) and MEMO.extended == 2


def _embedding_free(net, x, stop):
    """The units run without the memo."""
    net.eval()
    with torch.no_grad():
        return predict_logits(lambda b: net.forward_units(b, 0, stop), x)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's, from mkldnn.flags
def test_settings_buffers_layout_and_backend_are_part_of_the_key():
    def stride(net):
        net.units["conv1"][0].stride = (2, 2)  # a plain attribute that changes the output

    def private(net):
        net.units["conv1"][0]._note = "x"

    def buffer(net):
        net.units["conv1"][0].register_buffer("extra", torch.zeros(2), persistent=False)

    def buffer_value(net):
        net.units["conv1"][0].extra.add_(1)

    def layout(net):
        net.to(memory_format=torch.channels_last)

    assert _misses_after(stride, private, buffer, buffer_value, layout) == 6
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    _run(net, x)
    with torch.backends.mkldnn.flags(enabled=False):
        _run(net, x)
    assert MEMO.misses == 8


def test_only_prefixes_the_key_describes_are_memoised():
    x = torch.rand(8, 1, 28, 28)

    class Scaled(torch.nn.Module):  # a class of one's own: its output may depend on anything
        def forward(self, h):
            return h * 2

    net = helpers.seeded_lenet()
    net.units["conv1"].append(Scaled())
    _run(net, x)
    net = helpers.seeded_lenet()
    handle = net.units["conv1"].register_forward_hook(lambda m, i, o: o)
    _run(net, x)
    handle.remove()
    _run(net, x)  # stored now
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert frozen_activations(net, x, "embedding").dtype == torch.bfloat16
    assert _run(net, x).dtype == torch.float32
    assert (len(MEMO), MEMO.hits, MEMO.misses) == (1, 1, 1)


def test_a_network_with_its_own_forward_units_is_not_memoised():
    class Shifted(type(helpers.seeded_lenet())):
        def forward_units(self, h, start=0, stop=None):
            return super().forward_units(h, start, stop) + 1

    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    net.__class__ = Shifted
    _run(net, x)
    _run(net, x)
    assert len(MEMO) == 0


def test_a_class_redefined_under_its_old_name_is_another_key():  # as importlib.reload makes one
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    relu = net.units["conv1"][-1]
    assert type(relu) is torch.nn.ReLU
    first = _run(net, x, "conv2")
    doubled = type("ReLU", (torch.nn.ReLU,), {"__module__": torch.nn.ReLU.__module__,
                                              "forward": lambda self, h: torch.relu(h) * 2})
    relu.__class__ = doubled
    assert torch.equal(_run(net, x, "conv2"), first * 2) and MEMO.misses == 2


def test_activations_are_stored_and_read_back_in_the_layout_they_were_computed_in(monkeypatch):
    from transferkit import evaluate
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 3 * 28 * 28)  # chunks of 3 images: the last one short
    net = helpers.seeded_lenet().to(memory_format=torch.channels_last)
    x = torch.rand(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    computed = torch.cat([net.eval().forward_units(x[i:i + 3], 0, "conv2") for i in range(0, 8, 3)])
    miss = frozen_activations(net, x, "conv2")
    hit = frozen_activations(net, x, "conv2")
    assert (MEMO.misses, MEMO.hits) == (1, 1) and torch.equal(miss, computed) and torch.equal(hit, computed)
    chunk = net.forward_units(x[:3], 0, "conv2")
    assert miss.stride() == hit.stride() and miss[:3].stride() == chunk.stride()


def test_a_lazy_unit_is_memoised_once_its_parameters_are_made():  # until then it has a pre-hook
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    net = from_sequential(nn.Sequential(nn.Flatten(), nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3)), units=[3])
    x = torch.rand(5, 1, 4, 4)
    assert MEMO.key(net, x, "embedding") is None
    net.eval()
    net(x)
    assert MEMO.key(net, x, "embedding") is not None


def test_a_function_kept_in_an_attribute_leaves_the_prefix_out():
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    net.units["conv1"][0].forward = lambda h: h  # an instance's own forward on a torch.nn class
    assert MEMO.key(net, x, "conv2") is None and MEMO.key(net, x, "embedding") is None
    assert MEMO.key(helpers.seeded_lenet(), x, "conv2") is not None


def test_the_caller_owns_the_returned_tensor():
    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    _run(net, x).zero_()  # the computed tensor
    frozen_activations(net, x, "embedding").zero_()  # a hit
    assert torch.equal(_run(net, x), _embedding(net, x)) and MEMO.misses == 1


def test_least_recently_used_entries_go_beyond_the_limit_and_zero_turns_it_off(monkeypatch):
    net = helpers.seeded_lenet()
    xs = [torch.rand(100, 1, 28, 28) for _ in range(3)]  # 100 x 500 floats: 0.19 MB each
    monkeypatch.setattr(MEMO, "limit_mb", 0.4)
    for x in xs:
        _run(net, x)
    assert len(MEMO) == 2 and MEMO.megabytes() <= 0.4
    _run(net, xs[2])  # the newest is kept
    assert MEMO.misses == 3
    _run(net, xs[0])  # the oldest was dropped
    assert MEMO.misses == 4
    monkeypatch.setattr(MEMO, "limit_mb", 0)
    MEMO.clear()
    _run(net, xs[1])
    _run(net, xs[1])
    assert (len(MEMO), MEMO.misses, MEMO.hits) == (0, 0, 0)


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "0")
    assert FrozenMemo().limit_mb == 0
    monkeypatch.setenv(LIMIT_ENV, "")
    assert FrozenMemo().limit_mb == 1024
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(LIMIT_ENV, bad)
        with pytest.raises(TransferkitError, match=LIMIT_ENV):
            assert FrozenMemo().limit_mb is None  # read when used (stop 72: not at import, where it was a traceback)


@pytest.mark.parametrize("method", ["linear_probe", "ft_unit:conv2", "finetune"])
def test_method_logits_equal_its_forward_bit_for_bit(method):
    m = get_method(method)(helpers.seeded_lenet())
    x = torch.rand(1100, 1, 28, 28)  # two chunks of predict_logits
    m.eval()
    expected = predict_logits(m, x)
    assert torch.equal(m.logits(x), expected)
    assert torch.equal(m.logits(x), expected)  # from the memo where the method has a frozen prefix
    assert (len(MEMO), MEMO.hits) == ((0, 0) if method == "finetune" else (1, 1))


def test_logits_of_a_method_or_network_with_its_own_forward_or_hooks_are_its_forward():
    class Doubled(get_method("linear_probe")):
        def forward(self, images):
            return 2 * self.net(images)

    class Halved(type(helpers.seeded_lenet())):
        def forward(self, x):
            return super().forward(x) / 2

    x = torch.rand(20, 1, 28, 28)
    m = Doubled(helpers.seeded_lenet())
    m.eval()
    assert torch.equal(m.logits(x), 2 * m.net(x))
    m = get_method("linear_probe")(helpers.seeded_lenet())
    m.net.__class__ = Halved
    m.eval()
    assert torch.equal(m.logits(x), m.net(x))
    class Shifted(type(helpers.seeded_lenet())):
        def forward_units(self, h, start=0, stop=None):
            return super().forward_units(h, start, stop) + 1

    m = get_method("linear_probe")(helpers.seeded_lenet())
    m.net.__class__ = Shifted
    m.eval()
    assert torch.equal(m.logits(x), m.net(x))
    m = get_method("linear_probe")(helpers.seeded_lenet())
    m.register_forward_hook(lambda mod, i, o: o + 100)
    m.eval()
    assert torch.equal(m.logits(x), m.net(x) + 100)
    assert len(MEMO) == 0


def test_episode_features_and_a_linear_probe_share_the_test_embeddings():
    net, x = helpers.seeded_lenet(), torch.rand(50, 1, 28, 28)
    feats = extract_features(net, x)
    assert torch.equal(feats, _embedding(net, x)) and len(MEMO) == 1
    m = get_method("linear_probe")(copy.deepcopy(net))
    m.eval()
    expected = predict_logits(m, x)
    assert torch.equal(m.logits(x), expected) and MEMO.hits == 1 and len(MEMO) == 1


def test_extract_features_of_a_network_with_its_own_forward_features_is_not_memoised():
    class Halved(type(helpers.seeded_lenet())):
        def forward_features(self, x, layers=None):
            return super().forward_features(x, layers) / 2

    net, x = helpers.seeded_lenet(), torch.rand(8, 1, 28, 28)
    net.__class__ = Halved
    assert torch.equal(extract_features(net, x), _embedding(net, x) / 2) and len(MEMO) == 0


def test_linear_probes_on_copies_of_one_network_run_its_units_once_per_image_set(monkeypatch):
    """The fits and test evaluations of three label subsets, as a benchmark runs them: the
    validation and test images go through the frozen units once, and every weight and test
    prediction is the same as without the memo."""
    source = helpers.seeded_lenet()
    val, test = helpers.toy_domain(60, seed=1, classes=10), helpers.toy_domain(80, seed=2, classes=10)
    subsets = [helpers.toy_domain(30, seed=10 + s, classes=10) for s in range(3)]
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=3, patience=None)

    def run():
        torch.manual_seed(0)  # what the fits draw from torch's generator
        out = []
        for s, labeled in enumerate(subsets):
            m = get_method("linear_probe")(copy.deepcopy(source))
            Engine(cfg, seed=s).fit(m, target=labeled, val=val)
            report = evaluate_on(m, test)
            out.append((helpers.state_copy(m), m.logits(test.images), report["accuracy"]))
        return out

    memo = run()
    # misses: each subset's stream, the validation set (trained in channels-last), the test set
    # (evaluated in the default layout); hits: the second scoring of the test set, then the
    # validation set and both scorings of the test set for each later subset
    assert (MEMO.misses, MEMO.hits) == (3 + 1 + 1, 1 + 2 * 3)
    monkeypatch.setattr(MEMO, "limit_mb", 0)
    plain = run()
    for (w1, l1, a1), (w2, l2, a2) in zip(memo, plain):
        assert all(torch.equal(w1[k], w2[k]) for k in w1)
        assert torch.equal(l1, l2) and a1 == a2


def test_steps_before_are_what_forward_units_runs():
    net = helpers.seeded_lenet()
    names = net.feature_names
    assert net.steps_before(names[1]) == [net.unit(names[0])]
    assert net.steps_before("embedding") == [net.unit(n) for n in names] + [net.pool]
    assert net.steps_before("head") == [net.unit(n) for n in names]  # the last map, not pooled


def test_transfer_scores_a_frozen_prefix_once_then_from_the_memo():
    from transferkit.api import Transfer
    from transferkit.backbones import build_backbone
    torch.manual_seed(0)
    target = helpers.toy_domain(n=40)
    model = Transfer("linear_probe", train=TrainConfig(steps=2, progress=False)).fit(
        target=target, net=build_backbone("lenet", 4))
    test = helpers.toy_domain(n=300, seed=5)
    expected = predict_logits(model.method_, test.images)  # the method's forward, no memo
    hits = MEMO.hits
    assert torch.equal(model.predict_logits(test), expected)
    assert model.score(test) == model.report(test)["accuracy"] == int((expected.argmax(1) == test.labels).sum()) / 300
    assert MEMO.hits == hits + 2  # score and report read predict's frozen activations
