import math

import pytest
import torch
from helpers import seeded_lenet, shifted_domain, state_copy, uda_batch

from transferkit.backbones import build_backbone
from transferkit.domain import Domain
from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.fitting import fit_for_target
from transferkit.methods import get_method
from transferkit.methods.adversarial import DANN, MultiLayerAdversarial

UDA = ["dann", "adda", "adda_encoder", "confusion", "mmd", "coral", "entmin", "mcc", "dsn", "multilayer_adv",
       "multilayer_adda", "cyclegan"]


_net = seeded_lenet
_domain = shifted_domain


@pytest.mark.parametrize("name", UDA)
def test_each_method_trains_its_parameters_and_never_reads_target_labels(name):
    method = get_method(name)(_net())
    assert method.streams == ("source", "unlabeled")
    before = state_copy(method)
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False)
    Engine(cfg, seed=0).fit(method, source=_domain(16, 0.0, 1), unlabeled=_domain(16, 0.3, 2))
    after = method.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = set(method.trainable_units())
    for unit in method.net.unit_names:
        moved = any(k.startswith(f"net.units.{unit}.") or k.startswith(f"net.{unit}.") for k in changed)
        assert moved == (unit in trainable), (name, unit)
    if hasattr(method, "discriminator"):
        assert any(k.startswith("discriminator.") for k in changed)
    children = {"dsn": ("private_source", "private_target", "decoder"),  # trained beside the network
                "cyclegan": ("to_target", "to_source", "disc_target", "disc_source")}
    for child in children.get(name, ()):
        assert any(k.startswith(f"{child}.") for k in changed), child
    assert not any(k.startswith("source_net.") for k in changed)


def test_adda_source_encoder_stays_bit_identical_and_encoder_only_keeps_the_head():
    method = get_method("adda_encoder")(_net())
    src_before, head_before = state_copy(method.source_net), state_copy(method.net.head)
    cfg = TrainConfig(steps=3, batch_size=8, eval_every=3, progress=False)
    Engine(cfg, seed=0).fit(method, source=_domain(16, 0.0, 1), unlabeled=_domain(16, 0.3, 2))
    for k, v in method.source_net.state_dict().items():
        assert torch.equal(v, src_before[k])
    for k, v in method.net.head.state_dict().items():
        assert torch.equal(v, head_before[k])
    assert method.layers == ["embedding"] and get_method("adda")(_net()).layers == ["head"]


def _grad_owners(method, term):
    method.zero_grad(set_to_none=True)
    terms = method.losses(uda_batch())
    terms[term].backward()
    disc = any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.discriminator.parameters())
    enc = any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.net.parameters())
    return disc, enc


@pytest.mark.parametrize("name, enc_term", [("multilayer_adv", "adv_encoder"), ("confusion", "confusion"),
                                            ("adda", "adv_target"), ("multilayer_adda", "adv_encoder")])
def test_discriminator_and_encoder_get_gradient_only_from_their_own_loss(name, enc_term):
    method = get_method(name)(_net())
    method.train()
    assert _grad_owners(method, "disc") == (True, False)  # eq. 3: discriminator only
    assert _grad_owners(method, enc_term) == (False, True)  # eq. 4 / confusion: encoder only


def test_dann_reverses_the_discriminator_gradient_into_the_encoder():
    net = _net()
    method = DANN(net, weight=1.0, lambda_schedule="constant")
    batch = uda_batch()
    (x_s, _), x_t = batch.source, batch.unlabeled
    feats = net.forward_features(torch.cat([x_s, x_t])).detach().requires_grad_(True)
    logit = method.discriminator(feats)
    from transferkit.discriminators import discriminator_loss

    discriminator_loss(logit[:8], logit[8:]).backward()
    plain = feats.grad.clone()
    feats.grad = None
    from transferkit.losses import grad_reverse

    logit = method.discriminator(grad_reverse(feats, method.coefficient(0.3)))
    discriminator_loss(logit[:8], logit[8:]).backward()
    assert torch.allclose(feats.grad, -plain)
    assert DANN(net).coefficient(0.0) == 0.0
    assert DANN(net, weight=0.5).coefficient(1.0) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))


def test_dann_and_multilayer_use_the_dann_learning_rate_schedule_by_default(tmp_path):
    captured = {}

    def make_engine(tag, config=None):
        engine = Engine(TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False), seed=0)
        captured["engine"] = engine
        return engine

    method = DANN(_net())
    fit = method.fit_transfer(make_engine, source=_domain(16, 0.0, 1), unlabeled=_domain(16, 0.3, 2))
    assert captured["engine"].cfg.schedule == "dann"
    assert fit.history[-1]["lr"] == pytest.approx(1e-3 / (1 + 10 * 0.5) ** 0.75)
    DANN(_net(), lr_schedule=None).fit_transfer(make_engine, source=_domain(16, 0.0, 1),
                                                unlabeled=_domain(16, 0.3, 2))
    assert captured["engine"].cfg.schedule == "constant"
    MultiLayerAdversarial(_net()).fit_transfer(make_engine, source=_domain(16, 0.0, 1),
                                               unlabeled=_domain(16, 0.3, 2))
    assert captured["engine"].cfg.schedule == "dann"
    MultiLayerAdversarial(_net(), lr_schedule=None).fit_transfer(make_engine, source=_domain(16, 0.0, 1),
                                                                 unlabeled=_domain(16, 0.3, 2))
    assert captured["engine"].cfg.schedule == "constant"


def test_dann_can_train_with_seed_003s_sgd_and_mu0():
    captured = {}

    def make_engine(tag, config=None):
        captured["engine"] = Engine(TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False), seed=0)
        return captured["engine"]

    fit = DANN(_net(), optimizer="sgd").fit_transfer(make_engine, source=_domain(16, 0.0, 1),
                                                     unlabeled=_domain(16, 0.3, 2))
    cfg = captured["engine"].cfg
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.schedule) == ("sgd", 0.01, 0.9, "dann")
    assert fit.history[-1]["lr"] == pytest.approx(0.01 / (1 + 10 * 0.5) ** 0.75)  # μ_p with μ_0 = 0.01
    DANN(_net()).fit_transfer(make_engine, source=_domain(16, 0.0, 1), unlabeled=_domain(16, 0.3, 2))
    assert (captured["engine"].cfg.optimizer, captured["engine"].cfg.lr) == ("adam", 1e-3)  # the experiment's
    assert DANN(_net(), optimizer="adam").optimizer_override == {"optimizer": "adam", "momentum": 0.9}
    assert DANN(_net(), lr=0.002).optimizer_override == {"lr": 0.002}  # keeps the experiment's optimiser
    with pytest.raises(TransferkitError, match="optimizer must be"):
        DANN(_net(), optimizer="rmsprop")


@pytest.mark.parametrize("combine, sizes", [("sum", [800, 500, 10]), ("concat", [800, 1000, 20])])
def test_multilayer_discriminator_wiring_in_the_method(combine, sizes):
    method = MultiLayerAdversarial(_net(), combine=combine, gamma=0.1)
    assert method.layers == ["conv2", "fc1", "head"]  # last three units (seed 000)
    assert method.discriminator.layer_input_sizes() == sizes  # eq. 2 for both ⊕
    assert method.discriminator.gamma == 0.1
    other = MultiLayerAdversarial(_net(), same_label_space=False)
    assert other.layers == ["conv2", "fc1"]  # second and third last
    terms = method.losses(uda_batch())
    assert set(terms) == {"ce_source", "disc", "adv_encoder"}


def test_layers_option_sizes_single_discriminators_from_the_backbone():
    net = _net()
    assert DANN(net, layers=["conv2", "embedding"]).discriminator.net[0].in_features == 800 + 500
    assert get_method("confusion")(net, layers="head").discriminator.net[0].in_features == 10
    with pytest.raises(TransferkitError, match="unknown layer"):
        DANN(net, layers=["conv9"])


def test_entmin_weight_adds_the_target_entropy_to_any_method():
    method = get_method("mmd")(_net(), entmin_weight=0.5)
    terms = method.losses(uda_batch())
    assert "entmin" in terms and "mmd" in terms
    assert "entmin" not in get_method("coral")(_net()).losses(uda_batch())


def test_dsn_has_all_four_terms_and_colour_input():
    method = get_method("dsn")(_net(channels=3))
    s, t = _domain(8, 0.0, 1, channels=3), _domain(8, 0.3, 2, channels=3)
    terms = method.losses(Batch(step=0, progress=0.2, source=(s.images, s.labels), unlabeled=t.images))
    assert set(terms) == {"ce_source", "recon", "difference", "similarity"}
    assert all(torch.isfinite(v) for v in terms.values())


def test_target_validation_is_never_used_for_selection():
    seen = {}

    def make_engine(tag, config=None):
        engine = Engine(TrainConfig(steps=1, batch_size=8, eval_every=1, progress=False), seed=0)
        fit = engine.fit
        engine.fit = lambda method, **kw: seen.update(kw) or fit(method, **kw)
        return engine

    src, tgt = _domain(16, 0.0, 1).with_name("a/train"), _domain(16, 0.3, 2).with_name("b/train")
    with pytest.warns(UserWarning, match="ignoring the labelled target validation"):
        fit_for_target(get_method("coral")(_net()), make_engine, None, None, source=src, unlabeled=tgt,
                       val=_domain(8, 0.3, 3).with_name("b/val"))
    assert seen["val"] is None
    fit_for_target(get_method("coral")(_net()), make_engine, None, None, source=src, unlabeled=tgt,
                   val=_domain(8, 0.0, 3).with_name("a/val"))
    assert seen["val"] is not None  # source validation is allowed
    k_shot_rest = _domain(16, 0.3, 2).with_name("b/train/unlabeled")  # sample_k_shot's unlabelled part
    with pytest.warns(UserWarning, match="ignoring the labelled target validation"):
        fit_for_target(get_method("dann")(_net()), make_engine, None, None, source=src, unlabeled=k_shot_rest,
                       val=_domain(8, 0.3, 3).with_name("b/val"))
    assert seen["val"] is None
    office = "folder:/data/office/"  # user folders: the names share their first part
    with pytest.warns(UserWarning, match="ignoring the labelled target validation"):
        fit_for_target(
            get_method("dann")(_net()), make_engine, None, None,
            source=_domain(16, 0.0, 1).with_name(office + "amazon/train"),
            unlabeled=_domain(16, 0.3, 2).with_name(office + "webcam/train"),
            val=_domain(8, 0.3, 3).with_name(office + "webcam/val"))
    assert seen["val"] is None
    from dataclasses import replace  # user folders named like split parts: the loaded spec tells them apart

    def loaded(d, spec, part):
        return replace(d, name=f"{spec}/{part}", provenance={"spec": spec})
    with pytest.warns(UserWarning, match="ignoring the labelled target validation"):
        fit_for_target(
            get_method("dann")(_net()), make_engine, None, None,
            source=loaded(_domain(16, 0.0, 1), "folder:/d/train", "train"),
            unlabeled=loaded(_domain(16, 0.3, 2), "folder:/d/test", "train"),
            val=loaded(_domain(8, 0.3, 3), "folder:/d/test", "val"))
    assert seen["val"] is None



def test_a_plugin_method_that_reads_no_target_label_is_not_selected_on_target_labels_by_transfer_fit():
    """The rule is the streams' (as in transferkit run), not AdaptationMethod's: a Method
    subclass with a source and an unlabeled stream drops a target val= too, with one warning."""
    import warnings

    import torch.nn.functional as F

    from transferkit import Transfer
    from transferkit.methods.base import Method

    class Plugin(Method):
        name = "plugin_uda"
        streams = ("source", "unlabeled")
        needs_pretrained = True

        def losses(self, batch):
            return {"ce_source": F.cross_entropy(self.forward_from_input(batch.source[0]), batch.source[1])}

    src, tgt = _domain(32, 0.0, 1).with_name("a/train"), _domain(32, 0.3, 2).with_name("b/train")
    val = _domain(16, 0.3, 3).with_name("b/val")
    tiny = TrainConfig(steps=4, batch_size=8, eval_every=2, progress=False)
    for method in (Plugin, get_method("coral")):
        model = Transfer("coral", backbone="lenet", train=tiny, pretrain=tiny)
        model.method_cls = method  # the plugin unregistered: no other test lists it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(source=src, unlabeled=tgt, val=val)
        said = [str(w.message) for w in caught if "ignoring the labelled target validation" in str(w.message)]
        assert len(said) == 1, said
        assert model.fit_result_.best_val_accuracy is None

def test_run_gives_unsupervised_methods_no_target_validation_split(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    cfg = ExperimentConfig(name="u", source="mnist", target="digits", backbone="lenet", k=5, repeats=1,
                           methods=["dann", "finetune"], select_on="target_val",
                           pretrain=TrainConfig(steps=4, progress=False),
                           train=TrainConfig(steps=4, eval_every=2, batch_size=8, progress=False),
                           out_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="dann reads no target label, so it does not select on the target's"):
        rows = {r["method"]: r for r in run_experiment(cfg, log=lambda *a: None)[1]}
    assert rows["dann"]["val_accuracy"] is None and rows["finetune"]["val_accuracy"] is not None


def test_adaptation_options_are_checked_by_name():
    for name, options, message in [
            ("multilayer_adv", {"same_label_space": "no"}, "option same_label_space must be true or false"),
            ("dann", {"layers": 3}, "layers must be a unit name or a list of unit names, got 3"),
            ("multilayer_adv", {"layers": ["head", "conv2"]}, r"layers must follow the network's order"),
            ("multilayer_adv", {"layers": ["conv2", "conv2"]}, r"more than once"),
            ("adda_encoder", {"variant": "full"}, "adda_encoder is ADDA's encoder_only variant")]:
        with pytest.raises(TransferkitError, match=message):
            get_method(name)(_net(), **options)
    assert get_method("multilayer_adv")(_net(), layers=["conv2", "embedding", "head"]).layers[-1] == "head"


def test_adda_sizes_its_discriminator_without_the_networks_input_shape():
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    method = get_method("adda")(from_sequential(seq))  # no input_shape: the head's size is its class count
    assert method.discriminator(torch.zeros(3, 10)).shape == (3,)


def test_a_huge_multilayer_discriminator_warns_with_its_size():
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    from transferkit.discriminators import MultiLayerDiscriminator
    seq = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Flatten(),
                        nn.Linear(16 * 28 * 28, 10))
    net = from_sequential(seq, input_shape=(1, 28, 28))
    message = r"has over 157 M weights \(0.6 GiB.*\[embedding, head\]"
    with torch.device("meta"), pytest.warns(UserWarning, match=message):
        MultiLayerDiscriminator.for_network(net, ["unit1", "unit2", "head"])


@pytest.mark.parametrize("name", ["adda", "adda_encoder", "multilayer_adda"])
def test_adda_computes_the_fixed_source_encoders_features_once_per_fit(name):
    from helpers import check_frozen_features_cached
    method = get_method(name)(_net())
    src, tgt = _domain(24, 0.0, 1), _domain(16, 0.3, 2)
    cfg = TrainConfig(steps=5, batch_size=8, eval_every=5, progress=False)
    idx = torch.tensor([5, 0, 17, 3])
    batch = Batch(step=0, progress=0.5, source=(src.images[idx], src.labels[idx]), unlabeled=tgt.images[:4],
                  indices={"source": idx, "unlabeled": torch.arange(4)})
    check_frozen_features_cached(method, method.source_net.unit("conv1"),
                                 lambda: Engine(cfg, seed=0).fit(method, source=src, unlabeled=tgt), batch,
                                 {"source": src.images, "unlabeled": tgt.images})


def _record_outputs(module):
    """Every output of ``module`` from now on, with its gradient retained (a forward hook;
    the caller removes the returned handle)."""
    outs = []

    def hook(_module, _inputs, out):
        if not isinstance(out, torch.Tensor):  # the (source, target) pair of a joint call
            return
        if out.requires_grad:
            out.retain_grad()
        outs.append(out)
    return outs, module.register_forward_hook(hook)


def _encoder_term_logit_grads(method, term, batch=None):
    """Backward of ``term`` alone; the discriminator outputs that received a gradient."""
    method.train_mode()
    outs, handle = _record_outputs(method.discriminator)
    try:
        terms = method.losses(batch or uda_batch())
    finally:
        handle.remove()
    terms[term].backward()
    return terms[term], [o for o in outs if o.grad is not None]


def test_adda_encoder_term_pushes_target_logits_toward_source():
    method = get_method("adda")(_net(), weight=0.5)
    _, graded = _encoder_term_logit_grads(method, "adv_target")
    assert len(graded) == 1  # only the frozen pass on the target features (the disc terms are not in it)
    logit, grad = graded[0].detach(), graded[0].grad
    assert (grad < 0).all()  # inverted label: target pushed toward "source" (label 1)
    assert torch.allclose(grad, 0.5 * (torch.sigmoid(logit) - 1) / len(logit))


def test_multilayer_encoder_term_pushes_each_domain_toward_the_other():
    method = MultiLayerAdversarial(_net(), weight=0.3)
    _, graded = _encoder_term_logit_grads(method, "adv_encoder")
    assert len(graded) == 2  # frozen passes on the source, then the target activations
    (l_s, g_s), (l_t, g_t) = [(o.detach(), o.grad) for o in graded]
    assert (g_s > 0).all() and (g_t < 0).all()  # eq. 4: source toward "target" (0), target toward "source" (1)
    assert torch.allclose(g_s, 0.3 * torch.sigmoid(l_s) / len(l_s))
    assert torch.allclose(g_t, 0.3 * (torch.sigmoid(l_t) - 1) / len(l_t))


@pytest.mark.parametrize("name", ["adda", "adda_encoder", "confusion", "multilayer_adv", "multilayer_adda"])
def test_the_discriminator_term_pushes_source_logits_up_and_target_logits_down(name):
    method = get_method(name)(_net())
    s, t = _domain(8, 0.0, 1), _domain(6, 0.3, 2)  # 8 source and 6 target images tell the two passes apart
    batch = Batch(step=1, progress=0.5, source=(s.images, s.labels), unlabeled=t.images)
    _, graded = _encoder_term_logit_grads(method, "disc", batch)
    assert sorted(len(o) for o in graded) == [6, 8]  # its own passes on the (detached) source and target features
    (l_s, g_s), (l_t, g_t) = [(o.detach(), o.grad) for o in sorted(graded, key=len, reverse=True)]
    assert (g_s < 0).all() and (g_t > 0).all()  # eq. 3: source labelled 1, target 0; descent raises l_s
    assert torch.allclose(g_s, (torch.sigmoid(l_s) - 1) / len(l_s))
    assert torch.allclose(g_t, torch.sigmoid(l_t) / len(l_t))


def test_confusion_term_is_the_cross_entropy_to_the_uniform_domain_label():
    method = get_method("confusion")(_net(), weight=0.4)
    value, graded = _encoder_term_logit_grads(method, "confusion")
    assert len(graded) == 1  # one frozen pass on source and target together
    logit, grad = graded[0].detach(), graded[0].grad
    assert len(logit) == 16
    expected = 0.4 * 0.5 * (torch.nn.functional.softplus(logit) + torch.nn.functional.softplus(-logit)).mean()
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert torch.allclose(grad, 0.4 * (torch.sigmoid(logit) - 0.5) / len(logit))  # toward d = 1/2


@pytest.mark.parametrize("progress", [0.5, 0.0])
def test_dann_losses_reverse_the_domain_gradient_into_the_encoder_only(progress):
    from transferkit.discriminators import discriminator_loss

    net = _net()
    method = DANN(net)  # default weight and λ schedule
    batch = uda_batch(progress=progress)
    (x_s, _), x_t = batch.source, batch.unlabeled
    weight = net.unit("fc1")[1].weight
    disc_params = list(method.discriminator.parameters())
    logit = method.discriminator(net.forward_features(torch.cat([x_s, x_t])))
    plain = torch.autograd.grad(discriminator_loss(logit[:8], logit[8:]), [weight] + disc_params)
    assert plain[0].abs().sum() > 0
    method.zero_grad(set_to_none=True)
    method.losses(batch)["domain"].backward()
    coef = method.coefficient(progress)
    if progress == 0.0:
        assert coef == 0.0 and torch.all(weight.grad == 0)  # λ_0 = 0: the encoder gets nothing yet
    else:
        assert coef == pytest.approx(0.1 * (2 / (1 + math.exp(-5)) - 1))
        tol = 1e-5 * float(plain[0].abs().max())
        assert torch.allclose(weight.grad, -coef * plain[0], rtol=1e-4, atol=tol)
    for p, g in zip(disc_params, plain[1:]):  # the discriminator descends L_d itself
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-7)


def _spread_net(scale=4.0):
    """lenet at initialisation has tiny, near-uniform logits (entropy, MCC and CORAL terms
    all but constant); scaling every parameter spreads them."""
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def _known_terms(method):
    method.train_mode()
    batch = uda_batch()
    (x_s, y_s), x_t = batch.source, batch.unlabeled
    return {k: v.detach() for k, v in method.losses(batch).items()}, x_s, y_s, x_t


def test_mmd_term_is_the_weighted_mmd2_of_source_against_target_at_each_layer():
    from transferkit.losses import mmd2

    net, layers, scales = _spread_net(), ["conv2", "embedding"], (0.5, 1.0, 2.0)
    terms, x_s, y_s, x_t = _known_terms(get_method("mmd")(net, weight=0.7, layers=layers, scales=scales))
    with torch.no_grad():
        s, t = net.forward_features(x_s, layers), net.forward_features(x_t, layers)
        expected = 0.7 * sum(mmd2(s[n], t[n], scales) for n in layers)
        assert float(terms["ce_source"]) == pytest.approx(float(torch.nn.functional.cross_entropy(net(x_s), y_s)),
                                                          rel=1e-5)
    assert float(expected) > 0.1
    assert float(terms["mmd"]) == pytest.approx(float(expected), rel=1e-4)


def test_mcc_term_reads_the_target_logits():
    from transferkit.losses import minimum_class_confusion

    net = _spread_net()
    terms, x_s, _, x_t = _known_terms(get_method("mcc")(net, weight=0.5, temperature=1.5))
    with torch.no_grad():
        expected = 0.5 * minimum_class_confusion(net(x_t), 1.5)
        on_source = 0.5 * minimum_class_confusion(net(x_s), 1.5)
    assert float(expected) != pytest.approx(float(on_source), rel=1e-3)  # the batch tells the two apart
    assert float(terms["mcc"]) == pytest.approx(float(expected), rel=1e-5)


def test_mcc_passes_detach_weights_to_its_loss():
    from transferkit.losses import minimum_class_confusion

    assert get_method("mcc")(_net()).detach_weights is True  # the authors' form by default
    grads = {}
    for detach in (True, False):
        net = _spread_net()
        method = get_method("mcc")(net, detach_weights=detach)
        method.train_mode()
        batch = uda_batch()
        method.losses(batch)["mcc"].backward()
        got = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        minimum_class_confusion(net(batch.unlabeled), 2.5, detach_weights=detach).backward()
        assert max(float((a - p.grad).abs().max()) for a, p in zip(got, net.parameters())) < 1e-6
        grads[detach] = got
    assert max(float((a - b).abs().max()) for a, b in zip(grads[True], grads[False])) > 1e-4  # grads ~1e-2


def test_entmin_term_is_the_weighted_entropy_of_the_target_predictions():
    from transferkit.losses import entropy

    net = _spread_net()
    terms, x_s, _, x_t = _known_terms(get_method("entmin")(net, weight=0.3))
    with torch.no_grad():
        expected, on_source = 0.3 * entropy(net(x_t)), 0.3 * entropy(net(x_s))
    assert float(expected) != pytest.approx(float(on_source), rel=1e-3)
    assert float(terms["entmin"]) == pytest.approx(float(expected), rel=1e-5)


def test_coral_term_on_the_logits_matches_its_formula():
    from transferkit.losses import coral

    net = _spread_net()
    terms, x_s, _, x_t = _known_terms(get_method("coral")(net, weight=2.0, layers="head"))
    with torch.no_grad():
        expected = 2.0 * coral(net(x_s), net(x_t))
    assert float(expected) > 0.1
    assert float(terms["coral"]) == pytest.approx(float(expected), rel=1e-4)


def test_dsn_difference_recon_and_similarity_terms_match_their_formulas():
    from transferkit.discriminators import discriminator_loss
    from transferkit.losses import difference_loss, scale_invariant_mse

    net = _net()
    method = get_method("dsn")(net, recon_weight=0.3, diff_weight=0.2, sim_weight=0.5)
    terms, x_s, _, x_t = _known_terms(method)
    with torch.no_grad():
        hc_s, hc_t = net.forward_features(x_s), net.forward_features(x_t)
        hp_s, hp_t = method.private_source(x_s), method.private_target(x_t)
        difference = 0.2 * (difference_loss(hc_s, hp_s) + difference_loss(hc_t, hp_t))
        recon = 0.3 * (scale_invariant_mse(x_s, method.decoder(hc_s + hp_s))
                       + scale_invariant_mse(x_t, method.decoder(hc_t + hp_t)))
        similarity = 0.5 * discriminator_loss(method.discriminator(hc_s), method.discriminator(hc_t))
    assert float(terms["difference"]) == pytest.approx(float(difference), rel=1e-4)
    assert float(terms["recon"]) == pytest.approx(float(recon), rel=1e-4)
    assert float(terms["similarity"]) == pytest.approx(float(similarity), rel=1e-4)


def test_a_resumed_fit_caches_the_restored_source_encoder_and_a_failed_fit_drops_its_cache(tmp_path):
    class Checked(get_method("adda")):
        def losses(self, batch):  # the cached rows are the features of the source encoder in use
            cached = self.cached_rows("source_features", batch.indices["source"], lambda: None)
            assert cached is not None and torch.allclose(cached, self.source_features(batch.source[0]), atol=1e-5)
            return super().losses(batch)

    class Kill(Exception):
        pass

    def kill_at_3(step, state):  # after the checkpoint of step 2: 2 steps x 8 left, fewer than the 24 images,
        if step == 3:              # but the whole budget draws them all, so the resumed fit caches too
            raise Kill

    src, tgt = _domain(24, 0.0, 1), _domain(16, 0.3, 2)
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=4, checkpoint_every=1, progress=False)
    first = Checked(_net(seed=0))
    with pytest.raises(Kill):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(kill_at_3,)).fit(first, source=src, unlabeled=tgt)
    assert first.input_cache == {}
    other = Checked(_net(seed=1))  # built from other weights: the checkpoint restores the first ones
    Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(other, source=src, unlabeled=tgt)
    assert torch.equal(other.source_net.unit("conv1")[0].weight, first.source_net.unit("conv1")[0].weight)


def test_an_adda_fit_resumed_from_its_checkpoint_keeps_adam_beta1_and_ends_as_an_uninterrupted_one(tmp_path):
    class Kill(Exception):
        pass

    def kill_at_3(step, state):
        if step == 3:
            raise Kill
    src, tgt = _domain(24, 0.0, 1), _domain(16, 0.3, 2)
    cfg = TrainConfig(steps=5, batch_size=8, eval_every=5, checkpoint_every=1, progress=False)
    whole = get_method("adda")(_net(seed=0))
    Engine(cfg, seed=0).fit(whole, source=src, unlabeled=tgt)
    with pytest.raises(Kill):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(kill_at_3,)).fit(get_method("adda")(_net(seed=0)),
                                                                           source=src, unlabeled=tgt)
    seen = []

    class Watched(Engine):
        def _load(self, method, opt, *args):
            out = super()._load(method, opt, *args)
            seen.append([g["betas"] for g in opt.param_groups])  # as the checkpoint restored them
            return out
    resumed = get_method("adda")(_net(seed=0))
    Watched(cfg, seed=0, checkpoint_dir=tmp_path).fit(resumed, source=src, unlabeled=tgt)
    assert seen and all(tuple(b) == (0.5, 0.999) for groups in seen for b in groups)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_dsn_similarity_reverses_and_scales_the_gradient_into_the_encoder():
    from transferkit.discriminators import discriminator_loss
    from transferkit.losses import dann_lambda
    net = _net()
    method = get_method("dsn")(net, sim_weight=1.0)
    batch = uda_batch(progress=0.5)
    (x_s, _), x_t = batch.source, batch.unlabeled
    w = net.unit("fc1")[1].weight
    logit = method.discriminator(net.forward_features(torch.cat([x_s, x_t])))
    plain = torch.autograd.grad(discriminator_loss(logit[:8], logit[8:]), w)[0]
    method.zero_grad(set_to_none=True)
    method.losses(batch)["similarity"].backward()
    assert torch.allclose(w.grad, -dann_lambda(0.5) * plain, rtol=1e-4, atol=1e-5 * float(plain.abs().max()))


def test_adda_source_weight_scales_the_source_term():
    import torch.nn.functional as F
    net = _net()
    b = uda_batch()
    terms = get_method("adda")(net, source_weight=0.5).losses(b)
    with torch.no_grad():
        expected = 0.5 * F.cross_entropy(net(b.source[0]), b.source[1]).item()
    assert terms["ce_source"].item() == pytest.approx(expected, rel=1e-5)


def test_source_and_target_batches_of_different_sizes():
    import torch.nn.functional as F

    from transferkit.losses import mmd2
    net = _net()
    s, t = _domain(8, 0.0, 1), _domain(5, 0.3, 2)
    terms = get_method("mmd")(net).losses(Batch(step=0, progress=0.5, source=(s.images, s.labels), unlabeled=t.images))
    with torch.no_grad():
        assert terms["ce_source"].item() == pytest.approx(F.cross_entropy(net(s.images), s.labels).item(), rel=1e-5)
        expected = float(mmd2(net.forward_features(s.images), net.forward_features(t.images)))
    assert terms["mmd"].item() == pytest.approx(expected, rel=1e-4)


def test_multilayer_adv_with_the_convolutional_discriminator_keeps_the_two_players_apart():
    from transferkit.discriminators import ConvMultiLayerDiscriminator
    method = MultiLayerAdversarial(_net(), discriminator="conv")
    assert isinstance(method.discriminator, ConvMultiLayerDiscriminator)
    method.train()
    assert _grad_owners(method, "disc") == (True, False)
    assert _grad_owners(method, "adv_encoder") == (False, True)
    with pytest.raises(TransferkitError, match="option discriminator must be one of auto, fc, conv"):
        MultiLayerAdversarial(_net(), discriminator="mlp")


def test_multilayer_adv_on_resnet18_trains_table6s_discriminator_without_the_size_warning():
    import warnings

    from transferkit.discriminators import ConvMultiLayerDiscriminator
    torch.manual_seed(0)
    net = build_backbone("resnet18", num_classes=10, in_channels=1, image_size=28)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method = MultiLayerAdversarial(net)
    assert isinstance(method.discriminator, ConvMultiLayerDiscriminator)
    assert method.layers == ["layer3", "layer4", "head"]
    before = state_copy(method.discriminator)
    cfg = TrainConfig(steps=1, batch_size=4, eval_every=1, progress=False)
    Engine(cfg, seed=0).fit(method, source=_domain(8, 0.0, 1), unlabeled=_domain(8, 0.3, 2))
    after = method.discriminator.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


def test_multilayer_adv_follows_seed_000s_layer_rule_for_other_label_sets_and_takes_tail_depth_0():
    from transferkit.discriminators import default_layers
    cfg = TrainConfig(steps=1, batch_size=8, eval_every=1, progress=False)
    src, tgt = _domain(16, 0.0, 1), _domain(16, 0.3, 2)
    five = Domain("t5", tgt.images, tgt.labels % 5, [str(i) for i in range(5)])  # other classes
    for unlabeled, same in ((tgt, True), (five, False)):
        method = get_method("multilayer_adv")(_net())
        Engine(cfg, seed=0).fit(method, source=src, unlabeled=unlabeled)
        assert method.layers == default_layers(method.net, same)
        assert len(method.discriminator.layers) == len(method.layers)  # built for those layers
    forced = get_method("multilayer_adv")(_net(), same_label_space=True)
    Engine(cfg, seed=0).fit(forced, source=src, unlabeled=five)
    assert forced.layers == default_layers(forced.net, True)
    for kind in ("fc", "conv"):  # Table 6's tail: none
        get_method("multilayer_adv")(_net(), discriminator=kind, tail_depth=0)
    with pytest.raises(TransferkitError, match="tail_depth must be a whole number >= 0"):
        get_method("multilayer_adv")(_net(), tail_depth=-1)


def test_multilayer_adv_label_rule_ignores_class_order_and_a_checkpoint_of_other_modules_is_named(tmp_path):
    from transferkit.discriminators import default_layers
    src, tgt = _domain(16, 0.0, 1), _domain(16, 0.3, 2)
    shuffled = Domain("t", tgt.images, tgt.labels, [str(i) for i in reversed(range(10))])  # same label space
    cfg = TrainConfig(steps=1, batch_size=8, eval_every=1, progress=False)
    method = get_method("multilayer_adv")(_net())
    Engine(cfg, seed=0).fit(method, source=src, unlabeled=shuffled)
    assert method.layers == default_layers(method.net, True)
    five = Domain("t", tgt.images, tgt.labels % 5, [str(i) for i in range(5)])
    ten = Domain("t", five.images, five.labels, [str(i) for i in range(10)])  # same images and labels, 10 names
    stop = TrainConfig(steps=4, batch_size=8, eval_every=2, checkpoint_every=2, progress=False)
    Engine(stop, seed=0, checkpoint_dir=tmp_path).fit(get_method("multilayer_adv")(_net()), source=src,
                                                      unlabeled=five)  # leaves its checkpoint (2 layers)
    with pytest.raises(TransferkitError, match="holds other modules than this method builds"):
        Engine(stop, seed=0, checkpoint_dir=tmp_path).fit(get_method("multilayer_adv")(_net()), source=src,
                                                         unlabeled=ten)


def test_multilayer_adv_decides_the_label_space_by_the_labelled_target_and_names_placeholder_classes(recwarn):
    """Unlabelled images given with placeholder labels (one made-up class) do not flip the
    layers when target= names the target's classes; without it they warn; Domain.unlabeled
    images name no classes (same label space taken) and are refused where labels are read."""
    from transferkit.discriminators import default_layers
    cfg = TrainConfig(steps=1, batch_size=8, eval_every=1, progress=False)
    src, tgt = _domain(16, 0.0, 1), _domain(16, 0.3, 2)
    placeholder = Domain("u", tgt.images, torch.zeros(16, dtype=torch.long), ["unlabelled"])
    bare = Domain.unlabeled("u", tgt.images)
    assert not bare.labeled and bare.class_names == ["(unlabeled)"] and "unlabeled" in repr(bare)
    method = get_method("multilayer_adv")(_net())
    Engine(cfg, seed=0).fit(method, source=src, target=tgt, unlabeled=placeholder)
    assert method.layers == default_layers(method.net, True) and not recwarn.list
    method = get_method("multilayer_adv")(_net())
    with pytest.warns(UserWarning, match=r"class names of the unlabeled domain 'u', \['unlabelled'\], which look like "
                                         r"placeholders.*Domain.unlabeled"):
        Engine(cfg, seed=0).fit(method, source=src, unlabeled=placeholder)
    assert method.layers == default_layers(method.net, False)  # as the names say: other classes
    recwarn.clear()
    method = get_method("multilayer_adv")(_net())
    Engine(cfg, seed=0).fit(method, source=src, unlabeled=bare)
    assert method.layers == default_layers(method.net, True) and not recwarn.list
    with pytest.raises(TransferkitError, match=r"its source domain 'u' has no labels \(Domain.unlabeled\)"):
        Engine(cfg, seed=0).fit(get_method("dann")(_net()), source=bare, unlabeled=tgt)
    with pytest.raises(TransferkitError, match=r"its val domain 'u' has no labels"):
        Engine(cfg, seed=0).fit(get_method("dann")(_net()), source=src, unlabeled=tgt, val=bare)


def test_multilayer_adda_is_seed_000s_two_step_form():
    """Seed 000 §3 / §4.3: the source network stays fixed and gives the source activations;
    the target network (initialised from it) is trained on alpha x eq. 4 alone."""
    method = get_method("multilayer_adda")(_net(), weight=0.3)
    assert method.untied and method.lr_schedule == "constant" and method.layers == ["conv1", "conv2", "fc1"]
    assert get_method("multilayer_adda")(_net()).init_options == {}  # its own defaults are not options (signature)
    assert get_method("multilayer_adda")(_net(), lr_mult=1.0).init_options == {"lr_mult": 1.0}
    assert method.trainable_units() == ["conv1", "conv2", "fc1"]  # encoder only, in feature space (§4.3)
    assert [g["lr_mult"] for g in method.param_groups()] == [0.2, 0.2]  # ADDA's training strategy (§4.3)
    assert all("lr_mult" not in g for g in get_method("multilayer_adv")(_net()).param_groups())
    assert [g["beta1"] for g in method.param_groups()] == [0.5, 0.5]  # ADDA's Adam beta1, as adda
    assert all("beta1" not in g for g in get_method("multilayer_adv")(_net()).param_groups())
    assert [g["beta1"] for g in get_method("multilayer_adv")(_net(), beta1=0.7).param_groups()] == [0.7, 0.7]
    for name, bad in (("multilayer_adda", 1.0), ("adda", -0.1)):
        with pytest.raises(TransferkitError, match=f"{name}: option beta1 .* must be a number in \\[0, 1\\)"):
            get_method(name)(_net(), beta1=bad)
    for name, bad in (("adda_encoder", "high"), ("multilayer_adv", True)):  # refused by its annotation first
        with pytest.raises(TransferkitError, match=f"{name}: option beta1 must be a number or null, got {bad!r}"):
            get_method(name)(_net(), beta1=bad)
    src_before, head_before = state_copy(method.source_net), state_copy(method.net.head)
    calls = []
    hook = method.discriminator.layers[0].register_forward_hook(lambda *a: calls.append(1))
    terms = method.losses(uda_batch())
    hook.remove()
    assert len(calls) == 3  # eq. 3 on both domains, eq. 4 on the target: its source half is a constant here
    assert set(terms) == {"disc", "adv_encoder"}  # no source cross entropy
    batch = uda_batch()
    (x_s, _), x_t = batch.source, batch.unlabeled
    with torch.no_grad():
        a_s = method.source_net.forward_features(x_s, method.layers)
        a_t = method.net.forward_features(x_t, method.layers)
        d_s, d_t = method.discriminator([a_s[n] for n in method.layers], [a_t[n] for n in method.layers])
    from transferkit.discriminators import inverted_label_loss
    assert torch.allclose(terms["adv_encoder"], 0.3 * inverted_label_loss(d_s, d_t))
    cfg = TrainConfig(steps=3, batch_size=8, eval_every=3, progress=False)
    Engine(cfg, seed=0).fit(method, source=_domain(16, 0.0, 1), unlabeled=_domain(16, 0.3, 2))
    assert all(torch.equal(v, src_before[k]) for k, v in method.source_net.state_dict().items())
    assert not all(torch.equal(v, src_before[k]) for k, v in method.net.state_dict().items())
    assert all(torch.equal(v, head_before[k]) for k, v in method.net.head.state_dict().items())
    assert get_method("multilayer_adda")(_net(), lr_schedule="dann").lr_schedule == "dann"
    with pytest.raises(TransferkitError, match="untied form; for untied=False use multilayer_adv"):
        get_method("multilayer_adda")(_net(), untied=False)
    with pytest.raises(TransferkitError, match="option untied must be true or false"):
        get_method("multilayer_adv")(_net(), untied="yes")
    with pytest.raises(TransferkitError, match="untied form reads feature units only"):
        get_method("multilayer_adda")(_net(), same_label_space=False)


def test_dsn_warns_when_its_image_sized_layers_are_huge():
    with torch.device("meta"), pytest.warns(UserWarning, match=r"dsn's private encoders and decoder have 28\d M"):
        get_method("dsn")(build_backbone("resnet18", 31, 3, 224))
