"""Cutting your own PyTorch modules into a :class:`~transferkit.unitnet.UnitNet`:
:func:`from_sequential` (an ``nn.Sequential``) and :func:`from_modules` (any
torchvision/timm-like model, units named by module paths), each checked to compute the
model's own function on a test batch, with the step that fails and its fix named.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .errors import TransferkitError, UnknownNameError, check, first_line, first_named, warn
from .unitnet import HEAD, UnitNet, evaluating


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
        got = "after the pool" if name == HEAD else "into the pool"
        return (f"{where} fails on what {last} gives (shape {shape} {got}) ({cause}): give "
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
            also = (f"; nor whether the modules it leaves out that may act in training ({first_named(acting)}) "
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
        except (RuntimeError, TypeError, IndexError, ValueError, TransferkitError) as e:
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
        named = first_named((f"{n!r} ({ran[n][0]!r}, {where(n)})" for n in acting), "module(s)", "; ")
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
    names = [n for n, _ in specs]  # a group's unit<k> or a path's x_y may be another unit's name
    check(len(set(names)) == len(names), f"duplicate unit names {names} (units {[g for _, g in specs]}): give the "
                                         f"units as a dict name -> module path(s) to name them yourself")
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
        if guessed and input_shape is None and not isinstance(model, nn.Sequential) \
                and not any(nn.parameter.is_lazy(p) for p in model.parameters()):
            warn(f"from_modules: {type(model).__name__} has no convolution to guess its input's shape from, so it is "
                 f"not checked that the units compute the model's function (code of its forward between modules, "
                 f"such as F.relu, would be lost); give input_shape=, the shape of one input ((C, H, W), or (16,) "
                 f"for a model of 16 features), to check it")
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
