"""The :class:`Method` contract between a transfer method and the engine.

A method wraps a :class:`~transferkit.backbones.UnitNet` and declares:

* ``streams``: which batches it needs: ``"source"`` (labelled source), ``"target"``
  (labelled target), ``"unlabeled"`` (unlabelled target);
* ``trainable_units()``: which units of the network it trains (the others are frozen:
  ``requires_grad`` off and run in eval mode, so their weights and BatchNorm statistics
  stay bit-identical);
* ``param_groups()``: optimiser groups, with an optional ``lr_mult`` (slower units) and
  ``beta1`` (Adam's first-moment decay for the group, e.g. ADDA's 0.5; ignored by SGD);
* ``losses(batch)``: a dict of named loss terms; the engine sums them, logs each one and
  back-propagates.

Everything else (sampling, optimiser, schedule, early stopping, checkpoints) belongs to
:class:`~transferkit.engine.Engine`. A new method is one subclass in one file, registered
with :func:`register`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import itertools
import math
import numbers
import re
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import UnitNet
from ..distributed import all_reduce_mean, world_size
from ..domain import check_memory, image_batch
from ..errors import TransferkitError, UnknownNameError, UnknownOptionError, check, ignored, is_whole
from ..evaluate import chunk_rows, predict_logits
from ..frozen import frozen_activations, hooked
from ..registry import Registry, qualified_name
from ..runtime import OUT_OF_MEMORY, import_plugins, plugin_hint

#: ``{name: method class}``; a name held by another class (a built-in) is refused. The families of modules
#: outside this package (represent's cat_two_stage and distill) and plugins register on the first lookup:
#: read the whole list with :func:`list_methods`
METHODS: dict[str, type["Method"]] = Registry("method", "choose another `name` for the class",
                                              home="transferkit.methods.base.METHODS")
#: parameterised method families: ``"prefix:arg"`` -> ``PREFIXES[prefix](arg)`` (e.g. ``ft_unit:conv2``)
PREFIXES: dict[str, Callable[[str], type["Method"]]] = Registry("method prefix", "choose another prefix")


def register(cls: type["Method"]) -> type["Method"]:
    """Register method class ``cls`` under ``cls.name`` (a name another class holds is refused,
    as is a class that sets no name of its own: it would take its parent's)."""
    check("name" in vars(cls), f"{cls.__module__}.{cls.__qualname__} sets no name of its own (it would register as "
                               f"its parent's {cls.name!r}): set name = '...' in the class")
    METHODS[cls.name] = cls
    return cls


def register_prefix(prefix: str):
    """Register ``factory(arg) -> Method subclass`` for names ``"<prefix>:<arg>"``."""
    def wrap(factory: Callable[[str], type["Method"]]):
        PREFIXES[prefix] = factory
        return factory
    return wrap


#: families that live outside this package (they build on the experiment runner) and
#: register their methods when imported; :func:`get_method` imports them on demand
OUTSIDE_FAMILIES = ("transferkit.zeroshot", "transferkit.clip", "transferkit.represent")


def load_outside_families() -> None:
    """Import the outside families and the user's modules named in ``$TRANSFERKIT_PLUGINS``
    (comma-separated module names, e.g. ``my_methods``: methods defined outside the package,
    available to ``transferkit run`` and to worker processes, which inherit the variable)."""
    for module in OUTSIDE_FAMILIES:
        importlib.import_module(module)
    import_plugins()


def get_method(name) -> type["Method"]:
    """The method class registered as ``name`` (a registered class itself is accepted too)."""
    if isinstance(name, type) and issubclass(name, Method):
        newer = METHODS.get(name.name)
        check(newer is None or newer is name or qualified_name(newer) != qualified_name(name),
              f"method class {qualified_name(name)} is an older definition: a newer class named {name.name!r} was "
              f"registered since (a re-run notebook cell?): give the name, {name.name!r}, or the new class")
        check(newer is name or _from_prefix(name),
              f"method class {qualified_name(name)} is not registered under its name {name.name!r}: decorate it "
              f"with @register (from transferkit.methods.base), or give a registered method's name")
        return name
    check(isinstance(name, str), f"a method is given by its name (or a registered Method class), got {name!r}")
    if name not in METHODS:
        load_outside_families()
    if name in METHODS:
        return METHODS[name]
    prefix, sep, arg = name.partition(":")
    if sep and prefix in PREFIXES and arg:
        return PREFIXES[prefix](arg)
    unregistered = [c for c in _subclasses(Method) if c.name == name]
    hint = (f"class {qualified_name(unregistered[0])} has that name but is not registered: decorate it with "
            f"@register" if unregistered else plugin_hint("method"))
    raise UnknownNameError("method", name, list(METHODS) + [f"{p}:<arg>" for p in PREFIXES], hint)


def _from_prefix(cls) -> bool:
    """Whether ``cls`` is the class its ``prefix:arg`` name gives (a family's factory caches its classes)."""
    prefix, sep, arg = str(cls.name).partition(":")
    return bool(sep and arg) and cls.name not in METHODS and prefix in PREFIXES and PREFIXES[prefix](arg) is cls


def _subclasses(cls) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in [sub, *_subclasses(sub)]]


def method_doc(cls) -> str:
    """The docstring of method class ``cls`` or of its nearest transferkit base ('' if none: not nn.Module's)."""
    for klass in cls.__mro__:
        doc = klass.__dict__.get("__doc__")
        if doc and (klass is cls or klass.__module__.startswith("transferkit.")):
            return inspect.cleandoc(doc)
    return ""


@torch.no_grad()
def precompute(forward: Callable[[torch.Tensor], object], inputs: torch.Tensor, limit_mb: float = 2048,
               chunk: int | None = None):
    """``forward`` over ``inputs`` in chunks of ``chunk`` rows (by default
    :func:`~transferkit.evaluate.chunk_rows`), concatenated (a tensor, or a dict of tensors);
    ``None`` when the result would take more than ``limit_mb`` (estimated from the first chunk)."""
    chunk = chunk_rows(inputs) if chunk is None else chunk
    parts = [forward(inputs[:chunk])]
    first = parts[0] if isinstance(parts[0], dict) else {"": parts[0]}
    if sum(v[0].numel() * v.element_size() for v in first.values()) * len(inputs) > limit_mb * 2**20:
        return None
    parts += [forward(inputs[i:i + chunk]) for i in range(chunk, len(inputs), chunk)]
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _recording_options(init):
    """Wrap a method class's ``__init__`` so that the outermost call keeps the options it was
    given (but the network), by name, without those left at their defaults and without
    ``not_trained_options``, as ``init_options``: the engine's checkpoint signature includes
    them, so a checkpoint trained with one setting is never resumed under another."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        kwargs = _typed_numbers(type(self), kwargs, floats=False)
        if "init_options" not in self.__dict__:  # the outermost __init__ of a subclass chain
            _check_option_values(type(self).name, _options(init, (), self, *args, **kwargs), _switches(type(self)),
                                 type(self))
            options = _options(init, type(self).not_trained_options, self, *args,
                               **_typed_numbers(type(self), kwargs))  # 5 and 5.0 of a float: one signature
            object.__setattr__(self, "init_options", options)
        init(self, *args, **kwargs)
    return __init__


_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?")


def _typed_numbers(cls, kwargs: dict, floats: bool = True) -> dict:
    """Options given as text that spells a number (PyYAML reads ``1e-3`` as text: YAML 1.1
    wants ``1.0e-3``) become that number when their parameter is annotated ``float`` (or
    ``int``, for a whole number); any other text stays text. A whole float given for an ``int``
    becomes the int (``hidden: 100.0``, as ``train.steps: 2.0``), and with ``floats`` an int given
    for a ``float`` becomes the float (``scale: 5`` is ``5.0``: one job digest for both spellings;
    left out where an error should show the value as given)."""
    out = dict(kwargs)
    for name, value in kwargs.items():
        text = isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip())
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (text or number):
            continue
        param = _inherited_parameter(cls, name)
        hint = "" if param is None or param.annotation is inspect.Parameter.empty else str(param.annotation)
        if re.search(r"\b(str|list|tuple|dict|Sequence|Any)\b", hint):  # text or containers are welcome as given
            continue
        is_float, is_int = (re.search(rf"\b{t}\b", hint) is not None for t in ("float", "int"))
        if number:
            if floats and is_float and not is_int and isinstance(value, int):
                out[name] = float(value)
            elif is_int and not is_float and isinstance(value, float) and value.is_integer():
                out[name] = int(value)
            continue
        try:
            if is_float:
                out[name] = float(value)
            elif is_int:
                whole = re.fullmatch(r"\s*[-+]?[0-9][0-9_]*\s*", value)
                out[name] = int(value) if whole else int(float(value)) if float(value).is_integer() else value
        except ValueError:  # e.g. "1__0": not a number after all
            pass
    return out


#: option names whose values are weights of loss terms (numbers >= 0) or sizes, scales and
#: rates (numbers > 0; whole numbers for the sizes), checked for every method by name (also
#: by pattern: ``*weight`` >= 0, ``*lr_mult`` and ``tau*`` > 0)
_NONNEGATIVE = ("alpha", "beta", "gamma", "margin", "triplet_warmup", "metric_ce", "source_entropy", "target_entropy")
_POSITIVE = ("c", "scale", "query_scale", "temperature", "lr")  # and the patterns *lr_mult, tau*
_COUNTS = {"hidden": 1, "depth": 1, "dim": 1, "workers": 1, "n": 1, "tail_depth": 0}  # whole numbers >= these
#: options that take one of a few names, the same in every method that has them
_CHOICES = {"lr_schedule": ("constant", "cosine", "dann", None), "lambda_schedule": ("dann", "constant"),
            "optimizer": ("adam", "sgd", None), "combine": ("sum", "concat"),
            "discriminator": ("auto", "fc", "conv"), "scaling": ("channel", "kernel")}


def _switches(cls) -> set[str]:
    """Names of the options of ``cls`` (:func:`method_options`) that default to ``True`` or ``False``."""
    return {name for name, default in method_options(cls).items() if isinstance(default, bool)}


def _check_option_values(method: str, options: dict, switches: set[str] = frozenset(), cls=None) -> None:
    """Refuse option values outside their domain, named (see ``_NONNEGATIVE`` and friends;
    ``switches``: options that must be true or false), and, given the method class ``cls``,
    values that do not fit their parameter's simple annotation (:func:`_simple_types`)."""
    flat = {}
    for name, value in options.items():  # **options passed on to a parent __init__ arrive as one dict
        param = None if cls is None else _inherited_parameter(cls, name)
        passed_on = isinstance(value, dict) and (param is None or param.kind is inspect.Parameter.VAR_KEYWORD)
        flat.update(value if passed_on else {name: value})  # not a dict-valued option (clip's captions by class)
    for name, value in flat.items():
        null = _null_hint(value, None if cls is None else _inherited_parameter(cls, name))
        check(name not in switches or isinstance(value, bool),
              f"{method}: option {name} must be true or false, got {value!r}{null}")
        if name in _CHOICES:
            check(value in _CHOICES[name], f"{method}: option {name} must be one of "
                                           f"{', '.join('null' if c is None else str(c) for c in _CHOICES[name])}, "
                                           f"got {value!r}{null}")
        if value is None:
            continue
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if name in _COUNTS:
            check(is_whole(value, _COUNTS[name]),
                  f"{method}: option {name} must be a whole number >= {_COUNTS[name]}, got {value!r}")
        elif name in getattr(cls, "unit_interval_options", ()):
            check(number and 0 < value <= 1, f"{method}: option {name} must be a number in (0, 1], got {value!r}")
        elif name in _POSITIVE or name.endswith("lr_mult") or name.startswith("tau"):
            check(number and 0 < value < math.inf,
                  f"{method}: option {name} must be a finite number > 0, got {value!r}{null}")
        elif name.endswith("weight") or name in _NONNEGATIVE:
            check(number and 0 <= value < math.inf,
                  f"{method}: option {name} must be a finite number >= 0, got {value!r}{null}")
    for name, value in flat.items() if cls is not None else ():
        param = _inherited_parameter(cls, name)
        kinds = None if param is None else _simple_types(param.annotation)
        null = _null_hint(value, param)
        check(not kinds or any(_fits(value, kind) for kind in kinds),
              f"{method}: option {name} must be {' or '.join(_KIND_WORDS[k] for k in kinds or ())}, got {value!r}"
              f"{null}")


def _null_hint(value, param: inspect.Parameter | None = None) -> str:
    """What to write for null, where a config gave the text 'None' (YAML reads None as text);
    for an option whose parameter ``param`` takes no null, to leave it out instead."""
    if not (isinstance(value, str) and value.strip().lower() == "none"):
        return ""
    takes_none = param is None or param.default is None or "None" in (_simple_types(param.annotation) or ["None"])
    return (" (YAML's null is `null` or `~`; None is the text 'None')" if takes_none else
            " (None is the text 'None'; this option takes no null: leave it out for its default)")


_KIND_WORDS = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text", "None": "null",
               "list[str]": "a list of texts"}


def _simple_types(annotation) -> list[str] | None:
    """The kinds (``float``, ``int``, ``bool``, ``str``, ``list[str]``, ``None``) an annotation made only of
    these allows (``float | None``, ``Optional[int]``, ``str | list[str]``...); None for any other (left unchecked)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
    text = re.sub(r"\s", "", text)
    inner = re.fullmatch(r"(Optional|Union)\[(.*)\]", text)
    kinds = inner[2].split(",") + (["None"] if inner[1] == "Optional" else []) if inner else text.split("|")
    kinds = ["None" if k == "NoneType" else k for k in kinds]
    return kinds if all(k in _KIND_WORDS for k in kinds) else None


def _fits(value, kind: str) -> bool:
    """``value`` is of ``kind`` (a whole number is a number; true or false is neither)."""
    if kind == "None" or value is None:
        return kind == "None" and value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list[str]":  # a tuple or a 1-d NumPy array of texts as well, from Python
        listed = isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)
        return listed and all(isinstance(v, str) for v in value)
    return isinstance(value, numbers.Integral if kind == "int" else numbers.Real) and not isinstance(value, bool)


def _options(init, skip: tuple[str, ...], *args, **kwargs) -> dict:
    """The options of the call ``init(*args, **kwargs)`` (``args[0]`` is the method, ``args[1]``
    the network) by name, leaving out ``skip`` and those equal to their defaults."""
    try:
        bound = inspect.signature(init).bind(*args, **kwargs)
    except TypeError:  # __init__ itself will name the problem
        return {}
    params = inspect.signature(init).parameters
    out = {}
    for name, value in list(bound.arguments.items())[2:]:  # self, net
        if name in skip or _is_default(value, params[name].default):
            continue
        if params[name].kind is inspect.Parameter.VAR_KEYWORD:  # **options passed on to a parent __init__
            value = _without_defaults(type(args[0]), value, skip)
        out[name] = value
    return {k: v for k, v in out.items() if not (isinstance(v, dict) and not v)}


def option_choices(option: str) -> tuple | None:
    """The names an option takes in every method that has it (``lr_schedule``, ...), or None."""
    return _CHOICES.get(option)


def method_options(cls) -> dict:
    """``{option: default}`` of method class ``cls`` (or its name): the parameters of its ``__init__`` after
    the network, and, where it passes ``**options`` on, those of the parents it passes them to
    (the nearest default wins). ``inspect.Parameter.empty`` marks an option without default."""
    if isinstance(cls, str):
        cls = get_method(cls)
    out: dict = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is nn.Module:
            continue
        params = list(inspect.signature(init).parameters.values())[2:]  # self, net
        for p in params:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def list_methods() -> dict[str, str]:
    """``{name: description}`` of every registered method (the families outside
    :mod:`transferkit.methods` included), as ``transferkit methods`` lists them;
    :func:`method_options` gives a method's options and defaults."""
    load_outside_families()
    return {name: cls.description for name, cls in sorted(METHODS.items())}


def check_options(cls, options: dict) -> None:
    """Refuse an option that method class ``cls`` does not take, listing those it does (a
    class from outside transferkit whose ``__init__`` takes ``**kwargs`` is not checked)."""
    init = inspect.signature(cls.__init__).parameters.values()
    if not cls.__module__.startswith("transferkit.") and any(p.kind is p.VAR_KEYWORD for p in init):
        return
    known = method_options(cls)
    unknown = [k for k in options if k not in known]
    from ..engine import TrainConfig  # (the engine imports this module)
    budget = sorted(set(unknown) & {f.name for f in dataclasses.fields(TrainConfig)})
    verb = "is a training setting" if len(budget) == 1 else "are training settings"
    check(not budget, f"method {cls.name!r}: {', '.join(budget)} {verb}, not a method option: in Python "
                      f"Transfer(..., train=TrainConfig({budget[0] if budget else ''}=...)), in a config "
                      f"train: {{{budget[0] if budget else ''}: ...}}")
    labels = sorted(set(unknown) & {"k", "ratio", "repeats", "seed", "val_per_class"})
    check(not labels, f"method {cls.name!r}: {', '.join(labels)} {'is' if len(labels) == 1 else 'are'} no method "
                      f"option but a setting of a run's config (transferkit run: k: 5, repeats: 3); in Python, draw "
                      f"the labelled subset yourself, labelled, rest = sample_k_shot(domain, k, seed) "
                      f"(transferkit.splits), and fit on it (Transfer(...).fit(target=labelled))")
    check(not unknown or known, f"method {cls.name!r} takes no options, got {unknown}")
    if unknown:
        raise UnknownOptionError(cls.name, unknown[0], known)


def check_option_values(cls, options: dict) -> None:
    """Refuse option values of method class ``cls`` outside their domain or of the wrong simple
    type, or other than the value its name fixes, without building the method (as building it
    would: numbers given as text read as numbers)."""
    options = _typed_numbers(cls, dict(options), floats=False)
    _check_option_values(cls.name, options, _switches(cls), cls)
    check_fixed_options(cls, options)


def check_fixed_options(cls, options: dict) -> None:
    """Refuse a value other than the one method class ``cls``'s name fixes (``fixed_options``;
    None, the default, is that value)."""
    for option, (value, refusal) in cls.fixed_options.items():
        given = options.get(option)
        check(given is None or (given == value and isinstance(given, bool) == isinstance(value, bool)),
              refusal.format(name=cls.name, given=given))


def resolved_options(cls, options: dict | None) -> dict:
    """Every option of method class ``cls`` with the value a run used (given, else the default),
    as a results row records it; a value that is not plain data (a long list, a matrix) is
    recorded as its kind and size."""
    given = _typed_numbers(cls, dict(options or {}))
    out = {}
    for name, default in method_options(cls).items():
        value = given.get(name, default)
        if value is inspect.Parameter.empty:
            continue
        plain = value is None or isinstance(value, (bool, int, float, str))
        short = isinstance(value, (list, tuple)) and len(value) <= 20 and all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value)
        out[name] = value if plain else list(value) if short else f"<{type(value).__name__} of {len(value)}>" \
            if hasattr(value, "__len__") else f"<{type(value).__name__}>"
    return out


def trained_options(cls, options: dict | None, typed: bool = True) -> dict:
    """``options`` of method class ``cls`` as its checkpoint signature counts them: numbers
    given as text read as numbers, and (``typed``) of their parameters' types, without
    ``not_trained_options`` and those equal to their defaults."""
    return _without_defaults(cls, _typed_numbers(cls, dict(options or {}), floats=typed), cls.not_trained_options)


def number_spellings(cls, options: dict | None, most: int = 6) -> list[dict]:
    """``options`` of method class ``cls`` with each whole number of a ``float`` option
    spelled both ways (``1`` and ``1.0``): every form rows of earlier versions, which hashed
    numbers as written, may have counted. Past ``most`` such options, all one way or the other."""
    options = dict(options or {})
    typed = _typed_numbers(cls, options)
    whole = [k for k, v in typed.items()
             if isinstance(v, float) and v.is_integer() and not isinstance(options[k], str)]
    if not whole:
        return [options]
    picks = itertools.product((int, float), repeat=len(whole)) if len(whole) <= most else \
        ((int,) * len(whole), (float,) * len(whole))
    return [{**options, **{k: kind(typed[k]) for k, kind in zip(whole, pick)}} for pick in picks]


def _without_defaults(cls, options: dict, skip: tuple[str, ...]) -> dict:
    """``options`` of method class ``cls`` without ``skip`` and those equal to their (inherited) defaults."""
    return {k: v for k, v in options.items() if k not in skip and not _is_default(v, _inherited_default(cls, k))}


def _inherited_parameter(cls, name: str) -> inspect.Parameter | None:
    """Parameter ``name`` of the nearest ``__init__`` of ``cls``'s bases that declares it."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and name in inspect.signature(init).parameters:
            return inspect.signature(init).parameters[name]
    return None


def _inherited_default(cls, name: str):
    """The default of ``name`` in the nearest ``__init__`` of ``cls``'s bases that declares it."""
    param = _inherited_parameter(cls, name)
    return inspect.Parameter.empty if param is None else param.default


def _is_default(value, default) -> bool:
    if value is default:
        return True
    if default is inspect.Parameter.empty or isinstance(value, torch.Tensor) or \
            isinstance(value, bool) != isinstance(default, bool):  # True is no default of 1.0
        return False
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        value, default = list(value), list(default)
    try:
        return bool(value == default)
    except Exception:  # e.g. arrays, whose == is elementwise
        return False


def within_memory(method: str, build: Callable, **options):
    """``build()`` (modules, or a tuple of them), refused first where their weights in float32 would not fit
    in this machine's memory, naming ``options`` (the values that size them, ``hidden=...``): it is run
    first on the meta device, which allocates nothing and warns nothing, with the random numbers restored after."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"), ignored():  # the real build gives them
        probe = build()
    weights = sum(p.numel() for m in (probe if isinstance(probe, tuple) else (probe,)) for p in m.parameters())
    given = ", ".join(f"{k}={v}" for k, v in options.items())
    check_memory(4 * weights, f"{method}: the modules sized by {given} ({weights:,} weights in float32, before "
                              f"gradients and optimiser state)", f"choose a smaller {' or '.join(options)}")
    return build()


class Method(nn.Module):
    name = "method"
    streams: tuple[str, ...] = ("target",)
    #: start from the pre-trained source network (otherwise from a fresh initialisation)
    needs_pretrained = True
    #: the engine may cache activations of the frozen leading units
    cache_frozen_prefix = True
    #: built while the network still has its source head (it keeps a copy of the source
    #: network); the head is given the target classes afterwards
    built_before_retarget = False
    #: predicts with the network's head trained on the source classes (the target classes
    #: are its rows of the same names); ``None``: when the method has no ``target`` stream.
    #: Zero-shot methods, which score class descriptions, set ``False``.
    source_head: bool | None = None
    min_labels_per_class: int = 1  # labelled target images per class the method needs (checked before a run)
    min_classes: int = 1  # classes a labelled target must hold (tap's linear classifiers: 2)
    needs_validation = False  # it selects on a labelled validation set (the flex family)
    selects_on_validation = True  # early stopping / selection reads a validation split given (matching nets: no)
    file_options: tuple = ()  # options naming a file the method reads (clip's captions_file): its contents key jobs
    picks_unit = False  # it picks a unit on the validation split (the flex family, tap)
    needs_every_class = False  # it classifies by each target class's labelled mean (prototypes, centroids)
    #: trains a fixed set of units without the head (a head row of a new target class would stay random)
    keeps_head_fixed = False
    description = ""
    #: constructor options that do not change what is trained (left out of ``init_options``)
    not_trained_options: tuple[str, ...] = ()
    #: options only the Python API reads (a run's rows and files do not): a run config that sets one is warned
    api_only_options: tuple[str, ...] = ()
    #: bumped when a default changes what the method trains; a nonzero revision enters the
    #: checkpoint signature and the job digest, so rows and checkpoints of the older form are
    #: refused on resume instead of mixed with new ones (``revision_note`` says what changed)
    revision: int = 0
    revision_note: str = ""
    #: options that must lie in (0, 1] (the multi-layer discriminator's decay ``gamma``)
    unit_interval_options: tuple[str, ...] = ()
    #: options whose value the method's name fixes, ``{option: (value, refusal)}`` (``ft_fc1``'s
    #: ``n``): another value is refused before any work with ``refusal`` (formatted with ``name``
    #: and ``given``), and ``transferkit methods`` marks them
    fixed_options: dict = {}
    #: the values of ``self.stage`` its training stages run under, in order, where ``fit_transfer`` trains in several
    #: (``TwoStageTranslation``: ``(1, 2)``, its translator first); ``(None,)``: one stage, ``stage`` not set. The
    #: pre-flight of :func:`~transferkit.preflight.check_own_modules_take` runs ``losses`` under each
    training_stages: tuple = (None,)
    #: what the method adds to its network that a network file (the backbone's state_dict, load_network) cannot
    #: describe (ft_ss's scale-and-shift modules): its jobs save no network file, only the pickled model
    adds_to_network: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_options(cls.__dict__["__init__"])

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.input_unit = net.unit_names[0]
        self.input_cache: dict = {}
        #: the outputs the engine's validation accuracy compares with the labels (``None``: all);
        #: set while a source-head method trains on a target-class validation set
        self.eval_rows: list[int] | None = None
        self.__dict__.setdefault("init_options", {})  # a class without its own __init__ has no options

    # ---- declared by subclasses -----------------------------------------------------
    @property
    def predicts_with_net(self) -> bool:
        """Whether ``self.net(images)`` alone gives this method's predictions (its ``forward`` is
        the base one): what :func:`~transferkit.networks.save_network` and an export of the
        network keep. Methods that score prototypes, centroids, support sets, taps or class
        descriptions beside the network return False."""
        return type(self).forward is Method.forward

    def predictor_parts(self) -> str:
        """What besides the network makes the predictions (named where ``predicts_with_net`` is False)."""
        extra = [n for n, _ in self.named_children() if n != "net"] + [n for n, b in self.named_buffers()
                                                                       if "." not in n and b.numel()]
        return ", ".join(extra) or "state held outside the network"

    def head_has_new_rows(self, classes: list[str]) -> None:
        """Called before training when the head has (untrained) rows for target ``classes``
        the source head lacks; a method that would leave them untrained adapts here."""

    def trainable_units(self) -> list[str]:
        return list(self.net.unit_names)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.net.parameters_of(self.trainable_units())]}]

    def losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def prepare(self, domains: dict) -> None:
        """Called once before training, with the stream domains; freezes the units that
        are not trained. Subclasses that add modules may extend it."""
        trainable = set(self.trainable_units())
        for name in self.net.unit_names:
            for p in self.net.unit(name).parameters():
                p.requires_grad_(name in trainable)

    @classmethod
    def check_data(cls, target=None, val=None) -> None:
        """Refuse, before any pre-training, labelled data the method cannot fit: a labelled
        ``target`` with fewer than ``min_labels_per_class`` images in a class or fewer than
        ``min_classes`` classes, a class without an image for a method that
        ``needs_every_class``, or no ``val`` for a method that ``needs_validation``.
        ``transferkit run`` calls it for every label subset, ``Transfer.fit`` for its domains."""
        check(not cls.needs_validation or (val is not None and len(val) > 0),
              "it selects on a labelled validation set and none is given (select_on: target_val in a run; in Python "
              "fit(val=...): with a few labels per class and a test set of your own, split = "
              "transferkit.splits.split_domain(target, test_fraction=0) gives split.train for target= and split.val "
              "for val=)")
        if "target" not in cls.streams or target is None:
            return
        counts = target.class_counts()
        missing = [n for n, c in zip(target.class_names, counts.tolist()) if c == 0]
        check(not cls.needs_every_class or not missing,
              f"it classifies by the mean of each target class's labelled images; {target.name!r} has none of "
              f"class(es) {missing[:10]}")
        present = counts[counts > 0]
        check(len(present) >= cls.min_classes, f"it needs labelled target images of at least {cls.min_classes} "
                                               f"classes; {target.name!r} has {len(present)}")
        fewest = int(present.min()) if len(present) else 0
        check(fewest >= cls.min_labels_per_class,
              f"it needs at least {cls.min_labels_per_class} labelled target images per class; "
              f"{target.name!r} has {fewest} in its smallest class (raise k)")

    @classmethod
    def predicts_with_source_head(cls) -> bool:
        return "target" not in cls.streams if cls.source_head is None else bool(cls.source_head)

    def cache_inputs(self, inputs: dict[str, torch.Tensor]) -> dict:
        """Called by the engine once per fit, after it has built its streams, with the whole
        input tensor of each stream that the fit will draw in full at least once (``steps x
        batch_size >= len``: caching a larger stream would cost more forward passes than it
        saves), on the training device, in the training layout. A method returns what
        depends only on frozen modules and these inputs (e.g. a fixed source network's
        features, see :func:`precompute`); the engine keeps it in ``self.input_cache`` during
        the fit, and ``losses`` takes a batch's rows with :meth:`cached_rows`. The default
        caches nothing."""
        return {}

    def cache_stream(self, inputs: dict, key: str, forward: Callable, fixed: nn.Module,
                     stream: str = "source") -> dict:
        """``{key: forward over inputs[stream]}`` with the fixed module ``fixed`` in eval mode
        (:func:`precompute`), the usual body of :meth:`cache_inputs`; ``{}`` when the stream is
        not given or the result would exceed the memory limit."""
        if stream not in inputs:
            return {}
        fixed.eval()
        value = precompute(forward, inputs[stream])
        return {} if value is None else {key: value}

    def cached_rows(self, key: str, idx: torch.Tensor | None, compute: Callable[[], object]):
        """Rows ``idx`` of ``self.input_cache[key]`` (a tensor or a dict of tensors), or
        ``compute()`` when nothing is cached (``losses`` called outside the engine, or a
        cache over the memory limit)."""
        value = self.input_cache.get(key)
        if value is None or idx is None:
            return compute()
        return {k: v[idx] for k, v in value.items()} if isinstance(value, dict) else value[idx]

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        """Train for transfer and return the :class:`~transferkit.engine.FitResult`.

        The default is one engine run. Methods made of several trainings (two-stage
        fine-tuning, flex-tuning's candidates, ADDA's two steps) override it and call
        ``make_engine(tag)`` for each stage: each tag gets its own checkpoint directory,
        so an interrupted stage resumes on its own."""
        return make_engine("main").fit(self, source=source, target=target, unlabeled=unlabeled, val=val)

    def spawned_workers(self) -> int:
        """The worker processes its fit starts, each sent a copy of its network (flex's ``workers``
        option); 1: none, it trains in this process."""
        return 1

    def extra_results(self) -> dict:
        """Extra fields for this method's results row (e.g. the unit flex-tuning picked)."""
        return {}

    def test_results(self, test) -> dict:
        """Extra fields of a run's row measured on its ``test`` split once the method is fitted and
        scored (tap: every unit's and classifier's test accuracy); the default, none."""
        return {}

    def after_step(self, batch) -> None:
        """Hook after each optimiser step (e.g. target-encoder updates)."""

    def max_cache_unit_index(self) -> int:
        """Index of the latest unit the engine may start from; methods that need the
        activations of earlier units lower it."""
        return len(self.net.unit_names) - 1

    def frozen_prefix_end(self) -> str | None:
        """Where the frozen leading units end: the first unit the method trains (capped by
        :meth:`max_cache_unit_index`), or ``"embedding"`` (the pooled ``N x D``, not the last
        map) when only the head trains; ``None`` when the first unit trains or the method
        opts out (``cache_frozen_prefix``)."""
        names = self.net.unit_names
        if not self.cache_frozen_prefix:
            return None
        trainable = set(self.trainable_units())
        first = next((i for i, n in enumerate(names) if n in trainable), len(names) - 1)
        first = min(first, self.max_cache_unit_index())
        if first == 0:
            return None
        return "embedding" if names[first] == "head" else names[first]

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``self(images)`` in eval mode, in chunks. A method that predicts with the network
        (the base ``forward``, UnitNet's ``forward`` and ``forward_units``, no hook on either) reads the activations
        of its frozen leading units from :mod:`transferkit.frozen` when the same units ran on
        the same images before (the linear probes of several label subsets score one test
        split), and stores them otherwise; bit-identical either way. ``images``: N x C x H x W
        floats in [0, 1] or uint8 (a NumPy array too), refused with a named error otherwise."""
        images = image_batch(images, "logits", getattr(self.net, "input_shape", None))
        self.eval()
        net, stop = self.net, self.frozen_prefix_end()
        if stop is None or type(self).forward is not Method.forward or not self.plain_net("forward", "forward_units"):
            return self.sized(lambda: predict_logits(self, images), images)
        return self.sized(lambda: frozen_activations(net, images, stop, then=lambda h: net.forward_units(h, stop)),
                          images)

    def sized(self, score: Callable[[], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """``score()``; when it fails on images of another size than the network was built
        for (e.g. a Linear layer built for the flattened map of 28 x 28 inputs), a named error."""
        shape = getattr(self.net, "input_shape", None)
        try:
            return score()
        except (RuntimeError, TransferkitError) as e:
            cause = e.__cause__ if isinstance(e, TransferkitError) else e  # a UnitNet's named input error
            if not isinstance(cause, RuntimeError) or shape is None or tuple(images.shape[1:]) == tuple(shape) \
                    or isinstance(cause, OUT_OF_MEMORY) or "memory" in str(cause):
                raise
            raise TransferkitError(f"logits: the network was built for {tuple(shape)} images and fails on "
                                   f"{tuple(images.shape[1:])} ({str(cause).splitlines()[0]}): resize them") from cause

    def plain_net(self, *entry_points: str) -> bool:
        """``self.net`` is a :class:`UnitNet` whose ``entry_points`` (method names) are UnitNet's
        own and no hook sits on ``self`` or ``self.net``: what those compute may be read from
        :mod:`transferkit.frozen` instead of running ``self``."""
        net = self.net
        return (isinstance(net, UnitNet) and all(getattr(type(net), n) is getattr(UnitNet, n) for n in entry_points)
                and not hooked(self, net))

    # ---- shared machinery -------------------------------------------------------------
    def train_mode(self) -> None:
        self.train()
        trainable = set(self.trainable_units())
        for name in self.net.unit_names:
            if name not in trainable:
                self.net.unit(name).eval()
        for child in self.children():  # a fixed network beside net (a teacher, a source copy) stays in eval
            params = list(child.parameters())
            if child is not self.net and params and not any(p.requires_grad for p in params):
                child.eval()

    def forward_from_input(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from a batch as the engine hands it over (images, or the cached
        activation of the last frozen unit)."""
        return self.net.forward_units(x, self.input_unit)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def classifier_input(self, images: torch.Tensor) -> torch.Tensor:
        """``N x D`` features of a batch of images as this method's classifier reads them
        (``Transfer.transform``); the default, the network's pooled embedding
        (``net.forward_features``). A method whose classifier reads other features (tap: a
        tapped unit's) overrides it and :attr:`classifier_input_dim`."""
        return self.net.forward_features(images)

    @property
    def classifier_input_dim(self) -> int:
        """``D`` of :meth:`classifier_input`."""
        return self.net.embed_dim

    def check_source(self, splits: list) -> None:
        """Refuse, before a run's first job, what in this method (its options) does not fit the
        source's ``splits`` (train, val, test); the default checks nothing (clip checks its captions file)."""

    def check_classes(self, source_classes, target_classes) -> None:
        """Refuse, before any training, source or target classes (lists of class names, ``None``:
        no such domain) that this method, as its options built it, cannot score; the default checks
        nothing (attribute_zsl and embedding_zsl: class ids past the rows of an unnamed matrix)."""

    def supervised(self, pair, stream: str = "target") -> torch.Tensor:
        """The cross-entropy of a labelled ``(x, y)`` batch of ``stream`` (:meth:`cross_entropy`)."""
        x, y = pair
        return self.cross_entropy(self.forward_from_input(x), y, stream)

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor, stream: str = "target") -> torch.Tensor:
        """``F.cross_entropy``, weighted per class when the fit's ``class_weight`` is ``balanced``
        (the engine's ``class_weights`` of ``stream``; PyTorch's weighted mean: the sum of weight x loss
        over the batch divided by the batch's sum of weights). Under torchrun the sum of weights is
        the whole batch's, over every process's shard, so that the processes' averaged gradients are
        those of one process's weighted mean over the whole batch."""
        weight = getattr(self, "class_weights", {}).get(stream)
        if weight is None:
            return F.cross_entropy(logits, labels)
        weight = torch.cat([weight, weight.new_ones(max(0, logits.shape[1] - len(weight)))])[:logits.shape[1]]
        weight = weight.to(device=logits.device, dtype=logits.dtype)
        if world_size() == 1:
            return F.cross_entropy(logits, labels, weight=weight)
        # world x (shard's weighted sum) / (batch's sum of weights): the sum over the batch is world x the mean
        return F.cross_entropy(logits, labels, weight=weight, reduction="sum") / all_reduce_mean(weight[labels].sum())
