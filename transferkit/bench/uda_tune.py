"""The target-validation grid behind the ``dann`` and ``multilayer_adv`` defaults and the
per-pair settings of ``bench uda`` for ``dann``, ``multilayer_adv`` and ``mcc``
(``transferkit bench uda_tune``; docs/adaptation.md, "How the dann and multilayer_adv
settings were chosen").

Same pairs (the two SKADA pairs), budget and source networks as ``bench uda`` (the
pre-trained networks are shared through the cache), seeds 0-2. Each setting adapts the
seed's source network without target labels and is then scored on the target
**validation** split; the test split is never evaluated here. ``source_only`` is the
un-adapted network on the same split. The table ranks settings by their mean validation
accuracy over the pairs and seeds (the methods' defaults); ``selected.json`` and the second
table give each pair's own best setting (``bench uda`` runs those: ``uda.TUNED``). Picking
settings this way reads target labels, which a real unsupervised adaptation does not have
(the docs say so).

The plan is ``bench uda``'s budget (:class:`~transferkit.bench.uda.Budget`: ``--set seeds=...``,
``pairs=...``, ``adapt_steps=...``; not its ``methods`` / ``skada`` selection) with
seeds 0-2 and the SKADA pairs by default; ``--quick`` runs two settings per method, one
seed, the quick budget.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch

from ..distributed import world_size
from ..engine import Engine, content_text
from ..errors import check
from ..evaluate import mean_se
from ..fitting import evaluate_on
from ..io import write_json, write_text
from ..jobs import default_workers, run_jobs
from ..methods import get_method
from ..rundata import prepare_domains, process_domains
from ..source import pretrain_source, source_only_model
from . import benchmark, path_part
from .uda import SKADA_PAIRS, Budget, adaptation_epochs, budget, describe, pair_config

DANN_GRID = ([{"depth": d, "hidden": h, "lr_schedule": s, "weight": w}
              for d, h in ((2, 500), (1, 100)) for s in ("dann", None) for w in (0.1, 0.3, 1.0)]
             + [{"depth": d, "hidden": h, "lr_schedule": "dann", "optimizer": "sgd", "weight": w}  # seed 003's SGD
                for d, h, w in ((2, 500, 0.1), (2, 500, 0.3), (2, 500, 1.0), (1, 100, 1.0))]
             # the DANN paper's placement: the discriminator on the convolutional features (LeNet's conv2)
             + [{"depth": d, "hidden": h, "layers": "conv2", "lr_schedule": "dann", "weight": w}
                for d, h in ((2, 500), (1, 100)) for w in (0.1, 0.3, 1.0)]
             + [{"depth": 1, "hidden": 100, "layers": "conv2", "lr_schedule": "dann", "optimizer": "sgd",
                 "weight": 1.0}])
MULTILAYER_GRID = (
    [{"combine": "sum", "hidden": h, "lr_schedule": s, "same_label_space": True, "weight": w}
     for h in (500, 100) for s in ("dann", None) for w in (0.1, 0.3, 1.0)]
    + [{"combine": "sum", "hidden": 500, "lr_schedule": None, "same_label_space": True, "weight": 0.03}]
    + [{"combine": "concat", "hidden": 500, "lr_schedule": None, "same_label_space": True, "weight": w}
       for w in (0.03, 0.1, 0.3, 1.0)]
    + [{"combine": "sum", "hidden": 500, "lr_schedule": s, "same_label_space": False, "weight": w}
       for s in ("dann", None) for w in (0.1, 0.3, 1.0)])
# the authors' confidence weights without gradient (the default), or SKADA's form with it
MCC_GRID = [{"detach_weights": True}, {"detach_weights": False}]
GRID = {"dann": DANN_GRID, "multilayer_adv": MULTILAYER_GRID, "mcc": MCC_GRID}


def settings(quick: bool) -> list[tuple[str, dict]]:
    return [(method, options) for method, grid in GRID.items() for options in (grid[:2] if quick else grid)]


def tune_job(cfg, method: str, options: dict, head: dict) -> dict:
    """Adapt the seed's source network (``cfg.pretrained``) with ``method(**options)``: ``head`` with the
    accuracy on the target validation split. Module-level, so that it can run in a worker process."""
    data = process_domains(cfg)
    net, _ = pretrain_source(cfg, data, log=lambda *a: None)
    torch.manual_seed(cfg.seed)
    adapted = get_method(method)(copy.deepcopy(net), **options)
    fit = adapted.fit_transfer(lambda tag, config=None: Engine(config or cfg.train, seed=cfg.seed),
                               source=data.source.train, unlabeled=data.target.train)
    return {**head, "accuracy": evaluate_on(adapted, data.target.val)["accuracy"], "wall_s": fit.wall_s}


@dataclass
class TuneBudget(Budget):
    """uda's budget without its t-SNE: ``tsne_points`` stays at its default (a field, so that the
    plans of directories written before this class resume)."""

    selects: ClassVar[tuple[str, ...]] = ("seeds", "pairs")

    def __post_init__(self):
        super().__post_init__()
        check(self.tsne_points == budget(self.quick).tsne_points, f"uda_tune draws no t-SNE figure: tsne_points "
                                                                   f"does not apply (got {self.tsne_points}); leave "
                                                                   f"it out")


def tune_budget(quick: bool) -> TuneBudget:
    b = dataclasses.asdict(budget(quick))
    return TuneBudget(**{**b, "seeds": (0,) if quick else (0, 1, 2), "pairs": SKADA_PAIRS})


@benchmark("uda_tune", "target-validation grid that chose the dann, multilayer_adv and mcc settings",
           plan=tune_budget, outputs=("uda_tune.md", "selected.json"))
def uda_tune_suite(b: Budget, bench_dir, log):
    rows, jobs, digests = [], [], []
    for source, target in b.pairs:
        for seed in b.seeds:
            cfg = pair_config(source, target, seed, b, ["source_only"], 1)
            data = prepare_domains(cfg)
            cfg = pair_config(source, target, seed, b, ["source_only"], adaptation_epochs(data, b)[1])
            net, info = pretrain_source(cfg, data, log)  # once here; every job loads this file
            cfg = replace(cfg, pretrained=info["path"])  # (a worker's own cache key may differ: its thread count)
            head = {"source": source, "target": target, "seed": seed, "split": "val", "world_size": world_size()}
            rows.append({**head, "method": "source_only", "setting": "-", "wall_s": 0.0,
                         "accuracy": evaluate_on(source_only_model(net, data), data.target.val)["accuracy"]})
            inputs = content_text({"net": net, "data": [data.source.train, data.target.train, data.target.val],
                                   "train": cfg.train, "seed": seed})
            for method, options in settings(b.quick):
                name = f"{path_part(source, target)}-s{seed}-{method}-{describe(options).replace(', ', '_')}"
                digests.append(hashlib.sha256(f"{inputs}|{method}|{content_text(options)}".encode()).hexdigest()[:16])
                row = {**head, "method": method, "setting": describe(options), "options": options,
                       "config_digest": digests[-1]}  # v3's rows carry none: read back as they are
                jobs.append((bench_dir / "jobs" / f"{name}.json", partial(tune_job, cfg, method, options, row)))
    rows += run_jobs(jobs, default_workers(), lambda row: log(
        f"  {row['source']}->{row['target']} s{row['seed']} {row['method']} {row['setting']}: "
        f"val {100 * row['accuracy']:.1f}%  ({row['wall_s']:.1f}s)"), digests,
        "computed from another source network, data or budget than this run gives now (other CPU kernels, "
        "threads or cache?)")
    chosen = per_pair_choice(rows, b.pairs)
    write_json(Path(bench_dir) / "selected.json", chosen)
    table = grid_table(rows, b) + "\n" + choice_table(chosen)
    write_text(Path(bench_dir) / "uda_tune.md", table)
    log("\n" + table)
    return rows


def _accuracies(rows: list[dict]) -> dict:
    """``{(source, target, method, setting): [accuracy of each seed]}``."""
    out: dict = {}
    for r in rows:
        out.setdefault((r["source"], r["target"], r["method"], r["setting"]), []).append(r["accuracy"])
    return out


def grid_table(rows: list[dict], b) -> str:
    """Settings ranked by mean target-validation accuracy (per pair, then over pairs)."""
    pairs = [f"{s} → {t}" for s, t in b.pairs]
    keys = sorted({(r["method"], r["setting"]) for r in rows})
    accs = _accuracies(rows)
    lines = [f"Target **validation** accuracy, seeds {list(b.seeds)}, {b.pretrain_steps} pre-training steps, "
             f"adaptation {b.adapt_steps} steps rounded to whole SKADA epochs of each pair (at least one), batch "
             f"{b.batch_size}+{b.batch_size}.\n",
             "| method | options | " + " | ".join(pairs) + " | mean |", "|---|---|" + "---|" * (len(pairs) + 1)]
    ranked = []
    for method, setting in keys:
        per_pair = [mean_se(accs.get((s, t, method, setting), []))[0] for s, t in b.pairs]
        ranked.append((method != "source_only", method, -sum(per_pair) / len(per_pair), setting, per_pair))
    for _, method, neg_mean, setting, per_pair in sorted(ranked):
        cells = " | ".join(f"{a:.3f}" for a in per_pair)
        lines.append(f"| {method} | {setting} | {cells} | {-neg_mean:.3f} |")
    return "\n".join(lines) + "\n"


def per_pair_choice(rows: list[dict], pairs) -> dict:
    """``{"source:target": {method: {"options", "setting", "val_accuracy", "source_only"}}}``: per
    pair, the setting of each tuned method with the best mean validation accuracy over the
    seeds on that pair (ties, means within 1e-6 of the best: the setting listed first in
    :data:`GRID`, the default first; one image more of a 269-image split moves a mean by 1e-3)."""
    out, accs = {}, _accuracies(rows)
    for source, target in pairs:
        base = accs.get((source, target, "source_only", "-"))
        out[f"{source}:{target}"] = pick = {}
        for method, grid in GRID.items():
            scored = []
            for i, options in enumerate(grid):
                if (source, target, method, describe(options)) in accs:
                    scored.append((i, options, mean_se(accs[source, target, method, describe(options)])[0]))
            if scored:
                # equal counts of correct images give means ~1e-8 apart (float32 accuracies): a tolerance,
                # not rounding, which would split two such means that straddle a rounding boundary
                best = max(m for _, _, m in scored)
                _, options, acc = min((t for t in scored if t[2] >= best - 1e-6), key=lambda t: t[0])
                pick[method] = {"options": options, "setting": describe(options), "val_accuracy": acc,
                                "source_only": mean_se(base)[0] if base else None}
    return out


def choice_table(chosen: dict) -> str:
    lines = ["Per pair: the setting with the best mean target **validation** accuracy on that pair "
             "(what `bench uda` runs).\n",
             "| pair | method | options | val | source_only val |", "|---|---|---|---|---|"]
    for pair, methods in chosen.items():
        for method, c in methods.items():
            base = "-" if c["source_only"] is None else f"{c['source_only']:.3f}"
            lines.append(f"| {pair.replace(':', ' → ')} | {method} | {c['setting']} | "
                         f"{c['val_accuracy']:.3f} | {base} |")
    return "\n".join(lines) + "\n"
