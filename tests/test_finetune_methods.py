"""Fine-tuning family (seed 002 baselines, seed 004, seed 001): exactly the intended
parameters change, early stopping restores the best checkpoint, tap, parameterised names."""

import copy

import pytest
import torch
from helpers import changed, state_copy, toy_domain

from transferkit.api import Transfer
from transferkit.backbones import build_backbone
from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.methods import get_method
from transferkit.methods.finetune import FtUnit, fc_units
from transferkit.methods.flex import val_accuracy
from transferkit.methods.tap import fit_linear, tap

CFG = TrainConfig(steps=6, batch_size=16, eval_every=3, patience=None, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")
toy = toy_domain
state = state_copy


def train(name, backbone="lenet", cfg=CFG, **options):
    torch.manual_seed(0)
    net = build_backbone(backbone, num_classes=4, in_channels=1, image_size=28)
    before = state(net)
    method = get_method(name)(net, **options)
    fit = method.fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=0), target=toy(), val=toy(seed=1))
    return before, state(net), method, fit


@pytest.mark.parametrize("name,backbone,expected", [
    ("ft_fc1", "lenet", {"head."}),
    ("ft_fc2", "lenet", {"head.", "units.fc1."}),
    ("ft_fc", "lenet", {"head.", "units.fc1."}),
    ("ft_unit:conv2", "lenet", {"units.conv2."}),
    ("ft_unit:conv3", "convnet4", {"units.conv3."}),  # BatchNorm statistics of the other units untouched
    ("linear_probe", "lenet", {"head."}),
])
def test_exactly_the_intended_units_change(name, backbone, expected):
    before, after, _, _ = train(name, backbone)
    diff = changed(before, after)
    tensors = [k for k in diff if "num_batches_tracked" not in k]
    assert {k for k in before if k.startswith(tuple(expected)) and "num_batches" not in k} == set(tensors)


def test_ft_all_and_ft_slow_change_every_parameter_with_slower_backbone():
    for name in ("ft_all", "finetune", "ft_slow"):
        before, after, method, _ = train(name)
        assert changed(before, after) == set(before), name
    groups = method.param_groups()
    assert groups[0]["lr_mult"] == 0.1 and "lr_mult" not in groups[1]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in method.net.head.parameters()}


def test_ft_ss_trains_head_and_scale_shift_only():
    before, after, method, _ = train("ft_ss")
    assert changed(before, after) == {k for k in before if k.startswith("head.")}
    ss = {k for k in after if "scale_shift" in k}
    assert len(ss) == 2 * 3 and all(not torch.equal(after[k], torch.ones_like(after[k]))
                                    and not torch.equal(after[k], torch.zeros_like(after[k])) for k in ss)


def test_image_unit_trains_only_the_image_unit(monkeypatch):
    short = TrainConfig(steps=2, batch_size=8, eval_every=2, patience=None, progress=False)
    starts, real_fit = [], Engine.fit

    def recording_fit(self, method, **kw):
        starts.append(state(method.net))
        return real_fit(self, method, **kw)

    monkeypatch.setattr(Engine, "fit", recording_fit)
    for kind in ("colour", "stn", "unet"):
        before, after, method, _ = train("image_unit", cfg=short, kind=kind)
        assert method.net.unit_names[0] == "image"
        assert not changed(before, after)
        image = {k for k in after if k.startswith("units.image.")}
        assert image and changed({k: starts[-1][k] for k in image}, after), kind  # the inserted unit trained
    fast = get_method("image_unit")(build_backbone("lenet", 4), kind="colour", lr_mult=30)
    assert fast.param_groups()[0]["lr_mult"] == 30


def test_image_units_start_as_identity():
    from transferkit.methods.image_unit import make_image_unit

    x = toy().images[:4].expand(-1, 3, -1, -1)
    for kind in ("colour", "pixel", "stn", "unet"):
        assert torch.allclose(make_image_unit(kind, 3)(x), x, atol=1e-5), kind


def test_the_pixel_unit_can_undo_the_hsv_shift_and_the_colour_unit_cannot():
    from transferkit.methods.image_unit import make_image_unit
    from transferkit.shifts import hsv

    x = torch.rand(256, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    z = hsv(x.clone())
    rmse = {}
    for kind in ("colour", "pixel"):
        torch.manual_seed(0)
        unit = make_image_unit(kind, 3)
        opt = torch.optim.Adam(unit.parameters(), 1e-2)
        for _ in range(400):
            loss = ((unit(z) - x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rmse[kind] = float(loss.detach().sqrt())
    assert rmse["pixel"] < 0.06 < 0.15 < rmse["colour"], rmse  # HSV is not an affine map of the colour


def test_two_stage_tunes_all_then_a_new_head(monkeypatch):
    stages, real_fit = [], Engine.fit

    def recording_fit(self, method, **kw):
        before = state(method.net)
        fit = real_fit(self, method, **kw)
        stages.append((before, state(method.net)))
        return fit

    monkeypatch.setattr(Engine, "fit", recording_fit)
    before, after, method, fit = train("two_stage")
    assert changed(before, after) == set(before)
    assert "stage1_val_accuracy" in method.extra_results() and fit.steps == 2 * CFG.steps
    (b1, a1), (b2, a2) = stages
    assert changed(b1, a1) == set(b1)  # stage 1: every unit
    head = {k for k in a1 if k.startswith("head.")}
    assert head and changed(a1, a2) == head  # stage 2: the fine-tuned features stay frozen
    assert changed(a1, b2) == head and changed(b2, a2) == head  # a new head, then trained


def test_early_stopping_restores_best_validation_checkpoint():
    cfg = TrainConfig(steps=60, batch_size=8, lr=0.05, eval_every=2, patience=3, progress=False)
    _, _, method, fit = train("ft_unit:fc1", cfg=cfg)
    accs = [r["val_accuracy"] for r in fit.history]
    assert fit.best_val_accuracy == max(accs)
    assert val_accuracy(method.net, toy(seed=1)) == pytest.approx(fit.best_val_accuracy)
    assert fit.history[-1]["step"] == fit.steps


def test_parameterised_names():
    cls = get_method("ft_unit:conv2")
    assert cls is get_method("ft_unit:conv2") and issubclass(cls, FtUnit) and cls.name == "ft_unit:conv2"
    with pytest.raises(UnknownNameError):
        get_method("nope:conv2")
    with pytest.raises(UnknownNameError):
        get_method("ft_unit:nounit")(build_backbone("lenet", 4))
    assert fc_units(build_backbone("lenet", 4)) == ["fc1", "head"]


def test_tap_one_accuracy_per_unit_and_method():
    net = build_backbone("lenet", 4)
    train_d, test_d = toy(), toy(seed=1)
    rows = tap(net, train_d, test_d)
    assert [r["unit"] for r in rows] == net.feature_names
    for r in rows:  # each row is its unit's own linear classifiers scored on the test features
        from transferkit.methods.tap import unit_features
        f_train = unit_features(net, train_d.images, [r["unit"]])[r["unit"]]
        f_test = unit_features(net, test_d.images, [r["unit"]])[r["unit"]]
        assert r["dim"] == f_train.shape[1]
        for kind in ("svm", "softmax"):
            lin = fit_linear(kind, f_train, train_d.labels, 4)
            with torch.no_grad():
                assert r[f"{kind}_accuracy"] == float((lin(f_test).argmax(1) == test_d.labels).float().mean())
    assert max(r["softmax_accuracy"] for r in rows) > 0.9  # the toy classes are separable from some unit
    before, after, method, fit = train("tap")
    assert not changed(before, after) and set(method.extra_results()["tap_val_accuracy"]) == set(net.feature_names)
    assert val_accuracy(method, toy(seed=1)) == pytest.approx(fit.best_val_accuracy)


@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_fit_linear_with_two_of_more_classes_present_separates_them(kind):
    x = torch.cat([torch.randn(20, 3) - 3, torch.randn(20, 3) + 3])
    y = torch.tensor([0] * 20 + [2] * 20)  # class 1 of 3 absent from the training features
    lin = fit_linear(kind, x, y, num_classes=3)
    assert torch.equal(lin(x).argmax(1), y)
    with pytest.raises(TransferkitError, match="at least 2 classes"):
        fit_linear(kind, x[:20], y[:20], num_classes=3)


def test_ft_fc_counts_only_fully_connected_units():
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    assert get_method("ft_fc")(net, n=2).trainable_units() == ["fc1", "head"]
    with pytest.raises(TransferkitError, match=r"ends in 2 \(fc1, head\); n must be in \[1, 2\]"):
        get_method("ft_fc")(net, n=3)  # would reach conv2
    assert get_method("ft_fc1")(net, n=1).trainable_units() == ["head"]
    with pytest.raises(TransferkitError, match=r"ft_fc1 tunes the last 1 unit\(s\); for n=2 use ft_fc"):
        get_method("ft_fc1")(net, n=2)


def test_transfer_api_runs_multi_stage_methods():
    model = Transfer("fast_flex", backbone="lenet", train=CFG, pretrain=TrainConfig(steps=5, progress=False))
    model.fit(target=toy(), source=toy(seed=2), val=toy(seed=1))
    test = toy(seed=3)
    predicted = torch.as_tensor(model.predict(test.images))
    assert model.score(test) == pytest.approx(float((predicted == test.labels).float().mean()))
    assert model.method_.picked in model.net_.unit_names + ["all"]


def test_named_units_options_and_backbones_that_do_not_fit_are_refused_by_name():
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    with pytest.raises(TransferkitError, match="ft_unit:conv2 tunes unit conv2; for unit=fc1 use ft_unit:fc1"):
        get_method("ft_unit:conv2")(net, unit="fc1")
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 4))
    one_fc = from_sequential(seq, input_shape=(1, 28, 28))  # conv, ReLU, Flatten, then the head only
    assert fc_units(one_fc) == ["head"]  # the parameter-free units are not fully connected units
    with pytest.raises(TransferkitError, match=r"ft_fc2 tunes the last 2 fully connected unit\(s\), but this "
                                               r"backbone ends in 1 \(head\): use ft_fc1"):
        get_method("ft_fc2")(one_fc)


def test_networks_without_input_shape_train_middle_units_from_cached_activations():
    """from_sequential's input_shape is optional: the engine sizes the frozen prefix's cache
    from one image (it asked the network for its unit shapes and failed)."""
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False)
    torch.manual_seed(0)
    net = from_sequential(copy.deepcopy(seq))
    assert net.input_shape is None
    seen = []
    net.unit("unit1").register_forward_hook(lambda m, i, o: seen.append(len(o)))
    Engine(cfg, seed=0).fit(get_method("ft_fc2")(net), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert sum(seen) == 1 + 16 + 8  # one image to size the cache, then each image once: later steps read the cache
    torch.manual_seed(0)
    flex = get_method("flex")(from_sequential(copy.deepcopy(seq)))
    flex.fit_transfer(lambda tag, config=None: Engine(cfg, seed=0), target=toy_domain(16),
                      val=toy_domain(8, seed=1))
    assert flex.picked in flex.candidates()


def test_image_unit_takes_the_channels_of_the_first_convolution_when_the_network_does_not_say():
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    from transferkit.methods.image_unit import IMAGE_UNIT
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 4))
    for kind in ("colour", "stn", "unet"):
        method = get_method("image_unit")(from_sequential(seq), kind=kind)  # no input_shape
        assert method.net(toy(n=4).images).shape == (4, 4) and IMAGE_UNIT in method.net.feature_names
    flat = from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4)))
    with pytest.raises(TransferkitError, match=r"image unit needs the network's image channels.*input_shape"):
        get_method("image_unit")(flat)


def test_image_unit_trains_an_image_unit_already_there_only_when_it_is_of_the_kind_asked():
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    get_method("image_unit")(net, kind="colour")  # inserts a colour unit into net
    assert get_method("image_unit")(net, kind="colour").kind == "colour"
    with pytest.raises(TransferkitError, match="already has an image unit of kind 'colour'; image_unit kind='unet'"):
        get_method("image_unit")(net, kind="unet")
    with pytest.raises(UnknownNameError):
        get_method("image_unit")(net, kind="pix2pix")


def test_tap_without_validation_says_it_picked_on_training_accuracy():
    torch.manual_seed(0)
    method = get_method("tap")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    seen = []
    handle = method.net.unit("conv1").register_forward_hook(lambda m, inp, out: seen.append(len(inp[0])))
    target = toy()
    with pytest.warns(UserWarning, match="picked on training accuracy"):
        fit = method.fit_transfer(lambda tag, config=None: Engine(CFG, seed=0), target=target)
    handle.remove()
    assert sum(seen) == len(target)  # the training features serve as the selection features
    extra = method.extra_results()
    assert fit.best_val_accuracy is None and "tap_val_accuracy" not in extra
    assert set(extra["tap_train_accuracy"]) == set(method.net.feature_names)


def test_option_names_are_checked_by_pattern_for_new_methods():
    from transferkit.methods.base import _check_option_values
    for name, value, message in (("head_lr_mult", 0, "must be a finite number > 0"),
                                 ("tau_new", -1.0, "must be a finite number > 0"),
                                 ("extra_weight", -0.5, "must be a finite number >= 0")):
        with pytest.raises(TransferkitError, match=f"m: option {name} {message}"):
            _check_option_values("m", {name: value})
    _check_option_values("m", {"head_lr_mult": 0.5, "tau_new": 2.0, "extra_weight": 0.0})


def test_a_method_that_keeps_the_head_fixed_refuses_target_classes_the_source_head_lacks():
    from transferkit.fitting import build_method
    source, new = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]
    for name in ("ft_unit:conv1", "image_unit"):
        net = build_backbone("lenet", num_classes=5, in_channels=1, image_size=28)
        with pytest.raises(TransferkitError, match=f"{name.split(':')[0]}.*keeps the head fixed.*'5', '6'"):
            build_method(get_method(name), net, {}, source, new)
        build_method(get_method(name), build_backbone("lenet", num_classes=5, in_channels=1, image_size=28), {},
                     source, source[::-1])  # the same classes in another order: every row is a trained one
    build_method(get_method("ft_unit:head"), build_backbone("lenet", 5, 1, 28), {}, source, new)  # trains the head


def test_ft_ss_tunes_again_the_scale_shift_of_a_network_tuned_by_ft_ss():
    import copy

    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    first = get_method("ft_ss")(net)
    again = get_method("ft_ss")(copy.deepcopy(first.net))
    assert len(again.scale_shifts) == len(first.scale_shifts) == 3
    ids = {id(p) for p in again.ss_parameters()}
    assert ids and ids <= {id(p) for g in again.param_groups() for p in g["params"]}
    x = torch.rand(2, 1, 28, 28)  # the hooks are not doubled: the copy computes what the first computes
    with torch.no_grad():
        assert torch.equal(again.net(x), first.net(x))


def test_scale_shift_of_a_linear_layer_scales_features_not_tokens():
    from transferkit.methods.finetune import add_scale_shift

    class OneUnit:  # add_scale_shift reads only net.unit(name)
        def unit(self, name):
            return lin

    lin = torch.nn.Linear(8, 4)
    ss, = add_scale_shift(OneUnit(), ["tokens"])
    with torch.no_grad():
        ss.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        x = torch.rand(2, 4, 8)  # N x T x D: T == out_features, where scaling dimension 1 went unnoticed
        out, plain = lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias)
    assert torch.allclose(out, plain * torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert lin(torch.rand(2, 5, 8)).shape == (2, 5, 4)


def test_scale_shift_covers_attention_blocks_and_identity_parameters_take_no_weight_decay():
    from transferkit.methods.finetune import add_scale_shift

    block = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)

    class OneUnit:
        def unit(self, name):
            return block

    found = add_scale_shift(OneUnit(), ["block"])
    assert len(found) == 3  # the attention (once, on its output) and the two feed-forward layers
    assert not hasattr(block.self_attn.out_proj, "scale_shift")  # its hook would never fire
    block(torch.rand(2, 5, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in found for p in m.parameters())
    x = torch.rand(2, 5, 16)
    with torch.no_grad():
        before = block(x)
        block.self_attn.scale_shift.shift.fill_(1.0)  # the attention's shift reaches the block's output
        assert not torch.allclose(block(x), before)
    cfg = TrainConfig(weight_decay=0.1)
    decays = {}
    for name, kw in (("ft_ss", {}), ("image_unit", {"kind": "colour"}), ("image_unit", {"kind": "stn"}),
                     ("image_unit", {"kind": "unet"})):
        opt = Engine(cfg)._optimizer(get_method(name)(build_backbone("lenet", 10, 1, 28), **kw))
        decays[kw.get("kind", name)] = [g["weight_decay"] for g in opt.param_groups]
    assert decays == {"ft_ss": [0.1, 0.0], "colour": [0.0], "stn": [0.0], "unet": [0.1]}


def test_ft_ss_kernel_scales_each_2d_kernel_and_shifts_the_bias():
    import pickle

    from transferkit.methods.finetune import KernelScaleShift, ScaleShift
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    x, keys = torch.rand(3, 1, 28, 28), set(net.state_dict())
    with torch.no_grad():
        before = net(x)
    method = get_method("ft_ss")(net, scaling="kernel")
    conv1, conv2, fc1 = net.unit("conv1")[0], net.unit("conv2")[0], net.unit("fc1")[1]
    assert [type(m.scale_shift) for m in (conv1, conv2, fc1)] == [KernelScaleShift, KernelScaleShift, ScaleShift]
    assert conv2.scale_shift.scale.shape == (50, 20, 1, 1) and conv2.scale_shift.shift.shape == (50,)
    assert keys <= set(net.state_dict())  # the pre-trained weights keep their keys
    assert sum(p.numel() for p in method.ss_parameters()) == 20 * 1 + 20 + 50 * 20 + 50 + 2 * 500
    with torch.no_grad():
        assert torch.equal(net(x), before)  # identity at the start
        conv2.scale_shift.scale.uniform_(0.5, 1.5)
        conv2.scale_shift.shift.uniform_(-1, 1)
        h = torch.rand(2, 20, 12, 12)
        by_hand = torch.nn.functional.conv2d(h, conv2.weight * conv2.scale_shift.scale,
                                             conv2.bias + conv2.scale_shift.shift)
        assert torch.allclose(conv2(h), by_hand)
    again = pickle.loads(pickle.dumps(method))  # a worker process hands the method back
    with torch.no_grad():
        assert torch.equal(again.net(x), net(x))
    weights = state_copy(net)
    Engine(TrainConfig(steps=3, batch_size=8, progress=False), seed=0).fit(method, target=toy_domain(n=32))
    moved = changed(weights, state_copy(net))
    assert "units.conv2.0.scale_shift.scale" in moved and not any(k.endswith(".weight") and "units" in k
                                                                  for k in moved)
    with pytest.raises(TransferkitError, match="scaling must be one of channel, kernel"):
        get_method("ft_ss")(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28), scaling="filter")
    with pytest.raises(TransferkitError, match="other scaling"):
        get_method("ft_ss")(copy.deepcopy(net), scaling="channel")
    assert isinstance(get_method("ft_ss")(copy.deepcopy(net)).scale_shifts[1], KernelScaleShift)  # the default
    same = torch.nn.Conv2d(1, 2, 3)
    same.__class__ = type("Conv2dSame", (torch.nn.Conv2d,), {})  # a subclass with a forward of its own

    class OneUnit:
        def unit(self, name):
            return same

    from transferkit.methods.finetune import add_scale_shift
    with pytest.warns(UserWarning, match="one scale per output channel instead"):
        ss, = add_scale_shift(OneUnit(), ["u"], kernel=True)
    assert isinstance(ss, ScaleShift)


def test_target_only_re_initialises_a_given_network():
    net = build_backbone("lenet", 4)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.01)
    fit = Transfer("target_only", backbone="lenet", train=TrainConfig(steps=1, batch_size=8, lr=1e-6)).fit(
        target=toy_domain(32), net=net)
    w = fit.method_.net.unit("conv2")[0].weight
    assert (w - 0.01).abs().max() > 1e-3  # it fine-tuned the given (pre-trained) weights before
    assert torch.all(next(net.parameters()) == 0.01)  # the caller's network is untouched


def test_transfer_fit_keeps_the_callers_rng_and_trains_inside_no_grad():
    train = TrainConfig(steps=2, batch_size=8)
    torch.manual_seed(1234)
    r0 = torch.rand(3)
    torch.manual_seed(1234)
    plain = Transfer("target_only", backbone="lenet", train=train).fit(target=toy_domain(16))
    assert torch.equal(torch.rand(3), r0)  # fit reseeded the global generator: the caller's draws repeated
    with torch.no_grad():  # was refused: "no loss term has a gradient"
        quiet = Transfer("target_only", backbone="lenet", train=train).fit(target=toy_domain(16))
    x = toy_domain(4, 1).images
    assert torch.equal(plain.predict_logits(x), quiet.predict_logits(x))


def test_a_refit_that_fails_leaves_the_last_model_whole(monkeypatch):
    model = Transfer("target_only", backbone="lenet", train=TrainConfig(steps=2, batch_size=8)).fit(
        target=toy_domain(16, classes=4))
    before = model.predict_logits(toy_domain(4, 1).images)

    def interrupted(self, method, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(target=toy_domain(16, classes=3))
    assert model.classes_ == toy_domain(16, classes=4).class_names
    assert torch.equal(model.predict_logits(toy_domain(4, 1).images), before)  # was the new 3-class method's


def test_flex_takes_a_seed_near_two_to_the_64():
    from transferkit.methods.flex import Flex

    method = Flex(build_backbone("lenet", num_classes=4))
    fit = method.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=1, batch_size=8), seed=2**64 - 1),
                              target=toy_domain(16), val=toy_domain(8, 1))
    assert fit.steps >= 1  # seed * 1009 overflowed torch.manual_seed


def test_scoring_a_domain_of_other_classes_says_fit_with_them_as_target():
    src = toy_domain(16, classes=4)
    model = Transfer("source_only", backbone="lenet", train=TrainConfig(steps=1, batch_size=8)).fit(source=src)
    other = toy_domain(8, classes=3)
    other = Domain("other", other.images, other.labels, ["x", "y", "z"])  # classes the model does not predict
    with pytest.raises(TransferkitError, match="to predict other classes, fit with them as target="):
        model.score(other)
    assert 0 <= model.score(toy_domain(8, classes=3)) <= 1  # classes 0-2: some of the fitted ones
