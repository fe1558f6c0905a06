"""CLIP-style dual encoders on the offline digit domains (seed 001 "CLIP: Vision + Language
Models", "Learning strategy: hard negative triplet loss").

* Image tower: a :class:`~transferkit.backbones.UnitNet` embedding + linear projection
  (trainable). Text tower: a frozen pre-trained text encoder (:mod:`transferkit.text`) +
  trainable linear projection. Both outputs are L2-normalised, ``sim(I, T) = <I, T>``.
* :func:`info_nce`: symmetric InfoNCE with learnable temperature,
  ``L = -1/2N sum_i [log softmax_k(sim(I_i, T_k) / tau)_i + log softmax_k(sim(I_k, T_i) / tau)_i]``;
  ``1 / tau = exp(t)`` is learned and clamped to ``[1, 100]`` as in CLIP. Seed 001's slide writes
  the image-to-text direction alone, summed over the batch; this is CLIP's symmetric mean (both
  directions, so also the text-to-image gradient; the mean scales the gradient by ``1/N``).
* :func:`hard_negative_triplet`: ``1/|B| sum_n [max_{m in C_n} [a - <x_n, v_n> + <x_n, v_m>]_+
  + max_{m in D_n} [a - <v_n, x_n> + <v_n, x_m>]_+]`` (hardest caption and hardest image
  negative in the batch, both directions).
* :func:`make_captions`: captions from class, domain and style ("a handwritten seven",
  "a printed 7 in bold serif on a photo background"); zero-shot classification with prompt
  templates and prompt ensembling (:func:`~transferkit.text.prompt_texts`); retrieval
  Recall@K (:func:`recall_at_k`).

Training goes through :class:`~transferkit.engine.Engine`: :class:`ClipMethod` reads
``(image, caption id)`` batches from the ``source`` stream of a :class:`CaptionedDomain`.
In a run or ``Transfer`` the source labels are caption ids (option ``captions``) and
``class_names`` defaults to the target's classes.
"""

from __future__ import annotations

import math
import numbers
import os
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import evaluating
from .data import FONT_FACES
from .distributed import gathered, world_size
from .domain import Domain
from .errors import TransferkitError, UnknownNameError, check, first_named, is_whole, warn
from .evaluate import predict_logits
from .heads import class_means
from .methods.base import Method, register, within_memory
from .runtime import in_float32
from .text import (
    DEFAULT_TEXT_MODEL,
    DIGIT_WORDS,
    TextEncoder,
    check_distinct,
    get_text_encoder,
    prompt_templates,
    prompt_texts,
    text_available,
)

MAX_LOGIT_SCALE = 100.0


# ---- losses --------------------------------------------------------------------------------
def _positives(sim: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """The positive pairs of an ``N x N`` similarity: the diagonal, or pairs sharing a caption id."""
    check(sim.dim() == 2 and sim.shape[0] == sim.shape[1],
          f"the contrastive losses need an N x N image-caption similarity (pair i matches i), got {tuple(sim.shape)}")
    if ids is None:
        return torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    check(ids.shape == (len(sim),), f"one caption id per pair: {tuple(ids.shape)} ids for {len(sim)} pairs")
    return ids[:, None] == ids[None, :]


@in_float32
def similarity(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """``images @ texts.T`` of unit-norm embeddings, in float32 under autocast: the losses scale
    it by up to 100, where bfloat16's 3 significant digits would move logits by about 0.4."""
    return images @ texts.t()


@in_float32
def info_nce(sim: torch.Tensor, logit_scale: torch.Tensor | float, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on an ``N x N`` image-text similarity matrix (pair ``i`` matches
    ``i``). With caption ``ids``, pairs sharing a caption are all positives:
    ``-log(sum_pos exp(s / tau) / sum_all exp(s / tau))`` per row and per column."""
    pos = _positives(sim, ids)
    logits = sim * logit_scale

    def one_way(lg):
        return (torch.logsumexp(lg, 1) - torch.logsumexp(lg.masked_fill(~pos, float("-inf")), 1)).mean()

    return 0.5 * (one_way(logits) + one_way(logits.t()))


@in_float32
def hard_negative_triplet(sim: torch.Tensor, margin: float = 0.2, ids: torch.Tensor | None = None,
                          hardest: bool = True) -> torch.Tensor:
    """Hard-negative margin loss of seed 001 on an ``N x N`` similarity matrix ``sim[n, m] =
    <x_n, v_m>`` (image ``n``, caption ``m``): for every pair the hardest caption negative and
    the hardest image negative in the batch (pairs sharing a caption id are not negatives).
    ``hardest=False`` averages the hinge over all negatives instead (the warm-up variant)."""
    pos = _positives(sim, ids)
    d = sim.diag()
    cost_caption = (margin - d[:, None] + sim).clamp_min(0).masked_fill(pos, 0)
    cost_image = (margin - d[None, :] + sim).clamp_min(0).masked_fill(pos, 0)
    if not hardest:
        neg = (~pos).float()
        return ((cost_caption.sum(1) / neg.sum(1).clamp_min(1)).mean()
                + (cost_image.sum(0) / neg.sum(0).clamp_min(1)).mean())
    return cost_caption.max(1).values.mean() + cost_image.max(0).values.mean()


class LearnableTemperature(nn.Module):
    """``1 / tau = exp(t)``, initialised to ``1 / tau0`` and clamped to ``[1, max_scale]``
    (in the forward and on the parameter after each step, as CLIP does), so ``tau0`` must lie
    in ``[1 / max_scale, 1]``. ``learn=False`` keeps it at ``tau0``."""

    def __init__(self, tau0: float = 0.07, max_scale: float = MAX_LOGIT_SCALE, learn: bool = True):
        super().__init__()
        check(tau0 > 0 and max_scale >= 1, f"temperature tau0 must be > 0 and max_scale >= 1, got {tau0}, {max_scale}")
        check(1 / max_scale <= tau0 <= 1,
              f"temperature tau0 = {tau0} is outside [{1 / max_scale:g}, 1]: 1 / tau is clamped to [1, {max_scale:g}] "
              f"(as in CLIP), so it would start at {min(max(1 / tau0, 1), max_scale):g}, not {1 / tau0:g}: give "
              f"tau0 in that range (CLIP's is 0.07)")
        self.max_log = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / tau0)).clamp(0, self.max_log), requires_grad=learn)

    def clamp_(self) -> None:
        with torch.no_grad():
            self.log_scale.clamp_(0, self.max_log)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(0, self.max_log).exp()

    @property
    def temperature(self) -> float:
        return float(1 / self.forward().detach())

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, max_scale={math.exp(self.max_log):.4g}, " \
               f"learn={self.log_scale.requires_grad}"


# ---- captions ------------------------------------------------------------------------------
def _face_style(face: str) -> str:
    """``"bold serif"``-like words for a matplotlib font face of :data:`~transferkit.data.FONT_FACES`."""
    f = face.lower()
    weight = "bold " if ("bold" in f or f.endswith("bol") or "bolita" in f or f == "cmb10") else ""
    slant = "italic " if any(s in f for s in ("oblique", "italic", "ita", "cmti")) else ""
    if "mono" in f or f == "cmtt10":
        family = "monospace"
    elif "serif" in f or f.startswith(("stix", "cmr", "cmb", "cmti")):
        family = "serif"
    else:
        family = "sans-serif"
    return f"{weight}{slant}{family}"


DOMAIN_TEMPLATES = {
    "mnist": ("a handwritten {w}", "the digit {d} written by hand", "a white handwritten {d} on black",
              "a scanned handwritten {w}"),
    "digits": ("a blurry handwritten {w}", "a low resolution handwritten {d}", "a handwritten {w} from an old scan",
               "the digit {d} written by hand"),
    "mnistm": ("a handwritten {w} on a photo background", "a colourful handwritten {d}",
               "the digit {d} written by hand over a photo", "a handwritten {w} in colour"),
    "syndigits": ("a printed {d} in {style}{bg}", "a printed {w} in {style}{bg}", "a house number {d} in {style}",
                  "the printed digit {w}{bg}"),
}


def make_captions(domain: Domain, kind: str | None = None, styles: dict | None = None, seed: int = 0) -> list[str]:
    """One caption per image from its class, the domain kind (``mnist``, ``digits``, ``mnistm``,
    ``syndigits``; default: the domain's base) and, for ``syndigits``, the rendering style
    (``styles`` from :func:`~transferkit.data.syndigits_styles` restricted to these images:
    ``font`` face ids and ``photo`` background flags). The template of each image is picked
    by a hash of ``(seed, index)``."""
    kind = kind or str(domain.provenance.get("base", domain.name)).split("+")[0].split("/")[0]
    if kind not in DOMAIN_TEMPLATES:
        raise UnknownNameError("caption domain kind", kind, DOMAIN_TEMPLATES)
    templates = DOMAIN_TEMPLATES[kind]
    if styles is not None:
        for key in ("font", "photo"):
            check(key in styles and len(styles[key]) == len(domain),
                  f"make_captions: styles[{key!r}] must hold one entry per image ({len(domain)})")
        check(all(0 <= int(f) < len(FONT_FACES) for f in styles["font"]),
              f"make_captions: font ids must lie in [0, {len(FONT_FACES) - 1}]")
    out = []
    for i, y in enumerate(domain.labels.tolist()):
        name = domain.class_names[y]
        word = DIGIT_WORDS[int(name)] if name.isdigit() and len(name) == 1 else name
        style, bg = "a printed font", ""
        if styles is not None:
            style = _face_style(FONT_FACES[int(styles["font"][i])])
            bg = " on a photo background" if bool(styles["photo"][i]) else " on a plain background"
        t = templates[zlib.crc32(f"{seed}:{i}".encode()) % len(templates)]
        out.append(t.format(w=word, d=name, style=style, bg=bg))
    return out


def _blank(caption) -> bool:
    """Whether a caption (a text, or a list of texts) has an empty or blank text."""
    return any(isinstance(t, str) and not t.strip() for t in ([caption] if isinstance(caption, str) else caption))


def captions_for_classes(captions, source_classes) -> list:
    """The ``captions`` option for a source of these classes: caption id ``i`` (source label
    ``i``) describes the ``i``-th source class. A mapping class name -> caption (or list of
    captions) is matched by name; a list is read in the source's class order and must hold one
    entry per source class, with a warning when the classes are numbers not in ascending order
    (``source_classes: [6, 0, 1]``). Empty or blank captions are refused, naming their class."""
    if isinstance(captions, str):
        return captions  # ClipMethod refuses one text
    names = [unicodedata.normalize("NFC", str(c)) for c in source_classes]
    if isinstance(captions, Mapping):
        given = {unicodedata.normalize("NFC", str(k)): v for k, v in captions.items()}  # as Domain keeps names
        missing = [c for c in names if c not in given]
        check(not missing, f"clip: captions has no caption for the source classes {missing[:10]} (it names "
                           f"{list(given)[:10]}): give one (or a list) per source class")
        captions = [given[c] for c in names]
    else:
        captions = list(captions)
        check(len(captions) == len(names),
              f"clip: captions is a list of {len(captions)} for {len(names)} source classes "
              f"[{first_named(map(repr, names))}]: caption i describes source class i, so give one caption (or a "
              f"list of captions) per source class, in their order, or a mapping class name -> caption. With a "
              f"CaptionedDomain cd pass captions=cd.captions (its distinct captions, which its labels index), not "
              f"the list of one caption per image, or fit(source=cd), which reads them")
        numbered = all(c.isdigit() for c in names)  # class numbers, e.g. digits: the order a user writes captions in
        if numbered and len(captions) > 1 and names != sorted(names, key=int):
            warn(f"clip: the captions list is read in the order of the source classes {names[:10]} (caption i "
                 f"describes the i-th), which is not ascending; if your captions follow another order, give them by "
                 f"class name (captions: {{{names[0]}: ..., {names[1]}: ...}})")
    empty = [c for c, caption in zip(names, captions) if isinstance(caption, (str, list, tuple)) and _blank(caption)]
    check(not empty, f"clip: the captions of the source classes {empty[:10]} are empty or blank: give each class a "
                     f"caption with words (a blank text embeds like every other blank one)")
    return captions


def caption_features(encoder: TextEncoder, captions) -> torch.Tensor:
    """One frozen text feature per caption id: the encoding of its text, or for a list of
    texts (several captions of one class) the mean of their encodings."""
    groups = [[c] if isinstance(c, str) else c for c in captions]
    check(all(isinstance(g, (list, tuple)) and g and all(isinstance(t, str) for t in g) for g in groups),
          "clip: each caption must be a text or a non-empty list of texts (several captions of one class)")
    blank = [i for i, g in enumerate(groups) if _blank(g)]
    check(not blank, f"clip: the captions {blank[:10]} (by caption id) are empty or blank: give each a text with words")
    if all(len(g) == 1 for g in groups):
        return encoder.encode([g[0] for g in groups])
    ids = torch.arange(len(groups)).repeat_interleave(torch.tensor([len(g) for g in groups]))
    return class_means(encoder.encode([t for g in groups for t in g]), ids, len(groups))


class CaptionedDomain:
    """Image-caption pairs for ``clip``: ``captions`` holds one caption per image, or per image
    a list of its captions (then one pair per caption: the image is repeated, ``image_index``
    gives the image of every pair). ``captions`` (attribute) are the distinct captions, sorted;
    ``domain`` has labels = caption index into them (so the engine's ``source`` stream yields
    ``(image, caption id)``) and the captions as class names; ``classes`` keeps the class label
    of every pair. Train on it with ``Transfer("clip").fit(source=cd)`` (or ``source=cd.domain``,
    whose class names are its captions); a ``captions`` option must then be ``cd.captions``."""

    def __init__(self, images: Domain, captions):
        check(isinstance(images, Domain), f"CaptionedDomain takes a labelled Domain of the images (their classes "
                                          f"are kept beside the captions), got {type(images).__name__}: "
                                          f"CaptionedDomain(Domain(name, images, labels, class_names), captions)")
        check(not isinstance(captions, str), "CaptionedDomain: captions must be a list of one caption per image")
        captions = list(captions)
        check(len(captions) == len(images), f"CaptionedDomain: {len(captions)} captions for {len(images)} images: "
                                            f"give one caption (or a list of captions) per image")
        per_image = [[c] if isinstance(c, str) else c for c in captions]
        for i, texts in enumerate(per_image):
            check(isinstance(texts, (list, tuple)) and len(texts) > 0 and all(isinstance(t, str) for t in texts),
                  f"CaptionedDomain: the caption of image {i} must be a text or a non-empty list of texts, got "
                  f"{texts!r:.80}")
            check(not _blank(texts), f"CaptionedDomain: the caption of image {i} is empty or blank "
                                     f"({captions[i]!r:.80}): give it words, or leave the image out (images[mask])")
        texts = [unicodedata.normalize("NFC", t) for ts in per_image for t in ts]  # as Domain keeps class names
        counts = torch.tensor([len(ts) for ts in per_image])
        self.image_index = torch.arange(len(images)).repeat_interleave(counts)
        pairs = images.subset(self.image_index) if len(texts) > len(images) else images
        self.captions = sorted(set(texts))
        index = {c: i for i, c in enumerate(self.captions)}
        self.caption_ids = torch.tensor([index[c] for c in texts])
        self.classes = pairs.labels
        # the classes its captions describe; unlabelled images (Domain.unlabeled) name none: clip then
        # needs class_names for the classes it scores
        present = [images.class_names[i] for i in images.present_classes()] if images.labeled else None
        self.domain = Domain(f"{images.name}/captions", pairs.images, self.caption_ids, self.captions,
                             provenance={**images.provenance, "captions": len(self.captions),
                                         **({"classes": present} if present is not None else {})})

    def __len__(self) -> int:
        """The image-caption pairs (as ``len(domain)``)."""
        return len(self.domain)

    def __repr__(self) -> str:
        return f"CaptionedDomain({self.domain.name!r}, {len(self)} pairs, {len(self.captions)} captions)"


@dataclass
class CaptionsFile:
    """The captions of a captions file: by the key of each line's file (``by_file``) and of its folder
    (``by_folder``: a video's, whose frames are one sample), and the file names it gives (``names``)."""

    by_file: dict
    by_folder: dict
    names: list


def read_captions_file(path) -> CaptionsFile:
    """The captions of a CSV file with columns ``file_name`` and ``text`` (or ``caption``),
    or a JSON Lines file of ``{"file_name": ..., "text": ...}`` records (the layout of Hugging Face's
    ``imagefolder`` metadata): ``file_name`` is an image's path below the folder a ``folder:PATH``
    domain reads (``cat/001.png``), keyed as the folder's images are
    (:func:`~transferkit.userdata.path_keys`); an image named on several lines has several captions.
    A video's frames (``cat/video7/f0.png``) are one sample keyed by their sub-folder: each line's
    captions are also filed under its folder's key, so per-frame lines caption their video (as does a
    line naming ``cat/video7``). Empty or blank captions are refused, naming the line."""
    import csv
    import io
    import json
    from pathlib import Path

    from .userdata import path_keys

    check(isinstance(path, (str, os.PathLike)), f"clip: captions_file must be a file's path, got {path!r:.60}")
    where = f"clip: captions_file {str(path)!r}"
    path = Path(path).expanduser()
    check(path.is_file(), f"{where} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise TransferkitError(f"{where} is unreadable as UTF-8 text: {e}") from None
    records = []
    if path.suffix.lower() in (".jsonl", ".json"):
        check(not text.lstrip().startswith("["), f"{where} holds a JSON array; captions_file takes JSON Lines, one "
                                                 f"record per line ({{\"file_name\": ..., \"text\": ...}})")
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TransferkitError(f"{where} line {n} is not a JSON record ({e}): captions_file takes "
                                           f"JSON Lines, one record per line") from None
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted captions may hold line breaks
        columns = [c for c in reader.fieldnames or []]
        check("file_name" in columns and ("text" in columns or "caption" in columns),
              f"{where} has the columns {columns}: it needs file_name and text (or caption), named exactly")
        for record in reader:
            records.append((reader.line_num, record))  # the line it ends on (a quoted caption may span lines)
    pairs = []
    for n, record in records:
        check(isinstance(record, dict) and isinstance(record.get("file_name"), str),
              f"{where} line {n} has no file_name (columns file_name and text, as Hugging Face's imagefolder "
              f"metadata), got {record!r:.80}")
        caption = record.get("text", record.get("caption"))
        check(isinstance(caption, str), f"{where} line {n} ({record['file_name']!r}): the caption must be a text, "
                                        f"got {caption!r:.60} (an image with several captions: one line each)")
        check(not _blank(caption), f"{where} line {n} ({record['file_name']!r}) has an empty caption: give it words, "
                                   f"or leave the line out")
        name = record["file_name"].replace("\\", "/").strip()
        pairs.append((name[2:] if name.startswith("./") else name, unicodedata.normalize("NFC", caption)))
    check(pairs, f"{where} holds no captions")
    out = CaptionsFile({}, {}, [name for name, _ in pairs])
    folders = [_video_of(name) for name in out.names]
    for key, folder, (_, caption) in zip(path_keys(out.names).tolist(), path_keys(folders).tolist(), pairs):
        out.by_file.setdefault(key, []).append(caption)
        out.by_folder.setdefault(folder, []).append(caption)
    return out


def _video_of(name: str) -> str:
    """The video a file of a captions file belongs to when it is a frame: the sub-folder just below its
    class folder, as an image folder groups them (``cat/video7/cam2/f.png`` -> ``cat/video7``)."""
    return "/".join(name.split("/")[:2]) if name.count("/") >= 2 else name.rsplit("/", 1)[0]


def captioned_source(source: Domain, captions: CaptionsFile, where: str) -> Domain:
    """The image-caption pairs of ``source`` (an image folder's domain, whose ``keys`` name its files)
    with the captions of :func:`read_captions_file`: the domain of a :class:`CaptionedDomain` of its
    images (or videos) that have a caption; those without one are left out with a warning."""
    check("captions" not in source.provenance, f"clip: the source {source.name!r} is a CaptionedDomain, which has "
                                               f"captions of its own, and captions_file {where} gives others: give "
                                               f"one of them")
    check(source.keys is not None, f"clip: captions_file {where} gives captions by file name, but the source "
                                   f"{source.name!r} has no file names: give an image folder (folder:PATH) as the "
                                   f"source, or build CaptionedDomain(images, captions) in Python")
    keys = source.keys.tolist()
    grouped = source.groups is not None  # a video's frames share its sub-folder's key
    found = {i: (captions.by_file.get(k) or []) + ((captions.by_folder.get(k) or []) if grouped else [])
             for i, k in enumerate(keys)}  # a video: the lines naming it and those naming its frames
    found = {i: c for i, c in found.items() if c}
    examples = ", ".join(repr(n) for n in list(dict.fromkeys(captions.names))[:3])
    check(found, f"clip: none of the {len(source)} source images {source.name!r} has a caption in captions_file "
                 f"{where} (its file names: {examples}, ...): file_name holds each image's path below the folder of "
                 f"folder:PATH, with its class folder (cat/001.png; a video's frames: cat/video7/f0.png or "
                 f"cat/video7)")
    if len(found) < len(source):
        warn(f"clip: {len(source) - len(found)} of the {len(source)} source images {source.name!r} have no caption "
             f"in captions_file {where} and are left out of training")
    index = sorted(found)
    return CaptionedDomain(source.subset(index), [list(dict.fromkeys(found[i])) for i in index]).domain


def check_captions_file(captions: CaptionsFile, path, source_splits: list[Domain]) -> None:
    """Before a run's first job: the source is an image folder, some of its training images have a
    caption, and the captions file's (``path``'s) lines that name no image of any source split (a typo,
    another extension) are counted in a warning with examples."""
    from .userdata import path_keys

    train = source_splits[0]
    captioned_source(train, captions, repr(str(path)))  # its refusals, before the first job
    every = {k for d in source_splits if d.keys is not None for k in d.keys.tolist()}
    names = list(dict.fromkeys(captions.names))
    keys = path_keys(names).tolist()
    folders = path_keys([_video_of(n) for n in names]).tolist()
    stray = [n for n, k, f in zip(names, keys, folders) if k not in every and f not in every]
    if stray:
        warn(f"clip: {len(stray)} of the {len(names)} file names in captions_file {str(path)!r} name no image of the "
             f"source {train.name.rsplit('/', 1)[0]!r} ({', '.join(map(repr, stray[:3]))}"
             f"{', ...' if len(stray) > 3 else ''}): their captions are not used (a misspelt folder or extension?)")


# ---- the dual encoder ----------------------------------------------------------------------
@register
class ClipMethod(Method):
    """Dual encoder trained on ``(image, caption id)`` pairs: seed 001 "CLIP: Vision + Language Models"
    (contrastive loss, "Mining hard negative contrastive example"), with :func:`info_nce` or
    :func:`hard_negative_triplet`, whose equations the module docstring gives.

    ``captions``: the caption strings indexed by the stream's labels (an entry may be a list of
    texts: their frozen encodings are averaged); in a run or ``Transfer`` also a mapping class
    name -> caption(s), matched to the source's classes by name (:func:`captions_for_classes`;
    a list there follows the order of the source classes). Left out, a source of a
    :class:`CaptionedDomain` gives them (its class names); given with one, they must be its
    ``captions``. ``text_encoder``: a
    :class:`~transferkit.text.TextEncoder` or its name (default: all-MiniLM-L6-v2 when the
    ``text`` extra is installed, else the dependency-free hashing encoder). ``loss``:
    ``infonce`` or ``triplet``. ``triplet_warmup``: fraction of training that averages the
    hinge over all negatives before switching to the hardest one (from scratch the
    hardest-negative loss alone collapses every embedding to one point, where it is flat).
    ``tau0``: the initial temperature, in ``[0.01, 1]``; ``learn_temperature=False`` keeps it.
    ``captions_file``: a CSV or JSON Lines file of ``file_name, text`` pairs (:func:`read_captions_file`)
    for a source image folder: clip then trains on each image with its own captions (the images
    without one left out), not on one caption per class; ``captions`` must then be left out.
    ``class_names`` / ``templates``: the zero-shot classifier used by the engine's validation
    accuracy and by :meth:`forward` (prompt ensembling: mean of the normalised projected
    prompt embeddings of each class). ``class_names`` default: the classes of the source it is
    fitted on (a :class:`CaptionedDomain` records them), in a run or ``Transfer`` with a target
    the target's. ``templates``: a list, or a set's name (``generic``, the default: "a photo of
    a {}." ...; ``digits``: "a photo of the digit {}" ..., :data:`~transferkit.text.TEMPLATE_SETS`)."""

    name = "clip"
    revision, revision_note = 1, "digit prompt templates by default until 2026-12-01, generic ones since"
    streams = ("source",)
    source_head = False  # scores captions, seen or not
    scores_class_names = True  # transferkit run / Transfer give it the target classes' names by default
    needs_pretrained = False
    file_options = ("captions_file",)  # its contents key the jobs (rundir.option_files)
    description = "CLIP-style dual encoder (image tower + frozen text encoder with projection), seed 001"

    def __init__(self, net, captions: Sequence[str] = (), text_encoder: str | TextEncoder | None = None,
                 class_names=None, templates=None, dim: int = 64,
                 loss: str = "infonce", margin: float = 0.2, tau0: float = 0.07, triplet_warmup: float = 0.2,
                 learn_temperature: bool = True, captions_file: str | os.PathLike | None = None):
        super().__init__(net)
        check(captions_file is None or not captions, "clip: give captions (one per source class) or captions_file "
                                                     "(one per image, by file name), not both")
        self.captions_file = None if captions_file is None else str(captions_file)  # a Path as well
        self.file_captions = None if captions_file is None else read_captions_file(captions_file)
        if loss not in ("infonce", "triplet"):
            raise UnknownNameError("clip loss", loss, ["infonce", "triplet"])
        for what, value in (("captions", captions), ("class_names", class_names)):
            check(not isinstance(value, str), f"clip: {what} must be a list of texts, not one text: {value!r}")
        check(not isinstance(captions, Mapping), "clip: captions by class name are matched to the source's classes "
                                                 "by Transfer and transferkit run; on its own clip takes a list "
                                                 "(captions_for_classes(captions, source.class_names) builds it)")
        check(isinstance(captions, (Sequence, np.ndarray)), f"clip: captions must be a list of texts (a caption, or a "
                                                            f"list of them, per source class), got {captions!r:.80}")
        check(text_encoder is None or isinstance(text_encoder, (str, TextEncoder)),
              f"clip: text_encoder must be a text encoder's name (text) or a TextEncoder, got {text_encoder!r}")
        check(class_names is None or len(class_names) > 0, "clip: class_names must name at least one class")
        self.templates = prompt_templates(templates)
        if text_encoder is None:
            text_encoder = DEFAULT_TEXT_MODEL if text_available() else "hashing"
            if text_encoder == "hashing":
                warn(f"clip: the text extra is not installed (pip install 'transferkit[text]'): the captions and "
                     f"prompts are encoded by the hashing encoder, not {DEFAULT_TEXT_MODEL} (option text_encoder: "
                     f"hashing says so and silences this)")
        self.encoder = get_text_encoder(text_encoder)
        check(0 <= triplet_warmup <= 1, f"clip: triplet_warmup is the fraction of training before the hardest "
                                        f"negatives, in [0, 1], got {triplet_warmup!r}")
        self.loss_name, self.margin, self.triplet_warmup = loss, margin, triplet_warmup
        self.image_proj, self.text_proj = within_memory(
            "clip", lambda: (nn.Linear(net.embed_dim, dim), nn.Linear(self.encoder.dim, dim)), dim=dim)
        self.temperature = LearnableTemperature(tau0, learn=learn_temperature)
        self.caption_texts = list(captions)  # a captioned source's must be the same
        self.register_buffer("caption_features", caption_features(self.encoder, self.caption_texts))
        self.class_names: list[str] | None = None  # until given, or read from the source (prepare)
        if class_names is not None:
            self.set_classes(class_names)

    def check_source(self, splits: list) -> None:
        """A run's check before its first job: a ``captions_file`` fits the source (:func:`check_captions_file`)."""
        if getattr(self, "file_captions", None) is not None:
            check_captions_file(self.file_captions, self.captions_file, splits)
        else:  # a run's source names classes, not captions: it failed after the pre-training (a trial)
            check(len(self.caption_features) > 0 or any("captions" in s.provenance for s in splits),
                  "clip trains on captions, and neither captions nor captions_file is given: give one caption per "
                  "source class (options: {clip: {captions: {0: a photo of a zero, 1: ...}}}) or a captions_file "
                  "of image-caption pairs")

    @classmethod
    def options_for_source(cls, options: dict, source_classes) -> dict:
        """``options`` with ``captions`` as the list indexed by the source's labels (:func:`captions_for_classes`)."""
        if options.get("captions") is None:
            return options
        return {**options, "captions": captions_for_classes(options["captions"], source_classes)}

    def set_classes(self, class_names, templates=None) -> None:
        """The zero-shot classes: one prompt ensemble per class (``P`` prompts each);
        ``templates``: as :func:`~transferkit.text.prompt_templates` (default: the method's).
        After a ``Transfer`` fit, :meth:`scores` scores them (``Transfer.predict`` keeps ``classes_``)."""
        if templates is not None or not hasattr(self, "templates"):  # a model pickled before this field: digits
            self.templates = prompt_templates("digits" if templates is None else templates)
        templates = self.templates
        prompts = prompt_texts(class_names, templates)  # names every blank or missing name
        self.class_names = [str(c) for c in class_names]
        twice = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
        check(not twice, f"clip: class_names lists {twice[:10]} more than once; a repeated class could never be "
                         f"predicted")
        self.prompt_features = self.encoder.encode([p for ps in prompts for p in ps])
        self.prompt_classes = torch.arange(len(prompts)).repeat_interleave(torch.tensor([len(p) for p in prompts]))
        check_distinct(class_means(self.prompt_features, self.prompt_classes, len(prompts)), self.class_names, "clip",
                       "prompt embeddings")

    def trainable_units(self):
        return self.net.feature_names

    def extra_results(self) -> dict:
        """The text encoder that embedded the captions and prompts (MiniLM or the hashing fallback)."""
        return {**super().extra_results(), "text_encoder": self.encoder.name}

    def classes_from(self, source) -> None:
        """Without ``class_names``: score the classes of the images of ``source`` (a
        :class:`CaptionedDomain`'s ``provenance["classes"]``)."""
        if self.class_names is None and source is not None and "classes" in source.provenance:
            self.set_classes(source.provenance["classes"])

    def check_validation(self, val) -> None:
        """Early stopping compares validation label ``i`` with the ``i``-th class clip scores:
        the validation classes must be the first classes clip scores, by name and in order
        (seen classes 0-6 while clip scores the unseen 7-9, or 0-2 while it scores 7-9, are
        refused). The seen classes first of all the classes (GZSL) are fine."""
        names = [str(n) for n in val.class_names]
        check(self.class_names is not None, f"clip has no classes to score on the validation domain {val.name!r}: "
                                            f"give class_names, or a source of CaptionedDomain(...).domain")
        check(names == self.class_names[:len(names)],
              f"clip scores the classes {self.class_names[:10]} while it trains, but the validation domain "
              f"{val.name!r} has the classes {names[:10]}: early stopping would compare labels of one list with "
              f"outputs of another: for a zero-shot protocol leave out val= (in a config, select_on: none), or "
              f"give class_names that begin with the validation classes, in their order")

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        if getattr(self, "file_captions", None) is not None and source is not None:
            source = captioned_source(source, self.file_captions, repr(self.captions_file))
        self.classes_from(source)
        if val is not None:
            self.check_validation(val)
        return super().fit_transfer(make_engine, source, target, unlabeled, val)

    def prepare(self, domains: dict) -> None:
        super().prepare(domains)
        source = domains.get("source")
        if source is not None and "captions" in source.provenance:
            self.captions_from(source)
        self.classes_from(source)
        if source is not None:  # evaluate_zero_shot checks seen classes against them (unknown for unlabelled pairs)
            named = source.provenance.get("classes") if "captions" in source.provenance else \
                [source.class_names[i] for i in source.present_classes()]
            self.trained_classes = None if named is None else [str(c) for c in named]
        n = len(self.caption_features)
        needed = None if source is None else int(source.labels.max()) + 1
        check(source is None or (n > 0 and needed <= n <= source.num_classes),
              f"clip trains on captions (source label i is caption i): {source and source.num_classes} source "
              f"classes, {n} captions. Give one caption per source class (captions=[...], in the order of "
              f"source.class_names, or by class name in Transfer and a config: options: {{clip: {{captions: {{0: a "
              f"photo of a zero, 1: a photo of a one, ...}}}}}}), or train on image-caption pairs: "
              f"Transfer('clip').fit(source=CaptionedDomain(images, captions)) reads its captions")
        present = None if source is None else len(source.present_classes())
        check(source is None or present >= 2,
              f"clip: every image of the source {source and source.name!r} has the same caption (class), so every "
              f"pair of a batch is a positive and the contrastive loss is 0: give captions of two classes or more")

    def captions_from(self, source: Domain) -> None:
        """Without ``captions``: the captions of a :class:`CaptionedDomain`'s domain (its class
        names); with them, refuse any other list (the labels index the source's captions)."""
        captions = list(source.class_names)
        if not self.caption_texts:
            self.caption_texts = captions
            self.caption_features = caption_features(self.encoder, captions)
            return
        given = [unicodedata.normalize("NFC", c) if isinstance(c, str) else c for c in self.caption_texts]
        if given != captions:
            differ = next((i for i, (a, b) in enumerate(zip(given, captions)) if a != b),
                          min(len(given), len(captions)))
            raise TransferkitError(
                f"clip: the source {source.name!r} is a CaptionedDomain of {len(captions)} distinct captions (its "
                f"labels index them, sorted), and the captions option is another list ({len(given)} entries, first "
                f"difference at {differ}: {given[differ] if differ < len(given) else None!r:.60} for "
                f"{captions[differ] if differ < len(captions) else None!r:.60}): pass captions=cd.captions, not the "
                f"list of one caption per image, or leave captions out (fit(source=cd) reads them)")

    def param_groups(self):
        projections = [*self.image_proj.parameters(), *self.text_proj.parameters()]
        temperature = [p for p in self.temperature.parameters() if p.requires_grad]  # learn_temperature=False: none
        return [{"params": self.net.parameters_of(self.trainable_units())}, {"params": projections},
                {"params": temperature, "weight_decay": 0.0}]  # as CLIP: no decay on it

    def encode_images_from_input(self, x):
        return F.normalize(self.image_proj(self.net.forward_units(x, self.input_unit, "embedding")), dim=1)

    def encode_text_features(self, feats):
        return F.normalize(self.text_proj(feats), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text_features(self.encoder.encode(texts).to(self.text_proj.weight))  # on the model's device

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings, in eval mode (each module's mode is restored after), on the
        device of ``images`` as every prediction (:func:`~transferkit.evaluate.predict_logits`);
        :meth:`encode_texts` gives the model's device."""
        dev = self.image_proj.weight.device
        with evaluating(self):
            return predict_logits(lambda x: F.normalize(self.image_proj(self.net.forward_features(x.to(dev))), dim=1),
                                  images)

    def class_embeddings(self) -> torch.Tensor:
        check(self.class_names is not None, "clip has no classes to score: give class_names (or set_classes(names)), "
                                            "or fit it on a source of CaptionedDomain(...).domain, which names them")
        per_prompt = self.encode_text_features(self.prompt_features.to(self.text_proj.weight))
        return F.normalize(class_means(per_prompt, self.prompt_classes, int(self.prompt_classes.max()) + 1), dim=1)

    def losses(self, batch):
        x, ids = batch.source
        n = len(x) * world_size()  # the global batch: the engine's shards have equal sizes
        check(n >= 2, f"clip: a batch of {n} image-caption pair has no negative, so the contrastive loss is 0 and "
                      f"nothing trains: use batch_size >= 2 (TrainConfig(batch_size=64)) and a source of two pairs "
                      f"or more")
        # under --nproc every rank scores its pairs against the whole batch's (the negatives of one process)
        images, texts = self.encode_images_from_input(x), self.encode_text_features(self.caption_features[ids])
        sim, ids = similarity(gathered(images), gathered(texts)), gathered(ids)
        if self.loss_name == "triplet":
            hardest = batch.progress >= self.triplet_warmup
            return {"triplet": hard_negative_triplet(sim, self.margin, ids, hardest=hardest)}
        return {"infonce": info_nce(sim, self.temperature(), ids)}

    def after_step(self, batch):
        self.temperature.clamp_()

    def forward_from_input(self, x):
        return self.temperature() * self.encode_images_from_input(x) @ self.class_embeddings().t()

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """``N x C`` zero-shot logits of images over the classes of :meth:`set_classes`, in
        eval mode (each module's mode is restored after); computed on the model's device,
        returned on the device of ``images`` (as :func:`~transferkit.evaluate.predict_logits`)."""
        dev = self.image_proj.weight.device
        with evaluating(self):
            return predict_logits(lambda x: self.forward(x.to(dev)), images)

    def forward(self, images):
        saved, self.input_unit = self.input_unit, self.net.unit_names[0]
        try:
            return self.forward_from_input(images)
        finally:
            self.input_unit = saved


# ---- retrieval -----------------------------------------------------------------------------
def recall_at_k(sim: torch.Tensor, relevant: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Fraction of queries (rows of the ``Q x G`` similarity) with a relevant gallery item
    (``relevant``: ``Q x G`` bool) among their ``k`` most similar ones, for each ``k``; a query
    with no relevant item is a miss at every ``k`` (also ``k > G``). Equal similarities rank in
    gallery order, on any device. Computed on the similarity's device (``relevant`` is moved there)."""
    check(sim.shape == relevant.shape, f"recall_at_k: relevant must have the similarity's shape (queries x gallery "
                                       f"items), got similarity {tuple(sim.shape)} and relevant "
                                       f"{tuple(relevant.shape)}")
    check(sim.dim() == 2 and len(sim) > 0 and sim.shape[1] > 0,
          f"recall_at_k needs queries and gallery items, got a similarity of shape {tuple(sim.shape)}")
    check(not bool(sim.isnan().any()), "recall_at_k: the similarity has NaN values")
    check(relevant.dtype == torch.bool, f"recall_at_k: relevant must be a bool matrix (relevant or not), got "
                                        f"{relevant.dtype}")
    ks = [ks] if isinstance(ks, numbers.Integral) else list(ks)
    check(all(is_whole(k, 1) for k in ks), f"recall_at_k: every k must be a whole number >= 1, got {ks}")
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    hit = relevant.to(sim.device).gather(1, order)
    never = torch.iinfo(torch.long).max  # no relevant item: beyond every k
    first = torch.where(hit.any(1), hit.float().argmax(1), torch.full((len(hit),), never, device=sim.device))
    return {f"R@{k}": int((first < k).sum()) / len(first) for k in ks}  # exact hits / n


@torch.no_grad()
def retrieval_report(method: ClipMethod, images: torch.Tensor | None, image_classes: torch.Tensor,
                     captions: list[str], caption_classes: torch.Tensor, ks=(1, 5, 10),
                     image_embeddings: torch.Tensor | None = None) -> dict:
    """Image -> text and text -> image Recall@K at the class level: a caption is relevant to every
    image of its class (for pairs, a caption relevant to its own image only, give
    :func:`recall_at_k` your own ``Q x G`` relevance matrix).
    ``image_embeddings``: ``method.encode_images(images)`` when the caller already has them
    (one image set scored against several caption sets); ``images`` may then be ``None``."""
    check(images is not None or image_embeddings is not None, "retrieval_report needs images or their embeddings")
    img = method.encode_images(images) if image_embeddings is None else image_embeddings
    check(len(img) == len(image_classes), f"retrieval_report: {len(img)} images but {len(image_classes)} "
                                          f"image_classes: give the class of every image")
    check(len(captions) == len(caption_classes), f"retrieval_report: {len(captions)} captions but "
                                                 f"{len(caption_classes)} caption_classes: give the class of every "
                                                 f"caption (caption_classes[j]: the class captions[j] describes)")
    txt = method.encode_texts(list(captions)).to(img.device)  # the model's device, the images' may differ
    sim = img @ txt.t()
    rel = torch.as_tensor(image_classes).cpu()[:, None] == torch.as_tensor(caption_classes).cpu()[None, :]
    i2t = recall_at_k(sim, rel, ks)
    t2i = recall_at_k(sim.t(), rel.t(), ks)
    return {**{f"i2t_{k}": v for k, v in i2t.items()}, **{f"t2i_{k}": v for k, v in t2i.items()}}
