"""Multitask learning (seed 001, "General Framework for Transfer Learning": labelled source
and labelled target data, trained "together" where fine-tuning trains them "sequentially").

One network learns the source task and the target task at the same time: the feature units
are shared, each task has its own head, and the loss is

    L = CE(h_t(f(x_t)), y_t) + w_s · CE(h_s(f(x_s)), y_s)

with ``w_s = source_weight``. Seed 001's overview table also notes "parallel, different
encoders"; ``private_units = n`` gives the source its own copy of the first ``n`` feature
units (input-side layers per task, the upper layers shared, the usual form for inputs that
differ). The slides give no equation: the form above is the usual shared-layers, head-per-task one.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import check, is_whole
from .base import Method, register


@register
class Multitask(Method):
    """Train the target head and the source head together on shared features (seed 001's
    multitask learning, module docstring).

    Both start from the pre-trained source network, as every fine-tuning method in a run does:
    the source head is the pre-trained classifier (a copy, kept beside the network), the target
    head is the network's head given the target classes (rows of classes the source names are
    kept). Source and target batches go through the shared units as one concatenated batch, as
    the domain adaptation methods do. Predictions are the target head's; the source head and the
    private source units are training-only parts (``predicts_with_net``).

    Options: ``source_weight`` (``w_s``, 1: the two tasks weigh alike; 0 leaves ``finetune``'s loss),
    ``private_units`` (0: every feature unit shared; ``n``: the first ``n`` feature units are
    the target's in the network and the source's in a copy; at least one unit stays shared).
    The slides give no equation or setting: the loss, its weight and starting from the
    pre-trained network are ours.
    """

    name = "multitask"
    streams = ("source", "target")
    built_before_retarget = True  # the source head is copied before the head takes the target classes
    cache_frozen_prefix = False  # both streams run through units that train
    description = "target and source heads on shared units, trained together on both label sets (seed 001)"

    def __init__(self, net, source_weight: float = 1.0, private_units: int = 0):
        super().__init__(net)
        features = net.feature_names
        check(is_whole(private_units, 0) and private_units < len(features),
              f"multitask: private_units must be a whole number from 0 to {len(features) - 1} (the network has "
              f"{len(features)} feature units, at least one shared), got {private_units!r}")
        check(net.num_classes > 0, "multitask: the network has no classifier (as after reset_classifier(0)): the "
                                   "source head is the pre-trained classifier of the source classes")
        self.source_weight = float(source_weight)
        self.private_units = int(private_units)
        self.source_classes = net.num_classes
        self.source_classifier = copy.deepcopy(net.head)
        self.source_private = nn.ModuleList(copy.deepcopy(net.unit(n)) for n in features[:self.private_units])

    def prepare(self, domains: dict) -> None:
        super().prepare(domains)
        source = domains.get("source")
        check(source is None or source.num_classes == self.source_classes,
              f"multitask: the source head has {self.source_classes} outputs but the source domain "
              f"{getattr(source, 'name', '')!r} has {getattr(source, 'num_classes', 0)} classes: give the source "
              f"the network was pre-trained on")

    def param_groups(self) -> list[dict]:
        own = [*self.source_classifier.parameters(), *self.source_private.parameters()]
        return [{"params": self.net.parameters_of(self.trainable_units())}, {"params": own}]

    def _through_private(self, x: torch.Tensor) -> torch.Tensor:
        """Source images through the source's own copies of the first units (none: ``x``)."""
        for unit in self.source_private:
            x = unit(x)
        return x

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The source head's logits of source images (through the private source units, if any)."""
        return self.source_classifier(self.net.forward_units(self._through_private(x), self.private_units,
                                                             "embedding"))

    def losses(self, batch):
        (x_s, y_s), (x_t, y_t) = batch.source, batch.target
        if not self.source_weight:  # finetune's loss; the source batch is not run
            return {"ce_target": self.supervised(batch.target)}
        n = self.private_units
        h_s, h_t = self._through_private(x_s), self.net.forward_units(x_t, 0, n)
        embedding = self.net.forward_units(torch.cat([h_s, h_t]), n, "embedding")
        s = len(x_s)
        logits_s, logits_t = self.source_classifier(embedding[:s]), self.net.forward_units(embedding[s:], "embedding")
        return {"ce_target": self.cross_entropy(logits_t, y_t),
                "ce_source": self.source_weight * self.cross_entropy(logits_s, y_s, "source")}
