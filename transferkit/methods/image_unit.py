"""Image-to-image units placed before the frozen source network (seed 002 §5.4).

Instead of tuning the network, learn ``T: x -> x'`` that maps target images back towards
the source domain, ``N(T(x))``, with every unit of ``N`` frozen. Four kinds, each
initialised to the identity ``T(x) = x``:

* ``colour``: a 1x1 convolution, ``x'_c = sum_d W_cd x_d + b_c`` (pixel-wise colour maps,
  seed 002's choice for YUV/HSV);
* ``pixel``: 1x1 convolutions with ReLUs, ``x' = x + M(x)``: a non-linear map of each pixel's
  colour (for HSV, which a linear map cannot undo);
* ``stn``: a spatial transformer (Jaderberg et al., seed 002 [15]): a small localisation
  network predicts an affine ``theta`` and ``x' = sample(x, grid(theta))``, for geometric shifts;
* ``unet``: a small encoder-decoder with skip connections (the Pix2Pix generator of seed
  002, reduced), ``x' = x + D(E(x))``, for the rest (blur, noise, backgrounds).

The unit becomes the network's first unit, named ``"image"`` (network surgery), so the
tuned network is an ordinary :class:`~transferkit.backbones.UnitNet`; flex-tuning can
take these units as extra candidates (``Flex(image_units=[...])``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnknownNameError, check
from .base import register
from .finetune import _TargetCE

IMAGE_UNIT = "image"
#: kinds whose parameters are the identity at the start, so weight decay would pull the
#: unit toward a zero map rather than toward ``T(x) = x`` (unet's ``x + D(E(x))`` decays toward it)
NO_DECAY = ("colour", "stn")


class ColourUnit(nn.Module):
    """1x1 convolution over colour channels, identity at initialisation: one affine map of
    each pixel's colour (exact for YUV, inversion or a channel mix; not for HSV, see
    :class:`PixelUnit`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x)


class PixelUnit(nn.Module):
    """A pixel-wise network of 1x1 convolutions with ReLUs, residual ``x + M(x)`` with the
    last layer zero-initialised (identity at start): a non-linear map of each pixel's colour,
    which seed 002 §5.4's "1x1 convolutions" for HSV need (HSV takes a max, a min and a
    piecewise hue; no affine map undoes it)."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                  nn.Conv2d(hidden, channels, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x):
        return x + self.body(x)


class SpatialTransformer(nn.Module):
    """Affine spatial transformer: localisation net -> 2x3 ``theta`` -> bilinear resampling.
    The last layer is zero-initialised with the identity as bias, so ``T(x) = x`` at start."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.loc = nn.Sequential(
            nn.Conv2d(channels, 8, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(8, 10, 5, padding=2), nn.AdaptiveMaxPool2d(4), nn.ReLU(), nn.Flatten(1),
            nn.Linear(160, hidden), nn.ReLU(), nn.Linear(hidden, 6))
        with torch.no_grad():
            self.loc[-1].weight.zero_()
            self.loc[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


class EncoderDecoder(nn.Module):
    """Two-level encoder-decoder with skip connections (a reduced Pix2Pix U-Net), residual
    output ``x + D(E(x))``; the output layer is zero-initialised (identity at start)."""

    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
        self.enc1, self.enc2 = block(channels, width), block(width, 2 * width)
        self.dec2 = block(2 * width + width, width)
        self.out = nn.Conv2d(width + channels, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        up = F.interpolate(e2, size=e1.shape[-2:], mode="nearest")
        d = self.dec2(torch.cat([up, e1], 1))
        return x + self.out(torch.cat([d, x], 1))


IMAGE_UNITS = {"colour": ColourUnit, "pixel": PixelUnit, "stn": SpatialTransformer, "unet": EncoderDecoder}


def make_image_unit(kind: str, channels: int) -> nn.Module:
    if kind not in IMAGE_UNITS:
        raise UnknownNameError("image unit kind", kind, IMAGE_UNITS)
    return IMAGE_UNITS[kind](channels)


def input_channels(net) -> int:
    """The channel count of the images ``net`` takes: its ``input_shape``, else the input of
    its first convolution."""
    if getattr(net, "input_shape", None):
        return int(net.input_shape[0])
    conv = next((m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    check(conv is not None, "an image unit needs the network's image channels: build the network with "
                            "input_shape=(C, H, W)")
    return int(conv.in_channels)


def insert_image_unit(net, unit: nn.Module, name: str = IMAGE_UNIT) -> None:
    """Network surgery: make ``unit`` the first unit of ``net`` (in place; the keys of the
    other units are unchanged, the new ones are ``units.<name>.*``)."""
    check(name not in net.feature_names, f"the network already has a unit {name!r}")
    ref = net._ref_tensor()
    feats = OrderedDict([(name, unit.to(device=ref.device, dtype=ref.dtype))])
    feats.update(net._modules["units"].items())
    net._modules["units"] = nn.ModuleDict(feats)  # UnitNet keeps its feature units here
    net._shapes = None


@register
class ImageUnit(_TargetCE):
    """Seed 002 §5.4: train only an image-to-image unit of kind ``kind`` (``colour``,
    ``pixel``, ``stn``, ``unet``) placed before the frozen source network, ``min CE(N(T(x)), y)``.
    ``lr_mult`` scales its learning rate (Adam moves a weight by about ``lr`` per step, so an
    identity-initialised colour unit needs a larger rate to reach e.g. ``x -> 1 - x``)."""

    name = "image_unit"
    description = "train an image-to-image unit (colour / pixel / stn / unet) before the frozen network (seed 002 §5.4)"

    def __init__(self, net, kind: str = "unet", lr_mult: float = 1.0):
        super().__init__(net)
        self.kind, self.lr_mult = kind, float(lr_mult)
        if IMAGE_UNIT not in net.feature_names:
            insert_image_unit(net, make_image_unit(kind, input_channels(net)))
        else:  # a network that already has one (e.g. picked by flex): train it, if it is of this kind
            make_image_unit(kind, 1)  # an unknown kind is named first
            unit = net.unit(IMAGE_UNIT)
            have = next((k for k, c in IMAGE_UNITS.items() if type(unit) is c), type(unit).__name__)
            check(have == kind, f"the network already has an image unit of kind {have!r}; image_unit "
                                f"kind={kind!r} would train that one instead: use kind={have!r} or another network")
        self.input_unit = net.unit_names[0]

    keeps_head_fixed = True
    adds_to_network = "an image unit before its first unit"

    def trainable_units(self):
        return [IMAGE_UNIT]

    def param_groups(self):
        group = {"params": self.net.parameters_of([IMAGE_UNIT]), "lr_mult": self.lr_mult}
        if self.kind in NO_DECAY:
            group["weight_decay"] = 0.0
        return [group]

    def extra_results(self):
        return {"image_unit": self.kind}
