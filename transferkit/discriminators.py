"""Domain discriminators, including the multi-layer domain discriminator of seed 000 §3.2.

Multi-layer discriminator (seed 000 eq. 2): with ``E_1 .. E_L`` the activations of the
chosen encoder layers,

    d_1 = D_1(E_1(x)),    d_l = D_l(σ(γ · d_{l-1} ⊕ E_l(x)))  for l = 2..L,

followed by a tail of fully-connected layers to one logit. ``D_l`` maps to the size of
``E_{l+1}`` ("the intermediate discriminator layers share the same structure with their
corresponding encoding layers to match the dimensions"), σ is ReLU, γ ≤ 1 the decay and
⊕ element-wise sum (input size ``|E_l|``) or concatenation (``|d_{l-1}| + |E_l|``).
Seed 000 Table 5 (convnet4): 64×64, 64×5, then 5×500, 500×500, 500×500, 500×1;
Table 8 (lenet): 800×500, 500×10, then 10×500, 500×500, 500×1. Activations with spatial
dimensions are flattened (seed 000 uses a convolutional discriminator, Table 6, only for
ResNet-18 on video; this one is fully connected for every backbone).

Losses (sigmoid outputs ``d^s``, ``d^t`` of the last layer; source labelled 1):

* eq. 3, discriminator: ``L_D = -E_s[log d^s] - E_t[log(1 - d^t)]``
* eq. 4, encoder (inverted labels): ``L_E = -E_s[log(1 - d^s)] - E_t[log d^t]``
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import check

#: depth of the fully connected tail after the multi-layer part, per backbone
#: (seed 000 Table 5: two 500x500 layers for convnet4; Table 8: one for lenet)
TAIL_DEPTH = {"convnet4": 2, "lenet": 1}
#: weights of eq. 2's layers above which building the discriminator warns (100 M: 0.4 GiB)
LARGE_DISCRIMINATOR = 100_000_000


def default_layers(net, same_label_space: bool) -> list[str]:
    """Units the multi-layer discriminator reads (seed 000, implementation details): the
    last three layer activations when source and target share their label set, else the
    second and third last (the classifier's output has no common meaning then)."""
    names = net.unit_names
    return names[-3:] if same_label_space else names[-3:-1]


class MultiLayerDiscriminator(nn.Module):
    """Seed 000 eq. 2. ``in_sizes``: flattened size of each tapped activation ``E_l``."""

    def __init__(self, in_sizes: Sequence[int], gamma: float = 1.0, combine: str = "sum",
                 hidden: int = 500, tail_depth: int = 2):
        super().__init__()
        check(len(in_sizes) >= 1, "the multi-layer discriminator needs at least one layer")
        check(0 < gamma <= 1, f"decay gamma must be in (0, 1], got {gamma}")
        check(combine in ("sum", "concat"), f"combine must be 'sum' or 'concat', got {combine!r}")
        self.in_sizes, self.gamma, self.combine = [int(s) for s in in_sizes], gamma, combine
        sizes = self.in_sizes
        layers = []
        for l, size in enumerate(sizes):
            d_in = size if l == 0 or combine == "sum" else sizes[l] + sizes[l]  # |d_{l-1}| = |E_l|
            d_out = sizes[l + 1] if l + 1 < len(sizes) else hidden
            layers.append(nn.Linear(d_in, d_out))
        self.layers = nn.ModuleList(layers)
        tail = []
        for _ in range(tail_depth):
            tail += [nn.ReLU(), nn.Linear(hidden, hidden)]
        self.tail = nn.Sequential(*tail, nn.ReLU(), nn.Linear(hidden, 1))

    @classmethod
    def for_network(cls, net, layers: Sequence[str], **kw) -> "MultiLayerDiscriminator":
        """Size the discriminator from the backbone's unit output shapes."""
        shapes = net.unit_output_shapes()
        sizes = [net.embed_dim if n == "embedding" else math.prod(shapes[n]) for n in layers]
        kw.setdefault("tail_depth", TAIL_DEPTH.get(getattr(net, "name", ""), 2))
        first = sum(a * b for a, b in zip(sizes, sizes[1:]))  # eq. 2's layers but the last: |E_l| x |E_(l+1)|
        if first > LARGE_DISCRIMINATOR:
            warnings.warn(f"the multi-layer discriminator on {list(layers)} of {getattr(net, 'name', 'this network')} "
                          f"has over {first / 1e6:.0f} M weights ({first * 4 / 2**30:.1f} GiB in float32, before "
                          f"gradients and optimiser state): eq. 2 maps each tapped activation to the next one's size "
                          f"with a fully connected layer. Tap smaller ones with `layers` (e.g. [embedding, head]); "
                          f"seed 000 Table 6 uses a convolutional discriminator for ResNets, which transferkit has "
                          f"not", stacklevel=3)
        return cls(sizes, **kw)

    def layer_input_sizes(self) -> list[int]:
        return [layer.in_features for layer in self.layers]

    def forward(self, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        """Domain logit (source = 1) for each sample, from the tapped activations in order."""
        check(len(activations) == len(self.layers),
              f"expected {len(self.layers)} activations, got {len(activations)}")
        d = None
        for l, (layer, e) in enumerate(zip(self.layers, activations)):
            e = e.flatten(1)
            if l == 0:
                d = layer(e)
            else:
                mixed = self.gamma * d + e if self.combine == "sum" else torch.cat([self.gamma * d, e], 1)
                d = layer(F.relu(mixed))
        return self.tail(d).squeeze(1)


class MLPDiscriminator(nn.Module):
    """A single-layer domain discriminator: an MLP on one flattened activation (DANN, ADDA)."""

    def __init__(self, in_size: int, hidden: int = 500, depth: int = 2):
        super().__init__()
        layers, d = [], in_size
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        return self.net(activation.flatten(1)).squeeze(1)


def discriminator_loss(logit_source: torch.Tensor, logit_target: torch.Tensor) -> torch.Tensor:
    """Seed 000 eq. 3: ``-E_s[log d^s] - E_t[log(1 - d^t)]`` with ``d = sigmoid(logit)``."""
    return (F.binary_cross_entropy_with_logits(logit_source, torch.ones_like(logit_source))
            + F.binary_cross_entropy_with_logits(logit_target, torch.zeros_like(logit_target)))


def inverted_label_loss(logit_source: torch.Tensor, logit_target: torch.Tensor) -> torch.Tensor:
    """Seed 000 eq. 4 (the encoders' loss, labels inverted):
    ``-E_s[log(1 - d^s)] - E_t[log d^t]``."""
    return discriminator_loss(logit_target, logit_source)
