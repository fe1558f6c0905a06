"""``transferkit bench represent``: ERM vs CAT_n vs DISTILL_n representations (seed 004).

For ``mnist -> digits``, ``syndigits -> mnist`` and ``mnist -> mnistm``: ``n`` lenet
networks are trained on the source with seeds 0..n-1 (ERM is seed 0), concatenated
(``cat2``, ``cat4``; the CAT heads are seeded, so rows do not depend on whether the source
networks were cached) and all ``n_max`` of them distilled into one lenet (``distill`` =
DISTILL_{n_max}, whichever ``cats`` are selected).
Each representation is transferred with ``linear_probe``, ``finetune`` and ``two_stage``
(``cat_two_stage`` for CAT) at several numbers of labelled target images per class (the
curves of seed 004 Fig. 1), and evaluated with 5-way 1-shot and 5-shot episodes
(600 episodes, target test split, frozen features) with the ``linear`` (Baseline),
``cosine`` (Baseline++) and ``prototype`` heads. One JSON file per job in
``bench_dir/jobs``; distilled networks in ``bench_dir/nets`` (both skipped when present).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch

from ..backbones import build_backbone
from ..config import ExperimentConfig
from ..engine import Engine, TrainConfig
from ..errors import check, is_whole
from ..fewshot_eval import (
    FEWSHOT_HEADS,
    NORMAL_CI_EPISODES,
    evaluate_episodes,
    extract_features,
    few_episodes_note,
)
from ..fitting import evaluate_on, retarget_head
from ..io import load_safetensors, read_json, save_safetensors, write_json, write_text
from ..jobs import job_result
from ..methods.finetune import Finetune, LinearProbe, TwoStage
from ..represent import CatTwoStage, cat_network, distill_network, member_dir, source_members
from ..rundata import prepare_domains
from ..splits import subsample_per_class
from ..tables import diverged_line, diverged_mark
from . import Plan, as_list, as_pairs, benchmark, budget_line, note_capped_sizes, path_part

PAIRS = (("mnist", "digits"), ("syndigits", "mnist"), ("mnist", "mnistm"))
BACKBONE = "lenet"


@dataclass
class RepresentPlan(Plan):
    selects: ClassVar[tuple[str, ...]] = ("pairs", "cats", "sizes", "seeds")
    pairs: tuple = PAIRS
    n_max: int = 4  # source networks trained (CAT members)
    cats: list = field(default_factory=lambda: [2, 4])
    sizes: list = field(default_factory=lambda: [2, 5, 20])  # labelled target images per class
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    pretrain: int = 400
    distill: int = 400
    train: int = 100
    episodes: int = 600

    def __post_init__(self):
        self.pairs = as_pairs(self.pairs)
        self.cats, self.sizes, self.seeds = (as_list(getattr(self, k), int, k, minimum=m)
                                             for k, m in (("cats", 2), ("sizes", 1), ("seeds", 0)))
        check(is_whole(self.n_max, 2), f"n_max must be a whole number >= 2 (the source networks a CAT of 2 or more "
                                       f"combines), got {self.n_max!r}")
        check(all(2 <= n <= self.n_max for n in self.cats), f"cats must be between 2 and n_max={self.n_max}")
        check(min(self.pretrain, self.distill, self.train, self.episodes) >= 1,
              "pretrain, distill, train and episodes must be >= 1")

    def budget(self) -> str:
        return (f"{self.n_max} source networks of up to {self.pretrain} pre-training steps, distillation up to "
                f"{self.distill} steps, transfer up to {self.train} steps per training (two_stage: two, the network "
                f"then a new head, up to {2 * self.train} steps; CAT_n's: one per member, then the head), "
                f"{self.episodes} episodes per few-shot evaluation, seeds {', '.join(map(str, self.seeds))}")



def _with_interval(row: dict, sep: str = "±") -> str:
    """An episodic row's accuracy in percent and its 95 % interval (none for one episode: NaN)."""
    ci = row.get("ci95")
    interval = "" if ci is None or math.isnan(ci) else f"{sep}{100 * ci:.1f}"
    return f"{100 * row['accuracy']:.1f}{interval}"

def represent_plan(quick: bool) -> RepresentPlan:
    if quick:
        return RepresentPlan(quick=True, pairs=PAIRS[:1], n_max=2, cats=[2], sizes=[5], seeds=[0], pretrain=200,
                             distill=200, episodes=100)
    return RepresentPlan()


def _config(source: str, target: str, s: RepresentPlan) -> ExperimentConfig:
    return ExperimentConfig(name=f"represent-{path_part(source, target)}", source=source, target=target,
                            backbone=BACKBONE, k=None,
                            pretrain=TrainConfig(steps=s.pretrain, batch_size=64, eval_every=100),
                            train=TrainConfig(steps=s.train, batch_size=32, eval_every=25, patience=2))


def _distilled(cfg, data, members, s, path: Path, log):
    """DISTILL of ``members``, stored in ``path`` (read back from there); its record (``path`` ``.json``) has
    ``diverged: true`` where the distillation diverged."""
    torch.manual_seed(cfg.seed)  # the student's initial weights
    net = build_backbone(cfg.backbone, data.source.train.num_classes, data.channels, cfg.image_size)
    if path.exists():
        net.load_state_dict(load_safetensors(path, "distilled network", "delete it to distil it again")[0])
        return net
    log(f"  distilling cat{len(members)} into one {cfg.backbone} ({s.distill} steps)")
    train = TrainConfig(steps=s.distill, batch_size=64, eval_every=100)
    net, fit = distill_network(members, lambda: net, lambda tag, config=None: Engine(config or train, seed=cfg.seed),
                               data.source.train, data.source.val)
    write_json(path.with_suffix(".json"), {"val_accuracy": fit.val_accuracy, "steps": fit.steps,
                                           **diverged_mark(fit.diverged)})  # first, as flex's source
    save_safetensors(path, {k: v.contiguous() for k, v in net.state_dict().items()})
    return net


def _representations(members, cats, seed: int) -> dict:
    """``erm`` (the first member) and ``cat<n>`` of the first ``n`` members for each ``n`` in
    ``cats``; the CAT heads are seeded with ``seed`` (a finetune row starts from its head)."""
    return {"erm": members[0], **{f"cat{n}": cat_network(members[:n], seed=seed) for n in cats}}


def _transfer(rep: str, net, method: str):
    """The method instance for (representation, transfer method) on a copy of ``net``."""
    is_cat = rep.startswith("cat")
    if method == "linear_probe":
        return LinearProbe(net)
    if method == "finetune":
        return Finetune(net)
    return CatTwoStage(net) if is_cat else TwoStage(net)


@benchmark("represent", "ERM vs CAT2/CAT4 vs DISTILL with linear probe / fine-tune / two-stage at several target "
                        "sizes, and 5-way 1/5-shot episodes with Baseline, Baseline++ and prototype heads (seed 004)",
           plan=represent_plan, workers=False, outputs=("represent.md",))
def represent_suite(s: RepresentPlan, bench_dir, log):
    bench_dir = Path(bench_dir)
    jobs = bench_dir / "jobs"
    (bench_dir / "nets").mkdir(parents=True, exist_ok=True)
    jobs.mkdir(parents=True, exist_ok=True)
    rows = []
    for source, target in s.pairs:
        cfg = _config(source, target, s)
        data = prepare_domains(cfg)
        log(f"{source} -> {target}: {len(data.source.train)} source train images, {len(data.target.test)} target test")
        pins = bench_dir / "nets" / path_part(source, target)
        members = source_members(cfg, data, s.n_max, log, pin_dir=pins)
        reps = _representations(members, s.cats, cfg.seed)
        net_path = bench_dir / "nets" / f"distill-{path_part(source, target)}.safetensors"
        reps["distill"] = _distilled(cfg, data, members, s, net_path, log)
        # the rows of a representation built on a diverged pre-training or distillation: diverged (as run_job's)
        member_diverged = [_diverged(member_dir(pins, i) / "source.json") for i in range(s.n_max)]
        diverged = {"erm": member_diverged[0], **{f"cat{n}": any(member_diverged[:n]) for n in s.cats},
                    "distill": any(member_diverged) or _diverged(net_path.with_suffix(".json"))}
        bases = {rep: {"source": source, "target": target, **diverged_mark(diverged[rep])}
                 for rep in reps}
        for rep, net in reps.items():
            rows += job_result(jobs / f"fewshot-{rep}-{path_part(source, target)}.json",
                               partial(_fewshot_rows, rep, net, data, s, bases[rep]),
                               lambda job_rows: log("  " + ", ".join(
                                   f"{r['method']} {r['setting']} {_with_interval(r)}"
                                   for r in job_rows)))
        note_capped_sizes(data.target.train, s.sizes, log,
                          f"{source} -> {target}: column '{{n}}/class' takes every image")
        for n in s.sizes:
            for seed in s.seeds:
                labeled = subsample_per_class(data.target.train, n, seed)
                for rep, net in reps.items():
                    for method_name in ("linear_probe", "finetune", "two_stage"):
                        rows.append(job_result(
                            jobs / f"{rep}-{method_name}-{path_part(source, target)}-n{n}-s{seed}.json",
                            partial(_transfer_row, rep, net, method_name, n, seed, labeled, data, cfg, bases[rep]),
                            lambda row: log(f"  {row['method']:<21} {row['setting']:>9} seed {row['seed']}: "
                                            f"{100 * row['accuracy']:.1f}% ({row['wall_s']:.0f}s)")))
    write_text(bench_dir / "represent.md", represent_tables(rows, s))
    return rows


def _diverged(record: Path) -> bool:
    """Whether a stored network's record says its training diverged (no record, or an older one without
    the flag: not)."""
    if not record.is_file():
        return False
    info = read_json(record, "network record", "delete it and its network to train the network again")
    return isinstance(info, dict) and info.get("diverged") is True


_METHOD_ORDER = ("linear_probe", "finetune", "two_stage", "linear", "cosine", "prototype")


def _order(method: str) -> tuple:
    rep, _, rest = method.partition("/")
    rest = rest.replace("fewshot_", "")
    cat_n = int(rep[3:]) if rep.startswith("cat") and rep[3:].isdigit() else None
    rank = (1, cat_n) if cat_n is not None else ({"erm": 0, "distill": 2}.get(rep, 3), 0)  # erm, CAT_n by n, distill
    return (rank, rep, _METHOD_ORDER.index(rest) if rest in _METHOD_ORDER else 99, rest)


def _fewshot_rows(rep: str, net, data, s: RepresentPlan, base: dict) -> list[dict]:
    """5-way 1- and 5-shot episodes on the target test split with frozen features of ``net``.
    A row's ``wall_s`` is its own head's episodes plus the feature extraction they share
    (``features_wall_s``)."""
    t0 = time.perf_counter()
    feats = extract_features(net, data.target.test.images)
    extract_s = time.perf_counter() - t0
    rows = []
    for k in (1, 5):
        for head in FEWSHOT_HEADS:  # the same episodes for every head (one seed)
            t1 = time.perf_counter()
            r = evaluate_episodes(feats, data.target.test.labels, head, n_way=5, k_shot=k, n_query=15,
                                  episodes=s.episodes, seed=0, groups=data.target.test.groups)[head]
            rows.append({**base, "method": f"{rep}/fewshot_{head}", "setting": f"5-way {k}-shot",
                         "seed": 0, "accuracy": r["mean"], "ci95": r["ci95"], "episodes": r["episodes"],
                         "feature_dim": int(feats.shape[1]), "features_wall_s": extract_s,
                         "wall_s": extract_s + time.perf_counter() - t1})
    return rows


def _transfer_row(rep: str, net, method_name: str, n: int, seed: int, labeled, data, cfg, base: dict) -> dict:
    """Transfer a copy of representation ``net`` to ``labeled`` with ``method_name``; test accuracy."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    copy_net = copy.deepcopy(net)
    classes = data.source.train.class_names, data.target.train.class_names
    retarget_head(copy_net, *classes)
    method = _transfer(rep, copy_net, method_name)
    if isinstance(method, CatTwoStage):  # each member is fine-tuned as ERM two_stage is: from its own head
        for member in copy_net.unit("cat").members:
            retarget_head(member, *classes)
    fit = method.fit_transfer(lambda tag, config=None: Engine(config or cfg.train, seed=seed), target=labeled,
                              val=data.target.val)
    report = evaluate_on(method, data.target.test)
    return {**base, "method": f"{rep}/{method_name}", "setting": f"{n}/class", "seed": seed,
            "accuracy": report["accuracy"], "wall_s": time.perf_counter() - t0, "val_accuracy": fit.val_accuracy,
            "n_labeled": len(labeled), "feature_dim": int(copy_net.embed_dim), **method.extra_results(),
            **diverged_mark(fit.diverged),  # as a run's rows
            **({"n_val_labeled": len(data.target.val)} if fit.best_val_accuracy is not None
               and method.selects_on_validation else {})}  # the selection note's count, as a run's rows


def represent_tables(rows: list[dict], plan: RepresentPlan | None = None) -> str:
    """Markdown: transfer accuracy per (representation, method) x target size, per pair; and
    the episodic few-shot table; ``plan``: the one the rows ran with (its budget, and whether
    quick, in a header); a line under a table names its diverged rows
    (:func:`~transferkit.tables.diverged_line`), where any."""
    from ..evaluate import mean_se

    out = [f"# represent benchmark{' (quick)' if plan.quick else ''}", "", budget_line(plan, represent_plan(False)),
           ""] if plan is not None else []
    for source, target in sorted({(r["source"], r["target"]) for r in rows}):
        pr = [r for r in rows if (r["source"], r["target"]) == (source, target) and "/class" in r["setting"]]
        if not pr:
            continue
        sizes = sorted({r["setting"] for r in pr}, key=lambda x: int(x.split("/")[0]))
        out += [f"### {source} -> {target} (target test accuracy %; mean ± s.e. when several seeds)", "",
                "| representation / transfer | " + " | ".join(sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
        for m in sorted({r["method"] for r in pr}, key=_order):
            cells = []
            for size in sizes:
                acc = [r["accuracy"] for r in pr if r["method"] == m and r["setting"] == size]
                mean, se = mean_se(acc) if acc else (float("nan"), 0.0)
                cells.append("-" if not acc else f"{100 * mean:.1f}" + (f" ± {100 * se:.1f}" if len(acc) > 1 else ""))
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out += ["", *[text for line in diverged_line(pr) for text in (line, "")]]
    fs = [r for r in rows if "fewshot" in r["method"]]
    if fs:
        out += ["### 5-way episodic accuracy on the target test split (frozen features; mean ± 95 % interval)", "",
                "| pair | representation | head | 1-shot | 5-shot |", "|---|---|---|---|---|"]
        keys = {(r["source"], r["target"], r["method"]) for r in fs}
        for key in sorted(keys, key=lambda k: (k[0], k[1], _order(k[2]))):
            rs = {r["setting"]: r for r in fs if (r["source"], r["target"], r["method"]) == key}
            rep, head = key[2].split("/fewshot_")
            cells = [_with_interval(rs[s], " ± ") if s in rs else "-"
                     for s in ("5-way 1-shot", "5-way 5-shot")]
            out.append(f"| {key[0]} -> {key[1]} | {rep} | {head} | " + " | ".join(cells) + " |")
        few = min((r["episodes"] for r in fs if isinstance(r.get("episodes"), int)), default=0)
        if 1 < few < NORMAL_CI_EPISODES:
            out += ["", few_episodes_note(few)]
        out += [text for line in diverged_line(fs) for text in ("", line)]
    return "\n".join(out) + "\n"
