"""Unsupervised domain adaptation (seed 000 §4.3, Table 3 form), side by side with SKADA.

Protocol: pre-train LeNet (seed 000 Table 7) on the labelled source, then adapt with
labelled source and *unlabelled* target training data (``k: null``; the adaptation methods
read only the ``source`` and ``unlabeled`` streams), for a fixed budget with no model
selection (``select_on: none``), and evaluate on the target test split. Each seed
pre-trains its own source network. On the two SKADA pairs ``dann``, ``multilayer_adv`` and
``mcc`` run the settings that ``bench uda_tune`` chose for that pair on the target *validation*
split (:data:`TUNED`; the test split is never looked at to choose them); elsewhere, and
for every other method, the methods' defaults.
``target_only`` (all target training labels, trained from scratch with the pre-training
budget) is the ceiling.

The adaptation budget is a whole number of SKADA epochs (``max(n_s, n_t) // batch``
steps, each with a source and a target batch), so that SKADA's ``SourceOnly``, ``DANN``,
``DAN``, ``DeepCoral`` and ``MCC`` run on ``mnist → digits`` and ``syndigits → mnist`` with the same
backbone and initialisation, data, batch size, optimiser and epochs (when ``skada`` is
installed: ``pip install 'transferkit[bench]'``).

``--set seeds=0,1,2``, ``--set pairs=syndigits:mnist,mnist:digits`` and
``--set pretrain_steps=300 --set adapt_steps=150`` run a reduced version of the full
benchmark (seeds, pairs and budget are written in the tables, rows and ``results.json``);
``--set methods=dann,mcc`` and ``--set skada=MCC`` (or ``skada=`` for none) choose the rows.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..config import ExperimentConfig
from ..engine import TrainConfig, check_rate, content_text
from ..errors import TransferkitError, UnknownNameError, UntrustedPickle, check, near_name
from ..evaluate import mean_se, mean_se_text, paired_difference
from ..experiment import load_job_network, run_experiment
from ..io import job_stem, load_safetensors, write_text
from ..jobs import job_result
from ..methods import get_method
from ..rundata import prepare_domains, shared_domains
from ..rundir import model_path, network_path
from ..runtime import invocation
from ..source import run_source_network
from . import Plan, as_list, as_pairs, benchmark, budget_line, kept_tsne, path_part, skada_compare

PAIRS = (("syndigits", "mnist"), ("mnist", "mnistm"), ("mnist", "digits"), ("digits", "mnist"),
         ("mnist", "mnist+inversion"))
SKADA_PAIRS = (("mnist", "digits"), ("syndigits", "mnist"))
ADAPTATION = ("dann", "adda", "adda_encoder", "confusion", "mmd", "coral", "entmin", "mcc", "dsn", "multilayer_adv",
              "multilayer_adda", "cyclegan", "adain", "unit_gan")
LABELS = {"source_only": "Source only", "dann": "Gradient reversal (dann)", "adda": "ADDA (adda)",
          "adda_encoder": "ADDA, encoder only (adda_encoder)", "confusion": "Domain confusion (confusion)",
          "mmd": "DDC / MMD (mmd)", "coral": "Deep CORAL (coral)", "entmin": "Entropy min. (entmin)",
          "mcc": "Min. class confusion (mcc)", "dsn": "DSN (dsn)",
          "multilayer_adv": "Ours: multi-layer (multilayer_adv)",
          "multilayer_adda": "Ours, seed 000's two-step form (multilayer_adda)",
          "cyclegan": "CycleGAN, pixel-level (cyclegan)", "adain": "AdaIN style transfer, pixel-level (adain)",
          "unit_gan": "UNIT translation, pixel-level (unit_gan)",
          "target_only": "Target only (ceiling)"}
TSNE_METHODS = ("dann", "multilayer_adv")
#: the pixel-level methods of two engine runs: a translator stage, then the task network, each of the adaptation
#: steps (cyclegan trains its translators and the task network together, in one)
TWO_STAGE = ("adain", "unit_gan")
#: Per-pair settings of the two tuned methods: the grid setting with the best mean target
#: validation accuracy over seeds 0-2 on that pair (``transferkit bench uda_tune``, its
#: ``selected.json``; run of 2026-11-30 with ``--portable-kernels``, docs/adaptation.md).
TUNED: dict[tuple[str, str], dict[str, dict]] = {
    ("syndigits", "mnist"): {
        "dann": {"depth": 2, "hidden": 500, "layers": "conv2", "lr_schedule": "dann", "weight": 1.0},
        "multilayer_adv": {"combine": "sum", "hidden": 500, "lr_schedule": "dann", "same_label_space": True,
                           "weight": 0.1},  # what its defaults give on this pair
        "mcc": {"detach_weights": False}},
    ("mnist", "digits"): {
        "dann": {"depth": 2, "hidden": 500, "lr_schedule": None, "weight": 0.1},
        "multilayer_adv": {"combine": "sum", "hidden": 500, "lr_schedule": "dann", "same_label_space": True,
                           "weight": 0.3},
        "mcc": {"detach_weights": False}},
}


@dataclass
class Budget(Plan):
    selects: ClassVar[tuple[str, ...]] = ("seeds", "pairs", "tsne_points")
    seeds: tuple = (0, 1, 2, 3, 4)
    pairs: tuple = PAIRS
    pretrain_steps: int = 1000
    adapt_steps: int = 300  # rounded to whole SKADA epochs per pair
    batch_size: int = 64
    lr: float = 1e-3
    tsne_points: int = 500

    def __post_init__(self):
        self.seeds = tuple(as_list(self.seeds, int, "seeds", minimum=0))
        self.pairs = as_pairs(self.pairs)
        check(min(self.pretrain_steps, self.adapt_steps, self.batch_size) >= 1,
              "pretrain_steps, adapt_steps and batch_size must be >= 1")
        check(self.tsne_points >= 2, f"tsne_points must be >= 2 (t-SNE needs 4 points: 2 per domain), got "
                                     f"{self.tsne_points}")
        check_rate(self.lr)

    def budget(self) -> str:
        return (f"pairs {', '.join(f'{s} → {t}' for s, t in self.pairs)}; seeds {', '.join(map(str, self.seeds))}; "
                f"pre-training up to {self.pretrain_steps} steps, adaptation {self.adapt_steps} steps rounded to "
                f"whole SKADA epochs of each pair (at least one)")


def budget(quick: bool) -> Budget:
    if quick:
        return Budget(quick=True, seeds=(0,), pairs=SKADA_PAIRS, pretrain_steps=200, adapt_steps=50, tsne_points=300)
    return Budget()


METHODS = ("source_only", *ADAPTATION, "target_only")


@dataclass
class UdaPlan(Budget):
    """``bench uda``'s plan: :class:`Budget` and which rows run. ``methods``: transferkit's
    (``source_only``, the pre-trained network, always runs: every adaptation starts from it);
    ``skada``: SKADA's, on the SKADA pairs only (empty: none; the run's log names the other pairs, and a
    ``--set skada`` that names methods refuses pairs with no SKADA pair). A job does not depend on the other
    methods chosen, so a selection gives the rows of the full plan. A registered method of one's
    own (a plugin's, ``TRANSFERKIT_PLUGINS``) that reads no target label may be named too: it
    runs after the built-in ones, from the same source network, with its defaults."""

    selects: ClassVar[tuple[str, ...]] = (*Budget.selects, "methods", "skada")
    methods: tuple = METHODS
    skada: tuple = skada_compare.SKADA_METHODS

    def __post_init__(self):
        super().__post_init__()
        given = as_list(self.methods, str, "methods")
        own = tuple(m for m in given if m not in METHODS and _own_method(m))
        self.methods = _chosen([m for m in given if m not in own], "methods", METHODS, always=("source_only",),
                               hint="; a method of your own: name its module in TRANSFERKIT_PLUGINS") + own
        self.skada = _chosen(self.skada, "skada", skada_compare.SKADA_METHODS, empty=True)

    def settings(self) -> list[str]:
        """The per-pair settings (:data:`TUNED`) of the plan's pairs and methods, as the tables name them."""
        return [f"{s} → {t}: `{m}`: {describe(o)} (chosen on target validation)" for s, t in self.pairs
                for m, o in TUNED.get((s, t), {}).items() if m in self.methods]

    def check_named(self, named: set[str]) -> None:
        """A ``--set skada=...`` that names methods refuses a plan with no SKADA pair (it would give no row)."""
        check("skada" not in named or not self.skada or skada_less(self.pairs) != list(self.pairs),
              f"skada: SKADA's rows run on the SKADA pairs only ({_pairs_text(SKADA_PAIRS)}), and pairs has none; "
              f"add one of them to pairs, or leave out --set skada")


def skada_less(pairs) -> list[tuple[str, str]]:
    """The pairs of ``pairs`` that get no side-by-side SKADA rows (not in :data:`SKADA_PAIRS`)."""
    return [p for p in pairs if tuple(p) not in SKADA_PAIRS]


def _pairs_text(pairs) -> str:
    return ", ".join(f"{s}:{t}" for s, t in pairs)


def _own_method(name: str) -> bool:
    """Whether ``name`` is a registered method of one's own that the benchmark can run: one that
    reads unlabelled target images and no target label (it would read every one: the pairs have
    no label subset); False for a name that is not registered (the caller names it with the known ones)."""
    try:
        cls = get_method(name)
    except UnknownNameError:  # a plugin that fails to import says so itself
        return False
    check("target" not in cls.streams and "unlabeled" in cls.streams,
          f"methods: {name} " + ("reads target labels, and bench uda's pairs give it every one" if "target" in
                                 cls.streams else "reads no unlabelled target image: it does not adapt")
          + ": compare it with transferkit run (k or ratio labels per class) instead")
    return True


def _chosen(value, what: str, known: tuple, empty: bool = False, always: tuple = (), hint: str = "") -> tuple:
    """The names plan field ``what`` gives (an unknown one is refused) and ``always``, in the
    order of ``known`` (the tables')."""
    chosen = as_list(value, str, what, empty=empty)
    unknown = [m for m in chosen if m not in known]
    named = [(m, near_name(m, list(known))) for m in unknown]
    said = ", ".join(f"{m!r} (did you mean {near!r}?)" if near else repr(m) for m, near in named)
    check(not unknown, f"{what}: unknown {said}; known: {', '.join(known)}{hint}")
    return tuple(m for m in known if m in chosen or m in always)


def uda_plan(quick: bool) -> UdaPlan:
    return UdaPlan(**vars(budget(quick)))


def pair_config(source: str, target: str, seed: int, b: Budget, methods, steps: int) -> ExperimentConfig:
    """One seed of one pair; the methods in :data:`TUNED` get that pair's settings."""
    tuned = TUNED.get((source, target), {})
    return ExperimentConfig(
        name=f"uda-{path_part(source, target)}", source=source, target=target, k=None, repeats=1, seed=seed,
        backbone="lenet", methods=list(methods), select_on="none",
        options={m: dict(tuned[m]) for m in methods if m in tuned},
        pretrain=TrainConfig(steps=b.pretrain_steps, batch_size=b.batch_size, lr=b.lr, eval_every=100),
        train=TrainConfig(steps=steps, batch_size=b.batch_size, lr=b.lr, eval_every=steps, patience=None))


def adapting(b: Budget) -> list[str]:
    """The adaptation methods a plan runs, in the tables' order: the built-in ones, then one's own."""
    methods = getattr(b, "methods", ADAPTATION)
    return [m for m in ADAPTATION if m in methods] + [m for m in methods if m not in METHODS]


def adaptation_epochs(data, b: Budget) -> tuple[int, int]:
    """(epochs, steps): the adaptation budget as a whole number of SKADA epochs."""
    n_s, n_t = len(data.source.train), len(data.target.train)
    spe = skada_compare.steps_per_epoch(n_s, n_t, b.batch_size)
    check(spe >= 1, f"batch_size {b.batch_size} is larger than both training sets ({n_s} source, {n_t} target "
                    f"images): no whole epoch of batches")
    epochs = max(1, round(b.adapt_steps / spe))
    return epochs, epochs * spe


@benchmark("uda", "unsupervised domain adaptation, seed 000 Table 3 form, digit pairs (5; --quick: the 2 SKADA "
                  "pairs), SKADA side by side",
           plan=uda_plan, outputs=("uda_tables.md",))
def uda_suite(b: UdaPlan, bench_dir, log):
    with shared_domains():  # a seed's runs, its ceiling and SKADA's rows prepare its data once
        return _uda_suite(b, bench_dir, log)


def _uda_suite(b: UdaPlan, bench_dir, log):
    rows, tables = [], []
    if b.skada and skada_less(b.pairs):
        log(f"skada: no side-by-side SKADA rows on {_pairs_text(skada_less(b.pairs))} (SKADA's rows run on the SKADA "
            f"pairs only: {_pairs_text(SKADA_PAIRS)})")
    for source, target in b.pairs:
        data = prepare_domains(pair_config(source, target, b.seeds[0], b, ["source_only"], 1))  # seed: the same sizes
        epochs, steps = adaptation_epochs(data, b)
        extra = {"library": "transferkit", "epochs": epochs}
        pair_rows = []
        for seed in b.seeds:
            cfg = pair_config(source, target, seed, b, ["source_only", *adapting(b)], steps)
            _, r = run_experiment(cfg, run_dir=bench_dir / path_part(source, target) / f"s{seed}", log=log)
            c = []
            if "target_only" in b.methods:
                ceiling = pair_config(source, target, seed, b, ["target_only"], b.pretrain_steps)
                ceiling.name += "-ceiling"
                _, c = run_experiment(ceiling, run_dir=bench_dir / path_part(source, target) / f"ceiling-s{seed}",
                                      log=log)
            pair_rows += [{**row, **extra} for row in r + c]
            if (source, target) in SKADA_PAIRS and b.skada and skada_compare.available():
                pair_rows += skada_rows(cfg, epochs, b, bench_dir, log,
                                        run_dir=bench_dir / path_part(source, target) / f"s{seed}")
        if (source, target) in SKADA_PAIRS and b.skada and not skada_compare.available():
            log("skada's deep methods cannot be imported (skada and skorch: pip install 'transferkit[bench]'): no "
                "side-by-side rows")
        rows += pair_rows
        tables.append(table3(source, target, pair_rows, b, epochs, steps))
    write_text(bench_dir / "uda_tables.md", "\n".join([budget_line(b, uda_plan(False)) + "\n", *tables]))
    log("\n" + "\n".join(tables))
    source, target = b.pairs[0]
    tsne_figure(bench_dir, source, target, b, log)
    return rows


def skada_rows(cfg: ExperimentConfig, epochs: int, b: UdaPlan, bench_dir: Path, log, run_dir: Path) -> list[dict]:
    """SKADA's rows for one seed, from the network pinned in transferkit's run directory of
    that seed (``run_dir``): the very network every transferkit row of the seed started from."""
    data = prepare_domains(cfg)
    net, _ = run_source_network(cfg, data, run_dir, log)
    out = []
    for name in b.skada:
        digest = skada_digest(name, net, data, epochs, b, cfg.seed)

        def compute(name=name, digest=digest):
            res = skada_compare.run_skada(name, net, data.source.train, data.target.train, data.target.test,
                                          epochs, b.batch_size, b.lr, cfg.seed)
            return {"method": f"skada:{name}", "source": cfg.source, "target": cfg.target, "setting": cfg.setting,
                    "seed": cfg.seed, "library": "skada", "epochs": epochs, "config_digest": digest, **res,
                    "invocation": invocation()}
        path = bench_dir / "skada" / f"{path_part(cfg.source, cfg.target)}-{name}-s{cfg.seed}.json"
        out.append(job_result(path, compute, lambda row: log(
            f"  {row['method']:<16} seed {row['seed']}: accuracy {100 * row['accuracy']:.1f}%  ({row['wall_s']:.1f}s)"),
            digest, "run with another SKADA version, network, data or budget than this run gives now"))
    return out


def skada_digest(name: str, net, data, epochs: int, b: Budget, seed: int) -> str:
    """What a SKADA row depends on: SKADA's version, the method, the starting network's weights,
    the source / target training and target test data, the epochs, batch size, learning rate and
    seed. (Rows written before this digest existed carry none and are read back as they are.)"""
    text = content_text({"skada": skada_compare.version(), "method": name, "net": net, "epochs": epochs,
                         "batch": b.batch_size, "lr": b.lr, "seed": seed,
                         "data": [data.source.train, data.target.train, data.target.test]})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(options: dict) -> str:
    return ", ".join(f"{k}={'none' if v is None else v}" for k, v in sorted(options.items()))


def _cell(rows: list[dict], key: str = "accuracy") -> str:
    """Accuracy as mean ± standard error; wall seconds as a mean (training alone where the
    row has ``fit_wall_s``)."""
    if key == "accuracy":
        return mean_se_text((r["accuracy"] for r in rows), scale=1, digits=3)
    return f"{mean_se(r.get('fit_wall_s', r['wall_s']) for r in rows)[0]:.1f}"


def _paired_text(d) -> str:
    """A paired difference ``(mean, se, n)`` in points; without ± when one seed gives no spread."""
    return f"{100 * d[0]:+.1f}" + (f" ± {100 * d[1]:.1f}" if d[2] >= 2 else " (one seed: no spread)")


def issue_checks(rows: list[dict]) -> list[str]:
    """The comparisons the benchmark is judged on, computed from the rows: paired differences
    (points), best transferkit vs best SKADA method (each picked by its test mean, out of
    every method of its library, transferkit's without the target_only ceiling; with their
    paired difference over the seeds) and dann's training seconds against SKADA's DANN (each
    library in its own memory layout)."""
    lines = []
    for a, b in (("dann", "source_only"), ("multilayer_adv", "dann"), ("multilayer_adv", "source_only")):
        d = paired_difference(rows, a, b)
        if d is not None:
            lines.append(f"| {a} − {b} (paired, points) | {_paired_text(d)} | {d[2]} |")

    def means(library):
        out = {}
        for r in rows:
            if r.get("library") == library and r["method"] != "target_only":
                out.setdefault(r["method"], []).append(r["accuracy"])
        return {m: mean_se(v)[0] for m, v in out.items()}
    ours, theirs = means("transferkit"), means("skada")
    if ours and theirs:
        (m1, a1), (m2, a2) = max(ours.items(), key=lambda t: t[1]), max(theirs.items(), key=lambda t: t[1])
        lines.append(f"| best transferkit − best SKADA (means; best of {len(ours)} and of {len(theirs)} by test mean) "
                     f"| {m1} {a1:.3f} − {m2.split(':', 1)[1]} {a2:.3f} = {100 * (a1 - a2):+.1f} points | |")
        d = paired_difference(rows, m1, m2)
        if d is not None:
            lines.append(f"| {m1} − SKADA {m2.split(':', 1)[1]} (paired, points) | {_paired_text(d)} | {d[2]} |")
    timed = [r for r in rows if r["method"] in ("dann", "skada:DANN")]
    dann = [r.get("fit_wall_s", r["wall_s"]) for r in timed if r["method"] == "dann"]
    skada_dann = [r["wall_s"] for r in timed if r["method"] == "skada:DANN"]
    runs = sorted({str(r.get("invocation", "unrecorded")) for r in timed})  # as flex's wall.md: one invocation?
    mixed = len(runs) > 1 and dann and skada_dann
    if dann and skada_dann:
        lines.append(f"| dann / SKADA DANN training seconds (means; transferkit trains channels-last, SKADA in "
                     f"the layout it is given, the default){' (mixed)' if mixed else ''} | {mean_se(dann)[0]:.1f} / "
                     f"{mean_se(skada_dann)[0]:.1f} s | {len(dann)} / {len(skada_dann)} |")
    if not lines:
        return []
    note = ["", f"(mixed): the seconds compared were timed in {len(runs)} invocations of the benchmark (a resumed "
                f"run; the machine's load may differ between them, so compare rows of one): {', '.join(runs)}"]
    best = ["", f"(by test mean): each library's best is the method with the highest mean on this test split, so "
                f"both bests are biased upward, the more the more methods a library has ({len(ours)} and "
                f"{len(theirs)} here): the difference and its paired row compare two picks, not the libraries "
                f"(no held-out choice)"] if ours and theirs else []
    return ["", "Checks (computed from the rows above):", "", "| comparison | value | n |", "|---|---|---|", *lines,
            *best, *(note if mixed else [])]


def steps_note(rows: list[dict], steps: int) -> str:
    """A sentence naming the adaptation rows (not ``source_only`` or ``target_only``, which the
    header describes) that trained other than ``steps`` steps (mean of their rows' ``steps``, every
    stage counted: the :data:`TWO_STAGE` methods train a translator, then the task network, each
    ``steps``); "" when every row trained ``steps`` (or the rows do not say)."""
    counted: dict[str, list] = {}
    for r in rows:
        if r.get("library") != "skada" and r["method"] not in ("source_only", "target_only") and "steps" in r:
            counted.setdefault(r["method"], []).append(r["steps"])
    other = {m: sum(v) / len(v) for m, v in counted.items() if any(s != steps for s in v)}
    if not other:
        return ""
    said = ", ".join(f"`{m}` {s:.0f}" for m, s in other.items())
    two = [m for m in TWO_STAGE if m in other]
    return (f" Not the same steps: {said} (mean steps per job, every stage counted"
            + (f"; {', '.join(f'`{m}`' for m in two)}: a translator stage, then the task network, each of the "
               f"{steps} adaptation steps" if two else "") + ").")


def table3(source: str, target: str, rows: list[dict], b: Budget, epochs: int, steps: int) -> str:
    """Seed 000 Table 3 form (accuracy as a fraction, mean ± standard error over seeds)."""
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"### {source} → {target}\n",
             f"LeNet, seeds {seeds}, adaptation {steps} steps = {epochs} epoch{'s' if epochs != 1 else ''} of batch "
             f"{b.batch_size}+"
             f"{b.batch_size}, pre-training {b.pretrain_steps} steps; wall s = training time of the "
             f"adaptation (SKADA: `fit`; source only: the pre-training; target only: its job, training "
             f"and test evaluation)." + steps_note(rows, steps)
             + "".join(f" `{m}`: {describe(o)} (chosen on target validation)." for m, o in
                       TUNED.get((source, target), {}).items() if any(r["method"] == m for r in rows)) + "\n",
             "| method | accuracy | n | wall s |", "|---|---|---|---|"]
    for method in ["source_only", *adapting(b), "target_only"]:
        rs = [r for r in rows if r["method"] == method]
        if rs:
            lines.append(f"| {LABELS.get(method, method)} | {_cell(rs)} | {len(rs)} | {_cell(rs, 'wall_s')} |")
    sk = [r for r in rows if r.get("library") == "skada"]
    if sk:
        lines += ["", "Side by side with SKADA (same initial LeNet, data, batch, Adam μ0 and epochs; transferkit's "
                      "`dann`, `multilayer_adv` and `mcc` run the settings above, SKADA its defaults with a "
                      "constant learning rate (`DANN-sigmoid`: a sigmoid domain output; `MCC-T2.5`: T = 2.5); "
                      "transferkit's source_only is the pre-trained network, SKADA's SourceOnly "
                      "trains the adaptation epochs on the source too):", "",
                  "| library | method | accuracy | n | wall s |", "|---|---|---|---|---|"]
        for method in ("source_only", "dann", "mmd", "coral", "entmin", "mcc", "multilayer_adv"):
            rs = [r for r in rows if r["method"] == method]
            if rs:
                lines.append(f"| transferkit | {method} | {_cell(rs)} | {len(rs)} | {_cell(rs, 'wall_s')} |")
        for name in skada_compare.SKADA_METHODS:
            rs = [r for r in sk if r["method"] == f"skada:{name}"]
            if rs:
                lines.append(f"| skada 0.6 | {name} | {_cell(rs)} | {len(rs)} | {_cell(rs, 'wall_s')} |")
    lines += issue_checks(rows)
    return "\n".join(lines) + "\n"


def _adapted(cfg: ExperimentConfig, run_dir: Path, name: str, pretrained):
    """The adapted network of job ``name``: its saved network file (:func:`load_job_network`, no
    unpickling: a job with only a pickled model is refused), or in a directory from before
    models were saved, its final engine checkpoint."""
    saved = model_path(run_dir, cfg, name, cfg.seed)
    if saved.is_file() or network_path(saved).is_file():
        try:
            return load_job_network(run_dir, name, cfg.seed).eval()
        except UntrustedPickle:
            raise UntrustedPickle(f"{network_path(saved)} does not exist: job {name} saved only its pickled model "
                                  f"{saved.name} (a benchmark from before 2026-12-07), which the t-SNE does not read: "
                                  f"unpickling runs whatever code the file names") from None
    method = get_method(name)(copy.deepcopy(pretrained), **cfg.options.get(name, {}))
    ckpt = run_dir / "checkpoints" / job_stem(name, cfg.setting, cfg.seed) / "main" / "last.safetensors"
    state = load_safetensors(ckpt, "checkpoint", "resume the benchmark to finish that job")[0]
    method.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    return method.net.eval()


@torch.no_grad()
def tsne_figure(bench_dir: Path, source: str, target: str, b: UdaPlan, log) -> Path | None:
    seed = b.seeds[0]
    cfg = pair_config(source, target, seed, b, ["source_only", *ADAPTATION], 1)
    run_dir = bench_dir / path_part(source, target) / f"s{seed}"
    data = prepare_domains(cfg)
    pretrained, _ = run_source_network(cfg, data, run_dir, log)
    g = torch.Generator().manual_seed(seed)
    xs = data.source.test.images[torch.randperm(len(data.source.test), generator=g)[: b.tsne_points]]
    xt = data.target.test.images[torch.randperm(len(data.target.test), generator=g)[: b.tsne_points]]
    nets = {"source only (before)": pretrained.eval()}
    for name in (m for m in TSNE_METHODS if m in b.methods):
        try:
            nets[f"{name} (after)"] = _adapted(cfg, run_dir, name, pretrained)
        except (OSError, RuntimeError, TransferkitError) as e:
            log(f"t-SNE: no adapted {name} network ({e})")
    panels = {k: (net.forward_features(xs), net.forward_features(xt)) for k, net in nets.items()}
    path = kept_tsne(panels, bench_dir / f"tsne_{path_part(source).replace('+', '_')}_"
                                         f"{path_part(target).replace('+', '_')}.png", log,
                     title=f"LeNet embeddings, {source} (blue o) → {target} (orange x), test images, seed {seed}",
                     domain_names=(source, target))
    return path

