"""Reusable domain adaptation losses (the discriminator losses of seed 000 eq. 3/4 live in
:mod:`transferkit.discriminators`).

* :func:`grad_reverse` -- DANN's gradient reversal layer (seed 003, Ganin & Lempitsky 2015):
  identity forward, ``-λ ·`` gradient backward.
* :func:`dann_lambda` -- ``λ_p = 2 / (1 + exp(-10 p)) - 1`` (seed 003).
* :func:`mmd2` -- multi-kernel Gaussian MMD² (DDC, seed 003; DAN's kernel family).
* :func:`coral` -- Deep CORAL ``||C_s - C_t||_F² / (4 d²)``.
* :func:`entropy` -- mean Shannon entropy of softmax predictions.
* :func:`difference_loss`, :func:`scale_invariant_mse` -- DSN's orthogonality and
  reconstruction losses (seed 003, Bousmalis et al. 2016).
* :func:`frozen_call` -- run a module with detached parameters: its output carries gradient
  to the inputs only (the encoder's step of an adversarial game, seed 000 eq. 4).

Each loss is also an ``nn.Module`` (options at construction, tensors to ``forward``, options in
``repr``): :class:`GradientReversal`, :class:`MMDLoss`, :class:`CoralLoss`, :class:`EntropyLoss`,
:class:`MinimumClassConfusionLoss`, :class:`DifferenceLoss`, :class:`ScaleInvariantMSELoss`.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .errors import check
from .runtime import in_float32


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-coeff`` in the backward pass."""
    return _GradReverse.apply(x, float(coeff))


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """Seed 003: ``λ_p = 2 / (1 + exp(-γ p)) - 1`` with ``p`` the training progress in [0, 1]."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b).pow(2)


@in_float32
def mmd2(source: torch.Tensor, target: torch.Tensor, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
         bandwidth: float | None = None) -> torch.Tensor:
    """Biased (V-statistic) multi-kernel MMD² between two samples (rows, flattened):

        MMD² = mean k(s, s') + mean k(t, t') - 2 mean k(s, t),   k = Σ_i exp(-||a - b||² / (c_i σ²))

    ``σ²`` is the mean squared distance over all ordered pairs of the pooled sample of size
    ``N``, self-pairs included (detached; ``(N-1)/N`` times the mean over distinct pairs,
    -0.8 % at the benchmark's 64 + 64) unless ``bandwidth`` is given; ``c_i`` are ``scales``.
    Exactly 0 for identical samples. The distances come from ``torch.cdist``'s matrix form
    (``||a||² + ||b||² - 2 a·b`` beyond 25 rows), which loses float32 digits when the features share
    a large offset (about 10 % of the value at an offset of 10³ with 128 features); MMD does not
    change under a common shift, so centre such features first."""
    check(len(scales) > 0 and all(c > 0 for c in scales), f"mmd2: scales must be non-empty and > 0, got {scales!r}")
    check(bandwidth is None or bandwidth > 0, f"mmd2: bandwidth must be > 0, got {bandwidth!r}")
    s, t = _flat_pair("mmd2", source, target)
    check(len(s) >= 1 and len(t) >= 1, f"mmd2 needs a sample or more per domain, got {len(s)} source and {len(t)} "
                                        f"target")
    x = torch.cat([s, t])
    d = _sq_dists(x, x)
    sigma2 = d.detach().mean().clamp_min(1e-8) if bandwidth is None else float(bandwidth) ** 2
    k = sum(torch.exp(-d / (c * sigma2)) for c in scales)
    n = len(s)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def _flat_pair(who: str, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target as rows of flattened features (``N x ...`` each, of one width), named in the refusal."""
    check(source.dim() >= 2 and target.dim() >= 2,
          f"{who} needs N x D (or N x ...) source and target features, a row per sample, got shapes "
          f"{tuple(source.shape)} and {tuple(target.shape)}")
    s, t = source.flatten(1), target.flatten(1)
    _check_pair(who, s, t)
    return s, t


def _check_pair(who: str, s: torch.Tensor, t: torch.Tensor) -> None:
    """Source and target features (flattened) of the same width, named in the refusal."""
    check(s.shape[1:] == t.shape[1:], f"{who}: source and target features must have the same width, got "
                                      f"{s.shape[1]} source and {t.shape[1]} target features per sample (features of "
                                      f"one layer of one network)")


def covariance(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / max(len(x) - 1, 1)


#: feature width above which :func:`coral` works with ``n x n`` Gram matrices instead of ``d x d`` covariances
CORAL_GRAM_WIDTH = 2048


@in_float32
def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL (Sun & Saenko 2016): ``||C_s - C_t||_F² / (4 d²)`` with unbiased covariances.

    For wide features (``d > CORAL_GRAM_WIDTH`` and more than the samples, e.g. a feature
    map) the same value comes from Gram matrices, with ``A = X̄_s / sqrt(n_s - 1)`` and ``B =
    X̄_t / sqrt(n_t - 1)`` (centred): ``||AᵀA - BᵀB||² = ||AAᵀ||² + ||BBᵀ||² - 2 ||ABᵀ||²``,
    in ``O(n² d)`` memory-light steps instead of two ``d x d`` matrices (2.1 GiB each for
    a 24,000-wide map). The difference cancels large terms: when ``C_s ≈ C_t`` the value
    (clamped at 0) is less precise than the direct form's, the gradient stays close to it."""
    s, t = _flat_pair("coral", source, target)
    check(len(s) >= 2 and len(t) >= 2,
          f"coral needs 2 samples or more per domain for a covariance, got {len(s)} source and {len(t)} target (in "
          f"training a batch holds train.batch_size images, or all of a smaller domain's: raise train.batch_size, or "
          f"give each domain 2 images or more)")
    d = s.shape[1]
    if d <= CORAL_GRAM_WIDTH or d <= len(s) + len(t):
        return (covariance(s) - covariance(t)).pow(2).sum() / (4 * d * d)
    a = (s - s.mean(0, keepdim=True)) / max(len(s) - 1, 1) ** 0.5
    b = (t - t.mean(0, keepdim=True)) / max(len(t) - 1, 1) ** 0.5
    gram = (a @ a.T).pow(2).sum() + (b @ b.T).pow(2).sum() - 2 * (a @ b.T).pow(2).sum()
    return gram.clamp_min(0) / (4 * d * d)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``-Σ_c p_c log p_c`` with ``p = softmax(logits)`` (nats); a ``-inf`` logit (a
    masked class) adds ``0 log 0 = 0``, with zero gradient."""
    check(logits.dim() == 2 and len(logits) > 0, f"entropy needs N x C logits of one sample or more, got shape "
                                                 f"{tuple(logits.shape)}")
    logp = F.log_softmax(logits, 1)
    return -(logp.exp() * logp.masked_fill(torch.isneginf(logp), 0)).sum(1).mean()


@in_float32
def minimum_class_confusion(logits: torch.Tensor, temperature: float = 2.5,
                            detach_weights: bool = True) -> torch.Tensor:
    """MCC loss (Jin et al., ECCV 2020) of a target batch of ``B`` logits over ``K``
    classes: ``Y = softmax(logits / T)``; ``W_ii = B (1 + exp(-H(Y_i))) / Σ_j (1 + exp(-H(Y_j)))``;
    ``C = Y^T W Y``; ``C~_jk = C_jk / Σ_k' C_jk'``; ``L = (1/K) Σ_j Σ_{k≠j} C~_jk``. With
    ``detach_weights`` (default) ``W`` carries no gradient, as in the authors' code (it
    detaches the entropies); ``detach_weights=False`` lets the gradient flow through ``W``
    too, as SKADA's ``mcc_loss`` does: the same value, another gradient."""
    check(logits.dim() == 2 and logits.shape[0] > 0,
          f"logits must be a non-empty B x K matrix, got shape {tuple(logits.shape)}")
    check(temperature > 0, f"minimum_class_confusion: temperature must be > 0, got {temperature!r}")
    check(len(logits) >= 2, "mcc needs 2 target samples or more per batch: the class confusion of one sample is "
                            "(K - 1) / K whatever it predicts, so the term would train nothing; a batch holds "
                            "train.batch_size images, or all of a smaller domain's: raise train.batch_size to 2 or "
                            "more (for a run: in a new run, as a resume keeps its config), or give the unlabelled "
                            "target 2 images or more")
    y = F.softmax(logits / temperature, dim=1)
    h = -(y * torch.log(y.clamp_min(1e-12))).sum(1)
    if detach_weights:
        h = h.detach()
    w = 1 + torch.exp(-h)
    w = len(y) * w / w.sum()
    c = (y * w[:, None]).t() @ y
    c = c / c.sum(1, keepdim=True).clamp_min(torch.finfo(c.dtype).tiny)  # a class no sample scores: its row is 0
    return (c.sum() - c.trace()) / y.shape[1]


@in_float32
def difference_loss(shared: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
    """DSN's soft orthogonality ``||H_cᵀ H_p||_F²`` between shared (``B × d_c``) and private
    (``B × d_p``) codes, normalised as the authors' implementation does it (the scale their
    loss weight β was set on): each code centred over the batch, each row L2-normalised,
    and the squared entries of the ``d_c × d_p`` matrix ``H_cᵀ H_p`` averaged (``/ (d_c d_p)``;
    the entries are sums over the batch, so the value grows with the batch size). Both codes
    are of the same ``B`` samples."""
    check(shared.dim() == 2 and private.dim() == 2 and len(shared) == len(private),
          f"difference_loss needs B x d_c shared and B x d_p private codes of the same B samples, got shapes "
          f"{tuple(shared.shape)} and {tuple(private.shape)}")
    hc = F.normalize(shared - shared.mean(0, keepdim=True), dim=1)
    hp = F.normalize(private - private.mean(0, keepdim=True), dim=1)
    return (hc.T @ hp).pow(2).mean()


@in_float32
def scale_invariant_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """DSN's reconstruction loss ``(1/k)||x - x̂||² - (1/k²)(Σ(x - x̂))²`` per sample, averaged;
    ``x`` and ``x̂`` are ``N x ...`` of one shape (no broadcasting)."""
    check(x.dim() >= 2 and x.shape == x_hat.shape,
          f"scale_invariant_mse needs an input and its reconstruction of the same N x ... shape, got "
          f"{tuple(x.shape)} and {tuple(x_hat.shape)}")
    diff = (x - x_hat).flatten(1)
    k = diff.shape[1]
    return (diff.pow(2).sum(1) / k - diff.sum(1).pow(2) / k**2).mean()


def frozen_call(module: torch.nn.Module, *args, **kwargs):
    """``module(*args)`` with its parameters detached: gradients reach the inputs, never the
    module's parameters (buffers are used as they are)."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return functional_call(module, params, args, kwargs)


class _LossModule(torch.nn.Module):
    """A loss function of this module as an ``nn.Module`` (PyTorch's loss convention): its options
    given once, at construction, shown by ``repr``; ``forward`` takes the tensors the function takes."""

    loss: Callable[..., torch.Tensor]  # the function, a staticmethod of each subclass

    def __init__(self, **options):
        super().__init__()
        known = [n for n, p in inspect.signature(type(self).loss).parameters.items() if p.default is not p.empty]
        unknown = next((k for k in options if k not in known), None)
        if unknown is not None:  # a subclass without a constructor of its own: refused here, not at forward
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown!r}; it takes "
                            f"{', '.join(known) or 'none'}")
        self.options = options

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return type(self).loss(*tensors, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class GradientReversal(_LossModule):
    """:func:`grad_reverse` as a layer: identity forward, ``-coeff ·`` gradient backward (seed 003)."""

    loss = staticmethod(grad_reverse)

    def __init__(self, coeff: float = 1.0):
        super().__init__(coeff=coeff)


class MMDLoss(_LossModule):
    """:func:`mmd2`: ``forward(source, target)``, the multi-kernel MMD² (DDC, seed 003)."""

    loss = staticmethod(mmd2)

    def __init__(self, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), bandwidth: float | None = None):
        super().__init__(scales=tuple(scales), bandwidth=bandwidth)


class CoralLoss(_LossModule):
    """:func:`coral`: ``forward(source, target)``, Deep CORAL's ``||C_s - C_t||_F² / (4 d²)``."""

    loss = staticmethod(coral)


class EntropyLoss(_LossModule):
    """:func:`entropy`: ``forward(logits)``, the mean Shannon entropy of the softmax predictions."""

    loss = staticmethod(entropy)


class MinimumClassConfusionLoss(_LossModule):
    """:func:`minimum_class_confusion`: ``forward(logits)`` of a target batch (Jin et al. 2020)."""

    loss = staticmethod(minimum_class_confusion)

    def __init__(self, temperature: float = 2.5, detach_weights: bool = True):
        super().__init__(temperature=temperature, detach_weights=detach_weights)


class DifferenceLoss(_LossModule):
    """:func:`difference_loss`: ``forward(shared, private)``, DSN's soft orthogonality (seed 003)."""

    loss = staticmethod(difference_loss)


class ScaleInvariantMSELoss(_LossModule):
    """:func:`scale_invariant_mse`: ``forward(x, x_hat)``, DSN's reconstruction loss (seed 003)."""

    loss = staticmethod(scale_invariant_mse)
