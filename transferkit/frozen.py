"""Activations of a network's frozen leading units, kept across fits in one process.

Fits often share a frozen prefix: the linear probes of a benchmark's label subsets and
seeds start from copies of one network and score the same validation and test images. The
engine computes the activations of the units before the first trained one once per fit
(``engine``'s module docstring); this memo keeps the most recently used of them, so that the
next fit, or the evaluation of the next method, on the same content reads them instead of
running the units again; a longer prefix of the same images runs on from the longest shorter
one stored (flex's candidates). A hit is bit-identical to running the units.

Only a prefix whose output is determined by what the key holds is memoised: images on the
CPU and no autocast; a :class:`~transferkit.backbones.UnitNet` with UnitNet's own
``forward_units``; every module of the prefix, submodules included, of a class of PyTorch
(``torch.nn``) or of transferkit, without forward hooks or pre-hooks (and no global module
hook) and without a function kept in an attribute (an instance's own ``forward``). Anything
else (a module class of one's own, whose output may depend on state outside the module; a
timm or torchvision model; a GPU) runs the units as before.

The key holds the images (bytes, shape, strides, dtype); for every module of the prefix its
name, class (its identity in the process), attributes (tensors and arrays by content, other
values by ``repr``), parameters and buffers, persistent or not (shape, strides, dtype,
bytes); the thread count and the CPU backend's settings (oneDNN on or off, float32 matmul
precision, deterministic algorithms). An entry is stored only when each chunk of the
activations, as computed, has the strides of its slice of the stored tensor, so the units
after the prefix see the same memory layout on a hit. Entries stay in CPU memory, least
recently used dropped first beyond ``limit_mb``: ``$TRANSFERKIT_FROZEN_MEMO_MB`` (default
1024, ``0`` turns the memo off; read at each store, and inherited by worker processes and DDP
ranks) or ``MEMO.limit_mb``. Within :meth:`FrozenMemo.owned_by` (``Transfer.predict``, ``score``),
an entry lives only as long as the caller's images. The key costs about 1 ms per megabyte hashed (2,000 colour 28-px
images and a LeNet: 23 ms, against 1.2 s for their forward pass on one thread); a miss holds
the activations twice for a moment (the result and the stored copy), a scoring miss (``then``) once:
each chunk is written into one tensor as it is computed. A unit that changes its input images in place
(an in-place activation first) does not do so on a hit.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import weakref
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
from torch import nn

from .backbones import UnitNet
from .errors import TransferkitError
from .evaluate import chunk_rows, module_device, predict_logits

LIMIT_ENV = "TRANSFERKIT_FROZEN_MEMO_MB"
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_OWN_CLASSES = ("torch.nn.", "transferkit.")


def limit_from_env() -> float:
    """Megabytes the memo may hold: ``$TRANSFERKIT_FROZEN_MEMO_MB``, default 1024."""
    value = os.environ.get(LIMIT_ENV, "").strip()
    if not value:
        return 1024.0
    try:
        mb = float(value)
    except ValueError:
        mb = float("nan")
    if not mb >= 0:
        raise TransferkitError(f"{LIMIT_ENV}={value!r}: expected megabytes, a number >= 0 (0 turns the memo off)")
    return mb


def _feed(h, value, depth: int = 0) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        h.update(f"T{tuple(t.shape)}{t.stride()}{t.dtype}{t.device}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        h.update(f"A{value.shape}{value.dtype}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)) and depth < 8:
        h.update(f"{type(value).__name__}[{len(value)}".encode())
        for v in value:
            _feed(h, v, depth + 1)
    elif isinstance(value, dict) and depth < 8:
        h.update(f"dict[{len(value)}".encode())
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _feed(h, value[k], depth + 1)
    else:
        h.update(f"R{value!r}".encode())


def _backend() -> str:
    return (f"threads={torch.get_num_threads()}|onednn={torch.backends.mkldnn.enabled}|"
            f"matmul={torch.get_float32_matmul_precision()}|det={torch.are_deterministic_algorithms_enabled()}")


def hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook or pre-hook is set on one of ``modules`` (not their submodules)."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _global_hooks() -> bool:
    mod = nn.modules.module
    return bool(getattr(mod, "_global_forward_hooks", None) or getattr(mod, "_global_forward_pre_hooks", None))


def _memoisable(modules: list[nn.Module]) -> bool:
    """No hook, only classes of torch.nn and transferkit, and no function kept in an attribute
    (e.g. an instance's own ``forward``: its ``repr`` need not tell two apart)."""
    subs = [s for m in modules for s in m.modules()]
    return (not _global_hooks() and not hooked(*subs)
            and all(type(s).__module__.startswith(_OWN_CLASSES) for s in subs)
            and not any(callable(v) and not isinstance(v, (nn.Module, torch.Tensor))
                        for s in subs for k, v in vars(s).items() if k not in _MODULE_INTERNALS))


def prefix_key(modules: list[nn.Module], images: torch.Tensor) -> str:
    """The content key of running ``modules`` in order on ``images`` in eval mode."""
    return prefix_keys(modules, images)[-1]


def prefix_keys(modules: list[nn.Module], images: torch.Tensor) -> list[str]:
    """:func:`prefix_key` of ``modules[:1]``, ``modules[:2]``, ... ``modules`` (one pass)."""
    h, keys = hashlib.sha256(_backend().encode()), []
    _feed(h, images)
    for i, m in enumerate(modules):
        for name, sub in m.named_modules(prefix=str(i)):
            cls = type(sub)
            h.update(f"|{name}:{cls.__module__}.{cls.__qualname__}#{id(cls)}".encode())
            for k in sorted(set(vars(sub)) - _MODULE_INTERNALS):
                h.update(f"@{k}".encode())
                _feed(h, vars(sub)[k])
            for k, t in (*sub._parameters.items(), *sub._buffers.items()):
                h.update(f"${k}".encode())
                _feed(h, t)
        keys.append(h.copy().hexdigest())
    return keys


class FrozenMemo:
    """Least-recently-used store ``key -> activations`` of at most ``limit_mb`` megabytes."""

    def __init__(self, limit_mb: float | None = None):
        self._limit_mb = limit_mb  # None: $TRANSFERKIT_FROZEN_MEMO_MB when used (a bad value: a named error then,
        # not a traceback at import)
        self.hits = self.misses = self.extended = 0  # extended: misses that ran on from a shorter prefix
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0  # of the stored tensors, kept as they come and go (a sum per store grew with the entries)
        self._owned: dict[str, weakref.finalize] = {}  # an entry's drop when its owner goes (owned_by)

    @property
    def limit_mb(self) -> float:
        return limit_from_env() if self._limit_mb is None else self._limit_mb

    @limit_mb.setter
    def limit_mb(self, value: float) -> None:
        self._limit_mb = value

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        for drop in self._owned.values():
            drop.detach()
        self._store.clear()
        self._owned.clear()
        self._bytes = 0
        self.hits = self.misses = self.extended = 0

    def megabytes(self) -> float:
        return self._bytes / 2**20

    def _drop(self, key: str | None = None) -> None:
        """Remove ``key`` (``None``: the least recently used entry) and its owner's drop."""
        key, out = self._store.popitem(last=False) if key is None else (key, self._store.pop(key, None))
        drop = self._owned.pop(key, None)
        if drop is not None:
            drop.detach()
        if out is not None:
            self._bytes -= out.numel() * out.element_size()

    def key(self, net, images: torch.Tensor, stop: str) -> str | None:
        """The key of ``net.forward_units(images, 0, stop)``, or ``None`` when that prefix is
        not memoised (see the module's docstring)."""
        keys = self.keys(net, images, stop)
        return keys[-1] if keys else None

    def keys(self, net, images: torch.Tensor, stop: str) -> list[str] | None:
        """The keys of ``net``'s prefixes of 1, 2, ... steps up to ``stop`` (the last:
        :meth:`key`), or ``None`` when that prefix is not memoised."""
        if self.limit_mb <= 0 or images.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return None
        if not isinstance(net, UnitNet) or type(net).forward_units is not UnitNet.forward_units:
            return None
        modules = net.steps_before(stop)
        return prefix_keys(modules, images) if modules and _memoisable(modules) else None

    def longest_stored(self, net, keys: list[str]) -> tuple[str, torch.Tensor] | None:
        """The first unit after the longest shorter prefix (of feature units) whose activations
        are stored, with a copy of them: a longer prefix of the same images runs only the units
        after it (flex's candidates: conv1, then conv1-conv2, ...). ``None`` when none is."""
        for j in range(min(len(keys) - 1, len(net.feature_names) - 1), 0, -1):
            stored = self._store.get(keys[j - 1])
            if stored is not None:
                self._store.move_to_end(keys[j - 1])
                self.extended += 1
                return net.feature_names[j], stored.clone()
        return None

    def get(self, key: str | None) -> torch.Tensor | None:
        """A copy of the stored activations (the caller owns it), or ``None``."""
        if key is None or key not in self._store:
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return self._store[key].clone()

    def put(self, key: str | None, out: torch.Tensor | None, copy: bool = True) -> None:
        """Store ``out`` (activations whose chunks, as computed, had the strides of their slices
        of it: :func:`frozen_activations` checks) when it fits in the limit; ``None``: a miss whose
        activations were not kept; ``copy=False``: ``out`` is the memo's own, which nothing else holds."""
        if key is None:
            return
        self.misses += 1
        if out is None:
            return
        owner = _OWNER.get()
        if out.device.type != "cpu" or out.numel() * out.element_size() / 2**20 > self.limit_mb:
            return
        self._drop(key)
        if owner is not None:  # kept while the images it was computed from are (a predict of new images)
            try:
                self._owned[key] = weakref.finalize(owner, self._drop, key)
            except TypeError:  # no weak reference to it: not kept at all (nor copied)
                return
        self._store[key] = out.detach().clone() if copy else out.detach()
        self._bytes += out.numel() * out.element_size()
        while self.megabytes() > self.limit_mb:
            self._drop()

    @contextlib.contextmanager
    def owned_by(self, images):
        """Within it, entries stored are dropped once ``images`` (the caller's object: a tensor, an
        array, a domain's images; a view's base) is garbage-collected: a service predicting new images
        at every call fills no memo with activations that can never be read again."""
        while getattr(images, "_base", None) is not None or isinstance(getattr(images, "base", None), np.ndarray):
            images = images._base if isinstance(images, torch.Tensor) else images.base  # t[:4]: t's lifetime
        token = _OWNER.set(images)
        try:
            yield
        finally:
            _OWNER.reset(token)


#: the object whose lifetime bounds the entries stored now (:meth:`FrozenMemo.owned_by`)
_OWNER: contextvars.ContextVar = contextvars.ContextVar("transferkit_frozen_owner", default=None)
#: the process's memo (the engine, ``Method.logits``, ``extract_features``)
MEMO = FrozenMemo()


@torch.no_grad()
def frozen_activations(net, images: torch.Tensor, stop: str, then: Callable | None = None) -> torch.Tensor:
    """``net.forward_units(images, 0, stop)`` (the net in eval mode), in chunks as
    :func:`~transferkit.evaluate.predict_logits` runs them, read from :data:`MEMO` when the
    same prefix ran on the same images before; with ``then``, ``then`` of each chunk of those
    activations (on a miss, of the chunk just computed, as one forward pass runs it)."""
    keys = MEMO.keys(net, images, stop)
    key = keys[-1] if keys else None
    hit = MEMO.get(key)
    device = module_device(net)  # chunks run where the net is
    rows = chunk_rows(images)  # the images' chunks, whether images or stored activations are run
    if hit is not None:
        return hit if then is None else predict_logits(then, hit, rows, device=device)
    # a shorter prefix stored: its chunks (the same boundaries and strides) feed the units after it
    start, inputs = (MEMO.longest_stored(net, keys) if keys else None) or (0, images)
    n, kept, outs, alike = len(inputs), None, [], True  # each chunk goes into one tensor of n rows, not a list
    for i in range(0, n, rows):
        h = net.forward_units(inputs[i:i + rows].to(device or inputs.device, copy=True), start, stop)
        if then is None:
            h = h.to(inputs.device)
        if i == 0 and (then is None or key is not None and h.device.type == "cpu"  # the result, or stored:
                       and h[:1].numel() * h.element_size() * n / 2**20 <= MEMO.limit_mb):  # within the memo's limit
            kept = _rows_like(h, n)
        if kept is not None:
            part = kept[i:i + len(h)]
            alike = alike and part.stride() == h.stride()  # a hit feeds the next units the layout a miss gave them
            part.copy_(h)
            if not alike and then is not None:  # not stored: no need to keep them
                kept = None
        if then is not None:
            outs.append(then(h).to(inputs.device))  # then may change its input in place: kept holds a copy
    if then is None:
        out = kept if kept is not None else torch.empty(0)
        MEMO.put(key, out if alike else None)  # a copy: the caller owns out
        return out
    MEMO.put(key, kept, copy=False)
    return torch.cat(outs) if outs else torch.empty(0)


class KeptRows:
    """The chunks of one prefix's activations over ``n`` images that a caller ran itself (flex's proxies run
    the base network's units once for every candidate, tap its units once for every unit's features), gathered
    as :func:`frozen_activations` keeps them (each chunk's strides) and stored under ``key`` by :meth:`store`:
    the next frozen prefix of the same images (the engine's, tap's logits) reads them. Only for chunks
    computed as :func:`frozen_activations` computes them (the net in eval mode, its chunks of the images, a
    copy of each). ``beside``: the others kept at the same time (this one among them, or not), which share
    the memo's limit with it: the first to start is kept first."""

    def __init__(self, key: str | None, n: int, beside: list | None = None):
        self.key, self.n, self.rows, self.beside = key, n, None, [] if beside is None else beside

    def megabytes(self) -> float:
        return 0.0 if self.rows is None else self.rows.numel() * self.rows.element_size() / 2**20

    def add(self, start: int, h: torch.Tensor) -> None:
        """Chunk ``h``, the activations of rows ``start:`` (chunks in order from 0)."""
        if self.key is None:
            return
        if start == 0 and h.device.type == "cpu" and h[:1].numel() * h.element_size() * self.n / 2**20 <= \
                MEMO.limit_mb - sum(k.megabytes() for k in self.beside if k is not self):
            self.rows = _rows_like(h, self.n)
        part = None if self.rows is None else self.rows[start:start + len(h)]
        if part is None or part.stride() != h.stride():  # not the layout a miss gives: not stored
            self.key = self.rows = None
            return
        part.copy_(h)

    def store(self) -> None:
        MEMO.put(self.key, self.rows, copy=False)


def _rows_like(h: torch.Tensor, n: int) -> torch.Tensor:
    """An empty tensor of ``n`` rows laid out as the chunk ``h``'s rows (its strides, where ``h`` is
    dense with its rows outermost; else contiguous), on ``h``'s device."""
    row, expected, dense = h[0], 1, True
    for stride, size in sorted((s, z) for s, z in zip(row.stride(), row.shape) if z != 1):
        dense, expected = dense and stride == expected, expected * size
    if dense and h.stride(0) == row.numel():
        return torch.empty_strided((n, *h.shape[1:]), h.stride(), dtype=h.dtype, device=h.device)
    return torch.empty((n, *h.shape[1:]), dtype=h.dtype, device=h.device)
