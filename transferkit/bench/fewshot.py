"""Few-shot transfer across domains and tasks (seed 000 §4.1, §4.2).

* ``main``: syndigits 0-4 (all labels) -> mnist 5-9, k = 2, 3, 4, 5 labelled per class, the
  rest of the mnist train split unlabelled, 10 random label subsets per k; Table 1 form.
* ``second``: mnist 0-4 -> digits 5-9, same protocol.
* ``grouped``: mnist 0-4 -> digits@grouped5 5-9 (5 shifted views of each digit = a group),
  k labelled groups per class; per-sample and per-group accuracy (Table 2 form).
* ``ablation``: the full model without each of its terms, main pair, k = 2.
* t-SNE of target test embeddings (finetune vs full model, Figure 4 form) and accuracy vs k.

Model selection: none (``select_on="none"``): a fixed budget of steps, no target
validation labels, never the test split.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..config import ExperimentConfig
from ..engine import Engine, TrainConfig, keyed_fields
from ..errors import check
from ..evaluate import mean_se_text, predict_logits
from ..experiment import run_experiment
from ..fitting import build_method, fit_for_target
from ..io import atomic_write, remove_inside, write_text
from ..methods import get_method
from ..rundata import label_subset, prepare_domains
from ..source import pretrain_source
from ..tables import grouped_k_line, small_test_line
from . import Plan, as_list, benchmark, budget_line, kept_tsne

METHODS = ["target_only", "finetune", "multitask", "matching_net", "matching_ft", "finetune_adv", "lext",
           "finetune_proto", "finetune_cosine"]
PAIRS = {"main": ("syndigits", "mnist"), "second": ("mnist", "digits")}
PARTS = ("main", "second", "grouped", "ablation", "tsne")
VARIANTS = {"lext α=0": {"alpha": 0.0}}  # extra rows of the main tables: lext without L_DT
ABLATIONS = {  # label: (directory tag, lext options); the main rows hold lext and lext α=0
    "lext α=0 -eq5": ("a0_no_eq5", {"alpha": 0.0, "source_entropy": 0.0}),
    "lext -eq5": ("no_eq5", {"source_entropy": 0.0}),
    "lext α=0.01": ("alpha001", {"alpha": 0.01}),
    "lext α=0 -eq7": ("a0_no_eq7", {"alpha": 0.0, "target_entropy": 0.0}),
    "lext α=0 -eq6": ("a0_no_eq6", {"alpha": 0.0, "metric_ce": 0.0}),
    "lext -eq7": ("no_eq7", {"target_entropy": 0.0}),
    "lext -eq6": ("no_eq6", {"metric_ce": 0.0}),
    "lext α=0, head prediction": ("a0_head", {"alpha": 0.0, "predict": "head"}),
    "lext ψ = 10·cos": ("qs10", {"query_scale": 10.0}),
    "lext α=0, ψ = 10·cos": ("a0_qs10", {"alpha": 0.0, "query_scale": 10.0}),
}


def fewshot_config(name: str, source: str, target: str, k: int, quick: bool, repeats: int, methods: list,
                   options: dict | None = None) -> ExperimentConfig:
    return ExperimentConfig(
        name=name, source=source, target=target, source_classes="0-4", target_classes="5-9", k=k,
        repeats=repeats, seed=0, methods=methods, select_on="none", options=options or {},
        pretrain=TrainConfig(steps=steps(quick)[0], batch_size=64, eval_every=100),
        train=TrainConfig(steps=steps(quick)[1], batch_size=32, eval_every=30 if quick else 50, patience=None))


def steps(quick: bool) -> tuple[int, int]:
    """(pre-training, training) steps of every run: fixed by ``--quick``, not plan fields."""
    return (200, 30) if quick else (800, 100)


def _run(cfg: ExperimentConfig, bench_dir: Path, log, method_label: str | None = None) -> list[dict]:
    cfg.out_dir = str(bench_dir)
    _, rows = run_experiment(cfg, run_dir=bench_dir / cfg.name, log=log)
    for r in rows:
        r["part"] = cfg.name.split("-")[0].split("_")[0]
        if method_label:
            r["method"] = method_label
    return rows


@dataclass
class FewshotPlan(Plan):
    selects: ClassVar[tuple[str, ...]] = ("ks", "parts", "repeats")  # repeats: seeds 0..repeats-1 of every run
    budget_fields: ClassVar[bool] = False  # the steps: steps(quick)
    ks: list = field(default_factory=lambda: [2, 3, 4, 5])
    repeats: int = 10  # label subsets per k
    parts: list = field(default_factory=lambda: list(PARTS))

    def __post_init__(self):
        self.ks, self.parts = as_list(self.ks, int, "ks", minimum=1), as_list(self.parts, str, "parts")
        check(set(self.parts) <= set(PARTS), f"parts must be among {list(PARTS)}, got {self.parts}")
        check(bool(self.ks), "ks must name one k or more")
        check(min(self.ks) >= 2 or not {"main", "second"} & set(self.parts),
              f"ks must be >= 2 where the parts main or second run matching_ft, which trains on (k-1)-shot "
              f"episodes, got {self.ks}")
        check(self.repeats >= 1, f"repeats must be >= 1, got {self.repeats}")

    def budget(self) -> str:
        pretrain, train = steps(self.quick)
        return (f"pre-training up to {pretrain} steps, training {train} steps per label subset, {self.repeats} label "
                f"subset{'s' if self.repeats != 1 else ''} per k")


def fewshot_plan(quick: bool) -> FewshotPlan:
    return FewshotPlan(quick=True, ks=[2, 5], repeats=2, parts=["main", "grouped", "tsne"]) if quick else FewshotPlan()


@benchmark("fewshot", "seed 000 Table 1/2: syndigits 0-4 -> mnist 5-9 and mnist 0-4 -> digits 5-9, k = 2..5, "
                      "full model (lext) vs baselines; grouped accuracy; ablation; t-SNE", plan=fewshot_plan,
           outputs=("fewshot.md",))
def fewshot_suite(plan: FewshotPlan, bench_dir, log):
    """``--quick``: k = 2, 5, 2 subsets, 30 steps, main pair + grouped + t-SNE. Full: k = 2..5,
    10 subsets, 100 steps, every part. ``--set ks=... repeats=... parts=...`` reduce a run."""
    quick, repeats, ks, parts = plan.quick, plan.repeats, plan.ks, plan.parts
    rows: list[dict] = []
    for part in ("main", "second"):
        if part in parts:
            source, target = PAIRS[part]
            for k in ks:
                rows += _run(fewshot_config(f"{part}-k{k}", source, target, k, quick, repeats, METHODS), bench_dir, log)
                for i, (label, opts) in enumerate(VARIANTS.items()):
                    cfg = fewshot_config(f"{part}-variant{i}-k{k}", source, target, k, quick, repeats, ["lext"],
                                         {"lext": opts})
                    rows += _run(cfg, bench_dir, log, method_label=label)
    if "grouped" in parts:
        for k in ks:
            cfg = fewshot_config(f"grouped-k{k}", "mnist", "digits@grouped5", k, quick, repeats,
                                 ["target_only", "finetune", "lext"])
            rows += _run(cfg, bench_dir, log)
    if "ablation" in parts:
        for label, (tag, opts) in ABLATIONS.items():
            cfg = fewshot_config(f"ablation_{tag}-k{ks[0]}", *PAIRS["main"], ks[0], quick, repeats, ["lext"],
                                 {"lext": opts})
            rows += _run(cfg, bench_dir, log, method_label=label)
    write_text(bench_dir / "fewshot.md", fewshot_report(rows, plan))
    plot_dir = bench_dir / "img"
    for part in ("main", "second"):
        if any(r["part"] == part for r in rows):
            from ..plots import accuracy_vs_k_plot

            accuracy_vs_k_plot([r for r in rows if r["part"] == part], plot_dir / f"accuracy_vs_k_{part}.png",
                               title=f"{' -> '.join(PAIRS[part])} (classes 0-4 -> 5-9)")
        else:  # a resume that dropped the part: its figure of an earlier plan would not match the results
            remove_inside(plot_dir / f"accuracy_vs_k_{part}.png", bench_dir)
    if "tsne" in parts:
        tsne_figure(fewshot_config("tsne", *PAIRS["main"], ks[0], quick, 1, ["finetune", "lext"]), bench_dir, log)
    else:
        for name in ("tsne.png", "tsne.json"):  # the figure and its record
            remove_inside(plot_dir / name, bench_dir)
    return rows


def _k(row: dict) -> int:
    return int(row["setting"].split("=")[1])


def k_table(rows: list[dict], key: str = "accuracy", label=lambda m: m) -> str:
    """Rows: methods (in order of appearance), columns: k; cells mean ± standard error."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ks = sorted({_k(r) for r in rows})
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for m in methods:
        cells = []
        for k in ks:
            vals = [r[key] for r in rows if r["method"] == m and _k(r) == k and key in r]
            cells.append(f"{mean_se_text(vals, scale=1, digits=3)} (n={len(vals)})" if vals else "-")
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fewshot_report(rows: list[dict], plan: FewshotPlan | None = None) -> str:
    """fewshot.md: the Table 1 / 2 forms; ``plan``: the one the rows ran with (its budget, and whether quick,
    in the header)."""
    quick = " (quick)" if plan is not None and plan.quick else ""
    out = [f"# fewshot benchmark{quick}\n", *([budget_line(plan, fewshot_plan(False)) + "\n"] if plan else []),
           "Test accuracy, mean ± standard error over random label subsets.\n"]
    for part, title in (("main", "syndigits 0-4 -> mnist 5-9"), ("second", "mnist 0-4 -> digits 5-9")):
        sub = [r for r in rows if r["part"] == part]
        if sub:
            out += [f"\n## {title} (Table 1 form)\n\n", k_table(sub)]
    grouped = [r for r in rows if r["part"] == "grouped"]
    if grouped:
        per_view = k_table(grouped, "accuracy", lambda m: f"{m} (sample)").splitlines()
        per_group = k_table(grouped, "group_accuracy", lambda m: f"{m} (group)").splitlines()
        body = [line for pair in zip(per_view[2:], per_group[2:]) for line in pair]
        notes = grouped_k_line(grouped) + small_test_line(grouped)  # as results.md says them
        out += ["\n## mnist 0-4 -> digits@grouped5 5-9: per-sample and per-group accuracy (Table 2 form)\n\n",
                "\n".join(per_view[:2] + body) + "\n" + "".join(f"\n{line}\n" for line in notes)]
    ablation = [r for r in rows if r["part"] == "ablation"]
    if ablation:
        out += ["\n## Ablation of the full model (syndigits 0-4 -> mnist 5-9)\n\n", k_table(ablation)]
    return "".join(out)


def _train(name: str, cfg: ExperimentConfig, data, pretrained, labeled, unlabeled):
    """Method ``name`` trained on one label subset as a benchmark job trains it (``run_job``)."""
    cls = get_method(name)
    cls.check_data(labeled)
    classes = data.source.train.class_names, data.target.train.class_names
    torch.manual_seed(cfg.seed)  # before the new head's rows are drawn
    method = build_method(cls, copy.deepcopy(pretrained), cfg.options.get(name, {}), *classes)
    fit_for_target(method, lambda tag, config=None: Engine(config or cfg.train, seed=cfg.seed), *classes,
                   source=data.source.train, target=labeled, unlabeled=unlabeled)
    return method


def _cached_panels(cache: Path, log) -> dict | None:
    """The cached t-SNE embeddings, or None when there are none or the file is unreadable (a
    cache: computed again)."""
    if not cache.exists():
        return None
    try:
        panels = torch.load(cache, weights_only=True)  # tensors only: no pickled code runs
    except Exception as e:  # torn by a full disk, or not a torch file
        log(f"t-SNE cache {cache} is unreadable ({type(e).__name__}); computing the embeddings again")
        return None
    return panels if isinstance(panels, dict) else None


def tsne_figure(cfg: ExperimentConfig, bench_dir: Path, log, n: int = 600) -> Path:
    """Seed 000 Figure 4 (e, f): source test embeddings under the source network overlaid
    with target test embeddings under the source network, the fine-tuned network and the
    full model (one subset, seed ``cfg.seed``); the embeddings are cached in
    ``tsne/embeddings-<key>.pt``, keyed by what they depend on (domains, classes, k, seed,
    methods, options, budgets), so a resume with another k or options trains them anew, and the
    figure of the same embeddings is kept (:func:`~transferkit.bench.kept_tsne`)."""
    used = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "out_dir", "workers", "repeats")}
    used.update(train=keyed_fields(cfg.train), pretrain=keyed_fields(cfg.pretrain))  # new fields at their defaults:
    # the key of before they were added
    key = hashlib.sha256(json.dumps(used, sort_keys=True, default=str).encode()).hexdigest()[:12]
    cache = bench_dir / "tsne" / f"embeddings-{key}.pt"
    panels = _cached_panels(cache, log)
    if panels is None:
        data = prepare_domains(cfg)
        pretrained, _ = pretrain_source(cfg, data, log)
        labeled, unlabeled = label_subset(cfg, data.target, cfg.seed)
        g = torch.Generator().manual_seed(0)
        xs = data.source.test.images[torch.randperm(len(data.source.test), generator=g)[:n]]
        xt = data.target.test.images[torch.randperm(len(data.target.test), generator=g)[:n]]
        embed = lambda net, x: predict_logits(net.eval().forward_features, x)  # noqa: E731
        source_feats = embed(pretrained, xs)
        panels = {"source network": (source_feats, embed(pretrained, xt))}
        for name in cfg.methods:
            log(f"t-SNE: training {name}")
            panels[name] = (source_feats, embed(_train(name, cfg, data, pretrained, labeled, unlabeled).net, xt))
        atomic_write(cache, lambda p: torch.save(panels, p))
    options = "; ".join(f"{m} {o}" for m, o in cfg.options.items() if o)
    return kept_tsne(panels, bench_dir / "img" / "tsne.png", log, domain_names=("source 0-4", "target 5-9"),
                           title=f"{cfg.source} 0-4 (source network) and {cfg.target} 5-9 test embeddings, "
                                 f"k={cfg.k}, seed {cfg.seed}" + (f" ({options})" if options else ""))
