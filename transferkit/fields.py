"""Typed dataclass fields: a config is checked the same way whether it comes from YAML
(:func:`from_dict`) or is made in Python (``check_fields`` in ``__post_init__``): scalar
fields are checked against their declared type (text is refused where a number is expected,
and a number where text is; the config loader reads YAML's unquoted ``1e-4`` as a number;
``int`` takes integral numbers only), and a dataclass field given as a mapping
is built from it, keeping that field's defaults for the keys it does not give."""

from __future__ import annotations

import dataclasses
import datetime
import numbers
import types
import typing

import numpy as np
import torch

from .errors import TransferkitError, UnknownNameError, check, is_whole


def check_fields(obj, where: str = "") -> None:
    """Check and convert every field of dataclass instance ``obj`` (a config's ``__post_init__``) in place (see
    the module)."""
    what = "config"
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = updated(_default(f), value, f"{where}{f.name}.", what)
        elif dataclasses.is_dataclass(hint):
            check(isinstance(value, hint), f"{what} {where}{f.name} must be a {hint.__name__} or a mapping of its "
                                           f"fields, got {type(value).__name__}")
        setattr(obj, f.name, plain(_typed(hint, value, f"{where}{f.name}", what)))


def plain(value):
    """``value`` with NumPy and torch scalars and arrays (also inside dicts, lists and tuples)
    turned into Python numbers and lists, so that a config made in Python (a sweep over
    ``numpy.linspace``) writes to YAML and digests like one read from YAML."""
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (set, frozenset)) and all(is_whole(v) for v in value):
        return sorted(int(v) for v in value)  # class ids: unordered, so in order (YAML cannot write a frozenset)
    return value


def from_dict(cls, data: dict, where: str = "", what: str = "config"):
    """Build dataclass ``cls`` from a mapping, recursing into dataclass-typed fields; ``what``
    names it in the errors (``"config"``, ``"bench flex plan"``)."""
    if not isinstance(data, dict):
        named = f"{what} {where.rstrip('.')}" if where else what
        raise TransferkitError(f"{named} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:  # a section's key given at this level (sampler for train.sampler) is named so
            sections = [name for name, f in fields.items() if dataclasses.is_dataclass(hints[name])
                        and key in {g.name for g in dataclasses.fields(hints[name])}]
            hint = (f"{key} belongs to the {' and '.join(sections)} section{'s' if len(sections) > 1 else ''}: "
                    f"write {' or '.join(f'{where}{s}.{key}' for s in sections)}, in YAML under "
                    f"{' / '.join(f'{s}:' for s in sections)}" if sections else "")
            raise UnknownNameError(f"{what} key", f"{where}{key}", [f"{where}{k}" for k in fields], hint)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            check(isinstance(value, dict), f"{what} {where}{key} must be a mapping of "
                                           f"{hint.__name__} fields, got {value!r}")
            value = updated(_default(fields[key]), value, f"{where}{key}.", what)
        kwargs[key] = _typed(hint, value, f"{where}{key}", what)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TransferkitError(f"bad {what}{(' ' + where.rstrip('.')) if where else ''}: {e}") from e
    except TransferkitError as e:  # a section's own check ("steps must be >= 1") names which section
        if not where:
            raise
        raise TransferkitError(f"{what} {where.rstrip('.')}: {e}") from e


def updated(default, changes: dict, where: str = "", what: str = "config"):
    """Dataclass instance ``default`` with the fields ``changes`` gives, built and checked by
    :func:`from_dict` (a config section given in part keeps the defaults of the rest)."""
    return from_dict(type(default), {**dataclasses.asdict(default), **changes}, where, what)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _typed(hint, value, name: str, what: str = "config"):
    """``value`` checked against a scalar field type (``int``, ``float``, ``bool``, ``str``,
    optionally ``| None``); other types pass through. ``int`` takes integral numbers; text is
    no number (``k: "5"``) and a number no text (``name: 1.10``, which YAML reads as 1.1):
    each is refused, as ``true`` is for a number (the config loader reads ``1e-4`` as a number)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    nullable, kinds = type(None) in args, [t for t in args if t is not type(None)]
    listed = list in kinds  # a number or a list of them (k: [1, 5]): the list's items are the field's to check
    if listed:
        kinds = [t for t in kinds if t is not list]
        if isinstance(value, (list, tuple)) or not all(t in (int, float) for t in kinds):
            return value  # a list, or a field of lists and text (a plan's targets: "all") that checks itself
    if not kinds or not all(t in (int, float, bool, str) for t in kinds):
        return value
    if value is None:
        check(nullable, f"{what} {name} may not be null")
        return None
    for t in kinds:
        if isinstance(value, t) and (t is bool or not isinstance(value, bool)):
            return value
        if t in (int, float) and isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                if t is float or float(value).is_integer():
                    return t(value)
            except OverflowError:  # a whole number beyond float's range (1 and 400 zeros)
                digits = int(int(value).bit_length() * 0.30103) + 1  # str() refuses ints above 4300 digits
                raise TransferkitError(f"{what} {name} must be a number within float's range (up to about "
                                       f"1.8e308), got a whole number of about {digits} digits") from None
    names = " or ".join(t.__name__ for t in kinds)
    wanted = names + (f" or a list of {names}s" if listed else "") + (" or null" if nullable else "")
    leaf = name.rsplit(".", 1)[-1]
    if str in kinds and isinstance(value, numbers.Real) and not isinstance(value, bool):
        raise TransferkitError(f"{what} {name} must be text, got the number {value!r} (YAML reads unquoted digits as "
                               f"a number): quote it as written ({leaf}: \"...\"), so that YAML keeps its text")
    if isinstance(value, str) and any(t in (int, float) for t in kinds):
        text = value.strip().strip("'\"")
        bracketed = listed and text.startswith("[") and text.endswith("]")
        numeric = lambda t: t != "" and not t.strip("-+.0123456789eE")  # noqa: E731
        parts = text.replace(",", " ").split()
        several = "," in text or (len(parts) > 1 and all(numeric(p) for p in parts))  # 1, 5 or 1 5 10
        number = numeric(text)
        how = ("the list without quotes" if bracketed else "a list in brackets" if listed and several
               else "one number, not a list" if several else "a number") + (
            " without quotes" if not bracketed and (value[:1] in "'\"" or number) else "")
        example = text if bracketed or number else f"[{', '.join(parts)}]" if listed and several else \
            "5" if int in kinds else "0.5"
        raise TransferkitError(f"{what} {name} must be {wanted}, got the text {value!r}: write {how}, e.g. {leaf}: "
                               f"{example}")
    if str in kinds and isinstance(value, (bool, datetime.date)):  # yes / on / 2026-12-05 unquoted
        raise TransferkitError(f"{what} {name} must be text, got {value!r} (YAML reads unquoted yes, no, on, off, "
                               f"true, false and dates as such): quote it as written ({leaf}: \"...\")")
    raise TransferkitError(f"{what} {name} must be {wanted}, got {value!r}")
