"""A run's data: its config's domains read, split and formatted (:func:`prepare_domains`),
each seed's labelled target subset (:func:`label_subset`) and each method's model-selection
split (:func:`selection_domain`)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import ExperimentConfig
from .data import channels_chosen, has_colour_shift, is_shipped, load_domain
from .domain import Domain, warn_numbered_match
from .engine import ADDED_TRAIN_FIELDS, TrainConfig
from .errors import check, is_quiet, quiet, warn
from .evaluate import chunk_rows
from .fitting import build_method, reads_no_target_label, zero_shot_options
from .grouped import sample_k_groups
from .networks import SAVE_NETWORK, file_channels, read_network_file, stored_classes
from .splits import (
    Split,
    dataset_name,
    numbered_classes,
    parse_classes,
    sample_k_shot,
    split_domain,
    subsample_per_class,
)
from .userdata import reading_progress


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
    #: how many images of the config's ``test`` are source train and val images
    test_in_source: dict = field(default_factory=dict)


#: the fields of a config that do not choose its data (:func:`data_key`)
NOT_DATA = ("name", "backbone", "pretrained", "methods", "k", "ratio", "repeats", "select_on", "select_metric",
            "pretrain", "train", "options", "out_dir", "workers", "device")
_SHARED: dict | None = None  # within shared_domains(): the data of the last data key prepared


def data_key(cfg: ExperimentConfig, run_dir: Path | None = None) -> str:
    """What :func:`prepare_domains` reads of ``cfg`` (every field but :data:`NOT_DATA`), and without source images
    the network (its file or backbone) and run directory that name the source classes."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in NOT_DATA}
    if cfg.source is None:
        fields.update(backbone=cfg.backbone, pretrained=cfg.pretrained,
                      run_dir=None if run_dir is None else str(run_dir))
    return json.dumps(fields, sort_keys=True, default=repr)


@contextlib.contextmanager
def shared_domains():
    """Within it, :func:`prepare_domains` prepares the data of a :func:`data_key` once and gives
    the same :class:`Prepared` again while no other key comes between (so the runs of one seed of a
    benchmark that differ in methods or budget share it; a repeat shows no warning again). For
    files that do not change meanwhile: a built-in domain's, or a benchmark's."""
    global _SHARED
    before, _SHARED = _SHARED, {}
    try:
        yield
    finally:
        _SHARED = before


def prepare_domains(cfg: ExperimentConfig, progress: bool | None = None, run_dir: Path | None = None) -> Prepared:
    """The config's domains, split and formatted; ``progress``: a bar while a large folder is decoded
    (None: ``cfg.train.progress``, whose None is when stderr is a terminal or in a Jupyter kernel). ``run_dir``: the run
    they are for, whose pinned network names the source classes of a ``source: null`` run that
    has one (:func:`network_source`). Within :func:`shared_domains`, once per data key."""
    if _SHARED is None:
        return _prepare(cfg, progress, run_dir)
    return _last_prepared(_SHARED, data_key(cfg, run_dir), lambda: _prepare(cfg, progress, run_dir))


def _last_prepared(store: dict, key: str, prepare) -> Prepared:
    """``store``'s data of ``key`` (:func:`data_key`), from ``prepare()`` when another key's was the last:
    one entry, so that a process holds one run's data at a time."""
    if key not in store:
        store.clear()
        store[key] = prepare()
    return store[key]


def _prepare(cfg: ExperimentConfig, progress: bool | None, run_dir: Path | None) -> Prepared:
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
    test_overlap, test_in_source = {}, {}  # of a test set of its own: its images that are target / source images
    if test is not None:  # a test set of its own: the target is cut into train and val only
        target.test = as_target_test(cfg, test, target.train, channels)
        prints = image_prints(target.test.images)  # once, for the (up to) four pools
        test_overlap = _test_overlap(cfg, target, target.test, "target", "the methods would be scored on images "
                                     "they trained or selected on", prints)
        if src is not None:  # the source network trains and selects on the source's train / val splits
            test_in_source = _test_overlap(cfg, source, target.test, "source", "the source network trained or "
                                           "selected on images the methods are scored on", prints)
    else:  # the target's own test split: a duplicate file, or a source holding target images, leaks into it
        _own_test_overlap(cfg, source, target)
    warn_numbered_match(source.train, target.train)
    _check_two_classes("target", cfg.target, target.train, cfg.target_classes, tgt, "every model would score 100 %")
    if src is not None:
        _check_two_classes("source", cfg.source, source.train, cfg.source_classes, src, "a network trained to tell "
                           "one class from none learns nothing (its cross entropy is 0 whatever the weights)")
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
                    test_overlap=test_overlap, test_in_source=test_in_source)


def _test_overlap(cfg: ExperimentConfig, split: Split, test: Domain, side: str, why: str,
                  test_prints: torch.Tensor | None = None) -> dict:
    """How many images of the config's own ``test`` set are images of ``split``'s train and val
    parts (pixel for pixel), with a warning that says so and ``why`` it matters (``test_prints``:
    ``test``'s :func:`image_prints`, computed once for both sides)."""
    shared = {part: shared_images(getattr(split, part), test, test_prints) for part in ("train", "val")}
    if any(shared.values()):
        warn(f"test {cfg.test!r}: " + " and ".join(f"{n} of its {len(test)} images are {side} {part} images"
                                                     for part, n in shared.items() if n)
             + f" (pixel for pixel): {why}; give a test set apart from the {side}'s images")
    return shared


def _own_test_overlap(cfg: ExperimentConfig, source: Split, target: Split) -> None:
    """Warn of images of the target's test split that are also target train / val images or source
    train / val images, pixel for pixel (a file saved twice in a folder, or a source folder holding
    target images): the split is by file, so such copies would be scored after being trained on.
    Shipped domains have none (a source and a target cut from one pool share its split), so they are
    not searched, nor where the warning is not shown (a worker's :func:`process_domains`)."""
    test = target.test
    if is_quiet() or len(test) == 0 or all(is_shipped(s) for s in (cfg.source, cfg.target) if s is not None):
        return
    prints = image_prints(test.images)  # once, for the four pools
    found = {f"{side} {part}": shared_images(getattr(split, part), test, prints)
             for side, split in (("target", target), ("source", source)) for part in ("train", "val")}
    if any(found.values()):
        warn(f"target {cfg.target!r}: of its {len(test)} test images, "
             + ", ".join(f"{n} is a {where} image" if n == 1 else f"{n} are {where} images"
                         for where, n in found.items() if n)
             + " (pixel for pixel: copies of one image): the methods (or the source network) would be scored on "
               "images they trained or selected on; remove the copies, or give a test set of its own (test)")


def _check_two_classes(side: str, spec: str, train: Domain, classes, whole: Domain, why: str) -> None:
    """Refuse a ``side`` (target, source) whose train split has one class, saying ``why`` it cannot work and how
    the class list ``classes`` (``target_classes``, ``source_classes``) of the ``whole`` domain names two."""
    check(train.num_classes >= 2,
          f"the {side} {spec!r} has one class ({train.class_names}"
          f"{f', {side}_classes {classes!r}' if classes is not None else ''}): {why}; give two classes or more"
          f"{_one_class_hint(classes, whole)}")


def _one_class_hint(classes, domain: Domain) -> str:
    """How a class list (``target_classes``, ``source_classes``) names two classes of ``domain``: numbers are ids,
    or names of numbered folders."""
    if classes is None:
        return ""
    numbered = numbered_classes(domain)
    if numbered is None:
        return " (a number is one class id: the first three are 0-2)"
    return f" (its classes are named by numbers, so a number is one class name: e.g. {sorted(numbered)[:3]})"


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
    state, metadata = read_network_file(pinned if pinned is not None and pinned.exists() else path)
    names = stored_classes(path, metadata)
    check(names is not None, f"source: null takes the source classes from the pretrained network's file, and {path} "
                             f"names none (its head's rows would mean unknown classes): write it again with its "
                             f"class names ({SAVE_NETWORK}), or give the source domain")
    channels = cfg.channels or file_channels(cfg.backbone, len(names), cfg.image_size, state) \
        or target.images.shape[1]
    empty = torch.zeros(0, channels, cfg.image_size, cfg.image_size)
    parts = (Domain(f"{path.name}/{part}", empty, torch.zeros(0, dtype=torch.long), list(names),
                    provenance={"origin": f"pretrained:{path}"}) for part in ("train", "val", "test"))
    return Split(*parts), channels


def image_prints(images: torch.Tensor) -> torch.Tensor:
    """An int64 fingerprint per image (pixels to 0..255 integers against a fixed random probe; equal images
    give equal numbers, int64 sums wrap alike, exact whatever the thread count), computed in chunks."""
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.long)
    probe = torch.randint(0, 2**31, (images[0].numel(),), generator=torch.Generator().manual_seed(0))
    return torch.cat([(c * 255).round().long() @ probe for c in images.flatten(1).split(chunk_rows(images))])


def shared_images(pool: Domain, other: Domain, other_prints: torch.Tensor | None = None,
                  pool_prints: tuple[torch.Tensor, torch.Tensor] | None = None) -> int:
    """How many images of ``other`` are also in ``pool``, pixel for pixel (vectorised: the fingerprints
    of :func:`image_prints` find the candidates, whose pixels are then compared; no copy of a whole
    domain is made). ``other_prints``: ``other``'s fingerprints, computed once for several pools;
    ``pool_prints``: ``pool``'s, sorted with their order (``torch.sort(image_prints(pool.images))``),
    computed once for several others."""
    if len(pool) == 0 or len(other) == 0 or pool.images.shape[1:] != other.images.shape[1:]:
        return 0
    mine, order = torch.sort(image_prints(pool.images)) if pool_prints is None else pool_prints
    theirs = image_prints(other.images) if other_prints is None else other_prints
    pos = torch.searchsorted(mine, theirs).clamp(max=len(mine) - 1)
    hit = (mine[pos] == theirs).nonzero().flatten()
    return int((pool.images[order[pos[hit]]] == other.images[hit]).flatten(1).all(1).sum())


def _unlabeled_overlap(cfg: ExperimentConfig, unlabeled: Domain, target: Split) -> dict:
    """``{"val": n, "test": n}``: the config's unlabelled images that are also target val / test
    images, pixel for pixel (a warning names them: the methods would adapt on images they are
    scored on, a transductive protocol that the target's own split avoids)."""
    prints = torch.sort(image_prints(unlabeled.images))  # once, for both parts
    found = {part: shared_images(unlabeled, getattr(target, part), pool_prints=prints) for part in ("val", "test")}
    if any(found.values()):
        warn(f"unlabeled {cfg.unlabeled!r}: " + " and ".join(f"{n} of its images are target {part} images"
                                                             for part, n in found.items() if n)
             + f" (pixel for pixel, of {len(target.test)} test and {len(target.val)} val): the methods that read "
               f"them adapt on images they are then scored on (transductive), which the target's own split avoids; "
               f"leave those images out of the unlabelled set (rows record unlabeled_in_test)")
    return found


def test_fields(cfg: ExperimentConfig, data: Prepared) -> dict:
    """A row's fields on its test split: its size, and of a config's ``test`` the spec, the
    target classes it holds images of and its images that are also target (or source) train / val images."""
    out = {"n_test": len(data.target.test)}
    if data.target.test.groups is not None:  # grouped accuracy is over the groups (videos)
        out["n_test_groups"] = int(torch.unique(data.target.test.groups).numel())
    if cfg.test is not None:
        out.update(test=cfg.test, n_test_classes=len(data.target.test.present_classes()),
                   n_target_classes=data.target.train.num_classes, test_in_target=sum(data.test_overlap.values()),
                   test_in_source=sum(data.test_in_source.values()))
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


def selection_domain(cfg: ExperimentConfig, data: Prepared, cls=None) -> Domain | None:
    """The labelled domain that early stopping / model selection looks at (never the test
    split): the target validation split (seed 002 protocol), the source validation split
    (no target label used, the unsupervised setting), or none (fixed budget). A method
    ``cls`` that reads no target label (unsupervised adaptation) is never given the target's
    labels to select on: none for ``target_val`` (``check_jobs`` warns)."""
    if cfg.select_on == "target_val" and cls is not None and reads_no_target_label(cls):
        return None
    return {"target_val": data.target.val, "source_val": data.source.val, "none": None}[cfg.select_on]


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


def job_method(cfg: ExperimentConfig, data: Prepared, cls, net):
    """Method ``cls`` of a run's job on ``net``: the config's options for it, between the run's source and target
    classes (:func:`~transferkit.fitting.build_method`)."""
    options = zero_shot_options(cls, cfg.options.get(cls.name, {}), data.source.train.class_names,
                                data.target.train.class_names)
    return build_method(cls, net, options, data.source.train.class_names, data.target.train.class_names)


_PROCESS_DATA: dict = {}  # the domains of the last config a (worker) process prepared


def process_domains(cfg: ExperimentConfig, run_dir: Path | None = None) -> Prepared:
    """:func:`prepare_domains` once per process and config: a worker process's later jobs of
    the same config share the data (read from the disk cache once), as the jobs of a
    one-process run do. Its warnings about the data are not repeated: the process that
    started the workers prepared the same data and showed them. Keyed by :func:`data_key`: jobs of
    other settings, methods or budgets on the same data share it."""
    def prepare() -> Prepared:
        with quiet():
            return prepare_domains(cfg, progress=False, run_dir=run_dir)  # no bar of each worker
    return _last_prepared(_PROCESS_DATA, data_key(cfg, run_dir), prepare)


def class_fields(cfg: ExperimentConfig) -> dict:
    """The class subsets ``cfg`` chose (``source_classes``, ``target_classes`` as written), for a
    row: a table of a benchmark's rows, whose config is its plan, names them from there."""
    chosen = {side: getattr(cfg, f"{side}_classes") for side in ("source", "target")}
    return {f"{side}_classes": list(v) if isinstance(v, tuple) else v for side, v in chosen.items()
            if v is not None}  # a tuple as config.yaml and results.json keep it: a list


def labels_per_class(labeled: Domain) -> list[int]:
    """``[fewest, most]`` labelled images of a class of the target (a class with none: 0), for a row:
    the table says it where the setting does not (``all``)."""
    counts = torch.bincount(labeled.labels, minlength=labeled.num_classes)
    return [int(counts.min()), int(counts.max())]


def training_fields(train: TrainConfig) -> dict:
    """``sampler`` and ``class_weight`` of ``train`` where they are not their defaults, for the row of a
    job it trained (rows without them trained as before they were added)."""
    return {k: getattr(train, k) for k, default in ADDED_TRAIN_FIELDS.items() if getattr(train, k) != default}
