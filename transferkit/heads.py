"""Classifier heads acting on ``N x D`` embeddings: linear, cosine (Baseline++) and prototype.

Every head exposes ``in_features`` (D), ``out_features`` and ``num_classes`` so that
:class:`~transferkit.backbones.UnitNet` can read its sizes without a dry run.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import TransferkitError, UnknownNameError, check, class_ids, is_whole


class LinearHead(nn.Linear):
    """A plain linear classifier ``W f + b`` (keeps ``nn.Linear``'s ``weight``/``bias`` names)."""

    def __init__(self, dim: int, num_classes: int, bias: bool = True):
        super().__init__(dim, num_classes, bias=bias)

    @property
    def num_classes(self) -> int:
        return self.out_features


def _check_scale(scale, metric: str = "cosine") -> None:
    """Refuse a scale that is not a finite number > 0; a ``sqeuclidean`` prototype head, which keeps it for
    ``metric="cosine"`` (and a saved network stores it), is told that its metric does not use it."""
    why = ("logits = scale * cos" if metric == "cosine" else
           f"metric {metric!r} does not use it: leave it out; the head keeps it for metric='cosine' and a saved "
           f"network stores it")
    check(isinstance(scale, numbers.Real) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0,
          f"{'a cosine' if metric == 'cosine' else f'a {metric} prototype'} head needs a finite scale > 0 ({why}), "
          f"got {scale!r}")


class CosineHead(nn.Module):
    """Cosine classifier: ``logits = s * cos(w_c, f)`` (Baseline++ of Chen et al., seed 004; their
    ``distLinear`` also learns a norm per class, ``2 * g_c * cos``, which this head does not).

    Logits are bounded by ``|s|`` in absolute value. ``s`` is learned when ``learn_scale``.
    """

    def __init__(self, dim: int, num_classes: int, scale: float = 10.0, learn_scale: bool = True):
        super().__init__()
        self.in_features, self.out_features = dim, num_classes
        _check_scale(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        s = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(s)
        else:
            self.register_buffer("scale", s)

    @property
    def num_classes(self) -> int:
        return self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes x D`` per-class means of ``features`` (differentiable; vectorised).

    Raises :class:`TransferkitError` if a class has no sample.
    """
    labels = class_ids(labels)
    check(features.dim() == 2 and labels.shape[0] == features.shape[0],
          f"class_means needs N x D features and N labels, got {tuple(features.shape)} "
          f"and {tuple(labels.shape)}")
    labels = labels.to(features.device)
    if labels.numel():
        check(int(labels.min()) >= 0 and int(labels.max()) < num_classes,
              f"labels out of range [0, {num_classes - 1}]")
    counts = torch.bincount(labels, minlength=num_classes)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise TransferkitError(f"cannot compute prototypes: no samples for class(es) {missing}")
    sums = features.new_zeros(num_classes, features.shape[1]).index_add(0, labels, features)
    return sums / counts.unsqueeze(1).to(features.dtype)


def common_dtype(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` in the dtype both promote to (float64 with float32: float64), for a product of the two."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


#: the metrics of :func:`prototype_logits` and :class:`PrototypeHead`
PROTOTYPE_METRICS = ("sqeuclidean", "cosine")


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor, metric: str = "sqeuclidean",
                     scale: float = 10.0) -> torch.Tensor:
    """Logits ``-||f - p_c||^2`` (``sqeuclidean``) or ``scale * cos(f, p_c)`` (``cosine``).

    The squared distance is expanded as ``||f||² − 2 f·p + ||p||²`` (one matrix product), which
    loses float32 precision when the features share a large offset (norms in the thousands);
    centre such features, or use ``cosine``. Centring here would change every few-shot table's
    last digits, so it is left to the caller. Features and prototypes of two dtypes are computed
    in the one both promote to."""
    check(features.dim() == 2 and prototypes.dim() == 2 and features.shape[1] == prototypes.shape[1],
          f"prototype logits need N x D features and C x D prototypes, got {tuple(features.shape)} and "
          f"{tuple(prototypes.shape)}")
    features, prototypes = common_dtype(features, prototypes)
    if metric == "sqeuclidean":
        d = (features.pow(2).sum(1, keepdim=True) - 2 * features @ prototypes.t()
             + prototypes.pow(2).sum(1).unsqueeze(0))
        return -d.clamp_min(0)
    if metric == "cosine":
        return scale * F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).t()
    raise UnknownNameError("prototype metric", metric, list(PROTOTYPE_METRICS))


class PrototypeHead(nn.Module):
    """Nearest-class-mean classifier (prototypical networks); prototypes are buffers set by :meth:`fit`.

    ``metric="sqeuclidean"``: logits are minus squared distances; ``"cosine"``: ``scale * cos``. The
    scale must be a finite number > 0 whatever the metric (the head keeps it, and a saved network stores it).
    """

    def __init__(self, dim: int, num_classes: int, metric: str = "sqeuclidean", scale: float = 10.0):
        super().__init__()
        if metric not in PROTOTYPE_METRICS:
            raise UnknownNameError("prototype metric", metric, list(PROTOTYPE_METRICS))
        _check_scale(scale, metric)
        self.in_features, self.out_features = dim, num_classes
        self.metric, self.scale = metric, float(scale)
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return self.out_features

    @property
    def fitted(self) -> bool:
        return bool((self.counts > 0).all())

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> PrototypeHead:
        """Set each prototype to the mean of its class's ``features`` (every class needs a sample)."""
        check(features.dim() == 2 and features.shape[1] == self.in_features,
              f"PrototypeHead.fit expects N x {self.in_features} features, got {tuple(features.shape)}")
        features = features.detach().to(self.prototypes)
        labels = class_ids(labels).to(features.device)
        self.prototypes.copy_(class_means(features, labels, self.num_classes))
        self.counts.copy_(torch.bincount(labels, minlength=self.num_classes))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check(self.fitted, "PrototypeHead has no prototypes yet: call fit(features, labels) first")
        return prototype_logits(x.to(self.prototypes.dtype), self.prototypes, self.metric, self.scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, metric={self.metric}"


HEADS = {"linear": LinearHead, "cosine": CosineHead, "prototype": PrototypeHead}


def list_heads() -> list[str]:
    return sorted(HEADS)


class HeadRows(nn.Module):
    """``head(x)[:, rows]``: the outputs ``rows`` of any other head, in that order."""

    def __init__(self, head: nn.Module, rows: list[int]):
        super().__init__()
        self.head = head
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long))
        self.in_features, self.out_features = getattr(head, "in_features", None), len(rows)

    @property
    def num_classes(self) -> int:
        return self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)[:, self.rows]

    def extra_repr(self) -> str:
        return f"rows={self.rows.tolist()}"


def _has_state(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None or next(module.buffers(), None) is not None


def final_layer(head: nn.Module) -> tuple[list[str], nn.Module] | None:
    """Where the class rows of ``head`` are: ``([], head)`` for a linear layer (``nn.Linear``,
    :class:`LinearHead`) or a :class:`CosineHead`; ``(path, layer)`` for such a layer that is
    the last layer with parameters or buffers of an ``nn.Sequential`` head (nested ones too;
    only layers without state, such as a softmax, may follow it), e.g.
    ``nn.Sequential(Linear(576, 128), ReLU(), Dropout(), Linear(128, 10))`` gives
    ``(["3"], Linear(128, 10))``. ``None`` for any other head: a module of one's own, whose
    forward may do anything with its layers, or a :class:`PrototypeHead` (class means, not
    trained rows)."""
    if isinstance(head, (nn.Linear, CosineHead)) and not nn.parameter.is_lazy(head.weight):
        return [], head
    if isinstance(head, nn.Sequential):
        for name, child in reversed(list(head.named_children())):
            if not _has_state(child):
                continue
            found = final_layer(child)
            return None if found is None else ([name, *found[0]], found[1])
    return None


def _new_rows_layer(old: nn.Module, num_classes: int) -> nn.Module:
    """A fresh layer of ``old``'s kind (linear, or cosine with its scale) over ``num_classes``."""
    if isinstance(old, CosineHead):
        learn = isinstance(old.scale, nn.Parameter)
        return CosineHead(old.in_features, num_classes, scale=float(old.scale.detach()), learn_scale=learn)
    return LinearHead(old.in_features, num_classes, bias=old.bias is not None)


def retargeted_head(head: nn.Module, rows: list[int | None]) -> nn.Module | None:
    """A copy of ``head`` whose outputs are ``len(rows)`` classes: output ``t`` is ``head``'s
    output ``rows[t]`` (its row of the final layer copied: weight, bias) or a new row
    (``None``, initialised as a new layer's). Only the final layer (:func:`final_layer`) is
    replaced, by a new one of its kind (linear, cosine): the layers before it (the hidden
    layers of an MLP head) are kept with their weights. ``None`` when ``head`` has no final
    layer to retarget. A :class:`HeadRows` (a head narrowed to some rows) is unwrapped."""
    if isinstance(head, HeadRows):
        inner = [None if r is None else int(head.rows[r]) for r in rows]
        return retargeted_head(head.head, inner)
    found = final_layer(head)
    if found is None:
        return None
    path, old = found
    new = _new_rows_layer(old, len(rows))
    ref = old.weight
    new = new.to(device=ref.device, dtype=ref.dtype)
    new.train(old.training)
    with torch.no_grad():
        for t, s in enumerate(rows):
            if s is None:
                continue
            new.weight[t] = old.weight[s]
            if getattr(old, "bias", None) is not None and getattr(new, "bias", None) is not None:
                new.bias[t] = old.bias[s]
    if not path:
        return new
    out = copy.deepcopy(head)  # the caller's head (its hidden layers) stays as it was
    parent = out.get_submodule(".".join(path[:-1])) if len(path) > 1 else out
    setattr(parent, path[-1], new)
    return out


def head_for_classes(head: nn.Module, rows: list[int], num_outputs: int | None = None) -> nn.Module:
    """A head whose outputs are ``head``'s outputs ``rows``, in that order: for the heads of
    this module a copy whose parameters and buffers with one row per class are indexed (the
    rest, a cosine scale, is kept); any other head is wrapped (:class:`HeadRows`). Its
    logits equal ``head(x)[:, rows]``."""
    n = getattr(head, "out_features", num_outputs)
    check(n is not None and all(0 <= r < n for r in rows), f"head rows must lie in [0, {n - 1 if n else '?'}], "
                                                          f"got {rows}")
    if type(head) not in HEADS.values():
        return HeadRows(head, rows)
    out = copy.deepcopy(head)
    idx = torch.tensor(rows, dtype=torch.long)
    for module in out.modules():
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if t.dim() >= 1 and t.shape[0] == n:
                value = t.detach()[idx.to(t.device)].clone()
                if isinstance(t, nn.Parameter):
                    setattr(module, name, nn.Parameter(value, requires_grad=t.requires_grad))
                else:
                    setattr(module, name, value)
    out.out_features = len(rows)
    return out


def make_head(kind: str, dim: int, num_classes: int, **kw) -> nn.Module:
    """Build a head by name: ``linear``, ``cosine`` or ``prototype`` (extra ``kw`` go to its constructor)."""
    if kind not in HEADS:
        raise UnknownNameError("head", kind, HEADS)
    check(is_whole(num_classes, 1), f"a head needs a whole num_classes >= 1, got {num_classes!r}")
    check(is_whole(dim, 1), f"a head needs a whole input size >= 1, got {dim!r}")
    try:
        inspect.signature(HEADS[kind]).bind(dim, num_classes, **kw)
    except TypeError as e:
        raise TransferkitError(f"{kind} head: {e}") from None
    return HEADS[kind](dim, num_classes, **kw)
