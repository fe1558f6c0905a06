"""Checks a run makes before any work, so that what a job would meet only later fails (or is
warned about) at once: :func:`check_names` (methods, options, backbone, domain specs; nothing
loaded), :func:`check_settings` (the data against each setting and method: empty splits,
``k`` above a class's images, options a method refuses on this data), :func:`check_workers_reach`
(what ``--workers`` processes, or flex's, could not find) and :func:`check_own_modules_take` (a method's
own modules against images of another size than its network was built for)."""

from __future__ import annotations

import ast
import copy
import inspect
import re
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from .backbones import build_backbone, builder_of, check_backbone, list_backbones
from .config import ADDED_FIELDS, ExperimentConfig
from .data import check_spec
from .domain import Domain, warn_unshared_classes
from .engine import Batch, check_streams, other_size_of, size_named
from .errors import TransferkitError, UnknownNameError, check, ignored, quiet, warn
from .fitting import check_selection_classes, method_error, source_head_rows
from .io import read_json
from .methods import get_method
from .methods.base import Method, check_option_values, check_options, method_options
from .methods.supervised import SourceOnly
from .rundata import Prepared, job_method, label_subset, selection_domain, training_fields
from .runtime import held_benchmark_dir, import_plugins, plugin_hint
from .splits import Split, fewest_for, split_units


def check_names(cfg: ExperimentConfig, run_dir: Path | None = None) -> list:
    """What a config names, checked without loading anything (before any work, and by
    ``--nproc`` before it starts processes): its methods and their option names, backbone and
    domains; returns the method classes. ``run_dir``: the run resumed, whose results.json
    names the plugin modules it was made with (for an unknown name's hint). The plugin modules
    of ``$TRANSFERKIT_PLUGINS`` are imported first, whatever the config names: one that fails, or
    takes a built-in name, is refused before the run (not ignored because no name was missing)."""
    import_plugins()
    try:
        methods = [get_method(m) for m in cfg.methods]
        check_backbone(cfg.backbone)  # plugins may register backbones
    except UnknownNameError as e:
        recorded = _recorded_plugins(run_dir)
        if not recorded or e.kind not in ("method", "backbone"):
            raise
        raise UnknownNameError(e.kind, e.name, e.known, plugin_hint(e.kind, recorded)) from None
    unused = [get_method(m) for m in cfg.options if m not in cfg.methods]  # kept for runs that include them:
    for cls in methods + unused:  # valid all the same (a misspelt name, with the known ones; a wrong type)
        options = cfg.options.get(cls.name, {})
        kept = (f" ({cls.name} is not in methods, but its options are kept for runs that include it: fix them, or "
                f"drop them with --set options.{cls.name}=null)" if cls in unused else "")
        try:
            check_options(cls, options)
            inspect.signature(cls.__init__).bind_partial(None, None, **options)
        except TypeError as e:
            raise TransferkitError(f"options for {cls.name}: {e}{kept}") from e
        except TransferkitError as e:
            if not kept:
                raise
            raise TransferkitError(f"{e}{kept}") from e
        try:
            check_option_values(cls, options)
        except TransferkitError as e:
            raise TransferkitError(f"{method_error(cls, options, e)}{kept}") from e
    for spec in (s for s in (cfg.source, cfg.target, cfg.unlabeled, cfg.test) if s is not None):
        check_spec(spec)
    reading = [cls.name for cls in methods if "source" in cls.streams and cls is not SourceOnly]
    check(cfg.source is not None or not reading,
          f"{', '.join(reading)} train{'s' if len(reading) == 1 else ''} on labelled source images, and source: null "
          f"gives none (the pretrained network alone): give the source domain, or leave "
          f"{'it' if len(reading) == 1 else 'them'} out (the methods that train on target labels take the network "
          f"alone: finetune, linear_probe, the ft_ and flex families, ...)")
    return methods


def main_only(obj, registered: str | None = None) -> bool:
    """Whether ``obj`` (a method class, a backbone or domain builder) exists only in this process's
    ``__main__``, which a spawned worker does not run: defined there, and not reachable from the top
    level of a script file, which spawn runs again (its ``if``, ``try`` and ``with`` blocks included, not
    its ``if __name__ == "__main__":`` block, a function's body, a notebook or ``python -c``). A method
    class is reachable when a ``class`` statement there makes it or its ``registered`` name appears there
    (a factory's class), or a top-level class holds it (not a function's), or a name assigned a call's value
    there is its own (``X = type(...)``); a builder (a lambda, a closure) when its ``registered`` name
    appears there, where the worker registers it again. An object whose script cannot be read is taken as reachable."""
    if obj.__module__ != "__main__":
        return False
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not Path(path).is_file():
        return True
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return False
    top = list(_top_level(tree.body))
    named = registered is not None and registered in {
        n.value for node in top for n in ast.walk(node) if isinstance(n, ast.Constant)}
    if not isinstance(obj, type):  # a builder: registered at the top level, however it is made
        return not named
    made = {node.name for node in top if isinstance(node, ast.ClassDef)} | {  # `class X:` or `X = type(...)`
        target.id for node in top if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(target, ast.Name)}
    local = "<locals>" in obj.__qualname__  # made in a function's call: pickle cannot find it by name
    return not named and (local or obj.__qualname__.partition(".")[0] not in made)  # nested: its top-level class's


def _top_level(body: list):
    """The statements a spawned worker runs of a script: its top level, into ``if`` / ``try`` / ``with``
    blocks, but not ``if __name__ == "__main__":``."""
    for node in body:
        if _main_guard(node):
            continue
        yield node
        if isinstance(node, ast.If):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, (ast.With, ast.Try, getattr(ast, "TryStar", ast.Try))):
            handlers = [h for handler in getattr(node, "handlers", []) for h in handler.body]
            yield from _top_level(node.body + handlers + getattr(node, "orelse", []) + getattr(node, "finalbody", []))


def _main_guard(node) -> bool:
    """``if __name__ == "__main__":``"""
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"


def check_workers_reach(methods: list, workers: int, backbone: str | None = None, domains=(), net=None,
                        option: str | None = None) -> None:
    """Refuse, before the pre-training, what the jobs that ``workers`` > 1 processes would run need and
    would not find (:func:`main_only`): their methods, the ``backbone``'s builder, and the builders of
    registered ``domains`` (specs) and the functions of their shifts (registered in ``SHIFTS``); each job
    would fail there on an unknown name. A run calls it when more than one job is left (one runs in the
    calling process). ``net``: a network sent to the workers (flex's candidates), whose module classes they
    must find; ``option``: the method option that starts them (``"flex's option workers"``), named in the
    refusal instead of ``--workers``."""
    if workers <= 1:
        return
    from .data import BUILTINS

    lost = [f"method {cls.name!r}" for cls in methods if main_only(cls, cls.name)]
    if isinstance(backbone, str) and backbone in list_backbones() and main_only(builder_of(backbone), backbone):
        lost.append(f"backbone {backbone!r}")
    specs = [check_spec(spec) for spec in domains if spec is not None]
    bases = dict.fromkeys(base for base, _, _ in specs)
    lost += [f"domain {b!r}" for b in bases if b in BUILTINS and main_only(BUILTINS[b].build, b)]
    shifts = dict(pair for _, names, entries in specs for pair in zip(names, entries))
    lost += [f"shift {name!r}" for name, (fn, _, _) in shifts.items() if main_only(fn, name)]
    classes = dict.fromkeys(type(m) for m in net.modules()) if net is not None else {}
    lost += [f"the network's module class {c.__qualname__!r}" for c in classes if main_only(c)]
    many = len(lost) > 1
    given, one = (f"{option}: {workers}", f"set {option} to 1") if option else \
        (f"--workers / workers: {workers}", "run with --workers 1")
    check(not lost, f"{', '.join(lost)} {'are' if many else 'is'} not defined and registered at the top level of "
                    f"this script (outside functions and `if __name__ == \"__main__\":`; its if / try / with blocks "
                    f"count), which the {workers} worker processes ({given}) run again, but "
                    f"made in a function, in the main block, a notebook or python -c: define and register "
                    f"{'them' if many else 'it'} in a module they can import (import it here; for the CLI, name it in "
                    f"TRANSFERKIT_PLUGINS), or at the script's top level, or {one}")


def check_method_workers(method) -> None:
    """:func:`check_workers_reach` of the worker processes ``method``'s fit starts
    (:meth:`~transferkit.methods.base.Method.spawned_workers`: flex's candidates), which are sent its
    network: a module class of it made in the script's main block is refused before the pre-training."""
    check_workers_reach([], method.spawned_workers(), net=method.net, option=f"{method.name}'s option workers")


def _recorded_plugins(run_dir: Path | None) -> list[str]:
    """The plugin modules (``$TRANSFERKIT_PLUGINS``) run ``run_dir``'s results.json records, if any."""
    try:
        env = read_json(Path(run_dir) / "results.json").get("environment") if run_dir is not None else None
    except (TransferkitError, AttributeError):  # none, unreadable, or not a mapping
        return []
    plugins = env.get("plugins") if isinstance(env, dict) else None
    return [str(m) for m in plugins] if isinstance(plugins, list) else []


def warn_pretrain_unused(cfg: ExperimentConfig) -> None:
    """A ``pretrain`` section set beside ``pretrained:``, which gives the source network: nothing pre-trains."""
    default = asdict(ExperimentConfig.__dataclass_fields__["pretrain"].default_factory())
    given = {k: v for k, v in asdict(cfg.pretrain).items() if k != "device" and v != default.get(k)}
    if given:
        warn(f"{', '.join(f'pretrain.{k}: {v}' for k, v in given.items())} {'is' if len(given) == 1 else 'are'} not "
             f"used: pretrained: {cfg.pretrained} is the source network, nothing is pre-trained")


def warn_api_only_options(cfg: ExperimentConfig) -> None:
    """A method option set in the config that only the Python API reads (``api_only_options``,
    flex's ``keep_candidates``): the run's rows and files do not use it."""
    for name in dict.fromkeys(cfg.methods):
        given, cls = cfg.options.get(name) or {}, get_method(name)
        defaults = method_options(cls)
        for option in (o for o in cls.api_only_options if o in given and given[o] != defaults.get(o)):
            warn(f"options.{name}.{option}: {given[option]!r} has no effect in a run: it is for the Python API "
                 f"(`transferkit methods {name}`); the run's rows and files do not use it")


def check_settings(subs: list[ExperimentConfig], data: Prepared, methods: list) -> None:
    """:func:`check_jobs` of each setting (one config per value of a list ``k`` or ``ratio``);
    a warning that several settings give alike (a class without test images) is given once, and
    one that differs only in its numbers (k=1's labelled images, k=5's) once with the settings
    it also holds for."""
    if len(subs) == 1:
        return check_jobs(subs[0], data, methods)
    given: dict[str, tuple] = {}  # the warning with its numbers blanked -> (first warning, its settings)
    try:
        for sub in subs:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    check_jobs(sub, data, methods)
                except TransferkitError as e:  # one setting refused refuses the run: say how to keep the others
                    passing = [s.setting for s in subs if s is not sub and _passes(s, data, methods)]
                    if not passing:
                        raise
                    key = "k" if sub.k is not None else "ratio"
                    raise TransferkitError(
                        f"{e} (at {sub.setting}; {', '.join(passing)} of this run's settings pass: leave "
                        f"{sub.setting} out of {key}, or run what refuses it in a run of its own; `transferkit "
                        f"summary RUN_A RUN_B` shows several runs as one table)") from e
                finally:  # a setting refused: the warnings before it are still given
                    for w in caught:
                        _, settings = given.setdefault(re.sub(r"\d+(\.\d+)?", "#", str(w.message)), (w, []))
                        if sub.setting not in settings:
                            settings.append(sub.setting)
    finally:
        for w, settings in given.values():
            named = re.search(rf"{re.escape(settings[0])}(?!\.?[0-9])", str(w.message))  # k=1, not in k=10
            also = f" (alike at {', '.join(settings[1:])})" if len(settings) > 1 and named else ""
            warnings.warn_explicit(w.category(f"{w.message}{also}"), w.category, w.filename, w.lineno)


def _passes(cfg: ExperimentConfig, data: Prepared, methods: list) -> bool:
    """Whether :func:`check_jobs` accepts ``cfg`` (its warnings unshown)."""
    try:
        with ignored():
            check_jobs(cfg, data, methods)
    except TransferkitError:
        return False
    return True


def check_jobs(cfg: ExperimentConfig, data: Prepared, methods: list) -> None:
    """Fail now, before pre-training, on what a job would only meet later: an empty target
    test or selection split, a label subset a class cannot fill (``k`` too large), or a
    method that its options or unit names do not fit (built on a fresh backbone)."""
    counts, unit = split_units(data.target)
    for part in ("test", "val") if cfg.select_on == "target_val" else ("test",):
        check(len(getattr(data.target, part)) > 0,
              f"target {cfg.target} has no {part} images ({len(data.target.train)} train): "
              f"{_fewest_text(cfg, part, unit)} (the most any class has is {int(counts.max())})"
              f"{' (or select_on: source_val / none)' if part == 'val' else ''}")
    _warn_unscored_classes(cfg, data, counts, unit)
    if any("target" in cls.streams for cls in methods):  # these give the head the target classes by name
        chosen = any(c is not None and not (isinstance(c, str) and c.strip().lower() == "all")
                     for c in (cfg.source_classes, cfg.target_classes))
        warn_unshared_classes(data.source.train.class_names, data.target.train.class_names, chosen)
    if cfg.k is not None and data.target.train.groups is None:
        _check_k_fits(cfg, data.target.train)
    subsets = [label_subset(cfg, data.target, cfg.seed, data.unlabeled)]
    with quiet():  # the other seeds' subsets repeat its warnings (a ratio above a class's images)
        subsets += [label_subset(cfg, data.target, cfg.seed + r, data.unlabeled) for r in range(1, cfg.repeats)]
    labelled = [labeled for labeled, _ in subsets]
    _check_unlabelled_left(cfg, data, methods, [unlabeled for _, unlabeled in subsets])
    if data.unlabeled is not None and not any("unlabeled" in cls.streams for cls in methods):
        warn(f"unlabeled {cfg.unlabeled!r}: none of the methods ({', '.join(cls.name for cls in methods)}) trains "
             f"on unlabelled target images, so these images are not used (domain adaptation, finetune_adv and "
             f"lext do)")
    unselected = []
    with torch.random.fork_rng(devices=[]):
        for cls in methods:
            check_streams(cls)  # its own message names the method
            options = cfg.options.get(cls.name, {})
            val = selection_domain(cfg, data, cls)
            if cfg.select_on == "target_val" and val is None and cls is not SourceOnly:
                unselected.append(cls.name)
            # outside the try: what the builder refuses (source_only's too) is no method's doing
            net = build_backbone(cfg.backbone, num_classes=data.source.train.num_classes,
                                 in_channels=data.channels, image_size=cfg.image_size)
            try:
                for subset in labelled:
                    cls.check_data(subset, val)
                check_selection_classes(cls, val, data.source.train.class_names, data.target.train.class_names,
                                        "; select_on: source_val suits methods that predict with the source "
                                        "classifier, use target_val or none")
                if cls is SourceOnly:
                    source_head_rows(cls, data.source.train.class_names, data.source.train.num_classes,
                                     data.target.train.class_names, network_only=cfg.source is None)
                    continue
                method = job_method(cfg, data, cls, net)
                method.check_source([data.source.train, data.source.val, data.source.test])
                method.check_classes(data.source.train.class_names, data.target.train.class_names)
                check_method_workers(method)
                if val is not None and hasattr(method, "check_validation"):
                    method.check_validation(val)
            except Exception as e:  # whatever building it with these options raises names the problem
                raise method_error(cls, options, e) from e
    on_source = [cls.name for cls in methods if cls.picks_unit and cfg.select_on == "source_val"]
    if on_source:
        warn(f"{', '.join(on_source)} pick{'s its' if len(on_source) == 1 else ' their'} unit on the validation "
             f"split, which select_on: source_val makes the source's images: the unit that keeps the source best, "
             f"not the one that transfers (seed 002 picks on the target's: select_on: target_val)")
    if unselected:  # once every method is known to run
        warn(f"{', '.join(unselected)} read{'s' if len(unselected) == 1 else ''} no target label, so "
             f"{'it does' if len(unselected) == 1 else 'they do'} not select on the target's validation "
             f"labels (select_on: target_val) and train{'s its' if len(unselected) == 1 else ' their'} whole "
             f"budget (set select_on: none or source_val to say so)")
    _warn_more_validation_labels(cfg, data, methods, labelled)
    _warn_balancing(cfg, methods)
    _warn_selection_settings_unused(cfg, data, methods)


def _warn_selection_settings_unused(cfg: ExperimentConfig, data: Prepared, methods: list) -> None:
    """``val_per_class`` when no method selects on the target's validation split, and
    ``select_metric`` when none selects at all (``select_on: none``, or methods that read no
    target label): set, yet unused."""
    selecting = {cls.name: selection_domain(cfg, data, cls) for cls in methods
                 if cls is not SourceOnly and cls.selects_on_validation}
    selecting = {name: val for name, val in selecting.items() if val is not None}
    why = ("select_on: none" if cfg.select_on == "none" else
           f"select_on: {cfg.select_on}, and {', '.join(cls.name for cls in methods)} "
           f"{'selects' if len(methods) == 1 else 'select'} on no labels" if not selecting else
           f"select_on: {cfg.select_on}")
    if cfg.val_per_class is not None and not any(val is data.target.val for val in selecting.values()):
        warn(f"val_per_class: {cfg.val_per_class} caps the target's validation split, which no method here selects "
             f"on ({why}): it changes nothing; leave it out")
    if cfg.select_metric != "accuracy" and not selecting:
        warn(f"select_metric: {cfg.select_metric} scores model selection, which no method here does ({why}): it "
             f"changes nothing; leave it out")


def _warn_balancing(cfg: ExperimentConfig, methods: list) -> None:
    """Say where ``sampler: balanced`` / ``class_weight: balanced`` do not reach: a method that reads no
    target label balances only its labelled source images (unlabelled target images are shuffled and
    unweighted), and source_only's row is the source network, which ``pretrain`` trains."""
    given = training_fields(cfg.train)
    if not given:
        return
    named = " and ".join(f"train.{k}: {v}" for k, v in given.items())
    no_labels = [cls for cls in methods if "target" not in cls.streams and cls is not SourceOnly]
    if no_labels:
        names = ", ".join(cls.name for cls in no_labels)
        one = len(no_labels) == 1
        unlabelled = " (their unlabelled target images are not balanced: the target's imbalance is not addressed)" \
            if any("unlabeled" in cls.streams for cls in no_labels) else ""
        warn(f"{named} balances the classes of labelled training images, but {names} read{'s' if one else ''} no "
             f"target label: only {'its' if one else 'their'} labelled source images are balanced{unlabelled}")
    if SourceOnly in methods and not cfg.pretrained and any(getattr(cfg.pretrain, k) != v for k, v in given.items()):
        warn(f"source_only's row is the source network, which pretrain trains ("
             f"{', '.join(f'pretrain.{k}: {getattr(cfg.pretrain, k)}' for k in given)}), not {named}: set them in "
             f"pretrain as well for a source network trained so")


def _check_k_fits(cfg: ExperimentConfig, train: Domain) -> None:
    """Refuse ``k`` above the training images of a target class, naming every such class at once
    (one at a time took a run per class), with the settings that fit them."""
    counts = train.class_counts()
    small = [c for c in train.present_classes() if int(counts[c]) < cfg.k]
    if not small:
        return
    keep = [train.class_names[c] for c in train.present_classes() if c not in small]
    listed = ", ".join(f"{train.class_names[c]} ({int(counts[c])})" for c in small[:30])
    raise TransferkitError(
        f"k={cfg.k} is larger than the smallest class: {len(small)} target class(es) have fewer than {cfg.k} "
        f"training images: {listed}{', ...' if len(small) > 30 else ''}; label at most {cfg.k} images per "
        f"class with `k: null` and `ratio: {cfg.k}` (a smaller class labels all of its), leave them out with "
        f"target_classes (the classes to keep"
        f"{f': {keep}' if 0 < len(keep) <= 10 else ''}), or lower k to {min(int(counts[c]) for c in small)}"
        + ("; or give the train split more of each class: a smaller test_fraction / val_fraction (now "
           f"{cfg.test_fraction} / {cfg.val_fraction})"
           if (cfg.val_fraction, cfg.test_fraction) != (ADDED_FIELDS["val_fraction"], ADDED_FIELDS["test_fraction"])
           else ""))


def _check_unlabelled_left(cfg: ExperimentConfig, data: Prepared, methods: list, unlabelled: list) -> None:
    """Refuse (before pre-training) ``k`` that labels every train image of every target class
    when a method trains on the unlabelled rest: nothing would be left for it."""
    needs = [cls.name for cls in methods if "unlabeled" in cls.streams]
    if not needs or all(len(u) > 0 for u in unlabelled):
        return
    train = data.target.train
    names = [train.class_names[i] for i in train.present_classes()]
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    what = "group (video)" if train.groups is not None else "image"
    raise TransferkitError(f"k={cfg.k} takes every train {what} of each target class ({shown}: {cfg.k} each), so "
                           f"nothing is left unlabeled for {', '.join(needs)}, which train"
                           f"{'s' if len(needs) == 1 else ''} on the unlabelled target: lower k (at most "
                           f"{cfg.k - 1}), or leave {'it' if len(needs) == 1 else 'them'} out of methods")


def _warn_more_validation_labels(cfg: ExperimentConfig, data: Prepared, methods: list, labelled: list) -> None:
    """Warn (once per run) when methods trained on the labelled subset (k or ratio per class)
    select on the target's validation split (select_on: target_val) and that split holds more
    labels than they train on: their rows' ``n_labeled`` counts the training labels only. Inside a
    benchmark (:func:`~transferkit.runtime.held_benchmark_dir`), whose plan fixes ``select_on`` and
    ``val_per_class``, it says that the protocol selects so and the table's note says it, not how to change it."""
    val = data.target.val if cfg.select_on == "target_val" else None
    few = [cls.name for cls in methods if "target" in cls.streams and cls.selects_on_validation
           and selection_domain(cfg, data, cls) is val]
    trained = max((len(d) for d in labelled), default=0)
    if val is None or not few or len(val) <= trained:
        return
    subset = f"k={cfg.k}" if cfg.k is not None else f"ratio={cfg.ratio}" if cfg.ratio is not None else "all"
    one = len(few) == 1
    warn(f"{', '.join(few)} train{'s' if one else ''} on {trained} labelled target images ({subset}) but "
         f"select{'s' if one else ''} (early stopping, select_on: target_val) on the {len(val)} labels of the "
         f"target's validation split, which {'its' if one else 'their'} rows' n_labeled does not count: " + (
             "the benchmark's protocol selects on them, and the note under its table says so"
             if held_benchmark_dir() is not None else
             "set val_per_class to cap them, or select_on: none for a fixed budget"))


def _warn_unscored_classes(cfg: ExperimentConfig, data: Prepared, counts: torch.Tensor, unit: str) -> None:
    """Warn (once per run: ``check_jobs`` runs once) about target classes with training images but
    none in the test split (trained on, never scored) or, when selecting on it, the val split."""
    trained = data.target.train.class_counts() > 0
    for part in ("test", "val") if cfg.select_on == "target_val" else ("test",):
        missing = trained & (getattr(data.target, part).class_counts() == 0)
        if not bool(missing.any()):
            continue
        ids = torch.nonzero(missing).flatten().tolist()
        word = unit.split()[0]  # "images" / "groups", "image" / "group" for one
        own = cfg.test is not None and part == "test"  # a test set of its own: the target's images are not cut
        if cfg.test is not None:  # the target's own images or groups (the config's test set counts apart)
            t = data.target
            counts, _ = split_units(Split(t.train, t.val, t.val.subset(torch.zeros(len(t.val), dtype=torch.bool))))
        named = ", ".join(f"{data.target.train.class_names[i]!r}" + ("" if own else f" ({int(counts[i])} "
                          f"{word[:-1] if int(counts[i]) == 1 else word})") for i in ids[:10])
        named += ", ..." if len(ids) > 10 else ""
        if own:
            warn(f"test {cfg.test!r} has no image of {len(ids)} target class(es): {named}; they are trained on but "
                 f"not scored: accuracy is over the other {int(trained.sum()) - len(ids)} classes and their "
                 f"per_class_accuracy is null. Add test images of them, or leave them out with target_classes")
            continue
        what = (f"they are trained on but not scored: accuracy is over the other "
                f"{int(trained.sum()) - len(ids)} classes and their per_class_accuracy is null" if part == "test" else
                "model selection on the target's val split does not see them")
        warn(f"target {cfg.target}: {len(ids)} class(es) have no {part} images: {named} "
             f"({_fewest_text(cfg, part, unit)}); {what}. Add {unit} to them, or leave them out with target_classes")


def _fewest_text(cfg: ExperimentConfig, part: str, unit: str) -> str:
    """How many images (groups) a target class needs to give one to its ``part`` split at the
    config's fractions, naming the fraction when it is not the default."""
    fraction = cfg.val_fraction if part == "val" else cfg.test_fraction
    fewest = fewest_for(part, cfg.val_fraction, cfg.test_fraction)
    key = f"{part}_fraction"
    named = f" at {key} {fraction}" if fraction != ADDED_FIELDS[key] else ""
    if fewest is None:
        return f"{key} {fraction} gives no class a {part} image: raise it"
    return (f"a class needs at least {fewest} {unit} to give one to the {part} split{named}"
            + (f", or a larger {key}" if named else ""))


def check_own_modules_take(method, domains: dict, batch_size: int) -> None:
    """Refuse now, with the engine's message, images of another size than ``method``'s network was
    built for (``input_shape``) that the method's own modules, sized for that (DSN's private encoders,
    a discriminator on convolutional activations), cannot take: the engine would refuse them only at
    the first training step, after the source pre-training. ``domains``: its streams' domains. Its
    losses run once on a copy, on CPU, on each stream's first ``batch_size`` images; another error
    there is left to the training (that copy's weights are not the trained ones), and a method that
    trains no step (its ``losses`` is :class:`~transferkit.methods.base.Method`'s) is not run. A method
    of several training stages (``training_stages``: adain's and unit_gan's translator, then their task
    network) runs the losses of each, ``stage`` set to each value in turn."""
    streams = {name: domains.get(name) for name in method.streams}
    if type(method).losses is Method.losses or any(d is None or not len(d) for d in streams.values()):
        return  # a method that trains no engine step (tap, matching_net), or one without its streams
    other = other_size_of(method.net, streams)
    if not other:
        return
    probe = copy.deepcopy(method).cpu()
    rows = {name: torch.arange(min(max(batch_size, 2), len(d))) for name, d in streams.items()}
    drawn = {name: d.images[rows[name]] if name == "unlabeled" else (d.images[rows[name]], d.labels[rows[name]])
             for name, d in streams.items()}
    for stage in type(method).training_stages:
        if stage is not None:
            probe.stage = stage
        with torch.random.fork_rng(devices=[]), ignored():
            try:
                probe.prepare(streams)
                probe.train_mode()
                with size_named(probe, other, True):
                    probe.losses(Batch(step=0, progress=0.0, indices=rows, **drawn))
            except TransferkitError as e:
                if str(e).startswith(f"method {method.name!r}: {other}"):
                    raise
            except Exception:  # noqa: BLE001  another failure: the training meets it (or not) as it would have
                pass
