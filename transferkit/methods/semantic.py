"""Transfer across domains and tasks with few labels (seed 000 §3 and the baselines of §4.1).

``lext`` (label-efficient transfer, seed 000's full model), eq. 1:

    L = L_sup(X^T, Y^T) + α L_DT(X^S, X~^T) + β L_ST(X^S, X^T, X~^T)

* L_sup: cross entropy of the (new) classifier on the k labelled target examples per class.
* L_DT (§3.2, eq. 2-4): multi-layer domain adversarial loss between the source network's
  activations of source images and the target network's activations of unlabelled target
  images (:func:`~transferkit.discriminators.multilayer_discriminator`).
* L_ST (§3.3, eq. 8) = eq. 5 + eq. 6 + eq. 7 with the similarity ψ(x, s) = <s / |s|, f(x)>
  (normalised support feature, unnormalised query feature; "implementation details"):

  - eq. 5: ``H(softmax(v_s(x~)/τ_s))``, similarity of each unlabelled target embedding to the
    source support (per-class source prototypes, or the source examples of the batch);
  - eq. 6: metric cross entropy of each labelled target embedding against the labelled
    target class centroids, ``-log softmax(v_t(x))_y``;
  - eq. 7: ``H(softmax(v_t(x~)/τ_t))`` against the same centroids.

Deviations: sums over samples (eq. 5-7) are means over the batch; centroids of eq. 6/7 are
those of the classes present in the labelled batch (all of them when the batch holds the
whole labelled set, the usual few-shot case; not when k groups of views outnumber the batch,
as in the grouped benchmark, docs/fewshot.md); the default prediction rule is ψ against
the labelled centroids (``predict="centroids"``), where the seed does not say how the full
model predicts (``predict="head"``: the classifier).
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from ..discriminators import (
    check_layer_order,
    default_layers,
    discriminator_loss,
    inverted_label_loss,
    multilayer_discriminator,
)
from ..engine import FitResult
from ..errors import check, class_ids, warn, whole_valued
from ..evaluate import predict_logits
from ..frozen import frozen_activations, hooked
from ..heads import class_means, common_dtype, prototype_logits
from ..losses import frozen_call
from ..unitnet import EMBEDDING, UnitNet
from .adaptation import resolve_layers
from .base import Method, register
from .finetune import Finetune


def similarity(queries: torch.Tensor, support: torch.Tensor, query_scale: float | None = None) -> torch.Tensor:
    """ψ of seed 000: ``N x S`` dot products of the unnormalised queries with the
    L2-normalised support features. With ``query_scale = s`` the queries are normalised
    too and scaled by ``s`` (``s · cos``; a transferkit option, not the seed's ψ). Queries and
    support of two dtypes are computed in the one both promote to."""
    check(queries.dim() == 2 and support.dim() == 2 and queries.shape[1] == support.shape[1],
          f"similarity needs N x D queries and S x D support features, got {tuple(queries.shape)} and "
          f"{tuple(support.shape)}")
    check(len(support) > 0, "similarity needs at least one support feature, got none")
    queries, support = common_dtype(queries, support)
    if query_scale is not None:
        queries = query_scale * F.normalize(queries, dim=1)
    return queries @ F.normalize(support, dim=1).t()


def similarity_entropy(queries: torch.Tensor, support: torch.Tensor, tau: float,
                       query_scale: float | None = None) -> torch.Tensor:
    """Seed 000 eq. 5 / eq. 7: mean entropy of ``softmax(ψ(x, support) / τ)`` over queries."""
    check(tau > 0, f"the temperature tau must be positive, got {tau}")
    check(len(queries) > 0, "the entropy of eq. 5 / 7 needs at least one query, got none")
    logp = F.log_softmax(similarity(queries, support, query_scale) / tau, dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def present_class_means(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids of the classes present in ``labels`` and the labels re-indexed onto them."""
    present, index = torch.unique(labels, return_inverse=True)
    return class_means(features, index, len(present)), index


def metric_cross_entropy(features: torch.Tensor, labels: torch.Tensor,
                         query_scale: float | None = None) -> torch.Tensor:
    """Seed 000 eq. 6: mean over labelled examples of ``-log softmax(ψ(x, c))_y`` with ``c``
    the class centroids of the same labelled examples."""
    labels = class_ids(labels)
    check(len(labels) == len(features) > 0, f"metric cross entropy needs one label per feature row, got "
                                             f"{len(labels)} labels for {tuple(features.shape)} features")
    centroids, index = present_class_means(features, labels)
    return F.cross_entropy(similarity(features, centroids, query_scale), index)


@torch.no_grad()
def embedded_class_means(net, domain) -> torch.Tensor:
    """Per-class means of ``net``'s embeddings of ``domain``'s images (on the net's device)."""
    dev = next(net.parameters()).device
    feats = predict_logits(lambda x: net.forward_features(x.to(dev)), domain.images).to(dev)
    return class_means(feats, domain.labels.to(dev), domain.num_classes)


def _warn_unused(method: str, switch: str, weight: float, options: dict) -> None:
    """Warn of options given other values than their defaults while ``switch`` = 0 turns their term off."""
    changed = [k for k, (value, default) in options.items() if value != default]
    if weight == 0 and changed:
        one = len(changed) == 1
        warn(f"{method}: {switch}=0 turns off the term that {', '.join(changed)} configure{'s' if one else ''}: "
             f"{'it has' if one else 'they have'} no effect")


@register
class SemanticTransfer(Method):
    """Seed 000's full model (eq. 1-8), see the module docstring.

    Source encoder: a frozen copy of the pre-trained source network (blue in seed 000
    Figure 1); the target network (green) starts from the same weights and is the one
    trained. The discriminator therefore compares source activations under the source
    network with target activations under the target network (as ADDA, seed 000 §3.2), and
    the support of eq. 5 is fixed: per-class prototypes of the whole source train set
    computed once (``source_support="prototypes"``) or the source batch's examples
    (``"examples"``).

    One optimiser step updates both players without mixing their gradients:
    ``dt_disc`` (eq. 3) is computed on detached activations, so only the discriminator gets
    its gradient; ``dt_encoder`` (α · eq. 4) runs the discriminator through
    :func:`~transferkit.losses.frozen_call` (detached parameters), so only the target
    encoder gets its gradient.

    Options: ``alpha``, ``beta`` (0.1, 0.1), ``tau_source`` (2), ``tau_target`` (1), ``gamma``
    (0.1, decay of eq. 2, Table 1), ``combine`` (``sum``/``concat``), ``discriminator``
    (``auto``/``fc``/``conv``, as for ``multilayer_adv``), ``layers`` (default, seed 000's
    implementation details as written: the last three units, logits included, when source and
    target have as many classes, as Table 5 does for SVHN 0-4 -> MNIST 5-9, whose label sets
    differ; else the second and third last; the logits are compared column by column, the
    source network's against the target network's, whatever the classes' names; ``head`` may
    be listed only when the numbers of classes agree), weights
    ``source_entropy``, ``metric_ce``, ``target_entropy`` of the three L_ST terms (1 each;
    ablations set one to 0), ``source_support``, ``disc_lr_mult``, ``predict`` (``centroids``,
    default: ψ against the labelled target class centroids, the metric of eq. 6; ``head``:
    the linear classifier trained by L_sup), ``query_scale`` (``None``: the seed's ψ with
    the unnormalised target feature; a number ``s``: ``ψ = s · cos``, which removes the
    feature-norm shortcut of eq. 5 and 7).
    """

    unit_interval_options = ("gamma",)  # the decay of eq. 2
    name = "lext"
    streams = ("source", "target", "unlabeled")
    needs_every_class = True  # eq. 6 / 7 and prediction use every target class's labelled centroid
    built_before_retarget = True  # source_net keeps the pre-trained source classifier
    description = "seed 000 full model: target CE + multi-layer adversarial + semantic transfer (eq. 1-8)"

    def __init__(self, net, alpha: float = 0.1, beta: float = 0.1, tau_source: float = 2.0,
                 tau_target: float = 1.0, gamma: float = 0.1, combine: str = "sum", layers=None,
                 source_support: str = "prototypes", source_entropy: float = 1.0, metric_ce: float = 1.0,
                 target_entropy: float = 1.0, disc_lr_mult: float = 1.0, predict: str = "centroids",
                 query_scale: float | None = None, discriminator: str = "auto"):
        super().__init__(net)
        self.query_scale = None if query_scale is None else float(query_scale)
        check(source_support in ("prototypes", "examples"),
              f"source_support must be 'prototypes' or 'examples', got {source_support!r}")
        check(predict in ("head", "centroids"), f"predict must be 'head' or 'centroids', got {predict!r}")
        self.predict = predict
        self.alpha, self.beta = float(alpha), float(beta)
        self.tau_source, self.tau_target = float(tau_source), float(tau_target)
        self.gamma, self.combine, self.discriminator_kind = gamma, combine, discriminator
        self.layers = None if layers is None else resolve_layers(net, layers, [])
        if self.layers is not None:
            check_layer_order(net, self.layers)  # now, not when prepare() builds the discriminator
        self.source_support = source_support
        self.weights = {"source_entropy": source_entropy, "metric_ce": metric_ce, "target_entropy": target_entropy}
        self.disc_lr_mult = disc_lr_mult
        _warn_unused(self.name, "alpha", self.alpha, {"gamma": (gamma, 0.1), "combine": (combine, "sum"),
                     "layers": (layers, None), "disc_lr_mult": (disc_lr_mult, 1.0),
                     "discriminator": (discriminator, "auto")})
        _warn_unused(self.name, "beta", self.beta, {"tau_source": (tau_source, 2.0), "tau_target": (tau_target, 1.0),
                     "source_support": (source_support, "prototypes"), "source_entropy": (source_entropy, 1.0),
                     "metric_ce": (metric_ce, 1.0), "target_entropy": (target_entropy, 1.0)})
        self.source_net = copy.deepcopy(net).eval().requires_grad_(False)
        self.discriminator = None
        self.register_buffer("source_prototypes", torch.zeros(0, net.embed_dim))
        self._prototype_source = None  # the source domain whose prototypes cache_inputs computes
        self.register_buffer("target_centroids", torch.zeros(0, net.embed_dim))
        self._labeled = None  # the labelled target while it trains (the centroids of predict="centroids")

    # ---- setup -------------------------------------------------------------------------
    def check_classes(self, source_classes, target_classes) -> None:
        """``layers`` naming ``head`` needs as many source as target classes (refused before any
        pre-training, as :meth:`prepare` would refuse it after)."""
        if self.layers is not None and "head" in self.layers and source_classes is not None and \
                target_classes is not None:
            n_s, n_t = len(source_classes), len(target_classes)
            check(n_s == n_t, f"layers may include 'head' only when source and target have as many classes "
                              f"(seed 000 Table 5: 5 and 5); here {n_s} and {n_t}")

    def prepare(self, domains: dict) -> None:
        super().prepare(domains)
        source, target = domains.get("source"), domains.get("target")
        self._labeled = target
        # seed 000's rule as written: as many output classes -> the last three (Table 5 reads the logits of
        # SVHN 0-4 -> MNIST 5-9); until 2026-12-03 the class-name lists were compared (docs/fewshot.md)
        same = source is not None and target is not None and source.num_classes == target.num_classes
        self.layers = self.layers or default_layers(self.net, same)
        if "head" in self.layers:  # source logits (source network) vs target logits (target network)
            n_s, n_t = source.num_classes, target.num_classes
            check(n_s == n_t, f"layers may include 'head' only when source and target have as many classes "
                              f"(seed 000 Table 5: 5 and 5); here {n_s} and {n_t}")
            check(self.source_net.num_classes == n_s,
                  f"layers include 'head' but the source copy's head has {self.source_net.num_classes} outputs for "
                  f"{n_s} source classes: " + ("the network has no classifier (as after reset_classifier(0)): give "
                                              "it one trained on the source classes"
                                              if self.source_net.num_classes == 0 else
                                              "build the method before the head is given the target classes"))
        if self.alpha > 0 and self.discriminator is None:
            self.discriminator = multilayer_discriminator(self.net, self.layers, self.discriminator_kind,
                                                          gamma=self.gamma, combine=self.combine)
        if self._uses_prototypes():  # computed in cache_inputs: from the cached source features when there are
            missing = [n for n, c in zip(source.class_names, source.class_counts().tolist()) if c == 0]
            check(not missing, f"{self.name}: eq. 5 compares with a prototype of every source class, but the source "
                               f"domain {source.name!r} has no image of class(es) {missing[:10]}; leave them out of "
                               f"the source (source_classes) or set source_support: examples")
            self.source_prototypes = torch.zeros(source.num_classes, self.net.embed_dim)
            self._prototype_source = source

    def extra_results(self) -> dict:
        """The discriminator's layers as the fit resolved them (none before a fit, or with
        ``alpha`` 0, which builds no discriminator)."""
        return {"layers": list(self.layers)} if self.layers and self.discriminator is not None else {}

    def _uses_prototypes(self) -> bool:
        return bool(self.beta > 0 and self.weights["source_entropy"] and self.source_support == "prototypes")

    @torch.no_grad()
    def _set_prototypes(self, feats: torch.Tensor | None = None) -> None:
        """Eq. 5's per-class source prototypes, from ``feats`` (the fixed source network's
        embedding of every source image, in order) or from a pass over the source domain; on
        the source network's device, where the losses compare with them."""
        source, self._prototype_source = self._prototype_source, None
        dev = next(self.source_net.parameters()).device
        net = self.source_net
        if feats is None and isinstance(net, UnitNet) and not hooked(net) \
                and type(net).forward_features is UnitNet.forward_features:  # the same pass as another job's
            net.eval()  # of this source network: read from (or stored in) transferkit.frozen's memo
            feats = frozen_activations(net, source.images, EMBEDDING)
        if feats is None:  # a source the fit does not cache: its images are where the domain keeps them
            net.eval()
            feats = predict_logits(lambda x: net.forward_features(x.to(dev)), source.images)
        self.source_prototypes = class_means(feats.float().to(dev), source.labels, source.num_classes)  # fp32 (amp)

    def load_state_dict(self, state_dict, *args, **kwargs):
        out = super().load_state_dict(state_dict, *args, **kwargs)
        if "source_prototypes" in state_dict:  # a resumed fit: they come from the checkpoint
            self._prototype_source = None
        return out

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        try:
            fit = super().fit_transfer(make_engine, source=source, target=target, unlabeled=unlabeled, val=val)
            if self.predict == "centroids":
                self.target_centroids = self._labelled_centroids()
        finally:  # training is over: a saved model keeps no domain
            self._prototype_source, self._labeled, self._eval_centroids = None, None, None
        return fit

    def _labelled_centroids(self) -> torch.Tensor:
        return embedded_class_means(self.net, self._labeled)

    def _centroids(self) -> torch.Tensor | None:
        """The centroids ``predict="centroids"`` compares with: while the labelled target is
        attached (in training, or after a bare ``Engine.fit``), its class means under the
        current weights (once per evaluation); once fitted, the stored ones; else ``None``."""
        if getattr(self, "_labeled", None) is not None:
            if getattr(self, "_eval_centroids", None) is None:  # once per evaluation, not per chunk
                self._eval_centroids = self._labelled_centroids()
            return self._eval_centroids
        return self.target_centroids if len(self.target_centroids) else None

    def forward_from_input(self, x: torch.Tensor) -> torch.Tensor:
        """In evaluation (the engine's validation), predict as :meth:`forward` will: with
        ``predict="centroids"``, by ψ against the labelled centroids of the current network,
        so that early stopping selects the classifier that is evaluated; once fitted, by the
        centroids :meth:`forward` uses."""
        if self.predict == "centroids" and not self.training and (centroids := self._centroids()) is not None:
            return similarity(self.net.forward_features(x), centroids, self.query_scale)
        return super().forward_from_input(x)

    def train(self, mode: bool = True):
        self._eval_centroids = None  # eval() starts an evaluation; the weights may have changed since the last
        return super().train(mode)

    @property
    def predicts_with_net(self) -> bool:
        return self.predict == "head"  # centroids: ψ against the labelled target centroids

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.predict == "centroids" and (centroids := self._centroids()) is not None:
            return similarity(self.net.forward_features(images), centroids, self.query_scale)
        return self.net(images)

    def param_groups(self):
        groups = super().param_groups()
        if self.discriminator is not None:
            groups.append({"params": list(self.discriminator.parameters()), "lr_mult": self.disc_lr_mult})
        return groups

    def train_mode(self) -> None:
        super().train_mode()
        self.source_net.eval()

    # ---- losses ------------------------------------------------------------------------
    def _reads_source_features(self) -> bool:
        return self.discriminator is not None or self.source_support == "examples"

    @torch.no_grad()
    def source_features(self, x: torch.Tensor) -> dict:
        """The fixed source network's activations that the losses read (eval mode): ``layers``
        for the discriminator, ``embedding`` for the source support."""
        layers = self.layers if self.discriminator is not None else []
        return self.source_net.forward_features(x, list(dict.fromkeys(layers + ["embedding"])))

    def cache_inputs(self, inputs):
        """The source network is fixed: its activations of every source image are computed
        once per fit instead of at every step, and the prototypes are their class means."""
        cache = {}
        if self._reads_source_features():
            cache = self.cache_stream(inputs, "source_features", self.source_features, self.source_net)
        if self._prototype_source is not None:
            self._set_prototypes(cache["source_features"]["embedding"] if cache else None)
        return cache

    def losses(self, batch):
        (x_s, _), (x_t, y_t), x_u = batch.source, batch.target, batch.unlabeled
        n_t = len(x_t)
        taps = list(dict.fromkeys(self.layers + ["embedding", "head"]))
        acts = self.net.forward_features(torch.cat([x_t, x_u]), taps)
        terms = {"ce_target": self.cross_entropy(acts["head"][:n_t], y_t)}
        src = {"embedding": None}
        if self._reads_source_features():
            src = self.cached_rows("source_features", batch.indices.get("source"), lambda: self.source_features(x_s))
        if self.discriminator is not None:
            tgt = [acts[n][n_t:] for n in self.layers]
            src_act = [src[n] for n in self.layers]
            d_s, d_t = self.discriminator(src_act, [a.detach() for a in tgt])
            terms["dt_disc"] = discriminator_loss(d_s, d_t)
            if self.discriminator.joint_batch:  # its target logits depend on the source batch too
                _, d_t = frozen_call(self.discriminator, src_act, tgt)
            else:  # no second pass of the source activations, whose logits enter detached
                d_t = frozen_call(self.discriminator, tgt)
            terms["dt_encoder"] = self.alpha * inverted_label_loss(d_s.detach(), d_t)
        if self.beta > 0:
            terms.update(self.semantic_terms(acts["embedding"][:n_t], y_t, acts["embedding"][n_t:],
                                             src["embedding"]))
        return terms

    def semantic_terms(self, f_t, y_t, f_u, f_s) -> dict:
        """β-weighted eq. 5, 6 and 7 (the three parts of L_ST, eq. 8)."""
        w, out = self.weights, {}
        if w["source_entropy"]:
            if self._prototype_source is not None:  # losses called outside the engine
                self._set_prototypes()
            support = self.source_prototypes if self.source_support == "prototypes" else f_s
            out["st_source_entropy"] = self.beta * w["source_entropy"] * similarity_entropy(
                f_u, support, self.tau_source, self.query_scale)
        if w["metric_ce"]:
            out["st_metric_ce"] = self.beta * w["metric_ce"] * metric_cross_entropy(f_t, y_t, self.query_scale)
        if w["target_entropy"]:
            centroids, _ = present_class_means(f_t, y_t)
            out["st_target_entropy"] = self.beta * w["target_entropy"] * similarity_entropy(
                f_u, centroids, self.tau_target, self.query_scale)
        return out


@register
class FinetuneAdversarial(SemanticTransfer):
    """Seed 000 Table 1 "fine-tune + adv.": cross entropy on the labelled target plus α times
    the multi-layer domain adversarial loss (eq. 2-4) between source and unlabelled target;
    :class:`SemanticTransfer` with β = 0 (its default layers by the same rule: the numbers of
    classes compared)."""

    name = "finetune_adv"
    needs_every_class = False  # β = 0 and predict="head": no class centroid
    description = "fine-tune on target labels + multi-layer domain adversarial loss (seed 000 baseline v)"

    def __init__(self, net, alpha: float = 0.1, gamma: float = 0.1, combine: str = "sum", layers=None,
                 disc_lr_mult: float = 1.0, discriminator: str = "auto"):
        super().__init__(net, alpha=alpha, beta=0.0, gamma=gamma, combine=combine, layers=layers,
                         disc_lr_mult=disc_lr_mult, predict="head", discriminator=discriminator)


# ---- matching networks --------------------------------------------------------------------
def first_occurrences(ids: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the first position of every distinct value of ``ids`` (1-d)."""
    _, inverse = torch.unique(ids, return_inverse=True)
    pos = torch.arange(len(ids), device=ids.device)
    first = torch.full((int(inverse.max()) + 1 if len(ids) else 0,), len(ids), device=ids.device)
    first = first.scatter_reduce(0, inverse, pos, "amin")
    mask = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    mask[first] = True
    return mask


def matching_log_probs(queries: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                       num_classes: int, scale: float = 10.0) -> torch.Tensor:
    """Matching networks (Vinyals et al. 2016): ``log Σ_i a(x, x_i) onehot(y_i)`` with the
    attention ``a = softmax_i(scale · cos(x, x_i))`` over the support set. A class with no
    support example scores ``log 1e-8``; a probability below ``1e-8`` of a class with support
    is computed in log space (a clamp there would stop the gradient of a confidently wrong
    query, reachable at large ``scale``). Support labels are class ids in ``[0, num_classes)``."""
    checked = _check_support(queries, support, support_labels, num_classes, "matching_log_probs")
    return _matching_log_probs(*checked, num_classes, scale)


def _matching_log_probs(queries: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                        num_classes: int, scale: float) -> torch.Tensor:
    """:func:`matching_log_probs` of inputs already checked (no host sync for the check)."""
    logits = scale * F.normalize(queries, dim=1) @ F.normalize(support, dim=1).t()
    onehot = F.one_hot(support_labels, num_classes)
    probs = torch.softmax(logits, dim=1) @ onehot.to(logits.dtype)
    tiny = probs < 1e-8
    log_probs = probs.clamp_min(1e-8).log()  # the clamp keeps log's gradient at 0 finite where tiny
    if not bool(tiny.any()):
        return log_probs
    member = onehot.t().bool()  # C x S
    has = member.any(1)
    # classes without support get finite dummies: a logsumexp of only -inf has a NaN gradient
    masked = torch.log_softmax(logits, dim=1)[:, None, :].masked_fill(~member, float("-inf"))
    exact = torch.logsumexp(masked.masked_fill(~has[None, :, None], 0.0), dim=2)
    return torch.where(tiny, torch.where(has, exact, math.log(1e-8)), log_probs)


def _check_support(queries, support, support_labels, num_classes: int, who: str) -> tuple[torch.Tensor, ...]:
    """Queries and support features of one width (in a common dtype), and one class id in
    ``[0, num_classes)`` per support example (as ``long``); ``who`` is named in the refusal. Labels
    follow :func:`~transferkit.errors.class_ids`' rule (whole-valued floats are ids; fractions, NaN,
    boolean or complex values are refused): only float labels cost a host sync more."""
    dtype = support_labels.dtype
    check(dtype != torch.bool and whole_valued(support_labels),
          f"{who}: support labels must be whole class ids, got a tensor of {dtype}"
          f"{' with values that are not whole numbers' if dtype.is_floating_point else ''}: pass them as "
          f"labels.long() (torch.long)")
    check(queries.dim() == 2 and support.dim() == 2 and queries.shape[1] == support.shape[1],
          f"{who}: queries and support must be N x D and S x D features of one D, got {tuple(queries.shape)} and "
          f"{tuple(support.shape)}")
    check(tuple(support_labels.shape) == (len(support),),
          f"{who}: support labels must be one per support example ({len(support)}), got shape "
          f"{tuple(support_labels.shape)}")
    if len(support_labels):
        low, high = torch.stack(torch.aminmax(support_labels)).tolist()  # one sync for both
        check(0 <= low and high < num_classes, f"{who}: support labels must be class ids in [0, {num_classes - 1}] "
                                               f"(num_classes={num_classes}), got labels from {low} to {high}")
    return *common_dtype(queries, support), support_labels.long()


def nearest_support_scores(queries: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                           num_classes: int) -> torch.Tensor:
    """``N x C`` scores whose argmax is the label of the nearest support example (cosine):
    each class scores its most similar support example (-2, below any cosine, without one)."""
    queries, support, support_labels = _check_support(queries, support, support_labels, num_classes,
                                                      "nearest_support_scores")
    cos = F.normalize(queries, dim=1) @ F.normalize(support, dim=1).t()
    out = torch.full((len(queries), num_classes), -2.0, dtype=cos.dtype, device=cos.device)
    return out.scatter_reduce(1, support_labels.expand(len(queries), -1), cos, "amax")


@register
class MatchingNet(Method):
    """Seed 000 Table 1 "Matching nets": the source-pretrained embedding, no training; a
    target image gets the attention-weighted label of the k labelled target examples per
    class (the support set). Seed 000 §4.1 (iii) says "we first pretrain the model on D_3";
    D_3 is the unlabelled target, which gives no label to pre-train with, so this reads it as
    D_1, the labelled source, whose pre-trained network ``finetune`` starts from too (and the
    seed's "due to domain shift, matching networks perform poorly" fits a source embedding).
    ``scale``: inverse temperature of the cosine attention: 10, transferkit's choice (Vinyals et
    al. 2016, the seed's [70], attend with ``softmax`` of the plain cosine, scale 1, over an
    embedding trained in episodes through it; this one reads a cross-entropy embedding, whose
    cosines in [-1, 1] give a nearly flat attention at scale 1; ``scale: 1`` is [70]'s kernel).
    ``predict``: ``"attention"`` (default, the matching-network rule it is trained with) or
    ``"nearest"``, the label of the nearest support example, the rule by which seed 000
    Table 1 scores both matching-net baselines ("calculated based on nearest neighbors in the
    support set"). The benchmark tables use the default."""

    name = "matching_net"
    streams = ("target",)
    selects_on_validation = False  # a fixed support set (matching_ft: a fixed budget)
    description = "source-pretrained embedding, matching-network attention over the k labelled target examples"

    def __init__(self, net, scale: float = 10.0, predict: str = "attention"):
        super().__init__(net)
        check(predict in ("attention", "nearest"), f"predict must be 'attention' or 'nearest', got {predict!r}")
        self.scale, self.predict = float(scale), predict
        self.register_buffer("support_features", torch.zeros(0, net.embed_dim))
        self.register_buffer("support_labels", torch.zeros(0, dtype=torch.long))
        self.num_target_classes = net.num_classes

    def trainable_units(self):
        return self.net.feature_names

    def set_support(self, target) -> None:
        self.eval()
        self.support_features = predict_logits(self.net.forward_features, target.images)
        self.support_labels = class_ids(target.labels, "support labels").clone()
        check(len(self.support_labels) == 0 or int(self.support_labels.max()) < target.num_classes,
              f"support labels must be below the {target.num_classes} classes of {target.name!r}")
        self.num_target_classes = target.num_classes

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        t0 = time.perf_counter()
        self.set_support(target)
        return FitResult(steps=0, best_step=0, best_val_accuracy=None, stopped_early=False,
                         wall_s=time.perf_counter() - t0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check(len(self.support_labels) > 0, f"{self.name}: no support set yet (fit first)")
        f = self.net.forward_features(images)
        if self.predict == "nearest":
            return nearest_support_scores(f, self.support_features, self.support_labels, self.num_target_classes)
        return matching_log_probs(f, self.support_features, self.support_labels, self.num_target_classes, self.scale)


@register
class FinetunedMatchingNet(MatchingNet):
    """Seed 000 Table 1 "Fine-tuned matching nets": episodic fine-tuning of the embedding
    on the labelled target, then matching against all k labelled examples per class.

    Each step is one N-way (k−1)-shot episode over the labelled batch: one random example
    per class is the query, the others are the support (with the whole labelled set in
    the batch, as for k ≤ 12 at batch size 64, this is 5-way (k−1)-shot on the digit
    pairs); the loss is the cross entropy of the matching prediction of the queries. An
    image drawn twice into one batch (a batch that crosses an epoch) counts once, so no
    query meets a copy of itself in the support. Only
    classes with at least two distinct examples in the batch give a query (a lone example has no
    support to match), so at least k = 2 labelled examples per class are needed. The
    budget is fixed (no validation: the classifier head is not what is trained)."""

    name = "matching_ft"
    min_labels_per_class = 2
    description = "matching networks fine-tuned episodically (N-way (k-1)-shot) on the labelled target"

    def losses(self, batch):
        x, y = batch.target
        idx = batch.indices.get("target")
        if idx is not None:  # a batch that crosses an epoch can hold an image twice: a query must not match itself
            once = first_occurrences(idx.to(y.device))
            x, y = x[once], y[once]
        f = self.net.forward_units(x, self.input_unit, "embedding")
        query = first_occurrences(y) & (torch.bincount(y)[y] >= 2)  # the first example of each class twice
        if not query.any():  # no class twice in this batch: nothing to match
            return {"episode_ce": f.sum() * 0.0}
        # the batch's labels are the target's class ids, below num_target_classes (prepare): no check, no sync
        logp = _matching_log_probs(f[query], f[~query], y[~query], self.num_target_classes, self.scale)
        return {"episode_ce": F.nll_loss(logp, y[query])}

    def prepare(self, domains: dict) -> None:
        super().prepare(domains)
        classes = domains["target"].num_classes  # a domain's labels lie below its number of classes
        check(classes <= self.num_target_classes, f"{self.name}: the target domain {domains['target'].name!r} has "
                                                  f"{classes} classes, more than the {self.num_target_classes} it "
                                                  f"matches (fit_transfer sets them from the target)")

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        counts = target.class_counts()
        smallest = int(counts[counts > 0].min())
        need = self.min_labels_per_class  # also checked before a run starts (preflight.check_jobs)
        check(smallest >= need, f"{self.name} trains on (k-1)-shot episodes and needs at least {need} labelled "
                                f"examples per class; the smallest class has {smallest} (use matching_net at k = 1)")
        self.num_target_classes = target.num_classes
        engine = make_engine("main")
        check(engine.cfg.batch_size >= 2, f"{self.name} matches a query against the other images of its class in "
                                          f"the batch, so a batch of {engine.cfg.batch_size} image never holds an "
                                          f"episode and nothing would be trained: give train.batch_size >= 2 (a "
                                          f"batch large enough to hold two images of a class)")
        fit = engine.fit(self, target=target)
        self.set_support(target)
        return fit


# ---- heads on the fine-tuned network --------------------------------------------------------
@register
class FinetunePrototype(Finetune):
    """Fine-tune every unit with cross entropy, then classify by the nearest labelled target
    class mean of the fine-tuned embedding (prototypical head, Snell et al. 2017;
    ``metric``: ``sqeuclidean`` or ``cosine``)."""

    name = "finetune_proto"
    needs_every_class = True
    description = "fine-tune, then nearest class mean (prototype head) on the fine-tuned embedding"

    def __init__(self, net, metric: str = "sqeuclidean"):
        super().__init__(net)
        check(metric in ("sqeuclidean", "cosine"), f"metric must be sqeuclidean or cosine, got {metric!r}")
        self.metric = metric
        self._labeled, self._eval_means = None, None

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        self._labeled = target
        try:
            fit = super().fit_transfer(make_engine, source=source, target=target, unlabeled=unlabeled, val=val)
        finally:
            self._labeled = None  # a saved model keeps no domain
        feats = predict_logits(self.net.forward_features, target.images)
        self.net.reset_classifier(target.num_classes, "prototype", metric=self.metric).fit(feats, target.labels)
        self.eval()
        return fit

    def forward_from_input(self, x: torch.Tensor) -> torch.Tensor:
        """In the engine's validation, predict as the returned model will: by the nearest class
        mean of the labelled target under the current weights, so that early stopping selects
        (and ``val_accuracy`` reports) the classifier that is evaluated, not the linear head
        that cross entropy trains."""
        if not self.training and self._labeled is not None:
            if self._eval_means is None:  # once per evaluation, not per chunk
                self._eval_means = embedded_class_means(self.net, self._labeled)
            return prototype_logits(self.net.forward_features(x), self._eval_means, self.metric)
        return super().forward_from_input(x)

    def train(self, mode: bool = True):
        self._eval_means = None  # eval() starts an evaluation; the weights may have changed since the last
        return super().train(mode)


@register
class FinetuneCosine(Finetune):
    """Fine-tune every unit with a cosine classifier head (Baseline++, Chen et al. 2019; seed 004
    Fig. 3's "cosine-based classifier (BASELINE++)"):
    ``logits = s · cos(w_c, f)`` with a learned scale ``s`` (initial ``scale``). The cosine
    head is new, as Baseline++ trains a new classifier, also for classes the source head
    knew (``finetune`` keeps their rows)."""

    name = "finetune_cosine"
    description = "fine-tune all units with a cosine-classifier head (Baseline++)"

    def __init__(self, net, scale: float = 10.0):
        net.reset_classifier(net.num_classes, "cosine", scale=scale)
        super().__init__(net)
