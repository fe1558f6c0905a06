"""Run an experiment: pre-train on the source, transfer to the target with each method
over several random label subsets, evaluate on the target test split, write results.

Layout of a run directory ``runs/<name>/<timestamp>/``: ``config.yaml`` (resolved),
``metrics.jsonl`` (every evaluation of every training), ``jobs/*.json`` (one finished
(method, seed) each, written atomically), ``models/*.pt`` (the model each finished job
evaluated, :func:`load_model`), ``checkpoints/`` (engine checkpoints of unfinished jobs),
``results.json`` and ``results.md``, ``kernels.json`` (the torch version, CPU and kernels
the run started with; :func:`~transferkit.runtime.note_kernels`). Passing the directory
again (``run_dir``, ``--resume``) skips finished jobs, runs added methods or repeats, and
continues an interrupted training from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import os
import pickle
import re
import shutil
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path

import torch
import yaml

from . import __version__
from .backbones import (
    build_backbone,
    check_backbone,
    check_unitnet,
    definition_digest,
    is_built_in,
    known_outputs,
)
from .config import (
    ADDED_FIELDS,
    CHOOSES_JOBS,
    CHOOSES_SETTINGS,
    NOT_RESULTS,
    ExperimentConfig,
    dump_config,
    flat_config,
    from_dict,
    load_config,
)
from .data import channels_chosen, check_spec, has_colour_shift, load_domain
from .domain import Domain, head_mapping, warn_numbered_match, warn_unshared_classes
from .engine import ADDED_TRAIN_FIELDS, Engine, TrainConfig, check_streams, content_text, keyed_fields
from .errors import JobsFailed, TransferkitError, TransferkitWarning, UnknownNameError, check, is_whole, warn
from .evaluate import classification_report, fraction_correct, harmonic_mean, predict_logits
from .grouped import sample_k_groups
from .heads import PrototypeHead, head_for_classes, retargeted_head
from .io import (
    MATRIX_FILES,
    atomic_write,
    cache_dir,
    check_job_name,
    directory_lock,
    load_safetensors,
    read_job,
    read_json,
    save_safetensors,
    waiting_lock,
    write_json,
    write_text,
)
from .methods import get_method
from .methods.base import Method, check_option_values, check_options, resolved_options, trained_options
from .methods.supervised import SourceOnly
from .results import RESULT_FILES, ROW_KEYS, unfinished_hint, write_results
from .runtime import (
    JobFailure,
    barrier,
    cpu_kernels,
    failures_message,
    guarded,
    held_benchmark_dir,
    invocation,
    is_main_process,
    map_jobs,
    note_kernels,
    note_work_dir,
    peak_memory,
    plugin_hint,
    preload_lazy_imports,
    resolve_device,
    save_failure,
    worker_threads,
    world_size,
)
from .splits import (
    Split,
    dataset_name,
    fewest_for,
    parse_classes,
    sample_k_shot,
    split_domain,
    split_units,
    subsample_per_class,
)
from .userdata import reading_progress

PRETRAIN_FORMAT = 2  # 2: the network's initial weights come from cfg.seed


@dataclass
class Prepared:
    """Domains of one experiment, split and formatted."""

    source: Split
    target: Split
    channels: int
    unlabeled: Domain | None = None  # the config's ``unlabeled`` images (else the target's train split)
    #: how many of the ``unlabeled`` images are images of the target's val and test splits
    unlabeled_overlap: dict = field(default_factory=dict)
    #: how many images of the config's ``test`` are target train and val images
    test_overlap: dict = field(default_factory=dict)


def prepare_domains(cfg: ExperimentConfig, progress: bool | None = None, run_dir: Path | None = None) -> Prepared:
    """The config's domains, split and formatted; ``progress``: a bar while a large folder is decoded
    (None: ``cfg.train.progress``, whose None is when stderr is a terminal). ``run_dir``: the run
    they are for, whose pinned network names the source classes of a ``source: null`` run that
    has one (:func:`network_source`)."""
    progress = cfg.train.progress if progress is None else progress
    def load(spec, labeled=True):  # a colour shift makes its domain colour unless 1 channel is asked for
        colour = cfg.channels != 1 and has_colour_shift(spec)
        with channels_chosen(cfg.channels):  # converted below to the channels chosen: RGB-stored grey is not news
            return load_domain(spec, seed=cfg.seed, size=cfg.image_size, channels=3 if colour else None,
                               labeled=labeled)

    with reading_progress(progress):
        src = None if cfg.source is None else load(cfg.source)
        tgt = load(cfg.target)
        test = None if cfg.test is None else load(cfg.test)
    if src is None:  # source: null, the pretrained network alone
        source, channels = network_source(cfg, tgt, run_dir)
        if tgt.images.shape[1] == 3 != channels and cfg.channels is None:
            warn(f"target {cfg.target!r}: its colour images are converted to grey, the channels the network of "
                 f"{cfg.pretrained} takes")
        tgt = tgt.to_format(channels=channels)
    else:
        channels = cfg.channels or (3 if 3 in (src.images.shape[1], tgt.images.shape[1]) else 1)
        src, tgt = src.to_format(channels=channels), tgt.to_format(channels=channels)
        # split the whole domains at the same fractions, then keep the classes: a domain's split does
        # not depend on the class subset, so source and target cut from the same images (mnist,
        # mnist+inversion 5-9) never share an image between one's training and the other's val or test split
        source = narrowed(split_domain(src, cfg.val_fraction, cfg.test_fraction), cfg.source_classes)
    target = narrowed(split_domain(tgt, cfg.val_fraction, 0.0 if test is not None else cfg.test_fraction),
                      cfg.target_classes)
    test_overlap = {}  # of a test set of its own: its images that are target train / val images
    if test is not None:  # a test set of its own: the target is cut into train and val only
        target.test = as_target_test(cfg, test, target.train, channels)
        test_overlap = {part: shared_images(getattr(target, part), target.test) for part in ("train", "val")}
        if any(test_overlap.values()):
            warn(f"test {cfg.test!r}: " + " and ".join(f"{n} of its {len(target.test)} images are target {part} "
                                                         f"images" for part, n in test_overlap.items() if n)
                 + " (pixel for pixel): the methods would be scored on images they trained or selected on; give a "
                   "test set apart from the target's images")
    warn_numbered_match(source.train, target.train)
    check(target.train.num_classes >= 2,
          f"the target {cfg.target!r} has one class ({target.train.class_names}"
          f"{f', target_classes {cfg.target_classes!r}' if cfg.target_classes is not None else ''}): every model "
          f"would score 100 %; give two classes or more"
          f"{' (a number is one class id: the first three are 0-2)' if cfg.target_classes is not None else ''}")
    if cfg.val_per_class is not None:
        target.val = subsample_per_class(target.val, cfg.val_per_class, seed=0)
    unlabeled = None
    if cfg.unlabeled is not None:  # the run's image size and channels, whatever the files hold
        with reading_progress(progress):
            unlabeled = load(cfg.unlabeled, labeled=False)
        if unlabeled.images.shape[1] != channels:
            warn(f"unlabeled {cfg.unlabeled!r}: its images have {unlabeled.images.shape[1]} channel(s) and are "
                 f"converted to the run's {channels} ({_channels_origin(cfg)})")
            unlabeled = unlabeled.to_format(channels=channels)
    overlap = {} if unlabeled is None else _unlabeled_overlap(cfg, unlabeled, target)
    return Prepared(source=source, target=target, channels=channels, unlabeled=unlabeled, unlabeled_overlap=overlap,
                    test_overlap=test_overlap)


def _channels_origin(cfg: ExperimentConfig) -> str:
    """What set a run's channels, for a warning about images converted to them."""
    if cfg.channels is not None:
        return "the config's `channels`"
    return ("set by the source network and the target" if cfg.source is None else "set by source and target") \
        + ": `channels` in the config sets them"


def network_source(cfg: ExperimentConfig, target: Domain, run_dir: Path | None = None) -> tuple[Split, int]:
    """Without source images (``source: null``): the source as three empty splits whose classes
    are those the ``pretrained`` file names for its head's rows, and the run's channels (the
    config's, else those the file's network takes, else the target's). The file is read from
    ``run_dir``'s pinned copy where it has one (a resume needs the original no more than a
    run with a source does)."""
    path = Path(cfg.pretrained).expanduser()
    pinned = None if run_dir is None else Path(run_dir) / "source.safetensors"
    state, metadata = _read_net_file(pinned if pinned is not None and pinned.exists() else path)
    names = _stored_classes(path, metadata)
    check(names is not None, f"source: null takes the source classes from the pretrained network's file, and {path} "
                             f"names none (its head's rows would mean unknown classes): write it again with its "
                             f"class names ({SAVE_NETWORK}), or give the source domain")
    channels = cfg.channels or _file_channels(cfg.backbone, len(names), cfg.image_size, state) \
        or target.images.shape[1]
    empty = torch.zeros(0, channels, cfg.image_size, cfg.image_size)
    parts = (Domain(f"{path.name}/{part}", empty, torch.zeros(0, dtype=torch.long), list(names),
                    provenance={"origin": f"pretrained:{path}"}) for part in ("train", "val", "test"))
    return Split(*parts), channels


def _file_channels(backbone: str, num_classes: int, image_size: int, state: dict) -> int | None:
    """The image channels (1 or 3) of the one build of ``backbone`` whose keys and shapes a network
    file's ``state`` has; None where neither or both fit (a builder that refuses some channels,
    e.g. a plugin's colour network, fits those it builds)."""
    def fits(channels: int) -> bool:
        with torch.random.fork_rng():  # a check: the caller's random state stays
            try:
                own = build_backbone(backbone, num_classes=num_classes, in_channels=channels, image_size=image_size,
                                     head=_head_kind(state)).state_dict()
            except Exception:  # a builder's own refusal of these channels (a plugin's ValueError, ...)
                return False
        return set(own) == set(state) and all(own[k].shape == state[k].shape for k in own)
    found = [c for c in (1, 3) if fits(c)]
    return found[0] if len(found) == 1 else None


def shared_images(pool: Domain, other: Domain) -> int:
    """How many images of ``other`` are also in ``pool``, pixel for pixel (vectorised: an integer
    fingerprint per image, exact whatever the thread count, finds the candidates, whose pixels
    are then compared; computed in chunks, so no copy of a whole domain is made)."""
    if len(pool) == 0 or len(other) == 0 or pool.images.shape[1:] != other.images.shape[1:]:
        return 0
    probe = torch.randint(0, 2**31, (pool.images[0].numel(),), generator=torch.Generator().manual_seed(0))

    def prints(images):  # pixels to 0..255 integers: equal images give equal numbers (int64 sums wrap alike)
        return torch.cat([(c * 255).round().long() @ probe for c in images.flatten(1).split(4096)])
    mine, order = torch.sort(prints(pool.images))
    theirs = prints(other.images)
    pos = torch.searchsorted(mine, theirs).clamp(max=len(mine) - 1)
    hit = (mine[pos] == theirs).nonzero().flatten()
    return int((pool.images[order[pos[hit]]] == other.images[hit]).flatten(1).all(1).sum())


def _unlabeled_overlap(cfg: ExperimentConfig, unlabeled: Domain, target: Split) -> dict:
    """``{"val": n, "test": n}``: the config's unlabelled images that are also target val / test
    images, pixel for pixel (a warning names them: the methods would adapt on images they are
    scored on, a transductive protocol that the target's own split avoids)."""
    found = {part: shared_images(unlabeled, getattr(target, part)) for part in ("val", "test")}
    if any(found.values()):
        warn(f"unlabeled {cfg.unlabeled!r}: " + " and ".join(f"{n} of its images are target {part} images"
                                                             for part, n in found.items() if n)
             + f" (pixel for pixel, of {len(target.test)} test and {len(target.val)} val): the methods that read "
               f"them adapt on images they are then scored on (transductive), which the target's own split avoids; "
               f"leave those images out of the unlabelled set (rows record unlabeled_in_test)")
    return found


def test_fields(cfg: ExperimentConfig, data: Prepared) -> dict:
    """A row's fields on its test split: its size, and of a config's ``test`` the spec, the
    target classes it holds images of and its images that are also target train / val images."""
    out = {"n_test": len(data.target.test)}
    if data.target.test.groups is not None:  # grouped accuracy is over the groups (videos)
        out["n_test_groups"] = int(torch.unique(data.target.test.groups).numel())
    if cfg.test is not None:
        out.update(test=cfg.test, n_test_classes=len(data.target.test.present_classes()),
                   n_target_classes=data.target.train.num_classes, test_in_target=sum(data.test_overlap.values()))
    return out


def as_target_test(cfg: ExperimentConfig, test: Domain, train: Domain, channels: int) -> Domain:
    """The config's ``test`` domain as the target's test split: in the run's channels, its
    images of the target's classes (matched by name) labelled as the target labels them."""
    if test.images.shape[1] != channels:
        warn(f"test {cfg.test!r}: its images have {test.images.shape[1]} channel(s) and are converted to the run's "
             f"{channels} ({_channels_origin(cfg)})")
        test = test.to_format(channels=channels)
    present = [test.class_names[i] for i in test.present_classes()]
    shared = [c for c in present if c in train.class_names]
    check(shared, f"test {cfg.test!r} has no image of a target class: its classes {present[:10]}, the target's "
                  f"{train.class_names[:10]} (classes are matched by name)")
    if len(shared) < len(present):
        warn(f"test {cfg.test!r}: its class(es) {[c for c in present if c not in shared][:10]} are not target "
             f"classes{' (target_classes)' if cfg.target_classes is not None else ''}; their images are left out")
    kept = test.select_classes(shared)
    labels = torch.tensor([train.class_names.index(c) for c in kept.class_names])[kept.labels]
    return Domain(f"{dataset_name(test.name)}/test", kept.images, labels, list(train.class_names), kept.groups,
                  {**test.provenance, "split": "test", "test_of": cfg.target})


def narrowed(split: Split, classes) -> Split:
    """``split`` with only ``classes`` (a class list, see ``parse_classes``; ``None``: all)
    in each part, relabelled in the given order."""
    if classes is None:
        return split
    ids = parse_classes(classes, split.train)
    if not (isinstance(classes, str) and classes.strip().lower() == "all"):
        counts = split.train.class_counts()
        empty = [split.train.class_names[i] for i in ids if int(counts[i]) == 0]
        check(not empty, f"domain {dataset_name(split.train.name)!r} has no training image of class(es) "
                         f"{empty[:10]} named in the class list {classes!r}: leave them out of the list")
    return Split(split.train.select_classes(ids), *(part.select_classes(ids, allow_empty=True)
                                                    for part in (split.val, split.test)))


def retarget_head(net, source_classes: list[str] | None, target_classes: list[str]) -> list[str]:
    """Give ``net`` a head over the target classes, copying the rows of classes shared
    with the source (a new classifier row for each new class, as in seed 000 §4.1 fine-tuning).
    Only the head's final layer is replaced (:func:`~transferkit.heads.retargeted_head`): the
    hidden layers of an MLP head (an ``nn.Sequential`` ending in a linear layer) keep their
    weights. A head without such a final layer (a module of one's own) is replaced by a new
    linear head, with a warning: none of its layers or rows are kept.
    ``source_classes=None`` (the head's classes are unknown, e.g. a network handed in
    without its source domain): new rows for every class, only when the class counts differ.
    Returns the target classes whose rows are new (untrained)."""
    n = len(target_classes)
    if source_classes is None:
        if net.num_classes == n:
            return []
        rows: list[int | None] = [None] * n
    elif list(source_classes) == list(target_classes):
        return []
    else:
        rows = head_mapping(source_classes, target_classes)
    old = net.get_classifier()
    new = None if net.num_classes == 0 else retargeted_head(old, rows)  # reset_classifier(0): no classifier
    if new is not None:
        new.train(net.training)
        net.head = new
        return [c for c, r in zip(target_classes, rows) if r is None]
    if net.num_classes != 0:
        kept = [c for c, r in zip(target_classes, rows) if r is not None]
        warn(f"the network's head ({type(old).__name__}) has no final linear layer whose class rows can be "
             f"retargeted (a linear or cosine head, or an nn.Sequential whose last layer with parameters is one), "
             f"so it is replaced by a new linear head on the {net.embed_dim}-d embedding for the {n} target "
             f"classes: none of its layers" + (f", nor the rows of the classes it shares with the target "
                                              f"({kept[:5]}{', ...' if len(kept) > 5 else ''}), are kept"
                                              if kept else " are kept") +
             ". To keep them, give the head as an nn.Sequential ending in its nn.Linear classifier")
    net._new_classifier(n)  # reset_classifier without its own warning about the layers dropped
    return list(target_classes)


def _initial_source_net(cfg: ExperimentConfig, data: Prepared, head: str = "linear"):
    """The source network's initial weights; ``head``: the kind of head a network file holds
    (:func:`_head_kind`: a cosine or prototype head that finetune_cosine / _proto trained)."""
    torch.manual_seed(cfg.seed)  # the initial weights; PyTorch 2.13 seeds each process at random
    return build_backbone(cfg.backbone, num_classes=data.source.train.num_classes, in_channels=data.channels,
                          image_size=cfg.image_size, head=head)


def _read_source_file(cfg: ExperimentConfig, data: Prepared, path: Path, classes=None, hint: str = ""):
    """The network of a source network file (a ``pretrained:`` file, a run's pinned copy), built
    with the head the file holds."""
    read = _read_net_file(path, hint)
    net = _initial_source_net(cfg, data, _head_kind(read[0]))
    _load_net(net, path, classes=classes, hint=hint, read=read)
    _restore_head(net, read[1])
    return net


def pretrain_source(cfg: ExperimentConfig, data: Prepared, log=print):
    """Pre-train the backbone on the labelled source (cached on disk by content key: data,
    backbone (a plugin's: its network's definition and initial weights too), budget, seed,
    device, the torch thread count and kernels on CPU and the number of data-parallel processes).

    Returns ``(net, info)`` where ``info`` has the source validation accuracy, wall
    seconds, whether the network came from the cache and (unless it is a ``pretrained:``
    file's) its :func:`network_digest`."""
    source = data.source
    if cfg.pretrained:  # checked against the class names a transferkit pre-training stored in the file
        net = _read_source_file(cfg, data, Path(cfg.pretrained).expanduser(), source.train.class_names,
                                f"{PRETRAINED_FILE}; {SAVE_NETWORK}")
        return net, {"cached": True, "wall_s": 0.0, "path": str(Path(cfg.pretrained).expanduser())}
    net = _initial_source_net(cfg, data)
    train = cfg.pretrain if cfg.pretrain.device == cfg.device else replace(cfg.pretrain, device=cfg.device)
    # the network depends on the torch version, on the thread count and kernels on CPU (the GPU
    # model and CUDA version otherwise) and on the number of data-parallel processes (the order
    # of floating-point sums): one trained otherwise is not reused by a run that could not reproduce it
    device = resolve_device(train.device)
    run = {"torch": torch.__version__}
    if device.type == "cpu":
        run |= {"threads": torch.get_num_threads(), "kernels": cpu_kernels()}
    else:
        run |= {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                "cuda": torch.version.cuda}
    if world_size() > 1:
        run["world"] = world_size()
    # a plugin's builder may change under the same name, or start from weights of its own (a file
    # it loads): its network's definition and initial weights are keyed too. A built-in's initial
    # weights follow from what the key holds (transferkit's version, seed, torch, classes, size)
    definition = {} if is_built_in(cfg.backbone) else {"definition": definition_digest(net),
                                                       "init": network_digest(net)}
    key = hashlib.sha256(json.dumps({
        "v": [__version__, PRETRAIN_FORMAT], "source": cfg.source, "classes": source.train.class_names,
        "n": len(source.train), "data": [source.train.digest(), source.val.digest()],
        "size": cfg.image_size, "channels": data.channels, "backbone": cfg.backbone,
        "train": keyed_fields(_result_neutral_defaults(train)), "seed": cfg.seed, **run, **definition},
        sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "pretrained" / f"{cfg.backbone}-{key}.safetensors"
    # one process trains a given network at a time; another run that needs it waits, then reads it
    # (not under torchrun, whose ranks train it together)
    with waiting_lock(path.with_suffix(".lock")) if world_size() == 1 else contextlib.nullcontext():
        if path.exists():
            try:
                _load_net(net, path)
                meta = json.loads(path.with_suffix(".json").read_text())
                check(isinstance(meta, dict), f"{path.with_suffix('.json')} holds no record")
                digest = network_digest(net)
                check(meta.get("digest", digest) == digest,  # records from before: none
                      f"{path} is not the network its record describes (a changed byte?)")
                return net, {**meta, "digest": digest, "cached": True, "path": str(path)}
            except (TransferkitError, OSError, ValueError) as e:  # the network's file or its record
                log(f"pre-trained cache {path.with_suffix('.*')} unreadable or changed ({e}); training again")
                net = _initial_source_net(cfg, data)  # from the initial weights, not from what was loaded
        log(f"pre-training {cfg.backbone} on {cfg.source} ({len(source.train)} images, {cfg.pretrain.steps} steps)")
        method = SourceOnly(net)
        ckpt = path.with_suffix(".ckpt")  # a killed pre-training resumes from here
        fit = Engine(train, seed=cfg.seed, checkpoint_dir=ckpt).fit(method, source=source.train, val=source.val)
        meta = {"val_accuracy": fit.val_accuracy, "steps": fit.steps, "wall_s": fit.wall_s,
                "digest": network_digest(net)}
        if is_main_process():
            save_network(net, path, source.train.class_names)
            write_json(path.with_suffix(".json"), meta)
            shutil.rmtree(ckpt, ignore_errors=True)
        barrier()
    return net, {**meta, "cached": False, "path": str(path)}


def run_source_network(cfg: ExperimentConfig, data: Prepared, run_dir: Path, log=print, check_digest=None):
    """The run's source network, pinned in its directory (``source.safetensors``: a hard
    link to the cached pre-training, which is only ever replaced, never rewritten, or a copy
    of a ``pretrained:`` file; ``source.json``) the first time and read from there on resume:
    every job of a run starts from the same network, even when a resume would pre-train
    another one (another thread count, a cleared cache) or the ``pretrained:`` file was
    overwritten. ``check_digest(digest)``: called with the network's :func:`network_digest`
    before it is pinned (it may refuse it: nothing is pinned then)."""
    pinned, check_digest = run_dir / "source.safetensors", check_digest or (lambda digest: None)
    if not pinned.exists():
        net, info = pretrain_source(cfg, data, log)
        digest = info.get("digest") or network_digest(net)  # a pretrained: file's network has none yet
        check_digest(digest)
        if is_main_process():
            meta = {k: info[k] for k in ("val_accuracy", "steps", "wall_s") if k in info}
            write_json(pinned.with_suffix(".json"), meta)  # first: a pinned network always has its record
            _pin(Path(info["path"]), pinned, link=not cfg.pretrained)
            info = {**info, "path": str(pinned)}
        return net, {**info, "digest": digest}
    net = _read_source_file(cfg, data, pinned, hint=_repin_hint(cfg))  # as pretrain_source: the same random state
    record = pinned.with_suffix(".json")
    again = "restore it, or delete it and source.safetensors to pin the source network again"
    meta = read_json(record, "source network record", again) if record.exists() else {}
    check(isinstance(meta, dict), f"{record} is not a source network record (a JSON object): {again}")
    digest = network_digest(net)
    check_digest(digest)
    return net, {"wall_s": 0.0, **meta, "cached": True, "path": str(pinned), "digest": digest}


def network_digest(net: torch.nn.Module) -> str:
    """A digest of a network's weights and buffers (16 hex digits): rows record the source
    network they started from (``source_digest``)."""
    return hashlib.sha256(content_text(net).encode()).hexdigest()[:16]


def job_environment(source_digest: str | None, trained: bool = True) -> dict:
    """What a row records of where it was computed, besides ``world_size``: the torch threads
    of its process (``trained``: a job that trains; source_only's row only evaluates the source
    network, in the main process), the CPU kernels, the source network it started from
    (``None``: none) and the :func:`~transferkit.runtime.invocation` that computed it."""
    k = cpu_kernels()
    return {**({"threads": torch.get_num_threads()} if trained else {}), "world_size": world_size(),
            "kernels": f"{k['cpu_capability']} (MKL_CBWR {k['mkl_cbwr']}, oneDNN {k['onednn_max_cpu_isa']})",
            **({"source_digest": source_digest} if source_digest else {}), "invocation": invocation()}


def _made_otherwise(finished: dict, key: str, now) -> list[tuple[str, int]]:
    """The ``(method, seed)`` of the finished rows whose ``key`` is not ``now``; a row without
    ``key`` (written before it was recorded) is not counted."""
    return sorted(job for job, row in finished.items() if row.get(key, now) != now)


def _check_same_source(run_dir: Path, finished: dict, digest: str) -> None:
    """Refuse to add rows from another source network than the finished rows started from (a
    deleted ``source.safetensors`` pre-trained again under other threads or kernels); rows
    without ``source_digest`` (written before it was recorded) are not checked."""
    other = [f"{name} seed {seed}" for name, seed in _made_otherwise(finished, "source_digest", digest)]
    check(not other, f"{run_dir}: {len(other)} finished job(s) ({', '.join(other[:5])}) started from another "
                     f"source network than this resume has ({digest}; source.safetensors was made again, under other "
                     f"threads, CPU kernels or torch than kernels.json records, or by a plugin backbone's builder "
                     f"that changed since?): their rows and new ones would not go together; restore "
                     f"source.safetensors, resume under the environment of kernels.json, or start a new run (or "
                     f"delete those job files to run them again)")


def _repin_hint(cfg: ExperimentConfig) -> str:
    """What to do about a run's unreadable ``source.safetensors``, and when that gives the network back."""
    if cfg.pretrained:
        return (f"delete it and resume to copy the pretrained: file {cfg.pretrained} again (the network the finished "
                f"jobs started from unless that file changed since)")
    return ("delete it and resume to pin the source network again: it is read from the pre-training cache or "
            "pre-trained again from the config and seed, which gives the network the finished jobs started from "
            "under the torch version, device, threads and CPU kernels of the run's kernels.json (a resume notes "
            "others; then start a new run)")


def _pin(src: Path, dst: Path, link: bool) -> None:
    """``dst`` becomes ``src``'s content at once: a hard link (renamed into place; the
    linked file itself is never touched) or, for other file systems and with ``link=False``,
    an atomic copy."""
    if link:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return
        except OSError:  # another file system, or none with hard links
            tmp.unlink(missing_ok=True)
    atomic_write(dst, lambda p: shutil.copyfile(src, p))


#: ``data.json``'s format: 2 adds class names and groups to each split's digest
DATA_FORMAT = 2


def _splits(data: Prepared) -> dict:
    """``{"source.train": domain, ...}``: the six splits of a run."""
    splits = {f"{side}.{part}": getattr(getattr(data, side), part)
              for side in ("source", "target") for part in ("train", "val", "test")}
    return splits if data.unlabeled is None else {**splits, "unlabeled": data.unlabeled}


def data_digests(data: Prepared) -> dict:
    """Content digests of the run's splits: images, labels, class names and groups; with a
    folder, the version of its label draws (:data:`FOLDER_LABEL_DRAWS`)."""
    out: dict = {"format": DATA_FORMAT}
    for key, d in _splits(data).items():
        h = hashlib.sha256(f"{d.digest()}|{json.dumps(list(d.class_names))}".encode())
        if d.groups is not None:
            h.update(d.groups.detach().cpu().contiguous().numpy().data)
        out[key] = h.hexdigest()[:16]
        if key.startswith("target.") and str(d.provenance.get("origin", "")).startswith("folder:"):
            out["folder_label_draws"] = FOLDER_LABEL_DRAWS  # the labels drawn from a target folder
    return out


#: how a folder's k / ratio label subsets are drawn: 2 since 2026-12-02 10:00 UTC (keys mixed otherwise
#: than the split's; videos by their sub-folders): a folder run made before cannot resume with other subsets
FOLDER_LABEL_DRAWS = 2


def _check_same_data(run_dir: Path, data: Prepared, main: bool) -> None:
    """A run directory's rows are kept only while the data is what they were computed on (a
    ``folder:`` / ``npz:`` domain may change under the same config); ``data.json`` records
    it. Without rows, new data is recorded and a source network pinned for the old one is
    dropped."""
    path, now = run_dir / "data.json", data_digests(data)
    sizes = {key: len(d) for key, d in _splits(data).items()}  # for the message: not compared
    then = read_json(path, "data.json", "restore it, or start a new run") if path.exists() else None
    check(then is None or isinstance(then, dict), f"{path} is not a data record (not a mapping): restore it, or start "
                                                  f"a new run")
    stored = then
    old_sizes = (then or {}).get("sizes") if isinstance((then or {}).get("sizes"), dict) else {}
    then = None if then is None else {k: v for k, v in then.items() if k != "sizes"}
    if then is not None and "format" not in then:  # format 1 (2026-11-29): images and labels only
        old = {key: d.digest() for key, d in _splits(data).items()}
        then = now if then == old else then
    rows = (run_dir / "jobs").is_dir() and any((run_dir / "jobs").glob("*.json"))
    changed = set() if then is None else {k for k in set(then) | set(now) if then.get(k) != now.get(k)}
    unlabelled_only = changed == {"unlabeled"}
    if rows and unlabelled_only and not _rows_read_unlabelled(run_dir):
        rows = False  # only unlabelled images changed, and no finished job read them: its rows stand
    if then is None or then == now:
        if main and stored != {**now, "sizes": sizes}:
            write_json(path, {**now, "sizes": sizes})
        return
    diff = sorted(changed - {"format"})
    check(not rows or diff != ["folder_label_draws"],
          f"{run_dir} was made before 2026-12-02 10:00 UTC, since when a target folder's label subsets (k, ratio) "
          f"are drawn otherwise: its unfinished jobs would train on other labelled images than its finished ones; "
          f"start a new run")
    splits = _splits(data)
    origins = [str(splits[k].provenance.get("origin", "")) for k in diff if k in splits]
    built = any(not o.startswith(("folder:", "npz:")) for o in origins)
    folder = any(o.startswith("folder:") for o in origins)
    counted = [f"{k}: {old_sizes[k]:,} images there, {sizes[k]:,} now" for k in diff
               if k in sizes and isinstance(old_sizes.get(k), int) and old_sizes[k] != sizes[k]]
    check(not rows, f"{run_dir} holds results computed on other data: the images, labels, class names or group ids "
                    f"of {', '.join(diff)} changed since" + (f" ({'; '.join(counted)})" if counted else "")
                    + "; restore them, or start a new run"
                    + (" (built-in domains are rendered under the CPU kernels in force: resume with those of the "
                       "run's kernels.json, e.g. --portable-kernels)" if built else "")
                    + (" (if the folder's files did not change: since 2026-12-02 a folder's split and label subsets "
                       "place each file by a hash of its path, and class names are compared in one Unicode form, so "
                       "a folder run made before then was cut otherwise and cannot resume)" if folder else "")
                    + (" (folder_label_draws: since 2026-12-02 10:00 UTC a target folder's label subsets are drawn "
                       "otherwise, so a folder run made before then would give its unfinished jobs other labelled "
                       "images than its finished ones)" if "folder_label_draws" in diff else ""))
    if main:  # what was made from the old data: its source network and the checkpoints of unfinished jobs
        for name in ("source.safetensors", "source.json") if not unlabelled_only else ():  # no source image changed
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        write_json(path, {**now, "sizes": sizes})


def _rows_read_unlabelled(run_dir: Path) -> bool:
    """Whether a finished job of ``run_dir`` trained on unlabelled images (its method reads the
    ``unlabeled`` stream), or a job file cannot say (unreadable, or a method not known here)."""
    for job in (run_dir / "jobs").glob("*.json"):
        try:
            if "unlabeled" in get_method(read_job(job, ("method",))["method"]).streams:
                return True
        except (TransferkitError, KeyError):
            return True
    return False


def save_network(net, path: str | os.PathLike, class_names=None) -> Path:
    """Write ``net``'s weights (a :class:`~transferkit.backbones.UnitNet`'s state_dict, keys
    ``units.<unit>.…`` and ``head.…``) to the safetensors file ``path``, atomically: the file
    that ``pretrained:`` reads. ``class_names``: the source classes of the head's rows, in
    order (stored as the metadata ``class_names``, a JSON list; a run checks them against its
    source's), as a pre-training of transferkit stores them. A fitted model (a ``Transfer``, or
    the method :func:`load_model` returns) gives its network and classes, and is refused when
    its network alone does not make its predictions (``Method.predicts_with_net``)."""
    method = net if isinstance(net, Method) else getattr(net, "method_", None)  # a loaded method, or a Transfer
    if isinstance(method, Method):
        check(method.predicts_with_net, f"save_network: {method.name} does not predict with its network alone "
                                        f"({method.name}'s predictions also read {method.predictor_parts()}), so the "
                                        f"network's weights would classify otherwise: save the whole model "
                                        f"(torch.save(model, path)) or trace it, torch.jit.trace(model.method_ or the "
                                        f"loaded method, example_images)")
        class_names = class_names if class_names is not None else getattr(net, "classes_", None)
        net = method.net
    check_unitnet(net, "save_network")
    extra = _added_parameters(net)
    check(not extra, f"save_network: the network holds parameters its backbone {net.name!r} does not have "
                     f"({extra[0] if extra else ''}, ...: a method added them, as ft_ss's scale-and-shift or "
                     f"image_unit's image unit), so a file of it would not load as the backbone's weights "
                     f"(pretrained:, load_network); save the whole model (torch.save(model, path)) or trace it")
    class_names = class_names if class_names is not None else getattr(net, "class_names", None)
    metadata = None
    if class_names is not None:
        names = list(class_names)
        rows = known_outputs(net)
        check(all(isinstance(c, str) for c in names) and len(names) == (rows or len(names)),
              f"save_network: class_names must name the {rows} rows of the head, in order, as text "
              f"(the source domain's class_names), got {names[:12]}")
        metadata = {"class_names": json.dumps(names)}
    if isinstance(getattr(net, "head", None), PrototypeHead):  # what its state holds not: how it scores
        metadata = {**(metadata or {}), "prototype_head": json.dumps({"metric": net.head.metric,
                                                                      "scale": net.head.scale})}
    return save_safetensors(path, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, metadata)


def _restore_head(net, metadata: dict) -> None:
    """A prototype head's metric and scale, which :func:`save_network` stores beside its prototypes
    (a file without them: the defaults, sqeuclidean)."""
    stored = metadata.get("prototype_head")
    if stored is not None and isinstance(net.head, PrototypeHead):
        options = json.loads(stored)
        net.head.metric, net.head.scale = str(options["metric"]), float(options["scale"])


#: what a ``pretrained:`` file must be, and what writes one
PRETRAINED_FILE = ("pretrained: takes a safetensors file of the backbone's weights, the UnitNet's state_dict (keys "
                   "units.<unit>.… and head.…)")
SAVE_NETWORK = "transferkit.save_network(net, path, class_names=[...]) writes one (README: pretrained)"


def _torch_file(path: Path) -> bool:
    """``path`` is what ``torch.save`` writes: a zip archive with a ``data.pkl``, or a bare pickle."""
    try:
        with open(path, "rb") as f:
            if f.read(1) == b"\x80":
                return True
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_net(net, path: Path, classes: list[str] | None = None, hint: str = "", read=None) -> None:
    """Load ``path`` into ``net``. With ``classes`` (the source's), a file that names the
    classes of its head's rows (transferkit's pre-trainings since 2026-12-01) must name
    these, in this order: the rows are taken by position. ``hint``: what to do when it is unreadable;
    ``read``: its ``(state, metadata)`` when the caller has read them (:func:`_read_net_file`)."""
    state, metadata = read or _read_net_file(path, hint)
    stored = _stored_classes(path, metadata)
    if classes is not None and stored is not None and stored != list(classes):
        raise TransferkitError(f"pre-trained network {path} was trained on the classes {stored} (its "
                               f"head's rows in that order), but the source has {list(classes)}: its outputs would "
                               f"mean other classes. Give source_classes in the network's order, or pre-train anew")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        check_state_fits(net, state, f"pre-trained network {path}")  # names the first of each kind in one line
        raise TransferkitError(f"pre-trained network {path} does not fit backbone {net.name!r}: {e}") from e
    net.eval()


def _read_net_file(path: Path, hint: str = "") -> tuple[dict, dict]:
    """A network file's tensors and metadata (its stored class names); a ``torch.save`` file is
    refused, naming what to write instead."""
    check(path.exists(), f"pre-trained network {path} does not exist")
    try:
        return load_safetensors(path, "pre-trained network", hint)
    except TransferkitError as e:
        if not _torch_file(path):
            raise
        raise TransferkitError(f"pre-trained network {path} is a PyTorch file (torch.save), not a safetensors file: "
                               f"{PRETRAINED_FILE}. Build the backbone, load your weights into it "
                               f"(net.load_state_dict(torch.load(file)) when they have its keys; else load them into "
                               f"your own module and cut that into units as the builder does); then {SAVE_NETWORK}"
                               ) from e


def _head_kind(state: dict) -> str:
    """The kind of head (:data:`~transferkit.heads.HEADS`) whose parameters a network's state holds."""
    return "prototype" if "head.prototypes" in state else "cosine" if "head.scale" in state else "linear"


def _added_parameters(net) -> list[str]:
    """The state keys of a built-in backbone's network that a fresh build of it lacks (a method's
    additions); none for a network of another builder or of no declared input shape."""
    if not is_built_in(net.name) or net.input_shape is None:
        return []
    state = net.state_dict()
    with torch.random.fork_rng():  # a check: the caller's random state stays
        try:
            fresh = build_backbone(net.name, num_classes=known_outputs(net) or 1, in_channels=net.input_shape[0],
                                   image_size=net.input_shape[-1], head=_head_kind(state))
        except TransferkitError:
            return []
    return [k for k in state if k not in fresh.state_dict()]


def load_network(path: str | os.PathLike, backbone: str, in_channels: int | None = None, image_size: int = 28):
    """The network of a :func:`save_network` file (or a run's ``source.safetensors``), built as
    ``backbone`` for images of ``in_channels`` x ``image_size`` (``None``: the channels, 1 or 3,
    whose build the file fits, else 1): its head has the rows the file
    holds, and ``net.class_names`` the classes the file names for them (None where it names none).
    ``Transfer.fit(net=net)`` without ``source=`` then matches the target's classes to those rows
    by name, not by position."""
    path = Path(path).expanduser()
    check(path.is_file(), f"load_network: {path} does not exist or is not a file")
    state, metadata = _read_net_file(path)
    names = _stored_classes(path, metadata)
    heads = [v for k, v in state.items() if k.startswith("head.") and k.endswith(("weight", "prototypes"))
             and v.dim() == 2]  # a linear or cosine head's weight, or a prototype head's prototypes
    rows = len(names) if names is not None else int(heads[-1].shape[0]) if heads else None
    check(rows is not None, f"load_network: {path} names no classes and holds no head weight to count its rows by")
    if in_channels is None:
        in_channels = _file_channels(backbone, rows, image_size, state) or 1
    net = build_backbone(backbone, num_classes=rows, in_channels=in_channels, image_size=image_size,
                         head=_head_kind(state))  # a cosine or prototype head, as finetune_cosine / _proto train
    _load_net(net, path, read=(state, metadata))
    _restore_head(net, metadata)
    net.class_names = names
    return net


def _stored_classes(path: Path, metadata: dict) -> list[str] | None:
    """The class names a network file stores for its head's rows (a JSON list of text), if any."""
    stored = metadata.get("class_names")
    if stored is None:
        return None
    try:
        names = json.loads(stored)
    except ValueError:
        names = None
    check(isinstance(names, list) and all(isinstance(c, str) for c in names),
          f"pre-trained network {path}: its metadata class_names must be a JSON list of class names, got "
          f"{stored[:80]!r} (save_network writes it)")
    return names


def check_state_fits(net, state: dict, what: str) -> None:
    """Refuse, in one line, a ``state`` dict that ``net`` cannot load: how many tensors are
    missing, unexpected or of another shape, with the first of each."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or shaped):
        return
    parts = [f"{len(missing)} tensor(s) missing (first {missing[0]!r})"] if missing else []
    parts += [f"{len(unexpected)} unexpected (first {unexpected[0]!r})"] if unexpected else []
    if shaped:
        k = shaped[0]
        parts.append(f"{len(shaped)} of another shape (first {k!r}: {tuple(state[k].shape)} in the file, "
                     f"{tuple(own[k].shape)} here)")
    raise TransferkitError(f"{what} does not fit backbone {net.name!r}: "
                           f"{'; '.join(parts)}. It was saved from another backbone, or for another number of "
                           f"classes, channels or image size")


def evaluate_on(forward, domain: Domain) -> dict:
    if isinstance(forward, Method):
        logits = forward.logits(domain.images)
    else:
        if isinstance(forward, torch.nn.Module):
            forward.eval()
        logits = predict_logits(forward, domain.images)
    return classification_report(logits, domain.labels, domain.num_classes, domain.groups)


def source_only_model(net, data: Prepared, before_narrowing=None) -> SourceOnly:
    """source_only's model, in eval mode: a copy of the source network whose head keeps the
    rows of the target classes (by name), so its logits are ``net(x)[:, rows]``.
    ``before_narrowing(model, rows)`` is called before it keeps them, as in :func:`fit_for_target`."""
    return source_only_of(copy.deepcopy(net), data.source.train.class_names, data.target.train.class_names,
                          before_narrowing)  # a run refused what it cannot match before (_check_jobs)


def source_only_of(net, head_classes: list[str] | None, target_classes: list[str], before_narrowing=None,
                   network_only: bool = False) -> SourceOnly:
    """:func:`source_only_model` of ``net`` itself, whose head's rows are ``head_classes``
    (``None``: taken by position), for ``target_classes``; ``network_only``: no source domain
    (``source: null``, ``Transfer.fit(net=)`` without ``source=``), which a refusal's hint names."""
    model = SourceOnly(net)
    rows = source_head_rows(SourceOnly, head_classes, net.num_classes, target_classes, network_only)
    if rows is not None:
        if before_narrowing is not None:
            before_narrowing(model, rows)
        model.net.head = head_for_classes(model.net.head, rows, model.net.num_classes)
    return model.eval()


def all_source_classes_fields(method, rows: list[int], domain: Domain) -> dict:
    """Partial domain adaptation (the target's classes a strict subset of the source's): the
    accuracy on ``domain`` (labelled with the target classes, whose source-head rows are ``rows``)
    of the argmax over *every* source class, as the partial-DA protocol scores it, from ``method``
    whose head still has them all: ``accuracy_all_source_classes`` and ``n_source_classes`` of a
    row; ``{}`` when the target has every source class (the argmax is then the same)."""
    n = method.net.num_classes
    if len(set(rows)) >= n:
        return {}
    pred = method.logits(domain.images).argmax(1)
    truth = torch.tensor(rows, dtype=torch.long)[domain.labels]
    return {"accuracy_all_source_classes": fraction_correct(pred.cpu(), truth), "n_source_classes": n}


def selection_domain(cfg: ExperimentConfig, data: Prepared, cls=None) -> Domain | None:
    """The labelled domain that early stopping / model selection looks at (never the test
    split): the target validation split (seed 002 protocol), the source validation split
    (no target label used, the unsupervised setting), or none (fixed budget). A method
    ``cls`` that reads no target label (unsupervised adaptation) is never given the target's
    labels to select on: none for ``target_val`` (``_check_jobs`` warns)."""
    if cfg.select_on == "target_val" and cls is not None and reads_no_target_label(cls):
        return None
    return {"target_val": data.target.val, "source_val": data.source.val, "none": None}[cfg.select_on]


def reads_no_target_label(cls) -> bool:
    """Unsupervised adaptation and source_only: no target stream, the source head predicts."""
    return "target" not in cls.streams and cls.predicts_with_source_head()


def unsupervised_validation(name: str, source: Domain | None, unlabeled: Domain | None,
                            val: Domain | None) -> Domain | None:
    """The ``val`` that a method which reads no target label (:func:`reads_no_target_label`)
    may select on: none, with a warning, for one cut from the unlabelled target's domain and not
    from the source's; one recognisably cut from neither is kept, with a warning that it may
    hold target labels. Which domain a split part was cut from: the ``spec`` it was loaded from
    (:func:`~transferkit.data.load_domain` records it in ``provenance``; every split keeps
    it), else the folder or file it was read from (``origin``: two image folders both named
    ``images`` differ), else its name (:func:`~transferkit.splits.dataset_name`: ``mnist/val``
    and ``mnist/train/unlabeled``)."""
    def base(d):
        if d is None:
            return None
        origin = d.provenance.get("origin", "")
        return (d.provenance.get("spec") or (origin if origin.startswith(("folder:", "npz:")) else None)
                or dataset_name(d.name))
    if val is not None and base(val) == base(unlabeled) != base(source):
        warn(f"{name}: ignoring the labelled target validation split for model selection "
             "(it reads no target label); set select_on: none or source_val in a run, or leave out "
             "val= in Transfer.fit")
        return None
    if val is not None and source is not None and base(val) != base(source):
        warn(f"{name}: early stopping selects on the labels of val {val.name!r}, which is not "
             f"recognisably a split of the source {source.name!r}: if it holds target labels, this "
             f"method, which reads no target label, reads them after all (leave out val=, or give a split "
             f"of the source, e.g. transferkit.splits.split_domain(source).val)")
    return val


def label_subset(cfg: ExperimentConfig, target: Split, seed: int,
                 unlabeled: Domain | None = None) -> tuple[Domain, Domain]:
    """``(labelled target images, unlabelled target images)`` of one label subset (``seed``);
    ``unlabeled`` (the config's ``unlabeled`` images) replaces the second."""
    labeled, rest = _label_subset(cfg, target, seed)
    return labeled, rest if unlabeled is None else unlabeled


def _label_subset(cfg: ExperimentConfig, target: Split, seed: int) -> tuple[Domain, Domain]:
    if cfg.k is not None and target.train.groups is not None:
        return sample_k_groups(target.train, cfg.k, seed)  # k labelled groups (videos) per class
    if cfg.k is not None:
        return sample_k_shot(target.train, cfg.k, seed)
    if cfg.ratio is not None:
        counts = target.train.class_counts()
        smallest = int(counts[counts > 0].min())
        if smallest < cfg.ratio:
            warn(f"ratio {cfg.ratio}: the smallest class of {target.train.name!r} has "
                 f"{smallest} training images; those classes keep all of theirs "
                 f"(the rows' n_labeled says how many were used)")
        labeled = subsample_per_class(target.train, cfg.ratio, seed)
        return labeled, target.train
    return target.train, target.train


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """A fresh ``out_dir/name/<timestamp>``; under torch.distributed every rank gets rank 0's."""
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S-%f")]
    if world_size() > 1:
        torch.distributed.broadcast_object_list(stamp, src=0)
    return Path(cfg.out_dir).expanduser() / cfg.name / stamp[0]


def job_path(run_dir: Path, cfg: ExperimentConfig, method: str, seed: int) -> Path:
    return Path(run_dir) / "jobs" / f"{method}-{cfg.setting}-s{seed}.json"


def source_head_rows(cls, head_classes: list[str] | None, num_outputs: int,
                     target_classes: list[str] | None, network_only: bool = False) -> list[int] | None:
    """For a method that predicts with its head trained on the source classes
    (``Method.predicts_with_source_head``: source_only and the domain adaptation family), the
    rows of that head that predict the target classes, matched by name; ``None`` when its
    outputs already are the target classes. Refuses a target class the source does not
    have: such a method cannot predict it (``network_only``: a run without source images,
    ``source: null``, whose hint names what it can run)."""
    if not cls.predicts_with_source_head() or target_classes is None:
        return None
    if head_classes is None:  # a network handed in without its source domain
        check(num_outputs == len(target_classes),
              f"it predicts with the network's own classifier ({num_outputs} outputs), which cannot be matched "
              f"to the {len(target_classes)} target classes: "
              + ("set net.class_names = [the class of each row] to match them by name" if network_only else
                 "give the source domain as well, or set net.class_names = [the class of each row]"))
        return None
    check(len(head_classes) == num_outputs, f"the network has {num_outputs} outputs for {len(head_classes)} "
                                            f"source classes")
    if list(head_classes) == list(target_classes):
        return None
    rows = head_mapping(list(head_classes), list(target_classes))
    missing = [c for c, r in zip(target_classes, rows) if r is None]
    check(not missing or not network_only,
          f"it predicts with the network's classifier, whose classes ({list(head_classes)[:10]}) lack the target "
          f"classes {missing[:10]}: train on a few target labels (finetune, linear_probe, ...), or, if they are "
          f"the same classes, name the target's classes as the network's (class names are matched, not positions)")
    check(not missing, f"it never sees target labels and predicts with the source classifier, so it cannot "
                       f"predict target classes absent from the source: {missing}. For target classes the source "
                       f"lacks, train on a few target labels: finetune_adv or lext (seed 000's setting: k labelled "
                       f"target images per class and the unlabelled rest; set k in a run, give target= in "
                       f"Transfer.fit), or finetune")
    return rows


def check_selection_classes(cls, val: Domain | None, head_classes: list[str] | None,
                            target_classes: list[str] | None, hint: str = "") -> None:
    """Refuse a validation split whose classes are not those the method's outputs are scored
    on while it trains: the target's (a head trained on target labels, or a source head's
    rows of the target classes), or, for a method that predicts with its source head, also
    all the source's. Early stopping would compare labels of one class list with outputs of
    another. Zero-shot methods check validation classes themselves (description rows by name,
    ``clip`` against the classes it scores)."""
    if val is None or ("target" not in cls.streams and not cls.predicts_with_source_head()):
        return
    allowed = [list(c) for c in ([target_classes] + ([head_classes] if cls.predicts_with_source_head() else []))
               if c is not None]
    check(not allowed or list(val.class_names) in allowed,
          f"the validation domain {val.name!r} has classes {list(val.class_names)}, but {cls.name} is scored on "
          f"{' or '.join(map(str, allowed))} while it trains{hint}")


def zero_shot_options(cls, options: dict, source_classes: list[str] | None,
                      target_classes: list[str] | None) -> dict:
    """Options of a method that scores class descriptions (``source_head = False``) for a
    transfer from ``source_classes`` to ``target_classes``. A CLIP-style method scores the
    target classes, in their order: a ``class_names`` option that names others is refused
    (its logit columns would be read as the target's label ids). An attribute /
    class-embedding method scores the rows of its description matrix; :func:`fit_for_target`
    matches classes to rows by name when the rows are named (built-in digit sets, or its
    ``class_names`` option; with ``class_embeddings: text`` by default the source's and the
    target's classes), and a class without a row is refused here, before any job trains;
    unnamed rows are class ids, so one list of class names must then begin the other (ids
    mean the same classes in both), else it is refused."""
    if cls.source_head is not False:
        return options
    if source_classes is not None and hasattr(cls, "options_for_source"):  # clip: captions by source class
        options = cls.options_for_source(options, source_classes)
    if getattr(cls, "reads_class_text", lambda o: False)(options) and options.get("class_names") is None:
        classes = [*(source_classes or []), *(target_classes or [])]  # embeds the classes' names
        options = {**options, "class_names": list(dict.fromkeys(str(c) for c in classes))}
    if target_classes is None:  # Transfer.fit without a target: clip scores class_names or its source's classes
        return options
    if getattr(cls, "scores_class_names", False):
        given = options.get("class_names")
        if isinstance(given, str) or (given is not None and not hasattr(given, "__iter__")):
            return options  # not a sequence of names: the method itself says so
        given = None if given is None else [str(c) for c in given]  # a list, tuple or array
        check(given is None or given == list(target_classes),
              f"its option class_names {given} is not the target's classes {list(target_classes)}: with a "
              f"target, {cls.name} scores the target's classes in their order (its outputs are read as the target's "
              f"label ids); leave class_names out and choose the classes by the target (target_classes in a config, "
              f"target.select_classes(...) in Python)")
        return {**options, "class_names": list(target_classes)}
    if cls.named_rows(options):
        cls.check_described(options, [*(source_classes or []), *target_classes])
        return options
    shorter = min(len(source_classes or []), len(target_classes))
    check(source_classes is None or list(source_classes)[:shorter] == list(target_classes)[:shorter],
          f"its class descriptions are rows without class names, read by class id, and the source classes "
          f"{list(source_classes or [])} and target classes {list(target_classes)} are numbered apart: give "
          f"the option class_names (the class of each row) to match them by name")
    return options


def build_method(cls, net, options: dict, head_classes: list[str] | None, target_classes: list[str] | None):
    """``cls`` on ``net`` with its options; a method that trains on target labels gets a head
    over the target classes (:func:`retarget_head` from ``head_classes``, the classes of
    ``net``'s head), after the method is built when it keeps a copy of the source network.
    A method that predicts with its source head is checked to predict every target class
    (:func:`source_head_rows`); :func:`fit_for_target` narrows its head after training.
    ``run_job`` and ``Transfer.fit`` both build methods here and train them with
    :func:`fit_for_target`."""
    try:
        source_head_rows(cls, head_classes, net.num_classes, target_classes)
    except TransferkitError:
        cls(copy.deepcopy(net), **options)  # the method's own error (e.g. distill without teachers) comes first
        raise
    net_outputs = net.num_classes
    headless = net_outputs == 0  # reset_classifier(0): a fresh head would be untrained where it is kept fixed
    method = cls(net, **options) if cls.built_before_retarget else None
    new: list[str] = []  # target classes whose head rows are new (untrained)
    if "target" in cls.streams and target_classes is not None:
        new = retarget_head(net, head_classes, target_classes)
    method = cls(net, **options) if method is None else method
    if new:
        method.head_has_new_rows(new)
    check(not (headless and method.keeps_head_fixed),
          f"{method.name} trains {', '.join(method.trainable_units())} and keeps the network's classifier fixed, but "
          f"the network has none (as after reset_classifier(0)): give it a classifier trained on these classes, or "
          f"use a method that trains the head (ft_unit:head, ft_fc1, ft_all, flex)")
    if new and method.keeps_head_fixed:
        unnamed = [c for c in new if head_classes is not None and c in head_classes]
        why = (f"the network's head has {net_outputs} outputs for the {len(target_classes)} target classes and, "
               f"without the source domain, its classes are unknown, so every target class has a new row"
               if head_classes is None else
               f"the rows of the classes {unnamed[:10]} could not be kept from the source head (see the warning "
               f"above), so their rows are new" if unnamed else
               f"the target classes {new[:10]} are not among the source head's: their rows are new")
        raise TransferkitError(
            f"{method.name} trains {', '.join(method.trainable_units())} and keeps the head fixed, but {why} and "
            f"would never be trained. Use a method that trains the head (ft_unit:head, ft_fc1, ft_all, flex) or "
            f"target classes the source has")
    return method


def fit_for_target(method, make_engine, head_classes: list[str] | None, target_classes: list[str] | None,
                   before_narrowing=None, **domains):
    """``method.fit_transfer(make_engine, **domains)`` (``source``, ``target``, ``unlabeled``,
    ``val``). A method that predicts with its source head (:func:`source_head_rows`) then keeps
    only the head's rows of the target classes, so that its outputs are the target classes
    (``before_narrowing(method, rows)``, if given, is called just before, e.g. to score the argmax
    over every source class, :func:`all_source_classes_fields`);
    while it trains, early stopping scores a target-class ``val`` on those rows already
    (``Method.eval_rows``). A zero-shot method then predicts among the classes present in
    ``target`` (its candidates; training used the source's)."""
    domains = _without_unseen_validation(method, domains)
    if reads_no_target_label(type(method)):
        domains = {**domains, "val": unsupervised_validation(method.name, domains.get("source"),
                                                             domains.get("unlabeled"), domains.get("val"))}
    if getattr(method, "row_names", None) is not None:  # zero-shot: classes matched to description rows
        return _fit_described(method, make_engine, **domains)
    rows = source_head_rows(type(method), head_classes, method.net.num_classes, target_classes)
    val = domains.get("val")
    method.eval_rows = rows if val is not None and list(val.class_names) == list(target_classes or []) else None
    try:
        fit = method.fit_transfer(make_engine, **domains)
    finally:
        method.eval_rows = None
    if rows is not None:
        if before_narrowing is not None:
            before_narrowing(method, rows)
        method.net.head = head_for_classes(method.net.head, rows, method.net.num_classes)
    if hasattr(method, "set_candidates") and domains.get("target") is not None:  # zero-shot: trained on the
        method.set_candidates(domains["target"].present_classes())  # seen classes, predicts the target's
    return fit


def _without_unseen_validation(method, domains: dict) -> dict:
    """``domains`` without ``val`` when ``method`` scores class descriptions (zero-shot:
    attributes, class-name embeddings, clip) and ``val`` holds classes the source lacks: their
    labels are of unseen classes, which a zero-shot method must not select on. A source of
    caption ids (:class:`~transferkit.clip.CaptionedDomain`) names its images' classes in
    ``provenance["classes"]``; one without that record is kept.)"""
    source, val = domains.get("source"), domains.get("val")
    if type(method).source_head is not False or source is None or val is None:
        return domains
    present = lambda d: {d.class_names[i] for i in d.present_classes()}  # noqa: E731
    if "captions" in source.provenance:
        if "classes" not in source.provenance:
            return domains
        seen = set(source.provenance["classes"])
    else:
        seen = present(source)
    if present(val) <= seen:
        return domains
    warn(f"{method.name}: the validation split holds classes the source lacks (unseen ones); it is "
         f"not used, training runs its whole budget (select_on: source_val selects on seen classes)")
    return {**domains, "val": None}


def _fit_described(method, make_engine, **domains):
    """:func:`fit_for_target` of a zero-shot method whose description rows are named: every
    domain is renumbered to rows by class name; it trains on the source's rows and predicts
    among the target's, with its outputs in the target's class order (without a target: the
    source's, whose classes the fitted model then names)."""
    rows = {k: method.to_rows(d) for k, d in domains.items() if d is not None}
    side = "target" if rows.get("target") is not None else "source"
    fit = method.fit_transfer(make_engine, **rows)
    if rows.get(side) is not None:
        method.set_candidates(rows[side].present_classes())
        method.output_rows = [method.row_names.index(c) for c in domains[side].class_names]
    return fit


def model_path(run_dir: Path, cfg: ExperimentConfig, method: str, seed: int) -> Path:
    return Path(run_dir) / "models" / f"{method}-{cfg.setting}-s{seed}.pt"


def save_model(path: Path, method) -> None:
    """The trained method object as it was evaluated (``torch.save``), atomically."""
    data = _model_bytes(method)
    atomic_write(path, lambda p: p.write_bytes(data))


def _model_bytes(method) -> memoryview:
    """``torch.save``'s file of ``method``, in memory: pickling fails here, writing with the disk."""
    buf = io.BytesIO()
    torch.save(method, buf)
    return buf.getbuffer()


def load_model(run_dir: str | Path, method: str, seed: int | None = None, setting: str | None = None):
    """The model that job (``method``, ``seed``) of a ``transferkit run`` evaluated, in eval
    mode: ``model.logits(images)`` gives target-class logits (the images checked, in chunks;
    ``model(images)`` runs one unchecked batch), column ``i`` for ``model.classes_[i]``
    (the class names of the job's result row; ``seed``: the config's first by default;
    ``setting``: ``"k=5"``, which a run of a list ``k`` or ``ratio`` needs). The
    file is a pickle (``torch.load(weights_only=False)``): load only run directories you trust."""
    run_dir = Path(run_dir)
    check((run_dir / "config.yaml").is_file(), f"{run_dir} is not a run directory (no config.yaml)"
                                               f"{unfinished_hint(run_dir)}")
    name = get_method(method).name
    cfg = _setting_of(load_config(run_dir / "config.yaml"), setting, run_dir, name == "source_only")
    check(seed is None or is_whole(seed), f"seed must be a whole number (a job's label-subset seed), got {seed!r}")
    seed = cfg.seed if seed is None else int(seed)
    path = model_path(run_dir, cfg, name, seed)
    if not path.is_file():
        saved = sorted(p.stem for p in (run_dir / "models").glob(f"*-{cfg.setting}-s*.pt"))
        listed = ", ".join(saved[:12]) + (f" and {len(saved) - 12} more" if len(saved) > 12 else "")
        why = ""
        if name == "source_only" and seed != cfg.seed:
            why = f" (source_only runs once, as seed {cfg.seed}: its row does not depend on the label subset)"
        elif name == "source_only" and job_path(run_dir, cfg, name, seed).is_file():
            why = (" (older versions of transferkit saved no source_only model, and a model that does not pickle "
                   "is not saved: delete its job file and resume to save one; its network is also the run's "
                   "source.safetensors)")
        raise TransferkitError(f"{path} does not exist: {run_dir} has no finished {name} job of seed {seed} with a "
                               f"saved model{why}; its saved models (method-setting-seed): {listed or 'none'}")
    try:
        model = torch.load(path, weights_only=False, map_location="cpu")
    except (EOFError, pickle.UnpicklingError, RuntimeError, KeyError) as e:  # torn (a cut zip archive), zeroed
        # (a zip without its records: KeyError 'storages') or not a model file
        if isinstance(e, RuntimeError) and "zip archive" not in str(e) and "PytorchStreamReader" not in str(e):
            raise
        if isinstance(e, KeyError) and "storages" not in str(e):  # a method's own unpickling
            raise
        raise TransferkitError(f"model {path} is unreadable ({type(e).__name__}: {e}): run the job again "
                               f"(delete its job file and resume)") from e
    except OSError as e:  # a file cut short inside its archive reads as [Errno 22] Invalid argument
        raise TransferkitError(f"model {path} cannot be read ({e}): if it is cut short or damaged, run the job "
                               f"again (delete its job file and resume)") from e
    except (ImportError, AttributeError) as e:  # e.g. a plugin's method whose module is not importable here
        raise TransferkitError(f"model {path} needs code that is not available here ({e}); for a plugin "
                               f"method, name its module in TRANSFERKIT_PLUGINS") from e
    row = job_path(run_dir, cfg, name, seed)
    if row.is_file():
        model.classes_ = list(read_job(row, ("class_names",))["class_names"])
    else:  # saved, then stopped before its row: the job did not finish (a resume trains it again)
        known = getattr(model, "classes_", None)  # a model file saved since 2026-12-02 holds them
        what = "the job did not finish" if known else "the model's classes_ are not known"
        warn(f"{row} does not exist: the job stopped after saving {path.name} and before its result "
             f"row, so {what} (a resume trains the job again)")
    return model.eval()


def _setting_of(cfg: ExperimentConfig, setting: str | None, run_dir: Path, any_one: bool = False) -> ExperimentConfig:
    """The config of one ``setting`` (``"k=5"``) of a run's ``cfg`` (one per value of a list
    ``k`` or ``ratio``); ``None``: its only one, or its first with ``any_one`` (source_only's
    model is the same in every setting)."""
    subs = {sub.setting: sub for sub in cfg.settings()}
    if setting is None and any_one:
        return next(iter(subs.values()))
    if setting is None:
        check(len(subs) == 1, f"{run_dir} ran the settings {', '.join(subs)}: say which, e.g. "
                              f"setting='{next(iter(subs))}'")
        return next(iter(subs.values()))
    setting = str(setting).replace(" ", "")
    if setting in subs:
        return subs[setting]
    dropped = re.fullmatch(r"(k|ratio)=(\d+)", setting)  # a setting a resume left out: its models stay
    check(dropped is not None and any((Path(run_dir) / "models").glob(f"*-{setting}-s*.pt")),
          f"{run_dir} has no setting {setting!r}: it ran {', '.join(subs)}")
    key, value = dropped.groups()
    return replace(cfg, **{"k": None, "ratio": None, key: int(value)})


def _build_job_method(cfg: ExperimentConfig, data: Prepared, cls, net):
    options = zero_shot_options(cls, cfg.options.get(cls.name, {}), data.source.train.class_names,
                                data.target.train.class_names)
    return build_method(cls, net, options, data.source.train.class_names, data.target.train.class_names)


def trained_before(checkpoints: Path) -> float:
    """The seconds the stages of a job trained before it stopped, as its checkpoints record them
    (``trained_s``; 0 for checkpoints from before 2026-12-02): a resumed job's ``wall_s`` counts them."""
    total = 0.0
    for meta in sorted(checkpoints.glob("*/last.json")) if checkpoints.is_dir() else ():
        try:
            total += float((read_json(meta).get("state") or {}).get("trained_s") or 0.0)
        except (TransferkitError, AttributeError, TypeError, ValueError):  # unreadable: the engine names it
            continue
    return total


def run_job(cfg: ExperimentConfig, data: Prepared, source_net, run_dir: Path, cls, seed: int,
            source_digest: str | None = None) -> dict:
    """Train and evaluate one (method, label subset) job; write its row atomically.

    ``source_net()`` returns a fresh copy of the source network; it draws no random
    numbers, so a job gives the same row in the main process and in a worker process.
    ``source_digest``: that network's :func:`network_digest`, recorded in the row."""
    job = job_path(run_dir, cfg, cls.name, seed)
    with warnings.catch_warnings():  # _check_jobs drew every label subset and showed their warnings once
        warnings.simplefilter("ignore", TransferkitWarning)
        labeled, unlabeled = label_subset(cfg, data.target, seed, data.unlabeled)
    t0 = time.perf_counter() - trained_before(run_dir / "checkpoints" / job.stem)  # a job resumed midway
    with peak_memory(device=cfg.device) as memory:
        net = source_net() if cls.needs_pretrained else None
        torch.manual_seed(seed)
        if net is None:
            net = build_backbone(cfg.backbone, num_classes=data.source.train.num_classes,
                                 in_channels=data.channels, image_size=cfg.image_size)
        with warnings.catch_warnings():  # _check_jobs built it with these options and showed its warnings
            warnings.simplefilter("ignore", TransferkitWarning)
            method = _build_job_method(cfg, data, cls, net)

        def make_engine(tag, config=None):
            train = config or cfg.train
            if train.device != cfg.device:
                train = replace(train, device=cfg.device)
            return Engine(train, seed=seed, metrics_path=run_dir / "metrics.jsonl", select_metric=cfg.select_metric,
                          checkpoint_dir=run_dir / "checkpoints" / job.stem / tag,
                          tensorboard_dir=run_dir / "tensorboard" / job.stem / tag, run_name=f"{job.stem}/{tag}")

        every = {}  # partial DA: the argmax over every source class as well
        val = selection_domain(cfg, data, cls)
        fit = fit_for_target(method, make_engine, data.source.train.class_names, data.target.train.class_names,
                             lambda m, rows: every.update(all_source_classes_fields(m, rows, data.target.test)),
                             source=data.source.train if cfg.source is not None else None, target=labeled,
                             unlabeled=unlabeled, val=val)
        report = evaluate_on(method, data.target.test)
        measured = method.test_results(data.target.test)  # e.g. tap's accuracy of every unit
    selected = val is not None and fit.best_val_accuracy is not None  # weights chosen on a validation split
    row = {"method": cls.name, "source": cfg.source_label, "target": cfg.target, "setting": cfg.setting, "seed": seed,
           "accuracy": report["accuracy"], "wall_s": time.perf_counter() - t0, "val_accuracy": fit.val_accuracy,
           "steps": fit.steps, "best_step": fit.best_step,
           **({"select_metric": cfg.select_metric} if cfg.select_metric != "accuracy" else {}),
           **({"select_on": cfg.select_on} if cfg.select_on != "target_val" and selected else {}),  # the source's
           **(training_fields(cfg.train) if fit.steps > 0 else {}), **class_fields(cfg),
           **({"n_val_labeled": len(val)} if selected and val is data.target.val and cls.selects_on_validation
              else {}),
           "n_labeled": len(labeled) if "target" in cls.streams else 0, **memory,
           **test_fields(cfg, data),
           **({"n_unlabeled": len(unlabeled)} if "unlabeled" in cls.streams else {}),
           **({"unlabeled": cfg.unlabeled, "unlabeled_in_test": data.unlabeled_overlap.get("test", 0),
               "unlabeled_in_val": data.unlabeled_overlap.get("val", 0)}
              if data.unlabeled is not None and "unlabeled" in cls.streams else {}),
           "config_digest": job_digest(cfg, cls.name), **every,
           "method_options": resolved_options(cls, cfg.options.get(cls.name, {})),
           **job_environment(source_digest if cls.needs_pretrained else None), **method.extra_results(),
           **measured}
    if is_main_process():  # before the row: a job counts as finished once its row exists
        method.classes_ = list(data.target.test.class_names)  # in the file too: a model copied out knows them
        _save_evaluated(model_path(run_dir, cfg, cls.name, seed), method, job.stem)
    row = _finish_row(job, row, report, data.target.test.class_names, _seen_classes(data))
    if is_main_process():  # checkpoints only serve resuming an unfinished job; models/ keeps what was evaluated
        shutil.rmtree(run_dir / "checkpoints" / job.stem, ignore_errors=True)
    return row


def _save_evaluated(path: Path, method, job: str) -> None:
    """:func:`save_model`, or a warning: a model that does not pickle (a user's method or
    backbone) must not cost the job's result. Writing it is not excused: a full disk fails the
    job before its row (a resume trains it again) and stops the run."""
    try:
        data = _model_bytes(method)
    except Exception as e:
        path.unlink(missing_ok=True)  # not an older run's model
        warn(f"{job}: the trained model is not saved ({type(e).__name__}: {e})")
        return
    atomic_write(path, lambda p: p.write_bytes(data))


def _seen_classes(data: Prepared) -> list[str]:
    """The source classes with training images (without source images, ``source: null``, the
    network's classes): a target class among them is seen."""
    train = data.source.train
    return list(train.class_names) if len(train) == 0 else [train.class_names[i] for i in train.present_classes()]


def seen_unseen_accuracy(per_class: list, class_names: list[str], seen: list[str]) -> dict:
    """Generalised zero-shot's (and few-shot's) accuracies on a target of seen and new
    classes, every target class a candidate: the mean per-class accuracy over the target
    classes that ``seen`` names (``seen_accuracy``) and over the others (``unseen_accuracy``),
    and their harmonic mean ``h_accuracy`` (seed 001's GZSL measure); classes without test
    images are left out, with a warning. ``{}`` unless the target has test images of both kinds."""
    kinds, seen = {True: [], False: []}, set(seen)
    for name, acc in zip(class_names, per_class):
        if acc is not None:
            kinds[name in seen].append(acc)
    if not (kinds[True] and kinds[False]):
        return {}
    absent = [name for name, acc in zip(class_names, per_class) if acc is None]
    if absent:
        warn(f"the target classes {absent[:10]} have no test image: they are left out of the seen / unseen accuracy")
    s, u = (sum(v) / len(v) for v in (kinds[True], kinds[False]))
    return {"seen_accuracy": s, "unseen_accuracy": u, "h_accuracy": harmonic_mean(s, u)}


def report_seen_unseen(report: dict, class_names: list[str], seen) -> dict:
    """:func:`seen_unseen_accuracy` of a :func:`~transferkit.evaluate.classification_report`, from
    its confusion matrix (its ``per_class_accuracy`` is rounded to 6 decimals)."""
    exact = [c[i] / sum(c) if sum(c) else None for i, c in enumerate(report["confusion"])]
    return seen_unseen_accuracy(exact, class_names, seen)


def _finish_row(job: Path, row: dict, report: dict, class_names: list[str], seen: list[str] = ()) -> dict:
    row["class_names"] = list(class_names)  # what the per-class accuracies and confusion rows are
    row["per_class_accuracy"] = report["per_class_accuracy"]
    row["balanced_accuracy"] = report["balanced_accuracy"]
    row.update(report_seen_unseen(report, class_names, seen))
    row["confusion"] = report["confusion"]
    if "group_accuracy" in report:
        row["group_accuracy"] = report["group_accuracy"]
    row.pop("measured_s", None)
    if is_main_process():
        write_json(job, row)
    return row


_PROCESS_DATA: dict = {}  # the domains of the last config a (worker) process prepared


def process_domains(cfg: ExperimentConfig, run_dir: Path | None = None) -> Prepared:
    """:func:`prepare_domains` once per process and config: a worker process's later jobs of
    the same config share the data (read from the disk cache once), as the jobs of a
    one-process run do. Its warnings about the data are not repeated: the process that
    started the workers prepared the same data and showed them."""
    key = json.dumps(asdict(cfg), sort_keys=True, default=repr)
    if key not in _PROCESS_DATA:
        _PROCESS_DATA.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TransferkitWarning)
            _PROCESS_DATA[key] = prepare_domains(cfg, progress=False, run_dir=run_dir)  # no bar of each worker
    return _PROCESS_DATA[key]


def _worker_job(cfg_dict: dict, run_dir: str, method: str, seed: int, source_path: str | None,
                source_digest: str | None = None):
    """Entry point of a worker process: the data (see :func:`process_domains`) and one job."""
    cfg = from_dict(ExperimentConfig, cfg_dict)
    data = process_domains(cfg, Path(run_dir))
    cls = get_method(method)

    def source_net():
        return _read_source_file(cfg, data, Path(source_path))
    return run_job(cfg, data, source_net, Path(run_dir), cls, seed, source_digest)


def check_names(cfg: ExperimentConfig, run_dir: Path | None = None) -> list:
    """What a config names, checked without loading anything (before any work, and by
    ``--nproc`` before it starts processes): its methods and their option names, backbone and
    domains; returns the method classes. ``run_dir``: the run resumed, whose results.json
    names the plugin modules it was made with (for an unknown name's hint)."""
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


def _recorded_plugins(run_dir: Path | None) -> list[str]:
    """The plugin modules (``$TRANSFERKIT_PLUGINS``) run ``run_dir``'s results.json records, if any."""
    try:
        env = read_json(Path(run_dir) / "results.json").get("environment") if run_dir is not None else None
    except (TransferkitError, AttributeError):  # none, unreadable, or not a mapping
        return []
    plugins = env.get("plugins") if isinstance(env, dict) else None
    return [str(m) for m in plugins] if isinstance(plugins, list) else []


def run_experiment(cfg: ExperimentConfig, run_dir: Path | None = None, log=print) -> tuple[Path, list[dict]]:
    """Run every (method, repeat) job of ``cfg``; return the run directory and the rows.

    Passing an existing ``run_dir`` resumes it: finished jobs are read back, not re-run.
    With ``cfg.workers > 1`` the jobs run in that many worker processes (each row is
    written as soon as its job ends); under ``torchrun`` every rank runs every job
    data-parallel and rank 0 writes the files. The caller's global CPU random state is as it was
    before (as after :meth:`Transfer.fit`)."""
    methods = check_names(cfg, run_dir)
    resolve_device(cfg.device)  # CUDA or MPS that is not there: refused now, not after the data loaded
    main = is_main_process()
    if cfg.pretrained is not None and main:
        _warn_pretrain_unused(cfg)
    log = log if main else (lambda *a, **k: None)
    run_dir_given = bool(run_dir)
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
    fresh = main and not run_dir.exists()
    parent_fresh = fresh and not run_dir.parent.exists()
    preload_lazy_imports()
    if main:
        _make_run_dir(run_dir, None if run_dir_given else cfg.out_dir)
    try:  # the caller's CPU RNG is left as it was (each job seeds its own; CUDA's is not touched: no CUDA init here)
        with directory_lock(run_dir) if main else contextlib.nullcontext(), torch.random.fork_rng(devices=[]):
            rows = _run_jobs_of(cfg, run_dir, methods, main, log)
    except BaseException:  # refused, failed or interrupted (Ctrl-C) before any job finished: leave nothing
        if fresh:
            _remove_if_unused(run_dir, parent_fresh)
        raise
    barrier()
    return run_dir, rows


def _warn_pretrain_unused(cfg: ExperimentConfig) -> None:
    """A ``pretrain`` section set beside ``pretrained:``, which gives the source network: nothing pre-trains."""
    default = asdict(ExperimentConfig.__dataclass_fields__["pretrain"].default_factory())
    given = {k: v for k, v in asdict(cfg.pretrain).items() if k != "device" and v != default.get(k)}
    if given:
        warn(f"{', '.join(f'pretrain.{k}: {v}' for k, v in given.items())} {'is' if len(given) == 1 else 'are'} not "
             f"used: pretrained: {cfg.pretrained} is the source network, nothing is pre-trained")


def _make_run_dir(run_dir: Path, out_dir: str | None) -> None:
    """Make ``run_dir`` (in ``out_dir``, the config's, unless the directory was given), or a
    named error: the file system's alone names neither the setting nor what to do."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        there = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
        why = f"{there} is a file, not a directory" if there is not None and not there.is_dir() else (
            f"{e.strerror or e}{f': {e.filename}' if e.filename and str(e.filename) != str(run_dir) else ''}")
        where = f"out_dir {out_dir!r}: " if out_dir is not None else ""
        fix = ("set out_dir to a directory you can write to, or to a path where one can be made (--set out_dir=DIR)"
               if out_dir is not None else "give a directory you can write to, or a path where one can be made")
        raise TransferkitError(f"{where}cannot make the run directory {run_dir} ({why}); {fix}") from e


def _remove_if_unused(run_dir: Path, parent_too: bool = False) -> None:
    """Remove a run directory that this run made and that holds nothing but its config (the
    run was refused before any job), and its parent (``out_dir/NAME``) when this run made it
    too and it is empty: empty directories would break ``report runs/NAME/*``."""
    jobs = run_dir / "jobs"
    names = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if names <= {"config.yaml", "jobs", "data.json", "source.safetensors", "source.json", "kernels.json"} and not (
            jobs.is_dir() and any(jobs.iterdir())):
        shutil.rmtree(run_dir, ignore_errors=True)
        if parent_too:
            try:
                run_dir.parent.rmdir()
            except OSError:  # not empty
                pass


def _run_jobs_of(cfg: ExperimentConfig, run_dir: Path, methods: list, main: bool, log) -> list[dict]:
    """The body of :func:`run_experiment` in its run directory: every job's row, in job order
    (setting by setting: one per value of a list ``k`` or ``ratio``, on one source network)."""
    old = run_dir / "config.yaml"
    stored = _check_same_config(old, cfg) if old.exists() else None
    data = prepare_domains(cfg, run_dir=run_dir)
    subs = cfg.settings()
    _check_settings(subs, data, methods)
    jobs = [(sub, cls, seed) for sub in subs for cls, seed in _jobs_of(sub, methods)]
    finished = {sub.setting: _finished_rows(sub, run_dir, _jobs_of(sub, methods), stored) for sub in subs}
    _check_same_data(run_dir, data, main)  # first: it drops the checkpoints of changed data
    for sub in subs:
        _check_unfinished_checkpoints(sub, run_dir, _jobs_of(sub, methods), finished[sub.setting], stored)
    every_finished = {(name, seed if len(subs) == 1 else f"{seed} ({setting})"): row
                      for setting, rows in finished.items() for (name, seed), row in rows.items()}
    barrier()  # every rank sees what rank 0 kept of the source network and checkpoints
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    before = old.read_text() if old.exists() else None
    if main:  # only now: a refused resume leaves the run's config as it was (and so does a refused source)
        placed = {k: stored[k] for k in ("name", "out_dir") if isinstance((stored or {}).get(k), str)}
        inside = run_dir.resolve().is_relative_to(Path(cfg.out_dir).expanduser().resolve())  # a moved benchmark's
        moved = {k: v for k, v in placed.items() if getattr(cfg, k) != v and not (k == "out_dir" and inside)}
        if moved:  # they name where a new run goes: a resumed one stays where it is
            warn(f"{', '.join(f'{k}: {getattr(cfg, k)!r}' for k in moved)} not used: a resumed run stays in "
                 f"{run_dir} (its config keeps {', '.join(f'{k}: {v!r}' for k, v in moved.items())}); they name "
                 f"where a new run goes")
        write_text(old, dump_config(replace(cfg, **placed)))  # where the run was made: a resume names its directory
        note_kernels(run_dir, log, cfg.workers)
    log(f"run directory: {run_dir}")
    note_work_dir(run_dir)
    source = (f"source {cfg.source}: {len(data.source.train)} train / {len(data.source.val)} val"
              if cfg.source is not None else
              f"source: the network of {cfg.pretrained} alone ({data.source.train.num_classes} classes)")
    log(f"{source}; target {cfg.target}: {len(data.target.train)} train / {len(data.target.val)} val / "
        f"{len(data.target.test)} test{f' (test {cfg.test})' if cfg.test is not None else ''}"
        f"{f'; unlabeled {cfg.unlabeled}: {len(data.unlabeled)} images' if data.unlabeled is not None else ''}; "
        f"{data.channels} channel(s), {cfg.image_size} px")
    pretrained, pre_info = None, {}
    if any((cls.needs_pretrained or cls is SourceOnly) and (cls.name, seed) not in finished[sub.setting]
           for sub, cls, seed in jobs):
        try:
            pretrained, pre_info = run_source_network(cfg, data, run_dir, log, lambda digest: _check_same_source(
                run_dir, every_finished, digest))
        except TransferkitError:
            if main and before is not None:
                write_text(old, before)
            raise
        val_acc = pre_info.get("val_accuracy")
        log(f"source network: from the pretrained file {cfg.pretrained}" if cfg.pretrained else
            f"source network: source val accuracy {'n/a' if val_acc is None else f'{100 * val_acc:.1f}%'}, "
            f"{pre_info['wall_s']:.1f}s{' (cached)' if pre_info['cached'] else ''}")
    rows, todo, order = [], [], {}
    for sub, cls, seed in jobs:
        job = job_path(run_dir, sub, cls.name, seed)
        order[(sub.setting, cls.name, seed)] = len(order)
        if (cls.name, seed) in finished[sub.setting]:
            rows.append(finished[sub.setting][cls.name, seed])
        elif cls is SourceOnly:
            every = {}  # partial DA: the argmax over every source class as well
            model = source_only_model(pretrained, data, lambda m, rows, every=every: every.update(
                all_source_classes_fields(m, rows, data.target.test)))
            report = evaluate_on(model, data.target.test)
            row = {"method": cls.name, "source": cfg.source_label, "target": cfg.target, "setting": sub.setting,
                   "seed": cfg.seed, "accuracy": report["accuracy"], "wall_s": pre_info["wall_s"], "n_labeled": 0,
                   "pretrain_cached": None if cfg.pretrained else pre_info["cached"],
                   "source_val_accuracy": pre_info.get("val_accuracy"),
                   **test_fields(cfg, data), **({} if cfg.pretrained else training_fields(cfg.pretrain)),
                   **class_fields(cfg),
                   "config_digest": job_digest(sub, cls.name), **every,
                   **job_environment(pre_info.get("digest"), trained=False)}
            if main:  # before the row, as run_job: load_model / Transfer.from_run read it
                model.classes_ = list(data.target.test.class_names)
                _save_evaluated(model_path(run_dir, sub, cls.name, cfg.seed), model, job.stem)
            del model  # a network's copy: not held through the jobs that follow (their peak memory)
            rows.append(_log_row(log, len(subs) > 1, _finish_row(job, row, report, data.target.test.class_names,
                                                  _seen_classes(data))))
        else:
            todo.append((sub, cls, seed))
    if main and todo:  # an older results.json would call the run finished while these run (or after a stop)
        for name in RESULT_FILES:
            (run_dir / name).unlink(missing_ok=True)
    failures: list = []
    if cfg.workers > 1 and len(todo) > 1 and world_size() == 1:
        rows += _run_in_workers(cfg, run_dir, todo, pre_info, log, failures)
    else:  # with a worker's thread count: the one job a resumed run has left computes what a worker did
        with worker_threads(cfg.workers if world_size() == 1 else 1):
            for sub, cls, seed in todo:
                result = guarded(run_job, sub, data, lambda: copy.deepcopy(pretrained), run_dir, cls, seed,
                                 pre_info.get("digest"))
                rows += _job_done(sub, run_dir, cls.name, seed, result, failures, log, len(subs) > 1)
    rows.sort(key=lambda row: order[(row["setting"], row["method"], row["seed"])])  # job order, resumed or not
    if main:
        failed = [{"job": f.job, "error": f.error, "traceback": str(Path(f.path).relative_to(run_dir))}
                  for f in failures]
        write_results(run_dir, cfg.name, cfg.to_dict(), rows, workers=cfg.workers, failed=failed)
        for kept in ("failed", "checkpoints"):  # no empty failed/ (every failed job ran again), checkpoints/
            try:
                (run_dir / kept).rmdir()
            except OSError:  # none, or tracebacks or checkpoints of unfinished jobs kept
                pass
    if failures:
        raise _jobs_failed(cfg, run_dir, failures, rows, len(jobs))
    return rows


def _job_done(cfg: ExperimentConfig, run_dir: Path, method: str, seed: int, result, failures: list, log,
              several: bool = False) -> list:
    """``[row]`` of a finished job, logged; ``[]`` for a :class:`JobFailure`, named in one line
    and its traceback saved in ``RUN_DIR/failed/`` (the other jobs go on)."""
    job = job_path(run_dir, cfg, method, seed)
    if isinstance(result, JobFailure):
        failures.append(save_failure(run_dir / "failed" / f"{job.stem}.txt", result,
                                     f"{method} seed {seed}{f' ({cfg.setting})' if several else ''}",
                                     None if log is print else log))  # a caller's own log gets the line too
        return []
    (run_dir / "failed" / f"{job.stem}.txt").unlink(missing_ok=True)  # of an earlier try of this job
    return [_log_row(log, several, result)]


def _jobs_failed(cfg: ExperimentConfig, run_dir: Path, failures: list, rows: list, total: int) -> JobsFailed:
    """The error that ends a run some of whose jobs failed: each named, where their
    tracebacks are, and the two ways on (resume after a fix, or leave their methods out)."""
    failed = {f.job.split(" seed ")[0] for f in failures}
    others = [m for m in cfg.methods if m not in failed]
    narrow = (f", or leave their methods out: transferkit run --resume {run_dir} --set 'methods=[{','.join(others)}]'"
              if others else "")
    kept = f"results.json and results.md hold the {len(rows)} finished row(s)"
    again = f"transferkit run --resume {run_dir}"
    bench = held_benchmark_dir()
    if bench is not None:  # a benchmark's jobs: the benchmark resumes, not the run its jobs made in it
        kept, narrow = "the finished jobs are kept", ""
        again = f"the same transferkit bench command with --resume {bench}"
    return JobsFailed(failures_message(failures, total, kept, again) + narrow, failures, rows)


def _jobs_of(cfg: ExperimentConfig, methods: list) -> list[tuple]:
    """``(method class, seed)`` of every job, in order; source_only once (its row does not
    vary with the label subset)."""
    return [(cls, cfg.seed + r) for r in range(cfg.repeats) for cls in methods if not (cls is SourceOnly and r > 0)]


def _check_unfinished_checkpoints(cfg: ExperimentConfig, run_dir: Path, jobs: list, finished: dict,
                                  stored: dict | None) -> None:
    """An unfinished job's checkpoints were trained under the run's stored options for its
    method; a resume that gives other options would be refused by the engine only after
    ``config.yaml`` had been rewritten, so it is refused here, while the config is as it was."""
    if stored is None:
        return
    then = stored.get("options") or {}
    now = yaml.safe_load(dump_config(cfg)).get("options") or {}  # as the stored config reads back (tuples: lists)
    unfinished = [(cls, job_path(run_dir, cfg, cls.name, seed).stem) for cls, seed in jobs
                  if (cls.name, seed) not in finished]
    stale = [stem for cls, stem in unfinished if (run_dir / "checkpoints" / stem).is_dir()
             and trained_options(cls, then.get(cls.name)) != trained_options(cls, now.get(cls.name))]
    check(not stale, f"{run_dir}: the unfinished job(s) {', '.join(stale)} have checkpoints trained with other options "
                     f"for their method than this resume gives: resume with the run's options (its config.yaml), or "
                     f"delete their folders under {run_dir / 'checkpoints'} to train them again with the new ones")


def _finished_rows(cfg: ExperimentConfig, run_dir: Path, jobs: list, stored: dict | None) -> dict:
    """``{(method, seed): row}`` of the jobs already finished in ``run_dir``, each checked
    against ``cfg`` by its digest; a row from before digests (no ``config_digest``) by the
    options that the run's stored config gave its method."""
    out = {}
    for cls, seed in jobs:
        job = job_path(run_dir, cfg, cls.name, seed)
        if not job.exists():
            continue
        row = read_job(job, ROW_KEYS)  # the fields the results table reads
        check_job_name(job, row)
        then, now = _stored_options(stored, cls.name), cfg.options.get(cls.name, {})
        if "config_digest" in row:
            same = row["config_digest"] in {job_digest(cfg, cls.name, form) for form in DIGEST_FORMS}
            older = cls.revision and row["config_digest"] in {job_digest(cfg, cls.name, form, revision)
                                                              for form in DIGEST_FORMS for revision in
                                                              range(cls.revision)}
            check(same or not older, f"{job} was trained by an older form of {cls.name} ({cls.revision_note}); "
                                     f"delete the job file to run the job again, or use a new run directory")
        else:
            same = stored is not None and then == now
        hint = f" (options of {cls.name}: {then!r} there, {now!r} now)" if stored is not None and then != now else ""
        if not same and not hint and "config_digest" in row:
            hint = _changed_since(cfg, run_dir, cls.name, row["config_digest"])
        if not same and not hint and isinstance(row.get("method_options"), dict):  # the job's own record
            hint = _options_since(cls, row["method_options"], now)
        files = option_files(cls, now)
        if not same and not hint and files:
            hint = (f" (the options of {cls.name} read {', '.join(f'{k} {v}' for k, v in files.items())}, whose "
                    f"contents the job's digest holds: edited since the job ran?)")
        check(same, f"{job} was run with another configuration than {run_dir / 'config.yaml'} gives now{hint}; "
                    f"restore that config, or delete the job file to run the job again")
        out[cls.name, seed] = row
    _check_same_world(cfg, run_dir, out)
    return out


def _options_since(cls, ran: dict, now: dict) -> str:
    """The options a job ran with (its row's ``method_options``) that ``now`` gives otherwise, as a
    refusal's hint; ``""`` where they agree (something else changed)."""
    try:
        given = resolved_options(cls, now)
    except Exception:  # options the method refuses: the refusal is theirs to name
        return ""
    changed = {k: (ran[k], given.get(k)) for k in ran if given.get(k) != ran[k]}
    if not changed:
        return ""
    said = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
    return (f" (options of {cls.name}: {said}; --set options.{cls.name}.<option>=<then> restores one, "
            f"--set options.{cls.name}=null the defaults)")


def _changed_since(cfg: ExperimentConfig, run_dir: Path, method: str, digest: str) -> str:
    """`` (changed: key: old there, new now)`` naming what differs from the config that
    ``results.json`` keeps, when that config gives the row's ``digest``; else ``""`` (the
    row keeps only a digest, which cannot name a key)."""
    try:
        kept = from_dict(ExperimentConfig, read_json(run_dir / "results.json")["config"])
        if digest not in {job_digest(kept, method, form) for form in DIGEST_FORMS}:
            return ""
    except Exception:  # no results.json (an interrupted first run), or one of another form
        return ""
    diff = _config_changes(yaml.safe_load(dump_config(kept)), cfg)
    old, new = (trained_options(get_method(method), c.options.get(method, {})) for c in (kept, cfg))
    diff += [f"options of {method}: {old!r} there, {new!r} now"] if old != new else []
    return f" (changed since the job ran, by the config its results.json keeps: {'; '.join(diff)})" if diff else ""


def _check_same_world(cfg: ExperimentConfig, run_dir: Path, finished: dict) -> None:
    """Refuse to resume rows made with another number of data-parallel processes (``--nproc``
    rounds the batch up and keeps BatchNorm statistics per shard: other rows); a row without
    ``world_size`` (written before it was recorded) is not checked: its count is unknown."""
    now = world_size()
    other = sorted(f"jobs/{job_path(run_dir, cfg, name, seed).name}"
                   for name, seed in _made_otherwise(finished, "world_size", now))
    if other:
        then = sorted({row.get("world_size", now) for row in finished.values()} - {now})
        counts, named = " and ".join(map(str, then)), ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise TransferkitError(
            f"{run_dir}: {len(other)} finished job(s) ({named}) ran "
            f"in {counts} data-parallel process(es) and this resume runs {now}: --nproc changes a job's rows "
            f"(docs/scale.md), so they would not go together; resume with --nproc {then[0]}, or use a new run "
            f"directory (or delete those job files to run them again)")


def _check_settings(subs: list[ExperimentConfig], data: Prepared, methods: list) -> None:
    """:func:`_check_jobs` of each setting (one config per value of a list ``k`` or ``ratio``);
    a warning that several settings give alike (a class without test images) is given once, and
    one that differs only in its numbers (k=1's labelled images, k=5's) once with the settings
    it also holds for."""
    if len(subs) == 1:
        return _check_jobs(subs[0], data, methods)
    given: dict[str, tuple] = {}  # the warning with its numbers blanked -> (first warning, its settings)
    try:
        for sub in subs:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    _check_jobs(sub, data, methods)
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
            also = f" (alike at {', '.join(settings[1:])})" if len(settings) > 1 and settings[0] in str(w.message) \
                else ""
            warnings.warn_explicit(w.category(f"{w.message}{also}"), w.category, w.filename, w.lineno)


def _passes(cfg: ExperimentConfig, data: Prepared, methods: list) -> bool:
    """Whether :func:`_check_jobs` accepts ``cfg`` (its warnings unshown)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_jobs(cfg, data, methods)
    except TransferkitError:
        return False
    return True


def _check_jobs(cfg: ExperimentConfig, data: Prepared, methods: list) -> None:
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
    with warnings.catch_warnings():  # the other seeds' subsets repeat its warnings (a ratio above a class's images)
        warnings.simplefilter("ignore", TransferkitWarning)
        subsets += [label_subset(cfg, data.target, cfg.seed + r, data.unlabeled) for r in range(1, cfg.repeats)]
    labelled = [labeled for labeled, _ in subsets]
    _check_unlabelled_left(cfg, data, methods, [unlabeled for _, unlabeled in subsets])
    if data.unlabeled is not None and not any("unlabeled" in cls.streams for cls in methods):
        warn(f"unlabeled {cfg.unlabeled!r}: none of the methods ({', '.join(cls.name for cls in methods)}) trains "
             f"on unlabelled target images, so these images are not used (domain adaptation, finetune_adv and "
             f"lext do)")
    unselected = []
    with torch.random.fork_rng():
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
                method = _build_job_method(cfg, data, cls, net)
                method.check_source([data.source.train, data.source.val, data.source.test])
                method.check_classes(data.source.train.class_names, data.target.train.class_names)
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


def class_fields(cfg: ExperimentConfig) -> dict:
    """The class subsets ``cfg`` chose (``source_classes``, ``target_classes`` as written), for a
    row: a table of a benchmark's rows, whose config is its plan, names them from there."""
    chosen = {side: getattr(cfg, f"{side}_classes") for side in ("source", "target")}
    return {f"{side}_classes": list(v) if isinstance(v, tuple) else v for side, v in chosen.items()
            if v is not None}  # a tuple as config.yaml and results.json keep it: a list


def training_fields(train: TrainConfig) -> dict:
    """``sampler`` and ``class_weight`` of ``train`` where they are not their defaults, for the row of a
    job it trained (rows without them trained as before they were added)."""
    return {k: getattr(train, k) for k, default in ADDED_TRAIN_FIELDS.items() if getattr(train, k) != default}


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
    labels than they train on: their rows' ``n_labeled`` counts the training labels only."""
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
         f"target's validation split, which {'its' if one else 'their'} rows' n_labeled does not count: set "
         f"val_per_class to cap them, or select_on: none for a fixed budget")


def _warn_unscored_classes(cfg: ExperimentConfig, data: Prepared, counts: torch.Tensor, unit: str) -> None:
    """Warn (once per run: ``_check_jobs`` runs once) about target classes with training images but
    none in the test split (trained on, never scored) or, when selecting on it, the val split."""
    trained = data.target.train.class_counts() > 0
    for part in ("test", "val") if cfg.select_on == "target_val" else ("test",):
        missing = trained & (getattr(data.target, part).class_counts() == 0)
        if not bool(missing.any()):
            continue
        ids = torch.nonzero(missing).flatten().tolist()
        word = unit.split()[0]  # "images" / "groups", "image" / "group" for one
        own = cfg.test is not None and part == "test"  # a test set of its own: the target's images are not cut
        if cfg.test is not None:  # the target's own images (the config's test set counts apart)
            counts = data.target.train.class_counts() + data.target.val.class_counts()
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


def method_error(cls, options: dict, error: Exception) -> TransferkitError:
    """``error`` (from building or checking method ``cls`` with ``options``) named with both."""
    why = str(error) if isinstance(error, (TransferkitError, TypeError, ValueError)) \
        else f"{type(error).__name__}: {error}"
    why = why.removeprefix(f"{cls.name}: ")  # the method's own checks name it too
    return TransferkitError(f"method {cls.name}{f' with options {_short(options)}' if options else ''}: {why}")


def _short(value, limit: int = 80):
    """``value`` for a message: a dict's values each shortened; a list, array or tensor whose
    text is longer than ``limit`` characters as its kind and shape (``<list of 10 × 9>``)."""
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if not (isinstance(value, (list, tuple)) or hasattr(value, "shape")) or len(repr(value)) <= limit:
        return value
    shape, inner = list(getattr(value, "shape", ())), value
    while not hasattr(value, "shape") and isinstance(inner, (list, tuple)):
        shape.append(len(inner))
        rows = {len(v) if isinstance(v, (list, tuple)) else -1 for v in inner}
        inner = inner[0] if len(rows) == 1 and -1 not in rows else None
    return _Bare(f"<{type(value).__name__} of {' × '.join(map(str, shape))}>")


class _Bare(str):
    """A string that a dict's repr shows without quotes."""

    def __repr__(self):
        return str(self)


def _run_in_workers(cfg: ExperimentConfig, run_dir: Path, todo: list, pre_info: dict, log,
                    failures: list) -> list[dict]:
    """The rows of the ``(setting's config, method class, seed)`` jobs of ``todo``, run in
    ``cfg.workers`` processes (each row logged and written as its job ends)."""
    rows: list = [[]] * len(todo)
    several = len(cfg.settings()) > 1

    def done(i, result):
        sub, cls, seed = todo[i]
        rows[i] = _job_done(sub, run_dir, cls.name, seed, result, failures, log, several)
    source = None if pre_info.get("path") is None else str(pre_info["path"])
    jobs = [(_worker_job, sub.to_dict(), str(run_dir), cls.name, seed, source, pre_info.get("digest"))
            for sub, cls, seed in todo]
    map_jobs(guarded, jobs, cfg.workers, done)
    return [row for done_rows in rows for row in done_rows]



def _result_neutral_defaults(train: TrainConfig) -> TrainConfig:
    """``train`` with the settings that do not change what is trained (progress bar,
    checkpoint interval; ``NOT_RESULTS``) at their defaults: a cache key that ignores them and
    stays the key of a config that never set them."""
    neutral = {k.split(".", 1)[1] for k in NOT_RESULTS if k.startswith("train.")}
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name in neutral}
    return replace(train, **defaults)


#: how :func:`job_digest` counted a method's options: now, and in rows of earlier versions
DIGEST_FORMS = ("trained", "given", "every")


def job_digest(cfg: ExperimentConfig, method: str, form: str = "trained", revision: int | None = None) -> str:
    """What a job's row depends on: the config but what only chooses jobs or where they run
    (``methods``, ``repeats``, ``NOT_RESULTS``), with only this method's options as they
    change what is trained (``form="trained"``: :func:`~transferkit.methods.base.trained_options`,
    so an option spelled at its default or a ``not_trained_options`` one, e.g. flex's
    ``workers``, changes nothing). Earlier rows counted the options as given, less
    (``"given"``) or with (``"every"``) the ``not_trained_options``. Stored in the row, it
    tells a job file written under another config.yaml from one of this run. A method's
    nonzero ``revision`` (``revision``: another one) is part of it."""
    check(form in DIGEST_FORMS, f"digest form must be one of {DIGEST_FORMS}, got {form!r}")
    flat = {k: v for k, v in flat_config(cfg.to_dict()).items() if k not in NOT_RESULTS | CHOOSES_JOBS}
    for key, default in ADDED_FIELDS.items():
        if flat.get(key) == default:  # at its default: rows from before the field keep their digest
            flat.pop(key, None)
    cls, given = get_method(method), cfg.options.get(method, {})
    revision = cls.revision if revision is None else revision
    if revision:
        flat["method_revision"] = revision
    files = {k: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for k, path in option_files(cls, given).items()}
    if files:  # a matrix file's contents, not only its name (an edited file gives other jobs)
        flat["option_files"] = files
    if form == "trained":
        flat["options"] = trained_options(cls, given)
    else:
        skip = () if form == "every" else cls.not_trained_options
        flat["options"] = {k: v for k, v in given.items() if k not in skip}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def option_files(cls, given: dict) -> dict:
    """``{option: path}`` of the files that method class ``cls``'s options ``given`` read (a matrix
    file, ``.npy`` / ``.csv`` / ``.txt``, or an option the class names in ``file_options``, as clip's
    ``captions_file``), those that exist: their contents enter a job's digest."""
    out = {}
    for k, v in given.items():
        named = k in getattr(cls, "file_options", ())
        if isinstance(v, str) and (named or v.lower().endswith(MATRIX_FILES)):
            path = Path(v).expanduser() if named else Path(v)  # a matrix file's rule as before (older digests)
            with contextlib.suppress(OSError):  # a name too long to be a path
                if path.is_file():
                    out[k] = path
    return out


def _stored_options(stored: dict, method: str) -> dict:
    """The options a run's stored config gave ``method``."""
    return ((stored or {}).get("options") or {}).get(method, {})


def _check_same_config(path: Path, cfg: ExperimentConfig) -> dict:
    """Refuse to resume the run of ``path`` (its ``config.yaml``) with a config whose results
    would differ; the error names the keys. ``methods``, ``repeats``, ``options``, ``k`` and
    ``ratio`` only choose jobs: a finished job is checked by its own digest (:func:`job_digest`) instead."""
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise TransferkitError(f"{path} is unreadable: {e}") from e
    check(isinstance(stored, dict), f"{path} is not a run config (not a mapping)")
    diff = _config_changes(stored, cfg)
    check(not diff, f"{path.parent} holds a run with another config ({'; '.join(diff)}); resume it with the same "
                    f"config")
    return stored


def _config_changes(stored: dict, cfg: ExperimentConfig) -> list[str]:
    """``"key: old there, new now"`` for each key that a job's results depend on (not one of
    :data:`NOT_RESULTS`, :data:`CHOOSES_JOBS` or :data:`CHOOSES_SETTINGS`) and that differs between a ``stored`` config
    mapping and ``cfg``, sorted by key."""
    then = {**ADDED_FIELDS, **flat_config(stored)}
    now = flat_config(yaml.safe_load(dump_config(cfg)))  # as stored: lists
    return [f"{k}: {then.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(then) | set(now))
            if k not in NOT_RESULTS | CHOOSES_JOBS | CHOOSES_SETTINGS and then.get(k) != now.get(k)]


def _log_row(log, several: bool, row: dict) -> dict:
    """Log a finished job's line (``several``: the run has several settings, which it names)."""
    picked = f", picked {row['picked']}" if isinstance(row.get("picked"), str) else ""
    log(f"  {row['method']:<14} {row['setting'] + ' ' if several else ''}seed {row['seed']}: accuracy "
        f"{100 * row['accuracy']:.1f}%  ({row['wall_s']:.1f}s)"
        + picked)
    return row
