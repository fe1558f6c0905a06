"""Synthetic domain shifts of seed 002 (Royer & Lampert, §5.1 and Table 2).

Seed 002 names the shifts (and gives the untuned network's accuracy on each), not their
parameters: every sigma, standard deviation, size, angle and factor below is transferkit's
choice, and milder than the seed's shifts (README, "Domains"). Angles turn clockwise on
screen (the image's y axis points down; PIL's ``rotate`` turns the other way).

Every shift is a function ``(images, generator) -> images`` on an ``N x C x H x W``
float tensor in [0, 1]; it is vectorised over the batch and returns values in [0, 1].
Random shifts draw all their randomness from ``generator``; the deterministic ones
(``inversion``, ``affine_fixed``, ``rotation_fixed``, ``scaling_symmetric``,
``scaling_stretch``, ``yuv``, ``hsv``) ignore it. A shift is applied to a whole domain at
once (:func:`~transferkit.data.load_domain`), so an image's draw is fixed by the seed and
the domain; it is not fixed across batch sizes: ``occlusion`` and ``affine_random`` draw
one vector of ``N`` values per parameter in turn, so one more image changes every image's
draw, and ``blur``'s kernel radius follows the batch's largest sigma (radius 3, 4 or 5 at
28 px; differences up to about 1e-3 on mnist digits). Drawing otherwise would change every
shifted built-in domain and every table. Lengths in pixels are given for a 28 x 28 image and
scale with the image size.

:data:`SHIFTS` maps each name to ``(function, description, needs_colour)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .domain import as_images, looks_channels_last
from .errors import TransferkitError, UnknownNameError, check

ShiftFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# ---- helpers -----------------------------------------------------------------------
def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (pixels) per image, reflect-padded."""
    n, c, h, w = images.shape
    sigma = torch.as_tensor(sigma, dtype=torch.float32).expand(n).clamp_min(1e-3)
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    radius = min(radius, (min(h, w) - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C) x K
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w).clamp_(0, 1)


def affine_matrix(angle_deg, scale_x, scale_y=None, shear=0.0, tx=0.0, ty=0.0) -> torch.Tensor:
    """Forward affine maps ``N x 2 x 3`` in normalised [-1, 1] coordinates:
    ``p' = R(angle) @ Shear(shear) @ diag(scale_x, scale_y) @ p + t``."""
    args = [torch.as_tensor(a, dtype=torch.float32)
            for a in (angle_deg, scale_x, scale_x if scale_y is None else scale_y, shear, tx, ty)]
    a, sx, sy, sh, tx, ty = torch.broadcast_tensors(*args)
    r = torch.deg2rad(a)
    cos, sin = torch.cos(r), torch.sin(r)
    # R @ [[1, sh], [0, 1]] @ diag(sx, sy)
    m00, m01 = cos * sx, (cos * sh - sin) * sy
    m10, m11 = sin * sx, (sin * sh + cos) * sy
    return torch.stack([torch.stack([m00, m01, tx], -1), torch.stack([m10, m11, ty], -1)], -2)


def warp(images: torch.Tensor, forward: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Apply forward affine maps (``N x 2 x 3`` or ``2 x 3``) with bilinear sampling. The
    linear part acts in pixel units (on an H ≠ W image a rotation stays a rotation);
    translations are fractions of each side."""
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    forward = (forward[None] if forward.dim() == 2 else forward).expand(n, 2, 3)
    if h != w:  # normalised x and y have other pixel scales: A_n[i, j] = A[i, j] * s_j / s_i, s = (w, h)
        s = torch.tensor([float(w), float(h)])
        forward = torch.cat([forward[:, :, :2] * s[None, None, :] / s[None, :, None], forward[:, :, 2:]], 2)
    lin = forward[:, :, :2]
    inv = torch.linalg.inv(lin)
    theta = torch.cat([inv, -(inv @ forward[:, :, 2:])], 2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False).clamp_(0, 1)


def _require_colour(images: torch.Tensor, name: str) -> None:
    if images.shape[1] != 3:
        raise TransferkitError(
            f"shift {name!r} re-interprets RGB colour channels and needs 3-channel images, got "
            f"{images.shape[1]} channel(s); load the domain with 3 channels (load_domain(spec, channels=3), "
            f"Domain.to_format(channels=3), `channels: 3` in a config, --channels 3 for `transferkit show`)")


# ---- pixel-level shifts ----------------------------------------------------------------
def blur(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur ("Blurry MNIST/CIFAR", seed 002 Table 2): sigma uniform in
    [1.0, 1.5] px per image (at 28 px), reflect padding, kernel radius 3 sigma."""
    side = images.shape[-1]  # the width
    sigma = _uniform(images.shape[0], 1.0, 1.5, generator) * (side / 28)
    return gaussian_blur(images, sigma)


def noise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Additive i.i.d. Gaussian noise ("Noisy CIFAR", seed 002 Table 2): std 0.1 per
    pixel and channel, then clipped to [0, 1]."""
    return (images + 0.1 * torch.randn(images.shape, generator=generator)).clamp_(0, 1)


def occlusion(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random occlusion ("Occluded MNIST", seed 002 §5.1): one axis-aligned rectangle per
    image with sides uniform in [30 %, 60 %] of the image side, placed uniformly inside the
    image, filled with one random colour (each channel uniform in [0, 1]; grey on 1-channel
    images: shifts act on a domain's native channels, before ``channels=3`` replicates them)."""
    n, c, h, w = images.shape
    rh = (_uniform(n, 0.3, 0.6, generator) * h).round().long().clamp(1, h)
    rw = (_uniform(n, 0.3, 0.6, generator) * w).round().long().clamp(1, w)
    y0 = (torch.rand(n, generator=generator) * (h - rh + 1)).floor().long()
    x0 = (torch.rand(n, generator=generator) * (w - rw + 1)).floor().long()
    fill = torch.rand(n, c, 1, 1, generator=generator)
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + rh)[:, None])
    in_x = (xs >= x0[:, None]) & (xs < (x0 + rw)[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    return torch.where(mask, fill.expand_as(images), images)


def inversion(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Intensity inversion ``1 - x`` (deterministic)."""
    return 1.0 - images


def _rgb_to_yuv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = -0.14713 * r - 0.28886 * g + 0.436 * b
    v = 0.615 * r - 0.51499 * g - 0.10001 * b
    return torch.stack([y, u / 0.872 + 0.5, v / 1.23 + 0.5], 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    mx, argmx = x.max(1)
    mn = x.min(1).values
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(argmx == 0, ((g - b) / safe) % 6,
                    torch.where(argmx == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack([h, s, mx], 1)


def yuv(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """RGB -> YUV (BT.601) re-interpreted as RGB ("YUV ILSVRC", seed 002 Table 2 and §5.2):
    Y stays in [0, 1], U (±0.436) and V (±0.615) are rescaled to [0, 1]. Needs 3 channels."""
    _require_colour(images, "yuv")
    return _rgb_to_yuv(images).clamp_(0, 1)


def hsv(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """RGB -> HSV re-interpreted as RGB ("HSV ILSVRC", seed 002 Table 2): hue, saturation
    and value each in [0, 1] become the R, G and B channels. Needs 3 channels."""
    _require_colour(images, "hsv")
    return _rgb_to_hsv(images).clamp_(0, 1)


# ---- geometric shifts ---------------------------------------------------------------------
def affine_random(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine per image ("Transform (random)", seed 002 Table 2): rotation uniform in
    ±30 deg, isotropic scale uniform in [0.8, 1.2], shear factor uniform in ±0.3, translation
    uniform in ±15 % of the image side per axis; zero padding."""
    n = images.shape[0]
    m = affine_matrix(_uniform(n, -30, 30, generator), _uniform(n, 0.8, 1.2, generator),
                      shear=_uniform(n, -0.3, 0.3, generator),
                      tx=_uniform(n, -0.3, 0.3, generator), ty=_uniform(n, -0.3, 0.3, generator))
    return warp(images, m)


AFFINE_FIXED = dict(angle_deg=40.0, scale_x=0.85, scale_y=1.1, shear=0.4, tx=0.1, ty=-0.1)


def affine_fixed(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One fixed affine map for every image, independent of the seed ("Transform (fixed)",
    seed 002 Table 2): rotation 40 deg, scale 0.85 (x) and 1.1 (y), shear 0.4, translation
    (+5 %, -5 %) of the image side; zero padding."""
    return warp(images, affine_matrix(**AFFINE_FIXED))


def rotation(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation about the centre, angle uniform in ±45 deg per image, zero padding
    (random counterpart of "Fixed rotation", seed 002 Table 2)."""
    return warp(images, affine_matrix(_uniform(images.shape[0], -45, 45, generator), 1.0))


def rotation_fixed(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fixed rotation by 30 deg clockwise for every image, zero padding ("Fixed rotation", seed 002
    Table 2)."""
    return warp(images, affine_matrix(30.0, 1.0))


def scaling(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random zoom per image about the centre, factor log-uniform in [1/1.5, 1.5] (zoom out
    and in), zero padding (random counterpart of "Fixed scaling", seed 002 Table 2)."""
    s = torch.exp(_uniform(images.shape[0], -math.log(1.5), math.log(1.5), generator))
    return warp(images, affine_matrix(0.0, s))


def scaling_symmetric(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fixed zoom-out by 0.7, border filled by mirroring the image ("Fixed scaling (symmetric
    pad)", seed 002 Table 2)."""
    return warp(images, affine_matrix(0.0, 0.7), padding_mode="reflection")


def scaling_stretch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fixed zoom-out by 0.7, border filled by stretching the edge pixels outwards ("Fixed
    scaling (stretch pad)", seed 002 Table 2)."""
    return warp(images, affine_matrix(0.0, 0.7), padding_mode="border")


def _first_line(fn) -> str:
    return " ".join(fn.__doc__.split("\n\n")[0].split())


SHIFTS: dict[str, tuple[ShiftFn, str, bool]] = {
    fn.__name__: (fn, _first_line(fn), colour)
    for fn, colour in [
        (blur, False), (noise, False), (occlusion, False), (affine_random, False),
        (affine_fixed, False), (rotation, False), (rotation_fixed, False), (scaling, False),
        (scaling_symmetric, False), (scaling_stretch, False), (inversion, False),
        (yuv, True), (hsv, True),
    ]
}

DETERMINISTIC = frozenset({"inversion", "affine_fixed", "rotation_fixed", "scaling_symmetric",
                           "scaling_stretch", "yuv", "hsv"})


def get_shift(name: str) -> tuple[ShiftFn, str, bool]:
    """The ``(function, description, needs_colour)`` entry of shift ``name``."""
    if name not in SHIFTS:
        raise UnknownNameError("shift", name, SHIFTS)
    return SHIFTS[name]


def apply_shift(name: str, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply shift ``name`` to an ``N x C x H x W`` batch in [0, 1] (uint8 0-255 is scaled to it;
    other values are refused, as :func:`~transferkit.domain.as_images` does)."""
    fn, _, _ = get_shift(name)
    check(images.dim() == 4, f"shift {name!r}: expected N x C x H x W images, got {tuple(images.shape)}")
    check(not looks_channels_last(images), f"shift {name!r}: images of shape {tuple(images.shape)} look "
                                           f"channels-last (N x H x W x C); shifts take N x C x H x W "
                                           f"(images.permute(0, 3, 1, 2))")
    images = as_images(images, f"shift {name!r}")
    if len(images) == 0:
        return images
    return fn(images, generator)
