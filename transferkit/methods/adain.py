"""Pixel-level domain adaptation by AdaIN style transfer: ``adain`` (seed 003, "Transfer
Learning for Image Synthesis": AdaIN, Huang and Belongie 2017, arbitrary style transfer with
adaptive instance normalisation).

A fixed encoder ``E`` (the pre-trained source network's units up to ``layer``) maps a content
image ``c`` and a style image ``s`` to feature maps; adaptive instance normalisation gives the
content's map the style's per-channel mean and standard deviation over positions,

    AdaIN(x, y) = σ(y) · (x − μ(x)) / σ(x) + μ(y),     t = AdaIN(E(c), E(s)),

and a decoder ``D`` maps ``t`` back to an image, ``g = D(α · t + (1 − α) · E(c))``. The decoder
learns (stage 1) with the content and style losses of the authors' code (the paper writes them as
Euclidean distances, unsquared), ``E`` fixed,

    L_c = ‖E(g) − t‖²,   L_s = Σ_i ‖μ(φ_i(g)) − μ(φ_i(s))‖² + ‖σ(φ_i(g)) − σ(φ_i(s))‖²,
    L_D = L_c + λ · L_s,

``φ_i`` the encoder's units up to ``layer``. Then (stage 2) the task network, initialised from
the source network, trains on source images rendered in the style of random target images,
with their source labels (the decoder fixed, ``CE(N(g), y_s)``; optionally also on the source
images as they are, and with target entropy).

transferkit's choices, where the paper (VGG-19 on photographs) does not fit 28 x 28 digits and
a classifier: the encoder is the source network itself (frozen copy), not VGG; ``layer``
defaults to its first unit with a spatial output (the paper's relu4_1 of a 3-layer digit net
keeps too few positions to draw an image from); the decoder is a small convolutional net
(3 x 3 convolutions, nearest upsampling to the image size, sigmoid output), not VGG's mirror;
``‖·‖²`` is a mean over elements (the authors' Lua code sums the style terms over channels:
its ``styleWeight`` 1e-2 is about 0.01 · C per layer here, 0.2 on LeNet's ``conv1``); λ = 10 with
means is the default of the widely used PyTorch port (naoto0804/pytorch-AdaIN), α = 1 the
authors'; the decoder trains at the experiment's learning rate with Adam's β1 0.9 (the authors'
code: 1e-4, decaying); styles pair each source image with a target image of the same batch.
The fixed encoder's maps of the source and target images are computed once per stage
(:meth:`AdaIN.cache_inputs`), not per batch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import check, is_whole
from .base import register, within_memory
from .image_unit import input_channels
from .pixel import TwoStageTranslation

EPS = 1e-5


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation over the positions of ``N x C x H x W``."""
    mean = x.mean((2, 3), keepdim=True)
    return mean, (x.var((2, 3), keepdim=True, unbiased=False) + EPS).sqrt()


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """``σ(style) · (content − μ(content)) / σ(content) + μ(style)``, per sample and channel."""
    (mc, sc), (ms, ss) = channel_stats(content), channel_stats(style)
    return ss * (content - mc) / sc + ms


def style_loss(generated: list[torch.Tensor], style: list[torch.Tensor]) -> torch.Tensor:
    """``Σ_i ‖μ(g_i) − μ(s_i)‖² + ‖σ(g_i) − σ(s_i)‖²`` (means over elements) over paired maps."""
    total = 0.0
    for g, s in zip(generated, style):
        (mg, sg), (ms, ss) = channel_stats(g), channel_stats(s)
        total = total + F.mse_loss(mg, ms) + F.mse_loss(sg, ss)
    return total


class Decoder(nn.Module):
    """Feature map ``C x h x w`` to an image ``channels x H x W`` in [0, 1]: a 3 x 3 convolution,
    nearest upsampling to the image size, two 3 x 3 convolutions, a sigmoid."""

    def __init__(self, in_channels: int, channels: int, size: tuple[int, int], width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Upsample(size=tuple(size), mode="nearest"),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.body(x)


@register
class AdaIN(TwoStageTranslation):
    """Pixel-level adaptation by AdaIN style transfer (seed 003; Huang and Belongie 2017): the
    task network trains on source images drawn in the style of target images, with their
    labels. Two stages, each one engine run with the experiment's budget (``decoder_steps``
    for the first). Equations, defaults and transferkit's deviations: the module docstring."""

    name = "adain"
    description = "pixel-level adaptation: AdaIN style transfer of source images to target styles, task net on them"
    frozen_children = ("encoder",)
    stage_one_tag = "decoder"
    translator_parts = ("decoder",)
    task_term = "ce_styled"

    def __init__(self, net, layer: str | None = None, style_weight: float = 10.0, alpha: float = 1.0,
                 task_weight: float = 1.0, source_weight: float = 0.0, entmin_weight: float = 0.0, width: int = 32,
                 decoder_steps: int | None = None):
        super().__init__(net, task_weight, source_weight, entmin_weight, decoder_steps, "decoder_steps")
        check(0 <= alpha <= 1, f"adain: alpha (the share of the style, 1: all of it) must be in [0, 1], got {alpha!r}")
        check(is_whole(width, 1), f"adain: width must be a whole number >= 1, got {width!r}")
        check(getattr(net, "input_shape", None) is not None, "adain: the decoder draws images of the network's "
                                                            "input size: build the network with input_shape=(C, H, W)")
        shapes = net.unit_output_shapes()
        spatial = [n for n in net.feature_names if len(shapes[n]) == 3]
        check(spatial, "adain: the network has no unit with a spatial output (C x H x W) whose channel statistics "
                       "could carry a style")
        layer = spatial[0] if layer is None else layer
        check(layer in spatial, f"adain: layer must be a unit with a spatial output (C x H x W): one of {spatial}, "
                                f"got {layer!r}")
        self.layer, self.style_layers = layer, spatial[:spatial.index(layer) + 1]
        self.style_weight, self.alpha = float(style_weight), float(alpha)
        self.encoder = copy.deepcopy(net).eval().requires_grad_(False)
        self.decoder = within_memory(
            "adain", lambda: Decoder(shapes[layer][0], input_channels(net), net.input_shape[1:], width), width=width)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # fixed, BatchNorm statistics included
        return self

    def _content(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(x, [self.layer])[self.layer]

    def _style(self, x: torch.Tensor) -> dict:
        return self.encoder.forward_features(x, self.style_layers)

    def cache_inputs(self, inputs):
        """The fixed encoder's maps of every source image (content) and target image (styles),
        computed once per stage."""
        return {**self.cache_stream(inputs, "content", self._content, self.encoder),
                **self.cache_stream(inputs, "style", self._style, self.encoder, stream="unlabeled")}

    def _styled(self, x_s: torch.Tensor, x_t: torch.Tensor, indices: dict | None = None
                ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """``(g, style maps of the target images, t)``: each source image drawn in the style of the
        target image at its position (cycling through the target batch); the encoder's maps from
        the cache where the batch's ``indices`` address it."""
        indices = indices or {}
        pick = torch.arange(len(x_s), device=x_t.device) % len(x_t)
        content = self.cached_rows("content", indices.get("source"), lambda: self._content(x_s))
        at = indices.get("unlabeled")
        style = self.cached_rows("style", None if at is None else at[pick.to(at.device)],
                                 lambda: self._style(x_t[pick]))
        t = adain(content, style[self.layer])
        return self.decoder(self.alpha * t + (1 - self.alpha) * content), style, t

    @torch.no_grad()
    def stylise(self, source_images: torch.Tensor, target_images: torch.Tensor) -> torch.Tensor:
        """``source_images`` drawn in the style of ``target_images`` (paired by position, cycling)."""
        return self._styled(source_images, target_images)[0]

    def translated(self, batch) -> torch.Tensor:
        return self._styled(batch.source[0], batch.unlabeled, batch.indices)[0]

    def translator_losses(self, batch) -> dict:
        g, style, t = self._styled(batch.source[0], batch.unlabeled, batch.indices)
        made = self.encoder.forward_features(g, self.style_layers)
        return {"content": F.mse_loss(made[self.layer], t),
                "style": self.style_weight * style_loss([made[n] for n in self.style_layers],
                                                        [style[n] for n in self.style_layers])}
