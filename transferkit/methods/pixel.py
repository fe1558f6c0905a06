"""Pixel-level domain adaptation by unpaired image translation: ``cyclegan`` (seed 003,
"Transfer Learning for Image Synthesis": CycleGAN, Zhu et al. 2017, "used to solve unpaired
training data").

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
(7 x 7 patches on 28 x 28 images) instead of the 70 x 70 one; there is no history buffer of
50 earlier translations (the discriminators see the current batch's); the translations are
detached from the task loss (the task network learns the translation as it is; CyCADA's
semantic-consistency loss, which lets a classifier shape it, is not part of seed 003).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import check
from ..losses import frozen_call
from .adaptation import AdaptationMethod
from .adversarial import _beta1
from .base import register
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
        check(task_weight > 0 or source_weight > 0, "cyclegan: task_weight and source_weight are both 0, so nothing "
                                                    "trains the task network: give one of them a weight > 0")
        check(isinstance(width, int) and width >= 1 and isinstance(disc_width, int) and disc_width >= 1,
              f"cyclegan: width and disc_width must be whole numbers >= 1, got {width!r} and {disc_width!r}")
        self.cycle_weight, self.identity_weight = float(cycle_weight), float(identity_weight)
        self.task_weight, self.translator_lr_mult = float(task_weight), float(translator_lr_mult)
        self.beta1 = _beta1(self.name, beta1)
        channels = input_channels(net)
        self.to_target, self.to_source = EncoderDecoder(channels, width), EncoderDecoder(channels, width)
        self.disc_target, self.disc_source = PatchDiscriminator(channels, disc_width), PatchDiscriminator(channels,
                                                                                                         disc_width)

    def param_groups(self) -> list[dict]:
        translators = [p for m in (self.to_target, self.to_source, self.disc_target, self.disc_source)
                       for p in m.parameters()]
        return [{"params": self.net.parameters_of(self.trainable_units())},
                {"params": translators, "lr_mult": self.translator_lr_mult, "beta1": self.beta1}]

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        """Source images in the target's style, ``G(x)`` (eval mode and no gradient: to look at them)."""
        was = self.to_target.training
        self.to_target.eval()
        try:
            with torch.no_grad():
                return self.to_target(images)
        finally:
            self.to_target.train(was)

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
        parts = [fake_t.detach()] + ([x_s] if self.source_weight else []) + ([x_t] if self.entmin_weight else [])
        logits = self.net(torch.cat(parts)).split([len(p) for p in parts])
        if self.task_weight:
            terms["ce_translated"] = self.task_weight * self.cross_entropy(logits[0], y_s, "source")
        terms.update(self.base_terms(logits[1] if self.source_weight else None, y_s,
                                     logits[-1] if self.entmin_weight else None))
        return terms
