"""Backbones cut into ordered, named **units** (seed 002 §3: ``N = N_L o ... o N_1``).

A unit is the granularity for fine-tuning, flex-tuning (tune one unit), layer tapping and
multi-layer discriminators. :class:`UnitNet` holds the feature units, a parameter-free
``pool`` that turns the last feature unit's output into an ``N x D`` embedding, and a
classifier ``head`` that is itself the last unit, named ``"head"``::

    x -> units[0] -> ... -> units[L-1] -> pool -> embedding (N x D) -> head -> logits

Besides the unit names, ``"embedding"`` names the pooled ``N x D`` activation.

Built-in backbones (:func:`build_backbone`): ``convnet4`` (seed 000 Table 4), ``lenet``
(seed 000 Table 7), ``convnet7`` (seed 002 §5.1) and ``resnet18`` (torchvision layout).
Any ``nn.Sequential`` or torchvision/timm-like model can be cut into units with
:func:`from_sequential` / :func:`from_modules`. torchvision is imported lazily and only by
:func:`load_torchvision_weights`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import re
from collections import OrderedDict
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .errors import TransferkitError, UnknownNameError, check, first_line, is_whole, warn
from .heads import HEADS, HeadRows, final_layer, make_head
from .registry import Registry

EMBEDDING = "embedding"
HEAD = "head"
ALL_UNITS = "all"


def _shape3(in_channels: int, image_size) -> tuple[int, int, int]:
    ok = isinstance(image_size, int) or (isinstance(image_size, (tuple, list)) and len(image_size) == 2
                                         and all(isinstance(s, int) for s in image_size))
    check(ok, f"image_size must be an int or a pair (H, W) of ints, got {image_size!r}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    check(is_whole(in_channels, 1), f"in_channels must be a whole number >= 1, got {in_channels!r}")
    check(min(h, w) >= 1, f"image_size must be >= 1, got {image_size!r}")
    return (int(in_channels), int(h), int(w))


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """Every submodule in eval mode inside the block; each gets its own mode back after it
    (``module.train(was)`` would also switch submodules a method keeps in eval mode)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


def reinitialise(module: nn.Module) -> nn.Module:
    """Fresh weights for ``module`` in place (each submodule's ``reset_parameters``, drawn from
    the current RNG). A parameter that no ``reset_parameters`` would redraw is refused by name."""
    redrawn = set()
    for m in module.modules():
        own = list(m.parameters(recurse=False))
        if own and callable(getattr(m, "reset_parameters", None)):
            redrawn.update(id(p) for p in own)
    kept = [n for n, p in module.named_parameters() if id(p) not in redrawn]
    check(not kept, f"cannot re-initialise {kept[:5]}: their modules have no reset_parameters")
    for m in module.modules():
        if next(m.parameters(recurse=False), None) is not None:
            m.reset_parameters()
    return module


class UnitNet(nn.Module):
    """A network cut into ordered, named units; the head is the last unit, ``"head"``.

    units: ordered mapping ``name -> module`` of feature units (names must not contain
        dots or colons nor be ``"head"``/``"embedding"``/``"all"``).
    head: classifier acting on the ``N x D`` embedding.
    pool: parameter-free module applied after the last feature unit to get the ``N x D``
        embedding; default ``nn.Flatten()`` (a no-op on ``N x D`` outputs).
    input_shape: ``(C, H, W)`` of one input, used by the dry run of :meth:`unit_output_shapes`.

    State-dict keys are ``units.<unit>.<...>`` and ``head.<...>``.
    """

    def __init__(self, units: Mapping[str, nn.Module] | Sequence[tuple[str, nn.Module]], head: nn.Module,
                 pool: nn.Module | None = None, name: str = "unitnet",
                 input_shape: Sequence[int] | None = None):
        super().__init__()
        units = OrderedDict(units)
        for n in units:
            check(isinstance(n, str) and n and "." not in n and ":" not in n and n not in (HEAD, EMBEDDING, ALL_UNITS),
                  f"invalid unit name {n!r}: names must be non-empty, without dots or colons, and not "
                  f"{HEAD!r}, {EMBEDDING!r} or {ALL_UNITS!r} (they name other things: 'all' every unit, "
                  f"'ft_unit:<unit>' and flex's 'image:<kind>' read what follows a colon)")
        pool = nn.Flatten(1) if pool is None else pool
        check(not any(True for _ in pool.parameters()), "the pool of a UnitNet must have no parameters")
        check(not any(True for _ in pool.buffers())
              and not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in pool.modules()),
              "the pool of a UnitNet must be stateless and the same in training and evaluation (no "
              "BatchNorm, no dropout): it belongs to no unit, so no method could freeze it; put such a "
              "layer in a unit")
        owner: dict = {}
        for n, m in [*units.items(), (HEAD, head)]:
            for p in m.parameters():
                other = owner.setdefault(id(p), n)
                check(other == n, f"units {other!r} and {n!r} share parameters (one module used in both): "
                                  f"tuning one unit would also change or freeze the other; give each its own "
                                  f"module (copy.deepcopy)")
        # registered directly so that the `units` property below can also show the head
        self._modules["units"] = nn.ModuleDict(units)
        self.pool = pool
        self.head = head
        self.name = name
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        #: ``input_shape`` is from_modules' guess (224 x 224), not the size the network was made for
        self.input_shape_guessed = False
        self._shapes: dict[str, tuple] | None = None

    # ---- names -----------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return list(self._modules["units"].keys())

    @property
    def unit_names(self) -> list[str]:
        """Feature unit names in order, then ``"head"``."""
        return self.feature_names + [HEAD]

    @property
    def units(self) -> nn.ModuleDict:
        """Read-only ordered view ``name -> module`` of all units, head included (assigning or
        deleting an entry is refused: it would change only the view)."""
        return _UnitsView([*self._modules["units"].items(), (HEAD, self.head)])

    def unit(self, name: str) -> nn.Module:
        if name == HEAD:
            return self.head
        feats = self._modules["units"]
        if name not in feats:
            raise UnknownNameError("unit", name, self.unit_names)
        return feats[name]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, units={self.unit_names}"

    # ---- forward ---------------------------------------------------------------------
    def _steps(self) -> list[nn.Module]:
        return list(self._modules["units"].values()) + [self.pool, self.head]

    def _end_step(self, name: str) -> int:
        """Index of the step whose output is the activation called ``name``."""
        L = len(self._modules["units"])
        if name == EMBEDDING:
            return L
        if name == HEAD:
            return L + 1
        return self._feature_index(name)

    def _feature_index(self, name: str) -> int:
        feats = self.feature_names
        if name not in feats:
            raise UnknownNameError("unit", name, self.unit_names + [EMBEDDING])
        return feats.index(name)

    def _boundary(self, where, is_start: bool) -> int:
        """Step index of a boundary given by unit name or index (see :meth:`forward_units`)."""
        L = len(self._modules["units"])
        if where is None:
            return L + 2 if not is_start else 0
        if isinstance(where, bool) or not isinstance(where, (int, str)):
            raise TransferkitError(f"unit boundaries are unit names or indices, got {where!r}")
        if isinstance(where, int):
            n = L + 1
            i = where + n if where < 0 else where
            check(0 <= i <= n, f"unit index {where} out of range for {n} units")
            if i == n:
                return L + 2
            where = self.unit_names[i]
        if where == HEAD:
            return L  # the input of the head is the last feature unit's output: pool first
        if where == EMBEDDING:
            return L + 1
        return self._feature_index(where)

    def _input_problem(self, x) -> str | None:
        """What is wrong with an input the first unit could not take, if it is the input."""
        if not isinstance(x, torch.Tensor):
            kind = type(x).__name__ if type(x).__module__ == "builtins" else f"{type(x).__module__}.{type(x).__name__}"
            return (f"takes a torch tensor N x C x H x W, got a {kind} (torch.as_tensor(x).float(), "
                    f"or Transfer.predict, which takes NumPy arrays)")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            return (f"got input of shape {tuple(x.shape)}; the network was built for N x "
                    f"{' x '.join(map(str, self.input_shape))}{self._activation_hint(tuple(x.shape[1:]))}")
        return None

    def _activation_hint(self, shape: tuple) -> str:
        """When ``shape`` is a unit's output (or the embedding): the likely cause, a method's
        ``losses`` running the whole network on the cached activations the engine hands over."""
        try:
            outputs = self.unit_output_shapes()
        except Exception:  # a network whose dry run fails has no hint to give
            return ""
        units = [n for n, s in outputs.items() if tuple(s) == shape and n != HEAD]
        if not units:
            return ""
        return (f". That is the shape of the output of {' / '.join(units)}: when a method trains only later "
                f"units, the engine hands its losses the cached activations of the frozen units before them, not "
                f"images; run them with self.forward_from_input(x) (or self.net.forward_units(x, "
                f"self.input_unit)), not self.net(x)")

    def _named_input_errors(self, run, x):
        try:
            return run()
        except torch.OutOfMemoryError:
            raise
        except (TypeError, RuntimeError) as e:
            problem = self._input_problem(x)
            if problem is None:
                raise
            raise TransferkitError(f"{self.name}: {problem} ({first_line(e)})") from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def run(h=x):
            for m in self._modules["units"].values():
                h = m(h)
            return self.head(self.pool(h))
        return self._named_input_errors(run, x)

    def forward_units(self, h: torch.Tensor, start: str | int = 0, stop: str | int | None = None):
        """Run units ``start`` (inclusive) to ``stop`` (exclusive; ``None``: through the head).

        ``h`` is the output of the unit before ``start`` (the image if ``start`` is the first
        unit), so ``forward_units(forward_units(x, 0, s), s) == forward(x)`` for every ``s``.
        The pool is applied when crossing into the head. ``"embedding"`` is also a valid
        boundary: as ``stop`` it returns the pooled ``N x D`` embedding, as ``start`` it takes
        the embedding and runs only the head. Integers index :attr:`unit_names`.
        """
        a, b = self._boundary(start, True), self._boundary(stop, False)
        check(a <= b, f"forward_units: start {start!r} comes after stop {stop!r}")
        for m in self._steps()[a:b]:
            h = m(h)
        return h

    def steps_before(self, stop: str | int) -> list[nn.Module]:
        """The modules ``forward_units(x, 0, stop)`` runs, in order (the pool included only
        when ``stop`` is ``"embedding"``)."""
        return self._steps()[:self._boundary(stop, False)]

    def forward_features(self, x: torch.Tensor, layers: Sequence[str] | str | None = None):
        """The ``N x D`` embedding (``layers=None``), or a dict ``name -> activation``.

        Names are unit names (``"head"`` gives the logits) or ``"embedding"``; only the units
        needed for the deepest requested layer are run.
        """
        if layers is None:
            return self._named_input_errors(lambda: self.forward_units(x, 0, EMBEDDING), x)
        return self._named_input_errors(lambda: self._activations(x, layers), x)

    def _activations(self, x: torch.Tensor, layers: Sequence[str] | str) -> dict[str, torch.Tensor]:
        names = [layers] if isinstance(layers, str) else list(layers)
        want: dict[int, list[str]] = {}
        for n in names:
            want.setdefault(self._end_step(n), []).append(n)
        out: dict[str, torch.Tensor] = {}
        if not want:
            return out
        last = max(want)
        for i, m in enumerate(self._steps()[: last + 1]):
            x = m(x)
            for n in want.get(i, ()):  # a copy when a later unit could change x in place (ReLU(inplace=True))
                out[n] = x if i == last or not isinstance(x, torch.Tensor) else x.clone()  # a tuple: as it is
        return {n: out[n] for n in names}

    # ---- sizes -----------------------------------------------------------------------
    def _ref_tensor(self) -> torch.Tensor:
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.zeros(())

    def unit_output_shapes(self, refresh: bool = False) -> dict[str, tuple]:
        """``name -> output shape`` (without batch dim) of every unit, plus ``"embedding"``.

        Computed once by a dry run in eval mode on ``input_shape`` and cached (``refresh``
        recomputes it, e.g. after replacing a feature unit).
        """
        if self._shapes is None or refresh:
            check(self.input_shape is not None,
                  f"{self.name}: unit_output_shapes needs input_shape=(C, H, W)")
            ref = self._ref_tensor()
            x = torch.zeros(1, *self.input_shape, device=ref.device, dtype=ref.dtype)
            try:
                with evaluating(self), torch.no_grad():
                    acts = self.forward_features(x, self.feature_names + [EMBEDDING])
            except RuntimeError as e:
                raise TransferkitError(f"{self.name}: the units do not fit input shape "
                                       f"{self.input_shape}: {e}") from e
            self._shapes = {n: tuple(a.shape[1:]) for n, a in acts.items()}
        shapes = {n: self._shapes[n] for n in self.feature_names}
        shapes[HEAD] = self._head_shape(self._shapes[EMBEDDING])
        shapes[EMBEDDING] = self._shapes[EMBEDDING]
        return shapes

    def _head_shape(self, embedding_shape: tuple) -> tuple:
        """The head's output shape: ``out_features``, else a dry run of the head alone (it may
        change, e.g. by :meth:`reset_classifier`, so it is not cached)."""
        n = getattr(self.head, "out_features", None)
        if isinstance(n, int) and n > 0:
            return (n,)
        ref = self._ref_tensor()
        with evaluating(self.head), torch.no_grad():
            out = self.head(torch.zeros(1, *embedding_shape, device=ref.device, dtype=ref.dtype))
        return tuple(out.shape[1:])

    @property
    def embed_dim(self) -> int:
        """Size D of the embedding (input of the head)."""
        d = getattr(self.head, "in_features", None)
        if isinstance(d, int) and d > 0:  # a lazy head reports 0 until it has seen an input
            return d
        return int(self.unit_output_shapes()[EMBEDDING][0])

    @property
    def num_classes(self) -> int:
        """Outputs of the head; 0 without a classifier (``reset_classifier(0)``)."""
        if isinstance(self.head, nn.Identity):
            return 0
        return int(self._head_shape((self.embed_dim,))[0])

    # ---- classifier ------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; a state saved with an :class:`InputNorm` first in the
        first unit (ImageNet weights) gives this net that normalisation first."""
        key = f"units.{self.unit_names[0]}.norm."
        if f"{key}mean" in state_dict and f"{key}mean" not in self.state_dict():
            mean, std = (state_dict[f"{key}{b}"].flatten().tolist() for b in ("mean", "std"))
            add_input_norm(self, mean, std)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def reset_classifier(self, num_classes: int, kind: str = "linear", **kw) -> nn.Module:
        """Replace the head by a fresh ``kind`` head (``linear``/``cosine``/``prototype``).
        ``num_classes=0`` removes the classifier, as in timm: the head becomes ``nn.Identity``,
        ``net(x)`` returns the ``N x D`` embedding and ``num_classes`` is 0."""
        check(is_whole(num_classes, 0), f"reset_classifier needs a whole num_classes >= 1, or 0 for no classifier, "
                                        f"got {num_classes!r}")
        if kind not in HEADS:
            raise UnknownNameError("head", kind, HEADS)
        hidden = hidden_layers(self.head)
        if hidden:
            what = "removes the classifier" if num_classes == 0 else f"puts a new {kind} head"
            warn(f"reset_classifier {what} on the {self.embed_dim}-d embedding (the head's input), so the layers of "
                 f"the old head before its final layer ({', '.join(hidden[:4])}{', ...' if len(hidden) > 4 else ''}) "
                 f"are dropped with their weights. To keep them as features, cut the network so that they end a "
                 f"feature unit (e.g. a unit 'fc1' = nn.Sequential(Linear, ReLU, ...)) and the head is the last "
                 f"linear layer alone")
        return self._new_classifier(num_classes, kind, **kw)

    def _new_classifier(self, num_classes: int, kind: str = "linear", **kw) -> nn.Module:
        """:meth:`reset_classifier` without its checks and warning."""
        ref = self._ref_tensor()
        if num_classes == 0:
            check(not kw, f"reset_classifier(0) removes the classifier and takes no head options, got {sorted(kw)}")
            self.head = nn.Identity()
            return self.head
        head = make_head(kind, self.embed_dim, num_classes, **kw).to(device=ref.device, dtype=ref.dtype)
        head.train(self.training)
        self.head = head
        return head

    # ---- freezing --------------------------------------------------------------------
    def _names(self, units) -> list[str]:
        if isinstance(units, str):
            units = self.unit_names if units == ALL_UNITS else [units]
        names = list(units)
        for n in names:
            if n != HEAD and n not in self._modules["units"]:
                raise UnknownNameError("unit", n, self.unit_names)
        return names

    def tunable_unit_names(self) -> list[str]:
        """The units that hold parameters, in order (a ReLU or pooling unit has none)."""
        return [n for n in self.unit_names if next(self.unit(n).parameters(), None) is not None]

    def parameters_of(self, units: Sequence[str] | str = "all") -> list[nn.Parameter]:
        """Parameters of the given units (``"all"``: every unit), in unit order, without duplicates."""
        wanted = set(self._names(units))
        seen, out = set(), []
        for n in self.unit_names:
            if n in wanted:
                for p in self.unit(n).parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
        return out

    def num_parameters(self, units: Sequence[str] | str = "all") -> int:
        return sum(p.numel() for p in self.parameters_of(units))

    def freeze(self, units: Sequence[str] | str = "all") -> None:
        """``requires_grad=False`` for the given units (BatchNorm running stats are not touched)."""
        for p in self.parameters_of(units):
            p.requires_grad_(False)

    def unfreeze(self, units: Sequence[str] | str = "all") -> None:
        for p in self.parameters_of(units):
            p.requires_grad_(True)

    def trainable_units(self, units: Sequence[str] | str) -> list[nn.Parameter]:
        """Make exactly ``units`` trainable (all others frozen); returns their parameters."""
        names = self._names(units)
        self.freeze("all")
        self.unfreeze(names)
        return self.parameters_of(names)


def hidden_layers(head: nn.Module) -> list[str]:
    """Names of the layers with parameters that ``head`` holds before its final one (the
    hidden layers of an MLP head), as ``"0: Linear(576 -> 128)"``; ``[]`` for a one-layer head."""
    head = head.head if isinstance(head, HeadRows) else head
    layers = [(n, m) for n, m in head.named_modules() if next(m.parameters(recurse=False), None) is not None]
    if len(layers) < 2:
        return []
    found = final_layer(head)
    last = found[1] if found is not None else layers[-1][1]

    def label(n, m):
        sizes = (f"({m.in_features} -> {m.out_features})" if isinstance(m, nn.Linear) else "")
        return f"{n or 'head'}: {type(m).__name__}{sizes}"
    return [label(n, m) for n, m in layers if m is not last]


class _UnitsView(nn.ModuleDict):
    def __init__(self, items):
        super().__init__()
        for name, module in items:
            self.add_module(name, module)
        self._read_only = True

    def _refuse(self, *args, **kwargs):
        raise TransferkitError("UnitNet.units is a read-only view: changing it would not change the network; "
                               "change a unit's modules in place (net.unit(name)), give a new head with "
                               "reset_classifier, or build a new UnitNet")

    def __setitem__(self, key, module):
        if getattr(self, "_read_only", False):
            self._refuse()
        super().__setitem__(key, module)

    __delitem__ = update = pop = clear = _refuse


# ---- small convnets --------------------------------------------------------------------

def _conv_unit(cin: int, cout: int, kernel: int = 3, pad: int = 1, bn: bool = True,
               pool: bool = True) -> nn.Sequential:
    """conv - [BN] - ReLU - [maxpool 2x2], computed as conv - [BN] - [maxpool] - ReLU: the
    ReLU is monotonic, so it commutes with the max; outputs and gradients are bit for bit
    those of the textbook order (tested) with a quarter of the ReLU's work (about 20 % of a
    lenet training step whose gradient reaches conv1, on CPU). Parameter keys are unchanged."""
    layers = [nn.Conv2d(cin, cout, kernel, padding=pad)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers += [nn.MaxPool2d(2), nn.ReLU()] if pool else [nn.ReLU()]
    return nn.Sequential(*layers)


def _dummy_pass(units: Mapping[str, nn.Module], input_shape: tuple) -> torch.Tensor:
    """The output of ``units`` in eval mode on one zero image of ``input_shape`` (RuntimeError
    when the input is too small for them)."""
    h = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for m in units.values():
            h = m.eval()(h)
    return h


def _smallest_size_hint(units: Mapping[str, nn.Module], input_shape: tuple, limit: int = 256) -> str:
    """``"; the smallest square input it takes is S x S"``, found by trying sizes up to ``limit``."""
    for size in range(min(input_shape[1:]) + 1, limit + 1):
        try:
            _dummy_pass(units, (input_shape[0], size, size))
        except RuntimeError:
            continue
        return (f"; the smallest square input it takes is {size} x {size} (image_size: {size} or more in a "
                f"config, domain.to_format(size={size}) in Python)")
    return ""


def _flat_dim(name: str, units: Mapping[str, nn.Module], input_shape: tuple) -> int:
    try:
        return _dummy_pass(units, input_shape)[0].numel()
    except RuntimeError as e:
        raise TransferkitError(f"{name}: input shape {input_shape} is too small for this backbone"
                               f"{_smallest_size_hint(units, input_shape)}") from e
    finally:
        for m in units.values():
            m.train()


def _fc_unit(din: int, dout: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Flatten(1), nn.Linear(din, dout), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def convnet4(num_classes: int, in_channels: int = 1, image_size=28) -> UnitNet:
    """Embedding net of seed 000 Table 4 (SVHN->MNIST), 5 feature units + head.

    Units ``conv1..conv4``: conv3x3x64 (pad 1) - BN - ReLU - maxpool 2x2; ``fc1``: flatten -
    Linear(->64) - ReLU; ``head``: Linear(64 -> num_classes). At 28x28 the four pools give
    1x1x64, so fc1 is 64x64 as in the table; otherwise its input size comes from a dry run.
    """
    shape = _shape3(in_channels, image_size)
    units = OrderedDict(conv1=_conv_unit(shape[0], 64), conv2=_conv_unit(64, 64),
                        conv3=_conv_unit(64, 64), conv4=_conv_unit(64, 64))
    units["fc1"] = _fc_unit(_flat_dim("convnet4", units, shape), 64)
    return UnitNet(units, make_head("linear", 64, num_classes), name="convnet4", input_shape=shape)


def lenet(num_classes: int, in_channels: int = 1, image_size=28) -> UnitNet:
    """ADDA's LeNet, seed 000 Table 7: conv-ReLU-maxpool units ``conv1``, ``conv2``, ``fc1``, head.

    ``conv1``: conv5x5x20 - ReLU - maxpool 2x2; ``conv2``: conv5x5x50 - ReLU - maxpool 2x2;
    ``fc1``: flatten - Linear(800 -> 500) - ReLU; ``head``: Linear(500 -> num_classes).
    Documented deviation: Table 7 prints conv2 as 5x5x20, but its fc1 is 800x500, which
    needs 50 channels (4*4*50 = 800 at 28x28, as in Caffe's LeNet used by ADDA); we use 50.
    """
    shape = _shape3(in_channels, image_size)
    units = OrderedDict(conv1=_conv_unit(shape[0], 20, kernel=5, pad=0, bn=False),
                        conv2=_conv_unit(20, 50, kernel=5, pad=0, bn=False))
    units["fc1"] = _fc_unit(_flat_dim("lenet", units, shape), 500)
    return UnitNet(units, make_head("linear", 500, num_classes), name="lenet", input_shape=shape)


def convnet7(num_classes: int, in_channels: int = 1, image_size=28, dropout: float = 0.0) -> UnitNet:
    """The "7 layers network (5 conv + 2 fc one-layer units)" of seed 002 §5.1.

    The paper gives no sizes; our choice: ``conv1..conv5`` are conv3x3 (pad 1) - BN - ReLU
    with 32, 32, 64, 64, 128 channels and a 2x2 max pool ending conv2, conv4 and conv5
    (28 px -> 3x3x128, 32 px -> 4x4x128); ``fc1``: flatten - Linear(->128) - ReLU
    (- Dropout(``dropout``), off by default); ``head``: Linear(128 -> num_classes).
    """
    shape = _shape3(in_channels, image_size)
    units = OrderedDict(conv1=_conv_unit(shape[0], 32, pool=False), conv2=_conv_unit(32, 32),
                        conv3=_conv_unit(32, 64, pool=False), conv4=_conv_unit(64, 64),
                        conv5=_conv_unit(64, 128))
    units["fc1"] = _fc_unit(_flat_dim("convnet7", units, shape), 128, dropout)
    return UnitNet(units, make_head("linear", 128, num_classes), name="convnet7", input_shape=shape)


# ---- ResNet-18 (torchvision layout) ----------------------------------------------------

def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same submodule names, so its weights load as is)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _res_layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes))


def resnet18(num_classes: int, in_channels: int = 3, image_size=224,
             small_input: bool | None = None) -> UnitNet:
    """ResNet-18 (seed 000 §b, torchvision layout): units ``stem``, ``layer1..layer4``, head.

    ``stem`` holds torchvision's ``conv1, bn1, relu, maxpool`` (conv7x7 s2 + maxpool 3x3 s2);
    ``small_input=True`` (default when ``image_size < 64``) uses a conv3x3 s1 and no maxpool,
    as CIFAR ResNets do. Pool: global average pool + flatten; head: Linear(512 -> num_classes).
    Weights are initialised as in torchvision (Kaiming-normal convs, BN = identity).
    """
    shape = _shape3(in_channels, image_size)
    if small_input is None:
        small_input = min(shape[1:]) < 64
    if small_input:
        conv1, maxpool = nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False), nn.Identity()
    else:
        conv1, maxpool = nn.Conv2d(shape[0], 64, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1)
    stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=nn.BatchNorm2d(64), relu=nn.ReLU(inplace=True),
                                     maxpool=maxpool))
    units = OrderedDict(stem=stem, layer1=_res_layer(64, 64, 1), layer2=_res_layer(64, 128, 2),
                        layer3=_res_layer(128, 256, 2), layer4=_res_layer(256, 512, 2))
    for m in units.values():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    net = UnitNet(units, make_head("linear", 512, num_classes), pool=pool, name="resnet18", input_shape=shape)
    net.small_input = bool(small_input)
    return net


def _torchvision_key(key: str) -> str:
    if key.startswith(("conv1.", "bn1.")):
        return "units.stem." + key
    if key.startswith("layer"):
        return "units." + key
    if key.startswith("fc."):
        return "head." + key[3:]
    return key


#: the per-channel input statistics torchvision's ImageNet weights were trained with
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class InputNorm(nn.Module):
    """``(x - mean) / std`` per channel, for weights trained on normalised images while
    transferkit's images are in [0, 1]. ``mean`` and ``std`` are buffers (saved with the net)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def add_input_norm(net: UnitNet, mean, std) -> InputNorm:
    """Put an :class:`InputNorm` first in ``net``'s first unit (an ``nn.Sequential``), as its
    child ``norm``; a net that has one keeps it."""
    name = net.unit_names[0]
    first = net.unit(name)
    check(isinstance(first, nn.Sequential), f"the first unit {name!r} must be an nn.Sequential to take an InputNorm")
    if isinstance(getattr(first, "norm", None), InputNorm):
        return first.norm
    ref = net._ref_tensor()  # the statistics in the net's dtype (a bf16 net refused float32 images)
    norm = InputNorm(mean, std).to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    net._modules["units"][name] = nn.Sequential(OrderedDict([("norm", norm), *first.named_children()]))
    return norm


def load_torchvision_weights(net: UnitNet, weights="IMAGENET1K_V1", normalize: bool = True) -> dict[str, list[str]]:
    """Load torchvision ResNet-18 weights into a :func:`resnet18` UnitNet.

    weights: a torchvision weights name (imports torchvision lazily, may download) or a
        state dict in torchvision's layout. ``fc`` goes to the head only if shapes match.
        For a 1-channel net the RGB ``conv1`` filters are summed over input channels.
    normalize: put the ImageNet input normalisation the weights expect first in the stem
        (:func:`add_input_norm`; images stay in [0, 1]). A 1-channel net uses the channel
        means of ``IMAGENET_MEAN`` / ``IMAGENET_STD`` (grey replicated to RGB, approximately).
    Returns ``{"loaded": [...], "skipped": [...]}`` (keys in ``net``'s layout).
    """
    if isinstance(weights, Mapping):
        sd = weights
    else:
        try:
            import torchvision
        except ImportError as e:
            raise TransferkitError("loading torchvision weights needs torchvision: "
                                   "pip install 'transferkit[vision]'") from e
        sd = torchvision.models.resnet18(weights=weights).state_dict()
    own = net.state_dict()
    check("units.stem.conv1.weight" in own and "units.layer4.1.bn2.weight" in own,
          f"load_torchvision_weights expects a resnet18 UnitNet, got {getattr(net, 'name', net)!r}")
    new, loaded, skipped = {}, [], []
    for k, v in sd.items():
        nk = _torchvision_key(k)
        if nk.startswith("head.") and (nk not in own or own[nk].shape != v.shape):
            skipped.append(nk)
            continue
        check(nk in own, f"unexpected torchvision key {k!r}: is this a ResNet-18 state dict?")
        if nk == "units.stem.conv1.weight" and own[nk].shape != v.shape:
            if own[nk].shape[1] == 1 and v.shape[1] == 3 and own[nk].shape[2:] == v.shape[2:]:
                v = v.sum(1, keepdim=True)
            else:
                raise TransferkitError(
                    f"stem conv1 has shape {tuple(own[nk].shape)} but the weights have {tuple(v.shape)}: "
                    "build resnet18 with small_input=False (7x7 stem) and 1 or 3 input channels")
        check(own[nk].shape == v.shape,
              f"shape mismatch for {nk}: {tuple(own[nk].shape)} vs {tuple(v.shape)}")
        new[nk] = v
        loaded.append(nk)
    missing = [k for k in own if k not in new and not k.startswith(("head.", "units.stem.norm."))]
    check(not missing, f"torchvision weights lack {missing[:5]}{'...' if len(missing) > 5 else ''}")
    net.load_state_dict(new, strict=False)
    if normalize:
        c = net.unit("stem").conv1.weight.shape[1]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ([sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3])
        add_input_norm(net, mean, std)
    return {"loaded": loaded, "skipped": skipped}


# ---- registry --------------------------------------------------------------------------

#: ``{name: builder}``; a plugin registers its own with ``BACKBONES["name"] = builder`` (a name
#: held by another builder, a built-in, is refused)
BACKBONES: dict[str, Callable[..., UnitNet]] = Registry("backbone", "choose another name for the builder", {
    "convnet4": convnet4, "lenet": lenet, "convnet7": convnet7, "resnet18": resnet18,
})


#: the names of the builders transferkit ships (BACKBONES refuses a plugin's builder under one)
BUILT_IN: frozenset[str] = frozenset(BACKBONES)


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def is_built_in(name: str) -> bool:
    """``name`` is registered with the builder transferkit ships (not a plugin's)."""
    return name in BUILT_IN


def definition_digest(net: torch.nn.Module) -> str:
    """A digest of a network's definition: its modules (``repr``, memory addresses left out) and the
    names and shapes of its parameters and buffers. A builder changed in place (another activation,
    other layer sizes) gives another digest; the weights do not count."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(net))
    shapes = [(n, list(t.shape)) for n, t in [*net.named_parameters(), *net.named_buffers()]]
    return hashlib.sha256(json.dumps([text, shapes]).encode()).hexdigest()[:16]


def check_unitnet(net, what: str) -> None:
    """Refuse a network that is no :class:`UnitNet` (what reads its units: ``fit(net=)``, tapping)."""
    check(isinstance(net, UnitNet),
          f"{what}: net must be a transferkit UnitNet (build_backbone(...), or backbones.from_sequential / "
          f"from_modules to cut your own module into units), got {type(net).__name__}")


def check_input_shape(net, images: torch.Tensor, what: str) -> None:
    """Images of the shape ``net.input_shape`` (when the network declares one)."""
    shape = getattr(net, "input_shape", None)
    check(shape is None or tuple(images.shape[1:]) == tuple(shape),
          f"{what}: images of shape {tuple(images.shape[1:])}, the network takes {shape and tuple(shape)}: convert "
          f"them to its shape (domain.to_format(size=..., channels=...))")


def check_backbone(name) -> None:
    """Refuse what names no registered backbone, after importing the modules of
    ``$TRANSFERKIT_PLUGINS``, which may register their own in :data:`BACKBONES`."""
    if not isinstance(name, str):
        raise TransferkitError(f"backbone must be the name of a registered backbone ({', '.join(sorted(BACKBONES))}), "
                               f"got a {type(name).__name__}; give your own network to fit(net=...) (cut into units "
                               f"with from_sequential / from_modules), or register a builder in BACKBONES")
    if name not in BACKBONES:
        from .methods.base import load_outside_families

        load_outside_families()
    if name not in BACKBONES:
        from .runtime import plugin_hint

        raise UnknownNameError("backbone", name, BACKBONES, plugin_hint("backbone"))


def build_backbone(name: str, num_classes: int, in_channels: int = 1, image_size=28,
                   head: str = "linear", **kw) -> UnitNet:
    """Build a registered backbone; ``head`` picks the classifier kind, ``kw`` go to the builder."""
    check_backbone(name)
    fn = BACKBONES[name]
    fixed = ("num_classes", "in_channels", "image_size")
    known = [p for p in inspect.signature(fn).parameters if p not in fixed]
    for k in kw:
        if k not in known:
            raise UnknownNameError(f"option of backbone {name!r}", k, known)
    net = fn(num_classes, in_channels=in_channels, image_size=image_size, **kw)
    _check_built(name, net, num_classes, in_channels, image_size)
    if not is_built_in(name):
        _check_runs(name, net, image_size)
    if head != "linear":
        net.reset_classifier(num_classes, head)
    return net


def known_outputs(net: UnitNet) -> int | None:
    """``net.num_classes``, or ``None`` where it takes a forward the network cannot run (a head
    without ``out_features`` on a network that declares no ``input_shape``)."""
    try:
        return net.num_classes
    except (TransferkitError, RuntimeError):
        return None


def _check_built(name: str, net, num_classes: int, in_channels: int, image_size) -> None:
    """Refuse what a builder (a plugin's) returns when it is no UnitNet, or ignores the arguments
    it was given: another number of outputs, or (when the network declares its ``input_shape``)
    other input channels. Another image size is left to :func:`_check_runs` (a network that pools
    globally takes other sizes; ``from_modules`` declares 224 x 224 unless told)."""
    check(isinstance(net, UnitNet), f"backbone builder {name!r} returned a {type(net).__name__}, not a transferkit "
                                    f"UnitNet: return one (from_modules / from_sequential cut a module into units)")
    outputs = known_outputs(net)
    check(outputs in (None, num_classes), f"backbone builder {name!r} returned a network with {outputs} outputs for "
                                  f"num_classes={num_classes}: give its head num_classes outputs (the builder "
                                  f"is called with the number of source classes)")
    channels = net.input_shape[0] if net.input_shape else in_channels
    check(channels == in_channels, f"backbone builder {name!r} returned a network for images of {channels} "
                                   f"channel(s) (its input_shape {net.input_shape}) for in_channels={in_channels}: "
                                   f"build it for the channels it is given (the config's channels)")


def _check_runs(name: str, net: UnitNet, image_size) -> None:
    """Refuse a builder's network that fails on images of the ``input_shape`` it declares (e.g. a
    fully connected layer sized for 28-pixel images in a network built for ``image_size`` 32): its
    jobs would each fail on a shape error. One forward of two blank images in eval mode, the random
    state kept; a network that declares no shape or has lazy parameters is left to the engine."""
    shape = net.input_shape
    if shape is None or getattr(net, "input_shape_guessed", False) or any(nn.parameter.is_lazy(p)
                                                                          for p in net.parameters()):
        return  # from_modules' guessed 224 x 224 binds nothing
    ref = next((t for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()), torch.zeros(()))
    try:
        with torch.random.fork_rng(devices=[]), evaluating(net), torch.no_grad():
            net(torch.zeros(2, *shape, dtype=ref.dtype, device=ref.device))
    except Exception as e:  # noqa: BLE001 -- whatever the user's module raises on the shape
        raise TransferkitError(f"backbone builder {name!r} returned a network that fails on the images it declares "
                               f"(input_shape {tuple(shape)}; the builder was given image_size={image_size}): "
                               f"{first_line(e)}. Build it for the image_size it is given (e.g. size its first "
                               f"fully connected layer from image_size), or set image_size to the size it takes"
                               ) from None


# ---- adapters --------------------------------------------------------------------------

def _merge(named: Sequence[tuple[str, nn.Module]]) -> nn.Module:
    if len(named) == 1:
        return named[0][1]
    return nn.Sequential(OrderedDict((n.replace(".", "_"), m) for n, m in named))


def _auto_name(k: int, group: Sequence[str]) -> str:
    if len(group) == 1 and not group[0].isdigit() and "." not in group[0]:
        return group[0]
    return f"unit{k + 1}"


def _failing_step(net: UnitNet, x: torch.Tensor, what: str, error: BaseException,
                  paths: Mapping[str, list[str]] | None = None) -> str:
    """Which step of ``net`` fails on ``x`` (that the model takes), and the likely cause and fix
    (``paths``: the model's module names listed for each unit)."""
    names = net.feature_names
    steps = [*((n, net.unit(n)) for n in names), ("the pool", net.pool), (HEAD, net.head)]
    h, failed = x, None
    for i, (_, module) in enumerate(steps):
        try:
            h = module(h)
        except Exception as e:  # noqa: BLE001 -- any error of a step is what the message names
            failed, error = i, e
            break
    cause = first_line(error)
    order = "list the modules its forward runs, in the order it runs them"
    if failed is None:  # a step that failed only when run as a whole
        return (f"{cause}; {order}, and give as pool= what runs between the last unit and the head (default "
                f"nn.Flatten())")
    name, module = steps[failed]
    shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
    if failed == 0 and names:
        return (f"the first unit {name!r} fails on it ({cause}): the model's forward changes its input before the "
                f"modules of {name!r} (a reshape, a normalisation), or runs other modules first; {order}")
    if failed >= len(names):  # the pool or the head
        where = "the head" if name == HEAD else f"the pool ({type(module).__name__})"
        last = f"the last unit {names[-1]!r}" if names else "the input"
        return (f"{where} fails on what {last} gives (shape {shape} after the pool) ({cause}): give "
                f"as pool= what the model's forward runs between the last unit and the head (default nn.Flatten(), "
                f"e.g. nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) for a ResNet), or list those modules in "
                f"the last unit or first in head=[...]; {order}")
    first = next((m for m in module.modules() if next(m.parameters(recurse=False), None) is not None), None)
    flat = (f"; its first layer, a {type(first).__name__}, gets a {len(shape)}-d map of shape {shape}: the model's "
            f"forward likely flattens it first (torch.flatten(x, 1), x.view(...))"
            if isinstance(first, nn.Linear) and isinstance(shape, tuple) and len(shape) > 2 else "")
    if what == "from_modules":
        mine = list((paths or {}).get(name, [])) or ["..."]
        listed = ", ".join(f'"{p}"' for p in ["flatten", *mine])
        modules = ", ".join(["nn.Flatten(1)", *(p if p == "..." else f"model.{p}" for p in mine)])
        fix = (f"Add that code to the model as a module and list it first in {name!r} (e.g. model.flatten = "
               f"nn.Flatten(1) and {name!r}: [{listed}]: from_modules runs the modules you list, whether forward "
               f"calls them or not), or build the UnitNet yourself with it (UnitNet({{..., {name!r}: "
               f"nn.Sequential({modules})}}, head=..., input_shape=...))")
    else:
        fix = "Put that step into the Sequential as a module (nn.Flatten(1)) where it runs"
    return (f"unit {name!r} fails on the output of unit {names[failed - 1]!r}, of shape {shape} ({cause}){flat}. "
            f"The UnitNet runs only the listed modules one after another, so code in the model's forward between "
            f"them is not run. {fix}; {order}")


def _acts_in_training(module: nn.Module, args: tuple, kwargs: dict, ref: torch.Tensor) -> bool:
    """``module`` (a copy of it: its buffers stay) gives another output on ``args`` in training mode
    than in eval mode, each run from the same random state."""
    probe = copy.deepcopy(module)

    def run(mode: bool):
        with torch.random.fork_rng(devices=[ref.device] if ref.device.type == "cuda" else []):
            torch.manual_seed(0)
            return probe.train(mode)(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
    try:
        with torch.no_grad():
            a, b = run(False), run(True)
    except Exception:  # noqa: BLE001 -- a module that cannot be run alone: nothing to tell
        return False

    def differ(u, v) -> bool:
        if isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor):
            return u.shape != v.shape or not torch.equal(u, v)
        if isinstance(u, (tuple, list)) and isinstance(v, (tuple, list)) and len(u) == len(v):
            return any(differ(p, q) for p, q in zip(u, v))
        return False
    return differ(a, b)


def _mode_dependent(module: nn.Module) -> bool:
    """A module that likely acts otherwise in training (dropout, drop-path, batch statistics)."""
    return any(isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm))
               or "drop" in type(m).__name__.lower() for m in module.modules())


def _check_same_function(model: nn.Module, net: UnitNet, what: str, guessed: bool = False,
                         listed: Sequence[tuple[str, str, nn.Module]] = (),
                         left_out: Sequence[tuple[str, nn.Module]] = ()) -> str:
    """Refuse ``net`` when it computes another function than ``model`` on one random batch of
    ``net.input_shape`` (eval mode, no_grad, a fixed generator; each call gets its own copy of
    the batch and the same random state, so a module that stays random in eval mode draws
    alike, and the global RNG is left as it was). Skipped when the model has lazy (not yet
    sized) parameters; skipped with a warning when ``model(x)`` fails (``guessed``: the shape
    is from_modules' guess, and the warning says to give ``input_shape=``) or returns anything
    but a tensor of ``net(x)``'s shape.

    ``left_out``: the model's modules in no unit, the head or the pool; ``listed``: ``(path,
    unit, module)`` of those that are. A left-out module that ``model.forward`` runs and that
    acts otherwise in training than in eval mode (a dropout, a drop-path, a batch norm), which
    the eval-mode comparison cannot see, is refused by name. Returns ``"compared"``, ``"model
    fails"`` (``model(x)`` raised) or ``"not compared"``."""
    params = [*model.parameters(), *net.parameters()]
    if net.input_shape is None or any(nn.parameter.is_lazy(p) for p in params):
        return "not compared"
    ref = next((t for t in [*params, *model.buffers()] if t.is_floating_point()), torch.zeros(()))
    x = torch.rand(2, *net.input_shape, generator=torch.Generator().manual_seed(0))
    x = x.to(device=ref.device, dtype=ref.dtype)

    def seeded(f):
        with torch.random.fork_rng(devices=[ref.device] if ref.device.type == "cuda" else []):
            torch.manual_seed(0)
            return f(x.clone())  # a forward that changes its input in place leaves x for the other
    order: list[str] = []  # listed and left-out modules in the order the model's forward starts them
    ran: dict[str, tuple] = {}  # left-out module -> (module, args, kwargs) of its first call

    def hook(name, module, keep):
        def pre(_, args, kwargs):
            order.append(name)
            if keep and name not in ran:
                ran[name] = (module, tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args),
                             dict(kwargs))
        return module.register_forward_pre_hook(pre, with_kwargs=True)
    with evaluating(model), evaluating(net), torch.no_grad():
        handles = [hook(p, m, False) for p, _, m in listed] + [hook(n, m, True) for n, m in left_out]
        try:
            want = seeded(model)
        except Exception as e:  # noqa: BLE001 -- another signature, or a shape the model does not take
            acting = [f"{n!r} ({type(m).__name__})" for n, m in left_out if _mode_dependent(m)]
            also = (f"; nor whether the modules it leaves out that may act in training ({', '.join(acting[:5])}) "
                    f"belong in a unit" if acting else "")
            if guessed:
                warn(f"{what}: could not check the cut at the guessed input shape {tuple(net.input_shape)} (without "
                     f"input_shape=, from_modules guesses 224 x 224 with the channels of the first convolution): "
                     f"model(x) fails on it ({first_line(e)}){also}. Give input_shape=(C, H, W) of your images to "
                     f"check that the units compute the model's function; the UnitNet declares no input shape")
            else:
                warn(f"{what}: could not check the cut: model(x) fails on a random input of shape {tuple(x.shape)} "
                     f"({first_line(e)}), so it is not checked that the units compute the model's function{also}")
            return "model fails"
        finally:
            for h in handles:
                h.remove()
        try:
            got = seeded(net)
        except (RuntimeError, TypeError, TransferkitError) as e:
            paths: dict[str, list[str]] = {}
            for p, u, _ in listed:
                paths.setdefault(u, []).append(p)
            raise TransferkitError(f"{what}: the units fail on an input of shape {tuple(x.shape)} that the model "
                                   f"takes: {_failing_step(net, x.clone(), what, e, paths)}") from e
    if not isinstance(want, torch.Tensor):
        warn(f"{what}: model(x) returns a {type(want).__name__}, not a tensor: not checked that the units compute "
             f"the model's function")
        return "not compared"
    if want.shape != got.shape:
        warn(f"{what}: model(x) returns shape {tuple(want.shape)}, the UnitNet {tuple(got.shape)}: not checked that "
             f"the units compute the model's function")
        return "not compared"
    diff = float((want.double() - got.double()).abs().max())
    tol = (1e-2 if ref.element_size() < 4 else 1e-4) * (1 + float(want.double().abs().max()))
    check(diff <= tol,
          f"{what}: the units compute another function than the model: max |model(x) - unitnet(x)| = {diff:.3g} "
          f"on a random input of shape {tuple(x.shape)} (tolerance {tol:.2g}). The UnitNet runs only the listed "
          f"modules one after another, then pool and head; code in the model's forward is lost (a residual add "
          f"x + block(x), a reshape, an op between two listed modules). List a module that contains that code "
          f"(the block whose forward holds the residual add), or wrap the code in an nn.Module and list it (as "
          f"pool= between the last unit and the head); a difference you mean (e.g. a final log_softmax left out "
          f"of the head): verify=False")
    acting = [n for n, (m, args, kwargs) in ran.items() if _acts_in_training(m, args, kwargs, ref)]
    if acting:
        unit_of = {p: u for p, u, _ in listed}

        def where(name):
            before = [p for p in order[:order.index(name)] if p in unit_of]
            if not before:
                return "runs before the first listed module"
            return f"runs after {before[-1]!r}" + ("" if unit_of[before[-1]] == before[-1] else
                                                   f", in unit {unit_of[before[-1]]!r}")
        named = "; ".join(f"{n!r} ({ran[n][0]!r}, {where(n)})" for n in acting[:5])
        raise TransferkitError(
            f"{what}: the cut leaves out module(s) that the model's forward runs and that act otherwise in training "
            f"than in eval mode: {named}. The check above compares in eval mode, where they make no difference, "
            f"but the UnitNet would train without them (no dropout, no drop-path, no batch statistics). List each "
            f"with the modules it runs between (e.g. at the end of the unit of the module before it; one that runs "
            f"between the last unit and the head first in head=[...]), or pass verify=False to leave them out on "
            f"purpose (that also skips the check above)")
    return "compared"


def from_sequential(seq: nn.Sequential, units=None, head_index: int = -1, pool: nn.Module | None = None,
                    input_shape: Sequence[int] | None = None, name: str = "sequential", verify: bool = True) -> UnitNet:
    """Cut an ``nn.Sequential`` into units (modules are shared, not copied).

    The head is child ``head_index`` together with any children after it (e.g. a trailing
    softmax); the children before it are the feature units, grouped by ``units``:
    ``None`` (each child is a unit), a list of group sizes (``[2, 2, 1]``), a list of lists of
    child names (``[["0", "1"], ["2"]]``, or their indices ``[[0, 1], [2]]``) or a dict
    ``unit name -> child name(s)``. Groups must cover the feature children in order. Without a
    dict, a unit of one child with a name of its own (an ``OrderedDict`` key that is not a
    number, e.g. ``"conv"``) is called after it; every other unit is ``unit<k>``, ``k`` its
    position among the units counted from 1 (named ones included). So with ``units=None`` and
    a plain ``nn.Sequential(...)``, whose children are named ``"0", "1", ...``, ``unit8`` is
    child ``"7"`` (``seq[7]``), and with ``units=[2, 3]`` ``unit2`` holds children 2-4.
    With ``input_shape`` and the default ``pool``, the UnitNet is checked to compute ``seq(x)``
    on one random batch, as in :func:`from_modules` (``verify=False``: not checked).
    """
    check(isinstance(seq, nn.Sequential),
          f"from_sequential cuts an nn.Sequential, whose forward runs its children in order; got a "
          f"{type(seq).__name__}, whose forward may run them in another order or with code between them: use "
          f"from_modules(model, units=[...], head=...) to list its modules in the order its forward runs them")
    children = [(n, m) for n, m in seq._modules.items() if m is not None]  # a module used twice counts twice
    check(len(children) >= 1, "from_sequential needs a non-empty nn.Sequential")
    h = head_index + len(children) if head_index < 0 else head_index
    check(0 <= h < len(children), f"head_index {head_index} out of range for {len(children)} children")
    feats, head_children = children[:h], children[h:]
    child_names = [n for n, _ in feats]
    if units is None:
        groups = [[n] for n in child_names]
    elif isinstance(units, Mapping):
        groups = [[g] if isinstance(g, (str, int)) else list(g) for g in units.values()]
    elif all(isinstance(u, int) for u in units):
        check(all(u > 0 for u in units) and sum(units) == len(child_names),
              f"unit sizes {list(units)} must be positive and sum to the {len(child_names)} feature children")
        ends = [sum(units[: i + 1]) for i in range(len(units))]
        groups = [child_names[e - s:e] for s, e in zip(units, ends)]
    else:
        groups = [[g] if isinstance(g, str) else list(g) for g in units]
    groups = [[str(n) for n in g] for g in groups]  # child indices may be given as numbers
    flat = [n for g in groups for n in g]
    check(flat == child_names,
          f"unit groups {groups} must list the feature children {child_names} once each, in order")
    names = list(units) if isinstance(units, Mapping) else [_auto_name(k, g) for k, g in enumerate(groups)]
    check(len(set(names)) == len(names), f"duplicate unit names {names}")
    mods = dict(feats)
    body = OrderedDict((n, _merge([(c, mods[c]) for c in g])) for n, g in zip(names, groups))
    net = UnitNet(body, _merge(head_children), pool=pool, name=name, input_shape=input_shape)
    if pool is None and verify:  # a pool of one's own is a step the Sequential has not
        _check_same_function(seq, net, "from_sequential")
    return net


def from_modules(model: nn.Module, units, head: str | Sequence[str], pool: nn.Module | None = None,
                 input_shape: Sequence[int] | None = None, name: str | None = None, verify: bool = True) -> UnitNet:
    """Cut a torchvision/timm-like model into units by (dotted) attribute names; modules are shared.

    units: a list of attribute names (an entry may be a list of names merged into one
        ``nn.Sequential``), or a dict ``unit name -> attribute name(s)``, e.g.
        ``{"stem": ["conv1", "bn1", "relu", "maxpool"], "layer1": "layer1", ...}``.
    head: attribute name(s) of the classifier (several: an MLP head, whose final linear layer
        gets the target classes' rows while its hidden layers keep their weights).
        Functional code in ``model.forward`` (e.g. ``torch.flatten``) is not captured: between
        the last unit and the head give it as ``pool`` (default ``nn.Flatten()``), e.g.
        ``nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())`` for a ResNet; between two
        units add it to the model as a module (``model.flatten = nn.Flatten(1)``) and list it.
    input_shape: ``(C, H, W)`` of one input; default: a guess, the channels of the first
        convolution at 224 x 224 (a torchvision/timm ImageNet model), ``None`` without a
        convolution. A guessed shape binds nothing: ``Transfer.fit`` takes the images' size
        when the network takes it (the engine takes other sizes when the model can); when
        ``model(x)`` fails at the guess (a fully-connected layer sized for smaller images), a
        warning says the cut is not checked and the UnitNet declares no input shape.

    With an input shape, ``model(x)`` and the UnitNet are compared on one random batch (eval
    mode, no gradients, a fixed generator): a cut that computes another function (code in
    ``forward`` between or around the listed modules, such as a residual add) is refused with
    the largest difference, and so is a cut that leaves out a module the model's forward runs
    and that acts otherwise in training (a dropout, a drop-path), which eval mode cannot show.
    The check is skipped, with a warning, when ``model(x)`` fails or does not return a tensor
    of the UnitNet's output shape (a dict, a tuple); it is skipped for lazy parameters, and with
    ``verify=False`` (a difference one means, e.g. a final ``log_softmax`` left out of the head).
    Forward hooks of the model's modules run during the check.
    """
    known = [n for n, _ in model.named_modules() if n]

    def get(path: str) -> nn.Module:
        try:
            return model.get_submodule(path)
        except AttributeError:
            raise UnknownNameError("module", path, known) from None

    def group(spec) -> list[str]:
        return [spec] if isinstance(spec, str) else list(spec)

    if isinstance(units, Mapping):
        specs = [(n, group(s)) for n, s in units.items()]
    else:
        specs = []
        for k, s in enumerate(units):
            g = group(s)
            specs.append((g[0].replace(".", "_") if len(g) == 1 else f"unit{k + 1}", g))
    used = [p for _, g in specs for p in g] + group(head)
    check(len(set(used)) == len(used), f"a module is used twice in units/head: {used}")
    body = OrderedDict((n, _merge([(p, get(p)) for p in g])) for n, g in specs)
    head_mod = _merge([(p, get(p)) for p in group(head)])
    guessed = input_shape is None
    if guessed:  # was (3, 224, 224) whatever the model took: a 1-channel model refused its images
        conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)  # the model's first
        input_shape = (conv.in_channels, 224, 224) if isinstance(conv, nn.Conv2d) else None
    net = UnitNet(body, head_mod, pool=pool, name=name or type(model).__name__.lower(), input_shape=input_shape)
    net.input_shape_guessed = guessed and input_shape is not None
    if verify:
        listed = [(p, n, get(p)) for n, g in specs for p in g] + [(p, HEAD, get(p)) for p in group(head)]
        checked = _check_same_function(model, net, "from_modules", guessed=net.input_shape_guessed, listed=listed,
                                       left_out=_left_out(model, [m for _, _, m in listed] + [net.pool], listed))
        if net.input_shape_guessed and checked == "model fails":
            net.input_shape, net.input_shape_guessed = None, False  # the model does not take the guess
    return net


def _left_out(model: nn.Module, used: list[nn.Module], listed) -> list[tuple[str, nn.Module]]:
    """The model's modules in none of ``used`` (units, head, pool) and holding none of them,
    outermost only: what a cut leaves out (a forgotten dropout; an auxiliary head; a pooling
    layer that ``pool=`` replaces)."""
    inside = {id(s) for m in used for s in m.modules()}
    holders = {".".join(p.split(".")[:k]) for p, _, _ in listed for k in range(len(p.split(".")))}
    out = [(n, m) for n, m in model.named_modules() if n and id(m) not in inside and n not in holders]
    names = {n for n, _ in out}
    return [(n, m) for n, m in out if ".".join(n.split(".")[:-1]) not in names]
