"""Pixel-level domain adaptation by UNIT translation: ``unit_gan`` (seed 003, "Transfer
Learning for Image Synthesis": UNIT, Liu, Breuel and Kautz 2017, "use VAE to represent two
images into the same latent space").

Two VAE-GANs share one latent space: domain encoders ``E_s``, ``E_t`` whose last layer is
shared and domain generators ``G_s``, ``G_t`` whose first layer is shared;
``q_d(z | x) = N(E_d(x), I)``, sampled as ``z_d = E_d(x_d) + ε``. A source image is
reconstructed by ``G_s(z_s)``, translated into the target domain by ``G_t(z_s)``, and
translated back by ``G_s(z')``, ``z' ~ q_t(· | G_t(z_s))``; the same from the target. The
paper's objective (its Section 3), for ``d`` each domain and ``d'`` the other:

    L_VAE_d = λ1 KL(q_d(z | x_d) ‖ N(0, I)) + λ2 ‖G_d(z_d) − x_d‖₁
    L_GAN_d = λ0 [log D_d(x_d) + log(1 − D_d(G_d(z_d')))]      (D_d maximises it; E, G minimise)
    L_CC_d  = λ3 KL(q_d(z | x_d)) + λ3 KL(q_d'(z | G_d'(z_d))) + λ4 ‖G_d(z') − x_d‖₁

    min_{E,G} max_D  Σ_d L_VAE_d + L_GAN_d + L_CC_d

with λ0 = 10, λ1 = λ3 = 0.1, λ2 = λ4 = 100 and Adam at 10⁻⁴ with β1 = 0.5, the paper's
(``translator_lr_mult`` 0.1 of the experiment's 10⁻³). Then, as ``adain``
(:class:`~.pixel.TwoStageTranslation`), the task network, initialised from the source
network, trains on the source images translated into the target domain, ``G_t(E_s(x_s))``,
with their labels, the translator fixed.

transferkit's choices, where the paper's networks (for photographs and 32 x 32 digits) do not
fit a 28 x 28 classifier's benchmark: each encoder is a 3 x 3 and a stride-2 4 x 4
convolution, then the shared 3 x 3 convolution that gives ``E(x)`` (``2·width`` channels at
half the image size); the shared generator layer is a 3 x 3 convolution, each domain's
generator a nearest upsampling to the image size and two 3 x 3 convolutions with a sigmoid;
LeakyReLU 0.2, no normalisation; the discriminators are :mod:`.pixel`'s PatchGAN. The KL
term of ``N(μ, I)`` is the mean of ``μ²`` over elements and the L1 terms are means over
pixels, as in the authors' code (whose λ are the paper's over 10, the same under Adam); the
generators take the non-saturating GAN term ``−λ0 log D_d(G_d(z_d'))`` (the paper's log-loss
GAN; the authors' code has a least-squares one too). The two stages are
transferkit's (the paper's adaptation trains a classifier inside its discriminators, jointly);
stage 2 translates with the mean ``E_s(x_s)``, no noise, and computes the translations of the
source images once per fit (the translator is fixed). No weight decay beyond the
experiment's (the authors' code uses 10⁻⁴).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import check, is_whole
from ..losses import frozen_call
from ..unitnet import evaluating
from .adversarial import _beta1
from .base import register, within_memory
from .image_unit import input_channels
from .pixel import PatchDiscriminator, TwoStageTranslation

DOMAINS = ("source", "target")


def gaussian_kl(mu: torch.Tensor) -> torch.Tensor:
    """KL of ``N(μ, I)`` from ``N(0, I)`` as the authors' code writes it: the mean of ``μ²``."""
    return mu.pow(2).mean()


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """``−log D(x)`` (``real``) or ``−log(1 − D(x))``, ``D = σ(logits)``, a mean over patches and images."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


class SharedLatentTranslator(nn.Module):
    """UNIT's two VAEs: ``encode(x, d) = E_shared(E_d(x))`` (the mean of ``q_d(z | x)``) and
    ``decode(z, d) = G_d(G_shared(z))``, ``d`` in ``("source", "target")``."""

    def __init__(self, channels: int, size: tuple[int, int], width: int = 16):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.encoders = nn.ModuleDict({d: nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), act, nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), act)
            for d in DOMAINS})
        self.shared_encoder = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.shared_generator = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), act)
        self.generators = nn.ModuleDict({d: nn.Sequential(
            nn.Upsample(size=tuple(size), mode="nearest"), nn.Conv2d(2 * width, width, 3, padding=1), act,
            nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid()) for d in DOMAINS})

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return self.shared_encoder(self.encoders[domain](x))

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        return self.generators[domain](self.shared_generator(z))


def sample(mu: torch.Tensor) -> torch.Tensor:
    """``z ~ N(μ, I)``."""
    return mu + torch.randn_like(mu)


@register
class UNIT(TwoStageTranslation):
    """Pixel-level adaptation by UNIT translation (seed 003; Liu, Breuel and Kautz 2017): two
    VAE-GANs with a shared latent space learn to translate between the domains (stage 1), then
    the task network trains on source images translated into the target domain (stage 2).
    ``translator_steps`` (default: the experiment's steps) decides it most: on the ``uda``
    benchmark's pairs 1000 steps instead of 322-336 moved its accuracy by −4 to +78 points, and
    the target validation split picked the better length on each pair (docs/adaptation.md).
    Equations, defaults and transferkit's deviations: the module docstring."""

    name = "unit_gan"
    description = "pixel-level adaptation: UNIT (shared-latent VAE-GAN) translation source -> target, task net on it"
    translator_parts = ("translator", "disc_source", "disc_target")

    def __init__(self, net, gan_weight: float = 10.0, kl_weight: float = 0.1, recon_weight: float = 100.0,
                 cycle_kl_weight: float = 0.1, cycle_weight: float = 100.0, task_weight: float = 1.0,
                 source_weight: float = 0.0, entmin_weight: float = 0.0, width: int = 16, disc_width: int = 32,
                 translator_lr_mult: float = 0.1, beta1: float | None = 0.5, translator_steps: int | None = None):
        super().__init__(net, task_weight, source_weight, entmin_weight, translator_steps, "translator_steps")
        check(is_whole(width, 1) and is_whole(disc_width, 1),
              f"unit_gan: width and disc_width must be whole numbers >= 1, got {width!r} and {disc_width!r}")
        check(getattr(net, "input_shape", None) is not None, "unit_gan: the generators draw images of the network's "
                                                            "input size: build the network with input_shape=(C, H, W)")
        self.weights = {"gan": float(gan_weight), "kl": float(kl_weight), "recon": float(recon_weight),
                        "cycle_kl": float(cycle_kl_weight), "cycle": float(cycle_weight)}
        self.translator_lr_mult, self.beta1 = float(translator_lr_mult), _beta1(self.name, beta1)
        channels = input_channels(net)
        self.translator, self.disc_source, self.disc_target = within_memory(
            "unit_gan", lambda: (SharedLatentTranslator(channels, net.input_shape[1:], width),
                                 PatchDiscriminator(channels, disc_width), PatchDiscriminator(channels, disc_width)),
            width=width, disc_width=disc_width)

    def translator_groups(self) -> list[dict]:
        return [{**group, "lr_mult": self.translator_lr_mult, "beta1": self.beta1}
                for group in super().translator_groups()]

    @torch.no_grad()
    def translate(self, images: torch.Tensor, to: str = "target") -> torch.Tensor:
        """Images of the other domain translated into domain ``to``, with the latent mean (to look
        at them; the task network's inputs with ``to="target"``)."""
        check(to in DOMAINS, f"unit_gan: translate(to=...) must be one of {DOMAINS}, got {to!r}")
        other = "target" if to == "source" else "source"
        with evaluating(self.translator) as tr:
            return tr.decode(tr.encode(images, other), to)

    def cache_inputs(self, inputs):
        if self.stage == 1:
            return {}
        return self.cache_stream(inputs, "translated", self.translate, self.translator)

    def translated(self, batch) -> torch.Tensor:
        return self.cached_rows("translated", batch.indices.get("source"), lambda: self.translate(batch.source[0]))

    def translator_losses(self, batch) -> dict:
        (x_s, _), x_t = batch.source, batch.unlabeled
        tr, w = self.translator, self.weights
        mu_s, mu_t = tr.encode(x_s, "source"), tr.encode(x_t, "target")
        z_s, z_t = sample(mu_s), sample(mu_t)
        fake_t, fake_s = tr.decode(z_s, "target"), tr.decode(z_t, "source")
        mu_st, mu_ts = tr.encode(fake_t, "target"), tr.encode(fake_s, "source")
        d_s, d_t = self.disc_source, self.disc_target
        kl = gaussian_kl(mu_s) + gaussian_kl(mu_t)  # KL(q_d(z | x_d)), in L_VAE and in L_CC
        return {
            "disc": w["gan"] * (gan_loss(d_t(x_t), True) + gan_loss(d_t(fake_t.detach()), False)
                                + gan_loss(d_s(x_s), True) + gan_loss(d_s(fake_s.detach()), False)),
            "gan": w["gan"] * (gan_loss(frozen_call(d_t, fake_t), True) + gan_loss(frozen_call(d_s, fake_s), True)),
            "vae": w["kl"] * kl
            + w["recon"] * (F.l1_loss(tr.decode(z_s, "source"), x_s) + F.l1_loss(tr.decode(z_t, "target"), x_t)),
            "cycle": w["cycle_kl"] * (kl + gaussian_kl(mu_st) + gaussian_kl(mu_ts))
            + w["cycle"] * (F.l1_loss(tr.decode(sample(mu_st), "source"), x_s)
                            + F.l1_loss(tr.decode(sample(mu_ts), "target"), x_t)),
        }
