"""Experiment configuration: plain dataclasses, with YAML mapped onto them.

Unknown keys are errors that name the key and the known ones; ``--set a.b=value``
overrides are parsed as YAML scalars (``train.steps=100``, ``methods=[finetune]``). A
section given in part (``train: {lr: 0.01}``) keeps the field's own defaults for the rest,
and scalar values are checked against the field's type (``1e-4``, which YAML reads as a
string, is taken as a number where a number is expected).
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .engine import ADDED_TRAIN_FIELDS, TrainConfig, check_select_metric
from .errors import TransferkitError, UnknownNameError, check, check_seed_range, is_whole, warn
from .fields import check_fields, from_dict
from .io import VARIABLE
from .runtime import check_device_name, default_device, env_int

#: config keys added since runs were first made (a stage's as ``train.KEY``), with their defaults: a
#: run's config.yaml or a job's digest from before a key was added reads as its default
ADDED_FIELDS = {"unlabeled": None, "test": None, "val_fraction": 0.15, "test_fraction": 0.25,
                "select_metric": "accuracy",
                **{f"{stage}.{k}": v for stage in ("pretrain", "train") for k, v in ADDED_TRAIN_FIELDS.items()}}
#: keys of an episodes plan (``episodes.json``'s ``config.episodes``) added since episodes were first scored, with
#: the value an older file's were scored at (before 2026-12-08 on the CPU)
ADDED_EPISODE_FIELDS = {"device": "cpu"}
#: config keys that do not change a job's rows: a run may be resumed with other values
NOT_RESULTS = {"workers", "out_dir", "name", "train.progress", "pretrain.progress", "train.checkpoint_every",
               "pretrain.checkpoint_every"}
#: config keys that only choose which jobs run (each finished job is checked by its own digest)
CHOOSES_JOBS = {"methods", "repeats", "options"}
#: config keys that choose the settings run (each names its own job files, whose digests keep the value)
CHOOSES_SETTINGS = {"k", "ratio"}
#: most label subsets one run draws (each is a training per method; 1e9 hung in drawing them)
MAX_REPEATS = 10_000

#: the longest run name in bytes: a path part (the run's folder) of most file systems
NAME_BYTES = 255


@dataclass
class ExperimentConfig:
    """One experiment: pre-train on ``source``, transfer to ``target`` with few labels.

    ``k`` labelled target examples per class (the rest of the target train split is the
    unlabelled target), or ``ratio`` images per class, or neither (all target labels); with
    ``ratio`` or neither, the unlabelled target is the whole train split (labelled images
    included; a ratio may take every image of a small class, leaving no rest). ``unlabeled``, a
    domain spec read without labels (``folder:PATH`` of images at any depth, ``npz:PATH`` with
    ``x`` only), is the unlabelled target instead: the target's labels then serve k / ratio,
    validation and the test split only. ``test``, a labelled domain spec, is the test split
    instead (every image of a target class, matched by name): the target is then cut into
    train and val only. ``val_fraction`` and ``test_fraction`` of each class (rounded) go to its
    val and test splits, in the source and the target alike (so that two domains cut from the
    same images never share one between one's training and the other's val or test split; the
    target's test fraction is 0 with ``test``).
    Each of ``repeats`` repeats draws a new label subset with seed ``seed + r``. ``k`` (or
    ``ratio``) may be a list, ``[1, 5, 10]``: every job runs at each value, in one run directory
    and one results table (a label-efficiency curve; :meth:`settings` gives one config per value).
    """

    name: str = "experiment"
    source: str | None = "syndigits"  # None: no source images, the `pretrained` network alone (its head's classes)
    target: str = "mnist"
    unlabeled: str | None = None  # images without labels as the unlabelled target (else the target's train split)
    test: str | None = None  # a labelled test set of its own (else test_fraction of the target is its test split)
    source_classes: typing.Any = None  # None: all; "0-4", "5,6,7", or a list of ids / names
    target_classes: typing.Any = None
    image_size: int = 28
    channels: int | str | None = None  # None or "auto": 3 when either domain is in colour, else 1
    backbone: str = "convnet4"
    methods: list = field(default_factory=lambda: ["source_only", "target_only", "linear_probe", "finetune"])
    k: int | list | None = 5  # a list: one setting per value
    ratio: int | list | None = None
    repeats: int = 3
    seed: int = 0
    val_per_class: int | None = None  # cap on labelled target validation examples per class
    val_fraction: float = 0.15  # of each class of both domains, its validation split
    test_fraction: float = 0.25  # of each class of both domains, its test split (the target's: none with `test`)
    select_on: str = "target_val"  # early stopping / model selection: target_val | source_val | none
    select_metric: str = "accuracy"  # what selection scores: accuracy | balanced_accuracy (the transfer stage)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, eval_every=100))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, eval_every=25))
    options: dict = field(default_factory=dict)  # per-method keyword arguments: {method: {key: value}}
    pretrained: str | None = None  # path to a source network (safetensors) to use instead of pre-training
    out_dir: str = "runs"
    # where and how jobs run; the CLI's --workers / --device set the environment defaults
    workers: int = field(default_factory=lambda: env_int("TRANSFERKIT_WORKERS", 1, least=1))
    device: str = field(default_factory=default_device)

    def __post_init__(self):
        if isinstance(self.methods, tuple):
            self.methods = list(self.methods)
        check_fields(self)
        check_device_name(self.device)
        for stage in ("pretrain", "train"):  # a stage's device follows `device`; one that differs would be ignored
            d = getattr(self, stage).device
            check(unset_stage_device(d) or d == self.device,
                  f"{stage}.device is {d!r} but device is {self.device!r}: an experiment runs on `device` (--device); "
                  f"set that instead (a run's config.yaml keeps the device it began on: resume with it)")
            if d != self.device:  # the stage runs on `device`: stored so (in a copy, the caller's object stays),
                # so that config.yaml and --print-config name the device it runs on
                setattr(self, stage, dataclasses.replace(getattr(self, stage), device=self.device))
        check_seed_range(self.seed, "seed", self.repeats)
        check(1 <= self.repeats <= MAX_REPEATS, f"repeats must be in 1..{MAX_REPEATS} (one training per method "
                                                f"and repeat), got {self.repeats}")
        self.k, self.ratio = _budget(self.k, "k"), _budget(self.ratio, "ratio")
        check(self.val_per_class is None or self.val_per_class >= 1,
              f"val_per_class must be >= 1 (or null: the whole validation split), got {self.val_per_class}")
        check(not (self.k is not None and self.ratio is not None),
              "give k or ratio, not both (set k: null to use ratio)")
        check(self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}")
        check(0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1,
              f"val_fraction ({self.val_fraction}) and test_fraction ({self.test_fraction}) are the shares of each "
              f"class in its val and test splits: val_fraction in [0, 1), test_fraction in (0, 1), and "
              f"together below 1 (the rest is the train split)")
        check(self.test is None or self.test_fraction == ADDED_FIELDS["test_fraction"],
              f"test_fraction {self.test_fraction} cuts a test split from the target, which a config's own test "
              f"set ({self.test!r}) replaces: leave test_fraction out (the target is cut into train and val)")
        variable = VARIABLE.search(str(self.out_dir))
        check(variable is None, f"out_dir {self.out_dir!r}: {variable and variable.group()} is not expanded (paths are "
                                f"read as written, ~ alone is the home folder): write the path out, or let the shell "
                                f"expand it (--set \"out_dir=$DATA/runs\")")
        check(self.name.strip(" .") != "" and not any(c in "/\\\0" for c in self.name)
              and len(os.fsencode(self.name)) <= NAME_BYTES,
              f"name {self.name!r} names the run's folder under out_dir: no '/', '\\' or NUL character, not "
              f"empty or dots, at most {NAME_BYTES} bytes (a longer folder name: File name too long)")
        check(self.select_on in ("target_val", "source_val", "none"),
              f"select_on must be target_val, source_val or none, got {self.select_on!r}")
        check(self.pretrained is None or self.pretrained.strip() != "",
              f"pretrained {self.pretrained!r} names no file: give the source network's file (save_network writes "
              f"one), or null (or leave it out) to pre-train on the source")
        if self.source is None:  # a network alone: its file stands for the source
            check(self.pretrained is not None, "source: null (no source images) needs `pretrained`, the source "
                                               "network's file (save_network writes one): give both, or a source")
            check(self.select_on != "source_val", "select_on: source_val selects on the source's validation "
                                                  "images, and source: null gives none: use target_val or none")
            check(self.source_classes is None, f"source_classes {self.source_classes!r} chooses source images, and "
                                               f"source: null gives none (the network's head has the classes its "
                                               f"file names): leave source_classes out")
        check_select_metric(self.select_metric)
        check(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        if self.channels == "auto":  # the README's name for the default
            self.channels = None
        check(self.channels in (None, 1, 3), f"channels must be 1, 3 or auto (null), got {self.channels!r}")
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        check(isinstance(self.methods, list), f"methods must be a list of method names (e.g. [finetune, "
                                              f"ft_unit:conv2]), got {self.methods!r:.80}")
        check(len(self.methods) > 0, "no method given")
        spaced = next((m for m in self.methods if isinstance(m, dict) and len(m) == 1), None)  # [ft_unit: conv2]
        check(spaced is None, f"methods must be a list of method names, got {self.methods!r}" + ("" if spaced is None
              else f": write {next(iter(spaced))}:{next(iter(spaced.values()))} without a space after the colon"))
        check(all(isinstance(m, str) and m for m in self.methods),
              f"methods must be a list of method names, got {self.methods!r}")
        twice = sorted({m for m in self.methods if self.methods.count(m) > 1})
        check(not twice, f"methods lists {', '.join(twice)} more than once (its rows would count twice)")
        check(isinstance(self.options, dict) and all(isinstance(v, dict) for v in self.options.values()),
              "options must map a method name to its keyword arguments, e.g. options: {dann: {weight: 0.1}}")
        stray = sorted(set(self.options) - set(self.methods))
        if stray:  # options of a method this run leaves out (--set methods=... narrowed it) are kept for the runs
            from .methods import get_method  # that include it; a key that names no method is a typo (imported
            # here: the registry imports every method family)
            for m in self.methods:
                get_method(m)  # an unknown method in methods is the error to name first
            base = lambda name: name.split(":", 1)[0]  # noqa: E731
            for m in stray:  # ft_unit, or ft_unit:cnv1, beside ft_unit:conv1: the full name, misspelt
                near = [n for n in self.methods if ":" in n and base(n) == base(m)]
                check(not near, f"options for {m}, which is not in methods {self.methods}: options are keyed by the "
                                f"method's full name ({', '.join(near)})")
                try:
                    get_method(m)
                except UnknownNameError as e:
                    raise TransferkitError(f"options for {m}, which names no method: {e}") from None

    def settings(self) -> list["ExperimentConfig"]:
        """One config per value of a list ``k`` or ``ratio``, in the order given; else ``[self]``."""
        for key in ("k", "ratio"):
            if isinstance(getattr(self, key), list):
                return [dataclasses.replace(self, **{key: v}) for v in getattr(self, key)]
        return [self]

    @property
    def setting(self) -> str:
        """``k=5``, ``ratio=30`` or ``all``: the label subset, as rows and job files name it."""
        check(not isinstance(self.k, list) and not isinstance(self.ratio, list),
              f"a config of several settings (k: {self.k}, ratio: {self.ratio}) has no one setting: use "
              f"config.settings(), one config per value")
        if self.k is not None:
            return f"k={self.k}"
        return f"ratio={self.ratio}" if self.ratio is not None else "all"

    @property
    def source_label(self) -> str:
        """The rows' ``source``: the source domain, or without one (``source: null``) the name of
        the ``pretrained`` network's file."""
        return self.source if self.source is not None else Path(self.pretrained).name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _budget(value, key: str):
    """``k`` or ``ratio`` checked: a whole number >= 1, None, or a list of distinct ones (a list
    of one is that number: its run and digests are those of the number)."""
    if isinstance(value, (list, tuple)):
        check(len(value) > 0, f"{key} is an empty list: give one number or a list of them, e.g. {key}: [1, 5, 10]")
        for v in value:
            check(is_whole(v, 1), f"{key}: each value must be a whole number >= 1, got {v!r} in {list(value)}")
        value = [int(v) for v in value]
        twice = sorted({v for v in value if value.count(v) > 1})
        check(not twice, f"{key} lists {', '.join(map(str, twice))} more than once (its rows would count twice)")
        return value[0] if len(value) == 1 else value
    check(value is None or value >= 1, f"{key} must be >= 1, got {value}")
    return value


def flat_config(config: dict, prefix: str = "") -> dict:
    """A config mapping with its ``train`` and ``pretrain`` sections as ``train.KEY`` keys."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and k in ("train", "pretrain"):
            out.update(flat_config(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def _field_hint(cls, parts: list[str]):
    """The type hint of the dataclass field at dotted path ``parts`` below ``cls`` (None when
    the path leaves the dataclasses, e.g. inside ``options``)."""
    hint = cls
    for part in parts:
        if not dataclasses.is_dataclass(hint) or part not in {f.name for f in dataclasses.fields(hint)}:
            return None
        hint = typing.get_type_hints(hint)[part]
    return hint


def unset_stage_device(device: str) -> bool:
    """Whether a stage's ``device`` is one nobody set, the default (``cpu``, or ``$TRANSFERKIT_DEVICE``'s):
    an experiment's stage then runs on its ``device``, as one equal to it does."""
    return device in ("cpu", default_device())


def stage_sections(cls) -> set[str]:
    """The sections of dataclass ``cls`` that are stages with a ``device`` (``train``, ``pretrain``)."""
    if not dataclasses.is_dataclass(cls):
        return set()
    return {f.name for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(hint := _field_hint(cls, [f.name])) and _field_hint(hint, ["device"])}


def _one_line(error: Exception, source: str = "the value") -> str:
    """A YAML error on one line: its problem and where (PyYAML spreads them over several and
    calls text it was given ``"<unicode string>"``: ``source`` names it)."""
    return " ".join(str(error).split()).replace('"<unicode string>"', source)


def set_dotted(data: dict, assignment: str, cls=None) -> None:
    """Apply one ``key.sub=value`` override to a nested dict. The value is parsed as YAML,
    except for a ``str`` field of dataclass ``cls``, which keeps the text as given
    (``name=1.10`` stays ``"1.10"``; YAML quotes around it are removed). A mapping given
    for a section (``train``) updates it; inside a free mapping (``options``) a mapping
    replaces and ``null`` removes the key (``options.dann=null``); deeper, ``null`` is
    a value (``options.dann.lr_schedule=null``)."""
    check("=" in assignment, f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    hint = _field_hint(cls, parts) if cls is not None else None
    text_field = hint in (str, str | None)
    text = raw.strip()
    if text_field and text not in ("", "null", "~", "Null", "NULL"):
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        value = text[1:-1] if quoted else text  # the text between the quotes, as written (no escapes)
    else:
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else None
        except yaml.YAMLError as e:
            what = "" if isinstance(e, NumberFormError) else "the value is not valid YAML: "
            raise TransferkitError(f"--set {key}: {what}{_one_line(e)}") from e
        except ValueError as e:  # a value YAML's constructors cannot read (dates and numbers are named above)
            raise TransferkitError(f"--set {key}: YAML cannot read {text!r}: {e} (quoted, it is text)") from e
    _check_no_self_reference(value, key.strip(), f"--set {key}")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        check(isinstance(node, dict), f"--set {key}: {part!r} is not a section")
    old = node.get(parts[-1])
    if value is None and len(parts) > 1 and _field_hint(cls, parts[:-1]) is dict:
        node.pop(parts[-1], None)  # options.dann=null: that method's options are gone (options.dann.x=null: a value)
    elif dataclasses.is_dataclass(hint) and isinstance(old, dict) and isinstance(value, dict):
        node[parts[-1]] = {**old, **value}
    else:
        node[parts[-1]] = value


#: the most values a config (or a --set value) may hold with its aliases expanded; real ones hold hundreds
MAX_CONFIG_VALUES = 1_000_000


#: what YAML builds that holds other values: mappings, sequences, and the tuples of !!pairs / !!omap and !!set
_CONTAINERS = (dict, list, tuple, set, frozenset)


def self_reference(value, key: str = "", within: tuple = (), clear: dict | None = None) -> str | None:
    """The key of the first list or mapping in ``value`` that contains itself (a YAML anchor used
    inside its own value, ``k: &a [*a]``), dotted from ``key``; None where there is none. A value
    shared by several keys (an anchor used again) is walked once (``clear``: the ids found free of it,
    each with the number of values it holds with every alias expanded, itself included)."""
    clear = {} if clear is None else clear
    if not isinstance(value, _CONTAINERS) or id(value) in clear:
        return None
    for outer, outer_key in within:
        if value is outer:
            return outer_key
    items = value.items() if isinstance(value, dict) else enumerate(value)
    size = 1
    for k, v in items:
        found = self_reference(v, f"{key}.{k}" if key else str(k), within + ((value, key),), clear)
        if found is not None:
            return found
        size += clear.get(id(v), 1) if isinstance(v, _CONTAINERS) else 1
    clear[id(value)] = size
    return None


def _check_no_self_reference(value, key: str, where: str) -> None:
    """Refuse ``value`` where a list or mapping contains itself, or where its aliases expand it to
    more than :data:`MAX_CONFIG_VALUES` values (nested anchors, a "billion laughs" document)."""
    sizes: dict = {}
    found = self_reference(value, key, clear=sizes)
    check(found is None, f"{where}: {found} refers to itself (a YAML anchor used inside its own value, "
                         f"as in &a [*a]): write the value out")
    size = sizes.get(id(value), 1)
    check(size <= MAX_CONFIG_VALUES, f"{where}: its anchors and aliases expand to {size:,} values, more than "
                                     f"{MAX_CONFIG_VALUES:,} (aliases of anchors that hold aliases, nested: a 'billion "
                                     f"laughs' document): write the values out, with fewer levels of aliases")


def warn_repeated(assignments: list[str]) -> None:
    """Warn of a key that ``--set`` (or ``--workers`` / ``--device``) gives twice with other
    values: the last wins, as for other options, but the first was meant too."""
    values: dict[str, list[str]] = {}
    for assignment in assignments:
        key, _, raw = assignment.partition("=")
        values.setdefault(key.strip(), []).append(raw.strip())
    for key, given in values.items():
        if len(given) > 1 and len({_parsed(raw) for raw in given}) > 1:
            warn(f"{key} is given {len(given)} times ({', '.join(map(repr, given))}): the last, {given[-1]!r}, is "
                 f"used")


def _parsed(raw: str) -> str:
    """``raw`` as the value YAML reads (``1e-3`` and ``0.001`` alike), or the text where it reads none."""
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, ValueError):  # set_dotted names the problem
        return raw
    try:
        _check_no_self_reference(value, "", "")
    except TransferkitError:
        return raw  # refused by set_dotted, not written out here
    return repr(value)


def override(obj, assignments: list[str] = (), what: str = "config"):
    """A copy of dataclass ``obj`` with ``key.sub=value`` assignments applied (checked like YAML;
    ``what`` names it in the errors: ``"config"``, ``"bench flex plan"``)."""
    warn_repeated(assignments)
    data = dataclasses.asdict(obj)
    for assignment in assignments:
        set_dotted(data, assignment, type(obj))
    return from_dict(type(obj), data, what=what)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (YAML keeps the last)."""


def _unique_mapping(loader, node, deep=False):
    own = [k for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]  # `<<:` merges may be overridden
    keys = [loader.construct_object(k, deep=deep) for k in own]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"key {', '.join(twice)} given twice in one mapping",
                                                node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
_EXPONENT = "tag:transferkit,2026:exponent"


def _exponent(loader, node):
    """1e-4 and 1e3 as numbers (YAML 1.1 wants a dot, 1.0e-4, and reads them as text; YAML 1.2
    does not): a whole one written without a dot is an int (hidden: 1e2), the others floats."""
    value = float(node.value.replace("_", ""))
    return int(value) if value.is_integer() and "." not in node.value else value


_EXPONENT_FORM = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_UniqueKeyLoader.add_implicit_resolver(_EXPONENT, _EXPONENT_FORM, list("-+0123456789."))
_UniqueKeyLoader.add_constructor(_EXPONENT, _exponent)


class NumberFormError(yaml.constructor.ConstructorError):
    """An integer that YAML 1.1 reads in another base than the decimal it looks like, or a value it
    reads as a number or a date that is none (``0x_``, ``2001-13-45``)."""


def _not_read(node, what: str, error) -> NumberFormError:
    """The error of a value ``node`` whose form YAML reads as ``what`` but that is none (``error``: why)."""
    return NumberFormError(None, None, f"YAML reads {node.value!r} as {what}, and {error} (quoted, it is text)",
                           node.start_mark)


def _checked_timestamp(loader, node):
    """A YAML date or time, refused with its reason where none exists (2001-13-45)."""
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as e:
        raise _not_read(node, "a date", e) from None


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _checked_timestamp)


def _plain_int(loader, node):
    """A YAML 1.1 integer, refused unless decimal: ``010`` (octal 8), ``0x10`` (16), ``1:30``
    (base 60: 90) silently meant other numbers (or class names); one without digits (``0x_``) too."""
    try:
        value = loader.construct_yaml_int(node)
    except ValueError:  # 0x_ or 0b_: the form of a YAML 1.1 hexadecimal or binary number, without a digit
        base = "a hexadecimal" if "x" in node.value else "a binary"
        raise _not_read(node, f"{base} number (YAML 1.1)", "it has no digits") from None
    text = node.value.replace("_", "").lstrip("+-")
    if ":" in text or (len(text) > 1 and text[0] == "0"):
        octal = text.isdigit()
        meant = int(node.value.replace("_", "")) if octal else value  # the decimal it looks like, with its sign
        how = ("octal" + (f", not {meant}" if meant != value else "") + ")") if octal else \
            "hexadecimal, binary or base 60)"
        raise NumberFormError(None, None, f"{node.value!r} is the number {value} in YAML 1.1 ({how}: write {meant} "
                                          f"for the number, or quote it ('{node.value}') for a name", node.start_mark)
    return value


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _plain_int)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a config file (or a shipped config by name, e.g. ``demo``, as ``transferkit run demo``
    does) with ``overrides`` (``key=value`` texts, as ``--set``); None: the defaults."""
    data = {} if path is None else config_data(path)
    before = data.get("device")
    overrides = list(overrides) if isinstance(overrides, Iterable) and not isinstance(overrides, (str, bytes)) \
        else overrides
    check(isinstance(overrides, list) and all(isinstance(a, str) for a in overrides),
          f"load_config: overrides must be a list of 'key=value' texts, got {overrides!r:.80}")
    warn_repeated(overrides)
    for assignment in overrides:
        key, given, raw = assignment.partition("=")
        check(not given or raw.strip() != "", f"--set {assignment!r} gives no value (an unset shell variable?): "
                                              f"write null for null: --set {key.strip()}=null")
        set_dotted(data, assignment, ExperimentConfig)
    if data.get("device") != before:
        check_device_name(data["device"])  # named as the key given, not as the stages' copies below
        # a config.yaml stores its device in each stage too: those copies follow
        for stage in ("pretrain", "train"):  # --device (or --set device=...), which wins over the file
            if isinstance(data.get(stage), dict) and data[stage].get("device") == before:
                data[stage]["device"] = data["device"]
    return from_dict(ExperimentConfig, data)


def config_data(path: str | Path) -> dict:
    """The mapping of keys a config file (or a shipped config by name) holds, checked: each
    problem of the file is refused naming it."""
    path = config_file(path)
    check(path.is_file(), f"config file {path} does not exist or is not a file")
    raw = path.read_bytes()
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))  # Windows PowerShell's `>` writes UTF-16 with a BOM
    try:
        text = raw.decode("utf-16" if utf16 else "utf-8")
    except UnicodeDecodeError as e:
        what = ("it starts with a UTF-16 byte-order mark but is not UTF-16 text" if utf16 else
                f"it is not UTF-8 text (byte {raw[e.start]:#04x} at position {e.start}, e.g. a file saved as "
                f"Windows 'ANSI' / cp1252)")
        raise TransferkitError(f"config file {path} is not valid YAML: {what}: save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        what = ":" if isinstance(e, NumberFormError) else " is not valid YAML:"
        raise TransferkitError(f"config file {path}{what} {_one_line(e, str(path))}") from e
    except ValueError as e:  # a value YAML's constructors cannot read (dates and numbers are named above)
        raise TransferkitError(f"config file {path}: YAML cannot read a value: {e} (quoted, it is text)") from e
    _check_no_self_reference(data, "", f"config file {path}")
    check(data is not None, f"config file {path} is empty (or only comments): give its keys (e.g. 'methods: "
                            f"[finetune]'), or leave out the config file to run the defaults")
    check(isinstance(data, dict), f"config file {path} must be a mapping of keys (e.g. 'methods: [finetune]'), "
                                  f"got {type(data).__name__}: {data!r:.60}")
    return data


class _Dumper(yaml.SafeDumper):
    """YAML's safe dumper that quotes text :class:`_UniqueKeyLoader` would read as a number
    (``name: 1e3``, which it reads as 1000)."""


_Dumper.add_implicit_resolver(_EXPONENT, _EXPONENT_FORM, list("-+0123456789."))


def dump_config(cfg: ExperimentConfig) -> str:
    """``cfg`` as YAML (config.yaml, --print-config); with a ``test`` set, without the
    ``test_fraction`` that it makes unused (refused there)."""
    d = cfg.to_dict()
    if d.get("test") is not None:
        d.pop("test_fraction")
    return yaml.dump(d, Dumper=_Dumper, sort_keys=False)


#: the YAML configs that ship with transferkit (``transferkit run demo``)
BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def bundled_config_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml"))


def config_file(given: str | os.PathLike) -> Path:
    """The YAML file ``transferkit run GIVEN`` reads: the file ``given`` where there is one, else the config of
    that name that ships with transferkit (``demo``, ``demo.yaml``, or ``configs/demo.yaml`` as a clone kept
    them before they moved into the package), so that the documented commands run from any folder and from
    an installed wheel. A missing file that names none is refused with the shipped configs' names."""
    path = Path(given)
    if path.is_file():
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    shipped = BUNDLED_CONFIGS / f"{name}.yaml"
    if path.parent in (Path("."), Path("configs")) and shipped.is_file():
        return shipped
    if path.exists():  # a folder: load_config says it is no file
        return path
    names = ", ".join(bundled_config_names())
    raise TransferkitError(f"config file {path} does not exist; the configs that ship with transferkit are {names} "
                           f"(transferkit run demo; transferkit run demo --print-config > my.yaml for a copy to edit)")
