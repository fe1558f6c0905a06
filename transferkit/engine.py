"""The one training loop every method uses.

A method (see :mod:`transferkit.methods.base`) declares which units it trains and
returns named loss terms for a :class:`Batch`; the engine owns everything else:
samplers for each stream (labelled source, labelled target, unlabelled target),
optimiser and parameter groups, learning-rate schedule, early stopping on validation
accuracy (seed 002 §3: "fine-tune ... until accuracy on D_val stops improving"),
metrics as JSON lines, atomic safetensors checkpoints, resume and seeding.

Determinism: the batch drawn at step ``t`` of a stream depends only on the seed, the
stream name and ``t``; the torch RNG state is saved in each checkpoint. A run resumed
from a checkpoint therefore ends with the same weights as an uninterrupted run.

Frozen leading units (no trainable parameter in them or before them) are computed once
for every stream and for the validation set, and training starts from their cached
activations (frozen units always run in eval mode, so this is exact). A fixed network a
method keeps beside the trained one (ADDA's source encoder, a distillation teacher) is run
once over each stream the fit draws in full, through ``Method.cache_inputs``; each batch
carries the positions of its samples (``Batch.indices``) to look the results up.

Memory layout: on CPU a method with 4-D (convolution) weights trains in PyTorch's
channels-last layout (``TrainConfig.channels_last``, default on), which oneDNN's
convolution and pooling kernels run 15-35 % faster for the built-in backbones; the model
goes back to the default layout when ``fit`` returns. Same model and arithmetic up to
floating-point rounding, and deterministic for a fixed seed. The streams keep their images as
given: each batch (and each validation chunk) is laid out as it is drawn, and ``cache_inputs``
gets its stream in that layout when it asks for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .backbones import evaluating
from .distributed import all_reduce_mean, broadcast_state, is_main_process, rank, world_size
from .domain import Domain, check_labeled
from .errors import TransferkitError, check, first_named, torch_seed, warn
from .evaluate import chunk_rows, mean_recall, predict_logits
from .fields import check_fields
from .frozen import frozen_activations
from .io import append_jsonl, check_stream, is_stream, load_safetensors, read_jsonl, save_safetensors, write_json
from .registry import without_addresses
from .runtime import NoBar, autocast, check_device_name, default_device, resolve_device, shows_progress

STREAMS = ("source", "target", "unlabeled")


def check_streams(cls) -> None:
    """Refuse a method class whose ``streams`` are not a non-empty tuple of known stream names."""
    streams = cls.streams
    check(isinstance(streams, (tuple, list)) and len(streams) > 0,
          f"method {cls.name!r} must declare its streams as a tuple among {', '.join(STREAMS)}, got {streams!r}")
    unknown = [s for s in streams if s not in STREAMS]
    check(not unknown, f"method {cls.name!r} declares unknown stream(s) {unknown} in streams = {tuple(streams)!r}; "
                       f"the streams are {', '.join(STREAMS)}")


@dataclass
class TrainConfig:
    """Optimisation budget and schedule of one training stage (defaults follow seed 000:
    Adam, learning rate 1e-3).

    ``steps`` optimiser steps of ``batch_size`` images per stream; ``lr``, ``optimizer``,
    ``momentum`` (SGD), ``weight_decay`` and the learning-rate ``schedule``; every
    ``eval_every`` steps the model is scored on the validation domain, training stops after
    ``patience`` evaluations without improvement (``None``: never) and ``restore_best`` keeps
    the best evaluation's weights (else the last); ``checkpoint_every``: steps between
    checkpoints where a checkpoint folder is given; ``cache_frozen`` computes the activations of
    frozen leading units once per fit (up to ``cache_limit_mb``); ``progress``: a tqdm bar (None:
    when stderr is a terminal or in a Jupyter kernel); ``device`` (cpu, cuda, mps, auto),
    ``amp`` (bfloat16 autocast on CUDA) and ``channels_last`` (the layout of conv nets on CPU);
    ``sampler``: how labelled streams draw batches, ``shuffle`` (epochs of shuffled images) or
    ``balanced`` (each class equally likely at every draw, then one of its images: see :class:`Stream`);
    ``class_weight``: ``None``, or ``balanced``: the cross-entropy of labelled images weighs class
    ``c`` of a stream by ``n / (C n_c)`` (scikit-learn's "balanced"; :func:`balanced_class_weights`)."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | dann: lr0 / (1 + 10 p) ** 0.75 (seed 003)
    eval_every: int = 50
    patience: int | None = 4  # evaluations without improvement before stopping; None: never stop
    restore_best: bool = True
    checkpoint_every: int = 100  # steps between checkpoints when a checkpoint dir is given
    cache_frozen: bool = True
    cache_limit_mb: int = 2048
    progress: bool | None = None  # tqdm bar; None: when stderr is a terminal or in a Jupyter kernel
    # cpu | cuda | mps | auto; the CLI's --device sets the default of every config made after it
    device: str = field(default_factory=default_device)
    amp: bool = False  # bfloat16 autocast on CUDA GPUs (ignored on CPU and MPS)
    channels_last: bool = True  # on CPU, train conv nets in the channels-last layout (see Engine.fit)
    sampler: str = "shuffle"  # labelled streams: shuffle | balanced (classes drawn equally often)
    class_weight: str | None = None  # None | balanced: cross-entropy weights n / (classes x class size)

    def __post_init__(self):
        self.check()

    def __repr__(self) -> str:
        """The dataclass's repr, less the fields of :data:`ADDED_TRAIN_FIELDS` at their defaults: the
        text that keys benchmark jobs (:func:`content_text`) stays what it was before they were added."""
        return f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in keyed_fields(self).items())})"

    def check(self) -> None:
        """Check every field (on construction, and again when a training starts: a field changed
        in place, ``cfg.optimizer = "adamw"``, is refused as the constructor refuses it)."""
        check_fields(self)
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check_rate(self.lr)
        check(self.optimizer in ("adam", "sgd"), f"unknown optimizer {self.optimizer!r} (adam, sgd)")
        check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r} ({', '.join(SCHEDULES)})")
        check(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        check(self.cache_limit_mb >= 0, f"cache_limit_mb must be >= 0 (0 caches nothing), got {self.cache_limit_mb}")
        check(self.patience is None or self.patience >= 1, f"patience must be >= 1 or None, got {self.patience}")
        check(self.momentum >= 0 and math.isfinite(self.momentum),
              f"momentum must be a finite number >= 0, got {self.momentum}")
        check_rate(self.weight_decay, "weight_decay", zero_ok=True)
        check(self.momentum < 1, f"momentum must be below 1 (SGD's velocity keeps that share of itself each step: "
                                 f"1 or more never decays, and the steps grow), got {self.momentum}")
        check(self.sampler in SAMPLERS, f"unknown sampler {self.sampler!r}: shuffle (epochs of shuffled images) or "
                                        f"balanced (each class equally likely at every draw)")
        check(self.class_weight in (None, "balanced"), f"unknown class_weight {self.class_weight!r}: null (every "
                                                       f"image alike) or balanced (a class weighed by n / (classes "
                                                       f"x its images))")
        check_device_name(self.device)


#: the largest learning rate (and weight decay) a config takes, 2**64: its square overflows float32, and the
#: optimiser's float32 step (lr x a group's multiplier, / (1 - beta1) in Adam's first step) overflows near it
LARGEST_RATE = 2.0 ** 64


def check_rate(value: float, name: str = "lr", zero_ok: bool = False) -> None:
    """Refuse a learning rate (``zero_ok``: a weight decay, which may be 0) that is not a finite
    number in (0, :data:`LARGEST_RATE`] ([0, :data:`LARGEST_RATE`])."""
    check(math.isfinite(value) and (value > 0 or zero_ok and value == 0),
          f"{name} must be a finite number {'>=' if zero_ok else '>'} 0, got {value}")
    check(value <= LARGEST_RATE, f"{name} must be at most 2**64 ({LARGEST_RATE:.3g}): the optimiser's float32 "
                                 f"arithmetic overflows past it, and a training diverges far below it; got {value:g}")


#: how a labelled stream draws its batches (Stream)
SAMPLERS = ("shuffle", "balanced")
#: TrainConfig fields added since checkpoints and source networks were first keyed, with their defaults:
#: at its default a field is left out of those keys (older checkpoints resume, cached networks are found)
ADDED_TRAIN_FIELDS = {"sampler": "shuffle", "class_weight": None}


def balanced_class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per class id ``c`` up to the largest label, ``n / (C n_c)``: ``n`` labels of ``C`` classes
    present, ``n_c`` of class ``c`` (scikit-learn's ``class_weight="balanced"``); 1 for an absent id.
    Every class then weighs ``n / C`` in a sum over the images, as if the classes were equal."""
    counts = torch.bincount(labels.cpu()).float()
    present = counts > 0
    weights = torch.ones_like(counts)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights


def keyed_fields(cfg: TrainConfig) -> dict:
    """``cfg`` as a dict for a key (checkpoint signature, source-network cache), less the fields of
    :data:`ADDED_TRAIN_FIELDS` at their defaults."""
    return {k: v for k, v in asdict(cfg).items() if ADDED_TRAIN_FIELDS.get(k, object()) != v}


def _window_sums(window: dict) -> dict:
    """The loss sums since the last evaluation as a checkpoint keeps them, ``{term: [sum, steps]}``;
    under torchrun the mean of the ranks' sums, which every rank resumes from: the mean over ranks
    of (that + its own later sums) is the mean an uninterrupted training logs (up to rounding)."""
    if not window:
        return {}
    sums = torch.stack([total for total, _ in window.values()])
    if world_size() > 1:
        sums = all_reduce_mean(sums)
    return {k: [float(total), n] for (k, (_, n)), total in zip(window.items(), sums.tolist())}


#: what validation may score: accuracy, or the mean per-class accuracy (recall) for imbalanced classes
SELECT_METRICS = ("accuracy", "balanced_accuracy")


def check_select_metric(value: str) -> str:
    """``value`` if it is one of :data:`SELECT_METRICS`, else an error that names them."""
    check(value in SELECT_METRICS, f"select_metric must be accuracy or balanced_accuracy (the mean per-class "
                                   f"accuracy: classes of few images count as much as large ones), got {value!r}")
    return value

SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "dann": lambda p: 1.0 / (1 + 10 * p) ** 0.75,
}


@dataclass
class Batch:
    """What a method sees at one step. ``source`` and ``target`` are ``(x, y)`` pairs,
    ``unlabeled`` is ``x`` alone; a stream the method did not ask for is ``None``.
    ``x`` is the image, or the cached activation of the last frozen unit when the engine
    caches a frozen prefix (methods run ``method.forward_from_input`` on it). ``progress``
    is ``step / steps`` in [0, 1] (the ``p`` of seed 003's schedules). ``indices`` holds,
    per stream, the positions of this batch's samples in that stream's domain: they address
    what the method computed once in ``Method.cache_inputs``."""

    step: int
    progress: float
    source: tuple[torch.Tensor, torch.Tensor] | None = None
    target: tuple[torch.Tensor, torch.Tensor] | None = None
    unlabeled: torch.Tensor | None = None
    indices: dict = field(default_factory=dict)


class Stream:
    """Endless shuffled batches over one set of tensors; batch ``t`` depends only on
    (seed, name, t), which makes resume exact without saving sampler state.

    ``balanced`` (labelled streams, ``TrainConfig.sampler``): each sample of a batch draws a class
    uniformly among the stream's classes, then one of that class's images uniformly, with
    replacement (the probability of an image is 1 / (classes x its class's images), as PyTorch's
    ``WeightedRandomSampler`` with those weights): a class of 5 images is seen as often as one of
    5,000, its images repeated more. Batch ``t`` draws from a generator seeded by (seed, name, t). A
    stream whose classes hold equally many images (a k-shot set) is shuffled as without it: its
    epochs already show each class equally often, each image once.

    Under torch.distributed it is the distributed sampler: every rank draws the same global
    batch and keeps its own shard ``rank::world_size``, so ``N`` processes see exactly the
    samples one process would see with the same global batch size."""

    def __init__(self, name: str, x: torch.Tensor, y: torch.Tensor | None, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, balanced: bool = False,
                 layout: torch.memory_format | None = None):
        check(len(x) > 0, f"the {name} stream is empty")
        self.name, self.x, self.y = name, x, y
        self.layout = layout  # each batch's (channels-last on CPU): no copy of the whole stream in it
        self.rank, self.world = rank, world
        # a multiple of the process count: equal shards, so DDP's average of per-rank means is the batch mean
        self.batch_size = math.ceil(max(min(batch_size, len(x)), world) / world) * world
        self.seed = int(hashlib.sha256(f"{seed}/{name}".encode()).hexdigest()[:12], 16)
        self._perms: dict[int, torch.Tensor] = {}
        self.balanced = False
        if balanced and y is not None:  # the stream's images grouped by class: c's are order[start[c]:][:count[c]]
            labels = y.cpu()
            self._order = torch.argsort(labels, stable=True)
            _, self._count = torch.unique(labels, return_counts=True)
            self._start = torch.cumsum(self._count, 0) - self._count
            self.balanced = bool((self._count != self._count[0]).any())  # equal classes (k-shot): shuffled epochs

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perms[epoch] = torch.randperm(len(self.x), generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        n, b = len(self.x), self.batch_size
        if self.balanced:
            g = torch.Generator().manual_seed(self.seed + step)
            c = torch.randint(len(self._count), (b,), generator=g)
            within = (torch.rand(b, generator=g, dtype=torch.float64) * self._count[c]).long()
            return self._order[self._start[c] + torch.minimum(within, self._count[c] - 1)]
        start = step * b
        if start // n == (start + b - 1) // n:  # within one epoch: a slice of its permutation
            return self._perm(start // n)[start % n:start % n + b]
        pos = torch.arange(start, start + b)
        epochs = pos // n
        idx = torch.empty_like(pos)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            idx[sel] = self._perm(e)[pos[sel] % n]
        return idx

    def batch(self, step: int) -> tuple:
        """``(samples, idx)``: this rank's share of batch ``step`` (``x`` or ``(x, y)``) and
        its positions in the stream."""
        idx = self.indices(step)[self.rank::self.world]
        x = self.x[idx] if self.layout is None else _as_layout(self.x[idx], self.layout)
        return (x if self.y is None else (x, self.y[idx])), idx


@dataclass
class FitResult:
    steps: int
    #: step of the best validation evaluation; without validation, the last step
    best_step: int
    best_val_accuracy: float | None
    stopped_early: bool
    wall_s: float
    #: one entry per log or evaluation (its repr shows only their number, as it leaves out ``val_correct``)
    history: list = field(default_factory=list, repr=False)
    #: validation accuracy of the weights the fit returns: the best evaluation's when
    #: ``restore_best`` restored them, else the last evaluation's (default: ``best_val_accuracy``)
    val_accuracy: float | None = None
    #: per-image correctness (CPU, bool) and mean cross entropy of the returned weights on the
    #: validation set, from the evaluation that gave ``val_accuracy`` (``None`` where that
    #: evaluation is not at hand: no validation, several ranks, or a head scored on other rows;
    #: after a resume the kept weights are scored again), so that a caller need not score them again
    val_correct: torch.Tensor | None = field(default=None, repr=False)
    val_loss: float | None = None
    #: a window's mean loss grew past :data:`DIVERGED_FACTOR` times the loss before any update (the
    #: warning's condition): the returned weights are not worth keeping (a pre-training does not cache them);
    #: a method of several stages says whether a stage its returned weights come from diverged
    diverged: bool = False

    def __post_init__(self):
        if self.val_accuracy is None:
            self.val_accuracy = self.best_val_accuracy

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"FitResult({shown}, history=<{len(self.history)} entries>)"


class StreamInputs(dict):
    """The streams handed to ``Method.cache_inputs``: a dict of input tensors whose missing
    keys raise an error that says why the stream is absent (``in`` and ``get`` work as usual).
    Each read of a stream (``[]``, ``get``, ``values``, ``items``, ``pop``, ``copy``, ``dict(...)``)
    gives a copy of it in the training layout."""

    def __init__(self, inputs: dict, given: list, steps: int, layout: torch.memory_format | None = None):
        super().__init__(inputs)
        self.given, self.steps, self.layout = list(given), steps, layout

    def __getitem__(self, key):  # in the training layout, as the batches come (a copy made when asked for)
        x = super().__getitem__(key)
        return x if self.layout is None else _as_layout(x, self.layout)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]

    def __iter__(self):  # not dict's own: dict(...) and {**...} then read each stream through __getitem__
        return iter(list(dict.keys(self)))

    def copy(self):
        return dict(self.items())

    def pop(self, key, *default):
        if key not in self and default:
            return default[0]
        value = self[key]
        dict.pop(self, key)
        return value

    def __missing__(self, key):
        why = (f"the budget of {self.steps} steps does not draw it in full, so caching it would cost more "
               f"forward passes than it saves" if key in self.given else
               f"this fit has no {key!r} stream (streams: {', '.join(self.given) or 'none'})")
        raise TransferkitError(f"cache_inputs: stream {key!r} is not cached: {why}; cache_inputs must allow for "
                               f"a missing stream (test `{key!r} in inputs`, or use Method.cache_stream)")


#: names of the engine's own fields in a metrics record, which a loss term may not take
RECORD_FIELDS = ("loss", "step", "lr", "val_accuracy", "run", "method")


def _check_terms(method, terms) -> None:
    """A method's loss terms: a non-empty dict of scalar floating tensors, named apart from
    the record's own fields, whose sum has a gradient."""
    check(isinstance(terms, dict), f"method {method.name!r}: losses must return a dict {{name: scalar loss tensor}}, "
                                   f"got {type(terms).__name__}")
    check(len(terms) > 0, f"method {method.name!r} returned no loss term")
    for k, v in terms.items():
        what = f"a tensor of shape {tuple(v.shape)}, {v.dtype}" if isinstance(v, torch.Tensor) else type(v).__name__
        check(isinstance(v, torch.Tensor) and v.dim() == 0 and v.is_floating_point(),
              f"method {method.name!r}: loss term {k!r} must be a scalar floating-point tensor, got {what}")
        check(k not in RECORD_FIELDS, f"method {method.name!r}: a loss term may not be named {k!r} (a field of "
                                      f"the engine's records: {', '.join(RECORD_FIELDS)})")
    check(any(v.requires_grad for v in terms.values()), f"method {method.name!r}: no loss term has a gradient "
                                                        f"(detached terms, or no trainable parameter reaches them)")


def engine_hooks(hooks) -> tuple:
    """``hooks`` as a tuple of functions ``hook(step, state)``: one function, several, or None."""
    takes = f"hooks must be a function hook(step, state) or a tuple of them, got {hooks!r:.80}"
    try:
        out = (hooks,) if callable(hooks) else () if hooks is None else tuple(hooks)
    except TypeError:  # not iterable
        raise TransferkitError(takes) from None
    check(all(callable(h) for h in out), takes)
    for hook in out:
        try:
            signature = inspect.signature(hook)
        except (TypeError, ValueError):  # some built-ins: found out at the first step
            continue
        try:
            signature.bind(0, {})
        except TypeError:
            raise TransferkitError(f"hook {getattr(hook, '__name__', type(hook).__name__)}{signature} cannot be "
                                   f"called as hook(step, state): give a function of these two") from None
    return out


class Engine:
    """Trains a method. ``fit`` is the only entry point; see the module docstring."""

    def __init__(self, config: TrainConfig | None = None, seed: int = 0,
                 checkpoint_dir: str | Path | None = None, metrics_path: str | Path | None = None,
                 hooks: tuple[Callable[[int, dict], None], ...] = (), tensorboard_dir: str | Path | None = None,
                 run_name: str | None = None, select_metric: str = "accuracy", start: str | None = None,
                 label: str | None = None, lr_key: str = "lr"):
        self.label = label  # what the divergence warning calls this training (default: "method 'NAME'")
        self.lr_key = lr_key  # and the setting of its learning rate that it names
        self.start = start  # a digest of the network the caller starts from: a checkpoint begun from another is refused
        self.select_metric = check_select_metric(select_metric)  # what validation (early stopping, best weights) scores
        self.cfg = config or TrainConfig()
        self.run_name = run_name  # tags this training's records in a metrics file shared by several, and its bar
        self.seed = torch_seed(seed)
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.hooks = engine_hooks(hooks)
        self.tensorboard_dir = tensorboard_dir
        self._val_rows = None  # rows per chunk of validation scoring: the images' (evaluate.chunk_rows)
        self._val_layout = None  # and the memory layout each chunk is scored in (the training one)

    # ------------------------------------------------------------------ public
    def fit(self, method, source: Domain | None = None, target: Domain | None = None,
            unlabeled: Domain | None = None, val: Domain | None = None, resume: bool = True) -> FitResult:
        cfg = self.cfg
        cfg.check()
        if self.metrics_path:  # a named pipe or a closed descriptor: refused before the first step, not at it
            check_stream(self.metrics_path)
        t0 = time.perf_counter()
        self.resumed_s = 0.0  # seconds a checkpoint this fit resumes from had trained (FitResult.wall_s counts them)
        torch.manual_seed(self.seed)
        given = {"source": source, "target": target, "unlabeled": unlabeled}
        check_streams(method)
        for name in method.streams:
            check(given.get(name) is not None and len(given[name]) > 0,
                  f"method {method.name!r} needs a non-empty {name} domain")
        for name, d in [(n, given[n]) for n in method.streams if n != "unlabeled"] + [("val", val)]:
            check_labeled(d, f"method {method.name!r}: its {name} domain")
        shape = getattr(method.net, "input_shape", None)  # the channels: a net may take any size (global pooling)
        for name, d in [(n, given[n]) for n in method.streams] + [("val", val)]:
            check(shape is None or d is None or d.images.shape[1] == shape[0],
                  f"the {name} domain {d and d.name!r} has images of {d and d.images.shape[1]} channel(s), the "
                  f"network takes {shape and shape[0]} (Domain.to_format(channels=...) converts them)")
        other_size = other_size_of(method.net, {n: given[n] for n in method.streams} | {"val": val})
        dtypes = parameter_dtypes(method)
        check(dtypes <= {"float32"}, f"method {method.name!r}: its network's parameters are "
                                     f"{', '.join(sorted(dtypes))}; training takes float32 parameters, as the images "
                                     f"are (net.float() converts them; amp: true computes in half precision where it "
                                     f"is safe)")

        device = resolve_device(cfg.device)
        method.prepare(given)
        method.to(device)
        try:
            return self._train(method, given, val, resume, device, other_size, t0)
        except BaseException:
            method.input_cache = {}  # also for a failure before the training loop (a refused checkpoint)
            method.input_unit = method.net.unit_names[0]
            with contextlib.suppress(Exception):
                method.to(memory_format=torch.contiguous_format)
            if device.type != "cpu":  # a failed fit hands the method back on the CPU, as a finished one
                with contextlib.suppress(Exception):  # but never in place of the fit's own error
                    method.to("cpu")
            raise

    def _train(self, method, given: dict, val: Domain | None, resume: bool, device: torch.device,
               other_size, t0: float) -> FitResult:
        """The body of :meth:`fit` once the inputs are checked and the method is on ``device``."""
        cfg = self.cfg
        layout = _train_layout(method, device, cfg.channels_last)
        method.to(memory_format=layout)
        opt = self._optimizer(method)
        base_lrs = [g["lr"] for g in opt.param_groups]
        state = {"step": 0, "best_acc": None, "best_step": 0, "bad_evals": 0, "stopped": False}
        best_weights = None
        last_eval = best_eval = None  # (correctness, loss) of the latest and of the best evaluation
        history: list = []
        signature = self._signature(method, given, val) if self.ckpt is not None else None
        resumed = resume and self.ckpt is not None and (self.ckpt / "last.safetensors").exists()
        if resumed:
            # before the frozen prefix is cached below: its activations come from the checkpoint's weights
            state, best_weights, history = self._load(method, opt, signature, device)
            self.resumed_s = float(state.get("trained_s") or 0.0)  # seconds trained before the stop
            if state["best_acc"] is not None and val is not None and len(val) and self.select_metric == "accuracy":
                # a checkpoint of before 2026-12-01 (c39418c) holds the float32 ratio: its count's exact
                # fraction, as new evaluations give
                state["best_acc"] = round(state["best_acc"] * len(val)) / len(val)
            if history is None:  # a checkpoint from before the history was saved in it: the metrics log
                history = self._logged_history(state["step"])
        state["record"] = history[-1] if history else None  # the last evaluation's, for the hooks
        who = self._who(method)
        if not resumed:  # a NaN running_var gives a finite training loss (batch statistics) and NaN outputs after
            bad = _nonfinite_start(method)
            check(not bad, f"{who}: at step 0 (before any update): {bad}")
        sizes = sum(len(given[n]) for n in method.streams) + (len(val) if val is not None else 0)
        start_unit = self._cacheable_start(method, sizes, given[method.streams[0]].images[:1].to(device), other_size)
        method.input_unit = start_unit
        streams = {}
        for name in method.streams:
            d = given[name]
            x = self._prefix(method, d.images.to(device), start_unit)
            y = None if name == "unlabeled" else d.labels.to(device)
            streams[name] = Stream(name, x, y, cfg.batch_size, self.seed, rank=rank(), world=world_size(),
                                   balanced=cfg.sampler == "balanced", layout=layout)
        method.class_weights = {name: balanced_class_weights(s.y).to(device) for name, s in streams.items()
                                if s.y is not None and cfg.class_weight == "balanced"}
        val_x = val_y = None
        if val is not None and len(val):  # each rank scores its shard; counts are summed over ranks
            check(len(val) >= world_size(), f"the validation domain {val.name!r} has {len(val)} image(s), fewer than "
                                            f"the {world_size()} processes (--nproc) that each score a share of it: "
                                            f"raise val_per_class (or val_fraction) or lower --nproc")
            val_x = self._prefix(method, val.images[rank()::world_size()].to(device), start_unit)
            self._val_rows = chunk_rows(val.images)  # chunks of images, also where val_x holds their activations
            self._val_layout = layout  # each chunk's, as the batches
            val_y = val.labels[rank()::world_size()].to(device)
        loss_fn = method.losses
        if world_size() > 1:
            loss_fn = DistributedDataParallel(_Losses(method), find_unused_parameters=True)
        main = is_main_process()
        writer = _tensorboard(self.tensorboard_dir) if main else None

        modes_stale = True
        show = (BARS and main and shows_progress()) if cfg.progress is None else cfg.progress
        bar = tqdm(total=cfg.steps, initial=state["step"], desc=self.run_name or method.name, leave=False) if show \
            else NoBar()
        if start_unit != method.net.unit_names[0]:  # net(x) on these would run the frozen units again
            method.net.activation_shapes = frozenset(tuple(s.x.shape[1:]) for s in streams.values()) - {
                tuple(given[n].images.shape[1:]) for n in method.streams}
        try:
            if state["step"] < cfg.steps and not state["stopped"]:  # after _load: the fixed networks it restored
                method.input_cache = self._cache_inputs(method, streams, device, layout)
            first_step = state["step"]
            # float64 sums (float32 on MPS, which has none): a window of finite float32 losses of 2e38 overflowed
            summed = torch.float32 if device.type == "mps" else torch.float64
            window = {k: (torch.tensor(total, dtype=summed, device=device), n)  # a stop mid-window keeps it
                      for k, (total, n) in (state.get("loss_window") or {}).items()}
            while state["step"] < cfg.steps and not state["stopped"]:
                step = state["step"]
                p = step / cfg.steps
                factor = SCHEDULES[cfg.schedule](p)
                for g, lr0 in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr0 * factor
                drawn = {n: s.batch(step) for n, s in streams.items()}
                batch = Batch(step=step, progress=p, indices={n: d[1] for n, d in drawn.items()},
                              **{n: d[0] for n, d in drawn.items()})
                if modes_stale:  # at the start and after an evaluation, not every step (~0.15 ms of module walk)
                    method.train_mode()
                    modes_stale = False
                with autocast(device, cfg.amp), size_named(method, other_size, step == first_step), \
                        _labels_named(method, given), _streams_named(method, drawn, step == first_step):
                    terms = loss_fn(batch)
                if step == first_step:
                    _check_terms(method, terms)
                loss = sum(terms.values())
                if step == 0:  # before any update: what a diverged training's losses are measured against
                    state["first_loss"] = float(loss.detach())
                if not torch.isfinite(loss):
                    bad = {k: float(v.detach()) for k, v in terms.items() if not torch.isfinite(v)}
                    why = (_lower_the_rate(method) if step else _before_any_update(method))
                    raise TransferkitError(f"{who}: loss became {float(loss.detach())} at step {step} (terms {bad}); "
                                           f"{why}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                try:
                    opt.step()
                except RuntimeError as e:  # a group's lr (x its lr_mult) or weight decay past float32's range
                    if "without overflow" not in str(e):
                        raise
                    raise TransferkitError(f"{who}: the optimiser's step at step {step} overflowed float32 ({e}): a "
                                           f"parameter group's learning rate (lr {cfg.lr:g} x its multiplier) or "
                                           f"weight decay is too large; {_lower_the_rate(method)}") from None
                for key, value in (("loss", loss), *terms.items()):  # sums since the last evaluation, no sync
                    total, n = window.get(key, (0.0, 0))
                    window[key] = (value.detach().to(summed) + total, n + 1)
                method.after_step(batch)
                state["step"] = step = step + 1
                bar.update(1)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    logged = all_reduce_mean(torch.stack([total / n for total, n in window.values()]))
                    record = {"step": step, **dict(zip(window, logged.tolist())),  # means over the window's steps
                              "lr": cfg.lr * factor}  # a group trains at lr_mult × this
                    window = {}
                    if val_x is not None:
                        acc, last_eval = self._accuracy(method, val_x, val_y)
                        modes_stale = True
                        record["val_accuracy"] = acc
                        if state["best_acc"] is None or acc > state["best_acc"]:
                            state.update(best_acc=acc, best_step=step, bad_evals=0)
                            best_weights, best_eval = _clone_state(method), last_eval
                        else:
                            state["bad_evals"] += 1
                            if cfg.patience is not None and state["bad_evals"] >= cfg.patience:
                                state["stopped"] = True
                    _warn_if_diverged(who, self.lr_key, history, record, cfg, state.get("first_loss"))
                    history.append(record)
                    state["record"] = record  # for the hooks; not checkpointed
                    if self.metrics_path and main:
                        append_jsonl(self.metrics_path, {"method": method.name, "run": self.run_name, **record})
                    if writer is not None:
                        for key, value in record.items():
                            if key != "step":
                                writer.add_scalar(f"{method.name}/{key}", value, step)
                for hook in self.hooks:
                    hook(step, state)
                    modes_stale = True  # a hook may look at or change the modules
                if self.ckpt is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps
                                              or state["stopped"]):
                    kept = _window_sums(window)  # every rank: a collective under torchrun
                    _check_finite_parameters(method, step, who)  # a checkpoint of NaN weights never resumes
                    if main:
                        state["trained_s"] = self.resumed_s + time.perf_counter() - t0  # a resume counts them too
                        state["threads"] = sorted({*state.get("threads", ()), torch.get_num_threads()})  # each run's
                        state["loss_window"] = kept
                        self._save(method, opt, state, best_weights, signature, history, device)
            _check_finite_parameters(method, state["step"], who)
            if resumed and val_x is not None and history:  # evaluations before the stop were not checkpointed
                last_eval, best_eval = self._rescored(method, val_x, val_y, last_eval, best_eval, best_weights)
        finally:  # also when training fails: the method is left as it was handed over, but its weights
            bar.close()
            method.net.activation_shapes = frozenset()
            method.input_cache = {}
            method.input_unit = method.net.unit_names[0]
            method.to(memory_format=torch.contiguous_format)
        if writer is not None:
            writer.close()
        kept_acc = next((r["val_accuracy"] for r in reversed(history) if "val_accuracy" in r), None)
        kept_eval = last_eval
        if cfg.restore_best and best_weights is not None:
            method.load_state_dict(best_weights)
            kept_acc, kept_eval = state["best_acc"], best_eval
        broadcast_state(method)
        method.eval()
        if device.type != "cpu":
            method.to("cpu")  # results and evaluation stay device-agnostic
        best_step = state["best_step"] if state["best_acc"] is not None else state["step"]  # no validation: the last
        return FitResult(steps=state["step"], best_step=best_step, best_val_accuracy=state["best_acc"],
                         stopped_early=state["stopped"] and state["step"] < cfg.steps,
                         wall_s=self.resumed_s + time.perf_counter() - t0, history=history, val_accuracy=kept_acc,
                         diverged=_has_diverged(history, cfg, state.get("first_loss")),
                         **(dict(zip(("val_correct", "val_loss"), kept_eval)) if kept_eval else {}))

    # ------------------------------------------------------------------ helpers
    def _cacheable_start(self, method, n_images: int, sample: torch.Tensor, other_size=None) -> str:
        """First unit from which training must run: every unit before it is frozen, and the
        cached activations of all streams and the validation set fit in ``cache_limit_mb``
        (sized by ``sample``, one image, when the net does not declare its input shape)."""
        net = method.net
        names = net.unit_names
        start = method.frozen_prefix_end() if self.cfg.cache_frozen else None
        if start is None:
            return names[0]
        first = names.index("head" if start == "embedding" else start)
        if start == "embedding":
            shape = (net.embed_dim,)
        elif net.input_shape is not None and not other_size:
            shape = net.unit_output_shapes()[names[first - 1]]
        else:  # e.g. from_sequential without input_shape, or images of another size than it declares
            shape = tuple(self._prefix(method, sample, start).shape[1:])
        if n_images * math.prod(shape) * 4 / 2**20 > self.cfg.cache_limit_mb:
            return names[0]
        return start

    def _cache_inputs(self, method, streams: dict, device, layout: torch.memory_format) -> dict:
        """``method.cache_inputs`` of the streams the whole budget draws in full at least once
        per rank (decided on ``steps``, not on the steps left, so that a resumed fit caches as
        an uninterrupted one does), under the autocast the steps run in."""
        full = StreamInputs({n: s.x for n, s in streams.items()
                             if self.cfg.steps * math.ceil(s.batch_size / s.world) >= len(s.x)},
                            given=list(streams), steps=self.cfg.steps, layout=layout)
        with autocast(device, self.cfg.amp):
            return method.cache_inputs(full)

    @torch.no_grad()
    def _prefix(self, method, images: torch.Tensor, start_unit: str) -> torch.Tensor:
        net = method.net
        if start_unit == net.unit_names[0]:
            return images
        net.eval()
        return frozen_activations(net, images, start_unit)

    def _rescored(self, method, val_x, val_y, last_eval, best_eval, best_weights) -> tuple:
        """``(last_eval, best_eval)`` of a resumed training, whose evaluations before the stop were not
        checkpointed: the same scoring of the same weights (the last ones, or the best ones that
        ``restore_best`` keeps) gives what an uninterrupted training kept, bit for bit (a fallback pass
        from the images would round otherwise)."""
        if last_eval is None and not (self.cfg.restore_best and best_weights is not None):
            last_eval = self._accuracy(method, val_x, val_y)[1]
        if best_eval is None and best_weights is not None and self.cfg.restore_best:
            current = _clone_state(method)
            method.load_state_dict(best_weights)
            best_eval = self._accuracy(method, val_x, val_y)[1]
            method.load_state_dict(current)
        return last_eval, best_eval

    def _who(self, method) -> str:
        """What the refusals and the divergence warning call this training: its label, else the method."""
        return self.label or f"method {method.name!r}"

    def _accuracy(self, method, x: torch.Tensor, y: torch.Tensor) -> tuple[float, tuple | None]:
        """``(selection score, (per-image correctness, mean cross entropy) or None)`` of the
        method on the validation set; the second only where it describes the whole set (one
        rank, the network's own rows)."""
        method.eval()
        layout = self._val_layout
        logits = predict_logits(method.forward_from_input if layout is None else
                                lambda c: method.forward_from_input(_as_layout(c, layout)), x, self._val_rows)
        rows = getattr(method, "eval_rows", None)
        if rows is not None:  # a source head scored on target classes (fitting.fit_for_target)
            logits = logits[:, torch.tensor(rows, device=logits.device)]
        check(bool(torch.isfinite(logits).all()), f"{self._who(method)}: its outputs on the validation images are "
                                                  f"not finite (NaN or infinite): the training diverged; lower the "
                                                  f"learning rate")  # an argmax of NaN rows would count as class 0
        top = int(y.max()) if len(y) else -1
        check(top < logits.shape[1], f"validation labels go up to {top} but {method.name!r} scores "
                                     f"{logits.shape[1]} classes: the validation domain has other classes than the "
                                     f"network's head (no image of class {top} could ever be counted correct)")
        right = logits.argmax(1) == y
        if self.select_metric == "balanced_accuracy":  # per class: images and correct ones, then the mean recall
            width = logits.shape[1]
            counts = torch.stack([torch.bincount(y, minlength=width), torch.bincount(y[right], minlength=width)])
        else:
            counts = torch.tensor([[len(y)], [int(right.sum())]], device=logits.device)
        if world_size() > 1:  # each rank scores its shard: the counts of all
            counts = (all_reduce_mean(counts.double()) * world_size()).round()
        n, correct = (c.long().tolist() for c in counts)
        whole = world_size() == 1 and rows is None
        scored = (right.cpu(), float(torch.nn.functional.cross_entropy(logits, y))) if whole else None
        return mean_recall(correct, n), scored  # exact fractions; one set's counts ranked as the float32 ratio did

    def _optimizer(self, method) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups, owner = [], {}
        for i, g in enumerate(method.param_groups()):  # the method's own dicts are left as they are
            params = list(dict.fromkeys(g["params"]))  # a parameter listed twice would step twice
            for p in params:
                check(owner.setdefault(id(p), i) == i, f"method {method.name!r}: a parameter of shape "
                                                       f"{tuple(p.shape)} is in param groups {owner[id(p)]} and {i}")
            group = {**{k: v for k, v in g.items() if k not in ("lr_mult", "beta1")}, "params": params,
                     "lr": cfg.lr * g.get("lr_mult", 1.0)}
            if g.get("beta1") is not None and cfg.optimizer == "adam":  # Adam's β1 for this group; SGD has none
                group["betas"] = (float(g["beta1"]), 0.999)
            groups.append(group)
        groups = [g for g in groups if g["params"]]
        check(any(p.requires_grad for g in groups for p in g["params"]),
              f"method {method.name!r} has no trainable parameter")
        left = ungrouped_modules(method, owner)
        if left:
            warn(f"method {method.name!r}: {first_named(left)} "
                 f"{'has' if len(left) == 1 else 'have'} parameters with requires_grad that no param group "
                 f"holds, so they are never trained: list them in param_groups(), or, if they are fixed, set "
                 f"requires_grad_(False) on them")
        # foreach: the multi-tensor update, the same arithmetic as PyTorch's CPU default (the
        # per-tensor loop; tested bit-identical) in fewer dispatches. Not fused: that rounds differently.
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                   foreach=True)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)

    def _signature(self, method, given: dict, val) -> str:
        """What a checkpoint must have been trained on to be resumed: method and its options,
        config (but the progress bar and the checkpoint interval), seed and every image and
        label of every stream and of the validation set."""
        cfg = {k: v for k, v in keyed_fields(self.cfg).items() if k not in ("progress", "checkpoint_every")}
        h = hashlib.sha256("|".join([method.name, json.dumps(cfg, sort_keys=True), str(self.seed)]).encode())
        signed = {"method": method.name, **{f"train.{k}": v for k, v in asdict(self.cfg).items()
                                            if k not in ("progress", "checkpoint_every")}, "seed": self.seed}
        if getattr(method, "init_options", None):  # only options not at their defaults (older checkpoints resume)
            h.update(f"|options:{content_text(method.init_options)}".encode())
            signed["options"] = content_text(method.init_options)
        if self.select_metric != "accuracy":  # what chose the kept weights (added 2026-12-02: older ones resume)
            h.update(f"|select:{self.select_metric}".encode())
            signed["select_metric"] = self.select_metric
        if getattr(method, "revision", 0):  # a default changed what it trains: older checkpoints are foreign
            h.update(f"|revision:{method.revision}".encode())
            signed["revision"] = method.revision
        for name, d in list(given.items()) + [("val", val)]:
            if d is not None:
                digest = d.digest()
                h.update(f"|{name}:{len(d)}:{digest}".encode())
                signed[f"{name} images"] = f"{len(d)} ({digest[:8]})"
        self._signed = signed  # what the signature hashes, readable: a refused resume names what differs
        return h.hexdigest()[:16]

    def _logged_history(self, step: int) -> list:
        """Evaluation records up to ``step`` from the metrics log (a step logged again after a
        kill: the last record counts); empty without a log."""
        if not (self.metrics_path and self.metrics_path.is_file()) or is_stream(self.metrics_path):  # /dev/stdout
            return []
        by_step = {r.get("step", 0): {k: v for k, v in r.items() if k not in ("method", "run")}
                   for r in read_jsonl(self.metrics_path) if r.get("run") == self.run_name and r.get("step", 0) <= step}
        return [by_step[s] for s in sorted(by_step)]

    def _save(self, method, opt, state, best_weights, signature, history, device):
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
        if best_weights is not None:
            tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best_weights.items()})
        opt_state = opt.state_dict()
        meta_opt = {}
        for pid, st in opt_state["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optim.{pid}.{k}"] = v.cpu().contiguous()
                else:
                    meta_opt[f"{pid}.{k}"] = v
        tensors["rng"] = torch.get_rng_state()
        if device.type == "cuda":  # dropout on a GPU draws from the generator of the device it trains on; every
            # rank draws alike from the same seed, so rank 0's state is each rank's on its own GPU
            tensors["rng_cuda"] = torch.cuda.get_rng_state(device)
        if torch.backends.mps.is_available():  # dropout on Apple's GPU draws from its own generator
            tensors["rng_mps"] = torch.mps.get_rng_state()
        state = {k: v for k, v in state.items() if k != "record"}
        meta = {"signature": signature, "signed": getattr(self, "_signed", None), "state": state,
                "optim_groups": opt_state["param_groups"],
                "optim_scalars": meta_opt, "has_best": best_weights is not None, "history": history,
                "world_size": world_size(), "start": self.start}
        self.ckpt.mkdir(parents=True, exist_ok=True)
        # one file, one atomic write: the state travels in the safetensors metadata, so weights
        # and step can never come from two different saves; last.json is a readable copy
        save_safetensors(self.ckpt / "last.safetensors", tensors, {"transferkit": json.dumps(meta)})
        write_json(self.ckpt / "last.json", meta)

    def _load(self, method, opt, signature, device):
        path = self.ckpt / "last.safetensors"
        tensors, metadata = load_safetensors(path, "checkpoint", "delete it to train that stage again from its start")
        stored = metadata.get("transferkit")
        meta = json.loads(stored if stored else  # older checkpoints
                          (self.ckpt / "last.json").read_text(encoding="utf-8"))
        if meta["signature"] != signature:
            then, now = meta.get("signed") or {}, getattr(self, "_signed", None) or {}
            differ = [f"{k}: {then.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(then) | set(now))
                      if then.get(k) != now.get(k)] if then else []
            what = first_named(differ, "differences", "; ") if differ else "method, data or config changed"
            raise TransferkitError(f"checkpoint in {self.ckpt} belongs to a different training ({what}); delete it "
                                   f"(or give another checkpoint_dir) to train from the start, or train as it did")
        then = meta.get("world_size", world_size())  # unknown before 2026-12-07: not checked
        check(then == world_size(), f"checkpoint in {self.ckpt} was trained in {then} data-parallel process(es) and "
                                    f"this resume runs {world_size()}: --nproc changes the training (docs/scale.md); "
                                    f"resume with --nproc {then}, or delete it to train that stage from its start")
        then = meta.get("start")  # unknown before 2026-12-07, or not given by the caller: not checked
        check(None in (then, self.start) or then == self.start,
              f"checkpoint in {self.ckpt} began from other weights than this training starts from (the network "
              f"given, fit(net=...), or the source network differs); delete it (or give another checkpoint_dir) to "
              f"train from the start, or start from the network it began from")
        try:
            method.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        except RuntimeError as e:  # e.g. a discriminator built for other layers by an older version
            raise TransferkitError(f"checkpoint in {self.ckpt} holds other modules than this method builds "
                                   f"({str(e).splitlines()[0]}); remove it or use a new run directory") from None
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None
        opt_state = {"state": {}, "param_groups": meta["optim_groups"]}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[key] = v
        for k, v in meta["optim_scalars"].items():
            pid, key = k.split(".", 1)
            opt_state["state"].setdefault(int(pid), {})[key] = v
        try:
            opt.load_state_dict(opt_state)
        except ValueError as e:  # e.g. parameter groups an older version split otherwise
            raise TransferkitError(f"checkpoint in {self.ckpt} holds another optimiser layout than this method "
                                   f"builds ({e}); remove it or use a new run directory") from None
        torch.set_rng_state(tensors["rng"])
        if device.type == "cuda":  # before 2026-12-01 a checkpoint kept every GPU's state as rng_cuda.<index>,
            # as rank 0 saw them: every rank then drew on cuda:0, so a multi-process run takes rank 0's own
            index = 0 if world_size() > 1 else device.index if device.index is not None else \
                torch.cuda.current_device()
            state = tensors.get("rng_cuda", tensors.get(f"rng_cuda.{index}"))
            if state is not None:
                torch.cuda.set_rng_state(state, device)
        if "rng_mps" in tensors and torch.backends.mps.is_available():
            torch.mps.set_rng_state(tensors["rng_mps"])
        return meta["state"], best, meta.get("history")


class _Losses(torch.nn.Module):
    """The method's loss computation as a module, so DistributedDataParallel can wrap it and
    average gradients over ranks for any method."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.losses(batch)


def other_size_of(net, domains: dict) -> str:
    """``""``, or what differs when a domain's images are not of the size the network was
    built for (``input_shape``). A network that cannot take them (a fully-connected unit sized
    for its input) is named now, before anything is cached or trained."""
    shape = getattr(net, "input_shape", None)
    odd = {name: d for name, d in domains.items()
           if shape is not None and d is not None and len(d) and tuple(d.images.shape[2:]) != tuple(shape[1:])}
    if not odd:
        return ""
    name, d = next(iter(odd.items()))
    text = (f"the {name} domain {d.name!r} has images of {'x'.join(map(str, d.images.shape[2:]))} pixels, the "
            f"network was built for {'x'.join(map(str, shape[1:]))}")
    ref = next(net.parameters(), torch.empty(0))
    try:
        with evaluating(net), torch.no_grad():
            for d in odd.values():
                net(d.images[:1].to(ref.device))
    except (RuntimeError, TransferkitError) as e:  # a UnitNet names the input: the message here says more
        h, w = d.images.shape[2:]
        fix = ("resize them to square images (Domain.to_format(size=...)): the built-in backbones take N x N images"
               if h != w else "resize them (Domain.to_format(size=...)) or build the backbone for their size "
                              "(build_backbone(..., image_size=...))")
        raise TransferkitError(f"{text} and cannot take them ({e.__cause__ or e}): {fix}") from e
    return text


@contextlib.contextmanager
def _labels_named(method, given: dict):
    """A training label beyond the classes a loss scores, named with the streams' label ranges (torch says
    only "Target 3 is out of bounds")."""
    try:
        yield
    except IndexError as e:
        if not (str(e).startswith("Target ") and "out of bounds" in str(e)):  # cross entropy's, not another index
            raise
        tops = {name: int(d.labels.max()) for name, d in given.items()
                if name != "unlabeled" and d is not None and d.labels.numel()}
        ranges = ", ".join(f"the {name} domain's go up to {top}" for name, top in tops.items())
        heads = getattr(method.net, "num_classes", None)
        raise TransferkitError(f"method {method.name!r}: a training label is beyond the classes its loss scores "
                               f"({e}): {ranges}{f', the network head scores {heads}' if heads else ''}; build the "
                               f"network for the domain's classes (num_classes=...) or keep its classes "
                               f"(domain.select_classes([...]))") from None


@contextlib.contextmanager
def _streams_named(method, drawn: dict, first: bool):
    """At the first step, a method's losses that read a stream its batch does not have (one it
    did not declare in ``streams``, or ``unlabeled`` of a fit without unlabelled images) fail on
    ``None`` with Python's "cannot unpack non-iterable NoneType object": named here."""
    try:
        yield
    except (TypeError, AttributeError) as e:
        absent = [n for n in STREAMS if n not in drawn]
        if not (first and absent and "NoneType" in str(e)):
            raise
        raise TransferkitError(f"method {method.name!r}: its losses read a stream this batch does not have ({e}): "
                               f"the batch holds only the streams the method declares that the fit has (streams = "
                               f"{tuple(method.streams)!r}; batch.{' / batch.'.join(absent)} is None here); add the "
                               f"stream it reads to its class's streams, or test it for None") from e


@contextlib.contextmanager
def size_named(method, other_size: str, first: bool):
    """At the first step on images of another size than the network's ``input_shape``, an
    error of the method's own modules (sized for ``input_shape``: DSN's private encoders, a
    discriminator on convolutional activations) names the size."""
    try:
        yield
    except (RuntimeError, TransferkitError) as e:
        if not (first and other_size):
            raise
        raise TransferkitError(f"method {method.name!r}: {other_size}, and its own modules were sized for that "
                               f"({e}): resize the images (Domain.to_format(size=...), which makes them square) "
                               f"or build the backbone for their size (build_backbone(..., image_size=...), "
                               f"given to fit as net=)") from e


def _tensorboard(log_dir):
    """A TensorBoard writer when ``log_dir`` is given and ``tensorboard`` is installed."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional `tensorboard` extra is not installed
        return None
    try:
        return SummaryWriter(log_dir=str(log_dir))
    except OSError as e:
        raise TransferkitError(f"cannot write TensorBoard logs to {log_dir}: {e}") from None


def ungrouped_modules(method, grouped) -> list[str]:
    """Names of ``method``'s submodules (a unit of ``net``, another child) with a parameter that
    requires a gradient and is in none of the ids ``grouped`` (of its param groups' parameters):
    a module the method forgot to list, never trained. Children the method declares fixed
    (``frozen_children``, e.g. ADDA's source encoder) are left out on purpose."""
    names, fixed = [], set(getattr(method, "frozen_children", ()))
    for name, p in method.named_parameters():
        parts = name.split(".")
        if parts[0] in fixed:
            continue
        if parts[:2] == ["net", "units"]:  # net.units.conv1.weight: unit net.conv1
            parts = ["net", *parts[2:]]
        where = ".".join(parts[:2] if parts[0] == "net" else parts[:1])
        if p.requires_grad and id(p) not in grouped and where not in names:
            names.append(where)
    return names


def _train_layout(method: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.memory_format:
    """Channels-last on CPU for a method with convolution (4-D) weights, else the default."""
    conv = any(p.dim() == 4 for p in method.parameters())
    return torch.channels_last if channels_last and conv and device.type == "cpu" else torch.contiguous_format


def _as_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    return x.contiguous(memory_format=layout) if x.dim() == 4 else x


def parameter_dtypes(module: torch.nn.Module) -> set[str]:
    """The dtypes (``"float32"``, ...) of ``module``'s floating-point parameters: training and
    scoring take float32 ones, as the images are."""
    return {str(p.dtype).replace("torch.", "") for p in module.parameters() if p.is_floating_point()}


def content_text(value) -> str:
    """A stable text for a value (a method's options in checkpoint signatures, a benchmark job's
    settings): tensors and modules by content, domains by their digest, containers item by
    item, anything else by its ``repr`` without memory addresses."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        return f"T{tuple(t.shape)}{t.dtype}:" + hashlib.sha256(t.view(-1).view(torch.uint8).numpy()).hexdigest()[:16]
    if isinstance(value, torch.nn.Module):
        return type(value).__name__ + content_text(value.state_dict())
    if isinstance(value, Domain):
        return f"D{len(value)}:{value.digest()}"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "{" + ",".join(f"{k!r}:{content_text(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(content_text(v) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(content_text(v) for v in value)) + "}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return without_addresses(repr(value))


def _clone_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


#: progress bars by default (``progress=None``: runtime.shows_progress): off in the worker processes of a
#: pool, whose bars would share one line, and on ranks other than 0
BARS = True

#: a window's mean loss this many times the loss before any update (or :data:`DIVERGED_FLOOR`) says the training
#: diverged
DIVERGED_FACTOR = 1000.0
#: the smallest loss that growth is measured from: a loss of 1e-6 before any update that grows to 1e-3 is still small
DIVERGED_FLOOR = 0.1


def _divergence_limit(history: list[dict], cfg: TrainConfig, first: float | None) -> tuple | None:
    """``(first loss, when it was measured, the limit past which a window's mean loss says the training
    diverged)``: :data:`DIVERGED_FACTOR` times the loss before any update (``first``; a checkpoint without
    it: the first window's mean) or :data:`DIVERGED_FLOOR`, whichever is larger in size; None without a loss."""
    at = "before any update"
    if first is None:
        first = next((r["loss"] for r in history if r.get("loss") is not None), None)  # a metrics line's null: none
        at = f"the first {cfg.eval_every} steps"
    if first is None:
        return None
    return first, at, DIVERGED_FACTOR * max(abs(first), DIVERGED_FLOOR)  # in size: a plugin may maximise terms


def _warn_if_diverged(who: str, lr_key: str, history: list[dict], record: dict, cfg: TrainConfig,
                      first: float | None) -> None:
    """Warn, once per fit, when a window's mean loss grew (in size) past the :func:`_divergence_limit`:
    a learning rate far too high gives finite losses of 1e16 (or 0.1 to 1e3 from a good start) and rows
    at chance level, which would otherwise pass as results."""
    measured = _divergence_limit(history, cfg, first)
    if measured is None or "loss" not in record:
        return
    first, at, limit = measured
    if abs(record["loss"]) > limit and all(abs(r.get("loss") or 0.0) <= limit for r in history):  # the first past it
        warn(f"{who}: the training loss grew from {first:.3g} ({at}) to {record['loss']:.3g} by step "
             f"{record['step']}: the training diverged, and its results are not worth reading; lower the learning "
             f"rate ({lr_key} {cfg.lr:g})")


def _has_diverged(history: list[dict], cfg: TrainConfig, first: float | None) -> bool:
    """Whether a window's mean loss in ``history`` grew past the :func:`_divergence_limit`."""
    measured = _divergence_limit(history, cfg, first)
    return measured is not None and any(abs(r.get("loss") or 0.0) > measured[2] for r in history)


#: the buffers that training updates and evaluation reads (BatchNorm's running statistics), checked for NaN
#: and infinity with the parameters; other buffers only for NaN (an attention mask holds -inf on purpose)
RUNNING_STATISTICS = ("running_mean", "running_var")


def _nonfinite_parameters(method) -> str:
    """The names of ``method``'s parameters and running statistics (:data:`RUNNING_STATISTICS`) that
    hold NaN or infinite values, and of its other floating-point buffers that hold NaN (the first four), or ""."""
    # a finite sum has finite terms, so each value is checked only where a tensor's sum is not finite
    buffers = [(name, b) for name, b in method.named_buffers() if b.is_floating_point()]
    weights = [*method.named_parameters(),
               *((f"{name} (a buffer)", b) for name, b in buffers if name.rpartition(".")[2] in RUNNING_STATISTICS)]
    bad = [name for name, p in weights
           if not bool(torch.isfinite(p.detach().sum())) and not bool(torch.isfinite(p.detach()).all())]
    bad += [f"{name} (a buffer)" for name, b in buffers if name.rpartition(".")[2] not in RUNNING_STATISTICS
            and bool(torch.isnan(b.detach().sum())) and bool(torch.isnan(b.detach()).any())]
    return ", ".join(bad[:4]) + (" ..." if len(bad) > 4 else "")


def _lower_the_rate(method) -> str:
    """The advice for a loss that became NaN or infinite after an update: lower the learning rate, or, where
    the method sets a learning-rate multiplier option (``*lr_mult``) above 1, that option too."""
    from .methods.base import method_options  # the methods import this module
    high = {name: value for name in method_options(type(method)) if name.endswith("lr_mult")
            for value in [getattr(method, name, None)]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1}
    if not high:
        return "lower the learning rate"
    listed = ", ".join(f"{name}={value:g}" for name, value in high.items())
    return (f"lower the learning rate, or the method's learning-rate multiplier option{'s' if len(high) > 1 else ''} "
            f"above 1 ({listed}; a parameter group trains at lr × its multiplier)")


def _nonfinite_start(method) -> str:
    """Why the starting weights cannot train, or "": :func:`_nonfinite_parameters`' names."""
    bad = _nonfinite_parameters(method)
    if bad:
        return (f"the starting weights hold NaN or infinite values ({bad}): the network given (net=, a pretrained: "
                f"file) or a cached pre-training that diverged")
    return ""


def _before_any_update(method) -> str:
    """Why a loss is not finite at step 0, when no update has run: the starting weights, else the
    method's options or the data."""
    return _nonfinite_start(method) or ("no update has run yet, so the learning rate is not the cause: the "
                                        "method's options (a weight, temperature or scale) or the data give it")


def _check_finite_parameters(method, step: int, who: str) -> None:
    """Refuse weights (:func:`_nonfinite_parameters`: parameters, running statistics, NaN buffers) that became
    NaN or infinite (an update diverged while the loss was still finite): saved, a checkpoint of them would fail
    again on every resume; returned, the model predicts one class."""
    bad = _nonfinite_parameters(method)
    check(not bad, f"{who}: parameters {bad} became NaN or infinite by step {step} (the loss was "
                   f"still finite): lower the learning rate")
