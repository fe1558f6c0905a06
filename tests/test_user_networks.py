"""A network of one's own (a user trial, 2026-12): MLP heads keep their hidden layers when the
head gets the target classes, from_modules refuses a cut that leaves out a dropout, says when
its guessed input size could not be checked, and names the unit where functional code of the
model's forward is lost; class names that look alike but do not match warn; flex, fast_flex
and faster_flex take a list of candidate units and say afterwards which units they tuned."""

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import toy_domain

from transferkit import TrainConfig, Transfer
from transferkit.backbones import UnitNet, build_backbone, from_modules
from transferkit.domain import warn_unshared_classes
from transferkit.engine import Engine
from transferkit.errors import TransferkitError, TransferkitWarning, UnknownNameError
from transferkit.fitting import build_method, retarget_head
from transferkit.heads import CosineHead, HeadRows, LinearHead, make_head, retargeted_head
from transferkit.methods import get_method
from transferkit.methods.base import trained_options

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = TrainConfig(steps=4, batch_size=16, eval_every=2, progress=False)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


def mlp_net(classes=4):
    torch.manual_seed(0)
    return UnitNet({"conv1": block(1, 4), "conv2": block(4, 8)},
                   head=nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, classes)),
                   input_shape=(1, 28, 28))


# ---- heads: the final layer is retargeted, hidden layers kept ------------------------------

def test_an_mlp_head_keeps_its_hidden_layer_and_the_rows_of_shared_classes():
    net = mlp_net()
    old = copy.deepcopy(net.head)
    new = retarget_head(net, ["a", "b", "c", "d"], ["c", "a", "z"])
    assert new == ["z"]
    head = net.head
    assert isinstance(head, nn.Sequential) and isinstance(head[3], LinearHead) and head[3].out_features == 3
    assert torch.equal(head[0].weight, old[0].weight) and torch.equal(head[0].bias, old[0].bias)  # hidden kept
    assert torch.equal(head[3].weight[0], old[3].weight[2]) and torch.equal(head[3].weight[1], old[3].weight[0])
    assert head[3].bias[:2].tolist() == [old[3].bias[2].item(), old[3].bias[0].item()]
    assert net.num_classes == 3 and net(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert isinstance(old[3], nn.Linear) and old[3].out_features == 4  # the caller's head is not changed in place
    assert head[0] is not old[0]


def test_a_linear_head_is_retargeted_as_before_bit_for_bit():
    """The built-in heads: the same draws as reset_classifier made (job rows unchanged)."""
    net = build_backbone("convnet4", num_classes=3, in_channels=1, image_size=28)
    old = net.head.weight.detach().clone()
    torch.manual_seed(5)
    retarget_head(net, ["a", "b", "c"], ["c", "x"])
    torch.manual_seed(5)
    fresh = make_head("linear", 64, 2)
    assert torch.equal(net.head.weight[1], fresh.weight[1]) and torch.equal(net.head.weight[0], old[2])
    assert type(net.head) is LinearHead


def test_a_cosine_head_stays_cosine_with_its_rows_and_scale():
    head = CosineHead(8, 3, scale=7.0)
    new = retargeted_head(head, [2, None])
    assert isinstance(new, CosineHead) and float(new.scale) == 7.0 and isinstance(new.scale, nn.Parameter)
    assert torch.equal(new.weight[0], head.weight[2])
    narrowed = HeadRows(nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)), [2, 0])
    inner = retargeted_head(narrowed, [1, None])  # output 1 of the narrowed head is row 0 of the inner one
    assert isinstance(inner, nn.Sequential) and torch.equal(inner[2].weight[0], narrowed.head[2].weight[0])


def test_a_head_without_a_final_linear_layer_is_replaced_with_a_warning():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8 * 7 * 7, 4), nn.Linear(8 * 7 * 7, 4)

        def forward(self, x):
            return self.a(x) * self.b(x)

    net = mlp_net()
    net.head = Odd()
    with pytest.warns(TransferkitWarning, match=r"head \(Odd\) has no final linear layer .* nor the rows of the "
                                                r"classes it shares with the target \(\['a'\]\)"):
        assert retarget_head(net, ["a", "b", "c", "d"], ["a", "z"]) == ["a", "z"]
    assert isinstance(net.head, LinearHead) and net.num_classes == 2


def test_a_head_fixed_method_is_refused_when_no_row_could_be_kept():
    """ft_unit:conv2 keeps the head fixed: it would train under new, random rows."""
    net = mlp_net()
    net.head = nn.Sequential(nn.Linear(8 * 7 * 7, 4), nn.BatchNorm1d(4))  # a norm after the classifier
    with pytest.warns(TransferkitWarning, match="no final linear layer"):
        with pytest.raises(TransferkitError, match=r"ft_unit:conv2 trains conv2 and keeps the head fixed, but the rows "
                                                   r"of the classes \['a', 'b'\] could not be kept"):
            build_method(get_method("ft_unit:conv2"), net, {}, ["a", "b", "c", "d"], ["a", "b"])
    with pytest.raises(TransferkitError, match="without the source domain, its classes are unknown"):
        build_method(get_method("ft_unit:conv2"), mlp_net(), {}, None, ["a", "b"])
    flex = build_method(get_method("flex"), mlp_net(), {}, None, ["a", "b"])  # its candidates train the head too
    assert flex.with_head
    method = build_method(get_method("ft_unit:conv2"), mlp_net(), {}, ["a", "b", "c", "d"], ["b", "a"])
    assert isinstance(method.net.head, nn.Sequential) and method.net.num_classes == 2


def test_reset_classifier_warns_that_it_drops_the_hidden_layers_of_an_mlp_head(recwarn):
    net = mlp_net()
    with pytest.warns(TransferkitWarning, match=r"new linear head on the 392-d embedding .* \(0: Linear\(392 -> 16\)\) "
                                                r"are dropped"):
        net.reset_classifier(3)
    recwarn.clear()
    net.reset_classifier(2)  # a one-layer head: nothing to say
    build_backbone("lenet", 3).reset_classifier(0)
    assert not [w for w in recwarn.list if issubclass(w.category, TransferkitWarning)]


def test_ft_unit_trains_under_the_source_rows_of_an_mlp_head():
    """The trial's case: a pre-trained MLP head, target classes a subset of the source's; the
    fixed head was a new, random linear head."""
    net = mlp_net()
    sub = toy_domain(32).select_classes([2, 0])
    model = Transfer("ft_unit:conv2", train=TrainConfig(steps=2, progress=False))
    model.fit(target=sub, source=toy_domain(32), net=net)
    head = model.net_.head
    assert isinstance(head, nn.Sequential) and torch.equal(head[0].weight, net.head[0].weight)
    assert torch.equal(head[3].weight, net.head[3].weight[[2, 0]])
    assert torch.equal(head[3].bias, net.head[3].bias[[2, 0]])


# ---- from_modules -----------------------------------------------------------------------

class DropNet(nn.Module):
    def __init__(self, p=0.5, functional_flatten=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten(1)
        self.fc1, self.act, self.drop, self.fc2 = nn.Linear(4 * 14 * 14, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3)
        self.functional_flatten = functional_flatten

    def forward(self, x):
        h = self.features(x)
        h = torch.flatten(h, 1) if self.functional_flatten else self.flatten(h)
        return self.fc2(self.drop(self.act(self.fc1(h))))


def test_a_cut_that_leaves_out_a_dropout_is_refused_by_name():
    units = {"conv": "features", "fc1": ["flatten", "fc1", "act"]}
    with pytest.raises(TransferkitError, match=r"leaves out module\(s\) .* act otherwise in training .* 'drop' "
                                               r"\(Dropout\(p=0.5.*runs after 'act', in unit 'fc1'\)"):
        from_modules(DropNet(), units=units, head="fc2", input_shape=(1, 28, 28))
    net = from_modules(DropNet(), units={"conv": "features", "fc1": ["flatten", "fc1", "act", "drop"]}, head="fc2",
                       input_shape=(1, 28, 28))
    assert any(isinstance(m, nn.Dropout) for m in net.modules())
    from_modules(DropNet(), units=units, head=["drop", "fc2"], input_shape=(1, 28, 28))  # first in the head
    from_modules(DropNet(p=0.0), units=units, head="fc2", input_shape=(1, 28, 28))  # acts alike in both modes
    from_modules(DropNet(), units=units, head="fc2", input_shape=(1, 28, 28), verify=False)  # meant


def test_functional_flatten_between_units_names_the_unit_and_the_fixes():
    model = DropNet(functional_flatten=True)
    with pytest.raises(TransferkitError, match=r"unit 'fc1' fails on the output of unit 'conv', of shape "
                                               r"\(2, 4, 14, 14\).*flattens it first.*model.flatten = nn.Flatten\(1\) "
                                               r"and 'fc1': \[\"flatten\", \"fc1\", \"act\", \"drop\"\].*"
                                               r"nn.Sequential\(nn.Flatten\(1\), model.fc1, model.act, model.drop\)"):
        from_modules(model, units={"conv": "features", "fc1": ["fc1", "act", "drop"]}, head="fc2",
                     input_shape=(1, 28, 28))
    net = from_modules(model, units={"conv": "features", "fc1": ["flatten", "fc1", "act", "drop"]}, head="fc2",
                       input_shape=(1, 28, 28))  # the module forward never calls, listed where the code runs
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(net.eval()(x), model.eval()(x))


class GapNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.block2(self.block1(x)))


def test_the_guessed_input_size_warns_when_it_cannot_check_and_binds_no_fit():
    units = {"conv": "features", "fc1": ["flatten", "fc1"]}  # the ReLU forgotten: refused at 28 x 28
    with pytest.raises(TransferkitError, match="another function"):
        from_modules(DropNet(p=0.0), units=units, head="fc2", input_shape=(1, 28, 28))
    with pytest.warns(TransferkitWarning, match=r"could not check the cut at the guessed input shape \(1, 224, 224\).*"
                                                r"leaves out that may act in training \('drop' \(Dropout\)\).*Give "
                                                r"input_shape="):
        net = from_modules(DropNet(), units=units, head="fc2")
    assert net.input_shape is None  # the model does not take the guess
    gap = from_modules(GapNet(), units=["block1", "block2"], head="fc")  # checked at the guess, which it takes
    assert gap.input_shape == (1, 224, 224) and gap.input_shape_guessed
    model = Transfer("ft_all", train=TINY).fit(target=toy_domain(32), val=toy_domain(16, seed=1), net=gap)
    assert model.net_.input_shape == (1, 28, 28) and gap.input_shape == (1, 224, 224)  # the caller's net unchanged
    assert model.predict(toy_domain(4).images).shape == (4,)
    fixed = from_modules(GapNet(), units=["block1", "block2"], head="fc", input_shape=(1, 32, 32))
    with pytest.raises(TransferkitError, match=r"the images are \(1, 28, 28\) \(C, H, W\) and the network was built "
                                               r"for \(1, 32, 32\) \(its input_shape.*from_modules\(model, \.\.\., "
                                               r"input_shape=\)"):
        Transfer("ft_all", train=TINY).fit(target=toy_domain(32), net=fixed)


def test_a_guessed_shape_the_images_do_not_fit_names_from_modules_input_shape():
    class Fixed(GapNet):  # takes 224 x 224 and nothing smaller than 8 x 8 after the stride
        def __init__(self):
            super().__init__()
            self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4), nn.ReLU(), nn.MaxPool2d(8))

    net = from_modules(Fixed(), units=["block1", "block2"], head="fc")
    assert net.input_shape_guessed
    tiny = toy_domain(16)
    tiny = type(tiny)("tiny", tiny.images[:, :, :12, :12], tiny.labels, tiny.class_names)
    with pytest.raises(TransferkitError, match=r"fit: the network fails on the images of 'tiny', of shape \(1, 12, "
                                               r"12\).*from_modules' guess.*from_modules\(model, \.\.\., input_shape="):
        Transfer("ft_all", train=TINY).fit(target=tiny, net=net)


def test_model_output_that_cannot_be_compared_warns():
    class Dict(GapNet):
        def forward(self, x):
            return {"logits": super().forward(x)}

    with pytest.warns(TransferkitWarning, match="model\\(x\\) returns a dict, not a tensor: not checked"):
        from_modules(Dict(), units=["block1", "block2"], head="fc", input_shape=(1, 28, 28))


# ---- class names that look alike --------------------------------------------------------

def test_unshared_class_names_warn_when_they_look_alike_or_nothing_was_chosen(recwarn):
    digits = [str(i) for i in range(10)]
    with pytest.warns(TransferkitWarning, match=r"no target class is named as a source class .* look like the same "
                                                r"classes named otherwise \(target 'd0' ~ source '0'"):
        warn_unshared_classes(digits, [f"d{i}" for i in range(10)], chosen=False)
    with pytest.warns(TransferkitWarning, match="look like the same classes"):  # a subset, chosen or not
        warn_unshared_classes(digits, ["class_05", "class_07"], chosen=True)
    with pytest.warns(TransferkitWarning, match=r"target 'zero', 'one'.*one side numbers its classes"):
        warn_unshared_classes(digits, ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                       "nine"], chosen=False)
    recwarn.clear()
    warn_unshared_classes(digits[:5], digits[5:], chosen=True)  # seed 000's 0-4 -> 5-9: new classes on purpose
    warn_unshared_classes(["10", "20", "30"], ["1", "2"], chosen=False)  # no number is cut into
    warn_unshared_classes(["cat", "dog", "cow"], ["eel", "owl"], chosen=False)  # other classes, another count
    warn_unshared_classes(digits[:5], digits[5:], chosen=False)  # 0-4 and 5-9 in two files, named alike
    warn_unshared_classes(["cat", "dog"], ["car", "bus"], chosen=False)  # words against words: other classes
    warn_unshared_classes(digits, [f"c{i}" for i in "abcdefghij"], chosen=True)  # numbered vs named, but chosen
    warn_unshared_classes(digits, digits[3:], chosen=True)  # shared
    assert not [w for w in recwarn.list if issubclass(w.category, TransferkitWarning)]


def test_transfer_fit_warns_when_the_target_names_its_classes_otherwise():
    src = toy_domain(32)
    tgt = type(src)("tgt", src.images, src.labels, [f"d{c}" for c in src.class_names])
    with pytest.warns(TransferkitWarning, match=r"target 'd0' ~ source '0'"):
        Transfer("ft_fc1", train=TrainConfig(steps=1, progress=False)).fit(target=tgt, source=src,
                                                                           net=build_backbone("lenet", 4))


# ---- flex: candidate units, and what was tuned ----------------------------------------------

def lenet4():
    torch.manual_seed(0)
    return build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)


@pytest.mark.parametrize("name", ["flex", "fast_flex", "faster_flex"])
def test_flex_units_restrict_the_candidates_and_trainable_units_name_the_pick(name):
    method = get_method(name)(lenet4(), units=["fc1", "conv2"])
    assert method.units == ["conv2", "fc1"]  # network order
    method.fit_transfer(lambda tag, config=None: Engine(config or TINY, seed=0), target=toy_domain(),
                        val=toy_domain(seed=1))
    extra = method.extra_results()
    tried = extra.get("candidate_val_accuracy") or extra["proxy_val_accuracy"]
    assert set(tried) - {"all"} == {"conv2", "fc1"}
    picked = method.picked
    assert picked in ("conv2", "fc1", "all")
    expected = method.net.unit_names if picked == "all" else [picked]
    assert method.trainable_units() == expected
    assert {n: all(p.requires_grad for p in method.net.unit(n).parameters()) for n in method.net.unit_names} == \
        {n: n in expected for n in method.net.unit_names}


def test_flex_units_are_checked_like_taps():
    with pytest.raises(UnknownNameError, match=r"unknown unit 'cnv1'; known: conv1, conv2, fc1, head"):
        get_method("flex")(lenet4(), units=["cnv1"])
    with pytest.raises(TransferkitError, match="units lists fc1 more than once"):
        get_method("fast_flex")(lenet4(), units=["fc1", "fc1"])
    with pytest.raises(TransferkitError, match="units must name at least one unit"):
        get_method("faster_flex")(lenet4(), units=[])
    assert get_method("flex")(lenet4(), units="head").units == ["head"]
    for name in ("flex", "fast_flex", "faster_flex"):  # the default leaves the job digest as it was
        cls = get_method(name)
        assert trained_options(cls, {"units": None}) == {} and trained_options(cls, {"units": ["fc1"]})


def test_flex_units_are_refused_before_pre_training(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment

    cfg = ExperimentConfig(name="u", source="digits", target="digits", backbone="lenet", k=2, repeats=1,
                           methods=["flex"], options={"flex": {"units": ["fc2"]}}, out_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TransferkitError, match=r"method flex with options .*unknown unit 'fc2'; known: conv1, "
                                                   r"conv2, fc1, head"):
            run_experiment(cfg, log=lambda *a: None)
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing was pre-trained


def test_units_listed_out_of_the_forward_s_order_are_named_not_blamed_on_a_guessed_shape():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
            self.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(self.c2(self.c1(x)))
    # the guess takes the model's first convolution (1 channel), not the first unit listed (8)
    with pytest.raises(TransferkitError, match=r"the units fail on an input of shape \(2, 1, 224, 224\) that the model "
                                               r"takes: the first unit 'c2' fails on it .* in the order it runs them"):
        from_modules(Model(), units=["c2", "c1"], head="fc")
    assert from_modules(Model(), units=["c1", "c2"], head="fc").input_shape == (1, 224, 224)
