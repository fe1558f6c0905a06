import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from transferkit.backbones import (
    UnitNet,
    build_backbone,
    from_modules,
    from_sequential,
    list_backbones,
    load_torchvision_weights,
    resnet18,
)
from transferkit.errors import TransferkitError, TransferkitWarning, UnknownNameError
from transferkit.heads import CosineHead, PrototypeHead

UNITS = {
    "convnet4": ["conv1", "conv2", "conv3", "conv4", "fc1", "head"],
    "lenet": ["conv1", "conv2", "fc1", "head"],
    "convnet7": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "head"],
    "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4", "head"],
}
CASES = [(n, c, s) for n in sorted(UNITS) for c, s in [(1, 28), (3, 28), (3, 32)]]
_NETS = {}


def make(name, c, s, num_classes=7):
    key = (name, c, s, num_classes)
    if key not in _NETS:
        torch.manual_seed(0)
        _NETS[key] = build_backbone(name, num_classes, in_channels=c, image_size=s).eval()
    return _NETS[key]


def images(c, s, n=2):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(1))


def test_registry():
    assert list_backbones() == sorted(UNITS)
    with pytest.raises(UnknownNameError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", 10)
    with pytest.raises(UnknownNameError, match="dropout"):
        build_backbone("convnet4", 10, dropout=0.5)
    assert build_backbone("convnet7", 10, dropout=0.5).unit("fc1")[-1].p == 0.5
    with pytest.raises(TransferkitError, match="too small"):
        build_backbone("convnet4", 10, image_size=8)


@pytest.mark.parametrize("name,c,s", CASES)
def test_shapes_and_features(name, c, s):
    net = make(name, c, s)
    assert net.unit_names == UNITS[name]
    assert list(net.units) == UNITS[name] and net.units["head"] is net.head
    x = images(c, s)
    with torch.no_grad():
        logits = net(x)
        emb = net.forward_features(x)
        acts = net.forward_features(x, net.unit_names + ["embedding"])
    assert logits.shape == (2, 7) and net.num_classes == 7
    assert emb.shape == (2, net.embed_dim)
    shapes = net.unit_output_shapes()
    assert list(shapes) == net.unit_names + ["embedding"]
    assert shapes["embedding"] == (net.embed_dim,) and shapes["head"] == (7,)
    for n, a in acts.items():
        assert tuple(a.shape[1:]) == shapes[n], n
    assert torch.equal(acts["head"], logits) and torch.equal(acts["embedding"], emb)


@pytest.mark.parametrize("name,c,s", CASES)
def test_forward_units_composition(name, c, s):
    net = make(name, c, s)
    x = images(c, s)
    with torch.no_grad():
        ref = net(x)
        splits = list(range(len(net.unit_names) + 1)) + net.unit_names + ["embedding", -1]
        for sp in splits:
            h = net.forward_units(x, 0, sp)
            torch.testing.assert_close(net.forward_units(h, sp), ref, rtol=0, atol=0, msg=str(sp))
        assert net.forward_units(x, 0, "embedding").shape == (2, net.embed_dim)
        mid = net.unit_names[1]
        h = net.forward_units(x, 0, mid)
        torch.testing.assert_close(net.forward_units(h, mid, "head"), net.forward_units(x, 0, "head"))
    with pytest.raises(TransferkitError, match="after"):
        net.forward_units(x, "head", 1)
    with pytest.raises(UnknownNameError):
        net.forward_units(x, "nope")


def test_forward_features_runs_only_needed_units():
    net = make("convnet4", 1, 28)
    calls = []
    hooks = [net.unit(n).register_forward_hook(lambda *a, n=n: calls.append(n)) for n in net.unit_names]
    with torch.no_grad():
        out = net.forward_features(images(1, 28), ["conv2", "conv1"])
    for h in hooks:
        h.remove()
    assert list(out) == ["conv2", "conv1"] and calls == ["conv1", "conv2"]


def test_table_sizes_and_state_dict_keys():
    c4 = build_backbone("convnet4", 5, in_channels=3, image_size=28)
    fc1 = c4.unit("fc1")[1]
    assert (fc1.in_features, fc1.out_features) == (64, 64)
    assert (c4.head.in_features, c4.head.out_features) == (64, 5)
    assert "units.conv1.0.weight" in c4.state_dict() and "head.weight" in c4.state_dict()
    ln = build_backbone("lenet", 10)
    fc1 = ln.unit("fc1")[1]
    assert (fc1.in_features, fc1.out_features) == (800, 500)
    assert ln.unit("conv2")[0].out_channels == 50 and ln.unit("conv1")[0].kernel_size == (5, 5)
    assert [type(m) for m in ln.unit("conv1")] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU]  # = conv-ReLU-pool, see below


@pytest.mark.parametrize("name", ["lenet", "convnet4", "convnet7"])
def test_pooling_before_relu_trains_bit_for_bit_as_the_textbook_order(name):
    """_conv_unit pools before its ReLU (cheaper); both orders give identical outputs and
    gradients, in training mode (BatchNorm batch statistics) and the channels-last layout."""
    import copy

    torch.manual_seed(0)
    net = build_backbone(name, 10, in_channels=3, image_size=28)
    textbook = copy.deepcopy(net)
    for unit in textbook.feature_names:
        seq = textbook.unit(unit)
        kinds = [type(m) for m in seq]
        if nn.MaxPool2d in kinds:
            i = kinds.index(nn.MaxPool2d)
            assert kinds[i + 1] is nn.ReLU
            seq[i], seq[i + 1] = seq[i + 1], seq[i]
    assert textbook.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(16, 3, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    grads = []
    for n in (net, textbook):
        n = n.to(memory_format=torch.channels_last).train()
        n.zero_grad()
        out = n(x)
        nn.functional.cross_entropy(out, y).backward()
        grads.append((out, [p.grad for p in n.parameters()], [b.clone() for b in n.buffers()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))
    assert all(torch.equal(a, b) for a, b in zip(grads[0][2], grads[1][2]))


def test_resnet18_param_count_and_torchvision_layout():
    net = resnet18(1000, in_channels=3, image_size=224)
    assert not net.small_input
    assert net.num_parameters() == 11_689_512
    small = build_backbone("resnet18", 1000, in_channels=3, image_size=32)
    assert small.small_input and small.num_parameters() == 11_689_512 - 64 * 3 * (49 - 9)
    keys = net.state_dict().keys()
    assert {"units.stem.conv1.weight", "units.layer1.0.conv1.weight", "units.layer2.0.downsample.0.weight",
            "head.weight", "head.bias"} <= set(keys)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def _tv_state_dict(net):
    inv = {}
    for k, v in net.state_dict().items():
        k = k.replace("units.stem.", "").replace("units.", "").replace("head.", "fc.")
        inv[k] = v.clone()
    return inv


def test_load_torchvision_weights_from_state_dict():
    torch.manual_seed(0)
    src = resnet18(1000, image_size=224)
    sd = _tv_state_dict(src)
    assert "conv1.weight" in sd and "fc.weight" in sd and "layer4.1.bn2.running_mean" in sd
    dst = resnet18(1000, image_size=224)
    report = load_torchvision_weights(dst, sd)
    assert not report["skipped"]
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    gray = resnet18(10, in_channels=1, image_size=224)
    report = load_torchvision_weights(gray, sd)
    assert report["skipped"] == ["head.weight", "head.bias"]
    w = gray.state_dict()["units.stem.conv1.weight"]
    assert torch.allclose(w, sd["conv1.weight"].sum(1, keepdim=True))
    with pytest.raises(TransferkitError, match="small_input=False"):
        load_torchvision_weights(resnet18(10, image_size=32), sd)


def test_imagenet_weights_come_with_the_input_normalisation_they_expect():
    from transferkit.backbones import IMAGENET_MEAN, IMAGENET_STD
    torch.manual_seed(0)
    sd = _tv_state_dict(resnet18(1000, image_size=64))
    plain, normed = resnet18(1000, image_size=64), resnet18(1000, image_size=64)
    load_torchvision_weights(plain, sd, normalize=False)
    load_torchvision_weights(normed, sd)
    load_torchvision_weights(normed, sd)  # a second load keeps one normalisation
    assert list(normed.unit("stem")._modules) == ["norm", "conv1", "bn1", "relu", "maxpool"]
    assert "norm" not in plain.unit("stem")._modules
    plain.eval(), normed.eval()
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(normed(x), plain((x - mean) / std), atol=1e-5)
    assert "units.stem.norm.mean" in normed.state_dict()  # saved with the net
    again = resnet18(1000, image_size=64)  # a fresh net takes the saved state, normalisation included
    again.load_state_dict(normed.state_dict())
    again.eval()
    assert torch.equal(again(x), normed(x))
    gray = resnet18(10, in_channels=1, image_size=64)
    load_torchvision_weights(gray, sd)
    assert torch.allclose(gray.unit("stem").norm.mean.flatten(), torch.tensor([sum(IMAGENET_MEAN) / 3]))


def test_load_torchvision_weights_without_torchvision():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(TransferkitError, match="vision"):
            load_torchvision_weights(resnet18(10, image_size=224))
        with pytest.raises(TransferkitError, match="expects a resnet18 UnitNet, got 'lenet'"):  # before the import
            load_torchvision_weights(build_backbone("lenet", 10))
    else:
        pytest.skip("torchvision is installed")


def test_reset_classifier_keeps_features():
    torch.manual_seed(0)
    net = build_backbone("convnet4", 10).eval()
    x = images(1, 28)
    with torch.no_grad():
        before = net.forward_features(x)
        head = net.reset_classifier(3)
        assert net.get_classifier() is head and net.num_classes == 3
        assert net(x).shape == (2, 3) and net.unit_output_shapes()["head"] == (3,)
        assert torch.equal(net.forward_features(x), before)
        assert isinstance(net.reset_classifier(4, "cosine", scale=5.0), CosineHead)
        assert net(x).abs().max() <= 5.0 + 1e-4
        proto = net.reset_classifier(2, "prototype")
        assert isinstance(proto, PrototypeHead)
        proto.fit(net.forward_features(x), torch.tensor([0, 1]))
        assert net(x).argmax(1).tolist() == [0, 1]
    assert isinstance(build_backbone("lenet", 5, head="cosine").head, CosineHead)


def test_freezing():
    torch.manual_seed(0)
    net = build_backbone("convnet4", 10)
    net.freeze(["conv1", "head"])
    net(images(1, 28)).sum().backward()
    assert all(p.grad is None for p in net.parameters_of(["conv1", "head"]))
    assert all(p.grad is not None for p in net.parameters_of(["conv2", "fc1"]))
    net.zero_grad(set_to_none=True)
    params = net.trainable_units(["conv3"])
    assert params == net.parameters_of("conv3") and len(params) == 4
    net(images(1, 28)).sum().backward()
    with_grad = [n for n in net.unit_names if any(p.grad is not None for p in net.unit(n).parameters())]
    assert with_grad == ["conv3"]
    net.unfreeze()
    assert all(p.requires_grad for p in net.parameters())
    assert len(net.parameters_of("all")) == len(list(net.parameters()))
    with pytest.raises(UnknownNameError, match="unknown unit 'conv9'"):
        net.freeze(["conv9"])


def test_deterministic_given_seed():
    torch.manual_seed(3)
    a = build_backbone("convnet7", 10).state_dict()
    torch.manual_seed(3)
    b = build_backbone("convnet7", 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_mode_preserved_by_dry_run():
    net = build_backbone("convnet4", 10)
    net.unit("conv1").eval()
    net.unit_output_shapes(refresh=True)
    assert net.training and not net.unit("conv1").training and net.unit("conv2").training


def _seq():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 13 * 13, 3))


def test_from_sequential():
    seq = _seq().eval()
    x = images(1, 28)
    with torch.no_grad():
        ref = seq(x)
        net = from_sequential(seq, input_shape=(1, 28, 28))
        assert net.unit_names == ["unit1", "unit2", "unit3", "unit4", "head"]
        torch.testing.assert_close(net(x), ref)
        assert net.embed_dim == 676 and net.num_classes == 3
        assert net.unit_output_shapes()["unit3"] == (4, 13, 13)
        for units in ([3, 1], [["0", "1", "2"], ["3"]], {"conv": ["0", "1", "2"], "flat": "3"}):
            net = from_sequential(seq, units=units)
            assert len(net.unit_names) == 3
            torch.testing.assert_close(net(x), ref)
            torch.testing.assert_close(net.forward_units(net.forward_units(x, 0, 1), 1), ref)
        assert "units.conv.0.weight" in net.state_dict() and "head.weight" in net.state_dict()
        assert net.head is seq[4]  # modules are shared
        named = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.ReLU(), flat=nn.Flatten(),
                                          fc=nn.Linear(2 * 26 * 26, 2), logsm=nn.LogSoftmax(1))).eval()
        net = from_sequential(named, head_index=-2)
        assert net.unit_names == ["conv", "act", "flat", "head"]
        torch.testing.assert_close(net(x), named(x))
    with pytest.raises(TransferkitError, match="in order"):
        from_sequential(seq, units=[["1", "0"], ["2", "3"]])
    with pytest.raises(TransferkitError, match="sum"):
        from_sequential(seq, units=[2, 1])


class FakeTV(nn.Module):
    """A torchvision-ResNet-like model: attributes and a functional flatten in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(x, 1))


def test_from_modules():
    torch.manual_seed(0)
    model = FakeTV().eval()
    x = images(3, 32)
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        ref = model(x)
        net = from_modules(model, {"stem": ["conv1", "bn1", "relu", "maxpool"], "layer1": "layer1",
                                   "layer2": "layer2"}, head="fc", pool=pool, input_shape=(3, 32, 32))
        assert net.unit_names == ["stem", "layer1", "layer2", "head"] and net.name == "faketv"
        assert "units.stem.conv1.weight" in net.state_dict() and "units.layer1.0.weight" in net.state_dict()
        torch.testing.assert_close(net(x), ref)
        assert net.unit_output_shapes()["layer2"] == (16, 8, 8) and net.embed_dim == 16
        for s in range(len(net.unit_names) + 1):
            torch.testing.assert_close(net.forward_units(net.forward_units(x, 0, s), s), ref)
        flat = from_modules(model, ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "avgpool"], "fc")
        assert flat.unit_names[-2:] == ["avgpool", "head"]
        torch.testing.assert_close(flat(x), ref)
        model.fc.bias.add_(1.0)  # shared, not copied
        torch.testing.assert_close(net(x), ref + 1.0)
    with pytest.raises(UnknownNameError, match="unknown module 'layer9'"):
        from_modules(model, ["conv1", "layer9"], "fc")
    with pytest.raises(TransferkitError, match="twice"):
        from_modules(model, ["conv1", "conv1"], "fc")


def test_unitnet_validation():
    with pytest.raises(TransferkitError, match="invalid unit name"):
        UnitNet({"head": nn.Identity()}, nn.Linear(2, 2))
    with pytest.raises(TransferkitError, match="no parameters"):
        UnitNet({"a": nn.Identity()}, nn.Linear(2, 2), pool=nn.Linear(2, 2))
    for pool in (nn.BatchNorm1d(2, affine=False), nn.Sequential(nn.Flatten(1), nn.Dropout(0.5))):
        with pytest.raises(TransferkitError, match="pool of a UnitNet must be stateless"):
            UnitNet({"a": nn.Identity()}, nn.Linear(2, 2), pool=pool)  # no method could freeze it
    lin = nn.Linear(8, 8)
    with pytest.raises(TransferkitError, match="units 'unit1' and 'unit3' share parameters"):
        from_sequential(nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(8, 3)))
    shared_within = nn.Sequential(lin, nn.ReLU(), lin)  # one unit using a module twice: fine
    assert UnitNet({"a": shared_within}, nn.Linear(8, 3)).feature_names == ["a"]
    with pytest.raises(TransferkitError, match="input_shape"):
        UnitNet({"a": nn.Identity()}, nn.Identity()).unit_output_shapes()


def test_from_sequential_keeps_a_module_used_twice_and_taps_survive_inplace_units():
    torch.manual_seed(0)
    act = nn.ReLU(inplace=True)  # one module object at two places
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), act, nn.Conv2d(4, 4, 3), act, nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    net = from_sequential(seq, units=[1, 1, 1, 1, 1], input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    assert len(net.unit_names) == 6 and torch.equal(net(x), seq(x))
    taps = net.forward_features(x, ["unit1", "unit2"])
    assert taps["unit1"].min() < 0 and torch.equal(taps["unit1"], seq[0](x))  # not rectified by unit2 in place


def test_reset_classifier_0_removes_the_classifier_as_timm_does():
    torch.manual_seed(0)
    net = build_backbone("lenet", 10, image_size=28).eval()
    x = torch.rand(3, 1, 28, 28)
    head = net.reset_classifier(0)
    assert isinstance(head, nn.Identity) and net.get_classifier() is head and net.num_classes == 0
    assert torch.equal(net(x), net.forward_features(x)) and net(x).shape == (3, 500)
    assert net.embed_dim == 500 and net.unit_output_shapes()["head"] == (500,)
    assert not list(head.parameters()) and "head.weight" not in net.state_dict()
    from transferkit.methods.adaptation import layer_size
    assert layer_size(net, "head") == 500  # the head passes the embedding on
    with pytest.raises(TransferkitError, match="unknown head 'bogus'"):
        net.reset_classifier(0, "bogus")
    net.reset_classifier(4)  # and back: a fresh classifier on the same embedding
    assert net.num_classes == 4 and net(x).shape == (3, 4)


def test_lazy_heads_and_bad_head_arguments():
    net = from_sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10)), input_shape=(1, 8, 8))
    assert net.embed_dim == 144
    net.reset_classifier(5)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 5)
    for bad in (-1, True, 2.0):
        with pytest.raises(TransferkitError, match="whole num_classes >= 1, or 0 for no classifier, got"):
            net.reset_classifier(bad)
    with pytest.raises(TransferkitError, match=r"removes the classifier and takes no head options, got \['scale'\]"):
        net.reset_classifier(0, scale=5)
    with pytest.raises(TransferkitError, match="linear head: .*unexpected keyword argument 'scale'"):
        net.reset_classifier(10, "linear", scale=5)
    with pytest.raises(TransferkitError, match="image_size must be an int or a pair"):
        build_backbone("lenet", 10, image_size="28")


def test_a_head_without_out_features_gives_its_sizes_and_child_indices_may_be_numbers():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2704, 3), nn.Softmax(1))
    net = from_sequential(seq, head_index=3, input_shape=(1, 28, 28))  # the head is Linear + Softmax
    assert net.num_classes == 3 and net.embed_dim == 2704 and net.unit_output_shapes()["head"] == (3,)
    net.reset_classifier(7)
    assert net.num_classes == 7 and net.unit_output_shapes()["head"] == (7,)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(676, 3))
    assert from_sequential(seq, units={"a": [0, 1], "b": 2}).unit_names == ["a", "b", "head"]
    assert from_sequential(seq, units=[[0, 1], [2]]).unit_names == ["unit1", "unit2", "head"]


def test_from_modules_takes_the_first_convolutions_channels_not_three():
    from helpers import toy_domain

    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.finetune import Finetune

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.relu, self.fc = nn.Conv2d(1, 8, 3, 2), nn.ReLU(), nn.Linear(8 * 13 * 13, 4)

        def forward(self, x):  # its fc is sized for 28 x 28: the guess of 224 x 224 fails
            return self.fc(self.relu(self.conv1(x)).flatten(1))

    with pytest.warns(TransferkitWarning, match=r"could not check the cut at the guessed input shape \(1, 224, 224\)"):
        net = from_modules(Small(), [["conv1", "relu"]], head="fc")
    assert net.input_shape is None  # was (1, 224, 224), a size it does not take (and before that (3, 224, 224))
    Engine(TrainConfig(steps=1, batch_size=8)).fit(Finetune(net), target=toy_domain(16))
    pooled = from_modules(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)),
                          [["0", "1"]], head="3")
    assert pooled.input_shape == (1, 224, 224) and pooled.input_shape_guessed  # the first convolution's channels
    assert from_modules(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), ["0"], head="1").input_shape is None


@pytest.mark.parametrize("kw", [dict(in_channels=2.7), dict(in_channels="3"), dict(in_channels=0),
                                dict(image_size=-28), dict(image_size=0)])
def test_builders_refuse_bad_shapes(kw):
    for name in ("resnet18", "lenet"):
        with pytest.raises(TransferkitError, match="in_channels must be|image_size must be"):
            build_backbone(name, 5, **kw)  # 2.7 became 2, resnet18 built at -28


def test_imagenet_input_norm_takes_the_nets_dtype():
    from transferkit.backbones import add_input_norm

    net = build_backbone("resnet18", 10, in_channels=3, image_size=32).to(torch.bfloat16)
    norm = add_input_norm(net, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert norm.mean.dtype == torch.bfloat16
    net.eval()(torch.rand(1, 3, 32, 32, dtype=torch.bfloat16))  # a float32 norm refused this


@pytest.mark.parametrize("which", ["tap", "extract"])
def test_feature_extraction_gives_each_submodule_its_mode_back(which):
    from transferkit.fewshot_eval import extract_features
    from transferkit.methods.tap import unit_features

    net = build_backbone("convnet4", 5)
    net.train()
    net.unit("conv1").eval()  # a frozen unit: its batch-norm statistics must not move
    x = torch.rand(2, 1, 28, 28)
    unit_features(net, x, ["conv2"]) if which == "tap" else extract_features(net, x)
    assert net.training and not net.unit("conv1").training


def test_reinitialise_redraws_every_parameter_or_names_what_it_cannot():
    from transferkit.backbones import reinitialise

    net = build_backbone("lenet", 4)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.01)
    reinitialise(net)
    assert all(not torch.all(p == 0.01) for p in net.parameters())
    net.reset_classifier(4, "cosine")
    with pytest.raises(TransferkitError, match=r"cannot re-initialise \['head.weight'"):
        reinitialise(net)


def test_the_units_view_refuses_changes_that_would_not_reach_the_network():
    net = build_backbone("lenet", 10)
    for change in (lambda u: u.__setitem__("conv1", nn.Identity()), lambda u: u.__delitem__("fc1"),
                   lambda u: u.update({"head": nn.Identity()}), lambda u: u.pop("conv1"), lambda u: u.clear()):
        with pytest.raises(TransferkitError, match="read-only view"):
            change(net.units)  # each was silently lost
    assert list(net.units) == ["conv1", "conv2", "fc1", "head"] and net.units["conv1"] is net.unit("conv1")


def test_a_too_small_input_names_the_smallest_size_the_backbone_takes():
    for name in ("lenet", "convnet4"):
        with pytest.raises(TransferkitError, match=r"too small for this backbone; the smallest square input it takes "
                                                   r"is 16 x 16 \(image_size: 16 or more in a config"):
            build_backbone(name, num_classes=3, in_channels=1, image_size=8)
        with pytest.raises(TransferkitError, match=r"\(1, 8, 40\) is too small .* is 16 x 16 .*to_format\(size=16\)"):
            build_backbone(name, num_classes=3, in_channels=1, image_size=(8, 40))  # the short side decides
        net = build_backbone(name, num_classes=3, in_channels=1, image_size=16)
        assert net(torch.zeros(1, 1, 16, 16)).shape == (1, 3)


def test_an_input_the_network_cannot_take_is_named_with_the_shape_it_was_built_for():
    import numpy as np
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28)
    calls = (net, net.forward_features, lambda x: net.forward_features(x, ["conv1", "fc1"]))
    for call in calls:
        with pytest.raises(TransferkitError, match=r"lenet: takes a torch tensor N x C x H x W, got a numpy.ndarray "
                                                   r"\(torch.as_tensor\(x\).float\(\), or Transfer.predict"):
            call(np.zeros((2, 1, 28, 28), np.float32))  # was torch's TypeError, listing conv2d's signatures
        for shape in ((2, 3, 28, 28), (2, 1, 32, 32), (1, 28, 28)):
            with pytest.raises(TransferkitError, match=rf"got input of shape {re.escape(str(shape))}; the network was "
                                                       r"built for N x 1 x 28 x 28 \(RuntimeError: "):
                call(torch.zeros(shape))
    wide = build_backbone("resnet18", num_classes=3, in_channels=3, image_size=32)
    assert wide(torch.zeros(1, 3, 48, 48)).shape == (1, 3)  # another size that the units take is not refused
    with pytest.raises(KeyError, match="unknown unit 'nope'"):
        net.forward_features(torch.zeros(1, 1, 28, 28), ["nope"])  # other errors pass through unchanged


class _Residual(nn.Module):
    """A residual add and a functional pool in forward: listing stem, block and fc loses both."""

    def __init__(self, out_dict=False):
        super().__init__()
        self.stem, self.block = nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.fc, self.out_dict = nn.Linear(4, 10), out_dict

    def forward(self, x):
        x = self.stem(x)
        x = self.fc((x + self.block(x)).mean((2, 3)))
        return {"logits": x} if self.out_dict else x


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x).relu()


def test_from_modules_refuses_a_cut_that_loses_code_in_forward():
    torch.manual_seed(0)
    model = _Residual()
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    rng = torch.get_rng_state()
    with pytest.raises(TransferkitError, match=r"another function than the model: max \|model\(x\) - unitnet\(x\)\| "
                                               r"= 0\.\d+.*residual add.*wrap the code in an nn.Module"):
        from_modules(model, units=["stem", "block"], head="fc", pool=pool, input_shape=(1, 8, 8))
    assert torch.equal(rng, torch.get_rng_state()) and model.training  # no global draw, its mode back
    with pytest.raises(TransferkitError, match=r"input of shape \(2, 1, 224, 224\)"):  # the default shape too
        from_modules(model, units=["stem", "block"], head="fc", pool=pool)
    # a dict output cannot be compared: built as asked (the docstring says so)
    net = from_modules(_Residual(out_dict=True), ["stem", "block"], head="fc", pool=pool, input_shape=(1, 8, 8))
    assert net.unit_names == ["stem", "block", "head"]

    class ResNetLike(nn.Module):  # the residual inside a listed block module: the cut is the model
        def __init__(self):
            super().__init__()
            self.stem, self.layer1, self.fc = nn.Conv2d(1, 4, 3, padding=1), _Block(), nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layer1(self.stem(x)), 1), 1))

    model = ResNetLike()
    net = from_modules(model, ["stem", "layer1"], head="fc", pool=pool, input_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(net(x), model(x))


def test_from_sequential_checks_the_default_pool_against_the_sequential():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 1), nn.AdaptiveMaxPool2d(1))
    with pytest.raises(TransferkitError, match="from_sequential: the units fail .*give as pool="):
        from_sequential(seq, head_index=2, input_shape=(1, 8, 8))  # Flatten before a conv head
    net = from_sequential(seq, head_index=2, pool=nn.Identity(), input_shape=(1, 8, 8))  # a pool: not compared
    assert net.unit_names == ["unit1", "unit2", "head"]
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(1), nn.Flatten())  # the softmax over channels, not pixels
    with pytest.raises(TransferkitError, match=r"from_sequential: the units compute another function .* = 0\.\d"):
        from_sequential(seq, head_index=1, input_shape=(1, 8, 8))


def test_from_sequential_refuses_another_module_and_points_to_from_modules():
    class HeadFirst(nn.Module):  # registration order is not the order forward runs
        def __init__(self):
            super().__init__()
            self.fc, self.feat = nn.Linear(16, 10), nn.Sequential(nn.Flatten(), nn.Linear(64, 16))

        def forward(self, x):
            return self.fc(self.feat(x))

    with pytest.raises(TransferkitError, match=r"from_sequential cuts an nn.Sequential.*got a HeadFirst.*"
                                               r"use from_modules\(model, units="):
        from_sequential(HeadFirst(), input_shape=(1, 8, 8))
    assert from_modules(HeadFirst(), ["feat"], head="fc", input_shape=(1, 8, 8)).unit_names == ["feat", "head"]


def test_the_function_check_draws_alike_copies_its_input_and_can_be_turned_off():
    class MCDropout(nn.Module):  # random in eval mode too (Monte Carlo dropout)
        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.5, training=True)

    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), MCDropout(), nn.Linear(8, 3))
    before = torch.get_rng_state()
    net = from_sequential(seq, input_shape=(1, 4, 4))  # was refused: the two calls drew other masks
    assert torch.equal(torch.get_rng_state(), before)

    class Shifted(nn.Module):  # changes its input in place, which the cut loses
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            x.sub_(0.5)
            return self.fc(x.flatten(1))

    with pytest.raises(TransferkitError, match="compute another function"):  # was accepted: both saw x - 0.5
        from_modules(Shifted(), units=[], head="fc", input_shape=(1, 4, 4))

    class LogProbs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return torch.log_softmax(self.fc(x.flatten(1)), 1)

    with pytest.raises(TransferkitError, match=r"a final log_softmax left out of the head\): verify=False"):
        from_modules(LogProbs(), units=[], head="fc", input_shape=(1, 4, 4))
    net = from_modules(LogProbs(), units=[], head="fc", input_shape=(1, 4, 4), verify=False)
    assert net(torch.zeros(2, 1, 4, 4)).shape == (2, 3)


def test_running_the_whole_network_on_cached_activations_names_the_cause_and_the_fix():
    """A method that trains the head only gets the frozen units' cached output as its batch:
    ``self.net(x)`` on it fails with a message that says so and names forward_from_input."""
    import torch.nn.functional as F
    from helpers import tiny_net, toy_domain

    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.base import Method

    class HeadOnly(Method):
        name = "head_only_mistake"
        streams = ("target",)

        def trainable_units(self):
            return ["head"]

        def losses(self, batch):
            x, y = batch.target
            return {"ce": F.cross_entropy(self.net(x), y)}  # should be self.forward_from_input(x)

    with pytest.raises(TransferkitError, match=r"got input of shape \(8, 16\); the network was built for N x 1 x 28 "
                                               r"x 28\. That is the shape of the output of .*cached activations.*"
                                               r"self\.forward_from_input\(x\)"):
        Engine(TrainConfig(steps=4, batch_size=8)).fit(HeadOnly(tiny_net(4)), target=toy_domain(16))
    with pytest.raises(TransferkitError, match=r"built for N x 1 x 28 x 28 \(RuntimeError"):  # no unit's shape
        tiny_net(4)(torch.zeros(2, 3, 5, 5))


def test_from_sequential_numbers_its_units_from_one_and_names_a_named_child_after_it():
    seq = nn.Sequential(*[nn.ReLU() for _ in range(9)], nn.Flatten(), nn.Linear(4, 2))
    net = from_sequential(seq, verify=False)
    assert net.feature_names[7] == "unit8" and net.unit("unit8") is seq[7]  # child "7" is unit8
    assert from_sequential(seq, units=[2, 3, 5], verify=False).feature_names == ["unit1", "unit2", "unit3"]
    named = nn.Sequential(OrderedDict([("conv", nn.ReLU()), ("1", nn.ReLU()), ("fc", nn.Linear(4, 2))]))
    assert from_sequential(named, verify=False).feature_names == ["conv", "unit2"]


def test_a_network_pickled_when_unitnet_lived_in_backbones_still_loads():
    """Run directories keep pickled methods (models/*.pt); their networks name the classes by
    module path, transferkit.backbones.UnitNet and InputNorm before 2026-12-04."""
    import pickle

    from transferkit.backbones import add_input_norm
    torch.manual_seed(0)
    net = build_backbone("lenet", 3, in_channels=3)
    add_input_norm(net, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    old = pickle.dumps(net, protocol=2).replace(b"transferkit.unitnet\n", b"transferkit.backbones\n")
    assert b"transferkit.backbones\nUnitNet" in old and b"transferkit.backbones\nInputNorm" in old
    loaded = pickle.loads(old)
    x = torch.rand(2, 3, 28, 28)
    assert torch.equal(loaded.eval()(x), net.eval()(x))


def test_a_network_with_an_input_normalisation_saves_and_loads_with_it(tmp_path):
    """An InputNorm first (add_input_norm; load_torchvision_weights adds one by default) is no
    method's addition: save_network refused such a network as one (until 2026-12-07), though
    loading restores the normalisation; load_network finds the file's channels beside it."""
    from transferkit.networks import load_network, save_network
    from transferkit.unitnet import add_input_norm
    torch.manual_seed(0)
    net = build_backbone("lenet", 4, in_channels=3)
    add_input_norm(net, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    loaded = load_network(save_network(net, tmp_path / "n.safetensors", class_names=list("abcd")), "lenet")
    x = torch.rand(2, 3, 28, 28)
    assert loaded.input_shape == (3, 28, 28) and loaded.class_names == list("abcd")
    assert torch.equal(loaded.unit("conv1").norm.mean.flatten(), torch.tensor([0.5, 0.4, 0.3]))
    assert torch.equal(loaded.eval()(x), net.eval()(x))
