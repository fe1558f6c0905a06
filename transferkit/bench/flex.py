"""The ``flex`` benchmark: seed 002 §5 on the offline digit domains.

Source: a 4-unit network (``lenet``: 2 convolutional + 2 fully connected units, the
layout of seed 002's MNIST network) pre-trained on a fixed half of ``mnist``; the targets
built from mnist use the other, disjoint half. Targets: mnist + blur, noise, occlusion,
affine_random, affine_fixed, rotation, inversion; mnistm; digits; syndigits. Second source
(``--set source=syndigits``): a fixed half of ``syndigits``; targets: the other
half with blur, noise, occlusion, affine_random, rotation, inversion; mnist; mnistm; digits. Every target
has fixed val and test splits; labelled subsets of ~3 / 30 / 300 images per class (capped
by what the target's train split holds) are drawn per seed. Methods: flex, fast_flex,
faster_flex, ft_fc1, ft_fc2, ft_ss, ft_all, linear_probe.

Outputs in the benchmark directory: ``table_ratio<r>.md`` (seed 002 Table 3 form, base
accuracy in brackets, best per row in bold, where the seed bolds what beats every ft- baseline),
``wins.md``, ``wall.md`` (measured Table 1),
``retrieval.md`` (AP@10, §5.3 Table 4), ``selection.md`` (how clearly validation told
flex's pick from the runner-up), ``per_unit_<target>.png`` (Figure 1) and
``units_picked.png`` (Figure 2). Each finished job is one JSON file in ``jobs/``, written
atomically and skipped on resume; the tables and figures cover every finished job of the
directory, so runs of one ratio at a time (``--resume DIR --set ratios=3``) add up.

Plan fields (``transferkit bench flex --print-plan``; ``--set`` changes them): ``ratios``
(default ``3,30,300``), ``seeds`` (3), ``seeds_ratio3`` (20 at ratios <= 3, as seed 002 at
the smallest ratio), ``targets`` (a subset; default every target of the source),
``source`` (``mnist`` or ``syndigits``; one source per benchmark directory),
``image_targets`` (targets that also run ``flex+img``), ``val_fraction`` and
``val_per_class`` (each target's validation split: share of every class, default 0.15,
and cap per class, default 50; one split per benchmark directory), ``pretrain`` and
``train`` (the source network's and every method's training budgets).
"""

from __future__ import annotations

import glob
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch

from ..backbones import HEAD, build_backbone
from ..data import check_spec, load_domain, parse_spec
from ..distributed import world_size
from ..engine import Engine, TrainConfig
from ..errors import TransferkitError, check, warn
from ..evaluate import fraction_correct, mean_se, mean_se_text, paired_difference, predict_logits
from ..fields import updated
from ..frozen import frozen_activations
from ..grouped import parse_grouped
from ..io import load_safetensors, read_job, read_json, save_safetensors, write_json, write_text
from ..jobs import default_workers, run_jobs
from ..methods import get_method
from ..methods.supervised import SourceOnly
from ..results import ROW_KEYS, write_results
from ..retrieval import embed, retrieval_map
from ..runtime import invocation
from ..splits import split_domain, subsample_per_class
from ..tables import diverged_line, diverged_mark
from . import Plan, as_list, benchmark, budget_line, check_canonical, note_capped_sizes, path_part

TARGETS = ["mnist+blur", "mnist+noise", "mnist+occlusion", "mnist+affine_random", "mnist+affine_fixed",
           "mnist+rotation", "mnist+inversion", "mnistm", "digits", "syndigits"]
#: targets of the second source (syndigits): the other half of syndigits with shifts, and the handwritten domains
SYN_TARGETS = ["syndigits+blur", "syndigits+noise", "syndigits+occlusion", "syndigits+affine_random",
               "syndigits+rotation", "syndigits+inversion", "mnist", "mnistm", "digits"]
SOURCES = {"mnist": TARGETS, "syndigits": SYN_TARGETS}
QUICK_TARGETS = ["mnist+blur", "mnist+inversion", "mnistm"]
METHODS = ["flex", "fast_flex", "faster_flex", "ft_fc1", "ft_fc2", "ft_ss", "ft_all", "linear_probe"]
#: flex with the image-to-image units of §5.4 as extra candidates (on the plan's ``image_targets``)
IMAGE_FLEX = "flex+img"
VARIANTS = {IMAGE_FLEX: ("flex", {"image_units": ["colour", "stn", "unet"]})}
BACKBONE = "lenet"
CHANNELS = 3  # mnistm and syndigits are in colour; grey digits are replicated
VAL_PER_CLASS, TEST_PER_CLASS = 50, 200
#: means closer than this are ties: accuracies are float32 fractions, so equal counts of correct
#: test images can differ by ~1e-8, while one image of 626 over 20 seeds is ~8e-5
TIE = 1e-6
#: share of each target class in the fixed validation split (test: 25 %, train: the rest)
VAL_FRACTION = 0.15


#: the trainings of a job of each flex method (seed 002 §4: the cost that Table 1 counts), each of the plan's steps
TRAININGS = ("flex trains one per candidate (every unit and ft_all), fast_flex and faster_flex two (ft_all, "
             "faster_flex one epoch of it, then the picked unit)")


@dataclass
class FlexPlan(Plan):
    selects: ClassVar[tuple[str, ...]] = ("targets", "ratios", "seeds", "seeds_ratio3", "image_targets")
    select_groups: ClassVar[tuple[tuple[str, ...], ...]] = (("targets", "image_targets"),)
    source: str = "mnist"
    targets: list | str = "all"  # "all": every target of the source
    ratios: list = field(default_factory=lambda: [3, 30, 300])
    seeds: int = 3
    seeds_ratio3: int = 20
    image_targets: list = field(default_factory=list)
    val_fraction: float = VAL_FRACTION
    val_per_class: int = VAL_PER_CLASS
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=64, eval_every=100,
                                                                      patience=5, progress=False))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, batch_size=32, eval_every=20,
                                                                   patience=4, progress=False))

    def __post_init__(self):
        check(self.source in SOURCES, f"flex source must be one of {sorted(SOURCES)}, got {self.source!r}")
        self.ratios = as_list(self.ratios, int, "ratios")
        check(self.targets is not None and self.targets != [], "targets: none given; use targets=all for every "
                                                               "target of the source, or name them")
        self.targets = "all" if self.targets == "all" else as_list(self.targets, str, "targets")
        self.image_targets = as_list(self.image_targets, str, "image_targets", empty=True)
        check(min(self.ratios, default=0) >= 1, f"ratios must be >= 1, got {self.ratios}")
        check(self.seeds >= 1 and self.seeds_ratio3 >= 1, "seeds and seeds_ratio3 must be >= 1")
        check(0 < self.val_fraction < 0.75, f"val_fraction must be in (0, 0.75), got {self.val_fraction}")
        check(self.val_per_class >= 1, f"val_per_class must be >= 1, got {self.val_per_class}")
        stray = [t for t in self.image_targets if t not in self.target_names()]
        check(not stray, f"image_targets {stray} are not among the targets {self.target_names()}")
        for t in self.target_names():  # an unknown domain or shift is named now, not after pre-training
            check_spec(parse_grouped(t)[0] if parse_grouped(t) else t)
            check_canonical(t, "targets")

    def budget(self) -> str:  # not the selection fields: a directory's tables hold the rows of every resume
        return (f"source pre-training up to {self.pretrain.steps} steps, each training up to {self.train.steps} steps "
                f"(early stopping, patience {self.train.patience} evaluations every {self.train.eval_every} steps; "
                f"{TRAININGS})")

    def target_names(self) -> list[str]:
        return SOURCES[self.source] if self.targets == "all" else self.targets

    def n_seeds(self, ratio: int) -> int:
        return self.seeds_ratio3 if ratio <= 3 else self.seeds


def plan(quick: bool) -> FlexPlan:
    if quick:
        return FlexPlan(quick=True, targets=QUICK_TARGETS, ratios=[30], seeds=1,
                        pretrain=TrainConfig(steps=300, batch_size=64, eval_every=100, progress=False),
                        train=TrainConfig(steps=150, batch_size=32, eval_every=15, patience=3, progress=False))
    return FlexPlan()


def mnist_halves(name: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed disjoint halves of a domain's indices (mnist by default): (source half, target half)."""
    perm = torch.randperm(len(load_domain(name)), generator=torch.Generator().manual_seed(2002))
    half = len(perm) // 2
    return perm[:half], perm[half:]


def check_single_images(spec: str) -> None:
    check(parse_grouped(spec) is None, f"flex target {spec!r}: the benchmark scores single images, not @grouped")


def target_splits(spec: str, target_half: torch.Tensor, source: str = "mnist", val_fraction: float = VAL_FRACTION,
                  val_per_class: int = VAL_PER_CLASS):
    """Fixed train / val / test of a target; targets built from the source domain's images
    (for mnist also ``mnistm``, whose digits are mnist's) use the target half. A larger
    ``val_fraction`` moves images from train to val; test stays the same images."""
    check_single_images(spec)
    d = load_domain(spec, size=28, channels=CHANNELS, seed=0)
    base = parse_spec(spec)[0]  # as the loader reads it ("MNIST +blur" is mnist)
    if base == source or (source == "mnist" and base == "mnistm"):
        d = d.subset(target_half)
    s = split_domain(d, val_fraction=val_fraction, test_fraction=0.25)
    s.val = subsample_per_class(s.val, val_per_class, seed=0)
    s.test = subsample_per_class(s.test, TEST_PER_CLASS, seed=0)
    return s


def source_network(bench_dir: Path, source, cfg: TrainConfig, log, label: str = "mnist/half"):
    """The pre-trained source network, trained once and stored in the benchmark directory; its record
    (``source.json``) has ``diverged: true`` where the pre-training diverged (a record without it: not)."""
    torch.manual_seed(0)  # the initial weights
    net = build_backbone(BACKBONE, num_classes=10, in_channels=CHANNELS, image_size=28)
    path = bench_dir / "source.safetensors"
    redo = "delete source.safetensors and source.json to pre-train it again (every job of this directory " \
           "started from it: a new network gives other numbers)"
    if path.exists():  # its record is written first: a network without one was never stored whole
        info = read_json(path.with_suffix(".json"), "source network record", redo)
        check(isinstance(info, dict) and isinstance(info.get("val_accuracy"), (int, float)),
              f"{path.with_suffix('.json')} is not a source network record (a JSON object with val_accuracy): {redo}")
        net.load_state_dict(load_safetensors(path, "source network", redo)[0])
        if info.get("diverged") is True:
            warn(f"the source network of {bench_dir} is of a pre-training that diverged ({path.with_suffix('.json')}: "
                 f"diverged): its rows are marked diverged and are not worth reading; run the benchmark again in "
                 f"another directory with a lower pretrain.lr (--set pretrain.lr=...)")
        return net, info
    log(f"pre-training {BACKBONE} on {label} ({len(source.train)} images)")
    fit = Engine(cfg, seed=0).fit(SourceOnly(net), source=source.train, val=source.val)
    info = {"val_accuracy": fit.val_accuracy, "wall_s": fit.wall_s, "steps": fit.steps, "source": label,
            **diverged_mark(fit.diverged)}
    write_json(path.with_suffix(".json"), info)
    save_safetensors(path, {k: v.contiguous() for k, v in net.state_dict().items()})
    return net, info


def check_validation_split(bench_dir: Path, target: str, n_val: int) -> None:
    """The jobs of one directory share each target's validation split (``val_fraction``)."""
    done = next(iter(sorted((bench_dir / "jobs").glob(f"{glob.escape(path_part(target))}-r*.json"))), None)
    old = read_job(done).get("n_val", n_val) if done else n_val
    check(old == n_val, f"{done} was validated on {old} images, this plan's {target} validation split has "
                        f"{n_val}: use another directory")


def accuracy(forward, domain) -> float:
    return fraction_correct(predict_logits(forward, domain.images).argmax(1), domain.labels)


def candidate_accuracy(net, candidate: str, domain) -> float:
    """:func:`accuracy` of the network of flex's ``candidate`` (in eval mode), bit for bit: a candidate
    that tuned one unit keeps the source network's units before it, the same in every candidate, so the
    frozen memo runs each of those units once over ``domain`` for all candidates."""
    net.eval()
    if candidate not in [*net.feature_names[1:], HEAD]:  # all, the first unit or an image unit: the whole network
        return accuracy(net, domain)
    logits = frozen_activations(net, domain.images, candidate, then=lambda h: net.forward_units(h, candidate))
    return fraction_correct(logits.argmax(1), domain.labels)


def run_job(method_name: str, pretrained, split, source_val, ratio: int, seed: int, cfg: TrainConfig,
            head: dict, gallery: torch.Tensor | None = None) -> dict:
    """Train one method on one labelled subset: ``head`` with test accuracy, wall seconds,
    AP@10 and picks. ``gallery``: the source network's embeddings of ``source_val``, shared
    by every job. Module-level, so that it can run in a worker process."""
    import copy

    labeled = subsample_per_class(split.train, ratio, seed)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    name, options = VARIANTS.get(method_name, (method_name, {}))
    if name == "flex":
        options = {**options, "keep_candidates": True}
    method = get_method(name)(copy.deepcopy(pretrained), **options)
    fit = method.fit_transfer(lambda tag, config=None: Engine(config or cfg, seed=seed), target=labeled,
                              val=split.val)
    method.eval()
    # one pass over the test images gives the accuracy and AP@10's queries (every method here predicts with
    # its net: Method.forward, the same operations as head(embedding))
    queries = embed(method.net, split.test.images)
    acc = fraction_correct(method.net.forward_units(queries, "embedding").argmax(1), split.test.labels)
    wall = time.perf_counter() - t0
    row = {**head, "method": method_name, "accuracy": acc, "wall_s": wall, "val_accuracy": fit.val_accuracy,
           "steps": fit.steps, "n_labeled": len(labeled), "per_class_available": int(split.train.class_counts().min()),
           **({"n_val_labeled": len(split.val)} if fit.best_val_accuracy is not None and method.selects_on_validation
              else {}),  # the selection note's count, as a run's rows
           "ap10": retrieval_map(pretrained, method.net, source_val, split.test, k=10, gallery=gallery,
                                 queries=queries),
           **method.extra_results(), **diverged_mark(fit.diverged)}  # as a run's rows
    if name == "flex":
        row["candidate_test_accuracy"] = {c: candidate_accuracy(n, c, split.test)
                                          for c, n in method.candidate_nets.items()}
    return row


#: what :func:`write_reports` writes (a resume removes them until it writes them again)
REPORT_FILES = ("table_ratio*.md", "wins.md", "wall.md", "retrieval.md", "selection.md", "image_units.md",
                "per_unit_*.png", "units_picked.png")


@benchmark("flex", "seed 002 flex-tuning: half of mnist (or of syndigits) as source -> digit targets, "
                   "ratios 3/30/300, 8 methods", plan=plan, outputs=REPORT_FILES)
def flex_suite(p: FlexPlan, bench_dir, log):
    for target in p.target_names():  # a misspelt or grouped target fails before the source network is trained
        check_spec(target)
        check_single_images(target)
    src_half, tgt_half = mnist_halves(p.source)
    label = f"{p.source}/half"
    source = split_domain(load_domain(p.source, size=28, channels=CHANNELS).subset(src_half))
    pretrained, info = source_network(bench_dir, source, p.pretrain, log, label)
    check(info.get("source", label) == label, f"{bench_dir} holds a network pre-trained on {info.get('source')}, "
                                              f"not {label}: use another directory")
    log(f"source network: val accuracy {100 * info['val_accuracy']:.1f}% on {label}")
    gallery = embed(pretrained, source.val.images)  # AP@10's gallery: the same for every job
    made_by = {"invocation": invocation(), "workers": default_workers(), "world_size": world_size()}  # --nproc
    jobs = []
    for target in p.target_names():
        split = target_splits(target, tgt_half, p.source, p.val_fraction, p.val_per_class)
        base = accuracy(pretrained.eval(), split.test)
        log(f"{target}: base accuracy {100 * base:.1f}%, train {len(split.train)} / val {len(split.val)}"
            f" / test {len(split.test)}")
        check_validation_split(bench_dir, target, len(split.val))
        note_capped_sizes(split.train, p.ratios, log, f"{target}: ratio {{n}} takes every training image")
        for ratio in p.ratios:
            for seed in range(p.n_seeds(ratio)):
                head = {"source": label, "target": target, "setting": f"ratio={ratio}", "ratio": ratio,
                        "seed": seed, "base_accuracy": base, "n_val": len(split.val), **made_by,
                        **diverged_mark(info.get("diverged") is True)}  # as run_job's source_diverged
                for m in METHODS + ([IMAGE_FLEX] if target in p.image_targets else []):
                    job = partial(run_job, m, pretrained, split, source.val, ratio, seed, p.train, head, gallery)
                    jobs.append((bench_dir / "jobs" / f"{path_part(target)}-r{ratio}-s{seed}-{m}.json", job))
    run_jobs(jobs, default_workers(), lambda row: log(
        f"  {row['target']} r={row['ratio']} s={row['seed']} {row['method']:<13} {100 * row['accuracy']:.1f}%  "
        f"{row['wall_s']:.1f}s{'  picked ' + str(row['picked']) if 'picked' in row else ''}"), keys=ROW_KEYS)
    return directory_reports(bench_dir, log, p)


# ---- reports --------------------------------------------------------------------------

def _pm(values) -> str:
    return mean_se_text(values)


def _cell(rows, target, ratio, method):
    return [r for r in rows if r["target"] == target and r["ratio"] == ratio and r["method"] == method]


def table3(rows, base, ratio) -> str:
    """Seed 002 Table 3 form: mean ± standard error of test accuracy, best per row bold (the
    seed's bold marks a score better than every ft- baseline instead); a line under it names its
    diverged rows (:func:`~transferkit.tables.diverged_line`), where any."""
    targets = [t for t in base if any(r["target"] == t and r["ratio"] == ratio for r in rows)]
    n = sorted({len(_cell(rows, t, ratio, "flex")) for t in targets})
    lines = [f"ratio ~{ratio} images per class (n seeds: {', '.join(map(str, n))}; labelled per class "
             "capped by the target's train split)", *steps_line([r for r in rows if r["ratio"] == ratio]), "",
             "| target (base) | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for t in targets:
        stats = {m: mean_se(r["accuracy"] for r in _cell(rows, t, ratio, m)) for m in METHODS
                 if _cell(rows, t, ratio, m)}
        best = max(s[0] for s in stats.values())
        cells = []
        for m in METHODS:
            if m not in stats:
                cells.append("–")
                continue
            txt = _pm(r["accuracy"] for r in _cell(rows, t, ratio, m))
            cells.append(f"**{txt}**" if stats[m][0] >= best - TIE else txt)
        lines.append(f"| {t} ({100 * base[t]:.1f}) | " + " | ".join(cells) + " |")
    diverged = diverged_line([r for t in targets for m in METHODS for r in _cell(rows, t, ratio, m)])
    return "\n".join(lines + ([""] if diverged else []) + diverged) + "\n"


def steps_line(rows) -> list[str]:
    """The mean training steps per job of each method of ``rows`` that records them, as one line
    (none without): the methods do not train alike. Every training has the plan's budget, but
    flex trains one network per candidate (each unit and ft_all), fast_flex ft_all and then the
    picked unit, faster_flex one epoch of ft_all and then the picked unit (seed 002 §4: the cost
    that Table 1 counts)."""
    steps = {m: [r["steps"] for r in rows if r["method"] == m and "steps" in r] for m in METHODS}
    if not any(steps.values()):
        return []
    said = ", ".join(f"{m} {sum(v) / len(v):.0f}" for m, v in steps.items() if v)
    return [f"Mean training steps per job, every training counted ({said}): each training has the budget's steps, "
            f"but {TRAININGS}."]


def earlier_tie_accuracy(row: dict) -> float:
    """Test accuracy flex would have had with accuracy ties going to the earlier candidate
    (the rule before validation loss broke ties), from the row's candidate accuracies."""
    accs = row["candidate_val_accuracy"]
    pick = next(c for c, a in accs.items() if a == max(accs.values()))
    return row["candidate_test_accuracy"][pick]


def wins(rows, base, ratios) -> str:
    count = {m: 0 for m in METHODS}
    flex_ok, total, within, old_ok, single = 0, 0, 0, 0, 0
    for t in base:
        for ratio in ratios:
            means = {m: mean_se(r["accuracy"] for r in _cell(rows, t, ratio, m)) for m in METHODS
                     if _cell(rows, t, ratio, m)}
            if len(means) < len(METHODS):
                continue
            total += 1
            best = max(v[0] for v in means.values())
            for m, v in means.items():
                count[m] += v[0] >= best - TIE
            ref_method = max(("ft_fc1", "ft_fc2", "ft_all"), key=lambda m: means[m][0])
            ref = means[ref_method][0]
            flex_ok += means["flex"][0] >= ref - TIE
            # within one paired standard error: flex - ref per label subset (both trained on it)
            flex_rows = _cell(rows, t, ratio, "flex")
            diff, se, n = paired_difference(flex_rows + _cell(rows, t, ratio, ref_method), "flex", ref_method)
            if n < 2:  # one label subset: no standard error to be within
                single += 1
            else:
                within += diff >= -se - TIE
            old_ok += sum(earlier_tie_accuracy(r) for r in flex_rows) / len(flex_rows) >= ref - TIE
    lines = [f"scenarios (target x ratio): {total}", "", "| method | best (ties count for all) |", "|---|---|"]
    lines += [f"| {m} | {count[m]} |" for m in METHODS]
    lines += ["", f"flex >= max(ft_fc1, ft_fc2, ft_all) (means): {flex_ok} / {total}",
              f"flex within one paired standard error (over label subsets) of max(ft_fc1, ft_fc2, ft_all): "
              f"{within} / {total - single}" + (f" ({single} scenario(s) have one label subset only: no standard "
                                                f"error, not counted)" if single else ""),
              f"flex with accuracy ties to the earlier candidate instead of the lower validation loss (means): "
              f"{old_ok} / {total}"]
    return "\n".join(lines) + "\n"


def selection_table(rows, base, ratios) -> str:
    """How clearly flex's validation split told its pick apart from the runner-up, per
    target: picks whose margin exceeds one paired standard error, the mean margin, and
    flex's test gap to the better of ft_fc and ft_all (rows from before the ``selection``
    record are left out)."""
    lines = ["| ratio | target | picks | clear picks (margin > 1 paired SE) | mean margin ± SE (val, points) "
             "| flex − max(ft_fc, ft_all) (test, points) |", "|---|---|---|---|---|---|"]
    for ratio in ratios:
        for t in base:
            flex_rows = [r for r in _cell(rows, t, ratio, "flex") if "selection" in r]
            seeds = {r["seed"] for r in flex_rows}  # the gap over the label subsets these rows are of
            refs = [mean_se(r["accuracy"] for r in same)[0] for m in ("ft_fc1", "ft_fc2", "ft_all")
                    if (same := [r for r in _cell(rows, t, ratio, m) if r["seed"] in seeds])]
            if not flex_rows or not refs:
                continue
            picks = ", ".join(f"{c}×{n}" for c, n in Counter(r["picked"] for r in flex_rows).most_common())
            clear = sum(r["selection"]["margin"] > r["selection"]["se"] for r in flex_rows)
            gap = mean_se(r["accuracy"] for r in flex_rows)[0] - max(refs)
            lines.append(f"| {ratio} | {t} | {picks} | {clear} / {len(flex_rows)} | "
                         f"{_pm(r['selection']['margin'] for r in flex_rows)} | {100 * gap:+.1f} |")
    return "flex's pick against the runner-up on the validation split\n\n" + "\n".join(lines) + "\n"


def wall_table(rows, ratios) -> str:
    """Mean wall seconds per method and ratio, and faster_flex's cost relative to ft_fc1 /
    ft_fc2 in wall seconds and in training steps (seed 002 Table 1 counts epochs x cost per
    epoch, the same for every unit; with cached frozen prefixes a head step is far cheaper)."""
    lines = ["| ratio | " + " | ".join(METHODS) + " | faster_flex / ft_fc1 | faster_flex / ft_fc2 "
             "| steps faster_flex / ft_fc1 | steps faster_flex / ft_fc2 |", "|---|" + "---|" * (len(METHODS) + 4)]
    for ratio in ratios:
        cell = {m: [r for r in rows if r["ratio"] == ratio and r["method"] == m] for m in METHODS}
        if not all(cell.values()):
            continue
        wall = {m: sum(r["wall_s"] for r in v) / len(v) for m, v in cell.items()}
        steps = {m: sum(r["steps"] for r in v) / len(v) for m, v in cell.items()}
        ratios_ = [wall["faster_flex"] / wall["ft_fc1"], wall["faster_flex"] / wall["ft_fc2"],
                   steps["faster_flex"] / steps["ft_fc1"], steps["faster_flex"] / steps["ft_fc2"]]
        lines.append(f"| {ratio} | " + " | ".join(f"{wall[m]:.2f}" for m in METHODS) + " | "
                     + " | ".join(f"{x:.2f}" for x in ratios_) + " |")
    mixed = [f"ratio {ratio}: {len(runs)} invocations ({', '.join(sorted(runs))})" for ratio in ratios
             if len(runs := {f"{r.get('invocation', 'unrecorded')}, {r.get('workers', '?')} worker(s)"
                             for r in rows if r["ratio"] == ratio}) > 1]
    note = ("\nWall seconds from several invocations of the benchmark (a resumed or extended run; the "
            "machine's load and the worker count differ between them, so compare methods within one): "
            + "; ".join(mixed) + "\n") if mixed else ""
    return ("mean wall seconds per job (training + selection + test evaluation)\n\n" + "\n".join(lines) + "\n"
            + note + "\n" + per_target_wall(rows, ratios))


def per_target_wall(rows, ratios) -> str:
    """faster_flex's mean wall seconds over ft_fc1's and ft_fc2's on each target, and on how
    many targets it is below 2x."""
    lines = ["faster_flex wall / ft_fc wall on each target (mean over seeds; same run unless marked "
             "\"mixed\": its seeds ran in more than one invocation)", "",
             "| ratio | target | / ft_fc1 | / ft_fc2 |", "|---|---|---|---|"]
    for ratio in ratios:
        below = {"ft_fc1": 0, "ft_fc2": 0}
        targets = list(dict.fromkeys(r["target"] for r in rows if r["ratio"] == ratio))
        for t in targets:
            wall = {m: mean_se(r["wall_s"] for r in _cell(rows, t, ratio, m))[0]
                    for m in ("faster_flex", "ft_fc1", "ft_fc2") if _cell(rows, t, ratio, m)}
            if len(wall) < 3:
                continue
            q = {m: wall["faster_flex"] / wall[m] for m in below}
            for m in below:
                below[m] += q[m] < 2
            runs = {r.get("invocation") for m in wall for r in _cell(rows, t, ratio, m)}
            lines.append(f"| {ratio} | {t}{' (mixed)' if len(runs) > 1 else ''} | {q['ft_fc1']:.2f} | "
                         f"{q['ft_fc2']:.2f} |")
        lines.append(f"| {ratio} | **targets below 2x** | {below['ft_fc1']} / {len(targets)} | "
                     f"{below['ft_fc2']} / {len(targets)} |")
    return "\n".join(lines) + "\n"


def retrieval_table(rows, base, ratios) -> str:
    ms = ["flex", "ft_fc1", "ft_fc2", "ft_all"]
    lines = ["| target | ratio | " + " | ".join(ms) + " |", "|---|---|" + "---|" * len(ms)]
    for ratio in ratios:
        for t in base:
            if not _cell(rows, t, ratio, "flex"):
                continue
            cells = [_pm(r["ap10"] for r in _cell(rows, t, ratio, m)) for m in ms]
            lines.append(f"| {t} | {ratio} | " + " | ".join(cells) + " |")
    return ("mAP@10 (%) of target test embeddings against source validation embeddings (seed 002 §5.3)\n\n"
            + "\n".join(lines) + "\n")


def image_table(rows, base, ratios) -> str:
    """flex vs flex with the §5.4 image units as extra candidates; test accuracy of each
    image-unit candidate and how often flex+img picked one."""
    kinds = VARIANTS[IMAGE_FLEX][1]["image_units"]
    lines = ["| target | ratio | flex | flex+img | " + " | ".join(f"image:{k} (test)" for k in kinds)
             + " | picks of flex+img |", "|---|---|---|---|" + "---|" * (len(kinds) + 1)]
    for ratio in ratios:
        for t in base:
            img = _cell(rows, t, ratio, IMAGE_FLEX)
            if not img:
                continue
            f, g = ([r["accuracy"] for r in _cell(rows, t, ratio, m)] for m in ("flex", IMAGE_FLEX))
            cand = [[r["candidate_test_accuracy"][f"image:{k}"] for r in img] for k in kinds]
            picks = ", ".join(sorted({f"{r['picked']} x{[q['picked'] for q in img].count(r['picked'])}"
                                      for r in img}))
            lines.append(f"| {t} | {ratio} | {_pm(f)} | {_pm(g)} | " + " | ".join(map(_pm, cand)) + f" | {picks} |")
    return "test accuracy (%), mean ± standard error over seeds\n\n" + "\n".join(lines) + "\n"


def write_reports(bench_dir: Path, rows: list, base: dict, header: str = "") -> None:
    """The tables (each under ``header``: the plan's budget, :func:`~transferkit.bench.budget_line`) and figures."""
    from ..plots import per_unit_accuracy_plot, units_picked_plot

    def write(name: str, text: str) -> None:
        write_text(bench_dir / name, (header + "\n\n" if header else "") + text)
    ratios = sorted({r["ratio"] for r in rows})
    for ratio in ratios:
        write(f"table_ratio{ratio}.md", table3(rows, base, ratio))
    write("wins.md", wins(rows, base, ratios))
    write("wall.md", wall_table(rows, ratios))
    write("retrieval.md", retrieval_table(rows, base, ratios))
    if any("selection" in r for r in rows):
        write("selection.md", selection_table(rows, base, ratios))
    if any(r["method"] == IMAGE_FLEX for r in rows):
        write("image_units.md", image_table(rows, base, ratios))
    flex_rows = [r for r in rows if r["method"] == "flex"]
    for t in base:
        if any(r["target"] == t for r in flex_rows):
            per_unit_accuracy_plot([r for r in flex_rows if r["target"] == t],
                                   bench_dir / f"per_unit_{path_part(t)}.png",
                                   title=f"{rows[0]['source']} -> {t}")
    if flex_rows:
        units_picked_plot([r for r in rows if r["method"] in ("flex", "fast_flex", "faster_flex")], list(base),
                          bench_dir / "units_picked.png")


def complete_subsets(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows of the label subsets (target, ratio, seed) on which every method of
    :data:`METHODS` finished (and ``flex+img`` on the target and ratio cells that have it), and how many
    subsets were left out: the tables compare the methods on the same subsets (an
    interrupted run leaves some with a few methods only)."""
    done: dict = {}
    for r in rows:
        done.setdefault((r["target"], r["ratio"], r["seed"]), set()).add(r["method"])
    # flex+img is compared with flex on its subsets: required on the (target, ratio) cells it ran on
    image_cells = {(r["target"], r["ratio"]) for r in rows if r["method"] == IMAGE_FLEX}
    full = {key for key, methods in done.items()
            if set(METHODS) | ({IMAGE_FLEX} if key[:2] in image_cells else set()) <= methods}
    return [r for r in rows if (r["target"], r["ratio"], r["seed"]) in full], len(done) - len(full)


def directory_reports(bench_dir: str | Path, log=print, p: FlexPlan | None = None) -> list[dict]:
    """Write the tables and figures of every label subset of ``bench_dir`` that every method
    finished (all the ratios, seeds and targets run into it, by this plan or earlier ones)
    and return their rows; ``p``: the directory's plan, whose budget (and whether quick) heads
    each table."""
    bench_dir = Path(bench_dir)
    rows = [read_job(p, ROW_KEYS) for p in sorted((bench_dir / "jobs").glob("*.json"))]
    rows, partial_subsets = complete_subsets(rows)
    if partial_subsets:
        log(f"{partial_subsets} label subset(s) of {bench_dir} lack a method's job (an interrupted run?): "
            f"left out of the tables; resume to finish them")
    check(len(rows) > 0, f"{bench_dir} holds no label subset that every method finished: no table to write")
    source = rows[0]["source"].split("/")[0]
    # the source's order first, then any other target the plan named
    order = list(dict.fromkeys(SOURCES.get(source, TARGETS) + TARGETS + SYN_TARGETS + [r["target"] for r in rows]))
    base = {t: next(r["base_accuracy"] for r in rows if r["target"] == t) for t in order
            if any(r["target"] == t for r in rows)}
    write_reports(bench_dir, rows, base, budget_line(p, plan(False)) if p is not None else "")
    return rows


def rewrite_reports(bench_dir: str | Path) -> None:
    """Regenerate the tables, figures and ``results.json`` from the finished jobs of ``bench_dir``
    (the plan stored in ``results.json`` is kept, so the directory can still be resumed)."""
    bench_dir = Path(bench_dir)
    try:
        old = read_json(bench_dir / "results.json", "results file") if (bench_dir / "results.json").is_file() else {}
    except TransferkitError:
        old = {}  # a broken results.json is what this rewrites
    stored = old.get("config") if isinstance(old, dict) else None
    plan = stored.get("plan") if isinstance(stored, dict) else None
    rows = directory_reports(bench_dir, p=_stored_flex_plan(plan))
    config = {"benchmark": "flex", "rewritten_from_jobs": True, **({"plan": plan} if plan is not None else {})}
    write_results(bench_dir, "bench-flex", config, rows)


def _stored_flex_plan(stored) -> FlexPlan | None:
    """The :class:`FlexPlan` of a stored plan (``results.json``'s), or None when it is not one."""
    try:
        return updated(plan(bool(stored.get("quick"))), stored) if isinstance(stored, dict) else None
    except (TypeError, ValueError, TransferkitError):
        return None
