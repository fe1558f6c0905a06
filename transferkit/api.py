"""A scikit-learn-like surface over the engine: ``fit`` / ``predict`` / ``score``.

>>> from transferkit import Transfer, load_domain
>>> from transferkit.splits import sample_k_shot, split_domain
>>> src, tgt = load_domain("syndigits", channels=3), split_domain(load_domain("mnist", channels=3))
>>> few, _ = sample_k_shot(tgt.train, k=5, seed=0)
>>> model = Transfer("finetune", backbone="convnet4").fit(target=few, source=src, val=tgt.val)
>>> model.score(tgt.test)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from .backbones import (
    UnitNet,
    build_backbone,
    builder_of,
    check_backbone,
    check_unitnet,
    definition_digest,
    evaluating,
    is_built_in,
    known_outputs,
    reinitialise,
)
from .clip import CaptionedDomain
from .config import load_config
from .domain import (
    Domain,
    check_labeled,
    image_batch,
    is_complex,
    label_ids,
    labels_by_name,
    warn_numbered_match,
    warn_unshared_classes,
)
from .engine import (
    Engine,
    FitResult,
    TrainConfig,
    check_select_metric,
    check_streams,
    engine_hooks,
    parameter_dtypes,
)
from .errors import TransferkitError, TransferkitWarning, check, first_line, first_named, quiet, torch_seed, warn
from .evaluate import classification_report, fraction_correct, module_device, predict_logits
from .experiment import load_model
from .fields import updated
from .fitting import (
    build_method,
    check_selection_classes,
    fit_for_target,
    method_error,
    report_seen_unseen,
    source_head_rows,
    source_only_of,
    zero_shot_options,
)
from .frozen import MEMO
from .io import make_dir, remove_inside
from .methods import get_method
from .methods.base import check_option_values, check_options
from .methods.supervised import SourceOnly
from .networks import network_digest
from .preflight import check_method_workers, check_own_modules_take
from .runtime import callers_state_kept, rng_devices
from .zeroshot import calibrated, is_zero_shot, seen_columns


def pretrain_default() -> TrainConfig:
    """The pre-training config of a ``Transfer`` given no ``pretrain=`` (made when asked: its device is
    ``$TRANSFERKIT_DEVICE``'s then, and a wrong one is named when a model is made, not when transferkit is imported)."""
    return TrainConfig(steps=600)


@functools.cache
def _not_fitted_error() -> type:
    """A :class:`TransferkitError` that is also scikit-learn's ``NotFittedError`` (imported when needed)."""
    from sklearn.exceptions import NotFittedError
    return type("NotFittedTransfer", (TransferkitError, NotFittedError), {"__module__": __name__})


def _sample_weights(sample_weight, n: int) -> torch.Tensor | None:
    """``score``'s ``sample_weight`` as ``n`` float64 weights (``None`` stays ``None``)."""
    if sample_weight is None:
        return None
    check(not is_complex(sample_weight), "score: sample_weight must be real numbers, got complex ones")
    try:
        weights = torch.as_tensor(sample_weight, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TransferkitError(f"score: sample_weight must be numbers, one per image, got "
                               f"{type(sample_weight).__name__}") from None
    check(weights.shape == (n,), f"score: sample_weight must hold one weight per image ({n}), got shape "
                                 f"{tuple(weights.shape)}")
    check(bool(torch.isfinite(weights).all()) and bool((weights >= 0).all()) and float(weights.sum()) > 0,
          "score: sample_weight must be finite and non-negative, and not all zero")
    return weights


def _checkpoint_dir(checkpoint_dir) -> tuple[Path | None, list[Path]]:
    """``fit``'s ``checkpoint_dir`` as a folder made before any training (a folder that cannot be made is named
    then, not at the first checkpoint), and the folders made for it, the deepest first."""
    if checkpoint_dir is None:
        return None, []
    check(isinstance(checkpoint_dir, (str, os.PathLike)), f"fit: checkpoint_dir must be a folder's path (str or "
                                                          f"Path), got {type(checkpoint_dir).__name__}")
    try:
        ckpt = Path(checkpoint_dir).expanduser()
    except TypeError:  # a PathLike of bytes
        raise TransferkitError(f"fit: checkpoint_dir must be a folder's path (str or Path), got "
                               f"{checkpoint_dir!r}") from None
    check(not ckpt.exists() or ckpt.is_dir(), f"fit: checkpoint_dir {str(ckpt)!r} is a file, not a folder (the "
                                              f"checkpoints go in it)")
    made = [p for p in (ckpt, *ckpt.parents) if not p.exists()]
    make_dir(ckpt, "fit: cannot make checkpoint_dir", "give a folder that can be written")
    check(os.access(ckpt, os.W_OK | os.X_OK), f"fit: checkpoint_dir {str(ckpt)!r} cannot be written: give a folder "
                                              f"that can be")
    return ckpt, made


def _stage_dir(ckpt: Path | None, name: str, used: list[Path]) -> Path | None:
    """The checkpoint folder of a fit's stage ``name`` under ``ckpt``, noted in ``used`` (the folders the fit's
    clean-up removes: a folder of the user's beside them is kept)."""
    if ckpt is None:
        return None
    used.append(ckpt / name)
    return ckpt / name


def _warn_rows_by_position(method, target: Domain | None) -> None:
    """A network given without its classes (no source, no ``net.class_names`` of its rows) whose head ``method``
    keeps and predicts with: its rows are the target's classes by position, said in a warning."""
    net = method.net
    if target is None or net.num_classes != target.num_classes or not method.predicts_with_net \
            or getattr(type(method), "fresh_init", False):
        return
    named = getattr(net, "class_names", None)
    said = (f"the network's class_names lists {len(named)} names for its head's {net.num_classes} rows (not used)"
            if named is not None else f"the network names no classes for its head's {net.num_classes} rows")
    warn(f"fit: {said}, as many as the target's: they "
         f"are kept by position, row i as target class i ([{first_named(map(repr, target.class_names))}]); "
         f"set net.class_names = [the class of each row] to match "
         f"them by name (load_network's networks have them)")


#: The last pre-trainings of this process (CPU copies of their weights, their random states and
#: device), by :meth:`Transfer._pretrain`'s key: a second ``Transfer`` on the same source and
#: pre-training config reuses one instead of pre-training again (same weights, same result).
PRETRAINED: OrderedDict = OrderedDict()
PRETRAINED_KEPT = 2


class Transfer:
    """Transfer with one method (its registered name, or the registered ``Method`` class).

    Parameters: ``method`` (``transferkit.list_methods()``, ``transferkit methods`` on the
    command line); ``backbone`` (``convnet4``, ``lenet``, ``convnet7``, ``resnet18``, a plugin's,
    or a network of one's own through ``fit(net=...)``); ``train`` and ``pretrain``, the
    :class:`TrainConfig` budgets of the transfer and of the source pre-training (steps, lr,
    batch size...: ``help(TrainConfig)``); ``seed``, which seeds the network's initialisation
    and the training batches (not the label subset: choose that with ``sample_k_shot(...,
    seed=)``); ``select_metric``, what ``fit(val=...)`` scores for early stopping and the weights
    kept: ``"accuracy"``, or ``"balanced_accuracy"`` (the mean per-class accuracy, for imbalanced
    classes; the source pre-training selects on accuracy); ``hooks``, a function
    ``hook(step, state)`` or a tuple of them, called after every training step of the transfer
    stage (not of the source pre-training) as :class:`~transferkit.engine.Engine` calls them
    (``state["record"]``: the last evaluation's losses, learning rate and ``val_accuracy``;
    ``state["stopped"] = True`` ends that training; not pickled with the model);
    ``**options``, the method's own options (``transferkit.method_options(method)``, or
    ``transferkit methods NAME``).

    ``fit(target, source=None, unlabeled=None, val=None, net=None, source_val=None)``: when
    the method starts from a source network and ``net`` is not given, the backbone is first
    trained on ``source`` (with ``pretrain`` config; with ``source_val``, a labelled
    validation split of the source, it stops early on it and keeps its best weights, as
    ``transferkit run`` does). A ``net`` given is used as it is, never pre-trained: ``source``
    then names its head's classes, and a method that trains on source batches reads them.
    A ``pretrain`` config other than the default that is not used (``net=`` given, or a method
    that does not pre-train, such as ``source_only``, which trains with ``train``) warns.
    The fitted network is ``self.net_``. A later ``fit``, of the same model or of another
    ``Transfer`` of the process (:data:`PRETRAINED` keeps the last two), with the same source
    (images, labels, classes, ``source_val``), backbone, ``pretrain`` config, seed and torch
    thread count reuses that pre-training instead of repeating it, with the same result.
    """

    def __init__(self, method: str | type = "finetune", backbone: str = "convnet4", train: TrainConfig | None = None,
                 pretrain: TrainConfig | None = None, seed: int = 0, select_metric: str = "accuracy", hooks=(),
                 **options):
        self.method_cls = get_method(method)
        nested = [k for k in options if k.partition("__")[0] in ("train", "pretrain")]
        check(not nested, f"{nested[0] if nested else ''!r} is no parameter: train and pretrain are TrainConfig "
                          f"objects, not estimators with parameters of their own: give a whole config, e.g. "
                          f"set_params(train=TrainConfig(steps=10)), or change one field: "
                          f"set_params(train=dataclasses.replace(model.train_cfg, steps=10))")
        check_options(self.method_cls, options)  # a misspelt option now, with the known ones, not at fit
        check_option_values(self.method_cls, options)  # and a value outside its domain
        check_backbone(backbone)
        self.backbone, self.seed, self.options = backbone, torch_seed(seed), options
        self.select_metric = check_select_metric(select_metric)
        self.hooks = engine_hooks(hooks)
        self.train_cfg = _train_config(train, TrainConfig(), "train")  # copies: the caller's may change later
        self.pretrain_cfg = _train_config(pretrain, pretrain_default(), "pretrain")
        self._given_cfgs = (train, pretrain)  # for get_params: sklearn's clone checks they are the objects given

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments as this model holds them, options included (the training
        configs as :class:`TrainConfig`): scikit-learn's estimator protocol, so that
        ``sklearn.base.clone(model)`` is an unfitted copy (``deep`` changes nothing: no
        argument is an estimator). A training config given as a :class:`TrainConfig` is that object while
        it holds what this model uses (the model keeps a copy: the caller changing theirs later changes
        nothing here)."""
        given = getattr(self, "_given_cfgs", (None, None))  # a model pickled before 2026-12-07 has none
        train, pretrain = (g if isinstance(g, TrainConfig) and g == cfg else cfg
                           for g, cfg in zip(given, (self.train_cfg, self.pretrain_cfg)))
        return {"method": self.method_cls.name, "backbone": self.backbone, "train": train,
                "pretrain": pretrain, "seed": self.seed, "select_metric": self._select_metric(),
                "hooks": getattr(self, "hooks", ()), **self.options}

    def _select_metric(self) -> str:
        """``select_metric``; a model pickled before it was a parameter (2026-12-02) selected on accuracy."""
        return getattr(self, "select_metric", "accuracy")

    def set_params(self, **params) -> "Transfer":
        """Change constructor arguments, checked as the constructor checks them (an option the
        method does not take is refused). The fitted model, if any, is dropped: fit again (no
        argument changes nothing). Options set for the method before, which a new ``method`` takes
        too, are kept, with a warning."""
        if not params:
            return self
        try:
            fresh = type(self)(**{**self.get_params(), **params})
        except TransferkitError as e:  # options of the method set before, which the new method does not take?
            kept = {k: v for k, v in self.options.items() if k not in params}
            if "method" not in params or not kept:
                raise
            try:
                type(self)(**{k: v for k, v in {**self.get_params(), **params}.items() if k not in kept})
            except TransferkitError:
                raise e from None
            new = getattr(params["method"], "name", params["method"])
            raise TransferkitError(f"set_params: {e}; {', '.join(f'{k}={v!r}' for k, v in kept.items())} was set "
                                   f"for {self.method_cls.name!r}, the method before: build a new model, "
                                   f"Transfer({new!r}, ...), for another method with other options") from None
        kept = {k: v for k, v in self.options.items() if k not in params}
        if kept and "method" in params and fresh.method_cls is not self.method_cls:
            warn(f"set_params: {', '.join(f'{k}={v!r}' for k, v in kept.items())}, set for {self.method_cls.name!r}, "
                 f"the method before, now go to {fresh.method_cls.name!r}; give them again (or their defaults, "
                 f"transferkit.method_options({fresh.method_cls.name!r})) to say so")
        memo = getattr(self, "_pretrained", None)  # its key names everything the pre-training read
        self.__dict__.clear()
        self.__dict__.update(fresh.__dict__)
        if memo is not None:
            self._pretrained = memo
        return self

    def _net(self, domain: Domain, num_classes: int) -> UnitNet:
        c, h, w = domain.image_shape
        try:  # a backbone that pools globally takes other widths too (the engine checks the first batch)
            return build_backbone(self.backbone, num_classes=num_classes, in_channels=c, image_size=h)
        except TransferkitError as e:
            if h == w:
                raise
            raise TransferkitError(f"fit: the images of {domain.name!r} are {h} x {w} (H x W); {self.backbone} "
                                   f"built for their height fails ({e}): resize them "
                                   f"(domain.to_format(size=...))") from e

    def fit(self, target: Domain | None = None, source: Domain | None = None, unlabeled: Domain | None = None,
            val: Domain | None = None, net: UnitNet | None = None, source_val: Domain | None = None,
            checkpoint_dir: str | Path | None = None) -> "Transfer":
        """Train on the domains given: ``target``, the labelled target images (few of them, e.g.
        ``sample_k_shot(...)``'s first part); ``source``, the labelled source domain the network is
        pre-trained on (and that adaptation methods read); ``unlabeled``, target images whose
        labels are not read (domain adaptation, ``finetune_adv``, ``lext``; :meth:`Domain.unlabeled`
        for images without labels); ``val``, a labelled validation domain for early stopping and
        model selection (``split_domain(...).val``); ``net``, a network to start from instead of
        pre-training (``source`` then names its classes); ``source_val``, a labelled source
        validation split for the pre-training. Which of them a method reads: ``transferkit
        methods NAME``.

        ``checkpoint_dir``: the trainings (pre-training and transfer) checkpoint there every
        ``checkpoint_every`` steps, and a fit interrupted (Ctrl-C, a killed kernel) and called
        again with the same arguments goes on from its last checkpoint, to the weights an
        uninterrupted fit gives; a checkpoint of other data, method or config is refused (delete
        the folder). It is made before any training (one that cannot be is refused then). A fit that ends
        removes the stage folders it wrote there (others there are kept)."""
        # the caller's global RNG is left as it was (fit seeds its own draws), and a caller's
        # no_grad / inference_mode block does not reach training
        ckpt, made = _checkpoint_dir(checkpoint_dir)
        devices, removed, stages = rng_devices(self.train_cfg.device, self.pretrain_cfg.device), False, []
        try:
            with callers_state_kept(devices), torch.inference_mode(False), torch.enable_grad():
                self._fit(target, source, unlabeled, val, net, source_val, ckpt, stages)
            for stage in dict.fromkeys(stages):
                if stage.is_dir() and (stage / "last.json").exists():
                    remove_inside(stage, ckpt)
                    removed = True
        finally:
            for folder in made if not removed else ():  # folders made for checkpoints that no training wrote
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        return self

    def _fit(self, target, source, unlabeled, val, net, source_val=None, ckpt: Path | None = None,
             stages: list[Path] | None = None) -> "Transfer":
        stages = [] if stages is None else stages
        cls = self.method_cls
        check_streams(cls)  # before any pre-training
        if isinstance(source, CaptionedDomain):  # image-caption pairs: clip reads the captions off its domain
            source = source.domain
        given = {k: d for k, d in (("target", target), ("source", source), ("unlabeled", unlabeled), ("val", val),
                                   ("source_val", source_val)) if d is not None}
        check(target is not None or source is not None, "fit needs a target or a source domain")
        for k, d in given.items():
            how = (": load it first: load_domain(name), or load_domain('folder:PATH') for a folder"
                   if isinstance(d, (str, Path)) else
                   ": wrap the images as Domain.unlabeled(name, images) (they need no labels)" if k == "unlabeled"
                   else ": wrap images and labels as Domain(name, images, labels, class_names) (fit(target=..., "
                   "source=...), not fit(X, y))")
            check(isinstance(d, Domain), f"fit: {k} must be a Domain, got {type(d).__name__}{how}")
            check(len(d) > 0, f"fit: the {k} domain {d.name!r} is empty")
            d.check_contents(f"fit: the {k} domain")
            d.forget_digest()  # the caches' and checkpoints' keys: images changed through a NumPy view too
            if k != "unlabeled":
                check_labeled(d, f"fit: the {k} domain")
            if k in ("target", "source"):
                present = set(d.present_classes())
                empty = [d.class_names[i] for i in range(d.num_classes) if i not in present]
                if empty:  # a mask or labels with gaps: outputs trained on nothing
                    warn(f"fit: the {k} domain {d.name!r} names {d.num_classes} classes but has no image of "
                         f"{len(empty)} ({empty[:10]}{', ...' if len(empty) > 10 else ''}): the model gets an output "
                         f"for each, trained on nothing; d.select_classes([...]) keeps the classes with images")
        shapes = {k: d.image_shape for k, d in given.items()}
        if len(set(shapes.values())) > 1:  # the hint's format: the first domain's (the largest channels)
            h = next(iter(shapes.values()))[1]
            like = f"size={h}, channels={max(shape[0] for shape in shapes.values())}"
            raise TransferkitError(f"fit: images must share one shape (C, H, W), got {shapes}: load them alike "
                                   f"(load_domain(spec, {like})) or convert one, domain.to_format({like})")
        guessed = net is not None and getattr(net, "input_shape_guessed", False)  # from_modules' 224 x 224
        if net is not None and getattr(net, "input_shape", None) is not None and not guessed:
            have, want = next(iter(shapes.values())), tuple(net.input_shape)
            built = is_built_in(getattr(net, "name", "")) and have[1] == have[2]
            build = (f"build_backbone({net.name!r}, num_classes=..., in_channels={have[0]}, image_size={have[1]})"
                     if built else f"input_shape={have}")
            check(have == want,
                  f"fit: the images are {have} (C, H, W) and the network was built for {want} (its input_shape: "
                  f"UnitNet(..., input_shape=), from_modules(model, ..., input_shape=) or a builder's in_channels "
                  f"and image_size set it): convert the images (domain.to_format(size=..., channels=...)) or, when "
                  f"the network takes images of this shape, build it for them ({build})")
        torch.manual_seed(self.seed)
        given_net = net is not None
        classes = list((target if target is not None else source).class_names)  # a copy: the caller may rename theirs
        check(len(classes) >= 2, f"fit: the {'target' if target is not None else 'source'} domain "
                                 f"{(target or source).name!r} has one class ({list(classes)}): every prediction "
                                 f"would be right; give two classes or more")
        if source is not None and target is not None:
            check(source.num_classes >= 2, f"fit: the source domain {source.name!r} has one class "
                                           f"({list(source.class_names)}): a network trained to tell one class from "
                                           f"none learns nothing (its cross entropy is 0 whatever the weights); give "
                                           f"two classes or more")
        target_classes = target.class_names if target is not None else None
        if net is not None:
            check_unitnet(net, "fit")
        if net is not None:  # its head is taken to be the source's when the class counts match
            if cls.predicts_with_source_head() and source is not None and net.num_classes != source.num_classes:
                raise TransferkitError(f"method {cls.name!r} trains and predicts with the network's head on the "
                                       f"source classes, but the network has {net.num_classes} outputs and the "
                                       f"source domain {source.name!r} {source.num_classes} classes"
                                       + (" (it has no classifier, as after reset_classifier(0): this method "
                                          "needs one trained on the source classes)" if net.num_classes == 0 else ""))
            net = copy.deepcopy(net)
            if guessed:
                _take_image_shape(net, next(iter(given.values())))
            elif net.input_shape is None:
                _check_runs_on(net, next(iter(given.values())),
                               "the network declares no input shape: convert the images (domain.to_format(size=..., "
                               "channels=...)) or give from_sequential / from_modules input_shape=(C, H, W) for the "
                               "size it takes")
            if getattr(cls, "fresh_init", False):  # target_only: the architecture, never the weights
                try:
                    reinitialise(net)
                except TransferkitError as e:
                    raise TransferkitError(f"method {cls.name!r} trains from a fresh initialisation and re-initialises "
                                           f"the given net, but {e}; fit it without net=") from None
            named = getattr(net, "class_names", None)  # a network of load_network names its head's rows
            if named is not None and source is not None and list(named) != list(source.class_names):
                warn(f"fit: the network's head names the classes {list(named)[:10]} but the source "
                     f"{source.name!r} has {list(source.class_names)[:10]}: its rows are taken as the source's, by "
                     f"position (give the source its classes in the head's order, or leave source= out)")
            head_classes = source.class_names if source is not None and net.num_classes == source.num_classes else \
                list(named) if source is None and named is not None and len(named) == net.num_classes else None
        else:  # a method that never sees target labels classifies with a head over the source classes
            head = source if cls.needs_pretrained or cls.predicts_with_source_head() else (target or source)
            check(head is not None, f"method {cls.name!r} needs a source domain or a pre-trained net")
            net, head_classes = self._net(head, head.num_classes), head.class_names
        network_only = cls is SourceOnly and given_net and source is None  # the network as it is, as a run's
        with torch.random.fork_rng(devices=[]):  # options and classes are checked before any training
            try:
                options = zero_shot_options(cls, self.options, source.class_names if source is not None else None,
                                            target_classes)
                if network_only:  # the head's rows of the target classes, or a refusal naming what runs
                    source_head_rows(cls, head_classes, net.num_classes, target_classes, network_only=True)
                else:
                    built = build_method(cls, copy.deepcopy(net), options, head_classes, target_classes)
                    built.check_classes(source.class_names if source is not None else None, target_classes)
                    check_method_workers(built)
                cls.check_data(target, val)
                check_selection_classes(cls, val, head_classes, target_classes)
            except Exception as e:  # whatever building it with these options raises names the problem
                raise method_error(cls, self.options, e) from e
        for name in cls.streams if not network_only else ():  # before any pre-training
            check(name in given, f"method {cls.name!r} needs a non-empty {name} domain: fit({name}=...)")
        check(not getattr(cls, "scores_class_names", False) or target is not None or source is None
              or self.options.get("class_names") is not None or "classes" in source.provenance
              or self.options.get("captions_file") is not None,  # its images' classes, captioned in fit
              f"fit: {cls.name} scores the classes it names, and without target= it reads them off a captioned "
              f"source (CaptionedDomain(...).domain), but {source and source.name!r} does not name them: give "
              f"class_names=[...] or target=")
        if unlabeled is not None and "unlabeled" not in cls.streams:
            warn(f"fit: unlabeled= is not used: method {cls.name!r} reads no unlabelled images (it reads "
                 f"{', '.join(cls.streams)})")
        elif unlabeled is not None and unlabeled.labeled and source is not None:
            seen = {source.class_names[i] for i in source.present_classes()}  # its labels are real, unlabeled's not
            unseen = [c for c in unlabeled.class_names if c not in seen and (target is None or c not in
                                                                             target.class_names)]
            if unseen and target is None:
                warn(f"fit: the unlabeled domain {unlabeled.name!r} names classes the source has no image of "
                     f"({unseen[:10]}); without target= the model predicts the source's classes only, and "
                     f"images of those classes will be given one of them (with target=, it predicts the target's "
                     f"classes)")
            elif unseen:
                warn(f"fit: the unlabeled domain {unlabeled.name!r} names classes that neither the source nor the "
                     f"target has ({unseen[:10]}); the model predicts the target's classes only, and images of "
                     f"those classes will be given one of them (leave them out of unlabeled=: "
                     f"unlabeled.select_classes([...]))")
        pretrains = cls.needs_pretrained and not given_net
        if source is not None and target is not None:
            warn_numbered_match(source, target)
        if "target" in cls.streams and head_classes is not None and target_classes is not None:  # named rows
            warn_unshared_classes(head_classes, target_classes,
                                  chosen=any("classes" in d.provenance for d in (source, target) if d is not None))
        if source_val is not None:
            check(pretrains, f"fit: source_val is the validation split of the source pre-training, but "
                             f"{'net= is given' if given_net else f'method {cls.name!r} does not pre-train'}: "
                             f"leave it out")
            check(source is not None and list(source_val.class_names) == list(source.class_names),
                  f"fit: source_val {source_val.name!r} must have the source's classes "
                  f"{list(source.class_names) if source is not None else None}, got {list(source_val.class_names)}")
        if not pretrains and self.pretrain_cfg != pretrain_default():  # after the last refusal: no warning then
            why = "net= is given and is used as it is, never pre-trained" if given_net else \
                f"method {cls.name!r} does not pre-train"
            warn(f"fit: pretrain= is not used: {why}; it trains with train= only ({self.train_cfg.steps} steps)")
        if network_only and (val is not None or self.train_cfg != TrainConfig()):
            warn(f"fit: {'val= and train= are' if val is not None else 'train= is'} not used: source_only with net= "
                 f"and without source= trains nothing (the network as it is, on the target's classes)")
        if val is not None and not getattr(cls, "selects_on_validation", True):
            warn(f"fit: val= is not used: method {cls.name!r} selects nothing on a validation split (a fixed "
                 f"support set or training budget: `transferkit methods {cls.name}`); leave it out")
        start = network_digest(net) if ckpt is not None else None  # a checkpoint begun from another net is refused
        if pretrains:  # the method's own modules on these images, before the pre-training
            check_own_modules_take(built, {"source": source, "target": target, "unlabeled": unlabeled},
                                   self.train_cfg.batch_size)
            self._pretrain(net, source, source_val, _stage_dir(ckpt, "pretrain", stages), start)
        if network_only:  # source_only of a source: null run: no training, the head's rows of the target classes
            method = source_only_of(net, head_classes, target_classes, network_only=True)
            fit_result = FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False, wall_s=0.0)
        else:
            kept = net.head if given_net else None
            with quiet():  # the pre-flight build (built) showed its warnings, before the pre-training
                method = build_method(cls, net, options, head_classes, target_classes)
            if given_net and source is None and head_classes is None and method.net.head is kept:
                _warn_rows_by_position(method, target)
            fit_result = fit_for_target(
                method, lambda tag, config=None: Engine(config or self.train_cfg, seed=self.seed,
                                                        checkpoint_dir=_stage_dir(ckpt, tag, stages),
                                                        select_metric=self._select_metric(), start=start,
                                                        hooks=getattr(self, "hooks", ())),
                head_classes, target_classes, source=source, target=target, unlabeled=unlabeled, val=val)
        if getattr(cls, "scores_class_names", False):  # a CLIP-style model predicts the classes it names (given,
            classes = list(method.class_names)  # the target's, or those of its captioned source's images)
        # all fitted attributes at once: a refit that fails or is interrupted leaves the last model whole
        if getattr(net, "class_names", None) is not None:  # its head now predicts the classes of classes_
            net.class_names = list(classes) if known_outputs(net) == len(classes) else None
        self.method_, self.fit_result_ = method, fit_result
        self.net_, self.classes_, self.input_shape_ = net, classes, next(iter(shapes.values()))
        return self

    @classmethod
    def from_run(cls, run_dir, method: str, seed: int | None = None, setting: str | None = None) -> "Transfer":
        """The model that job (``method``, ``seed``; ``setting``, e.g. ``"k=5"``, in a run of a
        list ``k`` or ``ratio``) of a ``transferkit run`` evaluated, as a
        fitted :class:`Transfer` (``predict``, ``score``, ``report``; ``classes_`` are the
        job's target classes). Loaded by :func:`~transferkit.experiment.load_model`: a
        pickle, so load only run directories you trust."""
        with warnings.catch_warnings():  # a missing result row is an error here, not a warning
            warnings.simplefilter("error", TransferkitWarning)
            try:
                model = load_model(run_dir, method, seed, setting)
            except TransferkitWarning as w:
                raise TransferkitError(f"{w}; Transfer.from_run needs a finished job (its classes)") from None
        cfg = load_config(Path(run_dir) / "config.yaml")
        name = model.name
        self = cls(name, backbone=cfg.backbone, train=cfg.train, pretrain=cfg.pretrain,
                   seed=cfg.seed if seed is None else seed, select_metric=cfg.select_metric,
                   **cfg.options.get(name, {}))
        self.method_, self.fit_result_ = model, None
        self.net_, self.classes_ = model.net, list(model.classes_)
        self.input_shape_ = getattr(model.net, "input_shape", None)  # None: a network of your own checks no shape
        return self

    def _pretrain(self, net: UnitNet, source: Domain, source_val: Domain | None,
                  checkpoint_dir: Path | None = None, start: str | None = None) -> None:
        """Pre-train ``net`` on ``source``, or take the weights of this model's last pre-training
        (or of one of the last :data:`PRETRAINED_KEPT` of this process, another ``Transfer``'s)
        when it had the same source images, labels and classes, validation split, backbone (its
        definition and initial weights), config, seed and thread count; the random state it left
        is restored too, so the fit that follows is the same as after a pre-training (kept across
        ``set_params``, dropped by pickling)."""
        key = (source.digest(), source.image_shape, tuple(source.class_names),
               None if source_val is None else source_val.digest(), self.backbone,
               definition_digest(net, None if is_built_in(self.backbone) else builder_of(self.backbone)),
               network_digest(net),  # the initial weights: a plugin's builder may load a file of its own
               repr(self.pretrain_cfg), self.seed, torch.get_num_threads())  # the thread count changes CPU sums
        memo = getattr(self, "_pretrained", None)
        if (memo is None or memo[0] != key) and key in PRETRAINED:  # another Transfer's pre-training of the same
            state, rng, cuda, device = PRETRAINED[key]
            PRETRAINED.move_to_end(key)
            memo = self._pretrained = (key, {k: v.to(device) for k, v in state.items()}, rng, cuda)  # on CPU: shared
        if memo is not None and memo[0] == key:
            net.load_state_dict(memo[1])
            net.to(next(iter(memo[1].values())).device).eval()  # where and as the pre-training left it
            torch.set_rng_state(memo[2])
            if memo[3] is not None:
                torch.cuda.set_rng_state_all(memo[3])
            return
        self._pretrained = None  # a pre-training that fails leaves no stale weights behind
        Engine(self.pretrain_cfg, seed=self.seed, checkpoint_dir=checkpoint_dir, start=start, run_name="pre-training",
               label="the pre-training of the source network (method 'source_only')",
               lr_key="pretrain.lr").fit(SourceOnly(net), source=source, val=source_val)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._pretrained = (key, {k: v.detach().clone() for k, v in net.state_dict().items()},
                            torch.get_rng_state(), cuda)
        device = next(iter(self._pretrained[1].values())).device
        PRETRAINED[key] = ({k: v.cpu() for k, v in self._pretrained[1].items()}, *self._pretrained[2:], device)
        while len(PRETRAINED) > PRETRAINED_KEPT:
            PRETRAINED.popitem(last=False)

    def __sklearn_tags__(self):
        """A fitted model is a classifier of image arrays to scikit-learn (its scorers, ``check_is_fitted``,
        ``ConfusionMatrixDisplay.from_estimator``, a ``Pipeline`` that predicts); an unfitted one is refused,
        since scikit-learn would fit it with ``(X, y)`` (``GridSearchCV`` and ``cross_val_score`` fit clones)."""
        if not hasattr(self, "net_"):  # also scikit-learn's NotFittedError: check_is_fitted reads the tags first
            raise _not_fitted_error()("this Transfer is not fitted, and scikit-learn cannot fit it: Transfer.fit "
                                      "takes Domain objects (target=, source=, unlabeled=), not scikit-learn's (X, "
                                      "y), so GridSearchCV, cross_val_score and Pipeline cannot fit it: loop over "
                                      "the settings with clone(model).set_params(...) and fit each on your domains")
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags(two_d_array=False, three_d_array=True))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "net_")

    def __getstate__(self) -> dict:
        """Without the pre-training memo, and without the hooks (functions of the session, often
        closures or lambdas that do not pickle)."""
        return {k: (() if k == "hooks" else v) for k, v in self.__dict__.items() if k != "_pretrained"}

    def __copy__(self) -> "Transfer":
        """A shallow copy that keeps the hooks (and the pre-training memo), unlike a pickle."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> "Transfer":
        """A deep copy of everything but the hooks, which it shares (functions of the session), and the
        pre-training memo, which it leaves out as a pickle does."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: (v if k == "hooks" else copy.deepcopy(v, memo)) for k, v in self.__dict__.items()
                             if k != "_pretrained"})
        return new

    def __repr__(self) -> str:
        options = "".join(f", {k}={_option_text(v)}" for k, v in self.options.items())
        metric = self._select_metric()
        options += f", select_metric={metric!r}" if metric != "accuracy" else ""
        for name, cfg, default in (("train", self.train_cfg, TrainConfig()), ("pretrain", self.pretrain_cfg,
                                                                               pretrain_default())):
            changed = ", ".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
                                if getattr(cfg, f.name) != getattr(default, f.name))
            options += f", {name}=TrainConfig({changed})" if changed else ""
        fitted = f", fitted on {len(self.classes_)} classes" if hasattr(self, "classes_") else ""
        return f"Transfer({self.method_cls.name!r}, backbone={self.backbone!r}, seed={self.seed}{options}){fitted}"

    def _images(self, images, who: str) -> torch.Tensor:
        """The images of a batch or :class:`Domain`, checked against the shape ``fit`` saw; the
        model in eval mode."""
        check(hasattr(self, "net_"), f"call fit before {who}")
        images = images.images if isinstance(images, Domain) else images
        images = image_batch(images, who, self.input_shape_, exact=True)
        dtypes = parameter_dtypes(self.method_)
        check(dtypes <= {"float32"}, f"{who}: the fitted network's parameters are {', '.join(sorted(dtypes))} (changed "
                                     f"after fit); it scores float32 images, as it trained: model.net_.float() "
                                     f"converts them back (or convert a copy, copy.deepcopy(model.net_))")
        self.method_.eval()
        return images

    def predict_logits(self, images) -> torch.Tensor:
        """``N x C`` logits over ``classes_`` of images (N x C x H x W floats in [0, 1], uint8,
        a NumPy array, or a :class:`Domain`, whose images are scored)."""
        return self._logits(images, "predict")

    @torch.no_grad()
    def _logits(self, images, who: str) -> torch.Tensor:
        """:meth:`predict_logits`, its errors naming the call ``who`` the user made."""
        given = images.images if isinstance(images, Domain) else images
        images = self._images(images, who)
        if len(images) == 0:
            return torch.zeros(0, len(self.classes_))
        scored = getattr(self.method_, "class_names", None) if getattr(self.method_cls, "scores_class_names", False) \
            else None  # clip scores the classes it names: set_classes after fit changes them, not classes_
        check(scored is None or [str(c) for c in scored] == [str(c) for c in self.classes_],
              f"{who}: the fitted {self.method_cls.name} now scores the classes {list(scored or [])[:10]} "
              f"(set_classes after fit), not its classes_ {list(self.classes_)[:10]}, whose ids predict returns: "
              f"score other classes with model.method_.scores(images) (columns: model.method_.class_names) or "
              f"evaluate_zero_shot(model.method_, ...), or fit with them as target=")
        # the method's forward (a zero-shot one scores descriptions); a frozen prefix's activations of these
        # images are read from transferkit.frozen's memo when they ran before (score, then report: one pass)
        with MEMO.owned_by(given):  # as long as the caller holds the images
            logits = self.method_.logits(images)
        check(bool(torch.isfinite(logits).all()), f"{who}: the model's outputs for these images hold NaN or infinite "
                                                  f"values (a diverged training, or an extreme option such as a "
                                                  f"scale or temperature): no class can be read from them")
        check(logits.shape[1] == len(self.classes_),
              f"{who}: the model gives {logits.shape[1]} outputs for its {len(self.classes_)} classes: its head was "
              f"changed after fit (e.g. net_.reset_classifier); use a copy for that, copy.deepcopy(model.net_)")
        return logits

    @torch.no_grad()
    def transform(self, images) -> torch.Tensor:
        """``N x D`` embeddings of images (or a :class:`Domain`'s): the features the fitted
        method's classifier reads (``method_.classifier_input``): for most methods the
        backbone's pooled features (``net_.forward_features``), for ``tap`` the flattened output
        of the unit it tapped (before the standardisation, which its linear layer holds); in
        eval mode and without gradients; the same input checks as :meth:`predict`."""
        images = self._images(images, "transform")
        net, method = self.net_, self.method_
        check(callable(getattr(net, "forward_features", None)), f"transform: the fitted network "
                                                                 f"({type(net).__name__}) has no forward_features")
        if len(images) == 0:
            return torch.zeros(0, method.classifier_input_dim)
        return predict_logits(method.classifier_input, images, device=module_device(net))

    def predict_proba(self, images) -> torch.Tensor:
        """Softmax of :meth:`predict_logits` (a float32 tensor; ``.numpy()`` for NumPy)."""
        return torch.softmax(self.predict_logits(images), 1)

    def predict(self, images) -> torch.Tensor:
        """Class ids (indices into ``classes_``, not its names) of images or a :class:`Domain`: an
        int64 tensor on the images' device (``.numpy()`` for NumPy;
        ``numpy.asarray(model.classes_)[ids]`` gives the names)."""
        return self.predict_logits(images).argmax(1)

    def _check_classes(self, domain: Domain, who: str) -> None:
        two = ("as two arguments, score(images, labels)," if who == "score"
               else "as a Domain: report(Domain(\"test\", images, labels, model.classes_))")
        check(not isinstance(domain, (tuple, list)),
              f"{who}: got one {type(domain).__name__}; give the images and labels {two}"
              f"{' or a Domain' if who == 'score' else ''}")
        check(isinstance(domain, Domain), f"expected a Domain (or images with labels), got {type(domain).__name__}")
        check_labeled(domain, "the domain")
        check(hasattr(self, "classes_"), f"call fit before {who}")
        given, fitted = list(domain.class_names), list(self.classes_)
        if set(given) <= set(fitted):  # the same classes in any order, or some of them (read by name)
            return
        if set(fitted) < set(given):  # more classes than the model knows
            hint = f"score on those classes, in this order: domain.select_classes({fitted!r})"
        else:
            hint = ("the model predicts the classes it was fitted on: score on a domain with these class names "
                    "(the same classes under other names: rename them in the Domain); to predict other classes, "
                    "fit with them as target= (methods without target labels do not read its labels)")
        raise TransferkitError(f"domain {domain.name!r} has classes {given}, the fitted model {fitted} ({hint})")

    def _fitted_labels(self, domain: Domain) -> torch.Tensor:
        """``domain``'s labels as ids into ``classes_`` (its classes are all or some of them, by name)."""
        return labels_by_name(domain, self.classes_)

    def score(self, domain, labels=None, sample_weight=None) -> float:
        """Accuracy on a :class:`Domain` of the fitted classes (or of some of them: a test set
        without images of a class; predictions range over every fitted class), or on ``images``
        with ``labels`` (ids into ``classes_``), as scikit-learn's ``score(X, y)``;
        ``sample_weight``: one finite, non-negative weight per image, for the weighted fraction correct."""
        if labels is not None:
            check(not isinstance(domain, Domain), "score: give a Domain, or images and labels, not both")
            check(hasattr(self, "classes_"), "call fit before score")
            labels = label_ids(labels, "score", "model.classes_")
            if labels.numel():  # before predicting: no image is scored for labels that cannot be right
                lo, hi = int(labels.min()), int(labels.max())
                check(lo >= 0 and hi < len(self.classes_), f"score: labels out of range [0, {len(self.classes_) - 1}]"
                                                           f" (found {lo}..{hi}): they are positions in classes_")
            weights = _sample_weights(sample_weight, len(labels))
            pred = self._logits(domain, "score").argmax(1)
            check(labels.shape == pred.shape, f"score: {len(pred)} images but labels of shape {tuple(labels.shape)}")
            check(len(pred) > 0, "score: no images")
        else:
            self._check_classes(domain, "score")
            check(len(domain) > 0, f"score: domain {domain.name!r} is empty")
            weights = _sample_weights(sample_weight, len(domain))
            pred, labels = self._logits(domain.images, "score").argmax(1), self._fitted_labels(domain)
        if weights is None:
            return fraction_correct(pred, labels.to(pred.device))
        weights = weights / weights.max()  # a sum of huge weights would overflow to inf
        return float((weights * (pred.cpu() == labels.cpu())).sum() / weights.sum())

    def report(self, domain: Domain, gzsl_gamma: float | str = 0.0) -> dict:
        """:func:`~transferkit.evaluate.classification_report` on ``domain``, with ``class_names``:
        ``classes_``, the order of its per-class lists and confusion rows (a domain holding some of
        the classes gets None for the others); for a zero-shot
        model (attribute_zsl, embedding_zsl, clip) also ``seen_accuracy``, ``unseen_accuracy`` and
        ``h_accuracy`` over the classes it was / was not trained on (per-class means, as run rows; of a
        domain with one kind only, e.g. the unseen classes of a ZSL test split, that kind's accuracy and no
        ``h_accuracy``) and ``gzsl_gamma``: subtracted from the seen classes' logits before all of it (calibrated
        stacking; ``"prior"``: :func:`~transferkit.zeroshot.prior_matched_gamma` of these logits)."""
        self._check_classes(domain, "report")
        logits, seen = self._logits(domain.images, "report"), seen_columns(self.method_)
        name = self.method_cls.name
        why = (f"and this {name} model, trained before 2026-12-02, records no seen classes: fit it again"
               if is_zero_shot(self.method_) else f"not of {name}")
        check(seen is not None or gzsl_gamma == 0, "gzsl_gamma calibrates the seen classes' logits of a zero-shot "
                                                   f"model (attribute_zsl, embedding_zsl, clip), {why}")
        labels, names = self._fitted_labels(domain), {"class_names": list(self.classes_)}
        if seen is None:
            return {**names, **classification_report(logits, labels, len(self.classes_), domain.groups)}
        logits, gamma = calibrated(logits, seen, gzsl_gamma)
        report = classification_report(logits, labels, len(self.classes_), domain.groups)
        seen_names = [self.classes_[j] for j in seen]
        return {**names, **report, **report_seen_unseen(report, list(self.classes_), seen_names, partial=True),
                "gzsl_gamma": gamma}


def _take_image_shape(net: UnitNet, domain: Domain) -> None:
    """Give ``net``, whose ``input_shape`` is from_modules' guess (C x 224 x 224: no
    ``input_shape=`` was given), the shape of ``domain``'s images, once it runs on one of them:
    a guess binds nothing, while a shape one gives is checked against the images."""
    guess, shape = tuple(net.input_shape), tuple(domain.image_shape)
    if guess != shape:
        _check_runs_on(net, domain, f"its input shape {guess} is from_modules' guess (no input_shape= given): build "
                                    f"it with from_modules(model, ..., input_shape=(C, H, W)) for the size your model "
                                    f"takes, which also checks the cut, and give images of that size "
                                    f"(domain.to_format(size=..., channels=...))")
    net.input_shape, net.input_shape_guessed, net._shapes = shape, False, None


def _check_runs_on(net: UnitNet, domain: Domain, why: str) -> None:
    """Refuse, naming the images and ``why``, a network that fails on one image of ``domain``
    (no shape to check them against: torch's error would come at the first training step)."""
    ref = next(net.parameters(), torch.empty(0))
    try:
        with evaluating(net), torch.no_grad():
            net(domain.images[:1].to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None))
    except (RuntimeError, TransferkitError) as e:
        raise TransferkitError(f"fit: the network fails on the images of {domain.name!r}, of shape "
                               f"{tuple(domain.image_shape)} ({first_line(e.__cause__ or e)}); {why}") from e


def _option_text(value, limit: int = 80) -> str:
    """``repr(value)``, or for a long list, tuple or dict (704 captions) its first entry and size, for a
    long array or tensor (anything with a ``shape``) its type, shape and dtype."""
    text = repr(value)
    if len(text) > limit and hasattr(value, "shape"):
        shape = "x".join(str(n) for n in value.shape) or "scalar"
        return f"<{type(value).__name__} {shape}{f' {value.dtype}' if hasattr(value, 'dtype') else ''}>"
    if len(text) <= limit or not isinstance(value, (list, tuple, dict)) or not value:
        return text
    first = next(iter(value.items() if isinstance(value, dict) else value))
    first = f"{first[0]!r}: {first[1]!r}" if isinstance(value, dict) else repr(first)
    cut = first[:limit // 2] + ("..." if len(first) > limit // 2 else "")
    return f"<{type(value).__name__} of {len(value)}: {cut}, ...>"


def _train_config(value, default: TrainConfig, name: str) -> TrainConfig:
    """A :class:`TrainConfig`, a mapping of some of its fields (the rest from ``default``) or None."""
    if value is None:
        return dataclasses.replace(default)  # a copy: a change in place reaches this model only
    if isinstance(value, dict):
        return updated(default, value, f"{name}.")
    check(isinstance(value, TrainConfig), f"{name} must be a TrainConfig or a mapping of its fields, "
                                          f"got {type(value).__name__}")
    return dataclasses.replace(value)  # a copy: the caller changing theirs later leaves this model as it is
