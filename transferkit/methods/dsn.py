"""Domain separation networks (Bousmalis et al. 2016; seed 003, which gives the architecture): ``dsn``."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..discriminators import LARGE_DISCRIMINATOR, MLPDiscriminator, discriminator_loss
from ..distributed import gathered
from ..errors import check, warn
from ..losses import dann_lambda, difference_loss, grad_reverse, scale_invariant_mse
from .adaptation import AdaptationMethod
from .base import register, within_memory


def private_encoder(input_shape, dim: int) -> nn.Sequential:
    """A small private encoder ``E_p``: two stride-2 5x5 convolutions (32, 64 channels) and a
    linear map to the shared code size."""
    c, h, w = input_shape
    conv = nn.Sequential(nn.Conv2d(c, 32, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(32, 64, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(1))
    return nn.Sequential(conv, nn.Linear(64 * math.ceil(h / 4) * math.ceil(w / 4), dim))


class SharedDecoder(nn.Module):
    """``D(h_c + h_p)``: an MLP from the code to the image, sigmoid output in [0, 1]."""

    def __init__(self, dim: int, input_shape, hidden: int = 500):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(input_shape)))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(code)).view(len(code), *self.input_shape)


@register
class DSN(AdaptationMethod):
    """Domain separation networks (DSN-DANN variant; seed 003 "Beyond Domain Confusion: Domain
    Separation Network (DSN)", Bousmalis et al. 2016):

        L = L_task + α L_recon + β L_difference + γ L_similarity

    * shared encoder ``E_c`` = the backbone up to its embedding (the classifier reads it);
    * private encoders ``E_p^s``, ``E_p^t`` (:func:`private_encoder`) give domain-specific codes;
    * ``L_recon``: scale-invariant MSE of the shared decoder's ``D(E_c(x) + E_p(x))`` on both domains;
    * ``L_difference``: ``||H_cᵀ H_p||_F²`` per domain (soft orthogonality), normalised as
      in the authors' code (:func:`~transferkit.losses.difference_loss`);
    * ``L_similarity``: domain-adversarial loss on the shared codes through a gradient
      reversal layer with coefficient ``λ_p`` (as :class:`~transferkit.methods.adversarial.DANN`).

    Defaults α = 0.01, β = 0.05, γ = 0.25 are the paper's MNIST → MNIST-M values (β on the
    authors' scale of ``L_difference``; ``L_recon`` is the paper's formula, which the
    authors' code computes in a pairwise form ``2k/(k-1)`` times larger, so α weighs it
    about half as much here)."""

    name = "dsn"
    description = "domain separation networks: shared/private encoders, decoder, difference and similarity"
    revision = 1  # marked 2026-12-07: rows made before hold no mark of which form trained them
    revision_note = "its difference loss divided by B² until 2026-11-30, the authors' mean since"

    def __init__(self, net, recon_weight: float = 0.01, diff_weight: float = 0.05, sim_weight: float = 0.25,
                 lambda_schedule: str = "dann", hidden: int = 500, entmin_weight: float = 0.0):
        super().__init__(net, entmin_weight=entmin_weight)
        check(net.input_shape is not None, "dsn needs a backbone with input_shape (C, H, W)")
        self.recon_weight, self.diff_weight = float(recon_weight), float(diff_weight)
        self.sim_weight = float(sim_weight)
        self.lambda_schedule = lambda_schedule
        d = net.embed_dim
        self.private_source = private_encoder(net.input_shape, d)
        self.private_target = private_encoder(net.input_shape, d)
        self.decoder, self.discriminator = within_memory(
            "dsn", lambda: (SharedDecoder(d, net.input_shape, hidden), MLPDiscriminator(d, hidden=hidden, depth=2)),
            hidden=hidden)
        extra = sum(p.numel() for m in (self.private_source, self.private_target, self.decoder) for p in m.parameters())
        if extra > LARGE_DISCRIMINATOR:  # their linear layers grow with the image: 281 M weights at 224 x 224
            warn(f"dsn's private encoders and decoder have {extra / 1e6:.0f} M weights on "
                 f"{tuple(net.input_shape)} images ({extra * 16 / 2**30:.1f} GiB in float32 with "
                 f"gradients and Adam's state); they map whole images, so they suit small inputs")

    def losses(self, batch):
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        src, tgt = self.taps(x_s, x_t, ["embedding"])
        hc_s, hc_t = src["embedding"], tgt["embedding"]
        hp_s, hp_t = self.private_source(x_s), self.private_target(x_t)
        terms = self.base_terms(src["head"], y_s, tgt["head"])
        recon = (scale_invariant_mse(x_s, self.decoder(hc_s + hp_s))
                 + scale_invariant_mse(x_t, self.decoder(hc_t + hp_t)))
        terms["recon"] = self.recon_weight * recon
        terms["difference"] = self.diff_weight * (difference_loss(gathered(hc_s), gathered(hp_s))
                                                  + difference_loss(gathered(hc_t), gathered(hp_t)))
        lam = dann_lambda(batch.progress) if self.lambda_schedule == "dann" else 1.0
        logit = self.discriminator(grad_reverse(torch.cat([hc_s, hc_t]), lam))
        terms["similarity"] = self.sim_weight * discriminator_loss(logit[: len(x_s)], logit[len(x_s):])
        return terms
