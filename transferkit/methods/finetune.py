"""Fine-tuning family (seed 002 §4 baselines, seed 004 linear probing / fine-tuning).

All start from the network pre-trained on the source and train on labelled target
examples with cross entropy; they differ in which units they train.
"""

from __future__ import annotations

from .base import Method, register


@register
class Finetune(Method):
    """Fine-tune every unit on the labelled target ("ft-all" of seed 002, "fine-tuning" of
    seed 004 and seed 000 Table 1)."""

    name = "finetune"
    description = "pre-train on source, fine-tune all units on the target labels"

    def losses(self, batch):
        return {"ce_target": self.supervised(batch.target)}


@register
class LinearProbe(Method):
    """Freeze the pre-trained feature units and train a new linear head on the labelled
    target (seed 004 "linear probing"; seed 001 "frozen features + linear classifier").
    The engine caches the frozen embedding once, so training touches only the head."""

    name = "linear_probe"
    description = "frozen source features, new linear head on the target labels"

    def trainable_units(self):
        return ["head"]

    def losses(self, batch):
        return {"ce_target": self.supervised(batch.target)}
