"""Pixel-level domain adaptation by unpaired image translation: ``cyclegan`` (seed 003,
"Transfer Learning for Image Synthesis": CycleGAN, Zhu et al. 2017, "used to solve unpaired
training data"), and what the pixel-level methods share: the task terms on translated source
images (:func:`task_terms`) and the two-stage form of ``adain`` and ``unit_gan``
(:class:`TwoStageTranslation`).

Two generators translate between the domains, ``G``: source → target style and ``F``:
target → source style; two discriminators judge images, ``D_t`` (target images against
``G(x_s)``) and ``D_s`` (source images against ``F(x_t)``); and the task network, initialised
from the source network, learns the target's look from the translated source images with
their source labels:

    L_D = ½ [(D_t(x_t) − 1)² + D_t(G(x_s))²] + ½ [(D_s(x_s) − 1)² + D_s(F(x_t))²]
    L_G = (D_t(G(x_s)) − 1)² + (D_s(F(x_t)) − 1)²
          + λ_cyc (|F(G(x_s)) − x_s|₁ + |G(F(x_t)) − x_t|₁)  [+ λ_id (|G(x_t) − x_t|₁ + |F(x_s) − x_s|₁)]
    L_task = task_weight · CE(N(G(x_s)), y_s)  [+ source_weight · CE(N(x_s), y_s)]  [+ entmin on N(x_t)]

each a mean over pixels or patches and the batch. ``L_GAN`` is CycleGAN's least-squares form;
λ_cyc = 10 and Adam with learning rate 2·10⁻⁴ and β1 = 0.5 for the translators are the paper's
(``translator_lr_mult`` 0.2 of the experiment's 10⁻³, ``beta1``). Both players take one
engine step on the same batch (:mod:`.adversarial`'s "one engine step, two players"): ``L_D``
reads detached translations and ``L_G`` the discriminators through
:func:`~transferkit.losses.frozen_call`.

transferkit's choices, where the paper (for 256 x 256 photographs) does not fit 28 x 28
digits: generators are the identity-initialised residual encoder-decoder of ``image_unit``
(``x + D(E(x))``, width ``width``) instead of CycleGAN's 9-block ResNet, so that the task
network first trains on the source images themselves; discriminators are a 3-layer PatchGAN
(a 7 x 7 grid of patch logits on 28 x 28 images, each seeing 18 x 18 pixels) instead of the 70 x 70 one;
there is no history buffer of 50 earlier translations (the discriminators see the current batch's); the translations are
detached from the task loss (the task network learns the translation as it is; CyCADA's
semantic-consistency loss, which lets a classifier shape it, is not part of seed 003).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import check, is_whole
from ..losses import frozen_call
from ..unitnet import evaluating
from .adaptation import AdaptationMethod
from .adversarial import _beta1
from .base import register, within_memory
from .image_unit import EncoderDecoder, input_channels


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: a real/fake logit per patch (two stride-2 4 x 4 convolutions and a
    3 x 3 one, LeakyReLU 0.2, instance normalisation in the middle, as CycleGAN's)."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def lsgan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """CycleGAN's least-squares GAN term: mean of ``(D(x) − 1)²`` (``real``) or ``D(x)²``."""
    return (logits - 1).pow(2).mean() if real else logits.pow(2).mean()


def check_task_weights(name: str, task_weight: float, source_weight: float) -> None:
    check(task_weight > 0 or source_weight > 0, f"{name}: task_weight and source_weight are both 0, so nothing "
                                                "trains the task network: give one of them a weight > 0")


def task_terms(method: AdaptationMethod, translated: torch.Tensor, x_s: torch.Tensor, y_s: torch.Tensor,
               x_t: torch.Tensor, name: str) -> dict:
    """The task network's terms of a pixel-level method, from one forward pass of the
    concatenated batch: ``name``: ``task_weight · CE(N(translated), y_s)`` (``translated`` is
    detached by the caller: the task does not shape the translation), and
    :meth:`~.adaptation.AdaptationMethod.base_terms` (``CE(N(x_s), y_s)``, target entropy)."""
    parts = [translated] + ([x_s] if method.source_weight else []) + ([x_t] if method.entmin_weight else [])
    logits = method.net(torch.cat(parts)).split([len(p) for p in parts])
    terms = {name: method.task_weight * method.cross_entropy(logits[0], y_s, "source")} if method.task_weight else {}
    terms.update(method.base_terms(logits[1] if method.source_weight else None, y_s,
                                   logits[-1] if method.entmin_weight else None))
    return terms


class TwoStageTranslation(AdaptationMethod):
    """Base of the pixel-level methods that train in two stages, each its own engine run and
    checkpoint directory (tag ``stage_one_tag``): stage 1 trains an image translator (the
    children named in ``translator_parts``) on :meth:`translator_losses`, for
    ``stage_one_steps`` steps (None: the experiment's), without validation (the task network
    does not move); stage 2 trains the task network on :meth:`translated` source images with
    their labels, the translator fixed (term ``task_term``)."""

    stage_one_tag = "translator"
    training_stages = (1, 2)
    translator_parts: tuple[str, ...] = ()
    task_term = "ce_translated"

    def __init__(self, net, task_weight: float, source_weight: float, entmin_weight: float,
                 stage_one_steps: int | None, steps_option: str):
        super().__init__(net, entmin_weight=entmin_weight, source_weight=source_weight)
        check_task_weights(self.name, task_weight, source_weight)
        check(stage_one_steps is None or is_whole(stage_one_steps, 1), f"{self.name}: {steps_option} must be a whole "
                                                                       f"number >= 1 (or null: the training steps), "
                                                                       f"got {stage_one_steps!r}")
        self.task_weight, self.stage_one_steps = float(task_weight), stage_one_steps
        self.stage = 2  # a bare Engine.fit trains the task network on the translator as it is

    def translator_losses(self, batch) -> dict:
        raise NotImplementedError

    def translated(self, batch) -> torch.Tensor:
        """The batch's source images translated for the task network (stage 2, no gradient)."""
        raise NotImplementedError

    def translator_groups(self) -> list[dict]:
        """Stage 1's optimiser groups."""
        return [{"params": [p for n in self.translator_parts for p in getattr(self, n).parameters()]}]

    def trainable_units(self):
        return [] if self.stage == 1 else super().trainable_units()

    def param_groups(self) -> list[dict]:
        return self.translator_groups() if self.stage == 1 else [
            {"params": self.net.parameters_of(self.trainable_units())}]

    def prepare(self, domains: dict) -> None:
        super().prepare(domains)
        for name in self.translator_parts:
            getattr(self, name).requires_grad_(self.stage == 1)

    def losses(self, batch):
        if self.stage == 1:
            return self.translator_losses(batch)
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        with torch.no_grad():
            g = self.translated(batch)
        return task_terms(self, g, x_s, y_s, x_t, self.task_term)

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        """Stage 1 (the translator), then stage 2 (the task network)."""
        self.stage = 1
        engine = make_engine(self.stage_one_tag)
        engine.cfg = dataclasses.replace(engine.cfg, steps=self.stage_one_steps or engine.cfg.steps)
        first = engine.fit(self, source=source, unlabeled=unlabeled)
        self.stage = 2
        second = super().fit_transfer(make_engine, source=source, target=target, unlabeled=unlabeled, val=val)
        self.fit_wall_s = first.wall_s + second.wall_s  # a resumed stage's engine counts its seconds before the stop
        return dataclasses.replace(second, steps=first.steps + second.steps, history=first.history + second.history,
                                   wall_s=self.fit_wall_s, diverged=first.diverged or second.diverged)


@register
class CycleGAN(AdaptationMethod):
    """Pixel-level adaptation by CycleGAN translation (seed 003; Zhu et al. 2017): the task
    network trains on source images translated into the target's style, with their labels.
    Equations, defaults and transferkit's deviations: the module docstring."""

    name = "cyclegan"
    description = "pixel-level adaptation: CycleGAN translation source -> target style, task net on translations"

    def __init__(self, net, cycle_weight: float = 10.0, identity_weight: float = 0.0, task_weight: float = 1.0,
                 source_weight: float = 0.0, entmin_weight: float = 0.0, width: int = 16, disc_width: int = 32,
                 translator_lr_mult: float = 0.2, beta1: float | None = 0.5):
        super().__init__(net, entmin_weight=entmin_weight, source_weight=source_weight)
        check_task_weights(self.name, task_weight, source_weight)
        check(isinstance(width, int) and width >= 1 and isinstance(disc_width, int) and disc_width >= 1,
              f"cyclegan: width and disc_width must be whole numbers >= 1, got {width!r} and {disc_width!r}")
        self.cycle_weight, self.identity_weight = float(cycle_weight), float(identity_weight)
        self.task_weight, self.translator_lr_mult = float(task_weight), float(translator_lr_mult)
        self.beta1 = _beta1(self.name, beta1)
        channels = input_channels(net)
        self.to_target, self.to_source, self.disc_target, self.disc_source = within_memory(
            "cyclegan", lambda: (EncoderDecoder(channels, width), EncoderDecoder(channels, width),
                                 PatchDiscriminator(channels, disc_width), PatchDiscriminator(channels, disc_width)),
            width=width, disc_width=disc_width)

    def param_groups(self) -> list[dict]:
        translators = [p for m in (self.to_target, self.to_source, self.disc_target, self.disc_source)
                       for p in m.parameters()]
        return [{"params": self.net.parameters_of(self.trainable_units())},
                {"params": translators, "lr_mult": self.translator_lr_mult, "beta1": self.beta1}]

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        """Source images in the target's style, ``G(x)`` (eval mode and no gradient: to look at them)."""
        with torch.no_grad(), evaluating(self.to_target):
            return self.to_target(images)

    def losses(self, batch):
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        fake_t, fake_s = self.to_target(x_s), self.to_source(x_t)
        d_t, d_s = self.disc_target, self.disc_source
        terms = {
            "disc": 0.5 * (lsgan_loss(d_t(x_t), True) + lsgan_loss(d_t(fake_t.detach()), False)
                           + lsgan_loss(d_s(x_s), True) + lsgan_loss(d_s(fake_s.detach()), False)),
            "gan": lsgan_loss(frozen_call(d_t, fake_t), True) + lsgan_loss(frozen_call(d_s, fake_s), True),
            "cycle": self.cycle_weight * (F.l1_loss(self.to_source(fake_t), x_s)
                                          + F.l1_loss(self.to_target(fake_s), x_t)),
        }
        if self.identity_weight:
            terms["identity"] = self.identity_weight * (F.l1_loss(self.to_target(x_t), x_t)
                                                        + F.l1_loss(self.to_source(x_s), x_s))
        return {**terms, **task_terms(self, fake_t.detach(), x_s, y_s, x_t, "ce_translated")}
