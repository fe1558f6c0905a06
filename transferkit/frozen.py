"""Activations of a network's frozen leading units, kept across fits in one process.

Fits often share a frozen prefix: the linear probes of a benchmark's label subsets and
seeds start from copies of one network and score the same validation and test images. The
engine computes the activations of the units before the first trained one once per fit
(``engine``'s module docstring); this memo keeps the most recently used of them, so that the
next fit, or the evaluation of the next method, on the same content reads them instead of
running the units again.

Keyed by content, never by object: the prefix's modules (type, ``repr``, the plain settings
of every submodule, every weight and buffer with its shape, strides and bytes), the images
(bytes, shape, dtype, device) and the thread count. A changed weight, setting, image or
memory layout is another key, so a hit returns what running the units would return, bit for
bit, and a stale entry is never read. Entries are kept in CPU memory and dropped least
recently used first beyond ``limit_mb`` (``MEMO.limit_mb = 0`` turns the memo off). The key
costs about 1 ms per megabyte hashed (2,000 colour 28-px images and a LeNet: 23 ms, against
1.2 s for its forward pass on one thread).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from .backbones import UnitNet

_PLAIN = (bool, int, float, str, tuple, type(None))


def _update(h, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{tuple(t.shape)}{t.stride()}{t.dtype}{t.device}".encode())
    h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def prefix_key(modules: list[nn.Module], images: torch.Tensor) -> str:
    """The content key of running ``modules`` in order on ``images``."""
    h = hashlib.sha256(f"threads={torch.get_num_threads()}".encode())
    _update(h, images)
    for m in modules:
        settings = [sorted((k, v) for k, v in vars(sub).items()  # what a repr may leave out (a scale, a flag)
                           if not k.startswith("_") and k != "training" and isinstance(v, _PLAIN))
                    for sub in m.modules()]  # (the units always run in eval mode here)
        text = f"{type(m).__module__}.{type(m).__qualname__}:{m!r}:{settings!r}"
        h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", text).encode())
        for name, t in m.state_dict().items():
            h.update(name.encode())
            if isinstance(t, torch.Tensor):
                _update(h, t)
            else:  # a module's extra state
                h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(t)).encode())
    return h.hexdigest()


class FrozenMemo:
    """Least-recently-used store ``key -> activations`` of at most ``limit_mb`` megabytes."""

    def __init__(self, limit_mb: float = 1024):
        self.limit_mb = limit_mb
        self.hits = self.misses = 0
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0

    def megabytes(self) -> float:
        return sum(t.numel() * t.element_size() for t in self._store.values()) / 2**20

    def activations(self, modules: list[nn.Module], images: torch.Tensor,
                    compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, the output of ``modules`` on ``images``, or a copy of it stored by an
        earlier call with the same content. The caller owns the returned tensor."""
        if self.limit_mb <= 0 or not modules:
            return compute()
        key = prefix_key(modules, images)
        if key in self._store:
            self._store.move_to_end(key)
            self.hits += 1
            return self._store[key].to(images.device, copy=True)
        self.misses += 1
        out = compute()
        if out.numel() * out.element_size() / 2**20 <= self.limit_mb:
            self._store[key] = out.detach().to("cpu", copy=True)  # never holds accelerator memory
            while self.megabytes() > self.limit_mb:
                self._store.popitem(last=False)
        return out


#: the process's memo, used by the engine (``TrainConfig.cache_frozen``) and by ``Method.logits``
MEMO = FrozenMemo()


def frozen_activations(net, images: torch.Tensor, stop: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, the activations ``net.forward_units(images, 0, stop)`` in eval mode, read
    from :data:`MEMO` when the same prefix content ran on the same images before (not for a
    network class with its own ``forward_units``: the key describes what UnitNet's runs)."""
    if type(net).forward_units is not UnitNet.forward_units:
        return compute()
    return MEMO.activations(net.steps_before(stop), images, compute)
