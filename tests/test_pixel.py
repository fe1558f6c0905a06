"""Pixel-level adaptation (cyclegan): its terms, who each term trains, and its start."""

import pytest
import torch
import torch.nn.functional as F
from helpers import seeded_lenet, uda_batch

from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.methods.pixel import PatchDiscriminator, lsgan_loss

PLAYERS = ("net", "to_target", "to_source", "disc_target", "disc_source")


def _trained_by(method, term, batch):
    """The children that ``term``'s gradient reaches."""
    method.zero_grad(set_to_none=True)
    method.losses(batch)[term].backward()
    return {name for name in PLAYERS if any(p.grad is not None and p.grad.abs().sum() > 0
                                            for p in getattr(method, name).parameters())}


def test_lsgan_terms_and_patch_logits():
    logits = torch.tensor([[0.5, 1.5], [1.0, -1.0]])
    assert float(lsgan_loss(logits, True)) == pytest.approx((0.25 + 0.25 + 0 + 4) / 4)
    assert float(lsgan_loss(logits, False)) == pytest.approx((0.25 + 2.25 + 1 + 1) / 4)
    assert PatchDiscriminator(3)(torch.rand(2, 3, 28, 28)).shape == (2, 1, 7, 7)  # a logit per 4 x 4 patch


def test_each_term_trains_only_its_own_players():
    method = get_method("cyclegan")(seeded_lenet(), identity_weight=0.5, source_weight=0.5, entmin_weight=0.1)
    method.train_mode()
    batch = uda_batch()
    with torch.no_grad():  # the generators start as the identity, so that the task network first sees the source
        method.to_target.out.weight.normal_(std=0.01)
        method.to_source.out.weight.normal_(std=0.01)  # (moved off it: an exact identity has zero gradients inside)
    assert set(method.losses(batch)) == {"disc", "gan", "cycle", "identity", "ce_translated", "ce_source", "entmin"}
    assert _trained_by(method, "disc", batch) == {"disc_target", "disc_source"}  # detached translations
    assert _trained_by(method, "gan", batch) == {"to_target", "to_source"}  # frozen discriminators
    assert _trained_by(method, "cycle", batch) == {"to_target", "to_source"}
    assert _trained_by(method, "identity", batch) == {"to_target", "to_source"}
    assert _trained_by(method, "ce_translated", batch) == {"net"}  # the translation is not shaped by the task
    assert _trained_by(method, "entmin", batch) == {"net"}


def test_at_the_start_the_task_trains_on_the_source_images_and_terms_match_their_formulas():
    net = seeded_lenet()
    method = get_method("cyclegan")(net, cycle_weight=3.0, task_weight=0.7)
    method.train_mode()
    batch = uda_batch()
    (x_s, y_s), x_t = batch.source, batch.unlabeled
    assert torch.equal(method.translate(x_s), x_s) and torch.equal(method.to_source(x_t), x_t)
    terms = {k: v.detach() for k, v in method.losses(batch).items()}
    assert set(terms) == {"disc", "gan", "cycle", "ce_translated"}
    assert float(terms["cycle"]) == 0.0  # F(G(x)) = x while both are the identity
    with torch.no_grad():
        d_t, d_s = method.disc_target, method.disc_source
        disc = 0.5 * (((d_t(x_t) - 1) ** 2).mean() + (d_t(x_s) ** 2).mean() + ((d_s(x_s) - 1) ** 2).mean()
                      + (d_s(x_t) ** 2).mean())
        gan = ((d_t(x_s) - 1) ** 2).mean() + ((d_s(x_t) - 1) ** 2).mean()
        task = 0.7 * F.cross_entropy(net(x_s), y_s)
    assert torch.allclose(terms["disc"], disc, atol=1e-6) and torch.allclose(terms["gan"], gan, atol=1e-6)
    assert torch.allclose(terms["ce_translated"], task, atol=1e-6)


def test_colour_images_param_groups_and_refusals():
    method = get_method("cyclegan")(seeded_lenet(channels=3))
    assert method.translate(torch.rand(2, 3, 28, 28)).shape == (2, 3, 28, 28)
    net_group, translators = method.param_groups()
    assert translators["lr_mult"] == 0.2 and translators["beta1"] == 0.5  # CycleGAN's 2e-4 of 1e-3, Adam beta1
    n = sum(p.numel() for m in ("to_target", "to_source", "disc_target", "disc_source")
            for p in getattr(method, m).parameters())
    assert sum(p.numel() for p in translators["params"]) == n
    with pytest.raises(TransferkitError, match="task_weight and source_weight are both 0"):
        get_method("cyclegan")(seeded_lenet(), task_weight=0.0)
    with pytest.raises(TransferkitError, match="width and disc_width must be whole numbers >= 1"):
        get_method("cyclegan")(seeded_lenet(), width=0)
