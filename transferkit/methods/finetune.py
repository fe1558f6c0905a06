"""Fine-tuning family (seed 002 §4-§5.1 baselines, seed 004 linear probing / two-stage
fine-tuning, seed 001 slow fine-tuning).

All start from the network pre-trained on the source and train on labelled target
examples with cross entropy, ``L = CE(N(x), y)``; they differ in which parameters they
train. With a network ``N = N_L o ... o N_1`` cut into units (seed 002 §3.2):

* ``ft_all`` (``finetune``): every unit;
* ``ft_fc`` / ``ft_fc1`` / ``ft_fc2``: the trailing fully connected units / the last one / the last two;
* ``ft_unit:<name>``: one named unit ``N_l`` (the candidates of flex-tuning, Algorithm 1);
* ``ft_ss``: the head plus scale-and-shift of the frozen weights (seed 002 §5.1 "ft-ss",
  after [36]): by default a scale per 2-D convolution kernel and per linear output, and a
  shift of each bias (``scaling="kernel"``); ``scaling="channel"`` is the coarser
  per-output-channel ``y -> g * y + b`` (docs/finetuning.md, Deviations);
* ``ft_slow``: every unit, the feature units with learning rate ``lr * backbone_lr_mult``;
* ``linear_probe``: a new linear head on frozen features (seed 004);
* ``two_stage``: ``ft_all``, then a new linear head trained on the frozen fine-tuned features (seed 004).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..backbones import HEAD
from ..engine import FitResult
from ..errors import UnknownNameError, check, warn
from .base import Method, check_fixed_options, register, register_prefix


class _TargetCE(Method):
    """Cross entropy on the labelled target; subclasses choose the trained units."""

    def losses(self, batch):
        return {"ce_target": self.supervised(batch.target)}


@register
class Finetune(_TargetCE):
    """Fine-tune every unit on the labelled target ("ft-all" of seed 002, "fine-tuning" of
    seed 004 and seed 000 Table 1)."""

    name = "finetune"
    description = "pre-train on source, fine-tune all units on the target labels"


@register
class FtAll(Finetune):
    """Seed 002's name for :class:`Finetune`: ``N_ft-all`` of Algorithm 1 line 5."""

    name = "ft_all"
    description = "fine-tune every unit (seed 002 ft-all)"


def fc_units(net) -> list[str]:
    """The trailing units without convolution that hold parameters (the fully connected
    units, head included; a parameter-free unit among them, e.g. a ReLU, is skipped)."""
    out, tunable = [], set(net.tunable_unit_names())
    for name in reversed(net.unit_names):
        if any(isinstance(m, nn.modules.conv._ConvNd) for m in net.unit(name).modules()):
            break
        if name in tunable:
            out.insert(0, name)
    return out


@register
class FtFc(_TargetCE):
    """Tune only the last ``n`` fully connected units (seed 002 "ft-fc"); ``n=None``: all
    trailing fully connected units. The engine caches the frozen prefix."""

    name = "ft_fc"
    n_fc: int | None = None
    description = "tune the trailing fully connected units only (seed 002 ft-fc)"

    def __init__(self, net, n: int | None = None):
        super().__init__(net)
        check_fixed_options(type(self), {"n": n})
        n = self.n_fc if n is None else n
        fcs = fc_units(net)
        check(n is None or 1 <= n <= len(fcs),
              f"{self.name} tunes the last {n} fully connected unit(s), but this backbone ends in {len(fcs)} "
              f"({', '.join(fcs)}){'' if self.n_fc else f'; n must be in [1, {len(fcs)}]'}: use ft_fc1, ft_fc "
              f"(all of them) or ft_unit:<name>")
        self.units = fcs if n is None else fcs[-n:]

    def trainable_units(self):
        return list(self.units)


@register
class FtFc1(FtFc):
    """Tune only the last unit, the classifier (seed 002 "ft-fc (1)")."""

    name = "ft_fc1"
    n_fc = 1
    fixed_options = {"n": (1, "{name} tunes the last 1 unit(s); for n={given} use ft_fc with options {{n: {given}}}")}
    description = "tune the last unit only (seed 002 ft-fc (1))"


@register
class FtFc2(FtFc):
    """Tune the last two units (seed 002 "ft-fc (2)")."""

    name = "ft_fc2"
    n_fc = 2
    fixed_options = {"n": (2, "{name} tunes the last 2 unit(s); for n={given} use ft_fc with options {{n: {given}}}")}
    description = "tune the last two units (seed 002 ft-fc (2))"


@register
class FtUnit(_TargetCE):
    """Tune the units in ``unit`` (a name or a list of names), everything else frozen:
    ``N_ft-l`` of seed 002 Algorithm 1 line 2. ``ft_unit:<name>`` fixes the unit. A unit that
    is no name (``unit: [3]``) is an unknown unit, named with the network's units."""

    name = "ft_unit"
    default_unit: str | None = None
    description = "tune one named unit (seed 002 N_ft-l); name it as ft_unit:<unit>"

    def __init__(self, net, unit: str | Sequence[str] | None = None):  # checked here, with the network's units
        super().__init__(net)
        check_fixed_options(type(self), {"unit": unit})
        unit = self.default_unit if unit is None else unit
        check(unit is not None, "ft_unit needs a unit: use ft_unit:<name> or options {ft_unit: {unit: NAME}}")
        check(isinstance(unit, (str, Iterable)) and not isinstance(unit, (bytes, Mapping)),
              f"ft_unit: option unit must be text or a list of texts or null, got {unit!r}; units are "
              f"{', '.join(net.unit_names)}")
        self.units = [unit] if isinstance(unit, str) else list(unit)
        check(self.units, "ft_unit needs at least one unit to tune, got an empty list")
        odd = [u for u in self.units if not isinstance(u, str)]  # a number (unit: [3]) names no unit either
        if odd:
            raise UnknownNameError("unit", odd[0], net.unit_names)
        twice = sorted({u for u in self.units if self.units.count(u) > 1})
        check(not twice, f"ft_unit: unit lists {', '.join(map(repr, twice))} more than once; list each unit once")
        tunable = net.tunable_unit_names()
        for u in self.units:
            net.unit(u)  # unknown names fail here, with the known ones
            check(u in tunable, f"unit {u!r} has no parameters to tune; units with parameters: {', '.join(tunable)}")

    def trainable_units(self):
        return list(self.units)

    @property
    def keeps_head_fixed(self) -> bool:
        return "head" not in self.units


#: ``{unit: class of ft_unit:<unit>}`` while something holds the class: a name looked up and dropped (a
#: misspelt unit, known only once a network is given) leaves nothing behind
_FT_UNIT_CLASSES: weakref.WeakValueDictionary[str, type[FtUnit]] = weakref.WeakValueDictionary()


@register_prefix("ft_unit")
def ft_unit_named(unit: str) -> type[FtUnit]:
    """The class of ``ft_unit:<unit>``: one class per unit name while any of it is held (a method, a
    saved model), made anew once none is. Its name is found again by this module's ``__getattr__``,
    so that a trained model of it pickles."""
    cls = _FT_UNIT_CLASSES.get(unit)
    if cls is None:
        name = f"FtUnit_{unit}" if unit.isidentifier() else f"FtUnitHex_{unit.encode().hex()}"
        named = unit.replace("{", "{{").replace("}", "}}")
        refusal = f"{{name}} tunes unit {named}; for unit={{given}} use ft_unit:{{given}}"
        cls = type(name, (FtUnit,), {"name": f"ft_unit:{unit}", "default_unit": unit,
                                     "fixed_options": {"unit": (unit, refusal)},
                                     "__module__": __name__, "__qualname__": name, "__doc__": FtUnit.__doc__})
        _FT_UNIT_CLASSES[unit] = cls
    return cls


def __getattr__(name: str):
    try:
        if name.startswith("FtUnitHex_"):
            return ft_unit_named(bytes.fromhex(name[len("FtUnitHex_"):]).decode())
        if name.startswith("FtUnit_") and name[len("FtUnit_"):]:
            return ft_unit_named(name[len("FtUnit_"):])
    except ValueError:  # not hex, or not UTF-8 (UnicodeDecodeError is a ValueError)
        pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ScaleShift(nn.Module):
    """Per-channel ``y -> scale * y + shift``, initialised to the identity. The channels are
    dimension 1 (a convolution's output) or, with ``last_dim``, the last dimension (a linear
    layer's output, also on ``N x T x D`` tokens)."""

    last_dim = False  # also what a module pickled before the option (a saved run's model) reads

    def __init__(self, channels: int, last_dim: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.last_dim = last_dim

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        shape = (-1,) if self.last_dim else (1, -1) + (1,) * (y.dim() - 2)
        return y * self.scale.view(shape) + self.shift.view(shape)


class KernelScaleShift(nn.Module):
    """[36]'s scaling and shifting of a convolution (Sun et al. 2019, "meta-transfer
    learning"): one scale per 2-D kernel ``W[o, i]`` and one shift per output channel, so
    the layer computes ``(W ⊙ scale) * x + (c + shift)``; identity at the start."""

    def __init__(self, conv: nn.modules.conv._ConvNd):
        super().__init__()
        ones = (1,) * (conv.weight.dim() - 2)
        self.scale = nn.Parameter(torch.ones(conv.out_channels, conv.in_channels // conv.groups, *ones))
        self.shift = nn.Parameter(torch.zeros(conv.out_channels))


class _KernelScaledConv:
    """A convolution whose ``scale_shift`` (:class:`KernelScaleShift`) scales its kernels and
    shifts its bias; the weights keep their keys (``add_scale_shift(kernel=True)`` sets it as
    the class of an ``nn.Conv1d/2d/3d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ss = self.scale_shift
        bias = ss.shift if self.bias is None else self.bias + ss.shift
        return self._conv_forward(x, self.weight * ss.scale, bias)


class KernelScaledConv1d(_KernelScaledConv, nn.Conv1d):
    pass


class KernelScaledConv2d(_KernelScaledConv, nn.Conv2d):
    pass


class KernelScaledConv3d(_KernelScaledConv, nn.Conv3d):
    pass


_KERNEL_SCALED = {nn.Conv1d: KernelScaledConv1d, nn.Conv2d: KernelScaledConv2d, nn.Conv3d: KernelScaledConv3d}


def _scale_shift_hook(module, inputs, output):
    return module.scale_shift(output)


def _attention_scale_shift_hook(module, inputs, output):
    out, weights = output
    return module.scale_shift(out), weights


def add_scale_shift(net, units: list[str], kernel: bool = False) -> list[nn.Module]:
    """Attach a :class:`ScaleShift` after every convolution and linear layer of ``units``
    (as a ``scale_shift`` child and a forward hook; the original weights keep their keys).
    With ``kernel``, a convolution instead gets a :class:`KernelScaleShift` (one scale per
    2-D kernel, [36]'s form; ``nn.Conv1d/2d/3d`` only), which it applies in its forward.
    An ``nn.MultiheadAttention`` (a ViT block) counts as one layer: its output gets the
    scale/shift (its projections run through the functional API, where a hook on its
    ``out_proj`` would never fire). Returns the scale/shift module of every such layer: a
    layer that already has one (a network tuned by an earlier ``ft_ss``) keeps it, and it
    is returned to be tuned again."""
    found = []
    for name in units:
        modules = list(net.unit(name).modules())
        inside_attention = {id(c) for m in modules if isinstance(m, nn.MultiheadAttention)
                            for c in m.modules() if c is not m}
        for m in modules:
            attention = isinstance(m, nn.MultiheadAttention)
            if id(m) in inside_attention or not (attention or isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))):
                continue
            conv = isinstance(m, nn.modules.conv._ConvNd)
            scaled = kernel and (type(m) in _KERNEL_SCALED or isinstance(m, _KernelScaledConv))
            if hasattr(m, "scale_shift"):
                check(isinstance(m.scale_shift, KernelScaleShift) == scaled,
                      f"a layer of unit {name!r} already has a {type(m.scale_shift).__name__} from an earlier "
                      f"ft_ss of the other scaling ({'channel' if kernel else 'kernel'}); tune it with that one")
            elif scaled:
                m.__class__ = _KERNEL_SCALED[type(m)]
                m.scale_shift = KernelScaleShift(m)
            else:
                if kernel and conv:  # e.g. timm's Conv2dSame, whose own forward pads: scaling its kernels here
                    warn(f"ft_ss: unit {name!r} has a {type(m).__name__}, not an nn.Conv1d/2d/3d; it gets "
                         f"one scale per output channel instead of one per kernel")
                if attention:
                    m.scale_shift = ScaleShift(m.embed_dim, last_dim=True)
                    m.register_forward_hook(_attention_scale_shift_hook)
                else:
                    linear = isinstance(m, nn.Linear)
                    m.scale_shift = ScaleShift(m.out_features if linear else m.out_channels, last_dim=linear)
                    m.register_forward_hook(_scale_shift_hook)
            found.append(m.scale_shift)
    return found


@register
class FtSS(_TargetCE):
    """Seed 002 §5.1 "ft-ss": tune the classifier and, at every layer of the feature units,
    lightweight scaling and shifting parameters; the pre-trained weights stay frozen.

    ``scaling="kernel"`` (default): [36]'s form (Sun et al. 2019) on every
    ``nn.Conv1d/2d/3d``, one scale per 2-D kernel ``W[o, i]`` and a bias shift,
    ``(W ⊙ s) * x + (c + b)``; linear layers (and convolutions of other classes, with a
    warning) get the per-channel form, since a scale per weight would tune as many numbers as
    the layer has. ``scaling="channel"``: a per-output-channel scale ``g`` and shift ``b`` on
    every layer's output, bias included, ``g * (W * x + c) + b``: one scale per output
    filter, a coarser family than [36]'s (the default until 2026-12-01). The
    scale/shift modules sit inside every unit, so the engine does not cache a prefix. They
    start at the identity and take no weight decay (``train.weight_decay`` would pull them
    toward 0, not toward the source network); the head does."""

    name = "ft_ss"
    cache_frozen_prefix = False
    adds_to_network = "a scale-and-shift module to every layer of its feature units"
    description = "tune the head plus kernel scales and bias shifts at every layer (seed 002 ft-ss)"

    def __init__(self, net, scaling: str = "kernel"):
        super().__init__(net)
        self.scaling = scaling
        self.scale_shifts = add_scale_shift(net, net.feature_names, kernel=scaling == "kernel")

    def trainable_units(self):
        return [HEAD]

    def ss_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.scale_shifts for p in m.parameters()]

    def prepare(self, domains):
        super().prepare(domains)
        for p in self.ss_parameters():
            p.requires_grad_(True)

    def param_groups(self):
        return [{"params": self.net.parameters_of([HEAD])}, {"params": self.ss_parameters(), "weight_decay": 0.0}]


@register
class FtSlow(_TargetCE):
    """Fine-tune every unit, the feature units with a smaller learning rate
    ``lr * backbone_lr_mult`` than the head (seed 001 "fine-tune the whole model", "other
    solution: use smaller gradient's update for AlexNet part"; the factor 0.1 is ours)."""

    name = "ft_slow"
    description = "tune everything, backbone with a smaller learning rate than the head (seed 001)"

    def __init__(self, net, backbone_lr_mult: float = 0.1):
        super().__init__(net)
        self.backbone_lr_mult = backbone_lr_mult

    def param_groups(self):
        return [{"params": self.net.parameters_of(self.net.feature_names), "lr_mult": self.backbone_lr_mult},
                {"params": self.net.parameters_of([HEAD])}]


@register
class LinearProbe(_TargetCE):
    """Freeze the pre-trained feature units and train a linear head on the labelled target
    (seed 004 "linear probing"; seed 001 "frozen features + linear classifier"). With
    ``reset_head`` (default) the head is new; otherwise the source head is tuned (= ``ft_fc1``).
    The engine caches the frozen embedding once, so training touches only the head."""

    name = "linear_probe"
    description = "frozen source features, new linear head on the target labels"

    def __init__(self, net, reset_head: bool = True):
        super().__init__(net)
        if reset_head:
            net.reset_classifier(net.num_classes)

    def trainable_units(self):
        return [HEAD]


@register
class TwoStage(_TargetCE):
    """Seed 004 two-stage fine-tuning: stage 1 fine-tunes every unit (``ft_all``); stage 2
    freezes the fine-tuned features and trains a new linear head on them (linear probing).
    Reports ``stage1_val_accuracy``."""

    name = "two_stage"
    description = "fine-tune all units, then linear-probe a new head on the fine-tuned features (seed 004)"

    def __init__(self, net):
        super().__init__(net)
        self.stage = 1
        self._extra: dict = {}

    def trainable_units(self):
        return list(self.net.unit_names) if self.stage == 1 else [HEAD]

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        t0 = time.perf_counter()
        self.stage = 1
        first = make_engine("finetune").fit(self, target=target, val=val)
        self.stage = 2
        self.net.reset_classifier(self.net.num_classes)
        second = make_engine("probe").fit(self, target=target, val=val)
        self._extra = {"stage1_val_accuracy": first.val_accuracy}
        return FitResult(steps=first.steps + second.steps, best_step=second.best_step,
                         best_val_accuracy=second.best_val_accuracy, val_accuracy=second.val_accuracy,
                         stopped_early=second.stopped_early,
                         wall_s=time.perf_counter() - t0, history=first.history + second.history,
                         diverged=first.diverged or second.diverged)

    def extra_results(self):
        return dict(self._extra)
