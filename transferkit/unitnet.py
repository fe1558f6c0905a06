"""The :class:`UnitNet`: a network cut into ordered, named **units** (seed 002 §3:
``N = N_L o ... o N_1``), the pooled embedding and the classifier ``head``, and what works
on any such network (eval-mode blocks, re-initialisation, an input normalisation unit).
Built-in networks and the registry: :mod:`transferkit.backbones`; cutting your own
modules: :mod:`transferkit.adapters`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .errors import TransferkitError, UnknownNameError, check, first_line, first_named, is_whole, warn
from .heads import HEADS, HeadRows, final_layer, make_head
from .runtime import OUT_OF_MEMORY

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
    check(not kept, f"cannot re-initialise [{first_named(map(repr, kept))}]: their modules have no reset_parameters")
    for m in module.modules():
        if next(m.parameters(recurse=False), None) is not None:
            m.reset_parameters()
    return module


#: timm's global_pool values, which a UnitNet's reset_classifier refuses by name (it keeps its own pool)
TIMM_POOLS = ("", "avg", "max", "avgmax", "catavgmax", "fast", "token", "map", "avgmaxc")


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

    #: per-sample shapes of the cached activations of a frozen prefix that the engine hands a
    #: method's losses while it trains (none of them an image shape): :meth:`forward` refuses an
    #: input of one of them, which ``self.net(x)`` would run through the frozen units once more
    activation_shapes: frozenset = frozenset()

    def __init__(self, units: Mapping[str, nn.Module] | Sequence[tuple[str, nn.Module]], head: nn.Module,
                 pool: nn.Module | None = None, name: str = "unitnet",
                 input_shape: Sequence[int] | None = None):
        super().__init__()
        if not isinstance(units, Mapping):  # pairs: a name given twice would keep only its last module
            units = list(units)
            names = [pair[0] if isinstance(pair, (tuple, list)) and pair else None for pair in units]
            twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
            check(twice is None, f"UnitNet: unit name {twice!r} is given twice (units "
                                 f"{' and '.join(str(i + 1) for i, n in enumerate(names) if n == twice)}); names must "
                                 f"be unique (a repeated name keeps only the last module)")
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
        except OUT_OF_MEMORY:
            raise
        except (TypeError, RuntimeError) as e:
            problem = self._input_problem(x)
            if problem is None:
                raise
            raise TransferkitError(f"{self.name}: {problem} ({first_line(e)})") from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and tuple(x.shape[1:]) in self.activation_shapes:
            built = f"; the network was built for N x {' x '.join(map(str, self.input_shape))}" \
                if self.input_shape is not None else ""
            raise TransferkitError(
                f"{self.name}: got input of shape {tuple(x.shape)}{built}. That is the shape of the output of the "
                f"frozen units, the cached activations the engine hands a method's losses when it trains only later "
                f"units, not images: run them with self.forward_from_input(x) (or self.net.forward_units(x, "
                f"self.input_unit)), not self.net(x), which would run the frozen units on them once more")

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
        """The modules ``forward_units(x, 0, stop)`` runs, in order (the pool included when
        ``stop`` is ``"embedding"`` or past the head; a unit name, ``"head"`` too, stops before it)."""
        return self._steps()[:self._boundary(stop, False)]

    def forward_features(self, x: torch.Tensor, layers: Sequence[str] | str | None = None):
        """The ``N x D`` embedding (``layers=None``), or a dict ``name -> activation``.

        Names are unit names (``"head"`` gives the logits) or ``"embedding"``; only the units
        needed for the deepest requested layer are run.
        """
        if layers is None:
            return self._named_input_errors(lambda: self.forward_units(x, 0, EMBEDDING), x)
        return self._named_input_errors(lambda: self._activations(x, layers), x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head on ``x``, the ``N x D`` embedding :meth:`forward_features` gives (timm's
        split: ``forward_head(forward_features(x)) == forward(x)``); ``pre_logits=True`` returns
        the embedding itself (the pool is part of :meth:`forward_features`, so there is nothing
        between it and the head)."""
        return x if pre_logits else self.head(x)

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
                  f"{self.name}: unit_output_shapes needs input_shape=(C, H, W), which the network does not "
                  f"declare: give it when cutting the network (from_sequential / from_modules(..., input_shape=("
                  f"in_channels, image_size, image_size)) in a backbone builder), or set net.input_shape")
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
    def num_features(self) -> int:
        """timm's name for :attr:`embed_dim`: the size D of the embedding the head reads."""
        return self.embed_dim

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

    def reset_classifier(self, num_classes: int, kind: str = "linear", *, global_pool: str | None = None,
                         **kw) -> nn.Module:
        """Replace the head by a fresh ``kind`` head (``linear``/``cosine``/``prototype``).
        ``num_classes=0`` removes the classifier, as in timm: the head becomes ``nn.Identity``,
        ``net(x)`` returns the ``N x D`` embedding and ``num_classes`` is 0. ``global_pool`` is
        timm's keyword, taken so that timm-style calls work: ``None``, the network's own pooling
        (its ``pool``) kept, is the only value honoured; any other is refused, saying why."""
        check(is_whole(num_classes, 0), f"reset_classifier needs a whole num_classes >= 1, or 0 for no classifier, "
                                        f"got {num_classes!r}")
        keep = ("leave it out (None keeps the network's pooling), or build the UnitNet with the pool you want "
                "(UnitNet(..., pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())), from_modules(..., pool=)); "
                "unpooled features: net.forward_features(x, layers=[net.unit_names[-1]])")
        check(global_pool is None, f"reset_classifier(global_pool={global_pool!r}): a UnitNet keeps the pooling it "
                                   f"was built with ({type(self.pool).__name__}), which the embedding and the "
                                   f"cached features are computed with, so it cannot change it here: {keep}")
        check(kind in HEADS or kind not in TIMM_POOLS,
              f"reset_classifier({num_classes!r}, {kind!r}): the second argument of UnitNet.reset_classifier is "
              f"the head kind ({', '.join(HEADS)}), not timm's global_pool; a UnitNet keeps the pooling it was "
              f"built with: {keep}")
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
