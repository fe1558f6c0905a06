"""Tests from a second mutation pass over methods/pixel (check_task_weights, task_terms,
TwoStageTranslation, cyclegan), methods/adain, methods/unit_gan, methods/image_unit and
methods/multitask.

Each test kills at least one mutant that the earlier tests (test_pixel.py, test_adain.py,
test_unit_gan.py, test_multitask.py, test_adaptation.py, test_pixel_multitask_mutation.py,
test_finetune_methods.py, test_semantic_backbones_mutation.py) let through; the mutant is named
in the test's comment. Covered here: the method's name in the shared refusals and the refused
value in the stage-one steps and private_units messages; which domains each stage's engine run
gets; cyclegan's and unit_gan's beta1 option reaching the translators' optimiser group; the one
concatenated forward pass of the task terms (a BatchNorm network tells it from separate passes);
adain's decoder width, its fixed encoder (eval mode from construction, BatchNorm statistics
untouched), its cache of encoder maps read in both stages and the style loss's gradient through
the channel means; unit_gan's disc_width; multitask's defaults and the source head's learning
rate; image_unit's defaults, results key, a foreign image unit refused, the spatial
transformer's pixel convention and the pixel unit's weight decay.

Judged equivalent, so not tested: stage 1 or stage 2 given ``target=`` or not (the pixel-level
methods' streams are source and unlabeled: the engine reads no target); ``stage != 2`` for
``stage == 1`` in losses and param_groups (the stage is only ever 1 or 2); ``float(identity_weight or 0.0)``;
cyclegan's translate without ``evaluating`` (no dropout or BatchNorm in the generators); adain's
``sc.detach()`` inside ``adain`` (its inputs are the fixed encoder's maps, which carry no gradient);
adain's train() putting the encoder in eval mode only for ``mode=True`` (``train(False)`` already does);
Decoder's own width default (its one caller passes ``width``); multitask's one optimiser group for
both heads (same options), ``cache_frozen_prefix = True`` and streams in another order.

Left surviving: EncoderDecoder's average for max pooling and the SpatialTransformer localisation
net without its hidden ReLU (architecture the docstrings do not fix; both start as the identity).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import seeded_lenet, state_copy, toy_domain, uda_batch
from test_pixel_multitask_mutation import _close

from transferkit.adapters import from_sequential
from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method


def _bn_net():
    """A 28x28 convnet with BatchNorm in its first unit (batch statistics tell one forward pass from two)."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 13 * 13, 10))
    return from_sequential(seq, units=[3, 1], input_shape=(1, 28, 28))


# --- pixel.py: check_task_weights, TwoStageTranslation, task_terms, cyclegan ------------------


@pytest.mark.parametrize("name", ["cyclegan", "adain", "unit_gan"])
def test_the_both_weights_zero_refusal_names_the_method(name):
    # kills check_task_weights: the message names a fixed method ("cyclegan:") instead of `name`
    with pytest.raises(TransferkitError, match=f"^{name}: task_weight and source_weight are both 0"):
        get_method(name)(seeded_lenet(), task_weight=0.0, source_weight=0.0)


@pytest.mark.parametrize("name, option", [("adain", "decoder_steps"), ("unit_gan", "translator_steps")])
def test_the_stage_one_steps_refusal_says_the_value_it_got(name, option):
    # kills TwoStageTranslation.__init__: the refused stage_one_steps value left out of the message
    with pytest.raises(TransferkitError, match=f"{name}: {option} must be a whole number >= 1.*got 0"):
        get_method(name)(seeded_lenet(), **{option: 0})


def test_each_stage_s_engine_run_gets_the_target_images_as_its_unlabeled_domain():
    # kills TwoStageTranslation.fit_transfer: stage 1 given the source as its unlabeled domain
    # (the translator would learn to draw source images), and stage 2 given no validation domain
    method = get_method("adain")(seeded_lenet(), width=4, decoder_steps=1)
    calls = []

    def make_engine(tag):
        engine = Engine(TrainConfig(steps=1, eval_every=1, batch_size=8), seed=0)
        fit = engine.fit

        def recorded(m, **kwargs):
            calls.append((tag, kwargs))
            return fit(m, **kwargs)
        engine.fit = recorded
        return engine
    src, tgt = toy_domain(8, classes=10, name="src"), toy_domain(8, seed=1, classes=10, name="tgt")
    val = toy_domain(8, seed=2, classes=10, name="val")
    method.fit_transfer(make_engine, source=src, unlabeled=tgt, val=val)
    (first_tag, first), (second_tag, second) = calls
    assert first_tag == "decoder" and first["source"] is src and first["unlabeled"] is tgt
    assert first.get("val") is None
    assert second_tag == "main" and second["unlabeled"] is tgt and second["val"] is val


@pytest.mark.parametrize("name", ["cyclegan", "unit_gan"])
def test_beta1_reaches_the_translators_optimiser_group(name):
    # kills cyclegan/unit_gan: beta1 fixed at 0.5 (the option ignored) in __init__ or in the translators' group
    for beta1 in (0.9, None):
        method = get_method(name)(seeded_lenet(), width=4, beta1=beta1)
        assert method.beta1 == beta1
        if name == "unit_gan":
            method.stage = 1
        assert method.param_groups()[-1]["beta1"] == beta1
    with pytest.raises(TransferkitError, match=f"{name}: option beta1 .* got 1.5"):
        get_method(name)(seeded_lenet(), beta1=1.5)


def test_the_task_terms_come_from_one_forward_pass_of_the_concatenated_batch():
    # kills task_terms: a forward pass per part (the BatchNorm statistics of the translated, source
    # and target rows together, as the module docstring says, would differ from each part's own)
    method = get_method("cyclegan")(_bn_net(), source_weight=0.5, entmin_weight=0.2)
    method.train_mode()
    batch = uda_batch(6, 4)
    (x_s, y_s), x_t = batch.source, batch.unlabeled
    with torch.no_grad():
        method.to_target.out.weight.normal_(std=0.05)
        g = method.to_target(x_s)
    terms = method.losses(batch)
    with torch.no_grad():
        logits = method.net(torch.cat([g, x_s, x_t]))
        _close(terms["ce_translated"], F.cross_entropy(logits[:6], y_s))
        _close(terms["ce_source"], 0.5 * F.cross_entropy(logits[6:12], y_s))
        assert not torch.allclose(F.cross_entropy(method.net(g), y_s), terms["ce_translated"].detach(), atol=1e-4)


# --- adain -----------------------------------------------------------------------------------


def test_adain_decoder_takes_the_width_option_and_defaults_to_32():
    # kills AdaIN.__init__: width default 16 for 32; width not passed on to the decoder
    assert get_method("adain")(seeded_lenet()).decoder.body[0].out_channels == 32
    body = get_method("adain")(seeded_lenet(), width=8).decoder.body
    assert [m.out_channels for m in body if isinstance(m, nn.Conv2d)] == [8, 8, 1]


def _counting(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_adain_reads_the_encoder_maps_from_the_cache_in_both_stages():
    # kills adain._styled: content or style maps recomputed by the encoder although cached;
    # translated() not passing the batch's indices (stage 2 would run the encoder at every step)
    method = get_method("adain")(seeded_lenet(), width=4)
    g = torch.Generator().manual_seed(4)
    x_s, x_t = torch.rand(8, 1, 28, 28, generator=g), torch.rand(5, 1, 28, 28, generator=g)
    i_s, i_t = torch.tensor([7, 2, 5]), torch.tensor([4, 0])
    batch = Batch(step=0, progress=0.0, source=(x_s[i_s], torch.arange(3)), unlabeled=x_t[i_t],
                  indices={"source": i_s, "unlabeled": i_t})
    method.input_cache = method.cache_inputs({"source": x_s, "unlabeled": x_t})
    calls = _counting(method.encoder.unit("conv1"))
    with torch.no_grad():
        method.translated(batch)
    assert calls == []
    method.stage = 1
    method.losses(batch)
    assert len(calls) == 1  # the generated images only: E(g) for L_c and L_s


def test_adain_encoder_is_in_eval_mode_from_the_start_and_keeps_its_batchnorm_statistics():
    # kills AdaIN.__init__: the encoder copy not put in eval mode (before any train() call, stylise
    # would normalise with batch statistics and move the fixed encoder's running statistics)
    method = get_method("adain")(_bn_net(), width=4)
    assert not method.encoder.training
    before = state_copy(method.encoder)
    batch = uda_batch(6, 4)
    method.stylise(batch.source[0], batch.unlabeled)
    after = state_copy(method.encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_style_loss_gradient_flows_through_the_generated_maps_mean_and_spread():
    # kills channel_stats: the mean detached (L_s would not pull the decoder's channel means to the style's)
    from transferkit.methods.adain import EPS, style_loss
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(2, 3, 4, 4, generator=gen).requires_grad_(), torch.randn(2, 3, 4, 4, generator=gen) + 1.0
    style_loss([x], [y]).backward()
    ref = x.detach().clone().requires_grad_()

    def stats(v):
        return v.mean((2, 3)), (v.var((2, 3), unbiased=False) + EPS).sqrt()
    (mx, sx), (my, sy) = stats(ref), stats(y)
    (((mx - my) ** 2).mean() + ((sx - sy) ** 2).mean()).backward()
    _close(x.grad, ref.grad)


# --- unit_gan ----------------------------------------------------------------------------------


def test_unit_gan_discriminators_take_the_disc_width_option():
    # kills UNIT.__init__: disc_width not passed on to the PatchGAN discriminators (always 32)
    method = get_method("unit_gan")(seeded_lenet(), width=4, disc_width=8)
    assert method.disc_source.body[0].out_channels == 8 and method.disc_target.body[0].out_channels == 8
    assert method.translator.encoders["source"][0].out_channels == 4
    default = get_method("unit_gan")(seeded_lenet(), width=4)
    assert default.disc_source.body[0].out_channels == 32 == default.disc_target.body[0].out_channels


# --- multitask ---------------------------------------------------------------------------------


def test_multitask_defaults_weigh_the_tasks_alike_and_share_every_unit():
    # kills Multitask.__init__: source_weight default other than 1; private_units default other than 0
    method = get_method("multitask")(seeded_lenet())
    assert method.source_weight == 1.0 and method.private_units == 0 and len(method.source_private) == 0


def test_multitask_source_head_trains_at_the_experiment_s_learning_rate():
    # kills Multitask.param_groups: the source head's group given an lr_mult (or any other option)
    method = get_method("multitask")(seeded_lenet(), private_units=1)
    opt = Engine(TrainConfig(lr=0.01))._optimizer(method)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


def test_multitask_private_units_refusal_says_the_value_it_got():
    # kills Multitask.__init__: the refused private_units value left out of the message
    with pytest.raises(TransferkitError, match=r"private_units must be a whole number from 0 to 2 .*, got 5"):
        get_method("multitask")(seeded_lenet(), private_units=5)


# --- image_unit --------------------------------------------------------------------------------


def test_image_unit_defaults_to_a_unet_at_the_experiment_s_rate_and_names_its_kind_in_the_results():
    # kills ImageUnit.__init__: kind default other than "unet", lr_mult default other than 1;
    # extra_results under another key than "image_unit"
    from transferkit.methods.image_unit import IMAGE_UNIT, EncoderDecoder
    method = get_method("image_unit")(seeded_lenet())
    assert method.kind == "unet" and type(method.net.unit(IMAGE_UNIT)) is EncoderDecoder
    assert method.lr_mult == 1.0 and method.param_groups()[0]["lr_mult"] == 1.0
    assert method.extra_results() == {"image_unit": "unet"}
    assert get_method("image_unit")(seeded_lenet(), kind="stn").extra_results() == {"image_unit": "stn"}


def test_image_unit_refuses_an_image_unit_of_no_known_kind_naming_its_class():
    # kills ImageUnit.__init__: an image unit of a class outside IMAGE_UNITS taken for the kind asked
    from transferkit.methods.image_unit import insert_image_unit

    class Custom(nn.Module):
        def forward(self, x):
            return x
    net = seeded_lenet()
    insert_image_unit(net, Custom())
    with pytest.raises(TransferkitError, match="already has an image unit of kind 'Custom'; image_unit kind='colour'"):
        get_method("image_unit")(net, kind="colour")


def test_spatial_transformer_moves_whole_pixels_with_align_corners_false():
    # kills SpatialTransformer.forward: align_corners=True (a theta shift of 2/W would move by (W-1)/W pixels)
    from transferkit.methods.image_unit import SpatialTransformer
    stn = SpatialTransformer(1)
    with torch.no_grad():
        stn.loc[-1].bias.copy_(torch.tensor([1.0, 0, 2 / 8, 0, 1.0, 0]))  # one pixel to the right in 8 columns
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = stn(x)
    _close(out[..., :-1], x[..., 1:])


def test_the_residual_pixel_unit_keeps_the_experiment_s_weight_decay():
    # kills NO_DECAY: "pixel" added (x + M(x) decays toward the identity, so it keeps the decay, as unet)
    (group,) = get_method("image_unit")(seeded_lenet(), kind="pixel").param_groups()
    assert "weight_decay" not in group
