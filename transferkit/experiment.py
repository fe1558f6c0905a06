"""Run an experiment: pre-train on the source, transfer to the target with each method
over several random label subsets, evaluate on the target test split, write results.

Layout of a run directory ``runs/<name>/<timestamp>/``: ``config.yaml`` (resolved),
``metrics.jsonl`` (every evaluation of every training), ``jobs/*.json`` (one finished
(method, seed) each, written atomically), ``checkpoints/`` (engine checkpoints),
``results.json`` and ``results.md``. Re-running with ``resume`` skips finished jobs and
continues an interrupted training from its last checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .backbones import build_backbone
from .config import ExperimentConfig, dump_config
from .data import load_domain
from .domain import Domain
from .engine import Engine
from .errors import TransferkitError, check
from .evaluate import classification_report, predict_logits
from .io import atomic_write, cache_dir, write_json, write_text
from .methods import get_method
from .methods.supervised import SourceOnly
from .results import write_results
from .splits import Split, parse_classes, sample_k_shot, split_domain, subsample_per_class

PRETRAIN_FORMAT = 1


@dataclass
class Prepared:
    """Domains of one experiment, split and formatted."""

    source: Split
    target: Split
    channels: int


def prepare_domains(cfg: ExperimentConfig) -> Prepared:
    src = load_domain(cfg.source, seed=cfg.seed, size=cfg.image_size)
    tgt = load_domain(cfg.target, seed=cfg.seed, size=cfg.image_size)
    channels = cfg.channels or (3 if 3 in (src.images.shape[1], tgt.images.shape[1]) else 1)
    src, tgt = src.to_format(channels=channels), tgt.to_format(channels=channels)
    if cfg.source_classes is not None:
        src = src.select_classes(parse_classes(cfg.source_classes, src))
    if cfg.target_classes is not None:
        tgt = tgt.select_classes(parse_classes(cfg.target_classes, tgt))
    source, target = split_domain(src), split_domain(tgt)
    if cfg.val_per_class is not None:
        target.val = subsample_per_class(target.val, cfg.val_per_class, seed=0)
    return Prepared(source=source, target=target, channels=channels)


def head_mapping(source_classes: list[str], target_classes: list[str]) -> list[int | None]:
    """For each target class, the index of the same-named source class (or None)."""
    return [source_classes.index(c) if c in source_classes else None for c in target_classes]


def retarget_head(net, source_classes: list[str], target_classes: list[str]) -> None:
    """Give ``net`` a head over the target classes, copying the rows of classes shared
    with the source (a new classifier for new classes, as in seed 000 §4.1 fine-tuning)."""
    if list(source_classes) == list(target_classes):
        return
    old = net.get_classifier()
    net.reset_classifier(len(target_classes))
    new = net.get_classifier()
    with torch.no_grad():
        for t, s in enumerate(head_mapping(source_classes, target_classes)):
            if s is not None and hasattr(old, "weight") and old.weight.shape[1] == new.weight.shape[1]:
                new.weight[t] = old.weight[s]
                if getattr(old, "bias", None) is not None and getattr(new, "bias", None) is not None:
                    new.bias[t] = old.bias[s]


def pretrain_source(cfg: ExperimentConfig, data: Prepared, log=print):
    """Pre-train the backbone on the labelled source (cached on disk by content key).

    Returns ``(net, info)`` where ``info`` has the source validation accuracy, wall
    seconds and whether the network came from the cache."""
    source = data.source
    n_cls = source.train.num_classes
    net = build_backbone(cfg.backbone, num_classes=n_cls, in_channels=data.channels, image_size=cfg.image_size)
    if cfg.pretrained:
        _load_net(net, Path(cfg.pretrained))
        return net, {"cached": True, "wall_s": 0.0, "path": cfg.pretrained}
    key = hashlib.sha256(json.dumps({
        "v": [__version__, PRETRAIN_FORMAT], "source": cfg.source, "classes": source.train.class_names,
        "n": len(source.train), "size": cfg.image_size, "channels": data.channels, "backbone": cfg.backbone,
        "train": asdict(cfg.pretrain), "seed": cfg.seed}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "pretrained" / f"{cfg.backbone}-{key}.safetensors"
    if path.exists():
        try:
            _load_net(net, path)
            meta = json.loads(path.with_suffix(".json").read_text())
            return net, {**meta, "cached": True}
        except (TransferkitError, OSError, ValueError):
            log(f"pre-trained cache {path} unreadable; training again")
    log(f"pre-training {cfg.backbone} on {cfg.source} ({len(source.train)} images, {cfg.pretrain.steps} steps)")
    torch.manual_seed(cfg.seed)
    method = SourceOnly(net)
    fit = Engine(cfg.pretrain, seed=cfg.seed).fit(method, source=source.train, val=source.val)
    meta = {"val_accuracy": fit.best_val_accuracy, "steps": fit.steps, "wall_s": fit.wall_s}
    atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(p)))
    write_json(path.with_suffix(".json"), meta)
    return net, {**meta, "cached": False}


def _load_net(net, path: Path) -> None:
    check(path.exists(), f"pre-trained network {path} does not exist")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise TransferkitError(f"pre-trained network {path} is unreadable: {e}") from e
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise TransferkitError(f"pre-trained network {path} does not fit backbone: {e}") from e


def evaluate_on(forward, domain: Domain) -> dict:
    logits = predict_logits(forward, domain.images)
    return classification_report(logits, domain.labels, domain.num_classes, domain.groups)


def source_only_forward(net, data: Prepared):
    """Logits of the source network restricted to the target classes (by name)."""
    mapping = head_mapping(data.source.train.class_names, data.target.train.class_names)
    missing = [c for c, s in zip(data.target.train.class_names, mapping) if s is None]
    check(not missing, f"source_only cannot predict target classes absent from the source: {missing}")
    cols = torch.tensor(mapping)
    return lambda x: net(x)[:, cols]


def selection_domain(cfg: ExperimentConfig, data: Prepared) -> Domain | None:
    """The labelled domain that early stopping / model selection looks at (never the test
    split): the target validation split (seed 002 protocol), the source validation split
    (no target label used, the unsupervised setting), or none (fixed budget)."""
    return {"target_val": data.target.val, "source_val": data.source.val, "none": None}[cfg.select_on]


def label_subset(cfg: ExperimentConfig, target: Split, seed: int) -> tuple[Domain, Domain]:
    if cfg.k is not None:
        return sample_k_shot(target.train, cfg.k, seed)
    if cfg.ratio is not None:
        labeled = subsample_per_class(target.train, cfg.ratio, seed)
        return labeled, target.train
    return target.train, target.train


def new_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(cfg.out_dir) / cfg.name / stamp


def run_experiment(cfg: ExperimentConfig, run_dir: Path | None = None, log=print) -> tuple[Path, list[dict]]:
    """Run every (method, repeat) job of ``cfg``; return the run directory and the rows.
    Passing an existing ``run_dir`` resumes it: finished jobs are read back, not re-run."""
    methods = [get_method(m) for m in cfg.methods]  # unknown names fail before any work
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
    jobs_dir = run_dir / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    old = run_dir / "config.yaml"
    if old.exists() and old.read_text() != dump_config(cfg):
        raise TransferkitError(f"{run_dir} holds a run with another config; resume it with the same config")
    write_text(old, dump_config(cfg))
    data = prepare_domains(cfg)
    log(f"source {cfg.source}: {len(data.source.train)} train / {len(data.source.val)} val; "
        f"target {cfg.target}: {len(data.target.train)} train / {len(data.target.val)} val / "
        f"{len(data.target.test)} test; {data.channels} channel(s), {cfg.image_size} px")
    pretrained, pre_info = None, {}
    if any(m.needs_pretrained or m is SourceOnly for m in methods):
        pretrained, pre_info = pretrain_source(cfg, data, log)
        val_acc = pre_info.get("val_accuracy")
        log(f"source network: source val accuracy {'n/a' if val_acc is None else f'{100 * val_acc:.1f}%'}, "
            f"{pre_info['wall_s']:.1f}s"
            f"{' (cached)' if pre_info['cached'] else ''}")
    rows = []
    base = {"source": cfg.source, "target": cfg.target, "setting": cfg.setting}
    for r in range(cfg.repeats):
        seed = cfg.seed + r
        labeled, unlabeled = label_subset(cfg, data.target, seed)
        for cls in methods:
            if cls is SourceOnly and r > 0:
                continue  # one source network per experiment: its row does not vary with the label subset
            job = jobs_dir / f"{cls.name}-{cfg.setting}-s{seed}.json"
            if job.exists():
                rows.append(json.loads(job.read_text()))
                continue
            t0 = time.perf_counter()
            if cls is SourceOnly:
                report = evaluate_on(source_only_forward(pretrained, data), data.target.test)
                row = {**base, "method": cls.name, "seed": cfg.seed, "accuracy": report["accuracy"],
                       "wall_s": pre_info["wall_s"], "pretrain_cached": pre_info["cached"]}
            else:
                torch.manual_seed(seed)
                if cls.needs_pretrained:
                    net = copy.deepcopy(pretrained)
                else:
                    net = build_backbone(cfg.backbone, num_classes=data.source.train.num_classes,
                                         in_channels=data.channels, image_size=cfg.image_size)
                if "target" in cls.streams:
                    retarget_head(net, data.source.train.class_names, data.target.train.class_names)
                method = cls(net, **cfg.options.get(cls.name, {}))
                def make_engine(tag, config=None, job=job, seed=seed):
                    return Engine(config or cfg.train, seed=seed, metrics_path=run_dir / "metrics.jsonl",
                                  checkpoint_dir=run_dir / "checkpoints" / job.stem / tag)

                fit = method.fit_transfer(make_engine, source=data.source.train, target=labeled, unlabeled=unlabeled,
                                          val=selection_domain(cfg, data))
                report = evaluate_on(method, data.target.test)
                row = {**base, "method": cls.name, "seed": seed, "accuracy": report["accuracy"],
                       "wall_s": time.perf_counter() - t0, "val_accuracy": fit.best_val_accuracy,
                       "steps": fit.steps, "best_step": fit.best_step, "n_labeled": len(labeled)}
                row.update(method.extra_results())
            row["per_class_accuracy"] = report["per_class_accuracy"]
            row["confusion"] = report["confusion"]
            if "group_accuracy" in report:
                row["group_accuracy"] = report["group_accuracy"]
            write_json(job, row)
            rows.append(row)
            log(f"  {cls.name:<14} seed {row['seed']}: accuracy {100 * row['accuracy']:.1f}%  "
                f"({row['wall_s']:.1f}s)")
    write_results(run_dir, cfg.name, cfg.to_dict(), rows)
    return run_dir, rows
