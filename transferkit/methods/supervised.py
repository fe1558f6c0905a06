"""Supervised baselines (seed 000 §4.1): train on source labels only, or on the few
target labels only."""

from __future__ import annotations

from .base import Method, register


@register
class SourceOnly(Method):
    """Train every unit on labelled source data with cross entropy; evaluate on the
    target as is ("source only" rows of seed 000 Table 3). Also the pre-training stage of
    every method that starts from a source network."""

    name = "source_only"
    streams = ("source",)
    needs_pretrained = False
    description = "train on source labels, evaluate on the target unchanged"

    def losses(self, batch):
        return {"ce_source": self.supervised(batch.source, "source")}


@register
class TargetOnly(Method):
    """Train every unit from a fresh initialisation on the labelled target examples only
    (seed 000 Table 1 "Target only"; with all target labels it is the ceiling of Table 3).
    A network handed to ``Transfer.fit(net=...)`` is re-initialised, not trained on from its
    weights (a shared source network would have made this a fine-tuning)."""

    name = "target_only"
    streams = ("target",)
    needs_pretrained = False
    fresh_init = True
    description = "train from scratch on the labelled target examples"

    def losses(self, batch):
        return {"ce_target": self.supervised(batch.target)}
