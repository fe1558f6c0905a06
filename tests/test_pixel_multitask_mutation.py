"""Tests from a mutation pass over methods/pixel (cyclegan, TwoStageTranslation, task_terms,
lsgan_loss, PatchDiscriminator), methods/adain, methods/unit_gan and methods/multitask.

Each test kills at least one mutant that the earlier tests (test_pixel.py, test_adain.py,
test_unit_gan.py, test_multitask.py, test_adaptation.py) let through; the mutant it targets is
named in the test's comment. Expected values come from the modules' docstrings, written out by
hand on tiny tensors and small batches (direct calls of ``losses``, one short fit).

Judged equivalent, so not tested: adain's `0 <=` of the alpha check (the generic option check refuses
a negative alpha first), `translate` without `evaluating` in unit_gan and cyclegan (no dropout or
BatchNorm in the translators), adain's `frozen_children = ()` (the encoder never requires grad),
multitask's `cache_frozen_prefix = True` (every unit trains) and separate forward passes (no BatchNorm),
task_terms always concatenating x_s and x_t (only compute).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import multitask_batch, multitask_on_lenet, seeded_lenet, toy_domain, uda_batch

from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.fitting import retarget_head
from transferkit.losses import entropy
from transferkit.methods import get_method
from transferkit.methods.adain import EPS, adain, channel_stats, style_loss
from transferkit.methods.pixel import PatchDiscriminator


def _off_identity(method):
    """cyclegan with both generators moved off the identity (``G(x) != x``, ``F(G(x)) != x``)."""
    with torch.no_grad():
        method.to_target.out.weight.normal_(std=0.05)
        method.to_source.out.weight.normal_(std=0.05)
    method.train_mode()
    return method


def _reached(method, loss):
    """The top-level children whose parameters ``loss``'s gradient reaches."""
    method.zero_grad(set_to_none=True)
    loss.backward()
    return {n.split(".")[0] for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _close(a, b):
    torch.testing.assert_close(a.detach(), b.detach(), atol=1e-5, rtol=1e-5)


def _no_input_shape():
    net = seeded_lenet()
    net.input_shape = None
    return net


# --- cyclegan, task_terms, PatchDiscriminator ------------------------------------------------


def test_cyclegan_cycle_and_identity_terms_off_the_identity():
    # mutants: cycle through G twice (to_target(fake_t)) / F twice; cycle_weight or identity_weight
    # dropped; identity G(x_s) for G(x_t); (at the identity start every cycle term is 0, so the
    # existing tests cannot tell)
    method = _off_identity(get_method("cyclegan")(seeded_lenet(), cycle_weight=3.0, identity_weight=0.5))
    batch = uda_batch(6, 4)
    (x_s, _), x_t = batch.source, batch.unlabeled
    terms = method.losses(batch)
    G, Fn = method.to_target, method.to_source
    with torch.no_grad():
        assert not torch.allclose(G(x_s), x_s, atol=1e-3)
        cycle = 3.0 * ((Fn(G(x_s)) - x_s).abs().mean() + (G(Fn(x_t)) - x_t).abs().mean())
        identity = 0.5 * ((G(x_t) - x_t).abs().mean() + (Fn(x_s) - x_s).abs().mean())
    _close(terms["cycle"], cycle)
    _close(terms["identity"], identity)


def test_cyclegan_adversarial_terms_off_the_identity():
    # mutants: L_D's fake terms on the untranslated images (d_t(x_s) for d_t(G(x_s)), d_s(x_t)
    # for d_s(F(x_t))): at the identity start G(x_s) = x_s hides them
    method = _off_identity(get_method("cyclegan")(seeded_lenet()))
    batch = uda_batch(6, 4)
    (x_s, _), x_t = batch.source, batch.unlabeled
    terms = method.losses(batch)
    G, Fn, d_t, d_s = method.to_target, method.to_source, method.disc_target, method.disc_source
    with torch.no_grad():
        disc = 0.5 * (((d_t(x_t) - 1) ** 2).mean() + (d_t(G(x_s)) ** 2).mean()
                      + ((d_s(x_s) - 1) ** 2).mean() + (d_s(Fn(x_t)) ** 2).mean())
        gan = ((d_t(G(x_s)) - 1) ** 2).mean() + ((d_s(Fn(x_t)) - 1) ** 2).mean()
    _close(terms["disc"], disc)
    _close(terms["gan"], gan)


def test_cyclegan_translate_is_the_source_to_target_generator():
    # mutants: translate() runs to_source (F) instead of to_target (G) (both are the identity at
    # the start); translate() without no_grad (its images to look at would carry G's graph)
    method = _off_identity(get_method("cyclegan")(seeded_lenet()))
    x_s = uda_batch(6, 4).source[0]
    assert not method.translate(x_s).requires_grad
    with torch.no_grad():
        _close(method.translate(x_s), method.to_target(x_s))
        assert not torch.allclose(method.translate(x_s), method.to_source(x_s), atol=1e-4)


def test_cyclegan_task_terms_read_translated_source_and_target_rows():
    # mutants: the task term on x_s instead of G(x_s); ce_source on the translated rows
    # (logits[0] for logits[1]); entmin on the source rows (logits[0] for logits[-1])
    method = _off_identity(get_method("cyclegan")(seeded_lenet(), task_weight=0.7, source_weight=0.4,
                                                  entmin_weight=0.2))
    batch = uda_batch(6, 4)
    (x_s, y_s), x_t = batch.source, batch.unlabeled
    terms = method.losses(batch)
    net = method.net
    with torch.no_grad():
        _close(terms["ce_translated"], 0.7 * F.cross_entropy(net(method.to_target(x_s)), y_s))
        _close(terms["ce_source"], 0.4 * F.cross_entropy(net(x_s), y_s))
        _close(terms["entmin"], 0.2 * entropy(net(x_t)))


def test_the_translated_task_term_takes_the_source_stream_s_class_weights():
    # mutant: task_terms' cross entropy with the "target" stream's weights
    method = _off_identity(get_method("cyclegan")(seeded_lenet()))
    w_s = torch.linspace(0.2, 2.0, 10)
    method.class_weights = {"source": w_s, "target": torch.ones(10)}
    batch = uda_batch(6, 4)
    (x_s, y_s), _ = batch.source, batch.unlabeled
    terms = method.losses(batch)
    with torch.no_grad():
        _close(terms["ce_translated"], F.cross_entropy(method.net(method.to_target(x_s)), y_s, weight=w_s))


def test_cyclegan_with_only_the_source_weight_trains_on_the_source_images():
    # mutants: check_task_weights refuses task_weight = 0 whatever source_weight; the task term
    # kept (as 0 · CE) when task_weight = 0
    method = get_method("cyclegan")(seeded_lenet(), task_weight=0.0, source_weight=1.0)
    method.train_mode()
    terms = method.losses(uda_batch(6, 4))
    assert "ce_translated" not in terms and "ce_source" in terms


def test_cyclegan_refuses_a_disc_width_of_zero_and_keeps_its_defaults():
    # mutants: disc_width not checked; the defaults λ_cyc = 10, λ_id = 0, width 16, disc_width 32 changed
    with pytest.raises(TransferkitError, match="width and disc_width must be whole numbers >= 1, got 16 and 0"):
        get_method("cyclegan")(seeded_lenet(), disc_width=0)
    method = get_method("cyclegan")(seeded_lenet())
    assert (method.cycle_weight, method.identity_weight, method.task_weight) == (10.0, 0.0, 1.0)
    assert (method.source_weight, method.entmin_weight) == (0.0, 0.0)
    assert method.to_target.enc1[0].out_channels == 16 and method.to_source.enc1[0].out_channels == 16
    assert method.disc_target.body[0].out_channels == 32 and method.disc_source.body[0].out_channels == 32


def test_patch_discriminator_is_cyclegan_s_layers():
    # mutants: LeakyReLU slope other than 0.2; no instance normalisation in the middle; kernel sizes
    body = PatchDiscriminator(3, width=8).body
    convs = [m for m in body if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((4, 4), (2, 2)), ((4, 4), (2, 2)), ((3, 3), (1, 1))]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16), (16, 1)]
    assert [m.negative_slope for m in body if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2]
    norms = [m for m in body if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 1 and norms[0].num_features == 16
    assert list(body).index(norms[0]) == 3  # after the second convolution, before its activation


# --- TwoStageTranslation through adain ---------------------------------------------------------


def test_a_new_two_stage_method_is_in_stage_two_and_its_task_term_is_computed_without_gradient():
    # mutants: a new TwoStageTranslation starts in stage 1; losses of stage 2 without no_grad
    # around the translation (the decoder, not frozen by prepare here, would get the task's gradient)
    method = get_method("adain")(seeded_lenet())
    assert method.stage == 2
    terms = method.losses(uda_batch(6, 4))
    assert set(terms) == {"ce_styled"}
    assert any(p.requires_grad for p in method.decoder.parameters())
    assert _reached(method, terms["ce_styled"]) == {"net"}


def test_stage_one_freezes_the_task_network_and_stage_two_trains_only_it():
    # mutants: trainable_units ignores the stage (the task network requires grad in stage 1);
    # stage 2's groups include the translator's
    method = get_method("adain")(seeded_lenet())
    method.stage = 1
    method.prepare({})
    assert method.trainable_units() == []
    assert not any(p.requires_grad for p in method.net.parameters())
    assert all(p.requires_grad for p in method.decoder.parameters())
    method.stage = 2
    method.prepare({})
    assert all(p.requires_grad for p in method.net.parameters())
    assert not any(p.requires_grad for p in method.decoder.parameters())
    groups = method.param_groups()
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in method.net.parameters()}


def test_fit_transfer_adds_up_both_stages_and_stage_one_takes_the_experiment_s_steps_by_default():
    # mutants: the result's history, steps or wall time of stage 2 only; stage 1 without the
    # experiment's steps when decoder_steps is None; stage 1 validated (the task network does not move)
    method = get_method("adain")(seeded_lenet(), width=4)
    cfg = TrainConfig(steps=2, eval_every=1, batch_size=8)
    results, steps = [], []

    def make_engine(tag):
        engine = Engine(cfg, seed=0)
        fit = engine.fit

        def recorded(*args, **kwargs):
            steps.append(engine.cfg.steps)
            results.append(fit(*args, **kwargs))
            return results[-1]
        engine.fit = recorded
        return engine
    src, tgt = toy_domain(16, classes=10, name="src"), toy_domain(16, seed=1, classes=10, name="tgt")
    fit = method.fit_transfer(make_engine, source=src, unlabeled=tgt, val=src)
    first, second = results
    assert steps == [2, 2] and fit.steps == 4
    assert first.best_val_accuracy is None and second.best_val_accuracy is not None
    assert first.history and second.history and fit.history == first.history + second.history
    assert fit.wall_s == pytest.approx(first.wall_s + second.wall_s) == method.fit_wall_s


# --- adain ---------------------------------------------------------------------------------


def test_channel_stats_are_population_statistics_with_eps_inside_the_root():
    # mutants: unbiased variance; EPS dropped or added outside the square root
    mean, std = channel_stats(torch.tensor([[[[1.0, 3.0]]]]))
    assert mean.item() == pytest.approx(2.0) and std.item() == pytest.approx((1.0 + EPS) ** 0.5, rel=1e-7)
    assert EPS == 1e-5
    flat = torch.full((1, 2, 3, 3), 0.7)
    assert channel_stats(flat)[1].flatten().tolist() == pytest.approx([EPS ** 0.5] * 2, rel=1e-5)
    out = adain(flat, torch.tensor([[[[1.0, 3.0]], [[0.0, 4.0]]]]))  # a constant content keeps no pattern
    assert torch.isfinite(out).all() and out.flatten().tolist() == pytest.approx([2.0] * 9 + [2.0] * 9, abs=1e-4)


def test_style_loss_sums_over_every_layer_pair():
    # mutant: style_loss keeps only the last layer's terms (total = ... instead of total + ...)
    a = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    assert style_loss([a + 1.0, a], [a, a]).item() == pytest.approx(1.0, abs=1e-5)
    assert style_loss([a + 1.0, a + 2.0], [a, a]).item() == pytest.approx(5.0, abs=1e-4)


def test_adain_stage_one_losses_by_hand_with_alpha_and_style_pairs():
    # mutants: α and 1 − α swapped; styles not paired by position (cycling through the target
    # batch); L_c against E(c) instead of t; λ not applied; style maps of g not from every style layer
    method = get_method("adain")(seeded_lenet(), layer="conv2", style_weight=3.0, alpha=0.25, width=8)
    method.stage = 1
    method.prepare({})
    batch = uda_batch(6, 4)
    x_s, x_t = batch.source[0], batch.unlabeled
    terms = method.losses(batch)
    enc, layers = method.encoder, ["conv1", "conv2"]
    with torch.no_grad():
        content = enc.forward_features(x_s, ["conv2"])["conv2"]
        style = enc.forward_features(x_t[[0, 1, 2, 3, 0, 1]], layers)
        t = adain(content, style["conv2"])
        g = method.decoder(0.25 * t + 0.75 * content)
        made = enc.forward_features(g, layers)
        expected_style = sum(((channel_stats(made[n])[k] - channel_stats(style[n])[k]) ** 2).mean()
                             for n in layers for k in (0, 1))
    _close(method.stylise(x_s, x_t), g)
    _close(terms["content"], ((made["conv2"] - t) ** 2).mean())
    _close(terms["style"], 3.0 * expected_style)


def test_adain_stage_two_terms_read_their_own_rows():
    # mutants: ce_source / entmin of the two-stage task terms on the wrong rows or the wrong weight
    method = get_method("adain")(seeded_lenet(), source_weight=0.5, entmin_weight=0.2, task_weight=0.3, width=8)
    method.prepare({})
    batch = uda_batch(6, 4)
    (x_s, y_s), x_t = batch.source, batch.unlabeled
    terms = method.losses(batch)
    with torch.no_grad():
        _close(terms["ce_styled"], 0.3 * F.cross_entropy(method.net(method.stylise(x_s, x_t)), y_s))
        _close(terms["ce_source"], 0.5 * F.cross_entropy(method.net(x_s), y_s))
        _close(terms["entmin"], 0.2 * entropy(method.net(x_t)))


def test_adain_keeps_its_encoder_in_eval_mode_and_refuses_bad_options():
    # mutants: train() without encoder.eval() or without returning the method; alpha = 0 refused
    # (0 < alpha); width 0 or a net without input_shape accepted; stylise() without no_grad
    method = get_method("adain")(seeded_lenet())
    assert method.train() is method
    batch = uda_batch(6, 4)
    assert not method.stylise(batch.source[0], batch.unlabeled).requires_grad
    assert method.training and method.decoder.training and not method.encoder.training
    assert not any(p.requires_grad for p in method.encoder.parameters())
    assert get_method("adain")(seeded_lenet(), alpha=0.0).alpha == 0.0  # no style at all is allowed
    with pytest.raises(TransferkitError, match="adain: width must be a whole number >= 1, got 0"):
        get_method("adain")(seeded_lenet(), width=0)
    with pytest.raises(TransferkitError, match="adain: the decoder draws images .* input_shape=\\(C, H, W\\)"):
        get_method("adain")(_no_input_shape())
    assert get_method("adain")(seeded_lenet()).style_weight == 10.0  # λ = 10, the authors' default
    assert get_method("adain")(seeded_lenet()).alpha == 1.0


def test_adain_decoder_is_the_docstring_s_layers():
    # mutant: bilinear instead of nearest upsampling to the image size
    method = get_method("adain")(seeded_lenet(), width=8)
    kinds = [type(m).__name__ for m in method.decoder.body]
    assert kinds == ["Conv2d", "ReLU", "Upsample", "Conv2d", "ReLU", "Conv2d", "Sigmoid"]
    up = method.decoder.body[2]
    assert up.mode == "nearest" and tuple(up.size) == (28, 28)
    assert all(m.kernel_size == (3, 3) for m in method.decoder.body if isinstance(m, nn.Conv2d))


# --- unit_gan --------------------------------------------------------------------------------


def test_unit_gan_defaults_are_the_paper_s():
    # mutants: any of λ0 = 10, λ1 = λ3 = 0.1, λ2 = λ4 = 100, lr_mult 0.1 changed
    method = get_method("unit_gan")(seeded_lenet(), width=4)
    assert method.weights == {"gan": 10.0, "kl": 0.1, "recon": 100.0, "cycle_kl": 0.1, "cycle": 100.0}
    assert method.translator_lr_mult == 0.1 and method.beta1 == 0.5 and method.stage_one_steps is None
    assert method.task_weight == 1.0 and method.source_weight == 0.0


def test_unit_gan_translator_is_the_docstring_s_layers():
    # mutants: LeakyReLU slope other than 0.2; bilinear instead of nearest upsampling in the generators
    tr = get_method("unit_gan")(seeded_lenet(), width=4).translator
    assert {m.negative_slope for m in tr.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    for d in ("source", "target"):
        up = tr.generators[d][0]
        assert isinstance(up, nn.Upsample) and up.mode == "nearest" and tuple(up.size) == (28, 28)
        conv = tr.encoders[d][2]
        assert (conv.kernel_size, conv.stride, conv.out_channels) == ((4, 4), (2, 2), 8)


def test_unit_gan_refusals():
    # mutants: disc_width not checked; a net without input_shape accepted; translator_steps = 1 refused
    assert get_method("unit_gan")(seeded_lenet(), width=4, translator_steps=1).stage_one_steps == 1
    with pytest.raises(TransferkitError, match="width and disc_width must be whole numbers >= 1, got 16 and 0"):
        get_method("unit_gan")(seeded_lenet(), disc_width=0)
    with pytest.raises(TransferkitError, match="unit_gan: the generators draw images .* input_shape"):
        get_method("unit_gan")(_no_input_shape())


def test_unit_gan_caches_translations_in_stage_two_only_and_reads_their_rows():
    # mutants: stage 1 caches translations too; translate() without no_grad
    method = get_method("unit_gan")(seeded_lenet(), width=4)
    x = torch.rand(5, 1, 28, 28)
    method.stage = 1
    assert method.cache_inputs({"source": x}) == {}
    assert not method.translate(x).requires_grad and not method.translate(x, to="source").requires_grad
    method.stage = 2
    cache = method.cache_inputs({"source": x})
    assert set(cache) == {"translated"} and torch.allclose(cache["translated"], method.translate(x))
    method.input_cache = {"translated": torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 28, 28)}
    batch = Batch(step=0, progress=0.0, source=(x[[3, 1]], torch.tensor([0, 1])), unlabeled=x[:2],
                  indices={"source": torch.tensor([3, 1])})
    assert method.translated(batch)[:, 0, 0, 0].tolist() == [3.0, 1.0]


# --- multitask -------------------------------------------------------------------------------


def test_multitask_terms_take_each_stream_s_class_weights():
    # mutants: ce_target with the source weights; ce_source with the target's; the
    # source_weight = 0 path's cross entropy of the "source" stream
    w_s, w_t = torch.linspace(0.5, 3.0, 10), torch.tensor([0.2, 1.0, 3.0, 0.7])
    batch = multitask_batch((0, 1, 2, 2))
    (x_s, y_s), (x_t, y_t) = batch.source, batch.target
    for weight in (0.6, 0.0):
        method = multitask_on_lenet(source_weight=weight).eval()
        method.class_weights = {"source": w_s, "target": w_t}
        terms = method.losses(batch)
        with torch.no_grad():
            _close(terms["ce_target"], F.cross_entropy(method.net(x_t), y_t, weight=w_t))
            if weight:
                logits = method.source_classifier(method.net.forward_features(x_s))
                _close(terms["ce_source"], weight * F.cross_entropy(logits, y_s, weight=w_s))


def test_multitask_runs_the_source_through_every_private_unit():
    # mutants: only the first private unit applied; the largest private_units (features − 1) refused
    method = multitask_on_lenet(private_units=2, source_weight=0.5).eval()
    assert len(method.source_private) == 2
    with torch.no_grad():
        for unit in method.source_private:  # the source's copies move off the network's units
            for p in unit.parameters():
                p.add_(0.05 * torch.randn_like(p))
    batch = multitask_batch((0, 1, 2, 2))
    (x_s, y_s), (x_t, y_t) = batch.source, batch.target
    terms = method.losses(batch)
    net, (p0, p1) = method.net, method.source_private
    with torch.no_grad():
        logits = method.source_classifier(net.forward_units(p1(p0(x_s)), 2, "embedding"))
        _close(method.source_logits(x_s), logits)
        _close(terms["ce_source"], 0.5 * F.cross_entropy(logits, y_s))
        _close(terms["ce_target"], F.cross_entropy(net(x_t), y_t))


def test_multitask_source_head_is_a_copy_even_when_the_head_keeps_the_source_classes():
    # mutant: the source head is the network's head itself, not a copy (with the target's classes
    # the source's, retarget_head keeps the head: both tasks would then train one head)
    net = seeded_lenet()
    method = get_method("multitask")(net)
    retarget_head(net, [str(c) for c in range(10)], [str(c) for c in range(10)])
    assert method.source_classifier is not net.head
    ids = [id(p) for g in method.param_groups() for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(method.parameters()))
    before = {k: v.clone() for k, v in method.source_classifier.state_dict().items()}
    assert all(torch.equal(v, net.head.state_dict()[k]) for k, v in before.items())


def test_multitask_is_built_before_the_head_takes_the_target_classes():
    # mutant: built_before_retarget False (the source head would copy the target's new head)
    from transferkit.fitting import build_method
    net = seeded_lenet()
    pretrained = net.head.weight.detach().clone()
    method = build_method(get_method("multitask"), net, {}, [str(c) for c in range(10)], ["a", "b", "c", "d"])
    assert net.num_classes == 4 and method.source_classifier.out_features == method.source_classes == 10
    assert torch.equal(method.source_classifier.weight, pretrained)


def test_multitask_prepares_without_a_source_domain():
    # mutant: prepare reads the source domain's classes without checking there is one
    method = get_method("multitask")(seeded_lenet())
    method.prepare({"target": toy_domain(8, classes=4)})
    method.prepare({"source": toy_domain(8, classes=10), "target": toy_domain(8, classes=4)})
