"""Domain discriminators, including the multi-layer domain discriminator of seed 000 §3.2.

Multi-layer discriminator (seed 000 eq. 2): with ``E_1 .. E_L`` the activations of the
chosen encoder layers,

    d_1 = D_1(E_1(x)),    d_l = D_l(σ(γ · d_{l-1} ⊕ E_l(x)))  for l = 2..L,

followed by a tail of fully-connected layers to one logit. ``D_l`` maps to the size of
``E_{l+1}`` ("the intermediate discriminator layers share the same structure with their
corresponding encoding layers to match the dimensions"), σ is ReLU, γ ≤ 1 the decay and
⊕ element-wise sum (input size ``|E_l|``) or concatenation (``|d_{l-1}| + |E_l|``).

Two forms (:func:`multilayer_discriminator` picks one):

* fully connected (:class:`MultiLayerDiscriminator`; activations flattened), seed 000
  Table 5 (convnet4): 64×64, 64×5, then 5×500, 500×500, 500×500, 500×1; Table 8 (lenet):
  800×500, 500×10, then 10×500, 500×500, 500×1.
* convolutional (:class:`ConvMultiLayerDiscriminator`), seed 000 Table 6 (ResNet-18, the
  image → video experiment): ``D_l`` between two feature maps is a 3×3 convolution whose
  stride maps ``E_l``'s grid onto ``E_{l+1}``'s, plus BatchNorm; on ``layer3 → layer4``
  that is Table 6's conv1 (3×3×512, stride 2), its conv2 (3×3×512, stride 1) is ``D_L``,
  and conv3 (1×1×1) is the last linear layer on the position-averaged map.

Losses (sigmoid outputs ``d^s``, ``d^t`` of the last layer; source labelled 1):

* eq. 3, discriminator: ``L_D = -E_s[log d^s] - E_t[log(1 - d^t)]``
* eq. 4, encoder (inverted labels): ``L_E = -E_s[log(1 - d^s)] - E_t[log d^t]``
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .domain import check_memory
from .errors import TransferkitError, UnknownNameError, check, warn

#: depth of the fully connected tail after the multi-layer part, per backbone
#: (seed 000 Table 5: two 500x500 layers for convnet4; Table 8: one for lenet)
TAIL_DEPTH = {"convnet4": 2, "lenet": 1}
#: weights of eq. 2's layers above which building the discriminator warns (100 M: 0.4 GiB)
LARGE_DISCRIMINATOR = 100_000_000
#: the most hidden layers (``depth``, ``tail_depth``) and the most weights of the layers sized by
#: ``hidden`` a discriminator is built with (2 G weights: 8 GiB in float32, before gradients)
MAX_HIDDEN_LAYERS = 1000
MAX_HIDDEN_WEIGHTS = 2**31


def check_hidden_size(layers: int, weights: int, **options) -> None:
    """Refuse a discriminator with more than :data:`MAX_HIDDEN_LAYERS` hidden layers or
    :data:`MAX_HIDDEN_WEIGHTS` weights in them, before building it; ``options``: the values
    that size it (``depth``, ``hidden``...), named in the message."""
    given = ", ".join(f"{k}={v}" for k, v in options.items())
    check(layers <= MAX_HIDDEN_LAYERS, f"the discriminator ({given}) would have {layers} hidden layers, at most "
                                       f"{MAX_HIDDEN_LAYERS}")
    check(weights <= MAX_HIDDEN_WEIGHTS,
          f"the discriminator ({given}) would have {weights:,} weights ({weights * 4 / 2**30:,.1f} GiB in float32, "
          f"before gradients and optimiser state), at most {MAX_HIDDEN_WEIGHTS:,}: choose a smaller {given}")


def default_layers(net, same_label_space: bool) -> list[str]:
    """Units the multi-layer discriminator reads (seed 000, implementation details): the last
    three layer activations when ``same_label_space``, else the second and third last. What
    "same" means is the caller's: ``lext`` / ``finetune_adv`` pass whether source and target
    have as many classes (the seed's words, and its Table 5); ``multilayer_adv`` whether they
    have the same classes (its issue's reading; docs/adaptation.md)."""
    names = net.unit_names
    return names[-3:] if same_label_space else names[-3:-1]


def _fc_weights(sizes: Sequence[int], combine: str = "sum") -> int:
    """Weights of the fully connected eq. 2 layers but the last: ``Σ |E_l| · |E_(l+1)|``, with
    ``2 |E_l|`` inputs from the second layer on when ``combine="concat"``."""
    wide = 2 if combine == "concat" else 1
    return sum((1 if i == 0 else wide) * a * b for i, (a, b) in enumerate(zip(sizes, sizes[1:])))


class MultiLayerDiscriminator(nn.Module):
    """Seed 000 eq. 2. ``in_sizes``: flattened size of each tapped activation ``E_l``.

    Deviation: the seed's ``d_1 = D_1(σ(E_1))`` is computed as ``d_1 = D_1(E_1)`` (σ, a ReLU,
    on ``γ d_(l-1) ⊕ E_l`` from the second layer on). The default first tapped unit of every
    built-in backbone ends in a ReLU, so the two agree there; a first tapped ``head`` (logits),
    or a unit ending in a linear or BatchNorm layer, is read without σ (as ADDA's discriminator
    reads logits). :class:`ConvMultiLayerDiscriminator` does the same."""

    #: whether a domain's logits depend on the other domain's batch (BatchNorm over both)
    joint_batch = False

    def __init__(self, in_sizes: Sequence[int], gamma: float = 1.0, combine: str = "sum",
                 hidden: int = 500, tail_depth: int = 2):
        super().__init__()
        check(len(in_sizes) >= 1, "the multi-layer discriminator needs at least one layer")
        check(0 < gamma <= 1, f"decay gamma must be in (0, 1], got {gamma}")
        check(combine in ("sum", "concat"), f"combine must be 'sum' or 'concat', got {combine!r}")
        self.in_sizes, self.gamma, self.combine = [int(s) for s in in_sizes], gamma, combine
        sizes = self.in_sizes
        check_hidden_size(tail_depth, (sizes[-1] + tail_depth * hidden + 1) * hidden, hidden=hidden,
                          tail_depth=tail_depth)
        check_memory(4 * _fc_weights(sizes, combine), f"the multi-layer discriminator's eq. 2 layers between the "
                     f"tapped activations (sizes {sizes})", "tap smaller ones with `layers` (e.g. [embedding, head]) "
                     "or use the convolutional discriminator (discriminator: conv)")
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
    def for_network(cls, net, layers: Sequence[str], conv_tried: bool = False, **kw) -> "MultiLayerDiscriminator":
        """Size the discriminator from the backbone's unit output shapes; ``conv_tried``: the
        convolutional form was refused for these layers (the warning does not offer it)."""
        shapes = net.unit_output_shapes()
        sizes = [net.embed_dim if n == "embedding" else math.prod(shapes[n]) for n in layers]
        kw.setdefault("tail_depth", TAIL_DEPTH.get(getattr(net, "name", ""), 2))
        first = _fc_weights(sizes, kw.get("combine", "sum"))
        if first > LARGE_DISCRIMINATOR:
            warn(f"the multi-layer discriminator on {list(layers)} of {getattr(net, 'name', 'this network')} "
                 f"has over {first / 1e6:.0f} M weights ({first * 4 / 2**30:.1f} GiB in float32, before "
                 f"gradients and optimiser state): eq. 2 maps each tapped activation to the next one's size "
                 f"with a fully connected layer. Tap smaller ones with `layers` (e.g. [embedding, head])"
                 + (" (no strided convolution maps these layers' shapes onto each other)" if conv_tried else
                    " or use the convolutional one of seed 000 Table 6 (discriminator: conv)"))
        return cls(sizes, **kw)

    def layer_input_sizes(self) -> list[int]:
        return [layer.in_features for layer in self.layers]

    def forward(self, activations: Sequence[torch.Tensor], target_activations=None):
        """Domain logit (source = 1) for each sample, from the tapped activations in order;
        given a second list (the target's), a pair of logits, each domain run on its own."""
        if target_activations is not None:
            return self(activations), self(target_activations)
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


def _conv_stride(size: Sequence[int], target: Sequence[int]) -> int | None:
    """The stride of a 3×3 convolution with padding 1 that maps grid ``size`` (H, W) onto
    ``target``: output ``(h - 1) // s + 1``, as a ResNet's strided convolutions."""
    for s in range(1, max(size) + 1):
        if all((h - 1) // s + 1 == t for h, t in zip(size, target)):
            return s
    return None


class ConvMultiLayerDiscriminator(nn.Module):
    """Seed 000 eq. 2 with convolutional layers for feature maps (Table 6, ResNet-18).

    ``in_shapes``: each tapped activation's shape without the batch, ``(C, H, W)`` for a
    feature map, ``(D,)`` for a vector. ``D_l`` maps ``E_l`` onto ``E_{l+1}``'s shape:
    feature map → feature map: conv 3×3 (stride from the two grids, padding 1) + BatchNorm;
    feature map → vector: conv 3×3 to ``hidden`` channels + BatchNorm, σ, average over
    positions, linear; vector → vector: linear. The last tapped layer maps to ``hidden``
    (channels, default: those of the last feature map, Table 6's 512), followed by σ, the
    average over positions, ``tail_depth`` hidden linear layers (Table 6: none) and a
    linear layer to one logit. σ is a leaky ReLU (``slope`` 0.2; Table 6 gives no slope); as in
    :class:`MultiLayerDiscriminator`, ``D_1`` reads ``E_1`` without σ.

    Both domains go through one pass (:meth:`forward` with ``target_activations``): the
    BatchNorm statistics are those of the mixed batch; per-domain batches would normalise
    the domain difference away. Deviation: Table 6's conv3 gives a logit per position;
    here the positions are averaged before the last linear layer (the same as averaging
    conv3's logits), so the losses see one logit per image.
    """

    joint_batch = True

    def __init__(self, in_shapes: Sequence[Sequence[int]], gamma: float = 1.0, combine: str = "sum",
                 hidden: int | None = None, tail_depth: int = 0, slope: float = 0.2):
        super().__init__()
        check(len(in_shapes) >= 1, "the multi-layer discriminator needs at least one layer")
        check(0 < gamma <= 1, f"decay gamma must be in (0, 1], got {gamma}")
        check(combine in ("sum", "concat"), f"combine must be 'sum' or 'concat', got {combine!r}")
        shapes = [tuple(int(v) for v in s) if len(s) == 3 else (math.prod(s),) for s in in_shapes]
        maps = [s for s in shapes if len(s) == 3]
        check(bool(maps), f"the convolutional discriminator needs a feature map among the tapped shapes {shapes}: tap "
                          f"a convolutional unit too (layers: [...]), or use discriminator: fc")
        self.in_shapes, self.gamma, self.combine = shapes, gamma, combine
        hidden = int(hidden or maps[-1][0])
        check_hidden_size(tail_depth, (9 * shapes[-1][0] * 2 + tail_depth * hidden + 1) * hidden, hidden=hidden,
                          tail_depth=tail_depth)
        self.act = nn.LeakyReLU(slope)
        self.layers = nn.ModuleList(self._layer(l, shapes, hidden) for l in range(len(shapes)))
        tail = []
        for _ in range(tail_depth):
            tail += [nn.Linear(hidden, hidden), nn.LeakyReLU(slope)]
        self.tail = nn.Sequential(*tail, nn.Linear(hidden, 1))

    def _layer(self, l: int, shapes: list[tuple], hidden: int) -> nn.Module:
        shape, nxt = shapes[l], shapes[l + 1] if l + 1 < len(shapes) else None
        width = shape[0] * (2 if l > 0 and self.combine == "concat" else 1)
        if len(shape) == 1:
            check(nxt is None or len(nxt) == 1, f"a vector ({shape[0]}) cannot be followed by the feature map {nxt} "
                                                "in eq. 2; tap layers in the network's order")
            return nn.Linear(width, nxt[0] if nxt else hidden)
        if nxt is not None and len(nxt) == 3:
            stride = _conv_stride(shape[1:], nxt[1:])
            check(stride is not None, f"no strided 3x3 convolution maps the feature map {shape} onto {nxt}; "
                                      f"tap other layers or use discriminator: fc")
            return nn.Sequential(nn.Conv2d(width, nxt[0], 3, stride, 1), nn.BatchNorm2d(nxt[0]))
        conv = [nn.Conv2d(width, hidden, 3, 1, 1), nn.BatchNorm2d(hidden)]
        if nxt is None:
            return nn.Sequential(*conv)
        return nn.Sequential(*conv, self.act, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(hidden, nxt[0]))

    def layer_input_shapes(self) -> list[tuple]:
        """What eq. 2's layer ``l`` reads: ``E_1``, then ``γ d_(l-1) ⊕ E_l``."""
        return [(s[0] * (2 if l and self.combine == "concat" else 1),) + s[1:] for l, s in enumerate(self.in_shapes)]

    def _logits(self, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        check(len(activations) == len(self.layers),
              f"expected {len(self.layers)} activations, got {len(activations)}")
        d = None
        for l, (layer, shape, e) in enumerate(zip(self.layers, self.in_shapes, activations)):
            e = e if len(shape) == 3 else e.flatten(1)
            check(tuple(e.shape[1:]) == shape, f"activation {l + 1} has shape {tuple(e.shape[1:])}, expected {shape}")
            if l > 0:
                e = self.act(self.gamma * d + e if self.combine == "sum" else torch.cat([self.gamma * d, e], 1))
            d = layer(e)
        d = self.act(d)
        return self.tail(d.mean((2, 3)) if d.dim() == 4 else d).squeeze(1)

    def forward(self, activations: Sequence[torch.Tensor], target_activations=None):
        """Domain logit (source = 1) per sample; given the target's activations too, the pair
        of logits from one pass over both domains (mixed BatchNorm statistics)."""
        if target_activations is None:
            return self._logits(activations)
        n = len(activations[0])
        logits = self._logits([torch.cat([a, b]) for a, b in zip(activations, target_activations)])
        return logits[:n], logits[n:]


#: discriminator forms :func:`multilayer_discriminator` builds
DISCRIMINATOR_KINDS = ("auto", "fc", "conv")


def check_layer_order(net, layers: Sequence[str]) -> None:
    """Eq. 2 chains ``d_(l-1)`` into layer ``l``: ``layers`` must follow the network's order
    (units, then ``embedding``, then ``head``) without repeats."""
    order = [n for n in net.unit_names if n != "head"] + ["embedding", "head"]
    for n in layers:
        if n not in order:
            raise UnknownNameError("layer", n, order)
    check([order.index(n) for n in layers] == sorted(order.index(n) for n in set(layers)),
          f"layers must follow the network's order without repeats (eq. 2 chains d_(l-1) into layer l), "
          f"got {list(layers)}; the order is {order}")


def multilayer_discriminator(net, layers: Sequence[str], kind: str = "auto", hidden: int | None = None, **kw):
    """Seed 000 eq. 2's discriminator for ``net``'s ``layers``, sized from the unit output shapes.

    ``kind``: ``"fc"`` (Tables 5, 8), ``"conv"`` (Table 6) or ``"auto"``: fully connected
    unless its eq. 2 layers would exceed :data:`LARGE_DISCRIMINATOR` weights (ResNets:
    ≈ 103 M at 28 px, 1.3 G at 224 px) and a convolutional one can be built. ``hidden``:
    ``None`` gives 500 (fc) or the last feature map's channels (conv)."""
    check(kind in DISCRIMINATOR_KINDS, f"discriminator must be one of {', '.join(DISCRIMINATOR_KINDS)}, got {kind!r}")
    check_layer_order(net, layers)
    if kind == "fc":
        return MultiLayerDiscriminator.for_network(net, layers, hidden=hidden or 500, **kw)
    shapes = net.unit_output_shapes()
    in_shapes = [(net.embed_dim,) if n == "embedding" else tuple(shapes[n]) for n in layers]
    if kind == "conv":
        return ConvMultiLayerDiscriminator(in_shapes, hidden=hidden, **kw)
    conv_tried = False
    if (_fc_weights([math.prod(s) for s in in_shapes], kw.get("combine", "sum")) > LARGE_DISCRIMINATOR
            and len(in_shapes[0]) == 3):
        try:
            return ConvMultiLayerDiscriminator(in_shapes, hidden=hidden, **kw)
        except TransferkitError:  # no convolutional form for these shapes: the fully connected one warns
            conv_tried = True
    return MultiLayerDiscriminator.for_network(net, layers, conv_tried=conv_tried, hidden=hidden or 500, **kw)


class MLPDiscriminator(nn.Module):
    """A single-layer domain discriminator: an MLP on one flattened activation (DANN, ADDA)."""

    def __init__(self, in_size: int, hidden: int = 500, depth: int = 2):
        super().__init__()
        check_hidden_size(depth, (in_size + (depth - 1) * hidden + 1) * hidden, hidden=hidden, depth=depth)
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
