"""Shared base of the unsupervised domain adaptation methods (families in
:mod:`.adversarial`, :mod:`.discrepancy`, :mod:`.dsn`, and the pixel-level :mod:`.pixel`,
:mod:`.adain`, :mod:`.unit_gan`).

Protocol of seed 000 §4.3: start from the source-pretrained network, then adapt with
labelled source batches and *unlabelled* target batches (``streams = ("source",
"unlabeled")``; target labels are never read). Every method minimises its alignment terms
plus, weighted by ``source_weight``, the source cross entropy (default 1; 0 in ``adda``,
``adda_encoder`` and ``multilayer_adda``, whose encoder learns from the adversarial loss
alone, and in ``cyclegan``, ``adain`` and ``unit_gan``, which train on translated source
images instead); ``entmin_weight > 0`` adds the entropy of the target predictions
(:func:`transferkit.losses.entropy`) to any of them.

Where the network reads both batches, they go through it as one concatenated batch (one
forward pass; BatchNorm statistics, where the backbone has them, are those of the mixed
batch); the ADDA forms (``adda``, ``adda_encoder``, ``multilayer_adda``, an untied
``multilayer_adv``) take the source activations from a fixed copy of the source network.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

from ..errors import check
from ..losses import entropy
from .base import Method

EMBEDDING = "embedding"


def resolve_layers(net, layers: Sequence[str] | str | None, default: Sequence[str]) -> list[str]:
    """``layers`` as a checked list of unit names (or ``"embedding"``); ``None`` gives ``default``."""
    check(layers is None or isinstance(layers, (str, list, tuple)),
          f"layers must be a unit name or a list of unit names, got {layers!r}")
    names = list(default) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    known = list(net.unit_names) + [EMBEDDING]
    check(len(names) > 0, "layers must name at least one unit")
    for n in names:
        check(n in known, f"unknown layer {n!r}; layers are {known}")
    twice = sorted({n for n in names if names.count(n) > 1})
    check(not twice, f"layers name {twice} more than once (its term or input would count twice)")
    return names


def layer_size(net, name: str) -> int:
    """Flattened size of one tapped activation (from the backbone's unit output shapes)."""
    if name in (EMBEDDING, "head"):  # known without a dry run; a head without classifier passes the embedding on
        return net.embed_dim if name == EMBEDDING or net.num_classes == 0 else net.num_classes
    return math.prod(net.unit_output_shapes()[name])


def flat_cat(acts: dict, layers: Sequence[str]) -> torch.Tensor:
    return torch.cat([acts[n].flatten(1) for n in layers], 1)


class AdaptationMethod(Method):
    """Base class: alignment terms + ``source_weight`` x source cross entropy, optional target
    entropy."""

    streams = ("source", "unlabeled")
    needs_pretrained = True
    cache_frozen_prefix = False  # the alignment terms read activations of early units
    #: learning-rate schedule forced on the engine (None: the experiment's ``train.schedule``)
    lr_schedule: str | None = None
    #: engine settings forced by the method, e.g. ``{"optimizer": "sgd", "lr": 0.01}``
    optimizer_override: dict = {}
    #: child modules that are never trained (e.g. ADDA's fixed source encoder)
    frozen_children: tuple[str, ...] = ()

    def __init__(self, net, entmin_weight: float = 0.0, source_weight: float = 1.0):
        super().__init__(net)
        self.entmin_weight = float(entmin_weight)
        self.source_weight = float(source_weight)

    def param_groups(self) -> list[dict]:
        extra = [p for name, m in self.named_children() if name not in ("net",) + self.frozen_children
                 for p in m.parameters() if p.requires_grad]
        return [{"params": self.net.parameters_of(self.trainable_units())}, {"params": extra}]

    def train_mode(self) -> None:
        super().train_mode()
        for name in self.frozen_children:
            getattr(self, name).eval()

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        """One engine run, with the method's schedule and optimizer settings. (``Transfer.fit``
        and ``transferkit run`` give it no validation split cut from the target:
        :func:`~transferkit.fitting.unsupervised_validation`.)"""
        engine = make_engine("main")
        if self.lr_schedule is not None:
            engine.cfg = dataclasses.replace(engine.cfg, schedule=self.lr_schedule)
        if self.optimizer_override:
            engine.cfg = dataclasses.replace(engine.cfg, **self.optimizer_override)
        fit = engine.fit(self, source=source, target=target, unlabeled=unlabeled, val=val)
        self.fit_wall_s = fit.wall_s
        return fit

    def __getstate__(self) -> dict:  # a saved model (a run's models/*.pt) holds no clock: same seed, same bytes
        return {k: v for k, v in super().__getstate__().items() if k != "fit_wall_s"}

    def extra_results(self) -> dict:
        """``fit_wall_s``: seconds of the engine's training alone (the row's ``wall_s`` also
        counts building the method and the test evaluation)."""
        return {"fit_wall_s": self.fit_wall_s} if hasattr(self, "fit_wall_s") else {}

    def taps(self, x_s: torch.Tensor, x_t: torch.Tensor, layers: Sequence[str]) -> tuple[dict, dict]:
        """Activations of ``layers`` and of ``"head"`` (the logits) for the source and the
        target batch, from one forward pass of the concatenated batch."""
        names = list(dict.fromkeys(list(layers) + ["head"]))
        acts = self.net.forward_features(torch.cat([x_s, x_t]), names)
        n = len(x_s)
        return {k: v[:n] for k, v in acts.items()}, {k: v[n:] for k, v in acts.items()}

    def base_terms(self, logits_s: torch.Tensor, y_s: torch.Tensor, logits_t: torch.Tensor) -> dict:
        """Source cross entropy (weighted by ``source_weight``) and, if enabled, the target entropy."""
        terms = {}
        if self.source_weight:
            terms["ce_source"] = self.source_weight * self.cross_entropy(logits_s, y_s, "source")
        if self.entmin_weight:
            terms["entmin"] = self.entmin_weight * entropy(logits_t)
        return terms
